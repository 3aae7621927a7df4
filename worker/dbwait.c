/* dbwait.c - work waiting for a free database connection (dbwait.h) */
#include "dbwait.h"
#include "clock.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include "reply.h"
#include "store.h"
#include <stdio.h>

/* A request waiting on the loop is answered with what it waits for this long before its deadline,
 * or a quarter of its time when that is shorter: the broker's own answer at the deadline can say
 * only that the worker did not answer, and work started later would end after that answer, its
 * outcome (a link spent, a key made) told to nobody */
#define ANSWER_BEFORE_MS 100

typedef struct item {
    struct item *next;
    dbwait_fn *fn;
    dbwait_start_fn *start;          /* a request's (dbwait_request), instead of fn */
    void *arg;
    int64_t deadline_ms;             /* -1: none */
    int64_t not_before_ms;           /* 0: at once */
    const job_t *job;                /* the request the work answers (in arg), NULL none */
    int64_t queued_ms;
    int64_t answer_ms;               /* with job: not started from then on, answered timeout */
} item_t;

struct dbwait {
    item_t *head, **tail;
    size_t count;
    int destroying;                      /* dbwait_destroy is dropping the queue */
};

/* Two batches of one worker never share a row (one refresh per integration at a time; the
 * sweep's only read), so they can run side by side, and the server can flush both commits in
 * one WAL write. With the main connection lost and the batch one up but busy, none: the work
 * waits for the batch connection's answer (which wakes the loop) rather than failing at once on
 * the dead one, with the database up (it_group_commit). With neither up, the main one, whose
 * failure tells the callers the database is unavailable. */
store_t *
dbwait_free_store (const worker_t *w)
{
    int batches_up = w->batches && store_connected (w->batches);
    if (batches_up && !store_batch_busy (w->batches))
        return w->batches;
    if (store_batch_busy (w->store) || (batches_up && !store_connected (w->store)))
        return NULL;
    return w->store;
}

int
dbwait_any_connected (const worker_t *w)
{
    return store_connected (w->store) || (w->batches && store_connected (w->batches));
}

int
dbwait_requeue_late (worker_t *w, store_t *store, dbwait_fn *fn, void *arg)
{
    if (store || dbwait_stopping (w))
        return 0;
    dbwait_add (w, fn, arg, -1);
    return 1;
}

const char *
dbwait_retry_when (const worker_t *w)
{
    return dbwait_any_connected (w) ? " (tried again when a connection is free)"
                                    : " (tried again once the database is back)";
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
    q->destroying = 1;
    while (q->head) {
        item_t *it = q->head;
        if (!(q->head = it->next))
            q->tail = &q->head;
        if (it->start)
            mem_free (it->arg);
        else
            it->fn (w, NULL, it->arg);   /* adds nothing (nothing starts), but stays consistent */
        mem_free (it);
    }
    mem_free (q);
    *q_p = NULL;
}

int64_t
dbwait_answer_ms (int64_t deadline_ms, int64_t now_ms)
{
    int64_t left = deadline_ms - now_ms;
    int64_t margin = left / 4 < ANSWER_BEFORE_MS ? left / 4 : ANSWER_BEFORE_MS;
    return deadline_ms - (margin > 0 ? margin : 0);
}

static void
dbwait_push (worker_t *w, dbwait_fn *fn, dbwait_start_fn *start, void *arg, int64_t deadline_ms,
             int64_t not_before_ms, const job_t *job)
{
    dbwait_t *q = w->dbwait;
    item_t *it = mem_alloc (sizeof *it);
    it->fn = fn;
    it->start = start;
    it->arg = arg;
    it->deadline_ms = deadline_ms;
    it->not_before_ms = not_before_ms;
    it->job = job;
    it->queued_ms = clock_mono_ms ();
    it->answer_ms = job ? dbwait_answer_ms (deadline_ms, it->queued_ms) : -1;
    *q->tail = it;
    q->tail = &it->next;
    q->count++;
}

void
dbwait_add (worker_t *w, dbwait_fn *fn, void *arg, int64_t deadline_ms)
{
    dbwait_push (w, fn, NULL, arg, deadline_ms, 0, NULL);
}

void
dbwait_add_for (worker_t *w, dbwait_fn *fn, void *arg, const job_t *job)
{
    dbwait_push (w, fn, NULL, arg, job->deadline_ms, 0, job);
}

