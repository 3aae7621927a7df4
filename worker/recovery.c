/* recovery.c - the startup's recovery as a sequence of batches (see recovery.h). The journal is
 * replayed first, while the earlier run's leases, as long as they last, still keep other workers
 * away from those integrations; only then are the leases released. One record at a time, in the
 * journal's order. A record that fails (its row locked, the database away), and one whose row is
 * behind it (a failover lost commits another worker made before its refresh), leave the pass for
 * a list of their own, tried again each second while their own integrations' claims wait
 * (failover_hold), until it settles (a behind one at most until the failover window has passed):
 * the pass goes on without them, and the other integrations' refreshes do not wait for them. */
#include "recovery.h"
#include "blockwalk.h"
#include "store_chain.h"
#include "calls.h"
#include "catalog.h"
#include "dbwait.h"
#include "disconnect.h"
#include "failover.h"
#include "journal.h"
#include "loads.h"
#include "refresh.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include <inttypes.h>
#include <string.h>

#define RECOVERY_RETRY_MS 1000

typedef enum { RECOVERY_REPLAY, RECOVERY_RELEASE, RECOVERY_DONE } recovery_step_t;

/* A journal record, copied out of the journal's pass over its file. */
typedef struct {
    int64_t seq;
    store_commit_t *c;                         /* failover_commit_copy: one block */
    char spent [CRYPTO_FINGERPRINT_LEN + 1];   /* the refresh token it replaced: failover_keep */
    int64_t behind_ms;                         /* behind: when its row was first found so, in
                                                  connected time (recovery_t's connected_ms) */
    int failing;                               /* in the list because its replay failed (not
                                                  because its row was behind): tried until settled */
} recovery_rec_t;

struct recovery {
    recovery_step_t step;
    int collected;                  /* a pass is under way: recs holds its outstanding records */
    recovery_rec_t *recs;
    size_t n, next;                 /* how many; the next to replay */
    int in_flight;                  /* a batch of ours is out */
    int64_t due_ms;                 /* no step before this */
    /* The records found behind, or whose replay failed, out of the passes (collect skips them):
     * each is replayed again once a round, a round each RECOVERY_RETRY_MS, until it is settled
     * or (found behind) its wait outlived the failover window (connected time, as the other
     * worker keeps its commits). */
    recovery_rec_t *behind;
    size_t nbehind, behind_next;
    int retrying;                   /* the record out is behind [behind_next], not recs [next] */
    int64_t behind_due_ms;
    int64_t connected_ms, tick_ms;  /* the time the database was connected, counted at each tick */
    blockwalk_t release;            /* the leases' release: a range of the table's blocks at a time */
    store_t *release_store;         /* the connection the range in flight went on */
    char **released_ids, **released_providers;  /* what the ranges so far released */
    size_t nreleased;
};

recovery_t *
recovery_new (void)
{
    recovery_t *r = mem_alloc (sizeof (recovery_t));
    blockwalk_init (&r->release);
    return r;
}

static void
rec_clear (recovery_rec_t *r)
{
    mem_free (r->c);                          /* one block, every field it points to in it */
}

static void
recs_clear (recovery_rec_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rec_clear (&recs [i]);
    mem_free (recs);
}

static void
recovery_forget_pass (recovery_t *r)
{
    recs_clear (r->recs, r->n);
    r->recs = NULL;
    r->n = r->next = 0;
    r->collected = 0;
}

void
recovery_destroy (recovery_t **r_p)
{
    if (r_p && *r_p) {
        recovery_forget_pass (*r_p);
        recs_clear ((*r_p)->behind, (*r_p)->nbehind);
        for (size_t i = 0; i < (*r_p)->nreleased; i++) {
            mem_free ((*r_p)->released_ids [i]);
            mem_free ((*r_p)->released_providers [i]);
        }
        mem_free ((*r_p)->released_ids);
        mem_free ((*r_p)->released_providers);
        mem_free (*r_p);
        *r_p = NULL;
    }
}

/* 1 when record seq waits in the behind list. */
static int
recovery_holds (const recovery_t *r, int64_t seq)
{
    for (size_t i = 0; i < r->nbehind; i++)
        if (r->behind [i].seq == seq)
            return 1;
    return 0;
}

