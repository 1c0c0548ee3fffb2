// Reader for safetensors files: an 8-byte little-endian header length, a JSON header
// that maps each tensor name to its dtype, shape and byte range, then the data. The
// file is memory-mapped and tensors point into it.
#pragma once

#include "checkpoint.hpp"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace blip::convert {

namespace detail {

// The safetensors library rejects headers larger than this (100 MB). We check it before
// parsing, so that a corrupt length cannot make the parser allocate gigabytes.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

inline SourceDType parse_safetensors_dtype(const std::string& dtype, const std::string& where) {
    if (dtype == "F32") return SourceDType::F32;
    if (dtype == "F16") return SourceDType::F16;
    if (dtype == "BF16") return SourceDType::BF16;
    if (dtype == "I64") return SourceDType::I64;
    if (dtype == "I32") return SourceDType::I32;
    if (dtype == "U8") return SourceDType::U8;
    if (dtype == "BOOL") return SourceDType::Bool;
    throw Error(where + ": unsupported dtype " + dtype +
                "; supported are F32, F16, BF16, I64, I32, U8 and BOOL");
}

inline std::uint64_t json_unsigned(const nlohmann::ordered_json& value, const std::string& where) {
    if (!value.is_number_unsigned()) {
        if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return value.get<std::uint64_t>();
        throw Error(where + " must be a non-negative integer");
    }
    return value.get<std::uint64_t>();
}

}  // namespace detail

// Reads one .safetensors file. Checks the header length, every tensor's dtype, shape and
// data_offsets against each other and against the file size, and that no two tensors'
// byte ranges overlap. `__metadata__` is ignored. Tensors keep the header's order.
inline Checkpoint read_safetensors(const std::string& path) {
    detail::require_little_endian_host();
    auto file = detail::map_file(path);
    const std::uint8_t* bytes = file->data();
    const std::uint64_t file_size = file->size();

    if (file_size == 0) throw Error(path + ": the file is empty, not a safetensors file");
    if (file_size < 8)
        throw Error(path + ": " + std::to_string(file_size) +
                    " bytes is too short for a safetensors file (the header length alone takes 8)");
    const std::uint64_t header_size = detail::load_u64(bytes);
    if (header_size > detail::kMaxSafetensorsHeaderBytes)
        throw Error(path + ": header length " + std::to_string(header_size) +
                    " exceeds the 100 MB limit; the file is not safetensors or is corrupt");
    if (header_size > file_size - 8)
        throw Error(path + ": header length " + std::to_string(header_size) + " exceeds the file size " +
                    std::to_string(file_size) + "; the file is truncated or not safetensors");

    nlohmann::ordered_json header;
    try {
        header = nlohmann::ordered_json::parse(bytes + 8, bytes + 8 + header_size);
    } catch (const nlohmann::json::exception& e) {
        throw Error(path + ": the safetensors header is not valid JSON (" + e.what() +
                    "); the file is truncated or not safetensors");
    }
    if (!header.is_object()) throw Error(path + ": the safetensors header is not a JSON object");

    const std::uint8_t* data_start = bytes + 8 + header_size;
    const std::uint64_t data_size = file_size - 8 - header_size;

    Checkpoint checkpoint;
    checkpoint.source = path;
    checkpoint.keep_alive(file);

    struct Range {
        std::uint64_t begin, end;
        std::size_t tensor;  // index into checkpoint.tensors()
    };
    std::vector<Range> ranges;

    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") continue;
        const std::string where = path + ": tensor " + name;
        if (!entry.is_object()) throw Error(where + ": header entry is not an object");
        if (!entry.contains("dtype") || !entry["dtype"].is_string()) throw Error(where + ": missing dtype");
        if (!entry.contains("shape") || !entry["shape"].is_array()) throw Error(where + ": missing shape");
        if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2)
            throw Error(where + ": data_offsets must be a list of two integers");

        SourceTensor tensor;
        tensor.name = name;
        tensor.dtype = detail::parse_safetensors_dtype(entry["dtype"].get<std::string>(), where);
        for (const auto& dim : entry["shape"]) {
            const std::uint64_t value = detail::json_unsigned(dim, where + ": shape dimension");
            if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                throw Error(where + ": shape dimension " + std::to_string(value) + " is too large");
            tensor.shape.push_back(static_cast<std::int64_t>(value));
        }
        const std::uint64_t begin = detail::json_unsigned(entry["data_offsets"][0], where + ": data_offsets[0]");
        const std::uint64_t end = detail::json_unsigned(entry["data_offsets"][1], where + ": data_offsets[1]");
        if (begin > end)
            throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] end before they begin");
        if (end > data_size)
            throw Error(where + ": data_offsets end at " + std::to_string(end) + " but the data section contains only " +
                        std::to_string(data_size) + " bytes; the file is truncated or corrupt");
        const std::uint64_t expected = detail::checked_mul(detail::element_count(tensor.shape, where),
                                                           source_dtype_size(tensor.dtype), where);
        if (end - begin != expected)
            throw Error(where + ": data_offsets span " + std::to_string(end - begin) + " bytes but shape " +
                        detail::format_shape(tensor.shape) + " of " + source_dtype_name(tensor.dtype) + " needs " +
                        std::to_string(expected));
        tensor.data = data_start + begin;
        tensor.nbytes = static_cast<std::size_t>(end - begin);
        checkpoint.add(std::move(tensor));
        ranges.push_back({begin, end, checkpoint.tensors().size() - 1});
    }

    // Overlapping byte ranges would let two tensors alias each other's data.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const Range* previous = nullptr;
    for (const Range& range : ranges) {
        if (range.begin == range.end) continue;
        if (previous && range.begin < previous->end)
            throw Error(path + ": the data of tensors " + checkpoint.tensors()[previous->tensor].name + " and " +
                        checkpoint.tensors()[range.tensor].name +
                        " overlap; the file is corrupt");
        previous = &range;
    }
    return checkpoint;
}

// Reads a sharded safetensors checkpoint from `model.safetensors.index.json`. The shards
// must be in the same folder.
inline Checkpoint read_safetensors_sharded(const std::string& index_json) {
    return detail::read_sharded(index_json, [](const std::string& shard) { return read_safetensors(shard); });
}

}  // namespace blip::convert
