/* test_lifecycle.c - how processes behave in a rolling update: readiness follows what a process
 * can really do, a worker refuses an old schema, and restarting every worker one by one under
 * load loses no request and breaks no chain */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sched.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>
#include "itest.h"
#include "clock.h"
#include "codec.h"

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("lifecycle");
    if (!h)
        return -1;
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    /* the default heartbeat: every worker here stops gracefully, and one of 250 ms would also cap
     * each of their statements at 250 ms, which a loaded machine under AddressSanitizer exceeds */
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "1000");
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static void
test_readiness_transitions (void **state)
{
    assert_int_equal (harness_start_broker (h), 0);
    int broker = itest_http_port (h, "broker0");
    assert_true (broker > 0);
    assert_int_equal (itest_wait_http_status (broker, "/healthz", 200), 200);
    /* no worker owns a partition yet: alive, not ready */
    assert_int_equal (itest_http_status (broker, "/readyz"), 503);

    assert_int_equal (harness_start_worker (h, "w1"), 0);
    int worker = itest_http_port (h, "w1");
    assert_true (worker > 0);
    assert_int_equal (itest_wait_http_status (worker, "/readyz", 200), 200);
    assert_int_equal (itest_wait_http_status (broker, "/readyz", 200), 200);
    assert_int_equal (itest_http_status (broker, "/metrics"), 200);

    /* an operator's "reload everything" (SIGHUP to every Ferrule process): the broker reloads,
     * the worker, which has nothing to read again, goes on serving instead of dying */
    harness_signal_worker (h, "w1", SIGHUP);
    harness_signal_broker (h, 0, SIGHUP);
    usleep (300 * 1000);
    assert_true (harness_worker_running (h, "w1"));
    assert_int_equal (itest_http_status (worker, "/readyz"), 200);
    assert_int_equal (itest_http_status (broker, "/readyz"), 200);

    /* a second worker, then a graceful stop of the first: the broker stays ready throughout */
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 10000), 0);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);      /* exit 0 on SIGTERM */
    assert_int_equal (itest_http_status (broker, "/readyz"), 200);
    /* the last worker goes: nobody owns the partitions, the broker says so */
    assert_int_equal (harness_stop_worker (h, "w2"), 0);
    assert_int_equal (itest_wait_http_status (broker, "/readyz", 503), 503);
    assert_int_equal (itest_http_status (broker, "/healthz"), 200);

    /* a worker again: ready again */
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (itest_wait_http_status (broker, "/readyz", 200), 200);
}

#define ROLL_INTEGRATIONS 20

/* The load during the rolling restart, in a child process: storms over the integrations, some
 * of them expired before each round. Exits with the number of requests not answered ok. */
static int
load (char ids [][32], int rounds)
{
    PGconn *db = PQconnectdb (harness_database_url (h));
    const char *list [ROLL_INTEGRATIONS];
    for (int i = 0; i < ROLL_INTEGRATIONS; i++)
        list [i] = ids [i];
    const char *endpoints [] = { harness_broker_frontend (h, 0) };
    int bad = 0;
    for (int round = 0; round < rounds; round++) {
        char sql [256];
        snprintf (sql, sizeof sql, "SELECT pg_notify('ferrule_integrations', 'test ' || id) FROM integrations"
                  " WHERE id IN (SELECT id FROM integrations WHERE id LIKE 'roll%%' AND"
                  " ('x' || substr(md5(id || '%d'), 1, 2))::bit(8)::int %% 4 = 0)", round);
        char upd [256];
        snprintf (upd, sizeof upd, "UPDATE integrations SET access_expires_at = now() WHERE id LIKE 'roll%%' AND"
                  " ('x' || substr(md5(id || '%d'), 1, 2))::bit(8)::int %% 4 = 0", round);
        PQclear (PQexec (db, upd));
        PQclear (PQexec (db, sql));
        json_t *replies = itest_storm (endpoints, 1, list, ROLL_INTEGRATIONS, 100, 5000);
        size_t i;
        json_t *r;
        json_array_foreach (replies, i, r)
            if (!json_is_true (json_object_get (r, "ok"))) {
                fprintf (stderr, "round %d request %zu: %s\n", round, i, json_is_null (r) ? "no reply" : itest_code (r));
                bad++;
            }
        json_decref (replies);
        usleep (100000);
    }
    PQfinish (db);
    return bad;
}

static void
test_rolling_restart_under_load (void **state)
{
    static char ids [ROLL_INTEGRATIONS][32];
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w3"), 0);
    assert_int_equal (harness_wait_ready (h, 3, 10000), 0);
    for (int i = 0; i < ROLL_INTEGRATIONS; i++) {
        snprintf (ids [i], sizeof ids [i], "roll%02d:box", i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 30));

    pid_t child = fork ();
    if (child == 0)
        _exit (load (ids, 25) > 0 ? 1 : 0);
    /* every worker in turn: SIGTERM (drain, exit 0), then start it again */
    const char *workers [] = { "w1", "w2", "w3" };
    for (int i = 0; i < 3; i++) {
        usleep (300000);
        assert_int_equal (harness_stop_worker (h, workers [i]), 0);
        assert_int_equal (harness_start_worker (h, workers [i]), 0);
        assert_int_equal (harness_wait_ready (h, 3, 10000), 0);
    }
    int status = 0;
    waitpid (child, &status, 0);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);      /* every request answered ok */
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE status <> 'active'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'conflict'"), 0);
}

