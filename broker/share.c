/* share.c - a chained hash from a holder (a client's name, or a connection's number) to its
 * pending requests; an entry goes when its last request does, so the table holds only holders
 * with requests pending */
#include "share.h"
#include "mem.h"
#include "ring.h"
#include <assert.h>
#include <string.h>

#define SHARE_BUCKETS 1024

typedef struct share_entry {
    struct share_entry *next;
    uint64_t holder;
    size_t requests;
    size_t bytes;
} share_entry_t;

struct share {
    share_entry_t *buckets [SHARE_BUCKETS];
};

share_t *
share_new (void)
{
    return mem_alloc (sizeof (share_t));
}

void
share_destroy (share_t **s_p)
{
    if (s_p && *s_p) {
        share_t *s = *s_p;
        for (size_t i = 0; i < SHARE_BUCKETS; i++)
            for (share_entry_t *e = s->buckets [i], *next; e; e = next) {
                next = e->next;
                mem_free (e);
            }
        mem_free (s);
        *s_p = NULL;
    }
}

uint64_t
share_holder_of_name (const char *name)
{
    return ring_hash (name, strlen (name)) | 1ULL << 63;
}

/* Connection numbers are given in order, and names hashed: the low bits spread both well. */
static share_entry_t **
share_slot (const share_t *s, uint64_t holder)
{
    share_entry_t *const *slot = &s->buckets [holder % SHARE_BUCKETS];
    while (*slot && (*slot)->holder != holder)
        slot = &(*slot)->next;
    return (share_entry_t **) slot;
}

void
share_held (const share_t *s, uint64_t holder, size_t *requests, size_t *bytes)
{
    share_entry_t *e = holder ? *share_slot (s, holder) : NULL;
    *requests = e ? e->requests : 0;
    *bytes = e ? e->bytes : 0;
}

int
share_take (share_t *s, uint64_t holder, size_t bytes, size_t most, size_t most_bytes, size_t *requests,
            size_t *held_bytes)
{
    if (!holder)
        return 0;
    share_entry_t **slot = share_slot (s, holder);
    share_entry_t *e = *slot;
    if (e && (e->requests >= most || e->bytes + bytes > most_bytes)) {
        *requests = e->requests;
        *held_bytes = e->bytes;
        return -1;
    }
    if (!e) {
        /* a holder with nothing pending may always have one request: a body larger than a
         * small share (1 % of 1 MiB is 10 KB; an import can be 12 KB) was refused for ever, with
         * a hint to wait for answers that were never coming. The broker's own bounds still apply. */
        e = *slot = mem_alloc (sizeof (share_entry_t));
        e->holder = holder;
    }
    e->requests++;
    e->bytes += bytes;
    return 0;
}

void
share_give (share_t *s, uint64_t holder, size_t bytes)
{
    if (!holder)
        return;
    share_entry_t **slot = share_slot (s, holder);
    share_entry_t *e = *slot;
    assert (e && e->requests > 0 && e->bytes >= bytes);     /* given as it was taken */
    e->requests--;
    e->bytes -= bytes;
    if (!e->requests) {
        *slot = e->next;
        mem_free (e);
    }
}
