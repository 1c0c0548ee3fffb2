// f32 kernels of the Avx512 level (AVX-512 F, BW and VL), compiled per function with target
// attributes so the rest of the program stays baseline x86-64. The 16 lanes of one dot product
// are one 512-bit register.
#pragma once

#include <algorithm>
#include <cstdint>

#include <immintrin.h>

#include "blip/kernels/gemm_f32_kernels.hpp"
#include "blip/kernels/simd_math.hpp"

#define BLIP_F32_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))

namespace blip::kernels::detail::avx512 {

// All 16 lanes. GCC 12 warns about uninitialized values in several unmasked AVX-512
// intrinsics, so the kernels use their zero-masked forms with this mask.
inline constexpr __mmask16 kAll = 0xFFFF;

// The lowest `count` (0..16) lanes.
BLIP_F32_AVX512 inline __mmask16 first_lanes(std::int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1u);
}

// reduce_lanes16 of the 16 lanes of `v`.
BLIP_F32_AVX512 inline float reduce_lanes(__m512 v) {
    // Masked extracts: GCC 12's _mm512_castps512_ps256 warns about an uninitialized value.
    const __m512d halves = _mm512_castps_pd(v);
    const __m256 low = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, halves, 0));
    const __m256 high = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, halves, 1));
    const __m256 s1 = _mm256_add_ps(low, high);
    const __m128 s2 = _mm_add_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps(s1, 1));
    const __m128 s3 = _mm_add_ps(s2, _mm_movehl_ps(s2, s2));
    return _mm_cvtss_f32(_mm_add_ss(s3, _mm_shuffle_ps(s3, s3, 1)));
}

