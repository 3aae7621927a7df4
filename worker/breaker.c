/* breaker.c - failures over a window open the breaker when they are both many and most calls */
#include "breaker.h"
#include "log.h"
#include "mem.h"
#include <stdio.h>
#include <string.h>

typedef struct breaker_entry {
    struct breaker_entry *next;
    int64_t window_start_ms;
    uint32_t calls;
    uint32_t failures;
    int64_t open_until_ms;          /* 0 closed */
    int64_t hold_ms;                /* how long it was last opened for */
    int probing;                    /* half-open: a probe is out */
    char peer [];
} breaker_entry_t;

struct breaker {
    breaker_entry_t *entries;       /* one per peer seen: a handful */
    char *kind;
    int64_t min_failures;
    int64_t window_ms;
    int64_t open_ms, max_open_ms;
};

breaker_t *
breaker_new (const char *kind, int64_t min_failures, int64_t window_ms, int64_t open_ms, int64_t max_open_ms)
{
    breaker_t *b = mem_alloc (sizeof *b);
    b->kind = mem_strdup (kind);
    b->min_failures = min_failures;
    b->window_ms = window_ms;
    b->open_ms = open_ms;
    b->max_open_ms = max_open_ms > open_ms ? max_open_ms : open_ms;
    return b;
}

/* "30 s", "0.3 s" */
static const char *
breaker_seconds (char *out, size_t size, int64_t ms)
{
    if (ms % 1000 == 0 || ms >= 10000)
        snprintf (out, size, "%lld s", (long long) ((ms + 500) / 1000));
    else
        snprintf (out, size, "%.1f s", (double) ms / 1000.0);
    return out;
}

void
breaker_destroy (breaker_t **b_p)
{
    if (b_p && *b_p) {
        breaker_entry_t *e = (*b_p)->entries;
        while (e) {
            breaker_entry_t *next = e->next;
            mem_free (e);
            e = next;
        }
        mem_free ((*b_p)->kind);
        mem_free (*b_p);
        *b_p = NULL;
    }
}

static breaker_entry_t *
breaker_entry (breaker_t *b, const char *peer)
{
    for (breaker_entry_t *e = b->entries; e; e = e->next)
        if (strcmp (e->peer, peer) == 0)
            return e;
    size_t len = strlen (peer);
    breaker_entry_t *e = mem_alloc (sizeof *e + len + 1);
    memcpy (e->peer, peer, len + 1);
    e->next = b->entries;
    b->entries = e;
    return e;
}

int
breaker_allow (breaker_t *b, const char *peer, int64_t now_ms, int64_t *retry_after_s)
{
    breaker_entry_t *e = breaker_entry (b, peer);
    if (e->open_until_ms == 0)
        return 1;
    if (now_ms < e->open_until_ms || e->probing) {
        int64_t left = e->open_until_ms - now_ms;
        *retry_after_s = left > 0 ? (left + 999) / 1000 : 1;
        return 0;
    }
    e->probing = 1;             /* half-open: this call is the probe */
    return 2;
}

void
breaker_probe (breaker_t *b, const char *peer)
{
    breaker_entry_t *e = breaker_entry (b, peer);
    if (e->open_until_ms)
        e->probing = 1;
}

void
breaker_unused (breaker_t *b, const char *peer)
{
    breaker_entry_t *e = breaker_entry (b, peer);
    if (e->open_until_ms)
        e->probing = 0;
}

void
breaker_record (breaker_t *b, const char *peer, int failed, int probe, int64_t now_ms)
{
    char held [32];
    breaker_entry_t *e = breaker_entry (b, peer);
    if (e->open_until_ms) {
        if (!e->probing || !probe)
            return;             /* a call started before the breaker opened */
        e->probing = 0;
        if (failed) {
            e->hold_ms = e->hold_ms * 2 < b->max_open_ms ? e->hold_ms * 2 : b->max_open_ms;
            e->open_until_ms = now_ms + e->hold_ms;
            log_warning (NULL, NULL, "%s \"%s\" still failing; circuit stays open for %s", b->kind, peer,
                         breaker_seconds (held, sizeof held, e->hold_ms));
        }
        else {
            e->open_until_ms = 0;
            e->calls = e->failures = 0;
            e->window_start_ms = now_ms;
            log_info (NULL, NULL, "%s \"%s\" answered again; circuit closed", b->kind, peer);
        }
        return;
    }
    if (now_ms - e->window_start_ms > b->window_ms) {
        e->window_start_ms = now_ms;
        e->calls = e->failures = 0;
    }
    e->calls++;
    if (failed)
        e->failures++;
    if (e->failures >= b->min_failures && e->failures * 2 >= e->calls) {
        e->hold_ms = b->open_ms;
        e->open_until_ms = now_ms + e->hold_ms;
        log_warning (NULL, NULL, "%s \"%s\" failed %u of %u calls; circuit open for %s", b->kind, peer,
                     e->failures, e->calls, breaker_seconds (held, sizeof held, e->hold_ms));
    }
}

int
breaker_blocked (const breaker_t *b, const char *peer, int64_t now_ms, int64_t *retry_after_s)
{
    for (const breaker_entry_t *e = b->entries; e; e = e->next)
        if (strcmp (e->peer, peer) == 0) {
            if (!e->open_until_ms || (now_ms >= e->open_until_ms && !e->probing))
                return 0;
            int64_t left = e->open_until_ms - now_ms;
            *retry_after_s = left > 0 ? (left + 999) / 1000 : 1;
            return 1;
        }
    return 0;
}

int
breaker_is_open (const breaker_t *b, const char *peer, int64_t now_ms)
{
    (void) now_ms;
    for (const breaker_entry_t *e = b->entries; e; e = e->next)
        if (strcmp (e->peer, peer) == 0)
            return e->open_until_ms != 0;
    return 0;
}
