// The tiny golden models, converted to GGUF files for the suites that run them.
#pragma once

#include <set>
#include <string>

#include "convert/convert.hpp"
#include "support/golden.hpp"

namespace blip_test {

// Converts the golden model folder models/`name` to an f32 GGUF file in scratch_dir(`scratch`)
// once per process and returns the file's path. Each suite names its own scratch folder, so
// that suites running at the same time never write the same file.
inline std::string converted_golden_model(const std::string& scratch, const std::string& name) {
    const std::string output = (scratch_dir(scratch) / (name + ".gguf")).string();
    static std::set<std::string> converted;
    if (converted.count(output) == 0) {
        blip::convert::ConvertOptions options;
        options.input_dir = (golden_dir() / "models" / name).string();
        options.output_path = output;
        blip::convert::convert_folder(options);
        converted.insert(output);
    }
    return output;
}

}  // namespace blip_test
