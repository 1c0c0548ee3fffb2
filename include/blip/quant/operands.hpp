// Operand forms of the matrix-product kernels: weight rows decoded from their block format,
// activation rows quantized to 8 bits, the scalar code that produces both, and the fixed
// floating-point combination of integer block sums that every kernel level shares.
//
// Bit-identical results across levels: each kernel computes exact integer dot products per
// block (or per super-block), and turns them into a float with the same operations in the same
// order. Every product that is added to a double accumulator is exact: a 24-bit float times an
// integer below 2^28, or an f16 value times a float. So fusing it into an FMA cannot change the
// result. The additions go to 8 accumulators, block b into accumulator b % 8, which are reduced
// in a fixed tree at the end.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <blip/core/dtype.hpp>
#include <blip/quant/blocks.hpp>
#include <blip/quant/float16.hpp>
#include <blip/quant/quantize.hpp>

namespace blip::quant::detail {

// Elements per activation block for the 32-element weight blocks (q8_0, q4_0, q4_1).
inline constexpr int kActBlock32 = 32;
// Elements per activation block for the k-quants, and per partial sum within it.
inline constexpr int kActBlock256 = 256;
inline constexpr int kActSumGroup = 16;

// A weight row of q8_0, q4_0 or q4_1 decoded to one signed 8-bit value per element:
// element k = scale[k / 32] * q[k] + min[k / 32].
struct Block32Row {
    const std::int8_t* q;
    const float* scale;
    const float* min;  // nullptr except for q4_1
};

// A weight row of q4_K, q5_K or q6_K decoded per 256-element super-block s:
// element k = d[s] * scale[k / 16] * (q[k] - offset) - dmin[s] * min[k / 32].
struct Super256Row {
    const std::uint8_t* q;      // unsigned levels: 0..15, 0..31 or 0..63
    const std::int16_t* scale;  // one per 16 elements
    const std::int16_t* min;    // one per 32 elements, or nullptr for q6_K
    const float* d;             // one per super-block
    const float* dmin;          // one per super-block, or nullptr
    int offset;                 // 32 for q6_K, else 0
};

// An activation row quantized per 32 elements: element k ~ d[k / 32] * q[k], and
// sum[b] = d[b] * (sum of the 32 values q of block b).
struct Act32Row {
    const std::int8_t* q;
    const float* d;
    const float* sum;
};

// An activation row quantized per 256 elements, with the sum of q over each 16 elements.
struct Act256Row {
    const std::int8_t* q;
    const float* d;
    const std::int16_t* group_sum;
};

// ---------------------------------------------------------------------------------------------
// Activation quantization: d = max|x| / 127 per block and q = round-to-nearest-even(x / d),
// so q is in [-127, 127]. A block with a non-finite value gets d = NaN, which makes every
// product with it NaN, as the f32 product would be.

inline float activation_inverse_scale(float amax, float& d) {
    d = amax / 127.f;
    return d != 0.f ? 1.f / d : 0.f;
}

inline void quantize_activation_block_scalar(const float* x, int count, std::int8_t* q, float& d) {
    float amax = 0.f;
    bool finite = true;
    for (int i = 0; i < count; ++i) {
        const float a = std::fabs(x[i]);
        if (!(a <= FLT_MAX)) finite = false;
        if (a > amax) amax = a;
    }
    if (!finite) {
        d = NAN;
        std::memset(q, 0, static_cast<std::size_t>(count));
        return;
    }
    const float id = activation_inverse_scale(amax, d);
    for (int i = 0; i < count; ++i) q[i] = static_cast<std::int8_t>(nearest_int(x[i] * id));
}

inline void quantize_act32_scalar(const float* x, std::int64_t count, std::int8_t* q, float* d, float* sum) {
    for (std::int64_t b = 0; b < count / kActBlock32; ++b) {
        std::int8_t* qb = q + b * kActBlock32;
        quantize_activation_block_scalar(x + b * kActBlock32, kActBlock32, qb, d[b]);
        int total = 0;
        for (int i = 0; i < kActBlock32; ++i) total += qb[i];
        sum[b] = d[b] * static_cast<float>(total);
    }
}

inline void quantize_act256_scalar(const float* x, std::int64_t count, std::int8_t* q, float* d,
                                   std::int16_t* group_sum) {
    for (std::int64_t b = 0; b < count / kActBlock256; ++b) {
        std::int8_t* qb = q + b * kActBlock256;
        quantize_activation_block_scalar(x + b * kActBlock256, kActBlock256, qb, d[b]);
        for (int g = 0; g < kActBlock256 / kActSumGroup; ++g) {
            int total = 0;
            for (int i = 0; i < kActSumGroup; ++i) total += qb[g * kActSumGroup + i];
            group_sum[b * (kActBlock256 / kActSumGroup) + g] = static_cast<std::int16_t>(total);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar weight decoders. `blocks` is the number of blocks (32 or 256 elements each).

inline void decode_q8_0_scalar(const BlockQ8_0* w, std::int64_t blocks, std::int8_t* q, float* scale) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = fp16_to_fp32(w[b].d);
        std::memcpy(q + b * kQK8_0, w[b].qs, kQK8_0);
    }
}

inline void decode_q4_0_scalar(const BlockQ4_0* w, std::int64_t blocks, std::int8_t* q, float* scale) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = fp16_to_fp32(w[b].d);
        std::int8_t* qb = q + b * kQK4_0;
        for (int j = 0; j < kQK4_0 / 2; ++j) {
            qb[j] = static_cast<std::int8_t>((w[b].qs[j] & 0x0F) - 8);
            qb[j + kQK4_0 / 2] = static_cast<std::int8_t>((w[b].qs[j] >> 4) - 8);
        }
    }
}

