/* cache.h - the integrations a worker has seen, with their decrypted access tokens, so that a
 * cache hit answers without touching the database */
#ifndef FERRULE_CACHE_H
#define FERRULE_CACHE_H
#include <stddef.h>
#include <stdint.h>

typedef enum { INTEG_ACTIVE = 0, INTEG_NEEDS_RECONNECT, INTEG_DISCONNECTED } integ_status_t;

struct refresh;

typedef struct cache_entry cache_entry_t;
struct cache_entry {
    cache_entry_t *hnext;
    const char *provider;         /* interned by the cache (cache_set_provider): one copy per name */
    char    *access_token;        /* plaintext, NUL-terminated inside hit_reply; NULL when none */
    unsigned char *hit_reply;     /* secmem (not in core dumps): a cache hit's reply, packed once per token */
    uint32_t hit_len;             /* its bytes (the token's NUL after them is not part of it) */
    uint32_t hit_refreshed;       /* the offset of its "refreshed" value */
    int64_t  access_expires_at;   /* epoch seconds */
    int64_t  generation;
    int64_t  refreshed_ms;        /* monotonic time this worker last refreshed it, 0 never */
    int64_t  checked_ms;          /* monotonic time its generation was last read from or written to the database */
    int64_t  backoff_until_ms;    /* monotonic: no provider call before this after failed refreshes */
    int32_t  lifetime_s;          /* the access token's lifetime when issued, for refresh-ahead */
    uint8_t  failures;            /* consecutive failed refreshes (invalid_grant aside) */
    uint8_t  backoff_code;        /* fr_status_t of the last of them: what callers are told meanwhile */
    uint8_t  refresh_rejecting;   /* the refresh in flight was asked for by a rejection */
    uint8_t  backoff_local;       /* ... and they failed before the provider was called */
    char    *scopes;              /* space-separated */
    char    *api_base_url;        /* the provider's API base URL for this grant, or NULL (most
                                   * providers name none: a pointer, not a buffer, per entry) */
    char    *inactive_why;        /* while not active: the refusal that made it so, as the row's
                                   * last error says it, for every later answer to quote; NULL
                                   * when active or not known */
    struct refresh *refresh;      /* the refresh in flight: requests join it (single flight) */
    uint8_t  status;              /* integ_status_t */
    uint8_t  stale;               /* changed elsewhere while a refresh ran, or cleared while backing
                                   * off: dropped when the refresh ends, read again at the next use */
    uint8_t  refresh_token_missing;   /* connected without a refresh token: never refreshed */
    uint8_t  rejected;            /* its token, which nothing can renew, was rejected (token --reject): never
                                   * served again; kept until the database says needs_reconnect or another
                                   * generation (connect_reject_unrenewable) */
    char     id [];
};

typedef struct cache cache_t;

cache_t *cache_new (void);
void cache_destroy (cache_t **c_p);
cache_entry_t *cache_get (const cache_t *c, const char *id);
/* Returns the entry for id, creating an empty one. */
cache_entry_t *cache_put (cache_t *c, const char *id);
/* Forgets an entry (when a refresh is in flight, or its token was rejected, it is only marked stale). */
void cache_drop (cache_t *c, const char *id);
/* Forgets every entry without a refresh in flight, failed refreshes or a rejected token (those are
 * marked stale). */
void cache_clear (cache_t *c);
size_t cache_count (const cache_t *c);
/* Up to max ids (copies: the caller frees each) of entries without a refresh in flight whose
 * checked_ms is before older_than_ms, continuing a round-robin scan from where the last call
 * stopped, so that repeated calls cover the whole cache. Returns how many. */
size_t cache_collect_unchecked (cache_t *c, int64_t older_than_ms, char **ids, size_t max);

/* A cache hit's reply is a map of CACHE_HIT_FIELDS fields (one more, "api_base_url", when the
 * entry has one: cache_hit_fields), and the request's id ("rid") first when it has one: "ok"
 * true, "expires_at", "generation", "api_base_url", "refreshed" false, "access_token" last (so
 * that the token, NUL-terminated after the packed bytes, is also access_token). Only the map's
 * header and the id change from one request to the next (reply_token). */
#define CACHE_HIT_FIELDS 5
#define cache_hit_fields(e) (CACHE_HIT_FIELDS + ((e)->api_base_url ? 1 : 0))

/* Replaces the access token (takes a copy), its expiry and generation, and packs hit_reply; the
 * entry counts as checked against the database now. */
void cache_set_token (cache_entry_t *e, const char *access_token, int64_t expires_at, int64_t generation);
void cache_set_text (char **field, const char *value);
/* Marks the entry's token rejected and forgets it (wiped): no request is answered with it. */
void cache_reject_token (cache_entry_t *e);
/* Replaces the entry's API base URL (takes a copy; NULL: none) and, when it changed, packs its
 * hit reply again around the same token. */
void cache_set_api_base_url (cache_entry_t *e, const char *url);
/* Sets the entry's provider name to the cache's one copy of name (a worker caches many
 * integrations of few providers: a copy each cost a heap chunk per entry). */
void cache_set_provider (cache_t *c, cache_entry_t *e, const char *name);
integ_status_t cache_status_from_text (const char *status);
/* An integration's status changes only so (whatever the database says is adopted as it is; these
 * are the changes this worker makes itself):
 *   active          -> needs_reconnect (the provider refused the refresh token), disconnected
 *   needs_reconnect -> active (a commit carrying a rotated token won), disconnected
 *   disconnected    -> active (a reconnect)
 * A disconnected integration never becomes needs_reconnect: a late refusal of its destroyed
 * chain says nothing about it. 1 when allowed (staying is allowed). */
int cache_status_transition_allowed (integ_status_t from, integ_status_t to);
/* The one place this worker changes a cached status: 0 done, -1 refused (logged). */
int cache_set_status (cache_entry_t *e, integ_status_t to);
const char *cache_status_text (integ_status_t status);
#endif
