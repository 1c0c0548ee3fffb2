// The tile configuration of Intel AMX, shared by the bf16 and the 8-bit integer tile products.
#pragma once

#include <cstdint>

#include "blip/quant/cpu.hpp"

namespace blip::quant::detail {

// The 64-byte tile configuration of LDTILECFG, palette 1.
struct alignas(64) AmxTileConfig {
    std::uint8_t palette = 1;
    std::uint8_t start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t bytes_per_row[16] = {};
    std::uint8_t rows[16] = {};
};
static_assert(sizeof(AmxTileConfig) == 64, "LDTILECFG reads 64 bytes");

#if BLIP_QUANT_X86
// Loads `config` into the tile unit of the calling thread. GCC 12's _tile_loadconfig passes an
// 8-byte memory operand, so the compiler may drop the stores to the rest of a configuration
// built just before. It did: the first tile instruction then raised SIGILL. This operand
// covers all 64 bytes.
inline void load_tile_config(const AmxTileConfig& config) { __asm__ volatile("ldtilecfg %0" : : "m"(config)); }
#endif

}  // namespace blip::quant::detail
