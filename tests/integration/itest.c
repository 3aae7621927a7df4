/* itest.c - shared helpers for the integration tests */
#define _GNU_SOURCE
#include "itest.h"
#include <curl/curl.h>
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>
#include <zmq.h>
#include "client.h"
#include "clock.h"
#include "codec.h"
#include "curve.h"
#include "mem.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int
itest_teardown (harness_t **h)
{
    int unclean = harness_stop_all (*h);
    harness_destroy (h);
    return unclean == 0 ? 0 : -1;
}

void
itest_fake_config (harness_t *h, const char *provider, json_t *settings)
{
    char path [160];
    snprintf (path, sizeof path, "/admin/providers/%s", provider);
    json_t *r = harness_fake (h, "PUT", path, settings);
    json_decref (settings);
    if (!r)
        fail_msg ("could not configure fake provider \"%s\"", provider);
    json_decref (r);
}

void
itest_fake_release (harness_t *h)
{
    json_t *r = harness_fake (h, "POST", "/admin/release", NULL);
    if (!r)
        fail_msg ("could not release the fake provider's waiting calls");
    json_decref (r);
}

static size_t
discard_body (char *data, size_t size, size_t nmemb, void *userdata)
{
    (void) data;
    (void) userdata;
    return size * nmemb;
}

void
itest_fake_revoke (harness_t *h, const char *provider, const char *access_token)
{
    char url [256], body [1024];
    long status = 0;
    snprintf (url, sizeof url, "http://127.0.0.1:%d/%s/revoke", harness_port (h), provider);
    assert_true (strlen (access_token) < 512);
    snprintf (body, sizeof body, "token=%s&token_type_hint=access_token", access_token);
    CURL *curl = curl_easy_init ();
    assert_non_null (curl);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt (curl, CURLOPT_USERPWD, "ferrule-test-client:ferrule-test-secret");
    curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, discard_body);
    CURLcode rc = curl_easy_perform (curl);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup (curl);
    mem_wipe (body, sizeof body);
    if (rc != CURLE_OK || status != 200)
        fail_msg ("the fake provider's revocation at \"%s\" answered %ld (%s)", provider, status, curl_easy_strerror (rc));
}

char *
itest_grant (harness_t *h, const char *provider, const char *scopes_json)
{
    json_error_t jerr;
    json_t *scopes = json_loads (scopes_json ? scopes_json : "[]", 0, &jerr);
    json_t *body = json_pack ("{s:s, s:o}", "provider", provider, "scopes", scopes);
    json_t *g = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    const char *rt = g ? json_string_value (json_object_get (g, "refresh_token")) : NULL;
    char *out = rt ? strdup (rt) : NULL;
    json_decref (g);
    return out;
}

int
itest_import (harness_t *h, const char *id, const char *provider, const char *refresh_token)
{
    int rc = -1;
    json_t *r = harness_ctl (h, &rc, "import", "--integration", id, "--provider", provider,
                             "--refresh-token", refresh_token, NULL);
    /* a setup that fails on an import said nothing of why (it_crash, on a loaded machine); the
       service's messages hold no token */
    if (rc != 0) {
        const json_t *e = json_object_get (r, "error");
        fprintf (stderr, "itest: import of \"%s\" failed with exit status %d: %s: %s\n", id, rc, itest_code (r),
                 json_string_value (json_object_get (e, "message")) ? json_string_value (json_object_get (e, "message"))
                                                                    : "(no message)");
    }
    json_decref (r);
    return rc;
}

void
itest_expire (harness_t *h, const char *id)
{
    char sql [512];
    snprintf (sql, sizeof sql,
              "WITH u AS (UPDATE integrations SET access_expires_at = now() - interval '1 second'"
              " WHERE id = '%s' RETURNING id) SELECT pg_notify('ferrule_integrations', 'test ' || id) FROM u", id);
    harness_sql (h, sql);
    /* the notification reaches the workers asynchronously: a request sent at once could still be
     * answered from a cache that has not dropped the entry yet (it_token_flow failed so, once, on
     * a loaded machine). Give the workers' loops a moment to read it. */
    usleep (200000);
}

long long
itest_wait_sql (harness_t *h, const char *sql, long long want, int timeout_ms)
{
    int64_t until = clock_mono_ms () + timeout_ms;
    long long got;
    while ((got = harness_sql_int (h, sql)) != want && clock_mono_ms () < until)
        usleep (100000);
    return got;
}

