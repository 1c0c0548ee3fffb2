// Matrix products with q8_0, q4_0 or q4_1 weights and many activation rows (the vision
// encoder's 577 tokens) on AVX-512 VNNI, called by quant::gemm. The few rows of a decoding step
// take gemv_q8_0 (gemm.hpp), which reads the q8_0 blocks in place.
//
// The per-row kernels (dot_avx_body.hpp) reduce each 32-element block across register lanes.
// Here 16 weight rows are packed so that one VPDPBUSD lane accumulates a whole block of one
// weight row. In step i, the lane of weight row c receives elements 4i..4i+3 of the block, and
// the activation's 4 bytes are broadcast to all lanes. No horizontal sums remain.
//
// VPDPBUSD multiplies unsigned by signed bytes, so in the packed product activations enter as
// q + 128 (in 1..255) and each block's dot product is corrected by 128 * (sum of the weights'
// q), an exact integer. (gemv_q8_0 instead multiplies |w| by x with the sign of w.)
// On CPUs with AMX-INT8, tiles of 16 activation rows take the same panels instead
// (block32_amx.hpp) and give the same integers.
// The float combination then repeats accumulate_block32 exactly: per block the float
// scale = w.scale * x.d, the exact double product with the integer dot (and the q4_1 min
// term) added to double lane b % 8, and the lanes summed by reduce_lanes. So every output has
// the bits of the per-row kernels and of the scalar reference, whatever the row count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <blip/core/dtype.hpp>
#include <blip/core/parallel.hpp>
#include <blip/quant/block32_amx.hpp>
#include <blip/quant/blocks.hpp>
#include <blip/quant/cpu.hpp>
#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>

#if BLIP_QUANT_X86
#include <immintrin.h>
#endif

namespace blip::quant::detail {

// q4_0 and q4_1 calls with at least this many activation rows use the packed product (VNNI,
// or AMX tiles where usable). Fewer rows (decoding steps) read each weight once, so packing
// would only add work.
inline constexpr std::int64_t kVnniMinRows = 8;
// The same for q8_0, which gemv_q8_0 (gemm.hpp) reads in place below it. Measured on an Intel Xeon with
// AMX (2 threads) over the base decoder's q8_0 weights: 8 rows took 16.7 ms with gemv_q8_0
// and 21.2 ms packed, 9 rows 18.6 and 19.6 ms, 12 rows 22.3 and 21.2 ms.
// NOTE: 10 and 11 rows were not timed, and CPUs without AMX were not measured.
inline constexpr std::int64_t kVnniMinRowsQ8_0 = 10;

#if BLIP_QUANT_X86

namespace vnni {

#define BLIP_QUANT_VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

inline constexpr std::int64_t kPanelCols = 16;         // weight rows per packed panel, one per int32 lane
inline constexpr int kTileRows = 8;                    // activation rows per integer tile
inline constexpr std::int64_t kBlockBytes = 96 * 1024;   // packed bytes of the panels one task keeps
inline constexpr std::int64_t kMaxRowChunk = 640;      // activation rows per task, at most

// Bytes of one packed panel per 32-element block: the weights' q as 8 steps of 16 rows x 4
// bytes, then per row the int32 correction 128 * sum(q), the float scale and the float min.
inline constexpr std::int64_t kPanelBlockBytes = 8 * 64 + 3 * 64;

struct PanelView {
    const std::int8_t* q;         // [blocks][8][16][4]
    const std::int32_t* offset;   // [blocks][16]: 128 * sum of the block's q
    const float* scale;           // [blocks][16]
    const float* min;             // [blocks][16], or nullptr when the type has no min
};

inline PanelView panel_view(const std::uint8_t* panel, std::int64_t blocks, bool has_min) {
    PanelView view;
    view.q = reinterpret_cast<const std::int8_t*>(panel);
    view.offset = reinterpret_cast<const std::int32_t*>(panel + blocks * 512);
    view.scale = reinterpret_cast<const float*>(panel + blocks * 576);
    view.min = has_min ? reinterpret_cast<const float*>(panel + blocks * 640) : nullptr;
    return view;
}

// Per-thread buffers: packed panels, one decoded weight row, integer dots of one tile, and the
// activation rows of a partial AMX tile.
struct ThreadBuffers {
    std::vector<std::uint8_t> panels;
    std::vector<std::int8_t> row_q;
    std::vector<float> row_scale;
    std::vector<float> row_min;
    std::vector<std::int32_t> dots;
    std::vector<std::int8_t> amx_rows;
};

inline ThreadBuffers& thread_buffers() {
    static thread_local ThreadBuffers buffers;
    return buffers;
}

// Returns the 16 activation rows of an AMX tile product, in_features bytes apart. These are
// the rows in place when all 16 exist and are contiguous, else a copy padded with zero rows.
inline const std::int8_t* amx_activation_tile(const Act32Row* act, int rows, std::int64_t in_features,
                                              ThreadBuffers& buffers) {
    constexpr int kRows = amx_int8::kTileRows;
    bool in_place = rows == kRows;
    for (int i = 1; in_place && i < kRows; ++i) in_place = act[i].q == act[0].q + i * in_features;
    if (in_place) return act[0].q;
    buffers.amx_rows.assign(static_cast<std::size_t>(kRows * in_features), 0);
    for (int i = 0; i < rows; ++i)
        std::memcpy(buffers.amx_rows.data() + i * in_features, act[i].q, static_cast<std::size_t>(in_features));
    return buffers.amx_rows.data();
}

// Activations as unsigned bytes q + 128, shared by the workers of one call.
inline std::vector<std::uint8_t>& unsigned_activations() {
    static thread_local std::vector<std::uint8_t> bytes;
    return bytes;
}

// Moves 16 decoded rows (`rows`, kPanelCols x in_features int8 values, and their scales and
// mins, kPanelCols x blocks) into the panel layout, computing the 128 * sum(q) corrections.
BLIP_QUANT_VNNI_TARGET inline void pack_decoded_rows(const std::int8_t* rows, const float* row_scale,
                                                     const float* row_min, std::int64_t blocks, bool has_min,
                                                     std::uint8_t* panel) {
    const std::int64_t in_features = blocks * kActBlock32;
    auto* q = panel;
    auto* offset = panel + blocks * 512;
    auto* scale = panel + blocks * 576;
    auto* min = panel + blocks * 640;
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i row_offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(static_cast<int>(in_features)));
    const __m512i block_offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(static_cast<int>(blocks)));
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    for (std::int64_t b = 0; b < blocks; ++b) {
        __m512i sum = _mm512_setzero_si512();
        for (int i = 0; i < 8; ++i) {
            // Elements 4i..4i+3 of block b of the 16 rows, one 32-bit word per row.
            const __m512i words =
                _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0xFFFF, row_offsets, rows + b * kActBlock32 + 4 * i, 1);
            _mm512_storeu_si512(q + (b * 8 + i) * 64, words);
            sum = _mm512_dpbusd_epi32(sum, bias, words);  // 128 * the 4 weights of each row
        }
        _mm512_storeu_si512(offset + b * 64, sum);
        _mm512_storeu_ps(scale + b * 64, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, block_offsets, row_scale + b, 4));
        if (has_min)
            _mm512_storeu_ps(min + b * 64,
                             _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, block_offsets, row_min + b, 4));
    }
}

