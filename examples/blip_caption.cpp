// blip-caption: writes a caption for each image with a BLIP captioning model file.
#include <blip/blip.hpp>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

const char* const kProgram = "blip-caption";

const char* const kHelp = R"(Usage: blip-caption -m MODEL.gguf [options] IMAGE...

Writes a caption for each image and prints "IMAGE<TAB>caption" per line.
Images: JPEG, PNG, BMP, GIF (first frame), TGA, PNM.

Options:
  -m, --model FILE       model file written by blip-convert (required)
  --prompt TEXT          text the caption continues, for example "a picture of";
                         the printed caption starts with it, as transformers prints it
  --max-length N         maximum tokens per caption, counting [DEC] and the prompt
                         (default 20, as transformers)
  --min-length N         [SEP] may not end a caption shorter than N tokens (default 0)
  --threads N            threads for the model (default: one per core)
  --json                 print one JSON object per image instead:
                         {"image", "caption", "ids"}
  -h, --help             print this help

An image that cannot be read is reported on stderr with the reason; the others are
still captioned, and the exit status is 1. Usage errors exit with status 2.
)";

struct Options {
    std::string model;
    std::vector<std::string> images;
    blip::CaptionOptions caption;
    int threads = 0;
    bool json = false;
};

Options parse(int argc, char** argv) {
    Options options;
    blip_cli::Arguments args(argc, argv);
    while (!args.done()) {
        const std::string arg = args.next();
        if (arg == "-h" || arg == "--help") {
            std::fputs(kHelp, stdout);
            std::exit(0);
        } else if (arg == "-m" || arg == "--model") {
            options.model = args.value(arg);
        } else if (arg == "--prompt") {
            options.caption.prompt = args.value(arg);
        } else if (arg == "--max-length") {
            options.caption.generation.max_length = args.integer(arg, 1, 1 << 20);
        } else if (arg == "--min-length") {
            options.caption.generation.min_length = args.integer(arg, 0, 1 << 20);
        } else if (arg == "--threads") {
            options.threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--json") {
            options.json = true;
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw blip_cli::UsageError("unknown option " + arg + " (see --help)");
        } else {
            options.images.push_back(arg);
        }
    }
    if (options.model.empty()) throw blip_cli::UsageError("no model given: pass -m MODEL.gguf (see --help)");
    if (options.images.empty()) throw blip_cli::UsageError("no image given (see --help)");
    return options;
}

void print_caption(const Options& options, const std::string& image, const blip::Caption& caption) {
    if (options.json) {
        nlohmann::ordered_json record = {{"image", image}, {"caption", caption.text}, {"ids", caption.ids}};
        std::printf("%s\n", record.dump().c_str());
    } else {
        std::printf("%s\t%s\n", image.c_str(), caption.text.c_str());
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        options = parse(argc, argv);
    } catch (const blip_cli::UsageError& error) {
        blip_cli::print_error(kProgram, error.what());
        return 2;
    }

    try {
        blip::set_num_threads(options.threads);
        const blip::Captioner captioner = blip::Captioner::open(options.model);
        int failures = 0;
        for (const std::string& image : options.images) {
            try {
                print_caption(options, image, captioner.caption_file(image, options.caption));
            } catch (const blip::Error& error) {
                blip_cli::print_error(kProgram, error.what());
                ++failures;
            }
        }
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& error) {
        blip_cli::print_error(kProgram, error.what());
        return 1;
    }
}
