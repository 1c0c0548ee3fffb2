// Tests of the reduced-precision weight formats: block layouts, conversions, quantizers,
// every kernel level against the scalar reference, and the gemm entry point.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <blip/core/dtype.hpp>
#include <blip/core/error.hpp>
#include <blip/quant/blocks.hpp>
#include <blip/quant/cpu.hpp>
#include <blip/quant/float16.hpp>
#include <blip/quant/gemm.hpp>
#include <blip/quant/quantize.hpp>

namespace test_quant {

namespace {

using blip::DType;
namespace q = blip::quant;
namespace qd = blip::quant::detail;

constexpr DType kIntegerTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16};
constexpr DType kAllWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                                     DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<float> random_normal(std::size_t count, unsigned seed, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> values(count);
    for (auto& v : values) v = dist(rng);
    return values;
}

std::vector<float> dequantize_all(DType type, const std::vector<std::uint8_t>& data, std::int64_t rows,
                                  std::int64_t cols) {
    std::vector<float> out(static_cast<std::size_t>(rows * cols));
    const std::size_t stride = q::row_bytes(type, cols);
    for (std::int64_t r = 0; r < rows; ++r) q::dequantize_row(type, data.data() + r * stride, out.data() + r * cols, cols);
    return out;
}

std::string type_name(DType type) { return std::string(blip::dtype_name(type)); }

std::vector<q::CpuLevel> available_levels() {
    std::vector<q::CpuLevel> levels;
    for (q::CpuLevel level : q::kAllCpuLevels) {
        if (q::cpu_level_available(level)) levels.push_back(level);
    }
    return levels;
}

bool is_integer_type(DType type) { return qd::weight_family(type) != qd::WeightFamily::Float; }

// Largest error that 8-bit activation quantization can add to y[r, o]: each x is off by at most
// half its block's step max|x| / 127, so the product is off by at most sum_k |W[o,k]| * step_k / 2.
double activation_error_bound(DType type, const float* w, const float* x, std::int64_t in) {
    const std::int64_t block = qd::weight_family(type) == qd::WeightFamily::Block32 ? 32 : 256;
    double bound = 0.0;
    for (std::int64_t b = 0; b < in / block; ++b) {
        double amax = 0.0;
        for (std::int64_t k = 0; k < block; ++k) amax = std::max(amax, std::fabs(double(x[b * block + k])));
        double wsum = 0.0;
        for (std::int64_t k = 0; k < block; ++k) wsum += std::fabs(double(w[b * block + k]));
        bound += wsum * (amax / 127.0) * 0.5;
    }
    return bound;
}

// Compares gemm_at_level(level, ...) with a double-precision product of the dequantized weights.
void check_gemm_against_reference(q::CpuLevel level, DType type, std::int64_t out, std::int64_t in,
                                  std::int64_t rows, unsigned seed) {
    const auto w = random_normal(static_cast<std::size_t>(out * in), seed);
    const auto x = random_normal(static_cast<std::size_t>(rows * in), seed + 1);
    const auto packed = q::quantize_rows(type, w.data(), out, in);
    const auto deq = dequantize_all(type, packed, out, in);
    std::vector<float> y(static_cast<std::size_t>(rows * out), -1.0f);
    q::gemm_at_level(level, type, packed.data(), out, in, x.data(), rows, y.data());

    int failures = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t o = 0; o < out; ++o) {
            const float* wr = deq.data() + o * in;
            const float* xr = x.data() + r * in;
            double ref = 0.0;
            double magnitude = 0.0;
            for (std::int64_t k = 0; k < in; ++k) {
                ref += double(wr[k]) * double(xr[k]);
                magnitude += std::fabs(double(wr[k]) * double(xr[k]));
            }
            // f32 accumulation error, plus the activation quantization error for integer types.
            double bound = 1e-5 * magnitude + 1e-6;
            if (is_integer_type(type)) bound += activation_error_bound(type, wr, xr, in) * 1.001;
            const double err = std::fabs(double(y[r * out + o]) - ref);
            if (!(err <= bound) && failures++ < 3) {
                INFO("level " << q::cpu_level_name(level) << " type " << type_name(type) << " row " << r << " out "
                              << o << " y " << y[r * out + o] << " ref " << ref << " bound " << bound);
                CHECK(err <= bound);
            }
        }
    }
    INFO("level " << q::cpu_level_name(level) << " type " << type_name(type) << " rows " << rows);
    CHECK(failures == 0);
}

}  // namespace

TEST_CASE("quant block struct sizes") {
    CHECK(sizeof(q::BlockQ8_0) == 34);
    CHECK(sizeof(q::BlockQ4_0) == 18);
    CHECK(sizeof(q::BlockQ4_1) == 20);
    CHECK(sizeof(q::BlockQ4_K) == 144);
    CHECK(sizeof(q::BlockQ5_K) == 176);
    CHECK(sizeof(q::BlockQ6_K) == 210);
    CHECK(blip::dtype_traits(DType::Q4_K).block_bytes == sizeof(q::BlockQ4_K));
    CHECK(offsetof(q::BlockQ4_K, scales) == 4);
    CHECK(offsetof(q::BlockQ4_K, qs) == 16);
    CHECK(offsetof(q::BlockQ5_K, qh) == 16);
    CHECK(offsetof(q::BlockQ5_K, qs) == 48);
    CHECK(offsetof(q::BlockQ6_K, qh) == 128);
    CHECK(offsetof(q::BlockQ6_K, scales) == 192);
    CHECK(offsetof(q::BlockQ6_K, d) == 208);
}

