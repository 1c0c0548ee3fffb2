// Kernels against naive double-precision references, and bit-identical results for any
// thread count.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/kernels/attention.hpp"
#include "blip/kernels/gelu.hpp"
#include "blip/kernels/layer_norm.hpp"
#include "blip/kernels/linear.hpp"
#include "blip/kernels/softmax.hpp"

namespace test_kernels {

namespace {

std::vector<float> random_values(std::size_t count, std::uint32_t seed, float scale = 1.0f) {
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> distribution(-scale, scale);
    std::vector<float> values(count);
    for (auto& value : values) value = distribution(generator);
    return values;
}

double max_abs_difference(const std::vector<float>& actual, const std::vector<double>& expected) {
    REQUIRE(actual.size() == expected.size());
    double worst = 0;
    for (std::size_t i = 0; i < actual.size(); ++i) {
        const double difference = std::abs(static_cast<double>(actual[i]) - expected[i]);
        if (!(difference <= worst)) worst = difference;  // NaN counts as the worst
    }
    return worst;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Restores the default thread count when a test case ends.
struct ThreadCountGuard {
    ~ThreadCountGuard() { blip::set_num_threads(0); }
};

blip::gguf::TensorInfo f32_weight(const std::vector<float>& data, std::int64_t out, std::int64_t in) {
    blip::gguf::TensorInfo info;
    info.name = "test.weight";
    info.type = blip::DType::F32;
    info.shape = {out, in};
    info.data = data.data();
    info.nbytes = data.size() * sizeof(float);
    return info;
}

std::vector<double> reference_linear(const std::vector<float>& w, const std::vector<float>& bias,
                                     std::int64_t out, std::int64_t in, const std::vector<float>& x,
                                     std::int64_t rows) {
    std::vector<double> y(static_cast<std::size_t>(rows * out));
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t o = 0; o < out; ++o) {
            double sum = bias[o];
            for (std::int64_t i = 0; i < in; ++i) sum += static_cast<double>(x[r * in + i]) * w[o * in + i];
            y[r * out + o] = sum;
        }
    return y;
}

// An attention problem with strided rows, a padding mask and a causal offset.
struct AttentionCase {
    std::int64_t heads, head_dim, query_rows, key_rows;
    std::int64_t stride;  // rows wider than heads * head_dim
    std::int64_t causal_offset = 3;
    std::vector<float> query, key, value, bias;

    AttentionCase(std::int64_t heads_ = 3, std::int64_t head_dim_ = 8, std::int64_t query_rows_ = 20,
                  std::int64_t key_rows_ = 23)
        : heads(heads_), head_dim(head_dim_), query_rows(query_rows_), key_rows(key_rows_),
          stride(heads_ * head_dim_ + 5) {
        query = random_values(static_cast<std::size_t>(query_rows * stride), 11, 2.0f);
        key = random_values(static_cast<std::size_t>(key_rows * stride), 12, 2.0f);
        value = random_values(static_cast<std::size_t>(key_rows * stride), 13);
        bias.assign(static_cast<std::size_t>(key_rows), 0.0f);
        bias[1] = -10000.0f;
        bias[7] = -10000.0f;
    }

    blip::kernels::AttentionArgs args(float* output, blip::kernels::ScoreScaling scaling) const {
        blip::kernels::AttentionArgs a;
        a.query = query.data();
        a.query_rows = query_rows;
        a.query_stride = stride;
        a.key = key.data();
        a.value = value.data();
        a.key_rows = key_rows;
        a.key_stride = stride;
        a.value_stride = stride;
        a.heads = heads;
        a.head_dim = head_dim;
        a.scaling = scaling;
        a.key_bias = bias.data();
        a.causal_offset = causal_offset;
        a.output = output;
        a.output_stride = heads * head_dim;
        return a;
    }

