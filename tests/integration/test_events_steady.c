/* test_events_steady.c - the event delivery in its steady state, with the default max age (a
 * day): what its periodic looks read when nothing new comes, what it says when a count fails or is
 * large, what the webhook's doctor says of a slow receiver, and what a worker says of an endpoints
 * file it cannot read. Counted in rows, log lines and metrics, not timed. */
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
#include "receiver.h"

#define SECRET   "whsec_events_steady_0123456789abcdef"
#define OLD      30000              /* delivered events of an hour ago */
#define HELD_MS  60000              /* the receiver holds a request this long unless released */
#define COUNT_CAP 10000             /* the metrics' and the webhook doctor's counts stop there */

static harness_t *h;
static char hooks_path [512];

static int
setup (void **state)
{
    h = harness_new ("events_steady");
    if (!h || receiver_start (0, SECRET) != 0)
        return -1;
    char secret [512], text [1024];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (hooks_path, sizeof hooks_path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/hooks\", "
              "\"secret_file\": \"%s\"}]}", receiver_port (), secret);
    itest_write_file (hooks_path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", hooks_path);
    /* an attempt the receiver holds stays in flight until released, and its thread off the database */
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "90000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "91000");
    /* a retry comes 1.5 to 3 s after a refused attempt: room to hold it in flight */
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "3000");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "6000");
    /* the default poll (1 s): each pass reads a few entries, which the first test counts too */
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "1000");
    harness_set_env (h, "FERRULE_EVENTS_FORECAST_MS", "86400000");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    /* the worker starts in the first test, after its events are in */
    return harness_start_broker (h) < 0 ? -1 : 0;
}

static int
teardown (void **state)
{
    receiver_release ();
    int bad = itest_teardown (&h);
    receiver_stop ();
    return bad;
}

/* w1, started if an earlier test did not get to start it */
static void
need_worker (void)
{
    if (harness_worker_running (h, "w1"))
        return;
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* A test event to "app" whose transaction began age ago ("0 seconds": now); its seq. */
static long long
emit (const char *age)
{
    char sql [512];
    snprintf (sql, sizeof sql, "INSERT INTO events (type, diagnosis, endpoint, created_at)"
              " VALUES ('test', 'healthy', 'app', now () - interval '%s') RETURNING seq", age);
    long long seq = harness_sql_int (h, sql);
    assert_true (seq > 0);
    return seq;
}

/* The delivery of event seq to "app" once it is in state ("%": any), after waiting up to
 * timeout_ms for it: 1, or 0. One entry of the primary key a look. */
static long long
wait_row (long long seq, const char *state, int timeout_ms)
{
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries WHERE event_seq = %lld AND endpoint = 'app'"
              " AND state LIKE '%s'", seq, state);
    return itest_wait_sql (h, sql, 1, timeout_ms);
}

/* Its delivery claimed and its attempt number attempt under way (held by the receiver). */
static void
wait_in_flight (long long seq, int attempt)
{
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries WHERE event_seq = %lld AND endpoint = 'app'"
              " AND state = 'pending' AND attempts = %d AND lease_token IS NOT NULL", seq, attempt);
    assert_int_equal (itest_wait_sql (h, sql, 1, 20000), 1);
    usleep (200000);                /* from its claim's commit to its request */
}

/* What the fan-out and the claims read: entries of both tables' indexes, and rows their
 * sequential scans read (itest_reads), so far. */
static const char *const read_from [][2] = {
    { "events", NULL }, { "events", "events_pkey" }, { "events", "events_by_time" },
    { "event_deliveries", NULL }, { "event_deliveries", "event_deliveries_pkey" },
    { "event_deliveries", "event_deliveries_due" }, { "event_deliveries", "event_deliveries_queue" },
    { "event_deliveries", "event_deliveries_by_endpoint" },
    { "event_deliveries", "event_deliveries_by_endpoint_seq" },
};
#define NREAD (sizeof read_from / sizeof read_from [0])

static void
reads (long long n [NREAD])
{
    for (size_t i = 0; i < NREAD; i++)
        n [i] = itest_reads (h, read_from [i][0], read_from [i][1]);
}

/* ---------------------------------------------------------------- tests */

