/* test_chain_safety.c - the review's findings on the token chain, each driven the way it was
 * found, against the real processes and PostgreSQL:
 *   - a commit that meets a read-only database is retried until it lands (never dropped);
 *   - a read-only or refused server is said once in ten seconds, not at every attempt;
 *   - a rotated commit a failover lost is written again from the worker's memory; a journal
 *     replay onto a row a failover put behind another worker's lost commit waits for that one;
 *   - a rotated token the journal could not take (a file size limit) is journaled once it can,
 *     while its commit still fails, and survives a crash then;
 *   - a row lock held for 10 s stalls nothing: other integrations keep being served, the worker
 *     is never declared lost, the locked one answers a transient error;
 *   - a lease takeover (and the same through journal replay) keeps the token the provider issued
 *     over the needs_reconnect the overtaker recorded with the superseded one;
 *   - a refresh asked for while a restarted worker's recovery runs waits for it, and succeeds;
 *   - two workers with the same pid, started in the same second, draw different lease tokens;
 *   - a change notified while a statement runs reaches the cache; a change never notified is
 *     found by the periodic re-validation;
 *   - the first token after an import is not refreshed when it is fresh for its own lifetime;
 *   - min_valid is honoured right after a refresh, and for a request that joins a claim already
 *     in the database with a larger min_valid than the claim asked for, and when a lost
 *     compare-and-set serves what the winner stored;
 *   - a lost compare-and-set whose record cannot be written at once is written later, and one
 *     lost to a row with no access token claims again;
 *   - the sweep rotates an idle short-lived token about once per lifetime. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include "client.h"
#include "clock.h"
#include "itest.h"

static harness_t *h;

static int
teardown (void **state)
{
    return h ? itest_teardown (&h) : 0;
}

/* ---- helpers ---- */

/* A grant at the fake provider: its refresh token (caller frees) and, when asked, its access
 * token and chain id. */
static char *
grant (const char *provider, char **access_token, long *chain)
{
    json_t *body = json_pack ("{s:s, s:[]}", "provider", provider, "scopes");
    json_t *g = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    assert_non_null (g);
    char *rt = strdup (json_string_value (json_object_get (g, "refresh_token")));
    if (access_token)
        *access_token = strdup (json_string_value (json_object_get (g, "access_token")));
    if (chain)
        *chain = (long) json_integer_value (json_object_get (g, "chain"));
    json_decref (g);
    return rt;
}

static void
import_at (const char *brokers, const char *id, const char *rt, const char *at, const char *expires_in)
{
    int rc = -1;
    json_t *r = at ? harness_ctl_at (h, brokers, &rc, "import", "--integration", id, "--provider", "fakebox",
                                     "--refresh-token", rt, "--access-token", at, "--expires-in", expires_in, NULL)
                   : harness_ctl_at (h, brokers, &rc, "import", "--integration", id, "--provider", "fakebox",
                                     "--refresh-token", rt, NULL);
    if (rc != 0)
        fail_msg ("import of %s failed: %s", id, itest_code (r));
    json_decref (r);
}

/* Runs "ferrulectl <op> --integration id [extra]" at brokers in a child; returns its pid. The
 * child exits with ferrulectl's status. */
static pid_t
ctl_async (const char *brokers, const char *op, const char *id, const char *extra1, const char *extra2)
{
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) {
        int rc = -1;
        json_t *r = harness_ctl_at (h, brokers, &rc, op, "--integration", id, extra1, extra2, NULL);
        json_decref (r);
        _exit (rc < 0 ? 99 : rc);
    }
    return pid;
}

static int
ctl_wait (pid_t pid)
{
    int status;
    if (waitpid (pid, &status, 0) != pid || !WIFEXITED (status))
        return -1;
    return WEXITSTATUS (status);
}

static const char *
code_of_ctl (const char *brokers, const char *op, const char *id, int *rc)
{
    static char code [64];
    json_t *r = harness_ctl_at (h, brokers, rc, op, "--integration", id, NULL);
    snprintf (code, sizeof code, "%s", itest_code (r));
    json_decref (r);
    return code;
}

/* A session of its own that holds integration id's row lock until unlock_row. */
static PGconn *
lock_row (const char *id)
{
    PGconn *c = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (c), CONNECTION_OK);
    char sql [300];
    snprintf (sql, sizeof sql, "BEGIN; SELECT 1 FROM integrations WHERE id = '%s' FOR UPDATE", id);
    PGresult *r = PQexec (c, sql);
    assert_int_equal (PQresultStatus (r), PGRES_TUPLES_OK);
    assert_int_equal (PQntuples (r), 1);
    PQclear (r);
    return c;
}

static void
unlock_row (PGconn *c)
{
    PQclear (PQexec (c, "COMMIT"));
    PQfinish (c);
}

/* Waits until sql (one integer) answers want; fails the test after timeout_ms. */
static void
wait_sql (const char *sql, long long want, int timeout_ms)
{
    long long got = itest_wait_sql (h, sql, want, timeout_ms);
    if (got != want)
        fail_msg ("after %d ms, \"%s\" answers %lld, not %lld", timeout_ms, sql, got, want);
}

/* Seconds to an RFC 3339 "expires_at" from since_ms (the wall clock taken before the request was
 * sent: the promise is about the moment of the answer, and a loaded machine may take seconds
 * between the answer and this read). */
static long long
seconds_left (const json_t *reply, int64_t since_ms)
{
    const char *text = json_string_value (json_object_get (reply, "expires_at"));
    assert_non_null (text);
    struct tm tm;
    memset (&tm, 0, sizeof tm);
    assert_non_null (strptime (text, "%Y-%m-%dT%H:%M:%SZ", &tm));
    return (long long) timegm (&tm) - (long long) (since_ms / 1000);
}

/* Asks for a token lasting min_valid seconds in a child; the child exits 0 when the token it was
 * given lasts that long (a second of rounding allowed), 10 when it lasts less, 11 on an error. */
static pid_t
token_async (const char *id, int min_valid)
{
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) {
        char mv [16];
        snprintf (mv, sizeof mv, "%d", min_valid);
        int rc = -1;
        int64_t asked_ms = clock_wall_ms ();   /* see seconds_left */
        json_t *r = harness_ctl_at (h, harness_brokers (h), &rc, "token", "--integration", id, "--min-valid", mv, NULL);
        const char *text = json_string_value (json_object_get (r, "expires_at"));
        struct tm tm;
        memset (&tm, 0, sizeof tm);
        if (rc != 0 || !text || !strptime (text, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
            printf ("token --min-valid %d: %s\n", min_valid, itest_code (r));
            _exit (11);
        }
        long long left = (long long) timegm (&tm) - (long long) (asked_ms / 1000);
        printf ("token --min-valid %d: %lld s left\n", min_valid, left);
        fflush (stdout);
        _exit (left >= min_valid - 1 ? 0 : 10);
    }
    return pid;
}

/* A harness with one broker and worker "w1", the worker's environment given as name, value
 * pairs (NULL-terminated). */
static void
start_one_worker (const char *name, ...)
{
    h = harness_new (name);
    assert_non_null (h);
    va_list ap;
    va_start (ap, name);
    for (const char *var = va_arg (ap, const char *); var; var = va_arg (ap, const char *))
        harness_set_env (h, var, va_arg (ap, const char *));
    va_end (ap);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* ---- a commit that meets a read-only server ---- */

/* The harness's database's name (caller frees). */
static char *
current_db (void)
{
    PGresult *r = PQexec (harness_db (h), "SELECT current_database()");
    char *db = strdup (PQgetvalue (r, 0, 0));
    PQclear (r);
    return db;
}

/* A harness with one broker and worker "w1" that accepts a read-only server when it reconnects (as
 * after a failover with one address); the database's name (caller frees). */
static char *
start_accepting_read_only (const char *name)
{
    h = harness_new (name);
    assert_non_null (h);
    const char *url = harness_runtime_url (h);
    char *any = NULL;
    assert_true (asprintf (&any, "%s%ctarget_session_attrs=any", url, strchr (url, '?') ? '&' : '?') > 0);
    harness_set_env (h, "FERRULE_DATABASE_URL", any);
    free (any);
    harness_set_env (h, "FERRULE_ADMIN_RATE_BURST", "1000");   /* keep_writing refreshes often */
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    return current_db ();
}

/* The worker's database sessions ended by the server (as a failover ends them). */
static void
drop_worker_sessions (void)
{
    assert_int_equal (harness_sql (h, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = current_database() AND application_name ~ '^ferrule-worker(-batches)? '"), 0);
}

/* The database db turned read-only, and the worker's sessions dropped so that it reconnects to
 * it; or writable again. */
static void
set_read_only (const char *db, int on)
{
    char sql [400];
    if (on)
        snprintf (sql, sizeof sql, "ALTER DATABASE \"%s\" SET default_transaction_read_only = on", db);
    else
        snprintf (sql, sizeof sql, "ALTER DATABASE \"%s\" RESET default_transaction_read_only", db);
    assert_int_equal (harness_sql (h, sql), 0);
    if (on)
        drop_worker_sessions ();
}

/* Integration id refreshes now, with no provider latency (when: for the message), the provider
 * saw no spent token used again and no invalid grant, and active integrations are still active:
 * the chain held. */
static void
expect_chain_intact_of (const char *id, int active, const char *when)
{
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    const char *code = code_of_ctl (harness_brokers (h), "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh %s: %s", when, code);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE status = 'active'"), active);
}

/* The same, id the one integration. */
static void
expect_chain_intact (const char *id, const char *when)
{
    expect_chain_intact_of (id, 1, when);
}

static void
test_commit_retried_on_read_only_database (void **state)
{
    char *db = start_accepting_read_only ("chain_read_only");
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "ro:box", rt, NULL, NULL);
    free (rt);

    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1500));
    pid_t child = ctl_async (harness_brokers (h), "refresh", "ro:box", NULL, NULL);
    wait_sql ("SELECT count (*) FROM integrations WHERE id = 'ro:box' AND lease_owner IS NOT NULL", 1, 10000);
    /* claimed: the provider is rotating the token; the database turns read-only and drops the worker */
    set_read_only (db, 1);
    itest_wait_log (h, "could not commit the refresh", 10000);
    int rc = ctl_wait (child);
    assert_int_equal (rc, 5);              /* told: database_unavailable, the tokens are kept */
    sleep (1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);

    set_read_only (db, 0);
    free (db);
    /* writable again: the kept tokens are committed without anyone asking */
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'ro:box' AND outcome = 'refreshed'", 1, 20000);
    expect_chain_intact ("ro:box", "after the database came back");
}

/* Worker w1's lines that say a connection was made, the event delivery's apart. */
static int
connected_lines (void)
{
    unsigned long long more;
    return itest_log_lines (h, "w1", "connected to the database", &more)
           - itest_log_lines (h, "w1", "event delivery connected", &more);
}

/* Forced refreshes of id for ms milliseconds, one at a time: each claims, so each writes (the
 * worker's refresh limit raised, start_accepting_read_only). */
static void
keep_writing (const char *id, int ms)
{
    int64_t until = clock_mono_ms () + ms;
    while (clock_mono_ms () < until) {
        int rc;
        (void) code_of_ctl (harness_brokers (h), "refresh", id, &rc);
        usleep (200 * 1000);
    }
}

/* A worker told to accept a read-only server (target_session_attrs=any) meets one: every write
 * fails, the connection is dropped so that a writable server may be found, and made again a
 * second later. Each was said "connected to the database" at info, two lines a second (the
 * worker's two connections) for as long as the server stayed read-only, and nothing said that it
 * was read-only. Now the read-only server is a warning, at most one in ten seconds for each
 * connection, the attempts held back counted; the writable connection after it is said once,
 * with how long the database was away. */
