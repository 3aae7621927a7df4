/* catalog.c - the provider catalog: built-in providers.json, an optional override file, validation */
#include "catalog.h"
#include "secmem.h"
#include "secrets.h"
#include "mem.h"
#include "providers_json.h"
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CATALOG_MAX_PARAM_NAME   64
#define CATALOG_MAX_ENV_NAME     128

struct catalog {
    catalog_provider_t *providers;      /* sorted by name */
    size_t count;
};

/* Where a validation message goes, and which provider it is about. */
typedef struct {
    char *err;
    size_t errlen;
    const char *provider;
} ctx_t;

static void fail (ctx_t *ctx, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Writes 'provider "name": <message>' to the context's err. */
static void
fail (ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    int n = 0;
    if (!ctx->err || !ctx->errlen)
        return;
    if (ctx->provider)
        n = snprintf (ctx->err, ctx->errlen, "provider \"%s\": ", ctx->provider);
    if (n < 0 || (size_t) n >= ctx->errlen)
        return;
    va_start (ap, fmt);
    vsnprintf (ctx->err + n, ctx->errlen - (size_t) n, fmt, ap);
    va_end (ap);
}

static const char *const known_fields [] = {
    "authorization_url", "token_url", "revocation_url", "auth_method", "scope_separator",
    "default_scopes", "refresh_token_scopes", "authorization_params", "token_params", "refresh_params", "pkce",
    "refresh_token_rotation", "reuse_grace_seconds", "refresh_token_idle_days", "grant_max_days",
    "revocation_ends_grant", "errors_with_200", "invalid_grant_codes", "client_id", "client_secret", "client_id_env",
    "client_secret_env", "client_secret_file", "access_token_lifetime_hint", "api_base_field", "family", "docs_url", "notes", NULL
};

/* Parameters the request builders set themselves: a catalog entry may not supply them. */
static const char *const reserved_authorization_params [] = {
    "response_type", "client_id", "redirect_uri", "state", "scope", "code_challenge",
    "code_challenge_method", NULL
};
static const char *const reserved_token_params [] = {
    "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "client_id",
    "client_secret", NULL
};

static int
in_list (const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp (*list, s) == 0)
            return 1;
    return 0;
}

const char *
catalog_auth_method_name (catalog_auth_method_t m)
{
    return m == CATALOG_AUTH_POST ? "client_secret_post" : "client_secret_basic";
}

const char *
catalog_rotation_name (catalog_rotation_t r)
{
    return r == CATALOG_ROTATION_REUSABLE ? "reusable" : "single_use";
}

const char *
catalog_builtin_json (size_t *len)
{
    if (len)
        *len = catalog_builtin_size;
    return (const char *) catalog_builtin_data;
}

/* 1 when host (without brackets or port) is localhost, 127.0.0.0/8 or ::1. */
static int
host_is_loopback (const char *host)
{
    unsigned char addr [16];
    if (strcasecmp (host, "localhost") == 0)
        return 1;
    if (inet_pton (AF_INET, host, addr) == 1)
        return addr [0] == 127;
    if (inet_pton (AF_INET6, host, addr) == 1) {
        static const unsigned char loopback6 [16] = { [15] = 1 };
        return memcmp (addr, loopback6, 16) == 0;
    }
    return 0;
}

/* 1 when url is https:// with a host, or http:// to a loopback host; no credentials,
 * fragment, spaces or control characters. */
static int
url_acceptable (const char *url)
{
    int https;
    const char *auth, *end, *host_end, *port = NULL;
    char host [256];

    for (const char *c = url; *c; c++)
        if ((unsigned char) *c <= 0x20 || (unsigned char) *c >= 0x7f || *c == '#')
            return 0;
    if (strncasecmp (url, "https://", 8) == 0) {
        https = 1;
        auth = url + 8;
    }
    else
    if (strncasecmp (url, "http://", 7) == 0) {
        https = 0;
        auth = url + 7;
    }
    else
        return 0;
    end = auth + strcspn (auth, "/?");
    if (end == auth || memchr (auth, '@', (size_t) (end - auth)))
        return 0;
    if (*auth == '[') {
        const char *close = memchr (auth, ']', (size_t) (end - auth));
        if (!close)
            return 0;
        auth++;
        host_end = close;
        if (close + 1 < end) {
            if (close [1] != ':')
                return 0;
            port = close + 2;
        }
    }
    else {
        host_end = memchr (auth, ':', (size_t) (end - auth));
        if (host_end)
            port = host_end + 1;
        else
            host_end = end;
    }
    if (host_end == auth || (size_t) (host_end - auth) >= sizeof host)
        return 0;
    if (port) {
        if (port == end || end - port > 5)
            return 0;
        for (const char *c = port; c < end; c++)
            if (*c < '0' || *c > '9')
                return 0;
        if (strtol (port, NULL, 10) > 65535)
            return 0;
    }
    memcpy (host, auth, (size_t) (host_end - auth));
    host [host_end - auth] = '\0';
    return https || host_is_loopback (host);
}

