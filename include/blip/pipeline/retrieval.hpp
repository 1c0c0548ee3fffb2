// Image-text retrieval over a gallery of images and texts, ranked as Salesforce's BLIP
// evaluation (train_retrieval.py) ranks: ITC similarity over the whole gallery, then the
// top k candidates re-ranked by ITM match logit + ITC similarity. Both directions: a text
// query over the images, and an image query over the texts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/itm.hpp"
#include "blip/pipeline/matcher.hpp"

namespace blip {

// Settings of one search.
struct RetrievalOptions {
    std::size_t top = 10;      // results returned; 0 returns the whole gallery
    std::size_t rerank = 16;   // best ITC candidates re-ranked by ITM (k_test in Salesforce's code); 0: ITC only
    EncoderFirstToken first_token = EncoderFirstToken::Enc;  // first token of the ITM encoding
};

// One result of a search.
struct RetrievalHit {
    std::size_t index = 0;       // gallery index of the image or text
    double itc_similarity = 0;   // cosine of the image and text ITC features
    bool reranked = false;       // whether ITM scored this candidate
    double itm_logit = 0;        // ITM match logit (index 1), when reranked
    double itm_probability = 0;  // softmax of the ITM logits, index 1, when reranked
    // itm_logit + itc_similarity when reranked, as Salesforce's evaluation scores; else
    // itc_similarity. Reranked hits come before the others.
    double score = 0;
};

// Orders candidates by `similarities` (ITC), then re-ranks the best options.rerank of them
// by ITM. `itm_logits(indices)` returns the ITM logits [indices, 2] of those candidates.
// Returns the best options.top hits: reranked hits by score, then the others by ITC. Equal
// values keep gallery order.
template <class ItmLogits>
std::vector<RetrievalHit> rank_retrieval_candidates(const std::vector<double>& similarities,
                                                    const RetrievalOptions& options, ItmLogits&& itm_logits) {
    std::vector<std::size_t> order(similarities.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return similarities[a] > similarities[b]; });

    std::vector<RetrievalHit> hits(order.size());
    for (std::size_t rank = 0; rank < order.size(); ++rank) {
        hits[rank].index = order[rank];
        hits[rank].itc_similarity = similarities[order[rank]];
        hits[rank].score = hits[rank].itc_similarity;
    }

    const std::size_t reranked = std::min(options.rerank, hits.size());
    if (reranked > 0) {
        const std::vector<std::size_t> candidates(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(reranked));
        const std::vector<float> logits = itm_logits(candidates);
        if (logits.size() != 2 * reranked)
            throw Error("retrieval: ITM returned " + std::to_string(logits.size()) + " logits for " +
                        std::to_string(reranked) + " candidates");
        for (std::size_t i = 0; i < reranked; ++i) {
            RetrievalHit& hit = hits[i];
            hit.reranked = true;
            hit.itm_logit = logits[2 * i + 1];
            hit.itm_probability = itm_probability(logits.data() + 2 * i);
            hit.score = hit.itm_logit + hit.itc_similarity;
        }
        std::stable_sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(reranked),
                         [](const RetrievalHit& a, const RetrievalHit& b) { return a.score > b.score; });
    }

    if (options.top > 0 && options.top < hits.size()) hits.resize(options.top);
    return hits;
}

// A gallery of images and texts, each encoded once when added, and searches over it.
// NOTE: every image keeps its embeddings for ITM re-ranking: 577 x 768 floats (1.8 MB) per
// image for the base models at 384 pixels.
class Retriever {
public:
    // Maps the model file at `path`.
    static Retriever open(const std::string& path) { return Retriever(gguf::File::open(path)); }

    explicit Retriever(std::shared_ptr<const gguf::File> file) : matcher_(std::move(file)) {}

    const ImageTextMatcher& matcher() const { return matcher_; }
    const BlipForImageTextRetrieval& model() const { return matcher_.model(); }

