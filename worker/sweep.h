/* sweep.h - the background sweep: each worker refreshes, ahead of time, what is about to expire
 * in the partitions it owns, and keeps alive refresh tokens that providers expire when unused */
#ifndef FERRULE_SWEEP_H
#define FERRULE_SWEEP_H
#include <msgpack.h>
#include <stdint.h>
#include "breaker.h"
#include "catalog.h"
#include "store.h"

typedef struct sweep sweep_t;

typedef struct {
    int64_t interval_ms;        /* how often the sweep runs */
    int64_t horizon_s;          /* refresh what expires within this (bounded per token, see sweep_horizon) */
    int64_t rate_per_s;         /* provider calls per provider per second the sweep may start */
    int64_t batch;              /* candidates read per query */
    int64_t quiet_ms;           /* an integration whose refresh failed is left out this long */
    int64_t membership_ms;      /* partitions no broker's PING confirmed this long are left alone */
} sweep_config_t;

sweep_t *sweep_new (const sweep_config_t *cfg);
void sweep_destroy (sweep_t **s_p);
/* From a broker's PING at now_ms: the live workers and the partition count. Returns how many
 * partitions this worker owns now. What no PING confirmed for membership_ms is owned no more
 * (sweep_tick): a worker cut off from every broker would sweep partitions the brokers gave to
 * others meanwhile. */
uint32_t sweep_set_membership (sweep_t *s, const char *me, const msgpack_object *workers, int64_t partitions,
                               int64_t now_ms);
/* 1 when this worker owns the integration's partition (by the last membership seen). */
int sweep_owns (const sweep_t *s, const char *integration);
uint32_t sweep_owned_count (const sweep_t *s);
/* What the sweep found for one integration of a partition it owns: start a background refresh
 * (keepalive: whatever the token's life, for a provider that expires unused refresh tokens)
 * when none is in flight, taking a call from the provider's budget with sweep_take. Returns 1
 * when one started, 0 when none was needed, SWEEP_THROTTLED when the budget was spent (the
 * sweep then comes back to it within a second rather than a whole interval), SWEEP_HELD when
 * the integration waits out a backoff until *held_until_ms (monotonic): the passes leave it out
 * until then, as a row that failed lately is left out for the longest backoff, which a
 * provider's Retry-After may exceed. */
#define SWEEP_THROTTLED (-1)
#define SWEEP_HELD      (-2)
typedef int (sweep_start_fn) (void *arg, const char *id, const char *provider, int keepalive, int64_t now_ms,
                              int64_t *held_until_ms);
/* Until when (monotonic ms) an integration the sweep holds back still waits out its backoff, 0
 * when it does not any more (it succeeded, or was reconnected): asked at every pass. */
typedef int64_t (sweep_held_fn) (void *arg, const char *id);
/* Forgets the partitions owned when no PING confirmed them for membership_ms; then starts a
 * sweep round when one is due (never while paused, draining), as one batch on store, a
 * connection with none in flight (NULL: none is free now, try again shortly), leaving out the
 * integrations of providers breaker holds (NULL: none). Its candidates go to start when the loop
 * delivers its answers. */
void sweep_tick (sweep_t *s, store_t *store, const catalog_t *catalog, const breaker_t *breaker, int paused,
                 int64_t now_ms, sweep_start_fn *start, sweep_held_fn *held, void *arg);
/* One call from provider's budget of sweep calls (rate_per_s); 0 when it is spent for now. */
int sweep_take (sweep_t *s, const char *provider, int64_t now_ms);
int64_t sweep_next_due (const sweep_t *s);
/* The horizon of a token that lives lifetime_s when issued (0 unknown): the configured horizon,
 * but at most a quarter of the lifetime (so an idle integration rotates about once per lifetime)
 * and at least one sweep interval and a margin (so a pass always comes before expiry), never
 * more than half the lifetime. */
int64_t sweep_horizon (const sweep_t *s, int64_t lifetime_s);
#endif
