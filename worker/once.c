/* once.c - remembered broker requests: a chained hash by origin, and a list in arrival order
 * from which the expired and, past the bounds, the oldest are forgotten */
#include "once.h"
#include "mem.h"
#include "ring.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

#define ONCE_BUCKETS 4096

typedef struct once_entry {
    struct once_entry *next;        /* in its bucket */
    struct once_entry *older, *newer;
    int64_t deadline_ms;
    uint64_t hash;                  /* of the origin */
    uint64_t body_hash;
    char *reply;                    /* NULL while in flight; wiped when freed (an API key, a link) */
    size_t reply_len;
    char outcome [32];
    int link;
    unsigned char seq [8];
    size_t client_len;
    unsigned char client [];
} once_entry_t;

struct once {
    once_entry_t *buckets [ONCE_BUCKETS];
    once_entry_t *oldest, *newest;
    size_t count;
    size_t bytes;                   /* of the answers kept */
    uint64_t forgotten;
};

/* Buckets only: entries are compared whole. */
static uint64_t
once_origin_hash (int link, const void *client, size_t client_len, const unsigned char seq [8])
{
    return ring_hash (client, client_len) ^ (ring_hash (seq, 8) * 31) ^ (uint64_t) link;
}

once_t *
once_new (void)
{
    return mem_alloc (sizeof (once_t));
}

static void
once_forget (once_t *o, once_entry_t *e)
{
    once_entry_t **pp = &o->buckets [e->hash % ONCE_BUCKETS];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        o->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        o->newest = e->older;
    o->count--;
    o->bytes -= e->reply_len;
    if (e->reply)
        mem_free_wiped (e->reply);
    mem_free (e);
}

void
once_destroy (once_t **o_p)
{
    if (o_p && *o_p) {
        once_t *o = *o_p;
        while (o->oldest)
            once_forget (o, o->oldest);
        mem_free (o);
        *o_p = NULL;
    }
}

static once_entry_t *
once_find (once_t *o, uint64_t hash, int link, const void *client, size_t client_len, const unsigned char seq [8])
{
    for (once_entry_t *e = o->buckets [hash % ONCE_BUCKETS]; e; e = e->next)
        if (e->hash == hash && e->link == link && e->client_len == client_len && memcmp (e->seq, seq, 8) == 0
        &&  memcmp (e->client, client, client_len) == 0)
            return e;
    return NULL;
}

/* The expired first, in arrival order (deadlines differ, so a later one may wait behind an
 * earlier one for a while: the bounds hold regardless), then the oldest while over a bound. */
static void
once_trim (once_t *o, int64_t now_ms)
{
    while (o->oldest && o->oldest->deadline_ms < now_ms)
        once_forget (o, o->oldest);
    while (o->oldest && (o->count > ONCE_MAX_ENTRIES || o->bytes > ONCE_MAX_BYTES)) {
        once_forget (o, o->oldest);
        o->forgotten++;
    }
}

once_state_t
once_begin (once_t *o, int link, const void *client, size_t client_len, const unsigned char seq [8],
            const void *body, size_t body_len, int64_t deadline_ms, int64_t now_ms, once_reply_t *reply)
{
    assert (o && client && seq && body && reply);
    once_trim (o, now_ms);
    uint64_t hash = once_origin_hash (link, client, client_len, seq);
    uint64_t body_hash = ring_hash (body, body_len);
    once_entry_t *e = once_find (o, hash, link, client, client_len, seq);
    if (e && e->body_hash == body_hash) {
        if (!e->reply)
            return ONCE_RUNNING;
        *reply = (once_reply_t) { e->reply, e->reply_len, e->outcome };
        return ONCE_ANSWERED;
    }
    if (e)
        once_forget (o, e);        /* another request under the same origin (a restarted broker) */
    e = mem_alloc (sizeof *e + client_len);
    e->hash = hash;
    e->body_hash = body_hash;
    e->deadline_ms = deadline_ms;
    e->link = link;
    memcpy (e->seq, seq, 8);
    e->client_len = client_len;
    memcpy (e->client, client, client_len);
    e->next = o->buckets [hash % ONCE_BUCKETS];
    o->buckets [hash % ONCE_BUCKETS] = e;
    e->older = o->newest;
    if (o->newest)
        o->newest->newer = e;
    else
        o->oldest = e;
    o->newest = e;
    o->count++;
    once_trim (o, now_ms);
    return ONCE_NEW;
}

void
once_answered (once_t *o, int link, const void *client, size_t client_len, const unsigned char seq [8],
               const once_reply_t *reply)
{
    assert (o && client && seq && reply && reply->body && reply->outcome);
    once_entry_t *e = once_find (o, once_origin_hash (link, client, client_len, seq), link, client, client_len, seq);
    if (!e || e->reply)
        return;                     /* not remembered, or answered already (the first answer went) */
    e->reply = mem_alloc (reply->len ? reply->len : 1);
    memcpy (e->reply, reply->body, reply->len);
    e->reply_len = reply->len;
    snprintf (e->outcome, sizeof e->outcome, "%s", reply->outcome);
    o->bytes += reply->len;
    while (o->oldest && o->bytes > ONCE_MAX_BYTES && o->oldest != e) {
        once_forget (o, o->oldest);
        o->forgotten++;
    }
}

size_t
once_count (const once_t *o)
{
    return o->count;
}

uint64_t
once_forgotten (const once_t *o)
{
    return o->forgotten;
}
