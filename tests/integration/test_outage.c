/* test_outage.c - PostgreSQL goes away after the provider has rotated the refresh token: the
 * worker keeps the new tokens in its journal, commits them when the database is back (or after
 * its own crash and restart, by replaying the journal), and the chain is never broken. And the
 * database stalls (every PostgreSQL process stopped) while the sweep, the cache's re-validation
 * and the count of values on retired keys have work to do: cached tokens are still served.
 * This test runs its own PostgreSQL cluster, because it stops and starts it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "clock.h"
#include "itest.h"

/* A cached token during a database stall: answered well inside the 1.25 s (statement timeout plus
 * margin) that a statement the loop waited for would hold it up. */
#define STALL_HIT_MS 750

/* The provider's latency for the calls whose answers must come during the stall: the stall begins
 * once the provider has seen every one of them (so each was claimed, or its state taken, with the
 * server up), and lasts 3 s; the calls may reach the provider this far apart. */
#define STALL_PROVIDER_MS 2000

static harness_t *h;
/* the notify test's own sessions, here so that teardown closes them when an assertion ends the
 * test early (LeakSanitizer's report of them would bury the failure in CI's output) */
static PGconn *stall, *listener;
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
    if (itest_pg_own ("outage", pg_dir, sizeof pg_dir) != 0)
        return -1;
    h = harness_new ("outage");
    if (!h)
        return -1;
    /* test_refresh_commit_not_held_up_by_a_stalled_notifying_commit names a synchronous standby
     * that never answers: every session but the one that stalls on it commits locally */
    if (harness_sql (h, "DO $$ BEGIN EXECUTE format ('ALTER DATABASE %I SET synchronous_commit = local',"
                        " current_database ()); END $$") != 0)
        return -1;
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "0");
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    PQfinish (stall);                 /* NULL unless the notify test ended early */
    PQfinish (listener);
    harness_stop_all (h);
    harness_destroy (&h);
    pg ("remove", NULL, 0);
    return 0;
}

static void
set_latency (int ms)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", ms));
}

/* Whether the fake provider has been asked to exchange an authorization code since since_ms
 * (wall clock), refused or not: it records a request before it sleeps its latency. */
static int
code_exchange_asked_since (const char *provider, int64_t since_ms)
{
    char path [128];
    snprintf (path, sizeof path, "/admin/requests?provider=%s&limit=20", provider);
    json_t *reqs = harness_fake (h, "GET", path, NULL);
    json_t *list = json_object_get (reqs, "requests"), *r;
    size_t i;
    int asked = 0;
    json_array_foreach (list, i, r) {
        const char *grant = json_string_value (json_object_get (r, "grant_type"));
        asked |= grant && strcmp (grant, "authorization_code") == 0
                 && json_integer_value (json_object_get (r, "at_ms")) >= since_ms;
    }
    json_decref (reqs);
    return asked;
}

/* Starts a token request in a child process; the provider is slow, and while its answer is on
 * the way the database is stopped. Returns the child. */
static pid_t
token_while_database_stops (const char *id)
{
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    set_latency (2000);
    pid_t child = fork ();
    if (child == 0) {
        int rc;
        json_t *r = harness_ctl (h, &rc, "token", "--integration", id, NULL);
        json_decref (r);
        _exit (rc);
    }
    /* its 2 s at the provider count from the call's arrival: waiting longer for that is safe */
    assert_int_equal (itest_wait_stat (h, "fakebox", "refresh_calls", calls + 1, 20000), calls + 1);
    assert_int_equal (pg ("stop", NULL, 0), 0);
    return child;
}

/* An integration of fakebox, imported and then asked for, so that its token is in the cache. */
static void
import_cached (const char *id)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
    free (rt);
    json_decref (harness_ctl (h, &rc, "token", "--integration", id, NULL));
    assert_int_equal (rc, 0);
}

static void
assert_chain_intact (const char *id, long long generation)
{
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT generation FROM integrations WHERE id = '%s'", id);
    assert_int_equal (harness_sql_int (h, sql), generation);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND generation = %lld"
              " AND outcome = 'refreshed' AND rotated", id, generation);
    assert_int_equal (harness_sql_int (h, sql), 1);
    /* the stored refresh token is the provider's newest: one more refresh works, no reuse. A
     * forced refresh, which claims the stored row whatever the worker's cache holds, so that
     * what is checked is the chain, not how soon the worker hears of an expiry written here
     * (test_listening_connection_made_again_at_once checks that). Asked again only while a
     * connection is not back yet; any other answer is checked as it is. */
    int rc = -1;
    json_t *t = NULL;
    for (int i = 0; i < 50; i++) {
        json_decref (t);
        t = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
        if (strcmp (itest_code (t), "database_unavailable") != 0)
            break;
        usleep (200000);
    }
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (t, "generation")), generation + 1);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
}

/* The pids of the worker's listening connection (application_name "ferrule-worker w1"; the batch
 * connection and the event delivery's have names of their own), as a list for SQL's IN (). */
static void
listening_pids (char *out, size_t len)
{
    PGresult *r = PQexec (harness_db (h), "SELECT coalesce (string_agg (pid::text, ','), '0') FROM pg_stat_activity"
                                          " WHERE application_name = 'ferrule-worker w1' AND datname = current_database ()");
    snprintf (out, len, "%s", PQresultStatus (r) == PGRES_TUPLES_OK ? PQgetvalue (r, 0, 0) : "0");
    PQclear (r);
}

