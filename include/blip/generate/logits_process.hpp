// Logits processing and token choice with the semantics of transformers 4.30.2
// (generation/logits_process.py, torch.argmax). Each function works on the scores of one
// sequence, in place. generate() applies them in transformers' order: repetition penalty,
// no-repeat n-gram, minimum length, then for sampling temperature, top-k and top-p.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace blip {

// Value a filtered token's score receives (transformers' default filter_value).
inline constexpr float kFilteredScore = -std::numeric_limits<float>::infinity();

// MinLengthLogitsProcessor: while the sequence, prompt and [DEC] included, is shorter than
// `min_length` tokens, the end-of-sequence token cannot be chosen (its logit becomes -inf).
inline void apply_min_length(float* logits, std::int64_t sequence_length, std::int64_t min_length,
                             std::int32_t eos_token_id) {
    if (sequence_length < min_length) logits[eos_token_id] = kFilteredScore;
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

// RepetitionPenaltyLogitsProcessor: the score of every distinct token of `sequence` is
// multiplied by `penalty` when negative and divided by it otherwise, once per token however
// often it occurs. `seen` is scratch space, so that the decoding loop does not allocate.
inline void apply_repetition_penalty(float* scores, const std::vector<std::int32_t>& sequence, double penalty,
                                     std::vector<std::int32_t>& seen) {
    if (penalty == 1.0) return;
    seen.assign(sequence.begin(), sequence.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    // torch computes in float32, with the Python float converted to float32.
    const auto factor = static_cast<float>(penalty);
    for (std::int32_t token : seen) {
        const float score = scores[token];
        scores[token] = score < 0 ? score * factor : score / factor;
    }
}

// NoRepeatNGramLogitsProcessor: bans (sets to -inf) every token that would complete an
// n-gram of `ngram_size` tokens already present in `sequence`, [DEC] and prompt included.
inline void apply_no_repeat_ngram(float* scores, const std::vector<std::int32_t>& sequence,
                                  std::int64_t ngram_size) {
    const auto length = static_cast<std::int64_t>(sequence.size());
    if (ngram_size <= 0 || length + 1 < ngram_size) return;
    // The last ngram_size - 1 tokens are the start of the n-gram the next token would end.
    const std::int64_t start_length = ngram_size - 1;
    const std::int32_t* tail = sequence.data() + (length - start_length);
    for (std::int64_t begin = 0; begin + ngram_size <= length; ++begin) {
        if (std::equal(tail, tail + start_length, sequence.data() + begin))
            scores[sequence[static_cast<std::size_t>(begin + start_length)]] = kFilteredScore;
    }
}

// In-place log_softmax over `count` scores, as beam search applies it to the raw logits.
// The sum of exponentials is accumulated in double.
inline void log_softmax_inplace(float* scores, std::int64_t count) {
    float max = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < count; ++i) max = std::max(max, scores[i]);
    if (!std::isfinite(max)) return;  // all -inf (nothing to normalize) or a NaN/inf logit
    double sum = 0;
    for (std::int64_t i = 0; i < count; ++i) sum += std::exp(static_cast<double>(scores[i] - max));
    const auto log_sum = static_cast<float>(std::log(sum));
    for (std::int64_t i = 0; i < count; ++i) scores[i] = (scores[i] - max) - log_sum;
}

// TemperatureLogitsWarper: divides every score by `temperature` (in float32, as torch).
inline void apply_temperature(float* scores, std::int64_t count, double temperature) {
    if (temperature == 1.0) return;
    const auto divisor = static_cast<float>(temperature);
    for (std::int64_t i = 0; i < count; ++i) scores[i] = scores[i] / divisor;
}

// TopKLogitsWarper: keeps the scores at least as large as the k-th largest, where k is
// max(top_k, min_tokens_to_keep) capped at `count`. Ties with the k-th value are kept, so
// more than k tokens may remain. top_k 0 keeps everything. `scratch` is reused space.
inline void apply_top_k(float* scores, std::int64_t count, std::int64_t top_k, std::int64_t min_tokens_to_keep,
                        std::vector<float>& scratch) {
    if (top_k <= 0 || count <= 0) return;
    const std::int64_t k = std::min(std::max(top_k, min_tokens_to_keep), count);
    if (k >= count) return;
    scratch.assign(scores, scores + count);
    // The k-th largest value: descending order puts it at index k - 1.
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<float>());
    const float threshold = scratch[static_cast<std::size_t>(k - 1)];
    for (std::int64_t i = 0; i < count; ++i)
        if (scores[i] < threshold) scores[i] = kFilteredScore;
}

// TopPLogitsWarper (nucleus filtering): with the tokens sorted by increasing score, a token is
// removed when the probability of it and all tokens below it is at most 1 - top_p. The tokens
// left are the smallest set of most likely tokens whose probability reaches top_p, and never
// fewer than min_tokens_to_keep. Probabilities and their running sums are computed in double,
// and equal scores are ordered by token id, so the result is deterministic. `scratch` is
// reused space.
//
// NOTE: with min_tokens_to_keep 1, transformers 4.30.2 may remove every token when top_p is 0
// or so small that 1 - top_p rounds to 1 in float32, and its sampling then fails on NaN
// probabilities. Here the most likely token always stays.
inline void apply_top_p(float* scores, std::int64_t count, double top_p, std::int64_t min_tokens_to_keep,
                        std::vector<std::pair<float, std::int32_t>>& scratch) {
    if (top_p >= 1.0 || count <= 0) return;
    scratch.clear();
    for (std::int64_t i = 0; i < count; ++i)
        if (scores[i] != kFilteredScore) scratch.emplace_back(scores[i], static_cast<std::int32_t>(i));
    if (scratch.empty()) return;
    // Most likely first; equal scores by increasing token id.
    std::sort(scratch.begin(), scratch.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const double max = scratch.front().first;
    double total = 0;
    for (const auto& entry : scratch) total += std::exp(static_cast<double>(entry.first) - max);

    // Walk from the least likely token up: the running sum is transformers' ascending
    // cumulative probability.
    const double removable_mass = 1.0 - top_p;
    const std::int64_t keep_always = std::max<std::int64_t>(1, min_tokens_to_keep);
    double cumulative = 0;
    for (std::size_t rank = scratch.size(); rank-- > 0;) {
        cumulative += std::exp(static_cast<double>(scratch[rank].first) - max) / total;
        if (static_cast<std::int64_t>(rank) < keep_always) break;
        if (cumulative <= removable_mass) scores[scratch[rank].second] = kFilteredScore;
        else break;  // the running sum only grows, so every more likely token stays
    }
}

}  // namespace blip
