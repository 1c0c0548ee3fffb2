// blip-vqa: answers questions about an image with a BLIP VQA model file, by generating
// answers or by ranking a list of candidate answers.
#include <blip/blip.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "task_cli.hpp"

namespace {

const char* const kProgram = "blip-vqa";

const char* const kHelp = R"(Usage: blip-vqa -m MODEL.gguf [options] IMAGE QUESTION...

Answers each question about IMAGE and prints "QUESTION<TAB>answer" per line. With
--answers, ranks the candidate answers of FILE instead, as Salesforce's VQA evaluation
does, and prints "QUESTION<TAB>answer<TAB>score" for the best --top answers.
Images: JPEG, PNG, BMP, GIF (first frame), TGA, PNM, and still WebP in builds with libwebp.

Options:
  -m, --model FILE       vqa model file written by blip-convert (required)
  --answers FILE         candidate answers, one per line or a JSON list of strings
  --top N                ranked answers printed per question (default 5)
  --k N                  candidates kept by the probability of their first token before
                         whole answers are scored (default 128, as Salesforce)
  --label-smoothing X    score answers by the label-smoothed log-likelihood; 0.1 gives
                         the scores of Salesforce's rank_answer (default 0)
  --max-length N         maximum tokens per generated answer, counting [DEC]
                         (default 10, as Salesforce; transformers uses 20)
  --min-length N         [SEP] may not end an answer shorter than N tokens (default 0)
  --beams N              beam search with N beams (default 1: greedy search);
                         Salesforce's blip_vqa.py generates with 3
  --first-token enc|cls  first token of the question encoding: enc is [ENC], as
                         Salesforce trained the model (default); cls is [CLS], which
                         reproduces transformers 4.30.2
  --threads N            threads for the model (default: one per core)
  --json                 print one JSON object per question instead:
                         {"image", "question", "answer", "ids"}, or with --answers
                         {"image", "question", "answers": [{"answer", "score",
                         "first_token_probability"}, ...]}
  -h, --help             print this help

The score of a ranked answer is the sum of the log-probabilities of its tokens and final
[SEP] under the answer decoder. A question that fails is reported on stderr and the others
are still answered, with exit status 1. An image or answer file that cannot be read exits
with status 1; usage errors exit with status 2.
)";

struct Options {
    std::string model;
    std::string image;
    std::vector<std::string> questions;
    std::string answers_file;
    std::size_t top = 5;
    blip::VqaOptions generate;
    blip::VqaRankOptions rank;
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
        } else if (arg == "--answers") {
            options.answers_file = args.value(arg);
        } else if (arg == "--top") {
            options.top = static_cast<std::size_t>(args.integer(arg, 1, 1 << 30));
        } else if (arg == "--k") {
            options.rank.ranking.k = args.integer(arg, 1, 1 << 30);
        } else if (arg == "--label-smoothing") {
            options.rank.ranking.label_smoothing = args.real(arg, 0.0, 1.0);
        } else if (arg == "--max-length") {
            options.generate.generation.max_length = args.integer(arg, 1, 1 << 20);
        } else if (arg == "--min-length") {
            options.generate.generation.min_length = args.integer(arg, 0, 1 << 20);
        } else if (arg == "--beams") {
            options.generate.generation.num_beams = args.integer(arg, 1, 1024);
        } else if (arg == "--first-token") {
            const std::string value = args.value(arg);
            try {
                options.generate.first_token = blip::parse_encoder_first_token(value, "option " + arg);
            } catch (const blip::Error& error) {
                throw blip_cli::UsageError(error.what());
            }
            options.rank.first_token = options.generate.first_token;
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
    if (positional.size() < 2) throw blip_cli::UsageError("no question given after the image (see --help)");
    options.image = positional[0];
    options.questions.assign(positional.begin() + 1, positional.end());
    return options;
}

void print_answer(const Options& options, const std::string& question, const blip::VqaAnswer& answer) {
    if (options.json) {
        const nlohmann::ordered_json record = {
            {"image", options.image}, {"question", question}, {"answer", answer.text}, {"ids", answer.ids}};
        std::printf("%s\n", record.dump().c_str());
    } else {
        std::printf("%s\t%s\n", question.c_str(), answer.text.c_str());
    }
    std::fflush(stdout);
}

void print_ranking(const Options& options, const std::string& question, const std::vector<blip::RankedAnswer>& ranked) {
    const std::size_t count = std::min(options.top, ranked.size());
    if (options.json) {
        nlohmann::ordered_json answers = nlohmann::ordered_json::array();
        for (std::size_t i = 0; i < count; ++i)
            answers.push_back({{"answer", ranked[i].text},
                               {"score", ranked[i].score},
                               {"first_token_probability", ranked[i].first_token_probability}});
        const nlohmann::ordered_json record = {{"image", options.image}, {"question", question}, {"answers", answers}};
        std::printf("%s\n", record.dump().c_str());
    } else {
        for (std::size_t i = 0; i < count; ++i)
            std::printf("%s\t%s\t%.6f\n", question.c_str(), ranked[i].text.c_str(), ranked[i].score);
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
        const blip::QuestionAnswerer answerer = blip::QuestionAnswerer::open(options.model);
        blip::AnswerList answers;
        if (options.answers_file.empty()) {
            // Ranking generates nothing, so only generated answers need the generation settings.
            answerer.check_options(options.generate);
        } else {
            answers = answerer.prepare_answers(blip_cli::read_string_list(options.answers_file));
            if (answers.texts.empty()) throw blip::Error(options.answers_file + ": the file lists no answers");
        }
        const std::vector<float> image_embeds = answerer.encode_image(blip::decode_image_file(options.image));

        int failures = 0;
        for (const std::string& question : options.questions) {
            try {
                if (options.answers_file.empty())
                    print_answer(options, question, answerer.answer_embeds(image_embeds, question, options.generate));
                else
                    print_ranking(options, question, answerer.rank_embeds(image_embeds, question, answers, options.rank));
            } catch (const blip::Error& error) {
                blip_cli::print_error(kProgram, "question \"" + question + "\": " + error.what());
                ++failures;
            }
        }
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& error) {
        blip_cli::print_error(kProgram, error.what());
        return 1;
    }
}
