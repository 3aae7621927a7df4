/* store_connect.h - the statements of the connect flow: storing a connection's tokens (import and
 * code exchange alike), the pending authorizations table, disconnect, scope reports, and the
 * counts and reads status and doctor need */
#ifndef FERRULE_STORE_CONNECT_H
#define FERRULE_STORE_CONNECT_H
#include "store_chain.h"

/* The integration columns migration 002 added, read beside an integration's row. */
typedef struct store_extra {
    int      refresh_token_missing;  /* connected without a refresh token (and none since) */
    char    *requested_scopes;       /* space-separated; NULL when never connected */
    char    *scope_report;           /* scopes an upstream API said were missing, or NULL */
    int64_t  scope_report_at;        /* epoch s, 0 none */
    int64_t  disconnected_at;        /* epoch s, 0 none */
} store_extra_t;

void store_extra_clear (store_extra_t *x);
/* A deep copy of src into dst; clear it with store_extra_clear. */
void store_extra_copy (store_extra_t *dst, const store_extra_t *src);

/* The integration as a batch's writes left it: the row and its columns (the callee's to read,
 * freed after it returns), FR_NOT_FOUND for an unknown id, or the batch's failure. */
typedef void (store_row_fn) (void *arg, fr_status_t st, const store_row_t *row, const store_extra_t *x,
                             const char *err);

/* Integrations read by id, as a batch the loop does not wait for (the caller checks
 * store_batch_busy): from store_batch_pump, fn is called for every one found (with its row and
 * columns, which it takes over: store_row_clear, store_extra_clear), then once with both NULL:
 * all delivered (FR_OK; ids not reported do not exist), or the batch failed (st, err). */
typedef void (store_loaded_fn) (void *arg, fr_status_t st, store_row_t *row, store_extra_t *x, const char *err);
fr_status_t store_loads_start (store_t *s, const char *const *ids, size_t n, store_loaded_fn *fn, void *arg,
                               char *err, size_t errlen) FR_MUSTCHECK;

/* New tokens for an integration, sealed by the caller: an import or a code exchange. */
typedef struct {
    const char *id;
    const char *provider;
    int32_t key_id;
    const unsigned char *access_ct;       /* may be NULL (an import without an access token) */
    size_t access_ct_len;
    int64_t access_expires_at;
    int64_t access_lifetime_s;            /* 0 unknown */
    const unsigned char *refresh_ct;      /* NULL: the provider issued none (no_refresh_token) */
    size_t refresh_ct_len;
    const char *refresh_fingerprint;
    const char *scopes;                   /* granted, space-separated */
    const char *requested_scopes;         /* NULL keeps the stored ones */
    const char *outcome;                  /* the chain row's: "imported", "connected" */
    const char *detail;                   /* the chain row's detail (prefixed "re" on a reconnect), or NULL */
    const char *state_hash;               /* the connect whose pending row this finishes, or NULL */
    const char *api_base_url;             /* the provider's API base URL for this grant, or NULL (none:
                                             a reconnect does not keep the old grant's) */
} store_upsert_t;

/* What the upsert did. */
typedef struct {
    int64_t generation;                   /* the one it wrote; 0 when earlier */
    const char *prev_status;              /* the status it replaced; NULL: it created the integration, or earlier */
    int existed;                          /* the integration existed before (for earlier: before the callback) */
    int earlier;                          /* nothing written: an earlier run of this connect's upsert stored it */
    int disconnected;                     /* nothing written: the integration was disconnected after the
                                           * callback took the state (the connect is marked so) */
    int superseded;                       /* nothing written: another connect or an import was stored
                                           * after the callback took the state (marked state_invalid) */
} store_upserted_t;

/* The one statement that stores a connection (a new integration, or a reconnect that replaces
 * the tokens, returns it to active, clears the connect flags, keeps the history and bumps the
 * generation so that a refresh in flight for the old chain cannot commit) and the integration as
 * it then is, in one batch the loop does not wait for (the caller checks store_batch_busy; u's
 * values are copied when this returns): from store_batch_pump, fn gets what it did (up) and the
 * row and its columns (all the callee's to read, freed after it returns), or the failure.
 * A code exchange's (u->state_hash set) is written only while its pending authorization has no
 * outcome, and marks it "connected" in the same transaction: the batch sent again after its
 * answer was lost with the connection writes nothing when the first one had committed, and never
 * undoes what changed since (a disconnect, an import, a refresh that rotated the token); fn then
 * gets up->earlier and the row as it now is. Nor over a disconnect made after the callback took
 * the state: fn gets up->disconnected and the row as the disconnect left it. FR_STATE_INVALID: the
 * connect can no longer be finished (its pending authorization is gone, or it ended otherwise). */