long long
itest_stat (harness_t *h, const char *provider, const char *counter)
{
    json_t *s = harness_fake (h, "GET", "/admin/stats", NULL);
    json_t *p = json_object_get (json_object_get (s, "providers"), provider);
    long long v = p ? (long long) json_integer_value (json_object_get (p, counter)) : 0;
    json_decref (s);
    return v;
}

long long
itest_wait_stat (harness_t *h, const char *provider, const char *counter, long long want, int timeout_ms)
{
    int64_t until = clock_mono_ms () + timeout_ms;
    long long got;
    while ((got = itest_stat (h, provider, counter)) < want && clock_mono_ms () < until)
        usleep (10000);
    return got;
}

void
itest_fault (harness_t *h, const char *provider, const char *kind, int count, int status, int retry_after,
             int delay_ms)
{
    json_t *f = json_pack ("{s:s, s:s, s:i}", "provider", provider, "kind", kind, "count", count);
    if (status >= 0)
        json_object_set_new (f, "status", json_integer (status));
    if (retry_after >= 0)
        json_object_set_new (f, "retry_after", json_integer (retry_after));
    if (delay_ms >= 0)
        json_object_set_new (f, "delay_ms", json_integer (delay_ms));
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
}

const char *
itest_code (const json_t *reply)
{
    const char *c = json_string_value (json_object_get (json_object_get (reply, "error"), "code"));
    return c ? c : "";
}

void
itest_assert_same_token (const char *got, const char *want, const char *what)
{
    if (!got || !want || strcmp (got, want) != 0)
        fail_msg ("%s: not the token expected (%s, %zu bytes; expected %s, %zu bytes)", what,
                  got ? "a token" : "none", got ? strlen (got) : 0, want ? "a token" : "none",
                  want ? strlen (want) : 0);
}

void
itest_assert_other_token (const char *got, const char *than, const char *what)
{
    if (!got || !than || strcmp (got, than) == 0)
        fail_msg ("%s: %s", what, !got || !than ? "a token is missing" : "the same token as before, not a new one");
}

void
itest_assert_timeout_says (const json_t *reply, const char *needle, const char *what)
{
    const char *message = json_string_value (json_object_get (json_object_get (reply, "error"), "message"));
    if (strcmp (itest_code (reply), "timeout") != 0 || !message || !strstr (message, needle))
        fail_msg ("%s was answered %s \"%s\"", what, itest_code (reply), message ? message : "");
}

static int
file_contains (const char *path, const char *needle)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 20, len = 0, n;
    char *buf = malloc (cap + 1);
    int found = 0;
    while ((n = fread (buf + len, 1, cap - len, f)) > 0) {
        len += n;
        buf [len] = '\0';
        if (memmem (buf, len, needle, strlen (needle))) {
            found = 1;
            break;
        }
        if (len == cap) {       /* keep the tail so a match across chunks is seen */
            size_t keep = strlen (needle);
            memmove (buf, buf + len - keep, keep);
            len = keep;
        }
    }
    free (buf);
    fclose (f);
    return found;
}

void
itest_write_file (const char *path, const char *text)
{
    FILE *f = fopen (path, "w");
    if (!f || fputs (text, f) < 0 || fclose (f) != 0)
        fail_msg ("could not write \"%s\"", path);
}

long long
itest_reads (harness_t *h, const char *table, const char *index)
{
    char sql [512];
    if (!index)
        snprintf (sql, sizeof sql, "SELECT COALESCE (sum (seq_tup_read), 0) FROM pg_stat_user_tables"
                                   " WHERE relname = '%s'", table);
    else
        snprintf (sql, sizeof sql, "SELECT COALESCE (sum (idx_tup_read), 0) FROM pg_stat_user_indexes"
                                   " WHERE relname = '%s' AND indexrelname = '%s'", table, index);
    return harness_sql_int (h, sql);
}

/* The count in the first "N more" of text, or 0. */
static unsigned long long
held_count (const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || (p > text && p [-1] >= '0' && p [-1] <= '9'))
            continue;
        char *end;
        unsigned long long n = strtoull (p, &end, 10);
        if (strncmp (end, " more", 5) == 0)
            return n;
    }
    return 0;
}