    // Adds an image to the gallery and returns its index.
    std::size_t add_image(const ImageU8& image) { return add_image(matcher_.encode_image(image)); }

    // Adds an image encoded by this model's matcher().encode_image() and returns its index.
    std::size_t add_image(EncodedImage image) {
        if (static_cast<std::int64_t>(image.feature.size()) != model().feature_size())
            throw Error("retrieval: the image feature has " + std::to_string(image.feature.size()) +
                        " values, expected " + std::to_string(model().feature_size()) +
                        " (encode the image with this model's matcher().encode_image)");
        images_.push_back(std::move(image));
        return images_.size() - 1;
    }

    std::size_t add_image_file(const std::string& path) { return add_image(decode_image_file(path)); }

    // Adds texts to the gallery and returns the index of the first. Either all are added or,
    // when one cannot be tokenized, none.
    std::size_t add_texts(const std::vector<std::string>& texts) {
        std::vector<TextTokens> tokens = matcher_.tokenize(texts);
        const std::vector<float> features = matcher_.text_features(tokens);
        const std::size_t first = texts_.size();
        texts_.insert(texts_.end(), texts.begin(), texts.end());
        for (TextTokens& text : tokens) text_tokens_.push_back(std::move(text));
        text_features_.insert(text_features_.end(), features.begin(), features.end());
        return first;
    }

    std::size_t image_count() const { return images_.size(); }
    std::size_t text_count() const { return texts_.size(); }
    const std::string& text(std::size_t index) const { return texts_.at(index); }

    // Text to image: ranks the gallery's images for `query`. Returns no hits when the gallery
    // has no images.
    std::vector<RetrievalHit> search_images(const std::string& query, const RetrievalOptions& options = {}) const {
        const TextTokens tokens = matcher_.tokenize(query);
        const std::vector<float> feature = matcher_.text_features({tokens});
        const std::int64_t size = model().feature_size();
        std::vector<double> similarities(images_.size());
        for (std::size_t i = 0; i < images_.size(); ++i)
            similarities[i] = itc_similarity(images_[i].feature.data(), feature.data(), size);
        return rank_retrieval_candidates(similarities, options, [&](const std::vector<std::size_t>& candidates) {
            std::vector<const std::vector<float>*> embeds;
            for (std::size_t index : candidates) embeds.push_back(&images_[index].embeds);
            return model().itm_logits_per_image(embeds, tokens, options.first_token);
        });
    }

    // Image to text: ranks the gallery's texts for an image encoded by
    // matcher().encode_image(). Returns no hits when the gallery has no texts.
    std::vector<RetrievalHit> search_texts(const EncodedImage& image, const RetrievalOptions& options = {}) const {
        const std::int64_t size = model().feature_size();
        if (static_cast<std::int64_t>(image.feature.size()) != size)
            throw Error("retrieval: the image feature has " + std::to_string(image.feature.size()) +
                        " values, expected " + std::to_string(size) +
                        " (encode the image with this model's matcher().encode_image)");
        std::vector<double> similarities(texts_.size());
        for (std::size_t i = 0; i < texts_.size(); ++i)
            similarities[i] = itc_similarity(image.feature.data(), text_features_.data() + i * static_cast<std::size_t>(size), size);
        return rank_retrieval_candidates(similarities, options, [&](const std::vector<std::size_t>& candidates) {
            std::vector<TextTokens> texts;
            for (std::size_t index : candidates) texts.push_back(text_tokens_[index]);
            return model().itm_logits(image.embeds, texts, options.first_token);
        });
    }

    std::vector<RetrievalHit> search_texts(const ImageU8& image, const RetrievalOptions& options = {}) const {
        return search_texts(matcher_.encode_image(image), options);
    }

private:
    ImageTextMatcher matcher_;
    std::vector<EncodedImage> images_;
    std::vector<std::string> texts_;
    std::vector<TextTokens> text_tokens_;
    std::vector<float> text_features_;  // [texts, image_text_hidden_size]
};

}  // namespace blip
