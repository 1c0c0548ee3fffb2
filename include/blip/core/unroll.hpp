// BLIP_UNROLL: placed before a loop with a compile-time trip count over an array of SIMD
// registers (the accumulators of a register tile), so that the compiler unrolls it before it
// decides where the array lives. Without it, GCC 12 keeps arrays of three or more 256-bit
// accumulators in memory and stores them on every iteration of the enclosing loop. The 6 x 16
// AVX2 tile then ran at 40% of the FMA peak on an AMD EPYC (Zen 3).
#pragma once

#if defined(__clang__)
#define BLIP_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define BLIP_UNROLL _Pragma("GCC unroll 32")
#else
#define BLIP_UNROLL
#endif
