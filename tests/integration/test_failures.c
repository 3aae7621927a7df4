/* test_failures.c - what the provider says when things go wrong, and what callers are told:
 * invalid_grant stops all provider calls, transient failures keep the integration active,
 * garbage answers are reported, not crashed on */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/wait.h>
#include <unistd.h>
#include "clock.h"
#include "itest.h"

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("failures");
    if (!h)
        return -1;
    /* short provider timeouts so the slow-provider case stays quick, and long enough for the
     * slow-provider test's 2.5 s latency, with room for a loaded machine; a lease longer than a
     * call can take (the worker refuses one that is not) */
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "4000");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_LEASE_MS", "8000");
    /* each case here fails on purpose; the circuit breaker has its own test */
    harness_set_env (h, "FERRULE_BREAKER_MIN_FAILURES", "1000000");
    /* a backoff (3 to 6 s after one failure) that outlasts a ferrulectl run or two on a loaded
     * machine under AddressSanitizer: the default's 0.5 to 1 s did not, once, and 1.5 s was a
     * margin of 3 over what two runs took on an idle one */
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "6000");
    /* fakeapp: an entry of the operator's own (fakebox's settings at its own fake provider) that
     * lists no invalid_grant_codes, as a second Slack or GitHub app would (test_dead_token_codes) */
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!root)
        return -1;
    json_t *app = json_deep_copy (json_object_get (root, "fakebox"));
    char url [256], path [1024];
    static const char *const ends [] = { "authorization_url", "authorize", "token_url", "token", "revocation_url",
                                         "revoke" };
    for (int i = 0; i < 6; i += 2) {
        snprintf (url, sizeof url, "http://127.0.0.1:%d/fakeapp/%s", harness_port (h), ends [i + 1]);
        json_object_set_new (app, ends [i], json_string (url));
    }
    json_object_set_new (root, "fakeapp", app);
    snprintf (path, sizeof path, "%s/providers-failures.json", harness_workdir (h));
    int written = json_dump_file (root, path, JSON_INDENT (2));
    json_decref (root);
    if (written != 0)
        return -1;
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", path);
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static json_t *
token (const char *id, int *rc)
{
    return harness_ctl (h, rc, "token", "--integration", id, NULL);
}

static const char *
status_of (const char *id, json_t **keep)
{
    int rc;
    *keep = harness_ctl (h, &rc, "status", "--integration", id, NULL);
    return json_string_value (json_object_get (json_object_get (*keep, "integration"), "status"));
}

/* A later answer for a needs_reconnect integration: its message quotes the refusal (words), and
 * its hint says what to do about that refusal (advice). */
static void
later_answer_says (const json_t *reply, const char *words, const char *advice)
{
    const char *msg = json_string_value (json_object_get (json_object_get (reply, "error"), "message"));
    const char *hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
    if (!msg || !strstr (msg, words))
        fail_msg ("a later answer does not quote \"%s\": %s", words, msg ? msg : "(no message)");
    if (!hint || !strstr (hint, advice))
        fail_msg ("a later answer's hint does not say \"%s\": %s", advice, hint ? hint : "(no hint)");
}

