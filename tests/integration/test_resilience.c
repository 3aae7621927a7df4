/* test_resilience.c - callers never wait on a provider and failing integrations stay cheap:
 * stale-token feedback (--reject), refresh-ahead, the background sweep and its idle keep-alive,
 * and the per-provider circuit breaker */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "itest.h"

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("resilience");
    if (!h)
        return -1;
    /* providers file: the harness's, plus an idle limit on fakebox for the keep-alive case */
    char path [4096];
    snprintf (path, sizeof path, "%s/providers-idle.json", harness_workdir (h));
    json_error_t jerr;
    json_t *p = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!p)
        return -1;
    json_object_set_new (json_object_get (p, "fakebox"), "refresh_token_idle_days", json_integer (60));
    if (json_dump_file (p, path, JSON_INDENT (2)) != 0)
        return -1;
    json_decref (p);
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", path);
    harness_set_env (h, "FERRULE_SWEEP_MS", "300");
    harness_set_env (h, "FERRULE_SWEEP_HORIZON_S", "120");
    harness_set_env (h, "FERRULE_BREAKER_MIN_FAILURES", "3");
    /* long enough that the breaker test's fourth refresh, an import and two ferrulectl runs after
     * the circuit opened, still finds it open on a loaded machine under ASan (1.5 s was not) */
    harness_set_env (h, "FERRULE_BREAKER_OPEN_MS", "5000");
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "0");
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static long long
generation_of (const char *id)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT generation FROM integrations WHERE id = '%s'", id);
    return harness_sql_int (h, sql);
}

/* Waits up to timeout_ms for the stored generation to reach at least want. */
static long long
wait_generation (const char *id, long long want, int timeout_ms)
{
    long long g = generation_of (id);
    for (int waited = 0; g < want && waited < timeout_ms; waited += 100) {
        usleep (100000);
        g = generation_of (id);
    }
    return g;
}

typedef struct {
    const char *token;
    json_t *reply;
    pthread_barrier_t *start;
} rejecter_t;

static void *
rejecter (void *arg)
{
    rejecter_t *r = arg;
    client_t *cl = client_new (harness_brokers (h));
    json_t *args = json_pack ("{s:s, s:s}", "integration", "rej:box", "reject", r->token);
    pthread_barrier_wait (r->start);
    r->reply = client_call (cl, "token", args, 20000);
    json_decref (args);
    client_destroy (&cl);
    return NULL;
}

