// Block layouts of the quantized weight types, byte-for-byte as ggml stores them in GGUF files
// (ggml-common.h: block_q8_0, block_q4_0, block_q4_1, block_q4_K, block_q5_K, block_q6_K).
// All fields are byte arrays or 16-bit values, so the structs have no padding.
#pragma once

#include <cstddef>
#include <cstdint>

#include <blip/core/dtype.hpp>

namespace blip::quant {

inline constexpr int kQK8_0 = 32;
inline constexpr int kQK4_0 = 32;
inline constexpr int kQK4_1 = 32;
inline constexpr int kQK_K = 256;         // elements per super-block of the k-quants
inline constexpr int kKScaleSize = 12;    // bytes of packed 6-bit scales and mins in q4_K and q5_K

// Value = d * qs[i].
struct BlockQ8_0 {
    std::uint16_t d;  // f16
    std::int8_t qs[kQK8_0];
};

// Value = d * (nibble - 8). Byte j contains element j in its low nibble and element j + 16 in
// its high nibble.
struct BlockQ4_0 {
    std::uint16_t d;  // f16
    std::uint8_t qs[kQK4_0 / 2];
};

// Value = d * nibble + m, nibbles laid out as in BlockQ4_0.
struct BlockQ4_1 {
    std::uint16_t d;  // f16
    std::uint16_t m;  // f16
    std::uint8_t qs[kQK4_1 / 2];
};

// Eight sub-blocks of 32: value = d * scale_j * q - dmin * min_j with 6-bit scale_j and min_j
// packed in `scales` and 4-bit q. Each 32-byte group of qs contains a 64-element chunk: elements
// 0..31 in the low nibbles, 32..63 in the high nibbles.
struct BlockQ4_K {
    std::uint16_t d;     // f16
    std::uint16_t dmin;  // f16
    std::uint8_t scales[kKScaleSize];
    std::uint8_t qs[kQK_K / 2];
};

// As BlockQ4_K with 5-bit q: bit 4 of element 64c + i (i < 32) is bit 2c of qh[i], and of
// element 64c + 32 + i it is bit 2c + 1 of qh[i].
struct BlockQ5_K {
    std::uint16_t d;     // f16
    std::uint16_t dmin;  // f16
    std::uint8_t scales[kKScaleSize];
    std::uint8_t qh[kQK_K / 8];
    std::uint8_t qs[kQK_K / 2];
};

// Sixteen sub-blocks of 16: value = d * scales[j] * (q - 32) with 6-bit q split into 4 low bits
// (ql) and 2 high bits (qh). See dequantize_q6_k for the bit positions.
struct BlockQ6_K {
    std::uint8_t ql[kQK_K / 2];
    std::uint8_t qh[kQK_K / 4];
    std::int8_t scales[kQK_K / 16];
    std::uint16_t d;  // f16
};

namespace detail {
constexpr std::size_t table_block_bytes(DType type) {
    for (const auto& traits : kDTypeTraits) {
        if (traits.type == type) return traits.block_bytes;
    }
    return 0;
}
constexpr std::size_t table_block_size(DType type) {
    for (const auto& traits : kDTypeTraits) {
        if (traits.type == type) return traits.block_size;
    }
    return 0;
}
}  // namespace detail

static_assert(sizeof(BlockQ8_0) == detail::table_block_bytes(DType::Q8_0), "block_q8_0 size");
static_assert(sizeof(BlockQ4_0) == detail::table_block_bytes(DType::Q4_0), "block_q4_0 size");
static_assert(sizeof(BlockQ4_1) == detail::table_block_bytes(DType::Q4_1), "block_q4_1 size");
static_assert(sizeof(BlockQ4_K) == detail::table_block_bytes(DType::Q4_K), "block_q4_K size");
static_assert(sizeof(BlockQ5_K) == detail::table_block_bytes(DType::Q5_K), "block_q5_K size");
static_assert(sizeof(BlockQ6_K) == detail::table_block_bytes(DType::Q6_K), "block_q6_K size");
static_assert(detail::table_block_size(DType::Q8_0) == kQK8_0, "q8_0 block size");
static_assert(detail::table_block_size(DType::Q4_0) == kQK4_0, "q4_0 block size");
static_assert(detail::table_block_size(DType::Q4_1) == kQK4_1, "q4_1 block size");
static_assert(detail::table_block_size(DType::Q4_K) == kQK_K, "q4_K block size");
static_assert(detail::table_block_size(DType::Q5_K) == kQK_K, "q5_K block size");
static_assert(detail::table_block_size(DType::Q6_K) == kQK_K, "q6_K block size");
static_assert(alignof(BlockQ8_0) == 2 && alignof(BlockQ6_K) == 2, "blocks need only 2-byte alignment");

}  // namespace blip::quant
