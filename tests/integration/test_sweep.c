/* test_sweep.c - the background sweep reaches every integration that needs it: ones whose
 * refreshes keep failing (and keep the oldest expiries) never fill its pages, a backlog larger
 * than a pass's budget is worked off at the sweep's rate, not one burst an interval, each
 * worker reads its own partitions' rows, not the first due ones of the whole deployment, and a
 * pass reads the expiry index, not the whole table */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "clock.h"
#include "itest.h"
#include "ring.h"

static harness_t *h;

/* A harness called name with a broker and nworkers workers (w1, w2), the workers' environment
 * given as name, value pairs (NULL-terminated). */
static int
start_with (const char *name, int nworkers, ...)
{
    h = h ? h : harness_new (name);         /* made already when a setup changed its providers */
    if (!h)
        return -1;
    va_list ap;
    va_start (ap, nworkers);
    for (const char *var = va_arg (ap, const char *); var; var = va_arg (ap, const char *))
        harness_set_env (h, var, va_arg (ap, const char *));
    va_end (ap);
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0
    ||  (nworkers > 1 && harness_start_worker (h, "w2") != 0) || harness_wait_ready (h, nworkers, 20000) != 0)
        return -1;
    return 0;
}

/* A pass every 300 ms, pages of two candidates, failures that stay failed. */
static int
setup (void **state)
{
    return start_with ("sweep", 1, "FERRULE_SWEEP_MS", "300", "FERRULE_SWEEP_HORIZON_S", "120",
                       "FERRULE_SWEEP_BATCH", "2", "FERRULE_BACKOFF_BASE_MS", "60000",
                       "FERRULE_BREAKER_MIN_FAILURES", "1000000", NULL);
}

/* A sweep every 20 s (the first 5 s after the start), at most 4 provider calls a second. */
static int
setup_paced (void **state)
{
    return start_with ("sweep_paced", 1, "FERRULE_SWEEP_MS", "20000", "FERRULE_SWEEP_RATE", "4", NULL);
}

/* Two workers, a sweep every 12 s (the first 3 s after the start) that reads 4 candidates. */
static int
setup_two (void **state)
{
    return start_with ("sweep_two", 2, "FERRULE_SWEEP_MS", "12000", "FERRULE_SWEEP_BATCH", "4",
                       "FERRULE_SWEEP_RATE", "100", NULL);
}

/* One worker, a sweep every 12 s (the first 3 s after the start). */
static int
setup_late (void **state)
{
    return start_with ("sweep_late", 1, "FERRULE_SWEEP_MS", "12000", "FERRULE_SWEEP_RATE", "100", NULL);
}

/* One worker, a sweep every 300 ms, fakebox's refresh tokens expiring after 60 idle days, and
 * no count of values on retired keys meanwhile (it reads the whole table, on purpose, once a
 * minute by default). */
static int
setup_large (void **state)
{
    char path [4096];
    h = harness_new ("sweep_large");
    if (!h)
        return -1;
    snprintf (path, sizeof path, "%s/providers-idle.json", harness_workdir (h));
    json_t *p = json_load_file (harness_providers_file (h), 0, NULL);
    if (!p)
        return -1;
    json_object_set_new (json_object_get (p, "fakebox"), "refresh_token_idle_days", json_integer (60));
    int bad = json_dump_file (p, path, JSON_INDENT (2));
    json_decref (p);
    if (bad)
        return -1;
    return start_with ("sweep_large", 1, "FERRULE_PROVIDERS_FILE", path, "FERRULE_SWEEP_MS", "300",
                       "FERRULE_SWEEP_HORIZON_S", "120", "FERRULE_KEY_STATS_MS", "86400000", NULL);
}

/* Pages of two, a pass every 300 ms, and a provider's circuit that opens at its first failure
 * and stays open a minute. */
