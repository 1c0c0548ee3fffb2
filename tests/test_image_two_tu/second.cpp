// Second translation unit with its own private stb_image copy; linking it with main.cpp
// fails if the copies had external linkage.
#include <blip/image/image.hpp>
#include <blip/image/preprocess.hpp>
#include <blip/image/resize.hpp>

#include "decode_functions.hpp"

std::vector<std::uint8_t> decode_in_second_unit(const std::string& bytes) {
    const blip::ImageU8 image = blip::decode_image_memory(bytes.data(), bytes.size(), "second.bmp");
    // Also instantiate the resize and preprocess code here.
    const blip::ImageU8 same = blip::resize_bicubic(image, image.width, image.height);
    blip::PreprocessConfig config;
    config.height = 4;
    config.width = 4;
    if (blip::preprocess_image(image, config).size() != 48) return {};
    return same.pixels;
}