/* 30,000 events of an hour ago, each delivered already. Every 30 s every endpoint's thread, on
 * every worker, looked over the whole max age (a day) again, probing each event's delivery in
 * steps of 1,000: each look read all 30,000 (events a day, times endpoints, times workers, every
 * 30 s). The periodic look is for transactions that commit late, and reads the last minutes only;
 * the look over the whole max age is the thread's first (and one after its connection was lost).
 * An event whose transaction began 5 minutes before it committed still gets its delivery at the
 * next periodic look, and one of an hour ago at the look after a lost connection. */
static void
test_periodic_fanout_reads_only_recent_events (void **state)
{
    char sql [1024];
    snprintf (sql, sizeof sql, "WITH e AS (INSERT INTO events (type, diagnosis, endpoint, created_at)"
              " SELECT 'test', 'healthy', 'app', now () - interval '1 hour' FROM generate_series (1, %d) RETURNING seq)"
              " INSERT INTO event_deliveries (event_seq, endpoint, state, attempts, first_at, next_at, last_attempt_at,"
              " last_status, delivered_at) SELECT seq, 'app', 'delivered', 1, now () - interval '1 hour',"
              " now () - interval '1 hour', now () - interval '1 hour', 200, now () - interval '1 hour' FROM e", OLD);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE events"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);
    /* the first look (over the max age) reads them all once; this one, newer, is its last step's */
    long long late = emit ("5 minutes");
    need_worker ();
    assert_int_equal (wait_row (late, "delivered", 30000), 1);
    sleep (2);                      /* what was read before is reported by now */
    long long before [NREAD], after [NREAD], read = 0;
    reads (before);
    /* a transaction that began 5 minutes ago commits: the next periodic look gives it its row */
    late = emit ("5 minutes");
    int64_t t0 = clock_mono_ms ();
    assert_int_equal (wait_row (late, "delivered", 60000), 1);
    int64_t took = clock_mono_ms () - t0;
    sleep (2);
    reads (after);
    for (size_t i = 0; i < NREAD; i++) {
        read += after [i] - before [i];
        print_message ("events: %lld read from %s %s\n", after [i] - before [i], read_from [i][0],
                       read_from [i][1] ? read_from [i][1] : "(sequential scans)");
    }
    print_message ("events: a periodic look (%lld ms to find the late event) and the passes around it read %lld"
                   " entries and rows, with %d delivered events of an hour ago\n", (long long) took, read, OLD);
    if (read >= OLD / 10)
        fail_msg ("the periodic look read the day's delivered events again (%lld entries)", read);
    /* one of an hour ago, with no delivery (a transaction open that long): the look after a lost
     * connection goes over the max age again */
    late = emit ("1 hour");
    assert_int_equal (harness_sql (h, "SELECT count(*) FROM (SELECT pg_terminate_backend (pid) FROM pg_stat_activity"
                                      " WHERE application_name = 'ferrule-worker-webhook w1 app' AND datname = current_database ()) t"), 0);
    assert_int_equal (wait_row (late, "delivered", 30000), 1);
}

/* An integration's events go in order even when the older one's transaction was open longer than
 * the short look back (its time is its transaction's start): the older committed, then a newer
 * one came from a later transaction. The short look gave the newer its row at once and the older
 * none (it waited for the look for late commits, up to 30 s), and the claim, which orders only
 * the rows there are, sent the newer first. Now the newer waits for the older's row. */
static void
test_late_commit_keeps_the_order (void **state)
{
    need_worker ();
    long long older = harness_sql_int (h, "INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
                                          " VALUES ('needs_reconnect', 'order:box', 'fakebox', 'needs_reconnect',"
                                          " now () - interval '3 minutes') RETURNING seq");
    long long newer = harness_sql_int (h, "INSERT INTO events (type, integration_id, provider, diagnosis)"
                                          " VALUES ('reconnected', 'order:box', 'fakebox', 'healthy') RETURNING seq");
    assert_true (older > 0 && newer > older);
    assert_int_equal (wait_row (older, "delivered", 60000), 1);
    assert_int_equal (wait_row (newer, "delivered", 30000), 1);
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT (o.delivered_at <= n.first_at)::int FROM event_deliveries o, event_deliveries n"
              " WHERE o.event_seq = %lld AND o.endpoint = 'app' AND n.event_seq = %lld AND n.endpoint = 'app'",
              older, newer);
    long long in_order = harness_sql_int (h, sql);
    print_message ("events: the older event (a late commit) delivered before the newer's first attempt: %s\n",
                   in_order == 1 ? "yes" : "no");
    assert_int_equal (in_order, 1);
}

