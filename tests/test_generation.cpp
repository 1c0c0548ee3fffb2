// Generation strategies on the tiny captioning checkpoint. Beam search, repetition penalty,
// minimum length and batched greedy search match transformers 4.30.2 token for token.
// Batches match single rows, sampling is reproducible and draws from the right distribution,
// and streamed text matches the decoded caption.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/generate/generate.hpp"
#include "blip/generate/streaming.hpp"
#include "blip/kernels/linear.hpp"
#include "blip/model/caption.hpp"
#include "blip/pipeline/captioner.hpp"
#include "blip/quant/quantize.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_generation {

namespace {

namespace fs = std::filesystem;

// Converts the tiny captioner once per test program and loads it with its tokenizer.
const blip::Captioner& tiny_pipeline() {
    static const std::unique_ptr<blip::Captioner> captioner = std::make_unique<blip::Captioner>(
        blip::Captioner::open(blip_test::converted_golden_model("generation", "tiny-caption")));
    return *captioner;
}

const blip::BlipForConditionalGeneration& tiny_captioner() { return tiny_pipeline().model(); }

fs::path expected_dir() { return blip_test::golden_dir() / "expected" / "tiny-caption"; }

nlohmann::json golden_cases() {
    return blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json");
}

std::vector<float> image_embeds_of(const blip::BlipForConditionalGeneration& model, const std::string& image) {
    const auto pixels = blip_test::read_npy(expected_dir() / (image + ".pixel_values.npy"));
    return model.vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

blip::GenerationConfig beam3() {
    blip::GenerationConfig config;
    config.num_beams = 3;
    config.min_length = 5;
    config.max_length = 40;
    return config;
}

}  // namespace

TEST_CASE("beam search matches transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    for (const auto& item : golden["cases"]) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);

        CHECK(model.generate(embeds, {}, beam3()) == ids_of(item["beam3"]));

        blip::GenerationConfig beam4;
        beam4.num_beams = 4;
        beam4.length_penalty = 0.6;
        beam4.max_length = 24;
        CHECK(model.generate(embeds, {}, beam4) == ids_of(item["beam4_len0.6"]));

        for (const auto& [key, prompt] : item.items()) {
            if (key.rfind("prompt:", 0) != 0) continue;
            CAPTURE(key);
            CHECK(model.generate(embeds, ids_of(prompt["input_ids"]), beam3()) == ids_of(prompt["beam3"]));
        }
    }
}

TEST_CASE("greedy processors match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    for (const auto& item : golden["cases"]) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);

        // transformers' default max_length of 20 applies to this case and the next.
        blip::GenerationConfig repetition;
        repetition.repetition_penalty = 1.5;
        CHECK(model.generate(embeds, {}, repetition) == ids_of(item["greedy_rep1.5"]));

        blip::GenerationConfig min10;
        min10.min_length = 10;
        const auto ids = model.generate(embeds, {}, min10);
        CHECK(ids == ids_of(item["greedy_min10"]));
        CHECK(ids.size() <= 20);
        CHECK(ids.size() >= 10);
    }
}

TEST_CASE("batched greedy matches transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    std::vector<std::vector<float>> embeds;
    for (const auto& item : golden["cases"]) embeds.push_back(image_embeds_of(model, item["image"]));
    blip::GenerationConfig greedy;
    greedy.max_length = 40;
    const auto output = model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, greedy);
    REQUIRE(output.sequences.size() == 3);
    const auto padded = blip::pad_sequences(output.sequences, model.config.tokens.pad);
    const auto expected = golden["batch_greedy"];
    REQUIRE(expected.size() == 3);
    for (std::size_t row = 0; row < 3; ++row) {
        CAPTURE(row);
        CHECK(padded[row] == ids_of(expected[row]));
    }
}

