// Kernel bodies shared by the Avx2, Avx512 and Avx512Vnni levels. This file has no include
// guard because dot_avx2.hpp and dot_avx512.hpp include it once per level. Before each
// inclusion they define these macros:
//   BLIP_QUANT_TARGET: the function attribute naming the instruction sets.
//   BLIP_QUANT_NAMESPACE: the namespace for that level's copies.
//   BLIP_QUANT_VNNI: 1 to use AVX-512 VNNI for the signed 8-bit dot products.
//   BLIP_QUANT_ZMM: 1 to use 512-bit registers for the f32 path.
// The integer kernels work on 256-bit registers at every level.
//
// Requires <immintrin.h>, operands.hpp and kernels.hpp.

namespace blip::quant::detail::BLIP_QUANT_NAMESPACE {

// ----- activation quantization ---------------------------------------------------------------

// Quantizes `count` (a multiple of 32) values as quantize_activation_block_scalar does.
BLIP_QUANT_TARGET inline void quantize_activation_block(const float* x, int count, std::int8_t* q, float& d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 largest = _mm256_set1_ps(FLT_MAX);
    __m256 amax = _mm256_setzero_ps();
    __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int i = 0; i < count; i += 8) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        amax = _mm256_max_ps(amax, a);
        finite = _mm256_and_ps(finite, _mm256_cmp_ps(a, largest, _CMP_LE_OQ));
    }
    if (_mm256_movemask_ps(finite) != 0xFF) {
        d = NAN;
        std::memset(q, 0, static_cast<std::size_t>(count));
        return;
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    const float id = activation_inverse_scale(_mm_cvtss_f32(m), d);
    const __m256 scale = _mm256_set1_ps(id);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < count; i += 32) {
        const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), scale));
        const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), scale));
        const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), scale));
        const __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), scale));
        // The packs work per 128-bit lane; the permutation restores element order.
        const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(packed, order));
    }
}

BLIP_QUANT_TARGET inline void quantize_act32(const float* x, std::int64_t count, std::int8_t* q, float* d,
                                             float* sum) {
    for (std::int64_t b = 0; b < count / kActBlock32; ++b) {
        std::int8_t* qb = q + b * kActBlock32;
        quantize_activation_block(x + b * kActBlock32, kActBlock32, qb, d[b]);
        int total = 0;
        for (int i = 0; i < kActBlock32; ++i) total += qb[i];
        sum[b] = d[b] * static_cast<float>(total);
    }
}

BLIP_QUANT_TARGET inline void quantize_act256(const float* x, std::int64_t count, std::int8_t* q, float* d,
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

// ----- weight decoders -----------------------------------------------------------------------

BLIP_QUANT_TARGET inline float half_to_float(std::uint16_t h) { return _cvtsh_ss(h); }

// Splits 16 bytes into 32 values: low nibbles first, then high nibbles, each minus `bias`.
BLIP_QUANT_TARGET inline __m256i unpack_nibbles16(const std::uint8_t* packed, int bias) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m256i both = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask));
    return _mm256_sub_epi8(both, _mm256_set1_epi8(static_cast<char>(bias)));
}

BLIP_QUANT_TARGET inline void decode_q8_0(const BlockQ8_0* w, std::int64_t blocks, std::int8_t* q, float* scale) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = half_to_float(w[b].d);
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQK8_0), v);
    }
}

BLIP_QUANT_TARGET inline void decode_q4_0(const BlockQ4_0* w, std::int64_t blocks, std::int8_t* q, float* scale) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = half_to_float(w[b].d);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQK4_0), unpack_nibbles16(w[b].qs, 8));
    }
}

BLIP_QUANT_TARGET inline void decode_q4_1(const BlockQ4_1* w, std::int64_t blocks, std::int8_t* q, float* scale,
                                          float* min) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        scale[b] = half_to_float(w[b].d);
        min[b] = half_to_float(w[b].m);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQK4_1), unpack_nibbles16(w[b].qs, 0));
    }
}

