/* echo.c - the ceiling Ferrule's broker path is compared with: a ROUTER-ROUTER broker and
 * DEALER workers that only move frames. The frames and their sizes are Ferrule's (client:
 * "", "FRL1", body; worker: "FRW1", "REQ"/"REP", client id, sequence, deadline, body), the
 * reply is a token reply of the same size, and each runs as its own process with its own
 * ZeroMQ context, as the broker and the workers do. What is left out is exactly what Ferrule
 * adds: decoding and checking each body, the pending table, partition routing, the cache. */
#define _GNU_SOURCE
#include "bench.h"
#include "frames.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zmq.h>

#define ECHO_MAX_WORKERS 16
#define ECHO_LIFETIME_MS (60LL * 60 * 1000)  /* a forgotten echo process still ends */
#define ECHO_HWM         10000               /* FERRULE_ZMQ_HWM's default */
#define ECHO_MAX_MSG     (CODEC_MAX_BODY + 1024)

static volatile sig_atomic_t echo_stop;

static void
echo_on_signal (int sig)
{
    (void) sig;
    echo_stop = 1;
}

static void
echo_signals (const char *name)
{
    prctl (PR_SET_NAME, name);                /* "echo-broker", not "exe", in top and perf */
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = echo_on_signal;
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);
    prctl (PR_SET_PDEATHSIG, SIGTERM);        /* ends with ferrule-bench, whatever happens to it */
}

