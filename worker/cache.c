/* cache.c - a chained hash of integration entries. Entries are small: the id is stored inline,
 * tokens and names are exact-size strings. */
#include "cache.h"
#include "codec.h"
#include "log.h"
#include "clock.h"
#include "mem.h"
#include "ring.h"
#include "secmem.h"
#include <stddef.h>
#include <string.h>

struct cache {
    cache_entry_t **buckets;
    size_t nbuckets;             /* power of two */
    size_t count;
    size_t scan;                 /* next bucket of cache_collect_unchecked */
    char **names;                /* provider names, one copy each (cache_set_provider) */
    size_t nnames;
};

cache_t *
cache_new (void)
{
    cache_t *c = mem_alloc (sizeof *c);
    c->nbuckets = 1024;
    c->buckets = mem_alloc (c->nbuckets * sizeof *c->buckets);
    return c;
}

/* Wipes and frees the token and its reply. */
static void
entry_forget_token (cache_entry_t *e)
{
    if (e->hit_reply)
        secmem_free (e->hit_reply);
    e->hit_reply = NULL;
    e->access_token = NULL;
    e->hit_len = e->hit_refreshed = 0;
}

static void
entry_free (cache_entry_t *e)
{
    entry_forget_token (e);
    mem_free (e->scopes);
    mem_free (e->api_base_url);
    mem_free (e->inactive_why);
    mem_free (e);
}

void
cache_destroy (cache_t **c_p)
{
    if (c_p && *c_p) {
        cache_t *c = *c_p;
        for (size_t i = 0; i < c->nbuckets; i++) {
            cache_entry_t *e = c->buckets [i];
            while (e) {
                cache_entry_t *next = e->hnext;
                entry_free (e);
                e = next;
            }
        }
        for (size_t i = 0; i < c->nnames; i++)
            mem_free (c->names [i]);
        mem_free (c->names);
        mem_free (c->buckets);
        mem_free (c);
        *c_p = NULL;
    }
}

static size_t
bucket_of (const cache_t *c, const char *id)
{
    return (size_t) (ring_hash (id, strlen (id)) & (c->nbuckets - 1));
}

cache_entry_t *
cache_get (const cache_t *c, const char *id)
{
    for (cache_entry_t *e = c->buckets [bucket_of (c, id)]; e; e = e->hnext)
        if (strcmp (e->id, id) == 0)
            return e;
    return NULL;
}

