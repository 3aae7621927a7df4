/* catalog.h - the provider catalog: how each OAuth provider issues, rotates and revokes tokens.
 * Built-in entries come from providers.json compiled into the binary; FERRULE_PROVIDERS_FILE
 * may add providers or override fields of built-in ones. */
#ifndef FERRULE_CATALOG_H
#define FERRULE_CATALOG_H
#include <stddef.h>
#include "result.h"

#define CATALOG_MAX_FILE       (1024 * 1024)   /* override file size */
#define CATALOG_MAX_PROVIDERS  256
#define CATALOG_MAX_NAME       64              /* provider name: [a-z0-9_-], starting alphanumeric */
#define CATALOG_MAX_URL        2048
#define CATALOG_MAX_STRING     8192            /* notes, client secrets and other free text */
#define CATALOG_MAX_ITEMS      64              /* scopes, params, error codes per list */
#define CATALOG_MAX_SCOPE      512             /* one item of such a list */
#define CATALOG_MAX_FIELD      64              /* a token answer's field name (api_base_field) */

typedef enum {
    CATALOG_AUTH_BASIC = 0,        /* client_secret_basic: HTTP Basic header (RFC 6749 2.3.1) */
    CATALOG_AUTH_POST              /* client_secret_post: client_id and client_secret in the body */
} catalog_auth_method_t;

typedef enum {
    CATALOG_ROTATION_SINGLE_USE = 0,   /* a refresh spends the old refresh token */
    CATALOG_ROTATION_REUSABLE          /* the refresh token survives refreshes */
} catalog_rotation_t;

typedef enum {
    CATALOG_FAMILY_NONE = 0,
    CATALOG_FAMILY_GOOGLE              /* Google's rules: where users revoke access, testing-mode apps */
} catalog_family_t;

typedef struct {
    char *name;
    char *value;
} catalog_param_t;

typedef struct {
    char *name;                         /* catalog key, e.g. "box" */
    char *authorization_url;
    char *token_url;
    char *revocation_url;               /* RFC 7009 endpoint, or NULL */
    int revocation_ends_grant;          /* revoking any token ends the whole grant (account and OAuth
                                           client: Google), also the one another integration holds */
    catalog_auth_method_t auth_method;
    char *scope_separator;              /* joins scopes in requests; " " unless the provider differs */
    char **default_scopes;              /* asked for when a connect names no scopes */
    size_t default_scope_count;
    char **refresh_token_scopes;        /* asked for by every connect, also one that names its own
                                           scopes: without one of them no refresh token is issued
                                           (Microsoft's offline_access) */
    size_t refresh_token_scope_count;
    catalog_param_t *authorization_params;   /* added to the authorization URL */
    size_t authorization_param_count;
    catalog_param_t *token_params;      /* added to every token request */
    size_t token_param_count;
    catalog_param_t *refresh_params;    /* added to refresh requests only */
    size_t refresh_param_count;
    int pkce;                           /* send an S256 code challenge */
    catalog_rotation_t refresh_token_rotation;
    int reuse_grace_seconds;            /* how long a spent refresh token still works; 0 none */
    int refresh_token_idle_days;        /* provider expires an unused refresh token; 0 none known */
    int grant_max_days;                 /* provider ends a grant this long after consent (Google's OAuth
                                           apps in testing mode: 7); 0 none. events.c forecasts it */
    char **invalid_grant_codes;         /* error codes besides invalid_grant meaning a dead token */
    size_t invalid_grant_code_count;
    char *client_id;                    /* NULL when not configured */
    char *client_secret;                /* NULL when not configured; never log it */
    char *client_id_env;                /* where client_id is read when the entry gives none */
    char *client_secret_env;
    int access_token_lifetime_hint;     /* seconds, documentation only; 0 unknown */
    char *api_base_field;               /* the token answer's field that carries the base URL of the
                                           provider's API for this grant (Salesforce's instance_url),
                                           or NULL: callers get it as api_base_url */
    catalog_family_t family;            /* "family": the provider whose rules an entry follows, when
                                           its URLs do not say (a test double, a proxy) */
    char *docs_url;                     /* may be NULL */
    char *notes;                        /* may be NULL */
} catalog_provider_t;

