// GGUF reader: parses metadata and tensor infos, checks every length and offset against
// the file, and exposes the tensor data in place (mapped or from a caller's buffer).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/mapped_file.hpp"
#include "blip/gguf/format.hpp"

namespace blip::gguf {

// One metadata value. Scalars use the member that fits their type; arrays keep items.
struct Value {
    ValueType type = ValueType::U8;
    std::uint64_t u = 0;  // U8, U16, U32, U64, Bool
    std::int64_t i = 0;   // I8, I16, I32, I64
    double f = 0;         // F32, F64
    std::string s;        // String
    ValueType array_type = ValueType::U8;
    std::vector<Value> items;  // Array

    bool is_integer() const {
        switch (type) {
            case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
            case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
                return true;
            default:
                return false;
        }
    }
    bool is_unsigned() const {
        return type == ValueType::U8 || type == ValueType::U16 || type == ValueType::U32 || type == ValueType::U64;
    }
};

// A tensor as stored: `shape` is row-major, outermost first (the reverse of GGUF's
// innermost-first extents), so a [out, in] weight has shape {out, in}.
struct TensorInfo {
    std::string name;
    DType type = DType::F32;
    std::vector<std::int64_t> shape;
    std::uint64_t offset = 0;  // from the start of the data section
    const void* data = nullptr;
    std::size_t nbytes = 0;

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    // Length of the innermost dimension, and the number of such rows.
    std::int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
    std::int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
    const float* f32() const { return static_cast<const float*>(data); }
};

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) text += ", ";
        text += std::to_string(shape[i]);
    }
    return text + "]";
}

namespace detail {

// Bounds-checked little-endian cursor over the file's header.
class Cursor {
public:
    Cursor(const std::uint8_t* data, std::size_t size, const std::string& name)
        : data_(data), size_(size), name_(name) {}

    std::size_t position() const { return pos_; }
    std::size_t remaining() const { return size_ - pos_; }

    void need(std::uint64_t bytes, const char* what) const {
        if (bytes > remaining())
            throw Error(name_ + ": truncated GGUF file: " + what + " at byte " + std::to_string(pos_) + " needs " +
                        std::to_string(bytes) + " bytes, " + std::to_string(remaining()) + " left");
    }

