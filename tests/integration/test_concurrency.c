/* test_concurrency.c - 50 concurrent token requests for one expired integration make exactly
 * one provider call (single flight), and all of them get the same new token; bursts of provider
 * calls reuse the connections of the burst before; hundreds of provider calls at once are all
 * watched by the worker's loop and all answered; a call past the 500 a worker makes at once that
 * waits too long is never sent, and its backoff does not blame the provider */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "clock.h"
#include "itest.h"

#define CALLERS 50

static harness_t *h;

typedef struct {
    const char *id;
    json_t *reply;
    pthread_barrier_t *start;
    const char *op;                  /* NULL: token */
} caller_t;

static void *
caller (void *arg)
{
    caller_t *c = arg;
    client_t *cl = client_new (harness_brokers (h));
    json_t *args = json_pack ("{s:s}", "integration", c->id);
    pthread_barrier_wait (c->start);
    c->reply = client_call (cl, c->op ? c->op : "token", args, 20000);
    json_decref (args);
    client_destroy (&cl);
    return NULL;
}

/* Starts the callers at once (a barrier) and waits for every one of them. */
static void
run_callers (caller_t *callers)
{
    pthread_t threads [CALLERS];
    pthread_barrier_t start;
    pthread_barrier_init (&start, NULL, CALLERS);
    for (int i = 0; i < CALLERS; i++) {
        callers [i].reply = NULL;
        callers [i].start = &start;
        pthread_create (&threads [i], NULL, caller, &callers [i]);
    }
    for (int i = 0; i < CALLERS; i++)
        pthread_join (threads [i], NULL);
    pthread_barrier_destroy (&start);
}

static int
setup (void **state)
{
    h = harness_new ("concurrency");
    if (!h || harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0
    ||  harness_start_worker (h, "w2") != 0 || harness_wait_ready (h, 2, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static void
storm (const char *id, const char *provider)
{
    char *rt = itest_grant (h, provider, NULL);
    assert_int_equal (itest_import (h, id, provider, rt), 0);
    /* slow the provider a little so that every request arrives while the refresh is in flight */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 300));
    long long before = itest_stat (h, provider, "refresh_calls");

    caller_t callers [CALLERS];
    for (int i = 0; i < CALLERS; i++)
        callers [i] = (caller_t) { id, NULL, NULL, NULL };
    run_callers (callers);

    const char *token = NULL;
    for (int i = 0; i < CALLERS; i++) {
        json_t *r = callers [i].reply;
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("caller %d got %s", i, itest_code (r));
        const char *t = json_string_value (json_object_get (r, "access_token"));
        if (!token)
            token = t;
        char what [80];
        snprintf (what, sizeof what, "caller %d (caller 0 is the reference)", i);
        itest_assert_same_token (t, token, what);
        assert_int_equal (json_integer_value (json_object_get (r, "generation")), 2);
    }
    assert_int_equal (itest_stat (h, provider, "refresh_calls") - before, 1);
    assert_int_equal (itest_stat (h, provider, "reuse_detections"), 0);
    for (int i = 0; i < CALLERS; i++)
        json_decref (callers [i].reply);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    free (rt);
}

static void
test_storm_on_new_integration (void **state)
{
    storm ("storm1:box", "fakebox");
}

static void
test_storm_after_expiry (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "storm2:box", "fakebox", rt), 0);
    json_decref (harness_ctl (h, &rc, "token", "--integration", "storm2:box", NULL));
    assert_int_equal (rc, 0);
    itest_expire (h, "storm2:box");
    long long before = itest_stat (h, "fakebox", "refresh_calls");

    caller_t callers [CALLERS];
    for (int i = 0; i < CALLERS; i++)
        callers [i] = (caller_t) { "storm2:box", NULL, NULL, NULL };
    run_callers (callers);
    for (int i = 0; i < CALLERS; i++) {
        if (!json_is_true (json_object_get (callers [i].reply, "ok")))
            fail_msg ("caller %d got %s", i, itest_code (callers [i].reply));
        assert_int_equal (json_integer_value (json_object_get (callers [i].reply, "generation")), 3);
        json_decref (callers [i].reply);
    }
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls") - before, 1);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    free (rt);
}

