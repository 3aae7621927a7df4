/* test_units.c - the gateway's escaping builder, its return_to allow-list, its cross-site check,
 * the deadline of a page's broker calls and its client keys file */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "clock.h"
#include "gateway.h"
#include "html.h"
#include "flow.h"
#include "auth.h"
#include "mem.h"
#include <unistd.h>

static void
test_html_escapes_text_and_urls (void **state)
{
    html_t *h = html_new ();
    html_text (h, "<script>alert('x') & \"y\"</script>");
    assert_string_equal (html_data (h), "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;");
    html_destroy (&h);
    h = html_new ();
    html_urlenc (h, "acct42:box a&b=c/?");
    assert_string_equal (html_data (h), "acct42%3Abox%20a%26b%3Dc%2F%3F");
    html_destroy (&h);
    assert_null (h);
    html_destroy (&h);              /* twice is fine */
}

static void
test_html_is_capped (void **state)
{
    html_t *h = html_new ();
    char chunk [4097];
    memset (chunk, 'a', 4096);
    chunk [4096] = '\0';
    for (int i = 0; i < (HTML_MAX / 4096) + 2; i++)
        html_raw (h, chunk);
    assert_true (html_failed (h));
    assert_true (html_len (h) <= HTML_MAX);
    html_destroy (&h);
}

