/* events.c - the event delivery threads and the events operations */
#include "events.h"
#include "webhook.h"
#include "breaker.h"
#include "store_events.h"
#include "dbwait.h"
#include "context.h"
#include "fields.h"
#include "reply.h"
#include "clock.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define CLAIM_BATCH        16
#define LATE_FANOUT_MS     30000     /* the look back for late commits; a short one on other passes */
/* How far back that look goes. An event's created_at is its transaction's start, so an event
 * whose transaction committed after the short look passed that time is found only by a look
 * further back. Ferrule's own writers commit well within this: each statement of theirs ends
 * within its statement timeout (FERRULE_DB_STATEMENT_TIMEOUT_MS, at most 60 s; these threads'
 * 5 s), a commit's wait for a synchronous standby included, and a batch is a few statements sent
 * at once; ten of the longest is the bound. Anyone else's transaction (an operator's SQL) is not
 * bounded: its events are found by the look over the whole max age, at a thread's start and once
 * its connection was lost. Looking over the max age every 30 s read a day of events (in steps,
 * back to back, a probe of the primary key each) per endpoint and worker, every 30 s. */
#define LATE_COMMIT_S      600
#define WINDOW_MARGIN_S    60        /* beyond the time since the last fan-out: transactions that
                                        started before it and committed after it */
#define WINDOW_MAX_S       (2 * WINDOW_MARGIN_S)   /* a longer look back goes in steps */
#define FANOUT_STEP        1000      /* events one step of a fan-out reads */
#define FANOUT_PASS_MS     1000      /* the steps of a pass, beyond its first */
#define STOP_GRACE_MS      1000      /* a stop's wait for the threads before their statements are
                                        cut short: to record and give back what they claimed */
#define RECONNECT_MS       1000
#define STATS_MS           5000
#define LIST_MAX           1000
#define LIST_MAX_BYTES     (160 * 1024)    /* an events reply stays well under a frame's 256 KiB */
#define FORECAST_SHARE     0.8       /* warn when this share of a limit has passed */
/* An endpoint's breaker: this many failed attempts within the window, and at least half of its
 * attempts, hold its deliveries; the first hold is the backoff's base, each failed probe doubles
 * it up to the backoff's longest wait. The window is the longer of HOLD_WINDOW_MS and
 * HOLD_MIN_FAILURES attempts up to two timeouts apart (events_hold_new). */
#define HOLD_MIN_FAILURES  5
#define HOLD_WINDOW_MS     60000
#define HOLD_FIRST_MIN_MS  100

typedef struct {
    char    *name;
    int64_t  idle_s, grant_s;
} forecast_provider_t;

/* One endpoint's fan-out (deliver_pass). */
typedef struct {
    int64_t   done_ms;               /* monotonic start of its last complete fan-out; 0 none */
    int       scanning;              /* a fan-out in steps is under way */
    int       catching_up;           /* and the short fan-outs wait for its end */
    int64_t   after, upto;           /* its seqs: done up to after (-1: not begun), ends at upto */
    int64_t   window_s, started_ms;  /* its look back, from its start */
    int       wide;                  /* and it is the look over the max age that wide_due asked for */
    int       wide_due;              /* a look over the max age is due: the connection was lost */
    lograte_t fail_log;
} fanout_t;

/* One thread's share of the work: one endpoint's deliveries (its fan-out, claims and attempts),
 * or, with ep NULL, the forecasts and the counts for the metrics. Each has a database connection
 * and a curl handle of its own, so that a receiver that hangs until the timeout holds up its own
 * endpoint's deliveries only: with one thread for all, each attempt to it held every other
 * endpoint's, until its breaker tripped, and each of its probes again. */
typedef struct {
    events_t *ev;
    const webhook_endpoint_t *ep;    /* NULL: the forecasts and the counts */
    store_events_t *store;
    CURL *curl;
    pthread_t thread;
    int started;
    int wake [2];                    /* a byte here stops the thread's wait */
    fanout_t fan;
    breaker_t *held;                 /* one that keeps failing gets probes, not every queue's retries */
    metrics_series_t *m_held;
    lograte_t late_log;              /* a claim none of whose deliveries could be attempted */
    store_events_claim_t stranded [CLAIM_BATCH];    /* claimed, not sent, the connection lost: given
                                                       back once connected (seq, endpoint: ep's name) */
    size_t nstranded;
    char stranded_lease [STORE_EVENTS_LEASE_LEN + 1];
} lane_t;

struct events {
    events_config_t cfg;
    char *worker_id;
    char *database_url;              /* secret */
    webhook_set_t *endpoints;
    const char **names;              /* the endpoints' names, for the counts */
    forecast_provider_t *providers;  /* copied from the catalog at start */
    size_t nproviders;
    lane_t *lanes;                   /* one per endpoint, in the set's order, then the forecasts' */
    size_t nlanes;
    int stop_fd;                     /* eventfd, readable STOP_GRACE_MS into events_destroy: the
                                        threads' waits on the database end (store_events_new) */
    int exited_fd;                   /* eventfd each thread adds one to as it ends */
    atomic_int stop;
    metrics_t *metrics;
    metrics_series_t *m_pending, *m_failed_rows, *m_forecasts, *m_db_errors;
};

static uint64_t
random64 (void)
{
    uint64_t r = 0;
    if (getrandom (&r, sizeof r, 0) != (ssize_t) sizeof r)
        r = (uint64_t) random () << 32 ^ (uint64_t) random ();
    return r;
}

static void
count_delivery (events_t *ev, const char *endpoint, const char *outcome)
{
    char labels [200], esc [140];
    metrics_label_escape (esc, sizeof esc, endpoint);
    snprintf (labels, sizeof labels, "endpoint=\"%s\",outcome=\"%s\"", esc, outcome);
    metrics_inc (metrics_counter (ev->metrics, "worker_webhook_attempts_total",
                                  "webhook delivery attempts by endpoint and outcome (delivered, retry, failed)", labels));
}

/* Abandons an attempt in flight when the worker stops. */
static int
stopping (void *arg)
{
    events_t *ev = arg;
    return atomic_load (&ev->stop) ? 1 : 0;
}

/* One claimed delivery: send it, then record what happened. probe: it is its endpoint's
 * half-open probe (breaker_record); claimed_ms: when the claim's statement was sent
 * (clock_mono_ms), no later than the database's now() that c->age_ms is as of. */
