// CapFilt for one image, as BLIP bootstraps its pre-training data. The captioner writes
// synthetic captions. The filter's image-text matching (ITM) head scores the web text and
// every synthetic caption against the image, and each text whose match probability reaches
// the threshold is kept.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include <blip/blip.hpp>

#include "files.hpp"

namespace capfilt {

enum class TextSource { Web, Synthetic };

inline const char* text_source_name(TextSource source) { return source == TextSource::Web ? "web" : "synthetic"; }

// A candidate text and the filter's scores for it.
struct ScoredText {
    std::string text;
    TextSource source = TextSource::Web;
    double itm_probability = 0;  // ITM head's probability of "match"
    double itc_similarity = 0;   // cosine of the ITC image and text features
    bool truncated = false;      // only the first max_text_tokens tokens were scored
    bool kept = false;
};

// CapFilt's result for one image: the web text first (when there is one), then the
// synthetic captions in the order the captioner returned them. `error` is set instead when
// the image could not be read, decoded or processed.
struct ImageResult {
    std::vector<ScoredText> texts;
    std::string error;
};

struct CapfiltSettings {
    // Decoding of synthetic captions. `seed` is replaced per image by record_seed().
    blip::GenerationConfig generation;
    // Text the captioner continues; its tokens are not part of the synthetic caption.
    std::string prompt;
    double threshold = 0.5;  // a text is kept when its match probability is at least this
    blip::MatchOptions match;
    // Texts are cut to this many tokens, [CLS] and [SEP] included, before scoring, as BLIP's
    // filter tokenizes with truncation to 35. The model's position count caps it.
    std::int64_t max_text_tokens = 35;
};

// The seed of one image's sampling streams: --seed mixed with the record's position, so
// that an image's captions depend neither on the thread nor on the batch that runs it.
inline std::uint64_t record_seed(std::uint64_t seed, std::uint64_t position) {
    return splitmix64(seed ^ splitmix64(position));
}

// Model inputs of one image, computed on a decoding thread.
struct PreprocessedImage {
    std::vector<float> caption_pixels;
    std::vector<float> filter_pixels;  // empty when both models take the same input
};

inline bool same_preprocess(const blip::PreprocessConfig& a, const blip::PreprocessConfig& b) {
    return a.height == b.height && a.width == b.width && a.resample == b.resample && a.do_resize == b.do_resize &&
           a.do_rescale == b.do_rescale && a.do_normalize == b.do_normalize && a.do_convert_rgb == b.do_convert_rgb &&
           a.rescale_factor == b.rescale_factor && a.image_mean == b.image_mean && a.image_std == b.image_std;
}

// The captioner and the filter. Every method is const and safe to call from several threads
// at once.
class CapfiltModels {
public:
    CapfiltModels(const std::string& captioner_path, const std::string& filter_path, CapfiltSettings settings)
        : captioner_(blip::Captioner::open(captioner_path)),
          filter_(blip::ImageTextMatcher::open(filter_path)),
          settings_(std::move(settings)) {
        blip::check_generation_config(settings_.generation);
        if (!settings_.prompt.empty()) prompt_ids_ = captioner_.tokenizer().encode(settings_.prompt);
        prefix_length_ = captioner_.model().decoder_input_ids(prompt_ids_).size();
        blip::check_sequence_fits(settings_.generation, static_cast<std::int64_t>(prefix_length_),
                                  captioner_.config().text.max_position_embeddings);
        shared_input_ = same_preprocess(captioner_.config().preprocess, filter_.config().preprocess);
        max_text_tokens_ = std::min<std::int64_t>(settings_.max_text_tokens, filter_.config().text.max_position_embeddings);
        if (max_text_tokens_ < 2)
            throw Error("--max-text-tokens " + std::to_string(settings_.max_text_tokens) +
                        " leaves no room for a text between [CLS] and [SEP] (use at least 3)");
    }

    const blip::Captioner& captioner() const { return captioner_; }
    const blip::ImageTextMatcher& filter() const { return filter_; }
    const CapfiltSettings& settings() const { return settings_; }

    PreprocessedImage preprocess(const blip::ImageU8& image) const {
        PreprocessedImage input;
        input.caption_pixels = captioner_.pixel_values(image);
        if (!shared_input_) input.filter_pixels = filter_.pixel_values(image);
        return input;
    }

