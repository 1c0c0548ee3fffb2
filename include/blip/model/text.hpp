// The BERT-style text transformer of BLIP (transformers' BlipTextModel and
// BlipTextLMHeadModel). One model tree serves the three ways BLIP uses it:
// - causal decoder with a self-attention KV cache and cross-attention to image embeddings
//   (captioning, the VQA answer decoder): AttentionMode::Causal;
// - bidirectional image-grounded encoder with cross-attention and a padding mask (ITM, the
//   VQA question encoder): AttentionMode::Bidirectional with cross-attention sources;
// - unimodal text encoder (ITC): AttentionMode::Bidirectional without sources.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/core/large_buffer.hpp"
#include "blip/core/parallel.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/kernels/attention.hpp"
#include "blip/kernels/gelu.hpp"
#include "blip/model/config.hpp"
#include "blip/model/kv_cache.hpp"
#include "blip/model/layers.hpp"

namespace blip {

// Whether a token attends to later tokens of its sequence: decoders are causal, the
// encoders bidirectional (transformers' `is_decoder` argument).
enum class AttentionMode { Causal, Bidirectional };

// Additive mask value for a padding key in self-attention, as transformers'
// get_extended_attention_mask computes it: (1 - mask) * -10000.
inline constexpr float kPaddingBias = -10000.0f;

// Element type of the cross-attention keys and values that a DecoderState keeps.
enum class CrossCacheType {
    // bfloat16 when the first layer's cross-attention key or value weight is bf16 or quantized
    // (8 to 4 bits), whose rounding is coarser already. f32 when both are f32, whose outputs
    // then match transformers, or f16, which is chosen for precision.
    Auto,
    F32,
    Bf16,
};

// Sizes of a DecoderState.
struct DecoderStateSize {
    std::int64_t rows = 1;             // sequences decoded together (batch rows or beams)
    std::int64_t capacity = 0;         // positions each row can cache
    std::int64_t max_step_tokens = 1;  // maximum tokens per row in one forward call (the prompt)
    std::int64_t sources = 0;          // encoder sequences cross-attention reads; 0: none
    std::int64_t source_tokens = 0;    // tokens of the longest source
    CrossCacheType cross_cache_type = CrossCacheType::Auto;
};

// Buffers of the text model's forward pass, allocated once per DecoderState so that the
// decoding loop allocates nothing.
struct TextWorkspace {
    std::vector<float> hidden;        // [tokens, hidden]: the hidden states of the new tokens
    std::vector<float> query;         // [tokens, hidden]
    std::vector<float> key;           // [tokens, hidden]
    std::vector<float> value;         // [tokens, hidden]
    std::vector<float> context;       // [tokens, hidden]: attention output before projection
    std::vector<float> projected;     // [tokens, hidden]
    std::vector<float> intermediate;  // [tokens, intermediate]
    std::vector<float> last_hidden;   // [rows, hidden]: each row's last new token
    std::vector<float> transformed;   // [rows, hidden]: after the LM head's transform
    std::vector<float> logits;        // [rows, vocab]
    std::vector<float> scratch;       // attention scores, one tile per worker
    // First row of each group of consecutive rows that read the same cross-attention
    // source, then the row count: [groups + 1], at most rows + 1 entries.
    std::vector<std::int64_t> source_group_first;
};

// Everything that changes while a set of rows is decoded: the caches, the cross-attention
// source each row reads, and the buffers. Made by BlipTextModel::new_state. A forward call
// runs the active rows, rows [0, rows()), and leaves the caches of the others untouched. So
// a caller can drop finished rows (reorder) or run a subset of rows (set_active_rows).
class DecoderState {
public:
    KVCache self_cache;
    CrossAttentionCache cross_cache;
    std::vector<std::int64_t> row_source;  // cross-attention source of each row; all 0 at first
    TextWorkspace work;
    std::int64_t max_step_tokens = 1;

    // Rows the next forward call runs.
    std::int64_t rows() const { return active_rows_; }
    // Rows the state has room for.
    std::int64_t max_rows() const { return self_cache.rows(); }

    // Runs only rows [0, rows) in the next forward calls; the caches of all rows stay as they
    // are.
    void set_active_rows(std::int64_t rows) {
        if (rows < 1 || rows > max_rows())
            throw Error("DecoderState: " + std::to_string(rows) + " active rows requested, but the state has rows " +
                        "1.." + std::to_string(max_rows()));
        active_rows_ = rows;
    }

