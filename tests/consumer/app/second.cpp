// Second translation unit: including the header again must not duplicate any symbol.
#include <blip/blip.hpp>

int second_unit_check() {
    unsigned char not_an_image[4] = {1, 2, 3, 4};
    try {
        blip::decode_image_memory(not_an_image, sizeof not_an_image, "bytes");
    } catch (const blip::Error&) {
        return 0;
    }
    return 1;
}