namespace {

// Decodes `config` for the three golden images in one batch with per-image `prompts`, then
// each image alone, and checks that the batch gave every image its own tokens.
void check_batch_equals_alone(const blip::BlipForConditionalGeneration& model,
                              const std::vector<std::vector<std::int32_t>>& prompts,
                              const blip::GenerationConfig& config) {
    const auto golden = golden_cases();
    std::vector<std::vector<float>> embeds;
    for (const auto& item : golden["cases"]) embeds.push_back(image_embeds_of(model, item["image"]));
    const auto batch = model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, prompts, config);
    const auto per_image = static_cast<std::size_t>(config.num_return_sequences);
    REQUIRE(batch.sequences.size() == 3 * per_image);
    for (std::size_t image = 0; image < 3; ++image) {
        CAPTURE(image);
        const auto alone = model.generate_batch({&embeds[image]}, {prompts[image]}, config);
        REQUIRE(alone.sequences.size() == per_image);
        for (std::size_t j = 0; j < per_image; ++j) {
            CAPTURE(j);
            CHECK(batch.sequences[image * per_image + j] == alone.sequences[j]);
            if (!alone.sequence_scores.empty())
                CHECK(batch.sequence_scores[image * per_image + j] == alone.sequence_scores[j]);
        }
    }
}

// Prompts of three different lengths, as the tokenizer returns them.
std::vector<std::vector<std::int32_t>> mixed_prompts() {
    return {{101, 1037, 3861, 1997, 102}, {}, {101, 1037, 5855, 1997, 1996, 102}};
}

// Restores the default thread count when a test case ends.
struct ThreadCountGuard {
    ~ThreadCountGuard() { blip::set_num_threads(0); }
};

}  // namespace

TEST_CASE("batch equals single rows") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();

    blip::GenerationConfig greedy;
    greedy.max_length = 30;
    SUBCASE("greedy, mixed prompt lengths") { check_batch_equals_alone(model, mixed_prompts(), greedy); }
    SUBCASE("beam search, mixed prompt lengths") { check_batch_equals_alone(model, mixed_prompts(), beam3()); }
    SUBCASE("beam search, three best") {
        blip::GenerationConfig config = beam3();
        config.num_return_sequences = 3;
        check_batch_equals_alone(model, {{}, {}, {}}, config);
    }
    SUBCASE("sampling, two sequences per image") {
        blip::GenerationConfig config;
        config.max_length = 30;
        config.do_sample = true;
        config.top_p = 0.9;
        config.repetition_penalty = 1.1;
        config.num_return_sequences = 2;
        config.seed = 1234;
        check_batch_equals_alone(model, mixed_prompts(), config);
    }
    SUBCASE("beam sampling, two sequences per image") {
        blip::GenerationConfig config = beam3();
        config.do_sample = true;
        config.top_k = 20;
        config.temperature = 1.3;
        config.num_return_sequences = 2;
        config.seed = 99;
        check_batch_equals_alone(model, mixed_prompts(), config);
    }
    SUBCASE("no-repeat n-grams") {
        blip::GenerationConfig config = greedy;
        config.no_repeat_ngram_size = 2;
        check_batch_equals_alone(model, mixed_prompts(), config);
    }
}

TEST_CASE("batch rows may share a source") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "cats.png");
    const std::int32_t bos = model.config.tokens.bos;

    blip::GenerationRequest request;
    request.prefixes = {{bos, 1037, 3861, 1997}, {bos}, {bos, 1037}};
    request.sources = {0, 0, 0};
    request.eos_token_id = model.config.tokens.eos;
    request.pad_token_id = model.config.tokens.pad;
    const blip::GenerationConfig config = beam3();
    blip::DecoderState state = model.text_decoder.new_state(
        blip::generation_state_size(request, config, 1, model.vision_model.num_tokens()));
    model.text_decoder.bert.set_encoder_hidden_states(state, 0, embeds.data(), model.vision_model.num_tokens());
    const auto output = blip::generate(model.text_decoder, state, request, config);
    REQUIRE(output.sequences.size() == 3);
    CHECK(output.sequences[0] == model.generate(embeds, {101, 1037, 3861, 1997, 102}, config));
    CHECK(output.sequences[1] == model.generate(embeds, {}, config));
    CHECK(output.sequences[2] == model.generate(embeds, {101, 1037, 102}, config));
}