int
itest_log_lines (harness_t *h, const char *log, const char *needle, unsigned long long *more)
{
    char path [4096];
    static char line [65536];
    snprintf (path, sizeof path, "%s/%s.log", harness_workdir (h), log);
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    int n = 0;
    *more = 0;
    while (fgets (line, sizeof line, f)) {
        json_t *o = json_loads (line, 0, NULL);
        const char *msg = json_string_value (json_object_get (o, "msg"));
        if (msg && strstr (msg, needle)) {
            n++;
            *more += held_count (msg);
        }
        json_decref (o);
    }
    fclose (f);
    return n;
}

char *
itest_migrate_stderr (harness_t *h, const char *arg0)
{
    char path [1024];
    snprintf (path, sizeof path, "%s/migrate-%s.log", harness_workdir (h), arg0);
    char *text = calloc (1, 65536);
    assert_non_null (text);
    FILE *f = fopen (path, "r");
    if (f) {
        size_t n = fread (text, 1, 65535, f);
        text [n] = '\0';
        fclose (f);
    }
    return text;
}

int
itest_workdir_contains (harness_t *h, const char *needle)
{
    DIR *d = opendir (harness_workdir (h));
    if (!d)
        return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir (d))) {
        size_t n = strlen (de->d_name);
        if (de->d_name [0] == '.' || n < 4 || strcmp (de->d_name + n - 4, ".log") != 0)
            continue;          /* logs only: providers.json holds the test client secret on purpose */
        char path [4096];
        snprintf (path, sizeof path, "%s/%s", harness_workdir (h), de->d_name);
        found = file_contains (path, needle);
    }
    closedir (d);
    return found;
}

void
itest_wait_log (harness_t *h, const char *needle, int timeout_ms)
{
    int64_t until = clock_mono_ms () + timeout_ms;
    while (!itest_workdir_contains (h, needle)) {
        if (clock_mono_ms () >= until)
            fail_msg ("no log line says \"%s\" after %d ms", needle, timeout_ms);
        usleep (50000);
    }
}

int
itest_log_not_json (const char *path, char *first, size_t len)
{
    char line [8192];
    FILE *f = fopen (path, "r");
    int bad = 0;
    *first = '\0';
    while (f && fgets (line, sizeof line, f)) {
        json_t *o = json_loads (line, 0, NULL);
        if (!json_is_object (o) && bad++ == 0)
            snprintf (first, len, "%.300s", line);
        json_decref (o);
    }
    if (f)
        fclose (f);
    return bad;
}

json_t *
itest_storm (const char *const *endpoints, size_t nendpoints, const char *const *ids, size_t nids,
             size_t n, int timeout_ms)
{
    return itest_storm_paced (endpoints, nendpoints, ids, nids, n, timeout_ms, 0, NULL, NULL);
}

