// Reads the configuration files of a Hugging Face BLIP model folder into a BlipConfig and
// a WordPiece vocabulary: config.json, vocab.txt, tokenizer_config.json,
// special_tokens_map.json, added_tokens.json (or the added tokens of tokenizer.json) and
// preprocessor_config.json. Defaults for absent keys are those of transformers 4.30.2
// (BlipVisionConfig, BlipTextConfig, BertTokenizer, BlipImageProcessor).
#pragma once

#include <blip/core/error.hpp>
#include <blip/model/config.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace blip::convert {

// Token types as llama.cpp numbers them in `tokenizer.ggml.token_type`.
enum class TokenType : std::int32_t {
    Normal = 1,
    Control = 3,      // special tokens: [PAD] [UNK] [CLS] [SEP] [MASK] [DEC] [ENC] ...
    UserDefined = 4,  // added tokens that are not special: never split, kept when decoding
};

// The tokenizer's tokens, indexed by id, and the type of each.
struct Vocabulary {
    std::vector<std::string> tokens;
    std::vector<std::int32_t> types;
};

// The configuration and vocabulary of a Hugging Face folder (everything but the weights).
struct HfModel {
    BlipConfig config;  // config.task is left at its default; the caller decides the task
    Vocabulary vocabulary;
    std::optional<Task> architecture_task;  // the task that config.json's "architectures" names, if any
    std::vector<std::string> warnings;
};

namespace detail {

namespace fs = std::filesystem;
using Json = nlohmann::json;

inline std::string read_text_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot open");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error(path.string() + ": read failed");
    return text;
}

// Parses a JSON file; the error names the file and the parse error's line and column.
inline Json read_json_file(const fs::path& path) {
    const std::string text = read_text_file(path);
    try {
        return Json::parse(text);
    } catch (const Json::parse_error& error) {
        throw Error(path.string() + ": invalid JSON: " + error.what());
    }
}

inline std::optional<Json> read_optional_json(const fs::path& path) {
    if (!fs::exists(path)) return std::nullopt;
    return read_json_file(path);
}

// Typed access to the keys of one JSON object of `file`, found at the dotted key path
// `path` ("" for the root, "text_config" for a nested object). Errors name the file and
// the key: "/models/x/config.json: text_config.hidden_size is ...".
class JsonObject {
public:
    JsonObject(const Json& json, std::string file, std::string path = "")
        : json_(json), file_(std::move(file)), path_(std::move(path)) {
        if (!json_.is_object()) throw Error(file_ + (path_.empty() ? "" : ": " + path_) + " is not a JSON object");
    }

    // Returns "FILE: KEY_PATH" for `key` of this object, the start of an error message.
    std::string describe(const char* key) const { return file_ + ": " + key_path(key); }

    // Returns the value of `key`, or nullptr when the key is absent or null (None in Python).
    const Json* find(const char* key) const {
        const auto it = json_.find(key);
        if (it == json_.end() || it->is_null()) return nullptr;
        return &*it;
    }

