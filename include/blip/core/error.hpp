// Error type thrown by every part of the library.
#pragma once

#include <stdexcept>
#include <string>

namespace blip {

// Thrown for invalid input, unreadable files and failed checks. The message names
// the file, tensor or value that failed and, where possible, what to do about it.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace blip