static void
test_invalid_grant_needs_reconnect (void **state)
{
    int rc;
    /* a refresh token the provider never issued (or revoked): invalid_grant */
    assert_int_equal (itest_import (h, "dead:box", "fakebox", "fake-rt-00000000000000000000000000000000"), 0);
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = token ("dead:box", &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "needs_reconnect");
    const char *msg = json_string_value (json_object_get (json_object_get (t, "error"), "message"));
    const char *hint = json_string_value (json_object_get (json_object_get (t, "error"), "hint"));
    assert_non_null (strstr (msg, "invalid_grant"));
    assert_non_null (strstr (msg, "dead:box"));
    assert_non_null (strstr (hint, "connect"));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), before + 1);

    json_t *s;
    assert_string_equal (status_of ("dead:box", &s), "needs_reconnect");
    assert_string_equal (json_string_value (json_object_get (json_object_get (json_object_get (s, "integration"), "last_error"), "code")),
                         "needs_reconnect");

    /* from now on: answered at once, and the provider is never called again; every answer quotes
     * what the provider said, not only the one that met it */
    for (int i = 0; i < 5; i++) {
        json_t *again = token ("dead:box", &rc);
        assert_int_equal (rc, 4);
        assert_string_equal (itest_code (again), "needs_reconnect");
        later_answer_says (again, "answered invalid_grant: unknown refresh token",
                           "no longer accepts the stored refresh token");
        json_decref (again);
    }
    json_t *forced = harness_ctl (h, &rc, "refresh", "--integration", "dead:box", NULL);
    assert_int_equal (rc, 4);
    json_decref (forced);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), before + 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'dead:box' AND outcome = 'invalid_grant'"), 1);

    /* the same once the worker has read the integration from the database (another worker's
     * refusal, or a restart): the row's last error is what it quotes */
    assert_int_equal (harness_stop_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    json_t *read = token ("dead:box", &rc);
    assert_int_equal (rc, 4);
    later_answer_says (read, "answered invalid_grant: unknown refresh token",
                       "no longer accepts the stored refresh token");
    json_decref (read);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), before + 1);

    /* reconnecting (a new import) makes it active again */
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "dead:box", "fakebox", rt), 0);
    json_t *ok = token ("dead:box", &rc);
    assert_int_equal (rc, 0);
    json_t *s2;
    assert_string_equal (status_of ("dead:box", &s2), "active");
    free (rt);
    json_decref (ok);
    json_decref (t);
    json_decref (s);
    json_decref (s2);
}

/* A refresh that found the lease of a worker that never finished (an interrupted refresh), then
 * invalid_grant: the provider had rotated the token and the new one never reached the database,
 * unless that worker still commits it. The answer says so, and so did only that one: later
 * answers told every caller the stock "disconnect, then connect", though the integration may
 * still recover. */
static void
test_an_interrupted_refresh_is_said_by_every_later_answer (void **state)
{
    int rc;
    assert_int_equal (itest_import (h, "cut:box", "fakebox", "fake-rt-11111111111111111111111111111111"), 0);
    /* the lease of a refresh on a worker that stopped mid-call (expired: taken over at once) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET lease_owner = 'w9', lease_token = gen_random_uuid (),"
                                      " lease_expires_at = clock_timestamp () - interval '1 second'"
                                      " WHERE id = 'cut:box'"), 0);
    json_t *first = token ("cut:box", &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (first), "needs_reconnect");
    later_answer_says (first, "after an interrupted refresh", "unless the worker that was refreshing it");
    for (int i = 0; i < 2; i++) {
        json_t *again = token ("cut:box", &rc);
        assert_int_equal (rc, 4);
        later_answer_says (again, "after an interrupted refresh", "unless the worker that was refreshing it");
        json_decref (again);
    }
    json_decref (first);
}

static void
test_transient_stays_active (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "flaky:box", "fakebox", rt), 0);

    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = token ("flaky:box", &rc);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "provider_unavailable");
    assert_true (json_integer_value (json_object_get (json_object_get (t, "error"), "retry_after")) >= 1);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);

    /* during the backoff: answered at once, no provider call (asked at once, before anything
     * else: the backoff is the window this must fall in) */
    json_t *t2 = token ("flaky:box", &rc);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t2), "provider_unavailable");
    assert_true (json_integer_value (json_object_get (json_object_get (t2, "error"), "retry_after")) >= 1);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    json_t *s;
    assert_string_equal (status_of ("flaky:box", &s), "active");

    /* the fault spent nothing: after the backoff the same refresh token works. Asked until the
     * backoff (up to 6 s) is over, with room: 50 tries 100 ms apart took less than that once */
    json_t *t3 = NULL;
    int64_t until = clock_mono_ms () + 15000;
    do {
        json_decref (t3);
        t3 = token ("flaky:box", &rc);
        if (rc != 0)
            usleep (100000);
    } while (rc != 0 && clock_mono_ms () < until);
    assert_int_equal (rc, 0);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 2);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'flaky:box' AND outcome = 'transient'"), 1);
    free (rt);
    json_decref (t);
    json_decref (t2);
    json_decref (t3);
    json_decref (s);
}

