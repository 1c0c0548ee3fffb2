// blip-capfilt on the tiny golden models, run in process. Its records, sources and scores
// equal what the library's caption and ITM calls give for the same images, texts and seeds.
// The output does not depend on the thread count, broken inputs are recorded, a stopped run
// resumes to the same bytes, shards merge to the single-run output, and WebDataset shards
// are mirrored.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "convert/convert.hpp"
#include "examples/capfilt/merge.hpp"
#include "examples/capfilt/run.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_capfilt_golden {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

fs::path scratch() { return blip_test::scratch_dir("capfilt_golden"); }

std::string converted(const std::string& name) { return blip_test::converted_golden_model("capfilt_golden", name); }

const blip::Captioner& library_captioner() {
    static const blip::Captioner captioner = blip::Captioner::open(converted("tiny-caption"));
    return captioner;
}

const blip::ImageTextMatcher& library_matcher() {
    static const blip::ImageTextMatcher matcher = blip::ImageTextMatcher::open(converted("tiny-itm"));
    return matcher;
}

void copy_golden_image(const std::string& name, const fs::path& folder) {
    fs::copy_file(blip_test::golden_dir() / "images" / name, folder / name, fs::copy_options::overwrite_existing);
}

void write_file(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

// Good images of the golden set, in the order the dataset lists them.
const std::vector<std::string>& good_images() {
    static const std::vector<std::string> images = {"cats.png",     "bike.jpg",        "coco4016.png",
                                                    "gray.jpg",     "palette.png",     "rgba.png",
                                                    "tiny_1x1.png", "wide_1000x7.png", "upscale_50x40.bmp"};
    return images;
}

// A noisy dataset in `folder`/pairs.jsonl: good pairs, a pair without text, broken images,
// an image URL and a malformed line (line 7).
fs::path make_dataset(const fs::path& folder) {
    fs::create_directories(folder / "photos");
    for (const std::string& image : good_images()) copy_golden_image(image, folder / "photos");
    const std::string bike = blip_test::read_text(blip_test::golden_dir() / "images" / "bike.jpg");
    write_file(folder / "photos" / "truncated.jpg", bike.substr(0, bike.size() * 2 / 5));
    write_file(folder / "photos" / "empty.png", "");
    write_file(folder / "photos" / "text.jpg", "this is not an image");

    std::ofstream out(folder / "pairs.jsonl", std::ios::binary);
    out << R"({"image": "photos/cats.png", "text": "two cats lying on a pink blanket", "url": "https://example.com/1"})" "\n";
    out << R"({"image": "photos/bike.jpg", "text": "a bicycle parked by a wall"})" "\n";
    out << R"({"image": "photos/missing.jpg", "text": "a file that is not there"})" "\n";
    out << R"({"image": "photos/coco4016.png", "text": null, "id": "coco-4016"})" "\n";
    out << R"({"image": "photos/truncated.jpg", "text": "half a jpeg"})" "\n";
    out << R"({"image": "photos/gray.jpg", "text": "a gray picture"})" "\n";
    out << R"({"image": "photos/palette.png", "text": "broken line")" "\n";
    out << R"({"image": "photos/palette.png", "text": "a palette image"})" "\n";
    out << R"({"image": "photos/empty.png", "text": "zero bytes"})" "\n";
    out << R"({"image": "https://example.com/remote.jpg", "text": "a remote image"})" "\n";
    out << R"({"image": "photos/rgba.png", "text": "cats with alpha"})" "\n";
    out << R"({"image": "photos/text.jpg", "text": "text, not pixels"})" "\n";
    out << R"({"image": "photos/tiny_1x1.png", "text": "one pixel"})" "\n";
    out << R"({"image": "photos/wide_1000x7.png", "text": "a thin strip"})" "\n";
    out << R"({"image": "photos/upscale_50x40.bmp", "text": "a small bitmap with a much longer description than the filter reads, )"
           R"(which goes on and on about colours, shapes, light, shadows, textures and everything else in view"})" "\n";
    return folder / "pairs.jsonl";
}

