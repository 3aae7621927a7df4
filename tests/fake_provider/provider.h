/* provider.h - one fake provider: its configuration, its fault queue and its counters */
#ifndef FAKE_PROVIDER_H
#define FAKE_PROVIDER_H
#include "store.h"
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define PROVIDER_MAX_FAULTS  256    /* queued faults per provider */

typedef enum {
    FAULT_STATUS, FAULT_RETRY_AFTER, FAULT_SLOW, FAULT_MALFORMED, FAULT_HTML,
    FAULT_INVALID_GRANT, FAULT_INVALID_CLIENT, FAULT_DROP, FAULT_EMPTY, FAULT_HUGE, FAULT_ERROR_200,
    FAULT_REASON_QUOTING, FAULT_NO_ACCESS_TOKEN, FAULT_DROP_AFTER, FAULT_STATUS_ERROR, FAULT_NO_REFRESH_TOKEN,
    FAULT_INVALID_TOKEN, FAULT_OAUTH_ERROR
} fault_kind_t;

/* The endpoint whose requests take the fault. */
typedef enum { FAULT_AT_TOKEN, FAULT_AT_REVOKE } fault_endpoint_t;

#define FAULT_MAX_ERROR 64          /* longest error code of an "error_200", "status_error" or "oauth_error" fault */

typedef struct {
    fault_kind_t kind;
    fault_endpoint_t endpoint;
    long count;                  /* requests left to affect; -1 until cleared */
    int  status;                 /* HTTP status for "status", "retry_after", "status_error" and "oauth_error" */
    long retry_after;            /* seconds, for "retry_after" */
    long delay_ms;               /* for "slow" */
    char error [FAULT_MAX_ERROR + 1];   /* for "error_200", "status_error" and "oauth_error" */
} fault_t;

typedef struct {
    bool    reusable;            /* mode "reusable": refresh tokens do not rotate */
    bool    echo_refresh_token;  /* reusable: refresh answers carry the token sent (HubSpot) */
    long    reuse_grace_s;
    long    access_ttl;
    long    latency_ms;
    long    latency_jitter_ms;   /* each delay drawn uniformly from latency_ms +- this */
    long    answer_delay_ms;     /* refresh answers wait this long after the refresh took effect */
    long    answer_together;     /* refresh answers wait until this many wait, then all go (0: off) */
    char   *client_id;
    char   *client_secret;
    bool    errors_with_200;
    json_t *redirect_uris;       /* array of strings */
    json_t *grant_scopes;        /* array of strings, or NULL for "grant what is asked" */
    char   *scope_separator;
    long    code_ttl;
    bool    issue_refresh_token;
    json_t *refresh_token_scopes; /* array: a refresh token only when the grant holds one of these
                                     (Microsoft's offline_access); NULL: whatever was granted */
    bool    omit_expires_in;     /* token answers carry no expires_in (GitHub OAuth Apps, Notion) */
    bool    form_answers;        /* /token answers application/x-www-form-urlencoded, whatever Accept
                                    says (GitHub's answer to a request without Accept: application/json) */
    bool    require_pkce;
    bool    deny;
    bool    revoke_whole_grant;  /* false: /revoke revokes only the token given (Microsoft) */
    bool    revoke_account_grant; /* /revoke ends every chain of the token's account (Google's grant
                                     is per account and client, not per sign-in) */
    char   *instance_url;        /* added to token answers as "instance_url" (Salesforce), any text; NULL: none */
} provider_config_t;

typedef struct {
    long refresh_calls, refresh_ok, reuse_detections, invalid_grants, code_exchanges,
         revocations, authorize_calls, faults_served;
    long concurrent_refresh;     /* refresh requests being handled right now */
    long max_concurrent_refresh;
} provider_stats_t;

typedef struct provider_t {
    char               name [STORE_NAME_MAX + 1];
    provider_config_t  config;
    provider_stats_t   stats;
    fault_t            faults [PROVIDER_MAX_FAULTS];
    size_t             nfaults;
    struct provider_t *next;
} provider_t;

/* True when name is usable as a provider: [A-Za-z0-9_-]{1,64}, except "admin". */
bool provider_name_valid (const char *name);

provider_t *provider_new (const char *name);   /* name must be valid */
void provider_destroy (provider_t **p);

/* Applies the fields present in the JSON object config. Either every field is
   valid and applied, or nothing changes and err holds the reason. */
int provider_configure (provider_t *provider, const json_t *config, char *err, size_t errlen)
    __attribute__ ((warn_unused_result));
/* The whole configuration as a new JSON object. */
json_t *provider_config_json (const provider_t *provider);
json_t *provider_stats_json (const provider_t *provider);

/* Queues a fault described by spec ({"kind", "endpoint", "count", "status", "retry_after",
   "delay_ms", "error"}). */
int provider_fault_add (provider_t *provider, const json_t *spec, char *err, size_t errlen)
    __attribute__ ((warn_unused_result));
/* Takes one use of the first fault queued for endpoint into *fault; false when there is none. */
bool provider_fault_take (provider_t *provider, fault_endpoint_t endpoint, fault_t *fault);
void provider_faults_clear (provider_t *provider);

/* True when scope is in the granted-scopes list, or that list is null. */
bool provider_scope_grantable (const provider_t *provider, const char *scope);
#endif
