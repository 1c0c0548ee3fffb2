// Runs a command-line tool through the shell and captures what it printed.
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

}  // namespace blip_test
