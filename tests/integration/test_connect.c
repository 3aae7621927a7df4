/* test_connect.c - the connect flow end to end: ferrulectl connect, the browser's visit to the
 * fake provider's /authorize (a libcurl GET that does not follow the redirect), ferrulectl
 * callback with the Location it answered, and what each failure tells the user; then
 * --require-scope, report-scope and disconnect. Replies hold tokens: they are never printed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>
#include "client.h"
#include "clock.h"
#include "itest.h"

#define REDIRECT    "http://127.0.0.1/callback"        /* the fake provider's registered default */
#define GOOGLE_HINT "https://myaccount.google.com/permissions"

static harness_t *h;

/* --- helpers ------------------------------------------------------------------------------- */

static const char *
error_field (const json_t *reply, const char *key)
{
    const char *s = json_string_value (json_object_get (json_object_get (reply, "error"), key));
    return s ? s : "";
}

static const json_t *
integration_of (const json_t *reply)
{
    return json_object_get (reply, "integration");
}

static const char *
istr (const json_t *reply, const char *key)
{
    const char *s = json_string_value (json_object_get (integration_of (reply), key));
    return s ? s : "";
}


static size_t
collect (char *data, size_t size, size_t nmemb, void *userdata)
{
    size_t n = size * nmemb;
    char **buf = userdata;
    size_t have = *buf ? strlen (*buf) : 0;
    if (have + n > (1 << 20))
        return 0;
    *buf = realloc (*buf, have + n + 1);
    memcpy (*buf + have, data, n);
    (*buf) [have + n] = '\0';
    return n;
}

/* The browser's step: GET the authorization URL without following the redirect. Returns the
 * Location (caller frees) or NULL; *status gets the HTTP status, *body (may be NULL) the body. */
static char *
browse (const char *url, long *status, char **body)
{
    char *text = NULL, *location = NULL, *redirect = NULL;
    CURL *curl = curl_easy_init ();
    assert_non_null (curl);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &text);
    assert_int_equal (curl_easy_perform (curl), CURLE_OK);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, status);
    if (curl_easy_getinfo (curl, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect)
        location = strdup (redirect);
    curl_easy_cleanup (curl);
    if (body)
        *body = text;
    else
        free (text);
    return location;
}

/* ferrulectl connect with up to three --scope values (NULL ends them). */
static json_t *
connect_ (const char *id, const char *provider, const char *redirect_uri, int *rc, const char *s1, const char *s2,
          const char *s3)
{
    return harness_ctl (h, rc, "connect", "--integration", id, "--provider", provider, "--redirect-uri", redirect_uri,
                        s1 ? "--scope" : NULL, s1, s2 ? "--scope" : NULL, s2, s3 ? "--scope" : NULL, s3, NULL);
}

/* connect, then the browser; returns the Location the provider redirected to (caller frees). */
static char *
start_flow (const char *id, const char *provider, const char *s1, const char *s2)
{
    int rc;
    long status = 0;
    json_t *c = connect_ (id, provider, REDIRECT, &rc, s1, s2, NULL);
    assert_int_equal (rc, 0);
    const char *url = json_string_value (json_object_get (c, "authorization_url"));
    assert_non_null (url);
    char *location = browse (url, &status, NULL);
    assert_int_equal (status, 302);
    assert_non_null (location);
    assert_true (strncmp (location, REDIRECT "?", strlen (REDIRECT) + 1) == 0);
    json_decref (c);
    return location;
}

static json_t *
callback (const char *location, int *rc)
{
    return harness_ctl (h, rc, "callback", "--url", location, NULL);
}

/* The whole flow, expected to succeed; returns the callback's reply. */
static json_t *
connect_ok (const char *id, const char *provider, const char *s1, const char *s2)
{
    int rc;
    char *location = start_flow (id, provider, s1, s2);
    json_t *r = callback (location, &rc);
    free (location);
    if (rc != 0)
        fail_msg ("callback for %s: exit %d, %s: %s", id, rc, itest_code (r), error_field (r, "message"));
    return r;
}

/* The state of a Location, as a new string. */
static char *
state_of (const char *location)
{
    const char *s = strstr (location, "state=");
    assert_non_null (s);
    s += 6;
    return strndup (s, strcspn (s, "&#"));
}

static long long
sqlf (const char *fmt, ...)
{
    char sql [1024];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (sql, sizeof sql, fmt, ap);
    va_end (ap);
    return harness_sql_int (h, sql);
}

/* --- setup --------------------------------------------------------------------------------- */

/* The harness's providers plus: fakegoogle following Google's rules (family), with its notes,
 * fakebad (a wrong client secret), fakeplain (no PKCE, no revocation endpoint), fakerot (a
 * provider of its own whose settings one test changes: rotating, revoking one token at a time) and
 * fakesf (rotating, its answers' instance_url the API's base URL, as Salesforce's). */
static int
write_providers (void)
{
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!root)
        return -1;
    json_object_set_new (json_object_get (root, "fakegoogle"), "family", json_string ("google"));
    json_object_set_new (json_object_get (root, "fakegoogle"), "notes",
                         json_string ("Like Google: a refresh token only on a full consent screen; the user revokes "
                                      "the app at " GOOGLE_HINT ", then connects again."));
    json_object_set_new (json_object_get (root, "fakegoogle"), "authorization_params",
                         json_pack ("{s:s, s:s}", "access_type", "offline", "prompt", "consent"));
    json_t *bad = json_deep_copy (json_object_get (root, "fakebox"));
    json_t *plain = json_deep_copy (json_object_get (root, "fakebox"));
    json_t *rot = json_deep_copy (json_object_get (root, "fakebox"));
    json_t *sf = json_deep_copy (json_object_get (root, "fakebox"));
    json_t *grant = json_deep_copy (json_object_get (root, "fakebox"));
    char url [256];
    const char *names [] = { "fakebad", "fakeplain", "fakerot", "fakesf", "fakegrant" };
    json_t *entries [] = { bad, plain, rot, sf, grant };
    for (int i = 0; i < 5; i++) {
        snprintf (url, sizeof url, "http://127.0.0.1:%d/%s/authorize", harness_port (h), names [i]);
        json_object_set_new (entries [i], "authorization_url", json_string (url));
        snprintf (url, sizeof url, "http://127.0.0.1:%d/%s/token", harness_port (h), names [i]);
        json_object_set_new (entries [i], "token_url", json_string (url));
        snprintf (url, sizeof url, "http://127.0.0.1:%d/%s/revoke", harness_port (h), names [i]);
        json_object_set_new (entries [i], "revocation_url", json_string (url));
    }
    json_object_set_new (bad, "client_secret", json_string ("not-the-secret"));
    json_object_set_new (plain, "pkce", json_false ());
    json_object_set_new (plain, "revocation_url", json_null ());
    json_object_set_new (root, "fakebad", bad);
    json_object_set_new (root, "fakeplain", plain);
    json_object_set_new (root, "fakerot", rot);
    json_object_set_new (sf, "api_base_field", json_string ("instance_url"));
    json_object_set_new (root, "fakesf", sf);
    /* Google's grant: one per account and OAuth client, which any revocation ends */
    json_object_set_new (grant, "refresh_token_rotation", json_string ("reusable"));
    json_object_set_new (grant, "revocation_ends_grant", json_true ());
    json_object_set_new (root, "fakegrant", grant);
    /* the built-in microsoft entry (its scopes, its offline_access) at the fake provider */
    json_t *ms = json_object ();
    snprintf (url, sizeof url, "http://127.0.0.1:%d/microsoft/authorize", harness_port (h));
    json_object_set_new (ms, "authorization_url", json_string (url));
    snprintf (url, sizeof url, "http://127.0.0.1:%d/microsoft/token", harness_port (h));
    json_object_set_new (ms, "token_url", json_string (url));
    json_object_set_new (root, "microsoft", ms);
    /* the built-in hubspot entry (its invalid_grant_codes) at the fake provider */
    json_t *hub = json_object ();
    snprintf (url, sizeof url, "http://127.0.0.1:%d/hubspot/authorize", harness_port (h));
    json_object_set_new (hub, "authorization_url", json_string (url));
    snprintf (url, sizeof url, "http://127.0.0.1:%d/hubspot/token", harness_port (h));
    json_object_set_new (hub, "token_url", json_string (url));
    json_object_set_new (root, "hubspot", hub);
    /* the built-in salesforce entry (its refresh_token scope) at the fake provider */
    json_t *sfb = json_object ();
    snprintf (url, sizeof url, "http://127.0.0.1:%d/salesforce/authorize", harness_port (h));
    json_object_set_new (sfb, "authorization_url", json_string (url));
    snprintf (url, sizeof url, "http://127.0.0.1:%d/salesforce/token", harness_port (h));
    json_object_set_new (sfb, "token_url", json_string (url));
    snprintf (url, sizeof url, "http://127.0.0.1:%d/salesforce/revoke", harness_port (h));
    json_object_set_new (sfb, "revocation_url", json_string (url));
    json_object_set_new (root, "salesforce", sfb);
    char path [1024];
    snprintf (path, sizeof path, "%s/providers-connect.json", harness_workdir (h));
    int rc = json_dump_file (root, path, JSON_INDENT (2));
    json_decref (root);
    if (rc != 0)
        return -1;
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", path);
    return 0;
}

static int
setup (void **state)
{
    h = harness_new ("connect");
    if (!h || write_providers () != 0)
        return -1;
    /* built-in google and atlassian entries, for their authorization URLs */
    harness_set_env (h, "FERRULE_GOOGLE_CLIENT_ID", "test-google-client");
    harness_set_env (h, "FERRULE_GOOGLE_CLIENT_SECRET", "test-google-secret");
    harness_set_env (h, "FERRULE_ATLASSIAN_CLIENT_ID", "test-atlassian-client");
    harness_set_env (h, "FERRULE_ATLASSIAN_CLIENT_SECRET", "test-atlassian-secret");
    harness_set_env (h, "FERRULE_MICROSOFT_CLIENT_ID", "ferrule-test-client");
    harness_set_env (h, "FERRULE_MICROSOFT_CLIENT_SECRET", "ferrule-test-secret");
    harness_set_env (h, "FERRULE_HUBSPOT_CLIENT_ID", "ferrule-test-client");
    harness_set_env (h, "FERRULE_HUBSPOT_CLIENT_SECRET", "ferrule-test-secret");
    harness_set_env (h, "FERRULE_SALESFORCE_CLIENT_ID", "ferrule-test-client");
    harness_set_env (h, "FERRULE_SALESFORCE_CLIENT_SECRET", "ferrule-test-secret");
    harness_set_env (h, "FERRULE_DROPBOX_CLIENT_ID", NULL);
    harness_set_env (h, "FERRULE_DROPBOX_CLIENT_SECRET", NULL);
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");     /* the revocations' counts are in /metrics */
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_start_worker (h, "w2") != 0
    ||  harness_wait_ready (h, 2, 30000) != 0)
        return -1;
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "require_pkce", 1));
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "require_pkce", 1));
    itest_fake_config (h, "fakegrant", json_pack ("{s:s, s:b}", "mode", "reusable", "revoke_account_grant", 1));
    /* as Microsoft: a refresh token only with offline_access */
    itest_fake_config (h, "microsoft", json_pack ("{s:b, s:[s]}", "require_pkce", 1, "refresh_token_scopes",
                                                  "offline_access"));
    /* as Salesforce: no expires_in in any answer, a refresh token only with the refresh_token scope */
    itest_fake_config (h, "salesforce", json_pack ("{s:s, s:b, s:b, s:[s]}", "mode", "reusable", "require_pkce", 1,
                                                   "omit_expires_in", 1, "refresh_token_scopes", "refresh_token"));
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* ferrule_worker_revocations_total{outcome="<outcome>"}, summed over both workers. */
static double
revocations_metric (const char *outcome)
{
    char series [128];
    double sum = 0;
    snprintf (series, sizeof series, "ferrule_worker_revocations_total{outcome=\"%s\"}", outcome);
    for (int i = 1; i <= 2; i++) {
        char name [8];
        snprintf (name, sizeof name, "w%d", i);
        double v = itest_metric (h, name, series);
        assert_true (v >= 0);
        sum += v;
    }
    return sum;
}

/* --- tests --------------------------------------------------------------------------------- */

static void
test_connect_with_pkce (void **state)
{
    int rc;
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    json_t *c = connect_ ("pkce:box", "fakebox", REDIRECT, &rc, "read", "write", NULL);
    assert_int_equal (rc, 0);
    const char *url = json_string_value (json_object_get (c, "authorization_url"));
    const char *st = json_string_value (json_object_get (c, "state"));
    assert_non_null (url);
    assert_non_null (st);
    assert_non_null (strstr (url, "code_challenge="));
    assert_non_null (strstr (url, "code_challenge_method=S256"));
    assert_non_null (strstr (url, "scope=read%20write"));
    assert_non_null (json_string_value (json_object_get (c, "expires_at")));
    /* the state is stored only as its hash; the verifier only sealed */
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pending_authorizations WHERE state_hash = encode(sha256('%s'), 'hex')"
              " AND length(code_verifier) > 43 AND expires_at > now() + interval '9 minutes'", st);
    assert_int_equal (harness_sql_int (h, sql), 1);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM pending_authorizations WHERE state_hash = '%s'", st);
    assert_int_equal (harness_sql_int (h, sql), 0);

    long status;
    char *location = browse (url, &status, NULL);
    assert_int_equal (status, 302);
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (r, "status"), "active");
    assert_string_equal (istr (r, "provider"), "fakebox");
    assert_true (json_is_false (json_object_get (integration_of (r), "refresh_token_missing")));
    assert_true (json_is_false (json_object_get (r, "reconnected")));
    assert_null (json_object_get (r, "warnings"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 1);

    /* the fake provider saw the verifier (it requires PKCE for fakebox) */
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=fakebox&limit=1", NULL);
    json_t *last = json_array_get (json_object_get (reqs, "requests"), 0);
    assert_string_equal (json_string_value (json_object_get (last, "grant_type")), "authorization_code");
    assert_true (json_is_true (json_object_get (last, "has_code_verifier")));
    assert_string_equal (json_string_value (json_object_get (last, "redirect_uri")), REDIRECT);

    /* the token is there, without a refresh */
    long long refreshes = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "pkce:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_false (json_object_get (t, "refreshed")));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), refreshes);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'pkce:box' AND outcome = 'connected'"), 1);

    /* reloading the callback URL: the state is spent, and nothing is exchanged again */
    json_t *again = callback (location, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (again), "state_invalid");
    assert_non_null (strstr (error_field (again, "message"), "already used"));
    assert_non_null (strstr (error_field (again, "hint"), "Connect"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 1);

    free (location);
    json_decref (c);
    json_decref (r);
    json_decref (reqs);
    json_decref (t);
    json_decref (again);
}

