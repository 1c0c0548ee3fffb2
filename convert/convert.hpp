// Conversion of BLIP checkpoints to GGUF model files: Hugging Face model folders
// (convert_folder) and bare checkpoint files such as Salesforce's original .pth files
// (convert_checkpoint_file). Both blip-convert and the tests call these.
#pragma once

#include "checkpoint_folder.hpp"
#include "hf_config.hpp"
#include "info.hpp"
#include "model_description.hpp"
#include "original_names.hpp"
#include "tensor_types.hpp"

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/core/output_path.hpp>
#include <blip/gguf/reader.hpp>
#include <blip/gguf/writer.hpp>
#include <blip/model/expected_tensors.hpp>
#include <blip/model/metadata.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace blip::convert {

// The largest image size that --image-size accepts, in pixels per side. 8192 pixels at
// 16-pixel patches is a 512 x 512 grid, far beyond BLIP's 224 to 480.
inline constexpr std::int64_t kMaxImageSize = 8192;

struct ConvertOptions {
    std::string input_dir;    // Hugging Face model folder, for convert_folder
    std::string input_file;   // checkpoint file (.pth, .bin, .safetensors), for convert_checkpoint_file
    std::string output_path;  // GGUF file to write

    // Requested element type of every weight group that the overrides below leave unset.
    DType type = DType::F32;
    std::optional<DType> vision_type;           // --vision
    std::optional<DType> text_type;             // --text
    std::optional<DType> token_embedding_type;  // --lm-head; defaults to the text type

    std::optional<Task> task;  // detected from the tensor names when empty
    // Checkpoint files only: "base", "large", a config.json or a model folder; empty
    // infers base or large from the vision width.
    std::string config;
    std::int64_t image_size = 0;           // pixels per side; 0 keeps the configuration's size
    const ShippedFiles* shipped = nullptr;  // vocabulary and configurations for checkpoint files
};

struct ConvertReport {
    Task task = Task::Caption;
    TensorTypes types;  // the requested types
    std::size_t tensor_count = 0;
    std::uint64_t tensor_bytes = 0;
    std::vector<std::string> ignored;    // checkpoint tensors that the model does not use
    std::vector<std::string> aliases;    // "stored <- alias" for tied tensors read under their alias
    std::vector<std::string> fallbacks;  // tensors stored in another type than requested, and why
    std::vector<std::string> notes;      // what the converter inferred or changed without an option
    std::vector<std::string> warnings;
};

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
    // parse_model_config sets the cross-attention width to the vision width, so this guards
    // configurations built in code.
    if (config.text.encoder_hidden_size != config.vision.hidden_size)
        throw Error(source + ": text_config.encoder_hidden_size " + std::to_string(config.text.encoder_hidden_size) +
                    " differs from vision_config.hidden_size " + std::to_string(config.vision.hidden_size) +
                    ", but the text cross-attends to the image embeddings");
    if (config.task == Task::Vqa && config.vision.hidden_size != config.text.hidden_size)
        throw Error(source + ": a VQA model's answer decoder cross-attends to the question encoding through " +
                    "layers of the vision width, so vision_config.hidden_size " +
                    std::to_string(config.vision.hidden_size) + " must equal text_config.hidden_size " +
                    std::to_string(config.text.hidden_size));
}

