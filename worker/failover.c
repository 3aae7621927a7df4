/* failover.c - the rotated refresh commits of the last keep_ms, kept in memory and checked after
 * each new connection (see failover.h). The commits are an array in commit order: appended at the
 * end, forgotten from the start. A check sorts the ones it covers by integration, asks the
 * database about a thousand integrations a statement, and then writes again, one batch each, the
 * commits it found missing. */
#include "failover.h"
#include "store_chain.h"
#include "cache.h"
#include "dbwait.h"
#include "loads.h"
#include "clock.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define FAILOVER_CHUNK 1000          /* integrations asked about per statement */
#define FAILOVER_RETRY_MS 1000       /* a step that failed (the database away again) */
#define FAILOVER_SAY_MS 10000        /* a step failing again and again is said this often */
#define FAILOVER_FOLLOW_MS 1000      /* an integration whose row lost commits made elsewhere is
                                        checked again this often */

typedef struct {
    store_commit_t c;                /* id, sealed tokens, fingerprint, scopes, unusable: in block */
    unsigned char *block;            /* one allocation for all of them */
    size_t size;                     /* this entry's memory: the block and the entry itself */
    char spent [CRYPTO_FINGERPRINT_LEN + 1];   /* the refresh token this commit replaced */
    int64_t kept_ms;
    int64_t disk_ms;                 /* kept_ms at first: a commit written again is kept anew, but
                                        its journal record is as old as it was */
    int64_t row_generation;          /* behind: the generation the row has */
    int behind;                      /* the check found its row holding a token it replaced */
    int elsewhere;                   /* the check found its row at a generation before the one its
                                        first kept commit started from: commits made elsewhere (by
                                        another worker) were lost too */
    int hold;                        /* elsewhere, and the row's lease not held yet in this check */
    int64_t hold_below;              /* elsewhere: that generation (the hold's while the row is before it) */
    int64_t moved_from, moved_to;    /* written again: the generation it had made, and the one it makes
                                        now (failover_rebased); 0 when it never was */
} kept_t;

typedef enum { FAILOVER_IDLE, FAILOVER_CHECK, FAILOVER_WRITE } failover_step_t;

struct failover {
    int64_t keep_ms;
    size_t max_bytes;                /* kept at most: past it the oldest are forgotten, counted */
    size_t bytes;                    /* kept now (failover_kept_bytes) */
    kept_t *v;
    size_t start, end, cap;          /* kept: v [start .. end), oldest first */
    failover_step_t step;
    size_t span;                     /* the check covers v [start .. start + span) */
    size_t check_n;                  /* of those, the ones it asks about (all, or a follow-up's) */
    size_t *order;                   /* those, by integration and then commit order */
    size_t next;                     /* CHECK: in order, the first not asked about; WRITE: the next to look at */
    size_t chunk_end;                /* CHECK: the end (in order) of the statement in flight */
    size_t written;                  /* WRITE: commits written again in this check */
    int in_flight;
    int restart;                     /* a new connection came while a step was out */
    int64_t due_ms;
    uint64_t forgotten;              /* past FAILOVER_MAX or max_bytes, or not kept during a check */
    size_t moved;                    /* kept commits written again at another generation (moved_to) */
    lograte_t retry_log;             /* a step tried again each second: a line in ten seconds */
    uint64_t retries;                /* steps tried again since the last check that ended */
    /* The integrations whose rows a check found behind commits another worker made (kept_t's
     * elsewhere): that worker's check writes them again, on its own time, and then the row holds
     * the token this worker's commit replaced. Until then a refresh here would spend a token the
     * provider has replaced, so their claims wait (failover_waits), and they are checked again
     * each FAILOVER_FOLLOW_MS (a follow-up: claims of the others do not wait for it) while their
     * commits are kept. */
    char **waits;                    /* their ids, sorted */
    size_t nwaits;
    char **held;                     /* failover_hold: the journal's records waiting so */
    unsigned char *held_failing;     /* each: its replay failed (not found behind) */
    size_t nheld;
    int follow;                      /* the check under way is a follow-up */
    int64_t follow_ms;               /* when the next follow-up starts */
};

