/* pgwait.h - waiting on a libpq connection for as long as its caller allows and no longer: until
 * a deadline, and until a stop descriptor becomes readable. libpq's own blocking calls
 * (PQconnectdb, PQexec) wait as long as the server takes, and a stalled server (stopped, or its
 * disk frozen) takes for ever: its statement_timeout cannot fire, and its kernel still answers
 * TCP keepalives. */
#ifndef FERRULE_PGWAIT_H
#define FERRULE_PGWAIT_H
#include <libpq-fe.h>
#include <stdint.h>

typedef enum {
    PGWAIT_READY = 1,                /* what was waited for happened */
    PGWAIT_TIMED_OUT = 0,            /* the deadline passed first */
    PGWAIT_FAILED = -1,              /* the connection failed (libpq's message says why) */
    PGWAIT_STOPPED = -2,             /* stop_fd became readable first */
} pgwait_t;

/* deadline_ms is on clock_mono_ms's clock; a negative one never passes. stop_fd < 0: none.
 * stop_fd is only polled, never read: it is meant to stay readable once its owner is stopping. */

/* Waits until conn's socket is ready for events (POLLIN, POLLOUT). */
pgwait_t pgwait_socket (PGconn *conn, short events, int64_t deadline_ms, int stop_fd);

/* Drives a connection started with PQconnectStart(Params) to its end: PGWAIT_READY when it is
 * made (CONNECTION_OK). conn may be NULL (out of memory): PGWAIT_FAILED. */
pgwait_t pgwait_connect (PGconn *conn, int64_t deadline_ms, int stop_fd);

/* After a PQsend* call: sends what libpq holds and reads every result, returning the last one, or
 * the first failed one when one failed (caller PQclears). NULL when the wait did not end with
 * the server's answers; *outcome (may be NULL) says why. The connection is of no further use
 * after a NULL: its state is mid-answer. */
PGresult *pgwait_result (PGconn *conn, int64_t deadline_ms, int stop_fd, pgwait_t *outcome);
#endif