inline void decode_q4_1_scalar(const BlockQ4_1* w, std::int64_t blocks, std::int8_t* q, float* scale, float* min) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = fp16_to_fp32(w[b].d);
        min[b] = fp16_to_fp32(w[b].m);
        std::int8_t* qb = q + b * kQK4_1;
        for (int j = 0; j < kQK4_1 / 2; ++j) {
            qb[j] = static_cast<std::int8_t>(w[b].qs[j] & 0x0F);
            qb[j + kQK4_1 / 2] = static_cast<std::int8_t>(w[b].qs[j] >> 4);
        }
    }
}

// Scales and mins of one q4_K or q5_K super-block: each 6-bit sub-block scale repeated for both
// of its 16-element halves, and the 8 mins.
template <class Block>
inline void decode_k4_metadata(const Block& block, std::int16_t* scale, std::int16_t* min, float& d, float& dmin) {
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc;
        std::uint8_t m;
        unpack_scale_min_k4(j, block.scales, &sc, &m);
        scale[2 * j] = sc;
        scale[2 * j + 1] = sc;
        min[j] = m;
    }
    d = fp16_to_fp32(block.d);
    dmin = fp16_to_fp32(block.dmin);
}

inline void decode_q6_k_metadata(const BlockQ6_K& block, std::int16_t* scale, float& d) {
    for (int g = 0; g < 16; ++g) scale[g] = block.scales[g];
    d = fp16_to_fp32(block.d);
}

inline void decode_q4_k_scalar(const BlockQ4_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                               std::int16_t* min, float* d, float* dmin) {
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_k4_metadata(w[s], scale + 16 * s, min + 8 * s, d[s], dmin[s]);
        std::uint8_t* out = q + s * kQK_K;
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                out[64 * c + l] = w[s].qs[32 * c + l] & 0xF;
                out[64 * c + 32 + l] = w[s].qs[32 * c + l] >> 4;
            }
        }
    }
}

inline void decode_q5_k_scalar(const BlockQ5_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                               std::int16_t* min, float* d, float* dmin) {
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_k4_metadata(w[s], scale + 16 * s, min + 8 * s, d[s], dmin[s]);
        std::uint8_t* out = q + s * kQK_K;
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                const int low = w[s].qs[32 * c + l];
                const int high = w[s].qh[l];
                out[64 * c + l] = static_cast<std::uint8_t>((low & 0xF) | (((high >> (2 * c)) & 1) << 4));
                out[64 * c + 32 + l] = static_cast<std::uint8_t>((low >> 4) | (((high >> (2 * c + 1)) & 1) << 4));
            }
        }
    }
}