static void failover_clear_waits (failover_t *f);

static void
kept_clear (kept_t *k)
{
    mem_free (k->block);
    memset (k, 0, sizeof *k);
}

failover_t *
failover_new (int64_t keep_ms, size_t max_bytes)
{
    failover_t *f = mem_alloc (sizeof *f);
    f->keep_ms = keep_ms;
    f->max_bytes = max_bytes;
    f->retry_log.interval_ms = FAILOVER_SAY_MS;
    return f;
}

void
failover_destroy (failover_t **f_p)
{
    if (f_p && *f_p) {
        failover_t *f = *f_p;
        for (size_t i = f->start; i < f->end; i++)
            kept_clear (&f->v [i]);
        mem_free (f->v);
        mem_free (f->order);
        failover_clear_waits (f);
        for (size_t i = 0; i < f->nheld; i++)
            mem_free (f->held [i]);
        mem_free (f->held);
        mem_free (f->held_failing);
        mem_free (f);
        *f_p = NULL;
    }
}

/* Copies len bytes of p to *at, moving *at past them; NULL for p NULL. */
static void *
copy_into (unsigned char **at, const void *p, size_t len)
{
    if (!p)
        return NULL;
    void *q = *at;
    memcpy (q, p, len);
    *at += len;
    return q;
}

/* Forgets the oldest kept commit (only while no check is under way: positions stay put then). */
static void
failover_forget_oldest (failover_t *f)
{
    f->bytes -= f->v [f->start].size;
    f->moved -= f->v [f->start].moved_to != 0;
    kept_clear (&f->v [f->start++]);
    if (f->start == f->end)
        f->start = f->end = 0;
}

/* 1 when one more commit of size bytes would pass a bound. */
static int
failover_full (const failover_t *f, size_t size)
{
    return f->end - f->start >= FAILOVER_MAX || f->bytes + size > f->max_bytes;
}

/* The bytes what c points to takes. */
static size_t
commit_block_len (const store_commit_t *c)
{
    return strlen (c->id) + 1 + c->access_ct_len + c->refresh_ct_len
         + (c->refresh_fingerprint ? strlen (c->refresh_fingerprint) + 1 : 0)
         + (c->scopes ? strlen (c->scopes) + 1 : 0) + (c->unusable ? strlen (c->unusable) + 1 : 0)
         + (c->api_base_url ? strlen (c->api_base_url) + 1 : 0) + (c->note ? strlen (c->note) + 1 : 0);
}

/* *out = *c, what it points to copied into block (commit_block_len bytes). */
static void
commit_copy (store_commit_t *out, const store_commit_t *c, unsigned char *block)
{
    unsigned char *at = block;
    *out = *c;
    out->id = copy_into (&at, c->id, strlen (c->id) + 1);
    out->access_ct = copy_into (&at, c->access_ct, c->access_ct_len);
    out->refresh_ct = copy_into (&at, c->refresh_ct, c->refresh_ct_len);
    out->refresh_fingerprint = copy_into (&at, c->refresh_fingerprint,
                                          c->refresh_fingerprint ? strlen (c->refresh_fingerprint) + 1 : 0);
    out->scopes = copy_into (&at, c->scopes, c->scopes ? strlen (c->scopes) + 1 : 0);
    out->unusable = copy_into (&at, c->unusable, c->unusable ? strlen (c->unusable) + 1 : 0);
    out->api_base_url = copy_into (&at, c->api_base_url, c->api_base_url ? strlen (c->api_base_url) + 1 : 0);
    out->note = copy_into (&at, c->note, c->note ? strlen (c->note) + 1 : 0);
}

