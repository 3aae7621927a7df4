/* test_group_commit.c - the claims and the commits of one loop turn go to the database together
 * (one transaction, one round trip, one WAL flush each way), and that changes no guarantee:
 *   - forty integrations refreshed at once: every one committed exactly once, in batches;
 *   - one integration's row locked between its claim and its commit: the batch fails as a whole,
 *     the other integrations' tokens are committed one by one at once, the locked one is kept and
 *     committed when the lock goes, nothing is lost and nothing is refreshed twice;
 *   - a claim whose answer was lost leaves no lease that holds up the next one;
 *   - a group of claims that fails as a whole is claimed again one by one, each its own batch,
 *     and the loop goes on serving cached tokens meanwhile;
 *   - a turn's claims and commits are planned once for any batch (generic plans) and find their
 *     rows through the primary key, whatever the size of the table;
 *   - a commit the database made whose answer was lost with the connection, sent again, is known
 *     for the refresh's own: no conflict is recorded;
 *   - a refresh at the provider while a failover loses the worker's last commits commits after
 *     them once they are written again, also when they are written at an earlier generation;
 *   - the hold a worker takes on a row while it waits to write a lost commit again is a lease
 *     taken only where a claim could take one, and a claim then waits for it;
 *   - a connect's upsert whose answer was lost, sent again, writes nothing a second time, and
 *     does not undo what another worker changed meanwhile (a disconnect). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <math.h>
#include "client.h"
#include "clock.h"
#include "dbproxy.h"
#include "itest.h"
#include "store_sql.h"

static harness_t *h;

static int
teardown (void **state)
{
    (void) state;
    return h ? itest_teardown (&h) : 0;
}

/* A service of one broker and one worker w1, fakebox answering after latency_ms; the environment
 * variables that follow as name, value pairs (NULL-terminated) set for both first. */
static void
start_with (const char *name, int latency_ms, ...)
{
    h = harness_new (name);
    assert_non_null (h);
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");     /* the batch sizes are in /metrics */
    va_list ap;
    va_start (ap, latency_ms);
    for (const char *env = va_arg (ap, const char *); env; env = va_arg (ap, const char *))
        harness_set_env (h, env, va_arg (ap, const char *));
    va_end (ap);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    json_t *settings = json_pack ("{s:i}", "latency_ms", latency_ms);
    itest_fake_config (h, "fakebox", settings);
}

static void
start (const char *name, int latency_ms)
{
    start_with (name, latency_ms, NULL);
}

/* n integrations "<prefix><i>", imported with a refresh token and no access token, so the first
 * token request refreshes each; ids into ids (caller frees each). */
static void
import_many (const char *prefix, size_t n, char **ids)
{
    for (size_t i = 0; i < n; i++) {
        assert_true (asprintf (&ids [i], "%s%zu", prefix, i) > 0);
        char *rt = itest_grant (h, "fakebox", "[]");
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
}

static long long
count_sql (const char *fmt, const char *arg)
{
    char sql [512];
    snprintf (sql, sizeof sql, fmt, arg);
    return harness_sql_int (h, sql);
}

static void
test_one_turn_shares_a_transaction (void **state)
{
    (void) state;
    enum { N = 40 };
    char *ids [N];
    start ("group_commit", 300);
    import_many ("gc:", N, ids);
    /* the answers come back together, however the claims spread the calls out (under ASan on a
     * slow disk a latency alone left them spread over many loop turns) */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "answer_together", N));
    /* a histogram nothing was observed in yet is not printed: 0 then */
    double claims0 = fmax (0, itest_metric (h, "w1", "ferrule_worker_claim_batch_size_count"));
    double commits0 = fmax (0, itest_metric (h, "w1", "ferrule_worker_commit_batch_size_count"));
    double committed0 = fmax (0, itest_metric (h, "w1", "ferrule_worker_commit_batch_size_sum"));

    const char *endpoint = harness_broker_frontend (h, 0);
    json_t *replies = itest_storm (&endpoint, 1, (const char *const *) ids, N, N, 30000);
    assert_non_null (replies);
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get (replies, i);
        if (!r || !json_is_true (json_object_get (r, "ok")))
            fail_msg ("request %zu for %s: %s", i, ids [i], r ? itest_code (r) : "no reply");
    }
    json_decref (replies);

    /* every one refreshed exactly once and stored: generation 1 (import) + 1 */
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id LIKE '%s%%' AND generation = 2", "gc:"), N);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id LIKE '%s%%'"
                                 " AND outcome = 'refreshed'", "gc:"), N);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id LIKE '%s%%'"
                                 " AND outcome = 'conflict'", "gc:"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);

    /* and they went to the database together */
    double claims = itest_metric (h, "w1", "ferrule_worker_claim_batch_size_count") - claims0;
    double commits = itest_metric (h, "w1", "ferrule_worker_commit_batch_size_count") - commits0;
    double committed = itest_metric (h, "w1", "ferrule_worker_commit_batch_size_sum") - committed0;
    fprintf (stderr, "%d refreshes: %.0f claim transactions, %.0f commit transactions\n", N, claims, commits);
    assert_true (committed == N);
    assert_true (claims >= 1 && claims <= N / 2);      /* on average two or more claims per transaction */
    assert_true (commits >= 1 && commits <= N / 2);
    for (size_t i = 0; i < N; i++)
        free (ids [i]);
}

/* Waits (up to 20 s) until integration id holds a refresh lease: claimed, its provider call in
 * flight. 0 when it does. For a child: nothing here fails the test. */
static int
wait_for_lease (PGconn *c, const char *id)
{
    const char *values [] = { id };
    int64_t until = clock_mono_ms () + 20000;
    for (;;) {
        if (clock_mono_ms () > until)
            return -1;
        PGresult *r = PQexecParams (c, "SELECT lease_owner IS NOT NULL FROM integrations WHERE id = $1", 1, NULL,
                                    values, NULL, NULL, 0);
        int leased = PQresultStatus (r) == PGRES_TUPLES_OK && PQntuples (r) == 1
                  && strcmp (PQgetvalue (r, 0, 0), "t") == 0;
        PQclear (r);
        if (leased)
            return 0;
        usleep (10000);
    }
}

/* Forks: NULL in the parent (*pid the child), a connection to the test's database in the child
 * (which exits 2 when there is none). */
static PGconn *
fork_connected (pid_t *pid)
{
    *pid = fork ();
    assert_true (*pid >= 0);
    if (*pid > 0)
        return NULL;
    PGconn *c = PQconnectdb (harness_database_url (h));
    if (PQstatus (c) != CONNECTION_OK)
        _exit (2);
    return c;
}

/* A lock held in a child ends after its hold or, sooner, once the test has seen what the lock
 * was for (release_lock): the hold is an upper bound, sized for a loaded machine, not a wait. */
static volatile sig_atomic_t release_asked;

static void
on_release (int sig)
{
    (void) sig;
    release_asked = 1;
}

/* In a child: sleeps until hold_ms has passed or the parent asked for the lock to end. */
static void
hold_for (int hold_ms)
{
    int64_t until = clock_mono_ms () + hold_ms;
    while (!release_asked && clock_mono_ms () < until)
        usleep (10000);
}

/* In a child: locks integration id's row for hold_ms (or until release_lock) in a session of its
 * own, at once or, with after_claim, once the row holds a refresh lease (claimed, its provider
 * call in flight). Exits 0 when it did. */
static pid_t
lock_in_child (const char *id, int hold_ms, int after_claim)
{
    pid_t pid;
    PGconn *c = fork_connected (&pid);
    if (!c)
        return pid;
    signal (SIGUSR1, on_release);        /* before the lock: the parent asks only once it saw it */
    if (after_claim && wait_for_lease (c, id) != 0)
        _exit (3);
    const char *values [] = { id };
    PQclear (PQexec (c, "BEGIN"));
    PGresult *r = PQexecParams (c, "SELECT 1 FROM integrations WHERE id = $1 FOR UPDATE", 1, NULL, values, NULL,
                                NULL, 0);
    int locked = PQresultStatus (r) == PGRES_TUPLES_OK;
    PQclear (r);
    hold_for (hold_ms);
    PQclear (PQexec (c, "COMMIT"));
    PQfinish (c);
    _exit (locked ? 0 : 4);
}