BLIP_QUANT_TARGET inline void decode_q4_k(const BlockQ4_K* w, std::int64_t blocks, std::uint8_t* q,
                                          std::int16_t* scale, std::int16_t* min, float* d, float* dmin) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_k4_metadata(w[s], scale + 16 * s, min + 8 * s, d[s], dmin[s]);
        std::uint8_t* out = q + s * kQK_K;
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[s].qs + 32 * c));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c), _mm256_and_si256(v, mask));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c + 32),
                                _mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
        }
    }
}

BLIP_QUANT_TARGET inline void decode_q5_k(const BlockQ5_K* w, std::int64_t blocks, std::uint8_t* q,
                                          std::int16_t* scale, std::int16_t* min, float* d, float* dmin) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(1);
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_k4_metadata(w[s], scale + 16 * s, min + 8 * s, d[s], dmin[s]);
        std::uint8_t* out = q + s * kQK_K;
        const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[s].qh));
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[s].qs + 32 * c));
            // Shifting 16-bit lanes and masking each byte to one bit picks bit 2c (2c + 1) of every byte.
            const __m256i bit_low = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * c)), one);
            const __m256i bit_high = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * c + 1)), one);
            const __m256i low = _mm256_or_si256(_mm256_and_si256(v, mask), _mm256_slli_epi16(bit_low, 4));
            const __m256i upper = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask),
                                                  _mm256_slli_epi16(bit_high, 4));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c), low);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c + 32), upper);
        }
    }
}

// Bits shift..shift + 1 of every byte of `high`, moved to bits 4..5.
BLIP_QUANT_TARGET inline __m256i q6_high_bits(__m256i high, int shift) {
    const __m256i bits = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(0x03));
    return _mm256_slli_epi16(bits, 4);
}

BLIP_QUANT_TARGET inline void decode_q6_k(const BlockQ6_K* w, std::int64_t blocks, std::uint8_t* q,
                                          std::int16_t* scale, float* d) {
    const __m256i mask4 = _mm256_set1_epi8(0x0F);
    for (std::int64_t s = 0; s < blocks; ++s) {
        decode_q6_k_metadata(w[s], scale + 16 * s, d[s]);
        for (int half = 0; half < 2; ++half) {
            const std::uint8_t* ql = w[s].ql + 64 * half;
            const __m256i low0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
            const __m256i low1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
            const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[s].qh + 32 * half));
            const __m256i q0 = _mm256_or_si256(_mm256_and_si256(low0, mask4), q6_high_bits(high, 0));
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(low1, mask4), q6_high_bits(high, 2));
            const __m256i q2 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low0, 4), mask4), q6_high_bits(high, 4));
            const __m256i q3 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low1, 4), mask4), q6_high_bits(high, 6));
            std::uint8_t* out = q + s * kQK_K + 128 * half;
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), q0);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), q1);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64), q2);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 96), q3);
        }
    }
}

BLIP_QUANT_TARGET inline void decode_f16(const std::uint16_t* w, std::int64_t count, float* out) {
    std::int64_t k = 0;
#if BLIP_QUANT_ZMM
    for (; k + 16 <= count; k += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
        // The masked form avoids GCC 12's uninitialized-value warning in _mm512_cvtph_ps.
        _mm512_storeu_ps(out + k, _mm512_maskz_cvtph_ps(0xFFFF, h));
    }
#endif
    for (; k + 8 <= count; k += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k));
        _mm256_storeu_ps(out + k, _mm256_cvtph_ps(h));
    }
    for (; k < count; ++k) out[k] = half_to_float(w[k]);
}

BLIP_QUANT_TARGET inline void decode_bf16(const std::uint16_t* w, std::int64_t count, float* out) {
    std::int64_t k = 0;
    for (; k + 8 <= count; k += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k));
        const __m256i wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(out + k, _mm256_castsi256_ps(wide));
    }
    for (; k < count; ++k) out[k] = bf16_to_fp32(w[k]);
}

// ----- integer dot products ------------------------------------------------------------------

// Computes per-lane sums of products of 32 signed weights with 32 activations in [-127, 127].
// `wabs` is |w| and `x` already carries the sign of w. Each 32-bit lane sums four products.
BLIP_QUANT_TARGET inline __m256i dot_signed_lanes(__m256i wabs, __m256i x) {
#if BLIP_QUANT_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs, x);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, x), _mm256_set1_epi16(1));
#endif
}