static int
setup_breaker (void **state)
{
    return start_with ("sweep_breaker", 1, "FERRULE_SWEEP_MS", "300", "FERRULE_SWEEP_HORIZON_S", "120",
                       "FERRULE_SWEEP_BATCH", "2", "FERRULE_BACKOFF_BASE_MS", "60000",
                       "FERRULE_BREAKER_MIN_FAILURES", "1", "FERRULE_BREAKER_OPEN_MS", "60000", NULL);
}

/* Pages of two, a pass every 300 ms, a backoff of at most a second (so the rows that failed are
 * back in the pages a second later), and a circuit that never opens. */
static int
setup_retry_after (void **state)
{
    return start_with ("sweep_retry_after", 1, "FERRULE_SWEEP_MS", "300", "FERRULE_SWEEP_HORIZON_S", "120",
                       "FERRULE_SWEEP_BATCH", "2", "FERRULE_BACKOFF_BASE_MS", "100", "FERRULE_BACKOFF_MAX_MS", "1000",
                       "FERRULE_BREAKER_MIN_FAILURES", "1000000", NULL);
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

/* As above, but the provider asked for a minute's pause (Retry-After: 60), longer than the longest
 * backoff (1 s here): the failing rows were back in every page after a second, each skipped for
 * its pause, and the pages, full of rows skipped, came every second and never reached the one due
 * behind them until the pause was over. The worker now leaves the rows it holds back out of the
 * pages. */
static void
test_rows_paused_by_retry_after_do_not_starve_the_sweep (void **state)
{
    itest_fault (h, "fakebox", "retry_after", -1, 503, 60, -1);    /* every refresh fails, until cleared */
    import ("paused1:box", NULL, NULL);
    import ("paused2:box", NULL, NULL);
    import ("paused3:box", NULL, NULL);
    const char *tried = "SELECT count(*) FROM integrations WHERE id LIKE 'paused%' AND last_error_at IS NOT NULL";
    assert_int_equal (itest_wait_sql (h, tried, 3, 10000), 3);
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakebox", NULL));
    usleep (1500 * 1000);           /* past the longest backoff: the failed rows are candidates again */
    import ("due:box", "fake-at-due", "90");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'due:box'"), 0);
    long long g = itest_wait_sql (h, "SELECT generation FROM integrations WHERE id = 'due:box'", 2, 10000);
    long long calls = harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id LIKE 'paused%'"
                                          " AND outcome <> 'imported'");
    printf ("due:box at generation %lld; %lld attempts on the paused ones\n", g, calls);
    assert_int_equal (g, 2);
    /* one of them connected again: no longer held back, it is swept when due, not when the
     * minute's pause the old grant was given ends */
    import ("paused1:box", "fake-at-again", "90");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'paused1:box'"), 0);
    long long imported = harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'paused1:box'");
    char again [160];
    snprintf (again, sizeof again, "SELECT count(*) FROM integrations WHERE id = 'paused1:box' AND generation > %lld",
              imported);
    long long swept = itest_wait_sql (h, again, 1, 10000);
    printf ("paused1:box connected again at generation %lld; swept since: %s\n", imported, swept ? "yes" : "no");
    assert_int_equal (swept, 1);
}

/* A provider fails and its circuit opens; two more of its integrations are due (no access token:
 * they sort first), and then one of another provider. The open circuit refuses the first two's
 * calls without a try, so they keep no failure that would leave them out of the pages: the code
 * before read them as the whole page of every pass (each row read again, each pass a second after
 * the last) and never reached the other provider's integration until the circuit closed. The
 * passes now leave out the providers whose circuit is open. */