json_t *
itest_storm_paced (const char *const *endpoints, size_t nendpoints, const char *const *ids, size_t nids,
                   size_t n, int timeout_ms, int pace_ms, void (*before_send) (void *arg, size_t i), void *arg)
{
    void *ctx = zmq_ctx_new ();
    void **socks = calloc (nendpoints, sizeof *socks);
    json_t *replies = json_array ();
    int zero = 0, hwm = 100000;
    for (size_t i = 0; i < n; i++)
        json_array_append_new (replies, json_null ());
    for (size_t k = 0; k < nendpoints; k++) {
        socks [k] = zmq_socket (ctx, ZMQ_DEALER);
        zmq_setsockopt (socks [k], ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt (socks [k], ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt (socks [k], ZMQ_RCVHWM, &hwm, sizeof hwm);
        itest_secure (socks [k]);
        zmq_connect (socks [k], endpoints [k]);
    }
    usleep (200000);        /* let the connections come up before the burst */
    codec_builder_t *b = codec_builder_new ();
    int64_t first = clock_mono_ms ();
    for (size_t i = 0; i < n; i++) {
        while (pace_ms > 0 && clock_mono_ms () < first + (int64_t) i * pace_ms)
            usleep (500);
        if (before_send)
            before_send (arg, i);
        char rid [32];
        snprintf (rid, sizeof rid, "%zu", i);
        codec_builder_reset (b);
        codec_map (b, 4);
        codec_kv_str (b, "op", "token");
        codec_kv_str (b, "rid", rid);
        codec_kv_str (b, "integration", ids [i % nids]);
        codec_kv_int (b, "deadline_ms", timeout_ms);
        size_t len;
        const char *data = codec_builder_data (b, &len);
        void *s = socks [i % nendpoints];
        zmq_send (s, "", 0, ZMQ_SNDMORE);
        zmq_send (s, "FRL1", 4, ZMQ_SNDMORE);
        zmq_send (s, data, len, 0);
    }
    codec_builder_destroy (&b);
    size_t got = 0;
    int64_t until = clock_mono_ms () + timeout_ms + 2000;
    zmq_pollitem_t *items = calloc (nendpoints, sizeof *items);
    while (got < n && clock_mono_ms () < until) {
        for (size_t k = 0; k < nendpoints; k++)
            items [k] = (zmq_pollitem_t) { socks [k], 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (items, (int) nendpoints, 100) <= 0)
            continue;
        for (size_t k = 0; k < nendpoints; k++) {
            while (items [k].revents & ZMQ_POLLIN) {
                zmq_msg_t part [3];
                int count = 0, more = 1;
                while (more) {
                    zmq_msg_t m;
                    zmq_msg_init (&m);
                    if (zmq_msg_recv (&m, socks [k], ZMQ_DONTWAIT) < 0) {
                        zmq_msg_close (&m);
                        break;
                    }
                    more = zmq_msg_more (&m);
                    if (count < 3)
                        part [count++] = m;
                    else
                        zmq_msg_close (&m);
                }
                if (count == 0)
                    break;
                if (count == 3) {
                    codec_msg_t *msg = NULL;
                    char err [128];
                    if (codec_decode (zmq_msg_data (&part [2]), zmq_msg_size (&part [2]), &msg, err, sizeof err) == FR_OK) {
                        json_t *r = codec_to_json (codec_msg_root (msg));
                        const char *rid = json_string_value (json_object_get (r, "rid"));
                        size_t idx = rid ? strtoul (rid, NULL, 10) : n;
                        if (idx < n && json_is_null (json_array_get (replies, idx))) {
                            json_array_set_new (replies, idx, r);
                            got++;
                        }
                        else
                            json_decref (r);
                    }
                    codec_msg_destroy (&msg);
                }
                for (int c = 0; c < count; c++)
                    zmq_msg_close (&part [c]);
                int ev = 0;
                size_t evlen = sizeof ev;
                zmq_getsockopt (socks [k], ZMQ_EVENTS, &ev, &evlen);
                if (!(ev & ZMQ_POLLIN))
                    break;
            }
        }
    }
    free (items);
    for (size_t k = 0; k < nendpoints; k++)
        zmq_close (socks [k]);
    free (socks);
    zmq_ctx_term (ctx);
    return replies;
}

void
itest_secure (void *socket)
{
    char err [512];
    curve_identity_t id;
    if (curve_identity_from_env (&id, 1, err, sizeof err) != FR_OK)
        fail_msg ("%s", err);
    assert_int_equal (curve_apply_client (socket, &id), 0);
    curve_identity_clear (&id);
}

void *
itest_unread_socket (void *ctx, const char *endpoint)
{
    void *s = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0, one = 1, small = 4096;
    assert_non_null (s);
    zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (s, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt (s, ZMQ_RCVBUF, &small, sizeof small);
    itest_secure (s);
    assert_int_equal (zmq_connect (s, endpoint), 0);
    return s;
}

int
itest_http_port (harness_t *h, const char *log_name)
{
    char path [4096], line [4096];
    snprintf (path, sizeof path, "%s/%s.log", harness_workdir (h), log_name);
    int64_t until = clock_mono_ms () + 30000;   /* a hang guard: a worker under ASan starts slowly */
    for (;;) {
        FILE *f = fopen (path, "r");
        int port = -1;
        while (f && fgets (line, sizeof line, f)) {
            const char *p = strstr (line, "/metrics on port ");
            if (p)
                port = atoi (p + strlen ("/metrics on port "));
        }
        if (f)
            fclose (f);
        if (port > 0)
            return port;
        if (clock_mono_ms () >= until)
            return -1;
        usleep (100000);
    }
}

static size_t
http_collect (char *data, size_t size, size_t n, void *arg)
{
    mem_buf_t *body = arg;
    return !body || mem_buf_append (body, data, size * n) == 0 ? size * n : 0;
}

long
itest_http_get (const char *url, mem_buf_t *body)
{
    long status = 0;
    if (body)
        mem_buf_reset (body);
    CURL *c = curl_easy_init ();
    curl_easy_setopt (c, CURLOPT_URL, url);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 5000L);
    if (curl_easy_perform (c) == CURLE_OK)
        curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup (c);
    if (body)
        assert_true (mem_buf_append (body, "", 1) == 0);
    return status;
}

static size_t
http_discard (char *data, size_t size, size_t nmemb, void *userdata)
{
    (void) data;
    (void) userdata;
    return size * nmemb;
}

int
itest_exchange_arrived (harness_t *h, const char *provider)
{
    char path [256];
    snprintf (path, sizeof path, "/admin/requests?provider=%s&limit=1", provider);
    json_t *reqs = harness_fake (h, "GET", path, NULL);
    const char *grant = json_string_value (json_object_get (json_array_get (json_object_get (reqs, "requests"), 0),
                                                            "grant_type"));
    int arrived = grant && strcmp (grant, "authorization_code") == 0;
    json_decref (reqs);
    return arrived;
}

char *
itest_authorize (const char *url)
{
    char *redirect = NULL, *location = NULL;
    long status = 0;
    CURL *curl = curl_easy_init ();
    assert_non_null (curl);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, http_discard);
    assert_int_equal (curl_easy_perform (curl), CURLE_OK);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo (curl, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect)
        location = strdup (redirect);
    curl_easy_cleanup (curl);
    assert_int_equal (status, 302);
    assert_non_null (location);
    return location;
}

long
itest_http_status (int port, const char *path)
{
    char url [128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    return itest_http_get (url, NULL);
}

long
itest_wait_http_status (int port, const char *path, long want)
{
    int64_t until = clock_mono_ms () + 30000;   /* a hang guard, as in itest_http_port */
    long st = 0;
    while ((st = itest_http_status (port, path)) != want && clock_mono_ms () < until)
        usleep (100000);
    return st;
}

static size_t
metric_collect (char *data, size_t size, size_t n, void *arg)
{
    char *buf = arg;
    size_t have = strlen (buf), add = size * n;
    if (have + add < 262143) {
        memcpy (buf + have, data, add);
        buf [have + add] = '\0';
    }
    return size * n;
}

double
itest_metric (harness_t *h, const char *log_name, const char *series)
{
    int port = itest_http_port (h, log_name);
    if (port < 0)
        return -1;
    char url [128], *body = calloc (1, 262144);
    double value = -1;
    snprintf (url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    CURL *c = curl_easy_init ();
    curl_easy_setopt (c, CURLOPT_URL, url);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, metric_collect);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 2000L);
    if (curl_easy_perform (c) == CURLE_OK) {
        char needle [256];
        snprintf (needle, sizeof needle, "\n%s ", series);
        const char *p = strstr (body, needle);
        if (p)
            value = strtod (p + strlen (needle), NULL);
    }
    curl_easy_cleanup (c);
    free (body);
    return value;
}

char *
itest_token_scopes (harness_t *h, const char *provider, const char *access_token)
{
    char url [256], *body = calloc (1, 262144), *auth = NULL, *scopes = NULL;
    snprintf (url, sizeof url, "http://127.0.0.1:%d/%s/api/me", harness_port (h), provider);
    if (!body || asprintf (&auth, "Authorization: Bearer %s", access_token) < 0) {
        free (body);
        return NULL;
    }
    struct curl_slist *headers = curl_slist_append (NULL, auth);
    CURL *c = curl_easy_init ();
    curl_easy_setopt (c, CURLOPT_URL, url);
    curl_easy_setopt (c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, metric_collect);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 5000L);
    long status = 0;
    if (curl_easy_perform (c) == CURLE_OK && curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK
        && status == 200) {
        json_t *me = json_loads (body, 0, NULL);
        json_t *list = json_object_get (me, "scopes");
        size_t len = 1;
        for (size_t i = 0; i < json_array_size (list); i++)
            len += strlen (json_string_value (json_array_get (list, i)) ?: "") + 1;
        if (json_is_array (list) && (scopes = calloc (1, len)))
            for (size_t i = 0; i < json_array_size (list); i++) {
                if (i)
                    strcat (scopes, " ");
                strcat (scopes, json_string_value (json_array_get (list, i)) ?: "");
            }
        json_decref (me);
    }
    curl_easy_cleanup (c);
    curl_slist_free_all (headers);
    free (auth);                           /* carries the token: never printed */
    free (body);
    return scopes;
}

