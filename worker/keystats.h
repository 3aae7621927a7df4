/* keystats.h - how many stored values still use a retired encryption key: counted now and then
 * (not per request) for the metric ferrule_worker_values_on_old_keys, and by status and doctor */
#ifndef FERRULE_KEYSTATS_H
#define FERRULE_KEYSTATS_H
#include <stddef.h>
#include <stdint.h>
#include "codec.h"
#include "result.h"
#include "store.h"

struct worker;
/* From the housekeeping tick: counts when the interval has passed and sets the gauge. */
void keystats_tick (struct worker *w, int64_t now_ms);
/* The last count (from the tick: integrations and live connects with a value sealed under another
 * key than the worker's current one); 0 while there is none yet. Status and doctor use it, so a
 * client asking often does not scan the table each time, and the loop never waits for the count. */
int keystats_last (const struct worker *w, int64_t *integrations, int64_t *connects);
/* Packs "keys": {"current_key_id", "key_id" (this integration's), "retired_key" (bool), and
 * "values_on_old_keys" (the whole database; nil when it could not be counted)} for status. */
void keystats_pack (struct worker *w, codec_builder_t *o, const store_row_t *row);
#endif