    std::optional<std::int64_t> optional_integer(const char* key) const {
        const Json* value = find(key);
        if (!value) return std::nullopt;
        if (!value->is_number_integer()) throw invalid(key, *value, "an integer");
        if (value->is_number_unsigned() &&
            value->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            throw invalid(key, *value, "an integer below 2^63");
        return value->get<std::int64_t>();
    }
    std::int64_t integer(const char* key, std::int64_t fallback) const {
        return optional_integer(key).value_or(fallback);
    }
    // A positive size no larger than 2^24, the limit that model files accept.
    std::int64_t size(const char* key, std::int64_t fallback) const {
        const std::int64_t value = integer(key, fallback);
        if (value <= 0 || value > (1 << 24))
            throw Error(describe(key) + " = " + std::to_string(value) + " is out of range 1.." +
                        std::to_string(1 << 24));
        return value;
    }
    double number(const char* key, double fallback) const {
        const Json* value = find(key);
        if (!value) return fallback;
        if (!value->is_number()) throw invalid(key, *value, "a number");
        return value->get<double>();
    }
    bool boolean(const char* key, bool fallback) const {
        const Json* value = find(key);
        if (!value) return fallback;
        if (!value->is_boolean()) throw invalid(key, *value, "true or false");
        return value->get<bool>();
    }
    std::optional<bool> optional_boolean(const char* key) const {
        const Json* value = find(key);
        if (!value) return std::nullopt;
        if (!value->is_boolean()) throw invalid(key, *value, "true, false or null");
        return value->get<bool>();
    }
    std::optional<std::string> optional_string(const char* key) const {
        const Json* value = find(key);
        if (!value) return std::nullopt;
        if (!value->is_string()) throw invalid(key, *value, "a string");
        return value->get<std::string>();
    }
    std::string string(const char* key, const std::string& fallback) const {
        return optional_string(key).value_or(fallback);
    }
    // A nested object, or an empty object when the key is absent or null.
    JsonObject object(const char* key) const {
        const Json* value = find(key);
        static const Json empty = Json::object();
        if (!value) return JsonObject(empty, file_, key_path(key));
        if (!value->is_object()) throw invalid(key, *value, "an object");
        return JsonObject(*value, file_, key_path(key));
    }

    Error invalid(const char* key, const Json& value, const char* expected) const {
        return Error(describe(key) + " is " + value.dump() + ", expected " + expected);
    }

private:
    std::string key_path(const char* key) const { return path_.empty() ? std::string(key) : path_ + "." + key; }

    const Json& json_;
    std::string file_;
    std::string path_;
};

// A special token entry of special_tokens_map.json or tokenizer_config.json: a string or
// an AddedToken object {"content": ...}.
inline std::optional<std::string> token_content(const Json& value, const std::string& where) {
    if (value.is_null()) return std::nullopt;
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object()) {
        const auto it = value.find("content");
        if (it != value.end() && it->is_string()) return it->get<std::string>();
    }
    throw Error(where + " is " + value.dump() + ", expected a token string or an object with \"content\"");
}

inline void check_gelu(const JsonObject& object) {
    const std::string activation = object.string("hidden_act", "gelu");
    if (activation != "gelu")
        throw Error(object.describe("hidden_act") + " is \"" + activation +
                    "\"; only \"gelu\" (the exact erf form that BLIP uses) is implemented");
}

inline VisionConfig parse_vision_config(const JsonObject& json) {
    check_gelu(json);
    VisionConfig vision;
    vision.hidden_size = json.size("hidden_size", 768);
    vision.intermediate_size = json.size("intermediate_size", 3072);
    vision.num_attention_heads = json.size("num_attention_heads", 12);
    vision.num_hidden_layers = json.size("num_hidden_layers", 12);
    vision.image_size = json.size("image_size", 384);
    vision.patch_size = json.size("patch_size", 16);
    vision.num_channels = json.size("num_channels", 3);
    vision.layer_norm_eps = static_cast<float>(json.number("layer_norm_eps", 1e-5));
    if (vision.hidden_size % vision.num_attention_heads != 0)
        throw Error(json.describe("hidden_size") + " = " + std::to_string(vision.hidden_size) +
                    " is not a multiple of num_attention_heads " + std::to_string(vision.num_attention_heads));
    // transformers takes image_size / patch_size patches per side, rounded down, so an image
    // size that is not a multiple of the patch size is valid. The pixels past the last patch
    // are skipped.
    if (vision.image_size < vision.patch_size)
        throw Error(json.describe("image_size") + " = " + std::to_string(vision.image_size) +
                    " is smaller than patch_size " + std::to_string(vision.patch_size) + ", so it holds no patch");
    if (vision.num_channels > 4)
        throw Error(json.describe("num_channels") + " = " + std::to_string(vision.num_channels) +
                    " is out of range 1..4");
    return vision;
}

