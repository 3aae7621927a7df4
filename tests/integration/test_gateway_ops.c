/* test_gateway_ops.c - the workers' gateway operations (worker/gwops.c, worker/store_gateway.c)
 * over the protocol, without the gateway: every refusal's code, message and hint, a retry token
 * issued once per attempt and spent once, a dashboard link spent once, the workspace listing's
 * prefix range and its cap, a listing cut to the objects a client decodes, a workspace that must
 * end with a separator, the live API key limit,
 * a retry token that outlives a connect it could not start, the retry of a connect of 64 scopes
 * and an added refresh scope, and retry tokens and dashboard links
 * collected a day past their expiry. Replies can hold tokens: never printed. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "client.h"
#include "itest.h"

static harness_t *h;
static client_t *cli;

static int
setup (void **state)
{
    h = harness_new ("gateway_ops");
    if (!h)
        return -1;
    /* fakeoffline: fakebox's settings, with a scope every connect adds (as Microsoft's
     * offline_access), in the harness's own providers file, which every restart here reads */
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!root)
        return -1;
    json_t *offline = json_deep_copy (json_object_get (root, "fakebox"));
    json_object_set_new (offline, "refresh_token_scopes", json_pack ("[s]", "offline_access"));
    json_object_set_new (root, "fakeoffline", offline);
    int written = json_dump_file (root, harness_providers_file (h), JSON_INDENT (2));
    json_decref (root);
    if (written != 0 || harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0
    ||  harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "redirect_uris", "http://127.0.0.1:9/cb"));
    cli = client_new (harness_brokers (h));
    return cli ? 0 : -1;
}

static int
teardown (void **state)
{
    client_destroy (&cli);
    return itest_teardown (&h);
}

static json_t *
call (const char *op, json_t *args)
{
    json_t *r = client_call (cli, op, args, 20000);
    json_decref (args);
    assert_non_null (r);
    return r;
}

static const char *
error_field (const json_t *r, const char *key)
{
    return json_string_value (json_object_get (json_object_get (r, "error"), key));
}

/* op with args is refused with code, message and hint (NULL: the code's default one). */
static void
refused (const char *op, json_t *args, const char *code, const char *message, const char *hint)
{
    json_t *r = call (op, args);
    if (strcmp (client_error_code (r), code) != 0)
        fail_msg ("%s: answered %s, expected %s", op, client_error_code (r), code);
    assert_non_null (error_field (r, "message"));
    if (strcmp (error_field (r, "message"), message) != 0)
        fail_msg ("%s: message \"%s\", expected \"%s\"", op, error_field (r, "message"), message);
    if (hint)
        assert_string_equal (error_field (r, "hint") ? error_field (r, "hint") : "(none)", hint);
    else
        assert_non_null (error_field (r, "hint"));       /* the code's default hint */
    json_decref (r);
}

/* A connect of id that ended in access_denied: its state (the callback URL's) into st. */
static void
failed_attempt (const char *id, char st [300])
{
    json_t *c = call ("connect", json_pack ("{s:s, s:s, s:s, s:[s]}", "integration", id, "provider", "fakebox",
                                            "redirect_uri", "http://127.0.0.1:9/cb", "scopes", "read"));
    assert_string_equal (client_error_code (c), "ok");
    const char *p = strstr (json_string_value (json_object_get (c, "authorization_url")), "state=");
    assert_non_null (p);
    snprintf (st, 300, "%.*s", (int) strcspn (p + 6, "&"), p + 6);
    json_decref (c);
    json_t *cb = call ("callback", json_pack ("{s:s, s:s}", "state", st, "error", "access_denied"));
    assert_string_equal (client_error_code (cb), "access_denied");
    json_decref (cb);
}

/* The retry token the attempt of state st draws (caller frees). */
static char *
attempt_retry_token (const char *st)
{
    json_t *a = call ("attempt", json_pack ("{s:s}", "state", st));
    assert_string_equal (client_error_code (a), "ok");
    const char *token = json_string_value (json_object_get (a, "retry_token"));
    assert_non_null (token);
    char *copy = strdup (token);
    json_decref (a);
    return copy;
}

/* Restarts w1 with the providers file at path. */
static void
restart_worker (const char *providers_file)
{
    harness_stop_worker (h, "w1");
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", providers_file);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
}

static char *
repeat (char c, size_t n)
{
    char *s = malloc (n + 1);
    memset (s, c, n);
    s [n] = '\0';
    return s;
}

