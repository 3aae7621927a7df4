/* sweep.c - periodic refresh of what is about to expire, partition by partition */
#include "sweep.h"
#include "store_chain.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "ring.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define SWEEP_MAX_PROVIDERS 128
#define SWEEP_BUSY_RETRY_MS 100     /* every connection had a batch in flight: try again this soon */
#define SWEEP_BACKLOG_MS    1000    /* a pass that left due work behind: the next one this soon */
#define SWEEP_NOT_READY_MS  1000    /* no partitions known yet, or no database: looked at again this soon */
#define SWEEP_IDLE_CHUNK    10000   /* rows a pass reads of the walk for idle refresh tokens */
#define SWEEP_FILL_MAX      1000    /* rows without a routing hash remembered for filling in */
#define SWEEP_FILL_TRIES    3       /* a fill that skipped rows held by another session: tried again */
#define SWEEP_FILL_AGAIN_MS 500     /* ... after this */
#define SWEEP_HELD_MAX      1000    /* integrations held back that the passes leave out */

typedef struct {
    char id [IDENT_MAX + 1];
    int64_t until_ms;           /* monotonic */
} sweep_held_t;

typedef struct {
    char name [65];
    double tokens;              /* token bucket of calls the sweep may start */
    int64_t last_ms;
} sweep_bucket_t;

struct sweep {
    sweep_config_t cfg;
    uint8_t *owned;             /* per partition: 1 when ours */
    uint32_t partitions;
    uint32_t owned_count;
    uint64_t membership_hash;   /* to notice changes without recomputing */
    int64_t confirmed_ms;       /* the last PING's time (monotonic) */
    int64_t next_ms;
    char idle_cursor [STORE_CURSOR_LEN];    /* the walk for idle refresh tokens: after this id ("" the start) */
    char idle_next [STORE_CURSOR_LEN];      /* ... where the pass in flight says the next chunk starts */
    sweep_bucket_t buckets [SWEEP_MAX_PROVIDERS];
    size_t nbuckets;
    int in_flight;              /* a pass's queries are in the database */
    size_t started, kept;       /* of the pass in flight */
    size_t seen;                /* rows of its first query (what expires) */
    size_t throttled;           /* candidates refused for the provider's budget */
    char **fill;                /* ids of rows without a routing hash, to fill in (migration 009) */
    size_t nfill;
    int64_t fill_due_ms;        /* not before this */
    char **filling;             /* the ids of the fill in the database (NULL: none) */
    size_t nfilling;
    int fill_tries;             /* of those ids */
    uint32_t *owned_list;       /* the owned partitions' numbers (owned_count), for the queries */
    sweep_start_fn *start;
    void *start_arg;
    sweep_held_t *held;         /* SWEEP_HELD_MAX, made at the first */
    size_t nheld;
};

static int64_t sweep_floor_s (const sweep_t *s);

sweep_t *
sweep_new (const sweep_config_t *cfg)
{
    sweep_t *s = mem_alloc (sizeof *s);
    s->cfg = *cfg;
    /* a horizon shorter than one pass would let tokens expire between two passes: every token's
     * horizon has the floor (sweep_horizon), and so has the one that bounds the passes' scan */
    if (s->cfg.horizon_s > 0 && s->cfg.horizon_s < sweep_floor_s (s)) {
        log_warning (NULL, NULL, "sweep horizon %lld s is shorter than a sweep interval and its margin: tokens would "
                     "expire between two passes; using %lld s", (long long) s->cfg.horizon_s,
                     (long long) sweep_floor_s (s));
        s->cfg.horizon_s = sweep_floor_s (s);
    }
    s->next_ms = clock_mono_ms () + cfg->interval_ms / 4;     /* first round soon after start */
    return s;
}

static void
sweep_ids_free (char ***ids, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        mem_free ((*ids) [i]);
    mem_free (*ids);
    *ids = NULL;
    *n = 0;
}

void
sweep_destroy (sweep_t **s_p)
{
    if (s_p && *s_p) {
        sweep_ids_free (&(*s_p)->fill, &(*s_p)->nfill);
        sweep_ids_free (&(*s_p)->filling, &(*s_p)->nfilling);
        mem_free ((*s_p)->held);
        mem_free ((*s_p)->owned_list);
        mem_free ((*s_p)->owned);
        mem_free (*s_p);
        *s_p = NULL;
    }
}

