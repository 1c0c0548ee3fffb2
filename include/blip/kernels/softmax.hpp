// Softmax over the last dimension: exp(x - max) / sum, with the sum taken in double. The
// arithmetic is the active CPU level's (softmax_row_reference in gemm_f32_kernels.hpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "blip/core/parallel.hpp"
#include "blip/kernels/gemm_f32.hpp"

namespace blip::kernels {

// Rows per task; any split gives the same results.
inline constexpr std::int64_t kSoftmaxTile = 16;

// Replaces `count` values by their softmax. A row whose values are all -infinity has no
// defined softmax; it becomes NaN, as in torch.
inline void softmax_inplace(float* x, std::int64_t count) {
    detail::active_f32_kernels().softmax(x, count, 1.0f, false, nullptr);
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
