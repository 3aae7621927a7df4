/* test_crash_window.c - the one loss no client can prevent, measured: a worker SIGKILLed in a
 * storm of refreshes over strictly single-use refresh tokens (no reuse grace, like Box). A chain
 * breaks only when the provider rotated its token too late for the worker to get the answer onto
 * disk: at most WINDOW_MS before the kill (the journal's write and sync), or after it. Every chain
 * the provider answered earlier survives through the journal, and each broken one is diagnosed
 * as an interrupted rotation. */
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
#include <unistd.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"

#define INTEGRATIONS 60
#if defined (__SANITIZE_ADDRESS__)
#   define STAGGER_MS 20         /* one request every 20 ms: answers spread over 1.2 s */
#else
#   define STAGGER_MS 10         /* one request every 10 ms: answers spread over 600 ms */
#endif
#define LATENCY_MS   150
/* A rotation answered earlier than this before the kill survives. The window itself is a few
 * milliseconds (docs/performance.md, (g)); the bound leaves room for a loaded test machine, and
 * more under the sanitizers, which slow the worker several times. */
#if defined (__SANITIZE_ADDRESS__)
#   define WINDOW_MS 500         /* 200 left a loaded machine's queue of answers too little room */
#else
#   define WINDOW_MS 50
#endif
/* the kill lands mid-storm, with answers well before the window, inside it and after it */
#define KILL_AFTER_MS (LATENCY_MS + WINDOW_MS + 200)

static harness_t *h;

static int
teardown (void **state)
{
    return h ? itest_teardown (&h) : 0;
}

typedef struct {
    int64_t start_ms;
    int64_t kill_wall_ms;
} killer_t;

/* Before each request of the storm: SIGKILL the worker once KILL_AFTER_MS have passed. */
static void
kill_when_due (void *arg, size_t i)
{
    killer_t *k = arg;
    if (i == 0)
        k->start_ms = clock_mono_ms ();
    if (!k->kill_wall_ms && clock_mono_ms () >= k->start_ms + KILL_AFTER_MS) {
        k->kill_wall_ms = clock_wall_ms ();
        harness_signal_worker (h, "w1", SIGKILL);
    }
}