/* journal_replay's callback: the record's fields live only during the call. */
static void
collect (void *arg, int64_t seq, const store_commit_t *c, const char *spent)
{
    worker_t *w = arg;
    recovery_t *r = w->recovery;
    if (calls_journal_held (w, seq) || recovery_holds (r, seq))
        return;         /* a revocation an earlier pass started, or the behind list, settles it: once */
    r->recs = mem_realloc (r->recs, (r->n + 1) * sizeof *r->recs);
    recovery_rec_t *rec = &r->recs [r->n++];
    rec->seq = seq;
    /* every field c points to, copied by the one function that knows them all (a field copied
     * here by hand, as before, was missed when api_base_url came: read after the journal freed it) */
    rec->c = failover_commit_copy (c);
    snprintf (rec->spent, sizeof rec->spent, "%s", spent ? spent : "");
}

/* What the journal does with a settled record. */
typedef enum {
    SETTLE_BY_REVOCATION,           /* not yet: the revocation started for it settles it */
    SETTLE_FORGET,
    SETTLE_RETAIN                   /* a rotated commit: kept against a failover (failover_commit_settled) */
} settle_t;

/* The record whose batch is out. */
static recovery_rec_t *
current (recovery_t *r)
{
    return r->retrying ? &r->behind [r->behind_next] : &r->recs [r->next];
}

/* The record out is done with for now: the next one. settled: out of the behind list too. */
static void
record_next (worker_t *w, int settled)
{
    recovery_t *r = w->recovery;
    if (!r->retrying)
        r->next++;
    else
    if (!settled)
        r->behind_next++;
    else {
        failover_unhold (w->failover, r->behind [r->behind_next].c->id);
        rec_clear (&r->behind [r->behind_next]);
        memmove (r->behind + r->behind_next, r->behind + r->behind_next + 1,
                 (r->nbehind - r->behind_next - 1) * sizeof *r->behind);
        r->nbehind--;
    }
    r->retrying = 0;
    r->in_flight = 0;
}

/* The current record is settled (in the database, or superseded there). */
static void
record_settled_as (worker_t *w, const char *how, settle_t settle)
{
    recovery_t *r = w->recovery;
    recovery_rec_t *rec = current (r);
    if (how)
        log_info (rec->c->id, NULL, "journal replay: %s generation %lld", how, (long long) rec->c->expected_generation + 1);
    if (settle == SETTLE_RETAIN)
        failover_commit_settled (w, rec->c, rec->spent, rec->seq);
    else
    if (settle == SETTLE_FORGET)
        journal_done (w->journal, rec->seq);
    record_next (w, 1);
}

static void
record_settled (worker_t *w, const char *how)
{
    record_settled_as (w, how, SETTLE_FORGET);
}

static void record_set_aside (worker_t *w, int failing);

static void
record_failed (worker_t *w, const char *err)
{
    recovery_t *r = w->recovery;
    log_warning (current (r)->c->id, NULL, "journal replay failed, will retry: %s%s", err,
                 r->retrying ? "" : "; meanwhile only this integration's refreshes wait for it");
    if (!r->retrying)
        record_set_aside (w, 1);        /* one record's trouble holds up its own integration only */
    else
        record_next (w, 0);
}

static void
conflict_recorded (void *arg, fr_status_t st, const store_row_t *row, const char *err)
{
    worker_t *w = arg;
    recovery_rec_t *rec = current (w->recovery);
    if (st == FR_OK && rec->c->rotated && row->status && strcmp (row->status, "disconnected") == 0) {
        /* the earlier run's refresh lost to a disconnect and its revocation of the token it got
         * had not ended: done now, in the background, the record settled by its outcome */
        log_info (rec->c->id, NULL, "journal replay: generation %lld was overtaken by a disconnect; revoking its "
                  "refresh token", (long long) rec->c->expected_generation + 1);
        disconnect_revoke_orphan (w, rec->c->id, catalog_find (w->catalog, row->provider), rec->c->key_id,
                                  rec->c->refresh_ct, rec->c->refresh_ct_len, NULL, rec->seq, "a refresh");
        record_settled_as (w, NULL, SETTLE_BY_REVOCATION);
    }
    else
    if (st == FR_NOT_FOUND) {
        /* deleted since: there is nothing left to commit the token into */
        log_warning (rec->c->id, NULL, "journal replay: the integration no longer exists; its record is dropped");
        record_settled (w, NULL);
    }
    else
    if (st == FR_OK)
        record_settled (w, "superseded");
    else
        record_failed (w, err);
}

