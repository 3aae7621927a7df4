/* store_internal.h - what the store layer's files share: running a statement on the one
 * connection with its deadline and error classification, and reading result columns
 * (private to store*.c: nothing else in worker/ runs SQL) */
#ifndef FERRULE_STORE_INTERNAL_H
#define FERRULE_STORE_INTERNAL_H
#include "store.h"
#include "store_sql.h"
#include "mem.h"
#include "pgarray.h"
#include <libpq-fe.h>

/* Reads row r of res, in STORE_ROW_COLUMNS' order, into row. */
void store_fill_row (const PGresult *res, int r, store_row_t *row);

/* One statement of a batch. */
typedef struct {
    const char *sql;
    int n;
    const char *const *values;
    const int *lengths;
    const int *formats;
} store_stmt_t;

/* A batch's end: st FR_OK with results [i] statement i's rows (cleared after the call), or the
 * batch's failure (nothing of it was committed) with err. */
typedef void (store_batch_fn) (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err);
/* Sends n statements as one transaction, in one round trip (libpq's pipeline mode: BEGIN, the
 * statements, COMMIT, one sync), so one WAL flush commits them all; returns at once. The loop
 * reads the results as they come (store_batch_pump) and done runs from there. One batch at a
 * time: the caller checks store_batch_busy.
 * done's arg is a copy of ctx (size bytes) that the store owns, so a caller's context can live on
 * its stack: the copy is freed after done has run, or by store_destroy if the batch was never
 * delivered; done must not free it. Nothing is copied when the batch does not start. */
fr_status_t store_batch_start (store_t *s, const store_stmt_t *stmts, size_t n, store_batch_fn *done,
                               const void *ctx, size_t size, char *err, size_t errlen) FR_MUSTCHECK;
/* store_batch_start, and after the COMMIT, before the sync, one statement more (after, not NULL)
 * in a transaction of its own: for work that must not share the batch's transaction (the
 * refreshes' notifications, STORE_NOTIFY_SQL). Its rows are not read. done runs as soon as the
 * batch's COMMIT is in, while the transaction after it is still running (the store stays busy
 * until it ends): the callers' answers never wait for it. When it fails, or the connection is
 * lost during it, the batch has still ended FR_OK (what it committed stands) and the store logs
 * the error with after_failure, a sentence saying what the failure costs. */
fr_status_t store_batch_start_then (store_t *s, const store_stmt_t *stmts, size_t n, const store_stmt_t *after,
                                    const char *after_failure, store_batch_fn *done, const void *ctx, size_t size,
                                    char *err, size_t errlen) FR_MUSTCHECK;
/* What a failure of the notifications after a batch (STORE_NOTIFY_SQL) costs, for the log. */
#define STORE_NOTIFY_FAILURE "the other workers were not told of its changes, and a copy one of them has " \
    "cached stays in its cache until its re-validation (FERRULE_CACHE_REVALIDATE_MS) finds it stale; an event " \
    "it wrote waits for the delivery threads' next look (FERRULE_EVENTS_POLL_MS)"
/* store_batch_start_then with the other workers' notifications of the nids integrations ids
 * (STORE_NOTIFY_SQL) as the transaction after, which also wakes the event delivery threads when
 * the batch wrote an event (nids may be 0 for that alone): a notifying transaction holds
 * PostgreSQL's notification lock until its commit is flushed, which would serialize every writer
 * that notifies behind each flush (store_sql.h). FR_TOO_LARGE when the ids do not fit one array. */
fr_status_t store_batch_start_notify (store_t *s, const store_stmt_t *stmts, size_t n, const char *const *ids,
                                      size_t nids, store_batch_fn *done, const void *ctx, size_t size, char *err,
                                      size_t errlen) FR_MUSTCHECK;
/* A batch whose end is only a status: fn (arg, FR_OK, NULL) or its failure; the rows are not read. */
fr_status_t store_batch_start_done (store_t *s, const store_stmt_t *stmts, size_t n, store_done_fn *fn, void *arg,
                                    char *err, size_t errlen) FR_MUSTCHECK;
/* The routing hash of id (ring_hash, common/ring.c) as the signed bigint the route_hash column
 * holds (migration 009). */
int64_t store_route_hash (const char *id);
/* ids as a text[] literal (the caller destroys it): pgarray_text is NULL when they are too long
 * for ids (128 characters each, checked on every request). */
pgarray_t *store_id_array (const char *const *ids, size_t n);
/* A batch of one statement whose $1 is ids as a text[] ("… WHERE id = ANY ($1::text[])"); what
 * names the work in the error when there are too many. */
fr_status_t store_ids_batch_start (store_t *s, const char *sql, const char *const *ids, size_t n, store_batch_fn *done,
                                   const void *ctx, size_t size, const char *what, char *err,
                                   size_t errlen) FR_MUSTCHECK;

/* The refresh protocol's two statements (store_chain.c sends them), which every session prepares
 * (store.c): a statement sent with one of these addresses runs as the prepared one. */
extern const char store_claim_sql [];
extern const char store_commit_sql [];
extern const char store_generic_plans_sql [];    /* a turn's first statement (STORE_GENERIC_PLANS_SQL) */
extern const char store_notify_sql [];           /* after a batch's commits (STORE_NOTIFY_SQL) */

/* An integration's chain, newest first: $1 the id, $2 how many rows; read by store_history_read
 * (the rows are the caller's: store_chain_free). */
#define STORE_HISTORY_SQL \
    "SELECT generation, extract(epoch FROM at)::bigint, outcome, worker, refresh_fingerprint, rotated, detail" \
    " FROM token_chain WHERE integration_id = $1 ORDER BY seq DESC LIMIT $2::bigint"
struct store_chain_row;                  /* store_chain_t (store_chain.h) */
struct store_chain_row *store_history_read (const PGresult *res, size_t *count);

/* A column as a copy (NULL for SQL NULL), an integer (0 for NULL), a bool, or bytea (NULL, *len 0). */
char *store_text_at (const PGresult *res, int row, int col);
int64_t store_int_at (const PGresult *res, int row, int col);
int store_bool_at (const PGresult *res, int row, int col);
unsigned char *store_bytea_at (const PGresult *res, int row, int col, size_t *len);

/* The server's notices on conn (its warnings, the FATAL that ends a terminated session) to the
 * log, naming the connection (a string that outlives conn), instead of libpq's text on stderr. */
void store_log_notices (PGconn *conn, const char *connection);
/* How long past statement_timeout every session waits for the server's own answer (its error) before
 * giving the statement up. */
#define STORE_ANSWER_MARGIN_MS 250
/* The application_name of a worker's connection: its role ("ferrule-worker", "-batches",
 * "-events") and the worker's id, cut to what the server keeps (63 bytes), so that an operator can
 * tell in pg_stat_activity which worker, and which of its connections, a session is. */
#define STORE_APP_NAME_MAX 64
void store_app_name (char *out, const char *role, const char *worker_id);
#endif
