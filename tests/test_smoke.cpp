#include <blip/core/dtype.hpp>

#include "support/golden.hpp"

TEST_CASE("dtype table sizes") {
    CHECK(blip::dtype_bytes(blip::DType::Q8_0, 64) == 68);
    CHECK(blip::dtype_bytes(blip::DType::F16, 3) == 6);
}

TEST_CASE("golden folder present") {
    BLIP_REQUIRE_GOLDEN();
    CHECK(blip_test::read_npy(blip_test::golden_dir() / "preprocess" / "cats.png.384.npy").size() == 3 * 384 * 384);
}
