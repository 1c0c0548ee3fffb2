// blip-convert on every checkpoint layout and output type. The tiny golden models as
// safetensors, deduplicated safetensors, sharded safetensors, pytorch_model.bin and
// Salesforce's original .pth files give identical files and outputs. Each --type stores the
// right ggml types and sizes and dequantizes within the type's error. Also: per-group
// types, position embedding resizing, the shipped configurations, and the command line's
// errors for damaged checkpoints.
#include "convert/convert.hpp"

#include <blip/gguf/reader.hpp>
#include <blip/model/caption.hpp>
#include <blip/model/expected_tensors.hpp>
#include <blip/model/metadata.hpp>
#include <blip/model/text.hpp>
#include <blip/model/vision.hpp>
#include <blip/quant/quantize.hpp>


#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/command.hpp"
#include "support/errors.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"
#include "support/synthetic_model.hpp"

namespace test_convert_layouts {

namespace {

namespace fs = std::filesystem;
using blip::DType;
using blip::Task;
using blip::convert::ConvertOptions;
using blip::convert::ConvertReport;

fs::path model_dir(const std::string& name) { return blip_test::golden_dir() / "models" / name; }

fs::path fresh_dir(const std::string& name) { return blip_test::fresh_scratch_dir("convert_layouts", name); }

const blip::convert::ShippedFiles& shipped_files() {
    static const blip::convert::ShippedFiles files =
        blip::convert::read_shipped_files((fs::path(BLIP_SOURCE_DIR) / "convert").string());
    return files;
}

ConvertReport convert_folder(const fs::path& input, const fs::path& output, DType type = DType::F32) {
    ConvertOptions options;
    options.input_dir = input.string();
    options.output_path = output.string();
    options.type = type;
    return blip::convert::convert_folder(options);
}

ConvertReport convert_file(const fs::path& input, const fs::path& output, const std::string& config,
                           std::optional<Task> task = std::nullopt, std::int64_t image_size = 0) {
    ConvertOptions options;
    options.input_file = input.string();
    options.output_path = output.string();
    options.config = config;
    options.task = task;
    options.image_size = image_size;
    options.shipped = &shipped_files();
    return blip::convert::convert_checkpoint_file(options);
}

// Converts a golden model folder once per test program and returns the GGUF path.
fs::path converted_folder(const std::string& model) {
    static std::map<std::string, fs::path> cache;
    auto it = cache.find(model);
    if (it != cache.end()) return it->second;
    const fs::path output = blip_test::scratch_dir("convert_layouts") / (model + ".gguf");
    convert_folder(model_dir(model), output);
    return cache[model] = output;
}

using blip_test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

bool same_value(const blip::gguf::Value& a, const blip::gguf::Value& b) {
    if (a.type != b.type || a.u != b.u || a.i != b.i || a.s != b.s || a.array_type != b.array_type ||
        a.items.size() != b.items.size())
        return false;
    if (!(a.f == b.f || (std::isnan(a.f) && std::isnan(b.f)))) return false;
    for (std::size_t i = 0; i < a.items.size(); ++i) {
        if (!same_value(a.items[i], b.items[i])) return false;
    }
    return true;
}

// Checks that two GGUF files hold the same metadata (but for `skipped_keys`) and the same
// tensors, byte for byte, in the same order.
void check_same_file(const fs::path& expected_path, const fs::path& actual_path, const std::set<std::string>& skipped_keys) {
    const auto expected = blip::gguf::File::open(expected_path.string());
    const auto actual = blip::gguf::File::open(actual_path.string());
    std::set<std::string> expected_keys, actual_keys;
    for (const auto& [key, value] : expected->metadata()) {
        if (skipped_keys.count(key)) continue;
        expected_keys.insert(key);
        CAPTURE(key);
        const blip::gguf::Value* other = actual->find(key);
        REQUIRE(other != nullptr);
        CHECK(same_value(value, *other));
    }
    for (const auto& [key, value] : actual->metadata()) {
        if (!skipped_keys.count(key)) actual_keys.insert(key);
    }
    CHECK(expected_keys == actual_keys);

    REQUIRE(expected->tensors().size() == actual->tensors().size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < expected->tensors().size(); ++i) {
        const auto& a = expected->tensors()[i];
        const auto& b = actual->tensors()[i];
        CAPTURE(a.name);
        CHECK(a.name == b.name);
        CHECK(a.type == b.type);
        CHECK(a.shape == b.shape);
        REQUIRE(a.nbytes == b.nbytes);
        differing += std::memcmp(a.data, b.data, a.nbytes) != 0;
    }
    CHECK(differing == 0);
}

std::vector<float> to_floats(const blip_test::NpyArray& array) { return {array.data.begin(), array.data.end()}; }

std::vector<float> golden_pixels(const std::string& image) {
    return to_floats(blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" / (image + ".pixel_values.npy")));
}

// Result of one blip-convert run.
using RunResult = blip_test::CommandResult;

fs::path convert_binary() { return fs::path(BLIP_BINARY_DIR) / "convert" / "blip-convert"; }

RunResult run_convert(const std::string& arguments) {
    return blip_test::run_command(blip_test::scratch_dir("convert_layouts"), convert_binary().string() + " " + arguments);
}

using blip_test::copy_writable;

fs::path copy_without_weights(const std::string& model, const std::string& name) {
    return blip_test::copy_without_weights("convert_layouts", model, name);
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
    REQUIRE(out.good());
}

std::uint32_t load_u32(const std::string& bytes, std::size_t at) {
    std::uint32_t value;
    std::memcpy(&value, bytes.data() + at, 4);
    return value;
}

blip_test::NamedTensor to_named(const blip::convert::SourceTensor& tensor) {
    return {tensor.name, tensor.shape, tensor.to_f32()};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Layouts

TEST_CASE("original pth equals safetensors conversion") {
    BLIP_REQUIRE_GOLDEN();
    for (const auto& [model, task] : {std::pair<std::string, Task>{"tiny-caption", Task::Caption},
                                      {"tiny-vqa", Task::Vqa},
                                      {"tiny-itm", Task::Itm}}) {
        CAPTURE(model);
        const fs::path original = model_dir(model + "-original.pth");
        const fs::path dir = fresh_dir("original-" + model);

        // --config with the model folder: its config.json, tokenizer files and preprocessing.
        const ConvertReport from_folder = convert_file(original, dir / "folder.gguf", model_dir(model).string());
        CHECK(from_folder.task == task);
        check_same_file(converted_folder(model), dir / "folder.gguf", {blip::keys::kName});
        CHECK(blip::gguf::File::open((dir / "folder.gguf").string())->get_string(blip::keys::kName) == model + "-original");
        REQUIRE(!from_folder.notes.empty());
        CHECK(contains(from_folder.notes.front(), std::string("task: ") + blip::task_name(task)));

        // --config with config.json alone: the shipped vocabulary and default preprocessing.
        const ConvertReport from_json =
            convert_file(original, dir / "json.gguf", (model_dir(model) / "config.json").string(), task);
        CHECK(from_json.notes.empty());
        check_same_file(converted_folder(model), dir / "json.gguf", {blip::keys::kName});
    }
}

TEST_CASE("original pth lists unused tensors") {
    BLIP_REQUIRE_GOLDEN();
    // The VQA file converted for captioning leaves the question encoder behind.
    const fs::path dir = fresh_dir("original-unused");
    const ConvertReport report = convert_file(model_dir("tiny-vqa-original.pth"), dir / "out.gguf",
                                              model_dir("tiny-vqa").string(), Task::Caption);
    CHECK(report.task == Task::Caption);
    std::size_t encoder_tensors = 0;
    for (const std::string& name : report.ignored) encoder_tensors += name.rfind("text_encoder.", 0) == 0;
    CHECK(encoder_tensors > 0);
    CHECK(encoder_tensors == report.ignored.size());
}

TEST_CASE("pytorch bin file with folder config") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("bin-file");
    convert_file(model_dir("tiny-caption-bin") / "pytorch_model.bin", dir / "out.gguf",
                 model_dir("tiny-caption-bin").string());
    check_same_file(converted_folder("tiny-caption"), dir / "out.gguf", {blip::keys::kName});
}

TEST_CASE("dedup bin and sharded folders equal safetensors") {
    BLIP_REQUIRE_GOLDEN();
    // A sharded copy of tiny-caption: two shards and model.safetensors.index.json.
    const fs::path sharded = copy_without_weights("tiny-caption", "tiny-caption-sharded");
    const auto checkpoint =
        blip::convert::read_safetensors((model_dir("tiny-caption") / "model.safetensors").string());
    std::vector<blip_test::NamedTensor> first, second;
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (const auto& tensor : checkpoint.tensors()) {
        if (blip::is_derived_buffer(tensor.name)) continue;  // int64 position_ids, which the models compute
        const bool vision = tensor.name.rfind("vision_model.", 0) == 0;
        (vision ? first : second).push_back(to_named(tensor));
        weight_map[tensor.name] = vision ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    blip_test::write_safetensors(sharded / "model-00001-of-00002.safetensors", first);
    blip_test::write_safetensors(sharded / "model-00002-of-00002.safetensors", second);
    const nlohmann::ordered_json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    write_bytes(sharded / "model.safetensors.index.json", index.dump(2));

    for (const std::string model : {"tiny-caption-dedup", "tiny-caption-bin"}) {
        CAPTURE(model);
        const fs::path output = blip_test::scratch_dir("convert_layouts") / (model + ".gguf");
        convert_folder(model_dir(model), output);
        check_same_file(converted_folder("tiny-caption"), output, {blip::keys::kName});
    }
    const fs::path output = sharded / "out.gguf";
    convert_folder(sharded, output);
    check_same_file(converted_folder("tiny-caption"), output, {blip::keys::kName});
}

TEST_CASE("captioner from every layout matches golden") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("caption-outputs");
    convert_file(model_dir("tiny-caption-original.pth"), dir / "original.gguf",
                 (model_dir("tiny-caption") / "config.json").string());
    convert_folder(model_dir("tiny-caption-bin"), dir / "bin.gguf");
    convert_folder(model_dir("tiny-caption-dedup"), dir / "dedup.gguf");

    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json")["cases"];
    const blip::BlipForConditionalGeneration reference(blip::gguf::File::open(converted_folder("tiny-caption").string()));
    for (const char* layout : {"original", "bin", "dedup"}) {
        CAPTURE(layout);
        const blip::BlipForConditionalGeneration model(blip::gguf::File::open((dir / (std::string(layout) + ".gguf")).string()));
        for (const auto& item : cases) {
            const std::string image = item["image"];
            CAPTURE(image);
            const std::vector<float> pixels = golden_pixels(image);
            const std::vector<float> embeds = model.vision_model.forward(pixels);
            CHECK(embeds == reference.vision_model.forward(pixels));
            const auto golden_embeds = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-caption" /
                                                           (image + ".image_embeds.npy"));
            REQUIRE(embeds.size() == golden_embeds.size());
            CHECK(blip_test::max_abs_diff(embeds, golden_embeds) < 1e-4);
            blip::GenerationConfig greedy;
            greedy.max_length = 40;
            CHECK(model.generate(embeds, {}, greedy) == item["greedy"].get<std::vector<std::int32_t>>());
        }
    }
}

TEST_CASE("vqa and itm from original pth match golden") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("vqa-itm-outputs");

