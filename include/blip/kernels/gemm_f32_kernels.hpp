// The set of f32 kernels one CPU level provides, and the two portable levels: the scalar
// reference and xsimd with the compile-time architecture (SSE2 on x86-64, NEON on ARM64,
// SSE2 emulation on WebAssembly). gemm_f32_avx2.hpp and gemm_f32_avx512.hpp add the
// run-time dispatched x86 levels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "blip/kernels/simd_math.hpp"
#include "blip/quant/cpu.hpp"
#include "blip/quant/float16.hpp"

#if BLIP_QUANT_HAS_XSIMD
#include <xsimd/xsimd.hpp>
#endif

namespace blip::kernels::detail {

// Largest register tile of any level: rows of x times rows of W.
inline constexpr int kMaxTileRows = 6;
inline constexpr int kMaxTileCols = 6;

// The rows of one operand of a tile: element k of row r is at
// data[r * row_stride + (k / 16) * block_stride + k % 16]. Row-major storage has
// block_stride 16. Packed panels interleave their rows per 16 elements (row_stride 16,
// block_stride 16 * rows), so that a tile reads one sequential stream per operand.
struct TileOperand {
    const float* data;
    std::int64_t row_stride;
    std::int64_t block_stride;
};

// Dot products of `Rows` rows of x with `Cols` rows of W, `count` elements each, in the
// 16-lane order of dot_reference: y[r * y_stride + c].
using DotTile = void (*)(TileOperand x, TileOperand w, std::int64_t count, float* y, std::int64_t y_stride);

// Dot products of `Rows` rows of x with `outputs` consecutive rows of W (row-major, row stride
// w.row_stride), in the 16-lane order of dot_reference: y[r * y_stride + o]. The same sums as
// the DotTiles over those outputs, in one call, so that the loads of the next tile issue while
// the previous one finishes (one call per tile measured 12% slower on memory-bound rows).
using DotRows = void (*)(TileOperand x, TileOperand w, std::int64_t count, std::int64_t outputs, float* y,
                         std::int64_t y_stride);

// ----- chain-order tiles ----------------------------------------------------------------------
// Products with many rows may instead sum each output as one multiply-add chain in increasing k,
// starting from zero. That is the order of BLAS micro-kernels, which broadcast one element of x
// and multiply it with a vector of W values of consecutive outputs. Both operands are packed into
// panels (see ChainPack): a panel of x holds a level's chain_rows rows, a panel of W its
// chain_cols outputs.

// Most rows of one chain tile of any level.
inline constexpr int kMaxChainRows = 12;

// y[r * y_stride + c] for r < Rows (the tile's template argument) and c < the level's
// chain_cols: the chain of the x panel's row r and the W panel's output c over `count` values
// of k, continued from the value in y when `accumulate`, else from zero.
using ChainTile = void (*)(const float* x_panel, const float* w_panel, std::int64_t count, float* y,
                           std::int64_t y_stride, bool accumulate);

// Copies `rows` (at most `width`) rows of `count` elements (row stride `stride`) into a panel
// of `width` rows: element k of row r at out[k * width + r], zero for rows past `rows`.
using ChainPack = void (*)(const float* source, std::int64_t rows, std::int64_t stride, std::int64_t count,
                           int width, float* out);

// Scalar reference of a ChainTile with `rows` rows of an x panel of `panel_rows` rows and a
// W panel of `cols` outputs.
template <bool Fused>
inline void chain_tile_reference(const float* x_panel, int panel_rows, int rows, const float* w_panel, int cols,
                                 std::int64_t count, float* y, std::int64_t y_stride, bool accumulate) {
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            float sum = accumulate ? y[r * y_stride + c] : 0.0f;
            for (std::int64_t k = 0; k < count; ++k)
                sum = multiply_add<Fused>(x_panel[k * panel_rows + r], w_panel[k * cols + c], sum);
            y[r * y_stride + c] = sum;
        }
}

