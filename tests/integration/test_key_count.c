/* test_key_count.c - the count of values sealed with a retired key
 * (ferrule_worker_values_on_old_keys) on a large table: made by one worker for all, a range of
 * blocks at a time. Each worker counted on its own with one statement over the whole table, which
 * the statement timeout cut short past a few million rows (here a million rows and 40 ms): the
 * gauge was never set. Counted in rows read, not timed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "itest.h"

#define ROWS 1000000
#define OLD 1000                        /* of them sealed under a key no longer current */
#define GAUGE "ferrule_worker_values_on_old_keys"

static harness_t *h;

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* The gauge of a worker once it equals want, or its last value after timeout_ms. */
static long long
wait_gauge (const char *worker, long long want, int timeout_ms)
{
    long long v = -1;
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        v = (long long) itest_metric (h, worker, GAUGE);
        if (v == want)
            break;
        usleep (100000);
    }
    return v;
}

static void
test_one_worker_counts_a_large_table_for_all (void **state)
{
    (void) state;
    char sql [1024];
    h = harness_new ("key_count");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "40");
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "1000");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    assert_true (harness_start_broker (h) >= 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
    /* the current key's id, from a value a worker sealed */
    char *rt = itest_grant (h, "fakebox", NULL);
    /* its statements have 40 ms too: on a loaded machine one can be cancelled (CI, 2026-12-05,
     * under AddressSanitizer beside other builds); a cancelled import stored nothing */
    int rc = -1;
    for (int i = 0; i < 10 && rc != 0; i++)
        if ((rc = itest_import (h, "probe:box", "fakebox", rt)) != 0)
            usleep (200000);
    assert_int_equal (rc, 0);
    free (rt);
    long long current = harness_sql_int (h, "SELECT key_id FROM integrations WHERE id = 'probe:box'");
    assert_true (current > 0);
    snprintf (sql, sizeof sql,
              "INSERT INTO integrations (id, provider, key_id, refresh_token, access_token, access_expires_at,"
              " access_lifetime_s, route_hash)"
              " SELECT 'bulk' || n || ':box', 'fakebox', CASE WHEN n %% %d = 0 THEN 9999 ELSE %lld END,"
              " '\\x01'::bytea, '\\x01'::bytea, now () + interval '1 hour', 3600, n FROM generate_series (1, %d) n",
              ROWS / OLD, current, ROWS);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "VACUUM ANALYZE integrations"), 0);

    /* every worker's gauge: one count, made by one of them. A count that began before the rows
     * were committed found fewer; the next one finds them all. Generous: on a machine as busy as
     * CI's a walk takes many small ranges (about 5 s here when quiet) */
    long long v1 = wait_gauge ("w1", OLD, 90000), v2 = wait_gauge ("w2", OLD, 20000);
    printf ("key count: w1 %lld, w2 %lld (want %d)\n", v1, v2, OLD);
    if (v1 != OLD || v2 != OLD)
        fail_msg ("the workers' gauges read %lld and %lld, not %d: the count did not fit the statement timeout",
                  v1, v2, OLD);

    /* about one walk of the table a second for the whole deployment, not one per worker */
    sleep (2);                      /* what the counts before read is reported by now */
    long long before = itest_reads (h, "integrations", NULL);
    sleep (8);
    double walks = (double) (itest_reads (h, "integrations", NULL) - before) / ROWS;
    printf ("key count: %.1f reads of the table in 8 s, counted every 1 s by 2 workers\n", walks);
    if (walks > 12.5)
        fail_msg ("the table was read %.1f times in 8 s: every worker counts on its own", walks);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_one_worker_counts_a_large_table_for_all, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