/* Reads an optional string field: 1 found, 0 absent or null, -1 invalid (ctx has why). */
static int
get_string (ctx_t *ctx, json_t *entry, const char *field, size_t max, char **out)
{
    json_t *v = json_object_get (entry, field);
    *out = NULL;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_string (v)) {
        fail (ctx, "field \"%s\" must be a string", field);
        return -1;
    }
    size_t len = json_string_length (v);
    if (len > max) {
        fail (ctx, "field \"%s\" is too long (%zu bytes, the limit is %zu)", field, len, max);
        return -1;
    }
    if (strlen (json_string_value (v)) != len) {
        fail (ctx, "field \"%s\" contains a NUL character", field);
        return -1;
    }
    *out = mem_strndup (json_string_value (v), len);
    return 1;
}

static int
get_url (ctx_t *ctx, json_t *entry, const char *field, int required, char **out)
{
    int rc = get_string (ctx, entry, field, CATALOG_MAX_URL, out);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        if (!required)
            return 0;
        fail (ctx, "field \"%s\" is missing", field);
        return -1;
    }
    if (!url_acceptable (*out)) {
        fail (ctx, "field \"%s\" must be an https:// URL, or an http:// URL to a loopback host "
              "(localhost, 127.0.0.0/8, [::1]), without credentials or fragment", field);
        return -1;
    }
    return 1;
}

/* Optional boolean; def when absent. */
static int
get_bool (ctx_t *ctx, json_t *entry, const char *field, int def, int *out)
{
    json_t *v = json_object_get (entry, field);
    *out = def;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_boolean (v)) {
        fail (ctx, "field \"%s\" must be true or false", field);
        return -1;
    }
    *out = json_is_true (v);
    return 1;
}

/* Optional integer in [min, max]; def when absent or null. */
static int
get_int (ctx_t *ctx, json_t *entry, const char *field, int min, int max, int def, int *out)
{
    json_t *v = json_object_get (entry, field);
    *out = def;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_integer (v) || json_integer_value (v) < min || json_integer_value (v) > max) {
        fail (ctx, "field \"%s\" must be an integer from %d to %d", field, min, max);
        return -1;
    }
    *out = (int) json_integer_value (v);
    return 1;
}

/* Optional enum: index into names, def when absent. */
static int
get_enum (ctx_t *ctx, json_t *entry, const char *field, const char *const *names, int def,
          int *out)
{
    json_t *v = json_object_get (entry, field);
    *out = def;
    if (!v || json_is_null (v))
        return 0;
    if (json_is_string (v))
        for (int i = 0; names [i]; i++)
            if (strcmp (json_string_value (v), names [i]) == 0) {
                *out = i;
                return 1;
            }
    fail (ctx, "field \"%s\" must be \"%s\" or \"%s\"", field, names [0], names [1]);
    return -1;
}

/* Optional array of non-empty strings without spaces or control characters. */
static int
get_string_array (ctx_t *ctx, json_t *entry, const char *field, char ***out, size_t *count)
{
    json_t *v = json_object_get (entry, field);
    size_t i;
    json_t *item;

    *out = NULL;
    *count = 0;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_array (v)) {
        fail (ctx, "field \"%s\" must be an array of strings", field);
        return -1;
    }
    if (json_array_size (v) > CATALOG_MAX_ITEMS) {
        fail (ctx, "field \"%s\" has too many items (the limit is %d)", field, CATALOG_MAX_ITEMS);
        return -1;
    }
    *out = mem_alloc ((json_array_size (v) + 1) * sizeof (char *));
    json_array_foreach (v, i, item) {
        const char *s = json_string_value (item);
        if (!s || !*s || json_string_length (item) > CATALOG_MAX_SCOPE) {
            fail (ctx, "field \"%s\" item %zu must be a non-empty string of at most %d bytes",
                  field, i + 1, CATALOG_MAX_SCOPE);
            return -1;
        }
        for (const char *c = s; *c; c++)
            if ((unsigned char) *c <= 0x20 || (unsigned char) *c == 0x7f) {
                fail (ctx, "field \"%s\" item %zu contains a space or control character",
                      field, i + 1);
                return -1;
            }
        (*out) [(*count)++] = mem_strdup (s);
    }
    return 1;
}

