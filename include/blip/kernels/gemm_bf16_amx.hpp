// bf16 matrix products on Intel AMX (the tile unit of Sapphire Rapids and later Xeons): x in
// f32, rounded to bf16, times W stored as bf16, summed in f32, with the linear epilogue. It
// serves the products of many rows with bf16 weights where the caller accepts another rounding
// (RowOrder::Fastest: the vision encoder of a bf16 file).
//
// Operands, as TDPBF16PS reads them. An A tile is 16 rows of 32 bf16 values of x (row-major).
// A B tile has one row per pair of consecutive k, and in it the pair (W[o][2i], W[o][2i + 1])
// of each of 16 outputs. A C tile is 16 x 16 f32 sums. A task covers 32 rows and up to
// kAmxBlockCols outputs with 2 x 2 C tiles per 32 outputs.
//
// Rounding: x is rounded to bf16 (nearest even), the products are exact, and the tile unit
// adds the 32 products of one instruction to the sums in an order and precision that Intel's
// manual does not specify, so tests compare with a double-precision product of the rounded
// operands within a tolerance. Each output comes from the same instruction sequence whatever
// the thread count, so results do not depend on it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/kernels/gemm_f32.hpp"
#include "blip/quant/amx_tiles.hpp"
#include "blip/quant/cpu.hpp"

#if BLIP_QUANT_X86
#include <immintrin.h>
#endif