int
itest_pg (const char *action, const char *dir, char *url, size_t urlsize)
{
    char cmd [16384];
    snprintf (cmd, sizeof cmd, "'%s/scripts/pg' %s %s'%s' 2>>'%s.log'", ITEST_SOURCE_DIR, action,
              strcmp (action, "start") == 0 ? "--test " : "", dir, dir);
    FILE *p = popen (cmd, "r");
    if (!p)
        return -1;
    char line [1024] = "";
    if (!fgets (line, sizeof line, p))
        line [0] = '\0';
    int rc = pclose (p);
    line [strcspn (line, "\n")] = '\0';
    if (url)
        snprintf (url, urlsize, "%s", line);
    return rc == 0 ? 0 : -1;
}

void
itest_raw_send (void *c, const char *integration, const char *rid, int deadline_ms)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, rid ? 4 : 3);
    codec_kv_str (b, "op", "token");
    if (rid)
        codec_kv_str (b, "rid", rid);
    codec_kv_int (b, "deadline_ms", deadline_ms);
    codec_kv_str (b, "integration", integration);
    itest_raw_send_built (c, b);
    codec_builder_destroy (&b);
}

void
itest_raw_send_built (void *c, codec_builder_t *b)
{
    size_t len;
    const char *body = codec_builder_data (b, &len);
    zmq_send (c, "", 0, ZMQ_SNDMORE);
    zmq_send (c, "FRL1", 4, ZMQ_SNDMORE);
    zmq_send (c, body, len, 0);
}

