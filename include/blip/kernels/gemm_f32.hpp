// f32 matrix product y = x W^T with a fused epilogue (bias, GELU, residual): the kernel behind
// every f32 nn.Linear of the model.
//
// Two summation orders. By default every output is one dot product over the whole row, summed
// in the fixed 16-lane order of simd_math.hpp and computed by one register tile. Cache blocks,
// threads and the number of rows in the call only decide which tile computes an output, never
// how. So each output is bit-identical for any thread count and any number of rows in the call
// (one row for greedy decoding, three for beams, eight for a batch). Callers that need no such
// row independence (RowOrder::Fastest: the vision encoder's 577 rows) get the chain order of
// BLAS kernels for products of many rows, each output one multiply-add chain over k, which
// the FMA levels compute faster. Either order is independent of the thread count. Results
// differ between the arithmetic families (FMA levels versus portable levels), not between
// levels of one family.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/kernels/gemm_f32_kernels.hpp"
#include "blip/quant/cpu.hpp"
#include "blip/quant/quantize.hpp"
#if BLIP_QUANT_X86
#include "blip/kernels/gemm_f32_avx2.hpp"
#include "blip/kernels/gemm_f32_avx512.hpp"
#endif

namespace blip::kernels {

// Elementwise steps of a linear layer after the dot product, applied to each output in order:
// value = dot + bias[o]; value = gelu(value); y = residual[r * residual_stride + o] + value.
// Null pointers and gelu = false skip a step. `residual` may be the output itself.
struct Epilogue {
    const float* bias = nullptr;
    bool gelu = false;
    const float* residual = nullptr;
    std::int64_t residual_stride = 0;
};

// Whether a product may round a row differently depending on the other rows of the call.
enum class RowOrder {
    // Products of many rows may sum in chain order (see ChainTile), faster, and round
    // differently from a product of the same row alone.
    Fastest,
    // Rows decoded together must give the bits each gives alone (batched decoding, beams):
    // every output is summed in the 16-lane dot-product order whatever the row count.
    BatchInvariant,
};

namespace detail {

// Bytes of W in one cache block, which stays in the L2 cache while every row of x passes over
// it: a quarter of the 1 MiB L2 of Zen 4 and recent Intel server cores. (Older Intel client
// cores have 256 KiB, so blocks partly spill to L3 there.)
inline constexpr std::int64_t kGemmWeightBlockBytes = 256 * 1024;
// Most W rows (output features) in a block, which sizes the epilogue buffer on the stack.
inline constexpr std::int64_t kGemmMaxBlockCols = 256;
// Rows of x per task, at most. Tasks split the rows evenly, in multiples of the tile height.
inline constexpr std::int64_t kGemmMaxRowChunk = 192;
// Products with fewer rows than this (decoding steps: one row per sequence or beam, a batch of
// images) read W in place. Each thread takes one contiguous range of W rows, with one DotRows
// call per block and row tile. Measured on an Intel Xeon (AVX-512, 2 cores, 2 threads) over
// the base decoder's 492 MB of f32 weights with 1 row of x: 34 GB/s, more than a plain
// streaming read of a larger buffer (31 GB/s). One kernel call per tile, with blocks handed
// out in turn, read 22 GB/s, and 1 W row per tile instead of 5 read 30 GB/s. With 8 to 31 rows
// the blocked path below took 20 to 35% longer.
inline constexpr std::int64_t kGemmStreamRows = 32;
// Work units (threads_for_work counts one per multiply-add of compute-bound code) per weight of
// a streaming product. Such a product waits on memory: a 768 x 768 f32 matrix takes about
// 0.1 ms to read, far longer than its 0.6 M multiply-adds suggest, so two threads pay off.
inline constexpr std::int64_t kStreamWorkPerWeight = 16;
// Products with more rows and rows of at least kGemmPackLength elements first copy W into
// packed panels, once per call (see TileOperand). A packed panel is one sequential stream
// instead of one per W row, and it avoids the L1 set conflicts of rows whose stride is a
// multiple of 4 KiB (1024, 3072 or 4096 floats). Measured with 577 rows on AVX-512 (Zen 4):
// packing gains 10 to 25% for 1024 to 4096 elements and loses about 8% for 768. Packing and
// tile shapes move data without changing any arithmetic.
inline constexpr std::int64_t kGemmPackLength = 1024;

inline F32KernelTable make_f32_kernel_table(quant::CpuLevel level) {
    F32KernelTable table;
    install_scalar_f32_kernels(table);
    const int rank = static_cast<int>(level);
    if (rank >= static_cast<int>(quant::CpuLevel::Baseline)) install_portable_f32_kernels(table);
#if BLIP_QUANT_X86
    if (rank >= static_cast<int>(quant::CpuLevel::Avx2)) avx2::install(table);
    if (rank >= static_cast<int>(quant::CpuLevel::Avx512)) avx512::install(table);
#endif
    table.level = level;
    return table;
}

inline const F32KernelTable& f32_kernels_for_level(quant::CpuLevel level) {
    static const F32KernelTable tables[] = {
        make_f32_kernel_table(quant::CpuLevel::Scalar), make_f32_kernel_table(quant::CpuLevel::Baseline),
        make_f32_kernel_table(quant::CpuLevel::Sse42),  make_f32_kernel_table(quant::CpuLevel::Avx2),
        make_f32_kernel_table(quant::CpuLevel::Avx512), make_f32_kernel_table(quant::CpuLevel::Avx512Vnni),
    };
    return tables[static_cast<int>(level)];
}

// Starts the OpenMP worker threads (num_threads() of them) with an empty parallel loop.
// libgomp allocates a team when it first starts one, so doing it here, once, keeps that
// allocation out of a decoding loop whose first products would otherwise start the team.
inline void start_worker_threads() {
    parallel_for(num_threads(), [](std::int64_t, int) {});
}

// The kernels of quant::active_cpu_level() (the detected level, or lower with BLIP_CPU). The
// first call also starts the worker threads.
inline const F32KernelTable& active_f32_kernels() {
    static const F32KernelTable& table = [] () -> const F32KernelTable& {
        start_worker_threads();
        return f32_kernels_for_level(quant::active_cpu_level());
    }();
    return table;
}

// Widens `count` 16-bit floats (f16 or bf16) to f32, exactly.
using WidenHalves = void (*)(const std::uint16_t* halves, std::int64_t count, float* out);

struct GemmProblem {
    const float* x;
    std::int64_t rows;
    std::int64_t x_stride;
    const float* w;
    std::int64_t out_features;
    std::int64_t in_features;
    float* y;
    std::int64_t y_stride;
    const blip::kernels::Epilogue* epilogue;
    // W stored as 16-bit floats (`w` is then null), for the chain order only: widened while
    // it is packed.
    const std::uint16_t* w_halves = nullptr;
    WidenHalves widen = nullptr;
    // W stored in a block type (`w` is then null), for the chain order only: each row,
    // `w_row_bytes` long, is dequantized to f32 while W is packed.
    const std::uint8_t* w_blocks = nullptr;
    DType w_type = DType::F32;
    std::size_t w_row_bytes = 0;
};

// W rows per cache block: as many tile widths as fit kGemmWeightBlockBytes.
inline std::int64_t gemm_block_cols(const F32KernelTable& k, std::int64_t in_features) {
    const std::int64_t tile = k.tile_cols;
    const std::int64_t fitting = kGemmWeightBlockBytes / (std::max<std::int64_t>(1, in_features) * 4);
    const std::int64_t limit = kGemmMaxBlockCols / tile * tile;
    return std::clamp(fitting / tile * tile, tile, limit);
}

// Returns the first address in `buffer` aligned to 64 bytes (a cache line, one AVX-512 load),
// after growing it to hold `floats` floats from there. Loads that cross cache lines cost two.
inline float* aligned_floats(std::vector<float>& buffer, std::size_t floats) {
    constexpr std::size_t kLineFloats = 16;
    if (buffer.size() < floats + kLineFloats) buffer.resize(floats + kLineFloats);
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    return buffer.data() + (64 - address % 64) % 64 / sizeof(float);
}

// Returns `floats` floats of a per-thread buffer aligned to 64 bytes, one buffer per `Purpose`
// tag type, so that buffers in use at the same time stay apart. Each grows to the largest
// request and is kept for later calls.
template <class Purpose>
inline float* thread_buffer(std::size_t floats) {
    thread_local std::vector<float> buffer;
    return aligned_floats(buffer, floats);
}

// Tag of the calling thread's buffer for the operands a product packs once per call (see
// thread_buffer).
struct PackedOperands;

// Copies `rows` rows of `count` elements (row stride `stride`) into the packed layout of
// TileOperand: block b of row r at out[(b * rows + r) * 16], zero-padded to whole blocks.
inline void pack_rows(const float* source, std::int64_t rows, std::int64_t stride, std::int64_t count, float* out) {
    const std::int64_t blocks = tile_count(count, kDotLanes);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t n = std::min<std::int64_t>(kDotLanes, count - b * kDotLanes);
            float* block = out + (b * rows + r) * kDotLanes;
            const float* from = source + r * stride + b * kDotLanes;
            if (n == kDotLanes) {
                for (int i = 0; i < kDotLanes; ++i) block[i] = from[i];
            } else {
                for (std::int64_t i = 0; i < kDotLanes; ++i) block[i] = i < n ? from[i] : 0.0f;
            }
        }
}

// Computes rows [row_begin, row_end) and columns [col_begin, col_end) of the product,
// epilogue included. `packed_w` is W in packed panels of k.tile_cols rows (see pack_weights),
// or null to read W in place.
inline void gemm_block(const F32KernelTable& k, const GemmProblem& p, const float* packed_w, std::int64_t row_begin,
                       std::int64_t row_end, std::int64_t col_begin, std::int64_t col_end) {
    float dots[kMaxTileRows * kGemmMaxBlockCols];
    const std::int64_t cols = col_end - col_begin;
    const std::int64_t in = p.in_features;
    const std::int64_t padded = tile_count(in, kDotLanes) * kDotLanes;
    const blip::kernels::Epilogue& e = *p.epilogue;
    for (std::int64_t r = row_begin; r < row_end; r += k.tile_rows) {
        const int tr = static_cast<int>(std::min<std::int64_t>(k.tile_rows, row_end - r));
        const TileOperand x{p.x + r * p.x_stride, p.x_stride, kDotLanes};
        for (std::int64_t c = col_begin; c < col_end; c += k.tile_cols) {
            const int tc = static_cast<int>(std::min<std::int64_t>(k.tile_cols, col_end - c));
            TileOperand w{p.w + c * in, in, kDotLanes};
            if (packed_w) w = {packed_w + c * padded, kDotLanes, tc * kDotLanes};
            k.tiles[tr - 1][tc - 1](x, w, in, dots + (c - col_begin), cols);
        }
        for (int i = 0; i < tr; ++i) {
            const std::int64_t row = r + i;
            const float* residual = e.residual ? e.residual + row * e.residual_stride + col_begin : nullptr;
            k.epilogue(dots + i * cols, cols, e.bias ? e.bias + col_begin : nullptr, e.gelu, residual,
                       p.y + row * p.y_stride + col_begin);
        }
    }
}

// Sums a streaming block holds on the stack (8 KiB): its rows times its columns.
inline constexpr std::int64_t kStreamBlockSums = 2048;
static_assert(kStreamBlockSums >= (kGemmStreamRows - 1) * kMaxTileCols, "a streaming block must hold one tile width");

// Computes columns [col_begin, col_end) (at most kStreamBlockSums / rows) of a product of fewer
// than kGemmStreamRows rows, epilogue included, reading W in place: one DotRows call per row
// tile.
inline void gemm_stream_block(const F32KernelTable& k, const GemmProblem& p, std::int64_t col_begin,
                              std::int64_t col_end) {
    float dots[kStreamBlockSums];
    const std::int64_t cols = col_end - col_begin;
    const std::int64_t in = p.in_features;
    for (std::int64_t r = 0; r < p.rows; r += k.tile_rows) {
        const int tr = static_cast<int>(std::min<std::int64_t>(k.tile_rows, p.rows - r));
        k.rows[tr - 1]({p.x + r * p.x_stride, p.x_stride, kDotLanes}, {p.w + col_begin * in, in, kDotLanes}, in, cols,
                       dots + r * cols, cols);
    }
    const blip::kernels::Epilogue& e = *p.epilogue;
    for (std::int64_t row = 0; row < p.rows; ++row) {
        const float* residual = e.residual ? e.residual + row * e.residual_stride + col_begin : nullptr;
        k.epilogue(dots + row * cols, cols, e.bias ? e.bias + col_begin : nullptr, e.gelu, residual,
                   p.y + row * p.y_stride + col_begin);
    }
}

// Computes a product of fewer than kGemmStreamRows rows, a memory-bound stream over W: each
// thread takes one contiguous range of W rows, as even as whole tiles allow, so that the
// threads finish together and each reads one sequential stream.
inline void gemm_stream(const F32KernelTable& k, const GemmProblem& p, int threads) {
    // With more rows than one tile, W passes once per row tile, so a block stays small enough
    // to be read again from the L2 cache.
    const std::int64_t cache_block =
        p.rows <= k.tile_rows ? kGemmMaxBlockCols / k.tile_cols * k.tile_cols : gemm_block_cols(k, p.in_features);
    const std::int64_t block = std::min(cache_block, kStreamBlockSums / p.rows / k.tile_cols * k.tile_cols);
    const std::int64_t tiles = tile_count(p.out_features, k.tile_cols);
    parallel_for(
        threads,
        [&](std::int64_t t, int) {
            const std::int64_t begin = std::min(p.out_features, tiles * t / threads * k.tile_cols);
            const std::int64_t end = std::min(p.out_features, tiles * (t + 1) / threads * k.tile_cols);
            for (std::int64_t c = begin; c < end; c += block) gemm_stream_block(k, p, c, std::min(end, c + block));
        },
        threads);
}

// Copies all of W into packed panels of k.tile_cols rows, panel c / k.tile_cols at
// out + c * padded, with `threads` threads.
inline void pack_weights(const F32KernelTable& k, const GemmProblem& p, float* out, int threads) {
    const std::int64_t in = p.in_features;
    const std::int64_t padded = tile_count(in, kDotLanes) * kDotLanes;
    parallel_for(
        tile_count(p.out_features, k.tile_cols),
        [&](std::int64_t panel, int) {
            const std::int64_t c = panel * k.tile_cols;
            pack_rows(p.w + c * in, std::min<std::int64_t>(k.tile_cols, p.out_features - c), in, in, out + c * padded);
        },
        threads);
}

// ----- chain order ------------------------------------------------------------------------------

// Products with at least this many rows use the chain-order tiles when the caller allows
// (RowOrder::Fastest) and the level has them.
inline constexpr std::int64_t kChainMinRows = 32;
// Values of k per pass over the outputs of a task: the W panel of one tile column (256 x 32
// floats on AVX-512, 32 KiB) stays in the L1 cache while every x panel of the task uses it.
inline constexpr std::int64_t kChainDepth = 256;
// Outputs per task, a multiple of every level's chain_cols. Their packed W rows (384 KiB for
// 768 values of k) stay in the L2 cache while the task passes over all rows.
inline constexpr std::int64_t kChainBlockCols = 128;
// Rows whose sums a task keeps at a time; a multiple of every level's chain_rows.
inline constexpr std::int64_t kChainMaxRowChunk = 96;

// Tags of the per-thread buffers of the chain path (see thread_buffer).
struct ChainSums;      // the sums of one task's rows
struct ChainWBlock;    // the packed W rows of one task
struct ChainWidened;   // 16-bit or block-type W rows converted to f32 before packing

// Packs outputs [c, c + rows) of W over k in [k0, k0 + depth) into the panel at `out`
// (chain_cols outputs wide, see ChainPack).
inline void pack_chain_w(const F32KernelTable& k, const GemmProblem& p, std::int64_t c, std::int64_t rows,
                         std::int64_t k0, std::int64_t depth, float* out) {
    const std::int64_t in = p.in_features;
    if (p.w_blocks != nullptr) {
        float* dequantized = thread_buffer<ChainWidened>(static_cast<std::size_t>(rows * in));
        for (std::int64_t r = 0; r < rows; ++r)
            quant::dequantize_row(p.w_type, p.w_blocks + static_cast<std::size_t>(c + r) * p.w_row_bytes,
                                  dequantized + r * in, in);
        k.chain_pack(dequantized + k0, rows, in, depth, k.chain_cols, out);
        return;
    }
    if (p.w_halves == nullptr) {
        k.chain_pack(p.w + c * in + k0, rows, in, depth, k.chain_cols, out);
        return;
    }
    float* widened = thread_buffer<ChainWidened>(static_cast<std::size_t>(rows * depth));
    for (std::int64_t r = 0; r < rows; ++r) p.widen(p.w_halves + (c + r) * in + k0, depth, widened + r * depth);
    k.chain_pack(widened, rows, depth, depth, k.chain_cols, out);
}

// Computes the product in chain order. x is packed once per call into the calling thread's
// buffer. Then each task takes kChainBlockCols outputs and packs their W rows into a
// per-thread buffer that stays in the L2 cache, so that W is read from memory once. It sums
// every row's outputs over k blocks of kChainDepth before the epilogue. Every output is one
// chain over k whatever the split, so results do not depend on the thread count.
inline void gemm_f32_chain(const F32KernelTable& k, const GemmProblem& p, int threads) {
    const int mr = k.chain_rows;
    const int nr = k.chain_cols;
    const std::int64_t in = p.in_features;
    const std::int64_t x_panels = tile_count(p.rows, mr);
    float* packed_x = thread_buffer<PackedOperands>(static_cast<std::size_t>(x_panels * mr * in));
    parallel_for(
        x_panels,
        [&](std::int64_t panel, int) {
            const std::int64_t r = panel * mr;
            k.chain_pack(p.x + r * p.x_stride, std::min<std::int64_t>(mr, p.rows - r), p.x_stride, in, mr,
                         packed_x + r * in);
        },
        threads);

    const blip::kernels::Epilogue& e = *p.epilogue;
    parallel_for(
        tile_count(p.out_features, kChainBlockCols),
        [&](std::int64_t block, int) {
            const std::int64_t col_begin = block * kChainBlockCols;
            const std::int64_t cols = std::min(p.out_features, col_begin + kChainBlockCols) - col_begin;
            const std::int64_t sums_stride = tile_count(cols, nr) * nr;
            float* packed_w = thread_buffer<ChainWBlock>(static_cast<std::size_t>(sums_stride * in));
            for (std::int64_t c = 0; c < cols; c += nr)
                pack_chain_w(k, p, col_begin + c, std::min<std::int64_t>(nr, cols - c), 0, in, packed_w + c * in);
            for (std::int64_t row_begin = 0; row_begin < p.rows; row_begin += kChainMaxRowChunk) {
                const std::int64_t row_end = std::min(p.rows, row_begin + kChainMaxRowChunk);
                float* sums = thread_buffer<ChainSums>(static_cast<std::size_t>(kChainMaxRowChunk * sums_stride));
                for (std::int64_t k0 = 0; k0 < in; k0 += kChainDepth) {
                    const std::int64_t depth = std::min(kChainDepth, in - k0);
                    for (std::int64_t c = 0; c < cols; c += nr) {
                        const float* w_panel = packed_w + c * in + k0 * nr;
                        for (std::int64_t r = row_begin; r < row_end; r += mr) {
                            const int tile_rows = static_cast<int>(std::min<std::int64_t>(mr, row_end - r));
                            k.chain[tile_rows - 1](packed_x + r * in + k0 * mr, w_panel, depth,
                                                   sums + (r - row_begin) * sums_stride + c, sums_stride, k0 > 0);
                        }
                    }
                }
                for (std::int64_t row = row_begin; row < row_end; ++row) {
                    const float* residual = e.residual ? e.residual + row * e.residual_stride + col_begin : nullptr;
                    k.epilogue(sums + (row - row_begin) * sums_stride, cols, e.bias ? e.bias + col_begin : nullptr,
                               e.gelu, residual, p.y + row * p.y_stride + col_begin);
                }
            }
        },
        threads);
}

inline void gemm_f32_with(const F32KernelTable& k, const float* x, std::int64_t rows, std::int64_t x_stride,
                          const float* w, std::int64_t out_features, std::int64_t in_features, float* y,
                          std::int64_t y_stride, const blip::kernels::Epilogue& epilogue, RowOrder order) {
    if (rows <= 0 || out_features <= 0) return;
    const GemmProblem problem{x, rows, x_stride, w, out_features, in_features, y, y_stride, &epilogue};
    if (order == RowOrder::Fastest && k.chain_rows > 0 && rows >= kChainMinRows && in_features > 0) {
        gemm_f32_chain(k, problem, threads_for_work(rows * out_features * in_features));
        return;
    }
    const std::int64_t weights = out_features * std::max<std::int64_t>(1, in_features);
    if (rows < kGemmStreamRows) {
        gemm_stream(k, problem, threads_for_work(kStreamWorkPerWeight * weights));
        return;
    }
    const std::int64_t block_cols = gemm_block_cols(k, in_features);
    const std::int64_t col_blocks = tile_count(out_features, block_cols);
    const std::int64_t row_chunks = tile_count(rows, kGemmMaxRowChunk);
    const std::int64_t chunk_rows = tile_count(tile_count(rows, row_chunks), k.tile_rows) * k.tile_rows;
    const int threads = threads_for_work(rows * weights);

    // W is packed once per call, into the calling thread's buffer, which the workers then read.
    float* packed_w = nullptr;
    if (in_features >= kGemmPackLength) {
        const std::int64_t padded = tile_count(in_features, kDotLanes) * kDotLanes;
        const std::int64_t panel_rows = tile_count(out_features, k.tile_cols) * k.tile_cols;
        packed_w = thread_buffer<PackedOperands>(static_cast<std::size_t>(panel_rows * padded));
        pack_weights(k, problem, packed_w, threads);
    }

    // Task t covers column block t / row_chunks and row chunk t % row_chunks, so that each
    // thread of the static schedule reads its own part of W.
    parallel_for(
        col_blocks * row_chunks,
        [&](std::int64_t task, int) {
            const std::int64_t col_begin = task / row_chunks * block_cols;
            const std::int64_t row_begin = task % row_chunks * chunk_rows;
            gemm_block(k, problem, packed_w, row_begin, std::min(rows, row_begin + chunk_rows), col_begin,
                       std::min(out_features, col_begin + block_cols));
        },
        threads);
}

}  // namespace detail

