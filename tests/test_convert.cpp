// blip-convert: conversion of the tiny golden model folders, read back through the GGUF
// reader and read_config, f16 encoding, and the errors for broken inputs and outputs.
#include "convert/convert.hpp"
#include "convert/safetensors.hpp"

#include <blip/gguf/reader.hpp>
#include <blip/gguf/writer.hpp>
#include <blip/model/expected_tensors.hpp>
#include <blip/model/metadata.hpp>
#include <blip/model/vision.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "support/command.hpp"
#include "support/errors.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_convert {

namespace {

namespace fs = std::filesystem;
using blip::DType;
using blip::Task;
using blip::convert::ConvertOptions;
using blip::convert::ConvertReport;

fs::path model_dir(const std::string& name) { return blip_test::golden_dir() / "models" / name; }

fs::path fresh_dir(const std::string& name) { return blip_test::fresh_scratch_dir("convert", name); }

ConvertReport convert(const fs::path& input, const fs::path& output, DType type = DType::F32,
                      std::optional<Task> task = std::nullopt) {
    ConvertOptions options;
    options.input_dir = input.string();
    options.output_path = output.string();
    options.type = type;
    options.task = task;
    return blip::convert::convert_folder(options);
}

// Converts a golden model once per test program and returns the GGUF path.
fs::path converted(const std::string& model, DType type = DType::F32) {
    static std::map<std::string, fs::path> cache;
    const std::string key = model + "." + std::string(blip::dtype_name(type));
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const fs::path output = blip_test::scratch_dir("convert") / (key + ".gguf");
    convert(model_dir(model), output, type);
    return cache[key] = output;
}

// Writes a copy of a safetensors file with its JSON header changed by `edit`. Data offsets
// count from the end of the header, so the data section is copied unchanged.
template <class Edit>
void write_edited_safetensors(const fs::path& source, const fs::path& target, Edit edit) {
    const std::string bytes = blip_test::read_text(source);
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    auto header = nlohmann::ordered_json::parse(bytes.substr(8, header_size));
    edit(header);
    const std::string new_header = header.dump();
    const std::uint64_t new_size = new_header.size();
    std::ofstream out(target, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&new_size), 8);
    out << new_header;
    out.write(bytes.data() + 8 + header_size, static_cast<std::streamsize>(bytes.size() - 8 - header_size));
    REQUIRE(out.good());
}

using blip_test::copy_writable;

// Copies the golden folder `model` to a scratch folder, with model.safetensors edited.
template <class Edit>
fs::path edited_copy(const std::string& model, const std::string& name, Edit edit) {
    const fs::path dir = fresh_dir(name);
    for (const auto& entry : fs::directory_iterator(model_dir(model))) {
        if (entry.path().filename() == "model.safetensors") continue;
        copy_writable(entry.path(), dir / entry.path().filename());
    }
    write_edited_safetensors(model_dir(model) / "model.safetensors", dir / "model.safetensors", edit);
    return dir;
}

fs::path copy_without_weights(const std::string& model, const std::string& name) {
    return blip_test::copy_without_weights("convert", model, name);
}

using blip_test::error_of;

bool no_output_left(const fs::path& output) {
    return !fs::exists(output) && !fs::exists(output.string() + ".tmp");
}

float half_to_float(std::uint16_t bits) { return blip::convert::detail::half_to_float(bits); }

DType tensor_type(const blip::gguf::File& file, const std::string& name) { return file.tensor(name).type; }

std::vector<std::string> tensor_names(const blip::gguf::File& file) {
    std::vector<std::string> names;
    for (const auto& tensor : file.tensors()) names.push_back(tensor.name);
    return names;
}

std::vector<std::string> expected_names(const blip::BlipConfig& config) {
    std::vector<std::string> names;
    for (const auto& tensor : blip::expected_tensors(config)) names.push_back(tensor.name);
    return names;
}

}  // namespace

TEST_CASE("convert caption f32 equals safetensors") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path output = blip_test::scratch_dir("convert") / "caption-report.gguf";
    const ConvertReport report = convert(model_dir("tiny-caption"), output);
    CHECK(report.task == Task::Caption);
    CHECK(report.ignored == std::vector<std::string>{"text_decoder.bert.embeddings.position_ids"});
    CHECK(report.aliases.empty());
    CHECK(report.warnings.empty());

    const auto file = blip::gguf::File::open(output.string());
    const blip::BlipConfig config = blip::read_config(*file);
    CHECK(tensor_names(*file) == expected_names(config));
    CHECK(file->get_int(blip::convert::kFileTypeKey) == 0);

    const auto source = blip::convert::read_safetensors((model_dir("tiny-caption") / "model.safetensors").string());
    for (const auto& expected : blip::expected_tensors(config)) {
        CAPTURE(expected.name);
        const auto& tensor = file->tensor(expected.name, expected.shape);
        const auto* original = source.find(expected.name);
        REQUIRE(original != nullptr);
        CHECK(tensor.type == DType::F32);
        CHECK(tensor.shape == original->shape);
        REQUIRE(tensor.nbytes == original->nbytes);
        CHECK(std::memcmp(tensor.data, original->data, tensor.nbytes) == 0);
    }
    // Each tied pair is stored once: no decoder.weight or decoder.bias in the file.
    CHECK(file->find_tensor("text_decoder.cls.predictions.decoder.weight") == nullptr);
    CHECK(file->find_tensor("text_decoder.cls.predictions.decoder.bias") == nullptr);
    CHECK(file->find_tensor("text_decoder.bert.embeddings.position_ids") == nullptr);
}

