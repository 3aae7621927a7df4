/* loads.h - requests that wait for their integration's row. A request that misses the cache is
 * parked, not answered from a statement the loop waits for: the rows missed in a loop turn are
 * read together, in one batch on a free connection, and every request parked on a row goes on
 * from where it stopped when the row is in. Two requests for one row share its read. */
#ifndef FERRULE_WORKER_LOADS_H
#define FERRULE_WORKER_LOADS_H
#include "context.h"
#include "store_connect.h"

typedef struct loads loads_t;

/* How a parked request goes on: job is NULL for work that answers nobody (the sweep), root is
 * the request's body as it came. With st FR_OK, row and x are the integration's as read (every
 * request parked on it gets the same: they are freed after the last); otherwise both are NULL
 * and err says why (not_found, database_unavailable). */
typedef void (loads_resume_fn) (worker_t *w, job_t *job, const msgpack_object *root, const char *id,
                                const store_row_t *row, const store_extra_t *x, fr_status_t st, const char *err,
                                int flag);

loads_t *loads_new (void);
/* Frees what is parked without answering it (the brokers answer a request they do not hear of
 * with a timeout). */
void loads_destroy (loads_t **l_p);

/* Parks a request (job and root may be NULL) until integration id's row has been read; flag is
 * handed back to fn. fresh: the row must be read after this call (status reports what is
 * stored), not by a read already in flight, which then goes again for everyone. */
void loads_park (worker_t *w, const job_t *job, const msgpack_object *root, const char *id, loads_resume_fn *fn,
                 int flag, int fresh);
/* From the loop, after the refresh protocol's batch: reads the rows asked for since the last
 * batch on store, a connection with no batch in flight (NULL, none free: at the next turn, which
 * the answer of a batch in flight starts). Requests whose deadline passed meanwhile are
 * forgotten when their row is in. */
void loads_tick (worker_t *w, store_t *store);
/* A change notification for id (NULL: any): a read of it in flight may predate the change, so
 * its rows are read again before anyone goes on from them. */
void loads_invalidate (worker_t *w, const char *id);
/* Requests parked, for metrics and tests. */
size_t loads_parked (const worker_t *w);
#endif