    convert_file(model_dir("tiny-vqa-original.pth"), dir / "vqa.gguf", (model_dir("tiny-vqa") / "config.json").string());
    const auto vqa_file = blip::gguf::File::open((dir / "vqa.gguf").string());
    const blip::BlipConfig vqa_config = blip::read_config(*vqa_file);
    blip::BlipVisionModel vqa_vision;
    blip::BlipTextModel question_encoder;
    vqa_vision.load(*vqa_file, "vision_model", vqa_config.vision);
    question_encoder.load(*vqa_file, "text_encoder", vqa_config.text);
    const auto vqa_cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"];
    std::set<std::string> images_seen;
    for (const auto& item : vqa_cases) {
        // question_embeds.npy belongs to the image's first question.
        const std::string image = item["image"];
        if (!images_seen.insert(image).second) continue;
        CAPTURE(image);
        const std::vector<float> embeds = vqa_vision.forward(golden_pixels(image));
        const std::vector<float> question = question_encoder.encode(
            item["input_ids"].get<std::vector<std::int32_t>>(), {}, 1, embeds.data(), vqa_vision.num_tokens());
        const auto expected = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-vqa" /
                                                  (image + ".question_embeds.npy"));
        REQUIRE(question.size() == expected.size());
        CHECK(blip_test::max_abs_diff(question, expected) < 1e-4);
    }
    CHECK(images_seen.size() == 3);