TEST_CASE("beam search reorders the cache") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "cats.png");
    const blip::GenerationConfig config = beam3();
    const auto output = model.generate_batch({&embeds}, {{101, 1037, 3861, 1997, 102}}, config);
    const auto& stats = output.stats;

    // The 4-token prefix runs once, in one call; then each step runs one token per beam.
    // Recomputing the beams' histories would run many more tokens.
    const std::int64_t steps = stats.forward_calls - 1;
    CHECK(stats.row_tokens == 4 + config.num_beams * steps);
    CHECK(steps >= 1);
    CHECK(steps <= config.max_length - 4 - 1);
}

TEST_CASE("finished rows stop costing work") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    std::vector<std::vector<float>> embeds;
    for (const auto& item : golden["cases"]) embeds.push_back(image_embeds_of(model, item["image"]));
    blip::GenerationConfig greedy;
    greedy.max_length = 40;
    const auto output = model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, greedy);

    // A row of n tokens ([DEC] included) runs n - 1 of them: every token but the last, whose
    // successor is never needed. Rows that ended are not run again.
    std::int64_t expected = 0;
    std::int64_t longest = 0;
    for (const auto& sequence : output.sequences) {
        expected += static_cast<std::int64_t>(sequence.size()) - 1;
        longest = std::max(longest, static_cast<std::int64_t>(sequence.size()));
    }
    CHECK(output.stats.row_tokens == expected);
    CHECK(output.stats.forward_calls == longest - 1);
    CHECK(expected < 3 * (longest - 1));  // the golden rows end at different lengths
}

TEST_CASE("sampling is reproducible") {
    BLIP_REQUIRE_GOLDEN();
    ThreadCountGuard guard;
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    std::vector<std::vector<float>> embeds;
    for (const auto& item : golden["cases"]) embeds.push_back(image_embeds_of(model, item["image"]));

    blip::GenerationConfig config;
    config.max_length = 30;
    config.do_sample = true;
    config.top_p = 0.9;
    config.repetition_penalty = 1.1;
    config.num_return_sequences = 2;
    config.seed = 42;
    std::vector<std::vector<std::vector<std::int32_t>>> runs;
    for (int threads : {1, 2, 3, 1}) {
        blip::set_num_threads(threads);
        runs.push_back(model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, config).sequences);
    }
    for (std::size_t run = 1; run < runs.size(); ++run) {
        CAPTURE(run);
        CHECK(runs[run] == runs[0]);
    }

    // Beam sampling too.
    blip::GenerationConfig beam_sampling = config;
    beam_sampling.num_beams = 3;
    std::vector<std::vector<std::vector<std::int32_t>>> beam_runs;
    for (int threads : {1, 3}) {
        blip::set_num_threads(threads);
        beam_runs.push_back(model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, beam_sampling).sequences);
    }
    CHECK(beam_runs[1] == beam_runs[0]);
    CHECK(beam_runs[0].size() == 6);

    // Another seed gives other samples, and the two samples of an image differ.
    config.seed = 43;
    blip::set_num_threads(0);
    const auto other = model.generate_batch({&embeds[0], &embeds[1], &embeds[2]}, {}, config).sequences;
    CHECK(other != runs[0]);
    CHECK(runs[0][0] != runs[0][1]);
}

TEST_CASE("sampling with top_k 1 is greedy") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto golden = golden_cases();
    for (const auto& item : golden["cases"]) {
        const std::string image = item["image"];
        CAPTURE(image);
        const auto embeds = image_embeds_of(model, image);
        blip::GenerationConfig config;
        config.max_length = 40;
        config.do_sample = true;
        config.top_k = 1;
        config.temperature = 0.5;
        config.seed = 7;
        CHECK(model.generate(embeds, {}, config) == ids_of(item["greedy"]));
    }
}

