// 8-bit RGB images and their decoding from JPEG, PNG, BMP, GIF, TGA and binary PNM files,
// and from still WebP images when BLIP_WITH_WEBP is defined and the program links libwebp.
//
// Decoding reproduces what Pillow 9.4 gives for `Image.open(path).convert("RGB")`: alpha is
// dropped without compositing, grayscale and palette images are expanded to RGB, and EXIF
// orientation is ignored. JPEG pixels may differ by a few levels, because stb_image and
// libjpeg-turbo use different IDCT and chroma upsampling. The other formats match exactly,
// except for the cases marked NOTE below. WebP images are decoded by libwebp, as in Pillow.
#pragma once

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/image/stb.hpp"

#if defined(BLIP_WITH_WEBP)
#include <webp/decode.h>
#endif

namespace blip {

// An RGB image: row-major HWC, 3 bytes per pixel, no row padding.
struct ImageU8 {
    int width = 0, height = 0;
    std::vector<std::uint8_t> pixels;
};

// Limits that decoding enforces before it allocates the pixel buffer.
struct DecodeLimits {
    // Maximum width * height. The default is Pillow's DecompressionBombError threshold,
    // 2 * Image.MAX_IMAGE_PIXELS = 178956970 pixels (about 512 MiB as RGB).
    std::int64_t max_pixels = 178956970;
};

namespace detail {

enum class ImageFormat { Unknown, Jpeg, Png, Bmp, Gif, Pnm, WebP };

inline const char* image_format_name(ImageFormat format) {
    switch (format) {
        case ImageFormat::Jpeg: return "JPEG";
        case ImageFormat::Png: return "PNG";
        case ImageFormat::Bmp: return "BMP";
        case ImageFormat::Gif: return "GIF";
        case ImageFormat::Pnm: return "PNM";
        case ImageFormat::WebP: return "WebP";
        case ImageFormat::Unknown: break;
    }
    return "image";
}

// Identifies a format by its signature bytes. TGA has no signature, so it is Unknown here
// and left to stb_image's own test.
inline ImageFormat sniff_image_format(const std::uint8_t* data, std::size_t size) {
    static const std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (size >= 8 && std::memcmp(data, png_signature, 8) == 0) return ImageFormat::Png;
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::Jpeg;
    if (size >= 4 && std::memcmp(data, "GIF8", 4) == 0) return ImageFormat::Gif;
    if (size >= 2 && data[0] == 'B' && data[1] == 'M') return ImageFormat::Bmp;
    if (size >= 2 && data[0] == 'P' && (data[1] == '5' || data[1] == '6')) return ImageFormat::Pnm;
    if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0)
        return ImageFormat::WebP;
    return ImageFormat::Unknown;
}

inline void check_pixel_limit(std::int64_t width, std::int64_t height, const std::string& name,
                              const DecodeLimits& limits) {
    if (width <= 0 || height <= 0)
        throw Error(name + ": invalid image size " + std::to_string(width) + "x" + std::to_string(height) +
                    "; width and height must be at least 1");
    if (width > INT_MAX || height > INT_MAX)
        throw Error(name + ": image size " + std::to_string(width) + "x" + std::to_string(height) +
                    " is not supported; width and height must be at most " + std::to_string(INT_MAX));
    if (width > limits.max_pixels / height)
        throw Error(name + ": image is " + std::to_string(width) + "x" + std::to_string(height) +
                    " pixels, more than the limit of " + std::to_string(limits.max_pixels) +
                    " pixels; downscale the image or raise DecodeLimits::max_pixels");
}

// Decodes a still WebP image with libwebp, the decoder of Pillow's WebP plugin. With Debian's
// libwebp 1.2.4 the tests get Pillow's pixels exactly. Alpha is dropped as in the other formats.
inline ImageU8 decode_webp(const std::uint8_t* data, std::size_t size, const std::string& name,
                           const DecodeLimits& limits) {
#if defined(BLIP_WITH_WEBP)
    WebPBitstreamFeatures features;
    const VP8StatusCode status = WebPGetFeatures(data, size, &features);
    if (status == VP8_STATUS_NOT_ENOUGH_DATA) throw Error(name + ": WebP image is truncated");
    if (status != VP8_STATUS_OK)
        throw Error(name + ": damaged WebP image (libwebp status " + std::to_string(static_cast<int>(status)) + ")");
    if (features.has_animation)
        throw Error(name + ": animated WebP images are not supported; save the frame to caption as PNG or JPEG");
    check_pixel_limit(features.width, features.height, name, limits);
    if (features.width > INT_MAX / 3)
        throw Error(name + ": WebP image is " + std::to_string(features.width) + " pixels wide; at most " +
                    std::to_string(INT_MAX / 3) + " are supported");
    ImageU8 image;
    image.width = features.width;
    image.height = features.height;
    image.pixels.resize(static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) * 3);
    if (WebPDecodeRGBInto(data, size, image.pixels.data(), image.pixels.size(), image.width * 3) == nullptr)
        throw Error(name + ": damaged or truncated WebP image; libwebp could not decode it");
    return image;
#else
    (void)data;
    (void)size;
    (void)limits;
    throw Error(name + ": WebP images need a build with libwebp: install libwebp-dev and rebuild (our CMake " +
                "build then defines BLIP_WITH_WEBP), or convert the image to PNG or JPEG");
#endif
}

