// Uninitialized storage for the large caches of one request: the cross-attention keys and
// values of the images that a decoder state reads (42.5 MB per base image in f32).
//
// Fresh memory costs a page fault per 4 KiB page at its first write. With a zero-filled
// std::vector, allocating these caches took 20 ms of the bf16 base decoder's 40 ms setup
// (decoder_state, timed on a 2-core Intel Xeon). So on Linux, blocks of at least 2 MiB are
// mapped with transparent huge pages allowed: where the kernel has huge pages to give, a
// block takes one fault per 2 MiB. Freed blocks are kept for the next request of the same
// size, because a batch job captioning image after image requests the same caches each time.
// The pool keeps at most kKeptBlockBytes, the most recently freed first, and
// release_kept_buffers() returns them to the system. Other platforms (WebAssembly among them,
// whose memory never shrinks) allocate every buffer with operator new.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__) && !defined(__EMSCRIPTEN__)
#define BLIP_HAVE_HUGE_PAGES 1
#include <sys/mman.h>
#endif

namespace blip {

namespace detail {

// Blocks from this size up come from the block pool (on Linux), rounded up to a multiple of it.
inline constexpr std::size_t kLargeBlockBytes = std::size_t{2} << 20;
// Maximum bytes of freed blocks kept for reuse.
inline constexpr std::size_t kKeptBlockBytes = std::size_t{512} << 20;
// Alignment of every buffer: a cache line.
inline constexpr std::size_t kBufferAlignment = 64;

#ifdef BLIP_HAVE_HUGE_PAGES

// Freed large blocks, kept for reuse.
class BlockPool {
public:
    // The pool lives until the process ends, so that buffers freed by static destructors
    // still find it.
    static BlockPool& instance() {
        static BlockPool* pool = new BlockPool;
        return *pool;
    }

    // Returns a block of `bytes` (a multiple of kLargeBlockBytes): a kept one of that size, else
    // a new one. Throws std::bad_alloc when the system has no memory left, even after the kept
    // blocks are returned to it.
    void* take(std::size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (std::size_t i = kept_.size(); i-- > 0;)
                if (kept_[i].second == bytes) {
                    void* block = kept_[i].first;
                    kept_bytes_ -= bytes;
                    kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(i));
                    return block;
                }
        }
        if (void* block = map(bytes)) return block;
        release_all();
        if (void* block = map(bytes)) return block;
        throw std::bad_alloc();
    }

    // Keeps `block` for reuse, returning the oldest kept blocks to the system when they and it
    // exceed kKeptBlockBytes. Blocks larger than that go back at once.
    void give(void* block, std::size_t bytes) noexcept {
        std::vector<std::pair<void*, std::size_t>> evicted;
        bool pooled = false;
        if (bytes <= kKeptBlockBytes) {
            std::lock_guard<std::mutex> lock(mutex_);
            try {
                kept_.reserve(kept_.size() + 1);
                evicted.reserve(kept_.size());
                while (kept_bytes_ + bytes > kKeptBlockBytes) {
                    evicted.push_back(kept_.front());
                    kept_bytes_ -= kept_.front().second;
                    kept_.erase(kept_.begin());
                }
                kept_.emplace_back(block, bytes);
                kept_bytes_ += bytes;
                pooled = true;
            } catch (const std::bad_alloc&) {
                // No memory for the bookkeeping: return the block instead of keeping it.
            }
        }
        for (const auto& [old, size] : evicted) ::munmap(old, size);
        if (!pooled) ::munmap(block, bytes);
    }

    void release_all() noexcept {
        std::vector<std::pair<void*, std::size_t>> blocks;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            blocks.swap(kept_);
            kept_bytes_ = 0;
        }
        for (const auto& [block, bytes] : blocks) ::munmap(block, bytes);
    }

private:
    // Maps `bytes` starting on a huge-page boundary, or returns null when the system refuses.
    static void* map(std::size_t bytes) {
        // Map one huge page more than needed, so that the block can start on a huge page.
        void* address = ::mmap(nullptr, bytes + kLargeBlockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                               -1, 0);
        if (address == MAP_FAILED) return nullptr;
        const auto start = reinterpret_cast<std::uintptr_t>(address);
        const std::uintptr_t aligned = (start + kLargeBlockBytes - 1) / kLargeBlockBytes * kLargeBlockBytes;
        if (aligned > start) ::munmap(address, aligned - start);
        const std::uintptr_t end = start + bytes + kLargeBlockBytes;
        if (end > aligned + bytes) ::munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
        ::madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // only a hint, so failure is harmless
        return reinterpret_cast<void*>(aligned);
    }

    std::mutex mutex_;
    std::vector<std::pair<void*, std::size_t>> kept_;  // oldest first
    std::size_t kept_bytes_ = 0;
};

#endif

}  // namespace detail

// Returns the freed cache blocks that were kept for reuse to the system.
inline void release_kept_buffers() {
#ifdef BLIP_HAVE_HUGE_PAGES
    detail::BlockPool::instance().release_all();
#endif
}

// A buffer of `size()` values of T, uninitialized and 64-byte aligned. Large ones come from the
// block pool on Linux.
template <class T>
class LargeBuffer {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                  "LargeBuffer holds plain values only");

public:
    LargeBuffer() = default;
    explicit LargeBuffer(std::size_t size) : size_(size) {
        if (size == 0) return;
        if (size > (SIZE_MAX - 2 * detail::kLargeBlockBytes) / sizeof(T)) throw std::bad_alloc();
        const std::size_t bytes = size * sizeof(T);
#ifdef BLIP_HAVE_HUGE_PAGES
        if (bytes >= detail::kLargeBlockBytes) {
            bytes_ = (bytes + detail::kLargeBlockBytes - 1) / detail::kLargeBlockBytes * detail::kLargeBlockBytes;
            data_ = static_cast<T*>(detail::BlockPool::instance().take(bytes_));
            pooled_ = true;
            return;
        }
#endif
        bytes_ = bytes;
        data_ = static_cast<T*>(::operator new(bytes, std::align_val_t(detail::kBufferAlignment)));
    }
    LargeBuffer(const LargeBuffer& other) : LargeBuffer(other.size_) {
        std::copy_n(other.data_, size_, data_);
    }
    LargeBuffer(LargeBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)),
          bytes_(std::exchange(other.bytes_, 0)),
          pooled_(std::exchange(other.pooled_, false)) {}
    LargeBuffer& operator=(LargeBuffer other) noexcept {
        swap(other);
        return *this;
    }
    ~LargeBuffer() { release(); }

    void swap(LargeBuffer& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        std::swap(bytes_, other.bytes_);
        std::swap(pooled_, other.pooled_);
    }

    T* data() { return data_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    void release() noexcept {
        if (data_ == nullptr) return;
#ifdef BLIP_HAVE_HUGE_PAGES
        if (pooled_) {
            detail::BlockPool::instance().give(data_, bytes_);
            data_ = nullptr;
            return;
        }
#endif
        ::operator delete(data_, std::align_val_t(detail::kBufferAlignment));
        data_ = nullptr;
    }

    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t bytes_ = 0;
    bool pooled_ = false;  // from the block pool, else from operator new
};

}  // namespace blip