TEST_CASE("convert dedup and bin equal caption") {
    BLIP_REQUIRE_GOLDEN();
    const auto full = blip::gguf::File::open(converted("tiny-caption").string());
    for (const std::string model : {"tiny-caption-dedup", "tiny-caption-bin"}) {
        CAPTURE(model);
        const fs::path output = blip_test::scratch_dir("convert") / (model + "-report.gguf");
        const ConvertReport report = convert(model_dir(model), output);
        CHECK(report.aliases.empty());
        const auto file = blip::gguf::File::open(output.string());
        REQUIRE(tensor_names(*file) == tensor_names(*full));
        for (std::size_t i = 0; i < full->tensors().size(); ++i) {
            const auto& a = full->tensors()[i];
            const auto& b = file->tensors()[i];
            CAPTURE(a.name);
            CHECK(a.type == b.type);
            CHECK(a.shape == b.shape);
            REQUIRE(a.nbytes == b.nbytes);
            CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
        }
    }
}

TEST_CASE("convert reads tied weights from alias") {
    BLIP_REQUIRE_GOLDEN();
    // Store the embeddings and the bias only under the LM head's names.
    const fs::path dir = edited_copy("tiny-caption-dedup", "alias-only", [](nlohmann::ordered_json& header) {
        header["text_decoder.cls.predictions.decoder.weight"] = header["text_decoder.bert.embeddings.word_embeddings.weight"];
        header.erase("text_decoder.bert.embeddings.word_embeddings.weight");
        header["text_decoder.cls.predictions.decoder.bias"] = header["text_decoder.cls.predictions.bias"];
        header.erase("text_decoder.cls.predictions.bias");
    });
    const fs::path output = dir / "out.gguf";
    const ConvertReport report = convert(dir, output);
    CHECK(report.aliases.size() == 2);
    const auto full = blip::gguf::File::open(converted("tiny-caption").string());
    const auto file = blip::gguf::File::open(output.string());
    REQUIRE(tensor_names(*file) == tensor_names(*full));
    for (const char* name : {"text_decoder.bert.embeddings.word_embeddings.weight", "text_decoder.cls.predictions.bias"}) {
        CAPTURE(name);
        const auto& a = full->tensor(name);
        const auto& b = file->tensor(name);
        REQUIRE(a.nbytes == b.nbytes);
        CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
    }
}

TEST_CASE("convert config values equal config.json") {
    BLIP_REQUIRE_GOLDEN();
    const auto file = blip::gguf::File::open(converted("tiny-caption").string());
    const blip::BlipConfig config = blip::read_config(*file);
    const auto json = blip_test::read_json(model_dir("tiny-caption") / "config.json");
    const auto& vision = json["vision_config"];
    const auto& text = json["text_config"];

    CHECK(config.task == Task::Caption);
    CHECK(config.name == "tiny-caption");
    CHECK(file->get_string(blip::keys::kArchitecture) == "blip");
    CHECK(config.vision.hidden_size == vision["hidden_size"].get<std::int64_t>());
    CHECK(config.vision.intermediate_size == vision["intermediate_size"].get<std::int64_t>());
    CHECK(config.vision.num_attention_heads == vision["num_attention_heads"].get<std::int64_t>());
    CHECK(config.vision.num_hidden_layers == vision["num_hidden_layers"].get<std::int64_t>());
    CHECK(config.vision.image_size == vision["image_size"].get<std::int64_t>());
    CHECK(config.vision.patch_size == vision["patch_size"].get<std::int64_t>());
    CHECK(config.vision.num_channels == vision["num_channels"].get<std::int64_t>());
    CHECK(config.vision.layer_norm_eps == vision["layer_norm_eps"].get<float>());
    CHECK(config.text.vocab_size == text["vocab_size"].get<std::int64_t>());
    CHECK(config.text.hidden_size == text["hidden_size"].get<std::int64_t>());
    CHECK(config.text.intermediate_size == text["intermediate_size"].get<std::int64_t>());
    CHECK(config.text.num_attention_heads == text["num_attention_heads"].get<std::int64_t>());
    CHECK(config.text.num_hidden_layers == text["num_hidden_layers"].get<std::int64_t>());
    CHECK(config.text.max_position_embeddings == text["max_position_embeddings"].get<std::int64_t>());
    CHECK(config.text.encoder_hidden_size == text["encoder_hidden_size"].get<std::int64_t>());
    CHECK(config.text.layer_norm_eps == text["layer_norm_eps"].get<float>());
    CHECK(config.image_text_hidden_size == json["image_text_hidden_size"].get<std::int64_t>());

    CHECK(config.tokens.bos == 30522);
    CHECK(config.tokens.eos == 102);
    CHECK(config.tokens.pad == 0);
    CHECK(config.tokens.cls == 101);
    CHECK(config.tokens.sep == 102);
    CHECK(config.tokens.enc == 30523);
    CHECK(config.tokens.unk == 100);
    CHECK(config.tokens.mask == 103);

    CHECK(config.tokenizer.do_lower_case);
    CHECK_FALSE(config.tokenizer.strip_accents.has_value());
    CHECK(config.tokenizer.tokenize_chinese_chars);
    CHECK(config.tokenizer.max_input_chars_per_word == 100);

    const auto pre = blip_test::read_json(model_dir("tiny-caption") / "preprocessor_config.json");
    CHECK(config.preprocess.height == pre["size"]["height"].get<std::int64_t>());
    CHECK(config.preprocess.width == pre["size"]["width"].get<std::int64_t>());
    CHECK(config.preprocess.resample == 3);
    CHECK(config.preprocess.do_resize);
    CHECK(config.preprocess.do_rescale);
    CHECK(config.preprocess.do_normalize);
    CHECK(config.preprocess.do_convert_rgb);
    CHECK(config.preprocess.rescale_factor == pre["rescale_factor"].get<double>());
    for (int c = 0; c < 3; ++c) {
        CHECK(config.preprocess.image_mean[c] == pre["image_mean"][c].get<float>());
        CHECK(config.preprocess.image_std[c] == pre["image_std"][c].get<float>());
    }
}

