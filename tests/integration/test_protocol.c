/* test_protocol.c - bad input at the broker's front door: every malformed request gets an error
 * reply with a code and a hint, nothing crashes, and the service keeps serving */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <msgpack.h>
#include <zmq.h>
#include "clock.h"
#include "codec.h"
#include "itest.h"

static harness_t *h;
static void *ctx;

static int
setup (void **state)
{
    h = harness_new ("protocol");
    if (!h || harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    ctx = zmq_ctx_new ();
    return 0;
}

static int
teardown (void **state)
{
    zmq_ctx_term (ctx);
    int unclean = harness_stop_all (h);
    harness_destroy (&h);
    return unclean == 0 ? 0 : -1;
}

static void *
dealer (void)
{
    void *s = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
    itest_secure (s);
    assert_int_equal (zmq_connect (s, harness_broker_frontend (h, 0)), 0);
    return s;
}

/* Sends the frames, waits up to 5 s for a reply, returns the decoded body as JSON (NULL: none). */
static json_t *
exchange (void *s, int n, const void *const *data, const size_t *size)
{
    for (int i = 0; i < n; i++)
        assert_true (zmq_send (s, data [i], size [i], i < n - 1 ? ZMQ_SNDMORE : 0) >= 0);
    zmq_pollitem_t item = { s, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, 5000) != 1)
        return NULL;
    zmq_msg_t parts [4];
    int count = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        zmq_msg_recv (&m, s, 0);
        more = zmq_msg_more (&m);
        if (count < 4)
            parts [count++] = m;
        else
            zmq_msg_close (&m);
    }
    json_t *out = NULL;
    if (count == 3 && zmq_msg_size (&parts [0]) == 0 && zmq_msg_size (&parts [1]) == 4
    &&  memcmp (zmq_msg_data (&parts [1]), "FRL1", 4) == 0) {
        codec_msg_t *msg = NULL;
        char err [256];
        if (codec_decode (zmq_msg_data (&parts [2]), zmq_msg_size (&parts [2]), &msg, err, sizeof err) == FR_OK)
            out = codec_to_json (codec_msg_root (msg));
        codec_msg_destroy (&msg);
    }
    for (int i = 0; i < count; i++)
        zmq_msg_close (&parts [i]);
    return out;
}

static void
expect_error (void *s, int n, const void *const *data, const size_t *size, const char *code)
{
    json_t *r = exchange (s, n, data, size);
    if (!r)
        fail_msg ("no reply where \"%s\" was expected", code);
    assert_true (json_is_false (json_object_get (r, "ok")));
    json_t *e = json_object_get (r, "error");
    if (strcmp (json_string_value (json_object_get (e, "code")), code) != 0)
        fail_msg ("expected \"%s\", got \"%s\": %s", code, json_string_value (json_object_get (e, "code")),
                  json_string_value (json_object_get (e, "message")));
    assert_true (strlen (json_string_value (json_object_get (e, "message"))) > 0);
    assert_true (strlen (json_string_value (json_object_get (e, "hint"))) > 0);
    json_decref (r);
}

static void
expect_body_error (void *s, const void *body, size_t len, const char *code)
{
    const void *data [] = { "", "FRL1", body };
    size_t size [] = { 0, 4, len };
    expect_error (s, 3, data, size, code);
}

/* A body built from a JSON text. */
static void
expect_json_error (void *s, const char *json, const char *code)
{
    json_error_t jerr;
    json_t *j = json_loads (json, 0, &jerr);
    assert_non_null (j);
    codec_builder_t *b = codec_builder_new ();
    codec_json (b, j);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    expect_body_error (s, data, len, code);
    codec_builder_destroy (&b);
    json_decref (j);
}

