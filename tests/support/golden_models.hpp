// The tiny golden models, converted to GGUF files for the suites that run them.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "blip/core/dtype.hpp"

#include "convert/convert.hpp"
#include "support/golden.hpp"

namespace blip_test {

// Returns the folder scratch_dir(`suite`)/`name`, emptied of what an earlier run left there.
inline fs::path fresh_scratch_dir(const std::string& suite, const std::string& name) {
    const fs::path dir = scratch_dir(suite) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

// Copies a golden file, which is read-only, as a file that the test may overwrite.
inline void copy_writable(const fs::path& source, const fs::path& target) {
    fs::copy_file(source, target, fs::copy_options::overwrite_existing);
    fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
}

// Copies the configuration and tokenizer files of the golden folder models/`model` (everything
// but its weights) to fresh_scratch_dir(`suite`, `name`) and returns that folder.
inline fs::path copy_without_weights(const std::string& suite, const std::string& model, const std::string& name) {
    const fs::path dir = fresh_scratch_dir(suite, name);
    for (const auto& entry : fs::directory_iterator(golden_dir() / "models" / model)) {
        if (entry.path().extension() == ".json" || entry.path().extension() == ".txt")
            copy_writable(entry.path(), dir / entry.path().filename());
    }
    return dir;
}

// Converts the model folder `input_dir` to scratch_dir(`scratch`)/`name`.gguf with weights of
// `type`, once per process, and returns the file's path. Each suite names its own scratch
// folder, so that suites running at the same time never write the same file.
inline std::string converted_model(const std::string& scratch, const fs::path& input_dir, const std::string& name,
                                   blip::DType type = blip::DType::F32) {
    const std::string output = (scratch_dir(scratch) / (name + ".gguf")).string();
    static std::set<std::string> converted;
    if (converted.count(output) == 0) {
        blip::convert::ConvertOptions options;
        options.input_dir = input_dir.string();
        options.output_path = output;
        options.type = type;
        blip::convert::convert_folder(options);
        converted.insert(output);
    }
    return output;
}

// Converts the golden model folder models/`name` to an f32 GGUF file, as converted_model does.
inline std::string converted_golden_model(const std::string& scratch, const std::string& name) {
    return converted_model(scratch, golden_dir() / "models" / name, name);
}

}  // namespace blip_test
