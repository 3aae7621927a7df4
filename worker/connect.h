/* connect.h - the connect flow: an authorization URL with state and PKCE, the callback's one
 * code exchange, disconnect with revocation at the provider, and the scope checks callers ask
 * for (private to worker/) */
#ifndef FERRULE_CONNECT_H
#define FERRULE_CONNECT_H
#include "worker.h"

#define CONNECT_STATE_TTL_DEFAULT 600     /* seconds a connect may take, browser included */

/* The integration columns migration 002 added, read beside store_load's row. */
typedef struct connect_extra {
    int      refresh_token_missing;  /* the column: connected without a refresh token */
    char    *requested_scopes;       /* space-separated; NULL when never connected */
    char    *scope_report;           /* scopes an upstream API said were missing, or NULL */
    int64_t  scope_report_at;        /* epoch s, 0 none */
    int64_t  disconnected_at;        /* epoch s, 0 none */
} connect_extra_t;

/* op "connect": stores a pending authorization and answers the URL to send the user to. */
void connect_start (worker_t *w, job_t *job, const msgpack_object *root, const char *id);
/* op "callback" (no integration id: the state finds it): exchanges the code exactly once. */
void connect_callback (worker_t *w, job_t *job, const msgpack_object *root);
/* op "disconnect": destroys the stored tokens, then asks the provider to revoke them. */
void connect_disconnect (worker_t *w, job_t *job, const msgpack_object *root, const char *id);
/* op "report_scope": records an upstream 403 insufficient_scope a caller saw. */
void connect_report_scope (worker_t *w, job_t *job, const msgpack_object *root, const char *id);

/* op "token" with "require_scopes": 0 when the entry's scopes hold every one, -1 when a reply
 * (bad_request or insufficient_scope) was sent. Makes no provider call. */
int connect_require_scopes (worker_t *w, const job_t *job, const msgpack_object *root,
                            const cache_entry_t *e);
/* Replies no_refresh_token for an entry whose access token is no longer good enough. */
void connect_reply_no_refresh_token (worker_t *w, const job_t *job, const cache_entry_t *e);
/* After an import: a stored refresh token clears the connect flags and the scope report
 * (best effort: a failure is logged; entry_for ignores the flag when a refresh token exists). */
void connect_note_import (worker_t *w, const job_t *job, const char *id);

fr_status_t connect_extra_load (store_t *s, const char *id, connect_extra_t *x, char *err, size_t errlen)
    FR_MUSTCHECK;
void connect_extra_clear (connect_extra_t *x);

/* 1 when scope is among granted (scopes separated by spaces or commas). A short OpenID scope
 * ("email", "profile") also counts as granted by Google's ".../auth/userinfo.<scope>". */
int connect_scope_granted (const char *granted, const char *scope);
/* The scopes of wanted (separated by spaces) that granted lacks, as "\"a\", \"b\"" in out; how many. */
int connect_missing_scopes (const char *wanted, const char *granted, char *out, size_t outlen);
/* A hint for no_refresh_token, from the provider's notes when they name where to revoke. */
const char *connect_no_refresh_token_hint (const catalog_provider_t *p, char *buf, size_t len);

/* Provider calls in flight (code exchanges, revocations), and shutdown. */
size_t connect_count (const worker_t *w);
void connect_abandon_all (worker_t *w);
#endif