    // Makes row r continue the sequence of row parent_rows[r], as beam search does: copies
    // the self-attention cache and the source index. A parent of -1 leaves row r empty.
    // Afterwards parent_rows.size() rows are active and the rows after them are empty.
    // Cross-attention keys stay shared.
    void reorder(const std::vector<int>& parent_rows) {
        if (parent_rows.empty())
            throw Error("DecoderState::reorder: no parent rows given (at least one row must stay active)");
        self_cache.reorder(parent_rows);
        std::fill(spare_source_.begin(), spare_source_.end(), 0);
        for (std::size_t row = 0; row < parent_rows.size(); ++row)
            if (parent_rows[row] >= 0) spare_source_[row] = row_source[static_cast<std::size_t>(parent_rows[row])];
        row_source.swap(spare_source_);
        active_rows_ = static_cast<std::int64_t>(parent_rows.size());
    }

private:
    friend struct BlipTextModel;
    std::vector<std::int64_t> spare_source_;
    std::int64_t active_rows_ = 0;
};

// Word and position embeddings followed by LayerNorm (BlipTextEmbeddings). BLIP's text
// embeddings have no token type embeddings.
struct BlipTextEmbeddings {
    Embedding word_embeddings;
    const float* position_embeddings = nullptr;  // [max_position_embeddings, hidden]
    LayerNorm layer_norm;                        // "LayerNorm" in the checkpoint
    std::int64_t max_positions = 0;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        word_embeddings.load(file, prefix + ".word_embeddings.weight", text.vocab_size, text.hidden_size);
        position_embeddings = detail::f32_tensor(file, prefix + ".position_embeddings.weight",
                                                 {text.max_position_embeddings, text.hidden_size});
        layer_norm.load(file, prefix + ".LayerNorm", text.hidden_size, text.layer_norm_eps);
        max_positions = text.max_position_embeddings;
    }

    // Writes word_embeddings[token] + position_embeddings[position] to `out`, unnormalized.
    // Both indices must already be checked.
    void embed(std::int32_t token, std::int64_t position, float* out) const {
        const std::int64_t width = word_embeddings.width;
        word_embeddings.lookup(token, out);
        detail::add_inplace(out, position_embeddings + position * width, width);
    }
};

// Query, key and value projections of one attention block (BlipTextSelfAttention). For
// cross-attention, key and value read states of width encoder_hidden_size.
struct BlipTextSelfAttention {
    Linear query;
    Linear key;
    Linear value;
    std::int64_t heads = 0;
    std::int64_t head_dim = 0;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text, bool is_cross_attention) {
        const std::int64_t width = text.hidden_size;
        const std::int64_t source_width = is_cross_attention ? text.encoder_hidden_size : width;
        query.load(file, prefix + ".query", width, width);
        key.load(file, prefix + ".key", width, source_width);
        value.load(file, prefix + ".value", width, source_width);
        heads = text.num_attention_heads;
        head_dim = text.head_dim();
    }
};

// Output projection, residual and LayerNorm after attention (BlipTextSelfOutput).
struct BlipTextSelfOutput {
    Linear dense;
    LayerNorm layer_norm;  // "LayerNorm" in the checkpoint

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        dense.load(file, prefix + ".dense", text.hidden_size, text.hidden_size);
        layer_norm.load(file, prefix + ".LayerNorm", text.hidden_size, text.layer_norm_eps);
    }

    // hidden = LayerNorm(dense(context) + hidden) for `tokens` rows; `buffer` has as many.
    void forward(const float* context, std::int64_t tokens, float* hidden, float* buffer) const {
        dense.forward(context, tokens, buffer);
        detail::add_inplace(buffer, hidden, tokens * dense.out_features);
        layer_norm.forward(buffer, tokens, hidden);
    }
};

// Self- or cross-attention block (BlipTextAttention): projections and output.
struct BlipTextAttention {
    BlipTextSelfAttention self;
    BlipTextSelfOutput output;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text, bool is_cross_attention) {
        self.load(file, prefix + ".self", text, is_cross_attention);
        output.load(file, prefix + ".output", text);
    }
};