/* Optional object of string values, names from [A-Za-z0-9_.-], none of reserved. */
static int
get_params (ctx_t *ctx, json_t *entry, const char *field, const char *const *reserved,
            catalog_param_t **out, size_t *count)
{
    json_t *v = json_object_get (entry, field);
    const char *name;
    json_t *value;

    *out = NULL;
    *count = 0;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_object (v)) {
        fail (ctx, "field \"%s\" must be an object of strings", field);
        return -1;
    }
    if (json_object_size (v) > CATALOG_MAX_ITEMS) {
        fail (ctx, "field \"%s\" has too many parameters (the limit is %d)", field,
              CATALOG_MAX_ITEMS);
        return -1;
    }
    *out = mem_alloc ((json_object_size (v) + 1) * sizeof (catalog_param_t));
    json_object_foreach (v, name, value) {
        size_t nlen = strlen (name);
        if (nlen == 0 || nlen > CATALOG_MAX_PARAM_NAME
        ||  strspn (name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != nlen) {
            fail (ctx, "field \"%s\" has an invalid parameter name: use 1 to %d letters, digits, "
                  "'_', '.' or '-'", field, CATALOG_MAX_PARAM_NAME);
            return -1;
        }
        if (in_list (reserved, name)) {
            fail (ctx, "field \"%s\" may not set \"%s\": the request builder sets it", field, name);
            return -1;
        }
        if (!json_is_string (value) || json_string_length (value) > CATALOG_MAX_URL
        ||  strlen (json_string_value (value)) != json_string_length (value)) {
            fail (ctx, "field \"%s\": parameter \"%s\" must be a string of at most %d bytes",
                  field, name, CATALOG_MAX_URL);
            return -1;
        }
        (*out) [*count].name = mem_strdup (name);
        (*out) [*count].value = mem_strdup (json_string_value (value));
        (*count)++;
    }
    return 1;
}

/* FERRULE_<NAME><suffix>: the name upper-cased, '-' as '_'. */
static char *
default_env_name (const char *provider, const char *suffix)
{
    size_t plen = strlen (provider);
    char *s = mem_alloc (8 + plen + strlen (suffix) + 1);
    memcpy (s, "FERRULE_", 8);
    for (size_t i = 0; i < plen; i++) {
        char c = provider [i];
        s [8 + i] = (c >= 'a' && c <= 'z') ? (char) (c - 'a' + 'A') : (c == '-' ? '_' : c);
    }
    strcpy (s + 8 + plen, suffix);
    return s;
}

/* The client secret when the entry does not hold it: the file named by "client_secret_file",
 * else the environment variable, else the file named by that variable with "_FILE" appended
 * (the form Kubernetes Secrets mount). */
static int
resolve_secret_file (ctx_t *ctx, json_t *entry, const char *env_name, char **value)
{
    char *path = NULL, err [512];
    char file_var [CATALOG_MAX_ENV_NAME + 8];
    int rc = -1;
    if (get_string (ctx, entry, "client_secret_file", 4096, &path) < 0)
        return -1;
    snprintf (file_var, sizeof file_var, "%s_FILE", env_name);
    const char *env = getenv (env_name);
    const char *what = "\"client_secret_file\"";
    if (!path && !(env && *env) && getenv (file_var) && *getenv (file_var)) {
        path = mem_strdup (getenv (file_var));
        what = file_var;
    }
    if (path) {
        *value = secrets_read_file (path, what, err, sizeof err);
        if (!*value) {
            fail (ctx, "%s", err);
            goto out;
        }
        if (!**value)
            mem_free_secret (value);
    }
    else if (env && *env)
        *value = secrets_env_value (env);
    if (*value && strlen (*value) > CATALOG_MAX_STRING) {
        fail (ctx, "the client secret is too long (the limit is %d bytes)", CATALOG_MAX_STRING);
        mem_free_secret (value);
        goto out;
    }
    rc = 0;
out:
    mem_free (path);
    return rc;
}

