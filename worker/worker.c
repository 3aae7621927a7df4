/* worker.c - the worker's one poll loop: broker links, provider sockets, the database's
 * notification socket, and one housekeeping tick. The top of worker/: it wires the modules
 * together and nothing imports it. */
#include "worker.h"
#include "store_chain.h"
#include "calls.h"
#include "events.h"
#include "keystats.h"
#include "links.h"
#include "loads.h"
#include "dbwait.h"
#include "disconnect.h"
#include "once.h"
#include "ratelimit.h"
#include "recovery.h"
#include "failover.h"
#include "refresh.h"
#include "reply.h"
#include "requests.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

/* the links, the database's two connections and the journal's wakeup, and every socket curl
 * may ask for: one left out is read only when curl's own timers run its call, so its answer can
 * wait unread until the call times out */
#define POLL_FIXED 3
#define POLL_MAX   (LINKS_MAX + POLL_FIXED + HTTP_MAX_SOCKETS)


worker_t *
worker_new (const worker_config_t *cfg, char *err, size_t errlen)
{
    worker_t *w = mem_alloc (sizeof *w);
    w->cfg = *cfg;
    w->keyring = crypto_keyring_new (cfg->encryption_key, cfg->old_keys, err, errlen);
    if (!w->keyring || crypto_keyring_set_fingerprint_key (w->keyring, cfg->fingerprint_key, err, errlen) != FR_OK)
        goto fail;
    /* the keys live in the keyring's protected memory from here on; main wipes their text */
    w->cfg.encryption_key = w->cfg.old_keys = w->cfg.fingerprint_key = NULL;
    w->catalog = catalog_new (cfg->providers_file, err, errlen);
    if (!w->catalog)
        goto fail;
    catalog_forget_environment (w->catalog);
    w->journal = journal_open (cfg->journal_path, err, errlen);
    if (!w->journal)
        goto fail;
    w->store = store_new (cfg->database_url, cfg->worker_id, &cfg->db);
    if (cfg->db_batch_connection) {
        /* made in the background by the loop (store_reconnect), like any reconnection */
        w->batches = store_new (cfg->database_url, cfg->worker_id, &cfg->db);
        store_batches_only (w->batches);
    }
    w->cache = cache_new ();
    w->loads = loads_new ();
    w->dbwait = dbwait_new ();
    w->recovery = recovery_new ();
    w->failover = failover_new (cfg->failover_keep_ms, (size_t) cfg->failover_keep_max_mb << 20);
    failover_restore (w->failover, w->journal);
    w->breaker = breaker_new ("provider", cfg->breaker_min_failures, cfg->breaker_window_ms, cfg->breaker_open_ms,
                              cfg->breaker_open_ms);
    w->sweep = sweep_new (&cfg->sweep);
    w->http = http_new (cfg->http_connect_ms, cfg->http_timeout_ms, (size_t) cfg->max_provider_body,
                       (long) cfg->http_idle_connections);
    w->out = codec_builder_new ();
    w->once = once_new ();
    /* 53 bits, exact in a JSON number; never 0, which means "none" to a broker. A weak session
     * only makes a restart harder to tell from a heartbeat: the pid still differs outside containers */
    if (crypto_random (&w->session, sizeof w->session) != 0)
        w->session = clock_wall_ms () ^ clock_mono_us ();
    w->session = (int64_t) ((uint64_t) w->session & 0x1fffffffffffffULL);
    if (w->session == 0)
        w->session = 1;
    w->metrics = metrics_new ("ferrule_");
    static const double refresh_bounds [] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
    w->m.cache_hits = metrics_counter (w->metrics, "worker_cache_hits_total", "token requests answered from the cache", NULL);
    w->m.cache_misses = metrics_counter (w->metrics, "worker_cache_misses_total", "token requests that needed the database or a refresh", NULL);
    w->m.lease_waits = metrics_counter (w->metrics, "worker_lease_waits_total", "refresh claims that found another holder's live lease", NULL);
    w->m.refresh_seconds = metrics_histogram (w->metrics, "worker_refresh_duration_seconds",
                                              "the provider call (request to answer), per refresh that called the provider", NULL,
                                              refresh_bounds, sizeof refresh_bounds / sizeof refresh_bounds [0]);
    /* a millisecond apart from 2 to 10 ms, where the window's p99 lies under load (issue 8's target
     * is 5 ms): a report of the bucket's upper bound should not be wider than the gap it shows */
    static const double window_bounds [] = { 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
                                             0.006, 0.007, 0.008, 0.009, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025,
                                             0.05, 0.1, 0.25, 1 };
    w->m.journal_window = metrics_histogram (w->metrics, "worker_journal_window_seconds",
                                             "from the loop waking to a provider's answer with a rotated refresh token "
                                             "to the end of the sync that put that token on disk in the journal", NULL,
                                             window_bounds, sizeof window_bounds / sizeof window_bounds [0]);
    /* where a refresh's time goes, besides the provider call (refresh_duration) and the journal
     * (journal_window): from its start to its provider call (the claim, and any wait for a busy
     * lease), and from its tokens being ready to be committed to their commit */
    static const double phase_bounds [] = { 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                                            1, 5, 30 };
    w->m.phase_claim = metrics_histogram (w->metrics, "worker_refresh_phase_seconds",
                                          "a refresh's time by phase: claim (start to provider call), commit "
                                          "(provider's answer to committed)", "phase=\"claim\"",
                                          phase_bounds, sizeof phase_bounds / sizeof phase_bounds [0]);
    w->m.phase_commit = metrics_histogram (w->metrics, "worker_refresh_phase_seconds", NULL, "phase=\"commit\"",
                                           phase_bounds, sizeof phase_bounds / sizeof phase_bounds [0]);
    w->m.db_batch = metrics_histogram (w->metrics, "worker_db_batch_seconds",
                                       "a batch of claims and commits, from sent to its answers delivered by the loop",
                                       NULL, phase_bounds, sizeof phase_bounds / sizeof phase_bounds [0]);
    static const double batch_bounds [] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 };
    w->m.claim_batch = metrics_histogram (w->metrics, "worker_claim_batch_size",
                                          "refresh claims sent to the database together (one transaction)", NULL,
                                          batch_bounds, sizeof batch_bounds / sizeof batch_bounds [0]);
    w->m.commit_batch = metrics_histogram (w->metrics, "worker_commit_batch_size",
                                           "refresh commits sent to the database together (group commit: one "
                                           "transaction, one WAL flush)", NULL,
                                           batch_bounds, sizeof batch_bounds / sizeof batch_bounds [0]);
    w->m.revoked = metrics_counter (w->metrics, "worker_revocations_total",
                                    "token revocations at providers (a disconnect's, or of the token a refresh "
                                    "or a connect obtained while its integration was being disconnected), by "
                                    "outcome",
                                    "outcome=\"revoked\"");
    w->m.revocation_failed = metrics_counter (w->metrics, "worker_revocations_total", NULL, "outcome=\"failed\"");
    w->m.once_dropped = metrics_counter (w->metrics, "worker_requests_sent_again_total",
                                         "copies of administering requests a broker sent again (its connection "
                                         "broke, or it counted this worker lost): dropped while the first was "
                                         "worked on, or answered again with the first's answer", "outcome=\"dropped\"");
    w->m.once_answered = metrics_counter (w->metrics, "worker_requests_sent_again_total", NULL,
                                          "outcome=\"answered_again\"");
    w->m.revalidated_stale = metrics_counter (w->metrics, "worker_cache_revalidated_stale_total",
                                              "cached integrations found changed by the periodic re-validation "
                                              "(a change whose notification never arrived)", NULL);
    w->m.failover_rewritten = metrics_counter (w->metrics, "worker_failover_commits_rewritten_total",
                                               "rotated refresh commits a new database connection found lost (a failover "
                                               "to a standby that had not received them, a restore) and wrote again "
                                               "from memory", NULL);
    w->m.failover_forgotten = metrics_counter (w->metrics, "worker_failover_commits_forgotten_total",
                                               "rotated refresh commits forgotten before FERRULE_FAILOVER_KEEP_MS "
                                               "because FERRULE_FAILOVER_KEEP_MAX_MB or 100000 commits were kept", NULL);
    w->m.failover_kept = metrics_gauge (w->metrics, "worker_failover_commits_kept",
                                        "rotated refresh commits kept in memory against a failover's loss", NULL);
    w->m.failover_kept_bytes = metrics_gauge (w->metrics, "worker_failover_commits_kept_bytes",
                                              "the memory the kept rotated refresh commits take (at most "
                                              "FERRULE_FAILOVER_KEEP_MAX_MB)", NULL);
    w->m.failover_waiting = metrics_gauge (w->metrics, "worker_failover_integrations_waiting",
                                           "integrations whose rows a failover put behind commits another worker made "
                                           "(kept commits, journal records): "
                                           "their refreshes wait until that worker has written its own again", NULL);
    w->m.partitions_owned = metrics_gauge (w->metrics, "worker_partitions_owned", "partitions this worker owns by the last membership seen (none after three heartbeat intervals without a PING)", NULL);
    w->m.refreshes_in_flight = metrics_gauge (w->metrics, "worker_refreshes_in_flight", "refreshes claimed, calling or committing", NULL);
    _Static_assert (HTTP_MAX_CALLS == 500, "the help of worker_provider_calls_queued names the limit");
    w->m.calls_queued = metrics_gauge (w->metrics, "worker_provider_calls_queued",
                                       "provider calls (refreshes, code exchanges, revocations) waiting their turn: "
                                       "a worker makes at most 500 at once", NULL);
    w->m.journal_backlog = metrics_gauge (w->metrics, "worker_journal_backlog", "rotated tokens in the local journal not yet committed", NULL);
    w->m.journal_sync_failures = metrics_counter (w->metrics, "worker_journal_sync_failures_total",
                                                  "flushes of the journal to disk that failed (each is written again and "
                                                  "retried; a disk to replace)", NULL);
    w->m.parked = metrics_gauge (w->metrics, "worker_requests_parked", "requests waiting for the database: parked until their integration's row is read (cache misses, status, history) or queued for a free connection (history, import)", NULL);
    w->m.cached_integrations = metrics_gauge (w->metrics, "worker_cached_integrations", "integrations in this worker's cache", NULL);
    w->m.db_connected = metrics_gauge (w->metrics, "worker_database_connected", "1 while the database connection is up", NULL);
    if (cfg->http_bind && *cfg->http_bind) {
        w->health = health_new (cfg->http_bind, w->metrics, err, errlen);
        if (!w->health)
            goto fail;
        log_info (NULL, NULL, "serving /healthz, /readyz and /metrics on port %d", health_port (w->health));
        if (!cfg->curve || cfg->curve->plaintext)
            health_set_note (w->health, "plaintext: links are neither authenticated nor encrypted (FERRULE_ALLOW_PLAINTEXT=1)");
    }
    w->ctx = zmq_ctx_new ();

    if (links_setup (w, cfg->backends, err, errlen) != FR_OK)
        goto fail;
    fr_status_t st = store_connect (w->store, err, errlen);
    if (st == FR_CONFIGURATION)
        goto fail;              /* schema too old: refusing to start is the only safe answer */
    if (st != FR_OK)
        log_warning (NULL, NULL, "%s; will keep trying", err);
    return w;
