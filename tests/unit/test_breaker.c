/* test_breaker.c - the circuit breaker per peer: opens on broad failure, one probe when half-open,
 * and (for webhook endpoints) a longer hold after each failed probe */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testexit.h"
#include "breaker.h"
#include "events.h"

static void
test_opens_only_on_enough_failures (void **state)
{
    (void) state;
    breaker_t *b = breaker_new ("provider", 5, 10000, 30000, 30000);
    int64_t retry = 0;
    for (int i = 0; i < 4; i++)
        breaker_record (b, "box", 1, 0, 1000 + i);
    assert_false (breaker_is_open (b, "box", 1010));         /* 4 < min_failures */
    for (int i = 0; i < 10; i++)
        breaker_record (b, "box", 0, 0, 1100 + i);              /* successes dilute: 5/15 < half */
    breaker_record (b, "box", 1, 0, 1200);
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
    breaker_t *b = breaker_new ("provider", 3, 10000, 20000, 20000);
    int64_t retry = 0;
    for (int i = 0; i < 3; i++)
        breaker_record (b, "slack", 1, 0, 1000);
    assert_true (breaker_is_open (b, "slack", 1000));
    assert_true (breaker_blocked (b, "slack", 6000, &retry));
    assert_int_equal (retry, 15);                            /* 15 s left, rounded up */
    assert_false (breaker_allow (b, "slack", 6000, &retry));
    /* after open_ms: exactly one probe goes out, and the caller is told it is the probe (only
     * its own breaker_unused may let another through) */
    assert_int_equal (breaker_allow (b, "slack", 21000, &retry), 2);
    assert_false (breaker_allow (b, "slack", 21001, &retry));
    assert_true (breaker_blocked (b, "slack", 21001, &retry));
    /* the probe fails: open again for open_ms */
    breaker_record (b, "slack", 1, 1, 22000);
    assert_true (breaker_blocked (b, "slack", 30000, &retry));
    assert_true (breaker_allow (b, "slack", 42000, &retry));
    /* the probe succeeds: closed, calls flow */
    breaker_record (b, "slack", 0, 1, 42100);
    assert_false (breaker_is_open (b, "slack", 42100));
    assert_int_equal (breaker_allow (b, "slack", 42200, &retry), 1);
    assert_int_equal (breaker_allow (b, "slack", 42201, &retry), 1);
    breaker_destroy (&b);
}

static void
test_late_result_of_a_call_before_opening_is_ignored (void **state)
{
    (void) state;
    breaker_t *b = breaker_new ("provider", 2, 10000, 5000, 5000);
    int64_t retry = 0;
    breaker_record (b, "p", 1, 0, 0);
    breaker_record (b, "p", 1, 0, 1);
    assert_true (breaker_is_open (b, "p", 2));
    breaker_record (b, "p", 0, 0, 3);            /* started before it opened: not a probe */
    assert_true (breaker_blocked (b, "p", 4, &retry));
    breaker_destroy (&b);
}

/* The same while the probe is out: a call that started before the breaker opened and ends after
 * the probe left is not the probe. Taken as it, its failure held the peer again, and the probe's
 * success that followed was then ignored (no probe out), so a provider that had come back stayed
 * refused for another hold; its success would have closed the breaker on no evidence. */
static void
test_only_the_probe_decides_a_half_open_breaker (void **state)
{
    (void) state;
    breaker_t *b = breaker_new ("provider", 2, 10000, 5000, 60000);
    int64_t retry = 0;
    breaker_record (b, "p", 1, 0, 0);
    breaker_record (b, "p", 1, 0, 1);
    assert_true (breaker_is_open (b, "p", 2));
    assert_int_equal (breaker_allow (b, "p", 5001, &retry), 2);       /* the probe leaves */
    breaker_record (b, "p", 1, 0, 5100);     /* a call from before the opening fails late */
    breaker_record (b, "p", 0, 1, 5200);     /* the probe succeeds */
    assert_false (breaker_is_open (b, "p", 5200));
    assert_int_equal (breaker_allow (b, "p", 5201, &retry), 1);
    /* and a late success does not close it while the probe is out */
    breaker_record (b, "p", 1, 0, 6000);
    breaker_record (b, "p", 1, 0, 6001);
    assert_true (breaker_is_open (b, "p", 6001));
    assert_int_equal (breaker_allow (b, "p", 11001, &retry), 2);
    breaker_record (b, "p", 0, 0, 11100);
    assert_true (breaker_blocked (b, "p", 11101, &retry));
    breaker_record (b, "p", 1, 1, 11200);    /* the probe fails: held twice as long */
    assert_true (breaker_blocked (b, "p", 21199, &retry));
    assert_false (breaker_blocked (b, "p", 21200, &retry));
    breaker_destroy (&b);
}