struct Tiles {
    // Computes DotRows as dot_rows_baseline does, with this level's target so that the tiles
    // inline.
    template <int Rows, int Cols>
    BLIP_F32_AVX512 __attribute__((flatten)) static void rows(TileOperand x, TileOperand w, std::int64_t count,
                                                              std::int64_t outputs, float* y, std::int64_t y_stride) {
        std::int64_t o = 0;
        for (; o + Cols <= outputs; o += Cols)
            tile<Rows, Cols, true>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o, y_stride);
        for (; o < outputs; ++o)
            tile<Rows, 1>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o, y_stride);
    }

    // NOTE: GCC 12 -O3 keeps the 25 accumulators of the 5 x 5 tile in registers in the main
    // loop only in this form: a loop over whole blocks, then a masked tail. The do-while form
    // of the attention kernels spills them to the stack in every iteration here.
    // PrefetchNext: W is row-major in place (DotRows), and each step prefetches into the L2
    // cache the same k of the next tile's W rows. Over the base decoder's f32 weights on 2
    // Xeon cores, a pass with 3 rows of x took 17.5 instead of 21 ms, and with 8 rows 23
    // instead of 29 ms. With 1 row the time stayed the same.
    template <int Rows, int Cols, bool PrefetchNext = false>
    BLIP_F32_AVX512 static void tile(TileOperand x, TileOperand w, std::int64_t count, float* y, std::int64_t y_stride) {
        __m512 acc[Rows][Cols];
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) acc[r][c] = _mm512_setzero_ps();
        const float* xp = x.data;
        const float* wp = w.data;
        std::int64_t k = 0;
        for (; k + 16 <= count; k += 16, xp += x.block_stride, wp += w.block_stride) {
            __m512 wv[Cols];
            if (PrefetchNext)
                for (int c = 0; c < Cols; ++c)
                    _mm_prefetch(reinterpret_cast<const char*>(wp + (Cols + c) * w.row_stride), _MM_HINT_T1);
            for (int c = 0; c < Cols; ++c) wv[c] = _mm512_loadu_ps(wp + c * w.row_stride);
            for (int r = 0; r < Rows; ++r) {
                const __m512 xv = _mm512_loadu_ps(xp + r * x.row_stride);
                for (int c = 0; c < Cols; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
        if (k < count) {
            const __mmask16 mask = first_lanes(count - k);
            __m512 wv[Cols];
            for (int c = 0; c < Cols; ++c) wv[c] = _mm512_maskz_loadu_ps(mask, wp + c * w.row_stride);
            for (int r = 0; r < Rows; ++r) {
                const __m512 xv = _mm512_maskz_loadu_ps(mask, xp + r * x.row_stride);
                for (int c = 0; c < Cols; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) y[r * y_stride + c] = reduce_lanes(acc[r][c]);
    }
};

// Chain-order tiles (see ChainTile): up to 12 rows of x times 32 outputs, two registers per
// row, so that the 24 accumulators, the two W vectors and the broadcast x value fit the 32
// registers. Each k costs 2 vector loads and 12 broadcasts for 24 multiply-adds, and the
// 32 KiB W panel of a 256-deep k block stays in the L1 cache while the x panels pass over it.
struct ChainTiles {
    static constexpr int kRows = 12;
    static constexpr int kCols = 32;

    template <int Rows>
    BLIP_F32_AVX512 static void tile(const float* x_panel, const float* w_panel, std::int64_t count, float* y,
                                     std::int64_t y_stride, bool accumulate) {
        __m512 acc[Rows][2];
        for (int r = 0; r < Rows; ++r) {
            acc[r][0] = accumulate ? _mm512_loadu_ps(y + r * y_stride) : _mm512_setzero_ps();
            acc[r][1] = accumulate ? _mm512_loadu_ps(y + r * y_stride + 16) : _mm512_setzero_ps();
        }
        const float* xp = x_panel;
        const float* wp = w_panel;
        for (std::int64_t k = 0; k < count; ++k, xp += kRows, wp += kCols) {
            const __m512 w0 = _mm512_loadu_ps(wp);
            const __m512 w1 = _mm512_loadu_ps(wp + 16);
            for (int r = 0; r < Rows; ++r) {
                const __m512 xv = _mm512_set1_ps(xp[r]);
                acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
            }
        }
        for (int r = 0; r < Rows; ++r) {
            _mm512_storeu_ps(y + r * y_stride, acc[r][0]);
            _mm512_storeu_ps(y + r * y_stride + 16, acc[r][1]);
        }
    }
};

// Transposes the 16 x 16 block in `v` (row i in v[i]) in place: afterwards v[j] holds column j.
BLIP_F32_AVX512 inline void transpose16(__m512 (&v)[16]) {
    // Pairs of rows interleaved, then groups of 4: s[g][c] holds, in its 128-bit lane L, column
    // 4L + c of rows 4g..4g+3.
    __m512 s[4][4];
    for (int g = 0; g < 4; ++g) {
        const __m512 t0 = _mm512_maskz_unpacklo_ps(kAll, v[4 * g], v[4 * g + 1]);
        const __m512 t1 = _mm512_maskz_unpackhi_ps(kAll, v[4 * g], v[4 * g + 1]);
        const __m512 t2 = _mm512_maskz_unpacklo_ps(kAll, v[4 * g + 2], v[4 * g + 3]);
        const __m512 t3 = _mm512_maskz_unpackhi_ps(kAll, v[4 * g + 2], v[4 * g + 3]);
        s[g][0] = _mm512_maskz_shuffle_ps(kAll, t0, t2, 0x44);
        s[g][1] = _mm512_maskz_shuffle_ps(kAll, t0, t2, 0xEE);
        s[g][2] = _mm512_maskz_shuffle_ps(kAll, t1, t3, 0x44);
        s[g][3] = _mm512_maskz_shuffle_ps(kAll, t1, t3, 0xEE);
    }
    // Column 4L + c gathers lane L of s[0][c] .. s[3][c].
    for (int c = 0; c < 4; ++c) {
        const __m512 low01 = _mm512_maskz_shuffle_f32x4(kAll, s[0][c], s[1][c], 0x44);
        const __m512 high01 = _mm512_maskz_shuffle_f32x4(kAll, s[0][c], s[1][c], 0xEE);
        const __m512 low23 = _mm512_maskz_shuffle_f32x4(kAll, s[2][c], s[3][c], 0x44);
        const __m512 high23 = _mm512_maskz_shuffle_f32x4(kAll, s[2][c], s[3][c], 0xEE);
        v[c] = _mm512_maskz_shuffle_f32x4(kAll, low01, low23, 0x88);
        v[4 + c] = _mm512_maskz_shuffle_f32x4(kAll, low01, low23, 0xDD);
        v[8 + c] = _mm512_maskz_shuffle_f32x4(kAll, high01, high23, 0x88);
        v[12 + c] = _mm512_maskz_shuffle_f32x4(kAll, high01, high23, 0xDD);
    }
}

// chain_pack_reference by 16 x 16 blocks transposed in registers.
BLIP_F32_AVX512 inline void chain_pack(const float* source, std::int64_t rows, std::int64_t stride,
                                       std::int64_t count, int width, float* out) {
    for (std::int64_t k0 = 0; k0 < count; k0 += 16) {
        const std::int64_t depth = std::min<std::int64_t>(16, count - k0);
        const __mmask16 load = first_lanes(depth);
        for (int r0 = 0; r0 < width; r0 += 16) {
            __m512 v[16];
            for (int i = 0; i < 16; ++i)
                v[i] = r0 + i < rows ? _mm512_maskz_loadu_ps(load, source + (r0 + i) * stride + k0) : _mm512_setzero_ps();
            transpose16(v);
            const __mmask16 store = first_lanes(width - r0);
            for (std::int64_t j = 0; j < depth; ++j) _mm512_mask_storeu_ps(out + (k0 + j) * width + r0, store, v[j]);
        }
    }
}

// erf_reference<true> on 16 values.
BLIP_F32_AVX512 inline __m512 erf16(__m512 z) {
    // Bitwise operations on floats need AVX-512 DQ, so they go through the integer forms.
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i bits = _mm512_castps_si512(z);
    const __m512 a = _mm512_castsi512_ps(_mm512_maskz_andnot_epi32(kAll, sign, bits));
    const __mmask16 in_range = _mm512_cmp_ps_mask(a, _mm512_set1_ps(kErfLimit), _CMP_LT_OQ);
    __m512i interval = _mm512_maskz_cvttps_epi32(kAll, _mm512_mul_ps(a, _mm512_set1_ps(2.0f)));
    interval = _mm512_maskz_min_epi32(kAll, _mm512_maskz_max_epi32(kAll, interval, _mm512_setzero_si512()), _mm512_set1_epi32(kErfIntervals - 1));
    const __m512 center =
        _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, interval), _mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    const __m512 t = _mm512_sub_ps(a, center);
    __m512 p = _mm512_maskz_permutexvar_ps(kAll, interval, _mm512_maskz_loadu_ps(0xFF, kErfCoefficients[kErfDegree]));
    for (int power = kErfDegree - 1; power >= 0; --power) {
        const __m512 coefficient = _mm512_maskz_permutexvar_ps(kAll, interval, _mm512_maskz_loadu_ps(0xFF, kErfCoefficients[power]));
        p = _mm512_fmadd_ps(p, t, coefficient);
    }
    __m512 result = _mm512_mask_blend_ps(in_range, _mm512_set1_ps(1.0f), p);
    result = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_maskz_andnot_epi32(kAll, sign, _mm512_castps_si512(result)), _mm512_and_si512(sign, bits)));
    const __mmask16 nan = _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, result, z);
}

