// Fully connected layer y = x W^T + b, the product behind every nn.Linear of the model.
// f32 weights run through Eigen straight from the mapped file; 16-bit and quantized weights
// go to blip::quant::gemm.
#pragma once

#include <cstdint>
#include <string>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/kernels/eigen.hpp"
#include "blip/quant/gemm.hpp"
#include "blip/quant/quantize.hpp"

namespace blip::kernels {

// Output features per task. Fixed, so that tile boundaries and therefore every sum's
// order do not depend on the thread count.
inline constexpr std::int64_t kLinearTile = 128;

// y[rows, out] = x[rows, in] * w[out, in]^T + bias[out], all f32 and row-major; `bias` may
// be null. `y` must not overlap `x`.
inline void linear_f32(const float* w, const float* bias, std::int64_t out_features, std::int64_t in_features,
                       const float* x, std::int64_t rows, float* y) {
    if (rows <= 0 || out_features <= 0) return;
    detail::keep_eigen_serial();
    const std::int64_t tiles = tile_count(out_features, kLinearTile);
    const int threads = threads_for_work(rows * out_features * in_features);
    parallel_for(tiles, [&](std::int64_t tile, int) {
        const std::int64_t first = tile * kLinearTile;
        const std::int64_t count = std::min(kLinearTile, out_features - first);
        detail::ConstMatrixMap weights(w + first * in_features, count, in_features, Eigen::OuterStride<>(in_features));
        if (rows == 1) {
            // One row: a matrix-vector product, one dot product per output feature.
            Eigen::Map<const Eigen::VectorXf> input(x, in_features);
            Eigen::Map<Eigen::VectorXf> output(y + first, count);
            output.noalias() = weights * input;
            if (bias) output += Eigen::Map<const Eigen::VectorXf>(bias + first, count);
            return;
        }
        detail::ConstMatrixMap input(x, rows, in_features, Eigen::OuterStride<>(in_features));
        detail::MatrixMap output(y + first, rows, count, Eigen::OuterStride<>(out_features));
        output.noalias() = input * weights.transpose();
        if (bias) {
            const Eigen::Map<const Eigen::RowVectorXf> b(bias + first, count);
            output.rowwise() += b;
        }
    }, threads);
}

// Whether linear() can multiply weights stored as `type` with rows of `in_features`
// elements (block types need whole blocks per row).
inline bool linear_supports(DType type, std::int64_t in_features) {
    return type == DType::F32 ? in_features > 0 : quant::row_length_supported(type, in_features);
}

// How linear() may compute a row of its output.
enum class RowOrder {
    // The fastest product for the row count. For f32 weights, Eigen's matrix-vector product
    // (1 row) and matrix product (several rows) round differently, and the matrix product's
    // edge blocks depend on the row count, so a row's bits depend on the rows around it.
    Fastest,
    // Every row gets the same bits whatever the other rows and their number, as batched
    // decoding needs to give each sequence the tokens it gets alone. f32 weights then run
    // through quant::gemm's dot-product kernels, like the other weight types always do.
    BatchInvariant,
};

// y = x W^T + b for a weight `weight` of shape [out_features, in_features] (any shape with
// that many elements, such as the 4-D patch convolution) stored in any supported type.
inline void linear(const gguf::TensorInfo& weight, const float* bias, std::int64_t out_features,
                   std::int64_t in_features, const float* x, std::int64_t rows, float* y,
                   RowOrder order = RowOrder::Fastest) {
    if (weight.numel() != out_features * in_features)
        throw Error("linear: weight " + weight.name + " of shape " + gguf::shape_string(weight.shape) +
                    " does not have " + std::to_string(out_features) + " x " + std::to_string(in_features) +
                    " elements");
    if (weight.data == nullptr) throw Error("linear: weight " + weight.name + " has no data");
    if (weight.type == DType::F32 && order == RowOrder::Fastest) {
        linear_f32(weight.f32(), bias, out_features, in_features, x, rows, y);
        return;
    }
    if (!linear_supports(weight.type, in_features))
        throw Error(weight.name + ": weight type " + std::string(dtype_name(weight.type)) +
                    " with rows of " + std::to_string(in_features) +
                    " elements is not supported (store this tensor as f32 or f16)");
    quant::gemm(weight.type, weight.data, out_features, in_features, x, rows, y);
    if (bias == nullptr) return;
    for (std::int64_t row = 0; row < rows; ++row) {
        float* output = y + row * out_features;
        for (std::int64_t o = 0; o < out_features; ++o) output[o] += bias[o];
    }
}

}  // namespace blip::kernels