    convert_file(model_dir("tiny-itm-original.pth"), dir / "itm.gguf", (model_dir("tiny-itm") / "config.json").string());
    const auto itm_file = blip::gguf::File::open((dir / "itm.gguf").string());
    const blip::BlipConfig itm_config = blip::read_config(*itm_file);
    blip::BlipVisionModel itm_vision;
    blip::BlipTextModel text_encoder;
    blip::Linear vision_proj, itm_head;
    itm_vision.load(*itm_file, "vision_model", itm_config.vision);
    text_encoder.load(*itm_file, "text_encoder", itm_config.text);
    vision_proj.load(*itm_file, "vision_proj", itm_config.image_text_hidden_size, itm_config.vision.hidden_size);
    itm_head.load(*itm_file, "itm_head", 2, itm_config.text.hidden_size);
    const auto itm_cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-itm.json")["cases"];
    for (const auto& item : itm_cases) {
        const std::string image = item["image"];
        CAPTURE(image);
        const std::vector<float> embeds = itm_vision.forward(golden_pixels(image));

        // image_feat: the normalized vision_proj of the class token's embedding.
        std::vector<float> feature(static_cast<std::size_t>(itm_config.image_text_hidden_size));
        vision_proj.forward(embeds.data(), 1, feature.data());
        double norm = 0;
        for (const float value : feature) norm += static_cast<double>(value) * value;
        for (float& value : feature) value = static_cast<float>(value / std::sqrt(norm));
        const auto expected_feature = blip_test::read_npy(blip_test::golden_dir() / "expected" / "tiny-itm" /
                                                          (image + ".image_feat.npy"));
        REQUIRE(feature.size() == expected_feature.size());
        CHECK(blip_test::max_abs_diff(feature, expected_feature) < 1e-4);

        // itm_logits_unpadded: itm_head on the image-grounded encoding's first token.
        std::vector<std::int32_t> ids;
        for (const auto& id : item["input_ids_padded35"]) {
            if (id.get<std::int32_t>() != 0) ids.push_back(id.get<std::int32_t>());
        }
        const std::vector<float> encoded = text_encoder.encode(ids, {}, 1, embeds.data(), itm_vision.num_tokens());
        float logits[2];
        itm_head.forward(encoded.data(), 1, logits);
        const auto expected_logits = item["itm_logits_unpadded"].get<std::vector<double>>();
        CHECK(std::abs(logits[0] - expected_logits[0]) < 1e-3);
        CHECK(std::abs(logits[1] - expected_logits[1]) < 1e-3);
    }
}

TEST_CASE("task inferred only when unambiguous") {
    BLIP_REQUIRE_GOLDEN();
    // Salesforce's pre-training files hold text_encoder, text_decoder and itm_head at once.
    const fs::path dir = fresh_dir("ambiguous-task");
    const auto vqa = blip::convert::read_pytorch_zip(model_dir("tiny-vqa-original.pth").string());
    std::vector<blip_test::NamedTensor> tensors;
    for (const auto& tensor : vqa.tensors()) tensors.push_back(to_named(tensor));
    tensors.push_back({"itm_head.weight", {2, 32}, std::vector<float>(64, 0.5f)});
    tensors.push_back({"itm_head.bias", {2}, {0.0f, 0.0f}});
    blip_test::write_safetensors(dir / "pretrain.safetensors", tensors);

    const fs::path output = dir / "out.gguf";
    const std::string config = model_dir("tiny-vqa").string();
    const std::string message = error_of([&] { convert_file(dir / "pretrain.safetensors", output, config); });
    CAPTURE(message);
    CHECK(contains(message, "cannot tell the task"));
    CHECK(contains(message, "pass --task"));
    CHECK(!fs::exists(output));

    const ConvertReport report = convert_file(dir / "pretrain.safetensors", output, config, Task::Vqa);
    CHECK(report.task == Task::Vqa);
    CHECK(std::count(report.ignored.begin(), report.ignored.end(), "itm_head.weight") == 1);
    CHECK(report.notes.empty());
    check_same_file(converted_folder("tiny-vqa"), output, {blip::keys::kName});
}

TEST_CASE("checkpoint file config errors") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("config-errors");
    const fs::path output = dir / "out.gguf";
    const fs::path original = model_dir("tiny-caption-original.pth");

    // The tiny model is neither base nor large.
    std::string message = error_of([&] { convert_file(original, output, ""); });
    CHECK(contains(message, "vision width 48 is neither base (768) nor large (1024)"));
    CHECK(contains(message, "--config"));

    // The shipped base configuration does not fit the tiny weights.
    message = error_of([&] { convert_file(original, output, "base"); });
    CAPTURE(message);
    CHECK(contains(message, "do not match the shipped configuration \"base\""));
    CHECK(contains(message, "vision_model.embeddings.class_embedding has shape [1, 1, 48], expected [1, 1, 768]"));

    message = error_of([&] { convert_file(original, output, (dir / "missing.json").string()); });
    CHECK(contains(message, "not base, large, an existing config.json or a model folder"));

    // A config.json whose vocab_size the shipped vocabulary does not fill.
    auto config = blip_test::read_json(model_dir("tiny-caption") / "config.json");
    config["text_config"]["vocab_size"] = 30600;
    write_bytes(dir / "config.json", config.dump());
    message = error_of([&] { convert_file(original, output, (dir / "config.json").string()); });
    CHECK(contains(message, "vocab_size = 30600"));
    CHECK(contains(message, "shipped bert-base-uncased vocabulary"));
    CHECK(!fs::exists(output));
}

