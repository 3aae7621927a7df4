/* test_health.c - the HTTP endpoints, over real sockets to a real server on 127.0.0.1:0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "health.h"
#include "metrics.h"
#include "mem.h"

typedef struct {
    int status;
    char head [4096];                       /* status line and headers */
    char body [65536];
    size_t body_len;
} http_reply_t;

static int
connect_to (int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    struct timeval tv = { .tv_sec = 5 };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    inet_pton (AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    return fd;
}

/* Sends request as is and reads the reply until the server closes. */
static http_reply_t *
http_raw (int port, const char *request)
{
    static http_reply_t r;
    static char buf [sizeof r.head + sizeof r.body];
    size_t len = 0;
    ssize_t n;
    int fd = connect_to (port);
    memset (&r, 0, sizeof r);
    assert_int_equal (send (fd, request, strlen (request), MSG_NOSIGNAL), (ssize_t) strlen (request));
    while (len < sizeof buf - 1 && (n = recv (fd, buf + len, sizeof buf - 1 - len, 0)) > 0)
        len += (size_t) n;
    close (fd);
    buf [len] = '\0';
    char *end = strstr (buf, "\r\n\r\n");
    assert_non_null (end);
    assert_true ((size_t) (end - buf) < sizeof r.head);
    memcpy (r.head, buf, (size_t) (end - buf) + 2);    /* keeps the last header's CRLF */
    r.body_len = len - (size_t) (end + 4 - buf);
    memcpy (r.body, end + 4, r.body_len);
    assert_int_equal (sscanf (buf, "HTTP/1.1 %d ", &r.status), 1);
    return &r;
}

static http_reply_t *
http_get (int port, const char *method, const char *path)
{
    char request [512];
    snprintf (request, sizeof request, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
              method, path);
    return http_raw (port, request);
}

/* The value of a header (case-insensitive name), or NULL. */
static const char *
header (http_reply_t *r, const char *name)
{
    static char value [512];
    size_t nlen = strlen (name);
    for (const char *line = strstr (r->head, "\r\n"); line && line [2]; line = strstr (line + 2, "\r\n")) {
        const char *p = line + 2;
        if (strncasecmp (p, name, nlen) == 0 && p [nlen] == ':') {
            p += nlen + 1;
            while (*p == ' ')
                p++;
            size_t vlen = strcspn (p, "\r\n");
            snprintf (value, sizeof value, "%.*s", (int) vlen, p);
            return value;
        }
    }
    return NULL;
}

static void
sleep_ms (long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void
test_parse_bind (void **state)
{
    char host [64];
    int port = -1;
    assert_int_equal (health_parse_bind ("0.0.0.0:9100", host, sizeof host, &port), 0);
    assert_string_equal (host, "0.0.0.0");
    assert_int_equal (port, 9100);
    assert_int_equal (health_parse_bind ("127.0.0.1:0", host, sizeof host, &port), 0);
    assert_string_equal (host, "127.0.0.1");
    assert_int_equal (port, 0);
    assert_int_equal (health_parse_bind ("10.1.2.3:65535", host, sizeof host, &port), 0);
    assert_int_equal (port, 65535);

    const char *bad [] = { "", ":9100", "0.0.0.0", "0.0.0.0:", "0.0.0.0:65536", "0.0.0.0:-1",
                           "0.0.0.0:+80", "0.0.0.0:80x", "0.0.0.0: 80", "0.0.0.0:000080",
                           "localhost:9100", "1.2.3:80", "1.2.3.256:80", "[::1]:80", "::1:80",
                           "1.2.3.4:80:80", "0.0.0.0:99999999999999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        port = -1;
        if (health_parse_bind (bad [i], host, sizeof host, &port) == 0)
            fail_msg ("accepted \"%s\"", bad [i]);
        assert_int_equal (port, -1);
    }
    assert_int_equal (health_parse_bind (NULL, host, sizeof host, &port), -1);
    assert_int_equal (health_parse_bind ("127.0.0.1:80", host, 9, &port), -1);   /* no room */
    assert_int_equal (health_parse_bind ("127.0.0.1:80", host, 10, &port), 0);
}

static void
test_new_fails_with_reason (void **state)
{
    char err [256];
    assert_null (health_new ("localhost:9100", NULL, err, sizeof err));
    assert_string_equal (err, "invalid HTTP bind address \"localhost:9100\": expected an IPv4 "
                              "address and a port, such as \"0.0.0.0:9100\"");
    assert_null (health_new (NULL, NULL, err, sizeof err));
    assert_non_null (strstr (err, "invalid HTTP bind address"));

    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    char taken [64];
    snprintf (taken, sizeof taken, "127.0.0.1:%d", health_port (h));
    assert_null (health_new (taken, NULL, err, sizeof err));
    char expected [256];
    snprintf (expected, sizeof expected, "could not start the HTTP server on \"%s\": "
              "Address already in use", taken);
    assert_string_equal (err, expected);
    health_destroy (&h);
    assert_null (h);
    health_destroy (&h);                    /* safe twice */
}

static void
test_healthz (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);
    assert_true (port > 0);

    http_reply_t *r = http_get (port, "GET", "/healthz");
    assert_int_equal (r->status, 200);
    assert_string_equal (r->body, "ok\n");
    assert_string_equal (header (r, "Content-Type"), "text/plain; charset=utf-8");

    health_set_stall_ms (h, 200);
    health_beat (h);
    sleep_ms (300);                         /* the loop "hangs": no beats */
    r = http_get (port, "GET", "/healthz");
    assert_int_equal (r->status, 503);
    long stalled = -1;
    assert_int_equal (sscanf (r->body, "loop stalled for %ld ms\n", &stalled), 1);
    assert_true (stalled >= 300 && stalled < 5000);
    assert_true (strlen (r->body) > 0 && r->body [strlen (r->body) - 1] == '\n');

    health_beat (h);                        /* it recovered */
    r = http_get (port, "GET", "/healthz");
    assert_int_equal (r->status, 200);
    assert_string_equal (r->body, "ok\n");
    health_destroy (&h);
}

/* 64 idle sockets (and more) cannot keep the probes out: past 48 open connections the oldest
 * is closed for each new one. */
static void
test_idle_connections_cannot_starve_probes (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);
    int idle [100];
    for (int i = 0; i < 100; i++)
        idle [i] = connect_to (port);       /* connected, and never a byte sent */
    sleep_ms (200);
    for (int k = 0; k < 3; k++) {
        http_reply_t *r = http_get (port, "GET", "/healthz");
        assert_int_equal (r->status, 200);
        assert_string_equal (r->body, "ok\n");
    }
    for (int i = 0; i < 100; i++)
        close (idle [i]);
    health_destroy (&h);
}

