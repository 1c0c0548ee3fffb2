// BLIP image captioning (transformers' BlipForConditionalGeneration): the vision model
// encodes an image, and the text decoder writes a caption that cross-attends to it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/generate/generate.hpp"
#include "blip/generate/greedy.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/model/config.hpp"
#include "blip/model/metadata.hpp"
#include "blip/model/text.hpp"
#include "blip/model/vision.hpp"

namespace blip {

class BlipForConditionalGeneration {
public:
    // Reads the configuration and every weight of `file`, checking each tensor's shape. The
    // model reads the weights in place and keeps `file` alive.
    explicit BlipForConditionalGeneration(std::shared_ptr<const gguf::File> file) : file_(std::move(file)) {
        if (!file_) throw Error("BlipForConditionalGeneration: no model file given");
        config = read_config(*file_);
        if (config.task != Task::Caption)
            throw Error(file_->name() + ": the model's task is " + task_name(config.task) +
                        ", not caption (BlipForConditionalGeneration needs a captioning model)");
        if (config.text.encoder_hidden_size != config.vision.hidden_size)
            throw Error(file_->name() + ": text encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                        " differs from the vision hidden_size " + std::to_string(config.vision.hidden_size));
        vision_model.load(*file_, "vision_model", config.vision);
        text_decoder.load(*file_, "text_decoder", config.text);
    }

    BlipConfig config;
    BlipVisionModel vision_model;
    BlipTextLMHeadModel text_decoder;

    const gguf::File& file() const { return *file_; }

    // The decoder's first tokens for a prompt as the tokenizer returns it ([CLS] ... [SEP]):
    // [CLS] becomes [DEC] and [SEP] is dropped, as transformers' generate() does. An empty
    // prompt gives [DEC] alone.
    std::vector<std::int32_t> decoder_input_ids(const std::vector<std::int32_t>& prompt_ids) const {
        if (prompt_ids.empty()) return {config.tokens.bos};
        if (prompt_ids.size() < 2 || prompt_ids.front() != config.tokens.cls || prompt_ids.back() != config.tokens.sep)
            throw Error("caption prompt: token ids must start with [CLS] (" + std::to_string(config.tokens.cls) +
                        ") and end with [SEP] (" + std::to_string(config.tokens.sep) +
                        "), as the tokenizer adds them");
        std::vector<std::int32_t> ids(prompt_ids.begin(), prompt_ids.end() - 1);
        ids[0] = config.tokens.bos;
        return ids;
    }

    // Writes a caption for `image_embeds` (vision_model.forward's output), continuing
    // `prompt_ids` ([CLS] ... [SEP] from the tokenizer; may be empty), with greedy search,
    // sampling or beam search as `generation` selects. Returns every token of the first (for beam
    // search the best) sequence: [DEC], the prompt, the caption and the final [SEP] unless
    // max_length cut it off.
    std::vector<std::int32_t> generate(const std::vector<float>& image_embeds,
                                       const std::vector<std::int32_t>& prompt_ids = {},
                                       const GenerationConfig& generation = {}) const {
        return generate_batch({&image_embeds}, {prompt_ids}, generation).sequences.front();
    }

    // Captions several images in one batch: `image_embeds` points to one vision_model.forward
    // output per image, and `prompt_ids` one prompt per image, a single prompt for all, or none.
    // Returns num_return_sequences sequences per image (see GenerationOutput); each image gets
    // exactly the tokens it gets alone. `on_token` (optional) receives each token of greedy
    // search and sampling as it is chosen.
    GenerationOutput generate_batch(const std::vector<const std::vector<float>*>& image_embeds,
                                    const std::vector<std::vector<std::int32_t>>& prompt_ids = {},
                                    const GenerationConfig& generation = {}, TokenCallback on_token = {}) const {
        check_generation_config(generation);
        const auto images = static_cast<std::int64_t>(image_embeds.size());
        if (images < 1) throw Error("caption: no image embeddings given");
        if (prompt_ids.size() > 1 && static_cast<std::int64_t>(prompt_ids.size()) != images)
            throw Error("caption: " + std::to_string(prompt_ids.size()) + " prompts given for " +
                        std::to_string(images) + " images (give one per image, one for all, or none)");
        GenerationRequest request;
        for (std::int64_t image = 0; image < images; ++image) {
            static const std::vector<std::int32_t> no_prompt;
            const auto& prompt = prompt_ids.empty()       ? no_prompt
                                 : prompt_ids.size() == 1 ? prompt_ids.front()
                                                          : prompt_ids[static_cast<std::size_t>(image)];
            request.prefixes.push_back(decoder_input_ids(prompt));
        }
        request.eos_token_id = config.tokens.eos;
        request.pad_token_id = config.tokens.pad;
        request.on_token = std::move(on_token);

        const std::int64_t tokens = vision_model.num_tokens();
        DecoderState state = text_decoder.new_state(generation_state_size(request, generation, images, tokens));
        for (std::int64_t image = 0; image < images; ++image) {
            const std::vector<float>* embeds = image_embeds[static_cast<std::size_t>(image)];
            if (embeds == nullptr) throw Error("caption: image " + std::to_string(image) + " has no embeddings");
            check_image_embeds(*embeds);
            text_decoder.bert.set_encoder_hidden_states(state, image, embeds->data(), tokens);
        }
        return blip::generate(text_decoder, state, request, generation);
    }

    // Returns the decoder's logits [vocab] for the token after `input_ids` (which start with
    // [DEC]), for example the first step's logits with input_ids = {[DEC]}.
    std::vector<float> decoder_logits(const std::vector<float>& image_embeds,
                                      const std::vector<std::int32_t>& input_ids) const {
        if (input_ids.empty()) throw Error("decoder_logits: input_ids is empty (start it with [DEC])");
        const auto length = static_cast<std::int64_t>(input_ids.size());
        DecoderState state = decoder_state(image_embeds, length, length);
        const float* logits = text_decoder.decode(state, input_ids.data(), length);
        return std::vector<float>(logits, logits + config.text.vocab_size);
    }

    // A one-row decoder state that cross-attends to `image_embeds`, for callers that drive
    // the decoder themselves.
    DecoderState decoder_state(const std::vector<float>& image_embeds, std::int64_t capacity,
                               std::int64_t max_step_tokens) const {
        check_image_embeds(image_embeds);
        const std::int64_t tokens = vision_model.num_tokens();
        DecoderStateSize size;
        size.rows = 1;
        size.capacity = capacity;
        size.max_step_tokens = max_step_tokens;
        size.sources = 1;
        size.source_tokens = tokens;
        DecoderState state = text_decoder.new_state(size);
        text_decoder.bert.set_encoder_hidden_states(state, 0, image_embeds.data(), tokens);
        return state;
    }

private:
    void check_image_embeds(const std::vector<float>& image_embeds) const {
        const std::int64_t tokens = vision_model.num_tokens();
        if (image_embeds.size() != static_cast<std::size_t>(tokens * config.vision.hidden_size))
            throw Error("caption: image_embeds has " + std::to_string(image_embeds.size()) + " values, expected " +
                        std::to_string(tokens) + " x " + std::to_string(config.vision.hidden_size) +
                        " (the vision model's output for one image)");
    }

    std::shared_ptr<const gguf::File> file_;
};

}  // namespace blip