// Dense layer and exact GELU (BlipTextIntermediate).
struct BlipTextIntermediate {
    Linear dense;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        dense.load(file, prefix + ".dense", text.intermediate_size, text.hidden_size);
    }

    void forward(const float* x, std::int64_t tokens, float* out) const {
        dense.forward(x, tokens, out);
        kernels::gelu_inplace(out, tokens * dense.out_features);
    }
};

// Dense layer back to the hidden size, residual and LayerNorm (BlipTextOutput).
struct BlipTextOutput {
    Linear dense;
    LayerNorm layer_norm;  // "LayerNorm" in the checkpoint

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        dense.load(file, prefix + ".dense", text.hidden_size, text.intermediate_size);
        layer_norm.load(file, prefix + ".LayerNorm", text.hidden_size, text.layer_norm_eps);
    }

    // hidden = LayerNorm(dense(intermediate) + hidden) for `tokens` rows.
    void forward(const float* intermediate, std::int64_t tokens, float* hidden, float* buffer) const {
        dense.forward(intermediate, tokens, buffer);
        detail::add_inplace(buffer, hidden, tokens * dense.out_features);
        layer_norm.forward(buffer, tokens, hidden);
    }
};

namespace detail {

// Runs `problems` attention problems, `args_of(problem)`, each with at most
// `max_query_rows` query rows (`query_rows` in all) and at most `max_keys` keys, in one
// parallel loop over problems, heads and query tiles.
template <class ArgsOf>
void attention_problems(std::int64_t problems, std::int64_t max_query_rows, std::int64_t query_rows,
                        std::int64_t heads, std::int64_t head_dim, std::int64_t max_keys, std::vector<float>& scratch,
                        ArgsOf&& args_of) {
    const std::int64_t per_worker = std::max<std::int64_t>(1, kernels::attention_scratch_floats(max_keys));
    const std::int64_t workers = static_cast<std::int64_t>(scratch.size()) / per_worker;
    if (workers < 1) throw Error("text model: attention scratch is too small for " + std::to_string(max_keys) + " keys");
    const std::int64_t work = heads * query_rows * max_keys * (2 * head_dim + 20);
    const std::int64_t tiles = tile_count(max_query_rows, kernels::kAttentionQueryTile);
    kernels::detail::keep_eigen_serial();
    parallel_for(
        problems * heads * tiles,
        [&](std::int64_t task, int worker) {
            const kernels::AttentionArgs args = args_of(task / (heads * tiles));
            const std::int64_t head = (task / tiles) % heads;
            const std::int64_t begin = (task % tiles) * kernels::kAttentionQueryTile;
            const std::int64_t end = std::min(args.query_rows, begin + kernels::kAttentionQueryTile);
            if (begin < end) kernels::attend(args, head, begin, end, scratch.data() + worker * per_worker);
        },
        static_cast<int>(std::min<std::int64_t>(workers, threads_for_work(work))));
}

// Runs one attention problem per row, `args_of(row)`, each with `step` query rows and at
// most `max_keys` keys.
template <class ArgsOf>
void attention_per_row(std::int64_t rows, std::int64_t step, std::int64_t heads, std::int64_t head_dim,
                       std::int64_t max_keys, std::vector<float>& scratch, ArgsOf&& args_of) {
    attention_problems(rows, step, rows * step, heads, head_dim, max_keys, scratch, std::forward<ArgsOf>(args_of));
}

}  // namespace detail

// One transformer layer (BlipTextLayer): self-attention, cross-attention when the state
// has sources, and the feed-forward block, each followed by residual and LayerNorm.
struct BlipTextLayer {
    BlipTextAttention attention;
    BlipTextAttention crossattention;
    BlipTextIntermediate intermediate;
    BlipTextOutput output;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        attention.load(file, prefix + ".attention", text, false);
        crossattention.load(file, prefix + ".crossattention", text, true);
        intermediate.load(file, prefix + ".intermediate", text);
        output.load(file, prefix + ".output", text);
        // Rows decoded or encoded together must each get the bits they get alone. The
        // cross-attention keys and values are computed for one source at a time, so they
        // keep the fastest product.
        for (Linear* linear : {&attention.self.query, &attention.self.key, &attention.self.value,
                               &attention.output.dense, &crossattention.self.query, &crossattention.output.dense,
                               &intermediate.dense, &output.dense})
            linear->row_order = kernels::RowOrder::BatchInvariant;
    }

    // Updates state.work.hidden, the `step` new tokens of every row, and stores their keys
    // and values in layer `index` of the cache after each row's cached positions.
    void forward(std::int64_t index, DecoderState& state, std::int64_t step, AttentionMode mode) const {
        const std::int64_t tokens = state.rows() * step;
        TextWorkspace& work = state.work;
        self_attention(index, state, step, mode);
        if (!state.cross_cache.empty()) cross_attention(index, state, step);
        intermediate.forward(work.hidden.data(), tokens, work.intermediate.data());
        output.forward(work.intermediate.data(), tokens, work.hidden.data(), work.projected.data());
    }

