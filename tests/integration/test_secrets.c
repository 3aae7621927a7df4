/* test_secrets.c - issue 9, items 5, 6, 7 and the rate limit of 9: the workers' runtime role
 * is refused what they must never do; secrets come from files, leave the environment and the
 * core dumps; fingerprints survive a key rotation; "ferrule-migrate rekey" re-seals everything
 * while tokens are requested and refreshed, after which the old key can go; refresh and connect
 * are rate-limited per integration */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include "client.h"
#include "clock.h"
#include "crypto.h"
#include "itest.h"

static harness_t *h;

static int
setup (void **state)
{
    (void) state;
    return 0;
}

static int
teardown (void **state)
{
    (void) state;
    return h ? itest_teardown (&h) : 0;
}

static int
start (const char *name, int workers)
{
    h = harness_new (name);
    if (!h || harness_start_broker (h) < 0)
        return -1;
    char id [16];
    for (int i = 1; i <= workers; i++) {
        snprintf (id, sizeof id, "w%d", i);
        if (harness_start_worker (h, id) != 0)
            return -1;
    }
    return harness_wait_ready (h, workers, 30000);
}

static char *
new_key (void)
{
    unsigned char raw [32];
    assert_int_equal (crypto_random (raw, sizeof raw), 0);
    return crypto_b64_encode (raw, sizeof raw);
}

static void
write_file (const char *path, const char *text)
{
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fprintf (f, "%s\n", text);
    fclose (f);
    chmod (path, 0600);
}

/* The SQLSTATE a statement fails with on conn, "" when it succeeds. */
static const char *
sqlstate_of (PGconn *conn, const char *sql)
{
    static char state [6];
    PGresult *res = PQexec (conn, sql);
    ExecStatusType rs = PQresultStatus (res);
    state [0] = '\0';
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        const char *s = PQresultErrorField (res, PG_DIAG_SQLSTATE);
        snprintf (state, sizeof state, "%s", s ? s : "?????");
    }
    PQclear (res);
    return state;
}

static void
import_one (const char *id, const char *provider)
{
    char *rt = itest_grant (h, provider, "[\"files.read\"]");
    assert_non_null (rt);
    assert_int_equal (itest_import (h, id, provider, rt), 0);
    free (rt);
}

/* item 5: the workers work as the runtime role, which may not TRUNCATE, DELETE, UPDATE the
 * chain, or change the schema; the owner cannot TRUNCATE the chain either */