TEST_CASE("shipped configs match transformers manifests") {
    BLIP_REQUIRE_GOLDEN();
    const std::map<std::string, Task> tasks = {{"BlipForConditionalGeneration", Task::Caption},
                                               {"BlipForQuestionAnswering", Task::Vqa},
                                               {"BlipForImageTextRetrieval", Task::Itm}};
    for (const auto& entry : fs::directory_iterator(blip_test::golden_dir() / "manifests")) {
        CAPTURE(entry.path().filename().string());
        const auto manifest = blip_test::read_json(entry.path());
        const auto& vision = manifest["config"]["vision_config"];
        const auto& text = manifest["config"]["text_config"];
        const std::string name = vision["hidden_size"].get<std::int64_t>() == 1024 ? "large" : "base";

        blip::convert::HfModel model;
        const std::string& json_text = name == "base" ? shipped_files().base_config : shipped_files().large_config;
        blip::convert::detail::parse_model_config(nlohmann::json::parse(json_text), name, model);
        const blip::BlipConfig& config = model.config;
        CHECK(config.vision.hidden_size == vision["hidden_size"].get<std::int64_t>());
        CHECK(config.vision.intermediate_size == vision["intermediate_size"].get<std::int64_t>());
        CHECK(config.vision.num_attention_heads == vision["num_attention_heads"].get<std::int64_t>());
        CHECK(config.vision.num_hidden_layers == vision["num_hidden_layers"].get<std::int64_t>());
        CHECK(config.vision.image_size == vision["image_size"].get<std::int64_t>());
        CHECK(config.vision.patch_size == vision["patch_size"].get<std::int64_t>());
        CHECK(config.vision.layer_norm_eps == vision["layer_norm_eps"].get<float>());
        CHECK(config.text.vocab_size == text["vocab_size"].get<std::int64_t>());
        CHECK(config.text.hidden_size == text["hidden_size"].get<std::int64_t>());
        CHECK(config.text.intermediate_size == text["intermediate_size"].get<std::int64_t>());
        CHECK(config.text.num_attention_heads == text["num_attention_heads"].get<std::int64_t>());
        CHECK(config.text.num_hidden_layers == text["num_hidden_layers"].get<std::int64_t>());
        CHECK(config.text.max_position_embeddings == text["max_position_embeddings"].get<std::int64_t>());
        CHECK(config.text.encoder_hidden_size == text["encoder_hidden_size"].get<std::int64_t>());
        CHECK(config.text.layer_norm_eps == text["layer_norm_eps"].get<float>());
        CHECK(config.image_text_hidden_size == manifest["config"]["image_text_hidden_size"].get<std::int64_t>());

        // Every tensor of the transformers model, tied aliases and position_ids aside.
        model.config.task = tasks.at(manifest["architecture"].get<std::string>());
        std::set<std::string> aliases;
        for (const auto& tied : blip::tied_tensors(model.config.task)) aliases.insert(tied.alias);
        std::map<std::string, std::vector<std::int64_t>> actual;
        for (const auto& [tensor, info] : manifest["tensors"].items()) {
            if (!aliases.count(tensor) && !blip::is_derived_buffer(tensor))
                actual[tensor] = info["shape"].get<std::vector<std::int64_t>>();
        }
        std::map<std::string, std::vector<std::int64_t>> expected;
        for (const auto& tensor : blip::expected_tensors(model.config)) expected[tensor.name] = tensor.shape;
        CHECK(expected == actual);
    }
}

// ---------------------------------------------------------------------------------------
// Output types

namespace {

// The type a weight of `cols` values per row must get when `requested` is asked for,
// written out from the documented fallback rules rather than taken from the converter.
DType expected_storage(DType requested, std::int64_t cols) {
    const auto fits = [&](DType type) { return cols % static_cast<std::int64_t>(blip::dtype_traits(type).block_size) == 0; };
    if (fits(requested)) return requested;
    if (requested == DType::Q4_K && fits(DType::Q4_1)) return DType::Q4_1;
    if ((requested == DType::Q5_K || requested == DType::Q6_K) && fits(DType::Q8_0)) return DType::Q8_0;
    return DType::F16;
}

// Root-mean-square error of a dequantized tensor over the RMS of its values that each
// type must stay within on normally distributed weights. Estimated as step / sqrt(12), the
// ratio is about 2^-12 for f16, 2^-9 for bf16, 0.005 for q8_0, 0.016 for q6_k, 0.035 for
// q5_k, 0.07 for q4_k and 0.08 for q4_0 and q4_1. The bounds leave some margin above that.
double relative_rms_bound(DType type) {
    switch (type) {
        case DType::F16: return 5e-4;
        case DType::BF16: return 4e-3;
        case DType::Q8_0: return 0.008;
        case DType::Q6_K: return 0.025;
        case DType::Q5_K: return 0.05;
        case DType::Q4_K: return 0.1;
        case DType::Q4_0: return 0.11;
        case DType::Q4_1: return 0.11;
        default: return 0;
    }
}

// Largest error of one element of a q8_0, q4_0 or q4_1 block, from the block's scale:
// half a step (a whole step at q4_0's clamped end), plus the f16 rounding of the scale
// and minimum.
double block_error_bound(DType type, const float* block) {
    float min = block[0], max = block[0], amax = 0;
    for (int i = 0; i < 32; ++i) {
        min = std::min(min, block[i]);
        max = std::max(max, block[i]);
        amax = std::max(amax, std::fabs(block[i]));
    }
    switch (type) {
        case DType::Q8_0: return 0.6 * amax / 127;
        case DType::Q4_0: return 1.01 * amax / 8;
        case DType::Q4_1: return 0.55 * (max - min) / 15 + std::fabs(min) * 1e-3;
        default: return 0;
    }
}

// Checks every tensor of the file `path`, converted from `source` with `requested` types
// per group, against the source values: storage type, byte size, and the dequantization
// error. Tensors that stay f32 must be identical.
void check_converted_types(const fs::path& path, const blip::convert::Checkpoint& source,
                           const blip::convert::TensorTypes& requested, std::set<DType>& stored_types) {
    const auto file = blip::gguf::File::open(path.string());
    const blip::BlipConfig config = blip::read_config(*file);
    for (const auto& expected : blip::expected_tensors(config)) {
        CAPTURE(expected.name);
        const std::vector<float> original = source.find(expected.name)->to_f32();
        const bool vision = expected.name.rfind("vision_model.", 0) == 0 || expected.name.rfind("vision_proj.", 0) == 0;
        const bool convolution = expected.role == blip::TensorRole::ConvolutionWeight;

        DType want = DType::F32;
        if (expected.role == blip::TensorRole::LinearWeight) want = vision ? requested.vision : requested.text;
        if (convolution) want = requested.vision;
        // The patch convolution is stored in at least 8 bits.
        const bool below_8_bits = want == DType::Q4_0 || want == DType::Q4_1 || want == DType::Q4_K ||
                                  want == DType::Q5_K || want == DType::Q6_K;
        if (convolution && below_8_bits) want = DType::Q8_0;
        if (expected.role == blip::TensorRole::TokenEmbedding) want = requested.token_embedding;
        // A convolution kernel [out, channels, height, width] is stored as its
        // [out, channels * height * width] matrix in every type but f32.
        std::vector<std::int64_t> shape = expected.shape;
        if (convolution && want != DType::F32) shape = {shape[0], shape[1] * shape[2] * shape[3]};
        const std::int64_t cols = shape.back();
        const std::int64_t rows = static_cast<std::int64_t>(original.size()) / cols;
        if (want != DType::F32) want = expected_storage(want, cols);
        const auto& tensor = file->tensor(expected.name, shape);
        REQUIRE(tensor.type == want);
        stored_types.insert(tensor.type);

        const std::size_t row_bytes = static_cast<std::size_t>(cols) / blip::dtype_traits(want).block_size *
                                      blip::dtype_traits(want).block_bytes;
        REQUIRE(tensor.nbytes == row_bytes * static_cast<std::size_t>(rows));
        if (want == DType::F32) {
            CHECK(std::memcmp(tensor.data, original.data(), tensor.nbytes) == 0);
            continue;
        }
        // The stored bytes are the quantizer's output for these rows, row after row.
        const auto quantized = blip::quant::quantize_rows(want, original.data(), rows, cols);
        CHECK(std::memcmp(tensor.data, quantized.data(), tensor.nbytes) == 0);

        std::vector<float> restored(original.size());
        const auto* bytes = static_cast<const std::uint8_t*>(tensor.data);
        for (std::int64_t row = 0; row < rows; ++row)
            blip::quant::dequantize_row(want, bytes + static_cast<std::size_t>(row) * row_bytes,
                                        restored.data() + row * cols, cols);
        double error_sum = 0, value_sum = 0;
        std::size_t beyond_bound = 0;
        for (std::size_t i = 0; i < original.size(); ++i) {
            const double error = std::abs(static_cast<double>(restored[i]) - original[i]);
            error_sum += error * error;
            value_sum += static_cast<double>(original[i]) * original[i];
            if (want == DType::F16)
                beyond_bound += error > std::max(std::abs(original[i]) * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
            if (want == DType::BF16) beyond_bound += error > std::abs(original[i]) * std::ldexp(1.0, -8);
            if (want == DType::Q8_0 || want == DType::Q4_0 || want == DType::Q4_1)
                beyond_bound += error > block_error_bound(want, original.data() + (i / 32) * 32);
        }
        CHECK(beyond_bound == 0);
        CHECK(std::sqrt(error_sum / value_sum) <= relative_rms_bound(want));
    }
}

blip::convert::TensorTypes uniform_types(DType type) { return {type, type, type}; }

const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                           DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// LLAMA_FTYPE numbers from llama.h.
std::int64_t llama_file_type(DType type) {
    switch (type) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q4_1: return 3;
        case DType::Q8_0: return 7;
        case DType::Q4_K: return 14;
        case DType::Q5_K: return 16;
        case DType::Q6_K: return 18;
        case DType::BF16: return 32;
        default: return -1;
    }
}

}  // namespace

