// The set of kernels one CPU level provides. gemm() fills this table once per level; a level
// that has no faster version of a kernel keeps the scalar one.
#pragma once

#include <cstdint>

#include <blip/quant/blocks.hpp>
#include <blip/quant/cpu.hpp>
#include <blip/quant/operands.hpp>

namespace blip::quant::detail {

// Activation rows processed together by one dot kernel call, so one pass over a decoded weight
// row serves several rows of x.
inline constexpr int kMaxDotRows = 4;
// Maximum number of activation rows of one gemv_q8_0_range call.
inline constexpr int kGemvMaxRows = 4;

struct KernelTable {
    CpuLevel level = CpuLevel::Scalar;

    // Activation quantization of one row of `count` elements (a multiple of the block size).
    void (*quantize_act32)(const float* x, std::int64_t count, std::int8_t* q, float* d, float* sum) = nullptr;
    void (*quantize_act256)(const float* x, std::int64_t count, std::int8_t* q, float* d,
                            std::int16_t* group_sum) = nullptr;

    // Weight decoders for one row of `blocks` blocks (or `count` elements for f16 and bf16).
    void (*decode_q8_0)(const BlockQ8_0* w, std::int64_t blocks, std::int8_t* q, float* scale) = nullptr;
    void (*decode_q4_0)(const BlockQ4_0* w, std::int64_t blocks, std::int8_t* q, float* scale) = nullptr;
    void (*decode_q4_1)(const BlockQ4_1* w, std::int64_t blocks, std::int8_t* q, float* scale, float* min) = nullptr;
    void (*decode_q4_k)(const BlockQ4_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                        std::int16_t* min, float* d, float* dmin) = nullptr;
    void (*decode_q5_k)(const BlockQ5_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                        std::int16_t* min, float* d, float* dmin) = nullptr;
    void (*decode_q6_k)(const BlockQ6_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                        float* d) = nullptr;
    void (*decode_f16)(const std::uint16_t* w, std::int64_t count, float* out) = nullptr;
    void (*decode_bf16)(const std::uint16_t* w, std::int64_t count, float* out) = nullptr;

    // Dot products of one decoded weight row with `rows` (1..kMaxDotRows) activation rows;
    // out[r] receives the product with x[r].
    void (*dot_block32)(const Block32Row& w, const Act32Row* x, int rows, std::int64_t blocks, float* out) = nullptr;
    void (*dot_super256)(const Super256Row& w, const Act256Row* x, int rows, std::int64_t blocks,
                         float* out) = nullptr;
    void (*dot_f32)(const float* w, const float* const* x, int rows, std::int64_t count, float* out) = nullptr;

    // Optional dot products that read f16 or bf16 weights directly, for `outputs` weight rows
    // `w_stride` elements apart and `rows` (1..kMaxDotRows) activation rows. Row i's product
    // with x[r] goes to out[r * out_stride + i]. A level sets them only when they give the same
    // bits as decode_f16 (decode_bf16) followed by dot_f32, so gemm may use either and a row's
    // result never depends on the batch size.
    void (*dot_f16)(const std::uint16_t* w, std::int64_t w_stride, std::int64_t outputs, const float* const* x,
                    int rows, std::int64_t count, float* out, std::int64_t out_stride) = nullptr;
    void (*dot_bf16)(const std::uint16_t* w, std::int64_t w_stride, std::int64_t outputs, const float* const* x,
                     int rows, std::int64_t count, float* out, std::int64_t out_stride) = nullptr;

    // Optional product of q8_0 weight rows [begin, end) (`stride` bytes apart, `blocks` blocks
    // each), read in place, with `rows` (1..kGemvMaxRows) activation rows: the product of weight
    // row o with act[r] goes to y[r * out_features + o]. A level sets it only when it gives the
    // bits of decode_q8_0 followed by dot_block32.
    void (*gemv_q8_0_range)(const std::uint8_t* weights, std::size_t stride, std::int64_t begin, std::int64_t end,
                            std::int64_t blocks, const Act32Row* act, int rows, float* y,
                            std::int64_t out_features) = nullptr;
};

}  // namespace blip::quant::detail
