// Scalar, deterministic quantization and dequantization of rows in the ggml block formats.
// The quantizers follow ggml's reference algorithms (quantize_row_*_ref in ggml-quants.c), so
// the blocks they produce are what ggml would produce and any GGUF reader can load them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/quant/blocks.hpp>
#include <blip/quant/float16.hpp>

namespace blip::quant {

namespace detail {

// Rounds to the nearest integer, ties to even, for |value| <= 4194303 (ggml's nearest_int).
// Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
inline int nearest_int(float value) {
    const float shifted = value + 12582912.f;
    std::int32_t bits;
    std::memcpy(&bits, &shifted, sizeof(bits));
    return (bits & 0x007fffff) - 0x00400000;
}

// ggml's threshold below which a group counts as all zero.
inline constexpr float kGroupMaxEps = 1e-15f;

// Fits x[i] ~ scale * L[i] - the_min with L[i] in [0, nmax], weighted by `weights`. It tries
// nstep + 1 candidate scales around nmax / (max - min) and keeps the one with the least weighted
// squared error (absolute error when use_mad). Same algorithm as ggml's make_qkx2_quants.
inline float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L,
                              float* the_min, std::uint8_t* Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0;
        float sum_l2 = 0;
        float sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = std::max(0, std::min(nmax, l));
            Laux[i] = static_cast<std::uint8_t>(l);
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// Fits x[i] ~ scale * (L[i] - nmax) with L[i] in [0, 2 * nmax - 1], weighting each element by
// x[i]^2, trying 19 scales around -nmax / max. Same algorithm as ggml's make_qx_quants with
// rmse_type 1 and no importance weights.
inline float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }

    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = std::max(-nmax, std::min(nmax - 1, l));
        L[i] = static_cast<std::int8_t>(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;

    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = std::max(-nmax, std::min(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = static_cast<std::int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Unpacks the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of q4_K/q5_K.
inline void unpack_scale_min_k4(int j, const std::uint8_t* packed, std::uint8_t* scale, std::uint8_t* min) {
    if (j < 4) {
        *scale = packed[j] & 63;
        *min = packed[j + 4] & 63;
    } else {
        *scale = static_cast<std::uint8_t>((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4));
        *min = static_cast<std::uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
    }
}

// Packs eight 6-bit scales and mins into 12 bytes, the inverse of unpack_scale_min_k4.
inline void pack_scales_mins_k4(const std::uint8_t* scales, const std::uint8_t* mins, std::uint8_t* packed) {
    std::memset(packed, 0, kKScaleSize);
    for (int j = 0; j < 8; ++j) {
        const std::uint8_t ls = scales[j];
        const std::uint8_t lm = mins[j];
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] |= static_cast<std::uint8_t>((ls >> 4) << 6);
            packed[j] |= static_cast<std::uint8_t>((lm >> 4) << 6);
        }
    }
}

// Shared part of the q4_K and q5_K reference quantizers: per 32-element sub-block an asymmetric
// fit with 2^bits - 1 levels, then 6-bit quantized scales and mins, then requantized levels.
// Writes d, dmin, the packed scales and the 256 levels L.
inline void quantize_super_block_k(const float* x, int nmax, float rmin, float rdelta, int nstep,
                                   std::uint16_t* d_out, std::uint16_t* dmin_out,
                                   std::uint8_t* packed_scales, std::uint8_t* L) {
    float scales[kQK_K / 32];
    float mins[kQK_K / 32];
    float weights[32];
    std::uint8_t Laux[32];
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < kQK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta,
                                     nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }

    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::uint8_t quantized_scales[8];
    std::uint8_t quantized_mins[8];
    for (int j = 0; j < kQK_K / 32; ++j) {
        // ggml stores nearest_int into a uint8_t before clamping, so keep that conversion.
        const auto ls = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
        const auto lm = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
        quantized_scales[j] = std::min<std::uint8_t>(63, ls);
        quantized_mins[j] = std::min<std::uint8_t>(63, lm);
    }
    pack_scales_mins_k4(quantized_scales, quantized_mins, packed_scales);
    *d_out = fp32_to_fp16(max_scale / 63.f);
    *dmin_out = fp32_to_fp16(max_min / 63.f);

    const float d_all = fp16_to_fp32(*d_out);
    const float dmin_all = fp16_to_fp32(*dmin_out);
    for (int j = 0; j < kQK_K / 32; ++j) {
        std::uint8_t sc;
        std::uint8_t m;
        unpack_scale_min_k4(j, packed_scales, &sc, &m);
        const float d = d_all * sc;
        if (!d) continue;
        const float dm = dmin_all * m;
        for (int ii = 0; ii < 32; ++ii) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
        }
    }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Quantizers for one row of `count` elements (a multiple of the block size).

inline void quantize_q8_0(const float* x, BlockQ8_0* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK8_0; ++i, x += kQK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = static_cast<std::int8_t>(std::round(x[j] * id));
    }
}