static void
test_read_only_server_said_not_every_second (void **state)
{
    char *db = start_accepting_read_only ("chain_read_only_said");
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "ros:box", rt, NULL, NULL);
    free (rt);
    int connected = connected_lines ();
    set_read_only (db, 1);
    keep_writing ("ros:box", 5000);
    unsigned long long more;
    int again = connected_lines () - connected;
    int said = itest_log_lines (h, "w1", "is read-only (a standby", &more);
    fprintf (stderr, "read-only for 5 s: %d lines said connected, %d said read-only\n", again, said);
    assert_int_equal (again, 0);
    assert_in_range (said, 1, 2);
    set_read_only (db, 0);
    free (db);
    drop_worker_sessions ();              /* the failover's end: the sessions move to a writable server */
    itest_wait_log (h, "connected to the database again, after", 10000);
    expect_chain_intact ("ros:box", "after the database took writes again");
}

/* With the default read-write, libpq refuses a read-only server: the worker's attempts, once a
 * second on each connection, failed at debug level, and nothing in the log said that the
 * database was away. Now the first failure is a warning, then one in ten seconds. */
static void
test_refused_connections_said_not_every_second (void **state)
{
    start_one_worker ("chain_refused_said", NULL);
    char *db = current_db ();
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "rfs:box", rt, NULL, NULL);
    free (rt);
    set_read_only (db, 1);
    sleep (5);
    unsigned long long more;
    int said = itest_log_lines (h, "w1", "could not connect to the database", &more);
    fprintf (stderr, "refused for 5 s: %d lines said so\n", said);
    assert_in_range (said, 1, 2);
    set_read_only (db, 0);
    free (db);
    itest_wait_log (h, "connected to the database again, after", 10000);
    expect_chain_intact ("rfs:box", "after the database took writes again");
}

/* A worker started while the database refuses it said so twice within a second: its first
 * attempt (in worker_new) with "will keep trying", and the background's first, a second later,
 * with the same reason. The first now counts as the interval's line: one line per connection in
 * the first seconds, then one in ten seconds. */
static void
test_refused_at_start_said_once (void **state)
{
    h = harness_new ("chain_refused_at_start");
    assert_non_null (h);
    char *db = current_db ();
    char sql [256];
    snprintf (sql, sizeof sql, "ALTER DATABASE \"%s\" SET default_transaction_read_only = on", db);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    itest_wait_log (h, "will keep trying", 10000);
    sleep (4);
    unsigned long long more;
    int said = itest_log_lines (h, "w1", "could not connect to the database", &more);
    fprintf (stderr, "refused from the start for 4 s: %d lines said so\n", said);
    assert_in_range (said, 1, 2);           /* the main connection's, and the batch connection's */
    set_read_only (db, 0);
    free (db);
    itest_wait_log (h, "connected to the database again, after", 10000);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* Imports id, saves its row (in the test session's table saved), refreshes it, and records the
 * committed generation and fingerprint (in the table committed). */
static void
refresh_saving_before (const char *id)
{
    char sql [512];
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), id, rt, NULL, NULL);
    free (rt);
    snprintf (sql, sizeof sql, "INSERT INTO saved SELECT * FROM integrations WHERE id = '%s'", id);
    assert_int_equal (harness_sql (h, sql), 0);
    int rc;
    const char *code = code_of_ctl (harness_brokers (h), "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh %s: %s", id, code);
    snprintf (sql, sizeof sql, "INSERT INTO committed SELECT id, generation, refresh_fingerprint FROM integrations"
              " WHERE id = '%s'", id);
    assert_int_equal (harness_sql (h, sql), 0);
}

/* The rows refresh_saving_before saved put back as they were, and the chain rows after them
 * removed: what a server promoted without the commits holds. */
static void
lose_saved_commits (void)
{
    assert_int_equal (harness_sql (h, "UPDATE integrations i SET generation = b.generation, key_id = b.key_id,"
                                      " access_token = b.access_token, access_expires_at = b.access_expires_at,"
                                      " access_lifetime_s = b.access_lifetime_s, refresh_token = b.refresh_token,"
                                      " refresh_fingerprint = b.refresh_fingerprint, last_refresh_at = b.last_refresh_at"
                                      " FROM saved b WHERE i.id = b.id"), 0);
    /* the chain is append-only (a trigger); the promoted server never had the rows */
    assert_int_equal (harness_sql (h, "SET session_replication_role = replica; DELETE FROM token_chain t USING"
                                      " saved b WHERE t.integration_id = b.id AND t.generation > b.generation;"
                                      " RESET session_replication_role"), 0);
}

/* Waits up to timeout_ms for worker's log to hold want lines with needle (a worker logs what it
 * wrote after its commit's answer, which the test's session may see first); asserts it does. */
static void
wait_log_lines (const char *worker, const char *needle, unsigned long long want, int timeout_ms)
{
    unsigned long long more;
    int n = itest_log_lines (h, worker, needle, &more);
    for (int waited = 0; n >= 0 && (unsigned long long) n < want && waited < timeout_ms; waited += 50) {
        usleep (50 * 1000);
        n = itest_log_lines (h, worker, needle, &more);
    }
    assert_int_equal (n, want);
}

/* With asynchronous replication, a standby promoted after its primary failed may lack the
 * primary's last commits: a refresh the worker committed, whose provider rotated the refresh
 * token, is gone, and the promoted server holds the token the provider has replaced (the journal
 * settled its record at the commit). Here the row is put back as it was before the refresh, its
 * chain row removed, and the worker's sessions ended, as a failover leaves them. The row stayed
 * so, and the next refresh would spend the replaced token. The worker now keeps its rotated
 * commits of the last FERRULE_FAILOVER_KEEP_MS, checks them on its new connection, and writes the
 * lost one again before any claim. A row that holds a token the worker did not replace (here as
 * an import on the promoted server would leave it) is left alone, and a connection made again
 * with nothing lost writes nothing. */
static void
test_commit_lost_by_a_failover_is_written_again (void **state)
{
    start_one_worker ("chain_failover_lost", NULL);
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    refresh_saving_before ("fo:box");
    refresh_saving_before ("fo-imported:box");
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM committed c JOIN saved b USING (id)"
                                          " WHERE c.generation = b.generation + 1 AND c.refresh_fingerprint <> b.refresh_fingerprint"), 2);

    /* the failover: the promoted server never received the refreshes' commits; and fo-imported
     * was imported again there, with a token of its own */
    lose_saved_commits ();
    assert_int_equal (harness_sql (h, "UPDATE integrations SET generation = generation + 1, refresh_fingerprint = 'imported'"
                                      " WHERE id = 'fo-imported:box'"), 0);
    drop_worker_sessions ();

    /* written again: the row holds the rotated token, at the generation after the one it had */
    wait_sql ("SELECT count(*) FROM integrations i JOIN committed c USING (id) WHERE id = 'fo:box'"
              " AND i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", 1, 10000);
    unsigned long long more;
    wait_log_lines ("w1", "written again from this worker's memory", 1, 15000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'fo-imported:box'"
                                          " AND refresh_fingerprint = 'imported'"), 1);
    expect_chain_intact_of ("fo:box", 2, "after the failover");

    /* a connection lost with nothing lost: checked, nothing written */
    int connected = connected_lines ();
    drop_worker_sessions ();
    for (int waited = 0; connected_lines () < connected + 2 && waited < 10000; waited += 50)
        usleep (50 * 1000);
    assert_true (connected_lines () >= connected + 2);
    usleep (500 * 1000);
    assert_int_equal (itest_log_lines (h, "w1", "written again from this worker's memory", &more), 1);
}

/* Two replicas of the service on one database: wA behind broker 0, wB behind broker 1. */
static void
start_two_replicas (void)
{
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_broker (h), 1);
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    assert_int_equal (harness_start_worker_on (h, "wB", 2u), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* Two replicas (start_two_replicas; keep_ms: FERRULE_FAILOVER_KEEP_MS, NULL for the default), the
 * session's tables saved and committed made, and id imported through broker 0. */
static void
two_replicas_with (const char *name, const char *keep_ms, const char *id)
{
    h = harness_new (name);
    assert_non_null (h);
    if (keep_ms)
        harness_set_env (h, "FERRULE_FAILOVER_KEEP_MS", keep_ms);
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");     /* the waiting gauge is in /metrics */
    start_two_replicas ();
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_broker_frontend (h, 0), id, rt, NULL, NULL);
    free (rt);
}

/* Two replicas, wA behind broker 0 and wB behind broker 1 (two_replicas_with), refresh id one
 * after the other (wA: T0 -> T1, wB: T1 -> T2); its row before them is in the session's table
 * saved, after them in committed. */
