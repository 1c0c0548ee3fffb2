// Kernels of the Baseline level: xsimd with the architecture the translation unit is compiled for
// (SSE2 on x86-64, NEON on ARM64, SSE2 emulation on WebAssembly builds that enable it).
//
// xsimd 8.1 declares its AVX2 and AVX-512 batch types only when the compiler targets those
// instruction sets globally (__AVX2__ and friends), so they cannot be used inside functions
// compiled with __attribute__((target(...))). The run-time dispatched x86 levels therefore use
// intrinsics (dot_sse42.hpp, dot_avx2.hpp, dot_avx512.hpp) and xsimd serves only this level.
//
// This level speeds up the f32, f16 and bf16 paths; the integer paths keep the scalar kernels.
// TODO: integer kernels with NEON dot-product instructions for ARM64.
#pragma once

#include <cstdint>

#include <blip/quant/cpu.hpp>
#include <blip/quant/kernels.hpp>

#if BLIP_QUANT_HAS_XSIMD
#include <xsimd/xsimd.hpp>
#endif

namespace blip::quant::detail {

#if BLIP_QUANT_HAS_XSIMD

template <int Rows>
inline void dot_f32_baseline_rows(const float* w, const float* const* x, std::int64_t count, float* out) {
    using Batch = xsimd::batch<float>;
    constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
    Batch acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = Batch(0.f);
    std::int64_t k = 0;
    for (; k + width <= count; k += width) {
        const Batch wv = Batch::load_unaligned(w + k);
        for (int r = 0; r < Rows; ++r) acc[r] = xsimd::fma(wv, Batch::load_unaligned(x[r] + k), acc[r]);
    }
    for (int r = 0; r < Rows; ++r) {
        float total = xsimd::hadd(acc[r]);
        for (std::int64_t t = k; t < count; ++t) total += w[t] * x[r][t];
        out[r] = total;
    }
}

inline void dot_f32_baseline(const float* w, const float* const* x, int rows, std::int64_t count, float* out) {
    switch (rows) {
        case 1: dot_f32_baseline_rows<1>(w, x, count, out); break;
        case 2: dot_f32_baseline_rows<2>(w, x, count, out); break;
        case 3: dot_f32_baseline_rows<3>(w, x, count, out); break;
        default: dot_f32_baseline_rows<4>(w, x, count, out); break;
    }
}

inline void install_baseline_kernels(KernelTable& table) { table.dot_f32 = dot_f32_baseline; }

#else

inline void install_baseline_kernels(KernelTable&) {}

#endif

static_assert(kMaxDotRows == 4, "dot_f32_baseline handles up to 4 rows");

}  // namespace blip::quant::detail
