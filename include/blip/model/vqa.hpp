// BLIP visual question answering (transformers' BlipForQuestionAnswering): the vision
// model encodes an image, the image-grounded text encoder reads the question with
// cross-attention to it, and the answer decoder starts from [DEC] and cross-attends to the
// question's states. Answers are either generated or chosen from a list of candidates by
// the decoder's likelihood (Salesforce's rank_answer).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/generate/config.hpp"
#include "blip/generate/generate.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/model/config.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/text.hpp"
#include "blip/model/vision.hpp"

namespace blip {

// Settings of answer ranking.
struct AnswerRankOptions {
    // Candidates kept after scoring their first token, whose whole answers are then scored
    // (k_test in Salesforce's code, 128 for VQAv2). Fewer candidates keep them all.
    std::int64_t k = 128;
    // 0 scores each answer by its log-likelihood. Salesforce's rank_answer scores by the
    // negated training loss of models/med.py, a cross-entropy with label smoothing 0.1, so
    // 0.1 reproduces its scores.
    double label_smoothing = 0.0;
};

// Scores of one candidate answer.
struct AnswerScore {
    std::size_t index = 0;               // position in the candidate list
    double first_token_probability = 0;  // P(first answer token | [DEC], question)
    // Sum over the answer's tokens and its final [SEP] of log P(token | earlier tokens,
    // question), or the label-smoothed equivalent; the first token's term included.
    double score = 0;
};

namespace detail {

// log(sum(exp(logits))) over `count` values, in double.
inline double log_sum_exp(const float* logits, std::int64_t count) {
    float max_logit = logits[0];
    for (std::int64_t i = 1; i < count; ++i) max_logit = std::max(max_logit, logits[i]);
    double sum = 0;
    for (std::int64_t i = 0; i < count; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
    return max_logit + std::log(sum);
}

// The score term of one position: (1 - smoothing) * log P(target) + smoothing * mean log P,
// the negated cross-entropy that torch.nn.CrossEntropyLoss(label_smoothing) computes.
inline double position_score(const float* logits, std::int64_t vocab, std::int32_t target, double label_smoothing) {
    const double normalizer = log_sum_exp(logits, vocab);
    double score = (1.0 - label_smoothing) * (logits[target] - normalizer);
    if (label_smoothing != 0.0) {
        double sum = 0;
        for (std::int64_t i = 0; i < vocab; ++i) sum += logits[i];
        score += label_smoothing * (sum / static_cast<double>(vocab) - normalizer);
    }
    return score;
}

}  // namespace detail

class BlipForQuestionAnswering {
public:
    // Candidate answers scored together in one decoder pass.
    static constexpr std::size_t kAnswersPerPass = 16;