TEST_CASE("sampled frequencies match the warped distribution") {
    // Logits of 12 tokens, two of them tied. Temperature 0.7, then top-k 8 (drops the 4
    // lowest), then top-p 0.8 over what is left, which keeps 4 tokens (probabilities 0.48,
    // 0.20 and 0.10 twice after top-k) and drops 4 more.
    const std::vector<float> logits = {1.0f, 2.5f, -0.5f, 2.0f, 0.3f, 2.0f, -1.5f, 1.7f, 0.0f, -3.0f, 3.1f, 0.8f};
    const auto count = static_cast<std::int64_t>(logits.size());
    const double temperature = 0.7;
    const std::int64_t top_k = 8;
    const double top_p = 0.8;

    // The expected distribution, computed directly: the 8 largest logits, then the smallest
    // set of most likely tokens whose probability reaches 0.8.
    std::vector<std::pair<double, std::int32_t>> ranked;
    for (std::int64_t i = 0; i < count; ++i)
        ranked.emplace_back(static_cast<double>(static_cast<float>(logits[i] / static_cast<float>(temperature))),
                            static_cast<std::int32_t>(i));
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    ranked.resize(static_cast<std::size_t>(top_k));
    double total = 0;
    for (const auto& [score, token] : ranked) total += std::exp(score - ranked[0].first);
    std::vector<double> expected(static_cast<std::size_t>(count), 0.0);
    double mass = 0;
    for (const auto& [score, token] : ranked) {
        if (mass >= top_p) break;
        const double p = std::exp(score - ranked[0].first) / total;
        expected[static_cast<std::size_t>(token)] = p;
        mass += p;
    }
    for (double& p : expected) p /= mass;
    const auto kept = std::count_if(expected.begin(), expected.end(), [](double p) { return p > 0; });
    REQUIRE(kept == 4);  // the case covers a real cut by both filters

    std::vector<float> scratch;
    std::vector<std::pair<float, std::int32_t>> pairs;
    std::vector<float> warped = logits;
    blip::apply_temperature(warped.data(), count, temperature);
    blip::apply_top_k(warped.data(), count, top_k, 1, scratch);
    blip::apply_top_p(warped.data(), count, top_p, 1, pairs);

    const std::int64_t draws = 200000;
    blip::SequenceRandom random(2024, 0);
    std::vector<std::int64_t> hits(static_cast<std::size_t>(count), 0);
    for (std::int64_t draw = 0; draw < draws; ++draw) ++hits[static_cast<std::size_t>(blip::sample_token(warped.data(), count, random))];

    // Each kept token's frequency lies within 5 standard deviations of its probability. A
    // correct sampler misses that with probability below 6e-7 per token (normal
    // approximation), so below 1e-5 for all of them. The seed is fixed, so the outcome is the
    // same on every run.
    for (std::int64_t token = 0; token < count; ++token) {
        CAPTURE(token);
        const double p = expected[static_cast<std::size_t>(token)];
        const double frequency = static_cast<double>(hits[static_cast<std::size_t>(token)]) / draws;
        if (p == 0) {
            CHECK(hits[static_cast<std::size_t>(token)] == 0);
            continue;
        }
        const double sigma = std::sqrt(p * (1 - p) / draws);
        CHECK(std::abs(frequency - p) <= 5 * sigma);
    }
}