static void
test_runtime_role (void **state)
{
    (void) state;
    int rc;
    assert_int_equal (start ("secrets_roles", 1), 0);
    import_one ("roles:box", "fakebox");
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "roles:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    /* connect stores a pending authorization and collects old ones without DELETE */
    t = harness_ctl (h, &rc, "connect", "--integration", "roles:new", "--provider", "fakebox",
                     "--redirect-uri", "https://app.example/cb", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);

    PGconn *rt = PQconnectdb (harness_runtime_url (h));
    assert_int_equal (PQstatus (rt), CONNECTION_OK);
    assert_string_equal (sqlstate_of (rt, "SELECT count(*) FROM token_chain"), "");
    assert_string_equal (sqlstate_of (rt, "TRUNCATE token_chain"), "42501");
    assert_string_equal (sqlstate_of (rt, "DELETE FROM token_chain"), "42501");
    assert_string_equal (sqlstate_of (rt, "UPDATE token_chain SET detail = 'x'"), "42501");
    assert_string_equal (sqlstate_of (rt, "DELETE FROM integrations"), "42501");
    assert_string_equal (sqlstate_of (rt, "TRUNCATE integrations"), "42501");
    assert_string_equal (sqlstate_of (rt, "DELETE FROM pending_authorizations"), "42501");
    assert_string_equal (sqlstate_of (rt, "CREATE TABLE intruder (x int)"), "42501");
    assert_string_equal (sqlstate_of (rt, "ALTER TABLE integrations ADD COLUMN x int"), "42501");
    assert_string_equal (sqlstate_of (rt, "DROP TABLE token_chain"), "42501");
    assert_string_equal (sqlstate_of (rt, "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'x', 'x')"), "42501");
    PQfinish (rt);

    /* the owner: TRUNCATE would empty the chain without row triggers; a statement trigger refuses */
    long long before = harness_sql_int (h, "SELECT count(*) FROM token_chain");
    assert_true (before >= 2);
    assert_int_not_equal (harness_sql (h, "TRUNCATE token_chain CASCADE"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain"), before);

    /* idempotent, and "up" grants the recorded role again */
    char *out = NULL;
    assert_int_equal (harness_migrate (h, &out, "grant-runtime", harness_runtime_role (h), NULL), 0);
    free (out);
    assert_int_equal (harness_migrate (h, &out, "up", NULL), 0);
    assert_non_null (strstr (out, "granted 1 runtime role again"));
    free (out);
    assert_int_equal (harness_migrate (h, NULL, "grant-runtime", NULL), 2);
    /* the workers' init container waits for the schema as the runtime role */
    assert_int_equal (harness_migrate (h, NULL, "wait", "--timeout", "5", "--database-url", harness_runtime_url (h), NULL), 0);
    /* and the runtime role cannot grant itself more */
    assert_int_not_equal (harness_migrate (h, NULL, "up", "--database-url", harness_runtime_url (h), NULL), 0);
}

/* The text of /proc/PID/FILE (NUL bytes as newlines), or NULL. */
static char *
proc_text (pid_t pid, const char *file)
{
    char path [64], *buf = calloc (1, 65536);
    snprintf (path, sizeof path, "/proc/%ld/%s", (long) pid, file);
    int fd = open (path, O_RDONLY);
    if (fd < 0) {
        free (buf);
        return NULL;
    }
    ssize_t n = read (fd, buf, 65535);
    close (fd);
    for (ssize_t i = 0; i < n; i++)
        if (!buf [i])
            buf [i] = '\n';
    return buf;
}

static pid_t
worker_pid (const char *id)
{
    return harness_worker_pid (h, id);
}

/* item 6: secrets from files, out of the environment, no core dumps, fingerprints keyed by a
 * key of their own so they stay comparable across an encryption key rotation */
static void
test_secrets_in_process (void **state)
{
    (void) state;
    int rc;
    h = harness_new ("secrets_process");
    assert_non_null (h);
    char *k1 = new_key (), *k2 = new_key (), *fp = new_key ();
    char path [1024], dbpath [1024], fppath [1024];
    snprintf (path, sizeof path, "%s/encryption.key", harness_workdir (h));
    snprintf (dbpath, sizeof dbpath, "%s/database.url", harness_workdir (h));
    snprintf (fppath, sizeof fppath, "%s/fingerprint.key", harness_workdir (h));
    write_file (path, k1);
    write_file (dbpath, harness_runtime_url (h));
    write_file (fppath, fp);
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", "");
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY_FILE", path);
    harness_set_env (h, "FERRULE_DATABASE_URL", "");
    harness_set_env (h, "FERRULE_DATABASE_URL_FILE", dbpath);
    harness_set_env (h, "FERRULE_FINGERPRINT_KEY_FILE", fppath);
    assert_true (harness_start_broker (h) >= 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);

    char *rt = itest_grant (h, "fakebox", "[\"files.read\"]");
    assert_int_equal (itest_import (h, "proc:a", "fakebox", rt), 0);
    json_t *st = harness_ctl (h, &rc, "status", "--integration", "proc:a", NULL);
    assert_int_equal (rc, 0);
    char *fp1 = strdup (json_string_value (json_object_get (json_object_get (st, "integration"),
                                                            "refresh_token_fingerprint")));
    json_decref (st);

    /* no core dumps, and the key is not in the environment the process started with */
    pid_t pid = worker_pid ("w1");
    assert_true (pid > 0);
    char *limits = proc_text (pid, "limits");
    assert_non_null (limits);
    char *core = strstr (limits, "Max core file size");
    assert_non_null (core);
    long soft = -1, hard = -1;
    assert_int_equal (sscanf (core + strlen ("Max core file size"), " %ld %ld", &soft, &hard), 2);
    assert_int_equal (soft, 0);
    assert_int_equal (hard, 0);
    free (limits);

    /* a second worker given the key directly: it must not stay readable in /proc/PID/environ */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY_FILE", NULL);
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k1);
    /* and two webhook endpoints, each signing with a secret from the environment: they stayed
     * there, readable in /proc/PID/environ, for the worker's life */
    char hooks [1024], text [1024];
    const char *hook_secret = "hooksecret-0123456789abcdef0123456789";
    const char *hook_secret2 = "hooksecret-two-0123456789abcdef01234";
    snprintf (hooks, sizeof hooks, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": ["
              " {\"name\": \"one\", \"url\": \"http://127.0.0.1:9/a\", \"secret_env\": \"FERRULE_TEST_HOOK_SECRET\"},"
              " {\"name\": \"two\", \"url\": \"http://127.0.0.1:9/b\", \"secret_env\": \"FERRULE_TEST_HOOK_SECRET2\"}]}");
    write_file (hooks, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", hooks);
    harness_set_env (h, "FERRULE_TEST_HOOK_SECRET", hook_secret);
    harness_set_env (h, "FERRULE_TEST_HOOK_SECRET2", hook_secret2);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", NULL);
    harness_set_env (h, "FERRULE_TEST_HOOK_SECRET", NULL);
    harness_set_env (h, "FERRULE_TEST_HOOK_SECRET2", NULL);
    pid = worker_pid ("w1");
    assert_true (pid > 0);
    char *environ_text = proc_text (pid, "environ");
    if (environ_text) {             /* root can still read it; then the value must be gone (the
                                       kernel shows the block the process started with: the name
                                       stays, its value is overwritten) */
        assert_null (strstr (environ_text, k1));
        assert_null (strstr (environ_text, hook_secret));
        assert_null (strstr (environ_text, hook_secret2));
        free (environ_text);
    }
    else
        assert_true (errno == EACCES || errno == EPERM);
    /* both endpoints were loaded */
    json_t *wh = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (wh, "webhooks")), 2);
    json_decref (wh);

    /* rotate the encryption key: the same refresh token keeps its fingerprint */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k2);
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", k1);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
    assert_int_equal (itest_import (h, "proc:b", "fakebox", rt), 0);
    st = harness_ctl (h, &rc, "status", "--integration", "proc:b", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (json_string_value (json_object_get (json_object_get (st, "integration"),
                                                             "refresh_token_fingerprint")), fp1);
    /* status says proc:a is on the retired key; the count of such values is null until the
     * restarted worker has counted under its new key (a walk in the background: under ASan a
     * status once came first) */
    json_decref (st);
    st = NULL;
    int64_t until = clock_mono_ms () + 15000;
    do {
        json_decref (st);
        st = harness_ctl (h, &rc, "status", "--integration", "proc:a", NULL);
        assert_int_equal (rc, 0);
        if (json_is_null (json_object_get (json_object_get (st, "keys"), "values_on_old_keys")))
            usleep (100000);
        else
            break;
    } while (clock_mono_ms () < until);
    assert_true (json_is_true (json_object_get (json_object_get (st, "keys"), "retired_key")));
    assert_int_equal (json_integer_value (json_object_get (json_object_get (st, "keys"), "values_on_old_keys")), 1);
    json_decref (st);
    /* and doctor says so among its facts */
    st = harness_ctl (h, &rc, "doctor", "--integration", "proc:a", NULL);
    assert_int_equal (rc, 0);
    char *facts = json_dumps (json_object_get (json_object_get (st, "diagnosis"), "facts"), 0);
    assert_non_null (strstr (facts, "sealed with retired key"));
    assert_non_null (strstr (facts, "1 stored values"));
    free (facts);
    json_decref (st);
    /* no key in any log */
    assert_false (itest_workdir_contains (h, k1));
    assert_false (itest_workdir_contains (h, k2));
    assert_false (itest_workdir_contains (h, fp));
    free (fp1);
    free (rt);
    free (k1);
    free (k2);
    free (fp);
}