static void
test_locked_row_holds_up_only_itself (void **state)
{
    (void) state;
    enum { N = 10 };
    char *ids [N];
    start ("group_commit_lock", 2000);    /* claims, then 2 s of provider calls, then the commits */
    import_many ("gl:", N, ids);

    pid_t locker = lock_in_child ("gl:3", 4000, 1);
    const char *endpoint = harness_broker_frontend (h, 0);
    int64_t t0 = clock_mono_ms ();
    json_t *replies = itest_storm (&endpoint, 1, (const char *const *) ids, N, N, 30000);
    int64_t took = clock_mono_ms () - t0;
    assert_non_null (replies);
    int status = 0;
    assert_int_equal (waitpid (locker, &status, 0), locker);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);             /* the lock fell between claim and commit */
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get (replies, i);
        if (i == 3)
            continue;                                        /* it waited for the lock: either answer */
        if (!r || !json_is_true (json_object_get (r, "ok")))
            fail_msg ("request for %s: %s", ids [i], r ? itest_code (r) : "no reply");
    }
    json_decref (replies);
    fprintf (stderr, "the storm took %lld ms with gl:3 locked\n", (long long) took);

    /* the locked one's new tokens were kept and committed once the lock went */
    int64_t until = clock_mono_ms () + 20000;
    while (count_sql ("SELECT count(*) FROM integrations WHERE id = '%s' AND generation = 2", "gl:3") != 1
           && clock_mono_ms () < until)
        usleep (100000);
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id LIKE '%s%%' AND generation = 2", "gl:"), N);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id LIKE '%s%%'"
                                 " AND outcome = 'refreshed'", "gl:"), N);
    assert_true (itest_workdir_contains (h, "group commit of"));
    /* the failed group's transaction was rolled back (by the batch after it, not by a statement the
     * loop waited for): no session of the workers is left in an aborted one */
    assert_int_equal (count_sql ("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%s%%'"
                                 " AND datname = current_database () AND state = 'idle in transaction (aborted)'", "ferrule-worker"), 0);
    /* and it works: the stored refresh token is the one the provider holds */
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "gl:3", NULL);
    if (rc != 0)
        fail_msg ("refresh of gl:3 after the lock: %s", itest_code (r));
    json_decref (r);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    for (size_t i = 0; i < N; i++)
        free (ids [i]);
}

/* In a child: waits until integration id holds a refresh lease, then imports refresh_token for
 * it through the service, as an operator's import landing during the refresh does: the refresh's
 * compare-and-set will lose. Exits 0 when the import succeeded. */
static pid_t
import_after_claim (const char *id, const char *refresh_token)
{
    pid_t pid;
    PGconn *c = fork_connected (&pid);
    if (!c)
        return pid;
    int leased = wait_for_lease (c, id);
    PQfinish (c);
    if (leased != 0)
        _exit (3);
    _exit (itest_import (h, id, "fakebox", refresh_token) == 0 ? 0 : 4);
}

static void
child_ok (pid_t pid, const char *what)
{
    int status = 0;
    assert_int_equal (waitpid (pid, &status, 0), pid);
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
        fail_msg ("%s: the child ended with status %d", what, status);
}

/* Ends lock_in_child's lock now, and checks that the child held it. */
static void
release_lock (pid_t locker)
{
    assert_int_equal (kill (locker, SIGUSR1), 0);
    child_ok (locker, "the lock");
}

/* A request whose deadline comes before a claim gives up on a locked row (after a second) is
 * answered by its worker just before that deadline, saying the row is locked: the broker's answer
 * at the deadline said only that the worker had not answered. */
static void
test_a_request_behind_a_locked_row_is_told_so (void **state)
{
    (void) state;
    char *ids [1];
    start ("group_commit_locked", 0);
    import_many ("glr:", 1, ids);
    pid_t locker = lock_in_child (ids [0], 3000, 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                                         " AND query LIKE '%FOR UPDATE%' AND datname = current_database ()", 1, 20000), 1);
    json_t *r = itest_call_once (harness_brokers (h), "token", ids [0], 800);
    assert_non_null (r);
    itest_assert_timeout_says (r, "its row has been locked by another database session", "a request behind a locked row");
    json_decref (r);
    release_lock (locker);
    /* the lock gone, the same request is served */
    int rc = -1;
    r = harness_ctl (h, &rc, "token", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    free (ids [0]);
}

/* A claim waits for its worker's start-up recovery (the journal replayed, the earlier run's leases
 * released), for up to 2 s; a request whose deadline comes first is answered by the worker with
 * that, not left to the broker's "did not answer". Here the earlier run left a lease on a row that
 * another session holds locked for 4 s, so the release fails on lock_timeout (500 ms) and is tried
 * again until the lock goes. */
static void
test_a_request_during_the_start_up_recovery_is_told_so (void **state)
{
    (void) state;
    char *ids [2];
    start_with ("group_commit_startup", 0, "FERRULE_DB_LOCK_TIMEOUT_MS", "500", NULL);
    import_many ("gsu:", 2, ids);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w1', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = now () + interval '1 minute' WHERE id = 'gsu:0'"), 0);
    /* held long enough for a worker's start and a 1 s request on a loaded machine under ASan */
    pid_t locker = lock_in_child (ids [0], 7000, 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                                         " AND query LIKE '%FOR UPDATE%' AND datname = current_database ()", 1, 20000), 1);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    json_t *r = itest_call_once (harness_brokers (h), "token", ids [1], 1000);
    assert_non_null (r);
    itest_assert_timeout_says (r, "has not finished its start-up recovery (releasing the refresh leases of its "
                               "earlier run)", "a request during the start-up recovery");
    json_decref (r);
    itest_wait_log (h, "; will retry in a second, from block 0, 512 blocks at a time", 10000);
    release_lock (locker);
    /* the lock gone, the recovery ends: the lease is released, its refresh recorded as interrupted,
     * and the request is served */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'gsu:0'"
                                         " AND outcome = 'interrupted'", 1, 20000), 1);
    /* a row lock is not the range's size: each try waits a second, the range kept (it used to be
     * cut to a quarter and tried again at once, each time, down to 16 blocks) */
    unsigned long long more;
    assert_true (itest_log_lines (h, "w1", "; will retry in a second, from block 0, 512 blocks at a time", &more) >= 1);
    assert_int_equal (itest_log_lines (h, "w1", "will retry at once", &more), 0);
    int rc = -1;
    r = harness_ctl (h, &rc, "token", "--integration", ids [1], NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    free (ids [0]);
    free (ids [1]);
}

/* The same for a request whose refresh has its provider's answer and waits for its commit: here
 * the row is locked after the claim, and the commit waits for the lock (up to a lock_timeout of
 * 900 ms, twice: the group's try and its own). The new tokens are committed once the lock goes. */
static void
test_a_request_behind_a_slow_commit_is_told_so (void **state)
{
    (void) state;
    char *ids [1];
    start_with ("group_commit_slow_commit", 300, "FERRULE_DB_LOCK_TIMEOUT_MS", "900", NULL);
    import_many ("gsc:", 1, ids);
    pid_t locker = lock_in_child (ids [0], 2500, 1);
    json_t *r = itest_call_once (harness_brokers (h), "token", ids [0], 1000);
    assert_non_null (r);
    itest_assert_timeout_says (r, "the provider answered, and the database has not committed the new tokens",
                               "a request behind a slow commit");
    json_decref (r);
    release_lock (locker);
    int rc = -1;
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM integrations WHERE id = 'gsc:0' AND generation = 2", 1,
                                      20000), 1);
    r = harness_ctl (h, &rc, "token", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    assert_false (json_is_true (json_object_get (r, "refreshed")));
    json_decref (r);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    free (ids [0]);
}

/* The same for a request that joins a refresh whose provider refused it (503) while the failure
 * waits to be recorded: here the row is locked after the claim, and the record waits for the lock
 * (lock_timeout 2.6 s, then again: the request is sent about 1.2 s after the claim, and answered
 * 0.75 s later, well before the first try fails at 3.6 s). The failure is recorded once the lock goes. */
static void
test_a_request_behind_a_failure_being_recorded_is_told_so (void **state)
{
    (void) state;
    char *ids [1];
    start_with ("group_commit_recording", 1000, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2700",
                "FERRULE_DB_LOCK_TIMEOUT_MS", "2600", NULL);
    import_many ("grec:", 1, ids);
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    static const char series [] = "ferrule_worker_provider_errors_total{provider=\"fakebox\",class=\"transient\"}";
    double errors0 = fmax (0, itest_metric (h, "w1", series));
    pid_t first = fork ();
    if (first == 0) {
        int rc;
        json_decref (harness_ctl (h, &rc, "token", "--integration", ids [0], "--timeout", "10", NULL));
        _exit (0);
    }
    pid_t locker = lock_in_child (ids [0], 5500, 1);
    /* the provider's answer is in (published every 100 ms): the record waits for the lock */
    for (int waited = 0; fmax (0, itest_metric (h, "w1", series)) < errors0 + 1 && waited < 20000; waited += 50)
        usleep (50 * 1000);
    assert_true (itest_metric (h, "w1", series) >= errors0 + 1);
    json_t *r = itest_call_once (harness_brokers (h), "token", ids [0], 1000);
    assert_non_null (r);
    itest_assert_timeout_says (r, "provider \"fakebox\" answered the refresh call, the attempt failed (transient), "
                               "and the database has not recorded that outcome yet",
                               "a request behind a failure being recorded");
    json_decref (r);
    itest_wait_log (h, "could not record the failed refresh (tried again in 250 ms): ", 10000);
    release_lock (locker);
    child_ok (first, "the first request");
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'grec:0'"
                                         " AND outcome = 'transient'", 1, 20000), 1);
    /* the record's failed try says when it is tried again, not that the database was away */
    unsigned long long more;
    assert_true (itest_log_lines (h, "w1", "could not record the failed refresh (tried again in 250 ms): ", &more)
                 >= 1);
    assert_int_equal (itest_log_lines (h, "w1", "once the database is back", &more), 0);
    free (ids [0]);
}

