// blip-caption: writes a caption for each image with a BLIP captioning model file.
#include <blip/blip.hpp>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"

namespace {

const char* const kProgram = "blip-caption";

const char* const kHelp = R"(Usage: blip-caption -m MODEL.gguf [options] IMAGE...

Writes a caption for each image and prints "IMAGE<TAB>caption" per line (one line per
caption when --num-return-sequences is above 1, best first).
Images: JPEG, PNG, BMP, GIF (first frame), TGA, PNM, and still WebP in builds with libwebp.

Options:
  -m, --model FILE       model file written by blip-convert (required)
  --prompt TEXT          text the caption continues, for example "a picture of";
                         the printed caption starts with it, as transformers prints it
  --max-length N         maximum tokens per caption, counting [DEC] and the prompt
                         (default 20, as transformers)
  --min-length N         [SEP] may not end a caption shorter than N tokens (default 0)
  --threads N            threads for the model (default: one per core)
  --batch N              images decoded together (default 1); every image gets the
                         caption it gets alone
  --json                 print one JSON object per caption instead:
                         {"image", "caption", "ids"}, with "sequence" (0 for the best)
                         and "score" for beam search
  --stream               print each caption's words as soon as they are final (greedy
                         search and sampling; beam search prints at the end); needs
                         --batch 1 and no --json
  -h, --help             print this help

Decoding (greedy search unless --beams or --sample is given; both give beam sampling):
  --beams N              beam search with N beams (default 1: off)
  --length-penalty X     beam search: a finished caption's summed log-probability is
                         divided by its length to the power X (default 1; above 0
                         favours longer captions)
  --num-return-sequences N
                         captions per image: the N best beams, or N samples (each
                         the best of its own beams with --beams) (default 1)
  --sample               draw each token at random from the processed distribution
  --top-k N              sampling: keep the N most likely tokens (default 50; 0 keeps
                         all)
  --top-p X              sampling: keep the most likely tokens whose probability
                         reaches X (default 1: all)
  --temperature X        sampling: divide the logits by X (default 1)
  --seed N               sampling: random seed (default 0); the same seed gives the
                         same captions on every run and thread count
  --repetition-penalty X divide the positive logits (multiply the negative ones) of
                         tokens already in the caption, prompt included (default 1: off)
  --no-repeat-ngram N    never repeat an N-gram of tokens (default 0: off)

Sampling as Salesforce's CapFilt captioner: --sample --top-p 0.9 --repetition-penalty 1.1

An image that cannot be read is reported on stderr with the reason; the others are
still captioned, and the exit status is 1. Usage errors exit with status 2.
)";

struct Options {
    std::string model;
    std::vector<std::string> images;
    blip::CaptionOptions caption;
    int threads = 0;
    std::int64_t batch = 1;
    bool json = false;
    bool stream = false;
};

