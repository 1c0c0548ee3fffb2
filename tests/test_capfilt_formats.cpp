// blip-capfilt's input and output formats without models: JSON Lines and CSV/TSV records
// (RFC 4180 quoting, line numbers of malformed records, chunk offsets), the ustar reader
// and writer (checksums, numeric fields, long names, truncation, GNU tar's archives) and
// WebDataset sample grouping.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "examples/capfilt/files.hpp"
#include "examples/capfilt/list_input.hpp"
#include "examples/capfilt/tar.hpp"
#include "examples/capfilt/wds_input.hpp"
#include "support/golden.hpp"

namespace test_capfilt_formats {

namespace {

namespace fs = std::filesystem;

fs::path write_text(const std::string& name, const std::string& text) {
    const fs::path path = blip_test::scratch_dir("capfilt_formats") / name;
    std::ofstream out(path, std::ios::binary);
    out << text;
    return path;
}

std::vector<capfilt::ListEntry> read_all(const fs::path& path, capfilt::ListFormat format, std::uint64_t chunk_size = 2,
                                         capfilt::ListColumns columns = {}) {
    capfilt::ListInput input(path.string(), format, columns);
    input.scan(chunk_size);
    std::vector<capfilt::ListEntry> entries;
    for (std::uint64_t chunk = 0; chunk < input.chunk_count(); ++chunk)
        for (auto& entry : input.read_chunk(chunk)) entries.push_back(std::move(entry));
    CHECK(entries.size() == input.record_count());
    return entries;
}

// Writes a tar archive with `members` (name, data) through TarWriter.
fs::path write_tar(const std::string& name, const std::vector<std::pair<std::string, std::string>>& members) {
    const fs::path path = blip_test::scratch_dir("capfilt_formats") / name;
    capfilt::AtomicFile file(path);
    capfilt::TarWriter tar(file);
    for (const auto& [member, data] : members) tar.add(member, data);
    tar.finish();
    file.commit();
    return path;
}

std::string read_member(const fs::path& path, const capfilt::TarMember& member) {
    capfilt::ReadOnlyFile file(path);
    return file.read_string(member.data_offset, static_cast<std::size_t>(member.size));
}

bool have_gnu_tar() { return std::system("tar --version > /dev/null 2>&1") == 0; }

}  // namespace

TEST_CASE("jsonl records and malformed lines") {
    const fs::path path = write_text("pairs.jsonl",
                                     "\xEF\xBB\xBF{\"image\": \"a.jpg\", \"text\": \"one\", \"url\": \"u\"}\n"
                                     "\n"
                                     "{\"image\": \"b.jpg\", \"text\": null, \"id\": 17}\r\n"
                                     "{\"image\": \"c.jpg\", \"text\": \n"
                                     "[1, 2]\n"
                                     "{\"text\": \"no image\"}\n"
                                     "{\"image\": 5}\n"
                                     "{\"image\": \"d.jpg\", \"text\": 3}\n"
                                     "{\"image\": \"e.jpg\", \"text\": \"last, no line break\"}");
    const auto entries = read_all(path, capfilt::ListFormat::Jsonl);
    REQUIRE(entries.size() == 8);

    CHECK(entries[0].error.empty());
    CHECK(entries[0].id == "0");
    CHECK(entries[0].image == "a.jpg");
    CHECK(entries[0].text == std::optional<std::string>("one"));
    CHECK(entries[0].meta == nlohmann::ordered_json{{"url", "u"}});
    CHECK(entries[0].line == 1);

    CHECK(entries[1].error.empty());
    CHECK(entries[1].id == "17");
    CHECK(!entries[1].text.has_value());
    CHECK(entries[1].line == 3);
    CHECK(entries[1].index == 1);

    CHECK(entries[2].error.rfind("line 4: invalid JSON", 0) == 0);
    CHECK(entries[3].error.rfind("line 5: expected a JSON object", 0) == 0);
    CHECK(entries[4].error.rfind("line 6: no \"image\" field", 0) == 0);
    CHECK(entries[5].error.rfind("line 7: field \"image\" must be a string", 0) == 0);
    CHECK(entries[6].error.rfind("line 8: field \"text\" must be a string or null", 0) == 0);
    CHECK(entries[7].error.empty());
    CHECK(entries[7].text == std::optional<std::string>("last, no line break"));
    CHECK(entries[7].index == 7);
}

TEST_CASE("csv quoting follows RFC 4180") {
    const fs::path path = write_text("pairs.csv",
                                     "id,image,text,extra\r\n"
                                     "x1,a.jpg,plain,1\r\n"
                                     "x2,\"b,c.jpg\",\"a \"\"quoted\"\" text\",2\r\n"
                                     "x3,d.jpg,\"two\r\nlines\",3\n"
                                     "\n"
                                     "x4,e.jpg,say \"hi\",4\n"
                                     "x5,f.jpg,,\n"
                                     "x6,g.jpg,\"closed\"junk,6\n"
                                     "x7,h.jpg,too,many,fields\n"
                                     "x8,i.jpg,\"never closed,8\n"
                                     "x9,j.jpg,lost,9\n");
    const auto entries = read_all(path, capfilt::ListFormat::Csv, 3);
    REQUIRE(entries.size() == 8);

    CHECK(entries[0].id == "x1");
    CHECK(entries[0].image == "a.jpg");
    CHECK(entries[0].text == std::optional<std::string>("plain"));
    CHECK(entries[0].meta == nlohmann::ordered_json{{"extra", "1"}});
    CHECK(entries[0].line == 2);

    CHECK(entries[1].image == "b,c.jpg");
    CHECK(entries[1].text == std::optional<std::string>("a \"quoted\" text"));

    CHECK(entries[2].text == std::optional<std::string>("two\r\nlines"));
    CHECK(entries[2].line == 4);

    CHECK(entries[3].line == 7);  // after the record over two lines and a blank line
    CHECK(entries[3].text == std::optional<std::string>("say \"hi\""));

    CHECK(entries[4].error.empty());
    CHECK(entries[4].text == std::optional<std::string>(""));
    CHECK(entries[4].meta == nlohmann::ordered_json{{"extra", ""}});

    CHECK(entries[5].error.rfind("line 9: unexpected character 'j' after a closing double quote", 0) == 0);
    CHECK(entries[6].error == "line 10: 5 fields, but the header has 4 columns");
    // An unterminated quote takes the rest of the file, as RFC 4180 reads it.
    CHECK(entries[7].error == "line 11: quoted field has no closing double quote");
}

TEST_CASE("tsv and missing columns") {
    const fs::path tsv = write_text("pairs.tsv", "image\tcaption\nA.jpg\ta, b\n\"q\tq.jpg\"\tt\n");
    capfilt::ListColumns columns;
    columns.text = "caption";
    const auto entries = read_all(tsv, capfilt::ListFormat::Tsv, 1, columns);
    REQUIRE(entries.size() == 2);
    CHECK(entries[0].text == std::optional<std::string>("a, b"));
    CHECK(entries[1].image == "q\tq.jpg");

    try {
        capfilt::ListInput input(tsv.string(), capfilt::ListFormat::Tsv, capfilt::ListColumns{});
        FAIL("a missing text column must be rejected");
    } catch (const blip::Error& error) {
        CHECK(std::string(error.what()).find("no column \"text\" (columns: image, caption)") != std::string::npos);
    }

    capfilt::ListColumns no_text;
    no_text.text = "";
    const auto images_only = read_all(tsv, capfilt::ListFormat::Tsv, 1, no_text);
    REQUIRE(images_only.size() == 2);
    CHECK(!images_only[0].text.has_value());

    const fs::path empty = write_text("empty.csv", "");
    CHECK_THROWS_AS(capfilt::ListInput(empty.string(), capfilt::ListFormat::Csv, capfilt::ListColumns{}), blip::Error);
}

TEST_CASE("list chunks start at their records") {
    std::string text = "{\"image\": \"i0.jpg\"}\n";
    for (int i = 1; i < 10; ++i) text += "\n{\"image\": \"i" + std::to_string(i) + ".jpg\"}\n";
    const fs::path path = write_text("chunks.jsonl", text);
    capfilt::ListInput input(path.string(), capfilt::ListFormat::Jsonl, capfilt::ListColumns{});
    input.scan(4);
    CHECK(input.record_count() == 10);
    REQUIRE(input.chunk_count() == 3);
    const auto last = input.read_chunk(2);
    REQUIRE(last.size() == 2);
    CHECK(last[0].image == "i8.jpg");
    CHECK(last[0].index == 8);
    CHECK(last[0].line == 17);
    CHECK_THROWS_AS(input.read_chunk(3), blip::Error);
}

TEST_CASE("tar writer and reader round trip") {
    const std::string long_dir(120, 'd');
    const std::string long_name = long_dir + "/" + std::string(90, 'n') + ".txt";  // fits prefix + name
    const std::string longer_name = std::string(200, 'p') + ".jpg";               // needs a pax header
    std::string binary(1500, '\0');
    for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 7);
    const fs::path path = write_tar("round.tar", {{"a.txt", "hello"},
                                                  {"empty.txt", ""},
                                                  {"b.bin", binary},
                                                  {long_name, "long"},
                                                  {longer_name, "longer"}});
    CHECK(fs::file_size(path) % capfilt::kTarRecord == 0);

