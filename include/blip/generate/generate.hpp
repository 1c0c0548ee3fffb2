// Text generation with a BlipTextLMHeadModel: greedy search, multinomial sampling, beam
// search and beam sampling with the semantics of transformers 4.30.2's GenerationMixin
// (greedy_search, sample, beam_search, beam_sample), for any batch of prefixes and
// cross-attention sources. Captioning and the VQA decoder both use it.
//
// How the decoder state is used:
// - Each batch row's prefix ([DEC] and prompt) runs once, in one forward call per distinct
//   prefix length, so that every row sees exactly the computation it gets alone. Its cache
//   is then copied (DecoderState::reorder) to the rows of its beams or samples.
// - Each step runs one token per active row. Beam search reorders the caches to follow the
//   surviving beams; nothing is recomputed.
// - Rows that finished are dropped from the state (reorder packs the others to the front),
//   so they cost no more work.
// The text model's kernels give a row the same bits whatever rows run beside it, so a batch
// gives every row the tokens it gets alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/generate/beam_search.hpp"
#include "blip/generate/config.hpp"
#include "blip/generate/logits_process.hpp"
#include "blip/generate/sampling.hpp"
#include "blip/model/text.hpp"

namespace blip {

// Receives each token that greedy search or sampling appends to output sequence `sequence`
// (numbered as GenerationOutput::sequences), as soon as it is chosen. Beam search does not
// call it, because its tokens are only final when the search ends.
using TokenCallback = std::function<void(std::int64_t sequence, std::int32_t token)>;

// The batch that generate() decodes.
struct GenerationRequest {
    // One prefix per batch row, each starting with [DEC]; lengths may differ.
    std::vector<std::vector<std::int32_t>> prefixes;
    // Cross-attention source (see set_encoder_hidden_states) of each batch row; empty means
    // batch row b reads source b. Several rows may read one source.
    std::vector<std::int64_t> sources;
    std::int32_t eos_token_id = -1;  // ends a sequence: BLIP uses [SEP]
    std::int32_t pad_token_id = -1;  // fills pad_sequences(); BLIP uses [PAD]
    TokenCallback on_token;          // optional
};

// Work done by generate(), for tests and benchmarks.
struct GenerationStats {
    std::int64_t forward_calls = 0;  // decoder forward calls
    std::int64_t row_tokens = 0;     // tokens run through the decoder, summed over rows
};

struct GenerationOutput {
    // num_return_sequences per batch row, row by row: sequence b * num_return_sequences + j
    // is the j-th of batch row b (for beam search, the j-th best). Each contains [DEC], the
    // prompt, the generated tokens and the final end of sequence unless max_length cut it,
    // exactly as when the row is decoded alone; pad_sequences() pads them as transformers does.
    std::vector<std::vector<std::int32_t>> sequences;
    // Beam search: each sequence's hypothesis score (summed log-probabilities divided by
    // length^length_penalty, as transformers' sequences_scores). Empty otherwise.
    std::vector<double> sequence_scores;
    GenerationStats stats;
};

// Pads `sequences` with `pad_token_id` to the longest one, as transformers returns a batch.
inline std::vector<std::vector<std::int32_t>> pad_sequences(std::vector<std::vector<std::int32_t>> sequences,
                                                           std::int32_t pad_token_id) {
    std::size_t longest = 0;
    for (const auto& sequence : sequences) longest = std::max(longest, sequence.size());
    for (auto& sequence : sequences) sequence.resize(longest, pad_token_id);
    return sequences;
}

// Size of the decoder state generate() needs for `request` and `config`, with `sources`
// cross-attention sources of up to `source_tokens` tokens each (0 for none).
inline DecoderStateSize generation_state_size(const GenerationRequest& request, const GenerationConfig& config,
                                              std::int64_t sources, std::int64_t source_tokens) {
    check_generation_config(config);
    DecoderStateSize size;
    const auto batch = static_cast<std::int64_t>(request.prefixes.size());
    size.rows = std::max<std::int64_t>(1, batch * rows_per_batch_row(config));
    size.capacity = 1;
    size.max_step_tokens = 1;
    for (const auto& prefix : request.prefixes) {
        const auto length = static_cast<std::int64_t>(prefix.size());
        size.capacity = std::max(size.capacity, generation_capacity(length, config));
        size.max_step_tokens = std::max(size.max_step_tokens, length);
    }
    size.sources = sources;
    size.source_tokens = source_tokens;
    return size;
}

namespace detail {

// The decoder, its state and the counters that one generate() call shares between its
// steps.
class DecodingRun {
public:
    DecodingRun(const BlipTextLMHeadModel& decoder, DecoderState& state, const GenerationRequest& request,
                const GenerationConfig& config)
        : decoder_(decoder), state_(state), request_(request), config_(config) {
        vocab_ = decoder.config().vocab_size;
        check();
        state_.self_cache.clear();
    }