// Decodes weight rows [first, first + count) (count <= 16) and packs them into one panel.
// Missing rows of a partial panel are zero.
inline void pack_panel(const KernelTable& k, DType type, const std::uint8_t* weights, std::size_t stride,
                       std::int64_t first, std::int64_t count, std::int64_t blocks, ThreadBuffers& buffers,
                       std::uint8_t* panel) {
    const std::int64_t in_features = blocks * kActBlock32;
    buffers.row_q.assign(static_cast<std::size_t>(kPanelCols * in_features), 0);
    buffers.row_scale.assign(static_cast<std::size_t>(kPanelCols * blocks), 0.0f);
    buffers.row_min.assign(static_cast<std::size_t>(kPanelCols * blocks), 0.0f);
    for (std::int64_t c = 0; c < count; ++c) {
        const std::uint8_t* source = weights + static_cast<std::size_t>(first + c) * stride;
        std::int8_t* row = buffers.row_q.data() + c * in_features;
        float* scale = buffers.row_scale.data() + c * blocks;
        if (type == DType::Q8_0) {
            k.decode_q8_0(reinterpret_cast<const BlockQ8_0*>(source), blocks, row, scale);
        } else if (type == DType::Q4_0) {
            k.decode_q4_0(reinterpret_cast<const BlockQ4_0*>(source), blocks, row, scale);
        } else {
            k.decode_q4_1(reinterpret_cast<const BlockQ4_1*>(source), blocks, row, scale,
                          buffers.row_min.data() + c * blocks);
        }
    }
    pack_decoded_rows(buffers.row_q.data(), buffers.row_scale.data(), buffers.row_min.data(), blocks,
                      type == DType::Q4_1, panel);
}