    const capfilt::ReadOnlyFile file(path);
    const capfilt::TarListing listing = capfilt::list_tar(file);
    CHECK(listing.error.empty());
    REQUIRE(listing.members.size() == 5);
    CHECK(listing.members[0].name == "a.txt");
    CHECK(read_member(path, listing.members[0]) == "hello");
    CHECK(listing.members[1].size == 0);
    CHECK(read_member(path, listing.members[2]) == binary);
    CHECK(listing.members[3].name == long_name);
    CHECK(read_member(path, listing.members[3]) == "long");
    CHECK(listing.members[4].name == longer_name);
    CHECK(read_member(path, listing.members[4]) == "longer");

    if (!have_gnu_tar()) return;
    const std::string command = "tar -tf '" + path.string() + "' > '" + path.string() + ".list'";
    REQUIRE(std::system(command.c_str()) == 0);
    const std::string names = blip_test::read_text(path.string() + ".list");
    CHECK(names == "a.txt\nempty.txt\nb.bin\n" + long_name + "\n" + longer_name + "\n");
}

TEST_CASE("tar reader rejects damaged headers") {
    const fs::path good = write_tar("good.tar", {{"x.txt", "abc"}, {"y.txt", std::string(700, 'y')}});
    const std::string bytes = blip_test::read_text(good);

    SUBCASE("checksum mismatch") {
        std::string damaged = bytes;
        damaged[512 + 512 + 3] ^= 1;  // a byte of y.txt's name
        const fs::path path = write_text("bad_checksum.tar", damaged);
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(path));
        CHECK(listing.members.size() == 1);
        CHECK(listing.error.find("tar header at byte 1024: checksum mismatch") == 0);
    }
    SUBCASE("invalid size digits") {
        std::string damaged = bytes;
        damaged[124] = '9';
        // Recompute the checksum so that only the size field is wrong.
        unsigned sum = 0;
        for (int i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(damaged[i]);
        char checksum[8];
        std::snprintf(checksum, sizeof checksum, "%06o", sum);
        std::memcpy(&damaged[148], checksum, 7);
        const fs::path path = write_text("bad_size.tar", damaged);
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(path));
        CHECK(listing.members.empty());
        CHECK(listing.error.find("size field holds '9', which is not an octal digit") != std::string::npos);
    }
    SUBCASE("truncated data") {
        const fs::path path = write_text("truncated.tar", bytes.substr(0, 512 + 512 + 512 + 100));
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(path));
        CHECK(listing.members.size() == 1);
        CHECK(listing.error.find("tar member \"y.txt\" at byte 1024 has 700 bytes of data") == 0);
    }
    SUBCASE("truncated header") {
        const fs::path path = write_text("truncated_header.tar", bytes.substr(0, 512 + 512 + 100));
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(path));
        CHECK(listing.members.size() == 1);
        CHECK(listing.error.find("ends inside a header at byte 1024") != std::string::npos);
    }
    SUBCASE("not a tar file") {
        const fs::path path = write_text("text.tar", std::string(600, 'a'));
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(path));
        CHECK(listing.members.empty());
        CHECK(!listing.error.empty());
    }
    SUBCASE("empty files") {
        CHECK(capfilt::list_tar(capfilt::ReadOnlyFile(write_text("zero.tar", ""))).members.empty());
        CHECK(capfilt::list_tar(capfilt::ReadOnlyFile(write_text("zero.tar", ""))).error.empty());
        const capfilt::TarListing blocks = capfilt::list_tar(capfilt::ReadOnlyFile(write_text("end.tar", std::string(10240, '\0'))));
        CHECK(blocks.members.empty());
        CHECK(blocks.error.empty());
    }
}

