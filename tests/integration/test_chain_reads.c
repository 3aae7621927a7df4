/* test_chain_reads.c - what the database reads of a long token chain when an integration fails,
 * reconnects, or nears its grant's age limit: the rows it needs, through migration 012's partial
 * indexes, not every refresh the integration ever had; and how often the forecast of idle refresh
 * tokens reads the integrations table: once per interval for the whole deployment, not once per
 * worker (migration 016). Counted in index entries and rows read (PostgreSQL's statistics), never
 * timed: the machines are shared and noisy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "clock.h"
#include "itest.h"

#define CHAIN_ROWS 5000                 /* seven months of hourly refreshes */
#define OLD_GRANTS 20000
#define FORECAST_MS 300                 /* every worker's forecast pass */
#define IDLE_ROWS  10000

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("chain_reads");
    if (!h)
        return -1;
    json_t *p = json_load_file (harness_providers_file (h), 0, NULL);
    if (!p)
        return -1;
    json_object_set_new (json_object_get (p, "fakegoogle"), "grant_max_days", json_integer (7));
    json_object_set_new (json_object_get (p, "fakebox"), "refresh_token_idle_days", json_integer (60));
    int bad = json_dump_file (p, harness_providers_file (h), JSON_INDENT (2));
    json_decref (p);
    if (bad)
        return -1;
    char every [24];
    snprintf (every, sizeof every, "%d", FORECAST_MS);
    harness_set_env (h, "FERRULE_EVENTS_FORECAST_MS", every);
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "86400000");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0)
        return -1;
    return harness_wait_ready (h, 1, 20000);
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static void
import (const char *id, const char *provider)
{
    char *rt = itest_grant (h, provider, NULL);
    assert_int_equal (itest_import (h, id, provider, rt), 0);
    free (rt);
}

/* Index entries and rows of token_chain read so far by every session, this one's own reads
 * reported first. */
static long long
chain_reads (void)
{
    assert_int_equal (harness_sql (h, "SELECT pg_stat_force_next_flush ()"), 0);
    return harness_sql_int (h, "SELECT COALESCE (sum (idx_tup_read), 0)"
                               " + (SELECT COALESCE (seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'token_chain')"
                               " FROM pg_stat_user_indexes WHERE relname = 'token_chain'");
}

/* An integration imported, then CHAIN_ROWS refreshes written straight into its chain. */
static void
long_chain (const char *id)
{
    char sql [512];
    import (id, "fakebox");
    snprintf (sql, sizeof sql, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                               " SELECT '%s', g, 'test', 'refreshed' FROM generate_series (2, %d) g", id, CHAIN_ROWS + 1);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE token_chain"), 0);
}

/* An integration turns needs_reconnect: the trigger that writes the event asks whether the failed
 * generation was interrupted mid-rotation. On the chain's (integration_id, seq) index it read
 * every row of the integration; the partial index of interrupted rows answers at once. */
static void
test_status_trigger_reads_no_chain (void **state)
{
    (void) state;
    long_chain ("long1:box");
    long long before = chain_reads ();
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect', last_error_code = 'invalid_grant',"
                                      " last_error_message = 'test' WHERE id = 'long1:box'"), 0);
    long long read = chain_reads () - before;
    printf ("chain reads: %lld entries and rows of token_chain for a needs_reconnect on a %d-row chain\n", read,
            CHAIN_ROWS);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'long1:box'"
                                          " AND type = 'needs_reconnect' AND diagnosis = 'needs_reconnect'"), 1);
    if (read >= CHAIN_ROWS / 2)
        fail_msg ("the needs_reconnect trigger read the integration's chain (%lld entries and rows)", read);
}

/* A reconnect: the chain trigger asks whether the integration was connected before, to say
 * "reconnected"; the first grant is the chain's oldest row, so the walk read all of it. */