    std::int64_t vocab() const { return vocab_; }
    std::int64_t batch() const { return static_cast<std::int64_t>(request_.prefixes.size()); }
    const GenerationStats& stats() const { return stats_; }

    // Runs every batch row's prefix, one forward call per distinct prefix length, and copies
    // the cache of row b to rows [b * copies, (b + 1) * copies). Returns the logits after
    // each prefix, [batch, vocab].
    std::vector<float> run_prefixes(std::int64_t copies) {
        const std::int64_t rows = batch();
        std::vector<float> logits(static_cast<std::size_t>(rows * vocab_));
        std::vector<std::int64_t> order(static_cast<std::size_t>(rows));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
            return prefix(a).size() < prefix(b).size();
        });

        // The state row of each batch row's prefix cache, and the batch rows run so far, in
        // state row order.
        std::vector<int> row_of(static_cast<std::size_t>(rows), -1);
        std::vector<std::int64_t> done;
        std::vector<std::int32_t> ids;
        for (std::size_t begin = 0; begin < order.size();) {
            const std::size_t length = prefix(order[begin]).size();
            std::size_t end = begin;
            while (end < order.size() && prefix(order[end]).size() == length) ++end;
            const auto count = static_cast<std::int64_t>(end - begin);

            // This group takes rows [0, count); the prefixes run before it move behind it.
            if (!done.empty()) {
                std::vector<int> parents(static_cast<std::size_t>(count), -1);
                for (std::int64_t row : done) parents.push_back(row_of[static_cast<std::size_t>(row)]);
                state_.reorder(parents);
                for (std::size_t i = 0; i < done.size(); ++i)
                    row_of[static_cast<std::size_t>(done[i])] = static_cast<int>(count + static_cast<std::int64_t>(i));
            }
            state_.set_active_rows(count);
            ids.clear();
            for (std::int64_t i = 0; i < count; ++i) {
                const std::int64_t row = order[begin + static_cast<std::size_t>(i)];
                state_.row_source[static_cast<std::size_t>(i)] = source(row);
                row_of[static_cast<std::size_t>(row)] = static_cast<int>(i);
                ids.insert(ids.end(), prefix(row).begin(), prefix(row).end());
            }
            const float* step_logits = forward(ids.data(), static_cast<std::int64_t>(length));
            for (std::int64_t i = 0; i < count; ++i) {
                const std::int64_t row = order[begin + static_cast<std::size_t>(i)];
                std::copy_n(step_logits + i * vocab_, vocab_, logits.data() + row * vocab_);
            }
            done.insert(done.begin(), order.begin() + static_cast<std::ptrdiff_t>(begin),
                        order.begin() + static_cast<std::ptrdiff_t>(end));
            begin = end;
        }