TEST_CASE("tar reader reads GNU tar archives") {
    if (!have_gnu_tar()) {
        MESSAGE("GNU tar not found; skipping its archives");
        return;
    }
    const fs::path folder = blip_test::scratch_dir("capfilt_formats") / "gnu";
    fs::remove_all(folder);
    const std::string long_name = std::string(150, 'k') + ".txt";
    fs::create_directories(folder / "sub");
    { std::ofstream(folder / "sub" / long_name) << "gnu long name"; }
    { std::ofstream(folder / "sub" / "s.txt") << "short"; }
    for (const std::string format : {"gnu", "pax", "ustar"}) {
        CAPTURE(format);
        const fs::path archive = folder.parent_path() / ("gnu_" + format + ".tar");
        const std::string command = "cd '" + folder.string() + "' && tar --format=" + format + " -cf '" + archive.string() +
                                    "' sub/s.txt 'sub/" + long_name + "' 2> /dev/null";
        if (std::system(command.c_str()) != 0) {
            CHECK(format == "ustar");  // ustar cannot store a 150-byte file name without a folder split
            continue;
        }
        const capfilt::TarListing listing = capfilt::list_tar(capfilt::ReadOnlyFile(archive));
        CHECK(listing.error.empty());
        REQUIRE(listing.members.size() == 2);
        CHECK(listing.members[0].name == "sub/s.txt");
        CHECK(read_member(archive, listing.members[0]) == "short");
        CHECK(listing.members[1].name == "sub/" + long_name);
        CHECK(read_member(archive, listing.members[1]) == "gnu long name");
    }
}