fail:
    worker_destroy (&w);
    return NULL;
}

void
worker_destroy (worker_t **w_p)
{
    if (w_p && *w_p) {
        worker_t *w = *w_p;
        if (w->store)
            store_batch_finish (w->store);  /* a batch in flight is answered, its refreshes settled */
        if (w->batches)
            store_batch_finish (w->batches);
        if (w->cache)
            refresh_abandon_all (w);
        loads_destroy (&w->loads);
        dbwait_destroy (&w->dbwait, w);
        recovery_destroy (&w->recovery);
        failover_destroy (&w->failover);
        calls_abandon_all (w);
        links_close_all (w);
        frames_ctx_term (w->ctx);          /* the goodbye's linger, even through a second SIGTERM */
        http_destroy (&w->http);
        cache_destroy (&w->cache);
        breaker_destroy (&w->breaker);
        sweep_destroy (&w->sweep);
        store_destroy (&w->store);
        store_destroy (&w->batches);
        journal_close (&w->journal);     /* a sync in flight ends first */
        mem_free (w->jwait);
        catalog_destroy (&w->catalog);
        crypto_keyring_destroy (&w->keyring);
        ratelimit_destroy (&w->admin_rate);
        once_destroy (&w->once);
        codec_builder_destroy (&w->out);
        health_destroy (&w->health);
        metrics_destroy (&w->metrics);
        mem_free (w);
        *w_p = NULL;
    }
}