TEST_CASE("convert vocabulary and token types") {
    BLIP_REQUIRE_GOLDEN();
    const auto file = blip::gguf::File::open(converted("tiny-caption").string());
    const auto tokens = file->get_string_array(blip::keys::kTokens);
    const auto types = file->get_int_array(blip::keys::kTokenTypes);
    REQUIRE(tokens.size() == 30524);
    REQUIRE(types.size() == 30524);
    CHECK(tokens[30522] == "[DEC]");
    CHECK(tokens[30523] == "[ENC]");
    CHECK(tokens[0] == "[PAD]");
    CHECK(tokens[101] == "[CLS]");
    CHECK(tokens[102] == "[SEP]");

    std::istringstream vocab(blip_test::read_text(model_dir("tiny-caption") / "vocab.txt"));
    std::string line;
    std::size_t id = 0;
    std::size_t mismatches = 0;
    while (std::getline(vocab, line)) mismatches += tokens[id++] != line;
    CHECK(id == 30522);
    CHECK(mismatches == 0);

    const std::set<std::size_t> control = {0, 100, 101, 102, 103, 30522, 30523};
    for (std::size_t i = 0; i < types.size(); ++i) {
        if (control.count(i)) {
            CHECK_MESSAGE(types[i] == 3, "token " << i << " " << tokens[i]);
        } else if (types[i] != 1) {
            FAIL_CHECK("token " << i << " " << tokens[i] << " has type " << types[i] << ", expected 1");
        }
    }
}

