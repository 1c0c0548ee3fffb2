// blip-convert: converts a Hugging Face BLIP model folder to a GGUF model file, or prints
// the contents of a GGUF file (--info).
#include "convert.hpp"

#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: blip-convert HF_DIR -o FILE [--type f32|f16] [--task caption|vqa|itm] [--verbose]\n"
    "       blip-convert --info FILE\n"
    "\n"
    "Converts a Hugging Face BLIP model folder (config.json, model.safetensors or\n"
    "pytorch_model.bin, vocab.txt, tokenizer_config.json, special_tokens_map.json,\n"
    "preprocessor_config.json, optional added_tokens.json) to one GGUF model file that\n"
    "holds the weights, the configuration, the vocabulary and the image preprocessing.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   GGUF file to write; it appears only when complete\n"
    "  --type f32|f16      element type of the Linear weights and word embeddings\n"
    "                      (default f32); other tensors always stay f32\n"
    "  --task TASK         caption, vqa or itm; by default detected from the tensor names\n"
    "                      (text_decoder: caption; text_encoder and text_decoder: vqa;\n"
    "                      text_encoder and itm_head: itm)\n"
    "  -v, --verbose       list the checkpoint tensors that the model does not use\n"
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
    std::string info_path;
    bool verbose = false;
    bool help = false;
};

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
            const std::string type = take_value();
            if (type == "f32") args.convert.type = blip::DType::F32;
            else if (type == "f16") args.convert.type = blip::DType::F16;
            else throw UsageError{"invalid --type \"" + type + "\"; expected f32 or f16"};
        } else if (arg == "--task") {
            const std::string task = take_value();
            if (task != "caption" && task != "vqa" && task != "itm")
                throw UsageError{"invalid --task \"" + task + "\"; expected caption, vqa or itm"};
            args.convert.task = blip::parse_task(task, "--task");
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
        throw UsageError{positional.empty() ? "no model folder given" : "more than one model folder given"};
    args.convert.input_dir = positional.front();
    if (args.convert.output_path.empty()) throw UsageError{"no output file given; pass -o FILE"};
    return args;
}

int run(const Arguments& args) {
    if (!args.info_path.empty()) {
        blip::convert::print_info(args.info_path, std::cout);
        return 0;
    }
    const blip::convert::ConvertReport report = blip::convert::convert_folder(args.convert);
    for (const std::string& warning : report.warnings) std::cerr << "blip-convert: warning: " << warning << "\n";
    if (args.verbose) {
        for (const std::string& alias : report.aliases) std::cout << "tied tensor read from its alias: " << alias << "\n";
        for (const std::string& name : report.ignored) std::cout << "ignored tensor: " << name << "\n";
    } else if (!report.ignored.empty()) {
        std::cout << report.ignored.size() << " checkpoint tensors are not used by the model (--verbose lists them)\n";
    }
    std::cout << "wrote " << args.convert.output_path << ": " << blip::task_name(report.task) << " model, "
              << report.tensor_count << " tensors, " << blip::dtype_name(args.convert.type) << ", "
              << report.tensor_bytes << " bytes of tensor data\n";
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