template <int Rows>
BLIP_QUANT_TARGET inline void dot_block32_rows(const Block32Row& w, const Act32Row* x, std::int64_t blocks,
                                               float* out) {
    // acc[r][0] contains accumulator lanes 0..3, acc[r][1] lanes 4..7. Blocks go four at a time
    // into the half that matches b % 8.
    __m256d acc[Rows][2];
    for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_pd();
    std::int64_t b = 0;
    for (; b + 4 <= blocks; b += 4) {
        const int half = static_cast<int>(b % kLanes) / 4;
        __m256i wv[4];
        __m256i wabs[4];
        for (int k = 0; k < 4; ++k) {
            wv[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q + (b + k) * 32));
            wabs[k] = _mm256_abs_epi8(wv[k]);
        }
        const __m128 wscale = _mm_loadu_ps(w.scale + b);
        for (int r = 0; r < Rows; ++r) {
            __m256i partial[4];
            for (int k = 0; k < 4; ++k) {
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r].q + (b + k) * 32));
                partial[k] = dot_signed_lanes(wabs[k], _mm256_sign_epi8(xv, wv[k]));
            }
            // Two rounds of pairwise adds leave block k's sum split over lane k of both halves.
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(partial[0], partial[1]),
                                                _mm256_hadd_epi32(partial[2], partial[3]));
            const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            const __m256d scale = _mm256_cvtps_pd(_mm_mul_ps(wscale, _mm_loadu_ps(x[r].d + b)));
            acc[r][half] = _mm256_add_pd(acc[r][half], _mm256_mul_pd(scale, _mm256_cvtepi32_pd(sums)));
            if (w.min != nullptr) {
                const __m256d wmin = _mm256_cvtps_pd(_mm_loadu_ps(w.min + b));
                const __m256d xsum = _mm256_cvtps_pd(_mm_loadu_ps(x[r].sum + b));
                acc[r][half] = _mm256_add_pd(acc[r][half], _mm256_mul_pd(wmin, xsum));
            }
        }
    }
    for (int r = 0; r < Rows; ++r) {
        double lanes[kLanes];
        _mm256_storeu_pd(lanes, acc[r][0]);
        _mm256_storeu_pd(lanes + 4, acc[r][1]);
        for (std::int64_t t = b; t < blocks; ++t) {
            accumulate_block32(w, x[r], t, dot_i8_scalar(w.q + t * 32, x[r].q + t * 32, 32), lanes);
        }
        out[r] = reduce_lanes(lanes);
    }
}

BLIP_QUANT_TARGET inline void dot_block32(const Block32Row& w, const Act32Row* x, int rows, std::int64_t blocks,
                                          float* out) {
    switch (rows) {
        case 1: dot_block32_rows<1>(w, x, blocks, out); break;
        case 2: dot_block32_rows<2>(w, x, blocks, out); break;
        case 3: dot_block32_rows<3>(w, x, blocks, out); break;
        default: dot_block32_rows<4>(w, x, blocks, out); break;
    }
}

BLIP_QUANT_TARGET inline std::int32_t sum_lanes_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

template <int Rows>
BLIP_QUANT_TARGET inline void dot_super256_rows(const Super256Row& w, const Act256Row* x, std::int64_t blocks,
                                                float* out) {
    // Broadcasting the 4 bytes of scales g, g + 1 and shuffling gives scale g in the low
    // 128-bit lane and scale g + 1 in the high lane, matching the two 16-element halves of a chunk.
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    double lanes[Rows][kLanes] = {};
    for (std::int64_t s = 0; s < blocks; ++s) {
        __m256i acc[Rows];
        for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q + s * kQK_K + 32 * c));
            std::int32_t pair;
            std::memcpy(&pair, w.scale + 16 * s + 2 * c, sizeof(pair));
            const __m256i scale = _mm256_shuffle_epi8(_mm256_set1_epi32(pair), spread);
            for (int r = 0; r < Rows; ++r) {
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r].q + s * kQK_K + 32 * c));
                acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), scale));
            }
        }
        for (int r = 0; r < Rows; ++r) lanes[r][s % kLanes] += super256_term(w, x[r], s, sum_lanes_epi32(acc[r]));
    }
    for (int r = 0; r < Rows; ++r) out[r] = reduce_lanes(lanes[r]);
}

