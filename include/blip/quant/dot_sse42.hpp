// Kernels of the Sse42 level (x86 with SSSE3, SSE4.1 and SSE4.2), compiled per function with
// target attributes so the rest of the program stays baseline x86-64. The f32 path and the
// k-quant decoders keep the lower levels' kernels.
#pragma once

#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>

#define BLIP_QUANT_TARGET_SSE42 __attribute__((target("sse4.2")))

namespace blip::quant::detail::sse42 {

// Quantizes `count` (a multiple of 16) values to q as quantize_activation_block_scalar does.
BLIP_QUANT_TARGET_SSE42 inline void quantize_activation_block(const float* x, int count, std::int8_t* q, float& d) {
    const __m128 sign = _mm_set1_ps(-0.0f);
    const __m128 largest = _mm_set1_ps(FLT_MAX);
    __m128 amax = _mm_setzero_ps();
    __m128 finite = _mm_castsi128_ps(_mm_set1_epi32(-1));
    for (int i = 0; i < count; i += 4) {
        const __m128 a = _mm_andnot_ps(sign, _mm_loadu_ps(x + i));
        amax = _mm_max_ps(amax, a);
        finite = _mm_and_ps(finite, _mm_cmple_ps(a, largest));
    }
    if (_mm_movemask_ps(finite) != 0xF) {
        d = NAN;
        std::memset(q, 0, static_cast<std::size_t>(count));
        return;
    }
    amax = _mm_max_ps(amax, _mm_movehl_ps(amax, amax));
    amax = _mm_max_ss(amax, _mm_shuffle_ps(amax, amax, 1));
    const float id = activation_inverse_scale(_mm_cvtss_f32(amax), d);
    const __m128 scale = _mm_set1_ps(id);
    for (int i = 0; i < count; i += 16) {
        const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i), scale));
        const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i + 4), scale));
        const __m128i c = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i + 8), scale));
        const __m128i e = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + i + 12), scale));
        const __m128i packed = _mm_packs_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, e));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), packed);
    }
}

BLIP_QUANT_TARGET_SSE42 inline void quantize_act32(const float* x, std::int64_t count, std::int8_t* q, float* d,
                                                   float* sum) {
    for (std::int64_t b = 0; b < count / kActBlock32; ++b) {
        std::int8_t* qb = q + b * kActBlock32;
        quantize_activation_block(x + b * kActBlock32, kActBlock32, qb, d[b]);
        int total = 0;
        for (int i = 0; i < kActBlock32; ++i) total += qb[i];
        sum[b] = d[b] * static_cast<float>(total);
    }
}

BLIP_QUANT_TARGET_SSE42 inline void quantize_act256(const float* x, std::int64_t count, std::int8_t* q, float* d,
                                                    std::int16_t* group_sum) {
    for (std::int64_t b = 0; b < count / kActBlock256; ++b) {
        std::int8_t* qb = q + b * kActBlock256;
        quantize_activation_block(x + b * kActBlock256, kActBlock256, qb, d[b]);
        for (int g = 0; g < kActBlock256 / kActSumGroup; ++g) {
            int total = 0;
            for (int i = 0; i < kActSumGroup; ++i) total += qb[g * kActSumGroup + i];
            group_sum[b * (kActBlock256 / kActSumGroup) + g] = static_cast<std::int16_t>(total);
        }
    }
}

// Splits 16 bytes into their low nibbles (first 16 results) and high nibbles (next 16).
BLIP_QUANT_TARGET_SSE42 inline void store_nibbles(const std::uint8_t* packed, std::int8_t* out, int bias) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i offset = _mm_set1_epi8(static_cast<char>(bias));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    const __m128i low = _mm_sub_epi8(_mm_and_si128(v, mask), offset);
    const __m128i high = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), mask), offset);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), low);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), high);
}

BLIP_QUANT_TARGET_SSE42 inline void decode_q4_0(const BlockQ4_0* w, std::int64_t blocks, std::int8_t* q,
                                                float* scale) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = fp16_to_fp32(w[b].d);
        store_nibbles(w[b].qs, q + b * kQK4_0, 8);
    }
}

BLIP_QUANT_TARGET_SSE42 inline void decode_q4_1(const BlockQ4_1* w, std::int64_t blocks, std::int8_t* q,
                                                float* scale, float* min) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = fp16_to_fp32(w[b].d);
        min[b] = fp16_to_fp32(w[b].m);
        store_nibbles(w[b].qs, q + b * kQK4_1, 0);
    }
}

// Computes per-lane dot products of 16 signed weights with 16 activations in [-127, 127]. The sign
// of each weight moves to its activation so the unsigned-by-signed multiply can be used.
BLIP_QUANT_TARGET_SSE42 inline __m128i dot16(__m128i w, __m128i x) {
    const __m128i products = _mm_maddubs_epi16(_mm_abs_epi8(w), _mm_sign_epi8(x, w));
    return _mm_madd_epi16(products, _mm_set1_epi16(1));
}

