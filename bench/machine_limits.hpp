// Measured limits of the machine that runs the benchmark: peak float32 FMA throughput and
// memory read bandwidth, for one thread and for several. The benchmark divides each stage's
// speed by these numbers, so a result reads as "x% of what this machine can do".
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace blip::bench {

// Description of the CPU as the operating system reports it.
struct CpuInfo {
    std::string model_name;  // "model name" of /proc/cpuinfo, or "unknown"
    int logical_cpus = 0;    // std::thread::hardware_concurrency()
    std::vector<std::string> vector_isas;  // supported ones among avx512f, avx2+fma, ...
    std::size_t last_level_cache_bytes = 0;  // 0 when the size could not be read
};

CpuInfo describe_cpu();

// Peak float32 FMA throughput: every thread runs independent chains of vector FMAs on
// registers, so no memory access limits it. One FMA counts as two floating-point operations.
struct FmaLimit {
    std::string isa;       // instruction set of the kernel, e.g. "avx512f"
    int threads = 0;
    double gflops = 0.0;   // all threads together, 1e9 FLOP/s
    double gflops_per_thread() const { return threads > 0 ? gflops / threads : 0.0; }
};

// Streaming read bandwidth of a buffer much larger than the last-level cache, each thread
// summing its own contiguous slice.
struct BandwidthLimit {
    std::string isa;
    int threads = 0;
    std::size_t buffer_bytes = 0;
    double gbytes_per_s = 0.0;  // 1e9 bytes/s, all threads together
};

// Vector instruction sets with an FMA kernel on this CPU, widest first. The last entry is
// always "portable", plain C++ that the compiler vectorizes as its target flags allow.
std::vector<std::string> available_isas();

// Measures FMA throughput with `isa` (one of available_isas()) on `threads` threads. Each
// timed run lasts about `seconds`; the best of `repeats` runs is returned, since other
// processes can only slow a run down.
FmaLimit measure_fma(const std::string& isa, int threads, double seconds = 0.2, int repeats = 5);

// Measures read bandwidth on `threads` threads over a buffer of `buffer_bytes` (0 picks
// max(256 MiB, 8 x last-level cache)). Best of `repeats` timed runs.
BandwidthLimit measure_read_bandwidth(int threads, std::size_t buffer_bytes = 0, int repeats = 5);

// Everything the benchmark divides by: FMA and bandwidth for one thread and for each
// requested thread count, measured with the widest ISA.
struct MachineLimits {
    CpuInfo cpu;
    std::vector<FmaLimit> fma;              // one entry per thread count, ascending
    std::vector<FmaLimit> fma_other_isas;   // one thread, every narrower ISA, for reference
    std::vector<BandwidthLimit> bandwidth;  // one entry per thread count, ascending

    // Returns the entry for `threads`, or the one with the largest thread count below it.
    const FmaLimit& fma_for(int threads) const;
    const BandwidthLimit& bandwidth_for(int threads) const;
};

MachineLimits measure_machine_limits(std::vector<int> thread_counts);

// Writes a human-readable summary to a string, one line per measurement.
std::string format_machine_limits(const MachineLimits& limits);

}  // namespace blip::bench