static void
test_reconnect_trigger_reads_no_chain (void **state)
{
    (void) state;
    long_chain ("long2:box");
    long long before = chain_reads ();
    assert_int_equal (harness_sql (h, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " VALUES ('long2:box', 10000, 'test', 'connected')"), 0);
    long long read = chain_reads () - before;
    printf ("chain reads: %lld entries and rows of token_chain for a reconnect on a %d-row chain\n", read, CHAIN_ROWS);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'long2:box'"
                                          " AND type = 'reconnected'"), 1);
    if (read >= CHAIN_ROWS / 2)
        fail_msg ("the reconnect trigger read the integration's chain (%lld entries and rows)", read);
}

/* OLD_GRANTS Google integrations connected 30 days ago (four times the 7-day limit: long dead, or
 * not Google's testing mode), one connected 6.5 days ago, and one connected 6.5 days ago and
 * again just now. The forecast, every 300 ms here, looped over every integration of the provider
 * and looked up each one's latest grant; it now starts from the grants that began in its window.
 * The one due is still warned about, once; the one connected again is not. */
static void
test_grant_forecast_starts_from_its_window (void **state)
{
    (void) state;
    char sql [1024];
    snprintf (sql, sizeof sql,
              "BEGIN;"
              " INSERT INTO integrations (id, provider, key_id, refresh_token, access_token, access_expires_at,"
              "  access_lifetime_s, route_hash)"
              "  SELECT 'old' || n || ':google', 'fakegoogle', 1, '\\x01'::bytea, '\\x01'::bytea, now () + interval '1 hour',"
              "  3600, n FROM generate_series (1, %d) n;"
              /* their "connected" events are not what this test is about */
              " ALTER TABLE token_chain DISABLE TRIGGER token_chain_events;"
              " INSERT INTO token_chain (integration_id, generation, worker, outcome, at)"
              "  SELECT 'old' || n || ':google', 1, 'test', 'imported', now () - interval '30 days'"
              "  FROM generate_series (1, %d) n;"
              " ALTER TABLE token_chain ENABLE TRIGGER token_chain_events;"
              " COMMIT", OLD_GRANTS, OLD_GRANTS);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE token_chain"), 0);
    import ("due:google", "fakegoogle");
    import ("again:google", "fakegoogle");
    /* the chain is append-only even for its owner: the test lifts that to backdate two rows. The
     * grant connected again comes in the same transaction: a forecast pass (every FORECAST_MS)
     * between the two would rightly warn about the old grant, which had no newer one yet (a CI
     * run saw it: two "expiring" events) */
    assert_int_equal (harness_sql (h, "BEGIN; ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = now() - interval '6 days 12 hours'"
                                      "  WHERE integration_id IN ('due:google', 'again:google');"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update;"
                                      " INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      "  VALUES ('again:google', 2, 'test', 'connected');"
                                      " COMMIT"), 0);
    const char *due = "SELECT count(*) FROM events WHERE type = 'expiring' AND diagnosis = 'grant_age_limit'"
                      " AND integration_id = 'due:google'";
    int64_t until = clock_mono_ms () + 15000;
    while (harness_sql_int (h, due) < 1 && clock_mono_ms () < until)
        usleep (100000);
    assert_int_equal (harness_sql_int (h, due), 1);

    sleep (2);                      /* what the passes before read is reported by now */
    long long before = chain_reads ();
    sleep (3);                      /* about ten passes */
    long long read = chain_reads () - before;
    printf ("chain reads: %lld entries and rows of token_chain in 3 s of forecasts over %d old grants\n", read,
            OLD_GRANTS);
    if (read >= OLD_GRANTS / 10)
        fail_msg ("the grant forecast read every integration's chain (%lld entries and rows in 3 s)", read);
    /* once, and for no one else: not the grant connected again, nor the long-dead ones */
    assert_int_equal (harness_sql_int (h, due), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'expiring'"), 1);
}

/* Rows read by sequential scans of integrations so far, by every session. */
static long long
integrations_seq_reads (void)
{
    return harness_sql_int (h, "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'integrations'");
}

/* No index serves an idle refresh token's condition, so the idle forecast reads the whole
 * integrations table, once per provider with an idle limit (fakebox here, and the built-in
 * catalog's). Every worker made it every FERRULE_EVENTS_FORECAST_MS; with three workers here,
 * three reads per provider and interval. Now the worker whose pass comes first after the interval
 * takes the provider's turn, and the others skip the read: about one per provider and interval
 * for the deployment. One worker alone still makes it at its interval: the delivery thread used
 * to sleep a whole FERRULE_EVENTS_POLL_MS (1 s here) between looks at its timers, so a shorter
 * interval was not kept. One integration idle for 50 of the 60 days is warned about, once. */
static void
test_idle_forecast_made_by_one_worker_for_all (void **state)
{
    (void) state;
    char sql [1024];
    snprintf (sql, sizeof sql,
              "INSERT INTO integrations (id, provider, key_id, refresh_token, access_token, access_expires_at,"
              " access_lifetime_s, route_hash)"
              " SELECT 'busy' || n || ':box', 'fakebox', 1, '\\x01'::bytea, '\\x01'::bytea, now () + interval '1 hour',"
              " 3600, n FROM generate_series (1, %d) n", IDLE_ROWS);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    import ("idle:box", "fakebox");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET last_refresh_at = now() - interval '50 days',"
                                      " created_at = now() - interval '50 days', connected_at = now() - interval '50 days'"
                                      " WHERE id = 'idle:box'"), 0);
    const char *idle = "SELECT count(*) FROM events WHERE type = 'expiring' AND diagnosis = 'refresh_token_idle'"
                       " AND integration_id = 'idle:box'";
    assert_int_equal (itest_wait_sql (h, idle, 1, 15000), 1);
    long long rows = harness_sql_int (h, "SELECT count(*) FROM integrations");
    /* the providers with an idle limit: each pass reads the table once for each */
    long long providers = harness_sql_int (h, "SELECT count(*) FROM forecast_turns");
    sleep (2);                      /* what the passes before read is reported by now */
    long long before = integrations_seq_reads ();
    int64_t start = clock_mono_ms ();
    sleep (3);
    double window = (double) (clock_mono_ms () - start);
    double reads = (double) (integrations_seq_reads () - before) / (double) rows;
    printf ("idle forecast: %.1f reads of the %lld rows of integrations in %.1f s, one worker passing every %d ms,"
            " %lld providers with an idle limit\n", reads, rows, window / 1000, FORECAST_MS, providers);
    if (reads < 0.4 * (double) providers * (window / FORECAST_MS))
        fail_msg ("one worker made the idle forecast %.1f times in %.1f s with an interval of %d ms: its passes wait for"
                  " the delivery's poll", reads / (double) providers, window / 1000, FORECAST_MS);

    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w3"), 0);
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    sleep (2);                      /* the new workers' start, and what it read, reported */
    before = integrations_seq_reads ();
    start = clock_mono_ms ();
    sleep (4);
    window = (double) (clock_mono_ms () - start);
    reads = (double) (integrations_seq_reads () - before) / (double) rows;
    double one_worker = (double) providers * (window / FORECAST_MS + 1);   /* one worker's reads */
    printf ("idle forecast: %.1f reads of the %lld rows of integrations in %.1f s, three workers passing every %d ms,"
            " %lld providers with an idle limit (one worker's reads: %.1f)\n", reads, rows, window / 1000, FORECAST_MS,
            providers, one_worker);
    if (reads > 1.5 * one_worker)
        fail_msg ("the idle forecast read the integrations table %.1f times in %.1f s: every worker reads it", reads,
                  window / 1000);
    assert_true (reads >= providers);       /* and it is still made */
    assert_int_equal (harness_sql_int (h, idle), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM forecast_turns WHERE provider = 'fakebox'"
                                          " AND ran_at > now() - interval '10 seconds'"), 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_status_trigger_reads_no_chain),
        cmocka_unit_test (test_reconnect_trigger_reads_no_chain),
        cmocka_unit_test (test_grant_forecast_starts_from_its_window),
        cmocka_unit_test (test_idle_forecast_made_by_one_worker_for_all),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