/* The same for a request that joins a refresh whose compare-and-set was lost (an import landed
 * during its provider call) while the conflict is being recorded: here the conflict's chain row
 * takes 2.2 s to write (a trigger of this test's own sleeps in it). The refresh then claims again
 * with the imported token and is served. */
static void
test_a_request_behind_a_lost_compare_and_set_is_told_so (void **state)
{
    (void) state;
    char *ids [1];
    start_with ("group_commit_conflicted", 1000, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2700", NULL);
    import_many ("gcf:", 1, ids);
    assert_int_equal (harness_sql (h, "CREATE FUNCTION slow_conflict () RETURNS trigger LANGUAGE plpgsql AS"
                                      " $$ BEGIN PERFORM pg_sleep (2.2); RETURN NEW; END $$"), 0);
    assert_int_equal (harness_sql (h, "CREATE TRIGGER slow_conflict BEFORE INSERT ON token_chain FOR EACH ROW"
                                      " WHEN (NEW.outcome = 'conflict') EXECUTE FUNCTION slow_conflict ()"), 0);
    char *overtaking = itest_grant (h, "fakebox", "[]");
    pid_t first = fork ();
    if (first == 0) {
        int rc;
        json_t *r = harness_ctl (h, &rc, "token", "--integration", ids [0], "--timeout", "15", NULL);
        json_decref (r);
        _exit (rc == 0 ? 0 : 5);
    }
    pid_t importer = import_after_claim (ids [0], overtaking);
    child_ok (importer, "the import during the refresh");
    /* the provider's answer lost its compare-and-set: the conflict's record sleeps */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                                         " AND query LIKE '%conflict%' AND datname = current_database ()", 1, 20000), 1);
    json_t *r = itest_call_once (harness_brokers (h), "token", ids [0], 1000);
    assert_non_null (r);
    itest_assert_timeout_says (r, "this refresh's compare-and-set lost), and the database has not yet recorded that "
                               "conflict", "a request behind a lost compare-and-set");
    json_decref (r);
    child_ok (first, "the first request");
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'gcf:0'"
                                          " AND outcome = 'conflict'"), 1);
    free (overtaking);
    free (ids [0]);
}

/* The claims of a batch are one statement over arrays, and so are its commits (worker/store_sql.h):
 * the database answers each claim and each commit with its place in the arrays. Every refresh of
 * a storm gets its own outcome and its own integration's tokens, whatever the others' are: each
 * integration holds a grant of a scope of its own, which the provider's answers carry, and among
 * them one needs a reconnect, one's row is locked by another session when its claim comes, and
 * one's compare-and-set is lost to an import that lands during its provider call. */
static void
test_each_refresh_of_a_batch_gets_its_own_answer (void **state)
{
    (void) state;
    enum { N = 24, INACTIVE = 5, LOCKED = 3, OVERTAKEN = 9 };
    char *ids [N];
    start ("group_commit_own_answers", 3000);     /* the import lands during the provider calls */
    for (size_t i = 0; i < N; i++) {
        char scopes [64];
        assert_true (asprintf (&ids [i], "gw:%zu", i) > 0);
        snprintf (scopes, sizeof scopes, "[\"own%zu\"]", i);
        char *rt = itest_grant (h, "fakebox", scopes);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect' WHERE id = 'gw:5'"), 0);
    char *overtaking = itest_grant (h, "fakebox", "[\"own9b\"]");
    double claims0 = fmax (0, itest_metric (h, "w1", "ferrule_worker_claim_batch_size_count"));
    double claimed0 = fmax (0, itest_metric (h, "w1", "ferrule_worker_claim_batch_size_sum"));

    pid_t importer = import_after_claim (ids [OVERTAKEN], overtaking);
    pid_t locker = lock_in_child (ids [LOCKED], 500, 0);
    const char *endpoint = harness_broker_frontend (h, 0);
    json_t *replies = itest_storm (&endpoint, 1, (const char *const *) ids, N, N, 30000);
    assert_non_null (replies);
    child_ok (importer, "the import during the refresh");
    child_ok (locker, "the lock of the row");

    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get (replies, i);
        if (!r)
            fail_msg ("no reply for %s", ids [i]);
        if (i == INACTIVE) {
            assert_string_equal (itest_code (r), "needs_reconnect");
            continue;
        }
        if (i == LOCKED && !json_is_true (json_object_get (r, "ok"))) {
            /* its claim found the row locked: tried again, and given up after a second */
            assert_string_equal (itest_code (r), "database_unavailable");
            continue;
        }
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("request for %s: %s", ids [i], itest_code (r));
        char want [32];
        if (i == OVERTAKEN)
            snprintf (want, sizeof want, "own9b");          /* the import's grant, refreshed again */
        else
            snprintf (want, sizeof want, "own%zu", i);
        char *scopes = itest_token_scopes (h, "fakebox", json_string_value (json_object_get (r, "access_token")) ?: "");
        if (!scopes || strcmp (scopes, want) != 0)
            fail_msg ("%s was answered with the access token of a grant of scopes \"%s\", not its own (%s)", ids [i],
                      scopes ? scopes : "(not a live token)", want);
        free (scopes);
    }
    json_decref (replies);

    /* stored under their own integrations too, each once */
    for (size_t i = 0; i < N; i++) {
        char sql [256];
        if (i == INACTIVE || i == LOCKED)
            continue;
        snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE id = '%s'"
                  " AND array_to_string (scopes, ' ') = 'own%s'", ids [i], i == OVERTAKEN ? "9b" : ids [i] + 3);
        if (harness_sql_int (h, sql) != 1)
            fail_msg ("%s does not hold its own grant's scopes", ids [i]);
    }
    /* the lost compare-and-set was that one refresh's, and no other's */
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id LIKE '%s%%'"
                                 " AND outcome = 'conflict'", "gw:"), 1);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                                 " AND outcome = 'conflict'", ids [OVERTAKEN]), 1);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id LIKE '%s%%'"
                                 " AND outcome = 'refreshed' AND integration_id NOT IN ('gw:3', 'gw:5', 'gw:9')", "gw:"),
                      N - 3);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    /* and the claims went to the database in groups */
    double claims = itest_metric (h, "w1", "ferrule_worker_claim_batch_size_count") - claims0;
    double claimed = itest_metric (h, "w1", "ferrule_worker_claim_batch_size_sum") - claimed0;
    fprintf (stderr, "%.0f claims in %.0f claim transactions\n", claimed, claims);
    assert_true (claims >= 1 && claimed / claims >= 2);
    free (overtaking);
    for (size_t i = 0; i < N; i++)
        free (ids [i]);
}

/* A claim batch cut off (its deadline passed, or the connection broke) may still have been
 * committed by the server: the worker then holds a lease under its own id whose token it never
 * read. The next claim of that worker takes the orphan over at once; waiting for it to expire
 * (FERRULE_LEASE_MS) made the integration unrefreshable for that long (seen in the benchmark's
 * database stall: two refreshes timed out after 30 s). */
static void
test_orphan_lease_of_a_lost_claim_is_taken_over (void **state)
{
    (void) state;
    char *ids [1];
    start ("group_commit_orphan", 0);
    import_many ("go:", 1, ids);
    /* as a lost claim leaves it: this worker's id, a token nobody holds, live for a minute */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w1', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = clock_timestamp () + interval '60 seconds'"
                                      " WHERE id = 'go:0'"), 0);
    int64_t t0 = clock_mono_ms ();
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "go:0", NULL);
    int64_t took = clock_mono_ms () - t0;
    if (rc != 0)
        fail_msg ("refresh with the orphan lease: %s (after %lld ms)", itest_code (r), (long long) took);
    json_decref (r);
    assert_true (took < 20000);                 /* not the orphan's minute */
    /* no provider call was made under the orphan: not an interrupted refresh */
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                                 " AND outcome = 'interrupted'", "go:0"), 0);
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id = '%s' AND lease_owner IS NULL"
                                 " AND generation = 2", "go:0"), 1);
    free (ids [0]);
}

/* STORE_HOLD_SQL for id as worker, while the row is before generation below, under token, for a
 * minute: 1 when it was taken. */
static int
hold (const char *id, long long below, const char *worker, const char *token)
{
    char generation [24];
    snprintf (generation, sizeof generation, "%lld", below);
    const char *values [] = { id, generation, worker, token, "60000" };
    PGresult *r = PQexecParams (harness_db (h), STORE_HOLD_SQL, 5, NULL, values, NULL, NULL, 0);
    assert_int_equal (PQresultStatus (r), PGRES_TUPLES_OK);
    int n = PQntuples (r);
    PQclear (r);
    return n;
}