fs::path dataset() {
    static const fs::path path = make_dataset(scratch() / "dataset");
    return path;
}

// Runs blip-capfilt in process with `arguments` after the models and returns its exit status.
int run_tool(std::vector<std::string> arguments) {
    std::vector<std::string> all = {"blip-capfilt", "-c", converted("tiny-caption"), "-f", converted("tiny-itm"),
                                    "--progress", "none"};
    all.insert(all.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (std::string& argument : all) argv.push_back(argument.data());
    return capfilt::run_capfilt(capfilt::parse_options(static_cast<int>(argv.size()), argv.data()));
}

// Sends standard error (file descriptor 2), where capfilt::log() writes, to `path` while it
// lives, so a test can read the tool's log lines.
class StderrToFile {
public:
    explicit StderrToFile(const fs::path& path) {
        std::fflush(stderr);
        saved_ = ::dup(2);
        const int file = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        REQUIRE(saved_ >= 0);
        REQUIRE(file >= 0);
        ::dup2(file, 2);
        ::close(file);
    }
    ~StderrToFile() {
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
    }
    StderrToFile(const StderrToFile&) = delete;
    StderrToFile& operator=(const StderrToFile&) = delete;

private:
    int saved_ = -1;
};

std::size_t count_occurrences(const std::string& text, const std::string& part) {
    std::size_t count = 0;
    for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
    return count;
}

std::vector<Json> read_jsonl(const fs::path& path) {
    std::vector<Json> records;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) records.push_back(Json::parse(line));
    return records;
}

fs::path fresh(const std::string& name) {
    const fs::path path = scratch() / name;
    fs::remove_all(path);
    fs::create_directories(path);
    return path;
}

// The settings the runs below use, as the library takes them.
blip::GenerationConfig sampling_config(std::uint64_t seed) {
    blip::GenerationConfig generation;
    generation.do_sample = true;
    generation.top_p = 0.9;
    generation.top_k = 50;
    generation.repetition_penalty = 1.1;
    generation.max_length = 30;
    generation.min_length = 10;
    generation.num_return_sequences = 2;
    generation.seed = seed;
    return generation;
}

const std::vector<std::string> kSamplingRun = {"--num-captions", "2", "--prompt", "", "--seed", "7", "--threshold", "0.1",
                                               "--chunk-size", "4"};

// The list run that the thread, resume and shard tests compare with.
const std::string& reference_output() {
    static const std::string bytes = [] {
        const fs::path folder = fresh("reference");
        std::vector<std::string> arguments = kSamplingRun;
        arguments.insert(arguments.end(), {"--threads", "1", "-o", (folder / "out.jsonl").string(), dataset().string()});
        REQUIRE(run_tool(arguments) == 0);
        return blip_test::read_text(folder / "out.jsonl");
    }();
    return bytes;
}

