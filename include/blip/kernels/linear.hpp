// Fully connected layer y = x W^T + b, the product behind every nn.Linear of the model, with
// optional GELU and residual add fused into its end (kernels::Epilogue). f32 weights run
// through gemm_f32 straight from the mapped file. Products of many rows with 16-bit weights,
// and with block-type weights on CPUs without VNNI, take gemm_f32's chain order on widened or
// dequantized W. Other 16-bit and quantized products go to blip::quant::gemm, followed by the
// same epilogue kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "blip/core/dtype.hpp"
#include "blip/core/error.hpp"
#include "blip/core/parallel.hpp"
#include "blip/gguf/reader.hpp"
#include "blip/kernels/gemm_bf16_amx.hpp"
#include "blip/kernels/gemm_f32.hpp"
#include "blip/quant/gemm.hpp"
#include "blip/quant/quantize.hpp"

namespace blip::kernels {

// Rows per task of the epilogue pass after quant::gemm. Any split gives the same results.
inline constexpr std::int64_t kEpilogueTileRows = 16;

// y[rows, out] = x[rows, in] * w[out, in]^T + bias[out], all f32 and row-major; `bias` may
// be null. `y` must not overlap `x`.
inline void linear_f32(const float* w, const float* bias, std::int64_t out_features, std::int64_t in_features,
                       const float* x, std::int64_t rows, float* y) {
    Epilogue epilogue;
    epilogue.bias = bias;
    gemm_f32(x, rows, in_features, w, out_features, in_features, y, out_features, epilogue);
}

// Whether linear() can multiply weights stored as `type` with rows of `in_features`
// elements (block types need whole blocks per row).
inline bool linear_supports(DType type, std::int64_t in_features) {
    return type == DType::F32 ? in_features > 0 : quant::row_length_supported(type, in_features);
}

// y[rows, out_features] = epilogue(x W^T) for a weight `weight` of shape [out_features,
// in_features] (any shape with that many elements, such as the 4-D patch convolution) stored
// in any supported type. The epilogue's residual may equal `y`. For weights other than f32,
// that case needs `scratch` (rows * out_features floats, not overlapping x or y) to store the
// product before the epilogue. `order` chooses the summation order of f32, f16 and bf16
// weights (see RowOrder), and of block-type weights at the Avx2 and Avx512 levels. Otherwise
// the block types give every row the same bits in any call.
inline void linear(const gguf::TensorInfo& weight, std::int64_t out_features, std::int64_t in_features,
                   const float* x, std::int64_t rows, float* y, const Epilogue& epilogue, float* scratch = nullptr,
                   RowOrder order = RowOrder::Fastest) {
    if (weight.numel() != out_features * in_features)
        throw Error("linear: weight " + weight.name + " of shape " + gguf::shape_string(weight.shape) +
                    " does not have " + std::to_string(out_features) + " x " + std::to_string(in_features) +
                    " elements");
    if (weight.data == nullptr) throw Error("linear: weight " + weight.name + " has no data");
    if (weight.type == DType::F32) {
        gemm_f32(x, rows, in_features, weight.f32(), out_features, in_features, y, out_features, epilogue, order);
        return;
    }
    if (!linear_supports(weight.type, in_features))
        throw Error(weight.name + ": weight type " + std::string(dtype_name(weight.type)) +
                    " with rows of " + std::to_string(in_features) +
                    " elements is not supported (store this tensor as f32 or f16)");
    if (epilogue.residual == y && scratch == nullptr)
        throw Error("linear: weight " + weight.name + " is " + std::string(dtype_name(weight.type)) +
                    " and the residual is the output, so a scratch buffer is needed");
    if (weight.type == DType::BF16 && order == RowOrder::Fastest && gemm_bf16_amx_supported(rows, in_features)) {
        // Many rows on a CPU with AMX: bf16 tile products, x rounded to bf16.
        gemm_bf16_amx(x, rows, in_features, static_cast<const std::uint16_t*>(weight.data), out_features,
                      in_features, y, out_features, epilogue);
        return;
    }
    if ((weight.type == DType::F16 || weight.type == DType::BF16) && order == RowOrder::Fastest &&
        gemm_f32_halves_supported(rows, in_features)) {
        // Many rows (the vision encoder): the f32 chain-order product, widening W as it packs it.
        const auto& widen = quant::detail::kernels_for_level(quant::active_cpu_level());
        gemm_f32_halves(x, rows, in_features, static_cast<const std::uint16_t*>(weight.data),
                        weight.type == DType::F16 ? widen.decode_f16 : widen.decode_bf16, out_features,
                        in_features, y, out_features, epilogue);
        return;
    }
    const quant::CpuLevel level = quant::active_cpu_level();
    if (quant::detail::weight_family(weight.type) != quant::detail::WeightFamily::Float &&
        order == RowOrder::Fastest &&
        level >= quant::CpuLevel::Avx2 && level < quant::CpuLevel::Avx512Vnni &&
        gemm_f32_halves_supported(rows, in_features)) {
        // Many rows of block-type weights on a CPU without VNNI, where 8-bit dot products are
        // slower than FMA: dequantized W in the f32 chain order. The q8_0 base vision encoder
        // took 1480 instead of 2556 ms on an AMD EPYC with AVX2 (1 thread).
        // NOTE: only q8_0 on that CPU was measured. The 4-bit and k-quant types, and CPUs with
        // AVX-512 but without VNNI, take this path unmeasured.
        gemm_f32_dequantized(x, rows, in_features, weight.data, weight.type, out_features, in_features, y,
                             out_features, epilogue);
        return;
    }
    float* product = epilogue.residual == y ? scratch : y;
    quant::gemm(weight.type, weight.data, out_features, in_features, x, rows, product);
    if (epilogue.bias == nullptr && !epilogue.gelu && epilogue.residual == nullptr && product == y) return;
    const detail::F32KernelTable& kernels = detail::active_f32_kernels();
    parallel_for(
        tile_count(rows, kEpilogueTileRows),
        [&](std::int64_t tile, int) {
            const std::int64_t end = std::min(rows, (tile + 1) * kEpilogueTileRows);
            for (std::int64_t row = tile * kEpilogueTileRows; row < end; ++row) {
                const float* residual =
                    epilogue.residual ? epilogue.residual + row * epilogue.residual_stride : nullptr;
                kernels.epilogue(product + row * out_features, out_features, epilogue.bias, epilogue.gelu, residual,
                                 y + row * out_features);
            }
        },
        threads_for_work(rows * out_features * (epilogue.gelu ? 8 : 1)));
}

// y = x W^T + b.
inline void linear(const gguf::TensorInfo& weight, const float* bias, std::int64_t out_features,
                   std::int64_t in_features, const float* x, std::int64_t rows, float* y,
                   RowOrder order = RowOrder::Fastest) {
    Epilogue epilogue;
    epilogue.bias = bias;
    linear(weight, out_features, in_features, x, rows, y, epilogue, nullptr, order);
}

}  // namespace blip::kernels