uint32_t
sweep_set_membership (sweep_t *s, const char *me, const msgpack_object *workers, int64_t partitions,
                      int64_t now_ms)
{
    if (!workers || workers->type != MSGPACK_OBJECT_ARRAY || partitions < 1 || partitions > RING_MAX_PARTITIONS)
        return s->owned_count;
    s->confirmed_ms = now_ms;
    /* a sum, so that the order does not count: each broker lists the workers as they joined it,
     * and two brokers' PINGs of the same workers are no change to recompute and log */
    uint64_t h = ring_hash (&partitions, sizeof partitions);
    for (uint32_t i = 0; i < workers->via.array.size; i++) {
        const msgpack_object *o = &workers->via.array.ptr [i];
        if (o->type == MSGPACK_OBJECT_STR)
            h += ring_hash (o->via.str.ptr, o->via.str.size) * UINT64_C (0x9E3779B97F4A7C15);
    }
    if (h == s->membership_hash && s->owned)
        return s->owned_count;
    s->membership_hash = h;

    size_t n = 0;
    char **ids = mem_alloc ((workers->via.array.size + 1) * sizeof *ids);
    for (uint32_t i = 0; i < workers->via.array.size; i++) {
        const msgpack_object *o = &workers->via.array.ptr [i];
        if (o->type == MSGPACK_OBJECT_STR && o->via.str.size <= 128)
            ids [n++] = mem_strndup (o->via.str.ptr, o->via.str.size);
    }
    mem_free (s->owned);
    mem_free (s->owned_list);
    s->partitions = (uint32_t) partitions;
    s->owned = mem_alloc (s->partitions);
    s->owned_list = mem_alloc (s->partitions * sizeof *s->owned_list);
    s->owned_count = 0;
    for (uint32_t p = 0; p < s->partitions; p++) {
        int o = ring_owner (p, (const char *const *) ids, n);
        if (o >= 0 && strcmp (ids [o], me) == 0) {
            s->owned [p] = 1;
            s->owned_list [s->owned_count++] = p;
        }
    }
    for (size_t i = 0; i < n; i++)
        mem_free (ids [i]);
    mem_free (ids);
    log_info (NULL, NULL, "owning %u of %u partitions", s->owned_count, s->partitions);
    return s->owned_count;
}

int
sweep_owns (const sweep_t *s, const char *integration)
{
    return s->owned && s->owned [ring_partition (integration, s->partitions)];
}

/* No broker confirmed the partitions for membership_ms: the brokers have counted this worker lost
 * by now (they do after three heartbeat intervals without a HELLO) and given its partitions to
 * others, or it cannot reach them; sweeping on would refresh twice what the others sweep. The
 * next PING recomputes them (the hash is forgotten). */
static void
sweep_expire_membership (sweep_t *s, int64_t now_ms)
{
    if (!s->owned || now_ms - s->confirmed_ms <= s->cfg.membership_ms)
        return;
    if (s->owned_count)
        log_warning (NULL, NULL, "no broker has confirmed this worker's partitions for %lld ms; the sweep leaves "
                     "its %u partitions alone until a broker assigns them again",
                     (long long) (now_ms - s->confirmed_ms), s->owned_count);
    mem_free (s->owned);
    mem_free (s->owned_list);
    s->owned = NULL;
    s->owned_list = NULL;
    s->owned_count = 0;
    s->membership_hash = 0;
}

uint32_t
sweep_owned_count (const sweep_t *s)
{
    return s->owned_count;
}

int64_t
sweep_next_due (const sweep_t *s)
{
    return s->next_ms;
}

#define SWEEP_LIFETIME_SHARE 0.25

/* The floor of every token's horizon: one interval, a fifth more, and a second. */
static int64_t
sweep_floor_s (const sweep_t *s)
{
    return s->cfg.interval_ms / 1000 + s->cfg.interval_ms / 5000 + 1;
}