// Checks a record's texts against the library's calls on the same image.
void check_against_library(const Json& record, const fs::path& image_path, const blip::GenerationConfig& generation,
                           double threshold) {
    const blip::Captioner& captioner = library_captioner();
    const blip::ImageTextMatcher& matcher = library_matcher();
    const blip::ImageU8 image = blip::decode_image_file(image_path.string());

    // Captions: the library's first caption through the Captioner, all of them through the model.
    const std::vector<float> embeds = captioner.encode_image(image);
    blip::CaptionOptions caption_options;
    caption_options.generation = generation;
    const blip::Caption first = captioner.caption_embeds(embeds, caption_options);
    const blip::GenerationOutput all = captioner.model().generate_batch({&embeds}, {}, generation);
    std::vector<std::string> expected_texts;
    if (!record.at("text").is_null()) expected_texts.push_back(record.at("text").get<std::string>());
    for (const auto& sequence : all.sequences) expected_texts.push_back(captioner.tokenizer().decode(sequence));
    REQUIRE(!all.sequences.empty());
    CHECK(captioner.tokenizer().decode(all.sequences.front()) == first.text);

    // Scores of the same texts, in the same order: web first, then synthetic. Texts over 35
    // tokens are cut as transformers' tokenizer cuts them with truncation=True, max_length=35.
    std::vector<blip::TextTokens> tokens = matcher.tokenize(expected_texts);
    for (blip::TextTokens& text : tokens) {
        if (text.ids.size() <= 35) continue;
        text.ids.resize(34);
        text.ids.push_back(102);  // [SEP]
    }
    const std::vector<blip::MatchScore> scores = matcher.match(matcher.encode_image(image), tokens);
    std::vector<Json> texts;
    for (const auto& entry : record.at("kept")) texts.push_back(entry);
    for (const auto& entry : record.at("dropped")) texts.push_back(entry);
    REQUIRE(texts.size() == expected_texts.size());
    std::size_t matched = 0;
    for (std::size_t i = 0; i < expected_texts.size(); ++i) {
        CAPTURE(expected_texts[i]);
        const bool web = i == 0 && !record.at("text").is_null();
        const bool kept = scores[i].itm_probability >= threshold;
        for (const Json& text : texts) {
            if (text.at("text") != expected_texts[i] || text.at("source") != (web ? "web" : "synthetic")) continue;
            CHECK(text.at("itm_probability").get<double>() == scores[i].itm_probability);
            CHECK(text.at("itc_similarity").get<double>() == scores[i].itc_similarity);
            const Json& list = kept ? record.at("kept") : record.at("dropped");
            CHECK(std::find(list.begin(), list.end(), text) != list.end());
            ++matched;
            break;
        }
    }
    CHECK(matched == expected_texts.size());

    // Kept and dropped keep the candidates' order: web first, then synthetic in sampling order.
    for (const char* list : {"kept", "dropped"}) {
        std::size_t last = 0;
        for (const auto& entry : record.at(list)) {
            const auto found = std::find(expected_texts.begin(), expected_texts.end(), entry.at("text").get<std::string>());
            REQUIRE(found != expected_texts.end());
            const auto position = static_cast<std::size_t>(found - expected_texts.begin());
            CHECK(position >= last);
            last = position;
        }
    }
}

}  // namespace