static void
deliver (lane_t *l, const store_events_claim_t *c, const char *lease_token, int probe, int64_t claimed_ms)
{
    events_t *ev = l->ev;
    char err [512], dberr [512];
    long status = 0;
    webhook_event_t we = { c->id, c->type, c->integration, c->provider, c->diagnosis, c->created_ms,
                           c->generation, c->detail, c->expires_at };
    char *body = webhook_body (&we);
    int unsendable = !body;
    webhook_outcome_t out = WEBHOOK_RETRY;
    store_events_result_t result = STORE_EVENTS_DELIVERED;
    int64_t retry_ms = 0, age_ms = c->age_ms;
    if (unsendable) {
        /* not sent, and failed at once: no attempt would do better, and the endpoint is not to
         * blame (such an event was sent as a signed "{}", and a 2xx recorded it delivered) */
        snprintf (err, sizeof err, "the event could not be made into a JSON body (a text of it is not UTF-8), so it "
                  "was not sent");
        if (probe)
            breaker_unused (l->held, c->endpoint);
        result = STORE_EVENTS_FAILED;
    }
    else {
        out = webhook_send (l->curl, l->ep, &we, body, (int64_t) time (NULL), ev->cfg.timeout_ms, stopping, ev,
                            &status, err, sizeof err);
        mem_free (body);
        if (out != WEBHOOK_DELIVERED && atomic_load (&ev->stop))
            return;                  /* abandoned: the lease expires and the event is sent again */
        breaker_record (l->held, c->endpoint, out != WEBHOOK_DELIVERED, probe, clock_mono_ms ());
        metrics_set (l->m_held, breaker_is_open (l->held, c->endpoint, 0));
        if (out != WEBHOOK_DELIVERED) {
            /* its age at the attempt's end (at most that: counted from before the claim): the
             * claim's earlier deliveries and this attempt took up to a lease since the claim was
             * read, and no retry is planned past the max age */
            age_ms += clock_mono_ms () - claimed_ms;
            retry_ms = webhook_backoff_ms (c->attempts, ev->cfg.backoff_base_ms, ev->cfg.backoff_max_ms, random64 ());
            result = age_ms + retry_ms > ev->cfg.max_age_s * 1000 ? STORE_EVENTS_FAILED : STORE_EVENTS_RETRY;
        }
    }
    int applied = 0;
    fr_status_t st = store_events_finish (l->store, c->seq, c->endpoint, lease_token, result, retry_ms, status,
                                          out == WEBHOOK_DELIVERED ? NULL : err, &applied, dberr, sizeof dberr);
    if (st != FR_OK) {
        metrics_inc (ev->m_db_errors);
        log_warning (c->integration, NULL, "event %s to webhook \"%s\": %s; its lease expires and it is sent again",
                     c->id, c->endpoint, dberr);
        return;
    }
    if (!applied) {
        /* nothing recorded: the outcome, its count and its report are the new owner's */
        log_info (c->integration, NULL, "event %s to webhook \"%s\": the lease had expired, another worker owns "
                  "the delivery now", c->id, c->endpoint);
        return;
    }
    count_delivery (ev, c->endpoint, result == STORE_EVENTS_DELIVERED ? "delivered"
                                     : result == STORE_EVENTS_FAILED ? "failed" : "retry");
    if (unsendable)
        log_warning (c->integration, NULL, "event %s (%s) to webhook \"%s\" failed: %s; \"ferrulectl events --event "
                     "%s\" shows it (a replay would fail the same way)", c->id, c->type, c->endpoint, err, c->id);
    else if (result == STORE_EVENTS_FAILED)
        log_warning (c->integration, NULL, "event %s (%s) to webhook \"%s\" failed after %d attempts over %lld s: %s; "
                     "\"ferrulectl events replay --event %s\" sends it again", c->id, c->type, c->endpoint, c->attempts,
                     (long long) (age_ms / 1000), err, c->id);
    else if (result == STORE_EVENTS_RETRY)
        log_info (c->integration, NULL, "event %s (%s) to webhook \"%s\": attempt %d: %s; next in %lld ms", c->id,
                  c->type, c->endpoint, c->attempts, err, (long long) retry_ms);
}

/* A statement of a thread failed: counted and logged, but for those the worker's stop cut short
 * (store_events_new), which say nothing of the database. */
static void
db_failed (events_t *ev, const char *err)
{
    if (atomic_load (&ev->stop))
        return;
    metrics_inc (ev->m_db_errors);
    log_warning (NULL, NULL, "%s", err);
}

/* A fan-out statement failed: it may fail at every pass, so it is said once a second. */
static void
fanout_failed (lane_t *l, const char *err)
{
    uint64_t held;
    if (atomic_load (&l->ev->stop))
        return;
    metrics_inc (l->ev->m_db_errors);
    if (lograte_take (&l->fan.fail_log, clock_mono_ms (), &held))
        log_warning (NULL, NULL, "webhook \"%s\": %s; its new events wait for its fan-out, the other endpoints' do "
                     "not (%llu more such lines since the last one)", l->ep->name, err, (unsigned long long) held);
}

static void
scan_begin (fanout_t *f, int64_t window_s, int catching_up, int64_t now)
{
    f->scanning = 1;
    f->catching_up = catching_up;
    f->window_s = window_s;
    f->started_ms = now;
    f->after = -1;
    f->wide = 0;
}

/* The endpoint's fan-out in steps: one step, more until deadline. 1 when it has more to do, 0
 * when it has ended, -1 when a statement failed (the next pass goes on from the last step). */
static int
scan_steps (lane_t *l, int64_t deadline)
{
    char err [512];
    fanout_t *f = &l->fan;
    const webhook_endpoint_t *ep = l->ep;
    if (f->after < 0 && store_events_scan_bounds (l->store, f->window_s + WINDOW_MARGIN_S, &f->after, &f->upto, err,
                                                  sizeof err) != FR_OK) {
        f->after = -1;
        fanout_failed (l, err);
        return -1;
    }
    do {
        int64_t window = f->window_s + (clock_mono_ms () - f->started_ms) / 1000 + 1;    /* from its start */
        int64_t next = f->after, added = 0;
        if (store_events_fanout_step (l->store, ep->name, ep->all_types ? NULL : (const char *const *) ep->types,
                                      ep->ntypes, window, f->after, f->upto, FANOUT_STEP, &next, &added, err,
                                      sizeof err) != FR_OK) {
            fanout_failed (l, err);
            return -1;
        }
        f->after = next;
    } while (f->after < f->upto && clock_mono_ms () < deadline && !atomic_load (&l->ev->stop));
    if (f->after < f->upto)
        return 1;
    f->scanning = 0;
    if (f->wide)
        f->wide_due = 0;
    if (f->catching_up)
        f->done_ms = f->started_ms;
    f->catching_up = 0;             /* or a catch-up longer than WINDOW_MAX_S never begins another */
    return 0;
}

/* The endpoint's fan-out in the pass begun at started: 1 when it has more to do at once, 0 when
 * it is done, -1 when a statement failed.
 * It looks back to just before its last complete one, so an integration's older event never
 * misses the fan-out that gives its newer one a row; the thread's first looks back over the max
 * age, or to the newest event the endpoint was given when that is older (every worker away for
 * longer: the max age counts from the first attempt, so such an event is still due); every 30 s
 * (late: the caller's timer) one looks back LATE_COMMIT_S, for transactions that committed late,
 * and once the connection was lost one looks over the whole max age (wide_due).
 * Up to WINDOW_MAX_S that is one statement. A longer look back goes in steps of FANOUT_STEP
 * events in seq order, up to the newest seq when it began, each step a bounded statement that
 * the next pass goes on from: one statement over weeks of events timed out at every pass, and its
 * window only grew. The steps keep the order: an event up to that seq was written before they
 * began, after its integration's earlier events had committed, so an earlier step saw those.
 * Events written since are the short look back's, which waits for a catch-up's steps (it would
 * give an integration's new event a row before an old one's step); the looks for late commits
 * are no catch-up, and the short ones go on beside them. */
static int
fanout (lane_t *l, int late, int64_t started, int64_t deadline)
{
    char err [512];
    fanout_t *f = &l->fan;
    const webhook_endpoint_t *ep = l->ep;
    int64_t max_age_s = l->ev->cfg.max_age_s;
    int64_t since = (started - f->done_ms) / 1000 + WINDOW_MARGIN_S, age = -1, added = 0;
    int more = 0;
    if (!f->done_ms && !f->scanning) {
        if (store_events_fanned_age (l->store, ep->name, &age, err, sizeof err) != FR_OK) {
            fanout_failed (l, err);
            return -1;
        }
        scan_begin (f, age >= 0 && age + WINDOW_MARGIN_S > max_age_s ? age + WINDOW_MARGIN_S : max_age_s, 1, started);
    }
    else if (f->done_ms && since > WINDOW_MAX_S && !f->catching_up)
        scan_begin (f, since, 1, started);          /* in place of a look for late commits */
    else if ((late || f->wide_due) && !f->scanning) {
        /* no further than the max age, as the thread's first look */
        int64_t span = f->wide_due || max_age_s < LATE_COMMIT_S ? max_age_s : LATE_COMMIT_S;
        scan_begin (f, since > span ? since : span, 0, started);
        f->wide = f->wide_due;
    }
    if (f->scanning) {
        more = scan_steps (l, deadline);
        if (more < 0 || (more > 0 && f->catching_up))
            return more;
    }
    since = (started - f->done_ms) / 1000 + WINDOW_MARGIN_S;
    if (since > WINDOW_MAX_S)
        return 1;                                   /* its catch-up took long: another, at once */
    /* an integration's newer event waits for the row of an older one that committed late, as
     * long as the next look for late commits, LATE_FANOUT_MS away at most, still reaches that
     * one with room to spare; older ones do not hold it back (the order is kept for
     * transactions up to that long) */
    int64_t span = max_age_s < LATE_COMMIT_S ? max_age_s : LATE_COMMIT_S;
    int64_t hold = span - 2 * LATE_FANOUT_MS / 1000;
    if (store_events_fanout (l->store, ep->name, ep->all_types ? NULL : (const char *const *) ep->types, ep->ntypes,
                             since, hold, &added, err, sizeof err) != FR_OK) {
        fanout_failed (l, err);
        return -1;
    }
    f->done_ms = started;
    return more;
}