static void
test_refusals (void **state)
{
    char *long_state = repeat ('s', 257), *long_token = repeat ('t', 129), *long_name = repeat ('n', 65);

    /* attempt, retry, dashboard_open and apikey_verify are routed by their token; the broker
       refuses a missing one itself, and one with an "integration" (it would be routed by that,
       and audited under it, while the worker serves whatever the token belongs to) */
    refused ("attempt", json_pack ("{s:s, s:s}", "integration", "ws1:", "state", "s"), "bad_request",
             "\"attempt\" is routed by its \"state\" and takes no \"integration\"",
             "send it without \"integration\": the value names the integration");
    refused ("attempt", json_object (), "bad_request", "\"state\" must be a string of 1 to 256 bytes", NULL);
    refused ("attempt", json_pack ("{s:i}", "state", 5), "bad_request", "\"state\" must be a string of 1 to 256 bytes", NULL);
    refused ("attempt", json_pack ("{s:s}", "state", "a\tb"), "bad_request",
             "\"state\" must be a string of 1 to 256 printable ASCII characters", NULL);
    /* over the cap: too_large, as for every other string field (docs/protocol.md, "Errors") */
    refused ("attempt", json_pack ("{s:s}", "state", long_state), "too_large",
             "\"state\" must be a string of 1 to 256 bytes", NULL);
    refused ("attempt", json_pack ("{s:s}", "state", "never-issued"), "not_found",
             "no connect attempt has this state", "start again from Connect");

    refused ("retry", json_object (), "bad_request", "\"retry_token\" must be a string of 1 to 256 bytes", NULL);
    refused ("retry", json_pack ("{s:s}", "retry_token", long_token), "too_large",
             "\"retry_token\" must be a string of 1 to 128 printable ASCII characters", NULL);
    refused ("retry", json_pack ("{s:s}", "retry_token", "never-issued"), "state_invalid",
             "this retry link expired or was already used", "start again from Connect on the dashboard");

    /* a bad workspace prefix is refused by the broker, which checks every "integration" */
    refused ("dashboard_link", json_pack ("{s:s, s:i}", "integration", "ws1:", "ttl_s", 29), "bad_request",
             "\"ttl_s\" must be an integer from 30 to 3600", NULL);
    refused ("dashboard_link", json_pack ("{s:s, s:s}", "integration", "ws1:", "ttl_s", "600"), "bad_request",
             "\"ttl_s\" must be an integer from 30 to 3600", NULL);
    refused ("dashboard_open", json_object (), "bad_request", "\"link_token\" must be a string of 1 to 256 bytes", NULL);
    refused ("dashboard_open", json_pack ("{s:s}", "link_token", "never-issued"), "state_invalid",
             "this dashboard link expired or was already used", "ask the application for a new dashboard link");

    refused ("apikey_create", json_pack ("{s:s}", "integration", "ws1:"), "bad_request", "\"name\" is required", NULL);
    refused ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws1:", "name", long_name), "too_large",
             "\"name\" must be a string of 1 to 64 printable ASCII characters", NULL);
    refused ("apikey_revoke", json_pack ("{s:s}", "integration", "ws1:"), "bad_request",
             "\"key_id\" is required: a positive integer", NULL);
    refused ("apikey_revoke", json_pack ("{s:s, s:i}", "integration", "ws1:", "key_id", 0), "bad_request",
             "\"key_id\" is required: a positive integer", NULL);
    refused ("apikey_revoke", json_pack ("{s:s, s:i}", "integration", "ws1:", "key_id", 999999), "not_found",
             "workspace \"ws1:\" has no live API key 999999", "list the keys to see their ids");
    refused ("apikey_verify", json_object (), "bad_request", "\"key\" must be a string of 1 to 256 bytes", NULL);
    refused ("apikey_verify", json_pack ("{s:s}", "key", "frk_never-issued"), "not_found",
             "the API key is unknown or revoked", "create a new API key on the dashboard");
    free (long_state);
    free (long_token);
    free (long_name);
}

/* A connect that ended in access_denied: its attempt draws one retry token, once; the token
 * starts a fresh connect once. */
