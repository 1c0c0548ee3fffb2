// Key/value caches of the text transformer. Self-attention keys and values grow by one
// position per decoded token and belong to one row (a batch row or a beam). Cross-attention
// keys and values are computed once per encoder sequence (an image) and shared by rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/large_buffer.hpp"

namespace blip {

// Self-attention keys and values of every layer for `rows` sequences, each with room for
// `capacity` positions of `width` floats, and an additive mask value per cached position.
// All memory, including the spare copy that reorder() fills, is allocated up front.
class KVCache {
public:
    KVCache() = default;
    KVCache(std::int64_t layers, std::int64_t rows, std::int64_t capacity, std::int64_t width)
        : layers_(layers), rows_(rows), capacity_(capacity), width_(width) {
        if (layers < 0 || rows < 0 || capacity < 0 || width < 0)
            throw Error("KVCache: negative size (layers " + std::to_string(layers) + ", rows " + std::to_string(rows) +
                        ", capacity " + std::to_string(capacity) + ", width " + std::to_string(width) + ")");
        const auto floats = static_cast<std::size_t>(layers * rows * capacity * width);
        keys_.resize(floats);
        values_.resize(floats);
        spare_keys_.resize(floats);
        spare_values_.resize(floats);
        key_bias_.resize(static_cast<std::size_t>(rows * capacity));
        spare_key_bias_.resize(key_bias_.size());
        lengths_.assign(static_cast<std::size_t>(rows), 0);
        spare_lengths_.resize(lengths_.size());
    }

    std::int64_t layers() const { return layers_; }
    std::int64_t rows() const { return rows_; }
    std::int64_t capacity() const { return capacity_; }
    std::int64_t width() const { return width_; }

    // Number of positions cached for `row`.
    std::int64_t length(std::int64_t row) const { return lengths_[check_row(row)]; }
    void set_length(std::int64_t row, std::int64_t length) {
        if (length < 0 || length > capacity_)
            throw Error("KVCache: length " + std::to_string(length) + " is outside 0.." + std::to_string(capacity_));
        lengths_[check_row(row)] = length;
    }
    // Forgets every cached position.
    void clear() { std::fill(lengths_.begin(), lengths_.end(), 0); }

    // Keys and values of `row` in `layer`: [capacity, width], position-major.
    float* keys(std::int64_t layer, std::int64_t row) { return keys_.data() + offset(layer, row); }
    const float* keys(std::int64_t layer, std::int64_t row) const { return keys_.data() + offset(layer, row); }
    float* values(std::int64_t layer, std::int64_t row) { return values_.data() + offset(layer, row); }
    const float* values(std::int64_t layer, std::int64_t row) const { return values_.data() + offset(layer, row); }

    // Additive attention mask of `row`'s positions: 0 to attend, -10000 for padding (the
    // value transformers adds for a 0 in attention_mask).
    float* key_bias(std::int64_t row) { return key_bias_.data() + check_row(row) * capacity_; }
    const float* key_bias(std::int64_t row) const { return key_bias_.data() + check_row(row) * capacity_; }

    // Makes row r a copy of row parent_rows[r] for every r < parent_rows.size(), as beam search
    // keeps the caches of the surviving beams; a parent of -1 leaves row r empty (length 0).
    // Rows from parent_rows.size() on become empty too, so passing fewer parents than rows
    // packs the rows still in use at the front. Only cached positions are copied; nothing is
    // allocated.
    void reorder(const std::vector<int>& parent_rows) {
        if (static_cast<std::int64_t>(parent_rows.size()) > rows_)
            throw Error("KVCache::reorder: " + std::to_string(parent_rows.size()) + " parent rows given for " +
                        std::to_string(rows_) + " rows");
        for (int parent : parent_rows)
            if (parent != -1) check_row(parent);
        std::fill(spare_lengths_.begin(), spare_lengths_.end(), 0);
        for (std::size_t index = 0; index < parent_rows.size(); ++index) {
            const auto row = static_cast<std::int64_t>(index);
            const std::int64_t parent = parent_rows[index];
            if (parent < 0) continue;
            const std::int64_t length = lengths_[static_cast<std::size_t>(parent)];
            spare_lengths_[index] = length;
            std::copy_n(key_bias_.data() + parent * capacity_, length, spare_key_bias_.data() + row * capacity_);
            for (std::int64_t layer = 0; layer < layers_; ++layer) {
                const std::size_t count = static_cast<std::size_t>(length * width_);
                std::copy_n(keys_.data() + offset(layer, parent), count, spare_keys_.data() + offset(layer, row));
                std::copy_n(values_.data() + offset(layer, parent), count, spare_values_.data() + offset(layer, row));
            }
        }
        keys_.swap(spare_keys_);
        values_.swap(spare_values_);
        key_bias_.swap(spare_key_bias_);
        lengths_.swap(spare_lengths_);
    }

private:
    std::size_t check_row(std::int64_t row) const {
        if (row < 0 || row >= rows_)
            throw Error("KVCache: row " + std::to_string(row) + " is outside 0.." + std::to_string(rows_ - 1));
        return static_cast<std::size_t>(row);
    }
    std::size_t offset(std::int64_t layer, std::int64_t row) const {
        return static_cast<std::size_t>((layer * rows_ + static_cast<std::int64_t>(check_row(row))) * capacity_ * width_);
    }