static void
two_workers_refresh (const char *name, const char *keep_ms, const char *id)
{
    two_replicas_with (name, keep_ms, id);
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    char sql [512];
    snprintf (sql, sizeof sql, "INSERT INTO saved SELECT * FROM integrations WHERE id = '%s'", id);
    assert_int_equal (harness_sql (h, sql), 0);
    int rc;
    const char *code = code_of_ctl (b0, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wA: %s", code);
    code = code_of_ctl (b1, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wB: %s", code);
    snprintf (sql, sizeof sql, "INSERT INTO committed SELECT id, generation, refresh_fingerprint FROM integrations"
              " WHERE id = '%s'", id);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM committed"), 3);
}

/* The same for fo2:box; a failover loses both commits, and wB checks its own while wA is
 * stopped. */
static void
two_workers_lose_both (const char *name, const char *keep_ms)
{
    two_workers_refresh (name, keep_ms, "fo2:box");
    lose_saved_commits ();
    harness_signal_worker (h, "wA", SIGSTOP);
    drop_worker_sessions ();
    /* the end of wB's check on its new connection (wA, stopped, has none yet) */
    itest_wait_log (h, "integration lost commits another worker made", 10000);
}

/* After a failover lost both workers' commits of id (two_workers_refresh) and wB found its row
 * behind wA's: a refresh through wB waits and is told to retry (it would spend T0, which wA's
 * refresh replaced); once wA, resumed, writes T1 again, wB writes its own over it (wb_line in its
 * log), its waiting gauge goes back to 0, and the chain holds (when: for the message).
 * Between wA's write and wB's (wB looks again once a second) the row held T1, which wB's lost
 * refresh had spent, and nothing kept wA from claiming it: a refresh through wA then spent T1 at
 * the provider (reuse detected, the user reconnects). wB now holds the row's lease while it waits,
 * so a refresh through wA waits for wB's commit instead. wB is stopped here to keep that window
 * open for as long as the refresh through wA waits. */
static void
expect_wait_then_written_in_order (const char *id, const char *wb_line, const char *when)
{
    int rc;
    const char *code = code_of_ctl (harness_broker_frontend (h, 1), "refresh", id, &rc);
    assert_string_equal (code, "database_unavailable");
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_true (itest_metric (h, "wB", "ferrule_worker_failover_integrations_waiting") == 1);
    /* one whose deadline comes before that wait's end is told what it waits for, by wB */
    json_t *early = itest_call_once (harness_broker_frontend (h, 1), "refresh", id, 1000);
    assert_non_null (early);
    itest_assert_timeout_says (early, "its last commits were lost by the database (a failover)",
                               "a refresh waiting for another worker's lost commit");
    json_decref (early);

    harness_signal_worker (h, "wB", SIGSTOP);
    harness_signal_worker (h, "wA", SIGCONT);
    wait_log_lines ("wA", "written again from this worker's memory", 1, 15000);
    json_t *r = harness_ctl_at (h, harness_broker_frontend (h, 0), &rc, "refresh", "--integration", id,
                                "--timeout", "1.5", NULL);
    assert_string_equal (itest_code (r), "timeout");
    json_decref (r);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    harness_signal_worker (h, "wB", SIGCONT);

    wait_sql ("SELECT count(*) FROM integrations i JOIN committed c USING (id)"
              " WHERE i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", 1, 15000);
    wait_log_lines ("wB", wb_line, 1, 15000);
    code = code_of_ctl (harness_broker_frontend (h, 0), "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wA after wB's commit: %s", code);
    for (int waited = 0; itest_metric (h, "wB", "ferrule_worker_failover_integrations_waiting") != 0 && waited < 2000;
         waited += 50)
        usleep (50 * 1000);             /* the gauge is published every 100 ms */
    assert_true (itest_metric (h, "wB", "ferrule_worker_failover_integrations_waiting") == 0);
    expect_chain_intact_of (id, 1, when);
}

/* Two workers refreshed one integration within the window (two replicas, each behind its own
 * broker, or a partition that moved): wA's commit replaced T0 with T1, then wB's replaced T1 with
 * T2, and a failover lost both. Each worker checks only its own commits. wB, checking first, found
 * the row holding T0, a token it did not replace, and left it; wA then wrote T1 back, and the row
 * stayed on T1, which wB's refresh had already spent: the next refresh met invalid_grant, and the
 * user had to reconnect. Meanwhile a refresh through wB claimed the row and spent T0 at the
 * provider. A row found at a generation before the one a kept commit started from has lost
 * commits made elsewhere: the worker now holds its claims of that integration and checks it
 * again each second while it keeps the commit, and writes its own once the row holds the token
 * it replaced. */
static void
test_commits_lost_on_two_workers_are_written_again_in_order (void **state)
{
    two_workers_lose_both ("chain_failover_two", NULL);
    expect_wait_then_written_in_order ("fo2:box", "written again from this worker's memory",
                                       "after both commits were written again");
}

/* Three refreshes within the window: wA's (T0 -> T1), wB's (T1 -> T2), wA's again (T2 -> T3); a
 * failover loses the last two. wA, checking first, found the row holding T1: its own token, not
 * its newest, not one it replaced, at a generation after its first kept commit's start. It left
 * the row alone (only the first kept commit was compared), so nothing waited for wB's commit to
 * come back, and once wB wrote T2 again the row stayed on T2, which wA's lost refresh had spent:
 * the next refresh met invalid_grant. A row before the generation the newest kept commit started
 * from has lost commits made elsewhere: wA now waits, and writes T3 once the row holds T2. */
static void
test_commits_lost_between_one_workers_own_are_written_again (void **state)
{
    const char *id = "fo3:box";
    two_replicas_with ("chain_failover_between", NULL, id);
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    int rc;
    const char *code = code_of_ctl (b0, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wA: %s", code);
    assert_int_equal (harness_sql (h, "INSERT INTO saved SELECT * FROM integrations WHERE id = 'fo3:box'"), 0);
    code = code_of_ctl (b1, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wB: %s", code);
    code = code_of_ctl (b0, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh through wA again: %s", code);
    assert_int_equal (harness_sql (h, "INSERT INTO committed SELECT id, generation, refresh_fingerprint FROM integrations"
                                      " WHERE id = 'fo3:box'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM committed"), 4);

    lose_saved_commits ();                  /* the row at generation 2, holding T1 */
    harness_signal_worker (h, "wB", SIGSTOP);
    drop_worker_sessions ();
    /* (a check runs on each of its connections made again: one line or two) */
    unsigned long long more;
    for (int waited = 0; itest_log_lines (h, "wA", "integration lost commits another worker made", &more) < 1
                         && waited < 10000; waited += 50)
        usleep (50 * 1000);
    assert_true (itest_log_lines (h, "wA", "integration lost commits another worker made", &more) >= 1);
    harness_signal_worker (h, "wB", SIGCONT);   /* writes T2 again; then wA writes T3 over it */
    wait_sql ("SELECT count(*) FROM integrations i JOIN committed c USING (id)"
              " WHERE i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", 1, 15000);
    code = code_of_ctl (b0, "refresh", id, &rc);
    if (rc != 0)
        fail_msg ("refresh after both commits were written again: %s", code);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    expect_chain_intact_of (id, 1, "after the commits between wA's were written again");
}

/* wA stays stopped: wB says it stopped waiting (line), and a refresh of id through it meets the
 * token wA's lost refresh spent, as a loss past the window does. */
static void
expect_wait_ends_with_the_window (const char *id, const char *line)
{
    itest_wait_log (h, line, 10000);
    int rc;
    const char *code = code_of_ctl (harness_broker_frontend (h, 1), "refresh", id, &rc);
    assert_string_equal (code, "needs_reconnect");
    harness_signal_worker (h, "wA", SIGCONT);
}

/* The wait ends with the commit it waits for: when wA never writes its own again (its check
 * does not come within wB's window), wB forgets its commit after FERRULE_FAILOVER_KEEP_MS of
 * connected time, says so, and its claims go on (here the refresh meets the spent token and the
 * integration needs a reconnect, what a loss past the window gives). */
static void
test_a_wait_for_another_workers_commit_ends_with_the_window (void **state)
{
    two_workers_lose_both ("chain_failover_two_window", "3000");
    expect_wait_ends_with_the_window ("fo2:box", "stopped waiting for 1 integration that");
}

/* The kept commits were in the worker's memory only: a worker that stopped with them (killed, as
 * a node lost with its database's primary takes both; or drained, as a rolling restart during a
 * failover does) came back knowing nothing of them, and the lost commit's integration was left
 * holding a refresh token its provider had replaced (the next refresh: invalid_grant, and the user
 * reconnects). The journal now holds a rotated commit's record for FERRULE_FAILOVER_KEEP_MS after
 * it settles, and the worker reads those back at start and checks them before its first claim.
 * Here a worker is killed after its refresh and another drained after its, each with the commit
 * then lost; each is written again when its worker comes back. */
static void
test_commit_lost_by_a_failover_survives_a_worker_restart (void **state)
{
    start_one_worker ("chain_failover_restart", NULL);
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    for (int drained = 0; drained <= 1; drained++) {
        const char *id = drained ? "fo-drained:box" : "fo-killed:box";
        assert_int_equal (harness_sql (h, "TRUNCATE saved, committed"), 0);
        refresh_saving_before (id);
        if (drained)
            assert_true (harness_stop_worker (h, "w1") == 0);
        else {
            harness_signal_worker (h, "w1", SIGKILL);
            assert_true (harness_wait_worker_exit (h, "w1", 10000) >= 0);
        }
        lose_saved_commits ();
        assert_int_equal (harness_start_worker (h, "w1"), 0);
        assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
        char sql [512];
        snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations i JOIN committed c USING (id) WHERE id = '%s'"
                  " AND i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", id);
        wait_sql (sql, 1, 10000);
        expect_chain_intact_of (id, drained + 1, drained ? "after a drained worker came back" : "after a killed worker came back");
    }
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, "w1", "written again from this worker's memory", &more), 2);
}

/* Removes the settled markers ("done" lines) from the live region of the journal of worker, as a
 * crash between a commit and the flush of its marker leaves it: the records look outstanding
 * again. */
static void
lose_journal_markers_of (const char *worker)
{
    char path [4096];
    snprintf (path, sizeof path, "%s/%s.journal", harness_workdir (h), worker);
    FILE *f = fopen (path, "r+");
    assert_non_null (f);
    static char text [1 << 20], kept [1 << 20];
    size_t n = fread (text, 1, sizeof text - 1, f), k = 0;
    text [n] = '\0';
    size_t live = strlen (text);             /* the region ends at the first NUL */
    for (char *line = text; line < text + live; ) {
        char *nl = memchr (line, '\n', (size_t) (text + live - line));
        size_t len = nl ? (size_t) (nl - line) + 1 : (size_t) (text + live - line);
        if (!memmem (line, len, "\"done\":", 7)) {
            memcpy (kept + k, line, len);
            k += len;
        }
        line += len;
    }
    kept [k++] = '\0';
    assert_int_equal (fseek (f, 0, SEEK_SET), 0);
    assert_int_equal (fwrite (kept, 1, k, f), k);
    fclose (f);
}

/* A worker that crashed after a commit but before its settled marker reached the disk replays the
 * record at start, finds the row holding its token, and settles it. That commit was just as easy
 * for a failover to lose, but the replay neither kept it nor retained its record, so a failover
 * then left the row on the spent token. It is now kept like a commit the replay makes. */
static void
test_commit_settled_by_the_replay_is_kept_against_a_failover (void **state)
{
    start_one_worker ("chain_failover_replayed", NULL);
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    refresh_saving_before ("fo-replayed:box");
    harness_signal_worker (h, "w1", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "w1", 10000) >= 0);
    lose_journal_markers_of ("w1");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    /* a refresh waits for the start-up replay: once it is answered, the record is settled */
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "fo-after:box", rt, NULL, NULL);
    free (rt);
    int rc;
    const char *code = code_of_ctl (harness_brokers (h), "refresh", "fo-after:box", &rc);
    if (rc != 0)
        fail_msg ("refresh after the restart: %s", code);
    assert_true (itest_workdir_contains (h, "replaying 1 journal records"));

    lose_saved_commits ();
    drop_worker_sessions ();
    wait_sql ("SELECT count(*) FROM integrations i JOIN committed c USING (id) WHERE id = 'fo-replayed:box'"
              " AND i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", 1, 10000);
    expect_chain_intact_of ("fo-replayed:box", 2, "after the failover");
}

/* Two workers refreshed one integration (wA: T0 -> T1, then wB: T1 -> T2), wB died before its
 * journal's settled marker reached the disk, and a failover lost both commits. wB's replay at
 * start found the row at generation 1 (T0), lost its compare-and-set, settled the record as
 * superseded and dropped T2; wA's check then wrote T1 back, a token wB's refresh had spent (the
 * next refresh: invalid_grant, and the user reconnects). A record whose row is found at a
 * generation before its own now waits, as a kept commit does (failover.h), for the other worker
 * to write its commits again, holding that integration's claims, bounded by the failover window.
 * keep_ms: FERRULE_FAILOVER_KEEP_MS, NULL for the default. Returns with wA stopped and wB's
 * replay waiting. */
static void
replay_behind_another_workers_loss (const char *name, const char *keep_ms)
{
    two_workers_refresh (name, keep_ms, "fo3:box");
    harness_signal_worker (h, "wB", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "wB", 10000) >= 0);
    lose_journal_markers_of ("wB");
    harness_signal_worker (h, "wA", SIGSTOP);
    lose_saved_commits ();
    drop_worker_sessions ();
    assert_int_equal (harness_start_worker_on (h, "wB", 2u), 0);
    itest_wait_log (h, "a failover lost commits another worker made before this refresh", 10000);
}

static void
test_replay_waits_for_another_workers_lost_commit (void **state)
{
    replay_behind_another_workers_loss ("chain_failover_replay_behind", NULL);
    expect_wait_then_written_in_order ("fo3:box", "journal replay: committed generation 3",
                                       "after the replay waited for the other worker");
    /* the held lease is this run's: the start-up's release of an earlier run's leases, which comes
     * after the replay, left it (it would have recorded the refresh as interrupted) */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'fo3:box'"
                                          " AND outcome = 'interrupted'"), 0);
}

/* The replay's wait ends with the failover window: wA never writes its commit again, and wB gives
 * its record up after FERRULE_FAILOVER_KEEP_MS of connected time, says so, and its claims go on
 * (the refresh meets the spent token: what a loss past the window gives). */
static void
test_a_replays_wait_ends_with_the_window (void **state)
{
    replay_behind_another_workers_loss ("chain_failover_replay_window", "3000");
    expect_wait_ends_with_the_window ("fo3:box", "stopped waiting for another worker");
}

