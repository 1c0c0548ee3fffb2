// Compilation of stb_image (Debian libstb-dev, v2.27) into programs that use these headers.
//
// By default every translation unit that includes this header compiles its own private copy
// of stb_image: STB_IMAGE_STATIC gives all stb functions internal linkage, so two .cpp files
// of one program can both include the library without duplicate symbols. The cost is compile
// time and one copy of the used decoders per translation unit.
//
// An application that compiles stb_image itself keeps working in two ways:
// - If <stb_image.h> was already included when this header is reached, the application's
//   declarations are used and its own STB_IMAGE_IMPLEMENTATION must be linked in.
// - Defining BLIP_STB_IMAGE_EXTERNAL before including any blip header does the same without
//   the ordering requirement.
// In both cases the application's stb build decides which formats decode and must not have
// set stbi_set_flip_vertically_on_load. Including <stb_image.h> with STB_IMAGE_IMPLEMENTATION
// after a blip header in the same translation unit does not compile, because stb's
// implementation has no include guard: include it before the blip headers instead.
//
// The private copy decodes JPEG, PNG, BMP, GIF and TGA only. PNM is decoded by our own code
// (image.hpp), and the HDR, PSD and PIC decoders are left out to keep the attack surface small.
#pragma once

#if defined(STBI_INCLUDE_STB_IMAGE_H)

// The application's stb_image declarations are already in this translation unit. Including
// the file again would compile its implementation a second time if STB_IMAGE_IMPLEMENTATION
// is still defined.

#elif defined(BLIP_STB_IMAGE_EXTERNAL)

#include <stb_image.h>

#else

#define BLIP_STB_IMAGE_PRIVATE_COPY 1

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wunused-parameter"
#pragma clang diagnostic ignored "-Wsign-compare"
#pragma clang diagnostic ignored "-Wmissing-field-initializers"
#pragma clang diagnostic ignored "-Wimplicit-fallthrough"
#pragma clang diagnostic ignored "-Wcast-qual"
#pragma clang diagnostic ignored "-Wdouble-promotion"
#pragma clang diagnostic ignored "-Wunused-but-set-variable"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#elif defined(_MSC_VER)
#pragma warning(push)
#pragma warning(disable : 4244 4245 4456 4457 4505)
#endif

#include <stb_image.h>

#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#elif defined(_MSC_VER)
#pragma warning(pop)
#endif

#undef STB_IMAGE_IMPLEMENTATION
#undef STBI_ONLY_JPEG
#undef STBI_ONLY_PNG
#undef STBI_ONLY_BMP
#undef STBI_ONLY_GIF
#undef STBI_ONLY_TGA

#endif
