/* test_events_outage.c - event delivery through a database outage: deliveries that were being
 * retried when PostgreSQL stopped are all delivered, in order, once it is back; the worker keeps
 * serving cached tokens meanwhile, and a change that could not commit has no event. And a worker
 * told to stop while the database is stalled does not wait for it. And the claims find the
 * queues' heads: many queues each with a due head at once from the due rows, and while a
 * receiver refuses everything, not the backlog behind a failing head.
 * This test runs its own PostgreSQL cluster, because it stops and starts it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"
#include "receiver.h"

#define SECRET "whsec_outage_test_0123456789abcdef"
#define N      5
#define BACKLOG 30000                /* deliveries queued behind one failing head */
#define QUEUES  150                  /* integrations with two events each, all due at once */

/* How long a worker told to stop during a database stall may take to exit: its drain settles in
 * half a second, the main loop's statements give up within about a second (the heartbeat), and
 * the event thread's a second after it was asked to end: 0.7 s under AddressSanitizer on an idle
 * machine before that second, and the bound leaves room for a loaded one. The stall lasts until
 * then (the code before exited only once the database was back). */
#define STALL_STOP_MS 10000

static harness_t *h;
static char pg_dir [4096];

/* The test's own cluster (itest_pg). */
static int
pg (const char *action, char *url, size_t urlsize)
{
    return itest_pg (action, pg_dir, url, urlsize);
}

static int
setup (void **state)
{
    if (itest_pg_own ("events-outage", pg_dir, sizeof pg_dir) != 0)
        return -1;
    h = harness_new ("events_outage");
    if (!h || receiver_start (0, SECRET) != 0)
        return -1;
    char path [512], secret [512], text [1024];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    FILE *f = fopen (secret, "w");
    if (!f)
        return -1;
    fputs (SECRET, f);
    fclose (f);
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/\", "
              "\"secret_file\": \"%s\"}]}", receiver_port (), secret);
    f = fopen (path, "w");
    if (!f)
        return -1;
    fputs (text, f);
    fclose (f);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "100");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "300");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "1500");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    int bad = itest_teardown (&h);
    receiver_stop ();
    pg ("remove", NULL, 0);
    return bad;
}

static void
test_delivery_resumes_after_outage (void **state)
{
    char ids [N][32];
    int rc;
    receiver_set (1000000, 0);       /* refuse everything for now: the deliveries are being retried */
    for (int i = 0; i < N; i++) {
        snprintf (ids [i], sizeof ids [i], "out%d:box", i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
        json_t *t = harness_ctl (h, &rc, "token", "--integration", ids [i], NULL);
        assert_int_equal (rc, 0);
        json_decref (t);
    }
    for (int i = 0; i < N; i++) {
        json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", ids [i], "--scope", "admin", NULL);
        assert_int_equal (rc, 0);
        json_decref (r);
    }
    usleep (500000);
    assert_int_equal (pg ("stop", NULL, 0), 0);
    /* the token path goes on from the cache; a change cannot commit, and so has no event */
    json_t *t = harness_ctl (h, &rc, "token", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "lost:box", "fakebox", rt), 5);
    free (rt);
    usleep (1500000);
    assert_true (harness_worker_running (h, "w1"));
    receiver_set (0, 0);
    assert_int_equal (pg ("start", NULL, 0), 0);

    const char *q = "SELECT count(*) FROM events e LEFT JOIN event_deliveries d ON d.event_seq = e.seq"
                    " WHERE d.state IS DISTINCT FROM 'delivered'";
    int64_t end = clock_mono_ms () + 60000;
    long long left;
    while ((left = harness_sql_int (h, q)) != 0 && clock_mono_ms () < end)
        usleep (200000);
    assert_int_equal (left, 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events"), 2 * N);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'lost:box'"), 0);
    /* each integration's two events arrived, deduplicated, in order */
    receiver_got_t *got;
    int bad, ngot = receiver_snapshot (&got, &bad);
    assert_int_equal (bad, 0);
    for (int i = 0; i < N; i++) {
        const char *first = NULL, *second = NULL;
        for (int k = 0; k < ngot; k++) {
            if (got [k].status != 200 || strcmp (got [k].integration, ids [i]) != 0)
                continue;
            if (!first)
                first = got [k].type;
            else if (!second && strcmp (got [k].type, first) != 0)
                second = got [k].type;
        }
        assert_non_null (first);
        assert_non_null (second);
        assert_string_equal (first, "connected");
        assert_string_equal (second, "insufficient_scope");
    }
    free (got);
    assert_true (itest_workdir_contains (h, "event delivery connected to the database again"));
}