        // Spread each prefix over its rows unless the rows already are in place.
        bool in_place = copies == 1;
        for (std::int64_t row = 0; row < rows && in_place; ++row) in_place = row_of[static_cast<std::size_t>(row)] == row;
        if (in_place) {
            state_.set_active_rows(rows);
        } else {
            std::vector<int> parents(static_cast<std::size_t>(rows * copies));
            for (std::size_t i = 0; i < parents.size(); ++i)
                parents[i] = row_of[i / static_cast<std::size_t>(copies)];
            state_.reorder(parents);
        }
        return logits;
    }

    // Runs one token per active row and returns the logits [rows, vocab].
    float* forward(const std::int32_t* ids, std::int64_t step) {
        float* logits = decoder_.decode(state_, ids, step);
        stats_.forward_calls += 1;
        stats_.row_tokens += state_.rows() * step;
        return logits;
    }

    // Keeps the state rows listed in `parents` (each may be listed several times), in that
    // order; the others are dropped.
    void reorder(const std::vector<int>& parents) { state_.reorder(parents); }

    const std::vector<std::int32_t>& prefix(std::int64_t row) const {
        return request_.prefixes[static_cast<std::size_t>(row)];
    }
    std::int64_t max_length(std::int64_t row) const {
        return generation_capacity(static_cast<std::int64_t>(prefix(row).size()), config_);
    }

    // Applies the logits processors of transformers' order to the scores of a sequence.
    void process(float* scores, const std::vector<std::int32_t>& sequence) {
        apply_repetition_penalty(scores, sequence, config_.repetition_penalty, seen_);
        apply_no_repeat_ngram(scores, sequence, config_.no_repeat_ngram_size);
        apply_min_length(scores, static_cast<std::int64_t>(sequence.size()), config_.min_length,
                         request_.eos_token_id);
    }

    // Applies the sampling warpers: temperature, top-k, top-p.
    void warp(float* scores, std::int64_t min_tokens_to_keep) {
        apply_temperature(scores, vocab_, config_.temperature);
        apply_top_k(scores, vocab_, config_.top_k, min_tokens_to_keep, top_k_scratch_);
        apply_top_p(scores, vocab_, config_.top_p, min_tokens_to_keep, top_p_scratch_);
    }

private:
    std::int64_t source(std::int64_t row) const {
        return request_.sources.empty() ? row : request_.sources[static_cast<std::size_t>(row)];
    }

    void check() const {
        const std::int64_t rows = batch();
        if (rows < 1) throw Error("generate: no prefixes given (one per batch row, each starting with [DEC])");
        if (request_.eos_token_id < 0 || request_.eos_token_id >= vocab_ || request_.pad_token_id < 0 ||
            request_.pad_token_id >= vocab_)
            throw Error("generate: eos_token_id " + std::to_string(request_.eos_token_id) + " and pad_token_id " +
                        std::to_string(request_.pad_token_id) + " must be token ids below " +
                        std::to_string(vocab_) + " (BLIP uses [SEP] and [PAD])");
        if (!request_.sources.empty() && static_cast<std::int64_t>(request_.sources.size()) != rows)
            throw Error("generate: " + std::to_string(request_.sources.size()) + " sources given for " +
                        std::to_string(rows) + " prefixes (give one per prefix, or none)");
        std::int64_t capacity = 0;
        std::int64_t longest = 0;
        for (std::int64_t row = 0; row < rows; ++row) {
            const auto length = static_cast<std::int64_t>(prefix(row).size());
            if (length < 1)
                throw Error("generate: prefix " + std::to_string(row) + " is empty (start it with [DEC])");
            for (std::int32_t id : prefix(row))
                if (id < 0 || id >= vocab_)
                    throw Error("generate: prefix " + std::to_string(row) + " contains token id " + std::to_string(id) +
                                ", outside the vocabulary of " + std::to_string(vocab_));
            check_sequence_fits(config_, length, decoder_.config().max_position_embeddings);
            capacity = std::max(capacity, max_length(row) - 1);
            longest = std::max(longest, length);
            const std::int64_t source_index = source(row);
            if (!state_.cross_cache.empty() && (source_index < 0 || source_index >= state_.cross_cache.sources() ||
                                                !state_.cross_cache.ready(source_index)))
                throw Error("generate: batch row " + std::to_string(row) + " reads cross-attention source " +
                            std::to_string(source_index) + ", which has no encoder hidden states set");
        }
        const std::int64_t rows_needed = rows * rows_per_batch_row(config_);
        if (state_.max_rows() < rows_needed || state_.self_cache.capacity() < capacity ||
            state_.max_step_tokens < longest)
            throw Error("generate: the decoder state (rows " + std::to_string(state_.max_rows()) + ", capacity " +
                        std::to_string(state_.self_cache.capacity()) + ", step tokens " +
                        std::to_string(state_.max_step_tokens) + ") is smaller than this request needs (rows " +
                        std::to_string(rows_needed) + ", capacity " + std::to_string(capacity) + ", step tokens " +
                        std::to_string(longest) + "); size it with generation_state_size()");
    }

