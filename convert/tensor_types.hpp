// Element types of the tensors that blip-convert writes: the type requested for each tensor
// group (--type, --vision, --text, --lm-head), the fallback for rows that are not a whole
// number of blocks, llama.cpp's general.file_type number, and the encoding itself.
#pragma once

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/core/parallel.hpp>
#include <blip/model/expected_tensors.hpp>
#include <blip/quant/quantize.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace blip::convert {

// Key of llama.cpp's file type (LLAMA_FTYPE_*), which GGUF tools show as the quantization.
inline constexpr const char* kFileTypeKey = "general.file_type";
// Key of ggml's quantization format version, written when a tensor has a block type.
inline constexpr const char* kQuantizationVersionKey = "general.quantization_version";
// ggml's GGML_QNT_VERSION: the block layouts of q4_0, q4_1 and q8_0 since May 2023.
inline constexpr std::uint32_t kQuantizationVersion = 2;

// Tensors that share a requested element type.
enum class TensorGroup {
    Vision,          // Linear weights of vision_model and vision_proj, and the patch convolution
    Text,            // Linear weights of the text transformers, text_proj and itm_head
    TokenEmbedding,  // word embeddings; the decoder's are also its output projection
    KeptF32,         // biases, norms, class and position embeddings
};

// The element type requested for each group. Groups never store other types than these,
// except where a row does not fit the type's blocks and for the patch convolution (see
// storage_type).
struct TensorTypes {
    DType vision = DType::F32;
    DType text = DType::F32;
    DType token_embedding = DType::F32;

    DType of(TensorGroup group) const {
        switch (group) {
            case TensorGroup::Vision: return vision;
            case TensorGroup::Text: return text;
            case TensorGroup::TokenEmbedding: return token_embedding;
            case TensorGroup::KeptF32: return DType::F32;
        }
        return DType::F32;
    }
    bool uniform() const { return vision == text && text == token_embedding; }
};

// Returns whether blip-convert can write Linear weights as `type`.
inline bool is_weight_type(DType type) { return type != DType::I32; }

// Returns whether `type` stores values in blocks with shared scales (q8_0, q4_0, ...).
inline bool is_block_type(DType type) { return dtype_traits(type).block_size > 1; }

inline TensorGroup tensor_group(const ExpectedTensor& tensor) {
    switch (tensor.role) {
        case TensorRole::TokenEmbedding: return TensorGroup::TokenEmbedding;
        case TensorRole::Other: return TensorGroup::KeptF32;
        case TensorRole::ConvolutionWeight:
        case TensorRole::LinearWeight: break;
    }
    const bool vision = tensor.name.rfind("vision_model.", 0) == 0 || tensor.name.rfind("vision_proj.", 0) == 0;
    return vision ? TensorGroup::Vision : TensorGroup::Text;
}

// Returns the type that stores rows of `row_length` values when `requested` does not fit:
// block types need rows that are a whole number of blocks. As llama.cpp does for
// incompatible tensors, q6_k goes to q8_0 and anything that still does not fit goes to f16.
// llama.cpp sends q4_k to q5_0 and q5_k to q5_1, which this library lacks, so q4_k takes
// q4_1 (also 4 bits with a minimum) and q5_k takes q8_0 (the next type at least as precise).
inline DType storage_type(DType requested, std::int64_t row_length) {
    if (quant::row_length_supported(requested, row_length)) return requested;
    DType next = DType::F16;
    switch (requested) {
        case DType::Q4_K: next = DType::Q4_1; break;
        case DType::Q5_K:
        case DType::Q6_K: next = DType::Q8_0; break;
        default: break;
    }
    return quant::row_length_supported(next, row_length) ? next : DType::F16;
}

// Returns the type that the patch convolution gets when its group requests `requested`:
// q8_0 in place of the block types with fewer bits, because its error reaches every image
// token before any normalization. Measured with blip-quant-sizes on the full-size base
// shapes, q4_0 patch weights in place of q8_0 ones lower the cosine of image_embeds to
// transformers' from 0.9992 to 0.9964, and q6_k ones from 0.99995 to 0.99986. The q8_0
// patch weights add 0.03% to a q4_0 file.
inline DType convolution_type(DType requested) {
    return is_block_type(requested) && requested != DType::Q8_0 ? DType::Q8_0 : requested;
}

