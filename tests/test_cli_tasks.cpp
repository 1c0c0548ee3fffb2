// blip-vqa, blip-match and blip-retrieve as a user runs them: the tiny golden VQA and ITM
// models on golden PNG images, text and JSON output, unreadable inputs among readable ones,
// a model of the wrong task, and usage errors.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/command.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_cli_tasks {

namespace {

namespace fs = std::filesystem;

using blip_test::run_command;

fs::path scratch() { return blip_test::scratch_dir("cli-tasks"); }

std::string tiny_model(const std::string& name) { return blip_test::converted_golden_model("cli-tasks", name); }

// Returns the tool's path, or an empty string after marking the case skipped.
std::string tool(const std::string& name) { return blip_test::built_tool("examples", name).string(); }

std::string shell_quoted(const std::string& text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string golden_image(const std::string& name) { return (blip_test::golden_dir() / "images" / name).string(); }

std::vector<std::string> split(const std::string& text, char separator) {
    std::vector<std::string> parts;
    std::stringstream stream(text);
    std::string part;
    while (std::getline(stream, part, separator)) parts.push_back(part);
    return parts;
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

// The golden tiny-itm case of `image` and `text`.
nlohmann::json itm_case(const std::string& image, const std::string& text) {
    const nlohmann::json golden = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-itm.json");
    for (const auto& item : golden["cases"])
        if (item["image"] == image && item["text"] == text) return item;
    FAIL("no golden ITM case for " << image << " and " << text);
    return {};
}

}  // namespace

TEST_CASE("blip-vqa answers like transformers") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-vqa");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-vqa");
    const auto cases = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-vqa.json")["cases"];
    const auto& first = cases[0];
    const auto& second = cases[1];
    REQUIRE(first["image"] == "cats.png");
    REQUIRE(second["image"] == "cats.png");
    const std::string image = golden_image("cats.png");
    const std::string q1 = first["question"];
    const std::string q2 = second["question"];

    // [ENC] by default, the golden max_length 10 by default.
    const auto text = run_command(scratch(), binary + " -m " + model + " " + image + " " + shell_quoted(q1) + " " + shell_quoted(q2));
    CHECK(text.status == 0);
    CHECK(text.err.empty());
    CHECK(text.out == q1 + "\t" + first["decoded_enc_token_greedy"].get<std::string>() + "\n" + q2 + "\t" +
                          second["decoded_enc_token_greedy"].get<std::string>() + "\n");

    const auto beam = run_command(scratch(), binary + " --json --first-token cls --beams 3 -m " + model + " " +
                                                 image + " " + shell_quoted(q1));
    REQUIRE(beam.status == 0);
    const auto record = nlohmann::json::parse(beam.out);
    CHECK(record["image"] == image);
    CHECK(record["question"] == q1);
    CHECK(record["ids"] == first["beam3"]);
    CHECK(record["answer"] == first["decoded_beam3"]);
}

TEST_CASE("blip-vqa ranks an answer file") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-vqa");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-vqa");
    const std::string image = golden_image("cats.png");
    const fs::path lines = scratch() / "answers.txt";
    write_file(lines, "over\r\nhuh\n\n  \nyes\nno\n");
    const fs::path json = scratch() / "answers.json";
    write_file(json, R"(  ["over", "huh", "yes", "no"])");

    const auto from_lines = run_command(scratch(), binary + " -m " + model + " --answers " + lines.string() +
                                                       " --top 10 " + image + " 'how many cats?'");
    CHECK(from_lines.status == 0);
    const auto rows = split(from_lines.out, '\n');
    REQUIRE(rows.size() == 4);
    double previous = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        CAPTURE(rows[i]);
        const auto fields = split(rows[i], '\t');
        REQUIRE(fields.size() == 3);
        CHECK(fields[0] == "how many cats?");
        const double score = std::stod(fields[2]);
        CHECK(score < 0);
        if (i > 0) CHECK(score <= previous);
        previous = score;
    }

    const auto from_json = run_command(scratch(), binary + " --json -m " + model + " --answers " + json.string() +
                                                      " --top 2 " + image + " 'how many cats?'");
    REQUIRE(from_json.status == 0);
    const auto record = nlohmann::json::parse(from_json.out);
    REQUIRE(record["answers"].size() == 2);
    CHECK(record["answers"][0]["answer"] == split(rows[0], '\t')[1]);
    CHECK(record["answers"][1]["answer"] == split(rows[1], '\t')[1]);
    CHECK(record["answers"][0]["first_token_probability"].get<double>() > 0);
}

