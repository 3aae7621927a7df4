/* test_broker_dns.c - a worker that finds its brokers by DNS (FERRULE_BROKER_BACKENDS=dns+tcp://)
 * connects through the name, and resolving the name again never holds up its loop: cached tokens
 * are served in time while the system's resolver takes seconds to answer. The worker runs
 * through dns-worker.sh, which names the broker brokers.ferrule.test and preloads the test
 * resolver (slow_dns.c): that name is 127.0.0.1, after the delay this test writes to a file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "clock.h"
#include "itest.h"

#define DNS_DELAY_MS 3000            /* each lookup during the test: 3 s before the answer */
#define REFRESH_MS   "500"           /* FERRULE_BROKER_DNS_REFRESH_MS: looked up again this often */
#define WINDOW_MS    5000            /* cached tokens asked for this long */
#define HIT_MS       750             /* a cached token's answer in time, well under a lookup */

static harness_t *h;
static char delay_file [600], log_file [600];

static void
set_delay (long ms)
{
    char text [32];
    snprintf (text, sizeof text, "%ld\n", ms);
    itest_write_file (delay_file, text);
}

/* Lookups of the test's name begun so far (slow_dns.c logs each). */
static int
lookups_started (void)
{
    FILE *f = fopen (log_file, "r");
    char line [64];
    int n = 0;
    while (f && fgets (line, sizeof line, f))
        n += strcmp (line, "start\n") == 0;
    if (f)
        fclose (f);
    return n;
}

static int
setup (void **state)
{
    if (!getenv ("FERRULE_TEST_PG_ADMIN_URL")) {
        printf ("note: FERRULE_TEST_PG_ADMIN_URL is not set, so this integration test is skipped\n");
        exit (HARNESS_SKIP);
    }
    h = harness_new ("broker_dns");
    if (!h)
        return -1;
    snprintf (delay_file, sizeof delay_file, "%s/dns-delay", harness_workdir (h));
    snprintf (log_file, sizeof log_file, "%s/dns.log", harness_workdir (h));
    set_delay (0);
    harness_set_env (h, "FERRULE_TEST_DNS_PRELOAD", FERRULE_TEST_DNS_PRELOAD);
    harness_set_env (h, "FERRULE_TEST_DNS_DELAY_FILE", delay_file);
    harness_set_env (h, "FERRULE_TEST_DNS_LOG", log_file);
    harness_set_env (h, "FERRULE_BROKER_DNS_REFRESH_MS", REFRESH_MS);
    /* a preloaded library comes before AddressSanitizer's runtime, which the asan tree's worker
     * would otherwise refuse */
    itest_asan_option (h, "verify_asan_link_order=0");
    harness_set_worker_wrapper (h, FERRULE_TEST_DNS_WORKER);
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* The resolver takes 3 s for each lookup, and the worker looks the name up again every 500 ms:
 * every cached token is answered in time all along. The lookup used to run in the worker's loop,
 * which then answered nothing for those 3 s, again and again. */
static void
test_cached_tokens_served_while_dns_is_slow (void **state)
{
    int rc;
    /* the worker reached the broker through the name */
    assert_true (lookups_started () >= 1);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "dns:box", "fakebox", rt), 0);
    free (rt);
    json_decref (harness_ctl (h, &rc, "token", "--integration", "dns:box", NULL));
    assert_int_equal (rc, 0);
    client_t *asker = itest_client_connected (harness_brokers (h));

    int before = lookups_started ();
    set_delay (DNS_DELAY_MS);
    itest_hits_t hits = itest_cached_hits (asker, "dns:box", clock_mono_ms () + WINDOW_MS, HIT_MS);
    int slow_lookups = lookups_started () - before;
    set_delay (0);
    client_destroy (&asker);
    fprintf (stderr, "while DNS took %d ms a lookup (%d begun): %d cached tokens served in time, %d not "
             "(slowest %lld ms)\n", DNS_DELAY_MS, slow_lookups, hits.served, hits.late, (long long) hits.slowest_ms);
    assert_true (slow_lookups >= 1);
    assert_int_equal (hits.late, 0);
    assert_true (hits.served > 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_cached_tokens_served_while_dns_is_slow),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