BLIP_QUANT_TARGET inline void dot_super256(const Super256Row& w, const Act256Row* x, int rows, std::int64_t blocks,
                                           float* out) {
    switch (rows) {
        case 1: dot_super256_rows<1>(w, x, blocks, out); break;
        case 2: dot_super256_rows<2>(w, x, blocks, out); break;
        case 3: dot_super256_rows<3>(w, x, blocks, out); break;
        default: dot_super256_rows<4>(w, x, blocks, out); break;
    }
}

// ----- q8_0 weights read in place ----------------------------------------------------------

// Bytes ahead of the block group in use that gemv_q8_0_range prefetches into the L2 cache.
// Measured on an Intel Xeon (2 cores) over the base decoder's q8_0 weights (132 MB, 1 row):
// 18 GB/s without, 23 GB/s 8 KiB ahead into L2. Prefetching into L1 gained less.
// NOTE: not tuned for the Avx2 level or AMD CPUs, where the kernel is compute-bound.
inline constexpr int kGemvPrefetchBytes = 8192;

// Sums the 8 int32 lanes of each of 8 vectors: lane j of the result is the sum of v[j]. The
// sums are exact integers, so any order gives the same result.
BLIP_QUANT_TARGET inline __m256i sum_lanes_8x(const __m256i (&v)[8]) {
    __m256i t[4];
    for (int i = 0; i < 4; ++i) t[i] = _mm256_hadd_epi32(v[2 * i], v[2 * i + 1]);
    __m256i u[2];
    for (int i = 0; i < 2; ++i) u[i] = _mm256_hadd_epi32(t[2 * i], t[2 * i + 1]);
    // 128-bit half h of u[i] contains the half-h partial sums of v[4i..4i+3]. A blend and one
    // lane permute line the halves up. Two permutes took 10% longer for 3 rows (768 x 768
    // weights in L2, Intel Xeon).
    const __m256i straight = _mm256_blend_epi32(u[0], u[1], 0xF0);
    const __m256i crossed = _mm256_permute2x128_si256(u[0], u[1], 0x21);
    return _mm256_add_epi32(straight, crossed);
}

