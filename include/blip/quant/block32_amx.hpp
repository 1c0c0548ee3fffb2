// Integer dot products of packed block32 weight panels (q8_0, q4_0, q4_1) with 16 activation
// rows on Intel AMX: one TDPBSSD per block multiplies 16 rows of signed activation bytes with
// the 16 weight rows of a panel. The sums are the exact integers that vnni::panel_dots computes
// with VNNI, so the products give the same bits either way.
//
// Operands, as TDPBSSD reads them. A: 16 activation rows of one block, 32 signed bytes each.
// B: the block of a panel, 8 rows (4 values of k each) of 16 weight rows times 4 signed bytes,
// which is the panel layout of gemm_block32_vnni.hpp. C: 16 x 16 int32 sums.
#pragma once

#include <cstdint>

#include "blip/quant/amx_tiles.hpp"
#include "blip/quant/cpu.hpp"

#if BLIP_QUANT_X86
#include <immintrin.h>
#endif

namespace blip::quant::detail {

// Whether many-row block32 products run on AMX tiles: the CPU has AMX-INT8, the tile state is
// granted, the active level is the highest (BLIP_CPU set to a lower level turns AMX off), and
// set_amx_allowed(false) was not called.
inline bool block32_amx_usable() {
    return amx_allowed() && cpu_features().amx_int8 && active_cpu_level() == CpuLevel::Avx512Vnni &&
           amx_tile_state_granted();
}

#if BLIP_QUANT_X86

namespace amx_int8 {

#define BLIP_QUANT_AMX_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,amx-tile,amx-int8")))

// Activation rows of one tile product.
inline constexpr int kTileRows = 16;
// Bytes of one block of a panel: 8 steps of 16 weight rows x 4 bytes.
inline constexpr std::int64_t kPanelBlockQBytes = 512;

// Configures the calling thread's tiles. Tile 0 holds the 16 x 16 sums, tile 1 the 16
// activation rows of one block, and tile 2 one panel block.
BLIP_QUANT_AMX_TARGET inline void configure_tiles() {
    AmxTileConfig config;
    config.rows[0] = 16;
    config.bytes_per_row[0] = 64;
    config.rows[1] = 16;
    config.bytes_per_row[1] = 32;
    config.rows[2] = 8;
    config.bytes_per_row[2] = 64;
    load_tile_config(config);
}

BLIP_QUANT_AMX_TARGET inline void release_tiles() { _tile_release(); }

// Computes the exact dot products of 16 activation rows (signed bytes at x, x_stride bytes
// apart) with the panel whose q bytes are at panel_q. Block b of row r times weight row c goes
// to dots[(r * blocks + b) * 16 + c]. Needs configure_tiles() on the calling thread.
// Four blocks in four sum tiles at a time measured no faster on a Xeon, because the tile
// stores of the sums (1 KiB per block) limit it.
BLIP_QUANT_AMX_TARGET inline void panel_dots(const std::int8_t* x, std::int64_t x_stride, const std::int8_t* panel_q,
                                             std::int64_t blocks, std::int32_t* dots) {
    const std::int64_t dots_stride = blocks * 16 * static_cast<std::int64_t>(sizeof(std::int32_t));
    for (std::int64_t b = 0; b < blocks; ++b) {
        _tile_zero(0);
        _tile_loadd(1, x + b * 32, x_stride);
        _tile_loadd(2, panel_q + b * kPanelBlockQBytes, 64);
        _tile_dpbssd(0, 1, 2);
        _tile_stored(0, dots + b * 16, dots_stride);
    }
}

#undef BLIP_QUANT_AMX_TARGET

}  // namespace amx_int8

#endif

}  // namespace blip::quant::detail
