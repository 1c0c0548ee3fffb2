// Building blocks shared by the vision and text models: nn.Linear, nn.LayerNorm and
// nn.Embedding over tensors of a GGUF file, which they read in place (no copy).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/kernels/layer_norm.hpp"
#include "blip/kernels/linear.hpp"
#include "blip/quant/float16.hpp"
#include "blip/quant/quantize.hpp"

namespace blip {

namespace detail {

// Returns the data of tensor `name` after checking its shape and that it is stored as f32,
// the only type this library reads for biases, norms and position embeddings.
inline const float* f32_tensor(const gguf::File& file, const std::string& name,
                               const std::vector<std::int64_t>& shape) {
    const gguf::TensorInfo& info = file.tensor(name, shape);
    if (info.type != DType::F32)
        throw Error(file.name() + ": tensor " + name + " is stored as " + std::string(dtype_name(info.type)) +
                    ", but biases, norms and position embeddings must be f32 (convert the model again)");
    return info.f32();
}

// y[i] += x[i] for `count` values.
inline void add_inplace(float* y, const float* x, std::int64_t count) {
    for (std::int64_t i = 0; i < count; ++i) y[i] += x[i];
}

// Writes `rows` rows of `heads` * `head_dim` floats head-major: element d of head h in row r
// goes to out[(h * capacity + r) * head_dim + d]. T = float copies the values, and
// T = std::uint16_t rounds them to bfloat16 with quant::fp32_to_bf16. Rows `rows` to
// `capacity` of each head are zero.
template <class T>
inline void split_heads(const float* x, std::int64_t rows, std::int64_t heads, std::int64_t head_dim,
                        std::int64_t capacity, T* out) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, std::uint16_t>, "f32 or bfloat16 bits");
    parallel_for(
        heads,
        [&](std::int64_t head, int) {
            T* to = out + head * capacity * head_dim;
            for (std::int64_t r = 0; r < rows; ++r) {
                const float* from = x + (r * heads + head) * head_dim;
                if constexpr (std::is_same_v<T, float>) {
                    std::copy_n(from, head_dim, to + r * head_dim);
                } else {
                    for (std::int64_t d = 0; d < head_dim; ++d) to[r * head_dim + d] = quant::fp32_to_bf16(from[d]);
                }
            }
            std::fill(to + rows * head_dim, to + capacity * head_dim, T{0});
        },
        threads_for_work(rows * heads * head_dim));
}

}  // namespace detail

// nn.Linear: `prefix`.weight [out_features, in_features] in any type that
// kernels::linear supports, and the f32 `prefix`.bias [out_features].
struct Linear {
    const gguf::TensorInfo* weight = nullptr;
    const float* bias = nullptr;
    std::int64_t out_features = 0;
    std::int64_t in_features = 0;
    // BatchInvariant where rows decoded together must give the bits each gives alone.
    kernels::RowOrder row_order = kernels::RowOrder::Fastest;

    void load(const gguf::File& file, const std::string& prefix, std::int64_t out, std::int64_t in) {
        load(file, prefix, out, in, {out, in});
    }

    // Loads a weight stored with another shape of out x in elements, such as a convolution
    // kernel [out, channels, height, width] applied to unfolded patches.
    void load(const gguf::File& file, const std::string& prefix, std::int64_t out, std::int64_t in,
              const std::vector<std::int64_t>& weight_shape) {
        weight = &file.tensor(prefix + ".weight", weight_shape);
        check_weight_type(file, *weight, in);
        bias = detail::f32_tensor(file, prefix + ".bias", {out});
        out_features = out;
        in_features = in;
    }