// Throws unless the output can be created: its folder must exist, and the path must not be a
// folder or another file that is not a regular file (output_file_path).
inline void check_output_path(const std::string& path) {
    namespace fs = std::filesystem;
    if (path.empty()) throw Error("no output file given; pass -o FILE");
    if (fs::is_directory(fs::path(path))) throw Error(path + " is a folder; pass the path of the GGUF file to write");
    const fs::path output = output_file_path(path);
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

inline std::string describe_problems(const std::string& source, const std::vector<std::string>& problems,
                                     const std::string& config_name) {
    if (problems.size() == 1) return source + ": " + problems.front();
    std::string message = source + ": " + std::to_string(problems.size()) + " tensors do not match " + config_name + ":";
    const std::size_t listed_count = std::min<std::size_t>(problems.size(), 10);
    for (std::size_t i = 0; i < listed_count; ++i) message += "\n  " + problems[i];
    if (problems.size() > listed_count)
        message += "\n  ... and " + std::to_string(problems.size() - listed_count) + " more";
    return message;
}

// Matches every expected tensor with a checkpoint tensor and checks dtype and shape.
// Unused checkpoint tensors go to `report.ignored`, unless they look like part of the
// model (a layer that the configuration does not have), which is an error. `config_name`
// names the configuration in messages ("config.json").
inline std::vector<TensorSource> match_tensors(const Checkpoint& checkpoint, const std::vector<ExpectedTensor>& expected,
                                               Task task, const std::string& config_name, ConvertReport& report) {
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
                               ": a layer that " + config_name + " does not have (check num_hidden_layers)");
            continue;
        }
        report.ignored.push_back(tensor.name);
    }
    if (!problems.empty()) throw Error(describe_problems(checkpoint.source, problems, config_name));
    return sources;
}

inline TensorTypes resolve_types(const ConvertOptions& options) {
    TensorTypes types;
    types.vision = options.vision_type.value_or(options.type);
    types.text = options.text_type.value_or(options.type);
    types.token_embedding = options.token_embedding_type.value_or(types.text);
    for (const DType type : {types.vision, types.text, types.token_embedding}) {
        if (!is_weight_type(type))
            throw Error("output type " + std::string(dtype_name(type)) +
                        " is not a weight type; use f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k or q6_k");
    }
    return types;
}

// Returns the side of the square patch grid of a position embedding [1, 1 + g*g, D], or 0
// when the shape is not of that form.
inline std::int64_t position_grid(const SourceTensor& position) {
    if (position.shape.size() != 3 || position.shape[1] < 2) return 0;
    const std::int64_t positions = position.shape[1] - 1;
    const auto grid = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(positions))));
    return grid * grid == positions ? grid : 0;
}

// Checks an image size against the configuration's patch size. A size that is not a multiple
// of the patch size is valid, because the grid has image_size / patch_size patches per side,
// rounded down, as in transformers' BlipVisionEmbeddings.
inline void check_image_size(std::int64_t image_size, const VisionConfig& vision) {
    if (image_size < vision.patch_size || image_size > kMaxImageSize)
        throw Error("image size " + std::to_string(image_size) + " must be between the patch size " +
                    std::to_string(vision.patch_size) + " and " + std::to_string(kMaxImageSize));
}

// Sets the model's input size to `image_size` pixels per side, for the vision tower and
// the image preprocessing alike.
inline void set_image_size(BlipConfig& config, std::int64_t image_size) {
    config.vision.image_size = image_size;
    config.preprocess.height = config.preprocess.width = image_size;
}

// Describes a resize of the position embedding from `old_grid` to `new_grid` patches per side,
// for images of `old_size` and `new_size` pixels per side.
inline std::string resize_note(std::int64_t old_grid, std::int64_t new_grid, std::int64_t old_size,
                               std::int64_t new_size) {
    return "position embedding resized from " + std::to_string(old_grid) + "x" + std::to_string(old_grid) + " to " +
           std::to_string(new_grid) + "x" + std::to_string(new_grid) + " patches (image size " +
           std::to_string(old_size) + " to " + std::to_string(new_size) + " pixels) by bicubic interpolation";
}

// The origin of a model's configuration, for messages: `path` leads errors about its
// values and `name` ends "N tensors do not match NAME".
struct ConfigSource {
    std::string path;
    std::string name;
};