    const BlipTextLMHeadModel& decoder_;
    DecoderState& state_;
    const GenerationRequest& request_;
    const GenerationConfig& config_;
    std::int64_t vocab_ = 0;
    GenerationStats stats_;
    std::vector<std::int32_t> seen_;
    std::vector<float> top_k_scratch_;
    std::vector<std::pair<float, std::int32_t>> top_p_scratch_;
};

// Greedy search (one row per batch row) or sampling (num_return_sequences rows per batch
// row): each row appends its best or drawn token until it ends or reaches max_length.
inline GenerationOutput greedy_or_sample(DecodingRun& run, const GenerationRequest& request,
                                         const GenerationConfig& config) {
    const std::int64_t copies = config.do_sample ? config.num_return_sequences : 1;
    const std::int64_t vocab = run.vocab();
    const std::int64_t total = run.batch() * copies;
    const std::vector<float> prefix_logits = run.run_prefixes(copies);

    GenerationOutput output;
    output.sequences.resize(static_cast<std::size_t>(total));
    std::vector<SequenceRandom> random;
    for (std::int64_t sequence = 0; sequence < total; ++sequence) {
        const std::int64_t row = sequence / copies;
        auto& ids = output.sequences[static_cast<std::size_t>(sequence)];
        ids.reserve(static_cast<std::size_t>(run.max_length(row)));
        ids = run.prefix(row);
        if (config.do_sample) random.emplace_back(config.seed, static_cast<std::uint64_t>(sequence % copies));
    }

    // active[i]: the output sequence that state row i decodes.
    std::vector<std::int64_t> active(static_cast<std::size_t>(total));
    std::iota(active.begin(), active.end(), 0);
    std::vector<std::int64_t> still_active;
    still_active.reserve(active.size());
    std::vector<int> parents;
    parents.reserve(active.size());
    std::vector<std::int32_t> next_tokens;
    next_tokens.reserve(active.size());
    std::vector<float> first_scores(static_cast<std::size_t>(vocab));

    float* logits = nullptr;
    for (bool first = true;; first = false) {
        still_active.clear();
        parents.clear();
        next_tokens.clear();
        for (std::size_t i = 0; i < active.size(); ++i) {
            const std::int64_t sequence = active[i];
            const std::int64_t row = sequence / copies;
            auto& ids = output.sequences[static_cast<std::size_t>(sequence)];
            float* scores = nullptr;
            if (first) {
                std::copy_n(prefix_logits.data() + row * vocab, vocab, first_scores.data());
                scores = first_scores.data();
            } else {
                scores = logits + static_cast<std::int64_t>(i) * vocab;
            }
            run.process(scores, ids);
            std::int32_t token = 0;
            if (config.do_sample) {
                run.warp(scores, 1);
                token = sample_token(scores, vocab, random[static_cast<std::size_t>(sequence)]);
            } else {
                token = argmax(scores, vocab);
            }
            ids.push_back(token);
            if (request.on_token) request.on_token(sequence, token);
            const bool ended = token == request.eos_token_id ||
                               static_cast<std::int64_t>(ids.size()) >= run.max_length(row);
            if (ended) continue;
            still_active.push_back(sequence);
            parents.push_back(static_cast<int>(i));
            next_tokens.push_back(token);
        }
        if (still_active.empty()) break;
        if (still_active.size() != active.size()) run.reorder(parents);
        active.swap(still_active);
        logits = run.forward(next_tokens.data(), 1);
    }
    output.stats = run.stats();
    return output;
}

