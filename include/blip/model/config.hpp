// Plain configuration structs of a BLIP model, as stored in the GGUF file's metadata.
// Field names follow the Hugging Face config.json and preprocessor_config.json keys.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace blip {

// `vision_config` of config.json (BlipVisionConfig).
struct VisionConfig {
    std::int64_t hidden_size = 768;
    std::int64_t intermediate_size = 3072;
    std::int64_t num_attention_heads = 12;
    std::int64_t num_hidden_layers = 12;
    std::int64_t image_size = 384;
    std::int64_t patch_size = 16;
    std::int64_t num_channels = 3;
    float layer_norm_eps = 1e-5f;

    // (image_size / patch_size)^2 with the quotient rounded down, as transformers'
    // BlipVisionEmbeddings counts them. When image_size is not a multiple of patch_size, the
    // last rows and columns of pixels belong to no patch.
    std::int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
    std::int64_t num_positions() const { return num_patches() + 1; }  // patches plus the class token
    std::int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// `text_config` of config.json (BlipTextConfig): the BERT-style text transformer.
struct TextConfig {
    std::int64_t vocab_size = 30524;
    std::int64_t hidden_size = 768;
    std::int64_t intermediate_size = 3072;
    std::int64_t num_attention_heads = 12;
    std::int64_t num_hidden_layers = 12;
    std::int64_t max_position_embeddings = 512;
    std::int64_t encoder_hidden_size = 768;  // width of the states that cross-attention reads
    float layer_norm_eps = 1e-12f;

    std::int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// Token ids with a fixed role. bos is `[DEC]`, which starts every decoder sequence; eos is
// `[SEP]`, which ends a generated sequence; enc is `[ENC]`, which Salesforce's original code
// puts in place of `[CLS]` for image-grounded encodings.
struct SpecialTokens {
    std::int32_t bos = 30522;
    std::int32_t eos = 102;
    std::int32_t pad = 0;
    std::int32_t cls = 101;
    std::int32_t sep = 102;
    std::int32_t enc = 30523;
    std::int32_t unk = 100;
    std::int32_t mask = 103;
};

// Options of BertTokenizer (tokenizer_config.json).
struct TokenizerConfig {
    bool do_lower_case = true;
    // null in tokenizer_config.json means "strip accents when lowercasing".
    std::optional<bool> strip_accents;
    bool tokenize_chinese_chars = true;
    std::int64_t max_input_chars_per_word = 100;

    bool strips_accents() const { return strip_accents.value_or(do_lower_case); }
};

// BlipImageProcessor settings (preprocessor_config.json).
struct PreprocessConfig {
    std::int64_t height = 384;
    std::int64_t width = 384;
    std::int32_t resample = 3;  // PIL.Image.BICUBIC; the only filter implemented
    bool do_resize = true;
    bool do_rescale = true;
    bool do_normalize = true;
    bool do_convert_rgb = true;
    double rescale_factor = 1.0 / 255.0;
    std::array<float, 3> image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
    std::array<float, 3> image_std = {0.26862954f, 0.26130258f, 0.27577711f};
};

// What the checkpoint was trained for; decides which heads the file holds.
enum class Task { Caption, Vqa, Itm };

inline const char* task_name(Task task) {
    switch (task) {
        case Task::Caption: return "caption";
        case Task::Vqa: return "vqa";
        case Task::Itm: return "itm";
    }
    return "caption";
}

// Everything a BLIP model file describes besides its tensors and vocabulary.
struct BlipConfig {
    Task task = Task::Caption;
    std::string name;  // general.name, for messages
    VisionConfig vision;
    TextConfig text;
    std::int64_t image_text_hidden_size = 256;  // ITC projection width (vision_proj, text_proj)
    SpecialTokens tokens;
    TokenizerConfig tokenizer;
    PreprocessConfig preprocess;
};

}  // namespace blip
