// blip-bench: times the full-size BLIP models (captioning, ITM, VQA) on this machine and
// relates every stage to the machine's own limits (peak FMA throughput, memory read
// bandwidth).
//
// The parent process measures the limits, writes one GGUF file per model, task and weight
// type (full-size shapes, weights by the full-size rule, so the captions can be checked
// against the reference ids) and runs one child process per file. Each child maps its file,
// times the stages for every thread count and reports its peak RSS, which therefore belongs
// to one model alone.

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#define DOCTEST_CONFIG_DISABLE  // the golden-data helpers come from the test support code
#include <nlohmann/json.hpp>

#include "blip/blip.hpp"
#include "fullsize_files.hpp"
#include "machine_limits.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using blip::Error;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kCaptionMaxLength = 30;  // generate(max_length=30), as the reference captions
constexpr int kBeams = 3;
constexpr int kBeamMinLength = 5;
constexpr std::int32_t kClsId = 101;
constexpr std::int32_t kSepId = 102;
// The ITM and VQA inputs, the same as in compare_torch.py.
constexpr const char* kItmText = "two cats lying on a couch";
constexpr std::size_t kItmLength = 35;  // ITM text length after padding
constexpr const char* kVqaQuestion = "what is in the picture ?";
constexpr int kVqaAnswerTokens = 9;  // generate(max_length=10) without [SEP] ending it
// The whole-caption stage: load, decode a JPEG, preprocess, vision and this many greedy tokens.
constexpr int kWholeCaptionTokens = 20;
// The long-sequence stage decodes this many tokens and compares the mean step time of the
// first kLongDecodeWindow steps with that of the last kLongDecodeWindow steps.
constexpr int kLongDecodeTokens = 64;
constexpr int kLongDecodeWindow = 8;
// The batch stage captions these golden images one at a time and as one batch. They are
// different files (some are variants of cats.png), each resized to 384x384.
constexpr const char* kBatchImageFiles[] = {"cats.png",      "bike.jpg",  "coco4016.png",    "exact_384.png",
                                            "gray.jpg",      "rgba.png",  "progressive.jpg", "palette.png"};

struct Options {
    std::vector<std::string> models = {"base"};
    std::vector<int> threads = {1, 2};
    std::vector<std::string> types = {"f32"};
    std::vector<std::string> stages = {"caption", "itm", "vqa"};
    int runs = 3;
    int beam_runs = 1;
    int tokens = 30;
    bool json_output = false;
    std::string output_path;
    std::string work_dir;  // empty: a new temporary folder, removed at the end
    std::string image;
    std::string jpeg;
    bool limits_only = false;
    // Set only in the child processes that the parent starts.
    std::string child_file;
    std::string child_output;
    std::string child_model;
    std::string child_type;
    std::string child_task;
};

const char* kUsage = R"(usage: blip-bench [options]

Times the full-size BLIP captioning models (shapes of blip-image-captioning-base/-large,
weights by the full-size rule) and prints each stage as a fraction of this machine's
measured FMA and memory-bandwidth limits.

  --model base,large   model families to run (default base)
  --threads 1,2        thread counts (default 1,2)
  --types f32,q8_0     weight types of the nn.Linear weights (default f32)
  --stages LIST        caption, itm, vqa (default all; there is no large VQA model)
  --runs N             timed runs per stage, after one warm-up; the median is reported (default 3)
  --beam-runs N        beam searches per thread count, without warm-up; median (default 1)
  --tokens N           greedy tokens per run; [SEP] does not stop them (default 30)
  --image PATH         image to decode and preprocess (default the golden images/cats.png)
  --jpeg PATH          JPEG of the whole-caption stage (default the golden images/bike.jpg)
  --work-dir DIR       folder for the generated model files, which later runs with the same
                       folder reuse (delete them after changing how the library stores
                       weights); default a new temporary folder, removed at the end
  --json               print the results as JSON on stdout instead of a table
  --output FILE        also write the JSON results to FILE
  --limits-only        measure the machine's limits and stop
)";

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream stream(text);
    std::string item;
    while (std::getline(stream, item, ',')) {
        if (!item.empty()) items.push_back(item);
    }
    return items;
}

int parse_positive(const std::string& text, const std::string& option) {
    char* end = nullptr;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\0' || value < 1 || value > 1024)
        throw Error("invalid value '" + text + "' for " + option + ": expected an integer from 1 to 1024");
    return static_cast<int>(value);
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
        } else if (arg == "--threads") {
            options.threads.clear();
            for (const auto& item : split_list(value())) options.threads.push_back(parse_positive(item, arg));
        } else if (arg == "--types") {
            options.types = split_list(value());
            for (const auto& type : options.types) {
                blip::DType parsed;
                if (!blip::parse_dtype(type, parsed) || parsed == blip::DType::I32)
                    throw Error("unknown weight type '" + type + "' in --types; use f32, f16, bf16, q8_0, q4_0, q4_1, "
                                "q4_k, q5_k or q6_k");
            }
        } else if (arg == "--stages") {
            options.stages = split_list(value());
            for (const auto& stage : options.stages) blip::parse_task(stage, "--stages");
        } else if (arg == "--runs") {
            options.runs = parse_positive(value(), arg);
        } else if (arg == "--beam-runs") {
            options.beam_runs = parse_positive(value(), arg);
        } else if (arg == "--tokens") {
            options.tokens = parse_positive(value(), arg);
        } else if (arg == "--image") {
            options.image = value();
        } else if (arg == "--jpeg") {
            options.jpeg = value();
        } else if (arg == "--work-dir") {
            options.work_dir = value();
        } else if (arg == "--json") {
            options.json_output = true;
        } else if (arg == "--output") {
            options.output_path = value();
        } else if (arg == "--limits-only") {
            options.limits_only = true;
        } else if (arg == "--child-file") {
            options.child_file = value();
        } else if (arg == "--child-output") {
            options.child_output = value();
        } else if (arg == "--child-model") {
            options.child_model = value();
        } else if (arg == "--child-type") {
            options.child_type = value();
        } else if (arg == "--child-task") {
            options.child_task = value();
        } else if (arg == "--help" || arg == "-h") {
            std::cout << kUsage;
            std::exit(0);
        } else {
            throw Error("unknown option '" + arg + "'; see --help");
        }
    }
    if (options.threads.empty()) throw Error("--threads needs at least one thread count, e.g. --threads 1,2");
    if (options.models.empty() || options.types.empty()) throw Error("--model and --types need at least one entry");
    std::sort(options.threads.begin(), options.threads.end());
    options.threads.erase(std::unique(options.threads.begin(), options.threads.end()), options.threads.end());
    if (options.image.empty()) options.image = (blip_test::golden_dir() / "images" / "cats.png").string();
    if (options.jpeg.empty()) options.jpeg = (blip_test::golden_dir() / "images" / "bike.jpg").string();
    return options;
}

