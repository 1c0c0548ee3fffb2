// blip-match: scores how well texts describe an image with a BLIP ITM model file.
#include <blip/blip.hpp>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

const char* const kProgram = "blip-match";

const char* const kHelp = R"(Usage: blip-match -m MODEL.gguf [options] IMAGE TEXT...

Scores each text against IMAGE and prints "ITM<TAB>ITC<TAB>TEXT" per line:
  ITM  probability that the text matches the image (softmax of the ITM head, 0..1)
  ITC  cosine similarity of the image and text features (-1..1)
Images: JPEG, PNG, BMP, GIF (first frame), TGA, PNM, and still WebP in builds with libwebp.

Options:
  -m, --model FILE       itm model file written by blip-convert (required)
  --first-token enc|cls  first token of the ITM encoding: enc is [ENC], as Salesforce
                         trained the ITM head (default); cls is [CLS], which reproduces
                         transformers 4.30.2. ITC is the same either way.
  --threads N            threads for the model (default: one per core)
  --json                 print one JSON object per text instead: {"image", "text",
                         "itm_probability", "itm_logits", "itc_similarity"}
  -h, --help             print this help

A text that cannot be scored (longer than the model's text positions) is reported on
stderr and the others are still scored, with exit status 1. An image that cannot be read
exits with status 1; usage errors exit with status 2.
)";

struct Options {
    std::string model;
    std::string image;
    std::vector<std::string> texts;
    blip::MatchOptions match;
    int threads = 0;
    bool json = false;
};

Options parse(int argc, char** argv) {
    Options options;
    blip_cli::Arguments args(argc, argv);
    std::vector<std::string> positional;
    while (!args.done()) {
        const std::string arg = args.next();
        if (arg == "-h" || arg == "--help") {
            std::fputs(kHelp, stdout);
            std::exit(0);
        } else if (arg == "-m" || arg == "--model") {
            options.model = args.value(arg);
        } else if (arg == "--first-token") {
            const std::string value = args.value(arg);
            try {
                options.match.first_token = blip::parse_encoder_first_token(value, "option " + arg);
            } catch (const blip::Error& error) {
                throw blip_cli::UsageError(error.what());
            }
        } else if (arg == "--threads") {
            options.threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--json") {
            options.json = true;
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw blip_cli::UsageError("unknown option " + arg + " (see --help)");
        } else {
            positional.push_back(arg);
        }
    }
    if (options.model.empty()) throw blip_cli::UsageError("no model given: pass -m MODEL.gguf (see --help)");
    if (positional.empty()) throw blip_cli::UsageError("no image given (see --help)");
    if (positional.size() < 2) throw blip_cli::UsageError("no text given after the image (see --help)");
    options.image = positional[0];
    options.texts.assign(positional.begin() + 1, positional.end());
    return options;
}

void print_score(const Options& options, const std::string& text, const blip::MatchScore& score) {
    if (options.json) {
        const nlohmann::ordered_json record = {{"image", options.image},
                                               {"text", text},
                                               {"itm_probability", score.itm_probability},
                                               {"itm_logits", score.itm_logits},
                                               {"itc_similarity", score.itc_similarity}};
        std::printf("%s\n", record.dump().c_str());
    } else {
        std::printf("%.6f\t%.6f\t%s\n", score.itm_probability, score.itc_similarity, text.c_str());
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
        const blip::ImageTextMatcher matcher = blip::ImageTextMatcher::open(options.model);

        // Tokenize first, so that the valid texts are scored together.
        int failures = 0;
        std::vector<std::string> texts;
        std::vector<blip::TextTokens> tokens;
        for (const std::string& text : options.texts) {
            try {
                tokens.push_back(matcher.tokenize(text));
                texts.push_back(text);
            } catch (const blip::Error& error) {
                blip_cli::print_error(kProgram, error.what());
                ++failures;
            }
        }

        const blip::EncodedImage image = matcher.encode_image_file(options.image);
        if (!tokens.empty()) {
            const std::vector<blip::MatchScore> scores = matcher.match(image, tokens, options.match);
            for (std::size_t i = 0; i < scores.size(); ++i) print_score(options, texts[i], scores[i]);
        }
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& error) {
        blip_cli::print_error(kProgram, error.what());
        return 1;
    }
}
