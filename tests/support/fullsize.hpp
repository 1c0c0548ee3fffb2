// Builds the full-size BLIP captioners in memory. Their weights are a pure function of each
// tensor's name (the rule below), so a test can compare the model's outputs with what
// transformers computed for the same weights without the published checkpoint files.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/gguf/writer.hpp"
#include "blip/model/config.hpp"
#include "blip/model/metadata.hpp"
#include "support/golden.hpp"

namespace blip_test {

// FNV-1a, 64 bits, of the bytes of `text`.
inline std::uint64_t fnv1a64(const std::string& text) {
    std::uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char byte : text) {
        hash ^= byte;
        hash *= 0x100000001b3ull;
    }
    return hash;
}

// Element `index` of the tensor with hash `seed`, uniform in [-1, 1): a SplitMix64 step
// whose top 24 bits give a value that float32 represents exactly.
inline double fullsize_uniform(std::uint64_t seed, std::uint64_t index) {
    std::uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    const double u = static_cast<double>(z >> 40) / 16777216.0;
    return 2.0 * u - 1.0;
}

inline bool ends_with(const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Encodes the values of tensor `name` of `shape` as f32 bytes, by the first rule that
// applies: biases 0.1 x, layer norms 1 + 0.1 x, embeddings 0.5 x, other weights
// x sqrt(3 / fan_in) (a quarter of that for output.dense weights). Each value is computed
// in double and rounded once to float. `sum` receives the sum of the float values.
inline std::vector<std::uint8_t> fullsize_tensor(const std::string& name, const std::vector<std::int64_t>& shape,
                                                 double& sum) {
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::int64_t count = 1;
    for (auto extent : shape) count *= extent;
    const std::int64_t fan_in = shape.empty() ? 1 : count / shape[0];

    enum class Rule { Bias, Norm, Embedding, Weight } rule = Rule::Weight;
    if (ends_with(name, ".bias"))
        rule = Rule::Bias;
    else if (lower.find("layer_norm") != std::string::npos || lower.find("layernorm") != std::string::npos)
        rule = Rule::Norm;
    else if (name.find("embedding") != std::string::npos)
        rule = Rule::Embedding;
    const double weight_scale =
        std::sqrt(3.0 / static_cast<double>(fan_in)) * (ends_with(name, "output.dense.weight") ? 0.25 : 1.0);

    const std::uint64_t seed = fnv1a64(name);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(count) * sizeof(float));
    // Chunks of fixed size, summed separately and then in order, so the sum does not
    // depend on the thread count.
    constexpr std::int64_t kChunk = std::int64_t{1} << 16;
    const std::int64_t chunks = blip::tile_count(count, kChunk);
    std::vector<double> chunk_sums(static_cast<std::size_t>(chunks), 0.0);
    blip::parallel_for(chunks, [&](std::int64_t chunk, int) {
        const std::int64_t end = std::min(count, (chunk + 1) * kChunk);
        double chunk_sum = 0;
        for (std::int64_t i = chunk * kChunk; i < end; ++i) {
            const double x = fullsize_uniform(seed, static_cast<std::uint64_t>(i));
            double value = 0;
            switch (rule) {
                case Rule::Bias: value = 0.1 * x; break;
                case Rule::Norm: value = 1.0 + 0.1 * x; break;
                case Rule::Embedding: value = 0.5 * x; break;
                case Rule::Weight: value = x * weight_scale; break;
            }
            const float rounded = static_cast<float>(value);
            chunk_sum += rounded;
            std::memcpy(bytes.data() + i * sizeof(float), &rounded, sizeof(float));
        }
        chunk_sums[static_cast<std::size_t>(chunk)] = chunk_sum;
    });
    sum = 0;
    for (double chunk_sum : chunk_sums) sum += chunk_sum;
    return bytes;
}

