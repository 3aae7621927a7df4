/* stop.c - SIGINT and SIGTERM during up: cancel the running statement, then wind down (see stop.h) */
#include "stop.h"
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t s_signal;          /* the first stop signal; 0 before one */
static PGcancel *volatile s_cancel;             /* swapped only with the stop signals blocked */

/* Sets the flag the code winding down looks at and, as psql's handler does, sends the cancel
 * itself: a statement in PQexec would otherwise run on until it ends, and nothing would see the
 * flag before then. PQcancel is safe in a signal handler (libpq's documentation says so). */
static void
stop_on_signal (int sig)
{
    static const char at_once [] = "ferrule-migrate: error: stopped at once by a second signal\n";
    char errbuf [256];
    int saved_errno = errno;
    if (s_signal) {
        if (write (STDERR_FILENO, at_once, sizeof at_once - 1) < 0) {
            /* nothing to be done about it in a handler */
        }
        _exit (128 + sig);
    }
    s_signal = sig;
    if (s_cancel)
        (void) PQcancel (s_cancel, errbuf, sizeof errbuf);
    errno = saved_errno;
}

void
stop_catch (void)
{
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = stop_on_signal;
    sigemptyset (&sa.sa_mask);
    /* SA_NODEFER: a second signal must get through while the first one's cancel still waits for a
     * server that does not answer */
    sa.sa_flags = SA_RESTART | SA_NODEFER;
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
}

void
stop_cancels (PGconn *conn)
{
    sigset_t block, saved;
    PGcancel *next = conn ? PQgetCancel (conn) : NULL;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    sigprocmask (SIG_BLOCK, &block, &saved);
    PGcancel *old = s_cancel;
    s_cancel = next;
    sigprocmask (SIG_SETMASK, &saved, NULL);
    if (old)
        PQfreeCancel (old);
}

int
stop_requested (void)
{
    return s_signal;
}

const char *
stop_name (void)
{
    switch (s_signal) {
    case SIGINT:  return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default:      return "a signal";
    }
}