// ---------------------------------------------------------------------------------------
// Timing helpers

std::vector<std::string> split_words(const std::string& text) {
    std::vector<std::string> words;
    std::stringstream stream(text);
    for (std::string word; stream >> word;) words.push_back(word);
    return words;
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
    if (values.empty()) return 0.0;
    std::sort(values.begin(), values.end());
    const std::size_t middle = values.size() / 2;
    return values.size() % 2 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

// Returns this process's peak RSS in MB, read from VmHWM in /proc/self/status, which
// belongs to the process's own address space. ru_maxrss is wrong in the children because
// posix_spawn starts them with vfork semantics, sharing the parent's memory until execve.
// Linux carries the high-water mark of that memory into the child's ru_maxrss across execve,
// so a child would report the parent's peak (the parent has just built a model file)
// whenever that is larger. Falls back to ru_maxrss where /proc is missing.
double peak_rss_mb() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("VmHWM:", 0) != 0) continue;
        return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // "VmHWM:   123456 kB"
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

double mean(const std::vector<double>& values, std::size_t begin, std::size_t end) {
    double sum = 0.0;
    for (std::size_t i = begin; i < end; ++i) sum += values[i];
    return end > begin ? sum / static_cast<double>(end - begin) : 0.0;
}

// ---------------------------------------------------------------------------------------
// Work counts that the machine's limits are divided by

// Multiply-adds x 2 of the vision encoder's matrix products: patch embedding, and per layer
// qkv, projection, MLP and the two attention products.
double vision_flops(const blip::VisionConfig& config) {
    const double width = static_cast<double>(config.hidden_size);
    const double patches = static_cast<double>(config.num_patches());
    const double tokens = patches + 1;
    const double patch_macs = patches * width * static_cast<double>(config.num_channels * config.patch_size * config.patch_size);
    const double layer_macs = tokens * width * (4 * width + 2 * static_cast<double>(config.intermediate_size)) +
                              2 * tokens * tokens * width;
    return 2.0 * (patch_macs + static_cast<double>(config.num_hidden_layers) * layer_macs);
}

// Bytes of weights one decoder step reads: every text_decoder tensor except the
// cross-attention key and value weights (applied once per image, when the decoder state is
// set up) and the position embeddings (one row per step). The word embeddings count in full
// because the language model head reads the whole tied matrix.
double decoder_bytes_per_step(const blip::gguf::File& file) {
    double bytes = 0.0;
    for (const auto& tensor : file.tensors()) {
        const std::string& name = tensor.name;
        if (name.rfind("text_decoder.", 0) != 0) continue;
        if (name.find("crossattention.self.key") != std::string::npos ||
            name.find("crossattention.self.value") != std::string::npos)
            continue;
        if (name.find("position_embeddings") != std::string::npos) continue;
        bytes += static_cast<double>(tensor.nbytes);
    }
    return bytes;
}

// ---------------------------------------------------------------------------------------
// Child process: one model file

struct GreedyResult {
    std::vector<std::int32_t> ids;  // [DEC] first
    double setup_seconds = 0.0;     // decoder state, including the cross-attention keys and values
    double step_seconds = 0.0;      // all decoder steps together
    std::vector<double> each_step_seconds;  // one per step, argmax included
};

// Decodes exactly `tokens` tokens greedily; [SEP] does not end the sequence.
GreedyResult greedy_forced(const blip::BlipForConditionalGeneration& model, const std::vector<float>& image_embeds,
                           int tokens) {
    GreedyResult result;
    const auto setup_start = Clock::now();
    blip::DecoderState state = model.decoder_state(image_embeds, tokens + 1, 1);
    result.setup_seconds = seconds_since(setup_start);

    const std::int64_t vocab = model.config.text.vocab_size;
    result.ids.reserve(static_cast<std::size_t>(tokens) + 1);
    result.ids.push_back(model.config.tokens.bos);
    const auto steps_start = Clock::now();
    std::int32_t next = model.config.tokens.bos;
    result.each_step_seconds.reserve(static_cast<std::size_t>(tokens));
    for (int i = 0; i < tokens; ++i) {
        const auto step_start = Clock::now();
        const float* logits = model.text_decoder.decode(state, &next, 1);
        next = blip::argmax(logits, vocab);
        result.ids.push_back(next);
        result.each_step_seconds.push_back(seconds_since(step_start));
    }
    result.step_seconds = seconds_since(steps_start);
    return result;
}

// Compares `ids` with the reference ids (both [DEC] first) over their common length.
json compare_ids(const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& reference) {
    const std::size_t common = std::min(ids.size(), reference.size());
    std::size_t matching = 0;
    while (matching < common && ids[matching] == reference[matching]) ++matching;
    return {{"compared", common}, {"matching_prefix", matching}, {"match", matching == common}};
}

float max_abs_diff(const std::vector<float>& values, const std::vector<float>& reference) {
    if (values.size() != reference.size()) return INFINITY;
    float diff = 0.0f;
    for (std::size_t i = 0; i < values.size(); ++i) diff = std::max(diff, std::abs(values[i] - reference[i]));
    return diff;
}

