// Kernels of the Avx512 level (AVX-512 F, BW and VL) and the Avx512Vnni level (plus AVX-512
// VNNI), compiled per function with target attributes so the rest of the program stays baseline
// x86-64. Both use 512-bit registers for the f32 path. The integer kernels keep the 256-bit
// structure of the Avx2 level, and Avx512Vnni replaces its multiply-add pairs with VPDPBUSD.
//
// AVX-512 BF16 is detected (CpuFeatures::avx512_bf16) but not used: VDPBF16PS would round the
// f32 activations to bf16, while the bf16 path here widens the weights and keeps f32 activations.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include <blip/quant/kernels.hpp>
#include <blip/quant/operands.hpp>

#define BLIP_QUANT_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define BLIP_QUANT_NAMESPACE avx512
#define BLIP_QUANT_VNNI 0
#define BLIP_QUANT_ZMM 1
#include <blip/quant/dot_avx_body.hpp>
#undef BLIP_QUANT_TARGET
#undef BLIP_QUANT_NAMESPACE
#undef BLIP_QUANT_VNNI
#undef BLIP_QUANT_ZMM

#define BLIP_QUANT_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define BLIP_QUANT_NAMESPACE avx512_vnni
#define BLIP_QUANT_VNNI 1
#define BLIP_QUANT_ZMM 1
#include <blip/quant/dot_avx_body.hpp>
#undef BLIP_QUANT_TARGET
#undef BLIP_QUANT_NAMESPACE
#undef BLIP_QUANT_VNNI
#undef BLIP_QUANT_ZMM

namespace blip::quant::detail {

inline void install_avx512_kernels(KernelTable& table) { avx512::install(table); }
inline void install_avx512_vnni_kernels(KernelTable& table) { avx512_vnni::install(table); }

}  // namespace blip::quant::detail
