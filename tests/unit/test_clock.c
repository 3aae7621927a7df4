/* test_clock.c - the time helpers: clock_after's deadlines for pthread_cond_timedwait, and
 * RFC 3339 times read from requests ("events --since") */
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

/* What an operator may write, and what must be refused rather than read as another time: a date
 * that does not exist (timegm rolled 2026-02-31 into March) or fields padded with spaces */
static void
test_parse_rfc3339 (void **state)
{
    (void) state;
    int64_t t = -1;
    assert_int_equal (clock_parse_rfc3339 ("2026-01-31T12:00:00Z", &t), 0);
    assert_int_equal (t, 1769860800);
    assert_int_equal (clock_parse_rfc3339 ("2026-01-31", &t), 0);
    assert_int_equal (t, 1769817600);
    assert_int_equal (clock_parse_rfc3339 ("2026-01-31t14:30:00.25+02:30", &t), 0);
    assert_int_equal (t, 1769860800);
    assert_int_equal (clock_parse_rfc3339 ("2024-02-29T00:00:00Z", &t), 0);    /* a leap year */
    assert_int_equal (t, 1709164800);
    assert_int_equal (clock_parse_rfc3339 ("2000-02-29", &t), 0);
    assert_int_equal (clock_parse_rfc3339 ("2026-12-31T23:59:59-00:00", &t), 0);
    static const char *const bad [] = {
        "2026-02-31", "2026-02-29", "1900-02-29", "2026-04-31T00:00:00Z", "2026-06-31", "2026-13-01",
        "2026-00-10", "2026-01-00", "1999- 1- 1", "2026-1-01", " 2026-01-01", "2026-01- 1",
        "2026-01-01T 1:00:00Z", "2026-01-01T01: 0:00Z", "2026-01-01T01:00: 0Z", "2026-01-01T01:00:00+ 1:00",
        "2026-01-01T01:00:00+01: 0", "+026-01-01", "-026-01-01", "2026-+1-01", "2026-01-01T+1:00:00Z",
        "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00Zx",
        "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+01:00", "yesterday", "",
    };
    int accepted = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        if (clock_parse_rfc3339 (bad [i], &t) == 0) {
            print_error ("\"%s\" was read as %lld\n", bad [i], (long long) t);
            accepted++;
        }
    assert_int_equal (accepted, 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_after_is_ms_from_now),
        cmocka_unit_test (test_parse_rfc3339),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