/* A replayed record that lost its compare-and-set, recorded as a conflict on the next free
 * connection (the replay's own is still reading its notifications' transaction). */
static void
conflict_record_start (worker_t *w, store_t *s, void *arg)
{
    recovery_t *r = w->recovery;
    char why [512];
    (void) arg;
    if (!s)
        record_failed (w, "the worker is stopping");
    else
    if (store_conflict_start (s, current (r)->c, conflict_recorded, w, why, sizeof why) != FR_OK)
        record_failed (w, why);
}

/* The pass's current record leaves it for the list retried each second (failing: its replay
 * failed; else its row was found behind), holding its integration's claims meanwhile. */
static void
record_set_aside (worker_t *w, int failing)
{
    recovery_t *r = w->recovery;
    recovery_rec_t *rec = current (r);
    r->behind = mem_realloc (r->behind, (r->nbehind + 1) * sizeof *r->behind);
    r->behind [r->nbehind] = *rec;
    r->behind [r->nbehind].behind_ms = r->connected_ms;
    r->behind [r->nbehind++].failing = failing;
    failover_hold (w->failover, rec->c->id, failing);
    memset (rec, 0, sizeof *rec);            /* the list's now */
    if (r->nbehind == 1)
        r->behind_due_ms = clock_mono_ms () + RECOVERY_RETRY_MS;
    record_next (w, 0);
}

/* The current record's row is at generation, before the one the record's refresh started from:
 * a failover (or a restore) lost the commits before it, made by another worker (this one's are
 * written again by failover.c before any replay). Its compare-and-set would lose, and settling it
 * as superseded dropped its token: the other worker's check then wrote back the token this
 * record's refresh had spent. It waits, within the failover window, for the row to come back to
 * its generation; claims of its integration wait with it (failover_hold). Returns 0 when it waits. */
static int
record_behind (worker_t *w, int64_t generation)
{
    recovery_t *r = w->recovery;
    recovery_rec_t *rec = current (r);
    int64_t keep_ms = w->cfg.failover_keep_ms;
    if (!r->retrying) {
        if (keep_ms <= 0)
            return -1;                       /* the other worker keeps nothing to write again */
        log_info (rec->c->id, NULL, "journal replay: the row is at generation %lld, before the %lld this record's "
                  "refresh started from: a failover lost commits another worker made before this refresh; waiting up "
                  "to %lld ms for that worker to write them again, and this integration's refreshes wait (on other "
                  "workers too, through the row's lease, held unless another worker's is live)",
                  (long long) generation, (long long) rec->c->expected_generation, (long long) keep_ms);
        record_set_aside (w, 0);
        return 0;
    }
    if (rec->failing) {
        rec->failing = 0;                    /* behind from now: the failover window counts */
        rec->behind_ms = r->connected_ms;
        failover_held_behind (w->failover, rec->c->id);
    }
    if (r->connected_ms - rec->behind_ms < keep_ms) {
        record_next (w, 0);
        return 0;
    }
    log_warning (rec->c->id, NULL, "journal replay: stopped waiting for another worker to write again the commits a "
                 "failover lost before this record's refresh (the row is still at generation %lld after %lld ms): the "
                 "record is settled as superseded, and the next refresh may find its refresh token spent",
                 (long long) generation, (long long) keep_ms);
    return -1;
}

static void
replayed (void *arg, fr_status_t st, store_replay_t outcome, int64_t generation, const char *err)
{
    worker_t *w = arg;
    if (st != FR_OK)
        record_failed (w, err);
    else
    if (outcome != STORE_REPLAY_LOST && outcome != STORE_REPLAY_BEHIND && current (w->recovery)->c->rotated) {
        /* a failover can lose it as it can a refresh's commit (one committed just before the
         * crash, its marker lost, too): kept, and its record retained */
        record_settled_as (w, outcome == STORE_REPLAY_COMMITTED ? "committed" : NULL, SETTLE_RETAIN);
    }
    else
    if (outcome == STORE_REPLAY_COMMITTED)
        record_settled (w, "committed");
    else
    if (outcome == STORE_REPLAY_SETTLED)
        record_settled (w, NULL);            /* committed before the crash: only the marker was lost */
    else
    if (outcome == STORE_REPLAY_BEHIND && record_behind (w, generation) == 0)
        return;
    else
        dbwait_add (w, conflict_record_start, NULL, -1);   /* another writer won: this result's conflict */
}