// The type requested for `tensor`: its group's type, raised by convolution_type for the
// patch convolution.
inline DType requested_type(const ExpectedTensor& tensor, const TensorTypes& types) {
    const DType requested = types.of(tensor_group(tensor));
    return tensor.role == TensorRole::ConvolutionWeight ? convolution_type(requested) : requested;
}

// The type of `tensor` in a file converted with `types`: requested_type, or the fallback
// for rows that do not fit it. Its shape in that file is stored_shape(tensor, type).
inline DType storage_type(const ExpectedTensor& tensor, const TensorTypes& types) {
    const DType requested = requested_type(tensor, types);
    if (requested == DType::F32 || tensor.shape.empty()) return DType::F32;
    return storage_type(requested, weight_row_length(tensor));
}

// llama.cpp's LLAMA_FTYPE number for a file whose weights are all requested as `type`:
// ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q4_1 3, MOSTLY_Q8_0 7, MOSTLY_Q4_K_S 14,
// MOSTLY_Q5_K_S 16, MOSTLY_Q6_K 18, MOSTLY_BF16 32 (llama.h). The "_S" mixes are the ones
// that store every weight in the one k-quant type, as these files do.
inline std::optional<std::uint32_t> llama_file_type(DType type) {
    switch (type) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q4_1: return 3;
        case DType::Q8_0: return 7;
        case DType::Q4_K: return 14;
        case DType::Q5_K: return 16;
        case DType::Q6_K: return 18;
        case DType::BF16: return 32;
        case DType::I32: return std::nullopt;
    }
    return std::nullopt;
}

// Encodes `values` (a tensor of `shape`, row-major) as `type`. `name` is for messages.
// Values that f16 cannot hold, and non-finite values in a block type, are errors, because
// the file would silently hold infinities or garbage scales.
inline std::vector<std::uint8_t> encode_values(const std::string& name, const std::vector<float>& values,
                                               const std::vector<std::int64_t>& shape, DType type) {
    const std::int64_t cols = shape.empty() ? 1 : shape.back();
    const std::int64_t rows = cols == 0 ? 0 : static_cast<std::int64_t>(values.size()) / cols;
    if (type == DType::F16) {
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (std::isfinite(values[i]) && std::fabs(values[i]) >= 65520.0f)
                throw Error("tensor " + name + ": value " + std::to_string(values[i]) + " at index " +
                            std::to_string(i) + " exceeds the f16 range (65504); convert with --type f32 or bf16");
        }
    } else if (is_block_type(type)) {
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (!std::isfinite(values[i]))
                throw Error("tensor " + name + ": value at index " + std::to_string(i) + " is " +
                            std::to_string(values[i]) + ", which " + std::string(dtype_name(type)) +
                            " cannot store; the checkpoint is damaged, or convert with --type f32");
        }
    }
    if (type == DType::F32 || values.empty()) {
        std::vector<std::uint8_t> bytes(values.size() * sizeof(float));
        if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
        return bytes;
    }

    // Rows are quantized independently, so chunks of rows can run on several threads and
    // give the same bytes as one pass.
    constexpr std::int64_t kRowsPerChunk = 64;
    const std::size_t stride = quant::row_bytes(type, cols);
    std::vector<std::uint8_t> bytes(stride * static_cast<std::size_t>(rows));
    std::atomic<bool> failed{false};
    const int threads = threads_for_work(static_cast<std::int64_t>(values.size()) * 16);
    parallel_for(tile_count(rows, kRowsPerChunk), [&](std::int64_t chunk, int) {
        const std::int64_t first = chunk * kRowsPerChunk;
        const std::int64_t count = std::min(kRowsPerChunk, rows - first);
        try {
            const std::vector<std::uint8_t> part = quant::quantize_rows(type, values.data() + first * cols, count, cols);
            std::memcpy(bytes.data() + static_cast<std::size_t>(first) * stride, part.data(), part.size());
        } catch (...) {  // an exception must not leave an OpenMP region
            failed = true;
        }
    }, threads);
    if (failed) throw Error("tensor " + name + ": quantizing to " + std::string(dtype_name(type)) + " failed");
    return bytes;
}

}  // namespace blip::convert