static void
test_old_schema_refused (void **state)
{
    /* roll the schema back one version: the worker must refuse to start and say what to run */
    assert_int_equal (harness_sql (h, "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"), 0);
    assert_int_equal (harness_start_worker (h, "old"), 0);
    int status = harness_wait_worker_exit (h, "old", 10000);
    assert_int_equal (status, 6);
    char path [4096];
    snprintf (path, sizeof path, "%s/old.log", harness_workdir (h));
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    char line [4096];
    int named = 0;
    while (fgets (line, sizeof line, f))
        named |= strstr (line, "ferrule-migrate up") != NULL;
    fclose (f);
    assert_true (named);
}

/* A statement timeout the worker cannot wait out between heartbeats: it refuses to start, and its
 * message gives the largest it takes. The message said "under 3000 ms" for 2900, which it
 * refused, since the loop waits 250 ms past the server's timeout. */
static void
test_database_timeouts_checked_at_start (void **state)
{
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2900");
    assert_int_equal (harness_start_worker (h, "slowdb"), 0);
    int status = harness_wait_worker_exit (h, "slowdb", 10000);
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "0");
    assert_int_equal (status, 2);
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, "slowdb", "FERRULE_DB_STATEMENT_TIMEOUT_MS (2900) plus the 250 ms the worker "
                                       "waits past it", &more), 1);
    assert_int_equal (itest_log_lines (h, "slowdb", "(3000 ms: a statement timeout of at most 2749 ms)", &more), 1);
}

/* A refresh lease starts when the claim's statement runs, and its provider call only once the
 * claim's answer is back in the loop, which can take the statement timeout and the 250 ms the
 * worker waits past it. A lease that covered the call's timeout (with its connect, which the
 * timeout already includes) and not that started: it could run out during a live call, and
 * another worker's claim spend the same refresh token. It now refuses to start. */
/* Worker name started with a 2000 ms provider call, a statement timeout of statement_ms and a
 * lease of lease_ms: it must exit with 2, saying needle; the settings are put back after. */
static void
lease_refused_at_start (const char *name, const char *statement_ms, const char *lease_ms, const char *needle)
{
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "2000");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "100");
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", statement_ms);
    harness_set_env (h, "FERRULE_LEASE_MS", lease_ms);
    assert_int_equal (harness_start_worker (h, name), 0);
    int status = harness_wait_worker_exit (h, name, 10000);
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "15000");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "5000");
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "0");
    harness_set_env (h, "FERRULE_LEASE_MS", "45000");
    if (status == -1)
        harness_stop_worker (h, name);
    if (status != 2)
        fail_msg ("a %s ms lease over a 2000 ms provider call and a %s ms statement timeout: the worker %s", lease_ms,
                  statement_ms, status == -1 ? "started" : "exited, not with 2");
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, name, needle, &more), 1);
}

static void
test_refresh_lease_without_room_for_the_claim_refused_at_start (void **state)
{
    lease_refused_at_start ("shortlease", "1000", "3200", "FERRULE_LEASE_MS (3200) must exceed the provider call "
                            "timeout (2000 ms) plus the longest a claim's answer, the wait of the call's answer for "
                            "a free database connection (a batch may be in flight on each) and its commit can take "
                            "(3750 ms");
}

/* The same rule left out the commit of the call's answer: a 3500 ms lease over a 2000 ms call
 * and a 1200 ms statement timeout was taken, although a claim answered after 1450 ms and a call
 * ended 2000 ms later leave 50 ms for a commit that may take 1450 ms: the lease ran out before
 * the commit landed, and another worker could claim and spend the refresh token the answer had
 * replaced (review, 2026-12-06). It now refuses to start, counting the commit. */
static void
test_refresh_lease_without_room_for_the_commit_refused_at_start (void **state)
{
    lease_refused_at_start ("nocommitroom", "1200", "3500", "FERRULE_LEASE_MS (3500) must exceed the provider call "
                            "timeout (2000 ms) plus the longest a claim's answer, the wait of the call's answer for "
                            "a free database connection (a batch may be in flight on each) and its commit can take "
                            "(4350 ms");
}

/* The rule then left out the commit's wait for a free connection: the answer's commit goes with
 * the next batch, and with a batch in flight on each of the worker's connections it waits up to
 * a statement timeout and 250 ms before it is even sent. A 5000 ms lease over a 2000 ms call and
 * a 1000 ms statement timeout was taken, although the claim's answer, that wait and the commit
 * may take 3750 ms: the lease could end before a live refresh committed, and another worker
 * spend the refresh token it replaced (review, 2026-12-07). It now refuses to start. */
static void
test_refresh_lease_without_room_for_the_wait_for_a_connection_refused_at_start (void **state)
{
    lease_refused_at_start ("noconnroom", "1000", "5000", "FERRULE_LEASE_MS (5000) must exceed the provider call "
                            "timeout (2000 ms) plus the longest a claim's answer, the wait of the call's answer for "
                            "a free database connection (a batch may be in flight on each) and its commit can take "
                            "(3750 ms: three times the database statement timeout and 250 ms)");
}

/* A webhook lease that exceeds the attempt's timeout by less than the claim itself can take: the
 * worker started, and every delivery it claimed was given back unsent at each poll (its attempt
 * could not end within the lease, counted from before the claim), forever, with an info line. It
 * now refuses to start and says by how much the lease must exceed the timeout. */
static void
test_webhook_lease_without_room_for_the_claim_refused_at_start (void **state)
{
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "1001");
    assert_int_equal (harness_start_worker (h, "tightlease"), 0);
    int status = harness_wait_worker_exit (h, "tightlease", 10000);
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "10000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "30000");
    assert_int_equal (status, 2);
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, "tightlease", "FERRULE_WEBHOOK_LEASE_MS (1001) must exceed "
                                       "FERRULE_WEBHOOK_TIMEOUT_MS (1000) by at least 500 ms", &more), 1);
}