/* A failed probe holds the peer twice as long as the last time, up to the longest hold; a probe
 * that succeeds closes it, and the next opening starts from the first hold again. */
static void
test_failed_probes_hold_longer (void **state)
{
    (void) state;
    breaker_t *b = breaker_new ("webhook", 3, 60000, 100, 350);
    int64_t retry = 0, now = 1000;
    for (int i = 0; i < 3; i++)
        breaker_record (b, "hook", 1, 0, now);
    assert_true (breaker_blocked (b, "hook", now + 99, &retry));
    assert_false (breaker_blocked (b, "hook", now + 100, &retry));
    static const int64_t holds [] = { 200, 350, 350 };
    for (size_t i = 0; i < sizeof holds / sizeof holds [0]; i++) {
        now += 1000;
        assert_true (breaker_allow (b, "hook", now, &retry));      /* the probe */
        assert_false (breaker_allow (b, "hook", now, &retry));     /* only one */
        breaker_record (b, "hook", 1, 1, now);
        assert_true (breaker_blocked (b, "hook", now + holds [i] - 1, &retry));
        assert_false (breaker_blocked (b, "hook", now + holds [i], &retry));
        assert_true (breaker_is_open (b, "hook", now));
    }
    now += 1000;
    assert_true (breaker_allow (b, "hook", now, &retry));
    breaker_record (b, "hook", 0, 1, now);
    assert_false (breaker_is_open (b, "hook", now));
    for (int i = 0; i < 3; i++)
        breaker_record (b, "hook", 1, 0, now + 1);
    assert_true (breaker_blocked (b, "hook", now + 100, &retry));
    assert_false (breaker_blocked (b, "hook", now + 101, &retry));
    /* an operator's test during a hold is its probe: delivered, it closes the breaker */
    assert_true (breaker_blocked (b, "hook", now + 50, &retry));
    breaker_probe (b, "hook");
    breaker_record (b, "hook", 0, 1, now + 50);
    assert_false (breaker_is_open (b, "hook", now + 50));
    breaker_probe (b, "hook");                                  /* closed: nothing */
    assert_true (breaker_allow (b, "hook", now + 51, &retry));
    /* another peer is not held */
    assert_true (breaker_allow (b, "other", now + 2, &retry));
    breaker_destroy (&b);
    assert_null (b);
}

/* Failures spaced one attempt apart; 1 when the fifth of them opens the events' breaker and the
 * fourth did not. */
static int
opens_at_fifth (breaker_t *b, int64_t spacing_ms)
{
    int64_t now = 1000000;
    for (int i = 0; i < 4; i++, now += spacing_ms)
        breaker_record (b, "hung", 1, 0, now);
    if (breaker_is_open (b, "hung", now))
        return 0;
    breaker_record (b, "hung", 1, 0, now);
    return breaker_is_open (b, "hung", now);
}

/* An endpoint that hangs until the timeout fails once per timeout at most: with a long timeout
 * (16 s: failures 20 s apart, the claim and other deliveries between them) five such failures
 * must still hold it, or every claim it leads waits a full timeout. */
static void
test_events_hold_hung_endpoint (void **state)
{
    (void) state;
    events_config_t cfg = { .timeout_ms = 16000, .lease_ms = 30000, .backoff_base_ms = 1000,
                            .backoff_max_ms = 600000 };
    breaker_t *b = events_hold_new (&cfg);
    assert_true (opens_at_fifth (b, 20000));
    breaker_destroy (&b);
    /* the longest timeout allowed (FERRULE_WEBHOOK_TIMEOUT_MS 120000) */
    cfg.timeout_ms = 120000;
    cfg.lease_ms = 130000;
    b = events_hold_new (&cfg);
    assert_true (opens_at_fifth (b, 125000));
    breaker_destroy (&b);
    /* the default timeout: failures 12 s apart hold it, as before */
    cfg.timeout_ms = 10000;
    b = events_hold_new (&cfg);
    assert_true (opens_at_fifth (b, 12000));
    breaker_destroy (&b);
    /* but failures far apart (a single delivery's backed-off retries) do not */
    cfg.timeout_ms = 16000;
    b = events_hold_new (&cfg);
    assert_false (opens_at_fifth (b, 120000));
    breaker_destroy (&b);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_opens_only_on_enough_failures),
        cmocka_unit_test (test_open_half_open_probe_and_close),
        cmocka_unit_test (test_late_result_of_a_call_before_opening_is_ignored),
        cmocka_unit_test (test_only_the_probe_decides_a_half_open_breaker),
        cmocka_unit_test (test_failed_probes_hold_longer),
        cmocka_unit_test (test_events_hold_hung_endpoint),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
