/* store_events.h - the SQL of events and their deliveries (migration 006): the delivery thread's
 * own connection (fan-out, claim, finish, forecasts), and the queries of the events operations,
 * batches on the worker loop's connections */
#ifndef FERRULE_STORE_EVENTS_H
#define FERRULE_STORE_EVENTS_H
#include <stddef.h>
#include <stdint.h>
#include "result.h"
#include "store.h"

#define STORE_EVENTS_LEASE_LEN 32    /* 128 random bits as hex */

typedef struct store_events store_events_t;

/* A connection of its own (never the worker loop's), made and used by one thread that may wait
 * on it: statement_ms (and a margin) bounds every wait for a statement, the connection timeout
 * every wait to connect, and stop_fd (-1: none) all of them. Once stop_fd is readable, every
 * call gives up at once with FR_DATABASE_UNAVAILABLE: a stalled server never answers, and the
 * worker's stop must not wait for it. endpoint names the webhook whose deliveries it carries
 * (its application_name says so), NULL for the forecasts' and counts'. */
store_events_t *store_events_new (const char *conninfo, const char *worker_id, const char *endpoint,
                                  int64_t statement_ms, int stop_fd);
void store_events_destroy (store_events_t **se_p);
/* Connects when not connected (UTC, timeouts, schema check). It does not listen: the worker's main
 * connection hears new events for it (store_sql.h, STORE_EVENTS_NOTIFY). */
fr_status_t store_events_connect (store_events_t *se, char *err, size_t errlen) FR_MUSTCHECK;
int store_events_connected (const store_events_t *se);
/* The socket to wait on, -1 when disconnected: readable when the server closed the session. */
int store_events_socket (const store_events_t *se);
/* Reads what arrived (a notice, or the server's goodbye: then the connection is dropped). */
void store_events_consume (store_events_t *se);

/* How many seconds ago the newest event (by its sequence) that endpoint has a delivery for was
 * created: *age_s, or -1 when it has none. Read once per endpoint when the thread starts. */
fr_status_t store_events_fanned_age (store_events_t *se, const char *endpoint, int64_t *age_s, char *err,
                                     size_t errlen) FR_MUSTCHECK;

/* Creates the delivery rows of endpoint for the events of the last window_s seconds that want it
 * (types NULL: every type; test events only when addressed to it). An event waits while an older
 * event of its integration created within hold_s (beyond window_s: a transaction that committed
 * late), which endpoint wants, has no row yet: the look for late commits gives it one, and this
 * event its own after it. *added: rows created. */
fr_status_t store_events_fanout (store_events_t *se, const char *endpoint, const char *const *types, size_t ntypes,
                                 int64_t window_s, int64_t hold_s, int64_t *added, char *err,
                                 size_t errlen) FR_MUSTCHECK;

/* A fan-out too long for one statement goes in steps of seqs (store_events_fanout_step): where
 * it starts (*after: every event created within lookback_s has a greater seq, unless its
 * transaction began lookback_s before it committed) and ends (*upto: the newest seq committed). */
fr_status_t store_events_scan_bounds (store_events_t *se, int64_t lookback_s, int64_t *after, int64_t *upto,
                                      char *err, size_t errlen) FR_MUSTCHECK;

/* One step of such a fan-out: as store_events_fanout over the first limit events with a seq in
 * (after, upto]. *next: the seq it reached (upto once there is nothing more); *added: rows created. */
fr_status_t store_events_fanout_step (store_events_t *se, const char *endpoint, const char *const *types, size_t ntypes,
                                      int64_t window_s, int64_t after, int64_t upto, int limit, int64_t *next,
                                      int64_t *added, char *err, size_t errlen) FR_MUSTCHECK;

/* One claimed delivery: the event and how often it was tried. */
typedef struct {
    int64_t seq;
    char   *endpoint;
    char   *id;
    char   *type;
    char   *integration;             /* NULL for test events */
    char   *provider;
    char   *diagnosis;
    char   *detail;
    int64_t created_ms;              /* epoch ms */
    int64_t generation;              /* -1: none */
    int64_t expires_at;              /* epoch s, 0: none */
    int     attempts;                /* including this one */
    int64_t age_ms;                  /* since its first attempt (or its replay) */
} store_events_claim_t;

/* Claims up to limit due deliveries of the given endpoints, each the oldest undelivered one of
 * its integration and endpoint, and of the endpoints tests_only names their test events alone
 * (an endpoint held after failures: an operator's test goes at once), under a lease of lease_ms
 * (FOR UPDATE SKIP LOCKED: workers never claim the same row). lease_token receives the lease's
 * token. */
fr_status_t store_events_claim (store_events_t *se, const char *const *endpoints, size_t nendpoints,
                                const char *const *tests_only, size_t ntests_only, int64_t lease_ms,
                                int limit, char lease_token [STORE_EVENTS_LEASE_LEN + 1],
                                store_events_claim_t **claims, size_t *count, char *err, size_t errlen) FR_MUSTCHECK;
void store_events_claims_free (store_events_claim_t **claims, size_t count);

