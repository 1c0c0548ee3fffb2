// A run over a list input (JSON Lines, CSV, TSV), resumable chunk by chunk.
//
// Layout on disk for `-o OUT.jsonl` (work folder OUT.jsonl.work unless --work-dir):
//   OUT.jsonl.work/run.json              the job (input and model fingerprints, settings,
//                                        chunk size and shard), which a rerun must match
//   OUT.jsonl.work/lock                  held (flock) while a process works on the job
//   OUT.jsonl.work/chunk-NNNNNNNNN.json  counts of a finished chunk, written first
//   OUT.jsonl.work/chunk-NNNNNNNNN.jsonl its records, written last: its presence marks
//                                        the chunk as done
//   OUT.jsonl                            the chunks concatenated in input order, written
//                                        when every chunk of the shard is done
//   OUT.summary.json                     counts and throughput, "complete": true
// Every file is written to a temporary name and renamed, so a kill loses at most the
// chunks in flight. A chunk's bytes depend only on its records and the settings, so a
// redone chunk is identical to the lost one.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "capfilt.hpp"
#include "files.hpp"
#include "list_input.hpp"
#include "options.hpp"
#include "pipeline.hpp"
#include "progress.hpp"
#include "summary.hpp"

namespace capfilt {

// Exit status of a run that stopped early at --max-chunks.
constexpr int kExitIncomplete = 3;

// Logs the first failed records of a run one by one, then only that more follow.
class FailureLog {
public:
    void report(const std::string& message) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (++count_ <= kLogged) {
            log(message);
        } else if (count_ == kLogged + 1) {
            log("more records failed; the summary lists them");
        }
    }

private:
    static constexpr std::uint64_t kLogged = 20;
    std::mutex mutex_;
    std::uint64_t count_ = 0;
};