/* One credential: the entry's direct value, else the environment variable. */
static int
resolve_credential (ctx_t *ctx, json_t *entry, const char *field, const char *env_field,
                    const char *suffix, char **value, char **env_name)
{
    char *direct = NULL;
    int rc = get_string (ctx, entry, field, CATALOG_MAX_STRING, &direct);
    if (rc < 0)
        return -1;
    if (get_string (ctx, entry, env_field, CATALOG_MAX_ENV_NAME, env_name) < 0) {
        mem_free_secret (&direct);
        return -1;
    }
    if (!*env_name)
        *env_name = default_env_name (ctx->provider, suffix);
    else
    if (!secrets_env_name_valid (*env_name, CATALOG_MAX_ENV_NAME)) {
        fail (ctx, "field \"%s\" must be an environment variable name of capital letters, "
              "digits and '_'", env_field);
        mem_free_secret (&direct);
        return -1;
    }
    if (direct && *direct) {
        *value = direct;
        return 0;
    }
    mem_free_secret (&direct);
    if (strcmp (field, "client_secret") == 0)
        return resolve_secret_file (ctx, entry, *env_name, value);
    const char *env = getenv (*env_name);
    if (env && *env) {
        if (strlen (env) > CATALOG_MAX_STRING) {
            fail (ctx, "environment variable %s is too long (the limit is %d bytes)", *env_name,
                  CATALOG_MAX_STRING);
            return -1;
        }
        *value = secrets_env_value (env);       /* a client id from a Secret, as the secret */
    }
    return 0;
}

static void
free_params (catalog_param_t *params, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        mem_free (params [i].name);
        mem_free (params [i].value);
    }
    mem_free (params);
}

static void
free_strings (char **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        mem_free (list [i]);
    mem_free (list);
}

static void
provider_clear (catalog_provider_t *p)
{
    mem_free (p->name);
    mem_free (p->authorization_url);
    mem_free (p->token_url);
    mem_free (p->revocation_url);
    mem_free (p->scope_separator);
    free_strings (p->default_scopes, p->default_scope_count);
    free_strings (p->refresh_token_scopes, p->refresh_token_scope_count);
    free_params (p->authorization_params, p->authorization_param_count);
    free_params (p->token_params, p->token_param_count);
    free_params (p->refresh_params, p->refresh_param_count);
    free_strings (p->invalid_grant_codes, p->invalid_grant_code_count);
    mem_free_secret (&p->client_id);
    secmem_free_str (&p->client_secret);
    mem_free (p->client_id_env);
    mem_free (p->client_secret_env);
    mem_free (p->api_base_field);
    mem_free (p->docs_url);
    mem_free (p->notes);
    memset (p, 0, sizeof *p);
}

/* The token answer's fields that carry secrets or that the answer's parser reads itself: naming
 * one as api_base_field would hand a token to callers as a URL, or give one field two meanings. */
static const char *const reserved_answer_fields [] = {
    "access_token", "refresh_token", "id_token", "expires_in", "token_type", "scope", "error",
    "error_description", NULL
};

/* api_base_field: absent or null (none), or a field name of 1 to CATALOG_MAX_FIELD letters,
 * digits, '_', '.' or '-' that is not one of reserved_answer_fields. */
