// The processing pipeline. One reader thread turns work units (list chunks or tar shards)
// into items. Decoding threads read and decode their images and preprocess them for both
// models. Inference threads run CapFilt, one image per thread at a time. Queues between the
// stages are bounded, so reading and decoding stay a fixed number of images ahead of
// inference. When the last item of a unit is done, the thread that finished it hands the
// unit's results to a callback, which writes them out; units may finish out of order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "capfilt.hpp"
#include "files.hpp"
#include "progress.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace capfilt {

// A blocking queue with a maximum size; close() wakes every waiting thread.
template <class T>
class BoundedQueue {
public:
    explicit BoundedQueue(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

    // Returns false when the queue was closed before `value` could be added.
    bool push(T value) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
        if (closed_) return false;
        items_.push_back(std::move(value));
        not_empty_.notify_one();
        return true;
    }

    // Returns nothing when the queue is closed and empty.
    std::optional<T> pop() {
        std::unique_lock<std::mutex> lock(mutex_);
        not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
        if (items_.empty()) return std::nullopt;
        T value = std::move(items_.front());
        items_.pop_front();
        not_full_.notify_one();
        return value;
    }

    // Ends the queue: pushes fail, and pops return what is left, then nothing.
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    // Ends the queue and drops what it holds.
    void abort() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        items_.clear();
        not_empty_.notify_all();
        not_full_.notify_all();
    }

private:
    std::size_t capacity_;
    std::deque<T> items_;
    bool closed_ = false;
    std::mutex mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
};

// Location of an item's image bytes: a file, or a member of a tar file.
struct ImageLocation {
    std::string path;        // file to read
    std::string name;        // name in error messages
    bool in_tar = false;
    std::uint64_t offset = 0;  // tar member data
    std::uint64_t size = 0;
};

// One image-text pair to process.
struct WorkItem {
    ImageLocation image;
    std::optional<std::string> text;
    std::uint64_t seed = 0;
    // Set for a record that could not be parsed, or an image known to be missing: the item
    // skips decoding and inference and its result carries this error.
    std::string error;
};

template <class Payload>
struct WorkUnit {
    std::size_t number = 0;
    Payload payload;
    std::vector<WorkItem> items;
};

struct PipelineOptions {
    int inference_threads = 1;
    int decode_threads = 1;
    std::size_t prefetch = 4;  // decoded images waiting for inference
    blip::DecodeLimits limits;
};

// Reads and decodes an item's image. Throws blip::Error naming the file.
inline blip::ImageU8 load_image(const ImageLocation& location, const blip::DecodeLimits& limits) {
    if (!location.in_tar) return blip::decode_image_file(location.path, limits);
    if (location.size == 0) throw Error(location.name + ": image data is empty");
    if (location.size > static_cast<std::uint64_t>(INT_MAX))
        throw Error(location.name + ": image data is " + std::to_string(location.size) + " bytes, over the " +
                    std::to_string(INT_MAX) + " bytes supported");
    ReadOnlyFile file(location.path);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(location.size));
    file.read_at(location.offset, bytes.data(), bytes.size());
    return blip::decode_image_memory(bytes.data(), bytes.size(), location.name, limits);
}

template <class Payload>
class Pipeline {
public:
    using ReadUnit = std::function<WorkUnit<Payload>(std::size_t index)>;
    using UnitDone = std::function<void(WorkUnit<Payload>&& unit, std::vector<ImageResult>&& results)>;

    Pipeline(const CapfiltModels& models, PipelineOptions options, Progress& progress)
        : models_(models), options_(options), progress_(progress),
          read_queue_(std::max<std::size_t>(options.prefetch, 1)),
          decoded_queue_(std::max<std::size_t>(options.prefetch, 1)) {}

    // Processes units 0 .. unit_count-1, reading each with `read_unit` and handing its
    // results to `done`. Rethrows the first error that is not an image's own failure.
    void run(std::size_t unit_count, const ReadUnit& read_unit, const UnitDone& done) {
        read_unit_ = &read_unit;
        done_ = &done;
        unit_count_ = unit_count;
        std::vector<std::thread> threads;
        active_decoders_ = std::max(1, options_.decode_threads);
        threads.emplace_back([this] { guarded([this] { read_all(); }); });
        for (int i = 0; i < active_decoders_; ++i) threads.emplace_back([this] { guarded([this] { decode_all(); }); });
        for (int i = 0; i < std::max(1, options_.inference_threads); ++i)
            threads.emplace_back([this] { guarded([this] { infer_all(); }); });
        for (std::thread& thread : threads) thread.join();
        if (failure_) std::rethrow_exception(failure_);
    }

private:
    struct Decoded {
        std::size_t unit = 0;
        std::size_t slot = 0;
        WorkItem item;
        std::optional<PreprocessedImage> input;
        std::string error;
    };

