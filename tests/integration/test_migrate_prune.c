/* test_migrate_prune.c - "ferrule-migrate prune-events --older-than=DAYS": events older than DAYS
 * go with their deliveries, in batches, younger ones stay; an event a worker is sending (its
 * delivery leased) or whose rows another session holds is left, counted, and never waited for
 * (exit 1); an integration's latest connection event stays, so the chain's trigger still makes
 * "recovered"; and an "expiring" forecast whose condition still holds keeps its event, so a
 * running worker's forecast never warns twice of it (while deleting that row by hand makes it
 * warn again), until the integration moves on and the event may go. And beside a worker that
 * is delivering, pruning takes no delivery from under it and makes it send nothing twice. */
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

#define OLD_EVENTS 2500         /* more than two batches of 1000 */
#define LIVE_EVENTS 30          /* of each kind, in test_prune_beside_deliveries */
#define SECRET "whsec_prune_test_0123456789abcdef"

static harness_t *h;

static int
teardown (void **state)
{
    (void) state;
    receiver_stop ();               /* none started: nothing to stop */
    return itest_teardown (&h);
}

/* Runs prune-events with the arguments given, prints what it said, returns its exit status and
 * (the caller frees them) its standard output and error. */
static int
prune (char **out, char **err, const char *older_than, const char *batch)
{
    int64_t t0 = clock_mono_ms ();
    int rc = batch ? harness_migrate (h, out, "prune-events", older_than, batch, NULL)
                   : harness_migrate (h, out, "prune-events", older_than, NULL);
    *err = itest_migrate_stderr (h, "prune-events");
    printf ("prune-events %s (%lld ms), exit %d:\n%s%s", older_than, (long long) (clock_mono_ms () - t0), rc, *out,
            *err);
    return rc;
}

/* An event created days ago, as a trigger of the outbox writes it. */
static void
insert_event (const char *type, const char *integration, int days)
{
    char sql [512];
    snprintf (sql, sizeof sql, "INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
              " VALUES ('%s', '%s', 'fakebox', 'healthy', now () - make_interval (days => %d))", type, integration, days);
    assert_int_equal (harness_sql (h, sql), 0);
}

/* OLD_EVENTS events 40 days old, each with a delivered delivery to "app" and one to "ops" (every
 * tenth still pending: an endpoint held or removed), and a test event as old; ten events a day old
 * with theirs. prune-events --older-than=30 deletes the old ones and all their deliveries, in
 * batches, and keeps the young; run again, it has nothing left to do. */
static void
test_old_events_go_young_ones_stay (void **state)
{
    (void) state;
    char *out = NULL, *err = NULL;
    char sql [1024];
    h = harness_new ("migrate_prune");
    assert_non_null (h);
    assert_int_equal (harness_sql (h, "INSERT INTO events (type, diagnosis, endpoint, created_at)"
                                      " VALUES ('test', 'healthy', 'app', now () - interval '40 days')"), 0);
    snprintf (sql, sizeof sql, "INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
              " SELECT 'disconnected', 'old' || g || ':box', 'fakebox', 'disconnected',"
              "  now () - interval '40 days' + g * interval '1 second' FROM generate_series (1, %d) AS g", OLD_EVENTS);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
                                      " SELECT 'disconnected', 'young' || g || ':box', 'fakebox', 'disconnected',"
                                      "  now () - interval '1 day' FROM generate_series (1, 10) AS g"), 0);
    assert_int_equal (harness_sql (h, "INSERT INTO event_deliveries (event_seq, endpoint, integration_id, state, attempts)"
                                      " SELECT seq, ep, integration_id,"
                                      "  CASE WHEN ep = 'ops' AND seq % 10 = 0 THEN 'pending' ELSE 'delivered' END, 1"
                                      " FROM events, unnest (ARRAY['app', 'ops']) AS ep"), 0);
    long long unsent = harness_sql_int (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                           " WHERE d.state = 'pending' AND e.created_at < now () - interval '30 days'");
    assert_true (unsent > 0);

    assert_int_equal (prune (&out, &err, "--older-than=30", NULL), 0);
    snprintf (sql, sizeof sql, "pruned %d events and %d deliveries older than 30 days (%lld of them never sent: still"
              " pending)\n", OLD_EVENTS + 1, 2 * (OLD_EVENTS + 1), unsent);
    assert_non_null (strstr (out, sql));
    assert_null (strstr (out, "left"));
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE created_at < now () - interval '30 days'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events"), 10);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries"), 20);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries d"
                                          " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = d.event_seq)"), 0);

    /* nothing left to do; a smaller batch too */
    assert_int_equal (prune (&out, &err, "--older-than=30", "--batch=7"), 0);
    assert_non_null (strstr (out, "pruned 0 events and 0 deliveries older than 30 days\n"));
    free (out);
    free (err);
    /* the day-old ones go at --older-than=1 only when a day has passed: not yet */
    assert_int_equal (prune (&out, &err, "--older-than=2", NULL), 0);
    assert_non_null (strstr (out, "pruned 0 events"));
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events"), 10);
}