static void
test_frame_errors (void **state)
{
    void *s = dealer ();
    const void *one [] = { "" };
    size_t one_size [] = { 0 };
    expect_error (s, 1, one, one_size, "malformed_frame");
    const void *two [] = { "", "FRL1" };
    size_t two_size [] = { 0, 4 };
    expect_error (s, 2, two, two_size, "malformed_frame");
    const void *nodelim [] = { "x", "FRL1", "\x80" };
    size_t nodelim_size [] = { 1, 4, 1 };
    expect_error (s, 3, nodelim, nodelim_size, "malformed_frame");
    const void *version [] = { "", "FRL9", "\x80" };
    size_t version_size [] = { 0, 4, 1 };
    expect_error (s, 3, version, version_size, "unsupported_version");
    const void *many [] = { "", "FRL1", "\x80", "extra", "more" };
    size_t many_size [] = { 0, 4, 1, 5, 4 };
    expect_error (s, 5, many, many_size, "malformed_frame");
    /* a version this broker does not speak, with a body it can still read the "rid" of: the
     * answer names the request (it did not, and a client with several calls in flight on one
     * socket could not tell which failed: each waited for its deadline) */
    json_t *jb = json_pack ("{s:s, s:s, s:s}", "rid", "r7", "op", "token", "integration", "acct:x");
    codec_builder_t *cb = codec_builder_new ();
    codec_json (cb, jb);
    size_t blen;
    const void *newer [] = { "", "FRL9", codec_builder_data (cb, &blen) };
    size_t newer_size [] = { 0, 4, blen };
    json_t *r = exchange (s, 3, newer, newer_size);
    assert_non_null (r);
    assert_string_equal (json_string_value (json_object_get (json_object_get (r, "error"), "code")),
                         "unsupported_version");
    assert_string_equal (json_string_value (json_object_get (r, "rid")), "r7");
    json_decref (r);
    codec_builder_destroy (&cb);
    json_decref (jb);
    zmq_close (s);
}

static void
test_body_errors (void **state)
{
    void *s = dealer ();
    expect_body_error (s, "", 0, "malformed_frame");
    expect_body_error (s, "not msgpack at all", 18, "malformed_frame");
    /* five bytes declaring a map of four billion entries: refused before any allocation */
    expect_body_error (s, "\xdf\xff\xff\xff\xff", 5, "malformed_frame");
    expect_body_error (s, "\xdd\xff\xff\xff\xff", 5, "malformed_frame");
    expect_body_error (s, "\x92\x01\x02", 3, "malformed_frame");           /* not a map */
    expect_body_error (s, "\x81\x01\x02", 3, "malformed_frame");           /* integer key */
    unsigned char deep [32] = { 0x81, 0xa1, 'k' };
    for (int i = 0; i < 12; i++)
        deep [3 + i] = 0x91;
    deep [15] = 0x01;
    expect_body_error (s, deep, 16, "too_large");

    expect_json_error (s, "{}", "bad_request");
    expect_json_error (s, "{\"op\": 7}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"has space\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"a\", \"deadline_ms\": 0}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"a\", \"deadline_ms\": \"soon\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"a\", \"rid\": \"\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"frobnicate\", \"integration\": \"a\"}", "unknown_operation");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"a\", \"min_valid\": -5}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"a\", \"min_valid\": \"x\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"import\", \"integration\": \"a\", \"provider\": \"fakebox\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"import\", \"integration\": \"a\", \"provider\": \"fakebox\", \"refresh_token\": \"r\","
                          " \"scopes\": [\"ok\", \"has space\"]}", "bad_request");
    expect_json_error (s, "{\"op\": \"import\", \"integration\": \"a\", \"provider\": \"fakebox\", \"refresh_token\": \"r\","
                          " \"access_token\": \"a\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"history\", \"integration\": \"a\", \"limit\": 100000}", "bad_request");

    /* an oversized token value */
    char *big = malloc (40000);
    memset (big, 'x', 39999);
    big [39999] = '\0';
    json_t *j = json_pack ("{s:s, s:s, s:s, s:s}", "op", "import", "integration", "big", "provider", "fakebox",
                           "refresh_token", big);
    char *text = json_dumps (j, 0);
    expect_json_error (s, text, "too_large");
    free (text);
    json_decref (j);
    free (big);

    /* after all that, the same socket still gets real answers */
    expect_json_error (s, "{\"op\": \"status\", \"integration\": \"nobody\", \"rid\": \"r1\"}", "not_found");
    zmq_close (s);
}

/* A status request for an unknown integration with the given request id (len bytes), as tag
 * ("FRL1", or a version the broker does not speak); its reply decoded. */
static json_t *
ask_with_rid (void *s, const char *tag, const char *rid, size_t len)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 3);
    codec_kv_str (b, "op", "status");
    codec_kv_str (b, "integration", "nobody");
    codec_str (b, "rid");
    codec_strn (b, rid, len);
    size_t blen;
    const void *data [] = { "", tag, codec_builder_data (b, &blen) };
    size_t size [] = { 0, 4, blen };
    json_t *r = exchange (s, 3, data, size);
    codec_builder_destroy (&b);
    if (!r)
        fail_msg ("no reply to a request whose rid is %zu bytes", len);
    return r;
}

