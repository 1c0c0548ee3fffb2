// Counts of what CapFilt kept and dropped, per work unit and summed for a run. Each unit
// stores its counts in a small JSON file beside its output, so that the summary of a
// resumed or sharded run is the sum over all units, whichever process wrote them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "capfilt.hpp"

namespace capfilt {

// Entries of each list kept in a summary; the counts stay exact beyond it.
constexpr std::size_t kSummaryListLimit = 1000;

struct Counts {
    std::uint64_t pairs_read = 0;        // image-text pairs (well-formed records or samples)
    std::uint64_t malformed_records = 0;  // records that could not be parsed
    std::uint64_t images_processed = 0;
    std::uint64_t images_failed = 0;
    std::uint64_t pairs_without_web_text = 0;
    std::uint64_t web_kept = 0;
    std::uint64_t web_dropped = 0;
    std::uint64_t synthetic_kept = 0;
    std::uint64_t synthetic_dropped = 0;
    std::uint64_t input_errors_count = 0;
    nlohmann::ordered_json failures = nlohmann::ordered_json::array();      // {"id", "image", "error"}
    nlohmann::ordered_json malformed = nlohmann::ordered_json::array();     // {"input", "line", "error"}
    nlohmann::ordered_json input_errors = nlohmann::ordered_json::array();  // {"input", "error"}

    void add_result(const std::string& id, const std::string& image, const std::optional<std::string>& web_text,
                    const ImageResult& result) {
        ++pairs_read;
        if (!web_text) ++pairs_without_web_text;
        if (!result.error.empty()) {
            ++images_failed;
            append(failures, {{"id", id}, {"image", image}, {"error", result.error}});
            return;
        }
        ++images_processed;
        for (const ScoredText& text : result.texts) {
            if (text.source == TextSource::Web) {
                ++(text.kept ? web_kept : web_dropped);
            } else {
                ++(text.kept ? synthetic_kept : synthetic_dropped);
            }
        }
    }

    void add_malformed(const std::string& input, std::int64_t line, const std::string& error) {
        ++malformed_records;
        append(malformed, {{"input", input}, {"line", line}, {"error", error}});
    }

    void add_input_error(const std::string& input, const std::string& error) {
        ++input_errors_count;
        append(input_errors, {{"input", input}, {"error", error}});
    }

    void add(const Counts& other) {
        pairs_read += other.pairs_read;
        malformed_records += other.malformed_records;
        images_processed += other.images_processed;
        images_failed += other.images_failed;
        pairs_without_web_text += other.pairs_without_web_text;
        web_kept += other.web_kept;
        web_dropped += other.web_dropped;
        synthetic_kept += other.synthetic_kept;
        synthetic_dropped += other.synthetic_dropped;
        input_errors_count += other.input_errors_count;
        for (const auto& entry : other.failures) append(failures, entry);
        for (const auto& entry : other.malformed) append(malformed, entry);
        for (const auto& entry : other.input_errors) append(input_errors, entry);
    }

    nlohmann::ordered_json to_json() const {
        nlohmann::ordered_json json;
        json["pairs_read"] = pairs_read;
        json["malformed_records"] = malformed_records;
        json["images_processed"] = images_processed;
        json["images_failed"] = images_failed;
        json["pairs_without_web_text"] = pairs_without_web_text;
        json["web_texts"] = {{"kept", web_kept}, {"dropped", web_dropped}};
        json["synthetic_texts"] = {{"kept", synthetic_kept}, {"dropped", synthetic_dropped}};
        json["input_errors_count"] = input_errors_count;
        json["failures"] = failures;
        json["malformed"] = malformed;
        json["input_errors"] = input_errors;
        return json;
    }

    // Reads counts written by to_json(); throws blip::Error naming `source` on a missing field.
    static Counts from_json(const nlohmann::ordered_json& json, const std::string& source) {
        Counts counts;
        try {
            counts.pairs_read = json.at("pairs_read").get<std::uint64_t>();
            counts.malformed_records = json.at("malformed_records").get<std::uint64_t>();
            counts.images_processed = json.at("images_processed").get<std::uint64_t>();
            counts.images_failed = json.at("images_failed").get<std::uint64_t>();
            counts.pairs_without_web_text = json.at("pairs_without_web_text").get<std::uint64_t>();
            counts.web_kept = json.at("web_texts").at("kept").get<std::uint64_t>();
            counts.web_dropped = json.at("web_texts").at("dropped").get<std::uint64_t>();
            counts.synthetic_kept = json.at("synthetic_texts").at("kept").get<std::uint64_t>();
            counts.synthetic_dropped = json.at("synthetic_texts").at("dropped").get<std::uint64_t>();
            counts.input_errors_count = json.at("input_errors_count").get<std::uint64_t>();
            counts.failures = json.at("failures");
            counts.malformed = json.at("malformed");
            counts.input_errors = json.at("input_errors");
        } catch (const nlohmann::json::exception& error) {
            throw Error(source + ": invalid counts (" + error.what() + "); delete the file to redo its part");
        }
        return counts;
    }

private:
    static void append(nlohmann::ordered_json& list, nlohmann::ordered_json entry) {
        if (list.size() < kSummaryListLimit) list.push_back(std::move(entry));
    }
};

// Throughput of the records that this process ran, in wall-clock time.
struct Throughput {
    std::uint64_t records = 0;
    double seconds = 0;
    int threads = 1;

    nlohmann::ordered_json to_json() const {
        return {{"records_this_run", records},
                {"seconds_this_run", seconds},
                {"records_per_second", seconds > 0 ? records / seconds : 0.0},
                {"inference_threads", threads}};
    }
};

inline std::string summary_line(const Counts& counts) {
    return std::to_string(counts.pairs_read) + " pairs read, web texts kept " + std::to_string(counts.web_kept) +
           " / dropped " + std::to_string(counts.web_dropped) + ", synthetic kept " + std::to_string(counts.synthetic_kept) +
           " / dropped " + std::to_string(counts.synthetic_dropped) + ", " + std::to_string(counts.images_failed) +
           " images failed, " + std::to_string(counts.malformed_records) + " malformed records, " +
           std::to_string(counts.input_errors_count) + " input errors";
}

}  // namespace capfilt