store_commit_t *
failover_commit_copy (const store_commit_t *c)
{
    store_commit_t *copy = mem_alloc (sizeof *copy + commit_block_len (c));
    commit_copy (copy, c, (unsigned char *) (copy + 1));
    return copy;
}

uint64_t
failover_keep (failover_t *f, const store_commit_t *c, const char *spent, int64_t age_ms)
{
    if (!f || f->keep_ms <= 0 || age_ms >= f->keep_ms)
        return 0;
    size_t block_len = commit_block_len (c);
    size_t size = block_len + sizeof (kept_t);
    if (size > f->max_bytes) {
        f->forgotten++;                  /* larger than the whole bound: room is never made for it */
        return 1;
    }
    uint64_t forgotten = 0;
    /* past the bounds the oldest go first: the newest commits are the ones a failover loses */
    while (f->start < f->end && f->step == FAILOVER_IDLE && failover_full (f, size)) {
        failover_forget_oldest (f);
        forgotten++;
    }
    if (failover_full (f, size)) {
        f->forgotten += forgotten + 1;   /* a check covers the oldest: the newest waits for the next */
        return forgotten + 1;
    }
    f->forgotten += forgotten;
    if (f->end == f->cap) {
        if (f->start > 0 && f->step == FAILOVER_IDLE) {
            memmove (f->v, f->v + f->start, (f->end - f->start) * sizeof *f->v);
            f->end -= f->start;
            f->start = 0;
        }
        else {
            f->cap = f->cap ? 2 * f->cap : 256;
            f->v = mem_realloc (f->v, f->cap * sizeof *f->v);
        }
    }
    kept_t *k = &f->v [f->end++];
    memset (k, 0, sizeof *k);
    k->size = size;
    f->bytes += size;
    k->block = mem_alloc (block_len);
    commit_copy (&k->c, c, k->block);
    snprintf (k->spent, sizeof k->spent, "%s", spent ? spent : "");
    k->kept_ms = k->disk_ms = clock_mono_ms () - (age_ms > 0 ? age_ms : 0);
    return forgotten;
}

int64_t
failover_rebased (const failover_t *f, const char *id, const char *spent, int64_t expected)
{
    if (!f || !f->moved || !spent || !spent [0])
        return expected;
    for (size_t i = f->start; i < f->end; i++) {       /* a few, after a rare failover: a walk */
        const kept_t *k = &f->v [i];
        if (k->moved_to && k->moved_from == expected && k->c.refresh_fingerprint
        &&  strcmp (k->c.refresh_fingerprint, spent) == 0 && strcmp (k->c.id, id) == 0)
            return k->moved_to;
    }
    return expected;
}

void
failover_commit_settled (worker_t *w, const store_commit_t *c, const char *spent, int64_t seq)
{
    metrics_add (w->m.failover_forgotten, failover_keep (w->failover, c, spent, 0));
    if (seq > 0)
        journal_done_retain (w->journal, seq);
}

/* journal_retainer_fn: how many commits are kept, and since when the oldest's record (the first
 * kept: the commits are in the order they were kept, and a restart keeps that order). */
static size_t
failover_retains (void *arg, int64_t *oldest_ms)
{
    failover_t *f = arg;
    if (f->end > f->start)
        *oldest_ms = f->v [f->start].disk_ms;
    return f->end - f->start;
}

/* journal_retained_fn: a commit an earlier run kept. */
static void
failover_restored (void *arg, const store_commit_t *c, const char *spent, int64_t age_ms)
{
    (void) failover_keep (arg, c, spent, age_ms);      /* what it cannot keep, it counts */
}

int
failover_restore (failover_t *f, journal_t *j)
{
    journal_set_retainer (j, failover_retains, f, FAILOVER_CARRY_MIN);
    int n = journal_retained (j, failover_restored, f);
    if (n < 0)
        log_warning (NULL, NULL, "could not read the refresh commits kept against a failover before the restart; "
                     "a commit a failover lost meanwhile will not be written again");
    if (f->end > f->start) {
        log_info (NULL, NULL, "read %zu refresh commits kept against a failover before the restart; checking them "
                  "before the first refresh", f->end - f->start);
        failover_reconnected (f);
    }
    return n;
}

