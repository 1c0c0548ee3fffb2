// f32 kernels of the Avx2 level (AVX2 and FMA), compiled per function with target attributes
// so the rest of the program stays baseline x86-64. Two 256-bit registers hold the 16 lanes of
// one dot product (lanes 0..7 and 8..15), so results equal the Avx512 level's.
#pragma once

#include <algorithm>
#include <cstdint>

#include <immintrin.h>

#include "blip/core/unroll.hpp"
#include "blip/kernels/gemm_f32_kernels.hpp"
#include "blip/kernels/simd_math.hpp"

#define BLIP_F32_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace blip::kernels::detail::avx2 {

// Load mask with the lowest `count` (0..8) of 8 lanes set.
BLIP_F32_AVX2 inline __m256i first_lanes(std::int64_t count) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int lanes = count >= 8 ? 8 : static_cast<int>(count < 0 ? 0 : count);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), index);
}

// reduce_lanes16 of lanes 0..7 in `low` and 8..15 in `high`.
BLIP_F32_AVX2 inline float reduce_lanes(__m256 low, __m256 high) {
    const __m256 s1 = _mm256_add_ps(low, high);
    const __m128 s2 = _mm_add_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps(s1, 1));
    const __m128 s3 = _mm_add_ps(s2, _mm_movehl_ps(s2, s2));
    return _mm_cvtss_f32(_mm_add_ss(s3, _mm_shuffle_ps(s3, s3, 1)));
}

// Loads the first `count` values at p (all 8 when count >= 8), with zeros after them.
BLIP_F32_AVX2 inline __m256 load_first(const float* p, std::int64_t count) {
    return count >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_lanes(count));
}