int64_t
sweep_horizon (const sweep_t *s, int64_t lifetime_s)
{
    if (lifetime_s <= 0)
        return s->cfg.horizon_s;
    int64_t h = (int64_t) ((double) lifetime_s * SWEEP_LIFETIME_SHARE);
    if (h < sweep_floor_s (s))
        h = sweep_floor_s (s);
    if (h > lifetime_s / 2)
        h = lifetime_s / 2;
    return h < s->cfg.horizon_s ? h : s->cfg.horizon_s;
}

/* One token from the provider's bucket, if any is left. */
int
sweep_take (sweep_t *s, const char *provider, int64_t now_ms)
{
    sweep_bucket_t *b = NULL;
    for (size_t i = 0; i < s->nbuckets; i++)
        if (strcmp (s->buckets [i].name, provider) == 0)
            b = &s->buckets [i];
    if (!b) {
        if (s->nbuckets == SWEEP_MAX_PROVIDERS)
            return 0;
        b = &s->buckets [s->nbuckets++];
        snprintf (b->name, sizeof b->name, "%s", provider);
        b->tokens = (double) s->cfg.rate_per_s;
        b->last_ms = now_ms;
    }
    b->tokens += (double) (now_ms - b->last_ms) * (double) s->cfg.rate_per_s / 1000.0;
    if (b->tokens > (double) s->cfg.rate_per_s)
        b->tokens = (double) s->cfg.rate_per_s;     /* burst of at most one second's worth */
    b->last_ms = now_ms;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* Remembers an integration the passes leave out until until_ms; a full list forgets the entry
 * that ends first (it will be read again, and skipped, as before the list). */
static void
sweep_hold (sweep_t *s, const char *id, int64_t until_ms, int64_t now_ms)
{
    if (strlen (id) > IDENT_MAX || until_ms <= now_ms)
        return;
    if (!s->held)
        s->held = mem_alloc (SWEEP_HELD_MAX * sizeof *s->held);
    size_t slot = s->nheld, first = 0;
    for (size_t i = 0; i < s->nheld; i++) {
        if (strcmp (s->held [i].id, id) == 0) {
            slot = i;
            break;
        }
        if (s->held [i].until_ms < s->held [first].until_ms)
            first = i;
    }
    if (slot == s->nheld && s->nheld && s->held [first].until_ms <= now_ms)
        slot = first;                       /* an ended one's place */
    if (slot == SWEEP_HELD_MAX) {
        if (s->held [first].until_ms >= until_ms)
            return;
        slot = first;
    }
    if (slot == s->nheld)
        s->nheld++;
    snprintf (s->held [slot].id, sizeof s->held [slot].id, "%s", id);
    s->held [slot].until_ms = until_ms;
}

/* The ids still held at now_ms into out (borrowed until the next sweep_hold), as held says now
 * (NULL: as they were held); the ended are dropped. */
static size_t
sweep_held_ids (sweep_t *s, int64_t now_ms, sweep_held_fn *held, void *arg, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nheld; ) {
        if (held)
            s->held [i].until_ms = held (arg, s->held [i].id);
        if (s->held [i].until_ms <= now_ms) {
            s->held [i] = s->held [--s->nheld];
            continue;
        }
        out [n++] = s->held [i].id;
        i++;
    }
    return n;
}

/* Starts a candidate the loop may refresh: only in a partition this worker owns. 1 started, 0
 * not (another worker's, or one in flight), SWEEP_THROTTLED, SWEEP_HELD (remembered). */
static int
sweep_one (sweep_t *s, const char *id, const char *provider, int keepalive, int64_t now_ms,
           sweep_start_fn *start, void *arg)
{
    int64_t until = 0;
    int r = sweep_owns (s, id) ? start (arg, id, provider, keepalive, now_ms, &until) : 0;
    if (r == SWEEP_HELD)
        sweep_hold (s, id, until, now_ms);
    return r;
}

/* A pass's answers, from the loop (store_batch_pump): query 0 finds what expires, query 1 (when
 * a provider has an idle limit) the idle refresh tokens in the next chunk of the walk. */