/* Keeps n claimed deliveries not sent for want of a connection, to give them back once there is one. */
static void
strand (lane_t *l, const store_events_claim_t *claims, size_t n, const char *lease)
{
    l->nstranded = 0;
    for (size_t i = 0; i < n && l->nstranded < CLAIM_BATCH; i++) {
        store_events_claim_t *c = &l->stranded [l->nstranded++];
        memset (c, 0, sizeof *c);
        c->seq = claims [i].seq;
        c->endpoint = l->ep->name;          /* borrowed: store_events_release reads it */
    }
    snprintf (l->stranded_lease, sizeof l->stranded_lease, "%s", lease);
    log_info (NULL, NULL, "event deliveries to webhook \"%s\" not sent: %zu, the database connection was lost; they "
              "are given back once it is back", l->ep->name, l->nstranded);
}

/* Gives them back: their leases would hold their integrations' queues until they expired. */
static void
release_stranded (lane_t *l)
{
    char err [512];
    int64_t released = 0;
    if (store_events_release (l->store, l->stranded, l->nstranded, l->stranded_lease, &released, err,
                              sizeof err) != FR_OK) {
        db_failed (l->ev, err);
        if (!store_events_connected (l->store))
            return;                                 /* at the next connection */
    }
    else
        log_info (NULL, NULL, "event deliveries to webhook \"%s\" given back unsent after the database connection "
                  "was lost: %lld", l->ep->name, (long long) released);
    l->nstranded = 0;                               /* or their leases expire */
}

/* The worker is stopping: claimed deliveries not sent are given back (within STOP_GRACE_MS,
 * events_destroy), or their leases expire. */
static void
give_back_at_stop (lane_t *l, const store_events_claim_t *claims, size_t n, const char *lease)
{
    char err [512];
    int64_t released = 0;
    if (!store_events_connected (l->store))
        return;
    if (store_events_release (l->store, claims, n, lease, &released, err, sizeof err) != FR_OK)
        log_warning (NULL, NULL, "%s; %zu claimed event deliveries stay leased until their leases expire", err, n);
    else
        log_info (NULL, NULL, "event deliveries given back unsent at the stop: %lld", (long long) released);
}

/* One pass of the endpoint's thread: fan out its new events, claim what is due, send it. 1 when
 * work was found, or is left. A failed fan-out does not hold the claim: a statement that failed
 * changed nothing, and every one leaves each integration's delivery rows those of its earliest
 * events (fanout), which is all the claim's order needs; other workers claim them meanwhile
 * anyway. Its new events wait for its next fan-out. */
static int
deliver_pass (lane_t *l, int late)
{
    events_t *ev = l->ev;
    char err [512];
    int64_t started = clock_mono_ms (), retry_s;
    if (l->nstranded)
        release_stranded (l);
    int more = fanout (l, late, started, started + FANOUT_PASS_MS);
    if (more < 0 && !store_events_connected (l->store))
        return 0;                                   /* the claim would fail too */
    more = more > 0;
    if (atomic_load (&ev->stop))
        return 0;
    /* a held endpoint is not claimed from: its deliveries wait in the database, and the claim does
     * not read its queues, until its hold ends and one of them is its probe; but its test events
     * are (an operator's test goes at once, as the probe) */
    const char *name = l->ep->name;
    int blocked = breaker_blocked (l->held, name, clock_mono_ms (), &retry_s);
    char lease [STORE_EVENTS_LEASE_LEN + 1];
    store_events_claim_t *claims = NULL, *back = NULL;
    size_t count = 0, nback = 0, nlate = 0;
    int64_t claimed_ms = clock_mono_ms ();       /* before the claim: its lease runs from later */
    if (store_events_claim (l->store, blocked ? NULL : &name, blocked ? 0 : 1, blocked ? &name : NULL, blocked ? 1 : 0,
                            ev->cfg.lease_ms, CLAIM_BATCH, lease, &claims, &count, err, sizeof err) != FR_OK) {
        db_failed (ev, err);
        return 0;
    }
    int64_t claim_ended_ms = clock_mono_ms ();
    /* the claim's deliveries go one after another under one lease: one is attempted only if the
     * attempt ends within the lease, however long it takes; past the lease another worker's claim
     * takes the delivery, and both would send it at once. Those, and those of an endpoint held
     * meanwhile (or whose probe is out), are given back. Once the connection is lost (recording an
     * attempt) none is sent: its outcome could not be recorded, its lease would expire, and it
     * would be sent again; they are given back once connected. So are those left at a stop, at
     * once: they held their queues until their leases expired, an attempt counted for each. */
    back = mem_alloc ((count ? count : 1) * sizeof *back);
    for (size_t i = 0; i < count; i++) {
        int allowed;
        if (atomic_load (&ev->stop) || !store_events_connected (l->store))
            back [nback++] = claims [i];
        else if (clock_mono_ms () + ev->cfg.timeout_ms >= claimed_ms + ev->cfg.lease_ms) {
            back [nback++] = claims [i];
            nlate++;
        }
        else if (strcmp (claims [i].endpoint, name) != 0)
            back [nback++] = claims [i];            /* not claimable: the claim names only ours */
        else if (!claims [i].integration && breaker_is_open (l->held, name, 0)) {
            /* an operator's test of a held endpoint goes now, as its probe */
            breaker_probe (l->held, name);
            deliver (l, &claims [i], lease, 1, claimed_ms);
        }
        else if (!(allowed = breaker_allow (l->held, name, clock_mono_ms (), &retry_s)))
            back [nback++] = claims [i];
        else
            deliver (l, &claims [i], lease, allowed == 2, claimed_ms);
    }
    if (nback && atomic_load (&ev->stop))
        give_back_at_stop (l, back, nback, lease);
    else if (nback && !store_events_connected (l->store))
        strand (l, back, nback, lease);
    else if (nback) {
        int64_t released = 0;
        if (store_events_release (l->store, back, nback, lease, &released, err, sizeof err) != FR_OK)
            db_failed (ev, err);       /* their leases expire instead */
        else if (nlate == count) {
            /* not one attempted: the claim itself took the lease's room beyond an attempt (a slow
             * database), and the next claim may do the same */
            uint64_t quiet;
            if (lograte_take (&l->late_log, clock_mono_ms (), &quiet))
                log_warning (NULL, NULL, "event deliveries given back unsent: all %lld of a claim that took %lld ms "
                             "(FERRULE_WEBHOOK_LEASE_MS %lld, FERRULE_WEBHOOK_TIMEOUT_MS %lld: an attempt must end "
                             "within the lease); a slow database makes this happen, a longer lease makes room "
                             "(%llu more such claims since the last line)", (long long) nlate,
                             (long long) (claim_ended_ms - claimed_ms), (long long) ev->cfg.lease_ms,
                             (long long) ev->cfg.timeout_ms, (unsigned long long) quiet);
        }
        else if (nlate)
            log_info (NULL, NULL, "event deliveries given back unsent: %lld; their attempts could not have ended "
                      "within the lease (FERRULE_WEBHOOK_LEASE_MS %lld, FERRULE_WEBHOOK_TIMEOUT_MS %lld); a "
                      "slow receiver makes this happen", (long long) nlate, (long long) ev->cfg.lease_ms,
                      (long long) ev->cfg.timeout_ms);
    }
    mem_free (back);                         /* copies: the claims own their strings */
    store_events_claims_free (&claims, count);
    return count > nback || more;
}