void
dbwait_add_later (worker_t *w, dbwait_fn *fn, void *arg, int64_t not_before_ms)
{
    dbwait_push (w, fn, NULL, arg, -1, not_before_ms, NULL);
}

void
dbwait_request (dbwait_req_t *req, dbwait_start_fn *start)
{
    dbwait_push (req->w, NULL, start, req, req->job.deadline_ms, 0, &req->job);
}

void
dbwait_about (worker_t *w, const job_t *job, const char *id, dbwait_start_fn *start)
{
    dbwait_about_t *a = mem_alloc (sizeof *a);
    a->req.w = w;
    a->req.job = *job;
    snprintf (a->id, sizeof a->id, "%s", id);
    dbwait_request (&a->req, start);
}

static void
dbwait_start_request (worker_t *w, store_t *store, item_t *it)
{
    dbwait_req_t *req = it->arg;
    char err [256];
    fr_status_t st;
    if (!store) {                        /* its deadline passed: the broker has answered it */
        mem_free (req);
        return;
    }
    if ((st = it->start (store, req, err, sizeof err)) != FR_OK) {
        reply_store_error (w, &req->job, st, err);
        mem_free (req);
    }
}

/* Answers it, a request's work that waited for a connection until its answer time, with a timeout
 * now, and drops the work unstarted. */
static void
dbwait_answer_late (worker_t *w, item_t *it, int64_t now)
{
    char message [300];
    uint64_t held;
    snprintf (message, sizeof message, "waited %lld ms for a free database connection (each of this worker's has a "
              "batch in flight), and this request's deadline came first", (long long) (now - it->queued_ms));
    /* said at most once a second: a stalled database times out every request waiting for it */
    if (lograte_take (&w->wait_answer_log, now, &held)) {
        char more [96] = "";
        if (held)
            snprintf (more, sizeof more, " (and %llu more since the last line)", (unsigned long long) held);
        log_warning (NULL, it->job->rid [0] ? it->job->rid : NULL, "answered a \"%s\" request timeout before its "
                     "deadline: %s%s", it->job->op, message, more);
    }
    reply_error (w, it->job, FR_TIMEOUT, message, "retry; if it lasts, the database answers slowly: look at its load "
                 "and at the statements that run long or wait for locks", -1);
    if (it->start)
        mem_free (it->arg);
    else
        it->fn (w, NULL, it->arg);       /* dropped as past its deadline (work that must be done queues again) */
}

void
dbwait_tick (worker_t *w)
{
    dbwait_t *q = w->dbwait;
    item_t **pp = &q->head;
    store_t *store;
    int64_t now = clock_mono_ms ();
    /* first, whether or not a connection is free: requests whose time is up, answered before the
     * broker's timeout and never started after it */
    while (*pp) {
        item_t *it = *pp;
        if (!it->job || it->answer_ms > now) {
            pp = &it->next;
            continue;
        }
        if (!(*pp = it->next))
            q->tail = pp;
        q->count--;
        dbwait_answer_late (w, it, now);     /* may add: at the tail */
        mem_free (it);
    }
    pp = &q->head;
    while (*pp && (store = dbwait_free_store (w))) {
        item_t *it = *pp;
        int expired = it->deadline_ms >= 0 && it->deadline_ms <= now;
        if (it->deadline_ms < 0 && (!store_connected (store) || it->not_before_ms > now)) {
            pp = &it->next;              /* work that must be done waits for the database to return */
            continue;
        }
        if (!(*pp = it->next))
            q->tail = pp;
        q->count--;
        if (it->start)
            dbwait_start_request (w, expired ? NULL : store, it);
        else
            it->fn (w, expired ? NULL : store, it->arg);     /* may add: at the tail */
        mem_free (it);
    }
}

int
dbwait_stopping (const worker_t *w)
{
    return !w->dbwait || w->dbwait->destroying;
}

int64_t
dbwait_next_due (const worker_t *w)
{
    int64_t due = -1;
    for (const item_t *it = w->dbwait ? w->dbwait->head : NULL; it; it = it->next)
        if (it->job && (due < 0 || it->answer_ms < due))
            due = it->answer_ms;
    return due;
}

size_t
dbwait_count (const worker_t *w)
{
    return w->dbwait ? w->dbwait->count : 0;
}