// Python's round() on a double: nearest integer, ties to even.
inline double round_half_even(double value) {
    double floor_value = std::floor(value);
    const double fraction = value - floor_value;
    if (fraction > 0.5 || (fraction == 0.5 && std::fmod(floor_value, 2.0) != 0.0)) floor_value += 1.0;
    return floor_value;
}

// Binary PNM (P5 graymap, P6 pixmap), decoded here instead of by stb_image because stb_image
// v2.27 neither scales samples by maxval nor checks for truncated data, and it reads out of
// bounds when it converts 16-bit graymaps to RGB (CVE-2021-42716). Sample values follow
// Pillow 9.4's PpmImagePlugin and convert("RGB"):
// - maxval 255: samples as stored.
// - P6 with any other maxval: min(255, round(v / maxval * 255)).
// - P5 with maxval below 255: the same formula.
// - P5 with maxval above 255: Pillow opens mode "I" with min(65535, round(v / maxval * 65535))
//   (samples as stored when maxval is 65535), and convert("RGB") clamps that to 0..255,
//   so every value of 255 or more becomes white.
inline ImageU8 decode_pnm(const std::uint8_t* data, std::size_t size, const std::string& name,
                          const DecodeLimits& limits) {
    const bool is_rgb = data[1] == '6';
    std::size_t position = 2;
    auto is_space = [](std::uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };

    // Reads one decimal header field, skipping whitespace and '#' comments before it, and
    // consumes the single whitespace byte that must end it.
    auto read_field = [&](const char* field) -> std::int64_t {
        while (position < size) {
            if (is_space(data[position])) {
                ++position;
            } else if (data[position] == '#') {
                while (position < size && data[position] != '\n' && data[position] != '\r') ++position;
            } else {
                break;
            }
        }
        std::int64_t value = 0;
        int digits = 0;
        while (position < size && data[position] >= '0' && data[position] <= '9') {
            if (++digits > 10)
                throw Error(name + ": invalid PNM header: " + field + " has more than 10 digits");
            value = value * 10 + (data[position] - '0');
            ++position;
        }
        if (digits == 0)
            throw Error(name + ": invalid PNM header: " + field + " is missing or not a decimal number");
        if (position >= size || !is_space(data[position]))
            throw Error(name + ": invalid PNM header: " + field + " is not followed by whitespace");
        ++position;
        return value;
    };

    const std::int64_t width = read_field("width");
    const std::int64_t height = read_field("height");
    const std::int64_t maxval = read_field("maxval");
    if (maxval < 1 || maxval > 65535)
        throw Error(name + ": invalid PNM header: maxval " + std::to_string(maxval) + " is outside 1..65535");
    check_pixel_limit(width, height, name, limits);

    const int channels = is_rgb ? 3 : 1;
    const std::size_t sample_bytes = maxval > 255 ? 2 : 1;
    const std::size_t pixel_count = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
    const std::size_t bytes_per_pixel = static_cast<std::size_t>(channels) * sample_bytes;
    if ((size - position) / bytes_per_pixel < pixel_count)
        throw Error(name + ": PNM data is truncated: the raster needs " + std::to_string(pixel_count) + " pixels of " +
                    std::to_string(bytes_per_pixel) + " bytes but only " + std::to_string(size - position) +
                    " bytes follow the header");

    // Maps every possible stored sample to its 8-bit RGB value.
    std::vector<std::uint8_t> table(static_cast<std::size_t>(sample_bytes == 2 ? 65536 : 256));
    for (std::size_t v = 0; v < table.size(); ++v) {
        double value = 0;
        if (maxval == 255) {
            value = static_cast<double>(v);
        } else if (is_rgb || maxval < 255) {
            value = std::fmin(255.0, round_half_even(static_cast<double>(v) / maxval * 255.0));
        } else if (maxval == 65535) {
            value = static_cast<double>(v);
        } else {
            value = std::fmin(65535.0, round_half_even(static_cast<double>(v) / maxval * 65535.0));
        }
        table[v] = static_cast<std::uint8_t>(std::fmin(value, 255.0));
    }

    ImageU8 image;
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    image.pixels.resize(pixel_count * 3);
    const std::uint8_t* raster = data + position;
    for (std::size_t i = 0; i < pixel_count; ++i) {
        for (int c = 0; c < 3; ++c) {
            const std::size_t sample = i * channels + (is_rgb ? c : 0);
            const std::size_t stored = sample_bytes == 2
                                           ? (static_cast<std::size_t>(raster[2 * sample]) << 8) | raster[2 * sample + 1]
                                           : raster[sample];
            image.pixels[i * 3 + c] = table[stored];
        }
    }
    return image;
}