TEST_CASE("each type on 256-wide rows") {
    const fs::path dir = fresh_dir("types-synthetic");
    blip_test::write_synthetic_model(dir / "model", blip_test::SyntheticModel{});
    const auto source = blip::convert::read_safetensors((dir / "model" / "model.safetensors").string());
    for (const DType type : kAllTypes) {
        CAPTURE(blip::dtype_name(type));
        const fs::path output = dir / (std::string(blip::dtype_name(type)) + ".gguf");
        const ConvertReport report = convert_folder(dir / "model", output, type);
        CHECK(report.fallbacks.empty());
        std::set<DType> stored;
        check_converted_types(output, source, uniform_types(type), stored);
        CHECK(stored.count(type) == 1);

        const auto file = blip::gguf::File::open(output.string());
        CHECK(file->get_int(blip::convert::kFileTypeKey) == llama_file_type(type));
        const bool block_type = blip::dtype_traits(type).block_size > 1;
        CHECK(file->has(blip::convert::kQuantizationVersionKey) == block_type);
        if (block_type) CHECK(file->get_int(blip::convert::kQuantizationVersionKey) == 2);

        // Types of fewer than 8 bits store the patch convolution as q8_0, with a note.
        const bool below_8_bits = block_type && type != DType::Q8_0;
        if (below_8_bits) {
            REQUIRE(report.notes.size() == 1);
            CHECK(report.notes[0] == "vision_model.embeddings.patch_embedding.weight: q8_0 instead of " +
                                         std::string(blip::dtype_name(type)) +
                                         " (the patch convolution is stored in at least 8 bits)");
        } else {
            CHECK(report.notes.empty());
        }
    }
}

TEST_CASE("each type on tiny caption with fallbacks") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("types-tiny");
    const auto source = blip::convert::read_safetensors((model_dir("tiny-caption") / "model.safetensors").string());
    for (const DType type : kAllTypes) {
        CAPTURE(blip::dtype_name(type));
        const fs::path output = dir / (std::string(blip::dtype_name(type)) + ".gguf");
        const ConvertReport report = convert_folder(model_dir("tiny-caption"), output, type);
        std::set<DType> stored;
        check_converted_types(output, source, uniform_types(type), stored);
        // The vision tower's 48-wide rows fit no block type.
        const bool block_type = blip::dtype_traits(type).block_size > 1;
        CHECK(report.fallbacks.empty() == !block_type);
        if (block_type) {
            CHECK(stored.count(DType::F16) == 1);
            const std::string qkv = "vision_model.encoder.layers.0.self_attn.qkv.weight: f16 instead of " +
                                    std::string(blip::dtype_name(type)) + " (rows of 48 values";
            CHECK(std::count_if(report.fallbacks.begin(), report.fallbacks.end(),
                                [&](const std::string& line) { return line.rfind(qkv, 0) == 0; }) == 1);
        }
    }
}

TEST_CASE("quantized captioner stays close to f32") {
    BLIP_REQUIRE_GOLDEN();
    // Loads q8_0 and q4_k conversions (fallback types included) and compares the vision
    // outputs with the f32 model's.
    const fs::path dir = fresh_dir("quantized-outputs");
    const blip::BlipForConditionalGeneration reference(blip::gguf::File::open(converted_folder("tiny-caption").string()));
    const std::vector<float> pixels = golden_pixels("cats.png");
    const std::vector<float> reference_embeds = reference.vision_model.forward(pixels);
    for (const auto& [type, bound] : {std::pair<DType, double>{DType::Q8_0, 0.02}, {DType::Q4_K, 0.2}}) {
        CAPTURE(blip::dtype_name(type));
        const fs::path output = dir / (std::string(blip::dtype_name(type)) + ".gguf");
        convert_folder(model_dir("tiny-caption"), output, type);
        const blip::BlipForConditionalGeneration model(blip::gguf::File::open(output.string()));
        const std::vector<float> embeds = model.vision_model.forward(pixels);
        double error = 0, scale = 0;
        for (std::size_t i = 0; i < embeds.size(); ++i) {
            error = std::max(error, std::abs(static_cast<double>(embeds[i]) - reference_embeds[i]));
            scale = std::max(scale, std::abs(static_cast<double>(reference_embeds[i])));
        }
        MESSAGE(blip::dtype_name(type) << ": image_embeds max error " << error << " of max " << scale);
        CHECK(error <= bound * scale);
    }
}

