// blip-quant-sizes: file size and accuracy of each weight type on the full-size captioners.
//
// Writes the captioning models of the base and large shapes in every requested type, with
// the weights of the full-size weight rule stored as blip-convert stores them. For each type
// it prints the file size relative to the f32 file and the cosine similarity of cats.png's
// image_embeds to the f32 file's and to transformers' reference. It also prints the cosine
// of the first-step logits to the reference, and how many greedy tokens (max_length 30)
// agree with the reference caption.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#define DOCTEST_CONFIG_DISABLE  // the golden-data helpers come from the test support code
#include <nlohmann/json.hpp>

#include "blip/blip.hpp"
#include "fullsize_files.hpp"

namespace {

namespace fs = std::filesystem;
using blip::DType;
using blip::Error;

const char* kUsage = R"(usage: blip-quant-sizes [options]

Writes the full-size captioning models (shapes of blip-image-captioning-base/-large,
weights by the full-size rule) in each weight type and prints, per type, the file size
relative to f32, the cosine similarity of cats.png's image_embeds to the f32 file's and to
transformers' reference, the cosine of logits_step0 to the reference, and the greedy tokens
(max_length 30) that agree with the reference caption.

  --model base,large   model families (default base)
  --types LIST         weight types (default f32,f16,bf16,q8_0,q4_0,q4_1,q4_k,q5_k,q6_k);
                       f32 is always measured, as the baseline
  --work-dir DIR       folder for the model files, kept afterwards and reused by later runs
                       (delete them after changing how the library stores weights); default
                       a new temporary folder whose files are removed as soon as measured
)";

struct Options {
    std::vector<std::string> models = {"base"};
    std::vector<DType> types = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                                DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};
    std::string work_dir;
};

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream stream(text);
    std::string item;
    while (std::getline(stream, item, ',')) {
        if (!item.empty()) items.push_back(item);
    }
    return items;
}

Options parse_options(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value; see --help");
            return argv[++i];
        };
        if (arg == "--model") {
            options.models = split_list(value());
            for (const auto& model : options.models) blip::bench::checkpoint_name(model, blip::Task::Caption);
        } else if (arg == "--types") {
            options.types.clear();
            for (const auto& name : split_list(value())) {
                DType type = DType::F32;
                if (!blip::parse_dtype(name, type) || type == DType::I32)
                    throw Error("unknown weight type '" + name + "' in --types; use f32, f16, bf16, q8_0, q4_0, q4_1, "
                                "q4_k, q5_k or q6_k");
                options.types.push_back(type);
            }
        } else if (arg == "--work-dir") {
            options.work_dir = value();
        } else if (arg == "--help" || arg == "-h") {
            std::cout << kUsage;
            std::exit(0);
        } else {
            throw Error("unknown option '" + arg + "'; see --help");
        }
    }
    if (options.models.empty() || options.types.empty()) throw Error("--model and --types need at least one entry");
    // f32 first: every other type is compared with it.
    options.types.erase(std::remove(options.types.begin(), options.types.end(), DType::F32), options.types.end());
    options.types.insert(options.types.begin(), DType::F32);
    return options;
}