TEST_CASE("hf folder tokenizer variants") {
    BLIP_REQUIRE_GOLDEN();
    // Added tokens from tokenizer.json and special tokens as AddedToken objects.
    fs::path dir = copy_without_weights("tiny-caption", "tokenizer-json");
    fs::remove(dir / "added_tokens.json");
    std::ofstream(dir / "tokenizer.json") << R"({"added_tokens": [
        {"id": 0, "content": "[PAD]", "special": true},
        {"id": 30522, "content": "[DEC]", "special": true},
        {"id": 30523, "content": "[ENC]", "special": true}]})";
    std::ofstream(dir / "special_tokens_map.json") << R"({"additional_special_tokens": [{"content": "[ENC]"}],
        "bos_token": {"content": "[DEC]", "lstrip": false}, "unk_token": "[UNK]"})";
    blip::convert::HfModel model = blip::convert::read_hf_folder(dir.string());
    CHECK(model.warnings.empty());
    CHECK(model.vocabulary.tokens.size() == 30524);
    CHECK(model.vocabulary.tokens[30523] == "[ENC]");
    CHECK(model.vocabulary.types[30522] == 3);
    CHECK(model.vocabulary.types[30523] == 3);
    CHECK(model.config.tokens.enc == 30523);
    CHECK(model.config.tokens.bos == 30522);
    CHECK(model.config.name == "tokenizer-json");

    // No added tokens anywhere: [DEC] and [ENC] follow vocab.txt as in BLIP's tokenizer.
    dir = copy_without_weights("tiny-caption", "no-added-tokens");
    fs::remove(dir / "added_tokens.json");
    std::ofstream(dir / "special_tokens_map.json") << R"({"cls_token": "[CLS]"})";
    model = blip::convert::read_hf_folder(dir.string() + "/");
    REQUIRE(model.warnings.size() == 1);
    CHECK(model.warnings[0].find("appended [DEC] = 30522 and [ENC] = 30523") != std::string::npos);
    CHECK(model.vocabulary.tokens[30522] == "[DEC]");
    CHECK(model.vocabulary.types[30523] == 3);
    CHECK(model.config.tokens.enc == 30523);
    CHECK(model.config.name == "no-added-tokens");

    // A vocabulary that does not fill vocab_size.
    dir = copy_without_weights("tiny-caption", "vocab-size");
    auto config = blip_test::read_json(dir / "config.json");
    config["text_config"]["vocab_size"] = 30530;
    std::ofstream(dir / "config.json") << config.dump();
    std::string message = error_of([&] { blip::convert::read_hf_folder(dir.string()); });
    CHECK(message.find("the tokenizer has 30524 tokens (30522 in vocab.txt, 2 added)") != std::string::npos);
    CHECK(message.find("vocab_size = 30530") != std::string::npos);

    // An added token id that leaves a gap after vocab.txt.
    dir = copy_without_weights("tiny-caption", "token-gap");
    std::ofstream(dir / "added_tokens.json") << R"({"[DEC]": 30522, "[ENC]": 30524})";
    message = error_of([&] { blip::convert::read_hf_folder(dir.string()); });
    CHECK(message.find("\"[ENC]\" has id 30524") != std::string::npos);

    // Settings that the runtime does not implement.
    dir = copy_without_weights("tiny-caption", "gelu-tanh");
    config = blip_test::read_json(dir / "config.json");
    config["vision_config"]["hidden_act"] = "gelu_new";
    std::ofstream(dir / "config.json") << config.dump();
    message = error_of([&] { blip::convert::read_hf_folder(dir.string()); });
    CHECK(message.find("config.json: vision_config.hidden_act is \"gelu_new\"") != std::string::npos);
}

