/* loads.c - requests that wait for their integration's row (loads.h). The loop never waits for a
 * cache miss: a stalled database holds up the requests for the rows it has not answered, and
 * nothing else the worker serves. */
#include "loads.h"
#include "clock.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "ring.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

#define LOADS_BUCKETS 1024
#define LOADS_BATCH_MAX 1000         /* rows read by one statement */
#define LOADS_REREADS_MAX 3          /* reads again after a change notified meanwhile; then the
                                        cache's re-validation is the net for a flood of them */

typedef struct parked {
    struct parked *next;
    job_t job;
    int has_job;
    unsigned char *body;             /* the request's body, packed again; NULL: none */
    size_t body_len;
    loads_resume_fn *fn;
    int flag;
} parked_t;

typedef struct load {
    struct load *next;               /* in its bucket */
    char id [IDENT_MAX + 1];
    parked_t *items, **tail;         /* in the order they came */
    struct batch *batch;             /* the batch its read is in; NULL: waiting for one */
    int invalidated;                 /* a change was notified while it was */
    int rereads;
    int resent;                      /* read again once after its connection was lost with it */
    store_row_t row;
    store_extra_t extra;
    int have_row;
} load_t;

struct loads {
    load_t *buckets [LOADS_BUCKETS];
    size_t queued;                   /* loads waiting for a batch */
    size_t parked;
};

/* The rows one batch reads. */
typedef struct batch {
    worker_t *w;
    store_t *store;                  /* the connection it went on */
    int sent;
    load_t **loads;
    size_t n;
} batch_t;

static unsigned
loads_bucket (const char *id)
{
    return (unsigned) (ring_hash (id, strlen (id)) % LOADS_BUCKETS);
}

/* id's load in batch (NULL: the one waiting for a batch). There are at most two for an id: one
 * in flight and one waiting, for the requests that must not share the read in flight. */
static load_t *
loads_find (const loads_t *l, const char *id, const batch_t *batch)
{
    for (load_t *d = l->buckets [loads_bucket (id)]; d; d = d->next)
        if (d->batch == batch && strcmp (d->id, id) == 0)
            return d;
    return NULL;
}

/* Any load of id in flight. */
static load_t *
loads_find_in_flight (const loads_t *l, const char *id)
{
    for (load_t *d = l->buckets [loads_bucket (id)]; d; d = d->next)
        if (d->batch && strcmp (d->id, id) == 0)
            return d;
    return NULL;
}

static void
loads_unlink (loads_t *l, load_t *d)
{
    load_t **pp = &l->buckets [loads_bucket (d->id)];
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
}

static void
parked_free (parked_t *p)
{
    if (p->body)
        mem_wipe (p->body, p->body_len);  /* a token request's body may hold a rejected token */
    mem_free (p->body);
    mem_free (p);
}

static void
load_free (loads_t *l, load_t *d)
{
    while (d->items) {
        parked_t *p = d->items;
        d->items = p->next;
        l->parked--;
        parked_free (p);
    }
    if (d->have_row) {
        store_row_clear (&d->row);
        store_extra_clear (&d->extra);
    }
    mem_free (d);
}

loads_t *
loads_new (void)
{
    return mem_alloc (sizeof (loads_t));
}

void
loads_destroy (loads_t **l_p)
{
    loads_t *l = *l_p;
    if (!l)
        return;
    for (size_t b = 0; b < LOADS_BUCKETS; b++)
        while (l->buckets [b]) {
            load_t *d = l->buckets [b];
            l->buckets [b] = d->next;
            load_free (l, d);
        }
    mem_free (l);
    *l_p = NULL;
}

void
loads_park (worker_t *w, const job_t *job, const msgpack_object *root, const char *id, loads_resume_fn *fn, int flag,
            int fresh)
{
    loads_t *l = w->loads;
    assert (strlen (id) <= IDENT_MAX);
    parked_t *p = mem_alloc (sizeof *p);
    p->fn = fn;
    p->flag = flag;
    if (job) {
        p->job = *job;
        p->job.next = NULL;
        p->has_job = 1;
    }
    if (root) {
        /* the frames the body was read from are gone when the loop moves on: keep it packed */
        codec_builder_t *b = codec_builder_new ();
        codec_object (b, root);
        const char *data = codec_builder_data (b, &p->body_len);
        p->body = mem_alloc (p->body_len);
        memcpy (p->body, data, p->body_len);
        codec_builder_destroy (&b);
    }
    /* a read not sent yet is shared by all; one in flight only by those that need no fresh one */
    load_t *d = loads_find (l, id, NULL);
    if (!d && !fresh)
        d = loads_find_in_flight (l, id);
    if (!d) {
        d = mem_alloc (sizeof *d);
        snprintf (d->id, sizeof d->id, "%s", id);
        d->tail = &d->items;
        unsigned b = loads_bucket (id);
        d->next = l->buckets [b];
        l->buckets [b] = d;
        l->queued++;
    }
    *d->tail = p;
    d->tail = &p->next;
    l->parked++;
}

