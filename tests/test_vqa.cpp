// Visual question answering on the tiny VQA checkpoint: question states and generated
// answers (greedy and 3 beams) against transformers 4.30.2 with [CLS] and with [ENC], the
// QuestionAnswerer pipeline, and answer ranking against a step-by-step recomputation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "blip/model/vqa.hpp"
#include "blip/pipeline/vqa.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_vqa {

namespace {

namespace fs = std::filesystem;

std::string converted(const std::string& name) { return blip_test::converted_golden_model("vqa", name); }

const blip::QuestionAnswerer& tiny_answerer() {
    static const std::unique_ptr<blip::QuestionAnswerer> answerer =
        std::make_unique<blip::QuestionAnswerer>(blip::QuestionAnswerer::open(converted("tiny-vqa")));
    return *answerer;
}

const blip::BlipForQuestionAnswering& tiny_vqa() { return tiny_answerer().model(); }

nlohmann::json vqa_cases() { return blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"]; }

// BlipImageProcessor gives every tiny model the same 64x64 input.
std::vector<float> image_embeds_of(const std::string& image) {
    const auto pixels =
        blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" / (image + ".pixel_values.npy"));
    return tiny_vqa().vision_model.forward(std::vector<float>(pixels.data.begin(), pixels.data.end()));
}

std::vector<std::int32_t> ids_of(const nlohmann::json& ids) { return ids.get<std::vector<std::int32_t>>(); }

blip::GenerationConfig max_length(std::int64_t length) {
    blip::GenerationConfig generation;
    generation.max_length = length;
    return generation;
}

// Score of one answer recomputed token by token through the KV cache, with its own
// log-softmax: sum of (1 - smoothing) * log P(target) + smoothing * mean log P.
double stepwise_score(const blip::BlipForQuestionAnswering& model, const std::vector<float>& question_embeds,
                      const std::vector<std::int32_t>& ids, double smoothing) {
    const auto length = static_cast<std::int64_t>(ids.size());
    blip::DecoderState state = model.decoder_state(question_embeds, 1, length, 1);
    const std::int64_t vocab = model.config.text.vocab_size;
    double score = 0;
    for (std::size_t t = 0; t + 1 < ids.size(); ++t) {
        const float* logits = model.text_decoder.decode(state, &ids[t], 1);
        const double largest = *std::max_element(logits, logits + vocab);
        double total = 0;
        double sum_logits = 0;
        for (std::int64_t i = 0; i < vocab; ++i) {
            total += std::exp(logits[i] - largest);
            sum_logits += logits[i];
        }
        const double log_total = largest + std::log(total);
        score += (1 - smoothing) * (logits[ids[t + 1]] - log_total) + smoothing * (sum_logits / vocab - log_total);
    }
    return score;
}

const std::vector<std::string> kAnswers = {"over", "huh", "two", "yes", "no", "blue", "a dog", "over alter agencies",
                                           "huh huh", "1", "red bike", "agencies", "spring", "gy"};

}  // namespace

TEST_CASE("vqa question embeds match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_vqa();
    double worst = 0;
    for (const std::string image : {"cats.png", "coco4016.png", "bike.jpg"}) {
        CAPTURE(image);
        // question_embeds.npy belongs to the image's first question.
        nlohmann::json first;
        for (const auto& item : vqa_cases())
            if (item["image"] == image) {
                first = item;
                break;
            }
        REQUIRE(!first.is_null());
        const auto question =
            model.encode_question(image_embeds_of(image), ids_of(first["input_ids"]), blip::EncoderFirstToken::Cls);
        const auto expected = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-vqa" /
                                                  (image + ".question_embeds.npy"));
        REQUIRE(question.size() == expected.size());
        const double error = blip_test::max_abs_diff(question, expected);
        worst = std::max(worst, error);
        CHECK(error < 1e-4);
    }
    MESSAGE("question_embeds max error " << worst);
}

TEST_CASE("vqa greedy answers match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_vqa();
    for (const auto& item : vqa_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["question"].get<std::string>());
        const auto embeds = image_embeds_of(image);
        const auto ids = ids_of(item["input_ids"]);

        const auto cls = model.encode_question(embeds, ids, blip::EncoderFirstToken::Cls);
        CHECK(model.generate(cls, max_length(10)) == ids_of(item["greedy"]));

        const auto enc = model.encode_question(embeds, ids, blip::EncoderFirstToken::Enc);
        CHECK(model.generate(enc, max_length(10)) == ids_of(item["enc_token_greedy"]));
    }
}