// y[r * y_stride + o] = epilogue(sum_i x[r * x_stride + i] * w[o * in_features + i]) for
// r < rows and o < out_features: f32, W row-major [out_features, in_features]. `y` must not
// overlap `x`; the epilogue's residual may equal `y`. `order` selects whether the sums
// may depend on the number of rows (see RowOrder). Uses the kernels of quant::active_cpu_level().
inline void gemm_f32(const float* x, std::int64_t rows, std::int64_t x_stride, const float* w,
                     std::int64_t out_features, std::int64_t in_features, float* y, std::int64_t y_stride,
                     const Epilogue& epilogue = {}, RowOrder order = RowOrder::BatchInvariant) {
    detail::gemm_f32_with(detail::active_f32_kernels(), x, rows, x_stride, w, out_features, in_features, y, y_stride,
                          epilogue, order);
}

// Whether gemm_f32_halves() can compute a product of `rows` rows with the active level.
inline bool gemm_f32_halves_supported(std::int64_t rows, std::int64_t in_features) {
    return detail::active_f32_kernels().chain_rows > 0 && rows >= detail::kChainMinRows && in_features > 0;
}

// gemm_f32() in chain order (RowOrder::Fastest) for W stored as 16-bit floats, which `widen`
// turns into f32 while W is packed. So the result equals gemm_f32() of the widened W. Needs
// gemm_f32_halves_supported(rows, in_features).
inline void gemm_f32_halves(const float* x, std::int64_t rows, std::int64_t x_stride, const std::uint16_t* w,
                            detail::WidenHalves widen, std::int64_t out_features, std::int64_t in_features, float* y,
                            std::int64_t y_stride, const Epilogue& epilogue = {}) {
    if (!gemm_f32_halves_supported(rows, in_features))
        throw Error("gemm_f32_halves: the active CPU level has no chain-order kernels for " + std::to_string(rows) +
                    " rows of " + std::to_string(in_features) + " elements");
    if (out_features <= 0) return;
    detail::GemmProblem problem{x, rows, x_stride, nullptr, out_features, in_features, y, y_stride, &epilogue};
    problem.w_halves = w;
    problem.widen = widen;
    detail::gemm_f32_chain(detail::active_f32_kernels(), problem,
                           threads_for_work(rows * out_features * in_features));
}