private:
    // Self-attention over each row's cached positions and its new ones, then
    // attention.output.
    void self_attention(std::int64_t index, DecoderState& state, std::int64_t step, AttentionMode mode) const {
        TextWorkspace& work = state.work;
        const std::int64_t rows = state.rows();
        const std::int64_t tokens = rows * step;
        const BlipTextSelfAttention& self = attention.self;
        const std::int64_t width = self.heads * self.head_dim;
        float* hidden = work.hidden.data();

        self.query.forward(hidden, tokens, work.query.data());
        self.key.forward(hidden, tokens, work.key.data());
        self.value.forward(hidden, tokens, work.value.data());
        KVCache& cache = state.self_cache;
        std::int64_t longest = 0;
        for (std::int64_t row = 0; row < rows; ++row) {
            const std::int64_t start = cache.length(row);
            longest = std::max(longest, start);
            const std::size_t count = static_cast<std::size_t>(step * width);
            std::copy_n(work.key.data() + row * step * width, count, cache.keys(index, row) + start * width);
            std::copy_n(work.value.data() + row * step * width, count, cache.values(index, row) + start * width);
        }

        const auto args_of = [&](std::int64_t row) {
            const std::int64_t start = cache.length(row);
            kernels::AttentionArgs args;
            args.query = work.query.data() + row * step * width;
            args.query_rows = step;
            args.query_stride = width;
            args.key = cache.keys(index, row);
            args.value = cache.values(index, row);
            args.key_rows = start + step;
            args.key_stride = args.value_stride = width;
            args.heads = self.heads;
            args.head_dim = self.head_dim;
            args.scaling = kernels::ScoreScaling::DivideBySqrt;
            args.key_bias = cache.key_bias(row);
            args.causal_offset = mode == AttentionMode::Causal ? start : -1;
            args.output = work.context.data() + row * step * width;
            args.output_stride = width;
            return args;
        };
        detail::attention_per_row(rows, step, self.heads, self.head_dim, longest + step, work.scratch, args_of);
        attention.output.forward(work.context.data(), tokens, hidden, work.projected.data());
    }

    // Cross-attention to each row's encoder sequence, whose keys and values are cached,
    // then crossattention.output.
    void cross_attention(std::int64_t index, DecoderState& state, std::int64_t step) const {
        TextWorkspace& work = state.work;
        const std::int64_t rows = state.rows();
        const std::int64_t tokens = rows * step;
        const BlipTextSelfAttention& self = crossattention.self;
        const std::int64_t width = self.heads * self.head_dim;
        const CrossAttentionCache& cross = state.cross_cache;

        self.query.forward(work.hidden.data(), tokens, work.query.data());

        // Consecutive rows that read the same source (the beams of one image) form one
        // problem, whose queries are contiguous because cross-attention has no causal mask.
        // The source's keys and values are then read once per step for all of them. Each
        // query row still gets the bits it gets alone (see kernels::attend).
        std::vector<std::int64_t>& first = work.source_group_first;
        std::int64_t groups = 0;
        std::int64_t largest = 0;
        for (std::int64_t row = 0; row < rows; ++row) {
            if (row > 0 && state.row_source[static_cast<std::size_t>(row)] ==
                               state.row_source[static_cast<std::size_t>(row - 1)])
                continue;
            first[static_cast<std::size_t>(groups)] = row;
            if (groups > 0) largest = std::max(largest, row - first[static_cast<std::size_t>(groups - 1)]);
            ++groups;
        }
        first[static_cast<std::size_t>(groups)] = rows;
        largest = std::max(largest, rows - first[static_cast<std::size_t>(groups - 1)]);

        const auto args_of = [&](std::int64_t group) {
            const std::int64_t row = first[static_cast<std::size_t>(group)];
            const std::int64_t source = state.row_source[static_cast<std::size_t>(row)];
            kernels::AttentionArgs args;
            args.query = work.query.data() + row * step * width;
            args.query_rows = (first[static_cast<std::size_t>(group + 1)] - row) * step;
            args.query_stride = width;
            args.key = cross.keys(index, source);
            args.value = cross.values(index, source);
            args.key_bf16 = cross.keys_bf16(index, source);
            args.value_bf16 = cross.values_bf16(index, source);
            args.key_rows = cross.tokens();
            args.key_stride = args.value_stride = self.head_dim;
            args.kv_head_stride = cross.tokens() * self.head_dim;
            args.heads = self.heads;
            args.head_dim = self.head_dim;
            args.scaling = kernels::ScoreScaling::DivideBySqrt;
            args.key_bias = cross.key_bias(source);
            args.output = work.context.data() + row * step * width;
            args.output_stride = width;
            return args;
        };
        detail::attention_problems(groups, largest * step, tokens, self.heads, self.head_dim, cross.tokens(),
                                   work.scratch, args_of);
        crossattention.output.forward(work.context.data(), tokens, work.hidden.data(), work.projected.data());
    }
};