/* A webhook backoff of 0 ms: every failed attempt was retried at once, and a held endpoint probed
 * every 100 ms for ever; a longest wait below the first made every wait that longest one. The
 * worker now refuses to start on either, naming the setting. */
static void
test_webhook_backoff_without_a_wait_refused_at_start (void **state)
{
    static const char *const cases [][3] = {
        { "0", "600000", "invalid value for FERRULE_WEBHOOK_BACKOFF_BASE_MS from FERRULE_WEBHOOK_BACKOFF_BASE_MS: "
                         "expected an integer from 100 to" },
        { "1000", "0", "invalid value for FERRULE_WEBHOOK_BACKOFF_MAX_MS from FERRULE_WEBHOOK_BACKOFF_MAX_MS: "
                       "expected an integer from 100 to" },
        { "5000", "1000", "FERRULE_WEBHOOK_BACKOFF_MAX_MS (1000) must be at least FERRULE_WEBHOOK_BACKOFF_BASE_MS (5000)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char name [32];
        snprintf (name, sizeof name, "nobackoff%zu", i);
        harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", cases [i][0]);
        harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", cases [i][1]);
        assert_int_equal (harness_start_worker (h, name), 0);
        int status = harness_wait_worker_exit (h, name, 10000);
        harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "1000");
        harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "600000");
        if (status == -1)
            harness_stop_worker (h, name);
        if (status != 2)
            fail_msg ("webhook backoff %s ms, at most %s ms: the worker %s", cases [i][0], cases [i][1],
                      status == -1 ? "started" : "exited, not with 2");
        unsigned long long more;
        assert_int_equal (itest_log_lines (h, name, cases [i][2], &more), 1);
    }
}

/* Before a burst's first request: broker 0 stopped (SIGSTOP), and a child that, once the burst is
 * sent, asks it to stop (SIGTERM) and lets it go on (SIGCONT). */
static void
stop_broker_around (void *arg, size_t i)
{
    if (i != 0)
        return;
    harness_signal_broker (h, 0, SIGSTOP);
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        usleep (500000);
        harness_signal_broker (h, 0, SIGTERM);
        harness_signal_broker (h, 0, SIGCONT);
        _exit (0);
    }
    *(pid_t *) arg = child;
}

/* A broker stopped (SIGTERM) answers what reached it first: the requests in flight with the
 * workers' answers, which it waits for, forwards, and lets leave before its socket goes (it closed
 * the socket with no linger, which can drop the answers of its last turn); and the requests that
 * came before the stop but were not read yet, answered "unavailable" (it left without reading
 * them: they were never answered, and their clients waited for their own deadlines). */
static void
test_broker_stopped_with_requests_in_flight_answers_them (void **state)
{
    enum { N = 20 };
    char *ids [N];
    for (int i = 0; i < N; i++) {
        assert_true (asprintf (&ids [i], "stop:%d", i) > 0);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1000));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    pid_t killer = fork ();
    assert_true (killer >= 0);
    if (killer == 0) {
        /* the requests are at the provider: counted there, not assumed after a fixed time (the
         * storm's connection and the refreshes' claims take longer on a loaded machine) */
        long long reached = itest_wait_stat (h, "fakebox", "refresh_calls", calls + N, 15000);
        harness_signal_broker (h, 0, SIGTERM);   /* even so: the storm is not left to its deadline */
        _exit (reached >= calls + N ? 0 : 2);
    }
    const char *endpoint = harness_broker_frontend (h, 0);
    json_t *replies = itest_storm (&endpoint, 1, (const char *const *) ids, N, N, 10000);
    int status = 0;
    waitpid (killer, &status, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    /* else the broker was stopped with fewer than all requests in flight, and this checks less */
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
        fail_msg ("the %d requests did not all reach the provider before the broker was stopped", N);
    assert_non_null (replies);
    int answered = 0;
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get (replies, i);
        answered += json_is_true (json_object_get (r, "ok"));
    }
    json_decref (replies);
    if (answered != N)
        fail_msg ("%d of the %d requests in flight when the broker was stopped were answered", answered, N);
    assert_int_equal (harness_restart_broker (h, 0), 0);
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);

    /* sent while the broker is held (SIGSTOP), so that they wait unread when the stop comes */
    pid_t around = 0;
    replies = itest_storm_paced (&endpoint, 1, (const char *const *) ids, N, 5, 5000, 0, stop_broker_around,
                                 &around);
    assert_true (around > 0);
    waitpid (around, &status, 0);
    assert_non_null (replies);
    for (size_t i = 0; i < 5; i++) {
        json_t *r = json_array_get (replies, i);
        if (!r || strcmp (itest_code (r), "unavailable") != 0)
            fail_msg ("request %zu, sent before the stop and not read yet: %s", i, r ? itest_code (r) : "no answer");
    }
    json_decref (replies);
    assert_int_equal (harness_restart_broker (h, 0), 0);
    /* ready before the group's teardown stops it: a SIGTERM before its handler is set ends it
     * with status 143, which the teardown counts as a failure (seen once, 2026-12-04) */
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    for (int i = 0; i < N; i++)
        free (ids [i]);
}

/* A second SIGTERM stops the broker at once, but not silently: the requests a worker has not
 * answered yet are answered "timeout" (their outcome is unknown: the worker may carry them out),
 * so their clients retry or give up now instead of waiting for their own deadlines. The broker
 * left without a word, and a client waited its whole deadline (review, 2026-12-06). */
