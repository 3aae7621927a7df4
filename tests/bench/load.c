/* load.c - the load generator: DEALER sockets that keep a window of requests in flight (closed
 * loop, for peak throughput) or send on a fixed schedule (open loop, for latency at a given
 * rate). It waits on the sockets' ZMQ_FD with ppoll, so neither mode spins on a CPU that the
 * processes under test need: this machine has two. */
#define _GNU_SOURCE
#include "bench.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define LOAD_MAX_SOCKETS 64
#define SLOT_BITS        20                 /* requests in flight are far fewer than this */
#define SLOT_MASK        ((1u << SLOT_BITS) - 1)
#define PING_WAIT_MS     10000
#define GRACE_MS         2000               /* after the last deadline, how long replies may take */

typedef struct {
    uint32_t rid;                           /* the rid sent, as a number */
    uint8_t  pending;
    int64_t  t_us;                          /* when it was due (paced) or sent (closed loop) */
} slot_t;

struct load {
    void *ctx;
    void *socks [LOAD_MAX_SOCKETS];
    struct pollfd pfd [LOAD_MAX_SOCKETS];
    int nsocks;
    uint32_t next_rid;
    slot_t *slots;
    codec_builder_t *b;
};

typedef struct {
    const load_spec_t *spec;
    load_result_t *res;
    uint64_t issued;                         /* requests built so far in this run */
    uint64_t outstanding;
    uint32_t first_rid;                      /* rids of this run: first_rid + [0, issued) */
    int64_t t0, t_window, t_end, last_reply;   /* t_window: the warm-up ends */
    int closed;                              /* closed loop: each reply sends the next request */
    double *lat;
    size_t nlat, caplat;
} run_t;

int64_t
bench_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

double
bench_percentile (double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort (v, n, sizeof *v, cmp_double);
    size_t i = (size_t) (p * (double) (n - 1) + 0.5);
    return v [i < n ? i : n - 1];
}

double
bench_median (const double *v, size_t n)
{
    if (n == 0)
        return 0;
    double *copy = malloc (n * sizeof *copy);
    memcpy (copy, v, n * sizeof *copy);
    qsort (copy, n, sizeof *copy, cmp_double);
    double m = n % 2 ? copy [n / 2] : (copy [n / 2 - 1] + copy [n / 2]) / 2;
    free (copy);
    return m;
}

/* Receives one whole message from socket i without waiting; its parts (at most 4 kept) in m.
 * Returns the number of parts, 0 when there was none. */
