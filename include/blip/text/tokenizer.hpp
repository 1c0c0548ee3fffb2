// BERT WordPiece tokenizer with the behaviour of the slow `BertTokenizer` of Hugging Face
// transformers 4.30.2, as BLIP uses it: bert-base-uncased's vocab.txt plus the added special
// tokens `[DEC]` (30522) and `[ENC]` (30523).
//
// Encoding follows `PreTrainedTokenizer.tokenize` and `BertTokenizer._tokenize`:
//  1. With do_lower_case, every character outside special and added tokens is lowercased
//     on its own (transformers does this with a regular expression, one character a match).
//  2. Added tokens (those after the WordPiece vocabulary) are cut out of the text and kept whole.
//  3. The rest goes through BERT's basic tokenizer. It drops NUL, U+FFFD and control
//     characters, turns whitespace into spaces, puts spaces around CJK ideographs and splits
//     on whitespace. Each word that is not a special token is then lowercased, stripped of
//     accents (NFD, then removal of category Mn) and split at punctuation.
//  4. Greedy longest-match-first WordPiece with "##" continuations; `[UNK]` for a word
//     longer than max_input_chars_per_word code points or with no match.
//
// Special tokens inside the vocabulary (`[CLS]`, `[MASK]`, ...) survive only as whole
// whitespace-separated words: "[MASK]?" becomes "[", "mask", "]", "?". This is what
// `BertTokenizer(vocab_file)` followed by `add_special_tokens` does in 4.30.2, and what
// the reference token ids contain.
// NOTE: `BertTokenizer.from_pretrained` registers every special token as unsplittable
// instead, so there "[MASK]?" becomes "[MASK]", "?".
//
// Invalid UTF-8 in the input does not throw: each invalid sequence decodes to U+FFFD,
// which the basic tokenizer drops, as for Python's bytes.decode("utf-8", "replace").
#pragma once

#include <blip/core/error.hpp>
#include <blip/model/config.hpp>
#include <blip/text/unicode.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace blip {

// Token kinds, numbered as llama.cpp's tokenizer.ggml.token_type.
enum class TokenType : std::int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5 };

// Token ids and attention mask of a sequence padded or truncated to a fixed length.
struct PaddedEncoding {
    std::vector<std::int32_t> ids;
    std::vector<std::int32_t> attention_mask;  // 1 for tokens, 0 for padding
};

namespace detail {

// BERT's CJK ideograph blocks (fixed by the algorithm, not by a Unicode property).
inline bool is_cjk_ideograph(char32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// BERT's whitespace: space, tab, newline, carriage return and category Zs.
inline bool is_bert_whitespace(char32_t cp) {
    return cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' || unicode::category(cp) == unicode::Category::Zs;
}

// BERT's control characters: category C* except tab, newline and carriage return.
inline bool is_bert_control(char32_t cp) {
    if (cp == U'\t' || cp == U'\n' || cp == U'\r') return false;
    return unicode::is_other_category(unicode::category(cp));
}

// BERT's punctuation: the ASCII symbols (33-47, 58-64, 91-96, 123-126) and category P*.
inline bool is_bert_punctuation(char32_t cp) {
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126))
        return true;
    return unicode::is_punctuation_category(unicode::category(cp));
}

// Splits on Python's str.split() whitespace and drops empty pieces.
inline std::vector<std::u32string> split_python_whitespace(std::u32string_view text) {
    std::vector<std::u32string> words;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && unicode::is_python_space(text[i])) ++i;
        std::size_t end = i;
        while (end < text.size() && !unicode::is_python_space(text[end])) ++end;
        if (end > i) words.emplace_back(text.substr(i, end - i));
        i = end;
    }
    return words;
}

// NOTE: transformers lowercases whole words here with str.lower(), which maps a word-final
// capital sigma to U+03C2. Only a capital sigma inside a special token's text can reach this
// step (every other character was lowercased one by one before), and it becomes U+03C3 here.
inline std::u32string to_lower(std::u32string_view text) {
    std::u32string out;
    out.reserve(text.size());
    for (char32_t cp : text) unicode::append_lower(cp, out);
    return out;
}

