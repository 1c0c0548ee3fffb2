// Element types of stored tensors, numbered as ggml numbers them in GGUF files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace blip {

// ggml type ids (ggml.h, `enum ggml_type`). Only the types this library reads or
// writes are listed; the numbers must never change because they are stored in files.
enum class DType : std::uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    I32 = 26,
    BF16 = 30,
};

// Elements per block and bytes per block of one type. A row of a quantized tensor
// is a whole number of blocks, so its length must be a multiple of block_size.
struct DTypeTraits {
    DType type;
    std::string_view name;
    std::size_t block_size;
    std::size_t block_bytes;
};

inline constexpr DTypeTraits kDTypeTraits[] = {
    {DType::F32, "f32", 1, 4},
    {DType::F16, "f16", 1, 2},
    {DType::Q4_0, "q4_0", 32, 18},
    {DType::Q4_1, "q4_1", 32, 20},
    {DType::Q8_0, "q8_0", 32, 34},
    {DType::Q4_K, "q4_k", 256, 144},
    {DType::Q5_K, "q5_k", 256, 176},
    {DType::Q6_K, "q6_k", 256, 210},
    {DType::I32, "i32", 1, 4},
    {DType::BF16, "bf16", 1, 2},
};

// Returns the traits of `type`, or nullptr for a type id this library does not know.
inline const DTypeTraits* find_dtype(std::uint32_t type) {
    for (const auto& traits : kDTypeTraits) {
        if (static_cast<std::uint32_t>(traits.type) == type) return &traits;
    }
    return nullptr;
}

inline const DTypeTraits& dtype_traits(DType type) {
    const DTypeTraits* traits = find_dtype(static_cast<std::uint32_t>(type));
    return *traits;  // every enumerator has an entry in kDTypeTraits
}

inline std::string_view dtype_name(DType type) { return dtype_traits(type).name; }

// Returns the type named `name` ("f32", "q8_0", ...) or false when unknown.
inline bool parse_dtype(std::string_view name, DType& out) {
    for (const auto& traits : kDTypeTraits) {
        if (traits.name == name) {
            out = traits.type;
            return true;
        }
    }
    return false;
}

// Bytes taken by `count` elements of `type`; count must be a multiple of the block size.
inline std::size_t dtype_bytes(DType type, std::size_t count) {
    const auto& traits = dtype_traits(type);
    return count / traits.block_size * traits.block_bytes;
}

}  // namespace blip