static void
sweep_found (void *arg, fr_status_t st, size_t q, const char *id, const char *provider, int unhashed,
             const char *err)
{
    sweep_t *s = arg;
    if (id && unhashed && s->nfill < SWEEP_FILL_MAX) {
        if (!s->fill)
            s->fill = mem_alloc (SWEEP_FILL_MAX * sizeof *s->fill);
        s->fill [s->nfill++] = mem_strdup (id);
    }
    if (id) {
        size_t *count = q == 0 ? &s->started : &s->kept;
        int r = sweep_one (s, id, provider, q > 0, clock_mono_ms (), s->start, s->start_arg);
        if (r == SWEEP_THROTTLED)
            s->throttled++;
        else
        if (r > 0)
            *count += (size_t) r;
        s->seen += q == 0;
        return;
    }
    s->in_flight = 0;
    if (st != FR_OK)
        log_warning (NULL, NULL, "sweep: %s", err);
    else
        memcpy (s->idle_cursor, s->idle_next, sizeof s->idle_cursor);
    /* due work left behind (the providers' budgets ran out, or a full page of which this worker
     * started some): the next pass comes as soon as the budgets have refilled, not a whole
     * interval later, so the sweep keeps up with FERRULE_SWEEP_RATE instead of one burst a pass.
     * A full page of other workers' rows alone does not bring it forward. */
    int backlog = s->throttled || (s->seen >= (size_t) s->cfg.batch && s->started);
    int64_t soon = clock_mono_ms () + SWEEP_BACKLOG_MS;
    if (st == FR_OK && backlog && soon < s->next_ms)
        s->next_ms = soon;
    if (s->started || s->kept || s->throttled)
        log_info (NULL, NULL, "sweep: refreshing %zu expiring and %zu idle integrations%s", s->started, s->kept,
                  backlog ? "; more are due, next pass in 1 s" : "");
}

/* A fill's end. Rows another session held (a refresh's claim or commit, often the one this very
 * pass started) were skipped: the same ids go again shortly, a few times (filled ones are left
 * as they are). */
static void
sweep_filled (void *arg, fr_status_t st, size_t filled, const char *err)
{
    sweep_t *s = arg;
    if (st != FR_OK)
        log_warning (NULL, NULL, "sweep: could not fill in routing hashes (a later pass tries again): %s", err);
    if (st == FR_OK && filled < s->nfilling && s->fill_tries < SWEEP_FILL_TRIES) {
        if (!s->fill)
            s->fill = mem_alloc (SWEEP_FILL_MAX * sizeof *s->fill);
        for (size_t i = 0; i < s->nfilling && s->nfill < SWEEP_FILL_MAX; i++) {
            s->fill [s->nfill++] = s->filling [i];
            s->filling [i] = NULL;
        }
        s->fill_due_ms = clock_mono_ms () + SWEEP_FILL_AGAIN_MS;
    }
    sweep_ids_free (&s->filling, &s->nfilling);
}

/* Rows made before migration 009 met by the passes get their routing hash, one batch on a free
 * connection: from then on only their own partition's worker reads them. 1 when started. */
static int
sweep_fill (sweep_t *s, store_t *store, int64_t now_ms)
{
    char err [256];
    if (!s->nfill || s->filling || now_ms < s->fill_due_ms || !store || !store_connected (store))
        return 0;
    fr_status_t st = store_route_hashes_start (store, (const char *const *) s->fill, s->nfill, sweep_filled, s,
                                               err, sizeof err);
    if (st != FR_OK) {
        log_warning (NULL, NULL, "sweep: could not fill in routing hashes (a later pass tries again): %s", err);
        sweep_ids_free (&s->fill, &s->nfill);
        return 0;
    }
    s->fill_tries = s->fill_due_ms ? s->fill_tries + 1 : 0;      /* a retry of the same ids, or new ones */
    s->fill_due_ms = 0;
    s->filling = s->fill;
    s->nfilling = s->nfill;
    s->fill = NULL;
    s->nfill = 0;
    return 1;
}