/* Every request parked on d goes on, in the order they came. */
static void
loads_resume (worker_t *w, load_t *d, fr_status_t st, const char *err)
{
    char why [512];
    if (st == FR_OK && !d->have_row)
        st = store_not_found (d->id, why, sizeof why);
    else
        snprintf (why, sizeof why, "%s", err ? err : "");
    int64_t now = clock_mono_ms ();
    while (d->items) {
        parked_t *p = d->items;
        d->items = p->next;
        w->loads->parked--;
        codec_msg_t *msg = NULL;
        char derr [128];
        if (p->has_job && p->job.deadline_ms <= now)
            ;                            /* the broker has answered it with a timeout */
        else
        if (p->body && codec_decode (p->body, p->body_len, &msg, derr, sizeof derr) != FR_OK) {
            /* answered all the same, never dropped: it goes on as a failure (no root, no row) */
            char fail [256];
            snprintf (fail, sizeof fail, "could not read the parked request again: %s", derr);
            log_error (d->id, p->has_job ? p->job.rid : NULL, "%s", fail);
            p->fn (w, p->has_job ? &p->job : NULL, NULL, d->id, NULL, NULL, FR_INTERNAL, fail, p->flag);
        }
        else
            p->fn (w, p->has_job ? &p->job : NULL, msg ? codec_msg_root (msg) : NULL, d->id,
                   st == FR_OK ? &d->row : NULL, st == FR_OK ? &d->extra : NULL, st, why, p->flag);
        codec_msg_destroy (&msg);
        parked_free (p);
    }
}

static void
on_loaded (void *arg, fr_status_t st, store_row_t *row, store_extra_t *x, const char *err)
{
    batch_t *bt = arg;
    worker_t *w = bt->w;
    loads_t *l = w->loads;
    if (row) {
        load_t *d = row->id ? loads_find (l, row->id, bt) : NULL;
        if (d && !d->have_row) {
            d->row = *row;
            d->extra = *x;
            d->have_row = 1;
        }
        else {
            store_row_clear (row);
            store_extra_clear (x);
        }
        return;
    }
    /* lost with its connection (dropped, or a server that stopped answering): once more, on
     * whichever connection is up, before its requests are told the database is unavailable (as a
     * claim is: a read lost with the main connection was answered at once, it_group_commit) */
    int lost = st == FR_DATABASE_UNAVAILABLE && bt->sent && !store_connected (bt->store);
    for (size_t i = 0; i < bt->n; i++) {
        load_t *d = bt->loads [i];
        int again = lost && !d->resent;
        int reread = (st == FR_OK && d->invalidated && d->rereads < LOADS_REREADS_MAX) || again;
        /* another read of it, waiting for a batch: looked for while d is still this batch's, or d
         * itself would be found, and its requests dropped unanswered (it_group_commit) */
        load_t *next = reread ? loads_find (l, d->id, NULL) : NULL;
        d->batch = NULL;
        if (reread) {
            /* changed while it was read, or lost: read it again, so nobody goes on from the old
             * row, or fails for a connection another one stands in for */
            if (next) {
                /* a read of it is waiting already: its requests came later, these go first */
                *d->tail = next->items;
                if (!next->items)
                    next->tail = d->tail;
                next->items = d->items;
                if (again)
                    next->resent = 1;
                d->items = NULL;
                loads_unlink (l, d);
                load_free (l, d);
                continue;
            }
            if (d->have_row) {
                store_row_clear (&d->row);
                store_extra_clear (&d->extra);
            }
            d->have_row = 0;
            if (again)
                d->resent = 1;
            else {
                d->invalidated = 0;
                d->rereads++;
            }
            l->queued++;
            continue;
        }
        loads_unlink (l, d);             /* a request going on may park again: on a new load */
        loads_resume (w, d, st, err);
        load_free (l, d);
    }
    mem_free (bt->loads);
    mem_free (bt);
}

void
loads_tick (worker_t *w, store_t *store)
{
    loads_t *l = w->loads;
    if (l->queued == 0 || !store)
        return;                          /* none free: the answer of a batch in flight starts the next turn */
    batch_t *bt = mem_alloc (sizeof *bt);
    bt->w = w;
    bt->store = store;
    size_t cap = l->queued < LOADS_BATCH_MAX ? l->queued : LOADS_BATCH_MAX;
    bt->loads = mem_alloc (cap * sizeof *bt->loads);
    const char **ids = mem_alloc (cap * sizeof *ids);
    for (size_t b = 0; b < LOADS_BUCKETS && bt->n < cap; b++)
        for (load_t *d = l->buckets [b]; d && bt->n < cap; d = d->next)
            if (!d->batch) {
                bt->loads [bt->n] = d;
                ids [bt->n++] = d->id;
            }
    char err [256];
    fr_status_t st = store_loads_start (store, ids, bt->n, on_loaded, bt, err, sizeof err);
    mem_free (ids);
    for (size_t i = 0; i < bt->n; i++)
        bt->loads [i]->batch = bt;
    l->queued -= bt->n;
    bt->sent = st == FR_OK;
    if (st != FR_OK)
        on_loaded (bt, st, NULL, NULL, err);   /* not sent (the database is unreachable): told at once */
}

void
loads_invalidate (worker_t *w, const char *id)
{
    loads_t *l = w->loads;
    if (id) {
        /* every read of it in flight: a token's and a status request's fresh one may both be */
        for (load_t *d = l->buckets [loads_bucket (id)]; d; d = d->next)
            if (d->batch && strcmp (d->id, id) == 0)
                d->invalidated = 1;
        return;
    }
    for (size_t b = 0; b < LOADS_BUCKETS; b++)
        for (load_t *d = l->buckets [b]; d; d = d->next)
            if (d->batch)
                d->invalidated = 1;
}

size_t
loads_parked (const worker_t *w)
{
    return w->loads ? w->loads->parked : 0;
}