    // Writes the synthetic captions of one image with the sampling streams of `seed`.
    std::vector<std::string> synthetic_captions(const std::vector<float>& image_embeds, std::uint64_t seed) const {
        blip::GenerationConfig generation = settings_.generation;
        generation.seed = seed;
        const std::vector<std::vector<std::int32_t>> prompts{prompt_ids_};
        const blip::GenerationOutput output = captioner_.model().generate_batch({&image_embeds}, prompts, generation);
        std::vector<std::string> captions;
        for (const auto& sequence : output.sequences) {
            // Only the generated tokens: BLIP's captioner drops its prompt from the caption.
            const std::vector<std::int32_t> generated(sequence.begin() + static_cast<std::ptrdiff_t>(
                                                                            std::min(prefix_length_, sequence.size())),
                                                      sequence.end());
            captions.push_back(captioner_.tokenizer().decode(generated));
        }
        return captions;
    }

    // Tokenizes `text` for the filter, cut to max_text_tokens with [SEP] kept last, as
    // transformers' tokenizer does with truncation=True.
    blip::TextTokens filter_tokens(const std::string& text, bool& truncated) const {
        blip::TextTokens tokens;
        tokens.ids = filter_.tokenizer().encode(text);
        truncated = static_cast<std::int64_t>(tokens.ids.size()) > max_text_tokens_;
        if (truncated) {
            const std::int32_t last = tokens.ids.back();
            tokens.ids.resize(static_cast<std::size_t>(max_text_tokens_ - 1));
            tokens.ids.push_back(last);
        }
        return tokens;
    }

    // Runs CapFilt on one preprocessed image. Throws blip::Error when a model step fails.
    ImageResult run(const PreprocessedImage& input, const std::optional<std::string>& web_text, std::uint64_t seed) const {
        ImageResult result;
        const std::vector<float> caption_embeds = captioner_.model().vision_model.forward(input.caption_pixels);
        if (web_text) result.texts.push_back({*web_text, TextSource::Web});
        for (std::string& caption : synthetic_captions(caption_embeds, seed))
            result.texts.push_back({std::move(caption), TextSource::Synthetic});

        blip::EncodedImage encoded;
        encoded.embeds = filter_.model().vision_model.forward(shared_input_ ? input.caption_pixels : input.filter_pixels);
        encoded.feature = filter_.model().image_features(encoded.embeds);
        std::vector<blip::TextTokens> tokens;
        for (ScoredText& text : result.texts) tokens.push_back(filter_tokens(text.text, text.truncated));
        const std::vector<blip::MatchScore> scores = filter_.match(encoded, tokens, settings_.match);
        for (std::size_t i = 0; i < scores.size(); ++i) {
            ScoredText& text = result.texts[i];
            text.itm_probability = scores[i].itm_probability;
            text.itc_similarity = scores[i].itc_similarity;
            text.kept = text.itm_probability >= settings_.threshold;
        }
        return result;
    }

private:
    blip::Captioner captioner_;
    blip::ImageTextMatcher filter_;
    CapfiltSettings settings_;
    std::vector<std::int32_t> prompt_ids_;
    std::size_t prefix_length_ = 1;
    bool shared_input_ = true;
    std::int64_t max_text_tokens_ = 35;
};

// The output record of one pair: {"id", "image", "text" (the web text or null), "kept",
// "dropped", optional "error", optional "meta"}. Kept and dropped texts are objects
// {"text", "source", "itm_probability", "itc_similarity"} with "truncated": true added when
// the filter saw only the first tokens.
inline nlohmann::ordered_json record_json(const std::string& id, const std::string& image,
                                          const std::optional<std::string>& web_text, const ImageResult& result,
                                          const nlohmann::ordered_json& meta) {
    nlohmann::ordered_json record;
    record["id"] = id;
    record["image"] = image;
    record["text"] = web_text ? nlohmann::ordered_json(*web_text) : nlohmann::ordered_json(nullptr);
    nlohmann::ordered_json kept = nlohmann::ordered_json::array();
    nlohmann::ordered_json dropped = nlohmann::ordered_json::array();
    for (const ScoredText& text : result.texts) {
        nlohmann::ordered_json entry;
        entry["text"] = text.text;
        entry["source"] = text_source_name(text.source);
        entry["itm_probability"] = text.itm_probability;
        entry["itc_similarity"] = text.itc_similarity;
        if (text.truncated) entry["truncated"] = true;
        (text.kept ? kept : dropped).push_back(std::move(entry));
    }
    record["kept"] = std::move(kept);
    record["dropped"] = std::move(dropped);
    if (!result.error.empty()) record["error"] = result.error;
    if (meta.is_object() && !meta.empty()) record["meta"] = meta;
    return record;
}

}  // namespace capfilt
