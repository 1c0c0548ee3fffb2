// Kernels of the Avx2 level (x86 with AVX2, FMA and F16C), compiled per function with target
// attributes so the rest of the program stays baseline x86-64.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>

#define BLIP_QUANT_TARGET __attribute__((target("avx2,fma,f16c")))
#define BLIP_QUANT_NAMESPACE avx2
#define BLIP_QUANT_VNNI 0
#define BLIP_QUANT_ZMM 0
#include <blip/quant/dot_avx_body.hpp>
#undef BLIP_QUANT_TARGET
#undef BLIP_QUANT_NAMESPACE
#undef BLIP_QUANT_VNNI
#undef BLIP_QUANT_ZMM

namespace blip::quant::detail {

inline void install_avx2_kernels(KernelTable& table) { avx2::install(table); }

}  // namespace blip::quant::detail