inline TextConfig parse_text_config(const JsonObject& json) {
    check_gelu(json);
    TextConfig text;
    text.vocab_size = json.size("vocab_size", 30524);
    text.hidden_size = json.size("hidden_size", 768);
    text.intermediate_size = json.size("intermediate_size", 3072);
    text.num_attention_heads = json.size("num_attention_heads", 8);
    text.num_hidden_layers = json.size("num_hidden_layers", 12);
    text.max_position_embeddings = json.size("max_position_embeddings", 512);
    text.encoder_hidden_size = json.size("encoder_hidden_size", 768);
    text.layer_norm_eps = static_cast<float>(json.number("layer_norm_eps", 1e-12));
    if (text.hidden_size % text.num_attention_heads != 0)
        throw Error(json.describe("hidden_size") + " = " + std::to_string(text.hidden_size) +
                    " is not a multiple of num_attention_heads " + std::to_string(text.num_attention_heads));
    return text;
}

inline std::optional<Task> task_of_architecture(const std::string& architecture) {
    if (architecture == "BlipForConditionalGeneration") return Task::Caption;
    if (architecture == "BlipForQuestionAnswering") return Task::Vqa;
    if (architecture == "BlipForImageTextRetrieval") return Task::Itm;
    return std::nullopt;
}

// The token ids that text_config sets; absent or null ids are left empty.
struct ConfigTokenIds {
    std::optional<std::int64_t> bos, sep, pad;
};

// Reads the contents of a config.json into `model.config` (model sizes) and
// `model.architecture_task`, and returns the token ids of its text_config. `source` names
// the file in messages.
inline ConfigTokenIds parse_model_config(const Json& json, const std::string& source, HfModel& model) {
    const JsonObject root(json, source);
    const std::string model_type = root.string("model_type", "blip");
    if (model_type != "blip")
        throw Error(source + ": model_type is \"" + model_type +
                    "\", expected \"blip\" (this converter reads BLIP models only, not BLIP-2)");
    if (const Json* architectures = root.find("architectures")) {
        if (!architectures->is_array()) throw root.invalid("architectures", *architectures, "a list of class names");
        for (const Json& name : *architectures) {
            if (!name.is_string()) throw root.invalid("architectures", *architectures, "a list of class names");
            if (auto task = task_of_architecture(name.get<std::string>())) model.architecture_task = task;
        }
    }
    const JsonObject text = root.object("text_config");
    model.config.vision = parse_vision_config(root.object("vision_config"));
    model.config.text = parse_text_config(text);
    // transformers' BlipConfig sets text_config.encoder_hidden_size to the vision width, whatever
    // config.json holds, because the text cross-attends to the image embeddings.
    const std::int64_t vision_width = model.config.vision.hidden_size;
    if (const auto stored = text.optional_integer("encoder_hidden_size"); stored && *stored != vision_width)
        model.warnings.push_back(text.describe("encoder_hidden_size") + " = " + std::to_string(*stored) +
                                 " is ignored, because transformers' BlipConfig sets it to " +
                                 "vision_config.hidden_size = " + std::to_string(vision_width));
    model.config.text.encoder_hidden_size = vision_width;
    model.config.image_text_hidden_size = root.size("image_text_hidden_size", 256);

    ConfigTokenIds ids;
    const std::int64_t vocab_size = model.config.text.vocab_size;
    const auto token_id = [&](const char* key) -> std::optional<std::int64_t> {
        const auto value = text.optional_integer(key);
        if (value && (*value < 0 || *value >= vocab_size))
            throw Error(text.describe(key) + " = " + std::to_string(*value) +
                        " is not a token id of the vocabulary of " + std::to_string(vocab_size));
        return value;
    };
    ids.bos = token_id("bos_token_id");
    ids.sep = token_id("sep_token_id");
    ids.pad = token_id("pad_token_id");
    return ids;
}

inline ConfigTokenIds parse_model_config(const fs::path& path, HfModel& model) {
    return parse_model_config(read_json_file(path), path.string(), model);
}

// Splits the contents of a vocab.txt as BertTokenizer does: one token per line, the line
// break removed.
inline std::vector<std::string> split_vocab_lines(const std::string& text) {
    std::vector<std::string> tokens;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        tokens.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return tokens;
}

inline std::vector<std::string> read_vocab_txt(const fs::path& path) {
    if (!fs::exists(path))
        throw Error(path.string() + " not found: the folder needs the WordPiece vocabulary of its BertTokenizer");
    std::vector<std::string> tokens = split_vocab_lines(read_text_file(path));
    if (tokens.empty()) throw Error(path.string() + ": empty vocabulary");
    return tokens;
}