TEST_CASE("f16 conversion known values") {
    CHECK(q::fp32_to_fp16(1.0f) == 0x3c00);
    CHECK(q::fp32_to_fp16(-2.0f) == 0xc000);
    CHECK(q::fp32_to_fp16(65504.0f) == 0x7bff);
    CHECK(q::fp32_to_fp16(65519.0f) == 0x7bff);
    CHECK(q::fp32_to_fp16(65520.0f) == 0x7c00);  // the tie rounds to even, which is infinity
    CHECK(q::fp32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(q::fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);            // tie between 0 and 1 ulp: even
    CHECK(q::fp32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);            // tie between 1 and 2 ulp: even
    CHECK(q::fp32_to_fp16(std::ldexp(1.0f, -14)) == 0x0400);            // smallest normal
    CHECK(q::fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);     // tie: to even
    CHECK(q::fp32_to_fp16(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);     // tie: to even
    CHECK(q::fp32_to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK((q::fp32_to_fp16(std::nanf("")) & 0x7fff) > 0x7c00);
    CHECK(std::isnan(q::fp16_to_fp32(0x7e00)));
    CHECK(q::fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(q::fp16_to_fp32(0xfbff) == -65504.0f);
}

TEST_CASE("f16 round trip of every value") {
    int mismatches = 0;
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const auto half = static_cast<std::uint16_t>(h);
        const float value = q::fp16_to_fp32(half);
        if (std::isnan(value)) continue;
        if (q::fp32_to_fp16(value) != half) ++mismatches;
    }
    CHECK(mismatches == 0);
}

TEST_CASE("bf16 conversion known values") {
    CHECK(q::fp32_to_bf16(1.0f) == 0x3f80);
    CHECK(q::fp32_to_bf16(q::float_from_bits(0x3f808000u)) == 0x3f80);  // tie: to even
    CHECK(q::fp32_to_bf16(q::float_from_bits(0x3f818000u)) == 0x3f82);  // tie: to even
    CHECK(q::fp32_to_bf16(q::float_from_bits(0x3f808001u)) == 0x3f81);
    CHECK(q::bf16_to_fp32(0xc040) == -3.0f);
    CHECK(std::isnan(q::bf16_to_fp32(q::fp32_to_bf16(std::nanf("")))));
}

TEST_CASE("q8_0 hand-computed block") {
    // d = max|x| / 127 = 1 (f16 0x3c00); q = roundf(x / d), ties away from zero as in ggml.
    float x[32] = {127.0f, 2.5f, -2.5f, 0.5f, -0.49f, 100.4f, -126.6f, 63.5f};
    const std::int8_t expected[32] = {127, 3, -3, 1, 0, 100, -127, 64};
    const auto packed = q::quantize_rows(DType::Q8_0, x, 1, 32);
    REQUIRE(packed.size() == 34);
    CHECK(packed[0] == 0x00);
    CHECK(packed[1] == 0x3c);
    CHECK(std::memcmp(packed.data() + 2, expected, 32) == 0);
}

TEST_CASE("q8_0 block of a ramp") {
    // x_j = (j - 16) / 4: max|x| = 4, d = 4 / 127 = 0.031496063 (f16 0x2808), 1 / d = 31.75.
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) / 4.0f;
    const std::int8_t expected[32] = {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48,
                                      -40,  -32,  -24,  -16,  -8,  0,   8,   16,  24,  32,  40,
                                      48,   56,   64,   71,   79,  87,  95,  103, 111, 119};
    const auto packed = q::quantize_rows(DType::Q8_0, x, 1, 32);
    REQUIRE(packed.size() == 34);
    CHECK(packed[0] == 0x08);
    CHECK(packed[1] == 0x28);
    CHECK(std::memcmp(packed.data() + 2, expected, 32) == 0);
}

TEST_CASE("q4_0 hand-computed block") {
    // x_j = (j - 12) / 2: the element of largest magnitude is 9.5, so d = 9.5 / -8 = -1.1875
    // (f16 0xbcc0) and q_j = min(15, trunc(x_j / d + 8.5)); x_0 = -6 gives 13, x_31 = 9.5 gives 0.
    // Byte j contains q_j in the low nibble and q_(j+16) in the high nibble.
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 12) * 0.5f;
    const std::uint8_t expected[16] = {0x6d, 0x6d, 0x5c, 0x5c, 0x5b, 0x4b, 0x4b, 0x3a,
                                       0x3a, 0x39, 0x29, 0x28, 0x18, 0x18, 0x07, 0x07};
    const auto packed = q::quantize_rows(DType::Q4_0, x, 1, 32);
    REQUIRE(packed.size() == 18);
    CHECK(packed[0] == 0xc0);
    CHECK(packed[1] == 0xbc);
    CHECK(std::memcmp(packed.data() + 2, expected, 16) == 0);

    float back[32];
    q::dequantize_row(DType::Q4_0, packed.data(), back, 32);
    CHECK(back[0] == -1.1875f * (13 - 8));
    CHECK(back[31] == -1.1875f * (0 - 8));
}

TEST_CASE("q4_1 hand-computed block") {
    // x_j = j^2 / 64 - 1: min = -1 (f16 0xbc00), d = (max - min) / 15 = 1.0010417 (f16 0x3c01),
    // q_j = min(15, trunc((x_j - min) / d + 0.5)).
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j * j) / 64.0f - 1.0f;
    const std::uint8_t expected[16] = {0x40, 0x50, 0x50, 0x60, 0x60, 0x70, 0x81, 0x81,
                                       0x91, 0xa1, 0xb2, 0xb2, 0xc2, 0xd3, 0xe3, 0xf4};
    const auto packed = q::quantize_rows(DType::Q4_1, x, 1, 32);
    REQUIRE(packed.size() == 20);
    CHECK(packed[0] == 0x01);
    CHECK(packed[1] == 0x3c);
    CHECK(packed[2] == 0x00);
    CHECK(packed[3] == 0xbc);
    CHECK(std::memcmp(packed.data() + 4, expected, 16) == 0);
}

