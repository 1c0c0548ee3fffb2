// Helpers for tests that compare against the reference data in the golden folder:
// locating the folder, skipping when it is absent, and reading .npy and JSON files.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace blip_test {

namespace fs = std::filesystem;

// CTest's SKIP_RETURN_CODE for our test programs.
inline constexpr int kSkipExitCode = 77;

inline int& skip_counter() {
    static int count = 0;
    return count;
}
inline std::string& skip_reason() {
    static std::string reason;
    return reason;
}
inline int skipped_count() { return skip_counter(); }
inline std::string first_skip_reason() { return skip_reason(); }

// Marks the current test case as skipped with `reason`; the caller returns right after.
inline void skip_case(const std::string& reason) {
    if (skip_counter()++ == 0) skip_reason() = reason;
    MESSAGE("SKIPPED: " << reason);
}

// The golden folder: $BLIP_GOLDEN_DIR, else ../shared/golden beside the source tree.
inline fs::path golden_dir() {
    if (const char* env = std::getenv("BLIP_GOLDEN_DIR"); env && *env) return fs::path(env);
    return fs::path(BLIP_SOURCE_DIR) / ".." / "shared" / "golden";
}

inline bool golden_available() { return fs::is_regular_file(golden_dir() / "README.md"); }

// Use at the start of a test case: `BLIP_REQUIRE_GOLDEN();`.
#define BLIP_REQUIRE_GOLDEN()                                                                  \
    do {                                                                                       \
        if (!::blip_test::golden_available()) {                                                \
            ::blip_test::skip_case("golden data not found at " +                               \
                                   ::blip_test::golden_dir().string() +                         \
                                   " (set BLIP_GOLDEN_DIR)");                                   \
            return;                                                                            \
        }                                                                                      \
    } while (0)

// A folder for files that tests write, inside the build tree.
// Returns the cosine similarity of `actual` and `expected` (any indexable sequence of
// numbers), summed in double, or NaN when their sizes differ.
template <class Values>
double cosine_similarity(const std::vector<float>& actual, const Values& expected) {
    if (actual.size() != static_cast<std::size_t>(expected.size())) return NAN;
    double dot = 0, actual_norm = 0, expected_norm = 0;
    for (std::size_t i = 0; i < actual.size(); ++i) {
        const double a = actual[i];
        const double e = expected[i];
        dot += a * e;
        actual_norm += a * a;
        expected_norm += e * e;
    }
    return dot / std::sqrt(actual_norm * expected_norm);
}

inline fs::path scratch_dir(const std::string& name) {
    fs::path dir = fs::path(BLIP_BINARY_DIR) / "test-scratch" / name;
    fs::create_directories(dir);
    return dir;
}

inline std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path.string());
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

inline nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(read_text(path)); }

// A .npy array: shape and data converted to double (float32, float64, uint8, int64 sources).
struct NpyArray {
    std::vector<std::int64_t> shape;
    std::vector<double> data;
    std::string dtype;  // numpy descr, for example "<f4" or "|u1"
    std::size_t size() const { return data.size(); }
};

inline NpyArray read_npy(const fs::path& path) {
    const std::string bytes = read_text(path);
    if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
        throw std::runtime_error(path.string() + ": not a .npy file");
    const int major = static_cast<unsigned char>(bytes[6]);
    std::size_t header_len = 0, header_start = 0;
    if (major == 1) {
        header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
        header_start = 10;
    } else {
        std::uint32_t len = 0;
        std::memcpy(&len, bytes.data() + 8, 4);
        header_len = len;
        header_start = 12;
    }
    const std::string header = bytes.substr(header_start, header_len);
    auto field = [&](const std::string& key) {
        auto pos = header.find("'" + key + "'");
        if (pos == std::string::npos) throw std::runtime_error(path.string() + ": no " + key);
        return header.substr(header.find(':', pos) + 1);
    };
    NpyArray array;
    {
        std::string d = field("descr");
        auto q1 = d.find('\'');
        auto q2 = d.find('\'', q1 + 1);
        array.dtype = d.substr(q1 + 1, q2 - q1 - 1);
    }
    if (field("fortran_order").find("True") < field("fortran_order").find(','))
        throw std::runtime_error(path.string() + ": Fortran order not supported");
    {
        std::string s = field("shape");
        s = s.substr(s.find('(') + 1, s.find(')') - s.find('(') - 1);
        std::stringstream ss(s);
        std::string item;
        while (std::getline(ss, item, ',')) {
            if (item.find_first_of("0123456789") != std::string::npos) array.shape.push_back(std::stoll(item));
        }
    }
    std::size_t count = 1;
    for (auto d : array.shape) count *= static_cast<std::size_t>(d);
    const char* p = bytes.data() + header_start + header_len;
    const std::size_t available = bytes.size() - header_start - header_len;
    array.data.resize(count);
    auto load = [&](auto tag) {
        using T = decltype(tag);
        if (available < count * sizeof(T)) throw std::runtime_error(path.string() + ": truncated data");
        for (std::size_t i = 0; i < count; ++i) {
            T v;
            std::memcpy(&v, p + i * sizeof(T), sizeof(T));
            array.data[i] = static_cast<double>(v);
        }
    };
    if (array.dtype == "<f4") load(float{});
    else if (array.dtype == "<f8") load(double{});
    else if (array.dtype == "|u1") load(std::uint8_t{});
    else if (array.dtype == "<i8") load(std::int64_t{});
    else if (array.dtype == "<i4") load(std::int32_t{});
    else throw std::runtime_error(path.string() + ": unsupported dtype " + array.dtype);
    return array;
}

// Largest absolute difference between `actual` and `expected` (sizes must match).
template <class Actual>
double max_abs_diff(const Actual& actual, const NpyArray& expected) {
    double worst = 0;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        double d = std::abs(static_cast<double>(actual[i]) - expected.data[i]);
        if (!(d <= worst)) worst = d;  // NaN propagates as the worst value
    }
    return worst;
}

}  // namespace blip_test