// Computes one weight row (q8_0 blocks) times `Rows` activation rows: out[r] as
// accumulate_block32 and reduce_lanes compute it. Each block's integer dot product is
// dot_signed_lanes of |w| and x with the sign of w, which equals w x exactly for every int8 w
// (|-128| is 128 unsigned) and every x in [-127, 127], the range activation quantization
// writes. The double products of the float scale and the integer dot are exact, so fused and
// separate multiply-adds give the same sums.
template <int Rows>
BLIP_QUANT_TARGET inline void gemv_q8_0_row(const BlockQ8_0* w, std::int64_t blocks, const Act32Row* act,
                                            float* out) {
    // Double lanes 0-3 and 4-7, in 256-bit registers: on Intel CPUs, port 1 runs vector
    // instructions only while no 512-bit instruction is in flight.
    __m256d low[Rows], high[Rows];
    for (int r = 0; r < Rows; ++r) low[r] = high[r] = _mm256_setzero_pd();
    std::int64_t b = 0;
    for (; b + 8 <= blocks; b += 8) {
        const char* group = reinterpret_cast<const char*>(w + b);
        for (int line = 0; line < 8 * static_cast<int>(sizeof(BlockQ8_0)); line += 64)
            _mm_prefetch(group + kGemvPrefetchBytes + line, _MM_HINT_T1);
        __m256i wq[8];
        __m256i magnitude[8];
        for (int j = 0; j < 8; ++j) {
            wq[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b + j].qs));
            magnitude[j] = _mm256_abs_epi8(wq[j]);
        }
        // Scalar loads of the 8 scales: gathers are slow on CPUs with the Gather Data Sampling
        // microcode fix.
        const __m256 w_scale = _mm256_cvtph_ps(_mm_setr_epi16(
            static_cast<short>(w[b].d), static_cast<short>(w[b + 1].d), static_cast<short>(w[b + 2].d),
            static_cast<short>(w[b + 3].d), static_cast<short>(w[b + 4].d), static_cast<short>(w[b + 5].d),
            static_cast<short>(w[b + 6].d), static_cast<short>(w[b + 7].d)));
        for (int r = 0; r < Rows; ++r) {
            __m256i partial[8];
            for (int j = 0; j < 8; ++j) {
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act[r].q + (b + j) * 32));
                partial[j] = dot_signed_lanes(magnitude[j], _mm256_sign_epi8(xv, wq[j]));
            }
            const __m256i dots = sum_lanes_8x(partial);
            const __m256 scale = _mm256_mul_ps(w_scale, _mm256_loadu_ps(act[r].d + b));
            low[r] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(scale)),
                                     _mm256_cvtepi32_pd(_mm256_castsi256_si128(dots)), low[r]);
            high[r] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(scale, 1)),
                                      _mm256_cvtepi32_pd(_mm256_extracti128_si256(dots, 1)), high[r]);
        }
    }
    for (int r = 0; r < Rows; ++r) {
        double lanes[kLanes];
        _mm256_storeu_pd(lanes, low[r]);
        _mm256_storeu_pd(lanes + 4, high[r]);
        if (b < blocks) {
            // The last blocks of a row that is not a multiple of 8 blocks, as the scalar kernel.
            for (std::int64_t t = b; t < blocks; ++t) {
                const std::int32_t dot = dot_i8_scalar(w[t].qs, act[r].q + t * kActBlock32, kActBlock32);
                accumulate_scaled_block32(_cvtsh_ss(w[t].d), act[r], t, dot, lanes);
            }
        }
        out[r] = reduce_lanes(lanes);
    }
}

// Computes weight rows [begin, end) for `Rows` activation rows. One call covers them all, so
// that the row kernel inlines and the next row's loads overlap the current one.
template <int Rows>
BLIP_QUANT_TARGET __attribute__((flatten)) inline void gemv_q8_0_rows(const std::uint8_t* weights,
                                                                      std::size_t stride, std::int64_t begin,
                                                                      std::int64_t end, std::int64_t blocks,
                                                                      const Act32Row* act, float* y,
                                                                      std::int64_t out_features) {
    float results[Rows];
    for (std::int64_t o = begin; o < end; ++o) {
        const auto* w = reinterpret_cast<const BlockQ8_0*>(weights + static_cast<std::size_t>(o) * stride);
        gemv_q8_0_row<Rows>(w, blocks, act, results);
        for (int r = 0; r < Rows; ++r) y[r * out_features + o] = results[r];
    }
}

BLIP_QUANT_TARGET inline void gemv_q8_0_range(const std::uint8_t* weights, std::size_t stride, std::int64_t begin,
                                              std::int64_t end, std::int64_t blocks, const Act32Row* act, int rows,
                                              float* y, std::int64_t out_features) {
    switch (rows) {
        case 1: gemv_q8_0_rows<1>(weights, stride, begin, end, blocks, act, y, out_features); break;
        case 2: gemv_q8_0_rows<2>(weights, stride, begin, end, blocks, act, y, out_features); break;
        case 3: gemv_q8_0_rows<3>(weights, stride, begin, end, blocks, act, y, out_features); break;
        default: gemv_q8_0_rows<4>(weights, stride, begin, end, blocks, act, y, out_features); break;
    }
}

// ----- f32 dot products ----------------------------------------------------------------------

BLIP_QUANT_TARGET inline float sum_lanes_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// Weight loaders for dot_float_rows: f32 as stored, f16 and bf16 widened exactly to f32, so
// the three weight types share one order of operations.
struct LoadF32 {
    using Element = float;
    BLIP_QUANT_TARGET static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
    BLIP_QUANT_TARGET static float load1(const float* p) { return *p; }
#if BLIP_QUANT_ZMM
    BLIP_QUANT_TARGET static __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
    BLIP_QUANT_TARGET static __m512 load16(__mmask16 mask, const float* p) { return _mm512_maskz_loadu_ps(mask, p); }
#endif
};