static void
test_attempt_retry_once (void **state)
{
    json_t *c = call ("connect", json_pack ("{s:s, s:s, s:s, s:[s], s:s}", "integration", "ws2:box", "provider", "fakebox",
                                            "redirect_uri", "http://127.0.0.1:9/cb", "scopes", "read",
                                            "return_to", "https://app.example.test/done"));
    assert_string_equal (client_error_code (c), "ok");
    const char *url = json_string_value (json_object_get (c, "authorization_url"));
    assert_non_null (url);
    const char *p = strstr (url, "state=");
    assert_non_null (p);
    char st [300];
    snprintf (st, sizeof st, "%.*s", (int) strcspn (p + 6, "&"), p + 6);
    json_decref (c);

    /* pending, not expired, no outcome: nothing to retry yet */
    json_t *a = call ("attempt", json_pack ("{s:s}", "state", st));
    assert_string_equal (client_error_code (a), "ok");
    assert_string_equal (json_string_value (json_object_get (a, "integration")), "ws2:box");
    assert_string_equal (json_string_value (json_object_get (a, "provider")), "fakebox");
    assert_string_equal (json_string_value (json_object_get (a, "redirect_uri")), "http://127.0.0.1:9/cb");
    assert_string_equal (json_string_value (json_array_get (json_object_get (a, "scopes"), 0)), "read");
    assert_string_equal (json_string_value (json_object_get (a, "return_to")), "https://app.example.test/done");
    assert_true (json_is_null (json_object_get (a, "outcome")));
    assert_true (json_is_null (json_object_get (a, "status")));           /* never connected */
    assert_true (json_is_null (json_object_get (a, "retry_token")));
    json_decref (a);

    json_t *cb = call ("callback", json_pack ("{s:s, s:s}", "state", st, "error", "access_denied"));
    assert_string_equal (client_error_code (cb), "access_denied");
    json_decref (cb);

    a = call ("attempt", json_pack ("{s:s}", "state", st));
    assert_string_equal (client_error_code (a), "ok");
    assert_string_equal (json_string_value (json_object_get (a, "outcome")), "access_denied");
    const char *token = json_string_value (json_object_get (a, "retry_token"));
    assert_non_null (token);
    assert_true (json_is_string (json_object_get (a, "retry_expires_at")));
    char *retry_token = strdup (token);
    json_decref (a);
    /* only its hash is stored */
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM gateway_retry_tokens WHERE token_hash = '%s'", retry_token);
    assert_int_equal (harness_sql_int (h, sql), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM gateway_retry_tokens WHERE integration_id = 'ws2:box'"), 1);

    /* once per attempt */
    a = call ("attempt", json_pack ("{s:s}", "state", st));
    assert_string_equal (client_error_code (a), "ok");
    assert_true (json_is_null (json_object_get (a, "retry_token")));
    json_decref (a);

    json_t *r = call ("retry", json_pack ("{s:s}", "retry_token", retry_token));
    assert_string_equal (client_error_code (r), "ok");
    url = json_string_value (json_object_get (r, "authorization_url"));
    assert_non_null (url);
    assert_non_null (strstr (url, "scope=read"));
    json_decref (r);
    /* the fresh connect kept the attempt's return_to */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM pending_authorizations WHERE integration_id = 'ws2:box'"
                                          " AND return_to = 'https://app.example.test/done'"), 2);
    refused ("retry", json_pack ("{s:s}", "retry_token", retry_token), "state_invalid",
             "this retry link expired or was already used", "start again from Connect on the dashboard");
    assert_false (itest_workdir_contains (h, retry_token));     /* in no log of any process */
    free (retry_token);
}

static void
test_dashboard_link_once (void **state)
{
    json_t *l = call ("dashboard_link", json_pack ("{s:s}", "integration", "ws3:"));
    assert_string_equal (client_error_code (l), "ok");
    assert_string_equal (json_string_value (json_object_get (l, "workspace")), "ws3:");
    assert_true (json_is_string (json_object_get (l, "expires_at")));
    char *token = strdup (json_string_value (json_object_get (l, "link_token")));
    json_decref (l);
    json_t *o = call ("dashboard_open", json_pack ("{s:s}", "link_token", token));
    assert_string_equal (client_error_code (o), "ok");
    assert_string_equal (json_string_value (json_object_get (o, "workspace")), "ws3:");
    json_decref (o);
    refused ("dashboard_open", json_pack ("{s:s}", "link_token", token), "state_invalid",
             "this dashboard link expired or was already used", "ask the application for a new dashboard link");
    assert_false (itest_workdir_contains (h, token));
    free (token);
}