/* A note (plaintext links) shows on /readyz whether ready or not. */
static void
test_readyz_note (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);
    health_set_note (h, "plaintext: links are neither authenticated nor encrypted");
    http_reply_t *r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 503);
    assert_non_null (strstr (r->body, "note: plaintext"));
    health_set_ready (h, 1, NULL);
    r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 200);
    assert_string_equal (r->body, "ready\nnote: plaintext: links are neither authenticated nor encrypted\n");
    health_destroy (&h);
}

static void
test_readyz (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);

    http_reply_t *r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 503);
    assert_string_equal (r->body, "not ready: starting\n");

    health_set_ready (h, 0, "waiting for workers: 200/256 partitions owned");
    r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 503);
    assert_string_equal (r->body, "not ready: waiting for workers: 200/256 partitions owned\n");

    health_set_ready (h, 1, NULL);
    r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 200);
    assert_string_equal (r->body, "ready\n");

    /* a long reason is cut, newlines become spaces, the reply stays one line */
    char why [1000];
    memset (why, 'x', sizeof why - 1);
    why [sizeof why - 1] = '\0';
    why [3] = '\n';
    memcpy (why + HEALTH_WHY_MAX - 2, "\xc3\xa9", 2);    /* é across the cut */
    health_set_ready (h, 0, why);
    r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 503);
    assert_int_equal (strlen (r->body), strlen ("not ready: \n") + HEALTH_WHY_MAX - 2);
    assert_memory_equal (r->body, "not ready: xxx xx", 17);
    assert_null (strchr (r->body, '\xc3'));
    health_destroy (&h);
}