// Scalar ChainPack, in blocks of 16 k so that the written part of the panel stays in the L1
// cache.
inline void chain_pack_reference(const float* source, std::int64_t rows, std::int64_t stride, std::int64_t count,
                                 int width, float* out) {
    constexpr std::int64_t kBlock = 16;
    for (std::int64_t k0 = 0; k0 < count; k0 += kBlock) {
        const std::int64_t k1 = std::min(count, k0 + kBlock);
        for (std::int64_t r = 0; r < width; ++r)
            for (std::int64_t k = k0; k < k1; ++k) out[k * width + r] = r < rows ? source[r * stride + k] : 0.0f;
    }
}

// Elementwise end of a linear layer for `count` outputs of one row:
// y = residual + gelu(dots + bias), each part optional (null pointer, gelu false). `residual`
// may equal `y`, but `dots` must not overlap `y` unless it equals it.
using EpilogueKernel = void (*)(const float* dots, std::int64_t count, const float* bias, bool gelu,
                                const float* residual, float* y);

// Most query rows of one ScoresKernel or WeightedSumKernel call.
inline constexpr int kAttentionRows = 4;

// Attention scores of `rows` (at most kAttentionRows) query rows:
// scores[i * scores_stride + j] = dot_reference(query + i * query_stride,
// keys + j * key_stride, dim) for j < count.
using ScoresKernel = void (*)(const float* query, std::int64_t query_stride, int rows, const float* keys,
                              std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* scores,
                              std::int64_t scores_stride);

// Attention scores of `rows` (at most kAttentionRows) query rows from keys stored transposed:
// key j's element d at keys_t[d * keys_t_stride + j]. Each score is one multiply-add chain in
// increasing d, scores[i * scores_stride + j] = sum over d of query[i * query_stride + d] *
// keys_t[d * keys_t_stride + j], so these scores round differently from ScoresKernel's.
using TransposedScoresKernel = void (*)(const float* query, std::int64_t query_stride, int rows, const float* keys_t,
                                        std::int64_t keys_t_stride, std::int64_t count, std::int64_t dim,
                                        float* scores, std::int64_t scores_stride);

// Scales `count` scores (divided by `scale` when `divide`, else multiplied by it), adds the
// optional per-key bias and replaces them by their softmax, as softmax_row_reference.
using SoftmaxKernel = void (*)(float* scores, std::int64_t count, float scale, bool divide, const float* bias);

// out[i * out_stride + d] = sum over j < count of p[i * p_stride + j] * v[j * v_stride + d],
// for i < rows (at most kAttentionRows) and d < dim, each sum in increasing j.
using WeightedSumKernel = void (*)(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                   const float* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                   std::int64_t out_stride);

// ScoresKernel and WeightedSumKernel for keys and values stored as bfloat16 (the
// cross-attention caches of reduced-precision models). Each gives the bits of the f32 kernel
// on the widened values, which f32 represents exactly.
using ScoresBf16Kernel = void (*)(const float* query, std::int64_t query_stride, int rows, const std::uint16_t* keys,
                                  std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* scores,
                                  std::int64_t scores_stride);
using WeightedSumBf16Kernel = void (*)(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                       const std::uint16_t* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                       std::int64_t out_stride);

// The f32 kernels of one CPU level: matrix-product tiles, the linear epilogue and the pieces
// of attention.
struct F32KernelTable {
    quant::CpuLevel level = quant::CpuLevel::Scalar;
    bool fused = false;  // the arithmetic family, see simd_math.hpp
    int tile_rows = 1;
    int tile_cols = 1;
    DotTile tiles[kMaxTileRows][kMaxTileCols] = {};  // tiles[r - 1][c - 1] for r <= tile_rows, c <= tile_cols
    DotRows rows[kMaxTileRows] = {};                 // rows[r - 1] for r <= tile_rows
    // Chain-order tiles, chain[r - 1] for r <= chain_rows; chain_rows is 0 at levels without them.
    int chain_rows = 0;
    int chain_cols = 0;
    ChainTile chain[kMaxChainRows] = {};
    ChainPack chain_pack = nullptr;
    EpilogueKernel epilogue = nullptr;
    ScoresKernel scores = nullptr;
    TransposedScoresKernel transposed_scores = nullptr;
    SoftmaxKernel softmax = nullptr;
    WeightedSumKernel weighted_sum = nullptr;
    ScoresBf16Kernel scores_bf16 = nullptr;
    WeightedSumBf16Kernel weighted_sum_bf16 = nullptr;
};

