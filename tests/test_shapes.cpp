// BLIP models of shapes unlike the golden tiny models, against PyTorch reference outputs.
// The cases have head sizes of 8, 9, 12 and 32, and text widths that differ from the
// cross-attention width. Two image sizes are no multiple of the patch size. Other values are
// an ITM projection width of 24, large layer norm eps values, and small vocabularies whose
// special token ids are not BERT's. tests/shapes/make_shape_cases.py writes them to tests/data/shapes,
// with references from tests/shapes/oracle.py, a plain PyTorch port of transformers 4.30.2's
// BLIP. BLIP_SHAPE_CASES_DIR points the suite at another folder of such cases.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/image/preprocess.hpp"
#include "blip/model/caption.hpp"
#include "blip/model/itm.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/vqa.hpp"
#include "blip/text/tokenizer_gguf.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_shapes {

namespace {

namespace fs = std::filesystem;

// Tolerances between two correct float32 implementations, as in the golden suites.
constexpr double kTensorTolerance = 1e-4;
constexpr double kLogitsTolerance = 1e-3;
// PNG decoding and Pillow's bicubic resize are reproduced exactly, and the rescaling and
// normalization may round differently only in the last bit.
constexpr double kPixelTolerance = 1e-6;

fs::path cases_dir() {
    if (const char* env = std::getenv("BLIP_SHAPE_CASES_DIR"); env && *env) return fs::path(env);
    return fs::path(BLIP_SOURCE_DIR) / "tests" / "data" / "shapes";
}

// One case: a Hugging Face folder (hf/) and the reference outputs (expected/).
struct ShapeCase {
    std::string name;
    fs::path dir;
    nlohmann::json expected;

