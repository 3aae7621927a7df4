/* test_webhook.c - webhook signatures, the retry schedule, the event body and the endpoints file */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include <dlfcn.h>
#include <jansson.h>
#include <openssl/hmac.h>
#include "webhook.h"
#include "mem.h"
#include "secmem.h"

#define SECRET "whsec_0123456789abcdef"

static void
test_sign_vector (void **state)
{
    /* HMAC-SHA256 (key SECRET, "1700000000.{\"a\":1}") computed independently (Python's hmac) */
    char sig [WEBHOOK_SIG_HEX + 1];
    assert_int_equal (webhook_sign (SECRET, 1700000000, "{\"a\":1}", 7, sig), FR_OK);
    assert_string_equal (sig, "9f5e37cdc7ea587c7c02062d93283cad000d66a831b2a1676418696db47ed6c2");
}

static void
test_verify (void **state)
{
    const char *body = "{\"id\":\"x\",\"type\":\"connected\"}";
    char sig [WEBHOOK_SIG_HEX + 1], header [128];
    assert_int_equal (webhook_sign (SECRET, 1700000000, body, strlen (body), sig), FR_OK);
    snprintf (header, sizeof header, "t=1700000000,v1=%s", sig);
    assert_true (webhook_verify (SECRET, header, body, strlen (body), 1700000010, 300));
    /* a changed body, another secret, a replay outside the tolerance, a changed timestamp */
    assert_false (webhook_verify (SECRET, header, "{\"id\":\"y\",\"type\":\"connected\"}", strlen (body), 1700000010, 300));
    assert_false (webhook_verify ("whsec_another_secret_0000", header, body, strlen (body), 1700000010, 300));
    assert_false (webhook_verify (SECRET, header, body, strlen (body), 1700000000 + 301, 300));
    snprintf (header, sizeof header, "t=1700000001,v1=%s", sig);
    assert_false (webhook_verify (SECRET, header, body, strlen (body), 1700000010, 300));
    /* malformed headers */
    assert_false (webhook_verify (SECRET, NULL, body, strlen (body), 1700000010, 300));
    assert_false (webhook_verify (SECRET, "t=1700000000", body, strlen (body), 1700000010, 300));
    assert_false (webhook_verify (SECRET, "t=1700000000,v1=abc", body, strlen (body), 1700000010, 300));
    snprintf (header, sizeof header, "t=1700000000,v1=%s,x", sig);
    assert_false (webhook_verify (SECRET, header, body, strlen (body), 1700000010, 300));
}

/* OpenSSL's HMAC (), failing while hmac_fails is set: a failure no test can cause otherwise.
 * This program's own definition is the one webhook.c's calls reach. */
static int hmac_fails;

typedef unsigned char *(hmac_fn) (const EVP_MD *, const void *, int, const unsigned char *, size_t, unsigned char *,
                                  unsigned int *);

unsigned char *
HMAC (const EVP_MD *md, const void *key, int key_len, const unsigned char *data, size_t data_len, unsigned char *out,
      unsigned int *out_len)
{
    hmac_fn *real = NULL;
    if (hmac_fails)
        return NULL;
    *(void **) &real = dlsym (RTLD_NEXT, "HMAC");
    assert_non_null (real);
    return real (md, key, key_len, data, data_len, out, out_len);
}

/* A signature that could not be computed matches nothing: one of all zeros passed */
static void
test_verify_fails_closed (void **state)
{
    (void) state;
    const char *body = "{\"id\":\"x\",\"type\":\"connected\"}";
    char header [128];
    snprintf (header, sizeof header, "t=1700000000,v1=%064d", 0);
    char sig [WEBHOOK_SIG_HEX + 1] = "x";
    hmac_fails = 1;
    int valid = webhook_verify (SECRET, header, body, strlen (body), 1700000010, 300);
    fr_status_t st = webhook_sign (SECRET, 1700000000, body, strlen (body), sig);
    hmac_fails = 0;
    assert_false (valid);
    assert_int_equal (st, FR_INTERNAL);     /* and says so: a request is not sent unsigned */
    assert_string_equal (sig, "");
}

