/* broker.c - accept client requests, route each to its partition's worker, answer every one.
 * Nothing is dropped silently: ROUTER_MANDATORY on both sockets turns an unroutable or full
 * peer into an error we handle, and every pending request has a deadline. */
#include "broker.h"
#include "clock.h"
#include "codec.h"
#include "frames.h"
#include "health.h"
#include "metrics.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "pending.h"
#include "registry.h"
#include "ring.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_DEADLINE_MS 300000

struct broker {
    broker_config_t cfg;
    void *ctx;
    void *frontend;
    void *backend;
    registry_t *registry;
    pending_table_t *pending;
    codec_builder_t *out;          /* reused for every reply the broker writes itself */
    int64_t next_ping_ms;
    int64_t next_publish_ms;
    int waiting;                   /* some pending request has no worker yet */
    int draining;
    metrics_t *metrics;
    health_t *health;
    metrics_series_t *m_routed, *m_replied, *m_redispatched, *m_workers_lost, *m_pending, *m_workers,
                     *m_partitions_owned;
};

broker_t *
broker_new (const broker_config_t *config, char *err, size_t errlen)
{
    broker_t *b = mem_alloc (sizeof *b);
    int one = 1;
    b->cfg = *config;
    b->ctx = zmq_ctx_new ();
    b->frontend = zmq_socket (b->ctx, ZMQ_ROUTER);
    b->backend = zmq_socket (b->ctx, ZMQ_ROUTER);
    if (!b->ctx || !b->frontend || !b->backend) {
        snprintf (err, errlen, "could not create ZeroMQ sockets: %s", zmq_strerror (errno));
        goto fail;
    }
    frames_socket_defaults (b->frontend, (int) config->hwm, CODEC_MAX_BODY + 1024);
    frames_socket_defaults (b->backend, (int) config->hwm, CODEC_MAX_BODY + 1024);
    zmq_setsockopt (b->frontend, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (b->backend, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* a restarted worker reconnects under the same id before the old pipe is gone */
    zmq_setsockopt (b->backend, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    if (zmq_bind (b->frontend, config->frontend_bind) != 0) {
        snprintf (err, errlen, "could not bind frontend \"%s\": %s", config->frontend_bind, zmq_strerror (errno));
        goto fail;
    }
    if (zmq_bind (b->backend, config->backend_bind) != 0) {
        snprintf (err, errlen, "could not bind backend \"%s\": %s", config->backend_bind, zmq_strerror (errno));
        goto fail;
    }
    b->metrics = metrics_new ("ferrule_");
    b->m_routed = metrics_counter (b->metrics, "broker_requests_routed_total", "requests handed to a worker (re-dispatches included)", NULL);
    b->m_replied = metrics_counter (b->metrics, "broker_replies_forwarded_total", "worker replies forwarded to clients", NULL);
    b->m_redispatched = metrics_counter (b->metrics, "broker_requests_redispatched_total", "requests sent again after their worker was lost", NULL);
    b->m_workers_lost = metrics_counter (b->metrics, "broker_workers_lost_total", "workers removed: heartbeats missed, unreachable, or goodbye", NULL);
    b->m_pending = metrics_gauge (b->metrics, "broker_pending_requests", "requests accepted and not yet answered", NULL);
    b->m_workers = metrics_gauge (b->metrics, "broker_workers", "live workers (not draining)", NULL);
    b->m_partitions_owned = metrics_gauge (b->metrics, "broker_partitions_owned", "partitions with a live owner", NULL);
    if (config->http_bind && *config->http_bind) {
        b->health = health_new (config->http_bind, b->metrics, err, errlen);
        if (!b->health)
            goto fail;
        log_info (NULL, NULL, "serving /healthz, /readyz and /metrics on port %d", health_port (b->health));
    }
    b->registry = registry_new ((uint32_t) config->partitions, config->heartbeat_ms * 3);
    b->pending = pending_table_new ();
    b->out = codec_builder_new ();
    return b;
fail:
    broker_destroy (&b);
    return NULL;
}

void
broker_destroy (broker_t **b_p)
{
    if (b_p && *b_p) {
        broker_t *b = *b_p;
        if (b->frontend)
            zmq_close (b->frontend);
        if (b->backend)
            zmq_close (b->backend);
        if (b->ctx)
            zmq_ctx_term (b->ctx);
        health_destroy (&b->health);
        metrics_destroy (&b->metrics);
        registry_destroy (&b->registry);
        pending_table_destroy (&b->pending);
        codec_builder_destroy (&b->out);
        mem_free (b);
        *b_p = NULL;
    }
}

/* Sends a body to a client. A client that went away is not an error worth more than a debug line. */
static void
broker_send_client (broker_t *b, const void *client, size_t client_len, const char *body, size_t len)
{
    const void *parts [] = { client, "", CODEC_CLIENT_PROTOCOL, body };
    size_t sizes [] = { client_len, 0, 4, len };
    if (frames_send (b->frontend, parts, sizes, 4, ZMQ_DONTWAIT) != 0)
        log_debug (NULL, NULL, "could not answer a client: %s", zmq_strerror (errno));
}

/* Counts an answer the broker gave itself, by code. */
static void
broker_count_error (broker_t *b, fr_status_t st)
{
    char labels [64];
    snprintf (labels, sizeof labels, "code=\"%s\"", result_code (st));
    metrics_inc (metrics_counter (b->metrics, "broker_errors_total", "requests the broker answered itself with an error", labels));
}

static void
broker_reply_error (broker_t *b, const void *client, size_t client_len, const char *rid, size_t rid_len,
                    fr_status_t st, const char *message)
{
    broker_count_error (b, st);
    codec_builder_reset (b->out);
    codec_error_reply (b->out, rid, rid_len, st, message, NULL, -1);
    size_t len;
    const char *data = codec_builder_data (b->out, &len);
    broker_send_client (b, client, client_len, data, len);
}

static void
broker_fail_pending (broker_t *b, pending_t *p, fr_status_t st, const char *message)
{
    log_info (p->integration, p->rid, "answering with %s: %s", result_code (st), message);
    broker_reply_error (b, p->client, p->client_len, p->rid_len ? p->rid : NULL, p->rid_len, st, message);
    pending_remove (b->pending, p);
}

/* Forgets a worker and puts its unanswered requests back in the queue for the new owners. */
static void
broker_worker_lost (broker_t *b, const char *worker_id, const char *why)
{
    if (!registry_remove (b->registry, worker_id))
        return;
    metrics_inc (b->m_workers_lost);
    log_warning (NULL, NULL, "lost worker \"%s\": %s", worker_id, why);
    for (pending_t *p = pending_first (b->pending); p; p = p->next)
        if (strcmp (p->worker, worker_id) == 0) {
            p->worker [0] = '\0';
            b->waiting = 1;
        }
}

/* Hands a request to its partition's owner. Returns 1 when it was sent, 0 when it waits for an
 * owner, -1 when it was answered with an error and removed. */
static int
broker_route (broker_t *b, pending_t *p)
{
    for (;;) {
        const char *owner = registry_owner (b->registry, p->partition);
        if (!owner) {
            p->worker [0] = '\0';
            b->waiting = 1;
            return 0;
        }
        int64_t remaining = p->deadline_ms - clock_mono_ms ();
        if (remaining < 1)
            remaining = 1;
        unsigned char seq [8], rem [4];
        for (int i = 0; i < 8; i++)
            seq [i] = (unsigned char) (p->seq >> (56 - 8 * i));
        for (int i = 0; i < 4; i++)
            rem [i] = (unsigned char) ((uint64_t) remaining >> (24 - 8 * i));
        const void *parts [] = { owner, CODEC_WORKER_PROTOCOL, "REQ", p->client, seq, rem, p->body };
        size_t sizes [] = { strlen (owner), 4, 3, p->client_len, 8, 4, p->body_len };
        if (frames_send (b->backend, parts, sizes, 7, ZMQ_DONTWAIT) == 0) {
            snprintf (p->worker, sizeof p->worker, "%s", owner);
            if (p->attempts++ > 0)
                metrics_inc (b->m_redispatched);
            metrics_inc (b->m_routed);
            return 1;
        }
        if (errno == EHOSTUNREACH) {
            char id [REGISTRY_MAX_WORKER_ID + 1];
            snprintf (id, sizeof id, "%s", owner);
            broker_worker_lost (b, id, "not connected");
            continue;
        }
        char message [200];
        snprintf (message, sizeof message, "worker \"%s\" cannot take more requests (%s)", owner,
                  zmq_strerror (errno));
        broker_fail_pending (b, p, FR_OVERLOADED, message);
        return -1;
    }
}

static void
broker_dispatch_waiting (broker_t *b)
{
    if (!b->waiting)
        return;
    b->waiting = 0;
    pending_t *p = pending_first (b->pending);
    while (p) {
        pending_t *next = p->next;
        if (p->worker [0] == '\0')
            broker_route (b, p);       /* may set waiting again */
        p = next;
    }
}

static void
broker_ping_reply (broker_t *b, const void *client, size_t client_len, const char *rid, size_t rid_len)
{
    codec_builder_t *o = b->out;
    codec_builder_reset (o);
    codec_map (o, rid ? 9 : 8);
    if (rid) {
        codec_str (o, "rid");
        codec_strn (o, rid, rid_len);
    }
    codec_kv_bool (o, "ok", 1);
    codec_kv_str (o, "service", "ferrule");
    codec_kv_str (o, "role", "broker");
    codec_kv_int (o, "workers", (int64_t) registry_live_count (b->registry));
    codec_kv_int (o, "partitions", registry_partitions (b->registry));
    codec_kv_int (o, "partitions_owned", registry_partitions_owned (b->registry));
    codec_kv_int (o, "pending", (int64_t) pending_count (b->pending));
    codec_kv_bool (o, "draining", b->draining);
    size_t len;
    const char *data = codec_builder_data (o, &len);
    broker_send_client (b, client, client_len, data, len);
}

static void
broker_handle_client (broker_t *b)
{
    frames_t f;
    char err [256];
    codec_msg_t *msg = NULL;
    if (frames_recv (b->frontend, &f, ZMQ_DONTWAIT) != 0)
        return;
    const void *client = frames_data (&f, 0);
    size_t client_len = frames_size (&f, 0);
    const char *rid = NULL;
    size_t rid_len = 0;

    if (f.total != 4 || frames_size (&f, 1) != 0) {
        snprintf (err, sizeof err, "expected 3 frames (empty delimiter, \"FRL1\", body), got %d", f.total - 1);
        log_warning (NULL, NULL, "malformed client message: %s", err);
        broker_reply_error (b, client, client_len, NULL, 0, FR_MALFORMED_FRAME, err);
        goto out;
    }
    if (!frames_is (&f, 2, CODEC_CLIENT_PROTOCOL)) {
        broker_reply_error (b, client, client_len, NULL, 0, FR_UNSUPPORTED_VERSION,
                            "protocol tag is not \"FRL1\"");
        goto out;
    }
    fr_status_t st = codec_decode (frames_data (&f, 3), frames_size (&f, 3), &msg, err, sizeof err);
    if (st != FR_OK) {
        log_warning (NULL, NULL, "undecodable client request: %s", err);
        broker_reply_error (b, client, client_len, NULL, 0, st, err);
        goto out;
    }
    const msgpack_object *root = codec_msg_root (msg);
    int r = codec_get_str (root, "rid", &rid, &rid_len);
    if (r < 0 || (r == 1 && (rid_len == 0 || rid_len > 64))) {
        rid = NULL;
        broker_reply_error (b, client, client_len, NULL, 0, FR_BAD_REQUEST,
                            "\"rid\" must be a string of 1 to 64 bytes");
        goto out;
    }
    if (r == 0)
        rid = NULL;
    const char *op;
    size_t op_len;
    if (codec_get_str (root, "op", &op, &op_len) != 1) {
        broker_reply_error (b, client, client_len, rid, rid_len, FR_BAD_REQUEST, "\"op\" is required and must be a string");
        goto out;
    }
    int64_t deadline = b->cfg.default_deadline_ms;
    r = codec_get_int (root, "deadline_ms", &deadline);
    if (r < 0 || deadline < 1 || deadline > MAX_DEADLINE_MS) {
        snprintf (err, sizeof err, "\"deadline_ms\" must be an integer from 1 to %d", MAX_DEADLINE_MS);
        broker_reply_error (b, client, client_len, rid, rid_len, FR_BAD_REQUEST, err);
        goto out;
    }
    if (op_len == 4 && memcmp (op, "ping", 4) == 0 && !codec_get (root, "integration")) {
        broker_ping_reply (b, client, client_len, rid, rid_len);
        goto out;
    }
    const char *integ = NULL;
    size_t integ_len = 0;
    const char *route = NULL;     /* what the partition is computed from */
    size_t route_len = 0;
    if (op_len == 8 && memcmp (op, "callback", 8) == 0 && !codec_get (root, "integration")) {
        /* a callback knows only its state: route by it (any worker can finish a connect) */
        if (codec_get_str (root, "state", &route, &route_len) != 1 || route_len == 0 || route_len > 256) {
            broker_reply_error (b, client, client_len, rid, rid_len, FR_BAD_REQUEST,
                                "\"state\" must be a string of 1 to 256 bytes");
            goto out;
        }
    }
    else
    if (codec_get_str (root, "integration", &integ, &integ_len) != 1 || !ident_valid (integ, integ_len)) {
        broker_reply_error (b, client, client_len, rid, rid_len, FR_BAD_REQUEST,
                            "\"integration\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
        goto out;
    }
    else {
        route = integ;
        route_len = integ_len;
    }
    if (b->draining) {
        broker_reply_error (b, client, client_len, rid, rid_len, FR_UNAVAILABLE,
                            "this broker is shutting down; send the request to another broker");
        goto out;
    }
    if ((int64_t) pending_count (b->pending) >= b->cfg.max_pending) {
        snprintf (err, sizeof err, "broker queue is full (%lld requests)", (long long) b->cfg.max_pending);
        broker_reply_error (b, client, client_len, rid, rid_len, FR_OVERLOADED, err);
        goto out;
    }
    pending_t *p = pending_add (b->pending, client, client_len, frames_data (&f, 3), frames_size (&f, 3),
                                clock_mono_ms () + deadline);
    memcpy (p->rid, rid ? rid : "", rid ? rid_len : 0);
    p->rid_len = rid ? rid_len : 0;
    if (integ)
        memcpy (p->integration, integ, integ_len);
    p->partition = (uint32_t) (ring_hash (route, route_len) % registry_partitions (b->registry));
    broker_route (b, p);
out:
    codec_msg_destroy (&msg);
    frames_close (&f);
}

static void
broker_handle_worker (broker_t *b)
{
    frames_t f;
    codec_msg_t *msg = NULL;
    char err [256];
    char worker [REGISTRY_MAX_WORKER_ID + 1];
    if (frames_recv (b->backend, &f, ZMQ_DONTWAIT) != 0)
        return;
    size_t wlen = frames_size (&f, 0);
    if (wlen == 0 || wlen > REGISTRY_MAX_WORKER_ID || !ident_valid (frames_data (&f, 0), wlen)
    ||  !frames_is (&f, 1, CODEC_WORKER_PROTOCOL) || f.count < 3) {
        log_warning (NULL, NULL, "ignoring a malformed message on the worker socket (%d frames)", f.total);
        goto out;
    }
    memcpy (worker, frames_data (&f, 0), wlen);
    worker [wlen] = '\0';

    if (frames_is (&f, 2, "REP") && f.total == 6 && frames_size (&f, 4) == 8) {
        const unsigned char *s = frames_data (&f, 4);
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++)
            seq = (seq << 8) | s [i];
        pending_t *p = pending_find (b->pending, seq);
        if (!p) {
            log_debug (NULL, NULL, "late reply from worker \"%s\" dropped: request already answered", worker);
            goto out;
        }
        broker_send_client (b, p->client, p->client_len, frames_data (&f, 5), frames_size (&f, 5));
        pending_remove (b->pending, p);
        metrics_inc (b->m_replied);
        /* a reply proves the worker alive as well as a heartbeat does */
        if (registry_known (b->registry, worker))
            registry_seen (b->registry, worker, 0, clock_mono_ms ()) ;
    }
    else
    if (frames_is (&f, 2, "HELLO") && f.total == 4) {
        int draining = 0;
        if (codec_decode (frames_data (&f, 3), frames_size (&f, 3), &msg, err, sizeof err) != FR_OK) {
            log_warning (NULL, NULL, "malformed HELLO from worker \"%s\": %s", worker, err);
            goto out;
        }
        if (codec_get_bool (codec_msg_root (msg), "draining", &draining) < 0)
            draining = 0;
        if (registry_seen (b->registry, worker, draining, clock_mono_ms ())) {
            b->waiting = 1;
            b->next_ping_ms = 0;         /* tell every worker the new membership now */
        }
    }
    else
    if (frames_is (&f, 2, "BYE")) {
        int busy = 0;
        for (pending_t *p = pending_first (b->pending); p; p = p->next)
            busy += strcmp (p->worker, worker) == 0;
        if (busy)
            log_warning (NULL, NULL, "worker \"%s\" left with %d requests unanswered; re-dispatching", worker, busy);
        broker_worker_lost (b, worker, "it said goodbye");
        b->next_ping_ms = 0;
    }
    else
        log_warning (NULL, NULL, "unknown command from worker \"%s\" (%d frames)", worker, f.total);
out:
    codec_msg_destroy (&msg);
    frames_close (&f);
}

/* Housekeeping: heartbeats out, silent workers out, expired requests answered. */
static void
broker_tick (broker_t *b, int64_t now)
{
    char expired [16][REGISTRY_MAX_WORKER_ID + 1];
    size_t n;
    while ((n = registry_expired (b->registry, now, expired, 16)) > 0)
        for (size_t i = 0; i < n; i++) {
            broker_worker_lost (b, expired [i], "missed its heartbeats");
            b->next_ping_ms = 0;
        }

    if (now >= b->next_ping_ms) {
        b->next_ping_ms = now + b->cfg.heartbeat_ms;
        codec_builder_t *o = b->out;
        codec_builder_reset (o);
        codec_map (o, 2);
        codec_str (o, "workers");
        codec_array (o, (uint32_t) registry_live_count (b->registry));
        for (size_t i = 0; i < registry_count (b->registry); i++) {
            int draining;
            const char *id = registry_worker_at (b->registry, i, &draining);
            if (!draining)
                codec_str (o, id);
        }
        codec_kv_int (o, "partitions", registry_partitions (b->registry));
        size_t len;
        const char *body = codec_builder_data (o, &len);
        for (size_t i = 0; i < registry_count (b->registry); i++) {
            const char *id = registry_worker_at (b->registry, i, NULL);
            const void *parts [] = { id, CODEC_WORKER_PROTOCOL, "PING", body };
            size_t sizes [] = { strlen (id), 4, 4, len };
            if (frames_send (b->backend, parts, sizes, 4, ZMQ_DONTWAIT) != 0 && errno == EHOSTUNREACH) {
                char lost [REGISTRY_MAX_WORKER_ID + 1];
                snprintf (lost, sizeof lost, "%s", id);
                broker_worker_lost (b, lost, "not connected");
                i--;
            }
        }
    }

    pending_t *p;
    while ((p = pending_first (b->pending)) && p->deadline_ms <= now) {
        char message [200];
        if (p->worker [0])
            snprintf (message, sizeof message, "worker \"%s\" did not answer within the deadline", p->worker);
        else
            snprintf (message, sizeof message, "no worker owns partition %u", p->partition);
        broker_fail_pending (b, p, p->worker [0] ? FR_TIMEOUT : FR_UNAVAILABLE, message);
    }
    broker_dispatch_waiting (b);

    /* metrics and readiness are published ten times a second, not once per loop turn */
    if (now < b->next_publish_ms)
        return;
    b->next_publish_ms = now + 100;
    uint32_t owned = registry_partitions_owned (b->registry);
    metrics_set (b->m_pending, (int64_t) pending_count (b->pending));
    metrics_set (b->m_workers, (int64_t) registry_live_count (b->registry));
    metrics_set (b->m_partitions_owned, owned);
    if (b->health) {
        /* ready: every partition has a live owner, and the broker is not shutting down */
        char why [128] = "";
        if (b->draining)
            snprintf (why, sizeof why, "draining");
        else
        if (owned < registry_partitions (b->registry))
            snprintf (why, sizeof why, "waiting for workers: %u of %u partitions owned", owned, registry_partitions (b->registry));
        health_set_ready (b->health, why [0] == '\0', why);
    }
}

int
broker_run (broker_t *b, volatile sig_atomic_t *stop)
{
    log_info (NULL, NULL, "broker serving clients at \"%s\" and workers at \"%s\" with %lld partitions",
              b->cfg.frontend_bind, b->cfg.backend_bind, (long long) b->cfg.partitions);
    while (*stop < 2) {
        if (*stop == 1 && !b->draining) {
            b->draining = 1;
            log_info (NULL, NULL, "draining: %zu requests pending", pending_count (b->pending));
        }
        if (b->draining && pending_count (b->pending) == 0)
            break;
        zmq_pollitem_t items [] = {
            { b->frontend, 0, ZMQ_POLLIN, 0 },
            { b->backend, 0, ZMQ_POLLIN, 0 },
        };
        int64_t now = clock_mono_ms ();
        int64_t timeout = b->next_ping_ms - now;
        pending_t *first = pending_first (b->pending);
        if (first && first->deadline_ms - now < timeout)
            timeout = first->deadline_ms - now;
        if (timeout > 100)
            timeout = 100;
        if (timeout < 0)
            timeout = 0;
        if (b->health)
            health_beat (b->health);
        if (zmq_poll (items, 2, (long) timeout) < 0) {
            if (errno == EINTR)
                continue;
            log_error (NULL, NULL, "poll failed: %s", zmq_strerror (errno));
            return -1;
        }
        /* bounded batches keep one busy side from starving the other */
        for (int i = 0; i < 256 && (items [1].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            broker_handle_worker (b);
            zmq_getsockopt (b->backend, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
        }
        for (int i = 0; i < 256 && (items [0].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            broker_handle_client (b);
            zmq_getsockopt (b->frontend, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
        }
        broker_tick (b, clock_mono_ms ());
    }
    log_info (NULL, NULL, "broker stopped with %zu requests pending", pending_count (b->pending));
    return 0;
}