/* A connect's token is sized by the code exchange's expires_in: a fresh 120 s token is served
 * as it is, not refreshed at once as if it lived an hour (the refresh-ahead window of an unknown
 * lifetime) */
static void
test_connect_short_lived_token_not_refreshed (void **state)
{
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 120));
    json_t *c = connect_ ("short:box", "fakebox", REDIRECT, &rc, "read", NULL, NULL);
    assert_int_equal (rc, 0);
    long status;
    char *location = browse (json_string_value (json_object_get (c, "authorization_url")), &status, NULL);
    assert_int_equal (status, 302);
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 0);
    assert_int_equal (sqlf ("SELECT access_lifetime_s FROM integrations WHERE id = 'short:box'"), 120);
    long long refreshes = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "short:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_false (json_object_get (t, "refreshed")));
    usleep (500000);                    /* room for a background refresh, if one had started */
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), refreshes);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 3600));
    free (location);
    json_decref (c);
    json_decref (r);
    json_decref (t);
}

static void
test_authorization_urls_of_real_providers (void **state)
{
    int rc;
    json_t *g = connect_ ("urls:google", "google", "https://app.example.com/oauth/callback", &rc,
                          "https://www.googleapis.com/auth/drive.readonly", NULL, NULL);
    assert_int_equal (rc, 0);
    const char *url = json_string_value (json_object_get (g, "authorization_url"));
    assert_true (strncmp (url, "https://accounts.google.com/o/oauth2/v2/auth?", 45) == 0);
    assert_non_null (strstr (url, "access_type=offline"));
    assert_non_null (strstr (url, "prompt=consent"));
    assert_non_null (strstr (url, "code_challenge_method=S256"));
    assert_non_null (strstr (url, "client_id=test-google-client"));
    assert_non_null (strstr (url, "redirect_uri=https%3A%2F%2Fapp.example.com%2Foauth%2Fcallback"));
    assert_non_null (strstr (url, "scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive.readonly"));

    json_t *a = connect_ ("urls:atlassian", "atlassian", "https://app.example.com/oauth/callback", &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    url = json_string_value (json_object_get (a, "authorization_url"));
    assert_true (strncmp (url, "https://auth.atlassian.com/authorize?", 37) == 0);
    assert_non_null (strstr (url, "audience=api.atlassian.com"));
    assert_non_null (strstr (url, "prompt=consent"));
    assert_non_null (strstr (url, "scope=offline_access%20read%3Ame"));      /* the default scopes */
    assert_null (strstr (url, "code_challenge"));                          /* pkce false in the catalog */
    const json_t *scopes = json_object_get (a, "scopes");
    assert_int_equal (json_array_size (scopes), 2);

    /* no client credentials: configuration, naming the variable to set */
    json_t *d = connect_ ("urls:dropbox", "dropbox", "https://app.example.com/oauth/callback", &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (d), "configuration");
    assert_non_null (strstr (error_field (d, "message"), "FERRULE_DROPBOX_CLIENT_"));
    /* unknown provider; a redirect URI that is not absolute */
    json_t *u = connect_ ("urls:nobody", "no-such-provider", REDIRECT, &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (u), "configuration");
    json_t *b = connect_ ("urls:bad", "fakebox", "/callback", &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (b), "bad_request");
    assert_non_null (strstr (error_field (b, "message"), "--redirect-uri"));
    json_decref (g);
    json_decref (a);
    json_decref (d);
    json_decref (u);
    json_decref (b);
}

static void
test_expired_state (void **state)
{
    int rc;
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    char *location = start_flow ("late:box", "fakebox", NULL, NULL);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET expires_at = now() - interval '1 second'"
                                      " WHERE integration_id = 'late:box'"), 0);
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "state_invalid");
    assert_non_null (strstr (error_field (r, "message"), "expired"));
    assert_non_null (strstr (error_field (r, "message"), "late:box"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);
    /* a state nobody issued */
    json_t *u = callback (REDIRECT "?code=abc&state=not-a-state-we-issued", &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (u), "state_invalid");
    /* a URL without state: refused by ferrulectl before sending */
    json_t *n = callback (REDIRECT "?code=abc", &rc);
    assert_int_equal (rc, 2);
    assert_non_null (strstr (error_field (n, "message"), "state"));
    free (location);
    json_decref (r);
    json_decref (u);
    json_decref (n);
}

static void
test_code_expired_or_used (void **state)
{
    int rc;
    /* expired: the fake provider's codes live 1 s */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "code_ttl", 1));
    char *location = start_flow ("slow:box", "fakebox", NULL, NULL);
    sleep (2);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "code_ttl", 60));
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "code_expired_or_used");
    assert_non_null (strstr (error_field (r, "message"), "fakebox"));
    assert_non_null (strstr (error_field (r, "message"), "expired"));
    assert_non_null (strstr (error_field (r, "hint"), "start again from Connect"));
    assert_non_null (strstr (error_field (r, "hint"), "reload"));
    assert_non_null (strstr (error_field (r, "hint"), "cookies"));     /* the guide's third step */
    assert_int_equal (sqlf ("SELECT count(*) FROM pending_authorizations WHERE integration_id = 'slow:box'"
                            " AND outcome = 'code_expired_or_used'"), 1);

    /* used: a code already exchanged, brought back with another connect's state */
    json_t *first = connect_ok ("twice:box", "fakebox", NULL, NULL);
    json_decref (first);
    json_t *reqs = NULL;
    char *used = start_flow ("twice2:box", "fakebox", NULL, NULL);
    json_t *ok = callback (used, &rc);
    assert_int_equal (rc, 0);
    char *other = start_flow ("twice3:box", "fakebox", NULL, NULL);
    char *st = state_of (other);
    const char *code = strstr (used, "code=") + 5;
    char crafted [2048];
    snprintf (crafted, sizeof crafted, REDIRECT "?code=%.*s&state=%s", (int) strcspn (code, "&"), code, st);
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    json_t *u = callback (crafted, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (u), "code_expired_or_used");
    assert_non_null (strstr (error_field (u, "message"), "already used"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);
    free (location);
    free (used);
    free (other);
    free (st);
    json_decref (r);
    json_decref (ok);
    json_decref (u);
    json_decref (reqs);
}

/* GitHub answers a token request in form encoding ("access_token=...&scope=repo&token_type=bearer")
 * unless the request asks for JSON, and some providers answer so whatever Accept says. Such an answer
 * was thrown away as provider_bad_response: the code exchange spent its code for nothing, a refresh at
 * a rotating provider lost the refresh token it had rotated (the one sent is spent), and a refused
 * code was not told apart from a proxy's page. It is read as a JSON answer is now. */
static void
test_form_encoded_answers (void **state)
{
    int rc;
    itest_fake_config (h, "fakerot", json_pack ("{s:b}", "form_answers", 1));
    long long reuses = itest_stat (h, "fakerot", "reuse_detections");
    char *location = start_flow ("form:rot", "fakerot", "read", "write");
    json_t *r = callback (location, &rc);
    if (rc != 0)
        fail_msg ("a form-encoded code exchange answer: \"%s\" (exit %d): %s", itest_code (r), rc,
                  error_field (r, "message"));
    assert_true (json_is_false (json_object_get (integration_of (r), "refresh_token_missing")));
    assert_null (json_object_get (r, "warnings"));      /* its scope and expires_in were read too */
    /* two rotations, each answered in form encoding: the second presents the first's new token */
    for (int i = 0; i < 2; i++) {
        json_t *f = harness_ctl (h, &rc, "refresh", "--integration", "form:rot", NULL);
        if (rc != 0)
            fail_msg ("refresh %d: \"%s\" (exit %d): %s", i + 1, itest_code (f), rc, error_field (f, "message"));
        json_decref (f);
    }
    assert_int_equal (itest_stat (h, "fakerot", "reuse_detections"), reuses);
    /* a code already used, brought back with another connect's state: the provider's form-encoded
     * invalid_grant is the guide's "invalid grant while connecting" */
    char *other = start_flow ("form2:rot", "fakerot", NULL, NULL);
    char *st = state_of (other);
    const char *code = strstr (location, "code=") + 5;
    char crafted [2048];
    snprintf (crafted, sizeof crafted, REDIRECT "?code=%.*s&state=%s", (int) strcspn (code, "&"), code, st);
    json_t *u = callback (crafted, &rc);
    itest_fake_config (h, "fakerot", json_pack ("{s:b}", "form_answers", 0));
    if (rc != 4 || strcmp (itest_code (u), "code_expired_or_used") != 0)
        fail_msg ("a used code refused in form encoding: \"%s\" (exit %d): %s", itest_code (u), rc,
                  error_field (u, "message"));
    assert_non_null (strstr (error_field (u, "message"), "already used"));
    free (location);
    free (other);
    free (st);
    json_decref (r);
    json_decref (u);
}

/* HubSpot's answer to a code it does not take (used, or expired): 400 with BAD_AUTH_CODE or
 * EXPIRED_AUTH_CODE in its "status" field, at the code exchange of a flow through provider (ids
 * codeN:suffix). The guide's "invalid grant while connecting", where the user starts again. */
static void
hubspot_codes_refused (const char *provider, const char *suffix)
{
    static const char *const codes [] = { "BAD_AUTH_CODE", "EXPIRED_AUTH_CODE" };
    for (size_t i = 0; i < sizeof codes / sizeof codes [0]; i++) {
        int rc;
        char id [64];
        snprintf (id, sizeof id, "code%zu:%s", i, suffix);
        char *location = start_flow (id, provider, NULL, NULL);
        json_t *f = json_pack ("{s:s, s:s, s:s, s:i}", "provider", provider, "kind", "status_error", "error", codes [i],
                               "status", 400);
        json_decref (harness_fake (h, "POST", "/admin/faults", f));
        json_decref (f);
        json_t *r = callback (location, &rc);
        if (strcmp (itest_code (r), "code_expired_or_used") != 0 || rc != 4)
            fail_msg ("HubSpot's %s at the code exchange through \"%s\": \"%s\" (exit %d), not code_expired_or_used "
                      "(exit 4)", codes [i], provider, itest_code (r), rc);
        assert_non_null (strstr (error_field (r, "message"), codes [i]));
        assert_non_null (strstr (error_field (r, "hint"), "start again from Connect"));
        free (location);
        json_decref (r);
    }
}

/* At the built-in entry. It was an unknown OAuth error, "configuration" (exit 6): the operator's. */
static void
test_hubspot_code_refused (void **state)
{
    hubspot_codes_refused ("hubspot", "hubspot");
}

/* The same answers at an entry that lists no invalid_grant_codes (an operator's own entry for a
 * second HubSpot app; fakebox here), as a dead refresh token's BAD_REFRESH_TOKEN is recognised at
 * any entry (it_failures test_dead_token_codes): they were "configuration" there too. */
static void
test_hubspot_code_refused_at_any_entry (void **state)
{
    hubspot_codes_refused ("fakebox", "hub2");
}

static void
test_access_denied (void **state)
{
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 1));
    char *location = start_flow ("denied:box", "fakebox", NULL, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 0));
    assert_non_null (strstr (location, "error=access_denied"));
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "access_denied");
    assert_non_null (strstr (error_field (r, "message"), "declined"));
    assert_non_null (strstr (error_field (r, "hint"), "approve"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);
    free (location);
    json_decref (r);
}

/* OpenID Connect's login_required, consent_required and interaction_required in the redirect
 * ask the user to sign in or approve at the provider: theirs to do again, not the operator's.
 * They were answered "configuration" (exit 6, the support page, no "Try again"). */
static void
test_sign_in_required_is_the_users (void **state)
{
    static const char *const codes [] = { "login_required", "consent_required", "interaction_required" };
    for (size_t i = 0; i < sizeof codes / sizeof codes [0]; i++) {
        int rc;
        char id [32], url [512];
        snprintf (id, sizeof id, "signin%zu:box", i);
        char *location = start_flow (id, "fakebox", NULL, NULL);
        char *st = state_of (location);
        snprintf (url, sizeof url, REDIRECT "?state=%s&error=%s", st, codes [i]);
        json_t *r = callback (url, &rc);
        if (rc != 4)
            fail_msg ("%s: exit %d, %s", codes [i], rc, itest_code (r));
        assert_string_equal (itest_code (r), "access_denied");
        assert_non_null (strstr (error_field (r, "message"), codes [i]));
        assert_non_null (strstr (error_field (r, "hint"), "sign in"));
        json_decref (r);
        free (st);
        free (location);
    }
}

static void
test_redirect_uri_mismatch (void **state)
{
    int rc;
    long status = 0;
    char *body = NULL;
    /* at the authorize step the provider shows its own error page: there is no redirect, so
     * nothing comes back to the service; the user sees the provider's error */
    json_t *c = connect_ ("mismatch1:box", "fakebox", "http://127.0.0.1/not-registered", &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    char *location = browse (json_string_value (json_object_get (c, "authorization_url")), &status, &body);
    assert_int_equal (status, 400);
    assert_null (location);
    assert_non_null (body);
    assert_non_null (strstr (body, "redirect_uri_mismatch"));

    /* a provider that redirects with error=redirect_uri_mismatch */
    char *loc = start_flow ("mismatch2:box", "fakebox", NULL, NULL);
    char *st = state_of (loc);
    char crafted [1024];
    snprintf (crafted, sizeof crafted, REDIRECT "?error=redirect_uri_mismatch&error_description=Bad+redirect+URI&state=%s", st);
    json_t *r = callback (crafted, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "redirect_uri_mismatch");
    assert_non_null (strstr (error_field (r, "message"), REDIRECT));
    assert_non_null (strstr (error_field (r, "message"), "fakebox"));
    const json_t *detail = json_object_get (json_object_get (r, "error"), "detail");
    assert_string_equal (json_string_value (json_object_get (detail, "provider_error_description")), "Bad redirect URI");

    /* at the exchange: the redirect URI sent with the code differs from the authorization's */
    char *loc3 = start_flow ("mismatch3:box", "fakebox", NULL, NULL);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET redirect_uri = 'http://127.0.0.1/other-callback'"
                                      " WHERE integration_id = 'mismatch3:box'"), 0);
    json_t *x = callback (loc3, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (x), "redirect_uri_mismatch");
    const char *msg = error_field (x, "message");
    assert_non_null (strstr (msg, "http://127.0.0.1/other-callback"));
    assert_non_null (strstr (msg, "fakebox"));
    assert_non_null (strstr (msg, "registered in the provider's OAuth app"));
    assert_non_null (strstr (error_field (x, "hint"), "register"));
    detail = json_object_get (json_object_get (x, "error"), "detail");
    assert_string_equal (json_string_value (json_object_get (detail, "provider")), "fakebox");
    assert_string_equal (json_string_value (json_object_get (detail, "redirect_uri_sent")), "http://127.0.0.1/other-callback");
    assert_string_equal (json_string_value (json_object_get (detail, "provider_error")), "invalid_grant");
    assert_non_null (strstr (json_string_value (json_object_get (detail, "provider_error_description")), "redirect_uri"));
    /* the operator finds it in the log, and doctor explains it */
    assert_true (itest_workdir_contains (h, "connect failed: redirect_uri_mismatch"));
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "mismatch3:box", NULL);
    assert_int_equal (rc, 0);
    const json_t *dg = json_object_get (d, "diagnosis");
    assert_string_equal (json_string_value (json_object_get (dg, "code")), "redirect_uri_mismatch");
    assert_non_null (strstr (json_string_value (json_object_get (dg, "cause")), "http://127.0.0.1/other-callback"));
    /* it never connected: status knows nothing of it */
    json_t *s3 = harness_ctl (h, &rc, "status", "--integration", "mismatch3:box", NULL);
    assert_int_equal (rc, 3);
    json_decref (s3);
    free (location);
    free (body);
    free (loc);
    free (loc3);
    free (st);
    json_decref (c);
    json_decref (r);
    json_decref (x);
    json_decref (d);
}