static void
test_backoff (void **state)
{
    /* equal jitter: within [d/2, d] for d = base * 2^(attempts-1), capped at max */
    for (int attempts = 1; attempts <= 40; attempts++) {
        int64_t d = 1000;
        for (int i = 1; i < attempts && d < 60000; i++)
            d *= 2;
        if (d > 60000)
            d = 60000;
        int64_t lo = webhook_backoff_ms (attempts, 1000, 60000, 0);
        int64_t hi = webhook_backoff_ms (attempts, 1000, 60000, (uint64_t) (d - d / 2));
        assert_int_equal (lo, d / 2);
        assert_int_equal (hi, d);
        for (int k = 0; k < 100; k++) {
            int64_t v = webhook_backoff_ms (attempts, 1000, 60000, (uint64_t) random () * 7919u);
            assert_true (v >= d / 2 && v <= d);
        }
    }
    /* it grows: attempt 3 waits at least twice attempt 1 at most */
    assert_true (webhook_backoff_ms (3, 1000, 600000, 0) >= webhook_backoff_ms (1, 1000, 600000, 500));
    /* a base of 0 means at once; no overflow for huge attempt numbers */
    assert_int_equal (webhook_backoff_ms (5, 0, 1000, 12345), 0);
    assert_true (webhook_backoff_ms (1000000, 1000, 86400000, UINT64_MAX) <= 86400000);
    assert_true (webhook_backoff_ms (0, 1000, 60000, 0) == 500);
}

static void
test_body (void **state)
{
    webhook_event_t ev = { "6f1c2b1e-8a1d-4e55-9f0a-0123456789ab", "needs_reconnect", "acct42:box", "box",
                           "rotation_interrupted", 1700000000123LL, 7, "provider answered invalid_grant", 0 };
    char *body = webhook_body (&ev);
    json_t *o = json_loads (body, 0, NULL);
    assert_non_null (o);
    assert_string_equal (json_string_value (json_object_get (o, "id")), ev.id);
    assert_string_equal (json_string_value (json_object_get (o, "type")), "needs_reconnect");
    assert_string_equal (json_string_value (json_object_get (o, "integration")), "acct42:box");
    assert_string_equal (json_string_value (json_object_get (o, "provider")), "box");
    assert_string_equal (json_string_value (json_object_get (o, "diagnosis")), "rotation_interrupted");
    assert_string_equal (json_string_value (json_object_get (o, "time")), "2023-11-14T22:13:20.123Z");
    assert_int_equal (json_integer_value (json_object_get (o, "generation")), 7);
    assert_null (json_object_get (o, "expires_at"));
    assert_int_equal (json_object_size (o), 8);     /* nothing else: never a token */
    json_decref (o);
    mem_free (body);
    webhook_event_t test = { "6f1c2b1e-8a1d-4e55-9f0a-0123456789ac", "test", NULL, NULL, "healthy", 0, -1, NULL,
                             1700000000 };
    body = webhook_body (&test);
    o = json_loads (body, 0, NULL);
    assert_null (json_object_get (o, "integration"));
    assert_null (json_object_get (o, "generation"));
    assert_string_equal (json_string_value (json_object_get (o, "expires_at")), "2023-11-14T22:13:20Z");
    json_decref (o);
    mem_free (body);
}

/* An event that cannot be made into JSON (a string that is not UTF-8: jansson refuses it) has no
 * body: it was sent as a signed "{}", and a 2xx recorded it delivered; and a detail it could not
 * take was left out without a word. */
