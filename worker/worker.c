/* worker.c - the worker's one poll loop: broker links, provider sockets, the database's
 * notification socket, and one housekeeping tick */
#include "worker.h"
#include "keystats.h"
#include "ratelimit.h"
#include "clock.h"
#include "frames.h"
#include "log.h"
#include "mem.h"
#include "connect.h"
#include "refresh.h"
#include "ops.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_LINKS 64
#define POLL_MAX  (MAX_LINKS + 1 + 256)

struct link {
    void *socket;                   /* NULL once closed: the slot keeps its index for jobs in flight */
    char endpoint [256];
    int64_t last_ping_ms;
    int from_dns;                   /* index+1 of the dns+tcp:// name it was resolved from, 0 static */
    int seen;                       /* scratch for a resolution round */
};

#define MAX_DNS_NAMES 8
#define DNS_REFRESH_MS 30000

/* Opens a DEALER to one broker, in a free slot; returns the link index or -1. */
static int
worker_link_open (worker_t *w, const char *endpoint, int from_dns, char *err, size_t errlen)
{
    size_t i;
    for (i = 0; i < w->nlinks; i++)
        if (!w->links [i].socket)
            break;
    if (i == w->nlinks) {
        if (w->nlinks == MAX_LINKS) {
            snprintf (err, errlen, "more than %d broker endpoints", MAX_LINKS);
            return -1;
        }
        w->nlinks++;
    }
    link_t *l = &w->links [i];
    memset (l, 0, sizeof *l);
    l->socket = zmq_socket (w->ctx, ZMQ_DEALER);
    frames_socket_defaults (l->socket, (int) w->cfg.hwm, CODEC_MAX_BODY + 1024);
    zmq_setsockopt (l->socket, ZMQ_ROUTING_ID, w->cfg.worker_id, strlen (w->cfg.worker_id));
    if (curve_apply_client (l->socket, w->cfg.curve) != 0) {          /* pins the broker's key */
        snprintf (err, errlen, "could not set up CURVE for broker \"%s\": %s", endpoint, zmq_strerror (errno));
        zmq_close (l->socket);
        l->socket = NULL;
        return -1;
    }
    snprintf (l->endpoint, sizeof l->endpoint, "%s", endpoint);
    l->from_dns = from_dns;
    if (zmq_connect (l->socket, endpoint) != 0) {
        snprintf (err, errlen, "could not connect to broker \"%s\": %s", endpoint, zmq_strerror (errno));
        zmq_close (l->socket);
        l->socket = NULL;
        return -1;
    }
    log_info (NULL, NULL, "connected to broker \"%s\"", endpoint);
    return (int) i;
}


/* dns+tcp://NAME:PORT: connect to every address NAME resolves to, and follow changes (a
 * headless Kubernetes Service lists every broker pod). */