/* An old event with a delivery a worker has leased (being sent) stays with all its deliveries,
 * and is counted: exit 1, and the warning says to run again later. So does one whose delivery row
 * another session holds locked (a claim in its transaction), without being waited for. An
 * expired lease (a worker gone) holds nothing. Once the lease is over, the next run deletes it. */
static void
test_leased_delivery_keeps_its_event (void **state)
{
    (void) state;
    char *out = NULL, *err = NULL;
    h = harness_new ("migrate_prune_leased");
    assert_non_null (h);
    insert_event ("disconnected", "leased:box", 40);
    insert_event ("disconnected", "expired:box", 40);
    insert_event ("disconnected", "locked:box", 40);
    insert_event ("disconnected", "free:box", 40);
    assert_int_equal (harness_sql (h, "INSERT INTO event_deliveries (event_seq, endpoint, integration_id, state, attempts,"
                                      "  lease_owner, lease_token, lease_expires_at)"
                                      " SELECT seq, 'app', integration_id, 'pending', 1, 'w1', 'tok',"
                                      "  CASE integration_id WHEN 'leased:box' THEN now () + interval '1 hour'"
                                      "       WHEN 'expired:box' THEN now () - interval '1 minute' END"
                                      " FROM events"), 0);
    assert_int_equal (harness_sql (h, "INSERT INTO event_deliveries (event_seq, endpoint, integration_id, state)"
                                      " SELECT seq, 'ops', integration_id, 'delivered' FROM events"), 0);
    PGconn *holder = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (holder), CONNECTION_OK);
    PGresult *res = PQexec (holder, "BEGIN; SELECT 1 FROM event_deliveries WHERE integration_id = 'locked:box'"
                                    " AND endpoint = 'ops' FOR UPDATE");
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    PQclear (res);

    int64_t t0 = clock_mono_ms ();
    int rc = prune (&out, &err, "--older-than=30", NULL);
    int64_t took = clock_mono_ms () - t0;
    assert_int_equal (rc, 1);
    /* deleted with theirs: the expired lease's pending delivery and the free event's, never sent */
    assert_non_null (strstr (out, "pruned 2 events and 4 deliveries older than 30 days (2 of them never sent: still"
                                  " pending); 2 left: 2 with a delivery a worker is sending (for a later run)\n"));
    assert_non_null (strstr (err, "warning: 2 events older than 30 days left"));
    assert_non_null (strstr (err, "again later"));
    assert_true (took < 10000);                  /* it did not wait for the locked row */
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id IN ('leased:box', 'locked:box')"), 2);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries"
                                          " WHERE integration_id IN ('leased:box', 'locked:box')"), 4);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id IN ('expired:box', 'free:box')"), 0);

    /* the delivery recorded (as a worker's finish does), the lock gone: the next run deletes both */
    res = PQexec (holder, "COMMIT");
    PQclear (res);
    PQfinish (holder);
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries SET state = 'delivered', lease_owner = NULL,"
                                      " lease_token = NULL, lease_expires_at = NULL WHERE lease_token = 'tok'"), 0);
    assert_int_equal (prune (&out, &err, "--older-than=30", NULL), 0);
    assert_non_null (strstr (out, "pruned 2 events and 4 deliveries older than 30 days\n"));
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events"), 0);
}

