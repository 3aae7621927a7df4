/* test_clock.c - the time helpers: clock_after's deadlines for pthread_cond_timedwait */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>
#include "testexit.h"
#include "clock.h"

static int64_t
ns_of (struct timespec ts)
{
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Each deadline lies ms after the time read before it and at most that after the time read after
 * it, with its nanoseconds below a second (pthread_cond_timedwait refuses more: EINVAL). */
static void
test_after_is_ms_from_now (void **state)
{
    (void) state;
    static const int64_t ms [] = { 0, 1, 50, 999, 1000, 1001, 1999, 60000, 86400000 };
    static const clockid_t clocks [] = { CLOCK_MONOTONIC, CLOCK_REALTIME };
    for (size_t c = 0; c < sizeof clocks / sizeof clocks [0]; c++)
        for (size_t i = 0; i < sizeof ms / sizeof ms [0]; i++) {
            struct timespec before, after;
            clock_gettime (clocks [c], &before);
            struct timespec at = clock_after (clocks [c], ms [i]);
            clock_gettime (clocks [c], &after);
            assert_true (at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
            assert_true (ns_of (at) >= ns_of (before) + ms [i] * 1000000);
            assert_true (ns_of (at) <= ns_of (after) + ms [i] * 1000000);
        }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_after_is_ms_from_now),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
