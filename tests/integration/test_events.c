/* test_events.c - events, never lost: the outbox holds an event exactly when its change committed;
 * signed webhooks reach a real receiver on 127.0.0.1 that checks every signature, refuses the
 * first attempts and is down for a while, while a worker is killed with SIGKILL mid-delivery:
 * every event arrives, none twice after dedupe by id, in order per integration. Also: expiring
 * forecasts from the catalog's limits, failure after the max age, replay, webhook test, the
 * webhook's doctor. Replies hold no tokens here, but nothing of a reply is printed anyway. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <curl/curl.h>
#include "clock.h"
#include "mem.h"
#include "itest.h"
#include "receiver.h"

#define SECRET      "whsec_events_test_0123456789abcdef"
#define DEAD_SECRET "dead-endpoint-secret-0123456789"   /* each endpoint its own (webhook.c) */
#define NINTEG      8

/* ---------------------------------------------------------------- setup */

static harness_t *h;
static char dead_port [16];
static int dead_fd = -1;            /* holds dead_port: bound, never listening, so refused */
static int app_port;

static size_t
collect (char *data, size_t size, size_t nmemb, void *arg)
{
    mem_buf_append (arg, data, size * nmemb);
    return size * nmemb;
}

/* A series' value from a worker's /metrics (the whole line after the name), -1 when absent. */
static long long
metric (const char *worker, const char *series)
{
    char url [128];
    mem_buf_t body;
    long long value = -1;
    mem_buf_init (&body, 1 << 20);
    snprintf (url, sizeof url, "http://127.0.0.1:%d/metrics", itest_http_port (h, worker));
    CURL *c = curl_easy_init ();
    curl_easy_setopt (c, CURLOPT_URL, url);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 2000L);
    if (curl_easy_perform (c) == CURLE_OK && mem_buf_append (&body, "", 1) == 0) {
        char needle [256];
        snprintf (needle, sizeof needle, "\n%s ", series);
        const char *p = strstr (body.data, needle);
        if (p)
            value = strtoll (p + strlen (needle), NULL, 10);
    }
    curl_easy_cleanup (c);
    mem_buf_free (&body);
    return value;
}

/* The providers file with the catalog limits the forecasts read. */
static void
add_limits (void)
{
    json_t *p = json_load_file (harness_providers_file (h), 0, NULL);
    assert_non_null (p);
    json_object_set_new (json_object_get (p, "fakebox"), "refresh_token_idle_days", json_integer (60));
    json_object_set_new (json_object_get (p, "fakegoogle"), "grant_max_days", json_integer (7));
    /* what doctor knows Google by, for its testing-mode advice: the fake is on 127.0.0.1 */
    json_object_set_new (json_object_get (p, "fakegoogle"), "family", json_string ("google"));
    json_object_set_new (json_object_get (p, "fakegoogle"), "notes",
                         json_string ("Like Google: revoke the app at https://myaccount.google.com/permissions."));
    assert_int_equal (json_dump_file (p, harness_providers_file (h), JSON_INDENT (2)), 0);
    json_decref (p);
}

static int
setup (void **state)
{
    h = harness_new ("events");
    /* a port nobody listens on, for the endpoint that never answers: kept bound by this process
     * (not listening, so every connection is refused), so that no other test's server running
     * meanwhile can take it (a port found free and let go was, once: its server answered 405) */
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (!h || (dead_fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
        || bind (dead_fd, (struct sockaddr *) &a, sizeof a) != 0
        || getsockname (dead_fd, (struct sockaddr *) &a, &alen) != 0)
        return -1;
    snprintf (dead_port, sizeof dead_port, "%d", ntohs (a.sin_port));
    if (receiver_start (0, SECRET) != 0)
        return -1;
    app_port = receiver_port ();
    char path [512], secret [512], other [512], text [2048];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (other, sizeof other, "%s/webhook-dead.secret", harness_workdir (h));   /* each its own */
    itest_write_file (other, DEAD_SECRET "\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text,
              "{\"endpoints\": ["
              " {\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/hooks\", \"secret_file\": \"%s\"},"
              " {\"name\": \"dead\", \"url\": \"http://127.0.0.1:%s/hooks\", \"secret_file\": \"%s\","
              "  \"events\": [\"disconnected\"]}]}", app_port, secret, dead_port, other);
    itest_write_file (path, text);
    add_limits ();
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "100");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "400");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "1500");
    /* long enough for test_delivery_survives_kill_and_outage's outage and restart on a loaded
     * machine (12 s was a margin of two under AddressSanitizer); test_failed_then_replayed ages
     * its own delivery instead of waiting this out */
    harness_set_env (h, "FERRULE_WEBHOOK_MAX_AGE_S", "60");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    harness_set_env (h, "FERRULE_EVENTS_FORECAST_MS", "300");
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "250");
    /* the database's timeouts follow the heartbeat unless set (250 ms for a statement and for a
     * connection, 62 ms for a lock): a loaded machine's slow flush, or its slow start of a backend,
     * is no outage here (a worker's connection not made in 250 ms failed it_crash's setup in CI,
     * 2026-12-06, with builds beside the tests) */
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_DB_CONNECT_TIMEOUT_MS", "1000");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0 || harness_start_worker (h, "w2") != 0)
        return -1;
    return harness_wait_ready (h, 2, 20000);
}

static int
teardown (void **state)
{
    int bad = itest_teardown (&h);
    receiver_stop ();
    if (dead_fd >= 0)
        close (dead_fd);
    return bad;
}

static void
import (const char *id, const char *provider)
{
    char *rt = itest_grant (h, provider, NULL);
    assert_int_equal (itest_import (h, id, provider, rt), 0);
    free (rt);
}

static long long
sqlf (const char *fmt, const char *a)
{
    char sql [1024];
    snprintf (sql, sizeof sql, fmt, a);
    return harness_sql_int (h, sql);
}

/* ---------------------------------------------------------------- tests */

/* The ids of a listing's first events, in order, into ids; how many. */
static size_t
listed_ids (json_t *r, char ids [][40], size_t cap)
{
    json_t *list = json_object_get (r, "events");
    size_t n = json_array_size (list) < cap ? json_array_size (list) : cap;
    for (size_t i = 0; i < n; i++)
        snprintf (ids [i], 40, "%s", json_string_value (json_object_get (json_array_get (list, i), "id")));
    return n;
}

/* The events of integration id, n of them of the types want (newest first), listed a page of two
 * at a time with --before, and in windows with --since and --until. */
