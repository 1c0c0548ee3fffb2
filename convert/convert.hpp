// Conversion of a Hugging Face BLIP model folder to a GGUF model file, and the summary
// that `blip-convert --info` prints. Both blip-convert and the tests call these.
#pragma once

#include "checkpoint_folder.hpp"
#include "hf_config.hpp"

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/gguf/reader.hpp>
#include <blip/gguf/writer.hpp>
#include <blip/model/expected_tensors.hpp>
#include <blip/model/metadata.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

namespace blip::convert {

struct ConvertOptions {
    std::string input_dir;    // Hugging Face model folder
    std::string output_path;  // GGUF file to write
    DType type = DType::F32;  // F32, or F16 for the Linear weights and word embeddings
    std::optional<Task> task;  // detected from the tensor names when empty
};

struct ConvertReport {
    Task task = Task::Caption;
    std::size_t tensor_count = 0;
    std::uint64_t tensor_bytes = 0;
    std::vector<std::string> ignored;   // checkpoint tensors that the model does not use
    std::vector<std::string> aliases;   // "stored <- alias" for tied tensors read under their alias
    std::vector<std::string> warnings;
};

// Key of llama.cpp's file type: 0 = all F32, 1 = mostly F16.
inline constexpr const char* kFileTypeKey = "general.file_type";

// Encodes `value` as IEEE 754 binary16 with round-to-nearest-even. Values that round
// beyond 65504 become infinity; NaN stays NaN.
inline std::uint16_t float_to_half(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, 4);
    const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
    const std::uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u)  // infinity or NaN
        return static_cast<std::uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
    if (magnitude >= 0x477ff000u)  // 65520 and above round to infinity
        return static_cast<std::uint16_t>(sign | 0x7c00u);
    if (magnitude < 0x38800000u) {
        // Below 2^-14 the result is subnormal: a multiple of 2^-24. Scaling by 2^24 is
        // exact, and nearbyint rounds half to even in the default rounding mode.
        float scaled;
        std::memcpy(&scaled, &magnitude, 4);
        const auto units = static_cast<std::uint32_t>(std::nearbyint(scaled * 16777216.0f));
        return static_cast<std::uint16_t>(sign | units);  // 1024 units carry into the smallest normal
    }
    // Rebias the exponent from 127 to 15 and drop 13 mantissa bits, rounding half to even.
    std::uint32_t half = (magnitude >> 13) - (112u << 10);
    const std::uint32_t dropped = magnitude & 0x1fffu;
    if (dropped > 0x1000u || (dropped == 0x1000u && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
}

namespace detail {

inline bool has_prefix(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

// Returns the task that the checkpoint's modules imply, or an error that suggests --task.
inline Task detect_task(const Checkpoint& checkpoint, const std::optional<Task>& architecture_task) {
    bool has_encoder = false, has_decoder = false, has_itm_head = false;
    for (const SourceTensor& tensor : checkpoint.tensors()) {
        has_encoder = has_encoder || has_prefix(tensor.name, "text_encoder.");
        has_decoder = has_decoder || has_prefix(tensor.name, "text_decoder.");
        has_itm_head = has_itm_head || has_prefix(tensor.name, "itm_head.");
    }
    std::optional<Task> task;
    if (has_decoder && !has_encoder && !has_itm_head) task = Task::Caption;
    if (has_decoder && has_encoder && !has_itm_head) task = Task::Vqa;
    if (has_encoder && has_itm_head && !has_decoder) task = Task::Itm;
    if (!task)
        throw Error(checkpoint.source + ": cannot tell the task from the tensor names (text_decoder: " +
                    (has_decoder ? "yes" : "no") + ", text_encoder: " + (has_encoder ? "yes" : "no") +
                    ", itm_head: " + (has_itm_head ? "yes" : "no") + "); pass --task caption, vqa or itm");
    if (architecture_task && *architecture_task != *task)
        throw Error(checkpoint.source + ": the tensors are those of a " + task_name(*task) +
                    " model, but config.json's architectures names a " + task_name(*architecture_task) +
                    " model; pass --task to choose");
    return *task;
}

// Checks the widths that the model's attention layers connect.
inline void check_task_widths(const BlipConfig& config, const std::string& source) {
    if (config.text.encoder_hidden_size != config.vision.hidden_size)
        throw Error(source + ": text_config.encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                    " differs from vision_config.hidden_size " + std::to_string(config.vision.hidden_size) +
                    ", but the text cross-attends to the image embeddings");
    if (config.task == Task::Vqa && config.text.encoder_hidden_size != config.text.hidden_size)
        throw Error(source + ": a VQA model's answer decoder cross-attends to the question encoding, so " +
                    "text_config.encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                    " must equal text_config.hidden_size " + std::to_string(config.text.hidden_size));
}

// Throws unless the output can be created: its folder must exist and the path must not be a folder.
inline void check_output_path(const std::string& path) {
    namespace fs = std::filesystem;
    if (path.empty()) throw Error("no output file given; pass -o FILE");
    const fs::path output(path);
    if (fs::is_directory(output)) throw Error(path + " is a folder; pass the path of the GGUF file to write");
    const fs::path folder = output.has_parent_path() ? output.parent_path() : fs::path(".");
    if (!fs::is_directory(folder))
        throw Error("cannot write " + path + ": the folder " + folder.string() + " does not exist");
}

inline void write_vocabulary(gguf::Writer& writer, const Vocabulary& vocabulary) {
    writer.set_string_array(keys::kTokens, vocabulary.tokens);
    writer.set_i32_array(keys::kTokenTypes, vocabulary.types);
}

// Parses the metadata alone through read_config, so that the model loader's checks run
// before any tensor is converted.
inline void check_metadata(const BlipConfig& config, const std::string& source) {
    gguf::Writer writer;
    write_config(writer, config);
    const auto file = gguf::File::from_buffer(writer.to_bytes(), source);
    read_config(*file);
}

// The checkpoint tensor that provides `expected`, under its name or its tied alias.
struct TensorSource {
    const ExpectedTensor* expected = nullptr;
    const SourceTensor* tensor = nullptr;
};

inline std::string describe_problems(const std::string& source, const std::vector<std::string>& problems) {
    if (problems.size() == 1) return source + ": " + problems.front();
    std::string message = source + ": " + std::to_string(problems.size()) + " tensors do not match config.json:";
    const std::size_t listed_count = std::min<std::size_t>(problems.size(), 10);
    for (std::size_t i = 0; i < listed_count; ++i) message += "\n  " + problems[i];
    if (problems.size() > listed_count)
        message += "\n  ... and " + std::to_string(problems.size() - listed_count) + " more";
    return message;
}

// Matches every expected tensor with a checkpoint tensor and checks dtype and shape.
// Unused checkpoint tensors go to `report.ignored`, unless they look like part of the
// model (a layer that the configuration does not have), which is an error.
inline std::vector<TensorSource> match_tensors(const Checkpoint& checkpoint, const std::vector<ExpectedTensor>& expected,
                                               Task task, ConvertReport& report) {
    std::map<std::string, std::string> alias_of;
    for (const TiedTensor& tied : tied_tensors(task)) alias_of[tied.name] = tied.alias;
    std::set<std::string> used;
    std::vector<std::string> problems;
    std::vector<TensorSource> sources;

    for (const ExpectedTensor& tensor : expected) {
        const SourceTensor* found = checkpoint.find(tensor.name);
        const auto alias = alias_of.find(tensor.name);
        const SourceTensor* alias_tensor = alias == alias_of.end() ? nullptr : checkpoint.find(alias->second);
        if (alias_tensor) used.insert(alias_tensor->name);
        if (!found && alias_tensor) {
            found = alias_tensor;
            report.aliases.push_back(tensor.name + " <- " + alias_tensor->name);
        }
        if (!found) {
            problems.push_back("missing tensor " + tensor.name + " (expected shape " + format_shape(tensor.shape) + ")");
            continue;
        }
        used.insert(found->name);
        if (!is_float_dtype(found->dtype)) {
            problems.push_back("tensor " + found->name + " has dtype " + source_dtype_name(found->dtype) +
                               ", expected F32, F16 or BF16");
            continue;
        }
        if (found->shape != tensor.shape) {
            problems.push_back("tensor " + found->name + " has shape " + format_shape(found->shape) + ", expected " +
                               format_shape(tensor.shape));
            continue;
        }
        if (alias_tensor && alias_tensor != found) {
            if (alias_tensor->shape != found->shape || alias_tensor->to_f32() != found->to_f32())
                report.warnings.push_back(checkpoint.source + ": tied tensors " + found->name + " and " +
                                          alias_tensor->name + " differ; keeping " + found->name +
                                          " as transformers does when it ties them");
        }
        sources.push_back({&tensor, found});
    }

    std::set<std::string> patterns;
    for (const ExpectedTensor& tensor : expected) patterns.insert(tensor_name_pattern(tensor.name));
    for (const SourceTensor& tensor : checkpoint.tensors()) {
        if (used.count(tensor.name)) continue;
        if (patterns.count(tensor_name_pattern(tensor.name)) && !is_derived_buffer(tensor.name)) {
            problems.push_back("unexpected tensor " + tensor.name + " " + format_shape(tensor.shape) +
                               ": a layer that config.json does not have (check num_hidden_layers)");
            continue;
        }
        report.ignored.push_back(tensor.name);
    }
    if (!problems.empty()) throw Error(describe_problems(checkpoint.source, problems));
    return sources;
}

// Encodes one tensor as `type`, or as F32 where `type` is F16 but the role keeps F32.
inline DType encode_tensor(const TensorSource& source, DType type, std::vector<std::uint8_t>& bytes) {
    const std::vector<float> values = source.tensor->to_f32();
    const bool half = type == DType::F16 && source.expected->role != TensorRole::Other;
    if (!half) {
        bytes.resize(values.size() * 4);
        if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
        return DType::F32;
    }
    bytes.resize(values.size() * 2);
    for (std::size_t i = 0; i < values.size(); ++i) {
        const std::uint16_t bits = float_to_half(values[i]);
        if ((bits & 0x7fffu) == 0x7c00u && std::isfinite(values[i]))
            throw Error("tensor " + source.tensor->name + ": value " + std::to_string(values[i]) + " at index " +
                        std::to_string(i) + " exceeds the f16 range (65504); convert with --type f32");
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
    return DType::F16;
}

}  // namespace detail

// Converts the model folder `options.input_dir` to `options.output_path`. The output
// appears only when complete. If conversion throws, no output file is created or changed.
inline ConvertReport convert_folder(const ConvertOptions& options) {
    if (options.type != DType::F32 && options.type != DType::F16)
        throw Error("output type " + std::string(dtype_name(options.type)) + " is not supported; use f32 or f16");
    detail::check_output_path(options.output_path);

    HfModel model = read_hf_folder(options.input_dir);
    ConvertReport report;
    report.warnings = model.warnings;
    const Checkpoint checkpoint = read_checkpoint_folder(options.input_dir);

    BlipConfig& config = model.config;
    config.task = options.task ? *options.task : detail::detect_task(checkpoint, model.architecture_task);
    report.task = config.task;
    detail::check_task_widths(config, options.input_dir + "/config.json");
    detail::check_metadata(config, options.input_dir);

    const std::vector<ExpectedTensor> expected = expected_tensors(config);
    const std::vector<detail::TensorSource> sources = detail::match_tensors(checkpoint, expected, config.task, report);

    gguf::Writer writer;
    write_config(writer, config);
    detail::write_vocabulary(writer, model.vocabulary);
    writer.set_u32(kFileTypeKey, options.type == DType::F16 ? 1 : 0);
    for (const detail::TensorSource& source : sources) {
        std::vector<std::uint8_t> bytes;
        const DType type = detail::encode_tensor(source, options.type, bytes);
        report.tensor_bytes += bytes.size();
        writer.add_tensor(source.expected->name, type, source.expected->shape, std::move(bytes));
    }
    report.tensor_count = writer.tensor_count();
    writer.write_file(options.output_path);
    return report;
}

namespace detail {

inline std::string quote(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (byte < 0x20) {
            static const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[byte >> 4];
            out += hex[byte & 15];
        } else {
            out += c;
        }
    }
    return out + "\"";
}

inline std::string format_scalar(const gguf::Value& value) {
    using gguf::ValueType;
    switch (value.type) {
        case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
            return std::to_string(value.u);
        case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
            return std::to_string(value.i);
        case ValueType::F32: case ValueType::F64: {
            char text[32];
            std::snprintf(text, sizeof text, "%.9g", value.f);
            return text;
        }
        case ValueType::Bool: return value.u ? "true" : "false";
        case ValueType::String: return quote(value.s);
        case ValueType::Array: return "array";
    }
    return "?";
}

// Formats a metadata value; arrays show their item type, length and first items.
inline std::string format_value(const gguf::Value& value) {
    if (value.type != gguf::ValueType::Array) return format_scalar(value);
    constexpr std::size_t kShownItems = 8;
    std::string text = std::string("[") + gguf::value_type_name(value.array_type) + " x " +
                       std::to_string(value.items.size()) + "]";
    if (value.items.empty()) return text;
    text += " ";
    for (std::size_t i = 0; i < std::min(value.items.size(), kShownItems); ++i) {
        if (i) text += ", ";
        text += format_scalar(value.items[i]);
    }
    if (value.items.size() > kShownItems) text += ", ...";
    return text;
}

inline std::string pad_right(const std::string& text, std::size_t width) {
    return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

}  // namespace detail

// Prints the metadata and tensor table of the GGUF file at `path`.
inline void print_info(const std::string& path, std::ostream& out) {
    const auto file = gguf::File::open(path);
    out << path << ": GGUF version " << file->version() << ", " << file->file_size() << " bytes, alignment "
        << file->alignment() << "\n\n";

    out << "metadata (" << file->metadata().size() << " keys):\n";
    std::size_t key_width = 0;
    for (const auto& [key, value] : file->metadata()) key_width = std::max(key_width, key.size());
    for (const auto& [key, value] : file->metadata()) {
        const std::string type = value.type == gguf::ValueType::Array ? "array" : gguf::value_type_name(value.type);
        out << "  " << detail::pad_right(key, key_width) << "  " << detail::pad_right(type, 6) << "  "
            << detail::format_value(value) << "\n";
    }

    out << "\ntensors (" << file->tensors().size() << "):\n";
    std::size_t name_width = 4;
    for (const auto& tensor : file->tensors()) name_width = std::max(name_width, tensor.name.size());
    out << "  " << detail::pad_right("name", name_width) << "  type  " << detail::pad_right("shape", 20) << "  bytes\n";
    std::uint64_t total_bytes = 0, total_elements = 0;
    std::map<std::string, std::size_t> count_by_type;
    for (const auto& tensor : file->tensors()) {
        out << "  " << detail::pad_right(tensor.name, name_width) << "  "
            << detail::pad_right(std::string(dtype_name(tensor.type)), 4) << "  "
            << detail::pad_right(gguf::shape_string(tensor.shape), 20) << "  " << tensor.nbytes << "\n";
        total_bytes += tensor.nbytes;
        total_elements += static_cast<std::uint64_t>(tensor.numel());
        ++count_by_type[std::string(dtype_name(tensor.type))];
    }
    out << "\ntotal: " << file->tensors().size() << " tensors (";
    bool first = true;
    for (const auto& [type, count] : count_by_type) {
        out << (first ? "" : ", ") << count << " " << type;
        first = false;
    }
    out << "), " << total_elements << " parameters, " << total_bytes << " bytes of tensor data\n";
}

}  // namespace blip::convert
