// The configuration and vocabulary of a bare checkpoint file (a Salesforce .pth, a
// pytorch_model.bin or a .safetensors file), which contains weights only. --config names a
// shipped configuration ("base", "large"), a config.json or a model folder. The vocabulary
// comes from that folder when it has a vocab.txt, else from the shipped bert-base-uncased
// vocabulary with BLIP's two added tokens.
#pragma once

#include "checkpoint.hpp"
#include "hf_config.hpp"

#include <blip/core/error.hpp>
#include <blip/model/config.hpp>

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace blip::convert {

// Text files that blip-convert ships. The program compiles them in (convert/CMakeLists.txt
// generates shipped_files_data.hpp), so that an installed binary needs no data folder.
struct ShippedFiles {
    std::string bert_vocabulary;  // vocab_bert_base_uncased.txt: bert-base-uncased's 30522 WordPiece tokens
    std::string base_config;      // configs/base.json: ViT-B/16 models
    std::string large_config;     // configs/large.json: ViT-L/16 models
};

// Reads the shipped files from the `convert` folder of the source tree.
inline ShippedFiles read_shipped_files(const std::string& convert_dir) {
    ShippedFiles files;
    files.bert_vocabulary = detail::read_text_file(convert_dir + "/vocab_bert_base_uncased.txt");
    files.base_config = detail::read_text_file(convert_dir + "/configs/base.json");
    files.large_config = detail::read_text_file(convert_dir + "/configs/large.json");
    return files;
}

namespace detail {

// Tokens that BLIP's tokenizer appends to bert-base-uncased's vocabulary: [DEC] starts
// every decoder sequence and [ENC] replaces [CLS] in image-grounded encodings.
inline constexpr const char* kAddedTokens[] = {"[DEC]", "[ENC]"};

// Fills `model.vocabulary` and the special token ids of `model.config` with the shipped
// vocabulary followed by [DEC] and [ENC], as Salesforce's init_tokenizer builds it. The
// special token names are BertTokenizer's defaults; `ids` from text_config take precedence
// for bos, eos and padding, as in transformers' generate.
inline void use_shipped_vocabulary(const std::string& vocabulary_text, const ConfigTokenIds& ids, HfModel& model) {
    Vocabulary& vocabulary = model.vocabulary;
    vocabulary.tokens = split_vocab_lines(vocabulary_text);
    for (const char* token : kAddedTokens) vocabulary.tokens.push_back(token);
    vocabulary.types.assign(vocabulary.tokens.size(), static_cast<std::int32_t>(TokenType::Normal));

    const auto size = static_cast<std::int64_t>(vocabulary.tokens.size());
    if (size != model.config.text.vocab_size)
        throw Error("the configuration gives text_config.vocab_size = " + std::to_string(model.config.text.vocab_size) +
                    ", but the shipped bert-base-uncased vocabulary with [DEC] and [ENC] has " + std::to_string(size) +
                    " tokens; pass --config with a model folder that contains the model's vocab.txt");

    std::unordered_map<std::string, std::int32_t> index;
    for (std::size_t id = 0; id < vocabulary.tokens.size(); ++id)
        index[vocabulary.tokens[id]] = static_cast<std::int32_t>(id);
    const auto id_of = [&](const char* token) {
        const auto it = index.find(token);
        if (it == index.end()) throw Error(std::string("the shipped vocabulary lacks the token ") + token);
        return it->second;
    };

    SpecialTokens& tokens = model.config.tokens;
    tokens.unk = id_of("[UNK]");
    tokens.sep = id_of("[SEP]");
    tokens.cls = id_of("[CLS]");
    tokens.mask = id_of("[MASK]");
    tokens.enc = id_of("[ENC]");
    const std::int32_t tokenizer_pad = id_of("[PAD]");
    const std::int32_t decoder_start = id_of("[DEC]");
    tokens.bos = ids.bos ? static_cast<std::int32_t>(*ids.bos) : decoder_start;
    tokens.eos = ids.sep ? static_cast<std::int32_t>(*ids.sep) : tokens.sep;
    tokens.pad = ids.pad ? static_cast<std::int32_t>(*ids.pad) : tokenizer_pad;

    const std::set<std::int32_t> control = {tokens.unk, tokens.sep,    tokens.cls,    tokens.mask, tokens.enc,
                                            tokenizer_pad, decoder_start, tokens.bos, tokens.eos, tokens.pad};
    for (const std::int32_t id : control)
        vocabulary.types[static_cast<std::size_t>(id)] = static_cast<std::int32_t>(TokenType::Control);
}

// Returns "base" or "large" from the width of the checkpoint's class token, or throws.
inline std::string infer_config_name(const Checkpoint& checkpoint) {
    const SourceTensor* class_token = checkpoint.find("visual_encoder.cls_token");
    if (!class_token) class_token = checkpoint.find("vision_model.embeddings.class_embedding");
    if (!class_token || class_token->shape.empty())
        throw Error(checkpoint.source + ": no class token (visual_encoder.cls_token or "
                    "vision_model.embeddings.class_embedding) to tell the model size from; pass --config");
    const std::int64_t width = class_token->shape.back();
    if (width == 768) return "base";
    if (width == 1024) return "large";
    throw Error(checkpoint.source + ": the vision width " + std::to_string(width) +
                " is neither base (768) nor large (1024); pass --config with the model's config.json");
}

// Parses config.json's contents for `model` and takes the shipped vocabulary, with
// BlipImageProcessor's defaults at the configured image size.
inline void describe_from_config_json(const Json& json, const std::string& source, const ShippedFiles* shipped,
                                      HfModel& model) {
    const ConfigTokenIds ids = parse_model_config(json, source, model);
    if (!shipped)
        throw Error(source + " comes without a vocabulary, and no shipped vocabulary is available; pass --config "
                    "with a model folder that contains vocab.txt");
    use_shipped_vocabulary(shipped->bert_vocabulary, ids, model);
    model.config.preprocess.height = model.config.preprocess.width = model.config.vision.image_size;
}

}  // namespace detail

// Describes the model of a bare checkpoint file. `choice` is --config: "base", "large"
// (the shipped configurations), a config.json or a model folder.
inline HfModel describe_checkpoint_file(const std::string& choice, const Checkpoint& checkpoint,
                                        const ShippedFiles* shipped) {
    namespace fs = std::filesystem;
    HfModel model;

    if (choice == "base" || choice == "large") {
        if (!shipped) throw Error("the shipped configurations are not available; pass --config with a config.json");
        const std::string source = "the shipped configuration \"" + choice + "\"";
        detail::Json json;
        try {
            json = detail::Json::parse(choice == "base" ? shipped->base_config : shipped->large_config);
        } catch (const detail::Json::parse_error& error) {
            throw Error(source + " is not valid JSON: " + error.what());
        }
        detail::describe_from_config_json(json, source, shipped, model);
    } else if (fs::is_directory(choice)) {
        const fs::path folder(choice);
        if (fs::exists(folder / "vocab.txt")) {
            model = read_hf_folder(choice);
        } else {
            const fs::path config_path = folder / "config.json";
            if (!fs::exists(config_path))
                throw Error("--config " + choice + ": the folder has no config.json");
            detail::describe_from_config_json(detail::read_json_file(config_path), config_path.string(), shipped, model);
            if (fs::exists(folder / "preprocessor_config.json"))
                model.config.preprocess =
                    detail::parse_preprocess(folder / "preprocessor_config.json", model.config.vision, model);
        }
    } else if (fs::is_regular_file(choice)) {
        detail::describe_from_config_json(detail::read_json_file(choice), choice, shipped, model);
    } else {
        throw Error("--config " + choice + ": not base, large, an existing config.json or a model folder");
    }

    model.config.name = fs::path(checkpoint.source).stem().string();
    return model;
}

}  // namespace blip::convert
