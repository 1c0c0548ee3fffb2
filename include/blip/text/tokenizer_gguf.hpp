// Builds the tokenizer that a model file describes (vocabulary, token types, options).
#pragma once

#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/model/config.hpp"
#include "blip/model/metadata.hpp"
#include "blip/text/tokenizer.hpp"

namespace blip {

// Reads `tokenizer.ggml.tokens` and `tokenizer.ggml.token_type`; `config` is the model's
// configuration from read_config, whose vocabulary size the token list must match.
inline Tokenizer read_tokenizer(const gguf::File& file, const BlipConfig& config) {
    const std::string model = file.get_string_or(keys::kTokenizerModel, "");
    if (model != "bert")
        throw Error(file.name() + ": tokenizer model is \"" + model + "\", expected \"bert\" (WordPiece)");
    std::vector<std::string> tokens = file.get_string_array(keys::kTokens);
    const std::vector<std::int64_t> raw_types = file.get_int_array(keys::kTokenTypes);
    if (static_cast<std::int64_t>(tokens.size()) != config.text.vocab_size)
        throw Error(file.name() + ": the vocabulary has " + std::to_string(tokens.size()) +
                    " tokens but the text model's vocab_size is " + std::to_string(config.text.vocab_size));
    if (raw_types.size() != tokens.size())
        throw Error(file.name() + ": " + std::to_string(raw_types.size()) + " token types for " +
                    std::to_string(tokens.size()) + " tokens");
    std::vector<TokenType> types;
    types.reserve(raw_types.size());
    for (std::size_t id = 0; id < raw_types.size(); ++id) {
        const std::int64_t type = raw_types[id];
        if (type < static_cast<std::int64_t>(TokenType::Normal) || type > static_cast<std::int64_t>(TokenType::Unused))
            throw Error(file.name() + ": token " + std::to_string(id) + " has unknown token type " +
                        std::to_string(type));
        types.push_back(static_cast<TokenType>(type));
    }
    return Tokenizer(std::move(tokens), std::move(types), config.tokenizer, config.tokens);
}

}  // namespace blip
