/* dbwait.h - work that needs a database connection with no batch in flight. It is queued, in
 * order, and started at the end of the loop's turn, after the refresh protocol's batch and the
 * rows missed (which go first: they are on the token path), on a free connection, or on the next
 * turn one frees up: a request never waits for a connection inside the loop, and never falls
 * back to a statement the loop waits for. */
#ifndef FERRULE_WORKER_DBWAIT_H
#define FERRULE_WORKER_DBWAIT_H
#include "context.h"
#include "ident.h"

typedef struct dbwait dbwait_t;

/* The connection a batch can go to now: the batch connection when it is up and has none in
 * flight, else the main one when it has none; NULL while both are busy. */
store_t *dbwait_free_store (const worker_t *w);
/* 1 when either connection is up: work added with dbwait_add_later waits for one. */
int dbwait_any_connected (const worker_t *w);
/* For a log line about work queued again with dbwait_add (deadline -1): when it will be tried,
 * " (tried again when a connection is free)" or, with none up, "... once the database is back". */
const char *dbwait_retry_when (const worker_t *w);

/* Starts the work (its batch) on store, a connection with no batch in flight; with store NULL the
 * work is dropped unstarted (the worker is going away, or its deadline passed) and only frees arg. */
typedef void (dbwait_fn) (worker_t *w, store_t *store, void *arg);

dbwait_t *dbwait_new (void);
/* Drops what is queued (fn with store NULL). */
void dbwait_destroy (dbwait_t **q_p, worker_t *w);
/* deadline_ms (monotonic): work still queued then is dropped (its request was answered with a
 * timeout by the broker); it is started on a free connection even when that one is down, and
 * then fails at once (database_unavailable, with a retry_after). -1: work that must be done (a
 * record of what a provider did): never dropped for time, and started only on a connection that
 * is up, waiting for the database to return. */
void dbwait_add (worker_t *w, dbwait_fn *fn, void *arg, int64_t deadline_ms);
/* Work that answers job (a copy inside arg), under its deadline: not started once the time to
 * answer it has come (dbwait_answer_ms); job is then answered timeout, and fn called with no store. */
void dbwait_add_for (worker_t *w, dbwait_fn *fn, void *arg, const job_t *job);
/* When a request waiting on the loop (for a connection, for a refresh) with deadline_ms is
 * answered with what it waits for, if still waiting: 100 ms before, or a quarter of the time it
 * has left at now_ms when that is shorter. */
int64_t dbwait_answer_ms (int64_t deadline_ms, int64_t now_ms);
/* Work that must be done (as deadline -1), tried again after a failure: not started before
 * not_before_ms (monotonic). */
void dbwait_add_later (worker_t *w, dbwait_fn *fn, void *arg, int64_t not_before_ms);
/* The head of a request's work that dbwait starts and, on a failure to start, answers: a struct
 * beginning with it is queued under the request's deadline, and freed with mem_free by dbwait
 * when it is dropped or cannot start (else by the batch's end, which answers the request). */
typedef struct {
    worker_t *w;
    job_t job;
} dbwait_req_t;
/* Starts req's batch on store: FR_OK, or the failure to answer (err). */
typedef fr_status_t (dbwait_start_fn) (store_t *store, void *req, char *err, size_t errlen);
/* Queues the request's work (req points at the head of it, from mem_alloc), answered as
 * dbwait_add_for's when it cannot start in time. */
void dbwait_request (dbwait_req_t *req, dbwait_start_fn *start);
/* The commonest such work: a request about one integration. */
typedef struct {
    dbwait_req_t req;
    char id [IDENT_MAX + 1];
} dbwait_about_t;
/* Queues it (a copy of job and id). */
void dbwait_about (worker_t *w, const job_t *job, const char *id, dbwait_start_fn *start);
/* From the loop, after the refresh protocol's batch and the rows missed: starts queued work while
 * a connection is free. */
void dbwait_tick (worker_t *w);
/* Earliest time dbwait_tick answers a request that waits for a connection, or -1. */
int64_t dbwait_next_due (const worker_t *w);
size_t dbwait_count (const worker_t *w);
/* 1 while dbwait_destroy drops the queue: a dbwait_fn given no store then must not queue again. */
int dbwait_stopping (const worker_t *w);
/* For work that must be done whose first try answers a request (queued with the request's
 * deadline): called by its dbwait_fn first. With no store because that deadline passed (the broker
 * has answered the request with its timeout), queues fn and arg again without a deadline, for a
 * connection that is up, and returns 1: the caller notes that nobody waits and returns. 0
 * otherwise (a store to start on, or the worker stopping). */
int dbwait_requeue_late (worker_t *w, store_t *store, dbwait_fn *fn, void *arg);
#endif