TEST_CASE("per-group types") {
    const fs::path dir = fresh_dir("group-types");
    blip_test::write_synthetic_model(dir / "model", blip_test::SyntheticModel{});
    const auto source = blip::convert::read_safetensors((dir / "model" / "model.safetensors").string());

    ConvertOptions options;
    options.input_dir = (dir / "model").string();
    options.output_path = (dir / "mixed.gguf").string();
    options.type = DType::Q4_K;
    options.vision_type = DType::Q8_0;
    options.token_embedding_type = DType::F16;
    ConvertReport report = blip::convert::convert_folder(options);
    CHECK(report.types.vision == DType::Q8_0);
    CHECK(report.types.text == DType::Q4_K);
    CHECK(report.types.token_embedding == DType::F16);
    std::set<DType> stored;
    check_converted_types(dir / "mixed.gguf", source, {DType::Q8_0, DType::Q4_K, DType::F16}, stored);
    CHECK(stored == std::set<DType>{DType::F32, DType::F16, DType::Q8_0, DType::Q4_K});
    auto file = blip::gguf::File::open(options.output_path);
    CHECK(!file->has(blip::convert::kFileTypeKey));  // mixed files name no llama.cpp file type
    CHECK(file->get_int(blip::convert::kQuantizationVersionKey) == 2);

    // --lm-head defaults to the --text type.
    options.output_path = (dir / "text.gguf").string();
    options.type = DType::F32;
    options.vision_type.reset();
    options.text_type = DType::Q6_K;
    options.token_embedding_type.reset();
    report = blip::convert::convert_folder(options);
    CHECK(report.types.token_embedding == DType::Q6_K);
    stored.clear();
    check_converted_types(dir / "text.gguf", source, {DType::F32, DType::Q6_K, DType::Q6_K}, stored);
    CHECK(stored == std::set<DType>{DType::F32, DType::Q6_K});
    file = blip::gguf::File::open(options.output_path);
    CHECK(file->tensor("text_decoder.bert.embeddings.word_embeddings.weight").type == DType::Q6_K);
    CHECK(file->tensor("vision_model.encoder.layers.0.mlp.fc1.weight").type == DType::F32);

    options.type = DType::I32;
    CHECK(contains(error_of([&] { blip::convert::convert_folder(options); }), "not a weight type"));
}

TEST_CASE("base captioning file sizes per type") {
    // Tensor bytes of blip-image-captioning-base per type, from the shipped base
    // configuration, relative to f32. The metadata adds about 0.6 MB to every file.
    blip::convert::HfModel model;
    blip::convert::detail::parse_model_config(nlohmann::json::parse(shipped_files().base_config), "base", model);
    model.config.task = Task::Caption;
    const auto tensors = blip::expected_tensors(model.config);

    const auto bytes_for = [&](DType type) {
        std::uint64_t total = 0;
        for (const auto& tensor : tensors) {
            const DType stored = blip::convert::storage_type(tensor, uniform_types(type));
            std::uint64_t count = 1;
            for (const std::int64_t dim : tensor.shape) count *= static_cast<std::uint64_t>(dim);
            total += blip::dtype_bytes(stored, count);
        }
        return total;
    };
    const double f32 = static_cast<double>(bytes_for(DType::F32));
    CHECK(f32 == doctest::Approx(223971644.0 * 4));  // parameters without the tied copies

    std::map<DType, double> ratio;
    for (const DType type : kAllTypes) {
        ratio[type] = static_cast<double>(bytes_for(type)) / f32;
        MESSAGE(blip::dtype_name(type) << ": " << ratio[type] * 100 << "% of f32");
    }

    // 1.17 million parameters (biases, norms, class and position embeddings), 0.5% of
    // them, stay f32, so q8_0 lands at 26.95%. Storing the patch convolution in the weight
    // type brought q8_0 down from 27.14%.
    CHECK(ratio[DType::F16] == doctest::Approx(0.5).epsilon(0.01));
    CHECK(ratio[DType::BF16] == doctest::Approx(0.5).epsilon(0.01));
    CHECK(ratio[DType::Q8_0] <= 0.27);
    CHECK(ratio[DType::Q4_0] <= 0.15);
    CHECK(ratio[DType::Q4_1] <= 0.163);
    CHECK(ratio[DType::Q4_K] <= 0.15);
    CHECK(ratio[DType::Q5_K] <= 0.179);
    CHECK(ratio[DType::Q6_K] <= 0.212);
}

// Writes blip-image-captioning-base with random weights in every type and prints the file
// sizes. It takes a minute or more and about 2 GB of memory, so it runs only on request:
// test_convert_layouts --no-skip -tc="base captioning files with random weights"
TEST_CASE("base captioning files with random weights" * doctest::skip()) {
    blip::convert::HfModel model;
    const auto ids = blip::convert::detail::parse_model_config(nlohmann::json::parse(shipped_files().base_config),
                                                               "base", model);
    blip::convert::detail::use_shipped_vocabulary(shipped_files().bert_vocabulary, ids, model);
    model.config.task = Task::Caption;
    model.config.name = "random-base";

    blip::convert::Checkpoint checkpoint;
    checkpoint.source = "random weights";
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.0f, 0.03f);
    for (const auto& expected : blip::expected_tensors(model.config)) {
        std::size_t count = 1;
        for (const std::int64_t dim : expected.shape) count *= static_cast<std::size_t>(dim);
        std::vector<float> values(count);
        for (float& value : values) value = normal(random);
        std::vector<std::uint8_t> bytes(count * sizeof(float));
        std::memcpy(bytes.data(), values.data(), bytes.size());
        blip::convert::SourceTensor tensor;
        tensor.name = expected.name;
        tensor.shape = expected.shape;
        tensor.nbytes = bytes.size();
        tensor.data = checkpoint.store(std::move(bytes));
        checkpoint.add(std::move(tensor));
    }

    const fs::path dir = fresh_dir("random-base");
    std::uintmax_t f32_size = 0;
    for (const DType type : kAllTypes) {
        const fs::path output = dir / (std::string(blip::dtype_name(type)) + ".gguf");
        ConvertReport report;
        const auto start = std::chrono::steady_clock::now();
        blip::convert::detail::write_model_file(model, checkpoint, uniform_types(type), output.string(),
                                                {"base", "base"}, report);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const std::uintmax_t size = fs::file_size(output);
        if (type == DType::F32) f32_size = size;
        MESSAGE(blip::dtype_name(type) << ": " << size << " bytes, " << 100.0 * static_cast<double>(size) / f32_size
                                       << "% of f32, written in " << seconds << " s");
        fs::remove(output);
    }
}

// ---------------------------------------------------------------------------------------
// Position embedding resizing

