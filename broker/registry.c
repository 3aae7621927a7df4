/* registry.c - live workers and the rendezvous partition map computed from them */
#include "registry.h"
#include "log.h"
#include "mem.h"
#include "ring.h"
#include <assert.h>
#include <string.h>

typedef struct {
    char    id [REGISTRY_MAX_WORKER_ID + 1];
    int64_t last_seen_ms;
    int     draining;
    int64_t pid;                  /* of the process that said HELLO; -1: it did not say */
    int64_t session;              /* its random session; 0: it did not say */
    uint64_t connection;          /* the broker's connection its last HELLO came on; 0: unknown */
    char    key [REGISTRY_KEY_LEN + 1];   /* the CURVE key its last HELLO came with; "": none */
} registry_worker_t;

struct registry {
    uint32_t partitions;
    int64_t  timeout_ms;
    registry_worker_t *workers;
    size_t   count;
    size_t   cap;
    const char **owners;          /* per partition: points into workers[], NULL when none */
};

registry_t *
registry_new (uint32_t partitions, int64_t heartbeat_timeout_ms)
{
    assert (partitions > 0);
    registry_t *r = mem_alloc (sizeof *r);
    r->partitions = partitions;
    r->timeout_ms = heartbeat_timeout_ms;
    r->owners = mem_alloc (partitions * sizeof *r->owners);
    return r;
}

void
registry_destroy (registry_t **r_p)
{
    if (r_p && *r_p) {
        mem_free ((*r_p)->workers);
        mem_free ((*r_p)->owners);
        mem_free (*r_p);
        *r_p = NULL;
    }
}

/* Recomputes every partition's owner from the live (non-draining) workers. */
static void
registry_rebuild (registry_t *r)
{
    const char **ids = mem_alloc ((r->count + 1) * sizeof *ids);
    size_t n = 0;
    for (size_t i = 0; i < r->count; i++)
        if (!r->workers [i].draining)
            ids [n++] = r->workers [i].id;
    for (uint32_t p = 0; p < r->partitions; p++) {
        int o = ring_owner (p, ids, n);
        r->owners [p] = o >= 0 ? ids [o] : NULL;
    }
    mem_free (ids);
}

static registry_worker_t *
registry_find (const registry_t *r, const char *worker_id)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp (r->workers [i].id, worker_id) == 0)
            return &r->workers [i];
    return NULL;
}

int
registry_restarted (const registry_t *r, const char *worker_id, int64_t pid, int64_t session)
{
    const registry_worker_t *w = registry_find (r, worker_id);
    if (!w)
        return 0;
    return (w->pid >= 0 && pid >= 0 && w->pid != pid) || (w->session && session && w->session != session);
}

int
registry_seen (registry_t *r, const char *worker_id, int draining, int64_t pid, int64_t session, int64_t now_ms)
{
    registry_worker_t *w = registry_find (r, worker_id);
    if (w) {
        w->last_seen_ms = now_ms;
        if (pid >= 0)
            w->pid = pid;
        if (session)
            w->session = session;
        if (w->draining != draining) {
            w->draining = draining;
            registry_rebuild (r);
            log_info (NULL, NULL, "worker \"%s\" is %s; partitions reassigned",
                      worker_id, draining ? "draining" : "serving again");
            return 1;
        }
        return 0;
    }
    if (r->count == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->workers = mem_realloc (r->workers, r->cap * sizeof *r->workers);
    }
    w = &r->workers [r->count++];
    memset (w, 0, sizeof *w);
    strncpy (w->id, worker_id, REGISTRY_MAX_WORKER_ID);
    w->last_seen_ms = now_ms;
    w->draining = draining;
    w->pid = pid;
    w->session = session;
    registry_rebuild (r);   /* the array may have moved: owners must be recomputed anyway */
    log_info (NULL, NULL, "worker \"%s\" joined; %zu workers known", worker_id, r->count);
    return 1;
}

uint64_t
registry_connection (registry_t *r, const char *worker_id, uint64_t connection)
{
    registry_worker_t *w = registry_find (r, worker_id);
    if (!w)
        return 0;
    uint64_t before = w->connection;
    if (connection)
        w->connection = connection;
    return before;
}

void
registry_set_key (registry_t *r, const char *worker_id, const char *z85)
{
    registry_worker_t *w = registry_find (r, worker_id);
    if (!w)
        return;
    if (z85 && strlen (z85) == REGISTRY_KEY_LEN)
        memcpy (w->key, z85, REGISTRY_KEY_LEN + 1);
    else
        w->key [0] = '\0';
}

int
registry_touch (registry_t *r, const char *worker_id, int64_t now_ms)
{
    registry_worker_t *w = registry_find (r, worker_id);
    if (!w)
        return 0;
    w->last_seen_ms = now_ms;
    return 1;
}

int
registry_remove (registry_t *r, const char *worker_id)
{
    registry_worker_t *w = registry_find (r, worker_id);
    if (!w)
        return 0;
    size_t i = (size_t) (w - r->workers);
    memmove (&r->workers [i], &r->workers [i + 1], (r->count - i - 1) * sizeof *r->workers);
    r->count--;
    registry_rebuild (r);
    log_info (NULL, NULL, "worker \"%s\" removed; %zu workers known", worker_id, r->count);
    return 1;
}

void
registry_discount (registry_t *r, int64_t ms, int64_t now_ms)
{
    for (size_t i = 0; i < r->count; i++) {
        int64_t *seen = &r->workers [i].last_seen_ms;
        *seen = *seen + ms < now_ms ? *seen + ms : (*seen > now_ms ? *seen : now_ms);
    }
}

size_t
registry_expired (const registry_t *r, int64_t now_ms, char out [][REGISTRY_MAX_WORKER_ID + 1], size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->count && n < max; i++)
        if (now_ms - r->workers [i].last_seen_ms > r->timeout_ms) {
            memcpy (out [n], r->workers [i].id, REGISTRY_MAX_WORKER_ID + 1);
            n++;
        }
    return n;
}

const char *
registry_owner (const registry_t *r, uint32_t partition)
{
    return partition < r->partitions ? r->owners [partition] : NULL;
}

uint32_t
registry_partitions (const registry_t *r)
{
    return r->partitions;
}

uint32_t
registry_partitions_owned (const registry_t *r)
{
    uint32_t n = 0;
    for (uint32_t p = 0; p < r->partitions; p++)
        if (r->owners [p])
            n++;
    return n;
}

size_t
registry_live_count (const registry_t *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->count; i++)
        if (!r->workers [i].draining)
            n++;
    return n;
}

size_t
registry_count (const registry_t *r)
{
    return r->count;
}

const char *
registry_worker_at (const registry_t *r, size_t i, int *draining)
{
    if (i >= r->count)
        return NULL;
    if (draining)
        *draining = r->workers [i].draining;
    return r->workers [i].id;
}

const char *
registry_key_at (const registry_t *r, size_t i)
{
    return i < r->count ? r->workers [i].key : "";
}

int
registry_known (const registry_t *r, const char *worker_id)
{
    return registry_find (r, worker_id) != NULL;
}