/* A worker that waits, after a failover, for another worker to write its lost commits again
 * holds the row's lease meanwhile (it_chain_safety's two-worker failover tests show why). The
 * hold is taken only while the row is still before the generation waited for, never over another
 * worker's live lease, over the worker's own at once (renewed), and over another's expired lease
 * as a claim takes one: the interruption recorded. A claim meets it busy and waits. */
static void
test_hold_is_taken_where_a_claim_could_take_a_lease (void **state)
{
    (void) state;
    char *ids [1];
    start ("group_commit_hold", 0);
    import_many ("gh:", 1, ids);
    long long g = count_sql ("SELECT generation FROM integrations WHERE id = '%s'", "gh:0");
    const char *t1 = "00000000000000000000000000000001", *t2 = "00000000000000000000000000000002";
    assert_int_equal (hold ("gh:0", g, "wX", t1), 0);                  /* the row is not behind */
    assert_int_equal (hold ("gh:0", g + 1, "wX", t1), 1);
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id = '%s' AND lease_owner = 'wX'"
                                 " AND lease_expires_at > clock_timestamp () + interval '50 seconds'", "gh:0"), 1);
    assert_int_equal (hold ("gh:0", g + 1, "wY", t2), 0);              /* wX's is live */
    assert_int_equal (hold ("gh:0", g + 1, "wX", t2), 1);              /* its own: renewed */
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                                 " AND outcome = 'interrupted'", "gh:0"), 0);

    /* a claim waits for the hold: until its deadline here. The worker answers just before it,
     * naming the lease's holder and how long it has left: the broker's answer at the deadline
     * said only that the worker had not answered, which sent operators to the wrong worker */
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "gh:0", "--timeout", "1.5", NULL);
    itest_assert_timeout_says (r, "refresh lease is held by \"wX\"", "a claim that waited for another worker's lease");
    json_t *retry = json_object_get (json_object_get (r, "error"), "retry_after");
    assert_true (json_is_integer (retry) && json_integer_value (retry) >= 1 && json_integer_value (retry) <= 60);
    json_decref (r);
    assert_int_equal (count_sql ("SELECT generation FROM integrations WHERE id = '%s'", "gh:0"), g);

    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_expires_at = clock_timestamp () - interval"
                                      " '1 second' WHERE id = 'gh:0'"), 0);
    assert_int_equal (hold ("gh:0", g + 1, "wY", t1), 1);              /* wX's expired */
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                                 " AND outcome = 'interrupted' AND worker = 'wX'", "gh:0"), 1);
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id = '%s' AND lease_owner = 'wY'"
                                 " AND interrupted_generation = generation", "gh:0"), 1);
    free (ids [0]);
}

/* A group of claims the server refuses as a whole (here: every claim waits for the chain's table,
 * which another session holds, until its lock timeout) is claimed again one claim a batch, so
 * that one integration's problem stays its own. Before, the worker did that with statements its
 * loop waited for, one lock timeout each: cached tokens of every other integration waited too. */
static void
test_failed_claim_group_does_not_stall_cache_hits (void **state)
{
    (void) state;
    enum { N = 8 };
    char *ids [N];
    h = harness_new ("group_commit_claims_fail");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1200");
    harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_DB_BATCH_CONNECTION", "0");     /* every claim in the next group */
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    import_many ("gf:", N, ids);
    char *rt = itest_grant (h, "fakebox", "[]");
    assert_int_equal (itest_import (h, "gf:hot", "fakebox", rt), 0);
    free (rt);
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "token", "--integration", "gf:hot", NULL);    /* refreshed and cached */
    if (rc != 0)
        fail_msg ("the first token of gf:hot: %s", itest_code (r));
    json_decref (r);

    /* every claim needs the chain's table (it may record an interrupted refresh there) */
    PGconn *locker = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (locker), CONNECTION_OK);
    PGresult *res = PQexec (locker, "BEGIN; LOCK TABLE token_chain IN SHARE MODE");
    assert_int_equal (PQresultStatus (res), PGRES_COMMAND_OK);
    PQclear (res);

    pid_t storm = fork ();
    assert_true (storm >= 0);
    if (storm == 0) {
        const char *endpoint = harness_broker_frontend (h, 0);
        json_t *replies = itest_storm (&endpoint, 1, (const char *const *) ids, N, N, 30000);
        _exit (replies && json_array_size (replies) == N ? 0 : 1);
    }
    /* timed over a client connected beforehand, not as whole ferrulectl runs (whose start is
     * most of a run under AddressSanitizer on a loaded machine) */
    client_t *asker = itest_client_connected (harness_broker_frontend (h, 0));
    itest_hits_t hits = itest_cached_hits (asker, "gf:hot", clock_mono_ms () + 4500, 750);
    client_destroy (&asker);
    PQclear (PQexec (locker, "COMMIT"));
    PQfinish (locker);
    int status = 0;
    assert_int_equal (waitpid (storm, &status, 0), storm);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);     /* every request was answered */
    fprintf (stderr, "%d cached tokens while the claims failed, %d late or failed; the slowest took %lld ms\n",
             hits.served, hits.late, (long long) hits.slowest_ms);
    assert_true (itest_workdir_contains (h, "claims failed, claiming each on its own"));
    assert_true (hits.served > 0);
    assert_int_equal (hits.late, 0);

    /* nothing was spent by the failed claims: each refreshes now, once */
    for (size_t i = 0; i < N; i++) {
        r = harness_ctl (h, &rc, "token", "--integration", ids [i], NULL);
        if (rc != 0)
            fail_msg ("token of %s after the lock: %s", ids [i], itest_code (r));
        json_decref (r);
    }
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id LIKE '%s%%' AND generation = 2", "gf:"),
                      N + 1);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    for (size_t i = 0; i < N; i++)
        free (ids [i]);
}

/* The plan of one of the turn's statements, as the worker's transaction would get it: sql prepared
 * as name, explained for the arguments args ("(…)"), after setup ran in the same transaction
 * (caller frees). */
static char *
turn_plan (PGconn *db, const char *setup, const char *name, const char *sql, const char *args)
{
    char *out = NULL, *q = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&out, &len);
    assert_non_null (f);
    PGresult *r = PQexec (db, "BEGIN");
    assert_int_equal (PQresultStatus (r), PGRES_COMMAND_OK);
    PQclear (r);
    r = PQexec (db, setup);
    assert_int_equal (PQresultStatus (r), PGRES_TUPLES_OK);
    PQclear (r);
    assert_true (asprintf (&q, "PREPARE %s AS %s", name, sql) > 0);
    r = PQexec (db, q);
    if (PQresultStatus (r) != PGRES_COMMAND_OK)
        fail_msg ("PREPARE %s: %s", name, PQerrorMessage (db));
    PQclear (r);
    free (q);
    assert_true (asprintf (&q, "EXPLAIN EXECUTE %s %s", name, args) > 0);
    r = PQexec (db, q);
    if (PQresultStatus (r) != PGRES_TUPLES_OK)
        fail_msg ("EXPLAIN EXECUTE %s: %s", name, PQerrorMessage (db));
    for (int i = 0; i < PQntuples (r); i++)
        fprintf (f, "%s\n", PQgetvalue (r, i, 0));
    PQclear (r);
    free (q);
    PQclear (PQexec (db, "ROLLBACK"));
    assert_true (asprintf (&q, "DEALLOCATE %s", name) > 0);
    PQclear (PQexec (db, q));
    free (q);
    assert_int_equal (fclose (f), 0);
    return out;
}

/* A turn's claims and commits (worker/store_sql.h) take their rows by id, from arrays of any
 * length. Planned for a small table (a new deployment, the benchmark's thousand rows), or from
 * statistics taken when the table was still empty, the claims read the whole table instead: the
 * benchmark's workers ran the claim's plan with a sequential scan of integrations, every version
 * of every row included, for every batch (issue 10's twenty-fifth pass, docs/performance-history.md). The
 * turn's transaction now rules such scans out before its statements are planned; the plans are
 * generic (one for every batch, whatever its length), and use the primary key. */