/* One message from a broker: a request goes to its operation, anything else is the link's. 1 when
 * a message was read, 0 when none was waiting. */
static int
worker_serve_link (worker_t *w, int li)
{
    job_t job;
    frames_t frames;
    int taken;
    if (links_receive (w, li, &taken, &frames, &job) == FR_OK) {
        const void *body = frames_data (&frames, LINKS_BODY_FRAME);
        size_t len = frames_size (&frames, LINKS_BODY_FRAME);
        if (!requests_hit (w, &job, body, len)) {
            /* the whole way: decoded (pointing into the frame, no copy), then run */
            codec_msg_t *msg = NULL;
            char err [256];
            fr_status_t st = codec_decode (body, len, &msg, err, sizeof err);
            if (st == FR_OK)
                requests_handle (w, &job, codec_msg_root (msg), body, len);
            else
                reply_error (w, &job, st, err, NULL, -1);   /* a request whose body does not decode */
            codec_msg_destroy (&msg);
        }
    }
    frames_close (&frames);
    return taken;
}

static void
on_notify (void *arg, const char *worker, const char *integration)
{
    worker_t *w = arg;
    if (!integration) {
        /* connection lost: changes may go unnoticed until it is back, and the cache is cleared on
         * reconnect. Meanwhile cached tokens keep being served: nothing can commit a change
         * while the database is down, and callers keep working through an outage. */
        return;
    }
    if (strcmp (integration, STORE_NOTIFY_EVENTS) == 0) {
        events_wake (w->events);             /* its own session does not listen (store_sql.h) */
        return;
    }
    if (strcmp (integration, STORE_NOTIFY_ALL) == 0) {
        cache_clear (w->cache);              /* notifications were lost in a flood */
        loads_invalidate (w, NULL);
        return;
    }
    if (worker && strcmp (worker, w->cfg.worker_id) == 0)
        return;                              /* our own change is in the cache already */
    cache_drop (w->cache, integration);
    loads_invalidate (w, integration);       /* a read in flight may predate the change */
}

