/* test_catalog.c - built-in provider entries, override files, validation, credentials */
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
#include <jansson.h>
#include "catalog.h"
#include "connect.h"
#include "mem.h"

static const char *const builtin_names [] = {
    "atlassian", "box", "dropbox", "github", "google", "hubspot", "microsoft", "notion",
    "salesforce", "slack", "xero", "zoom", NULL
};

/* Writes text to a new temporary file; the caller unlinks and frees the path. */
static char *
write_file (const char *text)
{
    char *path = mem_strdup ("/tmp/test_catalog_XXXXXX");
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
    return path;
}

/* Loads the catalog with text as the override file (NULL: built-ins only). */
static catalog_t *
load (const char *text, char *err, size_t errlen)
{
    char *path = text ? write_file (text) : NULL;
    catalog_t *c = catalog_new (path, err, errlen);
    if (path) {
        unlink (path);
        mem_free (path);
    }
    return c;
}

static int
has_param (const catalog_param_t *params, size_t n, const char *name, const char *value)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp (params [i].name, name) == 0 && strcmp (params [i].value, value) == 0)
            return 1;
    return 0;
}

static int
has_string (char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp (list [i], s) == 0)
            return 1;
    return 0;
}

static void
test_builtins_complete (void **state)
{
    char err [512] = "";
    catalog_t *c = load (NULL, err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_int_equal (catalog_count (c), 12);
    for (size_t i = 0; builtin_names [i]; i++) {
        const catalog_provider_t *p = catalog_find (c, builtin_names [i]);
        if (!p)
            fail_msg ("no built-in entry \"%s\"", builtin_names [i]);
        assert_ptr_equal (p, catalog_at (c, i));        /* sorted by name */
        assert_string_equal (p->name, builtin_names [i]);
        assert_int_equal (strncmp (p->authorization_url, "https://", 8), 0);
        assert_int_equal (strncmp (p->token_url, "https://", 8), 0);
        if (p->revocation_url)
            assert_int_equal (strncmp (p->revocation_url, "https://", 8), 0);
        assert_true (p->auth_method == CATALOG_AUTH_BASIC || p->auth_method == CATALOG_AUTH_POST);
        assert_true (p->refresh_token_rotation == CATALOG_ROTATION_SINGLE_USE
                     || p->refresh_token_rotation == CATALOG_ROTATION_REUSABLE);
        assert_non_null (p->scope_separator);
        assert_true (strlen (p->scope_separator) == 1);
        assert_non_null (p->docs_url);
        assert_int_equal (strncmp (p->docs_url, "https://", 8), 0);
        assert_non_null (p->notes);
        assert_true (p->reuse_grace_seconds >= 0);
        assert_true (p->refresh_token_idle_days >= 0);
        assert_true (p->access_token_lifetime_hint >= 0);
        char want [128];
        snprintf (want, sizeof want, "FERRULE_%s_CLIENT_ID", builtin_names [i]);
        for (char *u = want; *u; u++)
            if (*u >= 'a' && *u <= 'z')
                *u = (char) (*u - 'a' + 'A');
        assert_string_equal (p->client_id_env, want);
        assert_non_null (strstr (p->client_secret_env, "_CLIENT_SECRET"));
    }
    catalog_destroy (&c);
    assert_null (c);
    catalog_destroy (&c);
}

/* Every built-in entry spells out every field, so the file documents each provider fully. */
static void
test_builtin_json_fields (void **state)
{
    static const char *const fields [] = {
        "authorization_url", "token_url", "auth_method", "scope_separator", "default_scopes",
        "refresh_token_scopes", "authorization_params", "token_params", "refresh_params", "pkce",
        "refresh_token_rotation", "reuse_grace_seconds", "refresh_token_idle_days",
        "invalid_grant_codes", "access_token_lifetime_hint", "api_base_field",
        "docs_url", "notes", NULL
    };
    size_t len = 0;
    const char *text = catalog_builtin_json (&len);
    assert_int_equal (strlen (text), len);
    json_t *root = json_loadb (text, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null (root);
    const char *name;
    json_t *entry;
    json_object_foreach (root, name, entry) {
        for (int i = 0; fields [i]; i++)
            if (!json_object_get (entry, fields [i]))
                fail_msg ("provider \"%s\" lacks \"%s\"", name, fields [i]);
        /* a provider that spends refresh tokens states its grace, 0 when none is documented */
        if (strcmp (json_string_value (json_object_get (entry, "refresh_token_rotation")),
                    "single_use") == 0)
            assert_true (json_is_integer (json_object_get (entry, "reuse_grace_seconds")));
        assert_null (json_object_get (entry, "client_secret"));
        assert_null (json_object_get (entry, "client_id"));
    }
    json_decref (root);
}

static void
test_builtin_provider_facts (void **state)
{
    char err [512];
    catalog_t *c = load (NULL, err, sizeof err);
    assert_non_null (c);
    const catalog_provider_t *p;

    p = catalog_find (c, "google");
    assert_true (has_param (p->authorization_params, p->authorization_param_count, "access_type", "offline"));
    assert_true (has_param (p->authorization_params, p->authorization_param_count, "prompt", "consent"));
    assert_string_equal (p->token_url, "https://oauth2.googleapis.com/token");
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_REUSABLE);
    assert_int_equal (p->refresh_token_idle_days, 180);
    assert_non_null (strstr (p->notes, "myaccount.google.com/permissions"));
    assert_true (p->pkce);
    assert_true (p->revocation_ends_grant);

    p = catalog_find (c, "microsoft");
    assert_true (has_string (p->default_scopes, p->default_scope_count, "offline_access"));
    assert_true (has_string (p->refresh_token_scopes, p->refresh_token_scope_count, "offline_access"));
    assert_non_null (strstr (p->token_url, "/common/oauth2/v2.0/token"));
    assert_int_equal (p->refresh_token_idle_days, 90);

    p = catalog_find (c, "dropbox");
    assert_true (has_param (p->authorization_params, p->authorization_param_count, "token_access_type", "offline"));
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_REUSABLE);

    p = catalog_find (c, "atlassian");
    assert_true (has_param (p->authorization_params, p->authorization_param_count, "audience", "api.atlassian.com"));
    assert_true (has_param (p->authorization_params, p->authorization_param_count, "prompt", "consent"));
    assert_true (has_string (p->default_scopes, p->default_scope_count, "offline_access"));
    assert_true (has_string (p->refresh_token_scopes, p->refresh_token_scope_count, "offline_access"));
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_SINGLE_USE);
    assert_int_equal (p->reuse_grace_seconds, 600);
    assert_int_equal (p->refresh_token_idle_days, 90);
    assert_int_equal (p->grant_max_days, 365);          /* 365 days in all, however used */

    p = catalog_find (c, "slack");
    assert_string_equal (p->scope_separator, ",");
    assert_string_equal (p->token_url, "https://slack.com/api/oauth.v2.access");
    assert_true (has_string (p->invalid_grant_codes, p->invalid_grant_code_count, "invalid_refresh_token"));

    p = catalog_find (c, "box");
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_SINGLE_USE);
    assert_int_equal (p->reuse_grace_seconds, 0);
    assert_int_equal (p->refresh_token_idle_days, 60);

    p = catalog_find (c, "xero");
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_SINGLE_USE);
    assert_int_equal (p->reuse_grace_seconds, 1800);
    assert_int_equal (p->refresh_token_idle_days, 60);
    assert_true (has_string (p->default_scopes, p->default_scope_count, "offline_access"));
    assert_true (has_string (p->refresh_token_scopes, p->refresh_token_scope_count, "offline_access"));

    p = catalog_find (c, "salesforce");
    assert_true (has_string (p->refresh_token_scopes, p->refresh_token_scope_count, "refresh_token"));

    /* what a connect asks for: its own scopes or the default ones, and always the refresh ones */
    p = catalog_find (c, "microsoft");
    char *asked = catalog_connect_scopes (p, "Files.Read");
    assert_string_equal (asked, "Files.Read offline_access");
    mem_free (asked);
    asked = catalog_connect_scopes (p, "offline_access Files.Read");
    assert_string_equal (asked, "offline_access Files.Read");
    mem_free (asked);
    asked = catalog_connect_scopes (p, NULL);
    assert_string_equal (asked, "openid offline_access User.Read");
    mem_free (asked);
    assert_string_equal (catalog_refresh_scope_missing (p, "Files.Read"), "offline_access");
    assert_null (catalog_refresh_scope_missing (p, "Files.Read offline_access"));
    asked = catalog_connect_scopes (catalog_find (c, "box"), NULL);
    assert_string_equal (asked, "");
    mem_free (asked);
    assert_null (catalog_refresh_scope_missing (catalog_find (c, "box"), ""));

    p = catalog_find (c, "zoom");
    assert_int_equal (p->refresh_token_idle_days, 90);
    assert_int_equal (p->auth_method, CATALOG_AUTH_BASIC);

    p = catalog_find (c, "hubspot");
    assert_int_equal (p->refresh_token_rotation, CATALOG_ROTATION_REUSABLE);
    assert_true (has_string (p->invalid_grant_codes, p->invalid_grant_code_count, "BAD_REFRESH_TOKEN"));
    assert_true (has_string (p->invalid_grant_codes, p->invalid_grant_code_count, "BAD_AUTH_CODE"));
    assert_true (has_string (p->invalid_grant_codes, p->invalid_grant_code_count, "EXPIRED_AUTH_CODE"));

    p = catalog_find (c, "github");
    assert_true (has_string (p->invalid_grant_codes, p->invalid_grant_code_count, "bad_refresh_token"));
    assert_int_equal (p->refresh_token_idle_days, 180);     /* 6 months, from each rotation */

    assert_null (catalog_find (c, "nonexistent"));
    assert_null (catalog_find (c, NULL));
    catalog_destroy (&c);
}

