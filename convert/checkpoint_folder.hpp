// Picks the reader for a checkpoint file or a transformers model folder.
#pragma once

#include "checkpoint.hpp"
#include "pytorch_zip.hpp"
#include "safetensors.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

namespace blip::convert {

namespace detail {

// Returns whether `path` ends in .pth, .pt or .bin (in any case), the names of torch.save files.
inline bool has_pytorch_extension(const std::string& path) {
    std::string extension = std::filesystem::path(path).extension().string();
    std::transform(extension.begin(), extension.end(), extension.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return extension == ".pth" || extension == ".pt" || extension == ".bin";
}

}  // namespace detail

// Reads one checkpoint file. A name ending in ".index.json" is a shard index. Otherwise the
// content picks the reader: a zip archive is a torch.save file, and a GGUF file or an empty
// file is rejected. Any other file named *.pth, *.pt or *.bin is rejected as not a torch.save
// zip archive, and the rest are read as safetensors.
inline Checkpoint read_checkpoint_file(const std::string& path) {
    auto ends_with = [&](const std::string& suffix) {
        return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with(".index.json")) {
        return detail::read_sharded(path, [](const std::string& shard) {
            if (shard.size() >= 5 && shard.compare(shard.size() - 5, 5, ".json") == 0)
                throw Error("shard " + shard + " is itself an index; shards must be checkpoint files");
            return read_checkpoint_file(shard);
        });
    }
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(detail::cannot_open_message(path, errno));
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 0) throw Error(path + ": the file is empty, expected a checkpoint (safetensors or torch.save)");
    if (in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
        return read_pytorch_zip(path);
    if (in.gcount() == 4 && std::string(magic, 4) == "GGUF")
        throw Error(path + ": is already a GGUF model file. blip-convert reads transformers folders, safetensors and "
                    "torch.save checkpoints, and blip-convert --info shows what a GGUF file contains");
    if (detail::has_pytorch_extension(path)) {
        // A pickle PROTO opcode (0x80, then a protocol of 5 or lower) starts a legacy torch.save
        // file, which read_pytorch_zip rejects with its own message.
        const bool legacy = in.gcount() >= 2 && static_cast<unsigned char>(magic[0]) == 0x80 &&
                            static_cast<unsigned char>(magic[1]) <= 5;
        if (legacy) return read_pytorch_zip(path);
        throw Error(path + " is not a PyTorch checkpoint because it does not start with a zip archive header "
                    "(torch.save writes zip archives since PyTorch 1.6). Check that the file is complete and is "
                    "not a saved web page or a Git LFS pointer");
    }
    return read_safetensors(path);
}

// Reads the weights of a transformers model folder: model.safetensors, else
// model.safetensors.index.json with its shards, else pytorch_model.bin, else
// pytorch_model.bin.index.json with its shards.
inline Checkpoint read_checkpoint_folder(const std::string& hf_dir) {
    namespace fs = std::filesystem;
    const fs::path folder(hf_dir);
    if (!fs::is_directory(folder)) throw Error(hf_dir + " is not a folder");
    if (fs::is_regular_file(folder / "model.safetensors")) return read_safetensors((folder / "model.safetensors").string());
    if (fs::is_regular_file(folder / "model.safetensors.index.json"))
        return read_safetensors_sharded((folder / "model.safetensors.index.json").string());
    if (fs::is_regular_file(folder / "pytorch_model.bin")) return read_pytorch_zip((folder / "pytorch_model.bin").string());
    if (fs::is_regular_file(folder / "pytorch_model.bin.index.json")) {
        return detail::read_sharded((folder / "pytorch_model.bin.index.json").string(),
                                    [](const std::string& shard) { return read_pytorch_zip(shard); });
    }
    throw Error(hf_dir + " contains none of model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                "pytorch_model.bin.index.json; pass a transformers model folder");
}

}  // namespace blip::convert