/* A "rid" is echoed in the reply and written to the logs, so it must be text: UTF-8 without
 * control characters. One with a NUL came back cut ("a" for "a\0b", so the client could not
 * match it and waited for its deadline), one that is not UTF-8 came back as it was, which a
 * client decoding strings as UTF-8 cannot read. Both are refused now and not echoed, on every
 * path that echoes one; UTF-8 beyond ASCII is text. */
static void
test_rid_that_is_not_text_is_refused (void **state)
{
    void *s = dealer ();
    const struct { const char *rid; size_t len; } bad [] = {
        { "a\0b", 3 }, { "\xff\xfe", 2 }, { "r\n1", 3 }, { "tab\t", 4 }, { "\x7f", 1 },
        { "\xc3", 1 },                 /* a sequence cut short */
        { "a\xc2\x85" "b", 4 },        /* U+0085: a C1 control */
        { "\xed\xa0\x80", 3 },       /* a UTF-16 surrogate */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        json_t *r = ask_with_rid (s, "FRL1", bad [i].rid, bad [i].len);
        const char *code = json_string_value (json_object_get (json_object_get (r, "error"), "code"));
        if (!code || strcmp (code, "bad_request") != 0)
            fail_msg ("rid %zu: expected bad_request, got \"%s\"", i, code ? code : "(none)");
        if (json_object_get (r, "rid"))
            fail_msg ("rid %zu: echoed in the refusal", i);
        json_decref (r);
        /* a version the broker does not speak: answered, the rid not echoed */
        r = ask_with_rid (s, "FRL9", bad [i].rid, bad [i].len);
        assert_string_equal (json_string_value (json_object_get (json_object_get (r, "error"), "code")),
                             "unsupported_version");
        if (json_object_get (r, "rid"))
            fail_msg ("rid %zu: echoed in the unsupported_version answer", i);
        json_decref (r);
    }
    json_t *r = ask_with_rid (s, "FRL1", "r\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x94\x91", 12);
    assert_string_equal (json_string_value (json_object_get (json_object_get (r, "error"), "code")), "not_found");
    assert_string_equal (json_string_value (json_object_get (r, "rid")), "r\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x94\x91");
    json_decref (r);
    zmq_close (s);
}

/* Strings over their limits are too_large, as the limits table says, whichever field: an
 * over-long "rid" (65 bytes) or integration id (129 characters) as much as an over-long state;
 * at the limit they pass, and a short id with a character outside the set is bad_request. */
static void
test_over_long_rid_and_integration_are_too_large (void **state)
{
    void *s = dealer ();
    char rid [66], id [130], json [512];
    memset (rid, 'r', 65);
    rid [65] = '\0';
    memset (id, 'i', 129);
    id [129] = '\0';
    snprintf (json, sizeof json, "{\"op\": \"status\", \"integration\": \"nobody\", \"rid\": \"%s\"}", rid);
    expect_json_error (s, json, "too_large");
    snprintf (json, sizeof json, "{\"op\": \"status\", \"integration\": \"%s\"}", id);
    expect_json_error (s, json, "too_large");
    snprintf (json, sizeof json, "{\"op\": \"events\", \"integration\": \"%s\"}", id);
    expect_json_error (s, json, "too_large");
    rid [64] = '\0';
    id [128] = '\0';
    snprintf (json, sizeof json, "{\"op\": \"status\", \"integration\": \"%s\", \"rid\": \"%s\"}", id, rid);
    expect_json_error (s, json, "not_found");
    expect_json_error (s, "{\"op\": \"status\", \"integration\": \"has space\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"status\", \"integration\": \"nobody\", \"rid\": 7}", "bad_request");
    zmq_close (s);
}

/* A body packed by the caller (duplicate keys, which JSON cannot carry), its reply as JSON. */
static json_t *
ask_packed (void *s, codec_builder_t *b)
{
    size_t len;
    const char *body = codec_builder_data (b, &len);
    const void *data [] = { "", "FRL1", body };
    size_t size [] = { 0, 4, len };
    return exchange (s, 3, data, size);
}

static json_t *
ask_json (void *s, const char *json)
{
    json_error_t jerr;
    json_t *j = json_loads (json, 0, &jerr);
    assert_non_null (j);
    codec_builder_t *b = codec_builder_new ();
    codec_json (b, j);
    json_t *r = ask_packed (s, b);
    codec_builder_destroy (&b);
    json_decref (j);
    if (!r)
        fail_msg ("no reply to %s", json);
    return r;
}