static int
get_api_base_field (ctx_t *ctx, json_t *entry, char **out)
{
    int got = get_string (ctx, entry, "api_base_field", CATALOG_MAX_FIELD, out);
    if (got <= 0)
        return got;
    size_t len = strlen (*out);
    if (len == 0 || strspn (*out, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len) {
        fail (ctx, "field \"api_base_field\" must name a token answer's field: 1 to %d letters, digits, "
              "'_', '.' or '-'", CATALOG_MAX_FIELD);
        return -1;
    }
    if (in_list (reserved_answer_fields, *out)) {
        fail (ctx, "field \"api_base_field\" names \"%s\", which the token answer uses for something else: "
              "name the field that carries the API's base URL, such as \"instance_url\"", *out);
        return -1;
    }
    return 1;
}

static int
name_valid (const char *name)
{
    size_t len = strlen (name);
    if (len == 0 || len > CATALOG_MAX_NAME)
        return 0;
    if (!((name [0] >= 'a' && name [0] <= 'z') || (name [0] >= '0' && name [0] <= '9')))
        return 0;
    return strspn (name, "abcdefghijklmnopqrstuvwxyz0123456789_-") == len;
}

/* Converts one merged JSON entry into p, validating every field. 0 ok, -1 with ctx's err. */
static int
provider_load (ctx_t *ctx, const char *name, json_t *entry, catalog_provider_t *p)
{
    static const char *const auth_names [] = { "client_secret_basic", "client_secret_post", NULL };
    static const char *const rotation_names [] = { "single_use", "reusable", NULL };
    const char *key;
    json_t *value;
    int e;

    p->name = mem_strdup (name);
    if (!name_valid (name)) {
        fail (ctx, "the name must be 1 to %d lower-case letters, digits, '_' or '-', "
              "starting with a letter or digit", CATALOG_MAX_NAME);
        return -1;
    }
    if (!json_is_object (entry)) {
        fail (ctx, "the entry must be a JSON object");
        return -1;
    }
    json_object_foreach (entry, key, value)
        if (!in_list (known_fields, key)) {
            fail (ctx, "unknown field \"%.64s\"", key);
            return -1;
        }
    if (get_url (ctx, entry, "authorization_url", 1, &p->authorization_url) < 0
    ||  get_url (ctx, entry, "token_url", 1, &p->token_url) < 0
    ||  get_url (ctx, entry, "revocation_url", 0, &p->revocation_url) < 0)
        return -1;
    if (!json_object_get (entry, "auth_method") || json_is_null (json_object_get (entry, "auth_method"))) {
        fail (ctx, "field \"auth_method\" is missing: set \"client_secret_basic\" or "
              "\"client_secret_post\", as the provider documents");
        return -1;
    }
    if (get_enum (ctx, entry, "auth_method", auth_names, 0, &e) < 0)
        return -1;
    p->auth_method = (catalog_auth_method_t) e;
    if (get_enum (ctx, entry, "refresh_token_rotation", rotation_names, 0, &e) < 0)
        return -1;
    p->refresh_token_rotation = (catalog_rotation_t) e;

    if (get_string (ctx, entry, "scope_separator", 8, &p->scope_separator) < 0)
        return -1;
    if (!p->scope_separator)
        p->scope_separator = mem_strdup (" ");
    else
    if (!*p->scope_separator) {
        fail (ctx, "field \"scope_separator\" must not be empty");
        return -1;
    }
    if (get_string_array (ctx, entry, "default_scopes", &p->default_scopes,
                          &p->default_scope_count) < 0
    ||  get_string_array (ctx, entry, "refresh_token_scopes", &p->refresh_token_scopes,
                          &p->refresh_token_scope_count) < 0
    ||  get_string_array (ctx, entry, "invalid_grant_codes", &p->invalid_grant_codes,
                          &p->invalid_grant_code_count) < 0
    ||  get_params (ctx, entry, "authorization_params", reserved_authorization_params,
                    &p->authorization_params, &p->authorization_param_count) < 0
    ||  get_params (ctx, entry, "token_params", reserved_token_params,
                    &p->token_params, &p->token_param_count) < 0
    ||  get_params (ctx, entry, "refresh_params", reserved_token_params,
                    &p->refresh_params, &p->refresh_param_count) < 0)
        return -1;
    /* errors_with_200 is read and ignored: an answer's "error" (or "ok": false) is an error whatever
     * its status, at every provider, so the flag had nothing to decide; files that set it still load */
    int ignored = 0;
    if (get_bool (ctx, entry, "pkce", 0, &p->pkce) < 0
    ||  get_bool (ctx, entry, "revocation_ends_grant", 0, &p->revocation_ends_grant) < 0
    ||  get_bool (ctx, entry, "errors_with_200", 0, &ignored) < 0
    ||  get_int (ctx, entry, "reuse_grace_seconds", 0, 86400, 0, &p->reuse_grace_seconds) < 0
    ||  get_int (ctx, entry, "refresh_token_idle_days", 0, 3650, 0,
                 &p->refresh_token_idle_days) < 0
    ||  get_int (ctx, entry, "grant_max_days", 0, 3650, 0, &p->grant_max_days) < 0
    ||  get_int (ctx, entry, "access_token_lifetime_hint", 0, 366 * 86400, 0,
                 &p->access_token_lifetime_hint) < 0)
        return -1;
    char *family = NULL;
    if (get_string (ctx, entry, "family", CATALOG_MAX_NAME, &family) < 0)
        return -1;
    if (family && strcmp (family, "google") != 0) {
        fail (ctx, "field \"family\" must be \"google\" or null");
        mem_free (family);
        return -1;
    }
    p->family = family ? CATALOG_FAMILY_GOOGLE : CATALOG_FAMILY_NONE;
    mem_free (family);
    if (get_string (ctx, entry, "docs_url", CATALOG_MAX_URL, &p->docs_url) < 0
    ||  get_string (ctx, entry, "notes", CATALOG_MAX_STRING, &p->notes) < 0
    ||  get_api_base_field (ctx, entry, &p->api_base_field) < 0)
        return -1;
    if (resolve_credential (ctx, entry, "client_id", "client_id_env", "_CLIENT_ID",
                            &p->client_id, &p->client_id_env) < 0
    ||  resolve_credential (ctx, entry, "client_secret", "client_secret_env", "_CLIENT_SECRET",
                            &p->client_secret, &p->client_secret_env) < 0)
        return -1;
    if (p->client_secret) {
        /* kept for the process's life: in memory left out of core dumps, wiped on free */
        char *kept = secmem_strdup (p->client_secret);
        mem_free_secret (&p->client_secret);
        p->client_secret = kept;
    }
    return 0;
}

/* Cuts jansson's " near '...'" suffix: it quotes the file, which may hold a secret. */
static void
json_error_text (const json_error_t *jerr, char *out, size_t outlen)
{
    snprintf (out, outlen, "%s", jerr->text);
    char *near = strstr (out, " near ");
    if (near)
        *near = '\0';
}

/* Reads the override file into a new buffer of *len bytes (capped). NULL with err on failure. */
static char *
read_file (const char *path, size_t *len, char *err, size_t errlen)
{
    char *data = NULL;
    struct stat st;
    int fd = open (path, O_RDONLY | O_CLOEXEC);

    *len = 0;
    if (fd < 0) {
        snprintf (err, errlen, "could not open provider file \"%s\": %s", path, strerror (errno));
        goto out;
    }
    if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode)) {
        snprintf (err, errlen, "provider file \"%s\" is not a regular file", path);
        goto out;
    }
    if (st.st_size > CATALOG_MAX_FILE) {
        snprintf (err, errlen, "provider file \"%s\" is too large (%lld bytes, the limit is %d)",
                  path, (long long) st.st_size, CATALOG_MAX_FILE);
        goto out;
    }
    data = mem_alloc ((size_t) st.st_size + 1);
    while (*len < (size_t) st.st_size) {
        ssize_t n = read (fd, data + *len, (size_t) st.st_size - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf (err, errlen, "could not read provider file \"%s\": %s", path, strerror (errno));
            mem_wipe (data, *len);
            mem_free (data);
            data = NULL;
            goto out;
        }
        if (n == 0)
            break;
        *len += (size_t) n;
    }
