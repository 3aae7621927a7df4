/* store.h - the token chain in PostgreSQL: short locked transactions, never one held open
 * across a provider call */
#ifndef FERRULE_STORE_H
#define FERRULE_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "result.h"

typedef struct store store_t;

#define STORE_LEASE_LEN 32           /* a lease token: 128 random bits as hex */

/* How long the worker's one loop may wait on the database. Every bound is kept well under the
 * brokers' heartbeat timeout (three intervals), so a slow or locked database becomes an error
 * the refresh protocol retries, never a stalled loop that brokers declare lost. */
typedef struct {
    int64_t statement_timeout_ms;    /* the server cancels a statement after this */
    int64_t lock_timeout_ms;         /* ...and a wait for a row lock after this */
    int64_t connect_timeout_ms;      /* a connection attempt gives up after this */
} store_limits_t;

/* One integrations row, tokens still sealed. */
typedef struct {
    char    *id;
    char    *provider;
    char    *status;                 /* active, needs_reconnect, disconnected */
    int32_t  key_id;
    unsigned char *access_ct;        /* NULL when none */
    size_t   access_ct_len;
    int64_t  access_expires_at;      /* epoch seconds, 0 when unknown */
    unsigned char *refresh_ct;
    size_t   refresh_ct_len;
    char    *refresh_fingerprint;
    int64_t  generation;
    char    *scopes;                 /* space-separated */
    char    *last_error_code;
    char    *last_error_message;
    int64_t  last_error_at;
    int64_t  last_refresh_at;
    int64_t  created_at;
    int64_t  updated_at;
    char    *lease_owner;
    char     lease_token [STORE_LEASE_LEN + 1];  /* empty when none (or held by an older worker) */
    int64_t  lease_ms_left;          /* > 0 while someone holds a live lease */
    int      refresh_token_missing;  /* connected without a refresh token (no_refresh_token) */
    int64_t  access_lifetime_s;      /* the access token's lifetime when issued, 0 unknown */
    int      interrupted;            /* a refresh of this generation was interrupted (see claim) */
} store_row_t;

typedef struct {
    int64_t generation;
    int64_t at;
    char   *outcome;
    char   *worker;
    char   *refresh_fingerprint;
    int     rotated;
    char   *detail;
} store_chain_t;

typedef enum {
    CLAIM_ACQUIRED,          /* the lease is ours: call the provider */
    CLAIM_FRESH,             /* someone already refreshed: use row's token, call nobody */
    CLAIM_BUSY,              /* another holder's lease is live: wait and claim again */
    CLAIM_INACTIVE,          /* not active (needs_reconnect, disconnected): answer from row */
    CLAIM_LOCKED,            /* another session holds the row lock: try again shortly */
} store_claim_t;

/* What a successful refresh writes, sealed by the caller. */
typedef struct {
    const char *id;
    int64_t expected_generation;
    char lease_token [STORE_LEASE_LEN + 1];   /* the lease the refresh ran under ("" unknown) */
    int32_t key_id;
    const unsigned char *access_ct;
    size_t access_ct_len;
    int64_t access_expires_at;
    int64_t access_lifetime_s;
    const unsigned char *refresh_ct;      /* the refresh token to keep (new, or old re-sealed) */
    size_t refresh_ct_len;
    const char *refresh_fingerprint;
    int rotated;
    const char *scopes;                   /* NULL keeps the stored scopes */
} store_commit_t;


store_t *store_new (const char *conninfo, const char *worker_id, const store_limits_t *limits);
void store_destroy (store_t **s_p);
/* Makes s a second connection of the same worker that carries batches (store_turn_start) only:
 * it does not LISTEN, and queues no notices. Before its first connection. */
void store_batches_only (store_t *s);
/* Connects when not connected: sets UTC and the limits, listens for changes, checks the schema
 * version. Gives up after limits->connect_timeout_ms. After a failure (of a connection or of a
 * statement that broke it) other calls fail at once until the next store_connect, which the loop
 * makes once a second: a database that is down costs the loop nothing.
 * FR_OK, FR_DATABASE_UNAVAILABLE, or FR_CONFIGURATION (schema too old). */
fr_status_t store_connect (store_t *s, char *err, size_t errlen) FR_MUSTCHECK;
int store_connected (const store_t *s);
/* Without a connection: makes one in the background, a step per call (the loop calls it every turn;
 * a new attempt at most once a second), with the session's settings and the schema check of
 * store_connect. 1 on the call that brought the connection up. Statements meanwhile fail at once
 * with FR_DATABASE_UNAVAILABLE. */
int store_reconnect (store_t *s);
/* The next store_reconnect makes its attempt at once, not up to a second later: another connection
 * to the same server has just come back. No effect while connected or connecting. */
void store_retry_now (store_t *s);
/* 1 while a connection is being made in the background. */
int store_connecting (const store_t *s);
/* The socket the loop polls, -1 when there is none: the connection's, or while a connection is
 * being made in the background, the attempt's, so that each step of its handshake is taken when
 * the server answers and not at the loop's next timeout. */
