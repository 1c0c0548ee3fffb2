// A run over WebDataset tar shards, resumable shard by shard.
//
// Layout on disk for `-o OUT` (a folder):
//   OUT/.capfilt/run.json          the job: model fingerprints and settings
//   OUT/.capfilt/SHARD.tar.json    counts of a finished shard and its input's fingerprint,
//                                  written first
//   OUT/.capfilt/SHARD.tar.lock    held (flock) while a process works on the shard
//   OUT/SHARD.tar (or SHARD.jsonl) the output shard, written last: with its counts file it
//                                  marks the shard as done
//   OUT/summary.json               counts over every finished shard in OUT
// Several processes may work on one output folder at once: each shard is locked while it
// is processed, and a shard that another process finished is skipped.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "capfilt.hpp"
#include "files.hpp"
#include "options.hpp"
#include "pipeline.hpp"
#include "progress.hpp"
#include "run_list.hpp"
#include "summary.hpp"
#include "tar.hpp"
#include "wds_input.hpp"

namespace capfilt {

// Expands the inputs into tar files: files as given, folders as their .tar files by name.
inline std::vector<fs::path> expand_tar_inputs(const std::vector<std::string>& inputs) {
    std::vector<fs::path> shards;
    for (const std::string& input : inputs) {
        if (fs::is_directory(input)) {
            std::vector<fs::path> found;
            for (const auto& entry : fs::directory_iterator(input))
                if (entry.is_regular_file() && entry.path().extension() == ".tar") found.push_back(entry.path());
            std::sort(found.begin(), found.end());
            if (found.empty()) log("warning: folder " + input + " holds no .tar files");
            shards.insert(shards.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(input)) {
            shards.emplace_back(input);
        } else {
            throw blip_cli::UsageError("input " + input + " is neither a file nor a folder (not found?)");
        }
    }
    std::set<std::string> names;
    for (const fs::path& shard : shards)
        if (!names.insert(shard.filename().string()).second)
            throw blip_cli::UsageError("two input shards are named " + shard.filename().string() +
                                       "; output shards take their input's name, so names must differ");
    return shards;
}

class WdsRun {
public:
    WdsRun(const Options& options, const CapfiltModels& models) : options_(options), models_(models) {}

    int run() {
        jsonl_output_ = options_.output_format == "jsonl";
        output_ = options_.output;
        state_ = output_ / ".capfilt";
        summary_path_ = options_.summary.empty() ? output_ / "summary.json" : fs::path(options_.summary);
        const std::vector<fs::path> all = expand_tar_inputs(options_.inputs);
        const std::size_t first = static_cast<std::size_t>(options_.shard_index * all.size() / options_.shard_count);
        const std::size_t end = static_cast<std::size_t>((options_.shard_index + 1) * all.size() / options_.shard_count);
        selected_.assign(all.begin() + static_cast<std::ptrdiff_t>(first), all.begin() + static_cast<std::ptrdiff_t>(end));
        for (const fs::path& shard : selected_)
            if (fs::weakly_canonical(output_path(shard)) == fs::weakly_canonical(shard))
                throw blip_cli::UsageError("output shard " + output_path(shard).string() +
                                           " would replace its input; choose another -o folder");

        fs::create_directories(state_);
        job_ = nlohmann::ordered_json::object();
        job_["tool"] = "blip-capfilt";
        job_["captioner"] = model_json(options_.captioner);
        job_["filter"] = model_json(options_.filter);
        job_["settings"] = output_settings_json(options_);
        job_["output_format"] = jsonl_output_ ? "jsonl" : "wds";
        check_or_write_job(state_ / "run.json", job_, output_.string());

        std::vector<fs::path> pending;
        std::uint64_t pending_samples = 0;
        for (const fs::path& shard : selected_) {
            const ShardState state = shard_state(shard);
            if (state == ShardState::kDone) continue;
            log_redo_reason(shard, state);
            pending.push_back(shard);
            pending_samples += count_samples(shard);
        }
        log("inputs: " + std::to_string(all.size()) + " tar shards; part " + std::to_string(options_.shard_index) + "/" +
            std::to_string(options_.shard_count) + " has " + std::to_string(selected_.size()) + ", " +
            std::to_string(selected_.size() - pending.size()) + " already done, " + std::to_string(pending.size()) +
            " to do (" + std::to_string(pending_samples) + " samples)");

        bool stopped_early = false;
        if (options_.max_chunks > 0 && pending.size() > options_.max_chunks) {
            pending.resize(static_cast<std::size_t>(options_.max_chunks));
            stopped_early = true;
            pending_samples = 0;
            for (const fs::path& shard : pending) pending_samples += count_samples(shard);
        }

        Progress progress(options_.progress, pending_samples, options_.log_interval);
        progress.start();
        process(pending, progress);
        progress.stop();
        throughput_.records = progress.items_done();
        throughput_.seconds = progress.seconds();
        throughput_.threads = options_.inference_threads();

        bool complete = true;
        for (const fs::path& shard : selected_) complete = complete && shard_done(shard);
        const Counts counts = write_summary(complete);
        if (stopped_early) {
            log("stopped after " + std::to_string(pending.size()) + " shards (--max-chunks); rerun to continue");
            return kExitIncomplete;
        }
        log("done: " + output_.string() + ": " + summary_line(counts));
        log("summary: " + summary_path_.string());
        return 0;
    }

private:
    struct Shard {
        fs::path input;
        std::shared_ptr<FileLock> lock;
        bool skip = false;  // another process finished it while this one waited for the lock
        WdsShard shard;
        std::vector<std::optional<std::string>> texts;
        std::string fingerprint;
    };

    fs::path output_path(const fs::path& input) const {
        if (!jsonl_output_) return output_ / input.filename();
        return output_ / (input.stem().string() + ".jsonl");
    }
    fs::path counts_path(const fs::path& input) const { return state_ / (input.filename().string() + ".json"); }
    fs::path lock_path(const fs::path& input) const { return state_ / (input.filename().string() + ".lock"); }

    enum class ShardState {
        kNotDone,        // no output or no counts file yet
        kDone,           // output and counts written for the input as it is now
        kInputChanged,   // the input's fingerprint differs from the one in its counts file
        kInvalidCounts,  // the counts file is not valid JSON
    };

    // Returns the state of the shard's output without logging, because a run checks each shard
    // up to three times: when it lists the pending shards, under the shard's lock, and for the
    // summary.
    ShardState shard_state(const fs::path& input) const {
        if (!fs::exists(output_path(input)) || !fs::exists(counts_path(input))) return ShardState::kNotDone;
        try {
            const auto counts = nlohmann::ordered_json::parse(read_file(counts_path(input)));
            if (counts.value("input_fingerprint", "") == file_fingerprint(input)) return ShardState::kDone;
            return ShardState::kInputChanged;
        } catch (const nlohmann::json::exception&) {
            return ShardState::kInvalidCounts;
        }
    }

    bool shard_done(const fs::path& input) const { return shard_state(input) == ShardState::kDone; }

    void log_redo_reason(const fs::path& input, ShardState state) const {
        if (state == ShardState::kInputChanged)
            log(input.string() + " changed since its output was written; processing it again");
        if (state == ShardState::kInvalidCounts)
            log(counts_path(input).string() + " is not valid JSON; processing " + input.string() + " again");
    }

    static std::uint64_t count_samples(const fs::path& input) { return read_wds_shard(input).samples.size(); }

    void process(const std::vector<fs::path>& pending, Progress& progress) {
        PipelineOptions pipeline_options;
        pipeline_options.inference_threads = options_.inference_threads();
        pipeline_options.decode_threads = options_.decoding_threads();
        pipeline_options.prefetch = options_.prefetch_images();
        Pipeline<Shard> pipeline(models_, pipeline_options, progress);

        auto read_unit = [&](std::size_t index) {
            WorkUnit<Shard> unit;
            unit.number = index;
            Shard& shard = unit.payload;
            shard.input = pending[index];
            shard.lock = std::make_shared<FileLock>(lock_path(shard.input), true);
            if (shard_done(shard.input)) {
                shard.skip = true;
                return unit;
            }
            shard.fingerprint = file_fingerprint(shard.input);
            shard.shard = read_wds_shard(shard.input);
            const ReadOnlyFile file(shard.input);
            const std::string name = shard.input.filename().string();
            const std::uint64_t shard_seed = options_.seed ^ fnv1a(name);
            for (std::size_t position = 0; position < shard.shard.samples.size(); ++position) {
                const WdsSample& sample = shard.shard.samples[position];
                WorkItem item;
                item.seed = record_seed(shard_seed, position);
                item.text = read_wds_text(file, shard.shard, sample, options_.columns.text);
                if (sample.image) {
                    const TarMember& member = shard.shard.listing.members[*sample.image];
                    item.image.path = shard.input.string();
                    item.image.name = name + ":" + member.name;
                    item.image.in_tar = true;
                    item.image.offset = member.data_offset;
                    item.image.size = member.size;
                } else {
                    std::string members;
                    for (std::size_t index : sample.members)
                        members += (members.empty() ? "" : ", ") + shard.shard.listing.members[index].name;
                    item.error = name + ": sample " + sample.key + " has no image member (members: " + members + ")";
                }
                shard.texts.push_back(item.text);
                unit.items.push_back(std::move(item));
            }
            if (!shard.shard.listing.error.empty())
                log(shard.input.string() + ": " + shard.shard.listing.error + "; " +
                    std::to_string(shard.shard.samples.size()) + " samples before it are processed");
            return unit;
        };
        auto done = [&](WorkUnit<Shard>&& unit, std::vector<ImageResult>&& results) {
            if (!unit.payload.skip) write_shard(unit.payload, results);
        };
        pipeline.run(pending.size(), read_unit, done);
    }

    std::string image_name(const Shard& shard, const WdsSample& sample) const {
        return sample.image ? shard.shard.listing.members[*sample.image].name : std::string();
    }

    void write_shard(const Shard& shard, const std::vector<ImageResult>& results) {
        const std::string name = shard.input.filename().string();
        Counts counts;
        if (!shard.shard.listing.error.empty()) counts.add_input_error(name, shard.shard.listing.error);
        if (shard.shard.samples.empty() && shard.shard.listing.error.empty())
            counts.add_input_error(name, "the shard holds no samples (empty tar archive)");
        std::vector<nlohmann::ordered_json> records;
        for (std::size_t i = 0; i < shard.shard.samples.size(); ++i) {
            const WdsSample& sample = shard.shard.samples[i];
            const std::string image = image_name(shard, sample);
            counts.add_result(sample.key, image.empty() ? name : name + ":" + image, shard.texts[i], results[i]);
            if (!results[i].error.empty()) failures_.report("sample " + name + ":" + sample.key + " failed: " + results[i].error);
            records.push_back(record_json(sample.key, image, shard.texts[i], results[i], {{"shard", name}}));
        }

        nlohmann::ordered_json meta = counts.to_json();
        meta["shard"] = name;
        meta["input_fingerprint"] = shard.fingerprint;
        write_file_atomic(counts_path(shard.input), dump_json(meta, 1) + "\n");

        AtomicFile out(output_path(shard.input));
        if (jsonl_output_) {
            for (const auto& record : records) out.write(dump_json(record) + "\n");
        } else {
            write_wds(shard, records, out);
        }
        out.commit();
    }

    // Mirrors the input shard: every member in its order, KEY.txt replaced by the kept texts
    // (one per line) and the record added to KEY.json as "capfilt". A sample without KEY.txt
    // or KEY.json gets them after its other members.
    void write_wds(const Shard& shard, const std::vector<nlohmann::ordered_json>& records, AtomicFile& out) const {
        const ReadOnlyFile input(shard.input);
        TarWriter tar(out);
        for (std::size_t i = 0; i < shard.shard.samples.size(); ++i) {
            const WdsSample& sample = shard.shard.samples[i];
            std::string kept;
            for (const auto& text : records[i].at("kept")) kept += (kept.empty() ? "" : "\n") + text.at("text").get<std::string>();
            nlohmann::ordered_json record = records[i];
            record.erase("meta");
            for (std::size_t index : sample.members) {
                const TarMember& member = shard.shard.listing.members[index];
                const std::string data = input.read_string(member.data_offset, static_cast<std::size_t>(member.size));
                if (sample.text && index == *sample.text) {
                    tar.add(member.name, kept);
                } else if (sample.json && index == *sample.json) {
                    nlohmann::ordered_json object = nlohmann::ordered_json::parse(data, nullptr, false);
                    if (!object.is_object()) object = nlohmann::ordered_json::object();
                    object["capfilt"] = record;
                    tar.add(member.name, dump_json(object));
                } else {
                    tar.add(member.name, data);
                }
            }
            if (!sample.text) tar.add(sample.key + ".txt", kept);
            if (!sample.json) tar.add(sample.key + ".json", dump_json({{"capfilt", record}}));
        }
        tar.finish();
    }

    // Sums the counts of every finished shard in the output folder, by any process.
    Counts write_summary(bool complete) const {
        Counts total;
        std::uint64_t shards = 0;
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(state_)) {
            const std::string name = entry.path().filename().string();
            if (name != "run.json" && entry.path().extension() == ".json" && name[0] != '.') files.push_back(entry.path());
        }
        std::sort(files.begin(), files.end());
        for (const fs::path& path : files) {
            try {
                total.add(Counts::from_json(nlohmann::ordered_json::parse(read_file(path)), path.string()));
                ++shards;
            } catch (const nlohmann::json::exception& error) {
                log(path.string() + ": invalid JSON (" + error.what() + "); left out of the summary");
            }
        }
        nlohmann::ordered_json summary;
        summary["complete"] = complete;
        summary["shards_done"] = shards;
        summary["job"] = job_;
        const nlohmann::ordered_json counts_json = total.to_json();
        for (const auto& [key, value] : counts_json.items()) summary[key] = value;
        summary["throughput"] = throughput_.to_json();
        write_file_atomic(summary_path_, dump_json(summary, 1) + "\n");
        return total;
    }

    const Options& options_;
    const CapfiltModels& models_;
    bool jsonl_output_ = false;
    fs::path output_;
    fs::path state_;
    fs::path summary_path_;
    std::vector<fs::path> selected_;
    nlohmann::ordered_json job_;
    Throughput throughput_;
    FailureLog failures_;
};

}  // namespace capfilt
