// Bicubic resize that reproduces Pillow 9.4's Image.resize(size, Image.BICUBIC) on 8-bit
// images bit for bit (src/libImaging/Resample.c, ImagingResample with the 8-bit passes).
//
// Pillow's algorithm, which this file implements:
// - Each axis gets its own filter: output pixel i is centred at (i + 0.5) * scale in the
//   input, scale = in_size / out_size. When shrinking, the bicubic support (2 pixels, a = -0.5)
//   is widened by the scale so that every input pixel contributes.
// - Weights are computed in double, divided by their sum, then converted to fixed point with
//   22 fractional bits, rounding half away from zero.
// - The horizontal pass runs first, over only the rows the vertical pass will read, and
//   clamps to 0..255. The vertical pass then reads that 8-bit intermediate.
// - A pass is skipped when its dimension is unchanged; with both unchanged the image is copied.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/image/image.hpp"

namespace blip {

namespace detail {

// Fractional bits of Pillow's fixed-point weights (PRECISION_BITS = 32 - 8 - 2).
inline constexpr int kResamplePrecisionBits = 22;

// Filter taps for one axis: output i reads `count[i]` input pixels from `first[i]` on, with
// the weights at `weights[offset[i]]`.
struct ResampleKernel {
    std::vector<int> first;
    std::vector<int> count;
    std::vector<std::size_t> offset;
    std::vector<std::int32_t> weights;
};

// Keys' cubic convolution kernel with a = -0.5, as Pillow evaluates it.
inline double bicubic_filter(double x) {
    constexpr double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

// Pillow's precompute_coeffs followed by normalize_coeffs_8bpc, for the box (0, in_size).
// NOTE: the weights are rounded from doubles. A compiler that contracts a * b + c into a fused
// multiply-add (for example GCC with an FMA-capable -march) could in principle change a weight
// that lies within one rounding step of a half-integer. No such case is known.
inline ResampleKernel compute_bicubic_kernel(int in_size, int out_size) {
    constexpr double support_unscaled = 2.0;
    // Pillow keeps the box as float, so in_size passes through float before the division.
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
    const double filter_scale = scale < 1.0 ? 1.0 : scale;
    const double support = support_unscaled * filter_scale;
    const double inverse_filter_scale = 1.0 / filter_scale;
    const double fixed_point_one = static_cast<double>(1 << kResamplePrecisionBits);

    ResampleKernel kernel;
    kernel.first.resize(static_cast<std::size_t>(out_size));
    kernel.count.resize(static_cast<std::size_t>(out_size));
    kernel.offset.resize(static_cast<std::size_t>(out_size));
    std::vector<double> taps;
    for (int i = 0; i < out_size; ++i) {
        const double center = (i + 0.5) * scale;
        int first = static_cast<int>(center - support + 0.5);
        if (first < 0) first = 0;
        int last = static_cast<int>(center + support + 0.5);
        if (last > in_size) last = in_size;
        const int count = last - first;

        taps.assign(static_cast<std::size_t>(count > 0 ? count : 0), 0.0);
        double sum = 0.0;
        for (int x = 0; x < count; ++x) {
            const double w = bicubic_filter((x + first - center + 0.5) * inverse_filter_scale);
            taps[static_cast<std::size_t>(x)] = w;
            sum += w;
        }
        kernel.first[static_cast<std::size_t>(i)] = first;
        kernel.count[static_cast<std::size_t>(i)] = count > 0 ? count : 0;
        kernel.offset[static_cast<std::size_t>(i)] = kernel.weights.size();
        for (double w : taps) {
            if (sum != 0.0) w /= sum;
            const double scaled = w * fixed_point_one;
            kernel.weights.push_back(static_cast<std::int32_t>(w < 0 ? -0.5 + scaled : 0.5 + scaled));
        }
    }
    return kernel;
}

// Pillow's clip8: the fixed-point sum shifted down to an integer, clamped to 0..255.
inline std::uint8_t clip_fixed_point(std::int32_t sum) {
    if (sum < 0) return 0;
    const std::int32_t value = sum >> kResamplePrecisionBits;
    return static_cast<std::uint8_t>(value > 255 ? 255 : value);
}

// Rounding term added to every sum before the shift.
inline constexpr std::int32_t kResampleHalf = std::int32_t{1} << (kResamplePrecisionBits - 1);

// Work (output bytes times taps) below which the passes stay on one thread.
inline constexpr std::int64_t kResampleParallelWork = std::int64_t{1} << 18;

// Output rows 0..rows-1 of `out` (width out.width) from input rows row_offset.. of `in`.
// Sums fit in int32, as in Pillow: the positive weights of one window add up to less than
// 2 * 2^22 and samples are below 2^8.
inline void resample_horizontal(const ImageU8& in, int row_offset, const ResampleKernel& kernel, ImageU8& out) {
    const int rows = out.height;
    const int width = out.width;
    const std::size_t in_stride = static_cast<std::size_t>(in.width) * 3;
    const std::size_t out_stride = static_cast<std::size_t>(width) * 3;
    const std::int64_t work = static_cast<std::int64_t>(out_stride) * rows *
                              (kernel.weights.size() / (kernel.first.empty() ? 1 : kernel.first.size()) + 1);
    (void)work;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (work > kResampleParallelWork)
#endif
    for (int y = 0; y < rows; ++y) {
        const std::uint8_t* in_row = in.pixels.data() + static_cast<std::size_t>(y + row_offset) * in_stride;
        std::uint8_t* out_row = out.pixels.data() + static_cast<std::size_t>(y) * out_stride;
        for (int x = 0; x < width; ++x) {
            const std::int32_t* k = kernel.weights.data() + kernel.offset[static_cast<std::size_t>(x)];
            const std::uint8_t* src = in_row + static_cast<std::size_t>(kernel.first[static_cast<std::size_t>(x)]) * 3;
            const int count = kernel.count[static_cast<std::size_t>(x)];
            std::int32_t r = kResampleHalf, g = kResampleHalf, b = kResampleHalf;
            for (int t = 0; t < count; ++t) {
                r += src[3 * t + 0] * k[t];
                g += src[3 * t + 1] * k[t];
                b += src[3 * t + 2] * k[t];
            }
            out_row[3 * x + 0] = clip_fixed_point(r);
            out_row[3 * x + 1] = clip_fixed_point(g);
            out_row[3 * x + 2] = clip_fixed_point(b);
        }
    }
}

// Output rows of `out` from rows of `in`, where the kernel's row indices are shifted down by
// row_offset (the first row the horizontal pass produced). Each output row accumulates whole
// input rows; integer sums do not depend on the order of the terms.
inline void resample_vertical(const ImageU8& in, int row_offset, const ResampleKernel& kernel, ImageU8& out) {
    const int rows = out.height;
    const std::size_t stride = static_cast<std::size_t>(out.width) * 3;
    const std::int64_t work = static_cast<std::int64_t>(stride) * rows *
                              (kernel.weights.size() / (kernel.first.empty() ? 1 : kernel.first.size()) + 1);
    (void)work;
#ifdef _OPENMP
#pragma omp parallel if (work > kResampleParallelWork)
#endif
    {
        std::vector<std::int32_t> sums(stride);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int y = 0; y < rows; ++y) {
            const std::int32_t* k = kernel.weights.data() + kernel.offset[static_cast<std::size_t>(y)];
            const int first = kernel.first[static_cast<std::size_t>(y)] - row_offset;
            const int count = kernel.count[static_cast<std::size_t>(y)];
            std::int32_t* sum = sums.data();
            for (std::size_t i = 0; i < stride; ++i) sum[i] = kResampleHalf;
            for (int t = 0; t < count; ++t) {
                const std::uint8_t* in_row = in.pixels.data() + static_cast<std::size_t>(first + t) * stride;
                const std::int32_t weight = k[t];
                for (std::size_t i = 0; i < stride; ++i) sum[i] += in_row[i] * weight;
            }
            std::uint8_t* out_row = out.pixels.data() + static_cast<std::size_t>(y) * stride;
            for (std::size_t i = 0; i < stride; ++i) out_row[i] = clip_fixed_point(sum[i]);
        }
    }
}

inline void check_image_layout(const ImageU8& image, const char* operation) {
    if (image.width < 1 || image.height < 1)
        throw Error(std::string(operation) + ": invalid image size " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + "; width and height must be at least 1");
    const std::size_t expected = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) * 3;
    if (image.pixels.size() != expected)
        throw Error(std::string(operation) + ": image of " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + " RGB pixels needs " + std::to_string(expected) +
                    " bytes but holds " + std::to_string(image.pixels.size()));
}

}  // namespace detail