// Rejects a JPEG whose Huffman table (DHT segment) declares more than 256 codes. stb_image
// v2.27 does not check that count and writes past its 257-entry code-length array
// (stbi__build_huffman), corrupting its decoder state. The walk follows segment lengths and
// skips entropy-coded data up to the next marker, as stb_image does on every input it can
// decode. Where the two walks could disagree, stb_image fails for another reason first.
inline void check_jpeg_huffman_tables(const std::uint8_t* data, std::size_t size, const std::string& name) {
    std::size_t position = 2;  // after SOI
    auto byte_at = [&](std::size_t i) -> unsigned { return i < size ? data[i] : 0u; };
    while (position < size) {
        // Find the next marker: 0xFF, any fill 0xFF bytes, then the marker code.
        if (data[position] != 0xFF) {
            ++position;
            continue;
        }
        while (position < size && data[position] == 0xFF) ++position;
        if (position >= size) return;
        const unsigned marker = data[position++];
        if (marker == 0xD9) return;                                       // EOI
        if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no length
        const std::size_t length = (byte_at(position) << 8) | byte_at(position + 1);
        if (marker == 0xC4) {
            // Same loop as stb_image's DHT parser: tables are read until the length is used up.
            long remaining = static_cast<long>(length) - 2;
            std::size_t table = position + 2;
            while (remaining > 0) {
                unsigned codes = 0;
                for (std::size_t i = 1; i <= 16; ++i) codes += byte_at(table + i);
                if (codes > 256)
                    throw Error(name + ": invalid JPEG: a Huffman table (DHT) declares " + std::to_string(codes) +
                                " codes, more than the 256 allowed");
                table += 17 + codes;
                remaining -= 17 + static_cast<long>(codes);
            }
        }
        if (length < 2) return;  // stb_image rejects this segment
        position += length;
        if (marker == 0xDA) {
            // Entropy-coded data: skip to the next marker that is not a stuffed 0xFF00 or RSTn.
            while (position < size) {
                if (data[position] != 0xFF) {
                    ++position;
                    continue;
                }
                std::size_t next = position;
                while (next < size && data[next] == 0xFF) ++next;
                if (next >= size) return;
                if (data[next] == 0x00 || (data[next] >= 0xD0 && data[next] <= 0xD7)) {
                    position = next + 1;
                    continue;
                }
                position = next - 1;  // at the last 0xFF before the marker code
                break;
            }
        }
    }
}

// A memory buffer read through stb_image's callback interface. Reading through callbacks
// shows when stb_image requests bytes past the end. Its decoders continue with zeros there
// instead of failing, so `read_past_end` marks the data as truncated.
struct StbReader {
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
    std::size_t position = 0;
    bool read_past_end = false;
};

