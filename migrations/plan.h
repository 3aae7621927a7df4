/* plan.h - the migrations this build knows set against those a database has applied: what is
 * applied, what is pending, and what has drifted */
#ifndef FERRULE_PLAN_H
#define FERRULE_PLAN_H
#include "catalog.h"
#include "ledger.h"
#include <stddef.h>

typedef enum {
    PLAN_APPLIED,       /* applied, and the checksum matches the file */
    PLAN_PENDING,       /* known to this build, not applied */
    PLAN_DRIFT,         /* applied, but the file's checksum differs from the recorded one */
    PLAN_NEWER,         /* applied, above every version this build knows: a newer build applied it */
    PLAN_MISSING,       /* applied, not known to this build, below its highest version */
} plan_state_t;

typedef struct {
    int version;
    plan_state_t state;
    const catalog_entry_t *migration;   /* NULL for PLAN_NEWER and PLAN_MISSING */
    const ledger_row_t *row;            /* NULL for PLAN_PENDING */
    int out_of_order;                   /* pending, yet a higher version is already applied */
} plan_item_t;

typedef enum {
    PLAN_UP_TO_DATE,    /* nothing pending, nothing drifted */
    PLAN_BEHIND,        /* something pending, nothing drifted */
    PLAN_DRIFTED,       /* some applied migration does not match this build */
} plan_verdict_t;

typedef struct plan_t plan_t;

/* Borrows catalog and ledger: they must outlive the plan. */
plan_t *plan_new (const catalog_t *catalog, const ledger_t *ledger);
void plan_destroy (plan_t **self_p);

/* Items are sorted by version. */
size_t plan_size (const plan_t *self);
const plan_item_t *plan_at (const plan_t *self, size_t index);
size_t plan_count (const plan_t *self, plan_state_t state);
plan_verdict_t plan_verdict (const plan_t *self);
#endif