void
itest_raw_ping (void *c, const char *rid)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 2);
    codec_kv_str (b, "op", "ping");
    codec_kv_str (b, "rid", rid);
    itest_raw_send_built (c, b);
    codec_builder_destroy (&b);
}

void *
itest_raw_token (harness_t *h, void *ctx, const char *integration, const char *rid, int deadline_ms)
{
    void *c = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (c, ZMQ_LINGER, &zero, sizeof zero);
    itest_secure (c);
    assert_int_equal (zmq_connect (c, harness_broker_frontend (h, 0)), 0);
    itest_raw_send (c, integration, rid, deadline_ms);
    return c;
}

json_t *
itest_raw_reply (void *c, int ms)
{
    zmq_pollitem_t item = { c, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, ms) != 1)
        return NULL;
    zmq_msg_t m;
    json_t *j = NULL;
    for (int i = 0, more = 1; more; i++) {
        zmq_msg_init (&m);
        zmq_msg_recv (&m, c, 0);
        more = zmq_msg_more (&m);
        if (i == 2) {
            codec_msg_t *msg = NULL;
            char err [128];
            if (codec_decode (zmq_msg_data (&m), zmq_msg_size (&m), &msg, err, sizeof err) == FR_OK)
                j = codec_to_json (codec_msg_root (msg));
            codec_msg_destroy (&msg);
        }
        zmq_msg_close (&m);
    }
    return j;
}

/* A DEALER of ctx under routing id id with the CURVE key of worker key_of, not connected yet. */
static void *
fake_worker_socket (harness_t *h, void *ctx, const char *id, const char *key_of)
{
    char err [512], path [4096];
    curve_identity_t cid;
    memset (&cid, 0, sizeof cid);
    snprintf (path, sizeof path, "%s/worker-%s.key", harness_keys_dir (h), key_of);
    assert_int_equal (curve_read_key_file (path, cid.secret, err, sizeof err), FR_OK);
    assert_int_equal (curve_read_key_file (harness_broker_public_key_file (h), cid.server, err, sizeof err), FR_OK);
    assert_int_equal (zmq_curve_public (cid.public, cid.secret), 0);
    void *s = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (s, ZMQ_ROUTING_ID, id, strlen (id));
    assert_int_equal (curve_apply_client (s, &cid), 0);
    curve_identity_clear (&cid);
    return s;
}

void *
itest_fake_worker (harness_t *h, void *ctx, const char *id, const char *key_of)
{
    void *s = fake_worker_socket (h, ctx, id, key_of);
    assert_int_equal (zmq_connect (s, harness_broker_backend (h, 0)), 0);
    return s;
}

