// GGUF writer: collects metadata and tensors, then writes a complete file atomically
// (a temporary file renamed into place), so a failed conversion leaves no partial output.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/output_path.hpp"
#include "blip/gguf/format.hpp"

namespace blip::gguf {

class Writer {
public:
    explicit Writer(std::uint32_t alignment = kDefaultAlignment) : alignment_(alignment) {
        set_u32("general.alignment", alignment);
    }

    void set_u32(const std::string& key, std::uint32_t value) { scalar(key, ValueType::U32, &value, 4); }
    void set_i32(const std::string& key, std::int32_t value) { scalar(key, ValueType::I32, &value, 4); }
    void set_u64(const std::string& key, std::uint64_t value) { scalar(key, ValueType::U64, &value, 8); }
    void set_f32(const std::string& key, float value) { scalar(key, ValueType::F32, &value, 4); }
    void set_f64(const std::string& key, double value) { scalar(key, ValueType::F64, &value, 8); }
    void set_bool(const std::string& key, bool value) {
        const std::uint8_t byte = value ? 1 : 0;
        scalar(key, ValueType::Bool, &byte, 1);
    }
    void set_string(const std::string& key, const std::string& value) {
        std::vector<std::uint8_t> bytes;
        append_string(bytes, value);
        add_entry(key, ValueType::String, std::move(bytes));
    }
    void set_string_array(const std::string& key, const std::vector<std::string>& values) {
        std::vector<std::uint8_t> bytes;
        append_array_header(bytes, ValueType::String, values.size());
        for (const auto& value : values) append_string(bytes, value);
        add_entry(key, ValueType::Array, std::move(bytes));
    }
    void set_i32_array(const std::string& key, const std::vector<std::int32_t>& values) {
        std::vector<std::uint8_t> bytes;
        append_array_header(bytes, ValueType::I32, values.size());
        append_raw(bytes, values.data(), values.size() * 4);
        add_entry(key, ValueType::Array, std::move(bytes));
    }
    void set_f32_array(const std::string& key, const std::vector<float>& values) {
        std::vector<std::uint8_t> bytes;
        append_array_header(bytes, ValueType::F32, values.size());
        append_raw(bytes, values.data(), values.size() * 4);
        add_entry(key, ValueType::Array, std::move(bytes));
    }

    // Adds a tensor; `shape` is row-major, outermost first, and `data` holds its encoded
    // bytes in `type` (the writer stores extents innermost first, as GGUF requires).
    void add_tensor(const std::string& name, DType type, const std::vector<std::int64_t>& shape,
                    std::vector<std::uint8_t> data) {
        if (shape.empty() || shape.size() > kMaxDims)
            throw Error("tensor " + name + ": " + std::to_string(shape.size()) + " dimensions (expected 1 to 4)");
        std::size_t count = 1;
        for (auto extent : shape) {
            if (extent <= 0) throw Error("tensor " + name + ": invalid extent " + std::to_string(extent));
            count *= static_cast<std::size_t>(extent);
        }
        const auto& traits = dtype_traits(type);
        if (static_cast<std::size_t>(shape.back()) % traits.block_size != 0)
            throw Error("tensor " + name + ": row length " + std::to_string(shape.back()) + " is not a multiple of the " +
                        std::string(traits.name) + " block size " + std::to_string(traits.block_size));
        if (data.size() != dtype_bytes(type, count))
            throw Error("tensor " + name + ": " + std::to_string(data.size()) + " bytes given, " +
                        std::to_string(dtype_bytes(type, count)) + " expected for " + std::string(traits.name));
        if (!tensor_names_.insert(name).second) throw Error("tensor " + name + " added twice");
        tensors_.push_back({name, type, shape, std::move(data)});
    }

    // Encodes the whole file in memory.
    std::vector<std::uint8_t> to_bytes() const {
        std::vector<std::uint8_t> out;
        emit([&](const void* data, std::size_t size) { append_raw(out, data, size); });
        return out;
    }