TEST_CASE("blip-vqa reports bad inputs") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-vqa");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-vqa");
    const std::string image = golden_image("cats.png");

    std::string long_question;
    for (int i = 0; i < 80; ++i) long_question += " why";
    const auto long_one = run_command(scratch(), binary + " -m " + model + " " + image + " " + shell_quoted(long_question) +
                                                     " 'what is it?'");
    CHECK(long_one.status == 1);
    CHECK(long_one.err.find("max_position_embeddings") != std::string::npos);
    CHECK(split(long_one.out, '\n').size() == 1);  // the other question is still answered

    const auto missing_image = run_command(scratch(), binary + " -m " + model + " /nonexistent/x.png 'what?'");
    CHECK(missing_image.status == 1);
    CHECK(missing_image.err.find("/nonexistent/x.png") != std::string::npos);

    const auto missing_answers =
        run_command(scratch(), binary + " -m " + model + " --answers /nonexistent/a.txt " + image + " 'what?'");
    CHECK(missing_answers.status == 1);
    CHECK(missing_answers.err.find("/nonexistent/a.txt") != std::string::npos);

    const std::string caption = tiny_model("tiny-caption");
    const auto wrong_task = run_command(scratch(), binary + " -m " + caption + " " + image + " 'what?'");
    CHECK(wrong_task.status == 1);
    CHECK(wrong_task.err.find(caption) != std::string::npos);
    CHECK(wrong_task.err.find("task is caption") != std::string::npos);

    CHECK(run_command(scratch(), binary + " -m " + model + " " + image).status == 2);
    CHECK(run_command(scratch(), binary + " " + image + " 'what?'").status == 2);
    CHECK(run_command(scratch(), binary + " -m " + model + " --first-token bos " + image + " 'what?'").status == 2);
}

TEST_CASE("blip-match scores texts like transformers") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-match");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-itm");
    const std::string image = golden_image("coco4016.png");
    const std::vector<std::string> texts = {"two cats sleeping on a pink blanket", "A DOG!"};
    std::string too_long;
    for (int i = 0; i < 80; ++i) too_long += " w";

    const auto text = run_command(scratch(), binary + " -m " + model + " " + image + " " + shell_quoted(texts[0]) + " " +
                                                 shell_quoted(too_long) + " " + shell_quoted(texts[1]));
    CHECK(text.status == 1);
    CHECK(text.err.find("82 tokens") != std::string::npos);
    const auto rows = split(text.out, '\n');
    REQUIRE(rows.size() == 2);
    for (std::size_t i = 0; i < texts.size(); ++i) {
        CAPTURE(rows[i]);
        const auto fields = split(rows[i], '\t');
        REQUIRE(fields.size() == 3);
        const auto expected = itm_case("coco4016.png", texts[i]);
        CHECK(std::abs(std::stod(fields[0]) - expected["itm_prob_enc_token"].get<double>()) < 2e-6);
        CHECK(std::abs(std::stod(fields[1]) - expected["itc_cosine"].get<double>()) < 2e-6);
        CHECK(fields[2] == texts[i]);
    }

    const auto json = run_command(scratch(), binary + " --json --first-token cls -m " + model + " " + image + " " +
                                                 shell_quoted(texts[0]));
    REQUIRE(json.status == 0);
    const auto record = nlohmann::json::parse(json.out);
    const auto expected = itm_case("coco4016.png", texts[0]);
    CHECK(std::abs(record["itm_probability"].get<double>() - expected["itm_prob"].get<double>()) < 1e-4);
    CHECK(std::abs(record["itm_logits"][1].get<double>() - expected["itm_logits"][1].get<double>()) < 1e-3);
    CHECK(std::abs(record["itc_similarity"].get<double>() - expected["itc_cosine"].get<double>()) < 1e-4);

    const auto wrong_task = run_command(scratch(), binary + " -m " + tiny_model("tiny-vqa") + " " + image + " x");
    CHECK(wrong_task.status == 1);
    CHECK(wrong_task.err.find("task is vqa") != std::string::npos);
}

