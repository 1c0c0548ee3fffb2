#include "machine_limits.hpp"

#include "blip/core/error.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <thread>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define BLIP_BENCH_X86 1
#include <immintrin.h>
#else
#define BLIP_BENCH_X86 0
#endif

namespace blip::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs work(thread_index) on `threads` threads that start together, and returns the wall
// time from the common start until the last thread finished.
template <class Work>
double run_on_threads(int threads, Work work) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
            work(t);
        });
    }
    while (ready.load() < threads) std::this_thread::yield();
    const auto start = Clock::now();
    go.store(true, std::memory_order_release);
    for (auto& thread : pool) thread.join();
    return seconds_since(start);
}

std::string join(const std::vector<std::string>& items, const char* separator) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += separator;
        out += items[i];
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// FMA kernels. Each runs kFmaChains independent dependency chains, c = c * a + b. The FMA
// units stay busy while kFmaChains >= latency x FMA pipes, which is 4 x 2 = 8 on AMD Zen 4
// and on Intel cores since Skylake. a and b keep every chain near 1, so no denormal slows it.

constexpr int kFmaChains = 12;
constexpr float kFmaScale = 0.999999f;
constexpr float kFmaOffset = 1e-6f;

#if BLIP_BENCH_X86
// Adds the 16 lanes through memory: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized.
__attribute__((target("avx512f"))) float sum_lanes_avx512f(__m512 value) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, value);
    float total = 0.0f;
    for (float lane : lanes) total += lane;
    return total;
}

__attribute__((target("avx512f"))) float fma_chains_avx512f(std::int64_t iterations, float seed) {
    const __m512 a = _mm512_set1_ps(kFmaScale);
    const __m512 b = _mm512_set1_ps(kFmaOffset);
    __m512 c0 = _mm512_set1_ps(seed), c1 = _mm512_set1_ps(seed + 0.01f), c2 = _mm512_set1_ps(seed + 0.02f),
           c3 = _mm512_set1_ps(seed + 0.03f), c4 = _mm512_set1_ps(seed + 0.04f), c5 = _mm512_set1_ps(seed + 0.05f),
           c6 = _mm512_set1_ps(seed + 0.06f), c7 = _mm512_set1_ps(seed + 0.07f), c8 = _mm512_set1_ps(seed + 0.08f),
           c9 = _mm512_set1_ps(seed + 0.09f), c10 = _mm512_set1_ps(seed + 0.10f), c11 = _mm512_set1_ps(seed + 0.11f);
    for (std::int64_t i = 0; i < iterations; ++i) {
        c0 = _mm512_fmadd_ps(c0, a, b);
        c1 = _mm512_fmadd_ps(c1, a, b);
        c2 = _mm512_fmadd_ps(c2, a, b);
        c3 = _mm512_fmadd_ps(c3, a, b);
        c4 = _mm512_fmadd_ps(c4, a, b);
        c5 = _mm512_fmadd_ps(c5, a, b);
        c6 = _mm512_fmadd_ps(c6, a, b);
        c7 = _mm512_fmadd_ps(c7, a, b);
        c8 = _mm512_fmadd_ps(c8, a, b);
        c9 = _mm512_fmadd_ps(c9, a, b);
        c10 = _mm512_fmadd_ps(c10, a, b);
        c11 = _mm512_fmadd_ps(c11, a, b);
    }
    const __m512 sum = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                      _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7))),
        _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return sum_lanes_avx512f(sum);
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2(std::int64_t iterations, float seed) {
    const __m256 a = _mm256_set1_ps(kFmaScale);
    const __m256 b = _mm256_set1_ps(kFmaOffset);
    __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_set1_ps(seed + 0.01f), c2 = _mm256_set1_ps(seed + 0.02f),
           c3 = _mm256_set1_ps(seed + 0.03f), c4 = _mm256_set1_ps(seed + 0.04f), c5 = _mm256_set1_ps(seed + 0.05f),
           c6 = _mm256_set1_ps(seed + 0.06f), c7 = _mm256_set1_ps(seed + 0.07f), c8 = _mm256_set1_ps(seed + 0.08f),
           c9 = _mm256_set1_ps(seed + 0.09f), c10 = _mm256_set1_ps(seed + 0.10f), c11 = _mm256_set1_ps(seed + 0.11f);
    for (std::int64_t i = 0; i < iterations; ++i) {
        c0 = _mm256_fmadd_ps(c0, a, b);
        c1 = _mm256_fmadd_ps(c1, a, b);
        c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b);
        c4 = _mm256_fmadd_ps(c4, a, b);
        c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b);
        c7 = _mm256_fmadd_ps(c7, a, b);
        c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b);
        c10 = _mm256_fmadd_ps(c10, a, b);
        c11 = _mm256_fmadd_ps(c11, a, b);
    }
    const __m256 sum = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                      _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7))),
        _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, sum);
    float total = 0.0f;
    for (float lane : lanes) total += lane;
    return total;
}
#endif

