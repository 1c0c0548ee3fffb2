// The text transformer as a bidirectional image-grounded encoder and as a decoder that
// cross-attends to text states, on the tiny VQA checkpoint against transformers 4.30.2.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip/generate/greedy.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/text.hpp"
#include "blip/model/vision.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_text_modes {

namespace {

namespace fs = std::filesystem;

// The parts of BlipForQuestionAnswering: image encoder, question encoder, answer decoder.
struct TinyVqa {
    std::shared_ptr<const blip::gguf::File> file;
    blip::BlipConfig config;
    blip::BlipVisionModel vision_model;
    blip::BlipTextModel text_encoder;
    blip::BlipTextLMHeadModel text_decoder;
};

const TinyVqa& tiny_vqa() {
    static const std::unique_ptr<TinyVqa> model = [] {
        auto vqa = std::make_unique<TinyVqa>();
        vqa->file = blip::gguf::File::open(blip_test::converted_golden_model("text_modes", "tiny-vqa"));
        vqa->config = blip::read_config(*vqa->file);
        vqa->vision_model.load(*vqa->file, "vision_model", vqa->config.vision);
        vqa->text_encoder.load(*vqa->file, "text_encoder", vqa->config.text);
        vqa->text_decoder.load(*vqa->file, "text_decoder", vqa->config.text);
        return vqa;
    }();
    return *model;
}

std::vector<float> image_embeds_of(const TinyVqa& vqa, const std::string& image) {
    // BlipImageProcessor gives the same 64x64 input to every tiny model.
    const auto pixels =
        blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" / (image + ".pixel_values.npy"));
    return vqa.vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
}

std::vector<float> encode_question(const TinyVqa& vqa, const std::vector<float>& image_embeds,
                                   const std::vector<std::int32_t>& ids) {
    return vqa.text_encoder.encode(ids, {}, 1, image_embeds.data(), vqa.vision_model.num_tokens());
}

std::vector<std::int32_t> answer_greedy(const TinyVqa& vqa, const std::vector<float>& question_embeds,
                                        std::int64_t question_tokens, std::int64_t max_length) {
    blip::GenerationConfig generation;
    generation.max_length = max_length;
    blip::DecoderStateSize size;
    size.capacity = max_length;
    size.sources = 1;
    size.source_tokens = question_tokens;
    blip::DecoderState state = vqa.text_decoder.new_state(size);
    vqa.text_decoder.bert.set_encoder_hidden_states(state, 0, question_embeds.data(), question_tokens);
    const auto& tokens = vqa.config.tokens;
    return blip::greedy_search(vqa.text_decoder, state, {{tokens.bos}}, generation, tokens.eos, tokens.pad)[0];
}

double max_difference(const float* a, const float* b, std::size_t count) {
    double worst = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const double difference = std::abs(static_cast<double>(a[i]) - b[i]);
        if (!(difference <= worst)) worst = difference;
    }
    return worst;
}

}  // namespace

TEST_CASE("question encoder matches question_embeds") {
    BLIP_REQUIRE_GOLDEN();
    const auto& vqa = tiny_vqa();
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"];
    for (const std::string image : {"cats.png", "coco4016.png", "bike.jpg"}) {
        CAPTURE(image);
        // question_embeds.npy belongs to the image's first question.
        nlohmann::json first;
        for (const auto& item : cases)
            if (item["image"] == image) {
                first = item;
                break;
            }
        REQUIRE(!first.is_null());
        const auto embeds = image_embeds_of(vqa, image);
        const auto question = encode_question(vqa, embeds, first["input_ids"].get<std::vector<std::int32_t>>());
        const auto expected = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-vqa" /
                                                  (image + ".question_embeds.npy"));
        REQUIRE(question.size() == expected.size());
        const double error = blip_test::max_abs_diff(question, expected);
        MESSAGE(image << ": question_embeds max error " << error);
        CHECK(error < 1e-4);
    }
}

TEST_CASE("answer decoder greedy ids") {
    BLIP_REQUIRE_GOLDEN();
    const auto& vqa = tiny_vqa();
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"];
    for (const auto& item : cases) {
        const std::string image = item["image"];
        auto ids = item["input_ids"].get<std::vector<std::int32_t>>();
        CAPTURE(image);
        CAPTURE(ids);
        const auto embeds = image_embeds_of(vqa, image);
        const auto tokens = static_cast<std::int64_t>(ids.size());

        const auto question = encode_question(vqa, embeds, ids);
        CHECK(answer_greedy(vqa, question, tokens, 10) == item["greedy"].get<std::vector<std::int32_t>>());

        // Salesforce's original code encodes questions with [ENC] in place of [CLS].
        ids[0] = vqa.config.tokens.enc;
        const auto enc_question = encode_question(vqa, embeds, ids);
        CHECK(answer_greedy(vqa, enc_question, tokens, 10) ==
              item["enc_token_greedy"].get<std::vector<std::int32_t>>());
    }
}

TEST_CASE("encoder ignores padding tokens") {
    BLIP_REQUIRE_GOLDEN();
    const auto& vqa = tiny_vqa();
    const auto embeds = image_embeds_of(vqa, "cats.png");
    const std::vector<std::int32_t> ids = {101, 2054, 3609, 2003, 1996, 7997, 1029, 102};
    const std::size_t width = static_cast<std::size_t>(vqa.config.text.hidden_size);

    // Two rows: the question padded with [PAD] to 12 tokens, and another question.
    std::vector<std::int32_t> batch = ids;
    batch.resize(12, vqa.config.tokens.pad);
    const std::vector<std::int32_t> other = {101, 2003, 2045, 1037, 3899, 1029, 102, 0, 0, 0, 0, 0};
    batch.insert(batch.end(), other.begin(), other.end());
    std::vector<std::uint8_t> mask(24, 0);
    std::fill(mask.begin(), mask.begin() + 8, 1);
    std::fill(mask.begin() + 12, mask.begin() + 19, 1);
    std::vector<float> sources = embeds;
    sources.insert(sources.end(), embeds.begin(), embeds.end());
    const auto padded = vqa.text_encoder.encode(batch, mask, 2, sources.data(), vqa.vision_model.num_tokens());

    const auto alone = encode_question(vqa, embeds, ids);
    CHECK(max_difference(padded.data(), alone.data(), ids.size() * width) < 1e-5);
    const std::vector<std::int32_t> other_ids(other.begin(), other.begin() + 7);
    const auto other_alone = encode_question(vqa, embeds, other_ids);
    CHECK(max_difference(padded.data() + 12 * width, other_alone.data(), other_ids.size() * width) < 1e-5);
}

}  // namespace test_text_modes