/* Polls the series until it satisfies want (0: equal to zero, 1: above zero), 15 s at most:
 * the workers count every FERRULE_KEY_STATS_MS. */
static long long
wait_metric (const char *worker, const char *name, int above_zero)
{
    long long v = -1;
    for (int i = 0; i < 150; i++) {
        v = (long long) itest_metric (h, worker, name);
        if (above_zero ? v > 0 : v == 0)
            break;
        usleep (100000);
    }
    return v;
}

#define REKEY_INTEGRATIONS 40
#define LOAD_BEFORE 20              /* requests before the rekey starts */
#define LOAD_MIN 120                /* requests at least, whatever the rekey's speed */

/* The load: token and refresh requests over every integration, until told to stop on stop_fd
 * (and at least LOAD_MIN); a byte on started_fd once LOAD_BEFORE are done. Exits with the
 * number of failed requests. Over one client connection, paced (a request every 20 ms or so),
 * not a ferrulectl run each: their start-up, slow under the sanitizers, made this test's length
 * follow the machine's load (163 s in the sanitized tree on a busy machine, 56 s on a quiet one;
 * 52 s now). */
static int
load (int started_fd, int stop_fd)
{
    int failures = 0, stop = 0;
    char id [32];
    fcntl (stop_fd, F_SETFL, O_NONBLOCK);
    client_t *c = client_new (harness_brokers (h));
    if (!c)
        return 250;
    for (int i = 0; !stop || i < LOAD_MIN; i++) {
        const char *op = i % 3 == 0 ? "refresh" : "token";
        snprintf (id, sizeof id, "rk:%d", i % REKEY_INTEGRATIONS);
        json_t *args = json_pack ("{s:s}", "integration", id);
        json_t *r = client_call (c, op, args, 10000);
        json_decref (args);
        if (client_exit_code (r) != 0) {
            fprintf (stderr, "load: %s of %s failed: %s\n", op, id, client_error_code (r));
            failures++;
        }
        json_decref (r);
        if (i + 1 == LOAD_BEFORE && write (started_fd, "s", 1) != 1)
            failures++;
        char b;
        if (!stop && read (stop_fd, &b, 1) != -1)
            stop = 1;
        usleep (20000);
    }
    client_destroy (&c);
    return failures > 250 ? 250 : failures;
}