// The stack of BlipTextLayer (BlipTextEncoder; "layer" in the checkpoint).
struct BlipTextEncoder {
    std::vector<BlipTextLayer> layer;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        layer.resize(static_cast<std::size_t>(text.num_hidden_layers));
        for (std::size_t i = 0; i < layer.size(); ++i) layer[i].load(file, prefix + ".layer." + std::to_string(i), text);
    }
};

// Embeddings and transformer layers (BlipTextModel without the pooler, which BLIP's
// captioning, VQA and ITM heads do not use).
struct BlipTextModel {
    BlipTextEmbeddings embeddings;
    BlipTextEncoder encoder;
    TextConfig config;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        config = text;
        embeddings.load(file, prefix + ".embeddings", text);
        encoder.load(file, prefix + ".encoder", text);
    }

    // Whether a DecoderState of `type` keeps its cross-attention keys and values as bfloat16.
    bool cross_cache_bf16(CrossCacheType type) const {
        if (type != CrossCacheType::Auto) return type == CrossCacheType::Bf16;
        if (encoder.layer.empty()) return false;
        const BlipTextSelfAttention& cross_self = encoder.layer.front().crossattention.self;
        if (cross_self.key.weight == nullptr || cross_self.value.weight == nullptr) return false;
        const auto precise = [](DType type) { return type == DType::F32 || type == DType::F16; };
        return !precise(cross_self.key.weight->type) || !precise(cross_self.value.weight->type);
    }

    // Allocates caches and buffers for decoding `size.rows` rows.
    DecoderState new_state(const DecoderStateSize& size) const {
        if (size.rows < 1 || size.capacity < 1 || size.max_step_tokens < 1 || size.max_step_tokens > size.capacity ||
            size.sources < 0 || (size.sources > 0 && size.source_tokens < 1))
            throw Error("text model: invalid decoder state size (rows " + std::to_string(size.rows) + ", capacity " +
                        std::to_string(size.capacity) + ", step tokens " + std::to_string(size.max_step_tokens) +
                        ", sources " + std::to_string(size.sources) + " of " + std::to_string(size.source_tokens) +
                        " tokens)");
        const std::int64_t width = config.hidden_size;
        const auto floats = [](std::int64_t count) { return static_cast<std::size_t>(count); };
        DecoderState state;
        state.self_cache = KVCache(config.num_hidden_layers, size.rows, size.capacity, width);
        if (size.sources > 0)
            state.cross_cache = CrossAttentionCache(config.num_hidden_layers, size.sources, size.source_tokens, width,
                                                    cross_cache_bf16(size.cross_cache_type));
        state.row_source.assign(floats(size.rows), 0);
        state.spare_source_.assign(floats(size.rows), 0);
        state.max_step_tokens = size.max_step_tokens;
        state.active_rows_ = size.rows;

        TextWorkspace& work = state.work;
        const std::int64_t tokens = size.rows * size.max_step_tokens;
        for (auto* buffer : {&work.hidden, &work.query, &work.key, &work.value, &work.context, &work.projected})
            buffer->resize(floats(tokens * width));
        work.intermediate.resize(floats(tokens * config.intermediate_size));
        work.last_hidden.resize(floats(size.rows * width));
        work.transformed.resize(floats(size.rows * width));
        work.logits.resize(floats(size.rows * config.vocab_size));
        work.source_group_first.resize(floats(size.rows + 1));
        const std::int64_t max_keys = std::max(size.capacity, size.source_tokens);
        work.scratch.resize(floats(kernels::attention_scratch_floats(max_keys) * num_threads()));
        return state;
    }

    // Computes the cross-attention keys and values of every layer for encoder sequence
    // `source`: `states` [tokens, encoder_hidden_size] (image embeddings, or question
    // states for the VQA answer decoder). `mask` (optional, one value per token, nonzero to
    // attend) hides padding.
    void set_encoder_hidden_states(DecoderState& state, std::int64_t source, const float* states,
                                   std::int64_t tokens, const std::uint8_t* mask = nullptr) const {
        CrossAttentionCache& cross = state.cross_cache;
        if (cross.empty()) throw Error("text model: this decoder state was made without cross-attention sources");
        if (tokens < 1 || tokens > cross.tokens())
            throw Error("text model: encoder sequence of " + std::to_string(tokens) + " tokens does not fit the " +
                        std::to_string(cross.tokens()) + " tokens the decoder state was made for");
        // Keys and values are stored head-major, so that each head reads one sequential stream.
        // With the rows of all heads interleaved, reading one head's 64 of every 768 values took
        // 15% longer per q8_0 base step (Intel Xeon, 2 threads).
        LargeBuffer<float> staging(static_cast<std::size_t>(tokens * cross.width()));
        for (std::size_t index = 0; index < encoder.layer.size(); ++index) {
            const auto layer = static_cast<std::int64_t>(index);
            const BlipTextSelfAttention& cross_self = encoder.layer[index].crossattention.self;
            // Projects the states with `projection` into the cache's f32 or bfloat16 storage,
            // whichever it has (the other pointer is null).
            const auto project = [&](const Linear& projection, float* as_f32, std::uint16_t* as_bf16) {
                projection.forward(states, tokens, staging.data());
                if (as_bf16 != nullptr)
                    detail::split_heads(staging.data(), tokens, cross_self.heads, cross_self.head_dim, cross.tokens(),
                                        as_bf16);
                else
                    detail::split_heads(staging.data(), tokens, cross_self.heads, cross_self.head_dim, cross.tokens(),
                                        as_f32);
            };
            project(cross_self.key, cross.keys(layer, source), cross.keys_bf16(layer, source));
            project(cross_self.value, cross.values(layer, source), cross.values_bf16(layer, source));
        }
        // transformers' invert_attention_mask adds the lowest float for masked tokens.
        const float masked = std::numeric_limits<float>::lowest();
        float* bias = cross.key_bias(source);
        for (std::int64_t token = 0; token < cross.tokens(); ++token)
            bias[token] = token < tokens && (mask == nullptr || mask[token] != 0) ? 0.0f : masked;
        cross.set_ready(source);
    }

    // Runs `step` new tokens of every row, input_ids [rows, step], through the model:
    // positions continue after each row's cached length, their keys and values are
    // appended to the cache, and state.work.hidden receives their hidden states
    // [rows * step, hidden]. `attention_mask` (optional, [rows, step], nonzero to attend)
    // marks padding tokens, which later tokens then ignore.
    void forward(DecoderState& state, const std::int32_t* input_ids, std::int64_t step, AttentionMode mode,
                 const std::uint8_t* attention_mask = nullptr) const {
        check_step(state, input_ids, step);
        const std::int64_t rows = state.rows();
        const std::int64_t width = config.hidden_size;
        KVCache& cache = state.self_cache;

        float* hidden = state.work.hidden.data();
        for (std::int64_t row = 0; row < rows; ++row) {
            const std::int64_t start = cache.length(row);
            float* bias = cache.key_bias(row);
            for (std::int64_t t = 0; t < step; ++t) {
                const std::int64_t token = row * step + t;
                embeddings.embed(input_ids[token], start + t, hidden + token * width);
                bias[start + t] = attention_mask == nullptr || attention_mask[token] != 0 ? 0.0f : kPaddingBias;
            }
        }
        embeddings.layer_norm.forward(hidden, rows * step, hidden);

        for (std::size_t index = 0; index < encoder.layer.size(); ++index)
            encoder.layer[index].forward(static_cast<std::int64_t>(index), state, step, mode);
        for (std::int64_t row = 0; row < rows; ++row) cache.set_length(row, cache.length(row) + step);
    }

    // Encodes whole sequences bidirectionally, as the ITM and VQA question encoders and the
    // unimodal ITC encoder do: input_ids and attention_mask [rows, tokens]; `sources`
    // [rows, source_tokens, encoder_hidden_size] (null for no cross-attention) with
    // `source_mask` [rows, source_tokens] (optional). Returns last_hidden_state [rows,
    // tokens, hidden].
    std::vector<float> encode(const std::vector<std::int32_t>& input_ids, const std::vector<std::uint8_t>& attention_mask,
                              std::int64_t rows, const float* sources = nullptr, std::int64_t source_tokens = 0,
                              const std::uint8_t* source_mask = nullptr) const {
        if (rows < 1 || input_ids.empty() || input_ids.size() % static_cast<std::size_t>(rows) != 0)
            throw Error("text model: " + std::to_string(input_ids.size()) + " input ids do not form " +
                        std::to_string(rows) + " rows of equal length");
        const auto tokens = static_cast<std::int64_t>(input_ids.size()) / rows;
        if (!attention_mask.empty() && attention_mask.size() != input_ids.size())
            throw Error("text model: attention_mask has " + std::to_string(attention_mask.size()) +
                        " values for " + std::to_string(input_ids.size()) + " input ids");
        DecoderStateSize size;
        size.rows = rows;
        size.capacity = tokens;
        size.max_step_tokens = tokens;
        size.sources = sources ? rows : 0;
        size.source_tokens = sources ? source_tokens : 0;
        DecoderState state = new_state(size);
        for (std::int64_t row = 0; row < size.sources; ++row) {
            set_encoder_hidden_states(state, row, sources + row * source_tokens * config.encoder_hidden_size,
                                      source_tokens, source_mask ? source_mask + row * source_tokens : nullptr);
            state.row_source[static_cast<std::size_t>(row)] = row;
        }
        forward(state, input_ids.data(), tokens, AttentionMode::Bidirectional,
                attention_mask.empty() ? nullptr : attention_mask.data());
        state.work.hidden.resize(static_cast<std::size_t>(rows * tokens * config.hidden_size));
        return std::move(state.work.hidden);
    }