TEST_CASE("float to half rounds to nearest even") {
    using blip::convert::float_to_half;
    CHECK(float_to_half(1.0f) == 0x3c00);
    CHECK(float_to_half(-2.0f) == 0xc000);
    CHECK(float_to_half(0.0f) == 0x0000);
    CHECK(float_to_half(-0.0f) == 0x8000);
    CHECK(float_to_half(65504.0f) == 0x7bff);
    CHECK(float_to_half(65519.99f) == 0x7bff);
    CHECK(float_to_half(65520.0f) == 0x7c00);
    CHECK(float_to_half(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK(float_to_half(-std::numeric_limits<float>::infinity()) == 0xfc00);
    const std::uint16_t nan = float_to_half(std::numeric_limits<float>::quiet_NaN());
    CHECK((nan & 0x7c00) == 0x7c00);
    CHECK((nan & 0x03ff) != 0);
    CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);          // tie rounds to even (zero)
    CHECK(float_to_half(std::ldexp(3.0f, -25)) == 0x0002);          // tie rounds to even (2 units)
    CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);   // tie between 0x3c00 and 0x3c01
    CHECK(float_to_half(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);   // tie between 0x3c01 and 0x3c02

    // Every finite half survives the round trip. Every midpoint between neighbours rounds to
    // the one with an even mantissa, and the floats just beside it round to the nearer one.
    int failures = 0;
    for (std::uint32_t bits = 0; bits < 0x7c00; ++bits) {
        for (const std::uint32_t sign : {0u, 0x8000u}) {
            const auto half = static_cast<std::uint16_t>(bits | sign);
            const float value = half_to_float(half);
            failures += float_to_half(value) != half;
            if (bits + 1 < 0x7c00) {
                const float next = half_to_float(static_cast<std::uint16_t>((bits + 1) | sign));
                const float middle = value + (next - value) / 2;  // exact in float
                const auto even = static_cast<std::uint16_t>(((bits & 1) ? bits + 1 : bits) | sign);
                failures += float_to_half(middle) != even;
                failures += float_to_half(std::nextafter(middle, value)) != half;
                failures += float_to_half(std::nextafter(middle, next)) != static_cast<std::uint16_t>((bits + 1) | sign);
            }
        }
    }
    CHECK(failures == 0);
}

TEST_CASE("convert caption f16 within half precision") {
    BLIP_REQUIRE_GOLDEN();
    const auto file = blip::gguf::File::open(converted("tiny-caption", DType::F16).string());
    const blip::BlipConfig config = blip::read_config(*file);
    CHECK(file->get_int(blip::convert::kFileTypeKey) == 1);
    const auto source = blip::convert::read_safetensors((model_dir("tiny-caption") / "model.safetensors").string());
    std::size_t half_tensors = 0;
    for (const auto& expected : blip::expected_tensors(config)) {
        CAPTURE(expected.name);
        const auto& tensor = file->tensor(expected.name, blip::stored_shape(expected, tensor_type(*file, expected.name)));
        const std::vector<float> original = source.find(expected.name)->to_f32();
        if (expected.role == blip::TensorRole::Other) {
            REQUIRE(tensor.type == DType::F32);
            CHECK(std::memcmp(tensor.data, original.data(), tensor.nbytes) == 0);
            continue;
        }
        REQUIRE(tensor.type == DType::F16);
        ++half_tensors;
        const auto* bits = static_cast<const std::uint8_t*>(tensor.data);
        double worst = 0;
        for (std::size_t i = 0; i < original.size(); ++i) {
            std::uint16_t half;
            std::memcpy(&half, bits + 2 * i, 2);
            // Half precision has 11 significant bits: the error is at most 2^-11 relative, or
            // half the subnormal step 2^-25 near zero.
            const double bound = std::max(std::abs(original[i]) * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
            worst = std::max(worst, std::abs(half_to_float(half) - original[i]) / bound);
            if (half != blip::convert::float_to_half(original[i])) worst = 2;
        }
        CHECK(worst <= 1.0);
    }
    CHECK(half_tensors > 0);
    CHECK(file->tensor("text_decoder.bert.embeddings.word_embeddings.weight").type == DType::F16);
    // The patch convolution takes the weight type, as the [hidden, channels * patch * patch]
    // matrix of its product.
    const auto& patch_kernel = file->tensor("vision_model.embeddings.patch_embedding.weight");
    CHECK(patch_kernel.type == DType::F16);
    CHECK(patch_kernel.shape == std::vector<std::int64_t>{48, 3 * 16 * 16});
    CHECK(file->tensor("vision_model.embeddings.position_embedding").type == DType::F32);
}

TEST_CASE("patch convolution read as matrix") {
    BLIP_REQUIRE_GOLDEN();
    // The f32 file with its 4-D patch convolution rewritten as the [hidden, 3 * 16 * 16]
    // matrix that other types store gives the same image_embeds, bit for bit.
    const auto kernel_file = blip::gguf::File::open(converted("tiny-caption").string());
    const blip::BlipConfig config = blip::read_config(*kernel_file);
    const std::string name = "vision_model.embeddings.patch_embedding.weight";
    blip::gguf::Writer writer;
    blip::write_config(writer, config);
    for (const auto& tensor : kernel_file->tensors()) {
        const auto* data = static_cast<const std::uint8_t*>(tensor.data);
        std::vector<std::int64_t> shape = tensor.shape;
        if (tensor.name == name) {
            REQUIRE(shape == std::vector<std::int64_t>{48, 3, 16, 16});
            shape = {48, 3 * 16 * 16};
        }
        writer.add_tensor(tensor.name, tensor.type, shape, std::vector<std::uint8_t>(data, data + tensor.nbytes));
    }
    const auto matrix_file = blip::gguf::File::from_buffer(writer.to_bytes(), "matrix.gguf");
    CHECK(matrix_file->tensor(name).shape == std::vector<std::int64_t>{48, 768});

    blip::BlipVisionModel from_kernel, from_matrix;
    from_kernel.load(*kernel_file, "vision_model", config.vision);
    from_matrix.load(*matrix_file, "vision_model", config.vision);
    const auto pixels = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" /
                                            "cats.png.pixel_values.npy");
    const std::vector<float> pixel_values(pixels.data.begin(), pixels.data.end());
    const std::vector<float> expected = from_kernel.forward(pixel_values);
    const std::vector<float> actual = from_matrix.forward(pixel_values);
    REQUIRE(actual.size() == expected.size());
    CHECK(std::memcmp(actual.data(), expected.data(), actual.size() * sizeof(float)) == 0);
}

TEST_CASE("convert vqa and itm tensor lists") {
    BLIP_REQUIRE_GOLDEN();
    for (const auto& [model, task] : {std::pair<std::string, Task>{"tiny-vqa", Task::Vqa}, {"tiny-itm", Task::Itm}}) {
        CAPTURE(model);
        const fs::path output = blip_test::scratch_dir("convert") / (model + ".gguf");
        const ConvertReport report = convert(model_dir(model), output);
        CHECK(report.task == task);
        const auto file = blip::gguf::File::open(output.string());
        const blip::BlipConfig config = blip::read_config(*file);
        CHECK(config.task == task);
        CHECK(tensor_names(*file) == expected_names(config));
        const auto source = blip::convert::read_safetensors((model_dir(model) / "model.safetensors").string());
        std::size_t differing = 0;
        for (const auto& expected : blip::expected_tensors(config)) {
            const auto& tensor = file->tensor(expected.name, expected.shape);
            const auto* original = source.find(expected.name);
            REQUIRE(original != nullptr);
            differing += tensor.nbytes != original->nbytes || std::memcmp(tensor.data, original->data, tensor.nbytes) != 0;
        }
        CHECK(differing == 0);
        // Only the position_ids buffers stay behind.
        for (const auto& name : report.ignored) {
            CAPTURE(name);
            CHECK(blip::is_derived_buffer(name));
        }
    }
}

TEST_CASE("expected tensors match full-size manifests") {
    BLIP_REQUIRE_GOLDEN();
    const std::map<std::string, Task> tasks = {{"BlipForConditionalGeneration", Task::Caption},
                                               {"BlipForQuestionAnswering", Task::Vqa},
                                               {"BlipForImageTextRetrieval", Task::Itm}};
    for (const auto& entry : fs::directory_iterator(blip_test::golden_dir() / "manifests")) {
        CAPTURE(entry.path().filename().string());
        const auto manifest = blip_test::read_json(entry.path());
        // A model folder with the manifest's config.json and the tiny models' tokenizer files.
        const fs::path dir = copy_without_weights("tiny-caption", "manifest-" + entry.path().stem().string());
        std::ofstream(dir / "config.json") << manifest["config"].dump(1);
        auto pre = blip_test::read_json(dir / "preprocessor_config.json");
        pre["size"] = {{"height", manifest["config"]["vision_config"]["image_size"]},
                       {"width", manifest["config"]["vision_config"]["image_size"]}};
        std::ofstream(dir / "preprocessor_config.json") << pre.dump(1);

        blip::convert::HfModel model = blip::convert::read_hf_folder(dir.string());
        model.config.task = tasks.at(manifest["architecture"].get<std::string>());
        std::map<std::string, std::vector<std::int64_t>> actual;
        for (const auto& [name, info] : manifest["tensors"].items()) actual[name] = info["shape"].get<std::vector<std::int64_t>>();
        for (const auto& tied : blip::tied_tensors(model.config.task)) {
            REQUIRE(actual.count(tied.alias));
            CHECK(actual[tied.alias] == actual[tied.name]);
            actual.erase(tied.alias);
        }
        for (auto it = actual.begin(); it != actual.end();) it = blip::is_derived_buffer(it->first) ? actual.erase(it) : std::next(it);

        std::map<std::string, std::vector<std::int64_t>> expected;
        for (const auto& tensor : blip::expected_tensors(model.config)) expected[tensor.name] = tensor.shape;
        CHECK(expected.size() == actual.size());
        for (const auto& [name, shape] : actual) {
            CAPTURE(name);
            REQUIRE(expected.count(name));
            CHECK(expected[name] == shape);
        }
    }
}

TEST_CASE("convert rejects folder without config.json") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("no-config");
    fs::copy_file(model_dir("tiny-caption") / "vocab.txt", dir / "vocab.txt");
    const fs::path output = dir / "out.gguf";
    const std::string message = error_of([&] { convert(dir, output); });
    CHECK(message.find("no config.json") != std::string::npos);
    CHECK(message.find(dir.string()) != std::string::npos);
    CHECK(no_output_left(output));
    CHECK(error_of([&] { convert(dir / "missing", output); }).find("not a folder") != std::string::npos);
}