#define REVALIDATE_BATCH 1000

/* A re-validation in flight: the ids asked for, and the time before which an entry not found
 * had last been checked (so it is gone from the database, not loaded meanwhile). */
typedef struct {
    worker_t *w;
    char **ids;
    size_t n;
    int64_t before;
} revalidation_t;

static void
on_generation (void *arg, fr_status_t st, const char *id, int64_t generation, const char *status,
               const char *fingerprint, const char *err)
{
    (void) fingerprint;
    revalidation_t *rv = arg;
    worker_t *w = rv->w;
    if (id) {
        cache_entry_t *e = cache_get (w->cache, id);
        if (!e || e->refresh)
            return;
        if (e->generation != generation || strcmp (cache_status_text (e->status), status) != 0) {
            log_warning (id, NULL, "cached generation %lld is stale (the database has %lld, %s): dropped; a change "
                         "notification was lost", (long long) e->generation, (long long) generation, status);
            metrics_inc (w->m.revalidated_stale);
            cache_drop (w->cache, id);
        }
        else
            e->checked_ms = clock_mono_ms ();
        return;
    }
    if (st != FR_OK)
        log_warning (NULL, NULL, "could not re-validate cached integrations: %s", err);
    for (size_t i = 0; i < rv->n; i++) {
        cache_entry_t *e = st == FR_OK ? cache_get (w->cache, rv->ids [i]) : NULL;
        if (e && !e->refresh && e->checked_ms <= rv->before)
            cache_drop (w->cache, rv->ids [i]);      /* not in the database any more */
        mem_free (rv->ids [i]);
    }
    mem_free (rv->ids);
    mem_free (rv);
    w->revalidating = 0;
}