/* An endpoint with rare events starts: the newest event it was given (its thread's first read)
 * was read from the top of the deliveries' primary key (event_seq, endpoint) down, through every
 * newer delivery of the other endpoints, joined to the events backwards as well: 60,000 newer
 * deliveries here, 1 million took 155 ms, some 30 million went past the statement timeout, and
 * the endpoint never fanned out again. Counted in index entries and rows read while a worker
 * with that endpoint only starts and sends one new event. */
static void
test_rare_endpoint_start_reads_its_own_rows (void **state)
{
    /* its 600 deliveries of two hours ago, then 60,000 newer ones of another endpoint, of events
     * older than the first look's max age (created in seq order: the look starts past them) */
    assert_int_equal (harness_sql (h, "WITH e AS (INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
                                      " SELECT 'disconnected', 'rare:box', 'fakebox', 'revoked', now () - interval '2 hours'"
                                      " FROM generate_series (1, 600) RETURNING seq)"
                                      " INSERT INTO event_deliveries (event_seq, endpoint, integration_id, state, attempts,"
                                      " first_at, last_attempt_at, last_status, delivered_at) SELECT seq, 'rare', 'rare:box',"
                                      " 'delivered', 1, now (), now (), 200, now () FROM e"), 0);
    assert_int_equal (harness_sql (h, "WITH e AS (INSERT INTO events (type, diagnosis, endpoint, created_at)"
                                      " SELECT 'test', 'healthy', 'other', now () - interval '2 days' + g * interval '1 ms'"
                                      " FROM generate_series (1, 60000) g ORDER BY g RETURNING seq)"
                                      " INSERT INTO event_deliveries (event_seq, endpoint, state, attempts, first_at,"
                                      " last_attempt_at, last_status, delivered_at) SELECT seq, 'other', 'delivered', 1,"
                                      " now (), now (), 200, now () FROM e"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE events"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);
    if (harness_worker_running (h, "w1"))
        assert_int_equal (harness_stop_worker (h, "w1"), 0);
    char path [512], text [1024], secret [512];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    snprintf (path, sizeof path, "%s/webhooks-rare.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"rare\", \"url\": \"http://127.0.0.1:%d/hooks\", "
              "\"secret_file\": \"%s\", \"events\": [\"disconnected\"]}]}", receiver_port (), secret);
    itest_write_file (path, text);
    sleep (2);                      /* what was read before is reported by now */
    /* the primary key's pages too: the entries of other endpoints that a scan passes over
     * inside the index are not counted as read */
    const char *pages = "SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes"
                        " WHERE indexrelname = 'event_deliveries_pkey'";
    long long before [NREAD], after [NREAD], read = 0, pages_before = harness_sql_int (h, pages);
    reads (before);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    int started = harness_start_worker (h, "wrare");
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", hooks_path);
    assert_int_equal (started, 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    long long seq = harness_sql_int (h, "INSERT INTO events (type, integration_id, provider, diagnosis)"
                                        " VALUES ('disconnected', 'rare:box', 'fakebox', 'revoked') RETURNING seq");
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries WHERE event_seq = %lld AND endpoint = 'rare'"
              " AND state = 'delivered'", seq);
    assert_int_equal (itest_wait_sql (h, sql, 1, 30000), 1);
    /* a session reports what it read when it ends, or up to 10 s later while it is idle */
    assert_int_equal (harness_stop_worker (h, "wrare"), 0);
    sleep (2);
    reads (after);
    long long pages_read = harness_sql_int (h, pages) - pages_before;
    for (size_t i = 0; i < NREAD; i++) {
        read += after [i] - before [i];
        print_message ("events: %lld read from %s %s\n", after [i] - before [i], read_from [i][0],
                       read_from [i][1] ? read_from [i][1] : "(sequential scans)");
    }
    print_message ("events: a worker with an endpoint of rare events started and sent one, reading %lld entries"
                   " and rows, with 60,000 newer deliveries of another endpoint\n", read);
    print_message ("events: and %lld pages of the deliveries' primary key (60,000 entries are some 230)\n",
                   pages_read);
    if (read >= 6000)
        fail_msg ("the start read the events of the other endpoint's deliveries (%lld entries)", read);
    if (pages_read >= 150)
        fail_msg ("the start read the other endpoint's deliveries (%lld pages)", pages_read);
}

/* A slow receiver's first attempt in flight is no retry: the claim counts the attempt before it
 * is sent, and the doctor counted every pending delivery with an attempt as "retrying" (and said
 * "retrying" of a healthy endpoint). A retry is an attempt after one that finished and failed. */
static void
test_doctor_calls_a_first_attempt_no_retry (void **state)
{
    need_worker ();
    receiver_set (0, HELD_MS);
    long long seq = emit ("0 seconds");
    wait_in_flight (seq, 1);
    int rc;
    json_t *r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    receiver_release ();
    receiver_set (0, 0);
    assert_int_equal (rc, 0);
    json_t *app = json_array_get (json_object_get (r, "webhooks"), 0);
    assert_string_equal (json_string_value (json_object_get (app, "name")), "app");
    print_message ("doctor during a first attempt: %s, pending %lld, retrying %lld\n",
                   json_string_value (json_object_get (app, "diagnosis")),
                   (long long) json_integer_value (json_object_get (app, "pending")),
                   (long long) json_integer_value (json_object_get (app, "retrying")));
    assert_int_equal (json_integer_value (json_object_get (app, "pending")), 1);
    assert_int_equal (json_integer_value (json_object_get (app, "retrying")), 0);
    assert_string_equal (json_string_value (json_object_get (app, "diagnosis")), "healthy");
    json_decref (r);
    assert_int_equal (wait_row (seq, "delivered", 20000), 1);
    /* an attempt after a refused one is a retry, in flight or not */
    receiver_set (1, 0);
    seq = emit ("0 seconds");
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries WHERE event_seq = %lld AND endpoint = 'app'"
              " AND last_status = 500", seq);
    assert_int_equal (itest_wait_sql (h, sql, 1, 20000), 1);
    receiver_set (0, HELD_MS);      /* within the backoff's first wait, 1.5 s at least */
    wait_in_flight (seq, 2);
    r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    receiver_release ();
    receiver_set (0, 0);
    assert_int_equal (rc, 0);
    app = json_array_get (json_object_get (r, "webhooks"), 0);
    assert_int_equal (json_integer_value (json_object_get (app, "retrying")), 1);
    assert_string_equal (json_string_value (json_object_get (app, "diagnosis")), "retrying");
    json_decref (r);
    assert_int_equal (wait_row (seq, "delivered", 20000), 1);
}

/* The counts for the metrics (every 5 s, on the thread of the forecasts and counts) failed
 * without a word: no log line, no database error counted, and worker_events_failed, the alert's
 * metric, kept its old value. Here the table is locked past the thread's lock timeout while the
 * endpoint's own thread waits on an attempt the receiver holds, so that only the count fails. */
static void
test_failed_count_is_reported (void **state)
{
    need_worker ();
    receiver_set (0, HELD_MS);
    long long seq = emit ("0 seconds");
    wait_in_flight (seq, 1);
    const char *errors = "ferrule_worker_events_database_errors_total";
    const char *needle = "could not count event deliveries";
    unsigned long long more;
    double errors_before = itest_metric (h, "w1", errors);
    int lines_before = itest_log_lines (h, "w1", needle, &more), lines = lines_before;
    PGconn *lock = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (lock), CONNECTION_OK);
    PGresult *res = PQexec (lock, "BEGIN; LOCK TABLE event_deliveries IN ACCESS EXCLUSIVE MODE");
    int locked = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    /* a count comes every 5 s and gives up after its lock timeout (2.5 s) */
    for (int64_t until = clock_mono_ms () + 20000; locked && lines == lines_before && clock_mono_ms () < until;
         usleep (100000))
        lines = itest_log_lines (h, "w1", needle, &more);
    PQclear (PQexec (lock, "ROLLBACK"));
    PQfinish (lock);
    double errors_after = itest_metric (h, "w1", errors);
    receiver_release ();
    receiver_set (0, 0);
    assert_true (locked);
    print_message ("a count under a lock: %d lines saying so, database errors counted %.0f then %.0f\n",
                   lines - lines_before, errors_before, errors_after);
    assert_true (lines > lines_before);
    assert_true (errors_after > errors_before);
    assert_int_equal (wait_row (seq, "delivered", 20000), 1);
}

