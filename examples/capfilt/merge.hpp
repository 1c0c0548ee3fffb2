// `blip-capfilt merge`: joins the JSON Lines outputs of the parts of a sharded run (--shard
// 0/N .. N-1/N) into the output a single run writes, and sums their summaries. It checks
// that every part is complete, that all parts ran the same job, and that they are given in
// order 0..N-1, each exactly once.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../cli.hpp"
#include "files.hpp"
#include "progress.hpp"
#include "run_list.hpp"
#include "summary.hpp"

namespace capfilt {

inline const char* const kMergeHelp = R"(Usage: blip-capfilt merge -o MERGED.jsonl PART.jsonl...

Concatenates the JSON Lines outputs of a run split with --shard I/N, given in order
0..N-1, into MERGED.jsonl, and writes MERGED.summary.json with the summed counts. Each
part needs its complete summary (PART.summary.json) beside it.

Options:
  -o, --output FILE   merged JSON Lines file (required)
  -h, --help          print this help
)";

struct MergeOptions {
    std::string output;
    std::vector<std::string> parts;
};

inline MergeOptions parse_merge_options(int argc, char** argv) {
    MergeOptions options;
    blip_cli::Arguments args(argc - 1, argv + 1);  // skips "merge"
    while (!args.done()) {
        const std::string arg = args.next();
        if (arg == "-h" || arg == "--help") {
            std::fputs(kMergeHelp, stdout);
            std::exit(0);
        } else if (arg == "-o" || arg == "--output") {
            options.output = args.value(arg);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw blip_cli::UsageError("unknown option " + arg + " for merge (see merge --help)");
        } else {
            options.parts.push_back(arg);
        }
    }
    if (options.output.empty()) throw blip_cli::UsageError("merge: no output given: pass -o MERGED.jsonl");
    if (options.parts.empty()) throw blip_cli::UsageError("merge: no parts given");
    return options;
}

inline int run_merge(const MergeOptions& options) {
    Counts total;
    nlohmann::ordered_json job;
    std::uint64_t expected_count = options.parts.size();
    for (std::size_t i = 0; i < options.parts.size(); ++i) {
        const fs::path part = options.parts[i];
        const fs::path summary_path = default_summary_path(part);
        if (!fs::exists(part)) throw Error("merge: part " + part.string() + " does not exist");
        if (!fs::exists(summary_path))
            throw Error("merge: " + summary_path.string() + " does not exist; is " + part.string() + " a blip-capfilt output?");
        nlohmann::ordered_json summary;
        try {
            summary = nlohmann::ordered_json::parse(read_file(summary_path));
        } catch (const nlohmann::json::exception& error) {
            throw Error("merge: " + summary_path.string() + ": invalid JSON (" + error.what() + ")");
        }
        if (!summary.value("complete", false))
            throw Error("merge: " + part.string() + " is incomplete; rerun its command to finish it");
        nlohmann::ordered_json part_job = summary.at("job");
        const auto shard = part_job.at("shard").get<std::vector<std::uint64_t>>();
        if (shard.size() != 2) throw Error("merge: " + summary_path.string() + ": job.shard is not [I, N]");
        if (shard[1] != expected_count || shard[0] != i)
            throw Error("merge: " + part.string() + " is part " + std::to_string(shard[0]) + "/" +
                        std::to_string(shard[1]) + ", expected " + std::to_string(i) + "/" +
                        std::to_string(expected_count) + " (give all parts of one run, in order)");
        part_job.erase("shard");
        if (i == 0) {
            job = part_job;
        } else if (part_job != job) {
            throw Error("merge: " + part.string() + " comes from another job than " + options.parts[0] + " (" +
                        json_differences(job, part_job) + ")");
        }
        total.add(Counts::from_json(summary, summary_path.string()));
    }

    AtomicFile out(options.output);
    for (const std::string& part : options.parts) out.write(read_file(part));
    out.commit();

    nlohmann::ordered_json merged;
    merged["complete"] = true;
    merged["output"] = fs::path(options.output).filename().string();
    merged["job"] = job;
    merged["parts"] = options.parts;
    const nlohmann::ordered_json counts_json = total.to_json();
    for (const auto& [key, value] : counts_json.items()) merged[key] = value;
    const fs::path summary_path = default_summary_path(options.output);
    write_file_atomic(summary_path, dump_json(merged, 1) + "\n");
    log("merged " + std::to_string(options.parts.size()) + " parts into " + options.output + ": " + summary_line(total));
    return 0;
}

}  // namespace capfilt