    std::vector<double> reference() const {
        std::vector<double> out(static_cast<std::size_t>(query_rows * heads * head_dim), 0.0);
        for (std::int64_t h = 0; h < heads; ++h)
            for (std::int64_t i = 0; i < query_rows; ++i) {
                const std::int64_t visible = std::min(key_rows, causal_offset + i + 1);
                std::vector<double> scores(static_cast<std::size_t>(visible));
                double max_score = -1e300;
                for (std::int64_t j = 0; j < visible; ++j) {
                    double dot = 0;
                    for (std::int64_t d = 0; d < head_dim; ++d)
                        dot += static_cast<double>(query[i * stride + h * head_dim + d]) *
                               key[j * stride + h * head_dim + d];
                    scores[j] = dot / std::sqrt(static_cast<double>(head_dim)) + bias[j];
                    max_score = std::max(max_score, scores[j]);
                }
                double sum = 0;
                for (auto& score : scores) sum += (score = std::exp(score - max_score));
                for (std::int64_t j = 0; j < visible; ++j)
                    for (std::int64_t d = 0; d < head_dim; ++d)
                        out[i * heads * head_dim + h * head_dim + d] +=
                            scores[j] / sum * value[j * stride + h * head_dim + d];
            }
        return out;
    }
};

}  // namespace

TEST_CASE("linear matches double reference") {
    const std::int64_t out = 300, in = 37;  // three tiles, the last one partial
    const auto w = random_values(static_cast<std::size_t>(out * in), 1);
    const auto bias = random_values(static_cast<std::size_t>(out), 2);
    const auto weight = f32_weight(w, out, in);
    for (std::int64_t rows : {1, 3, 17}) {
        CAPTURE(rows);
        const auto x = random_values(static_cast<std::size_t>(rows * in), 3);
        std::vector<float> y(static_cast<std::size_t>(rows * out));
        blip::kernels::linear(weight, bias.data(), out, in, x.data(), rows, y.data());
        CHECK(max_abs_difference(y, reference_linear(w, bias, out, in, x, rows)) < 1e-5);
    }
}

TEST_CASE("linear without bias") {
    const std::int64_t out = 5, in = 4, rows = 2;
    const auto w = random_values(static_cast<std::size_t>(out * in), 4);
    const auto x = random_values(static_cast<std::size_t>(rows * in), 5);
    std::vector<float> y(static_cast<std::size_t>(rows * out));
    blip::kernels::linear_f32(w.data(), nullptr, out, in, x.data(), rows, y.data());
    const std::vector<float> zero(static_cast<std::size_t>(out), 0.0f);
    CHECK(max_abs_difference(y, reference_linear(w, zero, out, in, x, rows)) < 1e-6);
}

TEST_CASE("linear rejects mismatched weights") {
    const std::vector<float> w(12, 1.0f);
    const std::vector<float> x(4, 1.0f);
    std::vector<float> y(3);
    auto weight = f32_weight(w, 3, 4);
    CHECK_THROWS_AS(blip::kernels::linear(weight, nullptr, 4, 4, x.data(), 1, y.data()), blip::Error);
}

TEST_CASE("linear with f16 weights adds bias") {
    const std::int64_t out = 5, in = 8, rows = 3;
    const auto w = random_values(static_cast<std::size_t>(out * in), 31);
    const auto bias = random_values(static_cast<std::size_t>(out), 32);
    const auto x = random_values(static_cast<std::size_t>(rows * in), 33);
    // The reference multiplies the f16-rounded weights.
    std::vector<float> rounded(w.size());
    std::vector<std::uint8_t> half(w.size() * 2);
    for (std::size_t i = 0; i < w.size(); ++i) {
        const std::uint16_t bits = blip::quant::fp32_to_fp16(w[i]);
        std::memcpy(half.data() + 2 * i, &bits, 2);
        rounded[i] = blip::quant::fp16_to_fp32(bits);
    }
    blip::gguf::TensorInfo weight;
    weight.name = "test.weight";
    weight.type = blip::DType::F16;
    weight.shape = {out, in};
    weight.data = half.data();
    weight.nbytes = half.size();
    REQUIRE(blip::kernels::linear_supports(blip::DType::F16, in));
    std::vector<float> y(static_cast<std::size_t>(rows * out));
    blip::kernels::linear(weight, bias.data(), out, in, x.data(), rows, y.data());
    CHECK(max_abs_difference(y, reference_linear(rounded, bias, out, in, x, rows)) < 1e-5);
}

TEST_CASE("linear rejects partial quantized blocks") {
    // q8_0 rows are whole blocks of 32 elements, so rows of 16 cannot be stored.
    CHECK_FALSE(blip::kernels::linear_supports(blip::DType::Q8_0, 16));
    CHECK(blip::kernels::linear_supports(blip::DType::Q8_0, 64));
    CHECK_FALSE(blip::kernels::linear_supports(blip::DType::I32, 64));
}

TEST_CASE("layer_norm matches double reference") {
    const std::int64_t rows = 19, width = 48;
    const auto x = random_values(static_cast<std::size_t>(rows * width), 6, 3.0f);
    const auto gamma = random_values(static_cast<std::size_t>(width), 7);
    const auto beta = random_values(static_cast<std::size_t>(width), 8);
    const float eps = 1e-5f;
    std::vector<float> y(x.size());
    blip::kernels::layer_norm(x.data(), rows, width, gamma.data(), beta.data(), eps, y.data());

    std::vector<double> expected(x.size());
    for (std::int64_t r = 0; r < rows; ++r) {
        double mean = 0, variance = 0;
        for (std::int64_t i = 0; i < width; ++i) mean += x[r * width + i];
        mean /= width;
        for (std::int64_t i = 0; i < width; ++i) variance += std::pow(x[r * width + i] - mean, 2);
        variance /= width;
        for (std::int64_t i = 0; i < width; ++i)
            expected[r * width + i] = (x[r * width + i] - mean) / std::sqrt(variance + eps) * gamma[i] + beta[i];
    }
    CHECK(max_abs_difference(y, expected) < 1e-5);

    // In place gives the same values.
    std::vector<float> in_place = x;
    blip::kernels::layer_norm(in_place.data(), rows, width, gamma.data(), beta.data(), eps, in_place.data());
    CHECK(bit_identical(in_place, y));
}

TEST_CASE("gelu matches exact erf form") {
    std::vector<float> x;
    for (int i = -800; i <= 800; ++i) x.push_back(static_cast<float>(i) / 100.0f);
    std::vector<double> expected;
    for (float v : x) expected.push_back(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
    blip::kernels::gelu_inplace(x.data(), static_cast<std::int64_t>(x.size()));
    CHECK(max_abs_difference(x, expected) < 1e-6);
}

TEST_CASE("softmax matches double reference") {
    const std::int64_t rows = 5, width = 33;
    auto x = random_values(static_cast<std::size_t>(rows * width), 9, 20.0f);
    x[3] = -10000.0f;
    std::vector<double> expected(x.size());
    for (std::int64_t r = 0; r < rows; ++r) {
        double max_value = -1e300, sum = 0;
        for (std::int64_t i = 0; i < width; ++i) max_value = std::max<double>(max_value, x[r * width + i]);
        for (std::int64_t i = 0; i < width; ++i) sum += std::exp(x[r * width + i] - max_value);
        for (std::int64_t i = 0; i < width; ++i) expected[r * width + i] = std::exp(x[r * width + i] - max_value) / sum;
    }
    blip::kernels::softmax_rows(x.data(), rows, width);
    CHECK(max_abs_difference(x, expected) < 1e-6);
}

TEST_CASE("attention with causal and padding masks") {
    const AttentionCase problem;
    const auto expected = problem.reference();
    for (auto scaling : {blip::kernels::ScoreScaling::DivideBySqrt, blip::kernels::ScoreScaling::MultiplyByInverseSqrt}) {
        std::vector<float> out(expected.size(), -1.0f);
        blip::kernels::attention(problem.args(out.data(), scaling));
        CHECK(max_abs_difference(out, expected) < 1e-5);
    }
}

TEST_CASE("attention without masks") {
    AttentionCase problem;
    std::fill(problem.bias.begin(), problem.bias.end(), 0.0f);
    // The reference with every key visible to every query row.
    problem.causal_offset = problem.key_rows;
    const auto expected = problem.reference();
    auto args = problem.args(nullptr, blip::kernels::ScoreScaling::DivideBySqrt);
    std::vector<float> out(expected.size());
    args.output = out.data();
    args.key_bias = nullptr;
    args.causal_offset = -1;
    blip::kernels::attention(args);
    CHECK(max_abs_difference(out, expected) < 1e-5);
}

TEST_CASE("attention rejects too small scratch") {
    const AttentionCase problem;
    std::vector<float> out(static_cast<std::size_t>(problem.query_rows * problem.heads * problem.head_dim));
    std::vector<float> scratch(4);
    CHECK_THROWS_AS(blip::kernels::attention(problem.args(out.data(), blip::kernels::ScoreScaling::DivideBySqrt),
                                             scratch.data(), 4),
                    blip::Error);
}

TEST_CASE("kernels are bit-identical for 1 and 2 threads") {
    ThreadCountGuard guard;
    // Sizes large enough that every kernel uses two threads when allowed.
    const std::int64_t out = 16384, in = 256, rows = 64;
    REQUIRE(rows * 700 * in >= 2 * blip::kMinWorkPerThread);
    REQUIRE(out * in >= 2 * blip::kMinWorkPerThread);
    const auto w = random_values(static_cast<std::size_t>(out * in), 21);
    const auto bias = random_values(static_cast<std::size_t>(out), 22);
    const auto x = random_values(static_cast<std::size_t>(rows * in), 23);
    const AttentionCase problem(4, 64, 70, 300);
    REQUIRE(blip::kernels::attention_threads(problem.args(nullptr, blip::kernels::ScoreScaling::DivideBySqrt)) >=
            std::min(2, blip::num_threads()));

    std::vector<float> results[2][4];
    for (int threads : {1, 2}) {
        blip::set_num_threads(threads);
        auto& result = results[threads - 1];
        std::vector<float> single(static_cast<std::size_t>(out));
        blip::kernels::linear_f32(w.data(), bias.data(), out, in, x.data(), 1, single.data());
        result[0] = single;
        std::vector<float> batch(static_cast<std::size_t>(rows * 700));
        blip::kernels::linear_f32(w.data(), bias.data(), 700, in, x.data(), rows, batch.data());
        result[1] = batch;
        std::vector<float> normed(static_cast<std::size_t>(out * in));
        blip::kernels::layer_norm(w.data(), out, in, x.data(), bias.data(), 1e-12f, normed.data());
        result[2] = normed;
        std::vector<float> attended(static_cast<std::size_t>(problem.query_rows * problem.heads * problem.head_dim));
        blip::kernels::attention(problem.args(attended.data(), blip::kernels::ScoreScaling::DivideBySqrt));
        result[3] = attended;
    }
    CHECK(bit_identical(results[0][0], results[1][0]));
    CHECK(bit_identical(results[0][1], results[1][1]));
    CHECK(bit_identical(results[0][2], results[1][2]));
    CHECK(bit_identical(results[0][3], results[1][3]));
}

}  // namespace test_kernels