TEST_CASE("logits processors follow transformers") {
    SUBCASE("repetition penalty") {
        std::vector<float> scores = {2.0f, -2.0f, 3.0f, 0.0f};
        std::vector<std::int32_t> seen;
        // Token 0 occurs twice but is penalized once.
        blip::apply_repetition_penalty(scores.data(), {0, 1, 0, 3}, 2.0, seen);
        CHECK(scores[0] == 1.0f);
        CHECK(scores[1] == -4.0f);
        CHECK(scores[2] == 3.0f);
        CHECK(scores[3] == 0.0f);
    }
    SUBCASE("no-repeat n-gram") {
        std::vector<float> scores(10, 1.0f);
        // The sequence ends with (5, 6); (5, 6, 7) and (5, 6, 2) already occurred.
        blip::apply_no_repeat_ngram(scores.data(), {5, 6, 7, 1, 5, 6, 2, 5, 6}, 3);
        CHECK(scores[7] == blip::kFilteredScore);
        CHECK(scores[2] == blip::kFilteredScore);
        CHECK(scores[1] == 1.0f);
        CHECK(scores[5] == 1.0f);
        // Too short for a full n-gram: nothing is banned.
        std::vector<float> short_scores(10, 1.0f);
        blip::apply_no_repeat_ngram(short_scores.data(), {5}, 3);
        CHECK(std::count(short_scores.begin(), short_scores.end(), 1.0f) == 10);
    }
    SUBCASE("top-k keeps ties") {
        std::vector<float> scores = {1.0f, 3.0f, 2.0f, 2.0f, 0.5f};
        std::vector<float> scratch;
        blip::apply_top_k(scores.data(), 5, 2, 1, scratch);
        CHECK(scores == std::vector<float>{blip::kFilteredScore, 3.0f, 2.0f, 2.0f, blip::kFilteredScore});
    }
    SUBCASE("top-p keeps min_tokens_to_keep") {
        std::vector<float> scores = {10.0f, 0.0f, -1.0f};
        std::vector<std::pair<float, std::int32_t>> scratch;
        std::vector<float> one = scores;
        blip::apply_top_p(one.data(), 3, 0.5, 1, scratch);
        CHECK(one == std::vector<float>{10.0f, blip::kFilteredScore, blip::kFilteredScore});
        std::vector<float> two = scores;
        blip::apply_top_p(two.data(), 3, 0.5, 2, scratch);
        CHECK(two == std::vector<float>{10.0f, 0.0f, blip::kFilteredScore});
    }
    SUBCASE("min length") {
        std::vector<float> scores(4, 0.5f);
        blip::apply_min_length(scores.data(), 3, 4, 2);
        CHECK(scores[2] == blip::kFilteredScore);
        std::vector<float> long_enough(4, 0.5f);
        blip::apply_min_length(long_enough.data(), 4, 4, 2);
        CHECK(long_enough[2] == 0.5f);
    }
}

TEST_CASE("invalid generation settings are rejected") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_captioner();
    const auto embeds = image_embeds_of(model, "cats.png");
    blip::GenerationConfig greedy_many;
    greedy_many.num_return_sequences = 2;
    CHECK_THROWS_AS(model.generate(embeds, {}, greedy_many), blip::Error);
    blip::GenerationConfig too_many = beam3();
    too_many.num_return_sequences = 4;
    CHECK_THROWS_AS(model.generate(embeds, {}, too_many), blip::Error);
    blip::GenerationConfig cold;
    cold.do_sample = true;
    cold.temperature = 0;
    CHECK_THROWS_AS(model.generate(embeds, {}, cold), blip::Error);
    blip::GenerationConfig wide;
    wide.top_p = 1.5;
    CHECK_THROWS_AS(model.generate(embeds, {}, wide), blip::Error);
}

