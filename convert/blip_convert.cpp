// blip-convert: converts a BLIP checkpoint (a Hugging Face model folder, or a checkpoint
// file such as Salesforce's original .pth) to a GGUF model file, or prints the contents of
// a GGUF file (--info).
#include "convert.hpp"
#include "shipped_files_data.hpp"

#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: blip-convert INPUT -o FILE [--type TYPE] [--vision TYPE] [--text TYPE] [--lm-head TYPE]\n"
    "                    [--task caption|vqa|itm] [--config NAME|FILE|DIR] [--image-size N] [--verbose]\n"
    "       blip-convert --info FILE\n"
    "\n"
    "Converts a BLIP checkpoint to one GGUF model file that holds the weights, the\n"
    "configuration, the vocabulary and the image preprocessing. INPUT is either\n"
    "  - a Hugging Face model folder: config.json, model.safetensors (or sharded\n"
    "    model.safetensors.index.json, or pytorch_model.bin), vocab.txt,\n"
    "    tokenizer_config.json, special_tokens_map.json, preprocessor_config.json and\n"
    "    optional added_tokens.json; or\n"
    "  - a checkpoint file: one of Salesforce's original .pth files (model_base_capfilt_large.pth,\n"
    "    model_base_vqa_capfilt_large.pth, model_base_retrieval_coco.pth, model_large_caption.pth,\n"
    "    ...), a pytorch_model.bin or a .safetensors file. Its configuration comes from --config\n"
    "    and its vocabulary from the --config folder's vocab.txt, else from the shipped\n"
    "    bert-base-uncased vocabulary with BLIP's [DEC] and [ENC].\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   GGUF file to write; it appears only when complete\n"
    "  --type TYPE         element type of the weights: f32 (default), f16, bf16, q8_0, q4_0,\n"
    "                      q4_1, q4_k, q5_k or q6_k. Only Linear weights, the patch convolution\n"
    "                      and word embeddings take it; biases, norms, class and position\n"
    "                      embeddings stay f32. The patch convolution is stored as a\n"
    "                      [hidden, 3 * patch * patch] matrix unless f32, and as q8_0 in place\n"
    "                      of types with fewer bits. Rows that are not a whole number of blocks\n"
    "                      fall back: q4_k to q4_1, q5_k and q6_k to q8_0, then to f16\n"
    "  --vision TYPE       type of the Linear weights of the image encoder and vision_proj, and\n"
    "                      of the patch convolution\n"
    "  --text TYPE         type of the Linear weights of the text transformers, text_proj and itm_head\n"
    "  --lm-head TYPE      type of the word embeddings, which the decoder also uses as its output\n"
    "                      projection (default: the --text type)\n"
    "  --task TASK         caption, vqa or itm; by default detected from the tensor names\n"
    "                      (text_decoder: caption; text_encoder and text_decoder: vqa;\n"
    "                      text_encoder and itm_head: itm). Salesforce's pre-training files hold\n"
    "                      all three and need --task\n"
    "  --config CONFIG     checkpoint files only: base or large (the shipped configurations of\n"
    "                      Salesforce's ViT-B and ViT-L models at 384 pixels), a config.json, or a\n"
    "                      model folder with config.json and optionally the tokenizer files and\n"
    "                      preprocessor_config.json. By default base or large, from the vision width\n"
    "  --image-size N      input size in pixels per side; the position embeddings are resized by\n"
    "                      bicubic interpolation as Salesforce's interpolate_pos_embed does. By\n"
    "                      default the configuration's size\n"
    "  -v, --verbose       list the checkpoint tensors that the model does not use and the tensors\n"
    "                      stored in a fallback type\n"
    "  --info FILE         print the metadata and tensor table of a GGUF file\n"
    "  -h, --help          print this help\n"
    "\n"
    "Errors go to stderr as \"blip-convert: error: MESSAGE\" with exit status 1\n"
    "(2 for invalid command-line arguments).\n";

struct UsageError {
    std::string message;
};

struct Arguments {
    blip::convert::ConvertOptions convert;
    std::string input;
    std::string info_path;
    bool verbose = false;
    bool help = false;
};

blip::DType parse_type(const std::string& option, const std::string& name) {
    blip::DType type = blip::DType::F32;
    if (!blip::parse_dtype(name, type) || !blip::convert::is_weight_type(type))
        throw UsageError{"invalid " + option + " \"" + name +
                         "\"; expected f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k or q6_k"};
    return type;
}

