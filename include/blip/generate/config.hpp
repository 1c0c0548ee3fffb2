// Generation settings with the names, defaults and counting of transformers 4.30.2's
// GenerationConfig, for the decoding strategies BLIP uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "blip/core/error.hpp"

namespace blip {

// When beam search stops for a batch row (transformers' `early_stopping`).
enum class EarlyStopping {
    // early_stopping=False: stops when the best candidate of the current step, divided by the
    // next length to the power length_penalty, cannot beat the worst kept hypothesis.
    Heuristic,
    // early_stopping=True: stops as soon as num_beams hypotheses have ended.
    WhenBeamsEnd,
    // early_stopping="never": stops only when no better hypothesis is possible, taking
    // max_length as the best length when length_penalty > 0.
    Never,
};

// Generation settings, named and counted as in transformers' GenerationConfig. Lengths count
// every token of a sequence, [DEC] and prompt included.
struct GenerationConfig {
    // Maximum number of tokens of a sequence. 20 is transformers' default.
    std::int64_t max_length = 20;
    // Minimum number of tokens of a sequence before [SEP] may end it.
    std::int64_t min_length = 0;

    // Beam search when above 1: hypotheses kept per batch row.
    std::int64_t num_beams = 1;
    // Exponent of the length that divides a finished hypothesis' summed log-probabilities.
    // Values above 0 favour longer sequences.
    double length_penalty = 1.0;
    EarlyStopping early_stopping = EarlyStopping::Heuristic;
    // Sequences returned per batch row: the best hypotheses of beam search, or independent
    // samples (with beams, each the best of its own beam sampling). Greedy search returns one.
    std::int64_t num_return_sequences = 1;

    // Multinomial sampling from the processed distribution instead of taking the best token;
    // with num_beams above 1, beam sampling.
    bool do_sample = false;
    // Divides the logits before sampling; below 1 sharpens the distribution.
    double temperature = 1.0;
    // Sampling keeps the top_k most likely tokens (ties at the k-th value included); 0 keeps
    // all. 50 is transformers' default, and it applies whenever do_sample is set.
    std::int64_t top_k = 50;
    // Sampling keeps the smallest set of most likely tokens whose probability reaches top_p;
    // 1 keeps all.
    double top_p = 1.0;
    // Seed of the random streams of sampling. The same seed gives the same tokens on every
    // run and thread count.
    std::uint64_t seed = 0;

    // Divides positive logits (multiplies negative ones) of every token already in the
    // sequence, [DEC] and prompt included; 1 disables it.
    double repetition_penalty = 1.0;
    // Bans any token that would repeat an n-gram of this size already in the sequence; 0
    // disables it.
    std::int64_t no_repeat_ngram_size = 0;
};

// Rows of a decoder state that one batch row occupies while decoding: its beams, its
// samples, or one row for greedy search.
inline std::int64_t rows_per_batch_row(const GenerationConfig& config) {
    if (config.num_beams > 1) return config.num_beams * (config.do_sample ? config.num_return_sequences : 1);
    return config.do_sample ? config.num_return_sequences : 1;
}

// Checks a GenerationConfig. transformers only warns about min_length > max_length, so that
// case is allowed (the end of sequence then never becomes possible).
inline void check_generation_config(const GenerationConfig& config) {
    if (config.max_length < 1)
        throw Error("generation: max_length " + std::to_string(config.max_length) + " must be at least 1");
    if (config.min_length < 0)
        throw Error("generation: min_length " + std::to_string(config.min_length) + " must not be negative");
    if (config.num_beams < 1)
        throw Error("generation: num_beams " + std::to_string(config.num_beams) + " must be at least 1");
    if (config.num_return_sequences < 1)
        throw Error("generation: num_return_sequences " + std::to_string(config.num_return_sequences) +
                    " must be at least 1");
    if (config.num_beams == 1 && !config.do_sample && config.num_return_sequences > 1)
        throw Error("generation: greedy search returns one sequence, but num_return_sequences is " +
                    std::to_string(config.num_return_sequences) + " (use beams or sampling for more)");
    if (config.num_beams > 1 && !config.do_sample && config.num_return_sequences > config.num_beams)
        throw Error("generation: num_return_sequences " + std::to_string(config.num_return_sequences) +
                    " must not exceed num_beams " + std::to_string(config.num_beams));
    if (!std::isfinite(config.length_penalty))
        throw Error("generation: length_penalty must be a finite number");
    if (!(config.temperature > 0) || !std::isfinite(config.temperature))
        throw Error("generation: temperature " + std::to_string(config.temperature) + " must be above 0");
    if (config.top_k < 0)
        throw Error("generation: top_k " + std::to_string(config.top_k) + " must not be negative (0 keeps all tokens)");
    if (!(config.top_p >= 0 && config.top_p <= 1))
        throw Error("generation: top_p " + std::to_string(config.top_p) + " must be in 0..1");
    if (!(config.repetition_penalty > 0) || !std::isfinite(config.repetition_penalty))
        throw Error("generation: repetition_penalty " + std::to_string(config.repetition_penalty) +
                    " must be above 0 (1 disables it)");
    if (config.no_repeat_ngram_size < 0)
        throw Error("generation: no_repeat_ngram_size " + std::to_string(config.no_repeat_ngram_size) +
                    " must not be negative (0 disables it)");
}

// Throws unless sequences of config.max_length tokens, and a first generated token after a
// prefix of `prefix_length` tokens, fit in the text model's `max_positions`
// (max_position_embeddings). The last token of a sequence is never fed back, so max_length may
// exceed max_positions by one.
inline void check_sequence_fits(const GenerationConfig& config, std::int64_t prefix_length,
                                std::int64_t max_positions) {
    if (prefix_length > max_positions)
        throw Error("generation: the prefix ([DEC] and the prompt) has " + std::to_string(prefix_length) +
                    " tokens, more than the text model's " + std::to_string(max_positions) +
                    " positions (max_position_embeddings); shorten the prompt");
    if (config.max_length - 1 > max_positions)
        throw Error("generation: max_length " + std::to_string(config.max_length) + " needs " +
                    std::to_string(config.max_length - 1) + " positions, more than the text model's " +
                    std::to_string(max_positions) + " (max_position_embeddings); use a max_length of at most " +
                    std::to_string(max_positions + 1));
}

// Positions a decoder state needs for sequences that start with `prefix_length` tokens:
// the loop always generates at least one token, even when the prefix already reaches
// max_length (transformers does the same).
inline std::int64_t generation_capacity(std::int64_t prefix_length, const GenerationConfig& config) {
    return std::max(config.max_length, prefix_length + 1);
}

}  // namespace blip