static void
test_turn_statements_use_the_primary_key (void **state)
{
    (void) state;
    char *ids [3];
    start ("group_commit_plans", 0);
    import_many ("gp:", 3, ids);
    assert_int_equal (harness_sql (h, "ANALYZE integrations"), 0);
    PGconn *db = harness_db (h);
    assert_non_null (db);
    const char *claim_args = "('{gp:0,gp:1}', '{1,1}', '{0,0}', '{t,t}', 'w1', '{" "00000000-0000-0000-0000-000000000001,"
                             "00000000-0000-0000-0000-000000000002}', 45000)";
    const char *commit_args = "('{gp:0,gp:1}', '{1,1}', '{1,1}', '{\"\\\\x00\",\"\\\\x00\"}', '{1,1}',"
                              " '{\"\\\\x00\",\"\\\\x00\"}', '{f0,f1}', '{NULL,NULL}', 'w1', '{t,t}',"
                              " '{00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000000002}', '{60,60}',"
                              " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')";
    /* what a transaction that only asks for generic plans gets on this table: the test's premise */
    char *bare = turn_plan (db, "SELECT set_config ('plan_cache_mode', 'force_generic_plan', true)", "gp_bare_claim",
                            STORE_CLAIM_SQL, claim_args);
    if (!strstr (bare, "Seq Scan on integrations"))
        fail_msg ("the claim's generic plan does not scan this small table sequentially, so this test shows"
                  " nothing:\n%s", bare);
    free (bare);
    const struct {
        const char *name, *sql, *args;
    } turn [] = {
        { "gp_claim", STORE_CLAIM_SQL, claim_args },
        { "gp_commit", STORE_COMMIT_SQL, commit_args },
    };
    for (size_t i = 0; i < sizeof turn / sizeof turn [0]; i++) {
        char *plan = turn_plan (db, STORE_GENERIC_PLANS_SQL, turn [i].name, turn [i].sql, turn [i].args);
        if (strstr (plan, "Seq Scan on integrations") || !strstr (plan, "using integrations_pkey on integrations"))
            fail_msg ("%s does not take its rows through the primary key, as a turn plans it:\n%s", turn [i].name, plan);
        if (!strstr (plan, "$1"))                           /* generic: the arrays stay parameters */
            fail_msg ("%s is not planned generically in a turn:\n%s", turn [i].name, plan);
        free (plan);
    }
    for (size_t i = 0; i < 3; i++)
        free (ids [i]);
}

/* In a child: takes a table lock (lock, a LOCK TABLE statement) in a transaction of its own and
 * holds it for hold_ms. Exits 0 when it did. */
static pid_t
hold_lock_in_child (const char *lock, int hold_ms)
{
    pid_t pid;
    PGconn *c = fork_connected (&pid);
    if (!c)
        return pid;
    PQclear (PQexec (c, "BEGIN"));
    PGresult *r = PQexec (c, lock);
    int locked = PQresultStatus (r) == PGRES_COMMAND_OK;
    PQclear (r);
    usleep ((useconds_t) hold_ms * 1000);
    PQclear (PQexec (c, "COMMIT"));
    PQfinish (c);
    _exit (locked ? 0 : 4);
}

/* In a child: holds the chain's table in SHARE mode for hold_ms, which every claim and commit waits
 * for (each may write a chain row). Exits 0 when it did. */
static pid_t
lock_chain_in_child (int hold_ms)
{
    return hold_lock_in_child ("LOCK TABLE token_chain IN SHARE MODE", hold_ms);
}

/* The worker's two sessions, as conditions on pg_stat_activity, which lists every database's:
 * other tests running beside this one have a worker w1 too */
#define MAIN_CONN    "application_name = 'ferrule-worker w1' AND datname = current_database ()"
#define BATCHES_CONN "application_name = 'ferrule-worker-batches w1' AND datname = current_database ()"
/* the same for pg_locks, about a table of this database */
#define THIS_DB      "l.database = (SELECT oid FROM pg_database WHERE datname = current_database ())"

/* The integer sql answers on c (its first row's first column); -1 when it failed. Usable in a
 * forked child, on a connection of its own: no cmocka assertion. */
static long long
conn_int (PGconn *c, const char *sql)
{
    PGresult *r = PQexec (c, sql);
    long long v = PQresultStatus (r) == PGRES_TUPLES_OK && PQntuples (r) == 1 ? atoll (PQgetvalue (r, 0, 0)) : -1;
    PQclear (r);
    return v;
}

/* 0 once the worker's session app (one of the two above) waits for a lock, within 20 s; -1. */
static int
lock_waited (PGconn *c, const char *app)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE %s AND wait_event_type = 'Lock'", app);
    int64_t until = clock_mono_ms () + 20000;
    while (conn_int (c, sql) != 1) {
        if (clock_mono_ms () > until)
            return -1;
        usleep (10000);
    }
    return 0;
}

/* Ends the worker's main connection, and keeps it from coming back (its role's connection limit
 * is every session the role has now but that one); 0 once it has ended, within 20 s; -1. */
static int
main_connection_ended (PGconn *c)
{
    PGresult *r = PQexec (c, "DO $$ DECLARE r name; n int; BEGIN"
                             " SELECT usename INTO r FROM pg_stat_activity WHERE " MAIN_CONN ";"
                             " SELECT count(*) INTO n FROM pg_stat_activity WHERE usename = r;"
                             " EXECUTE format ('ALTER ROLE %I CONNECTION LIMIT %s', r, n - 1);"
                             " PERFORM pg_terminate_backend (pid) FROM pg_stat_activity"
                             "  WHERE " MAIN_CONN "; END $$");
    int done = PQresultStatus (r) == PGRES_COMMAND_OK;
    PQclear (r);
    int64_t until = clock_mono_ms () + 20000;
    while (done && conn_int (c, "SELECT count(*) FROM pg_stat_activity WHERE " MAIN_CONN) != 0) {
        if (clock_mono_ms () > until)
            return -1;
        usleep (10000);
    }
    return done ? 0 : -1;
}

/* The window these tests need: 1 while the chain's table is still locked, the batch connection
 * still waiting. */
static int
still_waiting (PGconn *c)
{
    return conn_int (c, "SELECT count(*) FROM pg_stat_activity WHERE " BATCHES_CONN " AND wait_event_type = 'Lock'") == 1;
}

#define TOO_SLOW "the machine is too slow for this test's 3 s window"

/* Waits, in the test itself, until the first refresh's claim waits on the batch connection. */
static void
first_claim_waits (void)
{
    if (lock_waited (harness_db (h), BATCHES_CONN) != 0)
        fail_msg ("the first refresh's claim, on the batch connection, never waited for the chain's table");
}

/* Forks a child that, once the worker's main session waits for a lock (the second request's
 * claim or read, sent once the caller returns), ends the main connection while the batch one
 * still waits; it exits 0, or 5, 6, 7 for the step that failed. */
static pid_t
end_main_in_child (void)
{
    pid_t pid;
    PGconn *c = fork_connected (&pid);
    if (!c)
        return pid;
    int rc = lock_waited (c, MAIN_CONN) != 0 ? 5 : main_connection_ended (c) != 0 ? 6 : !still_waiting (c) ? 7 : 0;
    PQfinish (c);
    _exit (rc);
}

/* Before the second request: the first one's claim waits on the batch connection, and the main
 * connection is lost before the second request comes (the worker has logged the loss). */
static void
lose_main_before (void *arg, size_t i)
{
    (void) arg;
    if (i != 1)
        return;
    first_claim_waits ();
    if (main_connection_ended (harness_db (h)) != 0)
        fail_msg ("the worker's main connection did not end");
    itest_wait_log (h, "lost the database connection", 20000);
    if (!still_waiting (harness_db (h)))
        fail_msg ("the chain's table was released before the second request was sent: " TOO_SLOW);
}

/* Before the second request: the first one's claim waits on the batch connection; the second one's
 * claim goes on the main connection, waits there too, and is lost with it. */
static void
lose_main_during (void *arg, size_t i)
{
    if (i != 1)
        return;
    first_claim_waits ();
    ((pid_t *) arg) [0] = end_main_in_child ();
}

/* A child that locks the integrations table (ACCESS EXCLUSIVE) and holds it 1.5 s; returns once
 * the lock is asked for, or with granted, once it is held. */
static pid_t
lock_integrations_in_child (int granted)
{
    pid_t pid = hold_lock_in_child ("LOCK TABLE integrations IN ACCESS EXCLUSIVE MODE", 1500);
    int64_t until = clock_mono_ms () + 20000;
    while (harness_sql_int (h, granted ? "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                                         " WHERE c.relname = 'integrations' AND l.mode = 'AccessExclusiveLock'"
                                         " AND l.granted AND " THIS_DB
                                       : "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                                         " WHERE c.relname = 'integrations' AND l.mode = 'AccessExclusiveLock'"
                                         " AND " THIS_DB) != 1) {
        if (clock_mono_ms () > until)
            fail_msg ("the integrations table's lock was not %s", granted ? "held" : "asked for");
        usleep (10000);
    }
    return pid;
}

/* Before the second request: the first one's claim waits on the batch connection; the second
 * one's read of its row goes on the main connection, waits there for a lock on the integrations
 * table (held 1.5 s in a child of its own), and is lost with it. */
static void
lose_main_during_read (void *arg, size_t i)
{
    if (i != 1)
        return;
    first_claim_waits ();
    pid_t *pids = arg;
    pids [0] = lock_integrations_in_child (0);
    pids [1] = end_main_in_child ();
}

/* A broker and worker w1 whose statements may wait 5.5 s for a lock (for locks held 3 s: a lock
 * timeout that long needs a statement timeout above it, and heartbeats long enough for both). */
static void
start_patient (const char *name)
{
    h = harness_new (name);
    assert_non_null (h);
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "3000");
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "6000");
    harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", "5500");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

/* Two refreshes while the chain's table is locked for 3 s, the worker's main connection lost as
 * before_send says: both answered with their new tokens, once the lock is gone. */