inline void decode_q6_k_scalar(const BlockQ6_K* w, std::int64_t blocks, std::uint8_t* q, std::int16_t* scale,
                               float* d) {
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_q6_k_metadata(w[s], scale + 16 * s, d[s]);
        std::uint8_t* out = q + s * kQK_K;
        for (int half = 0; half < 2; ++half) {
            const std::uint8_t* ql = w[s].ql + 64 * half;
            const std::uint8_t* qh = w[s].qh + 32 * half;
            std::uint8_t* o = out + 128 * half;
            for (int l = 0; l < 32; ++l) {
                o[l] = static_cast<std::uint8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
                o[l + 32] = static_cast<std::uint8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                o[l + 64] = static_cast<std::uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                o[l + 96] = static_cast<std::uint8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
    }
}

inline void decode_f16_scalar(const std::uint16_t* w, std::int64_t count, float* out) {
    for (std::int64_t k = 0; k < count; ++k) out[k] = fp16_to_fp32(w[k]);
}

inline void decode_bf16_scalar(const std::uint16_t* w, std::int64_t count, float* out) {
    for (std::int64_t k = 0; k < count; ++k) out[k] = bf16_to_fp32(w[k]);
}

// ---------------------------------------------------------------------------------------------
// The shared floating-point combination.

inline constexpr int kLanes = 8;

inline float reduce_lanes(const double* acc) {
    return static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

// accumulate_block32 without a min term, for a block whose weight scale is `w_scale`.
inline void accumulate_scaled_block32(float w_scale, const Act32Row& x, std::int64_t b, std::int32_t dot,
                                      double* acc) {
    const float scale = w_scale * x.d[b];
    acc[b % kLanes] += static_cast<double>(scale) * static_cast<double>(dot);
}

// Adds block b's contribution to its accumulator given the block's exact integer dot product.
inline void accumulate_block32(const Block32Row& w, const Act32Row& x, std::int64_t b, std::int32_t dot, double* acc) {
    accumulate_scaled_block32(w.scale[b], x, b, dot, acc);
    if (w.min != nullptr) acc[b % kLanes] += static_cast<double>(w.min[b]) * static_cast<double>(x.sum[b]);
}

// Contribution of super-block s given scaled_dot = sum over 16-element groups g of
// scale[g] * (dot product of the unsigned levels q with the activations over g).
inline double super256_term(const Super256Row& w, const Act256Row& x, std::int64_t s, std::int32_t scaled_dot) {
    const std::int16_t* group_sum = x.group_sum + 16 * s;
    std::int32_t total = scaled_dot;
    if (w.offset != 0) {
        std::int32_t correction = 0;
        for (int g = 0; g < 16; ++g) correction += w.scale[16 * s + g] * group_sum[g];
        total -= w.offset * correction;
    }
    const double term = static_cast<double>(w.d[s] * x.d[s]) * static_cast<double>(total);
    if (w.min == nullptr) return term;
    std::int32_t min_dot = 0;
    for (int j = 0; j < 8; ++j) min_dot += w.min[8 * s + j] * (group_sum[2 * j] + group_sum[2 * j + 1]);
    return term - static_cast<double>(w.dmin[s] * x.d[s]) * static_cast<double>(min_dot);
}

inline std::int32_t dot_i8_scalar(const std::int8_t* a, const std::int8_t* b, int count) {
    std::int32_t total = 0;
    for (int i = 0; i < count; ++i) total += a[i] * b[i];
    return total;
}

inline std::int32_t super256_scaled_dot_scalar(const Super256Row& w, const std::int8_t* xq, std::int64_t s) {
    const std::uint8_t* wq = w.q + s * kQK_K;
    const std::int8_t* xs = xq + s * kQK_K;
    std::int32_t total = 0;
    for (int g = 0; g < 16; ++g) {
        std::int32_t group = 0;
        for (int i = 0; i < 16; ++i) group += wq[16 * g + i] * xs[16 * g + i];
        total += w.scale[16 * s + g] * group;
    }
    return total;
}

}  // namespace blip::quant::detail