    struct Pending {
        WorkUnit<Payload> unit;
        std::vector<ImageResult> results;
        std::size_t remaining = 0;
    };

    // Runs a stage's loop on its own thread. Each stage thread keeps to one core: OpenMP
    // regions that the library opens without a thread count (image resizing) get one thread
    // there instead of a team per stage thread that would compete for the same cores.
    template <class Body>
    void guarded(Body&& body) {
#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        try {
            body();
        } catch (...) {
            {
                std::lock_guard<std::mutex> lock(failure_mutex_);
                if (!failure_) failure_ = std::current_exception();
            }
            read_queue_.abort();
            decoded_queue_.abort();
        }
    }

    bool failed() {
        std::lock_guard<std::mutex> lock(failure_mutex_);
        return failure_ != nullptr;
    }

    void read_all() {
        for (std::size_t index = 0; index < unit_count_ && !failed(); ++index) {
            WorkUnit<Payload> unit = (*read_unit_)(index);
            const std::size_t number = unit.number;
            const std::size_t count = unit.items.size();
            if (count == 0) {
                (*done_)(std::move(unit), {});
                continue;
            }
            // The unit keeps its items for the writer; the queue gets copies.
            const std::vector<WorkItem> items = unit.items;
            {
                std::lock_guard<std::mutex> lock(pending_mutex_);
                Pending& pending = pending_[number];
                pending.unit = std::move(unit);
                pending.results.resize(count);
                pending.remaining = count;
            }
            for (std::size_t slot = 0; slot < count; ++slot)
                if (!read_queue_.push({number, slot, items[slot]})) return;
        }
        read_queue_.close();
    }

    struct Queued {
        std::size_t unit = 0;
        std::size_t slot = 0;
        WorkItem item;
    };

    void decode_all() {
        while (std::optional<Queued> queued = read_queue_.pop()) {
            Decoded decoded;
            decoded.unit = queued->unit;
            decoded.slot = queued->slot;
            decoded.item = std::move(queued->item);
            if (!decoded.item.error.empty()) {
                decoded.error = decoded.item.error;
            } else {
                try {
                    decoded.input = models_.preprocess(load_image(decoded.item.image, options_.limits));
                } catch (const blip::Error& error) {
                    decoded.error = error.what();
                }
            }
            if (!decoded_queue_.push(std::move(decoded))) return;
        }
        if (--active_decoders_ == 0) decoded_queue_.close();
    }

    void infer_all() {
        while (std::optional<Decoded> decoded = decoded_queue_.pop()) {
            ImageResult result;
            if (decoded->input) {
                try {
                    result = models_.run(*decoded->input, decoded->item.text, decoded->item.seed);
                } catch (const blip::Error& error) {
                    result = ImageResult{};
                    result.error = std::string("CapFilt failed: ") + error.what();
                }
            } else {
                result.error = decoded->error;
            }
            finish_item(decoded->unit, decoded->slot, std::move(result));
            progress_.add_items(1);
        }
    }

    void finish_item(std::size_t unit, std::size_t slot, ImageResult&& result) {
        std::optional<Pending> complete;
        {
            std::lock_guard<std::mutex> lock(pending_mutex_);
            Pending& pending = pending_.at(unit);
            pending.results[slot] = std::move(result);
            if (--pending.remaining == 0) {
                complete = std::move(pending);
                pending_.erase(unit);
            }
        }
        if (complete) (*done_)(std::move(complete->unit), std::move(complete->results));
    }

    const CapfiltModels& models_;
    PipelineOptions options_;
    Progress& progress_;
    const ReadUnit* read_unit_ = nullptr;
    const UnitDone* done_ = nullptr;
    std::size_t unit_count_ = 0;

    BoundedQueue<Queued> read_queue_;
    BoundedQueue<Decoded> decoded_queue_;
    std::atomic<int> active_decoders_{0};

    std::mutex pending_mutex_;
    std::map<std::size_t, Pending> pending_;

    std::mutex failure_mutex_;
    std::exception_ptr failure_;
};

}  // namespace capfilt