TEST_CASE("k-quant scale packing round trip") {
    std::uint8_t scales[8];
    std::uint8_t mins[8];
    for (int j = 0; j < 8; ++j) {
        scales[j] = static_cast<std::uint8_t>(63 - 7 * j);
        mins[j] = static_cast<std::uint8_t>(5 + 8 * j);
    }
    std::uint8_t packed[12];
    qd::pack_scales_mins_k4(scales, mins, packed);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc;
        std::uint8_t m;
        qd::unpack_scale_min_k4(j, packed, &sc, &m);
        CHECK(sc == scales[j]);
        CHECK(m == mins[j]);
    }
}

TEST_CASE("quantize dequantize error bounds") {
    const std::int64_t rows = 8;
    const std::int64_t cols = 512;
    const auto x = random_normal(static_cast<std::size_t>(rows * cols), 11, 0.7f);

    SUBCASE("f16 and bf16 relative error") {
        for (DType type : {DType::F16, DType::BF16}) {
            const double limit = type == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
            const auto back = dequantize_all(type, q::quantize_rows(type, x.data(), rows, cols), rows, cols);
            double worst = 0.0;
            for (std::size_t i = 0; i < x.size(); ++i) {
                if (std::fabs(x[i]) < 1e-4f) continue;  // f16 subnormals have larger relative error
                worst = std::max(worst, std::fabs(double(back[i]) - x[i]) / std::fabs(double(x[i])));
            }
            INFO(type_name(type));
            CHECK(worst <= limit);
        }
    }

    SUBCASE("32-element blocks per-element bound") {
        for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
            const auto back = dequantize_all(type, q::quantize_rows(type, x.data(), rows, cols), rows, cols);
            int violations = 0;
            for (std::size_t b = 0; b < x.size() / 32; ++b) {
                float amax = 0.0f;
                float min = x[b * 32];
                float max = x[b * 32];
                for (int k = 0; k < 32; ++k) {
                    amax = std::max(amax, std::fabs(x[b * 32 + k]));
                    min = std::min(min, x[b * 32 + k]);
                    max = std::max(max, x[b * 32 + k]);
                }
                // Half a step, plus the f16 rounding of the stored scale (and min) times the
                // largest level. q4_0 maps the largest magnitude to level -8, and +8 (the same
                // magnitude on the other side) clamps to 7: a full step of error.
                double bound = 0.0;
                const double f16 = std::ldexp(1.0, -11);
                if (type == DType::Q8_0) bound = amax / 127.0 * (0.5 + 127 * f16);
                if (type == DType::Q4_0) bound = amax / 8.0 * (1.0 + 8 * f16);
                if (type == DType::Q4_1) bound = (max - min) / 15.0 * (0.5 + 15 * f16) + std::fabs(min) * f16;
                for (int k = 0; k < 32; ++k) {
                    if (std::fabs(double(back[b * 32 + k]) - x[b * 32 + k]) > bound * 1.0001 + 1e-7) ++violations;
                }
            }
            INFO(type_name(type));
            CHECK(violations == 0);
        }
    }

    SUBCASE("k-quants relative RMS error") {
        // Uniform steps over a 32-element sub-block spanning about 4 sigma give an RMS error of
        // step / sqrt(12): about 0.077 sigma for 16 levels (q4_K), 0.037 for 32 (q5_K), and for
        // q6_K's 64 levels over 16 elements about 0.02. The limits leave room for the 6- and
        // 8-bit scale quantization.
        double sum_x2 = 0.0;
        for (float v : x) sum_x2 += double(v) * v;
        const double rms_x = std::sqrt(sum_x2 / x.size());
        double rms_q4_0 = 0.0;
        for (DType type : {DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
            const auto back = dequantize_all(type, q::quantize_rows(type, x.data(), rows, cols), rows, cols);
            double sum_e2 = 0.0;
            for (std::size_t i = 0; i < x.size(); ++i) sum_e2 += (double(back[i]) - x[i]) * (double(back[i]) - x[i]);
            const double rel = std::sqrt(sum_e2 / x.size()) / rms_x;
            INFO(type_name(type) << " relative RMS error " << rel);
            if (type == DType::Q4_0) rms_q4_0 = rel;
            if (type == DType::Q4_K) {
                CHECK(rel < 0.10);
                CHECK(rel < rms_q4_0);  // the scale search beats plain q4_0 at the same bit count
            }
            if (type == DType::Q5_K) CHECK(rel < 0.05);
            if (type == DType::Q6_K) CHECK(rel < 0.025);
        }
    }

    SUBCASE("zero and constant rows") {
        for (DType type : kIntegerTypes) {
            std::vector<float> zeros(256, 0.0f);
            const auto back = dequantize_all(type, q::quantize_rows(type, zeros.data(), 1, 256), 1, 256);
            INFO(type_name(type));
            CHECK(std::all_of(back.begin(), back.end(), [](float v) { return v == 0.0f; }));

            std::vector<float> constant(256, 0.75f);
            const auto back_constant =
                dequantize_all(type, q::quantize_rows(type, constant.data(), 1, 256), 1, 256);
            for (float v : back_constant) CHECK(std::fabs(v - 0.75f) <= 0.75f * 0.07f);
        }
    }
}