inline int stb_read(void* user, char* out, int count) {
    auto* reader = static_cast<StbReader*>(user);
    if (count <= 0) return 0;
    const std::size_t remaining = reader->size - reader->position;
    if (remaining == 0) {
        reader->read_past_end = true;
        return 0;
    }
    const std::size_t n = remaining < static_cast<std::size_t>(count) ? remaining : static_cast<std::size_t>(count);
    std::memcpy(out, reader->data + reader->position, n);
    reader->position += n;
    // stb_image ignores short reads in a few places (uncompressed TGA rows), so the rest of
    // the request is zeroed to keep its output deterministic.
    if (n < static_cast<std::size_t>(count)) std::memset(out + n, 0, static_cast<std::size_t>(count) - n);
    return static_cast<int>(n);
}

inline void stb_skip(void* user, int count) {
    auto* reader = static_cast<StbReader*>(user);
    if (count < 0) {
        const std::size_t back = static_cast<std::size_t>(-static_cast<long long>(count));
        reader->position = back > reader->position ? 0 : reader->position - back;
    } else {
        const std::size_t remaining = reader->size - reader->position;
        reader->position += static_cast<std::size_t>(count) < remaining ? static_cast<std::size_t>(count) : remaining;
    }
}

inline int stb_eof(void* user) {
    auto* reader = static_cast<StbReader*>(user);
    return reader->position >= reader->size ? 1 : 0;
}

inline const stbi_io_callbacks& stb_callbacks() {
    static const stbi_io_callbacks callbacks = {&stb_read, &stb_skip, &stb_eof};
    return callbacks;
}

// True for a PNG whose IHDR declares 16-bit grayscale without alpha (colour type 0).
inline bool is_png_gray16(const std::uint8_t* data, std::size_t size) {
    // Signature (8), IHDR length (4) and type (4), width (4), height (4), bit depth, colour type.
    if (size < 26 || std::memcmp(data + 12, "IHDR", 4) != 0) return false;
    return data[24] == 16 && data[25] == 0;
}

struct StbFree {
    void operator()(void* pixels) const { stbi_image_free(pixels); }
};

// stb_image keeps its last failure reason per thread and leaves it unchanged on some failures,
// so it is cleared before each call where our private copy makes that possible.
inline void clear_stb_reason() {
#ifdef BLIP_STB_IMAGE_PRIVATE_COPY
    stbi__g_failure_reason = nullptr;
#endif
}

inline std::string stb_reason() {
    const char* reason = stbi_failure_reason();
    return reason ? reason : "no reason given";
}