static void
list_pages (const char *id, const char *const *want, size_t n)
{
    int rc;
    char before [40] = "";
    size_t seen = 0;
    for (int page = 0; seen < n && page < 8; page++) {
        json_t *r = before [0]
            ? harness_ctl (h, &rc, "events", "--integration", id, "--limit", "2", "--before", before, NULL)
            : harness_ctl (h, &rc, "events", "--integration", id, "--limit", "2", NULL);
        assert_int_equal (rc, 0);
        char got [2][40];
        size_t k = listed_ids (r, got, 2);
        json_t *list = json_object_get (r, "events");
        for (size_t i = 0; i < k && seen < n; i++, seen++) {
            const char *type = json_string_value (json_object_get (json_array_get (list, i), "type"));
            if (strcmp (type, want [seen]) != 0)
                fail_msg ("page %d: event %zu is \"%s\", expected \"%s\"", page, seen, type, want [seen]);
        }
        /* "truncated" says whether older ones are left, the limit's cut included */
        int more = json_is_true (json_object_get (r, "truncated"));
        if (more != (seen < n))
            fail_msg ("page %d (%zu of %zu events seen): truncated %s", page, seen, n, more ? "true" : "false");
        json_decref (r);
        if (k == 0)
            break;
        snprintf (before, sizeof before, "%s", got [k - 1]);
    }
    assert_int_equal (seen, n);
    /* in text, standard error names the next page */
    char *out = NULL, want_line [96];
    json_t *r = harness_ctl (h, &rc, "events", "--integration", id, "--limit", "1", NULL);
    char first [1][40];
    assert_int_equal (listed_ids (r, first, 1), 1);
    json_decref (r);
    assert_int_equal (harness_ctl_text (h, &rc, &out, "events", "--integration", id, "--limit", "1", NULL), 0);
    assert_int_equal (rc, 0);
    free (out);
    snprintf (want_line, sizeof want_line, "the next page is --before %s\n", first [0]);
    if (!itest_workdir_contains (h, want_line))
        fail_msg ("ferrulectl's standard error does not name the next page");
    /* until an event's time (with its milliseconds) lists every older event, none lost to the
     * second it falls in: the pruned "before"'s hint pages on that way */
    r = harness_ctl (h, &rc, "events", "--integration", id, NULL);
    assert_int_equal (rc, 0);
    json_t *all = json_object_get (r, "events");
    char at [64];
    snprintf (at, sizeof at, "%s", json_string_value (json_object_get (json_array_get (all, 1), "at")));
    json_t *older = harness_ctl (h, &rc, "events", "--integration", id, "--until", at, NULL);
    assert_int_equal (rc, 0);
    for (size_t i = 2; i < json_array_size (all); i++) {
        const char *want_id = json_string_value (json_object_get (json_array_get (all, i), "id"));
        int found = 0;
        for (size_t k = 0; k < json_array_size (json_object_get (older, "events")); k++)
            found |= strcmp (want_id, json_string_value (json_object_get (json_array_get (
                                 json_object_get (older, "events"), k), "id"))) == 0;
        if (!found)
            fail_msg ("--until %s left out event %zu, older than that time", at, i);
    }
    json_decref (older);
    json_decref (r);
    /* a window: until a time before them all has none; since then until far ahead, all */
    r = harness_ctl (h, &rc, "events", "--integration", id, "--until", "2000-01-01T00:00:00Z", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (r, "events")), 0);
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "--integration", id, "--since", "2020-01-01T00:00:00Z", "--until",
                     "2999-01-01T00:00:00Z", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (r, "events")), n);
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "--until", "tomorrow", NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (r), "bad_request");
    json_decref (r);
    /* a window that ends before it begins (the two swapped) is refused, not listed empty: an empty
     * listing said there were no such events */
    r = harness_ctl (h, &rc, "events", "--integration", id, "--since", "2999-01-01T00:00:00Z", "--until",
                     "2020-01-01T00:00:00Z", NULL);
    if (rc != 2 || strcmp (itest_code (r), "bad_request") != 0)
        fail_msg ("--since after --until: exit %d, code \"%s\", %zu events listed", rc, itest_code (r),
                  json_array_size (json_object_get (r, "events")));
    const char *hint = json_string_value (json_object_get (json_object_get (r, "error"), "hint"));
    if (!hint || !strstr (hint, "swap"))
        fail_msg ("--since after --until: the hint does not say to swap them: %s", hint ? hint : "(none)");
    json_decref (r);
    /* the next page of an event no longer kept: said, not taken for the listing's end */
    r = harness_ctl (h, &rc, "events", "--integration", id, "--before", "00000000-0000-4000-8000-000000000000", NULL);
    if (rc != 3 || strcmp (itest_code (r), "not_found") != 0)
        fail_msg ("--before an unknown event: exit %d, %s", rc, itest_code (r));
    assert_non_null (json_string_value (json_object_get (json_object_get (r, "error"), "hint")));
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "--before", "not-a-uuid", NULL);
    assert_int_equal (rc, 2);
    json_decref (r);
}

/* An event exists if and only if its change committed. */
static void
test_outbox_iff_committed (void **state)
{
    import ("tx:box", "fakebox");
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'connected'", "tx:box"), 1);
    /* a status change that is rolled back leaves no event; the same change committed leaves one */
    assert_int_equal (harness_sql (h, "BEGIN; UPDATE integrations SET status = 'needs_reconnect' WHERE id = 'tx:box'; "
                                      "ROLLBACK"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'needs_reconnect'", "tx:box"), 0);
    assert_int_equal (harness_sql (h, "BEGIN; UPDATE integrations SET status = 'needs_reconnect', "
                                      "last_error_message = 'provider answered invalid_grant' WHERE id = 'tx:box'; COMMIT"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'needs_reconnect'"
                            " AND diagnosis = 'needs_reconnect'", "tx:box"), 1);
    /* an update that does not change the status makes none */
    assert_int_equal (harness_sql (h, "UPDATE integrations SET status = 'needs_reconnect' WHERE id = 'tx:box'"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'needs_reconnect'", "tx:box"), 1);
    /* a chain row rolled back takes its event with it */
    assert_int_equal (harness_sql (h, "BEGIN; INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " VALUES ('tx:box', 1, 't', 'disconnected'); ROLLBACK"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'disconnected'", "tx:box"), 0);

    /* the operations: import again (reconnected), report_scope, disconnect */
    import ("tx:box", "fakebox");
    int rc;
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "tx:box", "--scope", "files.write", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    r = harness_ctl (h, &rc, "disconnect", "--integration", "tx:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    /* in the order the changes happened */
    r = harness_ctl (h, &rc, "events", "--integration", "tx:box", NULL);
    assert_int_equal (rc, 0);
    json_t *list = json_object_get (r, "events");
    static const char *const want [] = { "disconnected", "insufficient_scope", "reconnected", "needs_reconnect", "connected" };
    assert_int_equal (json_array_size (list), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *e = json_array_get (list, i);
        assert_string_equal (json_string_value (json_object_get (e, "type")), want [i]);
        assert_string_equal (json_string_value (json_object_get (e, "integration")), "tx:box");
        assert_string_equal (json_string_value (json_object_get (e, "provider")), "fakebox");
    }
    assert_non_null (strstr (json_string_value (json_object_get (json_array_get (list, 1), "detail")), "files.write"));
    assert_true (json_is_false (json_object_get (r, "truncated")));
    json_decref (r);
    /* --since: the future has no events, a time from before has them all, nonsense is refused */
    r = harness_ctl (h, &rc, "events", "--integration", "tx:box", "--since", "2999-01-01T00:00:00Z", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (r, "events")), 0);
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "--integration", "tx:box", "--since", "2020-01-01T00:00:00.5+02:00", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (r, "events")), 5);
    json_decref (r);
    /* and so are dates that do not exist (once read as early March) and space-padded fields */
    static const char *const bad [] = { "yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00Zx",
                                        "2026-01-01 00:00:00+25:00", "'; DROP TABLE events; --",
                                        "2026-02-31T00:00:00Z", "1999- 1- 1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        r = harness_ctl (h, &rc, "events", "--since", bad [i], NULL);
        const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        if (rc != 2 || strcmp (itest_code (r), "bad_request") != 0 || !message || !strstr (message, "RFC 3339"))
            fail_msg ("--since \"%s\" was answered %d %s", bad [i], rc, itest_code (r));
        json_decref (r);
    }
    r = harness_ctl (h, &rc, "events", "--event", "not-a-uuid", NULL);
    assert_int_equal (rc, 2);
    json_decref (r);
    list_pages ("tx:box", want, 5);
    /* the runtime role may append events and not change them */
    assert_int_equal (sqlf ("SELECT (has_table_privilege ('%s', 'events', 'INSERT') AND has_table_privilege ('%1$s', 'events', 'SELECT')"
                            " AND NOT has_table_privilege ('%1$s', 'events', 'UPDATE')"
                            " AND NOT has_table_privilege ('%1$s', 'events', 'DELETE')"
                            " AND has_table_privilege ('%1$s', 'event_deliveries', 'UPDATE')"
                            " AND NOT has_table_privilege ('%1$s', 'event_deliveries', 'DELETE'))::int",
                            harness_runtime_role (h)), 1);
}

static size_t
discard (char *data, size_t size, size_t nmemb, void *arg)
{
    return size * nmemb;
}

/* connect, the browser's step at the fake provider, callback; ferrulectl's exit code. */
static int
connect_flow (const char *id, const char *provider, const char *s1, const char *s2)
{
    int rc;
    char *redirect = NULL, *location = NULL;
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", id, "--provider", provider, "--redirect-uri",
                             "http://127.0.0.1/callback", "--scope", s1, "--scope", s2, NULL);
    assert_int_equal (rc, 0);
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, json_string_value (json_object_get (c, "authorization_url")));
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard);
    assert_int_equal (curl_easy_perform (curl), CURLE_OK);
    if (curl_easy_getinfo (curl, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect)
        location = strdup (redirect);
    curl_easy_cleanup (curl);
    assert_non_null (location);
    json_t *r = harness_ctl (h, &rc, "callback", "--url", location, NULL);
    free (location);
    json_decref (c);
    json_decref (r);
    return rc;
}

