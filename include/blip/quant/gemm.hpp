// Matrix product of f32 activations with weights stored in f32, f16, bf16 or a ggml block format:
// the entry point for the model's linear layers.
//
// Integer types (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K) quantize the activations to 8 bits and
// accumulate exact integer block dot products. The activation blocks have 32 elements for the
// first three types and 256 for the k-quants, like ggml's q8_0 and q8_K. f32, f16 and bf16
// weights are widened to f32 and multiplied with the f32 activations.
//
// Work is split across at most blip::num_threads() threads by tiles of kTileRows output features.
// Every output value is computed by one thread with the same operations whatever the thread
// count, so results do not depend on the number of threads. Integer-type results are also bit-identical across CPU
// levels; f32-path results differ between levels only by summation order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/core/parallel.hpp>
#include <blip/quant/blocks.hpp>
#include <blip/quant/cpu.hpp>
#include <blip/quant/dot_baseline.hpp>
#include <blip/quant/dot_scalar.hpp>
#include <blip/quant/gemm_block32_vnni.hpp>
#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>
#include <blip/quant/quantize.hpp>
#if BLIP_QUANT_X86
#include <blip/quant/dot_avx2.hpp>
#include <blip/quant/dot_avx512.hpp>
#include <blip/quant/dot_sse42.hpp>
#endif