/* A backoff outlives the worker's reconnection to the database. A new connection clears the
 * cache (changes made meanwhile were not notified), and the backoff went with it: after each
 * reconnection (a failover, a pooler recycling its connections) every integration in backoff got
 * a provider call at its next request, the storm a backoff is there to prevent. */
static void
test_backoff_survives_a_reconnect (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "flaky2:box", "fakebox", rt), 0);
    free (rt);
    /* Retry-After: 60, which the backoff is never shorter than: a slow reconnection on a loaded
     * machine stays well inside it */
    itest_fault (h, "fakebox", "status", 1, 503, 60, -1);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = token ("flaky2:box", &rc);
    assert_int_equal (rc, 5);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);

    /* every connection of the worker ended; wait until it has made them again */
    const char *mine = "application_name = 'ferrule-worker w1' AND datname = current_database ()";
    char sql [512], before [256];
    PGresult *r = PQexec (harness_db (h), "SELECT coalesce (string_agg (pid::text, ','), '0') FROM pg_stat_activity"
                                          " WHERE application_name = 'ferrule-worker w1' AND datname = current_database ()");
    snprintf (before, sizeof before, "%s", PQresultStatus (r) == PGRES_TUPLES_OK ? PQgetvalue (r, 0, 0) : "0");
    PQclear (r);
    long long had = harness_sql_int (h, "SELECT count (*) FROM pg_stat_activity WHERE application_name = "
                                        "'ferrule-worker w1' AND datname = current_database ()");
    snprintf (sql, sizeof sql, "SELECT count (pg_terminate_backend (pid)) FROM pg_stat_activity WHERE pid IN (%s)", before);
    assert_true (harness_sql_int (h, sql) >= 1);
    snprintf (sql, sizeof sql, "SELECT count (*) FROM pg_stat_activity WHERE %s AND pid NOT IN (%s)", mine, before);
    for (int64_t until = clock_mono_ms () + 3000; harness_sql_int (h, sql) < had && clock_mono_ms () < until;)
        usleep (20000);
    assert_true (harness_sql_int (h, sql) >= had);
    usleep (100000);                            /* the loop's turn that follows the reconnection */

    t = token ("flaky2:box", &rc);
    long long made = itest_stat (h, "fakebox", "refresh_calls") - calls;
    if (rc != 5 || made != 1)
        fail_msg ("after a reconnection, within the backoff: %s, %lld provider calls (1 wanted: the failure's)",
                  rc == 0 ? "a token" : itest_code (t), made);
    json_decref (t);
}

static void
test_retry_after_is_honoured (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "limited:box", "fakebox", rt), 0);
    itest_fault (h, "fakebox", "retry_after", 1, 429, 7, -1);
    int64_t asked_ms = clock_mono_ms ();
    json_t *t = token ("limited:box", &rc);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "provider_unavailable");
    assert_int_equal (json_integer_value (json_object_get (json_object_get (t, "error"), "retry_after")), 7);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t2 = token ("limited:box", &rc);
    assert_int_equal (rc, 5);
    long long ra = json_integer_value (json_object_get (json_object_get (t2, "error"), "retry_after"));
    /* what is left of the 7 s, rounded up: at most 7, and less by no more than the time the two
     * requests took (a loaded machine can take over a second for two ferrulectl runs) */
    long long took_s = (clock_mono_ms () - asked_ms + 999) / 1000;
    if (ra > 7 || ra < 7 - took_s || ra < 1)
        fail_msg ("retry_after %lld on the second request, %lld s after the first was sent", ra, took_s);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls);
    free (rt);
    json_decref (t);
    json_decref (t2);
}