private:
    void check_step(const DecoderState& state, const std::int32_t* input_ids, std::int64_t step) const {
        if (state.self_cache.layers() != config.num_hidden_layers || state.self_cache.width() != config.hidden_size)
            throw Error("text model: the decoder state was made for another model");
        if (step < 1 || step > state.max_step_tokens)
            throw Error("text model: " + std::to_string(step) + " tokens per row in one step, but the decoder state " +
                        "was made for 1.." + std::to_string(state.max_step_tokens));
        const std::int64_t rows = state.rows();
        for (std::int64_t row = 0; row < rows; ++row) {
            const std::int64_t end = state.self_cache.length(row) + step;
            if (end > state.self_cache.capacity())
                throw Error("text model: row " + std::to_string(row) + " would hold " + std::to_string(end) +
                            " tokens, more than the decoder state's capacity " +
                            std::to_string(state.self_cache.capacity()));
            if (end > config.max_position_embeddings)
                throw Error("text model: row " + std::to_string(row) + " would reach position " +
                            std::to_string(end - 1) + ", past max_position_embeddings " +
                            std::to_string(config.max_position_embeddings) + " (use a smaller max_length)");
            if (!state.cross_cache.empty()) {
                const std::int64_t source = state.row_source[static_cast<std::size_t>(row)];
                if (source < 0 || source >= state.cross_cache.sources() || !state.cross_cache.ready(source))
                    throw Error("text model: row " + std::to_string(row) + " reads cross-attention source " +
                                std::to_string(source) + ", which has no encoder hidden states set");
            }
        }
        for (std::int64_t i = 0; i < rows * step; ++i)
            if (input_ids[i] < 0 || input_ids[i] >= config.vocab_size)
                throw Error("text model: token id " + std::to_string(input_ids[i]) + " is outside the vocabulary of " +
                            std::to_string(config.vocab_size));
    }
};

