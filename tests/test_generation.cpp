// Generation strategies on the tiny captioning checkpoint against transformers 4.30.2: beam
// search, repetition penalty, minimum length and batched greedy search token for token;
// batches against single rows; sampling reproducibility and its distribution; streaming.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/generate/generate.hpp"
#include "blip/model/caption.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"

namespace {

namespace fs = std::filesystem;

// Converts the tiny captioner once per test program and loads it.
const blip::BlipForConditionalGeneration& tiny_captioner() {
    static const std::unique_ptr<blip::BlipForConditionalGeneration> model = [] {
        const fs::path output = blip_test::scratch_dir("generation") / "tiny-caption.gguf";
        blip::convert::ConvertOptions options;
        options.input_dir = (blip_test::golden_dir() / "models" / "tiny-caption").string();
        options.output_path = output.string();
        blip::convert::convert_folder(options);
        return std::make_unique<blip::BlipForConditionalGeneration>(blip::gguf::File::open(output.string()));
    }();
    return *model;
}

fs::path expected_dir() { return blip_test::golden_dir() / "expected" / "tiny-caption"; }

nlohmann::json golden_cases() {
    return blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json");
}

std::vector<float> image_embeds_of(const blip::BlipForConditionalGeneration& model, const std::string& image) {
    const auto pixels = blip_test::read_npy(expected_dir() / (image + ".pixel_values.npy"));
    return model.vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

blip::GenerationConfig beam3() {
    blip::GenerationConfig config;
    config.num_beams = 3;
    config.min_length = 5;
    config.max_length = 40;
    return config;
}

}  // namespace

TEST_CASE("beam search matches transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    for (const auto& item : golden["cases"]) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);

        CHECK(model.generate(embeds, {}, beam3()) == ids_of(item["beam3"]));

        blip::GenerationConfig beam4;
        beam4.num_beams = 4;
        beam4.length_penalty = 0.6;
        beam4.max_length = 24;
        CHECK(model.generate(embeds, {}, beam4) == ids_of(item["beam4_len0.6"]));

        for (const auto& [key, prompt] : item.items()) {
            if (key.rfind("prompt:", 0) != 0) continue;
            CAPTURE(key);
            CHECK(model.generate(embeds, ids_of(prompt["input_ids"]), beam3()) == ids_of(prompt["beam3"]));
        }
    }
}

TEST_CASE("greedy processors match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    for (const auto& item : golden["cases"]) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);

        // transformers' default max_length of 20 applies to this case and the next.
        blip::GenerationConfig repetition;
        repetition.repetition_penalty = 1.5;
        CHECK(model.generate(embeds, {}, repetition) == ids_of(item["greedy_rep1.5"]));

        blip::GenerationConfig min10;
        min10.min_length = 10;
        const auto ids = model.generate(embeds, {}, min10);
        CHECK(ids == ids_of(item["greedy_min10"]));
        CHECK(ids.size() <= 20);
        CHECK(ids.size() >= 10);
    }
}

TEST_CASE("batched greedy matches transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    std::vector<std::vector<float>> embeds;
    for (const auto& item : golden["cases"]) embeds.push_back(image_embeds_of(model, item["image"]));
    blip::GenerationConfig greedy;
    greedy.max_length = 40;
    const auto output = model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, greedy);
    REQUIRE(output.sequences.size() == 3);
    const auto padded = blip::pad_sequences(output.sequences, model.config.tokens.pad);
    const auto expected = golden["batch_greedy"];
    REQUIRE(expected.size() == 3);
    for (std::size_t row = 0; row < 3; ++row) {
        CAPTURE(row);
        CHECK(padded[row] == ids_of(expected[row]));
    }
}
