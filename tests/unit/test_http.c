/* test_http.c - provider calls through curl multi against a local HTTP server of the test's own:
 * more calls at once than curl may have sockets are queued, not failed; a queued call gets what
 * its wait left of its timeout, and one whose time runs out in the queue fails unsent; the queue
 * is worked off in order; a call sent at most once goes on a connection of its own */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <zmq.h>
#include "testexit.h"
#include "clock.h"
#include "http.h"

/* The server: one thread, one poll over every connection. "/slow" requests are answered once
 * `released` allows (each answer takes one), "/hold" ones never, "/drop" ones by closing the
 * connection, any other at once. */
#define SERVER_CONNS 4096

typedef struct {
    int fd;
    char buf [2048];
    size_t len;
    int seen;                        /* this request was counted */
} conn_t;

typedef struct {
    int listen_fd;
    unsigned short port;
    pthread_t thread;
    atomic_int stop;
    atomic_long released;            /* "/slow" answers allowed so far */
    atomic_long slow_answered;
    atomic_long arrived;             /* requests read whole, of any kind */
    atomic_long fast_arrived;        /* set after fast_order has the request */
    atomic_long accepted;            /* connections accepted */
    int fast_order [64];             /* the i= of "/fast?i=N" requests, as they arrived */
    long fast_next;                  /* the server thread's own count of them */
    conn_t conns [SERVER_CONNS];
    int nconns;
} server_t;

static const char answer [] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                              "{\"ok\":true}";

/* The request in c, once whole: 1 for "/slow", 2 for "/hold", 3 for any other, 4 for "/drop"; 0
 * while partial. */
