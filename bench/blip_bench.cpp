// blip-bench: measures this machine's FMA and memory-bandwidth limits, then (once the model
// stages are in) the full-size BLIP models against them.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip/core/error.hpp"
#include "machine_limits.hpp"

namespace {

using blip::Error;
using nlohmann::json;

struct Options {
    std::vector<int> threads = {1, 2};
    bool json_output = false;
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
        if (arg == "--threads") {
            options.threads.clear();
            for (const auto& item : split_list(value())) options.threads.push_back(parse_positive(item, arg));
            if (options.threads.empty()) throw Error("--threads needs at least one thread count, e.g. --threads 1,2");
        } else if (arg == "--json") {
            options.json_output = true;
        } else if (arg == "--help" || arg == "-h") {
            std::cout << "usage: blip-bench [--threads 1,2] [--json]\n";
            std::exit(0);
        } else {
            throw Error("unknown option '" + arg + "'; see --help");
        }
    }
    return options;
}

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

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse_options(argc, argv);
        const auto limits = blip::bench::measure_machine_limits(options.threads);
        if (options.json_output) {
            std::cout << json{{"machine", limits_to_json(limits)}}.dump(1) << "\n";
        } else {
            std::cout << blip::bench::format_machine_limits(limits);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "blip-bench: %s\n", e.what());
        return 1;
    }
}