/* Of the n ids collected for a check, drops from the cache (and from ids) those of partitions
 * another worker owns now: after a worker joins or leaves, the brokers send their integrations
 * elsewhere, and their entries would stay here for good, checked every cache_revalidate_ms, using
 * up the batch's room for entries that are read. While no membership is known nothing is dropped.
 * Returns how many ids are left. */
static size_t
worker_drop_unowned (worker_t *w, char **ids, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (sweep_owned_count (w->sweep) > 0 && !sweep_owns (w->sweep, ids [i])) {
            cache_drop (w->cache, ids [i]);         /* none has a refresh in flight (collected so) */
            mem_free (ids [i]);
        }
        else
            ids [kept++] = ids [i];
    }
    if (kept < n)
        log_info (NULL, NULL, "dropped %zu cached integrations of partitions other workers own now", n - kept);
    return kept;
}

/* The second line behind notifications: entries not checked against the database for
 * cache_revalidate_ms are compared with the stored generation and status, a batch per second,
 * sent on a free connection and not waited for. Entries the database no longer has are dropped. */
static void
worker_revalidate (worker_t *w, int64_t now)
{
    /* optional work: only on a connection with no batch in flight, one at a time */
    if (now < w->next_revalidate_ms || w->revalidating)
        return;
    store_t *store = dbwait_free_store (w);
    if (!store || !store_connected (store))
        return;
    w->next_revalidate_ms = now + 1000;
    char *ids [REVALIDATE_BATCH];
    size_t n = cache_collect_unchecked (w->cache, now - w->cfg.cache_revalidate_ms, ids, REVALIDATE_BATCH);
    n = worker_drop_unowned (w, ids, n);
    if (n == 0)
        return;
    revalidation_t *rv = mem_alloc (sizeof *rv);
    *rv = (revalidation_t) { w, mem_alloc (n * sizeof *rv->ids), n, now - 1 };
    memcpy (rv->ids, ids, n * sizeof *ids);
    char err [512];
    if (store_generations_start (store, (const char *const *) rv->ids, rv->n, on_generation, rv, err,
                                 sizeof err) != FR_OK) {
        log_warning (NULL, NULL, "could not re-validate cached integrations: %s", err);
        for (size_t i = 0; i < rv->n; i++)
            mem_free (rv->ids [i]);
        mem_free (rv->ids);
        mem_free (rv);
        return;
    }
    w->revalidating = 1;
}

/* What the loop polls a database connection's socket for, in ZeroMQ's terms. */
static short
worker_poll_events (const store_t *s)
{
    int ev = store_poll_events (s);
    return (short) ((ev & STORE_POLL_IN ? ZMQ_POLLIN : 0) | (ev & STORE_POLL_OUT ? ZMQ_POLLOUT : 0));
}