/* A caller's min_valid is a promise the service keeps: while refreshes back off (or the circuit is
 * open), a still-valid token that does not last what the request asked for is an error saying how
 * long the token has left and that a lower min_valid gets it, not a token that expires before the
 * caller is done with it; a request without min_valid still gets the token, as before. */
static void
test_backoff_keeps_min_valid (void **state)
{
    int rc;
    static const char at [] = "at-short-lived-0123456789abcdef";
    char *rt = itest_grant (h, "fakebox", NULL);
    /* 45 s left: less than the service's default min_valid (60), so even a request without one
     * goes past the cache to the backoff */
    json_t *imp = harness_ctl (h, &rc, "import", "--integration", "short:box", "--provider", "fakebox",
                               "--refresh-token", rt, "--access-token", at, "--expires-in", "45", NULL);
    free (rt);
    assert_int_equal (rc, 0);
    json_decref (imp);
    /* Retry-After 60: the backoff outlasts the requests below on any machine */
    itest_fault (h, "fakebox", "status", 1, 503, 60, -1);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = token ("short:box", &rc);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "provider_unavailable");
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);

    /* during the backoff, a min_valid the token cannot meet: an error, not the short token */
    t = harness_ctl (h, &rc, "token", "--integration", "short:box", "--min-valid", "300", NULL);
    if (rc != 5 || strcmp (itest_code (t), "provider_unavailable") != 0)
        fail_msg ("min_valid 300 with 45 s left, during a backoff: \"%s\" (exit %d), wanted provider_unavailable "
                  "(exit 5)%s", itest_code (t), rc, rc == 0 ? ", a token that breaks the promise" : "");
    const json_t *err = json_object_get (t, "error");
    long long ra = json_integer_value (json_object_get (err, "retry_after"));
    assert_true (ra >= 1 && ra <= 60);
    const char *hint = json_string_value (json_object_get (err, "hint"));
    assert_non_null (hint);
    if (!strstr (hint, "expires in") || !strstr (hint, "min_valid"))
        fail_msg ("the hint does not say how long the token has left and what min_valid gets it: %s", hint);
    json_decref (t);

    /* without min_valid, and with one the token meets: the still-valid token */
    t = token ("short:box", &rc);
    assert_int_equal (rc, 0);
    itest_assert_same_token (json_string_value (json_object_get (t, "access_token")), at, "no min_valid, backing off");
    json_decref (t);
    t = harness_ctl (h, &rc, "token", "--integration", "short:box", "--min-valid", "5", NULL);
    assert_int_equal (rc, 0);
    itest_assert_same_token (json_string_value (json_object_get (t, "access_token")), at, "min_valid 5, backing off");
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
}

static void
test_garbage_answers (void **state)
{
    static const struct { const char *kind; const char *code; int exit_code; } cases [] = {
        { "malformed", "provider_bad_response", 5 },
        { "html", "provider_bad_response", 5 },
        { "empty", "provider_bad_response", 5 },
        { "huge", "provider_bad_response", 5 },
        { "drop", "provider_unavailable", 5 },
        { "slow", "provider_unavailable", 5 },      /* slower than the 4 s provider timeout */
        { "invalid_client", "invalid_client", 6 },
    };
    int rc;
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        /* a fresh integration per case: a failure puts the one it happened to in backoff */
        char id [64];
        snprintf (id, sizeof id, "garbage%zu:box", i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
        free (rt);
        itest_fault (h, "fakebox", cases [i].kind, 1, -1, -1, strcmp (cases [i].kind, "slow") == 0 ? 6000 : -1);
        json_t *t = token (id, &rc);
        if (strcmp (itest_code (t), cases [i].code) != 0 || rc != cases [i].exit_code)
            fail_msg ("fault \"%s\": expected %s (exit %d), got \"%s\" (exit %d)", cases [i].kind, cases [i].code,
                      cases [i].exit_code, itest_code (t), rc);
        const char *msg = json_string_value (json_object_get (json_object_get (t, "error"), "message"));
        assert_non_null (strstr (msg, id));
        json_t *s;
        assert_string_equal (status_of (id, &s), "active");
        json_decref (s);
        json_decref (t);
    }
}

