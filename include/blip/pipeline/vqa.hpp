// Visual question answering from a model file in a few calls: decode or take an image,
// encode it once, then generate answers to questions or rank a list of candidate answers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/image/preprocess.hpp"
#include "blip/model/image_grounded.hpp"
#include "blip/model/vqa.hpp"
#include "blip/text/tokenizer.hpp"
#include "blip/text/tokenizer_gguf.hpp"

namespace blip {

// Generation settings for answers: greedy search over at most 10 tokens, [DEC] included, the
// length Salesforce's blip_vqa.py generates (transformers' generate() defaults to 20). Set
// num_beams to 3 for Salesforce's beam search.
inline GenerationConfig vqa_generation_defaults() {
    GenerationConfig generation;
    generation.max_length = 10;
    return generation;
}

// Settings of a generated answer.
struct VqaOptions {
    // First token of the question encoding: [ENC] as Salesforce trained the VQA model, or
    // [CLS] to reproduce transformers 4.30.2.
    EncoderFirstToken first_token = EncoderFirstToken::Enc;
    // Lengths count every token, [DEC] included.
    GenerationConfig generation = vqa_generation_defaults();
};

// Settings of answer ranking.
struct VqaRankOptions {
    EncoderFirstToken first_token = EncoderFirstToken::Enc;
    AnswerRankOptions ranking;
};

// A generated answer as text and as the token ids it was decoded from ([DEC] first).
struct VqaAnswer {
    std::string text;
    std::vector<std::int32_t> ids;
};

// Candidate answers, tokenized once for any number of questions.
struct AnswerList {
    std::vector<std::string> texts;
    std::vector<std::vector<std::int32_t>> decoder_ids;  // [DEC] ... [SEP] per answer
};

// One candidate answer in a ranking.
struct RankedAnswer {
    std::string text;
    std::size_t index = 0;               // position in the AnswerList
    double score = 0;                    // see AnswerScore::score
    double first_token_probability = 0;  // P(first answer token | [DEC], question)
};

class QuestionAnswerer {
public:
    // Maps the model file at `path`.
    static QuestionAnswerer open(const std::string& path) { return QuestionAnswerer(gguf::File::open(path)); }
    // Parses a model held in memory, taking ownership of the bytes.
    static QuestionAnswerer from_buffer(std::vector<std::uint8_t> bytes, std::string name = "<buffer>") {
        return QuestionAnswerer(gguf::File::from_buffer(std::move(bytes), std::move(name)));
    }

    explicit QuestionAnswerer(std::shared_ptr<const gguf::File> file)
        : model_(std::make_shared<BlipForQuestionAnswering>(file)),
          tokenizer_(std::make_shared<Tokenizer>(read_tokenizer(*file, model_->config))) {}

    const BlipConfig& config() const { return model_->config; }
    const BlipForQuestionAnswering& model() const { return *model_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }

    // Throws blip::Error when `options` cannot answer with this model: invalid generation
    // settings, or a max_length that needs more positions than the answer decoder has.
    // Answering checks the same, so tools call this only to fail before their first question.
    void check_options(const VqaOptions& options) const {
        check_generation_config(options.generation);
        // Answers start with [DEC] alone: the question reaches the decoder through cross-attention.
        check_sequence_fits(options.generation, 1, config().text.max_position_embeddings);
    }

    // Preprocesses `image` into the model's input, float CHW.
    std::vector<float> pixel_values(const ImageU8& image) const { return preprocess_image(image, config().preprocess); }

    // Returns the vision encoder's output for `image`; reuse it for several questions.
    std::vector<float> encode_image(const ImageU8& image) const { return model_->vision_model.forward(pixel_values(image)); }

    // Returns the question encoder's output for `question` about an encoded image. The
    // question is tokenized without truncation, as transformers' BlipProcessor does by
    // default (Salesforce's code truncates questions to 35 tokens).
    std::vector<float> encode_question(const std::vector<float>& image_embeds, const std::string& question,
                                       EncoderFirstToken first_token = EncoderFirstToken::Enc) const {
        return model_->encode_question(image_embeds, tokenizer_->encode(question), first_token);
    }

    // Generates an answer to `question` about an image already encoded by encode_image().
    VqaAnswer answer_embeds(const std::vector<float>& image_embeds, const std::string& question,
                            const VqaOptions& options = {}) const {
        VqaAnswer answer;
        answer.ids = model_->generate(encode_question(image_embeds, question, options.first_token), options.generation);
        answer.text = tokenizer_->decode(answer.ids);
        return answer;
    }

    VqaAnswer answer(const ImageU8& image, const std::string& question, const VqaOptions& options = {}) const {
        return answer_embeds(encode_image(image), question, options);
    }

    VqaAnswer answer_file(const std::string& path, const std::string& question, const VqaOptions& options = {}) const {
        return answer(decode_image_file(path), question, options);
    }

    // Tokenizes candidate answers as Salesforce's VQA evaluation does: [CLS] answer [SEP]
    // with [CLS] replaced by [DEC].
    AnswerList prepare_answers(const std::vector<std::string>& answers) const {
        AnswerList list;
        list.texts = answers;
        for (const std::string& answer : answers)
            list.decoder_ids.push_back(model_->answer_decoder_ids(tokenizer_->encode(answer)));
        return list;
    }

    // Ranks the candidate answers for `question` about an encoded image, highest score first.
    // Only the top options.ranking.k candidates by first-token probability are scored and
    // returned.
    std::vector<RankedAnswer> rank_embeds(const std::vector<float>& image_embeds, const std::string& question,
                                          const AnswerList& answers, const VqaRankOptions& options = {}) const {
        if (answers.texts.size() != answers.decoder_ids.size())
            throw Error("vqa rank: the answer list has " + std::to_string(answers.texts.size()) + " texts but " +
                        std::to_string(answers.decoder_ids.size()) + " token lists (build it with prepare_answers)");
        const std::vector<float> question_embeds = encode_question(image_embeds, question, options.first_token);
        const std::vector<AnswerScore> scores = model_->rank_answers(question_embeds, answers.decoder_ids, options.ranking);
        std::vector<RankedAnswer> ranked;
        ranked.reserve(scores.size());
        for (const AnswerScore& score : scores) {
            RankedAnswer answer;
            answer.text = answers.texts[score.index];
            answer.index = score.index;
            answer.score = score.score;
            answer.first_token_probability = score.first_token_probability;
            ranked.push_back(std::move(answer));
        }
        return ranked;
    }

    std::vector<RankedAnswer> rank(const ImageU8& image, const std::string& question, const AnswerList& answers,
                                   const VqaRankOptions& options = {}) const {
        return rank_embeds(encode_image(image), question, answers, options);
    }

private:
    std::shared_ptr<BlipForQuestionAnswering> model_;
    std::shared_ptr<Tokenizer> tokenizer_;
};

}  // namespace blip