struct AddedToken {
    std::string content;
    bool special = false;
};

// Records that `id` is `content`; the same id from two files must name the same token.
inline void add_added_token(std::map<std::int64_t, AddedToken>& added, std::int64_t id, const std::string& content,
                            bool special, const std::string& where) {
    if (id < 0 || id >= (1 << 24)) throw Error(where + ": token id " + std::to_string(id) + " is out of range");
    const auto it = added.find(id);
    if (it == added.end()) {
        added[id] = {content, special};
        return;
    }
    if (it->second.content != content)
        throw Error(where + ": token id " + std::to_string(id) + " is \"" + content + "\", but another tokenizer file " +
                    "gives it to \"" + it->second.content + "\"");
    it->second.special = it->second.special || special;
}

// Collects the added tokens of added_tokens.json, of tokenizer_config.json's
// "added_tokens_decoder" and of tokenizer.json's "added_tokens", by id.
inline std::map<std::int64_t, AddedToken> read_added_tokens(const fs::path& dir, const std::optional<Json>& tokenizer_config) {
    std::map<std::int64_t, AddedToken> added;
    if (auto json = read_optional_json(dir / "added_tokens.json")) {
        const std::string where = (dir / "added_tokens.json").string();
        if (!json->is_object()) throw Error(where + ": expected an object that maps tokens to ids");
        for (const auto& [content, id] : json->items()) {
            if (!id.is_number_integer()) throw Error(where + ": the id of \"" + content + "\" is not an integer");
            add_added_token(added, id.get<std::int64_t>(), content, false, where);
        }
    }
    if (tokenizer_config && tokenizer_config->contains("added_tokens_decoder")) {
        const std::string where = (dir / "tokenizer_config.json").string() + ": added_tokens_decoder";
        const Json& decoder = (*tokenizer_config)["added_tokens_decoder"];
        if (!decoder.is_object()) throw Error(where + " is not an object");
        for (const auto& [id_text, entry] : decoder.items()) {
            std::int64_t id = -1;
            try {
                id = std::stoll(id_text);
            } catch (const std::exception&) {
                throw Error(where + ": key \"" + id_text + "\" is not a token id");
            }
            const auto content = token_content(entry, where + "." + id_text);
            if (!content) continue;
            const bool special = entry.is_object() && entry.value("special", false);
            add_added_token(added, id, *content, special, where);
        }
    }
    if (auto json = read_optional_json(dir / "tokenizer.json")) {
        const std::string where = (dir / "tokenizer.json").string() + ": added_tokens";
        const auto it = json->is_object() ? json->find("added_tokens") : json->end();
        if (it != json->end() && !it->is_null()) {
            if (!it->is_array()) throw Error(where + " is not a list");
            for (const Json& entry : *it) {
                if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
                    !entry.contains("content") || !entry["content"].is_string())
                    throw Error(where + ": entry " + entry.dump() + " lacks an integer \"id\" or a \"content\" string");
                add_added_token(added, entry["id"].get<std::int64_t>(), entry["content"].get<std::string>(),
                                entry.value("special", false), where);
            }
        }
    }
    return added;
}

// The special token strings, from special_tokens_map.json, else tokenizer_config.json, else
// BertTokenizer's defaults.
struct SpecialTokenNames {
    std::optional<std::string> bos;
    std::string unk = "[UNK]";
    std::string sep = "[SEP]";
    std::string pad = "[PAD]";
    std::string cls = "[CLS]";
    std::string mask = "[MASK]";
    std::vector<std::string> additional;
};

inline void read_special_token_names(const Json& json, const std::string& where, SpecialTokenNames& names) {
    if (!json.is_object()) throw Error(where + " is not a JSON object");
    const auto read = [&](const char* key, auto& field) {
        const auto it = json.find(key);
        if (it == json.end()) return;
        if (auto content = token_content(*it, where + ": " + key)) field = *content;
    };
    read("bos_token", names.bos);
    read("unk_token", names.unk);
    read("sep_token", names.sep);
    read("pad_token", names.pad);
    read("cls_token", names.cls);
    read("mask_token", names.mask);
    const auto it = json.find("additional_special_tokens");
    if (it != json.end() && !it->is_null()) {
        if (!it->is_array()) throw Error(where + ": additional_special_tokens is not a list");
        names.additional.clear();
        for (const Json& entry : *it) {
            if (auto content = token_content(entry, where + ": additional_special_tokens"))
                names.additional.push_back(*content);
        }
    }
}