// Stores the first `count` lanes of v (all 8 when count >= 8). Partial stores use 128-bit and
// smaller moves, because masked stores made the epilogue and softmax take twice as long on an
// AMD EPYC (Zen 3).
BLIP_F32_AVX2 inline void store_first(float* p, __m256 v, std::int64_t count) {
    if (count >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    __m128 part = _mm256_castps256_ps128(v);
    if (count >= 4) {
        _mm_storeu_ps(p, part);
        part = _mm256_extractf128_ps(v, 1);
        p += 4;
        count -= 4;
    }
    if (count >= 2) {
        _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
        part = _mm_movehl_ps(part, part);
        p += 2;
        count -= 2;
    }
    if (count >= 1) _mm_store_ss(p, part);
}

struct Tiles {
    // Computes DotRows as dot_rows_baseline does, with this level's target so that the tiles
    // inline.
    template <int Rows, int Cols>
    BLIP_F32_AVX2 __attribute__((flatten)) static void rows(TileOperand x, TileOperand w, std::int64_t count,
                                                            std::int64_t outputs, float* y, std::int64_t y_stride) {
        std::int64_t o = 0;
        for (; o + Cols <= outputs; o += Cols)
            tile<Rows, Cols>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o, y_stride);
        for (; o < outputs; ++o)
            tile<Rows, 1>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o, y_stride);
    }

    // Elements of a k chunk: the x rows of a 4 x 3 tile (4 x 2 KiB) and its W rows (3 x 2 KiB)
    // stay in the L1 cache between the two passes over the chunk.
    static constexpr std::int64_t kChunk = 512;

    // Adds lanes 8 * half .. 8 * half + 7 of every output of the tile for k in [k0, k1): one
    // pass that reads every other 32 bytes of each operand. k0 is a multiple of 16.
    template <int Rows, int Cols>
    BLIP_F32_AVX2 static void half_pass(TileOperand x, TileOperand w, std::int64_t k0, std::int64_t k1, int half,
                                        __m256 (&acc)[Rows][Cols]) {
        const float* xp = x.data + k0 / 16 * x.block_stride + 8 * half;
        const float* wp = w.data + k0 / 16 * w.block_stride + 8 * half;
        std::int64_t k = k0;
        for (; k + 16 <= k1; k += 16, xp += x.block_stride, wp += w.block_stride) {
            __m256 wv[Cols];
            BLIP_UNROLL
            for (int c = 0; c < Cols; ++c) wv[c] = _mm256_loadu_ps(wp + c * w.row_stride);
            BLIP_UNROLL
            for (int r = 0; r < Rows; ++r) {
                const __m256 xv = _mm256_loadu_ps(xp + r * x.row_stride);
                BLIP_UNROLL
                for (int c = 0; c < Cols; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
        if (k < k1) {
            const __m256i mask = first_lanes(k1 - k - 8 * half);
            __m256 wv[Cols];
            BLIP_UNROLL
            for (int c = 0; c < Cols; ++c) wv[c] = _mm256_maskload_ps(wp + c * w.row_stride, mask);
            BLIP_UNROLL
            for (int r = 0; r < Rows; ++r) {
                const __m256 xv = _mm256_maskload_ps(xp + r * x.row_stride, mask);
                BLIP_UNROLL
                for (int c = 0; c < Cols; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
    }

    // One pass over the k values of one row of x: both halves of each output at once, in the
    // order of the two passes of `tile`. One stream over W reads memory faster than the two
    // passes: a base f32 decoder step took 35 to 40 instead of 45 ms on an AMD EPYC (1 thread).
    template <int Cols>
    BLIP_F32_AVX2 static void single_row_tile(TileOperand x, TileOperand w, std::int64_t count, float* y) {
        __m256 low[Cols];
        __m256 high[Cols];
        BLIP_UNROLL
        for (int c = 0; c < Cols; ++c) low[c] = high[c] = _mm256_setzero_ps();
        const float* xp = x.data;
        const float* wp = w.data;
        std::int64_t k = 0;
        for (; k + 16 <= count; k += 16, xp += x.block_stride, wp += w.block_stride) {
            const __m256 x_low = _mm256_loadu_ps(xp);
            const __m256 x_high = _mm256_loadu_ps(xp + 8);
            BLIP_UNROLL
            for (int c = 0; c < Cols; ++c) {
                low[c] = _mm256_fmadd_ps(x_low, _mm256_loadu_ps(wp + c * w.row_stride), low[c]);
                high[c] = _mm256_fmadd_ps(x_high, _mm256_loadu_ps(wp + c * w.row_stride + 8), high[c]);
            }
        }
        if (k < count) {
            const std::int64_t left = count - k;
            const __m256 x_low = load_first(xp, left);
            const __m256 x_high = load_first(xp + 8, left - 8);
            BLIP_UNROLL
            for (int c = 0; c < Cols; ++c) {
                low[c] = _mm256_fmadd_ps(x_low, load_first(wp + c * w.row_stride, left), low[c]);
                high[c] = _mm256_fmadd_ps(x_high, load_first(wp + c * w.row_stride + 8, left - 8), high[c]);
            }
        }
        BLIP_UNROLL
        for (int c = 0; c < Cols; ++c) y[c] = reduce_lanes(low[c], high[c]);
    }

    // Lanes 0..7 and 8..15 of each output come from separate passes, so that a 4 x 3 tile
    // needs only 12 of the 16 registers for accumulators. One row takes single_row_tile.
    template <int Rows, int Cols>
    BLIP_F32_AVX2 static void tile(TileOperand x, TileOperand w, std::int64_t count, float* y, std::int64_t y_stride) {
        if constexpr (Rows == 1) {
            single_row_tile<Cols>(x, w, count, y);
            return;
        }
        __m256 low[Rows][Cols];
        __m256 high[Rows][Cols];
        BLIP_UNROLL
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) low[r][c] = high[r][c] = _mm256_setzero_ps();
        for (std::int64_t k0 = 0; k0 < count; k0 += kChunk) {
            const std::int64_t k1 = count - k0 > kChunk ? k0 + kChunk : count;
            half_pass<Rows, Cols>(x, w, k0, k1, 0, low);
            half_pass<Rows, Cols>(x, w, k0, k1, 1, high);
        }
        BLIP_UNROLL
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) y[r * y_stride + c] = reduce_lanes(low[r][c], high[r][c]);
    }
};

// Chain-order tiles (see ChainTile): up to 6 rows of x times 16 outputs, two registers per
// row, so that the 12 accumulators, the two W vectors and the broadcast x value fit the 16
// registers.
struct ChainTiles {
    static constexpr int kRows = 6;
    static constexpr int kCols = 16;

    template <int Rows>
    BLIP_F32_AVX2 static void tile(const float* x_panel, const float* w_panel, std::int64_t count, float* y,
                                   std::int64_t y_stride, bool accumulate) {
        __m256 acc[Rows][2];
        BLIP_UNROLL
        for (int r = 0; r < Rows; ++r) {
            acc[r][0] = accumulate ? _mm256_loadu_ps(y + r * y_stride) : _mm256_setzero_ps();
            acc[r][1] = accumulate ? _mm256_loadu_ps(y + r * y_stride + 8) : _mm256_setzero_ps();
        }
        const float* xp = x_panel;
        const float* wp = w_panel;
        for (std::int64_t k = 0; k < count; ++k, xp += kRows, wp += kCols) {
            const __m256 w0 = _mm256_loadu_ps(wp);
            const __m256 w1 = _mm256_loadu_ps(wp + 8);
            BLIP_UNROLL
            for (int r = 0; r < Rows; ++r) {
                const __m256 xv = _mm256_broadcast_ss(xp + r);
                acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
            }
        }
        BLIP_UNROLL
        for (int r = 0; r < Rows; ++r) {
            _mm256_storeu_ps(y + r * y_stride, acc[r][0]);
            _mm256_storeu_ps(y + r * y_stride + 8, acc[r][1]);
        }
    }
};

// Transposes the 8 x 8 block in `v` (row i in v[i]) in place: afterwards v[j] contains column j.
BLIP_F32_AVX2 inline void transpose8(__m256 (&v)[8]) {
    __m256 s[8];
    // s[4g + c] gets column c of rows 4g..4g+3 in its low half and column c + 4 in its high half.
    for (int g = 0; g < 2; ++g) {
        const __m256 t0 = _mm256_unpacklo_ps(v[4 * g], v[4 * g + 1]);
        const __m256 t1 = _mm256_unpackhi_ps(v[4 * g], v[4 * g + 1]);
        const __m256 t2 = _mm256_unpacklo_ps(v[4 * g + 2], v[4 * g + 3]);
        const __m256 t3 = _mm256_unpackhi_ps(v[4 * g + 2], v[4 * g + 3]);
        s[4 * g] = _mm256_shuffle_ps(t0, t2, 0x44);
        s[4 * g + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);
        s[4 * g + 2] = _mm256_shuffle_ps(t1, t3, 0x44);
        s[4 * g + 3] = _mm256_shuffle_ps(t1, t3, 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        v[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        v[c + 4] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

// Computes chain_pack_reference by 8 x 8 transposes of 8 rows and 8 values of k. It copies
// values only, so the result is the reference's bit for bit.
BLIP_F32_AVX2 inline void chain_pack(const float* source, std::int64_t rows, std::int64_t stride,
                                     std::int64_t count, int width, float* out) {
    for (int r0 = 0; r0 < width; r0 += 8) {
        const int lanes = std::min(8, width - r0);
        const int valid = static_cast<int>(std::max<std::int64_t>(0, std::min<std::int64_t>(lanes, rows - r0)));
        std::int64_t k = 0;
        for (; k + 8 <= count; k += 8) {
            __m256 v[8];
            for (int i = 0; i < 8; ++i)
                v[i] = i < valid ? _mm256_loadu_ps(source + (r0 + i) * stride + k) : _mm256_setzero_ps();
            transpose8(v);
            for (int j = 0; j < 8; ++j) store_first(out + (k + j) * width + r0, v[j], lanes);
        }
        for (; k < count; ++k)
            for (int i = 0; i < lanes; ++i) out[k * width + r0 + i] = i < valid ? source[(r0 + i) * stride + k] : 0.0f;
    }
}

// erf_reference<true> on 8 values.
BLIP_F32_AVX2 inline __m256 erf8(__m256 z) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, z);
    const __m256 in_range = _mm256_cmp_ps(a, _mm256_set1_ps(kErfLimit), _CMP_LT_OQ);
    __m256i interval = _mm256_cvttps_epi32(_mm256_mul_ps(a, _mm256_set1_ps(2.0f)));
    interval = _mm256_min_epi32(_mm256_max_epi32(interval, _mm256_setzero_si256()), _mm256_set1_epi32(kErfIntervals - 1));
    const __m256 center =
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(interval), _mm256_set1_ps(0.5f), _mm256_set1_ps(0.25f));
    const __m256 t = _mm256_sub_ps(a, center);
    __m256 p = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kErfCoefficients[kErfDegree]), interval);
    for (int power = kErfDegree - 1; power >= 0; --power) {
        const __m256 coefficient = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kErfCoefficients[power]), interval);
        p = _mm256_fmadd_ps(p, t, coefficient);
    }
    __m256 result = _mm256_blendv_ps(_mm256_set1_ps(1.0f), p, in_range);
    result = _mm256_or_ps(_mm256_andnot_ps(sign, result), _mm256_and_ps(sign, z));
    const __m256 nan = _mm256_cmp_ps(z, z, _CMP_UNORD_Q);
    return _mm256_blendv_ps(result, z, nan);
}

