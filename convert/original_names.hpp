// Renames the tensors of Salesforce's original BLIP checkpoints (the `.pth` files of
// github.com/salesforce/BLIP, state dict under "model") to the names transformers uses
// for BlipForConditionalGeneration, BlipForQuestionAnswering and
// BlipForImageTextRetrieval, so that one converter handles both sources.
//
// The vision tower is renamed as transformers' convert_blip_original_pytorch_to_hf.py
// (v4.30.2) does. The text modules (`text_encoder.*`, `text_decoder.*`) and the ITM
// heads (`vision_proj`, `text_proj`, `itm_head`) keep their names. Tensors that the task
// does not use are left out: momentum encoders (`*_m`), the contrastive queues
// (`image_queue`, `text_queue`, `idx_queue`, `ptr_queue`, `queue_ptr`), `temp`, and the
// modules of other tasks.
#pragma once

#include "checkpoint.hpp"

#include <blip/model/config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blip::convert {

namespace detail {

inline bool starts_with(std::string_view text, std::string_view prefix) {
    return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

// Renames one tensor of Salesforce's VisionTransformer (`visual_encoder.` removed from
// `name`) to its BlipVisionModel name, or returns nothing for a name that has none.
inline std::optional<std::string> map_vision_name(std::string_view name) {
    auto parameter = [](std::string_view suffix) { return suffix == "weight" || suffix == "bias"; };

    if (name == "cls_token") return std::string("vision_model.embeddings.class_embedding");
    if (name == "pos_embed") return std::string("vision_model.embeddings.position_embedding");
    if (starts_with(name, "patch_embed.proj.") && parameter(name.substr(17)))
        return "vision_model.embeddings.patch_embedding." + std::string(name.substr(17));
    if (starts_with(name, "norm.") && parameter(name.substr(5)))
        return "vision_model.post_layernorm." + std::string(name.substr(5));

    if (!starts_with(name, "blocks.")) return std::nullopt;
    std::string_view rest = name.substr(7);
    const std::size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
    const std::string_view layer = rest.substr(0, dot);
    for (char c : layer) {
        if (c < '0' || c > '9') return std::nullopt;
    }
    rest = rest.substr(dot + 1);

    // Module renames inside one transformer block. The parameter suffix stays.
    static constexpr std::pair<std::string_view, std::string_view> kBlockModules[] = {
        {"norm1.", "layer_norm1."},     {"norm2.", "layer_norm2."},   {"attn.qkv.", "self_attn.qkv."},
        {"attn.proj.", "self_attn.projection."}, {"mlp.fc1.", "mlp.fc1."}, {"mlp.fc2.", "mlp.fc2."},
    };
    for (const auto& [original, renamed] : kBlockModules) {
        if (starts_with(rest, original) && parameter(rest.substr(original.size())))
            return "vision_model.encoder.layers." + std::string(layer) + "." + std::string(renamed) +
                   std::string(rest.substr(original.size()));
    }
    return std::nullopt;
}

// Module prefixes of the original checkpoints that each task keeps under the same name.
inline std::vector<std::string_view> kept_text_prefixes(Task task) {
    switch (task) {
        case Task::Caption: return {"text_decoder."};
        case Task::Vqa: return {"text_encoder.", "text_decoder."};
        case Task::Itm: return {"text_encoder.", "vision_proj.", "text_proj.", "itm_head."};
    }
    return {};
}

// Bicubic convolution weights (a = -0.75, as torch.nn.functional.interpolate uses) for
// the four taps around a sample at fraction `t` past the second tap.
inline void cubic_weights(float t, float weights[4]) {
    constexpr float a = -0.75f;
    auto near = [&](float x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };        // |x| <= 1
    auto far = [&](float x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };  // 1 < |x| < 2
    weights[0] = far(t + 1);
    weights[1] = near(t);
    weights[2] = near(1 - t);
    weights[3] = far((1 - t) + 1);
}

}  // namespace detail

// Resizes a ViT position embedding [1, 1 + g*g, D] (class token first, then a g x g grid
// of patch positions in row-major order) to a new_grid x new_grid grid, as Salesforce's
// interpolate_pos_embed does when a checkpoint is loaded at another image size: bicubic
// interpolation (a = -0.75, align_corners=False, edge samples clamped, no antialiasing)
// of each channel over the grid, class token unchanged. Returns F32 data
// [1, 1 + new_grid^2, D].
// NOTE: matches PyTorch 1.13.1 on a 14 -> 24 and a 30 -> 24 grid of 768 channels to within
// 1e-7 absolute, not bit for bit: torch's AVX2 kernel rounds its multiply-adds differently.
inline std::vector<float> interpolate_position_embedding(const SourceTensor& position_embedding, std::int64_t new_grid) {
    const auto& shape = position_embedding.shape;
    if (shape.size() != 3 || shape[0] != 1 || shape[1] < 2)
        throw Error("position embedding " + position_embedding.name + " has shape " + detail::format_shape(shape) +
                    ", expected [1, 1 + grid^2, width]");
    const std::int64_t positions = shape[1] - 1;
    const std::int64_t width = shape[2];
    auto grid = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(positions))));
    if (grid * grid != positions)
        throw Error("position embedding " + position_embedding.name + " has " + std::to_string(positions) +
                    " patch positions, which is not a square grid");
    if (new_grid < 1) throw Error("position embedding grid size must be positive, got " + std::to_string(new_grid));

    const std::vector<float> source = position_embedding.to_f32();
    std::vector<float> result(static_cast<std::size_t>((1 + new_grid * new_grid) * width));
    std::copy(source.begin(), source.begin() + width, result.begin());  // class token

    // Source taps and weights along one axis, shared by both axes because the grid is square.
    struct Taps {
        std::int64_t index[4];
        float weight[4];
    };
    std::vector<Taps> taps(static_cast<std::size_t>(new_grid));
    const float scale = static_cast<float>(grid) / static_cast<float>(new_grid);
    for (std::int64_t out = 0; out < new_grid; ++out) {
        const float real = scale * (static_cast<float>(out) + 0.5f) - 0.5f;
        const float floor = std::floor(real);
        Taps& tap = taps[static_cast<std::size_t>(out)];
        detail::cubic_weights(real - floor, tap.weight);
        for (int k = 0; k < 4; ++k) {
            const std::int64_t index = static_cast<std::int64_t>(floor) - 1 + k;
            tap.index[k] = std::min(std::max<std::int64_t>(index, 0), grid - 1);
        }
    }

    const float* patches = source.data() + width;
    float* output = result.data() + width;
    for (std::int64_t y = 0; y < new_grid; ++y) {
        const Taps& row_taps = taps[static_cast<std::size_t>(y)];
        for (std::int64_t x = 0; x < new_grid; ++x) {
            const Taps& column_taps = taps[static_cast<std::size_t>(x)];
            for (std::int64_t c = 0; c < width; ++c) {
                // Along x within each of the four rows, then along y, as torch accumulates.
                float sum = 0;
                for (int i = 0; i < 4; ++i) {
                    const float* row = patches + row_taps.index[i] * grid * width;
                    float row_sum = 0;
                    for (int j = 0; j < 4; ++j) row_sum += row[column_taps.index[j] * width + c] * column_taps.weight[j];
                    sum += row_sum * row_taps.weight[i];
                }
                output[(y * new_grid + x) * width + c] = sum;
            }
        }
    }
    return result;
}