/* The connect flow's own events: scopes_reduced and no_refresh_token beside connected. */
static void
test_connect_events (void **state)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "grant_scopes", "read"));
    assert_int_equal (connect_flow ("narrow:box", "fakebox", "read", "write"), 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:n}", "grant_scopes"));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'narrow:box'"
                                          " AND type = 'scopes_reduced' AND detail = 'not granted: write'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'narrow:box'"
                                          " AND type = 'connected'"), 1);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    assert_int_equal (connect_flow ("offline:google", "fakegoogle", "a", "b"), 4);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'offline:google'"
                                          " AND type = 'no_refresh_token' AND diagnosis = 'no_refresh_token'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'offline:google'"
                                          " AND type = 'scopes_reduced'"), 0);
    /* connected again, with everything: reconnected, nothing else */
    assert_int_equal (connect_flow ("offline:google", "fakegoogle", "a", "b"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'offline:google'"), 3);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'offline:google'"
                                          " AND type = 'reconnected'"), 1);
}

/* An upstream API's insufficient_scope that names no scope: its event said "missing: " and
 * nothing more; it says what was reported, as the chain row and doctor do. A named one keeps its
 * "missing: <scope>". */
static void
test_unnamed_scope_report_event (void **state)
{
    import ("unnamed:box", "fakebox");
    int rc;
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "unnamed:box", "--www-authenticate",
                             "Bearer error=\"insufficient_scope\"", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    r = harness_ctl (h, &rc, "report-scope", "--integration", "unnamed:box", "--scope", "files.write", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    /* the first (the unnamed one) says so, and does not start "missing: " */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM (SELECT detail FROM events WHERE integration_id ="
                                          " 'unnamed:box' AND type = 'insufficient_scope' ORDER BY seq LIMIT 1) e"
                                          " WHERE detail LIKE '%did not name%' AND detail NOT LIKE 'missing: %'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id = 'unnamed:box'"
                                          " AND type = 'insufficient_scope' AND detail = 'missing: files.write'"), 1);
}

/* A refresh that succeeds after transient failures says "recovered". */
static void
test_recovered (void **state)
{
    import ("rec:box", "fakebox");
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    itest_expire (h, "rec:box");
    int rc;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "rec:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 5);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'recovered'", "rec:box"), 0);
    /* past the backoff */
    int64_t end = clock_mono_ms () + 15000;
    do {
        usleep (300000);
        r = harness_ctl (h, &rc, "refresh", "--integration", "rec:box", NULL);
        json_decref (r);
    } while (rc != 0 && clock_mono_ms () < end);
    assert_int_equal (rc, 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'recovered'"
                            " AND diagnosis = 'healthy'", "rec:box"), 1);
    /* an invalid_grant that did not make the integration needs_reconnect (it was about a token
     * already replaced) recovers nothing */
    assert_int_equal (harness_sql (h, "INSERT INTO token_chain (integration_id, generation, worker, outcome)"
                                      " VALUES ('rec:box', 0, 'test', 'invalid_grant')"), 0);
    itest_expire (h, "rec:box");
    r = harness_ctl (h, &rc, "refresh", "--integration", "rec:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'recovered'", "rec:box"), 1);
}

/* A 200 whose refresh token is stored but whose access token was unusable is no recovery: it
 * made a "recovered" event after a failed attempt (its chain row reads "refreshed"), and the next
 * refresh that did work made none. */
static void
test_unusable_answer_is_no_recovery (void **state)
{
    import ("unus:box", "fakebox");
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    itest_expire (h, "unus:box");
    int rc;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "unus:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 5);
    itest_fault (h, "fakebox", "no_access_token", 1, -1, -1, -1);
    const char *unusable = "SELECT count(*) FROM token_chain WHERE integration_id = 'unus:box' AND outcome = 'refreshed'"
                           " AND detail LIKE '%no usable access token%'";
    int64_t end = clock_mono_ms () + 15000;
    do {                                     /* past the backoff: the unusable answer */
        usleep (300000);
        r = harness_ctl (h, &rc, "refresh", "--integration", "unus:box", NULL);
        json_decref (r);
    } while (harness_sql_int (h, unusable) < 1 && clock_mono_ms () < end);
    assert_int_equal (harness_sql_int (h, unusable), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'recovered'",
                            "unus:box"), 0);
    end = clock_mono_ms () + 15000;
    do {                                     /* past its backoff: a refresh that works */
        usleep (300000);
        r = harness_ctl (h, &rc, "refresh", "--integration", "unus:box", NULL);
        json_decref (r);
    } while (rc != 0 && clock_mono_ms () < end);
    assert_int_equal (rc, 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM events WHERE integration_id = '%s' AND type = 'recovered'",
                            "unus:box"), 1);
}

/* Every event reaches the receiver, signed, in order per integration, through refused attempts,
 * a receiver outage and a worker killed mid-delivery. */
static void
test_delivery_survives_kill_and_outage (void **state)
{
    char ids [NINTEG][32];
    receiver_set (3, 150);           /* refuse 3; attempts are in flight long enough to be killed */
    for (int i = 0; i < NINTEG; i++) {
        snprintf (ids [i], sizeof ids [i], "dlv%02d:box", i);
        import (ids [i], "fakebox");
    }
    /* a worker dies while deliveries are in flight; the receiver goes down for a while */
    usleep (400000);
    harness_signal_worker (h, "w1", SIGKILL);
    for (int i = 0; i < NINTEG; i++)
        import (ids [i], "fakebox");            /* reconnected */
    receiver_stop ();
    for (int i = 0; i < NINTEG; i++) {
        int rc;
        json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", ids [i], "--scope", "admin", NULL);
        assert_int_equal (rc, 0);
        json_decref (r);
    }
    usleep (1500000);
    assert_int_equal (receiver_start (app_port, SECRET), 0);
    harness_wait_worker_exit (h, "w1", 5000);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    receiver_set (0, 0);

    /* every event of these integrations delivered to "app" */
    const char *q = "SELECT count(*) FROM events e LEFT JOIN event_deliveries d ON d.event_seq = e.seq AND d.endpoint = 'app'"
                    " WHERE e.integration_id LIKE 'dlv%' AND d.state IS DISTINCT FROM 'delivered'";
    assert_int_equal (itest_wait_sql (h, q, 0, 60000), 0);
    long long total = harness_sql_int (h, "SELECT count(*) FROM events WHERE integration_id LIKE 'dlv%'");
    assert_int_equal (total, 3 * NINTEG);

    /* the receiver saw each of them, with valid signatures, and in order per integration once deduplicated */
    PGconn *db = harness_db (h);
    PGresult *res = PQexec (db, "SELECT id::text, integration_id, type FROM events WHERE integration_id LIKE 'dlv%' ORDER BY seq");
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    receiver_got_t *got;
    int bad, ngot = receiver_snapshot (&got, &bad);
    assert_int_equal (bad, 0);
    int duplicates = 0;
    for (int i = 0; i < NINTEG; i++) {
        /* the first arrivals of this integration's events, deduplicated by id */
        char seen [8][40];
        int nseen = 0;
        for (int k = 0; k < ngot; k++) {
            if (strcmp (got [k].integration, ids [i]) != 0 || got [k].status != 200)
                continue;
            int dup = 0;
            for (int s = 0; s < nseen; s++)
                dup |= strcmp (seen [s], got [k].id) == 0;
            if (dup) {
                duplicates++;
                continue;
            }
            assert_true (nseen < 8);
            snprintf (seen [nseen++], sizeof seen [0], "%s", got [k].id);
        }
        int n = 0;
        for (int row = 0; row < PQntuples (res); row++) {
            if (strcmp (PQgetvalue (res, row, 1), ids [i]) != 0)
                continue;
            assert_true (n < nseen);
            if (strcmp (seen [n], PQgetvalue (res, row, 0)) != 0)
                fail_msg ("%s: event %d arrived out of order (%s)", ids [i], n, PQgetvalue (res, row, 2));
            n++;
        }
        assert_int_equal (n, nseen);
        assert_int_equal (n, 3);
    }
    /* refused attempts were answered 500 and sent again */
    int refused = 0;
    for (int k = 0; k < ngot; k++)
        refused += got [k].status == 500;
    free (got);
    PQclear (res);
    assert_true (refused >= 3);
    print_message ("delivered %lld events; %d duplicate arrivals after the kill, %d refused attempts\n", total,
                   duplicates, refused);
    /* no delivery is left with a lease */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries WHERE lease_token IS NOT NULL"
                                          " AND state <> 'pending'"), 0);
}

/* A claim takes up to 16 deliveries under one lease and sends them one after another. None may
 * start once the lease could run out before its attempt ends: another worker's claim would take
 * it then, and both would send it at once. */