    // Writes the file to `output` through a temporary file in the same folder, renamed into
    // place only after every byte was written, so a failure never leaves a partial file. A
    // symbolic link at `output` is followed, and a device, pipe, socket or folder is rejected.
    void write_file(const std::string& output) const {
        const std::string path = output_file_path(output).string();
        const std::string temporary = path + ".tmp";
        std::FILE* file = std::fopen(temporary.c_str(), "wb");
        if (!file) throw Error(temporary + ": cannot create: " + std::strerror(errno));
        bool written = true;
        try {
            emit([&](const void* data, std::size_t size) {
                if (written && size > 0) written = std::fwrite(data, 1, size, file) == size;
            });
        } catch (...) {
            // Encoding can run out of memory; the partial temporary file must not stay behind.
            std::fclose(file);
            std::remove(temporary.c_str());
            throw;
        }
        const bool flushed = std::fflush(file) == 0;
        const bool closed = std::fclose(file) == 0;
        if (!written || !flushed || !closed) {
            std::remove(temporary.c_str());
            throw Error(temporary + ": write failed (disk full?)");
        }
        std::error_code error;
        std::filesystem::rename(temporary, path, error);
        if (error) {
            std::remove(temporary.c_str());
            throw Error(path + ": cannot rename the finished file into place: " + error.message());
        }
    }

    std::size_t tensor_count() const { return tensors_.size(); }

private:
    struct Entry {
        std::string key;
        ValueType type;
        std::vector<std::uint8_t> bytes;
    };
    struct Tensor {
        std::string name;
        DType type;
        std::vector<std::int64_t> shape;
        std::vector<std::uint8_t> data;
    };

    // Passes the encoded file to `sink(data, size)` piece by piece, in order.
    template <class Sink>
    void emit(Sink&& sink) const {
        std::vector<std::uint8_t> header;
        append_value(header, kMagic);
        append_value(header, kVersion);
        append_value(header, static_cast<std::uint64_t>(tensors_.size()));
        append_value(header, static_cast<std::uint64_t>(entries_.size()));
        for (const auto& entry : entries_) {
            append_string(header, entry.key);
            append_value(header, static_cast<std::uint32_t>(entry.type));
            append_raw(header, entry.bytes.data(), entry.bytes.size());
        }
        std::uint64_t offset = 0;
        for (const auto& tensor : tensors_) {
            append_string(header, tensor.name);
            append_value(header, static_cast<std::uint32_t>(tensor.shape.size()));
            for (auto it = tensor.shape.rbegin(); it != tensor.shape.rend(); ++it)
                append_value(header, static_cast<std::uint64_t>(*it));
            append_value(header, static_cast<std::uint32_t>(tensor.type));
            append_value(header, offset);
            offset = align(offset + tensor.data.size());
        }
        header.resize(align(header.size()), 0);
        sink(header.data(), header.size());
        const std::vector<std::uint8_t> padding(alignment_, 0);
        for (const auto& tensor : tensors_) {
            sink(tensor.data.data(), tensor.data.size());
            sink(padding.data(), align(tensor.data.size()) - tensor.data.size());
        }
    }

    std::uint64_t align(std::uint64_t value) const { return (value + alignment_ - 1) / alignment_ * alignment_; }

    static void append_raw(std::vector<std::uint8_t>& out, const void* data, std::size_t size) {
        const auto* bytes = static_cast<const std::uint8_t*>(data);
        out.insert(out.end(), bytes, bytes + size);
    }
    template <class T>
    static void append_value(std::vector<std::uint8_t>& out, T value) {
        append_raw(out, &value, sizeof value);
    }
    static void append_string(std::vector<std::uint8_t>& out, const std::string& text) {
        append_value(out, static_cast<std::uint64_t>(text.size()));
        append_raw(out, text.data(), text.size());
    }
    static void append_array_header(std::vector<std::uint8_t>& out, ValueType type, std::size_t count) {
        append_value(out, static_cast<std::uint32_t>(type));
        append_value(out, static_cast<std::uint64_t>(count));
    }

    void scalar(const std::string& key, ValueType type, const void* data, std::size_t size) {
        std::vector<std::uint8_t> bytes;
        append_raw(bytes, data, size);
        add_entry(key, type, std::move(bytes));
    }
    // Replaces an earlier value of the same key, so each key appears once.
    void add_entry(const std::string& key, ValueType type, std::vector<std::uint8_t> bytes) {
        for (auto& entry : entries_) {
            if (entry.key == key) {
                entry.type = type;
                entry.bytes = std::move(bytes);
                return;
            }
        }
        entries_.push_back({key, type, std::move(bytes)});
    }

    std::uint32_t alignment_;
    std::vector<Entry> entries_;
    std::vector<Tensor> tensors_;
    std::set<std::string> tensor_names_;
};

}  // namespace blip::gguf
