// The ViT image encoder of BLIP (transformers' BlipVisionModel): patch and position
// embeddings, pre-norm transformer layers and a final layer norm.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blip/core/error.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/kernels/attention.hpp"
#include "blip/model/config.hpp"
#include "blip/model/layers.hpp"

namespace blip {

// A float buffer whose data starts on a 64-byte boundary, so that the kernels' 64-byte loads of
// its rows do not cross cache lines where the row length allows (measured: about 3% on GEMMs).
class AlignedFloats {
public:
    void resize(std::size_t count) {
        data_ = kernels::detail::aligned_floats(storage_, count);
        size_ = count;
    }
    float* data() { return data_; }
    const float* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    std::vector<float> storage_;
    float* data_ = nullptr;
    std::size_t size_ = 0;
};

// Buffers of one vision forward pass, sized for `tokens` tokens.
struct VisionWorkspace {
    AlignedFloats normed;     // [tokens, hidden]
    AlignedFloats qkv;        // [tokens, 3 * hidden]
    AlignedFloats context;    // [tokens, hidden]
    AlignedFloats projected;  // [tokens, hidden]: products of non-f32 weights before the residual add
    AlignedFloats mlp;        // [tokens, intermediate]
    std::vector<float> scratch;  // attention scores

    VisionWorkspace(const VisionConfig& config, std::int64_t tokens) {
        const auto size = [](std::int64_t count) { return static_cast<std::size_t>(count); };
        normed.resize(size(tokens * config.hidden_size));
        qkv.resize(size(3 * tokens * config.hidden_size));
        context.resize(size(tokens * config.hidden_size));
        projected.resize(size(tokens * config.hidden_size));
        mlp.resize(size(tokens * config.intermediate_size));
        scratch.resize(size(kernels::attention_scratch_floats(tokens) * num_threads()));
    }
};

// Class token, patch embedding (a stride-P convolution, run as a GEMM over unfolded
// patches) and position embeddings.
struct BlipVisionEmbeddings {
    const float* class_embedding = nullptr;     // [hidden]
    const float* position_embedding = nullptr;  // [num_positions, hidden]
    Linear patch_embedding;                     // [hidden, channels * patch * patch]
    VisionConfig config;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        config = vision;
        const std::int64_t width = vision.hidden_size;
        const std::int64_t patch = vision.patch_size;
        class_embedding = detail::f32_tensor(file, prefix + ".class_embedding", {1, 1, width});
        position_embedding = detail::f32_tensor(file, prefix + ".position_embedding", {1, vision.num_positions(), width});
        // blip-convert writes the convolution kernel [hidden, channels, patch, patch] in f32
        // files, as transformers stores it, and the [hidden, channels * patch * patch] matrix,
        // whose rows fit the blocks, in other types. Both shapes load in any type, because
        // they hold the values in the same order.
        const std::int64_t patch_values = vision.num_channels * patch * patch;
        const gguf::TensorInfo* kernel = file.find_tensor(prefix + ".patch_embedding.weight");
        const bool stored_as_matrix = kernel != nullptr && kernel->shape.size() == 2;
        patch_embedding.load(file, prefix + ".patch_embedding", width, patch_values,
                             stored_as_matrix ? std::vector<std::int64_t>{width, patch_values}
                                              : std::vector<std::int64_t>{width, vision.num_channels, patch, patch});
    }

    // Embeds `pixels` ([channels, image_size, image_size], CHW) into `out` [num_positions, hidden].
    void forward(const float* pixels, float* out) const {
        const std::int64_t patch = config.patch_size;
        const std::int64_t grid = config.image_size / patch;
        const std::int64_t channels = config.num_channels;
        const std::int64_t patch_values = channels * patch * patch;
        const std::int64_t width = config.hidden_size;

        // Unfold: row (gy * grid + gx) contains the patch's values in (channel, y, x) order,
        // the order of the convolution kernel's elements.
        std::vector<float> patches(static_cast<std::size_t>(grid * grid * patch_values));
        for (std::int64_t gy = 0; gy < grid; ++gy)
            for (std::int64_t gx = 0; gx < grid; ++gx) {
                float* row = patches.data() + (gy * grid + gx) * patch_values;
                for (std::int64_t c = 0; c < channels; ++c)
                    for (std::int64_t y = 0; y < patch; ++y) {
                        const float* source = pixels + (c * config.image_size + gy * patch + y) * config.image_size +
                                              gx * patch;
                        std::copy(source, source + patch, row + (c * patch + y) * patch);
                    }
            }

        patch_embedding.forward(patches.data(), grid * grid, out + width);
        std::copy(class_embedding, class_embedding + width, out);
        detail::add_inplace(out, position_embedding, config.num_positions() * width);
    }
};

// Multi-head self-attention with a fused qkv projection (BlipAttention).
struct BlipAttention {
    Linear qkv;
    Linear projection;
    std::int64_t heads = 0;
    std::int64_t head_dim = 0;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        const std::int64_t width = vision.hidden_size;
        qkv.load(file, prefix + ".qkv", 3 * width, width);
        projection.load(file, prefix + ".projection", width, width);
        heads = vision.num_attention_heads;
        head_dim = vision.head_dim();
    }

    // Attends over all `tokens` rows of `x` and adds the projected result to `residual`.
    void add_forward(const float* x, std::int64_t tokens, float* residual, VisionWorkspace& work) const {
        const std::int64_t width = heads * head_dim;
        qkv.forward(x, tokens, work.qkv.data());
        // Each qkv row is [query | key | value], each split into heads.
        kernels::AttentionArgs args;
        args.query = work.qkv.data();
        args.key = work.qkv.data() + width;
        args.value = work.qkv.data() + 2 * width;
        args.query_rows = tokens;
        args.key_rows = tokens;
        args.query_stride = args.key_stride = args.value_stride = 3 * width;
        args.heads = heads;
        args.head_dim = head_dim;
        args.scaling = kernels::ScoreScaling::MultiplyByInverseSqrt;
        args.output = work.context.data();
        args.output_stride = width;
        kernels::attention(args, work.scratch.data(), static_cast<std::int64_t>(work.scratch.size()));
        projection.forward_add(work.context.data(), tokens, residual, work.projected.data());
    }
};