static int
recv_message (void *sock, zmq_msg_t *m, int max)
{
    int count = 0, more = 1, total = 0;
    while (more) {
        zmq_msg_t scratch, *p = count < max ? &m [count] : &scratch;
        zmq_msg_init (p);
        if (zmq_msg_recv (p, sock, total == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close (p);
            for (int i = 0; i < count; i++)
                zmq_msg_close (&m [i]);
            return 0;
        }
        more = zmq_msg_more (p);
        total++;
        if (p == &scratch)
            zmq_msg_close (p);
        else
            count++;
    }
    return count;
}

static int
send_body (void *sock, const void *body, size_t len)
{
    if (zmq_send (sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send (sock, CODEC_CLIENT_PROTOCOL, 4, ZMQ_SNDMORE) < 0)
        return -1;
    return zmq_send (sock, body, len, 0) < 0 ? -1 : 0;
}

load_t *
load_new (const char *endpoint, int nsockets, const curve_identity_t *id)
{
    if (nsockets < 1 || nsockets > LOAD_MAX_SOCKETS) {
        fprintf (stderr, "ferrule-bench: client sockets must be 1 to %d\n", LOAD_MAX_SOCKETS);
        return NULL;
    }
    load_t *l = calloc (1, sizeof *l);
    l->ctx = zmq_ctx_new ();
    l->slots = calloc ((size_t) SLOT_MASK + 1, sizeof *l->slots);
    l->b = codec_builder_new ();
    l->next_rid = 1;
    int zero = 0, hwm = 1000000;
    for (int i = 0; i < nsockets; i++) {
        void *s = zmq_socket (l->ctx, ZMQ_DEALER);
        zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt (s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt (s, ZMQ_RCVHWM, &hwm, sizeof hwm);
        l->socks [l->nsocks++] = s;
        if (curve_apply_client (s, id) != 0 || zmq_connect (s, endpoint) != 0) {
            fprintf (stderr, "ferrule-bench: could not connect to \"%s\": %s\n", endpoint, zmq_strerror (errno));
            load_destroy (&l);
            return NULL;
        }
        size_t len = sizeof l->pfd [i].fd;
        zmq_getsockopt (s, ZMQ_FD, &l->pfd [i].fd, &len);
        l->pfd [i].events = POLLIN;
    }
    /* every socket answers a ping before any measurement */
    for (int i = 0; i < l->nsocks; i++) {
        int64_t until = bench_now_us () + PING_WAIT_MS * 1000LL, next_ping = 0;
        int answered = 0;
        while (!answered && bench_now_us () < until) {
            if (bench_now_us () >= next_ping) {
                codec_builder_reset (l->b);
                codec_map (l->b, 2);
                codec_kv_str (l->b, "rid", "pingpong");
                codec_kv_str (l->b, "op", "ping");
                size_t len;
                const char *body = codec_builder_data (l->b, &len);
                send_body (l->socks [i], body, len);
                next_ping = bench_now_us () + 1000000;
            }
            zmq_pollitem_t item = { l->socks [i], 0, ZMQ_POLLIN, 0 };
            if (zmq_poll (&item, 1, 100) > 0) {
                zmq_msg_t m [4];
                int n = recv_message (l->socks [i], m, 4);
                for (int k = 0; k < n; k++)
                    zmq_msg_close (&m [k]);
                answered = n > 0;
            }
        }
        if (!answered) {
            fprintf (stderr, "ferrule-bench: no answer to a ping from \"%s\" within %d ms\n", endpoint, PING_WAIT_MS);
            load_destroy (&l);
            return NULL;
        }
    }
    return l;
}

void
load_destroy (load_t **l_p)
{
    if (!l_p || !*l_p)
        return;
    load_t *l = *l_p;
    for (int i = 0; i < l->nsocks; i++)
        zmq_close (l->socks [i]);
    zmq_ctx_term (l->ctx);
    codec_builder_destroy (&l->b);
    free (l->slots);
    free (l);
    *l_p = NULL;
}

/* Builds and sends request number run->issued, due (or sent) at t_us. */
static int
load_send (load_t *l, run_t *run, int64_t t_us)
{
    const load_spec_t *spec = run->spec;
    uint32_t rid = l->next_rid++;
    char rid_text [BENCH_RID_LEN + 1];
    snprintf (rid_text, sizeof rid_text, "%08x", rid);
    codec_builder_t *b = l->b;
    codec_builder_reset (b);
    codec_map (b, (uint32_t) (4 + spec->nextra));
    codec_kv_str (b, "rid", rid_text);                   /* first: the echo worker copies it from here */
    codec_kv_str (b, "op", spec->op);
    codec_kv_str (b, "integration", spec->ids [run->issued % spec->nids]);
    codec_kv_int (b, "deadline_ms", spec->deadline_ms);
    if (spec->extra)
        spec->extra (b, (size_t) run->issued, spec->extra_arg);
    size_t len;
    const char *body = codec_builder_data (b, &len);
    if (codec_builder_failed (b) || send_body (l->socks [rid % (uint32_t) l->nsocks], body, len) != 0)
        return -1;
    slot_t *slot = &l->slots [rid & SLOT_MASK];
    if (slot->pending) {                                 /* cannot happen with windows this small */
        slot->pending = 0;
        run->outstanding--;
        run->res->lost++;
    }
    slot->rid = rid;
    slot->pending = 1;
    slot->t_us = t_us;
    run->issued++;
    run->outstanding++;
    run->res->sent++;
    run->res->request_bytes = len;
    return 0;
}

static int
may_send (const run_t *run, int64_t now)
{
    const load_spec_t *spec = run->spec;
    if (spec->max_requests && run->issued >= spec->max_requests)
        return 0;
    return spec->duration_ms == 0 || now < run->t_end;
}

static void
note_error (load_result_t *res, const msgpack_object *root)
{
    if (res->first_error [0])
        return;
    const msgpack_object *e = codec_get (root, "error");
    const char *code = "?", *msg = "";
    size_t code_len = 1, msg_len = 0;
    if (e) {
        codec_get_str (e, "code", &code, &code_len);
        codec_get_str (e, "message", &msg, &msg_len);
    }
    snprintf (res->first_error, sizeof res->first_error, "%.*s: %.*s", (int) code_len, code,
              (int) (msg_len > 120 ? 120 : msg_len), msg);
}

/* Handles one reply. */
static void
load_reply (load_t *l, run_t *run, const void *body, size_t len, int64_t now)
{
    codec_msg_t *msg = NULL;
    char err [128];
    const char *rid_text;
    size_t rid_len;
    if (codec_decode (body, len, &msg, err, sizeof err) != FR_OK)
        return;
    const msgpack_object *root = codec_msg_root (msg);
    if (codec_get_str (root, "rid", &rid_text, &rid_len) != 1 || rid_len != BENCH_RID_LEN)
        goto out;
    char buf [BENCH_RID_LEN + 1], *end = NULL;
    memcpy (buf, rid_text, BENCH_RID_LEN);
    buf [BENCH_RID_LEN] = '\0';
    uint32_t rid = (uint32_t) strtoul (buf, &end, 16);
    if (*end || rid - run->first_rid >= run->issued)
        goto out;                                        /* not this run's: a straggler */
    slot_t *slot = &l->slots [rid & SLOT_MASK];
    if (!slot->pending || slot->rid != rid)
        goto out;
    slot->pending = 0;
    run->outstanding--;
    run->last_reply = now;
    load_result_t *res = run->res;
    res->reply_bytes = len;
    int ok = 0, refreshed = 0;
    codec_get_bool (root, "ok", &ok);
    if (ok) {
        res->ok++;
        if (codec_get_bool (root, "refreshed", &refreshed) == 1 && refreshed)
            res->refreshed++;
        if (now <= run->t_end && now >= run->t_window)
            res->ok_in_time++;
        if (run->spec->duration_ms == 0 || now <= run->t0 + run->spec->duration_ms * 1000)
            res->ok_from_start++;
        if (run->spec->keep_latencies) {
            if (run->nlat == run->caplat) {
                run->caplat = run->caplat ? run->caplat * 2 : 65536;
                run->lat = realloc (run->lat, run->caplat * sizeof *run->lat);
            }
            run->lat [run->nlat++] = (double) (now - slot->t_us);
            if (run->spec->dump)
                fprintf (run->spec->dump, "%lld %lld\n", (long long) (slot->t_us - run->t0), (long long) (now - slot->t_us));
        }
    }
    else {
        res->errors++;
        note_error (res, root);
    }
out:
    codec_msg_destroy (&msg);
}

/* Takes every reply waiting on every socket. In a closed loop each one sends the next request. */
static void
load_drain (load_t *l, run_t *run)
{
    /* until a whole pass finds nothing: a send can swallow the edge of a socket's ZMQ_FD, so
     * ppoll may only wait after every socket has said EAGAIN with no send after it */
    for (int pass = 0; pass < 1000000; pass++) {
        int handled = 0;
        for (int i = 0; i < l->nsocks; i++)
            for (int k = 0; k < 100000; k++) {
                zmq_msg_t m [4];
                int n = recv_message (l->socks [i], m, 4);
                if (n == 0)
                    break;
                handled++;
                int64_t now = bench_now_us ();
                if (n == 3)
                    load_reply (l, run, zmq_msg_data (&m [2]), zmq_msg_size (&m [2]), now);
                for (int c = 0; c < n; c++)
                    zmq_msg_close (&m [c]);
                if (run->closed && may_send (run, now))
                    load_send (l, run, bench_now_us ());
            }
        if (!handled)
            break;
    }
}

int
load_run (load_t *l, const load_spec_t *spec, load_result_t *out)
{
    run_t run;
    memset (&run, 0, sizeof run);
    memset (out, 0, sizeof *out);
    run.spec = spec;
    run.res = out;
    run.first_rid = l->next_rid;
    run.closed = spec->rate <= 0;
    run.t0 = bench_now_us ();
    run.t_window = run.t0 + spec->warmup_ms * 1000;
    run.t_end = spec->duration_ms > 0 ? run.t_window + spec->duration_ms * 1000 : INT64_MAX;
    int64_t limit_ms = spec->duration_ms > 0 ? spec->warmup_ms + spec->duration_ms
                     : spec->time_limit_ms > 0 ? spec->time_limit_ms : 120000;
    int64_t hard_end = run.t0 + (limit_ms + spec->deadline_ms + GRACE_MS) * 1000;
    double interval_us = run.closed ? 0 : 1e6 / spec->rate;
    double next_due = (double) run.t0;
    int failed_sends = 0;

    if (run.closed) {
        for (int i = 0; i < spec->window && may_send (&run, run.t0); i++)
            if (load_send (l, &run, bench_now_us ()) != 0)
                failed_sends++;
    }
    for (;;) {
        int64_t now = bench_now_us ();
        if (!run.closed)
            while (may_send (&run, (int64_t) next_due) && next_due <= (double) now) {
                if (load_send (l, &run, (int64_t) next_due) != 0)
                    failed_sends++;
                next_due += interval_us;
            }
        load_drain (l, &run);
        now = bench_now_us ();
        int sending = run.closed ? may_send (&run, now) && run.outstanding > 0 : may_send (&run, (int64_t) next_due);
        if (!sending && run.outstanding == 0)
            break;
        if (now >= hard_end || failed_sends > 1000)
            break;
        int64_t wait_us = 100000;
        if (!run.closed && sending && (int64_t) next_due - now < wait_us)
            wait_us = (int64_t) next_due - now;
        if (hard_end - now < wait_us)
            wait_us = hard_end - now;
        if (wait_us > 0) {
            struct timespec ts = { (time_t) (wait_us / 1000000), (long) (wait_us % 1000000) * 1000 };
            for (int i = 0; i < l->nsocks; i++)
                l->pfd [i].revents = 0;
            ppoll (l->pfd, (nfds_t) l->nsocks, &ts, NULL);
        }
    }
    out->lost += run.outstanding;
    for (uint32_t k = 0; k < run.issued; k++)          /* forget what never came back */
        l->slots [(run.first_rid + k) & SLOT_MASK].pending = 0;
    out->elapsed_s = (double) ((run.last_reply ? run.last_reply : bench_now_us ()) - run.t0) / 1e6;
    if (run.nlat) {
        out->p50_us = bench_percentile (run.lat, run.nlat, 0.50);
        out->p99_us = bench_percentile (run.lat, run.nlat, 0.99);
        out->max_us = run.lat [run.nlat - 1];
    }
    free (run.lat);
    if (failed_sends)
        fprintf (stderr, "ferrule-bench: %d requests could not be sent\n", failed_sends);
    return out->sent ? 0 : -1;
}
