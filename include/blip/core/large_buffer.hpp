// Uninitialized storage for the large caches of one request: the cross-attention keys and
// values of the images that a decoder state reads (42.5 MB per image for the base model).
//
// Fresh memory costs a page fault per 4 KiB page at its first write. With a zero-filled
// std::vector, allocating these caches took 20 ms of the bf16 base decoder's 40 ms setup on a
// 2-core Xeon. So on Linux, blocks of at least 2 MiB are mapped with transparent huge pages
// allowed, which take one fault per 2 MiB. Freed blocks are kept for the next request of the
// same size, because a batch job captioning image after image requests the same caches each
// time. The pool keeps at most kKeptBlockBytes, and release_kept_buffers() returns them to the
// system.
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

// Blocks from this size up come from the block pool, rounded up to a multiple of it.
inline constexpr std::size_t kLargeBlockBytes = std::size_t{2} << 20;
// Maximum bytes of freed blocks kept for reuse.
inline constexpr std::size_t kKeptBlockBytes = std::size_t{512} << 20;
// Alignment of every buffer: a cache line.
inline constexpr std::size_t kBufferAlignment = 64;

// Freed large blocks, kept for reuse.
class BlockPool {
public:
    // The pool lives until the process ends, so that buffers freed by static destructors
    // still find it.
    static BlockPool& instance() {
        static BlockPool* pool = new BlockPool;
        return *pool;
    }

    // A block of `bytes` (a multiple of kLargeBlockBytes): a kept one of that size, else a new
    // one. Throws std::bad_alloc when the system has no memory left.
    void* take(std::size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (std::size_t i = 0; i < kept_.size(); ++i)
                if (kept_[i].second == bytes) {
                    void* block = kept_[i].first;
                    kept_bytes_ -= bytes;
                    kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(i));
                    return block;
                }
        }
        return map(bytes);
    }

    // Keeps `block` for reuse, or returns it to the system when the pool is full.
    void give(void* block, std::size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (kept_bytes_ + bytes <= kKeptBlockBytes) {
                kept_.emplace_back(block, bytes);
                kept_bytes_ += bytes;
                return;
            }
        }
        unmap(block, bytes);
    }

    void release_all() {
        std::vector<std::pair<void*, std::size_t>> blocks;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            blocks.swap(kept_);
            kept_bytes_ = 0;
        }
        for (const auto& [block, bytes] : blocks) unmap(block, bytes);
    }

private:
    static void* map(std::size_t bytes) {
#ifdef BLIP_HAVE_HUGE_PAGES
        // Map one huge page more than needed, so that the block can start on a huge page.
        void* address = ::mmap(nullptr, bytes + kLargeBlockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                               -1, 0);
        if (address == MAP_FAILED) throw std::bad_alloc();
        const auto start = reinterpret_cast<std::uintptr_t>(address);
        const std::uintptr_t aligned = (start + kLargeBlockBytes - 1) / kLargeBlockBytes * kLargeBlockBytes;
        if (aligned > start) ::munmap(address, aligned - start);
        const std::uintptr_t end = start + bytes + kLargeBlockBytes;
        if (end > aligned + bytes) ::munmap(reinterpret_cast<void*>(aligned + bytes), end - (aligned + bytes));
        ::madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // only a hint, so failure is harmless
        return reinterpret_cast<void*>(aligned);
#else
        return ::operator new(bytes, std::align_val_t(kBufferAlignment));
#endif
    }

    static void unmap(void* block, std::size_t bytes) {
#ifdef BLIP_HAVE_HUGE_PAGES
        ::munmap(block, bytes);
#else
        (void)bytes;
        ::operator delete(block, std::align_val_t(kBufferAlignment));
#endif
    }

    std::mutex mutex_;
    std::vector<std::pair<void*, std::size_t>> kept_;
    std::size_t kept_bytes_ = 0;
};

}  // namespace detail

// Returns the freed cache blocks that were kept for reuse to the system.
inline void release_kept_buffers() { detail::BlockPool::instance().release_all(); }

// A buffer of `size()` values of T, uninitialized and 64-byte aligned. Large ones come from the
// block pool.
template <class T>
class LargeBuffer {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                  "LargeBuffer holds plain values only");

public:
    LargeBuffer() = default;
    explicit LargeBuffer(std::size_t size) : size_(size) {
        if (size == 0) return;
        if (size > (SIZE_MAX - detail::kLargeBlockBytes) / sizeof(T)) throw std::bad_alloc();
        const std::size_t bytes = size * sizeof(T);
        if (bytes >= detail::kLargeBlockBytes) {
            bytes_ = (bytes + detail::kLargeBlockBytes - 1) / detail::kLargeBlockBytes * detail::kLargeBlockBytes;
            data_ = static_cast<T*>(detail::BlockPool::instance().take(bytes_));
        } else {
            bytes_ = bytes;
            data_ = static_cast<T*>(::operator new(bytes, std::align_val_t(detail::kBufferAlignment)));
        }
    }
    LargeBuffer(const LargeBuffer& other) : LargeBuffer(other.size_) {
        std::copy_n(other.data_, size_, data_);
    }
    LargeBuffer(LargeBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)),
          bytes_(std::exchange(other.bytes_, 0)) {}
    LargeBuffer& operator=(LargeBuffer other) noexcept {
        swap(other);
        return *this;
    }
    ~LargeBuffer() { release(); }

    void swap(LargeBuffer& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        std::swap(bytes_, other.bytes_);
    }

    T* data() { return data_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    void release() {
        if (data_ == nullptr) return;
        if (bytes_ >= detail::kLargeBlockBytes)
            detail::BlockPool::instance().give(data_, bytes_);
        else
            ::operator delete(data_, std::align_val_t(detail::kBufferAlignment));
        data_ = nullptr;
    }

    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t bytes_ = 0;
};

}  // namespace blip