void
sweep_tick (sweep_t *s, store_t *store, const catalog_t *catalog, const breaker_t *breaker, int paused,
            int64_t now_ms, sweep_start_fn *start, sweep_held_fn *held_fn, void *arg)
{
    sweep_expire_membership (s, now_ms);
    if (sweep_fill (s, store, now_ms))
        return;                             /* its connection is taken for this turn */
    if (now_ms < s->next_ms || s->in_flight)
        return;
    if (!paused && s->owned_count && !store) {
        s->next_ms = now_ms + SWEEP_BUSY_RETRY_MS;
        return;
    }
    s->next_ms = now_ms + s->cfg.interval_ms;
    if (paused)
        return;                             /* draining: no new passes */
    if (!s->owned_count || !store || !store_connected (store)) {
        /* not ready yet: its partitions not heard of (a broker that starts after it) or the
         * database away. Left due, the pass would make every poll of the loop return at once (a
         * spin for as long as that lasts); a whole interval (30 s by default) left the tokens due
         * meanwhile to be refreshed only when asked for. A second apart is neither. */
        if (s->cfg.interval_ms > SWEEP_NOT_READY_MS)
            s->next_ms = now_ms + SWEEP_NOT_READY_MS;
        return;
    }
    /* the queries apply sweep_horizon to every row: the same bounds, in SQL; then, for providers
     * that expire unused refresh tokens, those not refreshed for half the idle limit. They go as
     * one batch, and the loop goes on: a stalled database holds up the pass, not the worker. */
    store_sweep_query_t qs [2];
    size_t nq = 0;
    /* providers whose circuit is open are left out: their calls would be refused without a try,
     * and their rows, keeping no failure, would fill the pages of every pass until it closes */
    const char *blocked [SWEEP_MAX_PROVIDERS];
    size_t nblocked = 0;
    int64_t retry_s;
    for (size_t k = 0; k < catalog_count (catalog) && nblocked < SWEEP_MAX_PROVIDERS; k++) {
        const catalog_provider_t *p = catalog_at (catalog, k);
        if (breaker && breaker_blocked (breaker, p->name, now_ms, &retry_s))
            blocked [nblocked++] = p->name;
    }
    /* and the integrations this worker holds back for longer than a failed row is left out */
    const char *held [SWEEP_HELD_MAX];
    size_t nheld = sweep_held_ids (s, now_ms, held_fn, arg, held);
    qs [nq++] = (store_sweep_query_t) { .horizon_s = s->cfg.horizon_s, .lifetime_share = SWEEP_LIFETIME_SHARE,
                                        .floor_s = sweep_floor_s (s), .limit = s->cfg.batch,
                                        .quiet_ms = s->cfg.quiet_ms, .partitions = s->partitions,
                                        .owned = s->owned_list, .nowned = s->owned_count,
                                        .blocked = blocked, .nblocked = nblocked, .held = held, .nheld = nheld };
    /* and the next chunk of the walk for refresh tokens unused for half their provider's idle limit */
    const char *idle_names [SWEEP_MAX_PROVIDERS];
    int64_t idle_s [SWEEP_MAX_PROVIDERS];
    size_t nidle = 0;
    for (size_t k = 0; k < catalog_count (catalog) && nidle < SWEEP_MAX_PROVIDERS; k++) {
        const catalog_provider_t *p = catalog_at (catalog, k);
        if (p->refresh_token_idle_days > 0) {
            idle_names [nidle] = p->name;
            idle_s [nidle++] = (int64_t) p->refresh_token_idle_days * 86400 / 2;
        }
    }
    if (nidle)
        qs [nq++] = (store_sweep_query_t) { .idle_providers = idle_names, .idle_s = idle_s, .nidle = nidle,
                                            .cursor = s->idle_cursor, .next_cursor = s->idle_next,
                                            .limit = SWEEP_IDLE_CHUNK, .quiet_ms = s->cfg.quiet_ms,
                                            .partitions = s->partitions, .owned = s->owned_list,
                                            .nowned = s->owned_count, .blocked = blocked, .nblocked = nblocked,
                                            .held = held, .nheld = nheld };
    char err [512];
    s->started = s->kept = s->seen = s->throttled = 0;
    s->start = start;
    s->start_arg = arg;
    snprintf (s->idle_next, sizeof s->idle_next, "%s", s->idle_cursor);   /* unless the pass answers */
    if (store_sweep_start (store, qs, nq, sweep_found, s, err, sizeof err) != FR_OK) {
        log_warning (NULL, NULL, "sweep: %s", err);
        return;
    }
    s->in_flight = 1;
}