static void
test_body_refused (void **state)
{
    webhook_event_t bad_id = { "6f1c2b1e-8a1d-4e55-9f0a-\xff" "123456789ab", "needs_reconnect", "acct42:box", "box",
                               "rotation_interrupted", 1700000000123LL, 7, NULL, 0 };
    char *body = webhook_body (&bad_id);
    assert_null (body);
    webhook_event_t bad_detail = { "6f1c2b1e-8a1d-4e55-9f0a-0123456789ab", "needs_reconnect", "acct42:box", "box",
                                   "rotation_interrupted", 1700000000123LL, 7, "missing: \xc3(", 0 };
    body = webhook_body (&bad_detail);
    assert_null (body);
}

/* A syntax error in the endpoints file: jansson's text quotes the token it stopped in ("near
 * '...'"), here a URL up to just after its password. The message names the file, the line and
 * the column, and what kind of error, never the text. */
static void
test_endpoints_file_syntax_error (void **state)
{
    char err [512] = "";
    static const char *const broken [] = {
        "{\"endpoints\": [{\"name\": \"a\",\n \"url\": \"http://a:Pw9xK2@h\\q/x\", \"secret_file\": \"/x\"}]}",
        "{\"endpoints\": [{\"name\": \"a\", \"url\": \"http://a:Pw9xK2@h\xe9/x\"}]}",
        "{\"endpoints\": [{\"name\": \"a\", \"Pw9xK2\": 1, \"Pw9xK2\": 2}]}",
        "{\"endpoints\": [{\"name\": \"a\", \"url\": \"http://a:Pw9xK2@h/x\"",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken [0]; i++) {
        assert_null (webhook_set_parse (broken [i], strlen (broken [i]), "hooks.json", err, sizeof err));
        if (strstr (err, "Pw9xK2"))
            fail_msg ("file %zu: the message quotes the file's text", i);     /* not printed: it would */
        if (strstr (err, "near") || !strstr (err, "\"hooks.json\": line ") || !strstr (err, ", column "))
            fail_msg ("file %zu: %s", i, err);
    }
    assert_null (webhook_set_parse (broken [0], strlen (broken [0]), "hooks.json", err, sizeof err));
    assert_non_null (strstr (err, "line 2, column 28"));
}

static char secret_path [64];

static int
write_secret (void **state)
{
    snprintf (secret_path, sizeof secret_path, "/tmp/ferrule-test-webhook-%d.secret", (int) getpid ());
    FILE *f = fopen (secret_path, "w");
    if (!f)
        return -1;
    fputs (SECRET "\n", f);
    fclose (f);
    return 0;
}

static int
remove_secret (void **state)
{
    unlink (secret_path);
    return 0;
}

static webhook_set_t *
parse (const char *fmt, char *err, size_t errlen)
{
    char text [2048];
    snprintf (text, sizeof text, fmt, secret_path);
    return webhook_set_parse (text, strlen (text), "test.json", err, errlen);
}