/* The worker's listening connection ends while the server stays up (an operator's
 * pg_terminate_backend, a pooler recycling its connections). Until it is back, changes other
 * processes make go unheard, and cached tokens are served. It is made again at once, and a token
 * written expired after that is refreshed, not served from the cache. The code before waited a
 * second before the new connection, then up to a loop turn (100 ms) for each step of its
 * handshake, the connecting socket not being polled. */
#define LISTENER_BACK_MS 700

static void
test_listening_connection_made_again_at_once (void **state)
{
    int rc;
    import_cached ("listen:box");
    char before [256], sql [512];
    listening_pids (before, sizeof before);
    int64_t t0 = clock_mono_ms ();
    snprintf (sql, sizeof sql, "SELECT count (pg_terminate_backend (pid)) FROM pg_stat_activity WHERE pid IN (%s)", before);
    assert_true (harness_sql_int (h, sql) >= 1);
    snprintf (sql, sizeof sql, "SELECT count (*) FROM pg_stat_activity WHERE application_name = 'ferrule-worker w1'"
              " AND datname = current_database () AND pid NOT IN (%s) AND state IS NOT NULL", before);
    long long back = 0;
    int64_t waited = 0;
    while (!back && (waited = clock_mono_ms () - t0) < 3000) {
        usleep (10000);
        back = harness_sql_int (h, sql);
    }
    printf ("the listening connection was back after %lld ms\n", (long long) waited);
    assert_true (back >= 1);
    assert_true (waited < LISTENER_BACK_MS);
    assert_true (back == 1);             /* only the listening connection was ended */
    itest_expire (h, "listen:box");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "listen:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t, "refreshed")));
    json_decref (t);
    /* the server's reason for ending the session is a line of the worker's JSON log, not libpq's
     * text on stderr ("FATAL:  terminating connection due to administrator command") */
    char path [4096], first [512];
    snprintf (path, sizeof path, "%s/w1.log", harness_workdir (h));
    int bad = itest_log_not_json (path, first, sizeof first);
    if (bad)
        printf ("%d lines of the worker's log are not JSON, the first: %s", bad, first);
    assert_int_equal (bad, 0);
    assert_true (itest_workdir_contains (h, "terminating connection due to administrator command"));
}

static void
test_commit_retried_when_database_returns (void **state)
{
    int rc;
    import_cached ("out1:box");
    import_cached ("cached:box");
    itest_expire (h, "out1:box");

    pid_t child = token_while_database_stops ("out1:box");
    /* while the database is down, a cached token is still served */
    json_t *cached = harness_ctl (h, &rc, "token", "--integration", "cached:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_false (json_object_get (cached, "refreshed")));
    json_decref (cached);
    int status = 0;
    waitpid (child, &status, 0);
    /* the caller was told the truth: transient, database unavailable */
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 5);
    set_latency (0);
    assert_int_equal (pg ("start", NULL, 0), 0);
    /* the worker retries its commit on its own */
    char sql [] = "SELECT generation FROM integrations WHERE id = 'out1:box'";
    long long g = -1;
    for (int i = 0; i < 100 && g != 3; i++) {
        usleep (100000);
        g = harness_sql_int (h, sql);
    }
    /* the worker committed again, so it hears of changes again: its listening connection is back
     * no later than the one that committed, and a token another process writes expired now is
     * refreshed, not served from the cache (the two connections' retries were up to a second
     * apart, and for that second the worker served what it had cached before the outage) */
    assert_int_equal (g, 3);
    itest_expire (h, "cached:box");
    cached = harness_ctl (h, &rc, "token", "--integration", "cached:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (cached, "refreshed")));
    json_decref (cached);
    assert_chain_intact ("out1:box", 3);
}

/* A refresh whose tokens wait for the database keeps the requests that come for them meanwhile
 * until its next commit attempt, which answers them. While no connection is up there is no
 * attempt: they are told at once that the database is unavailable. The code before kept them
 * until the database came back, or until the broker's deadline answered them "timeout". */
static void
test_requests_for_uncommitted_tokens_answered_during_outage (void **state)
{
    int rc;
    import_cached ("out3:box");
    itest_expire (h, "out3:box");
    pid_t child = token_while_database_stops ("out3:box");
    int status = 0;
    waitpid (child, &status, 0);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 5);
    for (int i = 0; i < 3; i++) {
        int64_t t0 = clock_mono_ms ();
        json_t *r = harness_ctl (h, &rc, "token", "--integration", "out3:box", "--timeout", "4", NULL);
        int64_t took = clock_mono_ms () - t0;
        printf ("asked again during the outage: %s after %lld ms\n", itest_code (r), (long long) took);
        /* told by the refresh whose commit waits (not by the broker's deadline, "timeout", as the
         * code before, which kept them until the database came back), and not by another path */
        assert_string_equal (itest_code (r), "database_unavailable");
        const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        if (!message || !strstr (message, "the provider answered but the database did not"))
            fail_msg ("asked again during the outage: \"%s\"", message ? message : "");
        json_decref (r);
    }
    set_latency (0);
    assert_int_equal (pg ("start", NULL, 0), 0);
    char sql [] = "SELECT generation FROM integrations WHERE id = 'out3:box'";
    long long g = -1;
    for (int i = 0; i < 100 && g != 3; i++) {
        usleep (100000);
        g = harness_sql_int (h, sql);
    }
    assert_int_equal (g, 3);
    assert_chain_intact ("out3:box", 3);
}

