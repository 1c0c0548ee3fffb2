// Command-line helpers shared by the example tools: option values parsed with errors that
// name the option, and a uniform way to report errors.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace blip_cli {

// Invalid command line; the message names the option and the value.
class UsageError : public std::runtime_error {
public:
    explicit UsageError(const std::string& message) : std::runtime_error(message) {}
};

// Walks argv; options take their value from the next argument.
class Arguments {
public:
    Arguments(int argc, char** argv) : args_(argv + 1, argv + argc) {}

    bool done() const { return index_ >= args_.size(); }
    const std::string& peek() const { return args_[index_]; }
    std::string next() { return args_[index_++]; }

    std::string value(const std::string& option) {
        if (done()) throw UsageError("option " + option + " needs a value");
        return next();
    }

    std::int64_t integer(const std::string& option, std::int64_t min_value, std::int64_t max_value) {
        const std::string text = value(option);
        errno = 0;
        char* end = nullptr;
        const long long parsed = std::strtoll(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0' || errno == ERANGE || parsed < min_value || parsed > max_value)
            throw UsageError("option " + option + ": \"" + text + "\" is not an integer in " +
                             std::to_string(min_value) + ".." + std::to_string(max_value));
        return parsed;
    }

    double real(const std::string& option, double min_value, double max_value) {
        const std::string text = value(option);
        errno = 0;
        char* end = nullptr;
        const double parsed = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || errno == ERANGE || !(parsed >= min_value && parsed <= max_value))
            throw UsageError("option " + option + ": \"" + text + "\" is not a number in " + std::to_string(min_value) +
                             ".." + std::to_string(max_value));
        return parsed;
    }

private:
    std::vector<std::string> args_;
    std::size_t index_ = 0;
};

inline void print_error(const char* program, const std::string& message) {
    std::fprintf(stderr, "%s: error: %s\n", program, message.c_str());
}

}  // namespace blip_cli