typedef void (store_upserted_fn) (void *arg, fr_status_t st, const store_upserted_t *up, const store_row_t *row,
                                  const store_extra_t *x, const char *err);
fr_status_t store_upsert_start (store_t *s, const store_upsert_t *u, store_upserted_fn *fn, void *arg,
                                char *err, size_t errlen) FR_MUSTCHECK;

/* A connect's pending authorization: state (as its SHA-256), where to go back, the sealed PKCE
 * verifier. Spent states older than a day are collected by the same statement. */
typedef struct {
    const char *state_hash;
    const char *integration;
    const char *provider;
    const char *redirect_uri;
    const char *scopes;                   /* space-separated, may be "" */
    int32_t key_id;                       /* of verifier_ct */
    const unsigned char *verifier_ct;     /* NULL without PKCE */
    size_t verifier_ct_len;
    int64_t ttl_s;
    const char *return_to;                /* where the gateway sends the user afterwards, or NULL */
    const char *retry_hash;               /* a retry token spent by this write (NULL: none); when it
                                             is spent or expired already, nothing is written */
    const char *browser_hash;             /* SHA-256 (hex) of the browser binding the callback must
                                             bring (NULL: an unbound connect) */
} store_pending_new_t;

/* Writes it as a batch the loop does not wait for (the caller checks store_batch_busy; p's values
 * are copied when this returns): from store_batch_pump, fn gets the state's expiry (epoch s) or
 * the failure; FR_STATE_INVALID when p->retry_hash names no live retry token (a concurrent retry
 * spent it). */