// Plain C++ with kPortableLanes chains. How much of it runs as vector FMA depends on the
// compiler's target flags, so its result is a lower bound, not the machine's peak.
constexpr int kPortableLanes = 64;

float fma_chains_portable(std::int64_t iterations, float seed) {
    float c[kPortableLanes];
    for (int j = 0; j < kPortableLanes; ++j) c[j] = seed + 0.001f * static_cast<float>(j);
    for (std::int64_t i = 0; i < iterations; ++i) {
        for (int j = 0; j < kPortableLanes; ++j) c[j] = c[j] * kFmaScale + kFmaOffset;
    }
    float total = 0.0f;
    for (float value : c) total += value;
    return total;
}

struct FmaKernel {
    float (*run)(std::int64_t iterations, float seed);
    double flops_per_iteration;
};

FmaKernel fma_kernel(const std::string& isa) {
#if BLIP_BENCH_X86
    if (isa == "avx512f") return {fma_chains_avx512f, 2.0 * 16 * kFmaChains};
    if (isa == "avx2") return {fma_chains_avx2, 2.0 * 8 * kFmaChains};
#endif
    if (isa == "portable") return {fma_chains_portable, 2.0 * kPortableLanes};
    throw Error("FMA kernel for ISA '" + isa + "' is not available on this CPU; use one of: " +
                join(available_isas(), ", "));
}

// ---------------------------------------------------------------------------------------
// Read kernels: sum a slice of floats with four independent accumulators, so the adds never
// wait on each other and the loads are the only limit. The caller passes a `count` that is a
// multiple of 64.

#if BLIP_BENCH_X86
__attribute__((target("avx512f"))) float sum_floats_avx512f(const float* data, std::size_t count) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    for (std::size_t i = 0; i < count; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(data + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(data + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(data + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(data + i + 48));
    }
    return sum_lanes_avx512f(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx2"))) float sum_floats_avx2(const float* data, std::size_t count) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (std::size_t i = 0; i < count; i += 64) {
        s0 = _mm256_add_ps(s0, _mm256_add_ps(_mm256_load_ps(data + i), _mm256_load_ps(data + i + 8)));
        s1 = _mm256_add_ps(s1, _mm256_add_ps(_mm256_load_ps(data + i + 16), _mm256_load_ps(data + i + 24)));
        s2 = _mm256_add_ps(s2, _mm256_add_ps(_mm256_load_ps(data + i + 32), _mm256_load_ps(data + i + 40)));
        s3 = _mm256_add_ps(s3, _mm256_add_ps(_mm256_load_ps(data + i + 48), _mm256_load_ps(data + i + 56)));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    float total = 0.0f;
    for (float lane : lanes) total += lane;
    return total;
}
#endif

float sum_floats_portable(const float* data, std::size_t count) {
    float s[16] = {};
    for (std::size_t i = 0; i < count; i += 16) {
        for (int j = 0; j < 16; ++j) s[j] += data[i + static_cast<std::size_t>(j)];
    }
    float total = 0.0f;
    for (float value : s) total += value;
    return total;
}

using SumKernel = float (*)(const float*, std::size_t);

SumKernel sum_kernel(const std::string& isa) {
#if BLIP_BENCH_X86
    if (isa == "avx512f") return sum_floats_avx512f;
    if (isa == "avx2") return sum_floats_avx2;
#endif
    return sum_floats_portable;
}

struct AlignedFree {
    void operator()(float* p) const { std::free(p); }
};

std::size_t read_cache_size_bytes(const std::string& text) {
    // sysfs writes sizes as "32768K" or "2M".
    std::size_t value = 0;
    std::size_t i = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        value = value * 10 + static_cast<std::size_t>(text[i] - '0');
        ++i;
    }
    if (i < text.size() && (text[i] == 'K' || text[i] == 'k')) value *= 1024;
    if (i < text.size() && (text[i] == 'M' || text[i] == 'm')) value *= 1024 * 1024;
    return value;
}

}  // namespace

