// Retrieval over the golden images and texts with the tiny ITM checkpoint: rankings in both
// directions must follow transformers' ITC cosines and ITM logits as Salesforce's
// evaluation combines them (ITC order, top k re-ranked by ITM match logit + ITC).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "blip/pipeline/retrieval.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_retrieval {

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kImages = {"cats.png", "coco4016.png", "bike.jpg"};

std::string tiny_itm_path() { return blip_test::converted_golden_model("retrieval", "tiny-itm"); }

// One golden image-text pair.
struct Pair {
    double itc = 0;
    double itm_logit_cls = 0;
    double itm_logit_enc = 0;
    double itm_prob_cls = 0;
    double itm_prob_enc = 0;
};

// The golden texts in order of first appearance, and pairs[image][text].
struct GoldenGrid {
    std::vector<std::string> texts;
    std::vector<std::vector<Pair>> pairs;
};

const GoldenGrid& golden_grid() {
    static const GoldenGrid grid = [] {
        GoldenGrid result;
        const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-itm.json")["cases"];
        for (const auto& item : cases)
            if (std::find(result.texts.begin(), result.texts.end(), item["text"]) == result.texts.end())
                result.texts.push_back(item["text"]);
        result.pairs.assign(kImages.size(), std::vector<Pair>(result.texts.size()));
        for (const auto& item : cases) {
            const auto image = std::find(kImages.begin(), kImages.end(), item["image"]) - kImages.begin();
            const auto text = std::find(result.texts.begin(), result.texts.end(), item["text"]) - result.texts.begin();
            Pair& pair = result.pairs[static_cast<std::size_t>(image)][static_cast<std::size_t>(text)];
            pair.itc = item["itc_cosine"];
            pair.itm_logit_cls = item["itm_logits"][1];
            pair.itm_logit_enc = item["itm_logits_enc_token"][1];
            pair.itm_prob_cls = item["itm_prob"];
            pair.itm_prob_enc = item["itm_prob_enc_token"];
        }
        return result;
    }();
    return grid;
}

// A retriever whose gallery contains the golden images (from transformers' pixel values, so
// that the JPEG image matches too) and texts.
const blip::Retriever& golden_retriever() {
    static const std::unique_ptr<blip::Retriever> retriever = [] {
        auto result = std::make_unique<blip::Retriever>(blip::Retriever::open(tiny_itm_path()));
        const auto& model = result->model();
        for (const std::string& image : kImages) {
            const auto pixels = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" /
                                                    (image + ".pixel_values.npy"));
            blip::EncodedImage encoded;
            encoded.embeds = model.vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
            encoded.feature = model.image_features(encoded.embeds);
            result->add_image(std::move(encoded));
        }
        result->add_texts(golden_grid().texts);
        return result;
    }();
    return *retriever;
}

// The hits that the golden values give for candidates `pairs` (one per gallery entry).
std::vector<blip::RetrievalHit> expected_hits(const std::vector<Pair>& pairs, std::size_t rerank,
                                              blip::EncoderFirstToken first_token) {
    std::vector<std::size_t> order(pairs.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return pairs[a].itc > pairs[b].itc; });
    std::vector<blip::RetrievalHit> hits;
    for (std::size_t rank = 0; rank < order.size(); ++rank) {
        const Pair& pair = pairs[order[rank]];
        blip::RetrievalHit hit;
        hit.index = order[rank];
        hit.itc_similarity = pair.itc;
        hit.score = pair.itc;
        if (rank < rerank) {
            const bool cls = first_token == blip::EncoderFirstToken::Cls;
            hit.reranked = true;
            hit.itm_logit = cls ? pair.itm_logit_cls : pair.itm_logit_enc;
            hit.itm_probability = cls ? pair.itm_prob_cls : pair.itm_prob_enc;
            hit.score = hit.itm_logit + hit.itc_similarity;
        }
        hits.push_back(hit);
    }
    std::sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(std::min(rerank, hits.size())),
              [](const auto& a, const auto& b) { return a.score > b.score; });
    return hits;
}

void check_hits(const std::vector<blip::RetrievalHit>& actual, const std::vector<blip::RetrievalHit>& expected) {
    REQUIRE(actual.size() == expected.size());
    for (std::size_t rank = 0; rank < expected.size(); ++rank) {
        CAPTURE(rank);
        // The golden scores of neighbors differ by more than the tolerance, so the order is
        // fixed.
        if (rank > 0 && expected[rank].reranked == expected[rank - 1].reranked)
            REQUIRE(expected[rank - 1].score - expected[rank].score > 2e-3);
        CHECK(actual[rank].index == expected[rank].index);
        CHECK(actual[rank].reranked == expected[rank].reranked);
        CHECK(std::abs(actual[rank].itc_similarity - expected[rank].itc_similarity) < 1e-4);
        CHECK(std::abs(actual[rank].score - expected[rank].score) < 1e-3);
        if (expected[rank].reranked) {
            CHECK(std::abs(actual[rank].itm_logit - expected[rank].itm_logit) < 1e-3);
            CHECK(std::abs(actual[rank].itm_probability - expected[rank].itm_probability) < 1e-4);
        }
    }
}

}  // namespace

