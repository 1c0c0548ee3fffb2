// Functions that each translation unit of this test defines, decoding the same BMP.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

// A 2x2 24-bit BMP in memory, bottom-up rows padded to 4 bytes.
inline std::string make_test_bmp() {
    const unsigned char header[54] = {
        'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0,  // file header: size 70, pixels at 54
        40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 24, 0,  // BITMAPINFOHEADER: 2x2, 24 bits
        0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    // Rows from the bottom: BGR BGR + 2 padding bytes each.
    const unsigned char rows[16] = {30, 20, 10, 60, 50, 40, 0, 0, 90, 80, 70, 120, 110, 100, 0, 0};
    return std::string(reinterpret_cast<const char*>(header), 54) + std::string(reinterpret_cast<const char*>(rows), 16);
}

// RGB pixels of make_test_bmp(), top row first.
inline std::vector<std::uint8_t> expected_test_pixels() {
    return {70, 80, 90, 100, 110, 120, 10, 20, 30, 40, 50, 60};
}

std::vector<std::uint8_t> decode_in_second_unit(const std::string& bytes);
std::vector<std::uint8_t> decode_with_own_stb(const std::string& bytes);
