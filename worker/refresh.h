/* refresh.h - one refresh per integration at a time: claim the lease, call the provider with no
 * transaction open, commit with a compare-and-set, then answer everyone who waited */
#ifndef FERRULE_REFRESH_H
#define FERRULE_REFRESH_H
#include "worker.h"

/* Adds job to the integration's refresh in flight, starting one if there is none. job NULL starts
 * a background refresh (refresh-ahead, the sweep) that answers nobody. During a backoff or while
 * the provider's circuit is open, no call is made: job gets the token if it is still valid, else
 * provider_unavailable with retry_after. */
void refresh_join (worker_t *w, cache_entry_t *e, const job_t *job);
/* A forced background refresh, to keep alive a refresh token the provider expires when unused. */
void refresh_keepalive (worker_t *w, cache_entry_t *e);
/* Timer work: claims again where a lease was busy, retries commits, forgets expired waiters. */
void refresh_tick (worker_t *w, int64_t now_ms);
/* Earliest time refresh_tick has work, or -1. */
int64_t refresh_next_due (const worker_t *w);
size_t refresh_count (const worker_t *w);
/* Frees every refresh (shutdown only). */
void refresh_abandon_all (worker_t *w);
#endif
