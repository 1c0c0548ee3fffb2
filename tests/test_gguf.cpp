#include <blip/gguf/reader.hpp>
#include <blip/gguf/writer.hpp>
#include <blip/model/metadata.hpp>

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "support/errors.hpp"
#include "support/golden.hpp"

namespace test_gguf {

namespace {

std::vector<std::uint8_t> float_bytes(const std::vector<float>& values) {
    std::vector<std::uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
}

blip::gguf::Writer small_writer() {
    blip::gguf::Writer writer;
    writer.set_string("general.architecture", "test");
    writer.set_u32("answer", 42);
    writer.set_f32("ratio", 0.5f);
    writer.set_string_array("words", {"a", "bc", ""});
    writer.add_tensor("matrix", blip::DType::F32, {2, 3}, float_bytes({1, 2, 3, 4, 5, 6}));
    writer.add_tensor("vector", blip::DType::F32, {5}, float_bytes({7, 8, 9, 10, 11}));
    return writer;
}

std::vector<std::uint8_t> small_file() { return small_writer().to_bytes(); }

}  // namespace

TEST_CASE("gguf round trip") {
    auto file = blip::gguf::File::from_buffer(small_file(), "small.gguf");
    CHECK(file->version() == 3);
    CHECK(file->get_int("answer") == 42);
    CHECK(file->get_float("ratio") == 0.5);
    CHECK(file->get_string_array("words") == std::vector<std::string>{"a", "bc", ""});
    const auto& matrix = file->tensor("matrix");
    CHECK(matrix.shape == std::vector<std::int64_t>{2, 3});
    CHECK(matrix.f32()[5] == 6.0f);
    CHECK(reinterpret_cast<std::uintptr_t>(matrix.data) % 32 == 0);
    CHECK(file->tensor("vector").f32()[4] == 11.0f);
    CHECK_THROWS_WITH_AS(file->tensor("missing"), "small.gguf: missing tensor missing", blip::Error);
    CHECK_THROWS_AS(file->tensor("matrix", {3, 2}), blip::Error);
}

TEST_CASE("gguf rejects every truncation") {
    // The last 12 bytes pad the 20-byte last tensor to the alignment; a file may omit them.
    const auto bytes = small_file();
    for (std::size_t size = 0; size < bytes.size() - 12; ++size) {
        std::vector<std::uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
        CHECK_THROWS_AS(blip::gguf::File::from_buffer(prefix, "cut.gguf"), blip::Error);
    }
}

TEST_CASE("gguf rejects bad magic and version") {
    auto bytes = small_file();
    bytes[0] = 'X';
    CHECK_THROWS_WITH_AS(blip::gguf::File::from_buffer(bytes, "x.gguf"),
                         doctest::Contains("not a GGUF file"), blip::Error);
    bytes = small_file();
    bytes[4] = 9;
    CHECK_THROWS_WITH_AS(blip::gguf::File::from_buffer(bytes, "x.gguf"),
                         doctest::Contains("unsupported GGUF version 9"), blip::Error);
}

TEST_CASE("gguf rejects corrupt lengths") {
    // Flip each byte of the header in turn: the reader must reject or accept, never crash.
    const auto bytes = small_file();
    for (std::size_t i = 0; i < 256 && i < bytes.size(); ++i) {
        auto corrupt = bytes;
        corrupt[i] ^= 0xff;
        try {
            blip::gguf::File::from_buffer(corrupt, "flip.gguf");
        } catch (const blip::Error&) {
        }
    }
}

TEST_CASE("config round trip") {
    blip::BlipConfig config;
    config.name = "unit";
    config.task = blip::Task::Itm;
    config.tokenizer.strip_accents = false;
    blip::gguf::Writer writer;
    blip::write_config(writer, config);
    auto file = blip::gguf::File::from_buffer(writer.to_bytes(), "config.gguf");
    const blip::BlipConfig back = blip::read_config(*file);
    CHECK(back.task == blip::Task::Itm);
    CHECK(back.vision.hidden_size == 768);
    CHECK(back.text.layer_norm_eps == 1e-12f);
    CHECK(back.tokens.enc == 30523);
    CHECK(back.tokenizer.strip_accents.has_value());
    CHECK(back.preprocess.image_std[2] == 0.27577711f);
}

TEST_CASE("writer follows links, rejects special files") {
    namespace fs = std::filesystem;
    const fs::path dir = blip_test::scratch_dir("gguf") / "outputs";
    fs::remove_all(dir);
    fs::create_directories(dir);
    const blip::gguf::Writer writer = small_writer();

    // A symbolic link stays a link, and the file it names receives the model.
    const fs::path target = dir / "target.gguf";
    const fs::path link = dir / "link.gguf";
    fs::create_symlink("target.gguf", link);
    writer.write_file(link.string());
    CHECK(fs::is_symlink(fs::symlink_status(link)));
    CHECK(blip::gguf::File::open(target.string())->get_int("answer") == 42);
    CHECK(blip::output_file_path(link) == target);

    // A pipe is neither replaced nor written to, and no temporary file stays behind.
    const fs::path pipe = dir / "pipe.gguf";
    REQUIRE(::mkfifo(pipe.c_str(), 0600) == 0);
    const std::string error = blip_test::error_of([&] { writer.write_file(pipe.string()); });
    CHECK(error == pipe.string() + ": is a device, pipe or socket, not a regular file; give a file path as the output");
    CHECK(fs::is_fifo(fs::status(pipe)));
    CHECK(!fs::exists(pipe.string() + ".tmp"));

    CHECK(blip_test::error_of([&] { writer.write_file(dir.string()); }).find("is a folder") != std::string::npos);
    CHECK(blip::output_file_path(dir / "new.gguf") == dir / "new.gguf");
}

}  // namespace test_gguf