static void
test_no_delivery_outlives_its_lease (void **state)
{
    enum { M = 16 };
    for (int i = 0; i < M; i++) {
        char id [32];
        snprintf (id, sizeof id, "lse%02d:box", i);
        import (id, "fakebox");
    }
    const char *q = "SELECT count(*) FROM events e LEFT JOIN event_deliveries d ON d.event_seq = e.seq AND d.endpoint = 'app'"
                    " WHERE e.integration_id LIKE 'lse%' AND d.state IS DISTINCT FROM 'delivered'";
    assert_int_equal (itest_wait_sql (h, q, 0, 30000), 0);
    receiver_got_t *got;
    int bad, before = receiver_snapshot (&got, &bad);
    free (got);
    /* one event for each, all due at once; each attempt held 300 ms: sixteen in a row take 4.8 s,
     * where the lease is 1.5 s and an attempt may take 1 s */
    receiver_set (0, 300);
    assert_int_equal (harness_sql (h, "SELECT events_emit ('insufficient_scope', id, provider, 'insufficient_scope',"
                                      " generation, 'missing: lease-test') FROM integrations WHERE id LIKE 'lse%'"), 0);
    assert_int_equal (itest_wait_sql (h, q, 0, 60000), 0);
    receiver_set (0, 0);
    int n = receiver_snapshot (&got, &bad);
    assert_int_equal (bad, 0);
    int arrivals = 0, duplicates = 0;
    for (int k = before; k < n; k++) {
        if (strncmp (got [k].integration, "lse", 3) != 0 || strcmp (got [k].type, "insufficient_scope") != 0)
            continue;
        arrivals++;
        for (int m = before; m < k; m++)
            duplicates += strcmp (got [m].id, got [k].id) == 0;
    }
    free (got);
    print_message ("%d arrivals of %d events, %d of them a second time\n", arrivals, M, duplicates);
    assert_int_equal (duplicates, 0);
    assert_int_equal (arrivals, M);
}

/* One endpoint's fan-out fails at every pass (here a constraint refuses its new delivery rows;
 * in the field a statement timeout over a long catch-up window): the other endpoint's deliveries
 * still go. A pass gave up at the first endpoint whose fan-out failed, before its claim, so no
 * endpoint got a delivery, on any worker, for as long as that one kept failing. */
static void
test_one_failing_fanout_stops_no_other_endpoint (void **state)
{
    receiver_set (0, 0);
    import ("fan:box", "fakebox");
    const char *q = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                    " WHERE e.integration_id = 'fan:box' AND d.endpoint = 'app' AND d.state = 'delivered'";
    assert_int_equal (itest_wait_sql (h, q, 1, 30000), 1);
    char sql [512];
    snprintf (sql, sizeof sql, "ALTER TABLE event_deliveries ADD CONSTRAINT it_refuse CHECK (endpoint <> 'dead'"
              " OR event_seq <= %lld) NOT VALID", harness_sql_int (h, "SELECT max (seq) FROM events"));
    assert_int_equal (harness_sql (h, sql), 0);
    /* "disconnected": for both endpoints */
    int rc;
    json_t *r = harness_ctl (h, &rc, "disconnect", "--integration", "fan:box", NULL);
    json_decref (r);
    long long delivered = rc == 0 ? itest_wait_sql (h, q, 2, 15000) : -1;
    long long dead = harness_sql_int (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.integration_id = 'fan:box' AND d.endpoint = 'dead'");
    assert_int_equal (harness_sql (h, "ALTER TABLE event_deliveries DROP CONSTRAINT it_refuse"), 0);
    assert_int_equal (rc, 0);
    print_message ("with the fan-out to \"dead\" failing: %lld of 2 events delivered to \"app\", %lld rows for"
                   " \"dead\"\n", delivered, dead);
    assert_int_equal (dead, 0);                 /* the constraint did refuse them */
    assert_int_equal (delivered, 2);
    /* and once the constraint is gone, "dead" gets its row */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.integration_id = 'fan:box' AND d.endpoint = 'dead'", 1, 15000), 1);
    /* which is closed out as failed: "dead" never answers, and the next test waits for each of
     * the endpoint's pending deliveries to have had an attempt (a held endpoint is probed one
     * delivery at a time, the oldest queue's: this one waited behind dead:box's past the next
     * test's 30 s). Not deleted: its event is still in the fan-out's window, which would give
     * it a new row. */
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries SET state = 'failed', attempts = 3,"
                                      " lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
                                      " last_attempt_at = now () - interval '1 minute', last_error = 'no answer',"
                                      " failed_at = now () - interval '1 minute'"
                                      " WHERE endpoint = 'dead' AND integration_id = 'fan:box'"), 0);
}

/* Every delivery to "dead" still pending ends failed. Those of other integrations than id (other
 * tests' disconnections) are closed out at once, by hand, lease and all (an attempt under way
 * then records nothing): a held endpoint is probed one delivery at a time, the oldest queue's,
 * and id's waited behind that backlog past this function's 30 s on a loaded machine (CI). Those
 * of id (none: NULL) are made to have been first tried 56 s ago: after a few more attempts their
 * max age (60 s) is past and they fail. Only once each has had its first attempt: that attempt
 * sets first_at (the max age counts from it), and would undo the change for a delivery not yet
 * tried (seen under ASan: one stayed pending). Returns once none is pending. */
static void
fail_dead_deliveries (const char *id)
{
    char sql [1024];
    snprintf (sql, sizeof sql, "UPDATE event_deliveries SET state = 'failed', lease_owner = NULL, lease_token = NULL,"
              " lease_expires_at = NULL, last_error = 'no answer (closed out by the test)', failed_at = now ()"
              " WHERE endpoint = 'dead' AND state = 'pending' AND integration_id IS DISTINCT FROM '%s'", id ? id : "");
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries WHERE endpoint = 'dead'"
                                         " AND state = 'pending' AND attempts = 0", 0, 30000), 0);
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries SET first_at = first_at - interval '56 seconds'"
                                      " WHERE endpoint = 'dead' AND state = 'pending'"), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries WHERE endpoint = 'dead'"
                                         " AND state = 'pending'", 0, 30000), 0);
}

/* An endpoint that never answers: the delivery fails after the max age, the webhook's doctor
 * says why, and a replay sends it once the endpoint works. */