TEST_CASE("quantization is deterministic") {
    const auto x = random_normal(4 * 768, 5);
    for (DType type : kAllWeightTypes) {
        const auto first = q::quantize_rows(type, x.data(), 4, 768);
        const auto second = q::quantize_rows(type, x.data(), 4, 768);
        INFO(type_name(type));
        CHECK(first == second);
        CHECK(first.size() == blip::dtype_bytes(type, 4 * 768));
    }
}

TEST_CASE("row length checks") {
    CHECK(q::row_length_supported(DType::Q8_0, 64));
    CHECK_FALSE(q::row_length_supported(DType::Q8_0, 48));
    CHECK_FALSE(q::row_length_supported(DType::Q8_0, 0));
    CHECK(q::row_length_supported(DType::Q4_K, 768));
    CHECK_FALSE(q::row_length_supported(DType::Q4_K, 384));
    CHECK(q::row_length_supported(DType::F16, 7));
    CHECK(q::row_length_supported(DType::F32, 1));
    CHECK_FALSE(q::row_length_supported(DType::I32, 32));
    CHECK_FALSE(q::row_length_supported(static_cast<DType>(77), 32));

    const std::vector<float> x(48, 1.0f);
    CHECK_THROWS_AS(q::quantize_rows(DType::Q4_0, x.data(), 1, 48), blip::Error);
    CHECK_THROWS_AS(q::quantize_rows(DType::I32, x.data(), 1, 48), blip::Error);
    std::vector<float> y(4);
    const auto w = q::quantize_rows(DType::Q8_0, x.data(), 1, 32);
    CHECK_THROWS_AS(q::gemm(DType::Q8_0, w.data(), 1, 48, x.data(), 1, y.data()), blip::Error);
    CHECK_THROWS_AS(q::gemm(DType::Q8_0, w.data(), -1, 32, x.data(), 1, y.data()), blip::Error);
    CHECK_THROWS_AS(q::gemm(DType::Q8_0, nullptr, 1, 32, x.data(), 1, y.data()), blip::Error);
    CHECK_THROWS_AS(q::gemm(DType::Q8_0, w.data() + 1, 1, 32, x.data(), 1, y.data()), blip::Error);
    CHECK_NOTHROW(q::gemm(DType::Q8_0, w.data(), 1, 32, x.data(), 0, y.data()));
}

TEST_CASE("cpu level selection") {
    MESSAGE("highest kernel level on this CPU: " << q::cpu_level_name(q::max_cpu_level())
                                                 << ", active: " << q::cpu_level_name(q::active_cpu_level()));
    q::CpuLevel level;
    CHECK(qd::parse_cpu_level("avx2", level));
    CHECK(level == q::CpuLevel::Avx2);
    CHECK_FALSE(qd::parse_cpu_level("avx3", level));

    const char* saved = std::getenv("BLIP_CPU");
    const std::string saved_value = saved != nullptr ? saved : "";
    setenv("BLIP_CPU", "scalar", 1);
    CHECK(qd::select_cpu_level() == q::CpuLevel::Scalar);
    setenv("BLIP_CPU", "avx512vnni", 1);  // cannot raise above the detected level
    CHECK(qd::select_cpu_level() == q::max_cpu_level());
    setenv("BLIP_CPU", "fastest", 1);
    CHECK_THROWS_AS(qd::select_cpu_level(), blip::Error);
    if (saved != nullptr) setenv("BLIP_CPU", saved_value.c_str(), 1);
    else unsetenv("BLIP_CPU");
}