// gelu_reference<true> on 16 values.
BLIP_F32_AVX512 inline __m512 gelu16(__m512 x) {
    const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), x);
    const __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(kInverseSqrt2)));
    return _mm512_mul_ps(half, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// exp_reference<true> on 16 values.
BLIP_F32_AVX512 inline __m512 exp16(__m512 x) {
    const __m512 clamped =
        _mm512_maskz_min_ps(kAll, _mm512_maskz_max_ps(kAll, x, _mm512_set1_ps(kExpMin)), _mm512_set1_ps(kExpMax));
    const __m512 n = _mm512_maskz_roundscale_ps(kAll, _mm512_mul_ps(clamped, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2High), clamped);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Low), r);
    __m512 p = _mm512_set1_ps(kExpCoefficients[0]);
    for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpCoefficients[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    const __m512i exponent = _mm512_maskz_cvtps_epi32(kAll, n);
    // exponent / 2 rounded toward zero, as C++ integer division.
    const __m512i first = _mm512_maskz_srai_epi32(kAll, _mm512_add_epi32(exponent, _mm512_maskz_srli_epi32(kAll, exponent, 31)), 1);
    const __m512i second = _mm512_sub_epi32(exponent, first);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 scale1 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, _mm512_add_epi32(first, bias), 23));
    const __m512 scale2 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, _mm512_add_epi32(second, bias), 23));
    const __m512 result = _mm512_mul_ps(_mm512_mul_ps(p, scale1), scale2);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, result, x);
}

