// Multi-head scaled dot-product attention, fused per head and per tile of query rows:
// scores, mask, softmax and the weighted sum of values, holding at most one tile of scores.
// The arithmetic comes from the f32 kernels of the active CPU level (gemm_f32.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/kernels/eigen.hpp"  // TODO: drop once no caller uses detail::keep_eigen_serial
#include "blip/kernels/gemm_f32.hpp"

namespace blip::kernels {

// Query rows per task of callers that split work themselves (the text model). Any split gives
// the same results.
inline constexpr std::int64_t kAttentionQueryTile = 16;

// Scaling of the raw scores q.k. The vision encoder (BlipAttention) multiplies by
// head_dim^-0.5, and the text transformer (BlipTextSelfAttention) divides by sqrt(head_dim).
// Both are kept because the two roundings differ in the last bit.
enum class ScoreScaling { MultiplyByInverseSqrt, DivideBySqrt };

// One attention problem. Rows of query, key, value and output are strided; head h takes
// columns [h * head_dim, (h + 1) * head_dim) of each row, or, with kv_head_stride, its own
// block of key and value rows.
struct AttentionArgs {
    const float* query = nullptr;
    std::int64_t query_rows = 0;
    std::int64_t query_stride = 0;
    const float* key = nullptr;
    const float* value = nullptr;
    // Keys and values stored as bfloat16 instead, with the same strides (key and value are then
    // null, and both of these must be set). attend() reads them, and attention() runs every
    // task through attend().
    const std::uint16_t* key_bf16 = nullptr;
    const std::uint16_t* value_bf16 = nullptr;
    std::int64_t key_rows = 0;
    std::int64_t key_stride = 0;    // of key rows
    std::int64_t value_stride = 0;  // of value rows
    // When > 0, head h's keys and values start at element h * kv_head_stride (a head-major
    // layout) instead of at column h * head_dim of each row.
    std::int64_t kv_head_stride = 0;
    std::int64_t heads = 0;
    std::int64_t head_dim = 0;
    ScoreScaling scaling = ScoreScaling::DivideBySqrt;
    // Optional additive mask per key, added to the scaled scores (transformers uses 0 for
    // keys to attend and -10000 for padding).
    const float* key_bias = nullptr;
    // When >= 0, query row i attends only to keys [0, causal_offset + i]. This is the causal
    // mask of a decoder whose first query is at position causal_offset.
    std::int64_t causal_offset = -1;
    float* output = nullptr;
    std::int64_t output_stride = 0;
};

// Floats of scratch one worker needs for problems with `key_rows` keys: one row of scores
// for each of the detail::kAttentionRows query rows computed together.
inline std::int64_t attention_scratch_floats(std::int64_t key_rows) { return detail::kAttentionRows * key_rows; }

// Number of keys that query row `row` attends to.
inline std::int64_t visible_keys(const AttentionArgs& args, std::int64_t row) {
    if (args.causal_offset < 0) return args.key_rows;
    return std::min(args.key_rows, args.causal_offset + row + 1);
}

namespace detail {

// Query rows per task of attention(), at most; the rows are split evenly in multiples of
// kAttentionRows. Any split gives the same results. Each task packs its head's keys and
// values, so the vision encoder's 577 queries of a head form one task.
inline constexpr std::int64_t kAttentionChunkRows = 640;
// Tasks with at least this many query rows first copy their head's keys, transposed, and its
// values into contiguous buffers (into chain panels at levels with chain tiles), unless the
// keys are bfloat16 or head-major. Their scores then come from TransposedScoresKernel or the
// chain tiles, one multiply-add chain per score with no horizontal sums, which rounds
// differently from the 16-lane scores of fewer rows.
// Measured on Zen 4, AVX-512, one thread, ViT-B layer with 577 tokens: attention 15.1 ms with
// 16-lane scores, 13.1 ms with transposed keys.
inline constexpr std::int64_t kAttentionPackRows = 16;

// Tag of the per-thread buffer for transposed keys and values (see thread_buffer).
struct AttentionPackedOperands;

// Copies `rows` rows of `dim` floats (row stride `stride`) to consecutive rows at `out`.
inline void pack_head(const float* source, std::int64_t rows, std::int64_t stride, std::int64_t dim, float* out) {
    for (std::int64_t r = 0; r < rows; ++r) std::copy_n(source + r * stride, dim, out + r * dim);
}

// Copies `rows` rows of `dim` floats (row stride `stride`) transposed: element d of row r to
// out[d * out_stride + r].
inline void pack_head_transposed(const float* source, std::int64_t rows, std::int64_t stride, std::int64_t dim,
                                 float* out, std::int64_t out_stride) {
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < dim; ++d) out[d * out_stride + r] = source[r * stride + d];
}

// Throws unless key_bf16 and value_bf16 are both set or both null.
inline void check_bf16_pair(const AttentionArgs& args) {
    if ((args.key_bf16 != nullptr) != (args.value_bf16 != nullptr))
        throw Error("attention: key_bf16 and value_bf16 must be set together");
}

// Keys of one head as attend_rows reads them: rows with a stride, or transposed (f32 only).
template <class T>
struct HeadKeys {
    const T* data;
    std::int64_t stride;  // between key rows, or between the rows of one element when transposed
    bool transposed;
};

inline void head_scores(const F32KernelTable& kernels, const float* query, std::int64_t query_stride, int rows,
                        const HeadKeys<float>& keys, std::int64_t count, std::int64_t dim, float* scores) {
    if (keys.transposed)
        kernels.transposed_scores(query, query_stride, rows, keys.data, keys.stride, count, dim, scores, count);
    else
        kernels.scores(query, query_stride, rows, keys.data, keys.stride, count, dim, scores, count);
}

inline void head_scores(const F32KernelTable& kernels, const float* query, std::int64_t query_stride, int rows,
                        const HeadKeys<std::uint16_t>& keys, std::int64_t count, std::int64_t dim, float* scores) {
    kernels.scores_bf16(query, query_stride, rows, keys.data, keys.stride, count, dim, scores, count);
}

inline void head_weighted_sum(const F32KernelTable& kernels, const float* p, int rows, std::int64_t count,
                              const float* values, std::int64_t value_stride, std::int64_t dim, float* out,
                              std::int64_t out_stride) {
    kernels.weighted_sum(p, count, rows, count, values, value_stride, dim, out, out_stride);
}

inline void head_weighted_sum(const F32KernelTable& kernels, const float* p, int rows, std::int64_t count,
                              const std::uint16_t* values, std::int64_t value_stride, std::int64_t dim, float* out,
                              std::int64_t out_stride) {
    kernels.weighted_sum_bf16(p, count, rows, count, values, value_stride, dim, out, out_stride);
}

// Attention of head `head` for query rows [begin, end), reading that head's keys and values
// (f32 or bfloat16) at `keys` and `values` (value row stride given). `scratch` has room for
// kAttentionRows rows of scores.
template <class T>
inline void attend_rows(const AttentionArgs& args, std::int64_t head, std::int64_t begin, std::int64_t end,
                        const HeadKeys<T>& keys, const T* values, std::int64_t value_stride, float* scratch) {
    const std::int64_t dim = args.head_dim;
    const std::int64_t column = head * dim;
    const F32KernelTable& kernels = active_f32_kernels();
    const bool divide = args.scaling == ScoreScaling::DivideBySqrt;
    const float scale = divide ? static_cast<float>(std::sqrt(static_cast<double>(dim)))
                               : static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    for (std::int64_t first = begin; first < end; first += kAttentionRows) {
        const int rows = static_cast<int>(std::min<std::int64_t>(kAttentionRows, end - first));
        const std::int64_t keys_here = visible_keys(args, first + rows - 1);  // the last row attends to the most
        if (keys_here <= 0) continue;
        const float* query = args.query + first * args.query_stride + column;
        head_scores(kernels, query, args.query_stride, rows, keys, keys_here, dim, scratch);
        for (int i = 0; i < rows; ++i) {
            float* row = scratch + i * keys_here;
            const std::int64_t visible = visible_keys(args, first + i);
            kernels.softmax(row, visible, scale, divide, args.key_bias);
            std::fill(row + visible, row + keys_here, 0.0f);
        }
        head_weighted_sum(kernels, scratch, rows, keys_here, values, value_stride, dim,
                          args.output + first * args.output_stride + column, args.output_stride);
    }
}

// Tag of the per-thread buffer for the chain-tile operands of attend_rows_chain.
struct AttentionChainOperands;

// Computes attend_rows for a task's query rows [begin, end) with the chain tiles of
// `kernels`. They sum each score and each output in the order of transposed_scores and
// weighted_sum (one multiply-add chain in increasing d, then in increasing key), so the bits
// are the same. Only the groups of rows are chain_rows tall. Keys are packed in zero-padded
// panels of chain_cols keys, element d of key j at d * chain_cols + j % chain_cols. Values
// are packed in zero-padded panels of chain_cols columns, column d of key j at
// j * chain_cols + d % chain_cols.
inline void attend_rows_chain(const F32KernelTable& kernels, const AttentionArgs& args, std::int64_t head,
                              std::int64_t begin, std::int64_t end) {
    const int mr = kernels.chain_rows;
    const int nr = kernels.chain_cols;
    const std::int64_t dim = args.head_dim;
    const std::int64_t column = head * dim;
    const std::int64_t keys = visible_keys(args, end - 1);
    const std::int64_t keys_padded = tile_count(keys, nr) * nr;
    const std::int64_t dim_padded = tile_count(dim, nr) * nr;
    float* key_panels = thread_buffer<AttentionChainOperands>(static_cast<std::size_t>(
        keys_padded * dim + keys * dim_padded + mr * keys_padded + mr * dim + mr * keys + mr * dim_padded));
    float* value_panels = key_panels + keys_padded * dim;
    float* scores = value_panels + keys * dim_padded;
    float* query_panel = scores + mr * keys_padded;
    float* weight_panel = query_panel + mr * dim;
    float* outputs = weight_panel + mr * keys;
    for (std::int64_t j = 0; j < keys; j += nr)
        kernels.chain_pack(args.key + j * args.key_stride + column, std::min<std::int64_t>(nr, keys - j),
                           args.key_stride, dim, nr, key_panels + j * dim);
    for (std::int64_t d = 0; d < dim_padded; d += nr)
        for (std::int64_t j = 0; j < keys; ++j) {
            float* to = value_panels + d * keys + j * nr;
            const float* from = args.value + j * args.value_stride + column + d;
            for (std::int64_t c = 0; c < nr; ++c) to[c] = d + c < dim ? from[c] : 0.0f;
        }

    const bool divide = args.scaling == ScoreScaling::DivideBySqrt;
    const float scale = divide ? static_cast<float>(std::sqrt(static_cast<double>(dim)))
                               : static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    for (std::int64_t first = begin; first < end; first += mr) {
        const int rows = static_cast<int>(std::min<std::int64_t>(mr, end - first));
        const std::int64_t keys_here = visible_keys(args, first + rows - 1);
        if (keys_here <= 0) continue;
        kernels.chain_pack(args.query + first * args.query_stride + column, rows, args.query_stride, dim, mr,
                           query_panel);
        for (std::int64_t j = 0; j < keys_here; j += nr)
            kernels.chain[rows - 1](query_panel, key_panels + j * dim, dim, scores + j, keys_padded, false);
        for (int i = 0; i < rows; ++i) {
            float* row = scores + i * keys_padded;
            const std::int64_t visible = visible_keys(args, first + i);
            kernels.softmax(row, visible, scale, divide, args.key_bias);
            std::fill(row + visible, row + keys_here, 0.0f);
        }
        kernels.chain_pack(scores, rows, keys_padded, keys_here, mr, weight_panel);
        for (std::int64_t d = 0; d < dim; d += nr)
            kernels.chain[rows - 1](weight_panel, value_panels + d * keys, keys_here, outputs + d, dim_padded, false);
        for (int i = 0; i < rows; ++i)
            std::copy_n(outputs + i * dim_padded, dim, args.output + (first + i) * args.output_stride + column);
    }
}

}  // namespace detail

