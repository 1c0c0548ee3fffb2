// Greedy decoding with the semantics of transformers 4.30.2 GenerationMixin.greedy_search.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/generate/logits_process.hpp"
#include "blip/model/text.hpp"

namespace blip {

// Generation settings, named and counted as in transformers' GenerationConfig.
struct GenerationConfig {
    // Maximum number of tokens of a sequence, [DEC] and prompt included. 20 is transformers'
    // default.
    std::int64_t max_length = 20;
    // Minimum number of tokens of a sequence before [SEP] may end it, [DEC] and prompt
    // included.
    std::int64_t min_length = 0;
};

// Checks a GenerationConfig; transformers only warns about min_length > max_length, so that
// case is allowed (eos then never becomes possible).
inline void check_generation_config(const GenerationConfig& config) {
    if (config.max_length < 1)
        throw Error("generation: max_length " + std::to_string(config.max_length) + " must be at least 1");
    if (config.min_length < 0)
        throw Error("generation: min_length " + std::to_string(config.min_length) + " must not be negative");
}

// Positions a decoder state needs for sequences that start with `prefix_length` tokens:
// the loop always generates at least one token, even when the prefix already reaches
// max_length (transformers does the same).
inline std::int64_t generation_capacity(std::int64_t prefix_length, const GenerationConfig& config) {
    return std::max(config.max_length, prefix_length + 1);
}

// Decodes every row of `state` greedily from `prefixes` (one per row, all of the same
// length; the first token is [DEC]). The state must be fresh, with cross-attention sources
// set and room for generation_capacity() positions. Each step appends the highest logit's
// token; a row ends at `eos_token_id`, and rows that ended are padded with `pad_token_id`
// while others go on. Decoding stops when every row ended or the sequences reach
// max_length. Returns the sequences, prefixes included, all of the same length.
inline std::vector<std::vector<std::int32_t>> greedy_search(const BlipTextLMHeadModel& decoder, DecoderState& state,
                                                            const std::vector<std::vector<std::int32_t>>& prefixes,
                                                            const GenerationConfig& config, std::int32_t eos_token_id,
                                                            std::int32_t pad_token_id) {
    check_generation_config(config);
    const std::int64_t rows = state.rows();
    if (static_cast<std::int64_t>(prefixes.size()) != rows || prefixes.empty() || prefixes[0].empty())
        throw Error("greedy_search: expected " + std::to_string(rows) + " non-empty prefixes, got " +
                    std::to_string(prefixes.size()));
    const auto prefix_length = static_cast<std::int64_t>(prefixes[0].size());
    for (const auto& prefix : prefixes)
        if (static_cast<std::int64_t>(prefix.size()) != prefix_length)
            throw Error("greedy_search: prefixes of different lengths cannot be decoded together");
    const std::int64_t final_length = generation_capacity(prefix_length, config);
    if (state.self_cache.capacity() < final_length - 1 || state.max_step_tokens < prefix_length)
        throw Error("greedy_search: the decoder state is too small for " + std::to_string(final_length) +
                    " tokens per row");
    for (std::int64_t row = 0; row < rows; ++row)
        if (state.self_cache.length(row) != 0) throw Error("greedy_search: the decoder state is not fresh");

    // Everything the loop touches is allocated here.
    std::vector<std::vector<std::int32_t>> sequences = prefixes;
    for (auto& sequence : sequences) sequence.reserve(static_cast<std::size_t>(final_length));
    std::vector<std::int32_t> first_step;
    first_step.reserve(static_cast<std::size_t>(rows * prefix_length));
    for (const auto& prefix : prefixes) first_step.insert(first_step.end(), prefix.begin(), prefix.end());
    std::vector<std::int32_t> next_tokens(static_cast<std::size_t>(rows));
    std::vector<bool> unfinished(static_cast<std::size_t>(rows), true);
    const std::int64_t vocab = decoder.config().vocab_size;

    float* logits = decoder.decode(state, first_step.data(), prefix_length);
    for (;;) {
        const auto length = static_cast<std::int64_t>(sequences[0].size());
        bool any_unfinished = false;
        for (std::int64_t row = 0; row < rows; ++row) {
            float* row_logits = logits + row * vocab;
            apply_min_length(row_logits, length, config.min_length, eos_token_id);
            std::int32_t token = argmax(row_logits, vocab);
            const auto index = static_cast<std::size_t>(row);
            if (!unfinished[index]) token = pad_token_id;
            sequences[index].push_back(token);
            next_tokens[index] = token;
            if (token == eos_token_id) unfinished[index] = false;
            any_unfinished = any_unfinished || unfinished[index];
        }
        if (!any_unfinished || length + 1 >= config.max_length) break;
        logits = decoder.decode(state, next_tokens.data(), 1);
    }
    return sequences;
}

}  // namespace blip
