// First translation unit with the library's private stb_image copy.
#include <blip/image/image.hpp>
#include <blip/image/preprocess.hpp>
#include <blip/image/resize.hpp>

#include <cstdio>

#include "decode_functions.hpp"

int main() {
    const std::string bmp = make_test_bmp();
    const std::vector<std::uint8_t> expected = expected_test_pixels();
    const blip::ImageU8 image = blip::decode_image_memory(bmp.data(), bmp.size(), "test.bmp");
    int failures = 0;
    if (image.pixels != expected) {
        std::fprintf(stderr, "main.cpp: decoded pixels differ from the BMP's\n");
        ++failures;
    }
    if (decode_in_second_unit(bmp) != expected) {
        std::fprintf(stderr, "second.cpp: decoded pixels differ from the BMP's\n");
        ++failures;
    }
    if (decode_with_own_stb(bmp) != expected) {
        std::fprintf(stderr, "own_stb.cpp: decoded pixels differ from the BMP's\n");
        ++failures;
    }
    if (failures == 0) std::printf("all translation units decode the test BMP\n");
    return failures == 0 ? 0 : 1;
}