std::vector<std::string> available_isas() {
    std::vector<std::string> isas;
#if BLIP_BENCH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) isas.push_back("avx512f");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back("avx2");
#endif
    isas.push_back("portable");
    return isas;
}

CpuInfo describe_cpu() {
    CpuInfo info;
    info.model_name = "unknown";
    info.logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos && colon + 2 <= line.size()) info.model_name = line.substr(colon + 2);
            break;
        }
    }
    // The last-level cache is the cache index with the highest level that sysfs lists.
    int best_level = 0;
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        std::ifstream level_file(dir + "level");
        std::ifstream size_file(dir + "size");
        int level = 0;
        std::string size_text;
        if (!(level_file >> level) || !(size_file >> size_text)) continue;
        if (level > best_level) {
            best_level = level;
            info.last_level_cache_bytes = read_cache_size_bytes(size_text);
        }
    }
    info.vector_isas = available_isas();
    return info;
}

FmaLimit measure_fma(const std::string& isa, int threads, double seconds, int repeats) {
    if (threads < 1) throw Error("measure_fma: thread count must be at least 1");
    const FmaKernel kernel = fma_kernel(isa);
    std::atomic<float> sink{0.0f};

    // Calibrate on one thread: grow the iteration count until one run takes >= 20 ms, then
    // scale it to `seconds`.
    std::int64_t iterations = 1 << 14;
    double elapsed = 0.0;
    for (;;) {
        const auto start = Clock::now();
        sink.store(kernel.run(iterations, 1.0f));
        elapsed = seconds_since(start);
        if (elapsed >= 0.02 || iterations > (std::int64_t(1) << 40)) break;
        iterations *= 4;
    }
    iterations = std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(iterations) * seconds / elapsed));

    FmaLimit limit;
    limit.isa = isa;
    limit.threads = threads;
    for (int r = 0; r < repeats; ++r) {
        const double wall = run_on_threads(threads, [&](int t) {
            const float result = kernel.run(iterations, 1.0f + 0.001f * static_cast<float>(t));
            sink.store(result, std::memory_order_relaxed);
        });
        const double gflops = kernel.flops_per_iteration * static_cast<double>(iterations) * threads / wall / 1e9;
        limit.gflops = std::max(limit.gflops, gflops);
    }
    return limit;
}

BandwidthLimit measure_read_bandwidth(int threads, std::size_t buffer_bytes, int repeats) {
    if (threads < 1) throw Error("measure_read_bandwidth: thread count must be at least 1");
    if (buffer_bytes == 0) {
        const std::size_t llc = describe_cpu().last_level_cache_bytes;
        buffer_bytes = std::max<std::size_t>(std::size_t(256) << 20, 8 * llc);
    }
    // Every thread's slice is a whole number of 64-float (256-byte) groups.
    const std::size_t group = 64;
    const std::size_t groups = buffer_bytes / sizeof(float) / group;
    const std::size_t count = groups * group;
    buffer_bytes = count * sizeof(float);
    std::unique_ptr<float, AlignedFree> buffer(static_cast<float*>(std::aligned_alloc(64, buffer_bytes)));
    if (!buffer) throw std::bad_alloc();
    float* data = buffer.get();
    for (std::size_t i = 0; i < count; ++i) data[i] = static_cast<float>(i & 1023) * 1e-3f;

    const SumKernel kernel = sum_kernel(available_isas().front());
    std::atomic<float> sink{0.0f};
    const int passes = 8;

    BandwidthLimit limit;
    limit.isa = available_isas().front();
    limit.threads = threads;
    limit.buffer_bytes = buffer_bytes;
    for (int r = 0; r < repeats; ++r) {
        const double wall = run_on_threads(threads, [&](int t) {
            const std::size_t begin = groups * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads) * group;
            const std::size_t end = groups * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads) * group;
            float total = 0.0f;
            for (int pass = 0; pass < passes; ++pass) total += kernel(data + begin, end - begin);
            sink.store(total, std::memory_order_relaxed);
        });
        const double gbytes = static_cast<double>(buffer_bytes) * passes / wall / 1e9;
        limit.gbytes_per_s = std::max(limit.gbytes_per_s, gbytes);
    }
    return limit;
}