/* A provider answers 200 with a new refresh token but no access token: the grant took effect,
 * and the refresh token sent is spent (fakebox rotates, single use). The caller is told of the bad
 * answer; the new refresh token is stored, and the next refresh, after the backoff, gets a token.
 * The answer was dropped whole as garbage: the spent token stayed stored, and the next refresh
 * met the provider's reuse detection, the integration lost for good. */
static void
test_refresh_token_beside_an_unusable_access_token_is_kept (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "noat:box", "fakebox", rt), 0);
    free (rt);
    long long reuses = itest_stat (h, "fakebox", "reuse_detections");
    itest_fault (h, "fakebox", "no_access_token", 1, -1, -1, -1);
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "noat:box", NULL);
    const char *msg = json_string_value (json_object_get (json_object_get (t, "error"), "message"));
    if (rc != 5 || strcmp (itest_code (t), "provider_bad_response") != 0 || !msg || !strstr (msg, "is stored"))
        fail_msg ("the unusable answer: exit %d, %s: %s", rc, itest_code (t), msg ? msg : "");
    json_decref (t);
    assert_int_equal (harness_sql_int (h, "SELECT generation FROM integrations WHERE id = 'noat:box'"), 2);
    /* after the backoff (FERRULE_BACKOFF_BASE_MS, 6 s here), a token request refreshes (asked with
     * "token", which the per-integration rate limit of "refresh" does not count) */
    t = NULL;
    for (int64_t end = clock_mono_ms () + 20000; clock_mono_ms () < end;) {
        json_decref (t);
        t = harness_ctl (h, &rc, "token", "--integration", "noat:box", NULL);
        if (strcmp (itest_code (t), "provider_bad_response") != 0)
            break;
        usleep (500000);
    }
    if (rc != 0)
        fail_msg ("the refresh after it: exit %d, %s", rc, itest_code (t));
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), reuses);
    json_t *s;
    assert_string_equal (status_of ("noat:box", &s), "active");
    json_decref (s);
}

/* A single-use provider (fakebox: each refresh spends the token sent) that answers 200 without a
 * refresh token has spent the one sent and kept its successor: the provider's fault. The access
 * token is still served (it is valid), but the worker says whose fault it is in a warning and in
 * the chain row, and doctor, once the next refresh is refused, blames the provider rather than
 * the user. It was taken for a plain refresh ("refresh token kept"), and doctor blamed the user. */
static void
test_single_use_answer_without_a_refresh_token_is_named (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "nort:box", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "no_refresh_token", 1, -1, -1, -1);
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "nort:box", NULL);
    if (rc != 0)
        fail_msg ("the refresh answered without a refresh token: exit %d, %s", rc, itest_code (t));
    json_decref (t);
    unsigned long long more;
    assert_int_equal (itest_log_lines (h, "w1", "answered without a new refresh token", &more), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'nort:box'"
                                          " AND outcome = 'refreshed' AND NOT rotated"
                                          " AND detail LIKE '%no new refresh token from a single-use provider%'"), 1);
    /* the provider spent the token kept: the next refresh is refused, and doctor says why */
    itest_expire (h, "nort:box");
    t = harness_ctl (h, &rc, "token", "--integration", "nort:box", NULL);
    assert_string_equal (itest_code (t), "needs_reconnect");
    json_decref (t);
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "nort:box", NULL);
    const char *cause = json_string_value (json_object_get (json_object_get (d, "diagnosis"), "cause"));
    if (!cause || !strstr (cause, "without a new refresh token"))
        fail_msg ("doctor's cause does not name the provider's answer without a refresh token: %s", cause ? cause : "");
    json_decref (d);
}