/* Token requests and status requests at once for an integration no worker has read yet: the
 * worker reads its row for the token requests together, status asks for reads of its own
 * (loads.c), and everyone is answered: one provider call, one token, status as stored. */
static void
test_storm_of_misses_and_status (void **state)
{
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "storm3:box", "fakebox", rt), 0);
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    caller_t callers [CALLERS];
    for (int i = 0; i < CALLERS; i++)
        callers [i] = (caller_t) { "storm3:box", NULL, NULL, i % 2 ? "status" : NULL };
    run_callers (callers);
    const char *token = NULL;
    for (int i = 0; i < CALLERS; i++) {
        json_t *r = callers [i].reply;
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("caller %d (%s) got %s", i, callers [i].op ? callers [i].op : "token", itest_code (r));
        if (callers [i].op) {
            json_t *in = json_object_get (r, "integration");
            assert_string_equal (json_string_value (json_object_get (in, "id")), "storm3:box");
            assert_string_equal (json_string_value (json_object_get (in, "status")), "active");
            continue;
        }
        const char *t = json_string_value (json_object_get (r, "access_token"));
        if (!token)
            token = t;
        char what [80];
        snprintf (what, sizeof what, "caller %d (the first token caller is the reference)", i);
        itest_assert_same_token (t, token, what);
    }
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls") - before, 1);
    for (int i = 0; i < CALLERS; i++)
        json_decref (callers [i].reply);
    free (rt);
}

#define BURST 16

static long long
fake_connections (void)
{
    json_t *s = harness_fake (h, "GET", "/admin/stats", NULL);
    long long n = (long long) json_integer_value (json_object_get (s, "connections"));
    json_decref (s);
    return n;
}

/* Forced refreshes of every id at once, each asserted to succeed. */
static void
refresh_burst (const char *const *ids, size_t n)
{
    pthread_t threads [BURST];
    caller_t callers [BURST];
    pthread_barrier_t start;
    assert_true (n <= BURST);
    pthread_barrier_init (&start, NULL, (unsigned) n);
    for (size_t i = 0; i < n; i++) {
        callers [i] = (caller_t) { ids [i], NULL, &start, "refresh" };
        pthread_create (&threads [i], NULL, caller, &callers [i]);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join (threads [i], NULL);
    pthread_barrier_destroy (&start);
    for (size_t i = 0; i < n; i++) {
        if (!json_is_true (json_object_get (callers [i].reply, "refreshed")))
            fail_msg ("refresh of %s got %s", ids [i], itest_code (callers [i].reply));
        json_decref (callers [i].reply);
    }
}

/* A burst of provider calls opens a connection for each; a quiet spell with one call at a time
 * follows; the next burst finds the first burst's connections still open. curl's own rule keeps
 * four idle connections per call in progress, so the quiet spell used to close all but four of
 * a worker's, and every burst after one paid a new connection (and, with a real provider, a TLS
 * handshake) for most of its calls. */
static void
test_burst_reuses_connections (void **state)
{
    char names [BURST][32];
    const char *ids [BURST];
    for (size_t i = 0; i < BURST; i++) {
        snprintf (names [i], sizeof names [i], "burst%zu:box", i);
        ids [i] = names [i];
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    /* every call of a burst in flight at once */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 300));
    refresh_burst (ids, BURST);
    /* one call at a time: each ends with no other call in progress on its worker */
    for (size_t i = 0; i < BURST; i++)
        refresh_burst (&ids [i], 1);
    long long before = fake_connections ();
    refresh_burst (ids, BURST);
    long long opened = fake_connections () - before;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    /* (a few may be made anew: a provider may close an idle connection at any time) */
    if (opened > 2)
        fail_msg ("the second burst of %d calls opened %lld new connections to the provider", BURST, opened);
}

/* A disconnect while a refresh of the same integration is at the provider: the disconnect destroys
 * and revokes the tokens, and the worker's cache entry can only be marked stale while its refresh
 * is in flight. No token request may be served the destroyed token from it; the code before served
 * it, ok, until the refresh ended. */