inline void quantize_q4_0(const float* x, BlockQ4_0* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK4_0; ++i, x += kQK4_0) {
        // The scale maps the element of largest magnitude to -8, the end with one more level.
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < kQK4_0; ++j) {
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < kQK4_0 / 2; ++j) {
            const int low = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[j] * id + 8.5f)));
            const int high = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[j + kQK4_0 / 2] * id + 8.5f)));
            y[i].qs[j] = static_cast<std::uint8_t>(low | (high << 4));
        }
    }
}

inline void quantize_q4_1(const float* x, BlockQ4_1* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK4_1; ++i, x += kQK4_1) {
        float min = x[0];
        float max = x[0];
        for (int j = 1; j < kQK4_1; ++j) {
            min = std::min(min, x[j]);
            max = std::max(max, x[j]);
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        for (int j = 0; j < kQK4_1 / 2; ++j) {
            const int low = std::min(15, static_cast<int>(static_cast<std::int8_t>((x[j] - min) * id + 0.5f)));
            const int high =
                std::min(15, static_cast<int>(static_cast<std::int8_t>((x[j + kQK4_1 / 2] - min) * id + 0.5f)));
            y[i].qs[j] = static_cast<std::uint8_t>(low | (high << 4));
        }
    }
}

inline void quantize_q4_k(const float* x, BlockQ4_K* y, std::int64_t count) {
    std::uint8_t L[kQK_K];
    for (std::int64_t i = 0; i < count / kQK_K; ++i, x += kQK_K) {
        detail::quantize_super_block_k(x, 15, -1.f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        std::uint8_t* q = y[i].qs;
        for (int j = 0; j < kQK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; ++l) q[l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 4));
        }
    }
}

inline void quantize_q5_k(const float* x, BlockQ5_K* y, std::int64_t count) {
    std::uint8_t L[kQK_K];
    for (std::int64_t i = 0; i < count / kQK_K; ++i, x += kQK_K) {
        detail::quantize_super_block_k(x, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        std::uint8_t* qh = y[i].qh;
        std::uint8_t* ql = y[i].qs;
        std::memset(qh, 0, kQK_K / 8);
        std::uint8_t m1 = 1;
        std::uint8_t m2 = 2;
        for (int n = 0; n < kQK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[n + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                int l2 = L[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = static_cast<std::uint8_t>(l1 | (l2 << 4));
            }
            m1 = static_cast<std::uint8_t>(m1 << 2);
            m2 = static_cast<std::uint8_t>(m2 << 2);
        }
    }
}

inline void quantize_q6_k(const float* x, BlockQ6_K* y, std::int64_t count) {
    std::int8_t L[kQK_K];
    float scales[kQK_K / 16];
    for (std::int64_t i = 0; i < count / kQK_K; ++i, x += kQK_K) {
        float max_scale = 0;
        float max_abs_scale = 0;
        for (int ib = 0; ib < kQK_K / 16; ++ib) {
            scales[ib] = detail::make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            if (std::fabs(scales[ib]) > max_abs_scale) {
                max_abs_scale = std::fabs(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < detail::kGroupMaxEps) {
            std::memset(&y[i], 0, sizeof(BlockQ6_K));
            continue;
        }

        const float iscale = -128.f / max_scale;
        y[i].d = fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < kQK_K / 16; ++ib) {
            y[i].scales[ib] = static_cast<std::int8_t>(std::min(127, detail::nearest_int(iscale * scales[ib])));
        }
        const float d_all = fp16_to_fp32(y[i].d);
        for (int j = 0; j < kQK_K / 16; ++j) {
            const float d = d_all * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                const int l = detail::nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = static_cast<std::int8_t>(std::max(-32, std::min(31, l)) + 32);
            }
        }

        std::uint8_t* ql = y[i].ql;
        std::uint8_t* qh = y[i].qh;
        for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const int q1 = L[j + l] & 0xF;
                const int q2 = L[j + l + 32] & 0xF;
                const int q3 = L[j + l + 64] & 0xF;
                const int q4 = L[j + l + 96] & 0xF;
                ql[l] = static_cast<std::uint8_t>(q1 | (q3 << 4));
                ql[l + 32] = static_cast<std::uint8_t>(q2 | (q4 << 4));
                qh[l] = static_cast<std::uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers for one row of `count` elements (a multiple of the block size).

inline void dequantize_q8_0(const BlockQ8_0* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK8_0; ++i, y += kQK8_0) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < kQK8_0; ++j) y[j] = x[i].qs[j] * d;
    }
}

inline void dequantize_q4_0(const BlockQ4_0* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK4_0; ++i, y += kQK4_0) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < kQK4_0 / 2; ++j) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + kQK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

