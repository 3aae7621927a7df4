/* context.h - the worker process's shared state: its configuration, a request in progress (job)
 * and the worker itself. Private to worker/: every module of the worker includes it, and it
 * includes only modules that know nothing of the worker (so no module's header leads back here). */
#ifndef FERRULE_WORKER_CONTEXT_H
#define FERRULE_WORKER_CONTEXT_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "blockwalk.h"
#include "breaker.h"
#include "cache.h"
#include "catalog.h"
#include "codec.h"
#include "crypto.h"
#include "health.h"
#include "metrics.h"
#include "http.h"
#include "journal.h"
#include "lograte.h"
#include "store.h"
#include "sweep.h"
#include "curve.h"

typedef struct {
    const char *worker_id;
    const char *database_url;
    const char *backends;           /* comma-separated broker backend endpoints */
    const char *providers_file;
    const char *encryption_key;     /* secret */
    const char *old_keys;           /* secret */
    const char *journal_path;
    int64_t heartbeat_ms;
    int64_t default_min_valid;      /* seconds */
    int64_t lease_ms;               /* must outlive a provider call: > http_timeout_ms */
    int64_t http_connect_ms;
    int64_t http_timeout_ms;
    int64_t max_provider_body;
    int64_t drain_ms;               /* how long a drain may take before exiting anyway */
    int64_t hwm;
    const char *http_bind;          /* /healthz, /readyz, /metrics; NULL: not served */
    int64_t connect_state_ttl_s;    /* how long a connect's state stays usable */
    int64_t backoff_base_ms;        /* first delay after a transient failure; doubles, with jitter */
    int64_t backoff_max_ms;
    int64_t breaker_min_failures;
    int64_t breaker_window_ms;
    int64_t breaker_open_ms;
    int64_t cache_revalidate_ms;    /* a cached entry older than this is checked against the database */
    store_limits_t db;
    sweep_config_t sweep;
    const char *fingerprint_key;    /* secret; NULL: derived from the encryption key */
    int64_t key_stats_ms;           /* how often values sealed with retired keys are counted */
    int64_t admin_rate_burst;       /* refresh and connect calls per integration: bucket size */
    int64_t admin_rate_per_min;     /* and refill rate */
    const curve_identity_t *curve;  /* this worker's key and the pinned broker key, or plaintext */
    int64_t db_batch_connection;    /* 1: a second connection for the refresh protocol's batches */
    int64_t http_idle_connections;  /* provider connections kept open between calls */
    int64_t broker_dns_refresh_ms;  /* dns+tcp:// names are resolved again this often */
    int64_t failover_keep_ms;       /* rotated commits kept in memory against a failover's loss (failover.c) */
    int64_t failover_keep_max_mb;   /* and the memory they may take */
} worker_config_t;

/* A rotated token's journal record waiting for its sync: journal_appended after it, and when
 * the loop woke to its provider's answer (for ferrule_worker_journal_window_seconds). */
typedef struct {
    uint64_t mark;
    int64_t answered_us;
} journal_wait_t;

/* A request being worked on, and where its reply goes: a broker link, the client's routing id
 * there, the broker's sequence. */
typedef struct job {
    struct job *next;
    int      link;
    unsigned char client [256];
    size_t   client_len;
    unsigned char seq [8];
    char     rid [65];
    int64_t  deadline_ms;           /* monotonic */
    int64_t  min_valid;             /* seconds, for token */
    int      min_valid_asked;       /* ... named by the request, not the service's default: a promise
                                     * kept even while refreshes back off (refresh.c) */
    int      forced;                /* refresh: whatever the token's remaining life */
    char     op [16];               /* for metrics */
    int      reloaded;              /* times parked for its integration's row, and gone on from it (loads.c) */
    int64_t  answer_ms;             /* a refresh's waiter: answered with what it waits for then (refresh.c) */
    int      once;                  /* remembered in once.c: its answer is kept for the broker's copies */
    char    *require_scopes;        /* a refresh's waiter: what its token must be granted, owned (refresh.c) */
} job_t;

typedef struct link link_t;
typedef struct refresh refresh_t;

