/*
 * A minimal test runner for the C unit tests: CHECK records a failure and goes on, each
 * test is a function, and main() reports "N passed, N failed". A test that makes no check
 * counts as failed.
 */
#ifndef MF_UNIT_H
#define MF_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failures, unit_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        unit_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            unit_failures++;                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b) CHECK((a) == (b))

typedef void (*unit_fn)(void);
struct unit_test {
    const char *name;
    unit_fn fn;
};

static int unit_run(const struct unit_test *tests)
{
    int passed = 0, failed = 0;

    for (const struct unit_test *t = tests; t->name; t++) {
        int before = unit_failures, checks = unit_checks;
        t->fn();
        if (unit_checks == checks) {
            /* A test that checks nothing cannot fail: count it as failed. */
            unit_failures++;
            fprintf(stderr, "%s: made no checks\n", t->name);
        }
        if (unit_failures == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", t->name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