    template <class T>
    T read(const char* what) {
        need(sizeof(T), what);
        T value;
        std::memcpy(&value, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return value;
    }

    std::string read_string(const char* what) {
        const auto length = read<std::uint64_t>(what);
        need(length, what);
        std::string text(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(length));
        pos_ += static_cast<std::size_t>(length);
        return text;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
    const std::string& name_;
};

inline std::size_t min_value_bytes(ValueType type) {
    switch (type) {
        case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
        case ValueType::U16: case ValueType::I16: return 2;
        case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
        case ValueType::U64: case ValueType::I64: case ValueType::F64: case ValueType::String: return 8;
        case ValueType::Array: return 12;
    }
    return 1;
}

inline bool valid_value_type(std::uint32_t type) { return type <= static_cast<std::uint32_t>(ValueType::F64); }

inline Value read_value(Cursor& cursor, ValueType type, const std::string& key, const std::string& file, int depth) {
    Value value;
    value.type = type;
    switch (type) {
        case ValueType::U8: value.u = cursor.read<std::uint8_t>("u8 value"); break;
        case ValueType::I8: value.i = cursor.read<std::int8_t>("i8 value"); break;
        case ValueType::U16: value.u = cursor.read<std::uint16_t>("u16 value"); break;
        case ValueType::I16: value.i = cursor.read<std::int16_t>("i16 value"); break;
        case ValueType::U32: value.u = cursor.read<std::uint32_t>("u32 value"); break;
        case ValueType::I32: value.i = cursor.read<std::int32_t>("i32 value"); break;
        case ValueType::U64: value.u = cursor.read<std::uint64_t>("u64 value"); break;
        case ValueType::I64: value.i = cursor.read<std::int64_t>("i64 value"); break;
        case ValueType::F32: value.f = cursor.read<float>("f32 value"); break;
        case ValueType::F64: value.f = cursor.read<double>("f64 value"); break;
        case ValueType::Bool: {
            const auto byte = cursor.read<std::uint8_t>("bool value");
            if (byte > 1) throw Error(file + ": metadata " + key + ": invalid bool byte " + std::to_string(byte));
            value.u = byte;
            break;
        }
        case ValueType::String: value.s = cursor.read_string("string value"); break;
        case ValueType::Array: {
            if (depth > 0) throw Error(file + ": metadata " + key + ": nested arrays are not supported");
            const auto item_type = cursor.read<std::uint32_t>("array type");
            if (!valid_value_type(item_type))
                throw Error(file + ": metadata " + key + ": unknown array item type " + std::to_string(item_type));
            value.array_type = static_cast<ValueType>(item_type);
            const auto count = cursor.read<std::uint64_t>("array length");
            // Each item takes at least min_value_bytes, so a count beyond that is corrupt.
            if (count > cursor.remaining() / min_value_bytes(value.array_type))
                throw Error(file + ": metadata " + key + ": array length " + std::to_string(count) +
                            " exceeds the file size (truncated or corrupt file)");
            value.items.reserve(static_cast<std::size_t>(count));
            for (std::uint64_t n = 0; n < count; ++n)
                value.items.push_back(read_value(cursor, value.array_type, key, file, depth + 1));
            break;
        }
    }
    return value;
}

}  // namespace detail

// A parsed GGUF file. Tensor data stays in the underlying bytes (no copy).
class File {
public:
    // Maps `path` and parses it.
    static std::shared_ptr<const File> open(const std::string& path) {
        return std::make_shared<const File>(ByteSource::map_file(path));
    }
    // Parses a copy-free view of `size` bytes at `data`, which must outlive the result.
    static std::shared_ptr<const File> from_memory(const void* data, std::size_t size, std::string name = "<memory>") {
        return std::make_shared<const File>(ByteSource::borrow(data, size, std::move(name)));
    }
    // Parses `bytes`, taking ownership of them.
    static std::shared_ptr<const File> from_buffer(std::vector<std::uint8_t> bytes, std::string name = "<buffer>") {
        return std::make_shared<const File>(ByteSource::from_vector(std::move(bytes), std::move(name)));
    }

    explicit File(std::shared_ptr<ByteSource> bytes) : bytes_(std::move(bytes)) { parse(); }

    const std::string& name() const { return bytes_->name(); }
    std::uint32_t version() const { return version_; }
    std::uint32_t alignment() const { return alignment_; }
    std::size_t file_size() const { return bytes_->size(); }
    bool is_mapped() const { return bytes_->is_mapped(); }

    // Metadata in file order.
    const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
    const Value* find(std::string_view key) const {
        auto it = metadata_index_.find(std::string(key));
        return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
    }
    bool has(std::string_view key) const { return find(key) != nullptr; }

    const Value& get(std::string_view key) const {
        const Value* value = find(key);
        if (!value) throw Error(name() + ": missing metadata key " + std::string(key) + " (convert the model again with blip-convert)");
        return *value;
    }
    std::int64_t get_int(std::string_view key) const { return to_int(key, get(key)); }
    double get_float(std::string_view key) const {
        const Value& value = get(key);
        if (value.type == ValueType::F32 || value.type == ValueType::F64) return value.f;
        if (value.is_integer()) return static_cast<double>(to_int(key, value));
        throw type_error(key, value, "a number");
    }
    bool get_bool(std::string_view key) const {
        const Value& value = get(key);
        if (value.type != ValueType::Bool) throw type_error(key, value, "a bool");
        return value.u != 0;
    }
    const std::string& get_string(std::string_view key) const {
        const Value& value = get(key);
        if (value.type != ValueType::String) throw type_error(key, value, "a string");
        return value.s;
    }
    std::vector<std::string> get_string_array(std::string_view key) const {
        const Value& value = get_array(key, ValueType::String, "an array of strings");
        std::vector<std::string> out;
        out.reserve(value.items.size());
        for (const auto& item : value.items) out.push_back(item.s);
        return out;
    }
    std::vector<std::int64_t> get_int_array(std::string_view key) const {
        const Value& value = get(key);
        if (value.type != ValueType::Array) throw type_error(key, value, "an array of integers");
        std::vector<std::int64_t> out;
        out.reserve(value.items.size());
        for (const auto& item : value.items) out.push_back(to_int(key, item));
        return out;
    }
    std::vector<double> get_float_array(std::string_view key) const {
        const Value& value = get(key);
        if (value.type != ValueType::Array) throw type_error(key, value, "an array of numbers");
        std::vector<double> out;
        for (const auto& item : value.items) {
            if (item.type == ValueType::F32 || item.type == ValueType::F64) out.push_back(item.f);
            else if (item.is_integer()) out.push_back(static_cast<double>(to_int(key, item)));
            else throw type_error(key, value, "an array of numbers");
        }
        return out;
    }