template <class Tiles, int Rows, int Cols>
void install_tile(F32KernelTable& table) {
    table.tiles[Rows - 1][Cols - 1] = &Tiles::template tile<Rows, Cols>;
}

template <class Tiles, int Cols, int... Index>
void install_tiles(F32KernelTable& table, std::integer_sequence<int, Index...>) {
    (install_tile<Tiles, Index / Cols + 1, Index % Cols + 1>(table), ...);
}

template <class Tiles, int Cols, int... Rows>
void install_dot_rows(F32KernelTable& table, std::integer_sequence<int, Rows...>) {
    ((table.rows[Rows] = &Tiles::template rows<Rows + 1, Cols>), ...);
}

// Fills table.tiles with Tiles::tile<r, c> for every r <= Rows and c <= Cols, and table.rows
// with Tiles::rows<r, Cols>.
template <class Tiles, int Rows, int Cols>
void install_tiles(F32KernelTable& table) {
    static_assert(Rows <= kMaxTileRows && Cols <= kMaxTileCols, "tile larger than kMaxTileRows x kMaxTileCols");
    install_tiles<Tiles, Cols>(table, std::make_integer_sequence<int, Rows * Cols>{});
    install_dot_rows<Tiles, Cols>(table, std::make_integer_sequence<int, Rows>{});
    table.tile_rows = Rows;
    table.tile_cols = Cols;
}

template <class Tiles, int... Rows>
void install_chain_tiles(F32KernelTable& table, std::integer_sequence<int, Rows...>) {
    ((table.chain[Rows] = &Tiles::template tile<Rows + 1>), ...);
}

// Fills table.chain with Tiles::tile<r> for every r <= Tiles::kRows.
template <class Tiles>
void install_chain_tiles(F32KernelTable& table) {
    static_assert(Tiles::kRows <= kMaxChainRows, "chain tile taller than kMaxChainRows");
    install_chain_tiles<Tiles>(table, std::make_integer_sequence<int, Tiles::kRows>{});
    table.chain_rows = Tiles::kRows;
    table.chain_cols = Tiles::kCols;
}

template <bool Fused>
inline void epilogue_reference(const float* dots, std::int64_t count, const float* bias, bool gelu,
                               const float* residual, float* y) {
    for (std::int64_t i = 0; i < count; ++i) {
        float value = dots[i];
        if (bias) value = value + bias[i];
        if (gelu) value = gelu_reference<Fused>(value);
        if (residual) value = residual[i] + value;
        y[i] = value;
    }
}

template <bool Fused>
inline void scores_reference(const float* query, std::int64_t query_stride, int rows, const float* keys,
                             std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* scores,
                             std::int64_t scores_stride) {
    for (int i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < count; ++j)
            scores[i * scores_stride + j] = dot_reference<Fused>(query + i * query_stride, keys + j * key_stride, dim);
}

template <bool Fused>
inline void transposed_scores_reference(const float* query, std::int64_t query_stride, int rows, const float* keys_t,
                                        std::int64_t keys_t_stride, std::int64_t count, std::int64_t dim,
                                        float* scores, std::int64_t scores_stride) {
    for (int i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < count; ++j) {
            float sum = 0.0f;
            for (std::int64_t d = 0; d < dim; ++d)
                sum = multiply_add<Fused>(query[i * query_stride + d], keys_t[d * keys_t_stride + j], sum);
            scores[i * scores_stride + j] = sum;
        }
}

