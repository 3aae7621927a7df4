/* refresh.c - the refresh protocol (docs/architecture.md):
 *   1. claim: a short transaction locks the row; if someone already refreshed, use their token;
 *      if another holder's lease is live, wait; else take the lease (owner, 128-bit token, expiry).
 *   2. call the provider with no transaction open (curl multi: other work goes on meanwhile).
 *   3. a rotated refresh token goes to the local journal at once, and the journal's own thread
 *      syncs it (one fdatasync for every record since the last one began) while the commit
 *      goes to the database: a crash loses the token only before both have ended, a failed
 *      commit leaves it in memory and in the journal.
 *   4. commit: compare-and-set on the generation; the chain row commits with it. Until it is
 *      committed (or superseded by a newer generation) the new tokens are kept and the commit is
 *      retried, whatever the database answered.
 *   5. only then answer every request that waited on this refresh. */
#include "refresh.h"
#include "store_chain.h"
#include "dbwait.h"
#include "failover.h"
#include "disconnect.h"
#include "ident.h"
#include "loads.h"
#include "reply.h"
#include "scopes.h"
#include "clock.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include "oauth.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

#define BUSY_RETRY_MS   100          /* re-claim interval while another holder's lease is live */
/* a request still waiting for its refresh (another holder's lease, this worker's provider call,
 * the database) is answered shortly before its deadline (dbwait_answer_ms), with what it waited
 * for: the broker's own answer at the deadline can say only that this worker did not answer (the
 * worker's deadline is the broker's plus the hop, and the loop wakes for it: refresh_next_due).
 * At most a quarter of the request's time: a client splits its timeout into attempts, and an
 * attempt answered much before its end loses time in which the refresh could have ended */
#define LOCKED_GIVE_UP_MS 1000       /* a row locked this long answers the waiters database_unavailable */
/* what to do about a locked row, said when a claim gives up on it and in a waiter's early answer */
#define LOCKED_HINT "a long transaction holds this integration's row; retry shortly, and if it lasts, look for it " \
                    "in pg_stat_activity"
#define STARTUP_WAIT_MS 2000         /* a claim waits this long for the start-up recovery to end */
#define STARTUP_RECHECK_MS 20        /* ... looking again this often */
#define COMMIT_RETRY_MS 250          /* first retry of a commit that failed; doubles up to the max */
#define COMMIT_RETRY_MAX_MS 10000
#define DEFAULT_EXPIRES_IN 3600      /* when a provider omits expires_in */



struct refresh {
    refresh_t *next;
    worker_t *w;                     /* for the provider-call callback */
    cache_entry_t *entry;
    job_t *waiters;
    char rid [sizeof ((job_t *) 0)->rid];      /* the request that started it, for its log lines
                                                  ("": none), kept when that one is answered */
    refresh_state_t state;
    int forced;
    int64_t known_generation;        /* the generation the first waiter saw */
    int64_t valid_until;             /* epoch s: what the waiters need the token to last until */
    int64_t due_ms;
    char lease_token [STORE_LEASE_LEN + 1];
    int64_t expected_generation;
    int64_t locked_since_ms;         /* first claim that found the row locked, 0 none */
    char busy_owner [129];           /* the last claim found this holder's live lease ("": none); a
                                      * worker id, at most 128 characters (the brokers' limit) */
    int64_t busy_until_ms;           /* ... until then (monotonic) */
    int64_t answer_ms;               /* the earliest of its waiters' answer_ms, INT64_MAX with none */
    const char *recording;           /* RECORDING: the failed attempt's outcome (a chain outcome) */
    int recording_answered;          /* ... and whether the provider's answer was that failure (else
                                      * it came before this round's call) */
    int interrupted;                 /* the lease we took had been left by an interrupted refresh */
    int probe;                       /* the call is its provider's half-open probe (breaker_allow) */
    unsigned commit_failures;        /* consecutive failed commits, for the retry's backoff */
    int64_t answered_us;             /* monotonic: when the loop woke up to the provider's answer */
    char *refresh_token;             /* plaintext, only while calling */
    const catalog_provider_t *provider;
    int called;                      /* this refresh made a provider call */
    int background;                  /* started by refresh-ahead or the sweep, not by a request */
    int64_t call_started_ms;
    int64_t started_us;              /* monotonic: the refresh began */
    int64_t held_since_us;           /* monotonic: its claim began to wait for the worker's recovery or
                                      * check of its last commits (refresh_send_batch), 0: it does not */
    /* a commit waiting for the database */
    store_commit_t commit;
    unsigned char *access_ct, *refresh_ct;
    char *access_plain;
    char fingerprint [CRYPTO_FINGERPRINT_LEN + 1];
    char spent [CRYPTO_FINGERPRINT_LEN + 1];   /* the stored fingerprint of the token the call spends */
    char *scopes;
    char *api_base_url;              /* the answer's API base URL (the catalog's api_base_field), or NULL */
    char *unusable;                  /* the provider's answer had a refresh token but no usable access
                                      * token: why, for the waiters' error once the refresh token is in */
    int64_t unusable_retry;          /* ... and when to try again (s) */
    int64_t journal_seq;
    int64_t journal_due_ms;          /* a record the journal could not take: not tried again before */
    int in_db;                       /* its claim or its commit is in the database batch in flight */
    int claim_resent;                /* its claim was lost with the batch connection and sent again */
    int claim_alone;                 /* its claim failed with its group: sent again in a batch of its own */
    int commit_resent;               /* the same for its commit */
    refresh_t **queued;              /* RECORDING, CONFLICTED: where its work queued for a connection
                                      * (dbwait.c) points back at it; cleared if it is freed first */
};

/* A failed attempt on its way to the database (a batch queued in dbwait.c); the refresh waits for
 * it (RECORDING), so that whoever is answered and asks next (status, doctor) reads it, and after
 * an invalid_grant the record tells whether the rejected refresh token was still the current one.
 * A record the database cannot take does not hold the answer back: it is tried again after. */
#define RECORD_TRIES 5                /* a record the database could not take: tried again once it is back */
#define RECORD_WAIT_MS 30000          /* a record's caller is answered after this, the record kept for later */
#define RECORD_RETRY_MS 250           /* a record that failed is tried again after this, doubling each time */
#define RECORD_RETRY_MAX_MS 10000     /* ... up to this, for the records tried until they are in */

typedef struct failure_record {
    refresh_t *r;                    /* the refresh waiting for it, or NULL */
    worker_t *w;
    char id [IDENT_MAX + 1];
    int64_t expected_generation;
    char lease_token [STORE_LEASE_LEN + 1];
    const char *outcome;             /* static texts */
    const char *new_status;
    const char *error_code;
    char *message;
    char *hint;                      /* the waiting refresh's answer */
    fr_status_t st;
    int64_t retry_after;
    int superseded_claims;           /* invalid_grant: a stale record means claim again */
    int tries;
} failure_record_t;

static void refresh_claim_soon (refresh_t *r);

int
refresh_transition_allowed (refresh_state_t from, refresh_state_t to)
{
    switch (from) {
        case REFRESH_CLAIMING:   return to == REFRESH_CLAIMING || to == REFRESH_CALLING || to == REFRESH_RECORDING;
        case REFRESH_CALLING:    return to == REFRESH_ANSWERED || to == REFRESH_RECORDING;
        case REFRESH_ANSWERED:   return to == REFRESH_COMMITTING || to == REFRESH_CONFLICTED;
        case REFRESH_COMMITTING: return to == REFRESH_COMMITTING || to == REFRESH_CONFLICTED;
        case REFRESH_RECORDING:  return to == REFRESH_CLAIMING;
        case REFRESH_CONFLICTED: return to == REFRESH_CLAIMING;
    }
    return 0;
}

const char *
refresh_state_name (refresh_state_t s)
{
    switch (s) {
        case REFRESH_CLAIMING:   return "claiming";
        case REFRESH_CALLING:    return "calling";
        case REFRESH_ANSWERED:   return "answered";
        case REFRESH_COMMITTING: return "committing";
        case REFRESH_RECORDING:  return "recording";
        case REFRESH_CONFLICTED: return "conflicted";
    }
    return "?";
}

/* The one place a refresh changes state. An illegal move is this program's bug: it is refused
 * (and aborts a debug build), never carried out. */
static int
refresh_set_state (refresh_t *r, refresh_state_t to)
{
    if (!refresh_transition_allowed (r->state, to)) {
        log_error (r->entry ? r->entry->id : NULL, NULL, "refused an illegal refresh transition from %s to %s",
                   refresh_state_name (r->state), refresh_state_name (to));
        assert (!"illegal refresh transition");
        return -1;
    }
    r->state = to;
    return 0;
}

static const char *
rid_of (const refresh_t *r)
{
    return r->rid [0] ? r->rid : NULL;
}

size_t
refresh_count (const worker_t *w)
{
    size_t n = 0;
    for (const refresh_t *r = w->refreshes; r; r = r->next)
        n++;
    return n;
}

/* How long a refresh started now may take to end: its provider call, then the batch that commits
 * its answer (the statement timeout and the 250 ms the store waits past it). */
static int64_t
refresh_drain_budget (const worker_t *w)
{
    return w->cfg.http_timeout_ms + w->cfg.db.statement_timeout_ms + 250;
}

size_t
refresh_at_provider (const worker_t *w)
{
    size_t n = 0;
    for (const refresh_t *r = w->refreshes; r; r = r->next)
        if (r->state == REFRESH_CALLING || r->state == REFRESH_ANSWERED || r->state == REFRESH_COMMITTING)
            n++;
    return n;
}

/* A waiter's copy of its request, answered or forgotten. */
static void
waiter_free (job_t *j)
{
    mem_free (j->require_scopes);
    mem_free (j);
}

static void
refresh_free (worker_t *w, refresh_t *r)
{
    refresh_t **pp = &w->refreshes;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    if (r->queued)
        *r->queued = NULL;               /* the queued work goes on without it */
    while (r->waiters) {
        job_t *j = r->waiters;
        r->waiters = j->next;
        waiter_free (j);
    }
    if (r->entry) {
        r->entry->refresh = NULL;
        r->entry->refresh_rejecting = 0;
        if (r->entry->stale)
            cache_drop (w->cache, r->entry->id);
    }
    mem_free_secret (&r->refresh_token);
    mem_free_secret (&r->access_plain);
    mem_free (r->access_ct);
    mem_free (r->refresh_ct);
    mem_free (r->scopes);
    mem_free (r->api_base_url);
    mem_free (r->unusable);
    mem_free (r);
}

/* Answers every waiter with the entry's token, or insufficient_scope where the grant the refresh
 * ended with lacks a scope the waiter requires: a stale entry's was not known when it joined. */
static void
refresh_finish_ok (worker_t *w, refresh_t *r)
{
    for (job_t *j = r->waiters; j; j = j->next)
        if (!j->require_scopes || scopes_held (w, j, j->require_scopes, r->entry) == 0)
            reply_token (w, j, r->entry, r->called);
    refresh_free (w, r);
}

static void
refresh_finish_error (worker_t *w, refresh_t *r, fr_status_t st, const char *message, const char *hint,
                      int64_t retry_after)
{
    for (job_t *j = r->waiters; j; j = j->next)
        reply_error (w, j, st, message, hint, retry_after);
    refresh_free (w, r);
}

/* Links a copy of a request to r's waiters, with the time it is answered with what it waits for
 * if the refresh has not ended by then (refresh_answer_waiting). */
static void
refresh_add_waiter (refresh_t *r, job_t *copy, int64_t now_ms)
{
    copy->answer_ms = dbwait_answer_ms (copy->deadline_ms, now_ms);
    copy->next = r->waiters;
    r->waiters = copy;
    if (!r->rid [0])
        memcpy (r->rid, copy->rid, sizeof r->rid);
    if (copy->answer_ms < r->answer_ms)
        r->answer_ms = copy->answer_ms;
}

/* A waiter's copy of job, owning its own copy of require_scopes (NULL: none). */
static job_t *
waiter_new (const job_t *job, const char *require_scopes)
{
    job_t *copy = mem_alloc (sizeof *copy);
    *copy = *job;
    copy->next = NULL;
    copy->require_scopes = require_scopes ? mem_strdup (require_scopes) : NULL;
    return copy;
}

/* Adds a waiter (job, or none for a background refresh) to the integration's refresh, starting
 * one if there is none. valid_until (epoch s): the token must last at least that long. */