size_t
failover_kept (const failover_t *f)
{
    return f ? f->end - f->start : 0;
}

size_t
failover_kept_bytes (const failover_t *f)
{
    return f ? f->bytes : 0;
}

uint64_t
failover_forgotten (const failover_t *f)
{
    return f ? f->forgotten : 0;
}

int
failover_checking (const failover_t *f)
{
    return f && f->step != FAILOVER_IDLE && !f->follow;
}

static int
by_text (const void *a, const void *b)
{
    return strcmp (*(char * const *) a, *(char * const *) b);
}

int
failover_waits (const failover_t *f, const char *id)
{
    if (!f)
        return 0;
    if (f->nwaits && bsearch (&id, f->waits, f->nwaits, sizeof *f->waits, by_text))
        return 1;
    for (size_t i = 0; i < f->nheld; i++)     /* a few, after a rare failover: a walk */
        if (strcmp (f->held [i], id) == 0)
            return 1;
    return 0;
}

void
failover_hold (failover_t *f, const char *id, int replay_failed)
{
    if (!f)
        return;
    f->held = mem_realloc (f->held, (f->nheld + 1) * sizeof *f->held);
    f->held_failing = mem_realloc (f->held_failing, (f->nheld + 1) * sizeof *f->held_failing);
    f->held_failing [f->nheld] = replay_failed != 0;
    f->held [f->nheld++] = mem_strdup (id);
}

void
failover_unhold (failover_t *f, const char *id)
{
    for (size_t i = 0; f && i < f->nheld; i++)
        if (strcmp (f->held [i], id) == 0) {
            mem_free (f->held [i]);
            f->nheld--;
            f->held [i] = f->held [f->nheld];
            f->held_failing [i] = f->held_failing [f->nheld];
            return;
        }
}

void
failover_held_behind (failover_t *f, const char *id)
{
    for (size_t i = 0; f && i < f->nheld; i++)
        if (strcmp (f->held [i], id) == 0)
            f->held_failing [i] = 0;
}

int
failover_held_failing (const failover_t *f, const char *id)
{
    for (size_t i = 0; f && i < f->nheld; i++)
        if (f->held_failing [i] && strcmp (f->held [i], id) == 0)
            return 1;
    return 0;
}

size_t
failover_waiting (const failover_t *f)
{
    return f ? f->nwaits + f->nheld : 0;
}

const char **
failover_waiting_ids (const failover_t *f, size_t *n)
{
    *n = failover_waiting (f);
    const char **ids = mem_alloc ((*n ? *n : 1) * sizeof *ids);
    for (size_t i = 0; f && i < f->nwaits; i++)
        ids [i] = f->waits [i];
    for (size_t i = 0; f && i < f->nheld; i++)
        ids [f->nwaits + i] = f->held [i];
    return ids;
}

static const failover_t *sort_f;     /* for qsort's comparison: the loop's thread only */

static int
by_id_then_age (const void *a, const void *b)
{
    size_t i = *(const size_t *) a, j = *(const size_t *) b;
    int c = strcmp (sort_f->v [i].c.id, sort_f->v [j].c.id);
    return c ? c : (i > j) - (i < j);
}

/* A check of every commit kept now; follow: of the commits of the integrations in waits only. */
static void
failover_start_check_of (failover_t *f, int follow)
{
    f->span = f->end - f->start;
    f->check_n = 0;
    f->follow = follow;
    f->order = mem_realloc (f->order, (f->span ? f->span : 1) * sizeof *f->order);
    for (size_t i = 0; i < f->span; i++) {
        kept_t *k = &f->v [f->start + i];
        k->behind = 0;
        if (!follow || failover_waits (f, k->c.id)) {
            k->elsewhere = k->hold = 0;
            f->order [f->check_n++] = f->start + i;
        }
    }
    if (f->check_n == 0) {
        f->step = FAILOVER_IDLE;
        f->follow = 0;
        return;
    }
    sort_f = f;
    qsort (f->order, f->check_n, sizeof *f->order, by_id_then_age);
    f->step = FAILOVER_CHECK;
    f->next = 0;
    f->written = 0;
    f->due_ms = 0;
}