int store_socket (const store_t *s);
#define STORE_POLL_IN  1
#define STORE_POLL_OUT 2
/* What to poll store_socket for: STORE_POLL_IN, with STORE_POLL_OUT while a batch's statements
 * are not all sent (and sends what it can); while connecting, what the handshake waits for. */
int store_poll_events (const store_t *s);
#define STORE_NOTIFY_ALL "*"          /* integration of a notice that anything may have changed */
#define STORE_NOTIFY_EVENTS "+"       /* integration of a notice that new events wait for delivery */
typedef void (store_notify_fn) (void *arg, const char *worker, const char *integration);
/* Reads what arrived on the connection's socket (call when it is readable). */
void store_read_input (store_t *s);
/* Hands every notification received so far to cb: the worker that made each change and the
 * integration id (both NULL when the connection broke: the cache is cleared on reconnect;
 * STORE_NOTIFY_ALL when more notifications came than the queue holds: anything may have changed;
 * STORE_NOTIFY_EVENTS, once for any number heard, when events were recorded: wake the delivery).
 * Notifications that arrive while a statement runs are read with its result and kept until this
 * is called, so the loop calls it after every piece of work, not only when the socket is readable. */
void store_dispatch_notifies (store_t *s, store_notify_fn *cb, void *arg);
/* Generation and status of the given integrations, for re-validating cached entries, as a batch
 * the loop does not wait for (the caller checks store_batch_busy): from store_batch_pump, fn is
 * called for every one found (ids not found are not reported), then once with id NULL: all
 * delivered (FR_OK), or the batch failed (st, err). */
typedef void (store_generation_fn) (void *arg, fr_status_t st, const char *id, int64_t generation, const char *status,
                                    const char *err);
