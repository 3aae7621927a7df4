/* test_breaker.c - the per-provider circuit breaker: opens on broad failure, one probe when half-open */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "breaker.h"

static void
test_opens_only_on_enough_failures (void **state)
{
    (void) state;
    breaker_t *b = breaker_new (5, 10000, 30000);
    int64_t retry = 0;
    for (int i = 0; i < 4; i++)
        breaker_record (b, "box", 1, 1000 + i);
    assert_false (breaker_is_open (b, "box", 1010));         /* 4 < min_failures */
    for (int i = 0; i < 10; i++)
        breaker_record (b, "box", 0, 1100 + i);              /* successes dilute: 5/15 < half */
    breaker_record (b, "box", 1, 1200);
    assert_false (breaker_is_open (b, "box", 1300));
    assert_true (breaker_allow (b, "box", 1300, &retry));
    /* another provider is not affected by box */
    assert_false (breaker_blocked (b, "drive", 1300, &retry));
    breaker_destroy (&b);
    assert_null (b);
}

static void
test_open_half_open_probe_and_close (void **state)
{
    (void) state;
    breaker_t *b = breaker_new (3, 10000, 20000);
    int64_t retry = 0;
    for (int i = 0; i < 3; i++)
        breaker_record (b, "slack", 1, 1000);
    assert_true (breaker_is_open (b, "slack", 1000));
    assert_true (breaker_blocked (b, "slack", 6000, &retry));
    assert_int_equal (retry, 15);                            /* 15 s left, rounded up */
    assert_false (breaker_allow (b, "slack", 6000, &retry));
    /* after open_ms: exactly one probe goes out */
    assert_true (breaker_allow (b, "slack", 21000, &retry));
    assert_false (breaker_allow (b, "slack", 21001, &retry));
    assert_true (breaker_blocked (b, "slack", 21001, &retry));
    /* the probe fails: open again for open_ms */
    breaker_record (b, "slack", 1, 22000);
    assert_true (breaker_blocked (b, "slack", 30000, &retry));
    assert_true (breaker_allow (b, "slack", 42000, &retry));
    /* the probe succeeds: closed, calls flow */
    breaker_record (b, "slack", 0, 42100);
    assert_false (breaker_is_open (b, "slack", 42100));
    assert_true (breaker_allow (b, "slack", 42200, &retry));
    assert_true (breaker_allow (b, "slack", 42201, &retry));
    breaker_destroy (&b);
}

static void
test_late_result_of_a_call_before_opening_is_ignored (void **state)
{
    (void) state;
    breaker_t *b = breaker_new (2, 10000, 5000);
    int64_t retry = 0;
    breaker_record (b, "p", 1, 0);
    breaker_record (b, "p", 1, 1);
    assert_true (breaker_is_open (b, "p", 2));
    breaker_record (b, "p", 0, 3);            /* started before it opened: not a probe */
    assert_true (breaker_blocked (b, "p", 4, &retry));
    breaker_destroy (&b);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_opens_only_on_enough_failures),
        cmocka_unit_test (test_open_half_open_probe_and_close),
        cmocka_unit_test (test_late_result_of_a_call_before_opening_is_ignored),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