// JSON text of `json` on one line; invalid UTF-8 from CSV or tar inputs becomes U+FFFD.
inline std::string dump_json(const nlohmann::ordered_json& json, int indent = -1) {
    return json.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The summary file beside an output: OUT.jsonl -> OUT.summary.json.
inline fs::path default_summary_path(const fs::path& output) {
    fs::path path = output;
    path.replace_extension();
    return fs::path(path.string() + ".summary.json");
}

inline ListFormat list_format_of(const Options& options, const std::string& path) {
    std::string format = options.input_format;
    if (format.empty()) {
        std::string extension = fs::path(path).extension().string();
        for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (extension == ".jsonl" || extension == ".json" || extension == ".ndjson") {
            format = "jsonl";
        } else if (extension == ".csv") {
            format = "csv";
        } else if (extension == ".tsv" || extension == ".tab") {
            format = "tsv";
        } else {
            throw blip_cli::UsageError(path + ": cannot tell the input format from the extension \"" + extension +
                                       "\"; pass --input-format jsonl, csv, tsv or wds");
        }
    }
    if (format == "csv") return ListFormat::Csv;
    if (format == "tsv") return ListFormat::Tsv;
    return ListFormat::Jsonl;
}

inline std::string chunk_name(std::uint64_t chunk) {
    char name[32];
    std::snprintf(name, sizeof name, "chunk-%09llu", static_cast<unsigned long long>(chunk));
    return name;
}

// Describes the keys where two job descriptions differ, for the error of a mismatched rerun.
inline std::string json_differences(const nlohmann::ordered_json& stored, const nlohmann::ordered_json& current,
                                    const std::string& prefix = "") {
    std::string differences;
    if (stored.is_object() && current.is_object()) {
        for (auto& [key, value] : current.items()) {
            const std::string name = prefix.empty() ? key : prefix + "." + key;
            if (!stored.contains(key)) {
                differences += (differences.empty() ? "" : "; ") + name + " is new";
            } else {
                const std::string inner = json_differences(stored.at(key), value, name);
                if (!inner.empty()) differences += (differences.empty() ? "" : "; ") + inner;
            }
        }
        for (auto& [key, value] : stored.items())
            if (!current.contains(key)) differences += (differences.empty() ? "" : "; ") + (prefix.empty() ? key : prefix + "." + key) + " is gone";
        return differences;
    }
    if (stored != current) return prefix + " was " + stored.dump() + ", now " + current.dump();
    return "";
}

// The file that records the job of a work folder: created on the first run, compared on
// every later one. Throws blip::Error when it differs from `job`.
inline void check_or_write_job(const fs::path& path, const nlohmann::ordered_json& job, const std::string& what) {
    if (fs::exists(path)) {
        nlohmann::ordered_json stored;
        try {
            stored = nlohmann::ordered_json::parse(read_file(path));
        } catch (const nlohmann::json::exception& error) {
            throw Error(path.string() + ": invalid JSON (" + error.what() + "); delete " + what + " to start over");
        }
        if (stored != job)
            throw Error(what + " belongs to a run with other inputs or settings (" + json_differences(stored, job) +
                        "); rerun with the same options and files, or delete " + what + " to start over");
        return;
    }
    write_file_atomic(path, dump_json(job, 2) + "\n");
}

inline nlohmann::ordered_json model_json(const std::string& path) {
    return {{"file", fs::path(path).filename().string()}, {"fingerprint", file_fingerprint(path)}};
}

class ListRun {
public:
    ListRun(const Options& options, const CapfiltModels& models) : options_(options), models_(models) {}

    int run() {
        const std::string& input_path = options_.inputs.front();
        if (options_.inputs.size() != 1)
            throw blip_cli::UsageError("a list input is one file, but " + std::to_string(options_.inputs.size()) +
                                       " inputs were given");
        if (options_.output_format == "wds")
            throw blip_cli::UsageError("--output-format wds needs tar shards as input; a list input writes JSON Lines");
        output_ = options_.output;
        work_ = options_.work_dir.empty() ? fs::path(output_.string() + ".work") : fs::path(options_.work_dir);
        summary_path_ = options_.summary.empty() ? default_summary_path(output_) : fs::path(options_.summary);
        image_root_ = options_.image_root.empty() ? fs::absolute(input_path).parent_path() : fs::path(options_.image_root);
        if (fs::exists(output_) && fs::is_directory(output_))
            throw blip_cli::UsageError(output_.string() + " is a folder; a list input writes one JSON Lines file");

        input_ = std::make_unique<ListInput>(input_path, list_format_of(options_, input_path), options_.columns);
        input_->scan(options_.chunk_size);
        const std::uint64_t chunks = input_->chunk_count();
        first_chunk_ = options_.shard_index * chunks / options_.shard_count;
        end_chunk_ = (options_.shard_index + 1) * chunks / options_.shard_count;

        job_ = nlohmann::ordered_json::object();
        job_["tool"] = "blip-capfilt";
        job_["input"] = {{"file", fs::path(input_path).filename().string()},
                         {"fingerprint", file_fingerprint(input_path)},
                         {"format", list_format_name(input_->format())}};
        job_["captioner"] = model_json(options_.captioner);
        job_["filter"] = model_json(options_.filter);
        job_["settings"] = output_settings_json(options_);
        job_["chunk_size"] = options_.chunk_size;
        job_["shard"] = {options_.shard_index, options_.shard_count};

        if (fs::exists(output_) && !fs::exists(work_)) return check_finished_output();

        fs::create_directories(work_);
        FileLock lock(work_ / "lock", false);
        if (!lock.held())
            throw Error(work_.string() + " is in use by another blip-capfilt process (its lock file is held); "
                        "wait for it to finish or stop it");
        check_or_write_job(work_ / "run.json", job_, work_.string());
        remove_temporaries();

        std::vector<std::uint64_t> pending;
        std::uint64_t pending_records = 0;
        for (std::uint64_t chunk = first_chunk_; chunk < end_chunk_; ++chunk) {
            if (chunk_done(chunk)) continue;
            pending.push_back(chunk);
            pending_records += records_in(chunk);
        }
        const std::uint64_t done_before = (end_chunk_ - first_chunk_) - pending.size();
        log("input " + input_path + ": " + std::to_string(input_->record_count()) + " records in " +
            std::to_string(chunks) + " chunks of " + std::to_string(options_.chunk_size) + "; shard " +
            std::to_string(options_.shard_index) + "/" + std::to_string(options_.shard_count) + " has chunks " +
            std::to_string(first_chunk_) + ".." + std::to_string(end_chunk_) + " (end excluded), " +
            std::to_string(done_before) + " already done, " + std::to_string(pending.size()) + " to do");

        bool stopped_early = false;
        if (options_.max_chunks > 0 && pending.size() > options_.max_chunks) {
            pending.resize(static_cast<std::size_t>(options_.max_chunks));
            pending_records = 0;
            for (std::uint64_t chunk : pending) pending_records += records_in(chunk);
            stopped_early = true;
        }

        Progress progress(options_.progress, pending_records, options_.log_interval);
        progress.start();
        process(pending, progress);
        progress.stop();
        throughput_.records = progress.items_done();
        throughput_.seconds = progress.seconds();
        throughput_.threads = options_.inference_threads();

        if (stopped_early) {
            const Counts counts = total_counts();
            write_summary(counts, false);
            log("stopped after " + std::to_string(pending.size()) + " chunks (--max-chunks); rerun to continue");
            return kExitIncomplete;
        }
        return finish();
    }

private:
    struct Chunk {
        std::uint64_t number = 0;
        std::vector<ListEntry> entries;
    };

    std::uint64_t records_in(std::uint64_t chunk) const {
        const std::uint64_t first = chunk * options_.chunk_size;
        return std::min<std::uint64_t>(options_.chunk_size, input_->record_count() - first);
    }

    fs::path part_path(std::uint64_t chunk) const { return work_ / (chunk_name(chunk) + ".jsonl"); }
    fs::path counts_path(std::uint64_t chunk) const { return work_ / (chunk_name(chunk) + ".json"); }
    bool chunk_done(std::uint64_t chunk) const { return fs::exists(part_path(chunk)) && fs::exists(counts_path(chunk)); }

    void remove_temporaries() const {
        std::error_code error;
        for (const auto& entry : fs::directory_iterator(work_)) {
            const std::string name = entry.path().filename().string();
            if (name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos) fs::remove(entry.path(), error);
        }
    }

    ImageLocation locate(const std::string& image) const {
        ImageLocation location;
        location.name = image;
        const fs::path path(image);
        location.path = (path.is_absolute() ? path : image_root_ / path).string();
        return location;
    }

    void process(const std::vector<std::uint64_t>& pending, Progress& progress) {
        PipelineOptions pipeline_options;
        pipeline_options.inference_threads = options_.inference_threads();
        pipeline_options.decode_threads = options_.decoding_threads();
        pipeline_options.prefetch = options_.prefetch_images();
        Pipeline<Chunk> pipeline(models_, pipeline_options, progress);

        auto read_unit = [&](std::size_t index) {
            WorkUnit<Chunk> unit;
            unit.number = static_cast<std::size_t>(pending[index]);
            unit.payload.number = pending[index];
            unit.payload.entries = input_->read_chunk(pending[index]);
            for (const ListEntry& entry : unit.payload.entries) {
                WorkItem item;
                item.image = locate(entry.image);
                item.text = entry.text;
                item.seed = record_seed(options_.seed, entry.index);
                item.error = entry.error;
                if (item.error.empty() && is_url(entry.image))
                    item.error = entry.image + ": image URLs are not read; download the images first (for example "
                                               "with img2dataset) and list local paths";
                unit.items.push_back(std::move(item));
            }
            return unit;
        };
        auto done = [&](WorkUnit<Chunk>&& unit, std::vector<ImageResult>&& results) { write_chunk(unit.payload, results); };
        pipeline.run(pending.size(), read_unit, done);
    }

    static bool is_url(const std::string& image) {
        const std::size_t colon = image.find("://");
        return colon != std::string::npos && colon > 0 && image.find('/') > colon;
    }

    void write_chunk(const Chunk& chunk, const std::vector<ImageResult>& results) {
        Counts counts;
        std::string records;
        for (std::size_t i = 0; i < chunk.entries.size(); ++i) {
            const ListEntry& entry = chunk.entries[i];
            const ImageResult& result = results[i];
            if (!entry.error.empty()) {
                counts.add_malformed(input_->path(), entry.line, entry.error);
                failures_.report(input_->path() + ": malformed record at " + entry.error);
                continue;
            }
            counts.add_result(entry.id, entry.image, entry.text, result);
            if (!result.error.empty()) failures_.report("record " + entry.id + " failed: " + result.error);
            records += dump_json(record_json(entry.id, entry.image, entry.text, result, entry.meta));
            records += '\n';
        }
        nlohmann::ordered_json meta = counts.to_json();
        meta["chunk"] = chunk.number;
        write_file_atomic(counts_path(chunk.number), dump_json(meta, 1) + "\n");
        write_file_atomic(part_path(chunk.number), records);
    }

    Counts total_counts() const {
        Counts total;
        for (std::uint64_t chunk = first_chunk_; chunk < end_chunk_; ++chunk) {
            if (!chunk_done(chunk)) continue;
            const fs::path path = counts_path(chunk);
            nlohmann::ordered_json json;
            try {
                json = nlohmann::ordered_json::parse(read_file(path));
            } catch (const nlohmann::json::exception& error) {
                throw Error(path.string() + ": invalid JSON (" + error.what() + "); delete it and " +
                            part_path(chunk).string() + " to redo the chunk");
            }
            total.add(Counts::from_json(json, path.string()));
        }
        return total;
    }

    void write_summary(const Counts& counts, bool complete) const {
        nlohmann::ordered_json summary;
        summary["complete"] = complete;
        summary["output"] = output_.filename().string();
        summary["job"] = job_;
        const nlohmann::ordered_json counts_json = counts.to_json();
        for (const auto& [key, value] : counts_json.items()) summary[key] = value;
        summary["throughput"] = throughput_.to_json();
        write_file_atomic(summary_path_, dump_json(summary, 1) + "\n");
    }

    // Concatenates the chunks into the output, writes the summary and removes the work folder.
    int finish() {
        AtomicFile out(output_);
        for (std::uint64_t chunk = first_chunk_; chunk < end_chunk_; ++chunk) {
            if (!chunk_done(chunk))
                throw Error(part_path(chunk).string() + " is missing although the run finished; rerun to redo it");
            out.write(read_file(part_path(chunk)));
        }
        out.commit();
        const Counts counts = total_counts();
        write_summary(counts, true);
        if (!options_.keep_work) {
            std::error_code error;
            fs::remove_all(work_, error);
            if (error) log("cannot remove " + work_.string() + ": " + error.message() + " (delete it by hand)");
        }
        log("done: " + output_.string() + ": " + summary_line(counts));
        log("summary: " + summary_path_.string());
        return 0;
    }

    // The output exists and the work folder is gone: the job finished before, unless the
    // output belongs to another job.
    int check_finished_output() const {
        if (fs::exists(summary_path_)) {
            try {
                const auto summary = nlohmann::ordered_json::parse(read_file(summary_path_));
                if (summary.value("complete", false) && summary.contains("job") && summary.at("job") == job_) {
                    log(output_.string() + " is already complete; nothing to do");
                    return 0;
                }
            } catch (const nlohmann::json::exception&) {
            }
        }
        throw Error(output_.string() + " already exists and " + summary_path_.string() +
                    " does not describe a complete run of this job; delete the output or choose another -o");
    }

    const Options& options_;
    const CapfiltModels& models_;
    fs::path output_;
    fs::path work_;
    fs::path summary_path_;
    fs::path image_root_;
    std::unique_ptr<ListInput> input_;
    std::uint64_t first_chunk_ = 0;
    std::uint64_t end_chunk_ = 0;
    nlohmann::ordered_json job_;
    Throughput throughput_;
    FailureLog failures_;
};

}  // namespace capfilt