// Dense layer, exact GELU and LayerNorm before the vocabulary projection
// (BlipTextPredictionHeadTransform).
struct BlipTextPredictionHeadTransform {
    Linear dense;
    LayerNorm layer_norm;  // "LayerNorm" in the checkpoint

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        dense.load(file, prefix + ".dense", text.hidden_size, text.hidden_size);
        layer_norm.load(file, prefix + ".LayerNorm", text.hidden_size, text.layer_norm_eps);
    }

    void forward(const float* x, std::int64_t rows, float* out) const {
        dense.forward(x, rows, out);
        kernels::gelu_inplace(out, rows * dense.out_features);
        layer_norm.forward(out, rows, out);
    }
};

// Transform and vocabulary projection (BlipTextLMPredictionHead). The projection's weight
// is tied to the word embeddings and its bias is `prefix`.bias.
struct BlipTextLMPredictionHead {
    BlipTextPredictionHeadTransform transform;
    Linear decoder;

    // `word_embeddings` is the tied weight, used unless the file also stores
    // `prefix`.decoder.weight (which transformers keeps identical to it).
    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text,
              const gguf::TensorInfo& word_embeddings) {
        transform.load(file, prefix + ".transform", text);
        const gguf::TensorInfo* weight = file.find_tensor(prefix + ".decoder.weight");
        const std::string bias_name = file.find_tensor(prefix + ".bias") ? prefix + ".bias" : prefix + ".decoder.bias";
        const float* bias = detail::f32_tensor(file, bias_name, {text.vocab_size});
        decoder.load_tied(file, weight ? *weight : word_embeddings, bias, text.vocab_size, text.hidden_size);
        transform.dense.row_order = kernels::RowOrder::BatchInvariant;
        decoder.row_order = kernels::RowOrder::BatchInvariant;
    }

    // logits[rows, vocab] from hidden[rows, hidden]; `transformed` has rows * hidden floats.
    void forward(const float* hidden, std::int64_t rows, float* transformed, float* logits) const {
        transform.forward(hidden, rows, transformed);
        decoder.forward(transformed, rows, logits);
    }
};