inline std::unordered_map<std::string, std::int32_t> index_tokens(const std::vector<std::string>& tokens) {
    std::unordered_map<std::string, std::int32_t> ids;
    // Later lines win, as in BertTokenizer's load_vocab.
    for (std::size_t id = 0; id < tokens.size(); ++id) ids[tokens[id]] = static_cast<std::int32_t>(id);
    return ids;
}

// Builds the vocabulary and the special token ids into `model`.
inline void parse_tokenizer(const fs::path& dir, const std::optional<Json>& tokenizer_config,
                            const ConfigTokenIds& config_ids, HfModel& model) {
    Vocabulary& vocabulary = model.vocabulary;
    vocabulary.tokens = read_vocab_txt(dir / "vocab.txt");
    const std::size_t base_size = vocabulary.tokens.size();
    vocabulary.types.assign(base_size, static_cast<std::int32_t>(TokenType::Normal));

    const std::map<std::int64_t, AddedToken> added = read_added_tokens(dir, tokenizer_config);
    std::set<std::int64_t> special_ids;
    for (const auto& [id, token] : added) {
        const auto index = static_cast<std::size_t>(id);
        if (index < vocabulary.tokens.size()) {
            if (vocabulary.tokens[index] != token.content)
                throw Error((dir / "vocab.txt").string() + ": token " + std::to_string(id) + " is \"" +
                            vocabulary.tokens[index] + "\", but the added tokens give that id to \"" + token.content +
                            "\"");
        } else if (index == vocabulary.tokens.size()) {
            vocabulary.tokens.push_back(token.content);
            vocabulary.types.push_back(static_cast<std::int32_t>(TokenType::UserDefined));
        } else {
            throw Error(dir.string() + ": added token \"" + token.content + "\" has id " + std::to_string(id) +
                        ", but the vocabulary so far ends at id " + std::to_string(vocabulary.tokens.size() - 1) +
                        "; added token ids must follow vocab.txt without gaps");
        }
        if (token.special) special_ids.insert(id);
    }

    SpecialTokenNames names;
    if (tokenizer_config) read_special_token_names(*tokenizer_config, (dir / "tokenizer_config.json").string(), names);
    if (auto map = read_optional_json(dir / "special_tokens_map.json"))
        read_special_token_names(*map, (dir / "special_tokens_map.json").string(), names);

    const std::int64_t vocab_size = model.config.text.vocab_size;
    // NOTE: Salesforce's BLIP tokenizer appends "[DEC]" (bos) and then "[ENC]" to the
    // bert-base-uncased vocabulary. A folder that lists neither still gets them when the
    // model's vocab_size leaves exactly those two ids.
    if (base_size == vocabulary.tokens.size() && static_cast<std::int64_t>(base_size) + 2 == vocab_size &&
        !index_tokens(vocabulary.tokens).count("[DEC]")) {
        for (const char* token : {"[DEC]", "[ENC]"}) {
            vocabulary.tokens.push_back(token);
            vocabulary.types.push_back(static_cast<std::int32_t>(TokenType::Normal));
        }
        if (!names.bos) names.bos = "[DEC]";
        if (names.additional.empty()) names.additional.push_back("[ENC]");
        model.warnings.push_back(dir.string() + ": no added tokens found; appended [DEC] = " +
                                 std::to_string(base_size) + " and [ENC] = " + std::to_string(base_size + 1) +
                                 " as BLIP's tokenizer does");
    }

    if (static_cast<std::int64_t>(vocabulary.tokens.size()) != vocab_size)
        throw Error(dir.string() + ": the tokenizer has " + std::to_string(vocabulary.tokens.size()) + " tokens (" +
                    std::to_string(base_size) + " in vocab.txt, " + std::to_string(vocabulary.tokens.size() - base_size) +
                    " added), but config.json gives text_config.vocab_size = " +
                    std::to_string(vocab_size));

    const auto ids = index_tokens(vocabulary.tokens);
    const auto id_of = [&](const std::string& token, const char* role) {
        const auto it = ids.find(token);
        if (it == ids.end())
            throw Error(dir.string() + ": the " + std::string(role) + " token \"" + token +
                        "\" is not in the vocabulary (vocab.txt and the added tokens)");
        special_ids.insert(it->second);
        return it->second;
    };

    SpecialTokens& tokens = model.config.tokens;
    tokens.unk = id_of(names.unk, "unknown");
    tokens.sep = id_of(names.sep, "separator");
    tokens.cls = id_of(names.cls, "classifier");
    tokens.mask = id_of(names.mask, "mask");
    const std::int32_t tokenizer_pad = id_of(names.pad, "padding");
    for (const std::string& token : names.additional) id_of(token, "additional special");
    // Salesforce's code takes [ENC] as the first additional special token.
    tokens.enc = names.additional.empty() ? id_of("[ENC]", "encoder") : ids.at(names.additional.front());
    std::optional<std::int32_t> tokenizer_bos;
    if (names.bos) tokenizer_bos = id_of(*names.bos, "begin-of-sequence");

    // Generation takes bos, eos and padding from text_config (transformers'
    // BlipForConditionalGeneration.generate); the tokenizer's tokens fill in when absent.
    if (!config_ids.bos && !tokenizer_bos)
        throw Error(dir.string() + ": no begin-of-sequence token: set text_config.bos_token_id in config.json or "
                    "bos_token in special_tokens_map.json (BLIP uses [DEC])");
    tokens.bos = config_ids.bos ? static_cast<std::int32_t>(*config_ids.bos) : *tokenizer_bos;
    if (config_ids.bos && tokenizer_bos && tokens.bos != *tokenizer_bos)
        model.warnings.push_back("config.json text_config.bos_token_id " + std::to_string(tokens.bos) +
                                 " differs from the tokenizer's bos_token \"" + *names.bos + "\" = " +
                                 std::to_string(*tokenizer_bos) + "; generation starts with " +
                                 std::to_string(tokens.bos) + " as in transformers");
    tokens.eos = config_ids.sep ? static_cast<std::int32_t>(*config_ids.sep) : tokens.sep;
    tokens.pad = config_ids.pad ? static_cast<std::int32_t>(*config_ids.pad) : tokenizer_pad;
    special_ids.insert({tokens.bos, tokens.eos, tokens.pad});

    for (const std::int64_t id : special_ids)
        vocabulary.types[static_cast<std::size_t>(id)] = static_cast<std::int32_t>(TokenType::Control);
}

