// BLIP image-text matching and retrieval (transformers' BlipForImageTextRetrieval): the
// vision model encodes an image, and two scores compare it with a text.
// - ITM: the image-grounded text encoder reads the text with cross-attention to the image
//   embeddings; itm_head maps its first token's state to two logits, index 1 = match.
// - ITC: the unimodal text encoder (no cross-attention) reads the text; the cosine of
//   normalize(text_proj(first token)) and normalize(vision_proj(image class token)).
// Image embeddings, image features and text features are separate calls so that callers
// can compute each once and reuse it for many pairs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/model/config.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/layers.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/text.hpp"
#include "blip/model/vision.hpp"

namespace blip {

// Token ids of one text and their attention mask, as the tokenizer returns them: [CLS] ...
// [SEP], possibly padded with [PAD].
struct TextTokens {
    std::vector<std::int32_t> ids;
    std::vector<std::uint8_t> attention_mask;  // nonzero to attend; empty: every token
};

namespace detail {

// x / max(||x||, 1e-12), as torch.nn.functional.normalize computes it.
inline void l2_normalize(float* x, std::int64_t count) {
    double squares = 0;
    for (std::int64_t i = 0; i < count; ++i) squares += static_cast<double>(x[i]) * x[i];
    const double norm = std::max(std::sqrt(squares), 1e-12);
    for (std::int64_t i = 0; i < count; ++i) x[i] = static_cast<float>(x[i] / norm);
}

}  // namespace detail

// Probability of "match": softmax of the two ITM logits, index 1.
inline double itm_probability(const float* logits) {
    return 1.0 / (1.0 + std::exp(static_cast<double>(logits[0]) - static_cast<double>(logits[1])));
}

// ITC similarity of an image feature and a text feature (both normalized, `size` values):
// their dot product, which is their cosine.
inline double itc_similarity(const float* image_feature, const float* text_feature, std::int64_t size) {
    double sum = 0;
    for (std::int64_t i = 0; i < size; ++i) sum += static_cast<double>(image_feature[i]) * text_feature[i];
    return sum;
}

class BlipForImageTextRetrieval {
public:
    // Texts encoded together in one pass of the text encoder.
    static constexpr std::size_t kRowsPerPass = 32;
    // Images that one pass of the image-grounded encoder cross-attends to. Each image needs
    // its cross-attention keys and values for every layer in memory: 12 x 577 x 768 x 2
    // floats (42 MB) for the base models at 384 pixels.
    static constexpr std::size_t kImagesPerPass = 4;