/* The listing is the prefix's byte range, by id, capped at 200 with "truncated". */
static void
test_workspace_range_and_cap (void **state)
{
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id)"
                                      " SELECT 'wst:' || lpad (g::text, 4, '0'), 'fakebox', 1 FROM generate_series (1, 201) g"
                                      " UNION ALL VALUES ('wss:z', 'fakebox', 1), ('wsu:a', 'fakebox', 1), ('wst', 'fakebox', 1)"), 0);
    json_t *ls = call ("workspace", json_pack ("{s:s}", "integration", "wst:"));
    assert_string_equal (client_error_code (ls), "ok");
    assert_true (json_is_true (json_object_get (ls, "truncated")));
    json_t *items = json_object_get (ls, "integrations");
    assert_int_equal (json_array_size (items), 200);
    assert_string_equal (json_string_value (json_object_get (json_array_get (items, 0), "id")), "wst:0001");
    assert_string_equal (json_string_value (json_object_get (json_array_get (items, 199), "id")), "wst:0200");
    json_t *first = json_array_get (items, 0);
    assert_string_equal (json_string_value (json_object_get (first, "status")), "active");
    assert_true (json_is_null (json_object_get (first, "last_error")));
    assert_true (json_is_array (json_object_get (first, "scopes")));
    json_decref (ls);

    /* "wst" itself and "wss:z", either side of the range, are not "wsu:"'s */
    ls = call ("workspace", json_pack ("{s:s}", "integration", "wsu:"));
    assert_false (json_is_true (json_object_get (ls, "truncated")));
    assert_int_equal (json_array_size (json_object_get (ls, "integrations")), 1);
    assert_string_equal (json_string_value (json_object_get (json_array_get (json_object_get (ls, "integrations"), 0),
                                                             "id")), "wsu:a");
    json_decref (ls);
}

/* 200 integrations of 80 scopes each are a listing of some 20,000 objects in 100 KiB: within a
 * frame, over the 16,384 objects a client decodes, which refused the reply as malformed (its hint
 * blamed the protocol version). As many as fit are listed, "truncated" saying there are more. */
static void
test_workspace_of_many_scopes_fits (void **state)
{
    assert_int_equal (harness_sql (h, "INSERT INTO integrations (id, provider, key_id, scopes)"
                                      " SELECT 'wsm:' || lpad (g::text, 4, '0'), 'fakebox', 1,"
                                      " (SELECT array_agg ('scope.' || s) FROM generate_series (1, 80) s)"
                                      " FROM generate_series (1, 200) g"), 0);
    json_t *ls = call ("workspace", json_pack ("{s:s}", "integration", "wsm:"));
    if (strcmp (client_error_code (ls), "ok") != 0)
        fail_msg ("a listing of 200 integrations of 80 scopes: %s: %s", client_error_code (ls),
                  error_field (ls, "message") ? error_field (ls, "message") : "(no message)");
    assert_true (json_is_true (json_object_get (ls, "truncated")));
    json_t *items = json_object_get (ls, "integrations");
    size_t n = json_array_size (items);
    printf ("integrations listed: %zu of 200\n", n);
    assert_true (n >= 100 && n < 200);
    assert_string_equal (json_string_value (json_object_get (json_array_get (items, 0), "id")), "wsm:0001");
    assert_int_equal (json_array_size (json_object_get (json_array_get (items, n - 1), "scopes")), 80);
    json_decref (ls);
}

/* A workspace is an id prefix, so one that does not end with a separator would also cover the
 * ids of others: "acct4" covers "acct42:x". No link, key or listing is made for such a prefix,
 * by the protocol or by ferrulectl; keys made before may still be listed and revoked. */
static void
test_workspace_needs_separator (void **state)
{
    const char *message = "workspace \"acct4\" does not end with one of : . _ -, so it would also cover the ids of "
                          "other workspaces that start with \"acct4\"";
    const char *hint = "end the workspace with ':', as in \"acct42:\"";
    refused ("apikey_create", json_pack ("{s:s, s:s}", "integration", "acct4", "name", "k"), "bad_request", message, hint);
    refused ("dashboard_link", json_pack ("{s:s}", "integration", "acct4"), "bad_request", message, hint);
    refused ("workspace", json_pack ("{s:s}", "integration", "acct4"), "bad_request", message, hint);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM gateway_api_keys WHERE workspace = 'acct4'"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM gateway_dashboard_links WHERE workspace = 'acct4'"), 0);

    /* ferrulectl refuses it before sending */
    int rc;
    json_t *r = harness_ctl (h, &rc, "dashboard-link", "--workspace", "acct4", NULL);
    assert_int_not_equal (rc, 0);
    assert_string_equal (client_error_code (r), "bad_request");
    assert_non_null (strstr (error_field (r, "message"), "--workspace"));
    assert_non_null (strstr (error_field (r, "message"), "end it with one of : . _ -"));
    json_decref (r);

    /* each separator ends a workspace */
    const char *good [] = { "acct4:", "acct4.", "acct4_", "acct4-" };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        json_t *l = call ("dashboard_link", json_pack ("{s:s}", "integration", good [i]));
        assert_string_equal (client_error_code (l), "ok");
        json_decref (l);
    }

    /* a key stored before the rule (and before migration 010) can still be listed and revoked */
    assert_int_equal (harness_sql_before_constraint (h, "gateway_api_keys", "gateway_api_keys_workspace_end",
                                                     "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)"
                                                     " VALUES (repeat ('ab', 32), 'acct4', 'old', 'frk_old')"), 0);
    json_t *list = call ("apikey_list", json_pack ("{s:s}", "integration", "acct4"));
    assert_string_equal (client_error_code (list), "ok");
    json_t *keys = json_object_get (list, "keys");
    assert_int_equal (json_array_size (keys), 1);
    json_int_t id = json_integer_value (json_object_get (json_array_get (keys, 0), "key_id"));
    json_decref (list);
    json_t *rv = call ("apikey_revoke", json_pack ("{s:s, s:I}", "integration", "acct4", "key_id", id));
    assert_string_equal (client_error_code (rv), "ok");
    json_decref (rv);
}