static void
test_an_open_circuit_does_not_starve_the_sweep (void **state)
{
    itest_fault (h, "fakebox", "status", -1, 503, -1, -1);         /* every refresh fails, until cleared */
    import ("dead0:box", NULL, NULL);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM integrations WHERE id = 'dead0:box'"
                                         " AND last_error_at IS NOT NULL", 1, 10000), 1);
    import ("dead1:box", NULL, NULL);
    import ("dead2:box", NULL, NULL);
    int rc;
    char *rt = itest_grant (h, "fakegoogle", NULL);
    json_t *r = harness_ctl (h, &rc, "import", "--integration", "due:g", "--provider", "fakegoogle",
                             "--refresh-token", rt, "--access-token", "fake-at-due", "--expires-in", "90", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    free (rt);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'due:g'"), 0);
    long long g = itest_wait_sql (h, "SELECT generation FROM integrations WHERE id = 'due:g'", 2, 10000);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakebox", NULL));
    printf ("due:g at generation %lld; fakebox asked %lld times\n", g, calls);
    assert_int_equal (g, 2);
    assert_int_equal (calls, 1);            /* the circuit held: one call, the one that failed */
}

/* Twenty integrations due at once, a budget of 4 calls a second. A pass used to start the 4 its
 * budget allowed and leave the rest for the next interval (20 s here, 30 s by default): one
 * burst an interval, a sweep that could never keep up with many integrations. The next pass now
 * comes a second later while due work is left. The pace is read from the chain rows' own times,
 * not from when this test looks, and the worker starts again once every row is in place: under
 * ASan on a loaded machine the twenty imports can outlast the first pass's 5 s, and a first pass
 * over part of them would leave the rest to the next interval. */
static void
test_sweep_works_off_a_backlog_at_its_rate (void **state)
{
    char id [32];
    for (int i = 0; i < 20; i++) {
        snprintf (id, sizeof id, "backlog%02d:box", i);
        import (id, NULL, NULL);
    }
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    /* what a pass of the worker just stopped refreshed is not this test's: the restarted
     * worker's refreshes are the chain rows after this mark (microseconds since the epoch) */
    long long mark = harness_sql_int (h, "SELECT (extract (epoch FROM clock_timestamp ()) * 1000000)::bigint");
    long long left = 20 - harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id LIKE 'backlog%' AND generation >= 2");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    char ours [256], sql [768];
    snprintf (ours, sizeof ours, "integration_id LIKE 'backlog%%' AND outcome = 'refreshed' AND at > to_timestamp (%lld / 1e6)",
              mark);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE %s", ours);
    long long all = itest_wait_sql (h, sql, left, 30000);
    /* from the first refresh to the last: at 4 a second after a first pass of at most 5, the last
     * of 20 comes 3.75 s after the first at the earliest (a slow machine only makes it later);
     * one pass an interval would have taken 60 s */
    snprintf (sql, sizeof sql, "SELECT (extract (epoch FROM max (at) - min (at)) * 1000)::bigint FROM token_chain WHERE %s",
              ours);
    long long span = harness_sql_int (h, sql);
    long long at_least = left > 5 ? (left - 5) * 250 * 4 / 5 : 0;     /* four fifths of the least */
    printf ("sweep: %lld left for the restarted worker, %lld of them refreshed, from the first to the last in"
            " %lld ms (at least %lld)\n", left, all, span, at_least);
    assert_int_equal (all, left);
    assert_true (span >= at_least);                /* the budget held */
    assert_true (span < 15000);                    /* and the backlog was worked off at its rate */
}

/* Ids of the form "partN:box" whose partition (of the harness's 64) worker `owner` owns among w1
 * and w2, n of them into ids. */
static void
ids_owned_by (const char *owner, int n, char ids [][32])
{
    const char *workers [] = { "w1", "w2" };
    for (int i = 0, found = 0; found < n; i++) {
        snprintf (ids [found], 32, "part%d:box", i);
        int o = ring_owner (ring_partition (ids [found], 64), workers, 2);
        if (strcmp (workers [o], owner) == 0)
            found++;
    }
}

static long long
refreshed (char ids [][32], int n)
{
    long long done = 0;
    char sql [256];
    for (int i = 0; i < n; i++) {
        snprintf (sql, sizeof sql, "SELECT generation FROM integrations WHERE id = '%s'", ids [i]);
        done += harness_sql_int (h, sql) >= 2;
    }
    return done;
}

