// GELU activation in its exact form, x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), which is
// what transformers' "gelu" (torch.nn.functional.gelu without approximation) computes. erf is
// the polynomial of simd_math.hpp (at most 6.4e-8 from the exact erf), vectorized per level.
#pragma once

#include <algorithm>
#include <cstdint>

#include "blip/core/parallel.hpp"
#include "blip/kernels/gemm_f32.hpp"

namespace blip::kernels {

// Values per task; any split gives the same results.
inline constexpr std::int64_t kGeluTile = 4096;

// Applies GELU in place to `count` values.
inline void gelu_inplace(float* x, std::int64_t count) {
    const detail::F32KernelTable& kernels = detail::active_f32_kernels();
    // One GELU takes roughly as long as 8 multiply-adds (an estimate for the vectorized erf).
    parallel_for(
        tile_count(count, kGeluTile),
        [&](std::int64_t tile, int) {
            const std::int64_t begin = tile * kGeluTile;
            const std::int64_t end = std::min(count, begin + kGeluTile);
            kernels.epilogue(x + begin, end - begin, nullptr, true, nullptr, x + begin);
        },
        threads_for_work(8 * count));
}

}  // namespace blip::kernels