static void
test_failed_then_replayed (void **state)
{
    import ("dead:box", "fakebox");
    int rc;
    json_t *r = harness_ctl (h, &rc, "disconnect", "--integration", "dead:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 0);
    const char *dlv = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                      " WHERE d.endpoint = 'dead' AND e.integration_id = 'dead:box'";
    assert_int_equal (itest_wait_sql (h, dlv, 1, 10000), 1);
    fail_dead_deliveries ("dead:box");
    /* only "disconnected" goes to "dead" (its event types) */
    const char *q = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                    " WHERE d.endpoint = 'dead' AND e.integration_id = 'dead:box' AND d.state = 'failed'";
    assert_int_equal (itest_wait_sql (h, q, 1, 60000), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM event_deliveries WHERE endpoint = 'dead' AND event_seq IN"
                                          " (SELECT seq FROM events WHERE type <> 'disconnected')"), 0);
    assert_true (harness_sql_int (h, "SELECT min(attempts) FROM event_deliveries WHERE endpoint = 'dead'") >= 2);
    r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    assert_int_equal (rc, 0);
    json_t *list = json_object_get (r, "webhooks");
    assert_int_equal (json_array_size (list), 2);
    json_t *app = json_array_get (list, 0);
    assert_string_equal (json_string_value (json_object_get (app, "name")), "app");
    assert_true (json_integer_value (json_object_get (app, "delivered_last_day")) >= 3 * NINTEG);
    assert_null (json_string_value (json_object_get (app, "last_error")));  /* nothing of it is failing now */
    json_t *dead = json_array_get (list, 1);
    assert_string_equal (json_string_value (json_object_get (dead, "name")), "dead");
    assert_string_equal (json_string_value (json_object_get (dead, "diagnosis")), "failed_events");
    assert_true (json_integer_value (json_object_get (dead, "failed")) >= 1);
    assert_non_null (strstr (json_string_value (json_object_get (dead, "last_error")), "no answer"));
    json_decref (r);
    char *text = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &text, "webhook", "doctor", NULL), 0);
    assert_non_null (strstr (text, "events replay"));
    free (text);
    /* the workers' metrics count it: attempts that gave up, and the failed deliveries in the database */
    long long gave_up = 0, gauge = -1;
    int64_t end = clock_mono_ms () + 15000;
    do {
        usleep (200000);
        gave_up = 0;
        for (int w = 0; w < 2; w++) {
            long long v = metric (w ? "w2" : "w1", "ferrule_worker_webhook_attempts_total{endpoint=\"dead\",outcome=\"failed\"}");
            gave_up += v > 0 ? v : 0;
        }
        gauge = metric ("w2", "ferrule_worker_events_failed");
    } while ((gave_up < 1 || gauge < 1) && clock_mono_ms () < end);
    assert_true (gave_up >= 1);
    assert_true (gauge >= 1);
    /* events lists the failed delivery */
    r = harness_ctl (h, &rc, "events", "--integration", "dead:box", "--limit", "1", NULL);
    assert_int_equal (rc, 0);
    json_t *ev = json_array_get (json_object_get (r, "events"), 0);
    assert_string_equal (json_string_value (json_object_get (ev, "type")), "disconnected");
    int found = 0;
    size_t i;
    json_t *d;
    json_array_foreach (json_object_get (ev, "deliveries"), i, d)
        if (strcmp (json_string_value (json_object_get (d, "endpoint")), "dead") == 0) {
            found = 1;
            assert_string_equal (json_string_value (json_object_get (d, "state")), "failed");
        }
    assert_true (found);
    json_decref (r);

    /* the endpoint comes up on its port; a replay delivers */
    receiver_stop ();
    close (dead_fd);
    dead_fd = -1;
    assert_int_equal (receiver_start (atoi (dead_port), DEAD_SECRET), 0);
    r = harness_ctl (h, &rc, "events", "replay", "--integration", "dead:box", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (r, "replayed")), 1);
    json_decref (r);
    q = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
        " WHERE d.endpoint = 'dead' AND e.integration_id = 'dead:box' AND d.state = 'delivered'";
    assert_int_equal (itest_wait_sql (h, q, 1, 20000), 1);
    /* a replay with nothing to name is refused */
    r = harness_ctl (h, &rc, "events", "replay", NULL);
    assert_int_equal (rc, 2);
    json_decref (r);
    receiver_stop ();
    assert_int_equal (receiver_start (app_port, SECRET), 0);
}

static void
test_webhook_test (void **state)
{
    int rc;
    char url [128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d/hooks", app_port);
    receiver_got_t *got;
    int bad, before = receiver_snapshot (&got, &bad);
    free (got);
    /* by URL, as an operator copies it from the configuration */
    json_t *r = harness_ctl (h, &rc, "webhook", "test", url, NULL);
    assert_int_equal (rc, 0);
    const char *id = json_string_value (json_object_get (r, "event"));
    assert_non_null (id);
    assert_string_equal (json_string_value (json_object_get (json_array_get (json_object_get (
        json_object_get (r, "delivery_event"), "deliveries"), 0), "state")), "delivered");
    int seen = 0, ngot = receiver_snapshot (&got, &bad);
    for (int k = before; k < ngot; k++)
        seen += strcmp (got [k].id, id) == 0 && strcmp (got [k].type, "test") == 0;
    assert_int_equal (bad, 0);
    free (got);
    assert_int_equal (seen, 1);
    /* only the endpoint it was sent to got it */
    assert_int_equal (sqlf ("SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                            " WHERE e.id = '%s' AND d.endpoint = 'dead'", id), 0);
    json_decref (r);
    /* an URL that is not configured: not found, nothing sent */
    r = harness_ctl (h, &rc, "webhook", "test", "http://127.0.0.1:1/elsewhere", NULL);
    assert_int_equal (rc, 3);
    assert_string_equal (itest_code (r), "not_found");
    json_decref (r);
}

/* The idle forecast holds no integration's row lock for the length of its scan: the scan, made
 * slow on a row that comes after an idle one (a row-level security policy whose function sleeps
 * there, for the forecast's statement only), once locked the idle row it had passed until the
 * statement ended, and a refresh, import or connect of it waited past its lock_timeout. Now an
 * update of the idle row with a 100 ms lock_timeout goes through while the scan sleeps, and the
 * forecast still writes its event. */
static void
test_idle_forecast_holds_no_lock_while_it_scans (void **state)
{
    import ("lockidle:box", "fakebox");
    import ("lockslow:box", "fakebox");
    assert_int_equal (harness_sql (h, "CREATE TABLE it_slow_switch (on_ boolean);"
                                      " CREATE FUNCTION it_slow_scan (p_id text) RETURNS boolean LANGUAGE plpgsql"
                                      " SECURITY DEFINER AS $$ BEGIN"
                                      "  IF p_id = 'lockslow:box' AND current_query () LIKE '%expiring:idle:%'"
                                      "     AND EXISTS (SELECT 1 FROM it_slow_switch) THEN PERFORM pg_sleep (0.7); END IF;"
                                      "  RETURN true; END $$;"
                                      " CREATE POLICY it_slow_scan ON integrations USING (it_slow_scan (id)) WITH CHECK (true);"
                                      " ALTER TABLE integrations ENABLE ROW LEVEL SECURITY"), 0);
    /* the idle row's forecast is taken already (its dedupe key) until the rows are in place */
    const char *key = "'expiring:idle:' || id || ':' || generation";
    char sql [1024];
    snprintf (sql, sizeof sql, "INSERT INTO events (type, integration_id, provider, diagnosis, generation, dedupe_key)"
              " SELECT 'expiring', id, provider, 'refresh_token_idle', generation, %s FROM integrations"
              " WHERE id = 'lockidle:box'", key);
    assert_int_equal (harness_sql (h, sql), 0);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET last_refresh_at = now() - interval '50 days',"
                                      " created_at = now() - interval '50 days', connected_at = now() - interval '50 days'"
                                      " WHERE id = 'lockidle:box'"), 0);
    /* the sequential scan reaches the idle row first, then the slow one */
    const char *order = "SELECT ((SELECT ctid FROM integrations WHERE id = 'lockidle:box')"
                        " < (SELECT ctid FROM integrations WHERE id = 'lockslow:box'))::int";
    for (int i = 0; i < 20 && harness_sql_int (h, order) != 1; i++)
        assert_int_equal (harness_sql (h, "UPDATE integrations SET connected_at = connected_at"
                                          " WHERE id = 'lockslow:box'"), 0);
    assert_int_equal (harness_sql_int (h, order), 1);
    assert_int_equal (harness_sql (h, "INSERT INTO it_slow_switch VALUES (true)"), 0);
    snprintf (sql, sizeof sql, "UPDATE events SET dedupe_key = NULL WHERE dedupe_key = (SELECT %s FROM integrations"
              " WHERE id = 'lockidle:box')", key);
    assert_int_equal (harness_sql (h, sql), 0);
    /* a forecast's scan sleeps on the slow row: the idle row may be locked by no one */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                                         " AND query LIKE '%expiring:idle:%'", 1, 10000), 1);
    int updated = harness_sql (h, "BEGIN; SET LOCAL lock_timeout = '100ms';"
                                  " UPDATE integrations SET connected_at = connected_at WHERE id = 'lockidle:box'; COMMIT");
    if (updated != 0)
        assert_int_equal (harness_sql (h, "ROLLBACK"), 0);        /* the harness's session goes on */
    snprintf (sql, sizeof sql, "SELECT count(*) FROM events WHERE dedupe_key = (SELECT %s FROM integrations"
              " WHERE id = 'lockidle:box')", key);
    long long forecast = itest_wait_sql (h, sql, 1, 10000);
    assert_int_equal (harness_sql (h, "ALTER TABLE integrations DISABLE ROW LEVEL SECURITY;"
                                      " DROP POLICY it_slow_scan ON integrations; DROP FUNCTION it_slow_scan (text);"
                                      " DROP TABLE it_slow_switch"), 0);
    print_message ("an update of an idle row during the forecast's slow scan, lock_timeout 100 ms: %s\n",
                   updated == 0 ? "went through" : "failed");
    assert_int_equal (updated, 0);
    assert_int_equal (forecast, 1);
}

/* Forecasts from the catalog: a refresh token idle for 50 of its provider's 60 days, a grant 7
 * days into a 7-day testing-mode limit; once per condition, and none for a fresh integration.
 * Then that grant dies, and doctor names the 7-day limit. */
