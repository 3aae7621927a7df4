/* dbwait.c - work waiting for a free database connection (dbwait.h) */
#include "dbwait.h"
#include "clock.h"
#include "mem.h"
#include "store.h"

typedef struct item {
    struct item *next;
    dbwait_fn *fn;
    void *arg;
    int64_t deadline_ms;             /* -1: none */
} item_t;

struct dbwait {
    item_t *head, **tail;
    size_t count;
};

/* Two batches of one worker never share a row (one refresh per integration at a time; the
 * sweep's only read), so they can run side by side, and the server can flush both commits in
 * one WAL write. */
store_t *
dbwait_free_store (const worker_t *w)
{
    if (w->batches && store_connected (w->batches) && !store_batch_busy (w->batches))
        return w->batches;
    return store_batch_busy (w->store) ? NULL : w->store;
}

dbwait_t *
dbwait_new (void)
{
    dbwait_t *q = mem_alloc (sizeof *q);
    q->tail = &q->head;
    return q;
}

void
dbwait_destroy (dbwait_t **q_p, worker_t *w)
{
    dbwait_t *q = *q_p;
    if (!q)
        return;
    while (q->head) {
        item_t *it = q->head;
        if (!(q->head = it->next))
            q->tail = &q->head;
        it->fn (w, NULL, it->arg);       /* adds nothing (nothing starts), but stays consistent */
        mem_free (it);
    }
    mem_free (q);
    *q_p = NULL;
}

void
dbwait_add (worker_t *w, dbwait_fn *fn, void *arg, int64_t deadline_ms)
{
    dbwait_t *q = w->dbwait;
    item_t *it = mem_alloc (sizeof *it);
    it->fn = fn;
    it->arg = arg;
    it->deadline_ms = deadline_ms;
    *q->tail = it;
    q->tail = &it->next;
    q->count++;
}

void
dbwait_tick (worker_t *w)
{
    dbwait_t *q = w->dbwait;
    item_t **pp = &q->head;
    store_t *store;
    int64_t now = clock_mono_ms ();
    while (*pp && (store = dbwait_free_store (w))) {
        item_t *it = *pp;
        int expired = it->deadline_ms >= 0 && it->deadline_ms <= now;
        if (it->deadline_ms < 0 && !store_connected (store)) {
            pp = &it->next;              /* work that must be done waits for the database to return */
            continue;
        }
        if (!(*pp = it->next))
            q->tail = pp;
        q->count--;
        it->fn (w, expired ? NULL : store, it->arg);     /* may add: at the tail */
        mem_free (it);
    }
}

size_t
dbwait_count (const worker_t *w)
{
    return w->dbwait ? w->dbwait->count : 0;
}
