// File operations that keep blip-capfilt's outputs whole across crashes: atomic writes
// (temporary file, fsync, rename, fsync of the folder), advisory locks that the kernel
// releases when the process dies, and content fingerprints of inputs and models.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/output_path.hpp"

namespace capfilt {

namespace fs = std::filesystem;
using blip::Error;

inline std::string errno_text() { return std::strerror(errno); }

// Name of the temporary file that stands in for `path` until it is complete:
// ".NAME.tmp-PID" in the same folder, so that the final rename never crosses file systems.
inline fs::path temporary_path(const fs::path& path) {
    return path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()));
}

// Removes temporary files that earlier, killed runs left for `path`.
inline void remove_stale_temporaries(const fs::path& path) {
    const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    const std::string prefix = "." + path.filename().string() + ".tmp-";
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(folder, error)) {
        const std::string name = entry.path().filename().string();
        if (name.compare(0, prefix.size(), prefix) == 0) fs::remove(entry.path(), error);
    }
}

// Flushes the folder entry of `path` to disk, so that a rename survives a power loss.
inline void sync_parent_folder(const fs::path& path) {
    const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;  // some file systems do not open folders; the rename is still atomic
    ::fsync(fd);
    ::close(fd);
}

// A file that appears under its final name only when commit() succeeds. Until then the
// data goes to temporary_path(path), which the destructor deletes.
class AtomicFile {
public:
    explicit AtomicFile(const fs::path& path)
        : path_(blip::output_file_path(path)), temporary_(temporary_path(path_)) {
        fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd_ < 0) throw Error(temporary_.string() + ": cannot create file: " + errno_text());
    }
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(temporary_.c_str());
    }

    void write(const void* data, std::size_t size) {
        const char* bytes = static_cast<const char*>(data);
        while (size > 0) {
            const ssize_t written = ::write(fd_, bytes, size);
            if (written < 0) {
                if (errno == EINTR) continue;
                throw Error(temporary_.string() + ": cannot write: " + errno_text());
            }
            bytes += written;
            size -= static_cast<std::size_t>(written);
            bytes_written_ += static_cast<std::uint64_t>(written);
        }
    }
    void write(std::string_view text) { write(text.data(), text.size()); }

    std::uint64_t bytes_written() const { return bytes_written_; }

    // Flushes the data to disk and renames the file to its final name.
    void commit() {
        if (::fsync(fd_) != 0) throw Error(temporary_.string() + ": cannot flush to disk: " + errno_text());
        if (::close(fd_) != 0) {
            fd_ = -1;
            throw Error(temporary_.string() + ": cannot close: " + errno_text());
        }
        fd_ = -1;
        if (::rename(temporary_.c_str(), path_.c_str()) != 0)
            throw Error(path_.string() + ": cannot rename " + temporary_.string() + " to it: " + errno_text());
        committed_ = true;
        sync_parent_folder(path_);
    }

private:
    fs::path path_;
    fs::path temporary_;
    int fd_ = -1;
    bool committed_ = false;
    std::uint64_t bytes_written_ = 0;
};

inline void write_file_atomic(const fs::path& path, std::string_view bytes) {
    AtomicFile file(path);
    file.write(bytes);
    file.commit();
}

inline std::string read_file(const fs::path& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) throw Error(path.string() + ": cannot open: " + errno_text());
    std::string bytes;
    char buffer[1 << 16];
    for (;;) {
        const std::size_t n = std::fread(buffer, 1, sizeof buffer, file);
        bytes.append(buffer, n);
        if (n < sizeof buffer) break;
    }
    const bool failed = std::ferror(file) != 0;
    std::fclose(file);
    if (failed) throw Error(path.string() + ": cannot read: " + errno_text());
    return bytes;
}