static void
refresh_start (worker_t *w, cache_entry_t *e, const job_t *job, const char *require_scopes, int64_t valid_until,
               int forced)
{
    int64_t now_s = clock_wall_ms () / 1000;
    int64_t now_ms = clock_mono_ms ();
    refresh_t *r = e->refresh;
    if (r && r->state == REFRESH_COMMITTING) {
        /* the new tokens wait for the database: try the commit again now, and answer this
         * request with its outcome */
        if (job) {
            refresh_add_waiter (r, waiter_new (job, require_scopes), now_ms);
            r->due_ms = now_ms;
        }
        return;
    }
    if (!r) {
        /* no provider call while this integration backs off or its provider's circuit is open */
        int64_t retry = 0;
        char message [300];
        fr_status_t code = FR_PROVIDER_UNAVAILABLE;
        message [0] = '\0';
        if (now_ms < e->backoff_until_ms) {
            retry = (e->backoff_until_ms - now_ms + 999) / 1000;
            code = e->backoff_code ? (fr_status_t) e->backoff_code : FR_PROVIDER_UNAVAILABLE;
            if (e->backoff_local)
                snprintf (message, sizeof message, "the last %u refreshes of integration \"%s\" failed before the "
                          "provider was called (%s: the worker's log, or status's last error, says why); next "
                          "attempt in %lld s", e->failures, e->id, result_code (code), (long long) retry);
            else
            if (code == FR_PROVIDER_UNAVAILABLE || code == FR_PROVIDER_BAD_RESPONSE)
                snprintf (message, sizeof message, "the provider failed %u times in a row for integration \"%s\"; "
                          "next attempt in %lld s", e->failures, e->id, (long long) retry);
            else
                /* what the provider said last time, until the next attempt: a refused client or
                 * request is the operator's to fix, not a reason to wait and retry */
                snprintf (message, sizeof message, "provider \"%s\" refused the last %u refreshes of integration \"%s\" "
                          "(%s); next attempt in %lld s", e->provider ? e->provider : "?", e->failures, e->id,
                          result_code (code), (long long) retry);
        }
        else
        if (e->provider && breaker_blocked (w->breaker, e->provider, now_ms, &retry))
            snprintf (message, sizeof message, "provider \"%s\" is failing for many integrations; calls resume in %lld s",
                      e->provider, (long long) retry);
        if (message [0]) {
            if (!job)
                return;
            int64_t left = e->access_token ? e->access_expires_at - now_s : 0;
            /* still valid: better than an error, unless the request named a min_valid it does not
             * meet; that caller was promised a token lasting so long, and may hold it for a job */
            if (!forced && left > 0 && (!job->min_valid_asked || e->access_expires_at >= valid_until)) {
                reply_token (w, job, e, 0);
                return;
            }
            char hint [300];
            hint [0] = '\0';
            if (!forced && left > 0)
                snprintf (hint, sizeof hint, "the current access token expires in %lld s, sooner than the %lld s "
                          "min_valid asks, and it cannot be refreshed for now: a request with a min_valid of at "
                          "most %lld gets it", (long long) left, (long long) job->min_valid, (long long) left);
            reply_error (w, job, code, message, hint [0] ? hint : NULL,
                         code == FR_PROVIDER_UNAVAILABLE || code == FR_PROVIDER_BAD_RESPONSE ? retry : -1);
            return;
        }
    }
    job_t *copy = job ? waiter_new (job, require_scopes) : NULL;
    if (r) {
        if (copy)
            refresh_add_waiter (r, copy, now_ms);
        if (valid_until > r->valid_until)
            r->valid_until = valid_until;
        return;
    }
    r = mem_alloc (sizeof *r);
    r->w = w;
    r->started_us = clock_mono_us ();
    r->entry = e;
    r->answer_ms = INT64_MAX;
    if (copy)
        refresh_add_waiter (r, copy, now_ms);
    r->background = job == NULL;
    r->forced = forced;
    r->known_generation = e->generation;
    r->valid_until = valid_until;
    r->state = REFRESH_CLAIMING;             /* the first state: set, not a transition */
    r->next = w->refreshes;
    w->refreshes = r;
    e->refresh = r;
    refresh_claim_soon (r);
}

const char *
refresh_refused_hint (const char *why)
{
    if (why && strstr (why, REFRESH_INTERRUPTED_WORDS))
        return "unless the worker that was refreshing it is still running (stalled, or cut off from the database: "
               "it commits the new token when it can, and the integration recovers), the user must reconnect: "
               "disconnect the integration, then connect it again";
    return "the provider no longer accepts the stored refresh token (revoked, expired, or used twice): "
           "disconnect the integration, then connect it again";
}

void
refresh_join (worker_t *w, cache_entry_t *e, const job_t *job, const char *require_scopes)
{
    refresh_start (w, e, job, require_scopes, clock_wall_ms () / 1000 + job->min_valid, job->forced);
}

void
refresh_background (worker_t *w, cache_entry_t *e, int64_t valid_until, int forced)
{
    if (!e->refresh)
        refresh_start (w, e, NULL, NULL, valid_until, forced);
}

/* A token found fresh by a claim sent for claimed_until (epoch s) that does not last what r's
 * waiters need now: one joined after the claim was sent, with a longer min_valid. A forced
 * refresh is settled by a newer generation, but only one whose token lasts too: a row another
 * worker committed from an unusable answer holds an empty token, already expired. */
static int
refresh_fresh_too_short (const refresh_t *r, const cache_entry_t *e, int64_t claimed_until)
{
    return r->valid_until > claimed_until
        && !(e->access_token && e->access_expires_at >= r->valid_until);
}

/* Takes a decrypted access token from a row into the cache entry. */
static fr_status_t
refresh_adopt_row (worker_t *w, cache_entry_t *e, const store_row_t *row, char *err, size_t errlen)
{
    char *plain = NULL;
    if (row->access_ct) {
        fr_status_t st = crypto_open (w->keyring, row->key_id, e->id, "access_token", row->access_ct,
                                      row->access_ct_len, &plain, err, errlen);
        if (st != FR_OK)
            return st;
    }
    cache_set_api_base_url (e, row->api_base_url);    /* first: the token's reply carries it */
    cache_set_token (e, plain, row->access_expires_at, row->generation);
    /* the lifetime the provider gave this token (the refresh's, the code exchange's or the
     * import's expires_in), so that refresh-ahead is sized by the token itself */
    e->lifetime_s = (int32_t) row->access_lifetime_s;
    cache_set_provider (w->cache, e, row->provider);
    cache_set_text (&e->scopes, row->scopes);
    e->status = (uint8_t) cache_status_from_text (row->status);
    cache_set_text (&e->inactive_why, e->status != INTEG_ACTIVE ? row->last_error_message : NULL);
    e->refresh_token_missing = (uint8_t) row->refresh_token_missing;
    mem_free_secret (&plain);
    return FR_OK;
}

/* A row read from the database into the cache, replacing a stale entry. A stale entry's
 * backoff (cache_clear keeps it) goes on while the row is the one that failed: a reconnection
 * must not let every integration that backs off call its provider at once. */
static cache_entry_t *
refresh_cache_row (worker_t *w, const char *id, const store_row_t *row, fr_status_t *st, char *err, size_t errlen)
{
    cache_entry_t *e = cache_get (w->cache, id);
    int64_t backoff_until_ms = 0;
    uint8_t failures = 0, backoff_code = 0, backoff_local = 0, rejected = 0;
    if (e && !e->refresh) {
        if (e->failures && e->generation == row->generation) {
            failures = e->failures;
            backoff_until_ms = e->backoff_until_ms;
            backoff_code = e->backoff_code;
            backoff_local = e->backoff_local;
        }
        /* a token rejected here stays unserved while the row, of the same generation, has not
         * taken the rejection's needs_reconnect (its write pending, or failed) */
        rejected = e->rejected && e->generation == row->generation;
        e->rejected = 0;
        cache_drop (w->cache, id);
        e = NULL;
    }
    if (!e) {
        e = cache_put (w->cache, id);
        e->failures = failures;
        e->backoff_until_ms = backoff_until_ms;
        e->backoff_code = backoff_code;
        e->backoff_local = backoff_local;
    }
    *st = refresh_adopt_row (w, e, row, err, errlen);
    if (*st != FR_OK) {
        if (!e->refresh)
            cache_drop (w->cache, id);
        return NULL;
    }
    if (rejected && e->status == INTEG_ACTIVE)
        cache_reject_token (e);
    e->stale = 0;
    return e;
}

cache_entry_t *
refresh_loaded (worker_t *w, const char *id, const store_row_t *row, fr_status_t *st, char *err, size_t errlen)
{
    cache_entry_t *e = cache_get (w->cache, id);
    *st = FR_OK;
    if (e && (!e->stale || e->refresh))
        return e;                /* read in already, by a request parked on the same row before */
    return refresh_cache_row (w, id, row, st, err, errlen);
}

static void
refresh_on_response (void *arg, const http_response_t *resp);

/* Step 1: claim, at the end of this loop turn with every other claim of the turn (one
 * transaction, one round trip, one WAL flush for them all). */
static void
refresh_claim_soon (refresh_t *r)
{
    r->due_ms = clock_mono_ms ();
}

/* Step 1, the claim's answer (the claims of a loop turn go to the database together, see
 * refresh_claim_due): use a fresh token, wait for a busy lease, or call the provider. */
static void record_start (worker_t *w, store_t *store, void *arg);

static void
record_free (failure_record_t *rec)
{
    mem_free (rec->message);
    mem_free (rec->hint);
    mem_free (rec);
}

/* The invalid_grant's refresh, once its record is in (or could not be written: then it is taken
 * as current, as the provider said). */
static void
record_settle (worker_t *w, refresh_t *r, failure_record_t *rec, int stale)
{
    cache_entry_t *e = r->entry;
    r->queued = NULL;
    if (stale && rec->superseded_claims) {
        /* the refresh token was replaced while we called: this rejection says nothing about the
         * integration; claim again and find the new token */
        log_info (e->id, NULL, "invalid_grant was for a superseded refresh token; claiming again");
        refresh_set_state (r, REFRESH_CLAIMING);
        r->known_generation = r->expected_generation;
        r->forced = 0;
        refresh_claim_soon (r);
        return;
    }
    if (rec->new_status && !stale && cache_set_status (e, cache_status_from_text (rec->new_status)) == 0
    &&  e->status != INTEG_ACTIVE)
        cache_set_text (&e->inactive_why, rec->message);
    refresh_finish_error (w, r, rec->st, rec->message, rec->hint, rec->retry_after);
}

static void
record_done (void *arg, fr_status_t st, int stale, const char *err)
{
    failure_record_t *rec = arg;
    worker_t *w = rec->w;
    int again = st == FR_DATABASE_UNAVAILABLE && rec->tries < RECORD_TRIES;
    int64_t retry_ms = (int64_t) RECORD_RETRY_MS << (rec->tries > 0 ? rec->tries - 1 : 0);
    char when [64] = "";
    /* a row lock, a deadlock, a statement timeout: not said as an outage; but the retry starts
     * only on a connection that is up (dbwait_add_later), so with none it waits for that */
    if (again) {
        if (dbwait_any_connected (w))
            snprintf (when, sizeof when, " (tried again in %lld ms)", (long long) retry_ms);
        else
            snprintf (when, sizeof when, " (tried again once the database is back)");
    }
    if (st != FR_OK)
        log_warning (rec->id, NULL, "could not record the failed refresh%s: %s", when, err);
    if (rec->r)
        record_settle (w, rec->r, rec, st == FR_OK && stale);
    rec->r = NULL;
    if (again)
        dbwait_add_later (w, record_start, rec, clock_mono_ms () + retry_ms);
    else
        record_free (rec);
}

static void
record_start (worker_t *w, store_t *store, void *arg)
{
    failure_record_t *rec = arg;
    char err [256];
    fr_status_t st;
    if (!store && dbwait_stopping (w)) {
        rec->tries = RECORD_TRIES;
        record_done (rec, FR_UNAVAILABLE, 0, "not recorded: the worker is stopping");
        return;
    }
    if (!store) {
        /* no connection was free for RECORD_WAIT_MS: the caller is answered now, as after a record
         * that failed, and the record waits, without a deadline, for a connection that is up */
        if (rec->r)
            record_settle (w, rec->r, rec, 0);
        rec->r = NULL;
        dbwait_add (w, record_start, rec, -1);
        return;
    }
    rec->tries++;
    store_failure_t f = { rec->id, rec->expected_generation, rec->lease_token, rec->outcome, rec->new_status,
                          rec->error_code, rec->message, NULL };
    if ((st = store_record_failure_start (store, &f, record_done, rec, err, sizeof err)) != FR_OK)
        record_done (rec, st, 0, err);
}

