/* share.c - a chained hash from a connection's number to its pending requests; an entry goes when
 * its last request does, so the table holds only connections with requests pending */
#include "share.h"
#include "mem.h"
#include <assert.h>

#define SHARE_BUCKETS 1024

typedef struct share_entry {
    struct share_entry *next;
    uint64_t conn;
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

/* Connection numbers are given in order: the low bits spread them well. */
static share_entry_t **
share_slot (const share_t *s, uint64_t conn)
{
    share_entry_t *const *slot = &s->buckets [conn % SHARE_BUCKETS];
    while (*slot && (*slot)->conn != conn)
        slot = &(*slot)->next;
    return (share_entry_t **) slot;
}

void
share_held (const share_t *s, uint64_t conn, size_t *requests, size_t *bytes)
{
    share_entry_t *e = conn ? *share_slot (s, conn) : NULL;
    *requests = e ? e->requests : 0;
    *bytes = e ? e->bytes : 0;
}

int
share_take (share_t *s, uint64_t conn, size_t bytes, size_t most, size_t most_bytes, size_t *requests,
            size_t *held_bytes)
{
    if (!conn)
        return 0;
    share_entry_t **slot = share_slot (s, conn);
    share_entry_t *e = *slot;
    if (e && (e->requests >= most || e->bytes + bytes > most_bytes)) {
        *requests = e->requests;
        *held_bytes = e->bytes;
        return -1;
    }
    if (!e) {
        /* a connection with nothing pending may always have one request: a body larger than a
         * small share (1 % of 1 MiB is 10 KB; an import can be 12 KB) was refused for ever, with
         * a hint to wait for answers that were never coming. The broker's own bounds still apply. */
        e = *slot = mem_alloc (sizeof (share_entry_t));
        e->conn = conn;
    }
    e->requests++;
    e->bytes += bytes;
    return 0;
}

void
share_give (share_t *s, uint64_t conn, size_t bytes)
{
    if (!conn)
        return;
    share_entry_t **slot = share_slot (s, conn);
    share_entry_t *e = *slot;
    assert (e && e->requests > 0 && e->bytes >= bytes);     /* given as it was taken */
    e->requests--;
    e->bytes -= bytes;
    if (!e->requests) {
        *slot = e->next;
        mem_free (e);
    }
}
