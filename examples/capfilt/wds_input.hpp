// Image-text pairs from WebDataset tar shards, the layout img2dataset writes: the members
// of one sample share a key and differ in extension ("00042.jpg", "00042.txt",
// "00042.json"). As the webdataset library does, the key is the member name up to the first
// dot of its last path component, and consecutive members with the same key form a sample.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "files.hpp"
#include "tar.hpp"

namespace capfilt {

// One sample of a shard: indices into the shard's members.
struct WdsSample {
    std::string key;
    std::vector<std::size_t> members;
    std::optional<std::size_t> image;  // first member with an image extension
    std::optional<std::size_t> text;   // KEY.txt
    std::optional<std::size_t> json;   // KEY.json
};

struct WdsShard {
    fs::path path;
    TarListing listing;
    std::vector<WdsSample> samples;
};

// Splits a member name into the sample key and the extension (lower case, without the dot).
inline void split_wds_name(const std::string& name, std::string& key, std::string& extension) {
    const std::size_t slash = name.rfind('/');
    const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
    const std::size_t dot = name.find('.', base);
    if (dot == std::string::npos) {
        key = name;
        extension.clear();
        return;
    }
    key = name.substr(0, dot);
    extension = name.substr(dot + 1);
    std::transform(extension.begin(), extension.end(), extension.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
}

// Whether the last component of an extension names an image format that the library may
// decode. WebP and others are still treated as images, so that their samples are recorded as
// failed with the decoder's reason instead of silently losing their image.
inline bool is_image_extension(const std::string& extension) {
    const std::size_t dot = extension.rfind('.');
    const std::string last = dot == std::string::npos ? extension : extension.substr(dot + 1);
    static const char* const kImages[] = {"jpg", "jpeg", "png", "bmp", "gif", "tga", "ppm", "pgm", "pnm", "webp", "tif", "tiff"};
    for (const char* image : kImages)
        if (last == image) return true;
    return false;
}

inline WdsShard read_wds_shard(const fs::path& path) {
    WdsShard shard;
    shard.path = path;
    ReadOnlyFile file(path);
    shard.listing = list_tar(file);
    std::string key, extension;
    for (std::size_t i = 0; i < shard.listing.members.size(); ++i) {
        split_wds_name(shard.listing.members[i].name, key, extension);
        if (shard.samples.empty() || shard.samples.back().key != key) {
            shard.samples.emplace_back();
            shard.samples.back().key = key;
        }
        WdsSample& sample = shard.samples.back();
        sample.members.push_back(i);
        if (extension == "txt" && !sample.text) {
            sample.text = i;
        } else if (extension == "json" && !sample.json) {
            sample.json = i;
        } else if (is_image_extension(extension) && !sample.image) {
            sample.image = i;
        }
    }
    return shard;
}

// Maximum bytes of a text or JSON member read as a web text. Longer text members are cut and
// longer JSON members skipped, because the filter reads only the first few dozen tokens.
constexpr std::uint64_t kMaxWdsTextBytes = 1 << 20;

// The web text of a sample: KEY.txt (one trailing line break removed), else the
// `text_field` string of KEY.json, else its "caption" string, as img2dataset writes it.
inline std::optional<std::string> read_wds_text(const ReadOnlyFile& file, const WdsShard& shard,
                                                const WdsSample& sample, const std::string& text_field) {
    if (sample.text) {
        const TarMember& member = shard.listing.members[*sample.text];
        std::string text =
            file.read_string(member.data_offset, static_cast<std::size_t>(std::min(member.size, kMaxWdsTextBytes)));
        if (!text.empty() && text.back() == '\n') text.pop_back();
        if (!text.empty() && text.back() == '\r') text.pop_back();
        return text;
    }
    if (sample.json && shard.listing.members[*sample.json].size <= kMaxWdsTextBytes) {
        const TarMember& member = shard.listing.members[*sample.json];
        const std::string bytes = file.read_string(member.data_offset, static_cast<std::size_t>(member.size));
        const nlohmann::json object = nlohmann::json::parse(bytes, nullptr, false);
        if (object.is_object()) {
            for (const std::string& field : {text_field, std::string("caption")}) {
                if (field.empty()) continue;
                const auto found = object.find(field);
                if (found != object.end() && found->is_string()) return found->get<std::string>();
            }
        }
    }
    return std::nullopt;
}

}  // namespace capfilt