/* Records r's failed attempt (a chain row, last_error, the lease released); r is answered with
 * st, message, hint and retry_after once it is in (RECORDING). */
static void
refresh_record_failure (worker_t *w, refresh_t *r, const char *outcome, const char *new_status, fr_status_t st,
                        const char *message, const char *hint, int64_t retry_after, int superseded_claims)
{
    failure_record_t *rec = mem_alloc (sizeof *rec);
    memset (rec, 0, sizeof *rec);
    rec->w = w;
    snprintf (rec->id, sizeof rec->id, "%s", r->entry->id);
    rec->expected_generation = r->expected_generation;
    snprintf (rec->lease_token, sizeof rec->lease_token, "%s", r->lease_token);
    rec->outcome = outcome;
    rec->new_status = new_status;
    rec->error_code = result_code (st);
    rec->message = mem_strdup (message);
    rec->hint = mem_strdup (hint);
    rec->st = st;
    rec->retry_after = retry_after;
    rec->superseded_claims = superseded_claims;
    rec->r = r;
    r->queued = &rec->r;
    r->recording = outcome;
    /* not r->called, which counts every round: a round after an invalid_grant found stale can
     * fail before its own call */
    r->recording_answered = r->state != REFRESH_CLAIMING;
    refresh_set_state (r, REFRESH_RECORDING);
    dbwait_add (w, record_start, rec, clock_mono_ms () + RECORD_WAIT_MS);
}

/* A lease given back untouched (the call it was taken for never went out). */
typedef struct {
    char id [IDENT_MAX + 1];
    char lease_token [STORE_LEASE_LEN + 1];
} lease_release_t;

static void
lease_released (void *arg, fr_status_t st, const char *err)
{
    lease_release_t *rel = arg;
    if (st != FR_OK)
        log_warning (rel->id, NULL, "could not release the lease (it expires by itself): %s", err);
    mem_free (rel);
}

static void
lease_release_start (worker_t *w, store_t *store, void *arg)
{
    lease_release_t *rel = arg;
    char err [256];
    fr_status_t st;
    (void) w;
    if (!store) {
        mem_free (rel);
        return;
    }
    if ((st = store_release_lease_start (store, rel->id, rel->lease_token, lease_released, rel, err, sizeof err))
        != FR_OK)
        lease_released (rel, st, err);
}

/* "what: err" for refresh r, at most once a second per kind of failure (lr), with the count of
 * the lines held back since; attempt: the commit's attempt (0: a claim, which is not retried). A
 * database that refuses every write fails each refresh in flight and each retry of its commit:
 * thousands of lines in a minute, where the first says what is wrong and the count says how
 * often. The refreshes themselves are unchanged (retried, their tokens kept). */
static void
refresh_say_failed (lograte_t *lr, refresh_t *r, const char *what, unsigned attempt, fr_status_t st, const char *err)
{
    uint64_t held;
    if (!lograte_take (lr, clock_mono_ms (), &held))
        return;
    char tries [48] = "", more [96] = "";
    if (attempt)
        snprintf (tries, sizeof tries, " (attempt %u), will retry", attempt);
    if (held)
        snprintf (more, sizeof more, " (and %llu more since the last line)", (unsigned long long) held);
    if (st == FR_DATABASE_UNAVAILABLE || !attempt)
        log_warning (r->entry->id, attempt ? NULL : rid_of (r), "%s%s: %s%s", what, tries, err, more);
    else
        log_error (r->entry->id, NULL, "%s%s: %s%s", what, tries, err, more);
}

/* The counts of claim and commit failures held back that no line has carried for a second after
 * theirs ended. While failures go on, the next failure's own line carries the count, with the
 * integration and the error; only when they stop does a summary say it. */
static void
refresh_say_held (worker_t *w, int64_t now_ms)
{
    now_ms -= LOGRATE_INTERVAL_MS;
    uint64_t n = lograte_due (&w->claim_fail_log, now_ms);
    if (n)
        log_warning (NULL, NULL, "%llu more refreshes could not be claimed since the last line", (unsigned long long) n);
    n = lograte_due (&w->group_fail_log, now_ms);
    if (n)
        log_warning (NULL, NULL, "%llu more group commits failed since the last line", (unsigned long long) n);
    n = lograte_due (&w->commit_fail_log, now_ms);
    if (n)
        log_warning (NULL, NULL, "%llu more refresh commits failed since the last line; each is retried, its tokens "
                     "kept in memory and in the journal", (unsigned long long) n);
    n = lograte_due (&w->wait_answer_log, now_ms);
    if (n)
        log_warning (NULL, NULL, "%llu more requests answered timeout before their deadlines since the last line, "
                     "their refreshes still waiting", (unsigned long long) n);
}

/* 1 when the integration's last refresh failed at its provider (no answer, a 5xx or 429, an
 * answer that could not be read), and no refresh has succeeded since. */
static int
refresh_failing_at_provider (const cache_entry_t *e)
{
    return e->failures > 0 && !e->backoff_local
        && (e->backoff_code == FR_PROVIDER_UNAVAILABLE || e->backoff_code == FR_PROVIDER_BAD_RESPONSE);
}

/* A failed refresh holds the integration's next provider call back: exponential backoff with
 * jitter, never shorter than the provider's Retry-After (retry_after_s, < 0 none); code is what
 * callers are told meanwhile, local whether it failed before the provider was called. The delay. */
static int64_t
refresh_back_off (worker_t *w, cache_entry_t *e, fr_status_t code, int64_t retry_after_s, int local)
{
    int shift = e->failures < 16 ? e->failures : 16;
    int64_t delay = 0;
    if (w->cfg.backoff_base_ms > 0) {
        delay = w->cfg.backoff_base_ms << shift;
        if (delay > w->cfg.backoff_max_ms || delay <= 0)
            delay = w->cfg.backoff_max_ms;
        delay = delay / 2 + random () % (delay / 2 + 1);
    }
    if (retry_after_s > 0 && retry_after_s * 1000 > delay)
        delay = retry_after_s * 1000;
    if (e->failures < 255)
        e->failures++;
    e->backoff_until_ms = clock_mono_ms () + delay;
    e->backoff_code = (uint8_t) code;
    e->backoff_local = (uint8_t) local;
    return delay;
}