TEST_CASE("overlong sequences rejected before decoding") {
    BLIP_REQUIRE_GOLDEN();
    const blip::Captioner& captioner = tiny_pipeline();
    const std::int64_t positions = captioner.config().text.max_position_embeddings;
    const auto embeds = image_embeds_of(captioner.model(), "cats.png");

    // The last token is never fed back, so max_length may be one more than the positions.
    blip::GenerationConfig longest;
    longest.max_length = positions + 1;
    longest.min_length = positions + 1;
    CHECK(captioner.model().generate(embeds, {}, longest).size() == static_cast<std::size_t>(positions + 1));

    blip::GenerationConfig too_long;
    too_long.max_length = positions + 2;
    const std::string expected = "generation: max_length " + std::to_string(positions + 2) + " needs " +
                                 std::to_string(positions + 1) + " positions, more than the text model's " +
                                 std::to_string(positions) + " (max_position_embeddings); use a max_length of at most " +
                                 std::to_string(positions + 1);
    CHECK_THROWS_WITH_AS(captioner.model().generate(embeds, {}, too_long), expected.c_str(), blip::Error);
    blip::CaptionOptions options;
    options.generation = too_long;
    CHECK_THROWS_WITH_AS(captioner.check_options(options), expected.c_str(), blip::Error);

    // A prompt of `positions` words gives a prefix one token longer than the positions.
    blip::CaptionOptions long_prompt;
    for (std::int64_t word = 0; word < positions; ++word) long_prompt.prompt += "a ";
    CHECK_THROWS_WITH_AS(captioner.check_options(long_prompt),
                         ("generation: the prefix ([DEC] and the prompt) has " + std::to_string(positions + 1) +
                          " tokens, more than the text model's " + std::to_string(positions) +
                          " positions (max_position_embeddings); shorten the prompt")
                             .c_str(),
                         blip::Error);
    CHECK_THROWS_AS(captioner.caption_embeds(embeds, long_prompt), blip::Error);
}

TEST_CASE("streamed pieces concatenate to the caption") {
    BLIP_REQUIRE_GOLDEN();
    const auto& captioner = tiny_pipeline();
    const auto embeds = image_embeds_of(captioner.model(), "coco4016.png");

    blip::CaptionOptions sampling;
    sampling.generation.max_length = 30;
    sampling.generation.do_sample = true;
    sampling.generation.seed = 5;
    blip::CaptionOptions beams;
    beams.generation = beam3();
    blip::CaptionOptions prompted;
    prompted.prompt = "a picture of";
    prompted.generation.max_length = 30;
    for (blip::CaptionOptions options : {blip::CaptionOptions{}, sampling, beams, prompted}) {
        std::string streamed;
        std::int64_t pieces = 0;
        options.on_text = [&](std::string_view piece) {
            streamed += piece;
            ++pieces;
        };
        const blip::Caption caption = captioner.caption_embeds(embeds, options);
        CAPTURE(caption.text);
        CHECK(streamed == caption.text);
        CHECK(pieces > 1);
    }
}

TEST_CASE("streamer matches decode on tricky tokens") {
    BLIP_REQUIRE_GOLDEN();
    const blip::Tokenizer& tokenizer = tiny_pipeline().tokenizer();
    // Tokens that meet the clean-up rules of decode(): punctuation, apostrophes and
    // contractions, "##" pieces, special tokens and the start of "n't".
    std::vector<std::int32_t> pool;
    for (const char* token : {"a", "n", "'", "t", "s", "m", "ve", "re", ".", ",", "?", "!", "##s", "##t", "##n",
                              "##'", "don", "cat", "[SEP]", "[PAD]", "[UNK]", "#", "##", "-"})
        pool.push_back(tokenizer.token_to_id(token));
    pool.push_back(30522);  // [DEC]

    std::mt19937 generator(99);
    std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
    std::uniform_int_distribution<int> length(0, 12);
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<std::int32_t> ids;
        const int tokens = length(generator);
        for (int i = 0; i < tokens; ++i) ids.push_back(pool[pick(generator)]);
        std::string streamed;
        blip::TextStreamer streamer(tokenizer, [&](std::string_view piece) { streamed += piece; });
        std::string last_text;
        bool grows = true;
        for (std::int32_t id : ids) {
            streamer.put(id);
            grows = grows && streamer.text().compare(0, last_text.size(), last_text) == 0;
            last_text = streamer.text();
        }
        streamer.end();
        CAPTURE(tokenizer.decode(ids, false));
        REQUIRE(streamed == tokenizer.decode(ids));
        CHECK(grows);
    }
}