static void
test_journal_replayed_after_crash (void **state)
{
    import_cached ("out2:box");
    itest_expire (h, "out2:box");

    pid_t child = token_while_database_stops ("out2:box");
    int status = 0;
    waitpid (child, &status, 0);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 5);
    /* the worker dies with the rotated token only in its journal */
    harness_signal_worker (h, "w1", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "w1", 5000) >= 0);
    set_latency (0);
    assert_int_equal (pg ("start", NULL, 0), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    /* start-up replays the journal before serving */
    char sql [] = "SELECT generation FROM integrations WHERE id = 'out2:box'";
    long long g = -1;
    for (int i = 0; i < 100 && g != 3; i++) {
        usleep (100000);
        g = harness_sql_int (h, sql);
    }
    assert_chain_intact ("out2:box", 3);
}

/* Waits until the integration has a committed refresh in its chain. */
static void
wait_refreshed (const char *id)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'refreshed'",
              id);
    long long c = 0;
    for (int i = 0; i < 150 && c < 1; i++) {
        c = harness_sql_int (h, sql);
        if (c < 1)
            usleep (100000);
    }
    assert_true (c >= 1);
}

/* Waits up to 20 s for a count to reach want (what the worker does once the server is back, on a
 * loaded machine); returns the last count. */
static long long
wait_count (const char *sql, long long want)
{
    long long c = harness_sql_int (h, sql);
    for (int64_t until = clock_mono_ms () + 20000; c < want && clock_mono_ms () < until;) {
        usleep (100000);
        c = harness_sql_int (h, sql);
    }
    return c;
}

/* A refresh the provider refuses (503) while the database is stopped: the record of the failure
 * cannot be written, and is written once the server is back. Its log line says that the retry
 * waits for the database; the code before said "(tried again in 250 ms)", and then nothing
 * happened until the server came back. */
static void
test_failure_record_waits_for_the_database (void **state)
{
    int status = 0;
    import_cached ("out4:box");
    itest_expire (h, "out4:box");
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    pid_t child = token_while_database_stops ("out4:box");
    waitpid (child, &status, 0);
    /* told of the provider's failure (transient: exit 5) while the record waits */
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 5);
    unsigned long long more = 0;
    int said = 0;
    for (int i = 0; i < 100 && !said; i++) {
        said = itest_log_lines (h, "w1", "could not record the failed refresh (tried again once the database is "
                                "back): ", &more);
        if (!said)
            usleep (50000);
    }
    assert_true (said >= 1);
    set_latency (0);
    assert_int_equal (pg ("start", NULL, 0), 0);
    assert_int_equal (wait_count ("SELECT count(*) FROM token_chain WHERE integration_id = 'out4:box'"
                                  " AND outcome = 'transient'", 1), 1);
}

/* A disconnect whose revocation call is at the provider (a slow answer) when the database stops.
 * The disconnect is done: its statement committed before the call. Its answer says so, with the
 * revocation's outcome, when the provider answers; the revocation's history row is written once
 * the server is back. The code before held the answer for that row, which waits for the
 * database: the caller got the broker's timeout, and never heard how the revocation went. */
static void
test_disconnect_answered_while_the_database_is_away (void **state)
{
    import_cached ("out5:box");
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i, s:i}", "provider", "fakebox", "kind", "slow", "endpoint", "revoke",
                           "count", 1, "delay_ms", 2000);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    pid_t child = fork ();
    if (child == 0) {
        int rc;
        json_t *r = harness_ctl (h, &rc, "disconnect", "--integration", "out5:box", "--timeout", "6", NULL);
        const char *status = json_string_value (json_object_get (json_object_get (r, "integration"), "status"));
        int ok = rc == 0 && status && strcmp (status, "disconnected") == 0
                 && json_array_size (json_object_get (r, "warnings")) == 0;     /* revoked */
        if (!ok)
            fprintf (stderr, "the disconnect's answer: exit %d, %s\n", rc, itest_code (r));
        json_decref (r);
        _exit (ok ? 0 : 10);
    }
    /* the statement has committed (the call goes out as its answer is read): stop the server */
    assert_int_equal (wait_count ("SELECT count(*) FROM integrations WHERE id = 'out5:box' AND status = 'disconnected'",
                                  1), 1);
    assert_int_equal (pg ("stop", NULL, 0), 0);
    int status = 0;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);
    assert_int_equal (pg ("start", NULL, 0), 0);
    assert_int_equal (wait_count ("SELECT count(*) FROM token_chain WHERE integration_id = 'out5:box'"
                                  " AND outcome = 'revoked'", 1), 1);
}

/* A callback whose code the provider refuses (slowly) while the database stops. The refusal is
 * the answer: the caller is told the code is spent, at once; the attempt's record (the pending
 * row's outcome, the history) is written once the server is back. The code before held the answer
 * for that record, which waits for the database: the caller got the broker's timeout instead of
 * what to do. */
