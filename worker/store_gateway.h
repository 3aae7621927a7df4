/* store_gateway.h - the statements of the gateway's operations (worker/gwops.c): what a connect
 * attempt was, single-use retry tokens and dashboard links, a workspace's integrations, API keys.
 * Every value handed out is passed in and kept as its SHA-256 (hex); no statement here touches a
 * token column, a lease or a generation. */
#ifndef FERRULE_STORE_GATEWAY_H
#define FERRULE_STORE_GATEWAY_H
#include "store.h"

/* A connect attempt (pending_authorizations) beside its integration, as the gateway shows it. */
typedef struct {
    char *integration;
    char *provider;
    char *redirect_uri;
    char *scopes;                         /* requested, space-separated ("" none) */
    char *return_to;                      /* NULL none */
    char *outcome;                        /* how the callback ended, NULL while none */
    char *status;                         /* the integration's, NULL when it does not exist */
    char *missing_scopes;                 /* requested but not granted, space-separated ("" none) */
    int used;                             /* its callback came */
    int expired;
    int retry_issued;                     /* a retry token was drawn for it already */
    int short_grant;                      /* stored fewer scopes than asked, or no refresh token */
    int other_browser;                    /* bound to a browser, and not to the one that asks */
} store_gw_attempt_t;

/* Every statement here runs as a batch the loop does not wait for (the caller checks
 * store_batch_busy; the values passed are copied when the call returns): fn is called from
 * store_batch_pump with what was read, or with st and err (the batch's failure, or the refusal
 * named below). What fn gets is the callee's to read, freed after it returns, unless said. */

/* A connect attempt by the hash of its state, read by the browser whose binding has browser_hash
 * (NULL or "" none): a (the callee takes it: store_gw_attempt_clear), or FR_NOT_FOUND (err says
 * so) for a state no attempt has. */