/* Failed deliveries are never deleted, and the counts read every pending and failed one every 5 s
 * on every worker. They stop at COUNT_CAP each: worker_events_failed at that value means at least
 * that many. */
static void
test_counts_stop_at_their_cap (void **state)
{
    need_worker ();
    char sql [1024];
    snprintf (sql, sizeof sql, "WITH e AS (INSERT INTO events (type, diagnosis, endpoint, created_at)"
              " SELECT 'test', 'healthy', 'app', now () - interval '2 hours' FROM generate_series (1, %d) RETURNING seq)"
              " INSERT INTO event_deliveries (event_seq, endpoint, state, attempts, first_at, next_at, last_attempt_at,"
              " last_error, failed_at) SELECT seq, 'app', 'failed', 9, now () - interval '2 hours',"
              " now () - interval '2 hours', now () - interval '2 hours', 'no answer', now () - interval '2 hours'"
              " FROM e", COUNT_CAP + 2000);
    assert_int_equal (harness_sql (h, sql), 0);
    const char *gauge = "ferrule_worker_events_failed";
    double failed = itest_metric (h, "w1", gauge);
    for (int64_t until = clock_mono_ms () + 15000; failed < COUNT_CAP && clock_mono_ms () < until; usleep (200000))
        failed = itest_metric (h, "w1", gauge);
    print_message ("%d failed deliveries counted as %.0f\n", COUNT_CAP + 2000, failed);
    assert_true (failed == COUNT_CAP);
    /* and the webhook doctor's, read on the loop's connection under its 1 s statement timeout */
    int rc;
    json_t *r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    assert_int_equal (rc, 0);
    json_t *app = json_array_get (json_object_get (r, "webhooks"), 0);
    print_message ("the webhook doctor counted them as %lld\n",
                   (long long) json_integer_value (json_object_get (app, "failed")));
    assert_int_equal (json_integer_value (json_object_get (app, "failed")), COUNT_CAP);
    assert_string_equal (json_string_value (json_object_get (app, "diagnosis")), "failed_events");
    json_decref (r);
}