static void
failover_start_check (failover_t *f)
{
    failover_start_check_of (f, 0);
}

static void
failover_clear_waits (failover_t *f)
{
    for (size_t i = 0; i < f->nwaits; i++)
        mem_free (f->waits [i]);
    mem_free (f->waits);
    f->waits = NULL;
    f->nwaits = 0;
}

/* The integrations the check found behind commits made elsewhere, as waits; their next check in
 * FAILOVER_FOLLOW_MS. Returns how many. */
static size_t
failover_set_waits (failover_t *f, int64_t now)
{
    failover_clear_waits (f);
    size_t n = 0;
    for (size_t i = 0; i < f->span; i++)
        n += f->v [f->start + i].elsewhere;
    if (n)
        f->waits = mem_alloc (n * sizeof *f->waits);
    for (size_t i = 0; i < f->span; i++)
        if (f->v [f->start + i].elsewhere)
            f->waits [f->nwaits++] = mem_strdup (f->v [f->start + i].c.id);
    if (f->nwaits > 1)
        qsort (f->waits, f->nwaits, sizeof *f->waits, by_text);
    f->follow_ms = now + FAILOVER_FOLLOW_MS;
    return f->nwaits;
}

void
failover_reconnected (failover_t *f)
{
    if (!f || f->keep_ms <= 0)
        return;
    if (f->in_flight)
        f->restart = 1;              /* after the step out ends, which the lost connection fails */
    else
        failover_start_check (f);
}

/* The kept commits of id in order [from, to) of the check: the run of them (commit order). */
static void
failover_run (const failover_t *f, const char *id, size_t from, size_t to, size_t *lo, size_t *hi)
{
    size_t a = from, b = to;
    while (a < b) {                  /* the first not before id */
        size_t m = a + (b - a) / 2;
        if (strcmp (f->v [f->order [m]].c.id, id) < 0)
            a = m + 1;
        else
            b = m;
    }
    *lo = a;
    while (a < to && strcmp (f->v [f->order [a]].c.id, id) == 0)
        a++;
    *hi = a;
}

/* The check is over (done, or given up): the next failure of a later check is said at once. The
 * tries count over the checks a failing write starts again (a read-only server's connection is
 * made again after each), so they are reset here only. */
static void
failover_end_check (failover_t *f)
{
    f->retries = 0;
    f->retry_log.next_ms = 0;
    f->retry_log.held = 0;
    f->step = FAILOVER_IDLE;
    f->follow = 0;
    f->follow_ms = clock_mono_ms () + FAILOVER_FOLLOW_MS;   /* not at once after a check that gave up */
}

/* A step failed while the database is away or refuses writes (a read-only server, a full disk):
 * tried again in a second, for as long as that lasts, and said once in FAILOVER_SAY_MS with the
 * count of the tries between (a line each second buried the rest of the log). id: the commit's
 * integration, NULL for the check's statement. */
static void
failover_retry (failover_t *f, const char *id, const char *err, int64_t now)
{
    uint64_t held;
    f->due_ms = now + FAILOVER_RETRY_MS;
    f->retries++;
    if (!lograte_take (&f->retry_log, now, &held))
        return;
    char more [96] = "";
    if (held)
        snprintf (more, sizeof more, " (and %" PRIu64 " more failed tries since the last line)", held);
    if (id)
        log_warning (id, NULL, "could not write again the refresh commit the database lost: %s; trying again every "
                     "second, refreshes wait%s", err, more);
    else
        log_warning (NULL, NULL, "could not check the refresh commits of the last %lld ms against the database: %s; "
                     "trying again every second, refreshes wait%s", (long long) f->keep_ms, err, more);
}