static void
forecast_pass (lane_t *l)
{
    events_t *ev = l->ev;
    char err [512];
    for (size_t i = 0; i < ev->nproviders; i++) {
        const forecast_provider_t *p = &ev->providers [i];
        int64_t added = 0;
        if (store_events_forecast (l->store, p->name, p->idle_s, (int64_t) (p->idle_s * FORECAST_SHARE),
                                   p->grant_s, (int64_t) (p->grant_s * FORECAST_SHARE), ev->cfg.forecast_ms, &added,
                                   err, sizeof err) != FR_OK) {
            db_failed (ev, err);
            if (!store_events_connected (l->store))
                return;
            continue;           /* one provider's timeout (a large table) is not the others' */
        }
        if (added) {
            metrics_add (ev->m_forecasts, (uint64_t) added);
            log_info (NULL, NULL, "%lld integration(s) of provider \"%s\" are expected to expire soon: \"expiring\" "
                      "events recorded", (long long) added, p->name);
        }
    }
}

/* wait, or less when the timer at comes sooner (0 when it is due) */
static int64_t
timer_wait (int64_t wait, int64_t at, int64_t now)
{
    int64_t left = at > now ? at - now : 0;
    return left < wait ? left : wait;
}

/* A thread: an endpoint's deliveries, or the forecasts and the counts (lane_t). */
static void *
lane_thread (void *arg)
{
    lane_t *l = arg;
    events_t *ev = l->ev;
    char err [512], whose [WEBHOOK_NAME_MAX + 32];
    int64_t next_connect = 0, next_late = 0, next_forecast = 0, next_stats = 0;
    int logged_down = 0, was_connected = 0;
    size_t nendpoints = webhook_set_count (ev->endpoints);
    if (l->ep)
        snprintf (whose, sizeof whose, "webhook \"%s\"", l->ep->name);
    else
        snprintf (whose, sizeof whose, "forecasts and counts");
    while (!atomic_load (&ev->stop)) {
        int64_t now = clock_mono_ms ();
        int busy = 0;
        if (!store_events_connected (l->store) && now >= next_connect) {
            next_connect = now + RECONNECT_MS;
            if (store_events_connect (l->store, err, sizeof err) != FR_OK) {
                if (!logged_down && !atomic_load (&ev->stop))
                    log_warning (NULL, NULL, "event delivery (%s) waits for the database: %s", whose, err);
                logged_down = 1;
            }
            else {
                if (logged_down)
                    log_info (NULL, NULL, "event delivery connected to the database again (%s)", whose);
                logged_down = 0;
                /* a transaction may have been open through the loss (a stalled disk holds its
                 * commit, and this thread's own statements failed meanwhile) for longer than the
                 * look for late commits goes back */
                if (was_connected)
                    l->fan.wide_due = 1;
                was_connected = 1;
            }
        }
        if (store_events_connected (l->store)) {
            store_events_consume (l->store);
            if (l->ep) {
                int late = now >= next_late;
                if (late)
                    next_late = now + LATE_FANOUT_MS;
                busy = deliver_pass (l, late);
            }
            else {
                if (now >= next_forecast) {
                    next_forecast = now + ev->cfg.forecast_ms;
                    forecast_pass (l);
                }
                if (now >= next_stats && nendpoints && store_events_connected (l->store)) {
                    int64_t pending = 0, failed_n = 0;
                    next_stats = now + STATS_MS;
                    if (store_events_counts (l->store, ev->names, nendpoints, &pending, &failed_n, err,
                                             sizeof err) == FR_OK) {
                        metrics_set (ev->m_pending, pending);
                        metrics_set (ev->m_failed_rows, failed_n);
                    }
                    else {
                        /* said, as every failed statement here: the alert's gauge would only
                         * go stale */
                        char why [sizeof err + 160];
                        snprintf (why, sizeof why, "%s; ferrule_worker_events_pending and ferrule_worker_events_failed "
                                  "keep the values of the last count that worked", err);
                        db_failed (ev, why);
                    }
                }
            }
            if (atomic_load (&ev->stop))
                break;
        }
        if (busy)
            continue;                /* more may be due at once */
        /* asleep until a wake-up or the first of the timers: the poll for due deliveries and the
         * fan-out, or the forecasts and counts, and the reconnection, each of which keeps its own
         * interval (a poll of a minute used to put each of them a minute apart) */
        int64_t wait = l->ep ? ev->cfg.poll_ms : STATS_MS;
        now = clock_mono_ms ();
        if (!store_events_connected (l->store))
            wait = timer_wait (wait, next_connect, now);
        else if (l->ep)
            wait = timer_wait (wait, next_late, now);
        else {
            wait = timer_wait (wait, next_forecast, now);
            if (nendpoints)
                wait = timer_wait (wait, next_stats, now);
        }
        struct pollfd fds [2] = { { l->wake [0], POLLIN, 0 }, { store_events_socket (l->store), POLLIN, 0 } };
        int rc = poll (fds, fds [1].fd >= 0 ? 2 : 1, (int) wait);
        if (rc > 0 && (fds [0].revents & POLLIN)) {
            char b [16];
            ssize_t r = read (l->wake [0], b, sizeof b);
            (void) r;
        }
    }
    if (l->nstranded)               /* connected again, the stop came before the pass */
        give_back_at_stop (l, l->stranded, l->nstranded, l->stranded_lease);
    uint64_t one = 1;
    ssize_t r = write (ev->exited_fd, &one, sizeof one);
    (void) r;
    return NULL;
}

int
events_config_check (int64_t timeout_ms, int64_t lease_ms, int64_t backoff_base_ms, int64_t backoff_max_ms,
                     char *err, size_t errlen)
{
    /* a lease that expires during an attempt lets another worker send the same event at the
     * same time, so an attempt starts only if it ends within the lease, counted from before the
     * claim: a margin smaller than the claim's own time let none start, ever */
    if (lease_ms < timeout_ms + EVENTS_LEASE_MARGIN_MS) {
        snprintf (err, errlen, "FERRULE_WEBHOOK_LEASE_MS (%lld) must exceed FERRULE_WEBHOOK_TIMEOUT_MS (%lld) by at "
                  "least %d ms: an attempt is made only if it ends within the lease, and the claim itself takes some "
                  "of it", (long long) lease_ms, (long long) timeout_ms, EVENTS_LEASE_MARGIN_MS);
        return -1;
    }
    /* the longest wait caps the first as well, and the breaker's holds between probes */
    if (backoff_max_ms < backoff_base_ms) {
        snprintf (err, errlen, "FERRULE_WEBHOOK_BACKOFF_MAX_MS (%lld) must be at least FERRULE_WEBHOOK_BACKOFF_BASE_MS "
                  "(%lld): it is the longest wait between two attempts, the first one's included",
                  (long long) backoff_max_ms, (long long) backoff_base_ms);
        return -1;
    }
    return 0;
}

breaker_t *
events_hold_new (const events_config_t *cfg)
{
    int64_t first_hold = cfg->backoff_base_ms > HOLD_FIRST_MIN_MS ? cfg->backoff_base_ms : HOLD_FIRST_MIN_MS;
    /* an endpoint that hangs fails at most once per timeout, and the claim comes between: a fixed
     * minute never saw five failures of a timeout of 15 s or more, and such an endpoint cost a
     * timeout in every claim it led */
    int64_t spaced = 2 * (HOLD_MIN_FAILURES - 1) * cfg->timeout_ms;
    int64_t window = spaced > HOLD_WINDOW_MS ? spaced : HOLD_WINDOW_MS;
    return breaker_new ("webhook", HOLD_MIN_FAILURES, window, first_hold, cfg->backoff_max_ms);
}