static void
test_endpoints_file (void **state)
{
    char err [512] = "";
    webhook_set_t *set = parse ("{\"endpoints\": ["
                                "{\"name\": \"app\", \"url\": \"https://u:p@app.example.com/hooks?k=v\", \"secret_file\": \"%s\","
                                " \"events\": [\"needs_reconnect\", \"connected\"]},"
                                "{\"name\": \"all\", \"url\": \"http://127.0.0.1:9/x\", \"secret_env\": \"FERRULE_TEST_WH_SECRET\"}]}",
                                err, sizeof err);
    assert_null (set);                      /* the environment variable is not set */
    assert_non_null (strstr (err, "FERRULE_TEST_WH_SECRET"));
    setenv ("FERRULE_TEST_WH_SECRET", "0123456789abcdef0123", 1);
    set = parse ("{\"endpoints\": ["
                 "{\"name\": \"app\", \"url\": \"https://u:p@app.example.com/hooks?k=v\", \"secret_file\": \"%s\","
                 " \"events\": [\"needs_reconnect\", \"connected\"]},"
                 "{\"name\": \"all\", \"url\": \"http://127.0.0.1:9/x\", \"secret_env\": \"FERRULE_TEST_WH_SECRET\"}]}",
                 err, sizeof err);
    assert_non_null (set);
    assert_int_equal (webhook_set_count (set), 2);
    const webhook_endpoint_t *app = webhook_set_find (set, "app");
    assert_non_null (app);
    assert_string_equal (app->secret, SECRET);       /* the newline is dropped */
    assert_true (secmem_owns (app->secret));
    assert_true (webhook_endpoint_wants (app, "connected"));
    assert_false (webhook_endpoint_wants (app, "expiring"));
    assert_true (webhook_endpoint_wants (app, "test"));
    assert_true (webhook_endpoint_wants (webhook_set_find (set, "http://127.0.0.1:9/x"), "expiring"));
    char shown [256];
    webhook_endpoint_shown (app, shown, sizeof shown);
    /* the path and query "/hooks?k=v" stand as a tag (Python's hmac, as in test_url_path_not_shown) */
    assert_string_equal (shown, "https://app.example.com/... (efbb7f2f)");
    assert_null (webhook_set_find (set, "nope"));
    webhook_set_destroy (&set);
    assert_null (set);
    webhook_set_destroy (&set);

    /* refusals, each naming what to fix, none echoing a secret */
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"https://x\", \"secret\": \"inline-secret-value\"}]}%.0s", err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "secret_file"));
    assert_null (strstr (err, "inline-secret-value"));
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"https://x\", \"secret_file\": \"%s\", \"events\": [\"bogus\"]}]}",
                 err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "bogus"));
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"ftp://x\", \"secret_file\": \"%s\"}]}", err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "url"));
    set = parse ("{\"endpoints\": [{\"name\": \"a b\", \"url\": \"https://x\", \"secret_file\": \"%s\"}]}", err, sizeof err);
    assert_null (set);
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"https://x\", \"secret_file\": \"%s\"},"
                 "{\"name\": \"a\", \"url\": \"https://y\", \"secret_env\": \"FERRULE_TEST_WH_SECRET\"}]}", err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "two endpoints"));
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"https://x\", \"secret_file\": \"%s.missing\"}]}", err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "could not read the secret"));
    set = parse ("[1, 2]%.0s", err, sizeof err);
    assert_null (set);
    /* an empty list is not "every type" (an operator who wrote it meant none): refused */
    set = parse ("{\"endpoints\": [{\"name\": \"muted\", \"url\": \"https://x\", \"secret_file\": \"%s\","
                 " \"events\": []}]}", err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "\"muted\""));
    assert_non_null (strstr (err, "\"events\" is empty"));
    setenv ("FERRULE_TEST_WH_SECRET", "short", 1);
    set = parse ("{\"endpoints\": [{\"name\": \"a\", \"url\": \"https://x\", \"secret_env\": \"FERRULE_TEST_WH_SECRET\"}]}%.0s",
                 err, sizeof err);
    assert_null (set);
    assert_non_null (strstr (err, "16"));
    assert_null (strstr (err, "short"));
}

/* URLs curl would refuse at every delivery are refused at load, naming the endpoint and "url",
 * and never echoed (one holds a password) */