// Attention of head `head` for query rows [begin, end) on the calling thread. `scratch` has
// room for attention_scratch_floats(args.key_rows) floats.
//
// Every query row is computed on its own: scores in the 16-lane dot-product order, softmax
// over its visible keys, then the weighted sum of values in increasing key order. So a row
// gets the same bits whatever the other rows of the call. One exception: a row with fewer
// visible keys than others of its group of detail::kAttentionRows also adds their zero
// weights, which can only turn a -0 output into +0.
inline void attend(const AttentionArgs& args, std::int64_t head, std::int64_t begin, std::int64_t end,
                   float* scratch) {
    const std::int64_t start = args.kv_head_stride > 0 ? head * args.kv_head_stride : head * args.head_dim;
    detail::check_bf16_pair(args);
    if (args.key_bf16 != nullptr) {
        detail::attend_rows<std::uint16_t>(args, head, begin, end, {args.key_bf16 + start, args.key_stride, false},
                                           args.value_bf16 + start, args.value_stride, scratch);
        return;
    }
    detail::attend_rows<float>(args, head, begin, end, {args.key + start, args.key_stride, false}, args.value + start,
                               args.value_stride, scratch);
}

// Number of threads worth using for `args`: two products of head_dim multiply-adds per
// query and key, and the softmax.
inline std::int64_t attention_threads(const AttentionArgs& args) {
    return threads_for_work(args.heads * args.query_rows * args.key_rows * (2 * args.head_dim + 20));
}