struct LoadF16 {
    using Element = std::uint16_t;
    BLIP_QUANT_TARGET static __m256 load8(const std::uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    BLIP_QUANT_TARGET static float load1(const std::uint16_t* p) { return half_to_float(*p); }
#if BLIP_QUANT_ZMM
    BLIP_QUANT_TARGET static __m512 load16(const std::uint16_t* p) {
        return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    BLIP_QUANT_TARGET static __m512 load16(__mmask16 mask, const std::uint16_t* p) {
        return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_maskz_loadu_epi16(mask, p));
    }
#endif
};

#if BLIP_QUANT_ZMM
// Widens 16 bf16 values. The masked forms avoid GCC 12's uninitialized-value warnings in the
// unmasked intrinsics.
BLIP_QUANT_TARGET inline __m512 widen_bf16(__m256i h) {
    const __m512i wide = _mm512_maskz_cvtepu16_epi32(0xFFFF, h);
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, wide, 16));
}
#endif

struct LoadBf16 {
    using Element = std::uint16_t;
    BLIP_QUANT_TARGET static __m256 load8(const std::uint16_t* p) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    BLIP_QUANT_TARGET static float load1(const std::uint16_t* p) { return bf16_to_fp32(*p); }
#if BLIP_QUANT_ZMM
    BLIP_QUANT_TARGET static __m512 load16(const std::uint16_t* p) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return widen_bf16(h);
    }
    BLIP_QUANT_TARGET static __m512 load16(__mmask16 mask, const std::uint16_t* p) {
        const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
        return widen_bf16(h);
    }
#endif
};

// Bytes ahead of the weights in use that the f32, f16 and bf16 dot products prefetch into the
// L2 cache. Measured on an Intel Xeon (2 cores) over the base decoder's bf16 weights (245 MB,
// 1 row): 23 GB/s without, 27 GB/s 8 KiB ahead into L2, 20 GB/s 4 KiB ahead into L1.
inline constexpr int kFloatPrefetchBytes = 8192;

// Prefetches into the L2 cache the lines kFloatPrefetchBytes after the `count` weights at `w`.
template <class Element>
BLIP_QUANT_TARGET inline void prefetch_ahead(const Element* w, int count) {
    const char* ahead = reinterpret_cast<const char*>(w) + kFloatPrefetchBytes;
    for (int line = 0; line < count * static_cast<int>(sizeof(Element)); line += 64)
        _mm_prefetch(ahead + line, _MM_HINT_T1);
}

template <int Rows, class Load>
BLIP_QUANT_TARGET inline void dot_float_rows(const typename Load::Element* w, const float* const* x,
                                             std::int64_t count, float* out) {
    std::int64_t k = 0;
#if BLIP_QUANT_ZMM
    __m512 acc[Rows][2];
    for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (; k + 32 <= count; k += 32) {
        prefetch_ahead(w + k, 32);
        const __m512 w0 = Load::load16(w + k);
        const __m512 w1 = Load::load16(w + k + 16);
        for (int r = 0; r < Rows; ++r) {
            acc[r][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x[r] + k), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x[r] + k + 16), acc[r][1]);
        }
    }
    // Up to 31 remaining elements, in at most two masked steps.
    for (int step = 0; step < 2 && k < count; ++step, k += 16) {
        const std::int64_t left = count - k;
        const __mmask16 mask =
            left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
        const __m512 wv = Load::load16(mask, w + k);
        for (int r = 0; r < Rows; ++r) {
            acc[r][step] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x[r] + k), acc[r][step]);
        }
    }
    for (int r = 0; r < Rows; ++r) {
        const __m512 total = _mm512_add_ps(acc[r][0], acc[r][1]);
        // Masked extracts: GCC 12's _mm512_castps512_ps256 warns about an uninitialized value.
        const __m512d halves = _mm512_castps_pd(total);
        const __m256 low = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, halves, 0));
        const __m256 high = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, halves, 1));
        out[r] = sum_lanes_ps(_mm256_add_ps(low, high));
    }