static void
refresh_two_while_main_is_lost (const char *name, void (*before_send) (void *, size_t))
{
    char *ids [2];
    pid_t during [2] = { 0, 0 };
    start_patient (name);
    import_many ("gm:", 2, ids);

    pid_t locker = lock_chain_in_child (3000);
    int64_t until = clock_mono_ms () + 20000;
    while (harness_sql_int (h, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                               " WHERE c.relname = 'token_chain' AND l.mode = 'ShareLock' AND l.granted AND " THIS_DB) != 1) {
        if (clock_mono_ms () > until)
            fail_msg ("the chain's table was not locked");
        usleep (10000);
    }
    const char *endpoint = harness_broker_frontend (h, 0);
    json_t *replies = itest_storm_paced (&endpoint, 1, (const char *const *) ids, 2, 2, 30000, 0, before_send, during);
    assert_non_null (replies);
    child_ok (locker, "the lock of the chain's table");
    for (size_t i = 0; i < 2; i++)
        if (during [i])
            child_ok (during [i], "a step of the second request's loss with the main connection");
    assert_int_equal (harness_sql (h, "DO $$ DECLARE r name; BEGIN"
                                      " SELECT usename INTO r FROM pg_stat_activity WHERE " BATCHES_CONN ";"
                                      " EXECUTE format ('ALTER ROLE %I CONNECTION LIMIT -1', r); END $$"), 0);
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get (replies, i);
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("request for %s: %s (%s)", ids [i], r ? itest_code (r) : "no reply",
                      json_string_value (json_object_get (json_object_get (r, "error"), "message")) ?: "");
    }
    json_decref (replies);
    assert_int_equal (count_sql ("SELECT count(*) FROM integrations WHERE id LIKE '%s%%' AND generation = 2", "gm:"), 2);
    /* and the main connection comes back once it may */
    until = clock_mono_ms () + 20000;
    while (harness_sql_int (h, "SELECT count(*) FROM pg_stat_activity WHERE " MAIN_CONN) != 1) {
        if (clock_mono_ms () > until)
            fail_msg ("the worker's main connection did not come back");
        usleep (20000);
    }
    for (size_t i = 0; i < 2; i++)
        free (ids [i]);
}

/* A worker has two connections, and work goes to whichever is free. With the main one lost (a
 * backend terminated, a pooler's recycling, an idle timeout) while the batch one carried a batch,
 * the next request's read went to the dead connection and failed at once: "database_unavailable"
 * for a healthy integration, with the database up. Work now waits for the connection that is up. */
static void
test_work_waits_for_the_batch_connection_while_the_main_one_is_lost (void **state)
{
    (void) state;
    refresh_two_while_main_is_lost ("group_commit_main_lost", lose_main_before);
}

/* A claim lost with the main connection was answered "database_unavailable" ("the database
 * connection was lost with the batch in flight"); one lost with the batch connection was sent once
 * more, on whichever connection was up. Both are now. */
static void
test_claim_lost_with_the_main_connection_is_sent_again (void **state)
{
    (void) state;
    refresh_two_while_main_is_lost ("group_commit_main_lost_claim", lose_main_during);
}

/* A read lost with the main connection: the same, for a request whose row was not cached. */
static void
test_read_lost_with_the_main_connection_is_sent_again (void **state)
{
    (void) state;
    refresh_two_while_main_is_lost ("group_commit_main_lost_read", lose_main_during_read);
}

/* Before the request: the integrations table locked for 1.5 s (a child), and a child that, once
 * the request's read waits for that lock on the batch connection, notifies a change of the row. */
static void
change_during_read (void *arg, size_t i)
{
    (void) i;
    pid_t *pids = arg;
    pids [0] = lock_integrations_in_child (1);
    PGconn *c = fork_connected (&pids [1]);
    if (c) {
        /* after the request is sent, which this callback's return does */
        if (lock_waited (c, BATCHES_CONN) != 0)
            _exit (5);                   /* the request's read never waited for the lock */
        PGresult *r = PQexec (c, "SELECT pg_notify ('" STORE_NOTIFY_CHANNEL "', 'w9 gr:0')");
        int sent = PQresultStatus (r) == PGRES_TUPLES_OK;
        PQclear (r);
        PQfinish (c);
        _exit (sent ? 0 : 4);
    }
}

/* A request whose integration's row is read while another process's change of it is notified
 * reads it again, so that it does not go on from the old row. That second read dropped the
 * request instead, unanswered until the broker's deadline, whenever no later request for the same
 * integration was waiting for a read of its own: the read in flight took itself for that one. */
static void
test_read_of_a_row_changed_meanwhile_is_answered (void **state)
{
    (void) state;
    char *ids [1];
    pid_t during [2] = { 0, 0 };
    start_patient ("group_commit_reread");
    import_many ("gr:", 1, ids);
    /* not cached: as a change another worker made would, the notification drops the entry */
    assert_int_equal (harness_sql (h, "SELECT pg_notify ('" STORE_NOTIFY_CHANNEL "', 'w9 gr:0')"), 0);
    usleep (200000);
    const char *endpoint = harness_broker_frontend (h, 0);
    json_t *replies = itest_storm_paced (&endpoint, 1, (const char *const *) ids, 1, 1, 10000, 0, change_during_read,
                                         during);
    assert_non_null (replies);
    for (size_t i = 0; i < 2; i++)
        child_ok (during [i], i ? "the notification of a change" : "the lock of the integrations table");
    json_t *r = json_array_get (replies, 0);
    if (!json_is_true (json_object_get (r, "ok")))
        fail_msg ("request for gr:0: %s (%s)", r ? itest_code (r) : "no reply",
                  json_string_value (json_object_get (json_object_get (r, "error"), "message")) ?: "");
    json_decref (replies);
    free (ids [0]);
}

/* A harness called name whose one worker reaches the database through a relay (returned), with
 * integration id imported and, unless saved is NULL, its row saved into the test session's table
 * saved; statement_timeout_ms, unless NULL, is the worker's FERRULE_DB_STATEMENT_TIMEOUT_MS. */
static dbproxy_t *
start_behind_relay (const char *name, const char *id, const char *saved, const char *statement_timeout_ms)
{
    char sql [256];
    h = harness_new (name);
    assert_non_null (h);
    dbproxy_t *proxy = dbproxy_new (harness_runtime_url (h));
    assert_non_null (proxy);
    char *via = dbproxy_conninfo (proxy, harness_runtime_url (h));
    assert_non_null (via);
    harness_set_env (h, "FERRULE_DATABASE_URL", via);
    if (statement_timeout_ms)
        harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", statement_timeout_ms);
    free (via);
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    char *rt = itest_grant (h, "fakebox", "[]");
    assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
    free (rt);
    if (saved) {
        snprintf (sql, sizeof sql, "CREATE TEMP TABLE %s AS SELECT * FROM integrations WHERE id = '%s'", saved, id);
        assert_int_equal (harness_sql (h, sql), 0);
    }
    return proxy;
}

/* Work queued for a database connection (here a gateway's "workspace" listing, behind two that
 * hold both of the worker's connections, their answers held by a relay) that cannot start shortly before its
 * request's deadline is answered timeout then by the worker, saying what it waited for, and never
 * started: it was started while any time was left, even 1 ms, and its outcome (a dashboard link
 * spent, an API key made) came after the broker had answered the request timeout. */
static void
test_work_waiting_for_a_connection_is_answered_before_its_deadline (void **state)
{
    (void) state;
    /* (a statement timeout past the held batches': they are not given up first) */
    dbproxy_t *proxy = start_behind_relay ("group_commit_conn_wait", "cw:box", NULL, "2700");
    dbproxy_hold_answers (proxy, 1);
    pid_t busy [2];
    for (int i = 0; i < 2; i++) {
        busy [i] = fork ();
        assert_true (busy [i] >= 0);
        if (busy [i] == 0) {
            json_t *r = itest_call_once (harness_brokers (h), "workspace", "cw:", 2500);
            json_decref (r);
            _exit (0);
        }
    }
    usleep (500000);                         /* both are sent, and wait for their answers */
    /* the worker's answer, not the broker's at the deadline: the message says which */
    json_t *r = itest_call_once (harness_brokers (h), "workspace", "cw:", 1500);
    dbproxy_hold_answers (proxy, 0);
    for (int i = 0; i < 2; i++)
        waitpid (busy [i], NULL, 0);
    assert_non_null (r);
    itest_assert_timeout_says (r, "for a free database connection", "a request queued behind two held batches");
    json_decref (r);
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

/* What a server promoted without the commits made since saved holds: the row put back, the
 * chain rows after it gone (the chain is append-only: a trigger). */
static void
lose_commits_since (const char *saved)
{
    char sql [768];
    snprintf (sql, sizeof sql, "UPDATE integrations i SET generation = b.generation, access_token = b.access_token,"
              " access_expires_at = b.access_expires_at, refresh_token = b.refresh_token,"
              " refresh_fingerprint = b.refresh_fingerprint FROM %s b WHERE i.id = b.id;"
              " SET session_replication_role = replica; DELETE FROM token_chain t USING %s b"
              " WHERE t.integration_id = b.id AND t.generation > b.generation;"
              " RESET session_replication_role", saved, saved);
    assert_int_equal (harness_sql (h, sql), 0);
}

/* A refresh of id (behind proxy) whose commit the database makes while the relay holds its
 * answer; then every connection is cut, so that the worker sends the commit again, which loses its
 * compare-and-set to itself, and reads the row; with read_cut, that first read is lost too (the
 * relay cuts every connection when it goes out). Returns the refresh's ferrulectl exit status,
 * once it has checked that the chain holds one "refreshed" row and no conflict for it. */
static int
commit_with_its_answer_lost (dbproxy_t *proxy, const char *id, int read_cut)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1500));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");

    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int rc = -1;
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
        json_decref (r);
        _exit (rc < 0 ? 99 : rc);
    }
    /* the provider is refreshing: the claim's answer is in; from now on the server's answers stay
     * in the relay */
    for (int waited = 0; itest_stat (h, "fakebox", "refresh_calls") == calls && waited < 10000; waited += 50)
        usleep (50 * 1000);
    assert_true (itest_stat (h, "fakebox", "refresh_calls") > calls);
    dbproxy_hold_answers (proxy, 1);
    /* the commit lands; its answer does not reach the worker */
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'refreshed'", id);
    assert_int_equal (itest_wait_sql (h, sql, 1, 20000), 1);
    if (read_cut)
        dbproxy_cut_on (proxy, "'conflict', $3");      /* CONFLICT_SQL's text, worker/store_chain.c */
    assert_true (dbproxy_cut (proxy) > 0);
    dbproxy_hold_answers (proxy, 0);

    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'refreshed'",
                                 id), 1);
    long long conflicts = count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'conflict'",
                                     id);
    if (conflicts != 0)
        fail_msg ("%lld conflict rows for a refresh whose own commit was stored", conflicts);
    return WEXITSTATUS (status);
}

