/* pending.c - a hash on the sequence number plus a list kept in deadline order.
 * Most requests carry similar deadlines, so inserting from the tail is nearly always O(1). */
#include "pending.h"
#include "mem.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <errno.h>

#define PENDING_RANDOM 512              /* sequence numbers drawn per getrandom call */

struct pending_table {
    pending_t **buckets;
    size_t   nbuckets;          /* power of two */
    size_t   count;
    size_t   bytes;
    uint64_t random [PENDING_RANDOM];
    size_t   random_left;
    pending_t *head, *tail;
};

pending_table_t *
pending_table_new (void)
{
    pending_table_t *t = mem_alloc (sizeof *t);
    t->nbuckets = 1024;
    t->buckets = mem_alloc (t->nbuckets * sizeof *t->buckets);
    return t;
}

static void
pending_free (pending_t *p)
{
    if (p->body)
        mem_wipe (p->body, p->body_len);   /* an import body carries tokens */
    mem_free (p->body);
    mem_free (p);
}

void
pending_table_destroy (pending_table_t **t_p)
{
    if (t_p && *t_p) {
        pending_table_t *t = *t_p;
        pending_t *p = t->head;
        while (p) {
            pending_t *next = p->next;
            pending_free (p);
            p = next;
        }
        mem_free (t->buckets);
        mem_free (t);
        *t_p = NULL;
    }
}

static void
pending_grow (pending_table_t *t)
{
    size_t n = t->nbuckets * 2;
    pending_t **b = mem_alloc (n * sizeof *b);
    for (pending_t *p = t->head; p; p = p->next) {
        size_t i = p->seq & (n - 1);
        p->hnext = b [i];
        b [i] = p;
    }
    mem_free (t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

/* The next random sequence number. The kernel's generator is seeded once the system has booted;
 * if it cannot answer there is no safe fallback, so the broker stops. */
static uint64_t
pending_random (pending_table_t *t)
{
    if (t->random_left == 0) {
        size_t got = 0;
        while (got < sizeof t->random) {
            ssize_t n = getrandom ((char *) t->random + got, sizeof t->random - got, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                log_error (NULL, NULL, "could not read random bytes for request numbers: %s", strerror (errno));
                abort ();
            }
            got += (size_t) n;
        }
        t->random_left = PENDING_RANDOM;
    }
    return t->random [--t->random_left];
}

pending_t *
pending_add (pending_table_t *t, const void *client, size_t client_len,
             const void *body, size_t body_len, int64_t deadline_ms)
{
    pending_t *p = mem_alloc (sizeof *p);
    do
        p->seq = pending_random (t);
    while (p->seq == 0 || pending_find (t, p->seq));
    if (client_len > sizeof p->client)
        client_len = sizeof p->client;
    memcpy (p->client, client, client_len);
    p->client_len = client_len;
    p->body = mem_alloc (body_len);
    memcpy (p->body, body, body_len);
    p->body_len = body_len;
    t->bytes += body_len;
    p->deadline_ms = deadline_ms;

    if (t->count >= t->nbuckets * 2)
        pending_grow (t);
    size_t i = p->seq & (t->nbuckets - 1);
    p->hnext = t->buckets [i];
    t->buckets [i] = p;

    pending_t *after = t->tail;
    while (after && after->deadline_ms > deadline_ms)
        after = after->prev;
    p->prev = after;
    p->next = after ? after->next : t->head;
    if (p->next)
        p->next->prev = p;
    else
        t->tail = p;
    if (after)
        after->next = p;
    else
        t->head = p;
    t->count++;
    return p;
}

pending_t *
pending_find (const pending_table_t *t, uint64_t seq)
{
    for (pending_t *p = t->buckets [seq & (t->nbuckets - 1)]; p; p = p->hnext)
        if (p->seq == seq)
            return p;
    return NULL;
}

void
pending_remove (pending_table_t *t, pending_t *p)
{
    pending_t **pp = &t->buckets [p->seq & (t->nbuckets - 1)];
    while (*pp && *pp != p)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = p->hnext;
    if (p->prev)
        p->prev->next = p->next;
    else
        t->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        t->tail = p->prev;
    t->count--;
    t->bytes -= p->body_len;
    pending_free (p);
}

pending_t *
pending_first (const pending_table_t *t)
{
    return t->head;
}

size_t
pending_count (const pending_table_t *t)
{
    return t->count;
}

size_t
pending_bytes (const pending_table_t *t)
{
    return t->bytes;
}