    // Uses `weight_tensor` (checked against [out, in]) and an optional f32 bias; for tied
    // weights such as the language model head, which reuses the word embeddings.
    void load_tied(const gguf::File& file, const gguf::TensorInfo& weight_tensor, const float* bias_data,
                   std::int64_t out, std::int64_t in) {
        if (weight_tensor.shape != std::vector<std::int64_t>{out, in})
            throw Error(file.name() + ": tensor " + weight_tensor.name + " has shape " +
                        gguf::shape_string(weight_tensor.shape) + ", expected " + gguf::shape_string({out, in}));
        check_weight_type(file, weight_tensor, in);
        weight = &weight_tensor;
        bias = bias_data;
        out_features = out;
        in_features = in;
    }

    // y[rows, out_features] = x[rows, in_features] W^T + b.
    void forward(const float* x, std::int64_t rows, float* y) const {
        kernels::linear(*weight, bias, out_features, in_features, x, rows, y, row_order);
    }

    // y = GELU(x W^T + b), with GELU fused into the product's last pass.
    void forward_gelu(const float* x, std::int64_t rows, float* y) const {
        kernels::Epilogue epilogue;
        epilogue.bias = bias;
        epilogue.gelu = true;
        kernels::linear(*weight, out_features, in_features, x, rows, y, epilogue, nullptr, row_order);
    }

    // y += x W^T + b (a residual connection), fused into the product's last pass. `scratch`
    // (rows * out_features floats) is used for weights other than f32.
    void forward_add(const float* x, std::int64_t rows, float* y, float* scratch) const {
        kernels::Epilogue epilogue;
        epilogue.bias = bias;
        epilogue.residual = y;
        epilogue.residual_stride = out_features;
        kernels::linear(*weight, out_features, in_features, x, rows, y, epilogue, scratch, row_order);
    }

private:
    static void check_weight_type(const gguf::File& file, const gguf::TensorInfo& tensor, std::int64_t in) {
        if (!kernels::linear_supports(tensor.type, in))
            throw Error(file.name() + ": " + tensor.name + ": weight type " + std::string(dtype_name(tensor.type)) +
                        " with rows of " + std::to_string(in) +
                        " elements is not supported (convert the model again with f32 or f16 weights)");
    }
};

// nn.LayerNorm over `width` values: f32 `prefix`.weight and `prefix`.bias.
struct LayerNorm {
    const float* weight = nullptr;
    const float* bias = nullptr;
    std::int64_t width = 0;
    float eps = 1e-5f;

    void load(const gguf::File& file, const std::string& prefix, std::int64_t size, float epsilon) {
        weight = detail::f32_tensor(file, prefix + ".weight", {size});
        bias = detail::f32_tensor(file, prefix + ".bias", {size});
        width = size;
        eps = epsilon;
    }

    // Normalizes `rows` rows of x into y, which may equal x.
    void forward(const float* x, std::int64_t rows, float* y) const {
        kernels::layer_norm(x, rows, width, weight, bias, eps, y);
    }
};

// nn.Embedding: a table `name` of [count, width] rows looked up by index.
struct Embedding {
    const gguf::TensorInfo* table = nullptr;
    std::int64_t count = 0;
    std::int64_t width = 0;
    std::size_t row_bytes = 0;  // bytes of one stored row

    void load(const gguf::File& file, const std::string& name, std::int64_t rows, std::int64_t size) {
        table = &file.tensor(name, {rows, size});
        if (!quant::row_length_supported(table->type, size))
            throw Error(file.name() + ": " + name + ": embedding type " + std::string(dtype_name(table->type)) +
                        " with rows of " + std::to_string(size) +
                        " elements is not supported (convert the model again with f32 or f16 weights)");
        row_bytes = quant::row_bytes(table->type, size);
        count = rows;
        width = size;
    }

    // Writes row `index` as f32 to `out`; `index` must already be checked against `count`.
    void lookup(std::int64_t index, float* out) const {
        const auto* row = static_cast<const std::uint8_t*>(table->data) + static_cast<std::size_t>(index) * row_bytes;
        if (table->type == DType::F32)
            std::memcpy(out, row, static_cast<std::size_t>(width) * sizeof(float));
        else
            quant::dequantize_row(table->type, row, out, width);
    }
};

}  // namespace blip
