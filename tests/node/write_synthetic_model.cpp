// Writes a small captioning model folder with random weights and rows of 256 values (see
// tests/support/synthetic_model.hpp), for tests outside the doctest programs.
// Usage: blip_write_synthetic_model FOLDER
#include <exception>
#include <iostream>

#include "support/synthetic_model.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: blip_write_synthetic_model FOLDER\n";
        return 2;
    }
    try {
        blip_test::write_synthetic_model(argv[1], blip_test::SyntheticModel{});
    } catch (const std::exception& error) {
        std::cerr << "blip_write_synthetic_model: error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}