/* A worker told to stop while the database is stalled (every PostgreSQL process stopped) exits
 * without waiting for it. The event delivery thread meets the stall within its 100 ms poll: a
 * statement sent, no answer. It used to wait for that answer in libpq's blocking calls for as
 * long as the stall lasted (the server's statement_timeout cannot fire in a stopped process, and
 * the kernel answers TCP keepalives for it), and the worker's stop joined it: the worker exited
 * only when the database came back. */
static void
test_stop_during_stall (void **state)
{
    pid_t pids [64];
    int n = itest_pg_processes (h, pids, 64);
    assert_true (n >= 2);
    for (int i = 0; i < n; i++)
        kill (pids [i], SIGSTOP);
    usleep (1000000);
    int64_t asked = clock_mono_ms ();
    harness_signal_worker (h, "w1", SIGTERM);
    int status = harness_wait_worker_exit (h, "w1", STALL_STOP_MS);
    int64_t took = clock_mono_ms () - asked;
    for (int i = 0; i < n; i++)
        kill (pids [i], SIGCONT);
    if (status < 0)
        printf ("the worker had not exited %d ms after SIGTERM, with the database stalled\n", STALL_STOP_MS);
    else
        printf ("the worker exited %lld ms after SIGTERM, with the database stalled\n", (long long) took);
    if (status < 0)
        status = harness_wait_worker_exit (h, "w1", 20000);    /* the old code: once the database is back */
    assert_int_equal (status, 0);
    assert_true (took < STALL_STOP_MS);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* 150 integrations with two events each, all due at once: more queues than a claim's first walk
 * reads (64), so the claims find the heads among the first due rows in next_at order. Every
 * event arrives, each integration's first before its second. */
static void
test_many_queues_claimed_from_the_due_rows (void **state)
{
    char sql [1024];
    receiver_set (0, 0);
    long long due_before = itest_reads (h, "event_deliveries", "event_deliveries_due");
    /* made two days ago, outside the fan-out's window; both events of an integration are in one
     * transaction, so the deliveries' next_at is the same and event_seq orders them */
    snprintf (sql, sizeof sql, "WITH e AS (INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
              " SELECT t, 'many' || i || ':box', 'fakebox', 'healthy', now () - interval '2 days'"
              " FROM generate_series (1, %d) i, unnest (ARRAY['connected', 'recovered']) t"
              " ORDER BY i, t RETURNING seq, integration_id)"
              " INSERT INTO event_deliveries (event_seq, endpoint, integration_id) SELECT seq, 'app', integration_id FROM e",
              QUEUES);
    assert_int_equal (harness_sql (h, sql), 0);
    /* statistics from before the insert, with hardly a pending row, make every read of pending
     * rows look free to the planner (autovacuum's ANALYZE comes within a minute in a table this
     * small, and a backlog that grows over an outage is analyzed as it grows) */
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);
    const char *left = "SELECT count(*) FROM event_deliveries WHERE integration_id LIKE 'many%' AND state <> 'delivered'";
    int64_t end = clock_mono_ms () + 60000;
    while (harness_sql_int (h, left) != 0 && clock_mono_ms () < end)
        usleep (200000);
    assert_int_equal (harness_sql_int (h, left), 0);
    receiver_got_t *got;
    int bad, ngot = receiver_snapshot (&got, &bad);
    assert_int_equal (bad, 0);
    for (int i = 1; i <= QUEUES; i++) {
        char id [32];
        int first = -1, second = -1;
        snprintf (id, sizeof id, "many%d:box", i);
        for (int k = 0; k < ngot; k++) {
            if (got [k].status != 200 || strcmp (got [k].integration, id) != 0)
                continue;
            if (first < 0 && strcmp (got [k].type, "connected") == 0)
                first = k;
            if (second < 0 && strcmp (got [k].type, "recovered") == 0)
                second = k;
        }
        assert_true (first >= 0 && second > first);
    }
    free (got);
    sleep (2);                      /* what was read is reported by now */
    long long due = itest_reads (h, "event_deliveries", "event_deliveries_due") - due_before;
    printf ("events: %d deliveries of %d queues; %lld entries read from event_deliveries_due\n", 2 * QUEUES, QUEUES, due);
    assert_true (due > 0);          /* the due rows found them, not only the walk */
}

/* Every worker down for longer than the max age (2 s here) while an event is made: once a worker
 * is back, the event is delivered. The fan-out's first pass looked back over the max age alone,
 * so such an event never got its delivery row: never sent, never marked failed, and no alert. */