/* Periodic work: heartbeats, database reconnects, refresh retries. */
static void
worker_tick (worker_t *w, int64_t now)
{
    links_follow_dns (w, now);
    links_check_silent (w, now);
    if (now >= w->next_hello_ms) {
        links_hello (w, w->draining);
        w->next_hello_ms = now + w->cfg.heartbeat_ms;
    }
    /* the connection is made in the background, a step a turn: the loop never waits for it. After
     * an outage the listening connection comes back first and the batches' one right after it (not
     * on its own second's timer): nothing this worker commits then precedes its hearing of other
     * processes' changes again, so a change made after one of its commits is never served stale
     * from the cache for up to a second (it_outage) */
    if (store_reconnect (w->store)) {
        failover_reconnected (w->failover);  /* the server may be a standby that lacks our last commits */
        cache_clear (w->cache);              /* changes made while we were away were not notified */
        loads_invalidate (w, NULL);          /* nor to the reads in flight on the other connection */
        events_wake (w->events);             /* nor were the events recorded meanwhile */
        if (w->batches)
            store_retry_now (w->batches);
    }
    if (w->batches) {
        /* an attempt under way is carried on. Its return may be to a promoted server, and the
         * main connection's loss may not be noticed yet (it idles, listening): the check starts
         * on it too, before any commit goes; not at its first connection, which follows the main
         * one's, whose check covers it */
        if ((store_connected (w->store) || store_connecting (w->batches)) && store_reconnect (w->batches)) {
            if (w->batches_were_up)
                failover_reconnected (w->failover);
            w->batches_were_up = 1;
        }
        store_batch_pump (w->batches);
    }
    store_batch_pump (w->store);            /* a statement run this turn may have read a batch's end */
    store_dispatch_notifies (w->store, on_notify, w);
    refresh_tick (w, now);                  /* the refresh protocol's batch first, then optional work */
    loads_tick (w, dbwait_free_store (w)); /* cache misses, before optional work */
    recovery_tick (w, now);                 /* an earlier run's journal and leases, until settled */
    failover_tick (w, now);                 /* the last commits, checked after a new connection */
    dbwait_tick (w);                        /* requests' batches waiting for a connection */
    disconnect_tick (w, now);               /* revocations tried again after a transient failure */
    sweep_tick (w->sweep, dbwait_free_store (w), w->catalog, w->breaker, w->draining, now, refresh_sweep_start,
                refresh_sweep_held, w);
    worker_revalidate (w, now);
    keystats_tick (w, now);
    /* metrics and readiness are published ten times a second, not once per loop turn */
    if (now < w->next_publish_ms)
        return;
    w->next_publish_ms = now + 100;
    metrics_set (w->m.partitions_owned, sweep_owned_count (w->sweep));
    metrics_set (w->m.refreshes_in_flight, (int64_t) refresh_count (w));
    metrics_set (w->m.calls_queued, (int64_t) http_queued (w->http));
    metrics_set (w->m.journal_backlog, (int64_t) journal_outstanding (w->journal));
    metrics_set (w->m.failover_kept, (int64_t) failover_kept (w->failover));
    metrics_set (w->m.failover_kept_bytes, (int64_t) failover_kept_bytes (w->failover));
    metrics_set (w->m.failover_waiting, (int64_t) failover_waiting (w->failover));
    uint64_t failures = journal_sync_failures (w->journal);
    metrics_add (w->m.journal_sync_failures, failures - w->m.journal_sync_failures_seen);
    w->m.journal_sync_failures_seen = failures;
    metrics_set (w->m.parked, (int64_t) (loads_parked (w) + dbwait_count (w)));
    metrics_set (w->m.cached_integrations, (int64_t) cache_count (w->cache));
    metrics_set (w->m.db_connected, store_connected (w->store));
    if (w->health) {
        /* ready: the database answers with the right schema, and the worker is not leaving */
        int ready = store_connected (w->store) && !w->draining;
        health_set_ready (w->health, ready, w->draining ? "draining" : ready ? "" : "database unreachable");
    }
}

