// Entry point of a blip-capfilt run: loads the models and hands the inputs to the list or
// the WebDataset runner.
#pragma once

#include <string>

#include "capfilt.hpp"
#include "options.hpp"
#include "progress.hpp"
#include "run_list.hpp"
#include "run_wds.hpp"

namespace capfilt {

// Whether the inputs are tar shards: --input-format wds, or a folder or .tar file given
// without --input-format.
inline bool is_wds_input(const Options& options) {
    if (!options.input_format.empty()) return options.input_format == "wds";
    const fs::path first = options.inputs.front();
    return fs::is_directory(first) || first.extension() == ".tar";
}

// Restores the kernels' default thread count when a run ends.
struct KernelThreadsGuard {
    KernelThreadsGuard() { blip::set_num_threads(1); }
    ~KernelThreadsGuard() { blip::set_num_threads(0); }
};

// Runs blip-capfilt with parsed options. Returns the exit status; throws blip::Error or
// blip_cli::UsageError.
inline int run_capfilt(const Options& options) {
    // Each inference thread runs one image on one core, which keeps every core busy with
    // the small matrix products of decoding. The kernels give the same bits on any thread.
    KernelThreadsGuard kernel_threads;
    const CapfiltModels models(options.captioner, options.filter, options.settings());
    const blip::GenerationConfig& generation = models.settings().generation;
    log("captioner " + options.captioner + ", filter " + options.filter + "; decoding " + decoding_name(options.decoding) +
        ", " + std::to_string(generation.num_return_sequences) + " caption(s) per image, threshold " +
        std::to_string(options.threshold) + ", seed " + std::to_string(options.seed) + "; " +
        std::to_string(options.inference_threads()) + " inference and " + std::to_string(options.decoding_threads()) +
        " decoding threads");
    if (is_wds_input(options)) return WdsRun(options, models).run();
    return ListRun(options, models).run();
}

}  // namespace capfilt
