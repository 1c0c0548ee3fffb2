// Beam search bookkeeping with the semantics of transformers 4.30.2
// (generation/beam_search.py, BeamSearchScorer and BeamHypotheses): the finished hypotheses
// of one batch row, their scores, and when the row is done. generate() runs the decoder.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "blip/generate/config.hpp"

namespace blip {

// A finished sequence of beam search.
struct BeamHypothesis {
    // Summed log-probabilities of the generated tokens divided by length^length_penalty, where
    // the length counts every token before the end of sequence ([DEC] and prompt included).
    double score = 0;
    std::vector<std::int32_t> ids;  // [DEC], prompt and generated tokens, without the [SEP]
    bool ended = false;             // ended with [SEP] (false: cut at max_length)
};

// The num_beams best finished hypotheses of one batch row (transformers' BeamHypotheses).
class BeamHypotheses {
public:
    BeamHypotheses(std::int64_t num_beams, double length_penalty, EarlyStopping early_stopping,
                   std::int64_t max_length)
        : num_beams_(num_beams),
          length_penalty_(length_penalty),
          early_stopping_(early_stopping),
          max_length_(max_length) {
        beams_.reserve(static_cast<std::size_t>(num_beams + 1));
    }

    std::size_t size() const { return beams_.size(); }
    const std::vector<BeamHypothesis>& hypotheses() const { return beams_; }

    // Offers `ids` (the sequence before the end token, or the whole sequence when cut at
    // max_length) with summed log-probability `sum_logprobs`. Kept when fewer than num_beams
    // hypotheses are kept or it beats the worst; then the worst is dropped.
    void add(const std::vector<std::int32_t>& ids, double sum_logprobs, bool ended) {
        const double score = sum_logprobs / std::pow(static_cast<double>(ids.size()), length_penalty_);
        if (static_cast<std::int64_t>(beams_.size()) >= num_beams_ && !(score > worst_score_)) return;
        beams_.push_back({score, ids, ended});
        if (static_cast<std::int64_t>(beams_.size()) > num_beams_) {
            // Drop the lowest score (the earliest added on ties, as Python sorts (score, index)
            // pairs); the worst score becomes the second lowest.
            std::size_t lowest = 0;
            for (std::size_t i = 1; i < beams_.size(); ++i)
                if (beams_[i].score < beams_[lowest].score) lowest = i;
            beams_.erase(beams_.begin() + static_cast<std::ptrdiff_t>(lowest));
            worst_score_ = beams_[0].score;
            for (const BeamHypothesis& beam : beams_) worst_score_ = std::min(worst_score_, beam.score);
        } else {
            worst_score_ = std::min(score, worst_score_);
        }
    }

    // Whether no hypothesis still open can beat the kept ones. `best_sum_logprobs` is the
    // best candidate score of the current step and `length` the length the sequences will
    // have after it.
    bool is_done(double best_sum_logprobs, std::int64_t length) const {
        if (static_cast<std::int64_t>(beams_.size()) < num_beams_) return false;
        switch (early_stopping_) {
            case EarlyStopping::WhenBeamsEnd: return true;
            case EarlyStopping::Heuristic:
                return worst_score_ >= best_sum_logprobs / std::pow(static_cast<double>(length), length_penalty_);
            case EarlyStopping::Never: {
                const std::int64_t best_length = length_penalty_ > 0 ? max_length_ : length;
                return worst_score_ >=
                       best_sum_logprobs / std::pow(static_cast<double>(best_length), length_penalty_);
            }
        }
        return false;
    }

    // The `count` best hypotheses, best first; on equal scores the one added later comes
    // first, as transformers pops them from a stable ascending sort.
    std::vector<BeamHypothesis> best(std::int64_t count) const {
        std::vector<BeamHypothesis> sorted = beams_;
        std::stable_sort(sorted.begin(), sorted.end(),
                         [](const BeamHypothesis& a, const BeamHypothesis& b) { return a.score < b.score; });
        std::reverse(sorted.begin(), sorted.end());
        sorted.resize(static_cast<std::size_t>(std::min<std::int64_t>(count, static_cast<std::int64_t>(sorted.size()))));
        return sorted;
    }

private:
    std::int64_t num_beams_;
    double length_penalty_;
    EarlyStopping early_stopping_;
    std::int64_t max_length_;
    std::vector<BeamHypothesis> beams_;
    double worst_score_ = 1e9;  // transformers' starting value
};

// A candidate continuation of one batch row: beam `beam` extended by `token`, with the
// beam's score plus the token's processed log-probability.
struct BeamCandidate {
    float score = 0;
    std::int64_t beam = 0;
    std::int32_t token = 0;
};

// The `capacity` best candidates seen so far, best first: higher score first, then lower
// (beam, token) position, which is the order of torch.topk over [beams * vocab] scores
// when values tie. Allocated once; offer() allocates nothing.
class TopCandidates {
public:
    explicit TopCandidates(std::int64_t capacity) : capacity_(static_cast<std::size_t>(capacity)) {
        items_.reserve(capacity_ + 1);
    }

    void clear() { items_.clear(); }

    // Offers candidates in increasing (beam, token) order, so an equal score never displaces
    // an earlier one.
    void offer(float score, std::int64_t beam, std::int32_t token) {
        if (items_.size() == capacity_ && !(score > items_.back().score)) return;
        std::size_t at = items_.size();
        while (at > 0 && score > items_[at - 1].score) --at;
        items_.insert(items_.begin() + static_cast<std::ptrdiff_t>(at), BeamCandidate{score, beam, token});
        if (items_.size() > capacity_) items_.pop_back();
    }

    const std::vector<BeamCandidate>& items() const { return items_; }

private:
    std::size_t capacity_;
    std::vector<BeamCandidate> items_;
};

}  // namespace blip
