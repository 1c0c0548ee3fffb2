// Input helpers of blip-vqa, blip-match and blip-retrieve: lists of strings from a file and
// lists of images from a folder or a list file.
#pragma once

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <blip/core/error.hpp>

namespace blip_cli {

inline std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw blip::Error("cannot open " + path + ": check that the file exists and is readable");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw blip::Error("failed to read " + path);
    return buffer.str();
}

// Reads a list of strings: a JSON array of strings when the file starts with '[' (after
// whitespace), else one string per line. Lines keep their spaces, lose a final "\r", and
// blank lines are skipped.
inline std::vector<std::string> read_string_list(const std::string& path) {
    const std::string text = read_text_file(path);
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
    for (const char* known : {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".pnm", ".ppm", ".pgm"})
        if (extension == known) return true;
    return false;
}

// Lists the images of `source`: the files of a folder whose extension names an image format
// (not recursive, sorted by name), or the lines of a list file. Relative paths in a list
// file are relative to the list file's folder.
inline std::vector<std::string> list_images(const std::string& source) {
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
    for (const std::string& line : read_string_list(source)) {
        const fs::path path(line);
        images.push_back(path.is_absolute() ? path.string() : (base / path).string());
    }
    return images;
}

}  // namespace blip_cli
