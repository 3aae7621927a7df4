/* ledger.h - schema_migrations, the record of the migrations a database has applied, and the
 * advisory lock that lets only one ferrule-migrate write it at a time */
#ifndef FERRULE_LEDGER_H
#define FERRULE_LEDGER_H
#include "catalog.h"
#include "db.h"
#include "watch.h"
#include "result.h"
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* FNV-1a 64 of "ferrule-migrate": the pg_advisory_lock key every ferrule-migrate up takes. */
#define LEDGER_LOCK_KEY "9178084749648434160"

typedef struct {
    int version;
    char *name;
    char *checksum;             /* as recorded: normally sha-256 hex, but anything may be there */
    char *applied_at;           /* UTC, "2024-05-01T12:00:00Z" */
    char *applied_by;           /* hostname:pid of the ferrule-migrate that applied it */
    int execution_ms;           /* -1 when not recorded */
} ledger_row_t;

typedef struct ledger_t ledger_t;

/* Reads the applied migrations, sorted by version. A database without schema_migrations gives an
 * empty ledger. FR_DATABASE_UNAVAILABLE when the session is lost, FR_CONFIGURATION when the table
 * is not ferrule's, FR_INTERNAL otherwise.
 * deadline_ms (clock_mono_ms's clock; negative: none) bounds the read, however close it is by at
 * least LEDGER_MIN_READ_MS: the server gives up on a statement then (statement_timeout, which stays
 * set on the session), so a read that waits for a lock on schema_migrations leaves the lock's
 * queue; FR_TIMEOUT then, err saying a lock may be why. A server that does not answer at all is
 * given LEDGER_ANSWER_MARGIN_MS more, then the session is given up (FR_DATABASE_UNAVAILABLE). */
#define LEDGER_MIN_READ_MS 250
#define LEDGER_ANSWER_MARGIN_MS 1000
fr_status_t ledger_read (PGconn *conn, int64_t deadline_ms, ledger_t **ledger_p, db_error_t *err) FR_MUSTCHECK;
void ledger_destroy (ledger_t **self_p);

/* 1 when schema_migrations existed when the ledger was read. */
int ledger_exists (const ledger_t *self);
size_t ledger_size (const ledger_t *self);
const ledger_row_t *ledger_at (const ledger_t *self, size_t index);
/* NULL when the version was not applied. */
const ledger_row_t *ledger_find (const ledger_t *self, int version);
/* The highest applied version, 0 when none. */
int ledger_highest (const ledger_t *self);

/* The session that holds the migration lock, as a look at pg_locks saw it. */
typedef struct {
    int pid;                    /* 0 when no look could tell (it let go meanwhile) */
    int migrate;                /* its application_name is ferrule-migrate's */
    char who [400];             /* "pid N (user "u", application "a", host), state, its transaction open for T" */
} ledger_holder_t;

/* Takes the advisory lock on this session. When another session holds it, calls on_wait (may be
 * NULL) with that session, and again whenever another one holds it, and tries again every 200 ms,
 * as long as it takes (or until a stop signal, stop.h), holding no snapshot meanwhile. */
fr_status_t ledger_lock (PGconn *conn, void (*on_wait) (const ledger_holder_t *holder), db_error_t *err) FR_MUSTCHECK;
fr_status_t ledger_unlock (PGconn *conn, db_error_t *err) FR_MUSTCHECK;
/* Creates schema_migrations when it is missing. Call with the lock held. */
fr_status_t ledger_create (PGconn *conn, db_error_t *err) FR_MUSTCHECK;
/* How a migration's steps wait for their locks. A step that waits for a lock on a table makes
 * every later reader and writer of that table queue behind it, so each step but a concurrent
 * index build (whose lock blocks neither) gives up on a lock after lock_timeout_ms, is rolled
 * back, and is tried again after a pause (1 s, doubling up to 10 s), each time said in a notice
 * naming whom it waited for, until it has been held up wait_limit_s in all (0: as long as it
 * takes). A step held up by an autovacuum worker is tried again with a lock timeout past the
 * server's deadlock_timeout, whose deadlock check is what cancels the autovacuum.
 * lock_timeout_ms 0: no lock timeout, a step waits as long as the watch lets it. */
#define LEDGER_DEFAULT_LOCK_TIMEOUT_MS 200
#define LEDGER_MAX_LOCK_TIMEOUT_MS 600000
typedef struct {
    int lock_timeout_ms;
    double wait_limit_s;
} ledger_locking_t;

/* Runs the migration and records it in one transaction; on failure rolls back. Its statements run
 * under watch (watch.h): said when they wait for other sessions, cancelled past its wait limit
 * (err->waited_out) or on a stop signal (stop.h; err->detail says what the cancel left). elapsed_ms is the
 * time the migration's SQL took. A server error from the migration itself keeps its position, which
 * counts characters from the start of the file. FR_CONFIGURATION when the file ended the transaction
 * itself: then its changes may be committed without their row.
 * A migration marked no-transaction (catalog_entry_t) runs statement by statement, each committed
 * as it ends, and is recorded after the last: on failure the *committed statements before the
 * failed one stay applied, and an index a failed CREATE INDEX CONCURRENTLY IF NOT EXISTS
 * left invalid is dropped before that statement runs again.
 * A step refused its lock (locking, above) is tried again; past the wait limit err->waited_out is
 * set and err says whom it waited for. */
fr_status_t ledger_apply (PGconn *conn, watch_t *watch, const catalog_entry_t *migration, const char *applied_by,
                          const ledger_locking_t *locking, long *elapsed_ms, int *committed,
                          db_error_t *err) FR_MUSTCHECK;
#endif