static void
test_expiring_forecast (void **state)
{
    import ("idle:box", "fakebox");
    import ("fresh:box", "fakebox");
    import ("testing:google", "fakegoogle");
    assert_int_equal (harness_sql (h, "UPDATE integrations SET last_refresh_at = now() - interval '50 days',"
                                      " created_at = now() - interval '50 days', connected_at = now() - interval '50 days'"
                                      " WHERE id = 'idle:box'"), 0);
    /* the chain is append-only even for its owner: the test lifts that for one backdated row */
    assert_int_equal (harness_sql (h, "BEGIN; ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = now() - interval '7 days 1 hour'"
                                      "  WHERE integration_id = 'testing:google';"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update; COMMIT"), 0);
    const char *q = "SELECT count(*) FROM events WHERE type = 'expiring'"
                    " AND integration_id IN ('idle:box', 'testing:google')";
    assert_int_equal (itest_wait_sql (h, q, 2, 15000), 2);
    usleep (1000000);                /* several more forecast passes */
    assert_int_equal (harness_sql_int (h, q), 2);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'fresh:box'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'idle:box'"
                                          " AND diagnosis = 'refresh_token_idle' AND detail LIKE '%60 days%'"
                                          " AND expires_at BETWEEN now() + interval '9 days' AND now() + interval '11 days'"), 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'testing:google'"
                                          " AND diagnosis = 'grant_age_limit' AND detail LIKE '%7 days%'"), 1);
    /* and they are delivered with the others */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.type = 'expiring' AND d.endpoint = 'app' AND d.state = 'delivered'",
                                      2, 20000), 2);
    /* a refresh (the keep-alive working) moves the generation on: a new idle period may warn again later,
     * but the one warned about is not repeated */
    itest_expire (h, "idle:box");
    int rc;
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "idle:box", NULL);
    json_decref (r);
    assert_int_equal (rc, 0);
    usleep (800000);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'expiring' AND integration_id = 'idle:box'"), 1);
    /* the testing-mode grant dies: needs_reconnect, and doctor names the 7-day limit */
    itest_fault (h, "fakegoogle", "invalid_grant", 1, -1, -1, -1);
    itest_expire (h, "testing:google");
    r = harness_ctl (h, &rc, "refresh", "--integration", "testing:google", NULL);
    json_decref (r);
    assert_int_equal (rc, 4);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE type = 'needs_reconnect'"
                                          " AND integration_id = 'testing:google'"), 1);
    r = harness_ctl (h, &rc, "doctor", "--integration", "testing:google", NULL);
    assert_int_equal (rc, 0);
    json_t *diag = json_object_get (r, "diagnosis");
    assert_string_equal (json_string_value (json_object_get (diag, "code")), "needs_reconnect");
    assert_non_null (strstr (json_string_value (json_object_get (diag, "cause")), "7-day limit"));
    assert_non_null (strstr (json_string_value (json_object_get (diag, "cause")), "Testing"));
    int publish = 0;
    size_t k;
    json_t *step;
    json_array_foreach (json_object_get (diag, "what_to_do"), k, step)
        publish |= strstr (json_string_value (step), "Publish the OAuth app") != NULL;
    assert_true (publish);
    json_decref (r);
    /* a grant that died after one day is not blamed on the limit */
    import ("early:google", "fakegoogle");
    assert_int_equal (harness_sql (h, "BEGIN; ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = now() - interval '1 day' WHERE integration_id = 'early:google';"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update; COMMIT"), 0);
    itest_fault (h, "fakegoogle", "invalid_grant", 1, -1, -1, -1);
    itest_expire (h, "early:google");
    r = harness_ctl (h, &rc, "refresh", "--integration", "early:google", NULL);
    json_decref (r);
    assert_int_equal (rc, 4);
    r = harness_ctl (h, &rc, "doctor", "--integration", "early:google", NULL);
    assert_null (strstr (json_string_value (json_object_get (json_object_get (r, "diagnosis"), "cause")), "day limit"));
    json_decref (r);
    /* the endpoints' secret is in no log line, and no event row holds it */
    assert_false (itest_workdir_contains (h, SECRET));
    assert_false (itest_workdir_contains (h, "whsec_events_test"));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM events WHERE detail LIKE '%whsec%'"), 0);
}

/* The events operations concern the whole deployment: without an integration, only a client
 * whose policy covers every integration may use them. */
static void
test_policy_for_deployment_wide_ops (void **state)
{
    int rc = 0;
    assert_int_equal (harness_add_client (h, "scoped"), 0);
    assert_int_equal (harness_write_policy (h, "harness * *\nscoped read tx:*\n"), 0);
    harness_reload_brokers (h);
    assert_int_equal (harness_use_client (h, "scoped"), 0);
    json_t *r = NULL;
    int64_t end = clock_mono_ms () + 10000;
    do {                             /* until the broker has read the new lists */
        json_decref (r);
        usleep (200000);
        r = harness_ctl (h, &rc, "events", "--integration", "tx:box", NULL);
    } while (rc != 0 && clock_mono_ms () < end);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (r, "events")), 5);
    json_decref (r);
    r = harness_ctl (h, &rc, "events", NULL);
    assert_int_equal (rc, 7);
    assert_string_equal (itest_code (r), "forbidden");
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "--integration", "dlv00:box", NULL);
    assert_int_equal (rc, 7);
    json_decref (r);
    r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    assert_int_equal (rc, 7);
    json_decref (r);
    r = harness_ctl (h, &rc, "events", "replay", "--integration", "tx:box", NULL);
    assert_int_equal (rc, 7);                /* read only */
    json_decref (r);
    assert_int_equal (harness_use_client (h, HARNESS_CLIENT), 0);
}

/* 30,000 deliveries to "app" delivered a day ago. Every worker counts its endpoints' pending and
 * failed deliveries every 5 s for the metrics; the count asked for every state but "delivered",
 * which no index can bound, and read every delivery an endpoint ever had (they are never
 * deleted). It now reads only the pending and failed ones. No other periodic statement may read
 * them either (the fan-out, see below). Counted in rows, not timed. */
static void
test_delivery_counts_do_not_read_delivered_rows (void **state)
{
    assert_int_equal (harness_sql (h, "WITH e AS (INSERT INTO events (type, diagnosis, endpoint, created_at)"
                                      " SELECT 'test', 'test', 'app', now () - interval '1 day'"
                                      " FROM generate_series (1, 30000) RETURNING seq)"
                                      " INSERT INTO event_deliveries (event_seq, endpoint, state, first_at, next_at,"
                                      " delivered_at) SELECT seq, 'app', 'delivered', now () - interval '1 day',"
                                      " now () - interval '1 day', now () - interval '1 day' FROM e"), 0);
    /* both analyzed: with the statistics from before the insert, the fan-out's NOT EXISTS became
     * a hash anti-join that read the whole table at every pass (4.9 million rows in 11 s, in a
     * run beside other tests, before autovacuum got to it); the fan-out no longer has one */
    assert_int_equal (harness_sql (h, "ANALYZE event_deliveries"), 0);
    assert_int_equal (harness_sql (h, "ANALYZE events"), 0);
    sleep (2);                      /* what was read before is reported by now */
    const char *names [] = { NULL, "event_deliveries_pkey", "event_deliveries_due", "event_deliveries_queue",
                             "event_deliveries_by_endpoint", "event_deliveries_delivered" };
    enum { N = sizeof names / sizeof names [0] };
    long long before [N], read = 0;
    for (int i = 0; i < N; i++)
        before [i] = itest_reads (h, "event_deliveries", names [i]);
    sleep (11);                     /* two counts of each worker's */
    for (int i = 0; i < N; i++) {
        long long d = itest_reads (h, "event_deliveries", names [i]) - before [i];
        printf ("events: %lld entries read from %s in 11 s\n", d, names [i] ? names [i] : "the table's sequential scans");
        read += d;
    }
    if (read >= 30000)
        fail_msg ("the delivery counts read the delivered rows (%lld entries in 11 s)", read);
}

/* Rows of event_deliveries read from the table so far: fetched through an index, or by its
 * sequential scans (PostgreSQL's statistics, reported within a second or so). */
static long long
deliveries_fetched (void)
{
    return harness_sql_int (h, "SELECT COALESCE (idx_tup_fetch, 0) + COALESCE (seq_tup_read, 0)"
                               " FROM pg_stat_user_tables WHERE relname = 'event_deliveries'");
}