// The configuration of a manifest's `config` (transformers' BlipConfig as JSON).
inline blip::BlipConfig fullsize_config(const nlohmann::json& json, const std::string& name) {
    const auto& vision_json = json.at("vision_config");
    const auto& text_json = json.at("text_config");
    blip::BlipConfig config;
    config.task = blip::Task::Caption;
    config.name = name;
    blip::VisionConfig& vision = config.vision;
    vision.hidden_size = vision_json.at("hidden_size");
    vision.intermediate_size = vision_json.at("intermediate_size");
    vision.num_attention_heads = vision_json.at("num_attention_heads");
    vision.num_hidden_layers = vision_json.at("num_hidden_layers");
    vision.image_size = vision_json.at("image_size");
    vision.patch_size = vision_json.at("patch_size");
    vision.layer_norm_eps = vision_json.at("layer_norm_eps");
    blip::TextConfig& text = config.text;
    text.vocab_size = text_json.at("vocab_size");
    text.hidden_size = text_json.at("hidden_size");
    text.intermediate_size = text_json.at("intermediate_size");
    text.num_attention_heads = text_json.at("num_attention_heads");
    text.num_hidden_layers = text_json.at("num_hidden_layers");
    text.max_position_embeddings = text_json.at("max_position_embeddings");
    text.encoder_hidden_size = text_json.at("encoder_hidden_size");
    text.layer_norm_eps = text_json.at("layer_norm_eps");
    config.image_text_hidden_size = json.at("image_text_hidden_size");
    config.tokens.bos = text_json.at("bos_token_id");
    config.tokens.eos = text_json.at("sep_token_id");  // BLIP's generate() ends captions at [SEP]
    config.tokens.sep = text_json.at("sep_token_id");
    config.tokens.pad = text_json.at("pad_token_id");
    config.preprocess.height = config.preprocess.width = vision.image_size;
    return config;
}

// A full-size model built in memory, and the tensors whose sums differ from the reference.
struct FullsizeModel {
    std::shared_ptr<const blip::gguf::File> file;
    std::vector<std::string> sum_mismatches;
    std::size_t checked_sums = 0;
};

// Builds `model` ("blip-image-captioning-base" or "-large") from its manifest as an f32
// GGUF file in memory, and checks every tensor's sum against the reference's tensor_sums.
// Tied tensors are stored once, under the word embeddings and cls.predictions.bias.
inline FullsizeModel build_fullsize_model(const std::string& model) {
    const fs::path golden = golden_dir();
    const nlohmann::json manifest = read_json(golden / "manifests" / (model + ".json"));
    const nlohmann::json reference = read_json(golden / "fullsize" / (model + ".cats.png.json"));
    const nlohmann::json& sums = reference.at("tensor_sums");
    const std::string decoder_weight = "text_decoder.cls.predictions.decoder.weight";
    const std::string decoder_bias = "text_decoder.cls.predictions.decoder.bias";
    const std::string word_embeddings = "text_decoder.bert.embeddings.word_embeddings.weight";
    const std::string prediction_bias = "text_decoder.cls.predictions.bias";

    FullsizeModel result;
    blip::gguf::Writer writer;
    blip::write_config(writer, fullsize_config(manifest.at("config"), model));
    const auto check_sum = [&](const std::string& name, double sum) {
        if (!sums.contains(name)) return;
        ++result.checked_sums;
        const double expected = sums.at(name);
        if (std::abs(sum - expected) > 1e-6 * (1.0 + std::abs(expected)))
            result.sum_mismatches.push_back(name + ": sum " + std::to_string(sum) + ", expected " +
                                            std::to_string(expected));
    };

    for (const auto& [name, info] : manifest.at("tensors").items()) {
        if (ends_with(name, ".position_ids") || name == decoder_weight || name == decoder_bias) continue;
        const std::vector<std::int64_t> shape = info.at("shape").get<std::vector<std::int64_t>>();
        double sum = 0;
        std::vector<std::uint8_t> bytes = fullsize_tensor(name, shape, sum);
        check_sum(name, sum);
        if (name == word_embeddings) check_sum(decoder_weight, sum);
        if (name == prediction_bias) check_sum(decoder_bias, sum);
        writer.add_tensor(name, blip::DType::F32, shape, std::move(bytes));
    }
    result.file = blip::gguf::File::from_buffer(writer.to_bytes(), model + " (built in memory)");
    return result;
}

}  // namespace blip_test