// Decodes kLongDecodeTokens tokens as greedy_forced does, `runs` times, and returns the mean
// step time of the first and of the last kLongDecodeWindow steps (medians over the runs).
// With the self-attention keys and values cached, a step only adds attention over the
// cached tokens, so the two should be close.
json time_long_decode(const blip::BlipForConditionalGeneration& model, const std::vector<float>& image_embeds,
                      int runs) {
    constexpr auto tokens = static_cast<std::size_t>(kLongDecodeTokens);
    constexpr auto window = static_cast<std::size_t>(kLongDecodeWindow);
    std::vector<double> first, last;
    for (int run = 0; run < runs; ++run) {
        const GreedyResult result = greedy_forced(model, image_embeds, kLongDecodeTokens);
        first.push_back(mean(result.each_step_seconds, 0, window));
        last.push_back(mean(result.each_step_seconds, tokens - window, tokens));
    }
    const double first_ms = median(first) * 1e3;
    const double last_ms = median(last) * 1e3;
    return {{"long_decode_tokens", kLongDecodeTokens},
            {"long_decode_window", kLongDecodeWindow},
            {"long_decode_first_steps_ms", first_ms},
            {"long_decode_last_steps_ms", last_ms},
            {"long_decode_step_ratio", last_ms / first_ms}};
}

// Captions the preprocessed images `pixels` with generate(max_length=30), greedy: one image
// at a time (vision, then generate) and as one batch (vision per image, then generate_batch
// over all the embeddings). Each way runs `runs` times without a warm-up. Returns the
// images per second of the median run both ways, the same for the decoding part alone
// (generate versus generate_batch, vision excluded), and whether the batch gave every image
// the ids it got alone.
json time_batch(const blip::BlipForConditionalGeneration& model, const std::vector<std::vector<float>>& pixels,
                int runs) {
    blip::GenerationConfig generation;
    generation.max_length = kCaptionMaxLength;
    const std::size_t images = pixels.size();
    std::vector<double> single_seconds, batch_seconds, single_decode_seconds, batch_decode_seconds;
    std::vector<std::vector<std::int32_t>> single_ids(images), batch_ids;
    for (int run = 0; run < runs; ++run) {
        auto start = Clock::now();
        double decode_seconds = 0.0;
        for (std::size_t image = 0; image < images; ++image) {
            const std::vector<float> embeds = model.vision_model.forward(pixels[image]);
            const auto decode_start = Clock::now();
            single_ids[image] = model.generate(embeds, {}, generation);
            decode_seconds += seconds_since(decode_start);
        }
        single_seconds.push_back(seconds_since(start));
        single_decode_seconds.push_back(decode_seconds);

        start = Clock::now();
        std::vector<std::vector<float>> embeds;
        embeds.reserve(images);
        for (const auto& image : pixels) embeds.push_back(model.vision_model.forward(image));
        std::vector<const std::vector<float>*> embeds_pointers;
        for (const auto& image : embeds) embeds_pointers.push_back(&image);
        const auto decode_start = Clock::now();
        batch_ids = model.generate_batch(embeds_pointers, {}, generation).sequences;
        batch_decode_seconds.push_back(seconds_since(decode_start));
        batch_seconds.push_back(seconds_since(start));
    }
    const double single_per_s = static_cast<double>(images) / median(single_seconds);
    const double batch_per_s = static_cast<double>(images) / median(batch_seconds);
    return {{"batch_images", images},
            {"batch_runs", runs},
            {"single_images_per_s", single_per_s},
            {"batch_images_per_s", batch_per_s},
            {"batch_speedup", batch_per_s / single_per_s},
            {"batch_decode_speedup", median(single_decode_seconds) / median(batch_decode_seconds)},
            {"batch_matches_single", batch_ids == single_ids}};
}

// Times a whole caption from the model file on, for each thread count: gguf::File::open and
// model construction, decoding the JPEG options.jpeg, preprocessing, vision, and
// kWholeCaptionTokens greedy tokens ([SEP] does not stop them). One warm-up run, then the
// median of options.runs runs, so the file is in the page cache. Adds the results to
// `entries`, one per thread count. Call it with no other model of the file alive, so that
// the file's pages count once in the peak RSS.
void time_whole_caption(const Options& options, std::vector<json>& entries) {
    for (std::size_t index = 0; index < options.threads.size(); ++index) {
        blip::set_num_threads(options.threads[index]);
        std::vector<double> total, load, preprocess, vision, decode;
        std::vector<std::int32_t> ids;
        for (int run = 0; run < options.runs + 1; ++run) {
            const auto start = Clock::now();
            const blip::BlipForConditionalGeneration model(blip::gguf::File::open(options.child_file));
            const auto loaded = Clock::now();
            const std::vector<float> pixels =
                blip::preprocess_image(blip::decode_image_file(options.jpeg), model.config.preprocess);
            const auto preprocessed = Clock::now();
            const std::vector<float> image_embeds = model.vision_model.forward(pixels);
            const auto encoded = Clock::now();
            ids = greedy_forced(model, image_embeds, kWholeCaptionTokens).ids;
            const auto end = Clock::now();
            if (run == 0) continue;  // warm-up
            const auto seconds = [](Clock::time_point from, Clock::time_point to) {
                return std::chrono::duration<double>(to - from).count();
            };
            total.push_back(seconds(start, end));
            load.push_back(seconds(start, loaded));
            preprocess.push_back(seconds(loaded, preprocessed));
            vision.push_back(seconds(preprocessed, encoded));
            decode.push_back(seconds(encoded, end));
        }
        json& entry = entries[index];
        entry["whole_caption_ms"] = median(total) * 1e3;
        entry["whole_caption_load_ms"] = median(load) * 1e3;
        entry["whole_caption_preprocess_ms"] = median(preprocess) * 1e3;
        entry["whole_caption_vision_ms"] = median(vision) * 1e3;
        entry["whole_caption_decode_ms"] = median(decode) * 1e3;
        entry["whole_caption_tokens"] = kWholeCaptionTokens;
        entry["whole_caption_ids"] = ids;
    }
}

