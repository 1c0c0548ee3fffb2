// doctest entry point shared by every test program. A program in which any case was
// skipped (golden data missing) exits with kSkipExitCode so that CTest reports it as
// skipped instead of passed. A run in which no test case passed the filters fails, so that a
// CTest test whose --source-file filter names no suite of its program cannot pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "support/golden.hpp"

namespace {

// Counts the test cases that passed the command line's filters.
struct SelectedCount : doctest::IReporter {
    static inline unsigned selected = 0;

    explicit SelectedCount(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats& stats) override { selected = stats.numTestCasesPassingFilters; }
    void test_case_start(const doctest::TestCaseData&) override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

DOCTEST_REGISTER_LISTENER("selected_count", 1, SelectedCount);

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int result = context.run();
    if (context.shouldExit() || result != 0) return result;
    if (SelectedCount::selected == 0) {
        std::fprintf(stderr, "no test case passed the filters; check the --source-file and --test-case options\n");
        return 1;
    }
    const int skipped = blip_test::skipped_count();
    if (skipped > 0) {
        std::printf("%d test case(s) skipped: %s\n", skipped, blip_test::first_skip_reason().c_str());
        return blip_test::kSkipExitCode;
    }
    return 0;
}