static void
test_event_made_while_every_worker_was_down_is_delivered (void **state)
{
    receiver_set (0, 0);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, "FERRULE_WEBHOOK_MAX_AGE_S", "2");
    /* a change made meanwhile by another writer: the events trigger makes its event */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect' WHERE id = 'out1:box'"), 0);
    sleep (4);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM events e JOIN event_deliveries d ON d.event_seq = e.seq"
                                         " AND d.endpoint = 'app' WHERE e.integration_id = 'out1:box'"
                                         " AND e.type = 'needs_reconnect' AND d.state = 'delivered'", 1, 20000), 1);
    /* back to the default for the tests after */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, "FERRULE_WEBHOOK_MAX_AGE_S", "86400");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* Restarts w1 with env set to value. */
static void
restart_with (const char *env, const char *value)
{
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, env, value);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* Integrations prefix0..7:box, imported, their "connected" events delivered. */
static void
import_eight (const char *prefix)
{
    char id [32], q [256];
    for (int i = 0; i < 8; i++) {
        snprintf (id, sizeof id, "%s%d:box", prefix, i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
        free (rt);
    }
    snprintf (q, sizeof q, "SELECT count(*) FROM event_deliveries WHERE integration_id LIKE '%s%%' AND state <> 'delivered'",
              prefix);
    assert_int_equal (itest_wait_sql (h, q, 0, 30000), 0);
}

/* One event for each of those eight, in one statement: one claim takes them all. Returns the
 * receiver's count of arrivals before it. */
static int
emit_eight (const char *prefix, const char *detail)
{
    char sql [512];
    receiver_got_t *got;
    int bad, before = receiver_snapshot (&got, &bad);
    free (got);
    snprintf (sql, sizeof sql, "SELECT events_emit ('insufficient_scope', id, provider, 'insufficient_scope', generation,"
              " '%s') FROM integrations WHERE id LIKE '%s%%'", detail, prefix);
    assert_int_equal (harness_sql (h, sql), 0);
    return before;
}

/* Arrivals since before of events of integrations named prefix..., and how many were repeats. */
static int
arrivals_since (int before, const char *prefix, int *repeats)
{
    receiver_got_t *got;
    int bad, n = receiver_snapshot (&got, &bad), arrivals = 0;
    assert_int_equal (bad, 0);
    *repeats = 0;
    for (int k = before; k < n; k++) {
        if (strncmp (got [k].integration, prefix, strlen (prefix)) != 0 || strcmp (got [k].type, "insufficient_scope") != 0)
            continue;
        arrivals++;
        for (int m = before; m < k; m++)
            *repeats += strcmp (got [m].id, got [k].id) == 0;
    }
    free (got);
    return arrivals;
}

/* The database goes away while a claim's eight deliveries are sent one after another. The attempt
 * whose outcome could not be recorded is sent again once its lease ends (at least once); the
 * others were sent all the same, each recorded as "not connected", their leases left to expire,
 * then all sent again: seven repeats. Now the claim's sending stops with the connection, and
 * those not sent are given back once it is back. */
static void
test_database_lost_mid_claim_sends_no_more (void **state)
{
    receiver_set (0, 0);
    restart_with ("FERRULE_WEBHOOK_LEASE_MS", "10000");
    import_eight ("mid");
    receiver_set (0, 400);
    int before = emit_eight ("mid", "missing: mid-claim"), repeats = 0;
    int64_t end = clock_mono_ms () + 20000;
    while (arrivals_since (before, "mid", &repeats) < 1 && clock_mono_ms () < end)
        usleep (20000);
    assert_int_equal (pg ("stop", NULL, 0), 0);
    sleep (3);
    assert_int_equal (pg ("start", NULL, 0), 0);
    const char *left = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                       " WHERE e.integration_id LIKE 'mid%' AND d.state <> 'delivered'";
    assert_int_equal (itest_wait_sql (h, left, 0, 60000), 0);
    int arrivals = arrivals_since (before, "mid", &repeats);
    receiver_set (0, 0);
    printf ("events: the database stopped after the first of a claim's 8 attempts: %d arrivals, %d of them repeats\n",
            arrivals, repeats);
    restart_with ("FERRULE_WEBHOOK_LEASE_MS", "1500");
    assert_int_equal (arrivals - repeats, 8);
    assert_true (repeats <= 1);
}

/* A worker stops while a claim's eight deliveries are sent one after another. The claim counted an
 * attempt for each and leased them all; those not attempted yet kept both, and waited out the
 * lease (20 s here) before anyone sent them, each with an attempt that never happened. They are
 * given back at the stop; the attempt in flight is abandoned and keeps its lease. */
static void
test_stop_gives_back_unsent_deliveries (void **state)
{
    receiver_set (0, 0);
    restart_with ("FERRULE_WEBHOOK_LEASE_MS", "20000");
    import_eight ("stp");
    receiver_set (0, 500);
    int before = emit_eight ("stp", "missing: stop-test"), repeats = 0;
    int64_t end = clock_mono_ms () + 20000;
    while (arrivals_since (before, "stp", &repeats) < 1 && clock_mono_ms () < end)
        usleep (20000);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    int sent = arrivals_since (before, "stp", &repeats);
    const char *kept = "SELECT count(*) FROM event_deliveries WHERE integration_id LIKE 'stp%' AND state = 'pending'"
                       " AND (lease_token IS NOT NULL OR attempts > 0)";
    long long held = harness_sql_int (h, kept);
    long long pending = harness_sql_int (h, "SELECT count(*) FROM event_deliveries WHERE integration_id LIKE 'stp%'"
                                            " AND state = 'pending'");
    printf ("events: a worker stopped after %d of a claim's 8 attempts: %lld left pending, %lld of them leased or"
            " with an attempt counted\n", sent, pending, held);
    receiver_set (0, 0);
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "1500");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    assert_true (pending >= 2);         /* the stop came before the claim's end */
    assert_true (held <= 1);            /* the attempt in flight, if any */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries WHERE integration_id LIKE 'stp%'"
                                         " AND state <> 'delivered'", 0, 60000), 0);
}