/* wA refreshed (T0 -> T1), its settled marker did not reach the disk before it died, and wB
 * refreshed since (T1 -> T2). wA's replay at start loses its compare-and-set to wB's commit, and
 * the record is settled as superseded; but its commit had landed, as the chain's "refreshed" row
 * of generation 2 with T1 shows. A conflict was recorded all the same ("another refresh ...
 * committed first; this result was not stored"), which doctor reads as a sign of reuse when a
 * refusal follows. Now no conflict row: the chain holds the commit. */
static void
test_replay_of_a_commit_the_row_moved_on_from_records_no_conflict (void **state)
{
    two_workers_refresh ("chain_replay_moved_on", NULL, "mv:box");
    harness_signal_worker (h, "wA", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "wA", 10000) >= 0);
    lose_journal_markers_of ("wA");
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    itest_wait_log (h, "journal replay: superseded generation 2", 15000);
    long long conflicts = harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'mv:box'"
                                              " AND outcome = 'conflict'");
    if (conflicts != 0)
        fail_msg ("%lld conflict rows for a replayed commit the chain holds", conflicts);
    expect_chain_intact_of ("mv:box", 1, "after the replay");
}

/* A lost commit found on a server that is read-only (target_session_attrs=any reached a standby,
 * or the promoted server still refuses writes) cannot be written again: the write fails, the
 * connection is made again, the check starts over, once a second for as long as it lasts. Each try
 * said "could not write again" (five lines in five seconds). It is now said once in ten seconds
 * with the count of the rest, and the check's end says how many tries failed before it wrote. */
static void
test_failover_rewrite_refused_said_not_every_second (void **state)
{
    char *db = start_accepting_read_only ("chain_failover_read_only");
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    refresh_saving_before ("foro:box");
    lose_saved_commits ();
    set_read_only (db, 1);
    itest_wait_log (h, "could not write again the refresh commit the database lost", 10000);
    sleep (5);
    unsigned long long more = 0;
    int lines = itest_log_lines (h, "w1", "could not write again the refresh commit the database lost", &more);
    fprintf (stderr, "%d lines, and %llu more failed tries counted in them, in about 5 s\n", lines, more);
    assert_int_equal (lines, 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations i JOIN saved b USING (id)"
                                          " WHERE i.generation = b.generation"), 1);    /* not written: read-only */

    set_read_only (db, 0);
    wait_sql ("SELECT count(*) FROM integrations i JOIN committed c USING (id) WHERE id = 'foro:box'"
              " AND i.refresh_fingerprint = c.refresh_fingerprint AND i.generation = c.generation", 1, 10000);
    itest_wait_log (h, "tries that failed", 5000);
    assert_true (itest_workdir_contains (h, "written again from this worker's memory"));
    expect_chain_intact_of ("foro:box", 1, "after the server took writes again");
    free (db);
}

/* A database that refuses every write without dropping the connection (a full disk: here a
 * trigger that says so) fails each refresh in flight, and each retry of its commit (250 ms,
 * doubling to 10 s): with a line each, thirty refreshes wrote about 150 lines in five seconds,
 * and ten thousand would write a thousand a second, burying what the first line said. A failed
 * commit is now said at most once a second, with the count of the rest, which comes out even
 * when no later failure carries it; every refresh still commits once the database takes writes
 * again. */
static void
test_commit_failures_are_logged_once_a_second (void **state)
{
    enum { N = 30 };
    start_one_worker ("chain_disk_full", NULL);
    char id [N][32];
    for (int i = 0; i < N; i++) {
        snprintf (id [i], sizeof id [i], "full%d:box", i);
        char *rt = grant ("fakebox", NULL, NULL);
        import_at (harness_brokers (h), id [i], rt, NULL, NULL);
        free (rt);
    }
    /* the disk is full for what a commit writes (a new generation); a claim still takes its lease */
    assert_int_equal (harness_sql (h, "CREATE FUNCTION test_disk_full () RETURNS trigger LANGUAGE plpgsql AS "
                                      "$$BEGIN IF NEW.generation <> OLD.generation THEN RAISE EXCEPTION "
                                      "'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; "
                                      "END IF; RETURN NEW; END$$"), 0);
    assert_int_equal (harness_sql (h, "CREATE TRIGGER test_disk_full BEFORE UPDATE ON integrations "
                                      "FOR EACH ROW EXECUTE FUNCTION test_disk_full ()"), 0);
    int64_t t0 = clock_mono_ms ();
    pid_t child [N];
    for (int i = 0; i < N; i++)
        child [i] = ctl_async (harness_brokers (h), "refresh", id [i], NULL, NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal (ctl_wait (child [i]), 5);     /* database_unavailable, the tokens kept */
    sleep (5);                                          /* each commit retried about four times more */
    unsigned long long more = 0, summed = 0;
    int lines = itest_log_lines (h, "w1", "could not commit", &more);
    (void) itest_log_lines (h, "w1", "more refresh commits failed since the last line", &summed);
    more += summed;
    double seconds = (double) (clock_mono_ms () - t0) / 1000.0;
    fprintf (stderr, "%d lines, and %llu more failed commits counted in them, in %.1f s\n", lines, more, seconds);
    assert_true (lines >= 3);                           /* the error, said again as it goes on */
    assert_true (lines <= (int) seconds + 2);
    assert_true (lines + (long long) more >= 2 * N);    /* every refresh failed, and again */
    assert_true (itest_workdir_contains (h, "No space left on device"));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);

    assert_int_equal (harness_sql (h, "DROP TRIGGER test_disk_full ON integrations"), 0);
    wait_sql ("SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'", N, 30000);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
}

/* ---- a journal that cannot be written, a commit that cannot land, then a crash ---- */

/* 1 when the worker's journal holds a line naming integration id (records name it in clear). */
static int
journal_names (const char *worker_id, const char *id)
{
    char path [512], needle [128];
    snprintf (path, sizeof path, "%s/%s.journal", harness_workdir (h), worker_id);
    snprintf (needle, sizeof needle, "\"id\":\"%s\"", id);
    FILE *f = fopen (path, "rb");
    if (!f)
        return 0;
    static char buf [4 * 1024 * 1024];
    size_t n = fread (buf, 1, sizeof buf, f);
    fclose (f);
    return memmem (buf, n, needle, strlen (needle)) != NULL;
}

static void
set_file_limit (pid_t pid, rlim_t soft)
{
    struct rlimit lim = { soft, RLIM_INFINITY };
    if (prlimit (pid, RLIMIT_FSIZE, &lim, NULL) != 0)
        fail_msg ("prlimit: %s", strerror (errno));
}

/* The journal's file cannot grow or be written (a file size limit of 0 stands for a full disk:
 * every write fails, EFBIG where a full disk says ENOSPC), the provider rotates the token, and
 * the database refuses its commit. The worker used to die of SIGXFSZ at its first write; and an
 * append that failed was never tried again while the commit was, so that a crash before the
 * database came back lost the only valid refresh token. Now the record is appended at the next
 * failed commit once the file takes it, and the restarted worker's replay commits it. */
static void
test_rotated_token_journaled_once_the_file_takes_it (void **state)
{
    char *db = start_accepting_read_only ("chain_journal_full");
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "jf:box", rt, NULL, NULL);
    free (rt);

    pid_t pid = harness_worker_pid (h, "w1");
    assert_true (pid > 0);
    set_file_limit (pid, 0);                /* its log cannot be written either, meanwhile */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1500));
    pid_t child = ctl_async (harness_brokers (h), "refresh", "jf:box", NULL, NULL);
    wait_sql ("SELECT count (*) FROM integrations WHERE id = 'jf:box' AND lease_owner IS NOT NULL", 1, 10000);
    set_read_only (db, 1);
    assert_int_equal (ctl_wait (child), 5);   /* database_unavailable: the tokens are kept */
    assert_true (harness_worker_running (h, "w1"));
    assert_false (journal_names ("w1", "jf:box"));

    set_file_limit (pid, RLIM_INFINITY);    /* room again; the database still refuses */
    for (int waited = 0; !journal_names ("w1", "jf:box") && waited < 30000; waited += 100)
        usleep (100 * 1000);
    assert_true (journal_names ("w1", "jf:box"));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);

    harness_signal_worker (h, "w1", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "w1", 10000) >= 0);
    set_read_only (db, 0);
    free (db);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'jf:box' AND outcome = 'refreshed'", 1, 20000);
    expect_chain_intact ("jf:box", "after the restart");
}

/* Where worker_id's journal's live region ends (its first NUL), in bytes. */
static off_t
journal_end (const char *worker_id)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s.journal", harness_workdir (h), worker_id);
    FILE *f = fopen (path, "rb");
    if (!f)
        return 0;
    static char buf [4 * 1024 * 1024];
    size_t n = fread (buf, 1, sizeof buf, f);
    fclose (f);
    const char *nul = memchr (buf, '\0', n);
    return nul ? nul - buf : (off_t) n;
}

/* The rotated token the journal could not take (its file full) and the database refused, and
 * then the worker stopped: the drain gave up on the commit and the token was freed with no word
 * but "drain timed out with 1 refreshes ...", neither the integration nor the loss named (review,
 * 2026-12-06). Now the journal is tried once more and, when it still cannot be written, the loss
 * is logged as an error naming the integration. The journal is made to fail where the log does
 * not: the region grows with commits kept against a failover, the log is emptied, and the file
 * size limit is put at the region's end (the log, written from its start again, stays below). */
static void
test_rotated_token_the_journal_never_took_is_said_lost_at_exit (void **state)
{
    h = harness_new ("chain_journal_lost");
    assert_non_null (h);
    const char *url = harness_runtime_url (h);
    char *any = NULL;
    assert_true (asprintf (&any, "%s%ctarget_session_attrs=any", url, strchr (url, '?') ? '&' : '?') > 0);
    harness_set_env (h, "FERRULE_DATABASE_URL", any);
    free (any);
    harness_set_env (h, "FERRULE_ADMIN_RATE_BURST", "1000");
    harness_set_env (h, "FERRULE_FAILOVER_KEEP_MS", "600000");  /* the region keeps every commit's record */
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "3000"); /* the drain waits for the commit this long */
    harness_set_env (h, "FERRULE_DRAIN_MS", "500");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    char *db = current_db ();
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "jl:box", rt, NULL, NULL);
    free (rt);
    /* rotations until the journal's region is longer than anything the log gets from here on */
    int rc;
    for (int i = 0; i < 400 && journal_end ("w1") < 24 * 1024; i++) {
        const char *code = code_of_ctl (harness_brokers (h), "refresh", "jl:box", &rc);
        if (rc != 0)
            fail_msg ("refresh %d: %s", i, code);
    }
    off_t end = journal_end ("w1");
    assert_true (end >= 24 * 1024);

    char log [4096];
    snprintf (log, sizeof log, "%s/w1.log", harness_workdir (h));
    assert_int_equal (truncate (log, 0), 0);      /* appended to from its start again */
    pid_t pid = harness_worker_pid (h, "w1");
    assert_true (pid > 0);
    set_file_limit (pid, (rlim_t) end);           /* the journal cannot take another line */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1500));
    pid_t child = ctl_async (harness_brokers (h), "refresh", "jl:box", NULL, NULL);
    wait_sql ("SELECT count (*) FROM integrations WHERE id = 'jl:box' AND lease_owner IS NOT NULL", 1, 10000);
    set_read_only (db, 1);
    assert_int_equal (ctl_wait (child), 5);       /* database_unavailable: the tokens are kept in memory */
    itest_wait_log (h, "could not write the journal", 10000);

    harness_signal_worker (h, "w1", SIGTERM);
    assert_true (harness_wait_worker_exit (h, "w1", 20000) >= 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    set_read_only (db, 0);
    free (db);
    unsigned long long more;
    int said = itest_log_lines (h, "w1", "the rotated refresh token of integration \"jl:box\" is lost", &more);
    if (said != 1)
        fail_msg ("the worker stopped with the rotated token of jl:box in memory alone and logged its loss %d times", said);
    assert_int_equal (itest_log_lines (h, "w1", "connect the integration again", &more), 1);
}