// Resizes an RGB image to width x height exactly as Pillow 9.4's
// Image.resize((width, height), Image.BICUBIC) does for mode "RGB". Any size from 1x1 up.
inline ImageU8 resize_bicubic(const ImageU8& image, int width, int height) {
    detail::check_image_layout(image, "resize_bicubic");
    if (width < 1 || height < 1)
        throw Error("resize_bicubic: invalid target size " + std::to_string(width) + "x" + std::to_string(height) +
                    "; width and height must be at least 1");

    const bool need_horizontal = width != image.width;
    const bool need_vertical = height != image.height;
    if (!need_horizontal && !need_vertical) return image;

    detail::ResampleKernel vertical;
    int row_begin = 0, row_end = image.height;
    if (need_vertical) {
        vertical = detail::compute_bicubic_kernel(image.height, height);
        row_begin = vertical.first.front();
        row_end = vertical.first.back() + vertical.count.back();
    }

    ImageU8 horizontal_result;
    if (need_horizontal) {
        const detail::ResampleKernel horizontal = detail::compute_bicubic_kernel(image.width, width);
        horizontal_result.width = width;
        horizontal_result.height = row_end - row_begin;
        horizontal_result.pixels.resize(static_cast<std::size_t>(width) *
                                        static_cast<std::size_t>(horizontal_result.height) * 3);
        detail::resample_horizontal(image, row_begin, horizontal, horizontal_result);
        if (!need_vertical) return horizontal_result;
    }

    const ImageU8& vertical_input = need_horizontal ? horizontal_result : image;
    const int vertical_offset = need_horizontal ? row_begin : 0;
    ImageU8 out;
    out.width = vertical_input.width;
    out.height = height;
    out.pixels.resize(static_cast<std::size_t>(out.width) * static_cast<std::size_t>(height) * 3);
    detail::resample_vertical(vertical_input, vertical_offset, vertical, out);
    return out;
}

}  // namespace blip
