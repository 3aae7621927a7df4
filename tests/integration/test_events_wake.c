/* test_events_wake.c - what wakes the event delivery thread. A new event wakes it at once, heard
 * on the worker's main connection after the commit that wrote it, whichever change wrote it, even
 * when the thread's own poll is a minute apart, and again after that connection was cut and made
 * anew. Refreshes, which make no event, leave the
 * delivery's database session asleep: PostgreSQL wakes every listening session of a database for
 * every commit that notifies, whatever the channel, so a session that listened would run a
 * transaction of its own for every refresh batch of the whole deployment. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "clock.h"
#include "itest.h"
#include "receiver.h"

#define SECRET      "whsec_events_wake_0123456789abcdef"
#define REFRESHES   40
#define DELIVER_MS  5000      /* a woken thread delivers in milliseconds; its poll is 60 s */

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("events_wake");
    if (!h || receiver_start (0, SECRET) != 0)
        return -1;
    char path [512], secret [512], text [1024];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/hooks\", "
              "\"secret_file\": \"%s\"}]}", receiver_port (), secret);
    itest_write_file (path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    /* nothing but a wake-up can make the thread look within the tests' time */
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "60000");
    harness_set_env (h, "FERRULE_EVENTS_FORECAST_MS", "86400000");
    harness_set_env (h, "FERRULE_ADMIN_RATE_BURST", "1000");     /* forced refreshes one after another */
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0)
        return -1;
    return harness_wait_ready (h, 1, 20000);
}

static int
teardown (void **state)
{
    int bad = itest_teardown (&h);
    receiver_stop ();
    return bad;
}

static void
import (const char *id)
{
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
    free (rt);
}

/* Milliseconds until the receiver has an event of type for integration, or -1 after DELIVER_MS. */
static long long
wait_delivered (const char *type, const char *integration)
{
    int64_t start = clock_mono_ms ();
    while (clock_mono_ms () - start < DELIVER_MS) {
        receiver_got_t *got = NULL;
        int bad = 0, n = receiver_snapshot (&got, &bad);
        assert_int_equal (bad, 0);
        int found = 0;
        for (int i = 0; i < n && !found; i++)
            found = strcmp (got [i].type, type) == 0 && strcmp (got [i].integration, integration) == 0;
        free (got);
        if (found)
            return (long long) (clock_mono_ms () - start);
        usleep (20000);
    }
    return -1;
}

/* The pid of the database session with this application_name in the harness's database. */
static long long
session_pid (const char *app)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
              "AND application_name = '%s'", app);
    long long pid = -1;
    for (int i = 0; i < 100 && (pid = harness_sql_int (h, sql)) <= 0; i++)
        usleep (100000);            /* a session being made anew */
    return pid;
}

/* How many times a process went to sleep (voluntary context switches), from /proc. */
static long long
sleeps (long long pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%lld/status", pid);
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    long long n = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "voluntary_ctxt_switches:", 24) == 0)
            n = strtoll (line + 24, NULL, 10);
    fclose (f);
    assert_true (n >= 0);
    return n;
}

/* ---------------------------------------------------------------- tests */

/* The thread polls once a minute here: only the main connection's notification can bring the
 * "connected" event to the receiver within seconds, before and after that connection is cut. */
static void
test_new_event_wakes_delivery (void **state)
{
    import ("wake:a");
    long long ms = wait_delivered ("connected", "wake:a");
    if (ms < 0)
        fail_msg ("the \"connected\" event of wake:a was not delivered within %d ms", DELIVER_MS);

    long long main_pid = session_pid ("ferrule-worker w1");
    assert_true (main_pid > 0);
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pg_terminate_backend (%lld)", main_pid);
    assert_int_equal (harness_sql_int (h, sql), 1);
    /* the worker makes the connection anew in the background; wait for the new session */
    long long again = -1;
    for (int i = 0; i < 100; i++) {
        again = harness_sql_int (h, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND application_name = 'ferrule-worker w1'");
        if (again > 0 && again != main_pid)
            break;
        usleep (100000);
    }
    assert_true (again > 0 && again != main_pid);
    /* its LISTEN goes with the session's setup, one query string (store_setup_sql): over once the
     * session has run that string to its end, or anything after it */
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld AND query <> ''"
                               " AND (state = 'idle' OR query NOT LIKE 'SET TimeZone%%')", again);
    assert_int_equal (itest_wait_sql (h, sql, 1, 10000), 1);
    import ("wake:b");
    ms = wait_delivered ("connected", "wake:b");
    if (ms < 0)
        fail_msg ("after the main connection came back, the \"connected\" event of wake:b was not delivered "
                  "within %d ms", DELIVER_MS);
}

/* Refreshes commit notifications on the cache's channel; the delivery's own session must not be
 * woken by them. It listened on a channel of its own before, and woke for every commit. */