static void
test_endpoint_urls (void **state)
{
    (void) state;
    static const char *const bad [] = {
        "https://user:Zq7@Xw9@hooks.example.com/x",     /* an '@' in the password, not encoded */
        "https://hooks.example .com/x",
        "https://",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com/a b",
        "http:///hooks",                                /* curl reads the path's first part as the host */
        "https://hooks.example.com:0/x",
    };
    char err [512], fmt [512], accepted [64] = "";
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        snprintf (fmt, sizeof fmt, "{\"endpoints\": [{\"name\": \"hook\", \"url\": \"%s\", "
                  "\"secret_file\": \"%%s\"}]}", bad [i]);
        err [0] = '\0';
        webhook_set_t *set = parse (fmt, err, sizeof err);
        if (set) {          /* by number: the first holds a password */
            snprintf (accepted + strlen (accepted), sizeof accepted - strlen (accepted), " %zu", i + 1);
            webhook_set_destroy (&set);
            continue;
        }
        assert_non_null (strstr (err, "\"hook\""));
        assert_non_null (strstr (err, "\"url\""));
        assert_null (strstr (err, "Zq7"));
        assert_null (strstr (err, "Xw9"));
    }
    if (accepted [0])
        fail_msg ("invalid URLs accepted:%s", accepted);
    /* the password encoded is a valid URL; shown, it has no user information, path nor query */
    webhook_set_t *set = parse ("{\"endpoints\": [{\"name\": \"hook\", \"url\": "
                                "\"https://user:Zq7%%40Xw9@hooks.example.com:8443/x/y?token=Qv5\", \"secret_file\": \"%s\"}]}",
                                err, sizeof err);
    assert_non_null (set);
    char shown [256];
    webhook_endpoint_shown (webhook_set_at (set, 0), shown, sizeof shown);
    assert_non_null (strstr (shown, "https://hooks.example.com:8443/... ("));
    assert_null (strstr (shown, "Qv5"));
    assert_null (strstr (shown, "x/y"));
    webhook_set_destroy (&set);
    /* nor does any part of a password show from a URL that is not one (the first '@' was taken
     * for the end of the user information: "https://Xw9@hooks...") */
    char secret [] = SECRET;
    webhook_endpoint_t ep = { .name = "hook", .url = "https://user:Zq7@Xw9@hooks.example.com/x", .secret = secret };
    webhook_endpoint_shown (&ep, shown, sizeof shown);
    assert_null (strstr (shown, "Zq7"));
    assert_null (strstr (shown, "Xw9"));
    assert_null (strstr (shown, "user"));
    ep.url = "https://user:Zq7%40Xw9@hooks.example.com/";
    webhook_endpoint_shown (&ep, shown, sizeof shown);
    assert_string_equal (shown, "https://hooks.example.com/");
    ep.url = "http://[::1]:9";
    webhook_endpoint_shown (&ep, shown, sizeof shown);
    assert_string_equal (shown, "http://[::1]:9/");
}

/* A capability URL (Zapier's, Pipedream's, n8n's hooks) carries its secret in the path: shown,
 * the path is not there, but something that tells two paths apart is */
static void
test_url_path_not_shown (void **state)
{
    (void) state;
    char shown [256], other [256], secret [] = SECRET, another [] = "whsec_another_secret_0000";
    webhook_endpoint_t ep = { .name = "zap", .url = "https://hooks.zapier.com/hooks/catch/123456/Pq8sKd/",
                              .secret = secret };
    webhook_endpoint_shown (&ep, shown, sizeof shown);
    assert_null (strstr (shown, "Pq8sKd"));
    assert_null (strstr (shown, "123456"));
    assert_null (strstr (shown, "catch"));
    /* HMAC-SHA256 (key SECRET, "ferrule-webhook-url:/hooks/catch/123456/Pq8sKd/"), its first 4
     * bytes, computed independently (Python's hmac): the same on every worker */
    assert_string_equal (shown, "https://hooks.zapier.com/... (94f6b194)");
    /* another path, another query, another secret: another tag */
    ep.url = "https://hooks.zapier.com/hooks/catch/123456/Tz3wVb/";
    webhook_endpoint_shown (&ep, other, sizeof other);
    assert_string_not_equal (shown, other);
    ep.url = "https://hooks.zapier.com/hooks/catch/123456/Pq8sKd/?k=1";
    webhook_endpoint_shown (&ep, other, sizeof other);
    assert_string_not_equal (shown, other);
    assert_null (strstr (other, "k=1"));
    ep.url = "https://hooks.zapier.com/hooks/catch/123456/Pq8sKd/";
    ep.secret = another;
    webhook_endpoint_shown (&ep, other, sizeof other);
    assert_string_not_equal (shown, other);
    /* a query alone is shown as a path is */
    ep.url = "https://n8n.example.com?token=Zq7Xw9";
    webhook_endpoint_shown (&ep, other, sizeof other);
    assert_null (strstr (other, "Zq7Xw9"));
    assert_non_null (strstr (other, "https://n8n.example.com/... ("));
}