static void
test_override_adds_and_merges (void **state)
{
    char err [512] = "";
    catalog_t *c = load (
        "{\n"
        "  \"box\": { \"token_url\": \"http://127.0.0.1:8080/oauth2/token\",\n"
        "           \"reuse_grace_seconds\": 5, \"revocation_url\": null },\n"
        "  \"acme\": { \"authorization_url\": \"https://id.acme.test/authorize\",\n"
        "            \"token_url\": \"http://localhost:9999/token\",\n"
        "            \"auth_method\": \"client_secret_basic\",\n"
        "            \"token_params\": { \"audience\": \"api\" },\n"
        "            \"client_id\": \"acme-id\", \"client_secret_env\": \"ACME_SECRET_FOR_TEST\" }\n"
        "}\n", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_int_equal (catalog_count (c), 13);

    const catalog_provider_t *box = catalog_find (c, "box");
    assert_string_equal (box->token_url, "http://127.0.0.1:8080/oauth2/token");
    assert_string_equal (box->authorization_url, "https://account.box.com/api/oauth2/authorize");
    assert_int_equal (box->reuse_grace_seconds, 5);
    assert_int_equal (box->refresh_token_idle_days, 60);      /* untouched fields stay */
    assert_int_equal (box->auth_method, CATALOG_AUTH_POST);
    assert_null (box->revocation_url);                         /* null removes */

    const catalog_provider_t *acme = catalog_find (c, "acme");
    assert_non_null (acme);
    assert_ptr_equal (acme, catalog_at (c, 0));
    assert_string_equal (acme->scope_separator, " ");
    assert_int_equal (acme->refresh_token_rotation, CATALOG_ROTATION_SINGLE_USE);
    assert_int_equal (acme->pkce, 0);
    assert_true (has_param (acme->token_params, acme->token_param_count, "audience", "api"));
    assert_string_equal (acme->client_id, "acme-id");
    assert_string_equal (acme->client_secret_env, "ACME_SECRET_FOR_TEST");
    assert_null (acme->client_secret);
    catalog_destroy (&c);
}

static void
expect_url (const char *url, int accepted)
{
    char text [512];
    char err [512] = "";
    snprintf (text, sizeof text, "{\"box\": {\"token_url\": \"%s\"}}", url);
    catalog_t *c = load (text, err, sizeof err);
    if (accepted && !c)
        fail_msg ("\"%s\" rejected: %s", url, err);
    if (!accepted) {
        if (c)
            fail_msg ("\"%s\" accepted", url);
        assert_non_null (strstr (err, "provider \"box\""));
        assert_non_null (strstr (err, "\"token_url\""));
    }
    catalog_destroy (&c);
}

static void
test_url_rules (void **state)
{
    expect_url ("http://127.0.0.1/token", 1);
    expect_url ("http://127.0.0.1:8080/token", 1);
    expect_url ("http://127.1.2.3:8080/token", 1);
    expect_url ("http://localhost:8080/token", 1);
    expect_url ("http://[::1]:8080/token", 1);
    expect_url ("https://example.com/token?x=1", 1);
    expect_url ("HTTPS://Example.COM:443/token", 1);

    expect_url ("http://example.com/token", 0);
    expect_url ("http://127.0.0.1.evil.example/token", 0);
    expect_url ("http://localhost.evil.example/token", 0);
    expect_url ("http://128.0.0.1/token", 0);
    expect_url ("http://10.0.0.1/token", 0);
    expect_url ("http://[::2]/token", 0);
    expect_url ("http://user:pw@127.0.0.1/token", 0);
    expect_url ("https://user@example.com/token", 0);
    expect_url ("https:///token", 0);
    expect_url ("https://example.com:99999/token", 0);
    expect_url ("https://example.com/token#frag", 0);
    expect_url ("https://exa mple.com/token", 0);
    expect_url ("ftp://example.com/token", 0);
    expect_url ("example.com/token", 0);
    expect_url ("", 0);
}

static void
expect_invalid (const char *text, const char *want1, const char *want2)
{
    char err [512] = "";
    catalog_t *c = load (text, err, sizeof err);
    if (c)
        fail_msg ("accepted: %s", text);
    if (!strstr (err, want1) || (want2 && !strstr (err, want2)))
        fail_msg ("error \"%s\" lacks \"%s\" or \"%s\"", err, want1, want2 ? want2 : "");
}

static void
test_validation (void **state)
{
    expect_invalid ("{\"box\": {\"auth_method\": \"client_secret_jwt\"}}", "provider \"box\"", "auth_method");
    expect_invalid ("{\"box\": {\"refresh_token_rotation\": \"sometimes\"}}", "provider \"box\"", "refresh_token_rotation");
    expect_invalid ("{\"box\": {\"token_ur\": \"https://x.test/t\"}}", "provider \"box\"", "unknown field \"token_ur\"");
    expect_invalid ("{\"box\": {\"pkce\": \"yes\"}}", "provider \"box\"", "\"pkce\"");
    expect_invalid ("{\"box\": {\"reuse_grace_seconds\": -1}}", "provider \"box\"", "reuse_grace_seconds");
    expect_invalid ("{\"box\": {\"default_scopes\": \"a b\"}}", "provider \"box\"", "default_scopes");
    expect_invalid ("{\"box\": {\"default_scopes\": [\"a b\"]}}", "provider \"box\"", "default_scopes");
    expect_invalid ("{\"box\": {\"refresh_token_scopes\": [\"a b\"]}}", "provider \"box\"", "refresh_token_scopes");
    expect_invalid ("{\"box\": {\"refresh_token_scopes\": \"offline_access\"}}", "provider \"box\"",
                    "refresh_token_scopes");
    expect_invalid ("{\"box\": {\"token_params\": {\"grant_type\": \"x\"}}}", "provider \"box\"", "grant_type");
    expect_invalid ("{\"box\": {\"authorization_params\": {\"state\": \"x\"}}}", "provider \"box\"", "state");
    expect_invalid ("{\"box\": {\"authorization_params\": {\"a\": 1}}}", "provider \"box\"", "authorization_params");
    expect_invalid ("{\"box\": {\"token_url\": null}}", "provider \"box\"", "\"token_url\" is missing");
    expect_invalid ("{\"box\": {\"client_secret_env\": \"lower-case\"}}", "provider \"box\"", "client_secret_env");
    expect_invalid ("{\"box\": 3}", "entry \"box\" must be a JSON object", NULL);
    expect_invalid ("[1, 2]", "must hold a JSON object", NULL);
    expect_invalid ("{\"new\": {\"authorization_url\": \"https://a.test/a\", \"token_url\": \"https://a.test/t\"}}",
                    "provider \"new\"", "auth_method");
    expect_invalid ("{\"new\": {\"token_url\": \"https://a.test/t\", \"auth_method\": \"client_secret_post\"}}",
                    "provider \"new\"", "authorization_url");
    expect_invalid ("{\"Bad Name\": {\"authorization_url\": \"https://a.test/a\", \"token_url\": \"https://a.test/t\", "
                    "\"auth_method\": \"client_secret_post\"}}", "provider \"Bad Name\"", "name");
    expect_invalid ("{\"box\": {}, \"box\": {}}", "not valid JSON", "line 1");
    /* errors_with_200 no longer decides anything, but a file that sets it still loads */
    expect_invalid ("{\"box\": {\"errors_with_200\": \"yes\"}}", "provider \"box\"", "errors_with_200");
    char err [512];
    catalog_t *c = load ("{\"slack\": {\"errors_with_200\": true}}", err, sizeof err);
    if (!c)
        fail_msg ("an override setting errors_with_200: %s", err);
    catalog_destroy (&c);
}

/* api_base_field: Salesforce's built in, none for the others, an override sets or removes it, and a
 * name that is not a plain field name, or that names a token, is refused. */
static void
test_api_base_field (void **state)
{
    char err [512] = "";
    catalog_t *c = load (NULL, err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_string_equal (catalog_find (c, "salesforce")->api_base_field, "instance_url");
    for (size_t i = 0; i < catalog_count (c); i++)
        if (strcmp (catalog_at (c, i)->name, "salesforce") != 0)
            assert_null (catalog_at (c, i)->api_base_field);
    catalog_destroy (&c);

    c = load ("{\"box\": {\"api_base_field\": \"api_domain\"}, \"salesforce\": {\"api_base_field\": null}}",
              err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_string_equal (catalog_find (c, "box")->api_base_field, "api_domain");
    assert_null (catalog_find (c, "salesforce")->api_base_field);
    assert_string_equal (catalog_find (c, "box")->token_url, "https://api.box.com/oauth2/token");   /* merged */
    catalog_destroy (&c);

    expect_invalid ("{\"box\": {\"api_base_field\": 3}}", "provider \"box\"", "\"api_base_field\" must be a string");
    expect_invalid ("{\"box\": {\"api_base_field\": \"\"}}", "provider \"box\"", "api_base_field");
    expect_invalid ("{\"box\": {\"api_base_field\": \"instance url\"}}", "provider \"box\"", "api_base_field");
    expect_invalid ("{\"box\": {\"api_base_field\": \"a/b\"}}", "provider \"box\"", "api_base_field");
    expect_invalid ("{\"box\": {\"api_base_field\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}",
                    "provider \"box\"", "too long");
    expect_invalid ("{\"box\": {\"api_base_field\": \"access_token\"}}", "provider \"box\"",
                    "names \"access_token\"");
    expect_invalid ("{\"box\": {\"api_base_field\": \"refresh_token\"}}", "provider \"box\"",
                    "names \"refresh_token\"");
    expect_invalid ("{\"box\": {\"api_base_field\": \"id_token\"}}", "provider \"box\"", "names \"id_token\"");
}

static void
test_bad_json_file (void **state)
{
    char err [512] = "";
    char *path = write_file ("{\n  \"box\": {\n    \"client_secret\": s3cr3t-value\n  }\n}\n");
    catalog_t *c = catalog_new (path, err, sizeof err);
    assert_null (c);
    assert_non_null (strstr (err, path));
    assert_non_null (strstr (err, "line 3"));
    assert_null (strstr (err, "s3cr3t"));          /* the parser's quote of the file is cut */
    unlink (path);

    c = catalog_new (path, err, sizeof err);       /* now missing */
    assert_null (c);
    assert_non_null (strstr (err, path));
    assert_non_null (strstr (err, "could not open"));
    mem_free (path);

    c = catalog_new ("/tmp", err, sizeof err);
    assert_null (c);
    assert_non_null (strstr (err, "not a regular file"));

    c = catalog_new ("", err, sizeof err);         /* unset: built-ins only */
    assert_non_null (c);
    catalog_destroy (&c);
}

/* catalog_new_from_buffer: what catalog_new does once the file is read */
static void
test_from_buffer (void **state)
{
    char err [512] = "";
    static const char text [] = "{\"acme\": {\"authorization_url\": \"https://a.test/a\", "
                                "\"token_url\": \"https://a.test/t\", \"auth_method\": \"client_secret_post\"}}";
    catalog_t *c = catalog_new_from_buffer (text, strlen (text), "mem.json", err, sizeof err);
    assert_non_null (c);
    assert_non_null (catalog_find (c, "acme"));
    assert_non_null (catalog_find (c, "box"));
    catalog_destroy (&c);

    c = catalog_new_from_buffer (NULL, 0, NULL, err, sizeof err);        /* built-ins only */
    assert_non_null (c);
    assert_null (catalog_find (c, "acme"));
    catalog_destroy (&c);

    c = catalog_new_from_buffer (text, 10, "mem.json", err, sizeof err); /* len is honoured */
    assert_null (c);
    assert_non_null (strstr (err, "provider file \"mem.json\" is not valid JSON"));
    c = catalog_new_from_buffer ("[]", 2, NULL, err, sizeof err);
    assert_null (c);
    assert_non_null (strstr (err, "must hold a JSON object"));
}

static void
test_env_credentials (void **state)
{
    char err [512] = "";
    setenv ("FERRULE_BOX_CLIENT_ID", "box-id", 1);
    setenv ("FERRULE_BOX_CLIENT_SECRET", "box-secret", 1);
    setenv ("ACME_SECRET_FOR_TEST", "acme-secret", 1);
    catalog_t *c = load ("{\"google\": {\"client_id\": \"direct-id\", \"client_secret\": \"direct-secret\"},"
                         " \"acme\": {\"authorization_url\": \"https://a.test/a\","
                         " \"token_url\": \"https://a.test/t\", \"auth_method\": \"client_secret_post\","
                         " \"client_id_env\": \"ACME_ID_FOR_TEST\", \"client_secret_env\": \"ACME_SECRET_FOR_TEST\"}}",
                         err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    const catalog_provider_t *box = catalog_find (c, "box");
    assert_string_equal (box->client_id, "box-id");
    assert_string_equal (box->client_secret, "box-secret");
    assert_int_equal (catalog_check_credentials (box, err, sizeof err), FR_OK);

    const catalog_provider_t *google = catalog_find (c, "google");
    assert_string_equal (google->client_id, "direct-id");
    assert_string_equal (google->client_secret, "direct-secret");
    assert_int_equal (catalog_check_credentials (google, err, sizeof err), FR_OK);

    const catalog_provider_t *acme = catalog_find (c, "acme");
    assert_null (acme->client_id);
    assert_string_equal (acme->client_secret, "acme-secret");
    assert_int_equal (catalog_check_credentials (acme, err, sizeof err), FR_CONFIGURATION);
    assert_non_null (strstr (err, "ACME_ID_FOR_TEST"));
    assert_non_null (strstr (err, "provider \"acme\""));
    catalog_destroy (&c);
    unsetenv ("FERRULE_BOX_CLIENT_ID");
    unsetenv ("FERRULE_BOX_CLIENT_SECRET");
    unsetenv ("ACME_SECRET_FOR_TEST");
}

static void
test_missing_credentials (void **state)
{
    char err [512] = "";
    unsetenv ("FERRULE_ZOOM_CLIENT_ID");
    unsetenv ("FERRULE_ZOOM_CLIENT_SECRET");
    catalog_t *c = catalog_new (NULL, err, sizeof err);
    assert_non_null (c);
    const catalog_provider_t *zoom = catalog_find (c, "zoom");
    assert_int_equal (catalog_check_credentials (zoom, err, sizeof err), FR_CONFIGURATION);
    assert_non_null (strstr (err, "FERRULE_ZOOM_CLIENT_ID"));
    catalog_destroy (&c);

    setenv ("FERRULE_ZOOM_CLIENT_ID", "zoom-id", 1);
    setenv ("FERRULE_ZOOM_CLIENT_SECRET", "", 1);          /* empty counts as missing */
    c = catalog_new (NULL, err, sizeof err);
    assert_non_null (c);
    zoom = catalog_find (c, "zoom");
    assert_string_equal (zoom->client_id, "zoom-id");
    assert_int_equal (catalog_check_credentials (zoom, err, sizeof err), FR_CONFIGURATION);
    assert_non_null (strstr (err, "FERRULE_ZOOM_CLIENT_SECRET"));
    assert_non_null (strstr (err, "provider \"zoom\""));
    catalog_destroy (&c);
    unsetenv ("FERRULE_ZOOM_CLIENT_ID");
    unsetenv ("FERRULE_ZOOM_CLIENT_SECRET");
}

/* Google is known by its OAuth hosts (or "family"), not by its notes: an override of google's
 * notes, or a second entry on Google's hosts, lost Google's steps (its permissions page) in the
 * no_refresh_token hint and in doctor, which share the test. */
static void
assert_google_hint (const catalog_t *c, const char *name)
{
    char hint [500];
    const catalog_provider_t *p = catalog_find (c, name);
    assert_non_null (p);
    connect_no_refresh_token_hint (p, NULL, hint, sizeof hint);
    if (!strstr (hint, "https://myaccount.google.com/permissions"))
        fail_msg ("entry \"%s\" is not taken for Google's: %s", name, hint);
}

static void
test_google_recognised_without_notes (void **state)
{
    char err [512], hint [500];
    catalog_t *c = load ("{\"google\": {\"notes\": \"Our own words about Drive.\"},"
                         " \"drive\": {\"authorization_url\": \"https://accounts.google.com/o/oauth2/v2/auth\","
                         "   \"token_url\": \"https://oauth2.googleapis.com/token\","
                         "   \"auth_method\": \"client_secret_post\","
                         "   \"authorization_params\": {\"access_type\": \"offline\"}}}", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_google_hint (c, "google");
    assert_google_hint (c, "drive");
    connect_no_refresh_token_hint (catalog_find (c, "box"), NULL, hint, sizeof hint);
    assert_null (strstr (hint, "google"));
    catalog_destroy (&c);
    /* an entry that reaches Google elsewhere (a test double) says so with "family" */
    c = load ("{\"double\": {\"authorization_url\": \"http://127.0.0.1:9/authorize\","
              "   \"token_url\": \"http://127.0.0.1:9/token\", \"auth_method\": \"client_secret_post\","
              "   \"authorization_params\": {\"access_type\": \"offline\"}, \"family\": \"google\"}}", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_google_hint (c, "double");
    catalog_destroy (&c);
    /* a Google entry that does not ask for offline access (authorization_params replaced whole by
     * an override that adds its own): no consent screen helps, the entry is the operator's to fix */
    c = load ("{\"google\": {\"authorization_params\": {\"hd\": \"example.com\"}}}", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    assert_string_equal (catalog_offline_param_missing (catalog_find (c, "google")), "access_type=offline");
    assert_null (catalog_offline_param_missing (catalog_find (c, "box")));
    connect_no_refresh_token_hint (catalog_find (c, "google"), NULL, hint, sizeof hint);
    assert_non_null (strstr (hint, "access_type=offline"));
    assert_null (strstr (hint, "https://myaccount.google.com/permissions"));
    catalog_destroy (&c);
    c = load (NULL, err, sizeof err);
    assert_null (catalog_offline_param_missing (catalog_find (c, "google")));
    catalog_destroy (&c);
    /* only a known family */
    c = load ("{\"box\": {\"family\": \"googel\"}}", err, sizeof err);
    assert_null (c);
    assert_non_null (strstr (err, "\"family\""));
}

/* Every built-in entry that needs an authorization parameter for a refresh token is checked, not
 * Google's alone: an override's authorization_params replace the built-in ones whole, so Dropbox
 * without token_access_type=offline issues none, and the user was told to revoke and connect
 * again (a loop) instead of the operator being told to fix the entry. */
static void
test_offline_param_missing_for_every_builtin (void **state)
{
    char err [512], hint [500];
    catalog_t *c = load ("{\"dropbox\": {\"authorization_params\": {\"force_reapprove\": \"true\"}},"
                         " \"mydropbox\": {\"authorization_url\": \"https://www.dropbox.com/oauth2/authorize\","
                         "   \"token_url\": \"https://api.dropboxapi.com/oauth2/token\","
                         "   \"auth_method\": \"client_secret_post\"}}", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    const char *missing = catalog_offline_param_missing (catalog_find (c, "dropbox"));
    print_message ("dropbox with authorization_params {\"force_reapprove\": \"true\"}: %s\n",
                   missing ? missing : "(nothing missing)");
    assert_non_null (missing);
    assert_string_equal (missing, "token_access_type=offline");
    /* an entry of its own on Dropbox's hosts */
    assert_non_null (catalog_offline_param_missing (catalog_find (c, "mydropbox")));
    connect_no_refresh_token_hint (catalog_find (c, "dropbox"), NULL, hint, sizeof hint);
    assert_non_null (strstr (hint, "token_access_type=offline"));
    /* the other built-ins ask for offline access as they are */
    assert_null (catalog_offline_param_missing (catalog_find (c, "google")));
    assert_null (catalog_offline_param_missing (catalog_find (c, "box")));
    catalog_destroy (&c);
    c = load (NULL, err, sizeof err);
    for (size_t i = 0; i < catalog_count (c); i++)
        if (catalog_offline_param_missing (catalog_at (c, i)))
            fail_msg ("built-in \"%s\" lacks %s", catalog_at (c, i)->name,
                      catalog_offline_param_missing (catalog_at (c, i)));
    catalog_destroy (&c);
}

/* The providers whose tokens expire whether or not an answer says when: those that issue a refresh
 * token only for offline access. Salesforce's answers never carry expires_in, and a connect there
 * without a refresh token was taken for a token that does not expire, as GitHub OAuth Apps' are. */
static void
test_needs_offline_access (void **state)
{
    char err [512];
    catalog_t *c = load ("{\"mydropbox\": {\"authorization_url\": \"https://www.dropbox.com/oauth2/authorize\","
                         "   \"token_url\": \"https://api.dropboxapi.com/oauth2/token\","
                         "   \"auth_method\": \"client_secret_post\"}}", err, sizeof err);
    if (!c)
        fail_msg ("%s", err);
    static const char *const expire [] = { "salesforce", "microsoft", "xero", "atlassian", "google", "dropbox",
                                           "mydropbox", NULL };
    static const char *const may_not [] = { "github", "slack", "notion", "box", "hubspot", "zoom", NULL };
    for (int i = 0; expire [i]; i++)
        if (!catalog_needs_offline_access (catalog_find (c, expire [i])))
            fail_msg ("\"%s\" is not known to need offline access", expire [i]);
    for (int i = 0; may_not [i]; i++)
        if (catalog_needs_offline_access (catalog_find (c, may_not [i])))
            fail_msg ("\"%s\" is taken to need offline access", may_not [i]);
    assert_false (catalog_needs_offline_access (NULL));
    catalog_destroy (&c);
}

static void
test_enum_names (void **state)
{
    assert_string_equal (catalog_auth_method_name (CATALOG_AUTH_BASIC), "client_secret_basic");
    assert_string_equal (catalog_auth_method_name (CATALOG_AUTH_POST), "client_secret_post");
    assert_string_equal (catalog_rotation_name (CATALOG_ROTATION_SINGLE_USE), "single_use");
    assert_string_equal (catalog_rotation_name (CATALOG_ROTATION_REUSABLE), "reusable");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_builtins_complete),
        cmocka_unit_test (test_builtin_json_fields),
        cmocka_unit_test (test_builtin_provider_facts),
        cmocka_unit_test (test_override_adds_and_merges),
        cmocka_unit_test (test_url_rules),
        cmocka_unit_test (test_validation),
        cmocka_unit_test (test_api_base_field),
        cmocka_unit_test (test_bad_json_file),
        cmocka_unit_test (test_from_buffer),
        cmocka_unit_test (test_env_credentials),
        cmocka_unit_test (test_missing_credentials),
        cmocka_unit_test (test_enum_names),
        cmocka_unit_test (test_google_recognised_without_notes),
        cmocka_unit_test (test_offline_param_missing_for_every_builtin),
        cmocka_unit_test (test_needs_offline_access),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
