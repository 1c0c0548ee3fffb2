// The f32 kernels of every CPU level (matrix product with epilogue in both summation orders,
// chain tiles and packing, attention scores, softmax, weighted sum) against their scalar
// references, bit for bit, and the AMX bf16 product against double precision. Also the properties the model
// relies on: results independent of the thread count and of the number of rows in a call.
// And the erf, GELU and exp approximations against libm.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "blip/core/dtype.hpp"
#include "blip/core/parallel.hpp"
#include "blip/kernels/attention.hpp"
#include "blip/kernels/gemm_bf16_amx.hpp"
#include "blip/kernels/gemm_f32.hpp"
#include "blip/kernels/simd_math.hpp"
#include "blip/quant/float16.hpp"
#include "blip/quant/quantize.hpp"

namespace test_f32_kernels {

namespace {

using blip::quant::CpuLevel;

std::vector<float> random_values(std::size_t count, std::uint32_t seed, float scale = 1.0f) {
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> distribution(-scale, scale);
    std::vector<float> values(count);
    for (auto& value : values) value = distribution(generator);
    return values;
}

std::vector<std::uint16_t> to_bf16(const std::vector<float>& values) {
    std::vector<std::uint16_t> halves(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) halves[i] = blip::quant::fp32_to_bf16(values[i]);
    return halves;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<CpuLevel> available_levels() {
    std::vector<CpuLevel> levels;
    for (CpuLevel level : blip::quant::kAllCpuLevels)
        if (blip::quant::cpu_level_available(level)) levels.push_back(level);
    return levels;
}

// Restores the default thread count when a test case ends.
struct ThreadCountGuard {
    ~ThreadCountGuard() { blip::set_num_threads(0); }
};

// A product with strided x and y, and an epilogue.
struct GemmCase {
    std::int64_t rows, out, in;
    std::int64_t x_stride, y_stride;
    std::vector<float> x, w, bias, residual;

    GemmCase(std::int64_t rows_, std::int64_t out_, std::int64_t in_)
        : rows(rows_), out(out_), in(in_), x_stride(in_ + 3), y_stride(out_ + 2) {
        x = random_values(static_cast<std::size_t>(rows * x_stride), 1);
        w = random_values(static_cast<std::size_t>(out * in), 2);
        bias = random_values(static_cast<std::size_t>(out), 3);
        residual = random_values(static_cast<std::size_t>(rows * y_stride), 4);
    }

    // Runs the product at `level`; the residual, when used, is the output itself.
    std::vector<float> run(CpuLevel level, bool gelu, bool use_residual,
                           blip::kernels::RowOrder order = blip::kernels::RowOrder::BatchInvariant) const {
        std::vector<float> y = use_residual ? residual : std::vector<float>(residual.size(), -7.0f);
        blip::kernels::Epilogue epilogue;
        epilogue.bias = bias.data();
        epilogue.gelu = gelu;
        if (use_residual) {
            epilogue.residual = y.data();
            epilogue.residual_stride = y_stride;
        }
        blip::kernels::gemm_f32_at_level(level, x.data(), rows, x_stride, w.data(), out, in, y.data(), y_stride,
                                         epilogue, order);
        return y;
    }

    // Returns the bias and GELU epilogue of the chain-order tests.
    blip::kernels::Epilogue gelu_epilogue() const {
        blip::kernels::Epilogue epilogue;
        epilogue.bias = bias.data();
        epilogue.gelu = true;
        return epilogue;
    }

    // Computes the chain-order product (RowOrder::Fastest) of x with `weights` in place of w and
    // gelu_epilogue(): the expected result of products that convert W to f32 while packing it.
    std::vector<float> chain_product(const std::vector<float>& weights) const {
        std::vector<float> y(residual.size(), -7.0f);
        blip::kernels::gemm_f32(x.data(), rows, x_stride, weights.data(), out, in, y.data(), y_stride,
                                gelu_epilogue(), blip::kernels::RowOrder::Fastest);
        return y;
    }

    // The chain-order product (one fused multiply-add chain per output in increasing k) with
    // the fused epilogue reference.
    std::vector<float> chain_reference(bool gelu, bool use_residual) const {
        std::vector<float> y = use_residual ? residual : std::vector<float>(residual.size(), -7.0f);
        for (std::int64_t r = 0; r < rows; ++r) {
            std::vector<float> sums(static_cast<std::size_t>(out));
            for (std::int64_t o = 0; o < out; ++o) {
                float sum = 0.0f;
                for (std::int64_t i = 0; i < in; ++i) sum = std::fma(x[r * x_stride + i], w[o * in + i], sum);
                sums[o] = sum;
            }
            float* row = y.data() + r * y_stride;
            blip::kernels::detail::epilogue_reference<true>(sums.data(), out, bias.data(), gelu,
                                                            use_residual ? row : nullptr, row);
        }
        return y;
    }

    // The same from the scalar reference of the arithmetic family.
    template <bool Fused>
    std::vector<float> reference(bool gelu, bool use_residual) const {
        std::vector<float> y = use_residual ? residual : std::vector<float>(residual.size(), -7.0f);
        for (std::int64_t r = 0; r < rows; ++r) {
            std::vector<float> dots(static_cast<std::size_t>(out));
            for (std::int64_t o = 0; o < out; ++o)
                dots[o] = blip::kernels::detail::dot_reference<Fused>(x.data() + r * x_stride, w.data() + o * in, in);
            float* row = y.data() + r * y_stride;
            blip::kernels::detail::epilogue_reference<Fused>(dots.data(), out, bias.data(), gelu,
                                                             use_residual ? row : nullptr, row);
        }
        return y;
    }

    double max_error_against_double(const std::vector<float>& y) const {
        double worst = 0;
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t o = 0; o < out; ++o) {
                double sum = bias[o];
                for (std::int64_t i = 0; i < in; ++i)
                    sum += static_cast<double>(x[r * x_stride + i]) * static_cast<double>(w[o * in + i]);
                const double error = std::abs(sum - y[r * y_stride + o]);
                if (!(error <= worst)) worst = error;
            }
        return worst;
    }
};

// Self-attention arguments: `queries` query rows and `keys` key and value rows, all `stride`
// floats apart, with the last query row seeing the last key when `causal`. The output has the
// same stride.
blip::kernels::AttentionArgs attention_args(const std::vector<float>& query, std::int64_t queries,
                                            const std::vector<float>& key, const std::vector<float>& value,
                                            std::int64_t keys, std::int64_t stride, std::int64_t heads,
                                            std::int64_t dim, bool causal, float* output) {
    blip::kernels::AttentionArgs args;
    args.query = query.data();
    args.query_rows = queries;
    args.query_stride = stride;
    args.key = key.data();
    args.value = value.data();
    args.key_rows = keys;
    args.key_stride = args.value_stride = stride;
    args.heads = heads;
    args.head_dim = dim;
    args.causal_offset = causal ? keys - queries : -1;
    args.output = output;
    args.output_stride = stride;
    return args;
}

}  // namespace

TEST_CASE("gemm_f32 levels equal their scalar reference") {
    // Shapes cover partial tiles, k tails of every length class, the streaming path (fewer than
    // 32 rows, several row tiles) and the packed path (32 or more rows of 1024 or more elements).
    const std::int64_t shapes[][3] = {{1, 1, 1},     {1, 7, 15},     {2, 13, 16},   {3, 5, 17},
                                      {5, 31, 48},   {7, 6, 33},     {17, 40, 100}, {9, 11, 1040},
                                      {26, 300, 64}, {33, 11, 1040}, {40, 30, 64}};
    for (const auto& shape : shapes) {
        const GemmCase problem(shape[0], shape[1], shape[2]);
        CAPTURE(problem.rows);
        CAPTURE(problem.out);
        CAPTURE(problem.in);
        for (bool gelu : {false, true})
            for (bool residual : {false, true}) {
                CAPTURE(gelu);
                CAPTURE(residual);
                const auto fused = problem.reference<true>(gelu, residual);
                const auto unfused = problem.reference<false>(gelu, residual);
                for (CpuLevel level : available_levels()) {
                    CAPTURE(blip::quant::cpu_level_name(level));
                    const auto y = problem.run(level, gelu, residual);
                    CHECK(bit_identical(y, blip::kernels::f32_level_is_fused(level) ? fused : unfused));
                }
            }
    }
}

TEST_CASE("f32 levels round as their arithmetic family") {
    // Lane 0 of a 17-element dot product adds a * a to c = -(1 + 2^-11) with a = 1 + 2^-12.
    // a * a = 1 + 2^-11 + 2^-24 rounds to 1 + 2^-11, so an unfused level gets exactly 0 and a
    // fused one 2^-24. An unfused level returns 2^-24 when the compiler contracts its products
    // into FMA instructions, as GCC 12 does on ARM64 without rounded_product().
    const float a = 1.0f + std::ldexp(1.0f, -12);
    const float c = -(1.0f + std::ldexp(1.0f, -11));
    const std::int64_t count = 17;
    std::vector<float> first(count, 0.0f), second(count, 0.0f);
    first[0] = 1.0f;
    second[0] = c;
    first[16] = a;
    second[16] = a;
    // The same pairs as two rows of length 2, for the kernels that sum over rows.
    const std::vector<float> column_first = {1.0f, a}, column_second = {c, a};
    const float fused_result = std::ldexp(1.0f, -24);

    for (CpuLevel level : available_levels()) {
        CAPTURE(blip::quant::cpu_level_name(level));
        const auto& kernels = blip::kernels::detail::f32_kernels_for_level(level);
        const float expected = kernels.fused ? fused_result : 0.0f;

        float y = -1.0f;
        blip::kernels::gemm_f32_at_level(level, first.data(), 1, count, second.data(), 1, count, &y, 1);
        CHECK(y == expected);

        float score = -1.0f;
        kernels.scores(first.data(), count, 1, second.data(), count, 1, count, &score, 1);
        CHECK(score == expected);

        float transposed_score = -1.0f;
        kernels.transposed_scores(column_first.data(), 2, 1, column_second.data(), 1, 1, 2, &transposed_score, 1);
        CHECK(transposed_score == expected);

        float weighted = -1.0f;
        kernels.weighted_sum(column_first.data(), 2, 1, 2, column_second.data(), 1, 1, &weighted, 1);
        CHECK(weighted == expected);
    }
}

TEST_CASE("gemm_f32 matches double reference") {
    const GemmCase problem(19, 70, 777);
    for (CpuLevel level : available_levels()) {
        CAPTURE(blip::quant::cpu_level_name(level));
        const auto y = problem.run(level, false, false);
        CHECK(problem.max_error_against_double(y) < 2e-5);
    }
}

TEST_CASE("gemm_f32 rows do not depend on the row count") {
    // Greedy decoding runs one row, beam search three, the vision encoder 577: each row must
    // give the same bits in every case, packed path included.
    const GemmCase problem(40, 50, 1100);
    for (CpuLevel level : available_levels()) {
        CAPTURE(blip::quant::cpu_level_name(level));
        const auto all = problem.run(level, true, false);
        for (std::int64_t first : {0, 3, 37})
            for (std::int64_t count : {1, 3, 8}) {
                if (first + count > problem.rows) continue;
                CAPTURE(first);
                CAPTURE(count);
                std::vector<float> part(static_cast<std::size_t>(count * problem.y_stride));
                blip::kernels::Epilogue epilogue;
                epilogue.bias = problem.bias.data();
                epilogue.gelu = true;
                blip::kernels::gemm_f32_at_level(level, problem.x.data() + first * problem.x_stride, count,
                                                 problem.x_stride, problem.w.data(), problem.out, problem.in,
                                                 part.data(), problem.y_stride, epilogue);
                bool same = true;
                for (std::int64_t r = 0; r < count; ++r)
                    for (std::int64_t o = 0; o < problem.out; ++o)
                        same = same && std::memcmp(&part[r * problem.y_stride + o],
                                                   &all[(first + r) * problem.y_stride + o], sizeof(float)) == 0;
                CHECK(same);
            }
    }
}

TEST_CASE("gemm_f32 is bit-identical for 1, 2 and 3 threads") {
    ThreadCountGuard guard;
    // Many rows (blocks handed out in turn) and few rows (one range of W per thread).
    for (std::int64_t rows : {100, 1, 3, 7}) {
        CAPTURE(rows);
        const GemmCase problem(rows, 703, 256);
        REQUIRE(problem.out * problem.in * blip::kernels::detail::kStreamWorkPerWeight >= 3 * blip::kMinWorkPerThread);
        std::vector<float> results[3];
        for (int threads : {1, 2, 3}) {
            blip::set_num_threads(threads);
            results[threads - 1] = problem.run(blip::quant::active_cpu_level(), true, true);
        }
        CHECK(bit_identical(results[0], results[1]));
        CHECK(bit_identical(results[0], results[2]));
        const bool fused = blip::kernels::f32_level_is_fused(blip::quant::active_cpu_level());
        CHECK(bit_identical(results[0], fused ? problem.reference<true>(true, true)
                                              : problem.reference<false>(true, true)));
    }
}

TEST_CASE("chain tiles and packing equal their references") {
    namespace detail = blip::kernels::detail;
    for (CpuLevel level : available_levels()) {
        const auto& kernels = detail::f32_kernels_for_level(level);
        if (kernels.chain_rows == 0) continue;
        CAPTURE(blip::quant::cpu_level_name(level));
        const int mr = kernels.chain_rows;
        const int nr = kernels.chain_cols;
        for (std::int64_t count : {1, 15, 16, 17, 256}) {
            CAPTURE(count);
            const auto x = random_values(static_cast<std::size_t>(count * mr), 11);
            const auto w = random_values(static_cast<std::size_t>(count * nr), 12);
            for (int rows = 1; rows <= mr; ++rows)
                for (bool accumulate : {false, true}) {
                    CAPTURE(rows);
                    CAPTURE(accumulate);
                    const std::int64_t stride = nr + 5;
                    const auto start = random_values(static_cast<std::size_t>(mr * stride), 13);
                    std::vector<float> expected = start, y = start;
                    detail::chain_tile_reference<true>(x.data(), mr, rows, w.data(), nr, count, expected.data(), stride,
                                                       accumulate);
                    kernels.chain[rows - 1](x.data(), w.data(), count, y.data(), stride, accumulate);
                    CHECK(bit_identical(y, expected));
                }
        }
        for (int width : {mr, nr})
            for (std::int64_t rows : {std::int64_t{1}, std::int64_t{width - 1}, std::int64_t{width}})
                for (std::int64_t count : {1, 16, 33, 770}) {
                    CAPTURE(width);
                    CAPTURE(rows);
                    CAPTURE(count);
                    const std::int64_t stride = count + 7;
                    const auto source = random_values(static_cast<std::size_t>(rows * stride), 14);
                    std::vector<float> expected(static_cast<std::size_t>(count * width), -1.0f);
                    std::vector<float> packed(expected.size(), -2.0f);
                    detail::chain_pack_reference(source.data(), rows, stride, count, width, expected.data());
                    kernels.chain_pack(source.data(), rows, stride, count, width, packed.data());
                    CHECK(bit_identical(packed, expected));
                }
    }
}

TEST_CASE("gemm_f32 chain order equals FMA chains") {
    // Products of many rows with RowOrder::Fastest: chain order at the levels that have chain
    // tiles (partial row and column tiles, k blocks with a tail), the dot-product order at
    // the others.
    const std::int64_t shapes[][3] = {{32, 1, 1}, {45, 70, 777}, {100, 129, 300}, {33, 32, 16}};
    for (const auto& shape : shapes) {
        const GemmCase problem(shape[0], shape[1], shape[2]);
        CAPTURE(problem.rows);
        CAPTURE(problem.out);
        CAPTURE(problem.in);
        for (bool gelu : {false, true})
            for (bool residual : {false, true}) {
                CAPTURE(gelu);
                CAPTURE(residual);
                const auto chain = problem.chain_reference(gelu, residual);
                for (CpuLevel level : available_levels()) {
                    CAPTURE(blip::quant::cpu_level_name(level));
                    const auto y = problem.run(level, gelu, residual, blip::kernels::RowOrder::Fastest);
                    if (blip::kernels::detail::f32_kernels_for_level(level).chain_rows > 0)
                        CHECK(bit_identical(y, chain));
                    else
                        CHECK(bit_identical(y, problem.run(level, gelu, residual)));
                }
            }
    }
}

TEST_CASE("gemm_f32 chain order ignores the thread count") {
    ThreadCountGuard guard;
    const GemmCase problem(200, 300, 256);
    REQUIRE(problem.rows * problem.out * problem.in >= 3 * blip::kMinWorkPerThread);
    std::vector<float> results[3];
    for (int threads : {1, 2, 3}) {
        blip::set_num_threads(threads);
        results[threads - 1] =
            problem.run(blip::quant::active_cpu_level(), true, true, blip::kernels::RowOrder::Fastest);
    }
    CHECK(bit_identical(results[0], results[1]));
    CHECK(bit_identical(results[0], results[2]));
}

TEST_CASE("gemm_f32_halves equals widened gemm_f32") {
    const GemmCase problem(40, 45, 300);
    if (!blip::kernels::gemm_f32_halves_supported(problem.rows, problem.in)) return;
    const auto widen_f16 = [](const std::uint16_t* halves, std::int64_t count, float* out) {
        for (std::int64_t i = 0; i < count; ++i) out[i] = blip::quant::fp16_to_fp32(halves[i]);
    };
    const auto widen_bf16 = [](const std::uint16_t* halves, std::int64_t count, float* out) {
        for (std::int64_t i = 0; i < count; ++i) out[i] = blip::quant::bf16_to_fp32(halves[i]);
    };
    for (bool bf16 : {false, true}) {
        CAPTURE(bf16);
        std::vector<std::uint16_t> halves(problem.w.size());
        std::vector<float> widened(problem.w.size());
        for (std::size_t i = 0; i < halves.size(); ++i) {
            halves[i] = bf16 ? blip::quant::fp32_to_bf16(problem.w[i]) : blip::quant::fp32_to_fp16(problem.w[i]);
            widened[i] = bf16 ? blip::quant::bf16_to_fp32(halves[i]) : blip::quant::fp16_to_fp32(halves[i]);
        }
        std::vector<float> y(problem.residual.size(), -7.0f);
        blip::kernels::gemm_f32_halves(problem.x.data(), problem.rows, problem.x_stride, halves.data(),
                                       bf16 ? +widen_bf16 : +widen_f16, problem.out, problem.in, y.data(),
                                       problem.y_stride, problem.gelu_epilogue());
        CHECK(bit_identical(y, problem.chain_product(widened)));
    }
}

TEST_CASE("gemm_f32_dequantized equals dequantized gemm_f32") {
    // 512 elements per row: whole blocks of every block type, with 256-element super-blocks.
    // 300 outputs make three tasks, which 2 and 3 threads dequantize at the same time.
    const GemmCase problem(40, 300, 512);
    if (!blip::kernels::gemm_f32_halves_supported(problem.rows, problem.in)) {
        MESSAGE("the active level has no chain-order kernels; gemm_f32_dequantized not tested");
        return;
    }
    ThreadCountGuard guard;
    for (blip::DType type : {blip::DType::Q8_0, blip::DType::Q4_0, blip::DType::Q4_1, blip::DType::Q4_K,
                             blip::DType::Q5_K, blip::DType::Q6_K}) {
        for (int threads : {1, 2, 3}) {
            CAPTURE(blip::dtype_name(type));
            CAPTURE(threads);
            blip::set_num_threads(threads);
            const auto blocks = blip::quant::quantize_rows(type, problem.w.data(), problem.out, problem.in);
            std::vector<float> dequantized(problem.w.size());
            const std::size_t row_bytes = blip::quant::row_bytes(type, problem.in);
            for (std::int64_t row = 0; row < problem.out; ++row)
                blip::quant::dequantize_row(type, blocks.data() + row * row_bytes, dequantized.data() + row * problem.in,
                                            problem.in);
            std::vector<float> y(problem.residual.size(), -7.0f);
            blip::kernels::gemm_f32_dequantized(problem.x.data(), problem.rows, problem.x_stride, blocks.data(), type,
                                                problem.out, problem.in, y.data(), problem.y_stride,
                                                problem.gelu_epilogue());
            CHECK(bit_identical(y, problem.chain_product(dequantized)));
        }
    }
}

TEST_CASE("gemm_bf16_amx matches double reference") {
    // AMX sums in an unspecified order, so the check is against double precision: at most
    // 2^-20 of the sum of the absolute products (the worst case of 16 f32 roundings).
    const std::int64_t shapes[][3] = {{32, 1, 32}, {45, 70, 64}, {100, 129, 768}, {33, 40, 3072}};
    for (const auto& shape : shapes) {
        const GemmCase problem(shape[0], shape[1], shape[2]);
        CAPTURE(problem.rows);
        CAPTURE(problem.out);
        CAPTURE(problem.in);
        if (!blip::kernels::gemm_bf16_amx_supported(problem.rows, problem.in)) {
            MESSAGE("AMX bf16 tiles are not usable on this machine; skipped");
            return;
        }
        const std::vector<std::uint16_t> w = to_bf16(problem.w);
        std::vector<float> y = problem.residual;
        blip::kernels::Epilogue epilogue;
        epilogue.bias = problem.bias.data();
        epilogue.residual = y.data();
        epilogue.residual_stride = problem.y_stride;
        blip::kernels::gemm_bf16_amx(problem.x.data(), problem.rows, problem.x_stride, w.data(), problem.out,
                                     problem.in, y.data(), problem.y_stride, epilogue);
        int outside = 0;
        for (std::int64_t r = 0; r < problem.rows; ++r)
            for (std::int64_t o = 0; o < problem.out; ++o) {
                double sum = 0;
                double magnitude = 0;
                for (std::int64_t i = 0; i < problem.in; ++i) {
                    const double x = blip::quant::bf16_to_fp32(
                        blip::quant::fp32_to_bf16(problem.x[r * problem.x_stride + i]));
                    const double product = x * blip::quant::bf16_to_fp32(w[o * problem.in + i]);
                    sum += product;
                    magnitude += std::abs(product);
                }
                const double expected = problem.residual[r * problem.y_stride + o] + (sum + problem.bias[o]);
                if (!(std::abs(y[r * problem.y_stride + o] - expected) <= std::ldexp(magnitude, -20) + 1e-6))
                    ++outside;
            }
        CHECK(outside == 0);
        // The padding between rows of y stays untouched.
        for (std::int64_t r = 0; r < problem.rows; ++r)
            for (std::int64_t o = problem.out; o < problem.y_stride; ++o)
                CHECK(y[r * problem.y_stride + o] == problem.residual[r * problem.y_stride + o]);
    }
}

TEST_CASE("gemm_bf16_amx ignores the thread count") {
    ThreadCountGuard guard;
    const GemmCase problem(200, 300, 256);
    if (!blip::kernels::gemm_bf16_amx_supported(problem.rows, problem.in)) {
        MESSAGE("AMX bf16 tiles are not usable on this machine; skipped");
        return;
    }
    const std::vector<std::uint16_t> w = to_bf16(problem.w);
    std::vector<float> results[3];
    for (int threads : {1, 2, 3}) {
        blip::set_num_threads(threads);
        results[threads - 1].assign(problem.residual.size(), -7.0f);
        blip::kernels::Epilogue epilogue;
        epilogue.bias = problem.bias.data();
        epilogue.gelu = true;
        blip::kernels::gemm_bf16_amx(problem.x.data(), problem.rows, problem.x_stride, w.data(), problem.out,
                                     problem.in, results[threads - 1].data(), problem.y_stride, epilogue);
    }
    CHECK(bit_identical(results[0], results[1]));
    CHECK(bit_identical(results[0], results[2]));
}

TEST_CASE("gemm_f32_at_level rejects a missing level") {
    if (blip::quant::max_cpu_level() == CpuLevel::Avx512Vnni) return;  // every level exists here
    const std::vector<float> x(16, 1.0f), w(16, 1.0f);
    std::vector<float> y(1);
    CHECK_THROWS_AS(blip::kernels::gemm_f32_at_level(CpuLevel::Avx512Vnni, x.data(), 1, 16, w.data(), 1, 16, y.data(),
                                                     1),
                    blip::Error);
}

TEST_CASE("erf and gelu approximations match libm") {
    double worst_erf = 0, worst_gelu = 0;
    for (int i = -90000; i <= 90000; ++i) {
        const float z = static_cast<float>(i) * 1e-4f;
        for (bool fused : {false, true}) {
            const float erf = fused ? blip::kernels::detail::erf_reference<true>(z)
                                    : blip::kernels::detail::erf_reference<false>(z);
            worst_erf = std::max(worst_erf, std::abs(static_cast<double>(erf) - std::erf(static_cast<double>(z))));
            const float gelu = fused ? blip::kernels::detail::gelu_reference<true>(z)
                                     : blip::kernels::detail::gelu_reference<false>(z);
            const double exact = 0.5 * z * (1.0 + std::erf(static_cast<double>(z) / std::sqrt(2.0)));
            worst_gelu = std::max(worst_gelu, std::abs(gelu - exact));
        }
    }
    CHECK(worst_erf < 1.2e-7);
    CHECK(worst_gelu < 1e-6);
    CHECK(blip::kernels::detail::erf_reference<true>(100.0f) == 1.0f);
    CHECK(blip::kernels::detail::erf_reference<true>(-INFINITY) == -1.0f);
    CHECK(std::isnan(blip::kernels::detail::erf_reference<true>(NAN)));
    CHECK(blip::kernels::detail::gelu_reference<true>(-30.0f) == 0.0f);
}

TEST_CASE("exp approximation matches libm") {
    double worst_ulps = 0;
    for (int i = 0; i <= 200000; ++i) {
        const float x = -87.0f + static_cast<float>(i) * (87.0f + 88.0f) / 200000.0f;
        const double exact = std::exp(static_cast<double>(x));
        const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
        for (bool fused : {false, true}) {
            const float value = fused ? blip::kernels::detail::exp_reference<true>(x)
                                      : blip::kernels::detail::exp_reference<false>(x);
            worst_ulps = std::max(worst_ulps, std::abs(value - exact) / ulp);
        }
    }
    CHECK(worst_ulps <= 2.0);
    CHECK(blip::kernels::detail::exp_reference<true>(0.0f) == 1.0f);
    CHECK(blip::kernels::detail::exp_reference<true>(-10000.0f) == 0.0f);
    CHECK(blip::kernels::detail::exp_reference<true>(-INFINITY) == 0.0f);
    CHECK(std::isnan(blip::kernels::detail::exp_reference<true>(NAN)));
    // Results below FLT_MIN are rounded once, like libm's.
    CHECK(blip::kernels::detail::exp_reference<true>(-100.0f) == std::exp(-100.0f));
}

TEST_CASE("attention kernels of every level equal their scalar reference") {
    // At least the largest dim: the query rows below are key rows.
    const std::int64_t key_stride = 83;
    for (std::int64_t dim : {8, 12, 64, 80}) {
        for (std::int64_t keys : {1, 7, 16, 33, 577}) {
            CAPTURE(dim);
            CAPTURE(keys);
            const auto query = random_values(static_cast<std::size_t>(dim), 5, 2.0f);
            // At least 4 key rows, because up to 4 query rows below are key rows.
            const auto key =
                random_values(static_cast<std::size_t>(std::max<std::int64_t>(keys, 4) * key_stride), 6, 2.0f);
            auto bias = random_values(static_cast<std::size_t>(keys), 7, 3.0f);
            bias[0] = -10000.0f;
            const auto p = random_values(static_cast<std::size_t>(4 * keys), 8);
            const auto value = random_values(static_cast<std::size_t>(keys * key_stride), 9);
            for (CpuLevel level : available_levels()) {
                CAPTURE(blip::quant::cpu_level_name(level));
                const auto& kernels = blip::kernels::detail::f32_kernels_for_level(level);
                const bool fused = kernels.fused;

                for (int rows = 1; rows <= 4; ++rows) {
                    CAPTURE(rows);
                    // Query rows taken from the key rows, so the query stride is key_stride.
                    std::vector<float> many(static_cast<std::size_t>(rows * keys)), expected(many.size());
                    kernels.scores(key.data(), key_stride, rows, key.data(), key_stride, keys, dim, many.data(), keys);
                    if (fused)
                        blip::kernels::detail::scores_reference<true>(key.data(), key_stride, rows, key.data(),
                                                                      key_stride, keys, dim, expected.data(), keys);
                    else
                        blip::kernels::detail::scores_reference<false>(key.data(), key_stride, rows, key.data(),
                                                                       key_stride, keys, dim, expected.data(), keys);
                    CHECK(bit_identical(many, expected));
                }
                std::vector<float> scores(static_cast<std::size_t>(keys));
                kernels.scores(query.data(), dim, 1, key.data(), key_stride, keys, dim, scores.data(), keys);

                // Keys stored transposed: element d of key j at d * keys + j.
                std::vector<float> transposed(static_cast<std::size_t>(dim * keys));
                for (std::int64_t j = 0; j < keys; ++j)
                    for (std::int64_t d = 0; d < dim; ++d) transposed[d * keys + j] = key[j * key_stride + d];
                for (int rows = 1; rows <= 4; ++rows) {
                    CAPTURE(rows);
                    std::vector<float> many(static_cast<std::size_t>(rows * keys)), expected(many.size());
                    kernels.transposed_scores(key.data(), key_stride, rows, transposed.data(), keys, keys, dim,
                                              many.data(), keys);
                    if (fused)
                        blip::kernels::detail::transposed_scores_reference<true>(
                            key.data(), key_stride, rows, transposed.data(), keys, keys, dim, expected.data(), keys);
                    else
                        blip::kernels::detail::transposed_scores_reference<false>(
                            key.data(), key_stride, rows, transposed.data(), keys, keys, dim, expected.data(), keys);
                    CHECK(bit_identical(many, expected));
                }

                for (bool divide : {false, true})
                    for (bool with_bias : {false, true}) {
                        CAPTURE(divide);
                        CAPTURE(with_bias);
                        std::vector<float> row = scores, reference = scores;
                        const float* b = with_bias ? bias.data() : nullptr;
                        kernels.softmax(row.data(), keys, 0.125f, divide, b);
                        if (fused)
                            blip::kernels::detail::softmax_row_reference<true>(reference.data(), keys, 0.125f, divide, b);
                        else
                            blip::kernels::detail::softmax_row_reference<false>(reference.data(), keys, 0.125f, divide,
                                                                                b);
                        CHECK(bit_identical(row, reference));
                    }

                for (int rows = 1; rows <= 4; ++rows) {
                    CAPTURE(rows);
                    const std::int64_t out_stride = dim + 3;
                    std::vector<float> out(static_cast<std::size_t>(rows * out_stride), -1.0f), reference = out;
                    kernels.weighted_sum(p.data(), keys, rows, keys, value.data(), key_stride, dim, out.data(),
                                         out_stride);
                    if (fused)
                        blip::kernels::detail::weighted_sum_reference<true>(p.data(), keys, rows, keys, value.data(),
                                                                            key_stride, dim, reference.data(),
                                                                            out_stride);
                    else
                        blip::kernels::detail::weighted_sum_reference<false>(p.data(), keys, rows, keys, value.data(),
                                                                             key_stride, dim, reference.data(),
                                                                             out_stride);
                    CHECK(bit_identical(out, reference));
                }
            }
        }
    }
}

TEST_CASE("chain-tile attention keeps the chain order") {
    // With 16 or more query rows, levels with chain tiles compute scores and weighted sums
    // in them. Each score and each output must be the multiply-add chain of the transposed
    // scores and the weighted sum; a row's zero weights for keys it does not see may only
    // turn -0 into +0, so values are compared with ==.
    namespace detail = blip::kernels::detail;
    const auto& kernels = detail::active_f32_kernels();
    if (kernels.chain_rows == 0 || !kernels.fused) return;
    const std::int64_t heads = 2, dim = 40, queries = 50, keys = 70, stride = heads * dim + 3;
    REQUIRE(queries >= detail::kAttentionPackRows);
    const auto query = random_values(static_cast<std::size_t>(queries * stride), 31, 2.0f);
    const auto key = random_values(static_cast<std::size_t>(keys * stride), 32, 2.0f);
    const auto value = random_values(static_cast<std::size_t>(keys * stride), 33);
    const auto bias = random_values(static_cast<std::size_t>(keys), 34);
    for (bool causal : {false, true})
        for (auto scaling : {blip::kernels::ScoreScaling::DivideBySqrt,
                             blip::kernels::ScoreScaling::MultiplyByInverseSqrt}) {
            CAPTURE(causal);
            std::vector<float> out(static_cast<std::size_t>(queries * stride), -5.0f);
            blip::kernels::AttentionArgs args =
                attention_args(query, queries, key, value, keys, stride, heads, dim, causal, out.data());
            args.scaling = scaling;
            args.key_bias = bias.data();
            blip::kernels::attention(args);

            const bool divide = scaling == blip::kernels::ScoreScaling::DivideBySqrt;
            const float scale = divide ? static_cast<float>(std::sqrt(static_cast<double>(dim)))
                                       : static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
            int different = 0;
            for (std::int64_t h = 0; h < heads; ++h)
                for (std::int64_t i = 0; i < queries; ++i) {
                    const std::int64_t visible = blip::kernels::visible_keys(args, i);
                    std::vector<float> keys_t(static_cast<std::size_t>(dim * keys));
                    for (std::int64_t j = 0; j < keys; ++j)
                        for (std::int64_t d = 0; d < dim; ++d) keys_t[d * keys + j] = key[j * stride + h * dim + d];
                    std::vector<float> scores(static_cast<std::size_t>(keys));
                    detail::transposed_scores_reference<true>(query.data() + i * stride + h * dim, stride, 1,
                                                              keys_t.data(), keys, visible, dim, scores.data(), keys);
                    detail::softmax_row_reference<true>(scores.data(), visible, scale, divide, bias.data());
                    std::vector<float> expected(static_cast<std::size_t>(dim));
                    detail::weighted_sum_reference<true>(scores.data(), keys, 1, visible, value.data() + h * dim,
                                                         stride, dim, expected.data(), dim);
                    for (std::int64_t d = 0; d < dim; ++d)
                        if (!(out[i * stride + h * dim + d] == expected[d])) ++different;
                }
            CHECK(different == 0);
        }
}

TEST_CASE("attention rows do not depend on the other query rows") {
    // Each query row alone (as one decoding step computes it) against all rows in one call.
    // Calls with 16 or more query rows (the vision encoder) use transposed-key scores, which
    // round differently, so this holds below that.
    const std::int64_t heads = 3, dim = 64, queries = 15, keys = 40, stride = heads * dim;
    REQUIRE(queries < blip::kernels::detail::kAttentionPackRows);
    const auto query = random_values(static_cast<std::size_t>(queries * stride), 11, 2.0f);
    const auto key = random_values(static_cast<std::size_t>(keys * stride), 12, 2.0f);
    const auto value = random_values(static_cast<std::size_t>(keys * stride), 13);
    for (bool causal : {false, true}) {
        CAPTURE(causal);
        std::vector<float> all(static_cast<std::size_t>(queries * stride));
        const blip::kernels::AttentionArgs args =
            attention_args(query, queries, key, value, keys, stride, heads, dim, causal, all.data());
        blip::kernels::attention(args);
        bool same = true;
        for (std::int64_t i = 0; i < queries; ++i) {
            blip::kernels::AttentionArgs one = args;
            one.query = query.data() + i * stride;
            one.query_rows = 1;
            one.key_rows = causal ? keys - queries + i + 1 : keys;
            one.causal_offset = causal ? one.key_rows - 1 : -1;
            std::vector<float> row(static_cast<std::size_t>(stride));
            one.output = row.data();
            blip::kernels::attention(one);
            same = same && std::memcmp(row.data(), all.data() + i * stride, row.size() * sizeof(float)) == 0;
        }
        CHECK(same);
    }
}

namespace {

// `values` rounded to bfloat16, and the same values widened back to f32.
struct Bf16Values {
    std::vector<std::uint16_t> bits;
    std::vector<float> widened;
};

Bf16Values bf16_values(const std::vector<float>& values) {
    Bf16Values out;
    for (const float v : values) {
        out.bits.push_back(blip::quant::fp32_to_bf16(v));
        out.widened.push_back(blip::quant::bf16_to_fp32(out.bits.back()));
    }
    return out;
}

}  // namespace

TEST_CASE("bf16 attention kernels equal f32 on widened values") {
    const std::int64_t key_stride = 83;
    for (std::int64_t dim : {8, 12, 20, 64, 80}) {
        for (std::int64_t keys : {1, 7, 16, 33, 577}) {
            CAPTURE(dim);
            CAPTURE(keys);
            const auto query = random_values(static_cast<std::size_t>(4 * key_stride), 21, 2.0f);
            const Bf16Values key = bf16_values(random_values(static_cast<std::size_t>(keys * key_stride), 22, 2.0f));
            const Bf16Values value = bf16_values(random_values(static_cast<std::size_t>(keys * key_stride), 23));
            const auto p = random_values(static_cast<std::size_t>(4 * keys), 24);
            for (CpuLevel level : available_levels()) {
                CAPTURE(blip::quant::cpu_level_name(level));
                const auto& kernels = blip::kernels::detail::f32_kernels_for_level(level);
                for (int rows = 1; rows <= 4; ++rows) {
                    CAPTURE(rows);
                    std::vector<float> scores(static_cast<std::size_t>(rows * keys)), expected(scores.size());
                    kernels.scores_bf16(query.data(), key_stride, rows, key.bits.data(), key_stride, keys, dim,
                                        scores.data(), keys);
                    kernels.scores(query.data(), key_stride, rows, key.widened.data(), key_stride, keys, dim,
                                   expected.data(), keys);
                    CHECK(bit_identical(scores, expected));

                    const std::int64_t out_stride = dim + 3;
                    std::vector<float> out(static_cast<std::size_t>(rows * out_stride), -1.0f), reference = out;
                    kernels.weighted_sum_bf16(p.data(), keys, rows, keys, value.bits.data(), key_stride, dim,
                                              out.data(), out_stride);
                    kernels.weighted_sum(p.data(), keys, rows, keys, value.widened.data(), key_stride, dim,
                                         reference.data(), out_stride);
                    CHECK(bit_identical(out, reference));
                }
            }
        }
    }
}

TEST_CASE("head-major bf16 attention equals widened f32") {
    // Cross-attention as the text model runs it on a bfloat16 cache, with each head's keys and
    // values stored contiguously. With 20 query rows, attention() would pack f32 keys, so the
    // expected values come from attend() on the widened keys, one head at a time.
    const std::int64_t heads = 3, dim = 64, queries = 20, keys = 41, width = heads * dim;
    const auto query = random_values(static_cast<std::size_t>(queries * width), 31, 2.0f);
    const Bf16Values key = bf16_values(random_values(static_cast<std::size_t>(keys * width), 32, 2.0f));
    const Bf16Values value = bf16_values(random_values(static_cast<std::size_t>(keys * width), 33));
    std::vector<std::uint16_t> key_heads(key.bits.size()), value_heads(value.bits.size());
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t j = 0; j < keys; ++j)
            for (std::int64_t d = 0; d < dim; ++d) {
                key_heads[(h * keys + j) * dim + d] = key.bits[j * width + h * dim + d];
                value_heads[(h * keys + j) * dim + d] = value.bits[j * width + h * dim + d];
            }

    std::vector<float> expected(static_cast<std::size_t>(queries * width));
    const blip::kernels::AttentionArgs args =
        attention_args(query, queries, key.widened, value.widened, keys, width, heads, dim, false, expected.data());
    std::vector<float> scratch(static_cast<std::size_t>(blip::kernels::attention_scratch_floats(keys)));
    for (std::int64_t h = 0; h < heads; ++h) blip::kernels::attend(args, h, 0, queries, scratch.data());

    std::vector<float> out(expected.size(), -1.0f);
    blip::kernels::AttentionArgs half = args;
    half.key = half.value = nullptr;
    half.key_bf16 = key_heads.data();
    half.value_bf16 = value_heads.data();
    half.key_stride = half.value_stride = dim;
    half.kv_head_stride = keys * dim;
    half.output = out.data();
    blip::kernels::attention(half);
    CHECK(bit_identical(out, expected));

    blip::kernels::AttentionArgs mixed = half;
    mixed.value_bf16 = nullptr;
    mixed.value = value.widened.data();
    CHECK_THROWS_WITH_AS(blip::kernels::attention(mixed), "attention: key_bf16 and value_bf16 must be set together",
                         blip::Error);
}

}  // namespace test_f32_kernels
