// Command line of blip-capfilt and the settings it selects.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../cli.hpp"
#include "capfilt.hpp"
#include "list_input.hpp"
#include "progress.hpp"

namespace capfilt {

inline const char* const kHelp = R"(Usage: blip-capfilt -c CAPTIONER.gguf -f FILTER.gguf -o OUTPUT [options] INPUT...
       blip-capfilt merge -o MERGED.jsonl PART.jsonl...

Cleans image-text pairs with BLIP's CapFilt: the captioner writes synthetic captions for
each image, the filter's image-text matching (ITM) head scores the web text and every
synthetic caption, and texts whose match probability reaches the threshold are kept. Every
text is recorded with its source (web or synthetic) and scores, kept or dropped.

Inputs:
  a list file      JSON Lines ({"image": "photos/0001.jpg", "text": "..."} per line) or
                   CSV/TSV with a header row; the format follows the extension (.jsonl,
                   .json, .csv, .tsv) unless --input-format says otherwise. One list file.
  tar shards       WebDataset shards (KEY.jpg + KEY.txt and/or KEY.json), as files or
                   folders of .tar files. One output shard per input shard.

Outputs:
  list input       OUTPUT is a JSON Lines file with one record per pair in input order:
                   {"id", "image", "text", "kept": [...], "dropped": [...], "error"?,
                   "meta"?}; each kept or dropped text is {"text", "source",
                   "itm_probability", "itc_similarity"}. A summary goes to
                   OUTPUT without its extension + ".summary.json".
  tar input        OUTPUT is a folder. With --output-format wds (the default) each input
                   shard gets a shard of the same name with the same members, KEY.txt
                   replaced by the kept texts (one per line) and the record added to
                   KEY.json as "capfilt"; with --output-format jsonl, SHARD.jsonl. The
                   summary is OUTPUT/summary.json.

Models:
  -c, --captioner FILE     caption model file written by blip-convert (required)
  -f, --filter FILE        itm model file written by blip-convert (required)

Captioning (defaults as BLIP's captioner samples):
  --decoding MODE          sample (nucleus sampling, default), beam or greedy
  --num-captions N         synthetic captions per image (default 1; greedy allows 1,
                           beam at most --num-beams)
  --top-p P                nucleus sampling keeps tokens up to this probability mass (0.9)
  --top-k K                sampling keeps at most K tokens; 0 keeps all (50)
  --temperature T          divides the logits before sampling (1.0)
  --num-beams N            beams of beam search (3)
  --repetition-penalty R   penalty on tokens already in the caption (1.1 for sampling,
                           1.0 otherwise, as BLIP's captioner uses)
  --max-length N           maximum tokens of a caption, [DEC] and prompt included (30)
  --min-length N           minimum tokens before the caption may end (10)
  --prompt TEXT            text the caption continues; not part of the output ("a picture of ")
  --seed S                 seed of sampling (default 0); each record's stream is derived
                           from S and the record's position, so results do not depend on
                           threads, batches or shards

Filtering:
  --threshold P            keep a text when its ITM match probability is at least P (0.5)
  --first-token enc|cls    first token of the ITM encoding: enc as Salesforce trained the
                           head (default), cls to reproduce transformers 4.30.2
  --max-text-tokens N      texts are cut to N tokens, [CLS] and [SEP] included, before
                           scoring (35, as BLIP's filter); capped by the model's positions

Input:
  --input-format F         jsonl, csv, tsv or wds (default: from the extension)
  --output-format F        jsonl or wds (default: jsonl for lists, wds for tar shards)
  --image-column NAME      field or column of the image path (default image)
  --text-column NAME       field or column of the web text (default text); "" for none.
                           For tar shards: the KEY.json field read when KEY.txt is absent
                           ("caption" is tried next)
  --id-column NAME         field or column of the record id (default id; the record's
                           number when absent)
  --image-root DIR         folder that relative image paths start from (default: the list
                           file's folder)

Scale-out and resuming:
  --shard I/N              process only part I of N (0 <= I < N): contiguous chunks of a
                           list input, contiguous files of a tar shard list. Concatenating
                           the outputs of parts 0..N-1 gives the output of a single run.
  --chunk-size N           records per chunk of a list input (default 256); a chunk is
                           the unit that is written atomically and never redone
  --work-dir DIR           folder for the chunks of a list input (default OUTPUT.work)
  --summary FILE           where the summary goes (defaults above)
  --max-chunks N           stop after N chunks or shards (exit status 3; rerun to go on)
  --keep-work              keep the chunk folder after the output is complete

Threads and progress:
  --threads N              inference threads, one image each (default: one per core)
  --decode-threads N       image reading and decoding threads (default: threads / 4, at
                           least 1)
  --prefetch N             decoded images waiting for inference (default 2 x threads)
  --progress MODE          bar, log, none or auto (default: bar on a terminal, else log)
  --log-interval SECONDS   seconds between progress log lines (default 30)
  -h, --help               print this help

Rerunning the same command after a crash or kill continues where it stopped: completed
chunks and shards are kept and never redone, and no record is lost or written twice.
Images that cannot be read or decoded and malformed records are reported in the output
and the summary, and the run continues. Exit status: 0 done, 1 error, 2 usage error,
3 stopped by --max-chunks.
)";

enum class Decoding { Sample, Beam, Greedy };

struct Options {
    std::string captioner;
    std::string filter;
    std::vector<std::string> inputs;
    std::string output;
    std::string input_format;   // empty: from the extension
    std::string output_format;  // empty: from the input
    ListColumns columns;
    std::string image_root;

    Decoding decoding = Decoding::Sample;
    std::int64_t num_captions = 1;
    std::int64_t num_beams = 3;
    double top_p = 0.9;
    std::int64_t top_k = 50;
    double temperature = 1.0;
    double repetition_penalty = -1;  // below 0: the decoding mode's default
    std::int64_t max_length = 30;
    std::int64_t min_length = 10;
    std::string prompt = "a picture of ";
    std::uint64_t seed = 0;
    double threshold = 0.5;
    blip::EncoderFirstToken first_token = blip::EncoderFirstToken::Enc;
    std::int64_t max_text_tokens = 35;

    std::uint64_t shard_index = 0;
    std::uint64_t shard_count = 1;
    std::uint64_t chunk_size = 256;
    std::string work_dir;
    std::string summary;
    std::uint64_t max_chunks = 0;  // 0: no limit
    bool keep_work = false;

    int threads = 0;
    int decode_threads = 0;
    std::size_t prefetch = 0;
    ProgressMode progress = ProgressMode::Auto;
    double log_interval = 30;

    // Settings of captioning and filtering that the models see.
    CapfiltSettings settings() const {
        CapfiltSettings settings;
        blip::GenerationConfig& generation = settings.generation;
        generation.max_length = max_length;
        generation.min_length = min_length;
        generation.num_return_sequences = num_captions;
        if (decoding == Decoding::Sample) {
            generation.do_sample = true;
            generation.top_p = top_p;
            generation.top_k = top_k;
            generation.temperature = temperature;
            generation.repetition_penalty = repetition_penalty < 0 ? 1.1 : repetition_penalty;
        } else {
            generation.do_sample = false;
            generation.num_beams = decoding == Decoding::Beam ? num_beams : 1;
            generation.repetition_penalty = repetition_penalty < 0 ? 1.0 : repetition_penalty;
        }
        settings.prompt = prompt;
        settings.threshold = threshold;
        settings.match.first_token = first_token;
        settings.max_text_tokens = max_text_tokens;
        return settings;
    }

    int inference_threads() const {
        if (threads > 0) return threads;
        return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    }
    int decoding_threads() const { return decode_threads > 0 ? decode_threads : std::max(1, inference_threads() / 4); }
    std::size_t prefetch_images() const {
        return prefetch > 0 ? prefetch : static_cast<std::size_t>(2 * inference_threads());
    }
};

inline const char* decoding_name(Decoding decoding) {
    switch (decoding) {
        case Decoding::Sample: return "sample";
        case Decoding::Beam: return "beam";
        case Decoding::Greedy: return "greedy";
    }
    return "sample";
}

// Every setting that changes the output records, for the check that a resumed run continues
// the same job. Thread counts, progress and file locations are not part of it.
inline nlohmann::ordered_json output_settings_json(const Options& options) {
    const CapfiltSettings settings = options.settings();
    const blip::GenerationConfig& generation = settings.generation;
    nlohmann::ordered_json json;
    json["decoding"] = decoding_name(options.decoding);
    json["num_captions"] = generation.num_return_sequences;
    json["num_beams"] = generation.num_beams;
    json["top_p"] = generation.top_p;
    json["top_k"] = generation.top_k;
    json["temperature"] = generation.temperature;
    json["repetition_penalty"] = generation.repetition_penalty;
    json["max_length"] = generation.max_length;
    json["min_length"] = generation.min_length;
    json["prompt"] = settings.prompt;
    json["seed"] = options.seed;
    json["threshold"] = settings.threshold;
    json["first_token"] = settings.match.first_token == blip::EncoderFirstToken::Enc ? "enc" : "cls";
    json["max_text_tokens"] = settings.max_text_tokens;
    json["image_column"] = options.columns.image;
    json["text_column"] = options.columns.text;
    json["id_column"] = options.columns.id;
    return json;
}

inline std::uint64_t parse_unsigned(const std::string& text, const std::string& what) {
    if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
        throw blip_cli::UsageError(what + ": \"" + text + "\" is not a non-negative integer");
    return std::stoull(text);
}

inline Options parse_options(int argc, char** argv) {
    Options options;
    blip_cli::Arguments args(argc, argv);
    bool repetition_penalty_set = false;
    while (!args.done()) {
        const std::string arg = args.next();
        if (arg == "-h" || arg == "--help") {
            std::fputs(kHelp, stdout);
            std::exit(0);
        } else if (arg == "-c" || arg == "--captioner") {
            options.captioner = args.value(arg);
        } else if (arg == "-f" || arg == "--filter") {
            options.filter = args.value(arg);
        } else if (arg == "-o" || arg == "--output") {
            options.output = args.value(arg);
        } else if (arg == "--input-format") {
            options.input_format = args.value(arg);
            if (options.input_format != "jsonl" && options.input_format != "csv" && options.input_format != "tsv" &&
                options.input_format != "wds")
                throw blip_cli::UsageError("option --input-format: \"" + options.input_format +
                                           "\" is not jsonl, csv, tsv or wds");
        } else if (arg == "--output-format") {
            options.output_format = args.value(arg);
            if (options.output_format != "jsonl" && options.output_format != "wds")
                throw blip_cli::UsageError("option --output-format: \"" + options.output_format + "\" is not jsonl or wds");
        } else if (arg == "--image-column") {
            options.columns.image = args.value(arg);
            if (options.columns.image.empty()) throw blip_cli::UsageError("option --image-column: the name is empty");
        } else if (arg == "--text-column") {
            options.columns.text = args.value(arg);
        } else if (arg == "--id-column") {
            options.columns.id = args.value(arg);
        } else if (arg == "--image-root") {
            options.image_root = args.value(arg);
        } else if (arg == "--decoding") {
            const std::string value = args.value(arg);
            if (value == "sample") {
                options.decoding = Decoding::Sample;
            } else if (value == "beam") {
                options.decoding = Decoding::Beam;
            } else if (value == "greedy") {
                options.decoding = Decoding::Greedy;
            } else {
                throw blip_cli::UsageError("option --decoding: \"" + value + "\" is not sample, beam or greedy");
            }
        } else if (arg == "--num-captions") {
            options.num_captions = args.integer(arg, 1, 64);
        } else if (arg == "--num-beams") {
            options.num_beams = args.integer(arg, 1, 64);
        } else if (arg == "--top-p") {
            options.top_p = args.real(arg, 0, 1);
        } else if (arg == "--top-k") {
            options.top_k = args.integer(arg, 0, 1 << 20);
        } else if (arg == "--temperature") {
            options.temperature = args.real(arg, 1e-6, 1e6);
        } else if (arg == "--repetition-penalty") {
            options.repetition_penalty = args.real(arg, 1e-6, 1e6);
            repetition_penalty_set = true;
        } else if (arg == "--max-length") {
            options.max_length = args.integer(arg, 1, 512);
        } else if (arg == "--min-length") {
            options.min_length = args.integer(arg, 0, 512);
        } else if (arg == "--prompt") {
            options.prompt = args.value(arg);
        } else if (arg == "--seed") {
            options.seed = parse_unsigned(args.value(arg), "option --seed");
        } else if (arg == "--threshold") {
            options.threshold = args.real(arg, 0, 1);
        } else if (arg == "--first-token") {
            const std::string value = args.value(arg);
            try {
                options.first_token = blip::parse_encoder_first_token(value, "option " + arg);
            } catch (const blip::Error& error) {
                throw blip_cli::UsageError(error.what());
            }
        } else if (arg == "--max-text-tokens") {
            options.max_text_tokens = args.integer(arg, 3, 4096);
        } else if (arg == "--shard") {
            const std::string value = args.value(arg);
            const std::size_t slash = value.find('/');
            if (slash == std::string::npos)
                throw blip_cli::UsageError("option --shard: \"" + value + "\" is not I/N (for example 3/16)");
            options.shard_index = parse_unsigned(value.substr(0, slash), "option --shard index");
            options.shard_count = parse_unsigned(value.substr(slash + 1), "option --shard count");
            if (options.shard_count < 1 || options.shard_index >= options.shard_count)
                throw blip_cli::UsageError("option --shard: \"" + value + "\" needs N >= 1 and 0 <= I < N");
        } else if (arg == "--chunk-size") {
            options.chunk_size = static_cast<std::uint64_t>(args.integer(arg, 1, 1 << 24));
        } else if (arg == "--work-dir") {
            options.work_dir = args.value(arg);
        } else if (arg == "--summary") {
            options.summary = args.value(arg);
        } else if (arg == "--max-chunks") {
            options.max_chunks = static_cast<std::uint64_t>(args.integer(arg, 1, std::int64_t{1} << 40));
        } else if (arg == "--keep-work") {
            options.keep_work = true;
        } else if (arg == "--threads") {
            options.threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--decode-threads") {
            options.decode_threads = static_cast<int>(args.integer(arg, 1, 4096));
        } else if (arg == "--prefetch") {
            options.prefetch = static_cast<std::size_t>(args.integer(arg, 1, 1 << 20));
        } else if (arg == "--progress") {
            const std::string value = args.value(arg);
            if (value == "auto") {
                options.progress = ProgressMode::Auto;
            } else if (value == "bar") {
                options.progress = ProgressMode::Bar;
            } else if (value == "log") {
                options.progress = ProgressMode::Log;
            } else if (value == "none") {
                options.progress = ProgressMode::None;
            } else {
                throw blip_cli::UsageError("option --progress: \"" + value + "\" is not bar, log, none or auto");
            }
        } else if (arg == "--log-interval") {
            options.log_interval = args.real(arg, 0.01, 86400);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw blip_cli::UsageError("unknown option " + arg + " (see --help)");
        } else {
            options.inputs.push_back(arg);
        }
    }

    if (options.captioner.empty()) throw blip_cli::UsageError("no captioner given: pass -c CAPTIONER.gguf (see --help)");
    if (options.filter.empty()) throw blip_cli::UsageError("no filter given: pass -f FILTER.gguf (see --help)");
    if (options.output.empty()) throw blip_cli::UsageError("no output given: pass -o OUTPUT (see --help)");
    if (options.inputs.empty()) throw blip_cli::UsageError("no input given (see --help)");
    if (options.decoding == Decoding::Greedy && options.num_captions > 1)
        throw blip_cli::UsageError("--decoding greedy writes one caption per image; use sample or beam for --num-captions " +
                                   std::to_string(options.num_captions));
    if (options.decoding == Decoding::Beam && options.num_captions > options.num_beams)
        throw blip_cli::UsageError("--num-captions " + std::to_string(options.num_captions) + " exceeds --num-beams " +
                                   std::to_string(options.num_beams));
    if (repetition_penalty_set && options.repetition_penalty <= 0)
        throw blip_cli::UsageError("--repetition-penalty must be above 0");
    return options;
}

}  // namespace capfilt