/* A JSON syntax error in the endpoints file: jansson's message quotes the token it stopped in
 * ("near '...'"), here a URL up to just after its password, and the worker's start-up error said
 * it. It names the file, line and column and the kind of error only. */
static void
test_endpoints_file_error_quotes_nothing (void **state)
{
    char path [512], text [512];
    snprintf (path, sizeof path, "%s/webhooks-broken.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"broken\",\n \"url\": \"http://a:Pw9xK2@h\\q/hooks\","
              " \"secret_file\": \"/nonexistent\"}]}\n");
    itest_write_file (path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    int started = harness_start_worker (h, "wbroken");
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", hooks_path);
    assert_int_equal (started, 0);
    assert_int_equal (harness_wait_worker_exit (h, "wbroken", 20000), 2);
    int quoted = itest_workdir_contains (h, "Pw9xK2");
    if (quoted)
        fail_msg ("the worker's log quotes the endpoints file's text, the URL's password with it");
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, "wbroken", "webhooks-broken.json\": line 2, column 28", &more), 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_periodic_fanout_reads_only_recent_events),
        cmocka_unit_test (test_late_commit_keeps_the_order),
        cmocka_unit_test (test_doctor_calls_a_first_attempt_no_retry),
        cmocka_unit_test (test_failed_count_is_reported),
        cmocka_unit_test (test_counts_stop_at_their_cap),
        cmocka_unit_test (test_endpoints_file_error_quotes_nothing),
        cmocka_unit_test (test_rare_endpoint_start_reads_its_own_rows),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