static void
test_metrics_endpoint (void **state)
{
    char err [256];
    metrics_t *m = metrics_new ("ferrule_");
    metrics_add (metrics_counter (m, "requests_total", "Requests.", "op=\"token\""), 7);
    health_t *h = health_new ("127.0.0.1:0", m, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);

    http_reply_t *r = http_get (port, "GET", "/metrics");
    assert_int_equal (r->status, 200);
    assert_string_equal (header (r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    char *text = metrics_render (m);
    assert_string_equal (r->body, text);
    assert_string_equal (r->body, "# HELP ferrule_requests_total Requests.\n"
                                  "# TYPE ferrule_requests_total counter\n"
                                  "ferrule_requests_total{op=\"token\"} 7\n");
    char length [32];
    snprintf (length, sizeof length, "%zu", strlen (text));
    assert_string_equal (header (r, "Content-Length"), length);
    mem_free (text);

    r = http_get (port, "HEAD", "/metrics");     /* headers only */
    assert_int_equal (r->status, 200);
    assert_int_equal (r->body_len, 0);
    r = http_get (port, "GET", "/metrics?name=x");  /* a query string does not matter */
    assert_int_equal (r->status, 200);
    health_destroy (&h);
    metrics_destroy (&m);
}

static void
test_errors (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);

    http_reply_t *r = http_get (port, "GET", "/nope");
    assert_int_equal (r->status, 404);
    assert_string_equal (r->body, "not found\n");
    r = http_get (port, "GET", "/healthz/");
    assert_int_equal (r->status, 404);
    r = http_get (port, "GET", "/metrics");      /* no registry in this process */
    assert_int_equal (r->status, 404);

    r = http_get (port, "DELETE", "/healthz");
    assert_int_equal (r->status, 405);
    assert_string_equal (header (r, "Allow"), "GET, HEAD");
    r = http_raw (port, "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: 5\r\n\r\nhello");
    assert_int_equal (r->status, 405);
    r = http_raw (port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: 5\r\n\r\nhello");
    assert_int_equal (r->status, 413);
    assert_string_equal (r->body, "request body not allowed\n");
    r = http_raw (port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_int_equal (r->status, 413);
    r = http_raw (port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: 0\r\n\r\n");
    assert_int_equal (r->status, 200);

    /* headers past the per-connection memory cap are refused, not buffered */
    size_t big = 40000;
    char *huge = mem_alloc (big + 200);
    int n = snprintf (huge, big + 200, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ");
    memset (huge + n, 'a', big);
    memcpy (huge + n + big, "\r\n\r\n", 5);
    r = http_raw (port, huge);
    assert_true (r->status == 431 || r->status == 413 || r->status == 400);
    mem_free (huge);

    /* the server still answers after all that */
    r = http_get (port, "GET", "/healthz");
    assert_int_equal (r->status, 200);
    health_destroy (&h);
}

/* A client that sends half a request and stalls must not hold up the loop or other clients. */
static void
test_slow_client_blocks_nothing (void **state)
{
    char err [256];
    health_t *h = health_new ("127.0.0.1:0", NULL, err, sizeof err);
    assert_non_null (h);
    int port = health_port (h);
    int slow = connect_to (port);
    const char *partial = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    assert_int_equal (send (slow, partial, strlen (partial), MSG_NOSIGNAL), (ssize_t) strlen (partial));

    struct timespec t0, t1;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        health_beat (h);
        health_set_ready (h, 0, i % 2 ? "waiting for workers" : "database unreachable");
    }
    clock_gettime (CLOCK_MONOTONIC, &t1);
    long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    assert_true (us < 500000);

    http_reply_t *r = http_get (port, "GET", "/readyz");
    assert_int_equal (r->status, 503);
    assert_string_equal (r->body, "not ready: waiting for workers\n");
    close (slow);
    health_destroy (&h);                    /* does not wait for the slow client's timeout */
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_parse_bind),
        cmocka_unit_test (test_new_fails_with_reason),
        cmocka_unit_test (test_healthz),
        cmocka_unit_test (test_readyz),
        cmocka_unit_test (test_readyz_note),
        cmocka_unit_test (test_idle_connections_cannot_starve_probes),
        cmocka_unit_test (test_metrics_endpoint),
        cmocka_unit_test (test_errors),
        cmocka_unit_test (test_slow_client_blocks_nothing),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
