// Input conventions of BLIP's image-grounded text encoder, shared by visual question
// answering (the question encoder) and image-text matching (the ITM head's encoder).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/model/config.hpp"

namespace blip {

// First token of an image-grounded text encoding. Salesforce's original BLIP code
// (models/blip_vqa.py, train_retrieval.py) replaces the tokenizer's [CLS] with [ENC] before
// it encodes a question for VQA or a text for the ITM head, and its released VQA and
// retrieval weights were trained that way. transformers 4.30.2 keeps [CLS], so the same
// weights give other answers and ITM scores there. The unimodal ITC text encoder ([CLS])
// and the answer decoder ([DEC]) start the same way in both.
enum class EncoderFirstToken {
    Enc,  // [ENC] (30523), as Salesforce's code feeds it: the default
    Cls,  // [CLS] (101), as transformers 4.30.2 feeds it: reproduces its outputs exactly
};

inline const char* encoder_first_token_name(EncoderFirstToken token) {
    return token == EncoderFirstToken::Cls ? "cls" : "enc";
}

// Parses "enc" or "cls". The error message names `source`, where the text came from.
inline EncoderFirstToken parse_encoder_first_token(const std::string& text, const std::string& source) {
    if (text == "enc") return EncoderFirstToken::Enc;
    if (text == "cls") return EncoderFirstToken::Cls;
    throw Error(source + ": unknown first token \"" + text + "\" (expected enc or cls)");
}

// Returns the token id of `token` in a model with special tokens `tokens`.
inline std::int32_t encoder_first_token_id(EncoderFirstToken token, const SpecialTokens& tokens) {
    return token == EncoderFirstToken::Cls ? tokens.cls : tokens.enc;
}

// Returns `ids` with the first token set to `token`. The ids must start with [CLS] as the
// tokenizer returns them, or with [ENC] when a caller already replaced it.
inline std::vector<std::int32_t> with_encoder_first_token(std::vector<std::int32_t> ids, EncoderFirstToken token,
                                                          const SpecialTokens& tokens) {
    if (ids.empty() || (ids[0] != tokens.cls && ids[0] != tokens.enc))
        throw Error("image-grounded text: token ids must start with [CLS] (" + std::to_string(tokens.cls) +
                    ") as the tokenizer returns them, got " + (ids.empty() ? "no ids" : std::to_string(ids[0])));
    ids[0] = encoder_first_token_id(token, tokens);
    return ids;
}

}  // namespace blip