static void
test_callback_failure_answered_while_the_database_is_away (void **state)
{
    int rc;
    json_t *started = harness_ctl (h, &rc, "connect", "--integration", "out6:box", "--provider", "fakebox",
                                   "--redirect-uri", "http://127.0.0.1:9/callback", NULL);
    assert_int_equal (rc, 0);
    char url [512];
    snprintf (url, sizeof url, "http://127.0.0.1:9/callback?code=forged&state=%s",
              json_string_value (json_object_get (started, "state")));
    json_decref (started);
    set_latency (2000);
    int64_t forked_ms = clock_wall_ms ();
    pid_t child = fork ();
    if (child == 0) {
        json_t *r = harness_ctl (h, &rc, "callback", "--url", url, "--timeout", "6", NULL);
        int ok = rc == 4 && strcmp (itest_code (r), "code_expired_or_used") == 0;
        if (!ok)
            fprintf (stderr, "the callback's answer: exit %d, %s\n", rc, itest_code (r));
        json_decref (r);
        _exit (ok ? 0 : 10);
    }
    /* the code is at the provider (its state taken, with the server up): stop the server */
    for (int i = 0; i < 500 && !code_exchange_asked_since ("fakebox", forked_ms); i++)
        usleep (10000);
    assert_true (code_exchange_asked_since ("fakebox", forked_ms));
    assert_int_equal (pg ("stop", NULL, 0), 0);
    int status = 0;
    assert_int_equal (waitpid (child, &status, 0), child);
    set_latency (0);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);
    /* and the log says when the record is tried again */
    itest_wait_log (h, "could not record the failed connect (tried again once the database is back)", 10000);
    assert_int_equal (pg ("start", NULL, 0), 0);
    assert_int_equal (wait_count ("SELECT count(*) FROM pending_authorizations WHERE integration_id = 'out6:box'"
                                  " AND outcome = 'code_expired_or_used'", 1), 1);
}

/* The machine under PostgreSQL freezes for 3 s. Cached tokens are served all along, each within
 * its one-second deadline: the sweep's pass (every 100 ms here), the cache's re-validation and
 * the count of values on retired keys (every second) go to the database as batches the loop does
 * not wait for. The sweep and the re-validation each used to run their query in the loop, which
 * then waited the whole statement deadline (1.25 s) with every request behind it: this test
 * failed on that code, one request late each time. (The count, in the loop too before, skipped
 * its turn here, the connections being busy or gone: it did not fail the test.) */