// Sums 16 double lanes in the halving order of reduce_lanes16.
inline double reduce_double_lanes16(const double* lanes) {
    double s1[8];
    for (int i = 0; i < 8; ++i) s1[i] = lanes[i] + lanes[i + 8];
    double s2[4];
    for (int i = 0; i < 4; ++i) s2[i] = s1[i] + s1[i + 4];
    return (s2[0] + s2[2]) + (s2[1] + s2[3]);
}

// Softmax of scaled scores: s = score / scale or score * scale (rounded, then bias added; the
// FMA family multiplies and adds the bias in one rounding), then exp(s - max) with
// exp_reference, summed in double in 16 lanes (score j in lane j % 16), and every value
// multiplied by the float nearest 1 / sum. A row whose scores are all -infinity has no
// defined softmax; it becomes NaN, as in torch.
template <bool Fused>
inline void softmax_row_reference(float* scores, std::int64_t count, float scale, bool divide, const float* bias) {
    if (count <= 0) return;
    float max_value = -INFINITY;
    for (std::int64_t j = 0; j < count; ++j) {
        float value;
        if (divide) {
            value = scores[j] / scale;
            if (bias) value = value + bias[j];
        } else {
            value = bias ? multiply_add<Fused>(scores[j], scale, bias[j]) : scores[j] * scale;
        }
        scores[j] = value;
        max_value = max_value > value ? max_value : value;
    }
    double lanes[kDotLanes] = {};
    for (std::int64_t j = 0; j < count; ++j) {
        const float e = exp_reference<Fused>(scores[j] - max_value);
        scores[j] = e;
        lanes[j % kDotLanes] += static_cast<double>(e);
    }
    const float inverse_sum = static_cast<float>(1.0 / reduce_double_lanes16(lanes));
    for (std::int64_t j = 0; j < count; ++j) scores[j] *= inverse_sum;
}

template <bool Fused>
inline void weighted_sum_reference(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                   const float* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                   std::int64_t out_stride) {
    for (int i = 0; i < rows; ++i)
        for (std::int64_t d = 0; d < dim; ++d) {
            float sum = 0.0f;
            for (std::int64_t j = 0; j < count; ++j) sum = multiply_add<Fused>(p[i * p_stride + j], v[j * v_stride + d], sum);
            out[i * out_stride + d] = sum;
        }
}

// Widened keys per accumulate_lanes call of scores_bf16_reference: a multiple of kDotLanes,
// so that element d still goes to lane d % kDotLanes.
inline constexpr std::int64_t kWidenChunk = 256;
static_assert(kWidenChunk % kDotLanes == 0, "chunks must start on a lane boundary");

template <bool Fused>
inline void scores_bf16_reference(const float* query, std::int64_t query_stride, int rows, const std::uint16_t* keys,
                                  std::int64_t key_stride, std::int64_t count, std::int64_t dim, float* scores,
                                  std::int64_t scores_stride) {
    float widened[kWidenChunk];
    for (int i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < count; ++j) {
            float lanes[kDotLanes] = {};
            for (std::int64_t d = 0; d < dim; d += kWidenChunk) {
                const std::int64_t n = std::min(kWidenChunk, dim - d);
                for (std::int64_t k = 0; k < n; ++k) widened[k] = quant::bf16_to_fp32(keys[j * key_stride + d + k]);
                accumulate_lanes<Fused>(query + i * query_stride + d, widened, n, lanes);
            }
            scores[i * scores_stride + j] = reduce_lanes16(lanes);
        }
}

