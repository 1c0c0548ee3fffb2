// blip-caption as a user runs it: the tiny golden captioner on a golden image, JSON
// output, unreadable images among readable ones, and usage errors.
#include <filesystem>
#include <fstream>
#include <string>

#include "support/command.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

namespace test_cli_caption {

namespace {

namespace fs = std::filesystem;

using blip_test::run_command;

}  // namespace

TEST_CASE("blip-caption prints golden caption") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path binary = blip_test::built_tool("examples", "blip-caption");
    if (binary.empty()) return;
    const fs::path dir = blip_test::scratch_dir("cli-caption");
    const fs::path model = blip_test::converted_golden_model("cli-caption", "tiny-caption");
    const nlohmann::json expected = blip_test::read_json(blip_test::golden_dir() / "expected" / "tiny-caption.json");
    const nlohmann::json& cats = expected["cases"][0];
    REQUIRE(cats["image"] == "cats.png");
    const fs::path image = blip_test::golden_dir() / "images" / "cats.png";

    // transformers' generate() uses max_length 40 for the golden `greedy` case.
    const auto text = run_command(dir, binary.string() + " -m " + model.string() + " --max-length 40 " + image.string());
    CHECK(text.status == 0);
    CHECK(text.err.empty());
    CHECK(text.out == image.string() + "\t" + cats["decoded_greedy"].get<std::string>() + "\n");

    const auto json = run_command(dir, binary.string() + " --json -m " + model.string() + " --max-length 40 " +
                                           image.string());
    REQUIRE(json.status == 0);
    const nlohmann::json record = nlohmann::json::parse(json.out);
    CHECK(record["image"] == image.string());
    CHECK(record["caption"] == cats["decoded_greedy"]);
    CHECK(record["ids"] == cats["greedy"]);
}

TEST_CASE("blip-caption skips unreadable images") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path binary = blip_test::built_tool("examples", "blip-caption");
    if (binary.empty()) return;
    const fs::path dir = blip_test::scratch_dir("cli-caption");
    const fs::path model = blip_test::converted_golden_model("cli-caption", "tiny-caption");
    const fs::path text_as_jpeg = dir / "notes.jpg";
    std::ofstream(text_as_jpeg) << "this is not a JPEG file\n";
    const fs::path image = blip_test::golden_dir() / "images" / "cats.png";

    const auto result = run_command(dir, binary.string() + " -m " + model.string() + " " + text_as_jpeg.string() + " " +
                                             (dir / "missing.png").string() + " " + image.string());
    CHECK(result.status == 1);
    CHECK(result.out.rfind(image.string() + "\t", 0) == 0);
    CHECK(result.err.find("blip-caption: error: " + text_as_jpeg.string()) != std::string::npos);
    CHECK(result.err.find("missing.png") != std::string::npos);
}

TEST_CASE("blip-caption usage errors") {
    const fs::path binary = blip_test::built_tool("examples", "blip-caption");
    if (binary.empty()) return;
    const fs::path dir = blip_test::scratch_dir("cli-caption-usage");

    const auto help = run_command(dir, binary.string() + " --help");
    CHECK(help.status == 0);
    for (const char* option : {"--model", "--prompt", "--max-length", "--min-length", "--threads", "--json"}) {
        CAPTURE(option);
        CHECK(help.out.find(option) != std::string::npos);
    }

    CHECK(run_command(dir, binary.string() + " image.png").status == 2);
    CHECK(run_command(dir, binary.string() + " -m model.gguf").status == 2);
    CHECK(run_command(dir, binary.string() + " -m model.gguf --max-length x image.png").status == 2);
    CHECK(run_command(dir, binary.string() + " --bogus").status == 2);

    const fs::path empty = dir / "empty.gguf";
    std::ofstream{empty};
    const auto empty_model = run_command(dir, binary.string() + " -m " + empty.string() + " image.png");
    CHECK(empty_model.status == 1);
    CHECK(empty_model.err.find("empty file") != std::string::npos);
}

}  // namespace test_cli_caption