TEST_CASE("vqa beam3 answers match transformers") {
    BLIP_REQUIRE_GOLDEN();
    const auto& model = tiny_vqa();
    blip::GenerationConfig beam3 = max_length(10);
    beam3.num_beams = 3;
    std::vector<std::vector<float>> questions;
    std::vector<std::vector<std::int32_t>> expected;
    for (const auto& item : vqa_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["question"].get<std::string>());
        questions.push_back(
            model.encode_question(image_embeds_of(image), ids_of(item["input_ids"]), blip::EncoderFirstToken::Cls));
        expected.push_back(ids_of(item["beam3"]));
        CHECK(model.generate(questions.back(), beam3) == expected.back());
    }

    // All questions in one batch, with questions of different lengths side by side.
    std::vector<const std::vector<float>*> batch;
    for (const auto& question : questions) batch.push_back(&question);
    for (const auto& generation : {max_length(10), beam3}) {
        CAPTURE(generation.num_beams);
        const auto output = model.generate_batch(batch, generation);
        REQUIRE(output.sequences.size() == questions.size());
        for (std::size_t i = 0; i < questions.size(); ++i) {
            CAPTURE(i);
            if (generation.num_beams == 3) CHECK(output.sequences[i] == expected[i]);
            else CHECK(output.sequences[i] == model.generate(questions[i], generation));
        }
    }
}

TEST_CASE("vqa pipeline answers png images") {
    BLIP_REQUIRE_GOLDEN();
    // PNG decodes exactly as Pillow does, so the pipeline's own decoding, preprocessing and
    // tokenization must give transformers' answers.
    const auto& answerer = tiny_answerer();
    blip::VqaOptions transformers;
    transformers.first_token = blip::EncoderFirstToken::Cls;
    for (const auto& item : vqa_cases()) {
        const std::string image = item["image"];
        if (image == "bike.jpg") continue;
        const std::string question = item["question"];
        CAPTURE(image);
        CAPTURE(question);
        CHECK(answerer.tokenizer().encode(question) == ids_of(item["input_ids"]));
        const auto embeds = answerer.encode_image(blip::decode_image_file((blip_test::golden_dir() / "images" / image).string()));

        const auto cls = answerer.answer_embeds(embeds, question, transformers);
        CHECK(cls.ids == ids_of(item["greedy"]));
        CHECK(cls.text == item["decoded_greedy"].get<std::string>());

        const auto enc = answerer.answer_embeds(embeds, question);  // [ENC] is the default
        CHECK(enc.ids == ids_of(item["enc_token_greedy"]));
        CHECK(enc.text == item["decoded_enc_token_greedy"].get<std::string>());

        blip::VqaOptions beam3 = transformers;
        beam3.generation.num_beams = 3;
        const auto beam = answerer.answer_embeds(embeds, question, beam3);
        CHECK(beam.ids == ids_of(item["beam3"]));
        CHECK(beam.text == item["decoded_beam3"].get<std::string>());
    }
}

TEST_CASE("vqa rank first token follows greedy") {
    BLIP_REQUIRE_GOLDEN();
    // The greedy answer's first token is the argmax after [DEC], so among one-token answers
    // it has the highest first-token probability, and k = 1 keeps only it.
    const auto& model = tiny_vqa();
    const auto& tokens = model.config.tokens;
    for (const auto& item : vqa_cases()) {
        const std::string image = item["image"];
        CAPTURE(image);
        CAPTURE(item["question"].get<std::string>());
        const auto embeds = image_embeds_of(image);
        for (const auto first_token : {blip::EncoderFirstToken::Cls, blip::EncoderFirstToken::Enc}) {
            CAPTURE(blip::encoder_first_token_name(first_token));
            const auto expected = ids_of(item[first_token == blip::EncoderFirstToken::Cls ? "greedy" : "enc_token_greedy"]);
            const std::int32_t best = expected[1];
            std::set<std::int32_t> firsts = {best, 2058, 9616, 6292, 24079, 16666, 1265, 3320, 2003, 2053};
            std::vector<std::vector<std::int32_t>> answers;
            std::size_t best_index = 0;
            for (std::int32_t id : firsts) {
                if (id == best) best_index = answers.size();
                answers.push_back({tokens.bos, id, tokens.sep});
            }
            const auto question = model.encode_question(embeds, ids_of(item["input_ids"]), first_token);

            const auto all = model.rank_answers(question, answers);
            REQUIRE(all.size() == answers.size());
            const auto most_likely_first =
                std::max_element(all.begin(), all.end(), [](const auto& a, const auto& b) {
                    return a.first_token_probability < b.first_token_probability;
                });
            CHECK(most_likely_first->index == best_index);

            blip::AnswerRankOptions top1;
            top1.k = 1;
            const auto one = model.rank_answers(question, answers, top1);
            REQUIRE(one.size() == 1);
            CHECK(one[0].index == best_index);
        }
    }
}