// Reads `size` bytes at `offset` of an open file; throws when the file ends first.
inline void read_exact_at(int fd, std::uint64_t offset, void* out, std::size_t size, const std::string& name) {
    char* bytes = static_cast<char*>(out);
    while (size > 0) {
        const ssize_t n = ::pread(fd, bytes, size, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(name + ": cannot read at byte " + std::to_string(offset) + ": " + errno_text());
        }
        if (n == 0)
            throw Error(name + ": file ends at byte " + std::to_string(offset) + ", " + std::to_string(size) +
                        " bytes before the expected end (truncated file?)");
        bytes += n;
        size -= static_cast<std::size_t>(n);
        offset += static_cast<std::uint64_t>(n);
    }
}

// A read-only file descriptor that closes itself.
class ReadOnlyFile {
public:
    explicit ReadOnlyFile(const fs::path& path) : name_(path.string()) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) throw Error(name_ + ": cannot open: " + errno_text());
        struct stat info {};
        if (::fstat(fd_, &info) != 0) {
            ::close(fd_);
            throw Error(name_ + ": cannot read its size: " + errno_text());
        }
        size_ = static_cast<std::uint64_t>(info.st_size);
    }
    ReadOnlyFile(const ReadOnlyFile&) = delete;
    ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
    ~ReadOnlyFile() { ::close(fd_); }

    int fd() const { return fd_; }
    std::uint64_t size() const { return size_; }
    const std::string& name() const { return name_; }

    void read_at(std::uint64_t offset, void* out, std::size_t size) const { read_exact_at(fd_, offset, out, size, name_); }
    std::string read_string(std::uint64_t offset, std::size_t size) const {
        std::string bytes(size, '\0');
        read_at(offset, bytes.data(), size);
        return bytes;
    }

private:
    std::string name_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

// An exclusive advisory lock (flock) on a lock file. The kernel drops it when the process
// exits in any way, SIGKILL included, so a lock never outlives a crashed run.
class FileLock {
public:
    // Locks `path`, waiting while another process holds it when `wait` is set. Returns a lock
    // that is not held() when `wait` is unset and another process holds it.
    FileLock(const fs::path& path, bool wait) {
        fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd_ < 0) throw Error(path.string() + ": cannot open lock file: " + errno_text());
        int result;
        do {
            result = ::flock(fd_, LOCK_EX | (wait ? 0 : LOCK_NB));
        } while (result != 0 && errno == EINTR);
        if (result != 0) {
            if (errno != EWOULDBLOCK) throw Error(path.string() + ": cannot lock: " + errno_text());
            ::close(fd_);
            fd_ = -1;
        }
    }
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    ~FileLock() {
        if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the lock
    }

    bool held() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// 64-bit FNV-1a, continuing from `hash`.
inline std::uint64_t fnv1a(const void* data, std::size_t size, std::uint64_t hash = 0xcbf29ce484222325ull) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ull;
    }
    return hash;
}

inline std::uint64_t fnv1a(std::string_view text) { return fnv1a(text.data(), text.size()); }

// SplitMix64's output function: spreads the bits of `x` over the whole word.
inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// Identifies a file's content cheaply: its size and an FNV-1a hash of its first and last
// MiB. It tells a replaced or rewritten file from the one a run started with, not every
// possible edit in the middle of a large file.
inline std::string file_fingerprint(const fs::path& path) {
    ReadOnlyFile file(path);
    constexpr std::uint64_t kWindow = 1 << 20;
    std::uint64_t hash = fnv1a("", 0);
    const std::uint64_t head = std::min(file.size(), kWindow);
    std::string bytes = file.read_string(0, static_cast<std::size_t>(head));
    hash = fnv1a(bytes.data(), bytes.size(), hash);
    if (file.size() > kWindow) {
        const std::uint64_t tail_start = std::max(head, file.size() - kWindow);
        bytes = file.read_string(tail_start, static_cast<std::size_t>(file.size() - tail_start));
        hash = fnv1a(bytes.data(), bytes.size(), hash);
    }
    char text[64];
    std::snprintf(text, sizeof text, "%llu:%016llx", static_cast<unsigned long long>(file.size()),
                  static_cast<unsigned long long>(hash));
    return text;
}

}  // namespace capfilt
