/* refresh.h - one refresh per integration at a time: claim the lease, call the provider with no
 * transaction open, commit with a compare-and-set, then answer everyone who waited */
#ifndef FERRULE_REFRESH_H
#define FERRULE_REFRESH_H
#include "worker.h"

/* Adds job to the integration's refresh in flight, starting one if there is none. During a
 * backoff or while the provider's circuit is open, no call is made: job gets the token if it is
 * still valid, else provider_unavailable with retry_after. */
void refresh_join (worker_t *w, cache_entry_t *e, const job_t *job);
/* A refresh that answers nobody (refresh-ahead, the sweep): unless one is in flight already,
 * refreshes so the token lasts until valid_until (epoch s); forced: whatever the token's life
 * (keeping alive a refresh token the provider expires when unused). */
void refresh_background (worker_t *w, cache_entry_t *e, int64_t valid_until, int forced);
/* Reads an integration from the database into the cache (replacing a stale entry); NULL with
 * *st and err set when it cannot (not_found, database_unavailable, a key problem). */
cache_entry_t *refresh_load (worker_t *w, const char *id, fr_status_t *st, char *err, size_t errlen);
/* Right after the loop handed curl's finished transfers to their callbacks: syncs the journal
 * once for every rotated token they brought, then commits each (issue a reply per refresh). */
void refresh_after_answers (worker_t *w);
/* Timer work: claims again where a lease was busy, retries commits, forgets expired waiters. */
void refresh_tick (worker_t *w, int64_t now_ms);
/* Earliest time refresh_tick has work, or -1. */
int64_t refresh_next_due (const worker_t *w);
size_t refresh_count (const worker_t *w);
/* Frees every refresh (shutdown only). */
void refresh_abandon_all (worker_t *w);
#endif