TEST_CASE("image size resizes position embedding") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path dir = fresh_dir("image-size");
    const auto source = blip::convert::read_safetensors((model_dir("tiny-caption") / "model.safetensors").string());
    const auto* position = source.find("vision_model.embeddings.position_embedding");
    REQUIRE(position != nullptr);
    const std::vector<float> original = position->to_f32();
    const std::vector<float> resized = blip::convert::interpolate_position_embedding(*position, 6);

    const auto check_resized = [&](const fs::path& path) {
        const auto file = blip::gguf::File::open(path.string());
        const blip::BlipConfig config = blip::read_config(*file);
        CHECK(config.vision.image_size == 96);
        CHECK(config.preprocess.height == 96);
        CHECK(config.preprocess.width == 96);
        const auto& tensor = file->tensor("vision_model.embeddings.position_embedding");
        REQUIRE(tensor.shape == std::vector<std::int64_t>{1, 37, 48});
        REQUIRE(tensor.type == DType::F32);
        // The class token's row is kept as stored; the grid is interpolated.
        CHECK(std::memcmp(tensor.data, original.data(), 48 * sizeof(float)) == 0);
        CHECK(std::memcmp(tensor.data, resized.data(), resized.size() * sizeof(float)) == 0);
        // The model loads at the new size and runs a 96x96 input.
        const blip::BlipForConditionalGeneration model(blip::gguf::File::open(path.string()));
        CHECK(model.vision_model.forward(std::vector<float>(3 * 96 * 96, 0.25f)).size() == 37 * 48);
    };

    ConvertOptions options;
    options.input_dir = model_dir("tiny-caption").string();
    options.output_path = (dir / "folder.gguf").string();
    options.image_size = 96;
    ConvertReport report = blip::convert::convert_folder(options);
    REQUIRE(report.notes.size() == 1);
    CHECK(report.notes[0] == "position embedding resized from 4x4 to 6x6 patches (image size 64 to 96 pixels) by "
                             "bicubic interpolation");
    check_resized(dir / "folder.gguf");

    report = convert_file(model_dir("tiny-caption-original.pth"), dir / "original.gguf",
                          (model_dir("tiny-caption") / "config.json").string(), Task::Caption, 96);
    CHECK(std::count(report.notes.begin(), report.notes.end(), report.notes.back()) == 1);
    CHECK(contains(report.notes.back(), "from 4x4 to 6x6 patches"));
    check_resized(dir / "original.gguf");

    // The stored size is kept without interpolation.
    report = convert_file(model_dir("tiny-caption-original.pth"), dir / "same.gguf",
                          (model_dir("tiny-caption") / "config.json").string(), Task::Caption, 64);
    CHECK(report.notes.empty());
    check_same_file(converted_folder("tiny-caption"), dir / "same.gguf", {blip::keys::kName});

    // A config.json at another size than the checkpoint resizes too, as Salesforce's
    // loader does for model_base_vqa_capfilt_large.pth (480 pixels) at 384.
    auto config = blip_test::read_json(model_dir("tiny-caption") / "config.json");
    config["vision_config"]["image_size"] = 96;
    write_bytes(dir / "config96.json", config.dump());
    report = convert_file(model_dir("tiny-caption-original.pth"), dir / "config96.gguf",
                          (dir / "config96.json").string(), Task::Caption);
    CHECK(contains(report.notes.back(), "from 4x4 to 6x6 patches"));
    check_resized(dir / "config96.gguf");

    // A size that is not a multiple of the patch size takes the whole patches that fit, as
    // transformers does, so 100 pixels hold 6x6 patches of 16.
    options.image_size = 100;
    options.output_path = (dir / "size100.gguf").string();
    report = blip::convert::convert_folder(options);
    REQUIRE(report.notes.size() == 1);
    CHECK(contains(report.notes[0], "from 4x4 to 6x6 patches (image size 64 to 100 pixels)"));
    {
        const auto file = blip::gguf::File::open(options.output_path);
        CHECK(blip::read_config(*file).vision.image_size == 100);
        CHECK(file->tensor("vision_model.embeddings.position_embedding").shape == std::vector<std::int64_t>{1, 37, 48});
        const blip::BlipForConditionalGeneration model(file);
        CHECK(model.vision_model.forward(std::vector<float>(3 * 100 * 100, 0.25f)).size() == 37 * 48);
    }

    // 70 pixels hold the stored 4x4 grid, so the position embedding stays as stored and only
    // the input size changes.
    options.image_size = 70;
    options.output_path = (dir / "size70.gguf").string();
    report = blip::convert::convert_folder(options);
    CHECK(report.notes.empty());
    {
        const auto file = blip::gguf::File::open(options.output_path);
        const blip::BlipConfig config70 = blip::read_config(*file);
        CHECK(config70.vision.image_size == 70);
        CHECK(config70.preprocess.height == 70);
        CHECK(config70.preprocess.width == 70);
        const auto stored = blip::gguf::File::open(converted_folder("tiny-caption").string());
        const auto& position = file->tensor("vision_model.embeddings.position_embedding");
        const auto& original = stored->tensor("vision_model.embeddings.position_embedding");
        REQUIRE(position.shape == original.shape);
        CHECK(std::memcmp(position.data, original.data, position.nbytes) == 0);
    }

    for (const std::int64_t size : {8, 8208}) {
        CAPTURE(size);
        options.image_size = size;
        options.output_path = (dir / "bad.gguf").string();
        CHECK(contains(error_of([&] { blip::convert::convert_folder(options); }),
                       "must be between the patch size 16 and 8192"));
        CHECK(!fs::exists(dir / "bad.gguf"));
    }
}

// ---------------------------------------------------------------------------------------
// Command line