    fs::path expected_file(const nlohmann::json& name_in_json) const {
        return dir / "expected" / name_in_json.get<std::string>();
    }
    std::string task() const { return expected["task"].get<std::string>(); }
};

const std::vector<ShapeCase>& shape_cases() {
    static const std::vector<ShapeCase> cases = [] {
        std::vector<ShapeCase> list;
        const nlohmann::json index = blip_test::read_json(cases_dir() / "cases.json");
        for (const auto& name : index["cases"]) {
            ShapeCase item;
            item.name = name.get<std::string>();
            item.dir = cases_dir() / item.name;
            item.expected = blip_test::read_json(item.dir / "expected" / "expected.json");
            list.push_back(std::move(item));
        }
        return list;
    }();
    return cases;
}

// Converts a case's folder to `type` once per process and opens the file.
std::shared_ptr<const blip::gguf::File> converted(const ShapeCase& item, blip::DType type) {
    return blip::gguf::File::open(blip_test::converted_model(
        "shapes", item.dir / "hf", item.name + "." + std::string(blip::dtype_name(type)), type));
}

fs::path image_path(const nlohmann::json& image) {
    const fs::path file = image["file"].get<std::string>();
    return file.is_absolute() ? file : fs::path(BLIP_SOURCE_DIR) / file;
}

std::vector<float> floats_of(const blip_test::NpyArray& array) {
    return std::vector<float>(array.data.begin(), array.data.end());
}

std::vector<float> pixel_values(const ShapeCase& item, const nlohmann::json& image) {
    return floats_of(blip_test::read_npy(item.expected_file(image["pixel_values"])));
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

double max_error(const std::vector<float>& actual, const std::vector<double>& expected) {
    REQUIRE(actual.size() == expected.size());
    double worst = 0;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const double difference = std::abs(static_cast<double>(actual[i]) - expected[i]);
        if (!(difference <= worst)) worst = difference;  // NaN counts as the worst
    }
    return worst;
}

double max_error(const std::vector<float>& actual, const blip_test::NpyArray& expected) {
    return max_error(actual, expected.data);
}

blip::GenerationConfig generation(std::int64_t max_length, std::int64_t num_beams) {
    blip::GenerationConfig config;
    config.max_length = max_length;
    config.num_beams = num_beams;
    return config;
}

// Returns the image embeddings of every image of a case, computed from the stored pixel values.
std::vector<std::vector<float>> image_embeds(const ShapeCase& item, const blip::BlipVisionModel& vision) {
    std::vector<std::vector<float>> embeds;
    for (const auto& image : item.expected["images"]) embeds.push_back(vision.forward(pixel_values(item, image)));
    return embeds;
}

// Generation length limits of make_shape_cases.py, [DEC] included.
constexpr std::int64_t kCaptionMaxLength = 20;
constexpr std::int64_t kAnswerMaxLength = 10;

void check_caption(const ShapeCase& item) {
    const blip::BlipForConditionalGeneration model(converted(item, blip::DType::F32));
    const auto embeds = image_embeds(item, model.vision_model);
    for (std::size_t i = 0; i < embeds.size(); ++i) {
        const auto& image = item.expected["images"][i];
        CAPTURE(image["file"].get<std::string>());
        const auto logits = model.decoder_logits(embeds[i], {model.config.tokens.bos});
        CHECK(max_error(logits, blip_test::read_npy(item.expected_file(image["logits_step0"]))) < kLogitsTolerance);
        CHECK(model.generate(embeds[i], {}, generation(kCaptionMaxLength, 1)) == ids_of(image["greedy"]));
        CHECK(model.generate(embeds[i], {}, generation(kCaptionMaxLength, 3)) == ids_of(image["beam3"]));
    }

    // All images in one batch: each gets the ids it gets alone.
    std::vector<const std::vector<float>*> batch;
    for (const auto& embed : embeds) batch.push_back(&embed);
    for (const char* key : {"greedy", "beam3"}) {
        CAPTURE(key);
        const auto output = model.generate_batch(batch, {}, generation(kCaptionMaxLength, key[0] == 'b' ? 3 : 1));
        REQUIRE(output.sequences.size() == embeds.size());
        for (std::size_t i = 0; i < embeds.size(); ++i)
            CHECK(output.sequences[i] == ids_of(item.expected["images"][i][key]));
    }
}

void check_vqa(const ShapeCase& item) {
    const auto file = converted(item, blip::DType::F32);
    const blip::BlipForQuestionAnswering model(file);
    const blip::Tokenizer tokenizer = blip::read_tokenizer(*file, model.config);
    const auto& questions = item.expected["questions"];
    for (const auto& question : questions) {
        CAPTURE(question["text"].get<std::string>());
        CHECK(tokenizer.encode(question["text"].get<std::string>()) == ids_of(question["input_ids"]));
    }
    const auto embeds = image_embeds(item, model.vision_model);
    for (std::size_t i = 0; i < embeds.size(); ++i) {
        const auto& image = item.expected["images"][i];
        CAPTURE(image["file"].get<std::string>());
        for (std::size_t q = 0; q < questions.size(); ++q) {
            const auto& answer = image["answers"][q];
            const auto ids = ids_of(questions[q]["input_ids"]);
            CAPTURE(questions[q]["text"].get<std::string>());
            const auto cls = model.encode_question(embeds[i], ids, blip::EncoderFirstToken::Cls);
            if (answer.contains("question_embeds"))
                CHECK(max_error(cls, blip_test::read_npy(item.expected_file(answer["question_embeds"]))) <
                      kTensorTolerance);
            CHECK(model.generate(cls, generation(kAnswerMaxLength, 1)) == ids_of(answer["greedy"]));
            CHECK(model.generate(cls, generation(kAnswerMaxLength, 3)) == ids_of(answer["beam3"]));
            const auto enc = model.encode_question(embeds[i], ids, blip::EncoderFirstToken::Enc);
            CHECK(model.generate(enc, generation(kAnswerMaxLength, 1)) == ids_of(answer["enc_token_greedy"]));
        }

        // The image's questions, of different lengths, in one batch.
        std::vector<std::vector<float>> states;
        for (const auto& question : questions)
            states.push_back(
                model.encode_question(embeds[i], ids_of(question["input_ids"]), blip::EncoderFirstToken::Cls));
        std::vector<const std::vector<float>*> batch;
        for (const auto& state : states) batch.push_back(&state);
        for (const char* key : {"greedy", "beam3"}) {
            CAPTURE(key);
            const auto output = model.generate_batch(batch, generation(kAnswerMaxLength, key[0] == 'b' ? 3 : 1));
            REQUIRE(output.sequences.size() == questions.size());
            for (std::size_t q = 0; q < questions.size(); ++q)
                CHECK(output.sequences[q] == ids_of(image["answers"][q][key]));
        }
    }
}

void check_itm(const ShapeCase& item) {
    const auto file = converted(item, blip::DType::F32);
    const blip::BlipForImageTextRetrieval model(file);
    const blip::Tokenizer tokenizer = blip::read_tokenizer(*file, model.config);
    std::vector<blip::TextTokens> padded, unpadded;
    for (const auto& text : item.expected["texts"]) {
        CAPTURE(text["text"].get<std::string>());
        CHECK(tokenizer.encode(text["text"].get<std::string>()) == ids_of(text["input_ids"]));
        padded.push_back({ids_of(text["padded_ids"]), text["attention_mask"].get<std::vector<std::uint8_t>>()});
        unpadded.push_back({ids_of(text["input_ids"]), {}});
    }
    const std::int64_t feature = model.feature_size();
    const auto text_features = model.text_features(padded);
    const auto embeds = image_embeds(item, model.vision_model);
    for (std::size_t i = 0; i < embeds.size(); ++i) {
        const auto& image = item.expected["images"][i];
        CAPTURE(image["file"].get<std::string>());
        const auto image_feature = model.image_features(embeds[i]);
        CHECK(max_error(image_feature, image["image_feat"].get<std::vector<double>>()) < kTensorTolerance);
        const auto cls = model.itm_logits(embeds[i], padded, blip::EncoderFirstToken::Cls);
        const auto enc = model.itm_logits(embeds[i], padded, blip::EncoderFirstToken::Enc);
        const auto plain = model.itm_logits(embeds[i], unpadded, blip::EncoderFirstToken::Cls);
        for (std::size_t t = 0; t < padded.size(); ++t) {
            const auto& match = image["matches"][t];
            CAPTURE(item.expected["texts"][t]["text"].get<std::string>());
            const std::vector<float> pair(cls.begin() + 2 * t, cls.begin() + 2 * t + 2);
            CHECK(max_error(pair, match["itm_logits"].get<std::vector<double>>()) < kLogitsTolerance);
            CHECK(std::abs(blip::itm_probability(pair.data()) - match["itm_prob"].get<double>()) < kTensorTolerance);
            const std::vector<float> enc_pair(enc.begin() + 2 * t, enc.begin() + 2 * t + 2);
            CHECK(max_error(enc_pair, match["itm_logits_enc_token"].get<std::vector<double>>()) < kLogitsTolerance);
            CHECK(std::abs(blip::itm_probability(enc_pair.data()) - match["itm_prob_enc_token"].get<double>()) <
                  kTensorTolerance);
            const std::vector<float> plain_pair(plain.begin() + 2 * t, plain.begin() + 2 * t + 2);
            CHECK(max_error(plain_pair, match["itm_logits_unpadded"].get<std::vector<double>>()) < kLogitsTolerance);
            const std::vector<float> text_feature(text_features.begin() + feature * static_cast<std::int64_t>(t),
                                                  text_features.begin() + feature * static_cast<std::int64_t>(t + 1));
            CHECK(max_error(text_feature, match["text_feat"].get<std::vector<double>>()) < kTensorTolerance);
            const double cosine = blip::itc_similarity(image_feature.data(), text_feature.data(), feature);
            CHECK(std::abs(cosine - match["itc_cosine"].get<double>()) < kTensorTolerance);
        }
    }

    // Each text against all images in one pass.
    std::vector<const std::vector<float>*> images;
    for (const auto& embed : embeds) images.push_back(&embed);
    for (std::size_t t = 0; t < padded.size(); ++t) {
        CAPTURE(item.expected["texts"][t]["text"].get<std::string>());
        const auto logits = model.itm_logits_per_image(images, padded[t], blip::EncoderFirstToken::Cls);
        REQUIRE(logits.size() == 2 * embeds.size());
        for (std::size_t i = 0; i < embeds.size(); ++i) {
            const std::vector<float> pair(logits.begin() + 2 * i, logits.begin() + 2 * i + 2);
            CHECK(max_error(pair, item.expected["images"][i]["matches"][t]["itm_logits"].get<std::vector<double>>()) <
                  kLogitsTolerance);
        }
    }
}

// Runs every part of a case's model stored as `type` and compares its tensors with the f32
// reference: cosine similarity of at least `min_cosine` for the image embeddings, the
// first-step logits, the question encoding and the ITM image features.
void check_reduced_precision(const ShapeCase& item, blip::DType type, double min_cosine) {
    const auto file = converted(item, type);
    const auto& image = item.expected["images"][0];
    const auto reference = [&](const char* key) { return blip_test::read_npy(item.expected_file(image[key])).data; };
    const std::string task = item.task();
    if (task == "caption") {
        const blip::BlipForConditionalGeneration model(file);
        const auto embeds = model.vision_model.forward(pixel_values(item, image));
        CHECK(blip_test::cosine_similarity(embeds, reference("image_embeds")) >= min_cosine);
        const auto logits = model.decoder_logits(embeds, {model.config.tokens.bos});
        CHECK(blip_test::cosine_similarity(logits, reference("logits_step0")) >= min_cosine);
        CHECK(model.generate(embeds, {}, generation(kCaptionMaxLength, 3)).size() > 1);
    } else if (task == "vqa") {
        const blip::BlipForQuestionAnswering model(file);
        const auto embeds = model.vision_model.forward(pixel_values(item, image));
        CHECK(blip_test::cosine_similarity(embeds, reference("image_embeds")) >= min_cosine);
        const auto& first = image["answers"][0];
        const auto question = model.encode_question(embeds, ids_of(item.expected["questions"][0]["input_ids"]),
                                                    blip::EncoderFirstToken::Cls);
        if (first.contains("question_embeds"))
            CHECK(blip_test::cosine_similarity(
                      question, blip_test::read_npy(item.expected_file(first["question_embeds"])).data) >= min_cosine);
        CHECK(model.generate(question, generation(kAnswerMaxLength, 3)).size() > 1);
    } else {
        const blip::BlipForImageTextRetrieval model(file);
        const auto embeds = model.vision_model.forward(pixel_values(item, image));
        CHECK(blip_test::cosine_similarity(embeds, reference("image_embeds")) >= min_cosine);
        CHECK(blip_test::cosine_similarity(model.image_features(embeds),
                                           image["image_feat"].get<std::vector<double>>()) >= min_cosine);
        const blip::TextTokens text{ids_of(item.expected["texts"][0]["input_ids"]), {}};
        const auto logits = model.itm_logits(embeds, {text});
        CHECK(std::isfinite(logits[0]));
        CHECK(std::isfinite(logits[1]));
    }
}

}  // namespace