/* 19,000 deliveries to "dead" failed over the last two weeks. The webhook's doctor names the
 * newest failed attempt's error; it sorted every failed row of the endpoint to find it, read
 * from the table (0.7 to 1.2 s cold on the review's cluster, on a connection with a 1 s
 * statement timeout). An index on the endpoint and the attempt's time (migration 014) finds it in
 * one entry: counted in that index's scans and entries around one doctor, not timed. The counts
 * beside it read the failed rows' index, and the table too where VACUUM could not mark a page
 * all-visible (57,127 rows in the ASan tree in CI, 225 in the plain one): that part stops at
 * 10,000 rows per count now (d684c0a), whatever the failed rows. */
static void
test_webhook_doctor_reads_no_failed_rows (void **state)
{
    fail_dead_deliveries (NULL);    /* other tests' disconnections: no attempt newer than the one below */
    assert_int_equal (harness_sql (h, "WITH e AS (INSERT INTO events (type, integration_id, provider, diagnosis, created_at)"
                                      " SELECT 'disconnected', 'gone' || n || ':box', 'fakebox', 'disconnected',"
                                      " now () - interval '15 days' FROM generate_series (1, 19000) n RETURNING seq)"
                                      " INSERT INTO event_deliveries (event_seq, endpoint, state, attempts, first_at, next_at,"
                                      " last_attempt_at, last_error, failed_at)"
                                      " SELECT seq, 'dead', 'failed', 9, now () - interval '15 days', now () - interval '14 days',"
                                      " now () - interval '14 days' + seq % 19000 * interval '1 minute', 'no answer from 127.0.0.1',"
                                      " now () - interval '14 days' + seq % 19000 * interval '1 minute' FROM e"), 0);
    /* newer than the failure of test_failed_then_replayed */
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries SET last_error = 'the newest failure', last_attempt_at = now ()"
                                      " WHERE endpoint = 'dead' AND event_seq = (SELECT max (seq) FROM events"
                                      " WHERE integration_id LIKE 'gone%')"), 0);
    assert_int_equal (harness_sql (h, "VACUUM ANALYZE event_deliveries"), 0);
    sleep (2);                      /* what was read before is reported by now */
    /* the newest failure, through its index (whether the counts beside it read the table too
     * depends on which pages VACUUM could mark all-visible, with other tests' deliveries
     * changing: printed, not asserted) */
    const char *scans = "SELECT COALESCE (sum (idx_scan), 0) FROM pg_stat_user_indexes"
                        " WHERE indexrelname = 'event_deliveries_last_error'";
    long long before = deliveries_fetched (), scans_before = harness_sql_int (h, scans),
              entries_before = itest_reads (h, "event_deliveries", "event_deliveries_last_error");
    int rc;
    json_t *r = harness_ctl (h, &rc, "webhook", "doctor", NULL);
    assert_int_equal (rc, 0);
    json_t *dead = json_array_get (json_object_get (r, "webhooks"), 1);
    assert_string_equal (json_string_value (json_object_get (dead, "name")), "dead");
    /* 19,000 and more failed: the count stops at 10,000, which means at least as many */
    assert_int_equal (json_integer_value (json_object_get (dead, "failed")), 10000);
    assert_string_equal (json_string_value (json_object_get (dead, "last_error")), "the newest failure");
    json_decref (r);
    /* a session reports what it read at most once a second, later on a loaded machine: wait for
     * the scan to be reported (a lower bound read too early would fail), then a second more */
    for (int64_t until = clock_mono_ms () + 15000; harness_sql_int (h, scans) <= scans_before
         && clock_mono_ms () < until; usleep (200000))
        ;
    sleep (1);
    long long read = deliveries_fetched () - before, used = harness_sql_int (h, scans) - scans_before,
              walked = itest_reads (h, "event_deliveries", "event_deliveries_last_error") - entries_before;
    printf ("events: the webhook's doctor read %lld rows of event_deliveries, 19,000 of them failed; %lld scans"
            " of event_deliveries_last_error read %lld entries\n", read, used, walked);
    if (used < 1 || walked >= 100)
        fail_msg ("the webhook's doctor did not find the newest failure through its index (%lld scans, %lld entries;"
                  " %lld rows read): it sorted the failed deliveries", used, walked, read);
}

/* An event waiting behind an earlier one of its integration (which keeps failing) had its max
 * age counted from when its delivery row was made, not from its first attempt as documented: the
 * earlier one failed for good after the max age, and the later one, attempted for the first time
 * then, failed for good at its first refused attempt. It is retried. */
static void
test_max_age_counts_from_the_first_attempt (void **state)
{
    receiver_set (1000000, 0);
    import ("hol:box", "fakebox");
    import ("hol:box", "fakebox");          /* connected, then reconnected: the second waits */
    const char *first = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                        " WHERE e.integration_id = 'hol:box' AND d.endpoint = 'app' AND e.type = 'connected'";
    const char *second = "FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                         " WHERE e.integration_id = 'hol:box' AND d.endpoint = 'app' AND e.type = 'reconnected'";
    char q [512];
    snprintf (q, sizeof q, "%s AND d.attempts > 0", first);
    assert_int_equal (itest_wait_sql (h, q, 1, 30000), 1);
    /* the second's row is made by a fan-out of its own, which may come after the first's attempt;
     * once made it waits, unattempted, behind the first */
    snprintf (q, sizeof q, "SELECT count(*) %s AND d.attempts = 0", second);
    assert_int_equal (itest_wait_sql (h, q, 1, 30000), 1);
    /* both made two days ago: the first is past its max age at its next attempt */
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries d SET first_at = now () - interval '2 days'"
                                      " FROM events e WHERE e.seq = d.event_seq AND e.integration_id = 'hol:box'"
                                      " AND d.endpoint = 'app'"), 0);
    snprintf (q, sizeof q, "%s AND d.state = 'failed'", first);
    assert_int_equal (itest_wait_sql (h, q, 1, 60000), 1);
    /* the second's first attempt is refused too: it waits for its next, it is not failed */
    snprintf (q, sizeof q, "SELECT count(*) %s AND d.attempts > 0", second);
    assert_int_equal (itest_wait_sql (h, q, 1, 60000), 1);
    snprintf (q, sizeof q, "SELECT count(*) %s AND d.state = 'failed'", second);
    long long failed = harness_sql_int (h, q);
    receiver_set (0, 0);
    if (failed)
        fail_msg ("an event that had waited behind another failed for good at its first attempt");
    snprintf (q, sizeof q, "SELECT count(*) %s AND d.state = 'delivered'", second);
    assert_int_equal (itest_wait_sql (h, q, 1, 60000), 1);
}

/* The lines of both workers' logs whose message contains needle. */
static int
worker_lines (const char *needle)
{
    unsigned long long more;
    return itest_log_lines (h, "w1", needle, &more) + itest_log_lines (h, "w2", needle, &more);
}

static long long
retries_counted (void)
{
    const char *series = "ferrule_worker_webhook_attempts_total{endpoint=\"app\",outcome=\"retry\"}";
    long long a = metric ("w1", series), b = metric ("w2", series);
    return (a > 0 ? a : 0) + (b > 0 ? b : 0);
}

/* An attempt whose outcome could not be recorded (its row was taken over by another worker's
 * lease meanwhile) is that worker's to count and report: this one counted it as a retry (or a
 * failure, logging "failed after N attempts") all the same. */