inline std::u32string strip_accents(std::u32string_view text) {
    std::u32string decomposed = unicode::nfd(text);
    decomposed.erase(std::remove_if(decomposed.begin(), decomposed.end(),
                                    [](char32_t cp) { return unicode::category(cp) == unicode::Category::Mn; }),
                     decomposed.end());
    return decomposed;
}

// Replaces every non-overlapping occurrence, scanning left to right like Python's str.replace.
inline std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(text.size());
    std::size_t start = 0;
    while (true) {
        const std::size_t found = text.find(from, start);
        if (found == std::string_view::npos) break;
        out.append(text.substr(start, found - start));
        out.append(to);
        start = found + from.size();
    }
    out.append(text.substr(start));
    return out;
}

// Removes leading and trailing str.isspace() code points, like Python's str.strip().
inline std::string strip_python_whitespace(std::string_view text) {
    std::size_t begin = 0;
    while (begin < text.size()) {
        const auto sequence = unicode::decode_utf8_sequence(text, begin);
        if (!sequence.valid || !unicode::is_python_space(sequence.code_point)) break;
        begin += sequence.length;
    }
    // Walk forward and remember where the last non-space code point ends.
    std::size_t end = begin;
    for (std::size_t offset = begin; offset < text.size();) {
        const auto sequence = unicode::decode_utf8_sequence(text, offset);
        offset += sequence.length;
        if (!sequence.valid || !unicode::is_python_space(sequence.code_point)) end = offset;
    }
    return std::string(text.substr(begin, end - begin));
}

// Removes the space before some punctuation and English contractions, like transformers'
// `clean_up_tokenization`.
inline std::string clean_up_tokenization(std::string text) {
    static constexpr std::pair<std::string_view, std::string_view> kReplacements[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    for (const auto& [from, to] : kReplacements) text = replace_all(text, from, to);
    return text;
}

}  // namespace detail

// Reads a WordPiece vocabulary with one token per line, the line number being the id. Lines
// end at "\n", "\r\n" or "\r", as in Python's text mode, and a final line break adds no empty
// token. Throws blip::Error when the file cannot be read or a line is not valid UTF-8.
inline std::vector<std::string> read_vocab_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open vocabulary file " + path + ": check that the path exists and is readable");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw Error("failed to read vocabulary file " + path);
    const std::string text = buffer.str();

    std::vector<std::string> tokens;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find_first_of("\r\n", start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        if (const std::size_t bad = unicode::find_invalid_utf8(line); bad != std::string_view::npos) {
            throw Error("vocabulary file " + path + ": line " + std::to_string(tokens.size() + 1) +
                        " is not valid UTF-8 (byte " + std::to_string(bad + 1) + "); save the file as UTF-8");
        }
        tokens.push_back(std::move(line));
        if (end < text.size() && text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ++end;
        start = end + 1;
    }
    return tokens;
}

class Tokenizer {
public:
    // tokens[i] is the text of id i and token_types[i] its kind. Control and Unknown tokens
    // are special: a whole word equal to one is kept, and decode(skip_special_tokens=true)
    // drops them. Control and UserDefined tokens after the last Normal or Unused token are
    // added tokens: transformers gives added tokens the ids after its WordPiece vocabulary and
    // cuts them out of the text wherever they occur. Throws blip::Error when the two lists
    // differ in length or an id of `special` is not a valid id.
    Tokenizer(std::vector<std::string> tokens, std::vector<TokenType> token_types, TokenizerConfig config,
              SpecialTokens special)
        : tokens_(std::move(tokens)), types_(std::move(token_types)), config_(config), special_(special) {
        if (tokens_.size() != types_.size()) {
            throw Error("tokenizer: " + std::to_string(tokens_.size()) + " tokens but " +
                        std::to_string(types_.size()) + " token types; the two lists must have one entry per id");
        }
        if (tokens_.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
            throw Error("tokenizer: " + std::to_string(tokens_.size()) + " tokens exceed the int32 id range");
        }
        check_special_id("bos", special_.bos);
        check_special_id("eos", special_.eos);
        check_special_id("pad", special_.pad);
        check_special_id("cls", special_.cls);
        check_special_id("sep", special_.sep);
        check_special_id("enc", special_.enc);
        check_special_id("unk", special_.unk);
        check_special_id("mask", special_.mask);
        build_lookup_tables();
    }