TEST_CASE("shape cases are present") {
    REQUIRE(fs::is_regular_file(cases_dir() / "cases.json"));
    CHECK(!shape_cases().empty());
}

TEST_CASE("shape cases preprocess images like Pillow") {
    for (const ShapeCase& item : shape_cases()) {
        CAPTURE(item.name);
        const auto file = converted(item, blip::DType::F32);
        const blip::BlipConfig config = blip::read_config(*file);
        for (const auto& image : item.expected["images"]) {
            CAPTURE(image["file"].get<std::string>());
            const auto decoded = blip::decode_image_file(image_path(image).string());
            const auto pixels = blip::preprocess_image(decoded, config.preprocess);
            CHECK(max_error(pixels, blip_test::read_npy(item.expected_file(image["pixel_values"]))) <= kPixelTolerance);
        }
    }
}

TEST_CASE("shape cases image embeds match reference") {
    for (const ShapeCase& item : shape_cases()) {
        CAPTURE(item.name);
        const auto file = converted(item, blip::DType::F32);
        const blip::BlipConfig config = blip::read_config(*file);
        blip::BlipVisionModel vision;
        vision.load(*file, "vision_model", config.vision);
        const auto embeds = image_embeds(item, vision);
        for (std::size_t i = 0; i < embeds.size(); ++i) {
            const auto& image = item.expected["images"][i];
            CAPTURE(image["file"].get<std::string>());
            CHECK(max_error(embeds[i], blip_test::read_npy(item.expected_file(image["image_embeds"]))) <
                  kTensorTolerance);
        }
    }
}