/* A rotated refresh whose answer moved the grant's API base URL (Salesforce's instance_url), its
 * commit held up and its worker killed: the start-up replay writes the URL with the token. The
 * replay's copy of each journal record left the URL pointing into the journal's parse, freed
 * before the commit read it (AddressSanitizer: heap-use-after-free; elsewhere, whatever the
 * freed memory held reached the column). */
static void
test_journal_replay_keeps_the_api_base_url (void **state)
{
    h = harness_new ("chain_replay_api_base");
    assert_non_null (h);
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    assert_non_null (root);
    json_object_set_new (json_object_get (root, "fakebox"), "api_base_field", json_string ("instance_url"));
    assert_int_equal (json_dump_file (root, harness_providers_file (h), JSON_INDENT (2)), 0);
    json_decref (root);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "rb:box", rt, NULL, NULL);
    free (rt);

    itest_fake_config (h, "fakebox", json_pack ("{s:s, s:i}", "instance_url", "https://moved.example.com/services",
                                                "latency_ms", 1000));
    pid_t child = ctl_async (harness_brokers (h), "refresh", "rb:box", NULL, NULL);
    /* the claim is made; the commit after the provider's answer meets the lock */
    wait_sql ("SELECT count(*) FROM integrations WHERE id = 'rb:box' AND lease_owner IS NOT NULL", 1, 5000);
    PGconn *locker = lock_row ("rb:box");
    itest_wait_log (h, "could not commit the refresh", 10000);
    assert_int_equal (ctl_wait (child), 5);
    harness_signal_worker (h, "w1", SIGKILL);
    assert_true (harness_wait_worker_exit (h, "w1", 10000) >= 0);
    /* a commit the dead worker had sent again still waits for the lock on the server, which
     * would run it once the lock goes: its sessions go with it, as with the whole machine */
    assert_int_equal (harness_sql (h, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE"
                                      " datname = current_database() AND application_name ~ '^ferrule-worker '"), 0);
    wait_sql ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
              " AND application_name ~ '^ferrule-worker '", 0, 5000);
    unlock_row (locker);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);

    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'rb:box' AND outcome = 'refreshed'", 1, 20000);
    expect_chain_intact ("rb:box", "after the replay");
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'rb:box'"
                                          " AND api_base_url = 'https://moved.example.com/services'"), 1);
    int rc;
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "rb:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (json_string_value (json_object_get (t, "api_base_url")), "https://moved.example.com/services");
    json_decref (t);
}

/* ---- a row locked for 10 s ---- */

static void
test_row_lock_does_not_stall_the_worker (void **state)
{
    start_one_worker ("chain_row_lock", "FERRULE_HEARTBEAT_MS", "500", NULL);   /* lost after 1.5 s of silence */
    char *rt1 = grant ("fakebox", NULL, NULL), *rt2 = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "locked:box", rt1, NULL, NULL);
    import_at (harness_brokers (h), "free:box", rt2, NULL, NULL);
    free (rt1);
    free (rt2);
    int rc;
    code_of_ctl (harness_brokers (h), "token", "free:box", &rc);
    assert_int_equal (rc, 0);

    PGconn *locker = lock_row ("locked:box");
    /* timed over a client connected beforehand: what a ferrulectl run takes to start is not the
     * worker's, and on a loaded machine under AddressSanitizer it is most of a run */
    client_t *asker = itest_client_connected (harness_brokers (h));
    int64_t until = clock_mono_ms () + 10000;
    pid_t child = ctl_async (harness_brokers (h), "refresh", "locked:box", NULL, NULL);
    itest_hits_t hits = itest_cached_hits (asker, "free:box", until, 1000);
    client_destroy (&asker);
    rc = ctl_wait (child);
    unlock_row (locker);
    fprintf (stderr, "%d cached tokens for another integration during the lock, %d late or failed; the slowest"
             " took %lld ms\n", hits.served, hits.late, (long long) hits.slowest_ms);
    assert_true (hits.served > 20);
    assert_int_equal (hits.late, 0);
    assert_int_equal (rc, 5);                 /* the locked integration: a transient error */
    assert_false (itest_workdir_contains (h, "missed its heartbeats"));
    /* and once the lock is gone it refreshes */
    const char *code = code_of_ctl (harness_brokers (h), "refresh", "locked:box", &rc);
    if (rc != 0)
        fail_msg ("refresh after the lock: %s", code);
}

/* CPU seconds (user + system) process pid used over the next `seconds` of wall time. */
static double
cpu_seconds_over (pid_t pid, int seconds)
{
    double ticks = (double) sysconf (_SC_CLK_TCK), used [2];
    for (int k = 0; k < 2; k++) {
        char path [64], buf [1024];
        snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
        FILE *f = fopen (path, "r");
        assert_non_null (f);
        size_t n = fread (buf, 1, sizeof buf - 1, f);
        fclose (f);
        buf [n] = '\0';
        /* after "(comm)": the state is field 3, utime field 14 and stime field 15 */
        const char *p = strrchr (buf, ')');
        assert_non_null (p);
        unsigned long long utime = 0, stime = 0;
        assert_int_equal (sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime), 2);
        used [k] = (double) (utime + stime) / ticks;
        if (k == 0)
            sleep ((unsigned) seconds);
    }
    fprintf (stderr, "the worker used %.2f s of CPU in %d s\n", used [1] - used [0], seconds);
    return used [1] - used [0];
}

/* A worker whose database is unreachable waits in its poll for the next reconnect: its due
 * sweep must not turn the loop into a spin (it used to, a whole core per worker, for as long
 * as the outage lasted). */
static void
test_worker_without_database_does_not_spin (void **state)
{
    h = harness_new ("chain_no_database");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_SWEEP_MS", "400");
    harness_set_env (h, "FERRULE_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    sleep (1);                                 /* the first sweep pass is due by now */
    double cpu = cpu_seconds_over (harness_worker_pid (h, "w1"), 3);
    assert_true (cpu < 0.75);
}

/* A refresh of id, sent through broker b0, held at the fake provider (fakebox) until
 * release_held: its child process. The first provider call of the test. */
static pid_t
refresh_held_at_provider (const char *b0, const char *id)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 60000));
    pid_t child = ctl_async (b0, "refresh", id, NULL, NULL);
    for (int64_t end = clock_mono_ms () + 20000;
         itest_stat (h, "fakebox", "refresh_calls") < 1 && clock_mono_ms () < end;)
        usleep (20000);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 1);
    return child;
}

/* A new grant of fakebox imported as id: the row moves on a generation. */
static void
import_again (const char *id)
{
    char *rt = grant ("fakebox", NULL, NULL);
    assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
    free (rt);
}

/* The held call answered, and its refresh ended. */
static void
release_held (pid_t child)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);
    ctl_wait (child);
}

/* A failure that turns out stale (the row moved on while the provider call was out: a commit of
 * another worker's, an import) is about the token it was refreshing, and is recorded at that
 * token's generation, not at the row's new one. It was recorded at the new one: the history
 * showed the old token's failure against the live token, and the next refresh, which worked,
 * made a "recovered" event although nothing had failed for the live token. */
static void
test_a_stale_failure_is_recorded_at_its_own_generation (void **state)
{
    start_one_worker ("chain_stale_failure", "FERRULE_PROVIDER_TIMEOUT_MS", "20000", "FERRULE_LEASE_MS", "30000",
                      NULL);
    const char *b0 = harness_broker_frontend (h, 0);
    char *rt = grant ("fakebox", NULL, NULL);
    assert_int_equal (itest_import (h, "stale:box", "fakebox", rt), 0);
    free (rt);
    /* the refresh of generation 1 reaches the provider and waits there for its 500 */
    itest_fault (h, "fakebox", "status", 1, 500, -1, -1);
    pid_t child = refresh_held_at_provider (b0, "stale:box");
    /* meanwhile the row moves on to generation 2 (a new grant imported), then the 500 comes */
    import_again ("stale:box");
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'stale:box'"), 2);
    release_held (child);
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'stale:box' AND outcome = 'transient'", 1, 20000);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM token_chain WHERE integration_id = 'stale:box'"
                                          " AND outcome = 'transient'"), 1);
    /* the live token's first refresh works, and recovers from nothing */
    int rc;
    const char *code = code_of_ctl (b0, "refresh", "stale:box", &rc);
    if (rc != 0)
        fail_msg ("the refresh of the new grant: %s", code);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'stale:box'"
                                          " AND type = 'recovered'"), 0);
}

/* A lost compare-and-set of a rotated token whose conflict record fails with an error other than
 * the database's absence (here a trigger of the test's refusing the conflict row) is tried again:
 * the row it reads decides the new token's fate (revoked if a disconnect overtook it), and its
 * journal record stays until then. It was settled at once, the record dropped unread. */
static void
test_a_failed_conflict_record_of_a_rotation_is_tried_again (void **state)
{
    start_one_worker ("chain_conflict_error", "FERRULE_PROVIDER_TIMEOUT_MS", "20000", "FERRULE_LEASE_MS", "30000",
                      NULL);
    const char *b0 = harness_broker_frontend (h, 0);
    char *rt = grant ("fakebox", NULL, NULL);
    assert_int_equal (itest_import (h, "cf:box", "fakebox", rt), 0);
    free (rt);
    assert_int_equal (harness_sql (h, "CREATE FUNCTION test_refuse_conflict () RETURNS trigger LANGUAGE plpgsql AS"
                                      " $$ BEGIN RAISE EXCEPTION 'the test refuses conflict rows'; END $$;"
                                      " CREATE TRIGGER test_refuse_conflict BEFORE INSERT ON token_chain FOR EACH ROW"
                                      " WHEN (NEW.outcome = 'conflict') EXECUTE FUNCTION test_refuse_conflict ()"), 0);
    /* the refresh reaches the provider, which rotates; meanwhile an import moves the row on */
    pid_t child = refresh_held_at_provider (b0, "cf:box");
    import_again ("cf:box");
    release_held (child);
    itest_wait_log (h, "could not record the lost compare-and-set", 20000);
    assert_int_equal (harness_sql (h, "DROP TRIGGER test_refuse_conflict ON token_chain"), 0);
    /* tried again: the conflict is recorded once the database takes it */
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'cf:box' AND outcome = 'conflict'", 1, 20000);
}

/* ---- lease takeover ---- */

/* Worker wA (only on broker 0) claims and calls the provider (fakebox, or fakegoogle answering
 * with the refresh token sent); its commit is held up (a row lock) past its lease; worker wB
 * (only on broker 1) takes the lease, spends the old refresh token and gets invalid_grant (injected: the provider keeps the chain), recording
 * needs_reconnect at the same generation. Returns with wA stopped (kill_a: SIGKILL, else SIGSTOP). */