TEST_CASE("vqa rank scores equal stepwise decoding") {
    BLIP_REQUIRE_GOLDEN();
    const auto& answerer = tiny_answerer();
    const auto& model = answerer.model();
    const auto list = answerer.prepare_answers(kAnswers);
    REQUIRE(list.decoder_ids.size() == kAnswers.size());
    for (const auto& ids : list.decoder_ids) {
        CHECK(ids.front() == model.config.tokens.bos);
        CHECK(ids.back() == model.config.tokens.sep);
    }
    const auto embeds = image_embeds_of("cats.png");
    const auto question = answerer.encode_question(embeds, "what color is the bike?");
    double worst = 0;
    for (const double smoothing : {0.0, 0.1}) {
        CAPTURE(smoothing);
        blip::AnswerRankOptions options;
        options.label_smoothing = smoothing;
        const auto ranked = model.rank_answers(question, list.decoder_ids, options);
        REQUIRE(ranked.size() == kAnswers.size());
        std::set<std::size_t> seen;
        for (std::size_t i = 0; i < ranked.size(); ++i) {
            CAPTURE(kAnswers[ranked[i].index]);
            seen.insert(ranked[i].index);
            const double expected = stepwise_score(model, question, list.decoder_ids[ranked[i].index], smoothing);
            worst = std::max(worst, std::abs(ranked[i].score - expected));
            CHECK(std::abs(ranked[i].score - expected) < 1e-4);
            if (i > 0) CHECK(ranked[i - 1].score >= ranked[i].score);
            // The first-token probability is the first term of the score.
            const auto& ids = list.decoder_ids[ranked[i].index];
            const double first_term = stepwise_score(model, question, {ids[0], ids[1]}, 0.0);
            CHECK(std::abs(std::log(ranked[i].first_token_probability) - first_term) < 1e-4);
        }
        CHECK(seen.size() == kAnswers.size());
    }
    MESSAGE("rank score max error against stepwise decoding " << worst);
}

TEST_CASE("vqa rank keeps top k by first token") {
    BLIP_REQUIRE_GOLDEN();
    const auto& answerer = tiny_answerer();
    const auto list = answerer.prepare_answers(kAnswers);
    const auto embeds = image_embeds_of("coco4016.png");
    const auto question = answerer.encode_question(embeds, "is there a dog?");
    const auto all = answerer.model().rank_answers(question, list.decoder_ids);
    REQUIRE(all.size() == kAnswers.size());

    blip::AnswerRankOptions options;
    options.k = 4;
    const auto top = answerer.model().rank_answers(question, list.decoder_ids, options);
    REQUIRE(top.size() == 4);
    double lowest_kept = 1;
    for (const auto& answer : top) lowest_kept = std::min(lowest_kept, answer.first_token_probability);
    std::set<std::size_t> kept;
    for (const auto& answer : top) kept.insert(answer.index);
    for (const auto& answer : all) {
        CAPTURE(kAnswers[answer.index]);
        if (kept.count(answer.index) == 0) CHECK(answer.first_token_probability <= lowest_kept);
    }
    // The kept candidates keep their scores and order.
    std::size_t next = 0;
    for (const auto& answer : all) {
        if (kept.count(answer.index) == 0) continue;
        REQUIRE(next < top.size());
        CHECK(top[next].index == answer.index);
        CHECK(std::abs(top[next].score - answer.score) < 1e-9);
        ++next;
    }

    // The pipeline returns the same ranking with texts.
    blip::VqaRankOptions rank_options;
    rank_options.ranking.k = 4;
    const auto ranked = answerer.rank_embeds(embeds, "is there a dog?", list, rank_options);
    REQUIRE(ranked.size() == top.size());
    for (std::size_t i = 0; i < ranked.size(); ++i) {
        CHECK(ranked[i].index == top[i].index);
        CHECK(ranked[i].text == kAnswers[top[i].index]);
        CHECK(ranked[i].score == top[i].score);
    }
}

