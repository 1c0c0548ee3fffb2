// Image-text matching on the tiny ITM checkpoint against transformers 4.30.2: ITM logits
// with [CLS] and with [ENC], padded and unpadded, ITC features and cosine, and the
// ImageTextMatcher pipeline.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip/model/itm.hpp"
#include "blip/pipeline/matcher.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_itm {

namespace {

namespace fs = std::filesystem;

std::string converted(const std::string& name) { return blip_test::converted_golden_model("itm", name); }

const blip::ImageTextMatcher& tiny_matcher() {
    static const std::unique_ptr<blip::ImageTextMatcher> matcher =
        std::make_unique<blip::ImageTextMatcher>(blip::ImageTextMatcher::open(converted("tiny-itm")));
    return *matcher;
}

const blip::BlipForImageTextRetrieval& tiny_itm() { return tiny_matcher().model(); }

nlohmann::json itm_cases() { return blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-itm.json")["cases"]; }

// The ITM model's vision tower has the captioner's size, and BlipImageProcessor gives every
// tiny model the same 64x64 input.
std::vector<float> image_embeds_of(const std::string& image) {
    const auto pixels =
        blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" / (image + ".pixel_values.npy"));
    return tiny_itm().vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
}

// The padded ids of a case with the attention mask transformers' tokenizer returns.
blip::TextTokens padded_tokens(const nlohmann::json& item) {
    blip::TextTokens tokens;
    tokens.ids = item["input_ids_padded35"].get<std::vector<std::int32_t>>();
    for (std::int32_t id : tokens.ids) tokens.attention_mask.push_back(id != 0 ? 1 : 0);
    return tokens;
}

blip::TextTokens unpadded_tokens(const nlohmann::json& item) {
    blip::TextTokens tokens;
    for (std::int32_t id : item["input_ids_padded35"].get<std::vector<std::int32_t>>())
        if (id != 0) tokens.ids.push_back(id);
    return tokens;
}

double max_difference(const float* actual, const std::vector<double>& expected) {
    double worst = 0;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const double difference = std::abs(actual[i] - expected[i]);
        if (!(difference <= worst)) worst = difference;
    }
    return worst;
}

// Worst error of one quantity over all cases, reported once per test case.
struct WorstError {
    std::string name;
    double value = 0;
    void update(double error) {
        if (!(error <= value)) value = error;
    }
    ~WorstError() { MESSAGE(name << " max error " << value); }
};

}  // namespace

TEST_CASE("itm logits with cls match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    WorstError logits_error{"itm_logits"}, prob_error{"itm_prob"};
    for (const auto& item : itm_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["text"].get<std::string>());
        const auto logits = model.itm_logits(image_embeds_of(image), {padded_tokens(item)}, blip::EncoderFirstToken::Cls);
        REQUIRE(logits.size() == 2);
        const double error = max_difference(logits.data(), item["itm_logits"].get<std::vector<double>>());
        logits_error.update(error);
        CHECK(error < 1e-3);
        const double prob = blip::itm_probability(logits.data());
        prob_error.update(std::abs(prob - item["itm_prob"].get<double>()));
        CHECK(std::abs(prob - item["itm_prob"].get<double>()) < 1e-4);
    }
}

TEST_CASE("itm logits with enc match Salesforce convention") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    WorstError logits_error{"itm_logits_enc_token"}, prob_error{"itm_prob_enc_token"};
    for (const auto& item : itm_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["text"].get<std::string>());
        const auto embeds = image_embeds_of(image);
        const auto logits = model.itm_logits(embeds, {padded_tokens(item)});  // [ENC] is the default
        const double error = max_difference(logits.data(), item["itm_logits_enc_token"].get<std::vector<double>>());
        logits_error.update(error);
        CHECK(error < 1e-3);
        const double prob = blip::itm_probability(logits.data());
        prob_error.update(std::abs(prob - item["itm_prob_enc_token"].get<double>()));
        CHECK(std::abs(prob - item["itm_prob_enc_token"].get<double>()) < 1e-4);
    }
}

