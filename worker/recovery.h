/* recovery.h - what an earlier run of this worker left behind, settled once per process at its
 * first database connection, as batches: the journal's records replayed (rotated refresh tokens
 * that run received and may not have committed), then that run's leases released and recorded as
 * interrupted refreshes. No refresh starts before both are done (w->started_db); the loop never
 * waits for either: requests, cache hits first, are served all along. A record whose replay fails
 * (its row locked, the database away), and one whose row a failover put behind another worker's
 * lost commit, are tried again apart, holding only their own integrations' claims (failover_hold). */
#ifndef FERRULE_WORKER_RECOVERY_H
#define FERRULE_WORKER_RECOVERY_H
#include "context.h"

typedef struct recovery recovery_t;

recovery_t *recovery_new (void);
void recovery_destroy (recovery_t **r_p);
/* Starts the next step when it is due and a connection is free; a failed step is retried a second
 * after it failed. Sets w->started_db when everything is settled but the records found behind. */
void recovery_tick (worker_t *w, int64_t now);
#endif