template <bool Fused>
inline void weighted_sum_bf16_reference(const float* p, std::int64_t p_stride, int rows, std::int64_t count,
                                        const std::uint16_t* v, std::int64_t v_stride, std::int64_t dim, float* out,
                                        std::int64_t out_stride) {
    for (int i = 0; i < rows; ++i)
        for (std::int64_t d = 0; d < dim; ++d) {
            float sum = 0.0f;
            for (std::int64_t j = 0; j < count; ++j)
                sum = multiply_add<Fused>(p[i * p_stride + j], quant::bf16_to_fp32(v[j * v_stride + d]), sum);
            out[i * out_stride + d] = sum;
        }
}

template <bool Fused>
inline void install_attention_references(F32KernelTable& table) {
    table.scores_bf16 = scores_bf16_reference<Fused>;
    table.weighted_sum_bf16 = weighted_sum_bf16_reference<Fused>;
    table.scores = scores_reference<Fused>;
    table.transposed_scores = transposed_scores_reference<Fused>;
    table.softmax = softmax_row_reference<Fused>;
    table.weighted_sum = weighted_sum_reference<Fused>;
}

// Computes DotRows with the tiles of a level compiled for the baseline architecture: Cols
// outputs per tile, then one at a time. The x86 levels have their own copy with their target attribute,
// which lets the compiler inline their tiles.
template <class Tiles, int Rows, int Cols>
void dot_rows_baseline(TileOperand x, TileOperand w, std::int64_t count, std::int64_t outputs, float* y,
                       std::int64_t y_stride) {
    std::int64_t o = 0;
    for (; o + Cols <= outputs; o += Cols)
        Tiles::template tile<Rows, Cols>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o,
                                         y_stride);
    for (; o < outputs; ++o)
        Tiles::template tile<Rows, 1>(x, {w.data + o * w.row_stride, w.row_stride, w.block_stride}, count, y + o,
                                      y_stride);
}

// ----- scalar level ---------------------------------------------------------------------------

struct ScalarTiles {
    template <int Rows, int Cols>
    static void rows(TileOperand x, TileOperand w, std::int64_t count, std::int64_t outputs, float* y,
                     std::int64_t y_stride) {
        dot_rows_baseline<ScalarTiles, Rows, Cols>(x, w, count, outputs, y, y_stride);
    }

    template <int Rows, int Cols>
    static void tile(TileOperand x, TileOperand w, std::int64_t count, float* y, std::int64_t y_stride) {
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) {
                float lanes[kDotLanes] = {};
                for (std::int64_t k = 0, block = 0; k < count; k += kDotLanes, ++block)
                    accumulate_lanes<false>(x.data + r * x.row_stride + block * x.block_stride,
                                            w.data + c * w.row_stride + block * w.block_stride,
                                            std::min<std::int64_t>(kDotLanes, count - k), lanes);
                y[r * y_stride + c] = reduce_lanes16(lanes);
            }
    }
};

inline void install_scalar_f32_kernels(F32KernelTable& table) {
    install_tiles<ScalarTiles, 1, 1>(table);
    table.fused = false;
    table.epilogue = epilogue_reference<false>;
    install_attention_references<false>(table);
}

// ----- portable SIMD level ----------------------------------------------------------------------

#if BLIP_QUANT_HAS_XSIMD

// The 16 lanes of each dot product are 16 / Batch::size batches, computed in separate passes
// over k (one batch of lanes per pass, as the Avx2 level does with its two halves), so that a
// 3 x 3 tile needs 9 of SSE2's 16 registers for accumulators. Products are rounded before the
// addition, as in dot_reference<false>.
struct PortableTiles {
    using Batch = xsimd::batch<float>;
    static constexpr int kWidth = static_cast<int>(Batch::size);
    static constexpr int kGroups = kDotLanes / kWidth;
    static_assert(kDotLanes % kWidth == 0, "the xsimd batch width must divide 16");
    // Elements per k chunk; a 3 x 3 tile's rows of one chunk (6 x 2 KiB) stay in the L1 cache
    // while the passes read their batches.
    static constexpr std::int64_t kChunk = 512;