template <int Rows>
BLIP_QUANT_TARGET_SSE42 inline void dot_block32_rows(const Block32Row& w, const Act32Row* x, std::int64_t blocks,
                                                     float* out) {
    // acc[r][i] contains accumulator lanes 2i and 2i + 1.
    __m128d acc[Rows][4];
    for (int r = 0; r < Rows; ++r) {
        for (int i = 0; i < 4; ++i) acc[r][i] = _mm_setzero_pd();
    }
    std::int64_t b = 0;
    for (; b + 4 <= blocks; b += 4) {
        const int lane_pair = static_cast<int>(b % kLanes) / 2;  // 0 or 2
        __m128i wlo[4];
        __m128i whi[4];
        for (int k = 0; k < 4; ++k) {
            wlo[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q + (b + k) * 32));
            whi[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q + (b + k) * 32 + 16));
        }
        const __m128 wscale = _mm_loadu_ps(w.scale + b);
        for (int r = 0; r < Rows; ++r) {
            __m128i partial[4];
            for (int k = 0; k < 4; ++k) {
                const std::int8_t* xq = x[r].q + (b + k) * 32;
                const __m128i xlo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xq));
                const __m128i xhi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xq + 16));
                partial[k] = _mm_add_epi32(dot16(wlo[k], xlo), dot16(whi[k], xhi));
            }
            const __m128i sums = _mm_hadd_epi32(_mm_hadd_epi32(partial[0], partial[1]),
                                                _mm_hadd_epi32(partial[2], partial[3]));
            const __m128 scale = _mm_mul_ps(wscale, _mm_loadu_ps(x[r].d + b));
            const __m128d scale_lo = _mm_cvtps_pd(scale);
            const __m128d scale_hi = _mm_cvtps_pd(_mm_movehl_ps(scale, scale));
            const __m128d sums_lo = _mm_cvtepi32_pd(sums);
            const __m128d sums_hi = _mm_cvtepi32_pd(_mm_shuffle_epi32(sums, 0xEE));
            acc[r][lane_pair] = _mm_add_pd(acc[r][lane_pair], _mm_mul_pd(scale_lo, sums_lo));
            acc[r][lane_pair + 1] = _mm_add_pd(acc[r][lane_pair + 1], _mm_mul_pd(scale_hi, sums_hi));
            if (w.min != nullptr) {
                const __m128 wmin = _mm_loadu_ps(w.min + b);
                const __m128 xsum = _mm_loadu_ps(x[r].sum + b);
                const __m128d lo = _mm_mul_pd(_mm_cvtps_pd(wmin), _mm_cvtps_pd(xsum));
                const __m128d hi = _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(wmin, wmin)),
                                              _mm_cvtps_pd(_mm_movehl_ps(xsum, xsum)));
                acc[r][lane_pair] = _mm_add_pd(acc[r][lane_pair], lo);
                acc[r][lane_pair + 1] = _mm_add_pd(acc[r][lane_pair + 1], hi);
            }
        }
    }
    for (int r = 0; r < Rows; ++r) {
        double lanes[kLanes];
        for (int i = 0; i < 4; ++i) _mm_storeu_pd(lanes + 2 * i, acc[r][i]);
        for (std::int64_t t = b; t < blocks; ++t) {
            accumulate_block32(w, x[r], t, dot_i8_scalar(w.q + t * 32, x[r].q + t * 32, 32), lanes);
        }
        out[r] = reduce_lanes(lanes);
    }
}

BLIP_QUANT_TARGET_SSE42 inline void dot_block32(const Block32Row& w, const Act32Row* x, int rows,
                                                std::int64_t blocks, float* out) {
    switch (rows) {
        case 1: dot_block32_rows<1>(w, x, blocks, out); break;
        case 2: dot_block32_rows<2>(w, x, blocks, out); break;
        case 3: dot_block32_rows<3>(w, x, blocks, out); break;
        default: dot_block32_rows<4>(w, x, blocks, out); break;
    }
}

template <int Rows>
BLIP_QUANT_TARGET_SSE42 inline void dot_super256_rows(const Super256Row& w, const Act256Row* x, std::int64_t blocks,
                                                      float* out) {
    double lanes[Rows][kLanes] = {};
    for (std::int64_t s = 0; s < blocks; ++s) {
        __m128i acc[Rows];
        for (int r = 0; r < Rows; ++r) acc[r] = _mm_setzero_si128();
        for (int g = 0; g < 16; ++g) {
            const __m128i wv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.q + s * kQK_K + 16 * g));
            const __m128i scale = _mm_set1_epi16(w.scale[16 * s + g]);
            for (int r = 0; r < Rows; ++r) {
                const __m128i xv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r].q + s * kQK_K + 16 * g));
                acc[r] = _mm_add_epi32(acc[r], _mm_madd_epi16(_mm_maddubs_epi16(wv, xv), scale));
            }
        }
        for (int r = 0; r < Rows; ++r) {
            __m128i v = _mm_add_epi32(acc[r], _mm_shuffle_epi32(acc[r], 0x4E));
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
            lanes[r][s % kLanes] += super256_term(w, x[r], s, _mm_cvtsi128_si32(v));
        }
    }
    for (int r = 0; r < Rows; ++r) out[r] = reduce_lanes(lanes[r]);
}

BLIP_QUANT_TARGET_SSE42 inline void dot_super256(const Super256Row& w, const Act256Row* x, int rows,
                                                 std::int64_t blocks, float* out) {
    switch (rows) {
        case 1: dot_super256_rows<1>(w, x, blocks, out); break;
        case 2: dot_super256_rows<2>(w, x, blocks, out); break;
        case 3: dot_super256_rows<3>(w, x, blocks, out); break;
        default: dot_super256_rows<4>(w, x, blocks, out); break;
    }
}

}  // namespace blip::quant::detail::sse42

namespace blip::quant::detail {

inline void install_sse42_kernels(KernelTable& table) {
    table.quantize_act32 = sse42::quantize_act32;
    table.quantize_act256 = sse42::quantize_act256;
    table.decode_q4_0 = sse42::decode_q4_0;
    table.decode_q4_1 = sse42::decode_q4_1;
    table.dot_block32 = sse42::dot_block32;
    table.dot_super256 = sse42::dot_super256;
}

}  // namespace blip::quant::detail
