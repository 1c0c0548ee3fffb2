// blip-capfilt: cleans a noisy image-text dataset with BLIP's CapFilt (captioner and
// filter); see --help and docs/capfilt.md.
#include <cstring>
#include <exception>
#include <string>

#include "../cli.hpp"
#include "merge.hpp"
#include "options.hpp"
#include "run.hpp"

int main(int argc, char** argv) {
    const char* const program = "blip-capfilt";
    const bool merge = argc > 1 && std::strcmp(argv[1], "merge") == 0;
    try {
        if (merge) return capfilt::run_merge(capfilt::parse_merge_options(argc, argv));
        return capfilt::run_capfilt(capfilt::parse_options(argc, argv));
    } catch (const blip_cli::UsageError& error) {
        blip_cli::print_error(program, error.what());
        return 2;
    } catch (const std::exception& error) {
        blip_cli::print_error(program, error.what());
        return 1;
    }
}