/* The check's statement failed: tried again in a second while the database is away; any other
 * failure (not the database's state) ends the check, which would otherwise hold claims for ever. */
static void
failover_ask_failed (failover_t *f, fr_status_t st, const char *err, int64_t now)
{
    if (st == FR_DATABASE_UNAVAILABLE) {
        failover_retry (f, NULL, err, now);
        return;
    }
    log_error (NULL, NULL, "could not check the refresh commits of the last %lld ms against the database, and will "
               "not try again: %s", (long long) f->keep_ms, err);
    failover_end_check (f);
}

/* One integration's row as the database has it now: is it behind its kept commits? */
static void
on_row (void *arg, fr_status_t st, const char *id, int64_t generation, const char *status, const char *fingerprint,
        const char *err)
{
    worker_t *w = arg;
    failover_t *f = w->failover;
    if (id) {
        size_t lo, hi;
        failover_run (f, id, f->next, f->chunk_end, &lo, &hi);
        if (lo == hi)
            return;
        kept_t *newest = &f->v [f->order [hi - 1]];
        if (!fingerprint || (newest->c.refresh_fingerprint && strcmp (fingerprint, newest->c.refresh_fingerprint) == 0))
            return;                  /* holds the newest kept token, or none at all */
        if (strcmp (status, "active") != 0 && strcmp (status, "needs_reconnect") != 0)
            return;
        for (size_t i = lo; i < hi; i++)
            if (strcmp (fingerprint, f->v [f->order [i]].spent) == 0) {
                newest->behind = 1;  /* it holds a token this worker's refreshes replaced */
                newest->row_generation = generation;
                return;
            }
        if (generation < newest->c.expected_generation) {
            /* the row went back past the generation this worker's newest kept commit started
             * from, and holds no token this worker replaced: commits another worker made before
             * it were lost too (before the first kept one, or between two of them: the row may
             * hold a token of this worker's own older commit, which the other's spent), and that
             * worker writes them again on its own time. Comparing with the first kept commit
             * alone missed the commits in between: the row was left on a spent token. */
            newest->elsewhere = 1;
            newest->hold = newest->c.lease_token [0] != '\0';
            newest->hold_below = newest->c.expected_generation;
            return;
        }
        log_debug (id, NULL, "kept commit not written again: the row holds a refresh token this worker did not "
                   "replace (an import, another worker's refresh)");
        return;
    }
    f->in_flight = 0;
    if (f->restart) {
        f->restart = 0;
        failover_start_check (f);
        return;
    }
    if (st != FR_OK)
        failover_ask_failed (f, st, err, clock_mono_ms ());
    else
        f->next = f->chunk_end;
    if (f->next == f->check_n) {
        f->step = FAILOVER_WRITE;
        f->next = 0;
    }
}

/* The check's next statement: up to FAILOVER_CHUNK integrations, from order [next]. */
static void
failover_ask (worker_t *w, failover_t *f, store_t *s, int64_t now)
{
    const char *ids [FAILOVER_CHUNK];
    size_t n = 0, i = f->next;
    while (i < f->check_n && n < FAILOVER_CHUNK) {
        const char *id = f->v [f->order [i]].c.id;
        ids [n++] = id;
        while (i < f->check_n && strcmp (f->v [f->order [i]].c.id, id) == 0)
            i++;
    }
    f->chunk_end = i;
    char err [512];
    fr_status_t st = store_generations_start (s, ids, n, on_row, w, err, sizeof err);
    if (st != FR_OK)
        failover_ask_failed (f, st, err, now);
    else
        f->in_flight = 1;
}