/* Waits for the live keys the workers recorded (worker_keys) to be want: live keys other than
   `old` times 10 plus all live keys. A schema without the table (before migration 023) is not
   waited on, so that the rekeys that follow run and show the guard of then. */
static void
wait_live_keys (long long old, long long want)
{
    char sql [512];
    if (harness_sql_int (h, "SELECT (to_regclass ('worker_keys') IS NULL)::int"))
        return;
    snprintf (sql, sizeof sql, "SELECT count(*) FILTER (WHERE key_id <> %lld) * 10 + count(*) FROM worker_keys"
              " WHERE live_until > now ()", old);
    assert_int_equal (itest_wait_sql (h, sql, want, 30000), want);
}

static void
restart_worker (const char *id)
{
    assert_int_equal (harness_stop_worker (h, id), 0);
    assert_int_equal (harness_start_worker (h, id), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
}

/* item 7: rekey while tokens are requested and refreshed; then the old key goes */
static void
test_rekey_under_load (void **state)
{
    (void) state;
    int rc;
    char id [32], *out = NULL;
    h = harness_new ("secrets_rekey");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_ADMIN_RATE_BURST", "1000");
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "1000");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    assert_true (harness_start_broker (h) >= 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
    for (int i = 0; i < REKEY_INTEGRATIONS; i++) {
        snprintf (id, sizeof id, "rk:%d", i);
        import_one (id, i % 2 ? "fakegoogle" : "fakebox");
        json_t *t = harness_ctl (h, &rc, "token", "--integration", id, NULL);
        assert_int_equal (rc, 0);
        json_decref (t);
    }
    /* a connect in progress: its PKCE verifier is sealed too */
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "rk:new", "--provider", "fakebox",
                             "--redirect-uri", "https://app.example/cb", NULL);
    assert_int_equal (rc, 0);
    json_decref (c);
    long long old_id = harness_sql_int (h, "SELECT min(key_id) FROM integrations");
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 1);

    /* a key no worker uses: rekey refuses to re-seal everything under it */
    char *k3 = new_key ();
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k3);
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", harness_encryption_key (h));
    assert_int_equal (harness_migrate (h, NULL, "rekey", NULL), 2);
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT min(key_id) FROM integrations"), old_id);
    free (k3);

    /* rotation steps 1-2, one worker at a time so the service keeps serving */
    char *k2 = new_key ();
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k2);
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", harness_encryption_key (h));
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
    assert_int_equal (harness_stop_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);

    /* the workers' record of the old key lapses two key counts after the last worker left it */
    wait_live_keys (old_id, 11);
    /* the metric: every value of before the rotation is on the old key */
    assert_true (wait_metric ("w1", "ferrule_worker_values_on_old_keys", 1) >= REKEY_INTEGRATIONS);
    /* every UPDATE of integrations that rekey sends, with its transaction and rows: a batch
       writes its rows with one statement, so it holds their locks for two round trips, not one
       a row (the workers' own updates are not counted) */
    assert_int_equal (harness_sql (h,
        "CREATE TABLE rekey_writes (xid bigint, rows bigint);"
        "CREATE FUNCTION rekey_writes_count () RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF current_setting ('application_name') = 'ferrule-migrate' THEN"
        "  INSERT INTO rekey_writes SELECT txid_current (), count(*) FROM n; END IF;"
        " RETURN NULL; END $$;"
        "CREATE TRIGGER rekey_writes AFTER UPDATE ON integrations REFERENCING NEW TABLE AS n"
        " FOR EACH STATEMENT EXECUTE FUNCTION rekey_writes_count ()"), 0);
    int started [2], stop [2];
    assert_int_equal (pipe (started), 0);
    assert_int_equal (pipe (stop), 0);
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        close (started [0]);
        close (stop [1]);
        _exit (load (started [1], stop [0]));
    }
    close (started [1]);
    close (stop [0]);
    /* the load runs before, during and after the rekey; small batches interleave with it */
    char b;
    assert_int_equal (read (started [0], &b, 1), 1);
    rc = harness_migrate (h, &out, "rekey", "--batch", "3", NULL);
    assert_int_equal (write (stop [1], "x", 1), 1);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (out, "0 values remain"));
    assert_non_null (strstr (out, "and 1 connects"));     /* the verifier: nothing else re-seals it */
    assert_null (strstr (out, "re-sealed 0 integrations"));
    const char *resealed = strstr (out, "re-sealed ");
    assert_non_null (resealed);
    long long integrations = strtoll (resealed + strlen ("re-sealed "), NULL, 10);
    free (out);
    /* one UPDATE per batch, and together they wrote every row re-sealed */
    if (harness_sql_int (h, "SELECT count(*) FROM (SELECT 1 FROM rekey_writes GROUP BY xid HAVING count(*) > 1) b"))
        fail_msg ("rekey sent %lld UPDATEs in %lld batches: more than one in a batch",
                  harness_sql_int (h, "SELECT count(*) FROM rekey_writes"),
                  harness_sql_int (h, "SELECT count(DISTINCT xid) FROM rekey_writes"));
    assert_int_equal (harness_sql_int (h, "SELECT coalesce (sum (rows), 0) FROM rekey_writes"), integrations);
    assert_int_equal (harness_sql (h, "DROP TRIGGER rekey_writes ON integrations"), 0);
    close (started [0]);
    close (stop [1]);
    int status = 0;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);             /* no failed request */

    /* every value on the new key, no chain break at Ferrule or at the provider */
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE key_id = %lld", old_id);
    assert_int_equal (harness_sql_int (h, sql), 0);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pending_authorizations WHERE key_id = %lld", old_id);
    assert_int_equal (harness_sql_int (h, sql), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome IN ('invalid_grant', 'conflict')"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    /* the metric, and status */
    assert_int_equal (wait_metric ("w1", "ferrule_worker_values_on_old_keys", 0), 0);
    assert_int_equal (wait_metric ("w2", "ferrule_worker_values_on_old_keys", 0), 0);
    json_t *st = harness_ctl (h, &rc, "status", "--integration", "rk:0", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (json_object_get (st, "keys"), "values_on_old_keys")), 0);
    json_decref (st);

    /* resumable and idempotent: a second run finds nothing */
    assert_int_equal (harness_migrate (h, &out, "rekey", NULL), 0);
    assert_non_null (strstr (out, "re-sealed 0 integrations and 0 connects"));
    free (out);

    /* drop the old key: every integration still refreshes and serves */
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", NULL);
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_stop_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
    for (int i = 0; i < REKEY_INTEGRATIONS; i++) {
        snprintf (id, sizeof id, "rk:%d", i);
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
        assert_int_equal (rc, 0);
        json_decref (t);
        t = harness_ctl (h, &rc, "token", "--integration", id, NULL);
        assert_int_equal (rc, 0);
        json_decref (t);
    }
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_false (itest_workdir_contains (h, k2));
    free (k2);
}