// Computes gemm_f32() in chain order (RowOrder::Fastest) for W stored in a block type (q8_0, q4_0,
// q4_1, q4_k, q5_k, q6_k), each row dequantized to f32 as quant::dequantize_row does while W is
// packed. So the result equals gemm_f32() of the dequantized W. Needs
// gemm_f32_halves_supported(rows, in_features).
inline void gemm_f32_dequantized(const float* x, std::int64_t rows, std::int64_t x_stride, const void* w, DType type,
                                 std::int64_t out_features, std::int64_t in_features, float* y, std::int64_t y_stride,
                                 const Epilogue& epilogue = {}) {
    if (!gemm_f32_halves_supported(rows, in_features))
        throw Error("gemm_f32_dequantized: the active CPU level has no chain-order kernels for " +
                    std::to_string(rows) + " rows of " + std::to_string(in_features) + " elements");
    if (out_features <= 0) return;
    detail::GemmProblem problem{x, rows, x_stride, nullptr, out_features, in_features, y, y_stride, &epilogue};
    problem.w_blocks = static_cast<const std::uint8_t*>(w);
    problem.w_type = type;
    problem.w_row_bytes = quant::row_bytes(type, in_features);
    detail::gemm_f32_chain(detail::active_f32_kernels(), problem,
                           threads_for_work(rows * out_features * in_features));
}

// gemm_f32() with the kernels of `level`, for tests and benchmarks. Throws blip::Error when
// this CPU or build lacks that level.
inline void gemm_f32_at_level(quant::CpuLevel level, const float* x, std::int64_t rows, std::int64_t x_stride,
                              const float* w, std::int64_t out_features, std::int64_t in_features, float* y,
                              std::int64_t y_stride, const Epilogue& epilogue = {},
                              RowOrder order = RowOrder::BatchInvariant) {
    if (!quant::cpu_level_available(level))
        throw Error("gemm_f32_at_level: this CPU or build lacks kernel level " +
                    std::string(quant::cpu_level_name(level)) + "; the highest is " +
                    std::string(quant::cpu_level_name(quant::max_cpu_level())));
    detail::gemm_f32_with(detail::f32_kernels_for_level(level), x, rows, x_stride, w, out_features, in_features, y,
                          y_stride, epilogue, order);
}

// Whether `level` rounds each multiply-add once (FMA levels) or twice (portable levels).
inline bool f32_level_is_fused(quant::CpuLevel level) { return detail::f32_kernels_for_level(level).fused; }

}  // namespace blip::kernels