static void
test_invalid_client (void **state)
{
    int rc;
    char *location = start_flow ("badsecret:box", "fakebad", NULL, NULL);
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "invalid_client");
    assert_non_null (strstr (error_field (r, "message"), "fakebad"));
    assert_non_null (strstr (error_field (r, "hint"), "FERRULE_FAKEBAD_CLIENT_SECRET"));
    free (location);
    json_decref (r);
}

/* The doctor's verdict for id, its cause and its steps as one text (caller frees). */
static char *
doctor_text (const char *id, const char *code)
{
    int rc;
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", id, NULL);
    assert_int_equal (rc, 0);
    const json_t *dg = json_object_get (d, "diagnosis");
    if (strcmp (json_string_value (json_object_get (dg, "code")) ?: "", code) != 0)
        fail_msg ("doctor of %s: %s, not %s", id, json_string_value (json_object_get (dg, "code")), code);
    char *steps = json_dumps (json_object_get (dg, "what_to_do"), 0);
    size_t n = strlen (steps) + 2048;
    char *text = malloc (n);
    snprintf (text, n, "%s | %s", json_string_value (json_object_get (dg, "cause")), steps);
    free (steps);
    json_decref (d);
    return text;
}

/* An OAuth client the provider refuses before any secret is sent, or accepts and refuses the grant
 * (RFC 6749 5.2's unauthorized_client), is not a rejected secret: the answer said to check the
 * client id and secret, and doctor that a secret was rotated or mistyped and that no reconnect is
 * needed, sending the operator after a secret the provider never saw or had accepted. */
static void
test_client_refused_is_not_always_the_secret (void **state)
{
    int rc;
    /* at the authorization step (a redirect with error=unauthorized_client): no secret was sent */
    char *location = start_flow ("unauth1:box", "fakebox", NULL, NULL);
    char *st = state_of (location);
    char url [1024];
    snprintf (url, sizeof url, REDIRECT "?state=%s&error=unauthorized_client&error_description=the+client+may+not+"
              "use+this+flow", st);
    json_t *r = callback (url, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "invalid_client");
    if (strstr (error_field (r, "hint"), "secret") || !strstr (error_field (r, "hint"), "FERRULE_FAKEBOX_CLIENT_ID"))
        fail_msg ("refused at the authorization step, the hint: %s", error_field (r, "hint"));
    char *text = doctor_text ("unauth1:box", "invalid_client");
    if (strstr (text, "mistyped secret") || strstr (text, "No reconnect is needed") || !strstr (text, "authorization step"))
        fail_msg ("refused at the authorization step, doctor: %s", text);
    free (text);
    free (st);
    free (location);
    json_decref (r);

    /* at the code exchange, answered unauthorized_client: the secret was accepted */
    location = start_flow ("unauth2:box", "fakebox", NULL, NULL);
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i}", "provider", "fakebox", "kind", "oauth_error", "error",
                           "unauthorized_client", "status", 400);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    r = callback (location, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "invalid_client");
    assert_non_null (strstr (error_field (r, "message"), "unauthorized_client"));
    if (strstr (error_field (r, "hint"), "id and secret") || !strstr (error_field (r, "hint"), "authorization code grant"))
        fail_msg ("unauthorized_client at the code exchange, the hint: %s", error_field (r, "hint"));
    text = doctor_text ("unauth2:box", "invalid_client");
    if (strstr (text, "mistyped secret") || strstr (text, "No reconnect is needed")
    ||  !strstr (text, "authorization code grant"))
        fail_msg ("unauthorized_client at the code exchange, doctor: %s", text);
    free (text);
    free (location);
    json_decref (r);

    /* a secret refused at the code exchange is still the secret */
    location = start_flow ("unauth3:box", "fakebad", NULL, NULL);
    r = callback (location, &rc);
    assert_int_equal (rc, 6);
    assert_non_null (strstr (error_field (r, "hint"), "FERRULE_FAKEBAD_CLIENT_SECRET"));
    text = doctor_text ("unauth3:box", "invalid_client");
    assert_non_null (strstr (text, "mistyped secret"));
    assert_null (strstr (text, "No reconnect is needed"));
    free (text);
    free (location);
    json_decref (r);
}

static void
test_invalid_scope (void **state)
{
    int rc;
    char *loc = start_flow ("scope:box", "fakebox", "read", "no-such-scope");
    char *st = state_of (loc);
    char crafted [1024];
    snprintf (crafted, sizeof crafted, REDIRECT "?error=invalid_scope&error_description=unknown%%20scope&state=%s", st);
    json_t *r = callback (crafted, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "invalid_scope");
    assert_non_null (strstr (error_field (r, "message"), "no-such-scope"));
    assert_non_null (strstr (error_field (r, "message"), "unknown scope"));
    free (loc);
    free (st);
    json_decref (r);
}

/* A provider that gives the token neither a lifetime nor a refresh token (GitHub OAuth Apps, whose
 * tokens never expire): the connect succeeds with a warning, the token is served without an end,
 * and only a caller's report that it was rejected ends it. The code before took it to last an hour
 * and answered no_refresh_token from then on. */
static void
test_token_without_expiry (void **state)
{
    int rc;
    itest_fake_config (h, "fakeplain", json_pack ("{s:b, s:b}", "issue_refresh_token", 0, "omit_expires_in", 1));
    char *location = start_flow ("forever:plain", "fakeplain", NULL, NULL);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "fakeplain", json_pack ("{s:b, s:b}", "issue_refresh_token", 1, "omit_expires_in", 0));
    if (rc != 0)
        fail_msg ("callback: \"%s\" (exit %d)", itest_code (r), rc);
    json_t *warnings = json_object_get (r, "warnings"), *wv;
    size_t i;
    int warned = 0;
    json_array_foreach (warnings, i, wv)
        warned |= strcmp (json_string_value (json_object_get (wv, "code")) ?: "", "no_refresh_token") == 0;
    assert_true (warned);
    long long refreshes = itest_stat (h, "fakeplain", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "forever:plain", NULL);
    assert_int_equal (rc, 0);
    const char *expires_at = json_string_value (json_object_get (t, "expires_at"));   /* RFC 3339 */
    assert_non_null (expires_at);
    assert_true (atoi (expires_at) >= 2031);
    /* healthy as it is: no refresh token is normal for a token that does not expire (doctor said
     * no_refresh_token, "once the first access token expired", with Google's offline-access steps) */
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "forever:plain", NULL);
    assert_int_equal (rc, 0);
    const json_t *dg = json_object_get (d, "diagnosis");
    if (strcmp (json_string_value (json_object_get (dg, "code")), "healthy") != 0)
        fail_msg ("a token that does not expire: doctor says %s", json_string_value (json_object_get (dg, "code")));
    char *dump = json_dumps (dg, 0);
    assert_non_null (strstr (dump, "does not expire and there is no refresh token"));
    free (dump);
    /* a caller whose upstream call was refused with it: access was revoked at the provider, and
     * nothing can renew it (the reply said no_refresh_token, "expires at 2036, sooner than asked") */
    const char *token = json_string_value (json_object_get (t, "access_token"));
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "forever:plain", "--reject", token, NULL);
    if (strcmp (itest_code (t2), "needs_reconnect") != 0)
        fail_msg ("a rejected token that does not expire: %s \"%s\"", itest_code (t2), error_field (t2, "message"));
    assert_int_equal (rc, 4);
    assert_non_null (strstr (error_field (t2, "message"), "rejected"));
    assert_null (strstr (error_field (t2, "message"), "sooner than asked"));
    assert_non_null (strstr (error_field (t2, "hint"), "disconnect the integration and connect it again"));
    assert_null (strstr (error_field (t2, "hint"), GOOGLE_HINT));
    assert_int_equal (itest_stat (h, "fakeplain", "refresh_calls"), refreshes);
    /* it stays so for every caller, and doctor gives the guide's "token refresh failed" remedy */
    json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "forever:plain", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t3), "needs_reconnect");
    json_t *d2 = harness_ctl (h, &rc, "doctor", "--integration", "forever:plain", NULL);
    assert_int_equal (rc, 0);
    dg = json_object_get (d2, "diagnosis");
    assert_string_equal (json_string_value (json_object_get (dg, "code")), "needs_reconnect");
    const char *cause = json_string_value (json_object_get (dg, "cause"));
    assert_non_null (strstr (cause, "revoked the app's access"));
    assert_null (strstr (cause, "offline"));
    dump = json_dumps (json_object_get (dg, "what_to_do"), 0);
    assert_non_null (strstr (dump, "Disconnect the integration"));
    assert_null (strstr (dump, GOOGLE_HINT));
    free (dump);
    free (location);
    json_decref (r);
    json_decref (t);
    json_decref (t2);
    json_decref (t3);
    json_decref (d);
    json_decref (d2);
}

static void
test_no_refresh_token (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    char *location = start_flow ("offline:google", "fakegoogle", NULL, NULL);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "no_refresh_token");
    assert_non_null (strstr (error_field (r, "message"), "offline:google"));
    assert_non_null (strstr (error_field (r, "hint"), GOOGLE_HINT));
    /* stored all the same, and flagged */
    assert_string_equal (istr (r, "status"), "active");
    assert_true (json_is_true (json_object_get (integration_of (r), "refresh_token_missing")));

    long long refreshes = itest_stat (h, "fakegoogle", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "offline:google", NULL);
    assert_int_equal (rc, 0);
    /* once the access token is spent: no_refresh_token, and no provider call */
    itest_expire (h, "offline:google");
    usleep (200000);
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "offline:google", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t2), "no_refresh_token");
    assert_non_null (strstr (error_field (t2, "hint"), GOOGLE_HINT));
    json_t *f = harness_ctl (h, &rc, "refresh", "--integration", "offline:google", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (f), "no_refresh_token");
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), refreshes);

    /* connecting again with a refresh token clears it */
    json_t *again = connect_ok ("offline:google", "fakegoogle", NULL, NULL);
    assert_true (json_is_true (json_object_get (again, "reconnected")));
    assert_true (json_is_false (json_object_get (integration_of (again), "refresh_token_missing")));
    itest_expire (h, "offline:google");
    usleep (200000);
    json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "offline:google", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), refreshes + 1);
    free (location);
    json_decref (r);
    json_decref (t);
    json_decref (t2);
    json_decref (f);
    json_decref (again);
    json_decref (t3);
}

/* Salesforce never says how long an access token lasts (its answers carry no expires_in), and
 * issues a refresh token only when the grant holds the refresh_token scope (the connected app's
 * selected scopes may leave it out). A connect that got no refresh token there is the guide's "no
 * refresh token": the session ends after a while and nothing renews it. It was taken for a token
 * that does not expire (GitHub OAuth Apps'): a success, the token served for ten years, doctor
 * healthy, and callers met a dead session with nothing saying why. */
static void
test_no_refresh_token_without_a_lifetime (void **state)
{
    int rc;
    itest_fake_config (h, "salesforce", json_pack ("{s:[s]}", "grant_scopes", "api"));
    char *location = start_flow ("session:sf", "salesforce", NULL, NULL);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "salesforce", json_pack ("{s:n}", "grant_scopes"));
    if (rc != 4 || strcmp (itest_code (r), "no_refresh_token") != 0)
        fail_msg ("Salesforce's connect without a refresh token: \"%s\" (exit %d), not no_refresh_token (exit 4)",
                  itest_code (r), rc);
    assert_non_null (strstr (error_field (r, "message"), "session:sf"));
    assert_non_null (strstr (error_field (r, "hint"), "refresh_token"));
    assert_true (json_is_true (json_object_get (integration_of (r), "refresh_token_missing")));
    /* taken to last an hour, as any token whose lifetime is not said, not ten years */
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "session:sf", NULL);
    assert_int_equal (rc, 0);
    const char *expires_at = json_string_value (json_object_get (t, "expires_at"));
    assert_non_null (expires_at);
    int64_t until = 0;
    assert_int_equal (clock_parse_rfc3339 (expires_at, &until), 0);
    long long left = (long long) (until - clock_wall_ms () / 1000);
    if (left < 3000 || left > 3700)
        fail_msg ("the access token is served until %s, %lld s from now", expires_at, left);
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "session:sf", NULL);
    assert_int_equal (rc, 0);
    const json_t *dg = json_object_get (d, "diagnosis");
    assert_string_equal (json_string_value (json_object_get (dg, "code")), "no_refresh_token");
    /* with the refresh_token scope granted it connects as before, its token lasting an hour too */
    json_t *ok = connect_ok ("session:sf", "salesforce", NULL, NULL);
    assert_true (json_is_false (json_object_get (integration_of (ok), "refresh_token_missing")));
    free (location);
    json_decref (r);
    json_decref (t);
    json_decref (d);
    json_decref (ok);
}

/* A connect that got no refresh token (the access token lasts an hour), whose access the user then
 * removes at the provider: a caller's API call is refused, and it reports the token (token
 * --reject). The answer was no_refresh_token, "expires at ..., sooner than asked", the integration
 * stayed active, and the next token request handed out the rejected token again (exit 0). It is
 * the guide's dead-token case: access was revoked, and only a new connect helps. */