inline ImageU8 decode_with_stb(const std::uint8_t* data, std::size_t size, const std::string& name,
                               ImageFormat format, const DecodeLimits& limits) {
    const std::string kind = image_format_name(format);
    if (format == ImageFormat::Jpeg) check_jpeg_huffman_tables(data, size, name);
    StbReader reader{data, size, 0, false};
    int width = 0, height = 0, channels = 0;
    clear_stb_reason();
    if (!stbi_info_from_callbacks(&stb_callbacks(), &reader, &width, &height, &channels)) {
        if (format == ImageFormat::Unknown)
            throw Error(name + ": not a JPEG, PNG, BMP, GIF, TGA or binary PNM (P5/P6) image (stb_image: " +
                        stb_reason() + ")");
        throw Error(name + ": cannot decode " + kind + " header: " + stb_reason() + " (stb_image)");
    }
    check_pixel_limit(width, height, name, limits);

    ImageU8 image;
    image.width = width;
    image.height = height;
    image.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
    reader = StbReader{data, size, 0, false};
    clear_stb_reason();
    int decoded_width = 0, decoded_height = 0, file_channels = 0;

    auto fail = [&]() -> Error {
        const std::string reason = stb_reason();
        // stb_image v2.27 reports "outofdata" only for a PNG chunk that extends past the input.
        if (reader.read_past_end || reason == "outofdata")
            return Error(name + ": " + kind + " data is truncated: the decoder needed bytes past the end of the " +
                         std::to_string(size) + "-byte input (stb_image: " + reason + ")");
        return Error(name + ": cannot decode " + kind + " image: " + reason + " (stb_image)");
    };
    auto check_result = [&](const void* pixels) {
        if (!pixels) throw fail();
        if (reader.read_past_end)
            throw Error(name + ": " + kind + " data is truncated: the decoder needed bytes past the end of the " +
                        std::to_string(size) + "-byte input");
        if (decoded_width != width || decoded_height != height)
            throw Error(name + ": " + kind + " decoder returned " + std::to_string(decoded_width) + "x" +
                        std::to_string(decoded_height) + " pixels but the header says " + std::to_string(width) +
                        "x" + std::to_string(height));
    };

    if (format == ImageFormat::Png && is_png_gray16(data, size)) {
        // Pillow 9.4 opens 16-bit grayscale PNG as mode "I" and convert("RGB") clamps each value
        // to 0..255, so every sample of 255 or more becomes white. stb_image would keep the high
        // byte instead; we reproduce Pillow. 16-bit RGB, RGBA and gray+alpha PNGs need nothing
        // special: Pillow unpacks them to their high byte, as stb_image does.
        std::unique_ptr<stbi_us, StbFree> pixels(
            stbi_load_16_from_callbacks(&stb_callbacks(), &reader, &decoded_width, &decoded_height, &file_channels, 1));
        check_result(pixels.get());
        const std::size_t count = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
        for (std::size_t i = 0; i < count; ++i) {
            const stbi_us value = pixels.get()[i];
            const std::uint8_t gray = static_cast<std::uint8_t>(value > 255 ? 255 : value);
            image.pixels[i * 3 + 0] = image.pixels[i * 3 + 1] = image.pixels[i * 3 + 2] = gray;
        }
        return image;
    }

    // Asking stb_image for 3 channels equals Pillow's convert("RGB"): gray is replicated, alpha
    // is dropped without compositing, palettes are expanded, 16-bit samples keep their high byte.
    // NOTE: two rare inputs still differ from Pillow 9.4. Transparent pixels of a GIF's first
    // frame come out black, where Pillow gives the transparent index's palette colour. Channels
    // of 16-bit (5-6-5, 5-5-5) BMPs can be 1 level higher, because stb replicates the top bits
    // where Pillow computes floor(v * 255 / 31).
    std::unique_ptr<stbi_uc, StbFree> pixels(
        stbi_load_from_callbacks(&stb_callbacks(), &reader, &decoded_width, &decoded_height, &file_channels, 3));
    check_result(pixels.get());
    std::memcpy(image.pixels.data(), pixels.get(), image.pixels.size());
    return image;
}

}  // namespace detail

// Decodes an image held in memory to RGB. `name` identifies the data in error messages.
// Throws blip::Error for empty, unknown, damaged or truncated data and for images over
// `limits.max_pixels`.
inline ImageU8 decode_image_memory(const void* data, std::size_t size, const std::string& name,
                                   const DecodeLimits& limits = {}) {
    if (size == 0 || data == nullptr) throw Error(name + ": image data is empty");
    if (size > static_cast<std::size_t>(INT_MAX))
        throw Error(name + ": image data is " + std::to_string(size) + " bytes; inputs over " +
                    std::to_string(INT_MAX) + " bytes are not supported");
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    const detail::ImageFormat format = detail::sniff_image_format(bytes, size);
    if (format == detail::ImageFormat::Pnm) return detail::decode_pnm(bytes, size, name, limits);
    if (format == detail::ImageFormat::WebP) return detail::decode_webp(bytes, size, name, limits);
    return detail::decode_with_stb(bytes, size, name, format, limits);
}

// Reads and decodes an image file to RGB. Throws blip::Error naming `path` when the file
// cannot be read or decoded.
inline ImageU8 decode_image_file(const std::string& path, const DecodeLimits& limits = {}) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) throw Error(path + ": cannot open image file: " + std::strerror(errno));

    std::vector<std::uint8_t> bytes;
    std::vector<std::uint8_t> chunk(1 << 16);
    for (;;) {
        const std::size_t n = std::fread(chunk.data(), 1, chunk.size(), file.get());
        bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
        if (bytes.size() > static_cast<std::size_t>(INT_MAX))
            throw Error(path + ": image file is larger than " + std::to_string(INT_MAX) +
                        " bytes, which is not supported");
        if (n < chunk.size()) break;
    }
    if (std::ferror(file.get())) throw Error(path + ": cannot read image file: " + std::strerror(errno));
    if (bytes.empty()) throw Error(path + ": image file is empty");
    return decode_image_memory(bytes.data(), bytes.size(), path, limits);
}

}  // namespace blip