namespace blip::kernels {

namespace detail {

// Rows, k values and outputs of one tile product step.
inline constexpr std::int64_t kAmxRows = 32;
inline constexpr std::int64_t kAmxDepth = 32;
inline constexpr std::int64_t kAmxCols = 32;
// Outputs per task, a multiple of kAmxCols.
inline constexpr std::int64_t kAmxBlockCols = 128;

}  // namespace detail

// Whether this process can use AMX bf16 tiles: the CPU has them, the tile state is granted, and
// quant::set_amx_allowed(false) was not called.
inline bool amx_usable() {
    return quant::amx_allowed() && quant::cpu_features().amx_bf16 && quant::amx_tile_state_granted();
}

// Whether gemm_bf16_amx() runs a product of `rows` rows of `in_features` elements: AMX is
// usable, the active level is the highest (BLIP_CPU set to a lower level turns AMX off), and
// the shape suits the tiles.
inline bool gemm_bf16_amx_supported(std::int64_t rows, std::int64_t in_features) {
    return rows >= detail::kChainMinRows && in_features > 0 && in_features % detail::kAmxDepth == 0 &&
           quant::active_cpu_level() == quant::CpuLevel::Avx512Vnni && amx_usable();
}

#if BLIP_QUANT_X86

namespace detail::amx {

#define BLIP_AMX_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

// Tiles 0-3 hold the 2 x 2 C tiles, 4-5 the A tiles, 6-7 the B tiles: 16 rows of 64 bytes each.
BLIP_AMX_TARGET inline void configure_tiles() {
    quant::detail::AmxTileConfig config;
    for (int tile = 0; tile < 8; ++tile) {
        config.rows[tile] = 16;
        config.bytes_per_row[tile] = 64;
    }
    quant::detail::load_tile_config(config);
}

// Rounds rows [first, first + count) of x to bf16 into `out` (row stride `in`, a multiple of
// 32), zero for rows past `rows`.
BLIP_AMX_TARGET inline void pack_x(const float* x, std::int64_t rows, std::int64_t x_stride, std::int64_t in,
                                   std::int64_t first, std::int64_t count, std::uint16_t* out) {
    for (std::int64_t r = first; r < first + count; ++r) {
        std::uint16_t* row = out + r * in;
        if (r >= rows) {
            std::memset(row, 0, static_cast<std::size_t>(in) * sizeof(std::uint16_t));
            continue;
        }
        const float* from = x + r * x_stride;
        for (std::int64_t k = 0; k < in; k += 32) {
            const __m512 low = _mm512_loadu_ps(from + k);
            const __m512 high = _mm512_loadu_ps(from + k + 16);
            const __m512bh both = _mm512_cvtne2ps_pbh(high, low);
            std::memcpy(row + k, &both, sizeof(both));
        }
    }
}

// Copies outputs [c, c + 16) of W (bf16, `in` values per row, rows past `out_features` zero)
// into one B panel: for each pair i of k, 16 pairs (W[o][2i], W[o][2i + 1]), 64 bytes.
BLIP_AMX_TARGET inline void pack_w_panel(const std::uint16_t* w, std::int64_t out_features, std::int64_t in,
                                         std::int64_t c, std::uint16_t* panel) {
    for (std::int64_t k0 = 0; k0 < in; k0 += kAmxDepth) {
        __m512 v[16];
        for (int i = 0; i < 16; ++i)
            v[i] = c + i < out_features ? _mm512_loadu_ps(w + (c + i) * in + k0) : _mm512_setzero_ps();
        avx512::transpose16(v);  // row j: pair k0 / 2 + j of the 16 outputs
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(panel + (k0 / 2 + j) * 32, v[j]);
    }
}

// Tags of the per-thread buffers (see detail::thread_buffer).
struct AmxSums;            // the sums of one task
struct AmxPackedOperands;  // the packed x and W of one call, on the calling thread

// Computes the sums of rows [r0, r0 + 32) and outputs [c0, c1) into `sums` (row stride
// kAmxBlockCols), configuring the tiles of the calling thread and releasing them at the end.
BLIP_AMX_TARGET inline void tile_block(const std::uint16_t* x, std::int64_t in, const std::uint16_t* w,
                                       std::int64_t r0, std::int64_t c0, std::int64_t c1, float* sums) {
    configure_tiles();
    const std::int64_t panel_halves = in * 16;  // one B panel: in / 2 pairs of 16 outputs
    const std::int64_t x_bytes = in * 2;
    for (std::int64_t c = c0; c < c1; c += kAmxCols) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const std::uint16_t* b0 = w + c / 16 * panel_halves;
        const std::uint16_t* b1 = b0 + panel_halves;
        for (std::int64_t k = 0; k < in; k += kAmxDepth) {
            _tile_loadd(4, x + r0 * in + k, x_bytes);
            _tile_loadd(5, x + (r0 + 16) * in + k, x_bytes);
            _tile_loadd(6, b0 + k * 16, 64);
            _tile_loadd(7, b1 + k * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        float* out = sums + (c - c0);
        const std::int64_t stride = kAmxBlockCols * 4;
        _tile_stored(0, out, stride);
        _tile_stored(1, out + 16, stride);
        _tile_stored(2, out + 16 * kAmxBlockCols, stride);
        _tile_stored(3, out + 16 * kAmxBlockCols + 16, stride);
    }
    _tile_release();
}

inline void gemm(const F32KernelTable& k, const float* x, std::int64_t rows, std::int64_t x_stride,
                 const std::uint16_t* w, std::int64_t out_features, std::int64_t in, float* y, std::int64_t y_stride,
                 const Epilogue& e, int threads) {
    const std::int64_t row_blocks = tile_count(rows, kAmxRows);
    const std::int64_t panels = tile_count(out_features, kAmxCols) * 2;
    const auto halves = static_cast<std::size_t>(row_blocks * kAmxRows * in + panels * in * 16);
    auto* packed_x = reinterpret_cast<std::uint16_t*>(thread_buffer<AmxPackedOperands>((halves + 1) / 2));
    std::uint16_t* packed_w = packed_x + row_blocks * kAmxRows * in;
    parallel_for(
        row_blocks + panels,
        [&](std::int64_t piece, int) {
            if (piece < row_blocks)
                pack_x(x, rows, x_stride, in, piece * kAmxRows, kAmxRows, packed_x);
            else
                pack_w_panel(w, out_features, in, (piece - row_blocks) * 16,
                             packed_w + (piece - row_blocks) * in * 16);
        },
        threads);

    const std::int64_t col_blocks = tile_count(out_features, kAmxBlockCols);
    parallel_for(
        row_blocks * col_blocks,
        [&](std::int64_t task, int) {
            const std::int64_t r0 = task % row_blocks * kAmxRows;
            const std::int64_t c0 = task / row_blocks * kAmxBlockCols;
            const std::int64_t c1 = std::min(c0 + kAmxBlockCols, tile_count(out_features, kAmxCols) * kAmxCols);
            float* sums = thread_buffer<AmxSums>(static_cast<std::size_t>(kAmxRows * kAmxBlockCols));
            tile_block(packed_x, in, packed_w, r0, c0, c1, sums);
            const std::int64_t cols = std::min(out_features, c0 + kAmxBlockCols) - c0;
            for (std::int64_t row = r0; row < std::min(rows, r0 + kAmxRows); ++row) {
                const float* residual = e.residual ? e.residual + row * e.residual_stride + c0 : nullptr;
                k.epilogue(sums + (row - r0) * kAmxBlockCols, cols, e.bias ? e.bias + c0 : nullptr, e.gelu, residual,
                           y + row * y_stride + c0);
            }
        },
        threads);
}

#undef BLIP_AMX_TARGET

}  // namespace detail::amx

#endif

// y[r * y_stride + o] = epilogue(sum over i of bf16(x[r * x_stride + i]) * w[o * in_features + i])
// for W stored as bf16, on AMX tiles. Needs gemm_bf16_amx_supported(rows, in_features). `y`
// must not overlap `x`; the epilogue's residual may equal `y`.
inline void gemm_bf16_amx(const float* x, std::int64_t rows, std::int64_t x_stride, const std::uint16_t* w,
                          std::int64_t out_features, std::int64_t in_features, float* y, std::int64_t y_stride,
                          const Epilogue& epilogue = {}) {
    if (!gemm_bf16_amx_supported(rows, in_features))
        throw Error("gemm_bf16_amx: AMX tiles are not usable here for " + std::to_string(rows) + " rows of " +
                    std::to_string(in_features) + " elements (needs AMX-BF16, at least " +
                    std::to_string(detail::kChainMinRows) + " rows and a multiple of " +
                    std::to_string(detail::kAmxDepth) + " elements)");
#if BLIP_QUANT_X86
    if (out_features <= 0) return;
    detail::amx::gemm(detail::active_f32_kernels(), x, rows, x_stride, w, out_features, in_features, y, y_stride,
                      epilogue, threads_for_work(rows * out_features * in_features / 8));
#else
    (void)x, (void)x_stride, (void)w, (void)out_features, (void)y, (void)y_stride, (void)epilogue;
#endif
}

}  // namespace blip::kernels
