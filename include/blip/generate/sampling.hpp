// Random draws for sampling. Every sequence owns a std::mt19937_64 seeded from the
// generation seed and the sequence's index within its batch row, and tokens are drawn by
// inverse transform over the token ids in increasing order. No stream is shared between
// threads, so a seed gives the same tokens on every run, thread count and batch composition.
// The engine and std::seed_seq are fully specified by the C++ standard; on another machine
// the tokens are the same as far as the logits and std::exp round the same.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "blip/core/error.hpp"

namespace blip {

// The random stream of one sampled sequence.
class SequenceRandom {
public:
    // Stream `index` (the sequence's number among its batch row's num_return_sequences) of
    // generation seed `seed`. Rows of different batch rows with the same index share the
    // stream, so a batch gives each row the tokens it gets alone.
    SequenceRandom(std::uint64_t seed, std::uint64_t index) {
        std::seed_seq sequence{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                               static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32)};
        engine_.seed(sequence);
    }

    // A uniform double in [0, 1) from the top 53 bits of one 64-bit draw.
    double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

private:
    std::mt19937_64 engine_;
};

// Draws a token from softmax(scores) over `count` scores, as torch.multinomial does from the
// probabilities the sampling loop computes. Filtered (-inf) scores have probability 0. The
// weights exp(score - max) are summed in double in token order, and the token is the first
// whose running sum exceeds uniform * total. Throws blip::Error when every score is -inf or
// a score is NaN or +inf.
inline std::int32_t sample_token(const float* scores, std::int64_t count, SequenceRandom& random) {
    float max = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < count; ++i) {
        if (std::isnan(scores[i]) || scores[i] == std::numeric_limits<float>::infinity())
            throw Error("sampling: token " + std::to_string(i) +
                        " has a NaN or infinite score, so the probabilities are undefined");
        max = std::max(max, scores[i]);
    }
    if (max == -std::numeric_limits<float>::infinity())
        throw Error("sampling: every token was filtered out, so there is nothing to draw from");

    double total = 0;
    for (std::int64_t i = 0; i < count; ++i) total += std::exp(static_cast<double>(scores[i]) - max);
    const double target = random.uniform() * total;
    double running = 0;
    std::int64_t last_possible = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        const double weight = std::exp(static_cast<double>(scores[i]) - max);
        if (weight == 0) continue;
        running += weight;
        last_possible = i;
        if (running > target) return static_cast<std::int32_t>(i);
    }
    // Only reached when rounding makes target equal to the total.
    return static_cast<std::int32_t>(last_possible);
}

}  // namespace blip