fr_status_t store_generations_start (store_t *s, const char *const *ids, size_t n, store_generation_fn *fn,
                                     void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* FR_NOT_FOUND, with the message every way of reading an integration gives for an unknown id. */
fr_status_t store_not_found (const char *id, char *err, size_t errlen);
/* The claim: locks the row (without waiting: CLAIM_LOCKED if another session holds it), decides
 * fresh / busy / inactive / acquired, and takes the lease under a new 128-bit token. Fresh means
 * the access token lasts until valid_until (epoch s), or, when forced, that the generation moved
 * past known_generation. A lease found expired was left by a worker that died or stalled during
 * its refresh: the claim records it ("interrupted" chain row) before taking the lease.
 * One claim of a batch: the request, and its own answer. */
typedef struct {
    const char *id;
    int64_t known_generation;
    int64_t valid_until;
    int forced;
    fr_status_t st;                  /* the answer: FR_OK with outcome and row, else err */
    int undecided;                   /* with st: the batch failed as a whole, with the database up;
                                      * this claim may be fine alone (send it in a batch of its own) */
    store_claim_t outcome;
    store_row_t row;                 /* the caller clears it */
    char err [256];
} store_claim_req_t;
/* The claims' answers: reqs back, each with its own answer. Each row decides its own claim; a
 * batch that fails as a whole while the database is up is claimed again claim by claim, so one
 * integration's problem stays its own. */
typedef void (store_claims_fn) (void *arg, store_claim_req_t *reqs, size_t n);

/* The batch in flight (claims or commits): 1 while one is sent or its answer not yet delivered
 * (one at a time per connection). */
int store_batch_busy (const store_t *s);
/* Reads what the database has answered to the batch in flight and, once it is all in, delivers
 * it (the claims' or commits' done). The loop calls it every turn. */
void store_batch_pump (store_t *s);
/* Waits for the batch in flight to end, then delivers it (shutdown). */
void store_batch_finish (store_t *s);
/* When the batch in flight gives up (monotonic ms), -1 when none. */
int64_t store_batch_deadline (const store_t *s);

/* A journal record's replay at start, as a batch: the refresh protocol's compare-and-set (the
 * commit statement of a group commit: the generation still the expected one, the row active, or
 * needs_reconnect and the commit carries a rotated refresh token; the lease cleared only if still
 * this refresh's), then the row as that transaction left it. fn gets committed = 1 when it was
 * written now; settled = 1 when it was not but the row already holds this record's refresh token
 * at a later generation (committed before the crash: only the journal's marker was lost). Neither:
 * the compare-and-set lost to another writer (the caller records the conflict,
 * store_conflict_start). A failure writes nothing: the caller keeps the record and retries. */
typedef void (store_replayed_fn) (void *arg, fr_status_t st, int committed, int settled, const char *err);
fr_status_t store_replay_start (store_t *s, const store_commit_t *c, store_replayed_fn *fn, void *arg,
                                char *err, size_t errlen) FR_MUSTCHECK;
/* The commits' answers (group commit): committed [i] = 1 when commits [i] was written, 0 when its
 * compare-and-set lost (nothing written for it: the caller records the conflict,
 * store_conflict_start); or st, a failure of the whole batch that wrote nothing (the caller
 * commits one by one). */
typedef void (store_commits_fn) (void *arg, fr_status_t st, const int *committed, size_t n, const char *err);
/* A loop turn's work for the database, sent without waiting, in one transaction, one round trip
 * and one WAL flush: the compare-and-sets of the refreshes answered (in id order, so batches
 * sharing rows cannot deadlock), then the claims due. commits and reqs, and what they point to,
 * must live until their done functions ran (from store_batch_pump). On a failure to send
 * (returned), neither is called. */
fr_status_t store_turn_start (store_t *s, const store_commit_t *const *commits, size_t nc, store_commits_fn *commits_done,
                              void *commits_arg, store_claim_req_t *reqs, size_t nq, int64_t lease_ms,
                              store_claims_fn *claims_done, void *claims_arg, char *err, size_t errlen) FR_MUSTCHECK;
/* The end of a batch that returns nothing: FR_OK, or its failure (nothing of it committed). */
typedef void (store_done_fn) (void *arg, fr_status_t st, const char *err);

/* A commit whose compare-and-set was lost (in a batch): its "conflict" chain row, the lease
 * released if it is still ours, and the row as it now is, in one batch the loop does not wait
 * for (the caller checks store_batch_busy). fn gets the row (the callee's to read), FR_NOT_FOUND,
 * or the failure. */
typedef void (store_conflict_fn) (void *arg, fr_status_t st, const store_row_t *row, const char *err);
fr_status_t store_conflict_start (store_t *s, const store_commit_t *c, store_conflict_fn *fn, void *arg, char *err,
                                  size_t errlen) FR_MUSTCHECK;

/* A failed attempt to record: a chain row (outcome, fingerprint may be NULL), last_error, the
 * lease released; new_status (may be NULL) is applied only if the generation is still the
 * expected one. */
typedef struct {
    const char *id;
    int64_t expected_generation;
    const char *lease_token;
    const char *outcome;
    const char *new_status;
    const char *error_code;
    const char *error_message;
    const char *fingerprint;
} store_failure_t;
/* The record's end: stale when the generation had moved on (nothing of the integration's status
 * changed), FR_NOT_FOUND when the integration is gone, or the batch's failure. */
typedef void (store_failure_fn) (void *arg, fr_status_t st, int stale, const char *err);
/* Records it as a batch the loop does not wait for (the caller checks store_batch_busy; f's
 * values are copied when this returns). */
fr_status_t store_record_failure_start (store_t *s, const store_failure_t *f, store_failure_fn *fn, void *arg,
                                        char *err, size_t errlen) FR_MUSTCHECK;
/* Gives a lease back untouched, if it is still this worker's with this token; a batch the loop
 * does not wait for. */
fr_status_t store_release_lease_start (store_t *s, const char *id, const char *lease_token, store_done_fn *fn,
                                       void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* At start, after the journal's replay: leases this worker id still holds belong to a dead
 * incarnation of it, whose refreshes were interrupted. As a batch: records each ("interrupted"
 * chain row), frees the lease rather than make the integration wait for expiry, and gives fn the
 * ids and providers released (fn takes the strings and the arrays). */
typedef void (store_released_fn) (void *arg, fr_status_t st, char **ids, char **providers, size_t count,
                                  const char *err);
fr_status_t store_release_own_leases_start (store_t *s, store_released_fn *fn, void *arg, char *err,
                                            size_t errlen) FR_MUSTCHECK;
/* Integrations that need the sweep: active, with a refresh token, no live lease, and either
 * expiring within their own horizon (horizon_s, but never more than lifetime_share of the token's
 * lifetime, nor less than floor_s), or (provider given) not refreshed for idle_s. At most limit
 * rows per query. */
typedef struct {
    int64_t horizon_s;
    double lifetime_share;
    int64_t floor_s;
    const char *provider;                 /* set: that provider's idle refresh tokens instead */
    int64_t idle_s;
    int64_t limit;
} store_sweep_query_t;
/* Called from store_batch_pump for every candidate of query q (in the order given, strings
 * borrowed for the call), then once with id NULL: all delivered (FR_OK), or the batch failed. */
typedef void (store_candidate_fn) (void *arg, fr_status_t st, size_t q, const char *id, const char *provider,
                                   const char *err);
/* Sends the queries as one batch, not waiting for it (the caller checks store_batch_busy). */
fr_status_t store_sweep_start (store_t *s, const store_sweep_query_t *qs, size_t n, store_candidate_fn *fn,
                               void *arg, char *err, size_t errlen) FR_MUSTCHECK;
const char *store_worker_id (const store_t *s);

void store_row_clear (store_row_t *row);
void store_chain_free (store_chain_t **rows, size_t count);
/* An integration's chain, newest first, at most limit rows, as a batch the loop does not wait for
 * (the caller checks store_batch_busy): from store_batch_pump, fn gets the rows (its own:
 * store_chain_free), or the batch's failure. */
typedef void (store_history_fn) (void *arg, fr_status_t st, store_chain_t *rows, size_t count, const char *err);
fr_status_t store_history_start (store_t *s, const char *id, int64_t limit, store_history_fn *fn, void *arg,
                                 char *err, size_t errlen) FR_MUSTCHECK;
#endif