// gelu_reference<true> on 8 values.
BLIP_F32_AVX2 inline __m256 gelu8(__m256 x) {
    const __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), x);
    const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(kInverseSqrt2)));
    return _mm256_mul_ps(half, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// exp_reference<true> on 8 values.
BLIP_F32_AVX2 inline __m256 exp8(__m256 x) {
    const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpMin)), _mm256_set1_ps(kExpMax));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2High), clamped);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Low), r);
    __m256 p = _mm256_set1_ps(kExpCoefficients[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpCoefficients[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i exponent = _mm256_cvtps_epi32(n);
    const __m256i first = _mm256_srai_epi32(_mm256_add_epi32(exponent, _mm256_srli_epi32(exponent, 31)), 1);
    const __m256i second = _mm256_sub_epi32(exponent, first);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 scale1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(first, bias), 23));
    const __m256 scale2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(second, bias), 23));
    const __m256 result = _mm256_mul_ps(_mm256_mul_ps(p, scale1), scale2);
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(result, x, nan);
}

BLIP_F32_AVX2 inline void epilogue(const float* dots, std::int64_t count, const float* bias, bool gelu,
                                   const float* residual, float* y) {
    for (std::int64_t i = 0; i < count; i += 8) {
        const std::int64_t left = count - i;
        __m256 value = load_first(dots + i, left);
        if (bias) value = _mm256_add_ps(value, load_first(bias + i, left));
        if (gelu) value = gelu8(value);
        if (residual) value = _mm256_add_ps(load_first(residual + i, left), value);
        store_first(y + i, value, left);
    }
}

