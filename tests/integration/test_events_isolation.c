/* test_events_isolation.c - one failing webhook endpoint costs the others nothing. A worker's
 * delivery thread sends one attempt at a time; before the endpoint breaker, every queue of a
 * failing endpoint was retried on its own schedule, so a receiver that refused everything drew
 * every queue's retries (a storm against the receiver), and one that never answered held the
 * thread a whole timeout per queue while every other endpoint's deliveries waited behind them.
 * Now a few failures in a row hold the endpoint's deliveries, one probe at a time tests it, and
 * the first success lets them all go. */
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

#define SECRET   "whsec_isolation_test_0123456789abcdef"
#define REFUSED  30         /* integrations whose "connected" events the refusing receiver gets */
#define MORE     60         /* queues of "recovered" events made in the database, beside them */
#define HUNG     40         /* integrations whose "needs_reconnect" events the hung one gets too */

static harness_t *h;
static int hung_fd = -1;    /* listens, never accepts: every attempt waits out its timeout */

static int
setup (void **state)
{
    (void) state;
    h = harness_new ("events_isolation");
    int hung_port = receiver_hung_listen (&hung_fd);
    if (!h || hung_port < 0 || receiver_start (0, SECRET) != 0)
        return -1;
    char path [512], secret [512], other [512], text [2048];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (other, sizeof other, "%s/webhook-hung.secret", harness_workdir (h));   /* each its own */
    itest_write_file (other, "hung-endpoint-secret-0123456789\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text,
              "{\"endpoints\": ["
              " {\"name\": \"live\", \"url\": \"http://127.0.0.1:%d/hooks\", \"secret_file\": \"%s\"},"
              " {\"name\": \"hung\", \"url\": \"http://127.0.0.1:%d/hooks\", \"secret_file\": \"%s\","
              "  \"events\": [\"needs_reconnect\"]}]}", receiver_port (), secret, hung_port, other);
    itest_write_file (path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "100");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "30000");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "3000");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0)
        return -1;
    return harness_wait_ready (h, 1, 20000);
}

static int
teardown (void **state)
{
    (void) state;
    int bad = itest_teardown (&h);
    receiver_stop ();
    if (hung_fd >= 0)
        close (hung_fd);
    return bad;
}

/* Waits until the receiver answered want requests with status for type; how many it had. */
static int
wait_received (int status, const char *type, int want, int timeout_ms)
{
    int64_t end = clock_mono_ms () + timeout_ms;
    int n;
    while ((n = receiver_count (status, type, NULL)) < want && clock_mono_ms () < end)
        usleep (50000);
    return n;
}

static double
held (const char *endpoint)
{
    char series [128];
    snprintf (series, sizeof series, "ferrule_worker_webhook_held{endpoint=\"%s\"}", endpoint);
    return itest_metric (h, "w1", series);
}

/* A receiver that refuses everything gets probes, not every queue's retries; once it answers, the
 * probe that succeeds lets the held deliveries go at once. With more queues than a claim's first
 * walk reads (64: MORE more), the claims find the heads from the due rows; the operator's test
 * of the held endpoint was then never claimed until the hold ended. */
