// The summary that `blip-convert --info` prints: a GGUF file's metadata and tensor table.
#pragma once

#include <blip/core/dtype.hpp>
#include <blip/gguf/reader.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <ostream>
#include <string>

namespace blip::convert {

namespace detail {

inline std::string quote(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (byte < 0x20) {
            static const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[byte >> 4];
            out += hex[byte & 15];
        } else {
            out += c;
        }
    }
    return out + "\"";
}

inline std::string format_scalar(const gguf::Value& value) {
    using gguf::ValueType;
    switch (value.type) {
        case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
            return std::to_string(value.u);
        case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
            return std::to_string(value.i);
        case ValueType::F32: case ValueType::F64: {
            char text[32];
            std::snprintf(text, sizeof text, "%.9g", value.f);
            return text;
        }
        case ValueType::Bool: return value.u ? "true" : "false";
        case ValueType::String: return quote(value.s);
        case ValueType::Array: return "array";
    }
    return "?";
}

// Formats a metadata value; arrays show their item type, length and first items.
inline std::string format_value(const gguf::Value& value) {
    if (value.type != gguf::ValueType::Array) return format_scalar(value);
    constexpr std::size_t kShownItems = 8;
    std::string text = std::string("[") + gguf::value_type_name(value.array_type) + " x " +
                       std::to_string(value.items.size()) + "]";
    if (value.items.empty()) return text;
    text += " ";
    for (std::size_t i = 0; i < std::min(value.items.size(), kShownItems); ++i) {
        if (i) text += ", ";
        text += format_scalar(value.items[i]);
    }
    if (value.items.size() > kShownItems) text += ", ...";
    return text;
}

inline std::string pad_right(const std::string& text, std::size_t width) {
    return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

}  // namespace detail

// Prints the metadata and tensor table of the GGUF file at `path`.
inline void print_info(const std::string& path, std::ostream& out) {
    const auto file = gguf::File::open(path);
    out << path << ": GGUF version " << file->version() << ", " << file->file_size() << " bytes, alignment "
        << file->alignment() << "\n\n";

    out << "metadata (" << file->metadata().size() << " keys):\n";
    std::size_t key_width = 0;
    for (const auto& [key, value] : file->metadata()) key_width = std::max(key_width, key.size());
    for (const auto& [key, value] : file->metadata()) {
        const std::string type = value.type == gguf::ValueType::Array ? "array" : gguf::value_type_name(value.type);
        out << "  " << detail::pad_right(key, key_width) << "  " << detail::pad_right(type, 6) << "  "
            << detail::format_value(value) << "\n";
    }

    out << "\ntensors (" << file->tensors().size() << "):\n";
    std::size_t name_width = 4;
    for (const auto& tensor : file->tensors()) name_width = std::max(name_width, tensor.name.size());
    out << "  " << detail::pad_right("name", name_width) << "  type  " << detail::pad_right("shape", 20) << "  bytes\n";
    std::uint64_t total_bytes = 0, total_elements = 0;
    std::map<std::string, std::size_t> count_by_type;
    for (const auto& tensor : file->tensors()) {
        out << "  " << detail::pad_right(tensor.name, name_width) << "  "
            << detail::pad_right(std::string(dtype_name(tensor.type)), 4) << "  "
            << detail::pad_right(gguf::shape_string(tensor.shape), 20) << "  " << tensor.nbytes << "\n";
        total_bytes += tensor.nbytes;
        total_elements += static_cast<std::uint64_t>(tensor.numel());
        ++count_by_type[std::string(dtype_name(tensor.type))];
    }
    out << "\ntotal: " << file->tensors().size() << " tensors (";
    bool first = true;
    for (const auto& [type, count] : count_by_type) {
        out << (first ? "" : ", ") << count << " " << type;
        first = false;
    }
    out << "), " << total_elements << " parameters, " << total_bytes << " bytes of tensor data\n";
}

}  // namespace blip::convert