int
echo_broker_main (int nworkers)
{
    if (nworkers < 1 || nworkers > ECHO_MAX_WORKERS)
        return 2;
    echo_signals ("echo-broker");
    void *ctx = zmq_ctx_new ();
    void *front = zmq_socket (ctx, ZMQ_ROUTER), *back = zmq_socket (ctx, ZMQ_ROUTER);
    int one = 1;
    frames_socket_defaults (front, ECHO_HWM, ECHO_MAX_MSG);
    frames_socket_defaults (back, ECHO_HWM, ECHO_MAX_MSG);
    zmq_setsockopt (front, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (back, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    curve_identity_t server;
    memset (&server, 0, sizeof server);
    const char *secret = getenv (ECHO_ENV_SECRET);
    server.plaintext = !secret || !*secret;
    if (!server.plaintext)
        snprintf (server.secret, sizeof server.secret, "%s", secret);
    if (curve_apply_server (front, &server, "clients") != 0 || curve_apply_server (back, &server, "workers") != 0) {
        fprintf (stderr, "echo broker: could not set up CURVE: %s\n", zmq_strerror (errno));
        return 1;
    }
    if (zmq_bind (front, "tcp://127.0.0.1:*") != 0 || zmq_bind (back, "tcp://127.0.0.1:*") != 0) {
        fprintf (stderr, "echo broker: could not bind: %s\n", zmq_strerror (errno));
        return 1;
    }
    char fe [256], be [256];
    size_t len = sizeof fe;
    zmq_getsockopt (front, ZMQ_LAST_ENDPOINT, fe, &len);
    len = sizeof be;
    zmq_getsockopt (back, ZMQ_LAST_ENDPOINT, be, &len);
    printf ("%s %s\n", fe, be);
    fflush (stdout);

    char workers [ECHO_MAX_WORKERS][129];
    size_t wlen [ECHO_MAX_WORKERS];
    int nknown = 0, said_ready = 0;
    uint64_t seq = 0, next = 0;
    unsigned char rem [4] = { 0, 0, 0x13, 0x88 };    /* 5000 ms, as the broker would pass on */
    int64_t until = bench_now_us () + ECHO_LIFETIME_MS * 1000;
    while (!echo_stop && bench_now_us () < until) {
        zmq_pollitem_t items [] = { { front, 0, ZMQ_POLLIN, 0 }, { back, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll (items, 2, 100) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* the same bounded batches as the broker's loop */
        for (int i = 0; i < 256 && (items [1].revents & ZMQ_POLLIN); i++) {
            frames_t f;
            if (frames_recv (back, &f, ZMQ_DONTWAIT) != 0)
                break;
            if (f.total == 6 && frames_is (&f, 2, "REP")) {
                const void *parts [] = { frames_data (&f, 3), "", CODEC_CLIENT_PROTOCOL, frames_data (&f, 5) };
                size_t sizes [] = { frames_size (&f, 3), 0, 4, frames_size (&f, 5) };
                frames_send (front, parts, sizes, 4, ZMQ_DONTWAIT);
            }
            else
            if (frames_is (&f, 2, "HELLO") && nknown < ECHO_MAX_WORKERS && frames_size (&f, 0) < sizeof workers [0]) {
                int known = 0;
                for (int k = 0; k < nknown; k++)
                    known |= wlen [k] == frames_size (&f, 0) && memcmp (workers [k], frames_data (&f, 0), wlen [k]) == 0;
                if (!known) {
                    wlen [nknown] = frames_size (&f, 0);
                    memcpy (workers [nknown], frames_data (&f, 0), wlen [nknown]);
                    nknown++;
                }
                if (nknown == nworkers && !said_ready) {
                    printf ("ready\n");
                    fflush (stdout);
                    said_ready = 1;
                }
            }
            frames_close (&f);
        }
        for (int i = 0; i < 256 && (items [0].revents & ZMQ_POLLIN); i++) {
            frames_t f;
            if (frames_recv (front, &f, ZMQ_DONTWAIT) != 0)
                break;
            if (f.total == 4 && nknown > 0) {
                int w = (int) (next++ % (uint64_t) nknown);
                unsigned char s [8];
                seq++;
                for (int k = 0; k < 8; k++)
                    s [k] = (unsigned char) (seq >> (56 - 8 * k));
                const void *parts [] = { workers [w], CODEC_WORKER_PROTOCOL, "REQ", frames_data (&f, 0), s, rem,
                                         frames_data (&f, 3) };
                size_t sizes [] = { wlen [w], 4, 3, frames_size (&f, 0), 8, 4, frames_size (&f, 3) };
                frames_send (back, parts, sizes, 7, ZMQ_DONTWAIT);
            }
            frames_close (&f);
        }
    }
    zmq_close (front);
    zmq_close (back);
    zmq_ctx_term (ctx);
    return 0;
}

int
echo_worker_main (const char *backend, const char *id, int token_bytes)
{
    if (token_bytes < 1 || token_bytes > 16384)
        return 2;
    echo_signals ("echo-worker");
    /* a token reply as the worker builds it: {rid, ok, access_token, expires_at, generation, refreshed} */
    char *token = malloc ((size_t) token_bytes + 1);
    memset (token, 'x', (size_t) token_bytes);
    token [token_bytes] = '\0';
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 6);
    codec_kv_str (b, "rid", "00000000");
    codec_kv_bool (b, "ok", 1);
    codec_kv_str (b, "access_token", token);
    codec_kv_str (b, "expires_at", "2030-01-01T00:00:00Z");
    codec_kv_int (b, "generation", 1);
    codec_kv_bool (b, "refreshed", 0);
    size_t tlen;
    const char *tdata = codec_builder_data (b, &tlen);
    char *reply = malloc (tlen);
    memcpy (reply, tdata, tlen);
    codec_builder_destroy (&b);
    free (token);
    /* the rid sits at bytes 6..13 of both the request and the reply (map header, "rid", str8 header) */
    const size_t rid_at = 6;

    void *ctx = zmq_ctx_new ();
    void *s = zmq_socket (ctx, ZMQ_DEALER);
    frames_socket_defaults (s, ECHO_HWM, ECHO_MAX_MSG);
    zmq_setsockopt (s, ZMQ_ROUTING_ID, id, strlen (id));
    curve_identity_t me;
    memset (&me, 0, sizeof me);
    const char *server = getenv (ECHO_ENV_PUBLIC);
    me.plaintext = !server || !*server;
    if (!me.plaintext) {
        snprintf (me.server, sizeof me.server, "%s", server);
        zmq_curve_keypair (me.public, me.secret);
    }
    if (curve_apply_client (s, &me) != 0 || zmq_connect (s, backend) != 0) {
        fprintf (stderr, "echo worker: could not connect to \"%s\": %s\n", backend, zmq_strerror (errno));
        return 1;
    }
    const void *hello [] = { CODEC_WORKER_PROTOCOL, "HELLO", "" };
    size_t hello_sizes [] = { 4, 5, 0 };
    int64_t until = bench_now_us () + ECHO_LIFETIME_MS * 1000, next_hello = 0;
    while (!echo_stop && bench_now_us () < until) {
        if (bench_now_us () >= next_hello) {
            frames_send (s, hello, hello_sizes, 3, ZMQ_DONTWAIT);
            next_hello = bench_now_us () + 1000000;
        }
        zmq_pollitem_t item = { s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 100) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < 256 && (item.revents & ZMQ_POLLIN); k++) {
            frames_t f;
            if (frames_recv (s, &f, ZMQ_DONTWAIT) != 0)
                break;
            if (f.total == 6 && frames_is (&f, 1, "REQ")) {
                const unsigned char *body = frames_data (&f, 5);
                if (frames_size (&f, 5) >= rid_at + BENCH_RID_LEN && body [rid_at - 1] == (0xa0 | BENCH_RID_LEN))
                    memcpy (reply + rid_at, body + rid_at, BENCH_RID_LEN);
                const void *parts [] = { CODEC_WORKER_PROTOCOL, "REP", frames_data (&f, 2), frames_data (&f, 3), reply };
                size_t sizes [] = { 4, 3, frames_size (&f, 2), 8, tlen };
                frames_send (s, parts, sizes, 5, ZMQ_DONTWAIT);
            }
            frames_close (&f);
        }
    }
    zmq_close (s);
    zmq_ctx_term (ctx);
    free (reply);
    return 0;
}
