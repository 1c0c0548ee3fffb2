// Greedy decoding with the semantics of transformers 4.30.2 GenerationMixin.greedy_search;
// generate() holds the decoding loop.
#pragma once

#include <cstdint>
#include <vector>

#include "blip/generate/config.hpp"
#include "blip/generate/generate.hpp"
#include "blip/model/text.hpp"

namespace blip {

// Decodes greedily from `prefixes` (one per batch row, each starting with [DEC]); row b reads
// cross-attention source b of `state`. A row ends at `eos_token_id` or max_length. Returns
// each row's sequence, prefix included, as it would be decoded alone (not padded).
inline std::vector<std::vector<std::int32_t>> greedy_search(const BlipTextLMHeadModel& decoder, DecoderState& state,
                                                            const std::vector<std::vector<std::int32_t>>& prefixes,
                                                            const GenerationConfig& config, std::int32_t eos_token_id,
                                                            std::int32_t pad_token_id) {
    GenerationConfig greedy = config;
    greedy.num_beams = 1;
    greedy.do_sample = false;
    greedy.num_return_sequences = 1;
    GenerationRequest request;
    request.prefixes = prefixes;
    request.eos_token_id = eos_token_id;
    request.pad_token_id = pad_token_id;
    return generate(decoder, state, request, greedy).sequences;
}

}  // namespace blip
