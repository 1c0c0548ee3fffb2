// Image-text matching from a model file in a few calls: decode or take an image, encode it
// once, and score texts against it by ITM probability and ITC similarity.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/image/preprocess.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/itm.hpp"
#include "blip/text/tokenizer.hpp"
#include "blip/text/tokenizer_gguf.hpp"

namespace blip {

// Settings of image-text matching.
struct MatchOptions {
    // First token of the ITM encoding: [ENC] as Salesforce trained the ITM head, or [CLS] to
    // reproduce transformers 4.30.2. ITC is the same either way.
    EncoderFirstToken first_token = EncoderFirstToken::Enc;
};

// An image encoded once: its embeddings, which ITM cross-attends to, and its ITC feature.
struct EncodedImage {
    std::vector<float> embeds;   // [vision tokens, vision hidden_size]
    std::vector<float> feature;  // [image_text_hidden_size], normalized
};

// Scores of one image-text pair.
struct MatchScore {
    double itm_probability = 0;         // softmax of itm_logits, index 1 (match)
    std::array<float, 2> itm_logits{};  // [no match, match]
    double itc_similarity = 0;          // cosine of the image and text ITC features
};

class ImageTextMatcher {
public:
    // Maps the model file at `path`.
    static ImageTextMatcher open(const std::string& path) { return ImageTextMatcher(gguf::File::open(path)); }
    // Parses a model held in memory, taking ownership of the bytes.
    static ImageTextMatcher from_buffer(std::vector<std::uint8_t> bytes, std::string name = "<buffer>") {
        return ImageTextMatcher(gguf::File::from_buffer(std::move(bytes), std::move(name)));
    }

    explicit ImageTextMatcher(std::shared_ptr<const gguf::File> file)
        : model_(std::make_shared<BlipForImageTextRetrieval>(file)),
          tokenizer_(std::make_shared<Tokenizer>(read_tokenizer(*file, model_->config))) {}

    const BlipConfig& config() const { return model_->config; }
    const BlipForImageTextRetrieval& model() const { return *model_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }

    // Preprocesses `image` into the model's input, float CHW.
    std::vector<float> pixel_values(const ImageU8& image) const { return preprocess_image(image, config().preprocess); }

    // Encodes `image` once for any number of texts.
    EncodedImage encode_image(const ImageU8& image) const {
        EncodedImage encoded;
        encoded.embeds = model_->vision_model.forward(pixel_values(image));
        encoded.feature = model_->image_features(encoded.embeds);
        return encoded;
    }

    EncodedImage encode_image_file(const std::string& path) const { return encode_image(decode_image_file(path)); }

    // Tokenizes `text` as [CLS] ... [SEP] without padding or truncation, as transformers'
    // BlipProcessor does by default. Throws blip::Error when the text has more tokens than
    // the text encoder has positions.
    TextTokens tokenize(const std::string& text) const {
        TextTokens tokens;
        tokens.ids = tokenizer_->encode(text);
        const std::int64_t positions = config().text.max_position_embeddings;
        if (static_cast<std::int64_t>(tokens.ids.size()) > positions)
            throw Error("text \"" + text + "\" has " + std::to_string(tokens.ids.size()) +
                        " tokens, more than the model's " + std::to_string(positions) + " text positions (shorten it)");
        return tokens;
    }

    std::vector<TextTokens> tokenize(const std::vector<std::string>& texts) const {
        std::vector<TextTokens> tokens;
        tokens.reserve(texts.size());
        for (const std::string& text : texts) tokens.push_back(tokenize(text));
        return tokens;
    }

    // Returns the ITC features of `texts`, [texts, image_text_hidden_size].
    std::vector<float> text_features(const std::vector<TextTokens>& texts) const { return model_->text_features(texts); }

    // Scores each text against an image encoded by encode_image().
    std::vector<MatchScore> match(const EncodedImage& image, const std::vector<TextTokens>& texts,
                                  const MatchOptions& options = {}) const {
        check_feature(image);
        const std::vector<float> logits = model_->itm_logits(image.embeds, texts, options.first_token);
        const std::vector<float> features = text_features(texts);
        const std::int64_t size = model_->feature_size();
        std::vector<MatchScore> scores(texts.size());
        for (std::size_t i = 0; i < texts.size(); ++i) {
            MatchScore& score = scores[i];
            score.itm_logits = {logits[2 * i], logits[2 * i + 1]};
            score.itm_probability = itm_probability(logits.data() + 2 * i);
            score.itc_similarity = itc_similarity(image.feature.data(), features.data() + i * size, size);
        }
        return scores;
    }

    std::vector<MatchScore> match(const EncodedImage& image, const std::vector<std::string>& texts,
                                  const MatchOptions& options = {}) const {
        return match(image, tokenize(texts), options);
    }

    std::vector<MatchScore> match_file(const std::string& path, const std::vector<std::string>& texts,
                                       const MatchOptions& options = {}) const {
        return match(encode_image_file(path), texts, options);
    }

private:
    void check_feature(const EncodedImage& image) const {
        if (static_cast<std::int64_t>(image.feature.size()) != model_->feature_size())
            throw Error("match: the image feature has " + std::to_string(image.feature.size()) + " values, expected " +
                        std::to_string(model_->feature_size()) + " (encode the image with this model's encode_image)");
    }

    std::shared_ptr<BlipForImageTextRetrieval> model_;
    std::shared_ptr<Tokenizer> tokenizer_;
};

}  // namespace blip
