/* test_events_answer.c - what a receiver answers: a 2xx is a delivery whatever follows it. A
 * receiver that answered 200 and then sent a large answer, or held its body back, had each attempt
 * recorded as "no answer" once the timeout passed: the event it had accepted was sent again and
 * again, and failed at the max age. Its answer is now read up to WEBHOOK_ANSWER_MAX and no
 * further, and the status of an answer whose headers ended counts. The receiver here is a plain
 * socket on 127.0.0.1 that answers what the test tells it to. */
#define _GNU_SOURCE             /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"

#define SECRET     "whsec_answer_test_0123456789abcdef"
#define TIMEOUT_MS 1000     /* FERRULE_WEBHOOK_TIMEOUT_MS */
#define WAIT_MS    30000    /* a delivery's generous wait on a loaded machine */

/* What the receiver does once it has read a request. */
typedef enum {
    ANSWER_LARGE,           /* 200 announcing 1 GiB, 8 MiB of it sent, then nothing until closed */
    ANSWER_STALLED,         /* 200 announcing 100 bytes, none sent until closed */
    ANSWER_REDIRECT,        /* 301 to another URL, complete */
} answer_t;

static harness_t *h;
static int listen_fd = -1;
static pthread_t server;
static atomic_int stop_server, mode, requests;

/* Reads one request (headers and the Content-Length body); 0, or -1 when the peer went. */
static int
read_request (int fd)
{
    char buf [16384];
    size_t n = 0;
    char *end = NULL;
    while (!(end = memmem (buf, n, "\r\n\r\n", 4))) {
        if (n == sizeof buf)
            return -1;
        ssize_t got = recv (fd, buf + n, sizeof buf - n, 0);
        if (got <= 0)
            return -1;
        n += (size_t) got;
    }
    size_t head = (size_t) (end + 4 - buf), body = 0;
    const char *cl = memmem (buf, head, "Content-Length: ", 16);
    if (cl)
        body = strtoul (cl + 16, NULL, 10);
    for (size_t have = n - head; have < body; ) {
        ssize_t got = recv (fd, buf, sizeof buf, 0);
        if (got <= 0)
            return -1;
        have += (size_t) got;
    }
    return 0;
}

/* Holds the connection until the worker closes it (or the test ends). */
static void
hold (int fd)
{
    char b [4096];
    while (!atomic_load (&stop_server)) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll (&p, 1, 200) == 1 && recv (fd, b, sizeof b, 0) <= 0)
            return;
    }
}

static void *
serve (void *arg)
{
    (void) arg;
    static char chunk [65536];
    memset (chunk, 'x', sizeof chunk);
    while (!atomic_load (&stop_server)) {
        struct pollfd p = { listen_fd, POLLIN, 0 };
        if (poll (&p, 1, 200) != 1)
            continue;
        int fd = accept (listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        /* one request a connection: the worker may keep it open for the next */
        while (!atomic_load (&stop_server) && read_request (fd) == 0) {
            atomic_fetch_add (&requests, 1);
            const char *head;
            int m = atomic_load (&mode);
            if (m == ANSWER_LARGE)
                head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1073741824\r\n\r\n";
            else if (m == ANSWER_STALLED)
                head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";
            else
                head = "HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:1/elsewhere\r\n"
                       "Content-Length: 0\r\n\r\n";
            if (send (fd, head, strlen (head), MSG_NOSIGNAL) < 0)
                break;
            if (m == ANSWER_REDIRECT)
                continue;
            for (int i = 0; m == ANSWER_LARGE && i < 128; i++)
                if (send (fd, chunk, sizeof chunk, MSG_NOSIGNAL) < 0)
                    break;
            hold (fd);
            break;
        }
        close (fd);
    }
    return NULL;
}

static int
setup (void **state)
{
    (void) state;
    char path [512], secret [512], text [1024], timeout [16];
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    h = harness_new ("events_answer");
    if (!h || (listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
    ||  bind (listen_fd, (struct sockaddr *) &a, sizeof a) != 0 || listen (listen_fd, 64) != 0
    ||  getsockname (listen_fd, (struct sockaddr *) &a, &alen) != 0
    ||  pthread_create (&server, NULL, serve, NULL) != 0)
        return -1;
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, SECRET "\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"rx\", \"url\": \"http://127.0.0.1:%d/hooks\","
              " \"secret_file\": \"%s\"}]}", ntohs (a.sin_port), secret);
    itest_write_file (path, text);
    snprintf (timeout, sizeof timeout, "%d", TIMEOUT_MS);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "200");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "400");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", timeout);
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "5000");
    harness_set_env (h, "FERRULE_WEBHOOK_MAX_AGE_S", "600");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0)
        return -1;
    return harness_wait_ready (h, 1, 20000);
}

