// quant::gemm's AVX-512 VNNI and AMX products against the same rows one at a time and against
// the scalar level, bit for bit. They cover the packed product of many rows (q8_0, q4_0, q4_1)
// and the in-place q8_0 product of fewer than 8 rows.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "blip/core/parallel.hpp"
#include "blip/quant/block32_amx.hpp"
#include "blip/quant/gemm.hpp"
#include "blip/quant/quantize.hpp"

namespace test_quant_many_rows {

namespace {

using blip::DType;
using blip::quant::CpuLevel;

std::vector<float> random_values(std::size_t count, std::uint32_t seed, float scale = 1.0f) {
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> distribution(-scale, scale);
    std::vector<float> values(count);
    for (auto& value : values) value = distribution(generator);
    return values;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Restores the default thread count when a test case ends.
struct ThreadCountGuard {
    ~ThreadCountGuard() { blip::set_num_threads(0); }
};

// Allows AMX tiles again when a test case ends.
struct AmxGuard {
    ~AmxGuard() { blip::quant::set_amx_allowed(true); }
};

struct QuantCase {
    DType type;
    std::int64_t rows, out, in;
    std::vector<float> x;
    std::vector<std::uint8_t> w;

    QuantCase(DType type_, std::int64_t rows_, std::int64_t out_, std::int64_t in_)
        : type(type_), rows(rows_), out(out_), in(in_) {
        x = random_values(static_cast<std::size_t>(rows * in), 1, 3.0f);
        const auto weights = random_values(static_cast<std::size_t>(out * in), 2);
        w = blip::quant::quantize_rows(type, weights.data(), out, in);
    }

    std::vector<float> all_rows(CpuLevel level) const {
        std::vector<float> y(static_cast<std::size_t>(rows * out));
        blip::quant::gemm_at_level(level, type, w.data(), out, in, x.data(), rows, y.data());
        return y;
    }

    std::vector<float> one_row_at_a_time(CpuLevel level) const {
        std::vector<float> y(static_cast<std::size_t>(rows * out));
        for (std::int64_t r = 0; r < rows; ++r)
            blip::quant::gemm_at_level(level, type, w.data(), out, in, x.data() + r * in, 1, y.data() + r * out);
        return y;
    }
};

}  // namespace

TEST_CASE("few-row q8_0 gemm equals the scalar level") {
    // 1 to 9 rows, in groups of up to 4 rows. Rows of 8 blocks, 3 blocks (below one group of
    // 8) and 17 blocks (a tail).
    for (std::int64_t rows = 1; rows <= 9; ++rows)
        for (std::int64_t in : {256, 96, 544}) {
            const QuantCase problem(DType::Q8_0, rows, 45, in);
            CAPTURE(rows);
            CAPTURE(in);
            CHECK(bit_identical(problem.all_rows(blip::quant::max_cpu_level()),
                                problem.one_row_at_a_time(CpuLevel::Scalar)));
        }
}

TEST_CASE("few-row q8_0 gemm takes -128 weights") {
    // The quantizer writes levels in [-127, 127], but a file may hold -128, whose magnitude
    // only fits an unsigned byte.
    QuantCase problem(DType::Q8_0, 2, 9, 512);
    const std::size_t block_bytes = sizeof(blip::quant::BlockQ8_0);
    for (std::size_t block = 0; block < problem.w.size() / block_bytes; block += 3)
        problem.w[block * block_bytes + 2 + block % 32] = 0x80;
    for (std::int64_t rows = 1; rows <= 2; ++rows) {
        CAPTURE(rows);
        QuantCase part = problem;
        part.rows = rows;
        CHECK(bit_identical(part.all_rows(blip::quant::max_cpu_level()), part.one_row_at_a_time(CpuLevel::Scalar)));
    }
}

TEST_CASE("many-row block32 gemm equals one row at a time") {
    // Row counts around the VNNI tile of 8 rows and the AMX tile of 16, partial panels of 16
    // weight rows, one block per row. Each runs with AMX tiles where usable (AMX-INT8 and the
    // highest level), and without.
    const QuantCase cases[] = {{DType::Q8_0, 9, 37, 96},  {DType::Q8_0, 40, 300, 256}, {DType::Q4_0, 17, 16, 64},
                               {DType::Q4_1, 23, 50, 128}, {DType::Q8_0, 8, 5, 32},     {DType::Q8_0, 16, 33, 160}};
    AmxGuard guard;
    for (bool amx : {true, false}) {
        blip::quant::set_amx_allowed(amx);
        const bool tiles = blip::quant::detail::block32_amx_usable();
        if (amx && !tiles) MESSAGE("AMX int8 tiles are not usable here: both passes take the VNNI path");
        for (const auto& problem : cases) {
            CAPTURE(tiles);
            CAPTURE(blip::dtype_name(problem.type));
            CAPTURE(problem.rows);
            CAPTURE(problem.out);
            CAPTURE(problem.in);
            const auto scalar = problem.one_row_at_a_time(CpuLevel::Scalar);
            const auto level = blip::quant::max_cpu_level();
            CHECK(bit_identical(problem.all_rows(level), problem.one_row_at_a_time(level)));
            CHECK(bit_identical(problem.all_rows(level), scalar));
        }
    }
}

TEST_CASE("many-row block32 gemm keeps NaN blocks") {
    // A non-finite activation block gives NaN outputs, as in the per-row kernels.
    QuantCase problem(DType::Q8_0, 12, 20, 64);
    problem.x[3 * 64 + 40] = INFINITY;
    const auto level = blip::quant::max_cpu_level();
    const auto y = problem.all_rows(level);
    CHECK(bit_identical(y, problem.one_row_at_a_time(level)));
    CHECK(std::isnan(y[3 * 20]));
    CHECK(!std::isnan(y[2 * 20]));
}

TEST_CASE("many-row block32 gemm is bit-identical for 1, 2 and 3 threads") {
    ThreadCountGuard guard;
    const QuantCase problem(DType::Q8_0, 200, 400, 512);
    std::vector<float> results[3];
    for (int threads : {1, 2, 3}) {
        blip::set_num_threads(threads);
        results[threads - 1] = problem.all_rows(blip::quant::max_cpu_level());
    }
    CHECK(bit_identical(results[0], results[1]));
    CHECK(bit_identical(results[0], results[2]));
}

}  // namespace test_quant_many_rows
