// GGUF metadata keys of a BLIP model file, and reading/writing BlipConfig and the
// vocabulary through them. Keys under `tokenizer.ggml.` follow llama.cpp's names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/gguf/writer.hpp"
#include "blip/model/config.hpp"

namespace blip {

namespace keys {
inline constexpr const char* kArchitecture = "general.architecture";  // "blip"
inline constexpr const char* kName = "general.name";
inline constexpr const char* kTask = "blip.task";  // "caption", "vqa" or "itm"

inline constexpr const char* kVisionHiddenSize = "blip.vision.hidden_size";
inline constexpr const char* kVisionIntermediateSize = "blip.vision.intermediate_size";
inline constexpr const char* kVisionHeads = "blip.vision.num_attention_heads";
inline constexpr const char* kVisionLayers = "blip.vision.num_hidden_layers";
inline constexpr const char* kVisionImageSize = "blip.vision.image_size";
inline constexpr const char* kVisionPatchSize = "blip.vision.patch_size";
inline constexpr const char* kVisionChannels = "blip.vision.num_channels";
inline constexpr const char* kVisionLayerNormEps = "blip.vision.layer_norm_eps";

inline constexpr const char* kTextVocabSize = "blip.text.vocab_size";
inline constexpr const char* kTextHiddenSize = "blip.text.hidden_size";
inline constexpr const char* kTextIntermediateSize = "blip.text.intermediate_size";
inline constexpr const char* kTextHeads = "blip.text.num_attention_heads";
inline constexpr const char* kTextLayers = "blip.text.num_hidden_layers";
inline constexpr const char* kTextMaxPositions = "blip.text.max_position_embeddings";
inline constexpr const char* kTextEncoderHiddenSize = "blip.text.encoder_hidden_size";
inline constexpr const char* kTextLayerNormEps = "blip.text.layer_norm_eps";

inline constexpr const char* kImageTextHiddenSize = "blip.image_text_hidden_size";

inline constexpr const char* kTokenizerModel = "tokenizer.ggml.model";  // "bert" (WordPiece)
inline constexpr const char* kTokens = "tokenizer.ggml.tokens";
inline constexpr const char* kTokenTypes = "tokenizer.ggml.token_type";
inline constexpr const char* kBosId = "tokenizer.ggml.bos_token_id";        // [DEC]
inline constexpr const char* kEosId = "tokenizer.ggml.eos_token_id";        // [SEP] ends generation
inline constexpr const char* kPadId = "tokenizer.ggml.padding_token_id";    // [PAD]
inline constexpr const char* kUnknownId = "tokenizer.ggml.unknown_token_id";  // [UNK]
inline constexpr const char* kSepId = "tokenizer.ggml.seperator_token_id";  // llama.cpp's spelling
inline constexpr const char* kClsId = "tokenizer.ggml.cls_token_id";        // [CLS]
inline constexpr const char* kMaskId = "tokenizer.ggml.mask_token_id";      // [MASK]
inline constexpr const char* kEncId = "blip.tokenizer.enc_token_id";         // [ENC]
inline constexpr const char* kDoLowerCase = "blip.tokenizer.do_lower_case";
inline constexpr const char* kStripAccents = "blip.tokenizer.strip_accents";  // -1 = follow do_lower_case
inline constexpr const char* kTokenizeChineseChars = "blip.tokenizer.tokenize_chinese_chars";
inline constexpr const char* kMaxInputCharsPerWord = "blip.tokenizer.max_input_chars_per_word";

inline constexpr const char* kImageHeight = "blip.preprocess.height";
inline constexpr const char* kImageWidth = "blip.preprocess.width";
inline constexpr const char* kResample = "blip.preprocess.resample";  // PIL filter id, 3 = bicubic
inline constexpr const char* kDoResize = "blip.preprocess.do_resize";
inline constexpr const char* kDoRescale = "blip.preprocess.do_rescale";
inline constexpr const char* kDoNormalize = "blip.preprocess.do_normalize";
inline constexpr const char* kDoConvertRgb = "blip.preprocess.do_convert_rgb";
inline constexpr const char* kRescaleFactor = "blip.preprocess.rescale_factor";
inline constexpr const char* kImageMean = "blip.preprocess.image_mean";
inline constexpr const char* kImageStd = "blip.preprocess.image_std";
}  // namespace keys

inline Task parse_task(const std::string& text, const std::string& source) {
    if (text == "caption") return Task::Caption;
    if (text == "vqa") return Task::Vqa;
    if (text == "itm") return Task::Itm;
    throw Error(source + ": unknown task \"" + text + "\" (expected caption, vqa or itm)");
}

inline void write_config(gguf::Writer& out, const BlipConfig& config) {
    out.set_string(keys::kArchitecture, "blip");
    out.set_string(keys::kName, config.name);
    out.set_string(keys::kTask, task_name(config.task));

    const auto u32 = [](std::int64_t value) { return static_cast<std::uint32_t>(value); };
    out.set_u32(keys::kVisionHiddenSize, u32(config.vision.hidden_size));
    out.set_u32(keys::kVisionIntermediateSize, u32(config.vision.intermediate_size));
    out.set_u32(keys::kVisionHeads, u32(config.vision.num_attention_heads));
    out.set_u32(keys::kVisionLayers, u32(config.vision.num_hidden_layers));
    out.set_u32(keys::kVisionImageSize, u32(config.vision.image_size));
    out.set_u32(keys::kVisionPatchSize, u32(config.vision.patch_size));
    out.set_u32(keys::kVisionChannels, u32(config.vision.num_channels));
    out.set_f32(keys::kVisionLayerNormEps, config.vision.layer_norm_eps);

    out.set_u32(keys::kTextVocabSize, u32(config.text.vocab_size));
    out.set_u32(keys::kTextHiddenSize, u32(config.text.hidden_size));
    out.set_u32(keys::kTextIntermediateSize, u32(config.text.intermediate_size));
    out.set_u32(keys::kTextHeads, u32(config.text.num_attention_heads));
    out.set_u32(keys::kTextLayers, u32(config.text.num_hidden_layers));
    out.set_u32(keys::kTextMaxPositions, u32(config.text.max_position_embeddings));
    out.set_u32(keys::kTextEncoderHiddenSize, u32(config.text.encoder_hidden_size));
    out.set_f32(keys::kTextLayerNormEps, config.text.layer_norm_eps);
    out.set_u32(keys::kImageTextHiddenSize, u32(config.image_text_hidden_size));

    out.set_string(keys::kTokenizerModel, "bert");
    out.set_u32(keys::kBosId, u32(config.tokens.bos));
    out.set_u32(keys::kEosId, u32(config.tokens.eos));
    out.set_u32(keys::kPadId, u32(config.tokens.pad));
    out.set_u32(keys::kUnknownId, u32(config.tokens.unk));
    out.set_u32(keys::kSepId, u32(config.tokens.sep));
    out.set_u32(keys::kClsId, u32(config.tokens.cls));
    out.set_u32(keys::kMaskId, u32(config.tokens.mask));
    out.set_u32(keys::kEncId, u32(config.tokens.enc));
    out.set_bool(keys::kDoLowerCase, config.tokenizer.do_lower_case);
    out.set_i32(keys::kStripAccents, config.tokenizer.strip_accents ? (*config.tokenizer.strip_accents ? 1 : 0) : -1);
    out.set_bool(keys::kTokenizeChineseChars, config.tokenizer.tokenize_chinese_chars);
    out.set_u32(keys::kMaxInputCharsPerWord, u32(config.tokenizer.max_input_chars_per_word));

    const PreprocessConfig& pre = config.preprocess;
    out.set_u32(keys::kImageHeight, u32(pre.height));
    out.set_u32(keys::kImageWidth, u32(pre.width));
    out.set_u32(keys::kResample, static_cast<std::uint32_t>(pre.resample));
    out.set_bool(keys::kDoResize, pre.do_resize);
    out.set_bool(keys::kDoRescale, pre.do_rescale);
    out.set_bool(keys::kDoNormalize, pre.do_normalize);
    out.set_bool(keys::kDoConvertRgb, pre.do_convert_rgb);
    out.set_f64(keys::kRescaleFactor, pre.rescale_factor);
    out.set_f32_array(keys::kImageMean, {pre.image_mean[0], pre.image_mean[1], pre.image_mean[2]});
    out.set_f32_array(keys::kImageStd, {pre.image_std[0], pre.image_std[1], pre.image_std[2]});
}

namespace detail {
// Reads a positive integer no larger than `max_value`, naming the key when it is not.
inline std::int64_t read_size(const gguf::File& file, const char* key, std::int64_t max_value = 1 << 24) {
    const std::int64_t value = file.get_int(key);
    if (value <= 0 || value > max_value)
        throw Error(file.name() + ": metadata " + key + " = " + std::to_string(value) + " is out of range 1.." +
                    std::to_string(max_value));
    return value;
}
inline std::int32_t read_token_id(const gguf::File& file, const char* key, std::int64_t vocab_size) {
    const std::int64_t value = file.get_int(key);
    if (value < 0 || value >= vocab_size)
        throw Error(file.name() + ": metadata " + key + " = " + std::to_string(value) +
                    " is not a token id of the vocabulary of " + std::to_string(vocab_size));
    return static_cast<std::int32_t>(value);
}
}  // namespace detail

// Reads and validates the configuration; every size is checked before it is used.
inline BlipConfig read_config(const gguf::File& file) {
    const std::string architecture = file.get_string_or(keys::kArchitecture, "");
    if (architecture != "blip")
        throw Error(file.name() + ": general.architecture is \"" + architecture + "\", expected \"blip\"");

    BlipConfig config;
    config.name = file.get_string_or(keys::kName, "");
    config.task = parse_task(file.get_string(keys::kTask), file.name());

    using detail::read_size;
    VisionConfig& vision = config.vision;
    vision.hidden_size = read_size(file, keys::kVisionHiddenSize);
    vision.intermediate_size = read_size(file, keys::kVisionIntermediateSize);
    vision.num_attention_heads = read_size(file, keys::kVisionHeads, 4096);
    vision.num_hidden_layers = read_size(file, keys::kVisionLayers, 4096);
    vision.image_size = read_size(file, keys::kVisionImageSize, 1 << 16);
    vision.patch_size = read_size(file, keys::kVisionPatchSize, 1 << 16);
    vision.num_channels = read_size(file, keys::kVisionChannels, 4);
    vision.layer_norm_eps = static_cast<float>(file.get_float(keys::kVisionLayerNormEps));
    if (vision.hidden_size % vision.num_attention_heads != 0)
        throw Error(file.name() + ": vision hidden_size " + std::to_string(vision.hidden_size) +
                    " is not a multiple of num_attention_heads " + std::to_string(vision.num_attention_heads));
    if (vision.image_size < vision.patch_size)
        throw Error(file.name() + ": vision image_size " + std::to_string(vision.image_size) +
                    " is smaller than patch_size " + std::to_string(vision.patch_size) + ", so it holds no patch");

    TextConfig& text = config.text;
    text.vocab_size = read_size(file, keys::kTextVocabSize);
    text.hidden_size = read_size(file, keys::kTextHiddenSize);
    text.intermediate_size = read_size(file, keys::kTextIntermediateSize);
    text.num_attention_heads = read_size(file, keys::kTextHeads, 4096);
    text.num_hidden_layers = read_size(file, keys::kTextLayers, 4096);
    text.max_position_embeddings = read_size(file, keys::kTextMaxPositions);
    text.encoder_hidden_size = read_size(file, keys::kTextEncoderHiddenSize);
    text.layer_norm_eps = static_cast<float>(file.get_float(keys::kTextLayerNormEps));
    if (text.hidden_size % text.num_attention_heads != 0)
        throw Error(file.name() + ": text hidden_size " + std::to_string(text.hidden_size) +
                    " is not a multiple of num_attention_heads " + std::to_string(text.num_attention_heads));
    config.image_text_hidden_size = read_size(file, keys::kImageTextHiddenSize);

    const std::int64_t vocab = text.vocab_size;
    using detail::read_token_id;
    config.tokens.bos = read_token_id(file, keys::kBosId, vocab);
    config.tokens.eos = read_token_id(file, keys::kEosId, vocab);
    config.tokens.pad = read_token_id(file, keys::kPadId, vocab);
    config.tokens.unk = read_token_id(file, keys::kUnknownId, vocab);
    config.tokens.sep = read_token_id(file, keys::kSepId, vocab);
    config.tokens.cls = read_token_id(file, keys::kClsId, vocab);
    config.tokens.mask = read_token_id(file, keys::kMaskId, vocab);
    config.tokens.enc = read_token_id(file, keys::kEncId, vocab);

    TokenizerConfig& tok = config.tokenizer;
    tok.do_lower_case = file.get_bool(keys::kDoLowerCase);
    const std::int64_t strip = file.get_int(keys::kStripAccents);
    if (strip >= 0) tok.strip_accents = strip != 0;
    tok.tokenize_chinese_chars = file.get_bool(keys::kTokenizeChineseChars);
    tok.max_input_chars_per_word = read_size(file, keys::kMaxInputCharsPerWord);

    PreprocessConfig& pre = config.preprocess;
    pre.height = read_size(file, keys::kImageHeight, 1 << 16);
    pre.width = read_size(file, keys::kImageWidth, 1 << 16);
    pre.resample = static_cast<std::int32_t>(file.get_int(keys::kResample));
    if (pre.resample != 3)
        throw Error(file.name() + ": metadata " + keys::kResample + " = " + std::to_string(pre.resample) +
                    " is not supported (only 3, bicubic, is implemented)");
    pre.do_resize = file.get_bool(keys::kDoResize);
    pre.do_rescale = file.get_bool(keys::kDoRescale);
    pre.do_normalize = file.get_bool(keys::kDoNormalize);
    pre.do_convert_rgb = file.get_bool(keys::kDoConvertRgb);
    pre.rescale_factor = file.get_float(keys::kRescaleFactor);
    const auto mean = file.get_float_array(keys::kImageMean);
    const auto std_dev = file.get_float_array(keys::kImageStd);
    if (mean.size() != 3 || std_dev.size() != 3)
        throw Error(file.name() + ": image_mean and image_std must have 3 values (one per RGB channel)");
    for (int c = 0; c < 3; ++c) {
        pre.image_mean[c] = static_cast<float>(mean[c]);
        pre.image_std[c] = static_cast<float>(std_dev[c]);
        if (!(pre.image_std[c] > 0)) throw Error(file.name() + ": image_std must be positive");
    }
    if (pre.height != vision.image_size || pre.width != vision.image_size)
        throw Error(file.name() + ": preprocessing size " + std::to_string(pre.height) + "x" +
                    std::to_string(pre.width) + " differs from the vision image_size " +
                    std::to_string(vision.image_size));
    return config;
}

}  // namespace blip