    // Reads the configuration and every weight of `file`, checking each tensor's shape. The
    // model reads the weights in place and keeps `file` alive.
    explicit BlipForQuestionAnswering(std::shared_ptr<const gguf::File> file) : file_(std::move(file)) {
        if (!file_) throw Error("BlipForQuestionAnswering: no model file given");
        config = read_config(*file_);
        if (config.task != Task::Vqa)
            throw Error(file_->name() + ": the model's task is " + task_name(config.task) +
                        ", but visual question answering needs a vqa model (BlipForQuestionAnswering, with "
                        "text_encoder and text_decoder), such as Salesforce/blip-vqa-base converted with blip-convert");
        if (config.text.encoder_hidden_size != config.vision.hidden_size)
            throw Error(file_->name() + ": text encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                        " differs from the vision hidden_size " + std::to_string(config.vision.hidden_size));
        // The decoder's cross-attention layers read the question encoder's states.
        if (config.text.encoder_hidden_size != config.text.hidden_size)
            throw Error(file_->name() + ": text encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                        " differs from the text hidden_size " + std::to_string(config.text.hidden_size) +
                        ", so the answer decoder cannot cross-attend to the question states");
        vision_model.load(*file_, "vision_model", config.vision);
        text_encoder.load(*file_, "text_encoder", config.text);
        text_decoder.load(*file_, "text_decoder", config.text);
    }

    BlipConfig config;
    BlipVisionModel vision_model;
    BlipTextModel text_encoder;          // the image-grounded question encoder
    BlipTextLMHeadModel text_decoder;    // the answer decoder

    const gguf::File& file() const { return *file_; }

    // Returns question_embeds [question tokens, hidden]: the question encoder's output for
    // `question_ids` ([CLS] ... [SEP] from the tokenizer, first token set to `first_token`),
    // cross-attending to `image_embeds` (vision_model.forward's output).
    std::vector<float> encode_question(const std::vector<float>& image_embeds,
                                       const std::vector<std::int32_t>& question_ids,
                                       EncoderFirstToken first_token = EncoderFirstToken::Enc) const {
        const std::int64_t image_tokens = vision_model.num_tokens();
        if (image_embeds.size() != static_cast<std::size_t>(image_tokens * config.vision.hidden_size))
            throw Error("vqa: image_embeds has " + std::to_string(image_embeds.size()) + " values, expected " +
                        std::to_string(image_tokens) + " x " + std::to_string(config.vision.hidden_size) +
                        " (the vision model's output for one image)");
        if (static_cast<std::int64_t>(question_ids.size()) > config.text.max_position_embeddings)
            throw Error("vqa: the question has " + std::to_string(question_ids.size()) +
                        " tokens, more than the text encoder's max_position_embeddings " +
                        std::to_string(config.text.max_position_embeddings) + " (shorten the question)");
        const std::vector<std::int32_t> ids = with_encoder_first_token(question_ids, first_token, config.tokens);
        return text_encoder.encode(ids, {}, 1, image_embeds.data(), image_tokens);
    }

    // Generates an answer from the question's states (encode_question's output) with the
    // strategy `generation` selects: greedy search, beam search (num_beams) or sampling.
    // Returns every token: [DEC], the answer and the final [SEP] unless max_length cut it off.
    std::vector<std::int32_t> generate(const std::vector<float>& question_embeds,
                                       const GenerationConfig& generation = {}) const {
        return generate_batch({&question_embeds}, generation).sequences.front();
    }

    // Answers several questions in one batch: `question_embeds` holds one encode_question
    // output per question, of any lengths. Returns num_return_sequences sequences per
    // question (see GenerationOutput); each question gets exactly the tokens it gets alone.
    // `on_token` (optional) receives each token of greedy search and sampling as it is chosen.
    GenerationOutput generate_batch(const std::vector<const std::vector<float>*>& question_embeds,
                                    const GenerationConfig& generation = {}, TokenCallback on_token = {}) const {
        check_generation_config(generation);
        if (question_embeds.empty()) throw Error("vqa: no question states given");
        std::int64_t longest = 0;
        for (std::size_t question = 0; question < question_embeds.size(); ++question) {
            if (question_embeds[question] == nullptr)
                throw Error("vqa: question " + std::to_string(question) + " has no states (null pointer)");
            longest = std::max(longest, question_tokens(*question_embeds[question]));
        }

        // The decoder attends to every question token, as in transformers' and Salesforce's
        // generate, which pass no question padding mask.
        GenerationRequest request;
        request.prefixes.assign(question_embeds.size(), {config.tokens.bos});
        request.eos_token_id = config.tokens.eos;
        request.pad_token_id = config.tokens.pad;
        request.on_token = std::move(on_token);
        const auto sources = static_cast<std::int64_t>(question_embeds.size());
        DecoderState state = text_decoder.new_state(generation_state_size(request, generation, sources, longest));
        for (std::int64_t question = 0; question < sources; ++question) {
            const std::vector<float>& states = *question_embeds[static_cast<std::size_t>(question)];
            text_decoder.bert.set_encoder_hidden_states(state, question, states.data(), question_tokens(states));
        }
        return blip::generate(text_decoder, state, request, generation);
    }

    // The decoder ids of a candidate answer as the tokenizer returns it ([CLS] ... [SEP]):
    // [CLS] becomes [DEC] and [SEP] stays, as Salesforce's VQA evaluation prepares its
    // answer list.
    std::vector<std::int32_t> answer_decoder_ids(std::vector<std::int32_t> answer_ids) const {
        if (answer_ids.size() < 2 || answer_ids.front() != config.tokens.cls || answer_ids.back() != config.tokens.sep)
            throw Error("vqa answer: token ids must start with [CLS] (" + std::to_string(config.tokens.cls) +
                        ") and end with [SEP] (" + std::to_string(config.tokens.sep) + "), as the tokenizer adds them");
        answer_ids.front() = config.tokens.bos;
        return answer_ids;
    }

    // Ranks candidate answers (answer_decoder_ids's output, [DEC] ... [SEP]) for a question,
    // as Salesforce's rank_answer does: the probability of each answer's first token after
    // [DEC] picks the top options.k candidates, then each of them is scored over its whole
    // sequence. Returns those candidates, highest score first.
    std::vector<AnswerScore> rank_answers(const std::vector<float>& question_embeds,
                                          const std::vector<std::vector<std::int32_t>>& answers,
                                          const AnswerRankOptions& options = {}) const {
        check_rank_input(answers, options);
        const std::int64_t vocab = config.text.vocab_size;

        // The first token's distribution after [DEC] is the same for every candidate.
        DecoderState first_state = decoder_state(question_embeds, 1, 1, 1);
        const float* first_logits = text_decoder.decode(first_state, &config.tokens.bos, 1);
        const double normalizer = detail::log_sum_exp(first_logits, vocab);
        std::vector<AnswerScore> candidates(answers.size());
        for (std::size_t i = 0; i < answers.size(); ++i) {
            candidates[i].index = i;
            candidates[i].first_token_probability = std::exp(first_logits[answers[i][1]] - normalizer);
        }
        std::stable_sort(candidates.begin(), candidates.end(), [](const AnswerScore& a, const AnswerScore& b) {
            return a.first_token_probability > b.first_token_probability;
        });
        candidates.resize(static_cast<std::size_t>(std::min<std::int64_t>(options.k, static_cast<std::int64_t>(answers.size()))));

        for (std::size_t begin = 0; begin < candidates.size(); begin += kAnswersPerPass) {
            const std::size_t end = std::min(candidates.size(), begin + kAnswersPerPass);
            score_answers(question_embeds, answers, options.label_smoothing, candidates.data() + begin,
                          candidates.data() + end);
        }
        std::stable_sort(candidates.begin(), candidates.end(),
                         [](const AnswerScore& a, const AnswerScore& b) { return a.score > b.score; });
        return candidates;
    }

    // A decoder state of `rows` rows that all cross-attend to `question_embeds`, for callers
    // that drive the answer decoder themselves.
    DecoderState decoder_state(const std::vector<float>& question_embeds, std::int64_t rows, std::int64_t capacity,
                               std::int64_t max_step_tokens) const {
        const std::int64_t tokens = question_tokens(question_embeds);
        DecoderStateSize size;
        size.rows = rows;
        size.capacity = capacity;
        size.max_step_tokens = max_step_tokens;
        size.sources = 1;
        size.source_tokens = tokens;
        DecoderState state = text_decoder.new_state(size);
        text_decoder.bert.set_encoder_hidden_states(state, 0, question_embeds.data(), tokens);
        return state;
    }

private:
    // Returns the number of tokens of `question_embeds`, checking that it has whole rows.
    std::int64_t question_tokens(const std::vector<float>& question_embeds) const {
        const std::int64_t width = config.text.hidden_size;
        if (question_embeds.empty() || question_embeds.size() % static_cast<std::size_t>(width) != 0)
            throw Error("vqa: question_embeds has " + std::to_string(question_embeds.size()) +
                        " values, not a whole number of rows of " + std::to_string(width) +
                        " (use encode_question's output)");
        return static_cast<std::int64_t>(question_embeds.size()) / width;
    }

    void check_rank_input(const std::vector<std::vector<std::int32_t>>& answers, const AnswerRankOptions& options) const {
        if (answers.empty()) throw Error("vqa rank: the list of candidate answers is empty");
        if (options.k < 1) throw Error("vqa rank: k " + std::to_string(options.k) + " must be at least 1");
        if (!(options.label_smoothing >= 0.0 && options.label_smoothing <= 1.0))
            throw Error("vqa rank: label_smoothing " + std::to_string(options.label_smoothing) + " must be in 0..1");
        for (std::size_t i = 0; i < answers.size(); ++i) {
            const std::vector<std::int32_t>& ids = answers[i];
            if (ids.size() < 2 || ids[0] != config.tokens.bos)
                throw Error("vqa rank: candidate answer " + std::to_string(i) +
                            " must start with [DEC] and have at least one more token (use answer_decoder_ids)");
            if (static_cast<std::int64_t>(ids.size()) > config.text.max_position_embeddings)
                throw Error("vqa rank: candidate answer " + std::to_string(i) + " has " + std::to_string(ids.size()) +
                            " tokens, more than the decoder's max_position_embeddings " +
                            std::to_string(config.text.max_position_embeddings));
            for (std::int32_t id : ids)
                if (id < 0 || id >= config.text.vocab_size)
                    throw Error("vqa rank: candidate answer " + std::to_string(i) + " has token id " +
                                std::to_string(id) + ", outside the vocabulary of " +
                                std::to_string(config.text.vocab_size));
        }
    }

    // Sets the score of candidates [first, last) from one decoder pass over their answers,
    // padded at the end to the longest. The decoder is causal, so padding after an answer
    // does not change its logits.
    void score_answers(const std::vector<float>& question_embeds, const std::vector<std::vector<std::int32_t>>& answers,
                       double label_smoothing, AnswerScore* first, AnswerScore* last) const {
        const auto rows = static_cast<std::int64_t>(last - first);
        std::int64_t longest = 0;
        for (const AnswerScore* candidate = first; candidate != last; ++candidate)
            longest = std::max(longest, static_cast<std::int64_t>(answers[candidate->index].size()));
        std::vector<std::int32_t> ids(static_cast<std::size_t>(rows * longest), config.tokens.pad);
        std::vector<std::uint8_t> mask(ids.size(), 0);
        for (std::int64_t row = 0; row < rows; ++row) {
            const std::vector<std::int32_t>& answer = answers[first[row].index];
            std::copy(answer.begin(), answer.end(), ids.begin() + row * longest);
            std::fill_n(mask.begin() + row * longest, answer.size(), 1);
        }

        DecoderState state = decoder_state(question_embeds, rows, longest, longest);
        const std::vector<float> logits = text_decoder.decode_all(state, ids.data(), longest, mask.data());
        const std::int64_t vocab = config.text.vocab_size;
        for (std::int64_t row = 0; row < rows; ++row) {
            const std::vector<std::int32_t>& answer = answers[first[row].index];
            double score = 0;
            for (std::size_t t = 0; t + 1 < answer.size(); ++t) {
                const float* position = logits.data() + (row * longest + static_cast<std::int64_t>(t)) * vocab;
                score += detail::position_score(position, vocab, answer[t + 1], label_smoothing);
            }
            first[row].score = score;
        }
    }

    std::shared_ptr<const gguf::File> file_;
};

}  // namespace blip