static int
request_kind (conn_t *c, server_t *s)
{
    char *end = strstr (c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    const char *cl = strstr (c->buf, "Content-Length:");    /* as curl spells it */
    size_t body = cl ? strtoul (cl + 15, NULL, 10) : 0;
    if (c->len < (size_t) (end + 4 - c->buf) + body)
        return 0;
    int kind = strncmp (c->buf, "POST /slow", 10) == 0 ? 1 : strncmp (c->buf, "POST /hold", 10) == 0 ? 2
             : strncmp (c->buf, "POST /drop", 10) == 0 ? 4 : 3;
    if (!c->seen) {
        c->seen = 1;
        atomic_fetch_add (&s->arrived, 1);
        if (kind == 3) {
            const char *i = strstr (c->buf, "?i=");
            if (i && s->fast_next < 64)
                s->fast_order [s->fast_next] = atoi (i + 3);
            atomic_store (&s->fast_arrived, ++s->fast_next);
        }
    }
    return kind;
}

static void *
server_run (void *arg)
{
    server_t *s = arg;
    static struct pollfd pfds [SERVER_CONNS + 1];
    while (!atomic_load (&s->stop)) {
        pfds [0] = (struct pollfd) { .fd = s->listen_fd, .events = POLLIN };
        for (int i = 0; i < s->nconns; i++)
            pfds [i + 1] = (struct pollfd) { .fd = s->conns [i].fd, .events = POLLIN };
        int nfds = s->nconns + 1;
        if (poll (pfds, (nfds_t) nfds, 5) < 0 && errno != EINTR)
            break;
        for (int i = nfds - 2; i >= 0; i--) {
            conn_t *c = &s->conns [i];
            if (pfds [i + 1].revents) {
                ssize_t r = read (c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
                if (r <= 0) {
                    close (c->fd);
                    s->conns [i] = s->conns [--s->nconns];
                    continue;
                }
                c->len += (size_t) r;
                c->buf [c->len] = '\0';
            }
        }
        for (int i = 0; i < s->nconns; i++) {
            conn_t *c = &s->conns [i];
            int kind = request_kind (c, s);
            if (kind == 0 || kind == 2)
                continue;
            if (kind == 4) {
                close (c->fd);
                s->conns [i--] = s->conns [--s->nconns];
                continue;
            }
            if (kind == 1) {
                if (atomic_load (&s->slow_answered) >= atomic_load (&s->released))
                    continue;
                atomic_fetch_add (&s->slow_answered, 1);
            }
            if (write (c->fd, answer, sizeof answer - 1) < 0)
                continue;
            c->len = 0;
            c->buf [0] = '\0';
            c->seen = 0;
        }
        int fd;
        while (s->nconns < SERVER_CONNS && (fd = accept (s->listen_fd, NULL, NULL)) >= 0) {
            s->conns [s->nconns++] = (conn_t) { .fd = fd };
            atomic_fetch_add (&s->accepted, 1);
        }
    }
    return NULL;
}

static server_t *
server_start (void)
{
    server_t *s = calloc (1, sizeof *s);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    s->listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true (s->listen_fd >= 0);
    assert_int_equal (bind (s->listen_fd, (struct sockaddr *) &a, sizeof a), 0);
    assert_int_equal (listen (s->listen_fd, 4096), 0);
    assert_int_equal (getsockname (s->listen_fd, (struct sockaddr *) &a, &alen), 0);
    s->port = ntohs (a.sin_port);
    assert_int_equal (pthread_create (&s->thread, NULL, server_run, s), 0);
    return s;
}

static void
server_stop (server_t **s_p)
{
    server_t *s = *s_p;
    atomic_store (&s->stop, 1);
    pthread_join (s->thread, NULL);
    for (int i = 0; i < s->nconns; i++)
        close (s->conns [i].fd);
    close (s->listen_fd);
    free (s);
    *s_p = NULL;
}

/* What each call's done saw. */
typedef struct {
    int done;
    long status;
    int timed_out, not_started;
    char error [256];
    int64_t posted_ms, done_ms;
} result_t;

static void
on_done (void *arg, const http_response_t *r)
{
    result_t *res = arg;
    res->done++;
    res->status = r->status;
    res->timed_out = r->timed_out;
    res->not_started = r->not_started;
    snprintf (res->error, sizeof res->error, "%s", r->error ? r->error : "");
    res->done_ms = clock_mono_ms ();
}

static void
post_as (http_t *h, server_t *s, const char *path, http_send_t send, result_t *res)
{
    char url [128];
    snprintf (url, sizeof url, "http://127.0.0.1:%u%s", s->port, path);
    res->posted_ms = clock_mono_ms ();
    assert_int_equal (http_post (h, url, "grant_type=refresh_token&refresh_token=x", NULL, send, on_done, res), 0);
}

static void
post (http_t *h, server_t *s, const char *path, result_t *res)
{
    post_as (h, s, path, HTTP_IDEMPOTENT, res);
}

/* One turn of a loop as the worker's: curl's sockets (all of them) polled, then processed. */
static void
turn (http_t *h)
{
    static zmq_pollitem_t items [HTTP_MAX_SOCKETS];
    size_t n = http_pollitems (h, items, HTTP_MAX_SOCKETS);
    long t = http_timeout_ms (h);
    if (t < 0 || t > 10)
        t = 10;
    zmq_poll (items, (int) n, t);
    http_process (h, items, n);
}

/* Turns until done (checked each turn) or ms pass. */
static void
turn_until (http_t *h, int (*done) (void *), void *arg, int ms)
{
    int64_t until = clock_mono_ms () + ms;
    while (!done (arg) && clock_mono_ms () < until)
        turn (h);
}

typedef struct {
    server_t *s;
    long want;
} arrived_t;

static int
arrived (void *arg)
{
    arrived_t *a = arg;
    return atomic_load (&a->s->arrived) >= a->want;
}

typedef struct {
    result_t *r;
    int n;
} all_t;

static int
all_done (void *arg)
{
    all_t *a = arg;
    for (int i = 0; i < a->n; i++)
        if (!a->r [i].done)
            return 0;
    return 1;
}

/* Room for n sockets of ours and n of the server's; 0 when the hard limit has not that much. */
static int
enough_files (rlim_t n)
{
    struct rlimit l;
    if (getrlimit (RLIMIT_NOFILE, &l) != 0)
        return 0;
    if (l.rlim_cur >= 2 * n + 64)
        return 1;
    if (l.rlim_max != RLIM_INFINITY && l.rlim_max < 2 * n + 64)
        return 0;
    l.rlim_cur = 2 * n + 64;
    return setrlimit (RLIMIT_NOFILE, &l) == 0;
}

#define MANY 1100

/* More calls at once than curl may have sockets: curl used to be told "no" for the socket past
 * HTTP_MAX_SOCKETS, and then failed every call in progress. Now HTTP_MAX_CALLS are in flight and
 * the rest wait their turn; every one is answered. */
static void
test_more_calls_than_sockets (void **state)
{
    (void) state;
    if (!enough_files (MANY)) {
        printf ("skipped: RLIMIT_NOFILE's hard limit is below %d\n", 2 * MANY + 64);
        skip ();
    }
    server_t *s = server_start ();
    http_t *h = http_new (10000, 60000, 65536, MANY);
    static result_t r [MANY];
    memset (r, 0, sizeof r);
    for (int i = 0; i < MANY; i++)
        post (h, s, "/slow", &r [i]);
    /* every call that can be in flight at the server, held there */
    arrived_t a = { s, MANY < HTTP_MAX_CALLS ? MANY : HTTP_MAX_CALLS };
    turn_until (h, arrived, &a, 20000);
    printf ("%ld of %d calls at the server, %zu in flight, %zu queued\n", atomic_load (&s->arrived), MANY,
            http_in_flight (h), http_queued (h));
    size_t early = 0;
    for (int i = 0; i < MANY; i++)
        early += r [i].done != 0;
    assert_int_equal (early, 0);
    assert_int_equal (atomic_load (&s->arrived), HTTP_MAX_CALLS);
    assert_int_equal (http_in_flight (h), HTTP_MAX_CALLS);
    assert_int_equal (http_queued (h), MANY - HTTP_MAX_CALLS);

    atomic_store (&s->released, MANY);
    all_t all = { r, MANY };
    turn_until (h, all_done, &all, 30000);
    int ok = 0, failed = 0;
    for (int i = 0; i < MANY; i++) {
        ok += r [i].status == 200;
        if (r [i].status != 200 && failed++ < 3)
            printf ("call %d: %s%s\n", i, r [i].done ? "failed: " : "not done", r [i].error);
    }
    printf ("%d of %d answered\n", ok, MANY);
    assert_int_equal (ok, MANY);
    assert_int_equal (http_in_flight (h), 0);
    assert_int_equal (http_queued (h), 0);
    http_destroy (&h);
    server_stop (&s);
}

/* A call whose time runs out while it waits in the queue is not made: its done hears that nothing
 * was sent (not_started, not timed_out), before its timeout, and the server never sees it. The
 * calls in flight that then time out were sent: timed_out. */
static void
test_queued_call_that_runs_out_is_not_sent (void **state)
{
    (void) state;
    if (!enough_files (HTTP_MAX_CALLS + 8)) {
        printf ("skipped: RLIMIT_NOFILE's hard limit is too low\n");
        skip ();
    }
    const int64_t timeout_ms = 8000;         /* a tenth of it: the margin a loaded machine's turns have */
    server_t *s = server_start ();
    http_t *h = http_new (timeout_ms, timeout_ms, 65536, HTTP_MAX_CALLS);
    static result_t r [HTTP_MAX_CALLS + 3];
    memset (r, 0, sizeof r);
    for (int i = 0; i < HTTP_MAX_CALLS; i++)
        post (h, s, "/hold", &r [i]);
    for (int i = HTTP_MAX_CALLS; i < HTTP_MAX_CALLS + 3; i++)
        post (h, s, "/fast", &r [i]);
    assert_int_equal (http_queued (h), 3);
    /* the first call in flight times out (making room) a tenth of the timeout after the queued
     * ones would have given up, less the time the posts took: with most of that tenth gone to
     * posting (a machine far too loaded), the room comes first and the queued calls are made,
     * rightly, and this cannot be checked */
    int64_t posting = r [HTTP_MAX_CALLS].posted_ms - r [0].posted_ms;
    if (posting > timeout_ms / 10 - 200) {
        printf ("skipped: posting %d calls took %lld ms, too long to check this\n", HTTP_MAX_CALLS,
                (long long) posting);
        http_destroy (&h);
        server_stop (&s);
        skip ();
    }
    all_t all = { r, HTTP_MAX_CALLS + 3 };
    turn_until (h, all_done, &all, 20000);
    assert_int_equal (atomic_load (&s->fast_arrived), 0);
    for (int i = HTTP_MAX_CALLS; i < HTTP_MAX_CALLS + 3; i++) {
        printf ("queued call %d: done after %lld ms: %s\n", i - HTTP_MAX_CALLS,
                (long long) (r [i].done_ms - r [i].posted_ms), r [i].error);
        assert_int_equal (r [i].done, 1);
        assert_int_equal (r [i].status, 0);
        assert_true (r [i].not_started);
        assert_false (r [i].timed_out);
        assert_non_null (strstr (r [i].error, "nothing was sent"));
        assert_true (r [i].done_ms - r [i].posted_ms < timeout_ms);
    }
    for (int i = 0; i < HTTP_MAX_CALLS; i++) {
        assert_int_equal (r [i].done, 1);
        assert_true (r [i].timed_out);
        assert_false (r [i].not_started);
    }
    assert_int_equal (http_queued (h), 0);
    http_destroy (&h);
    server_stop (&s);
}

/* A queued call's timeout counts from http_post: started after a wait, it gets what is left, so it
 * ends (here: timed out at a server that never answers) by its timeout after it was posted, not
 * a whole timeout after it was started. What the refresh lease is sized for. */
static void
test_queued_call_gets_what_is_left (void **state)
{
    (void) state;
    if (!enough_files (HTTP_MAX_CALLS + 8)) {
        printf ("skipped: RLIMIT_NOFILE's hard limit is too low\n");
        skip ();
    }
    const int64_t timeout_ms = 4000, wait_ms = 2000;
    server_t *s = server_start ();
    http_t *h = http_new (timeout_ms, timeout_ms, 65536, HTTP_MAX_CALLS);
    static result_t r [HTTP_MAX_CALLS + 1];
    memset (r, 0, sizeof r);
    for (int i = 0; i < HTTP_MAX_CALLS; i++)
        post (h, s, "/slow", &r [i]);
    post (h, s, "/hold", &r [HTTP_MAX_CALLS]);
    arrived_t a = { s, HTTP_MAX_CALLS };
    turn_until (h, arrived, &a, 20000);
    int64_t until = r [HTTP_MAX_CALLS].posted_ms + wait_ms;
    while (clock_mono_ms () < until)
        turn (h);
    assert_int_equal (http_queued (h), 1);
    atomic_store (&s->released, HTTP_MAX_CALLS);
    all_t all = { r, HTTP_MAX_CALLS + 1 };
    turn_until (h, all_done, &all, 20000);
    result_t *q = &r [HTTP_MAX_CALLS];
    printf ("the queued call, started after %lld ms, ended %lld ms after it was posted: %s\n", (long long) wait_ms,
            (long long) (q->done_ms - q->posted_ms), q->error);
    for (int i = 0; i < HTTP_MAX_CALLS; i++)
        assert_int_equal (r [i].status, 200);
    assert_int_equal (q->done, 1);
    assert_int_equal (atomic_load (&s->arrived), HTTP_MAX_CALLS + 1);      /* it was sent */
    assert_true (q->timed_out);
    assert_false (q->not_started);
    /* its whole timeout again after it started would be 6000 ms; a few hundred for a loaded
     * machine's turns past the 4000 it was given */
    assert_true (q->done_ms - q->posted_ms < timeout_ms + (timeout_ms - wait_ms) / 2);
    http_destroy (&h);
    server_stop (&s);
}

/* Calls queued are started in the order they were posted, each as a call in flight ends. */
static void
test_queue_is_worked_off_in_order (void **state)
{
    (void) state;
    if (!enough_files (HTTP_MAX_CALLS + 8)) {
        printf ("skipped: RLIMIT_NOFILE's hard limit is too low\n");
        skip ();
    }
    enum { QUEUED = 8 };
    server_t *s = server_start ();
    http_t *h = http_new (10000, 30000, 65536, HTTP_MAX_CALLS);
    static result_t r [HTTP_MAX_CALLS + QUEUED];
    memset (r, 0, sizeof r);
    for (int i = 0; i < HTTP_MAX_CALLS; i++)
        post (h, s, "/slow", &r [i]);
    for (int i = 0; i < QUEUED; i++) {
        char path [32];
        snprintf (path, sizeof path, "/fast?i=%d", i);
        post (h, s, path, &r [HTTP_MAX_CALLS + i]);
    }
    arrived_t a = { s, HTTP_MAX_CALLS };
    turn_until (h, arrived, &a, 20000);
    assert_int_equal (http_queued (h), QUEUED);
    /* one place frees: the queued calls go one at a time, each starting as the one before ends */
    atomic_store (&s->released, 1);
    all_t queued = { r + HTTP_MAX_CALLS, QUEUED };
    turn_until (h, all_done, &queued, 20000);
    assert_int_equal (atomic_load (&s->fast_arrived), QUEUED);
    for (int i = 0; i < QUEUED; i++) {
        assert_int_equal (r [HTTP_MAX_CALLS + i].status, 200);
        assert_int_equal (s->fast_order [i], i);
    }
    atomic_store (&s->released, HTTP_MAX_CALLS);
    all_t all = { r, HTTP_MAX_CALLS };
    turn_until (h, all_done, &all, 20000);
    for (int i = 0; i < HTTP_MAX_CALLS; i++)
        assert_int_equal (r [i].status, 200);
    http_destroy (&h);
    server_stop (&s);
}

/* One call, waited for; what its done saw is in *res. */
static void
call (http_t *h, server_t *s, const char *path, http_send_t send, result_t *res)
{
    memset (res, 0, sizeof *res);
    post_as (h, s, path, send, res);
    all_t one = { res, 1 };
    turn_until (h, all_done, &one, 20000);
    assert_int_equal (res->done, 1);
}

/* A call sent at most once goes on a new connection although one is kept, and the calls after it
 * keep using kept ones (curl handles are reused). When the connection dies before any answer, the
 * server saw it once: a call on a kept connection curl sends again, on a new one. */
static void
test_at_most_once_on_a_new_connection (void **state)
{
    (void) state;
    server_t *s = server_start ();
    http_t *h = http_new (10000, 30000, 65536, 4);
    result_t r;

    call (h, s, "/fast", HTTP_IDEMPOTENT, &r);
    assert_int_equal (r.status, 200);
    call (h, s, "/fast", HTTP_IDEMPOTENT, &r);
    assert_int_equal (r.status, 200);
    assert_int_equal (atomic_load (&s->accepted), 1);
    call (h, s, "/fast", HTTP_AT_MOST_ONCE, &r);
    assert_int_equal (r.status, 200);
    assert_int_equal (atomic_load (&s->accepted), 2);
    call (h, s, "/fast", HTTP_IDEMPOTENT, &r);
    assert_int_equal (r.status, 200);
    assert_int_equal (atomic_load (&s->accepted), 2);

    long before = atomic_load (&s->arrived);
    call (h, s, "/drop", HTTP_AT_MOST_ONCE, &r);
    assert_int_equal (r.status, 0);
    assert_true (r.error [0] != '\0');
    assert_int_equal (atomic_load (&s->arrived) - before, 1);

    /* what it avoids: curl sends the request again when it dies on a kept connection, on the next
     * kept one if there is one (two here: 3 requests), and last on a new one */
    call (h, s, "/fast", HTTP_IDEMPOTENT, &r);
    assert_int_equal (r.status, 200);
    before = atomic_load (&s->arrived);
    call (h, s, "/drop", HTTP_IDEMPOTENT, &r);
    assert_int_equal (r.status, 0);
    assert_true (atomic_load (&s->arrived) - before >= 2);
    http_destroy (&h);
    server_stop (&s);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_more_calls_than_sockets),
        cmocka_unit_test (test_queued_call_that_runs_out_is_not_sent),
        cmocka_unit_test (test_queued_call_gets_what_is_left),
        cmocka_unit_test (test_queue_is_worked_off_in_order),
        cmocka_unit_test (test_at_most_once_on_a_new_connection),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
