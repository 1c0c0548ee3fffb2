// Text of a sequence delivered piece by piece while it is decoded. The pieces concatenate to
// Tokenizer::decode() of all tokens (skip_special_tokens, clean_up_tokenization_spaces), and
// each piece is sent as soon as no later token can change it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blip/text/tokenizer.hpp"

namespace blip {

// Receives a piece of text that is final.
using TextCallback = std::function<void(std::string_view piece)>;

namespace detail {

// Python's str.replace(from, to) applied to text that arrives in parts: push() returns the
// output that no later input can change, and holds back a tail that could still begin a
// match. After finish() the outputs concatenate to the replacement on the whole text.
class StreamingReplace {
public:
    StreamingReplace(std::string_view from, std::string_view to) : from_(from), to_(to) {}

    void push(std::string_view input, std::string& output) {
        held_.append(input);
        std::size_t at = 0;
        while (at < held_.size()) {
            const std::size_t rest = held_.size() - at;
            if (rest >= from_.size() && held_.compare(at, from_.size(), from_) == 0) {
                output.append(to_);
                at += from_.size();
            } else if (rest < from_.size() && from_.compare(0, rest, held_, at, rest) == 0) {
                break;  // the tail could become a match when more text arrives
            } else {
                output.push_back(held_[at]);
                ++at;
            }
        }
        held_.erase(0, at);
    }

    // Releases the held tail: with no more input it cannot become a match.
    void finish(std::string& output) {
        output.append(held_);
        held_.clear();
    }

private:
    std::string from_;
    std::string to_;
    std::string held_;
};

}  // namespace detail

// Turns the tokens of one sequence into text pieces for a TextCallback. A word is sent when
// the token after it does not continue it (WordPiece "##" continuations), with the space
// before it, or at end(). Tokenizer::decode() glues "##" pieces and then removes the space
// before some punctuation and contractions (" .", " ' " and " n't" among others). Where the
// next tokens could still remove a space, the text from that space on waits for them.
//
// NOTE: tokens are joined as one run of word pieces. Tokenizer::decode() puts an added token
// that is not special in a part of its own; BLIP's added tokens ([DEC], [ENC]) are special
// and skipped, so BLIP's captions are not affected.
class TextStreamer {
public:
    TextStreamer(const Tokenizer& tokenizer, TextCallback on_text)
        : tokenizer_(tokenizer), on_text_(std::move(on_text)) {
        // The same replacements, in the same order, as Tokenizer::decode(): the glue of word
        // pieces, then transformers' clean_up_tokenization.
        static constexpr std::array<std::pair<std::string_view, std::string_view>, 11> kReplacements = {{
            {" ##", ""},
            {" .", "."},
            {" ?", "?"},
            {" !", "!"},
            {" ,", ","},
            {" ' ", "'"},
            {" n't", "n't"},
            {" 'm", "'m"},
            {" 's", "'s"},
            {" 've", "'ve"},
            {" 're", "'re"},
        }};
        for (const auto& [from, to] : kReplacements) stages_.emplace_back(from, to);
    }

    // Adds the next token; sends the words it completes.
    void put(std::int32_t token) {
        std::string text = tokenizer_.decode({token});
        if (text.empty()) return;  // a special token, which decode() skips
        const bool continues = text.rfind("##", 0) == 0;
        if (!continues) send_word();
        if (!started_) {
            started_ = true;
        } else {
            word_.push_back(' ');
        }
        word_.append(text);
    }

    // Sends everything not sent yet; no token may follow.
    void end() {
        send_word();
        std::string output;
        for (std::size_t stage = 0; stage < stages_.size(); ++stage) {
            std::string input = std::move(output);
            output.clear();
            stages_[stage].push(input, output);
            stages_[stage].finish(output);
        }
        send(output);
    }

    // Everything sent so far.
    const std::string& text() const { return sent_; }

private:
    // Runs the finished word (with its leading space) through the replacements.
    void send_word() {
        if (word_.empty()) return;
        std::string output = std::move(word_);
        word_.clear();
        for (detail::StreamingReplace& stage : stages_) {
            std::string input = std::move(output);
            output.clear();
            stage.push(input, output);
        }
        send(output);
    }

    void send(const std::string& piece) {
        if (piece.empty()) return;
        sent_ += piece;
        if (on_text_) on_text_(piece);
    }

    const Tokenizer& tokenizer_;
    TextCallback on_text_;
    std::vector<detail::StreamingReplace> stages_;
    std::string word_;  // the word being built, with the space before it
    std::string sent_;
    bool started_ = false;
};

}  // namespace blip
