// Full-size model files for the benchmark. Each has the shapes of a published BLIP checkpoint
// (from the golden folder's manifests) and the weights of the full-size weight rule in
// tests/support/fullsize.hpp, written as GGUF in any weight type. So every run can check its
// captions against the reference token ids without the published checkpoint files.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/gguf/writer.hpp"
#include "blip/kernels/linear.hpp"
#include "blip/model/metadata.hpp"
#include "blip/quant/quantize.hpp"
#include "support/fullsize.hpp"

namespace blip::bench {

// A family name of --model and the checkpoint whose shapes it takes.
struct ModelName {
    std::string family;      // "base" or "large"
    std::string checkpoint;  // "blip-image-captioning-base", ...
};

inline ModelName caption_model_name(const std::string& family) {
    if (family == "base") return {family, "blip-image-captioning-base"};
    if (family == "large") return {family, "blip-image-captioning-large"};
    throw Error("unknown model '" + family + "': use base or large");
}

// Whether tensor `name` of `shape` is stored as `type` rather than f32. Only the 2-D weights
// of nn.Linear layers are: the library reads embeddings, norms and biases as f32 only, the
// patch embedding (a 4-D convolution kernel) stays f32 too, and a quantized row must be a
// whole number of blocks.
inline bool stores_as(const std::string& name, const std::vector<std::int64_t>& shape, DType type) {
    if (type == DType::F32 || shape.size() != 2) return false;
    if (!blip_test::ends_with(name, ".weight")) return false;
    if (name.find("embedding") != std::string::npos) return false;
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("layernorm") != std::string::npos || lower.find("layer_norm") != std::string::npos) return false;
    return quant::row_length_supported(type, shape[1]);
}

// Outcome of building one model file.
struct BuildReport {
    std::filesystem::path path;
    bool reused = false;           // the file existed and was not rebuilt
    std::size_t checked_sums = 0;  // tensors whose f32 sum was compared with the reference
    std::vector<std::string> sum_mismatches;
    double seconds = 0.0;
};

// Builds `checkpoint` in `type` at `path` unless that file exists already. Tied tensors are
// stored once (the word embeddings and cls.predictions.bias), as the library expects.
inline BuildReport build_model_file(const std::string& checkpoint, DType type, const std::filesystem::path& path) {
    BuildReport report;
    report.path = path;
    if (std::filesystem::is_regular_file(path)) {
        report.reused = true;
        return report;
    }
    const auto golden = blip_test::golden_dir();
    const nlohmann::json manifest = blip_test::read_json(golden / "manifests" / (checkpoint + ".json"));
    const auto reference_path = golden / "fullsize" / (checkpoint + ".cats.png.json");
    nlohmann::json sums = nlohmann::json::object();
    if (std::filesystem::is_regular_file(reference_path)) sums = blip_test::read_json(reference_path).at("tensor_sums");

    gguf::Writer writer;
    write_config(writer, blip_test::fullsize_config(manifest.at("config"), checkpoint));
    for (const auto& [name, info] : manifest.at("tensors").items()) {
        if (blip_test::ends_with(name, ".position_ids") || name == "text_decoder.cls.predictions.decoder.weight" ||
            name == "text_decoder.cls.predictions.decoder.bias")
            continue;
        const std::vector<std::int64_t> shape = info.at("shape").get<std::vector<std::int64_t>>();
        double sum = 0.0;
        std::vector<std::uint8_t> bytes = blip_test::fullsize_tensor(name, shape, sum);
        if (sums.contains(name)) {
            const double expected = sums.at(name);
            ++report.checked_sums;
            if (std::abs(sum - expected) > 1e-6 * (1.0 + std::abs(expected)))
                report.sum_mismatches.push_back(name);
        }
        if (stores_as(name, shape, type)) {
            std::vector<float> values(bytes.size() / sizeof(float));
            std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
            bytes = quant::quantize_rows(type, values.data(), shape[0], shape[1]);
            writer.add_tensor(name, type, shape, std::move(bytes));
        } else {
            writer.add_tensor(name, DType::F32, shape, std::move(bytes));
        }
    }
    std::filesystem::create_directories(path.parent_path());
    writer.write_file(path.string());
    return report;
}

}  // namespace blip::bench
