/* keystats.c - values on retired keys (the same count as migrations/rekey.h's) */
#include "keystats.h"
#include "store_connect.h"
#include "log.h"
#include "context.h"
#include "dbwait.h"
#include "reply.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static void
on_old_keys (void *arg, fr_status_t st, int64_t integrations, int64_t connects, const char *err)
{
    worker_t *w = arg;
    w->keystats_counting = 0;
    if (st != FR_OK) {
        /* a database that is away says so elsewhere; a count that keeps failing while it answers
         * (a statement timeout: the count reads the whole table) leaves the gauge stale, once said */
        if (!store_connected (w->store) || w->keystats_warned)
            log_debug (NULL, NULL, "could not count values on retired keys: %s", err);
        else {
            log_warning (NULL, NULL, "could not count values on retired keys: %s", err);
            log_info (NULL, NULL, "hint: the count reads the whole integrations table, within the loop's statement timeout "
                      "(FERRULE_DB_STATEMENT_TIMEOUT_MS); on a table too large for it, \"ferrule-migrate rekey\" "
                      "re-seals them and says how many there were, without that limit");
            w->keystats_warned = 1;
        }
        return;
    }
    w->keystats_warned = 0;
    w->keystats_integrations = integrations;
    w->keystats_connects = connects;
    w->keystats_counted = 1;
    metrics_set (w->m.values_on_old_keys, integrations + connects);
}

void
keystats_tick (worker_t *w, int64_t now_ms)
{
    char err [512];
    /* optional work: a batch on a connection that has none in flight, not waited for */
    if (now_ms < w->next_keystats_ms || w->keystats_counting)
        return;
    store_t *store = dbwait_free_store (w);
    if (!store || !store_connected (store))
        return;
    w->next_keystats_ms = now_ms + w->cfg.key_stats_ms;
    if (!w->m.values_on_old_keys)
        w->m.values_on_old_keys = metrics_gauge (w->metrics, "worker_values_on_old_keys",
                                                 "stored tokens and live PKCE verifiers sealed with a retired key "
                                                 "(run \"ferrule-migrate rekey\"; 0: the old keys can go)", NULL);
    if (store_count_old_keys_start (store, crypto_keyring_current_id (w->keyring), on_old_keys, w, err,
                                    sizeof err) != FR_OK) {
        log_debug (NULL, NULL, "could not count values on retired keys: %s", err);
        return;
    }
    w->keystats_counting = 1;
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