TEST_CASE("retrieval text to image follows golden scores") {
    BLIP_REQUIRE_GOLDEN();
    const auto& retriever = golden_retriever();
    const auto& grid = golden_grid();
    REQUIRE(retriever.image_count() == kImages.size());
    for (std::size_t text = 0; text < grid.texts.size(); ++text) {
        CAPTURE(grid.texts[text]);
        std::vector<Pair> pairs;
        for (std::size_t image = 0; image < kImages.size(); ++image) pairs.push_back(grid.pairs[image][text]);
        for (const auto first_token : {blip::EncoderFirstToken::Enc, blip::EncoderFirstToken::Cls})
            for (const std::size_t rerank : {0, 1, 2, 3, 16}) {
                CAPTURE(blip::encoder_first_token_name(first_token));
                CAPTURE(rerank);
                blip::RetrievalOptions options;
                options.rerank = rerank;
                options.first_token = first_token;
                check_hits(retriever.search_images(grid.texts[text], options),
                           expected_hits(pairs, rerank, first_token));
            }
    }
}

TEST_CASE("retrieval image to text follows golden scores") {
    BLIP_REQUIRE_GOLDEN();
    const auto& retriever = golden_retriever();
    const auto& grid = golden_grid();
    REQUIRE(retriever.text_count() == grid.texts.size());
    const auto& model = retriever.model();
    for (std::size_t image = 0; image < kImages.size(); ++image) {
        CAPTURE(kImages[image]);
        const auto pixels = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" /
                                                (kImages[image] + ".pixel_values.npy"));
        blip::EncodedImage encoded;
        encoded.embeds = model.vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
        encoded.feature = model.image_features(encoded.embeds);
        for (const auto first_token : {blip::EncoderFirstToken::Enc, blip::EncoderFirstToken::Cls})
            for (const std::size_t rerank : {0, 1, 2, 4, 16}) {
                CAPTURE(blip::encoder_first_token_name(first_token));
                CAPTURE(rerank);
                blip::RetrievalOptions options;
                options.rerank = rerank;
                options.first_token = first_token;
                check_hits(retriever.search_texts(encoded, options),
                           expected_hits(grid.pairs[image], rerank, first_token));
            }
    }
}

TEST_CASE("retrieval top limits hits") {
    BLIP_REQUIRE_GOLDEN();
    const auto& retriever = golden_retriever();
    const std::string query = golden_grid().texts[0];
    blip::RetrievalOptions all;
    all.top = 0;
    const auto every = retriever.search_images(query, all);
    REQUIRE(every.size() == kImages.size());
    blip::RetrievalOptions two;
    two.top = 2;
    const auto best = retriever.search_images(query, two);
    REQUIRE(best.size() == 2);
    CHECK(best[0].index == every[0].index);
    CHECK(best[1].index == every[1].index);
}

TEST_CASE("retrieval png files match golden features") {
    BLIP_REQUIRE_GOLDEN();
    // Images added from files go through the library's own decoding and preprocessing,
    // exact for PNG.
    blip::Retriever retriever = blip::Retriever::open(tiny_itm_path());
    CHECK(retriever.search_images("a dog").empty());
    CHECK(retriever.add_image_file((blip_test::golden_dir() / "images" / "cats.png").string()) == 0);
    CHECK(retriever.add_image_file((blip_test::golden_dir() / "images" / "coco4016.png").string()) == 1);
    const auto& grid = golden_grid();
    const auto image = blip::decode_image_file((blip_test::golden_dir() / "images" / "cats.png").string());
    CHECK(retriever.search_texts(image).empty());
    for (std::size_t text = 0; text < grid.texts.size(); ++text) {
        CAPTURE(grid.texts[text]);
        const auto hits = retriever.search_images(grid.texts[text]);
        REQUIRE(hits.size() == 2);
        const std::vector<Pair> pairs = {grid.pairs[0][text], grid.pairs[1][text]};
        check_hits(hits, expected_hits(pairs, 16, blip::EncoderFirstToken::Enc));
    }
}

TEST_CASE("retrieval rejects foreign features") {
    BLIP_REQUIRE_GOLDEN();
    blip::Retriever retriever = blip::Retriever::open(tiny_itm_path());
    blip::EncodedImage wrong;
    wrong.feature.assign(3, 0.0f);
    CHECK_THROWS_AS(retriever.add_image(wrong), blip::Error);
    CHECK_THROWS_AS(retriever.search_texts(wrong), blip::Error);
    std::string too_long;
    for (int i = 0; i < 100; ++i) too_long += " word";
    CHECK_THROWS_AS(retriever.add_texts({"fine", too_long}), blip::Error);
    CHECK(retriever.text_count() == 0);
}

}  // namespace test_retrieval
