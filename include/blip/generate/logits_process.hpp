// Logits processing and token choice with the semantics of transformers 4.30.2
// (generation/logits_process.py, torch.argmax).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace blip {

// MinLengthLogitsProcessor: while the sequence, prompt and [DEC] included, is shorter than
// `min_length` tokens, the end-of-sequence token cannot be chosen (its logit becomes -inf).
inline void apply_min_length(float* logits, std::int64_t sequence_length, std::int64_t min_length,
                             std::int32_t eos_token_id) {
    if (sequence_length < min_length) logits[eos_token_id] = -std::numeric_limits<float>::infinity();
}

// Index of the largest of `count` logits; the first one on ties. A NaN counts as larger than
// any number, as in torch.argmax.
inline std::int32_t argmax(const float* logits, std::int64_t count) {
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < count; ++i) {
        if (std::isnan(logits[best])) break;
        if (std::isnan(logits[i]) || logits[i] > logits[best]) best = i;
    }
    return static_cast<std::int32_t>(best);
}

}  // namespace blip
