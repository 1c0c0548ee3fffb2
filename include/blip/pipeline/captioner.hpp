// Image captioning from a model file in a few calls: decode or take an image, preprocess
// it as the file says, encode it, write a caption and turn its tokens into text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blip/gguf/reader.hpp"
#include "blip/image/image.hpp"
#include "blip/image/preprocess.hpp"
#include "blip/model/caption.hpp"
#include "blip/text/tokenizer.hpp"
#include "blip/text/tokenizer_gguf.hpp"

namespace blip {

// Settings of one caption. Lengths count every token of the sequence, [DEC] and the
// prompt's tokens included, as transformers' generate() counts them.
struct CaptionOptions {
    std::string prompt;  // text the caption continues, for example "a picture of"
    GenerationConfig generation;
};

// A caption as text and as the token ids it was decoded from ([DEC] first).
struct Caption {
    std::string text;
    std::vector<std::int32_t> ids;
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

    // Preprocesses `image` into the model's input, float CHW.
    std::vector<float> pixel_values(const ImageU8& image) const { return preprocess_image(image, config().preprocess); }

    // Returns the vision encoder's output for `image`; reuse it for several captions.
    std::vector<float> encode_image(const ImageU8& image) const { return model_->vision_model.forward(pixel_values(image)); }

    // Writes a caption for an image already encoded by encode_image().
    Caption caption_embeds(const std::vector<float>& image_embeds, const CaptionOptions& options = {}) const {
        std::vector<std::int32_t> prompt_ids;
        if (!options.prompt.empty()) prompt_ids = tokenizer_->encode(options.prompt);
        Caption caption;
        caption.ids = model_->generate(image_embeds, prompt_ids, options.generation);
        caption.text = tokenizer_->decode(caption.ids);
        return caption;
    }

    Caption caption(const ImageU8& image, const CaptionOptions& options = {}) const {
        return caption_embeds(encode_image(image), options);
    }

    Caption caption_file(const std::string& path, const CaptionOptions& options = {}) const {
        return caption(decode_image_file(path), options);
    }

private:
    std::shared_ptr<BlipForConditionalGeneration> model_;
    std::shared_ptr<Tokenizer> tokenizer_;
};

}  // namespace blip