/* The answer to the step out for the kept commit at next (a write or a hold): NULL when it is
 * handled here (with the database away the same step is tried again in a second, or the check
 * starts over when a new connection came meanwhile), else that commit, whose answer the caller
 * takes before step_done. An answer is never dropped for a new connection: a write that went in
 * was not logged, counted or dropped from the cache when the check started over, and the new
 * check found nothing left to write. */
static kept_t *
step_answered (failover_t *f, fr_status_t st, const char *err)
{
    kept_t *k = &f->v [f->start + f->next];
    f->in_flight = 0;
    if (st == FR_DATABASE_UNAVAILABLE && f->restart) {
        f->restart = 0;
        failover_start_check (f);
        return NULL;
    }
    if (st == FR_DATABASE_UNAVAILABLE) {
        failover_retry (f, k->c.id, err, clock_mono_ms ());
        return NULL;
    }
    return k;
}

/* After an answer step_answered returned: a new connection that came meanwhile starts the check
 * over (the server may be another one). */
static void
step_done (failover_t *f)
{
    if (f->restart) {
        f->restart = 0;
        failover_start_check (f);
    }
}

static void
on_written (void *arg, fr_status_t st, store_replay_t outcome, int64_t row_generation, const char *err)
{
    worker_t *w = arg;
    failover_t *f = w->failover;
    kept_t *k = step_answered (f, st, err);
    if (!k)
        return;
    if (st != FR_OK)                 /* not the database's state: trying again would hold claims for ever */
        log_error (k->c.id, NULL, "could not write again the refresh commit the database lost, and will not try "
                   "again: %s", err);
    else
    if (outcome == STORE_REPLAY_COMMITTED) {
        log_warning (k->c.id, NULL, "the database had lost the commit of this integration's rotated refresh token (a "
                     "failover to a standby that had not received it, or a restore): written again from this "
                     "worker's memory over generation %lld", (long long) k->row_generation);
        metrics_inc (w->m.failover_rewritten);
        cache_drop (w->cache, k->c.id);          /* read again: the row has the kept tokens now */
        loads_invalidate (w, k->c.id);
        k->kept_ms = clock_mono_ms ();           /* a commit again: kept as long as a new one */
        /* written over an earlier generation than it first started from (the commits between were
           this worker's, spent): a later check compares with where it is now, and a refresh that
           continued from it commits where it is now (failover_rebased) */
        if (k->row_generation != k->c.expected_generation) {
            f->moved += k->moved_to == 0;
            k->moved_from = k->c.expected_generation + 1;
            k->moved_to = k->row_generation + 1;
        }
        k->c.expected_generation = k->row_generation;
        f->written++;
    }
    else
    if (outcome != STORE_REPLAY_SETTLED && row_generation < 0)
        log_info (k->c.id, NULL, "the refresh commit the database lost was not written again: the integration "
                  "was deleted meanwhile");
    else
    if (outcome != STORE_REPLAY_SETTLED)
        log_info (k->c.id, NULL, "the refresh commit the database lost was not written again: the row changed "
                  "meanwhile (generation %lld now)", (long long) row_generation);
    k->behind = 0;
    f->next++;
    step_done (f);
}

static void
on_held (void *arg, fr_status_t st, const char *err)
{
    worker_t *w = arg;
    failover_t *f = w->failover;
    kept_t *k = step_answered (f, st, err);
    if (!k)
        return;
    if (st != FR_OK)                 /* the wait goes on without it; the next look tries again */
        log_warning (k->c.id, NULL, "could not hold the lease of a row that lost commits another worker made: %s",
                     err);
    k->hold = 0;
    f->next++;
    step_done (f);
}

/* The row of a commit found behind commits made elsewhere: its lease held until this worker's
 * commit is written again over theirs (STORE_HOLD_SQL), for as long as the commit is kept. */
