/* sweep.h - the background sweep: each worker refreshes, ahead of time, what is about to expire
 * in the partitions it owns, and keeps alive refresh tokens that providers expire when unused */
#ifndef FERRULE_SWEEP_H
#define FERRULE_SWEEP_H
#include <msgpack.h>
#include <stdint.h>

struct worker;
typedef struct sweep sweep_t;

typedef struct {
    int64_t interval_ms;        /* how often the sweep runs */
    int64_t horizon_s;          /* refresh what expires within this (bounded per token, see sweep_horizon) */
    int64_t rate_per_s;         /* provider calls per provider per second the sweep may start */
    int64_t batch;              /* candidates read per query */
} sweep_config_t;

sweep_t *sweep_new (const sweep_config_t *cfg);
void sweep_destroy (sweep_t **s_p);
/* From a broker's PING: the live workers and the partition count. Returns how many partitions
 * this worker owns now. */
uint32_t sweep_set_membership (sweep_t *s, const char *me, const msgpack_object *workers, int64_t partitions);
/* 1 when this worker owns the integration's partition (by the last membership seen). */
int sweep_owns (const sweep_t *s, const char *integration);
uint32_t sweep_owned_count (const sweep_t *s);
/* Runs a sweep round when one is due. */
void sweep_tick (struct worker *w, int64_t now_ms);
int64_t sweep_next_due (const sweep_t *s);
/* The horizon of a token that lives lifetime_s when issued (0 unknown): the configured horizon,
 * but at most a quarter of the lifetime (so an idle integration rotates about once per lifetime)
 * and at least one sweep interval and a margin (so a pass always comes before expiry), never
 * more than half the lifetime. */
int64_t sweep_horizon (const sweep_t *s, int64_t lifetime_s);
#endif
