// BlipImageProcessor (transformers 4.30.2) on an RGB image: bicubic resize, rescale and
// normalize into the float CHW tensor that the vision encoder takes as pixel_values.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/image/image.hpp"
#include "blip/image/resize.hpp"
#include "blip/model/config.hpp"

namespace blip {

namespace detail {

// Largest accepted PreprocessConfig height and width. The sizes come from model files, so
// a damaged file must not turn into a huge allocation; BLIP checkpoints use 384.
inline constexpr std::int64_t kMaxPreprocessSide = 16384;

inline void check_preprocess_config(const PreprocessConfig& config) {
    if (config.height < 1 || config.height > kMaxPreprocessSide || config.width < 1 ||
        config.width > kMaxPreprocessSide)
        throw Error("preprocess config: invalid size height=" + std::to_string(config.height) +
                    ", width=" + std::to_string(config.width) + "; each must be in 1.." +
                    std::to_string(kMaxPreprocessSide));
    if (config.do_resize && config.resample != 3)
        throw Error("preprocess config: resample=" + std::to_string(config.resample) +
                    " is not supported; only 3 (PIL.Image.BICUBIC) is implemented");
    if (config.do_rescale && !std::isfinite(config.rescale_factor))
        throw Error("preprocess config: rescale_factor is not a finite number");
    if (config.do_normalize) {
        for (int c = 0; c < 3; ++c) {
            if (!std::isfinite(config.image_mean[c]) || !std::isfinite(config.image_std[c]) ||
                config.image_std[c] == 0.0f)
                throw Error("preprocess config: image_mean[" + std::to_string(c) + "]=" +
                            std::to_string(config.image_mean[c]) + ", image_std[" + std::to_string(c) +
                            "]=" + std::to_string(config.image_std[c]) +
                            "; both must be finite and the std non-zero");
        }
    }
}

// The float value of every byte value in every channel. Rescaling multiplies in double and
// rounds once to float32, as numpy does for uint8 * python float followed by astype(float32);
// normalization then computes (x - mean) / std in float32.
inline std::array<std::array<float, 256>, 3> preprocess_lookup_table(const PreprocessConfig& config) {
    std::array<std::array<float, 256>, 3> table{};
    for (int c = 0; c < 3; ++c) {
        for (int v = 0; v < 256; ++v) {
            float x = config.do_rescale ? static_cast<float>(static_cast<double>(v) * config.rescale_factor)
                                        : static_cast<float>(v);
            if (config.do_normalize) x = (x - config.image_mean[c]) / config.image_std[c];
            table[c][v] = x;
        }
    }
    return table;
}

}  // namespace detail

// Resizes (when config.do_resize), rescales and normalizes `image` into `out`, a caller
// buffer of 3 * config.height * config.width floats laid out CHW. Without do_resize the
// image must already have the configured size.
inline void preprocess_image(const ImageU8& image, const PreprocessConfig& config, float* out) {
    detail::check_image_layout(image, "preprocess_image");
    detail::check_preprocess_config(config);
    const int height = static_cast<int>(config.height);
    const int width = static_cast<int>(config.width);

    ImageU8 resized;
    const ImageU8* source = &image;
    if (config.do_resize) {
        resized = resize_bicubic(image, width, height);
        source = &resized;
    } else if (image.width != width || image.height != height) {
        throw Error("preprocess_image: image is " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + " but do_resize is off and the config expects " +
                    std::to_string(width) + "x" + std::to_string(height) + "; resize the image first");
    }

    const auto table = detail::preprocess_lookup_table(config);
    const std::size_t plane = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
    const std::uint8_t* pixels = source->pixels.data();
    for (int c = 0; c < 3; ++c) {
        const std::array<float, 256>& channel_table = table[static_cast<std::size_t>(c)];
        float* channel_out = out + static_cast<std::size_t>(c) * plane;
        for (std::size_t i = 0; i < plane; ++i) channel_out[i] = channel_table[pixels[3 * i + static_cast<std::size_t>(c)]];
    }
}

// Same as above, returning a new float tensor of shape [3, config.height, config.width].
inline std::vector<float> preprocess_image(const ImageU8& image, const PreprocessConfig& config) {
    detail::check_preprocess_config(config);
    std::vector<float> out(3 * static_cast<std::size_t>(config.height) * static_cast<std::size_t>(config.width));
    preprocess_image(image, config, out.data());
    return out;
}

}  // namespace blip
