// GELU activation in its exact form, x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), which is
// what transformers' "gelu" (torch.nn.functional.gelu without approximation) computes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "blip/core/parallel.hpp"

namespace blip::kernels {

// Values per task; fixed so that the split does not depend on the thread count.
inline constexpr std::int64_t kGeluTile = 4096;

inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// Applies GELU in place to `count` values.
inline void gelu_inplace(float* x, std::int64_t count) {
    // One erf takes roughly as long as 30 multiply-adds (an estimate).
    parallel_for(
        tile_count(count, kGeluTile),
        [&](std::int64_t tile, int) {
            const std::int64_t end = std::min(count, (tile + 1) * kGeluTile);
            for (std::int64_t i = tile * kGeluTile; i < end; ++i) x[i] = gelu(x[i]);
        },
        threads_for_work(30 * count));
}

}  // namespace blip::kernels
