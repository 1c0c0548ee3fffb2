// Finds the command-line tools that the build wrote, runs them through the shell and captures
// what they printed.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "support/golden.hpp"

namespace blip_test {

// The exit status (-1 when the tool did not exit normally) and the output of one command.
struct CommandResult {
    int status = -1;
    std::string out;
    std::string err;
};

// Runs `command_line` with its standard output and error redirected to files in `dir`.
inline CommandResult run_command(const std::filesystem::path& dir, const std::string& command_line) {
    const std::filesystem::path out = dir / "stdout";
    const std::filesystem::path err = dir / "stderr";
    const std::string command = command_line + " >" + out.string() + " 2>" + err.string();
    const int status = std::system(command.c_str());
    CommandResult result;
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = read_text(out);
    result.err = read_text(err);
    return result;
}

// Returns the path of the tool `name` that this build writes to BLIP_BINARY_DIR/`folder`, or an
// empty path after marking the case skipped when the tool is not built.
inline std::filesystem::path built_tool(const std::string& folder, const std::string& name) {
    const std::filesystem::path path = std::filesystem::path(BLIP_BINARY_DIR) / folder / name;
    if (std::filesystem::exists(path)) return path;
    skip_case(name + " is not built at " + path.string() + " (build it with: cmake --build " + BLIP_BINARY_DIR +
              " --target " + name + ")");
    return {};
}

}  // namespace blip_test