static void
test_a_refusing_receiver_is_probed_not_hammered (void **state)
{
    (void) state;
    char id [32], sql [768];
    receiver_set (1000000, 0);              /* 500 to everything */
    /* made two days ago, outside the fan-out's window; their deliveries are new */
    snprintf (sql, sizeof sql, "WITH e AS (INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
              " SELECT 'recovered', 'more' || i || ':box', 'fakebox', 'healthy', now () - interval '2 days'"
              " FROM generate_series (1, %d) i RETURNING seq, integration_id)"
              " INSERT INTO event_deliveries (event_seq, endpoint, integration_id) SELECT seq, 'live', integration_id"
              " FROM e", MORE);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);
    for (int i = 0; i < REFUSED; i++) {
        snprintf (id, sizeof id, "refused%d:box", i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
        free (rt);
    }
    /* the breaker has had its failures in a row (or, before it, every queue is being retried) */
    assert_true (wait_received (500, NULL, 10, 20000) >= 10);
    usleep (500000);
    int before = receiver_count (500, NULL, NULL);
    usleep (3000000);
    int during = receiver_count (500, NULL, NULL) - before;
    print_message ("attempts refused in 3 s with %d queues failing: %d\n", REFUSED + MORE, during);
    /* each of 90 queues retried every 100 ms to a few seconds draws hundreds; probes, a few */
    assert_true (during <= 40);
    assert_true (held ("live") == 1);
    assert_true (itest_workdir_contains (h, "webhook \\\"live\\\" failed"));

    /* each failed probe doubles the hold: wait for one of 6.4 s, then fix the receiver. An
     * operator's test goes at once, as the probe, and its delivery lets the held ones go */
    int64_t end = clock_mono_ms () + 30000;
    while (!itest_workdir_contains (h, "circuit stays open for 6.4 s") && clock_mono_ms () < end)
        usleep (100000);
    assert_true (itest_workdir_contains (h, "circuit stays open for 6.4 s"));
    receiver_set (0, 0);
    int rc;
    json_t *r = harness_ctl (h, &rc, "webhook", "test", "live", "--timeout", "3", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    assert_true (held ("live") == 0);
    assert_int_equal (wait_received (200, "connected", REFUSED, 20000), REFUSED);
    assert_int_equal (wait_received (200, "recovered", MORE, 20000), MORE);
}

/* A receiver that never answers holds no other endpoint's deliveries. "hung" has 40 queues of
 * "needs_reconnect" being retried; then 40 "disconnected" events go to "live" alone. Their
 * deliveries are due after the hung ones, which the claims take first: 40 attempts that each wait
 * out a 1 s timeout, one after another, before "live" had its first. */
static void
test_a_hung_receiver_holds_no_other_endpoint (void **state)
{
    (void) state;
    char id [32];
    receiver_set (0, 0);
    for (int i = 0; i < HUNG; i++) {
        snprintf (id, sizeof id, "hung%d:box", i);
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
        free (rt);
    }
    assert_int_equal (wait_received (200, "connected", REFUSED + HUNG, 20000), REFUSED + HUNG);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect', last_error_message ="
                                      " 'provider answered invalid_grant' WHERE id LIKE 'hung%'"), 0);
    assert_int_equal (wait_received (200, "needs_reconnect", HUNG, 20000), HUNG);
    /* the hung endpoint's queues are being retried */
    int64_t end = clock_mono_ms () + 20000;
    while (harness_sql_int (h, "SELECT sum(attempts) FROM event_deliveries WHERE endpoint = 'hung'") < 6
           && clock_mono_ms () < end)
        usleep (100000);
    assert_true (harness_sql_int (h, "SELECT sum(attempts) FROM event_deliveries WHERE endpoint = 'hung'") >= 6);

    int64_t start = clock_mono_ms ();
    assert_int_equal (harness_sql (h, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " SELECT id, generation, 'test', 'disconnected' FROM integrations"
                                      " WHERE id LIKE 'hung%'"), 0);
    int got = wait_received (200, "disconnected", HUNG, 60000);
    int64_t took = clock_mono_ms () - start;
    print_message ("\"live\" had %d of %d events in %lld ms while \"hung\" never answered\n", got, HUNG,
                   (long long) took);
    assert_int_equal (got, HUNG);
    /* 0.1 s on an idle machine (each endpoint has its own thread); 5 s while one thread sent to
     * both, until the breaker held "hung"; 40 timeouts, 40 s, before the breaker */
    assert_true (took < 30000);
    /* "live" no longer waits for "hung"'s failures: they may hold it only after its events came */
    end = clock_mono_ms () + 20000;
    while (held ("hung") != 1 && clock_mono_ms () < end)
        usleep (100000);
    assert_true (held ("hung") == 1);
    /* the hung endpoint's deliveries wait in the database, none given up for it */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries WHERE endpoint = 'hung'"
                                          " AND state = 'pending'"), HUNG);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_a_refusing_receiver_is_probed_not_hammered),
        cmocka_unit_test (test_a_hung_receiver_holds_no_other_endpoint),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