TEST_CASE("kernel levels match scalar activation quantization and decoding") {
    const std::int64_t count = 768;
    auto x = random_normal(count, 21, 2.0f);
    x[40] = 0.0f;
    for (int k = 64; k < 96; ++k) x[k] = 0.0f;  // an all-zero block
    const auto w = random_normal(4 * count, 22);
    const qd::KernelTable& ref = qd::kernels_for_level(q::CpuLevel::Scalar);

    for (q::CpuLevel level : available_levels()) {
        const qd::KernelTable& k = qd::kernels_for_level(level);
        INFO("level " << q::cpu_level_name(level));

        std::vector<std::int8_t> q_ref(count), q_got(count);
        std::vector<float> d_ref(count / 32), d_got(count / 32), s_ref(count / 32), s_got(count / 32);
        ref.quantize_act32(x.data(), count, q_ref.data(), d_ref.data(), s_ref.data());
        k.quantize_act32(x.data(), count, q_got.data(), d_got.data(), s_got.data());
        CHECK(q_ref == q_got);
        CHECK(std::memcmp(d_ref.data(), d_got.data(), d_ref.size() * 4) == 0);
        CHECK(std::memcmp(s_ref.data(), s_got.data(), s_ref.size() * 4) == 0);

        std::vector<std::int16_t> g_ref(count / 16), g_got(count / 16);
        ref.quantize_act256(x.data(), count, q_ref.data(), d_ref.data(), g_ref.data());
        k.quantize_act256(x.data(), count, q_got.data(), d_got.data(), g_got.data());
        CHECK(q_ref == q_got);
        CHECK(std::memcmp(d_ref.data(), d_got.data(), (count / 256) * 4) == 0);
        CHECK(g_ref == g_got);

        for (DType type : kAllWeightTypes) {
            if (type == DType::F32) continue;
            const auto packed = q::quantize_rows(type, w.data(), 1, count);
            INFO("type " << type_name(type));
            if (type == DType::F16 || type == DType::BF16) {
                std::vector<float> a(count), b(count);
                const auto* halves = reinterpret_cast<const std::uint16_t*>(packed.data());
                (type == DType::F16 ? ref.decode_f16 : ref.decode_bf16)(halves, count, a.data());
                (type == DType::F16 ? k.decode_f16 : k.decode_bf16)(halves, count, b.data());
                CHECK(std::memcmp(a.data(), b.data(), count * 4) == 0);
                // An odd length exercises the tails.
                (type == DType::F16 ? ref.decode_f16 : ref.decode_bf16)(halves, 13, a.data());
                (type == DType::F16 ? k.decode_f16 : k.decode_bf16)(halves, 13, b.data());
                CHECK(std::memcmp(a.data(), b.data(), 13 * 4) == 0);
            } else if (qd::weight_family(type) == qd::WeightFamily::Block32) {
                const std::int64_t blocks = count / 32;
                std::vector<std::int8_t> qa(count), qb(count);
                std::vector<float> sa(blocks), sb(blocks), ma(blocks, 0.0f), mb(blocks, 0.0f);
                if (type == DType::Q8_0) {
                    ref.decode_q8_0(reinterpret_cast<const q::BlockQ8_0*>(packed.data()), blocks, qa.data(), sa.data());
                    k.decode_q8_0(reinterpret_cast<const q::BlockQ8_0*>(packed.data()), blocks, qb.data(), sb.data());
                } else if (type == DType::Q4_0) {
                    ref.decode_q4_0(reinterpret_cast<const q::BlockQ4_0*>(packed.data()), blocks, qa.data(), sa.data());
                    k.decode_q4_0(reinterpret_cast<const q::BlockQ4_0*>(packed.data()), blocks, qb.data(), sb.data());
                } else {
                    const auto* blocks41 = reinterpret_cast<const q::BlockQ4_1*>(packed.data());
                    ref.decode_q4_1(blocks41, blocks, qa.data(), sa.data(), ma.data());
                    k.decode_q4_1(blocks41, blocks, qb.data(), sb.data(), mb.data());
                }
                CHECK(qa == qb);
                CHECK(sa == sb);
                CHECK(ma == mb);
            } else {
                const std::int64_t blocks = count / 256;
                std::vector<std::uint8_t> qa(count), qb(count);
                std::vector<std::int16_t> sa(blocks * 16), sb(blocks * 16), ma(blocks * 8, 0), mb(blocks * 8, 0);
                std::vector<float> da(blocks), db(blocks), dma(blocks, 0.0f), dmb(blocks, 0.0f);
                if (type == DType::Q4_K) {
                    const auto* src = reinterpret_cast<const q::BlockQ4_K*>(packed.data());
                    ref.decode_q4_k(src, blocks, qa.data(), sa.data(), ma.data(), da.data(), dma.data());
                    k.decode_q4_k(src, blocks, qb.data(), sb.data(), mb.data(), db.data(), dmb.data());
                } else if (type == DType::Q5_K) {
                    const auto* src = reinterpret_cast<const q::BlockQ5_K*>(packed.data());
                    ref.decode_q5_k(src, blocks, qa.data(), sa.data(), ma.data(), da.data(), dma.data());
                    k.decode_q5_k(src, blocks, qb.data(), sb.data(), mb.data(), db.data(), dmb.data());
                } else {
                    const auto* src = reinterpret_cast<const q::BlockQ6_K*>(packed.data());
                    ref.decode_q6_k(src, blocks, qa.data(), sa.data(), da.data());
                    k.decode_q6_k(src, blocks, qb.data(), sb.data(), db.data());
                }
                CHECK(qa == qb);
                CHECK(sa == sb);
                CHECK(ma == mb);
                CHECK(da == db);
                CHECK(dma == dmb);
            }
        }
    }
}

