/* dbwait.h - work that needs a database connection with no batch in flight. It is queued, in
 * order, and started at the end of the loop's turn, after the refresh protocol's batch and the
 * rows missed (which go first: they are on the token path), on a free connection, or on the next
 * turn one frees up: a request never waits for a connection inside the loop, and never falls
 * back to a statement the loop waits for. */
#ifndef FERRULE_WORKER_DBWAIT_H
#define FERRULE_WORKER_DBWAIT_H
#include "context.h"

typedef struct dbwait dbwait_t;

/* The connection a batch can go to now: the batch connection when it is up and has none in
 * flight, else the main one when it has none; NULL while both are busy. */
store_t *dbwait_free_store (const worker_t *w);

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
/* From the loop, after the refresh protocol's batch and the rows missed: starts queued work while
 * a connection is free. */
void dbwait_tick (worker_t *w);
size_t dbwait_count (const worker_t *w);
#endif