/* The chain's trigger decides whether a refresh after an invalid_grant is a "recovered" event by
 * the integration's latest needs_reconnect, connected, reconnected or recovered event. Pruning
 * keeps that one (the older ones go), so the trigger decides as before: here, "recovered". */
static void
test_latest_connection_event_stays (void **state)
{
    (void) state;
    char *out = NULL, *err = NULL;
    h = harness_new ("migrate_prune_latest");
    assert_non_null (h);
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id) VALUES ('st:box', 'fakebox', 1)"), 0);
    insert_event ("connected", "st:box", 50);
    insert_event ("recovered", "st:box", 45);
    insert_event ("needs_reconnect", "st:box", 40);
    insert_event ("disconnected", "other:box", 40);
    assert_int_equal (prune (&out, &err, "--older-than=30", NULL), 0);
    assert_non_null (strstr (out, "pruned 3 events and 0 deliveries older than 30 days; 1 left: 1 kept as their"
                                  " integration's latest connection event\n"));
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'st:box'"
                                          " AND type = 'needs_reconnect'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events"), 1);
    /* an invalid_grant, then a refresh that worked: the trigger reads the kept needs_reconnect */
    assert_int_equal (harness_sql (h, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " VALUES ('st:box', 1, 'w1', 'invalid_grant')"), 0);
    assert_int_equal (harness_sql (h, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " VALUES ('st:box', 2, 'w1', 'refreshed')"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'st:box'"
                                          " AND type = 'recovered'"), 1);
}

/* ---------------------------------------------------------------- the forecasts, by a worker */

/* The providers file with the catalog limits the forecasts read (as it_events). */
static void
add_limits (void)
{
    json_t *p = json_load_file (harness_providers_file (h), 0, NULL);
    assert_non_null (p);
    json_object_set_new (json_object_get (p, "fakebox"), "refresh_token_idle_days", json_integer (60));
    json_object_set_new (json_object_get (p, "fakegoogle"), "grant_max_days", json_integer (7));
    assert_int_equal (json_dump_file (p, harness_providers_file (h), JSON_INDENT (2)), 0);
    json_decref (p);
}

static void
import (const char *id, const char *provider)
{
    char *rt = itest_grant (h, provider, NULL);
    assert_int_equal (itest_import (h, id, provider, rt), 0);
    free (rt);
}

#define IDLE_EVENTS  "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'idle:box'"
#define GRANT_EVENTS "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'testing:google'"

/* A running worker's forecasts (every 300 ms) warn of a refresh token idle for 50 of its 60 days
 * and of a grant 7 days into a 7-day limit, once each: their dedupe keys, in the events table,
 * are the forecast's only memory of it. The events made 40 days old, prune-events --older-than=30
 * keeps both (the conditions still hold) and the forecasts, passes later, have not warned again.
 * Then the idle token is refreshed (a new generation: its key can never be made again) and the
 * next run deletes its warning; the grant's stays. Deleted by hand as the schema owner (as the
 * retention advice before this command did), the grant's warning is sent again: what pruning
 * must not do. */