// Writes the model file: the configuration and vocabulary of `model`, and the tensors of
// `checkpoint` (transformers names) that the model of `model.config.task` reads, each in
// its storage_type and stored_shape. The output appears only when complete.
inline void write_model_file(const HfModel& model, const Checkpoint& checkpoint, const TensorTypes& types,
                             const std::string& output_path, const ConfigSource& config_source,
                             ConvertReport& report) {
    const BlipConfig& config = model.config;
    const std::string& config_name = config_source.name;
    report.task = config.task;
    report.types = types;
    check_task_widths(config, config_source.path);
    check_metadata(config, checkpoint.source);

    const std::vector<ExpectedTensor> expected = expected_tensors(config);
    const std::vector<TensorSource> sources = match_tensors(checkpoint, expected, config.task, config_name, report);

    gguf::Writer writer;
    write_config(writer, config);
    write_vocabulary(writer, model.vocabulary);
    // A file whose groups were requested in different types has no llama.cpp file type.
    if (types.uniform()) {
        if (const auto file_type = llama_file_type(types.vision)) writer.set_u32(kFileTypeKey, *file_type);
    }
    bool has_block_type = false;
    for (const TensorSource& source : sources) {
        const ExpectedTensor& tensor = *source.expected;
        const DType group_type = types.of(tensor_group(tensor));
        const DType requested = requested_type(tensor, types);
        const DType type = storage_type(tensor, types);
        if (requested != group_type)
            report.notes.push_back(tensor.name + ": " + std::string(dtype_name(requested)) + " instead of " +
                                   std::string(dtype_name(group_type)) +
                                   " (the patch convolution is stored in at least 8 bits)");
        if (type != requested && requested != DType::F32)
            report.fallbacks.push_back(tensor.name + ": " + std::string(dtype_name(type)) + " instead of " +
                                       std::string(dtype_name(requested)) + " (rows of " +
                                       std::to_string(weight_row_length(tensor)) + " values are not a multiple of its " +
                                       std::to_string(dtype_traits(requested).block_size) + "-value blocks)");
        has_block_type = has_block_type || is_block_type(type);
        const std::vector<std::int64_t> shape = stored_shape(tensor, type);
        std::vector<std::uint8_t> bytes = encode_values(tensor.name, source.tensor->to_f32(), shape, type);
        report.tensor_bytes += bytes.size();
        writer.add_tensor(tensor.name, type, shape, std::move(bytes));
    }
    if (has_block_type) writer.set_u32(kQuantizationVersionKey, kQuantizationVersion);
    report.tensor_count = writer.tensor_count();
    writer.write_file(output_path);
}

// Returns whether the checkpoint uses the names of Salesforce's original code.
inline bool has_original_names(const Checkpoint& checkpoint) {
    for (const SourceTensor& tensor : checkpoint.tensors()) {
        if (has_prefix(tensor.name, "visual_encoder.")) return true;
    }
    return false;
}

}  // namespace detail

// Converts the model folder `options.input_dir` to `options.output_path`. The output
// appears only when complete. If conversion throws, no output file is created or changed.
inline ConvertReport convert_folder(const ConvertOptions& options) {
    const TensorTypes types = detail::resolve_types(options);
    detail::check_output_path(options.output_path);

    HfModel model = read_hf_folder(options.input_dir);
    ConvertReport report;
    report.warnings = model.warnings;
    Checkpoint checkpoint = read_checkpoint_folder(options.input_dir);

    BlipConfig& config = model.config;
    config.task = options.task ? *options.task : detail::detect_task(checkpoint, model.architecture_task);
    if (options.image_size > 0 && options.image_size != config.vision.image_size) {
        detail::check_image_size(options.image_size, config.vision);
        // Resize only an embedding that fits config.json, so that a mismatch is still reported.
        const char* name = "vision_model.embeddings.position_embedding";
        const SourceTensor* position = checkpoint.find(name);
        const std::int64_t new_grid = options.image_size / config.vision.patch_size;
        if (position && position->shape == std::vector<std::int64_t>{1, config.vision.num_positions(),
                                                                      config.vision.hidden_size}) {
            const std::int64_t old_grid = detail::position_grid(*position);
            // Two sizes can give the same grid (96 and 100 pixels in 16-pixel patches), and then
            // the embedding is kept as stored.
            if (old_grid != new_grid) {
                report.notes.push_back(detail::resize_note(old_grid, new_grid, config.vision.image_size,
                                                           options.image_size));
                checkpoint = resize_position_embedding(std::move(checkpoint), name, new_grid);
            }
            detail::set_image_size(config, options.image_size);
        }
    }
    detail::write_model_file(model, checkpoint, types, options.output_path,
                             {options.input_dir + "/config.json", "config.json"}, report);
    return report;
}

