/* db.h - ferrule-migrate's PostgreSQL sessions: connecting within a deadline, describing the
 * target without its password, and carrying a server error's fields to the report */
#ifndef FERRULE_DB_H
#define FERRULE_DB_H
#include "result.h"
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#define DB_DEFAULT_CONNECT_TIMEOUT_MS 10000

typedef struct {
    char sqlstate [6];          /* "" when the error did not come from the server */
    char message [1024];        /* primary message, one line */
    char detail [1024];
    char hint [512];
    char context [1024];
    int position;               /* 1-based character in the statement, 0 when unknown */
    int lost;                   /* the session is gone: the database is unreachable */
    int waited_out;             /* cancelled by ferrule-migrate: it waited for others past the limit */
} db_error_t;

/* "user@host:port/dbname" for messages, never the password; NULL when url does not parse, or is
 * none of the forms dburl.h allows.
 * The caller frees it with mem_free. */
char *db_describe (const char *url);
/* connect_timeout from url in milliseconds, or DB_DEFAULT_CONNECT_TIMEOUT_MS. */
int db_connect_timeout_ms (const char *url);
/* Opens a session within timeout_ms. NULL with err set (err->lost is 1) on failure. */
PGconn *db_connect (const char *url, int timeout_ms, db_error_t *err) FR_MUSTCHECK;
/* What the server's notices and warnings on conn are about from now on ("009_name", a string
 * that outlives the work; NULL: nothing in particular). db_connect routes them to stderr in the
 * tool's words, naming this, and to the log, instead of libpq's bare "NOTICE:  ..." lines. */
void db_notices_about (const char *what);
/* A notice of ferrule-migrate's own about what it does to the schema, in the same words and to the
 * same places as the server's notices (naming the migration db_notices_about set). */
void db_note (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Fills err from a failed result (res may be NULL: then from the session's last error). */
void db_error_from_result (db_error_t *err, const PGresult *res, PGconn *conn);
/* An error of ferrule-migrate's own, not the server's. */
void db_error_printf (db_error_t *err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* Runs a statement that returns no rows. FR_OK, or FR_DATABASE_UNAVAILABLE / FR_INTERNAL with err set. */
fr_status_t db_exec (PGconn *conn, const char *sql, db_error_t *err) FR_MUSTCHECK;
/* Has the server end the session's statement once its client is gone, even while it waits for a
 * lock (client_connection_check_interval, every DB_CLIENT_CHECK_INTERVAL): otherwise the backend of
 * a killed ferrule-migrate stays queued for the lock, holding what it held. FR_OK, and nothing
 * done, on a server older than PostgreSQL 14, which has no such check. */
#define DB_CLIENT_CHECK_INTERVAL "2s"
fr_status_t db_check_client (PGconn *conn, db_error_t *err) FR_MUSTCHECK;
/* Lifts the time limits the role or the database may give every session (statement_timeout, and
 * transaction_timeout from PostgreSQL 17): a guard meant for the services' queries would cancel a
 * migration that is merely long (an index build), and every retry the same way. up bounds its
 * waits itself (--lock-timeout, --wait-limit). */
fr_status_t db_no_time_limit (PGconn *conn, db_error_t *err) FR_MUSTCHECK;
/* Runs sql as PQexec does, but waits for the answer only until deadline_ms (clock_mono_ms's clock;
 * negative: as long as it takes). NULL when no answer came in time or the session failed, with err
 * set and err->lost: the session is of no further use. The caller PQclears a result. */
PGresult *db_exec_until (PGconn *conn, const char *sql, int64_t deadline_ms, db_error_t *err) FR_MUSTCHECK;
#endif
