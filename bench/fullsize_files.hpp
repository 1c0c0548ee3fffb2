// Full-size model files for the benchmark. Each has the shapes of a published BLIP checkpoint
// (from the golden folder's manifests) and the weights of the full-size weight rule in
// tests/support/fullsize.hpp. The tensors are stored as blip-convert stores them for
// `--type T`, so each file is what a user gets from the published checkpoint, and every run
// can check its captions against the reference token ids without that checkpoint.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <stdlib.h>  // mkdtemp

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/gguf/writer.hpp"
#include "blip/model/expected_tensors.hpp"
#include "blip/model/metadata.hpp"
#include "convert/tensor_types.hpp"
#include "support/fullsize.hpp"

namespace blip::bench {

// A model family of --model ("base" or "large") and the checkpoint of one task whose shapes
// it takes.
struct CheckpointName {
    std::string family;
    Task task = Task::Caption;
    std::string checkpoint;  // "blip-image-captioning-base", ...
};

// Returns the checkpoint of `task` in `family`, or an empty name when none is published
// (there is no large VQA model).
inline CheckpointName checkpoint_name(const std::string& family, Task task) {
    if (family != "base" && family != "large") throw Error("unknown model '" + family + "': use base or large");
    switch (task) {
        case Task::Caption: return {family, task, "blip-image-captioning-" + family};
        case Task::Itm: return {family, task, "blip-itm-" + family + "-coco"};
        case Task::Vqa: return {family, task, family == "base" ? "blip-vqa-base" : ""};
    }
    return {family, task, ""};
}

// Outcome of building one model file.
struct BuildReport {
    std::filesystem::path path;
    bool reused = false;           // the file existed and was not rebuilt
    std::size_t checked_sums = 0;  // tensors whose f32 sum was compared with the reference
    std::vector<std::string> sum_mismatches;
};

// Builds `name` with every nn.Linear weight, the patch convolution and the word embeddings
// requested as `type` (blip-convert --type), at `path`, unless that file exists already.
// The writer renames the file into place only when it is complete, so an existing file is
// a whole one.
inline BuildReport build_model_file(const CheckpointName& name, DType type, const std::filesystem::path& path) {
    BuildReport report;
    report.path = path;
    if (std::filesystem::is_regular_file(path)) {
        report.reused = true;
        return report;
    }
    const auto golden = blip_test::golden_dir();
    const nlohmann::json manifest = blip_test::read_json(golden / "manifests" / (name.checkpoint + ".json"));
    const nlohmann::json& manifest_tensors = manifest.at("tensors");
    // Only the captioning models have reference sums.
    const auto reference_path = golden / "fullsize" / (name.checkpoint + ".cats.png.json");
    nlohmann::json sums = nlohmann::json::object();
    if (std::filesystem::is_regular_file(reference_path)) sums = blip_test::read_json(reference_path).at("tensor_sums");

    BlipConfig config = blip_test::fullsize_config(manifest.at("config"), name.checkpoint);
    config.task = name.task;
    const convert::TensorTypes types{type, type, type};

    gguf::Writer writer;
    write_config(writer, config);
    if (const auto file_type = convert::llama_file_type(type)) writer.set_u32(convert::kFileTypeKey, *file_type);
    bool has_block_type = false;
    for (const ExpectedTensor& tensor : expected_tensors(config)) {
        if (!manifest_tensors.contains(tensor.name))
            throw Error(name.checkpoint + ": tensor " + tensor.name + " that the library reads is not in the manifest");
        const auto manifest_shape = manifest_tensors.at(tensor.name).at("shape").get<std::vector<std::int64_t>>();
        if (manifest_shape != tensor.shape)
            throw Error(name.checkpoint + ": tensor " + tensor.name + " has shape " + gguf::shape_string(manifest_shape) +
                        " in the manifest, but the library expects " + gguf::shape_string(tensor.shape));

        double sum = 0.0;
        std::vector<std::uint8_t> bytes = blip_test::fullsize_tensor(tensor.name, tensor.shape, sum);
        if (sums.contains(tensor.name)) {
            const double expected = sums.at(tensor.name);
            ++report.checked_sums;
            if (std::abs(sum - expected) > 1e-6 * (1.0 + std::abs(expected)))
                report.sum_mismatches.push_back(tensor.name);
        }
        const DType stored = convert::storage_type(tensor, types);
        const std::vector<std::int64_t> stored_shape = blip::stored_shape(tensor, stored);
        if (stored != DType::F32) {
            std::vector<float> values(bytes.size() / sizeof(float));
            std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
            bytes = convert::encode_values(tensor.name, values, stored_shape, stored);
        }
        has_block_type = has_block_type || convert::is_block_type(stored);
        writer.add_tensor(tensor.name, stored, stored_shape, std::move(bytes));
    }
    if (has_block_type) writer.set_u32(convert::kQuantizationVersionKey, convert::kQuantizationVersion);
    std::filesystem::create_directories(path.parent_path());
    writer.write_file(path.string());
    return report;
}

// The folder for the model files: the requested one, whose files are kept, or a new
// temporary folder named `prefix`-XXXXXX that is removed at the end, also after an error.
struct WorkFolder {
    std::filesystem::path path;
    bool temporary = false;

    WorkFolder(const std::string& requested, const std::string& prefix) {
        if (!requested.empty()) {
            path = requested;
            std::filesystem::create_directories(path);
            return;
        }
        std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (mkdtemp(pattern.data()) == nullptr)
            throw Error("could not create a temporary folder from " + pattern + ": " + std::strerror(errno) +
                        " (pass --work-dir)");
        path = pattern;
        temporary = true;
    }
    ~WorkFolder() {
        if (!temporary) return;
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    WorkFolder(const WorkFolder&) = delete;
    WorkFolder& operator=(const WorkFolder&) = delete;
};

}  // namespace blip::bench
