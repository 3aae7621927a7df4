/* pending.c - a hash on the sequence number, a list in arrival order and a binary min-heap on the
 * deadline. Each client chooses its own deadlines, so a list kept in deadline order cost a walk
 * past every longer one per insert (quadratic while a stall piles requests up); the heap makes
 * adding and removing O(log n) and finding the earliest O(1).
 *
 * The request body is not copied: the entry keeps the frame ZeroMQ received, and the broker sends
 * a zmq_msg_copy of it (the buffer is shared, by reference count, not copied), so the request can
 * be sent again after a worker is lost (over plaintext the broker hands it a body copied out of
 * ZeroMQ's receive buffer first: broker_own_body). The body is therefore not wiped when the entry goes: the
 * buffer is ZeroMQ's (it may be a slice of its receive buffer, or still referenced by a send in
 * flight), and ZeroMQ never wiped its own copies of any body (the receive buffer, CURVE's
 * plaintext, the copy every send made) nor of any reply, which carry access tokens on every
 * request. Our wipe of our own copy of a body therefore guaranteed nothing; not making that copy
 * leaves one copy fewer of an import's tokens in memory. The entry itself holds no secret (ids,
 * names, the routing id), so entries are recycled without being cleared. */
#include "pending.h"
#include "mem.h"
#include "log.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <errno.h>

/* A spare entry is poisoned for AddressSanitizer, so a read after pending_remove still fails. */
#if defined (__SANITIZE_ADDRESS__)
#define PENDING_ASAN 1
#elif defined (__has_feature)
#if __has_feature (address_sanitizer)
#define PENDING_ASAN 1
#endif
#endif
#ifdef PENDING_ASAN
#include <sanitizer/asan_interface.h>
#define PENDING_POISON(p)   ASAN_POISON_MEMORY_REGION ((p), sizeof *(p))
#define PENDING_UNPOISON(p) ASAN_UNPOISON_MEMORY_REGION ((p), sizeof *(p))
#else
#define PENDING_POISON(p)   ((void) (p))
#define PENDING_UNPOISON(p) ((void) (p))
#endif

#define PENDING_RANDOM 512              /* sequence numbers drawn per getrandom call */

struct pending_table {
    pending_t **buckets;
    size_t   nbuckets;          /* power of two */
    size_t   count;
    size_t   bytes;
    uint64_t random [PENDING_RANDOM];
    size_t   random_left;
    pending_t *head, *tail;     /* arrival order */
    pending_t **heap;           /* the count entries, a min-heap on deadline_ms */
    size_t   heap_cap;
    pending_t *spare;           /* removed entries, linked by next */
    size_t   nspare;
};

pending_table_t *
pending_table_new (void)
{
    pending_table_t *t = mem_alloc (sizeof *t);
    t->nbuckets = 1024;
    t->buckets = mem_alloc (t->nbuckets * sizeof *t->buckets);
    return t;
}

/* A spare entry, or a new one; only the fields pending_add sets are valid. */
static pending_t *
pending_take_spare (pending_table_t *t)
{
    pending_t *p = t->spare;
    if (!p)
        return mem_alloc (sizeof *p);
    PENDING_UNPOISON (p);
    t->spare = p->next;
    t->nspare--;
    return p;
}

void
pending_table_destroy (pending_table_t **t_p)
{
    if (t_p && *t_p) {
        pending_table_t *t = *t_p;
        pending_t *p = t->head;
        while (p) {
            pending_t *next = p->next;
            zmq_msg_close (&p->body);
            mem_free (p);
            p = next;
        }
        while (t->spare)
            mem_free (pending_take_spare (t));
        mem_free (t->buckets);
        mem_free (t->heap);
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

static void
pending_heap_set (pending_table_t *t, size_t i, pending_t *p)
{
    t->heap [i] = p;
    p->heap_at = i;
}

/* Moves p up from index i until its parent's deadline is no later. */
static void
pending_sift_up (pending_table_t *t, size_t i, pending_t *p)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap [parent]->deadline_ms <= p->deadline_ms)
            break;
        pending_heap_set (t, i, t->heap [parent]);
        i = parent;
    }
    pending_heap_set (t, i, p);
}

/* Moves p down from index i, in a heap of n entries, until no child's deadline is earlier. */
static void
pending_sift_down (pending_table_t *t, size_t i, size_t n, pending_t *p)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && t->heap [child + 1]->deadline_ms < t->heap [child]->deadline_ms)
            child++;
        if (p->deadline_ms <= t->heap [child]->deadline_ms)
            break;
        pending_heap_set (t, i, t->heap [child]);
        i = child;
    }
    pending_heap_set (t, i, p);
}

pending_t *
pending_add (pending_table_t *t, const void *client, size_t client_len,
             zmq_msg_t *body, int64_t deadline_ms)
{
    pending_t *p = pending_take_spare (t);
    do
        p->seq = pending_random (t);
    while (p->seq == 0 || pending_find (t, p->seq));
    if (client_len > sizeof p->client)
        client_len = sizeof p->client;
    memcpy (p->client, client, client_len);
    p->client_len = client_len;
    zmq_msg_init (&p->body);
    zmq_msg_move (&p->body, body);
    p->body_len = zmq_msg_size (&p->body);
    t->bytes += p->body_len;
    p->rid [0] = '\0';
    p->rid_len = 0;
    p->integration [0] = '\0';
    p->client_name [0] = '\0';
    p->has_integration = 0;
    p->op = 0;
    p->partition = 0;
    p->worker [0] = '\0';
    p->attempts = 0;
    p->deadline_ms = deadline_ms;

    if (t->count >= t->nbuckets * 2)
        pending_grow (t);
    size_t i = p->seq & (t->nbuckets - 1);
    p->hnext = t->buckets [i];
    t->buckets [i] = p;

    p->prev = t->tail;
    p->next = NULL;
    if (t->tail)
        t->tail->next = p;
    else
        t->head = p;
    t->tail = p;

    /* the heap never shrinks: it stays as large as the most requests ever pending at once */
    if (t->count == t->heap_cap) {
        t->heap_cap = t->heap_cap ? t->heap_cap * 2 : 1024;
        t->heap = mem_realloc (t->heap, t->heap_cap * sizeof *t->heap);
    }
    pending_sift_up (t, t->count, p);
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
    assert (p->heap_at < t->count && t->heap [p->heap_at] == p);     /* p is pending in t */
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

    /* the last entry fills p's place, then moves whichever way its deadline says */
    size_t i = p->heap_at;
    pending_t *last = t->heap [--t->count];
    if (last != p) {
        if (i > 0 && last->deadline_ms < t->heap [(i - 1) / 2]->deadline_ms)
            pending_sift_up (t, i, last);
        else
            pending_sift_down (t, i, t->count, last);
    }
    t->bytes -= p->body_len;
    zmq_msg_close (&p->body);       /* our reference: see the top of this file on wiping */
    if (t->nspare >= PENDING_SPARE) {
        mem_free (p);
        return;
    }
    p->next = t->spare;
    t->spare = p;
    t->nspare++;
    PENDING_POISON (p);
}

pending_t *
pending_first (const pending_table_t *t)
{
    return t->head;
}

pending_t *
pending_earliest (const pending_table_t *t)
{
    return t->count ? t->heap [0] : NULL;
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

size_t
pending_spare (const pending_table_t *t)
{
    return t->nspare;
}