static void
test_rejected_token_without_refresh_token (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    char *location = start_flow ("revoked:google", "fakegoogle", NULL, NULL);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "no_refresh_token");
    assert_string_equal (istr (r, "status"), "active");
    assert_int_equal (sqlf ("SELECT access_lifetime_s FROM integrations WHERE id = 'revoked:google'"), 3600);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "revoked:google", NULL);
    assert_int_equal (rc, 0);
    const char *token = json_string_value (json_object_get (t, "access_token"));
    assert_non_null (token);
    itest_fake_revoke (h, "fakegoogle", token);
    char *scopes = itest_token_scopes (h, "fakegoogle", token);
    assert_null (scopes);                /* the API refuses it now, as the caller saw */
    long long refreshes = itest_stat (h, "fakegoogle", "refresh_calls");

    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "revoked:google", "--reject", token, NULL);
    if (strcmp (itest_code (t2), "needs_reconnect") != 0)
        fail_msg ("a rejected token without a refresh token: %s \"%s\" (exit %d)", itest_code (t2),
                  error_field (t2, "message"), rc);
    assert_int_equal (rc, 4);
    const char *message = error_field (t2, "message");
    assert_non_null (strstr (message, "rejected"));
    assert_non_null (strstr (message, "connected again"));
    assert_null (strstr (message, "sooner than asked"));
    assert_non_null (strstr (error_field (t2, "hint"), "disconnect the integration and connect it again"));
    assert_null (strstr (error_field (t2, "hint"), GOOGLE_HINT));

    /* the rejected token is handed out no more, by any worker; and the cause they give is the
     * rejection, not a stored refresh token the provider refused (there was none) */
    for (int i = 0; i < 2; i++) {
        json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "revoked:google", NULL);
        assert_int_equal (rc, 4);
        assert_string_equal (itest_code (t3), "needs_reconnect");
        assert_null (json_object_get (t3, "access_token"));
        const char *m = error_field (t3, "message"), *hint = error_field (t3, "hint");
        if (strstr (m, "stored refresh token") || strstr (hint, "stored refresh token") || !strstr (m, "rejected")
        ||  !strstr (m, "no refresh token"))
            fail_msg ("token request %d after the rejection: \"%s\" (hint \"%s\")", i + 2, m, hint);
        assert_non_null (strstr (error_field (t3, "hint"), "connect it again"));
        json_decref (t3);
    }
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'revoked:google'"
                            " AND status = 'needs_reconnect' AND last_error_code = 'needs_reconnect'"), 1);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), refreshes);
    /* doctor: the rejection, not a refresh token the provider refused (there was none) */
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "revoked:google", NULL);
    assert_int_equal (rc, 0);
    const json_t *dg = json_object_get (d, "diagnosis");
    assert_string_equal (json_string_value (json_object_get (dg, "code")), "needs_reconnect");
    const char *cause = json_string_value (json_object_get (dg, "cause"));
    if (!strstr (cause, "rejected") || strstr (cause, "no longer accepts the stored refresh token"))
        fail_msg ("doctor after a rejected token without a refresh token: %s", cause);
    free (location);
    json_decref (r);
    json_decref (t);
    json_decref (t2);
    json_decref (d);
}

/* A "token --reject" over a client of its own, in a thread (reply, then answered set). */
typedef struct {
    const char *id, *reject;
    json_t *reply;
    atomic_int answered;
} rejecter_t;

static void *
reject_call (void *arg)
{
    rejecter_t *r = arg;
    client_t *c = client_new (harness_brokers (h));
    json_t *args = json_pack ("{s:s, s:s}", "integration", r->id, "reject", r->reject);
    r->reply = client_call (c, "token", args, 20000);
    json_decref (args);
    client_destroy (&c);
    atomic_store (&r->answered, 1);
    return NULL;
}

/* The rejection's write (needs_reconnect) of a session waiting for a row lock. */
#define REJECT_WRITE_WAITS "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'" \
    " AND query LIKE '%SET status = ''needs_reconnect'', last_error_code%' AND datname = current_database ()"

/* The same rejection while the database makes its write wait (a row lock held longer than the
 * worker's lock timeout): from the moment the worker takes it, no token request is answered with
 * the rejected token, neither while the write waits nor after it failed (the rejecting caller is
 * told, and can retry); each request takes the outcome of a write, and once the lock is gone the
 * integration is needs_reconnect. The cache used to hand the token out until the write was in,
 * and for good when it failed. */
static void
test_rejected_token_unserved_while_its_write_waits (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    char *location = start_flow ("held:google", "fakegoogle", NULL, NULL);
    json_t *r = callback (location, &rc);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_string_equal (itest_code (r), "no_refresh_token");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "held:google", NULL);
    assert_int_equal (rc, 0);
    char *token = strdup (json_string_value (json_object_get (t, "access_token")));
    json_decref (t);

    PGconn *lock = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (lock), CONNECTION_OK);
    PGresult *res = PQexec (lock, "BEGIN; SELECT 1 FROM integrations WHERE id = 'held:google' FOR UPDATE");
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    PQclear (res);
    rejecter_t rej = { "held:google", token, NULL, 0 };
    pthread_t thread;
    assert_int_equal (pthread_create (&thread, NULL, reject_call, &rej), 0);
    /* taken by the worker: its write waits for the lock, or has failed already */
    int64_t until = clock_mono_ms () + 20000;
    while (!atomic_load (&rej.answered) && harness_sql_int (h, REJECT_WRITE_WAITS) < 1 && clock_mono_ms () < until)
        usleep (5000);
    int served = 0, waited = 0;
    for (int i = 0; i < 4; i++) {
        json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "held:google", NULL);
        const char *got = json_string_value (json_object_get (t2, "access_token"));
        if (got && strcmp (got, token) == 0)
            served++;
        else {
            assert_int_not_equal (rc, 0);
            waited++;
        }
        print_message ("token request %d with the rejection's write held: %s\n", i + 1, itest_code (t2));
        json_decref (t2);
    }
    pthread_join (thread, NULL);
    print_message ("the rejecting caller, its write held: %s\n", itest_code (rej.reply));
    if (served)
        fail_msg ("%d of 4 token requests made after the rejection was taken were served the rejected token",
                  served);
    assert_int_equal (waited, 4);
    /* told that its rejection was not recorded: it may retry */
    assert_int_not_equal (client_exit_code (rej.reply), 0);
    assert_null (json_object_get (rej.reply, "access_token"));
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'held:google' AND status = 'active'"), 1);

    PQclear (PQexec (lock, "ROLLBACK"));
    PQfinish (lock);
    /* the next request writes it */
    json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "held:google", NULL);
    assert_string_equal (itest_code (t3), "needs_reconnect");
    assert_null (json_object_get (t3, "access_token"));
    assert_non_null (strstr (error_field (t3, "message"), "rejected"));
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'held:google'"
                            " AND status = 'needs_reconnect' AND last_error_code = 'needs_reconnect'"), 1);
    json_decref (t3);
    json_decref (rej.reply);
    json_decref (r);
    free (location);
    free (token);
}

static void
test_scopes_reduced_and_required (void **state)
{
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "grant_scopes", "read"));
    json_t *r = connect_ok ("narrow:box", "fakebox", "read", "write");
    itest_fake_config (h, "fakebox", json_pack ("{s:n}", "grant_scopes"));
    const json_t *w = json_array_get (json_object_get (r, "warnings"), 0);
    assert_non_null (w);
    assert_string_equal (json_string_value (json_object_get (w, "code")), "scopes_reduced");
    assert_non_null (strstr (json_string_value (json_object_get (w, "message")), "\"write\""));
    assert_non_null (strstr (json_string_value (json_object_get (w, "hint")), "accept all requested permissions"));
    /* the guide's other two steps: full access when offered a choice, and the OAuth app's scopes */
    assert_non_null (strstr (json_string_value (json_object_get (w, "hint")), "choose full access"));
    assert_non_null (strstr (json_string_value (json_object_get (w, "hint")), "OAuth app"));
    assert_int_equal (json_array_size (json_object_get (integration_of (r), "scopes")), 1);
    assert_int_equal (json_array_size (json_object_get (integration_of (r), "requested_scopes")), 2);

    /* --require-scope: answered from the grant, before any refresh */
    itest_expire (h, "narrow:box");
    usleep (200000);
    long long refreshes = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "narrow:box", "--require-scope", "read",
                             "--require-scope", "write", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "insufficient_scope");
    assert_non_null (strstr (error_field (t, "message"), "\"write\""));
    assert_null (strstr (error_field (t, "message"), "\"read\","));
    assert_non_null (strstr (error_field (t, "hint"), "accept all requested permissions"));
    assert_non_null (strstr (error_field (t, "hint"), "choose full access"));
    assert_non_null (strstr (error_field (t, "hint"), "OAuth app"));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), refreshes);
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "narrow:box", "--require-scope", "read", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    json_decref (t);
    json_decref (t2);
}

static void
test_report_scope (void **state)
{
    int rc;
    json_t *c = connect_ok ("report:box", "fakebox", "read", NULL);
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                             "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin\"", NULL);
    assert_int_equal (rc, 0);
    const json_t *report = json_object_get (integration_of (r), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "admin");
    assert_non_null (json_string_value (json_object_get (report, "at")));
    json_t *s = harness_ctl (h, &rc, "status", "--integration", "report:box", NULL);
    assert_int_equal (rc, 0);
    report = json_object_get (integration_of (s), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "admin");
    char *text = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &text, "status", "--integration", "report:box", NULL), 0);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (text, "scope_report: admin (at "));
    free (text);
    /* a scope the grant already holds: recorded, with a warning */
    json_t *r2 = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--scope", "read", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (json_string_value (json_object_get (json_array_get (json_object_get (r2, "warnings"), 0), "code")),
                         "scope_already_granted");
    json_t *n = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", NULL);
    assert_int_equal (rc, 2);
    /* insufficient_scope without a scope parameter (RFC 6750 allows it): taken, naming no scope;
     * it was refused as a bad request, and doctor kept saying healthy */
    json_t *u = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                             "Bearer error=\"insufficient_scope\"", NULL);
    assert_int_equal (rc, 0);
    report = json_object_get (integration_of (u), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "");
    assert_int_equal (json_array_size (json_object_get (u, "warnings")), 0);
    assert_int_equal (harness_ctl_text (h, &rc, &text, "status", "--integration", "report:box", NULL), 0);
    assert_non_null (strstr (text, "scope_report: (scope not named) (at "));
    free (text);
    json_t *dr = harness_ctl (h, &rc, "doctor", "--integration", "report:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (json_string_value (json_object_get (json_object_get (dr, "diagnosis"), "code")),
                         "insufficient_scope");
    char *dump = json_dumps (dr, 0);
    assert_non_null (strstr (dump, "answered insufficient_scope at "));
    assert_non_null (strstr (dump, "without naming the scope it needs"));
    free (dump);
    json_decref (u);
    json_decref (dr);
    /* tabs, which RFC 7235 allows as whitespace (also around '=' and after a token), and a
     * description in another language: taken; they were refused as a bad request */
    json_t *tab = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                               "Bearer realm=\"api\",\terror =\tinsufficient_scope\t,\terror_description=\"Berechtigung "
                               "f\xc3\xbcr Dateien fehlt \xe2\x80\x93 bitte erneut verbinden\",\tscope=\"admin2\"", NULL);
    if (rc != 0)
        fail_msg ("a header with tabs and UTF-8: %s (exit %d): %s", itest_code (tab), rc,
                  json_string_value (json_object_get (json_object_get (tab, "error"), "message")));
    report = json_object_get (integration_of (tab), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "admin2");
    json_decref (tab);
    /* a parameter's name inside another's quoted value is no parameter: both were refused as a
     * bad request (the first read error=invalid_token" from the realm, the second scope admin"
     * from the description) */
    json_t *q1 = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                              "Bearer realm=\"api, error=invalid_token\", error=\"insufficient_scope\", "
                              "scope=\"files.read\"", NULL);
    if (rc != 0)
        fail_msg ("an error= inside the realm: %s (exit %d)", itest_code (q1), rc);
    report = json_object_get (integration_of (q1), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "files.read");
    json_decref (q1);
    json_t *q2 = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                              "Bearer error=\"insufficient_scope\", error_description=\"needs scope=admin\"", NULL);
    if (rc != 0)
        fail_msg ("a scope= inside the description: %s (exit %d)", itest_code (q2), rc);
    report = json_object_get (integration_of (q2), "scope_report");
    assert_string_equal (json_string_value (json_object_get (report, "scope")), "");
    json_decref (q2);
    /* other control characters are still refused */
    json_t *nl = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                               "Bearer error=\"insufficient_scope\",\nscope=\"admin3\"", NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (nl), "bad_request");
    json_decref (nl);
    /* a header with another error and no scope names nothing to record */
    json_t *o = harness_ctl (h, &rc, "report-scope", "--integration", "report:box", "--www-authenticate",
                             "Bearer error=\"invalid_token\"", NULL);
    assert_int_equal (rc, 2);
    json_decref (o);
    json_t *nf = harness_ctl (h, &rc, "report-scope", "--integration", "nobody:box", "--scope", "x", NULL);
    assert_int_equal (rc, 3);
    json_decref (c);
    json_decref (r);
    json_decref (s);
    json_decref (r2);
    json_decref (n);
    json_decref (nf);
}

static void
test_reconnect_over_needs_reconnect (void **state)
{
    int rc;
    json_t *c = connect_ok ("again:box", "fakebox", NULL, NULL);
    json_t *t1 = harness_ctl (h, &rc, "token", "--integration", "again:box", NULL);
    assert_int_equal (rc, 0);
    char *old_token = strdup (json_string_value (json_object_get (t1, "access_token")));
    /* the provider kills the refresh token: needs_reconnect, cached by the owning worker */
    itest_expire (h, "again:box");
    usleep (200000);
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "again:box", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t2), "needs_reconnect");
    long long generation = sqlf ("SELECT generation FROM integrations WHERE id = 'again:box'");

    json_t *r = connect_ok ("again:box", "fakebox", NULL, NULL);
    assert_true (json_is_true (json_object_get (r, "reconnected")));
    assert_string_equal (istr (r, "status"), "active");
    assert_int_equal (json_integer_value (json_object_get (integration_of (r), "generation")), generation + 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'again:box' AND outcome = 'connected'"
                            " AND detail LIKE 'reconnected%%(was needs_reconnect)'"), 1);
    /* history kept: connected, invalid_grant, connected again */
    assert_true (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'again:box'") >= 3);

    /* the next token request, whichever worker serves it, has the new token */
    for (int i = 0; i < 4; i++) {
        json_t *t = harness_ctl (h, &rc, "token", "--integration", "again:box", NULL);
        assert_int_equal (rc, 0);
        assert_int_equal (json_integer_value (json_object_get (t, "generation")), generation + 1);
        assert_true (strcmp (json_string_value (json_object_get (t, "access_token")), old_token) != 0);
        json_decref (t);
    }
    free (old_token);
    json_decref (c);
    json_decref (t1);
    json_decref (t2);
    json_decref (r);
}