/* A secret file is one line: a newline in the middle is refused, not signed with */
static void
test_secret_one_line (void **state)
{
    (void) state;
    char err [512] = "", fmt [512];
    char path [64];
    snprintf (path, sizeof path, "/tmp/ferrule-test-webhook-%d.lines", (int) getpid ());
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs ("first-line-0123456789\nsecond-line-0123456789\n", f);
    fclose (f);
    snprintf (fmt, sizeof fmt, "{\"endpoints\": [{\"name\": \"hook\", \"url\": \"https://x.example/h\", "
              "\"secret_file\": \"%s\"}]}%%.0s", path);
    webhook_set_t *set = parse (fmt, err, sizeof err);
    unlink (path);
    assert_null (set);
    assert_non_null (strstr (err, "\"hook\""));
    assert_non_null (strstr (err, "one line"));
    assert_null (strstr (err, "first-line"));
    assert_null (strstr (err, "second-line"));
    setenv ("FERRULE_TEST_WH_LINES", "first-line-0123456789\rsecond-line-0123456789", 1);
    set = parse ("{\"endpoints\": [{\"name\": \"hook\", \"url\": \"https://x.example/h\", "
                 "\"secret_env\": \"FERRULE_TEST_WH_LINES\"}]}%.0s", err, sizeof err);
    unsetenv ("FERRULE_TEST_WH_LINES");
    assert_null (set);
    assert_non_null (strstr (err, "one line"));
}

/* An operator who puts the secret itself where its variable's name or its file's path goes
 * never sees it in the refusal, which the worker logs */
static void
test_secret_in_place_of_its_name (void **state)
{
    (void) state;
    char err [512] = "";
    unsetenv ("0123456789abcdef0123");
    webhook_set_t *set = parse ("{\"endpoints\": [{\"name\": \"hook\", \"url\": \"https://x.example/h\", "
                                "\"secret_env\": \"0123456789abcdef0123\"}]}%.0s", err, sizeof err);
    if (set)
        webhook_set_destroy (&set);
    assert_null (set);
    assert_null (strstr (err, "0123456789abcdef0123"));
    assert_non_null (strstr (err, "\"hook\""));
    assert_non_null (strstr (err, "secret_env"));
    /* a value a name could be, but for its lower case */
    set = parse ("{\"endpoints\": [{\"name\": \"hook\", \"url\": \"https://x.example/h\", "
                 "\"secret_env\": \"whsec_Zq7Xw9Pk2Lm5\"}]}%.0s", err, sizeof err);
    assert_null (set);
    assert_null (strstr (err, "Zq7Xw9Pk2Lm5"));
    /* and as the file's path */
    set = parse ("{\"endpoints\": [{\"name\": \"hook\", \"url\": \"https://x.example/h\", "
                 "\"secret_file\": \"9f5e37cdc7ea587c7c02062d93283cad\"}]}%.0s", err, sizeof err);
    assert_null (set);
    assert_null (strstr (err, "9f5e37cdc7ea587c7c02062d93283cad"));
    assert_non_null (strstr (err, "\"hook\""));
    assert_non_null (strstr (err, "secret_file"));
}

/* Two endpoints signing with one secret would each accept what was signed for the other (the
 * signature covers the timestamp and body only): one variable for two is refused */