void *
itest_fake_worker_handshaken (harness_t *h, void *ctx, const char *id, const char *key_of, int ms)
{
    static int n;
    char endpoint [64];
    int zero = 0;
    void *s = fake_worker_socket (h, ctx, id, key_of);
    snprintf (endpoint, sizeof endpoint, "inproc://itest-handshake-%d", n++);
    assert_int_equal (zmq_socket_monitor (s, endpoint, ZMQ_EVENT_HANDSHAKE_SUCCEEDED), 0);
    void *mon = zmq_socket (ctx, ZMQ_PAIR);
    zmq_setsockopt (mon, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal (zmq_connect (mon, endpoint), 0);
    assert_int_equal (zmq_connect (s, harness_broker_backend (h, 0)), 0);
    zmq_pollitem_t item = { mon, 0, ZMQ_POLLIN, 0 };
    int ok = zmq_poll (&item, 1, ms) == 1;
    zmq_socket_monitor (s, NULL, 0);
    zmq_close (mon);
    if (!ok)
        zmq_close (s);
    return ok ? s : NULL;
}

void
itest_fake_hello (void *s, const char *id, int pid, int draining)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 3);
    codec_kv_str (b, "worker", id);
    codec_kv_int (b, "pid", pid);
    codec_kv_bool (b, "draining", draining);
    size_t len;
    const char *body = codec_builder_data (b, &len);
    zmq_send (s, "FRW1", 4, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, "HELLO", 5, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, body, len, ZMQ_DONTWAIT);
    codec_builder_destroy (&b);
}

/* The next message on s within the time left until until (monotonic ms): its first parts
 * (at most max; the rest are dropped) into parts, their count; 0 when none came. */
static int
fake_recv (void *s, int64_t until, zmq_msg_t *parts, int max)
{
    while (clock_mono_ms () < until) {
        zmq_pollitem_t item = { s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 20) != 1)
            continue;
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init (&m);
            zmq_msg_recv (&m, s, 0);
            more = zmq_msg_more (&m);
            if (n < max)
                parts [n++] = m;
            else
                zmq_msg_close (&m);
        }
        return n;
    }
    return 0;
}

static int
part_is (zmq_msg_t *m, const char *text)
{
    return zmq_msg_size (m) == strlen (text) && memcmp (zmq_msg_data (m), text, strlen (text)) == 0;
}