inline TokenizerConfig parse_tokenizer_options(const std::optional<Json>& json, const fs::path& path) {
    TokenizerConfig options;
    if (!json) return options;
    const JsonObject object(*json, path.string());
    const std::string tokenizer_class = object.string("tokenizer_class", "BertTokenizer");
    if (tokenizer_class != "BertTokenizer" && tokenizer_class != "BertTokenizerFast")
        throw Error(path.string() + ": tokenizer_class is \"" + tokenizer_class +
                    "\"; only BertTokenizer (WordPiece) is implemented");
    if (!object.boolean("do_basic_tokenize", true))
        throw Error(path.string() + ": do_basic_tokenize = false is not supported");
    if (const Json* never_split = object.find("never_split"); never_split && !never_split->empty())
        throw Error(path.string() + ": never_split " + never_split->dump() + " is not supported");
    options.do_lower_case = object.boolean("do_lower_case", true);
    options.strip_accents = object.optional_boolean("strip_accents");
    options.tokenize_chinese_chars = object.boolean("tokenize_chinese_chars", true);
    options.max_input_chars_per_word = object.size("max_input_chars_per_word", 100);
    return options;
}

inline PreprocessConfig parse_preprocess(const fs::path& path, const VisionConfig& vision, HfModel& model) {
    PreprocessConfig pre;
    pre.height = pre.width = vision.image_size;
    if (!fs::exists(path)) {
        model.warnings.push_back(path.string() + " not found; using BlipImageProcessor's defaults at " +
                                 std::to_string(vision.image_size) + "x" + std::to_string(vision.image_size));
        return pre;
    }
    const Json json = read_json_file(path);
    const JsonObject object(json, path.string());

    if (const Json* size = object.find("size")) {
        if (size->is_number_integer()) {
            pre.height = pre.width = object.size("size", 0);
        } else {
            const JsonObject dims = object.object("size");
            if (!dims.find("height") || !dims.find("width"))
                throw Error(path.string() + ": size " + size->dump() +
                            " is not supported; BlipImageProcessor expects {\"height\": H, \"width\": W}");
            pre.height = dims.size("height", 0);
            pre.width = dims.size("width", 0);
        }
    }
    const std::int64_t resample = object.integer("resample", 3);
    if (resample != 3)
        throw Error(path.string() + ": resample = " + std::to_string(resample) +
                    " is not supported; only 3 (PIL bicubic) is implemented");
    pre.resample = 3;

    pre.do_resize = object.boolean("do_resize", true);
    pre.do_rescale = object.boolean("do_rescale", true);
    pre.do_normalize = object.boolean("do_normalize", true);
    pre.do_convert_rgb = object.boolean("do_convert_rgb", true);
    pre.rescale_factor = object.number("rescale_factor", 1.0 / 255.0);

    const auto read_channels = [&](const char* key, std::array<float, 3>& out) {
        const Json* value = object.find(key);
        if (!value) return;
        if (value->is_number()) {
            out.fill(value->get<float>());
            return;
        }
        if (!value->is_array() || value->size() != 3)
            throw object.invalid(key, *value, "a list of 3 numbers (one per RGB channel)");
        for (std::size_t c = 0; c < 3; ++c) {
            if (!(*value)[c].is_number()) throw object.invalid(key, *value, "a list of 3 numbers");
            out[c] = (*value)[c].get<float>();
        }
    };
    read_channels("image_mean", pre.image_mean);
    read_channels("image_std", pre.image_std);

    for (float value : pre.image_std) {
        if (!(value > 0)) throw Error(path.string() + ": image_std values must be positive");
    }

    if (pre.height != vision.image_size || pre.width != vision.image_size)
        throw Error(path.string() + ": size " + std::to_string(pre.height) + "x" + std::to_string(pre.width) +
                    " differs from vision_config.image_size " + std::to_string(vision.image_size) +
                    " in config.json, but a model file has one input size: make them equal, or convert "
                    "with --image-size to resize the position embeddings");
    return pre;
}

}  // namespace detail