static void
test_disconnect (void **state)
{
    int rc;
    json_t *c = connect_ok ("bye:box", "fakebox", NULL, NULL);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 0);
    long long revocations = itest_stat (h, "fakebox", "revocations");
    long long refreshes = itest_stat (h, "fakebox", "refresh_calls");
    long long rows = sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'bye:box'");
    double revoked = revocations_metric ("revoked"), failed = revocations_metric ("failed");

    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    assert_null (json_object_get (d, "warnings"));
    assert_true (revocations_metric ("revoked") == revoked + 1);
    assert_true (revocations_metric ("failed") == failed);
    assert_non_null (json_string_value (json_object_get (integration_of (d), "disconnected_at")));
    assert_int_equal (itest_stat (h, "fakebox", "revocations"), revocations + 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'bye:box' AND access_token IS NULL"
                            " AND refresh_token IS NULL AND status = 'disconnected'"), 1);
    /* the revoked refresh token: the fake provider's chain is dead */
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=fakebox&limit=1", NULL);
    json_t *last = json_array_get (json_object_get (reqs, "requests"), 0);
    assert_string_equal (json_string_value (json_object_get (last, "path")), "/fakebox/revoke");

    /* from now on: disconnected, without a provider call */
    json_t *t2 = harness_ctl (h, &rc, "token", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t2), "disconnected");
    json_t *f = harness_ctl (h, &rc, "refresh", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 4);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), refreshes);
    /* history kept, with the disconnect and the revocation */
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'bye:box'"), rows + 2);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'bye:box' AND outcome = 'revoked'"), 1);
    /* a second disconnect changes nothing */
    json_t *d2 = harness_ctl (h, &rc, "disconnect", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (itest_stat (h, "fakebox", "revocations"), revocations + 1);

    /* connect again: active */
    json_t *r = connect_ok ("bye:box", "fakebox", NULL, NULL);
    assert_true (json_is_true (json_object_get (r, "reconnected")));
    assert_string_equal (istr (r, "status"), "active");
    assert_true (json_is_null (json_object_get (integration_of (r), "disconnected_at")));
    json_t *t3 = harness_ctl (h, &rc, "token", "--integration", "bye:box", NULL);
    assert_int_equal (rc, 0);

    /* a provider without a revocation endpoint: disconnected, with a warning */
    json_t *p = connect_ok ("plain:box", "fakeplain", NULL, NULL);
    json_t *pd = harness_ctl (h, &rc, "disconnect", "--integration", "plain:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (pd, "status"), "disconnected");
    const json_t *w = json_array_get (json_object_get (pd, "warnings"), 0);
    assert_string_equal (json_string_value (json_object_get (w, "code")), "not_revoked");
    /* why, as a word a program acts on (the gateway matched the message's wording) */
    if (!json_object_get (w, "reason") || strcmp (json_string_value (json_object_get (w, "reason")), "no_revocation_endpoint"))
        fail_msg ("a disconnect at a provider without a revocation endpoint: reason \"%s\"",
                  json_string_value (json_object_get (w, "reason")) ? json_string_value (json_object_get (w, "reason")) : "");
    assert_non_null (strstr (json_string_value (json_object_get (w, "message")), "revocation endpoint"));
    json_t *nf = harness_ctl (h, &rc, "disconnect", "--integration", "nobody:box", NULL);
    assert_int_equal (rc, 3);
    json_decref (c);
    json_decref (t);
    json_decref (d);
    json_decref (reqs);
    json_decref (t2);
    json_decref (f);
    json_decref (d2);
    json_decref (r);
    json_decref (t3);
    json_decref (p);
    json_decref (pd);
    json_decref (nf);
}

/* The whole flow, signed in as account (the fake provider's login_hint), expected to succeed;
 * returns the callback's reply. */
static json_t *
connect_as (const char *id, const char *provider, const char *account)
{
    int rc;
    long status = 0;
    char url [4096];
    json_t *c = connect_ (id, provider, REDIRECT, &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    snprintf (url, sizeof url, "%s&login_hint=%s", json_string_value (json_object_get (c, "authorization_url")),
              account);
    char *location = browse (url, &status, NULL);
    assert_int_equal (status, 302);
    assert_non_null (location);
    json_t *r = callback (location, &rc);
    if (rc != 0)
        fail_msg ("callback for %s: exit %d, %s: %s", id, rc, itest_code (r), error_field (r, "message"));
    free (location);
    json_decref (c);
    return r;
}

/* At a provider whose revocation ends the whole grant (Google: one per account and OAuth client),
 * disconnecting one of two integrations of a workspace, both signed in with one account, revoked
 * the grant the other holds: its next refresh failed with needs_reconnect. The tokens are destroyed
 * and not revoked, with a warning that says why; the last one left is revoked, and so is one alone
 * in its workspace, whatever another workspace holds. */
static void
test_disconnect_keeps_a_shared_grant (void **state)
{
    int rc;
    json_t *a = connect_ok ("team9:drive", "fakegrant", NULL, NULL);
    json_t *b = connect_ok ("team9:docs", "fakegrant", NULL, NULL);
    long long revocations = itest_stat (h, "fakegrant", "revocations");

    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "team9:docs", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'team9:docs' AND access_token IS NULL"
                            " AND refresh_token IS NULL"), 1);
    /* the other one's grant lives */
    json_t *f = harness_ctl (h, &rc, "refresh", "--integration", "team9:drive", NULL);
    if (rc != 0)
        fail_msg ("refresh of team9:drive after team9:docs was disconnected: %s \"%s\" (exit %d)", itest_code (f),
                  error_field (f, "message"), rc);
    const json_t *w = json_array_get (json_object_get (d, "warnings"), 0);
    if (!w)
        fail_msg ("disconnect of team9:docs: no warning, %lld revocation(s)",
                  itest_stat (h, "fakegrant", "revocations") - revocations);
    assert_string_equal (json_string_value (json_object_get (w, "code")), "not_revoked");
    if (!json_object_get (w, "reason") || strcmp (json_string_value (json_object_get (w, "reason")), "grant_shared"))
        fail_msg ("a disconnect of a shared grant: reason \"%s\"",
                  json_string_value (json_object_get (w, "reason")) ? json_string_value (json_object_get (w, "reason")) : "");
    const char *message = json_string_value (json_object_get (w, "message"));
    assert_non_null (strstr (message, "whole grant"));
    assert_non_null (strstr (message, "1 other active integration of the provider in workspace \"team9:\""));
    assert_non_null (strstr (json_string_value (json_object_get (w, "hint")), "remove the app's access"));
    assert_int_equal (itest_stat (h, "fakegrant", "revocations"), revocations);

    /* the last one of the workspace: revoked, and with it the grant */
    json_t *d2 = harness_ctl (h, &rc, "disconnect", "--integration", "team9:drive", NULL);
    assert_int_equal (rc, 0);
    assert_null (json_object_get (d2, "warnings"));
    assert_int_equal (itest_stat (h, "fakegrant", "revocations"), revocations + 1);

    /* alone in its workspace: revoked, though another workspace holds an integration of the provider */
    json_t *o = connect_as ("other8:drive", "fakegrant", "bob");
    json_t *s = connect_as ("solo7:drive", "fakegrant", "carol");
    json_t *d3 = harness_ctl (h, &rc, "disconnect", "--integration", "solo7:drive", NULL);
    assert_int_equal (rc, 0);
    assert_null (json_object_get (d3, "warnings"));
    assert_int_equal (itest_stat (h, "fakegrant", "revocations"), revocations + 2);
    json_t *f2 = harness_ctl (h, &rc, "refresh", "--integration", "other8:drive", NULL);
    assert_int_equal (rc, 0);

    /* tenants named org-1:, org-2: are workspaces of their own, not one "org-": revoked */
    json_t *o2 = connect_as ("org-2:drive", "fakegrant", "dave");
    json_t *s2 = connect_as ("org-1:drive", "fakegrant", "erin");
    json_t *d4 = harness_ctl (h, &rc, "disconnect", "--integration", "org-1:drive", NULL);
    assert_int_equal (rc, 0);
    assert_null (json_object_get (d4, "warnings"));
    assert_int_equal (itest_stat (h, "fakegrant", "revocations"), revocations + 3);
    json_decref (o2);
    json_decref (s2);
    json_decref (d4);
    json_decref (a);
    json_decref (b);
    json_decref (d);
    json_decref (f);
    json_decref (d2);
    json_decref (o);
    json_decref (s);
    json_decref (d3);
    json_decref (f2);
}

/* A chain's field in the fake provider's /admin/stats ("generation", "refresh_usable", ...). */
static json_t *
chain_stat (long long chain, const char *field)
{
    char key [32];
    snprintf (key, sizeof key, "%lld", chain);
    json_t *stats = harness_fake (h, "GET", "/admin/stats", NULL);
    json_t *v = json_deep_copy (json_object_get (json_object_get (json_object_get (stats, "chains"), key), field));
    json_decref (stats);
    assert_non_null (v);
    return v;
}

/* Starts "ferrulectl refresh" of id in a child (its exit status is ferrulectl's) while fakerot
 * answers refreshes 4 s after they took effect (what the callers do meanwhile took 0.3 s under
 * AddressSanitizer on an idle machine), and returns once the provider has rotated chain (not yet
 * answered). */
static pid_t
refresh_held_at_provider (const char *id, long long chain)
{
    json_t *v = chain_stat (chain, "generation");
    long long generation = json_integer_value (v), now_gen = generation;
    json_decref (v);
    itest_fake_config (h, "fakerot", json_pack ("{s:i}", "answer_delay_ms", 4000));
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int crc = -1;
        json_decref (harness_ctl (h, &crc, "refresh", "--integration", id, NULL));
        _exit (crc < 0 ? 99 : crc);
    }
    int64_t until = clock_mono_ms () + 8000;
    while (now_gen == generation && clock_mono_ms () < until) {
        usleep (20000);
        v = chain_stat (chain, "generation");
        now_gen = json_integer_value (v);
        json_decref (v);
    }
    assert_int_equal (now_gen, generation + 1);
    return child;
}

/* Waits for the child of refresh_held_at_provider; returns its exit status. */
static int
refresh_held_end (pid_t child)
{
    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    itest_fake_config (h, "fakerot", json_pack ("{s:i}", "answer_delay_ms", 0));
    return WEXITSTATUS (status);
}

/* A grant at fakerot imported as id, with its access token too when with_access; returns its
 * chain there. */
static long long
import_fakerot (const char *id, int with_access)
{
    int rc = -1;
    json_t *body = json_pack ("{s:s, s:[]}", "provider", "fakerot", "scopes");
    json_t *g = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    long long chain = json_integer_value (json_object_get (g, "chain"));
    assert_true (chain > 0);
    const char *rt = json_string_value (json_object_get (g, "refresh_token"));
    if (with_access)
        json_decref (harness_ctl (h, &rc, "import", "--integration", id, "--provider", "fakerot", "--refresh-token", rt,
                                  "--access-token", json_string_value (json_object_get (g, "access_token")),
                                  "--expires-in", "3600", NULL));
    else
        rc = itest_import (h, id, "fakerot", rt);
    assert_int_equal (rc, 0);
    json_decref (g);
    return chain;
}

/* A refresh of a new fakerot integration id (one token revoked at a time) held at the provider
 * after it rotated, and a disconnect of id meanwhile; returns the refresh's child (end it with
 * refresh_held_end), with the grant's chain and the provider's revocations before the race. */
static pid_t
disconnect_overtaking_refresh (const char *id, long long *chain, long long *revocations)
{
    int rc;
    itest_fake_config (h, "fakerot", json_pack ("{s:b}", "revoke_whole_grant", 0));
    *chain = import_fakerot (id, 0);
    *revocations = itest_stat (h, "fakerot", "revocations");
    pid_t child = refresh_held_at_provider (id, *chain);
    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", id, NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    json_decref (d);
    return child;
}

/* A disconnect while a refresh is at the provider, at a provider that rotates refresh tokens
 * and revokes one token at a time (Microsoft): the disconnect revokes the stored refresh token,
 * which the refresh has just spent, and the refresh's commit then loses to the disconnect. The
 * refresh token the provider issued to that refresh is revoked too, in the background, and the
 * chain says so; nobody else would ever hold it. */
static void
test_disconnect_during_refresh_revokes_the_new_token (void **state)
{
    long long chain, revocations;
    pid_t child = disconnect_overtaking_refresh ("orphan:box", &chain, &revocations);
    assert_int_equal (refresh_held_end (child), 4);     /* the refresh's caller: disconnected */

    /* the revocation of the new token runs in the background: wait for its record */
    int64_t until = clock_mono_ms () + 10000;
    while (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'orphan:box' AND outcome = 'revoked'"
                 " AND detail LIKE '%%while the integration was being disconnected%%'") == 0
           && clock_mono_ms () < until)
        usleep (50000);
    json_t *v = chain_stat (chain, "refresh_usable");
    int usable = json_is_true (v);
    json_decref (v);
    if (usable)
        fail_msg ("the refresh token issued to the refresh that the disconnect overtook is still valid at the provider");
    assert_int_equal (itest_stat (h, "fakerot", "revocations"), revocations + 2);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'orphan:box' AND outcome = 'revoked'"
                            " AND detail LIKE '%%while the integration was being disconnected%%'"), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'orphan:box'"
                            " AND detail LIKE '%%fake-rt-%%'"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'orphan:box' AND status = 'disconnected'"
                            " AND refresh_token IS NULL"), 1);
    assert_false (itest_workdir_contains (h, "fake-rt-"));
}

/* The same race, and the provider refuses the background revocation: a few attempts, then a
 * revocation_failed row that names the provider's answer and never a token; nobody is answered
 * (the refresh's caller was told `disconnected` already). */
static void
test_disconnect_during_refresh_revocation_refused (void **state)
{
    long long chain, revocations;
    pid_t child = disconnect_overtaking_refresh ("refused:rot", &chain, &revocations);
    /* the disconnect's own revocation is done: every later one at fakerot fails */
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i, s:i}", "provider", "fakerot", "kind", "status", "endpoint", "revoke",
                           "count", -1, "status", 503);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    assert_int_equal (refresh_held_end (child), 4);

    int64_t until = clock_mono_ms () + 15000;
    while (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:rot'"
                 " AND outcome = 'revocation_failed'") == 0 && clock_mono_ms () < until)
        usleep (50000);
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakerot", NULL));
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:rot'"
                            " AND outcome = 'revocation_failed' AND detail LIKE '%%while it was being disconnected%%'"
                            " AND detail LIKE '%%HTTP 503%%' AND detail LIKE '%%3 attempts%%'"), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:rot'"
                            " AND detail LIKE '%%fake-rt-%%'"), 0);
    assert_int_equal (itest_stat (h, "fakerot", "revocations"), revocations + 1);
    json_t *v = chain_stat (chain, "refresh_usable");
    assert_true (json_is_true (v));         /* what the row warns of */
    json_decref (v);
    assert_false (itest_workdir_contains (h, "fake-rt-"));
}