BLIP_F32_AVX512 inline void epilogue(const float* dots, std::int64_t count, const float* bias, bool gelu,
                                     const float* residual, float* y) {
    for (std::int64_t i = 0; i < count; i += 16) {
        const __mmask16 mask = first_lanes(count - i);
        __m512 value = _mm512_maskz_loadu_ps(mask, dots + i);
        if (bias) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, bias + i));
        if (gelu) value = gelu16(value);
        if (residual) value = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, residual + i), value);
        _mm512_mask_storeu_ps(y + i, mask, value);
    }
}

// ----- attention ------------------------------------------------------------------------------

// Reduces 16 accumulators at once: lane j of the result is reduce_lanes(acc[j]). The
// transposing tree adds the same pairs as reduce_lanes16, 8 + 4 + 2 + 1 vector additions
// instead of 16 reductions.
// 16 accumulators. Kernels keep them in this struct and pass it by value: with an array
// passed by reference, or with a loop that may run zero times, GCC 12 -O3 stores every
// accumulator to the stack in each loop iteration.
struct Accumulators16 {
    __m512 v[16];
};

BLIP_F32_AVX512 __attribute__((always_inline)) inline __m512 reduce_lanes_16x(Accumulators16 acc) {
    __m512 t[8];
    for (int i = 0; i < 8; ++i)  // lanes 0..7: acc[2i] lane k + lane k + 8; lanes 8..15: acc[2i + 1]
        t[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, acc.v[2 * i], acc.v[2 * i + 1], 0x44),
                             _mm512_maskz_shuffle_f32x4(kAll, acc.v[2 * i], acc.v[2 * i + 1], 0xEE));
    __m512 u[4];
    for (int i = 0; i < 4; ++i)  // 128-bit quarter q: the 4 sums s1[k] + s1[k + 4] of acc[4i + q]
        u[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, t[2 * i], t[2 * i + 1], 0x88),
                             _mm512_maskz_shuffle_f32x4(kAll, t[2 * i], t[2 * i + 1], 0xDD));
    __m512 v[2];
    for (int i = 0; i < 2; ++i)  // quarter q: s3[0], s3[1] of acc[8i + q], then of acc[8i + 4 + q]
        v[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll, u[2 * i], u[2 * i + 1], 0x44),
                             _mm512_maskz_shuffle_ps(kAll, u[2 * i], u[2 * i + 1], 0xEE));
    // Quarter q: the results of acc[q], acc[4 + q], acc[8 + q], acc[12 + q].
    const __m512 r = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll, v[0], v[1], 0x88), _mm512_maskz_shuffle_ps(kAll, v[0], v[1], 0xDD));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_maskz_permutexvar_ps(kAll, order, r);
}

// 16 keys or values (the lanes of `mask`) as stored in f32, or widened exactly from bfloat16.
// The zero-masked forms avoid GCC 12's unmasked ones, whose undefined source register draws a
// false "may be used uninitialized" warning at every call.
BLIP_F32_AVX512 inline __m512 load_lanes(__mmask16 mask, const float* p) { return _mm512_maskz_loadu_ps(mask, p); }
BLIP_F32_AVX512 inline __m512 load_lanes(__mmask16 mask, const std::uint16_t* p) {
    const __m512i halves = _mm512_maskz_cvtepu16_epi32(kAll, _mm256_maskz_loadu_epi16(mask, p));
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, halves, 16));
}

// Scores of one query row with 16 keys: one accumulator per key, reduced together. Lane t of
// the result is key t.
template <class K>
BLIP_F32_AVX512 inline __m512 scores_1x16(const float* query, const K* keys, std::int64_t key_stride,
                                          std::int64_t dim) {
    Accumulators16 acc;
    for (int t = 0; t < 16; ++t) acc.v[t] = _mm512_setzero_ps();
    std::int64_t d = 0;
    do {  // runs at least once (see Accumulators16); with dim 0 its masked loads read nothing
        const __mmask16 mask = first_lanes(dim - d);
        const __m512 q = _mm512_maskz_loadu_ps(mask, query + d);
        for (int t = 0; t < 16; ++t)
            acc.v[t] = _mm512_fmadd_ps(q, load_lanes(mask, keys + t * key_stride + d), acc.v[t]);
        d += 16;
    } while (d < dim);
    return reduce_lanes_16x(acc);
}

// Score of one query row with one key, reduced alone (the same additions as above).
template <class K>
BLIP_F32_AVX512 inline float score_1x1(const float* query, const K* key, std::int64_t dim) {
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t d = 0; d < dim; d += 16) {
        const __mmask16 mask = first_lanes(dim - d);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, query + d), load_lanes(mask, key + d), acc);
    }
    return reduce_lanes(acc);
}