namespace blip::quant {

namespace detail {

// Output features per unit of parallel work. Fixed, so the split never depends on thread count.
inline constexpr std::int64_t kTileRows = 16;

inline KernelTable make_kernel_table(CpuLevel level) {
    KernelTable table = scalar_kernels();
    const int rank = static_cast<int>(level);
    if (rank >= static_cast<int>(CpuLevel::Baseline)) install_baseline_kernels(table);
#if BLIP_QUANT_X86
    if (rank >= static_cast<int>(CpuLevel::Sse42)) install_sse42_kernels(table);
    if (rank >= static_cast<int>(CpuLevel::Avx2)) install_avx2_kernels(table);
    if (rank >= static_cast<int>(CpuLevel::Avx512)) install_avx512_kernels(table);
    if (rank >= static_cast<int>(CpuLevel::Avx512Vnni)) install_avx512_vnni_kernels(table);
#endif
    table.level = level;
    return table;
}

inline const KernelTable& kernels_for_level(CpuLevel level) {
    static const KernelTable tables[] = {
        make_kernel_table(CpuLevel::Scalar), make_kernel_table(CpuLevel::Baseline),
        make_kernel_table(CpuLevel::Sse42),  make_kernel_table(CpuLevel::Avx2),
        make_kernel_table(CpuLevel::Avx512), make_kernel_table(CpuLevel::Avx512Vnni),
    };
    return tables[static_cast<int>(level)];
}

enum class WeightFamily { Float, Block32, Super256 };

inline WeightFamily weight_family(DType type) {
    switch (type) {
        case DType::Q8_0:
        case DType::Q4_0:
        case DType::Q4_1: return WeightFamily::Block32;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: return WeightFamily::Super256;
        default: return WeightFamily::Float;
    }
}

// Scratch space of one thread: the decoded weight rows of one tile.
struct TileScratch {
    std::vector<std::uint8_t> q;        // kTileRows rows of 8-bit levels
    std::vector<float> values;          // f16/bf16 rows widened to f32
    std::vector<float> scale;           // Block32: per-block scale; Super256: d
    std::vector<float> min;             // Block32: per-block min; Super256: dmin
    std::vector<std::int16_t> scale16;  // Super256: per-16 scales
    std::vector<std::int16_t> min32;    // Super256: per-32 mins
};

// Quantized activations of all rows.
struct ActivationRows {
    std::vector<std::int8_t> q;
    std::vector<float> d;
    std::vector<float> sum;
    std::vector<std::int16_t> group_sum;
    std::vector<Act32Row> rows32;
    std::vector<Act256Row> rows256;
};

inline void check_gemm_arguments(DType type, const void* weights, std::int64_t out_features,
                                 std::int64_t in_features, const float* x, std::int64_t rows, float* y) {
    if (out_features < 0 || rows < 0) {
        throw Error("quant::gemm: negative size (out_features " + std::to_string(out_features) + ", rows " +
                    std::to_string(rows) + ")");
    }
    row_bytes(type, in_features);  // throws for a non-weight type or a partial block
    if (out_features == 0 || rows == 0) return;
    if (weights == nullptr || x == nullptr || y == nullptr) {
        throw Error("quant::gemm: null weights, activations or output pointer");
    }
    const std::size_t alignment = type == DType::F32 ? 4 : 2;
    if (reinterpret_cast<std::uintptr_t>(weights) % alignment != 0) {
        throw Error("quant::gemm: " + std::string(dtype_name(type)) + " weights at address " +
                    std::to_string(reinterpret_cast<std::uintptr_t>(weights)) + " are not aligned to " +
                    std::to_string(alignment) + " bytes; copy the tensor data to an aligned buffer");
    }
}

// Scratch of the calling thread: decoded weight rows of one tile. Kept between calls, so that
// after a thread's first call with a given row length gemm allocates nothing.
inline TileScratch& thread_tile_scratch() {
    static thread_local TileScratch scratch;
    return scratch;
}

// Quantized activations of the calling thread's current gemm call, kept between calls like
// thread_tile_scratch().
inline ActivationRows& thread_activation_rows() {
    static thread_local ActivationRows rows;
    return rows;
}

inline void prepare_activations(WeightFamily family, std::int64_t in_features,
                                std::int64_t rows, ActivationRows& act) {
    const auto total = static_cast<std::size_t>(rows * in_features);
    act.q.resize(total);
    if (family == WeightFamily::Block32) {
        const std::int64_t blocks = in_features / kActBlock32;
        act.d.resize(static_cast<std::size_t>(rows * blocks));
        act.sum.resize(static_cast<std::size_t>(rows * blocks));
        act.rows32.resize(static_cast<std::size_t>(rows));
        for (std::int64_t r = 0; r < rows; ++r) {
            act.rows32[r] = {act.q.data() + r * in_features, act.d.data() + r * blocks, act.sum.data() + r * blocks};
        }
    } else {
        const std::int64_t blocks = in_features / kActBlock256;
        act.d.resize(static_cast<std::size_t>(rows * blocks));
        act.group_sum.resize(static_cast<std::size_t>(rows * in_features / kActSumGroup));
        act.rows256.resize(static_cast<std::size_t>(rows));
        for (std::int64_t r = 0; r < rows; ++r) {
            act.rows256[r] = {act.q.data() + r * in_features, act.d.data() + r * blocks,
                              act.group_sum.data() + r * (in_features / kActSumGroup)};
        }
    }
}

inline void quantize_activation_row(const KernelTable& k, WeightFamily family, const float* x,
                                    std::int64_t in_features, std::int64_t r, ActivationRows& act) {
    const float* xr = x + r * in_features;
    std::int8_t* q = act.q.data() + r * in_features;
    if (family == WeightFamily::Block32) {
        const std::int64_t blocks = in_features / kActBlock32;
        k.quantize_act32(xr, in_features, q, act.d.data() + r * blocks, act.sum.data() + r * blocks);
    } else {
        const std::int64_t blocks = in_features / kActBlock256;
        k.quantize_act256(xr, in_features, q, act.d.data() + r * blocks,
                          act.group_sum.data() + r * (in_features / kActSumGroup));
    }
}

inline void size_scratch(WeightFamily family, DType type, std::int64_t in_features, TileScratch& s) {
    const auto n = static_cast<std::size_t>(kTileRows * in_features);
    if (family == WeightFamily::Float) {
        if (type != DType::F32) s.values.resize(n);
    } else if (family == WeightFamily::Block32) {
        s.q.resize(n);
        s.scale.resize(n / kActBlock32);
        s.min.resize(n / kActBlock32);
    } else {
        s.q.resize(n);
        s.scale.resize(n / kQK_K);
        s.min.resize(n / kQK_K);
        s.scale16.resize(n / 16);
        s.min32.resize(n / 32);
    }
}

// Multiplies weight rows [first, first + count) with every activation row.
inline void process_tile(const KernelTable& k, DType type, const std::uint8_t* weights, std::size_t stride,
                         std::int64_t first, std::int64_t count, std::int64_t out_features, std::int64_t in_features,
                         const float* x, std::int64_t rows, const ActivationRows& act, TileScratch& s, float* y) {
    const WeightFamily family = weight_family(type);
    float results[kMaxDotRows];
    auto store = [&](std::int64_t r0, int nr, std::int64_t o) {
        for (int j = 0; j < nr; ++j) y[(r0 + j) * out_features + o] = results[j];
    };

    if (family == WeightFamily::Float && type != DType::F32) {
        // Read f16 or bf16 weights directly when the level can, one group of activation rows
        // at a time. The tile's weight rows stay in the L1 or L2 cache for the next group.
        const auto direct = type == DType::F16 ? k.dot_f16 : k.dot_bf16;
        if (direct != nullptr) {
            const auto* halves = reinterpret_cast<const std::uint16_t*>(weights + static_cast<std::size_t>(first) * stride);
            for (std::int64_t r0 = 0; r0 < rows; r0 += kMaxDotRows) {
                const int nr = static_cast<int>(std::min<std::int64_t>(kMaxDotRows, rows - r0));
                const float* xrows[kMaxDotRows];
                for (int j = 0; j < nr; ++j) xrows[j] = x + (r0 + j) * in_features;
                direct(halves, static_cast<std::int64_t>(stride / sizeof(std::uint16_t)), count, xrows, nr, in_features,
                       y + r0 * out_features + first, out_features);
            }
            return;
        }
    }

    if (family == WeightFamily::Float) {
        const float* wrows[kTileRows];
        for (std::int64_t i = 0; i < count; ++i) {
            const std::uint8_t* src = weights + static_cast<std::size_t>(first + i) * stride;
            if (type == DType::F32) {
                wrows[i] = reinterpret_cast<const float*>(src);
                continue;
            }
            float* dst = s.values.data() + i * in_features;
            const auto* halves = reinterpret_cast<const std::uint16_t*>(src);
            if (type == DType::F16) k.decode_f16(halves, in_features, dst);
            else k.decode_bf16(halves, in_features, dst);
            wrows[i] = dst;
        }
        const float* xrows[kMaxDotRows];
        for (std::int64_t r0 = 0; r0 < rows; r0 += kMaxDotRows) {
            const int nr = static_cast<int>(std::min<std::int64_t>(kMaxDotRows, rows - r0));
            for (int j = 0; j < nr; ++j) xrows[j] = x + (r0 + j) * in_features;
            for (std::int64_t i = 0; i < count; ++i) {
                k.dot_f32(wrows[i], xrows, nr, in_features, results);
                store(r0, nr, first + i);
            }
        }
        return;
    }

    if (family == WeightFamily::Block32) {
        const std::int64_t blocks = in_features / kActBlock32;
        Block32Row wrows[kTileRows];
        for (std::int64_t i = 0; i < count; ++i) {
            const std::uint8_t* src = weights + static_cast<std::size_t>(first + i) * stride;
            auto* q = reinterpret_cast<std::int8_t*>(s.q.data()) + i * in_features;
            float* scale = s.scale.data() + i * blocks;
            float* min = s.min.data() + i * blocks;
            wrows[i] = {q, scale, nullptr};
            if (type == DType::Q8_0) {
                k.decode_q8_0(reinterpret_cast<const BlockQ8_0*>(src), blocks, q, scale);
            } else if (type == DType::Q4_0) {
                k.decode_q4_0(reinterpret_cast<const BlockQ4_0*>(src), blocks, q, scale);
            } else {
                k.decode_q4_1(reinterpret_cast<const BlockQ4_1*>(src), blocks, q, scale, min);
                wrows[i].min = min;
            }
        }
        for (std::int64_t r0 = 0; r0 < rows; r0 += kMaxDotRows) {
            const int nr = static_cast<int>(std::min<std::int64_t>(kMaxDotRows, rows - r0));
            for (std::int64_t i = 0; i < count; ++i) {
                k.dot_block32(wrows[i], act.rows32.data() + r0, nr, blocks, results);
                store(r0, nr, first + i);
            }
        }
        return;
    }

    const std::int64_t blocks = in_features / kQK_K;
    Super256Row wrows[kTileRows];
    for (std::int64_t i = 0; i < count; ++i) {
        const std::uint8_t* src = weights + static_cast<std::size_t>(first + i) * stride;
        std::uint8_t* q = s.q.data() + i * in_features;
        std::int16_t* scale16 = s.scale16.data() + i * blocks * 16;
        std::int16_t* min32 = s.min32.data() + i * blocks * 8;
        float* d = s.scale.data() + i * blocks;
        float* dmin = s.min.data() + i * blocks;
        if (type == DType::Q4_K) {
            k.decode_q4_k(reinterpret_cast<const BlockQ4_K*>(src), blocks, q, scale16, min32, d, dmin);
            wrows[i] = {q, scale16, min32, d, dmin, 0};
        } else if (type == DType::Q5_K) {
            k.decode_q5_k(reinterpret_cast<const BlockQ5_K*>(src), blocks, q, scale16, min32, d, dmin);
            wrows[i] = {q, scale16, min32, d, dmin, 0};
        } else {
            k.decode_q6_k(reinterpret_cast<const BlockQ6_K*>(src), blocks, q, scale16, d);
            wrows[i] = {q, scale16, nullptr, d, nullptr, 32};
        }
    }
    for (std::int64_t r0 = 0; r0 < rows; r0 += kMaxDotRows) {
        const int nr = static_cast<int>(std::min<std::int64_t>(kMaxDotRows, rows - r0));
        for (std::int64_t i = 0; i < count; ++i) {
            k.dot_super256(wrows[i], act.rows256.data() + r0, nr, blocks, results);
            store(r0, nr, first + i);
        }
    }
}

// Weight rows per task of gemv_q8_0. Any split gives the same results.
inline constexpr std::int64_t kGemvTaskRows = 64;
// Work units per weight for threads_for_work: the product waits on memory, like the f32
// streaming products (kernels::detail::kStreamWorkPerWeight).
inline constexpr std::int64_t kGemvWorkPerWeight = 16;

// Computes y[r * out_features + o] for r < rows with the level's gemv_q8_0_range, reading the
// q8_0 weights in place, one weight row after another, so that the memory-bound product
// streams W once. Each task passes over its weight rows once per group of kGemvMaxRows
// activation rows, the later passes from L2.
// NOTE: at levels without the packed VNNI product every q8_0 call comes here, and calls of 10
// or more rows (products in the batch-invariant order) were not timed at those levels.
inline void gemv_q8_0(const KernelTable& k, const std::uint8_t* weights, std::size_t stride,
                      std::int64_t out_features, std::int64_t in_features, const Act32Row* act, std::int64_t rows,
                      float* y) {
    const int threads = threads_for_work(kGemvWorkPerWeight * out_features * in_features);
    const std::int64_t blocks = in_features / kActBlock32;
    parallel_for(
        (out_features + kGemvTaskRows - 1) / kGemvTaskRows,
        [&](std::int64_t task, int) {
            const std::int64_t begin = task * kGemvTaskRows;
            const std::int64_t end = std::min(out_features, begin + kGemvTaskRows);
            for (std::int64_t r0 = 0; r0 < rows; r0 += kGemvMaxRows) {
                const int group = static_cast<int>(std::min<std::int64_t>(kGemvMaxRows, rows - r0));
                k.gemv_q8_0_range(weights, stride, begin, end, blocks, act + r0, group, y + r0 * out_features,
                                  out_features);
            }
        },
        threads);
}

inline void gemm_with_kernels(const KernelTable& k, DType type, const void* weights, std::int64_t out_features,
                              std::int64_t in_features, const float* x, std::int64_t rows, float* y) {
    check_gemm_arguments(type, weights, out_features, in_features, x, rows, y);
    if (out_features == 0 || rows == 0) return;

    const WeightFamily family = weight_family(type);
    const std::size_t stride = row_bytes(type, in_features);
    const auto* weight_bytes = static_cast<const std::uint8_t*>(weights);

    ActivationRows& act = thread_activation_rows();
    if (family != WeightFamily::Float) prepare_activations(family, in_features, rows, act);

    // Work counts one multiply-add per weight and row; the thread count only spreads whole
    // tiles and rows, so it never changes a result.
    const std::int64_t tiles = (out_features + kTileRows - 1) / kTileRows;
    const int threads = threads_for_work(rows * out_features * in_features);
    if (family != WeightFamily::Float) {
        parallel_for(
            rows, [&](std::int64_t r, int) { quantize_activation_row(k, family, x, in_features, r, act); }, threads);
    }
#if BLIP_QUANT_X86
    const std::int64_t packed_from = type == DType::Q8_0 ? kVnniMinRowsQ8_0 : kVnniMinRows;
    if (family == WeightFamily::Block32 && k.level == CpuLevel::Avx512Vnni && rows >= packed_from) {
        vnni::gemm_block32(k, type, weight_bytes, stride, out_features, in_features, act.rows32.data(), rows, y,
                           threads);
        return;
    }
#endif
    if (type == DType::Q8_0 && k.gemv_q8_0_range != nullptr) {
        gemv_q8_0(k, weight_bytes, stride, out_features, in_features, act.rows32.data(), rows, y);
        return;
    }
    parallel_for(
        tiles,
        [&](std::int64_t t, int) {
            TileScratch& s = thread_tile_scratch();
            size_scratch(family, type, in_features, s);
            const std::int64_t first = t * kTileRows;
            const std::int64_t count = std::min(kTileRows, out_features - first);
            process_tile(k, type, weight_bytes, stride, first, count, out_features, in_features, x, rows, act, s, y);
        },
        threads);
}

}  // namespace detail

// y[r * out_features + o] = sum_k x[r * in_features + k] * W[o, k] for r < rows, o < out_features.
// W is out_features rows of in_features elements stored in `type` (row-major, ggml layout: each
// row is whole blocks), aligned to 2 bytes (4 for f32). Uses the kernels of active_cpu_level().
// Throws blip::Error for an unsupported type or row length, a negative size or a null pointer.
inline void gemm(DType type, const void* weights, std::int64_t out_features, std::int64_t in_features,
                 const float* x, std::int64_t rows, float* y) {
    detail::gemm_with_kernels(detail::kernels_for_level(active_cpu_level()), type, weights, out_features,
                              in_features, x, rows, y);
}

// gemm() with the kernels of `level`, for tests and benchmarks. Throws blip::Error when this CPU
// or build lacks that level.
inline void gemm_at_level(CpuLevel level, DType type, const void* weights, std::int64_t out_features,
                          std::int64_t in_features, const float* x, std::int64_t rows, float* y) {
    if (!cpu_level_available(level)) {
        throw Error("quant::gemm_at_level: this CPU or build lacks kernel level " +
                    std::string(cpu_level_name(level)) + "; the highest is " +
                    std::string(cpu_level_name(max_cpu_level())));
    }
    detail::gemm_with_kernels(detail::kernels_for_level(level), type, weights, out_features, in_features, x, rows,
                              y);
}

}  // namespace blip::quant
