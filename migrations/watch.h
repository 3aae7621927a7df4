/* watch.h - a migration's statement run while ferrule-migrate watches what it waits for.
 *
 * A migration on a live database can wait without end for other sessions: ALTER TABLE for their
 * locks (and every writer of the table queues behind it meanwhile), CREATE INDEX CONCURRENTLY for
 * every transaction that wrote to the table or holds an old snapshot, a session left "idle in
 * transaction" among them. The server says none of this to the client that waits. So while a
 * statement runs longer than a second, a second session asks the server once a second which
 * sessions hold it up (pg_blocking_pids), how many sessions wait behind it, and how far an index
 * build has got; up says so in a notice, and gives up once it has waited for others longer than
 * the wait limit (the statement cancelled: a transaction rolled back, an index build left invalid,
 * which the next up drops and builds again). A look that fails is said once; while looks fail,
 * the statement counts as waiting for the sessions the last look saw, so the limit still applies.
 * On a stop signal (stop.h) nothing more is looked at, and the statement is cancelled again
 * should the signal handler's cancel have missed it. */
#ifndef FERRULE_WATCH_H
#define FERRULE_WATCH_H
#include <libpq-fe.h>
#include <stddef.h>

#define WATCH_MAX_LIMIT_S 86400.0

typedef struct watch watch_t;

/* url: where the second session connects (the migration's own database), within
 * connect_timeout_ms. wait_limit_s: 0 for no limit. */
watch_t *watch_new (const char *url, int connect_timeout_ms, double wait_limit_s);
void watch_destroy (watch_t **self_p);
/* Looks at a statement first after ms (50 to 1000; 1000 unless set): a statement that gives up on
 * a lock sooner than a second (lock_timeout) is looked at before, so that whom it waited for is
 * known. */
void watch_first_look (watch_t *self, int ms);
/* Whom the statement of the last watch_exec waited for, as the last look that saw it wait named
 * the oldest of them ("pid 123 (user ...), idle in transaction, ..."), or "" when no look did. */
const char *watch_blocker (const watch_t *self);
/* 1 when that one is an autovacuum worker (pg_stat_activity.backend_type; 0 when this role may
 * not see it). */
int watch_blocker_autovacuum (const watch_t *self);
/* s seconds as a notice says them: "12 s", "3 min 4 s", "2 h 5 min". */
void watch_duration (char *out, size_t size, long long s);
/* Runs sql on conn as PQexec does (the last result; NULL when it could not be sent), watching as
 * above; what names the statement in the notices ("the statement at line 3"). When it gave up,
 * the result is the cancel's error and gave_up (size bytes) says why, in a sentence of its own
 * that names whom it waited for; else gave_up is "". */
PGresult *watch_exec (watch_t *self, PGconn *conn, const char *sql, const char *what, char *gave_up, size_t size);
#endif