static void
test_apikey_limit (void **state)
{
    json_int_t first = 0;
    for (int i = 0; i < 100; i++) {
        char name [16];
        snprintf (name, sizeof name, "k%d", i);
        json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws4:", "name", name));
        assert_string_equal (client_error_code (k), "ok");
        if (i == 0)
            first = json_integer_value (json_object_get (k, "key_id"));
        json_decref (k);
    }
    refused ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws4:", "name", "one more"), "too_large",
             "workspace \"ws4:\" already has 100 API keys", "revoke a key you no longer use, then create one");
    json_t *rv = call ("apikey_revoke", json_pack ("{s:s, s:I}", "integration", "ws4:", "key_id", first));
    assert_string_equal (client_error_code (rv), "ok");
    json_decref (rv);
    /* a key of another workspace is not this one's to revoke */
    char message [100];
    snprintf (message, sizeof message, "workspace \"ws5:\" has no live API key %lld", (long long) first + 1);
    refused ("apikey_revoke", json_pack ("{s:s, s:I}", "integration", "ws5:", "key_id", first + 1), "not_found",
             message, "list the keys to see their ids");
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws4:", "name", "one more"));
    assert_string_equal (client_error_code (k), "ok");
    char *key = strdup (json_string_value (json_object_get (k, "key")));
    json_int_t id = json_integer_value (json_object_get (k, "key_id"));
    json_decref (k);

    json_t *v = call ("apikey_verify", json_pack ("{s:s}", "key", key));
    assert_string_equal (client_error_code (v), "ok");
    assert_int_equal (json_integer_value (json_object_get (v, "key_id")), id);
    assert_string_equal (json_string_value (json_object_get (v, "workspace")), "ws4:");
    assert_string_equal (json_string_value (json_object_get (v, "name")), "one more");
    json_decref (v);

    json_t *list = call ("apikey_list", json_pack ("{s:s}", "integration", "ws4:"));
    json_t *keys = json_object_get (list, "keys");
    assert_int_equal (json_array_size (keys), 101);                                 /* the revoked one too */
    assert_int_equal (json_integer_value (json_object_get (json_array_get (keys, 0), "key_id")), id);   /* newest first */
    assert_true (json_is_string (json_object_get (json_array_get (keys, 0), "last_used_at")));
    json_t *last = json_array_get (keys, 100);
    assert_int_equal (json_integer_value (json_object_get (last, "key_id")), first);
    assert_true (json_is_string (json_object_get (last, "revoked_at")));
    json_decref (list);
    assert_false (itest_workdir_contains (h, key));             /* (its 12-character prefix may be) */
    free (key);
}

static int providers_changed;          /* w1 runs without fakebox's client secret */

