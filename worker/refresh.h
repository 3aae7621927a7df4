/* refresh.h - one refresh per integration at a time: claim the lease, call the provider with no
 * transaction open, commit with a compare-and-set, then answer everyone who waited */
#ifndef FERRULE_REFRESH_H
#define FERRULE_REFRESH_H
#include "context.h"

/* A refresh's states. It starts CLAIMING and ends (its waiters answered, its memory freed) from
 * any state; between, only these moves are legal:
 *   CLAIMING   -> CLAIMING (claim again: lease busy, row locked), CALLING (lease taken),
 *                 RECORDING (lease taken, but the call could not be made)
 *   CALLING    -> ANSWERED (new tokens sealed and journaled), RECORDING (the provider refused)
 *   RECORDING  -> CLAIMING (the invalid_grant was for a superseded refresh token: find the new one)
 *   ANSWERED   -> COMMITTING (the commit failed: retried later), CONFLICTED (compare-and-set lost)
 *   COMMITTING -> COMMITTING (failed again), CONFLICTED
 *   CONFLICTED -> CLAIMING (the stored token does not last as long as a waiter asked)
 * Otherwise a refresh ends from CONFLICTED once the stored row is read. */
typedef enum {
    REFRESH_CLAIMING,                /* waiting to claim (again) at due_ms */
    REFRESH_CALLING,                 /* provider call in flight */
    REFRESH_ANSWERED,                /* new tokens sealed (and journaled): sync, then commit, this turn */
    REFRESH_COMMITTING,              /* commit failed; retrying at due_ms, tokens in the journal */
    REFRESH_RECORDING,               /* a failed attempt being recorded; answered after */
    REFRESH_CONFLICTED,              /* compare-and-set lost: recording it and reading the stored row */
} refresh_state_t;

/* 1 when a refresh may move from one state to the other. */
int refresh_transition_allowed (refresh_state_t from, refresh_state_t to);
const char *refresh_state_name (refresh_state_t s);
/* The wait before a commit's next attempt, after its failures-th failure (1 the first): 250 ms,
 * doubling to 10 s. */
int64_t refresh_commit_retry_ms (unsigned failures);

/* Adds job to the integration's refresh in flight, starting one if there is none. During a
 * backoff or while the provider's circuit is open, no call is made: job gets the token if it is
 * still valid, else provider_unavailable with retry_after. require_scopes (spaces between, NULL:
 * none): the refresh's token goes to job only if the grant it ends with holds each, else
 * insufficient_scope: checked when the grant is known, which a stale entry's may not be. */
void refresh_join (worker_t *w, cache_entry_t *e, const job_t *job, const char *require_scopes);
/* What the message of an invalid_grant met after an interrupted refresh says, word for word: a
 * later answer finds it in the row's last error, and gives the same advice. */
#define REFRESH_INTERRUPTED_WORDS "invalid_grant after an interrupted refresh"
/* The hint for an integration that is needs_reconnect because a provider refused its refresh
 * token, why being that refusal's message (NULL when not known). */
const char *refresh_refused_hint (const char *why);
/* A refresh that answers nobody (refresh-ahead, the sweep): unless one is in flight already,
 * refreshes so the token lasts until valid_until (epoch s); forced: whatever the token's life
 * (keeping alive a refresh token the provider expires when unused). */
void refresh_background (worker_t *w, cache_entry_t *e, int64_t valid_until, int forced);
/* The sweep's sweep_start_fn (arg: the worker): a background refresh of one candidate. */
int refresh_sweep_start (void *arg, const char *id, const char *provider, int keepalive, int64_t now_ms,
                         int64_t *held_until_ms);
/* The sweep's sweep_held_fn: the backoff the cache holds for the integration (0: none, or not cached). */
int64_t refresh_sweep_held (void *arg, const char *id);
/* Takes a row read without the loop waiting (loads.c) into the cache (replacing a stale entry):
 * the entry, unless one is cached already (taken in by a request parked on the same row before
 * this one); NULL with *st and err set when it cannot (a key problem). */
cache_entry_t *refresh_loaded (worker_t *w, const char *id, const store_row_t *row, fr_status_t *st, char *err,
                               size_t errlen);
/* Right after the loop handed curl's finished transfers to their callbacks: syncs the journal
 * once for every rotated token they brought, then commits each (issue a reply per refresh). */
void refresh_after_answers (worker_t *w);
/* Timer work: claims again where a lease was busy, retries commits, forgets expired waiters. */
void refresh_tick (worker_t *w, int64_t now_ms);
/* Earliest time refresh_tick has work, or -1. */
int64_t refresh_next_due (const worker_t *w);
size_t refresh_count (const worker_t *w);
/* Of those, the ones whose provider call is out, or whose answer is not stored yet: a drain that
 * left them could lose a token the provider rotated. */
size_t refresh_at_provider (const worker_t *w);
/* Frees every refresh (shutdown only). */
void refresh_abandon_all (worker_t *w);
#endif