// Runs every head and chunk of query rows of `args` in parallel. Each worker takes
// attention_scratch_floats(key_rows) of the `scratch_floats` floats at `scratch`, so fewer
// workers run when the scratch is small. Throws when not even one worker fits.
inline void attention(const AttentionArgs& args, float* scratch, std::int64_t scratch_floats) {
    if (args.query_rows <= 0 || args.heads <= 0) return;
    detail::check_bf16_pair(args);  // before the parallel loop, which an exception cannot leave
    const std::int64_t per_worker = std::max<std::int64_t>(1, attention_scratch_floats(args.key_rows));
    const std::int64_t fitting = scratch_floats / per_worker;
    if (fitting < 1)
        throw Error("attention: scratch of " + std::to_string(scratch_floats) + " floats is smaller than the " +
                    std::to_string(per_worker) + " one worker needs for " + std::to_string(args.key_rows) + " keys");
    const std::int64_t chunks = tile_count(args.query_rows, detail::kAttentionChunkRows);
    const std::int64_t chunk_rows =
        tile_count(tile_count(args.query_rows, chunks), detail::kAttentionRows) * detail::kAttentionRows;
    const std::int64_t dim = args.head_dim;
    parallel_for(
        args.heads * chunks,
        [&](std::int64_t task, int worker) {
            const std::int64_t head = task / chunks;
            const std::int64_t begin = (task % chunks) * chunk_rows;
            const std::int64_t end = std::min(args.query_rows, begin + chunk_rows);
            float* own = scratch + worker * per_worker;
            const std::int64_t keys = visible_keys(args, end - 1);
            if (end - begin < detail::kAttentionPackRows || keys <= 0 || args.key_bf16 != nullptr ||
                args.kv_head_stride > 0) {
                attend(args, head, begin, end, own);
                return;
            }
            const detail::F32KernelTable& kernels = detail::active_f32_kernels();
            if (kernels.chain_rows > 0) {
                detail::attend_rows_chain(kernels, args, head, begin, end);
                return;
            }
            // Transposed keys padded to whole cache lines per element, so their rows start aligned.
            const std::int64_t keys_padded = tile_count(keys, 16) * 16;
            float* packed = detail::thread_buffer<detail::AttentionPackedOperands>(
                static_cast<std::size_t>((keys_padded + keys) * dim));
            detail::pack_head_transposed(args.key + head * dim, keys, args.key_stride, dim, packed, keys_padded);
            float* values = packed + keys_padded * dim;
            detail::pack_head(args.value + head * dim, keys, args.value_stride, dim, values);
            detail::attend_rows<float>(args, head, begin, end, {packed, keys_padded, true}, values, dim, own);
        },
        static_cast<int>(std::min<std::int64_t>(fitting, attention_threads(args))));
}

// Same, with scratch allocated for the call.
inline void attention(const AttentionArgs& args) {
    const std::int64_t per_worker = attention_scratch_floats(args.key_rows);
    std::vector<float> scratch(static_cast<std::size_t>(per_worker * num_threads()));
    attention(args, scratch.data(), static_cast<std::int64_t>(scratch.size()));
}

}  // namespace blip::kernels