/* Four due integrations of w1's partitions, expiring first, and four of w2's. A sweep read the
 * first FERRULE_SWEEP_BATCH (4) due rows of the whole deployment and kept its own: w2 found only
 * w1's, and its own waited for its next interval (12 s here, 30 s by default; with many workers
 * a page held few of a worker's own rows, and the deployment swept at most a page a pass). Each
 * worker now reads its own partitions' rows. Rows made before migration 009 have no routing hash:
 * every worker reads them, as before, and the sweep fills the hash in. */
static void
test_each_worker_sweeps_its_own_partitions (void **state)
{
    char first [4][32], second [4][32];
    ids_owned_by ("w1", 4, first);
    ids_owned_by ("w2", 4, second);
    for (int i = 0; i < 4; i++) {
        import (first [i], "fake-at-first", "60");
        import (second [i], "fake-at-second", "90");
    }
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id LIKE 'part%'"), 0);
    /* the workers start again with every row in place, so that their first passes (3 s after the
     * start) are the ones that count: eight imports under ASan on a loaded machine took longer than
     * 3 s, and a first pass before the rows were due left them to the next, 12 s later */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_stop_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 20000), 0);
    int64_t t0 = clock_mono_ms ();
    long long a = 0, b = 0;
    while (clock_mono_ms () - t0 < 9000 && (a < 4 || b < 4)) {
        usleep (200000);
        a = refreshed (first, 4);
        b = refreshed (second, 4);
    }
    printf ("sweep: %lld of w1's 4 and %lld of w2's 4 refreshed by the first passes (%lld ms)\n", a, b,
            (long long) (clock_mono_ms () - t0));
    assert_int_equal (a, 4);
    assert_int_equal (b, 4);

    /* the routing hash each row got when it was made is the one the brokers route by */
    char sql [256], want [32];
    snprintf (sql, sizeof sql, "SELECT route_hash FROM integrations WHERE id = '%s'", second [0]);
    snprintf (want, sizeof want, "%lld", (long long) (int64_t) ring_hash (second [0], strlen (second [0])));
    long long got = harness_sql_int (h, sql);
    assert_int_equal (got, strtoll (want, NULL, 10));

    /* rows without it (made before the migration), due again: swept, and the hash filled in */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET route_hash = NULL, access_expires_at = now () + "
                                      "interval '60 seconds' WHERE id LIKE 'part%'"), 0);
    const char *unhashed = "SELECT count(*) FROM integrations WHERE id LIKE 'part%' AND route_hash IS NULL";
    long long left = 8;
    for (int64_t until = clock_mono_ms () + 20000; left > 0 && clock_mono_ms () < until; usleep (200000))
        left = harness_sql_int (h, unhashed);
    printf ("sweep: %lld of 8 rows without a routing hash left\n", left);
    assert_int_equal (left, 0);
}

/* A worker whose first pass comes before it knows its partitions (its broker not heard yet: a
 * broker that starts after it, or is slow to answer) or before it has a database connection
 * found nothing to sweep, and its next pass came a whole interval later (30 s by default): the
 * tokens due meanwhile were refreshed only when asked for. A pass that cannot run for want of
 * either now comes again within a second. Here the broker is held (SIGSTOP) while the worker
 * starts, past its first pass, and the four due rows must be swept soon after it answers. */
static void
test_a_pass_before_the_partitions_are_known_comes_again_soon (void **state)
{
    char ids [4][32];
    for (int i = 0; i < 4; i++) {
        snprintf (ids [i], sizeof ids [i], "late%d:box", i);
        import (ids [i], "fake-at-late", "60");
    }
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id LIKE 'late%'"), 0);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_signal_broker (h, 0, SIGSTOP);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    sleep (5);                                  /* its first pass, 3 s after its start, owns nothing */
    harness_signal_broker (h, 0, SIGCONT);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    int64_t t0 = clock_mono_ms ();
    long long done = 0;
    while (clock_mono_ms () - t0 < 6000 && done < 4) {
        usleep (200000);
        done = refreshed (ids, 4);
    }
    printf ("sweep: %lld of 4 due rows refreshed %lld ms after the worker was ready (the next interval: 10 s on)\n",
            done, (long long) (clock_mono_ms () - t0));
    assert_int_equal (done, 4);
}