typedef struct catalog catalog_t;

/* Loads the built-in entries, then the override file when override_file is neither NULL
 * nor empty: its entries add providers or replace, field by field, the fields of the
 * built-in entry of the same name ("field": null removes an optional field). Every
 * entry is then validated. Client credentials are read at load time: a direct
 * client_id / client_secret in the entry wins, otherwise the environment variable named by
 * client_id_env / client_secret_env (default FERRULE_<NAME>_CLIENT_ID / _CLIENT_SECRET).
 * Missing credentials are not an error here (see catalog_check_credentials).
 * Returns NULL with the reason in err on any invalid entry or unreadable file. */
catalog_t *catalog_new (const char *override_file, char *err, size_t errlen);
/* The same from the override file's contents (len bytes; NULL for none), source naming it in
 * messages: the pure part of catalog_new, for the fuzzer and the tests. */
catalog_t *catalog_new_from_buffer (const char *data, size_t len, const char *source, char *err,
                                    size_t errlen);
void catalog_destroy (catalog_t **catalog_p);
/* Removes every provider's client secret variable (and its _FILE twin) from the environment,
 * once the catalog holds the values: the environment is readable in /proc and by children. */
void catalog_forget_environment (const catalog_t *catalog);

/* The entry named name, or NULL. */
const catalog_provider_t *catalog_find (const catalog_t *catalog, const char *name);
size_t catalog_count (const catalog_t *catalog);
/* Entries sorted by name; i < catalog_count. */
const catalog_provider_t *catalog_at (const catalog_t *catalog, size_t i);

/* FR_OK when p has a client id and secret; otherwise FR_CONFIGURATION with err naming the
 * environment variable to set. */
fr_status_t catalog_check_credentials (const catalog_provider_t *p, char *err, size_t errlen)
    FR_MUSTCHECK;

/* The scopes a connect asks for, separated by spaces: scopes (separated by spaces; NULL or empty:
 * p's default_scopes), then each of p's refresh_token_scopes they lack. A new string, maybe "". */
char *catalog_connect_scopes (const catalog_provider_t *p, const char *scopes);
/* What a connect was asked for, from the scopes it stored (catalog_connect_scopes' answer): without
 * the refresh_token_scopes at their end, which catalog_connect_scopes adds again, but never without
 * the first word (no scopes would ask for the default ones). A new string. */
char *catalog_asked_scopes (const catalog_provider_t *p, const char *scopes);
/* The first of p's refresh_token_scopes that scopes (separated by spaces) lacks, or NULL. */
const char *catalog_refresh_scope_missing (const catalog_provider_t *p, const char *scopes);

/* 1 when p is one of Google's: "family": "google", or a token or authorization URL on Google's
   OAuth hosts (accounts.google.com, oauth2.googleapis.com, www.googleapis.com). Never from the
   free-text notes, which an override may replace. */
int catalog_is_google (const catalog_provider_t *p);

/* The authorization parameter without which p's provider issues no refresh token whatever the user
   approves, when p's authorization_params lack it ("access_type=offline" for a Google entry,
   "token_access_type=offline" for Dropbox's: an override's authorization_params replace the
   built-in ones whole); NULL when p asks for offline access, or when no such parameter is known
   for its provider (the built-in entries' list is in catalog.c). */
const char *catalog_offline_param_missing (const catalog_provider_t *p);
/* 1 when p's provider issues a refresh token only for offline access: p has refresh_token_scopes
   (Microsoft's, Salesforce's, ...), or is one of the providers with an offline parameter above
   (Google, Dropbox). Its access tokens expire whether or not an answer says when (Salesforce's
   never carry expires_in), so an answer without a refresh token is one that cannot be renewed,
   never a token that does not expire (GitHub OAuth Apps'). */
int catalog_needs_offline_access (const catalog_provider_t *p);

/* "client_secret_basic" / "single_use" and back. */
const char *catalog_auth_method_name (catalog_auth_method_t m);
const char *catalog_rotation_name (catalog_rotation_t r);

/* The compiled-in providers.json (NUL-terminated), for tests and for printing defaults. */
const char *catalog_builtin_json (size_t *len);
#endif
