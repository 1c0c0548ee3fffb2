// Progress of a run on standard error: a bar redrawn in place when standard error is a
// terminal, plain log lines at a fixed interval otherwise (for batch schedulers' log files).
// Also the timestamped log() that every other message of the tool goes through.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>

namespace capfilt {

inline std::mutex& log_mutex() {
    static std::mutex mutex;
    return mutex;
}

// Set while a progress bar occupies the last terminal line, so that log() clears it first.
inline std::atomic<bool>& bar_visible() {
    static std::atomic<bool> visible{false};
    return visible;
}

// Writes "YYYY-MM-DD HH:MM:SS blip-capfilt: MESSAGE" to standard error.
inline void log(const std::string& message) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &local);
    std::lock_guard<std::mutex> lock(log_mutex());
    if (bar_visible()) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "%s blip-capfilt: %s\n", stamp, message.c_str());
    std::fflush(stderr);
}

// "1h02m03s", "4m05s" or "6s".
inline std::string format_duration(double seconds) {
    if (!(seconds >= 0) || seconds > 1e9) return "?";
    const auto total = static_cast<long long>(seconds + 0.5);
    const long long hours = total / 3600, minutes = total / 60 % 60, secs = total % 60;
    char text[48];
    if (hours > 0) {
        std::snprintf(text, sizeof text, "%lldh%02lldm%02llds", hours, minutes, secs);
    } else if (minutes > 0) {
        std::snprintf(text, sizeof text, "%lldm%02llds", minutes, secs);
    } else {
        std::snprintf(text, sizeof text, "%llds", secs);
    }
    return text;
}

enum class ProgressMode { Auto, Bar, Log, None };

class Progress {
public:
    // `total` counts the records this run will process; `log_interval` is in seconds.
    Progress(ProgressMode mode, std::uint64_t total, double log_interval)
        : mode_(mode), total_(total), log_interval_(log_interval), start_(Clock::now()) {
        if (mode_ == ProgressMode::Auto) mode_ = ::isatty(STDERR_FILENO) ? ProgressMode::Bar : ProgressMode::Log;
    }
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    ~Progress() { stop(); }

    void start() {
        if (mode_ == ProgressMode::None || thread_.joinable()) return;
        start_ = Clock::now();
        thread_ = std::thread([this] { report_loop(); });
    }

    // Stops the reporting thread and prints the final state.
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
        report(true);
    }

    void add_items(std::uint64_t count) { done_ += count; }
    std::uint64_t items_done() const { return done_; }
    double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

private:
    using Clock = std::chrono::steady_clock;

    void report_loop() {
        const double interval = mode_ == ProgressMode::Bar ? 0.25 : log_interval_;
        std::unique_lock<std::mutex> lock(mutex_);
        while (!stopping_) {
            wake_.wait_for(lock, std::chrono::duration<double>(interval), [&] { return stopping_; });
            if (stopping_) break;
            lock.unlock();
            report(false);
            lock.lock();
        }
    }

    void report(bool final) {
        const std::uint64_t done = done_;
        const double elapsed = seconds();
        const double rate = elapsed > 0 ? done / elapsed : 0;
        const double eta = rate > 0 && total_ >= done ? (total_ - done) / rate : -1;
        const double fraction = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
        char text[256];
        if (mode_ == ProgressMode::Bar) {
            constexpr int kWidth = 30;
            const int filled = static_cast<int>(fraction * kWidth);
            std::string bar(static_cast<std::size_t>(std::max(0, std::min(kWidth, filled))), '#');
            bar.resize(kWidth, '.');
            std::snprintf(text, sizeof text, "\r\033[K[%s] %llu/%llu records %5.1f%% %.2f/s ETA %s", bar.c_str(),
                          static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                          fraction * 100, rate, final ? "0s" : format_duration(eta).c_str());
            std::lock_guard<std::mutex> lock(log_mutex());
            std::fputs(text, stderr);
            if (final) {
                std::fputc('\n', stderr);
                bar_visible() = false;
            } else {
                bar_visible() = true;
            }
            std::fflush(stderr);
        } else {
            std::snprintf(text, sizeof text, "%llu/%llu records (%.1f%%), %.2f records/s, ETA %s",
                          static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                          fraction * 100, rate, final ? "0s" : format_duration(eta).c_str());
            log(text);
        }
    }

    ProgressMode mode_;
    std::uint64_t total_;
    double log_interval_;
    Clock::time_point start_;
    std::atomic<std::uint64_t> done_{0};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
};

}  // namespace capfilt
