/* ratelimit.c - a chained hash of small token buckets, refilled lazily on each take */
#include "ratelimit.h"
#include "clock.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include "ring.h"
#include "context.h"
#include "reply.h"
#include <stdio.h>
#include <string.h>

#define RATELIMIT_BUCKETS 4096
#define RATELIMIT_SCAN_MS 1000      /* a full table is scanned for refilled buckets at most this often */

typedef struct rl_entry {
    struct rl_entry *next;
    double tokens;
    int64_t last_ms;
    char key [];
} rl_entry_t;

struct ratelimit {
    rl_entry_t *buckets [RATELIMIT_BUCKETS];
    size_t count;
    double burst;
    double per_ms;                  /* tokens added per millisecond */
    int64_t scanned_ms;             /* the last scan of a full table */
    uint64_t scans;
    lograte_t full_log;             /* refusals for a full table: one line a second */
};

ratelimit_t *
ratelimit_new (int64_t burst, int64_t per_min)
{
    ratelimit_t *rl = mem_alloc (sizeof *rl);
    rl->burst = (double) (burst > 0 ? burst : 1);
    rl->per_ms = (double) (per_min > 0 ? per_min : 1) / 60000.0;
    return rl;
}

void
ratelimit_destroy (ratelimit_t **rl_p)
{
    if (rl_p && *rl_p) {
        ratelimit_t *rl = *rl_p;
        for (size_t i = 0; i < RATELIMIT_BUCKETS; i++)
            for (rl_entry_t *e = rl->buckets [i], *next; e; e = next) {
                next = e->next;
                mem_free (e);
            }
        mem_free (rl);
        *rl_p = NULL;
    }
}

static void
ratelimit_refill (const ratelimit_t *rl, rl_entry_t *e, int64_t now_ms)
{
    if (now_ms > e->last_ms) {
        e->tokens += (double) (now_ms - e->last_ms) * rl->per_ms;
        if (e->tokens > rl->burst)
            e->tokens = rl->burst;
        e->last_ms = now_ms;
    }
}

/* Forgets every bucket that has refilled: it behaves exactly like a new one. */
static void
ratelimit_prune (ratelimit_t *rl, int64_t now_ms)
{
    rl->scanned_ms = now_ms;
    rl->scans++;
    for (size_t i = 0; i < RATELIMIT_BUCKETS; i++) {
        rl_entry_t **pp = &rl->buckets [i];
        while (*pp) {
            rl_entry_t *e = *pp;
            ratelimit_refill (rl, e, now_ms);
            if (e->tokens >= rl->burst) {
                *pp = e->next;
                mem_free (e);
                rl->count--;
            }
            else
                pp = &e->next;
        }
    }
}

int64_t
ratelimit_take (ratelimit_t *rl, const char *key, int64_t now_ms)
{
    size_t len = strlen (key);
    size_t b = (size_t) (ring_hash (key, len) % RATELIMIT_BUCKETS);
    rl_entry_t *e = rl->buckets [b];
    while (e && strcmp (e->key, key) != 0)
        e = e->next;
    if (!e) {
        if (rl->count >= RATELIMIT_MAX_ENTRIES && (!rl->scans || now_ms - rl->scanned_ms >= RATELIMIT_SCAN_MS))
            ratelimit_prune (rl, now_ms);
        if (rl->count >= RATELIMIT_MAX_ENTRIES)
            return RATELIMIT_FULL;  /* every tracked integration is busy: refuse rather than grow */
        e = mem_alloc (sizeof *e + len + 1);
        memcpy (e->key, key, len + 1);
        e->tokens = rl->burst;
        e->last_ms = now_ms;
        e->next = rl->buckets [b];
        rl->buckets [b] = e;
        rl->count++;
    }
    ratelimit_refill (rl, e, now_ms);
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
        return 0;
    }
    int64_t wait_ms = (int64_t) ((1.0 - e->tokens) / rl->per_ms) + 1;
    return wait_ms < 1000 ? 1 : (wait_ms + 999) / 1000;
}

size_t
ratelimit_count (const ratelimit_t *rl)
{
    return rl->count;
}

uint64_t
ratelimit_scans (const ratelimit_t *rl)
{
    return rl->scans;
}

int
ratelimit_admit (worker_t *w, job_t *job, ratelimit_call_t call, const char *id)
{
    char message [300];
    int is_connect = call == RATELIMIT_CONNECT;
    int is_reject = call == RATELIMIT_REJECT;
    const char *what = is_connect ? "connect" : "refresh";
    if (!w->admin_rate)
        w->admin_rate = ratelimit_new (w->cfg.admin_rate_burst, w->cfg.admin_rate_per_min);
    int64_t retry_after = ratelimit_take (w->admin_rate, id, clock_mono_ms ());
    if (retry_after == 0)
        return 1;
    if (retry_after == RATELIMIT_FULL) {
        /* not this integration's limit: the worker's table of limits is full */
        snprintf (message, sizeof message, "%s refused for integration \"%s\": this worker is limiting the calls of "
                  "%d other integrations that made refresh or connect calls lately, as many as it keeps",
                  is_reject ? "the refresh of a rejected token" : what, id, RATELIMIT_MAX_ENTRIES);
        uint64_t held;
        if (lograte_take (&w->admin_rate->full_log, clock_mono_ms (), &held))
            log_warning (id, job->rid, "%s refused: the table of per-integration rate limits is full (%d "
                         "integrations; %llu more refused since the last line)", what,
                         RATELIMIT_MAX_ENTRIES, (unsigned long long) held);
        reply_error (w, job, FR_RATE_LIMITED, message, "try again in a second: limits that have refilled make room",
                     1);
        return 0;
    }
    if (is_reject) {
        /* a caller whose API keeps refusing fresh tokens: another refresh would not help, and a
         * loop of them would get the OAuth app throttled */
        snprintf (message, sizeof message, "too many rejected tokens of integration \"%s\" refreshed: at most %lld "
                  "at once and %lld a minute", id, (long long) w->cfg.admin_rate_burst,
                  (long long) w->cfg.admin_rate_per_min);
        log_warning (id, job->rid, "rejected token not refreshed: rate limit of the integration reached, retry after "
                     "%lld s", (long long) retry_after);
        reply_error (w, job, FR_RATE_LIMITED, message, "tokens just issued keep being rejected: the upstream API "
                     "refuses this account or app (a permission, a missing scope, a locked account), which a new "
                     "token will not fix; look at the API's error body", retry_after);
        return 0;
    }
    snprintf (message, sizeof message, "too many %s calls for integration \"%s\": at most %lld at once and "
              "%lld a minute", what, id, (long long) w->cfg.admin_rate_burst,
              (long long) w->cfg.admin_rate_per_min);
    log_info (id, job->rid, "%s refused: rate limit of the integration reached, retry after %lld s",
              what, (long long) retry_after);
    reply_error (w, job, FR_RATE_LIMITED, message, NULL, retry_after);
    return 0;
}