static void
test_attempt_not_recorded_is_not_counted (void **state)
{
    receiver_set (0, 0);
    import ("own:box", "fakebox");
    const char *rows = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                       " WHERE e.integration_id = 'own:box' AND d.endpoint = 'app' AND d.state = 'delivered'";
    assert_int_equal (itest_wait_sql (h, rows, 1, 30000), 1);
    const char *lost = "the lease had expired, another worker owns the delivery now";
    const char *reported = "(insufficient_scope) to webhook \"app\": attempt";
    long long retries = retries_counted ();
    int lost_before = worker_lines (lost), reported_before = worker_lines (reported);
    /* the next attempt is refused, 700 ms after it arrives; meanwhile its row is taken over */
    receiver_set (1, 700);
    assert_int_equal (harness_sql (h, "SELECT events_emit ('insufficient_scope', id, provider, 'insufficient_scope',"
                                      " generation, 'missing: own-test') FROM integrations WHERE id = 'own:box'"), 0);
    const char *take = "WITH u AS (UPDATE event_deliveries d SET lease_owner = 'it-other', lease_token = 'it-other',"
                       " lease_expires_at = now () + interval '1 hour' FROM events e WHERE e.seq = d.event_seq"
                       " AND e.integration_id = 'own:box' AND e.type = 'insufficient_scope' AND d.endpoint = 'app'"
                       " AND d.state = 'pending' AND d.lease_token IS NOT NULL RETURNING 1) SELECT count(*) FROM u";
    long long taken = 0;
    for (int64_t until = clock_mono_ms () + 20000; taken != 1 && clock_mono_ms () < until; usleep (5000))
        taken = harness_sql_int (h, take);
    /* the attempt ends, and its record finds the row another's */
    int lost_after = lost_before;
    for (int64_t until = clock_mono_ms () + 10000; lost_after == lost_before && clock_mono_ms () < until; usleep (50000))
        lost_after = worker_lines (lost);
    receiver_set (0, 0);
    long long retries_after = retries_counted ();
    int reported_after = worker_lines (reported);
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries SET lease_owner = NULL, lease_token = NULL,"
                                      " lease_expires_at = NULL WHERE lease_owner = 'it-other'"), 0);
    assert_int_equal (taken, 1);
    assert_int_equal (lost_after, lost_before + 1);
    print_message ("an attempt not recorded: retries counted %lld, then %lld; lines reporting it %d\n", retries,
                   retries_after, reported_after - reported_before);
    assert_int_equal (retries_after, retries);
    assert_int_equal (reported_after, reported_before);
    /* given back, it is delivered */
    const char *done = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                       " WHERE e.integration_id = 'own:box' AND e.type = 'insufficient_scope' AND d.endpoint = 'app'"
                       " AND d.state = 'delivered'";
    assert_int_equal (itest_wait_sql (h, done, 1, 30000), 1);
}

/* A failed delivery to an endpoint no longer configured (renamed: "app" became "app2", a new
 * endpoint, docs/operations.md). A replay of its integration queued it again, and no delivery
 * thread claims it (each claims its own endpoint's), so it stayed pending for good, counted by
 * no gauge and no doctor. It is left failed and counted apart; naming it is refused. */
static void
test_replay_skips_unconfigured_endpoints (void **state)
{
    receiver_set (0, 0);
    import ("renamed:box", "fakebox");
    const char *ok = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                     " WHERE e.integration_id = 'renamed:box' AND d.endpoint = 'app' AND d.state = 'delivered'";
    assert_int_equal (itest_wait_sql (h, ok, 1, 30000), 1);
    /* its event's delivery to the old name, failed before the rename */
    assert_int_equal (harness_sql (h, "INSERT INTO event_deliveries (event_seq, endpoint, integration_id, state, attempts,"
                                      " last_attempt_at, last_status, last_error, failed_at)"
                                      " SELECT seq, 'app_old', integration_id, 'failed', 5, now (), 500, 'HTTP 500', now ()"
                                      " FROM events WHERE integration_id = 'renamed:box'"), 0);
    const char *still = "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                        " WHERE e.integration_id = 'renamed:box' AND d.endpoint = 'app_old' AND d.state = 'failed'"
                        " AND d.attempts = 5";
    int rc;
    json_t *r = harness_ctl (h, &rc, "events", "replay", "--integration", "renamed:box", NULL);
    long long replayed = json_integer_value (json_object_get (r, "replayed")),
              skipped = json_integer_value (json_object_get (r, "not_configured")), left = harness_sql_int (h, still);
    json_decref (r);
    print_message ("replay with a failed delivery to an endpoint no longer configured: exit %d, replayed %lld,"
                   " not_configured %lld, row still failed %lld\n", rc, replayed, skipped, left);
    assert_int_equal (rc, 0);
    assert_int_equal (replayed, 0);
    assert_int_equal (skipped, 1);
    assert_int_equal (left, 1);
    /* ferrulectl says so */
    char *text = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &text, "events", "replay", "--integration", "renamed:box", NULL), 0);
    assert_non_null (strstr (text, "0 failed deliveries queued again"));
    assert_non_null (strstr (text, "1 failed delivery left"));
    free (text);
    /* named: refused, with the configured endpoints in the hint */
    r = harness_ctl (h, &rc, "events", "replay", "--integration", "renamed:box", "--endpoint", "app_old", NULL);
    const char *hint = json_string_value (json_object_get (json_object_get (r, "error"), "hint"));
    print_message ("replay naming it: exit %d, %s\n", rc, itest_code (r));
    assert_int_equal (rc, 3);
    assert_string_equal (itest_code (r), "not_found");
    assert_non_null (hint);
    assert_non_null (strstr (hint, "app, dead"));
    json_decref (r);
    assert_int_equal (harness_sql_int (h, still), 1);
    /* a configured one named is still replayed */
    r = harness_ctl (h, &rc, "events", "replay", "--integration", "renamed:box", "--endpoint", "app", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (r, "replayed")), 0);
    json_decref (r);
}

/* A claim's deliveries go one after another, each attempt up to the webhook timeout, and whether
 * a failed one is retried was decided on its age when the claim was read: a retry could be
 * planned past FERRULE_WEBHOOK_MAX_AGE_S (60 s here) by up to a lease. A trigger makes the
 * delivery's claim read it 59.4 s old; the receiver holds the attempt 900 ms and refuses it, so
 * it ends past 60 s: no retry may be planned, it fails at that first attempt. */
static void
test_no_retry_planned_past_max_age (void **state)
{
    receiver_set (0, 0);
    import ("late:box", "fakebox");
    const char *row = "FROM event_deliveries d JOIN events e ON e.seq = d.event_seq WHERE e.integration_id = 'late:box'"
                      " AND d.endpoint = 'app' AND e.type = 'insufficient_scope'";
    char q [512];
    snprintf (q, sizeof q, "SELECT count(*) FROM event_deliveries WHERE integration_id = 'late:box' AND endpoint = 'app'"
              " AND state = 'delivered'");
    assert_int_equal (itest_wait_sql (h, q, 1, 30000), 1);
    assert_int_equal (harness_sql (h, "CREATE FUNCTION it_late () RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                                      " NEW.first_at := now () - interval '59.4 seconds'; RETURN NEW; END $$;"
                                      " CREATE TRIGGER it_late BEFORE UPDATE ON event_deliveries FOR EACH ROW"
                                      " WHEN (NEW.integration_id = 'late:box' AND NEW.attempts = 1 AND OLD.attempts = 0)"
                                      " EXECUTE FUNCTION it_late ()"), 0);
    receiver_set (1000000, 900);
    assert_int_equal (harness_sql (h, "SELECT events_emit ('insufficient_scope', id, provider, 'insufficient_scope',"
                                      " generation, 'missing: late-test') FROM integrations WHERE id = 'late:box'"), 0);
    snprintf (q, sizeof q, "SELECT count(*) %s AND d.state = 'failed'", row);
    long long failed = itest_wait_sql (h, q, 1, 30000);
    receiver_set (0, 0);
    assert_int_equal (harness_sql (h, "DROP TRIGGER it_late ON event_deliveries; DROP FUNCTION it_late ()"), 0);
    snprintf (q, sizeof q, "SELECT attempts %s", row);
    long long attempts = harness_sql_int (h, q);
    print_message ("a delivery read 59.4 s old, its attempt refused after 900 ms: failed %lld, after %lld attempts\n",
                   failed, attempts);
    assert_int_equal (failed, 1);
    assert_int_equal (attempts, 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_outbox_iff_committed),
        cmocka_unit_test (test_connect_events),
        cmocka_unit_test (test_unnamed_scope_report_event),
        cmocka_unit_test (test_recovered),
        cmocka_unit_test (test_unusable_answer_is_no_recovery),
        cmocka_unit_test (test_delivery_survives_kill_and_outage),
        cmocka_unit_test (test_no_delivery_outlives_its_lease),
        cmocka_unit_test (test_one_failing_fanout_stops_no_other_endpoint),
        cmocka_unit_test (test_failed_then_replayed),
        cmocka_unit_test (test_webhook_test),
        cmocka_unit_test (test_expiring_forecast),
        cmocka_unit_test (test_idle_forecast_holds_no_lock_while_it_scans),
        cmocka_unit_test (test_policy_for_deployment_wide_ops),
        cmocka_unit_test (test_delivery_counts_do_not_read_delivered_rows),
        cmocka_unit_test (test_webhook_doctor_reads_no_failed_rows),
        cmocka_unit_test (test_max_age_counts_from_the_first_attempt),
        cmocka_unit_test (test_attempt_not_recorded_is_not_counted),
        cmocka_unit_test (test_replay_skips_unconfigured_endpoints),
        cmocka_unit_test (test_no_retry_planned_past_max_age),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