typedef struct worker {
    worker_config_t cfg;
    void *ctx;
    link_t *links;
    size_t nlinks;
    char *dns [8];                  /* dns+tcp:// broker names, resolved again every broker_dns_refresh_ms */
    size_t ndns;
    struct resolve *resolver;       /* resolve.c: their lookups, off the loop */
    int64_t next_resolve_ms;
    crypto_keyring_t *keyring;
    catalog_t *catalog;
    store_t *store;
    store_t *batches;               /* the second connection, batches only (NULL: none) */
    int batches_were_up;            /* it has been connected before: its return is a reconnection */
    cache_t *cache;
    http_t *http;
    journal_t *journal;
    breaker_t *breaker;
    /* A database that refuses every write (read-only after a failover, a full disk) fails every
     * refresh's claim and each retry of its commit: said at most once a second each, with a count */
    lograte_t claim_fail_log, group_fail_log, commit_fail_log, wait_answer_log;
    sweep_t *sweep;
    codec_builder_t *out;
    metrics_t *metrics;
    health_t *health;
    struct {
        metrics_series_t *cache_hits, *cache_misses, *lease_waits, *refresh_seconds, *partitions_owned,
                         *refreshes_in_flight, *journal_backlog, *cached_integrations, *db_connected, *token_ok,
                         *journal_window, *revalidated_stale, *claim_batch, *commit_batch,
                         *phase_claim, *phase_commit, *db_batch, *parked,
                         *revoked, *revocation_failed, *journal_sync_failures,
                         *failover_rewritten, *failover_forgotten, *failover_kept, *failover_kept_bytes,
                         *failover_waiting, *once_dropped, *once_answered, *calls_queued;
        metrics_series_t *values_on_old_keys;   /* keystats.c */
        uint64_t journal_sync_failures_seen;    /* journal_sync_failures at the last publish */
    } m;
    refresh_t *refreshes;           /* every refresh in progress */
    journal_wait_t *jwait;          /* rotated tokens written to the journal, not yet seen synced */
    size_t jwait_n, jwait_cap;
    struct call *calls;             /* calls.c: code exchanges and revocations in flight */
    struct loads *loads;            /* loads.c: requests waiting for their integration's row */
    struct dbwait *dbwait;          /* dbwait.c: work waiting for a free database connection */
    struct recovery *recovery;      /* recovery.c: what an earlier run left, settled at start */
    struct failover *failover;      /* failover.c: the last rotated commits, checked after a reconnection */
    struct events *events;          /* events.c: the event delivery thread (started by main.c) */
    int draining;
    int64_t drain_until_ms;         /* monotonic: when a drain stops waiting for what is in flight */
    int64_t drain_last_ms;          /* monotonic: how long past that it waits for a provider call out
                                       (or an answer not stored yet) that may hold the only copy of a
                                       grant: a rotated refresh token, a spent code's tokens */
    int started_db;                 /* journal replayed and leases released for this run */
    const char *recovering;         /* recovery.c: the start-up recovery's step, for the answers of
                                       the requests whose claims wait for it */
    int64_t woke_us;                /* monotonic: when the loop's poll last returned */
    int64_t next_revalidate_ms;
    int revalidating;               /* a re-validation batch is in flight */
    int keystats_phase;             /* keystats.c: idle, or which step of a count */
    int keystats_in_flight;         /* keystats.c: a batch of the count is out */
    blockwalk_t keystats_walk;      /* keystats.c: the walk over integrations */
    int64_t keystats_sum;           /* keystats.c: what the walk's ranges counted so far */
    int64_t keystats_step_ms;       /* keystats.c: no step of the walk before this (after a failure) */
    int64_t next_hello_ms;
    int64_t session;                /* random per process, in HELLO: a restart under one id and pid shows */
    int64_t next_publish_ms;
    int64_t next_keystats_ms;       /* keystats.c */
    int64_t keystats_integrations;  /* keystats.c: the last count, valid when keystats_counted */
    int64_t keystats_connects;
    int     keystats_counted;
    int     keystats_warned;        /* keystats.c: a failed count was logged as a warning */
    struct ratelimit *admin_rate;   /* ratelimit.c: refresh and connect per integration */
    struct once *once;              /* once.c: the administering requests in flight or just answered */
} worker_t;
#endif