/* A provider that refuses this deployment's client (invalid_client: a wrong secret in the catalog)
 * refuses every refresh until an operator acts: the worker backs off per integration as after a
 * transient failure, and meanwhile tells each caller what the provider said, without calling it
 * again for each request. The code before called it for every request. */
static void
test_refused_client_backs_off (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "badclient:box", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "invalid_client", 50, -1, -1, -1);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    for (int i = 0; i < 10; i++) {
        json_t *t = token ("badclient:box", &rc);
        if (strcmp (itest_code (t), "invalid_client") != 0 || rc != 6)
            fail_msg ("request %d: \"%s\" (exit %d), not invalid_client (exit 6)", i, itest_code (t), rc);
        json_decref (t);
    }
    long long made = itest_stat (h, "fakebox", "refresh_calls") - calls;
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakebox", NULL));
    printf ("10 token requests, provider calls: %lld\n", made);
    assert_true (made >= 1 && made <= 3);
}

/* A refresh that fails before the provider is called (here a stored refresh token that does not
 * open: damaged, or sealed under a key no longer given) backs off like a provider's refusal: it
 * took the lease and wrote a chain row, last_error and a notification for every request. */
static void
test_failure_before_the_call_backs_off (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "unsealed:box", "fakebox", rt), 0);
    free (rt);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET refresh_token = set_byte (refresh_token, 20,"
                                      " get_byte (refresh_token, 20) # 1) WHERE id = 'unsealed:box'"), 0);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    const char *first = NULL;
    for (int i = 0; i < 20; i++) {
        json_t *t = token ("unsealed:box", &rc);
        const char *code = itest_code (t);
        if (rc == 0 || !code || (strcmp (code, "configuration") != 0 && strcmp (code, "internal") != 0))
            fail_msg ("request %d: \"%s\" (exit %d), wanted the failure to open the token", i, code ? code : "", rc);
        if (!first)
            first = strcmp (code, "configuration") == 0 ? "configuration" : "internal";
        else
            assert_string_equal (code, first);      /* the backoff answers what the failure was */
        json_decref (t);
    }
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls);
    long long rows = harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'unsealed:box'"
                                         " AND outcome IN ('configuration', 'error')");
    printf ("20 token requests, chain rows of the failure: %lld\n", rows);
    if (rows < 1 || rows > 3)
        fail_msg ("20 token requests wrote %lld chain rows of the failure; a backoff keeps it to a few", rows);
}

/* Dead refresh tokens as providers spell them beyond RFC 6749: Slack's invalid_refresh_token
 * (HTTP 200, "ok": false), GitHub's bad_refresh_token (HTTP 200), HubSpot's BAD_REFRESH_TOKEN (400,
 * in "status"). They counted only for an entry that listed them in invalid_grant_codes, so at an
 * entry of the operator's own (a second Slack app) the answer was "configuration": the integration
 * stayed active, the provider was called again after each backoff, and doctor said configuration. */