// ----- attention ------------------------------------------------------------------------------

// Reduces the 8 keys' first-level sums s1 (lanes 0..7 + lanes 8..15 of each dot product) at
// once: lane j of the result is reduce_lanes of key j, by the same additions.
BLIP_F32_AVX2 inline __m256 reduce_lanes_8x(const __m256 (&s1)[8]) {
    __m256 u[4];
    for (int i = 0; i < 4; ++i)  // 128-bit half h: s1[k] + s1[k + 4] of key 2i + h
        u[i] = _mm256_add_ps(_mm256_permute2f128_ps(s1[2 * i], s1[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(s1[2 * i], s1[2 * i + 1], 0x31));
    __m256 v[2];
    for (int i = 0; i < 2; ++i)  // half h: s3[0], s3[1] of key 4i + h, then of key 4i + 2 + h
        v[i] = _mm256_add_ps(_mm256_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44),
                             _mm256_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
    // Half h: the results of keys h, 2 + h, 4 + h, 6 + h.
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(v[0], v[1], 0x88), _mm256_shuffle_ps(v[0], v[1], 0xDD));
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// 8 keys or values as stored in f32, or widened exactly from bfloat16: all 8, or the first
// `count` of them (`mask` selects the same lanes), with zeros after them.
BLIP_F32_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
BLIP_F32_AVX2 inline __m256 widen8(__m128i halves) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}
BLIP_F32_AVX2 inline __m256 load8(const std::uint16_t* p) {
    return widen8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
BLIP_F32_AVX2 inline __m256 load_lanes(const float* p, __m256i mask, std::int64_t) { return _mm256_maskload_ps(p, mask); }
BLIP_F32_AVX2 inline __m256 load_lanes(const std::uint16_t* p, __m256i, std::int64_t count) {
    if (count >= 8) return load8(p);
    std::uint16_t part[8] = {};
    for (std::int64_t i = 0; i < count; ++i) part[i] = p[i];
    return load8(part);
}

// s1 of the dot product of `query` with `key` (dim elements): lanes 0..7 plus lanes 8..15.
template <class K>
BLIP_F32_AVX2 inline __m256 score_halves(const float* query, const K* key, std::int64_t dim) {
    __m256 low = _mm256_setzero_ps();
    __m256 high = _mm256_setzero_ps();
    std::int64_t d = 0;
    for (; d + 16 <= dim; d += 16) {
        low = _mm256_fmadd_ps(_mm256_loadu_ps(query + d), load8(key + d), low);
        high = _mm256_fmadd_ps(_mm256_loadu_ps(query + d + 8), load8(key + d + 8), high);
    }
    if (d < dim) {
        const __m256i mask_low = first_lanes(dim - d);
        const __m256i mask_high = first_lanes(dim - d - 8);
        low = _mm256_fmadd_ps(_mm256_maskload_ps(query + d, mask_low), load_lanes(key + d, mask_low, dim - d), low);
        high = _mm256_fmadd_ps(_mm256_maskload_ps(query + d + 8, mask_high), load_lanes(key + d + 8, mask_high, dim - d - 8),
                               high);
    }
    return _mm256_add_ps(low, high);
}

// Keys of type K: float, or bfloat16 widened as it is loaded.
template <class K>
BLIP_F32_AVX2 inline void scores(const float* query, std::int64_t query_stride, int rows, const K* keys,
                                 std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* out,
                                 std::int64_t out_stride) {
    for (int i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < count; j += 8) {
            const int keys_here = count - j >= 8 ? 8 : static_cast<int>(count - j);
            __m256 s1[8];
            for (int t = 0; t < 8; ++t)
                s1[t] = t < keys_here ? score_halves(query + i * query_stride, keys + (j + t) * key_stride, dim)
                                      : _mm256_setzero_ps();
            store_first(out + i * out_stride + j, reduce_lanes_8x(s1), keys_here);
        }
}

// Transposed-key scores of up to 4 query rows (rows past `rows` repeat the last one) with
// `Blocks` (1..2) blocks of 8 keys from key `first`: one multiply-add chain per score.
template <int Blocks>
BLIP_F32_AVX2 inline void transposed_scores_block(const float* const* q, int rows, const float* keys_t,
                                                  std::int64_t keys_t_stride, std::int64_t first, std::int64_t count,
                                                  std::int64_t dim, float* out, std::int64_t out_stride) {
    std::int64_t left[Blocks];
    for (int b = 0; b < Blocks; ++b) left[b] = count - first - 8 * b;
    __m256 acc[4][Blocks];
    for (int i = 0; i < 4; ++i)
        for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm256_setzero_ps();
    if (dim <= 0) {  // a loop that may run zero times keeps acc in memory (see the Avx512 level)
        for (int i = 0; i < rows; ++i)
            for (int b = 0; b < Blocks; ++b) store_first(out + i * out_stride + first + 8 * b, acc[i][b], left[b]);
        return;
    }
    for (std::int64_t d = 0; d < dim; ++d) {
        __m256 k[Blocks];
        for (int b = 0; b < Blocks; ++b) k[b] = load_first(keys_t + d * keys_t_stride + first + 8 * b, left[b]);
        for (int i = 0; i < 4; ++i) {
            const __m256 qv = _mm256_set1_ps(q[i][d]);
            for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm256_fmadd_ps(qv, k[b], acc[i][b]);
        }
    }
    for (int i = 0; i < rows; ++i)
        for (int b = 0; b < Blocks; ++b) store_first(out + i * out_stride + first + 8 * b, acc[i][b], left[b]);
}

BLIP_F32_AVX2 inline void transposed_scores(const float* query, std::int64_t query_stride, int rows,
                                            const float* keys_t, std::int64_t keys_t_stride, std::int64_t count,
                                            std::int64_t dim, float* out, std::int64_t out_stride) {
    const float* q[4];
    for (int i = 0; i < 4; ++i) q[i] = query + (i < rows ? i : rows - 1) * query_stride;
    for (std::int64_t j = 0; j < count; j += 16) {
        if (count - j > 8)
            transposed_scores_block<2>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride);
        else
            transposed_scores_block<1>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride);
    }
}

