/* store_chain.h - the refresh protocol's statements on an integration's row and its token chain
 * (store_chain.c): each is sent as a batch on a session of store.h that the loop does not wait
 * for (the caller checks store_batch_busy) and answered from store_batch_pump */
#ifndef FERRULE_STORE_CHAIN_H
#define FERRULE_STORE_CHAIN_H
#include "store.h"
#include "ident.h"

/* One row of an integration's chain, as history and doctor report it. */
typedef struct store_chain_row {
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

/* A refreshed chain row's detail for a single-use provider's answer without a refresh token:
 * doctor reads these words when the next refresh is refused. */
#define STORE_COMMIT_NOTE_KEPT_SPENT "no new refresh token from a single-use provider: the refresh token sent was " \
    "kept, and the provider may have spent it"

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
    const char *unusable;                 /* the answer's access token was unusable: why, kept as the last
                                           * error and in the chain row; NULL when it was usable */
    const char *api_base_url;             /* the answer's API base URL; NULL keeps the stored one */
    const char *note;                     /* a fault of the provider's answer, for the chain row's detail
                                           * (STORE_COMMIT_NOTE_*); NULL: none */
} store_commit_t;

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

/* A journal record's replay at start, as a batch: the refresh protocol's compare-and-set (the
 * commit statement of a group commit: the generation still the expected one, the row active, or
 * needs_reconnect and the commit carries a rotated refresh token; the lease cleared only if still
 * this refresh's), then the row as that transaction left it. fn gets the outcome with st FR_OK,
 * and the row's generation after it (-1: no row). A failure writes nothing: the caller keeps the
 * record and retries. */
typedef enum {
    STORE_REPLAY_COMMITTED,          /* written now */
    STORE_REPLAY_SETTLED,            /* not written: the row holds this record's refresh token at a
                                        later generation (committed before the crash: only the
                                        journal's marker was lost) */
    STORE_REPLAY_BEHIND,             /* not written: the row is at a generation before the one the
                                        record's refresh started from, which only a restore or a
                                        failover that lost the commits before it makes */
    STORE_REPLAY_LOST,               /* the compare-and-set lost to another writer (the caller
                                        records the conflict, store_conflict_start) */
} store_replay_t;
typedef void (store_replayed_fn) (void *arg, fr_status_t st, store_replay_t outcome, int64_t row_generation,
                                  const char *err);
/* hold_ms > 0: when the row is found behind, the record's lease is taken in the same transaction
 * for hold_ms (STORE_HOLD_SQL; not with an unknown lease token). */
