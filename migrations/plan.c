/* plan.c - the migrations this build knows set against those a database has applied */
#include "plan.h"
#include "mem.h"
#include <stdlib.h>
#include <string.h>

struct plan_t {
    plan_item_t *items;
    size_t size;
};

static int
plan_compare (const void *a, const void *b)
{
    const plan_item_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

plan_t *
plan_new (const catalog_t *catalog, const ledger_t *ledger)
{
    plan_t *self = mem_alloc (sizeof *self);
    size_t known = catalog_size (catalog), applied = ledger_size (ledger);
    int highest_known = catalog_highest (catalog);
    int highest_applied = ledger_highest (ledger);

    self->items = mem_alloc ((known + applied + 1) * sizeof *self->items);
    for (size_t i = 0; i < known; i++) {
        const catalog_entry_t *m = catalog_at (catalog, i);
        plan_item_t *item = &self->items [self->size++];
        item->version = m->version;
        item->migration = m;
        item->row = ledger_find (ledger, m->version);
        if (!item->row) {
            item->state = PLAN_PENDING;
            item->out_of_order = m->version < highest_applied;
        }
        else
            item->state = strcmp (item->row->checksum, m->checksum) == 0 ? PLAN_APPLIED : PLAN_DRIFT;
    }
    for (size_t i = 0; i < applied; i++) {
        const ledger_row_t *row = ledger_at (ledger, i);
        if (catalog_find (catalog, row->version))
            continue;
        plan_item_t *item = &self->items [self->size++];
        item->version = row->version;
        item->row = row;
        item->state = row->version > highest_known ? PLAN_NEWER : PLAN_MISSING;
    }
    qsort (self->items, self->size, sizeof *self->items, plan_compare);
    return self;
}

void
plan_destroy (plan_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mem_free ((*self_p)->items);
    mem_free (*self_p);
    *self_p = NULL;
}

size_t
plan_size (const plan_t *self)
{
    return self->size;
}

const plan_item_t *
plan_at (const plan_t *self, size_t index)
{
    return index < self->size ? &self->items [index] : NULL;
}

size_t
plan_count (const plan_t *self, plan_state_t state)
{
    size_t n = 0;
    for (size_t i = 0; i < self->size; i++)
        n += self->items [i].state == state;
    return n;
}

plan_verdict_t
plan_verdict (const plan_t *self)
{
    if (plan_count (self, PLAN_DRIFT) || plan_count (self, PLAN_MISSING))
        return PLAN_DRIFTED;
    if (plan_count (self, PLAN_PENDING))
        return PLAN_BEHIND;
    return PLAN_UP_TO_DATE;
}