// Draws `count` entries without replacement from softmax(scores) over `size` scores, one
// after the other, each from the probabilities of the entries not drawn yet (the
// distribution of torch.multinomial without replacement). Each draw walks the entries in
// index order, like sample_token(). `weights` is reused space.
inline void draw_without_replacement(const float* scores, std::int64_t size, std::int64_t count,
                                     std::int64_t vocab, SequenceRandom& random, std::vector<double>& weights,
                                     std::vector<BeamCandidate>& drawn) {
    float max = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < size; ++i) max = std::max(max, scores[i]);
    if (!std::isfinite(max))
        throw Error("beam sampling: no score is finite (every token was filtered, or a score is NaN or +inf)");
    weights.resize(static_cast<std::size_t>(size));
    for (std::int64_t i = 0; i < size; ++i)
        weights[static_cast<std::size_t>(i)] = std::exp(static_cast<double>(scores[i]) - max);
    drawn.clear();
    for (std::int64_t draw = 0; draw < count; ++draw) {
        double total = 0;
        for (double weight : weights) total += weight;
        if (!(total > 0))
            throw Error("beam sampling: fewer than 2 * num_beams tokens are left to draw from");
        const double target = random.uniform() * total;
        double running = 0;
        std::int64_t chosen = -1;
        for (std::int64_t i = 0; i < size; ++i) {
            const double weight = weights[static_cast<std::size_t>(i)];
            if (weight == 0) continue;
            running += weight;
            chosen = i;
            if (running > target) break;
        }
        weights[static_cast<std::size_t>(chosen)] = 0;
        drawn.push_back(BeamCandidate{scores[chosen], chosen / vocab, static_cast<std::int32_t>(chosen % vocab)});
    }
    // Best first; equal scores keep the order of the draws.
    std::stable_sort(drawn.begin(), drawn.end(),
                     [](const BeamCandidate& a, const BeamCandidate& b) { return a.score > b.score; });
}