// Scores of one query row: 16 keys per reduction, then the last keys one by one.
template <class K>
BLIP_F32_AVX512 inline void scores_row(const float* query, const K* keys, std::int64_t key_stride,
                                       std::int64_t count, std::int64_t dim, float* out) {
    std::int64_t j = 0;
    for (; j + 16 <= count; j += 16) _mm512_storeu_ps(out + j, scores_1x16(query, keys + j * key_stride, key_stride, dim));
    for (; j < count; ++j) out[j] = score_1x1(query, keys + j * key_stride, dim);
}

// Scores of 4 query rows with `Keys` (1..4) keys at `keys`: 16 accumulators, reduced together.
// Lane 4 * i + t of the result is row i, key t.
template <int Keys, class K>
BLIP_F32_AVX512 inline __m512 scores_4x4(const float* const* q, const K* keys, std::int64_t key_stride,
                                         std::int64_t dim) {
    Accumulators16 acc;
    for (int t = 0; t < 16; ++t) acc.v[t] = _mm512_setzero_ps();
    std::int64_t d = 0;
    do {  // runs at least once (see Accumulators16); with dim 0 its masked loads read nothing
        const __mmask16 mask = first_lanes(dim - d);
        __m512 k[Keys];
        for (int t = 0; t < Keys; ++t) k[t] = load_lanes(mask, keys + t * key_stride + d);
        for (int i = 0; i < 4; ++i) {
            const __m512 qv = _mm512_maskz_loadu_ps(mask, q[i] + d);
            for (int t = 0; t < Keys; ++t) acc.v[4 * i + t] = _mm512_fmadd_ps(qv, k[t], acc.v[4 * i + t]);
        }
        d += 16;
    } while (d < dim);
    return reduce_lanes_16x(acc);
}

// Scores of up to 4 query rows (rows past `rows` repeat the last one), 4 keys per reduction,
// so that each key is loaded once for the 4 rows.
template <class K>
BLIP_F32_AVX512 inline void scores_4rows(const float* query, std::int64_t query_stride, int rows, const K* keys,
                                         std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* out,
                                         std::int64_t out_stride) {
    const float* q[4];
    for (int i = 0; i < 4; ++i) q[i] = query + (i < rows ? i : rows - 1) * query_stride;
    std::int64_t j = 0;
    for (; j + 4 <= count; j += 4) {
        const __m512 r = scores_4x4<4>(q, keys + j * key_stride, key_stride, dim);
        // Row i is the 128-bit quarter i.
        _mm_storeu_ps(out + j, _mm512_maskz_extractf32x4_ps(0xF, r, 0));
        if (rows > 1) _mm_storeu_ps(out + out_stride + j, _mm512_maskz_extractf32x4_ps(0xF, r, 1));
        if (rows > 2) _mm_storeu_ps(out + 2 * out_stride + j, _mm512_maskz_extractf32x4_ps(0xF, r, 2));
        if (rows > 3) _mm_storeu_ps(out + 3 * out_stride + j, _mm512_maskz_extractf32x4_ps(0xF, r, 3));
    }
    if (j < count) {
        const int left = static_cast<int>(count - j);
        __m512 r;
        switch (left) {
            case 1: r = scores_4x4<1>(q, keys + j * key_stride, key_stride, dim); break;
            case 2: r = scores_4x4<2>(q, keys + j * key_stride, key_stride, dim); break;
            default: r = scores_4x4<3>(q, keys + j * key_stride, key_stride, dim); break;
        }
        float result[16];
        _mm512_storeu_ps(result, r);
        for (int i = 0; i < rows; ++i)
            for (int t = 0; t < left; ++t) out[i * out_stride + j + t] = result[4 * i + t];
    }
}

// Keys of type K: float, or bfloat16 widened as it is loaded.
template <class K>
BLIP_F32_AVX512 inline void scores(const float* query, std::int64_t query_stride, int rows, const K* keys,
                                   std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* out,
                                   std::int64_t out_stride) {
    if (rows == 1)
        scores_row(query, keys, key_stride, count, dim, out);
    else
        scores_4rows(query, query_stride, rows, keys, key_stride, count, dim, out, out_stride);
}

