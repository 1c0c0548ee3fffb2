// Writes small Hugging Face BLIP model folders with random weights, for converter tests
// that need shapes the golden models lack: rows of 256 values fit every block type,
// including the k-quants, which the tiny golden models' 32- and 48-wide rows do not.
#pragma once

#include <blip/model/config.hpp>
#include <blip/model/expected_tensors.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace blip_test {

namespace fs = std::filesystem;

// One float32 tensor for write_safetensors, shape row-major.
struct NamedTensor {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<float> values;
};

// Writes `tensors` as a safetensors file of F32 tensors in the given order.
inline void write_safetensors(const fs::path& path, const std::vector<NamedTensor>& tensors) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    std::uint64_t offset = 0;
    for (const NamedTensor& tensor : tensors) {
        const std::uint64_t bytes = tensor.values.size() * sizeof(float);
        header[tensor.name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the safetensors library writes
    const std::uint64_t header_size = text.size();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out << text;
    for (const NamedTensor& tensor : tensors)
        out.write(reinterpret_cast<const char*>(tensor.values.data()),
                  static_cast<std::streamsize>(tensor.values.size() * sizeof(float)));
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

// Sizes of a synthetic model. The defaults give rows of 256 or 512 values everywhere
// except the patch convolution (768 values per output channel).
struct SyntheticModel {
    blip::Task task = blip::Task::Caption;
    std::int64_t vision_hidden = 256;
    std::int64_t vision_intermediate = 512;
    std::int64_t image_size = 32;
    std::int64_t patch_size = 16;
    std::int64_t text_hidden = 256;
    std::int64_t text_intermediate = 512;
    std::int64_t max_positions = 16;
    std::int64_t vocab_size = 256;  // [DEC] and [ENC] are the last two ids
    std::int64_t image_text_hidden = 256;
};

inline blip::BlipConfig synthetic_config(const SyntheticModel& model) {
    blip::BlipConfig config;
    config.task = model.task;
    config.vision.hidden_size = model.vision_hidden;
    config.vision.intermediate_size = model.vision_intermediate;
    config.vision.num_attention_heads = 4;
    config.vision.num_hidden_layers = 1;
    config.vision.image_size = model.image_size;
    config.vision.patch_size = model.patch_size;
    config.text.vocab_size = model.vocab_size;
    config.text.hidden_size = model.text_hidden;
    config.text.intermediate_size = model.text_intermediate;
    config.text.num_attention_heads = 4;
    config.text.num_hidden_layers = 1;
    config.text.max_position_embeddings = model.max_positions;
    config.text.encoder_hidden_size = model.vision_hidden;
    config.image_text_hidden_size = model.image_text_hidden;
    return config;
}

// Random weights for every tensor the model of `model.task` reads, in expected_tensors
// order: normal with standard deviation 0.05, plus one larger value per tensor so that
// blocks with an outlier are tested too. Norm weights are near 1.
inline std::vector<NamedTensor> synthetic_weights(const SyntheticModel& model, std::uint32_t seed) {
    std::mt19937 random(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::vector<NamedTensor> tensors;
    for (const blip::ExpectedTensor& expected : blip::expected_tensors(synthetic_config(model))) {
        NamedTensor tensor{expected.name, expected.shape, {}};
        std::size_t count = 1;
        for (const std::int64_t dim : expected.shape) count *= static_cast<std::size_t>(dim);
        tensor.values.resize(count);
        const bool norm_weight = expected.name.find("norm") != std::string::npos &&
                                 expected.name.size() > 7 &&
                                 expected.name.compare(expected.name.size() - 7, 7, ".weight") == 0;
        for (float& value : tensor.values) value = normal(random) + (norm_weight ? 1.0f : 0.0f);
        tensor.values[count / 2] = 0.75f;
        tensors.push_back(std::move(tensor));
    }
    return tensors;
}

inline void write_text_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

// Writes a model folder as transformers saves one: config.json, model.safetensors,
// vocab.txt, added_tokens.json, special_tokens_map.json, tokenizer_config.json and
// preprocessor_config.json. The vocabulary is [PAD] [UNK] [CLS] [SEP] [MASK], made-up
// words, then [DEC] and [ENC].
inline void write_synthetic_model(const fs::path& dir, const SyntheticModel& model, std::uint32_t seed = 1) {
    fs::create_directories(dir);
    const char* architecture = model.task == blip::Task::Caption ? "BlipForConditionalGeneration"
                               : model.task == blip::Task::Vqa   ? "BlipForQuestionAnswering"
                                                                 : "BlipForImageTextRetrieval";
    const blip::BlipConfig config = synthetic_config(model);
    nlohmann::ordered_json json = {
        {"architectures", {architecture}},
        {"model_type", "blip"},
        {"image_text_hidden_size", config.image_text_hidden_size},
        {"vision_config",
         {{"hidden_size", config.vision.hidden_size},
          {"intermediate_size", config.vision.intermediate_size},
          {"num_attention_heads", config.vision.num_attention_heads},
          {"num_hidden_layers", config.vision.num_hidden_layers},
          {"image_size", config.vision.image_size},
          {"patch_size", config.vision.patch_size}}},
        {"text_config",
         {{"vocab_size", config.text.vocab_size},
          {"hidden_size", config.text.hidden_size},
          {"intermediate_size", config.text.intermediate_size},
          {"num_attention_heads", config.text.num_attention_heads},
          {"num_hidden_layers", config.text.num_hidden_layers},
          {"max_position_embeddings", config.text.max_position_embeddings},
          {"encoder_hidden_size", config.text.encoder_hidden_size},
          {"bos_token_id", model.vocab_size - 2},
          {"sep_token_id", 3},
          {"pad_token_id", 0}}},
    };
    write_text_file(dir / "config.json", json.dump(2));

    std::string vocabulary = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
    for (std::int64_t id = 5; id < model.vocab_size - 2; ++id) vocabulary += "word" + std::to_string(id) + "\n";
    write_text_file(dir / "vocab.txt", vocabulary);
    const nlohmann::ordered_json added = {{"[DEC]", model.vocab_size - 2}, {"[ENC]", model.vocab_size - 1}};
    write_text_file(dir / "added_tokens.json", added.dump());
    write_text_file(dir / "special_tokens_map.json",
                    R"({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"], "cls_token": "[CLS]",)"
                    R"( "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"})");
    write_text_file(dir / "tokenizer_config.json", R"({"tokenizer_class": "BertTokenizer", "do_lower_case": true})");
    const nlohmann::ordered_json preprocessor = {{"size", {{"height", model.image_size}, {"width", model.image_size}}}};
    write_text_file(dir / "preprocessor_config.json", preprocessor.dump());

    write_safetensors(dir / "model.safetensors", synthetic_weights(model, seed));
}

}  // namespace blip_test