    // Reads the configuration and every weight of `file`, checking each tensor's shape. The
    // model reads the weights in place and keeps `file` alive.
    explicit BlipForImageTextRetrieval(std::shared_ptr<const gguf::File> file) : file_(std::move(file)) {
        if (!file_) throw Error("BlipForImageTextRetrieval: no model file given");
        config = read_config(*file_);
        if (config.task != Task::Itm)
            throw Error(file_->name() + ": the model's task is " + task_name(config.task) +
                        ", but image-text matching and retrieval need an itm model (BlipForImageTextRetrieval, "
                        "with itm_head, vision_proj and text_proj), such as Salesforce/blip-itm-base-coco "
                        "converted with blip-convert");
        if (config.text.encoder_hidden_size != config.vision.hidden_size)
            throw Error(file_->name() + ": text encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                        " differs from the vision hidden_size " + std::to_string(config.vision.hidden_size));
        if (config.image_text_hidden_size < 1)
            throw Error(file_->name() + ": image_text_hidden_size " + std::to_string(config.image_text_hidden_size) +
                        " must be positive");
        vision_model.load(*file_, "vision_model", config.vision);
        text_encoder.load(*file_, "text_encoder", config.text);
        vision_proj.load(*file_, "vision_proj", config.image_text_hidden_size, config.vision.hidden_size);
        text_proj.load(*file_, "text_proj", config.image_text_hidden_size, config.text.hidden_size);
        itm_head.load(*file_, "itm_head", 2, config.text.hidden_size);
    }

    BlipConfig config;
    BlipVisionModel vision_model;
    BlipTextModel text_encoder;
    Linear vision_proj;  // image class token to the ITC space
    Linear text_proj;    // text first token to the ITC space
    Linear itm_head;     // image-grounded first token to [no match, match] logits

    const gguf::File& file() const { return *file_; }

    // Number of values of an image or text feature (image_text_hidden_size).
    std::int64_t feature_size() const { return config.image_text_hidden_size; }

    // Returns image_feat: normalize(vision_proj(image_embeds[0])), the class token projected
    // to the ITC space. `image_embeds` is vision_model.forward's output for one image.
    std::vector<float> image_features(const std::vector<float>& image_embeds) const {
        check_image_embeds(image_embeds);
        std::vector<float> feature(static_cast<std::size_t>(feature_size()));
        vision_proj.forward(image_embeds.data(), 1, feature.data());
        detail::l2_normalize(feature.data(), feature_size());
        return feature;
    }

    // Returns text_feat [texts, feature_size()]: normalize(text_proj(first token)) of the
    // unimodal text encoder, which reads each text as given ([CLS] first) with its attention
    // mask.
    std::vector<float> text_features(const std::vector<TextTokens>& texts) const {
        std::vector<const TextTokens*> rows;
        for (const TextTokens& text : texts) rows.push_back(&text);
        const std::vector<const float*> no_images(rows.size(), nullptr);
        std::vector<float> features(texts.size() * static_cast<std::size_t>(feature_size()));
        for_each_pass(no_images, [&](std::size_t begin, std::size_t end) {
            const std::vector<float> first = first_token_states(no_images, rows, begin, end, std::nullopt);
            float* out = features.data() + begin * static_cast<std::size_t>(feature_size());
            const auto count = static_cast<std::int64_t>(end - begin);
            text_proj.forward(first.data(), count, out);
            for (std::int64_t row = 0; row < count; ++row) detail::l2_normalize(out + row * feature_size(), feature_size());
        });
        return features;
    }

    // Returns itm_head logits [texts, 2] of one image and each text: the image-grounded
    // encoder reads the text with its first token set to `first_token` and its attention
    // mask, cross-attending to `image_embeds`.
    std::vector<float> itm_logits(const std::vector<float>& image_embeds, const std::vector<TextTokens>& texts,
                                  EncoderFirstToken first_token = EncoderFirstToken::Enc) const {
        check_image_embeds(image_embeds);
        std::vector<const TextTokens*> rows;
        for (const TextTokens& text : texts) rows.push_back(&text);
        return pair_logits(std::vector<const float*>(rows.size(), image_embeds.data()), rows, first_token);
    }

    // Returns itm_head logits [images, 2] of each image and one text.
    std::vector<float> itm_logits_per_image(const std::vector<const std::vector<float>*>& images,
                                            const TextTokens& text,
                                            EncoderFirstToken first_token = EncoderFirstToken::Enc) const {
        std::vector<const float*> sources;
        for (const std::vector<float>* embeds : images) {
            if (embeds == nullptr) throw Error("itm: no image embeddings given (null pointer)");
            check_image_embeds(*embeds);
            sources.push_back(embeds->data());
        }
        return pair_logits(sources, std::vector<const TextTokens*>(sources.size(), &text), first_token);
    }

private:
    void check_image_embeds(const std::vector<float>& image_embeds) const {
        const std::int64_t tokens = vision_model.num_tokens();
        if (image_embeds.size() != static_cast<std::size_t>(tokens * config.vision.hidden_size))
            throw Error("itm: image_embeds has " + std::to_string(image_embeds.size()) + " values, expected " +
                        std::to_string(tokens) + " x " + std::to_string(config.vision.hidden_size) +
                        " (the vision model's output for one image)");
    }

    // Calls pass(begin, end) for consecutive rows, at most kRowsPerPass rows and
    // kImagesPerPass distinct images each time. Rows share an image only when they are
    // adjacent and point to the same embeddings.
    template <class Pass>
    static void for_each_pass(const std::vector<const float*>& images, Pass&& pass) {
        std::size_t begin = 0;
        while (begin < images.size()) {
            std::size_t end = begin;
            std::size_t distinct = 0;
            while (end < images.size() && end - begin < kRowsPerPass) {
                const bool new_image = images[end] != nullptr && (end == begin || images[end] != images[end - 1]);
                if (new_image && distinct == kImagesPerPass) break;
                if (new_image) ++distinct;
                ++end;
            }
            pass(begin, end);
            begin = end;
        }
    }

    // itm_head logits [pairs, 2] of pairs (images[p], texts[p]).
    std::vector<float> pair_logits(const std::vector<const float*>& images, const std::vector<const TextTokens*>& texts,
                                   EncoderFirstToken first_token) const {
        std::vector<float> logits(texts.size() * 2);
        for_each_pass(images, [&](std::size_t begin, std::size_t end) {
            const std::vector<float> first = first_token_states(images, texts, begin, end, first_token);
            itm_head.forward(first.data(), static_cast<std::int64_t>(end - begin), logits.data() + begin * 2);
        });
        return logits;
    }

    // Encodes texts[begin, end) bidirectionally, padded to the longest with [PAD] hidden by
    // the attention mask, and returns each one's first-token state [rows, hidden]. Row r
    // cross-attends to images[r], or to nothing when the pointers are null, which makes the
    // encoder unimodal. `first_token`, when set, replaces each text's first token.
    std::vector<float> first_token_states(const std::vector<const float*>& images,
                                          const std::vector<const TextTokens*>& texts, std::size_t begin,
                                          std::size_t end, std::optional<EncoderFirstToken> first_token) const {
        const auto rows = static_cast<std::int64_t>(end - begin);
        std::int64_t longest = 0;
        for (std::size_t i = begin; i < end; ++i) {
            const TextTokens& text = *texts[i];
            if (text.ids.empty()) throw Error("itm: text " + std::to_string(i) + " has no token ids");
            if (!text.attention_mask.empty() && text.attention_mask.size() != text.ids.size())
                throw Error("itm: text " + std::to_string(i) + " has " + std::to_string(text.attention_mask.size()) +
                            " attention mask values for " + std::to_string(text.ids.size()) + " token ids");
            if (static_cast<std::int64_t>(text.ids.size()) > config.text.max_position_embeddings)
                throw Error("itm: text " + std::to_string(i) + " has " + std::to_string(text.ids.size()) +
                            " tokens, more than the text encoder's max_position_embeddings " +
                            std::to_string(config.text.max_position_embeddings) + " (shorten the text)");
            longest = std::max(longest, static_cast<std::int64_t>(text.ids.size()));
        }

        std::vector<std::int32_t> ids(static_cast<std::size_t>(rows * longest), config.tokens.pad);
        std::vector<std::uint8_t> mask(ids.size(), 0);
        for (std::int64_t row = 0; row < rows; ++row) {
            const TextTokens& text = *texts[begin + static_cast<std::size_t>(row)];
            std::vector<std::int32_t> row_ids =
                first_token ? with_encoder_first_token(text.ids, *first_token, config.tokens) : text.ids;
            std::copy(row_ids.begin(), row_ids.end(), ids.begin() + row * longest);
            for (std::size_t t = 0; t < text.ids.size(); ++t)
                mask[static_cast<std::size_t>(row * longest) + t] = text.attention_mask.empty() ? 1 : text.attention_mask[t];
        }

        DecoderStateSize size;
        size.rows = rows;
        size.capacity = longest;
        size.max_step_tokens = longest;
        const bool grounded = images[begin] != nullptr;
        std::vector<std::int64_t> row_source(static_cast<std::size_t>(rows), 0);
        if (grounded) {
            std::int64_t sources = 0;
            for (std::size_t i = begin; i < end; ++i) {
                if (i > begin && images[i] != images[i - 1]) ++sources;
                row_source[i - begin] = sources;
            }
            size.sources = sources + 1;
            size.source_tokens = vision_model.num_tokens();
        }
        DecoderState state = text_encoder.new_state(size);
        if (grounded) {
            for (std::size_t i = begin; i < end; ++i)
                if (i == begin || images[i] != images[i - 1])
                    text_encoder.set_encoder_hidden_states(state, row_source[i - begin], images[i], size.source_tokens);
            state.row_source = row_source;
        }
        text_encoder.forward(state, ids.data(), longest, AttentionMode::Bidirectional, mask.data());

        const std::int64_t width = config.text.hidden_size;
        std::vector<float> first(static_cast<std::size_t>(rows * width));
        for (std::int64_t row = 0; row < rows; ++row)
            std::copy_n(state.work.hidden.data() + row * longest * width, width, first.data() + row * width);
        return first;
    }

    std::shared_ptr<const gguf::File> file_;
};

}  // namespace blip
