/* provider.c - per-provider configuration table, fault queue and counters */
#include "provider.h"
#include "mem.h"
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef enum {
    CF_BOOL,                     /* bool */
    CF_LONG,                     /* long within [min, max] */
    CF_STRING,                   /* char *, length within [min, max] */
    CF_STRING_OR_NULL,           /* the same, or NULL */
    CF_MODE,                     /* bool reusable, spelled "single_use" | "reusable" */
    CF_LIST,                     /* json_t * array of strings, each length within [min, max] */
    CF_LIST_OR_NULL              /* the same, or NULL */
} cf_type_t;

#define CF_LIST_MAX  256         /* entries in a list setting */

/* The configuration, one row per setting: the admin API, --config and GET all go through it. */
static const struct {
    const char *name;
    cf_type_t   type;
    size_t      offset;
    long        min, max;
} config_table [] = {
    { "mode",                CF_MODE,         offsetof (provider_config_t, reusable),            0, 0 },
    { "echo_refresh_token",  CF_BOOL,         offsetof (provider_config_t, echo_refresh_token),  0, 0 },
    { "reuse_grace_s",       CF_LONG,         offsetof (provider_config_t, reuse_grace_s),       0, 86400 },
    { "access_ttl",          CF_LONG,         offsetof (provider_config_t, access_ttl),          0, 315360000 },
    { "latency_ms",          CF_LONG,         offsetof (provider_config_t, latency_ms),          0, 600000 },
    { "latency_jitter_ms",   CF_LONG,         offsetof (provider_config_t, latency_jitter_ms),   0, 600000 },
    { "answer_delay_ms",     CF_LONG,         offsetof (provider_config_t, answer_delay_ms),     0, 600000 },
    { "answer_together",     CF_LONG,         offsetof (provider_config_t, answer_together),     0, 10000 },
    { "client_id",           CF_STRING,       offsetof (provider_config_t, client_id),           1, 256 },
    { "client_secret",       CF_STRING,       offsetof (provider_config_t, client_secret),       1, 256 },
    { "errors_with_200",     CF_BOOL,         offsetof (provider_config_t, errors_with_200),     0, 0 },
    { "redirect_uris",       CF_LIST,         offsetof (provider_config_t, redirect_uris),       1, 2048 },
    { "grant_scopes",        CF_LIST_OR_NULL, offsetof (provider_config_t, grant_scopes),        1, 256 },
    { "scope_separator",     CF_STRING,       offsetof (provider_config_t, scope_separator),     1, 8 },
    { "code_ttl",            CF_LONG,         offsetof (provider_config_t, code_ttl),            0, 86400 },
    { "issue_refresh_token", CF_BOOL,         offsetof (provider_config_t, issue_refresh_token), 0, 0 },
    { "refresh_token_scopes", CF_LIST_OR_NULL, offsetof (provider_config_t, refresh_token_scopes), 1, 256 },
    { "omit_expires_in",     CF_BOOL,         offsetof (provider_config_t, omit_expires_in),     0, 0 },
    { "form_answers",        CF_BOOL,         offsetof (provider_config_t, form_answers),        0, 0 },
    { "require_pkce",        CF_BOOL,         offsetof (provider_config_t, require_pkce),        0, 0 },
    { "deny",                CF_BOOL,         offsetof (provider_config_t, deny),                0, 0 },
    { "revoke_whole_grant",  CF_BOOL,         offsetof (provider_config_t, revoke_whole_grant),  0, 0 },
    { "revoke_account_grant", CF_BOOL,        offsetof (provider_config_t, revoke_account_grant), 0, 0 },
    { "instance_url",        CF_STRING_OR_NULL, offsetof (provider_config_t, instance_url),      0, 4096 },
};
#define CONFIG_ROWS (sizeof config_table / sizeof config_table [0])

#define FIELD(cfg, row, type) ((type *) ((char *) (cfg) + config_table [row].offset))

bool
provider_name_valid (const char *name)
{
    size_t len = 0;
    if (!name)
        return false;
    for (; name [len]; len++) {
        char c = name [len];
        if (len == STORE_NAME_MAX
            || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                 || c == '_' || c == '-'))
            return false;
    }
    /* "admin" would shadow the admin endpoints */
    return len > 0 && strcmp (name, "admin") != 0;
}