static void
test_refreshes_leave_delivery_asleep (void **state)
{
    import ("wake:r");
    assert_true (wait_delivered ("connected", "wake:r") >= 0);
    usleep (300000);
    long long pid = session_pid ("ferrule-worker-webhook w1 app");
    assert_true (pid > 0);
    long long before = sleeps (pid);
    /* nor the thread itself: the wake-up after a batch's commit goes only when it wrote an event */
    PGconn *listener = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (listener), CONNECTION_OK);
    PQclear (PQexec (listener, "LISTEN ferrule_events"));
    /* over one client connected beforehand, back to back: forty ferrulectl runs took 56 s on a
       loaded machine under AddressSanitizer, long enough for the session's own periodic
       statements to pass the bound below (CI-like run, 2026-12-06) */
    client_t *asker = itest_client_connected (harness_brokers (h));
    assert_non_null (asker);
    json_t *args = json_pack ("{s:s}", "integration", "wake:r");
    for (int i = 0; i < REFRESHES; i++) {
        json_t *r = client_call (asker, "refresh", args, 10000);
        if (client_exit_code (r) != 0)
            fail_msg ("refresh %d of wake:r: %s", i, itest_code (r));
        json_decref (r);
    }
    json_decref (args);
    client_destroy (&asker);
    long long woke = sleeps (pid) - before;
    int wakes = 0;
    assert_int_equal (PQconsumeInput (listener), 1);
    for (PGnotify *n; (n = PQnotifies (listener)); PQfreemem (n))
        wakes++;
    PQfinish (listener);
    print_message ("wake-ups of the delivery threads during %d refreshes: %d\n", REFRESHES, wakes);
    assert_int_equal (wakes, 0);
    print_message ("the event delivery's session woke %lld times during %d refreshes\n", woke, REFRESHES);
    /* a few for anything else it does; the old listener woke once a refresh at least */
    if (woke >= REFRESHES / 4)
        fail_msg ("the event delivery's database session woke %lld times during %d refreshes: it hears "
                  "every commit's notification", woke, REFRESHES);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'wake:r' "
                                          "AND outcome = 'refreshed'"), REFRESHES);
}

/* Every writer of an event wakes the thread after its commit (migration 015: the outbox's
 * function marks the session, and the transaction after the commit wakes and clears): a scope
 * report, a refresh after a transient failure ("recovered", from a refresh batch), an invalid_grant
 * (a change of status, from a failure record), a disconnect, an API's rejection of a token that no
 * refresh token can replace (a change of status too) and an operator's test event, each
 * delivered within seconds while the thread polls once a minute. */
static void
test_every_writer_of_an_event_wakes_delivery (void **state)
{
    static const struct {
        const char *type, *fault;
        int fault_status;
        const char *args [6];
    } steps [] = {
        { "insufficient_scope", NULL, -1, { "report-scope", "--integration", "wake:k", "--scope", "files.write", NULL } },
        { "recovered", "status", 500, { "refresh", "--integration", "wake:k", NULL } },
        { "needs_reconnect", "invalid_grant", -1, { "refresh", "--integration", "wake:k", NULL } },
        { "disconnected", NULL, -1, { "disconnect", "--integration", "wake:k", NULL } },
    };
    import ("wake:k");
    assert_true (wait_delivered ("connected", "wake:k") >= 0);
    for (size_t i = 0; i < sizeof steps / sizeof steps [0]; i++) {
        int rc;
        const char *const *a = steps [i].args;
        if (steps [i].fault)        /* the first attempt fails this way; a "recovered" needs the second */
            itest_fault (h, "fakebox", steps [i].fault, 1, steps [i].fault_status, -1, -1);
        json_decref (harness_ctl (h, &rc, a [0], a [1], a [2], a [3], a [4], NULL));
        int again = strcmp (steps [i].type, "recovered") == 0;
        for (int k = 0; again && rc != 0 && k < 5; k++) {
            usleep (1100000);       /* the integration's backoff after the failure: 1 s */
            json_decref (harness_ctl (h, &rc, a [0], a [1], a [2], NULL));
        }
        if (again)
            assert_int_equal (rc, 0);
        long long ms = wait_delivered (steps [i].type, "wake:k");
        if (ms < 0)
            fail_msg ("the \"%s\" event of wake:k was not delivered within %d ms", steps [i].type, DELIVER_MS);
        print_message ("\"%s\" delivered in %lld ms\n", steps [i].type, ms);
    }
    /* an API's rejection of the token of an integration connected without a refresh token
     * (token --reject), which makes it needs_reconnect with a batch of its own */
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "issue_refresh_token", 0));
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "wake:n", "--provider", "fakebox", "--redirect-uri",
                             "http://127.0.0.1/callback", NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (harness_ctl (h, &rc, "callback", "--url", location, NULL));
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE id = 'wake:n'"
                                          " AND status = 'active' AND refresh_token IS NULL"), 1);
    assert_true (wait_delivered ("connected", "wake:n") >= 0);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "wake:n", NULL);
    assert_int_equal (rc, 0);
    json_t *r = harness_ctl (h, &rc, "token", "--integration", "wake:n", "--reject",
                             json_string_value (json_object_get (t, "access_token")), NULL);
    assert_string_equal (itest_code (r), "needs_reconnect");
    long long ms = wait_delivered ("needs_reconnect", "wake:n");
    if (ms < 0)
        fail_msg ("the \"needs_reconnect\" event of a rejected token without a refresh token was not delivered "
                  "within %d ms", DELIVER_MS);
    print_message ("\"needs_reconnect\" (a rejected token) delivered in %lld ms\n", ms);
    json_decref (r);
    json_decref (t);
    json_decref (c);
    free (location);
    /* and an operator's test event, which the worker writes itself (not through the outbox's
     * function) and marks the same way */
    char url [128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d/hooks", receiver_port ());
    json_decref (harness_ctl (h, &rc, "webhook", "test", url, NULL));
    assert_int_equal (rc, 0);
    ms = wait_delivered ("test", "");
    if (ms < 0)
        fail_msg ("the test event was not delivered within %d ms", DELIVER_MS);
    print_message ("\"test\" delivered in %lld ms\n", ms);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_new_event_wakes_delivery),
        cmocka_unit_test (test_refreshes_leave_delivery_asleep),
        cmocka_unit_test (test_every_writer_of_an_event_wakes_delivery),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