static void
test_reject (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "rej:box", "fakebox", rt), 0);
    json_t *t1 = harness_ctl (h, &rc, "token", "--integration", "rej:box", NULL);
    char *at1 = strdup (json_string_value (json_object_get (t1, "access_token")));
    long long calls = itest_stat (h, "fakebox", "refresh_calls");

    /* the caller's upstream said 401 to the current token: one refresh */
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "rej:box", "--reject", at1, NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t2, "refreshed")));
    char *at2 = strdup (json_string_value (json_object_get (t2, "access_token")));
    itest_assert_other_token (at2, at1, "the reply to the rejection of the current token");
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);

    /* rejecting a token already replaced: the newer one comes back, no provider call */
    json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "rej:box", "--reject", at1, NULL);
    assert_int_equal (rc, 0);
    itest_assert_same_token (json_string_value (json_object_get (t3, "access_token")), at2,
                             "the reply to the rejection of a token already replaced");
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);

    /* a burst of rejections of one token: exactly one refresh */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 200));
    enum { N = 20 };
    pthread_t threads [N];
    rejecter_t rs [N];
    pthread_barrier_t start;
    pthread_barrier_init (&start, NULL, N);
    for (int i = 0; i < N; i++) {
        rs [i] = (rejecter_t) { at2, NULL, &start };
        pthread_create (&threads [i], NULL, rejecter, &rs [i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join (threads [i], NULL);
    pthread_barrier_destroy (&start);
    const char *at3 = json_string_value (json_object_get (rs [0].reply, "access_token"));
    assert_non_null (at3);
    for (int i = 0; i < N; i++) {
        assert_true (json_is_true (json_object_get (rs [i].reply, "ok")));
        char what [80];
        snprintf (what, sizeof what, "rejecter %d (rejecter 0 is the reference)", i);
        itest_assert_same_token (json_string_value (json_object_get (rs [i].reply, "access_token")), at3, what);
    }
    itest_assert_other_token (at3, at2, "the burst of rejections");
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 2);
    for (int i = 0; i < N; i++)
        json_decref (rs [i].reply);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    assert_false (itest_workdir_contains (h, at1));
    assert_false (itest_workdir_contains (h, at2));
    free (rt);
    free (at1);
    free (at2);
    json_decref (t1);
    json_decref (t2);
    json_decref (t3);
}

static void
test_refresh_ahead (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "ahead:box", "fakebox", rt), 0);
    json_t *t1 = harness_ctl (h, &rc, "token", "--integration", "ahead:box", NULL);
    assert_int_equal (rc, 0);
    long long g = json_integer_value (json_object_get (t1, "generation"));
    /* a one-hour token with 200 s left is in its last 10 %: outside the sweep's 120 s horizon,
     * inside refresh-ahead's window */
    harness_sql (h, "WITH u AS (UPDATE integrations SET access_expires_at = now() + interval '200 seconds',"
                    " last_refresh_at = now() - interval '3400 seconds' WHERE id = 'ahead:box' RETURNING id)"
                    " SELECT pg_notify('ferrule_integrations', 'test ' || id) FROM u");
    usleep (200000);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "ahead:box", NULL);
    assert_int_equal (rc, 0);
    /* served at once from the cache, without waiting on the provider ... */
    assert_true (json_is_false (json_object_get (t2, "refreshed")));
    assert_int_equal (json_integer_value (json_object_get (t2, "generation")), g);
    /* ... and refreshed in the background right after */
    assert_int_equal (wait_generation ("ahead:box", g + 1, 5000), g + 1);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    free (rt);
    json_decref (t1);
    json_decref (t2);
}

static void
test_sweep_refreshes_before_expiry (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    /* imported with an access token that expires in 90 s: nobody asks for it */
    json_t *r = harness_ctl (h, &rc, "import", "--integration", "swept:box", "--provider", "fakebox",
                             "--refresh-token", rt, "--access-token", "fake-at-imported", "--expires-in", "90", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    /* a token of a one-hour lifetime with 90 s left, inside the 120 s horizon (a 90 s lifetime
     * would bound its horizon to a quarter of that: test_chain_safety covers short lifetimes) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_lifetime_s = 3600 WHERE id = 'swept:box'"), 0);
    assert_int_equal (wait_generation ("swept:box", 2, 8000), 2);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'swept:box'"
                                          " AND access_expires_at > now() + interval '3000 seconds'"), 1);
    free (rt);
}

/* Imports with an access token valid for an hour, so that the sweep leaves it alone and only
 * an explicit refresh calls the provider. */
static void
import_long_lived (const char *id, const char *provider)
{
    int rc;
    char *rt = itest_grant (h, provider, NULL);
    json_t *r = harness_ctl (h, &rc, "import", "--integration", id, "--provider", provider, "--refresh-token", rt,
                             "--access-token", "fake-at-imported", "--expires-in", "3600", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    free (rt);
}

/* A grant connected again after a long break starts a new idle period: its refresh token is new.
 * The idle clock read the old grant's last refresh (or the integration's first creation), so the
 * sweep refreshed a freshly reconnected integration at once, taking it for one left unused for
 * 40 of fakebox's 60 idle days (and the forecast could warn of its expiry). */
static void
test_reconnect_restarts_the_idle_clock (void **state)
{
    import_long_lived ("back:box", "fakebox");
    /* its last refresh 40 days ago, and broken since (the sweep leaves it alone) */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect', created_at = now() - "
                                      "interval '41 days', last_refresh_at = now() - interval '40 days'"
                                      " WHERE id = 'back:box'"), 0);
    import_long_lived ("back:box", "fakebox");      /* a new grant */
    long long generation = generation_of ("back:box");
    usleep (3000000);                                  /* ten passes of the sweep */
    assert_int_equal (generation_of ("back:box"), generation);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'back:box'"
                                          " AND outcome = 'refreshed'"), 0);
}