typedef void (store_gw_attempt_fn) (void *arg, fr_status_t st, store_gw_attempt_t *a, const char *err);
fr_status_t store_gw_attempt_start (store_t *s, const char *state_hash, const char *browser_hash,
                                    store_gw_attempt_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
void store_gw_attempt_clear (store_gw_attempt_t *a);

/* A value handed out and stored: its expiry (epoch s). */
typedef void (store_gw_issued_fn) (void *arg, fr_status_t st, int64_t expires_at, const char *err);
/* Draws the attempt's one retry token (its hash, living ttl_s seconds) and marks the attempt, in
 * one statement; a bound attempt's only for the browser whose binding has browser_hash (NULL or
 * "" none). FR_STATE_INVALID when the attempt had its token already (another gateway drew it
 * first), is bound to another browser, or is gone. */
fr_status_t store_gw_retry_issue_start (store_t *s, const char *state_hash, const char *token_hash,
                                        const char *browser_hash, int64_t ttl_s, store_gw_issued_fn *fn, void *arg,
                                        char *err, size_t errlen) FR_MUSTCHECK;

/* One text column read: an integration, a workspace. */
typedef void (store_gw_text_fn) (void *arg, fr_status_t st, const char *text, const char *err);

/* The connect a retry token repeats. */
typedef struct {
    char *integration;
    char *provider;
    char *redirect_uri;
    char *scopes;                         /* space-separated ("" none) */
    char *return_to;                      /* NULL none */
    int bound;                            /* the attempt it repeats was bound to a browser */
    int other_browser;                    /* bound, and not to the retrying browser */
} store_gw_retry_t;

/* The connect of a live retry token, without spending it: the token is spent by the statement
 * that writes the connect's pending authorization (store_pending_new_t.retry_hash), so a connect
 * that fails before it leaves the token usable. browser_hash (NULL or "" none) is the retrying
 * browser's, compared with the attempt's. FR_NOT_FOUND (err says so) for a spent, expired or
 * unknown token. */
typedef void (store_gw_retry_fn) (void *arg, fr_status_t st, const store_gw_retry_t *r, const char *err);
fr_status_t store_gw_retry_peek_start (store_t *s, const char *token_hash, const char *browser_hash,
                                       store_gw_retry_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* One integration of a workspace listing: no token column. */
typedef struct {
    char *id;
    char *provider;
    char *status;
    int64_t last_refresh_at;              /* epoch s, 0 never */
    char *last_error;                     /* a wire error code, NULL none */
    int64_t updated_at;
    int refresh_token_missing;
    char *scopes;                         /* granted, space-separated ("" none) */
    char *scope_report;                   /* NULL none */
} store_gw_listed_t;

typedef struct {
    store_gw_listed_t *items;
    size_t count;
    int truncated;                        /* more than max integrations start with the prefix */
} store_gw_workspace_t;

/* The first max integrations (by id, byte order) whose id starts with prefix (1 to IDENT_MAX
 * bytes of ASCII): an ordered range scan of the index integrations_id_c. */
typedef void (store_gw_workspace_fn) (void *arg, fr_status_t st, const store_gw_workspace_t *ws, const char *err);
fr_status_t store_gw_workspace_start (store_t *s, const char *prefix, int max, store_gw_workspace_fn *fn, void *arg,
                                      char *err, size_t errlen) FR_MUSTCHECK;

/* A single-use dashboard link for a workspace, living ttl_s seconds. */
fr_status_t store_gw_link_issue_start (store_t *s, const char *token_hash, const char *workspace, int64_t ttl_s,
                                       store_gw_issued_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* Spends a dashboard link (once): its workspace. FR_STATE_INVALID (err says so) for a spent,
 * expired or unknown link. */
fr_status_t store_gw_link_take_start (store_t *s, const char *token_hash, store_gw_text_fn *fn, void *arg,
                                      char *err, size_t errlen) FR_MUSTCHECK;

/* A workspace's API key; only its hash is stored, never the key. */
typedef struct {
    int64_t key_id;
    char *workspace;
    char *name;
    char *prefix;                         /* the key's first characters: tells keys apart */
    int64_t created_at;                   /* epoch s */
    int64_t last_used_at;                 /* 0 never */
    int64_t revoked_at;                   /* 0 live */
} store_gw_apikey_t;

typedef struct {
    store_gw_apikey_t *items;
    size_t count;
} store_gw_apikeys_t;

typedef void (store_gw_apikey_fn) (void *arg, fr_status_t st, const store_gw_apikey_t *k, const char *err);
/* A new key (by its hash) when the workspace has fewer than max_live live keys: k->key_id and
 * k->created_at filled. FR_TOO_LARGE (err says so) at max_live. */
fr_status_t store_gw_apikey_create_start (store_t *s, const char *key_hash, const char *workspace, const char *name,
                                          const char *prefix, int max_live, store_gw_apikey_fn *fn, void *arg,
                                          char *err, size_t errlen) FR_MUSTCHECK;
/* A workspace's keys, revoked ones too, newest first, at most limit. */
typedef void (store_gw_apikeys_fn) (void *arg, fr_status_t st, const store_gw_apikeys_t *list, const char *err);
fr_status_t store_gw_apikey_list_start (store_t *s, const char *workspace, int limit, store_gw_apikeys_fn *fn,
                                        void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* Revokes a live key of the workspace: k->key_id, name and prefix filled. FR_NOT_FOUND (err says
 * so) when the workspace has no such live key. */
fr_status_t store_gw_apikey_revoke_start (store_t *s, const char *workspace, int64_t key_id, store_gw_apikey_fn *fn,
                                          void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* The live key with this hash: k->key_id, workspace and name; its last_used_at is written at most
 * once a minute. FR_NOT_FOUND for an unknown or revoked key. */
fr_status_t store_gw_apikey_verify_start (store_t *s, const char *key_hash, store_gw_apikey_fn *fn, void *arg,
                                          char *err, size_t errlen) FR_MUSTCHECK;
#endif