int
itest_fake_wait_req (void *s, int ms, itest_req_t *req)
{
    int64_t until = clock_mono_ms () + ms;
    zmq_msg_t parts [6];
    int n;
    while ((n = fake_recv (s, until, parts, 6)) > 0) {
        int is_req = n == 6 && part_is (&parts [1], "REQ");
        if (is_req) {
            zmq_msg_init (&req->client);
            zmq_msg_init (&req->seq);
            zmq_msg_copy (&req->client, &parts [2]);
            zmq_msg_copy (&req->seq, &parts [3]);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close (&parts [i]);
        if (is_req)
            return 1;
    }
    return 0;
}

json_t *
itest_fake_wait_ping (void *s, int ms)
{
    int64_t until = clock_mono_ms () + ms;
    zmq_msg_t parts [3];
    json_t *workers = NULL;
    int n;
    while (!workers && (n = fake_recv (s, until, parts, 3)) > 0) {
        if (n == 3 && part_is (&parts [1], "PING")) {
            codec_msg_t *msg = NULL;
            char err [128];
            if (codec_decode (zmq_msg_data (&parts [2]), zmq_msg_size (&parts [2]), &msg, err, sizeof err) == FR_OK) {
                json_t *body = codec_to_json (codec_msg_root (msg));
                workers = json_incref (json_object_get (body, "workers"));
                json_decref (body);
            }
            codec_msg_destroy (&msg);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close (&parts [i]);
    }
    return workers;
}

void
itest_fake_rep (void *s, const itest_req_t *req, const char *token, const char *rid)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, rid ? 5 : 4);
    if (rid)
        codec_kv_str (b, "rid", rid);
    codec_kv_bool (b, "ok", 1);
    codec_kv_str (b, "access_token", token);
    codec_kv_str (b, "expires_at", "2099-01-01T00:00:00Z");
    codec_kv_int (b, "generation", 1);
    size_t len;
    const char *body = codec_builder_data (b, &len);
    zmq_msg_t *client = (zmq_msg_t *) &req->client, *seq = (zmq_msg_t *) &req->seq;
    zmq_send (s, "FRW1", 4, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, "REP", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, zmq_msg_data (client), zmq_msg_size (client), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, zmq_msg_data (seq), 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, body, len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (s, "ok", 2, ZMQ_DONTWAIT);
    codec_builder_destroy (&b);
}

void
itest_fake_req_close (itest_req_t *req)
{
    zmq_msg_close (&req->client);
    zmq_msg_close (&req->seq);
}

int
itest_pg_own (const char *name, char *dir, size_t dirsize)
{
    if (!getenv ("FERRULE_TEST_PG_ADMIN_URL")) {
        printf ("note: FERRULE_TEST_PG_ADMIN_URL is not set, so this integration test is skipped\n");
        exit (HARNESS_SKIP);
    }
    snprintf (dir, dirsize, "%s/%s-pg-%d", HARNESS_WORK_ROOT, name, (int) getpid ());
    mkdir (HARNESS_WORK_ROOT, 0755);
    char url [1024];
    if (itest_pg ("start", dir, url, sizeof url) != 0 || !*url)
        return -1;
    setenv ("FERRULE_TEST_PG_ADMIN_URL", url, 1);
    return 0;
}

int
itest_pg_processes (harness_t *h, pid_t *pids, int max)
{
    PGconn *c = harness_db (h);
    int n = 0;
    PGresult *r = PQexec (c, "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid ()");
    for (int i = 0; PQresultStatus (r) == PGRES_TUPLES_OK && i < PQntuples (r) && n < max - 1; i++)
        pids [n++] = (pid_t) atoi (PQgetvalue (r, i, 0));
    PQclear (r);
    r = PQexec (c, "SELECT current_setting ('data_directory') || '/postmaster.pid'");
    FILE *f = PQresultStatus (r) == PGRES_TUPLES_OK ? fopen (PQgetvalue (r, 0, 0), "r") : NULL;
    long pm = 0;
    if (f && fscanf (f, "%ld", &pm) == 1 && pm > 1 && n < max)
        pids [n++] = (pid_t) pm;
    if (f)
        fclose (f);
    PQclear (r);
    return n;
}

void
itest_asan_option (harness_t *h, const char *option)
{
    const char *asan = getenv ("ASAN_OPTIONS");
    char options [1024];
    snprintf (options, sizeof options, "%s%s%s", asan && *asan ? asan : "", asan && *asan ? ":" : "", option);
    harness_set_env (h, "ASAN_OPTIONS", options);
}

/* A client of endpoints whose ping was answered, or NULL (nothing asserted: a forked child may
 * call it). */
static client_t *
client_pinged (const char *endpoints)
{
    client_t *c = client_new (endpoints);
    if (!c)
        return NULL;
    json_t *ping = client_call (c, "ping", NULL, 5000);
    int up = client_exit_code (ping) == 0;
    json_decref (ping);
    if (!up)
        client_destroy (&c);
    return c;
}

client_t *
itest_client_connected (const char *endpoints)
{
    client_t *c = client_pinged (endpoints);
    assert_non_null (c);
    return c;
}

json_t *
itest_call_once (const char *endpoints, const char *op, const char *integration, int timeout_ms)
{
    client_t *c = client_pinged (endpoints);
    if (!c)
        return NULL;
    json_t *args = json_pack ("{s:s}", "integration", integration);
    json_t *r = client_call_ex (c, op, args, timeout_ms, 0);
    json_decref (args);
    client_destroy (&c);
    return r;
}

itest_hits_t
itest_cached_hits (client_t *client, const char *integration, int64_t until_ms, int64_t hit_ms)
{
    itest_hits_t hits = { 0, 0, 0 };
    json_t *args = json_pack ("{s:s}", "integration", integration);
    while (clock_mono_ms () < until_ms) {
        int64_t sent = clock_mono_ms ();
        json_t *t = client_call (client, "token", args, 1000);
        int64_t took = clock_mono_ms () - sent;
        hits.slowest_ms = took > hits.slowest_ms ? took : hits.slowest_ms;
        if (client_exit_code (t) == 0 && json_is_false (json_object_get (t, "refreshed")) && took < hit_ms)
            hits.served++;
        else
            hits.late++;
        json_decref (t);
        usleep (20000);              /* a request every 20 ms or so, not a flood */
    }
    json_decref (args);
    return hits;
}