    std::int64_t get_int_or(std::string_view key, std::int64_t fallback) const { return has(key) ? get_int(key) : fallback; }
    double get_float_or(std::string_view key, double fallback) const { return has(key) ? get_float(key) : fallback; }
    bool get_bool_or(std::string_view key, bool fallback) const { return has(key) ? get_bool(key) : fallback; }
    std::string get_string_or(std::string_view key, std::string fallback) const {
        return has(key) ? get_string(key) : fallback;
    }

    // Tensors in file order.
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(std::string_view tensor_name) const {
        auto it = tensor_index_.find(std::string(tensor_name));
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    const TensorInfo& tensor(std::string_view tensor_name) const {
        const TensorInfo* info = find_tensor(tensor_name);
        if (!info) throw Error(name() + ": missing tensor " + std::string(tensor_name));
        return *info;
    }
    // Returns the tensor after checking its shape against the configuration.
    const TensorInfo& tensor(std::string_view tensor_name, const std::vector<std::int64_t>& expected_shape) const {
        const TensorInfo& info = tensor(tensor_name);
        if (info.shape != expected_shape)
            throw Error(name() + ": tensor " + info.name + " has shape " + shape_string(info.shape) + ", expected " +
                        shape_string(expected_shape) + " from the model's configuration");
        return info;
    }

private:
    Error type_error(std::string_view key, const Value& value, const char* expected) const {
        return Error(name() + ": metadata " + std::string(key) + " is " + value_type_name(value.type) + ", expected " +
                     expected);
    }
    std::int64_t to_int(std::string_view key, const Value& value) const {
        if (value.is_unsigned()) {
            if (value.u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                throw Error(name() + ": metadata " + std::string(key) + " is out of range");
            return static_cast<std::int64_t>(value.u);
        }
        if (value.is_integer()) return value.i;
        throw type_error(key, value, "an integer");
    }
    const Value& get_array(std::string_view key, ValueType item_type, const char* expected) const {
        const Value& value = get(key);
        if (value.type != ValueType::Array || value.array_type != item_type) throw type_error(key, value, expected);
        return value;
    }

    void parse() {
        const std::string& file = name();
        if (bytes_->size() == 0) throw Error(file + ": empty file, expected a GGUF model");
        detail::Cursor cursor(bytes_->data(), bytes_->size(), file);
        if (bytes_->size() < 4) throw Error(file + ": not a GGUF file (too short)");
        const auto magic = cursor.read<std::uint32_t>("magic");
        if (magic != kMagic) throw Error(file + ": not a GGUF file (bad magic; convert checkpoints with blip-convert)");
        version_ = cursor.read<std::uint32_t>("version");
        if (version_ != 2 && version_ != 3)
            throw Error(file + ": unsupported GGUF version " + std::to_string(version_) + " (this library reads 2 and 3)");
        const auto tensor_count = cursor.read<std::uint64_t>("tensor count");
        const auto metadata_count = cursor.read<std::uint64_t>("metadata count");
        // Every entry takes at least 8 bytes of header, which bounds both counts.
        if (tensor_count > cursor.remaining() / 8 || metadata_count > cursor.remaining() / 8)
            throw Error(file + ": truncated GGUF file: " + std::to_string(tensor_count) + " tensors and " +
                        std::to_string(metadata_count) + " metadata entries do not fit in " +
                        std::to_string(bytes_->size()) + " bytes");

        for (std::uint64_t n = 0; n < metadata_count; ++n) {
            std::string key = cursor.read_string("metadata key");
            const auto type = cursor.read<std::uint32_t>("metadata type");
            if (!detail::valid_value_type(type))
                throw Error(file + ": metadata " + key + ": unknown value type " + std::to_string(type));
            Value value = detail::read_value(cursor, static_cast<ValueType>(type), key, file, 0);
            if (metadata_index_.count(key)) throw Error(file + ": duplicate metadata key " + key);
            metadata_index_[key] = metadata_.size();
            metadata_.emplace_back(std::move(key), std::move(value));
        }

        alignment_ = kDefaultAlignment;
        if (const Value* value = find("general.alignment")) {
            const std::int64_t alignment = to_int("general.alignment", *value);
            if (alignment <= 0 || alignment > (1 << 20) || (alignment & (alignment - 1)) != 0)
                throw Error(file + ": general.alignment " + std::to_string(alignment) + " is not a power of two");
            alignment_ = static_cast<std::uint32_t>(alignment);
        }

        tensors_.reserve(static_cast<std::size_t>(tensor_count));
        for (std::uint64_t n = 0; n < tensor_count; ++n) tensors_.push_back(read_tensor_info(cursor));

        const std::size_t header_end = cursor.position();
        const std::size_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
        if (data_start > bytes_->size() && !tensors_.empty())
            throw Error(file + ": truncated GGUF file: the tensor data section starts past the end of the file");
        const std::size_t data_size = data_start <= bytes_->size() ? bytes_->size() - data_start : 0;

        for (std::size_t index = 0; index < tensors_.size(); ++index) {
            TensorInfo& info = tensors_[index];
            if (info.offset % alignment_ != 0)
                throw Error(file + ": tensor " + info.name + ": data offset " + std::to_string(info.offset) +
                            " is not a multiple of the alignment " + std::to_string(alignment_));
            if (info.offset > data_size || info.nbytes > data_size - info.offset)
                throw Error(file + ": truncated GGUF file: tensor " + info.name + " needs bytes " +
                            std::to_string(info.offset) + ".." + std::to_string(info.offset + info.nbytes) +
                            " of the data section, which has " + std::to_string(data_size));
            info.data = bytes_->data() + data_start + info.offset;
            if (tensor_index_.count(info.name)) throw Error(file + ": duplicate tensor " + info.name);
            tensor_index_[info.name] = index;
        }
    }

    TensorInfo read_tensor_info(detail::Cursor& cursor) {
        const std::string& file = name();
        TensorInfo info;
        info.name = cursor.read_string("tensor name");
        const auto dims = cursor.read<std::uint32_t>("tensor dimension count");
        if (dims == 0 || dims > kMaxDims)
            throw Error(file + ": tensor " + info.name + ": " + std::to_string(dims) + " dimensions (expected 1 to 4)");
        std::vector<std::int64_t> extents(dims);
        std::uint64_t count = 1;
        for (auto& extent : extents) {
            const auto value = cursor.read<std::uint64_t>("tensor extent");
            if (value == 0 || value > (std::uint64_t{1} << 40) || count > (std::uint64_t{1} << 48) / value)
                throw Error(file + ": tensor " + info.name + ": invalid extent " + std::to_string(value));
            count *= value;
            extent = static_cast<std::int64_t>(value);
        }
        info.shape.assign(extents.rbegin(), extents.rend());
        const auto type = cursor.read<std::uint32_t>("tensor type");
        const DTypeTraits* traits = find_dtype(type);
        if (!traits)
            throw Error(file + ": tensor " + info.name + ": unsupported ggml type " + std::to_string(type));
        info.type = traits->type;
        if (static_cast<std::uint64_t>(extents[0]) % traits->block_size != 0)
            throw Error(file + ": tensor " + info.name + ": row length " + std::to_string(extents[0]) +
                        " is not a multiple of the " + std::string(traits->name) + " block size " +
                        std::to_string(traits->block_size));
        info.nbytes = dtype_bytes(info.type, static_cast<std::size_t>(count));
        info.offset = cursor.read<std::uint64_t>("tensor offset");
        return info;
    }

    std::shared_ptr<ByteSource> bytes_;
    std::uint32_t version_ = 0;
    std::uint32_t alignment_ = kDefaultAlignment;
    std::vector<std::pair<std::string, Value>> metadata_;
    std::map<std::string, std::size_t> metadata_index_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, std::size_t> tensor_index_;
};

}  // namespace blip::gguf