static void
test_secret_env_shared (void **state)
{
    (void) state;
    char err [512] = "";
    setenv ("FERRULE_TEST_WH_SHARED", "shared-0123456789abcdef", 1);
    webhook_set_t *set = parse ("{\"endpoints\": ["
                                "{\"name\": \"one\", \"url\": \"https://a.example/h\", \"secret_env\": \"FERRULE_TEST_WH_SHARED\"},"
                                "{\"name\": \"two\", \"url\": \"https://b.example/h\", \"secret_env\": \"FERRULE_TEST_WH_SHARED\"}]}%.0s",
                                err, sizeof err);
    unsetenv ("FERRULE_TEST_WH_SHARED");
    if (set)
        webhook_set_destroy (&set);
    assert_null (set);
    assert_non_null (strstr (err, "\"two\""));
    assert_non_null (strstr (err, "\"one\""));
    assert_non_null (strstr (err, "secret_env"));
    assert_non_null (strstr (err, "FERRULE_TEST_WH_SHARED"));
    assert_null (strstr (err, "shared-0123"));
}

/* Two endpoints whose secrets are the same value from two places (two files, a file and a
 * variable) are refused as one variable for two is, without showing the value */
static void
test_secret_value_shared (void **state)
{
    (void) state;
    char err [512] = "", path [64], fmt [1024];
    snprintf (path, sizeof path, "/tmp/ferrule-test-webhook-%d.copy", (int) getpid ());
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs ("the-same-0123456789abcdef\n", f);
    fclose (f);
    setenv ("FERRULE_TEST_WH_SAME", "the-same-0123456789abcdef", 1);
    snprintf (fmt, sizeof fmt, "{\"endpoints\": ["
              "{\"name\": \"one\", \"url\": \"https://a.example/h\", \"secret_file\": \"%s\"},"
              "{\"name\": \"two\", \"url\": \"https://b.example/h\", \"secret_env\": \"FERRULE_TEST_WH_SAME\"}]}%%.0s",
              path);
    webhook_set_t *set = parse (fmt, err, sizeof err);
    unsetenv ("FERRULE_TEST_WH_SAME");
    unlink (path);
    if (set)
        webhook_set_destroy (&set);
    assert_null (set);
    assert_non_null (strstr (err, "\"two\""));
    assert_non_null (strstr (err, "\"one\""));
    assert_non_null (strstr (err, "same"));
    assert_null (strstr (err, "0123456789"));
    /* two files of one value: the endpoints file's own secret twice */
    set = parse ("{\"endpoints\": ["
                 "{\"name\": \"one\", \"url\": \"https://a.example/h\", \"secret_file\": \"%1$s\"},"
                 "{\"name\": \"two\", \"url\": \"https://b.example/h\", \"secret_file\": \"%1$s\"}]}",
                 err, sizeof err);
    if (set)
        webhook_set_destroy (&set);
    assert_null (set);
    assert_non_null (strstr (err, "same as endpoint \"one\""));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_sign_vector),
        cmocka_unit_test (test_verify),
        cmocka_unit_test (test_verify_fails_closed),
        cmocka_unit_test (test_backoff),
        cmocka_unit_test (test_body),
        cmocka_unit_test (test_body_refused),
        cmocka_unit_test (test_endpoints_file_syntax_error),
        cmocka_unit_test_setup_teardown (test_endpoints_file, write_secret, remove_secret),
        cmocka_unit_test_setup_teardown (test_endpoint_urls, write_secret, remove_secret),
        cmocka_unit_test (test_url_path_not_shown),
        cmocka_unit_test_setup_teardown (test_secret_one_line, write_secret, remove_secret),
        cmocka_unit_test (test_secret_in_place_of_its_name),
        cmocka_unit_test_setup_teardown (test_secret_env_shared, write_secret, remove_secret),
        cmocka_unit_test_setup_teardown (test_secret_value_shared, write_secret, remove_secret),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
