// Thread count of the kernels and a parallel loop over independent tasks. Kernels number
// their tasks by fixed-size tiles of the output, so the thread that runs a task never
// changes its result: outputs are bit-identical for every thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "blip/core/error.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace blip {

namespace detail {
// Requested thread count; 0 means OpenMP's default (usually one per core).
inline int& requested_threads() {
    static int threads = 0;
    return threads;
}
}  // namespace detail

// Sets how many threads the kernels use; 0 restores OpenMP's default. Builds without
// OpenMP always run on one thread. Not meant to be called while a model is running.
inline void set_num_threads(int threads) {
    if (threads < 0)
        throw Error("set_num_threads: thread count " + std::to_string(threads) + " is negative (use 0 for the default)");
    detail::requested_threads() = threads;
}

// Number of threads the next kernel call may use.
inline int num_threads() {
#ifdef _OPENMP
    const int requested = detail::requested_threads();
    return requested > 0 ? requested : std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}

// Smallest amount of work, counted in multiply-adds or similar element operations, worth
// giving to one more thread. Below it, starting and joining threads costs more than it
// saves. An OpenMP fork and join of 2 threads took about 1.3 us on an AMD EPYC (Zen 4, 2
// vCPUs, GCC 12 libgomp), while 2^17 multiply-adds take some 10 to 30 us. With this value a
// decoder step's cross-attention and its 768-wide products run on every thread. When other
// processes compete for the cores, set fewer threads with set_num_threads.
inline constexpr std::int64_t kMinWorkPerThread = std::int64_t{1} << 17;

// Number of threads worth using for `work` operations: at least 1, at most num_threads().
inline int threads_for_work(std::int64_t work) {
    const std::int64_t useful = std::max<std::int64_t>(1, work / kMinWorkPerThread);
    return static_cast<int>(std::min<std::int64_t>(num_threads(), useful));
}

// Calls `body(task, worker)` once for every task in [0, count), on at most `max_workers`
// threads (0: num_threads()). `worker` is below the number of threads used, so a body can
// index per-thread scratch with it. Tasks must be independent, and `body` must not throw,
// because an exception cannot leave an OpenMP region.
template <class Body>
void parallel_for(std::int64_t count, Body&& body, int max_workers = 0) {
    if (count <= 0) return;
    int workers = num_threads();
    if (max_workers > 0) workers = std::min(workers, max_workers);
    if (static_cast<std::int64_t>(workers) > count) workers = static_cast<int>(count);
#ifdef _OPENMP
    if (workers > 1) {
#pragma omp parallel for schedule(static) num_threads(workers)
        for (std::int64_t task = 0; task < count; ++task) body(task, omp_get_thread_num());
        return;
    }
#endif
    for (std::int64_t task = 0; task < count; ++task) body(task, 0);
}

// Number of tiles of `tile` items that cover `count` items.
inline std::int64_t tile_count(std::int64_t count, std::int64_t tile) { return (count + tile - 1) / tile; }

}  // namespace blip