json run_caption_child(const Options& options) {
    const auto name = blip::bench::checkpoint_name(options.child_model, blip::Task::Caption);
    const fs::path golden = blip_test::golden_dir();
    const fs::path reference_dir = golden / "fullsize";
    std::vector<float> reference_embeds;
    std::vector<std::int32_t> reference_greedy;
    std::vector<std::int32_t> reference_beam;
    if (fs::is_regular_file(reference_dir / (name.checkpoint + ".cats.png.json"))) {
        const auto embeds = blip_test::read_npy(reference_dir / (name.checkpoint + ".cats.png.image_embeds.npy"));
        reference_embeds.assign(embeds.data.begin(), embeds.data.end());
        const auto reference = blip_test::read_json(reference_dir / (name.checkpoint + ".cats.png.json"));
        reference_greedy = reference.at("greedy_max30").get<std::vector<std::int32_t>>();
        reference_beam = reference.at("beam3_min5_max30").get<std::vector<std::int32_t>>();
    }
    const bool image_is_reference = fs::path(options.image).filename() == "cats.png";

    json out;
    out["task"] = "caption";
    out["model"] = options.child_model;
    out["checkpoint"] = name.checkpoint;
    out["type"] = options.child_type;

    // Load: map the file and read the configuration and every tensor's place in it. The file
    // was just written or read, so it is in the page cache: this is the warm-cache time.
    std::vector<double> load_seconds;
    std::shared_ptr<const blip::BlipForConditionalGeneration> model;
    for (int run = 0; run < options.runs; ++run) {
        model.reset();
        const auto start = Clock::now();
        auto file = blip::gguf::File::open(options.child_file);
        model = std::make_shared<const blip::BlipForConditionalGeneration>(file);
        load_seconds.push_back(seconds_since(start));
    }
    out["load_ms"] = median(load_seconds) * 1e3;
    out["file_bytes"] = fs::file_size(options.child_file);
    const double step_bytes = decoder_bytes_per_step(model->file());
    out["decoder_bytes_per_step"] = step_bytes;

    // Image decoding and preprocessing, on the default thread count.
    std::vector<double> preprocess_seconds;
    std::vector<float> pixels;
    for (int run = 0; run < options.runs + 1; ++run) {
        const auto start = Clock::now();
        const blip::ImageU8 image = blip::decode_image_file(options.image);
        pixels = blip::preprocess_image(image, model->config.preprocess);
        if (run > 0) preprocess_seconds.push_back(seconds_since(start));
    }
    out["preprocess_ms"] = median(preprocess_seconds) * 1e3;

    const double flops = vision_flops(model->config.vision);
    out["vision_gflop"] = flops / 1e9;
    std::vector<json> entries;
    for (int threads : options.threads) {
        blip::set_num_threads(threads);
        json entry;
        entry["threads"] = threads;

        std::vector<float> image_embeds = model->vision_model.forward(pixels);  // warm-up
        std::vector<double> vision_seconds;
        for (int run = 0; run < options.runs; ++run) {
            const auto start = Clock::now();
            image_embeds = model->vision_model.forward(pixels);
            vision_seconds.push_back(seconds_since(start));
        }
        const double vision = median(vision_seconds);
        entry["vision_ms"] = vision * 1e3;
        entry["vision_gflops_per_s"] = flops / vision / 1e9;
        if (image_is_reference && !reference_embeds.empty())
            entry["vision_max_abs_diff"] = max_abs_diff(image_embeds, reference_embeds);

        std::vector<double> setup, step, per_token;
        // The warm-up run takes the page faults of the decoder weights' first reads.
        GreedyResult greedy = greedy_forced(*model, image_embeds, options.tokens);
        for (int run = 0; run < options.runs; ++run) {
            greedy = greedy_forced(*model, image_embeds, options.tokens);
            setup.push_back(greedy.setup_seconds);
            step.push_back(greedy.step_seconds / options.tokens);
            per_token.push_back((greedy.setup_seconds + greedy.step_seconds) / options.tokens);
        }
        entry["greedy_tokens"] = options.tokens;
        entry["decoder_setup_ms"] = median(setup) * 1e3;
        entry["greedy_step_ms"] = median(step) * 1e3;
        entry["greedy_ms_per_token"] = median(per_token) * 1e3;
        entry["greedy_ids"] = greedy.ids;
        if (image_is_reference && !reference_greedy.empty())
            entry["greedy_vs_reference"] = compare_ids(greedy.ids, reference_greedy);
        entry.update(time_long_decode(*model, image_embeds, options.runs));

        // A whole caption as generate(max_length=30) makes it: vision, then greedy decoding
        // until [SEP] or max_length.
        std::vector<double> caption_seconds;
        blip::GenerationConfig generation;
        generation.max_length = kCaptionMaxLength;
        std::vector<std::int32_t> caption_ids;
        for (int run = 0; run < options.runs; ++run) {
            const auto start = Clock::now();
            const std::vector<float> embeds = model->vision_model.forward(pixels);
            caption_ids = model->generate(embeds, {}, generation);
            caption_seconds.push_back(seconds_since(start));
        }
        entry["caption_ms"] = median(caption_seconds) * 1e3;
        entry["caption_ids"] = caption_ids;
        if (image_is_reference && !reference_greedy.empty())
            entry["caption_vs_reference"] = compare_ids(caption_ids, reference_greedy);

        // Beam search as the reference beam captions were made: 3 beams, min_length 5,
        // max_length 30, on the image embeddings of this thread count.
        blip::GenerationConfig beam;
        beam.num_beams = kBeams;
        beam.min_length = kBeamMinLength;
        beam.max_length = kCaptionMaxLength;
        std::vector<double> beam_seconds;
        std::vector<std::int32_t> beam_ids;
        std::int64_t beam_steps = 0;
        for (int run = 0; run < options.beam_runs; ++run) {
            const auto start = Clock::now();
            const blip::GenerationOutput output = model->generate_batch({&image_embeds}, {}, beam);
            beam_seconds.push_back(seconds_since(start));
            beam_ids = output.sequences.front();
            beam_steps = output.stats.forward_calls;
        }
        const double beam_ms = median(beam_seconds) * 1e3;
        entry["beam_ms"] = beam_ms;
        entry["beam_settings"] = {{"num_beams", kBeams}, {"min_length", kBeamMinLength}, {"max_length", kCaptionMaxLength}};
        entry["beam_ids"] = beam_ids;
        if (image_is_reference && !reference_beam.empty())
            entry["beam_vs_reference"] = compare_ids(beam_ids, reference_beam);
        // Per decoder step of the 3 beams. The beam search sets up the cross-attention keys
        // and values once for its one image, the same work as the greedy decoder setup, so
        // the greedy setup time is subtracted for it.
        entry["beam_steps"] = beam_steps;
        entry["beam_step_ms"] = (beam_ms - entry.at("decoder_setup_ms").get<double>()) / static_cast<double>(beam_steps);
        entry["beam_step_vs_greedy"] = entry.at("beam_step_ms").get<double>() / entry.at("greedy_step_ms").get<double>();
        entries.push_back(entry);
    }
    // The captioning peak, before the batch stage adds 8 images' decoder states.
    out["peak_rss_mb"] = peak_rss_mb();

    std::vector<std::vector<float>> batch_pixels;
    json batch_files = json::array();
    for (const char* file : kBatchImageFiles) {
        batch_pixels.push_back(blip::preprocess_image(blip::decode_image_file((golden / "images" / file).string()),
                                                      model->config.preprocess));
        batch_files.push_back(file);
    }
    out["batch_image_files"] = batch_files;
    for (std::size_t index = 0; index < options.threads.size(); ++index) {
        blip::set_num_threads(options.threads[index]);
        entries[index].update(time_batch(*model, batch_pixels, options.beam_runs));
    }
    out["batch_peak_rss_mb"] = peak_rss_mb();

    model.reset();  // the whole-caption stage maps the file anew
    out["whole_caption_image"] = options.jpeg;
    time_whole_caption(options, entries);
    out["per_thread"] = entries;
    return out;
}

