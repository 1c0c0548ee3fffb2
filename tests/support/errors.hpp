// Catches the blip::Error that a call raises, for checks of error messages.
#pragma once

#include <functional>
#include <string>

#include "blip/core/error.hpp"

namespace blip_test {

// Runs `action` and returns the message of the blip::Error it raised, or an empty string.
inline std::string error_of(const std::function<void()>& action) {
    try {
        action();
    } catch (const blip::Error& error) {
        return error.what();
    }
    return "";
}

}  // namespace blip_test