#else
    __m256 acc[Rows][2];
    for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (; k + 16 <= count; k += 16) {
        prefetch_ahead(w + k, 16);
        const __m256 w0 = Load::load8(w + k);
        const __m256 w1 = Load::load8(w + k + 8);
        for (int r = 0; r < Rows; ++r) {
            acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[r] + k), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[r] + k + 8), acc[r][1]);
        }
    }
    for (; k + 8 <= count; k += 8) {
        const __m256 wv = Load::load8(w + k);
        for (int r = 0; r < Rows; ++r) acc[r][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[r] + k), acc[r][0]);
    }
    for (int r = 0; r < Rows; ++r) {
        float total = sum_lanes_ps(_mm256_add_ps(acc[r][0], acc[r][1]));
        // An explicit FMA, so the result never depends on whether the compiler contracts.
        for (std::int64_t t = k; t < count; ++t) total = std::fma(Load::load1(w + t), x[r][t], total);
        out[r] = total;
    }
#endif
}

template <class Load>
BLIP_QUANT_TARGET inline void dot_float(const typename Load::Element* w, const float* const* x, int rows,
                                        std::int64_t count, float* out) {
    switch (rows) {
        case 1: dot_float_rows<1, Load>(w, x, count, out); break;
        case 2: dot_float_rows<2, Load>(w, x, count, out); break;
        case 3: dot_float_rows<3, Load>(w, x, count, out); break;
        default: dot_float_rows<4, Load>(w, x, count, out); break;
    }
}

BLIP_QUANT_TARGET inline void dot_f32(const float* w, const float* const* x, int rows, std::int64_t count,
                                      float* out) {
    dot_float<LoadF32>(w, x, rows, count, out);
}

// Computes dot_float for `outputs` weight rows `w_stride` elements apart, writing weight row i
// to out[r * out_stride + i]. One call covers all rows, so that dot_float inlines into the loop.
template <class Load>
BLIP_QUANT_TARGET __attribute__((flatten)) inline void dot_float_outputs(const typename Load::Element* w,
                                                                         std::int64_t w_stride, std::int64_t outputs,
                                                                         const float* const* x, int rows,
                                                                         std::int64_t count, float* out,
                                                                         std::int64_t out_stride) {
    float results[kMaxDotRows];
    for (std::int64_t i = 0; i < outputs; ++i) {
        dot_float<Load>(w + i * w_stride, x, rows, count, results);
        for (int r = 0; r < rows; ++r) out[r * out_stride + i] = results[r];
    }
}

BLIP_QUANT_TARGET inline void dot_f16(const std::uint16_t* w, std::int64_t w_stride, std::int64_t outputs,
                                      const float* const* x, int rows, std::int64_t count, float* out,
                                      std::int64_t out_stride) {
    dot_float_outputs<LoadF16>(w, w_stride, outputs, x, rows, count, out, out_stride);
}

BLIP_QUANT_TARGET inline void dot_bf16(const std::uint16_t* w, std::int64_t w_stride, std::int64_t outputs,
                                       const float* const* x, int rows, std::int64_t count, float* out,
                                       std::int64_t out_stride) {
    dot_float_outputs<LoadBf16>(w, w_stride, outputs, x, rows, count, out, out_stride);
}

// Installs this level's kernels.
inline void install(KernelTable& table) {
    table.quantize_act32 = quantize_act32;
    table.quantize_act256 = quantize_act256;
    table.decode_q8_0 = decode_q8_0;
    table.gemv_q8_0_range = gemv_q8_0_range;
    table.decode_q4_0 = decode_q4_0;
    table.decode_q4_1 = decode_q4_1;
    table.decode_q4_k = decode_q4_k;
    table.decode_q5_k = decode_q5_k;
    table.decode_q6_k = decode_q6_k;
    table.decode_f16 = decode_f16;
    table.decode_bf16 = decode_bf16;
    table.dot_block32 = dot_block32;
    table.dot_super256 = dot_super256;
    table.dot_f32 = dot_f32;
    table.dot_f16 = dot_f16;
    table.dot_bf16 = dot_bf16;
}

}  // namespace blip::quant::detail::BLIP_QUANT_NAMESPACE