static void
config_defaults (provider_config_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    cfg->reusable = false;
    cfg->reuse_grace_s = 0;
    cfg->access_ttl = 3600;
    cfg->latency_ms = 0;
    cfg->latency_jitter_ms = 0;
    cfg->answer_delay_ms = 0;
    cfg->answer_together = 0;
    cfg->client_id = mem_strdup ("ferrule-test-client");
    cfg->client_secret = mem_strdup ("ferrule-test-secret");
    cfg->errors_with_200 = false;
    cfg->redirect_uris = json_pack ("[s]", "http://127.0.0.1/callback");
    cfg->grant_scopes = NULL;
    cfg->scope_separator = mem_strdup (" ");
    cfg->code_ttl = 60;
    cfg->issue_refresh_token = true;
    cfg->refresh_token_scopes = NULL;
    cfg->omit_expires_in = false;
    cfg->form_answers = false;
    cfg->require_pkce = false;
    cfg->deny = false;
    cfg->revoke_whole_grant = true;
    cfg->revoke_account_grant = false;
    cfg->instance_url = NULL;
}

static void
config_free (provider_config_t *cfg)
{
    mem_free_secret (&cfg->client_secret);
    mem_free (cfg->client_id);
    mem_free (cfg->scope_separator);
    mem_free (cfg->instance_url);
    json_decref (cfg->redirect_uris);
    json_decref (cfg->grant_scopes);
    json_decref (cfg->refresh_token_scopes);
    memset (cfg, 0, sizeof *cfg);
}

static void
config_copy (provider_config_t *dst, const provider_config_t *src)
{
    *dst = *src;
    dst->client_id = mem_strdup (src->client_id);
    dst->client_secret = mem_strdup (src->client_secret);
    dst->scope_separator = mem_strdup (src->scope_separator);
    dst->instance_url = mem_strdup (src->instance_url);
    dst->redirect_uris = json_deep_copy (src->redirect_uris);
    dst->grant_scopes = src->grant_scopes ? json_deep_copy (src->grant_scopes) : NULL;
    dst->refresh_token_scopes = src->refresh_token_scopes ? json_deep_copy (src->refresh_token_scopes) : NULL;
}

provider_t *
provider_new (const char *name)
{
    provider_t *provider = mem_alloc (sizeof *provider);
    snprintf (provider->name, sizeof provider->name, "%s", name);
    config_defaults (&provider->config);
    return provider;
}

void
provider_destroy (provider_t **p)
{
    if (!p || !*p)
        return;
    config_free (&(*p)->config);
    mem_free (*p);
    *p = NULL;
}

/* Checks that value is an array of at most CF_LIST_MAX strings of length within the row's bounds. */
static int
check_list (const json_t *value, size_t row, char *err, size_t errlen)
{
    size_t i;
    json_t *item;

    if (!json_is_array (value) || json_array_size (value) > CF_LIST_MAX) {
        snprintf (err, errlen, "setting \"%s\" must be an array of at most %d strings",
                  config_table [row].name, CF_LIST_MAX);
        return -1;
    }
    json_array_foreach (value, i, item) {
        size_t len = json_is_string (item) ? json_string_length (item) : 0;
        if (!json_is_string (item) || len < (size_t) config_table [row].min
            || len > (size_t) config_table [row].max || strlen (json_string_value (item)) != len) {
            snprintf (err, errlen, "setting \"%s\" must hold strings of %ld to %ld characters",
                      config_table [row].name, config_table [row].min, config_table [row].max);
            return -1;
        }
    }
    return 0;
}

/* Validates value for row and stores it into cfg, replacing what was there. */
static int
config_set (provider_config_t *cfg, size_t row, const json_t *value, char *err, size_t errlen)
{
    const char *name = config_table [row].name;
    long min = config_table [row].min, max = config_table [row].max;

    switch (config_table [row].type) {
    case CF_BOOL:
        if (!json_is_boolean (value))
            goto wrong_type;
        *FIELD (cfg, row, bool) = json_is_true (value);
        return 0;
    case CF_LONG:
        if (!json_is_integer (value) || json_integer_value (value) < min
            || json_integer_value (value) > max) {
            snprintf (err, errlen, "setting \"%s\" must be an integer from %ld to %ld", name, min, max);
            return -1;
        }
        *FIELD (cfg, row, long) = (long) json_integer_value (value);
        return 0;
    case CF_STRING_OR_NULL:
        if (json_is_null (value)) {
            mem_free (*FIELD (cfg, row, char *));
            *FIELD (cfg, row, char *) = NULL;
            return 0;
        }
        /* fall through */
    case CF_STRING: {
        size_t len = json_is_string (value) ? json_string_length (value) : 0;
        if (!json_is_string (value) || len < (size_t) min || len > (size_t) max
            || strlen (json_string_value (value)) != len) {
            snprintf (err, errlen, "setting \"%s\" must be a string of %ld to %ld characters", name, min, max);
            return -1;
        }
        char **field = FIELD (cfg, row, char *);
        mem_free_secret (field);
        *field = mem_strdup (json_string_value (value));
        return 0;
    }
    case CF_MODE:
        if (json_is_string (value) && strcmp (json_string_value (value), "single_use") == 0)
            *FIELD (cfg, row, bool) = false;
        else if (json_is_string (value) && strcmp (json_string_value (value), "reusable") == 0)
            *FIELD (cfg, row, bool) = true;
        else {
            snprintf (err, errlen, "setting \"mode\" must be \"single_use\" or \"reusable\"");
            return -1;
        }
        return 0;
    case CF_LIST_OR_NULL:
        if (json_is_null (value)) {
            json_decref (*FIELD (cfg, row, json_t *));
            *FIELD (cfg, row, json_t *) = NULL;
            return 0;
        }
        /* fall through */
    case CF_LIST:
        if (check_list (value, row, err, errlen) != 0)
            return -1;
        json_decref (*FIELD (cfg, row, json_t *));
        *FIELD (cfg, row, json_t *) = json_deep_copy (value);
        return 0;
    }
wrong_type:
    snprintf (err, errlen, "setting \"%s\" has the wrong type", name);
    return -1;
}