static void
test_sigkill_loses_only_rotations_inside_the_window (void **state)
{
    h = harness_new ("crash_window");
    assert_non_null (h);
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "250");
    /* the database's timeouts follow the heartbeat unless set (250 ms for a statement and for a
     * connection, 62 ms for a lock): a loaded machine's slow flush, or its slow start of a backend,
     * is no outage here (a worker's connection not made in 250 ms failed it_crash's setup in CI,
     * 2026-12-06, with builds beside the tests) */
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_DB_CONNECT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "0");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);

    char ids [INTEGRATIONS][32];
    long chain [INTEGRATIONS];
    for (int i = 0; i < INTEGRATIONS; i++) {
        snprintf (ids [i], sizeof ids [i], "win%02d:box", i);
        json_t *body = json_pack ("{s:s, s:[]}", "provider", "fakebox", "scopes");
        json_t *g = harness_fake (h, "POST", "/admin/grants", body);
        json_decref (body);
        assert_non_null (g);
        chain [i] = (long) json_integer_value (json_object_get (g, "chain"));
        assert_int_equal (itest_import (h, ids [i], "fakebox", json_string_value (json_object_get (g, "refresh_token"))), 0);
        json_decref (g);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i, s:i}", "latency_ms", LATENCY_MS, "reuse_grace_s", 0));

    /* the storm: every integration needs a refresh; requests go out STAGGER_MS apart, from one
     * process, so that the test itself does not crowd the worker off the CPU */
    const char *endpoint = harness_broker_frontend (h, 0);
    const char *id_list [INTEGRATIONS];
    for (int i = 0; i < INTEGRATIONS; i++)
        id_list [i] = ids [i];
    killer_t k = { 0, 0 };
    json_t *replies = itest_storm_paced (&endpoint, 1, id_list, INTEGRATIONS, INTEGRATIONS, 1500, STAGGER_MS,
                                         kill_when_due, &k);
    json_decref (replies);
    int64_t kill_wall_ms = k.kill_wall_ms;
    assert_true (kill_wall_ms > 0);
    assert_true (harness_wait_worker_exit (h, "w1", 5000) >= 0);

    /* when the provider last rotated each chain (before anything below refreshes again). Calls in
     * flight at the kill are still answered, and rotate, up to a latency later (more on a loaded
     * machine): read until no chain has rotated for twice the latency, not once after a pause */
    int64_t rotated [INTEGRATIONS], settled_since = clock_mono_ms ();
    memset (rotated, 0, sizeof rotated);
    for (int64_t until = clock_mono_ms () + 10000;; usleep (50 * 1000)) {
        json_t *stats = harness_fake (h, "GET", "/admin/stats", NULL);
        assert_non_null (stats);
        int changed = 0;
        for (int i = 0; i < INTEGRATIONS; i++) {
            char key [32];
            snprintf (key, sizeof key, "%ld", chain [i]);
            json_t *c = json_object_get (json_object_get (stats, "chains"), key);
            int64_t at = c ? (int64_t) json_integer_value (json_object_get (c, "rotated_ms")) : 0;
            changed |= at != rotated [i];
            rotated [i] = at;
        }
        json_decref (stats);
        if (changed)
            settled_since = clock_mono_ms ();
        else if (clock_mono_ms () - settled_since >= LATENCY_MS * 2)
            break;
        assert_true (clock_mono_ms () < until);
    }

    /* the same worker starts again: its journal is replayed, its leases found */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);

    int before = 0, inside = 0, after = 0, broken = 0, survived_early = 0;
    int64_t closest_broken = INT64_MAX;      /* ms from a broken chain's rotation to the kill */
    for (int i = 0; i < INTEGRATIONS; i++) {
        int rc = -1;
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", ids [i], NULL);
        const char *code = itest_code (r);
        int64_t gap = rotated [i] ? kill_wall_ms - rotated [i] : INT64_MAX;   /* > 0: answered before the kill */
        if (rotated [i]) {
            if (gap > WINDOW_MS)
                before++;
            else if (gap >= 0)
                inside++;
            else
                after++;
        }
        if (rc == 0) {
            if (rotated [i] && gap > WINDOW_MS)
                survived_early++;
        }
        else {
            broken++;
            fprintf (stderr, "crash window: %s broke; the provider rotated it %lld ms %s the kill\n", ids [i],
                     (long long) (gap >= 0 ? gap : -gap), gap >= 0 ? "before" : "after");
            if (strcmp (code, "needs_reconnect") != 0)
                fail_msg ("%s: a broken chain answers \"%s\", not needs_reconnect", ids [i], code);
            const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
            if (!message)
                message = json_string_value (json_object_get (r, "message"));
            if (!message || !strstr (message, "interrupted refresh"))
                fail_msg ("%s: the error does not say the refresh was interrupted: %s", ids [i], message ? message : "");
            if (!rotated [i] || gap > WINDOW_MS)
                fail_msg ("%s broke although the provider answered %lld ms before the kill (window %d ms)",
                          ids [i], (long long) gap, WINDOW_MS);
            if (gap >= 0 && gap < closest_broken)
                closest_broken = gap;
            json_t *d = harness_ctl (h, &rc, "doctor", "--integration", ids [i], NULL);
            const char *verdict = json_string_value (json_object_get (json_object_get (d, "diagnosis"), "code"));
            if (!verdict || strcmp (verdict, "rotation_interrupted") != 0)
                fail_msg ("%s: doctor says \"%s\", not rotation_interrupted", ids [i], verdict ? verdict : "");
            json_decref (d);
        }
        json_decref (r);
    }
    fprintf (stderr, "crash window: %d rotations answered more than %d ms before the kill (%d survived), %d within "
             "it, %d after it; %d chains broke\n", before, WINDOW_MS, survived_early, inside, after, broken);
    assert_int_equal (survived_early, before);
    assert_true (before > 0);                   /* the storm straddled the kill */
    assert_true (before + inside + after < INTEGRATIONS || after > 0 || inside > 0 || broken == 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE outcome = 'interrupted'")
                      >= broken, 1);
    (void) closest_broken;
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_sigkill_loses_only_rotations_inside_the_window, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