// Exact integer dot products of kTileRows activation rows (rows past `rows` repeat the last
// one) with the 16 weight rows of a panel, per block: dots[(r * blocks + b) * 16 + c].
BLIP_QUANT_VNNI_TARGET inline void panel_dots(const std::uint8_t* const* x, int rows, const PanelView& panel,
                                              std::int64_t blocks, std::int32_t* dots) {
    const std::uint8_t* xr[kTileRows];
    for (int r = 0; r < kTileRows; ++r) xr[r] = x[r < rows ? r : rows - 1];
    for (std::int64_t b = 0; b < blocks; ++b) {
        __m512i acc[kTileRows];
        for (int r = 0; r < kTileRows; ++r) acc[r] = _mm512_setzero_si512();
        const std::int8_t* wq = panel.q + b * 512;
        for (int i = 0; i < 8; ++i) {
            const __m512i w = _mm512_loadu_si512(wq + i * 64);
            for (int r = 0; r < kTileRows; ++r) {
                std::int32_t four;
                std::memcpy(&four, xr[r] + b * kActBlock32 + 4 * i, 4);
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(four), w);
            }
        }
        const __m512i offset = _mm512_loadu_si512(panel.offset + b * kPanelCols);
        for (int r = 0; r < rows; ++r)
            _mm512_storeu_si512(dots + (r * blocks + b) * kPanelCols, _mm512_sub_epi32(acc[r], offset));
    }
}

// Double lanes b % 8 of the 16 weight rows of a panel (two halves of 8 rows).
struct LaneSums {
    __m512d lane[8][2];
};

// Adds block b's terms to lane b % 8, as accumulate_block32 does, in two halves of 8 weight
// rows.
template <int Lane, bool HasMin>
BLIP_QUANT_VNNI_TARGET inline void add_block(LaneSums& sums, const PanelView& panel, const Act32Row& x,
                                             const std::int32_t* dots, std::int64_t b) {
    const __m256 activation_scale = _mm256_set1_ps(x.d[b]);
    for (int half = 0; half < 2; ++half) {
        const std::int64_t offset = b * kPanelCols + 8 * half;
        const __m256 scale = _mm256_mul_ps(_mm256_loadu_ps(panel.scale + offset), activation_scale);
        const __m256i dot = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dots + offset));
        sums.lane[Lane][half] = _mm512_fmadd_pd(_mm512_maskz_cvtps_pd(0xFF, scale), _mm512_maskz_cvtepi32_pd(0xFF, dot), sums.lane[Lane][half]);
        if (HasMin) {
            const __m512d min = _mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(panel.min + offset));
            sums.lane[Lane][half] =
                _mm512_fmadd_pd(min, _mm512_set1_pd(static_cast<double>(x.sum[b])), sums.lane[Lane][half]);
        }
    }
}

// Turns one activation row's integer dots with a panel into `cols` (<= 16) outputs at y.
template <bool HasMin>
BLIP_QUANT_VNNI_TARGET inline void combine_row(const std::int32_t* dots, const PanelView& panel, const Act32Row& x,
                                               std::int64_t blocks, float* y, std::int64_t cols) {
    LaneSums sums;
    for (int lane = 0; lane < 8; ++lane) sums.lane[lane][0] = sums.lane[lane][1] = _mm512_setzero_pd();
    for (std::int64_t b = 0; b < blocks; b += 8) {
        // Block b + lane goes to lane `lane`; the lane index is a constant in each call.
        add_block<0, HasMin>(sums, panel, x, dots, b);
        if (b + 1 < blocks) add_block<1, HasMin>(sums, panel, x, dots, b + 1);
        if (b + 2 < blocks) add_block<2, HasMin>(sums, panel, x, dots, b + 2);
        if (b + 3 < blocks) add_block<3, HasMin>(sums, panel, x, dots, b + 3);
        if (b + 4 < blocks) add_block<4, HasMin>(sums, panel, x, dots, b + 4);
        if (b + 5 < blocks) add_block<5, HasMin>(sums, panel, x, dots, b + 5);
        if (b + 6 < blocks) add_block<6, HasMin>(sums, panel, x, dots, b + 6);
        if (b + 7 < blocks) add_block<7, HasMin>(sums, panel, x, dots, b + 7);
    }
    __m256 result[2];
    for (int half = 0; half < 2; ++half) {
        // reduce_lanes: ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)).
        const auto& l = sums.lane;
        const __m512d low = _mm512_add_pd(_mm512_add_pd(l[0][half], l[1][half]), _mm512_add_pd(l[2][half], l[3][half]));
        const __m512d high = _mm512_add_pd(_mm512_add_pd(l[4][half], l[5][half]), _mm512_add_pd(l[6][half], l[7][half]));
        result[half] = _mm512_maskz_cvtpd_ps(0xFF, _mm512_add_pd(low, high));
    }
    const unsigned mask = cols >= 16 ? 0xFFFFu : (1u << cols) - 1u;
    _mm256_mask_storeu_ps(y, static_cast<__mmask8>(mask & 0xFFu), result[0]);
    _mm256_mask_storeu_ps(y + 8, static_cast<__mmask8>(mask >> 8), result[1]);
}