TEST_CASE("capfilt records equal library calls") {
    BLIP_REQUIRE_GOLDEN();
    const std::vector<Json> records = [] {
        reference_output();
        return read_jsonl(scratch() / "reference" / "out.jsonl");
    }();
    const std::vector<std::string> ids = {"0", "1", "2", "coco-4016", "4", "5", "7", "8", "9", "10", "11", "12", "13", "14"};
    REQUIRE(records.size() == ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(records[i].at("id") == ids[i]);
    CHECK(records[0].at("meta") == Json{{"url", "https://example.com/1"}});

    // Record numbers count every non-blank line, the malformed one (line 7) included.
    const std::map<std::string, std::uint64_t> good = {{"0", 0},  {"1", 1},   {"coco-4016", 3}, {"5", 5},
                                                       {"7", 7},  {"10", 10}, {"12", 12},       {"13", 13},
                                                       {"14", 14}};
    std::size_t checked = 0;
    for (const Json& record : records) {
        const std::string id = record.at("id");
        CAPTURE(id);
        const auto found = good.find(id);
        if (found == good.end()) {
            CHECK(record.contains("error"));
            CHECK(record.at("kept").empty());
            CHECK(record.at("dropped").empty());
            continue;
        }
        CHECK(!record.contains("error"));
        const fs::path image = dataset().parent_path() / record.at("image").get<std::string>();
        check_against_library(record, image, sampling_config(capfilt::record_seed(7, found->second)), 0.1);
        ++checked;
    }
    CHECK(checked == good.size());

    // The long web text is cut to 35 tokens before scoring, and the record marks it.
    const Json& longest = records.back().at("kept").empty() || records.back().at("kept")[0].at("source") != "web"
                              ? records.back().at("dropped")[0]
                              : records.back().at("kept")[0];
    CHECK(longest.at("source") == "web");
    CHECK(longest.value("truncated", false));
}

TEST_CASE("capfilt truncation matches the tokenizer's") {
    BLIP_REQUIRE_GOLDEN();
    // The last record's web text has more than 35 tokens, so check_against_library's
    // untruncated scores cannot apply to it; compare with the truncated ids instead.
    reference_output();
    const std::vector<Json> records = read_jsonl(scratch() / "reference" / "out.jsonl");
    const Json& record = records.back();
    const std::string text = record.at("text");
    const blip::ImageTextMatcher& matcher = library_matcher();
    blip::TextTokens tokens = matcher.tokenize(text);
    REQUIRE(tokens.ids.size() > 35);
    tokens.ids.resize(34);
    tokens.ids.push_back(102);  // [SEP]
    const blip::ImageU8 image = blip::decode_image_file((dataset().parent_path() / "photos" / "upscale_50x40.bmp").string());
    const blip::MatchScore score = matcher.match(matcher.encode_image(image), std::vector<blip::TextTokens>{tokens}).front();
    Json web;
    for (const char* list : {"kept", "dropped"})
        for (const auto& entry : record.at(list))
            if (entry.at("source") == "web") web = entry;
    REQUIRE(!web.is_null());
    CHECK(web.at("itm_probability").get<double>() == score.itm_probability);
    CHECK(web.at("itc_similarity").get<double>() == score.itc_similarity);
}

TEST_CASE("capfilt broken inputs are recorded") {
    BLIP_REQUIRE_GOLDEN();
    reference_output();
    const std::vector<Json> records = read_jsonl(scratch() / "reference" / "out.jsonl");
    std::map<std::string, std::string> errors;
    for (const Json& record : records)
        if (record.contains("error")) errors[record.at("image")] = record.at("error");
    REQUIRE(errors.size() == 5);
    CHECK(errors["photos/missing.jpg"].find("cannot open image file") != std::string::npos);
    CHECK(!errors["photos/truncated.jpg"].empty());
    CHECK(errors["photos/empty.png"].find("image file is empty") != std::string::npos);
    CHECK(errors["https://example.com/remote.jpg"].find("image URLs are not read") != std::string::npos);
    CHECK(!errors["photos/text.jpg"].empty());

    const Json summary = Json::parse(blip_test::read_text(scratch() / "reference" / "out.summary.json"));
    CHECK(summary.at("complete") == true);
    CHECK(summary.at("pairs_read") == 14);
    CHECK(summary.at("malformed_records") == 1);
    REQUIRE(summary.at("malformed").size() == 1);
    CHECK(summary.at("malformed")[0].at("line") == 7);
    CHECK(summary.at("images_failed") == 5);
    CHECK(summary.at("failures").size() == 5);
    CHECK(summary.at("images_processed") == 9);
    CHECK(summary.at("pairs_without_web_text") == 1);
    const auto web = summary.at("web_texts");
    const auto synthetic = summary.at("synthetic_texts");
    CHECK(web.at("kept").get<int>() + web.at("dropped").get<int>() == 8);
    CHECK(synthetic.at("kept").get<int>() + synthetic.at("dropped").get<int>() == 18);
    CHECK(summary.at("throughput").at("records_this_run") == 15);
}

TEST_CASE("capfilt prompt is not part of the caption") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path folder = fresh("prompt");
    REQUIRE(run_tool({"--decoding", "greedy", "--prompt", "a picture of", "--min-length", "0", "-o",
                      (folder / "out.jsonl").string(), dataset().string()}) == 0);
    const std::vector<Json> records = read_jsonl(folder / "out.jsonl");
    const blip::Captioner& captioner = library_captioner();
    blip::CaptionOptions options;
    options.prompt = "a picture of";
    options.generation.max_length = 30;
    const std::size_t prefix = captioner.model().decoder_input_ids(captioner.tokenizer().encode(options.prompt)).size();
    CHECK(prefix == 4);  // [DEC] a picture of
    const blip::Caption caption =
        captioner.caption_file((dataset().parent_path() / "photos" / "cats.png").string(), options);
    CHECK(caption.text.rfind("a picture of", 0) == 0);
    const std::string expected = captioner.tokenizer().decode(std::vector<std::int32_t>(caption.ids.begin() + 4, caption.ids.end()));
    std::string synthetic;
    for (const char* list : {"kept", "dropped"})
        for (const auto& entry : records[0].at(list))
            if (entry.at("source") == "synthetic") synthetic = entry.at("text");
    CHECK(synthetic == expected);
}

