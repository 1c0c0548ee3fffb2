// LargeBuffer: alignment, reuse of freed large blocks, moves and copies.
#include <doctest/doctest.h>

#include <cstdint>
#include <numeric>

#include "blip/core/large_buffer.hpp"

namespace {

bool aligned(const void* pointer, std::size_t alignment) {
    return reinterpret_cast<std::uintptr_t>(pointer) % alignment == 0;
}

}  // namespace

TEST_CASE("buffers aligned at several sizes") {
    for (const std::size_t size : {std::size_t{1}, std::size_t{1000}, std::size_t{3} << 20, (std::size_t{5} << 20) + 7}) {
        CAPTURE(size);
        blip::LargeBuffer<float> buffer(size);
        REQUIRE(buffer.size() == size);
        CHECK(aligned(buffer.data(), 64));
#ifdef BLIP_HAVE_HUGE_PAGES
        if (size * sizeof(float) >= blip::detail::kLargeBlockBytes) CHECK(aligned(buffer.data(), blip::detail::kLargeBlockBytes));
#endif
        std::iota(buffer.data(), buffer.data() + size, 0.0f);
        CHECK(buffer.data()[size - 1] == static_cast<float>(size - 1));
    }
    blip::LargeBuffer<float> empty(0);
    CHECK(empty.size() == 0);
    CHECK(empty.data() == nullptr);
}

#ifdef BLIP_HAVE_HUGE_PAGES
TEST_CASE("freed large block is reused") {
    blip::release_kept_buffers();
    const std::size_t size = std::size_t{4} << 20;
    const float* first = nullptr;
    {
        blip::LargeBuffer<float> buffer(size);
        first = buffer.data();
    }
    blip::LargeBuffer<float> again(size);
    CHECK(again.data() == first);
    blip::LargeBuffer<float> other(size);  // the kept block is in use, so this one is new
    CHECK(other.data() != first);
    blip::release_kept_buffers();
}

TEST_CASE("full pool returns oldest blocks") {
    // Mapped but never written, so these blocks take no memory.
    blip::release_kept_buffers();
    const std::size_t small = std::size_t{1} << 20;  // 4 MiB
    const std::size_t large = (blip::detail::kKeptBlockBytes - (std::size_t{2} << 20)) / sizeof(float);
    const float* small_block = nullptr;
    {
        blip::LargeBuffer<float> a(small);
        blip::LargeBuffer<float> b(large);
        small_block = a.data();
    }  // b is freed and kept first. Then a does not fit beside it, so b goes back to the system.
    blip::LargeBuffer<float> small_again(small);
    CHECK(small_again.data() == small_block);
    blip::release_kept_buffers();
}
#endif

TEST_CASE("buffer move and copy") {
    blip::LargeBuffer<std::int32_t> buffer(std::size_t{1} << 20);
    std::iota(buffer.data(), buffer.data() + buffer.size(), 0);
    const std::int32_t* block = buffer.data();

    blip::LargeBuffer<std::int32_t> moved(std::move(buffer));
    CHECK(moved.data() == block);
    CHECK(buffer.size() == 0);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    CHECK(buffer.data() == nullptr);

    const blip::LargeBuffer<std::int32_t> copy(moved);
    REQUIRE(copy.size() == moved.size());
    CHECK(copy.data() != moved.data());
    CHECK(copy.data()[12345] == 12345);

    blip::LargeBuffer<std::int32_t> assigned;
    assigned = copy;
    CHECK(assigned.data()[moved.size() - 1] == static_cast<std::int32_t>(moved.size() - 1));
}