static void
takeover_at (int kill_a, const char *provider)
{
    h = harness_new (kill_a ? "chain_takeover_replay" : "chain_takeover");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "250");
    /* a connection to the database may take longer than that heartbeat on a loaded machine */
    harness_set_env (h, "FERRULE_DB_CONNECT_TIMEOUT_MS", "1000");
    /* room over the provider's 1 s for a loaded machine: the call must end in an answer; and
     * under the 4 s lease with the claim's answer, a wait for a free connection and the commit,
     * 250 + 250 ms each (the worker refuses less) */
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "2400");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "300");
    harness_set_env (h, "FERRULE_LEASE_MS", "4000");
    start_two_replicas ();
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    if (strcmp (provider, "fakegoogle") == 0)    /* reusable: its answers carry the token sent */
        itest_fake_config (h, provider, json_pack ("{s:b}", "echo_refresh_token", 1));
    char *rt = grant (provider, NULL, NULL);
    int rc = -1;
    json_decref (harness_ctl_at (h, b0, &rc, "import", "--integration", "tk:box", "--provider", provider,
                                 "--refresh-token", rt, NULL));
    assert_int_equal (rc, 0);
    free (rt);

    itest_fake_config (h, provider, json_pack ("{s:i}", "latency_ms", 1000));
    pid_t child = ctl_async (b0, "refresh", "tk:box", NULL, NULL);
    /* wA holds the lease and waits for the provider: hold up its commit */
    wait_sql ("SELECT count(*) FROM integrations WHERE lease_owner = 'wA'", 1, 5000);
    PGconn *locker = lock_row ("tk:box");
    itest_wait_log (h, "could not commit the refresh", 5000);
    assert_int_equal (ctl_wait (child), 5);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);
    /* wA stalls (or dies) while the row is still locked, then its lease runs out: stopped only
     * after the expiry, a retry of its commit could be waiting for the lock at that moment and
     * land once it is released, before the takeover (seen once under ASan) */
    if (kill_a) {
        harness_signal_worker (h, "wA", SIGKILL);
        assert_true (harness_wait_worker_exit (h, "wA", 5000) >= 0);
    }
    else
        harness_signal_worker (h, "wA", SIGSTOP);
    wait_sql ("SELECT count(*) FROM integrations WHERE lease_expires_at < clock_timestamp()", 1, 10000);
    unlock_row (locker);

    itest_fake_config (h, provider, json_pack ("{s:i}", "latency_ms", 0));
    itest_fault (h, provider, "invalid_grant", 1, -1, -1, -1);
    const char *code = code_of_ctl (b1, "refresh", "tk:box", &rc);
    assert_string_equal (code, "needs_reconnect");
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE status = 'needs_reconnect'"), 1);
}

static void
takeover (int kill_a)
{
    takeover_at (kill_a, "fakebox");
}

/* What must hold after either takeover: the provider's newest token won. */
static void
takeover_settled (void)
{
    wait_sql ("SELECT count(*) FROM integrations WHERE id = 'tk:box' AND status = 'active'", 1, 20000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'invalid_grant'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'tk:box'"), 2);
    /* the events told the application: broken, then working again (issue 12) */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'tk:box'"), 3);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM (SELECT type, row_number () OVER (ORDER BY seq) AS n"
                                          " FROM events WHERE integration_id = 'tk:box') x WHERE (n, type) IN"
                                          " ((1, 'connected'), (2, 'needs_reconnect'), (3, 'recovered'))"), 3);
    /* and that token works at the provider: no reuse */
    int rc;
    const char *code = code_of_ctl (harness_broker_frontend (h, 1), "refresh", "tk:box", &rc);
    if (rc != 0)
        fail_msg ("refresh after the takeover: %s", code);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'tk:box'"), 3);
}

static void
test_lease_takeover_keeps_the_new_token (void **state)
{
    takeover (0);
    harness_signal_worker (h, "wA", SIGCONT);   /* wA retries its commit */
    takeover_settled ();
}

/* The same takeover at a provider that answers with the refresh token it was sent (HubSpot):
 * wA's answer rotated nothing, and wB's invalid_grant is about that very token, so wA's late
 * commit loses to the needs_reconnect. It used to count as a rotation and win: the row active
 * again on a refused token, a false "recovered" in the chain and the events. */
static void
test_takeover_of_a_reused_token_keeps_needs_reconnect (void **state)
{
    takeover_at (0, "fakegoogle");
    harness_signal_worker (h, "wA", SIGCONT);   /* wA retries its commit */
    /* its commit settles one way or the other: refreshed, or lost (a conflict row) */
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'tk:box' AND outcome IN ('refreshed', 'conflict')",
              1, 20000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'tk:box'"
                                          " AND status = 'needs_reconnect'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'tk:box'"
                                          " AND type = 'recovered'"), 0);
}

static void
test_journal_replay_after_takeover_keeps_the_new_token (void **state)
{
    takeover (1);
    /* wA's journal holds the rotated token; its next run replays it before anything else */
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    takeover_settled ();
}

/* A worker whose startup replay cannot finish (the journaled integration's row is locked by
 * another session) retries it while it serves: the retries must not hold its loop, so cache hits
 * of other integrations keep coming. When the replay was a statement the loop waited for, each
 * try held the loop for the lock timeout, and the next was due as soon as it ended. */
static void
test_replay_blocked_by_a_row_lock_does_not_stall_cache_hits (void **state)
{
    takeover (1);                                  /* wA's journal holds tk:box's rotated token */
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (b1, "free:box", rt, "at-free-box", "3600");     /* an access token: no refresh needed */
    free (rt);
    PGconn *locker = lock_row ("tk:box");
    /* the longest waits the heartbeat allows: a replay the loop waited for would hold it 1 s a try */
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1200");
    harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", "1000");
    /* over the 2.4 s call, a 1.45 s claim, wait for a free connection and commit */
    harness_set_env (h, "FERRULE_LEASE_MS", "6800");
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    int rc = -1;
    for (int64_t until = clock_mono_ms () + 20000; rc != 0 && clock_mono_ms () < until; usleep (100000))
        code_of_ctl (b0, "token", "free:box", &rc);       /* wA is up and its cache holds free:box */
    assert_int_equal (rc, 0);
    /* timed over a client connected beforehand, not as whole ferrulectl runs */
    client_t *asker = itest_client_connected (b0);
    itest_hits_t hits = itest_cached_hits (asker, "free:box", clock_mono_ms () + 6000, 750);
    client_destroy (&asker);
    unlock_row (locker);
    fprintf (stderr, "%d cached tokens while the replay waited for the row lock, %d late or failed; the slowest"
             " took %lld ms\n", hits.served, hits.late, (long long) hits.slowest_ms);
    assert_true (hits.served > 0);
    assert_int_equal (hits.late, 0);
    takeover_settled ();                           /* the replay still lands once the lock is gone */
}

/* One journal record whose replay keeps failing (its row locked by another session) held up
 * every refresh of the restarted worker: the whole pass was tried again each second, and no claim
 * went out until a pass settled every record, so every refresh waited 2 s and got
 * database_unavailable (review, 2026-12-06). Now the failing record is tried again apart, and
 * only its own integration's refreshes wait for it. */
static void
test_a_failing_journal_record_holds_only_its_integration (void **state)
{
    takeover (1);                                  /* wA's journal holds tk:box's rotated token */
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (b1, "other:box", rt, NULL, NULL);   /* no access token: a refresh calls the provider */
    free (rt);
    PGconn *locker = lock_row ("tk:box");
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    unsigned long long more;
    for (int64_t until = clock_mono_ms () + 20000;
         itest_log_lines (h, "wA", "journal replay failed", &more) == 0 && clock_mono_ms () < until;)
        usleep (50000);
    assert_true (itest_log_lines (h, "wA", "journal replay failed", &more) > 0);
    int rc = -1;
    char other [64];
    snprintf (other, sizeof other, "%s", code_of_ctl (b0, "refresh", "other:box", &rc));
    unlock_row (locker);
    if (rc != 0)
        fail_msg ("a refresh of other:box while tk:box's journal record could not be replayed: %s", other);
    /* the record lands once the lock is gone, over the needs_reconnect the takeover recorded */
    wait_sql ("SELECT count(*) FROM token_chain WHERE integration_id = 'tk:box' AND outcome = 'refreshed'", 1, 20000);
    wait_sql ("SELECT count(*) FROM integrations WHERE id = 'tk:box' AND status = 'active'", 1, 20000);
}

/* ---- a refresh asked for while the start-up recovery runs ---- */

/* Worker w1 restarted with its earlier run's lease of left:box, whose release waits for the row
 * lock this returns; asked:box can be refreshed. */
static PGconn *
start_up_release_held (const char *name)
{
    /* the release waits for the lock rather than timing out and retrying a second later (the
     * heartbeat bounds the timeouts: worker/main.c) */
    start_one_worker (name, "FERRULE_HEARTBEAT_MS", "3000", "FERRULE_DB_STATEMENT_TIMEOUT_MS", "6500",
                      "FERRULE_DB_LOCK_TIMEOUT_MS", "6000", NULL);
    const char *b = harness_brokers (h);
    char *rt1 = grant ("fakebox", NULL, NULL), *rt2 = grant ("fakebox", NULL, NULL);
    import_at (b, "left:box", rt1, NULL, NULL);
    import_at (b, "asked:box", rt2, NULL, NULL);
    free (rt1);
    free (rt2);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    /* the lease of a run killed during left:box's refresh */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w1', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = clock_timestamp () + interval '1 minute'"
                                      " WHERE id = 'left:box'"), 0);
    PGconn *locker = lock_row ("left:box");
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    /* the worker is connected, and its release waits for the lock (a session of this test's
     * database: a row lock's waiter waits on the holder's transaction id, a lock with no database) */
    wait_sql ("SELECT (count(*) > 0)::int FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
              " WHERE NOT l.granted AND a.datname = current_database ()", 1, 10000);
    return locker;
}

/* A restarted worker takes requests as soon as it is connected, while its recovery (the journal's
 * replay, then the release of its earlier run's leases) still runs, and no refresh may start
 * before the recovery ends. A refresh asked for meanwhile waits for it instead of failing at once
 * (a rolling restart failed the requests of a worker's first milliseconds): here a row lock holds
 * the release up for 300 ms after the refresh is asked for. */
static void
test_refresh_waits_for_the_start_up_recovery (void **state)
{
    PGconn *locker = start_up_release_held ("chain_startup_wait");
    pid_t child = ctl_async (harness_brokers (h), "refresh", "asked:box", NULL, NULL);
    usleep (300000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'interrupted'"), 0);
    unlock_row (locker);
    assert_int_equal (ctl_wait (child), 0);
    /* the recovery came first: the earlier run's lease is recorded before the refresh */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE lease_owner IS NOT NULL"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT (max(r.seq) > max(i.seq))::int FROM token_chain r, token_chain i"
                                          " WHERE r.integration_id = 'asked:box' AND r.outcome = 'refreshed'"
                                          " AND i.integration_id = 'left:box' AND i.outcome = 'interrupted'"), 1);
}

/* A claim waits up to 2 s for the worker's check of its last commits after a reconnection. That
 * was counted from the refresh's start, not from when the claim began to wait: a refresh that had
 * waited 2 s for another worker's lease failed at once, with "the worker is still checking its
 * last commits", as soon as a reconnection's check began. Here the refresh waits for a lease
 * that ends after 4 s; 2.3 s in, the worker's main connection is dropped, and its check, which
 * finds a kept commit lost, is held by a row lock for 0.6 s. The refresh now waits for it and for
 * the lease, and succeeds. */