// BlipTextOnlyMLMHead: a wrapper around the prediction head ("cls.predictions").
struct BlipTextOnlyMLMHead {
    BlipTextLMPredictionHead predictions;
};

// The causal language model (BlipTextLMHeadModel): BlipTextModel ("bert") and the LM head
// ("cls"). BLIP uses it to decode captions and VQA answers.
struct BlipTextLMHeadModel {
    BlipTextModel bert;
    BlipTextOnlyMLMHead cls;

    void load(const gguf::File& file, const std::string& prefix, const TextConfig& text) {
        bert.load(file, prefix + ".bert", text);
        cls.predictions.load(file, prefix + ".cls.predictions", text, *bert.embeddings.word_embeddings.table);
    }

    const TextConfig& config() const { return bert.config; }

    DecoderState new_state(const DecoderStateSize& size) const { return bert.new_state(size); }

    // Runs `step` new tokens of every row causally (see BlipTextModel::forward) and returns
    // the logits of each row's last new token, [rows, vocab] in state.work.logits, which
    // the caller may modify (logits processors do).
    float* decode(DecoderState& state, const std::int32_t* input_ids, std::int64_t step,
                  const std::uint8_t* attention_mask = nullptr) const {
        bert.forward(state, input_ids, step, AttentionMode::Causal, attention_mask);
        TextWorkspace& work = state.work;
        const std::int64_t width = bert.config.hidden_size;
        for (std::int64_t row = 0; row < state.rows(); ++row)
            std::copy_n(work.hidden.data() + (row * step + step - 1) * width, width,
                        work.last_hidden.data() + row * width);
        cls.predictions.forward(work.last_hidden.data(), state.rows(), work.transformed.data(), work.logits.data());
        return work.logits.data();
    }

    // Same, but returns the logits of every new token, [rows * step, vocab] (allocates).
    std::vector<float> decode_all(DecoderState& state, const std::int32_t* input_ids, std::int64_t step,
                                  const std::uint8_t* attention_mask = nullptr) const {
        bert.forward(state, input_ids, step, AttentionMode::Causal, attention_mask);
        const std::int64_t tokens = state.rows() * step;
        std::vector<float> transformed(static_cast<std::size_t>(tokens * bert.config.hidden_size));
        std::vector<float> logits(static_cast<std::size_t>(tokens * bert.config.vocab_size));
        cls.predictions.forward(state.work.hidden.data(), tokens, transformed.data(), logits.data());
        return logits;
    }
};

}  // namespace blip