/* rekey takes as current only the key the workers say they seal with: not the old key with the
   new one as old (most values are still on the old key, so a value sealed under it proves
   nothing), and not while a rolling change has workers on two keys */
static void
test_rekey_guard_follows_the_workers (void **state)
{
    (void) state;
    int rc;
    char *out = NULL, old [256];
    h = harness_new ("secrets_rekey_guard");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_KEY_STATS_MS", "1000");
    assert_true (harness_start_broker (h) >= 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);
    import_one ("rg:0", "fakebox");
    import_one ("rg:1", "fakegoogle");
    long long k1 = harness_sql_int (h, "SELECT min(key_id) FROM integrations");

    /* every worker on k2; one more value, sealed under k2 */
    char *k2 = new_key ();
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k2);
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", harness_encryption_key (h));
    restart_worker ("w1");
    restart_worker ("w2");
    import_one ("rg:2", "fakebox");
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 2);
    long long k2_id = harness_sql_int (h, "SELECT key_id FROM integrations WHERE id = 'rg:2'");
    wait_live_keys (k1, 11);

    /* the files swapped: k1 given as current. Refused, and nothing re-sealed */
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", harness_encryption_key (h));
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", k2);
    assert_int_equal (harness_migrate (h, NULL, "rekey", NULL), 2);
    assert_true (itest_workdir_contains (h, "the workers seal with key"));
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 2);

    /* a rolling change to k3 half done: w1 on k3, w2 still on k2. Refused with either key */
    char *k3 = new_key ();
    snprintf (old, sizeof old, "%s,%s", k2, harness_encryption_key (h));
    harness_set_env (h, "FERRULE_ENCRYPTION_KEY", k3);
    harness_set_env (h, "FERRULE_ENCRYPTION_OLD_KEYS", old);
    restart_worker ("w1");
    wait_live_keys (k1, 22);
    assert_int_equal (harness_migrate (h, NULL, "rekey", NULL), 2);
    assert_true (itest_workdir_contains (h, "rolling key change is not finished"));
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 2);

    /* the rollout finished: rekey moves everything to k3 */
    restart_worker ("w2");
    char sql [256];
    /* k2's record lapses: live keys other than k2, k3 only */
    wait_live_keys (k2_id, 11);
    rc = harness_migrate (h, &out, "rekey", NULL);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (out, "0 values remain"));
    free (out);
    assert_int_equal (harness_sql_int (h, "SELECT count(DISTINCT key_id) FROM integrations"), 1);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE key_id IN (%lld, %lld)", k1, k2_id);
    assert_int_equal (harness_sql_int (h, sql), 0);
    free (k2);
    free (k3);
}