inline void dequantize_q4_1(const BlockQ4_1* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK4_1; ++i, y += kQK4_1) {
        const float d = fp16_to_fp32(x[i].d);
        const float m = fp16_to_fp32(x[i].m);
        for (int j = 0; j < kQK4_1 / 2; ++j) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + kQK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

inline void dequantize_q4_k(const BlockQ4_K* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const float dmin = fp16_to_fp32(x[i].dmin);
        const std::uint8_t* q = x[i].qs;
        for (int j = 0; j < kQK_K / 64; ++j, q += 32) {
            std::uint8_t sc;
            std::uint8_t m;
            detail::unpack_scale_min_k4(2 * j, x[i].scales, &sc, &m);
            const float d1 = d * sc;
            const float m1 = dmin * m;
            detail::unpack_scale_min_k4(2 * j + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc;
            const float m2 = dmin * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

inline void dequantize_q5_k(const BlockQ5_K* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const float dmin = fp16_to_fp32(x[i].dmin);
        const std::uint8_t* ql = x[i].qs;
        const std::uint8_t* qh = x[i].qh;
        for (int j = 0; j < kQK_K / 64; ++j, ql += 32) {
            std::uint8_t sc;
            std::uint8_t m;
            detail::unpack_scale_min_k4(2 * j, x[i].scales, &sc, &m);
            const float d1 = d * sc;
            const float m1 = dmin * m;
            detail::unpack_scale_min_k4(2 * j + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc;
            const float m2 = dmin * m;
            const int low_bit = 1 << (2 * j);
            const int high_bit = 2 << (2 * j);
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & low_bit ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & high_bit ? 16 : 0)) - m2;
        }
    }
}

inline void dequantize_q6_k(const BlockQ6_K* x, float* y, std::int64_t count) {
    for (std::int64_t i = 0; i < count / kQK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const std::uint8_t* ql = x[i].ql;
        const std::uint8_t* qh = x[i].qh;
        const std::int8_t* sc = x[i].scales;
        for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row-level entry points.

// True when `type` is a weight type this module can store and multiply (f32, f16, bf16 and
// the quantized types) and a row of `in_features` elements is a positive whole number of blocks.
inline bool row_length_supported(DType type, std::int64_t in_features) {
    if (type == DType::I32 || in_features <= 0) return false;
    const DTypeTraits* traits = find_dtype(static_cast<std::uint32_t>(type));
    if (traits == nullptr) return false;
    return in_features % static_cast<std::int64_t>(traits->block_size) == 0;
}

// Bytes of one row of `cols` elements of `type`; throws blip::Error when the length is not a
// whole number of blocks.
inline std::size_t row_bytes(DType type, std::int64_t cols) {
    if (!row_length_supported(type, cols)) {
        const DTypeTraits* traits = find_dtype(static_cast<std::uint32_t>(type));
        if (traits == nullptr || type == DType::I32) {
            throw Error("quant: element type id " + std::to_string(static_cast<std::uint32_t>(type)) +
                        " is not a weight type; use f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k or q6_k");
        }
        throw Error("quant: row length " + std::to_string(cols) + " is not a positive multiple of the " +
                    std::string(traits->name) + " block size " + std::to_string(traits->block_size) +
                    "; store this tensor as f32, f16 or bf16 instead");
    }
    return dtype_bytes(type, static_cast<std::size_t>(cols));
}

// Quantizes `rows` rows of `cols` f32 values into `type`, row after row, in ggml's layout.
inline std::vector<std::uint8_t> quantize_rows(DType type, const float* data, std::int64_t rows, std::int64_t cols) {
    if (rows < 0) throw Error("quant: row count " + std::to_string(rows) + " is negative");
    const std::size_t stride = row_bytes(type, cols);
    std::vector<std::uint8_t> out(stride * static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
        const float* x = data + r * cols;
        std::uint8_t* dst = out.data() + static_cast<std::size_t>(r) * stride;
        switch (type) {
            case DType::F32:
                std::memcpy(dst, x, stride);
                break;
            case DType::F16:
            case DType::BF16:
                for (std::int64_t k = 0; k < cols; ++k) {
                    const std::uint16_t h = type == DType::F16 ? fp32_to_fp16(x[k]) : fp32_to_bf16(x[k]);
                    std::memcpy(dst + 2 * k, &h, 2);
                }
                break;
            case DType::Q8_0:
                quantize_q8_0(x, reinterpret_cast<BlockQ8_0*>(dst), cols);
                break;
            case DType::Q4_0:
                quantize_q4_0(x, reinterpret_cast<BlockQ4_0*>(dst), cols);
                break;
            case DType::Q4_1:
                quantize_q4_1(x, reinterpret_cast<BlockQ4_1*>(dst), cols);
                break;
            case DType::Q4_K:
                quantize_q4_k(x, reinterpret_cast<BlockQ4_K*>(dst), cols);
                break;
            case DType::Q5_K:
                quantize_q5_k(x, reinterpret_cast<BlockQ5_K*>(dst), cols);
                break;
            case DType::Q6_K:
                quantize_q6_k(x, reinterpret_cast<BlockQ6_K*>(dst), cols);
                break;
            case DType::I32:
                break;  // rejected by row_bytes
        }
    }
    return out;
}

// Converts one row of `cols` elements stored in `type` to f32. `row` must be aligned to 2 bytes
// (4 for f32), as rows inside GGUF tensor data are.
inline void dequantize_row(DType type, const void* row, float* out, std::int64_t cols) {
    row_bytes(type, cols);  // validates the type and the length
    const auto* bytes = static_cast<const std::uint8_t*>(row);
    switch (type) {
        case DType::F32:
            std::memcpy(out, row, static_cast<std::size_t>(cols) * sizeof(float));
            break;
        case DType::F16:
        case DType::BF16:
            for (std::int64_t k = 0; k < cols; ++k) {
                std::uint16_t h;
                std::memcpy(&h, bytes + 2 * k, 2);
                out[k] = type == DType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
            }
            break;
        case DType::Q8_0:
            dequantize_q8_0(static_cast<const BlockQ8_0*>(row), out, cols);
            break;
        case DType::Q4_0:
            dequantize_q4_0(static_cast<const BlockQ4_0*>(row), out, cols);
            break;
        case DType::Q4_1:
            dequantize_q4_1(static_cast<const BlockQ4_1*>(row), out, cols);
            break;
        case DType::Q4_K:
            dequantize_q4_k(static_cast<const BlockQ4_K*>(row), out, cols);
            break;
        case DType::Q5_K:
            dequantize_q5_k(static_cast<const BlockQ5_K*>(row), out, cols);
            break;
        case DType::Q6_K:
            dequantize_q6_k(static_cast<const BlockQ6_K*>(row), out, cols);
            break;
        case DType::I32:
            break;  // rejected by row_bytes
    }
}

}  // namespace blip::quant