typedef void (store_pending_inserted_fn) (void *arg, fr_status_t st, int64_t expires_at, const char *err);
fr_status_t store_pending_insert_start (store_t *s, const store_pending_new_t *p, store_pending_inserted_fn *fn,
                                        void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* A pending row once taken by its callback. */
typedef struct {
    char *integration;
    char *provider;
    char *redirect_uri;
    char *scopes;
    int32_t key_id;
    unsigned char *verifier_ct;
    size_t verifier_ct_len;
} store_pending_t;

/* Marks the state used and reads its row, in one statement, so a reloaded callback URL finds it
 * spent; as a batch the loop does not wait for (the caller checks store_batch_busy): from
 * store_batch_pump, fn gets the row (the callee takes it: store_pending_clear), or
 * FR_STATE_INVALID (err says why: unknown, used when, expired when), or the batch's failure.
 * A row bound to a browser (browser_hash) whose hash differs from browser_hash (NULL: the callback
 * brought none) is spent by the same statement with outcome "browser_mismatch": fn then gets
 * FR_BROWSER_MISMATCH and the row (its integration, for the record; nothing to exchange). Such a
 * row already used or expired is left as it is: FR_BROWSER_MISMATCH without a row (pd NULL). */
typedef void (store_pending_taken_fn) (void *arg, fr_status_t st, store_pending_t *pd, const char *err);
fr_status_t store_pending_take_start (store_t *s, const char *state_hash, const char *browser_hash,
                                      store_pending_taken_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
void store_pending_clear (store_pending_t *pd);
/* How a callback failed: on the pending row, and as a "connect_failed" chain row when the
 * integration exists; a batch the loop does not wait for (the caller checks store_batch_busy). */
fr_status_t store_pending_failed_start (store_t *s, const char *state_hash, const char *id, const char *outcome,
                                        const char *detail, store_done_fn *fn, void *arg, char *err, size_t errlen)
    FR_MUSTCHECK;

/* The newest connect attempt of an integration (doctor). */
typedef struct {
    int found;
    char *provider;
    char *redirect_uri;
    char *outcome;                        /* NULL while none */
    char *outcome_detail;
    int64_t created_at;
    int64_t expires_at;
    int used;
    int expired;
} store_attempt_t;

void store_attempt_clear (store_attempt_t *a);

/* What doctor reads, in one batch the loop does not wait for (the caller checks
 * store_batch_busy): from store_batch_pump, fn gets the newest connect attempt (a->found 0:
 * none), the integration (row and x NULL: it does not exist), its chain, newest first, at most
 * history_limit rows (all of it the callee's to read, freed after it returns), or the failure. */
typedef void (store_doctor_fn) (void *arg, fr_status_t st, const store_attempt_t *a, const store_row_t *row,
                                const store_extra_t *x, const store_chain_t *rows, size_t n, const char *err);
fr_status_t store_doctor_start (store_t *s, const char *id, int64_t history_limit, store_doctor_fn *fn, void *arg,
                                char *err, size_t errlen) FR_MUSTCHECK;

/* A chain row at the integration's current generation (revocations; nothing when it is gone),
 * and the integration as it then is, in one batch the loop does not wait for. */
fr_status_t store_chain_note_start (store_t *s, const char *id, const char *outcome, const char *detail,
                                    store_row_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* What a disconnect took out of the row: the sealed tokens to revoke. */
typedef struct {
    char *prev_status;
    char *provider;
    int32_t key_id;
    unsigned char *refresh_ct;            /* NULL when none */
    size_t refresh_ct_len;
    unsigned char *access_ct;
    size_t access_ct_len;
    int grant_sharers;                    /* other active integrations of the same provider entry in
                                             id's home workspace (ident_home_workspace_len),
                                             at most 100: they may hold the same grant */
} store_disconnected_t;

/* One statement: lock the row, take the sealed tokens out, destroy them, record it, notify; and
 * the integration as it then is; one batch the loop does not wait for (the caller checks
 * store_batch_busy). From store_batch_pump, fn gets what was taken out (d, the callee's to read,
 * with the count of the integrations that may share its grant) and the row, FR_NOT_FOUND for an
 * unknown id, or the failure. An integration already disconnected is left as it is
 * (d->prev_status "disconnected"). */
typedef void (store_disconnected_fn) (void *arg, fr_status_t st, const store_disconnected_t *d, const store_row_t *row,
                                      const store_extra_t *x, const char *err);
fr_status_t store_disconnect_start (store_t *s, const char *id, store_disconnected_fn *fn, void *arg, char *err,
                                    size_t errlen) FR_MUSTCHECK;
void store_disconnected_clear (store_disconnected_t *d);

/* Marks needs_reconnect an active integration at generation whose access token an API rejected
 * and that holds no refresh token to replace it, with message as its last error; then reads the
 * integration as it is (a row changed meanwhile is left as it is), in one batch the loop does not
 * wait for (the caller checks store_batch_busy). After its commit the other workers are told to
 * drop their copy, and the event delivery is woken, as for every change of status. */
fr_status_t store_reject_unrenewable_start (store_t *s, const char *id, int64_t generation, const char *message,
                                            store_row_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* Records an upstream insufficient_scope report (a chain row too) and reads the integration as it
 * then is, in one batch the loop does not wait for (the caller checks store_batch_busy). */
fr_status_t store_report_scope_start (store_t *s, const char *id, const char *scope, const char *detail,
                                      store_row_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* The count of values sealed under another key than current_key_id, which one worker makes for
 * all (table key_stats): each a batch the loop does not wait for (the caller checks
 * store_batch_busy), fn called from store_batch_pump.
 * The claim: this worker takes the next count (claimed 1) when the last one is older than
 * interval_ms or was made against another key, and no other worker's count is under way; fn also
 * gets the last count when it was made against current_key_id (counted 1). */
typedef void (store_keystats_fn) (void *arg, fr_status_t st, int claimed, int counted, int64_t integrations,
                                  int64_t connects, const char *err);
fr_status_t store_keystats_claim_start (store_t *s, int32_t current_key_id, int64_t interval_ms,
                                        store_keystats_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* One range of integrations' blocks, [from, from + count): its values under another key, and the
 * table's size in blocks now; the claim is kept (a worker that stops counting loses it within
 * STORE_KEYSTATS_CLAIM_S). */
#define STORE_KEYSTATS_CLAIM_S 30
typedef void (store_keystats_range_fn) (void *arg, fr_status_t st, int64_t old_values, int64_t table_blocks,
                                        const char *err);
fr_status_t store_keystats_range_start (store_t *s, int32_t current_key_id, int64_t from, int64_t count,
                                        store_keystats_range_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* The count's end: the live connects counted (a small table), and the result stored for every
 * worker if the claim is still this worker's; fn gets both counts (claimed and counted 1). */
fr_status_t store_keystats_publish_start (store_t *s, int32_t current_key_id, int64_t integrations,
                                          store_keystats_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
#endif
