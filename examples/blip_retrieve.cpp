// blip-retrieve: ranks images for a text query, or texts for an image query, with a BLIP
// ITM model file, as Salesforce's retrieval evaluation ranks them.
#include <blip/blip.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "task_cli.hpp"

namespace {

const char* const kProgram = "blip-retrieve";

// Clauses that end the errors about a list that is empty, is not UTF-8 text, or is a folder
// where a file is expected.
const char* const kImagesExpected = "--images expects a folder of images or a text file with one image path per line";
const char* const kTextsExpected = "--texts expects a text file with one text per line or a JSON list of strings";

const char* const kHelp = R"(Usage: blip-retrieve -m MODEL.gguf --images DIR|LIST --query TEXT... [options]
       blip-retrieve -m MODEL.gguf --texts FILE --image IMAGE... [options]

Text to image: ranks the images of DIR (its image files, sorted by name) or of LIST (one
path per line, relative to the list file's folder) for each --query.
Image to text: ranks the texts of FILE (one per line, or a JSON list of strings) for each
--image.

Every candidate is ranked by ITC similarity; the best --rerank of them are then re-ranked
by ITM match logit + ITC similarity, as Salesforce's evaluation ranks them; the others
follow by ITC similarity. Prints "QUERY<TAB>RANK<TAB>SCORE<TAB>ITM<TAB>ITC<TAB>RESULT" per
result, where ITM is the match probability ("-" for candidates not re-ranked) and SCORE
the ranking score (ITM match logit + ITC, or ITC alone when not re-ranked).
Images: JPEG, PNG, BMP, GIF (first frame), TGA, PNM, and still WebP in builds with libwebp.

Options:
  -m, --model FILE       itm model file written by blip-convert (required)
  --images DIR|LIST      images to search (text to image)
  --query TEXT           a text query; may be repeated
  --texts FILE           texts to search (image to text)
  --image IMAGE          an image query; may be repeated
  --top K                results printed per query (default 10; 0 prints all)
  --rerank K             best ITC candidates re-ranked by ITM (default 16; 0: ITC only)
  --first-token enc|cls  first token of the ITM encoding: enc is [ENC], as Salesforce
                         trained the ITM head (default); cls is [CLS], which reproduces
                         transformers 4.30.2
  --threads N            threads for the model (default: one per core)
  --json                 print one JSON object per query instead: {"query", "results":
                         [{"rank", "image" or "text", "score", "itc_similarity",
                         "itm_probability", "itm_logit"}, ...]}, the ITM fields only for
                         re-ranked results
  -h, --help             print this help

An image or text that cannot be read or encoded is reported on stderr and skipped; the
search still runs, and the exit status is 1. Usage errors exit with status 2.
)";

struct Options {
    std::string model;
    std::string images;                     // text to image: DIR or LIST
    std::vector<std::string> queries;       // text to image
    std::string texts;                      // image to text: FILE
    std::vector<std::string> image_queries; // image to text
    blip::RetrievalOptions retrieval;
    int threads = 0;
    bool json = false;

    bool text_to_image() const { return !images.empty(); }
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
        } else if (arg == "--images") {
            options.images = args.value(arg);
        } else if (arg == "--query") {
            options.queries.push_back(args.value(arg));
        } else if (arg == "--texts") {
            options.texts = args.value(arg);
        } else if (arg == "--image") {
            options.image_queries.push_back(args.value(arg));
        } else if (arg == "--top") {
            options.retrieval.top = static_cast<std::size_t>(args.integer(arg, 0, 1 << 30));
        } else if (arg == "--rerank") {
            options.retrieval.rerank = static_cast<std::size_t>(args.integer(arg, 0, 1 << 30));
        } else if (arg == "--first-token") {
            const std::string value = args.value(arg);
            try {
                options.retrieval.first_token = blip::parse_encoder_first_token(value, "option " + arg);
            } catch (const blip::Error& error) {
                throw blip_cli::UsageError(error.what());
            }
        } else if (arg == "--threads") {
            options.threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--json") {
            options.json = true;
        } else {
            throw blip_cli::UsageError("unexpected argument " + arg +
                                       " (queries need --query or --image; see --help)");
        }
    }
    if (options.model.empty()) throw blip_cli::UsageError("no model given: pass -m MODEL.gguf (see --help)");
    const bool text_to_image = !options.images.empty() || !options.queries.empty();
    const bool image_to_text = !options.texts.empty() || !options.image_queries.empty();
    if (text_to_image && image_to_text)
        throw blip_cli::UsageError("choose one direction: --images with --query, or --texts with --image");
    if (!text_to_image && !image_to_text)
        throw blip_cli::UsageError("nothing to search: pass --images with --query, or --texts with --image");
    if (text_to_image && options.images.empty()) throw blip_cli::UsageError("--query needs --images DIR|LIST");
    if (text_to_image && options.queries.empty()) throw blip_cli::UsageError("--images needs at least one --query");
    if (image_to_text && options.texts.empty()) throw blip_cli::UsageError("--image needs --texts FILE");
    if (image_to_text && options.image_queries.empty()) throw blip_cli::UsageError("--texts needs at least one --image");
    return options;
}

