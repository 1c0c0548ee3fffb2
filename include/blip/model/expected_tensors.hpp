// The tensors a BLIP model of each task contains, with their shapes, under the names
// that Hugging Face transformers (4.30.2) gives them. blip-convert checks checkpoints
// against this list and the model loader reads a GGUF file by it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/model/config.hpp"

namespace blip {

// How a tensor is used, which decides the element types a converter may store it in.
enum class TensorRole {
    LinearWeight,    // [out, in] weight of a Linear layer
    // [out, channels, height, width] kernel of a convolution whose stride equals its size
    // (the patch embedding), which runs as a Linear layer over unfolded patches
    ConvolutionWeight,
    TokenEmbedding,  // word embeddings, which the decoder also uses as its output projection
    Other,           // biases, norms, position and class embeddings
};

// One tensor of a model: its Hugging Face name, row-major shape (outermost first) and role.
struct ExpectedTensor {
    std::string name;
    std::vector<std::int64_t> shape;
    TensorRole role = TensorRole::Other;
};

// Returns the number of values in one output row of a weight: the product of every
// extent but the first (in_features of a Linear weight, channels x height x width of a
// convolution kernel).
inline std::int64_t weight_row_length(const ExpectedTensor& tensor) {
    if (tensor.shape.size() < 2) return tensor.shape.empty() ? 1 : tensor.shape.back();
    std::int64_t length = 1;
    for (std::size_t i = 1; i < tensor.shape.size(); ++i) length *= tensor.shape[i];
    return length;
}

// Returns the shape under which a model file stores `tensor` as `type`. A convolution
// kernel keeps its 4-D shape in f32, as transformers stores it. In other types it is stored
// as the [out, channels x height x width] matrix of its product, because ggml's blocks run
// along the innermost extent and the kernel's width (the patch size, 16) is shorter than a
// block. Both shapes hold the values in the same order.
inline std::vector<std::int64_t> stored_shape(const ExpectedTensor& tensor, DType type) {
    if (tensor.role != TensorRole::ConvolutionWeight || type == DType::F32) return tensor.shape;
    return {tensor.shape.front(), weight_row_length(tensor)};
}

// Two checkpoint names of one tied parameter. Model files store it once, under `name`;
// a checkpoint may hold it under `name`, under `alias`, or under both.
struct TiedTensor {
    std::string name;
    std::string alias;
};

namespace detail {

inline void add_tensor(std::vector<ExpectedTensor>& out, std::string name, std::vector<std::int64_t> shape,
                       TensorRole role = TensorRole::Other) {
    out.push_back({std::move(name), std::move(shape), role});
}

// A Linear layer `prefix` + "weight" of shape [out, in] and its bias [out].
inline void add_linear(std::vector<ExpectedTensor>& out, const std::string& prefix, std::int64_t out_features,
                       std::int64_t in_features) {
    add_tensor(out, prefix + "weight", {out_features, in_features}, TensorRole::LinearWeight);
    add_tensor(out, prefix + "bias", {out_features});
}

// A LayerNorm `prefix` + "weight" and "bias" of `width`.
inline void add_layer_norm(std::vector<ExpectedTensor>& out, const std::string& prefix, std::int64_t width) {
    add_tensor(out, prefix + "weight", {width});
    add_tensor(out, prefix + "bias", {width});
}

}  // namespace detail

// Appends the ViT image encoder (BlipVisionModel) under "vision_model.".
inline void append_vision_tensors(const VisionConfig& vision, std::vector<ExpectedTensor>& out) {
    using detail::add_layer_norm;
    using detail::add_linear;
    using detail::add_tensor;
    const std::int64_t width = vision.hidden_size;
    add_tensor(out, "vision_model.embeddings.class_embedding", {1, 1, width});
    add_tensor(out, "vision_model.embeddings.patch_embedding.weight",
               {width, vision.num_channels, vision.patch_size, vision.patch_size}, TensorRole::ConvolutionWeight);
    add_tensor(out, "vision_model.embeddings.patch_embedding.bias", {width});
    add_tensor(out, "vision_model.embeddings.position_embedding", {1, vision.num_positions(), width});
    for (std::int64_t layer = 0; layer < vision.num_hidden_layers; ++layer) {
        const std::string prefix = "vision_model.encoder.layers." + std::to_string(layer) + ".";
        add_linear(out, prefix + "self_attn.qkv.", 3 * width, width);
        add_linear(out, prefix + "self_attn.projection.", width, width);
        add_layer_norm(out, prefix + "layer_norm1.", width);
        add_linear(out, prefix + "mlp.fc1.", vision.intermediate_size, width);
        add_linear(out, prefix + "mlp.fc2.", width, vision.intermediate_size);
        add_layer_norm(out, prefix + "layer_norm2.", width);
    }
    add_layer_norm(out, "vision_model.post_layernorm.", width);
}

// Appends a BERT-style text transformer (BlipTextModel without pooler) under `prefix`,
// for example "text_encoder." or "text_decoder.bert.". Every layer has cross-attention,
// whose keys and values read states of width encoder_hidden_size.
inline void append_text_tensors(const TextConfig& text, const std::string& prefix, std::vector<ExpectedTensor>& out) {
    using detail::add_layer_norm;
    using detail::add_linear;
    using detail::add_tensor;
    const std::int64_t width = text.hidden_size;
    add_tensor(out, prefix + "embeddings.word_embeddings.weight", {text.vocab_size, width}, TensorRole::TokenEmbedding);
    add_tensor(out, prefix + "embeddings.position_embeddings.weight", {text.max_position_embeddings, width});
    add_layer_norm(out, prefix + "embeddings.LayerNorm.", width);
    for (std::int64_t layer = 0; layer < text.num_hidden_layers; ++layer) {
        const std::string layer_prefix = prefix + "encoder.layer." + std::to_string(layer) + ".";
        add_linear(out, layer_prefix + "attention.self.query.", width, width);
        add_linear(out, layer_prefix + "attention.self.key.", width, width);
        add_linear(out, layer_prefix + "attention.self.value.", width, width);
        add_linear(out, layer_prefix + "attention.output.dense.", width, width);
        add_layer_norm(out, layer_prefix + "attention.output.LayerNorm.", width);
        add_linear(out, layer_prefix + "crossattention.self.query.", width, width);
        add_linear(out, layer_prefix + "crossattention.self.key.", width, text.encoder_hidden_size);
        add_linear(out, layer_prefix + "crossattention.self.value.", width, text.encoder_hidden_size);
        add_linear(out, layer_prefix + "crossattention.output.dense.", width, width);
        add_layer_norm(out, layer_prefix + "crossattention.output.LayerNorm.", width);
        add_linear(out, layer_prefix + "intermediate.dense.", text.intermediate_size, width);
        add_linear(out, layer_prefix + "output.dense.", width, text.intermediate_size);
        add_layer_norm(out, layer_prefix + "output.LayerNorm.", width);
    }
}

// Appends the causal text decoder (BlipTextLMHeadModel) under "text_decoder.". The output
// projection is the word embedding matrix (tied), so only its transform and bias appear.
inline void append_decoder_tensors(const TextConfig& text, std::vector<ExpectedTensor>& out) {
    append_text_tensors(text, "text_decoder.bert.", out);
    detail::add_linear(out, "text_decoder.cls.predictions.transform.dense.", text.hidden_size, text.hidden_size);
    detail::add_layer_norm(out, "text_decoder.cls.predictions.transform.LayerNorm.", text.hidden_size);
    detail::add_tensor(out, "text_decoder.cls.predictions.bias", {text.vocab_size});
}

// Returns every tensor that the model of `config.task` reads, in a fixed order:
// caption (BlipForConditionalGeneration): vision_model, text_decoder;
// vqa (BlipForQuestionAnswering): vision_model, text_encoder, text_decoder;
// itm (BlipForImageTextRetrieval): vision_model, text_encoder, vision_proj, text_proj, itm_head.
inline std::vector<ExpectedTensor> expected_tensors(const BlipConfig& config) {
    std::vector<ExpectedTensor> out;
    append_vision_tensors(config.vision, out);
    switch (config.task) {
        case Task::Caption:
            append_decoder_tensors(config.text, out);
            break;
        case Task::Vqa:
            append_text_tensors(config.text, "text_encoder.", out);
            append_decoder_tensors(config.text, out);
            break;
        case Task::Itm:
            append_text_tensors(config.text, "text_encoder.", out);
            detail::add_linear(out, "vision_proj.", config.image_text_hidden_size, config.vision.hidden_size);
            detail::add_linear(out, "text_proj.", config.image_text_hidden_size, config.text.hidden_size);
            detail::add_linear(out, "itm_head.", 2, config.text.hidden_size);
            break;
    }
    return out;
}

// Returns the tied pairs of `task`. In the decoder, transformers ties the output projection
// to the word embeddings (tie_word_embeddings) and shares one bias between
// cls.predictions.bias and cls.predictions.decoder.bias.
inline std::vector<TiedTensor> tied_tensors(Task task) {
    if (task == Task::Itm) return {};
    return {
        {"text_decoder.bert.embeddings.word_embeddings.weight", "text_decoder.cls.predictions.decoder.weight"},
        {"text_decoder.cls.predictions.bias", "text_decoder.cls.predictions.decoder.bias"},
    };
}

// Returns whether `name` is a buffer that checkpoints may contain but that models compute
// themselves (the `embeddings.position_ids` ranges 0..max_position_embeddings-1).
inline bool is_derived_buffer(std::string_view name) {
    constexpr std::string_view suffix = "embeddings.position_ids";
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
}

// Returns `name` with every layer index replaced by '#', so that the names of one tensor in
// different layers compare equal: "text_encoder.encoder.layer.#.output.dense.weight".
inline std::string tensor_name_pattern(std::string_view name) {
    std::string pattern;
    std::size_t i = 0;
    while (i < name.size()) {
        const bool segment_start = i == 0 || name[i - 1] == '.';
        if (segment_start && name[i] >= '0' && name[i] <= '9') {
            std::size_t end = i;
            while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
            if (end == name.size() || name[end] == '.') {
                pattern += '#';
                i = end;
                continue;
            }
        }
        pattern += name[i];
        ++i;
    }
    return pattern;
}

}  // namespace blip