static void
refresh_claimed (worker_t *w, refresh_t *r, store_claim_req_t *q)
{
    cache_entry_t *e = r->entry;
    char err [512];
    store_row_t row = q->row;                /* ours now: cleared below */
    store_claim_t outcome = q->outcome;
    oauth_request_t *req = NULL;
    int64_t retry_after = 0;
    fr_status_t st = q->st;

    memset (&q->row, 0, sizeof q->row);
    snprintf (err, sizeof err, "%s", q->err);
    if (st != FR_OK) {
        if (st == FR_NOT_FOUND)
            e->stale = 1;
        refresh_say_failed (&w->claim_fail_log, r, "could not claim the refresh", 0, st, err);
        refresh_finish_error (w, r, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        return;
    }
    if (outcome != CLAIM_LOCKED)
        r->locked_since_ms = 0;
    r->busy_owner [0] = '\0';               /* set again below while a holder's lease is live */
    switch (outcome) {
        case CLAIM_LOCKED: {
            /* another session holds the row: never wait for it inside the loop */
            int64_t now = clock_mono_ms ();
            if (!r->locked_since_ms)
                r->locked_since_ms = now;
            if (!r->waiters)
                refresh_free (w, r);
            else
            if (now - r->locked_since_ms >= LOCKED_GIVE_UP_MS) {
                snprintf (err, sizeof err, "integration \"%s\" is locked by another database session", e->id);
                log_warning (e->id, rid_of (r), "%s; answering the waiters", err);
                refresh_finish_error (w, r, FR_DATABASE_UNAVAILABLE, err, LOCKED_HINT, 1);
            }
            else {
                refresh_set_state (r, REFRESH_CLAIMING);
                r->due_ms = now + BUSY_RETRY_MS;
            }
            return;
        }
        case CLAIM_INACTIVE: {
            st = refresh_adopt_row (w, e, &row, err, sizeof err);
            if (st != FR_OK) {
                /* the entry holds a status and a token the row no longer has: dropped with the
                 * refresh (stale), so the next request reads the row and meets the same failure */
                char message [768];
                snprintf (message, sizeof message, "integration \"%s\" is %s, and its stored access token could not "
                          "be decrypted: %s", e->id, row.status ? row.status : "inactive", err);
                log_error (e->id, rid_of (r), "%s", message);
                e->stale = 1;
                store_row_clear (&row);
                refresh_finish_error (w, r, st, message, "check FERRULE_ENCRYPTION_KEY and "
                                      "FERRULE_ENCRYPTION_OLD_KEYS: every key that sealed a stored value must be "
                                      "among them", -1);
                return;
            }
            fr_status_t code = e->status == INTEG_DISCONNECTED ? FR_DISCONNECTED : FR_NEEDS_RECONNECT;
            snprintf (err, sizeof err, "integration \"%s\" is %s%s%s", e->id, cache_status_text (e->status),
                      row.last_error_message ? ": " : "", row.last_error_message ? row.last_error_message : "");
            const char *hint = code == FR_NEEDS_RECONNECT && !e->refresh_token_missing
                             ? refresh_refused_hint (row.last_error_message) : NULL;
            refresh_finish_error (w, r, code, err, hint, -1);
            store_row_clear (&row);
            return;
        }
        case CLAIM_FRESH:
            st = refresh_adopt_row (w, e, &row, err, sizeof err);
            store_row_clear (&row);
            if (st == FR_OK && refresh_fresh_too_short (r, e, q->valid_until)) {
                /* fresh for the claim as sent, not for a waiter that joined since with a longer
                 * min_valid: claim again for that one */
                log_debug (e->id, rid_of (r), "the stored token is fresh, but not for a waiter that joined the claim "
                           "later; claiming again");
                refresh_set_state (r, REFRESH_CLAIMING);
                refresh_claim_soon (r);
                return;
            }
            log_debug (e->id, rid_of (r), "another worker already refreshed (generation %lld)",
                       (long long) e->generation);
            if (st != FR_OK)
                refresh_finish_error (w, r, st, err, NULL, -1);
            else
                refresh_finish_ok (w, r);
            return;
        case CLAIM_BUSY: {
            if (!r->waiters) {           /* a background refresh: whoever holds the lease is doing it */
                store_row_clear (&row);
                refresh_free (w, r);
                return;
            }
            metrics_inc (w->m.lease_waits);
            snprintf (r->busy_owner, sizeof r->busy_owner, "%s", row.lease_owner ? row.lease_owner : "?");
            r->busy_until_ms = clock_mono_ms () + row.lease_ms_left;
            int64_t wait = row.lease_ms_left < BUSY_RETRY_MS ? row.lease_ms_left + 1 : BUSY_RETRY_MS;
            log_debug (e->id, rid_of (r), "refresh lease held by \"%s\" for %lld ms more; waiting",
                       row.lease_owner ? row.lease_owner : "?", (long long) row.lease_ms_left);
            store_row_clear (&row);
            refresh_set_state (r, REFRESH_CLAIMING);
            r->due_ms = clock_mono_ms () + wait;
            return;
        }
        case CLAIM_ACQUIRED:
            break;
    }

    /* Step 2: the lease is ours until lease_ms passes; call the provider. */
    snprintf (r->lease_token, sizeof r->lease_token, "%s", row.lease_token);
    r->interrupted = row.interrupted;
    if (row.interrupted)
        log_warning (e->id, rid_of (r), "an earlier refresh of generation %lld was interrupted; refreshing now",
                     (long long) row.generation);
    r->expected_generation = row.generation;
    cache_set_provider (w->cache, e, row.provider);
    cache_set_text (&e->scopes, row.scopes);    /* the grant refreshed: a stale entry's may be older */
    r->provider = catalog_find (w->catalog, row.provider);
    fr_status_t fail = FR_OK;
    int allowed = 0;                    /* breaker_allow let this call through (2: as the probe) */
    if (!r->provider) {
        snprintf (err, sizeof err, "integration \"%s\" uses provider \"%s\", which is not in the catalog",
                  e->id, row.provider);
        fail = FR_CONFIGURATION;
    }
    else
    if ((fail = catalog_check_credentials (r->provider, err, sizeof err)) != FR_OK)
        ;
    else
    if (!(allowed = breaker_allow (w->breaker, r->provider->name, clock_mono_ms (), &retry_after))) {
        /* another integration's call is the half-open probe: give the lease back untouched */
        lease_release_t *rel = mem_alloc (sizeof *rel);
        snprintf (rel->id, sizeof rel->id, "%s", e->id);
        snprintf (rel->lease_token, sizeof rel->lease_token, "%s", row.lease_token);
        dbwait_add (w, lease_release_start, rel, -1);
        snprintf (err, sizeof err, "provider \"%s\" is failing for many integrations; calls resume in %lld s",
                  r->provider->name, (long long) retry_after);
        store_row_clear (&row);
        refresh_finish_error (w, r, FR_PROVIDER_UNAVAILABLE, err, NULL, retry_after);
        return;
    }
    else
    if (w->draining && clock_mono_ms () + refresh_drain_budget (w) > w->drain_until_ms) {
        /* a call that may outlast the drain, with the commit of its answer, is not started: the
         * process would exit with it in flight, and an answer that rotated the token would never
         * be read (the provider has spent the one the row holds), or be left in the journal
         * alone. The lease goes back; the client asks again, and the brokers send it to the
         * partition's next owner. */
        lease_release_t *rel = mem_alloc (sizeof *rel);
        snprintf (rel->id, sizeof rel->id, "%s", e->id);
        snprintf (rel->lease_token, sizeof rel->lease_token, "%s", row.lease_token);
        dbwait_add (w, lease_release_start, rel, -1);
        if (allowed == 2)
            breaker_unused (w->breaker, r->provider->name);
        snprintf (err, sizeof err, "worker \"%s\" is shutting down and starts no provider call it might not finish",
                  w->cfg.worker_id);
        log_info (e->id, rid_of (r), "no refresh started: the drain ends in %lld ms, and a provider call may take %lld "
                  "ms and its commit %lld ms more; the lease is given back",
                  (long long) (w->drain_until_ms - clock_mono_ms ()), (long long) w->cfg.http_timeout_ms,
                  (long long) (refresh_drain_budget (w) - w->cfg.http_timeout_ms));
        store_row_clear (&row);
        refresh_finish_error (w, r, FR_UNAVAILABLE, err, "ask again: another worker takes the integration over",
                              1);
        return;
    }
    else
    if ((fail = crypto_open (w->keyring, row.key_id, e->id, "refresh_token", row.refresh_ct,
                             row.refresh_ct_len, &r->refresh_token, err, sizeof err)) != FR_OK)
        ;
    else
    if (!(req = oauth_refresh_request_new (r->provider, r->refresh_token))) {
        snprintf (err, sizeof err, "could not build the refresh request for provider \"%s\"", row.provider);
        fail = FR_CONFIGURATION;
    }
    else
    /* on a kept connection, even for a token that rotates: a refresh whose answer is lost is sent
     * again whatever the connection (the worker's next refresh sends the token the row still
     * holds), and curl's own resend, at once, is the one that still gets the tokens at a provider
     * with a grace period for a spent token (unlike a code exchange, http_send_t) */
    if (http_post (w->http, req->url, req->body, req->authorization, HTTP_IDEMPOTENT, refresh_on_response, r) != 0) {
        snprintf (err, sizeof err, "could not start the provider call");
        fail = FR_INTERNAL;
    }
    oauth_request_destroy (&req);
    r->probe = allowed == 2;            /* its answer comes later, from http_process */
    /* the stored fingerprint of the token the call spends, as the database has it: failover_keep */
    snprintf (r->spent, sizeof r->spent, "%s", row.refresh_fingerprint ? row.refresh_fingerprint : "");
    store_row_clear (&row);
    if (fail != FR_OK) {
        /* a call let through that never went out: if it was the half-open probe, the next is
         * (else the circuit stays half-open for good, refusing every call to the provider) */
        if (allowed == 2)
            breaker_unused (w->breaker, r->provider->name);
        log_error (e->id, rid_of (r), "could not refresh integration \"%s\": %s", e->id, err);
        /* what failed here (the catalog, the credentials, the stored token's key, the call's
         * start) stays failed until an operator acts: without a backoff every request took the
         * lease and wrote a chain row, last_error and a notification */
        refresh_back_off (w, e, fail, -1, 1);
        refresh_record_failure (w, r, fail == FR_CONFIGURATION ? "configuration" : "error", NULL, fail, err, NULL,
                                -1, 0);
        return;
    }
    refresh_set_state (r, REFRESH_CALLING);
    r->called = 1;
    r->call_started_ms = clock_mono_ms ();
    metrics_observe (w->m.phase_claim, (double) (clock_mono_us () - r->started_us) / 1e6);
    log_debug (e->id, rid_of (r), "calling provider \"%s\" (generation %lld)", r->provider->name,
               (long long) r->expected_generation);
}

/* Step 4: the compare-and-set commit, in the turn's batch (refresh_send_batch), or alone when it
 * is retried (refresh_send_alone). Every failure other than a lost compare-and-set is retried: a
 * read-only server after a failover, a full disk, a lock or statement timeout, a deadlock all
 * pass, and the provider has already spent the refresh token these tokens replaced. */

/* The commit is stored: answer everyone. */
static void
refresh_committed (worker_t *w, refresh_t *r)
{
    cache_entry_t *e = r->entry;
    /* a failover could still lose it: kept in memory, and its record on disk while kept */
    if (r->commit.rotated)
        failover_commit_settled (w, &r->commit, r->spent, r->journal_seq);
    else
    if (r->journal_seq > 0)
        journal_done (w->journal, r->journal_seq);
    r->journal_seq = 0;
    if (r->answered_us)
        metrics_observe (w->m.phase_commit, (double) (clock_mono_us () - r->answered_us) / 1e6);
    if (r->api_base_url)
        cache_set_api_base_url (e, r->api_base_url);    /* an answer without one keeps the stored one */
    cache_set_token (e, r->access_plain, r->commit.access_expires_at, r->expected_generation + 1);
    e->refreshed_ms = clock_mono_ms ();
    e->lifetime_s = (int32_t) r->commit.access_lifetime_s;
    if (!r->unusable) {
        e->failures = 0;
        e->backoff_until_ms = 0;         /* an unusable answer keeps its backoff */
    }
    if (r->scopes)
        cache_set_text (&e->scopes, r->scopes);
    cache_set_status (e, INTEG_ACTIVE);
    log_info (e->id, rid_of (r), "refreshed: generation %lld, refresh token %s%s%s",
              (long long) e->generation, r->commit.rotated ? "rotated" : "kept",
              r->unusable ? ", no access token (the provider's was unusable)" : "",
              r->commit_failures ? " (committed after the database came back)" : "");
    if (r->unusable)
        refresh_finish_error (w, r, FR_PROVIDER_BAD_RESPONSE, r->unusable, NULL, r->unusable_retry);
    else
        refresh_finish_ok (w, r);
}

/* A refresh whose commit lost its compare-and-set starts a new round from its claim: what the
 * last round sealed and would have committed is dropped. */
static void
refresh_round_reset (refresh_t *r)
{
    mem_free_secret (&r->access_plain);
    mem_free (r->access_ct);
    mem_free (r->refresh_ct);
    mem_free (r->scopes);
    mem_free (r->api_base_url);
    mem_free (r->unusable);
    r->access_ct = r->refresh_ct = NULL;
    r->scopes = NULL;
    r->api_base_url = NULL;
    r->unusable = NULL;
    memset (&r->commit, 0, sizeof r->commit);
    memset (r->fingerprint, 0, sizeof r->fingerprint);
    r->lease_token [0] = '\0';
    r->commit_failures = 0;
    r->answered_us = 0;
    r->claim_resent = r->claim_alone = r->commit_resent = 0;
    r->locked_since_ms = 0;
}

/* A lost compare-and-set being recorded (a "conflict" chain row, the lease released if it is
 * still this refresh's) and the stored row read (dbwait.c, then one batch). The record carries
 * its own copy of what it writes: a record the database could not take is tried again after the
 * refresh has been answered, so that the chain shows the conflict and the lease does not wait
 * for its expiry. */
typedef struct {
    refresh_t *r;                    /* the refresh waiting for it; cleared once it is answered, or
                                      * if it is freed first */
    worker_t *w;
    char id [IDENT_MAX + 1];
    char lease_token [STORE_LEASE_LEN + 1];
    char fingerprint [CRYPTO_FINGERPRINT_LEN + 1];
    int rotated;
    int tries;
    int64_t expected_generation;
    /* the refresh token this refresh sealed to keep (rotated or not): the row holding these very
     * bytes holds this commit's own result (CONFLICT_SQL). A rotated one is also kept for a
     * revocation if the row turns out disconnected (disconnect_revoke_orphan), and its journal
     * record settled only once that is decided. */
    int64_t journal_seq;
    const catalog_provider_t *provider;
    int32_t key_id;
    unsigned char *refresh_ct;
    size_t refresh_ct_len;
    char rid [sizeof ((job_t *) 0)->rid];
    /* a rotated commit's copy, kept against a failover if the row turns out to hold its token (an
     * earlier attempt landed, its answer lost), which a read tried again finds after the refresh
     * is gone */
    store_commit_t *commit;
    char spent [CRYPTO_FINGERPRINT_LEN + 1];
} conflict_wait_t;

static void
conflict_free (conflict_wait_t *cw)
{
    mem_free (cw->refresh_ct);
    if (cw->commit)
        mem_free_wiped (cw->commit);
    mem_free (cw);
}

/* Answers r from the stored row that the conflict's batch read (or with its failure). */
static void
conflict_settle (refresh_t *r, fr_status_t st, const store_row_t *row, const char *err)
{
    char why [512];
    r->queued = NULL;
    cache_entry_t *e = r->entry;
    if (st == FR_OK && (st = refresh_adopt_row (r->w, e, row, why, sizeof why)) != FR_OK)
        err = why;
    if (st != FR_OK)
        refresh_finish_error (r->w, r, st, err, NULL, -1);
    else
    if (e->status != INTEG_ACTIVE)      /* a disconnect overtook it: see conflict_read */
        refresh_finish_error (r->w, r, e->status == INTEG_DISCONNECTED ? FR_DISCONNECTED : FR_NEEDS_RECONNECT,
                              "the integration changed while it was being refreshed", NULL, -1);
    else
    if (!e->access_token || refresh_fresh_too_short (r, e, 0)) {
        /* what the winner stored does not last as long as the waiters need, or holds no access
         * token at all (an import of a refresh token alone): claim again */
        refresh_round_reset (r);
        refresh_set_state (r, REFRESH_CLAIMING);
        r->known_generation = e->generation;
        refresh_claim_soon (r);
    }
    else
        refresh_finish_ok (r->w, r);
}

static void conflict_start (worker_t *w, store_t *store, void *arg);

static void
conflict_read (void *arg, fr_status_t st, const store_row_t *row, const char *err)
{
    conflict_wait_t *cw = arg;
    /* a rotated token's fate (kept by nobody, or revoked because a disconnect overtook it) is the
     * row's to decide: with one, the record is tried for as long as the database is away, its
     * journal record kept meanwhile (it was given up after RECORD_TRIES, the journal record
     * settled and the token left valid at the provider for good: it_connect) */
    int until_in = cw->rotated && cw->refresh_ct;
    /* any other failure too, RECORD_TRIES times, for a rotated token: its journal record was
     * settled unread after one (a statement error, the row not found) */
    int again = (st == FR_DATABASE_UNAVAILABLE && (cw->tries < RECORD_TRIES || until_in))
             || (st != FR_OK && until_in && cw->tries < RECORD_TRIES);
    if (st != FR_OK)
        log_warning (cw->id, NULL, "could not record the lost compare-and-set%s: %s",
                     again ? " (tried again shortly)" : "", err);
    else
    if (cw->commit && cw->rotated && row->refresh_fingerprint && strcmp (row->refresh_fingerprint, cw->fingerprint) == 0) {
        log_info (cw->id, NULL, "the row holds this refresh's own token: its commit had landed before the connection "
                  "was lost (no conflict recorded)");
        /* a commit like any other (refresh_committed): a failover can still lose it */
        failover_commit_settled (cw->w, cw->commit, cw->spent, cw->journal_seq);
        cw->journal_seq = 0;
    }
    else
    if (!cw->rotated && cw->refresh_ct && row->refresh_ct && row->refresh_ct_len == cw->refresh_ct_len
    &&  memcmp (row->refresh_ct, cw->refresh_ct, cw->refresh_ct_len) == 0)
        log_info (cw->id, NULL, "the row holds this refresh's own result: its commit had landed before the connection "
                  "was lost (no conflict recorded)");
    if (cw->r)
        conflict_settle (cw->r, st, row, err);
    cw->r = NULL;
    if (again) {
        unsigned shift = cw->tries > 6 ? 6 : (unsigned) cw->tries - 1;
        int64_t delay = (int64_t) RECORD_RETRY_MS << shift;
        dbwait_add_later (cw->w, conflict_start, cw,
                          clock_mono_ms () + (delay > RECORD_RETRY_MAX_MS ? RECORD_RETRY_MAX_MS : delay));
        return;
    }
    /* A disconnect overtook the refresh: the provider's new refresh token is nobody's now. Only
     * then: a revocation at some providers (Google) ends the whole grant. Decided here, where the
     * row is read even after the refresh was answered; the journal keeps the token until the
     * revocation has an outcome, so that a crash meanwhile does not leave it valid. */
    if (st == FR_OK && cw->rotated && row->status && strcmp (row->status, "disconnected") == 0)
        disconnect_revoke_orphan (cw->w, cw->id, cw->provider, cw->key_id, cw->refresh_ct, cw->refresh_ct_len,
                                  cw->rid [0] ? cw->rid : NULL, cw->journal_seq, "a refresh");
    else
    if (st != FR_OK && cw->journal_seq > 0)
        /* the row was never read: whether the token is anyone's is undecided, so its record stays
         * outstanding, and the next start's replay decides (recovery.c) */
        log_error (cw->id, NULL, "gave up recording the lost compare-and-set: the rotated refresh token stays in the "
                   "journal, and the worker's next start decides its fate");
    else
    if (cw->journal_seq > 0)
        journal_done (cw->w->journal, cw->journal_seq);
    conflict_free (cw);
}

static void
conflict_start (worker_t *w, store_t *store, void *arg)
{
    conflict_wait_t *cw = arg;
    char err [256];
    fr_status_t st;
    if (!store && dbwait_stopping (w)) {
        if (cw->r)
            conflict_settle (cw->r, FR_UNAVAILABLE, NULL, "the stored tokens were not read: the worker is stopping");
        conflict_free (cw);             /* its journal record, if any, is replayed at the next start */
        return;
    }
    if (!store) {
        /* no connection was free for RECORD_WAIT_MS: the waiters are answered now, and the record
         * waits, without a deadline, for a connection that is up */
        if (cw->r)
            conflict_settle (cw->r, FR_DATABASE_UNAVAILABLE, NULL,
                             "the stored tokens were not read: no database connection was free for 30 s");
        cw->r = NULL;
        dbwait_add_later (w, conflict_start, cw, 0);
        return;
    }
    cw->tries++;
    store_commit_t c;
    memset (&c, 0, sizeof c);
    c.id = cw->id;
    memcpy (c.lease_token, cw->lease_token, sizeof c.lease_token);
    c.refresh_fingerprint = cw->fingerprint;
    c.rotated = cw->rotated;
    c.expected_generation = cw->expected_generation;
    c.refresh_ct = cw->refresh_ct;
    c.refresh_ct_len = cw->refresh_ct_len;
    if ((st = store_conflict_start (store, &c, conflict_read, cw, err, sizeof err)) != FR_OK)
        conflict_read (cw, st, NULL, err);
}

/* The compare-and-set was lost: someone committed first (or this very commit, before a connection
 * was lost and it was sent again). Its tokens are not stored; the stored ones are served. */
static void
refresh_conflicted (worker_t *w, refresh_t *r)
{
    if (r->answered_us)
        metrics_observe (w->m.phase_commit, (double) (clock_mono_us () - r->answered_us) / 1e6);
    if (r->commit_resent)
        log_info (r->entry->id, NULL, "the commit of generation %lld, sent again after its connection was lost, found "
                  "the row changed; reading what is stored (it may be this commit's own)",
                  (long long) r->expected_generation);
    else
        log_warning (r->entry->id, NULL, "refresh of generation %lld lost to a concurrent change (a refresh, an import, a "
                     "disconnect); reading what it stored",
                     (long long) r->expected_generation);
    conflict_wait_t *cw = mem_alloc (sizeof *cw);
    memset (cw, 0, sizeof *cw);
    cw->r = r;
    cw->w = w;
    snprintf (cw->id, sizeof cw->id, "%s", r->entry->id);
    memcpy (cw->lease_token, r->commit.lease_token, sizeof cw->lease_token);
    snprintf (cw->fingerprint, sizeof cw->fingerprint, "%s", r->fingerprint);
    cw->rotated = r->commit.rotated;
    cw->expected_generation = r->expected_generation;
    cw->journal_seq = r->journal_seq;   /* the conflict's now (conflict_read) */
    r->journal_seq = 0;
    if (r->refresh_ct) {
        cw->provider = r->provider;
        cw->key_id = r->commit.key_id;
        cw->refresh_ct_len = r->commit.refresh_ct_len;
        cw->refresh_ct = mem_memdup (r->refresh_ct, cw->refresh_ct_len);
    }
    if (rid_of (r))
        snprintf (cw->rid, sizeof cw->rid, "%s", rid_of (r));
    if (cw->rotated) {
        /* any earlier attempt may have landed (a group's connection lost, or one alone's), and a
         * conflict is rare: the copy costs nothing that matters */
        cw->commit = failover_commit_copy (&r->commit);
        snprintf (cw->spent, sizeof cw->spent, "%s", r->spent);
    }
    r->queued = &cw->r;
    refresh_set_state (r, REFRESH_CONFLICTED);
    dbwait_add (w, conflict_start, cw, clock_mono_ms () + RECORD_WAIT_MS);
}

int64_t
refresh_commit_retry_ms (unsigned failures)
{
    unsigned shift = failures > 7 ? 6 : failures > 0 ? failures - 1 : 0;
    int64_t delay = (int64_t) COMMIT_RETRY_MS << shift;
    return delay > COMMIT_RETRY_MAX_MS ? COMMIT_RETRY_MAX_MS : delay;
}

/* Schedules the next commit attempt, after the failure just counted in r->commit_failures. */
static void
refresh_commit_later (refresh_t *r, int64_t now_ms)
{
    refresh_set_state (r, REFRESH_COMMITTING);
    r->due_ms = now_ms + refresh_commit_retry_ms (r->commit_failures);
}

/* A rotated token's record, written: its sync is asked for after this turn's answers
 * (refresh_after_answers), and the time from the provider's answer (answered_us) to the disk is
 * measured then, whether or not the refresh's commit has landed first. */
static void
refresh_journal_wait (worker_t *w, uint64_t mark, int64_t answered_us)
{
    if (w->jwait_n == w->jwait_cap) {
        w->jwait_cap = w->jwait_cap ? 2 * w->jwait_cap : 64;
        w->jwait = mem_realloc (w->jwait, w->jwait_cap * sizeof *w->jwait);
    }
    w->jwait [w->jwait_n++] = (journal_wait_t) { mark, answered_us };
}

/* A rotated token's record into the journal; 0, or -1 when it could not be written (a full
 * disk): the refresh goes on to its commit, and the record is tried again at each failed one. */
static int
refresh_journal (worker_t *w, refresh_t *r, int64_t answered_us)
{
    r->journal_seq = journal_append (w->journal, &r->commit, r->spent);
    if (r->journal_seq < 0) {
        /* each try logs its failure: once a commit retry interval at most (a full disk and no
         * database together would otherwise log every refresh four times a second) */
        r->journal_due_ms = clock_mono_ms () + refresh_commit_retry_ms (r->commit_failures);
        return -1;
    }
    refresh_journal_wait (w, journal_appended (w->journal), answered_us);
    return 0;
}

/* The commit did not reach the database: callers are told now; the tokens stay in memory and
 * in the journal, and the commit is retried. A rotated token the journal could not take when it
 * came is tried there again now: while the commit fails, a crash would otherwise lose it. */
static void
refresh_commit_failed (worker_t *w, refresh_t *r)
{
    if (r->commit.rotated && w->journal && r->journal_seq < 0 && clock_mono_ms () >= r->journal_due_ms
    &&  refresh_journal (w, r, r->answered_us) == 0)
        log_info (r->entry->id, NULL, "the rotated refresh token is journaled now, while its commit is retried");
    for (job_t *j = r->waiters; j; j = j->next)
        reply_error (w, j, FR_DATABASE_UNAVAILABLE, r->unusable
                     ? "the provider answered with a new refresh token but no usable access token, and the database "
                       "did not take it: the refresh token is kept and its commit retried"
                     : "the provider answered but the database did not: the new tokens are kept and the commit retried",
                     NULL, 1);
    while (r->waiters) {
        job_t *j = r->waiters;
        r->waiters = j->next;
        waiter_free (j);
    }
}

/* Step 3 on success: seal, journal when rotated, commit. */
static void
refresh_succeeded (worker_t *w, refresh_t *r, oauth_result_t *res)
{
    cache_entry_t *e = r->entry;
    char err [256];
    int32_t key_id = 0;
    size_t at_len = 0, rt_len = 0;
    const char *keep = res->refresh_token ? res->refresh_token : r->refresh_token;
    int64_t expires_in = res->expires_in >= 0 ? res->expires_in : DEFAULT_EXPIRES_IN;

    if (res->expires_in_ignored)
        log_warning (e->id, NULL, "the provider's expires_in is not a number of seconds from 1 to 10 years: the token "
                     "is taken to last %d s", DEFAULT_EXPIRES_IN);
    /* an odd extra field never fails the refresh: the tokens (maybe a rotated refresh token) are kept */
    if (res->api_base_ignored)
        log_warning (e->id, NULL, "the provider's \"%s\" is ignored, %s: the stored API base URL is kept",
                     r->provider->api_base_field, res->api_base_ignored);
    r->api_base_url = res->api_base_url;
    res->api_base_url = NULL;
    /* an answer whose access token alone was unusable (r->unusable) stores its refresh token with
     * an empty access token, expired: the next refresh gets one */
    if (r->unusable)
        expires_in = -1;
    if (crypto_seal (w->keyring, e->id, "access_token", r->unusable ? "" : res->access_token, &r->access_ct, &at_len,
                     &key_id, err, sizeof err) != FR_OK
    ||  crypto_seal (w->keyring, e->id, "refresh_token", keep, &r->refresh_ct, &rt_len, &key_id,
                     err, sizeof err) != FR_OK) {
        /* cannot happen with a loaded keyring; if it does, the rotated token is only in memory */
        log_error (e->id, NULL, "could not seal the new tokens: %s", err);
        refresh_finish_error (w, r, FR_INTERNAL, "could not seal the new tokens", NULL, -1);
        return;
    }
    crypto_fingerprint (w->keyring, keep, r->fingerprint);
    r->access_plain = r->unusable ? NULL : mem_strdup (res->access_token);
    if (res->scope) {
        /* providers separate granted scopes with their own separator; store them space-separated */
        r->scopes = mem_strdup (res->scope);
        for (char *p = r->scopes; *p; p++)
            if (*p == ',')
                *p = ' ';
    }
    r->commit.id = e->id;
    r->commit.expected_generation = r->expected_generation;
    snprintf (r->commit.lease_token, sizeof r->commit.lease_token, "%s", r->lease_token);
    r->commit.key_id = key_id;
    r->commit.access_ct = r->access_ct;
    r->commit.access_ct_len = at_len;
    r->commit.access_expires_at = clock_wall_ms () / 1000 + expires_in;
    r->commit.access_lifetime_s = expires_in > 0 ? expires_in : 0;
    r->commit.refresh_ct = r->refresh_ct;
    r->commit.refresh_ct_len = rt_len;
    r->commit.refresh_fingerprint = r->fingerprint;
    /* a provider that answers with the very refresh token it was sent (HubSpot) has not rotated
     * it: nothing to journal, and an invalid_grant recorded for it stands (the commit's WHERE) */
    r->commit.rotated = res->refresh_token != NULL && !crypto_secret_equal (res->refresh_token, r->refresh_token);
    r->commit.scopes = r->scopes;
    r->commit.api_base_url = r->api_base_url;
    r->commit.unusable = r->unusable;    /* the last error and the chain say so: doctor, status */
    if (!res->refresh_token && r->provider->refresh_token_rotation == CATALOG_ROTATION_SINGLE_USE) {
        /* such a provider spent the token sent and kept its successor: the access token is valid
         * and served, but the next refresh will likely be refused; say whose fault that is */
        log_warning (e->id, rid_of (r), "provider \"%s\" answered without a new refresh token, although its catalog "
                     "entry says its refresh tokens are single use: the refresh token sent is kept and the new "
                     "access token served, but if the provider spent it the next refresh is refused and the user "
                     "must reconnect (the provider's fault, or the entry's refresh_token_rotation)", r->provider->name);
        r->commit.note = STORE_COMMIT_NOTE_KEPT_SPENT;
    }
    mem_free_secret (&r->refresh_token);

    if (r->commit.rotated && w->journal && refresh_journal (w, r, w->woke_us) != 0)
        log_error (e->id, NULL, "the rotated refresh token is not journaled; committing it directly, and journaling it "
                   "again if the commit fails");
    /* the journal's sync is asked for in refresh_after_answers, once every answer of this loop
     * turn is written; the commit goes with the turn's batch (refresh_tick), alongside it */
    refresh_set_state (r, REFRESH_ANSWERED);
    r->answered_us = w->woke_us;
}

/* The group commit in flight: the refreshes whose commits it carries. */
typedef struct {
    worker_t *w;
    refresh_t **rs;
    size_t n;
    int64_t sent_us;
    int second;                      /* sent on the batch connection (w->batches) */
    int alone;                       /* one commit retried on its own (refresh_send_alone) */
} commit_batch_t;

static void
on_commits (void *arg, fr_status_t st, const int *committed, size_t n, const char *err)
{
    commit_batch_t *cb = arg;
    worker_t *w = cb->w;
    int64_t now = clock_mono_ms ();
    metrics_observe (w->m.db_batch, (double) (clock_mono_us () - cb->sent_us) / 1e6);
    for (size_t i = 0; i < n; i++)
        cb->rs [i]->in_db = 0;
    /* lost with its connection (dropped, or a server that stopped answering): once more in the
     * next batch, on whichever connection is up. A commit the server made before the loss loses
     * its compare-and-set the second time and is settled as a conflict, serving the stored
     * tokens: its own (no conflict is recorded when the row holds its rotated token). Any other
     * failure of a group: each is tried alone, at once, so that one commit the server refuses is
     * that refresh's failure only. */
    int resend = st != FR_OK && !cb->alone && !store_connected (cb->second ? w->batches : w->store);
    uint64_t held;
    if (st != FR_OK && !cb->alone) {
        if (lograte_take (&w->group_fail_log, now, &held)) {
            char more [96] = "";
            if (held)
                snprintf (more, sizeof more, " (and %llu more groups since the last line)", (unsigned long long) held);
            log_warning (NULL, NULL, "group commit of %zu refreshes failed, %s: %s%s", n,
                         resend ? "sending them again in the next batch" : "committing one by one", err, more);
        }
    }
    else
    if (st != FR_OK)
        refresh_say_failed (&w->commit_fail_log, cb->rs [0], "could not commit the refresh",
                            cb->rs [0]->commit_failures + 1, st, err);
    for (size_t i = 0; i < n; i++) {
        refresh_t *r = cb->rs [i];          /* settling one refresh frees only that one */
        if (st == FR_OK && committed [i])
            refresh_committed (w, r);
        else
        if (st == FR_OK)
            refresh_conflicted (w, r);
        else
        if (resend && !r->commit_resent)
            r->commit_resent = 1;           /* still answered, not in the database: the next batch */
        else
        if (!cb->alone) {
            refresh_set_state (r, REFRESH_COMMITTING);  /* alone, this turn; its waiters wait for that */
            r->due_ms = now;
        }
        else {
            r->commit_failures++;
            r->commit_resent = 0;           /* the next attempt may be resent once too */
            /* callers are told now; the tokens stay in memory and in the journal until committed */
            refresh_commit_failed (w, r);
            refresh_commit_later (r, now);
        }
    }
    mem_free (cb->rs);
    mem_free (cb);
}

/* The commit this refresh continued from (its claim found the row holding that commit's token),
 * this worker's, was written again by a failover's check at an earlier generation, the server
 * having lost this worker's commits before it too: the compare-and-set expects the generation the
 * row has now. It lost before, and the rotated token was dropped as a conflict's, the row left on
 * the token this refresh had spent. */
static void
refresh_rebase (worker_t *w, refresh_t *r)
{
    int64_t g = failover_rebased (w->failover, r->entry->id, r->spent, r->expected_generation);
    if (g == r->expected_generation)
        return;
    log_info (r->entry->id, NULL, "the commit this refresh continued from was written again after a failover, at an "
              "earlier generation; committing over generation %lld, not %lld", (long long) g,
              (long long) r->expected_generation);
    r->expected_generation = r->commit.expected_generation = g;
}

/* A commit retried on its own batch, so that its failure is its own. */
static void
refresh_send_alone (worker_t *w, store_t *store, refresh_t *r)
{
    char err [256];
    refresh_rebase (w, r);
    const store_commit_t *cs [1] = { &r->commit };
    commit_batch_t *cm = mem_alloc (sizeof *cm);
    cm->w = w;
    cm->sent_us = clock_mono_us ();
    cm->second = store == w->batches;
    cm->alone = 1;
    cm->n = 1;
    cm->rs = mem_alloc (sizeof *cm->rs);
    cm->rs [0] = r;
    r->in_db = 1;
    fr_status_t st = store_turn_start (store, cs, 1, on_commits, cm, NULL, 0, w->cfg.lease_ms, NULL, NULL,
                                       err, sizeof err);
    if (st != FR_OK) {
        r->in_db = 0;
        mem_free (cm->rs);
        mem_free (cm);
        r->commit_failures++;
        refresh_say_failed (&w->commit_fail_log, r, "could not commit the refresh", r->commit_failures,
                            FR_DATABASE_UNAVAILABLE, err);
        refresh_commit_failed (w, r);
        refresh_commit_later (r, clock_mono_ms ());
    }
}

void
refresh_after_answers (worker_t *w)
{
    /* the journal's thread syncs every record written since its last sync began; the loop goes
     * on meanwhile, and so do the commits (see refresh_send_batch) */
    if (w->jwait_n == 0)
        return;
    /* measured to the end of the sync that put the record on disk, not to this turn: the loop
     * noticing it later is not part of the window in which a crash could lose the token */
    int64_t on_disk_us;
    uint64_t on_disk = journal_synced (w->journal, &on_disk_us);
    size_t k = 0;
    for (; k < w->jwait_n && w->jwait [k].mark <= on_disk; k++)
        metrics_observe (w->m.journal_window, (double) (on_disk_us - w->jwait [k].answered_us) / 1e6);
    memmove (w->jwait, w->jwait + k, (w->jwait_n - k) * sizeof *w->jwait);
    w->jwait_n -= k;
    if (w->jwait_n)
        journal_sync_start (w->journal);     /* nothing new to ask while one covering them runs */
}

static void
refresh_on_response (void *arg, const http_response_t *resp)
{
    refresh_t *r = arg;
    worker_t *w = r->w;
    cache_entry_t *e = r->entry;
    oauth_result_t res;
    char message [512];
    memset (&res, 0, sizeof res);

    oauth_read_response (r->provider, resp, w->cfg.max_provider_body, &res);

    metrics_observe (w->m.refresh_seconds, (double) (clock_mono_ms () - r->call_started_ms) / 1000.0);
    if (res.kind != OAUTH_OK)
        reply_count_provider_error (w, r->provider->name, oauth_kind_name (res.kind));
    /* the breaker counts what says the provider is unwell; the backoff also holds an integration
     * whose provider refuses this deployment's client or request (invalid_client, invalid_scope,
     * another OAuth error): each such refresh fails until an operator acts, and calling again for
     * every request would only storm the provider */
    int failed = res.kind == OAUTH_TRANSIENT || res.kind == OAUTH_BAD_RESPONSE;
    if (resp->not_started) {
        /* it waited its whole time for one of the worker's provider calls, and never went out:
         * that says nothing of the provider (a slow one elsewhere may hold them all); the probe
         * that did not go out lets the next call be the probe */
        if (r->probe)
            breaker_unused (w->breaker, r->provider->name);
    }
    else if (r->probe || !failed || !refresh_failing_at_provider (e))
        /* an integration's failures after its first in a row are not counted: the breaker is for
         * a provider failing broadly, and one integration a client keeps asking for (a 429 or
         * 5xx of that account alone) opened it for every integration of the provider; its own
         * backoff already spaces its calls */
        breaker_record (w->breaker, r->provider->name, failed, r->probe, clock_mono_ms ());
    if (res.kind != OAUTH_OK && res.kind != OAUTH_INVALID_GRANT) {
        /* a call that waited its turn too long was never sent: it failed before the provider was
         * called, as one that could not start does, and the requests its backoff holds back are
         * told so (they were told the provider had failed, which had answered every call it got) */
        int64_t delay = refresh_back_off (w, e, res.kind == OAUTH_TRANSIENT ? FR_PROVIDER_UNAVAILABLE
                                                : res.kind == OAUTH_BAD_RESPONSE ? FR_PROVIDER_BAD_RESPONSE
                                                : res.kind == OAUTH_INVALID_CLIENT ? FR_INVALID_CLIENT
                                                : res.kind == OAUTH_INVALID_SCOPE ? FR_INVALID_SCOPE : FR_CONFIGURATION,
                                          res.retry_after, resp->not_started);
        if (failed && res.retry_after < 0 && delay > 0)
            res.retry_after = (delay + 999) / 1000;
    }
    if (res.kind == OAUTH_OK) {
        refresh_succeeded (w, r, &res);
        oauth_result_clear (&res);
        return;
    }
    if (res.kind == OAUTH_BAD_RESPONSE && res.refresh_token) {
        /* a refresh token beside an unusable access token: the provider may have rotated, spending
         * the one sent, so it is committed as a rotation (journal, compare-and-set) with an expired
         * empty access token; the waiters get the provider's fault once it is in, and the
         * integration backs off as for any bad answer */
        snprintf (message, sizeof message, "could not refresh integration \"%s\": %s; the refresh token it "
                  "issued with it is stored, and the next refresh gets an access token", e->id, res.detail);
        log_warning (e->id, rid_of (r), "%s", message);
        r->unusable = mem_strdup (message);
        r->unusable_retry = res.retry_after;
        refresh_succeeded (w, r, &res);
        oauth_result_clear (&res);
        return;
    }

    const char *outcome = "error";
    const char *new_status = NULL;
    fr_status_t st = FR_CONFIGURATION;
    switch (res.kind) {
        case OAUTH_INVALID_GRANT:  outcome = "invalid_grant"; new_status = "needs_reconnect"; st = FR_NEEDS_RECONNECT; break;
        case OAUTH_TRANSIENT:      outcome = "transient"; st = FR_PROVIDER_UNAVAILABLE; break;
        case OAUTH_BAD_RESPONSE:   outcome = "bad_response"; st = FR_PROVIDER_BAD_RESPONSE; break;
        case OAUTH_INVALID_CLIENT: outcome = "invalid_client"; st = FR_INVALID_CLIENT; break;
        case OAUTH_INVALID_SCOPE:  outcome = "configuration"; st = FR_INVALID_SCOPE; break;
        default:                   outcome = "configuration"; st = FR_CONFIGURATION; break;
    }
    /* a provider that quotes the token back in its description must not put it in our logs */
    oauth_result_withhold (&res, r->refresh_token, "refresh token");
    oauth_result_withhold (&res, r->provider->client_secret, "client secret");
    if (res.kind == OAUTH_INVALID_GRANT || res.kind == OAUTH_INVALID_CLIENT || res.error)
        snprintf (message, sizeof message, "could not refresh integration \"%s\": provider \"%s\" answered %s%s%s",
                  e->id, r->provider->name, res.error ? res.error : oauth_kind_name (res.kind),
                  res.error_description ? ": " : "", res.error_description ? res.error_description : "");
    else
        snprintf (message, sizeof message, "could not refresh integration \"%s\": %s", e->id, res.detail);
    const char *hint = NULL;
    if (oauth_unauthorized_client (&res)) {
        /* not the credentials (they were accepted): the app may not refresh, or the token is another
         * client's; the same words the chain row keeps are what doctor reads */
        snprintf (message, sizeof message, "could not refresh integration \"%s\": provider \"%s\" answered "
                  "unauthorized_client%s%s: it refuses this OAuth app the refresh", e->id, r->provider->name,
                  res.error_description ? ": " : "", res.error_description ? res.error_description : "");
        hint = "enable the refresh_token grant for the OAuth app in the provider's settings (the client id and "
               "secret were accepted); if the provider entry's client id was changed since the integration was "
               "connected, the user must connect it again";
    }
    else
    if (res.kind == OAUTH_INVALID_GRANT && r->interrupted)
        /* the chain's last refresh never stored its result: say what that means */
        snprintf (message, sizeof message, "could not refresh integration \"%s\": provider \"%s\" answered "
                  REFRESH_INTERRUPTED_WORDS ": a worker stopped while the provider was rotating the refresh token, "
                  "and the new refresh token the provider issued never reached the database", e->id,
                  r->provider->name);
    log_warning (e->id, rid_of (r), "%s", message);

    mem_free_secret (&r->refresh_token);
    if (st == FR_NEEDS_RECONNECT && !hint)
        hint = refresh_refused_hint (message);
    refresh_record_failure (w, r, outcome, new_status, st, message, hint,
                            st == FR_PROVIDER_UNAVAILABLE ? res.retry_after : -1, res.kind == OAUTH_INVALID_GRANT);
    oauth_result_clear (&res);
}

#define CLAIM_BATCH_MAX 256           /* claims in one transaction */

/* The claims in flight. */
typedef struct {
    worker_t *w;
    refresh_t **rs;
    store_claim_req_t *q;
    size_t n;
    int second;                      /* sent on the batch connection (w->batches) */
    int alone;                       /* one claim sent again on its own (claim_alone) */
    int64_t sent_us;                 /* 0 when the batch's commits measure it */
} claim_batch_t;

static void
on_claims (void *arg, store_claim_req_t *reqs, size_t n)
{
    claim_batch_t *cb = arg;
    if (cb->sent_us)
        metrics_observe (cb->w->m.db_batch, (double) (clock_mono_us () - cb->sent_us) / 1e6);
    for (size_t i = 0; i < n; i++)
        cb->rs [i]->in_db = 0;
    if (n && reqs [0].undecided && !cb->alone)
        log_warning (NULL, NULL, "a group of %zu claims failed, claiming each on its own: %s", n, reqs [0].err);
    for (size_t i = 0; i < n; i++) {
        refresh_t *r = cb->rs [i];
        if (reqs [i].st == FR_DATABASE_UNAVAILABLE && !r->claim_resent
        &&  !store_connected (cb->second ? cb->w->batches : cb->w->store)) {
            /* its connection was lost with it (or found the server read-only, as a connection
             * made during a failover can): once more, on whichever connection is up, before the
             * caller is told the database is unavailable (a claim lost with the main connection
             * used to be answered at once: it_group_commit). A claim the server committed before
             * the loss left a lease under our own id, which the claim takes over. */
            r->claim_resent = 1;
            refresh_claim_soon (r);
            continue;
        }
        if (reqs [i].undecided && !cb->alone) {
            /* its group failed as a whole with the database up (a statement of another, a lock
             * timeout, a deadlock): the same claim alone, at once, so that its failure is its own */
            r->claim_alone = 1;
            refresh_claim_soon (r);
            continue;
        }
        r->claim_alone = 0;
        r->claim_resent = 0;                                 /* a later round may resend once too */
        refresh_claimed (cb->w, r, &reqs [i]);               /* each goes its own way */
    }
    mem_free (cb->q);
    mem_free (cb->rs);
    mem_free (cb);
}

/* A commit waits while the worker checks its kept commits against a server just connected to,
 * or while its integration waits for another worker's (failover.h): the check may write back a
 * commit of this integration that the server lost, and this commit, at the generation after it,
 * would otherwise go first, lose its compare-and-set against the row put back, and drop its new
 * token as a conflict's, the check then writing back the token it had spent (it_group_commit). */
static int
refresh_commit_held (const worker_t *w, const refresh_t *r)
{
    return failover_checking (w->failover) || failover_waits (w->failover, r->entry->id);
}

/* The turn's batch on store: the commits of every refresh answered (their journal's sync runs
 * alongside), then the claims in rs, in one transaction, one round trip, one WAL flush, sent
 * without waiting; each refresh goes its own way when the answers are in (on_commits, on_claims).
 * alone: rs's one claim, sent again after its group failed, and nothing else. */
static void
refresh_send_batch (worker_t *w, store_t *store, refresh_t **rs, size_t n, int alone)
{
    if (n && (!w->started_db || failover_checking (w->failover))) {
        /* the journal of an earlier run is not replayed yet, or the commits of the last seconds
         * are being checked against a server just connected to: a refresh now could spend a
         * refresh token the journal, or a commit the server lost, has already replaced. A worker
         * takes requests as soon as it is connected, and either takes a few round trips once the
         * database answers: a claim waits for it, up to STARTUP_WAIT_MS from when it began to
         * wait (not from the refresh's start: one that waited for another worker's lease first
         * would fail at once), and then fails as a claim does while the database is away (a
         * restarted worker used to fail the requests of its first milliseconds: it_lifecycle's
         * rolling restart) */
        int64_t now_us = clock_mono_us ();
        char why [256];
        if (w->started_db)
            snprintf (why, sizeof why, "the worker is still checking its last commits against the database; retry "
                      "shortly");
        else
            snprintf (why, sizeof why, "the worker has not finished its start-up recovery (%s); retry shortly",
                      w->recovering ? w->recovering : "not begun");
        for (size_t i = 0; i < n; i++) {
            refresh_t *r = rs [i];
            if (!r->held_since_us)
                r->held_since_us = now_us;
            if ((now_us - r->held_since_us) / 1000 < STARTUP_WAIT_MS)
                r->due_ms = now_us / 1000 + STARTUP_RECHECK_MS;    /* still claiming: the next look */
            else
                refresh_finish_error (w, r, FR_DATABASE_UNAVAILABLE, why, NULL, 1);
        }
        n = 0;
    }
    size_t kept_n = 0;
    for (size_t i = 0; i < n; i++) {
        refresh_t *r = rs [i];
        if (!failover_waits (w->failover, r->entry->id)) {
            rs [kept_n++] = r;
            continue;
        }
        /* its row lost commits another worker made (a failover): the token it holds was spent by
         * that worker's refresh, and this worker's kept commit, or its journal's record, is
         * written only once that worker has written its own (failover.h). It waits as above. */
        int64_t now_us = clock_mono_us ();
        if (!r->held_since_us)
            r->held_since_us = now_us;
        if ((now_us - r->held_since_us) / 1000 < STARTUP_WAIT_MS)
            r->due_ms = now_us / 1000 + STARTUP_RECHECK_MS;
        else
        if (failover_held_failing (w->failover, r->entry->id))
            refresh_finish_error (w, r, FR_DATABASE_UNAVAILABLE, "the worker has not yet replayed this integration's "
                                  "record in the journal of its earlier run (its replay failed: the row locked, or "
                                  "the database away; this worker's log says why); retry shortly", NULL, 1);
        else
            refresh_finish_error (w, r, FR_DATABASE_UNAVAILABLE, "this integration's last commits were lost by the "
                                  "database (a failover), and another worker has not written its own again yet; "
                                  "retry shortly", NULL, 1);
    }
    n = kept_n;
    size_t nc = 0;
    for (refresh_t *r = w->refreshes; r && !alone; r = r->next)
        nc += r->state == REFRESH_ANSWERED && !r->in_db && !refresh_commit_held (w, r);
    if (nc == 0 && n == 0)
        return;
    commit_batch_t *cm = NULL;
    const store_commit_t **cs = NULL;
    if (nc) {
        cm = mem_alloc (sizeof *cm);
        cs = mem_alloc (nc * sizeof *cs);
        cm->w = w;
        cm->sent_us = clock_mono_us ();
        cm->second = store == w->batches;
        cm->rs = mem_alloc (nc * sizeof *cm->rs);
        for (refresh_t *r = w->refreshes; r; r = r->next)
            if (r->state == REFRESH_ANSWERED && !r->in_db && !refresh_commit_held (w, r)) {
                refresh_rebase (w, r);
                r->in_db = 1;
                cm->rs [cm->n] = r;
                cs [cm->n++] = &r->commit;
            }
        metrics_observe (w->m.commit_batch, (double) nc);
    }
    claim_batch_t *cl = NULL;
    if (n) {
        cl = mem_alloc (sizeof *cl);
        cl->w = w;
        cl->n = n;
        cl->second = store == w->batches;
        cl->alone = alone;
        cl->sent_us = cm ? 0 : clock_mono_us ();
        cl->rs = mem_alloc (n * sizeof *cl->rs);
        cl->q = mem_alloc (n * sizeof *cl->q);
        for (size_t i = 0; i < n; i++) {
            cl->rs [i] = rs [i];
            rs [i]->in_db = 1;
            rs [i]->held_since_us = 0;      /* a later wait (after a conflict's claim) is counted anew */
            cl->q [i] = (store_claim_req_t) { .id = rs [i]->entry->id, .known_generation = rs [i]->known_generation,
                                              .valid_until = rs [i]->valid_until, .forced = rs [i]->forced };
        }
        metrics_observe (w->m.claim_batch, (double) n);
    }
    char err [256];
    fr_status_t st = store_turn_start (store, cs, nc, on_commits, cm, cl ? cl->q : NULL, n, w->cfg.lease_ms,
                                       on_claims, cl, err, sizeof err);
    mem_free (cs);                          /* the batch keeps what each points to: the refreshes */
    if (st != FR_OK) {
        /* not even sent (the database is unreachable): each commit is kept for its retries (its
         * callers told now), each claim fails as it would have */
        if (cm) {
            for (size_t i = 0; i < cm->n; i++) {
                refresh_t *r = cm->rs [i];
                r->in_db = 0;
                r->commit_failures++;
                refresh_commit_failed (w, r);
                refresh_commit_later (r, clock_mono_ms ());
            }
            uint64_t held;
            if (lograte_take_n (&w->commit_fail_log, clock_mono_ms (), cm->n, &held)) {
                char more [96] = "";
                if (held)
                    snprintf (more, sizeof more, " (and %llu more since the last line)", (unsigned long long) held);
                log_warning (NULL, NULL, "could not commit %zu refreshes (the batch was not sent), will retry: %s%s",
                             cm->n, err, more);
            }
            mem_free (cm->rs);
            mem_free (cm);
        }
        if (cl) {
            cl->sent_us = 0;                /* not a batch's time */
            for (size_t i = 0; i < n; i++) {
                cl->q [i].st = st;
                snprintf (cl->q [i].err, sizeof cl->q [i].err, "%s", err);
            }
            on_claims (cl, cl->q, n);
        }
    }
}

/* Answers job, near its deadline, with what r still waits for (the start-up's recovery and a
 * failover's waits included, which end in database_unavailable only after STARTUP_WAIT_MS, and a
 * failure's record, whose outcome is the answer once it is in); 0 when it is left to wait: the
 * claim not sent yet with a connection free, another holder's lease ending before the deadline (a
 * claim may still take it in time). */
static int
refresh_answer_wait (worker_t *w, const refresh_t *r, const job_t *job, int64_t now_ms)
{
    const char *id = r->entry->id;
    int64_t since_ms = now_ms - r->started_us / 1000;
    char message [512];
    const char *hint = "retry: the refresh goes on, and a request after it ends is answered from it";
    int64_t retry_s = -1;               /* at once: a retry joins the same refresh */
    if (r->state == REFRESH_CLAIMING && r->busy_owner [0] && r->busy_until_ms < job->deadline_ms)
        return 0;
    if (r->state == REFRESH_CLAIMING && r->busy_owner [0]) {
        int64_t left_ms = r->busy_until_ms > now_ms ? r->busy_until_ms - now_ms : 0;
        snprintf (message, sizeof message, "integration \"%s\": its refresh lease is held by \"%s\" for %lld ms more "
                  "(a refresh under way there, or a worker holding the row while it waits to write again commits a "
                  "database failover lost), and this request's deadline came first", id, r->busy_owner,
                  (long long) left_ms);
        hint = "retry after the lease ends; a lease held again and again by the same worker: read that worker's log";
        retry_s = (left_ms + 999) / 1000 > 0 ? (left_ms + 999) / 1000 : 1;
    }
    else
    if (r->state == REFRESH_CLAIMING && r->locked_since_ms) {
        snprintf (message, sizeof message, "integration \"%s\": its row has been locked by another database session "
                  "for %lld ms (a claim does not wait for a row lock: it is tried again every %d ms), and this "
                  "request's deadline came first", id, (long long) (now_ms - r->locked_since_ms), BUSY_RETRY_MS);
        hint = LOCKED_HINT;
    }
    else
    if (r->state == REFRESH_CLAIMING && !r->in_db && (!w->started_db || failover_checking (w->failover))) {
        /* the claim waits for the start-up's recovery, or for the check of the last commits after a
         * reconnection (refresh_send_batch), up to STARTUP_WAIT_MS */
        if (!store_connected (w->store))
            snprintf (message, sizeof message, "integration \"%s\": this worker is not connected to the database, "
                      "and a claim of the refresh lease waits for its connection (the refresh began %lld ms ago); "
                      "this request's deadline came first", id, (long long) since_ms);
        else
        if (w->started_db)
            snprintf (message, sizeof message, "integration \"%s\": this worker is checking its last commits "
                      "against the database server it has just connected to (a failover may have lost them), and a "
                      "claim of the refresh lease waits for that (the refresh began %lld ms ago); this request's "
                      "deadline came first", id, (long long) since_ms);
        else
            snprintf (message, sizeof message, "integration \"%s\": this worker has not finished its start-up "
                      "recovery (%s), and a claim of the refresh lease waits for it (the refresh began %lld ms ago); "
                      "this request's deadline came first", id, w->recovering ? w->recovering : "not begun",
                      (long long) since_ms);
        hint = "retry shortly; when it lasts, read the worker's log (the database away, or a row locked by another "
               "session)";
    }
    else
    if (r->state == REFRESH_CLAIMING && !r->in_db && failover_held_failing (w->failover, id)) {
        snprintf (message, sizeof message, "integration \"%s\": this worker has not yet replayed its record in the "
                  "journal of the worker's earlier run (the replay failed and is tried again each second), and a "
                  "claim of the refresh lease waits for it (the refresh began %lld ms ago); this request's deadline "
                  "came first", id, (long long) since_ms);
        hint = "retry shortly; when it lasts, read the worker's log (journal replay failed: a row locked by another "
               "session, or the database away)";
    }
    else
    if (r->state == REFRESH_CLAIMING && !r->in_db && failover_waits (w->failover, id)) {
        snprintf (message, sizeof message, "integration \"%s\": its last commits were lost by the database (a "
                  "failover), and a claim of the refresh lease waits until the worker that made them has written "
                  "them again (the refresh began %lld ms ago); this request's deadline came first", id,
                  (long long) since_ms);
        hint = "retry shortly; when it lasts, read the workers' logs for the commits a failover lost";
    }
    else
    if (r->state == REFRESH_CLAIMING && r->in_db)
        snprintf (message, sizeof message, "integration \"%s\": the database has not answered this worker's claim of "
                  "the refresh lease (the refresh began %lld ms ago), and this request's deadline came first", id,
                  (long long) since_ms);
    else
    if (r->state == REFRESH_CLAIMING && r->due_ms <= now_ms && !dbwait_free_store (w))
        snprintf (message, sizeof message, "integration \"%s\": the database has not answered the batches in flight "
                  "on this worker's connections, and the claim of the refresh lease waits for one of them (the "
                  "refresh began %lld ms ago); this request's deadline came first", id, (long long) since_ms);
    else
    if (r->state == REFRESH_CALLING)
        snprintf (message, sizeof message, "integration \"%s\": provider \"%s\" has not answered this worker's refresh "
                  "call in %lld ms (a call may take up to %lld ms, FERRULE_PROVIDER_TIMEOUT_MS), and this request's "
                  "deadline came first", id, r->provider ? r->provider->name : "?",
                  (long long) (now_ms - r->call_started_ms), (long long) w->cfg.http_timeout_ms);
    else
    if (r->state == REFRESH_RECORDING) {
        char failed [192];
        if (r->recording_answered)
            snprintf (failed, sizeof failed, "provider \"%s\" answered the refresh call, the attempt failed",
                      r->provider ? r->provider->name : "?");
        else
            snprintf (failed, sizeof failed, "the refresh failed before its provider call");
        snprintf (message, sizeof message, "integration \"%s\": %s (%s), and the database has not recorded that "
                  "outcome yet (the refresh began %lld ms ago; the answer waits for the record); this request's "
                  "deadline came first", id, failed, r->recording ? r->recording : "a failure", (long long) since_ms);
    }
    else
    if (r->state == REFRESH_CONFLICTED)
        /* its record releases the lease and writes a chain row (a row lock, a stalled server hold
         * it up), then the row read back is the answer */
        snprintf (message, sizeof message, "integration \"%s\": the provider answered, but another refresh, an import "
                  "or a change of status committed first (this refresh's compare-and-set lost), and the database has "
                  "not yet recorded that conflict and given back the stored tokens (the refresh began %lld ms ago); "
                  "this request's deadline came first", id, (long long) since_ms);
    else
    if (r->state == REFRESH_ANSWERED || r->state == REFRESH_COMMITTING)
        snprintf (message, sizeof message, "integration \"%s\": the provider answered, and the database has not "
                  "committed the new tokens yet (the refresh began %lld ms ago; they are kept until it does), and "
                  "this request's deadline came first", id, (long long) since_ms);
    else
        return 0;
    /* said before the answer leaves, and at most once a second: a slow provider times out every
     * request waiting for it */
    uint64_t held;
    if (lograte_take (&w->wait_answer_log, now_ms, &held)) {
        char more [96] = "";
        if (held)
            snprintf (more, sizeof more, " (and %llu more since the last line)", (unsigned long long) held);
        log_warning (id, job->rid [0] ? job->rid : NULL, "answered a request timeout before its deadline: %s%s",
                     message, more);
    }
    reply_error (w, job, FR_TIMEOUT, message, hint, retry_s);
    return 1;
}

/* Forgets r's waiters the broker has already answered with a timeout, answers those whose
 * answer_ms has come with what they wait for, and sets when to look again. */
static void
refresh_answer_waiting (worker_t *w, refresh_t *r, int64_t now_ms)
{
    job_t **pp = &r->waiters;
    r->answer_ms = INT64_MAX;
    while (*pp) {
        job_t *j = *pp;
        if (j->deadline_ms <= now_ms
        ||  (j->answer_ms <= now_ms && refresh_answer_wait (w, r, j, now_ms))) {
            *pp = j->next;
            waiter_free (j);
            continue;
        }
        if (j->answer_ms <= now_ms)
            j->answer_ms = j->deadline_ms;   /* left to wait: forgotten at its deadline */
        if (j->answer_ms < r->answer_ms)
            r->answer_ms = j->answer_ms;
        pp = &j->next;
    }
}

void
refresh_tick (worker_t *w, int64_t now_ms)
{
    refresh_t *due [CLAIM_BATCH_MAX];
    size_t ndue = 0;
    refresh_say_held (w, now_ms);
    refresh_t *r = w->refreshes;
    while (r) {
        refresh_t *next = r->next;
        if (r->waiters && now_ms >= r->answer_ms)
            refresh_answer_waiting (w, r, now_ms);
        if (r->state == REFRESH_CLAIMING && !r->claim_alone && !r->in_db && now_ms >= r->due_ms) {
            /* nobody waits for it any more (each was answered, or its deadline passed): no claim */
            if (!r->waiters && !r->background)
                refresh_free (w, r);
            else
            if (ndue < CLAIM_BATCH_MAX)
                due [ndue++] = r;        /* the rest wait for the next turn: due already */
        }
        else
        if (r->state == REFRESH_COMMITTING && !r->in_db && now_ms >= r->due_ms) {
            /* a commit to retry goes before any claim, alone, on a connection that is up (with
             * none up, it waits a retry interval, and the requests waiting for it are told now:
             * there is no attempt whose outcome they could wait for; with both busy, the next
             * answer wakes the loop) */
            store_t *store = dbwait_free_store (w);
            if (refresh_commit_held (w, r))
                r->due_ms = now_ms + STARTUP_RECHECK_MS;
            else
            if (store && store_connected (store))
                refresh_send_alone (w, store, r);
            else
            if (store) {
                refresh_commit_failed (w, r);
                r->due_ms = now_ms + COMMIT_RETRY_MS;
            }
        }
        else
        if (r->state == REFRESH_CLAIMING && r->claim_alone && !r->in_db && now_ms >= r->due_ms) {
            /* the same for a claim whose group failed; with no connection up it goes with the
             * turn's group below, and fails as every claim of it does */
            store_t *store = dbwait_free_store (w);
            if (store && store_connected (store))
                refresh_send_batch (w, store, &r, 1, 1);
            else
            if (store && ndue < CLAIM_BATCH_MAX)
                due [ndue++] = r;
        }
        r = next;
    }
    /* one batch per connection: with one in flight on each, what is due goes with the next */
    store_t *store = dbwait_free_store (w);
    if (store)
        refresh_send_batch (w, store, due, ndue, 0);
}

int64_t
refresh_next_due (const worker_t *w)
{
    int64_t due = -1;
    /* claims and commit retries due while a batch is in flight on each connection wait for an
     * answer, which wakes the loop */
    int claims_wait = dbwait_free_store (w) == NULL;
    for (const refresh_t *r = w->refreshes; r; r = r->next) {
        if (r->waiters && (due < 0 || r->answer_ms < due))
            due = r->answer_ms;                 /* a waiter to answer with what it waits for */
        if (claims_wait && (r->state == REFRESH_CLAIMING || r->state == REFRESH_COMMITTING))
            continue;
        if ((r->state == REFRESH_CLAIMING || r->state == REFRESH_COMMITTING) && !r->in_db && (due < 0 || r->due_ms < due))
            due = r->due_ms;
    }
    return due;
}

/* At the exit: a rotated refresh token the journal could not take (a full disk), neither when it
 * came nor at any failed commit since, and that the database did not take either, exists in
 * this process's memory alone. The journal is tried once more (journal_close syncs it); when that
 * fails too, the loss is said for each integration, with what to do, rather than the token being
 * freed in silence. */
static void
refresh_journal_last (worker_t *w)
{
    for (refresh_t *r = w->refreshes; r; r = r->next) {
        if ((r->state != REFRESH_ANSWERED && r->state != REFRESH_COMMITTING) || !r->commit.rotated
        ||  r->journal_seq >= 0 || !r->entry)
            continue;
        if (w->journal && (r->journal_seq = journal_append (w->journal, &r->commit, r->spent)) > 0) {
            log_warning (r->entry->id, NULL, "the rotated refresh token the database did not take is journaled at "
                         "last, as the worker stops: this worker's next start commits it (start it again with the "
                         "same journal)");
            continue;
        }
        log_error (r->entry->id, NULL, "the rotated refresh token of integration \"%s\" is lost: the provider issued "
                   "it, the database did not take its commit, the journal could not be written, and the worker is "
                   "stopping. If the provider spent the token the database holds (single-use rotation), refreshes "
                   "will fail with invalid_grant: connect the integration again. Never stop a worker whose journal "
                   "cannot be written while the database refuses its commits: free the journal's disk or bring the "
                   "database back first", r->entry->id);
    }
}

void
refresh_abandon_all (worker_t *w)
{
    refresh_say_held (w, clock_mono_ms () + 2 * LOGRATE_INTERVAL_MS);  /* all that is held back */
    refresh_journal_last (w);
    while (w->refreshes)
        refresh_free (w, w->refreshes);
}

/* A sweep candidate's refresh: fresh enough is what this token's own horizon asks, not the global
 * one (a 120 s token refreshed to last 300 s more would be refreshed on every pass). */
static void
refresh_sweep_entry (worker_t *w, cache_entry_t *e, int keepalive)
{
    refresh_background (w, e, clock_wall_ms () / 1000 + sweep_horizon (w->sweep, e->lifetime_s), keepalive);
}

/* A candidate the cache did not hold, once its row is read (loads.c). */
static void
refresh_sweep_loaded (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const store_row_t *row,
                      const store_extra_t *x, fr_status_t st, const char *err, int keepalive)
{
    char why [512];
    (void) job;
    (void) root;
    (void) x;
    if (st != FR_OK) {
        log_warning (id, NULL, "sweep: %s", err);
        return;
    }
    cache_entry_t *e = refresh_loaded (w, id, row, &st, why, sizeof why);
    if (!e)
        log_warning (id, NULL, "sweep: %s", why);
    else
        refresh_sweep_entry (w, e, keepalive);
}

int64_t
refresh_sweep_held (void *arg, const char *id)
{
    worker_t *w = arg;
    cache_entry_t *e = cache_get (w->cache, id);
    return e ? e->backoff_until_ms : 0;
}

int
refresh_sweep_start (void *arg, const char *id, const char *provider, int keepalive, int64_t now_ms,
                     int64_t *held_until_ms)
{
    worker_t *w = arg;
    cache_entry_t *e = cache_get (w->cache, id);
    if (e && e->refresh)
        return 0;
    /* waiting out a backoff (the provider's Retry-After may be longer than the longest one, after
     * which the row is read again): no call from the budget, and the passes leave it out */
    if (e && e->backoff_until_ms > now_ms) {
        *held_until_ms = e->backoff_until_ms;
        return SWEEP_HELD;
    }
    if (!sweep_take (w->sweep, provider, now_ms))
        return SWEEP_THROTTLED;
    if (!e || e->stale)
        loads_park (w, NULL, NULL, id, refresh_sweep_loaded, keepalive, 0);   /* read without waiting */
    else
        refresh_sweep_entry (w, e, keepalive);
    return 1;
}
