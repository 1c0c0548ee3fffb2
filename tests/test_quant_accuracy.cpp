// Accuracy of each weight type on the tiny golden models. blip-convert writes each checkpoint
// in every type, and the outputs are compared with transformers' f32 outputs: cosine
// similarity of image_embeds and first-step logits, and the greedy tokens that agree with the
// reference. Each test case prints its table with the types that the tensors were stored in.
// The tiny models' 48-wide vision rows fit no block type and fall back to f16. Their 32- and
// 64-wide text rows fit no 256-value k-quant block, so q4_k stores q4_1 there, and q5_k and
// q6_k store q8_0.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "blip/model/caption.hpp"
#include "blip/model/itm.hpp"
#include "blip/model/vqa.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_quant_accuracy {

namespace {

namespace fs = std::filesystem;
using blip::DType;

// What each type must reach on the tiny models, whose random weights quantize worse than
// trained ones: the smallest cosine similarity to the f32 reference, and whether greedy
// decoding must give the reference ids exactly. q5_k and q6_k are held to the 4-bit bound.
struct TypeGate {
    DType type;
    double min_cosine;
    bool identical_greedy;
};

const TypeGate kGates[] = {
    {DType::F32, 0.9999, true},  {DType::F16, 0.9999, true},  {DType::BF16, 0.9999, false},
    {DType::Q8_0, 0.999, true},  {DType::Q4_0, 0.99, false},  {DType::Q4_1, 0.99, false},
    {DType::Q4_K, 0.99, false},  {DType::Q5_K, 0.99, false},  {DType::Q6_K, 0.99, false},
};

std::string type_name(DType type) { return std::string(blip::dtype_name(type)); }

// Converts the golden model folder `model` with every weight requested as `type`.
fs::path converted(const std::string& model, DType type) {
    return blip_test::converted_model("quant_accuracy", blip_test::golden_dir() / "models" / model,
                                      model + "." + type_name(type), type);
}

// Lists the types that the file's tensors are stored in: per type, the tensor count and its
// share of all values, largest share first ("q8_0 21 (88%), f16 10 (4%), f32 60 (8%)").
std::string stored_types(const blip::gguf::File& file) {
    std::map<DType, std::pair<int, double>> by_type;
    double total = 0;
    for (const auto& tensor : file.tensors()) {
        auto& entry = by_type[tensor.type];
        entry.first += 1;
        entry.second += static_cast<double>(tensor.numel());
        total += static_cast<double>(tensor.numel());
    }
    std::vector<std::pair<DType, std::pair<int, double>>> sorted(by_type.begin(), by_type.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
    std::string text;
    for (const auto& [type, entry] : sorted) {
        char part[64];
        std::snprintf(part, sizeof part, "%s%s %d (%.0f%%)", text.empty() ? "" : ", ", type_name(type).c_str(),
                      entry.first, 100.0 * entry.second / total);
        text += part;
    }
    return text;
}

template <class Values>
double cosine(const std::vector<float>& actual, const Values& expected) {
    REQUIRE(actual.size() == expected.size());
    return blip_test::cosine_similarity(actual, expected);
}

double cosine(const std::vector<float>& actual, const blip_test::NpyArray& expected) {
    return cosine(actual, expected.data);
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

// Greedy tokens after [DEC] that agree with the reference before the first difference, and
// the reference's tokens after [DEC].
struct TokenAgreement {
    std::size_t agreeing = 0;
    std::size_t total = 0;
    bool identical = true;

    void add(const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& reference) {
        std::size_t prefix = 0;
        while (prefix < ids.size() && prefix < reference.size() && ids[prefix] == reference[prefix]) ++prefix;
        agreeing += prefix > 0 ? prefix - 1 : 0;
        total += reference.size() - 1;
        identical = identical && ids == reference;
    }
    std::string text() const { return std::to_string(agreeing) + "/" + std::to_string(total); }
};

std::vector<float> golden_pixels(const std::string& image) {
    const auto pixels =
        blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" / (image + ".pixel_values.npy"));
    return std::vector<float>(pixels.data.begin(), pixels.data.end());
}

std::string format_cosine(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6f", value);
    return text;
}

std::string table_row(const std::vector<std::string>& cells) {
    std::string row = "|";
    for (const auto& cell : cells) row += " " + cell + " |";
    return row + "\n";
}

bool is_four_bit(DType type) { return type == DType::Q4_0 || type == DType::Q4_1 || type == DType::Q4_K; }

// Outputs of the tiny captioner converted to one type, against transformers' f32 outputs.
struct CaptionAccuracy {
    DType type = DType::F32;
    double embeds_cosine = 1;  // smallest over the images
    double logits_cosine = 1;  // smallest over the images
    TokenAgreement greedy;
    std::string stored;
};

// Converts the tiny captioner to `type` and measures it on every golden image: image_embeds,
// logits_step0 after [DEC], and greedy decoding with max_length 40.
CaptionAccuracy measure_captioner(DType type) {
    const fs::path expected_dir = blip_test::golden_dir() / "expected" / "tiny-caption";
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    const auto file = blip::gguf::File::open(converted("tiny-caption", type).string());
    const blip::BlipForConditionalGeneration model(file);
    CaptionAccuracy result;
    result.type = type;
    result.stored = stored_types(*file);
    for (const auto& item : cases) {
        const std::string image = item["image"];
        const std::vector<float> embeds = model.vision_model.forward(golden_pixels(image));
        result.embeds_cosine = std::min(
            result.embeds_cosine, cosine(embeds, blip_test::read_npy(expected_dir / (image + ".image_embeds.npy"))));
        const std::vector<float> logits = model.decoder_logits(embeds, {model.config.tokens.bos});
        result.logits_cosine = std::min(
            result.logits_cosine, cosine(logits, blip_test::read_npy(expected_dir / (image + ".logits_step0.npy"))));
        blip::GenerationConfig generation;
        generation.max_length = 40;
        result.greedy.add(model.generate(embeds, {}, generation), ids_of(item["greedy"]));
    }
    return result;
}

// The measurements of every type, made once per test program.
const std::vector<CaptionAccuracy>& captioner_accuracy() {
    static const std::vector<CaptionAccuracy> results = [] {
        std::vector<CaptionAccuracy> all;
        for (const TypeGate& gate : kGates) all.push_back(measure_captioner(gate.type));
        return all;
    }();
    return results;
}

const CaptionAccuracy& captioner_accuracy(DType type) {
    for (const CaptionAccuracy& result : captioner_accuracy())
        if (result.type == type) return result;
    throw std::runtime_error("no measurement for " + type_name(type));
}

}  // namespace

TEST_CASE("weight types on tiny captioner") {
    BLIP_REQUIRE_GOLDEN();
    std::string table = "\n" + table_row({"type", "cos image_embeds", "cos logits_step0", "greedy tokens agreeing",
                                          "stored as: tensors (share of values)"});
    for (const CaptionAccuracy& result : captioner_accuracy())
        table += table_row({type_name(result.type), format_cosine(result.embeds_cosine),
                            format_cosine(result.logits_cosine), result.greedy.text(), result.stored});
    MESSAGE("tiny-caption, smallest cosine over 3 images; greedy max_length 40:" << table);

    for (const TypeGate& gate : kGates) {
        CAPTURE(type_name(gate.type));
        const CaptionAccuracy& result = captioner_accuracy(gate.type);
        CHECK(result.embeds_cosine >= gate.min_cosine);
        // The 4-bit logits and the q8_0 greedy ids have their own cases below.
        if (!is_four_bit(gate.type)) CHECK(result.logits_cosine >= gate.min_cosine);
        if (gate.identical_greedy && gate.type != DType::Q8_0) CHECK(result.greedy.identical);
    }
}

// NOTE: the next four cases check gates that these tiny random weights miss, so each is
// expected to fail, and fails the suite once its gate is met (then drop should_fail). They
// are skipped without the golden data, because a case that returns early would pass. Weights
// dequantized from the files and multiplied in f32 miss them by as much, so the products
// are not the cause. The greedy path of coco4016.png has a top-two logit gap of 0.007 in a
// logit range of 25, which q8_0's rounding of the decoder or of the word embeddings alone
// closes. 4-bit decoder weights leave logits_step0 at a cosine of about 0.97.
TEST_CASE("q8_0 greedy ids on tiny captioner" * doctest::should_fail() * doctest::skip(!blip_test::golden_available())) {
    BLIP_REQUIRE_GOLDEN();
    MESSAGE("expected to fail: q8_0 rounding flips near-tied greedy tokens of the tiny captioner");
    CHECK(captioner_accuracy(DType::Q8_0).greedy.identical);
}

TEST_CASE("q4_0 logits on tiny captioner" * doctest::should_fail() * doctest::skip(!blip_test::golden_available())) {
    BLIP_REQUIRE_GOLDEN();
    MESSAGE("expected to fail: 4-bit decoder weights of the tiny captioner");
    CHECK(captioner_accuracy(DType::Q4_0).logits_cosine >= 0.99);
}

TEST_CASE("q4_1 logits on tiny captioner" * doctest::should_fail() * doctest::skip(!blip_test::golden_available())) {
    BLIP_REQUIRE_GOLDEN();
    MESSAGE("expected to fail: 4-bit decoder weights of the tiny captioner");
    CHECK(captioner_accuracy(DType::Q4_1).logits_cosine >= 0.99);
}

TEST_CASE("q4_k logits on tiny captioner" * doctest::should_fail() * doctest::skip(!blip_test::golden_available())) {
    BLIP_REQUIRE_GOLDEN();
    MESSAGE("expected to fail: 4-bit decoder weights of the tiny captioner (stored as q4_1)");
    CHECK(captioner_accuracy(DType::Q4_K).logits_cosine >= 0.99);
}

// The VQA and ITM models are measured and printed like the captioner. Their 4-bit cosines
// (0.989 to 0.998) and their greedy answers are not gated: even f16 changes 6 of the 81
// answer tokens of the tiny VQA model, whose answer tokens have near-tied logits.
TEST_CASE("weight types on tiny VQA model") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path expected_dir = blip_test::golden_dir() / "expected" / "tiny-vqa";
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"];
    std::string table = "\n" + table_row({"type", "cos question_embeds", "greedy answer tokens agreeing",
                                          "stored as: tensors (share of values)"});
    for (const TypeGate& gate : kGates) {
        CAPTURE(type_name(gate.type));
        const auto file = blip::gguf::File::open(converted("tiny-vqa", gate.type).string());
        const blip::BlipForQuestionAnswering model(file);
        double question_cosine = 1;
        TokenAgreement greedy;
        std::map<std::string, bool> first_question_seen;
        for (const auto& item : cases) {
            const std::string image = item["image"];
            CAPTURE(image);
            CAPTURE(item["question"].get<std::string>());
            const std::vector<float> embeds = model.vision_model.forward(golden_pixels(image));
            const std::vector<float> question =
                model.encode_question(embeds, ids_of(item["input_ids"]), blip::EncoderFirstToken::Cls);
            // question_embeds.npy belongs to the image's first question.
            if (!first_question_seen[image]) {
                first_question_seen[image] = true;
                const double value = cosine(question, blip_test::read_npy(expected_dir / (image + ".question_embeds.npy")));
                if (!is_four_bit(gate.type)) CHECK(value >= gate.min_cosine);
                question_cosine = std::min(question_cosine, value);
            }
            blip::GenerationConfig generation;
            generation.max_length = 10;
            const std::vector<std::int32_t> ids = model.generate(question, generation);
            if (gate.type == DType::F32) CHECK(ids == ids_of(item["greedy"]));
            greedy.add(ids, ids_of(item["greedy"]));
        }
        table += table_row({type_name(gate.type), format_cosine(question_cosine), greedy.text(), stored_types(*file)});
    }
    MESSAGE("tiny-vqa, smallest cosine over 3 images; greedy max_length 10 over " << cases.size() << " questions:"
                                                                                   << table);
}

TEST_CASE("weight types on tiny ITM model") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path expected_dir = blip_test::golden_dir() / "expected" / "tiny-itm";
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-itm.json")["cases"];
    std::string table =
        "\n" + table_row({"type", "cos image_feat", "max itm_prob error", "stored as: tensors (share of values)"});
    for (const TypeGate& gate : kGates) {
        CAPTURE(type_name(gate.type));
        const auto file = blip::gguf::File::open(converted("tiny-itm", gate.type).string());
        const blip::BlipForImageTextRetrieval model(file);
        double feature_cosine = 1, probability_error = 0;
        std::map<std::string, std::vector<float>> embeds_of;
        for (const auto& item : cases) {
            const std::string image = item["image"];
            CAPTURE(image);
            if (embeds_of.count(image) == 0) {
                embeds_of[image] = model.vision_model.forward(golden_pixels(image));
                const double value = cosine(model.image_features(embeds_of[image]),
                                            blip_test::read_npy(expected_dir / (image + ".image_feat.npy")));
                if (!is_four_bit(gate.type)) CHECK(value >= gate.min_cosine);
                feature_cosine = std::min(feature_cosine, value);
            }
            blip::TextTokens text;
            text.ids = ids_of(item["input_ids_padded35"]);
            for (const std::int32_t id : text.ids) text.attention_mask.push_back(id != 0 ? 1 : 0);
            const std::vector<float> logits = model.itm_logits(embeds_of[image], {text}, blip::EncoderFirstToken::Cls);
            probability_error =
                std::max(probability_error, std::abs(blip::itm_probability(logits.data()) - item["itm_prob"].get<double>()));
        }
        char error_text[32];
        std::snprintf(error_text, sizeof error_text, "%.2e", probability_error);
        table += table_row({type_name(gate.type), format_cosine(feature_cosine), error_text, stored_types(*file)});
    }
    MESSAGE("tiny-itm, smallest cosine over 3 images; itm_prob over " << cases.size() << " image-text pairs:" << table);
}

}  // namespace test_quant_accuracy