static void
test_no_token_after_disconnect_during_refresh (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "dcr:box", "fakebox", rt), 0);
    free (rt);
    json_decref (harness_ctl (h, &rc, "token", "--integration", "dcr:box", NULL));     /* cached */
    assert_int_equal (rc, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    pid_t child = fork ();
    if (child == 0) {
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "dcr:box", "--timeout", "20", NULL);
        json_decref (r);
        _exit (0);
    }
    /* the call is at the provider for 3 s from its arrival: waiting longer for it to arrive is safe */
    assert_int_equal (itest_wait_stat (h, "fakebox", "refresh_calls", before + 1, 20000), before + 1);
    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "dcr:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (d);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "dcr:box", "--timeout", "20", NULL);
    printf ("token after the disconnect, its refresh still at the provider: %s\n", itest_code (t));
    assert_string_equal (itest_code (t), "disconnected");
    json_decref (t);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);             /* the refresh's call need not take its 3 s now */
    int status = 0;
    waitpid (child, &status, 0);
}

#define SLOW_CALLS 340             /* more than the 317 curl sockets the loop used to watch */
#define FAST_CALLS 20
#define SLOW_MS    6000

/* One worker, with room for every connection of a burst. Its connect timeout is longer than
 * SLOW_MS: curl's connect timer, when it fires, reads an answer that has arrived whether or not
 * the loop watched the socket. */
static int
setup_many (void **state)
{
    h = harness_new ("concurrency_many");
    if (!h)
        return -1;
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "15000");
    harness_set_env (h, "FERRULE_PROVIDER_IDLE_CONNECTIONS", "500");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");     /* the queue's gauge is in /metrics */
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

/* n integrations named prefix000:box... at provider, imported over one client (ferrulectl's start
 * for each would take minutes under ASan), their ids into names. */
static void
import_many (const char *prefix, const char *provider, int n, char names [][32], const char **ids)
{
    client_t *cl = client_new (harness_brokers (h));
    for (int i = 0; i < n; i++) {
        snprintf (names [i], 32, "%s%03d:box", prefix, i);
        ids [i] = names [i];
        char *rt = itest_grant (h, provider, NULL);
        assert_non_null (rt);
        json_t *args = json_pack ("{s:s,s:s,s:s}", "integration", ids [i], "provider", provider, "refresh_token", rt);
        json_t *r = client_call (cl, "import", args, 30000);
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("import of %s got %s", ids [i], itest_code (r));
        json_decref (r);
        json_decref (args);
        free (rt);
    }
    client_destroy (&cl);
}

typedef struct {
    const char **ids;
    size_t n;
    json_t *replies;
} storm_arg_t;

static void *
storm_thread (void *arg)
{
    storm_arg_t *a = arg;
    const char *brokers [] = { harness_broker_frontend (h, 0) };
    a->replies = itest_storm (brokers, 1, a->ids, a->n, a->n, 30000);
    return NULL;
}

/* How many of the replies are ok with generation 2, the first failures said on stdout. */
static size_t
refreshed_once (json_t *replies, const char **ids, size_t n)
{
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get (replies, i);
        if (json_is_true (json_object_get (r, "ok")) && json_integer_value (json_object_get (r, "generation")) == 2)
            ok++;
        else if (i - ok < 5)
            printf ("many: %s got %s\n", ids [i], json_is_object (r) ? itest_code (r) : "no answer");
    }
    return ok;
}

/* SLOW_CALLS token requests that each need a refresh at a provider that takes SLOW_MS to answer,
 * then FAST_CALLS at a provider that answers at once. The worker's loop used to watch only the
 * first 317 of curl's sockets (its poll array's 321 items less the broker link, the database's
 * two connections and the journal's wakeup);
 * a socket past them was read only once one of those had gone, so the fast provider's calls,
 * answered at once, waited for the slow provider's (and under a steady load, where new sockets
 * keep taking the places that free up, a call could wait past its timeout: a transient failure,
 * a backoff, and with a single-use provider a rotation the worker never heard of). Every socket
 * is watched now: the fast provider's answers are read while the slow provider is still at work.
 * What is asserted is that order, not a time (SLOW_MS is many times what the fast calls take
 * under ASan on a loaded machine). */
