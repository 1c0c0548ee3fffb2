// Read-only file contents: memory-mapped where the platform has mmap, otherwise read
// into memory. Also wraps a caller's buffer so that models load the same way from both.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "blip/core/error.hpp"

#if (defined(__unix__) || defined(__APPLE__)) && !defined(__EMSCRIPTEN__)
#define BLIP_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace blip {

// Alignment of the bytes that a ByteSource owns. GGUF aligns tensor data to 32 bytes (by
// default) from the start of the file, so the start must be at least as aligned for the
// tensors to be; 64 is a cache line.
inline constexpr std::size_t kOwnedBytesAlignment = 64;

// Immutable bytes with an owner: a mapping, an owned vector, or a borrowed pointer.
class ByteSource {
public:
    ByteSource() = default;
    ByteSource(const ByteSource&) = delete;
    ByteSource& operator=(const ByteSource&) = delete;
    ~ByteSource() { release(); }

    // Maps `path` read-only. Throws blip::Error naming the path when it cannot be opened.
    static std::shared_ptr<ByteSource> map_file(const std::string& path) {
        auto source = std::make_shared<ByteSource>();
        source->name_ = path;
#ifdef BLIP_HAVE_MMAP
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
        struct stat info {};
        if (::fstat(fd, &info) != 0) {
            const int err = errno;
            ::close(fd);
            throw Error(path + ": cannot read file size: " + std::strerror(err));
        }
        if (S_ISDIR(info.st_mode)) {
            ::close(fd);
            throw Error(path + ": is a directory, expected a file");
        }
        source->size_ = static_cast<std::size_t>(info.st_size);
        if (source->size_ > 0) {
            void* address = ::mmap(nullptr, source->size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (address == MAP_FAILED) {
                const int err = errno;
                ::close(fd);
                throw Error(path + ": mmap failed: " + std::strerror(err));
            }
            source->data_ = static_cast<const std::uint8_t*>(address);
            source->mapped_ = true;
        }
        ::close(fd);
#else
        source->own(read_file(path));
#endif
        return source;
    }

    // Takes ownership of `bytes`; `name` appears in error messages. Bytes that do not start
    // on a kOwnedBytesAlignment boundary are copied to one that does.
    static std::shared_ptr<ByteSource> from_vector(std::vector<std::uint8_t> bytes, std::string name) {
        auto source = std::make_shared<ByteSource>();
        source->own(std::move(bytes));
        source->name_ = std::move(name);
        return source;
    }

    // Borrows `size` bytes at `data`, which must outlive every user of the result. Tensor
    // data is as aligned as `data` allows: pass bytes that start on a 64-byte boundary.
    static std::shared_ptr<ByteSource> borrow(const void* data, std::size_t size, std::string name) {
        auto source = std::make_shared<ByteSource>();
        source->data_ = static_cast<const std::uint8_t*>(data);
        source->size_ = size;
        source->name_ = std::move(name);
        return source;
    }

    // Reads a whole file into memory.
    static std::vector<std::uint8_t> read_file(const std::string& path) {
        std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!file) throw Error(path + ": cannot open: " + std::strerror(errno));
        std::vector<std::uint8_t> bytes;
        std::uint8_t chunk[1 << 16];
        std::size_t got = 0;
        while ((got = std::fread(chunk, 1, sizeof chunk, file.get())) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
        if (std::ferror(file.get())) throw Error(path + ": read failed");
        return bytes;
    }

    const std::uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }
    const std::string& name() const { return name_; }
    bool is_mapped() const { return mapped_; }

private:
    struct AlignedDelete {
        void operator()(std::uint8_t* bytes) const { ::operator delete[](bytes, std::align_val_t{kOwnedBytesAlignment}); }
    };

    // Keeps `bytes` as the contents, moved where already aligned, else copied to an aligned block.
    void own(std::vector<std::uint8_t> bytes) {
        size_ = bytes.size();
        if (bytes.empty() || reinterpret_cast<std::uintptr_t>(bytes.data()) % kOwnedBytesAlignment == 0) {
            owned_ = std::move(bytes);
            data_ = owned_.data();
            return;
        }
        aligned_.reset(static_cast<std::uint8_t*>(::operator new[](size_, std::align_val_t{kOwnedBytesAlignment})));
        std::memcpy(aligned_.get(), bytes.data(), size_);
        data_ = aligned_.get();
    }

    void release() {
#ifdef BLIP_HAVE_MMAP
        if (mapped_ && data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
#endif
        data_ = nullptr;
        mapped_ = false;
    }

    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    bool mapped_ = false;
    std::vector<std::uint8_t> owned_;
    std::unique_ptr<std::uint8_t[], AlignedDelete> aligned_;
    std::string name_;
};

}  // namespace blip