/* A receiver refuses everything, and 30,000 deliveries wait behind the first event of one
 * integration, which keeps failing: only that head may be sent. Its retries move its own next_at
 * into the future, but the rows behind it keep theirs and stay due. The claim read every due row
 * in next_at order and probed each for an earlier pending one, so every claim of every worker
 * read the whole backlog (202 ms at 50,000 rows on the review's cluster), the more the longer
 * the outage. It now reads the queues' heads. Counted in entries of every index of the table
 * and rows of its sequential scans, whichever a plan uses, not timed. The delivery counts read
 * the pending rows too, but once in 5 s: at most once in the 3 s counted. */
static void
test_claim_reads_heads_not_the_backlog (void **state)
{
    char sql [1024];
    receiver_set (1000000, 0);
    /* made two days ago, outside the fan-out's window (which would probe each of them); their
     * deliveries are new, so the max age is far */
    snprintf (sql, sizeof sql, "WITH e AS (INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
              " SELECT 'connected', 'backlog:box', 'fakebox', 'healthy', now () - interval '2 days'"
              " FROM generate_series (0, %d) RETURNING seq, integration_id)"
              " INSERT INTO event_deliveries (event_seq, endpoint, integration_id) SELECT seq, 'app', integration_id FROM e",
              BACKLOG);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);     /* as above */
    const char *head = "SELECT attempts FROM event_deliveries WHERE endpoint = 'app' AND event_seq ="
                       " (SELECT min (seq) FROM events WHERE integration_id = 'backlog:box')";
    const char *behind = "SELECT count(*) FROM event_deliveries WHERE endpoint = 'app' AND attempts > 0"
                         " AND event_seq > (SELECT min (seq) FROM events WHERE integration_id = 'backlog:box')";
    int64_t end = clock_mono_ms () + 20000;
    while (harness_sql_int (h, head) < 2 && clock_mono_ms () < end)
        usleep (100000);
    sleep (2);                      /* what was read before is reported by now */
    const char *names [] = { "event_deliveries_due", "event_deliveries_queue", "event_deliveries_pkey",
                             "event_deliveries_by_endpoint", "event_deliveries_delivered", NULL };
    enum { N_READS = sizeof names / sizeof names [0] };
    long long before [N_READS], read = 0, tried = harness_sql_int (h, head);
    for (int i = 0; i < N_READS; i++)
        before [i] = itest_reads (h, "event_deliveries", names [i]);
    sleep (3);                      /* a claim every 100 ms poll, and at each retry */
    for (int i = 0; i < N_READS; i++) {
        long long d = itest_reads (h, "event_deliveries", names [i]) - before [i];
        printf ("events: %lld entries read from %s in 3 s of claims\n", d, names [i] ? names [i] : "sequential scans");
        read += d;
    }
    long long again = harness_sql_int (h, head);
    printf ("events: the head was tried %lld times, %lld of them in those 3 s\n", again, again - tried);
    assert_true (tried >= 2 && again > tried);          /* the claims went on */
    assert_int_equal (harness_sql_int (h, behind), 0);  /* and only the head was sent */
    if (read >= 2 * BACKLOG)
        fail_msg ("the claims read the backlog behind the head (%lld entries in 3 s)", read);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_delivery_resumes_after_outage),
        cmocka_unit_test (test_stop_during_stall),
        cmocka_unit_test (test_many_queues_claimed_from_the_due_rows),
        cmocka_unit_test (test_event_made_while_every_worker_was_down_is_delivered),
        cmocka_unit_test (test_database_lost_mid_claim_sends_no_more),
        cmocka_unit_test (test_stop_gives_back_unsent_deliveries),
        cmocka_unit_test (test_claim_reads_heads_not_the_backlog),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