int
provider_configure (provider_t *provider, const json_t *config, char *err, size_t errlen)
{
    provider_config_t next;
    const char *key;
    json_t *value;
    int rc = -1;

    config_copy (&next, &provider->config);
    if (!json_is_object (config)) {
        snprintf (err, errlen, "provider configuration must be a JSON object");
        goto out;
    }
    json_object_foreach ((json_t *) config, key, value) {
        size_t row;
        for (row = 0; row < CONFIG_ROWS; row++)
            if (strcmp (config_table [row].name, key) == 0)
                break;
        if (row == CONFIG_ROWS) {
            snprintf (err, errlen, "unknown provider setting \"%.64s\"", key);
            goto out;
        }
        if (config_set (&next, row, value, err, errlen) != 0)
            goto out;
    }
    config_free (&provider->config);
    provider->config = next;
    memset (&next, 0, sizeof next);
    rc = 0;
out:
    config_free (&next);
    return rc;
}

json_t *
provider_config_json (const provider_t *provider)
{
    const provider_config_t *cfg = &provider->config;
    json_t *out = json_object ();

    for (size_t row = 0; row < CONFIG_ROWS; row++) {
        json_t *value = NULL;
        switch (config_table [row].type) {
        case CF_BOOL:
            value = json_boolean (*FIELD (cfg, row, bool));
            break;
        case CF_LONG:
            value = json_integer (*FIELD (cfg, row, long));
            break;
        case CF_STRING:
        case CF_STRING_OR_NULL: {
            const char *text = *FIELD (cfg, row, char *);
            value = text ? json_string (text) : json_null ();
            break;
        }
        case CF_MODE:
            value = json_string (*FIELD (cfg, row, bool) ? "reusable" : "single_use");
            break;
        case CF_LIST:
        case CF_LIST_OR_NULL: {
            json_t *list = *FIELD (cfg, row, json_t *);
            value = list ? json_deep_copy (list) : json_null ();
            break;
        }
        }
        json_object_set_new (out, config_table [row].name, value);
    }
    return out;
}

json_t *
provider_stats_json (const provider_t *provider)
{
    const provider_stats_t *s = &provider->stats;
    return json_pack ("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                      "refresh_calls", (json_int_t) s->refresh_calls,
                      "refresh_ok", (json_int_t) s->refresh_ok,
                      "reuse_detections", (json_int_t) s->reuse_detections,
                      "invalid_grants", (json_int_t) s->invalid_grants,
                      "code_exchanges", (json_int_t) s->code_exchanges,
                      "revocations", (json_int_t) s->revocations,
                      "authorize_calls", (json_int_t) s->authorize_calls,
                      "faults_served", (json_int_t) s->faults_served,
                      "max_concurrent_refresh", (json_int_t) s->max_concurrent_refresh);
}

static const char *fault_names [] = {
    [FAULT_STATUS] = "status", [FAULT_RETRY_AFTER] = "retry_after", [FAULT_SLOW] = "slow",
    [FAULT_MALFORMED] = "malformed", [FAULT_HTML] = "html", [FAULT_INVALID_GRANT] = "invalid_grant",
    [FAULT_INVALID_CLIENT] = "invalid_client", [FAULT_DROP] = "drop", [FAULT_EMPTY] = "empty",
    [FAULT_HUGE] = "huge", [FAULT_ERROR_200] = "error_200",
    [FAULT_REASON_QUOTING] = "reason_quoting", [FAULT_NO_ACCESS_TOKEN] = "no_access_token",
    [FAULT_DROP_AFTER] = "drop_after", [FAULT_STATUS_ERROR] = "status_error",
    [FAULT_NO_REFRESH_TOKEN] = "no_refresh_token", [FAULT_INVALID_TOKEN] = "invalid_token",
    [FAULT_OAUTH_ERROR] = "oauth_error",
};

