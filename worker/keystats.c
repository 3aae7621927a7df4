/* keystats.c - values on retired keys (see migrations/rekey.h for the same count in rekey) */
#include "keystats.h"
#include "log.h"
#include "worker.h"
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

/* The same SQL as REKEY_COUNT_SQL in migrations/rekey.h. */
#define KEYSTATS_SQL \
    "SELECT (SELECT count(*) FROM integrations WHERE key_id <> $1::integer" \
    "          AND (access_token IS NOT NULL OR refresh_token IS NOT NULL))," \
    "       (SELECT count(*) FROM pending_authorizations WHERE key_id <> $1::integer" \
    "          AND code_verifier IS NOT NULL AND used_at IS NULL AND expires_at > now())"

fr_status_t
keystats_count (worker_t *w, int64_t *integrations, int64_t *connects, char *err, size_t errlen)
{
    char id [16];
    fr_status_t st = FR_OK;
    snprintf (id, sizeof id, "%" PRId32, crypto_keyring_current_id (w->keyring));
    const char *values [] = { id };
    PGresult *res = store_exec (w->store, KEYSTATS_SQL, 1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    *integrations = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    *connects = strtoll (PQgetvalue (res, 0, 1), NULL, 10);
    PQclear (res);
    w->keystats_integrations = *integrations;
    w->keystats_connects = *connects;
    w->keystats_counted = 1;
    return FR_OK;
}

void
keystats_tick (worker_t *w, int64_t now_ms)
{
    char err [512];
    int64_t integrations = 0, connects = 0;
    if (now_ms < w->next_keystats_ms || !store_connected (w->store))
        return;
    w->next_keystats_ms = now_ms + w->cfg.key_stats_ms;
    if (!w->m.values_on_old_keys)
        w->m.values_on_old_keys = metrics_gauge (w->metrics, "worker_values_on_old_keys",
                                                 "stored tokens and live PKCE verifiers sealed with a retired key "
                                                 "(run \"ferrule-migrate rekey\"; 0: the old keys can go)", NULL);
    if (keystats_count (w, &integrations, &connects, err, sizeof err) != FR_OK) {
        log_debug (NULL, NULL, "could not count values on retired keys: %s", err);
        return;
    }
    metrics_set (w->m.values_on_old_keys, integrations + connects);
}

fr_status_t
keystats_last (worker_t *w, int64_t *integrations, int64_t *connects, char *err, size_t errlen)
{
    if (!w->keystats_counted) {
        fr_status_t st = keystats_count (w, integrations, connects, err, errlen);
        if (st != FR_OK)
            return st;
    }
    *integrations = w->keystats_integrations;
    *connects = w->keystats_connects;
    return FR_OK;
}

void
keystats_pack (worker_t *w, codec_builder_t *o, const store_row_t *row)
{
    char err [512];
    int64_t integrations = 0, connects = 0;
    int counted = keystats_last (w, &integrations, &connects, err, sizeof err) == FR_OK;
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