static void
test_slow_provider_does_not_hold_up_others (void **state)
{
    static char slow_names [SLOW_CALLS][32], fast_names [FAST_CALLS][32];
    const char *slow_ids [SLOW_CALLS], *fast_ids [FAST_CALLS];
    import_many ("slow", "fakebox", SLOW_CALLS, slow_names, slow_ids);
    import_many ("fast", "fakegoogle", FAST_CALLS, fast_names, fast_ids);
    long long slow_before = itest_stat (h, "fakebox", "refresh_calls");
    long long slow_ok_before = itest_stat (h, "fakebox", "refresh_ok");
    long long fast_before = itest_stat (h, "fakegoogle", "refresh_calls");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", SLOW_MS));

    storm_arg_t slow = { slow_ids, SLOW_CALLS, NULL };
    pthread_t thread;
    int64_t start = clock_mono_ms ();
    assert_int_equal (pthread_create (&thread, NULL, storm_thread, &slow), 0);
    /* every slow call at the provider (so its socket is curl's) before the fast ones start */
    long long arrived = itest_wait_stat (h, "fakebox", "refresh_calls", slow_before + SLOW_CALLS, 30000);
    int64_t fast_start = clock_mono_ms ();
    storm_arg_t fast = { fast_ids, FAST_CALLS, NULL };
    storm_thread (&fast);
    int64_t fast_end = clock_mono_ms ();
    long long slow_answered = itest_stat (h, "fakebox", "refresh_ok") - slow_ok_before;
    pthread_join (thread, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));

    size_t fast_ok = refreshed_once (fast.replies, fast_ids, FAST_CALLS);
    size_t slow_ok = refreshed_once (slow.replies, slow_ids, SLOW_CALLS);
    json_decref (fast.replies);
    json_decref (slow.replies);
    long long together = itest_stat (h, "fakebox", "max_concurrent_refresh");
    long long transient = harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'transient'");
    printf ("many: %lld slow calls at the provider at once (all there %lld ms after they were sent); %zu of %d fast "
            "calls refreshed in %lld ms, and %lld slow calls answered by then; %zu of %d slow calls refreshed; %lld "
            "transient failures\n", together, (long long) (fast_start - start), fast_ok, FAST_CALLS,
            (long long) (fast_end - fast_start), slow_answered, slow_ok, SLOW_CALLS, transient);
    assert_int_equal (arrived - slow_before, SLOW_CALLS);
    assert_int_equal (fast_ok, FAST_CALLS);
    if (slow_answered != 0)
        fail_msg ("the fast provider's %d calls were answered only after %lld of the slow provider's", FAST_CALLS,
                  slow_answered);
    assert_int_equal (slow_ok, SLOW_CALLS);
    assert_int_equal (transient, 0);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls") - slow_before, SLOW_CALLS);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls") - fast_before, FAST_CALLS);
    /* fewer than the 500 a worker makes at once: none waited its turn */
    assert_true (itest_metric (h, "w1", "ferrule_worker_provider_calls_queued") == 0);
}

/* One worker whose provider calls time out after 12 s (a burst of 510 refreshes is posted well
 * within that, under AddressSanitizer too: 4 s was not), and whose integrations back off 10 to 20 s
 * after a failure: long enough that a request right after one is held back by it. Its connect
 * timeout is the call's: a burst of connections may wait for the provider's accept queue. */
static int
setup_queued (void **state)
{
    h = harness_new ("concurrency_queued");
    if (!h)
        return -1;
    /* a queued call fails unsent once its wait leaves it less than a tenth of this: the last of
     * the burst must be queued within 2 s of the first call's send, which a loaded machine under
     * AddressSanitizer did not always do within the 0.4 s of a 4 s timeout */
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "20000");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "20000");
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "20000");
    harness_set_env (h, "FERRULE_BREAKER_MIN_FAILURES", "1000000");   /* every call in flight fails here */
    harness_set_env (h, "FERRULE_SWEEP_MS", "3600000");     /* no refresh but the requests' */
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