static void
cache_grow (cache_t *c)
{
    size_t n = c->nbuckets * 2;
    cache_entry_t **b = mem_alloc (n * sizeof *b);
    for (size_t i = 0; i < c->nbuckets; i++) {
        cache_entry_t *e = c->buckets [i];
        while (e) {
            cache_entry_t *next = e->hnext;
            size_t j = (size_t) (ring_hash (e->id, strlen (e->id)) & (n - 1));
            e->hnext = b [j];
            b [j] = e;
            e = next;
        }
    }
    mem_free (c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

cache_entry_t *
cache_put (cache_t *c, const char *id)
{
    cache_entry_t *e = cache_get (c, id);
    if (e)
        return e;
    if (c->count >= c->nbuckets)
        cache_grow (c);
    size_t len = strlen (id);
    /* the id right after the last field, not after the struct's tail padding: with the API base
     * URL's pointer an 18-byte id still fits the 144-byte chunk it took before (docs/performance.md, (e)) */
    e = mem_alloc (offsetof (cache_entry_t, id) + len + 1);
    memcpy (e->id, id, len + 1);
    size_t b = bucket_of (c, id);
    e->hnext = c->buckets [b];
    c->buckets [b] = e;
    c->count++;
    return e;
}

void
cache_drop (cache_t *c, const char *id)
{
    cache_entry_t **pp = &c->buckets [bucket_of (c, id)];
    while (*pp && strcmp ((*pp)->id, id) != 0)
        pp = &(*pp)->hnext;
    if (!*pp)
        return;
    cache_entry_t *e = *pp;
    /* a rejected token's entry is what keeps the row's copy of that token from being served
     * again until the database has it needs_reconnect (refresh_cache_row reads it anew) */
    if (e->refresh || e->rejected) {
        e->stale = 1;
        return;
    }
    *pp = e->hnext;
    c->count--;
    entry_free (e);
}

void
cache_clear (cache_t *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        cache_entry_t **pp = &c->buckets [i];
        while (*pp) {
            cache_entry_t *e = *pp;
            /* an entry backing off is kept too, stale (read again at its next use), so that its
             * backoff outlives the reconnection that cleared the cache (refresh_cache_row) */
            if (e->refresh || e->failures || e->rejected) {
                e->stale = 1;
                pp = &e->hnext;
                continue;
            }
            *pp = e->hnext;
            c->count--;
            entry_free (e);
        }
    }
}

size_t
cache_count (const cache_t *c)
{
    return c->count;
}

size_t
cache_collect_unchecked (cache_t *c, int64_t older_than_ms, char **ids, size_t max)
{
    size_t n = 0;
    for (size_t visited = 0; visited < c->nbuckets && n < max; visited++) {
        size_t b = c->scan++ & (c->nbuckets - 1);
        for (cache_entry_t *e = c->buckets [b]; e; e = e->hnext)
            if (!e->refresh && !e->stale && e->checked_ms < older_than_ms && n < max)
                ids [n++] = mem_strdup (e->id);
    }
    return n;
}

void
cache_set_provider (cache_t *c, cache_entry_t *e, const char *name)
{
    if (!name) {
        e->provider = NULL;
        return;
    }
    if (e->provider && strcmp (e->provider, name) == 0)
        return;
    for (size_t i = 0; i < c->nnames; i++)
        if (strcmp (c->names [i], name) == 0) {
            e->provider = c->names [i];
            return;
        }
    /* a new name: the catalog's providers, and the rare unknown one a row names */
    c->names = mem_realloc (c->names, (c->nnames + 1) * sizeof *c->names);
    c->names [c->nnames] = mem_strdup (name);
    e->provider = c->names [c->nnames++];
}

void
cache_set_text (char **field, const char *value)
{
    if (*field && value && strcmp (*field, value) == 0)
        return;
    mem_free (*field);
    *field = value ? mem_strdup (value) : NULL;
}

/* Packs the hit reply (cache.h) into secure memory: plaintext tokens live in pages left out of core
 * dumps, wiped when replaced. The block is sized to the reply exactly enough that a 120-byte token
 * and its reply share one size class, as the token alone did. */
static void
entry_pack_hit (cache_entry_t *e, const char *access_token)
{
    char when [32];
    clock_rfc3339 (e->access_expires_at, when, sizeof when);
    size_t tlen = strlen (access_token);
    size_t ulen = e->api_base_url ? strlen (e->api_base_url) : 0;
    /* "ok" true, then each key with its header, each value's largest header, the NUL */
    size_t cap = 4 + 11 + (5 + strlen (when)) + 11 + 9 + (e->api_base_url ? 13 + 5 + ulen : 0) + 10 + 1 + 13
               + (5 + tlen) + 1;
    unsigned char *buf = secmem_alloc (cap);
    codec_builder_t *b = codec_builder_new_fixed (buf, cap - 1);
    size_t at, len;
    codec_kv_bool (b, "ok", 1);
    codec_kv_str (b, "expires_at", when);
    codec_kv_int (b, "generation", e->generation);
    if (e->api_base_url)
        codec_kv_str (b, "api_base_url", e->api_base_url);
    codec_str (b, "refreshed");
    (void) codec_builder_data (b, &at);
    codec_bool (b, 0);
    codec_kv_str (b, "access_token", access_token);
    (void) codec_builder_data (b, &len);
    int failed = codec_builder_failed (b);
    codec_builder_destroy (&b);
    if (failed) {
        /* longer than a reply may carry (only a row written around Ferrule holds one): the entry
         * holds no token; a token request is answered unavailable until a refresh replaces it */
        secmem_free (buf);
        log_warning (e->id, NULL, "its stored access token (%zu bytes) is longer than a reply may carry: "
                     "it is not served until a refresh replaces it", tlen);
        return;
    }
    buf [len] = '\0';
    e->hit_reply = buf;
    e->hit_len = (uint32_t) len;
    e->hit_refreshed = (uint32_t) at;
    e->access_token = (char *) buf + len - tlen;
}

void
cache_set_api_base_url (cache_entry_t *e, const char *url)
{
    if (e->api_base_url == url || (e->api_base_url && url && strcmp (e->api_base_url, url) == 0))
        return;
    cache_set_text (&e->api_base_url, url);
    if (!e->hit_reply)
        return;
    /* the token lives inside the reply it is packed in: a copy, in secure memory, while repacking */
    char *token = secmem_strdup (e->access_token);
    entry_forget_token (e);
    entry_pack_hit (e, token);
    secmem_free_str (&token);
}

void
cache_set_token (cache_entry_t *e, const char *access_token, int64_t expires_at, int64_t generation)
{
    entry_forget_token (e);
    e->access_expires_at = expires_at;
    e->checked_ms = clock_mono_ms ();
    e->generation = generation;
    if (access_token)
        entry_pack_hit (e, access_token);
}

void
cache_reject_token (cache_entry_t *e)
{
    entry_forget_token (e);
    e->rejected = 1;
}

integ_status_t
cache_status_from_text (const char *status)
{
    if (status && strcmp (status, "needs_reconnect") == 0)
        return INTEG_NEEDS_RECONNECT;
    if (status && strcmp (status, "disconnected") == 0)
        return INTEG_DISCONNECTED;
    return INTEG_ACTIVE;
}

int
cache_status_transition_allowed (integ_status_t from, integ_status_t to)
{
    if (from == to)
        return 1;
    switch (from) {
        case INTEG_ACTIVE:          return to == INTEG_NEEDS_RECONNECT || to == INTEG_DISCONNECTED;
        case INTEG_NEEDS_RECONNECT: return to == INTEG_ACTIVE || to == INTEG_DISCONNECTED;
        case INTEG_DISCONNECTED:    return to == INTEG_ACTIVE;
    }
    return 0;
}

int
cache_set_status (cache_entry_t *e, integ_status_t to)
{
    if (!cache_status_transition_allowed ((integ_status_t) e->status, to)) {
        log_error (e->id, NULL, "kept status %s: a change to %s is not a legal move",
                     cache_status_text ((integ_status_t) e->status), cache_status_text (to));
        return -1;
    }
    e->status = (uint8_t) to;
    if (to == INTEG_ACTIVE)
        cache_set_text (&e->inactive_why, NULL);
    return 0;
}

const char *
cache_status_text (integ_status_t status)
{
    switch (status) {
        case INTEG_NEEDS_RECONNECT: return "needs_reconnect";
        case INTEG_DISCONNECTED:    return "disconnected";
        default:                    return "active";
    }
}