TEST_CASE("kernel levels match scalar dot products") {
    // Block counts cover the SIMD groups of four and eight blocks and every kind of tail.
    const std::int64_t block32_counts[] = {1, 3, 4, 7, 8, 9, 24, 29};
    const std::int64_t super256_counts[] = {1, 2, 3, 9};
    const qd::KernelTable& ref = qd::kernels_for_level(q::CpuLevel::Scalar);

    for (q::CpuLevel level : available_levels()) {
        const qd::KernelTable& k = qd::kernels_for_level(level);
        INFO("level " << q::cpu_level_name(level));

        for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
            for (std::int64_t blocks : block32_counts) {
                const std::int64_t count = blocks * 32;
                const auto w = random_normal(count, 31);
                const auto x = random_normal(4 * count, 32, 3.0f);
                const auto packed = q::quantize_rows(type, w.data(), 1, count);
                std::vector<std::int8_t> wq(count);
                std::vector<float> ws(blocks), wm(blocks);
                if (type == DType::Q8_0) {
                    ref.decode_q8_0(reinterpret_cast<const q::BlockQ8_0*>(packed.data()), blocks, wq.data(), ws.data());
                } else if (type == DType::Q4_0) {
                    ref.decode_q4_0(reinterpret_cast<const q::BlockQ4_0*>(packed.data()), blocks, wq.data(), ws.data());
                } else {
                    ref.decode_q4_1(reinterpret_cast<const q::BlockQ4_1*>(packed.data()), blocks, wq.data(),
                                    ws.data(), wm.data());
                }
                const qd::Block32Row wrow{wq.data(), ws.data(), type == DType::Q4_1 ? wm.data() : nullptr};

                std::vector<std::int8_t> xq(4 * count);
                std::vector<float> xd(4 * blocks), xs(4 * blocks);
                std::vector<qd::Act32Row> xrows;
                for (int r = 0; r < 4; ++r) {
                    ref.quantize_act32(x.data() + r * count, count, xq.data() + r * count, xd.data() + r * blocks,
                                       xs.data() + r * blocks);
                    xrows.push_back({xq.data() + r * count, xd.data() + r * blocks, xs.data() + r * blocks});
                }
                for (int rows = 1; rows <= 4; ++rows) {
                    float expected[4];
                    float got[4];
                    ref.dot_block32(wrow, xrows.data(), rows, blocks, expected);
                    k.dot_block32(wrow, xrows.data(), rows, blocks, got);
                    INFO("type " << type_name(type) << " blocks " << blocks << " rows " << rows);
                    CHECK(std::memcmp(expected, got, rows * sizeof(float)) == 0);
                }
            }
        }

        for (DType type : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
            for (std::int64_t blocks : super256_counts) {
                const std::int64_t count = blocks * 256;
                const auto w = random_normal(count, 41);
                const auto x = random_normal(4 * count, 42, 0.5f);
                const auto packed = q::quantize_rows(type, w.data(), 1, count);
                std::vector<std::uint8_t> wq(count);
                std::vector<std::int16_t> sc(blocks * 16), mn(blocks * 8);
                std::vector<float> d(blocks), dmin(blocks);
                qd::Super256Row wrow{wq.data(), sc.data(), mn.data(), d.data(), dmin.data(), 0};
                if (type == DType::Q4_K) {
                    ref.decode_q4_k(reinterpret_cast<const q::BlockQ4_K*>(packed.data()), blocks, wq.data(),
                                    sc.data(), mn.data(), d.data(), dmin.data());
                } else if (type == DType::Q5_K) {
                    ref.decode_q5_k(reinterpret_cast<const q::BlockQ5_K*>(packed.data()), blocks, wq.data(),
                                    sc.data(), mn.data(), d.data(), dmin.data());
                } else {
                    ref.decode_q6_k(reinterpret_cast<const q::BlockQ6_K*>(packed.data()), blocks, wq.data(),
                                    sc.data(), d.data());
                    wrow = {wq.data(), sc.data(), nullptr, d.data(), nullptr, 32};
                }

                std::vector<std::int8_t> xq(4 * count);
                std::vector<float> xd(4 * blocks);
                std::vector<std::int16_t> xg(4 * count / 16);
                std::vector<qd::Act256Row> xrows;
                for (int r = 0; r < 4; ++r) {
                    ref.quantize_act256(x.data() + r * count, count, xq.data() + r * count, xd.data() + r * blocks,
                                        xg.data() + r * count / 16);
                    xrows.push_back({xq.data() + r * count, xd.data() + r * blocks, xg.data() + r * count / 16});
                }
                for (int rows = 1; rows <= 4; ++rows) {
                    float expected[4];
                    float got[4];
                    ref.dot_super256(wrow, xrows.data(), rows, blocks, expected);
                    k.dot_super256(wrow, xrows.data(), rows, blocks, got);
                    INFO("type " << type_name(type) << " blocks " << blocks << " rows " << rows);
                    CHECK(std::memcmp(expected, got, rows * sizeof(float)) == 0);
                }
            }
        }

        // Direct f16/bf16 kernels must give the bits of decoding followed by dot_f32.
        for (DType type : {DType::F16, DType::BF16}) {
            const auto direct = type == DType::F16 ? k.dot_f16 : k.dot_bf16;
            if (direct == nullptr) continue;
            // Three weight rows per call, written with an output stride of 5.
            constexpr int kOutputs = 3;
            constexpr std::int64_t kOutStride = 5;
            for (std::int64_t count : {1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 768}) {
                const auto w = random_normal(kOutputs * count, 53);
                const auto x = random_normal(4 * count, 54);
                const auto packed = q::quantize_rows(type, w.data(), kOutputs, count);
                const auto* halves = reinterpret_cast<const std::uint16_t*>(packed.data());
                std::vector<float> widened(kOutputs * count);
                (type == DType::F16 ? k.decode_f16 : k.decode_bf16)(halves, kOutputs * count, widened.data());
                const float* xrows[4] = {x.data(), x.data() + count, x.data() + 2 * count, x.data() + 3 * count};
                for (int rows = 1; rows <= 4; ++rows) {
                    float expected[4 * kOutStride] = {};
                    float got[4 * kOutStride] = {};
                    for (int i = 0; i < kOutputs; ++i) {
                        float dots[4];
                        k.dot_f32(widened.data() + i * count, xrows, rows, count, dots);
                        for (int r = 0; r < rows; ++r) expected[r * kOutStride + i] = dots[r];
                    }
                    direct(halves, count, kOutputs, xrows, rows, count, got, kOutStride);
                    INFO("type " << type_name(type) << " count " << count << " rows " << rows);
                    CHECK(std::memcmp(expected, got, sizeof(got)) == 0);
                }
            }
        }

        for (std::int64_t count : {1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 768}) {
            const auto w = random_normal(count, 51);
            const auto x = random_normal(4 * count, 52);
            const float* xrows[4] = {x.data(), x.data() + count, x.data() + 2 * count, x.data() + 3 * count};
            for (int rows = 1; rows <= 4; ++rows) {
                float expected[4];
                float got[4];
                ref.dot_f32(w.data(), xrows, rows, count, expected);
                k.dot_f32(w.data(), xrows, rows, count, got);
                for (int r = 0; r < rows; ++r) {
                    double magnitude = 0.0;
                    for (std::int64_t i = 0; i < count; ++i) magnitude += std::fabs(double(w[i]) * xrows[r][i]);
                    INFO("f32 count " << count << " rows " << rows);
                    CHECK(std::fabs(double(expected[r]) - got[r]) <= 1e-6 * magnitude + 1e-7);
                }
            }
        }
    }
}