TEST_CASE("vqa rejects invalid input") {
    BLIP_REQUIRE_GOLDEN();
    const auto& answerer = tiny_answerer();
    const auto& model = answerer.model();
    const auto embeds = image_embeds_of("cats.png");
    const auto question = answerer.encode_question(embeds, "what is this?");
    const auto& tokens = model.config.tokens;

    CHECK_THROWS_AS(model.rank_answers(question, {}), blip::Error);
    CHECK_THROWS_AS(model.rank_answers(question, {{tokens.bos}}), blip::Error);
    CHECK_THROWS_AS(model.rank_answers(question, {{tokens.cls, 2058, tokens.sep}}), blip::Error);
    CHECK_THROWS_AS(model.rank_answers(question, {{tokens.bos, 50000, tokens.sep}}), blip::Error);
    std::vector<std::int32_t> too_long(static_cast<std::size_t>(model.config.text.max_position_embeddings + 1), 2058);
    too_long.front() = tokens.bos;
    CHECK_THROWS_AS(model.rank_answers(question, {too_long}), blip::Error);
    blip::AnswerRankOptions no_candidates;
    no_candidates.k = 0;
    CHECK_THROWS_AS(model.rank_answers(question, {{tokens.bos, 2058, tokens.sep}}, no_candidates), blip::Error);
    blip::AnswerRankOptions bad_smoothing;
    bad_smoothing.label_smoothing = 1.5;
    CHECK_THROWS_AS(model.rank_answers(question, {{tokens.bos, 2058, tokens.sep}}, bad_smoothing), blip::Error);

    CHECK_THROWS_AS(model.answer_decoder_ids({2058}), blip::Error);
    CHECK_THROWS_AS(model.generate(std::vector<float>(5, 0.0f)), blip::Error);
    CHECK_THROWS_AS(model.generate_batch({}), blip::Error);
    CHECK_THROWS_AS(model.generate_batch({nullptr}), blip::Error);
    CHECK_THROWS_AS(model.encode_question(std::vector<float>(5, 0.0f), {tokens.cls, tokens.sep}), blip::Error);
    CHECK_THROWS_AS(model.encode_question(embeds, {2058, tokens.sep}), blip::Error);
    std::string long_question;
    for (int i = 0; i < 100; ++i) long_question += " why";
    CHECK_THROWS_AS(answerer.encode_question(embeds, long_question), blip::Error);

    blip::AnswerList mismatched;
    mismatched.texts = {"yes", "no"};
    mismatched.decoder_ids = {{tokens.bos, 2748, tokens.sep}};
    CHECK_THROWS_AS(answerer.rank_embeds(embeds, "what is this?", mismatched), blip::Error);

    // Answers start with [DEC] alone, so max_length may be one more than the positions.
    const std::int64_t positions = model.config.text.max_position_embeddings;
    blip::VqaOptions longest;
    longest.generation.max_length = positions + 1;
    CHECK_NOTHROW(answerer.check_options(longest));
    blip::VqaOptions too_long_answer;
    too_long_answer.generation.max_length = positions + 2;
    CHECK_THROWS_AS(answerer.check_options(too_long_answer), blip::Error);
    blip::VqaOptions no_beams;
    no_beams.generation.num_beams = 0;
    CHECK_THROWS_AS(answerer.check_options(no_beams), blip::Error);
}

TEST_CASE("vqa model rejects other tasks") {
    BLIP_REQUIRE_GOLDEN();
    for (const std::string name : {"tiny-caption", "tiny-itm"}) {
        const std::string path = converted(name);
        CAPTURE(path);
        try {
            blip::QuestionAnswerer::open(path);
            FAIL("a model of another task was accepted");
        } catch (const blip::Error& error) {
            const std::string message = error.what();
            CAPTURE(message);
            CHECK(message.find(path) != std::string::npos);
            CHECK(message.find(name == "tiny-caption" ? "caption" : "itm") != std::string::npos);
            CHECK(message.find("vqa") != std::string::npos);
        }
    }
}

}  // namespace test_vqa