TEST_CASE("blip-retrieve ranks both directions") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-retrieve");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-itm");
    const fs::path gallery = scratch() / "gallery";
    fs::create_directories(gallery);
    for (const std::string image : {"cats.png", "coco4016.png"})
        fs::copy_file(golden_image(image), gallery / image, fs::copy_options::overwrite_existing);
    write_file(gallery / "broken.png", "not an image");
    write_file(gallery / "notes.txt", "not listed: no image extension");
    const std::string query = "a plate of food on a table";

    // Text to image: the broken file is reported, the two PNGs are ranked by ITM + ITC.
    const auto images = run_command(scratch(), binary + " -m " + model + " --images " + gallery.string() +
                                                   " --query " + shell_quoted(query));
    CHECK(images.status == 1);
    CHECK(images.err.find("broken.png") != std::string::npos);
    const auto rows = split(images.out, '\n');
    REQUIRE(rows.size() == 2);
    const auto cats = itm_case("cats.png", query);
    const auto coco = itm_case("coco4016.png", query);
    const double cats_score = cats["itm_logits_enc_token"][1].get<double>() + cats["itc_cosine"].get<double>();
    const double coco_score = coco["itm_logits_enc_token"][1].get<double>() + coco["itc_cosine"].get<double>();
    const bool cats_first = cats_score > coco_score;
    const auto top = split(rows[0], '\t');
    REQUIRE(top.size() == 6);
    CHECK(top[0] == query);
    CHECK(top[1] == "1");
    CHECK(std::abs(std::stod(top[2]) - (cats_first ? cats_score : coco_score)) < 1e-4);
    CHECK(fs::path(top[5]).filename() == (cats_first ? "cats.png" : "coco4016.png"));

    // A list file with one relative and one absolute path, ITC only.
    write_file(scratch() / "list.txt", "gallery/cats.png\n" + (gallery / "coco4016.png").string() + "\n");
    const auto listed = run_command(scratch(), binary + " --json --rerank 0 -m " + model + " --images " +
                                                   (scratch() / "list.txt").string() + " --query " + shell_quoted(query));
    REQUIRE(listed.status == 0);
    const auto record = nlohmann::json::parse(listed.out);
    REQUIRE(record["results"].size() == 2);
    const bool cats_itc_first = cats["itc_cosine"].get<double>() > coco["itc_cosine"].get<double>();
    CHECK(fs::path(record["results"][0]["image"].get<std::string>()).filename() ==
          (cats_itc_first ? "cats.png" : "coco4016.png"));
    CHECK(!record["results"][0].contains("itm_probability"));

    // Image to text, with an unreadable image query reported.
    write_file(scratch() / "texts.txt", "two cats sleeping on a pink blanket\nA DOG!\n" + query + "\n");
    const auto texts = run_command(scratch(), binary + " -m " + model + " --texts " +
                                                  (scratch() / "texts.txt").string() + " --image " +
                                                  golden_image("cats.png") + " --image /nonexistent/y.png --top 1");
    CHECK(texts.status == 1);
    CHECK(texts.err.find("/nonexistent/y.png") != std::string::npos);
    const auto text_rows = split(texts.out, '\n');
    REQUIRE(text_rows.size() == 1);
    // Golden ITM + ITC: "a plate of food on a table" ranks first for cats.png.
    CHECK(split(text_rows[0], '\t').back() == query);

    CHECK(run_command(scratch(), binary + " -m " + model + " --images " + gallery.string()).status == 2);
    CHECK(run_command(scratch(), binary + " -m " + model + " --images " + gallery.string() + " --query x --texts " +
                                     (scratch() / "texts.txt").string())
              .status == 2);
}