TEST_CASE("shape cases match reference outputs") {
    for (const ShapeCase& item : shape_cases()) {
        CAPTURE(item.name);
        const std::string task = item.task();
        if (task == "caption") check_caption(item);
        else if (task == "vqa") check_vqa(item);
        else if (task == "itm") check_itm(item);
        else FAIL("unknown task " << task);
    }
}

TEST_CASE("encoder width follows vision width") {
    // transformers' BlipConfig sets text_config.encoder_hidden_size to the vision width
    // whatever config.json holds, so a missing or different value must change nothing.
    for (const ShapeCase& item : shape_cases()) {
        CAPTURE(item.name);
        const nlohmann::json original = blip_test::read_json(item.dir / "hf" / "config.json");
        const std::int64_t vision_width = original["vision_config"]["hidden_size"].get<std::int64_t>();
        for (const bool remove : {true, false}) {
            CAPTURE(remove);
            nlohmann::json config = original;
            if (remove)
                config["text_config"].erase("encoder_hidden_size");
            else
                config["text_config"]["encoder_hidden_size"] = vision_width + 7;
            blip::convert::HfModel model;
            blip::convert::detail::parse_model_config(config, "config.json", model);
            CHECK(model.config.text.encoder_hidden_size == vision_width);
            REQUIRE(model.warnings.size() == (remove ? 0u : 1u));
            if (!remove)
                CHECK(model.warnings[0].find("encoder_hidden_size = " + std::to_string(vision_width + 7) +
                                             " is ignored") != std::string::npos);
        }
    }

    // A captioner whose config.json gives another width converts and decodes as before.
    for (const ShapeCase& item : shape_cases()) {
        if (item.task() != "caption") continue;
        CAPTURE(item.name);
        const fs::path dir = blip_test::fresh_scratch_dir("shapes", item.name + ".encoder-width");
        for (const auto& entry : fs::directory_iterator(item.dir / "hf"))
            fs::copy_file(entry.path(), dir / entry.path().filename());
        nlohmann::json config = blip_test::read_json(dir / "config.json");
        config["text_config"]["encoder_hidden_size"] = 768;
        std::ofstream(dir / "config.json") << config.dump(2);
        blip::convert::ConvertOptions options;
        options.input_dir = dir.string();
        options.output_path = (dir.parent_path() / (item.name + ".encoder-width.gguf")).string();
        const blip::convert::ConvertReport report = blip::convert::convert_folder(options);
        REQUIRE(report.warnings.size() == 1);
        CHECK(report.warnings[0].find("encoder_hidden_size = 768 is ignored") != std::string::npos);
        const blip::BlipForConditionalGeneration model(blip::gguf::File::open(options.output_path));
        const auto& image = item.expected["images"][0];
        const auto embeds = model.vision_model.forward(pixel_values(item, image));
        CHECK(model.generate(embeds, {}, generation(kCaptionMaxLength, 1)) == ids_of(image["greedy"]));
    }
}

TEST_CASE("shape cases in f16 and q8_0") {
    // Rows that are no whole number of q8_0 blocks fall back to f16. The bounds are the cosine
    // gates of f16 and q8_0 in test_quant_accuracy.
    for (const ShapeCase& item : shape_cases()) {
        CAPTURE(item.name);
        check_reduced_precision(item, blip::DType::F16, 0.9999);
        check_reduced_precision(item, blip::DType::Q8_0, 0.999);
    }
}

}  // namespace test_shapes