TEST_CASE("text linear rows independent of batch") {
    // Shapes of blip-image-captioning-base's text decoder, f32 and f16 weights: each row of a
    // multi-row product has the bits of the same row alone.
    std::mt19937 generator(5);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    for (const auto& [out, in] : std::vector<std::pair<std::int64_t, std::int64_t>>{{768, 768}, {3072, 768}, {768, 3072}, {1000, 768}}) {
        std::vector<float> weights(static_cast<std::size_t>(out * in));
        for (float& w : weights) w = normal(generator);
        std::vector<float> bias(static_cast<std::size_t>(out));
        for (float& b : bias) b = normal(generator);
        const std::int64_t max_rows = 9;
        std::vector<float> x(static_cast<std::size_t>(max_rows * in));
        for (float& v : x) v = normal(generator) * 20;
        const auto f16 = blip::quant::quantize_rows(blip::DType::F16, weights.data(), out, in);
        for (blip::DType type : {blip::DType::F32, blip::DType::F16}) {
            blip::gguf::TensorInfo tensor;
            tensor.name = "weight";
            tensor.type = type;
            tensor.shape = {out, in};
            tensor.data = type == blip::DType::F32 ? static_cast<const void*>(weights.data()) : f16.data();
            std::vector<float> alone(static_cast<std::size_t>(max_rows * out));
            for (std::int64_t row = 0; row < max_rows; ++row)
                blip::kernels::linear(tensor, bias.data(), out, in, x.data() + row * in, 1, alone.data() + row * out,
                                      blip::kernels::RowOrder::BatchInvariant);
            for (std::int64_t rows = 2; rows <= max_rows; ++rows) {
                CAPTURE(out);
                CAPTURE(in);
                CAPTURE(rows);
                std::vector<float> together(static_cast<std::size_t>(rows * out));
                blip::kernels::linear(tensor, bias.data(), out, in, x.data(), rows, together.data(),
                                      blip::kernels::RowOrder::BatchInvariant);
                CHECK(std::memcmp(together.data(), alone.data(), together.size() * sizeof(float)) == 0);
            }
        }
    }
}

TEST_CASE("gemm bits independent of thread count") {
    // Large enough for blip::threads_for_work to give each of 3 threads work: the product of a
    // vocabulary-sized weight with 4 rows, as the language model head of beam search runs it.
    ThreadCountGuard guard;
    const std::int64_t out = 4000;
    const std::int64_t in = 768;
    const std::int64_t rows = 4;
    REQUIRE(blip::threads_for_work(rows * out * in) >= std::min(3, blip::num_threads()));
    std::mt19937 generator(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> weights(static_cast<std::size_t>(out * in));
    for (float& w : weights) w = normal(generator);
    std::vector<float> x(static_cast<std::size_t>(rows * in));
    for (float& v : x) v = normal(generator);
    for (blip::DType type : {blip::DType::F32, blip::DType::F16, blip::DType::Q8_0}) {
        const std::string type_name(blip::dtype_name(type));
        CAPTURE(type_name);
        const auto packed = type == blip::DType::F32
                                ? std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(weights.data()),
                                                            reinterpret_cast<const std::uint8_t*>(weights.data() + weights.size()))
                                : blip::quant::quantize_rows(type, weights.data(), out, in);
        std::vector<std::vector<float>> results;
        for (int threads : {1, 2, 3}) {
            blip::set_num_threads(threads);
            std::vector<float> y(static_cast<std::size_t>(rows * out));
            blip::quant::gemm(type, packed.data(), out, in, x.data(), rows, y.data());
            results.push_back(std::move(y));
        }
        CHECK(std::memcmp(results[1].data(), results[0].data(), results[0].size() * sizeof(float)) == 0);
        CHECK(std::memcmp(results[2].data(), results[0].data(), results[0].size() * sizeof(float)) == 0);
    }
}

}  // namespace test_generation