// Token ids of whole lowercase words from the golden vocabulary, [CLS] first and [SEP] last.
// The benchmark texts contain only whole words of the vocabulary, so this is what the
// WordPiece tokenizer returns for them.
std::vector<std::int32_t> whole_word_ids(const std::vector<std::string>& words) {
    const fs::path path = blip_test::golden_dir() / "tokenizer" / "vocab.txt";
    std::ifstream in(path);
    if (!in) throw Error("vocabulary " + path.string() + " not found; set BLIP_GOLDEN_DIR to the golden folder");
    std::vector<std::string> vocab;
    for (std::string line; std::getline(in, line);) vocab.push_back(line);
    std::vector<std::int32_t> ids = {kClsId};
    for (const auto& word : words) {
        const auto found = std::find(vocab.begin(), vocab.end(), word);
        if (found == vocab.end()) throw Error("word '" + word + "' is not in " + path.string());
        ids.push_back(static_cast<std::int32_t>(found - vocab.begin()));
    }
    ids.push_back(kSepId);
    return ids;
}

// The decoded and preprocessed benchmark image, for a model with `config`.
std::vector<float> load_pixels(const Options& options, const blip::BlipConfig& config) {
    return blip::preprocess_image(blip::decode_image_file(options.image), config.preprocess);
}

// Times `function` once as a warm-up and then `runs` times; returns the median seconds.
template <class Function>
double median_seconds(int runs, Function&& function) {
    function();
    std::vector<double> seconds;
    for (int run = 0; run < runs; ++run) {
        const auto start = Clock::now();
        function();
        seconds.push_back(seconds_since(start));
    }
    return median(seconds);
}

// ITM: vision, the image-grounded text encoder over a caption padded to kItmLength tokens,
// and the ITM head. The text's first token stays [CLS], as transformers 4.30.2 feeds it.
json run_itm_child(const Options& options) {
    auto model = std::make_shared<const blip::BlipForImageTextRetrieval>(blip::gguf::File::open(options.child_file));
    const std::vector<float> pixels = load_pixels(options, model->config);
    blip::TextTokens text;
    text.ids = whole_word_ids(split_words(kItmText));
    text.attention_mask.assign(text.ids.size(), 1);
    text.ids.resize(kItmLength, model->config.tokens.pad);
    text.attention_mask.resize(kItmLength, 0);

    json out;
    out["task"] = "itm";
    for (int threads : options.threads) {
        blip::set_num_threads(threads);
        double probability = 0.0;
        const double seconds = median_seconds(options.runs, [&] {
            const std::vector<float> image_embeds = model->vision_model.forward(pixels);
            const std::vector<float> logits = model->itm_logits(image_embeds, {text}, blip::EncoderFirstToken::Cls);
            probability = blip::itm_probability(logits.data());
        });
        out["per_thread"].push_back({{"threads", threads}, {"itm_ms", seconds * 1e3}, {"itm_prob", probability}});
    }
    out["peak_rss_mb"] = peak_rss_mb();
    return out;
}

