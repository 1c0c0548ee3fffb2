// blip-wasm-bench: times one captioning model on one thread: the vision encoder, and
// greedy decoding per token. wasm/bench/run.sh builds this file natively and with
// Emscripten, so both builds run the same code on the same inputs.
//
// Usage: blip-wasm-bench MODEL.gguf IMAGE [--runs N] [--tokens N]
// Prints one JSON object: medians over N timed runs after one warm-up run.
#include <blip/blip.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const std::size_t middle = values.size() / 2;
    return values.size() % 2 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

int parse_count(const char* text, const char* option) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || value > 1000)
        throw blip::Error(std::string("invalid value '") + text + "' for " + option + ": expected an integer from 1 to 1000");
    return static_cast<int>(value);
}

const char* build_name() {
#ifdef __EMSCRIPTEN__
    return "wasm";
#else
    return "native";
#endif
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc < 3) {
            std::fprintf(stderr, "usage: blip-wasm-bench MODEL.gguf IMAGE [--runs N] [--tokens N]\n");
            return 2;
        }
        const std::string model_path = argv[1];
        const std::string image_path = argv[2];
        int runs = 3;
        int tokens = 30;
        for (int i = 3; i < argc; ++i) {
            const std::string arg = argv[i];
            if (i + 1 >= argc) throw blip::Error("option " + arg + " needs a value");
            if (arg == "--runs") {
                runs = parse_count(argv[++i], "--runs");
            } else if (arg == "--tokens") {
                tokens = parse_count(argv[++i], "--tokens");
            } else {
                throw blip::Error("unknown option " + arg);
            }
        }

        // The model alone, without the tokenizer: blip-bench's full-size files have none.
        const double load_start = now_ms();
        const blip::BlipForConditionalGeneration model(blip::gguf::File::open(model_path));
        const double load_ms = now_ms() - load_start;
        const std::vector<float> pixels = blip::preprocess_image(blip::decode_image_file(image_path), model.config.preprocess);

        // Vision encoder.
        std::vector<float> embeds = model.vision_model.forward(pixels);
        std::vector<double> vision_ms;
        for (int run = 0; run < runs; ++run) {
            const double start = now_ms();
            embeds = model.vision_model.forward(pixels);
            vision_ms.push_back(now_ms() - start);
        }

        // Greedy decoding: min_length keeps [SEP] from ending the caption early, so every run
        // generates exactly `tokens` tokens after [DEC].
        blip::GenerationConfig fixed;
        fixed.max_length = tokens + 1;
        fixed.min_length = tokens + 1;
        std::vector<double> token_ms;
        for (int run = 0; run <= runs; ++run) {
            const double start = now_ms();
            model.generate(embeds, {}, fixed);
            if (run > 0) token_ms.push_back((now_ms() - start) / tokens);  // run 0 warms up
        }

        // Greedy caption with max_length 30, to check that both builds agree.
        blip::GenerationConfig greedy;
        greedy.max_length = 30;
        const std::vector<std::int32_t> reference = model.generate(embeds, {}, greedy);

        std::printf("{\"build\": \"%s\", \"model\": \"%s\", \"kernels\": \"%s\", \"runs\": %d, \"tokens\": %d, "
                    "\"load_ms\": %.1f, \"vision_ms\": %.2f, \"token_ms\": %.3f, \"greedy_max30\": [",
                    build_name(), model_path.c_str(),
                    std::string(blip::quant::cpu_level_name(blip::quant::active_cpu_level())).c_str(), runs, tokens,
                    load_ms, median(vision_ms), median(token_ms));
        for (std::size_t i = 0; i < reference.size(); ++i) std::printf("%s%d", i ? ", " : "", reference[i]);
        std::printf("]}\n");
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "blip-wasm-bench: error: %s\n", error.what());
        return 1;
    }
}