Options parse(int argc, char** argv) {
    Options options;
    blip::GenerationConfig& generation = options.caption.generation;
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
            generation.max_length = args.integer(arg, 1, 1 << 20);
        } else if (arg == "--min-length") {
            generation.min_length = args.integer(arg, 0, 1 << 20);
        } else if (arg == "--threads") {
            options.threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--batch") {
            options.batch = args.integer(arg, 1, 4096);
        } else if (arg == "--json") {
            options.json = true;
        } else if (arg == "--stream") {
            options.stream = true;
        } else if (arg == "--beams") {
            generation.num_beams = args.integer(arg, 1, 1024);
        } else if (arg == "--length-penalty") {
            generation.length_penalty = args.real(arg, -100, 100);
        } else if (arg == "--num-return-sequences") {
            generation.num_return_sequences = args.integer(arg, 1, 1024);
        } else if (arg == "--sample") {
            generation.do_sample = true;
        } else if (arg == "--top-k") {
            generation.top_k = args.integer(arg, 0, 1 << 30);
        } else if (arg == "--top-p") {
            generation.top_p = args.real(arg, 0, 1);
        } else if (arg == "--temperature") {
            generation.temperature = args.real(arg, 1e-6, 1e6);
        } else if (arg == "--seed") {
            generation.seed = static_cast<std::uint64_t>(args.integer(arg, 0, std::numeric_limits<std::int64_t>::max()));
        } else if (arg == "--repetition-penalty") {
            generation.repetition_penalty = args.real(arg, 1e-6, 1e6);
        } else if (arg == "--no-repeat-ngram") {
            generation.no_repeat_ngram_size = args.integer(arg, 0, 1 << 20);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw blip_cli::UsageError("unknown option " + arg + " (see --help)");
        } else {
            options.images.push_back(arg);
        }
    }
    if (options.model.empty()) throw blip_cli::UsageError("no model given: pass -m MODEL.gguf (see --help)");
    if (options.images.empty()) throw blip_cli::UsageError("no image given (see --help)");
    if (options.stream && (options.json || options.batch != 1))
        throw blip_cli::UsageError("--stream needs --batch 1 and cannot be combined with --json");
    try {
        blip::check_generation_config(generation);
    } catch (const blip::Error& error) {
        throw blip_cli::UsageError(error.what());
    }
    return options;
}

void print_caption(const Options& options, const std::string& image, std::size_t sequence,
                   const blip::Caption& caption) {
    if (options.json) {
        nlohmann::ordered_json record = {{"image", image}, {"caption", caption.text}, {"ids", caption.ids}};
        if (options.caption.generation.num_return_sequences > 1) record["sequence"] = sequence;
        if (options.caption.generation.num_beams > 1) record["score"] = caption.score;
        std::printf("%s\n", record.dump().c_str());
    } else {
        std::printf("%s\t%s\n", image.c_str(), caption.text.c_str());
    }
    std::fflush(stdout);
}

// Captions the decoded images of one batch and prints their captions in order.
void caption_batch(const blip::Captioner& captioner, const Options& options, const std::vector<std::string>& names,
                   const std::vector<blip::ImageU8>& images) {
    if (images.empty()) return;
    blip::CaptionOptions caption_options = options.caption;
    if (options.stream) {
        std::printf("%s\t", names.front().c_str());
        std::fflush(stdout);
        caption_options.on_text = [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
        };
    }
    std::vector<std::vector<blip::Caption>> captions;
    try {
        captions = captioner.caption_batch(images, caption_options);
    } catch (const blip::Error&) {
        // End the line of a streamed caption that the error cut short, so that the next
        // image's caption starts a line of its own.
        if (options.stream) std::printf("\n");
        throw;
    }
    for (std::size_t image = 0; image < captions.size(); ++image) {
        for (std::size_t sequence = 0; sequence < captions[image].size(); ++sequence) {
            if (options.stream && image == 0 && sequence == 0) {
                std::printf("\n");  // its text was printed piece by piece
                std::fflush(stdout);
                continue;
            }
            print_caption(options, names[image], sequence, captions[image][sequence]);
        }
    }
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
        captioner.check_options(options.caption);
        int failures = 0;
        std::vector<std::string> names;
        std::vector<blip::ImageU8> images;
        for (std::size_t index = 0; index < options.images.size(); ++index) {
            const std::string& image = options.images[index];
            try {
                images.push_back(blip::decode_image_file(image));
                names.push_back(image);
            } catch (const blip::Error& error) {
                blip_cli::print_error(kProgram, error.what());
                ++failures;
            }
            const bool last = index + 1 == options.images.size();
            if (static_cast<std::int64_t>(images.size()) < options.batch && !last) continue;
            try {
                caption_batch(captioner, options, names, images);
            } catch (const blip::Error& error) {
                blip_cli::print_error(kProgram, error.what());
                failures += static_cast<int>(images.size());
            }
            names.clear();
            images.clear();
        }
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& error) {
        blip_cli::print_error(kProgram, error.what());
        return 1;
    }
}