/* commit_with_its_answer_lost for a rotated refresh of id. Then a failover to a server without the
 * commit (the row put back, the connections cut): the commit must be written again, and the chain
 * go on from it. */
static void
commit_answer_lost (const char *name, const char *id, int read_cut)
{
    char sql [512];
    dbproxy_t *proxy = start_behind_relay (name, id, "saved", NULL);
    int status = commit_with_its_answer_lost (proxy, id, read_cut);
    if (!read_cut)
        assert_int_equal (status, 0);      /* answered with its own tokens */
    else {
        /* the first read failed, was answered to the waiters, and is tried again: it finds the
         * refresh's own token, and keeps the commit (the branch did not run once the waiters had
         * been answered) */
        itest_wait_log (h, "could not record the lost compare-and-set", 15000);
        itest_wait_log (h, "the row holds this refresh's own token", 15000);
    }
    /* the failover: the promoted server never had the commit */
    snprintf (sql, sizeof sql, "CREATE TEMP TABLE committed AS SELECT id, generation, refresh_fingerprint"
                               " FROM integrations WHERE id = '%s'", id);
    assert_int_equal (harness_sql (h, sql), 0);
    lose_commits_since ("saved");
    assert_true (dbproxy_cut (proxy) > 0);
    long long again = itest_wait_sql (h, "SELECT count(*) FROM integrations i JOIN committed c USING (id)"
                                         " WHERE i.refresh_fingerprint = c.refresh_fingerprint"
                                         " AND i.generation = c.generation", 1, 15000);
    if (again != 1)
        fail_msg ("the commit lost by the failover was not written again: the row holds the replaced token");
    /* the chain goes on from the stored token */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
    if (rc != 0)
        fail_msg ("refresh after the lost answer: %s", itest_code (r));
    json_decref (r);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

/* That was recorded as a conflict ("another refresh, import or status change committed first;
 * this result was not stored") beside the refresh's own "refreshed" row, and logged as lost to a
 * concurrent change, while the result was stored. Now the refresh is answered with its own tokens
 * and the chain holds no conflict. And the commit is kept against a failover like any rotated
 * commit. It was not kept (its journal record settled as for a conflict): the row stayed with
 * the token the provider had replaced, and the next refresh spent it. */
static void
test_commit_whose_answer_was_lost_is_not_a_conflict (void **state)
{
    (void) state;
    commit_answer_lost ("group_commit_answer_lost", "lostans:box", 0);
}

/* The same, the first read of the row lost as well: the waiters were answered with that failure,
 * and the read tried again found the refresh's own token; the commit was then settled without
 * being kept (what it needed was the refresh's, gone once answered), and the failover lost it
 * for good. */
static void
test_commit_whose_answer_and_first_read_were_lost_is_kept (void **state)
{
    (void) state;
    commit_answer_lost ("group_commit_read_lost", "lostread:box", 1);
}

/* The same for a refresh that rotated nothing (here a single-use provider's answer without a new
 * refresh token: the one sent is kept, sealed again). Its commit, sent again, lost its
 * compare-and-set to itself, and a conflict was recorded beside its own "refreshed" row (only a
 * rotated result was told apart, by its new token): doctor reads a conflict close before a refusal
 * as a sign of reuse. Now the row holding this commit's own sealed refresh token tells it apart. */
static void
test_unrotated_commit_whose_answer_was_lost_is_not_a_conflict (void **state)
{
    (void) state;
    dbproxy_t *proxy = start_behind_relay ("group_commit_unrotated_lost", "unrot:box", NULL, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:s}", "mode", "reusable"));
    assert_int_equal (commit_with_its_answer_lost (proxy, "unrot:box", 0), 0);
    assert_int_equal (count_sql ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                                 " AND outcome = 'refreshed' AND NOT rotated", "unrot:box"), 1);
    itest_wait_log (h, "the row holds this refresh's own result", 15000);
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

/* The worker makes `before` rotated commits of id (C1...), kept against a failover; its next
 * refresh R is at the provider (spending the last one's token) when the server fails over to one
 * that lacks them all (the row put back to the saved copy, the worker's connections cut and its
 * new ones held until R's answer is in). The worker's check writes the newest commit again over
 * the row put back, and R's commit must follow it: the row ends two generations after the saved
 * one, holding the provider's newest token, and the next refresh succeeds. */
static void
refresh_across_a_failover_that_lost_commits (const char *name, const char *id, const char *saved, int before)
{
    dbproxy_t *proxy = start_behind_relay (name, id, saved, NULL);
    int rc = -1;
    for (int i = 0; i < before; i++) {
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
        json_decref (r);
        assert_int_equal (rc, 0);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 2000));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        json_t *c = harness_ctl (h, &rc, "refresh", "--integration", id, "--timeout", "20", NULL);   /* R */
        json_decref (c);
        _exit (rc < 0 ? 99 : rc);
    }
    assert_int_equal (itest_wait_stat (h, "fakebox", "refresh_calls", calls + 1, 20000), calls + 1);
    /* the failover: the new server lacks the commits, and answers nothing until R's answer is in */
    dbproxy_hold_answers (proxy, 1);
    lose_commits_since (saved);
    assert_true (dbproxy_cut (proxy) > 0);
    sleep (3);                               /* R's 2 s at the provider, counted from its arrival, are over */
    dbproxy_hold_answers (proxy, 0);
    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT (SELECT generation FROM integrations WHERE id = '%s')"
              " - (SELECT generation FROM %s)", id, saved);
    long long g = harness_sql_int (h, sql);
    /* the chain goes on: the stored token is the provider's newest */
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
    fprintf (stderr, "%d commits lost; R exit %d; the row %lld generations after the saved one; the next refresh: "
             "exit %d %s\n", before, WEXITSTATUS (status), g, rc, itest_code (r));
    json_decref (r);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (rc, 0);
    assert_int_equal (g, 2);                 /* the newest commit written again over the saved row, R after it */
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

/* One commit lost: R's commit went out first, in the reconnecting turn; its compare-and-set lost
 * against the row put back, R's rotated token was dropped as a conflict's, and the check then
 * wrote back C1's token, which the provider had spent: the next refresh failed for good. */
static void
test_commit_after_a_failover_waits_for_the_check (void **state)
{
    (void) state;
    refresh_across_a_failover_that_lost_commits ("group_commit_failover_order", "fo2:box", "saved2", 1);
}

/* Two commits lost, C1 and C2: the check finds the row holding the token C1 spent and writes C2
 * again over it, one generation earlier than C2 first made. R's commit expected the generation C2
 * had made, lost its compare-and-set against the row C2's write left, and R's rotated token was
 * dropped as a conflict's while the row held C2's token, which R had spent: the next refresh was
 * refused (reuse detection). R now commits after C2, where C2 is now. */
static void
test_commit_after_a_failover_that_lost_two_commits_follows_them (void **state)
{
    (void) state;
    refresh_across_a_failover_that_lost_commits ("group_commit_failover_two", "fo3:box", "saved3", 2);
}

/* 1 when fakebox's newest request is a code exchange. */
static int
exchange_arrived (void)
{
    return itest_exchange_arrived (h, "fakebox");
}