    std::int64_t layers_ = 0;
    std::int64_t rows_ = 0;
    std::int64_t capacity_ = 0;
    std::int64_t width_ = 0;
    std::vector<float> keys_, values_, key_bias_;
    std::vector<float> spare_keys_, spare_values_, spare_key_bias_;
    std::vector<std::int64_t> lengths_, spare_lengths_;
};

// Cross-attention keys and values of every layer for `sources` encoder sequences (images,
// or questions for the VQA answer decoder) of up to `tokens` tokens each, with an additive
// mask per token for sources shorter than `tokens`. They are stored as f32, or as bfloat16
// (half the memory, and half the bytes each decoding step reads).
class CrossAttentionCache {
public:
    CrossAttentionCache() = default;
    CrossAttentionCache(std::int64_t layers, std::int64_t sources, std::int64_t tokens, std::int64_t width,
                        bool bf16 = false)
        : layers_(layers), sources_(sources), tokens_(tokens), width_(width), bf16_(bf16) {
        if (layers < 0 || sources < 0 || tokens < 0 || width < 0)
            throw Error("CrossAttentionCache: negative size");
        // Left uninitialized, because set_encoder_hidden_states writes a source's keys and
        // values before anything reads them.
        const double values = static_cast<double>(layers) * sources * tokens * width;
        if (values > static_cast<double>(std::numeric_limits<std::int64_t>::max()) ||
            values > static_cast<double>(std::numeric_limits<std::size_t>::max()))
            throw Error("CrossAttentionCache: " + std::to_string(sources) + " sources of " + std::to_string(tokens) +
                        " tokens need more memory than this platform can address; pass fewer images at once");
        const auto count = static_cast<std::size_t>(layers * sources * tokens * width);
        if (bf16) {
            keys_bf16_ = LargeBuffer<std::uint16_t>(count);
            values_bf16_ = LargeBuffer<std::uint16_t>(count);
        } else {
            keys_ = LargeBuffer<float>(count);
            values_ = LargeBuffer<float>(count);
        }
        key_bias_.assign(static_cast<std::size_t>(sources * tokens), 0.0f);
        ready_.assign(static_cast<std::size_t>(sources), false);
    }

    bool empty() const { return sources_ == 0; }
    std::int64_t layers() const { return layers_; }
    std::int64_t sources() const { return sources_; }
    std::int64_t tokens() const { return tokens_; }
    std::int64_t width() const { return width_; }
    bool bf16() const { return bf16_; }

    // Keys and values of `source` in `layer`, head-major: [heads, tokens, head_dim] with
    // heads * head_dim = width. These are f32 (null when stored as bfloat16).
    float* keys(std::int64_t layer, std::int64_t source) { return f32_at(keys_, layer, source); }
    const float* keys(std::int64_t layer, std::int64_t source) const { return f32_at(keys_, layer, source); }
    float* values(std::int64_t layer, std::int64_t source) { return f32_at(values_, layer, source); }
    const float* values(std::int64_t layer, std::int64_t source) const { return f32_at(values_, layer, source); }
    // The same as bfloat16 (null when stored as f32).
    std::uint16_t* keys_bf16(std::int64_t layer, std::int64_t source) { return bf16_at(keys_bf16_, layer, source); }
    const std::uint16_t* keys_bf16(std::int64_t layer, std::int64_t source) const {
        return bf16_at(keys_bf16_, layer, source);
    }
    std::uint16_t* values_bf16(std::int64_t layer, std::int64_t source) {
        return bf16_at(values_bf16_, layer, source);
    }
    const std::uint16_t* values_bf16(std::int64_t layer, std::int64_t source) const {
        return bf16_at(values_bf16_, layer, source);
    }
    float* key_bias(std::int64_t source) { return key_bias_.data() + check_source(source) * tokens_; }
    const float* key_bias(std::int64_t source) const { return key_bias_.data() + check_source(source) * tokens_; }

    // Whether keys and values of `source` have been computed.
    bool ready(std::int64_t source) const { return ready_[check_source(source)]; }
    void set_ready(std::int64_t source) { ready_[check_source(source)] = true; }

private:
    std::size_t check_source(std::int64_t source) const {
        if (source < 0 || source >= sources_)
            throw Error("CrossAttentionCache: source " + std::to_string(source) + " is outside 0.." +
                        std::to_string(sources_ - 1));
        return static_cast<std::size_t>(source);
    }
    std::size_t offset(std::int64_t layer, std::int64_t source) const {
        return static_cast<std::size_t>(
            (layer * sources_ + static_cast<std::int64_t>(check_source(source))) * tokens_ * width_);
    }
    template <class Buffer>
    auto f32_at(Buffer& buffer, std::int64_t layer, std::int64_t source) const -> decltype(buffer.data()) {
        return bf16_ ? nullptr : buffer.data() + offset(layer, source);
    }
    template <class Buffer>
    auto bf16_at(Buffer& buffer, std::int64_t layer, std::int64_t source) const -> decltype(buffer.data()) {
        return bf16_ ? buffer.data() + offset(layer, source) : nullptr;
    }

    std::int64_t layers_ = 0;
    std::int64_t sources_ = 0;
    std::int64_t tokens_ = 0;
    std::int64_t width_ = 0;
    bool bf16_ = false;
    LargeBuffer<float> keys_, values_;
    LargeBuffer<std::uint16_t> keys_bf16_, values_bf16_;
    std::vector<float> key_bias_;
    std::vector<bool> ready_;
};

}  // namespace blip