/* Waits up to within_ms until the refresh token issued to the refresh a disconnect of id overtook
 * (fakerot's chain) is revoked there, then for the chain row that says so (when: for the failure's
 * message). revocations: the provider's count before the race. */
static void
orphan_revoked (const char *id, long long chain, long long revocations, int within_ms, const char *when)
{
    int usable = 1;
    int64_t until = clock_mono_ms () + within_ms;
    while (usable && clock_mono_ms () < until) {
        json_t *v = chain_stat (chain, "refresh_usable");
        usable = json_is_true (v);
        json_decref (v);
        if (usable)
            usleep (50000);
    }
    if (usable)
        fail_msg ("the refresh token issued to the refresh that the disconnect overtook is still valid at the provider "
                  "%s", when);
    assert_int_equal (itest_stat (h, "fakerot", "revocations"), revocations + 2);
    until = clock_mono_ms () + 10000;
    while (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'revoked'"
                 " AND detail LIKE '%%while the integration was being disconnected%%'", id) == 0
           && clock_mono_ms () < until)
        usleep (50000);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'revoked'"
                            " AND detail LIKE '%%while the integration was being disconnected%%'", id), 1);
}

/* How many lines of the workers' logs hold needle. */
static int
count_in_worker_logs (const char *needle)
{
    int n = 0;
    const char *ids [] = { "w1", "w2" };
    for (size_t i = 0; i < 2; i++) {
        char path [4096], line [8192];
        snprintf (path, sizeof path, "%s/%s.log", harness_workdir (h), ids [i]);
        FILE *f = fopen (path, "r");
        if (!f)
            continue;
        while (fgets (line, sizeof line, f))
            n += strstr (line, needle) != NULL;
        fclose (f);
    }
    return n;
}

/* The same race, and the database refuses the record of the lost compare-and-set for longer than
 * that record's first attempts (a transient error each time: here a trigger's, SQLSTATE 55P03).
 * Only the row says a disconnect overtook the refresh, so the record is tried until the database
 * takes it, and then the new token is revoked. It was given up after five attempts (about 4 s):
 * its journal record was settled, and the token left valid at the provider for good. */
static void
test_disconnect_during_refresh_revoked_once_the_database_takes_the_record (void **state)
{
    long long chain, revocations;
    int before = count_in_worker_logs ("could not record the lost compare-and-set");
    pid_t child = disconnect_overtaking_refresh ("slowrec:rot", &chain, &revocations);
    assert_int_equal (harness_sql (h, "CREATE FUNCTION test_refuse_conflict () RETURNS trigger LANGUAGE plpgsql AS $$"
                                      " BEGIN RAISE EXCEPTION 'this test refuses the record' USING ERRCODE = '55P03'; END $$;"
                                      " CREATE TRIGGER test_refuse_conflict BEFORE INSERT ON token_chain FOR EACH ROW"
                                      " WHEN (NEW.outcome = 'conflict') EXECUTE FUNCTION test_refuse_conflict ()"), 0);
    (void) refresh_held_end (child);        /* its caller is told the database is unavailable */
    /* one attempt more than the record used to be given */
    int64_t until = clock_mono_ms () + 30000;
    int attempts;
    while ((attempts = count_in_worker_logs ("could not record the lost compare-and-set") - before) < 6
           && clock_mono_ms () < until)
        usleep (100000);
    /* dropped first: the tests after this one record conflicts too */
    assert_int_equal (harness_sql (h, "DROP TRIGGER test_refuse_conflict ON token_chain;"
                                      " DROP FUNCTION test_refuse_conflict ()"), 0);
    if (attempts < 6)
        fail_msg ("the record of the lost compare-and-set was tried %d times, then given up", attempts);
    orphan_revoked ("slowrec:rot", chain, revocations, 20000, "once the database took the record");
    assert_false (itest_workdir_contains (h, "fake-rt-"));
}

/* How many code exchanges fakebox has received (recorded on arrival, before its latency). */
static int
fakebox_exchanges (void)
{
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=fakebox&limit=1000", NULL);
    json_t *list = json_object_get (reqs, "requests");
    assert_true (json_array_size (list) < 1000);     /* it keeps the last 1000 */
    int n = 0;
    for (size_t i = 0; i < json_array_size (list); i++) {
        const char *grant = json_string_value (json_object_get (json_array_get (list, i), "grant_type"));
        n += grant && strcmp (grant, "authorization_code") == 0;
    }
    json_decref (reqs);
    return n;
}

/* A disconnect that lands while a reconnect's code exchange is at the provider (its state taken,
 * so the disconnect came after the callback): the disconnect stands. The callback is answered
 * `disconnected`, nothing of the exchange is stored, and the refresh token the provider issued
 * for it is revoked in the background, since nobody else will ever hold it. The exchange's
 * tokens were written over the disconnect: the integration was active again and served tokens,
 * after its owner had been told they were destroyed. */
static void
test_disconnect_during_a_callbacks_exchange_stands (void **state)
{
    int rc;
    json_decref (connect_ok ("dx:box", "fakebox", NULL, NULL));
    char *location = start_flow ("dx:box", "fakebox", NULL, NULL);
    int exchanges = fakebox_exchanges ();
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 3000));
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int crc = -1;
        json_decref (harness_ctl (h, &crc, "callback", "--url", location, "--timeout", "30", NULL));
        _exit (crc < 0 ? 99 : crc);
    }
    for (int64_t until = clock_mono_ms () + 10000; fakebox_exchanges () == exchanges && clock_mono_ms () < until; )
        usleep (20000);
    assert_int_equal (fakebox_exchanges (), exchanges + 1);
    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "dx:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    json_decref (d);
    long long revocations = itest_stat (h, "fakebox", "revocations");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);                 /* the disconnect came during the exchange */

    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 4);                 /* disconnected */
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'dx:box' AND status = 'disconnected'"
                            " AND refresh_token IS NULL AND access_token IS NULL"), 1);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "dx:box", NULL);
    assert_string_equal (itest_code (t), "disconnected");
    json_decref (t);
    assert_int_equal (itest_wait_stat (h, "fakebox", "revocations", revocations + 1, 10000), revocations + 1);
    int64_t until = clock_mono_ms () + 10000;
    while (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'dx:box' AND outcome = 'revoked'"
                 " AND detail LIKE '%%a connect obtained while the integration was being disconnected%%'") == 0
           && clock_mono_ms () < until)
        usleep (50000);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'dx:box' AND outcome = 'revoked'"
                            " AND detail LIKE '%%a connect obtained while the integration was being disconnected%%'"), 1);
    /* the callback URL is spent for good: used again, it says how this connect ended */
    t = callback (location, &rc);
    assert_string_equal (itest_code (t), "state_invalid");
    json_decref (t);
    free (location);
}

/* A sign-in whose code exchange is slow, and meanwhile a disconnect and another sign-in, which is
 * stored: the newer connection stands. The first exchange, ending last, found the integration no
 * longer disconnected (the second had cleared that) and wrote its account over the second's, and
 * its caller was told "reconnected" (review, 2026-12-06). Now it is answered state_invalid,
 * stores nothing, and its connect is marked so. */
static void
test_a_slow_callback_never_overwrites_a_newer_connect (void **state)
{
    int rc;
    json_decref (connect_ok ("sx:box", "fakebox", NULL, NULL));
    char *first = start_flow ("sx:box", "fakebox", NULL, NULL);
    char *first_state = state_of (first);
    int exchanges = fakebox_exchanges ();
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i, s:i}", "provider", "fakebox", "kind", "slow", "endpoint", "token",
                           "count", 1, "delay_ms", 4000);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        int crc = -1;
        json_decref (harness_ctl (h, &crc, "callback", "--url", first, "--timeout", "30", NULL));
        _exit (crc < 0 ? 99 : crc);
    }
    for (int64_t until = clock_mono_ms () + 10000; fakebox_exchanges () == exchanges && clock_mono_ms () < until; )
        usleep (20000);
    assert_int_equal (fakebox_exchanges (), exchanges + 1);     /* the first is at the provider */
    json_decref (harness_ctl (h, &rc, "disconnect", "--integration", "sx:box", NULL));
    assert_int_equal (rc, 0);
    json_decref (connect_ok ("sx:box", "fakebox", NULL, NULL));
    long long generation = sqlf ("SELECT generation FROM integrations WHERE id = 'sx:box' AND status = 'active'");
    assert_true (generation > 0);

    int status;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 4);                 /* state_invalid */
    assert_int_equal (sqlf ("SELECT generation FROM integrations WHERE id = 'sx:box' AND status = 'active'"),
                      generation);
    assert_int_equal (sqlf ("SELECT count(*) FROM pending_authorizations WHERE state_hash ="
                            " encode (sha256 (convert_to ('%s', 'UTF8')), 'hex') AND outcome = 'state_invalid'",
                            first_state), 1);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "sx:box", NULL);
    assert_int_equal (rc, 0);
    json_decref (t);
    free (first_state);
    free (first);
}

/* Starts both workers again after a test stopped them; waits until the refresh token of the
 * grant at fakerot's chain is revoked there (by the replay of the journal record that kept it)
 * and the chain of integration id says so. revocations: the provider's count before the race. */
static void
orphan_revoked_after_restart (const char *id, long long chain, long long revocations)
{
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakerot", NULL));
    assert_int_equal (itest_stat (h, "fakerot", "revocations"), revocations + 1);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);

    orphan_revoked (id, chain, revocations, 15000, "after its worker started again");
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                            " AND outcome = 'revocation_failed'", id), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = '%s'"
                            " AND detail LIKE '%%fake-rt-%%'", id), 0);
    assert_false (itest_workdir_contains (h, "fake-rt-"));
}

/* The refresh of disconnect_overtaking_refresh ended, and fault (a JSON spec for fakerot's
 * revocation endpoint) queued: waits until the provider has served it to the background
 * revocation, then sends sig to both workers and waits for them to exit with status. */
static void
orphan_revocation_interrupted (pid_t child, json_t *fault, int sig, int status)
{
    long long served = itest_stat (h, "fakerot", "faults_served");
    json_decref (harness_fake (h, "POST", "/admin/faults", fault));
    json_decref (fault);
    assert_int_equal (refresh_held_end (child), 4);
    int64_t until = clock_mono_ms () + 10000;
    while (itest_stat (h, "fakerot", "faults_served") == served && clock_mono_ms () < until)
        usleep (10000);
    assert_true (itest_stat (h, "fakerot", "faults_served") > served);
    harness_signal_worker (h, "w1", sig);
    harness_signal_worker (h, "w2", sig);
    assert_int_equal (harness_wait_worker_exit (h, "w1", 15000), status);
    assert_int_equal (harness_wait_worker_exit (h, "w2", 15000), status);
}

/* The same race, and the workers crash while the provider has not answered the background
 * revocation yet. The new refresh token stays in its worker's journal until the revocation has
 * an outcome: the restarted worker replays the record, finds the row disconnected and revokes
 * the token then. (Last but one of the file: the provider's stalled answer revokes it too, 60 s
 * later.) */
static void
test_disconnect_during_refresh_revoked_after_a_crash (void **state)
{
    long long chain, revocations;
    pid_t child = disconnect_overtaking_refresh ("crashed:rot", &chain, &revocations);
    /* the disconnect's own revocation is done: the refresh's goes unanswered */
    orphan_revocation_interrupted (child, json_pack ("{s:s, s:s, s:s, s:i, s:i}", "provider", "fakerot", "kind", "slow",
                                                     "endpoint", "revoke", "count", 1, "delay_ms", 60000),
                                   SIGKILL, 128 + SIGKILL);
    orphan_revoked_after_restart ("crashed:rot", chain, revocations);
}

/* The same, and the workers are stopped (SIGTERM) while the provider fails the revocation: a
 * stopping worker tries no more, and leaves the record for its next start rather than giving up
 * with revocation_failed. */
static void
test_disconnect_during_refresh_revoked_after_a_stop (void **state)
{
    long long chain, revocations;
    pid_t child = disconnect_overtaking_refresh ("stopped:rot", &chain, &revocations);
    orphan_revocation_interrupted (child, json_pack ("{s:s, s:s, s:s, s:i, s:i}", "provider", "fakerot", "kind",
                                                     "status", "endpoint", "revoke", "count", -1, "status", 503),
                                   SIGTERM, 0);
    orphan_revoked_after_restart ("stopped:rot", chain, revocations);
}

/* The same race with an import instead of a disconnect: the integration stays active, and the
 * token the overtaken refresh obtained is not revoked (at Google a revocation ends the whole
 * grant; an active integration must never lose it so). */
static void
test_import_during_refresh_revokes_nothing (void **state)
{
    itest_fake_config (h, "fakerot", json_pack ("{s:b}", "revoke_whole_grant", 0));
    long long chain = import_fakerot ("kept:box", 0);
    long long revocations = itest_stat (h, "fakerot", "revocations");

    pid_t child = refresh_held_at_provider ("kept:box", chain);
    /* with an access token: what a forced refresh overtaken by it serves */
    long long chain2 = import_fakerot ("kept:box", 1);
    assert_true (chain2 != chain);
    int rc = refresh_held_end (child);
    if (rc != 0)
        fail_msg ("the refresh overtaken by an import ended with ferrulectl status %d", rc);
    usleep (1500000);                   /* a wrong background revocation would have been sent by now */
    json_t *v = chain_stat (chain, "refresh_usable");
    assert_true (json_is_true (v));
    json_decref (v);
    assert_int_equal (itest_stat (h, "fakerot", "revocations"), revocations);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'kept:box'"
                            " AND outcome IN ('revoked', 'revocation_failed')"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'kept:box' AND status = 'active'"), 1);
}

/* Queues a fault at fakebox's revocation endpoint; status, retry_after < 0 and error NULL: the
 * fake provider's defaults. */
static void
revoke_fault (const char *kind, int count, int status, int retry_after, const char *error)
{
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i}", "provider", "fakebox", "kind", kind, "endpoint", "revoke",
                           "count", count);
    if (status >= 0)
        json_object_set_new (f, "status", json_integer (status));
    if (retry_after >= 0)
        json_object_set_new (f, "retry_after", json_integer (retry_after));
    if (error)
        json_object_set_new (f, "error", json_string (error));
    json_t *r = harness_fake (h, "POST", "/admin/faults", f);
    assert_non_null (json_object_get (r, "queued"));
    json_decref (r);
    json_decref (f);
}

