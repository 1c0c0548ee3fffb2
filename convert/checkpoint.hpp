// Common types of the checkpoint readers: tensors as a checkpoint file stores them
// (SourceTensor), the set of tensors read from one or more files (Checkpoint), and the
// memory-mapped files and owned buffers those tensors point into.
#pragma once

#include <blip/core/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__) || defined(__EMSCRIPTEN__)
#define BLIP_CONVERT_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace blip::convert {

// Element types that BLIP checkpoints contain.
enum class SourceDType { F32, F16, BF16, I64, I32, U8, Bool };

inline const char* source_dtype_name(SourceDType dtype) {
    switch (dtype) {
        case SourceDType::F32: return "F32";
        case SourceDType::F16: return "F16";
        case SourceDType::BF16: return "BF16";
        case SourceDType::I64: return "I64";
        case SourceDType::I32: return "I32";
        case SourceDType::U8: return "U8";
        case SourceDType::Bool: return "BOOL";
    }
    return "?";
}

// Bytes per element.
inline std::size_t source_dtype_size(SourceDType dtype) {
    switch (dtype) {
        case SourceDType::F32: return 4;
        case SourceDType::F16: return 2;
        case SourceDType::BF16: return 2;
        case SourceDType::I64: return 8;
        case SourceDType::I32: return 4;
        case SourceDType::U8: return 1;
        case SourceDType::Bool: return 1;
    }
    return 1;
}

inline bool is_float_dtype(SourceDType dtype) {
    return dtype == SourceDType::F32 || dtype == SourceDType::F16 || dtype == SourceDType::BF16;
}

namespace detail {

// Every supported file format stores little-endian data, and the readers use it in place.
inline bool host_is_little_endian() {
    const std::uint16_t probe = 1;
    unsigned char first = 0;
    std::memcpy(&first, &probe, 1);
    return first == 1;
}

inline void require_little_endian_host() {
    if (!host_is_little_endian())
        throw Error("checkpoint readers need a little-endian host: checkpoint files store little-endian data");
}

inline float half_to_float(std::uint16_t bits) {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    std::uint32_t exponent = (bits >> 10) & 0x1fu;
    std::uint32_t mantissa = bits & 0x3ffu;
    std::uint32_t result = 0;
    if (exponent == 0x1f) {
        result = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
    } else if (exponent != 0) {
        result = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa != 0) {
        // Subnormal half: shift the mantissa up until its leading one reaches the hidden bit.
        exponent = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        result = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    } else {
        result = sign;  // signed zero
    }
    float value;
    std::memcpy(&value, &result, 4);
    return value;
}

inline float bfloat16_to_float(std::uint16_t bits) {
    const std::uint32_t widened = static_cast<std::uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &widened, 4);
    return value;
}

// a * b, or an Error naming `what` when the product does not fit in 64 bits.
inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& what) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a)
        throw Error(what + ": size overflows 64 bits; the file is corrupt");
    return a * b;
}

inline std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const std::string& what) {
    if (b > std::numeric_limits<std::uint64_t>::max() - a)
        throw Error(what + ": offset overflows 64 bits; the file is corrupt");
    return a + b;
}

inline std::string format_shape(const std::vector<std::int64_t>& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) text += ", ";
        text += std::to_string(shape[i]);
    }
    return text + "]";
}

// Number of elements of `shape`. Throws for a negative dimension or overflow.
inline std::uint64_t element_count(const std::vector<std::int64_t>& shape, const std::string& what) {
    std::uint64_t count = 1;
    for (std::int64_t dim : shape) {
        if (dim < 0) throw Error(what + ": negative dimension in shape " + format_shape(shape));
        count = checked_mul(count, static_cast<std::uint64_t>(dim), what);
    }
    return count;
}

// Returns "cannot open PATH: REASON" for a file that std::ifstream failed to open. The C++
// streams do not report why, so REASON is the errno that the C library's open() left, when
// it left one. Set errno to 0 before opening.
inline std::string cannot_open_message(const std::string& path, int error) {
    return "cannot open " + path + ": " +
           (error != 0 ? std::string(std::strerror(error)) : std::string("check that the file exists and is readable"));
}

