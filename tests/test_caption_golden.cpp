// The tiny captioning checkpoint against transformers 4.30.2: vision outputs, first-step
// logits and greedy token ids for every image, and KV-cache decoding against a full
// recomputation.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/model/caption.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_caption_golden {

namespace {

namespace fs = std::filesystem;

// Converts the tiny captioner once per test program and loads it.
const blip::BlipForConditionalGeneration& tiny_captioner() {
    static const std::unique_ptr<blip::BlipForConditionalGeneration> model =
        std::make_unique<blip::BlipForConditionalGeneration>(
            blip::gguf::File::open(blip_test::converted_golden_model("caption_golden", "tiny-caption")));
    return *model;
}

std::vector<float> to_floats(const blip_test::NpyArray& array) {
    return std::vector<float>(array.data.begin(), array.data.end());
}

fs::path expected_dir() { return blip_test::golden_dir() / "expected" / "tiny-caption"; }

std::vector<float> image_embeds_of(const blip::BlipForConditionalGeneration& model, const std::string& image) {
    const auto pixels = blip_test::read_npy(expected_dir() / (image + ".pixel_values.npy"));
    return model.vision_model.forward(to_floats(pixels));
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double difference = std::abs(static_cast<double>(a[i]) - b[i]);
        if (!(difference <= worst)) worst = difference;
    }
    return worst;
}

// Restores the default thread count when a test case ends.
struct ThreadCountGuard {
    ~ThreadCountGuard() { blip::set_num_threads(0); }
};

}  // namespace

TEST_CASE("tiny captioner vision outputs") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    for (const auto& item : cases) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);
        const auto expected_embeds = blip_test::read_npy(expected_dir() / (image + ".image_embeds.npy"));
        REQUIRE(embeds.size() == expected_embeds.size());
        const double embeds_error = blip_test::max_abs_diff(embeds, expected_embeds);
        MESSAGE(image << ": image_embeds max error " << embeds_error);
        CHECK(embeds_error < 1e-4);

        const auto pooled = model.vision_model.pooled(embeds);
        const auto expected_pooled = blip_test::read_npy(expected_dir() / (image + ".pooled.npy"));
        REQUIRE(pooled.size() == expected_pooled.size());
        const double pooled_error = blip_test::max_abs_diff(pooled, expected_pooled);
        MESSAGE(image << ": pooled max error " << pooled_error);
        CHECK(pooled_error < 1e-4);
    }
}

TEST_CASE("tiny captioner first-step logits") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    for (const auto& item : cases) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto logits = model.decoder_logits(image_embeds_of(model, image), {model.config.tokens.bos});
        const auto expected = blip_test::read_npy(expected_dir() / (image + ".logits_step0.npy"));
        REQUIRE(logits.size() == expected.size());
        const double error = blip_test::max_abs_diff(logits, expected);
        MESSAGE(image << ": logits_step0 max error " << error);
        CHECK(error < 1e-3);
    }
}

TEST_CASE("tiny captioner greedy ids") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    for (const auto& item : cases) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);

        blip::GenerationConfig greedy;
        greedy.max_length = 40;
        CHECK(model.generate(embeds, {}, greedy) == ids_of(item["greedy"]));

        blip::GenerationConfig max20;
        max20.max_length = 20;
        CHECK(model.generate(embeds, {}, max20) == ids_of(item["greedy_max20"]));

        // transformers' default max_length of 20 applies to this case.
        blip::GenerationConfig min10;
        min10.min_length = 10;
        CHECK(model.generate(embeds, {}, min10) == ids_of(item["greedy_min10"]));

        for (const auto& [key, prompt] : item.items()) {
            if (key.rfind("prompt:", 0) != 0) continue;
            CAPTURE(key);
            CHECK(model.generate(embeds, ids_of(prompt["input_ids"]), greedy) == ids_of(prompt["greedy"]));
        }
    }
}

TEST_CASE("caption prompt without special tokens is rejected") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "cats.png");
    CHECK_THROWS_AS(model.generate(embeds, {1037, 3861, 1997}), blip::Error);
    CHECK_THROWS_AS(model.generate(std::vector<float>(5, 0.0f)), blip::Error);
}

TEST_CASE("KV cache decoding equals full recomputation") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "coco4016.png");
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    const std::vector<std::int32_t> ids = ids_of(cases[1]["greedy_max20"]);
    const auto length = static_cast<std::int64_t>(ids.size());
    const std::int64_t vocab = model.config.text.vocab_size;

    blip::DecoderState full = model.decoder_state(embeds, length, length);
    const std::vector<float> expected = model.text_decoder.decode_all(full, ids.data(), length);

    blip::DecoderState cached = model.decoder_state(embeds, length, 1);
    std::vector<float> stepped;
    for (std::int64_t t = 0; t < length; ++t) {
        const float* logits = model.text_decoder.decode(cached, &ids[static_cast<std::size_t>(t)], 1);
        stepped.insert(stepped.end(), logits, logits + vocab);
    }
    const double error = max_difference(stepped, expected);
    MESSAGE("step-by-step against full prefix: max logit difference " << error);
    CHECK(error < 1e-5);
    CHECK(cached.self_cache.length(0) == length);
}

TEST_CASE("KV cache reorder copies parent rows") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "cats.png");
    const std::int32_t bos = model.config.tokens.bos;
    const std::vector<std::int32_t> first = {bos, 1037, 3861};
    const std::vector<std::int32_t> second = {bos, 1037, 5855};
    const std::int64_t vocab = model.config.text.vocab_size;

    // Two rows that read the same image, decoded together, then both continue row 1.
    blip::DecoderStateSize size;
    size.rows = 2;
    size.capacity = 8;
    size.max_step_tokens = 3;
    size.sources = 1;
    size.source_tokens = model.vision_model.num_tokens();
    blip::DecoderState state = model.text_decoder.new_state(size);
    model.text_decoder.bert.set_encoder_hidden_states(state, 0, embeds.data(), size.source_tokens);
    std::vector<std::int32_t> prefix = first;
    prefix.insert(prefix.end(), second.begin(), second.end());
    model.text_decoder.decode(state, prefix.data(), 3);
    state.reorder({1, 1});
    const std::vector<std::int32_t> next = {1997, 1997};
    const float* logits = model.text_decoder.decode(state, next.data(), 1);
    const std::vector<float> row0(logits, logits + vocab);
    const std::vector<float> row1(logits + vocab, logits + 2 * vocab);

    // The second prefix alone, with the same next token.
    std::vector<std::int32_t> alone = second;
    alone.push_back(1997);
    const auto expected = model.decoder_logits(embeds, alone);
    CHECK(max_difference(row0, expected) < 1e-5);
    CHECK(max_difference(row1, expected) < 1e-5);
}

TEST_CASE("caption outputs are bit-identical for 1 and 2 threads") {
    BLIP_REQUIRE_GOLDEN();
    ThreadCountGuard guard;
    const auto& model = tiny_captioner();
    std::vector<float> embeds[2], logits[2];
    for (int threads : {1, 2}) {
        blip::set_num_threads(threads);
        embeds[threads - 1] = image_embeds_of(model, "bike.jpg");
        logits[threads - 1] = model.decoder_logits(embeds[threads - 1], {model.config.tokens.bos, 1037, 3861});
    }
    REQUIRE(embeds[0].size() == embeds[1].size());
    CHECK(std::memcmp(embeds[0].data(), embeds[1].data(), embeds[0].size() * sizeof(float)) == 0);
    REQUIRE(logits[0].size() == logits[1].size());
    CHECK(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)) == 0);
}

}  // namespace test_caption_golden
