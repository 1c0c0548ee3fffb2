// Decoding steps of one row allocate no memory, because the decoder state owns every buffer.
// Counts calls to malloc by wrapping glibc's allocator, so the check runs on glibc only.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "blip/model/caption.hpp"
#include "convert/convert.hpp"
#include "support/golden.hpp"
#include "support/golden_models.hpp"

#if defined(__GLIBC__)
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* pointer, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
}

namespace {
std::atomic<bool> counting{false};
std::atomic<std::int64_t> allocations{0};
void count_allocation() {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(std::size_t size) {
    count_allocation();
    return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
    count_allocation();
    return __libc_calloc(count, size);
}
void* realloc(void* pointer, std::size_t size) {
    count_allocation();
    return __libc_realloc(pointer, size);
}
void* memalign(std::size_t alignment, std::size_t size) {
    count_allocation();
    return __libc_memalign(alignment, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
    count_allocation();
    return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
    count_allocation();
    *out = __libc_memalign(alignment, size);
    return *out ? 0 : 12;  // ENOMEM
}
}
#endif

TEST_CASE("decoding steps allocate nothing") {
#if !defined(__GLIBC__)
    blip_test::skip_case("counting allocations needs glibc");
    return;
#else
    BLIP_REQUIRE_GOLDEN();
    const blip::BlipForConditionalGeneration model(
        blip::gguf::File::open(blip_test::converted_golden_model("decode_allocations", "tiny-caption")));
    const std::vector<float> embeds(static_cast<std::size_t>(model.vision_model.num_tokens() *
                                                             model.config.vision.hidden_size),
                                    0.5f);

    const std::int64_t steps = 20;
    blip::DecoderState state = model.decoder_state(embeds, steps, 1);
    std::int32_t token = model.config.tokens.bos;
    counting = true;
    for (std::int64_t step = 0; step < steps; ++step) {
        const float* logits = model.text_decoder.decode(state, &token, 1);
        token = blip::argmax(logits, model.config.text.vocab_size);
    }
    counting = false;
    CHECK(allocations.load() == 0);
    CHECK(state.self_cache.length(0) == steps);
#endif
}
