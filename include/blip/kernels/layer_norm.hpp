// Layer normalization over the last dimension, as torch.nn.LayerNorm computes it:
// y = (x - mean) / sqrt(var + eps) * gamma + beta with the biased variance.
#pragma once

#include <cmath>
#include <cstdint>

#include "blip/core/parallel.hpp"

namespace blip::kernels {

// Rows per task; fixed so that the split does not depend on the thread count.
inline constexpr std::int64_t kLayerNormTile = 16;

// Normalizes one row of `width` values; `y` may equal `x`. Mean and variance are summed in
// double, then every value is rounded once to float.
inline void layer_norm_row(const float* x, std::int64_t width, const float* gamma, const float* beta, float eps,
                           float* y) {
    double sum = 0;
    for (std::int64_t i = 0; i < width; ++i) sum += x[i];
    const double mean = sum / static_cast<double>(width);
    double squares = 0;
    for (std::int64_t i = 0; i < width; ++i) {
        const double centered = x[i] - mean;
        squares += centered * centered;
    }
    const double inverse_std = 1.0 / std::sqrt(squares / static_cast<double>(width) + static_cast<double>(eps));
    for (std::int64_t i = 0; i < width; ++i)
        y[i] = static_cast<float>((x[i] - mean) * inverse_std * gamma[i] + beta[i]);
}

// Normalizes `rows` rows of `width` values; `y` may equal `x`.
inline void layer_norm(const float* x, std::int64_t rows, std::int64_t width, const float* gamma, const float* beta,
                       float eps, float* y) {
    parallel_for(
        tile_count(rows, kLayerNormTile),
        [&](std::int64_t tile, int) {
            const std::int64_t end = std::min(rows, (tile + 1) * kLayerNormTile);
            for (std::int64_t row = tile * kLayerNormTile; row < end; ++row)
                layer_norm_row(x + row * width, width, gamma, beta, eps, y + row * width);
        },
        threads_for_work(8 * rows * width));
}

}  // namespace blip::kernels