static void
failover_hold_row (worker_t *w, failover_t *f, store_t *s, kept_t *k, int64_t now)
{
    char err [512];
    int64_t hold_ms = k->kept_ms + f->keep_ms - now;
    if (hold_ms <= 0) {              /* the commit is about to be forgotten, and the wait with it */
        k->hold = 0;
        f->next++;
        return;
    }
    fr_status_t st = store_hold_start (s, k->c.id, k->hold_below, k->c.lease_token, hold_ms, on_held, w, err,
                                       sizeof err);
    if (st == FR_OK)
        f->in_flight = 1;
    else
        on_held (w, st, err);        /* not sent: as a failed one */
}

/* The next commit found behind, written again, or the next row found behind commits made
 * elsewhere, held; or the check's end. */
static void
failover_write (worker_t *w, failover_t *f, store_t *s, int64_t now)
{
    while (f->next < f->span && !f->v [f->start + f->next].behind && !f->v [f->start + f->next].hold)
        f->next++;
    if (f->next == f->span) {
        size_t waits_before = f->nwaits, waits = failover_set_waits (f, now);
        if (!f->follow && (f->written || f->retries || waits)) {
            char tries [64] = "", elsewhere [320] = "";
            if (f->retries)
                snprintf (tries, sizeof tries, ", after %" PRIu64 " tries that failed", f->retries);
            if (waits)
                snprintf (elsewhere, sizeof elsewhere, "; %zu integration%s lost commits another worker made before "
                          "this one's: their refreshes wait (on other workers too, through their rows' leases, held "
                          "unless another worker's is live), and they are checked again every %d ms while this "
                          "worker keeps its own", waits,
                          waits == 1 ? "" : "s", FAILOVER_FOLLOW_MS);
            log_info (NULL, NULL, "checked %zu refresh commits of the last %lld ms after the database connection was "
                      "made again: %zu written again%s%s", f->check_n, (long long) f->keep_ms, f->written, tries,
                      elsewhere);
        }
        else
        if (f->follow && waits < waits_before)
            log_info (NULL, NULL, "checked again the integrations that had lost commits another worker made: %zu "
                      "written again, %zu still waiting", f->written, waits);
        failover_end_check (f);
        return;
    }
    kept_t *k = &f->v [f->start + f->next];
    if (k->hold) {
        failover_hold_row (w, f, s, k, now);
        return;
    }
    store_commit_t c = k->c;
    c.expected_generation = k->row_generation;
    char err [512];
    fr_status_t st = store_replay_start (s, &c, 0, on_written, w, err, sizeof err);
    if (st == FR_DATABASE_UNAVAILABLE) {
        failover_retry (f, k->c.id, err, now);
        return;
    }
    if (st != FR_OK) {
        log_error (k->c.id, NULL, "could not write again the refresh commit the database lost, and will not try "
                   "again: %s", err);
        k->behind = 0;
        f->next++;
        return;
    }
    f->in_flight = 1;
}

void
failover_tick (worker_t *w, int64_t now_ms)
{
    failover_t *f = w->failover;
    if (!f || f->in_flight || !dbwait_any_connected (w))
        return;
    if (f->step == FAILOVER_IDLE) {
        /* connected time only: what a failover now would lose was committed within keep_ms */
        while (f->start < f->end && now_ms - f->v [f->start].kept_ms >= f->keep_ms)
            failover_forget_oldest (f);
        if (f->nwaits == 0 || now_ms < f->follow_ms)
            return;
        failover_start_check_of (f, 1);
        if (f->step == FAILOVER_IDLE) {  /* their commits are forgotten: nothing to wait for */
            log_info (NULL, NULL, "stopped waiting for %zu integration%s that had lost commits another worker made: "
                      "this worker no longer keeps its own", f->nwaits, f->nwaits == 1 ? "" : "s");
            failover_clear_waits (f);
            return;
        }
    }
    if (now_ms < f->due_ms)
        return;
    store_t *s = dbwait_free_store (w);
    if (!s || !store_connected (s))
        return;
    if (f->step == FAILOVER_CHECK)
        failover_ask (w, f, s, now_ms);
    else
        failover_write (w, f, s, now_ms);
}