/* A reply serving access token at (NULL: any), refreshed or not, with request id rid (NULL: none). */
static void
expect_token (json_t *r, const char *at, int refreshed, const char *rid)
{
    if (!json_is_true (json_object_get (r, "ok")))
        fail_msg ("expected a token, got \"%s\": %s", itest_code (r),
                  json_string_value (json_object_get (json_object_get (r, "error"), "message")));
    if (at)
        itest_assert_same_token (json_string_value (json_object_get (r, "access_token")), at, "the token reply");
    assert_true (json_is_boolean (json_object_get (r, "refreshed")));
    assert_int_equal (json_is_true (json_object_get (r, "refreshed")), refreshed);
    if (rid)
        assert_string_equal (json_string_value (json_object_get (r, "rid")), rid);
    else
        assert_null (json_object_get (r, "rid"));
    json_decref (r);
}

/* Imports id (a grant of files.read) and asks for its token once through ferrulectl, which
 * caches it; returns that access token (the caller frees it). */
static char *
import_with_token (const char *id)
{
    int rc = -1;
    char *rt = itest_grant (h, "fakebox", "[\"files.read\"]");
    assert_non_null (rt);
    assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
    free (rt);
    json_t *first = harness_ctl (h, &rc, "token", "--integration", id, NULL);
    assert_int_equal (rc, 0);
    char *at = strdup (json_string_value (json_object_get (first, "access_token")));
    json_decref (first);
    return at;
}

/* A cached integration's token requests. The worker answers the common one from the undecoded
 * body (requests_hit); every other form must get the answer it got before, when each request
 * was decoded whole: a field out of range refused, scopes checked, a rejected token refreshed
 * away, a key given twice read at its first place. */
static void
test_cached_token_requests (void **state)
{
    char *at = import_with_token ("hit:a");
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    void *s = dealer ();

    /* served from the cache: other keys ignored, nil read as absent */
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"rid\": \"r1\", \"x\": [1, {\"y\": 2}]}"),
                  at, 0, "r1");
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": null,"
                               " \"require_scopes\": null, \"reject\": null}"), at, 0, NULL);
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": 60}"), at, 0, NULL);
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"require_scopes\": [\"files.read\"]}"),
                  at, 0, NULL);
    /* a key given twice: the first one counts, as it always did */
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 4);
    codec_kv_str (b, "op", "token");
    codec_kv_str (b, "integration", "hit:a");
    codec_kv_str (b, "integration", "hit:nobody");
    codec_kv_str (b, "rid", "dup");
    expect_token (ask_packed (s, b), at, 0, "dup");
    codec_builder_reset (b);
    codec_map (b, 3);
    codec_kv_str (b, "op", "token");
    codec_kv_str (b, "integration", "hit:nobody");
    codec_kv_str (b, "integration", "hit:a");
    json_t *r = ask_packed (s, b);
    assert_non_null (r);
    assert_string_equal (itest_code (r), "not_found");
    json_decref (r);
    codec_builder_destroy (&b);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls);

    /* refused as before, for a cached integration too */
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": 86401}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": -1}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": \"60\"}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"require_scopes\": \"files.read\"}",
                       "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"require_scopes\": [\"files.write\"]}",
                       "insufficient_scope");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"reject\": 5}", "bad_request");
    expect_json_error (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"rid\": \"\"}", "bad_request");
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls);

    /* a token the caller rejects is refreshed away */
    char req [512];
    snprintf (req, sizeof req, "{\"op\": \"token\", \"integration\": \"hit:a\", \"reject\": \"%s\"}", at);
    json_t *fresh = ask_json (s, req);
    assert_true (json_is_true (json_object_get (fresh, "ok")));
    itest_assert_other_token (json_string_value (json_object_get (fresh, "access_token")), at, "the reply to a rejection");
    char *at2 = strdup (json_string_value (json_object_get (fresh, "access_token")));
    expect_token (fresh, NULL, 1, NULL);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\"}"), at2, 0, NULL);
    /* a min_valid beyond the token's whole lifetime (3600 s here) can never be met: the token
     * refreshed moments ago is served, not refreshed again */
    expect_token (ask_json (s, "{\"op\": \"token\", \"integration\": \"hit:a\", \"min_valid\": 86400}"), at2, 0, NULL);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
    free (at2);
    free (at);
    zmq_close (s);
}

