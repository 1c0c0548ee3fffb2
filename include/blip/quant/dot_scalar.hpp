// Scalar reference kernels. Every other level must give bit-identical integer-path results
// and f32-path results within rounding of these.
#pragma once

#include <cstdint>

#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>

namespace blip::quant::detail {

inline void dot_block32_scalar(const Block32Row& w, const Act32Row* x, int rows, std::int64_t blocks, float* out) {
    for (int r = 0; r < rows; ++r) {
        double acc[kLanes] = {};
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int32_t dot = dot_i8_scalar(w.q + b * kActBlock32, x[r].q + b * kActBlock32, kActBlock32);
            accumulate_block32(w, x[r], b, dot, acc);
        }
        out[r] = reduce_lanes(acc);
    }
}

inline void dot_super256_scalar(const Super256Row& w, const Act256Row* x, int rows, std::int64_t blocks, float* out) {
    for (int r = 0; r < rows; ++r) {
        double acc[kLanes] = {};
        for (std::int64_t s = 0; s < blocks; ++s) {
            acc[s % kLanes] += super256_term(w, x[r], s, super256_scaled_dot_scalar(w, x[r].q, s));
        }
        out[r] = reduce_lanes(acc);
    }
}

// Accumulates in double: the reference for the f32, f16 and bf16 paths.
inline void dot_f32_scalar(const float* w, const float* const* x, int rows, std::int64_t count, float* out) {
    for (int r = 0; r < rows; ++r) {
        double acc = 0.0;
        for (std::int64_t k = 0; k < count; ++k) acc += static_cast<double>(w[k]) * static_cast<double>(x[r][k]);
        out[r] = static_cast<float>(acc);
    }
}

inline KernelTable scalar_kernels() {
    KernelTable table;
    table.level = CpuLevel::Scalar;
    table.quantize_act32 = quantize_act32_scalar;
    table.quantize_act256 = quantize_act256_scalar;
    table.decode_q8_0 = decode_q8_0_scalar;
    table.decode_q4_0 = decode_q4_0_scalar;
    table.decode_q4_1 = decode_q4_1_scalar;
    table.decode_q4_k = decode_q4_k_scalar;
    table.decode_q5_k = decode_q5_k_scalar;
    table.decode_q6_k = decode_q6_k_scalar;
    table.decode_f16 = decode_f16_scalar;
    table.decode_bf16 = decode_bf16_scalar;
    table.dot_block32 = dot_block32_scalar;
    table.dot_super256 = dot_super256_scalar;
    table.dot_f32 = dot_f32_scalar;
    return table;
}

}  // namespace blip::quant::detail