/* A connect of id by w1, behind a relay, whose callback's upsert commits while the relay holds
 * the server's answers; then, when disconnect, a disconnect by w2 (straight to the database);
 * then every connection of the relay cut, so that w1 sends the upsert again. Returns the
 * callback's ferrulectl exit status, with its answer's code ("ok" or an error code), the
 * integration's status and "new" or "reconnected" into answer; the relay into *relay (destroyed
 * after the harness). */
static int
connect_whose_answer_is_lost (const char *name, const char *id, int disconnect, char *answer, size_t len,
                              dbproxy_t **relay)
{
    char sql [256];
    h = harness_new (name);
    assert_non_null (h);
    dbproxy_t *proxy = dbproxy_new (harness_runtime_url (h));
    assert_non_null (proxy);
    char *via = dbproxy_conninfo (proxy, harness_runtime_url (h));
    assert_non_null (via);
    /* w1 behind the relay serves broker 0; w2, straight to the database, broker 1 */
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_broker (h), 1);
    harness_set_env (h, "FERRULE_DATABASE_URL", via);
    free (via);
    assert_int_equal (harness_start_worker_on (h, "w1", 1u), 0);
    harness_set_env (h, "FERRULE_DATABASE_URL", NULL);
    assert_int_equal (harness_start_worker_on (h, "w2", 2u), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    const char *b0 = harness_broker_frontend (h, 0), *b1 = harness_broker_frontend (h, 1);

    int rc = -1;
    json_t *c = harness_ctl_at (h, b0, &rc, "connect", "--integration", id, "--provider", "fakebox",
                                "--redirect-uri", "http://127.0.0.1/callback", NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (c);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1500));
    char out [1024];
    snprintf (out, sizeof out, "%s/callback-answer", harness_workdir (h));
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int crc = -1;
        json_t *r = harness_ctl_at (h, b0, &crc, "callback", "--url", location, "--timeout", "60", NULL);
        FILE *f = fopen (out, "w");
        if (f) {
            /* the code, the status and whether it existed: a reply may hold tokens */
            const json_t *re = json_object_get (r, "reconnected");
            fprintf (f, "%s %s%s", !r ? "no-reply" : json_is_true (json_object_get (r, "ok")) ? "ok" : itest_code (r),
                     json_string_value (json_object_get (json_object_get (r, "integration"), "status")) ?: "none",
                     !re ? "" : json_is_true (re) ? " reconnected" : " new");
            fclose (f);
        }
        json_decref (r);
        _exit (crc < 0 ? 99 : crc);
    }
    /* the state is taken and the code is at the provider: from now on the server's answers stay
     * in the relay */
    for (int waited = 0; !exchange_arrived () && waited < 10000; waited += 20)
        usleep (20 * 1000);
    assert_true (exchange_arrived ());
    dbproxy_hold_answers (proxy, 1);
    /* the upsert lands; its answer does not reach w1 */
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'connected'",
              id);
    assert_int_equal (itest_wait_sql (h, sql, 1, 20000), 1);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    if (disconnect) {
        json_t *d = harness_ctl_at (h, b1, &rc, "disconnect", "--integration", id, NULL);
        assert_int_equal (rc, 0);
        assert_string_equal (json_string_value (json_object_get (json_object_get (d, "integration"), "status")),
                             "disconnected");
        json_decref (d);
    }
    assert_true (dbproxy_cut (proxy) > 0);
    dbproxy_hold_answers (proxy, 0);

    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    answer [0] = '\0';
    FILE *f = fopen (out, "r");
    if (f) {
        if (!fgets (answer, (int) len, f))
            answer [0] = '\0';
        fclose (f);
    }
    free (location);
    unsigned long long more;
    fprintf (stderr, "callback: exit %d, answered \"%s\"; w1's upsert failed %d times first\n", WEXITSTATUS (status),
             answer, itest_log_lines (h, "w1", "could not store the new tokens", &more));
    *relay = proxy;
    return WEXITSTATUS (status);
}

/* The same connect's "connected" chain rows, and the rows of them that say "reconnected (was s)". */
static void
connected_rows (const char *id, const char *was, long long *rows, long long *again)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'connected'",
              id);
    *rows = harness_sql_int (h, sql);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
              " AND detail LIKE 'reconnected%%(was %s)'", id, was);
    *again = harness_sql_int (h, sql);
    fprintf (stderr, "\"connected\" chain rows: %lld, of which \"reconnected ... (was %s)\": %lld\n", *rows, was, *again);
}

/* A callback's upsert commits and its answer is lost with the connection (the server's answers
 * held in a relay, then every connection cut); the worker sends it again. It ran a second time:
 * one more chain row, "reconnected (was active)", and the callback answered that a new
 * integration was reconnected. Now the second run finds its connect stored, writes nothing, and
 * the callback is answered as the first run would have been. */
static void
test_connect_whose_answer_was_lost_is_stored_once (void **state)
{
    (void) state;
    char answer [128];
    long long rows, again;
    dbproxy_t *proxy = NULL;
    int rc = connect_whose_answer_is_lost ("group_commit_connect_lost", "lostconn:box", 0, answer, sizeof answer, &proxy);
    connected_rows ("lostconn:box", "active", &rows, &again);
    assert_int_equal (rows, 1);
    assert_int_equal (rc, 0);
    assert_string_equal (answer, "ok active new");
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'lostconn:box'"), 1);
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

/* The same, and before the worker is connected again another worker disconnects the integration
 * (its tokens destroyed, revoked at the provider). The upsert sent again wrote the tokens the
 * disconnect had destroyed back: the integration was active again ("reconnected (was
 * disconnected)") and the callback answered ok. Now what the disconnect did stands, and the
 * callback says the integration was disconnected since. */
static void
test_connect_whose_answer_was_lost_does_not_undo_a_disconnect (void **state)
{
    (void) state;
    char answer [128];
    long long rows, again;
    dbproxy_t *proxy = NULL;
    int rc = connect_whose_answer_is_lost ("group_commit_connect_lost_disc", "lostdisc:box", 1, answer, sizeof answer, &proxy);
    long long alive = harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'lostdisc:box'"
                                          " AND (status <> 'disconnected' OR access_token IS NOT NULL"
                                          " OR refresh_token IS NOT NULL)");
    connected_rows ("lostdisc:box", "disconnected", &rows, &again);
    if (alive != 0)
        fail_msg ("the disconnect was undone: the upsert sent again wrote the destroyed tokens back");
    assert_int_equal (rows, 1);
    assert_int_equal (rc, 4);
    assert_string_equal (answer, "disconnected disconnected new");
    assert_int_equal (itest_teardown (&h), 0);
    dbproxy_destroy (&proxy);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_one_turn_shares_a_transaction, teardown),
        cmocka_unit_test_teardown (test_locked_row_holds_up_only_itself, teardown),
        cmocka_unit_test_teardown (test_a_request_behind_a_locked_row_is_told_so, teardown),
        cmocka_unit_test_teardown (test_a_request_during_the_start_up_recovery_is_told_so, teardown),
        cmocka_unit_test_teardown (test_a_request_behind_a_slow_commit_is_told_so, teardown),
        cmocka_unit_test_teardown (test_a_request_behind_a_failure_being_recorded_is_told_so, teardown),
        cmocka_unit_test_teardown (test_a_request_behind_a_lost_compare_and_set_is_told_so, teardown),
        cmocka_unit_test_teardown (test_each_refresh_of_a_batch_gets_its_own_answer, teardown),
        cmocka_unit_test_teardown (test_orphan_lease_of_a_lost_claim_is_taken_over, teardown),
        cmocka_unit_test_teardown (test_hold_is_taken_where_a_claim_could_take_a_lease, teardown),
        cmocka_unit_test_teardown (test_failed_claim_group_does_not_stall_cache_hits, teardown),
        cmocka_unit_test_teardown (test_turn_statements_use_the_primary_key, teardown),
        cmocka_unit_test_teardown (test_work_waits_for_the_batch_connection_while_the_main_one_is_lost, teardown),
        cmocka_unit_test_teardown (test_claim_lost_with_the_main_connection_is_sent_again, teardown),
        cmocka_unit_test_teardown (test_read_lost_with_the_main_connection_is_sent_again, teardown),
        cmocka_unit_test_teardown (test_read_of_a_row_changed_meanwhile_is_answered, teardown),
        cmocka_unit_test_teardown (test_commit_whose_answer_was_lost_is_not_a_conflict, teardown),
        cmocka_unit_test_teardown (test_commit_whose_answer_and_first_read_were_lost_is_kept, teardown),
        cmocka_unit_test_teardown (test_unrotated_commit_whose_answer_was_lost_is_not_a_conflict, teardown),
        cmocka_unit_test_teardown (test_commit_after_a_failover_waits_for_the_check, teardown),
        cmocka_unit_test_teardown (test_commit_after_a_failover_that_lost_two_commits_follows_them, teardown),
        cmocka_unit_test_teardown (test_work_waiting_for_a_connection_is_answered_before_its_deadline, teardown),
        cmocka_unit_test_teardown (test_connect_whose_answer_was_lost_is_stored_once, teardown),
        cmocka_unit_test_teardown (test_connect_whose_answer_was_lost_does_not_undo_a_disconnect, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
