/* test_sweep.c - the background sweep reaches every integration that needs it: ones whose
 * refreshes keep failing (and keep the oldest expiries) never fill its pages */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("sweep");
    if (!h)
        return -1;
    harness_set_env (h, "FERRULE_SWEEP_MS", "300");
    harness_set_env (h, "FERRULE_SWEEP_HORIZON_S", "120");
    harness_set_env (h, "FERRULE_SWEEP_BATCH", "2");            /* two candidates a page */
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "60000");    /* a failed one stays failed */
    harness_set_env (h, "FERRULE_BREAKER_MIN_FAILURES", "1000000");
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static void
import (const char *id, const char *access_token, const char *expires_in)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    json_t *r = access_token
              ? harness_ctl (h, &rc, "import", "--integration", id, "--provider", "fakebox", "--refresh-token", rt,
                             "--access-token", access_token, "--expires-in", expires_in, NULL)
              : harness_ctl (h, &rc, "import", "--integration", id, "--provider", "fakebox", "--refresh-token", rt, NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    free (rt);
}

/* Three integrations without an access token (they sort first) whose refreshes fail, and then one
 * whose token expires within the horizon. Pages of two: the code before read the failing ones'
 * first page again and again, skipped them (their backoff), and never reached what was behind it
 * (the third failing one, and the one due). */
static void
test_failing_integrations_do_not_starve_the_sweep (void **state)
{
    itest_fault (h, "fakebox", "status", -1, 503, -1, -1);         /* every refresh fails, until cleared */
    import ("stuck1:box", NULL, NULL);
    import ("stuck2:box", NULL, NULL);
    import ("stuck3:box", NULL, NULL);
    const char *tried = "SELECT count(*) FROM integrations WHERE id LIKE 'stuck%' AND last_error_at IS NOT NULL";
    long long failed = 0;
    for (int64_t until = clock_mono_ms () + 5000; failed != 3 && clock_mono_ms () < until; usleep (100000))
        failed = harness_sql_int (h, tried);
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakebox", NULL));
    import ("due:box", "fake-at-due", "90");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'due:box'"), 0);
    long long g = 0;
    for (int64_t until = clock_mono_ms () + 10000; g != 2 && clock_mono_ms () < until; usleep (100000))
        g = harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'due:box'");
    printf ("%lld of the three failing integrations were tried; due:box at generation %lld\n", failed, g);
    assert_int_equal (failed, 3);
    assert_int_equal (g, 2);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_failing_integrations_do_not_starve_the_sweep),
    };
    return cmocka_run_group_tests (tests, setup, teardown);
}