TEST_CASE("capfilt output is the same for 1 and 2 threads") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path folder = fresh("threads");
    std::vector<std::string> arguments = kSamplingRun;
    arguments.insert(arguments.end(), {"--threads", "2", "--decode-threads", "2", "--prefetch", "1", "-o",
                                       (folder / "out.jsonl").string(), dataset().string()});
    REQUIRE(run_tool(arguments) == 0);
    CHECK(blip_test::read_text(folder / "out.jsonl") == reference_output());
}

TEST_CASE("capfilt resumes to the uninterrupted output") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path folder = fresh("resume");
    const fs::path output = folder / "out.jsonl";
    std::vector<std::string> arguments = kSamplingRun;
    arguments.insert(arguments.end(), {"--threads", "2", "-o", output.string(), dataset().string()});

    std::vector<std::string> first = arguments;
    first.insert(first.end(), {"--max-chunks", "2"});
    CHECK(run_tool(first) == capfilt::kExitIncomplete);
    CHECK(!fs::exists(output));
    const fs::path work = folder / "out.jsonl.work";
    CHECK(fs::exists(work / "chunk-000000000.jsonl"));
    CHECK(fs::exists(work / "chunk-000000001.jsonl"));
    CHECK(!fs::exists(work / "chunk-000000002.jsonl"));
    const Json partial = Json::parse(blip_test::read_text(folder / "out.summary.json"));
    CHECK(partial.at("complete") == false);

    // What a kill leaves behind: a temporary file and the counts of a chunk whose records
    // never landed. Neither may reach the output.
    write_file(work / ".chunk-000000002.jsonl.tmp-99999", "{\"half\": ");
    write_file(work / "chunk-000000002.json", "{}");
    const std::string done_chunk = blip_test::read_text(work / "chunk-000000000.jsonl");

    CHECK(run_tool(arguments) == 0);
    CHECK(blip_test::read_text(output) == reference_output());
    CHECK(!fs::exists(work));
    CHECK(reference_output().rfind(done_chunk, 0) == 0);

    // A finished job is not redone, and another job may not reuse its output.
    CHECK(run_tool(arguments) == 0);
    CHECK(blip_test::read_text(output) == reference_output());
    std::vector<std::string> other = arguments;
    other.insert(other.end(), {"--threshold", "0.2"});
    CHECK_THROWS_AS(run_tool(other), blip::Error);

    // An unfinished job refuses other settings too, naming the difference.
    const fs::path second = folder / "second.jsonl";
    std::vector<std::string> stopped = kSamplingRun;
    stopped.insert(stopped.end(), {"-o", second.string(), "--max-chunks", "1", dataset().string()});
    CHECK(run_tool(stopped) == capfilt::kExitIncomplete);
    stopped.insert(stopped.end(), {"--seed", "8"});
    try {
        run_tool(stopped);
        FAIL("a resumed run with another seed must be rejected");
    } catch (const blip::Error& error) {
        CHECK(std::string(error.what()).find("settings.seed was 7, now 8") != std::string::npos);
    }
}

