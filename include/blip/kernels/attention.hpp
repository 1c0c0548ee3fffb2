// Multi-head scaled dot-product attention, fused per head and per tile of query rows:
// scores, mask, softmax and the weighted sum of values, holding at most one tile of scores.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/kernels/eigen.hpp"
#include "blip/kernels/softmax.hpp"

namespace blip::kernels {

// Query rows per task. Fixed, so the split does not depend on the thread count.
inline constexpr std::int64_t kAttentionQueryTile = 16;

// Scaling of the raw scores q.k. The vision encoder (BlipAttention) multiplies by
// head_dim^-0.5, and the text transformer (BlipTextSelfAttention) divides by sqrt(head_dim).
// Both are kept because the two roundings differ in the last bit.
enum class ScoreScaling { MultiplyByInverseSqrt, DivideBySqrt };

// One attention problem. Rows of query, key, value and output are strided; head h takes
// columns [h * head_dim, (h + 1) * head_dim) of each row.
struct AttentionArgs {
    const float* query = nullptr;
    std::int64_t query_rows = 0;
    std::int64_t query_stride = 0;
    const float* key = nullptr;
    const float* value = nullptr;
    std::int64_t key_rows = 0;
    std::int64_t key_stride = 0;    // of key rows
    std::int64_t value_stride = 0;  // of value rows
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

// Floats of scratch one worker needs for problems with `key_rows` keys.
inline std::int64_t attention_scratch_floats(std::int64_t key_rows) { return kAttentionQueryTile * key_rows; }

// Number of keys that query row `row` attends to.
inline std::int64_t visible_keys(const AttentionArgs& args, std::int64_t row) {
    if (args.causal_offset < 0) return args.key_rows;
    return std::min(args.key_rows, args.causal_offset + row + 1);
}

// Attention of head `head` for query rows [begin, end), with end - begin at most
// kAttentionQueryTile, on the calling thread. `scratch` has room for
// attention_scratch_floats(args.key_rows) floats.
inline void attend(const AttentionArgs& args, std::int64_t head, std::int64_t begin, std::int64_t end,
                   float* scratch) {
    const std::int64_t rows = end - begin;
    const std::int64_t dim = args.head_dim;
    const std::int64_t keys = visible_keys(args, end - 1);  // the last row attends to the most keys
    if (rows <= 0 || keys <= 0) return;
    const std::int64_t column = head * dim;

    detail::ConstMatrixMap query(args.query + begin * args.query_stride + column, rows, dim,
                                 Eigen::OuterStride<>(args.query_stride));
    detail::ConstMatrixMap key(args.key + column, keys, dim, Eigen::OuterStride<>(args.key_stride));
    detail::ConstMatrixMap value(args.value + column, keys, dim, Eigen::OuterStride<>(args.value_stride));
    detail::MatrixMap scores(scratch, rows, keys, Eigen::OuterStride<>(keys));
    scores.noalias() = query * key.transpose();

    const float sqrt_dim = static_cast<float>(std::sqrt(static_cast<double>(dim)));
    const float inverse_sqrt_dim = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
    for (std::int64_t i = 0; i < rows; ++i) {
        float* row = scratch + i * keys;
        const std::int64_t visible = visible_keys(args, begin + i);
        for (std::int64_t j = 0; j < visible; ++j) {
            float score = args.scaling == ScoreScaling::DivideBySqrt ? row[j] / sqrt_dim : row[j] * inverse_sqrt_dim;
            if (args.key_bias) score += args.key_bias[j];
            row[j] = score;
        }
        softmax_inplace(row, visible);
        std::fill(row + visible, row + keys, 0.0f);
    }

    detail::MatrixMap output(args.output + begin * args.output_stride + column, rows, dim,
                             Eigen::OuterStride<>(args.output_stride));
    output.noalias() = scores * value;
}

// Number of threads worth using for `args`: two products of head_dim multiply-adds per
// query and key, and the softmax.
inline std::int64_t attention_threads(const AttentionArgs& args) {
    return threads_for_work(args.heads * args.query_rows * args.key_rows * (2 * args.head_dim + 20));
}

// Runs every head and query tile of `args` in parallel. Each worker takes
// attention_scratch_floats(key_rows) of the `scratch_floats` floats at `scratch`, so fewer
// workers run when the scratch is small. Throws when not even one worker fits.
inline void attention(const AttentionArgs& args, float* scratch, std::int64_t scratch_floats) {
    if (args.query_rows <= 0 || args.heads <= 0) return;
    const std::int64_t per_worker = std::max<std::int64_t>(1, attention_scratch_floats(args.key_rows));
    const std::int64_t fitting = scratch_floats / per_worker;
    if (fitting < 1)
        throw Error("attention: scratch of " + std::to_string(scratch_floats) + " floats is smaller than the " +
                    std::to_string(per_worker) + " one worker needs for " + std::to_string(args.key_rows) + " keys");
    detail::keep_eigen_serial();
    const std::int64_t tiles = tile_count(args.query_rows, kAttentionQueryTile);
    parallel_for(
        args.heads * tiles,
        [&](std::int64_t task, int worker) {
            const std::int64_t head = task / tiles;
            const std::int64_t begin = (task % tiles) * kAttentionQueryTile;
            const std::int64_t end = std::min(args.query_rows, begin + kAttentionQueryTile);
            attend(args, head, begin, end, scratch + worker * per_worker);
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