// VQA: vision, the question encoder, and kVqaAnswerTokens answer tokens decoded greedily
// ([SEP] does not stop them, so every run does the same work). The question's first token
// stays [CLS], as transformers 4.30.2 feeds it.
json run_vqa_child(const Options& options) {
    auto model = std::make_shared<const blip::BlipForQuestionAnswering>(blip::gguf::File::open(options.child_file));
    const std::vector<float> pixels = load_pixels(options, model->config);
    const std::vector<std::int32_t> question = whole_word_ids(split_words(kVqaQuestion));
    const std::int64_t vocab = model->config.text.vocab_size;

    json out;
    out["task"] = "vqa";
    for (int threads : options.threads) {
        blip::set_num_threads(threads);
        std::vector<std::int32_t> answer;
        const double seconds = median_seconds(options.runs, [&] {
            const std::vector<float> image_embeds = model->vision_model.forward(pixels);
            const std::vector<float> question_embeds =
                model->encode_question(image_embeds, question, blip::EncoderFirstToken::Cls);
            blip::DecoderState state = model->decoder_state(question_embeds, 1, kVqaAnswerTokens + 1, 1);
            answer = {model->config.tokens.bos};
            std::int32_t next = model->config.tokens.bos;
            for (int i = 0; i < kVqaAnswerTokens; ++i) {
                next = blip::argmax(model->text_decoder.decode(state, &next, 1), vocab);
                answer.push_back(next);
            }
        });
        out["per_thread"].push_back(
            {{"threads", threads}, {"vqa_ms", seconds * 1e3}, {"vqa_answer_tokens", kVqaAnswerTokens}, {"vqa_ids", answer}});
    }
    out["peak_rss_mb"] = peak_rss_mb();
    return out;
}

json run_child(const Options& options) {
    const blip::Task task = blip::parse_task(options.child_task, "--child-task");
    switch (task) {
        case blip::Task::Caption: return run_caption_child(options);
        case blip::Task::Itm: return run_itm_child(options);
        case blip::Task::Vqa: return run_vqa_child(options);
    }
    throw Error("unknown child task " + options.child_task);
}

// ---------------------------------------------------------------------------------------
// Parent process

json limits_to_json(const blip::bench::MachineLimits& limits) {
    json out;
    out["cpu"] = {{"model_name", limits.cpu.model_name},
                  {"logical_cpus", limits.cpu.logical_cpus},
                  {"last_level_cache_bytes", limits.cpu.last_level_cache_bytes},
                  {"vector_isas", limits.cpu.vector_isas}};
    for (const auto& fma : limits.fma)
        out["fma"].push_back({{"isa", fma.isa}, {"threads", fma.threads}, {"gflops", fma.gflops}});
    for (const auto& fma : limits.fma_other_isas)
        out["fma_other_isas"].push_back({{"isa", fma.isa}, {"threads", fma.threads}, {"gflops", fma.gflops}});
    for (const auto& bw : limits.bandwidth)
        out["read_bandwidth"].push_back({{"isa", bw.isa},
                                         {"threads", bw.threads},
                                         {"buffer_bytes", bw.buffer_bytes},
                                         {"gbytes_per_s", bw.gbytes_per_s}});
    return out;
}

std::string self_executable(const char* argv0) {
    std::error_code error;
    const fs::path self = fs::read_symlink("/proc/self/exe", error);
    return error ? std::string(argv0) : self.string();
}

// Runs this program as a child for one model file and returns the JSON it wrote.
json run_child_process(const std::string& executable, const Options& options, const std::string& model,
                       const std::string& type, const std::string& task, const fs::path& file) {
    const fs::path output = fs::path(options.work_dir) / ("child-" + std::to_string(getpid()) + ".json");
    std::string threads;
    for (int t : options.threads) threads += (threads.empty() ? "" : ",") + std::to_string(t);
    std::vector<std::string> args = {executable,      "--child-file",   file.string(), "--child-output",
                                     output.string(), "--child-model",  model,         "--child-type",
                                     type,            "--threads",      threads,       "--runs",
                                     std::to_string(options.runs), "--tokens", std::to_string(options.tokens),
                                     "--beam-runs", std::to_string(options.beam_runs),
                                     "--image",       options.image, "--jpeg", options.jpeg,
                                     "--child-task", task};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);

    pid_t pid = 0;
    const int spawn_error = posix_spawn(&pid, executable.c_str(), nullptr, nullptr, argv.data(), environ);
    if (spawn_error != 0)
        throw Error("could not start " + executable + " for " + task + " model " + model + " " + type + ": " +
                    std::strerror(spawn_error));
    int status = 0;
    if (waitpid(pid, &status, 0) < 0)
        throw Error("waitpid failed for the child of " + task + " model " + model + " " + type);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error("child for " + task + " model " + model + " " + type + " failed (status " +
                    std::to_string(status) + "); its error is printed above");
    std::ifstream in(output);
    json result = json::parse(in);
    in.close();
    fs::remove(output);
    return result;
}

// One row per (model, type, thread count) that merges the stages of every task, with the
// caption file's shared values copied in, so that compare_torch.py can look rows up by
// model, type and threads.
json flatten_results(const json& children) {
    std::vector<std::string> order;
    std::map<std::string, json> rows;
    for (const auto& child : children) {
        const std::string task = child.at("task");
        for (const auto& entry : child.at("per_thread")) {
            const std::string key = child.at("model").get<std::string>() + "|" + child.at("type").get<std::string>() +
                                    "|" + std::to_string(entry.at("threads").get<int>());
            if (rows.find(key) == rows.end()) order.push_back(key);
            json& row = rows[key];
            row.update(entry);
            row["model"] = child.at("model");
            row["type"] = child.at("type");
            row[task + "_peak_rss_mb"] = child.at("peak_rss_mb");
            if (task != "caption") continue;
            for (const char* shared : {"checkpoint", "load_ms", "preprocess_ms", "file_bytes", "decoder_bytes_per_step",
                                       "vision_gflop", "peak_rss_mb", "tensor_sums_checked", "batch_peak_rss_mb",
                                       "batch_image_files", "whole_caption_image"}) {
                if (child.contains(shared)) row[shared] = child.at(shared);
            }
        }
    }
    json out = json::array();
    for (const auto& key : order) out.push_back(rows[key]);
    return out;
}

// Returns row[key] as a number, or NaN when the row lacks it (a stage that did not run).
double number(const json& row, const char* key) {
    const auto found = row.find(key);
    return found == row.end() || !found->is_number() ? NAN : found->get<double>();
}