static void
test_broker_stopped_twice_answers_what_is_pending (void **state)
{
    (void) state;
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "stop:twice", "fakebox", rt), 0);
    free (rt);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 8000));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    void *ctx = zmq_ctx_new ();
    void *c = itest_raw_token (h, ctx, "stop:twice", "twice-1", 20000);
    assert_int_equal (itest_wait_stat (h, "fakebox", "refresh_calls", calls + 1, 15000), calls + 1);
    int64_t t0 = clock_mono_ms ();
    harness_signal_broker (h, 0, SIGTERM);
    usleep (100000);
    harness_signal_broker (h, 0, SIGTERM);
    json_t *r = itest_raw_reply (c, 6000);
    int64_t waited = clock_mono_ms () - t0;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);             /* the worker's call need not take its 8 s now */
    if (!r)
        fail_msg ("a request pending at the second SIGTERM had no answer within 6 s (the provider answers after 8 s)");
    assert_string_equal (itest_code (r), "timeout");
    assert_string_equal (json_string_value (json_object_get (r, "rid")), "twice-1");
    json_decref (r);
    assert_true (waited < 6000);
    zmq_close (c);
    zmq_ctx_term (ctx);
    assert_int_equal (harness_restart_broker (h, 0), 0);
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
}

/* A client that connected while the broker was held and sent requests before the stop: its
 * handshake was still to be done, and the stop's last reads must finish it to answer them
 * "unavailable". They served the frontend only, not the ZAP handler a CURVE handshake waits on,
 * and such requests were never answered (CI, 2026-12-05: the held burst above, its connection not
 * up yet on a loaded machine, got no answer at all). */
static void
test_broker_stopped_answers_a_client_still_connecting (void **state)
{
    (void) state;
    harness_signal_broker (h, 0, SIGSTOP);
    void *ctx = zmq_ctx_new ();
    void *c = itest_raw_token (h, ctx, "stop:late", "0", 5000);
    itest_raw_send (c, "stop:late", "1", 5000);
    usleep (200000);
    harness_signal_broker (h, 0, SIGTERM);
    harness_signal_broker (h, 0, SIGCONT);
    for (int i = 0; i < 2; i++) {
        json_t *r = itest_raw_reply (c, 5000);
        if (!r || strcmp (itest_code (r), "unavailable") != 0)
            fail_msg ("request %d of a client still connecting at the stop: %s", i, r ? itest_code (r) : "no answer");
        json_decref (r);
    }
    zmq_close (c);
    zmq_ctx_term (ctx);
    assert_int_equal (harness_restart_broker (h, 0), 0);
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
}

/* One CPU this process may run on (the first of its set: a container's need not hold CPU 0). */
static cpu_set_t
one_cpu (void)
{
    cpu_set_t all, one;
    CPU_ZERO (&one);
    assert_int_equal (sched_getaffinity (0, sizeof all, &all), 0);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET (i, &all)) {
            CPU_SET (i, &one);
            break;
        }
    return one;
}

/* A child that keeps the CPU of set busy until killed, at full priority. */
static pid_t
hog_cpu (const cpu_set_t *set)
{
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        sched_setaffinity (0, sizeof *set, set);
        for (volatile unsigned long n = 0;; n++)
            ;
    }
    return child;
}

/* A broker stopped answers "unavailable" to every request it reads after the stop. It looked at
 * the stop once per pass of its loop, before its poll: a SIGTERM that came between that look and
 * the poll let the poll read requests that came before the stop and forward them to the workers,
 * which answered them as if no stop had come (CI, 2026-12-06: "request 0, sent before the stop and
 * not read yet" answered ok). The window is a few microseconds of the broker's own time; here the
 * broker's loop is starved of CPU (on CPU 0 only, lowest priority, beside a busy child), so that
 * the stop finds it anywhere in its pass, as a loaded machine does now and then, and the requests
 * are sent while it is held (SIGSTOP). */
static void
test_broker_stopped_anywhere_in_its_loop_forwards_nothing_after (void **state)
{
    (void) state;
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "stop:busy", "fakebox", rt), 0);
    free (rt);
    enum { ROUNDS = 3, N = 5 };
    int forwarded = 0, unanswered = 0;
    for (int round = 0; round < ROUNDS; round++) {
        void *ctx = zmq_ctx_new ();
        void *c = itest_raw_token (h, ctx, "stop:busy", "warm", 5000);
        json_t *r = itest_raw_reply (c, 10000);     /* connected, and the token cached */
        assert_non_null (r);
        assert_true (json_is_true (json_object_get (r, "ok")));
        json_decref (r);
        /* the broker's loop (its main thread: the pid) starved; its ZeroMQ I/O thread is not */
        pid_t broker = harness_broker_pid (h, 0);
        cpu_set_t one = one_cpu ();
        assert_int_equal (sched_setaffinity (broker, sizeof one, &one), 0);
        assert_int_equal (setpriority (PRIO_PROCESS, (id_t) broker, 19), 0);
        pid_t hog = hog_cpu (&one);
        usleep (200000 + 37000 * round);
        harness_signal_broker (h, 0, SIGSTOP);
        for (int i = 0; i < N; i++) {
            char rid [16];
            snprintf (rid, sizeof rid, "%d", i);
            itest_raw_send (c, "stop:busy", rid, 5000);
        }
        usleep (200000);
        harness_signal_broker (h, 0, SIGTERM);
        harness_signal_broker (h, 0, SIGCONT);
        usleep (200000);
        kill (hog, SIGKILL);
        waitpid (hog, NULL, 0);
        for (int i = 0; i < N; i++) {
            r = itest_raw_reply (c, 5000);
            if (!r)
                unanswered++;
            else if (strcmp (itest_code (r), "unavailable") != 0)
                forwarded++;
            json_decref (r);
        }
        zmq_close (c);
        zmq_ctx_term (ctx);
        assert_int_equal (harness_restart_broker (h, 0), 0);
        assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    }
    if (forwarded || unanswered)
        fail_msg ("of %d requests sent before a stop (%d rounds), %d were answered other than \"unavailable\" and "
                  "%d not at all", ROUNDS * N, ROUNDS, forwarded, unanswered);
}