    // Word pieces of `text`, without [CLS] and [SEP].
    std::vector<std::string> tokenize(std::string_view text) const {
        std::vector<std::string> pieces;
        for (std::int32_t id : encode(text, false)) pieces.push_back(tokens_[static_cast<std::size_t>(id)]);
        return pieces;
    }

    // Token ids of `text`, between [CLS] and [SEP] when add_special_tokens is set.
    std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
        std::vector<std::int32_t> ids;
        if (add_special_tokens) ids.push_back(special_.cls);

        std::u32string chars = unicode::decode_utf8(text);
        if (config_.do_lower_case) chars = lowercase_outside_protected(chars);
        std::size_t start = 0;
        while (start < chars.size()) {
            const auto [match_start, match_id, match_length] = find_added_token(chars, start);
            basic_tokenize(std::u32string_view(chars).substr(start, match_start - start), ids);
            if (match_length == 0) break;
            ids.push_back(match_id);
            start = match_start + match_length;
        }

        if (add_special_tokens) ids.push_back(special_.sep);
        return ids;
    }

    // [CLS] ids [SEP], truncated from the right to max_length and padded with [PAD], as
    // transformers' `padding="max_length", truncation=True` does for one sequence.
    PaddedEncoding encode_padded(std::string_view text, std::size_t max_length) const {
        if (max_length < 2) {
            throw Error("tokenizer: max_length " + std::to_string(max_length) +
                        " leaves no room for [CLS] and [SEP]; use at least 2");
        }
        std::vector<std::int32_t> body = encode(text, false);
        if (body.size() > max_length - 2) body.resize(max_length - 2);

        PaddedEncoding result;
        result.ids.reserve(max_length);
        result.ids.push_back(special_.cls);
        result.ids.insert(result.ids.end(), body.begin(), body.end());
        result.ids.push_back(special_.sep);
        result.attention_mask.assign(result.ids.size(), 1);
        result.ids.resize(max_length, special_.pad);
        result.attention_mask.resize(max_length, 0);
        return result;
    }

    // Text of `ids` as transformers' `decode` returns it with clean_up_tokenization_spaces:
    // word pieces joined with spaces, "##" continuations glued on, each added token a
    // separate part, then no space before . ? ! , and some English contractions. Ids outside
    // the vocabulary become the unknown token's text, as in transformers.
    std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens = true) const {
        std::vector<std::string> parts;
        std::vector<std::string_view> run;  // consecutive vocabulary tokens
        const auto flush = [&] {
            if (run.empty()) return;
            std::string joined;
            for (std::size_t i = 0; i < run.size(); ++i) {
                if (i > 0) joined += ' ';
                joined += run[i];
            }
            parts.push_back(detail::strip_python_whitespace(detail::replace_all(joined, " ##", "")));
            run.clear();
        };

        for (std::int32_t id : ids) {
            const bool in_range = id >= 0 && static_cast<std::size_t>(id) < tokens_.size();
            if (skip_special_tokens && in_range && is_special_[static_cast<std::size_t>(id)]) continue;
            if (in_range && static_cast<std::size_t>(id) >= base_size_) {
                flush();
                parts.push_back(tokens_[static_cast<std::size_t>(id)]);
            } else {
                run.push_back(decode_text(id));
            }
        }
        flush();

        std::string text;
        for (std::size_t i = 0; i < parts.size(); ++i) {
            if (i > 0) text += ' ';
            text += parts[i];
        }
        return detail::clean_up_tokenization(std::move(text));
    }

    // Id of `token`: an added token first, then the WordPiece vocabulary (the last id when a
    // token appears twice), else the unknown token's id.
    std::int32_t token_to_id(std::string_view token) const {
        const std::string key(token);
        if (auto it = added_ids_.find(key); it != added_ids_.end()) return it->second;
        if (auto it = vocab_ids_.find(key); it != vocab_ids_.end()) return it->second;
        return special_.unk;
    }

    const std::string& id_to_token(std::int32_t id) const {
        if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size()) {
            throw Error("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary of " +
                        std::to_string(tokens_.size()) + " tokens");
        }
        return tokens_[static_cast<std::size_t>(id)];
    }

    // Number of tokens, added tokens included.
    std::size_t vocab_size() const { return tokens_.size(); }
    const SpecialTokens& special_tokens() const { return special_; }
    const TokenizerConfig& config() const { return config_; }