// A whole file, read-only: memory-mapped where the platform has mmap, else read into memory.
class MappedFile {
public:
    explicit MappedFile(const std::string& path) : path_(path) {
#ifdef BLIP_CONVERT_HAVE_MMAP
        const int fd = ::open(path.c_str(), O_RDONLY);
        if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
        struct stat info {};
        if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
            ::close(fd);
            throw Error("cannot read " + path + ": not a regular file");
        }
        size_ = static_cast<std::size_t>(info.st_size);
        if (size_ > 0) {
            void* address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (address == MAP_FAILED) {
                const int error = errno;
                ::close(fd);
                throw Error("cannot map " + path + " into memory: " + std::strerror(error));
            }
            mapping_ = address;
            data_ = static_cast<const std::uint8_t*>(address);
        }
        ::close(fd);
#else
        errno = 0;
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        if (!in) throw Error(cannot_open_message(path, errno));
        const std::streamoff length = in.tellg();
        if (length < 0) throw Error("cannot read " + path);
        buffer_.resize(static_cast<std::size_t>(length));
        in.seekg(0);
        if (length > 0 && !in.read(reinterpret_cast<char*>(buffer_.data()), length))
            throw Error("cannot read " + path);
        size_ = buffer_.size();
        data_ = buffer_.data();
#endif
    }

    ~MappedFile() {
#ifdef BLIP_CONVERT_HAVE_MMAP
        if (mapping_) ::munmap(mapping_, size_);
#endif
    }

    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
#ifdef BLIP_CONVERT_HAVE_MMAP
    void* mapping_ = nullptr;
#else
    std::vector<std::uint8_t> buffer_;
#endif
};

inline std::shared_ptr<const MappedFile> map_file(const std::string& path) {
    return std::make_shared<const MappedFile>(path);
}

