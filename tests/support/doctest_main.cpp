// doctest entry point shared by every test program. A program in which any case was
// skipped (golden data missing) exits with kSkipExitCode so that CTest reports it as
// skipped instead of passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "support/golden.hpp"

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int result = context.run();
    if (context.shouldExit() || result != 0) return result;
    const int skipped = blip_test::skipped_count();
    if (skipped > 0) {
        std::printf("%d test case(s) skipped: %s\n", skipped, blip_test::first_skip_reason().c_str());
        return blip_test::kSkipExitCode;
    }
    return 0;
}