// Returns `checkpoint` with its position embedding `name` ([1, 1 + g*g, D]) resized to a
// new_grid x new_grid grid by interpolate_position_embedding, in the same place of the
// tensor order. A grid of that size already is returned unchanged.
inline Checkpoint resize_position_embedding(Checkpoint checkpoint, const std::string& name, std::int64_t new_grid) {
    const SourceTensor* position = checkpoint.find(name);
    if (!position) throw Error(checkpoint.source + ": no tensor " + name + " to resize");
    if (position->shape.size() == 3 && position->shape[1] == 1 + new_grid * new_grid) return checkpoint;

    // Rebuild the checkpoint with the resized position embedding in the same place.
    std::vector<float> resized = interpolate_position_embedding(*position, new_grid);
    std::vector<std::uint8_t> bytes(resized.size() * sizeof(float));
    std::memcpy(bytes.data(), resized.data(), bytes.size());
    Checkpoint rebuilt;
    rebuilt.source = checkpoint.source;
    rebuilt.keep_alive_buffers_of(checkpoint);
    const std::uint8_t* data = rebuilt.store(std::move(bytes));
    for (const SourceTensor& tensor : checkpoint.tensors()) {
        SourceTensor copy = tensor;
        if (copy.name == position->name) {
            copy.dtype = SourceDType::F32;
            copy.shape = {1, 1 + new_grid * new_grid, position->shape[2]};
            copy.data = data;
            copy.nbytes = resized.size() * sizeof(float);
        }
        rebuilt.add(std::move(copy));
    }
    return rebuilt;
}