// Transposed-key scores of up to 4 query rows (rows past `rows` repeat the last one) with
// `Blocks` (1..4) blocks of 16 keys from key `first`: one multiply-add chain per score.
template <int Blocks>
BLIP_F32_AVX512 inline void transposed_scores_block(const float* const* q, int rows, const float* keys_t,
                                                    std::int64_t keys_t_stride, std::int64_t first,
                                                    std::int64_t count, std::int64_t dim, float* out,
                                                    std::int64_t out_stride) {
    __mmask16 masks[Blocks];
    for (int b = 0; b < Blocks; ++b) masks[b] = first_lanes(count - first - 16 * b);
    __m512 acc[4][Blocks];
    for (int i = 0; i < 4; ++i)
        for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm512_setzero_ps();
    if (dim <= 0) {  // a loop that may run zero times keeps acc in memory (see Accumulators16)
        for (int i = 0; i < rows; ++i)
            for (int b = 0; b < Blocks; ++b) _mm512_mask_storeu_ps(out + i * out_stride + first + 16 * b, masks[b], acc[i][b]);
        return;
    }
    for (std::int64_t d = 0; d < dim; ++d) {
        __m512 k[Blocks];
        for (int b = 0; b < Blocks; ++b) k[b] = _mm512_maskz_loadu_ps(masks[b], keys_t + d * keys_t_stride + first + 16 * b);
        for (int i = 0; i < 4; ++i) {
            const __m512 qv = _mm512_set1_ps(q[i][d]);
            for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm512_fmadd_ps(qv, k[b], acc[i][b]);
        }
    }
    for (int i = 0; i < rows; ++i)
        for (int b = 0; b < Blocks; ++b) _mm512_mask_storeu_ps(out + i * out_stride + first + 16 * b, masks[b], acc[i][b]);
}

BLIP_F32_AVX512 inline void transposed_scores(const float* query, std::int64_t query_stride, int rows,
                                              const float* keys_t, std::int64_t keys_t_stride, std::int64_t count,
                                              std::int64_t dim, float* out, std::int64_t out_stride) {
    const float* q[4];
    for (int i = 0; i < 4; ++i) q[i] = query + (i < rows ? i : rows - 1) * query_stride;
    // 64 keys (4 registers per row) at a time.
    for (std::int64_t j = 0; j < count; j += 64) {
        const std::int64_t left = count - j;
        const int blocks = left >= 64 ? 4 : static_cast<int>((left + 15) / 16);
        switch (blocks) {
            case 1: transposed_scores_block<1>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride); break;
            case 2: transposed_scores_block<2>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride); break;
            case 3: transposed_scores_block<3>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride); break;
            default: transposed_scores_block<4>(q, rows, keys_t, keys_t_stride, j, count, dim, out, out_stride); break;
        }
    }
}

// The low or high 8 floats of `v`, widened to double.
BLIP_F32_AVX512 inline __m512d widen_half(__m512 v, int half) {
    const __m512d halves = _mm512_castps_pd(v);
    const __m256 part = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, halves, half));
    return _mm512_maskz_cvtps_pd(0xFF, part);
}