// fc1, exact GELU, fc2 (BlipMLP).
struct BlipMLP {
    Linear fc1;
    Linear fc2;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        fc1.load(file, prefix + ".fc1", vision.intermediate_size, vision.hidden_size);
        fc2.load(file, prefix + ".fc2", vision.hidden_size, vision.intermediate_size);
    }

    // Adds fc2(GELU(fc1(x))) to `residual`.
    void add_forward(const float* x, std::int64_t tokens, float* residual, VisionWorkspace& work) const {
        fc1.forward_gelu(x, tokens, work.mlp.data());
        fc2.forward_add(work.mlp.data(), tokens, residual, work.projected.data());
    }
};

// Pre-norm transformer layer: x + attention(norm1(x)), then x + mlp(norm2(x)).
struct BlipEncoderLayer {
    LayerNorm layer_norm1;
    BlipAttention self_attn;
    LayerNorm layer_norm2;
    BlipMLP mlp;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        layer_norm1.load(file, prefix + ".layer_norm1", vision.hidden_size, vision.layer_norm_eps);
        self_attn.load(file, prefix + ".self_attn", vision);
        layer_norm2.load(file, prefix + ".layer_norm2", vision.hidden_size, vision.layer_norm_eps);
        mlp.load(file, prefix + ".mlp", vision);
    }

    // Updates `hidden` [tokens, hidden_size] in place.
    void forward(float* hidden, std::int64_t tokens, VisionWorkspace& work) const {
        layer_norm1.forward(hidden, tokens, work.normed.data());
        self_attn.add_forward(work.normed.data(), tokens, hidden, work);
        layer_norm2.forward(hidden, tokens, work.normed.data());
        mlp.add_forward(work.normed.data(), tokens, hidden, work);
    }
};

// The stack of BlipEncoderLayer (BlipEncoder).
struct BlipEncoder {
    std::vector<BlipEncoderLayer> layers;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        layers.resize(static_cast<std::size_t>(vision.num_hidden_layers));
        for (std::size_t i = 0; i < layers.size(); ++i) layers[i].load(file, prefix + ".layers." + std::to_string(i), vision);
    }

    void forward(float* hidden, std::int64_t tokens, VisionWorkspace& work) const {
        for (const auto& layer : layers) layer.forward(hidden, tokens, work);
    }
};

// The image encoder. Its output, last_hidden_state after post_layernorm, is what BLIP's
// text models cross-attend to (`image_embeds` in transformers).
struct BlipVisionModel {
    BlipVisionEmbeddings embeddings;
    BlipEncoder encoder;
    LayerNorm post_layernorm;
    VisionConfig config;

    void load(const gguf::File& file, const std::string& prefix, const VisionConfig& vision) {
        config = vision;
        embeddings.load(file, prefix + ".embeddings", vision);
        encoder.load(file, prefix + ".encoder", vision);
        post_layernorm.load(file, prefix + ".post_layernorm", vision.hidden_size, vision.layer_norm_eps);
    }

    // Number of floats of a pixel_values input: channels * image_size * image_size.
    std::int64_t input_size() const { return config.num_channels * config.image_size * config.image_size; }
    // Number of output rows: the class token and one per patch.
    std::int64_t num_tokens() const { return config.num_positions(); }

    // Encodes one preprocessed image, pixel_values [channels, image_size, image_size] (CHW),
    // into image_embeds [num_tokens(), hidden_size], row-major.
    std::vector<float> forward(const float* pixel_values, std::size_t count) const {
        if (count != static_cast<std::size_t>(input_size()))
            throw Error("vision model: pixel_values has " + std::to_string(count) + " values, expected " +
                        std::to_string(config.num_channels) + " x " + std::to_string(config.image_size) + " x " +
                        std::to_string(config.image_size) + " = " + std::to_string(input_size()) +
                        " (one preprocessed CHW image)");
        const std::int64_t tokens = num_tokens();
        std::vector<float> hidden(static_cast<std::size_t>(tokens * config.hidden_size));
        embeddings.forward(pixel_values, hidden.data());
        VisionWorkspace work(config, tokens);
        encoder.forward(hidden.data(), tokens, work);
        post_layernorm.forward(hidden.data(), tokens, hidden.data());
        return hidden;
    }

    std::vector<float> forward(const std::vector<float>& pixel_values) const {
        return forward(pixel_values.data(), pixel_values.size());
    }

    // Returns pooler_output: transformers 4.30.2 applies post_layernorm once more to the
    // class token row of image_embeds, which is already normalized.
    std::vector<float> pooled(const std::vector<float>& image_embeds) const {
        const std::int64_t width = config.hidden_size;
        if (image_embeds.size() < static_cast<std::size_t>(width))
            throw Error("vision model: image_embeds has " + std::to_string(image_embeds.size()) +
                        " values, fewer than one row of " + std::to_string(width));
        std::vector<float> out(static_cast<std::size_t>(width));
        post_layernorm.forward(image_embeds.data(), 1, out.data());
        return out;
    }
};

}  // namespace blip