TEST_CASE("blip-retrieve rejects non-text lists") {
    BLIP_REQUIRE_GOLDEN();
    const std::string binary = tool("blip-retrieve");
    if (binary.empty()) return;
    const std::string model = tiny_model("tiny-itm");
    const std::string png = golden_image("cats.png");
    const std::string prefix = binary + " -m " + model + " ";

    // A PNG given where a list file is expected: one error line that names the file.
    const auto images = run_command(scratch(), prefix + "--images " + png + " --query a");
    CAPTURE(images.err);
    CHECK(images.status == 1);
    CHECK(images.out.empty());
    CHECK(images.err == "blip-retrieve: error: " + png + " is not a text file (it contains a NUL byte at byte 9), " +
                            "but --images expects a folder of images or a text file with one image path per line\n");

    const auto texts = run_command(scratch(), prefix + "--texts " + png + " --image " + png);
    CAPTURE(texts.err);
    CHECK(texts.status == 1);
    CHECK(texts.out.empty());
    CHECK(split(texts.err, '\n').size() == 1);
    CHECK(texts.err.find(png + " is not a text file") != std::string::npos);
    CHECK(texts.err.find("--texts expects a text file with one text per line or a JSON list of strings") !=
          std::string::npos);

    // A folder given as a text list.
    const fs::path folder = scratch() / "texts-folder";
    fs::create_directories(folder);
    const auto folder_texts = run_command(scratch(), prefix + "--texts " + folder.string() + " --image " + png);
    CAPTURE(folder_texts.err);
    CHECK(folder_texts.status == 1);
    CHECK(folder_texts.err.find(folder.string() + " is a folder, but --texts expects") != std::string::npos);
    const auto no_images = run_command(scratch(), prefix + "--images " + folder.string() + " --query a");
    CAPTURE(no_images.err);
    CHECK(no_images.status == 1);
    CHECK(no_images.err.find(folder.string() + " contains no image files, but --images expects") != std::string::npos);

    // Latin-1 text has no NUL byte but is not valid UTF-8, and UTF-16 text starts with a byte order mark.
    write_file(scratch() / "latin1.txt", "two cats\ncaf\xE9\n");
    const auto latin1 = run_command(scratch(), prefix + "--texts " + (scratch() / "latin1.txt").string() + " --image " + png);
    CAPTURE(latin1.err);
    CHECK(latin1.status == 1);
    CHECK(latin1.err.find("latin1.txt is not UTF-8 text (line 2 is not valid UTF-8)") != std::string::npos);
    CHECK(latin1.err.find("Save the file as UTF-8") != std::string::npos);
    write_file(scratch() / "utf16.txt", std::string("\xFF\xFE" "a\0\n\0", 6));
    const auto utf16 = run_command(scratch(), prefix + "--texts " + (scratch() / "utf16.txt").string() + " --image " + png);
    CAPTURE(utf16.err);
    CHECK(utf16.status == 1);
    CHECK(utf16.err.find("utf16.txt is UTF-16 text") != std::string::npos);

    // A UTF-8 byte order mark is not part of the first text or path.
    write_file(scratch() / "bom-texts.txt", "\xEF\xBB\xBFtwo cats sleeping on a pink blanket\nA DOG!\n");
    const auto bom_texts = run_command(scratch(), prefix + "--top 0 --texts " + (scratch() / "bom-texts.txt").string() +
                                                      " --image " + png);
    CAPTURE(bom_texts.err);
    CHECK(bom_texts.status == 0);
    std::vector<std::string> ranked;
    for (const std::string& row : split(bom_texts.out, '\n')) ranked.push_back(split(row, '\t').back());
    std::sort(ranked.begin(), ranked.end());
    CHECK(ranked == std::vector<std::string>{"A DOG!", "two cats sleeping on a pink blanket"});
    write_file(scratch() / "bom-images.txt", "\xEF\xBB\xBF" + png + "\n");
    const auto bom_images = run_command(scratch(), prefix + "--images " + (scratch() / "bom-images.txt").string() +
                                                       " --query a");
    CAPTURE(bom_images.err);
    CHECK(bom_images.status == 0);
    CHECK(split(bom_images.out, '\n').size() == 1);
}

}  // namespace test_cli_tasks