BLIP_F32_AVX512 inline void softmax(float* scores, std::int64_t count, float scale, bool divide, const float* bias) {
    if (count <= 0) return;
    const __m512 scale_vector = _mm512_set1_ps(scale);
    __m512 max_vector = _mm512_set1_ps(-INFINITY);
    for (std::int64_t j = 0; j < count; j += 16) {
        const __mmask16 mask = first_lanes(count - j);
        __m512 value = _mm512_maskz_loadu_ps(mask, scores + j);
        if (divide) {
            value = _mm512_div_ps(value, scale_vector);
            if (bias) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, bias + j));
        } else {
            value = bias ? _mm512_fmadd_ps(value, scale_vector, _mm512_maskz_loadu_ps(mask, bias + j))
                         : _mm512_mul_ps(value, scale_vector);
        }
        _mm512_mask_storeu_ps(scores + j, mask, value);
        max_vector = _mm512_mask_max_ps(max_vector, mask, max_vector, value);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, max_vector);
    float max_value = lanes[0];
    for (int i = 1; i < 16; ++i) max_value = max_value > lanes[i] ? max_value : lanes[i];

    const __m512 shift = _mm512_set1_ps(max_value);
    __m512d sum_low = _mm512_setzero_pd();
    __m512d sum_high = _mm512_setzero_pd();
    for (std::int64_t j = 0; j < count; j += 16) {
        const __mmask16 mask = first_lanes(count - j);
        const __m512 e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + j), shift)));
        _mm512_mask_storeu_ps(scores + j, mask, e);
        sum_low = _mm512_add_pd(sum_low, widen_half(e, 0));
        sum_high = _mm512_add_pd(sum_high, widen_half(e, 1));
    }
    // reduce_double_lanes16: lane k + lane k + 8, then k + k + 4, then (0 + 2) + (1 + 3).
    const __m512d s1 = _mm512_add_pd(sum_low, sum_high);
    const __m256d s2 = _mm256_add_pd(_mm512_maskz_extractf64x4_pd(0xFF, s1, 0), _mm512_maskz_extractf64x4_pd(0xFF, s1, 1));
    const __m128d s3 = _mm_add_pd(_mm256_castpd256_pd128(s2), _mm256_extractf128_pd(s2, 1));
    const double sum = _mm_cvtsd_f64(_mm_add_sd(s3, _mm_unpackhi_pd(s3, s3)));
    const __m512 inverse_sum = _mm512_set1_ps(static_cast<float>(1.0 / sum));
    for (std::int64_t j = 0; j < count; j += 16) {
        const __mmask16 mask = first_lanes(count - j);
        _mm512_mask_storeu_ps(scores + j, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, scores + j), inverse_sum));
    }
}

template <int Rows, int Blocks, class V>
BLIP_F32_AVX512 inline void weighted_sum_block(const float* p, std::int64_t p_stride, std::int64_t count,
                                               const V* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                               std::int64_t out_stride) {
    __mmask16 masks[Blocks];
    for (int b = 0; b < Blocks; ++b) masks[b] = first_lanes(dim - 16 * b);
    __m512 acc[Rows][Blocks];
    for (int i = 0; i < Rows; ++i)
        for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm512_setzero_ps();
    // A loop that may run zero times makes GCC 12 -O3 store every accumulator to the stack in
    // each iteration, so count 0 returns here.
    if (count <= 0) {
        for (int i = 0; i < Rows; ++i)
            for (int b = 0; b < Blocks; ++b) _mm512_mask_storeu_ps(out + i * out_stride + 16 * b, masks[b], acc[i][b]);
        return;
    }
    for (std::int64_t j = 0; j < count; ++j) {
        __m512 values[Blocks];
        for (int b = 0; b < Blocks; ++b) values[b] = load_lanes(masks[b], v + j * v_stride + 16 * b);
        for (int i = 0; i < Rows; ++i) {
            const __m512 weight = _mm512_set1_ps(p[i * p_stride + j]);
            for (int b = 0; b < Blocks; ++b) acc[i][b] = _mm512_fmadd_ps(weight, values[b], acc[i][b]);
        }
    }
    for (int i = 0; i < Rows; ++i)
        for (int b = 0; b < Blocks; ++b) _mm512_mask_storeu_ps(out + i * out_stride + 16 * b, masks[b], acc[i][b]);
}

template <int Rows, class V>
BLIP_F32_AVX512 inline void weighted_sum_rows(const float* p, std::int64_t p_stride, std::int64_t count, const V* v,
                                              std::int64_t v_stride, std::int64_t dim, float* out,
                                              std::int64_t out_stride) {
    // Up to 64 columns (4 registers per row) at a time.
    for (std::int64_t d = 0; d < dim; d += 64) {
        const std::int64_t left = dim - d;
        const int blocks = left >= 64 ? 4 : static_cast<int>((left + 15) / 16);
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
BLIP_F32_AVX512 inline void weighted_sum(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                         const V* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                         std::int64_t out_stride) {
    switch (rows) {
        case 1: weighted_sum_rows<1>(p, p_stride, count, v, v_stride, dim, out, out_stride); break;
        case 2: weighted_sum_rows<2>(p, p_stride, count, v, v_stride, dim, out, out_stride); break;
        case 3: weighted_sum_rows<3>(p, p_stride, count, v, v_stride, dim, out, out_stride); break;
        default: weighted_sum_rows<4>(p, p_stride, count, v, v_stride, dim, out, out_stride); break;
    }
}

inline void install(F32KernelTable& table) {
    install_tiles<Tiles, 5, 5>(table);
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

}  // namespace blip::kernels::detail::avx512