TEST_CASE("itm logits without padding") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    WorstError logits_error{"itm_logits_unpadded"};
    for (const auto& item : itm_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["text"].get<std::string>());
        const auto logits =
            model.itm_logits(image_embeds_of(image), {unpadded_tokens(item)}, blip::EncoderFirstToken::Cls);
        const double error = max_difference(logits.data(), item["itm_logits_unpadded"].get<std::vector<double>>());
        logits_error.update(error);
        CHECK(error < 1e-3);
    }
}

TEST_CASE("itm batch of texts mixes lengths") {
    BLIP_REQUIRE_GOLDEN();
    // All texts of one image in one pass, some padded to 35 and some not, so rows of
    // different lengths share a batch padded to the longest.
    const auto& model = tiny_itm();
    const auto cases = itm_cases();
    const auto embeds = image_embeds_of("coco4016.png");
    std::vector<blip::TextTokens> texts;
    std::vector<std::vector<double>> expected;
    for (const auto& item : cases) {
        if (item["image"] != "coco4016.png") continue;
        texts.push_back(texts.size() % 2 == 0 ? unpadded_tokens(item) : padded_tokens(item));
        expected.push_back(item["itm_logits"].get<std::vector<double>>());
    }
    REQUIRE(texts.size() >= 2);
    const auto logits = model.itm_logits(embeds, texts, blip::EncoderFirstToken::Cls);
    REQUIRE(logits.size() == 2 * texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
        CAPTURE(i);
        CHECK(max_difference(logits.data() + 2 * i, expected[i]) < 1e-3);
    }
}

TEST_CASE("itm per image matches one image at a time") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    const auto cases = itm_cases();
    const blip::TextTokens text = unpadded_tokens(cases[0]);
    // Six images, more than one pass holds, with a repeated image next to itself.
    std::vector<std::vector<float>> embeds;
    for (const std::string image : {"cats.png", "coco4016.png", "coco4016.png", "bike.jpg", "cats.png", "bike.jpg"})
        embeds.push_back(image_embeds_of(image));
    std::vector<const std::vector<float>*> images;
    for (const auto& image : embeds) images.push_back(&image);
    const auto logits = model.itm_logits_per_image(images, text);
    REQUIRE(logits.size() == 2 * images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
        CAPTURE(i);
        const auto alone = model.itm_logits(embeds[i], {text});
        CHECK(std::abs(logits[2 * i] - alone[0]) < 1e-5);
        CHECK(std::abs(logits[2 * i + 1] - alone[1]) < 1e-5);
    }
}

TEST_CASE("itc features and cosine match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    WorstError image_error{"image_feat"}, text_error{"text_feat"}, cosine_error{"itc_cosine"};
    for (const std::string image : {"cats.png", "coco4016.png", "bike.jpg"}) {
        CAPTURE(image);
        const auto feature = model.image_features(image_embeds_of(image));
        const auto expected = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-itm" /
                                                  (image + ".image_feat.npy"));
        REQUIRE(feature.size() == expected.size());
        image_error.update(blip_test::max_abs_diff(feature, expected));
        CHECK(blip_test::max_abs_diff(feature, expected) < 1e-4);
    }

    const auto cases = itm_cases();
    std::vector<blip::TextTokens> texts;
    for (const auto& item : cases) texts.push_back(padded_tokens(item));
    const auto features = model.text_features(texts);
    const std::int64_t size = model.feature_size();
    REQUIRE(features.size() == texts.size() * static_cast<std::size_t>(size));
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const auto& item = cases[i];
        CAPTURE(item["image"].get<std::string>());
        CAPTURE(item["text"].get<std::string>());
        const float* text_feature = features.data() + i * static_cast<std::size_t>(size);
        const double error = max_difference(text_feature, item["text_feat"].get<std::vector<double>>());
        text_error.update(error);
        CHECK(error < 1e-4);

        const auto image_feature = model.image_features(image_embeds_of(item["image"]));
        const double cosine = blip::itc_similarity(image_feature.data(), text_feature, size);
        cosine_error.update(std::abs(cosine - item["itc_cosine"].get<double>()));
        CHECK(std::abs(cosine - item["itc_cosine"].get<double>()) < 1e-4);

        // Without padding the unimodal encoder gives the same feature.
        const auto unpadded = model.text_features({unpadded_tokens(item)});
        CHECK(max_difference(unpadded.data(), item["text_feat"].get<std::vector<double>>()) < 1e-4);
    }
}