// y[r * out_features + o] for r < rows and every o, with activations `act` already quantized.
inline void gemm_block32(const KernelTable& k, DType type, const std::uint8_t* weights, std::size_t stride,
                         std::int64_t out_features, std::int64_t in_features, const Act32Row* act, std::int64_t rows,
                         float* y, int threads) {
    const std::int64_t blocks = in_features / kActBlock32;
    const bool has_min = type == DType::Q4_1;
    const std::int64_t panel_bytes = blocks * kPanelBlockBytes;
    const bool amx = block32_amx_usable();
    const int row_step = amx ? amx_int8::kTileRows : kTileRows;

    // VNNI multiplies unsigned by signed bytes: activations as unsigned bytes, q + 128 (q ^ 0x80).
    // AMX multiplies the signed activations directly.
    std::vector<std::uint8_t>& unsigned_x = unsigned_activations();
    if (!amx) {
        unsigned_x.resize(static_cast<std::size_t>(rows * in_features));
        parallel_for(
            rows,
            [&](std::int64_t r, int) {
                const auto* q = reinterpret_cast<const std::uint8_t*>(act[r].q);
                std::uint8_t* out = unsigned_x.data() + r * in_features;
                for (std::int64_t i = 0; i < in_features; ++i) out[i] = static_cast<std::uint8_t>(q[i] ^ 0x80u);
            },
            threads);
    }

    const std::int64_t panels = (out_features + kPanelCols - 1) / kPanelCols;
    const std::int64_t panels_per_task = std::max<std::int64_t>(1, kBlockBytes / panel_bytes);
    const std::int64_t col_tasks = (panels + panels_per_task - 1) / panels_per_task;
    const std::int64_t row_chunks = (rows + kMaxRowChunk - 1) / kMaxRowChunk;
    const std::int64_t chunk_rows = ((rows + row_chunks - 1) / row_chunks + row_step - 1) / row_step * row_step;
    parallel_for(
        col_tasks * row_chunks,
        [&](std::int64_t task, int) {
            ThreadBuffers& buffers = thread_buffers();
            const std::int64_t first_panel = task / row_chunks * panels_per_task;
            const std::int64_t last_panel = std::min(panels, first_panel + panels_per_task);
            const std::int64_t row_begin = task % row_chunks * chunk_rows;
            const std::int64_t row_end = std::min(rows, row_begin + chunk_rows);
            buffers.panels.resize(static_cast<std::size_t>((last_panel - first_panel) * panel_bytes));
            buffers.dots.resize(static_cast<std::size_t>(row_step * blocks * kPanelCols));
            for (std::int64_t p = first_panel; p < last_panel; ++p) {
                const std::int64_t first = p * kPanelCols;
                pack_panel(k, type, weights, stride, first, std::min(kPanelCols, out_features - first), blocks,
                           buffers, buffers.panels.data() + (p - first_panel) * panel_bytes);
            }
            if (amx) amx_int8::configure_tiles();
            for (std::int64_t r = row_begin; r < row_end; r += row_step) {
                const int tile_rows = static_cast<int>(std::min<std::int64_t>(row_step, row_end - r));
                const std::uint8_t* x[kTileRows];
                const std::int8_t* amx_x = nullptr;
                if (amx) {
                    amx_x = amx_activation_tile(act + r, tile_rows, in_features, buffers);
                } else {
                    for (int i = 0; i < tile_rows; ++i) x[i] = unsigned_x.data() + (r + i) * in_features;
                }
                for (std::int64_t p = first_panel; p < last_panel; ++p) {
                    const PanelView panel =
                        panel_view(buffers.panels.data() + (p - first_panel) * panel_bytes, blocks, has_min);
                    if (amx)
                        amx_int8::panel_dots(amx_x, in_features, panel.q, blocks, buffers.dots.data());
                    else
                        panel_dots(x, tile_rows, panel, blocks, buffers.dots.data());
                    const std::int64_t first = p * kPanelCols;
                    const std::int64_t cols = std::min(kPanelCols, out_features - first);
                    for (int i = 0; i < tile_rows; ++i) {
                        const std::int32_t* dots = buffers.dots.data() + i * blocks * kPanelCols;
                        float* out = y + (r + i) * out_features + first;
                        if (has_min)
                            combine_row<true>(dots, panel, act[r + i], blocks, out, cols);
                        else
                            combine_row<false>(dots, panel, act[r + i], blocks, out, cols);
                    }
                }
            }
            if (amx) amx_int8::release_tiles();
        },
        threads);
}

#undef BLIP_QUANT_VNNI_TARGET

}  // namespace vnni

#endif

}  // namespace blip::quant::detail