Arguments parse_arguments(int argc, char** argv) {
    Arguments args;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string value;
        bool has_inline_value = false;
        if (arg.rfind("--", 0) == 0) {
            const auto equals = arg.find('=');
            if (equals != std::string::npos) {
                value = arg.substr(equals + 1);
                arg = arg.substr(0, equals);
                has_inline_value = true;
            }
        }
        const auto take_value = [&]() {
            if (has_inline_value) return value;
            if (i + 1 >= argc) throw UsageError{"option " + arg + " needs a value"};
            return std::string(argv[++i]);
        };
        if (arg == "-h" || arg == "--help") {
            args.help = true;
        } else if (arg == "-v" || arg == "--verbose") {
            args.verbose = true;
        } else if (arg == "-o" || arg == "--output") {
            args.convert.output_path = take_value();
        } else if (arg == "--info") {
            args.info_path = take_value();
        } else if (arg == "--type") {
            args.convert.type = parse_type(arg, take_value());
        } else if (arg == "--vision") {
            args.convert.vision_type = parse_type(arg, take_value());
        } else if (arg == "--text") {
            args.convert.text_type = parse_type(arg, take_value());
        } else if (arg == "--lm-head") {
            args.convert.token_embedding_type = parse_type(arg, take_value());
        } else if (arg == "--task") {
            const std::string task = take_value();
            if (task != "caption" && task != "vqa" && task != "itm")
                throw UsageError{"invalid --task \"" + task + "\"; expected caption, vqa or itm"};
            args.convert.task = blip::parse_task(task, "--task");
        } else if (arg == "--config") {
            args.convert.config = take_value();
            if (args.convert.config.empty()) throw UsageError{"--config needs a value: base, large, a file or a folder"};
        } else if (arg == "--image-size") {
            const std::string text = take_value();
            std::size_t end = 0;
            long long size = 0;
            try {
                size = std::stoll(text, &end);
            } catch (const std::exception&) {
                end = 0;
            }
            if (end == 0 || end != text.size() || size <= 0)
                throw UsageError{"invalid --image-size \"" + text + "\"; expected a positive number of pixels"};
            args.convert.image_size = size;
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw UsageError{"unknown option " + arg};
        } else {
            positional.push_back(arg);
        }
    }
    if (args.help) return args;
    if (!args.info_path.empty()) {
        if (!positional.empty() || !args.convert.output_path.empty())
            throw UsageError{"--info takes only the GGUF file to print"};
        return args;
    }
    if (positional.size() != 1)
        throw UsageError{positional.empty() ? "no input given; pass a model folder or a checkpoint file"
                                            : "more than one input given"};
    args.input = positional.front();
    if (args.convert.output_path.empty()) throw UsageError{"no output file given; pass -o FILE"};
    return args;
}

// Returns "q8_0", or "vision q8_0, text q4_0, lm-head f16" when the groups differ.
std::string describe_types(const blip::convert::TensorTypes& types) {
    const auto name = [](blip::DType type) { return std::string(blip::dtype_name(type)); };
    if (types.uniform()) return name(types.vision);
    return "vision " + name(types.vision) + ", text " + name(types.text) + ", lm-head " + name(types.token_embedding);
}

int run(Arguments args) {
    if (!args.info_path.empty()) {
        blip::convert::print_info(args.info_path, std::cout);
        return 0;
    }

    std::error_code status_error;
    const std::filesystem::file_status input_status = std::filesystem::status(args.input, status_error);
    if (!std::filesystem::exists(input_status)) {
        const std::string reason = status_error ? status_error.message() : std::string("not found");
        throw blip::Error("cannot read " + args.input + ": " + reason +
                          ". The input must be a Hugging Face model folder or a checkpoint file (.pth, .bin or "
                          ".safetensors)");
    }

    blip::convert::ConvertReport report;
    if (std::filesystem::is_directory(input_status)) {
        if (!args.convert.config.empty())
            throw blip::Error("--config applies to checkpoint files; the folder " + args.input +
                              " has its own config.json");
        args.convert.input_dir = args.input;
        report = blip::convert::convert_folder(args.convert);
    } else {
        const blip::convert::ShippedFiles shipped{std::string(blip::convert::shipped::kBertVocabulary),
                                                  std::string(blip::convert::shipped::kBaseConfig),
                                                  std::string(blip::convert::shipped::kLargeConfig)};
        args.convert.input_file = args.input;
        args.convert.shipped = &shipped;
        report = blip::convert::convert_checkpoint_file(args.convert);
    }

    for (const std::string& warning : report.warnings) std::cerr << "blip-convert: warning: " << warning << "\n";
    for (const std::string& note : report.notes) std::cout << "note: " << note << "\n";
    if (args.verbose) {
        for (const std::string& alias : report.aliases) std::cout << "tied tensor read from its alias: " << alias << "\n";
        for (const std::string& name : report.ignored) std::cout << "ignored tensor: " << name << "\n";
        for (const std::string& fallback : report.fallbacks) std::cout << "fallback type: " << fallback << "\n";
    } else {
        if (report.ignored.size() == 1)
            std::cout << "1 checkpoint tensor is not used by the model (--verbose names it)\n";
        else if (!report.ignored.empty())
            std::cout << report.ignored.size() << " checkpoint tensors are not used by the model (--verbose lists them)\n";
        if (report.fallbacks.size() == 1)
            std::cout << "1 tensor has rows that do not fit the requested type and uses another (--verbose names it)\n";
        else if (!report.fallbacks.empty())
            std::cout << report.fallbacks.size()
                      << " tensors have rows that do not fit the requested type and use another (--verbose lists them)\n";
    }
    std::cout << "wrote " << args.convert.output_path << ": " << blip::task_name(report.task) << " model, "
              << report.tensor_count << " tensors, " << describe_types(report.types) << ", " << report.tensor_bytes
              << " bytes of tensor data\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Arguments args;
    try {
        args = parse_arguments(argc, argv);
    } catch (const UsageError& error) {
        std::cerr << "blip-convert: error: " << error.message << "\n(run blip-convert --help for the options)\n";
        return 2;
    }
    if (args.help) {
        std::cout << kUsage;
        return 0;
    }
    try {
        return run(args);
    } catch (const std::exception& error) {
        std::cerr << "blip-convert: error: " << error.what() << "\n";
        return 1;
    }
}
