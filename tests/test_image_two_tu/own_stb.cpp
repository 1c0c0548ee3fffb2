// An application that compiles stb_image itself, with external linkage, and includes our
// headers afterwards: the library must use the application's stb_image here.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#include <blip/image/image.hpp>

#include "decode_functions.hpp"

#ifdef BLIP_STB_IMAGE_PRIVATE_COPY
#error "blip compiled a private stb_image copy although the application already includes stb_image"
#endif

std::vector<std::uint8_t> decode_with_own_stb(const std::string& bytes) {
    // The application's own stb_image works as usual beside the library.
    int width = 0, height = 0, channels = 0;
    stbi_uc* pixels = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                                            static_cast<int>(bytes.size()), &width, &height, &channels, 3);
    if (!pixels || width != 2 || height != 2) return {};
    stbi_image_free(pixels);
    return blip::decode_image_memory(bytes.data(), bytes.size(), "own.bmp").pixels;
}