TEST_CASE("gemm matches double reference") {
    // Odd output counts leave a partial tile; in_features 768 has 24 blocks of 32 and 3 of 256.
    for (q::CpuLevel level : available_levels()) {
        for (DType type : kAllWeightTypes) {
            for (std::int64_t rows : {1, 3, 8}) {
                check_gemm_against_reference(level, type, 37, 768, rows, 100 + static_cast<unsigned>(rows));
            }
        }
    }
    for (DType type : kFloatTypes) check_gemm_against_reference(q::active_cpu_level(), type, 5, 13, 2, 7);
}

TEST_CASE("gemm uses the active level") {
    const auto w = random_normal(19 * 256, 61);
    const auto x = random_normal(3 * 256, 62);
    for (DType type : kAllWeightTypes) {
        const auto packed = q::quantize_rows(type, w.data(), 19, 256);
        std::vector<float> a(3 * 19), b(3 * 19);
        q::gemm(type, packed.data(), 19, 256, x.data(), 3, a.data());
        q::gemm_at_level(q::active_cpu_level(), type, packed.data(), 19, 256, x.data(), 3, b.data());
        INFO(type_name(type));
        CHECK(a == b);
    }
}

TEST_CASE("gemm does not depend on thread count") {
#ifdef _OPENMP
    const std::int64_t out = 101;
    const std::int64_t in = 512;
    const std::int64_t rows = 6;
    const auto w = random_normal(out * in, 71);
    const auto x = random_normal(rows * in, 72);
    const int saved_threads = omp_get_max_threads();
    for (q::CpuLevel level : available_levels()) {
        for (DType type : kAllWeightTypes) {
            const auto packed = q::quantize_rows(type, w.data(), out, in);
            std::vector<float> y1(rows * out), y2(rows * out), y3(rows * out);
            omp_set_num_threads(1);
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), rows, y1.data());
            omp_set_num_threads(2);
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), rows, y2.data());
            omp_set_num_threads(3);
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), rows, y3.data());
            INFO("level " << q::cpu_level_name(level) << " type " << type_name(type));
            CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)) == 0);
        }
    }
    omp_set_num_threads(saved_threads);
#else
    MESSAGE("built without OpenMP: gemm runs on one thread");
#endif
}