    // Adds the products of the lanes of batch `group` for `blocks` (at least 1) blocks of 16
    // from block `first_block` on. The accumulators are copied into a local array and the loop
    // visibly runs at least once: otherwise GCC 12 -O3 keeps them in memory.
    template <int Rows, int Cols>
    static void group_pass(TileOperand x, TileOperand w, std::int64_t first_block, std::int64_t blocks, int group,
                           Batch (&acc)[Rows][Cols]) {
        Batch sums[Rows][Cols];
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) sums[r][c] = acc[r][c];
        const float* xp = x.data + first_block * x.block_stride + group * kWidth;
        const float* wp = w.data + first_block * w.block_stride + group * kWidth;
        std::int64_t b = 0;
        do {
            Batch wv[Cols];
            for (int c = 0; c < Cols; ++c) wv[c] = Batch::load_unaligned(wp + c * w.row_stride);
            for (int r = 0; r < Rows; ++r) {
                const Batch xv = Batch::load_unaligned(xp + r * x.row_stride);
                for (int c = 0; c < Cols; ++c) {
                    const Batch product(rounded_product<Batch::register_type>(xv * wv[c]));
                    sums[r][c] = sums[r][c] + product;
                }
            }
            xp += x.block_stride;
            wp += w.block_stride;
        } while (++b < blocks);
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) acc[r][c] = sums[r][c];
    }

    template <int Rows, int Cols>
    static void rows(TileOperand x, TileOperand w, std::int64_t count, std::int64_t outputs, float* y,
                     std::int64_t y_stride) {
        dot_rows_baseline<PortableTiles, Rows, Cols>(x, w, count, outputs, y, y_stride);
    }

    template <int Rows, int Cols>
    static void tile(TileOperand x, TileOperand w, std::int64_t count, float* y, std::int64_t y_stride) {
        Batch acc[kGroups][Rows][Cols];
        for (auto& group : acc)
            for (auto& row : group)
                for (auto& cell : row) cell = Batch(0.0f);
        const std::int64_t whole = count / kDotLanes;
        const std::int64_t chunk_blocks = kChunk / kDotLanes;
        for (std::int64_t first = 0; first < whole; first += chunk_blocks) {
            const std::int64_t blocks = std::min(chunk_blocks, whole - first);
            for (int g = 0; g < kGroups; ++g) group_pass<Rows, Cols>(x, w, first, blocks, g, acc[g]);
        }
        if (whole * kDotLanes < count) {
            // The last partial block, zero-padded to 16 elements.
            const std::int64_t left = count - whole * kDotLanes;
            float xpad[Rows][kDotLanes] = {};
            float wpad[Cols][kDotLanes] = {};
            for (int r = 0; r < Rows; ++r)
                std::copy_n(x.data + r * x.row_stride + whole * x.block_stride, left, xpad[r]);
            for (int c = 0; c < Cols; ++c)
                std::copy_n(w.data + c * w.row_stride + whole * w.block_stride, left, wpad[c]);
            const TileOperand xt{&xpad[0][0], kDotLanes, 0};
            const TileOperand wt{&wpad[0][0], kDotLanes, 0};
            for (int g = 0; g < kGroups; ++g) group_pass<Rows, Cols>(xt, wt, 0, 1, g, acc[g]);
        }
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols; ++c) {
                float lanes[kDotLanes];
                for (int g = 0; g < kGroups; ++g) acc[g][r][c].store_unaligned(lanes + g * kWidth);
                y[r * y_stride + c] = reduce_lanes16(lanes);
            }
    }
};

inline void install_portable_f32_kernels(F32KernelTable& table) {
    install_tiles<PortableTiles, 3, 3>(table);
    table.fused = false;
    table.epilogue = epilogue_reference<false>;
}

#else

inline void install_portable_f32_kernels(F32KernelTable&) {}

#endif

}  // namespace blip::kernels::detail