static void
test_a_claim_waits_for_the_check_from_when_it_began_to_wait (void **state)
{
    start_one_worker ("chain_check_wait", NULL);
    assert_int_equal (harness_sql (h, "CREATE TEMP TABLE saved AS SELECT * FROM integrations WHERE false;"
                                      " CREATE TEMP TABLE committed (id text, generation bigint, refresh_fingerprint text)"), 0);
    refresh_saving_before ("kept:box");             /* a commit the worker keeps against a failover */
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "wait:box", rt, NULL, NULL);
    free (rt);
    /* a refresh of wait:box under way on another worker for 4 s more */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w9', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = clock_timestamp () + interval '4 seconds'"
                                      " WHERE id = 'wait:box'"), 0);
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int rc = -1;
        json_t *r = harness_ctl_at (h, harness_brokers (h), &rc, "refresh", "--integration", "wait:box", "--timeout",
                                    "15", NULL);
        if (rc != 0)
            fprintf (stderr, "refresh of wait:box: %s: %s\n", itest_code (r),
                     json_string_value (json_object_get (json_object_get (r, "error"), "message")));
        json_decref (r);
        _exit (rc < 0 ? 99 : rc);
    }
    usleep (2300000);                               /* the refresh has waited for the lease 2.3 s */
    /* the commit lost (a failover), its row locked, and the main connection made again: the
     * check finds the row behind, and its write waits for the lock (the batch connection stays:
     * the claims go on it meanwhile, and none meets a connection just dropped) */
    lose_saved_commits ();
    PGconn *locker = lock_row ("kept:box");
    assert_int_equal (harness_sql (h, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE"
                                      " datname = current_database() AND application_name ~ '^ferrule-worker '"), 0);
    usleep (600000);
    unlock_row (locker);
    int rc = ctl_wait (child);
    if (rc != 0)
        fail_msg ("a refresh that waited for a lease, then for the check of the last commits after a reconnection: "
                  "ferrulectl exited with %d (its answer above)", rc);
    wait_log_lines ("w1", "written again from this worker's memory", 1, 10000);
}

/* A claim that waits longer than 2 s for the start-up recovery fails, and says which step holds
 * it. It said "the worker is still recovering its journal" during the release of the earlier
 * run's leases too, which sent an operator to the journal. */
static void
test_a_claim_held_by_the_lease_release_says_so (void **state)
{
    PGconn *locker = start_up_release_held ("chain_startup_release");
    int rc;
    json_t *r = harness_ctl_at (h, harness_brokers (h), &rc, "refresh", "--integration", "asked:box", "--timeout",
                                "10", NULL);
    unlock_row (locker);
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    if (strcmp (itest_code (r), "database_unavailable") != 0 || !message
    ||  !strstr (message, "releasing the refresh leases of its earlier run"))
        fail_msg ("a refresh held 2 s by the release of the earlier run's leases: %s: %s", itest_code (r),
                  message ? message : "(no message)");
    json_decref (r);
}

/* ---- the start-up release on a table larger than one statement may read ---- */

/* A worker releases the leases its earlier run left, and starts refreshing only then. The release
 * was one statement over the whole table (no index finds a lease's owner), which outgrew the
 * statement timeout at a few million rows (about 1 s for ten million at the default 1 s timeout):
 * it failed, was tried again every second, and the worker never refreshed anything. Here the
 * table is a million rows and the timeout 40 ms, which a read of all of it does not fit (96 ms on
 * a quiet machine) and a range of 512 blocks does (6 ms). Leases sit at the table's start,
 * middle and end. */
static void
test_start_up_release_walks_a_large_table (void **state)
{
    start_one_worker ("chain_release_large", "FERRULE_DB_STATEMENT_TIMEOUT_MS", "40", "FERRULE_KEY_STATS_MS", "86400000",
                      NULL);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id, refresh_token, access_token,"
                                      " access_expires_at, access_lifetime_s, route_hash)"
                                      " SELECT 'bulk' || n || ':box', 'fakebox', 1, '\\x01'::bytea, '\\x01'::bytea,"
                                      " now () + interval '1 hour', 3600, n FROM generate_series (1, 1000000) n"), 0);
    assert_int_equal (harness_sql (h, "VACUUM ANALYZE integrations"), 0);
    /* the leases of a run killed during three refreshes */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w1', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = clock_timestamp () + interval '10 minutes'"
                                      " WHERE id IN ('bulk1:box', 'bulk500000:box', 'bulk1000000:box')"), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    /* the earlier run's leases, released within 30 s of the start */
    wait_sql ("SELECT count(*) FROM integrations WHERE lease_owner IS NOT NULL", 0, 30000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'interrupted'"
                                          " AND integration_id IN ('bulk1:box', 'bulk500000:box', 'bulk1000000:box')"), 3);
    /* logged once the release's last range has committed, which the query above may see first */
    itest_wait_log (h, "released 3 refresh leases of an earlier run", 15000);
    assert_int_equal (itest_workdir_contains (h, "released 3 refresh leases of an earlier run"), 1);
}

/* ---- lease tokens of workers that share a pid ---- */

static void
test_same_pid_workers_draw_distinct_lease_tokens (void **state)
{
    char probe [600];
    snprintf (probe, sizeof probe, "%s /bin/true", FERRULE_TEST_PIDNS);
    int st = system (probe);
    if (st != -1 && WIFEXITED (st) && WEXITSTATUS (st) == 77) {
        fprintf (stderr, "skipped: cannot make PID namespaces here (needs root)\n");
        skip ();
    }
    /* anything else is the wrapper failing, not this machine's limits: the sanitized tree once
       skipped this test because LeakSanitizer killed the wrapper */
    if (st != 0)
        fail_msg ("the PID namespace wrapper failed on /bin/true (status %d)", st);
    h = harness_new ("chain_same_pid");
    assert_non_null (h);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_broker (h), 1);
    /* both pid 1, started in the same second: what every pair of containers looks like */
    harness_set_worker_wrapper (h, FERRULE_TEST_PIDNS);
    assert_int_equal (harness_start_worker_on (h, "wA", 1u), 0);
    assert_int_equal (harness_start_worker_on (h, "wB", 2u), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    assert_true (itest_workdir_contains (h, "\"pid\":1,"));
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);
    char *rt1 = grant ("fakebox", NULL, NULL), *rt2 = grant ("fakebox", NULL, NULL);
    import_at (b0, "pidA:box", rt1, NULL, NULL);
    import_at (b1, "pidB:box", rt2, NULL, NULL);
    free (rt1);
    free (rt2);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    pid_t a = ctl_async (b0, "refresh", "pidA:box", NULL, NULL);
    pid_t b = ctl_async (b1, "refresh", "pidB:box", NULL, NULL);
    wait_sql ("SELECT count(*) FROM integrations WHERE lease_owner IS NOT NULL", 2, 5000);
    /* the lease column of either schema (lease_token since 003, lease_id before) */
    long long distinct = harness_sql_int (h, "SELECT count(DISTINCT COALESCE(to_jsonb(i)->>'lease_token', "
                                             "to_jsonb(i)->>'lease_id')) FROM integrations i WHERE lease_owner IS NOT NULL");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);                         /* both leases seen: the calls may end */
    assert_int_equal (ctl_wait (a), 0);
    assert_int_equal (ctl_wait (b), 0);
    assert_int_equal (distinct, 2);
}

/* ---- cache coherence ---- */


static void
test_notification_during_a_statement_reaches_the_cache (void **state)
{
    start_one_worker ("chain_notify", NULL);
    char *rt1 = grant ("fakebox", NULL, NULL), *rt2 = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "nx:box", rt1, NULL, NULL);
    import_at (harness_brokers (h), "ny:box", rt2, NULL, NULL);
    free (rt1);
    free (rt2);
    int rc;
    code_of_ctl (harness_brokers (h), "token", "nx:box", &rc);
    assert_int_equal (rc, 0);
    code_of_ctl (harness_brokers (h), "token", "ny:box", &rc);
    assert_int_equal (rc, 0);
    /* ny: inactive in the database but not in the cache, so a request for it claims the row */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect' WHERE id = 'ny:box'"), 0);
    /* A notification that arrives while the worker's session is busy is sent when the session
     * goes idle; if the worker runs its next statement before it polls again, libpq reads the
     * notification together with that statement's result and the socket never turns readable
     * for it. Here: a request that waits on ny's row, a second request queued behind it, and a
     * change of nx notified meanwhile. */
    PGconn *locker = lock_row ("ny:box");
    pid_t child = ctl_async (harness_brokers (h), "refresh", "ny:box", NULL, NULL);
    usleep (1000000);                          /* the request has reached the worker */
    pid_t behind = ctl_async (harness_brokers (h), "status", "ny:box", NULL, NULL);
    usleep (500000);
    /* while the worker works on ny, nx is disconnected elsewhere and the change notified */
    assert_int_equal (harness_sql (h, "WITH u AS (UPDATE integrations SET status = 'disconnected', "
                                      "generation = generation + 1 WHERE id = 'nx:box' RETURNING id) "
                                      "SELECT pg_notify('ferrule_integrations', 'elsewhere ' || id) FROM u"), 0);
    usleep (300000);
    unlock_row (locker);
    ctl_wait (child);
    ctl_wait (behind);
    usleep (200000);
    const char *code = code_of_ctl (harness_brokers (h), "token", "nx:box", &rc);
    assert_string_equal (code, "disconnected");
}

static void
test_unnotified_change_found_by_revalidation (void **state)
{
    start_one_worker ("chain_revalidate", "FERRULE_CACHE_REVALIDATE_MS", "1000", NULL);
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "rv:box", rt, NULL, NULL);
    free (rt);
    int rc;
    code_of_ctl (harness_brokers (h), "token", "rv:box", &rc);
    assert_int_equal (rc, 0);
    /* a change whose notification is lost */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'disconnected', generation = generation + 1 "
                                      "WHERE id = 'rv:box'"), 0);
    /* within the bound (1 s) plus a pass (1 s) on an idle machine; waited for by what the
     * worker says, not by the clock */
    itest_wait_log (h, "a change notification was lost", 10000);
    const char *code = code_of_ctl (harness_brokers (h), "token", "rv:box", &rc);
    assert_string_equal (code, "disconnected");
}

/* A claim that finds the row inactive takes the row's tokens into the cache to answer with its
 * status. When the stored access token did not open under the configured keys (here: sealed, as
 * the row says, with a key the worker was not given), that failure was ignored: the reply said
 * `integration "ik:box" is active` with needs_reconnect, and the entry stayed active, so the
 * next request was handed the cached token of an integration the database has inactive. It now
 * says that the stored token could not be decrypted, with the code of every such failure. */
static void
test_an_inactive_row_the_keys_do_not_open_says_so (void **state)
{
    start_one_worker ("chain_inactive_key", NULL);
    char *at = NULL;
    char *rt = grant ("fakebox", &at, NULL);
    import_at (harness_brokers (h), "ik:box", rt, at, "3600");
    free (rt);
    free (at);
    int rc;
    code_of_ctl (harness_brokers (h), "token", "ik:box", &rc);
    assert_int_equal (rc, 0);
    /* inactive in the database, not in the cache (no notification): a refresh claims the row */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect', key_id = key_id + 1000 "
                                      "WHERE id = 'ik:box'"), 0);
    json_t *r = harness_ctl_at (h, harness_brokers (h), &rc, "refresh", "--integration", "ik:box", NULL);
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    if (strcmp (itest_code (r), "configuration") != 0 || !message || !strstr (message, "needs_reconnect")
    ||  !strstr (message, "FERRULE_ENCRYPTION_OLD_KEYS"))
        fail_msg ("a refresh of an inactive row whose access token no configured key opens: %s: %s", itest_code (r),
                  message ? message : "(no message)");
    json_decref (r);
    /* and the cached token of the integration the database has inactive is not handed out */
    const char *code = code_of_ctl (harness_brokers (h), "token", "ik:box", &rc);
    if (rc == 0)
        fail_msg ("a token request after it was answered from the cache");
    assert_string_equal (code, "configuration");
}

/* ---- refreshes sized by the token's own lifetime ---- */

static void
test_fresh_import_is_not_refreshed (void **state)
{
    start_one_worker ("chain_lifetime", NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 120));
    char *at = NULL;
    char *rt = grant ("fakebox", &at, NULL);
    import_at (harness_brokers (h), "life:box", rt, at, "120");
    free (rt);
    free (at);
    int rc;
    int64_t asked_ms = clock_wall_ms ();
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "life:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (seconds_left (t, asked_ms) > 110);
    json_decref (t);
    usleep (500000);                           /* room for a background refresh, if one started */
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT access_lifetime_s FROM integrations WHERE id = 'life:box'"), 120);
}