static void
test_cache_hits_served_while_the_database_stalls (void **state)
{
    int rc;
    /* a sweep pass every 100 ms, the cache re-validated and the values on retired keys counted
     * every second, so that all three fall in the stall (the tests before want none; the one after
     * sets them back) */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, "FERRULE_SWEEP_MS", "100");
    harness_set_env (h, "FERRULE_CACHE_REVALIDATE_MS", "100");
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "1000");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "stall:box", "fakebox", rt), 0);
    free (rt);
    json_decref (harness_ctl (h, &rc, "token", "--integration", "stall:box", NULL));
    assert_int_equal (rc, 0);
    /* and a refresh whose provider answers during the stall: its commit meets the frozen server */
    rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "stall2:box", "fakebox", rt), 0);
    free (rt);
    char *rt4 = itest_grant (h, "fakebox", NULL);    /* imported again and again during the stall */
    /* a connect started before the stall, whose callback comes during it */
    json_t *started = harness_ctl (h, &rc, "connect", "--integration", "stall6:box", "--provider", "fakebox",
                                   "--redirect-uri", "http://127.0.0.1:9/callback", NULL);
    assert_int_equal (rc, 0);
    char callback_url [512];
    snprintf (callback_url, sizeof callback_url, "http://127.0.0.1:9/callback?code=spent&state=%s",
              json_string_value (json_object_get (started, "state")));
    json_decref (started);
    /* an integration disconnected during the stall, again and again */
    char *rt7 = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "stall7:box", "fakebox", rt7), 0);
    free (rt7);
    /* and a connect whose callback fails during it: its state is taken now, the provider refuses
     * the code STALL_PROVIDER_MS later, with the server frozen, and the failure is recorded then */
    started = harness_ctl (h, &rc, "connect", "--integration", "stall8:box", "--provider", "fakebox",
                           "--redirect-uri", "http://127.0.0.1:9/callback", NULL);
    assert_int_equal (rc, 0);
    char failing_url [512];
    snprintf (failing_url, sizeof failing_url, "http://127.0.0.1:9/callback?code=forged&state=%s",
              json_string_value (json_object_get (started, "state")));
    json_decref (started);
    /* and a refresh the provider refuses (503) during it: the failure's record meets the frozen
     * server */
    char *rt9 = itest_grant (h, "fakegoogle", NULL);
    /* with an access token good for an hour: not due, so the sweep (every 100 ms here) never
     * refreshes it meanwhile, and the forced refresh below is the one call that meets the 503
     * (without one, the sweep's refresh of it could take the fault, or take the forced refresh in) */
    json_t *imported = harness_ctl (h, &rc, "import", "--integration", "stall9:g", "--provider", "fakegoogle",
                                    "--refresh-token", rt9, "--access-token", "fake-at-stall9", "--expires-in", "3600",
                                    NULL);
    json_decref (imported);
    free (rt9);
    assert_int_equal (rc, 0);
    /* and a forced refresh asked during it with a deadline shorter than the stall: its claim meets
     * the frozen server (the access token good for an hour and cached, so that neither the sweep
     * nor a read of the row comes first) */
    char *rt10 = itest_grant (h, "fakebox", NULL);
    imported = harness_ctl (h, &rc, "import", "--integration", "stall10:box", "--provider", "fakebox",
                            "--refresh-token", rt10, "--access-token", "fake-at-stall10", "--expires-in", "3600", NULL);
    json_decref (imported);
    free (rt10);
    assert_int_equal (rc, 0);
    json_decref (harness_ctl (h, &rc, "token", "--integration", "stall10:box", NULL));
    assert_int_equal (rc, 0);
    /* a client of this process asks for the cached token all through the stall, connected before
     * it, so that what is timed is the service's answer, not a command's start on a machine the
     * other askers keep busy (ferrulectl under ASan takes a tenth of a second of CPU to start) */
    client_t *asker = itest_client_connected (harness_brokers (h));
    itest_fake_config (h, "fakegoogle", json_pack ("{s:i}", "latency_ms", STALL_PROVIDER_MS));
    itest_fault (h, "fakegoogle", "status", 1, 503, -1, -1);
    int64_t forked_ms = clock_wall_ms ();
    pid_t failing = fork ();
    if (failing == 0) {
        json_t *r = harness_ctl (h, &rc, "callback", "--url", failing_url, "--timeout", "6", NULL);
        json_decref (r);
        _exit (0);
    }
    set_latency (STALL_PROVIDER_MS);     /* its answer comes during the stall */
    pid_t child = fork ();
    if (child == 0) {
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "stall2:box", NULL);
        json_decref (r);
        _exit (rc);
    }
    pid_t refused = fork ();
    if (refused == 0) {
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "stall9:g", "--timeout", "6", NULL);
        json_decref (r);
        _exit (0);
    }
    /* the three are under way, with the server up: both refreshes claimed (their leases are
     * committed before their provider calls go out) and the code sent to the provider (its
     * state taken before). A fixed pause here was too short on a busy machine: a claim met the
     * frozen server, and nothing was left to answer during the stall. (The sweep refreshes other
     * integrations of the same providers meanwhile, so the providers' counts cannot tell.) */
    static const char claimed [] = "SELECT count(*) FROM integrations WHERE id IN ('stall2:box', 'stall9:g')"
                                   " AND lease_owner IS NOT NULL";
    for (int i = 0; i < 500 && (harness_sql_int (h, claimed) < 2
                                || !code_exchange_asked_since ("fakebox", forked_ms)); i++)
        usleep (10000);
    assert_int_equal (harness_sql_int (h, claimed), 2);
    assert_true (code_exchange_asked_since ("fakebox", forked_ms));
    pid_t pids [64];
    int n = itest_pg_processes (h, pids, 64);
    assert_true (n >= 2);
    for (int i = 0; i < n; i++)
        kill (pids [i], SIGSTOP);
    int64_t until = clock_mono_ms () + 3000;
    /* and requests the cache cannot answer all along (an id it never holds): each one's read of
     * the row meets the frozen server, and must hold up nobody else */
    pid_t misses = fork ();
    if (misses == 0) {
        while (clock_mono_ms () < until) {
            json_t *r = harness_ctl (h, &rc, "token", "--integration", "stall:nobody", "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* the forced refresh is answered by its worker before its deadline, saying what it waited for:
     * the broker's answer at the deadline said only that the worker had not answered */
    pid_t late = fork ();
    if (late == 0) {
        /* its second whole (well inside the 1.25 s a statement may take before the worker drops
         * its connection, after which the claim fails database_unavailable) */
        json_t *r = itest_call_once (harness_brokers (h), "refresh", "stall10:box", 1000);
        const char *m = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        int told = r && strcmp (itest_code (r), "timeout") == 0 && m && strstr (m, "the database has not answered");
        if (!told)
            fprintf (stderr, "a forced refresh during the stall was answered: %s %s\n", r ? itest_code (r) : "nothing",
                     m ? m : "");
        json_decref (r);
        _exit (told ? 0 : 1);
    }
    /* and an operator asking for an integration's status and its chain all along: read from the
     * database, not the cache, and no more allowed to hold up the cached tokens */
    pid_t statuses = fork ();
    if (statuses == 0) {
        for (int k = 0; clock_mono_ms () < until; k++) {
            json_t *r = harness_ctl (h, &rc, k % 2 ? "status" : "history", "--integration", "stall2:box",
                                     "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* and imports: a write, which waits for a free connection rather than holding the loop */
    pid_t imports = fork ();
    if (imports == 0) {
        while (clock_mono_ms () < until)
            itest_import (h, "stall4:box", "fakebox", rt4);
        _exit (0);
    }
    /* and connects: the pending authorization is written without the loop waiting either */
    pid_t connects = fork ();
    if (connects == 0) {
        while (clock_mono_ms () < until) {
            json_t *r = harness_ctl (h, &rc, "connect", "--integration", "stall5:box", "--provider", "fakebox",
                                     "--redirect-uri", "http://127.0.0.1:9/callback", "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* and that callback: taking its state waits for the database, not the loop */
    pid_t callbacks = fork ();
    if (callbacks == 0) {
        while (clock_mono_ms () < until) {
            json_t *r = harness_ctl (h, &rc, "callback", "--url", callback_url, "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* and scope reports from a tool whose upstream API said insufficient_scope */
    pid_t reports = fork ();
    if (reports == 0) {
        while (clock_mono_ms () < until) {
            json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "stall:box", "--scope", "read",
                                     "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* and an operator listing events and replaying an integration's failed deliveries, and the
     * gateway's operations: a dashboard link issued, a workspace listed, an API key checked */
    pid_t admin = fork ();
    if (admin == 0) {
        client_t *gc = client_new (harness_brokers (h));
        for (int k = 0; clock_mono_ms () < until; k++) {
            json_t *r = NULL, *args = NULL;
            switch (k % 5) {
            case 0: r = harness_ctl (h, &rc, "events", "--timeout", "2", NULL); break;
            case 1: r = harness_ctl (h, &rc, "events", "replay", "--integration", "stall:box", "--timeout", "2", NULL);
                    break;
            case 2: r = harness_ctl (h, &rc, "dashboard-link", "--workspace", "stall:", "--timeout", "2", NULL); break;
            case 3: args = json_pack ("{s:s}", "integration", "stall:");
                    r = client_call (gc, "workspace", args, 2000);
                    break;
            default: args = json_pack ("{s:s}", "key", "frk_x");
                    r = client_call (gc, "apikey_verify", args, 2000);
                    break;
            }
            json_decref (args);
            json_decref (r);
        }
        client_destroy (&gc);
        _exit (0);
    }
    /* and an operator asking the doctor about one integration, and disconnecting another */
    pid_t doctors = fork ();
    if (doctors == 0) {
        for (int k = 0; clock_mono_ms () < until; k++) {
            json_t *r = harness_ctl (h, &rc, k % 2 ? "doctor" : "disconnect", "--integration",
                                     k % 2 ? "stall2:box" : "stall7:box", "--timeout", "2", NULL);
            json_decref (r);
        }
        _exit (0);
    }
    /* in time: well inside the 1.25 s a statement may take before the worker gives up on it */
    itest_hits_t hits = itest_cached_hits (asker, "stall:box", until, STALL_HIT_MS);
    client_destroy (&asker);
    for (int i = 0; i < n; i++)
        kill (pids [i], SIGCONT);
    int status = 0;
    assert_int_equal (waitpid (misses, &status, 0), misses);
    assert_int_equal (waitpid (statuses, &status, 0), statuses);
    assert_int_equal (waitpid (imports, &status, 0), imports);
    assert_int_equal (waitpid (connects, &status, 0), connects);
    assert_int_equal (waitpid (callbacks, &status, 0), callbacks);
    assert_int_equal (waitpid (reports, &status, 0), reports);
    assert_int_equal (waitpid (admin, &status, 0), admin);
    assert_int_equal (waitpid (doctors, &status, 0), doctors);
    assert_int_equal (waitpid (failing, &status, 0), failing);
    assert_int_equal (waitpid (refused, &status, 0), refused);
    assert_int_equal (waitpid (late, &status, 0), late);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:i}", "latency_ms", 0));
    free (rt4);
    fprintf (stderr, "during the stall: %d cached tokens served in time, %d not (slowest %lld ms)\n", hits.served,
             hits.late, (long long) hits.slowest_ms);
    assert_int_equal (hits.late, 0);
    assert_true (hits.served > 0);
    set_latency (0);
    assert_int_equal (waitpid (child, &status, 0), child);
    /* the rotated token the provider issued during the stall is committed once the server is back */
    wait_refreshed ("stall2:box");
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    /* the failed callback and the refused refresh are recorded, tried again once the server is back */
    assert_int_equal (wait_count ("SELECT count(*) FROM pending_authorizations WHERE integration_id ="
                                  " 'stall8:box' AND outcome IS NOT NULL", 1), 1);
    assert_int_equal (wait_count ("SELECT count(*) FROM token_chain WHERE integration_id = 'stall9:g'"
                                  " AND outcome = 'transient'", 1), 1);
    /* and the worker is back on the database afterwards, on both connections: a forced refresh
     * (a batch) and the chain's history (a statement of the main connection) go through */
    int refreshed = 0, history = 0, disconnected = 0;
    for (int i = 0; i < 100 && !(refreshed && history && disconnected); i++) {
        if (!refreshed) {
            json_decref (harness_ctl (h, &rc, "refresh", "--integration", "stall:box", NULL));
            refreshed = rc == 0;
        }
        if (!history) {
            json_decref (harness_ctl (h, &rc, "history", "--integration", "stall:box", NULL));
            history = rc == 0;
        }
        if (!disconnected) {
            json_decref (harness_ctl (h, &rc, "disconnect", "--integration", "stall7:box", NULL));
            disconnected = rc == 0;
        }
        if (!(refreshed && history && disconnected))
            usleep (200000);
    }
    assert_true (refreshed && history && disconnected);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'stall7:box'"
                                          " AND status = 'disconnected' AND refresh_token IS NULL"), 1);
}

/* libpq's notices, unprinted. */
static void
quiet (void *arg, const char *message)
{
    (void) arg;
    (void) message;
}

/* Whether conn, listening, hears a notification with this payload within 2 s. */
static int
heard_on (PGconn *conn, const char *payload)
{
    int heard = 0;
    for (int i = 0; i < 200 && !heard; i++) {
        assert_int_equal (PQconsumeInput (conn), 1);
        PGnotify *n;
        while ((n = PQnotifies (conn))) {
            heard = heard || strcmp (n->extra, payload) == 0;
            PQfreemem (n);
        }
        if (!heard)
            usleep (10000);
    }
    return heard;
}

/* A session that notifies and then stalls in its commit. PostgreSQL serializes the transactions
 * that notify with one lock, which each takes in its commit and holds until the commit is flushed
 * and, with a synchronous standby, acknowledged. Here the stall is a synchronous standby that never
 * answers (the same wait, only longer, as a slow WAL disk or a distant standby): every session of
 * the test's database commits without waiting for it (synchronous_commit = local, set in setup),
 * but the stalling one asks for it. The refresh commits used to notify in their own transaction,
 * so each waited for that lock past lock_timeout and failed: the caller was told
 * database_unavailable and the tokens waited in the journal until the other commit ended. Now the
 * notifications follow the commit in a transaction of their own, the commit does not wait, and the
 * caller gets the new token while the other commit is still stalled, and while the notifications'
 * own transaction still waits for the lock: the batch's results are delivered at its COMMIT
 * (before, they came with the pipeline's end, after that wait, up to lock_timeout). The worker
 * runs here with a lock_timeout of 2.5 s, so that the order shows on a slow machine too.
 * (Without a stall the same lock made every worker's commit batch wait for the flush of the
 * notifying commit before it: docs/performance.md.) */
static void
test_refresh_commit_not_held_up_by_a_stalled_notifying_commit (void **state)
{
    int rc;
    long long reuses = itest_stat (h, "fakebox", "reuse_detections");
    long long invalid = itest_stat (h, "fakebox", "invalid_grants");
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    /* no sweep here (the harness's hour, which the test before shortened to 100 ms): a sweep's
     * refresh of an integration imported below took the invalid_grant meant for notify-fails:box
     * once, when the stall held its claim back past the moment the fault was set */
    harness_set_env (h, "FERRULE_SWEEP_MS", "3600000");
    harness_set_env (h, "FERRULE_CACHE_REVALIDATE_MS", "30000");
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "60000");
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2700");     /* the most a heartbeat of 1 s allows */
    harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", "2500");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    import_cached ("notify:box");
    import_cached ("notify-fails:box");
    assert_int_equal (harness_sql (h, "SET synchronous_commit = local"), 0);        /* this session too */
    assert_int_equal (harness_sql (h, "ALTER SYSTEM SET synchronous_standby_names = 'ferrule_absent_standby'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT pg_reload_conf ()::int"), 1);
    stall = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (stall), CONNECTION_OK);
    PQsetNoticeProcessor (stall, quiet, NULL);          /* the cancelled wait's warning */
    PGresult *r = NULL;
    for (int i = 0; i < 100; i++) {          /* the reload reaches the server's processes soon after */
        PQclear (r);
        r = PQexec (stall, "SHOW synchronous_standby_names");
        if (PQresultStatus (r) == PGRES_TUPLES_OK && strcmp (PQgetvalue (r, 0, 0), "ferrule_absent_standby") == 0)
            break;
        usleep (20000);
    }
    assert_string_equal (PQgetvalue (r, 0, 0), "ferrule_absent_standby");
    PQclear (r);
    char stalled [512], sql [512];
    snprintf (stalled, sizeof stalled, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event = 'SyncRep'",
              PQbackendPID (stall));
    /* a commit waits for a standby only when its transaction wrote something before it */
    assert_int_equal (PQsendQuery (stall, "CREATE TABLE stall_scratch (x int); SET synchronous_commit = on; BEGIN;"
                                          " INSERT INTO stall_scratch VALUES (1);"
                                          " SELECT pg_notify ('ferrule_integrations', 'elsewhere nobody'); COMMIT"), 1);
    assert_int_equal (itest_wait_sql (h, stalled, 1, 10000), 1);
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "notify:box", NULL);
    printf ("a refresh while another notifying commit stalls: %s\n", rc == 0 ? "ok" : itest_code (t));
    assert_int_equal (rc, 0);
    long long g = json_integer_value (json_object_get (t, "generation"));
    json_decref (t);
    /* answered while the worker's notifications still wait for the lock, not after they gave up */
    long long waiting = harness_sql_int (h, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
                                            " 'ferrule-worker%' AND wait_event_type = 'Lock'");
    printf ("worker sessions waiting for a lock when the answer came: %lld\n", waiting);
    assert_int_equal (waiting, 1);
    assert_false (itest_workdir_contains (h, "a batch committed, but the statement after it failed"));
    /* that session lost now, in the notifications' transaction: the batch was answered and stands,
     * the loss is logged as the notifications', and the connection is made again */
    assert_int_equal (harness_sql_int (h, "SELECT count(pg_terminate_backend (pid)) FROM pg_stat_activity"
                                          " WHERE application_name LIKE 'ferrule-worker%' AND wait_event_type = 'Lock'"
                                          " AND datname = current_database ()"),
                      1);
    /* libpq says either that the connection was lost or what the server said as it ended it
     * (FATAL: terminating connection due to administrator command), whichever it reads first */
    itest_wait_log (h, "a batch committed, but the statement after it failed", 10000);
    /* committed, while the other commit is still stalled */
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = 'notify:box'"
              " AND generation = %lld AND outcome = 'refreshed'", g);
    assert_int_equal (harness_sql_int (h, sql), 1);
    assert_int_equal (harness_sql_int (h, stalled), 1);
    /* a recorded failure notifies after its commit too: its record is in while the stall lasts (it
     * used to notify in its own transaction, wait for the lock and fail on lock_timeout, again on
     * each retry). A transient one here; a change of status below. */
    itest_fault (h, "fakebox", "status", 1, 500, -1, -1);
    json_decref (harness_ctl (h, &rc, "refresh", "--integration", "notify-fails:box", NULL));
    long long recorded = harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'notify-fails:box'"
                                             " AND outcome = 'transient'");
    printf ("a transient failure's record while another notifying commit stalls: %s\n", recorded == 1 ? "in" : "not in");
    assert_int_equal (recorded, 1);
    assert_int_equal (harness_sql_int (h, stalled), 1);
    /* its notifications waited for the lock past lock_timeout: logged, and what it committed stands
     * (the lost connection above logged the same words with another cause: this waits for its own) */
    itest_wait_log (h, "the statement after it failed: ERROR:  canceling statement due to lock timeout", 15000);
    /* the changes that write an event commit during the stall too: the outbox's trigger used to
     * notify the delivery threads inside their transaction (migration 006), so each waited for the
     * lock and failed on lock_timeout; the wake-up now follows the commit (migration 015). An
     * import (a "connected" event), a scope report ("insufficient_scope") and an invalid_grant
     * that makes the integration needs_reconnect (a change of status) */
    char *rt_new = itest_grant (h, "fakebox", NULL);
    int imported = itest_import (h, "notify-new:box", "fakebox", rt_new);
    printf ("an import while another notifying commit stalls: %s\n", imported == 0 ? "in" : "not in");
    assert_int_equal (imported, 0);
    free (rt_new);
    t = harness_ctl (h, &rc, "token", "--integration", "notify-new:box", NULL);      /* its first refresh */
    printf ("a first token while another notifying commit stalls: %s\n", rc == 0 ? "ok" : itest_code (t));
    assert_int_equal (rc, 0);
    json_decref (t);
    t = harness_ctl (h, &rc, "report-scope", "--integration", "notify-new:box", "--scope", "files.write", NULL);
    printf ("a scope report while another notifying commit stalls: %s\n", rc == 0 ? "in" : itest_code (t));
    assert_int_equal (rc, 0);
    json_decref (t);
    /* answered once its record is in: the status is read at once */
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    t = harness_ctl (h, &rc, "refresh", "--integration", "notify-fails:box", NULL);
    printf ("the refresh answered invalid_grant: %s\n", rc == 0 ? "ok" : itest_code (t));
    assert_string_equal (itest_code (t), "needs_reconnect");
    json_decref (t);
    recorded = harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'notify-fails:box'"
                                   " AND status = 'needs_reconnect'");
    printf ("an invalid_grant's change of status while another notifying commit stalls: %s\n",
            recorded == 1 ? "in" : "not in");
    assert_int_equal (recorded, 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE (integration_id, type) IN"
                                          " (('notify-new:box', 'connected'), ('notify-new:box', 'insufficient_scope'),"
                                          "  ('notify-fails:box', 'needs_reconnect'))"), 3);
    assert_int_equal (harness_sql_int (h, stalled), 1);
    /* the stall ends (its commit was made locally; only the wait for the standby is cancelled) */
    snprintf (sql, sizeof sql, "SELECT pg_cancel_backend (%d)::int", PQbackendPID (stall));
    assert_int_equal (harness_sql_int (h, sql), 1);
    while ((r = PQgetResult (stall)))
        PQclear (r);
    PQfinish (stall);
    stall = NULL;
    assert_int_equal (harness_sql (h, "ALTER SYSTEM RESET synchronous_standby_names"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT pg_reload_conf ()::int"), 1);
    /* the commits still notify: a listener hears this worker's next one; and an event still wakes
     * the delivery threads, after its commit: a listener of their channel hears an import's */
    listener = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (listener), CONNECTION_OK);
    PQclear (PQexec (listener, "LISTEN ferrule_integrations"));
    t = harness_ctl (h, &rc, "refresh", "--integration", "notify:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    assert_true (heard_on (listener, "w1 notify:box"));
    PQclear (PQexec (listener, "UNLISTEN *; LISTEN ferrule_events"));
    char *rt_again = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "notify-new:box", "fakebox", rt_again), 0);
    free (rt_again);
    assert_true (heard_on (listener, ""));
    PQfinish (listener);
    listener = NULL;
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), reuses);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), invalid);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_listening_connection_made_again_at_once),
        cmocka_unit_test (test_commit_retried_when_database_returns),
        cmocka_unit_test (test_requests_for_uncommitted_tokens_answered_during_outage),
        cmocka_unit_test (test_journal_replayed_after_crash),
        cmocka_unit_test (test_failure_record_waits_for_the_database),
        cmocka_unit_test (test_disconnect_answered_while_the_database_is_away),
        cmocka_unit_test (test_callback_failure_answered_while_the_database_is_away),
        cmocka_unit_test (test_cache_hits_served_while_the_database_stalls),
        cmocka_unit_test (test_refresh_commit_not_held_up_by_a_stalled_notifying_commit),  /* last: it sets a standby */
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