/* The /fakebox/revoke requests the fake provider recorded (it keeps 1000), oldest first, into at
 * (ms); returns how many. */
static size_t
revoke_requests (long long *at, size_t max)
{
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=fakebox&limit=1000", NULL);
    assert_true (json_array_size (json_object_get (reqs, "requests")) < 1000);
    json_t *list = json_object_get (reqs, "requests");
    size_t n = 0;
    for (size_t i = 0; i < json_array_size (list); i++) {
        const json_t *r = json_array_get (list, i);
        if (strcmp (json_string_value (json_object_get (r, "path")), "/fakebox/revoke") == 0) {
            assert_true (n < max);
            at [n++] = (long long) json_integer_value (json_object_get (r, "at_ms"));
        }
    }
    json_decref (reqs);
    return n;
}

/* The one warning of a disconnect that the provider did not confirm: its message names what the
 * provider said and never a token, its hint says where to end the grant by hand. */
static const char *
refused_warning (const json_t *d)
{
    assert_string_equal (istr (d, "status"), "disconnected");
    const json_t *ws = json_object_get (d, "warnings");
    assert_int_equal (json_array_size (ws), 1);
    const json_t *w = json_array_get (ws, 0);
    assert_string_equal (json_string_value (json_object_get (w, "code")), "revocation_failed");
    const char *message = json_string_value (json_object_get (w, "message"));
    const char *hint = json_string_value (json_object_get (w, "hint"));
    assert_non_null (message);
    assert_non_null (hint);
    assert_null (strstr (message, "fake-rt-"));
    assert_null (strstr (message, "fake-at-"));
    assert_non_null (strstr (hint, "provider"));
    return message;
}

/* Slack's auth.revoke answers HTTP 200 {"ok": false, "error": ...}: not a revocation. */
static void
test_disconnect_revocation_refused_in_body (void **state)
{
    int rc;
    json_t *c = connect_ok ("refused:box", "fakebox", NULL, NULL);
    long long revocations = itest_stat (h, "fakebox", "revocations");
    double revoked = revocations_metric ("revoked"), failed = revocations_metric ("failed");
    revoke_fault ("error_200", 1, -1, -1, "token_revoked_elsewhere");

    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "refused:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (revocations_metric ("failed") == failed + 1);
    assert_true (revocations_metric ("revoked") == revoked);
    const char *message = refused_warning (d);
    assert_non_null (strstr (message, "token_revoked_elsewhere"));
    assert_non_null (strstr (message, "HTTP 200"));
    assert_int_equal (itest_stat (h, "fakebox", "revocations"), revocations);
    /* the tokens are gone here all the same, and the record says the provider did not confirm */
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'refused:box' AND access_token IS NULL"
                            " AND refresh_token IS NULL AND status = 'disconnected'"), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:box'"
                            " AND outcome = 'revoked'"), 0);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:box'"
                            " AND outcome = 'revocation_failed' AND detail LIKE '%%token_revoked_elsewhere%%'"), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'refused:box'"
                            " AND detail LIKE '%%fake-rt-%%'"), 0);
    json_decref (c);
    json_decref (d);
}

/* Google's /revoke answers 400 invalid_token ("Token expired or revoked") for a token already
 * dead: nothing is left to revoke. It was a failed revocation, and the user who disconnected an
 * integration whose token had expired was told to remove the app's access by hand. */
static void
test_disconnect_revocation_already_invalid (void **state)
{
    int rc;
    unsigned long long more;
    const char *line = "was already revoked or expired (HTTP 400 invalid_token";
    json_t *c = connect_ok ("gone:box", "fakebox", NULL, NULL);
    double revoked = revocations_metric ("revoked"), failed = revocations_metric ("failed");
    int lines = itest_log_lines (h, "w1", line, &more) + itest_log_lines (h, "w2", line, &more);
    revoke_fault ("invalid_token", 1, -1, -1, NULL);

    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "gone:box", NULL);
    const json_t *ws = json_object_get (d, "warnings");
    print_message ("a revocation answered 400 invalid_token: %zu warnings (%s)\n", json_array_size (ws),
                   json_array_size (ws) ? json_string_value (json_object_get (json_array_get (ws, 0), "code")) : "");
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    assert_null (ws);
    assert_true (revocations_metric ("failed") == failed);
    assert_true (revocations_metric ("revoked") == revoked + 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'gone:box'"
                            " AND outcome = 'revoked' AND detail LIKE '%%already revoked or expired%%'"), 1);
    assert_int_equal (itest_log_lines (h, "w1", line, &more) + itest_log_lines (h, "w2", line, &more), lines + 1);

    /* another error is still a revocation that failed */
    json_t *c2 = connect_ok ("gone2:box", "fakebox", NULL, NULL);
    revoke_fault ("invalid_client", 1, -1, -1, NULL);
    json_t *d2 = harness_ctl (h, &rc, "disconnect", "--integration", "gone2:box", NULL);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (refused_warning (d2), "invalid_client"));
    json_decref (c);
    json_decref (d);
    json_decref (c2);
    json_decref (d2);
}

/* A 503 with Retry-After, then a 502: tried again after the wait it asked for, and the third
 * attempt revokes. A provider that keeps failing is tried a bounded number of times. (No answer
 * at all is transient too, but curl itself sends a request again once when a reused connection
 * dies without an answer, so the count of requests would be curl's.) */
static void
test_disconnect_revocation_retried (void **state)
{
    int rc;
    long long at [64];
    json_t *c = connect_ok ("retry:box", "fakebox", NULL, NULL);
    long long revocations = itest_stat (h, "fakebox", "revocations");
    size_t before = revoke_requests (at, 64);
    revoke_fault ("retry_after", 1, 503, 1, NULL);
    revoke_fault ("status", 1, 502, -1, NULL);

    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "retry:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (d, "status"), "disconnected");
    assert_null (json_object_get (d, "warnings"));
    assert_int_equal (itest_stat (h, "fakebox", "revocations"), revocations + 1);
    size_t n = revoke_requests (at, 64);
    assert_int_equal (n, before + 3);
    assert_true (at [before + 1] - at [before] >= 900);     /* Retry-After: 1 */
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'retry:box'"
                            " AND outcome = 'revoked' AND detail LIKE '%%after 3 attempts%%'"), 1);

    /* a provider that stays down: a few attempts, then the warning and the record */
    json_t *c2 = connect_ok ("down:box", "fakebox", NULL, NULL);
    revocations = itest_stat (h, "fakebox", "revocations");
    before = revoke_requests (at, 64);
    revoke_fault ("status", -1, 503, -1, NULL);
    json_t *d2 = harness_ctl (h, &rc, "disconnect", "--integration", "down:box", NULL);
    json_decref (harness_fake (h, "DELETE", "/admin/faults?provider=fakebox", NULL));
    assert_int_equal (rc, 0);
    const char *message = refused_warning (d2);
    assert_non_null (strstr (message, "HTTP 503"));
    assert_non_null (strstr (message, "3 attempts"));
    assert_int_equal (revoke_requests (at, 64), before + 3);
    assert_int_equal (itest_stat (h, "fakebox", "revocations"), revocations);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'down:box'"
                            " AND outcome = 'revocation_failed' AND detail LIKE '%%HTTP 503%%'"), 1);
    json_decref (c);
    json_decref (d);
    json_decref (c2);
    json_decref (d2);
}

/* A provider whose description (Zoom's "reason") quotes the code or token it was sent: what the
 * user reads, the log and the records say the description was withheld, and never hold it. */
static void
test_provider_text_quoting_secrets (void **state)
{
    int rc;
    char *location = start_flow ("quote:box", "fakebox", NULL, NULL);
    json_t *f = json_pack ("{s:s, s:s, s:i}", "provider", "fakebox", "kind", "reason_quoting", "count", 1);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    json_t *r = callback (location, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "code_expired_or_used");
    assert_null (strstr (error_field (r, "message"), "fake-code-"));
    assert_non_null (strstr (error_field (r, "message"), "withheld"));
    assert_int_equal (sqlf ("SELECT count(*) FROM pending_authorizations WHERE integration_id = 'quote:box'"
                            " AND row_to_json (pending_authorizations)::text LIKE '%%fake-code-%%'"), 0);
    const char *code = strstr (location, "code=") + 5;
    char sent [256];
    snprintf (sent, sizeof sent, "%.*s", (int) strcspn (code, "&"), code);
    assert_true (strncmp (sent, "fake-code-", 10) == 0);
    assert_false (itest_workdir_contains (h, sent));

    json_t *c = connect_ok ("quote:box", "fakebox", NULL, NULL);
    f = json_pack ("{s:s, s:s, s:i}", "provider", "fakebox", "kind", "reason_quoting", "count", 1);
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    json_t *rf = harness_ctl (h, &rc, "refresh", "--integration", "quote:box", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (rf), "needs_reconnect");
    assert_null (strstr (error_field (rf, "message"), "fake-rt-"));
    assert_non_null (strstr (error_field (rf, "message"), "withheld"));
    revoke_fault ("reason_quoting", 1, -1, -1, NULL);
    json_t *d = harness_ctl (h, &rc, "disconnect", "--integration", "quote:box", NULL);
    assert_int_equal (rc, 0);
    const char *message = refused_warning (d);
    assert_non_null (strstr (message, "withheld"));
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'quote:box'"
                            " AND (detail LIKE '%%fake-rt-%%' OR detail LIKE '%%fake-code-%%')"), 0);
    assert_false (itest_workdir_contains (h, "fake-rt-"));
    free (location);
    json_decref (r);
    json_decref (rf);
    json_decref (c);
    json_decref (d);
}

/* Microsoft issues a refresh token only when offline_access is among the scopes. A connect that
 * named its own scopes (--scope Files.Read) sent those instead of the catalog's default ones,
 * offline_access with them, so the callback answered no_refresh_token, with a hint to check that
 * the provider entry asks for offline access (it did), and a retry repeated the same scopes. */
static void
test_explicit_scopes_keep_the_offline_scope (void **state)
{
    int rc;
    json_t *r = connect_ok ("files:microsoft", "microsoft", "Files.Read", NULL);
    assert_true (json_is_false (json_object_get (integration_of (r), "refresh_token_missing")));
    assert_null (json_object_get (r, "warnings"));
    const json_t *asked = json_object_get (integration_of (r), "requested_scopes");
    assert_int_equal (json_array_size (asked), 2);
    assert_string_equal (json_string_value (json_array_get (asked, 0)), "Files.Read");
    assert_string_equal (json_string_value (json_array_get (asked, 1)), "offline_access");
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=microsoft&limit=2", NULL);
    json_t *authorize = json_array_get (json_object_get (reqs, "requests"), 0);
    assert_string_equal (json_string_value (json_object_get (authorize, "path")), "/microsoft/authorize");
    assert_string_equal (json_string_value (json_object_get (authorize, "scope")), "Files.Read offline_access");
    /* a scope already named is not asked for twice */
    json_t *c = connect_ ("files2:microsoft", "microsoft", REDIRECT, &rc, "offline_access", "Files.Read", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_array_size (json_object_get (c, "scopes")), 2);
    assert_non_null (strstr (json_string_value (json_object_get (c, "authorization_url")),
                             "scope=offline_access%20Files.Read&"));

    /* asked for offline_access, and still no refresh token: the hint does not blame the entry */
    itest_fake_config (h, "microsoft", json_pack ("{s:b}", "issue_refresh_token", 0));
    char *location = start_flow ("asked:microsoft", "microsoft", "Files.Read", NULL);
    json_t *n = callback (location, &rc);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (n), "no_refresh_token");
    const char *hint = error_field (n, "hint");
    if (!strstr (hint, "\"offline_access\"") || strstr (hint, "check that the provider entry"))
        fail_msg ("no refresh token although offline_access was asked for; the hint: %s", hint);
    json_t *d = harness_ctl (h, &rc, "doctor", "--integration", "asked:microsoft", NULL);
    assert_int_equal (rc, 0);
    const char *cause = json_string_value (json_object_get (json_object_get (d, "diagnosis"), "cause"));
    assert_non_null (strstr (cause, "asked for \"offline_access\""));

    /* a connect that did not ask for it (started by a worker before this one): said so */
    json_t *c3 = connect_ ("unasked:microsoft", "microsoft", REDIRECT, &rc, "Files.Read", NULL, NULL);
    assert_int_equal (rc, 0);
    long status;
    char *loc3 = browse (json_string_value (json_object_get (c3, "authorization_url")), &status, NULL);
    assert_int_equal (status, 302);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET requested_scopes = '{Files.Read}'"
                                      " WHERE integration_id = 'unasked:microsoft'"), 0);
    json_t *n3 = callback (loc3, &rc);
    itest_fake_config (h, "microsoft", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (n3), "no_refresh_token");
    hint = error_field (n3, "hint");
    if (!strstr (hint, "without scope \"offline_access\"") || !strstr (hint, "connect again"))
        fail_msg ("no refresh token, offline_access not asked for; the hint: %s", hint);
    json_t *d3 = harness_ctl (h, &rc, "doctor", "--integration", "unasked:microsoft", NULL);
    assert_int_equal (rc, 0);
    cause = json_string_value (json_object_get (json_object_get (d3, "diagnosis"), "cause"));
    if (!strstr (cause, "did not ask for \"offline_access\""))
        fail_msg ("doctor, offline_access not asked for: %s", cause);
    free (location);
    free (loc3);
    json_decref (r);
    json_decref (reqs);
    json_decref (c);
    json_decref (n);
    json_decref (d);
    json_decref (c3);
    json_decref (n3);
    json_decref (d3);
}

/* The code exchange's answer carries a refresh token but no access token. The code is spent and
 * that refresh token is the grant's only copy: the callback answered provider_bad_response and
 * threw it away, where a refresh's answer like it is stored. */
static void
test_exchange_without_access_token (void **state)
{
    int rc;
    char *location = start_flow ("noat:box", "fakebox", "read", NULL);
    itest_fault (h, "fakebox", "no_access_token", 1, -1, -1, -1);
    json_t *r = callback (location, &rc);
    if (rc != 0)
        fail_msg ("callback: exit %d, %s: %s (hint: %s)", rc, itest_code (r), error_field (r, "message"),
                  error_field (r, "hint"));
    assert_string_equal (istr (r, "status"), "active");
    assert_true (json_is_false (json_object_get (integration_of (r), "refresh_token_missing")));
    const json_t *w = json_array_get (json_object_get (r, "warnings"), 0);
    assert_non_null (w);
    assert_string_equal (json_string_value (json_object_get (w, "code")), "provider_bad_response");
    assert_non_null (strstr (json_string_value (json_object_get (w, "message")), "no usable access token"));
    assert_int_equal (sqlf ("SELECT count(*) FROM integrations WHERE id = 'noat:box' AND refresh_token IS NOT NULL"
                            " AND access_expires_at <= now()"), 1);
    assert_int_equal (sqlf ("SELECT count(*) FROM token_chain WHERE integration_id = 'noat:box'"
                            " AND outcome = 'connected' AND detail LIKE '%%no usable access token%%'"), 1);
    /* the first token request refreshes with it */
    long long refreshes = itest_stat (h, "fakebox", "refresh_calls");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "noat:box", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t, "refreshed")));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), refreshes + 1);
    free (location);
    json_decref (r);
    json_decref (t);
}