// Reads the configuration and tokenizer files of the Hugging Face model folder `dir`.
inline HfModel read_hf_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path folder(dir);
    if (!fs::is_directory(folder)) throw Error(dir + ": not a folder; expected a Hugging Face model folder");
    const fs::path config_path = folder / "config.json";
    if (!fs::exists(config_path))
        throw Error(dir + ": no config.json; expected a Hugging Face BLIP model folder as huggingface-cli download "
                    "leaves it (config.json, model.safetensors, vocab.txt, ...)");

    HfModel model;
    // The folder's own name ("blip-image-captioning-base"), also for "." or a trailing slash.
    std::error_code ignored;
    const fs::path canonical = fs::weakly_canonical(folder, ignored);
    model.config.name = (canonical.empty() ? folder : canonical).filename().string();
    const detail::ConfigTokenIds config_ids = detail::parse_model_config(config_path, model);

    const fs::path tokenizer_config_path = folder / "tokenizer_config.json";
    const auto tokenizer_config = detail::read_optional_json(tokenizer_config_path);
    if (!tokenizer_config)
        model.warnings.push_back(tokenizer_config_path.string() + " not found; using BertTokenizer's defaults");
    model.config.tokenizer = detail::parse_tokenizer_options(tokenizer_config, tokenizer_config_path);
    detail::parse_tokenizer(folder, tokenizer_config, config_ids, model);
    model.config.preprocess =
        detail::parse_preprocess(folder / "preprocessor_config.json", model.config.vision, model);
    return model;
}

}  // namespace blip::convert