TEST_CASE("convert rejects folder without weights") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = copy_without_weights("tiny-caption", "no-weights");
    const fs::path output = dir / "out.gguf";
    const std::string message = error_of([&] { convert(dir, output); });
    CAPTURE(message);
    CHECK(message.find("model.safetensors") != std::string::npos);
    CHECK(message.find("pytorch_model.bin") != std::string::npos);
    CHECK(no_output_left(output));
}

TEST_CASE("convert rejects invalid JSON") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = copy_without_weights("tiny-caption", "bad-json");
    fs::create_symlink(model_dir("tiny-caption") / "model.safetensors", dir / "model.safetensors");
    {
        std::ofstream config(dir / "config.json");
        config << "{\n  \"model_type\": \"blip\",\n  \"text_config\": {\n    \"hidden_size\": 32,,\n";
    }
    const fs::path output = dir / "out.gguf";
    std::string message = error_of([&] { convert(dir, output); });
    CAPTURE(message);
    CHECK(message.find((dir / "config.json").string()) != std::string::npos);
    CHECK(message.find("invalid JSON") != std::string::npos);
    CHECK(message.find("line 4") != std::string::npos);
    CHECK(no_output_left(output));

    // A value of the wrong type names the key.
    copy_writable(model_dir("tiny-caption") / "config.json", dir / "config.json");
    {
        std::ofstream pre(dir / "preprocessor_config.json");
        pre << R"({"size": {"height": 64, "width": 64}, "image_mean": [0.5, 0.5]})";
    }
    message = error_of([&] { convert(dir, output); });
    CHECK(message.find("image_mean") != std::string::npos);
    CHECK(no_output_left(output));
}

TEST_CASE("convert rejects tensor with wrong shape") {
    BLIP_REQUIRE_GOLDEN();
    const std::string name = "text_decoder.bert.encoder.layer.0.intermediate.dense.weight";
    const fs::path dir = edited_copy("tiny-caption", "wrong-shape", [&](nlohmann::ordered_json& header) {
        REQUIRE(header[name]["shape"] == nlohmann::ordered_json::array({64, 32}));
        header[name]["shape"] = {32, 64};  // same byte count, transposed
    });
    const fs::path output = dir / "out.gguf";
    {
        std::ofstream old(output);
        old << "previous contents";
    }
    const std::string message = error_of([&] { convert(dir, output); });
    CAPTURE(message);
    CHECK(message.find(name) != std::string::npos);
    CHECK(message.find("[32, 64]") != std::string::npos);
    CHECK(message.find("expected [64, 32]") != std::string::npos);
    CHECK(blip_test::read_text(output) == "previous contents");
    CHECK(!fs::exists(output.string() + ".tmp"));
}