static void
test_forecast_never_repeats_after_prune (void **state)
{
    (void) state;
    char *out = NULL, *err = NULL;
    int rc;
    h = harness_new ("migrate_prune_forecast");
    assert_non_null (h);
    add_limits ();
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    harness_set_env (h, "FERRULE_EVENTS_FORECAST_MS", "300");
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_DB_CONNECT_TIMEOUT_MS", "1000");
    /* no keep-alive refresh of the idle token behind the test's back: that is its own step here */
    harness_set_env (h, "FERRULE_SWEEP_MS", "3600000");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    import ("idle:box", "fakebox");
    import ("testing:google", "fakegoogle");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET last_refresh_at = now() - interval '50 days',"
                                      " created_at = now() - interval '50 days', connected_at = now() - interval '50 days'"
                                      " WHERE id = 'idle:box'"), 0);
    /* the chain is append-only even for its owner: lifted for the one backdated grant (as it_events) */
    assert_int_equal (harness_sql (h, "BEGIN; ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = now() - interval '7 days 1 hour'"
                                      "  WHERE integration_id = 'testing:google';"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update; COMMIT"), 0);
    assert_int_equal (itest_wait_sql (h, IDLE_EVENTS, 1, 15000), 1);
    assert_int_equal (itest_wait_sql (h, GRANT_EVENTS, 1, 15000), 1);
    long long idle_seq = harness_sql_int (h, "SELECT seq FROM events WHERE type = 'expiring' AND integration_id = 'idle:box'");
    long long grant_seq = harness_sql_int (h, "SELECT seq FROM events WHERE type = 'expiring'"
                                              " AND integration_id = 'testing:google'");
    /* every event made 40 days old, and an unrelated one to be deleted beside them */
    assert_int_equal (harness_sql (h, "UPDATE events SET created_at = created_at - interval '40 days'"), 0);
    insert_event ("disconnected", "gone:box", 40);

    assert_int_equal (prune (&out, &err, "--older-than=30", NULL), 0);
    /* kept: the two warnings, and each integration's "connected" (its latest connection event) */
    assert_non_null (strstr (out, "pruned 1 event and 0 deliveries older than 30 days; 4 left: 2 kept for the dedupe"
                                  " key that stops a forecast from repeating, 2 kept as their integration's latest"
                                  " connection event\n"));
    free (out);
    free (err);
    usleep (1500000);                /* several forecast passes */
    assert_int_equal (harness_sql_int (h, IDLE_EVENTS), 1);
    assert_int_equal (harness_sql_int (h, GRANT_EVENTS), 1);
    assert_int_equal (harness_sql_int (h, "SELECT max (seq) FROM events WHERE type = 'expiring'"
                                          " AND integration_id = 'idle:box'"), idle_seq);
    assert_int_equal (harness_sql_int (h, "SELECT max (seq) FROM events WHERE type = 'expiring'"
                                          " AND integration_id = 'testing:google'"), grant_seq);

    /* the keep-alive works again: a new generation, the idle warning's key is dead, and it goes */
    itest_expire (h, "idle:box");
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "idle:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 0);
    assert_int_equal (prune (&out, &err, "--older-than=30", NULL), 0);
    assert_non_null (strstr (out, "pruned 1 event and 0 deliveries older than 30 days; 3 left: 1 kept for the dedupe"
                                  " key that stops a forecast from repeating, 2 kept as their integration's latest"
                                  " connection event\n"));
    free (out);
    free (err);
    assert_int_equal (harness_sql_int (h, IDLE_EVENTS), 0);
    usleep (1500000);
    assert_int_equal (harness_sql_int (h, IDLE_EVENTS), 0);     /* refreshed: not idle, nothing to repeat */
    assert_int_equal (harness_sql_int (h, GRANT_EVENTS), 1);

    /* what pruning must not do: the grant's warning deleted by hand comes back */
    assert_int_equal (harness_sql (h, "DELETE FROM event_deliveries WHERE event_seq IN (SELECT seq FROM events"
                                      " WHERE type = 'expiring');"
                                      " DELETE FROM events WHERE type = 'expiring'"), 0);
    assert_int_equal (itest_wait_sql (h, GRANT_EVENTS, 1, 15000), 1);
    assert_true (harness_sql_int (h, "SELECT max (seq) FROM events WHERE type = 'expiring'"
                                     " AND integration_id = 'testing:google'") > grant_seq);
}

/* ---------------------------------------------------------------- beside a delivering worker */

/* A worker delivers events to a receiver that takes 100 ms to answer each, while half of them
 * (made 40 days old meanwhile) are pruned, again and again, 5 per statement, until none is left.
 * Pruning never takes a delivery from under the worker: no attempt's record finds its row gone
 * (the worker would say the lease had expired, or fail the record), the fan-out never fails, no
 * event reaches the receiver twice, and every young event arrives once. Each run exits 0, or 1
 * when it left an event being sent. */
static void
test_prune_beside_deliveries (void **state)
{
    (void) state;
    char *out = NULL, *err = NULL;
    char path [512], secret [512], text [1024], sql [512];
    unsigned long long more;
    h = harness_new ("migrate_prune_live");
    assert_non_null (h);
    assert_int_equal (receiver_start (0, SECRET), 0);
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/hooks\","
              " \"secret_file\": \"%s\"}]}", receiver_port (), secret);
    itest_write_file (path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "100");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "400");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "3000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "10000");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    receiver_set (0, 100);
    snprintf (sql, sizeof sql, "INSERT INTO events (type, integration_id, provider, diagnosis)"
              " SELECT 'disconnected', k || g || ':box', 'fakebox', 'disconnected'"
              " FROM generate_series (1, %d) AS g, unnest (ARRAY['old', 'yng']) AS k ORDER BY g, k", LIVE_EVENTS);
    assert_int_equal (harness_sql (h, sql), 0);
    /* once the first are being sent, half of them grow old */
    assert_true (itest_wait_sql (h, "SELECT (count(*) > 0)::int FROM event_deliveries WHERE lease_expires_at > now ()", 1,
                                 15000) == 1);
    assert_int_equal (harness_sql (h, "UPDATE events SET created_at = created_at - interval '40 days'"
                                      " WHERE integration_id LIKE 'old%'"), 0);
    int runs = 0, held_runs = 0, rc = -1;
    for (int64_t until = clock_mono_ms () + 60000; clock_mono_ms () < until; runs++) {
        rc = prune (&out, &err, "--older-than=30", "--batch=5");
        free (out);
        free (err);
        assert_true (rc == 0 || rc == 1);
        held_runs += rc == 1;
        if (rc == 0 && harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id LIKE 'old%'") == 0)
            break;
        usleep (100000);
    }
    print_message ("%d prune runs, %d of them left events being sent\n", runs, held_runs);
    assert_int_equal (rc, 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id LIKE 'old%'"), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries WHERE state = 'delivered'",
                                      LIVE_EVENTS, 30000), LIVE_EVENTS);
    usleep (500000);                 /* a late attempt would have arrived by now */

    receiver_got_t *got = NULL;
    int bad = 0, n = receiver_snapshot (&got, &bad), twice = 0, young = 0;
    for (int i = 0; i < n; i++) {
        young += strncmp (got [i].integration, "yng", 3) == 0 && got [i].status == 200;
        for (int j = 0; j < i; j++)
            twice += strcmp (got [i].id, got [j].id) == 0;
    }
    free (got);
    print_message ("%d requests: %d for young events, %d for an event already received, %d bad\n", n, young, twice,
                   bad);
    assert_int_equal (bad, 0);
    assert_int_equal (twice, 0);
    assert_int_equal (young, LIVE_EVENTS);
    assert_int_equal (itest_log_lines (h, "w1", "the lease had expired", &more), 0);
    assert_int_equal (itest_log_lines (h, "w1", "its lease expires and it is sent again", &more), 0);
    assert_int_equal (itest_log_lines (h, "w1", "could not", &more), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_old_events_go_young_ones_stay, teardown),
        cmocka_unit_test_teardown (test_leased_delivery_keeps_its_event, teardown),
        cmocka_unit_test_teardown (test_latest_connection_event_stays, teardown),
        cmocka_unit_test_teardown (test_forecast_never_repeats_after_prune, teardown),
        cmocka_unit_test_teardown (test_prune_beside_deliveries, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