fr_status_t store_replay_start (store_t *s, const store_commit_t *c, int64_t hold_ms, store_replayed_fn *fn,
                                void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* The commits' answers (group commit): committed [i] = 1 when commits [i] was written, 0 when its
 * compare-and-set lost (nothing written for it: the caller records the conflict,
 * store_conflict_start); or st, a failure of the whole batch that wrote nothing (the caller
 * commits one by one). */
typedef void (store_commits_fn) (void *arg, fr_status_t st, const int *committed, size_t n, const char *err);
/* A loop turn's work for the database, sent without waiting, in one transaction, one round trip
 * and one WAL flush: the compare-and-sets of the refreshes answered (one statement over arrays
 * that locks their rows in id order first, so batches sharing rows cannot deadlock), then the
 * claims due (one statement too); each element decides its own refresh. The ids of one batch are
 * distinct (single flight). commits and reqs, and what they point to,
 * must live until their done functions ran (from store_batch_pump). On a failure to send
 * (returned), neither is called. */
fr_status_t store_turn_start (store_t *s, const store_commit_t *const *commits, size_t nc, store_commits_fn *commits_done,
                              void *commits_arg, store_claim_req_t *reqs, size_t nq, int64_t lease_ms,
                              store_claims_fn *claims_done, void *claims_arg, char *err, size_t errlen) FR_MUSTCHECK;

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
/* Holds the lease of id for hold_ms under lease_token while its row is before generation below
 * and no other worker's lease on it is live (STORE_HOLD_SQL): while this worker waits to write a
 * lost commit again. FR_OK whether or not it was taken (the caller looks again later). */
fr_status_t store_hold_start (store_t *s, const char *id, int64_t below, const char *lease_token, int64_t hold_ms,
                              store_done_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* Gives a lease back untouched, if it is still this worker's with this token; a batch the loop
 * does not wait for. */
fr_status_t store_release_lease_start (store_t *s, const char *id, const char *lease_token, store_done_fn *fn,
                                       void *arg, char *err, size_t errlen) FR_MUSTCHECK;
/* At start, after the journal's replay: leases this worker id still holds belong to a dead
 * incarnation of it, whose refreshes were interrupted. As a batch over the table's blocks [from,
 * from + count): records each ("interrupted" chain row), frees the lease rather than make the
 * integration wait for expiry, and gives fn the ids and providers released (fn takes the strings
 * and the arrays) and the table's size in blocks now, so that the caller knows whether a range is
 * left. A range at a time, because no index finds a lease's owner (one would cost every claim a
 * write to each index of the table): one statement over the whole table outgrew the statement
 * timeout at a few million rows, and the worker never started refreshing. The nheld ids in held
 * are left alone: their leases are holds this run took (store_hold_start). */
typedef void (store_released_fn) (void *arg, fr_status_t st, char **ids, char **providers, size_t count,
                                  int64_t table_blocks, const char *err);
fr_status_t store_release_own_leases_start (store_t *s, int64_t from, int64_t count, const char *const *held,
                                            size_t nheld, store_released_fn *fn, void *arg, char *err,
                                            size_t errlen) FR_MUSTCHECK;
/* Integrations that need the sweep: active, with a refresh token, no live lease, and either
 * expiring within their own horizon (horizon_s, but never more than lifetime_share of the token's
 * lifetime, nor less than floor_s): at most limit rows; or (nidle > 0) of one of the providers
 * idle_providers and not refreshed for its idle_s, among the limit rows that follow the id
 * cursor in the primary key's order (no index serves the last refresh: the table is walked a
 * bounded chunk a query). The query's answer writes where the next one starts to next_cursor
 * (STORE_CURSOR_LEN bytes; "" when the walk reached the end and starts over). */
#define STORE_CURSOR_LEN (IDENT_MAX + 1)
typedef struct {
    int64_t horizon_s;
    double lifetime_share;
    int64_t floor_s;
    const char *const *idle_providers;
    const int64_t *idle_s;
    size_t nidle;
    const char *cursor;
    char *next_cursor;
    int64_t limit;
    int64_t quiet_ms;                     /* rows whose refresh failed within this are left out */
    uint32_t partitions;                  /* the ring's partition count; 0: rows of every partition */
    const uint32_t *owned;                /* the partitions to read (NULL: every one) */
    size_t nowned;
    const char *const *blocked;           /* providers whose rows are left out (their circuit is open) */
    size_t nblocked;
    const char *const *held;              /* integrations left out (waiting out a provider's Retry-After) */
    size_t nheld;
} store_sweep_query_t;
/* Called from store_batch_pump for every candidate of query q (in the order given, strings
 * borrowed for the call; unhashed: the row has no routing hash yet, and was read whatever its
 * partition), then once with id NULL: all delivered (FR_OK), or the batch failed. */
typedef void (store_candidate_fn) (void *arg, fr_status_t st, size_t q, const char *id, const char *provider,
                                   int unhashed, const char *err);
/* Fills in the routing hash of the rows of ids that have none (made before migration 009), as
 * a batch the loop does not wait for, skipping rows another session holds; fn gets its outcome
 * and how many rows it filled in. */
typedef void (store_filled_fn) (void *arg, fr_status_t st, size_t filled, const char *err);
fr_status_t store_route_hashes_start (store_t *s, const char *const *ids, size_t n, store_filled_fn *fn, void *arg,
                                      char *err, size_t errlen) FR_MUSTCHECK;
/* Sends the queries as one batch, not waiting for it (the caller checks store_batch_busy). */
fr_status_t store_sweep_start (store_t *s, const store_sweep_query_t *qs, size_t n, store_candidate_fn *fn,
                               void *arg, char *err, size_t errlen) FR_MUSTCHECK;

/* Generation, status and refresh token's fingerprint (NULL when none) of the given integrations,
 * for re-validating cached entries and checking kept commits after a failover, as a batch the
 * loop does not wait for (the caller checks store_batch_busy): from store_batch_pump, fn is called
 * for every one found (ids not found are not reported), then once with id NULL: all delivered
 * (FR_OK), or the batch failed (st, err). */
typedef void (store_generation_fn) (void *arg, fr_status_t st, const char *id, int64_t generation, const char *status,
                                    const char *fingerprint, const char *err);
fr_status_t store_generations_start (store_t *s, const char *const *ids, size_t n, store_generation_fn *fn,
                                     void *arg, char *err, size_t errlen) FR_MUSTCHECK;

void store_chain_free (store_chain_t **rows, size_t count);
void store_chain_free (store_chain_t **rows, size_t count);
/* An integration's chain, newest first, at most limit rows, as a batch the loop does not wait for
 * (the caller checks store_batch_busy): from store_batch_pump, fn gets the rows (its own:
 * store_chain_free), or the batch's failure. */
typedef void (store_history_fn) (void *arg, fr_status_t st, store_chain_t *rows, size_t count, const char *err);
fr_status_t store_history_start (store_t *s, const char *id, int64_t limit, store_history_fn *fn, void *arg,
                                 char *err, size_t errlen) FR_MUSTCHECK;
#endif