/* Sends a body built from a JSON text and leaves its reply for later (exchange reads it). */
static void
send_json (void *s, const char *json)
{
    json_error_t jerr;
    json_t *j = json_loads (json, 0, &jerr);
    assert_non_null (j);
    codec_builder_t *b = codec_builder_new ();
    codec_json (b, j);
    size_t len;
    const char *body = codec_builder_data (b, &len);
    assert_true (zmq_send (s, "", 0, ZMQ_SNDMORE) >= 0);
    assert_true (zmq_send (s, "FRL1", 4, ZMQ_SNDMORE) >= 0);
    assert_true (zmq_send (s, body, len, 0) >= 0);
    codec_builder_destroy (&b);
    json_decref (j);
}

/* Token requests for an integration whose cache entry went stale (a change notified) while a
 * refresh was in flight: they join that refresh, but a malformed field is still refused at once,
 * and a required scope the grant lacks still gets insufficient_scope, not the refreshed token. */
static void
test_stale_entry_token_requests (void **state)
{
    char *at = import_with_token ("stale:a");
    char req [512];
    snprintf (req, sizeof req, "{\"op\": \"token\", \"integration\": \"stale:a\", \"deadline_ms\": 30000,"
              " \"reject\": \"%s\"}", at);
    free (at);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");

    /* a refresh held at the provider, then the entry made stale under it. The replies are read
     * first and checked once the sockets are closed: a failed check must not leave one open for
     * the teardown to wait on */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 4000));
    void *a = dealer (), *s = dealer ();
    send_json (a, req);
    long long arrived = itest_wait_stat (h, "fakebox", "refresh_calls", calls + 1, 10000);
    harness_sql (h, "SELECT pg_notify('ferrule_integrations', 'test stale:a')");
    usleep (200000);
    const char *rids [] = { "scopes5", "reject123", "write" };
    const char *want [] = { "bad_request", "bad_request", "insufficient_scope" };
    send_json (s, "{\"op\": \"token\", \"integration\": \"stale:a\", \"rid\": \"scopes5\", \"require_scopes\": 5}");
    send_json (s, "{\"op\": \"token\", \"integration\": \"stale:a\", \"rid\": \"reject123\", \"reject\": 123}");
    send_json (s, "{\"op\": \"token\", \"integration\": \"stale:a\", \"rid\": \"write\", \"deadline_ms\": 30000,"
                  " \"require_scopes\": [\"files.write\"]}");
    json_t *refreshed = NULL, *got [3] = { NULL, NULL, NULL };
    for (int i = 0; !refreshed && i < 6; i++)
        refreshed = exchange (a, 0, NULL, NULL);
    for (int n = 0, tries = 0; n < 3 && tries < 6; tries++) {
        json_t *r = exchange (s, 0, NULL, NULL);
        const char *rid = r ? json_string_value (json_object_get (r, "rid")) : NULL;
        int k = 0;
        while (rid && k < 3 && strcmp (rids [k], rid) != 0)
            k++;
        if (k < 3 && rid && !got [k]) {
            got [k] = r;
            n++;
        }
        else
            json_decref (r);
    }
    zmq_close (a);
    zmq_close (s);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    assert_true (arrived >= calls + 1);
    for (int i = 0; i < 3; i++) {
        if (!got [i])
            fail_msg ("request \"%s\": no reply where \"%s\" was expected", rids [i], want [i]);
        if (strcmp (itest_code (got [i]), want [i]) != 0)
            fail_msg ("request \"%s\": expected \"%s\", got \"%s\"", rids [i], want [i],
                      *itest_code (got [i]) ? itest_code (got [i]) : "a token");
        json_decref (got [i]);
    }
    assert_non_null (refreshed);
    expect_token (refreshed, NULL, 1, NULL);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), calls + 1);
}

static void
test_oversized_frame_disconnects_only_that_client (void **state)
{
    void *s = dealer ();
    size_t len = CODEC_MAX_BODY + 4096;
    char *huge = calloc (1, len);
    const void *data [] = { "", "FRL1", huge };
    size_t size [] = { 0, 4, len };
    /* ZeroMQ drops a message over ZMQ_MAXMSGSIZE and the connection with it: no reply can go back */
    json_t *r = exchange (s, 3, data, size);
    assert_null (r);
    free (huge);
    zmq_close (s);
    int rc;
    json_t *p = harness_ctl (h, &rc, "ping", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (p, "workers")), 1);
    json_decref (p);
}

/* A body over the 256 KiB limit but within ZeroMQ's 257 KiB is read and answered too_large, with
 * no rid (it is not decoded), and the connection stays: docs/protocol.md, "Limits". */
