/* test_events_hang.c - a receiver that never answers delays no other endpoint's event, with a
 * timeout of a realistic length (3 s). A worker's delivery thread sent one attempt at a time:
 * until the hung endpoint's breaker held it (five failures), each of its attempts kept every other
 * endpoint's deliveries waiting for up to a whole timeout, and so did each of its probes once
 * held. it_events_isolation passed only because its timeout was 1 s. Each endpoint now has a
 * delivery thread of its own. */
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

#define SECRET     "whsec_hang_test_0123456789abcdef"
#define TIMEOUT_MS 3000     /* FERRULE_WEBHOOK_TIMEOUT_MS */
#define HUNG       3        /* integrations whose "needs_reconnect" events go to the hung endpoint */
#define LIVE       4        /* integrations whose "disconnected" events go to the live one alone */

static harness_t *h;
static int hung_fd = -1;    /* listens, never accepts: every attempt waits out its timeout */

static int
setup (void **state)
{
    (void) state;
    char path [512], secret [512], other [512], text [2048], id [32], timeout [16];
    h = harness_new ("events_hang");
    int hung_port = receiver_hung_listen (&hung_fd);
    if (!h || hung_port < 0 || receiver_start (0, SECRET) != 0)
        return -1;
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (other, sizeof other, "%s/webhook-hung.secret", harness_workdir (h));
    itest_write_file (other, "hung-endpoint-secret-0123456789\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text,
              "{\"endpoints\": ["
              " {\"name\": \"live\", \"url\": \"http://127.0.0.1:%d/hooks\", \"secret_file\": \"%s\"},"
              " {\"name\": \"hung\", \"url\": \"http://127.0.0.1:%d/hooks\", \"secret_file\": \"%s\","
              "  \"events\": [\"needs_reconnect\"]}]}", receiver_port (), secret, hung_port, other);
    itest_write_file (path, text);
    snprintf (timeout, sizeof timeout, "%d", TIMEOUT_MS);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "8000");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", timeout);
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "10000");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    /* the integrations, and their "connected" events delivered to "live" before the hang begins */
    for (int i = 0; i < HUNG + LIVE; i++) {
        if (i < HUNG)
            snprintf (id, sizeof id, "hung%d:box", i);
        else
            snprintf (id, sizeof id, "live%d:box", i - HUNG);
        char *rt = itest_grant (h, "fakebox", NULL);
        if (itest_import (h, id, "fakebox", rt) != 0)
            return -1;
        free (rt);
    }
    int64_t end = clock_mono_ms () + 20000;
    while (receiver_count (200, "connected", NULL) < HUNG + LIVE && clock_mono_ms () < end)
        usleep (50000);
    return receiver_count (200, "connected", NULL) == HUNG + LIVE ? 0 : -1;
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

static double
held (const char *endpoint)
{
    char series [128];
    snprintf (series, sizeof series, "ferrule_worker_webhook_held{endpoint=\"%s\"}", endpoint);
    return itest_metric (h, "w1", series);
}

static long long
hung_attempts (void)
{
    return harness_sql_int (h, "SELECT coalesce (sum (attempts), 0) FROM event_deliveries WHERE endpoint = 'hung'");
}

/* When the last attempt to "hung" ended (its outcome is written with it, not by the claim), in
 * microseconds; 0 when none has. Unchanged across a span: no attempt to "hung" ended in it. */
static long long
hung_ended (void)
{
    return harness_sql_int (h, "SELECT coalesce ((extract (epoch FROM max (last_attempt_at)) * 1000000)::bigint, 0)"
                               " FROM event_deliveries WHERE endpoint = 'hung'");
}

/* Makes a "disconnected" event of integration id, which only "live" wants, while an attempt to
 * "hung" waits out its timeout; the milliseconds until "live" had it (-1: not within 20 s). */
static int64_t
live_latency (const char *id)
{
    char sql [512];
    snprintf (sql, sizeof sql, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
              " SELECT id, generation, 'test', 'disconnected' FROM integrations WHERE id = '%s'", id);
    int64_t start = clock_mono_ms (), end = start + 20000;
    assert_int_equal (harness_sql (h, sql), 0);
    while (!receiver_count (200, "disconnected", id) && clock_mono_ms () < end)
        usleep (10000);
    return receiver_count (200, "disconnected", id) ? clock_mono_ms () - start : -1;
}

/* Before the breaker holds "hung": its attempts, one per queue, each wait 3 s. */
static void
test_a_hung_attempt_delays_no_other_endpoint (void **state)
{
    (void) state;
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect', last_error_message ="
                                      " 'provider answered invalid_grant' WHERE id LIKE 'hung%'"), 0);
    for (int k = 0; k < 2; k++) {
        /* an attempt to "hung" is under way: claimed, and its connection waiting */
        long long before = hung_attempts ();
        int64_t end = clock_mono_ms () + 20000;
        while (hung_attempts () <= before && clock_mono_ms () < end)
            usleep (20000);
        assert_true (hung_attempts () > before);
        usleep (300000);
        long long ended = hung_ended ();
        char id [32];
        snprintf (id, sizeof id, "live%d:box", k);
        int64_t took = live_latency (id);
        print_message ("\"live\" had an event in %lld ms while an attempt to \"hung\" waited out its %d ms\n",
                       (long long) took, TIMEOUT_MS);
        assert_true (took >= 0);
        /* while the attempt to "hung" still waited: the code before delivered it after that
         * attempt's timeout, once its outcome was written */
        if (hung_ended () != ended)
            fail_msg ("\"live\" had its event %d only after an attempt to \"hung\" ended", k);
    }
    assert_true (held ("hung") == 0);        /* the breaker had not yet held it */
}

/* Once held, "hung" is probed now and then; each probe waits 3 s as well. */
static void
test_a_hung_probe_delays_no_other_endpoint (void **state)
{
    (void) state;
    int64_t end = clock_mono_ms () + 60000;
    while (held ("hung") != 1 && clock_mono_ms () < end)
        usleep (100000);
    assert_true (held ("hung") == 1);
    for (int k = 2; k < LIVE; k++) {
        /* a probe: the held endpoint's attempts grow only by it */
        long long before = hung_attempts ();
        end = clock_mono_ms () + 30000;
        while (hung_attempts () <= before && clock_mono_ms () < end)
            usleep (20000);
        assert_true (hung_attempts () > before);
        usleep (300000);
        long long ended = hung_ended ();
        char id [32];
        snprintf (id, sizeof id, "live%d:box", k);
        int64_t took = live_latency (id);
        print_message ("\"live\" had an event in %lld ms during a probe of \"hung\"\n", (long long) took);
        assert_true (took >= 0);
        if (hung_ended () != ended)
            fail_msg ("\"live\" had its event %d only after a probe of \"hung\" ended", k);
        assert_true (held ("hung") == 1);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_a_hung_attempt_delays_no_other_endpoint),
        cmocka_unit_test (test_a_hung_probe_delays_no_other_endpoint),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
