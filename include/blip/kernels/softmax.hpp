// Softmax over the last dimension: exp(x - max) / sum, with the sum taken in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "blip/core/parallel.hpp"

namespace blip::kernels {

// Rows per task; fixed so that the split does not depend on the thread count.
inline constexpr std::int64_t kSoftmaxTile = 16;

// Replaces `count` values by their softmax. A row whose values are all -infinity has no
// defined softmax; it becomes NaN, as in torch.
inline void softmax_inplace(float* x, std::int64_t count) {
    if (count <= 0) return;
    float max_value = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < count; ++i) max_value = std::max(max_value, x[i]);
    double sum = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        x[i] = std::exp(x[i] - max_value);
        sum += x[i];
    }
    const float inverse_sum = static_cast<float>(1.0 / sum);
    for (std::int64_t i = 0; i < count; ++i) x[i] *= inverse_sum;
}

// Softmax of each of `rows` rows of `width` values, in place.
inline void softmax_rows(float* x, std::int64_t rows, std::int64_t width) {
    parallel_for(
        tile_count(rows, kSoftmaxTile),
        [&](std::int64_t tile, int) {
            const std::int64_t end = std::min(rows, (tile + 1) * kSoftmaxTile);
            for (std::int64_t row = tile * kSoftmaxTile; row < end; ++row) softmax_inplace(x + row * width, width);
        },
        threads_for_work(20 * rows * width));
}

}  // namespace blip::kernels