// Adds each stage's fraction of the machine's limit for the row's thread count.
void add_fractions(json& rows, const blip::bench::MachineLimits& limits) {
    for (auto& row : rows) {
        const int threads = row.at("threads");
        const auto& fma = limits.fma_for(threads);
        const auto& bandwidth = limits.bandwidth_for(threads);
        row["fma_peak_gflops"] = fma.gflops;
        row["read_bandwidth_gbytes_per_s"] = bandwidth.gbytes_per_s;
        if (!row.contains("vision_gflops_per_s")) continue;  // no caption stage
        row["vision_fraction_of_fma_peak"] = number(row, "vision_gflops_per_s") / fma.gflops;
        const double floor_seconds = number(row, "decoder_bytes_per_step") / (bandwidth.gbytes_per_s * 1e9);
        row["greedy_step_floor_ms"] = floor_seconds * 1e3;
        row["greedy_step_fraction_of_bandwidth"] = floor_seconds * 1e3 / number(row, "greedy_step_ms");
    }
}

// Returns "ok" when row[key] (a compare_ids result) matched, "matching prefix/compared"
// when it did not, and "-" when the row lacks it.
std::string check_text(const json& row, const char* key) {
    if (!row.contains(key)) return "-";
    const auto& check = row.at(key);
    if (check.at("match").get<bool>()) return "ok";
    return std::to_string(check.at("matching_prefix").get<int>()) + "/" + std::to_string(check.at("compared").get<int>());
}

std::string ids_check(const json& row) {
    return check_text(row, "greedy_vs_reference") + "/" + check_text(row, "beam_vs_reference");
}

// Formats `value` right-aligned in `width` characters with `precision` decimals, or "-"
// when it is NaN (the stage did not run); `scale` multiplies it first (100 for percent).
std::string cell(double value, int width, int precision, double scale = 1.0) {
    char text[64];
    if (std::isnan(value))
        std::snprintf(text, sizeof text, "%*s", width, "-");
    else
        std::snprintf(text, sizeof text, "%*.*f", width, precision, value * scale);
    return text;
}

// A fraction as a 5-character percentage ("  42%"), or "    -" when it is NaN.
std::string percent_cell(double fraction) {
    return std::isnan(fraction) ? std::string("    -") : cell(fraction, 4, 0, 100.0) + "%";
}

void print_table(const json& rows) {
    std::printf("\n%-6s %-5s %3s %8s %8s %9s %7s %5s %8s %8s %8s %5s %9s %9s %8s %8s %7s %s\n", "model", "type", "thr",
                "load ms", "prep ms", "vision ms", "GFLOP/s", "%FMA", "ms/token", "step ms", "floor ms", "%BW",
                "caption", "beam ms", "ITM ms", "VQA ms", "RSS MB", "ids");
    for (const auto& row : rows) {
        std::printf("%-6s %-5s %3d %s %s %s %s %s %s %s %s %s %s %s %s %s %s %s\n",
                    row.at("model").get<std::string>().c_str(), row.at("type").get<std::string>().c_str(),
                    row.at("threads").get<int>(), cell(number(row, "load_ms"), 8, 1).c_str(),
                    cell(number(row, "preprocess_ms"), 8, 1).c_str(), cell(number(row, "vision_ms"), 9, 1).c_str(),
                    cell(number(row, "vision_gflops_per_s"), 7, 1).c_str(),
                    percent_cell(number(row, "vision_fraction_of_fma_peak")).c_str(),
                    cell(number(row, "greedy_ms_per_token"), 8, 1).c_str(),
                    cell(number(row, "greedy_step_ms"), 8, 2).c_str(),
                    cell(number(row, "greedy_step_floor_ms"), 8, 2).c_str(),
                    percent_cell(number(row, "greedy_step_fraction_of_bandwidth")).c_str(),
                    cell(number(row, "caption_ms"), 9, 1).c_str(), cell(number(row, "beam_ms"), 9, 1).c_str(),
                    cell(number(row, "itm_ms"), 8, 1).c_str(),
                    cell(number(row, "vqa_ms"), 8, 1).c_str(), cell(number(row, "caption_peak_rss_mb"), 7, 0).c_str(),
                    ids_check(row).c_str());
    }
    std::printf(
        "\nvision: GFLOP/s of the matrix products, %%FMA = share of the measured FMA peak for that thread count.\n"
        "ms/token: greedy decoding of %s tokens including the decoder setup (cross-attention keys and values);\n"
        "step ms: one decoder step; floor ms: weight bytes one step reads / measured read bandwidth; %%BW = floor / step.\n"
        "caption: vision + generate(max_length=30). beam: 3 beams, min_length 5, max_length 30, after vision.\n"
        "ITM: vision + text encoder (35 tokens) + ITM head.\n"
        "VQA: vision + question encoder + 9 answer tokens. RSS MB: peak RSS of the caption model's process\n"
        "  after the beam search (before the batch stage).\n"
        "ids: greedy/beam ids against the reference (f32 must be ok/ok; quantized types may leave it).\n",
        rows.empty() || !rows.at(0).contains("greedy_tokens")
            ? "?"
            : std::to_string(rows.at(0).at("greedy_tokens").get<int>()).c_str());
}