/* Lane i's connection, handle, pipe and breaker (its thread starts later): 0, or -1 and why in err. */
static int
lane_init (events_t *ev, size_t i, char *err, size_t errlen)
{
    lane_t *l = &ev->lanes [i];
    l->ev = ev;
    l->wake [0] = l->wake [1] = -1;
    l->late_log.interval_ms = 60000;
    l->ep = webhook_set_at (ev->endpoints, i);      /* NULL past the last endpoint: the forecasts' */
    l->store = store_events_new (ev->database_url, ev->worker_id, l->ep ? l->ep->name : NULL, ev->cfg.statement_ms,
                                 ev->stop_fd);
    if (pipe (l->wake) != 0) {
        snprintf (err, errlen, "could not create an event thread's wake-up pipe: %s", strerror (errno));
        return -1;
    }
    fcntl (l->wake [0], F_SETFL, O_NONBLOCK);
    fcntl (l->wake [1], F_SETFL, O_NONBLOCK);
    if (!l->ep)
        return 0;
    if (!(l->curl = curl_easy_init ())) {
        snprintf (err, errlen, "could not create an HTTP handle for webhooks");
        return -1;
    }
    char labels [160], esc [140];
    l->held = events_hold_new (&ev->cfg);
    metrics_label_escape (esc, sizeof esc, l->ep->name);
    snprintf (labels, sizeof labels, "endpoint=\"%s\"", esc);
    l->m_held = metrics_gauge (ev->metrics, "worker_webhook_held", "1 while this worker holds an endpoint's "
                               "deliveries after failures in a row (probing it now and then), else 0", labels);
    metrics_set (l->m_held, 0);
    return 0;
}

events_t *
events_new (const events_config_t *cfg, const catalog_t *catalog, metrics_t *metrics, char *err, size_t errlen)
{
    events_t *ev = mem_alloc (sizeof *ev);
    ev->cfg = *cfg;
    ev->stop_fd = ev->exited_fd = -1;
    ev->worker_id = mem_strdup (cfg->worker_id);
    ev->cfg.worker_id = ev->worker_id;
    ev->cfg.database_url = NULL;
    ev->cfg.webhooks_file = NULL;
    if (cfg->webhooks_file && *cfg->webhooks_file) {
        ev->endpoints = webhook_set_load (cfg->webhooks_file, err, errlen);
        if (!ev->endpoints)
            goto fail;
        webhook_set_forget_environment (ev->endpoints);
    }
    size_t n = webhook_set_count (ev->endpoints);
    ev->names = mem_alloc ((n + 1) * sizeof *ev->names);
    for (size_t i = 0; i < n; i++) {
        const webhook_endpoint_t *ep = webhook_set_at (ev->endpoints, i);
        char shown [WEBHOOK_URL_MAX + 1];
        ev->names [i] = ep->name;
        webhook_endpoint_shown (ep, shown, sizeof shown);
        log_info (NULL, NULL, "webhook \"%s\": %s, events %s", ep->name, shown, ep->all_types ? "all" : "listed");
    }
    size_t np = catalog ? catalog_count (catalog) : 0;
    ev->providers = mem_alloc ((np + 1) * sizeof *ev->providers);
    for (size_t i = 0; i < np; i++) {
        const catalog_provider_t *p = catalog_at (catalog, i);
        if (!p->refresh_token_idle_days && !p->grant_max_days)
            continue;
        forecast_provider_t *f = &ev->providers [ev->nproviders++];
        f->name = mem_strdup (p->name);
        f->idle_s = (int64_t) p->refresh_token_idle_days * 86400;
        f->grant_s = (int64_t) p->grant_max_days * 86400;
    }
    ev->database_url = mem_strdup (cfg->database_url);
    ev->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    ev->exited_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ev->stop_fd < 0 || ev->exited_fd < 0) {
        snprintf (err, errlen, "could not create the event threads' stop descriptors: %s", strerror (errno));
        goto fail;
    }
    ev->metrics = metrics;
    char help [256];
    snprintf (help, sizeof help, "deliveries to this worker's configured webhook endpoints not yet delivered nor "
              "failed (whole database; counted up to %d, which means at least as many)", STORE_EVENTS_COUNT_CAP);
    ev->m_pending = metrics_gauge (metrics, "worker_events_pending", help, NULL);
    snprintf (help, sizeof help, "deliveries to this worker's configured webhook endpoints that gave up (ferrulectl "
              "events replay; whole database; counted up to %d, which means at least as many)", STORE_EVENTS_COUNT_CAP);
    ev->m_failed_rows = metrics_gauge (metrics, "worker_events_failed", help, NULL);
    ev->m_forecasts = metrics_counter (metrics, "worker_events_forecast_total",
                                       "expiring events this worker recorded from the catalog's limits", NULL);
    ev->m_db_errors = metrics_counter (metrics, "worker_events_database_errors_total",
                                       "statements of the event delivery threads that failed", NULL);
    ev->lanes = mem_alloc ((n + 1) * sizeof *ev->lanes);
    for (; ev->nlanes < n + 1; ev->nlanes++)
        if (lane_init (ev, ev->nlanes, err, errlen) != 0) {
            ev->nlanes++;                            /* so that destroy frees what it has */
            goto fail;
        }
    for (size_t i = 0; i < ev->nlanes; i++) {
        /* the lanes take no signals: they belong to the loop's thread */
        sigset_t old;
        daemon_threads_begin (&old);
        int rc = pthread_create (&ev->lanes [i].thread, NULL, lane_thread, &ev->lanes [i]);
        daemon_threads_done (&old);
        if (rc != 0) {
            snprintf (err, errlen, "could not start an event delivery thread");
            goto fail;
        }
        ev->lanes [i].started = 1;
    }
    return ev;
fail:
    events_destroy (&ev);
    return NULL;
}

void
events_wake (events_t *ev)
{
    /* non-blocking: a full pipe already holds a wake-up the thread has not read */
    for (size_t i = 0; ev && i < ev->nlanes; i++)
        if (ev->lanes [i].ep && ev->lanes [i].wake [1] >= 0) {
            ssize_t r = write (ev->lanes [i].wake [1], "x", 1);
            (void) r;
        }
}

void
events_destroy (events_t **ev_p)
{
    if (!ev_p || !*ev_p)
        return;
    events_t *ev = *ev_p;
    size_t started = 0;
    uint64_t exited = 0, one = 1, count;
    atomic_store (&ev->stop, 1);
    for (size_t i = 0; i < ev->nlanes; i++)
        if (ev->lanes [i].started) {
            ssize_t r = write (ev->lanes [i].wake [1], "x", 1);
            (void) r;
            started++;
        }
    if (started) {
        /* their statements go on for a moment: an outcome recorded, and the deliveries they claimed
         * and did not send given back, spare their sending again after the lease; then they end,
         * since a stalled database would hold the stop for ever */
        int64_t until = clock_mono_ms () + STOP_GRACE_MS, left;
        struct pollfd fd = { ev->exited_fd, POLLIN, 0 };
        while (exited < started && (left = until - clock_mono_ms ()) > 0)
            if (poll (&fd, 1, (int) left) == 1 && read (ev->exited_fd, &count, sizeof count) == (ssize_t) sizeof count)
                exited += count;
        ssize_t r = write (ev->stop_fd, &one, sizeof one);
        (void) r;
    }
    for (size_t i = 0; i < ev->nlanes; i++) {
        lane_t *l = &ev->lanes [i];
        if (l->started)
            pthread_join (l->thread, NULL);
        for (int k = 0; k < 2; k++)
            if (l->wake [k] >= 0)
                close (l->wake [k]);
        if (l->curl)
            curl_easy_cleanup (l->curl);
        store_events_destroy (&l->store);
        breaker_destroy (&l->held);
    }
    if (ev->stop_fd >= 0)
        close (ev->stop_fd);
    if (ev->exited_fd >= 0)
        close (ev->exited_fd);
    webhook_set_destroy (&ev->endpoints);
    mem_free (ev->lanes);
    mem_free (ev->names);
    for (size_t i = 0; i < ev->nproviders; i++)
        mem_free (ev->providers [i].name);
    mem_free (ev->providers);
    mem_free_secret (&ev->database_url);
    mem_free (ev->worker_id);
    mem_free (ev);
    *ev_p = NULL;
}