static void
test_sweep_keeps_idle_tokens_alive (void **state)
{
    import_long_lived ("idle:box", "fakebox");
    usleep (800000);
    assert_int_equal (generation_of ("idle:box"), 1);       /* a valid token is left alone ... */
    /* ... until its refresh token has sat unused for half the provider's 60-day idle limit */
    harness_sql (h, "UPDATE integrations SET created_at = now() - interval '31 days', connected_at = now() - interval '31 days'"
                    " WHERE id = 'idle:box'");
    assert_int_equal (wait_generation ("idle:box", 2, 8000), 2);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'idle:box'"
                                          " AND outcome = 'refreshed'"), 1);
}

static void
test_circuit_breaker (void **state)
{
    int rc;
    char id [32];
    /* three integrations of one provider fail: the provider's circuit opens */
    for (int i = 0; i < 3; i++) {
        snprintf (id, sizeof id, "cb%d:google", i);
        import_long_lived (id, "fakegoogle");
        itest_fault (h, "fakegoogle", "status", 1, 502, -1, -1);
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", id, NULL);
        assert_string_equal (itest_code (t), "provider_unavailable");
        json_decref (t);
    }
    /* a fourth integration is answered at once, without a call */
    import_long_lived ("cb3:google", "fakegoogle");
    long long calls = itest_stat (h, "fakegoogle", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "cb3:google", NULL);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "provider_unavailable");
    assert_non_null (strstr (json_string_value (json_object_get (json_object_get (t, "error"), "message")), "many integrations"));
    assert_true (json_integer_value (json_object_get (json_object_get (t, "error"), "retry_after")) >= 1);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), calls);
    json_decref (t);
    /* a token request still gets the valid cached token while the circuit is open */
    t = harness_ctl (h, &rc, "token", "--integration", "cb3:google", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    /* an integration whose refresh fails before its call: its stored refresh token does not open
     * (damaged at rest), its access token does */
    import_long_lived ("cbx:google", "fakegoogle");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET refresh_token = overlay (refresh_token PLACING"
                                      " '\\x00000000'::bytea FROM 20) WHERE id = 'cbx:google'"), 0);
    /* once the open period passes, one probe goes through and, answered, closes the circuit. The
     * first refresh let through fails before any call: it is no probe, and the next call is (the
     * circuit stayed half-open with a probe that never went out, refusing every call to the
     * provider until the worker restarted) */
    usleep (5200000);
    t = harness_ctl (h, &rc, "refresh", "--integration", "cbx:google", NULL);
    assert_int_not_equal (rc, 0);
    assert_string_not_equal (itest_code (t), "provider_unavailable");
    json_decref (t);
    t = harness_ctl (h, &rc, "refresh", "--integration", "cb3:google", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    t = harness_ctl (h, &rc, "refresh", "--integration", "cb0:google", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), calls + 2);
}

/* One integration that keeps failing (a 429 or a 5xx for that account alone, a client asking for
 * it again and again) is not its provider failing: only an integration's first failure in a row
 * counts toward the breaker. Every failure counted, the third refresh of one integration opened
 * the circuit, and every other integration of the provider was refused for the open period. */
static void
test_one_failing_integration_leaves_the_circuit_closed (void **state)
{
    int rc;
    import_long_lived ("alone:google", "fakegoogle");
    import_long_lived ("other:google", "fakegoogle");
    itest_fault (h, "fakegoogle", "status", 6, 502, -1, -1);
    for (int i = 0; i < 6; i++) {
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "alone:google", NULL);
        assert_string_equal (itest_code (t), "provider_unavailable");
        json_decref (t);
    }
    long long calls = itest_stat (h, "fakegoogle", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "other:google", NULL);
    if (rc != 0)
        print_message ("other:google: %s\n", itest_code (t));
    assert_int_equal (rc, 0);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), calls + 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_reject),
        cmocka_unit_test (test_refresh_ahead),
        cmocka_unit_test (test_sweep_refreshes_before_expiry),
        cmocka_unit_test (test_sweep_keeps_idle_tokens_alive),
        cmocka_unit_test (test_reconnect_restarts_the_idle_clock),
        cmocka_unit_test (test_circuit_breaker),
        /* after it: the circuit it opened and closed starts from nothing */
        cmocka_unit_test (test_one_failing_integration_leaves_the_circuit_closed),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