static void
test_min_valid_honoured_after_a_refresh (void **state)
{
    start_one_worker ("chain_min_valid", NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 120));
    char *rt = grant ("fakebox", NULL, NULL);
    import_at (harness_brokers (h), "mv:box", rt, NULL, NULL);
    free (rt);
    int rc;
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "mv:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    sleep (3);
    int64_t asked_ms = clock_wall_ms ();
    t = harness_ctl (h, &rc, "token", "--integration", "mv:box", "--min-valid", "119", NULL);
    assert_int_equal (rc, 0);
    long long left = seconds_left (t, asked_ms);
    json_decref (t);
    if (left < 118)     /* 119 promised; a second of rounding between the two clocks */
        fail_msg ("min_valid 119 answered a token with %lld s left", left);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    /* the allowance stays where it belongs: min_valid beyond the whole lifetime is not refreshed
     * again and again */
    t = harness_ctl (h, &rc, "token", "--integration", "mv:box", "--min-valid", "600", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
}

/* A request that joins a refresh whose claim is already in the database, asking for a longer
 * min_valid than the claim was sent with: the claim can answer that the stored token is fresh
 * enough for the first request, and the late one must not be handed that token when it lasts less
 * than it asked. A session holding token_chain's lock keeps the claim waiting in the server while
 * the second request joins; the stored expiry is moved on behind the cache's back, so that the
 * claim answers fresh. */
static void
test_late_waiter_min_valid_honoured (void **state)
{
    start_one_worker ("chain_late_min_valid", "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2500", "FERRULE_DB_LOCK_TIMEOUT_MS", "2000",
                      NULL);
    char *at = NULL;
    char *rt = grant ("fakebox", &at, NULL);
    import_at (harness_brokers (h), "late:box", rt, at, "200");
    free (rt);
    free (at);
    int rc;
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "late:box", "--min-valid", "30", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    /* the row's token lasts 400 s; the worker's cache still says 200 (no notification) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_expires_at = now () + interval '400 seconds' "
                                      "WHERE id = 'late:box'"), 0);
    PGconn *c = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (c), CONNECTION_OK);
    PGresult *r = PQexec (c, "BEGIN; LOCK TABLE token_chain IN ACCESS EXCLUSIVE MODE");
    assert_int_equal (PQresultStatus (r), PGRES_COMMAND_OK);
    PQclear (r);
    pid_t first = token_async ("late:box", 300);     /* 200 s cached: a claim for 300 s goes out */
    wait_sql ("SELECT count (*) FROM pg_locks WHERE NOT granted AND relation = 'token_chain'::regclass", 1, 5000);
    pid_t late = token_async ("late:box", 500);      /* joins it: the stored 400 s is not enough */
    usleep (500000);
    PQclear (PQexec (c, "COMMIT"));
    PQfinish (c);
    assert_int_equal (ctl_wait (first), 0);
    assert_int_equal (ctl_wait (late), 0);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
}

/* Imports id with a new fakebox grant: with its access token lasting expires_in seconds, or
 * without an access token (expires_in NULL). */
static void
import_grant (const char *id, const char *expires_in)
{
    char *at = NULL;
    char *rt = grant ("fakebox", expires_in ? &at : NULL, NULL);
    import_at (harness_brokers (h), id, rt, at, expires_in);
    free (rt);
    free (at);
}

/* Waits until id's refresh has taken the lease: its call is at the provider. */
static void
wait_claimed (const char *id)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count (*) FROM integrations WHERE id = '%s' AND lease_owner IS NOT NULL", id);
    wait_sql (sql, 1, 5000);
}

/* A refresh whose compare-and-set is lost to a concurrent change serves what the change stored,
 * but only to the waiters it lasts for: here an import of a token lasting 100 s lands while a
 * refresh for a min_valid of 300 s is at the provider. */
static void
test_conflict_reply_honours_min_valid (void **state)
{
    start_one_worker ("chain_conflict_min_valid", NULL);
    import_grant ("cmv:box", "200");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    pid_t asked = token_async ("cmv:box", 300);
    wait_claimed ("cmv:box");                       /* the call is at the provider for 3 s */
    import_grant ("cmv:box", "100");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);                         /* the import landed during the call */
    assert_int_equal (ctl_wait (asked), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count (*) FROM token_chain WHERE integration_id = 'cmv:box' "
                                          "AND outcome = 'conflict'"), 1);
}

/* A lost compare-and-set whose record cannot be written at once (here another session holds the
 * row, so the record's chain row waits for its key lock past lock_timeout) is written once it can
 * be: the conflict is in the chain, not dropped with the first failure. */
static void
test_conflict_record_retried (void **state)
{
    start_one_worker ("chain_conflict_retried", NULL);
    import_grant ("crr:box", NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    pid_t asked = ctl_async (harness_brokers (h), "refresh", "crr:box", NULL, NULL);
    wait_claimed ("crr:box");
    import_grant ("crr:box", NULL);                 /* the refresh's commit will lose */
    PGconn *lock = lock_row ("crr:box");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);                         /* the import landed and the row is held */
    itest_wait_log (h, "lost to a concurrent change", 10000);
    /* the record's first try met the lock (past lock_timeout), and another is due */
    itest_wait_log (h, "could not record the lost compare-and-set (tried again shortly)", 20000);
    int rc = ctl_wait (asked);
    unlock_row (lock);
    /* the caller was told the truth: the stored tokens could not be read, a transient error */
    assert_int_equal (rc, 5);
    wait_sql ("SELECT count (*) FROM token_chain WHERE integration_id = 'crr:box' AND outcome = 'conflict'", 1, 10000);
}

/* A forced refresh whose compare-and-set is lost to an import of a refresh token alone (no access
 * token stored) claims again and refreshes, rather than answering that there is no access token
 * to serve. */
static void
test_conflict_with_no_access_token_claims_again (void **state)
{
    start_one_worker ("chain_conflict_no_at", NULL);
    import_grant ("cna:box", NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    pid_t asked = ctl_async (harness_brokers (h), "refresh", "cna:box", NULL, NULL);
    wait_claimed ("cna:box");
    import_grant ("cna:box", NULL);                 /* a refresh token, no access token */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);                         /* the import landed during the call */
    int rc = ctl_wait (asked);
    printf ("the forced refresh answered with exit status %d\n", rc);
    assert_int_equal (rc, 0);
    assert_int_equal (harness_sql_int (h, "SELECT count (*) FROM token_chain WHERE integration_id = 'cna:box' "
                                          "AND outcome = 'conflict'"), 1);
}

static void
test_sweep_rotates_about_once_per_lifetime (void **state)
{
    start_one_worker ("chain_sweep", "FERRULE_SWEEP_MS", "1000", "FERRULE_SWEEP_HORIZON_S", "300", NULL);
    const int ttl = 6, seconds = 24;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", ttl));
    char *at = NULL;
    char *rt = grant ("fakebox", &at, NULL);
    import_at (harness_brokers (h), "idle:box", rt, at, "6");
    free (rt);
    free (at);
    sleep ((unsigned) seconds);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    double per_hour = (double) calls * 3600.0 / seconds, lifetimes_per_hour = 3600.0 / ttl;
    fprintf (stderr, "sweep: %lld rotations in %d s of a %d s token: %.0f an hour, %.2f per lifetime\n",
             calls, seconds, ttl, per_hour, per_hour / lifetimes_per_hour);
    assert_true (calls >= 2);                      /* it is kept fresh... */
    assert_true (per_hour <= 1.6 * lifetimes_per_hour);   /* ...about once per lifetime, not every pass */
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_commit_retried_on_read_only_database, teardown),
        cmocka_unit_test_teardown (test_commit_failures_are_logged_once_a_second, teardown),
        cmocka_unit_test_teardown (test_read_only_server_said_not_every_second, teardown),
        cmocka_unit_test_teardown (test_refused_connections_said_not_every_second, teardown),
        cmocka_unit_test_teardown (test_refused_at_start_said_once, teardown),
        cmocka_unit_test_teardown (test_commit_lost_by_a_failover_is_written_again, teardown),
        cmocka_unit_test_teardown (test_commit_lost_by_a_failover_survives_a_worker_restart, teardown),
        cmocka_unit_test_teardown (test_commits_lost_on_two_workers_are_written_again_in_order, teardown),
        cmocka_unit_test_teardown (test_a_wait_for_another_workers_commit_ends_with_the_window, teardown),
        cmocka_unit_test_teardown (test_a_claim_waits_for_the_check_from_when_it_began_to_wait, teardown),
        cmocka_unit_test_teardown (test_a_claim_held_by_the_lease_release_says_so, teardown),
        cmocka_unit_test_teardown (test_commits_lost_between_one_workers_own_are_written_again, teardown),
        cmocka_unit_test_teardown (test_commit_settled_by_the_replay_is_kept_against_a_failover, teardown),
        cmocka_unit_test_teardown (test_replay_waits_for_another_workers_lost_commit, teardown),
        cmocka_unit_test_teardown (test_a_replays_wait_ends_with_the_window, teardown),
        cmocka_unit_test_teardown (test_replay_of_a_commit_the_row_moved_on_from_records_no_conflict, teardown),
        cmocka_unit_test_teardown (test_failover_rewrite_refused_said_not_every_second, teardown),
        cmocka_unit_test_teardown (test_rotated_token_journaled_once_the_file_takes_it, teardown),
        cmocka_unit_test_teardown (test_rotated_token_the_journal_never_took_is_said_lost_at_exit, teardown),
        cmocka_unit_test_teardown (test_journal_replay_keeps_the_api_base_url, teardown),
        cmocka_unit_test_teardown (test_row_lock_does_not_stall_the_worker, teardown),
        cmocka_unit_test_teardown (test_worker_without_database_does_not_spin, teardown),
        cmocka_unit_test_teardown (test_lease_takeover_keeps_the_new_token, teardown),
        cmocka_unit_test_teardown (test_journal_replay_after_takeover_keeps_the_new_token, teardown),
        cmocka_unit_test_teardown (test_takeover_of_a_reused_token_keeps_needs_reconnect, teardown),
        cmocka_unit_test_teardown (test_a_stale_failure_is_recorded_at_its_own_generation, teardown),
        cmocka_unit_test_teardown (test_a_failed_conflict_record_of_a_rotation_is_tried_again, teardown),
        cmocka_unit_test_teardown (test_replay_blocked_by_a_row_lock_does_not_stall_cache_hits, teardown),
        cmocka_unit_test_teardown (test_a_failing_journal_record_holds_only_its_integration, teardown),
        cmocka_unit_test_teardown (test_refresh_waits_for_the_start_up_recovery, teardown),
        cmocka_unit_test_teardown (test_start_up_release_walks_a_large_table, teardown),
        cmocka_unit_test_teardown (test_same_pid_workers_draw_distinct_lease_tokens, teardown),
        cmocka_unit_test_teardown (test_notification_during_a_statement_reaches_the_cache, teardown),
        cmocka_unit_test_teardown (test_unnotified_change_found_by_revalidation, teardown),
        cmocka_unit_test_teardown (test_an_inactive_row_the_keys_do_not_open_says_so, teardown),
        cmocka_unit_test_teardown (test_fresh_import_is_not_refreshed, teardown),
        cmocka_unit_test_teardown (test_min_valid_honoured_after_a_refresh, teardown),
        cmocka_unit_test_teardown (test_late_waiter_min_valid_honoured, teardown),
        cmocka_unit_test_teardown (test_conflict_reply_honours_min_valid, teardown),
        cmocka_unit_test_teardown (test_conflict_record_retried, teardown),
        cmocka_unit_test_teardown (test_conflict_with_no_access_token_claims_again, teardown),
        cmocka_unit_test_teardown (test_sweep_rotates_about_once_per_lifetime, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