TEST_CASE("capfilt shards merge to the single-run output") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path folder = fresh("shards");
    std::vector<std::string> parts;
    for (int shard = 0; shard < 3; ++shard) {
        const std::string part = (folder / ("part-" + std::to_string(shard) + ".jsonl")).string();
        std::vector<std::string> arguments = kSamplingRun;
        arguments.insert(arguments.end(), {"--shard", std::to_string(shard) + "/3", "-o", part, dataset().string()});
        REQUIRE(run_tool(arguments) == 0);
        parts.push_back(part);
    }
    capfilt::MergeOptions merge;
    merge.output = (folder / "merged.jsonl").string();
    merge.parts = parts;
    REQUIRE(capfilt::run_merge(merge) == 0);
    CHECK(blip_test::read_text(merge.output) == reference_output());
    const Json summary = Json::parse(blip_test::read_text(folder / "merged.summary.json"));
    CHECK(summary.at("pairs_read") == 14);
    CHECK(summary.at("malformed_records") == 1);

    merge.parts = {parts[1], parts[0], parts[2]};
    CHECK_THROWS_AS(capfilt::run_merge(merge), blip::Error);
}

TEST_CASE("capfilt mirrors webdataset shards") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path folder = fresh("wds");
    const fs::path inputs = folder / "in";
    fs::create_directories(inputs);
    auto image = [](const std::string& name) { return blip_test::read_text(blip_test::golden_dir() / "images" / name); };
    {
        capfilt::AtomicFile file(inputs / "shard-000.tar");
        capfilt::TarWriter tar(file);
        tar.add("000/a.png", image("cats.png"));
        tar.add("000/a.txt", "two cats\n");
        tar.add("000/a.json", R"({"url": "https://example.com/a.png", "caption": "two cats"})");
        tar.add("000/b.jpg", image("bike.jpg"));
        tar.add("000/b.json", R"({"caption": "a bike from json"})");
        tar.add("000/c.txt", "a sample without image");
        tar.add("000/d.jpg", image("bike.jpg").substr(0, 3000));
        tar.add("000/d.txt", "truncated jpeg");
        tar.add("000/e.bmp", image("upscale_50x40.bmp"));
        tar.finish();
        file.commit();
    }
    write_file(inputs / "shard-001.tar", std::string(10240, '\0'));  // a valid, empty archive
    {
        // A shard whose second header is damaged: its first sample is still read.
        const std::string good = blip_test::read_text(inputs / "shard-000.tar");
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(inputs / "shard-000.tar"));
        REQUIRE(listing.members.size() >= 2);
        std::string damaged = good.substr(0, static_cast<std::size_t>(listing.members[1].header_offset + 512));
        damaged[static_cast<std::size_t>(listing.members[1].header_offset) + 10] ^= 0x20;
        write_file(inputs / "shard-002.tar", damaged);
    }

    const fs::path output = folder / "out";
    REQUIRE(run_tool({"--decoding", "greedy", "--prompt", "", "--threshold", "0.1", "--threads", "2", "-o", output.string(),
                      inputs.string()}) == 0);
    const fs::path jsonl_output = folder / "out-jsonl";
    REQUIRE(run_tool({"--decoding", "greedy", "--prompt", "", "--threshold", "0.1", "--output-format", "jsonl", "-o",
                      jsonl_output.string(), inputs.string()}) == 0);

    // Members mirror the input's, with KEY.txt and KEY.json added where missing.
    const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(output / "shard-000.tar"));
    CHECK(listing.error.empty());
    std::vector<std::string> names;
    for (const auto& member : listing.members) names.push_back(member.name);
    const std::vector<std::string> expected_names = {"000/a.png", "000/a.txt", "000/a.json", "000/b.jpg", "000/b.json",
                                                     "000/b.txt", "000/c.txt", "000/c.json", "000/d.jpg", "000/d.txt",
                                                     "000/d.json", "000/e.bmp", "000/e.txt", "000/e.json"};
    CHECK(names == expected_names);
    auto member = [&](const std::string& name) {
        for (const auto& m : listing.members)
            if (m.name == name) return capfilt::ReadOnlyFile(output / "shard-000.tar").read_string(m.data_offset, m.size);
        FAIL("member " << name << " is missing");
        return std::string();
    };
    CHECK(member("000/a.png") == image("cats.png"));

    const std::vector<Json> records = read_jsonl(jsonl_output / "shard-000.jsonl");
    REQUIRE(records.size() == 5);
    const std::vector<std::string> keys = {"000/a", "000/b", "000/c", "000/d", "000/e"};
    for (std::size_t i = 0; i < records.size(); ++i) {
        CAPTURE(keys[i]);
        CHECK(records[i].at("id") == keys[i]);
        Json json = Json::parse(member(keys[i] + ".json"));
        Json record = records[i];
        record.erase("meta");
        CHECK(json.at("capfilt") == record);
        std::string kept;
        for (const auto& text : record.at("kept")) kept += (kept.empty() ? "" : "\n") + text.at("text").get<std::string>();
        CHECK(member(keys[i] + ".txt") == kept);
    }
    CHECK(Json::parse(member("000/a.json")).at("url") == "https://example.com/a.png");
    CHECK(records[0].at("text") == "two cats");
    CHECK(records[1].at("text") == "a bike from json");
    CHECK(records[2].at("error").get<std::string>().find("has no image member") != std::string::npos);
    CHECK(records[3].contains("error"));
    CHECK(!records[4].contains("error"));

    // Scores equal the library's for an image read from the tar.
    blip::GenerationConfig greedy;
    greedy.max_length = 30;
    greedy.min_length = 10;
    const fs::path bmp = folder / "e.bmp";
    write_file(bmp, image("upscale_50x40.bmp"));
    check_against_library(records[4], bmp, greedy, 0.1);

    // The empty and the damaged shard are recorded; their outputs exist.
    CHECK(capfilt::list_tar(capfilt::ReadOnlyFile(output / "shard-001.tar")).members.empty());
    const capfilt::TarListing damaged = capfilt::list_tar(capfilt::ReadOnlyFile(output / "shard-002.tar"));
    REQUIRE(damaged.members.size() == 3);  // 000/a.png and the added 000/a.txt and 000/a.json
    CHECK(damaged.members[0].name == "000/a.png");
    const Json summary = Json::parse(blip_test::read_text(output / "summary.json"));
    CHECK(summary.at("complete") == true);
    CHECK(summary.at("shards_done") == 3);
    CHECK(summary.at("pairs_read") == 6);
    // c has no image and d is truncated; e and the damaged shard's one sample have no text.
    CHECK(summary.at("images_failed") == 2);
    CHECK(summary.at("pairs_without_web_text") == 2);
    REQUIRE(summary.at("input_errors").size() == 2);
    CHECK(summary.at("input_errors")[0].at("error").get<std::string>().find("empty tar archive") != std::string::npos);
    CHECK(summary.at("input_errors")[1].at("error").get<std::string>().find("checksum mismatch") != std::string::npos);

    // Finished shards are not redone.
    const auto modified = fs::last_write_time(output / "shard-000.tar");
    REQUIRE(run_tool({"--decoding", "greedy", "--prompt", "", "--threshold", "0.1", "-o", output.string(), inputs.string()}) == 0);
    CHECK(fs::last_write_time(output / "shard-000.tar") == modified);

    // A replaced input shard is redone, and the run logs the reason once.
    {
        capfilt::AtomicFile file(inputs / "shard-002.tar");
        capfilt::TarWriter tar(file);
        tar.add("000/a.png", image("cats.png"));
        tar.add("000/a.txt", "two cats\n");
        tar.finish();
        file.commit();
    }
    const fs::path log_path = folder / "replaced-shard.log";
    {
        const StderrToFile capture(log_path);
        REQUIRE(run_tool({"--decoding", "greedy", "--prompt", "", "--threshold", "0.1", "-o", output.string(),
                          inputs.string()}) == 0);
    }
    const std::string log = blip_test::read_text(log_path);
    CAPTURE(log);
    CHECK(count_occurrences(log, "shard-002.tar changed since its output was written; processing it again") == 1);
    CHECK(fs::last_write_time(output / "shard-000.tar") == modified);
    CHECK(capfilt::list_tar(capfilt::ReadOnlyFile(output / "shard-002.tar")).members.size() == 3);
    const Json redone = Json::parse(blip_test::read_text(output / "summary.json"));
    CHECK(redone.at("input_errors").size() == 1);
}

}  // namespace test_capfilt_golden
