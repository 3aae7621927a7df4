/* bench.h - the benchmark's parts (private to tests/bench/): the load generator, the bare
 * ZeroMQ echo broker and workers it is compared with, and small statistics helpers */
#ifndef FERRULE_BENCH_H
#define FERRULE_BENCH_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "codec.h"
#include "curve.h"

#define BENCH_RID_LEN 8             /* every request's rid: 8 hex digits, first key of the body */

/* ---- load.c: DEALER clients that keep many requests in flight ---- */

typedef struct load load_t;

/* Adds the operation's own keys to a request body (exactly spec->nextra of them). */
typedef void (load_extra_fn) (codec_builder_t *b, size_t index, void *arg);

typedef struct {
    const char *op;                 /* "token", "refresh", "import", ... */
    char *const *ids;               /* request k is for ids [k % nids] */
    size_t nids;
    int window;                     /* closed loop: requests kept in flight; 0 with rate */
    double rate;                    /* open loop: requests per second on a fixed schedule */
    int64_t duration_ms;            /* sending stops then (0: only max_requests bounds it) */
    int64_t warmup_ms;              /* sent before duration_ms starts; ok_in_time leaves it out */
    size_t max_requests;            /* 0: no limit other than the duration */
    int64_t time_limit_ms;          /* without a duration: give up sending after this (0: 120 s) */
    int deadline_ms;                /* the protocol's deadline_ms of each request */
    int keep_latencies;
    FILE *dump;                     /* NULL, or gets "scheduled_us latency_us" per ok reply */
    load_extra_fn *extra;           /* NULL, or adds nextra keys */
    int nextra;
    void *extra_arg;
} load_spec_t;

typedef struct {
    uint64_t sent;
    uint64_t ok;                    /* replies with "ok": true */
    uint64_t refreshed;             /* ... and "refreshed": true */
    uint64_t errors;                /* replies with "ok": false */
    uint64_t lost;                  /* no reply before the run gave up */
    uint64_t ok_in_time;            /* ok replies that came within duration_ms, after the warm-up */
    uint64_t ok_from_start;         /* ok replies that came within duration_ms of the first send */
    double elapsed_s;               /* first send to last reply */
    double p50_us, p99_us, max_us;  /* latency from the scheduled send time (paced) or the send */
    size_t request_bytes, reply_bytes;   /* body sizes last seen */
    char first_error [160];         /* code and message of the first error reply */
} load_result_t;

/* nsockets DEALER sockets connected to endpoint (with CURVE when id is not plaintext); each
 * answered a ping. NULL (said on stderr). */
load_t *load_new (const char *endpoint, int nsockets, const curve_identity_t *id);
void load_destroy (load_t **l_p);
/* Runs the load; 0, or -1 when nothing could be sent. */
int load_run (load_t *l, const load_spec_t *spec, load_result_t *out);

/* ---- echo.c: the bare ZeroMQ path, run as separate processes (this program re-executed) ---- */

/* main () of "ferrule-bench --echo-broker NWORKERS": binds a ROUTER frontend and a ROUTER
 * backend on free ports, prints "FRONTEND BACKEND\n", then "ready\n" once NWORKERS said hello.
 * With FERRULE_BENCH_ECHO_SECRET (the Z85 server secret) in the environment both sockets are
 * CURVE servers, and the workers connect with FERRULE_BENCH_ECHO_PUBLIC: the same link
 * security as Ferrule's, without the allow-lists. */
#define ECHO_ENV_SECRET "FERRULE_BENCH_ECHO_SECRET"
#define ECHO_ENV_PUBLIC "FERRULE_BENCH_ECHO_PUBLIC"
int echo_broker_main (int nworkers);
/* main () of "ferrule-bench --echo-worker BACKEND ID TOKEN_BYTES". */
int echo_worker_main (const char *backend, const char *id, int token_bytes);

/* ---- direct.c: (c)'s load straight at the fake provider, no Ferrule ---- */

typedef struct {
    uint64_t ok_in_time;            /* answers that came within duration_ms, after the warm-up */
    uint64_t errors;                /* failed calls (each ends its chain) */
    double window_rate;             /* ok_in_time per second: chains that keep in step make it a
                                     * multiple of n per window, 950 or 1000 for 100 in 2 s */
    double cycle_ms;                /* mean time from one send of a chain to its next, in the window */
    double rate;                    /* n / cycle_ms: the closed loop's rate (Little's law) */
    double mean_ms, p50_ms, p99_ms; /* of those answers, from each call's send */
} direct_result_t;

/* n refresh chains at fake_url's provider, the refresh tokens given, all started at once and each
 * refreshed again as soon as it is answered, until warmup_ms + duration_ms; 0, or -1 when a call
 * could not be started. */
int direct_refresh_run (const char *fake_url, const char *provider, char *const *refresh_tokens, size_t n,
                        const char *client_id, const char *client_secret, int64_t warmup_ms, int64_t duration_ms,
                        direct_result_t *out);

/* ---- statistics ---- */

double bench_median (const double *v, size_t n);
/* p in [0, 1] of n values, sorted in place. */
double bench_percentile (double *v, size_t n, double p);
int64_t bench_now_us (void);
#endif