/* The provider takes the code, then the connection closes before any answer. On a connection kept
 * from an earlier call, libcurl sent the request again on a new one: the second exchange of the
 * spent code got invalid_grant (and revoked the tokens of the first), and the user was told the
 * code had expired or been used. An exchange goes out once: one request, and a transient failure. */
static void
test_exchange_sent_once_when_the_connection_drops (void **state)
{
    int rc;
    /* each worker keeps a connection to the provider from an exchange of its own (a callback goes
     * to the worker its state picks) */
    static const char warmed [] = "SELECT count(DISTINCT worker) FROM token_chain WHERE integration_id LIKE 'warm%%:box'"
                                  " AND outcome = 'connected'";
    for (int i = 0; i < 40 && sqlf (warmed) < 2; i++) {
        char id [32];
        snprintf (id, sizeof id, "warm%d:box", i);
        json_decref (connect_ok (id, "fakebox", NULL, NULL));
    }
    assert_int_equal (sqlf (warmed), 2);

    char *location = start_flow ("once:box", "fakebox", NULL, NULL);
    size_t sent = (size_t) fakebox_exchanges ();
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    long long invalid = itest_stat (h, "fakebox", "invalid_grants");
    itest_fault (h, "fakebox", "drop_after", 1, -1, -1, -1);
    json_t *r = callback (location, &rc);
    size_t made = (size_t) fakebox_exchanges () - sent;
    if (made != 1 || rc != 5 || strcmp (itest_code (r), "provider_unavailable") != 0)
        fail_msg ("a code exchange whose connection dropped after the provider took the code: %zu requests (1 "
                  "wanted), exit %d, %s: %s", made, rc, itest_code (r), error_field (r, "message"));
    assert_non_null (strstr (error_field (r, "message"), "the code was not sent again"));
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 1);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), invalid);
    free (location);
    json_decref (r);
}

/* A redirect URI of 300 characters cut the hint of a redirect_uri_mismatch before the guide's
 * "contact support with the provider name" (a 400-byte buffer), and one of 900 the message before
 * "(provider said ...)". */
static void
test_redirect_uri_mismatch_long_uri (void **state)
{
    int rc;
    char uri [1024];
    int n = snprintf (uri, sizeof uri, "http://127.0.0.1/callback/");
    memset (uri + n, 'a', 300 - (size_t) n);
    uri [300] = '\0';
    json_t *c = connect_ ("longuri:box", "fakebox", uri, &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    char crafted [2048];
    snprintf (crafted, sizeof crafted, "%s?error=redirect_uri_mismatch&error_description=Bad+redirect+URI&state=%s",
              uri, json_string_value (json_object_get (c, "state")));
    json_t *r = callback (crafted, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (r), "redirect_uri_mismatch");
    if (!strstr (error_field (r, "hint"), "contact support with the provider name"))
        fail_msg ("a 300-character redirect URI; the hint: %s", error_field (r, "hint"));
    assert_non_null (strstr (error_field (r, "message"), "Bad redirect URI"));
    const json_t *detail = json_object_get (json_object_get (r, "error"), "detail");
    assert_string_equal (json_string_value (json_object_get (detail, "redirect_uri_sent")), uri);

    /* at the exchange, with one of 900 registered and another sent with the code */
    memset (uri + n, 'b', 900 - (size_t) n);
    uri [900] = '\0';
    itest_fake_config (h, "fakebox", json_pack ("{s:[s,s]}", "redirect_uris", REDIRECT, uri));
    json_t *c2 = connect_ ("longuri2:box", "fakebox", uri, &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    long status;
    char *location = browse (json_string_value (json_object_get (c2, "authorization_url")), &status, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "redirect_uris", REDIRECT));
    assert_int_equal (status, 302);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET redirect_uri = redirect_uri || 'c'"
                                      " WHERE integration_id = 'longuri2:box'"), 0);
    json_t *x = callback (location, &rc);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (x), "redirect_uri_mismatch");
    if (!strstr (error_field (x, "message"), "(provider said: invalid_grant"))
        fail_msg ("a 900-character redirect URI; the message: %s", error_field (x, "message"));
    if (!strstr (error_field (x, "hint"), "contact support with the provider name"))
        fail_msg ("a 900-character redirect URI; the hint: %s", error_field (x, "hint"));
    free (location);
    json_decref (c);
    json_decref (r);
    json_decref (c2);
    json_decref (x);
}

static void
test_connect_without_pkce (void **state)
{
    int rc;
    json_t *c = connect_ ("nopkce:box", "fakeplain", REDIRECT, &rc, NULL, NULL, NULL);
    assert_int_equal (rc, 0);
    assert_null (strstr (json_string_value (json_object_get (c, "authorization_url")), "code_challenge"));
    json_decref (c);
    json_t *r = connect_ok ("nopkce:box", "fakeplain", NULL, NULL);
    json_t *reqs = harness_fake (h, "GET", "/admin/requests?provider=fakeplain&limit=1", NULL);
    json_t *last = json_array_get (json_object_get (reqs, "requests"), 0);
    assert_true (json_is_false (json_object_get (last, "has_code_verifier")));
    json_decref (r);
    json_decref (reqs);
}

/* The provider's instance_url (fakesf's api_base_field) reaches callers as api_base_url: from the
 * code exchange, in the integration and every token reply (the cache's packed reply too); a
 * refresh answer with a new one replaces it, one without keeps it, and an unusable one is ignored
 * with a warning that does not quote it, the refresh succeeding and its rotated token kept. */
static void
test_api_base_url (void **state)
{
    const char *id = "apibase:sf";
    int rc;
    char sql [512];
    itest_fake_config (h, "fakesf", json_pack ("{s:s}", "instance_url", "https://acme.my.salesforce.com"));
    json_t *r = connect_ok (id, "fakesf", "api", NULL);
    assert_string_equal (istr (r, "api_base_url"), "https://acme.my.salesforce.com");
    json_decref (r);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE id = '%s'"
              " AND api_base_url = 'https://acme.my.salesforce.com'", id);
    assert_int_equal (harness_sql_int (h, sql), 1);
    for (int i = 0; i < 2; i++) {       /* read into the cache, then a hit from its packed reply */
        json_t *t = harness_ctl (h, &rc, "token", "--integration", id, NULL);
        assert_int_equal (rc, 0);
        assert_true (json_is_false (json_object_get (t, "refreshed")));
        assert_string_equal (json_string_value (json_object_get (t, "api_base_url")), "https://acme.my.salesforce.com");
        json_decref (t);
    }
    /* the other providers' replies carry none */
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "apibase:box", "fakebox", rt), 0);
    mem_free (rt);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "apibase:box", NULL);
    assert_int_equal (rc, 0);
    assert_null (json_object_get (t, "api_base_url"));
    json_decref (t);

    /* each refresh's answer: a new host replaces the stored one; none, or an unusable one, keeps it */
    char too_long [301];
    snprintf (too_long, sizeof too_long, "https://acme2.my.salesforce.com/%0268d", 0);
    assert_int_equal (strlen (too_long), 300);
    const struct { const char *sent, *kept; } steps [] = {
        { "https://acme2.my.salesforce.com", "https://acme2.my.salesforce.com" },
        { NULL, "https://acme2.my.salesforce.com" },
        { "javascript:alert(document.cookie)", "https://acme2.my.salesforce.com" },
        { too_long, "https://acme2.my.salesforce.com" },
        { "http://evil.example", "https://acme2.my.salesforce.com" },
        { "https://user:pw@evil.example", "https://acme2.my.salesforce.com" },
    };
    long long reuses = itest_stat (h, "fakesf", "reuse_detections");
    long long invalid = itest_stat (h, "fakesf", "invalid_grants");
    for (size_t i = 0; i < sizeof steps / sizeof steps [0]; i++) {
        itest_fake_config (h, "fakesf", steps [i].sent ? json_pack ("{s:s}", "instance_url", steps [i].sent)
                                                       : json_pack ("{s:n}", "instance_url"));
        snprintf (sql, sizeof sql, "SELECT generation FROM integrations WHERE id = '%s'", id);
        long long generation = harness_sql_int (h, sql);
        itest_expire (h, id);
        t = harness_ctl (h, &rc, "token", "--integration", id, NULL);
        if (rc != 0)
            fail_msg ("step %zu: exit %d, %s", i, rc, itest_code (t));
        assert_true (json_is_true (json_object_get (t, "refreshed")));
        assert_string_equal (json_string_value (json_object_get (t, "api_base_url")), steps [i].kept);
        json_decref (t);
        /* stored with the rotated refresh token (a lost one would make the next refresh invalid_grant) */
        snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE id = '%s' AND generation = %lld"
                  " AND api_base_url = '%s'", id, generation + 1, steps [i].kept);
        assert_int_equal (harness_sql_int (h, sql), 1);
        t = harness_ctl (h, &rc, "token", "--integration", id, NULL);      /* a cache hit now */
        assert_int_equal (rc, 0);
        assert_true (json_is_false (json_object_get (t, "refreshed")));
        assert_string_equal (json_string_value (json_object_get (t, "api_base_url")), steps [i].kept);
        json_decref (t);
    }
    assert_int_equal (itest_stat (h, "fakesf", "reuse_detections"), reuses);
    assert_int_equal (itest_stat (h, "fakesf", "invalid_grants"), invalid);
    snprintf (sql, sizeof sql, "SELECT count(*) FROM token_chain WHERE integration_id = '%s' AND outcome = 'refreshed'"
              " AND rotated", id);
    assert_int_equal (harness_sql_int (h, sql), (long long) (sizeof steps / sizeof steps [0]));
    /* the status map too */
    json_t *s = harness_ctl (h, &rc, "status", "--integration", id, NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (s, "api_base_url"), "https://acme2.my.salesforce.com");
    json_decref (s);
    /* the ignored values were logged as ignored, never quoted */
    itest_wait_log (h, "\\\"instance_url\\\" is ignored, it is not an absolute https:// URL", 10000);
    itest_wait_log (h, "is ignored, it is longer than 255 bytes", 10000);
    itest_wait_log (h, "is ignored, it is an http:// URL to a host other than 127.0.0.1", 10000);
    itest_wait_log (h, "is ignored, it carries credentials", 10000);
    assert_false (itest_workdir_contains (h, "document.cookie"));
    assert_false (itest_workdir_contains (h, "evil.example"));
    assert_false (itest_workdir_contains (h, "000000000000000000000000"));

    /* an operator's import takes one, and refuses an unusable one */
    rt = itest_grant (h, "fakesf", NULL);
    json_t *imp = harness_ctl (h, &rc, "import", "--integration", "apibase:sf2", "--provider", "fakesf",
                               "--refresh-token", rt, "--api-base-url", "https://acme3.my.salesforce.com", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (istr (imp, "api_base_url"), "https://acme3.my.salesforce.com");
    json_decref (imp);
    /* ferrulectl refuses it before sending (the service's own refusal is unit_oauth's) */
    imp = harness_ctl (h, &rc, "import", "--integration", "apibase:sf3", "--provider", "fakesf",
                       "--refresh-token", rt, "--api-base-url", "http://evil.example", NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (imp), "bad_request");
    assert_non_null (strstr (error_field (imp, "message"), "invalid URL for \"--api-base-url\""));
    json_decref (imp);
    mem_free (rt);
    itest_fake_config (h, "fakesf", json_pack ("{s:n}", "instance_url"));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_connect_with_pkce),
        cmocka_unit_test (test_connect_short_lived_token_not_refreshed),
        cmocka_unit_test (test_authorization_urls_of_real_providers),
        cmocka_unit_test (test_connect_without_pkce),
        cmocka_unit_test (test_explicit_scopes_keep_the_offline_scope),
        cmocka_unit_test (test_exchange_without_access_token),
        cmocka_unit_test (test_exchange_sent_once_when_the_connection_drops),
        cmocka_unit_test (test_redirect_uri_mismatch_long_uri),
        cmocka_unit_test (test_expired_state),
        cmocka_unit_test (test_code_expired_or_used),
        cmocka_unit_test (test_form_encoded_answers),
        cmocka_unit_test (test_hubspot_code_refused),
        cmocka_unit_test (test_hubspot_code_refused_at_any_entry),
        cmocka_unit_test (test_access_denied),
        cmocka_unit_test (test_sign_in_required_is_the_users),
        cmocka_unit_test (test_redirect_uri_mismatch),
        cmocka_unit_test (test_invalid_client),
        cmocka_unit_test (test_client_refused_is_not_always_the_secret),
        cmocka_unit_test (test_invalid_scope),
        cmocka_unit_test (test_no_refresh_token),
        cmocka_unit_test (test_token_without_expiry),
        cmocka_unit_test (test_no_refresh_token_without_a_lifetime),
        cmocka_unit_test (test_rejected_token_without_refresh_token),
        cmocka_unit_test (test_rejected_token_unserved_while_its_write_waits),
        cmocka_unit_test (test_scopes_reduced_and_required),
        cmocka_unit_test (test_report_scope),
        cmocka_unit_test (test_reconnect_over_needs_reconnect),
        cmocka_unit_test (test_disconnect),
        cmocka_unit_test (test_disconnect_keeps_a_shared_grant),
        cmocka_unit_test (test_disconnect_revocation_refused_in_body),
        cmocka_unit_test (test_disconnect_revocation_retried),
        cmocka_unit_test (test_disconnect_revocation_already_invalid),
        cmocka_unit_test (test_api_base_url),
        cmocka_unit_test (test_disconnect_during_refresh_revokes_the_new_token),
        cmocka_unit_test (test_disconnect_during_refresh_revocation_refused),
        cmocka_unit_test (test_disconnect_during_refresh_revoked_once_the_database_takes_the_record),
        cmocka_unit_test (test_disconnect_during_a_callbacks_exchange_stands),
        cmocka_unit_test (test_a_slow_callback_never_overwrites_a_newer_connect),
        cmocka_unit_test (test_import_during_refresh_revokes_nothing),
        cmocka_unit_test (test_provider_text_quoting_secrets),
        cmocka_unit_test (test_disconnect_during_refresh_revoked_after_a_stop),
        cmocka_unit_test (test_disconnect_during_refresh_revoked_after_a_crash),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
