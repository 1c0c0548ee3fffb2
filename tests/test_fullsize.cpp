// The base and large captioners at full size, with weights rebuilt from their names,
// against transformers 4.30.2 on cats.png: image_embeds, first-step logits and the greedy
// caption (max_length 30).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "blip/model/caption.hpp"
#include "support/fullsize.hpp"
#include "support/golden.hpp"

namespace test_fullsize {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void check_fullsize_captioner(const std::string& name) {
    const std::filesystem::path golden = blip_test::golden_dir();
    auto start = std::chrono::steady_clock::now();
    blip_test::FullsizeModel built = blip_test::build_fullsize_model(name);
    MESSAGE(name << ": built in " << seconds_since(start) << " s");
    CHECK(built.checked_sums > 0);
    CHECK(built.sum_mismatches.empty());
    for (const auto& mismatch : built.sum_mismatches) MESSAGE(mismatch);
    REQUIRE(built.sum_mismatches.empty());

    const blip::BlipForConditionalGeneration model(built.file);
    const auto pixels = blip_test::read_npy(golden / "preprocess" / "cats.png.384.npy");
    const std::vector<float> pixel_values(pixels.data.begin(), pixels.data.end());

    start = std::chrono::steady_clock::now();
    const std::vector<float> embeds = model.vision_model.forward(pixel_values);
    MESSAGE(name << ": vision forward in " << seconds_since(start) << " s");
    const auto expected_embeds = blip_test::read_npy(golden / "fullsize" / (name + ".cats.png.image_embeds.npy"));
    REQUIRE(embeds.size() == expected_embeds.size());
    const double embeds_error = blip_test::max_abs_diff(embeds, expected_embeds);
    MESSAGE(name << ": image_embeds max error " << embeds_error);
    CHECK(embeds_error < 1e-3);

    const std::vector<float> logits = model.decoder_logits(embeds, {model.config.tokens.bos});
    const auto expected_logits = blip_test::read_npy(golden / "fullsize" / (name + ".cats.png.logits_step0.npy"));
    REQUIRE(logits.size() == expected_logits.size());
    const double logits_error = blip_test::max_abs_diff(logits, expected_logits);
    MESSAGE(name << ": logits_step0 max error " << logits_error);
    CHECK(logits_error < 1e-2);

    const auto reference = blip_test::read_json(golden / "fullsize" / (name + ".cats.png.json"));
    blip::GenerationConfig generation;
    generation.max_length = 30;
    start = std::chrono::steady_clock::now();
    const std::vector<std::int32_t> ids = model.generate(embeds, {}, generation);
    MESSAGE(name << ": greedy decoding of " << ids.size() << " tokens in " << seconds_since(start) << " s");
    const auto expected_ids = reference.at("greedy_max30").get<std::vector<std::int32_t>>();
    CHECK(ids == expected_ids);
}

}  // namespace

TEST_CASE("full-size base captioner") {
    BLIP_REQUIRE_GOLDEN();
    check_fullsize_captioner("blip-image-captioning-base");
}

TEST_CASE("full-size large captioner") {
    BLIP_REQUIRE_GOLDEN();
    check_fullsize_captioner("blip-image-captioning-large");
}

}  // namespace test_fullsize
