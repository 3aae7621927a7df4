/* test_pgwait.c - waiting on a libpq connection ends at the deadline, at the stop, or when the
 * connection fails, never later: against a silent server on 127.0.0.1 (a socket that listens and
 * never answers, as a stalled PostgreSQL does) and a port where nothing listens. The waits for
 * results are exercised against a real server by the integration tests (it_events_outage's
 * stall, and every session's start-up). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "clock.h"
#include "pgwait.h"

/* A listening socket that never accepts: the kernel completes the handshake, nobody answers the
 * startup packet. Returns the socket; *port gets its port. */
static int
silent_server (int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    inet_pton (AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal (bind (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal (listen (fd, 8), 0);
    assert_int_equal (getsockname (fd, (struct sockaddr *) &sa, &len), 0);
    *port = ntohs (sa.sin_port);
    return fd;
}

static PGconn *
start (int port)
{
    char conninfo [200];
    /* libpq's own connect_timeout far away: what ends the wait must be pgwait's */
    snprintf (conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=600 "
              "sslmode=disable gssencmode=disable", port);
    PGconn *conn = PQconnectStart (conninfo);
    assert_non_null (conn);
    assert_int_not_equal (PQstatus (conn), CONNECTION_BAD);
    return conn;
}

static void
test_deadline_ends_the_wait (void **state)
{
    int port, fd = silent_server (&port);
    PGconn *conn = start (port);
    int64_t t0 = clock_mono_ms ();
    assert_int_equal (pgwait_connect (conn, t0 + 200, -1), PGWAIT_TIMED_OUT);
    int64_t took = clock_mono_ms () - t0;
    assert_true (took >= 200);
    assert_true (took < 60000);
    /* and a deadline already passed ends it at once */
    assert_int_equal (pgwait_socket (conn, POLLIN, t0, -1), PGWAIT_TIMED_OUT);
    PQfinish (conn);
    close (fd);
}

static void
test_stop_already_signalled (void **state)
{
    int port, fd = silent_server (&port);
    int stop = eventfd (0, EFD_CLOEXEC);
    uint64_t one = 1;
    assert_int_equal (write (stop, &one, sizeof one), (ssize_t) sizeof one);
    PGconn *conn = start (port);
    assert_int_equal (pgwait_connect (conn, -1, stop), PGWAIT_STOPPED);
    /* polled, never read: it stays signalled for every later wait */
    assert_int_equal (pgwait_socket (conn, POLLIN, -1, stop), PGWAIT_STOPPED);
    PQfinish (conn);
    close (stop);
    close (fd);
}

static void *
signal_later (void *arg)
{
    uint64_t one = 1;
    usleep (100000);
    ssize_t r = write (*(int *) arg, &one, sizeof one);
    (void) r;
    return NULL;
}

static void
test_stop_ends_a_wait_without_deadline (void **state)
{
    int port, fd = silent_server (&port);
    int stop = eventfd (0, EFD_CLOEXEC);
    PGconn *conn = start (port);
    pthread_t t;
    assert_int_equal (pthread_create (&t, NULL, signal_later, &stop), 0);
    assert_int_equal (pgwait_connect (conn, -1, stop), PGWAIT_STOPPED);
    pthread_join (t, NULL);
    PQfinish (conn);
    close (stop);
    close (fd);
}

static void
test_refused_connection_fails (void **state)
{
    int port, fd = silent_server (&port);
    close (fd);                          /* nothing listens there now */
    char conninfo [200];
    snprintf (conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable gssencmode=disable",
              port);
    PGconn *conn = PQconnectStart (conninfo);
    assert_non_null (conn);
    assert_int_equal (pgwait_connect (conn, clock_mono_ms () + 10000, -1), PGWAIT_FAILED);
    assert_int_equal (PQstatus (conn), CONNECTION_BAD);
    PQfinish (conn);
    assert_int_equal (pgwait_connect (NULL, -1, -1), PGWAIT_FAILED);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_deadline_ends_the_wait),
        cmocka_unit_test (test_stop_already_signalled),
        cmocka_unit_test (test_stop_ends_a_wait_without_deadline),
        cmocka_unit_test (test_refused_connection_fails),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
