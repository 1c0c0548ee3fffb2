// Image captioning from a model file in a few calls: decode or take an image, preprocess
// it as the file says, encode it, write a caption and turn its tokens into text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blip/generate/streaming.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/image/preprocess.hpp"
#include "blip/model/caption.hpp"
#include "blip/text/tokenizer.hpp"
#include "blip/text/tokenizer_gguf.hpp"

namespace blip {

// Settings of a caption. Lengths count every token of the sequence, [DEC] and the prompt's
// tokens included, as transformers' generate() counts them. `generation` selects greedy
// search, beam search (num_beams, length_penalty, num_return_sequences) or sampling
// (do_sample, top_p, top_k, temperature, seed), and the repetition_penalty and
// no_repeat_ngram_size processors.
struct CaptionOptions {
    std::string prompt;  // text the caption continues, for example "a picture of"
    GenerationConfig generation;
    // Receives the text of the first caption piece by piece, each piece as soon as it is
    // final. Greedy search and sampling send a word at a time while decoding. Beam search
    // sends all pieces at the end, because its words are only final when the search ends.
    // The pieces concatenate to Caption::text, the prompt included.
    TextCallback on_text;
    // The same for every caption of a batch: `sequence` numbers captions as
    // Captioner::caption_embeds_batch returns them, flattened (image * num_return_sequences + j).
    std::function<void(std::size_t sequence, std::string_view piece)> on_sequence_text;
};

// A caption as text and as the token ids it was decoded from ([DEC] first).
struct Caption {
    std::string text;
    std::vector<std::int32_t> ids;
    // Beam search: the hypothesis score (summed log-probabilities divided by
    // length^length_penalty). 0 for greedy search and sampling.
    double score = 0;
};

class Captioner {
public:
    // Maps the model file at `path`.
    static Captioner open(const std::string& path) { return Captioner(gguf::File::open(path)); }
    // Parses a model held in memory, taking ownership of the bytes.
    static Captioner from_buffer(std::vector<std::uint8_t> bytes, std::string name = "<buffer>") {
        return Captioner(gguf::File::from_buffer(std::move(bytes), std::move(name)));
    }

    explicit Captioner(std::shared_ptr<const gguf::File> file)
        : model_(std::make_shared<BlipForConditionalGeneration>(file)),
          tokenizer_(std::make_shared<Tokenizer>(read_tokenizer(*file, model_->config))) {}

    const BlipConfig& config() const { return model_->config; }
    const BlipForConditionalGeneration& model() const { return *model_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }

    // Throws blip::Error when `options` cannot caption with this model: invalid generation
    // settings, or a prompt or max_length that needs more positions than the text model has.
    // Captioning checks the same, so tools call this only to fail before their first image.
    void check_options(const CaptionOptions& options) const {
        check_generation_config(options.generation);
        const std::vector<std::int32_t> prompt =
            options.prompt.empty() ? std::vector<std::int32_t>{} : tokenizer_->encode(options.prompt);
        check_sequence_fits(options.generation, static_cast<std::int64_t>(model_->decoder_input_ids(prompt).size()),
                            config().text.max_position_embeddings);
    }

    // Preprocesses `image` into the model's input, float CHW.
    std::vector<float> pixel_values(const ImageU8& image) const { return preprocess_image(image, config().preprocess); }

    // Returns the vision encoder's output for `image`; reuse it for several captions.
    std::vector<float> encode_image(const ImageU8& image) const { return model_->vision_model.forward(pixel_values(image)); }

    // Writes a caption for an image already encoded by encode_image(); the first (for beam
    // search the best) of the num_return_sequences captions.
    Caption caption_embeds(const std::vector<float>& image_embeds, const CaptionOptions& options = {}) const {
        return caption_images({&image_embeds}, options).front().front();
    }

    // Captions images already encoded by encode_image() in one batch. Returns, per image, its
    // num_return_sequences captions (best first for beam search). Each image gets exactly the
    // captions it gets alone.
    std::vector<std::vector<Caption>> caption_embeds_batch(const std::vector<std::vector<float>>& image_embeds,
                                                           const CaptionOptions& options = {}) const {
        std::vector<const std::vector<float>*> embeds;
        for (const auto& image : image_embeds) embeds.push_back(&image);
        return caption_images(embeds, options);
    }

    Caption caption(const ImageU8& image, const CaptionOptions& options = {}) const {
        return caption_embeds(encode_image(image), options);
    }

    // Captions `images` in one batch (see caption_embeds_batch); each image is encoded on its
    // own.
    std::vector<std::vector<Caption>> caption_batch(const std::vector<ImageU8>& images,
                                                    const CaptionOptions& options = {}) const {
        std::vector<std::vector<float>> embeds;
        embeds.reserve(images.size());
        for (const ImageU8& image : images) embeds.push_back(encode_image(image));
        return caption_embeds_batch(embeds, options);
    }

    Caption caption_file(const std::string& path, const CaptionOptions& options = {}) const {
        return caption(decode_image_file(path), options);
    }

private:
    std::vector<std::vector<Caption>> caption_images(const std::vector<const std::vector<float>*>& embeds,
                                                     const CaptionOptions& options) const {
        std::vector<std::vector<std::int32_t>> prompts;
        if (!options.prompt.empty()) prompts.push_back(tokenizer_->encode(options.prompt));
        const std::vector<std::int32_t> prefix =
            model_->decoder_input_ids(prompts.empty() ? std::vector<std::int32_t>{} : prompts.front());

        // One streamer per caption, fed the prefix first so that its text starts with the
        // prompt.
        const GenerationConfig& generation = options.generation;
        const std::int64_t per_image = generation.num_return_sequences;
        const auto total = static_cast<std::size_t>(static_cast<std::int64_t>(embeds.size()) * per_image);
        std::vector<TextStreamer> streamers;
        if (options.on_text || options.on_sequence_text) {
            streamers.reserve(total);
            for (std::size_t sequence = 0; sequence < total; ++sequence) {
                streamers.emplace_back(*tokenizer_, [&options, sequence](std::string_view piece) {
                    if (sequence == 0 && options.on_text) options.on_text(piece);
                    if (options.on_sequence_text) options.on_sequence_text(sequence, piece);
                });
                for (std::int32_t token : prefix) streamers.back().put(token);
            }
        }
        TokenCallback on_token;
        if (!streamers.empty())
            on_token = [&streamers](std::int64_t sequence, std::int32_t token) {
                streamers[static_cast<std::size_t>(sequence)].put(token);
            };

        const GenerationOutput output = model_->generate_batch(embeds, prompts, generation, on_token);

        const bool beam_search = !output.sequence_scores.empty();
        std::vector<std::vector<Caption>> captions(embeds.size());
        for (std::size_t sequence = 0; sequence < output.sequences.size(); ++sequence) {
            Caption caption;
            caption.ids = output.sequences[sequence];
            caption.text = tokenizer_->decode(caption.ids);
            if (beam_search) caption.score = output.sequence_scores[sequence];
            if (!streamers.empty()) {
                // Beam search streamed nothing while it ran, so its tokens come now.
                TextStreamer& streamer = streamers[sequence];
                if (beam_search)
                    for (std::size_t i = prefix.size(); i < caption.ids.size(); ++i) streamer.put(caption.ids[i]);
                streamer.end();
            }
            captions[sequence / static_cast<std::size_t>(per_image)].push_back(std::move(caption));
        }
        return captions;
    }

    std::shared_ptr<BlipForConditionalGeneration> model_;
    std::shared_ptr<Tokenizer> tokenizer_;
};

}  // namespace blip