TEST_CASE("convert rejects layers beyond config") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = edited_copy("tiny-caption", "extra-layer", [](nlohmann::ordered_json& header) {
        header["vision_model.encoder.layers.2.layer_norm1.weight"] = header["text_decoder.bert.embeddings.position_ids"];
        header.erase("text_decoder.bert.embeddings.position_ids");
    });
    const fs::path output = dir / "out.gguf";
    const std::string message = error_of([&] { convert(dir, output); });
    CAPTURE(message);
    CHECK(message.find("vision_model.encoder.layers.2.layer_norm1.weight") != std::string::npos);
    CHECK(message.find("num_hidden_layers") != std::string::npos);
    CHECK(no_output_left(output));
}

TEST_CASE("convert task detection and override") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("task-override");
    const fs::path output = dir / "out.gguf";
    // An ITM checkpoint converted as a captioner lacks the decoder.
    const std::string message = error_of([&] { convert(model_dir("tiny-itm"), output, DType::F32, Task::Caption); });
    CAPTURE(message);
    CHECK(message.find("missing tensor text_decoder.bert.embeddings.word_embeddings.weight") != std::string::npos);
    CHECK(message.find("tensors do not match config.json") != std::string::npos);
    CHECK(no_output_left(output));

    // A VQA checkpoint converted as a captioner drops the text encoder.
    const ConvertReport report = convert(model_dir("tiny-vqa"), output, DType::F32, Task::Caption);
    CHECK(report.task == Task::Caption);
    CHECK(std::count_if(report.ignored.begin(), report.ignored.end(),
                        [](const std::string& name) { return name.rfind("text_encoder.", 0) == 0; }) > 0);

    // Neither decoder nor encoder: no task to detect.
    const fs::path vision_only = edited_copy("tiny-caption", "vision-only", [](nlohmann::ordered_json& header) {
        for (auto it = header.begin(); it != header.end();) {
            if (it.key().rfind("text_decoder.", 0) == 0) it = header.erase(it);
            else ++it;
        }
    });
    CHECK(error_of([&] { convert(vision_only, output); }).find("--task") != std::string::npos);
}

TEST_CASE("convert rejects missing output folder") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path output = fresh_dir("no-output-dir") / "missing" / "out.gguf";
    const std::string message = error_of([&] { convert(model_dir("tiny-caption"), output); });
    CAPTURE(message);
    CHECK(message.find("does not exist") != std::string::npos);
    CHECK(message.find(output.string()) != std::string::npos);
    CHECK(no_output_left(output));
    CHECK(!fs::exists(output.parent_path()));
}

TEST_CASE("reader rejects truncated converted file") {
    BLIP_REQUIRE_GOLDEN();
    // Reads the file as the model loader does: the configuration, then every tensor by shape.
    const auto load_all = [](const std::vector<std::uint8_t>& bytes) {
        const auto file = blip::gguf::File::from_buffer(bytes, "cut.gguf");
        const blip::BlipConfig config = blip::read_config(*file);
        for (const auto& tensor : blip::expected_tensors(config)) file->tensor(tensor.name, tensor.shape);
    };
    const std::string bytes = blip_test::read_text(converted("tiny-caption"));
    for (const double fraction : {0.0, 0.001, 0.01, 0.5, 0.999}) {
        CAPTURE(fraction);
        const auto size = static_cast<std::size_t>(bytes.size() * fraction);
        std::vector<std::uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
        CHECK_THROWS_AS(load_all(prefix), blip::Error);
    }
}

TEST_CASE("reader rejects converted file with wrong shape") {
    BLIP_REQUIRE_GOLDEN();
    const auto good = blip::gguf::File::open(converted("tiny-caption").string());
    const blip::BlipConfig config = blip::read_config(*good);
    const std::string name = "vision_model.encoder.layers.1.mlp.fc1.weight";

    blip::gguf::Writer writer;
    blip::write_config(writer, config);
    for (const auto& tensor : good->tensors()) {
        const auto* data = static_cast<const std::uint8_t*>(tensor.data);
        std::vector<std::uint8_t> bytes(data, data + tensor.nbytes);
        std::vector<std::int64_t> shape = tensor.shape;
        if (tensor.name == name) std::swap(shape[0], shape[1]);
        writer.add_tensor(tensor.name, tensor.type, shape, std::move(bytes));
    }
    const auto file = blip::gguf::File::from_buffer(writer.to_bytes(), "swapped.gguf");
    const blip::BlipConfig back = blip::read_config(*file);
    std::string message;
    for (const auto& tensor : blip::expected_tensors(back)) {
        try {
            file->tensor(tensor.name, tensor.shape);
        } catch (const blip::Error& error) {
            message += error.what();
        }
    }
    CHECK(message == "swapped.gguf: tensor " + name + " has shape [48, 96], expected [96, 48] from the model's configuration");
}