/* One worker whose cache entries are checked against the database after 300 ms, its metrics on. */
static int
setup_cache (void **state)
{
    return start_with ("sweep_cache", 1, "FERRULE_CACHE_REVALIDATE_MS", "300", "FERRULE_HTTP_BIND", "127.0.0.1:0",
                       NULL);
}

/* Integrations in w1's cache, then w2 joins and takes some of their partitions: the brokers ask w2
 * for those from then on, and w1 kept their entries for good (with more workers coming and going,
 * every integration it had ever served), checked against the database every interval, using up
 * the checks' room (1,000 a second) for entries nobody reads. They are now dropped instead of
 * checked; w1's own stay. */
static void
test_a_partition_given_away_leaves_the_cache (void **state)
{
    char mine [4][32], theirs [4][32];
    ids_owned_by ("w1", 4, mine);
    ids_owned_by ("w2", 4, theirs);
    for (int i = 0; i < 8; i++) {
        const char *id = i < 4 ? mine [i] : theirs [i - 4];
        import (id, NULL, NULL);
        int rc = -1;
        json_decref (harness_ctl (h, &rc, "token", "--integration", id, NULL));
        assert_int_equal (rc, 0);
    }
    const char *gauge = "ferrule_worker_cached_integrations";
    double cached = -1;
    for (int64_t until = clock_mono_ms () + 10000; cached != 8 && clock_mono_ms () < until; usleep (100000))
        cached = itest_metric (h, "w1", gauge);
    assert_true (cached == 8);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 20000), 0);
    for (int64_t until = clock_mono_ms () + 15000; cached != 4 && clock_mono_ms () < until; usleep (100000))
        cached = itest_metric (h, "w1", gauge);
    printf ("sweep: w1 caches %g integrations after w2 took the partitions of 4 of its 8\n", cached);
    assert_true (cached == 4);
    assert_true (itest_workdir_contains (h, "cached integrations of partitions other workers own now"));
    /* its own are still served (from its cache or not, by w1) */
    for (int i = 0; i < 4; i++) {
        int rc = -1;
        json_decref (harness_ctl (h, &rc, "token", "--integration", mine [i], NULL));
        assert_int_equal (rc, 0);
    }
}

/* 200,000 integrations none of which is due, one that is, one whose refresh token has sat
 * unused for 31 of fakebox's 60 idle days, and a pass every 300 ms. The sweep's query bounded
 * each row by its own horizon, which no index can use: every pass read the whole table (on 2
 * million rows, a parallel sequential scan of 0.85 s, every pass of every worker), and so did
 * its query for idle tokens, per provider. It now reads the expiry index up to the global
 * horizon, and walks the primary key for idle tokens a chunk a pass. Counted in rows, not timed. */