// Renames the tensors of a Salesforce original checkpoint to transformers names for
// `task` and drops those the task does not use, listing their original names in
// `ignored` when it is not null. Throws if a `visual_encoder` tensor has no
// transformers counterpart, or if the checkpoint lacks the modules the task needs.
//
// `image_size` 0 keeps the position embedding as stored. A positive `image_size` resizes it
// to image_size / patch_size patches per side (rounded down, as BLIP's ViT counts them) when
// the stored grid differs, as Salesforce's loader does: model_base_capfilt_large.pth is
// stored at 224 pixels and model_base_vqa_capfilt_large.pth at 480, while transformers'
// converted models use 384.
inline Checkpoint map_original_names(Checkpoint original, Task task, std::vector<std::string>* ignored,
                                     std::int64_t image_size = 0) {
    Checkpoint result;
    result.source = original.source;
    result.keep_alive_buffers_of(original);
    const auto kept_prefixes = detail::kept_text_prefixes(task);

    for (const SourceTensor& tensor : original.tensors()) {
        std::optional<std::string> renamed;
        if (detail::starts_with(tensor.name, "visual_encoder.")) {
            renamed = detail::map_vision_name(std::string_view(tensor.name).substr(15));
            if (!renamed)
                throw Error(original.source + ": tensor " + tensor.name +
                            " has no counterpart in transformers' BlipVisionModel; the checkpoint is not a "
                            "Salesforce BLIP ViT");
        } else {
            for (std::string_view prefix : kept_prefixes) {
                if (detail::starts_with(tensor.name, prefix)) renamed = tensor.name;
            }
        }
        if (!renamed) {
            if (ignored) ignored->push_back(tensor.name);
            continue;
        }
        SourceTensor copy = tensor;
        copy.name = *renamed;
        result.add(std::move(copy));
    }

    // The task's modules must all be there. A retrieval checkpoint has no decoder, for example.
    auto require = [&](const char* name, const char* module) {
        if (!result.find(name))
            throw Error(original.source + ": no " + std::string(module) + " tensors (" + name +
                        "), so this checkpoint cannot be converted for the " + task_name(task) +
                        " task; pick the task the checkpoint was trained for");
    };
    require("vision_model.embeddings.patch_embedding.weight", "visual_encoder");
    require("vision_model.embeddings.position_embedding", "visual_encoder");
    if (task == Task::Caption || task == Task::Vqa) require("text_decoder.bert.embeddings.word_embeddings.weight", "text_decoder");
    if (task == Task::Vqa || task == Task::Itm) require("text_encoder.embeddings.word_embeddings.weight", "text_encoder");
    if (task == Task::Itm) {
        require("itm_head.weight", "itm_head");
        require("vision_proj.weight", "vision_proj");
        require("text_proj.weight", "text_proj");
    }

    if (image_size <= 0) return result;

    const SourceTensor* patch = result.find("vision_model.embeddings.patch_embedding.weight");
    if (patch->shape.size() != 4 || patch->shape[2] <= 0 || patch->shape[2] != patch->shape[3])
        throw Error(original.source + ": patch embedding has shape " + detail::format_shape(patch->shape) +
                    ", expected [width, channels, patch, patch]");
    const std::int64_t patch_size = patch->shape[2];
    if (image_size < patch_size)
        throw Error("image size " + std::to_string(image_size) + " is smaller than the patch size " +
                    std::to_string(patch_size) + " of " + original.source);
    const std::int64_t new_grid = image_size / patch_size;

    return resize_position_embedding(std::move(result), "vision_model.embeddings.position_embedding", new_grid);
}

}  // namespace blip::convert
