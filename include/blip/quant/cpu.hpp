// Run-time CPU feature detection and the kernel level that the matrix products use.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <blip/core/error.hpp>

// BLIP_QUANT_X86 selects the run-time dispatched x86 kernels. Defining it to 0 on x86 builds the
// portable configuration (scalar and xsimd kernels only), as on other architectures.
#ifndef BLIP_QUANT_X86
#if defined(__x86_64__) || defined(__i386__)
#define BLIP_QUANT_X86 1
#else
#define BLIP_QUANT_X86 0
#endif
#endif
#if BLIP_QUANT_X86
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

// BLIP_QUANT_HAS_XSIMD is 1 when xsimd supports the compile-time architecture, which the
// Baseline level needs. Define BLIP_QUANT_NO_XSIMD to build without xsimd.
#if !defined(BLIP_QUANT_NO_XSIMD) && (defined(__SSE2__) || defined(__ARM_NEON) || defined(_M_X64))
#define BLIP_QUANT_HAS_XSIMD 1
#else
#define BLIP_QUANT_HAS_XSIMD 0
#endif

namespace blip::quant {

// Kernel levels, lowest first. Each level's kernels run on every CPU that has that level.
enum class CpuLevel : int {
    Scalar = 0,      // plain C++ everywhere
    Baseline = 1,    // xsimd with the compile-time architecture (SSE2 on x86-64, NEON on ARM64)
    Sse42 = 2,       // x86: SSE4.2 with SSSE3
    Avx2 = 3,        // x86: AVX2, FMA and F16C
    Avx512 = 4,      // x86: AVX-512 F, BW and VL on top of Avx2
    Avx512Vnni = 5,  // x86: Avx512 plus AVX-512 VNNI
};

inline constexpr CpuLevel kAllCpuLevels[] = {CpuLevel::Scalar, CpuLevel::Baseline, CpuLevel::Sse42,
                                             CpuLevel::Avx2,   CpuLevel::Avx512,   CpuLevel::Avx512Vnni};

inline std::string_view cpu_level_name(CpuLevel level) {
    switch (level) {
        case CpuLevel::Scalar: return "scalar";
        case CpuLevel::Baseline: return "baseline";
        case CpuLevel::Sse42: return "sse4.2";
        case CpuLevel::Avx2: return "avx2";
        case CpuLevel::Avx512: return "avx512";
        case CpuLevel::Avx512Vnni: return "avx512vnni";
    }
    return "unknown";
}

// Instruction-set extensions the CPU and the operating system both support.
struct CpuFeatures {
    bool sse42 = false;  // with SSSE3 and SSE4.1
    bool avx2 = false;   // with AVX, FMA and F16C, and the OS saving YMM state
    bool avx512 = false; // F, BW and VL, and the OS saving ZMM and mask state
    bool avx512_vnni = false;
    bool avx512_bf16 = false;
    // AMX tiles with bf16 products, AVX-512 BF16 and the OS saving tile state. Linux also
    // requires each process to ask for the tile state (see amx_tile_state_granted).
    bool amx_bf16 = false;
    // AMX tiles with 8-bit integer products, AVX-512 and the OS saving tile state.
    bool amx_int8 = false;
};

namespace detail {

#if BLIP_QUANT_X86
inline bool cpuid_leaf(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    return __get_cpuid_count(leaf, subleaf, &regs[0], &regs[1], &regs[2], &regs[3]) != 0;
}

// XCR0, the register where the OS declares which register states it saves on context switches.
inline std::uint64_t read_xcr0() {
    std::uint32_t eax;
    std::uint32_t edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

inline CpuFeatures detect_cpu_features() {
    CpuFeatures features;
#if BLIP_QUANT_X86
    unsigned leaf1[4] = {};
    if (!cpuid_leaf(1, 0, leaf1)) return features;
    const unsigned ecx1 = leaf1[2];
    const bool ssse3 = ecx1 & (1u << 9);
    const bool fma = ecx1 & (1u << 12);
    const bool sse41 = ecx1 & (1u << 19);
    const bool sse42 = ecx1 & (1u << 20);
    const bool osxsave = ecx1 & (1u << 27);
    const bool avx = ecx1 & (1u << 28);
    const bool f16c = ecx1 & (1u << 29);
    features.sse42 = ssse3 && sse41 && sse42;

    unsigned leaf7[4] = {};
    unsigned leaf7_1[4] = {};
    unsigned max_leaf[4] = {};
    cpuid_leaf(0, 0, max_leaf);
    if (max_leaf[0] >= 7) {
        cpuid_leaf(7, 0, leaf7);
        if (leaf7[0] >= 1) cpuid_leaf(7, 1, leaf7_1);
    }
    const unsigned ebx7 = leaf7[1];
    const unsigned ecx7 = leaf7[2];

    const std::uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const bool os_ymm = (xcr0 & 0x6u) == 0x6u;     // SSE and AVX state
    const bool os_zmm = (xcr0 & 0xe6u) == 0xe6u;   // plus opmask, ZMM_Hi256 and Hi16_ZMM

    const bool avx2 = ebx7 & (1u << 5);
    features.avx2 = features.sse42 && avx && avx2 && fma && f16c && os_ymm;

    const bool avx512f = ebx7 & (1u << 16);
    const bool avx512bw = ebx7 & (1u << 30);
    const bool avx512vl = ebx7 & (1u << 31);
    features.avx512 = features.avx2 && avx512f && avx512bw && avx512vl && os_zmm;
    features.avx512_vnni = features.avx512 && (ecx7 & (1u << 11));
    features.avx512_bf16 = features.avx512 && (leaf7_1[0] & (1u << 5));
    const unsigned edx7 = leaf7[3];
    const bool os_tiles = (xcr0 & 0x60000u) == 0x60000u;  // XTILECFG and XTILEDATA
    features.amx_bf16 = features.avx512_bf16 && (edx7 & (1u << 22)) && (edx7 & (1u << 24)) && os_tiles;
    features.amx_int8 = features.avx512 && (edx7 & (1u << 25)) && (edx7 & (1u << 24)) && os_tiles;
#endif
    return features;
}

// True when this build has xsimd kernels for its compile-time architecture.
inline constexpr bool has_baseline_simd() { return BLIP_QUANT_HAS_XSIMD != 0; }

inline CpuLevel detected_cpu_level() {
    const CpuFeatures features = detect_cpu_features();
    if (features.avx512_vnni) return CpuLevel::Avx512Vnni;
    if (features.avx512) return CpuLevel::Avx512;
    if (features.avx2) return CpuLevel::Avx2;
    if (features.sse42) return CpuLevel::Sse42;
    return has_baseline_simd() ? CpuLevel::Baseline : CpuLevel::Scalar;
}

inline bool parse_cpu_level(std::string_view name, CpuLevel& level) {
    for (CpuLevel candidate : kAllCpuLevels) {
        if (cpu_level_name(candidate) == name) {
            level = candidate;
            return true;
        }
    }
    return false;
}

// The detected level, lowered to the one named by the environment variable BLIP_CPU when that
// names a lower level. Throws blip::Error when BLIP_CPU is set to an unknown name.
inline CpuLevel select_cpu_level() {
    CpuLevel level = detected_cpu_level();
    const char* requested = std::getenv("BLIP_CPU");
    if (requested != nullptr && *requested != '\0') {
        CpuLevel forced;
        if (!parse_cpu_level(requested, forced)) {
            throw Error(std::string("BLIP_CPU=") + requested +
                        " is not a kernel level; use scalar, baseline, sse4.2, avx2, avx512 or avx512vnni");
        }
        if (static_cast<int>(forced) < static_cast<int>(level)) level = forced;
    }
    return level;
}

}  // namespace detail

// Features of this CPU, detected once.
inline const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detail::detect_cpu_features();
    return features;
}

// Highest level this CPU and build support, ignoring BLIP_CPU.
inline CpuLevel max_cpu_level() {
    static const CpuLevel level = detail::detected_cpu_level();
    return level;
}

// Level the matrix products use: max_cpu_level(), or lower when BLIP_CPU requests it.
// BLIP_CPU is read once, on the first call.
inline CpuLevel active_cpu_level() {
    static const CpuLevel level = detail::select_cpu_level();
    return level;
}

inline bool cpu_level_available(CpuLevel level) { return static_cast<int>(level) <= static_cast<int>(max_cpu_level()); }

namespace detail {
inline bool& amx_allowed_flag() {
    static bool allowed = true;
    return allowed;
}
}  // namespace detail

// Lets the matrix products use AMX tiles where they can (the default), or not, so that tests
// and benchmarks can compare them with the AVX-512 paths. Not meant to be called while a
// product runs.
inline void set_amx_allowed(bool allowed) { detail::amx_allowed_flag() = allowed; }
inline bool amx_allowed() { return detail::amx_allowed_flag(); }

// Whether this process may use AMX tile data: the CPU has AMX tiles, the OS saves their state,
// and on Linux the kernel granted this process the tile data state (requested once, on the
// first call). Returns false on other systems.
inline bool amx_tile_state_granted() {
#if BLIP_QUANT_X86 && defined(__linux__)
    static const bool granted = [] {
        if (!cpu_features().amx_bf16 && !cpu_features().amx_int8) return false;
        constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
        constexpr long kTileData = 18;                // XFEATURE_XTILEDATA
        return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
    }();
    return granted;
#else
    return false;
#endif
}

}  // namespace blip::quant