/* A database URL of another scheme ("postgresql+psycopg2://", as a Python stack spells it), or
 * one whose scheme was left off: libpq took it for a database name, the server answered that no
 * database of that name exists, and the worker logged its answer, password and all, once a
 * connection attempt. Now the worker refuses to start with a message that does not show it. Here
 * libpq's PG* variables point at the real server, which is what made it quote the name. */
static void
test_database_url_of_another_scheme_is_not_shown (void **state)
{
    (void) state;
    h = harness_new ("secrets_dburl");
    assert_non_null (h);
    PQconninfoOption *opts = PQconninfoParse (harness_runtime_url (h), NULL);
    assert_non_null (opts);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *var = strcmp (o->keyword, "host") == 0 ? "PGHOST" : strcmp (o->keyword, "port") == 0 ? "PGPORT"
                        : strcmp (o->keyword, "user") == 0 ? "PGUSER" : strcmp (o->keyword, "password") == 0
                        ? "PGPASSWORD" : NULL;
        if (var && o->val)
            harness_set_env (h, var, o->val);
    }
    PQconninfoFree (opts);
    assert_true (harness_start_broker (h) >= 0);
    const char *urls [] = { "postgresql+psycopg2://ferrule:Sup3rDbSecretPw@127.0.0.1:1/ferrule",
                            "ferrule:Sup3rDbSecretPw@127.0.0.1:1/ferrule" };
    for (int i = 0; i < 2; i++) {
        char id [8];
        snprintf (id, sizeof id, "w%d", i);
        harness_set_env (h, "FERRULE_DATABASE_URL", urls [i]);
        assert_int_equal (harness_start_worker (h, id), 0);
        int status = harness_wait_worker_exit (h, id, 5000);
        if (itest_workdir_contains (h, "Sup3rDbSecretPw"))
            fail_msg ("a database URL's password reached a log (url %d; the worker %s)", i,
                      status < 0 ? "kept running" : "exited");
        assert_int_equal (status, 2);
    }
    assert_true (itest_workdir_contains (h, "it is not shown: it may hold a password"));
}

