/* test_oauth.c - token requests on the wire and the classification of provider answers */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include "testexit.h"
#include "catalog.h"
#include "http.h"
#include "mem.h"
#include "oauth.h"

static catalog_t *catalog;

static int
setup (void **state)
{
    char err [512];
    static const char *const names [] = { "BOX", "GOOGLE", "MICROSOFT", "SLACK", "ZOOM",
                                          "HUBSPOT", "GITHUB", "ATLASSIAN", NULL };
    for (int i = 0; names [i]; i++) {
        char var [64], value [64];
        snprintf (var, sizeof var, "FERRULE_%s_CLIENT_ID", names [i]);
        snprintf (value, sizeof value, "%s-client-id", names [i]);
        setenv (var, value, 1);
        snprintf (var, sizeof var, "FERRULE_%s_CLIENT_SECRET", names [i]);
        snprintf (value, sizeof value, "%s-client-secret", names [i]);
        setenv (var, value, 1);
    }
    unsetenv ("FERRULE_DROPBOX_CLIENT_ID");
    unsetenv ("FERRULE_DROPBOX_CLIENT_SECRET");
    catalog = catalog_new (NULL, err, sizeof err);
    if (!catalog)
        fprintf (stderr, "%s\n", err);
    return catalog ? 0 : -1;
}

static int
teardown (void **state)
{
    catalog_destroy (&catalog);
    return 0;
}

static const catalog_provider_t *
provider (const char *name)
{
    const catalog_provider_t *p = catalog_find (catalog, name);
    assert_non_null (p);
    return p;
}

/* Parses body (a C string, or NULL) as the answer of provider name. */
static void
parse (const char *name, long status, const char *retry_after, const char *body,
       oauth_result_t *r)
{
    oauth_parse_token_response (provider (name), status, retry_after, body,
                                body ? strlen (body) : 0, r);
}

static void
test_box_rotation (void **state)
{
    oauth_result_t r;
    parse ("box", 200, NULL,
           "{\"access_token\":\"T9cE5asGnuyYCCqIZFoWjFHvNbvVqHjl\",\"expires_in\":3600,"
           "\"restricted_to\":[],\"refresh_token\":\"J7rxTiWOHMoSC1isKZKBZWizoRXjkQzig5C6jFgCVJ9bU"
           "nsUfGMinKBDLZWP9BgR\",\"token_type\":\"bearer\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_int_equal (r.http_status, 200);
    assert_string_equal (r.access_token, "T9cE5asGnuyYCCqIZFoWjFHvNbvVqHjl");
    assert_string_equal (r.refresh_token,
                         "J7rxTiWOHMoSC1isKZKBZWizoRXjkQzig5C6jFgCVJ9bUnsUfGMinKBDLZWP9BgR");
    assert_int_equal (r.expires_in, 3600);
    assert_string_equal (r.token_type, "bearer");
    assert_null (r.error);
    assert_int_equal (r.retry_after, -1);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_OK);
    oauth_result_clear (&r);
    assert_null (r.access_token);
    assert_null (r.refresh_token);
    assert_int_equal (r.expires_in, -1);
    oauth_result_clear (&r);
}

/* A 200 with a rotated refresh token but no usable access token is a bad answer, and carries
 * the refresh token (the provider may have spent the one sent); without one, nothing. */