// Beam search as transformers' beam_search with BeamSearchScorer. Each step ranks the
// 2 * num_beams best continuations of a group's beams by processed log-probability plus beam
// score. A continuation that ends becomes a hypothesis when it ranks among the first
// num_beams, and the first num_beams that do not end become the new beams. A batch row is
// one group.
//
// With do_sample it is transformers' beam_sample instead: num_return_sequences groups per
// batch row, each with its own random stream and returning its best hypothesis. All beams
// start with score 0, the warpers (temperature, top-k and top-p, keeping at least 2 tokens)
// act on the processed log-probabilities plus beam scores, and the 2 * num_beams
// continuations are drawn without replacement from the softmax of the warped scores over all
// of the group's beams, then ranked by warped score.
inline GenerationOutput beam_search(DecodingRun& run, const GenerationRequest& request,
                                    const GenerationConfig& config) {
    const bool sampling = config.do_sample;
    const std::int64_t beams = config.num_beams;
    const std::int64_t vocab = run.vocab();
    const std::int64_t groups_per_row = sampling ? config.num_return_sequences : 1;
    const std::int64_t groups = run.batch() * groups_per_row;
    const std::int64_t returned_per_group = sampling ? 1 : config.num_return_sequences;
    const std::vector<float> prefix_logits = run.run_prefixes(beams * groups_per_row);
    const auto row_of = [&](std::int64_t group) { return group / groups_per_row; };

    std::vector<BeamHypotheses> finished;
    finished.reserve(static_cast<std::size_t>(groups));
    std::vector<SequenceRandom> random;
    for (std::int64_t group = 0; group < groups; ++group) {
        finished.emplace_back(beams, config.length_penalty, config.early_stopping, run.max_length(row_of(group)));
        if (sampling) random.emplace_back(config.seed, static_cast<std::uint64_t>(group % groups_per_row));
    }

    // State row i decodes beam i % beams of group active_groups[i / beams].
    std::vector<std::int64_t> active_groups(static_cast<std::size_t>(groups));
    std::iota(active_groups.begin(), active_groups.end(), 0);
    std::vector<std::vector<std::int32_t>> beam_ids(static_cast<std::size_t>(groups * beams));
    std::vector<std::vector<std::int32_t>> next_ids(beam_ids.size());
    std::vector<float> beam_scores(beam_ids.size());
    std::vector<float> next_scores(beam_ids.size());
    for (std::int64_t group = 0; group < groups; ++group) {
        const std::int64_t row = row_of(group);
        for (std::int64_t beam = 0; beam < beams; ++beam) {
            const auto index = static_cast<std::size_t>(group * beams + beam);
            beam_ids[index].reserve(static_cast<std::size_t>(run.max_length(row)));
            next_ids[index].reserve(static_cast<std::size_t>(run.max_length(row)));
            beam_ids[index] = run.prefix(row);
            // Beam search starts from the first beam alone, so that the copies cannot win the
            // first step; beam sampling starts all beams at 0.
            beam_scores[index] = beam == 0 || sampling ? 0.0f : -1e9f;
        }
    }

    std::vector<std::int64_t> still_active;
    still_active.reserve(active_groups.size());
    std::vector<int> parents;
    parents.reserve(beam_ids.size());
    std::vector<std::int32_t> next_tokens;
    next_tokens.reserve(beam_ids.size());
    std::vector<float> first_scores(static_cast<std::size_t>(beams * vocab));
    TopCandidates candidates(2 * beams);
    std::vector<BeamCandidate> drawn;
    drawn.reserve(static_cast<std::size_t>(2 * beams));
    std::vector<double> weights;

    float* logits = nullptr;
    for (bool first = true;; first = false) {
        still_active.clear();
        parents.clear();
        next_tokens.clear();
        for (std::size_t slot = 0; slot < active_groups.size(); ++slot) {
            const std::int64_t group = active_groups[slot];
            const std::int64_t row = row_of(group);
            const std::int64_t base = static_cast<std::int64_t>(slot) * beams;  // first state row
            const auto length = static_cast<std::int64_t>(beam_ids[static_cast<std::size_t>(base)].size());

            // The scores of the group's beams, [beams, vocab].
            float* block = first_scores.data();
            if (first) {
                for (std::int64_t beam = 0; beam < beams; ++beam)
                    std::copy_n(prefix_logits.data() + row * vocab, vocab, block + beam * vocab);
            } else {
                block = logits + base * vocab;
            }
            candidates.clear();
            for (std::int64_t beam = 0; beam < beams; ++beam) {
                const auto index = static_cast<std::size_t>(base + beam);
                float* scores = block + beam * vocab;
                log_softmax_inplace(scores, vocab);
                run.process(scores, beam_ids[index]);
                const float beam_score = beam_scores[index];
                if (sampling) {
                    for (std::int64_t token = 0; token < vocab; ++token) scores[token] += beam_score;
                    run.warp(scores, 2);
                    continue;
                }
                for (std::int64_t token = 0; token < vocab; ++token)
                    candidates.offer(scores[token] + beam_score, beam, static_cast<std::int32_t>(token));
            }
            if (sampling)
                draw_without_replacement(block, beams * vocab, 2 * beams, vocab,
                                         random[static_cast<std::size_t>(group)], weights, drawn);
            const std::vector<BeamCandidate>& ranked = sampling ? drawn : candidates.items();

            // BeamSearchScorer.process for this group.
            BeamHypotheses& hypotheses = finished[static_cast<std::size_t>(group)];
            std::int64_t kept = 0;
            for (std::size_t rank = 0; rank < ranked.size() && kept < beams; ++rank) {
                const BeamCandidate& candidate = ranked[rank];
                const auto parent = static_cast<std::size_t>(base + candidate.beam);
                if (candidate.token == request.eos_token_id) {
                    if (static_cast<std::int64_t>(rank) < beams)
                        hypotheses.add(beam_ids[parent], candidate.score, true);
                    continue;
                }
                const auto index = static_cast<std::size_t>(base + kept);
                next_scores[index] = candidate.score;
                next_ids[index].assign(beam_ids[parent].begin(), beam_ids[parent].end());
                next_ids[index].push_back(candidate.token);
                parents.push_back(static_cast<int>(parent));
                next_tokens.push_back(candidate.token);
                ++kept;
            }
            if (kept < beams)
                throw Error("beam search: fewer than num_beams continuations that do not end the sequence (every "
                            "score is -inf or NaN)");
            const bool done = hypotheses.is_done(ranked.front().score, length + 1);
            const bool at_max_length = length + 1 >= run.max_length(row);
            if (!done && !at_max_length) {
                still_active.push_back(group);
                continue;
            }
            // The group stops: drop its state rows, and file its open beams unless it is done.
            parents.resize(parents.size() - static_cast<std::size_t>(beams));
            next_tokens.resize(next_tokens.size() - static_cast<std::size_t>(beams));
            if (!done) {
                for (std::int64_t beam = 0; beam < beams; ++beam) {
                    const auto index = static_cast<std::size_t>(base + beam);
                    hypotheses.add(next_ids[index], next_scores[index], false);
                }
            }
        }
        if (still_active.empty()) break;

        // Pack the beams of the groups that go on. next_ids and next_scores are indexed by the
        // old state rows, so they move to the new ones.
        for (std::size_t slot = 0, kept_slot = 0; slot < active_groups.size(); ++slot) {
            if (kept_slot >= still_active.size() || active_groups[slot] != still_active[kept_slot]) continue;
            for (std::int64_t beam = 0; beam < beams; ++beam) {
                const auto from = static_cast<std::size_t>(static_cast<std::int64_t>(slot) * beams + beam);
                const auto to = static_cast<std::size_t>(static_cast<std::int64_t>(kept_slot) * beams + beam);
                beam_ids[to].swap(next_ids[from]);
                beam_scores[to] = next_scores[from];
            }
            ++kept_slot;
        }
        run.reorder(parents);
        active_groups.swap(still_active);
        logits = run.forward(next_tokens.data(), 1);
    }

    GenerationOutput output;
    for (std::int64_t group = 0; group < groups; ++group) {
        for (const BeamHypothesis& hypothesis : finished[static_cast<std::size_t>(group)].best(returned_per_group)) {
            std::vector<std::int32_t> ids = hypothesis.ids;
            if (hypothesis.ended) ids.push_back(request.eos_token_id);
            output.sequences.push_back(std::move(ids));
            output.sequence_scores.push_back(hypothesis.score);
        }
    }
    output.stats = run.stats();
    return output;
}

}  // namespace detail

// Decodes `request` with `config`: greedy search, sampling (do_sample), beam search
// (num_beams > 1) or beam sampling (both). `state` must have room for generation_state_size() and the
// cross-attention sources the request reads; its self-attention cache is cleared first.
// Every batch row gets exactly the tokens it gets when decoded alone, whatever its prefix
// length and the other rows.
inline GenerationOutput generate(const BlipTextLMHeadModel& decoder, DecoderState& state,
                                 const GenerationRequest& request, const GenerationConfig& config) {
    check_generation_config(config);
    detail::DecodingRun run(decoder, state, request, config);
    if (config.num_beams > 1) return detail::beam_search(run, request, config);
    return detail::greedy_or_sample(run, request, config);
}

}  // namespace blip