static void
test_return_to_allow_list (void **state)
{
    gw_t gw;
    memset (&gw, 0, sizeof gw);
    strcpy (gw.origin, "http://127.0.0.1:8080");
    strcpy (gw.origins [0], "https://app.example.com");
    gw.norigins = 1;
    assert_true (gw_return_to_allowed (&gw, "https://app.example.com/done"));
    assert_true (gw_return_to_allowed (&gw, "https://APP.example.com/done?x=1"));
    assert_true (gw_return_to_allowed (&gw, "HTTPS://app.example.com/done"));   /* a scheme is case-insensitive too */
    assert_true (gw_return_to_allowed (&gw, "http://127.0.0.1:8080/dashboard"));
    assert_true (gw_return_to_allowed (&gw, "https://app.example.com"));
    assert_false (gw_return_to_allowed (&gw, "https://evil.example/"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com.evil.example/"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com@evil.example/"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com:444/"));
    assert_false (gw_return_to_allowed (&gw, "http://app.example.com/"));
    assert_false (gw_return_to_allowed (&gw, "//evil.example/"));
    assert_false (gw_return_to_allowed (&gw, "/relative"));
    assert_false (gw_return_to_allowed (&gw, "javascript:alert(1)"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com\\@evil.example/"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com/ x"));
    assert_false (gw_return_to_allowed (&gw, "https://app.example.com/#frag"));
}

/* Where a browser says a form comes from: Sec-Fetch-Site decides when sent, else Origin. */
static void
test_cross_site (void **state)
{
    gw_t gw;
    memset (&gw, 0, sizeof gw);
    strcpy (gw.origin, "https://ferrule.example.com");
    assert_false (gw_cross_site (&gw, NULL, NULL));                         /* curl, old browsers */
    assert_false (gw_cross_site (&gw, "same-origin", NULL));
    assert_false (gw_cross_site (&gw, "same-origin", "null"));             /* Sec-Fetch-Site decides */
    assert_false (gw_cross_site (&gw, "none", NULL));
    assert_true (gw_cross_site (&gw, "cross-site", "https://ferrule.example.com"));
    assert_true (gw_cross_site (&gw, "same-site", NULL));                  /* a sibling host */
    assert_true (gw_cross_site (&gw, "", NULL));
    assert_false (gw_cross_site (&gw, NULL, "https://ferrule.example.com"));
    assert_false (gw_cross_site (&gw, NULL, "https://Ferrule.Example.com"));
    assert_true (gw_cross_site (&gw, NULL, "null"));
    assert_true (gw_cross_site (&gw, NULL, "https://evil.example"));
    assert_true (gw_cross_site (&gw, NULL, "http://ferrule.example.com"));
    assert_true (gw_cross_site (&gw, NULL, "https://ferrule.example.com:8443"));
    assert_true (gw_cross_site (&gw, NULL, "https://ferrule.example.com.evil.example"));
    assert_true (gw_cross_site (&gw, NULL, ""));
}

/* A page's broker calls stop at its deadline, and after an answer that says the service stalls:
 * nothing is asked (this gateway has no broker: a call would crash), the reply is a timeout. */
static void
test_budget_asks_nothing_when_over (void **state)
{
    gw_t gw;
    gw_req_t req;
    memset (&gw, 0, sizeof gw);
    memset (&req, 0, sizeof req);
    req.gw = &gw;
    gw_budget_t b;
    gw_budget_start (&b, 0);
    json_t *r = gw_call_within (&req, &b, "doctor", NULL);
    assert_string_equal (gw_code (r), "timeout");
    json_decref (r);
    gw_budget_start (&b, 60000);
    b.stalled = 1;
    r = gw_call_within (&req, &b, "doctor", NULL);
    assert_string_equal (gw_code (r), "timeout");
    assert_int_equal (gw_http_status (gw_code (r)), 503);
    json_decref (r);
}

/* A request's calls together end within GW_REQUEST_MS: once its time is over, a call asks
 * nothing (this gateway has no broker: a call would crash) and the reply is a timeout. A
 * Reconnect's status then connect, or a workspace key's check then a diagnosis, took up to 40 s. */
static void
test_request_time_bounds_every_call (void **state)
{
    gw_t gw;
    gw_req_t req;
    memset (&gw, 0, sizeof gw);
    memset (&req, 0, sizeof req);
    req.gw = &gw;
    req.until_ms = clock_mono_ms () - 1;
    json_t *r = gw_call (&req, "connect", NULL, GW_CALLBACK_MS);
    assert_string_equal (gw_code (r), "timeout");
    assert_int_equal (gw_http_status (gw_code (r)), 503);
    json_decref (r);
}

/* A call with less of the request's time left than a broker call needs (100 ms) is not sent,
 * and is answered timeout saying the request's time ran out: earlier calls of the request used
 * it. It was answered overloaded, "every broker client of this gateway was busy for most of this
 * request's time", with every client free. The pool's broker is nowhere (port 9): nothing is
 * sent to it. */
static void
test_too_little_time_left_is_no_busy_pool (void **state)
{
    char err [256];
    gw_t gw;
    gw_req_t req;
    memset (&gw, 0, sizeof gw);
    memset (&req, 0, sizeof req);
    unsetenv ("FERRULE_CURVE_SECRET_KEY_FILE");
    unsetenv ("FERRULE_BROKER_PUBLIC_KEY_FILE");
    setenv ("FERRULE_ALLOW_PLAINTEXT", "1", 1);
    gw.pool = pool_new ("tcp://127.0.0.1:9", 4, err, sizeof err);
    assert_non_null (gw.pool);
    req.gw = &gw;
    req.until_ms = clock_mono_ms () + 60;
    json_t *args = json_pack ("{s:s}", "integration", "acct1:box");
    json_t *r = gw_call (&req, "connect", args, GW_CALLBACK_MS);
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    print_message ("a call with 60 ms of its request left: %s, \"%s\"\n", gw_code (r), message ? message : "");
    assert_string_equal (gw_code (r), "timeout");
    assert_non_null (message);
    assert_non_null (strstr (message, "time ran out"));
    assert_null (strstr (message, "busy"));
    assert_null (strstr (message, "may have been carried out"));
    json_decref (r);
    json_decref (args);
    pool_destroy (&gw.pool);
}

/* The browser binding cookie: only 43 base64url characters are a binding; its Set-Cookie is
 * HttpOnly, SameSite=Lax (the provider's redirect back is a cross-site GET), Path=/, a day, no
 * Domain, and over https Secure and "__Host-" named. */
static void
test_flow_cookie (void **state)
{
    const char *good = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_9";
    assert_int_equal (strlen (good), 43);
    assert_true (flow_binding_valid (good));
    assert_false (flow_binding_valid (NULL));
    assert_false (flow_binding_valid (""));
    assert_false (flow_binding_valid ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_"));     /* 42 */
    assert_false (flow_binding_valid ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_99"));   /* 44 */
    assert_false (flow_binding_valid ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123+/9"));    /* not the URL alphabet */
    assert_false (flow_binding_valid ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_="));
    assert_false (flow_binding_valid ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-; "));
    gw_t gw;
    memset (&gw, 0, sizeof gw);
    char *c = flow_cookie_header (&gw, good);
    assert_string_equal (flow_cookie_name (&gw), "ferrule_flow");
    assert_string_equal (c, "ferrule_flow=abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_9; Path=/; HttpOnly; SameSite=Lax; "
                            "Max-Age=86400");
    free (c);
    gw.secure = 1;
    c = flow_cookie_header (&gw, good);
    assert_string_equal (flow_cookie_name (&gw), "__Host-ferrule_flow");
    assert_string_equal (c, "__Host-ferrule_flow=abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_9; Path=/; HttpOnly; "
                            "SameSite=Lax; Max-Age=86400; Secure");
    free (c);
}

#define GOOD_HASH "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* Loads text as a client keys file; the keys found (n), or -1 with err. */
static int
load_keys (const char *text, size_t *n, char *err, size_t errlen)
{
    char path [] = "/tmp/ferrule-gw-keys-XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
    gw_client_key_t *keys = NULL;
    int rc = auth_load_client_keys (path, &keys, n, err, errlen);
    unlink (path);
    mem_free (keys);
    return rc;
}

/* A hash mistyped in the client keys file is refused when the file is read, naming the line:
 * sscanf's "%2x" took "1g" as 1, "-1", "+f" and "0x" as numbers, so such a file loaded, and its
 * client got 401 "the bearer key is not known" with no clue why. A line longer than the read
 * buffer (a long comment) was read as two, its rest parsed as an entry of its own. */
static void
test_client_keys_file_is_read_strictly (void **state)
{
    (void) state;
    char err [512], text [2048];
    size_t n = 0;
    assert_int_equal (load_keys ("billing " GOOD_HASH "\n# a comment\n\nops " GOOD_HASH "  # trailing\n", &n, err,
                                 sizeof err), 0);
    assert_int_equal (n, 2);
    static const char *const bad [] = { "1g", "-1", "+f", "0x", "AG", " 1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        snprintf (text, sizeof text, "ok " GOOD_HASH "\nbilling %s%.62s\n", bad [i], GOOD_HASH);
        if (load_keys (text, &n, err, sizeof err) == 0)
            fail_msg ("a hash starting \"%s\" was accepted (%zu keys)", bad [i], n);
        assert_non_null (strstr (err, "line 2"));
    }
    /* upper-case hex is hex */
    assert_int_equal (load_keys ("billing 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789ABCDEF\n", &n, err,
                                 sizeof err), 0);
    /* a comment longer than any buffer, then an entry: one key, and the entry's line number */
    memset (text, 0, sizeof text);
    text [0] = '#';
    memset (text + 1, 'x', 1200);
    strcat (text, " ops " GOOD_HASH "\nbilling " GOOD_HASH "\n");
    assert_int_equal (load_keys (text, &n, err, sizeof err), 0);
    assert_int_equal (n, 1);
    /* an entry line that long is refused, by its line number */
    snprintf (text, sizeof text, "ok " GOOD_HASH "\nbilling " GOOD_HASH "%1100s\n", "x");
    assert_int_equal (load_keys (text, &n, err, sizeof err), -1);
    assert_non_null (strstr (err, "line 2"));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_html_escapes_text_and_urls),
        cmocka_unit_test (test_flow_cookie),
        cmocka_unit_test (test_html_is_capped),
        cmocka_unit_test (test_return_to_allow_list),
        cmocka_unit_test (test_cross_site),
        cmocka_unit_test (test_budget_asks_nothing_when_over),
        cmocka_unit_test (test_request_time_bounds_every_call),
        cmocka_unit_test (test_too_little_time_left_is_no_busy_pool),
        cmocka_unit_test (test_client_keys_file_is_read_strictly),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