static void
test_dead_token_codes (void **state)
{
    static const struct {
        const char *id, *kind, *error;
        int status;
    } cases [] = {
        { "slack2:app", "error_200", "invalid_refresh_token", -1 },
        { "github2:app", "error_200", "bad_refresh_token", -1 },
        { "hubspot2:app", "status_error", "BAD_REFRESH_TOKEN", 400 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int rc;
        char *rt = itest_grant (h, "fakeapp", NULL);
        assert_int_equal (itest_import (h, cases [i].id, "fakeapp", rt), 0);
        free (rt);
        json_t *f = json_pack ("{s:s, s:s, s:s}", "provider", "fakeapp", "kind", cases [i].kind, "error",
                               cases [i].error);
        if (cases [i].status >= 0)
            json_object_set_new (f, "status", json_integer (cases [i].status));
        json_decref (harness_fake (h, "POST", "/admin/faults", f));
        json_decref (f);
        long long calls = itest_stat (h, "fakeapp", "refresh_calls");
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", cases [i].id, NULL);
        if (strcmp (itest_code (t), "needs_reconnect") != 0 || rc != 4)
            fail_msg ("%s answered to a refresh: \"%s\" (exit %d), not needs_reconnect (exit 4)", cases [i].error,
                      itest_code (t), rc);
        json_decref (t);
        json_t *s;
        assert_string_equal (status_of (cases [i].id, &s), "needs_reconnect");
        json_decref (s);
        /* no further provider call */
        t = token (cases [i].id, &rc);
        assert_int_equal (rc, 4);
        assert_string_equal (itest_code (t), "needs_reconnect");
        json_decref (t);
        assert_int_equal (itest_stat (h, "fakeapp", "refresh_calls"), calls + 1);
        json_t *d = harness_ctl (h, &rc, "doctor", "--integration", cases [i].id, NULL);
        assert_int_equal (rc, 0);
        assert_string_equal (json_string_value (json_object_get (json_object_get (d, "diagnosis"), "code")),
                             "needs_reconnect");
        json_decref (d);
    }
}

static void
test_not_found_and_bad_input (void **state)
{
    int rc;
    json_t *t = token ("nobody:box", &rc);
    assert_int_equal (rc, 3);
    assert_string_equal (itest_code (t), "not_found");
    json_decref (t);
    t = harness_ctl (h, &rc, "status", "--integration", "nobody:box", NULL);
    assert_int_equal (rc, 3);
    json_decref (t);
    t = harness_ctl (h, &rc, "import", "--integration", "x:y", "--provider", "no-such-provider", "--refresh-token", "abc", NULL);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (t), "configuration");
    json_decref (t);
    t = harness_ctl (h, &rc, "token", "--integration", "bad id!", NULL);
    assert_int_equal (rc, 2);
    json_decref (t);

    /* ferrulectl's id rule is the worker's: the longest id reaches the worker, which does not
     * know it; one character more is refused before anything is sent */
    char id [130];
    memset (id, 'a', sizeof id - 1);
    id [128] = '\0';
    t = harness_ctl (h, &rc, "status", "--integration", id, NULL);
    assert_int_equal (rc, 3);
    assert_string_equal (itest_code (t), "not_found");
    json_decref (t);
    id [128] = 'a';
    id [129] = '\0';
    t = harness_ctl (h, &rc, "status", "--integration", id, NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (t), "bad_request");
    json_decref (t);
}

static void
test_slow_provider_does_not_stall_others (void **state)
{
    int rc;
    char *a = itest_grant (h, "fakebox", NULL);
    char *b = itest_grant (h, "fakegoogle", NULL);
    assert_int_equal (itest_import (h, "slow:box", "fakebox", a), 0);
    assert_int_equal (itest_import (h, "fast:google", "fakegoogle", b), 0);
    /* every fakebox answer takes 2.5 s (ten times what the fast one's ferrulectl run takes on an
     * idle machine under AddressSanitizer); fakegoogle answers at once */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 2500));

    pid_t child = fork ();
    if (child == 0) {
        int crc;
        json_t *r = harness_ctl (h, &crc, "token", "--integration", "slow:box", NULL);
        json_decref (r);
        _exit (crc == 0 ? 0 : 1);
    }
    /* while the slow call is in flight on the same worker, the other integration refreshes */
    assert_true (itest_wait_stat (h, "fakebox", "max_concurrent_refresh", 1, 20000) >= 1);
    json_t *t = token ("fast:google", &rc);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t, "refreshed")));
    int status = 0;
    waitpid (child, &status, 0);
    assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    /* the fast one committed before the slow one: it did not wait behind it (read from the
     * chain's order, not from what this test saw when, which a loaded machine stretches) */
    assert_int_equal (harness_sql_int (h, "SELECT ((SELECT max (seq) FROM token_chain WHERE integration_id = 'fast:google'"
                                          " AND outcome = 'refreshed') < (SELECT max (seq) FROM token_chain"
                                          " WHERE integration_id = 'slow:box' AND outcome = 'refreshed'))::int"), 1);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    free (a);
    free (b);
    json_decref (t);
}

