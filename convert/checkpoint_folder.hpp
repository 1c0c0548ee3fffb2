// Picks the reader for a checkpoint file or a transformers model folder.
#pragma once

#include "checkpoint.hpp"
#include "pytorch_zip.hpp"
#include "safetensors.hpp"

#include <filesystem>
#include <string>

namespace blip::convert {

// Reads one checkpoint file, choosing the format by content: a zip archive is a
// torch.save file, a name ending in ".index.json" is a shard index, a GGUF file or an empty
// file is rejected, and anything else is read as safetensors.
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
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open " + path);
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 0) throw Error(path + ": the file is empty, expected a checkpoint (safetensors or torch.save)");
    if (in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
        return read_pytorch_zip(path);
    if (in.gcount() == 4 && std::string(magic, 4) == "GGUF")
        throw Error(path + ": is already a GGUF model file. blip-convert reads transformers folders, safetensors and "
                    "torch.save checkpoints, and blip-convert --info shows what a GGUF file contains");
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