BLIP_F32_AVX2 inline void softmax(float* scores, std::int64_t count, float scale, bool divide, const float* bias) {
    if (count <= 0) return;
    const __m256 scale_vector = _mm256_set1_ps(scale);
    const __m256 lowest = _mm256_set1_ps(-INFINITY);
    __m256 max_vector = lowest;
    for (std::int64_t j = 0; j < count; j += 8) {
        const std::int64_t left = count - j;
        __m256 value = load_first(scores + j, left);
        if (divide) {
            value = _mm256_div_ps(value, scale_vector);
            if (bias) value = _mm256_add_ps(value, load_first(bias + j, left));
        } else {
            value = bias ? _mm256_fmadd_ps(value, scale_vector, load_first(bias + j, left))
                         : _mm256_mul_ps(value, scale_vector);
        }
        store_first(scores + j, value, left);
        max_vector = _mm256_max_ps(max_vector, left >= 8 ? value
                                                        : _mm256_blendv_ps(lowest, value,
                                                                           _mm256_castsi256_ps(first_lanes(left))));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, max_vector);
    float max_value = lanes[0];
    for (int i = 1; i < 8; ++i) max_value = max_value > lanes[i] ? max_value : lanes[i];

    // Double lanes 0..3, 4..7, 8..11 and 12..15 of reduce_double_lanes16.
    const __m256 shift = _mm256_set1_ps(max_value);
    __m256d sums[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    for (std::int64_t j = 0; j < count; j += 8) {
        const std::int64_t left = count - j;
        __m256 e = exp8(_mm256_sub_ps(load_first(scores + j, left), shift));
        if (left < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(first_lanes(left)));
        store_first(scores + j, e, left);
        const int first = (j % 16 == 0) ? 0 : 2;
        sums[first] = _mm256_add_pd(sums[first], _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        sums[first + 1] = _mm256_add_pd(sums[first + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const __m256d s2 = _mm256_add_pd(_mm256_add_pd(sums[0], sums[2]), _mm256_add_pd(sums[1], sums[3]));
    const __m128d s3 = _mm_add_pd(_mm256_castpd256_pd128(s2), _mm256_extractf128_pd(s2, 1));
    const double sum = _mm_cvtsd_f64(_mm_add_sd(s3, _mm_unpackhi_pd(s3, s3)));
    const __m256 inverse_sum = _mm256_set1_ps(static_cast<float>(1.0 / sum));
    for (std::int64_t j = 0; j < count; j += 8) {
        const std::int64_t left = count - j;
        store_first(scores + j, _mm256_mul_ps(load_first(scores + j, left), inverse_sum), left);
    }
}

template <int Rows, int Blocks, class V>
BLIP_F32_AVX2 inline void weighted_sum_block(const float* p, std::int64_t p_stride, std::int64_t count,
                                             const V* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                             std::int64_t out_stride) {
    __m256i masks[Blocks];
    for (int b = 0; b < Blocks; ++b) masks[b] = first_lanes(dim - 8 * b);
    __m256 acc[Rows][Blocks];
    for (int i = 0; i < Rows; ++i)
        for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm256_setzero_ps();
    // A loop that may run zero times makes GCC 12 -O3 keep acc in memory (see the Avx512
    // level), so count 0 returns here.
    if (count <= 0) {
        for (int i = 0; i < Rows; ++i)
            for (int b = 0; b < Blocks; ++b) store_first(out + i * out_stride + 8 * b, acc[i][b], dim - 8 * b);
        return;
    }
    for (std::int64_t j = 0; j < count; ++j) {
        __m256 values[Blocks];
        for (int b = 0; b < Blocks; ++b) values[b] = load_lanes(v + j * v_stride + 8 * b, masks[b], dim - 8 * b);
        for (int i = 0; i < Rows; ++i) {
            const __m256 weight = _mm256_set1_ps(p[i * p_stride + j]);
            for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm256_fmadd_ps(weight, values[b], acc[i][b]);
        }
    }
    for (int i = 0; i < Rows; ++i)
        for (int b = 0; b < Blocks; ++b) store_first(out + i * out_stride + 8 * b, acc[i][b], dim - 8 * b);
}

template <int Rows, class V>
BLIP_F32_AVX2 inline void weighted_sum_rows(const float* p, std::int64_t p_stride, std::int64_t count, const V* v,
                                            std::int64_t v_stride, std::int64_t dim, float* out,
                                            std::int64_t out_stride) {
    // Up to 32 columns (4 registers per row) at a time.
    for (std::int64_t d = 0; d < dim; d += 32) {
        const std::int64_t left = dim - d;
        const int blocks = left >= 32 ? 4 : static_cast<int>((left + 7) / 8);
        switch (blocks) {
            case 1: weighted_sum_block<Rows, 1>(p, p_stride, count, v + d, v_stride, left, out + d, out_stride); break;
            case 2: weighted_sum_block<Rows, 2>(p, p_stride, count, v + d, v_stride, left, out + d, out_stride); break;
            case 3: weighted_sum_block<Rows, 3>(p, p_stride, count, v + d, v_stride, left, out + d, out_stride); break;
            default: weighted_sum_block<Rows, 4>(p, p_stride, count, v + d, v_stride, left, out + d, out_stride); break;
        }
    }
}

// Values of type V: float, or bfloat16 widened as it is loaded.
template <class V>
BLIP_F32_AVX2 inline void weighted_sum(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                       const V* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                       std::int64_t out_stride) {
    for (int i = 0; i < rows; i += 2) {
        if (rows - i >= 2)
            weighted_sum_rows<2>(p + i * p_stride, p_stride, count, v, v_stride, dim, out + i * out_stride, out_stride);
        else
            weighted_sum_rows<1>(p + i * p_stride, p_stride, count, v, v_stride, dim, out + i * out_stride, out_stride);
    }
}

inline void install(F32KernelTable& table) {
    install_tiles<Tiles, 4, 3>(table);
    install_chain_tiles<ChainTiles>(table);
    table.chain_pack = chain_pack;
    table.fused = true;
    table.epilogue = epilogue;
    table.scores = scores<float>;
    table.scores_bf16 = scores<std::uint16_t>;
    table.transposed_scores = transposed_scores;
    table.softmax = softmax;
    table.weighted_sum = weighted_sum<float>;
    table.weighted_sum_bf16 = weighted_sum<std::uint16_t>;
}

}  // namespace blip::kernels::detail::avx2