#define QUEUED_CALLS 510           /* past the 500 provider calls a worker makes at once */

/* More refreshes at once than a worker makes provider calls: the calls past the 500 wait their
 * turn, and one whose wait leaves it less than a tenth of its time fails without being sent. The
 * provider never saw it, yet the requests its integration's backoff then held back were told "the
 * provider failed 1 times in a row": they are told the refresh failed before the provider was
 * called, as for a call that could not start (the log, or status's last error, says why). */
static void
test_a_call_never_sent_is_no_provider_failure (void **state)
{
    static char names [QUEUED_CALLS][32];
    const char *ids [QUEUED_CALLS];
    /* without an access token: each request needs a refresh */
    client_t *cl = client_new (harness_brokers (h));
    for (int i = 0; i < QUEUED_CALLS; i++) {
        snprintf (names [i], sizeof names [i], "queued%03d:box", i);
        ids [i] = names [i];
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_non_null (rt);
        json_t *args = json_pack ("{s:s,s:s,s:s}", "integration", ids [i], "provider", "fakebox", "refresh_token", rt);
        json_t *r = client_call (cl, "import", args, 30000);
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("import of %s got %s", ids [i], itest_code (r));
        json_decref (r);
        json_decref (args);
        free (rt);
    }
    client_destroy (&cl);
    /* every call that goes out is held past its timeout: the queued ones' wait runs out first */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 60000));
    const char *brokers [] = { harness_broker_frontend (h, 0) };
    json_t *replies = itest_storm (brokers, 1, ids, QUEUED_CALLS, QUEUED_CALLS, 40000);
    itest_fake_release (h);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    const char *unsent = NULL, *other = NULL;
    size_t n_unsent = 0, n_ok = 0;
    for (size_t i = 0; i < QUEUED_CALLS; i++) {
        const char *m = json_string_value (json_object_get (json_object_get (json_array_get (replies, i), "error"),
                                                            "message"));
        n_ok += json_is_true (json_object_get (json_array_get (replies, i), "ok"));
        if (m && strstr (m, "nothing was sent") && !n_unsent++)
            unsent = ids [i];
        else
        if (m && !other)
            other = m;
    }
    printf ("queued: %zu of %d refreshes failed unsent, %zu succeeded; another answer: %s\n", n_unsent,
            QUEUED_CALLS, n_ok, other ? other : "none");
    if (!unsent)
        fail_msg ("none of %d refreshes at once waited past its time for a provider call", QUEUED_CALLS);
    json_decref (replies);
    /* within the integration's backoff: no call, and what is said of it */
    const char *one [] = { unsent };
    replies = itest_storm (brokers, 1, one, 1, 1, 10000);
    const json_t *err = json_object_get (json_array_get (replies, 0), "error");
    const char *message = json_string_value (json_object_get (err, "message"));
    printf ("queued: %s then got %s: %s\n", unsent, itest_code (json_array_get (replies, 0)), message ? message : "");
    assert_string_equal (itest_code (json_array_get (replies, 0)), "provider_unavailable");
    assert_non_null (message);
    if (strstr (message, "provider failed") || !strstr (message, "before the provider was called"))
        fail_msg ("a refresh whose call was never sent is said to be the provider's failure: %s", message);
    json_decref (replies);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_storm_on_new_integration),
        cmocka_unit_test (test_storm_after_expiry),
        cmocka_unit_test (test_storm_of_misses_and_status),
        cmocka_unit_test (test_burst_reuses_connections),
        cmocka_unit_test (test_no_token_after_disconnect_during_refresh),
    };
    const struct CMUnitTest many [] = {
        cmocka_unit_test (test_slow_provider_does_not_hold_up_others),
    };
    const struct CMUnitTest queued [] = {
        cmocka_unit_test (test_a_call_never_sent_is_no_provider_failure),
    };
    int failed = cmocka_run_group_tests (tests, setup, teardown);
    failed += cmocka_run_group_tests (many, setup_many, teardown);
    failed += cmocka_run_group_tests (queued, setup_queued, teardown);
    return harness_exit (failed);
}
