// blip-caption as a user runs it: the tiny golden captioner on a golden image, JSON
// output, unreadable images among readable ones, and usage errors.
#include <sys/wait.h>

#include <convert/convert.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/golden.hpp"

namespace test_cli_caption {

namespace {

namespace fs = std::filesystem;

struct CommandResult {
    int status = -1;
    std::string out;
    std::string err;
};

CommandResult run_command(const fs::path& dir, const std::string& command_line) {
    const fs::path out = dir / "stdout";
    const fs::path err = dir / "stderr";
    const std::string command = command_line + " >" + out.string() + " 2>" + err.string();
    const int status = std::system(command.c_str());
    CommandResult result;
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = blip_test::read_text(out);
    result.err = blip_test::read_text(err);
    return result;
}

// Converts the tiny golden captioner once per test program.
fs::path tiny_caption_model(const fs::path& dir) {
    const fs::path output = dir / "tiny-caption.gguf";
    if (!fs::exists(output)) {
        blip::convert::ConvertOptions options;
        options.input_dir = (blip_test::golden_dir() / "models" / "tiny-caption").string();
        options.output_path = output.string();
        blip::convert::convert_folder(options);
    }
    return output;
}

}  // namespace

TEST_CASE("blip-caption prints golden caption") {
    BLIP_REQUIRE_GOLDEN();
    const fs::path binary = fs::path(BLIP_BINARY_DIR) / "examples" / "blip-caption";
    if (!fs::exists(binary)) {
        blip_test::skip_case("blip-caption is not built at " + binary.string());
        return;
    }
    const fs::path dir = blip_test::scratch_dir("cli-caption");
    const fs::path model = tiny_caption_model(dir);
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
    const fs::path binary = fs::path(BLIP_BINARY_DIR) / "examples" / "blip-caption";
    if (!fs::exists(binary)) {
        blip_test::skip_case("blip-caption is not built at " + binary.string());
        return;
    }
    const fs::path dir = blip_test::scratch_dir("cli-caption");
    const fs::path model = tiny_caption_model(dir);
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
    const fs::path binary = fs::path(BLIP_BINARY_DIR) / "examples" / "blip-caption";
    if (!fs::exists(binary)) {
        blip_test::skip_case("blip-caption is not built at " + binary.string());
        return;
    }
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