TEST_CASE("matcher pipeline scores png images") {
    BLIP_REQUIRE_GOLDEN();
    // PNG decodes exactly as Pillow does, so the pipeline's own decoding and preprocessing
    // must give transformers' values.
    const auto& matcher = tiny_matcher();
    for (const std::string image : {"cats.png", "coco4016.png"}) {
        CAPTURE(image);
        std::vector<std::string> texts;
        std::vector<nlohmann::json> expected;
        for (const auto& item : itm_cases())
            if (item["image"] == image) {
                texts.push_back(item["text"]);
                expected.push_back(item);
            }
        REQUIRE(!texts.empty());
        const std::string path = (blip_test::golden_dir() / "images" / image).string();
        const auto enc = matcher.match_file(path, texts);
        blip::MatchOptions transformers;
        transformers.first_token = blip::EncoderFirstToken::Cls;
        const auto cls = matcher.match_file(path, texts, transformers);
        REQUIRE(enc.size() == texts.size());
        REQUIRE(cls.size() == texts.size());
        for (std::size_t i = 0; i < texts.size(); ++i) {
            CAPTURE(texts[i]);
            // The tokenizer's ids must equal transformers' before padding.
            CHECK(matcher.tokenize(texts[i]).ids == unpadded_tokens(expected[i]).ids);
            CHECK(std::abs(enc[i].itm_probability - expected[i]["itm_prob_enc_token"].get<double>()) < 1e-4);
            CHECK(std::abs(cls[i].itm_probability - expected[i]["itm_prob"].get<double>()) < 1e-4);
            CHECK(max_difference(cls[i].itm_logits.data(), expected[i]["itm_logits"].get<std::vector<double>>()) < 1e-3);
            CHECK(std::abs(enc[i].itc_similarity - expected[i]["itc_cosine"].get<double>()) < 1e-4);
            CHECK(enc[i].itc_similarity == cls[i].itc_similarity);
        }
    }
}

TEST_CASE("itm rejects invalid input") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_itm();
    const auto embeds = image_embeds_of("cats.png");

    CHECK_THROWS_AS(model.itm_logits(embeds, {blip::TextTokens{}}), blip::Error);
    blip::TextTokens short_mask;
    short_mask.ids = {101, 2048, 102};
    short_mask.attention_mask = {1, 1};
    CHECK_THROWS_AS(model.itm_logits(embeds, {short_mask}), blip::Error);
    CHECK_THROWS_AS(model.text_features({short_mask}), blip::Error);
    blip::TextTokens no_cls;
    no_cls.ids = {2048, 102};
    CHECK_THROWS_AS(model.itm_logits(embeds, {no_cls}), blip::Error);
    blip::TextTokens outside_vocabulary;
    outside_vocabulary.ids = {101, 40000, 102};
    CHECK_THROWS_AS(model.itm_logits(embeds, {outside_vocabulary}), blip::Error);
    blip::TextTokens too_long;
    too_long.ids.assign(static_cast<std::size_t>(model.config.text.max_position_embeddings + 1), 2048);
    too_long.ids.front() = 101;
    CHECK_THROWS_AS(model.itm_logits(embeds, {too_long}), blip::Error);
    CHECK_THROWS_AS(model.text_features({too_long}), blip::Error);
    std::string many_words;
    for (int i = 0; i < 100; ++i) many_words += " b";
    CHECK_THROWS_AS(tiny_matcher().tokenize(many_words), blip::Error);

    const std::vector<float> wrong_size(10, 0.0f);
    CHECK_THROWS_AS(model.image_features(wrong_size), blip::Error);
    CHECK_THROWS_AS(model.itm_logits(wrong_size, {unpadded_tokens(itm_cases()[0])}), blip::Error);
}

TEST_CASE("itm model rejects other tasks") {
    BLIP_REQUIRE_GOLDEN();
    const std::string path = converted("tiny-caption");
    try {
        blip::ImageTextMatcher::open(path);
        FAIL("a caption model was accepted");
    } catch (const blip::Error& error) {
        const std::string message = error.what();
        CAPTURE(message);
        CHECK(message.find(path) != std::string::npos);
        CHECK(message.find("caption") != std::string::npos);
        CHECK(message.find("itm") != std::string::npos);
    }
}

}  // namespace test_itm