TEST_CASE("webdataset samples group by key") {
    std::string key, extension;
    capfilt::split_wds_name("dir.v1/000123.seg.JPG", key, extension);
    CHECK(key == "dir.v1/000123");
    CHECK(extension == "seg.jpg");

    const fs::path path = write_tar("samples.tar", {{"s/0001.jpg", "image bytes"},
                                                    {"s/0001.txt", "web text\n"},
                                                    {"s/0001.json", "{\"caption\": \"ignored\"}"},
                                                    {"s/0002.png", "png bytes"},
                                                    {"s/0002.json", "{\"caption\": \"from json\"}"},
                                                    {"s/0003.txt", "no image"},
                                                    {"s/0004.webp", "webp"}});
    const capfilt::WdsShard shard = capfilt::read_wds_shard(path);
    REQUIRE(shard.samples.size() == 4);
    const capfilt::ReadOnlyFile file(path);

    CHECK(shard.samples[0].key == "s/0001");
    CHECK(shard.samples[0].members.size() == 3);
    CHECK(shard.samples[0].image == std::optional<std::size_t>(0));
    CHECK(capfilt::read_wds_text(file, shard, shard.samples[0], "text") == std::optional<std::string>("web text"));

    CHECK(shard.samples[1].image == std::optional<std::size_t>(3));
    CHECK(capfilt::read_wds_text(file, shard, shard.samples[1], "text") == std::optional<std::string>("from json"));

    CHECK(!shard.samples[2].image.has_value());
    CHECK(shard.samples[3].image == std::optional<std::size_t>(6));
    CHECK(!capfilt::read_wds_text(file, shard, shard.samples[3], "text").has_value());
}

TEST_CASE("atomic files appear only on commit") {
    const fs::path path = blip_test::scratch_dir("capfilt_formats") / "atomic.txt";
    fs::remove(path);
    {
        capfilt::AtomicFile file(path);
        file.write("partial");
        CHECK(!fs::exists(path));
        CHECK(fs::exists(capfilt::temporary_path(path)));
    }
    CHECK(!fs::exists(path));
    CHECK(!fs::exists(capfilt::temporary_path(path)));
    capfilt::write_file_atomic(path, "whole");
    CHECK(blip_test::read_text(path) == "whole");

    capfilt::FileLock first(path.string() + ".lock", false);
    CHECK(first.held());
    // flock locks belong to an open file, so a second open in the same process conflicts too.
    capfilt::FileLock second(path.string() + ".lock", false);
    CHECK(!second.held());
}

}  // namespace test_capfilt_formats