TEST_CASE("info prints metadata and tensors") {
    BLIP_REQUIRE_GOLDEN();
    std::ostringstream out;
    blip::convert::print_info(converted("tiny-caption", DType::F16).string(), out);
    const std::string text = out.str();
    CAPTURE(text.substr(0, 3000));
    CHECK(text.find("general.architecture") != std::string::npos);
    CHECK(text.find("\"blip\"") != std::string::npos);
    CHECK(text.find("[string x 30524] \"[PAD]\", \"[unused0]\"") != std::string::npos);
    CHECK(text.find("[i32 x 30524] 3, 1, 1") != std::string::npos);
    CHECK(text.find("blip.preprocess.image_mean") != std::string::npos);
    CHECK(text.find("text_decoder.bert.embeddings.word_embeddings.weight") != std::string::npos);
    CHECK(text.find("[30524, 32]") != std::string::npos);
    CHECK(text.find("total: 91 tensors") != std::string::npos);
    CHECK(text.find("f16") != std::string::npos);
}

TEST_CASE("blip-convert command line") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path binary = blip_test::built_tool("convert", "blip-convert");
    if (binary.empty()) return;
    const fs::path dir = fresh_dir("command-line");
    // blip_test::run_command leaves the output in dir/stdout and dir/stderr.
    const auto run = [&](const std::string& arguments) {
        return blip_test::run_command(dir, binary.string() + " " + arguments).status;
    };
    const auto stdout_text = [&] { return blip_test::read_text(dir / "stdout"); };
    const auto stderr_text = [&] { return blip_test::read_text(dir / "stderr"); };

    CHECK(run("--help") == 0);
    for (const char* option : {"--output", "--type", "--task", "--verbose", "--info", "--help"}) {
        CAPTURE(option);
        CHECK(stdout_text().find(option) != std::string::npos);
    }

    const fs::path output = dir / "tiny.gguf";
    CHECK(run(model_dir("tiny-caption").string() + " -o " + output.string() + " --type f16 --verbose") == 0);
    CHECK(stdout_text().find("ignored tensor: text_decoder.bert.embeddings.position_ids") != std::string::npos);
    CHECK(stderr_text().empty());
    CHECK(fs::exists(output));

    CHECK(run("--info " + output.string()) == 0);
    CHECK(stdout_text().find("total: 91 tensors") != std::string::npos);

    CHECK(run((dir / "missing").string() + " -o " + (dir / "x.gguf").string()) == 1);
    CHECK(stderr_text().rfind("blip-convert: error: ", 0) == 0);
    CHECK(stdout_text().empty());

    std::ofstream(dir / "not-gguf.txt") << "plain text";
    CHECK(run("--info " + (dir / "not-gguf.txt").string()) == 1);
    CHECK(stderr_text().find("not a GGUF file") != std::string::npos);

    CHECK(run(model_dir("tiny-caption").string()) == 2);
    CHECK(stderr_text().find("blip-convert: error: no output file given") == 0);
    CHECK(run("--type f8 x -o y") == 2);
    CHECK(run("--bogus") == 2);
}

TEST_CASE("blip-convert explains unreadable inputs") {
    const fs::path binary = blip_test::built_tool("convert", "blip-convert");
    if (binary.empty()) return;
    const fs::path dir = fresh_dir("unreadable-inputs");
    const std::string output = (dir / "out.gguf").string();

    const auto missing = blip_test::run_command(dir, binary.string() + " " + (dir / "missing-dir").string() + " -o " + output);
    CAPTURE(missing.err);
    CHECK(missing.status == 1);
    CHECK(missing.err.find("missing-dir: " + std::string(std::strerror(ENOENT))) != std::string::npos);
    CHECK(missing.err.find("a Hugging Face model folder or a checkpoint file") != std::string::npos);

    std::ofstream(dir / "fake.pth") << "not a zip archive, only text\n";
    const auto text = blip_test::run_command(dir, binary.string() + " " + (dir / "fake.pth").string() + " -o " + output);
    CAPTURE(text.err);
    CHECK(text.status == 1);
    CHECK(text.err.find("fake.pth is not a PyTorch checkpoint") != std::string::npos);
    CHECK(text.err.find("zip archive header") != std::string::npos);
    CHECK(text.err.find("safetensors") == std::string::npos);

    std::ofstream(dir / "short.bin") << "abc";
    const auto short_file = blip_test::run_command(dir, binary.string() + " " + (dir / "short.bin").string() + " -o " + output);
    CAPTURE(short_file.err);
    CHECK(short_file.status == 1);
    CHECK(short_file.err.find("short.bin is not a PyTorch checkpoint") != std::string::npos);
    CHECK(short_file.err.find("safetensors") == std::string::npos);
    CHECK(!fs::exists(output));
}

}  // namespace test_convert