/* A failed test_retry_outlives_failed_connect leaves no worker without credentials behind. */
static int
restore_providers (void **state)
{
    if (providers_changed) {
        harness_stop_worker (h, "w1");
        harness_set_env (h, "FERRULE_PROVIDERS_FILE", harness_providers_file (h));
        providers_changed = 0;
        if (harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
            return -1;
    }
    return 0;
}

/* The connect a retry starts can fail before anything is written (here the provider has no client
 * secret at the worker): the token is not spent by it, and works once the cause is mended. */
static void
test_retry_outlives_failed_connect (void **state)
{
    char st [300];
    failed_attempt ("ws6:box", st);
    char *token = attempt_retry_token (st);

    /* fakebox without its client secret, which a variable nobody sets would hold */
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    assert_non_null (root);
    json_t *box = json_object_get (root, "fakebox");
    json_object_del (box, "client_secret");
    json_object_set_new (box, "client_secret_env", json_string ("FERRULE_TEST_GW_OPS_UNSET_SECRET"));
    char path [1024];
    snprintf (path, sizeof path, "%s/providers-no-secret.json", harness_workdir (h));
    assert_int_equal (json_dump_file (root, path, JSON_INDENT (2)), 0);
    json_decref (root);
    providers_changed = 1;
    restart_worker (path);

    json_t *r = call ("retry", json_pack ("{s:s}", "retry_token", token));
    assert_string_equal (client_error_code (r), "configuration");
    assert_non_null (strstr (error_field (r, "message"), "FERRULE_TEST_GW_OPS_UNSET_SECRET"));
    json_decref (r);

    restart_worker (harness_providers_file (h));
    providers_changed = 0;
    r = call ("retry", json_pack ("{s:s}", "retry_token", token));
    assert_string_equal (client_error_code (r), "ok");
    assert_non_null (json_string_value (json_object_get (r, "authorization_url")));
    json_decref (r);
    refused ("retry", json_pack ("{s:s}", "retry_token", token), "state_invalid",
             "this retry link expired or was already used", "start again from Connect on the dashboard");
    assert_false (itest_workdir_contains (h, token));
    free (token);
}

/* A connect may name 64 scopes, and one that does at a provider entry with refresh_token_scopes
 * stores 65 (the added offline_access). Its retry rebuilt the connect from those 65, which a
 * connect may not name: bad_request, every time, while the token stayed usable. */
static void
test_retry_of_a_connect_of_64_scopes (void **state)
{
    json_t *scopes = json_array ();
    char word [16];
    for (int i = 0; i < 64; i++) {
        snprintf (word, sizeof word, "s%02d", i);
        json_array_append_new (scopes, json_string (word));
    }
    json_t *c = call ("connect", json_pack ("{s:s, s:s, s:s, s:o}", "integration", "ws8:box", "provider", "fakeoffline",
                                            "redirect_uri", "http://127.0.0.1:9/cb", "scopes", scopes));
    assert_string_equal (client_error_code (c), "ok");
    json_t *first = json_deep_copy (json_object_get (c, "scopes"));
    assert_int_equal (json_array_size (first), 65);
    assert_string_equal (json_string_value (json_array_get (first, 64)), "offline_access");
    const char *p = strstr (json_string_value (json_object_get (c, "authorization_url")), "state=");
    assert_non_null (p);
    char st [300];
    snprintf (st, sizeof st, "%.*s", (int) strcspn (p + 6, "&"), p + 6);
    json_decref (c);
    json_t *cb = call ("callback", json_pack ("{s:s, s:s}", "state", st, "error", "access_denied"));
    assert_string_equal (client_error_code (cb), "access_denied");
    json_decref (cb);
    char *token = attempt_retry_token (st);

    json_t *r = call ("retry", json_pack ("{s:s}", "retry_token", token));
    if (strcmp (client_error_code (r), "ok") != 0)
        fail_msg ("the retry of a connect of 64 scopes: %s: %s", client_error_code (r),
                  error_field (r, "message") ? error_field (r, "message") : "(no message)");
    /* the same scopes, in the same order, offline_access once */
    assert_true (json_equal (json_object_get (r, "scopes"), first));
    json_decref (r);
    json_decref (first);
    free (token);
}

typedef struct {
    const char *token;
    char code [64];
} racer_t;

static void *
race_retry (void *arg)
{
    racer_t *r = arg;
    client_t *c = client_new (harness_brokers (h));
    json_t *args = json_pack ("{s:s}", "retry_token", r->token);        /* client_call does not take it */
    json_t *reply = c ? client_call (c, "retry", args, 20000) : NULL;
    snprintf (r->code, sizeof r->code, "%s", reply ? client_error_code (reply) : "(no reply)");
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    return NULL;
}

/* Two retries of one token at once: one connect URL, one state_invalid. */
static void
test_retry_once_under_race (void **state)
{
    char st [300];
    failed_attempt ("ws6:race", st);
    char *token = attempt_retry_token (st);
    racer_t racers [2] = { { token, "" }, { token, "" } };
    pthread_t threads [2];
    for (int i = 0; i < 2; i++)
        assert_int_equal (pthread_create (&threads [i], NULL, race_retry, &racers [i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join (threads [i], NULL);
    int ok = 0, refused_ = 0;
    for (int i = 0; i < 2; i++) {
        ok += strcmp (racers [i].code, "ok") == 0;
        refused_ += strcmp (racers [i].code, "state_invalid") == 0;
    }
    if (ok != 1 || refused_ != 1)
        fail_msg ("two retries of one token answered %s and %s", racers [0].code, racers [1].code);
    /* the failed connect's state and the one retry's */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM pending_authorizations WHERE integration_id = 'ws6:race'"),
                      2);
    free (token);
}

/* One apikey_create for the workspace ws9: on a client of its own; its answer's code in code. */
static void *
race_key (void *arg)
{
    char *code = arg;
    client_t *c = client_new (harness_brokers (h));
    json_t *args = json_pack ("{s:s, s:s}", "integration", "ws9:", "name", "racer");
    json_t *reply = c ? client_call (c, "apikey_create", args, 20000) : NULL;
    snprintf (code, 64, "%s", reply ? client_error_code (reply) : "(no reply)");
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    return NULL;
}

static int timeouts_changed;            /* w1 runs with test_apikey_limit_under_race's timeouts */

/* A failed test_apikey_limit_under_race leaves w1 with the default timeouts again. */
static int
restore_timeouts (void **state)
{
    if (timeouts_changed) {
        harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", NULL);
        harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", NULL);
        timeouts_changed = 0;
        harness_stop_worker (h, "w1");
        if (harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
            return -1;
    }
    return 0;
}

/* Two API keys created at once for a workspace one short of its 100 live keys: one is made, the
 * other refused. Each counted the live keys in its own transaction (the worker's two connections
 * run them side by side, as two workers of one partition would), both saw 99, and both were made:
 * 101 live keys. A trigger makes each insert of the workspace take half a second, which keeps the
 * window open whatever the machine's load; the worker's timeouts are raised above it (w1
 * restarted), since the create that now waits for the other waits that long. */
static void
test_apikey_limit_under_race (void **state)
{
    timeouts_changed = 1;
    harness_set_env (h, "FERRULE_DB_STATEMENT_TIMEOUT_MS", "2500");
    harness_set_env (h, "FERRULE_DB_LOCK_TIMEOUT_MS", "2000");
    restart_worker (harness_providers_file (h));
    assert_int_equal (harness_sql (h, "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)"
                                      " SELECT md5 ('ws9' || i) || md5 ('ws9:' || i), 'ws9:', 'k' || i, 'frk_ws9'"
                                      " FROM generate_series (1, 99) i"), 0);
    assert_int_equal (harness_sql (h, "CREATE FUNCTION test_slow_key () RETURNS trigger LANGUAGE plpgsql AS"
                                      " $$ BEGIN PERFORM pg_sleep (0.5); RETURN NEW; END $$;"
                                      " CREATE TRIGGER test_slow_key BEFORE INSERT ON gateway_api_keys FOR EACH ROW"
                                      " WHEN (NEW.workspace = 'ws9:') EXECUTE FUNCTION test_slow_key ()"), 0);
    char codes [2] [64];
    pthread_t threads [2];
    for (int i = 0; i < 2; i++)
        assert_int_equal (pthread_create (&threads [i], NULL, race_key, codes [i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join (threads [i], NULL);
    assert_int_equal (harness_sql (h, "DROP TRIGGER test_slow_key ON gateway_api_keys; DROP FUNCTION test_slow_key ()"), 0);
    long long live = harness_sql_int (h, "SELECT count(*) FROM gateway_api_keys WHERE workspace = 'ws9:'"
                                         " AND revoked_at IS NULL");
    int ok = 0, refused_ = 0;
    for (int i = 0; i < 2; i++) {
        ok += strcmp (codes [i], "ok") == 0;
        refused_ += strcmp (codes [i], "too_large") == 0;
    }
    if (ok != 1 || refused_ != 1 || live != 100)
        fail_msg ("two keys created at once with 99 live: answered %s and %s, %lld live keys", codes [0], codes [1],
                  live);
}

#define LINKS(cond) "SELECT count(*) FROM gateway_dashboard_links WHERE " cond
#define RETRIES(cond) "SELECT count(*) FROM gateway_retry_tokens WHERE " cond
#define STALE "expires_at < now () - interval '1 day'"

/* Retry tokens and dashboard links a day past their expiry are removed when a link or a retry
 * token is issued (as connect states are when a connect starts); younger ones stay. */
static void
test_gateway_rows_collected (void **state)
{
    char st [3] [300];
    failed_attempt ("ws7:a", st [0]);
    failed_attempt ("ws7:b", st [1]);
    failed_attempt ("ws7:c", st [2]);
    char *ta = attempt_retry_token (st [0]), *tb = attempt_retry_token (st [1]);
    for (int i = 0; i < 3; i++) {
        json_t *l = call ("dashboard_link", json_pack ("{s:s}", "integration", "ws7:"));
        assert_string_equal (client_error_code (l), "ok");
        json_decref (l);
    }
    /* spent or not: ws7:a's token spent, then both tokens and two links a day and a minute past
       their expiry, the third link 23 hours */
    json_t *r = call ("retry", json_pack ("{s:s}", "retry_token", ta));
    assert_string_equal (client_error_code (r), "ok");
    json_decref (r);
    assert_int_equal (harness_sql (h, "UPDATE gateway_retry_tokens SET created_at = now () - interval '2 days',"
                                      " expires_at = now () - interval '1 day 1 minute' WHERE integration_id IN ('ws7:a', 'ws7:b')"), 0);
    assert_int_equal (harness_sql (h, "UPDATE gateway_dashboard_links SET created_at = now () - interval '2 days',"
                                      " expires_at = now () - interval '1 day 1 minute' WHERE workspace = 'ws7:'"), 0);
    assert_int_equal (harness_sql (h, "UPDATE gateway_dashboard_links SET expires_at = now () - interval '23 hours'"
                                      " WHERE token_hash = (SELECT min (token_hash) FROM gateway_dashboard_links WHERE workspace = 'ws7:')"), 0);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws7:' AND " STALE)), 2);
    assert_int_equal (harness_sql_int (h, RETRIES ("integration_id LIKE 'ws7:%' AND " STALE)), 2);

    /* a dashboard link issued collects both tables */
    json_t *l = call ("dashboard_link", json_pack ("{s:s}", "integration", "ws8:"));
    assert_string_equal (client_error_code (l), "ok");
    json_decref (l);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws7:' AND " STALE)), 0);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws7:'")), 1);           /* the 23-hour one */
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws8:'")), 1);
    assert_int_equal (harness_sql_int (h, RETRIES ("integration_id LIKE 'ws7:%'")), 0);

    /* so does a retry token issued (its connect and callback came before the rows went stale) */
    assert_int_equal (harness_sql (h, "UPDATE gateway_dashboard_links SET expires_at = now () - interval '1 day 1 minute'"
                                      " WHERE workspace = 'ws8:'"), 0);
    char *tc = attempt_retry_token (st [2]);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws8:'")), 0);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws7:'")), 1);
    assert_int_equal (harness_sql_int (h, RETRIES ("integration_id = 'ws7:c'")), 1);

    /* a backlog goes a bounded number of rows per issue (100 per table), not all at once */
    assert_int_equal (harness_sql (h, "INSERT INTO gateway_dashboard_links (token_hash, workspace, created_at, expires_at)"
                                      " SELECT encode (sha256 (('backlog' || g)::bytea), 'hex'), 'ws9:',"
                                      "   now () - interval '3 days', now () - interval '2 days'"
                                      " FROM generate_series (1, 250) g"), 0);
    l = call ("dashboard_link", json_pack ("{s:s}", "integration", "ws8:"));
    assert_string_equal (client_error_code (l), "ok");
    json_decref (l);
    assert_int_equal (harness_sql_int (h, LINKS ("workspace = 'ws9:'")), 150);
    assert_false (itest_workdir_contains (h, ta));
    assert_false (itest_workdir_contains (h, tb));
    assert_false (itest_workdir_contains (h, tc));
    free (ta);
    free (tb);
    free (tc);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_refusals),
        cmocka_unit_test (test_attempt_retry_once),
        cmocka_unit_test (test_dashboard_link_once),
        cmocka_unit_test (test_workspace_range_and_cap),
        cmocka_unit_test (test_workspace_of_many_scopes_fits),
        cmocka_unit_test (test_workspace_needs_separator),
        cmocka_unit_test (test_apikey_limit),
        cmocka_unit_test_teardown (test_retry_outlives_failed_connect, restore_providers),
        cmocka_unit_test (test_retry_once_under_race),
        cmocka_unit_test_teardown (test_apikey_limit_under_race, restore_timeouts),
        cmocka_unit_test (test_retry_of_a_connect_of_64_scopes),
        cmocka_unit_test (test_gateway_rows_collected),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