/* ---------------------------------------------------------------- operations */

/* An optional string field (fields_str) into out (max + 1 bytes): 0 absent, 1 present, -1 refused
 * (reply sent). */
static int
opt_str (worker_t *w, job_t *job, const msgpack_object *root, const char *key, size_t max, char *out)
{
    char *s = NULL;
    int r = fields_str (w, job, root, key, max, 0, &s);
    if (r == 1) {
        memcpy (out, s, strlen (s) + 1);
        mem_free (s);
    }
    return r;
}

static int
valid_uuid (const char *s)
{
    if (strlen (s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s [i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        }
        else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

/* The common fields: integration, event, endpoint; -1 when refused (reply sent). */
static int
read_filters (worker_t *w, job_t *job, const msgpack_object *root, char *integration, char *event, char *endpoint)
{
    int r;
    if ((r = opt_str (w, job, root, "integration", IDENT_MAX, integration)) < 0)
        return -1;
    if (r == 1 && !ident_valid (integration, strlen (integration))) {
        reply_error (w, job, FR_BAD_REQUEST, "\"integration\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                            NULL, -1);
        return -1;
    }
    if ((r = opt_str (w, job, root, "event", 36, event)) < 0)
        return -1;
    if (r == 1 && !valid_uuid (event)) {
        reply_error (w, job, FR_BAD_REQUEST, "\"event\" must be an event id (a UUID, as \"ferrulectl events\" "
                            "lists them)", NULL, -1);
        return -1;
    }
    if (endpoint && opt_str (w, job, root, "endpoint", WEBHOOK_NAME_MAX, endpoint) < 0)
        return -1;
    return 0;
}

static void
pack_json (codec_builder_t *o, json_t *v)
{
    if (json_is_string (v))
        codec_str (o, json_string_value (v));
    else if (json_is_integer (v))
        codec_int (o, json_integer_value (v));
    else if (json_is_boolean (v))
        codec_bool (o, json_is_true (v));
    else if (json_is_object (v)) {
        const char *k;
        json_t *x;
        codec_map (o, (uint32_t) json_object_size (v));
        json_object_foreach (v, k, x) {
            codec_str (o, k);
            pack_json (o, x);
        }
    }
    else if (json_is_array (v)) {
        size_t i;
        json_t *x;
        codec_array (o, (uint32_t) json_array_size (v));
        json_array_foreach (v, i, x)
            pack_json (o, x);
    }
    else
        codec_nil (o);
}

/* --- the operations' statements: each request's work is queued (dbwait.c) for a free connection
 * and answered from its batch's end, so the loop never waits for the database. What the request
 * said is copied first: its body is gone when the handler returns. */

/* A listing or a replay waiting for its batch: its filters ("" for absent). */
typedef struct {
    dbwait_req_t req;
    char integration [IDENT_MAX + 1], event [40], since [48], until [48], before [40];
    char endpoint [WEBHOOK_NAME_MAX + 1];
    int64_t limit;
    char configured [WEBHOOK_MAX_ENDPOINTS][WEBHOOK_NAME_MAX + 1];  /* a replay's: the endpoints' names */
    size_t nconfigured;
} op_wait_t;

static op_wait_t *
op_wait_new (worker_t *w, const job_t *job, const char *integration, const char *event, const char *endpoint)
{
    op_wait_t *ow = mem_alloc (sizeof *ow);
    memset (ow, 0, sizeof *ow);
    ow->req.w = w;
    ow->req.job = *job;
    snprintf (ow->integration, sizeof ow->integration, "%s", integration);
    snprintf (ow->event, sizeof ow->event, "%s", event);
    snprintf (ow->endpoint, sizeof ow->endpoint, "%s", endpoint);
    return ow;
}

static const char *
or_null (const char *s)
{
    return s [0] ? s : NULL;
}

/* The events reply with the first n of rows into the worker's reply builder. */
static void
listed_pack (worker_t *w, const job_t *job, const store_event_t *rows, size_t n, int truncated)
{
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_kv_bool (o, "truncated", truncated);
    codec_str (o, "events");
    codec_array (o, (uint32_t) n);
    for (size_t i = 0; i < n; i++) {
        const store_event_t *e = &rows [i];
        codec_map (o, 10);
        codec_kv_str (o, "id", e->id);
        codec_kv_str (o, "type", e->type);
        codec_kv_str (o, "integration", e->integration);
        codec_kv_str (o, "provider", e->provider);
        codec_kv_str (o, "diagnosis", e->diagnosis);
        codec_str (o, "generation");
        if (e->has_generation)
            codec_int (o, e->generation);
        else
            codec_nil (o);
        codec_kv_str (o, "detail", e->detail);
        codec_kv_str (o, "at", e->at);
        codec_kv_str (o, "expires_at", e->expires_at);
        codec_str (o, "deliveries");
        json_t *d = e->deliveries ? json_loads (e->deliveries, 0, NULL) : NULL;
        pack_json (o, json_is_array (d) ? d : NULL);
        json_decref (d);
    }
}

static void
listed (void *arg, fr_status_t st, const store_event_t *rows, size_t nrows, const char *err)
{
    op_wait_t *ow = arg;
    worker_t *w = ow->req.w;
    job_t *job = &ow->req.job;
    if (st != FR_OK) {
        reply_error (w, job, st, err, st == FR_NOT_FOUND && ow->before [0]
                     ? "the event may have been pruned: list again with \"until\" set to the time of the last one "
                       "shown, in place of \"before\"" : NULL, -1);
        goto out;
    }
    /* as many as fit one reply frame, and the objects a client decodes (a thousand events with
     * their deliveries are more), up to the limit; the store read one more, so "truncated" says
     * there were more, to be listed with "before" */
    size_t n = 0, bytes = 0;
    for (; n < nrows && n < (size_t) ow->limit; n++) {
        bytes += rows [n].bytes;
        if (bytes > LIST_MAX_BYTES)
            break;
    }
    char why [200];
    for (;;) {
        listed_pack (w, job, rows, n, n < nrows);
        if (n == 0 || reply_fits (w, why, sizeof why))
            break;
        n = n - 1 - n / 8;
    }
    reply_send (w, job);
out:
    mem_free (ow);
}

/* One batch on a free connection (dbwait.c; dropped unread when the deadline passed). */
static fr_status_t
list_start (store_t *store, void *req, char *err, size_t errlen)
{
    op_wait_t *ow = req;
    const store_events_filter_t f = { or_null (ow->integration), or_null (ow->event), or_null (ow->since),
                                      or_null (ow->until), or_null (ow->before) };
    return store_events_list_start (store, &f, ow->limit, listed, ow, err, errlen);
}

/* An optional time field as epoch seconds in out ("" when absent); -1 when refused (reply sent).
 * The store compares whole seconds: a fraction is dropped, or with up set (an exclusive bound:
 * "until") rounds up, so that an event in that second is listed twice, by two pages, rather than
 * by none (the hint of a pruned "before" pages on with "until" set to an event's time). */
static int
opt_time (worker_t *w, job_t *job, const msgpack_object *root, const char *key, int up, char *out, size_t outlen)
{
    char text [48] = "";
    int r = opt_str (w, job, root, key, 40, text);
    if (r <= 0)
        return r;
    int64_t epoch = 0;
    if (clock_parse_rfc3339 (text, &epoch) != 0) {
        char message [96];
        snprintf (message, sizeof message, "\"%s\" must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z", key);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    const char *frac = strchr (text, '.');
    if (up && frac && strspn (frac + 1, "0") < strspn (frac + 1, "0123456789"))
        epoch++;
    snprintf (out, outlen, "%lld", (long long) epoch);
    return 1;
}

void
events_op_list (worker_t *w, job_t *job, const msgpack_object *root)
{
    char integration [IDENT_MAX + 1] = "", event [40] = "", since [48] = "", until [48] = "", before [40] = "";
    int64_t limit = 100;
    if (read_filters (w, job, root, integration, event, NULL) < 0
        || opt_time (w, job, root, "since", 0, since, sizeof since) < 0
        || opt_time (w, job, root, "until", 1, until, sizeof until) < 0)
        return;
    /* the two swapped listed nothing, which read as "no such events" */
    if (since [0] && until [0] && strtoll (since, NULL, 10) >= strtoll (until, NULL, 10)) {
        reply_error (w, job, FR_BAD_REQUEST, "\"since\" must be earlier than \"until\": no event is from the one "
                     "time on and before the other", "swap them: \"since\" is where the window begins, \"until\" "
                     "where it ends", -1);
        return;
    }
    /* the next page of a truncated listing: the events older than the last one it showed */
    int r = opt_str (w, job, root, "before", 36, before);
    if (r < 0)
        return;
    if (r == 1 && !valid_uuid (before)) {
        reply_error (w, job, FR_BAD_REQUEST, "\"before\" must be an event id (a UUID: the last one a truncated "
                     "listing showed, for the events older than it)", NULL, -1);
        return;
    }
    r = codec_get_int (root, "limit", &limit);
    if (r < 0 || limit < 1 || limit > LIST_MAX) {
        reply_error (w, job, FR_BAD_REQUEST, "\"limit\" must be an integer from 1 to 1000", NULL, -1);
        return;
    }
    op_wait_t *ow = op_wait_new (w, job, integration, event, "");
    snprintf (ow->since, sizeof ow->since, "%s", since);
    snprintf (ow->until, sizeof ow->until, "%s", until);
    snprintf (ow->before, sizeof ow->before, "%s", before);
    ow->limit = limit;
    dbwait_request (&ow->req, list_start);
}

static void
replayed (void *arg, fr_status_t st, int64_t count, int64_t not_configured, const char *err)
{
    op_wait_t *ow = arg;
    if (st != FR_OK)
        reply_error (ow->req.w, &ow->req.job, st, err, NULL, -1);
    else {
        if (not_configured > 0)
            log_info (or_null (ow->integration), ow->req.job.rid, "%lld failed event deliveries queued again, %lld "
                      "left failed: their endpoint is no longer configured", (long long) count,
                      (long long) not_configured);
        else
            log_info (or_null (ow->integration), ow->req.job.rid, "%lld failed event deliveries queued again",
                      (long long) count);
        codec_builder_t *o = reply_begin (ow->req.w, &ow->req.job, 1, 2);
        codec_kv_int (o, "replayed", count);
        codec_kv_int (o, "not_configured", not_configured);
        reply_send (ow->req.w, &ow->req.job);
    }
    mem_free (ow);
}

/* One batch on a free connection (dbwait.c; dropped unwritten when the deadline passed). Only
 * the configured endpoints' deliveries: each delivery thread claims its own endpoint's, so one
 * queued for a name no longer configured would stay pending for good. */
static fr_status_t
replay_start (store_t *store, void *req, char *err, size_t errlen)
{
    op_wait_t *ow = req;
    const char *names [WEBHOOK_MAX_ENDPOINTS];
    for (size_t i = 0; i < ow->nconfigured; i++)
        names [i] = ow->configured [i];
    return store_events_replay_start (store, or_null (ow->event), or_null (ow->integration), or_null (ow->endpoint),
                                      names, ow->nconfigured, replayed, ow, err, errlen);
}

/* 1 when name is a configured endpoint's; else replies not_found, naming those that are. */
static int
replay_endpoint_known (worker_t *w, job_t *job, const char *name)
{
    size_t n = w->events ? webhook_set_count (w->events->endpoints) : 0;
    char hint [WEBHOOK_MAX_ENDPOINTS * (WEBHOOK_NAME_MAX + 2) + 256] = "", message [WEBHOOK_NAME_MAX + 96];
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const char *each = webhook_set_at (w->events->endpoints, i)->name;
        if (strcmp (each, name) == 0)
            return 1;
    }
    if (n == 0)
        snprintf (hint, sizeof hint, "no webhook endpoint is configured (FERRULE_WEBHOOKS_FILE); a delivery to an "
                  "endpoint no longer configured cannot be sent again");
    else {
        used = (size_t) snprintf (hint, sizeof hint, "the configured endpoints are ");
        for (size_t i = 0; i < n && used < sizeof hint; i++)
            used += (size_t) snprintf (hint + used, sizeof hint - used, "%s%s", i ? ", " : "",
                                       webhook_set_at (w->events->endpoints, i)->name);
        if (used < sizeof hint)
            snprintf (hint + used, sizeof hint - used, " (\"ferrulectl webhook doctor\" lists them); a renamed endpoint "
                      "is a new one, and the old name's deliveries cannot be sent again");
    }
    snprintf (message, sizeof message, "no webhook endpoint \"%s\" is configured", name);
    reply_error (w, job, FR_NOT_FOUND, message, hint, -1);
    return 0;
}

void
events_op_replay (worker_t *w, job_t *job, const msgpack_object *root)
{
    char integration [IDENT_MAX + 1] = "", event [40] = "", endpoint [WEBHOOK_NAME_MAX + 1] = "";
    /* filters of "events" that a replay does not apply: a client sending them means a narrower
     * replay than ignoring them would give (unknown keys are ignored, these are refused) */
    static const char *const unapplied [] = { "since", "until", "before", "limit" };
    for (size_t i = 0; i < sizeof unapplied / sizeof unapplied [0]; i++)
        if (codec_get (root, unapplied [i])) {
            char message [128];
            snprintf (message, sizeof message, "\"events_replay\" takes no \"%s\": it replays every failed delivery "
                      "of the event or integration it names", unapplied [i]);
            reply_error (w, job, FR_BAD_REQUEST, message, "leave it out; to replay fewer, name one event (\"events\" "
                         "with it lists them) or an endpoint", -1);
            return;
        }
    if (read_filters (w, job, root, integration, event, endpoint) < 0)
        return;
    if (!integration [0] && !event [0]) {
        reply_error (w, job, FR_BAD_REQUEST, "\"events_replay\" needs \"event\" or \"integration\"",
                            "name the event (\"ferrulectl events\" lists failed deliveries) or the integration", -1);
        return;
    }
    if (endpoint [0] && !replay_endpoint_known (w, job, endpoint))
        return;
    op_wait_t *ow = op_wait_new (w, job, integration, event, endpoint);
    /* copied: the endpoints are freed when the worker stops (events_destroy), maybe before the batch starts */
    size_t n = w->events ? webhook_set_count (w->events->endpoints) : 0;
    for (size_t i = 0; i < n && i < WEBHOOK_MAX_ENDPOINTS; i++)
        snprintf (ow->configured [ow->nconfigured++], sizeof ow->configured [0], "%s",
                  webhook_set_at (w->events->endpoints, i)->name);
    dbwait_request (&ow->req, replay_start);
}

/* A test event waiting for its statement: the endpoint's name, and its URL as replies show it. */
typedef struct {
    dbwait_req_t req;
    char endpoint [WEBHOOK_NAME_MAX + 1];
    char shown [WEBHOOK_URL_MAX + 1];
} test_wait_t;

static void
tested (void *arg, fr_status_t st, const char *id, const char *err)
{
    test_wait_t *tw = arg;
    if (st != FR_OK)
        reply_error (tw->req.w, &tw->req.job, st, err, NULL, -1);
    else {
        codec_builder_t *o = reply_begin (tw->req.w, &tw->req.job, 1, 3);
        codec_kv_str (o, "event", id);
        codec_kv_str (o, "endpoint", tw->endpoint);
        codec_kv_str (o, "url", tw->shown);
        reply_send (tw->req.w, &tw->req.job);
    }
    mem_free (tw);
}

/* One batch on a free connection (dbwait.c; dropped unwritten when the deadline passed). */
static fr_status_t
test_start (store_t *store, void *req, char *err, size_t errlen)
{
    test_wait_t *tw = req;
    return store_events_insert_test_start (store, tw->endpoint, tested, tw, err, errlen);
}

void
events_op_webhook_test (worker_t *w, job_t *job, const msgpack_object *root)
{
    char target [WEBHOOK_URL_MAX + 1] = "";
    int r = opt_str (w, job, root, "endpoint", WEBHOOK_URL_MAX, target);
    if (r < 0)
        return;
    if (r == 0) {
        reply_error (w, job, FR_BAD_REQUEST, "\"endpoint\" is required: a configured webhook's name or URL", NULL, -1);
        return;
    }
    const webhook_endpoint_t *ep = w->events ? webhook_set_find (w->events->endpoints, target) : NULL;
    if (!ep) {
        reply_error (w, job, FR_NOT_FOUND, "no webhook endpoint with this name or URL is configured",
                            "list it in the file FERRULE_WEBHOOKS_FILE names (docs/operations.md, \"Events and webhooks\"); "
                            "only configured endpoints get events, since only they have a secret", -1);
        return;
    }
    test_wait_t *tw = mem_alloc (sizeof *tw);
    tw->req.w = w;
    tw->req.job = *job;
    snprintf (tw->endpoint, sizeof tw->endpoint, "%s", ep->name);
    webhook_endpoint_shown (ep, tw->shown, sizeof tw->shown);
    dbwait_request (&tw->req, test_start);
}

/* The webhook's doctor waiting for its batch: what the reply says of each endpoint besides its
 * counts, copied, since the endpoints are freed when the worker stops (events_destroy), before a
 * batch still in flight ends. */
typedef struct {
    char *name;
    char *shown;                     /* the URL as replies show it */
    char **types;                    /* NULL: every type */
    size_t ntypes;
} hook_t;

typedef struct {
    worker_t *w;
    job_t job;
    size_t n;
    hook_t hooks [WEBHOOK_MAX_ENDPOINTS];
} webhooks_wait_t;

_Static_assert (WEBHOOK_MAX_ENDPOINTS <= STORE_EVENTS_STATS_MAX, "every endpoint's stats fit one batch");

static void
webhooks_free (webhooks_wait_t *hw)
{
    for (size_t i = 0; i < hw->n; i++) {
        hook_t *hk = &hw->hooks [i];
        mem_free (hk->name);
        mem_free (hk->shown);
        for (size_t k = 0; hk->types && k < hk->ntypes; k++)
            mem_free (hk->types [k]);
        mem_free (hk->types);
    }
    mem_free (hw);
}

/* The reply: per endpoint, what the deliveries say. */
static void
webhooks_read (void *arg, fr_status_t st, const store_endpoint_stats_t *stats, size_t n, const char *err)
{
    webhooks_wait_t *hw = arg;
    worker_t *w = hw->w;
    job_t *job = &hw->job;
    if (st == FR_OK && n != hw->n) {
        st = FR_INTERNAL;
        err = "the endpoints' counts returned an unexpected number of results";
    }
    if (st != FR_OK) {
        reply_error (w, job, st, err, NULL, -1);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 1);
    codec_str (o, "webhooks");
    codec_array (o, (uint32_t) n);
    for (size_t i = 0; i < n; i++) {
        const hook_t *hk = &hw->hooks [i];
        const store_endpoint_stats_t *s = &stats [i];
        const char *code = s->failed ? "failed_events" : s->retrying ? "retrying" : "healthy";
        codec_map (o, 11);
        codec_kv_str (o, "name", hk->name);
        codec_kv_str (o, "url", hk->shown);
        codec_str (o, "events");
        if (!hk->types) {
            codec_array (o, 1);
            codec_str (o, "*");
        }
        else {
            codec_array (o, (uint32_t) hk->ntypes);
            for (size_t k = 0; k < hk->ntypes; k++)
                codec_str (o, hk->types [k]);
        }
        codec_kv_str (o, "diagnosis", code);
        codec_kv_int (o, "pending", s->pending);
        codec_kv_int (o, "retrying", s->retrying);
        codec_kv_int (o, "delivered_last_day", s->delivered_last_day);
        codec_kv_int (o, "failed", s->failed);
        codec_kv_str (o, "last_error", s->last_error);
        codec_kv_str (o, "last_failure_at", s->last_failure_at);
        codec_kv_str (o, "last_delivered_at", s->last_delivered_at);
    }
    reply_send (w, job);
out:
    webhooks_free (hw);
}

/* Dropped unread when the request's deadline passed meanwhile (store NULL). */
static void
webhooks_start (worker_t *w, store_t *store, void *arg)
{
    webhooks_wait_t *hw = arg;
    const char *names [WEBHOOK_MAX_ENDPOINTS];
    char err [256];
    fr_status_t st;
    if (!store) {
        webhooks_free (hw);
        return;
    }
    for (size_t i = 0; i < hw->n; i++)
        names [i] = hw->hooks [i].name;
    if ((st = store_events_endpoint_stats_start (store, names, hw->n, webhooks_read, hw, err, sizeof err)) != FR_OK) {
        reply_error (w, &hw->job, st, err, NULL, -1);
        webhooks_free (hw);
    }
}

/* The webhook's doctor. */
void
events_op_webhooks (worker_t *w, job_t *job, const msgpack_object *root)
{
    char shown [WEBHOOK_URL_MAX + 1];
    size_t n = w->events ? webhook_set_count (w->events->endpoints) : 0;
    if (n == 0) {                    /* nothing to count */
        codec_builder_t *o = reply_begin (w, job, 1, 1);
        codec_str (o, "webhooks");
        codec_array (o, 0);
        reply_send (w, job);
        return;
    }
    assert (n <= WEBHOOK_MAX_ENDPOINTS);
    webhooks_wait_t *hw = mem_alloc (sizeof *hw);
    memset (hw, 0, sizeof *hw);
    hw->w = w;
    hw->job = *job;
    for (size_t i = 0; i < n; i++, hw->n++) {
        const webhook_endpoint_t *ep = webhook_set_at (w->events->endpoints, i);
        hook_t *hk = &hw->hooks [i];
        webhook_endpoint_shown (ep, shown, sizeof shown);
        hk->name = mem_strdup (ep->name);
        hk->shown = mem_strdup (shown);
        if (!ep->all_types) {
            hk->ntypes = ep->ntypes;
            hk->types = mem_alloc ((ep->ntypes + 1) * sizeof *hk->types);
            for (size_t k = 0; k < ep->ntypes; k++)
                hk->types [k] = mem_strdup (ep->types [k]);
        }
    }
    dbwait_add_for (w, webhooks_start, hw, &hw->job);
}

void
events_handle (worker_t *w, job_t *job, op_t op, const msgpack_object *root)
{
    switch (op) {
        case OP_EVENTS:        events_op_list (w, job, root); break;
        case OP_EVENTS_REPLAY: events_op_replay (w, job, root); break;
        case OP_WEBHOOK_TEST:  events_op_webhook_test (w, job, root); break;
        default:               events_op_webhooks (w, job, root); break;
    }
}
