// The output path of an atomic write: the file itself, or the file that a symbolic link names,
// but never a device, pipe, socket or folder that the final rename would replace.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include "blip/core/error.hpp"

namespace blip {

// Links that output_file_path follows from one path before it gives up, as Linux's open().
inline constexpr int kMaxSymbolicLinks = 40;

// Returns the path that an atomic write of `path` should replace: `path` when nothing or a
// regular file is there, and the file a symbolic link points to (which may not exist yet) when
// `path` is a link. Throws blip::Error naming `path` when it is a folder, a device, a pipe or a
// socket, because renaming a new file over it would replace that special file.
inline std::filesystem::path output_file_path(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code error;
    fs::path target = path;
    // The link's target need not exist yet, so the links are read one at a time.
    for (int links = 0; fs::is_symlink(fs::symlink_status(target, error)); ++links) {
        const fs::path next = fs::read_symlink(target, error);
        if (error || links == kMaxSymbolicLinks)
            throw Error(path.string() + ": cannot resolve the symbolic link" +
                        (error ? ": " + error.message()
                               : " (more than " + std::to_string(kMaxSymbolicLinks) + " links in a row)") +
                        "; give the output file's own path");
        target = next.is_absolute() ? next : target.parent_path() / next;
    }
    const fs::file_status status = fs::status(target, error);
    if (!fs::exists(status) || fs::is_regular_file(status)) return target;
    const std::string kind = fs::is_directory(status) ? "a folder" : "a device, pipe or socket";
    throw Error(path.string() + ": is " + kind + ", not a regular file; give a file path as the output");
}

}  // namespace blip