inline std::uint16_t load_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_u32(const std::uint8_t* p) {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
           (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_u64(const std::uint8_t* p) {
    return static_cast<std::uint64_t>(load_u32(p)) | (static_cast<std::uint64_t>(load_u32(p + 4)) << 32);
}

}  // namespace detail

// One tensor as the checkpoint stores it. `data` points at `nbytes` contiguous
// row-major little-endian bytes owned by the Checkpoint the tensor came from. The pointer
// may be unaligned, so read elements with memcpy.
struct SourceTensor {
    std::string name;
    SourceDType dtype = SourceDType::F32;
    std::vector<std::int64_t> shape;  // row-major, outermost first; empty for a scalar
    const std::uint8_t* data = nullptr;
    std::size_t nbytes = 0;

    std::size_t numel() const {
        std::size_t count = 1;
        for (std::int64_t dim : shape) count *= static_cast<std::size_t>(dim);
        return count;
    }

    // Converts F32, F16 or BF16 elements to float32. Throws for integer and bool tensors.
    std::vector<float> to_f32() const {
        if (!is_float_dtype(dtype))
            throw Error("tensor " + name + " has dtype " + source_dtype_name(dtype) +
                        ", not a floating-point type, so it cannot be converted to F32");
        const std::size_t count = numel();
        if (count * source_dtype_size(dtype) != nbytes)
            throw Error("tensor " + name + ": " + std::to_string(nbytes) + " bytes do not match shape " +
                        detail::format_shape(shape) + " of " + source_dtype_name(dtype));
        std::vector<float> values(count);
        if (dtype == SourceDType::F32) {
            if (count) std::memcpy(values.data(), data, count * 4);
            return values;
        }
        for (std::size_t i = 0; i < count; ++i) {
            std::uint16_t bits;
            std::memcpy(&bits, data + 2 * i, 2);
            values[i] = dtype == SourceDType::F16 ? detail::half_to_float(bits) : detail::bfloat16_to_float(bits);
        }
        return values;
    }
};

// The tensors read from one checkpoint, in file order, together with the mapped files
// and buffers they point into. Copies share those buffers, so tensors stay valid as
// long as any copy of the Checkpoint lives.
class Checkpoint {
public:
    std::string source;  // path of the file or folder, for messages

    const SourceTensor* find(std::string_view name) const {
        const auto it = index_.find(std::string(name));
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }

    const std::vector<SourceTensor>& tensors() const { return tensors_; }

    // Appends a tensor, whose data must live in a buffer this checkpoint keeps alive.
    void add(SourceTensor tensor) {
        if (index_.count(tensor.name))
            throw Error(source + ": tensor " + tensor.name + " appears twice; the checkpoint is inconsistent");
        index_.emplace(tensor.name, tensors_.size());
        tensors_.push_back(std::move(tensor));
    }

    // Keeps `owner` (a mapped file or a buffer) alive as long as this checkpoint.
    void keep_alive(std::shared_ptr<const void> owner) { owners_.push_back(std::move(owner)); }

    // Takes ownership of `bytes` and returns where they now live.
    const std::uint8_t* store(std::vector<std::uint8_t> bytes) {
        auto buffer = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
        const std::uint8_t* data = buffer->data();
        owners_.push_back(std::move(buffer));
        return data;
    }

    // Shares the buffers of `other`, so that tensors copied from it stay valid here.
    void keep_alive_buffers_of(const Checkpoint& other) {
        owners_.insert(owners_.end(), other.owners_.begin(), other.owners_.end());
    }

private:
    std::vector<SourceTensor> tensors_;
    std::unordered_map<std::string, std::size_t> index_;
    std::vector<std::shared_ptr<const void>> owners_;
};

namespace detail {

inline std::string folder_of(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

inline std::string read_small_file(const std::string& path) {
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(cannot_open_message(path, errno));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Reads a sharded checkpoint from its index (`model.safetensors.index.json` or
// `pytorch_model.bin.index.json`): `weight_map` maps each tensor name to a shard file in
// the index's folder, and `read_shard(path)` reads one shard. Every mapped tensor must be
// found in its shard. Tensors of a shard that the map omits are kept as well.
inline Checkpoint read_sharded(const std::string& index_path,
                               const std::function<Checkpoint(const std::string&)>& read_shard) {
    nlohmann::ordered_json index;
    try {
        index = nlohmann::ordered_json::parse(read_small_file(index_path));
    } catch (const nlohmann::json::exception& e) {
        throw Error(index_path + ": invalid JSON in the shard index: " + e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        throw Error(index_path + ": the shard index has no \"weight_map\" object");

    std::vector<std::string> shard_files;
    std::unordered_map<std::string, std::string> shard_of_tensor;
    for (const auto& [tensor_name, file] : index["weight_map"].items()) {
        if (!file.is_string()) throw Error(index_path + ": weight_map entry " + tensor_name + " is not a file name");
        const std::string name = file.get<std::string>();
        // Shards must sit beside the index: no folders, so an index cannot point elsewhere.
        if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
            name.find('\\') != std::string::npos)
            throw Error(index_path + ": weight_map entry " + tensor_name + " names \"" + name +
                        "\", which is not a plain file name in the index's folder");
        if (std::find(shard_files.begin(), shard_files.end(), name) == shard_files.end()) shard_files.push_back(name);
        shard_of_tensor[tensor_name] = name;
    }
    if (shard_files.empty()) throw Error(index_path + ": the shard index maps no tensors");

    Checkpoint result;
    result.source = index_path;
    const std::string folder = folder_of(index_path);
    for (const std::string& file : shard_files) {
        const Checkpoint shard = read_shard(folder + "/" + file);
        result.keep_alive_buffers_of(shard);
        for (const SourceTensor& tensor : shard.tensors()) {
            const auto it = shard_of_tensor.find(tensor.name);
            if (it != shard_of_tensor.end() && it->second != file)
                throw Error(index_path + ": tensor " + tensor.name + " is mapped to " + it->second +
                            " but found in " + file);
            result.add(tensor);
        }
    }
    for (const auto& [tensor_name, file] : shard_of_tensor) {
        if (!result.find(tensor_name))
            throw Error(index_path + ": tensor " + tensor_name + " is mapped to " + file + " but that file lacks it");
    }
    return result;
}

}  // namespace detail

}  // namespace blip::convert