out:
    if (fd >= 0)
        close (fd);
    return data;
}

/* Parses the override text. NULL with err on failure. */
static json_t *
parse_override (const char *data, size_t len, const char *source, char *err, size_t errlen)
{
    json_error_t jerr;
    char text [JSON_ERROR_TEXT_LENGTH];
    json_t *root = json_loadb (data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (!root) {
        json_error_text (&jerr, text, sizeof text);
        snprintf (err, errlen, "provider file \"%s\" is not valid JSON: line %d, column %d: %s",
                  source, jerr.line, jerr.column, text);
        return NULL;
    }
    if (!json_is_object (root)) {
        snprintf (err, errlen, "provider file \"%s\" must hold a JSON object keyed by provider name",
                  source);
        json_decref (root);
        root = NULL;
    }
    return root;
}

static int
compare_names (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

catalog_t *
catalog_new (const char *override_file, char *err, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    catalog_t *catalog;

    assert (err && errlen);
    err [0] = '\0';
    if (override_file && *override_file) {
        data = read_file (override_file, &len, err, errlen);
        if (!data)
            return NULL;
    }
    catalog = catalog_new_from_buffer (data, len, override_file, err, errlen);
    if (data) {
        mem_wipe (data, len);       /* may hold client secrets */
        mem_free (data);
    }
    return catalog;
}

catalog_t *
catalog_new_from_buffer (const char *data, size_t len, const char *source, char *err, size_t errlen)
{
    catalog_t *catalog = NULL;
    json_t *root = NULL;
    json_t *over = NULL;
    const char **names = NULL;
    json_error_t jerr;
    char text [JSON_ERROR_TEXT_LENGTH];
    const char *name;
    json_t *entry;
    size_t n = 0;
    int ok = 0;
    ctx_t ctx = { err, errlen, NULL };

    assert (err && errlen);
    err [0] = '\0';
    root = json_loadb ((const char *) catalog_builtin_data, catalog_builtin_size,
                       JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        json_error_text (&jerr, text, sizeof text);
        snprintf (err, errlen, "the built-in provider catalog is not valid JSON: line %d: %s",
                  jerr.line, text);
        goto out;
    }
    if (!json_is_object (root)) {
        snprintf (err, errlen, "the built-in provider catalog must be a JSON object");
        goto out;
    }
    if (!source)
        source = "(buffer)";
    if (data && len > CATALOG_MAX_FILE) {
        snprintf (err, errlen, "provider file \"%s\" is too large (%zu bytes, the limit is %d)",
                  source, len, CATALOG_MAX_FILE);
        goto out;
    }
    if (data) {
        over = parse_override (data, len, source, err, errlen);
        if (!over)
            goto out;
        json_object_foreach (over, name, entry) {
            json_t *base = json_object_get (root, name);
            if (!json_is_object (entry)) {
                snprintf (err, errlen, "provider file \"%s\": entry \"%.64s\" must be a JSON object",
                          source, name);
                goto out;
            }
            if (base)
                json_object_update (base, entry);
            else
                json_object_set (root, name, entry);
        }
    }
    if (json_object_size (root) > CATALOG_MAX_PROVIDERS) {
        snprintf (err, errlen, "the provider catalog has too many providers (%zu, the limit is %d)",
                  json_object_size (root), CATALOG_MAX_PROVIDERS);
        goto out;
    }
    names = mem_alloc ((json_object_size (root) + 1) * sizeof (char *));
    json_object_foreach (root, name, entry)
        names [n++] = name;
    qsort (names, n, sizeof (char *), compare_names);

    catalog = mem_alloc (sizeof *catalog);
    catalog->providers = mem_alloc ((n + 1) * sizeof (catalog_provider_t));
    for (size_t i = 0; i < n; i++) {
        ctx.provider = names [i];
        catalog->count++;
        if (provider_load (&ctx, names [i], json_object_get (root, names [i]),
                           &catalog->providers [i]) != 0)
            goto out;
    }
    ok = 1;
out:
    mem_free (names);
    json_decref (over);
    json_decref (root);
    if (!ok)
        catalog_destroy (&catalog);
    return catalog;
}

void
catalog_destroy (catalog_t **catalog_p)
{
    if (catalog_p && *catalog_p) {
        catalog_t *catalog = *catalog_p;
        for (size_t i = 0; i < catalog->count; i++)
            provider_clear (&catalog->providers [i]);
        mem_free (catalog->providers);
        mem_free (catalog);
        *catalog_p = NULL;
    }
}

const catalog_provider_t *
catalog_find (const catalog_t *catalog, const char *name)
{
    assert (catalog);
    if (!name)
        return NULL;
    for (size_t i = 0; i < catalog->count; i++)
        if (strcmp (catalog->providers [i].name, name) == 0)
            return &catalog->providers [i];
    return NULL;
}

size_t
catalog_count (const catalog_t *catalog)
{
    assert (catalog);
    return catalog->count;
}

const catalog_provider_t *
catalog_at (const catalog_t *catalog, size_t i)
{
    assert (catalog && i < catalog->count);
    return &catalog->providers [i];
}

fr_status_t
catalog_check_credentials (const catalog_provider_t *p, char *err, size_t errlen)
{
    assert (p);
    if (!p->client_id) {
        if (err && errlen)
            snprintf (err, errlen, "provider \"%s\" has no client id: set %s, or client_id in "
                      "the provider file", p->name, p->client_id_env);
        return FR_CONFIGURATION;
    }
    if (!p->client_secret) {
        if (err && errlen)
            snprintf (err, errlen, "provider \"%s\" has no client secret: set %s", p->name,
                      p->client_secret_env);
        return FR_CONFIGURATION;
    }
    return FR_OK;
}

/* 1 when the word w is among the words of list, separated by spaces. */
static int
has_word (const char *list, const char *w)
{
    size_t n = strlen (w);
    for (const char *s = list; s && *s; ) {
        size_t len = strcspn (s, " ");
        if (len == n && memcmp (s, w, n) == 0)
            return 1;
        s += len;
        s += strspn (s, " ");
    }
    return 0;
}

char *
catalog_connect_scopes (const catalog_provider_t *p, const char *scopes)
{
    mem_buf_t b;
    assert (p);
    /* room for all it joins (the request's scopes and two catalog lists): no append fails */
    mem_buf_init (&b, (scopes ? strlen (scopes) : 0) + 2 * CATALOG_MAX_ITEMS * (CATALOG_MAX_SCOPE + 1));
    if (scopes && *scopes)
        mem_buf_append (&b, scopes, strlen (scopes));
    else
        for (size_t i = 0; i < p->default_scope_count; i++)
            if ((b.len && mem_buf_append (&b, " ", 1) != 0)
            ||  mem_buf_append (&b, p->default_scopes [i], strlen (p->default_scopes [i])) != 0)
                break;
    for (size_t i = 0; i < p->refresh_token_scope_count; i++)
        if (!has_word (b.data, p->refresh_token_scopes [i])
        &&  ((b.len && mem_buf_append (&b, " ", 1) != 0)
             || mem_buf_append (&b, p->refresh_token_scopes [i], strlen (p->refresh_token_scopes [i])) != 0))
            break;
    return b.data ? b.data : mem_strdup ("");
}

char *
catalog_asked_scopes (const catalog_provider_t *p, const char *scopes)
{
    assert (p);
    assert (scopes);
    /* only the end: catalog_connect_scopes appends there, so the order of the rest is kept */
    size_t len = strlen (scopes);
    for (;;) {
        while (len && scopes [len - 1] == ' ')
            len--;
        size_t start = len;
        while (start && scopes [start - 1] != ' ')
            start--;
        size_t i = 0;
        for (; i < p->refresh_token_scope_count; i++)
            if (strlen (p->refresh_token_scopes [i]) == len - start
            &&  memcmp (p->refresh_token_scopes [i], scopes + start, len - start) == 0)
                break;
        if (start == 0 || i == p->refresh_token_scope_count)
            break;                   /* the first word stays: a connect that asked for these alone */
        len = start;
    }
    char *out = mem_alloc (len + 1);
    memcpy (out, scopes, len);
    out [len] = '\0';
    return out;
}

/* 1 when url's host is host, whatever the case (the URLs were validated: scheme, host, no user). */
static int
url_host_is (const char *url, const char *host)
{
    const char *h = url ? strstr (url, "://") : NULL;
    if (!h)
        return 0;
    h += 3;
    size_t len = strcspn (h, "/?:");
    return len == strlen (host) && strncasecmp (h, host, len) == 0;
}

int
catalog_is_google (const catalog_provider_t *p)
{
    static const char *const hosts [] = { "accounts.google.com", "oauth2.googleapis.com", "www.googleapis.com",
                                          NULL };
    if (!p)
        return 0;
    if (p->family == CATALOG_FAMILY_GOOGLE)
        return 1;
    for (int i = 0; hosts [i]; i++)
        if (url_host_is (p->token_url, hosts [i]) || url_host_is (p->authorization_url, hosts [i]))
            return 1;
    return 0;
}

/* The authorization parameter each built-in provider (providers.json) issues no refresh token
 * without. An entry is that provider's when it has its name (the built-in entry, overridden) or
 * its token or authorization URL is on the provider's hosts; Google's also by "family". */
static const struct {
    const char *builtin;
    const char *hosts [4];
    const char *name, *value, *shown;
} offline_params [] = {
    { "google", { "accounts.google.com", "oauth2.googleapis.com", "www.googleapis.com", NULL },
      "access_type", "offline", "access_type=offline" },
    { "dropbox", { "www.dropbox.com", "api.dropboxapi.com", NULL },
      "token_access_type", "offline", "token_access_type=offline" },
};

/* 1 when p is the provider of offline_params [k]. */
static int
offline_param_theirs (const catalog_provider_t *p, size_t k)
{
    int theirs = strcmp (p->name, offline_params [k].builtin) == 0
                 || (strcmp (offline_params [k].builtin, "google") == 0 && catalog_is_google (p));
    for (int i = 0; !theirs && offline_params [k].hosts [i]; i++)
        theirs = url_host_is (p->token_url, offline_params [k].hosts [i])
                 || url_host_is (p->authorization_url, offline_params [k].hosts [i]);
    return theirs;
}

const char *
catalog_offline_param_missing (const catalog_provider_t *p)
{
    for (size_t k = 0; p && k < sizeof offline_params / sizeof offline_params [0]; k++) {
        if (!offline_param_theirs (p, k))
            continue;
        for (size_t i = 0; i < p->authorization_param_count; i++)
            if (strcmp (p->authorization_params [i].name, offline_params [k].name) == 0
            &&  strcmp (p->authorization_params [i].value, offline_params [k].value) == 0)
                return NULL;
        return offline_params [k].shown;
    }
    return NULL;
}

int
catalog_needs_offline_access (const catalog_provider_t *p)
{
    if (!p)
        return 0;
    if (p->refresh_token_scope_count > 0)
        return 1;
    for (size_t k = 0; k < sizeof offline_params / sizeof offline_params [0]; k++)
        if (offline_param_theirs (p, k))
            return 1;
    return 0;
}

const char *
catalog_refresh_scope_missing (const catalog_provider_t *p, const char *scopes)
{
    for (size_t i = 0; p && i < p->refresh_token_scope_count; i++)
        if (!has_word (scopes, p->refresh_token_scopes [i]))
            return p->refresh_token_scopes [i];
    return NULL;
}

void
catalog_forget_environment (const catalog_t *catalog)
{
    char file_var [CATALOG_MAX_ENV_NAME + 8];
    for (size_t i = 0; catalog && i < catalog->count; i++) {
        const char *name = catalog->providers [i].client_secret_env;
        if (!name)
            continue;
        snprintf (file_var, sizeof file_var, "%s_FILE", name);
        char *v = getenv (name);
        if (v)
            mem_wipe (v, strlen (v));
        unsetenv (name);
        unsetenv (file_var);
    }
}