private:
    struct AddedMatch {
        std::size_t start;  // chars.size() when there is no match
        std::int32_t id;
        std::size_t length;  // 0 when there is no match
    };

    void check_special_id(const char* name, std::int32_t id) const {
        if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size()) {
            throw Error(std::string("tokenizer: special token id ") + name + " = " + std::to_string(id) +
                        " is outside the vocabulary of " + std::to_string(tokens_.size()) +
                        " tokens; check the special token ids stored with the model");
        }
    }

    void build_lookup_tables() {
        const auto is_special = [](TokenType t) { return t == TokenType::Control || t == TokenType::Unknown; };
        const auto is_vocabulary = [](TokenType t) { return t == TokenType::Normal || t == TokenType::Unused; };

        base_size_ = 0;
        for (std::size_t id = 0; id < tokens_.size(); ++id) {
            if (is_vocabulary(types_[id])) base_size_ = id + 1;
        }

        is_special_.assign(tokens_.size(), false);
        for (std::size_t id = 0; id < tokens_.size(); ++id) {
            const auto id32 = static_cast<std::int32_t>(id);
            const bool added = id >= base_size_ && (types_[id] == TokenType::Control || types_[id] == TokenType::UserDefined);
            if (id < base_size_ || !added) vocab_ids_[tokens_[id]] = id32;
            if (added && !tokens_[id].empty()) {
                added_ids_[tokens_[id]] = id32;
                added_tokens_.push_back({unicode::decode_utf8(tokens_[id]), id32});
            }
            if (is_special(types_[id])) {
                is_special_[id] = true;
                never_split_.insert(unicode::decode_utf8(tokens_[id]));
            }
            if ((is_special(types_[id]) || added) && !tokens_[id].empty()) {
                protected_.push_back(unicode::decode_utf8(tokens_[id]));
            }
        }

        // transformers' ids_to_tokens keeps only the last id of a token listed twice, so decode
        // shows the other ids as the unknown token.
        shadowed_.assign(tokens_.size(), false);
        for (std::size_t id = 0; id < base_size_; ++id) {
            auto it = vocab_ids_.find(tokens_[id]);
            shadowed_[id] = it == vocab_ids_.end() || static_cast<std::size_t>(it->second) != id;
        }
    }

    const std::string& decode_text(std::int32_t id) const {
        const bool in_range = id >= 0 && static_cast<std::size_t>(id) < tokens_.size();
        if (!in_range || shadowed_[static_cast<std::size_t>(id)]) return tokens_[static_cast<std::size_t>(special_.unk)];
        return tokens_[static_cast<std::size_t>(id)];
    }

    static bool matches_at(std::u32string_view text, std::size_t at, const std::u32string& token) {
        return text.size() - at >= token.size() && text.compare(at, token.size(), token) == 0;
    }

    // Lowercases each character on its own, skipping over special and added tokens (the
    // longest one wins where several start at the same place).
    std::u32string lowercase_outside_protected(std::u32string_view text) const {
        std::u32string out;
        out.reserve(text.size());
        std::size_t i = 0;
        while (i < text.size()) {
            std::size_t keep = 0;
            for (const auto& token : protected_) {
                if (token.size() > keep && matches_at(text, i, token)) keep = token.size();
            }
            if (keep > 0) {
                out.append(text.substr(i, keep));
                i += keep;
            } else {
                unicode::append_lower(text[i], out);
                ++i;
            }
        }
        return out;
    }

    // The leftmost, then longest, added token at or after `start`.
    AddedMatch find_added_token(std::u32string_view text, std::size_t start) const {
        for (std::size_t i = start; i < text.size(); ++i) {
            AddedMatch best{text.size(), 0, 0};
            for (const auto& [token, id] : added_tokens_) {
                if (token.size() > best.length && matches_at(text, i, token)) best = {i, id, token.size()};
            }
            if (best.length > 0) return best;
        }
        return {text.size(), 0, 0};
    }

    // BERT's BasicTokenizer followed by WordPiece on one stretch of text without added tokens.
    void basic_tokenize(std::u32string_view text, std::vector<std::int32_t>& ids) const {
        std::u32string cleaned;
        cleaned.reserve(text.size());
        for (char32_t cp : text) {
            if (cp == 0 || cp == unicode::kReplacementCharacter || detail::is_bert_control(cp)) continue;
            if (detail::is_bert_whitespace(cp)) {
                cleaned.push_back(U' ');
            } else if (config_.tokenize_chinese_chars && detail::is_cjk_ideograph(cp)) {
                cleaned.push_back(U' ');
                cleaned.push_back(cp);
                cleaned.push_back(U' ');
            } else {
                cleaned.push_back(cp);
            }
        }

        for (std::u32string& word : detail::split_python_whitespace(cleaned)) {
            if (never_split_.count(word) == 0) {
                if (config_.do_lower_case) word = detail::to_lower(word);
                if (config_.strips_accents()) word = detail::strip_accents(word);
            }
            if (never_split_.count(word) != 0) {
                wordpiece(word, ids);
                continue;
            }
            for (const std::u32string& piece : split_on_punctuation(word)) {
                // transformers splits the pieces on whitespace once more, which matters only
                // when lowercasing or NFD yields whitespace.
                for (const std::u32string& subword : detail::split_python_whitespace(piece)) wordpiece(subword, ids);
            }
        }
    }

    static std::vector<std::u32string> split_on_punctuation(const std::u32string& word) {
        std::vector<std::u32string> pieces;
        bool start_new_piece = true;
        for (char32_t cp : word) {
            if (detail::is_bert_punctuation(cp)) {
                pieces.emplace_back(1, cp);
                start_new_piece = true;
            } else {
                if (start_new_piece) pieces.emplace_back();
                start_new_piece = false;
                pieces.back().push_back(cp);
            }
        }
        return pieces;
    }

    // Greedy longest-match-first WordPiece over the vocabulary (added tokens excluded).
    void wordpiece(const std::u32string& word, std::vector<std::int32_t>& ids) const {
        if (word.empty()) return;
        if (config_.max_input_chars_per_word < 0 ||
            word.size() > static_cast<std::uint64_t>(config_.max_input_chars_per_word)) {
            ids.push_back(special_.unk);
            return;
        }

        // offsets[k] is the byte offset of code point k in utf8.
        std::string utf8;
        std::vector<std::size_t> offsets;
        offsets.reserve(word.size() + 1);
        for (char32_t cp : word) {
            offsets.push_back(utf8.size());
            unicode::append_utf8(cp, utf8);
        }
        offsets.push_back(utf8.size());

        const std::size_t first_piece = ids.size();
        std::string key;
        std::size_t start = 0;
        while (start < word.size()) {
            std::int32_t found = -1;
            std::size_t end = word.size();
            for (; end > start; --end) {
                key.assign(start > 0 ? "##" : "");
                key.append(utf8, offsets[start], offsets[end] - offsets[start]);
                if (auto it = vocab_ids_.find(key); it != vocab_ids_.end()) {
                    found = it->second;
                    break;
                }
            }
            if (found < 0) {
                ids.resize(first_piece);
                ids.push_back(special_.unk);
                return;
            }
            ids.push_back(found);
            start = end;
        }
    }

    struct AddedToken {
        std::u32string text;
        std::int32_t id;
    };

    std::vector<std::string> tokens_;
    std::vector<TokenType> types_;
    TokenizerConfig config_;
    SpecialTokens special_;

    std::size_t base_size_ = 0;                                // ids below: the WordPiece vocabulary
    std::unordered_map<std::string, std::int32_t> vocab_ids_;  // WordPiece vocabulary, last id of a repeated token
    std::unordered_map<std::string, std::int32_t> added_ids_;
    std::vector<AddedToken> added_tokens_;
    std::unordered_set<std::u32string> never_split_;  // special tokens, kept whole as words
    std::vector<std::u32string> protected_;           // special and added tokens, not lowercased
    std::vector<bool> is_special_;
    std::vector<bool> shadowed_;
};

}  // namespace blip