static void
test_frame_just_over_the_body_limit_is_answered (void **state)
{
    void *s = dealer ();
    size_t len = CODEC_MAX_BODY + 512;
    char *big = calloc (1, len);
    assert_non_null (big);
    const void *data [] = { "", "FRL1", big };
    size_t size [] = { 0, 4, len };
    json_t *r = exchange (s, 3, data, size);
    free (big);
    assert_non_null (r);
    assert_string_equal (itest_code (r), "too_large");
    assert_null (json_object_get (r, "rid"));
    json_decref (r);
    /* the same socket still gets real answers */
    expect_json_error (s, "{\"op\": \"status\", \"integration\": \"nobody\", \"rid\": \"r2\"}", "not_found");
    zmq_close (s);
}

/* A client that does not read its answers fills its queue at the broker (FERRULE_ZMQ_HWM, here
 * 10, behind a small receive buffer): the answers past it are dropped, as the broker cannot wait
 * for one client, but counted and said. They were dropped with a debug line, and counted as
 * answered. */
static void
test_answers_a_client_does_not_read_are_counted_when_dropped (void **state)
{
    harness_set_env (h, "FERRULE_ZMQ_HWM", "10");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    int idx = harness_start_broker (h);
    harness_set_env (h, "FERRULE_ZMQ_HWM", NULL);
    harness_set_env (h, "FERRULE_HTTP_BIND", NULL);
    assert_true (idx > 0);
    char log_name [32];
    snprintf (log_name, sizeof log_name, "broker%d", idx);
    assert_true (itest_http_port (h, log_name) > 0);

    void *s = itest_unread_socket (ctx, harness_broker_frontend (h, idx));
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 2);
    codec_kv_str (b, "op", "ping");
    codec_kv_str (b, "rid", "unread");
    size_t len;
    const char *body = codec_builder_data (b, &len);
    double dropped = 0;
    int64_t until = clock_mono_ms () + 30000;
    for (int i = 0; dropped <= 0 && clock_mono_ms () < until; i++) {
        assert_true (zmq_send (s, "", 0, ZMQ_SNDMORE) >= 0);
        assert_true (zmq_send (s, "FRL1", 4, ZMQ_SNDMORE) >= 0);
        assert_true (zmq_send (s, body, len, 0) >= 0);
        if (i % 1000 == 999)
            dropped = itest_metric (h, log_name, "ferrule_broker_answers_undelivered_total");
    }
    codec_builder_destroy (&b);
    if (dropped <= 0)
        fail_msg ("no dropped answer was counted for a client that read none (the metric: %.0f)", dropped);
    itest_wait_log (h, "its queue of unread answers is full", 10000);
    /* the audit log says what the client got: each answer dropped is recorded "undelivered", not
     * "ok" (the broker's own answers were recorded before their send). The client stays
     * connected, reading nothing, while the broker answers what it still holds (under
     * AddressSanitizer, for seconds: a client that left would make those answers undelivered for
     * another reason, which the metric does not count), and the writer flushes every 50 ms: the
     * counts are compared until they agree */
    char path [4096];
    snprintf (path, sizeof path, "%s/%s.audit", harness_workdir (h), log_name);
    double counted = -1, undelivered = -2;
    until = clock_mono_ms () + 20000;
    while (counted != undelivered && clock_mono_ms () < until) {
        usleep (300000);
        counted = itest_metric (h, log_name, "ferrule_broker_answers_undelivered_total");
        FILE *f = fopen (path, "r");
        assert_non_null (f);
        char line [2048];
        undelivered = 0;
        while (fgets (line, sizeof line, f))
            if (strstr (line, "\"rid\":\"unread\"") && strstr (line, "\"outcome\":\"undelivered\""))
                undelivered++;
        fclose (f);
    }
    zmq_close (s);
    if (undelivered != counted)
        fail_msg ("%.0f answers dropped, %.0f recorded undelivered in the audit log", counted, undelivered);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_frame_errors),
        cmocka_unit_test (test_body_errors),
        cmocka_unit_test (test_over_long_rid_and_integration_are_too_large),
        cmocka_unit_test (test_rid_that_is_not_text_is_refused),
        cmocka_unit_test (test_cached_token_requests),
        cmocka_unit_test (test_stale_entry_token_requests),
        cmocka_unit_test (test_oversized_frame_disconnects_only_that_client),
        cmocka_unit_test (test_frame_just_over_the_body_limit_is_answered),
        cmocka_unit_test (test_answers_a_client_does_not_read_are_counted_when_dropped),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
