/* test_crash.c - workers killed with SIGKILL again and again under load, and a broker killed and
 * restarted: every request is answered (ok or a transient error) within its deadline, no
 * integration stays stuck behind a dead worker's lease, and no refresh token is reused */
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

#define INTEGRATIONS 30

static harness_t *h;
static char ids [INTEGRATIONS][32];
static const char *id_list [INTEGRATIONS];

static int
setup (void **state)
{
    h = harness_new ("crash");
    if (!h)
        return -1;
    /* leases must outlive a provider call, and dead workers' leases must expire quickly here */
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", "500");
    /* over the call, a claim's answer, a wait for a free connection and a commit (4750 ms) */
    harness_set_env (h, "FERRULE_LEASE_MS", "4800");
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "250");
    /* the database's timeouts follow the heartbeat unless set (250 ms for a statement and for a
     * connection, 62 ms for a lock): a loaded machine's slow flush, or its slow start of a backend,
     * is no outage here (a worker's connection not made in 250 ms failed it_crash's setup in CI,
     * 2026-12-06, with builds beside the tests) */
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_DB_CONNECT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_BACKOFF_BASE_MS", "0");
    if (harness_start_broker (h) != 0 || harness_start_broker (h) != 1)
        return -1;
    for (int i = 1; i <= 3; i++) {
        char id [16];
        snprintf (id, sizeof id, "w%d", i);
        if (harness_start_worker (h, id) != 0)
            return -1;
    }
    if (harness_wait_ready (h, 3, 20000) != 0)
        return -1;
    /* A provider that, like Atlassian or Xero, accepts a spent refresh token for a short while:
     * a worker killed after the provider rotated and before the journal write loses that answer,
     * and no client can prevent it with a strictly single-use provider (docs/architecture.md). */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "reuse_grace_s", 60));
    for (int i = 0; i < INTEGRATIONS; i++) {
        snprintf (ids [i], sizeof ids [i], "crash%02d:box", i);
        id_list [i] = ids [i];
        char *rt = itest_grant (h, "fakebox", NULL);
        if (itest_import (h, ids [i], "fakebox", rt) != 0)
            return -1;
        free (rt);
    }
    return 0;
}

static int
teardown (void **state)
{
    harness_stop_all (h);
    harness_destroy (&h);
    return 0;
}

static void
test_workers_killed_under_load (void **state)
{
    const char *endpoints [] = { harness_broker_frontend (h, 0), harness_broker_frontend (h, 1) };
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 50));
    int answered = 0, ok = 0;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < INTEGRATIONS; i++)
            if ((i + round) % 3 == 0)
                itest_expire (h, ids [i]);
        /* a storm, and one worker dies while it is in flight */
        char victim [8];
        snprintf (victim, sizeof victim, "w%d", round % 3 + 1);
        pid_t killer = fork ();
        if (killer == 0) {
            usleep (250000 + 50000 * (useconds_t) (round % 4));
            harness_signal_worker (h, victim, SIGKILL);
            _exit (0);
        }
        json_t *replies = itest_storm (endpoints, 2, id_list, INTEGRATIONS, 300, 4000);
        waitpid (killer, NULL, 0);
        size_t i;
        json_t *r;
        json_array_foreach (replies, i, r) {
            if (json_is_null (r))
                fail_msg ("round %d: request %zu was never answered", round, i);
            answered++;
            if (json_is_true (json_object_get (r, "ok")))
                ok++;
            else {
                const char *code = itest_code (r);
                if (strcmp (code, "timeout") && strcmp (code, "unavailable") && strcmp (code, "provider_unavailable")
                &&  strcmp (code, "database_unavailable"))
                    fail_msg ("round %d: request %zu answered \"%s\"", round, i, code);
            }
        }
        json_decref (replies);
        harness_wait_worker_exit (h, victim, 5000);
        assert_int_equal (harness_start_worker (h, victim), 0);
        assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    }
    assert_int_equal (answered, 6 * 300);
    assert_true (ok > answered / 2);
    /* afterwards every integration works: nothing is stuck behind a dead worker's lease */
    usleep (4700000);
    for (int i = 0; i < INTEGRATIONS; i++) {
        int rc;
        json_t *t = harness_ctl (h, &rc, "refresh", "--integration", ids [i], NULL);
        if (rc != 0)
            fail_msg ("%s: %s", ids [i], itest_code (t));
        json_decref (t);
    }
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE status <> 'active'"), 0);
}

static void
test_broker_killed_and_restarted (void **state)
{
    int rc;
    /* the client library retries idempotent requests on the other broker */
    harness_signal_broker (h, 0, SIGKILL);
    for (int i = 0; i < 10; i++) {
        json_t *t = harness_ctl (h, &rc, "token", "--integration", ids [i], NULL);
        if (rc != 0)
            fail_msg ("token with broker 0 down: %s", itest_code (t));
        json_decref (t);
    }
    assert_int_equal (harness_restart_broker (h, 0), 0);
    /* workers find the restarted broker on their own (their heartbeats register them again) */
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    json_t *t = harness_ctl_at (h, harness_broker_frontend (h, 0), &rc, "token", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
}

/* A broker that stops answering (paused: its connections stay up, so a request is sent to it and
 * waits) costs a doctor call one attempt: the C client, which the gateway's pool uses, retries the
 * reads doctor, events and webhooks on the other broker as it does status. It sent them once,
 * and answered the timeout of a request whose outcome is "unknown". */
static void
test_doctor_retried_past_a_paused_broker (void **state)
{
    client_t *c = itest_client_connected (harness_brokers (h));
    for (size_t i = 0; i < 2; i++) {             /* both brokers connected */
        client_set_next (c, i);
        json_decref (client_call (c, "ping", NULL, 5000));
    }
    harness_signal_broker (h, 0, SIGSTOP);
    json_t *args = json_pack ("{s:s}", "integration", ids [0]);
    client_set_next (c, 0);
    json_t *r = client_call (c, "doctor", args, 4000);
    harness_signal_broker (h, 0, SIGCONT);
    const char *rid = json_string_value (json_object_get (r, "rid"));
    if (client_exit_code (r) != 0)
        fail_msg ("doctor with broker 0 paused: %s %s", itest_code (r),
                  json_string_value (json_object_get (json_object_get (r, "error"), "message")));
    assert_non_null (json_object_get (r, "diagnosis"));
    assert_non_null (rid);
    assert_non_null (strstr (rid, ".2"));        /* the retry answered */
    json_decref (r);
    json_decref (args);
    client_destroy (&c);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_workers_killed_under_load),
        cmocka_unit_test (test_broker_killed_and_restarted),
        cmocka_unit_test (test_doctor_retried_past_a_paused_broker),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