// Converts the checkpoint file `options.input_file`: a Salesforce .pth with the original
// names, or a pytorch_model.bin or .safetensors file with transformers names, with the
// configuration that `options.config` names (see describe_checkpoint_file). The position
// embedding is resized to the configured image size (or options.image_size) when the
// checkpoint stores another grid, as Salesforce's loader does. The output appears only
// when complete.
inline ConvertReport convert_checkpoint_file(const ConvertOptions& options) {
    namespace fs = std::filesystem;
    const TensorTypes types = detail::resolve_types(options);
    detail::check_output_path(options.output_path);
    if (options.input_file.empty()) throw Error("no checkpoint file given");
    if (fs::is_directory(options.input_file))
        throw Error(options.input_file + " is a folder; convert it with convert_folder");

    ConvertReport report;
    Checkpoint checkpoint = read_checkpoint_file(options.input_file);
    const bool original = detail::has_original_names(checkpoint);
    std::string config_choice = options.config;
    if (config_choice.empty()) {
        config_choice = detail::infer_config_name(checkpoint);
        report.notes.push_back("configuration: " + config_choice +
                               " (inferred from the vision width; pass --config to choose)");
    }
    HfModel model = describe_checkpoint_file(config_choice, checkpoint, options.shipped);
    report.warnings = model.warnings;
    BlipConfig& config = model.config;
    const std::string config_name = config_choice == "base" || config_choice == "large"
                                        ? "the shipped configuration \"" + config_choice + "\""
                                        : config_choice;

    if (options.task) {
        config.task = *options.task;
    } else {
        config.task = detail::detect_task(checkpoint, std::nullopt);
        report.notes.push_back(std::string("task: ") + task_name(config.task) +
                               " (inferred from the checkpoint's modules; pass --task to choose)");
    }

    const std::int64_t image_size = options.image_size > 0 ? options.image_size : config.vision.image_size;
    detail::check_image_size(image_size, config.vision);
    const std::int64_t new_grid = image_size / config.vision.patch_size;
    const char* position_name = original ? "visual_encoder.pos_embed" : "vision_model.embeddings.position_embedding";
    const SourceTensor* position = checkpoint.find(position_name);
    if (!position) throw Error(options.input_file + ": no position embedding " + std::string(position_name));
    const std::int64_t stored_grid = detail::position_grid(*position);
    if (stored_grid == 0)
        throw Error(options.input_file + ": position embedding " + position->name + " has shape " +
                    detail::format_shape(position->shape) + ", expected [1, 1 + grid^2, width]");
    // The checkpoint stores a grid, not an image size, so the note gives the smallest image
    // size of that grid.
    if (stored_grid != new_grid)
        report.notes.push_back(
            detail::resize_note(stored_grid, new_grid, stored_grid * config.vision.patch_size, image_size));

    if (original) {
        checkpoint = map_original_names(std::move(checkpoint), config.task, &report.ignored, image_size);
    } else {
        checkpoint = resize_position_embedding(std::move(checkpoint), position_name, new_grid);
    }
    detail::set_image_size(config, image_size);
    detail::write_model_file(model, checkpoint, types, options.output_path, {config_name, config_name}, report);
    return report;
}

}  // namespace blip::convert