typedef enum { STORE_EVENTS_DELIVERED, STORE_EVENTS_RETRY, STORE_EVENTS_FAILED } store_events_result_t;
/* Records an attempt's outcome, only while the lease is still ours; *applied 0 when it was not. */
fr_status_t store_events_finish (store_events_t *se, int64_t seq, const char *endpoint, const char *lease_token,
                                 store_events_result_t result, int64_t retry_in_ms, long http_status,
                                 const char *error, int *applied, char *err, size_t errlen) FR_MUSTCHECK;

/* Gives back the leases of n claimed deliveries that were not attempted (their attempt could not
 * have ended within the lease): free for the next claim, by any worker, at once, their attempt
 * not counted. *released: how many were still this lease's. */
fr_status_t store_events_release (store_events_t *se, const store_events_claim_t *claims, size_t n,
                                  const char *lease_token, int64_t *released, char *err, size_t errlen) FR_MUSTCHECK;

/* Forecasts for one provider: "expiring" events for active integrations whose refresh token has
 * been unused for warn_s of its idle limit idle_s (0: no limit known), or whose grant (the last
 * connect or import) is older than grant_warn_s of grant_s (0: none). One event per condition
 * and generation (or grant). The idle one reads the whole table, so it is made by one worker for
 * all: only when no worker's has begun within every_ms, the caller's interval (migration 016).
 * *added: events created. */
fr_status_t store_events_forecast (store_events_t *se, const char *provider, int64_t idle_s, int64_t idle_warn_s,
                                   int64_t grant_s, int64_t grant_warn_s, int64_t every_ms, int64_t *added,
                                   char *err, size_t errlen) FR_MUSTCHECK;

/* Counts for the metrics: deliveries to these endpoints pending and failed, each counted up to
 * STORE_EVENTS_COUNT_CAP (that value means at least as many). */
#define STORE_EVENTS_COUNT_CAP 10000
fr_status_t store_events_counts (store_events_t *se, const char *const *endpoints, size_t nendpoints, int64_t *pending,
                                 int64_t *failed, char *err, size_t errlen) FR_MUSTCHECK;

/* --- the operations' queries: batches on a connection of the worker's loop, with no batch in
 * flight (dbwait.c finds one); each returns at once, and its fn runs later from the loop with
 * what was read (valid during the call only), or the batch's failure in err --- */
/* One event as the "events" operation lists it: NULL for what is absent; deliveries is the text
 * of a JSON array; bytes is the size of all its text, for fitting a reply. */
typedef struct {
    char *id, *type, *integration, *provider, *diagnosis, *detail, *at, *expires_at, *deliveries;
    int has_generation;
    int64_t generation;
    size_t bytes;
} store_event_t;
typedef void (store_events_listed_fn) (void *arg, fr_status_t st, const store_event_t *rows, size_t count,
                                       const char *err);
/* What a listing narrows to; each may be NULL. */
typedef struct {
    const char *integration, *event_id;
    const char *since, *until;          /* epoch seconds, as text: created at since or later, before until */
    const char *before;                 /* an event id: only events older than it (FR_NOT_FOUND if none has it) */
} store_events_filter_t;
/* Events (newest first, at most limit + 1: the one more says there are more) with their deliveries. */
fr_status_t store_events_list_start (store_t *s, const store_events_filter_t *f, int64_t limit,
                                     store_events_listed_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
typedef void (store_events_replayed_fn) (void *arg, fr_status_t st, int64_t count, int64_t not_configured,
                                         const char *err);
/* Failed deliveries of one event, or of one integration's events, to one of the configured
 * endpoints back to pending; count: how many. Those to another endpoint (renamed or removed: no
 * delivery thread would ever claim them) stay failed; not_configured: how many. */
fr_status_t store_events_replay_start (store_t *s, const char *event_id, const char *integration, const char *endpoint,
                                       const char *const *configured, size_t nconfigured,
                                       store_events_replayed_fn *fn, void *arg, char *err, size_t errlen) FR_MUSTCHECK;
typedef void (store_events_tested_fn) (void *arg, fr_status_t st, const char *id, const char *err);
/* A test event addressed to endpoint; id: its uuid. */
fr_status_t store_events_insert_test_start (store_t *s, const char *endpoint, store_events_tested_fn *fn, void *arg,
                                            char *err, size_t errlen) FR_MUSTCHECK;
/* Per endpoint: pending, delivered, failed counts, the last error and when, the last success. */
typedef struct {
    int64_t pending, retrying, delivered_last_day, failed;
    char *last_error, *last_failure_at, *last_delivered_at;     /* NULL: none */
} store_endpoint_stats_t;
#define STORE_EVENTS_STATS_MAX 32    /* endpoints in one batch: every configured one (WEBHOOK_MAX_ENDPOINTS) */
typedef void (store_events_stats_fn) (void *arg, fr_status_t st, const store_endpoint_stats_t *stats, size_t n,
                                      const char *err);
/* The stats of endpoints [0 .. n-1] (1 to STORE_EVENTS_STATS_MAX of them), one statement each, in one batch. */
fr_status_t store_events_endpoint_stats_start (store_t *s, const char *const *endpoints, size_t n,
                                               store_events_stats_fn *fn, void *arg, char *err, size_t errlen)
    FR_MUSTCHECK;
#endif