/* A record whose refresh continued from a commit the failover check (before the replay) wrote
 * again at an earlier generation is replayed at the generation that commit makes now: at its own
 * it found the row behind, and waited for another worker that had nothing to write. */
static void
recovery_rebase (worker_t *w, recovery_rec_t *rec)
{
    int64_t g = failover_rebased (w->failover, rec->c->id, rec->spent, rec->c->expected_generation);
    if (g != rec->c->expected_generation) {
        log_info (rec->c->id, NULL, "journal replay: the commit this record's refresh continued from was written "
                  "again after a failover, at an earlier generation; replaying over generation %lld, not %lld",
                  (long long) g, (long long) rec->c->expected_generation);
        rec->c->expected_generation = g;
    }
}

/* The rows of refreshes an earlier run left interrupted, read (loads.c): refreshed at once. */
static void
recover_loaded (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const store_row_t *row,
                const store_extra_t *x, fr_status_t st, const char *err, int flag)
{
    char why [512];
    (void) job;
    (void) root;
    (void) x;
    (void) flag;
    cache_entry_t *e = st == FR_OK ? refresh_loaded (w, id, row, &st, why, sizeof why) : NULL;
    if (!e)
        log_warning (id, NULL, "could not recover the interrupted refresh: %s", st == FR_OK || !err ? why : err);
    else
        refresh_background (w, e, 0, 1);
}

static void
released (void *arg, fr_status_t st, char **ids, char **providers, size_t n, int64_t table_blocks, const char *err)
{
    worker_t *w = arg;
    recovery_t *r = w->recovery;
    r->in_flight = 0;
    int64_t now = clock_mono_ms ();
    if (st != FR_OK) {
        /* from the same range (the ones before it stay released): after a statement timeout
         * (57014) a smaller one, at once when a smaller one may fit; after a row lock (55P03) or
         * the database away, the same size a second later: the range's size was not the cause */
        int smaller = strcmp (store_last_state (r->release_store), "57014") == 0
                   && blockwalk_range_failed (&r->release) && store_connected (w->store);
        log_warning (NULL, NULL, "could not release the leases of an earlier run: %s; will retry %s, from block %"
                     PRId64 ", %" PRId64 " blocks at a time", err, smaller ? "at once" : "in a second",
                     r->release.from, r->release.blocks);
        r->due_ms = smaller ? now : now + RECOVERY_RETRY_MS;
        return;
    }
    if (n > 0) {
        r->released_ids = mem_realloc (r->released_ids, (r->nreleased + n) * sizeof *r->released_ids);
        r->released_providers = mem_realloc (r->released_providers, (r->nreleased + n) * sizeof *r->released_providers);
        memcpy (r->released_ids + r->nreleased, ids, n * sizeof *ids);
        memcpy (r->released_providers + r->nreleased, providers, n * sizeof *providers);
        r->nreleased += n;
    }
    mem_free (ids);
    mem_free (providers);
    if (!blockwalk_range_done (&r->release, now, w->cfg.db.statement_timeout_ms, table_blocks))
        return;                                 /* the next range, at the next tick */
    r->step = RECOVERY_DONE;
    w->started_db = 1;
    if (r->nreleased > 0)
        log_warning (NULL, NULL, "released %zu refresh leases of an earlier run of this worker: those refreshes "
                     "were interrupted", r->nreleased);
    for (size_t i = 0; i < r->nreleased; i++) {
        /* a provider with a reuse grace still accepts the refresh token the interrupted call spent,
         * for a short while: refresh now to recover the chain inside it */
        const catalog_provider_t *p = catalog_find (w->catalog, r->released_providers [i]);
        if (p && p->reuse_grace_seconds > 0) {
            log_info (r->released_ids [i], NULL, "refreshing at once to recover the chain within %s's reuse grace",
                      p->name);
            loads_park (w, NULL, NULL, r->released_ids [i], recover_loaded, 0, 0);
        }
        mem_free (r->released_ids [i]);
        mem_free (r->released_providers [i]);
    }
    mem_free (r->released_ids);
    mem_free (r->released_providers);
    r->released_ids = r->released_providers = NULL;
    r->nreleased = 0;
}