const FmaLimit& MachineLimits::fma_for(int threads) const {
    if (fma.empty()) throw Error("MachineLimits::fma_for: no FMA measurement");
    const FmaLimit* best = &fma.front();
    for (const auto& entry : fma) {
        if (entry.threads <= threads) best = &entry;
    }
    return *best;
}

const BandwidthLimit& MachineLimits::bandwidth_for(int threads) const {
    if (bandwidth.empty()) throw Error("MachineLimits::bandwidth_for: no bandwidth measurement");
    const BandwidthLimit* best = &bandwidth.front();
    for (const auto& entry : bandwidth) {
        if (entry.threads <= threads) best = &entry;
    }
    return *best;
}

MachineLimits measure_machine_limits(std::vector<int> thread_counts) {
    thread_counts.push_back(1);
    std::sort(thread_counts.begin(), thread_counts.end());
    thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
    thread_counts.erase(std::remove_if(thread_counts.begin(), thread_counts.end(), [](int n) { return n < 1; }),
                        thread_counts.end());

    MachineLimits limits;
    limits.cpu = describe_cpu();
    const std::string widest = limits.cpu.vector_isas.front();
    for (int threads : thread_counts) limits.fma.push_back(measure_fma(widest, threads));
    for (std::size_t i = 1; i < limits.cpu.vector_isas.size(); ++i)
        limits.fma_other_isas.push_back(measure_fma(limits.cpu.vector_isas[i], 1));
    for (int threads : thread_counts) limits.bandwidth.push_back(measure_read_bandwidth(threads));
    return limits;
}

std::string format_machine_limits(const MachineLimits& limits) {
    std::ostringstream out;
    char buffer[256];
    out << "CPU: " << limits.cpu.model_name << ", " << limits.cpu.logical_cpus << " logical CPUs";
    if (limits.cpu.last_level_cache_bytes > 0)
        out << ", last-level cache " << (limits.cpu.last_level_cache_bytes >> 20) << " MiB";
    out << ", vector ISAs: " << join(limits.cpu.vector_isas, " ") << "\n";
    for (const auto& fma : limits.fma) {
        std::snprintf(buffer, sizeof buffer, "FMA peak f32 (%s): %d thread%s %.1f GFLOP/s (%.1f per thread)\n",
                      fma.isa.c_str(), fma.threads, fma.threads == 1 ? "" : "s", fma.gflops, fma.gflops_per_thread());
        out << buffer;
    }
    for (const auto& fma : limits.fma_other_isas) {
        std::snprintf(buffer, sizeof buffer, "FMA f32 with %s, for reference: %d thread %.1f GFLOP/s\n",
                      fma.isa.c_str(), fma.threads, fma.gflops);
        out << buffer;
    }
    for (const auto& bw : limits.bandwidth) {
        std::snprintf(buffer, sizeof buffer, "Read bandwidth (%s, %zu MiB buffer): %d thread%s %.1f GB/s\n",
                      bw.isa.c_str(), bw.buffer_bytes >> 20, bw.threads, bw.threads == 1 ? "" : "s", bw.gbytes_per_s);
        out << buffer;
    }
    return out.str();
}

}  // namespace blip::bench