void print_hits(const Options& options, const std::string& query, const std::vector<blip::RetrievalHit>& hits,
                const std::vector<std::string>& names) {
    const char* const kind = options.text_to_image() ? "image" : "text";
    if (options.json) {
        nlohmann::ordered_json results = nlohmann::ordered_json::array();
        for (std::size_t rank = 0; rank < hits.size(); ++rank) {
            const blip::RetrievalHit& hit = hits[rank];
            nlohmann::ordered_json result = {{"rank", rank + 1},
                                             {kind, names[hit.index]},
                                             {"score", hit.score},
                                             {"itc_similarity", hit.itc_similarity}};
            if (hit.reranked) {
                result["itm_probability"] = hit.itm_probability;
                result["itm_logit"] = hit.itm_logit;
            }
            results.push_back(std::move(result));
        }
        const nlohmann::ordered_json record = {{"query", query}, {"results", results}};
        std::printf("%s\n", record.dump().c_str());
    } else {
        for (std::size_t rank = 0; rank < hits.size(); ++rank) {
            const blip::RetrievalHit& hit = hits[rank];
            char itm[32] = "-";
            if (hit.reranked) std::snprintf(itm, sizeof itm, "%.6f", hit.itm_probability);
            std::printf("%s\t%zu\t%.6f\t%s\t%.6f\t%s\n", query.c_str(), rank + 1, hit.score, itm, hit.itc_similarity,
                        names[hit.index].c_str());
        }
    }
    std::fflush(stdout);
}

// Text to image. Returns the number of failures.
int search_images(const Options& options, blip::Retriever& retriever) {
    int failures = 0;
    const std::vector<std::string> paths = blip_cli::list_images(options.images, kImagesExpected);
    if (paths.empty()) {
        std::error_code error;
        const bool folder = std::filesystem::is_directory(options.images, error);
        throw blip::Error(options.images + (folder ? " contains no image files" : " lists no image paths") + ", but " +
                          kImagesExpected);
    }
    std::vector<std::string> names;
    for (const std::string& path : paths) {
        try {
            retriever.add_image_file(path);
            names.push_back(path);
        } catch (const blip::Error& error) {
            blip_cli::print_error(kProgram, error.what());
            ++failures;
        }
    }
    if (names.empty()) throw blip::Error(options.images + ": no image could be read");

    for (const std::string& query : options.queries) {
        try {
            print_hits(options, query, retriever.search_images(query, options.retrieval), names);
        } catch (const blip::Error& error) {
            blip_cli::print_error(kProgram, "query \"" + query + "\": " + error.what());
            ++failures;
        }
    }
    return failures;
}

// Image to text. Returns the number of failures.
int search_texts(const Options& options, blip::Retriever& retriever) {
    int failures = 0;
    std::vector<std::string> names;
    for (const std::string& text : blip_cli::read_string_list(options.texts, kTextsExpected)) {
        try {
            retriever.matcher().tokenize(text);
            names.push_back(text);
        } catch (const blip::Error& error) {
            blip_cli::print_error(kProgram, options.texts + ": " + error.what());
            ++failures;
        }
    }
    if (names.empty()) throw blip::Error(options.texts + ": the file lists no usable text");
    retriever.add_texts(names);

    for (const std::string& image : options.image_queries) {
        try {
            print_hits(options, image, retriever.search_texts(blip::decode_image_file(image), options.retrieval), names);
        } catch (const blip::Error& error) {
            blip_cli::print_error(kProgram, error.what());
            ++failures;
        }
    }
    return failures;
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
        blip::Retriever retriever = blip::Retriever::open(options.model);
        const int failures = options.text_to_image() ? search_images(options, retriever) : search_texts(options, retriever);
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& error) {
        blip_cli::print_error(kProgram, error.what());
        return 1;
    }
}
