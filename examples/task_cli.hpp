// Input helpers of blip-vqa, blip-match and blip-retrieve: lists of strings from a file and
// lists of images from a folder or a list file.
#pragma once

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <blip/core/error.hpp>
#include <blip/text/unicode.hpp>

namespace blip_cli {

// Default `expected` clauses of read_string_list and list_images, for callers that pass none.
inline const char* const kStringListExpected =
    "a list file must be a text file with one item per line or a JSON list of strings";
inline const char* const kImageListExpected =
    "a list of images must be a folder of images or a text file with one image path per line";

inline std::string read_text_file(const std::string& path) {
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        // The C++ streams do not report why, so the reason is the errno that the C library set, if any.
        const int error = errno;
        throw blip::Error("cannot open " + path + ": " +
                          (error != 0 ? std::string(std::strerror(error)) : "check that the file exists and is readable"));
    }
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw blip::Error("failed to read " + path);
    return buffer.str();
}

// Reads the list file `path` as UTF-8 text without its byte order mark. Rejects a folder and
// a file that is not UTF-8 text (a NUL byte, a UTF-16 byte order mark or invalid UTF-8). The
// errors name the file and end with `expected`, a clause that describes the file the option expects.
inline std::string read_list_text(const std::string& path, const std::string& expected) {
    std::error_code error;
    if (std::filesystem::is_directory(path, error)) throw blip::Error(path + " is a folder, but " + expected);

    std::string text = read_text_file(path);
    if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
    if (text.rfind("\xFF\xFE", 0) == 0 || text.rfind("\xFE\xFF", 0) == 0)
        throw blip::Error(path + " is UTF-16 text, but " + expected + ". Save the file as UTF-8");

    const std::size_t nul = text.find('\0');
    if (nul != std::string::npos)
        throw blip::Error(path + " is not a text file (it contains a NUL byte at byte " + std::to_string(nul + 1) +
                          "), but " + expected);
    const std::size_t invalid = blip::unicode::find_invalid_utf8(text);
    if (invalid != std::string::npos) {
        const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(invalid), '\n');
        throw blip::Error(path + " is not UTF-8 text (line " + std::to_string(line) + " is not valid UTF-8), but " +
                          expected + ". Save the file as UTF-8");
    }
    return text;
}

// Reads a list of strings: a JSON array of strings when the file starts with '[' (after
// whitespace), else one string per line. Lines keep their spaces, lose a final "\r", and
// blank lines are skipped. The file must be UTF-8 text (see read_list_text), and `expected`
// ends the errors about a file that is not.
inline std::vector<std::string> read_string_list(const std::string& path,
                                                 const std::string& expected = kStringListExpected) {
    const std::string text = read_list_text(path, expected);
    const auto first = std::find_if(text.begin(), text.end(), [](unsigned char c) { return !std::isspace(c); });
    std::vector<std::string> items;
    if (first != text.end() && *first == '[') {
        nlohmann::json list;
        try {
            list = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& error) {
            throw blip::Error(path + ": invalid JSON list: " + error.what());
        }
        for (std::size_t i = 0; i < list.size(); ++i) {
            if (!list[i].is_string())
                throw blip::Error(path + ": item " + std::to_string(i) + " of the JSON list is not a string");
            items.push_back(list[i].get<std::string>());
        }
        return items;
    }

    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const bool blank = std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
        if (!blank) items.push_back(line);
    }
    return items;
}

inline bool has_image_extension(const std::filesystem::path& path) {
    std::string extension = path.extension().string();
    std::transform(extension.begin(), extension.end(), extension.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    for (const char* known : {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".pnm", ".ppm", ".pgm", ".webp"})
        if (extension == known) return true;
    return false;
}

// Lists the images of `source`: the files of a folder whose extension names an image format
// (not recursive, sorted by name), or the lines of a list file. Relative paths in a list
// file are relative to the list file's folder. `expected` ends the errors about a list file
// that is not UTF-8 text.
inline std::vector<std::string> list_images(const std::string& source,
                                            const std::string& expected = kImageListExpected) {
    namespace fs = std::filesystem;
    std::error_code error;
    if (fs::is_directory(source, error)) {
        std::vector<std::string> images;
        for (const auto& entry : fs::directory_iterator(source, error))
            if (has_image_extension(entry.path()) && !entry.is_directory()) images.push_back(entry.path().string());
        if (error) throw blip::Error("cannot list folder " + source + ": " + error.message());
        std::sort(images.begin(), images.end());
        return images;
    }

    const fs::path base = fs::path(source).parent_path();
    std::vector<std::string> images;
    for (const std::string& line : read_string_list(source, expected)) {
        const fs::path path(line);
        images.push_back(path.is_absolute() ? path.string() : (base / path).string());
    }
    return images;
}

}  // namespace blip_cli