static int
teardown (void **state)
{
    (void) state;
    int bad = itest_teardown (&h);
    atomic_store (&stop_server, 1);
    pthread_join (server, NULL);
    close (listen_fd);
    return bad;
}

/* A test event to "rx" marked with tag (its detail), as "webhook test" writes one. */
static void
event (const char *tag)
{
    char sql [256];
    snprintf (sql, sizeof sql, "INSERT INTO events (type, diagnosis, endpoint, detail)"
              " VALUES ('test', 'healthy', 'rx', '%s')", tag);
    assert_int_equal (harness_sql (h, sql), 0);
}

static long long
delivery_int (const char *tag, const char *column)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT coalesce (max (d.%s), -1) FROM event_deliveries d JOIN events e"
              " ON e.seq = d.event_seq WHERE e.detail = '%s'", column, tag);
    return harness_sql_int (h, sql);
}

/* Waits for the event's delivery to be delivered; fails saying how far it got. */
static void
assert_delivered_once (const char *tag)
{
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
              " WHERE e.detail = '%s' AND d.state = 'delivered'", tag);
    long long delivered = itest_wait_sql (h, sql, 1, WAIT_MS);
    long long attempts = delivery_int (tag, "attempts"), status = delivery_int (tag, "last_status");
    print_message ("%s: delivered %lld, attempts %lld, last status %lld, requests %d\n", tag, delivered, attempts,
                   status, atomic_load (&requests));
    if (delivered != 1 || attempts != 1)
        fail_msg ("%s: the receiver answered 200 to each of %lld attempts, and the delivery is %s", tag, attempts,
                  delivered == 1 ? "delivered, after more than one" : "not delivered");
}

/* 200, then a body far larger than anyone reads: delivered at once, its body cut short. */
static void
test_a_2xx_with_a_large_answer_is_delivered (void **state)
{
    (void) state;
    atomic_store (&mode, ANSWER_LARGE);
    event ("large");
    assert_delivered_once ("large");
}

/* 200, then a body that never comes: delivered, at the attempt's timeout. */
static void
test_a_2xx_whose_body_stalls_is_delivered (void **state)
{
    (void) state;
    atomic_store (&mode, ANSWER_STALLED);
    event ("stalled");
    assert_delivered_once ("stalled");
}

/* A redirect is not followed: the delivery's error says so, and what to do. */
static void
test_a_redirect_says_it_is_not_followed (void **state)
{
    (void) state;
    atomic_store (&mode, ANSWER_REDIRECT);
    event ("moved");
    long long answered = itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e"
                                            " ON e.seq = d.event_seq WHERE e.detail = 'moved' AND d.last_status = 301",
                                         1, WAIT_MS);
    assert_int_equal (answered, 1);
    long long said = harness_sql_int (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.detail = 'moved' AND d.last_error LIKE '%redirect%not followed%'"
                                         " AND d.last_error LIKE '%endpoints file%'");
    if (said != 1)
        fail_msg ("the delivery's last error does not say that the 301 is a redirect, which is not followed, nor what "
                  "to do (\"ferrulectl events\" shows it)");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_a_2xx_with_a_large_answer_is_delivered),
        cmocka_unit_test (test_a_2xx_whose_body_stalls_is_delivered),
        cmocka_unit_test (test_a_redirect_says_it_is_not_followed),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