// Lists the types that the file's tensors are stored in, with each type's share of all values.
std::string stored_types(const blip::gguf::File& file) {
    std::map<DType, double> values;
    double total = 0;
    for (const auto& tensor : file.tensors()) {
        values[tensor.type] += static_cast<double>(tensor.numel());
        total += static_cast<double>(tensor.numel());
    }
    std::vector<std::pair<DType, double>> sorted(values.begin(), values.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    std::string text;
    for (const auto& [type, count] : sorted) {
        char part[48];
        std::snprintf(part, sizeof part, "%s%s %.1f%%", text.empty() ? "" : ", ",
                      std::string(blip::dtype_name(type)).c_str(), 100.0 * count / total);
        text += part;
    }
    return text;
}

// transformers' outputs for cats.png and the preprocessed image they were computed from.
struct Reference {
    std::vector<float> pixels;  // [3, image_size, image_size]
    blip_test::NpyArray image_embeds;
    blip_test::NpyArray logits_step0;
    std::vector<std::int32_t> greedy;  // greedy_max30, [DEC] first
};

Reference read_reference(const std::string& checkpoint) {
    const fs::path golden = blip_test::golden_dir();
    Reference reference;
    const auto pixels = blip_test::read_npy(golden / "preprocess" / "cats.png.384.npy");
    reference.pixels.assign(pixels.data.begin(), pixels.data.end());
    reference.image_embeds = blip_test::read_npy(golden / "fullsize" / (checkpoint + ".cats.png.image_embeds.npy"));
    reference.logits_step0 = blip_test::read_npy(golden / "fullsize" / (checkpoint + ".cats.png.logits_step0.npy"));
    reference.greedy = blip_test::read_json(golden / "fullsize" / (checkpoint + ".cats.png.json"))
                           .at("greedy_max30")
                           .get<std::vector<std::int32_t>>();
    return reference;
}

struct Measurement {
    DType type = DType::F32;
    std::uintmax_t file_bytes = 0;
    double embeds_vs_f32 = NAN;
    double embeds_vs_reference = NAN;
    double logits_vs_reference = NAN;
    std::size_t greedy_agreeing = 0;  // tokens after [DEC] before the first difference
    std::size_t greedy_total = 0;     // reference tokens after [DEC]
    std::string stored;
    double seconds = 0;
};

Measurement measure(const std::string& file_path, DType type, const Reference& reference,
                    const std::vector<float>& f32_embeds, std::vector<float>* embeds_out) {
    const auto start = std::chrono::steady_clock::now();
    const auto file = blip::gguf::File::open(file_path);
    const blip::BlipForConditionalGeneration model(file);
    Measurement result;
    result.type = type;
    result.file_bytes = fs::file_size(file_path);
    result.stored = stored_types(*file);

    std::vector<float> embeds = model.vision_model.forward(reference.pixels);
    result.embeds_vs_f32 = f32_embeds.empty() ? 1.0 : blip_test::cosine_similarity(embeds, f32_embeds);
    result.embeds_vs_reference = blip_test::cosine_similarity(embeds, reference.image_embeds.data);
    result.logits_vs_reference =
        blip_test::cosine_similarity(model.decoder_logits(embeds, {model.config.tokens.bos}), reference.logits_step0.data);

    blip::GenerationConfig generation;
    generation.max_length = 30;
    const std::vector<std::int32_t> ids = model.generate(embeds, {}, generation);
    std::size_t prefix = 0;
    while (prefix < ids.size() && prefix < reference.greedy.size() && ids[prefix] == reference.greedy[prefix]) ++prefix;
    result.greedy_agreeing = prefix > 0 ? prefix - 1 : 0;
    result.greedy_total = reference.greedy.size() - 1;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (embeds_out) *embeds_out = std::move(embeds);
    return result;
}

void print_table(const std::string& checkpoint, const std::vector<Measurement>& rows) {
    std::printf("\n%s, cats.png (tensor types: share of values)\n\n", checkpoint.c_str());
    std::printf("| type | file MB | of f32 | cos image_embeds vs f32 | vs reference | cos logits_step0 | greedy tokens "
                "agreeing | stored as |\n");
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    const double f32_bytes = static_cast<double>(rows.front().file_bytes);
    for (const Measurement& row : rows) {
        std::printf("| %s | %.1f | %.2f%% | %.6f | %.6f | %.6f | %zu/%zu | %s |\n",
                    std::string(blip::dtype_name(row.type)).c_str(), static_cast<double>(row.file_bytes) / 1e6,
                    100.0 * static_cast<double>(row.file_bytes) / f32_bytes, row.embeds_vs_f32,
                    row.embeds_vs_reference, row.logits_vs_reference, row.greedy_agreeing, row.greedy_total,
                    row.stored.c_str());
    }
    std::fflush(stdout);
}

int run(const Options& options) {
    blip::bench::WorkFolder work(options.work_dir, "blip-quant-sizes");
    for (const auto& family : options.models) {
        const auto name = blip::bench::checkpoint_name(family, blip::Task::Caption);
        const Reference reference = read_reference(name.checkpoint);
        std::vector<Measurement> rows;
        std::vector<float> f32_embeds;
        for (const DType type : options.types) {
            const std::string type_name(blip::dtype_name(type));
            const fs::path file = work.path / (name.checkpoint + "." + type_name + ".gguf");
            std::fprintf(stderr, "blip-quant-sizes: %s %s: building %s\n", name.checkpoint.c_str(), type_name.c_str(),
                         file.string().c_str());
            const auto build = blip::bench::build_model_file(name, type, file);
            if (!build.sum_mismatches.empty())
                throw Error("the weight rule gives wrong sums for " + std::to_string(build.sum_mismatches.size()) +
                            " tensors of " + name.checkpoint + ", first " + build.sum_mismatches.front());
            rows.push_back(measure(file.string(), type, reference, f32_embeds,
                                   type == DType::F32 ? &f32_embeds : nullptr));
            std::fprintf(stderr, "blip-quant-sizes: %s %s: measured in %.1f s\n", name.checkpoint.c_str(),
                         type_name.c_str(), rows.back().seconds);
            if (work.temporary) fs::remove(file);
        }
        print_table(name.checkpoint, rows);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_options(argc, argv));
    } catch (const std::exception& error) {
        std::fprintf(stderr, "blip-quant-sizes: %s\n", error.what());
        return 1;
    }
}