static void
test_refresh_token_beside_unusable_access_token (void **state)
{
    oauth_result_t r;
    parse ("box", 200, NULL, "{\"refresh_token\":\"RT-NEW-1\",\"expires_in\":3600}", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_string_equal (r.refresh_token, "RT-NEW-1");
    assert_null (r.access_token);
    assert_non_null (strstr (r.detail, "no access_token"));
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"access_token\":\"\",\"refresh_token\":\"RT-NEW-2\"}", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_string_equal (r.refresh_token, "RT-NEW-2");
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"access_token\":\"\",\"refresh_token\":\"has a space\"}", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_null (r.refresh_token);                      /* not a token either */
    oauth_result_clear (&r);
}

static void
test_google_without_refresh_token (void **state)
{
    oauth_result_t r;
    parse ("google", 200, NULL,
           "{\n  \"access_token\": \"ya29.a0AfH6SMBx\",\n  \"expires_in\": 3599,\n"
           "  \"scope\": \"https://www.googleapis.com/auth/drive.readonly openid\",\n"
           "  \"token_type\": \"Bearer\",\n  \"id_token\": \"eyJhbGciOiJSUzI1NiJ9.e30.sig\"\n}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.access_token, "ya29.a0AfH6SMBx");
    assert_null (r.refresh_token);
    assert_int_equal (r.expires_in, 3599);
    assert_string_equal (r.scope, "https://www.googleapis.com/auth/drive.readonly openid");
    oauth_result_clear (&r);

    /* an empty refresh_token means the same: keep the old one */
    parse ("google", 200, NULL, "{\"access_token\":\"a\",\"refresh_token\":\"\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_null (r.refresh_token);
    assert_int_equal (r.expires_in, -1);
    oauth_result_clear (&r);
    parse ("google", 200, NULL, "{\"access_token\":\"a\",\"refresh_token\":null,\"expires_in\":null}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_null (r.refresh_token);
    assert_int_equal (r.expires_in, -1);
    oauth_result_clear (&r);
}

static void
test_google_invalid_grant (void **state)
{
    oauth_result_t r;
    parse ("google", 400, NULL,
           "{\n  \"error\": \"invalid_grant\",\n  \"error_description\": \"Token has been expired or revoked.\"\n}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error, "invalid_grant");
    assert_string_equal (r.error_description, "Token has been expired or revoked.");
    assert_null (r.access_token);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_NEEDS_RECONNECT);
    assert_int_equal (oauth_kind_status (r.kind, 1), FR_CODE_EXPIRED_OR_USED);
    assert_string_equal (oauth_kind_name (r.kind), "invalid_grant");
    assert_non_null (strstr (r.detail, "invalid_grant"));
    oauth_result_clear (&r);

    /* Atlassian answers 403 */
    parse ("atlassian", 403, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"Unknown or invalid refresh token.\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);
}

static void
test_microsoft_inactivity (void **state)
{
    oauth_result_t r;
    parse ("microsoft", 400, NULL,
           "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS700082: The refresh token has "
           "expired due to inactivity. The token was issued on 2026-01-05T10:00:00.0000000Z and was "
           "inactive for 90.00:00:00.\\r\\nTrace ID: 0b7e5a2c-1f3d-4a5e-9c8b-7d6e5f4a3b2c\\r\\n"
           "Correlation ID: 1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6\\r\\nTimestamp: 2026-04-05 10:00:01Z\","
           "\"error_codes\":[700082],\"timestamp\":\"2026-04-05 10:00:01Z\","
           "\"trace_id\":\"0b7e5a2c-1f3d-4a5e-9c8b-7d6e5f4a3b2c\","
           "\"correlation_id\":\"1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6\","
           "\"error_uri\":\"https://login.microsoftonline.com/error?code=700082\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error, "invalid_grant");
    assert_non_null (r.error_description);
    assert_true (strlen (r.error_description) <= OAUTH_MAX_DESCRIPTION);
    assert_int_equal (strncmp (r.error_description, "AADSTS700082: The refresh token has expired", 43), 0);
    for (const char *c = r.error_description; *c; c++)
        assert_true ((unsigned char) *c >= 0x20 && *c != 0x7f);
    oauth_result_clear (&r);

    /* a redirect URI mismatch at a code exchange is the operator's to fix, not the user's */
    parse ("microsoft", 400, NULL,
           "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS50011: The redirect URI "
           "'https://app.test/cb' specified in the request does not match the redirect URIs "
           "configured for the application.\"}", &r);
    assert_int_equal (r.kind, OAUTH_REDIRECT_MISMATCH);
    assert_int_equal (oauth_kind_status (r.kind, 1), FR_REDIRECT_URI_MISMATCH);
    oauth_result_clear (&r);
    parse ("google", 400, NULL, "{\"error\":\"redirect_uri_mismatch\",\"error_description\":\"Bad Request\"}", &r);
    assert_int_equal (r.kind, OAUTH_REDIRECT_MISMATCH);
    oauth_result_clear (&r);
    /* Dropbox says it in the description of an invalid_grant */
    parse ("box", 400, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"redirect_uri mismatch\"}", &r);
    assert_int_equal (r.kind, OAUTH_REDIRECT_MISMATCH);
    oauth_result_clear (&r);
    /* RFC 6749's wording of invalid_grant, which oauthlib and Doorkeeper (GitLab) send with every
     * one: among its alternatives is "does not match the redirection URI", and an expired code
     * was diagnosed as the operator's redirect URI (support page, no "Try again"), an expired
     * refresh token as a configuration error instead of needs_reconnect */
    parse ("box", 400, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"The provided authorization "
           "grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, "
           "does not match the redirection URI used in the authorization request, or was issued to another "
           "client.\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);
}

static void
test_slack (void **state)
{
    oauth_result_t r;
    parse ("slack", 200, NULL, "{\"ok\":false,\"error\":\"invalid_refresh_token\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error, "invalid_refresh_token");
    oauth_result_clear (&r);

    parse ("slack", 200, NULL,
           "{\"ok\":true,\"app_id\":\"A0KRD7HC3\",\"access_token\":\"xoxe.xoxb-1-MS0yLTIyMTU\","
           "\"expires_in\":43200,\"refresh_token\":\"xoxe-1-My0xLTIyMTU\",\"token_type\":\"bot\","
           "\"scope\":\"chat:write,channels:read\",\"bot_user_id\":\"U0KRQLJ9H\","
           "\"team\":{\"name\":\"Slack Softball Team\",\"id\":\"T9TK3CUKW\"}}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.access_token, "xoxe.xoxb-1-MS0yLTIyMTU");
    assert_string_equal (r.refresh_token, "xoxe-1-My0xLTIyMTU");
    assert_int_equal (r.expires_in, 43200);
    assert_string_equal (r.scope, "chat:write,channels:read");
    oauth_result_clear (&r);

    /* "ok": false without an error code is still an error */
    parse ("slack", 200, NULL, "{\"ok\":false,\"access_token\":\"x\"}", &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    assert_null (r.access_token);
    oauth_result_clear (&r);
}

static void
test_transient_retry_after (void **state)
{
    oauth_result_t r;
    parse ("box", 503, "7", "<html><body>Service Unavailable</body></html>", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 7);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_PROVIDER_UNAVAILABLE);
    oauth_result_clear (&r);

    char date [64];
    time_t when = time (NULL) + 120;
    struct tm tm;
    gmtime_r (&when, &tm);
    strftime (date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    parse ("box", 503, date, "", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_true (r.retry_after >= 115 && r.retry_after <= 120);
    oauth_result_clear (&r);

    parse ("box", 503, NULL, NULL, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, -1);
    oauth_result_clear (&r);

    parse ("box", 429, "120", "{\"error\":\"rate_limited\"}", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 120);
    oauth_result_clear (&r);

    parse ("slack", 429, "30", "{\"ok\":false,\"error\":\"ratelimited\"}", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 30);
    oauth_result_clear (&r);

    /* a 5xx is the server failing, whatever its body claims */
    parse ("box", 500, NULL, "{\"error\":\"invalid_grant\"}", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_string_equal (r.error, "invalid_grant");
    oauth_result_clear (&r);

    parse ("google", 400, "5", "{\"error\":\"temporarily_unavailable\"}", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 5);
    oauth_result_clear (&r);

    parse ("google", 200, NULL, "{\"error\":\"server_error\"}", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    oauth_result_clear (&r);
}

/* The header line as curl hands it to the worker's header callback. */
static void
test_retry_after_header_line (void **state)
{
    char out [16];
    static const char line [] = "Retry-After:  120 \r\n";
    assert_int_equal (http_parse_retry_after (line, strlen (line), out, sizeof out), 1);
    assert_string_equal (out, "120");
    static const char lower [] = "retry-after:\tSun, 06 Nov 1994 08:49:37 GMT\r\n";
    assert_int_equal (http_parse_retry_after (lower, strlen (lower), out, sizeof out), 1);
    assert_string_equal (out, "Sun, 06 Nov 199");       /* cut to the buffer */
    static const char empty [] = "Retry-After:\r\n";
    assert_int_equal (http_parse_retry_after (empty, strlen (empty), out, sizeof out), 1);
    assert_string_equal (out, "");
    strcpy (out, "kept");
    static const char other [] = "Content-Type: application/json\r\n";
    assert_int_equal (http_parse_retry_after (other, strlen (other), out, sizeof out), 0);
    assert_int_equal (http_parse_retry_after ("Retry-Aft", 9, out, sizeof out), 0);
    assert_string_equal (out, "kept");
}

static void
test_retry_after_values (void **state)
{
    const time_t date = 784111777;      /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal (oauth_parse_retry_after ("Sun, 06 Nov 1994 08:49:37 GMT", date - 30), 30);
    assert_int_equal (oauth_parse_retry_after ("Sunday, 06-Nov-94 08:49:37 GMT", date - 30), 30);
    assert_int_equal (oauth_parse_retry_after ("Sun Nov  6 08:49:37 1994", date - 30), 30);
    assert_int_equal (oauth_parse_retry_after ("Sun, 06 Nov 1994 08:49:37 GMT", date + 30), 0);
    assert_int_equal (oauth_parse_retry_after ("Sun, 06 Nov 1994 08:49:37 GMT", date - 86400), 3600);
    assert_int_equal (oauth_parse_retry_after (" 42 ", 0), 42);
    assert_int_equal (oauth_parse_retry_after ("0", 0), 0);
    assert_int_equal (oauth_parse_retry_after ("86400", 0), 3600);
    assert_int_equal (oauth_parse_retry_after ("99999999999999999999999999", 0), 3600);
    assert_int_equal (oauth_parse_retry_after ("-5", 0), -1);
    assert_int_equal (oauth_parse_retry_after ("1.5", 0), -1);
    assert_int_equal (oauth_parse_retry_after ("soon", 0), -1);
    assert_int_equal (oauth_parse_retry_after ("", 0), -1);
    assert_int_equal (oauth_parse_retry_after (NULL, 0), -1);
    assert_int_equal (oauth_parse_retry_after ("Sun, 32 Nov 1994 08:49:37 GMT", 0), -1);
    assert_int_equal (oauth_parse_retry_after ("Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
    assert_int_equal (oauth_parse_retry_after ("Sun, 06 Nov 1994 08:49:37 GMT junk", 0), -1);
}

static void
test_bad_responses (void **state)
{
    oauth_result_t r;
    parse ("box", 200, NULL, "{\"access_token\": \"abc\", ", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_null (r.access_token);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_PROVIDER_BAD_RESPONSE);
    oauth_result_clear (&r);

    parse ("box", 200, NULL, "<!DOCTYPE html><html><head><title>Sign in</title></head></html>", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_non_null (strstr (r.detail, "HTML"));
    oauth_result_clear (&r);

    parse ("box", 200, NULL, "", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_non_null (strstr (r.detail, "empty"));
    oauth_result_clear (&r);
    parse ("box", 200, NULL, NULL, &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    oauth_result_clear (&r);

    /* a form that cannot be read as one is named so, never quoted */
    parse ("github", 200, NULL, "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&access_token=gho_2", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_non_null (strstr (r.detail, "form-encoded"));
    assert_null (strstr (r.detail, "gho_"));
    oauth_result_clear (&r);

    static const char *const bad [] = {
        "[\"access_token\"]",
        "\"access_token\"",
        "{}",
        "{\"token_type\":\"bearer\"}",
        "{\"access_token\":\"\"}",
        "{\"access_token\":12345}",
        "{\"access_token\":\"abc\\r\\nX-Injected: 1\"}",
        "{\"access_token\":\"has space\"}",
        "{\"access_token\":\"a\\u0000b\"}",
        "{\"access_token\":\"a\",\"refresh_token\":42}",
        "{\"access_token\":\"a\",\"refresh_token\":\"r\\n\"}",
        "{\"access_token\":\"a\",\"access_token\":\"b\"}",
        NULL
    };
    for (int i = 0; bad [i]; i++) {
        parse ("box", 200, NULL, bad [i], &r);
        if (r.kind != OAUTH_BAD_RESPONSE)
            fail_msg ("%s: kind %s", bad [i], oauth_kind_name (r.kind));
        assert_null (r.access_token);
        assert_null (r.refresh_token);
        oauth_result_clear (&r);
    }

    /* redirects and other statuses without an OAuth error */
    parse ("box", 302, NULL, "", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    oauth_result_clear (&r);
    parse ("box", 404, NULL, "<html>Not Found</html>", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    oauth_result_clear (&r);

    /* a body over the cap is not parsed */
    size_t big = OAUTH_MAX_BODY + 1;
    char *body = mem_alloc (big + 1);
    memset (body, ' ', big);
    body [0] = '{';
    oauth_parse_token_response (provider ("box"), 200, NULL, body, big, &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    oauth_result_clear (&r);
    mem_free (body);
}

/* A lifetime out of range or not a number is taken as absent, never as a bad answer: the answer's
 * tokens are kept, and with them a refresh token the provider has just rotated (dropping the
 * answer would leave the chain with a spent token). */
/* A form-encoded answer (GitHub's without Accept: application/json; some providers send one whatever
 * Accept says) is read as a JSON one: it was thrown away as provider_bad_response, with the refresh
 * token it may have rotated and the code it spent. */
static void
test_form_encoded_answers (void **state)
{
    oauth_result_t r;
    parse ("github", 200, NULL, "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer",
           &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.access_token, "gho_16C7e42F292c6912E7710c838347Ae178B4a");
    assert_null (r.refresh_token);
    assert_string_equal (r.scope, "repo,gist");
    assert_int_equal (r.expires_in, -1);
    oauth_result_clear (&r);

    /* a GitHub App's expiring user token: a rotated refresh token and a lifetime in digits */
    parse ("github", 200, NULL, "access_token=ghu_abc&expires_in=28800&refresh_token=ghr_def"
           "&refresh_token_expires_in=15811200&scope=&token_type=bearer\r\n", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.refresh_token, "ghr_def");
    assert_int_equal (r.expires_in, 28800);
    assert_false (r.expires_in_ignored);
    oauth_result_clear (&r);

    /* errors, with HTTP 200 as GitHub sends them, or a 400 */
    parse ("github", 200, NULL, "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired."
           "&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_int_equal (oauth_kind_status (r.kind, 1), FR_CODE_EXPIRED_OR_USED);
    assert_string_equal (r.error, "bad_verification_code");
    assert_string_equal (r.error_description, "The code passed is incorrect or expired.");
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "error=invalid_grant&error_description=redirect_uri+mismatch", &r);
    assert_int_equal (r.kind, OAUTH_REDIRECT_MISMATCH);
    oauth_result_clear (&r);
    parse ("box", 503, NULL, "error=temporarily_unavailable", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    oauth_result_clear (&r);

    /* what is no form, or no readable one: a bad answer, whose tokens are not taken */
    static const char *const bad [] = {
        "access_token=a&access_token=b",            /* which is the real one cannot be known */
        "access_token=a&refresh_token=r&refresh_token=s",
        "access_token=a%2",                          /* a bad escape */
        "access_token=a%zz",
        "access_token=a%00b",                        /* a NUL byte */
        "=a&access_token=b",                         /* a pair without a name */
        "access_token",                              /* no pair at all */
        "Bad Request",
        "access_token=a b",
        "access_token=%0Aa",                         /* a control character: no token */
        "access_token=a&refresh_token=%FF",          /* not UTF-8 */
        NULL
    };
    for (int i = 0; bad [i]; i++) {
        parse ("box", 200, NULL, bad [i], &r);
        if (r.kind != OAUTH_BAD_RESPONSE)
            fail_msg ("%s: kind %s", bad [i], oauth_kind_name (r.kind));
        assert_null (r.access_token);
        assert_null (r.refresh_token);
        oauth_result_clear (&r);
    }
    /* another name given twice counts as in JSON: the last value */
    parse ("box", 200, NULL, "access_token=a&scope=x&scope=y&refresh_token=r", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.scope, "y");
    assert_string_equal (r.refresh_token, "r");
    oauth_result_clear (&r);
}

static void
test_bad_expires_in_keeps_the_tokens (void **state)
{
    /* 1e999 and the 20-digit integer are numbers the JSON parser itself cannot hold; 0 and 0.5
     * would make a token that expires as it is stored, refreshed again on every request */
    static const char *const odd [] = { "999999999999", "-1", "\"-1\"", "\"36a\"", "\"\"", "true", "1e300",
                                        "{}", "1e999", "-1e999", "99999999999999999999", "0", "0.5", "\"0\"",
                                        "[1e999, 2]", NULL };
    for (int i = 0; odd [i]; i++) {
        char body [256];
        oauth_result_t r;
        snprintf (body, sizeof body, "{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\",\"expires_in\":%s}",
                  odd [i]);
        parse ("box", 200, NULL, body, &r);
        if (r.kind != OAUTH_OK)
            fail_msg ("expires_in %s: kind %s", odd [i], oauth_kind_name (r.kind));
        assert_string_equal (r.access_token, "at-1");
        assert_string_equal (r.refresh_token, "rt-rotated");
        assert_int_equal (r.expires_in, -1);
        assert_true (r.expires_in_ignored);
        oauth_result_clear (&r);
    }
}

/* Salesforce's instance_url (its api_base_field) is kept when it is a plain https:// URL; any
 * other value is ignored with a reason that never quotes it, and the tokens are kept all the same
 * (a rotated refresh token must not be lost to an odd extra field). A provider that names no
 * api_base_field keeps nothing. */
static void
test_api_base_url (void **state)
{
    oauth_result_t r;
    parse ("salesforce", 200, NULL,
           "{\"access_token\":\"00Dxx!AQ0\",\"refresh_token\":\"5Aep8-rt\",\"signature\":\"x\","
           "\"instance_url\":\"https://acme.my.salesforce.com\",\"id\":\"https://login.salesforce.com/id/1/2\","
           "\"token_type\":\"Bearer\",\"issued_at\":\"1700000000000\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_string_equal (r.api_base_url, "https://acme.my.salesforce.com");
    assert_null (r.api_base_ignored);
    oauth_result_clear (&r);
    assert_null (r.api_base_url);

    /* absent or null: nothing, and nothing to warn about */
    parse ("salesforce", 200, NULL, "{\"access_token\":\"at\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_null (r.api_base_url);
    assert_null (r.api_base_ignored);
    oauth_result_clear (&r);
    parse ("salesforce", 200, NULL, "{\"access_token\":\"at\",\"instance_url\":null}", &r);
    assert_null (r.api_base_url);
    assert_null (r.api_base_ignored);
    oauth_result_clear (&r);

    /* an unusable access token beside a refresh token: the refresh token is stored as a rotation,
     * and the base URL the same answer moved the grant to goes with it (it was dropped) */
    parse ("salesforce", 200, NULL, "{\"access_token\":\"\",\"refresh_token\":\"5Aep8-rt2\","
           "\"instance_url\":\"https://moved.my.salesforce.com\"}", &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_string_equal (r.refresh_token, "5Aep8-rt2");
    assert_non_null (r.api_base_url);
    assert_string_equal (r.api_base_url, "https://moved.my.salesforce.com");
    oauth_result_clear (&r);

    /* box names no api_base_field: the same field is not read */
    parse ("box", 200, NULL, "{\"access_token\":\"at\",\"instance_url\":\"https://acme.example\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_null (r.api_base_url);
    assert_null (r.api_base_ignored);
    oauth_result_clear (&r);

    static const char *const good [] = {
        "https://acme.my.salesforce.com", "HTTPS://Acme.Example:8443/services/data?v=1", NULL
    };
    for (int i = 0; good [i]; i++) {
        char body [512];
        snprintf (body, sizeof body, "{\"access_token\":\"at\",\"instance_url\":\"%s\"}", good [i]);
        parse ("salesforce", 200, NULL, body, &r);
        if (!r.api_base_url || strcmp (r.api_base_url, good [i]) != 0)
            fail_msg ("\"%s\" not kept: %s", good [i], r.api_base_ignored ? r.api_base_ignored : "?");
        oauth_result_clear (&r);
    }

    char longest [300], too_long [300];
    snprintf (longest, sizeof longest, "https://%0247d", 0);          /* 255 bytes */
    snprintf (too_long, sizeof too_long, "https://%0248d", 0);         /* 256 */
    assert_int_equal (strlen (longest), 255);
    assert_null (oauth_api_base_problem (provider ("salesforce"), longest, strlen (longest)));
    static const char *const bad [] = {
        "javascript:alert(1)", "http://evil.example", "http://127.0.0.1.evil.example/", "http://localhost:8080",
        "http://127.0.0.1@evil.example", "https://user:pw@acme.example", "https://@acme.example", "https://",
        "https:///path", "//acme.example", "acme.example", "", "https://acme.example/a b",
        "https://acme.example/\\u00e9", "https://acme.example/\\n", "ftp://acme.example", NULL
    };
    for (int i = 0; bad [i]; i++) {
        char body [512];
        snprintf (body, sizeof body, "{\"access_token\":\"at\",\"refresh_token\":\"rt-rotated\","
                  "\"instance_url\":\"%s\"}", bad [i]);
        parse ("salesforce", 200, NULL, body, &r);
        if (r.kind != OAUTH_OK || r.api_base_url || !r.api_base_ignored)
            fail_msg ("\"%s\": kind %s, kept %s", bad [i], oauth_kind_name (r.kind), r.api_base_url ? "yes" : "no");
        assert_string_equal (r.refresh_token, "rt-rotated");
        assert_null (strstr (r.api_base_ignored, "acme"));      /* the reason never quotes the value */
        assert_null (strstr (r.api_base_ignored, "evil"));
        oauth_result_clear (&r);
    }
    static const char *const not_strings [] = { "3", "true", "{}", "[\"https://acme.example\"]", NULL };
    for (int i = 0; not_strings [i]; i++) {
        char body [512];
        snprintf (body, sizeof body, "{\"access_token\":\"at\",\"instance_url\":%s}", not_strings [i]);
        parse ("salesforce", 200, NULL, body, &r);
        assert_int_equal (r.kind, OAUTH_OK);
        assert_null (r.api_base_url);
        assert_string_equal (r.api_base_ignored, "it is not a string");
        oauth_result_clear (&r);
    }
    char body [600];
    snprintf (body, sizeof body, "{\"access_token\":\"at\",\"refresh_token\":\"rt-2\",\"instance_url\":\"%s\"}",
              too_long);
    parse ("salesforce", 200, NULL, body, &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_null (r.api_base_url);
    assert_string_equal (r.api_base_ignored, "it is longer than 255 bytes");
    assert_string_equal (r.refresh_token, "rt-2");
    oauth_result_clear (&r);
    assert_non_null (oauth_api_base_problem (provider ("salesforce"), "https://a\0b", 11));

    /* plain http:// to this machine only from a provider served here (the fake one of tests and
       local runs): a real provider's answer naming it sent callers' tokens to this machine in
       the clear */
    static const char *const loopback [] = { "http://127.0.0.1:8080", "http://127.0.0.1", "http://127.0.0.1/api", NULL };
    catalog_provider_t local = *provider ("salesforce");
    local.token_url = (char *) "http://127.0.0.1:9/salesforce/token";
    for (int i = 0; loopback [i]; i++) {
        snprintf (body, sizeof body, "{\"access_token\":\"at\",\"instance_url\":\"%s\"}", loopback [i]);
        parse ("salesforce", 200, NULL, body, &r);
        if (r.api_base_url || !r.api_base_ignored)
            fail_msg ("\"%s\" kept from salesforce's answer", loopback [i]);
        oauth_result_clear (&r);
        oauth_parse_token_response (&local, 200, NULL, body, strlen (body), &r);
        if (!r.api_base_url || strcmp (r.api_base_url, loopback [i]) != 0)
            fail_msg ("\"%s\" not kept from a local provider: %s", loopback [i],
                      r.api_base_ignored ? r.api_base_ignored : "?");
        oauth_result_clear (&r);
    }
    assert_non_null (oauth_api_base_problem (&local, "http://127.0.0.1.evil.example/", 30));
    assert_non_null (oauth_api_base_problem (&local, "http://localhost:8080", 21));
    assert_non_null (oauth_api_base_problem (NULL, "http://127.0.0.1", 16));

    /* an error answer keeps nothing */
    parse ("salesforce", 400, NULL, "{\"error\":\"invalid_grant\",\"instance_url\":\"https://acme.example\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_null (r.api_base_url);
    oauth_result_clear (&r);
}

/* A key given twice, or a number out of range elsewhere in the answer, is no reason to drop a
 * refresh token the provider has just rotated: the one sent is spent. */
static void
test_odd_json_keeps_a_rotated_token (void **state)
{
    static const char *const bodies [] = {
        "{\"access_token\":\"at-1\",\"scope\":\"a\",\"scope\":\"a b\",\"refresh_token\":\"rt-rotated\"}",
        "{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\",\"x\":{\"n\":123456789012345678901234}}",
        "{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\",\"n\":[1e999,-2E+99999,3.5e400]}",
        NULL };
    for (int i = 0; bodies [i]; i++) {
        oauth_result_t r;
        parse ("box", 200, NULL, bodies [i], &r);
        if (r.kind != OAUTH_OK)
            fail_msg ("body %d: kind %s (%s)", i, oauth_kind_name (r.kind), r.detail);
        assert_string_equal (r.access_token, "at-1");
        assert_string_equal (r.refresh_token, "rt-rotated");
        oauth_result_clear (&r);
    }
    /* an error answer with a key given twice is still read as an error */
    oauth_result_t r;
    parse ("box", 400, NULL, "{\"error\":\"invalid_grant\",\"error\":\"invalid_grant\",\"n\":1e999}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);

    /* a token's key given twice, once written with an escape, is a token given twice: which is
       the real one cannot be known (the last silently won) */
    static const char *const escaped [] = {
        "{\"access_token\":\"A\",\"access\\u005ftoken\":\"B\",\"expires_in\":60}",
        "{\"access_token\":\"A\",\"refresh_token\":\"R1\",\"refresh\\u005Ftoken\":\"R2\"}",
        NULL };
    for (int i = 0; escaped [i]; i++) {
        parse ("box", 200, NULL, escaped [i], &r);
        if (r.kind == OAUTH_OK || r.access_token || r.refresh_token)
            fail_msg ("escaped body %d: kind %s, access token %s, refresh token %s", i, oauth_kind_name (r.kind),
                      r.access_token ? r.access_token : "none", r.refresh_token ? r.refresh_token : "none");
        oauth_result_clear (&r);
    }

    /* a byte order mark before the object is no reason to lose what it holds */
    parse ("box", 200, NULL, "\xEF\xBB\xBF{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\"}", &r);
    if (r.kind != OAUTH_OK)
        fail_msg ("an answer after a byte order mark: kind %s (%s)", oauth_kind_name (r.kind), r.detail);
    assert_string_equal (r.refresh_token, "rt-rotated");
    oauth_result_clear (&r);

    /* an "error" that says nothing beside good tokens is no error: it made the answer "rejected"
       and dropped the refresh token the provider had rotated */
    static const char *const empty_error [] = {
        "{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\",\"error\":\"\"}",
        "{\"access_token\":\"at-1\",\"refresh_token\":\"rt-rotated\",\"error\":{}}",
        NULL };
    for (int i = 0; empty_error [i]; i++) {
        parse ("box", 200, NULL, empty_error [i], &r);
        if (r.kind != OAUTH_OK || !r.refresh_token || strcmp (r.refresh_token, "rt-rotated") != 0)
            fail_msg ("empty error %d: kind %s (%s)", i, oauth_kind_name (r.kind), r.detail);
        oauth_result_clear (&r);
    }
    /* while one that names a code is an error as before, whatever else the answer holds */
    parse ("box", 200, NULL, "{\"access_token\":\"at-1\",\"error\":\"invalid_grant\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);
}

/* An answer cut off at the body cap is transient when its status is (a big 503 page), with its
 * Retry-After, as it is when the whole body is passed in; any other status makes it a bad answer. */
static void
test_cut_off_answers (void **state)
{
    oauth_result_t r;
    http_response_t resp = { .status = 503, .body = "<html>", .body_len = 6, .retry_after = "120", .too_large = 1 };
    oauth_read_response (provider ("box"), &resp, 65536, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 120);
    oauth_result_clear (&r);
    resp.status = 200;
    oauth_read_response (provider ("box"), &resp, 65536, &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    assert_int_equal (r.retry_after, -1);
    oauth_result_clear (&r);
}

static void
test_expires_in_forms (void **state)
{
    oauth_result_t r;
    parse ("box", 200, NULL, "{\"access_token\":\"a\",\"expires_in\":\"3600\"}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_int_equal (r.expires_in, 3600);
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"access_token\":\"a\",\"expires_in\":3599.0}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_int_equal (r.expires_in, 3599);
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"access_token\":\"a\",\"expires_in\":1}", &r);
    assert_int_equal (r.kind, OAUTH_OK);
    assert_int_equal (r.expires_in, 1);
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"access_token\":\"a\",\"expires_in\":315360000}", &r);  /* 10 years */
    assert_int_equal (r.kind, OAUTH_OK);
    assert_int_equal (r.expires_in, 315360000);
    oauth_result_clear (&r);
}

static void
test_errors_with_200_and_clients (void **state)
{
    oauth_result_t r;
    parse ("google", 200, NULL, "{\"error\":\"invalid_client\",\"error_description\":\"The OAuth client was not found.\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    oauth_result_clear (&r);

    parse ("github", 200, NULL,
           "{\"error\":\"bad_refresh_token\",\"error_description\":\"The refresh token passed is "
           "incorrect or expired.\",\"error_uri\":\"https://docs.github.com\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);

    /* a dead refresh token in any provider's spelling, also at an entry that does not list it (an
     * operator's entry for a second Slack, GitHub or HubSpot app) */
    parse ("google", 400, NULL, "{\"error\":\"bad_refresh_token\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);
    parse ("box", 200, NULL, "{\"ok\":false,\"error\":\"invalid_refresh_token\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "{\"status\":\"BAD_REFRESH_TOKEN\",\"message\":\"missing or unknown refresh token\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_NEEDS_RECONNECT);
    oauth_result_clear (&r);

    parse ("hubspot", 400, NULL,
           "{\"status\":\"BAD_REFRESH_TOKEN\",\"message\":\"missing or unknown refresh token\","
           "\"correlationId\":\"6b0e0b4c-9e0e-4f57-8c8e-0d2c1f0b5d3a\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error, "BAD_REFRESH_TOKEN");
    assert_string_equal (r.error_description, "missing or unknown refresh token");
    oauth_result_clear (&r);
    /* a code HubSpot does not take, at the code exchange: the user starts again */
    parse ("hubspot", 400, NULL, "{\"status\":\"BAD_AUTH_CODE\",\"message\":\"missing or unknown auth code\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_int_equal (oauth_kind_status (r.kind, 1), FR_CODE_EXPIRED_OR_USED);
    oauth_result_clear (&r);
    /* ... also at an entry that lists no invalid_grant_codes (an operator's own for a second app) */
    parse ("box", 400, NULL, "{\"status\":\"EXPIRED_AUTH_CODE\",\"message\":\"auth code expired\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    oauth_result_clear (&r);

    parse ("box", 401, NULL, "{\"error\":\"invalid_client\",\"error_description\":\"The client credentials are invalid\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_INVALID_CLIENT);
    assert_false (oauth_unauthorized_client (&r));
    oauth_result_clear (&r);
    /* the client authenticated but may not use this grant (RFC 6749 5.2): its status is a client
     * error's, but what fixes it is not the credentials */
    parse ("box", 400, NULL, "{\"error\":\"unauthorized_client\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_INVALID_CLIENT);
    assert_true (oauth_unauthorized_client (&r));
    oauth_result_clear (&r);
    parse ("google", 400, NULL, "{\"error\":\"unauthorized_client\",\"error_description\":\"Unauthorized\"}", &r);
    assert_true (oauth_unauthorized_client (&r));
    oauth_result_clear (&r);
    parse ("box", 401, NULL, "", &r);
    assert_false (oauth_unauthorized_client (&r));
    oauth_result_clear (&r);
    parse ("box", 401, NULL, "", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    oauth_result_clear (&r);
    parse ("box", 401, NULL, "<html>Unauthorized</html>", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    oauth_result_clear (&r);

    parse ("box", 400, NULL, "{\"error\":\"invalid_scope\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_SCOPE);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_INVALID_SCOPE);
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "{\"error\":\"invalid_request\",\"error_description\":\"Missing parameter\"}", &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    assert_int_equal (oauth_kind_status (r.kind, 0), FR_CONFIGURATION);
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "{\"error\":\"unsupported_grant_type\"}", &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "{\"error\":{\"code\":\"invalid_grant\",\"message\":\"gone\"}}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error_description, "gone");
    oauth_result_clear (&r);
}

static void
test_error_sanitized (void **state)
{
    oauth_result_t r;
    char body [2048];
    char longdesc [601];
    memset (longdesc, 'd', 600);
    longdesc [600] = '\0';
    snprintf (body, sizeof body,
              "{\"error\":\"weird\\u0001code\\nwith\\u00e9 control and a very long tail that goes past "
              "sixty-four characters\",\"error_description\":\"caf\\u00e9\\u0085 \\u001b[31m%s\"}", longdesc);
    parse ("box", 400, NULL, body, &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    assert_true (strlen (r.error) <= OAUTH_MAX_ERROR);
    for (const char *c = r.error; *c; c++)
        assert_true (*c >= 0x20 && *c < 0x7f);
    assert_int_equal (strncmp (r.error, "weirdcodewith control", 21), 0);
    assert_true (strlen (r.error_description) <= OAUTH_MAX_DESCRIPTION);
    assert_int_equal (strncmp (r.error_description, "caf\xc3\xa9 [31mddd", 13), 0);
    oauth_result_clear (&r);
}

static catalog_provider_t
manual_provider (catalog_auth_method_t method)
{
    static catalog_param_t token_params [] = { { "audience", "api://x y" } };
    static catalog_param_t refresh_params [] = { { "scope", "a b" } };
    catalog_provider_t p;
    memset (&p, 0, sizeof p);
    p.name = "acme";
    p.authorization_url = "https://id.acme.test/authorize";
    p.token_url = "https://id.acme.test/token";
    p.revocation_url = "https://id.acme.test/revoke";
    p.auth_method = method;
    p.scope_separator = " ";
    p.token_params = token_params;
    p.token_param_count = 1;
    p.refresh_params = refresh_params;
    p.refresh_param_count = 1;
    p.client_id = "my client";
    p.client_secret = "s3cr/t+&=:%";
    return p;
}

static void
test_request_encoding (void **state)
{
    catalog_provider_t post = manual_provider (CATALOG_AUTH_POST);
    catalog_provider_t basic = manual_provider (CATALOG_AUTH_BASIC);
    oauth_request_t *r;

    r = oauth_refresh_request_new (&post, "1//0g+x/y=z~_.-");
    assert_non_null (r);
    assert_string_equal (r->url, "https://id.acme.test/token");
    assert_string_equal (r->body,
        "grant_type=refresh_token&refresh_token=1%2F%2F0g%2Bx%2Fy%3Dz~_.-"
        "&audience=api%3A%2F%2Fx%20y&scope=a%20b"
        "&client_id=my%20client&client_secret=s3cr%2Ft%2B%26%3D%3A%25");
    assert_null (r->authorization);
    oauth_request_destroy (&r);
    assert_null (r);
    oauth_request_destroy (&r);

    r = oauth_refresh_request_new (&basic, "1//0g+x/y=z~_.-");
    assert_non_null (r);
    assert_string_equal (r->body,
        "grant_type=refresh_token&refresh_token=1%2F%2F0g%2Bx%2Fy%3Dz~_.-"
        "&audience=api%3A%2F%2Fx%20y&scope=a%20b&client_id=my%20client");
    /* base64 ("my%20client:s3cr%2Ft%2B%26%3D%3A%25") */
    assert_string_equal (r->authorization, "Basic bXklMjBjbGllbnQ6czNjciUyRnQlMkIlMjYlM0QlM0ElMjU=");
    assert_null (strstr (r->body, "client_secret"));
    assert_null (strstr (r->body, "s3cr"));
    oauth_request_destroy (&r);

    r = oauth_code_request_new (&post, "c0de/1", "https://app.test/cb?x=1", "verifier-~._");
    assert_non_null (r);
    assert_string_equal (r->body,
        "grant_type=authorization_code&code=c0de%2F1&redirect_uri=https%3A%2F%2Fapp.test%2Fcb%3Fx%3D1"
        "&code_verifier=verifier-~._&audience=api%3A%2F%2Fx%20y"
        "&client_id=my%20client&client_secret=s3cr%2Ft%2B%26%3D%3A%25");
    oauth_request_destroy (&r);

    r = oauth_code_request_new (&basic, "abc", "https://app.test/cb", NULL);
    assert_non_null (r);
    assert_string_equal (r->body,
        "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp.test%2Fcb"
        "&audience=api%3A%2F%2Fx%20y&client_id=my%20client");
    assert_non_null (r->authorization);
    oauth_request_destroy (&r);

    r = oauth_revocation_request_new (&basic, "tok", "refresh_token");
    assert_non_null (r);
    assert_string_equal (r->url, "https://id.acme.test/revoke");
    assert_string_equal (r->body, "token=tok&token_type_hint=refresh_token&client_id=my%20client");
    assert_non_null (r->authorization);
    oauth_request_destroy (&r);

    /* bytes outside ASCII are percent-encoded one by one, whatever the locale */
    r = oauth_revocation_request_new (&post, "t\xc3\xb6k n", NULL);
    assert_non_null (r);
    assert_string_equal (r->body, "token=t%C3%B6k%20n&client_id=my%20client"
                         "&client_secret=s3cr%2Ft%2B%26%3D%3A%25");
    oauth_request_destroy (&r);

    /* what cannot be built is refused */
    assert_null (oauth_refresh_request_new (&post, ""));
    assert_null (oauth_refresh_request_new (&post, NULL));
    post.client_secret = NULL;
    assert_null (oauth_refresh_request_new (&post, "x"));
    basic.revocation_url = NULL;
    assert_null (oauth_revocation_request_new (&basic, "tok", NULL));
    char *huge = mem_alloc (OAUTH_MAX_INPUT + 2);
    memset (huge, 'x', OAUTH_MAX_INPUT + 1);
    assert_null (oauth_refresh_request_new (&basic, huge));
    mem_free (huge);
}

static void
test_builtin_requests (void **state)
{
    oauth_request_t *r = oauth_refresh_request_new (provider ("box"), "rt");
    assert_non_null (r);
    assert_string_equal (r->url, "https://api.box.com/oauth2/token");
    assert_string_equal (r->body, "grant_type=refresh_token&refresh_token=rt"
                         "&client_id=BOX-client-id&client_secret=BOX-client-secret");
    oauth_request_destroy (&r);

    r = oauth_refresh_request_new (provider ("zoom"), "rt");
    assert_non_null (r);
    assert_string_equal (r->body, "grant_type=refresh_token&refresh_token=rt&client_id=ZOOM-client-id");
    assert_int_equal (strncmp (r->authorization, "Basic ", 6), 0);
    oauth_request_destroy (&r);

    /* no credentials configured for dropbox in this test */
    assert_null (oauth_refresh_request_new (provider ("dropbox"), "rt"));
}

static void
test_authorization_url (void **state)
{
    char *challenge_url = oauth_authorization_url (provider ("google"), NULL,
                                                   "https://app.test/oauth/callback", "st4te",
                                                   NULL, 0,
                                                   "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    assert_non_null (challenge_url);
    assert_int_equal (strncmp (challenge_url, "https://accounts.google.com/o/oauth2/v2/auth?", 45), 0);
    assert_non_null (strstr (challenge_url, "&access_type=offline"));
    assert_non_null (strstr (challenge_url, "&prompt=consent"));
    assert_non_null (strstr (challenge_url, "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    assert_non_null (strstr (challenge_url, "&code_challenge_method=S256"));
    assert_non_null (strstr (challenge_url, "response_type=code"));
    assert_non_null (strstr (challenge_url, "&client_id=GOOGLE-client-id"));
    assert_non_null (strstr (challenge_url, "&redirect_uri=https%3A%2F%2Fapp.test%2Foauth%2Fcallback"));
    assert_non_null (strstr (challenge_url, "&scope=openid%20email"));
    assert_non_null (strstr (challenge_url, "&state=st4te"));
    assert_null (strstr (challenge_url, "secret"));
    mem_free (challenge_url);

    static const char *const scopes [] = { "channels:read", "chat:write" };
    char *url = oauth_authorization_url (provider ("slack"), "explicit-id", "https://app.test/cb",
                                         "s", scopes, 2, NULL);
    assert_string_equal (url, "https://slack.com/oauth/v2/authorize?response_type=code"
                         "&client_id=explicit-id&redirect_uri=https%3A%2F%2Fapp.test%2Fcb"
                         "&scope=channels%3Aread%2Cchat%3Awrite&state=s");
    mem_free (url);

    /* named scopes replace the default ones, not the one Microsoft needs to issue a refresh token */
    static const char *const files [] = { "Files.Read" };
    url = oauth_authorization_url (provider ("microsoft"), NULL, "https://app.test/cb", "s", files, 1, NULL);
    assert_non_null (strstr (url, "&scope=Files.Read%20offline_access&"));
    mem_free (url);
    static const char *const both [] = { "offline_access", "Files.Read" };
    url = oauth_authorization_url (provider ("microsoft"), NULL, "https://app.test/cb", "s", both, 2, NULL);
    assert_non_null (strstr (url, "&scope=offline_access%20Files.Read&"));
    mem_free (url);

    catalog_provider_t p = manual_provider (CATALOG_AUTH_POST);
    catalog_param_t extra [] = { { "audience", "api.example" } };
    p.authorization_url = "https://id.acme.test/authorize?tenant=t1";
    p.authorization_params = extra;
    p.authorization_param_count = 1;
    url = oauth_authorization_url (&p, NULL, "https://app.test/cb", "s", NULL, 0, NULL);
    assert_string_equal (url, "https://id.acme.test/authorize?tenant=t1&response_type=code"
                         "&client_id=my%20client&redirect_uri=https%3A%2F%2Fapp.test%2Fcb&state=s"
                         "&audience=api.example");
    mem_free (url);
    p.client_id = NULL;
    assert_null (oauth_authorization_url (&p, NULL, "https://app.test/cb", "s", NULL, 0, NULL));
}

/* Zoom says what went wrong in "reason" rather than "error_description": that text is what a user
 * reads, cut and cleaned like any description, and it may name a redirect URI mismatch. */
static void
test_zoom_reason (void **state)
{
    oauth_result_t r;
    parse ("zoom", 400, NULL, "{\"reason\":\"Invalid authorization code\",\"error\":\"invalid_grant\"}", &r);
    assert_int_equal (r.kind, OAUTH_INVALID_GRANT);
    assert_string_equal (r.error, "invalid_grant");
    assert_non_null (r.error_description);
    assert_string_equal (r.error_description, "Invalid authorization code");
    oauth_result_clear (&r);

    parse ("zoom", 400, NULL, "{\"reason\":\"Invalid request : Redirect URI mismatch.\",\"error\":\"invalid_request\"}", &r);
    assert_int_equal (r.kind, OAUTH_REDIRECT_MISMATCH);
    oauth_result_clear (&r);

    /* bounded and sanitized as a description is: control characters go, at most 200 bytes */
    char body [1024];
    char reason [401];
    memset (reason, 'x', 400);
    reason [400] = '\0';
    snprintf (body, sizeof body, "{\"error\":\"invalid_grant\",\"reason\":\"bad\\u0007\\u001b[2Jcode %s\"}", reason);
    parse ("zoom", 400, NULL, body, &r);
    assert_non_null (r.error_description);
    assert_true (strlen (r.error_description) <= OAUTH_MAX_DESCRIPTION);
    assert_true (strncmp (r.error_description, "bad[2Jcode xxx", 14) == 0);
    oauth_result_clear (&r);

    /* an error_description, where there is one, comes first */
    parse ("zoom", 400, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"first\",\"reason\":\"second\"}", &r);
    assert_string_equal (r.error_description, "first");
    oauth_result_clear (&r);
}

/* Reads a revocation answer of provider name: status, body (C string), Retry-After. */
static void
revocation (const char *name, long status, const char *body, const char *retry_after, oauth_result_t *r)
{
    http_response_t resp = { .status = status, .body = body, .body_len = body ? strlen (body) : 0,
                             .retry_after = retry_after, .too_large = 0, .error = status ? NULL : "Empty reply",
                             .timed_out = 0 };
    oauth_read_revocation (provider (name), &resp, 65536, r);
}

/* RFC 7009: a 2xx is a revocation whatever its body holds, unless the body says it failed, as
 * Slack's auth.revoke does with HTTP 200 {"ok": false, "error": ...}. */
static void
test_revocation_answers (void **state)
{
    oauth_result_t r;
    static const char *const revoked [] = { "", "{}", "{\"ok\": true}", "<html>ok</html>", "{\"revoked\": true}",
                                            "{\"error\": null}", NULL };
    for (int i = 0; revoked [i]; i++) {
        revocation ("box", 200, revoked [i], NULL, &r);
        assert_int_equal (r.kind, OAUTH_OK);
        oauth_result_clear (&r);
    }
    revocation ("zoom", 204, NULL, NULL, &r);
    assert_int_equal (r.kind, OAUTH_OK);
    oauth_result_clear (&r);

    revocation ("slack", 200, "{\"ok\": false, \"error\": \"invalid_auth\"}", NULL, &r);
    assert_int_not_equal (r.kind, OAUTH_OK);
    assert_int_not_equal (r.kind, OAUTH_TRANSIENT);
    assert_string_equal (r.error, "invalid_auth");
    oauth_result_clear (&r);
    revocation ("box", 200, "{\"error\": \"unsupported_token_type\", \"error_description\": \"no\"}", NULL, &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    assert_string_equal (r.error_description, "no");
    oauth_result_clear (&r);
    revocation ("box", 200, "{\"ok\": false}", NULL, &r);
    assert_int_not_equal (r.kind, OAUTH_OK);
    oauth_result_clear (&r);
    revocation ("zoom", 400, "{\"reason\": \"Invalid Token!\", \"error\": \"invalid_request\"}", NULL, &r);
    assert_int_equal (r.kind, OAUTH_REJECTED);
    assert_string_equal (r.error_description, "Invalid Token!");
    oauth_result_clear (&r);

    /* what is worth trying again: no answer, 5xx, 429, temporarily_unavailable in a 200 */
    revocation ("box", 0, NULL, NULL, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    oauth_result_clear (&r);
    revocation ("box", 503, "", "2", &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_int_equal (r.retry_after, 2);
    oauth_result_clear (&r);
    revocation ("box", 429, "{\"error\": \"rate_limited\"}", NULL, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    oauth_result_clear (&r);
    revocation ("slack", 200, "{\"ok\": false, \"error\": \"ratelimited\"}", NULL, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    oauth_result_clear (&r);
    revocation ("box", 401, "", NULL, &r);
    assert_int_equal (r.kind, OAUTH_INVALID_CLIENT);
    oauth_result_clear (&r);

    /* a success too large to read may hide an error: not taken as a revocation */
    http_response_t big = { .status = 200, .body = "{", .body_len = 1, .retry_after = NULL, .too_large = 1,
                            .error = NULL, .timed_out = 0 };
    oauth_read_revocation (provider ("box"), &big, 65536, &r);
    assert_int_equal (r.kind, OAUTH_BAD_RESPONSE);
    oauth_result_clear (&r);
}

/* No answer: transient, and the detail says whether the request may have reached the provider
 * (a call that timed out after it started) or cannot have (unreachable, or never made: its time
 * ran out in the worker's queue). */
static void
test_no_answer (void **state)
{
    oauth_result_t r;
    http_response_t resp = { .status = 0, .body = "", .error = "Failed to connect to 127.0.0.1 port 9" };
    oauth_read_response (provider ("box"), &resp, 65536, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_string_equal (r.detail, "provider unreachable: Failed to connect to 127.0.0.1 port 9");
    oauth_result_clear (&r);
    resp = (http_response_t) { .status = 0, .body = "", .error = "Operation timed out", .timed_out = 1 };
    oauth_read_response (provider ("box"), &resp, 65536, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_string_equal (r.detail, "provider call timed out: Operation timed out");
    oauth_result_clear (&r);
    resp = (http_response_t) { .status = 0, .body = "", .error = "it waited: nothing was sent", .not_started = 1 };
    oauth_read_response (provider ("box"), &resp, 65536, &r);
    assert_int_equal (r.kind, OAUTH_TRANSIENT);
    assert_string_equal (r.detail, "provider call not made: it waited: nothing was sent");
    oauth_result_clear (&r);
}

static void
test_withhold_quoted_secret (void **state)
{
    oauth_result_t r;
    parse ("zoom", 400, NULL, "{\"reason\":\"Invalid authorization code Xq81_abcDEF-ghijKLMNopqrstuv\","
           "\"error\":\"invalid_grant\"}", &r);
    oauth_result_withhold (&r, "Xq81_abcDEF-ghijKLMNopqrstuvWXYZ0123", "authorization code");
    assert_string_equal (r.error_description, "(description withheld: it quoted the authorization code)");
    assert_string_equal (r.error, "invalid_grant");
    oauth_result_clear (&r);
    parse ("zoom", 400, NULL, "{\"reason\":\"Invalid Token!\",\"error\":\"invalid_grant\"}", &r);
    oauth_result_withhold (&r, "Xq81_abcDEF-ghijKLMNopqrstuvWXYZ0123", "token");
    oauth_result_withhold (&r, NULL, "token");
    oauth_result_withhold (&r, "", "token");
    assert_string_equal (r.error_description, "Invalid Token!");
    oauth_result_clear (&r);
    /* a provider that quotes the token as its error code, or a piece of it from its middle, or
     * cut short: withheld from the code, the description and the detail the logs use (only the
     * description, and only its first 24 characters, were looked at) */
    parse ("box", 400, NULL, "{\"error\":\"Xq81_abcDEF-ghijKLMNopqrstuvWXYZ0123\"}", &r);
    oauth_result_withhold (&r, "Xq81_abcDEF-ghijKLMNopqrstuvWXYZ0123", "refresh token");
    assert_string_equal (r.error, "withheld");
    assert_null (strstr (r.detail, "ghijKLMN"));
    assert_non_null (strstr (r.detail, "withheld"));
    oauth_result_clear (&r);
    parse ("box", 400, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"bad token "
           "...DEF-ghijKLMNopqrstuvWXYZ0123\"}", &r);
    oauth_result_withhold (&r, "Xq81_abcDEF-ghijKLMNopqrstuvWXYZ0123", "refresh token");
    assert_string_equal (r.error_description, "(description withheld: it quoted the refresh token)");
    assert_string_equal (r.error, "invalid_grant");
    oauth_result_clear (&r);
    /* a fragment shorter than that is not a token: "invalid" is in many */
    parse ("box", 400, NULL, "{\"error\":\"invalid_grant\",\"error_description\":\"token invalid\"}", &r);
    oauth_result_withhold (&r, "invalidinvalidinvalidinvalid", "refresh token");
    assert_string_equal (r.error_description, "token invalid");
    oauth_result_clear (&r);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_box_rotation),
        cmocka_unit_test (test_api_base_url),
        cmocka_unit_test (test_refresh_token_beside_unusable_access_token),
        cmocka_unit_test (test_google_without_refresh_token),
        cmocka_unit_test (test_google_invalid_grant),
        cmocka_unit_test (test_microsoft_inactivity),
        cmocka_unit_test (test_slack),
        cmocka_unit_test (test_transient_retry_after),
        cmocka_unit_test (test_retry_after_values),
        cmocka_unit_test (test_retry_after_header_line),
        cmocka_unit_test (test_bad_responses),
        cmocka_unit_test (test_expires_in_forms),
        cmocka_unit_test (test_cut_off_answers),
        cmocka_unit_test (test_form_encoded_answers),
        cmocka_unit_test (test_bad_expires_in_keeps_the_tokens),
        cmocka_unit_test (test_odd_json_keeps_a_rotated_token),
        cmocka_unit_test (test_errors_with_200_and_clients),
        cmocka_unit_test (test_error_sanitized),
        cmocka_unit_test (test_zoom_reason),
        cmocka_unit_test (test_revocation_answers),
        cmocka_unit_test (test_no_answer),
        cmocka_unit_test (test_withhold_quoted_secret),
        cmocka_unit_test (test_request_encoding),
        cmocka_unit_test (test_builtin_requests),
        cmocka_unit_test (test_authorization_url),
    };
    return testexit (cmocka_run_group_tests (tests, setup, teardown));
}