/* The replay's next step: a new pass over the journal, the pass's next record, or its end. */
static void
replay_step (worker_t *w, recovery_t *r, store_t *s, int64_t now)
{
    char err [512];
    if (!r->collected) {
        int count = journal_replay (w->journal, collect, w);
        if (count < 0) {
            log_warning (NULL, NULL, "the journal could not be read; refreshes wait for it");
            recovery_forget_pass (r);
            r->due_ms = now + RECOVERY_RETRY_MS;
            return;
        }
        r->collected = 1;
        if (count > 0)
            log_info (NULL, NULL, "replaying %d journal records", count);
    }
    if (r->next < r->n) {
        r->in_flight = 1;
        /* a record found behind waits up to the failover window, its row's lease held as long */
        int64_t hold_ms = w->cfg.failover_keep_ms > 0 ? w->cfg.failover_keep_ms : 0;
        recovery_rebase (w, &r->recs [r->next]);
        if (store_replay_start (s, r->recs [r->next].c, hold_ms, replayed, w, err, sizeof err) != FR_OK)
            record_failed (w, err);
        return;
    }
    recovery_forget_pass (r);
    r->step = RECOVERY_RELEASE;
}

/* The behind list's next record replayed again, once the database is up and a connection free. */
static void
recovery_retry_behind (worker_t *w, recovery_t *r, int64_t now)
{
    char err [512];
    if (!r->nbehind || r->in_flight || now < r->behind_due_ms || !store_connected (w->store)
        || failover_checking (w->failover))
        return;
    if (r->behind_next >= r->nbehind) {
        r->behind_next = 0;                  /* the round is over: the next in a second */
        r->behind_due_ms = now + RECOVERY_RETRY_MS;
        return;
    }
    store_t *s = dbwait_free_store (w);
    if (!s)
        return;
    r->retrying = 1;
    r->in_flight = 1;
    /* the hold renewed for what is left of the wait (none once it is over: record_behind gives up) */
    int64_t hold_ms = w->cfg.failover_keep_ms - (r->connected_ms - r->behind [r->behind_next].behind_ms);
    recovery_rebase (w, &r->behind [r->behind_next]);
    if (store_replay_start (s, r->behind [r->behind_next].c, hold_ms > 0 ? hold_ms : 0, replayed, w, err,
                            sizeof err) != FR_OK)
        record_failed (w, err);
}

void
recovery_tick (worker_t *w, int64_t now)
{
    recovery_t *r = w->recovery;
    char err [512];
    if (r->tick_ms && store_connected (w->store))
        r->connected_ms += now - r->tick_ms;
    r->tick_ms = now;
    recovery_retry_behind (w, r, now);
    w->recovering = r->step == RECOVERY_REPLAY ? "replaying the journal of its earlier run"
                                               : "releasing the refresh leases of its earlier run";
    /* a step on a connection that is down would only fail: wait until it is up; and until the
     * commits kept before a restart are checked (failover_restore): a record replayed onto a row a
     * failover put behind would lose its compare-and-set, and the kept commit written again after
     * it would hold a token the record's refresh had spent */
    while (!w->started_db && !r->in_flight && now >= r->due_ms && store_connected (w->store)
           && !failover_checking (w->failover)) {
        store_t *s = dbwait_free_store (w);
        if (!s)
            return;                          /* on a later turn, when one is free */
        if (r->step == RECOVERY_REPLAY)
            replay_step (w, r, s, now);
        else
        if (r->step == RECOVERY_RELEASE) {
            r->in_flight = 1;
            r->release_store = s;
            blockwalk_sent (&r->release, now);
            size_t nheld;
            const char **held = failover_waiting_ids (w->failover, &nheld);   /* their leases are holds */
            fr_status_t st = store_release_own_leases_start (s, r->release.from, r->release.blocks, held, nheld,
                                                             released, w, err, sizeof err);
            mem_free (held);
            if (st != FR_OK) {
                r->in_flight = 0;
                log_warning (NULL, NULL, "could not release the leases of an earlier run: %s; will retry", err);
                r->due_ms = now + RECOVERY_RETRY_MS;
            }
        }
        else
            return;
    }
}