TEST_CASE("gemm integer results identical across levels") {
    const auto w = random_normal(40 * 768, 81);
    const auto x = random_normal(5 * 768, 82, 4.0f);
    for (DType type : kIntegerTypes) {
        const auto packed = q::quantize_rows(type, w.data(), 40, 768);
        std::vector<float> expected(5 * 40);
        q::gemm_at_level(q::CpuLevel::Scalar, type, packed.data(), 40, 768, x.data(), 5, expected.data());
        for (q::CpuLevel level : available_levels()) {
            std::vector<float> got(5 * 40);
            q::gemm_at_level(level, type, packed.data(), 40, 768, x.data(), 5, got.data());
            INFO("level " << q::cpu_level_name(level) << " type " << type_name(type));
            CHECK(std::memcmp(expected.data(), got.data(), got.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("q8_0 in-place product with block tails") {
    // Rows of 3 and 25 blocks leave blocks after the last group of 8 that the in-place q8_0
    // kernels read. 1 to 9 activation rows take every group size.
    for (const std::int64_t in : {std::int64_t{96}, std::int64_t{800}}) {
        const std::int64_t out = 19;
        const auto w = random_normal(out * in, 83);
        auto x = random_normal(9 * in, 84, 4.0f);
        auto packed = q::quantize_rows(DType::Q8_0, w.data(), out, in);
        // Weight row 0 alternates -128 and 127, and activation row 0 has the same signs at
        // full scale: the largest pair sums of the 8-bit dot products.
        for (std::int64_t k = 0; k < in; ++k) {
            packed[static_cast<std::size_t>(k / 32 * 34 + 2 + k % 32)] = static_cast<std::uint8_t>(k % 2 ? 127 : 0x80);
            x[static_cast<std::size_t>(k)] = k % 2 ? 3.0f : -3.0f;
        }
        for (std::int64_t rows = 1; rows <= 9; ++rows) {
            std::vector<float> expected(rows * out);
            q::gemm_at_level(q::CpuLevel::Scalar, DType::Q8_0, packed.data(), out, in, x.data(), rows, expected.data());
            for (q::CpuLevel level : available_levels()) {
                std::vector<float> got(rows * out);
                q::gemm_at_level(level, DType::Q8_0, packed.data(), out, in, x.data(), rows, got.data());
                INFO("level " << q::cpu_level_name(level) << " in " << in << " rows " << rows);
                CHECK(std::memcmp(expected.data(), got.data(), got.size() * sizeof(float)) == 0);
            }
        }
    }
}

TEST_CASE("gemm row independent of batch size") {
    // The first rows of a batch of 7 must equal the same rows computed in batches of 1 and 3,
    // which take other code paths (one group of rows, direct f16/bf16 kernels).
    const std::int64_t out = 21;
    const std::int64_t in = 768;
    const auto w = random_normal(out * in, 97);
    const auto x = random_normal(7 * in, 98);
    for (q::CpuLevel level : available_levels()) {
        for (DType type : kAllWeightTypes) {
            const auto packed = q::quantize_rows(type, w.data(), out, in);
            std::vector<float> all(7 * out), one(out), three(3 * out);
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), 7, all.data());
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), 1, one.data());
            q::gemm_at_level(level, type, packed.data(), out, in, x.data(), 3, three.data());
            INFO("level " << q::cpu_level_name(level) << " type " << type_name(type));
            CHECK(std::memcmp(all.data(), one.data(), out * sizeof(float)) == 0);
            CHECK(std::memcmp(all.data(), three.data(), 3 * out * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("gemm special activations") {
    const auto w = random_normal(3 * 256, 91);
    for (DType type : kAllWeightTypes) {
        const auto packed = q::quantize_rows(type, w.data(), 3, 256);
        INFO(type_name(type));
        std::vector<float> zeros(2 * 256, 0.0f);
        std::vector<float> y(2 * 3, -1.0f);
        q::gemm(type, packed.data(), 3, 256, zeros.data(), 2, y.data());
        CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 0.0f; }));

        std::vector<float> with_nan(2 * 256, 1.0f);
        with_nan[5] = std::nanf("");
        q::gemm(type, packed.data(), 3, 256, with_nan.data(), 2, y.data());
        for (int o = 0; o < 3; ++o) {
            CHECK(std::isnan(y[o]));        // row 0 has the NaN
            CHECK(std::isfinite(y[3 + o]));  // row 1 does not
        }
    }
}

TEST_CASE("gemm with gguf-like unaligned row stride") {
    // q8_0 rows of 34-byte blocks start at 2-byte aligned addresses only.
    const auto w = random_normal(7 * 96, 95);
    const auto x = random_normal(96, 96);
    const auto packed = q::quantize_rows(DType::Q8_0, w.data(), 7, 96);
    std::vector<std::uint8_t> shifted(packed.size() + 2);
    std::memcpy(shifted.data() + 2, packed.data(), packed.size());
    std::vector<float> a(7), b(7);
    q::gemm(DType::Q8_0, packed.data(), 7, 96, x.data(), 1, a.data());
    q::gemm(DType::Q8_0, shifted.data() + 2, 7, 96, x.data(), 1, b.data());
    CHECK(a == b);
}

}  // namespace test_quant