/* Reads the optional integer member name of spec into *out, which keeps its default when absent. */
static int
fault_number (const json_t *spec, const char *name, long min, long max, long *out,
              char *err, size_t errlen)
{
    json_t *value = json_object_get (spec, name);
    if (!value || json_is_null (value))
        return 0;
    if (!json_is_integer (value) || json_integer_value (value) < min || json_integer_value (value) > max) {
        snprintf (err, errlen, "fault \"%s\" must be an integer from %ld to %ld", name, min, max);
        return -1;
    }
    *out = (long) json_integer_value (value);
    return 0;
}

int
provider_fault_add (provider_t *provider, const json_t *spec, char *err, size_t errlen)
{
    fault_t fault = { .count = 1, .retry_after = 1, .delay_ms = 1000, .error = "invalid_auth" };
    const char *kind = json_string_value (json_object_get (spec, "kind"));
    json_t *endpoint = json_object_get (spec, "endpoint");
    json_t *error = json_object_get (spec, "error");
    long status = -1;
    size_t k;

    if (!kind) {
        snprintf (err, errlen, "fault needs a \"kind\" string");
        return -1;
    }
    for (k = 0; k < sizeof fault_names / sizeof fault_names [0]; k++)
        if (strcmp (fault_names [k], kind) == 0)
            break;
    if (k == sizeof fault_names / sizeof fault_names [0]) {
        snprintf (err, errlen, "unknown fault kind \"%.32s\"", kind);
        return -1;
    }
    fault.kind = (fault_kind_t) k;
    if (fault_number (spec, "count", -1, 1000000, &fault.count, err, errlen) != 0
        || fault_number (spec, "status", 100, 599, &status, err, errlen) != 0
        || fault_number (spec, "retry_after", 0, 86400, &fault.retry_after, err, errlen) != 0
        || fault_number (spec, "delay_ms", 0, 600000, &fault.delay_ms, err, errlen) != 0)
        return -1;
    if (fault.count == 0) {
        snprintf (err, errlen, "fault \"count\" must be positive, or -1 for until cleared");
        return -1;
    }
    if (endpoint && !json_is_null (endpoint)) {
        const char *name = json_string_value (endpoint);
        if (name && strcmp (name, "token") == 0)
            fault.endpoint = FAULT_AT_TOKEN;
        else if (name && strcmp (name, "revoke") == 0)
            fault.endpoint = FAULT_AT_REVOKE;
        else {
            snprintf (err, errlen, "fault \"endpoint\" must be \"token\" or \"revoke\"");
            return -1;
        }
    }
    if (error && !json_is_null (error)) {
        const char *code = json_string_value (error);
        size_t len = code ? strlen (code) : 0;
        if (len == 0 || len > FAULT_MAX_ERROR || strspn (code, "abcdefghijklmnopqrstuvwxyz"
                                                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len) {
            snprintf (err, errlen, "fault \"error\" must be 1 to %d of A-Z a-z 0-9 _ . -", FAULT_MAX_ERROR);
            return -1;
        }
        memcpy (fault.error, code, len + 1);
    }
    if (status < 0)
        status = fault.kind == FAULT_RETRY_AFTER ? 429
               : fault.kind == FAULT_STATUS_ERROR || fault.kind == FAULT_OAUTH_ERROR ? 400 : 500;
    fault.status = (int) status;
    if (provider->nfaults == PROVIDER_MAX_FAULTS) {
        snprintf (err, errlen, "provider \"%s\" already has %d faults queued", provider->name,
                  PROVIDER_MAX_FAULTS);
        return -1;
    }
    provider->faults [provider->nfaults++] = fault;
    return 0;
}

bool
provider_fault_take (provider_t *provider, fault_endpoint_t endpoint, fault_t *fault)
{
    size_t i = 0;
    while (i < provider->nfaults && provider->faults [i].endpoint != endpoint)
        i++;
    if (i == provider->nfaults)
        return false;
    *fault = provider->faults [i];
    if (provider->faults [i].count > 0 && --provider->faults [i].count == 0) {
        provider->nfaults--;
        memmove (provider->faults + i, provider->faults + i + 1, (provider->nfaults - i) * sizeof *provider->faults);
    }
    return true;
}

void
provider_faults_clear (provider_t *provider)
{
    provider->nfaults = 0;
}

bool
provider_scope_grantable (const provider_t *provider, const char *scope)
{
    size_t i;
    json_t *item;

    if (!provider->config.grant_scopes)
        return true;
    json_array_foreach (provider->config.grant_scopes, i, item)
        if (strcmp (json_string_value (item), scope) == 0)
            return true;
    return false;
}