/* A client socket to broker 0, its answers taken in without bound (the test reads them later). */
static void *
ping_socket (void *ctx)
{
    void *c = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (c, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (c, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt (c, ZMQ_RCVHWM, &zero, sizeof zero);
    itest_secure (c);
    assert_int_equal (zmq_connect (c, harness_broker_frontend (h, 0)), 0);
    return c;
}

/* A broker stopped says so to a ping from the signal on ("draining": true), as it refuses
 * requests from then on. It answered from the flag its loop sets at its next pass: a ping read in
 * the pass the SIGTERM came in said false, and a gateway took a broker about to go for one it
 * could use (review, 2026-12-07). The broker's loop is kept reading (a burst of pings on another
 * connection) and starved of CPU, as in the test above, so that the SIGTERM comes in the middle of
 * a pass; the pings asked while it is held (SIGSTOP) are read after the signal. */
static void
test_broker_stopped_says_it_drains_to_a_ping (void **state)
{
    (void) state;
    enum { ROUNDS = 3, BURST = 2000, N = 5 };
    int not_draining = 0, unanswered = 0;
    for (int round = 0; round < ROUNDS; round++) {
        assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
        void *ctx = zmq_ctx_new ();
        void *flood = ping_socket (ctx), *c = ping_socket (ctx);
        itest_raw_ping (c, "warm");
        json_t *r = itest_raw_reply (c, 10000);     /* connected */
        assert_non_null (r);
        assert_false (json_is_true (json_object_get (r, "draining")));
        json_decref (r);
        pid_t broker = harness_broker_pid (h, 0);
        cpu_set_t one = one_cpu ();
        assert_int_equal (sched_setaffinity (broker, sizeof one, &one), 0);
        assert_int_equal (setpriority (PRIO_PROCESS, (id_t) broker, 19), 0);
        pid_t hog = hog_cpu (&one);
        for (int i = 0; i < BURST; i++)
            itest_raw_ping (flood, "burst");
        r = itest_raw_reply (flood, 10000);          /* the loop is reading the burst */
        assert_non_null (r);
        json_decref (r);
        usleep (20000 + 7000 * round);
        harness_signal_broker (h, 0, SIGSTOP);
        for (int i = 0; i < N; i++) {
            char rid [16];
            snprintf (rid, sizeof rid, "held-%d", i);
            itest_raw_ping (c, rid);
        }
        usleep (100000);
        harness_signal_broker (h, 0, SIGTERM);
        harness_signal_broker (h, 0, SIGCONT);
        usleep (200000);
        kill (hog, SIGKILL);
        waitpid (hog, NULL, 0);
        for (int i = 0; i < N; i++) {
            r = itest_raw_reply (c, 5000);
            if (!r)
                unanswered++;
            else
            if (!json_is_true (json_object_get (r, "draining")))
                not_draining++;
            json_decref (r);
        }
        zmq_close (flood);
        zmq_close (c);
        zmq_ctx_term (ctx);
        assert_int_equal (harness_restart_broker (h, 0), 0);
    }
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    if (not_draining || unanswered)
        fail_msg ("of %d pings asked before a stop and read after it (%d rounds), %d were answered \"draining\": "
                  "false and %d not at all", ROUNDS * N, ROUNDS, not_draining, unanswered);
}

/* A broker's last answers at a stop get their second to leave, even when more SIGTERMs come
 * meanwhile (a supervisor's, an impatient operator's). The wait for them (zmq_ctx_term) ended at
 * the first signal, interrupted, and the process exited with the answers still queued (review,
 * 2026-12-07). The answers wait because the client reads none until the signals are sent: more
 * than a loopback connection's kernel buffers hold (some 2 MB), so that some wait in ZeroMQ, on a
 * broker of its own whose high-water mark has room for them. */
static void
test_broker_stopped_keeps_its_last_answers_through_more_signals (void **state)
{
    (void) state;
    enum { N = 10000 };
    char rid [65];                                  /* the longest: the fewest answers fill the buffers */
    memset (rid, 'r', 64);
    rid [64] = '\0';
    harness_t *d = harness_new ("stopsignals");
    assert_non_null (d);
    harness_set_env (d, "FERRULE_ZMQ_HWM", "100000");
    assert_true (harness_start_broker (d) >= 0);
    void *ctx = zmq_ctx_new ();
    void *c = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0, one = 1, small = 4096;
    zmq_setsockopt (c, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (c, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt (c, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt (c, ZMQ_RCVBUF, &small, sizeof small);
    itest_secure (c);
    assert_int_equal (zmq_connect (c, harness_broker_frontend (d, 0)), 0);
    itest_raw_ping (c, "warm");
    json_t *r = itest_raw_reply (c, 20000);         /* connected */
    assert_non_null (r);
    json_decref (r);
    harness_signal_broker (d, 0, SIGSTOP);
    for (int i = 0; i < N; i++)
        itest_raw_send (c, "stop:signals", rid, 5000);
    usleep (100000);
    harness_signal_broker (d, 0, SIGTERM);
    harness_signal_broker (d, 0, SIGCONT);
    /* its loop is over: it waits for the answers to leave */
    unsigned long long more;
    int64_t until = clock_mono_ms () + 20000;
    while (itest_log_lines (d, "broker0", "broker stopped", &more) == 0 && clock_mono_ms () < until)
        usleep (10000);
    for (int i = 0; i < 3; i++) {
        usleep (20000);
        harness_signal_broker (d, 0, SIGTERM);
    }
    /* counted, not decoded: only the stop's "unavailable" can answer them (no worker) */
    int answered = 0;
    zmq_pollitem_t item = { c, 0, ZMQ_POLLIN, 0 };
    while (answered < N && zmq_poll (&item, 1, 2000) == 1) {
        zmq_msg_t m;
        for (int more_parts = 1; more_parts; ) {
            zmq_msg_init (&m);
            zmq_msg_recv (&m, c, 0);
            more_parts = zmq_msg_more (&m);
            zmq_msg_close (&m);
        }
        answered++;
    }
    zmq_close (c);
    zmq_ctx_term (ctx);
    /* what the stop's last reads answered within their second (all, but on a loaded machine, and
     * but for the batch the loop itself was reading when the signal came, refused there: 256 at
     * most): every one of those answers must reach the client, with the loop's; before, those past
     * the kernel's buffers (some 5000) went with the process at the first of the signals */
    int stop_answered = 0;
    char log [4096], line [1024];
    snprintf (log, sizeof log, "%s/broker0.log", harness_workdir (d));
    FILE *f = fopen (log, "r");
    while (f && fgets (line, sizeof line, f)) {
        const char *at = strstr (line, "answered ");
        if (at && strstr (at, " requests that came as it stopped"))
            stop_answered = atoi (at + strlen ("answered "));
    }
    if (f)
        fclose (f);
    assert_int_equal (itest_teardown (&d), 0);
    print_message ("answered at the stop: %d of %d; reached the client after three more SIGTERMs: %d\n",
                   stop_answered, N, answered);
    assert_true (stop_answered > 0);
    if (answered < stop_answered)
        fail_msg ("of %d requests answered \"unavailable\" at a stop, %d reached the client after three more "
                  "SIGTERMs", stop_answered, answered);
}

/* The drain tests' start: a broker and worker w1 of a harness named name, with env (pairs of
 * name and value, NULL-ended) set first, and integration id imported at fakebox. */
static harness_t *
drain_start (const char *name, const char *const *env, const char *id)
{
    harness_t *d = harness_new (name);
    assert_non_null (d);
    for (int i = 0; env [i]; i += 2)
        harness_set_env (d, env [i], env [i + 1]);
    assert_true (harness_start_broker (d) >= 0);
    assert_int_equal (harness_start_worker (d, "w1"), 0);
    assert_int_equal (harness_wait_ready (d, 1, 20000), 0);
    char *rt = itest_grant (d, "fakebox", NULL);
    assert_int_equal (itest_import (d, id, "fakebox", rt), 0);
    free (rt);
    return d;
}

/* Another worker's refresh holds id's lease for ms more; its access token has expired. */
static void
lease_held_elsewhere (harness_t *d, const char *id, int ms)
{
    char sql [512];
    itest_expire (d, id);
    snprintf (sql, sizeof sql, "UPDATE integrations SET lease_owner = 'elsewhere',"
              " lease_token = '00000000-0000-0000-0000-00000000e15e',"
              " lease_expires_at = clock_timestamp () + interval '%d milliseconds' WHERE id = '%s'", ms, id);
    assert_int_equal (harness_sql (d, sql), 0);
}

/* A child process asking for id's token (the request waits on the lease), saying how it ended. */
static pid_t
token_asked_in_a_child (harness_t *d, const char *id, const char *timeout_s)
{
    pid_t asker = fork ();
    assert_true (asker >= 0);
    if (asker == 0) {
        int rc;
        json_t *t = harness_ctl (d, &rc, "token", "--integration", id, "--timeout", timeout_s, NULL);
        printf ("the request waiting on the lease during the drain: %s\n", itest_code (t));
        fflush (stdout);
        json_decref (t);
        _exit (0);
    }
    return asker;
}

/* Waits until d's broker holds a request (it went to the worker), then a tenth of a second for
 * the worker to take it. A fixed 300 ms after starting the child was too short once under the
 * sanitizers on a loaded machine: the request reached the broker after the worker had left, and
 * no worker ever had it. */
static void
request_reached_the_worker (harness_t *d)
{
    for (int64_t end = clock_mono_ms () + 20000; clock_mono_ms () < end; usleep (20000)) {
        json_t *r = harness_ctl (d, NULL, "ping", NULL);
        json_int_t pending = json_integer_value (json_object_get (r, "pending"));
        json_decref (r);
        if (pending >= 1) {
            usleep (100 * 1000);
            return;
        }
    }
    fail_msg ("the token request did not reach the broker within 20 s");
}

/* After the drain the chain is whole: w1 started again refreshes id with the token the row
 * holds (what the provider issued last). */
static void
refreshed_after_the_drain (harness_t *d, const char *id)
{
    assert_int_equal (harness_start_worker (d, "w1"), 0);
    assert_int_equal (harness_wait_ready (d, 1, 20000), 0);
    int rc;
    json_t *t = harness_ctl (d, &rc, "refresh", "--integration", id, NULL);
    if (rc != 0)
        fail_msg ("after the drain: %s", itest_code (t));
    json_decref (t);
    assert_int_equal (itest_stat (d, "fakebox", "invalid_grants"), 0);
}

/* A draining worker starts no provider call that could outlast its drain. A request that waited
 * on another worker's lease claimed the integration once that lease ran out, in the middle of the
 * drain, called the provider, and the process exited with the call in flight: the provider had
 * spent the refresh token the row holds, and its answer, the only copy of the new one, was never
 * read (review, 2026-12-06). Now the lease goes back and the client is told to ask again. */
static void
test_a_drain_starts_no_call_it_cannot_finish (void **state)
{
    (void) state;
    const char *const env [] = { "FERRULE_DRAIN_MS", "3000", NULL };
    harness_t *d = drain_start ("drain_call", env, "drain:box");
    /* another worker's refresh holds the lease for a second and a half more */
    lease_held_elsewhere (d, "drain:box", 1500);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 5000));
    long long calls = itest_stat (d, "fakebox", "refresh_calls");
    pid_t asker = token_asked_in_a_child (d, "drain:box", "20");
    request_reached_the_worker (d);          /* the request waits on the lease */
    harness_signal_worker (d, "w1", SIGTERM);
    assert_int_equal (harness_wait_worker_exit (d, "w1", 15000), 0);
    int status = 0;
    waitpid (asker, &status, 0);
    long long during = itest_stat (d, "fakebox", "refresh_calls") - calls;
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    if (during != 0)
        fail_msg ("the draining worker made %lld provider calls after its lease wait", during);
    /* the chain is whole: the next owner refreshes with the token the row holds */
    refreshed_after_the_drain (d, "drain:box");
    assert_int_equal (itest_teardown (&d), 0);
}

/* A drain shorter than the provider timeout does not abandon a call already at the provider: it
 * waits for the answer (each call ends within FERRULE_PROVIDER_TIMEOUT_MS of its start) and its
 * commit. The worker exited when FERRULE_DRAIN_MS was over with the call out; a single-use
 * provider had spent the refresh token the row holds, its answer was never read, and the chain
 * was lost (review, 2026-12-06). */
static void
test_a_short_drain_waits_for_a_call_in_flight (void **state)
{
    (void) state;
    const char *const env [] = { "FERRULE_DRAIN_MS", "1000", NULL };
    harness_t *d = drain_start ("drain_short", env, "short:box");
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    long long calls = itest_stat (d, "fakebox", "refresh_calls");
    pid_t asker = fork ();
    assert_true (asker >= 0);
    if (asker == 0) {
        int rc;
        json_t *t = harness_ctl (d, &rc, "token", "--integration", "short:box", "--timeout", "20", NULL);
        printf ("the request whose refresh was at the provider at the drain: %s\n", rc == 0 ? "ok" : itest_code (t));
        fflush (stdout);
        json_decref (t);
        _exit (rc == 0 ? 0 : 1);
    }
    for (int64_t end = clock_mono_ms () + 20000;
         itest_stat (d, "fakebox", "refresh_calls") == calls && clock_mono_ms () < end;)
        usleep (20000);
    assert_int_equal (itest_stat (d, "fakebox", "refresh_calls"), calls + 1);
    harness_signal_worker (d, "w1", SIGTERM);
    assert_int_equal (harness_wait_worker_exit (d, "w1", 20000), 0);
    int status = 0;
    waitpid (asker, &status, 0);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    /* the answer was read and its rotated token stored before the worker left */
    assert_int_equal (harness_sql_int (d, "SELECT count(*) FROM token_chain WHERE integration_id = 'short:box'"
                                          " AND outcome = 'refreshed'"), 1);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    assert_true (itest_workdir_contains (d, "waiting for them"));
    /* and the chain is whole: the next refresh uses the token the provider issued last */
    refreshed_after_the_drain (d, "short:box");
    assert_int_equal (itest_teardown (&d), 0);
}

/* A drain waits for the commit of every provider answer it lets a call bring. A call started
 * during the drain was allowed when it could end by FERRULE_DRAIN_MS, its commit not counted, and
 * the loop waited past the drain only for what calls out at its start needed: a drain longer than
 * the provider timeout plus the statement timeout exited with such a commit still waiting on a
 * slow database, and the rotated token was left in the journal alone, until that worker's next
 * start (review, 2026-12-06). Here a request waits on another worker's lease that runs out in the
 * middle of the drain, where the answer would come back too near its end to be stored in time,
 * and the database holds the row (a lock) while that answer would commit: every provider call the
 * drain made is committed before the worker is gone. */
static void
test_a_drain_commits_every_answer_it_gets (void **state)
{
    (void) state;
    const char *const env [] = { "FERRULE_HEARTBEAT_MS", "1000", "FERRULE_DRAIN_MS", "10000",
                                 "FERRULE_PROVIDER_TIMEOUT_MS", "3000", "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2500",
                                 "FERRULE_DB_LOCK_TIMEOUT_MS", "2500", NULL };
    harness_t *d = drain_start ("drain_commit", env, "commit:box");
    /* the lease runs out 6 s into the 10 s drain: a call then answers (2.5 s) before the drain's
     * end, but with less than a statement timeout of it left */
    lease_held_elsewhere (d, "commit:box", 6300);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 2500));
    long long calls = itest_stat (d, "fakebox", "refresh_calls");
    pid_t asker = token_asked_in_a_child (d, "commit:box", "30");
    request_reached_the_worker (d);          /* the request waits on the lease */
    harness_signal_worker (d, "w1", SIGTERM);
    /* a call the lease's end lets start: its commit is made to wait on the row */
    for (int64_t end = clock_mono_ms () + 30000; harness_worker_running (d, "w1")
         && itest_stat (d, "fakebox", "refresh_calls") == calls && clock_mono_ms () < end;)
        usleep (20000);
    long long made = itest_stat (d, "fakebox", "refresh_calls") - calls;
    PGconn *lock = NULL;
    if (made) {
        lock = PQconnectdb (harness_database_url (d));
        assert_int_equal (PQstatus (lock), CONNECTION_OK);
        PGresult *res = PQexec (lock, "BEGIN; SELECT 1 FROM integrations WHERE id = 'commit:box' FOR UPDATE");
        assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
        PQclear (res);
    }
    int exited = harness_wait_worker_exit (d, "w1", 30000);
    if (lock) {
        PQclear (PQexec (lock, "ROLLBACK"));
        PQfinish (lock);
    }
    assert_int_equal (exited, 0);
    int status = 0;
    waitpid (asker, &status, 0);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    long long committed = harness_sql_int (d, "SELECT count(*) FROM token_chain WHERE integration_id = 'commit:box'"
                                              " AND outcome = 'refreshed'");
    print_message ("provider calls during the drain: %lld, committed before the worker exited: %lld\n", made,
                   committed);
    if (committed != made)
        fail_msg ("the drain made %lld provider calls and committed %lld of their answers before the worker exited: "
                  "a rotated token was left in the journal alone", made, committed);
    if (!made)
        assert_true (itest_workdir_contains (d, "no refresh started"));
    /* the chain is whole, with no journal to replay: the next owner refreshes with the row's token */
    refreshed_after_the_drain (d, "commit:box");
    assert_false (itest_workdir_contains (d, "journal replay"));
    assert_int_equal (itest_teardown (&d), 0);
}

/* A drain waits for a code exchange already at the provider, and stores its tokens. The drain
 * waited past FERRULE_DRAIN_MS only for refreshes: a callback's exchange counted as busy until
 * then, the loop broke with "drain timed out", and the code the provider had spent brought tokens
 * nobody stored; the user had to connect again (review, 2026-12-06). */
static void
test_a_short_drain_waits_for_a_code_exchange_in_flight (void **state)
{
    (void) state;
    const char *const env [] = { "FERRULE_DRAIN_MS", "1000", NULL };
    harness_t *d = drain_start ("drain_exchange", env, "seed:box");
    int rc;
    json_t *c = harness_ctl (d, &rc, "connect", "--integration", "exch:box", "--provider", "fakebox",
                             "--redirect-uri", "http://127.0.0.1/callback", NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (c);
    assert_non_null (location);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 4000));
    pid_t asker = fork ();
    assert_true (asker >= 0);
    if (asker == 0) {
        int crc = -1;
        json_t *t = harness_ctl (d, &crc, "callback", "--url", location, "--timeout", "30", NULL);
        printf ("the callback whose exchange was at the provider at the drain: %s\n", crc == 0 ? "ok" : itest_code (t));
        fflush (stdout);
        json_decref (t);
        _exit (crc == 0 ? 0 : 1);
    }
    for (int64_t end = clock_mono_ms () + 20000; !itest_exchange_arrived (d, "fakebox") && clock_mono_ms () < end;)
        usleep (20000);
    assert_true (itest_exchange_arrived (d, "fakebox"));
    harness_signal_worker (d, "w1", SIGTERM);
    assert_int_equal (harness_wait_worker_exit (d, "w1", 20000), 0);
    int status = 0;
    waitpid (asker, &status, 0);
    itest_fake_config (d, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    free (location);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    assert_int_equal (harness_sql_int (d, "SELECT count(*) FROM integrations WHERE id = 'exch:box' AND status = 'active'"),
                      1);
    assert_false (itest_workdir_contains (d, "drain timed out"));
    assert_true (itest_workdir_contains (d, "code exchanges have a provider call out"));
    assert_int_equal (itest_teardown (&d), 0);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_readiness_transitions),
        cmocka_unit_test (test_rolling_restart_under_load),
        cmocka_unit_test (test_old_schema_refused),
        cmocka_unit_test (test_broker_stopped_with_requests_in_flight_answers_them),
        cmocka_unit_test (test_broker_stopped_answers_a_client_still_connecting),
        cmocka_unit_test (test_broker_stopped_twice_answers_what_is_pending),
        cmocka_unit_test (test_broker_stopped_anywhere_in_its_loop_forwards_nothing_after),
        cmocka_unit_test (test_broker_stopped_says_it_drains_to_a_ping),
        cmocka_unit_test (test_broker_stopped_keeps_its_last_answers_through_more_signals),
        cmocka_unit_test (test_database_timeouts_checked_at_start),
        cmocka_unit_test (test_webhook_lease_without_room_for_the_claim_refused_at_start),
        cmocka_unit_test (test_webhook_backoff_without_a_wait_refused_at_start),
        cmocka_unit_test (test_refresh_lease_without_room_for_the_claim_refused_at_start),
        cmocka_unit_test (test_refresh_lease_without_room_for_the_commit_refused_at_start),
        cmocka_unit_test (test_refresh_lease_without_room_for_the_wait_for_a_connection_refused_at_start),
        cmocka_unit_test (test_a_drain_starts_no_call_it_cannot_finish),
        cmocka_unit_test (test_a_short_drain_waits_for_a_call_in_flight),
        cmocka_unit_test (test_a_drain_commits_every_answer_it_gets),
        cmocka_unit_test (test_a_short_drain_waits_for_a_code_exchange_in_flight),
    };
    int rc = harness_exit (cmocka_run_group_tests (tests, setup, teardown));
    curl_global_cleanup ();
    return rc;
}