TEST_CASE("blip-convert checkpoint files and types") {
    BLIP_REQUIRE_GOLDEN();
    if (blip_test::built_tool("convert", "blip-convert").empty()) return;
    const fs::path dir = fresh_dir("cli-types");

    RunResult result = run_convert("--help");
    CHECK(result.status == 0);
    for (const char* option : {"--vision", "--text", "--lm-head", "--config", "--image-size", "q4_k", "bf16"}) {
        CAPTURE(option);
        CHECK(contains(result.out, option));
    }

    // An original .pth with config.json only: the compiled-in vocabulary.
    result = run_convert(model_dir("tiny-caption-original.pth").string() + " -o " + (dir / "original.gguf").string() +
                         " --config " + (model_dir("tiny-caption") / "config.json").string());
    CAPTURE(result.err);
    CHECK(result.status == 0);
    CHECK(contains(result.out, "note: task: caption (inferred from the checkpoint's modules; pass --task to choose)"));
    check_same_file(converted_folder("tiny-caption"), dir / "original.gguf", {blip::keys::kName});

    result = run_convert(model_dir("tiny-caption-original.pth").string() + " -o " + (dir / "base.gguf").string() +
                         " --config base");
    CHECK(result.status == 1);
    CHECK(contains(result.err, "do not match the shipped configuration \"base\""));

    result = run_convert(model_dir("tiny-caption").string() + " -o " + (dir / "q4k.gguf").string() +
                         " --type q4_k --verbose");
    CHECK(result.status == 0);
    CHECK(contains(result.out, "fallback type: vision_model.encoder.layers.0.self_attn.qkv.weight: f16 instead of q4_k "
                               "(rows of 48 values are not a multiple of its 256-value blocks)"));
    CHECK(contains(result.out, "fallback type: text_decoder.bert.embeddings.word_embeddings.weight: q4_1 instead of q4_k"));
    CHECK(contains(result.out, "q4_k, "));

    result = run_convert(model_dir("tiny-caption").string() + " -o " + (dir / "q4k.gguf").string() + " --type q4_k");
    CHECK(contains(result.out, "tensors have rows that do not fit the requested type and use another (--verbose lists them)"));

    result = run_convert(model_dir("tiny-caption").string() + " -o " + (dir / "mixed.gguf").string() +
                         " --vision q8_0 --text q4_0 --lm-head bf16");
    CHECK(result.status == 0);
    CHECK(contains(result.out, "vision q8_0, text q4_0, lm-head bf16"));
    result = run_convert("--info " + (dir / "mixed.gguf").string());
    CHECK(contains(result.out, "general.quantization_version"));
    CHECK(contains(result.out, "bf16  [30524, 32]"));

    CHECK(run_convert(model_dir("tiny-caption").string() + " -o x.gguf --config base").status == 1);
    CHECK(run_convert(model_dir("tiny-caption").string() + " -o x.gguf --type i32").status == 2);
    CHECK(run_convert(model_dir("tiny-caption").string() + " -o x.gguf --image-size 12px").status == 2);
    CHECK(run_convert(model_dir("tiny-caption").string() + " -o x.gguf --lm-head").status == 2);
}

TEST_CASE("blip-convert rejects damaged checkpoints") {
    BLIP_REQUIRE_GOLDEN();
    if (blip_test::built_tool("convert", "blip-convert").empty()) return;
    const fs::path dir = fresh_dir("cli-damaged");
    const std::string config = " --config " + model_dir("tiny-caption").string();
    const auto expect_rejected = [&](const std::string& input, const std::string& arguments,
                                     const std::vector<std::string>& parts) {
        const fs::path output = dir / "out.gguf";
        const RunResult result = run_convert(input + " -o " + output.string() + arguments);
        CAPTURE(result.err);
        CHECK(result.status == 1);
        CHECK(result.err.rfind("blip-convert: error: " + input + ": ", 0) == 0);
        for (const std::string& part : parts) CHECK(contains(result.err, part));
        CHECK(!fs::exists(output));
        CHECK(!fs::exists(output.string() + ".tmp"));
    };

    // A pickle that calls a forbidden global: collections.OrderedDict replaced in place by
    // subprocess.check_output, which has the same length.
    std::string pth = blip_test::read_text(model_dir("tiny-caption-original.pth"));
    const std::string allowed = "ccollections\nOrderedDict\n";
    const std::string forbidden = "csubprocess\ncheck_output\n";
    REQUIRE(allowed.size() == forbidden.size());
    std::size_t replaced = 0;
    for (std::size_t at = pth.find(allowed); at != std::string::npos; at = pth.find(allowed, at)) {
        pth.replace(at, allowed.size(), forbidden);
        ++replaced;
    }
    REQUIRE(replaced > 0);
    write_bytes(dir / "forbidden.pth", pth);
    expect_rejected((dir / "forbidden.pth").string(), config, {"forbidden global subprocess.check_output", "data.pkl"});

    // A zip whose central directory gives a storage entry 4 bytes less than the tensor needs.
    pth = blip_test::read_text(model_dir("tiny-caption-original.pth"));
    const std::string entry = "tiny-caption-original/data/0";
    // The central directory record: signature, 42 more bytes with the name length at 28,
    // then the name.
    std::size_t header = std::string::npos;
    for (std::size_t at = pth.find(entry); at != std::string::npos; at = pth.find(entry, at + 1)) {
        if (at >= 46 && load_u32(pth, at - 46) == 0x02014b50 &&
            (load_u32(pth, at - 46 + 28) & 0xffff) == entry.size())
            header = at - 46;
    }
    REQUIRE(header != std::string::npos);
    const std::uint32_t size = load_u32(pth, header + 24);
    REQUIRE(size == 192);
    const std::uint32_t smaller = size - 4;
    std::memcpy(&pth[header + 20], &smaller, 4);
    std::memcpy(&pth[header + 24], &smaller, 4);
    write_bytes(dir / "entry-size.pth", pth);
    expect_rejected((dir / "entry-size.pth").string(), config, {"storage " + entry, "188 bytes"});

    // A safetensors file cut inside its JSON header.
    const std::string safetensors = blip_test::read_text(model_dir("tiny-caption") / "model.safetensors");
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, safetensors.data(), 8);
    write_bytes(dir / "truncated.safetensors", safetensors.substr(0, 8 + header_size / 2));
    expect_rejected((dir / "truncated.safetensors").string(), config,
                    {"header length " + std::to_string(header_size) + " exceeds the file size"});

    // A tensor whose data_offsets run past the end of the file.
    auto json = nlohmann::ordered_json::parse(safetensors.substr(8, header_size));
    const std::uint64_t data_size = safetensors.size() - 8 - header_size;
    auto& offsets = json["vision_model.embeddings.class_embedding"]["data_offsets"];
    const std::uint64_t length = offsets[1].get<std::uint64_t>() - offsets[0].get<std::uint64_t>();
    offsets = {data_size - length + 64, data_size + 64};
    const std::string new_header = json.dump();
    const std::uint64_t new_size = new_header.size();
    std::string edited(reinterpret_cast<const char*>(&new_size), 8);
    edited += new_header + safetensors.substr(8 + header_size);
    const fs::path folder = copy_without_weights("tiny-caption", "cli-damaged-folder");
    write_bytes(folder / "model.safetensors", edited);
    const RunResult result = run_convert(folder.string() + " -o " + (dir / "out.gguf").string());
    CAPTURE(result.err);
    CHECK(result.status == 1);
    CHECK(contains(result.err, "blip-convert: error: " + (folder / "model.safetensors").string() +
                                   ": tensor vision_model.embeddings.class_embedding: data_offsets end at " +
                                   std::to_string(data_size + 64) + " but the data section contains only " +
                                   std::to_string(data_size) + " bytes"));
    CHECK(!fs::exists(dir / "out.gguf"));
}

}  // namespace test_convert_layouts