static void
worker_resolve (worker_t *w)
{
    for (size_t d = 0; d < w->ndns; d++) {
        char host [256], port [16];
        const char *spec = w->dns [d] + strlen ("dns+tcp://");
        const char *colon = strrchr (spec, ':');
        if (!colon || colon == spec || (size_t) (colon - spec) >= sizeof host || strlen (colon + 1) >= sizeof port)
            continue;
        memcpy (host, spec, (size_t) (colon - spec));
        host [colon - spec] = '\0';
        snprintf (port, sizeof port, "%s", colon + 1);
        struct addrinfo hints, *res = NULL;
        memset (&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo (host, port, &hints, &res);
        if (rc != 0) {
            log_warning (NULL, NULL, "could not resolve brokers \"%s\": %s; keeping %s", w->dns [d], gai_strerror (rc),
                         "the brokers already known");
            continue;
        }
        for (size_t i = 0; i < w->nlinks; i++)
            w->links [i].seen = 0;
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            char ip [INET6_ADDRSTRLEN], endpoint [300];
            if (a->ai_family == AF_INET)
                inet_ntop (AF_INET, &((struct sockaddr_in *) a->ai_addr)->sin_addr, ip, sizeof ip);
            else
            if (a->ai_family == AF_INET6)
                inet_ntop (AF_INET6, &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr, ip, sizeof ip);
            else
                continue;
            snprintf (endpoint, sizeof endpoint, a->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", ip, port);
            int found = 0;
            for (size_t i = 0; i < w->nlinks; i++)
                if (w->links [i].socket && strcmp (w->links [i].endpoint, endpoint) == 0) {
                    w->links [i].seen = 1;
                    found = 1;
                }
            if (!found) {
                char err [256];
                int li = worker_link_open (w, endpoint, (int) d + 1, err, sizeof err);
                if (li < 0)
                    log_warning (NULL, NULL, "%s", err);
                else {
                    w->links [li].seen = 1;
                    w->next_hello_ms = 0;       /* introduce ourselves to the new broker now */
                }
            }
        }
        freeaddrinfo (res);
        for (size_t i = 0; i < w->nlinks; i++) {
            link_t *l = &w->links [i];
            if (l->socket && l->from_dns == (int) d + 1 && !l->seen) {
                log_info (NULL, NULL, "broker \"%s\" no longer listed under \"%s\"; disconnecting", l->endpoint, w->dns [d]);
                zmq_close (l->socket);
                l->socket = NULL;
            }
        }
    }
}

/* Replays one journal record: a rotated refresh token an earlier run of this worker received and
 * may not have committed. Settled when it is in the database (committed now or before the crash)
 * or superseded; anything else leaves it outstanding for the next attempt. */
static void
on_replay (void *arg, int64_t seq, const store_commit_t *c)
{
    worker_t *w = arg;
    char err [512];
    store_row_t row;
    /* already committed before the crash? then only the marker was lost */
    if (store_load (w->store, c->id, &row, err, sizeof err) == FR_OK) {
        int settled = row.generation > c->expected_generation && row.refresh_fingerprint
                   && c->refresh_fingerprint && strcmp (row.refresh_fingerprint, c->refresh_fingerprint) == 0;
        store_row_clear (&row);
        if (settled) {
            journal_done (w->journal, seq);
            return;
        }
    }
    int conflict = 0;
    fr_status_t st = store_commit_refresh (w->store, c, &conflict, err, sizeof err);
    if (st == FR_OK) {
        log_info (c->id, NULL, "journal replay: %s generation %lld", conflict ? "superseded" : "committed",
                  (long long) c->expected_generation + 1);
        journal_done (w->journal, seq);
    }
    else {
        w->replay_failed = 1;
        log_warning (c->id, NULL, "journal replay failed, will retry: %s", err);
    }
}

/* Once per process, at the first database connection: what an earlier run of this worker left
 * behind. The journal is replayed first, while that run's leases still keep other workers away
 * from those integrations; only then are its leases released (and recorded as interrupted
 * refreshes). Until both are done no refresh starts here; a failed step is retried every second. */
static void
worker_startup_db (worker_t *w)
{
    char err [512];
    char **ids = NULL, **providers = NULL;
    size_t n = 0;
    if (w->started_db)
        return;
    w->replay_failed = 0;
    int replayed = journal_replay (w->journal, on_replay, w);
    if (replayed < 0 || w->replay_failed) {
        log_warning (NULL, NULL, "the journal is not fully replayed yet; refreshes wait for it");
        return;
    }
    if (replayed > 0)
        log_info (NULL, NULL, "replayed %d journal records", replayed);
    if (store_release_own_leases (w->store, &ids, &providers, &n, err, sizeof err) != FR_OK) {
        log_warning (NULL, NULL, "could not release the leases of an earlier run: %s; will retry", err);
        return;
    }
    w->started_db = 1;
    if (n > 0)
        log_warning (NULL, NULL, "released %zu refresh leases of an earlier run of this worker: those refreshes "
                     "were interrupted", n);
    for (size_t i = 0; i < n; i++) {
        /* a provider with a reuse grace still accepts the refresh token the interrupted call spent,
         * for a short while: refresh now to recover the chain inside it */
        const catalog_provider_t *p = catalog_find (w->catalog, providers [i]);
        if (p && p->reuse_grace_seconds > 0) {
            fr_status_t st;
            cache_entry_t *e = refresh_load (w, ids [i], &st, err, sizeof err);
            if (e) {
                log_info (ids [i], NULL, "refreshing at once to recover the chain within %s's reuse grace", p->name);
                refresh_background (w, e, 0, 1);
            }
        }
        mem_free (ids [i]);
        mem_free (providers [i]);
    }
    mem_free (ids);
    mem_free (providers);
}

worker_t *
worker_new (const worker_config_t *cfg, char *err, size_t errlen)
{
    worker_t *w = mem_alloc (sizeof *w);
    w->cfg = *cfg;
    w->keyring = crypto_keyring_new (cfg->encryption_key, cfg->old_keys, err, errlen);
    if (!w->keyring || crypto_keyring_set_fingerprint_key (w->keyring, cfg->fingerprint_key, err, errlen) != FR_OK)
        goto fail;
    w->catalog = catalog_new (cfg->providers_file, err, errlen);
    if (!w->catalog)
        goto fail;
    catalog_forget_environment (w->catalog);
    w->journal = journal_open (cfg->journal_path, err, errlen);
    if (!w->journal)
        goto fail;
    w->store = store_new (cfg->database_url, cfg->worker_id, &cfg->db);
    w->cache = cache_new ();
    w->breaker = breaker_new (cfg->breaker_min_failures, cfg->breaker_window_ms, cfg->breaker_open_ms);
    w->sweep = sweep_new (&cfg->sweep);
    w->http = http_new (cfg->http_connect_ms, cfg->http_timeout_ms, (size_t) cfg->max_provider_body);
    w->out = codec_builder_new ();
    w->metrics = metrics_new ("ferrule_");
    static const double refresh_bounds [] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
    w->m.cache_hits = metrics_counter (w->metrics, "worker_cache_hits_total", "token requests answered from the cache", NULL);
    w->m.cache_misses = metrics_counter (w->metrics, "worker_cache_misses_total", "token requests that needed the database or a refresh", NULL);
    w->m.lease_waits = metrics_counter (w->metrics, "worker_lease_waits_total", "refresh claims that found another holder's live lease", NULL);
    w->m.refresh_seconds = metrics_histogram (w->metrics, "worker_refresh_duration_seconds",
                                              "provider call plus commit, per refresh that called the provider", NULL,
                                              refresh_bounds, sizeof refresh_bounds / sizeof refresh_bounds [0]);
    static const double window_bounds [] = { 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
                                             0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1 };
    w->m.journal_window = metrics_histogram (w->metrics, "worker_journal_window_seconds",
                                             "from the loop waking to a provider's answer with a rotated refresh token "
                                             "to that token being on disk in the journal", NULL,
                                             window_bounds, sizeof window_bounds / sizeof window_bounds [0]);
    w->m.revalidated_stale = metrics_counter (w->metrics, "worker_cache_revalidated_stale_total",
                                              "cached integrations found changed by the periodic re-validation "
                                              "(a change whose notification never arrived)", NULL);
    w->m.partitions_owned = metrics_gauge (w->metrics, "worker_partitions_owned", "partitions this worker owns by the last membership seen", NULL);
    w->m.refreshes_in_flight = metrics_gauge (w->metrics, "worker_refreshes_in_flight", "refreshes claimed, calling or committing", NULL);
    w->m.journal_backlog = metrics_gauge (w->metrics, "worker_journal_backlog", "rotated tokens in the local journal not yet committed", NULL);
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

    /* one DEALER per broker: a DEALER connected to several endpoints would round-robin its sends */
    char list [4096];
    snprintf (list, sizeof list, "%s", cfg->backends);
    w->links = mem_alloc (MAX_LINKS * sizeof *w->links);
    for (char *save = NULL, *ep = strtok_r (list, ",", &save); ep; ep = strtok_r (NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        if (strncmp (ep, "dns+tcp://", 10) == 0) {
            if (w->ndns == MAX_DNS_NAMES) {
                snprintf (err, errlen, "more than %d dns+tcp:// names in FERRULE_BROKER_BACKENDS", MAX_DNS_NAMES);
                goto fail;
            }
            w->dns [w->ndns++] = mem_strdup (ep);
        }
        else
        if (worker_link_open (w, ep, 0, err, errlen) < 0)
            goto fail;
    }
    if (w->ndns) {
        worker_resolve (w);
        w->next_resolve_ms = clock_mono_ms () + DNS_REFRESH_MS;
    }
    if (w->nlinks == 0 && w->ndns == 0) {
        snprintf (err, errlen, "no broker endpoints: set FERRULE_BROKER_BACKENDS");
        goto fail;
    }
    fr_status_t st = store_connect (w->store, err, errlen);
    if (st == FR_CONFIGURATION)
        goto fail;              /* schema too old: refusing to start is the only safe answer */
    if (st != FR_OK)
        log_warning (NULL, NULL, "%s; will keep trying", err);
    else
        worker_startup_db (w);
    w->next_replay_ms = clock_mono_ms () + 1000;
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
        if (w->cache)
            refresh_abandon_all (w);
        connect_abandon_all (w);
        for (size_t i = 0; i < w->nlinks; i++)
            if (w->links [i].socket) {
                /* let the goodbye and the last replies leave before the socket goes */
                int linger = 500;
                zmq_setsockopt (w->links [i].socket, ZMQ_LINGER, &linger, sizeof linger);
                zmq_close (w->links [i].socket);
            }
        mem_free (w->links);
        for (size_t i = 0; i < w->ndns; i++)
            mem_free (w->dns [i]);
        if (w->ctx)
            zmq_ctx_term (w->ctx);
        http_destroy (&w->http);
        cache_destroy (&w->cache);
        breaker_destroy (&w->breaker);
        sweep_destroy (&w->sweep);
        store_destroy (&w->store);
        journal_close (&w->journal);
        catalog_destroy (&w->catalog);
        crypto_keyring_destroy (&w->keyring);
        ratelimit_destroy (&w->admin_rate);
        codec_builder_destroy (&w->out);
        health_destroy (&w->health);
        metrics_destroy (&w->metrics);
        mem_free (w);
        *w_p = NULL;
    }
}

/* The reply, and its outcome code ("ok" or the error's) for the broker's audit log. */
static void
worker_send (worker_t *w, const job_t *job, const char *body, size_t len, const char *outcome)
{
    if (job->link < 0 || (size_t) job->link >= w->nlinks || !w->links [job->link].socket)
        return;                 /* a background job, or the broker it came through is gone */
    const void *parts [] = { CODEC_WORKER_PROTOCOL, "REP", job->client, job->seq, body, outcome };
    size_t sizes [] = { 4, 3, job->client_len, 8, len, strlen (outcome) };
    if (frames_send (w->links [job->link].socket, parts, sizes, 6, ZMQ_DONTWAIT) != 0)
        log_warning (NULL, job->rid, "could not send a reply to broker \"%s\": %s",
                     w->links [job->link].endpoint, zmq_strerror (errno));
}

void
worker_count_request (worker_t *w, const job_t *job, const char *outcome)
{
    if (job->link < 0 || !job->op [0])
        return;
    /* the hot path, a token served: its series is looked up once */
    if (strcmp (outcome, "ok") == 0 && strcmp (job->op, "token") == 0) {
        if (!w->m.token_ok)
            w->m.token_ok = metrics_counter (w->metrics, "worker_requests_total", "requests answered, by operation and outcome",
                                             "op=\"token\",outcome=\"ok\"");
        metrics_inc (w->m.token_ok);
        return;
    }
    char labels [128];
    /* every name this version does not know is one label, "unknown", whatever a client sent */
    snprintf (labels, sizeof labels, "op=\"%s\",outcome=\"%s\"", ops_name (ops_lookup (job->op, strlen (job->op))), outcome);
    metrics_inc (metrics_counter (w->metrics, "worker_requests_total", "requests answered, by operation and outcome", labels));
}

void
worker_count_provider_error (worker_t *w, const char *provider, const char *class_name)
{
    char p [140], labels [200];
    metrics_label_escape (p, sizeof p, provider);
    snprintf (labels, sizeof labels, "provider=\"%s\",class=\"%s\"", p, class_name);
    metrics_inc (metrics_counter (w->metrics, "worker_provider_errors_total", "failed provider calls, by provider and class", labels));
}

codec_builder_t *
worker_reply_begin (worker_t *w, const job_t *job, int ok, uint32_t fields)
{
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_map (o, fields + 1 + (job->rid [0] ? 1 : 0));
    if (job->rid [0])
        codec_kv_str (o, "rid", job->rid);
    codec_kv_bool (o, "ok", ok);
    return o;
}

void
worker_reply (worker_t *w, const job_t *job)
{
    size_t len;
    if (codec_builder_failed (w->out)) {
        worker_reply_error (w, job, FR_TOO_LARGE, "the reply does not fit in a frame; ask for less (for example a lower limit)",
                            NULL, -1);
        return;
    }
    const char *data = codec_builder_data (w->out, &len);
    worker_count_request (w, job, "ok");
    worker_send (w, job, data, len, "ok");
}

void
worker_reply_error (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                    int64_t retry_after)
{
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_error_reply (o, job->rid [0] ? job->rid : NULL, strlen (job->rid), st, message, hint, retry_after);
    worker_count_request (w, job, result_code (st));
    size_t len;
    const char *data = codec_builder_data (o, &len);
    worker_send (w, job, data, len, result_code (st));
}

void
worker_reply_token (worker_t *w, const job_t *job, const cache_entry_t *e, int refreshed)
{
    codec_builder_t *o = worker_reply_begin (w, job, 1, 4);
    codec_kv_str (o, "access_token", e->access_token);
    codec_kv_str (o, "expires_at", e->expires_text);
    codec_kv_int (o, "generation", e->generation);
    codec_kv_bool (o, "refreshed", refreshed);
    worker_reply (w, job);
}

static void
worker_hello (worker_t *w, int draining)
{
    char body [256];
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_map (o, 3);
    codec_kv_str (o, "worker", w->cfg.worker_id);
    codec_kv_int (o, "pid", (int64_t) getpid ());
    codec_kv_bool (o, "draining", draining);
    size_t len;
    const char *data = codec_builder_data (o, &len);
    memcpy (body, data, len < sizeof body ? len : sizeof body);
    for (size_t i = 0; i < w->nlinks; i++) {
        if (!w->links [i].socket)
            continue;
        const void *parts [] = { CODEC_WORKER_PROTOCOL, "HELLO", body };
        size_t sizes [] = { 4, 5, len };
        frames_send (w->links [i].socket, parts, sizes, 3, ZMQ_DONTWAIT);   /* best effort: next beat retries */
    }
}

static void
worker_bye (worker_t *w)
{
    for (size_t i = 0; i < w->nlinks; i++) {
        if (!w->links [i].socket)
            continue;
        const void *parts [] = { CODEC_WORKER_PROTOCOL, "BYE" };
        size_t sizes [] = { 4, 3 };
        frames_send (w->links [i].socket, parts, sizes, 2, ZMQ_DONTWAIT);
    }
}

static void
worker_handle_link (worker_t *w, int li)
{
    link_t *l = &w->links [li];
    frames_t f;
    codec_msg_t *msg = NULL;
    char err [256];
    if (frames_recv (l->socket, &f, ZMQ_DONTWAIT) != 0)
        return;
    if (!frames_is (&f, 0, CODEC_WORKER_PROTOCOL) || f.count < 2) {
        log_warning (NULL, NULL, "ignoring a malformed message from broker \"%s\"", l->endpoint);
        goto out;
    }
    if (frames_is (&f, 1, "PING")) {
        l->last_ping_ms = clock_mono_ms ();
        int64_t partitions = 0;
        if (f.total == 3 && codec_decode (frames_data (&f, 2), frames_size (&f, 2), &msg, err, sizeof err) == FR_OK
        &&  codec_get_int (codec_msg_root (msg), "partitions", &partitions) == 1)
            sweep_set_membership (w->sweep, w->cfg.worker_id, codec_get (codec_msg_root (msg), "workers"), partitions);
        goto out;
    }
    if (!frames_is (&f, 1, "REQ") || f.total != 6 || frames_size (&f, 2) > 255 || frames_size (&f, 3) != 8
    ||  frames_size (&f, 4) != 4) {
        log_warning (NULL, NULL, "ignoring a malformed message from broker \"%s\" (%d frames)", l->endpoint, f.total);
        goto out;
    }
    job_t job;
    memset (&job, 0, sizeof job);
    job.link = li;
    job.client_len = frames_size (&f, 2);
    memcpy (job.client, frames_data (&f, 2), job.client_len);
    memcpy (job.seq, frames_data (&f, 3), 8);
    const unsigned char *rem = frames_data (&f, 4);
    int64_t remaining = ((int64_t) rem [0] << 24) | ((int64_t) rem [1] << 16) | ((int64_t) rem [2] << 8) | rem [3];
    job.deadline_ms = clock_mono_ms () + remaining;
    fr_status_t st = codec_decode (frames_data (&f, 5), frames_size (&f, 5), &msg, err, sizeof err);
    if (st != FR_OK) {
        worker_reply_error (w, &job, st, err, NULL, -1);
        goto out;
    }
    requests_handle (w, &job, codec_msg_root (msg));
out:
    codec_msg_destroy (&msg);
    frames_close (&f);
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
    if (strcmp (integration, STORE_NOTIFY_ALL) == 0) {
        cache_clear (w->cache);              /* notifications were lost in a flood */
        return;
    }
    if (worker && strcmp (worker, w->cfg.worker_id) == 0)
        return;                              /* our own change is in the cache already */
    cache_drop (w->cache, integration);
}

#define REVALIDATE_BATCH 1000

static void
on_generation (void *arg, const char *id, int64_t generation, const char *status)
{
    worker_t *w = arg;
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
}

/* The second line behind notifications: entries not checked against the database for
 * cache_revalidate_ms are compared with the stored generation and status, a batch per second.
 * Entries the database no longer has are dropped. */
static void
worker_revalidate (worker_t *w, int64_t now)
{
    if (now < w->next_revalidate_ms || !store_connected (w->store))
        return;
    w->next_revalidate_ms = now + 1000;
    char *ids [REVALIDATE_BATCH];
    size_t n = cache_collect_unchecked (w->cache, now - w->cfg.cache_revalidate_ms, ids, REVALIDATE_BATCH);
    if (n == 0)
        return;
    char err [512];
    int64_t before = now - 1;
    if (store_generations (w->store, (const char *const *) ids, n, on_generation, w, err, sizeof err) != FR_OK)
        log_warning (NULL, NULL, "could not re-validate cached integrations: %s", err);
    else
        for (size_t i = 0; i < n; i++) {
            cache_entry_t *e = cache_get (w->cache, ids [i]);
            if (e && !e->refresh && e->checked_ms <= before)
                cache_drop (w->cache, ids [i]);      /* not in the database any more */
        }
    for (size_t i = 0; i < n; i++)
        mem_free (ids [i]);
}

/* Periodic work: heartbeats, database reconnects, refresh retries. */
static void
worker_tick (worker_t *w, int64_t now)
{
    if (w->ndns && now >= w->next_resolve_ms) {
        worker_resolve (w);
        w->next_resolve_ms = now + DNS_REFRESH_MS;
    }
    if (now >= w->next_hello_ms) {
        worker_hello (w, w->draining);
        w->next_hello_ms = now + w->cfg.heartbeat_ms;
    }
    if (!store_connected (w->store) && now >= w->next_db_retry_ms) {
        char err [512];
        w->next_db_retry_ms = now + 1000;
        if (store_connect (w->store, err, sizeof err) == FR_OK)
            cache_clear (w->cache);          /* changes made while we were away were not notified */
        else
            log_debug (NULL, NULL, "%s", err);
    }
    if (!w->started_db && store_connected (w->store) && now >= w->next_replay_ms) {
        w->next_replay_ms = now + 1000;
        worker_startup_db (w);
    }
    store_dispatch_notifies (w->store, on_notify, w);
    worker_revalidate (w, now);
    refresh_tick (w, now);
    sweep_tick (w, now);
    keystats_tick (w, now);
    /* metrics and readiness are published ten times a second, not once per loop turn */
    if (now < w->next_publish_ms)
        return;
    w->next_publish_ms = now + 100;
    metrics_set (w->m.partitions_owned, sweep_owned_count (w->sweep));
    metrics_set (w->m.refreshes_in_flight, (int64_t) refresh_count (w));
    metrics_set (w->m.journal_backlog, (int64_t) journal_outstanding (w->journal));
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
    int64_t drain_until = 0, drain_settle = 0;
    log_info (NULL, NULL, "worker \"%s\" serving %zu brokers%s", w->cfg.worker_id, w->nlinks,
              w->ndns ? " (and following their DNS names)" : "");
    worker_hello (w, 0);
    w->next_hello_ms = clock_mono_ms () + w->cfg.heartbeat_ms;
    while (*stop < 2) {
        int64_t now = clock_mono_ms ();
        if (*stop == 1 && !w->draining) {
            /* leave the partition map at once; finish what is in flight */
            w->draining = 1;
            drain_until = now + w->cfg.drain_ms;
            drain_settle = now + (w->cfg.heartbeat_ms < 500 ? w->cfg.heartbeat_ms : 500);
            worker_hello (w, 1);
            log_info (NULL, NULL, "draining: %zu refreshes in flight", refresh_count (w));
        }
        /* stay a moment after announcing the drain: requests the brokers routed before they
         * heard it are still arriving, and are served rather than re-dispatched */
        size_t busy = refresh_count (w) + connect_count (w);
        if (w->draining && now >= drain_settle && (busy == 0 || now >= drain_until)) {
            if (busy)
                log_warning (NULL, NULL, "drain timed out with %zu refreshes and connect calls in flight", busy);
            break;
        }
        zmq_pollitem_t items [POLL_MAX];
        int link_of [MAX_LINKS];
        size_t n = 0;
        for (size_t i = 0; i < w->nlinks; i++) {
            if (!w->links [i].socket)
                continue;
            link_of [n] = (int) i;
            items [n].socket = w->links [i].socket;
            items [n].fd = 0;
            items [n].events = ZMQ_POLLIN;
            items [n].revents = 0;
            n++;
        }
        size_t nlink_items = n;
        int db_fd = store_socket (w->store);
        size_t db_item = n;
        if (db_fd >= 0) {
            items [n].socket = NULL;
            items [n].fd = db_fd;
            items [n].events = ZMQ_POLLIN;
            items [n].revents = 0;
            n++;
        }
        size_t http_first = n;
        n += http_pollitems (w->http, items + n, POLL_MAX - n);

        int64_t timeout = w->next_hello_ms - now;
        long ht = http_timeout_ms (w->http);
        if (ht >= 0 && ht < timeout)
            timeout = ht;
        int64_t due = refresh_next_due (w);
        if (sweep_next_due (w->sweep) < now + timeout)
            timeout = sweep_next_due (w->sweep) - now;
        if (due >= 0 && due - now < timeout)
            timeout = due - now;
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
        refresh_after_answers (w);
        if (db_fd >= 0 && items [db_item].revents)
            store_read_input (w->store);
        store_dispatch_notifies (w->store, on_notify, w);
        for (size_t i = 0; i < nlink_items; i++)
            for (int k = 0; k < 256 && (items [i].revents & ZMQ_POLLIN); k++) {
                int ev = 0;
                size_t evlen = sizeof ev;
                worker_handle_link (w, link_of [i]);
                /* a statement this request ran may have brought notifications with its result */
                store_dispatch_notifies (w->store, on_notify, w);
                if (!w->links [link_of [i]].socket)
                    break;
                zmq_getsockopt (w->links [link_of [i]].socket, ZMQ_EVENTS, &ev, &evlen);
                if (!(ev & ZMQ_POLLIN))
                    break;
            }
        worker_tick (w, clock_mono_ms ());
    }
    worker_bye (w);
    log_info (NULL, NULL, "worker \"%s\" stopped", w->cfg.worker_id);
    return 0;
}