static void
test_sweep_reads_the_expiry_index_not_the_table (void **state)
{
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id, refresh_token, access_token,"
                                      " access_expires_at, access_lifetime_s, route_hash)"
                                      " SELECT 'bulk' || n || ':box', 'fakebox', 1, '\\x01'::bytea, '\\x01'::bytea,"
                                      " now () + interval '1 hour', 3600, n FROM generate_series (1, 200000) n"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    import ("due:box", "fake-at-due", "60");
    /* an hour's token: its horizon is the global one (a 60 s token's would be 15 s) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'due:box'"), 0);
    int64_t until = clock_mono_ms () + 10000;
    while (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'due:box'") < 2
           && clock_mono_ms () < until)
        usleep (100000);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'due:box'"), 2);
    /* after every bulk row in the walk's order: found once the walk has gone through them */
    import ("zidle:box", "fake-at-idle", "3600");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET created_at = now () - interval '31 days',"
                                      " connected_at = now () - interval '31 days' WHERE id = 'zidle:box'"), 0);
    until = clock_mono_ms () + 30000;
    while (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'zidle:box'") < 2
           && clock_mono_ms () < until)
        usleep (200000);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'zidle:box'"), 2);

    sleep (2);                      /* what the passes before read is reported by now */
    long long before = itest_reads (h, "integrations", NULL);
    sleep (3);                      /* about ten passes: the fault read the table in every one */
    long long scanned = itest_reads (h, "integrations", NULL) - before;
    printf ("sweep: %lld rows of integrations read by sequential scans in 3 s of passes\n", scanned);
    if (scanned >= 200000)
        fail_msg ("the sweep's passes read the whole table (%lld rows in 3 s)", scanned);
}

/* Index entries read from integrations' expiry indexes so far (whatever their name). */
static long long
expiry_entries_read (void)
{
    return harness_sql_int (h, "SELECT COALESCE (sum (s.idx_tup_read), 0) FROM pg_stat_user_indexes s"
                               " JOIN pg_indexes x ON x.indexname = s.indexrelname AND x.tablename = s.relname"
                               " WHERE s.relname = 'integrations' AND x.indexdef LIKE '%access_expires_at%'");
}

/* 50,000 active integrations connected without a refresh token, their access tokens expired an
 * hour ago: the sweep can never refresh them, yet they sat at the head of the expiry index it
 * reads in order, and every pass of every worker read past all of them (49 to 54 ms a pass at
 * 100,000). Migration 012's index holds only rows with a refresh token. Counted, not timed. */
static void
test_sweep_skips_rows_it_can_never_refresh (void **state)
{
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id, access_token,"
                                      " access_expires_at, access_lifetime_s, route_hash, refresh_token_missing)"
                                      " SELECT 'norefresh' || n || ':box', 'fakebox', 1, '\\x01'::bytea,"
                                      " now () - interval '1 hour', 3600, n, true FROM generate_series (1, 50000) n"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    import ("due:box", "fake-at-due", "60");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'due:box'"), 0);
    int64_t until = clock_mono_ms () + 10000;
    while (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'due:box'") < 2
           && clock_mono_ms () < until)
        usleep (100000);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'due:box'"), 2);

    sleep (2);                      /* what the passes before read is reported by now */
    long long before = expiry_entries_read ();
    sleep (2);                      /* about six passes: the fault read them in every one */
    long long read = expiry_entries_read () - before;
    printf ("sweep: %lld entries of the expiry index read in 2 s of passes, 50000 rows without a refresh token\n",
            read);
    if (read >= 50000)
        fail_msg ("the sweep's passes read the rows it can never refresh (%lld index entries in 2 s)", read);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_failing_integrations_do_not_starve_the_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown (test_an_open_circuit_does_not_starve_the_sweep, setup_breaker, teardown),
        cmocka_unit_test_setup_teardown (test_rows_paused_by_retry_after_do_not_starve_the_sweep, setup_retry_after,
                                         teardown),
        cmocka_unit_test_setup_teardown (test_sweep_works_off_a_backlog_at_its_rate, setup_paced, teardown),
        cmocka_unit_test_setup_teardown (test_each_worker_sweeps_its_own_partitions, setup_two, teardown),
        cmocka_unit_test_setup_teardown (test_a_pass_before_the_partitions_are_known_comes_again_soon, setup_late,
                                         teardown),
        cmocka_unit_test_setup_teardown (test_a_partition_given_away_leaves_the_cache, setup_cache, teardown),
        cmocka_unit_test_setup_teardown (test_sweep_reads_the_expiry_index_not_the_table, setup_large, teardown),
        cmocka_unit_test_setup_teardown (test_sweep_skips_rows_it_can_never_refresh, setup_large, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