/* A request whose deadline comes while its worker's own provider call is still in flight is
 * answered by the worker just before that deadline, naming the provider and how long the call has
 * run: the broker's answer at the deadline said only that the worker had not answered, which sent
 * operators looking at a healthy worker. The refresh goes on and the next request is served from
 * it, without a second call. */
/* The request id of w1's last log line about integration whose message contains needle, into
 * rid ("" when that line carries none); 0 when there is no such line. */
static int
request_of_line (const char *integration, const char *needle, char *rid, size_t len)
{
    char path [4096];
    static char line [65536];
    snprintf (path, sizeof path, "%s/w1.log", harness_workdir (h));
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    int found = 0;
    rid [0] = '\0';
    while (fgets (line, sizeof line, f)) {
        json_t *o = json_loads (line, 0, NULL);
        const char *msg = json_string_value (json_object_get (o, "msg"));
        const char *id = json_string_value (json_object_get (o, "integration"));
        const char *req = json_string_value (json_object_get (o, "request"));
        if (msg && strstr (msg, needle) && id && strcmp (id, integration) == 0) {
            snprintf (rid, len, "%s", req ? req : "");
            found = 1;
        }
        json_decref (o);
    }
    fclose (f);
    return found;
}

static void
test_a_slow_provider_past_the_deadline_is_named (void **state)
{
    (void) state;
    int rc;
    char *a = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "late:box", "fakebox", a), 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 2500));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");

    json_t *r = itest_call_once (harness_brokers (h), "token", "late:box", 1000);
    assert_non_null (r);
    itest_assert_timeout_says (r, "provider \"fakebox\" has not answered",
                               "a request whose deadline came during its provider call");
    /* no retry_after: a retry at once joins the same refresh */
    assert_null (json_object_get (json_object_get (r, "error"), "retry_after"));
    json_decref (r);
    /* and the worker's log says it, for the operator who sees the timeouts counted */
    assert_true (itest_workdir_contains (h, "answered a request timeout before its deadline: integration"));

    /* the call ends (2.5 s) and commits; the next request gets its token */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'late:box'"
                                         " AND outcome = 'refreshed'", 1, 20000), 1);
    /* the refresh's own lines keep the id of the request that started it, answered or not */
    char asked [80], refreshed [80];
    assert_true (request_of_line ("late:box", "answered a request timeout before its deadline", asked, sizeof asked));
    for (int waited = 0; !request_of_line ("late:box", "refreshed: generation", refreshed, sizeof refreshed)
                         && waited < 10000; waited += 50)
        usleep (50 * 1000);          /* the line follows the commit: a hang guard, not a timing */
    assert_true (asked [0] != '\0');
    assert_string_equal (refreshed, asked);
    json_t *t = token ("late:box", &rc);
    assert_int_equal (rc, 0);
    assert_false (json_is_true (json_object_get (t, "refreshed")));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    json_decref (t);
    free (a);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_invalid_grant_needs_reconnect),
        cmocka_unit_test (test_an_interrupted_refresh_is_said_by_every_later_answer),
        cmocka_unit_test (test_transient_stays_active),
        cmocka_unit_test (test_backoff_survives_a_reconnect),
        cmocka_unit_test (test_retry_after_is_honoured),
        cmocka_unit_test (test_backoff_keeps_min_valid),
        cmocka_unit_test (test_garbage_answers),
        cmocka_unit_test (test_refresh_token_beside_an_unusable_access_token_is_kept),
        cmocka_unit_test (test_single_use_answer_without_a_refresh_token_is_named),
        cmocka_unit_test (test_refused_client_backs_off),
        cmocka_unit_test (test_failure_before_the_call_backs_off),
        cmocka_unit_test (test_dead_token_codes),
        cmocka_unit_test (test_not_found_and_bad_input),
        cmocka_unit_test (test_slow_provider_does_not_stall_others),
        cmocka_unit_test (test_a_slow_provider_past_the_deadline_is_named),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
