/* keystats.c - values on retired keys (the same count as migrations/rekey.h's), counted by one
 * worker for all (store_keystats_*): a claim, when the shared count is older than the interval;
 * then, if this worker's turn, a walk over the integrations table a range of blocks at a time
 * (each range sized to take about a quarter of the statement timeout, so that no table is too
 * large to count, and the next sent no sooner than the last took, so that the refreshes' batches
 * keep the connection half the time); then the result stored for every worker. Each step is a batch the loop does
 * not wait for. */
#include "keystats.h"
#include "store_connect.h"
#include "log.h"
#include "context.h"
#include "dbwait.h"
#include "reply.h"
#include "clock.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

enum { KEYSTATS_IDLE, KEYSTATS_CLAIM, KEYSTATS_WALK, KEYSTATS_PUBLISH };

#define KEYSTATS_WAIT_MS 1000           /* for another worker's count, or after a failed step */

static void
keystats_failed (worker_t *w, const char *err)
{
    /* a database that is away says so elsewhere; one that keeps failing while it answers
     * leaves the gauge stale, once said */
    if (!store_connected (w->store) || w->keystats_warned)
        log_debug (NULL, NULL, "could not count values on retired keys: %s", err);
    else {
        log_warning (NULL, NULL, "could not count values on retired keys: %s", err);
        w->keystats_warned = 1;
    }
}

static void
keystats_set (worker_t *w, int64_t integrations, int64_t connects)
{
    w->keystats_warned = 0;
    w->keystats_integrations = integrations;
    w->keystats_connects = connects;
    w->keystats_counted = 1;
    metrics_set (w->m.values_on_old_keys, integrations + connects);
}

static void
on_claim (void *arg, fr_status_t st, int claimed, int counted, int64_t integrations, int64_t connects,
          const char *err)
{
    worker_t *w = arg;
    w->keystats_in_flight = 0;
    w->keystats_phase = KEYSTATS_IDLE;
    if (st != FR_OK) {
        keystats_failed (w, err);
        return;
    }
    if (counted)
        keystats_set (w, integrations, connects);
    else if (!claimed && w->next_keystats_ms > clock_mono_ms () + KEYSTATS_WAIT_MS)
        w->next_keystats_ms = clock_mono_ms () + KEYSTATS_WAIT_MS;      /* another worker's count, soon */
    if (claimed) {
        w->keystats_phase = KEYSTATS_WALK;
        blockwalk_restart (&w->keystats_walk);
        w->keystats_sum = 0;
    }
}

static void
on_range (void *arg, fr_status_t st, int64_t old_values, int64_t table_blocks, const char *err)
{
    worker_t *w = arg;
    int64_t now = clock_mono_ms (), took = blockwalk_took_ms (&w->keystats_walk, now);
    w->keystats_in_flight = 0;
    if (st != FR_OK) {
        /* the same range again, smaller: what was counted stays. At the next tick when a smaller
         * range may fit, else a second later */
        int smaller = blockwalk_range_failed (&w->keystats_walk);
        w->keystats_step_ms = now + (smaller && store_connected (w->store) ? 0 : KEYSTATS_WAIT_MS);
        keystats_failed (w, err);
        return;
    }
    w->keystats_sum += old_values;
    if (blockwalk_range_done (&w->keystats_walk, now, w->cfg.db.statement_timeout_ms, table_blocks))
        w->keystats_phase = KEYSTATS_PUBLISH;
    /* the connection free half the time for the refreshes' batches: the count is not urgent */
    w->keystats_step_ms = now + took;
}

static void
on_publish (void *arg, fr_status_t st, int claimed, int counted, int64_t integrations, int64_t connects,
            const char *err)
{
    worker_t *w = arg;
    (void) claimed;
    w->keystats_in_flight = 0;
    if (st != FR_OK) {
        w->keystats_step_ms = clock_mono_ms () + KEYSTATS_WAIT_MS;
        keystats_failed (w, err);
        return;                                 /* published again a second later */
    }
    w->keystats_phase = KEYSTATS_IDLE;
    if (counted)
        keystats_set (w, integrations, connects);
}

void
keystats_tick (worker_t *w, int64_t now_ms)
{
    char err [512];
    fr_status_t st;
    /* optional work: a batch on a connection that has none in flight, not waited for; none while
     * draining, which waits for the batches in flight to end */
    if (w->draining || w->keystats_in_flight || now_ms < (w->keystats_phase == KEYSTATS_IDLE ? w->next_keystats_ms
                                                                              : w->keystats_step_ms))
        return;
    store_t *store = dbwait_free_store (w);
    if (!store || !store_connected (store))
        return;
    if (!w->m.values_on_old_keys)
        w->m.values_on_old_keys = metrics_gauge (w->metrics, "worker_values_on_old_keys",
                                                 "stored tokens and live PKCE verifiers sealed with a retired key "
                                                 "(run \"ferrule-migrate rekey\"; 0: the old keys can go)", NULL);
    int32_t key = crypto_keyring_current_id (w->keyring);
    switch (w->keystats_phase) {
    case KEYSTATS_IDLE:
    case KEYSTATS_CLAIM:
        w->next_keystats_ms = now_ms + w->cfg.key_stats_ms;
        w->keystats_phase = KEYSTATS_CLAIM;
        st = store_keystats_claim_start (store, key, w->cfg.key_stats_ms, on_claim, w, err, sizeof err);
        break;
    case KEYSTATS_WALK:
        blockwalk_sent (&w->keystats_walk, now_ms);
        st = store_keystats_range_start (store, key, w->keystats_walk.from, w->keystats_walk.blocks, on_range, w, err,
                                         sizeof err);
        break;
    default:
        st = store_keystats_publish_start (store, key, w->keystats_sum, on_publish, w, err, sizeof err);
        break;
    }
    if (st != FR_OK) {
        log_debug (NULL, NULL, "could not count values on retired keys: %s", err);
        if (w->keystats_phase == KEYSTATS_CLAIM)
            w->keystats_phase = KEYSTATS_IDLE;
        return;
    }
    w->keystats_in_flight = 1;
}

int
keystats_last (const worker_t *w, int64_t *integrations, int64_t *connects)
{
    if (!w->keystats_counted)
        return 0;
    *integrations = w->keystats_integrations;
    *connects = w->keystats_connects;
    return 1;
}

void
keystats_pack (worker_t *w, codec_builder_t *o, const store_row_t *row)
{
    int64_t integrations = 0, connects = 0;
    int counted = keystats_last (w, &integrations, &connects);
    int32_t current = crypto_keyring_current_id (w->keyring);
    codec_str (o, "keys");
    codec_map (o, 4);
    codec_kv_int (o, "current_key_id", current);
    codec_kv_int (o, "key_id", row->key_id);
    codec_kv_bool (o, "retired_key", row->key_id != current && (row->access_ct || row->refresh_ct));
    codec_str (o, "values_on_old_keys");
    if (counted)
        codec_int (o, integrations + connects);
    else
        codec_nil (o);
}
