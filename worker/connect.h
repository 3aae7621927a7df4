/* connect.h - the connect flow: an authorization URL with state and PKCE, and the callback's
 * one code exchange (private to worker/) */
#ifndef FERRULE_CONNECT_H
#define FERRULE_CONNECT_H
#include "context.h"

#define CONNECT_STATE_TTL_DEFAULT 600     /* seconds a connect may take, browser included */

/* op "connect": stores a pending authorization and answers the URL to send the user to. */
void connect_start (worker_t *w, job_t *job, const msgpack_object *root, const char *id);
/* op "retry" (gwops.c): connect_start for the connect a retry token repeats, spending the token
 * (its SHA-256, retry_hash) in the statement that writes the pending authorization; a connect
 * refused before that leaves the token usable. browser_hash: the SHA-256 (hex) of the retrying
 * browser's binding the new connect is bound to, "" for an unbound one. */
void connect_start_retry (worker_t *w, job_t *job, const msgpack_object *root, const char *id,
                          const char *retry_hash, const char *browser_hash);
/* op "callback" (no integration id: the state finds it): exchanges the code exactly once. */
void connect_callback (worker_t *w, job_t *job, const msgpack_object *root);

/* 1 for a token that does not expire: the provider gave the access token no lifetime (served as
 * lasting OAUTH_MAX_EXPIRES_IN) and issued no refresh token (GitHub OAuth Apps, Slack without
 * rotation, Notion). Only an API's rejection ends it. */
int connect_never_expires (int refresh_token_missing, int64_t lifetime_s);
/* A caller reports the access token of an integration without a refresh token rejected (token
 * --reject), whether it does not expire or was to last a while yet: access was revoked or ended at
 * the provider, and nothing can renew it. Marks the integration needs_reconnect and replies so.
 * From then on the entry's token is served to no request (cache_reject_token): each token request
 * for it comes here too and takes the write's outcome, and a write that failed is tried again by
 * the next one. */
void connect_reject_unrenewable (worker_t *w, const job_t *job, cache_entry_t *e);
/* Replies no_refresh_token for an entry whose access token is no longer good enough. */
void connect_reply_no_refresh_token (worker_t *w, const job_t *job, const cache_entry_t *e);
/* A hint for no_refresh_token: the operator's for an entry that does not ask for offline access
 * (catalog_offline_param_missing), Google's permissions page for Google (catalog_is_google), else from
 * what the connect asked for (requested, separated by spaces; NULL when not known) against the
 * scopes the provider needs to issue a refresh token. */
const char *connect_no_refresh_token_hint (const catalog_provider_t *p, const char *requested, char *buf,
                                           size_t len);
#endif