// Prints the stages that check the performance requirements: the whole caption, the step
// time over a long sequence, the batch throughput and the beam search's cost per step.
void print_requirement_table(const json& rows) {
    const auto first = std::find_if(rows.begin(), rows.end(), [](const json& row) { return row.contains("whole_caption_ms"); });
    if (first == rows.end()) return;
    std::printf("\n%-6s %-5s %3s %9s %8s %8s %6s %7s %7s %6s %6s %5s %9s %9s %6s %7s\n", "model", "type", "thr",
                "whole ms", "1-8 ms", "57-64 ms", "ratio", "1x1 i/s", "x8 i/s", "ratio", "decode", "same", "beam/st",
                "greedy/st", "ratio", "RSS x8");
    for (const auto& row : rows) {
        if (!row.contains("whole_caption_ms")) continue;
        const auto same = row.find("batch_matches_single");
        std::printf("%-6s %-5s %3d %s %s %s %s %s %s %s %s %5s %s %s %s %s\n", row.at("model").get<std::string>().c_str(),
                    row.at("type").get<std::string>().c_str(), row.at("threads").get<int>(),
                    cell(number(row, "whole_caption_ms"), 9, 1).c_str(),
                    cell(number(row, "long_decode_first_steps_ms"), 8, 2).c_str(),
                    cell(number(row, "long_decode_last_steps_ms"), 8, 2).c_str(),
                    cell(number(row, "long_decode_step_ratio"), 6, 2).c_str(),
                    cell(number(row, "single_images_per_s"), 7, 3).c_str(),
                    cell(number(row, "batch_images_per_s"), 7, 3).c_str(), cell(number(row, "batch_speedup"), 6, 2).c_str(),
                    cell(number(row, "batch_decode_speedup"), 6, 2).c_str(),
                    same == row.end() ? "-" : same->get<bool>() ? "ok" : "DIFF",
                    cell(number(row, "beam_step_ms"), 9, 2).c_str(), cell(number(row, "greedy_step_ms"), 9, 2).c_str(),
                    cell(number(row, "beam_step_vs_greedy"), 6, 2).c_str(),
                    cell(number(row, "batch_peak_rss_mb"), 7, 0).c_str());
    }
    std::string files;
    if (first->contains("batch_image_files"))
        for (const auto& file : first->at("batch_image_files")) files += (files.empty() ? "" : ", ") + file.get<std::string>();
    const std::string jpeg = first->contains("whole_caption_image")
                                 ? fs::path(first->at("whole_caption_image").get<std::string>()).filename().string()
                                 : "?";
    std::printf(
        "\nwhole ms: gguf::File::open + model construction, decode %s, preprocess, vision, %d greedy tokens.\n"
        "1-8 ms, 57-64 ms: mean step time of those steps of %d forced greedy tokens; ratio = 57-64 / 1-8.\n"
        "1x1 i/s, x8 i/s: images per second captioning %zu images (vision + generate(max_length=30)) one at a time\n"
        "  and as one batch (vision per image, then generate_batch); ratio = x8 / 1x1; decode: the same ratio for\n"
        "  the decoding alone (generate versus generate_batch); same: the batch gave every\n"
        "  image its own ids. Images: %s.\n"
        "beam/st: (beam ms - decoder setup) / decoder steps of the beam search; greedy/st: greedy step ms;\n"
        "  ratio = beam/st / greedy/st. RSS x8: peak RSS after the batch stage (MB).\n",
        jpeg.c_str(), kWholeCaptionTokens, kLongDecodeTokens, std::size(kBatchImageFiles), files.c_str());
}

int run_parent(const Options& options, int argc, char** argv) {
    const auto limits = blip::bench::measure_machine_limits(options.threads);
    if (!options.json_output) std::cout << blip::bench::format_machine_limits(limits) << std::flush;
    json report;
    report["machine"] = limits_to_json(limits);
    if (options.limits_only) {
        if (options.json_output) std::cout << report.dump(1) << "\n";
        return 0;
    }

    blip::bench::WorkFolder work(options.work_dir, "blip-bench");
    Options child_options = options;
    child_options.work_dir = work.path.string();
    const std::string executable = self_executable(argv[0]);
    json children = json::array();
    for (const auto& model : options.models) {
        for (const auto& type_name : options.types) {
            blip::DType type = blip::DType::F32;
            blip::parse_dtype(type_name, type);
            for (const auto& stage : options.stages) {
                const auto name = blip::bench::checkpoint_name(model, blip::parse_task(stage, "--stages"));
                if (name.checkpoint.empty()) {
                    std::fprintf(stderr, "blip-bench: no %s model in the %s family; skipping it\n", stage.c_str(),
                                 model.c_str());
                    continue;
                }
                const fs::path file = work.path / (name.checkpoint + "." + type_name + ".gguf");
                std::fprintf(stderr, "blip-bench: %s %s: building %s...\n", name.checkpoint.c_str(), type_name.c_str(),
                             file.string().c_str());
                const auto start = Clock::now();
                const auto build = blip::bench::build_model_file(name, type, file);
                if (!build.sum_mismatches.empty())
                    throw Error("the weight rule gives wrong sums for " + std::to_string(build.sum_mismatches.size()) +
                                " tensors of " + name.checkpoint + ", first " + build.sum_mismatches.front());
                std::fprintf(stderr, "blip-bench: %s %s: %s in %.1f s; timing...\n", name.checkpoint.c_str(),
                             type_name.c_str(), build.reused ? "reused" : "built", seconds_since(start));
                json child = run_child_process(executable, child_options, model, type_name, stage, file);
                child["model"] = model;
                child["type"] = type_name;
                if (!build.reused) child["tensor_sums_checked"] = build.checked_sums;
                children.push_back(child);
            }
        }
    }
    json rows = flatten_results(children);
    add_fractions(rows, limits);
    report["results"] = rows;
    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    report["command"] = command;
    const std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    report["date"] = date;
    report["threads"] = options.threads;
    report["runs"] = options.runs;
    if (options.json_output) {
        std::cout << report.dump(1) << "\n";
    } else {
        print_table(rows);
        print_requirement_table(rows);
    }
    if (!options.output_path.empty()) {
        std::ofstream out(options.output_path);
        out << report.dump(1) << "\n";
        if (!out) throw Error("could not write " + options.output_path);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse_options(argc, argv);
        if (!options.child_file.empty()) {
            const json result = run_child(options);
            std::ofstream out(options.child_output);
            out << result.dump() << "\n";
            if (!out) throw Error("could not write " + options.child_output);
            return 0;
        }
        return run_parent(options, argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "blip-bench: %s\n", e.what());
        return 1;
    }
}
