// Constants of the GGUF file format, version 3 (the format of ggml, llama.cpp and candle).
//
// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
// key/value pairs, the tensor infos (name, u32 dims, u64 extents innermost first, u32 type,
// u64 offset into the data section), padding to the alignment, then the tensor data.
// All numbers are little-endian; strings are a u64 byte length followed by UTF-8 bytes.
#pragma once

#include <cstdint>

namespace blip::gguf {

inline constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr std::uint32_t kVersion = 3;
inline constexpr std::uint32_t kDefaultAlignment = 32;
inline constexpr std::uint32_t kMaxDims = 4;

enum class ValueType : std::uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};

inline const char* value_type_name(ValueType type) {
    switch (type) {
        case ValueType::U8: return "u8";
        case ValueType::I8: return "i8";
        case ValueType::U16: return "u16";
        case ValueType::I16: return "i16";
        case ValueType::U32: return "u32";
        case ValueType::I32: return "i32";
        case ValueType::F32: return "f32";
        case ValueType::Bool: return "bool";
        case ValueType::String: return "string";
        case ValueType::Array: return "array";
        case ValueType::U64: return "u64";
        case ValueType::I64: return "i64";
        case ValueType::F64: return "f64";
    }
    return "unknown";
}

}  // namespace blip::gguf