int
worker_run (worker_t *w, volatile sig_atomic_t *stop)
{
    int64_t drain_until = 0, drain_settle = 0, drain_said = 0;
    int drain_extended = 0;
    log_info (NULL, NULL, "worker \"%s\" serving %zu brokers%s", w->cfg.worker_id, w->nlinks,
              w->ndns ? " (and following their DNS names)" : "");
    links_hello (w, 0);
    w->next_hello_ms = clock_mono_ms () + w->cfg.heartbeat_ms;
    while (*stop < 2) {
        int64_t now = clock_mono_ms ();
        if (*stop == 1 && !w->draining) {
            /* leave the partition map at once; finish what is in flight */
            w->draining = 1;
            drain_until = w->drain_until_ms = now + w->cfg.drain_ms;
            /* a call already at the provider (a refresh, a code exchange) ends within the provider
             * timeout, and its commit within the statement timeout and the 250 ms waited past it:
             * a drain shorter than that still waits for them. A call started during the drain ends
             * with its commit by drain_until (refresh.c and connect.c start none that cannot), but
             * a commit queued behind another batch may end up to a statement timeout later: waited
             * for too, the drain's end past. (connect.c moves drain_last_ms on for an exchange it
             * must make all the same: its callback's state was spent as the drain began.) */
            w->drain_last_ms = now + w->cfg.http_timeout_ms + w->cfg.db.statement_timeout_ms + 500;
            if (w->drain_last_ms < drain_until + w->cfg.db.statement_timeout_ms + 500)
                w->drain_last_ms = drain_until + w->cfg.db.statement_timeout_ms + 500;
            drain_settle = now + (w->cfg.heartbeat_ms < 500 ? w->cfg.heartbeat_ms : 500);
            links_hello (w, 1);
            log_info (NULL, NULL, "draining: %zu refreshes in flight", refresh_count (w));
        }
        /* stay a moment after announcing the drain: requests the brokers routed before they
         * heard it are still arriving, and are served rather than re-dispatched */
        size_t nbatches = (size_t) store_batch_busy (w->store) + (size_t) (w->batches && store_batch_busy (w->batches));
        size_t busy = refresh_count (w) + calls_count (w) + loads_parked (w) + dbwait_count (w) + nbatches;
        if (w->draining && busy && now >= drain_said + 1000 && now >= drain_settle) {
            /* a drain that takes long says what it waits for, once a second */
            drain_said = now;
            log_info (NULL, NULL, "draining: waiting for %zu refreshes, %zu provider calls, %zu requests parked, "
                      "%zu queued for the database and %zu batches in flight (%lld ms left)", refresh_count (w),
                      calls_count (w), loads_parked (w), dbwait_count (w), nbatches,
                      (long long) ((drain_extended ? w->drain_last_ms : drain_until) - now));
        }
        if (w->draining && now >= drain_settle && (busy == 0 || now >= drain_until)) {
            /* a refresh whose call is out, or whose answer is not stored yet, may hold the only
             * copy of a token the provider rotated; a code exchange's, the only copy of a grant
             * whose code the provider has spent: waited for past the drain, up to drain_last_ms */
            size_t out = busy ? refresh_at_provider (w) : 0, exchanging = busy ? calls_exchanging (w) : 0;
            /* once waited for, such a call's last batch (its commit's, read to its end) is too: it
             * ends within the statement timeout and 250 ms */
            size_t tail = drain_extended ? nbatches : 0;
            if ((!out && !exchanging && !tail) || now >= w->drain_last_ms) {
                if (busy)
                    log_warning (NULL, NULL, "drain timed out with %zu refreshes, %zu provider calls, %zu requests "
                                 "parked, %zu queued for the database and %zu batches in flight", refresh_count (w),
                                 calls_count (w), loads_parked (w), dbwait_count (w), nbatches);
                break;
            }
            if (!drain_extended)
                log_info (NULL, NULL, "draining: FERRULE_DRAIN_MS is over, but %zu refreshes and %zu code exchanges "
                          "have a provider call out or an answer not stored yet: waiting for them (at most %lld ms "
                          "more), so that a refresh token the provider rotated, or a connection whose code it spent, "
                          "is not lost", out, exchanging, (long long) (w->drain_last_ms - now));
            drain_extended = 1;
        }
        zmq_pollitem_t items [POLL_MAX];
        int link_of [LINKS_MAX];
        size_t n = links_pollitems (w, items, link_of, LINKS_MAX);
        size_t nlink_items = n;
        int db_fd = store_socket (w->store);
        size_t db_item = n;
        if (db_fd >= 0) {
            items [n].socket = NULL;
            items [n].fd = db_fd;
            items [n].events = worker_poll_events (w->store);
            items [n].revents = 0;
            n++;
        }
        int batches_fd = w->batches ? store_socket (w->batches) : -1;
        size_t batches_item = n;
        if (batches_fd >= 0) {
            items [n] = (zmq_pollitem_t) { .socket = NULL, .fd = batches_fd,
                                           .events = worker_poll_events (w->batches) };
            n++;
        }
        int journal_fd = w->journal ? journal_sync_fd (w->journal) : -1;
        size_t journal_item = n;
        if (journal_fd >= 0) {
            items [n] = (zmq_pollitem_t) { .socket = NULL, .fd = journal_fd, .events = ZMQ_POLLIN };
            n++;
        }
        size_t http_first = n;
        n += http_pollitems (w->http, items + n, POLL_MAX - n);   /* room for HTTP_MAX_SOCKETS */

        int64_t timeout = w->next_hello_ms - now;
        long ht = http_timeout_ms (w->http);
        if (ht >= 0 && ht < timeout)
            timeout = ht;
        int64_t due = refresh_next_due (w);
        if (sweep_next_due (w->sweep) < now + timeout)
            timeout = sweep_next_due (w->sweep) - now;
        if (due >= 0 && due - now < timeout)
            timeout = due - now;
        due = disconnect_next_due (w);
        if (due >= 0 && due - now < timeout)
            timeout = due - now;
        due = dbwait_next_due (w);
        if (due >= 0 && due - now < timeout)
            timeout = due - now;
        int64_t batch_deadline = store_batch_deadline (w->store);
        if (batch_deadline >= 0 && batch_deadline - now < timeout)
            timeout = batch_deadline - now;
        batch_deadline = w->batches ? store_batch_deadline (w->batches) : -1;
        if (batch_deadline >= 0 && batch_deadline - now < timeout)
            timeout = batch_deadline - now;
        if (timeout > 100)
            timeout = 100;
        if (timeout < 0)
            timeout = 0;
        if (zmq_poll (items, (int) n, (long) timeout) < 0) {
            if (errno == EINTR)
                continue;
            log_error (NULL, NULL, "poll failed: %s", zmq_strerror (errno));
            return -1;
        }
        w->woke_us = clock_mono_us ();
        if (w->health)
            health_beat (w->health);
        /* first the providers' answers: rotated tokens reach the journal's disk before anything
         * else this turn does */
        http_process (w->http, items + http_first, n - http_first);
        if (journal_fd >= 0 && items [journal_item].revents)
            (void) journal_synced (w->journal, NULL);      /* clears the wakeup; read again below */
        refresh_after_answers (w);
        /* then the database's answers: a batch of claims or commits that ended goes on, and a
         * group commit that had to wait for it starts */
        if (db_fd >= 0 && items [db_item].revents)
            store_read_input (w->store);
        store_batch_pump (w->store);
        if (batches_fd >= 0 && items [batches_item].revents)
            store_read_input (w->batches);
        if (w->batches)
            store_batch_pump (w->batches);
        refresh_after_answers (w);
        store_dispatch_notifies (w->store, on_notify, w);
        for (size_t i = 0; i < nlink_items; i++)
            /* read until the link has nothing (that last receive costs ZeroMQ one look at its
             * command pipe, as asking ZMQ_EVENTS after every message would have) */
            for (int k = 0; k < 256 && (items [i].revents & ZMQ_POLLIN); k++) {
                if (!worker_serve_link (w, link_of [i]))
                    break;
                /* a statement this request ran may have brought notifications with its result */
                store_dispatch_notifies (w->store, on_notify, w);
            }
        worker_tick (w, clock_mono_ms ());
    }
    links_bye (w);
    log_info (NULL, NULL, "worker \"%s\" stopped", w->cfg.worker_id);
    return 0;
}
