/* pgwait.c - waiting on a libpq connection until a deadline or a stop, whichever comes first */
#include "pgwait.h"
#include "clock.h"
#include <errno.h>
#include <poll.h>

pgwait_t
pgwait_socket (PGconn *conn, short events, int64_t deadline_ms, int stop_fd)
{
    int fd = PQsocket (conn);
    if (fd < 0)
        return PGWAIT_FAILED;
    for (;;) {
        int wait = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - clock_mono_ms ();
            if (left <= 0)
                return PGWAIT_TIMED_OUT;
            wait = left > 3600000 ? 3600000 : (int) left;
        }
        struct pollfd p [2] = { { .fd = fd, .events = events }, { .fd = stop_fd, .events = POLLIN } };
        int rc = poll (p, stop_fd >= 0 ? 2 : 1, wait);
        if (rc > 0 && stop_fd >= 0 && p [1].revents)
            return PGWAIT_STOPPED;   /* before the socket: a stopping owner wants nothing more */
        if (rc > 0)
            return PGWAIT_READY;
        if (rc < 0 && errno != EINTR)
            return PGWAIT_FAILED;
    }
}

pgwait_t
pgwait_connect (PGconn *conn, int64_t deadline_ms, int stop_fd)
{
    if (!conn)
        return PGWAIT_FAILED;
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    while (PQstatus (conn) != CONNECTION_BAD && ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        pgwait_t w = pgwait_socket (conn, ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_ms, stop_fd);
        if (w != PGWAIT_READY)
            return w;
        ps = PQconnectPoll (conn);
    }
    return PQstatus (conn) == CONNECTION_OK ? PGWAIT_READY : PGWAIT_FAILED;
}

static int
pgwait_failed (const PGresult *res)
{
    ExecStatusType rs = PQresultStatus (res);
    return rs == PGRES_FATAL_ERROR || rs == PGRES_BAD_RESPONSE;
}

PGresult *
pgwait_result (PGconn *conn, int64_t deadline_ms, int stop_fd, pgwait_t *outcome)
{
    PGresult *keep = NULL, *res;
    pgwait_t w = PGWAIT_READY;
    int f;
    while ((f = PQflush (conn)) == 1) {
        w = pgwait_socket (conn, POLLOUT | POLLIN, deadline_ms, stop_fd);
        if (w != PGWAIT_READY || !PQconsumeInput (conn))
            goto fail;
    }
    if (f < 0)
        goto fail;
    for (;;) {
        while (PQisBusy (conn)) {
            w = pgwait_socket (conn, POLLIN, deadline_ms, stop_fd);
            if (w != PGWAIT_READY || !PQconsumeInput (conn))
                goto fail;
        }
        if (!(res = PQgetResult (conn)))
            break;
        if (keep && pgwait_failed (keep))
            PQclear (res);           /* the first failure is the one to report */
        else {
            PQclear (keep);
            keep = res;
        }
    }
    if (outcome)
        *outcome = PGWAIT_READY;
    return keep;
fail:
    PQclear (keep);
    if (outcome)
        *outcome = w == PGWAIT_READY ? PGWAIT_FAILED : w;
    return NULL;
}