/* item 9: refresh and connect per integration are limited; other integrations are not */
static void
test_rate_limit (void **state)
{
    (void) state;
    int rc;
    h = harness_new ("secrets_rate");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_ADMIN_RATE_BURST", "3");
    harness_set_env (h, "FERRULE_ADMIN_RATE_PER_MIN", "1");
    assert_true (harness_start_broker (h) >= 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
    import_one ("rate:a", "fakegoogle");
    import_one ("rate:b", "fakegoogle");
    long long calls_before = itest_stat (h, "fakegoogle", "refresh_calls");
    for (int i = 0; i < 3; i++) {
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "rate:a", NULL);
        assert_int_equal (rc, 0);
        json_decref (t);
    }
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "rate:a", NULL);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "rate_limited");
    json_t *err = json_object_get (t, "error");
    assert_true (json_integer_value (json_object_get (err ? err : t, "retry_after")) >= 1);
    assert_non_null (strstr (json_string_value (json_object_get (err ? err : t, "message")), "rate:a"));
    json_decref (t);
    /* the refused call never reached the provider */
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), calls_before + 3);
    /* connect shares the integration's bucket; token requests are not limited */
    t = harness_ctl (h, &rc, "connect", "--integration", "rate:a", "--provider", "fakegoogle",
                     "--redirect-uri", "https://app.example/cb", NULL);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "rate_limited");
    json_decref (t);
    t = harness_ctl (h, &rc, "token", "--integration", "rate:a", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    /* another integration has its own bucket */
    t = harness_ctl (h, &rc, "refresh", "--integration", "rate:b", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);

    /* a client in a loop of "token", then "token" rejecting what it got (its API keeps refusing
     * a good token): each rejection forced a provider call, with no limit, and a client the
     * policy keeps from "refresh" could do it too. The forced refreshes share the bucket. */
    import_one ("rate:c", "fakegoogle");
    t = harness_ctl (h, &rc, "token", "--integration", "rate:c", NULL);    /* its first access token */
    assert_int_equal (rc, 0);
    json_decref (t);
    calls_before = itest_stat (h, "fakegoogle", "refresh_calls");
    int limited = 0;
    for (int i = 0; i < 6; i++) {
        t = harness_ctl (h, &rc, "token", "--integration", "rate:c", NULL);
        assert_int_equal (rc, 0);
        char *at = strdup (json_string_value (json_object_get (t, "access_token")));
        json_decref (t);
        t = harness_ctl (h, &rc, "token", "--integration", "rate:c", "--reject", at, NULL);
        free (at);
        if (rc == 5 && strcmp (itest_code (t), "rate_limited") == 0) {
            json_t *e2 = json_object_get (t, "error");
            const char *m = json_string_value (json_object_get (e2 ? e2 : t, "message"));
            assert_non_null (m);
            assert_non_null (strstr (m, "rejected"));
            limited++;
        }
        else
            assert_int_equal (rc, 0);
        json_decref (t);
    }
    long long calls = itest_stat (h, "fakegoogle", "refresh_calls") - calls_before;
    if (calls > 3 || limited < 3)
        fail_msg ("6 rejections: %lld provider calls (the bucket holds 3), %d answered rate_limited", calls, limited);

    /* only calls that could go on count: malformed connects and refreshes of an integration that
     * does not exist took from the bucket, so that a client's bug (or anyone) left the
     * integration's next good connect rate_limited for minutes, and ids that were never stored
     * filled the worker's table of limits */
    for (int i = 0; i < 4; i++) {
        t = harness_ctl (h, &rc, "connect", "--integration", "rate:d", "--provider", "fakegoogle",
                         "--redirect-uri", "not-a-uri", NULL);
        if (rc != 2)
            fail_msg ("malformed connect %d: %s (exit %d), expected bad_request", i, itest_code (t), rc);
        json_decref (t);
        t = harness_ctl (h, &rc, "refresh", "--integration", "rate:nobody", NULL);
        if (rc != 3)
            fail_msg ("refresh %d of an integration never stored: %s (exit %d), expected not_found", i,
                      itest_code (t), rc);
        json_decref (t);
    }
    t = harness_ctl (h, &rc, "connect", "--integration", "rate:d", "--provider", "fakegoogle",
                     "--redirect-uri", "https://app.example/cb", NULL);
    if (rc != 0)
        fail_msg ("a good connect after 4 malformed ones: %s (exit %d)", itest_code (t), rc);
    json_decref (t);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_runtime_role, setup, teardown),
        cmocka_unit_test_setup_teardown (test_secrets_in_process, setup, teardown),
        cmocka_unit_test_setup_teardown (test_rekey_under_load, setup, teardown),
        cmocka_unit_test_setup_teardown (test_rekey_guard_follows_the_workers, setup, teardown),
        cmocka_unit_test_setup_teardown (test_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown (test_database_url_of_another_scheme_is_not_shown, setup, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
