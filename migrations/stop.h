/* stop.h - SIGINT and SIGTERM during "ferrule-migrate up" (Ctrl-C; Kubernetes ending the Job's
 * pod): the statement up is running is cancelled on the server at once, and up winds down (rolls
 * back, releases the migration lock, says what was left) and exits 128 + the signal's number.
 * Without the cancel, a statement waiting for a lock would stay on the server: PostgreSQL does not
 * notice a client gone while its backend waits for a lock, so the backend would stay queued (every
 * writer of the table behind it) and keep the migration lock (the next up waiting for it for
 * ever). A second signal ends the process at once. */
#ifndef FERRULE_STOP_H
#define FERRULE_STOP_H
#include <libpq-fe.h>

/* Catches SIGINT and SIGTERM from now on, also when they were ignored (a background job of a
 * script ignores SIGINT, and would otherwise leave its statement behind just the same). */
void stop_catch (void);
/* The session whose running statement a stop cancels; NULL for none. Call with NULL before closing
 * that session. */
void stop_cancels (PGconn *conn);
/* 0, or the signal that asked for the stop. */
int stop_requested (void);
/* "SIGINT", "SIGTERM" (the signal stop_requested gives), for messages. */
const char *stop_name (void);
#endif
