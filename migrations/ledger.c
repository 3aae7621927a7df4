/* ledger.c - schema_migrations and the migration lock */
#include "ledger.h"
#include "clock.h"
#include "mem.h"
#include "sqlsplit.h"
#include "stop.h"
#include "text.h"
#include "watch.h"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEDGER_LOCK_POLL_MS 200   /* between tries of a busy migration lock */
#define LEDGER_RETRY_FIRST_MS 1000 /* the pause after a step's lock was first refused */
#define LEDGER_RETRY_MAX_MS 10000  /* doubled each time up to this */
#define LEDGER_RETRY_SLICE_MS 100  /* a pause looks for a stop signal this often */
#define LEDGER_AUTOVACUUM_MARGIN_MS 500 /* a try held up by an autovacuum waits this much past deadlock_timeout */
#define LEDGER_AUTOVACUUM_MAX_MS 10000  /* but never longer than this */

struct ledger_t {
    ledger_row_t *rows;
    size_t size;
    int exists;
};

static fr_status_t
ledger_failed (db_error_t *err, const PGresult *res, PGconn *conn)
{
    db_error_from_result (err, res, conn);
    return err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
}

void
ledger_destroy (ledger_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ledger_t *self = *self_p;
    for (size_t i = 0; i < self->size; i++) {
        mem_free (self->rows [i].name);
        mem_free (self->rows [i].checksum);
        mem_free (self->rows [i].applied_at);
        mem_free (self->rows [i].applied_by);
    }
    mem_free (self->rows);
    mem_free (self);
    *self_p = NULL;
}

/* An int column; -1 for NULL or anything that is not a non-negative int. */
static int
ledger_int (const PGresult *res, int row, int col)
{
    if (PQgetisnull (res, row, col))
        return -1;
    char *end;
    errno = 0;
    long value = strtol (PQgetvalue (res, row, col), &end, 10);
    if (errno || *end || value < 0 || value > 2147483647L)
        return -1;
    return (int) value;
}

fr_status_t
ledger_read (PGconn *conn, int64_t deadline_ms, ledger_t **ledger_p, db_error_t *err)
{
    ledger_t *self = mem_alloc (sizeof *self);
    PGresult *res = NULL;
    fr_status_t st = FR_OK;
    int64_t answer_by = -1;

    if (deadline_ms >= 0) {
        char set [64];
        int64_t left = deadline_ms - clock_mono_ms ();
        if (left < LEDGER_MIN_READ_MS)
            left = LEDGER_MIN_READ_MS;
        answer_by = clock_mono_ms () + left + LEDGER_ANSWER_MARGIN_MS;
        snprintf (set, sizeof set, "SET statement_timeout = %lld", (long long) left);
        res = db_exec_until (conn, set, answer_by, err);
        if (!res) {
            st = FR_DATABASE_UNAVAILABLE;
            goto out;
        }
        if (PQresultStatus (res) != PGRES_COMMAND_OK) {
            st = ledger_failed (err, res, conn);
            goto out;
        }
        PQclear (res);
    }
    res = db_exec_until (conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", answer_by, err);
    if (!res) {
        st = FR_DATABASE_UNAVAILABLE;
        goto out;
    }
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = ledger_failed (err, res, conn);
        goto out;
    }
    self->exists = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    PQclear (res);
    res = NULL;
    if (!self->exists)
        goto out;

    res = db_exec_until (conn,
        "SELECT version, name, checksum,"
        "       to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "       applied_by, execution_ms"
        "  FROM schema_migrations ORDER BY version", answer_by, err);
    if (!res) {
        st = FR_DATABASE_UNAVAILABLE;
        goto out;
    }
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        st = ledger_failed (err, res, conn);
        if (deadline_ms >= 0 && strcmp (err->sqlstate, "57014") == 0) {
            /* the statement_timeout set above: what a read waits that long for is a lock */
            db_error_printf (err, "table \"schema_migrations\" could not be read in time: another session may hold "
                             "a lock on it");
            snprintf (err->hint, sizeof err->hint, "find that session in pg_locks (relation "
                      "'schema_migrations'::regclass) and end its transaction");
            st = FR_TIMEOUT;
        }
        if (strcmp (err->sqlstate, "42703") == 0) {
            /* a table of the same name from another migration tool */
            static const char prefix [] = "table \"schema_migrations\" exists but was not created by ferrule-migrate: ";
            size_t plen = sizeof prefix - 1;
            size_t mlen = strnlen (err->message, sizeof err->message - 1 - plen);
            memmove (err->message + plen, err->message, mlen);
            memcpy (err->message, prefix, plen);
            err->message [plen + mlen] = '\0';
            snprintf (err->hint, sizeof err->hint,
                      "give ferrule a database of its own, or a search_path whose first schema has no such table");
            st = FR_CONFIGURATION;
        }
        goto out;
    }
    int n = PQntuples (res);
    self->rows = mem_alloc ((size_t) (n ? n : 1) * sizeof *self->rows);
    for (int i = 0; i < n; i++) {
        ledger_row_t *row = &self->rows [self->size++];
        row->version = ledger_int (res, i, 0);
        row->name = mem_strdup (PQgetvalue (res, i, 1));
        row->checksum = mem_strdup (PQgetvalue (res, i, 2));
        row->applied_at = mem_strdup (PQgetvalue (res, i, 3));
        row->applied_by = mem_strdup (PQgetvalue (res, i, 4));
        row->execution_ms = ledger_int (res, i, 5);
    }
out:
    PQclear (res);
    if (st != FR_OK)
        ledger_destroy (&self);
    *ledger_p = self;
    return st;
}

int
ledger_exists (const ledger_t *self)
{
    return self->exists;
}

size_t
ledger_size (const ledger_t *self)
{
    return self->size;
}

const ledger_row_t *
ledger_at (const ledger_t *self, size_t index)
{
    return index < self->size ? &self->rows [index] : NULL;
}

const ledger_row_t *
ledger_find (const ledger_t *self, int version)
{
    for (size_t i = 0; i < self->size; i++)
        if (self->rows [i].version == version)
            return &self->rows [i];
    return NULL;
}

int
ledger_highest (const ledger_t *self)
{
    int highest = 0;
    for (size_t i = 0; i < self->size; i++)
        if (self->rows [i].version > highest)
            highest = self->rows [i].version;
    return highest;
}

/* The session holding the migration lock (a bigint advisory lock: its high half is classid, its
 * low half objid), and what pg_stat_activity shows this role of it. */
#define LEDGER_HOLDER_SQL \
    "SELECT l.pid, a.usename, a.application_name, host (a.client_addr), a.state," \
    "       extract (epoch FROM now () - coalesce (a.xact_start, a.backend_start))::bigint" \
    "  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid" \
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1" \
    "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database ())" \
    "   AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid LIMIT 1"
#define LEDGER_HOLDER_LOOK_TRIES 25    /* tries between two looks at the holder: 5 s */

/* A column as printable text, cut: names and addresses are whatever the other session set. */
static const char *
ledger_text (char *out, size_t size, const PGresult *res, int col)
{
    return PQgetisnull (res, 0, col) ? NULL : text_printable (out, size, PQgetvalue (res, 0, col), (size_t) -1, 60);
}

/* Looks at who holds the migration lock; holder->pid 0 when no look could tell. */
static void
ledger_lock_holder (PGconn *conn, ledger_holder_t *holder)
{
    const char *params [] = { LEDGER_LOCK_KEY };
    char user [80], app [80], host [80], state [80], age [40];
    memset (holder, 0, sizeof *holder);
    PGresult *res = PQexecParams (conn, LEDGER_HOLDER_SQL, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        goto out;                           /* let go meanwhile, or no look: the next try tells */
    holder->pid = (int) strtol (PQgetvalue (res, 0, 0), NULL, 10);
    const char *u = ledger_text (user, sizeof user, res, 1);
    const char *a = ledger_text (app, sizeof app, res, 2);
    const char *h = ledger_text (host, sizeof host, res, 3);
    const char *s = ledger_text (state, sizeof state, res, 4);
    holder->migrate = a && strcmp (a, "ferrule-migrate") == 0;
    int n = snprintf (holder->who, sizeof holder->who, "pid %d (user \"%s\"%s%s%s, %s)", holder->pid, u ? u : "?",
                      a && *a ? ", application \"" : "", a && *a ? a : "", a && *a ? "\"" : "",
                      h ? h : "local socket");
    if (n <= 0 || (size_t) n >= sizeof holder->who)
        goto out;
    /* NULL when this role may not see that session's state (neither superuser nor pg_read_all_stats) */
    if (s && !PQgetisnull (res, 0, 5)) {
        watch_duration (age, sizeof age, strtoll (PQgetvalue (res, 0, 5), NULL, 10));
        snprintf (holder->who + n, sizeof holder->who - (size_t) n, ", %s, its transaction open for %s", s, age);
    }
    else
        snprintf (holder->who + n, sizeof holder->who - (size_t) n, ", its state hidden from this role");
out:
    PQclear (res);
}

fr_status_t
ledger_lock (PGconn *conn, void (*on_wait) (const ledger_holder_t *holder), db_error_t *err)
{
    const char *params [] = { LEDGER_LOCK_KEY };
    fr_status_t st = FR_OK;
    PGresult *res = NULL;
    int said_pid = -1;
    /* tried again and again rather than waited for in pg_advisory_lock: a statement that waits
     * holds a snapshot, and the CREATE INDEX CONCURRENTLY of the run that holds the lock waits for
     * every snapshot older than its own: the two would wait on each other until the server's
     * deadlock check ended one of them */
    for (int tries = 0;; tries++) {
        if (stop_requested ()) {
            db_error_printf (err, "stopped by %s while waiting for the migration lock", stop_name ());
            st = FR_INTERNAL;
            break;
        }
        res = PQexecParams (conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
            st = ledger_failed (err, res, conn);
            break;
        }
        if (strcmp (PQgetvalue (res, 0, 0), "t") == 0)
            break;
        if (on_wait && tries % LEDGER_HOLDER_LOOK_TRIES == 0) {
            /* said again only when another session holds it: a queue of ups, one after another */
            ledger_holder_t holder;
            ledger_lock_holder (conn, &holder);
            if (said_pid < 0 || (holder.pid && holder.pid != said_pid)) {
                on_wait (&holder);
                said_pid = holder.pid;
            }
        }
        PQclear (res);
        res = NULL;
        struct timespec pause = { 0, LEDGER_LOCK_POLL_MS * 1000000L };
        while (nanosleep (&pause, &pause) != 0 && errno == EINTR)
            ;
    }
    PQclear (res);
    return st;
}

fr_status_t
ledger_unlock (PGconn *conn, db_error_t *err)
{
    const char *params [] = { LEDGER_LOCK_KEY };
    fr_status_t st = FR_OK;
    PGresult *res = PQexecParams (conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        st = ledger_failed (err, res, conn);
    PQclear (res);
    return st;
}

fr_status_t
ledger_create (PGconn *conn, db_error_t *err)
{
    /* look first: CREATE TABLE IF NOT EXISTS would send a notice on every run */
    PGresult *res = PQexec (conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    fr_status_t st = FR_OK;
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = ledger_failed (err, res, conn);
        goto out;
    }
    if (strcmp (PQgetvalue (res, 0, 0), "t") == 0)
        goto out;
    st = db_exec (conn,
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "    version      integer PRIMARY KEY,"
        "    name         text NOT NULL,"
        "    checksum     text NOT NULL,"          /* sha-256 hex of the file's bytes */
        "    applied_at   timestamptz NOT NULL DEFAULT now(),"
        "    applied_by   text NOT NULL,"          /* hostname:pid */
        "    execution_ms integer"
        ")", err);
out:
    PQclear (res);
    return st;
}


/* FR_OK when a migration's statements succeeded; else err says why: the server's error, or a COPY
 * from or to the client, which the tool cannot feed (the next command on the session, or closing
 * it, ends the COPY and rolls back what it was part of). */
static fr_status_t
ledger_ran (const PGresult *res, PGconn *conn, db_error_t *err)
{
    ExecStatusType rs = PQresultStatus (res);
    if (rs == PGRES_COPY_IN || rs == PGRES_COPY_OUT || rs == PGRES_COPY_BOTH) {
        db_error_printf (err, "it runs COPY with STDIN or STDOUT, which ferrule-migrate cannot feed");
        snprintf (err->hint, sizeof err->hint, "load data with INSERT statements instead");
        return FR_INTERNAL;
    }
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK && rs != PGRES_EMPTY_QUERY)
        return ledger_failed (err, res, conn);
    return FR_OK;
}

/* Records the migration in schema_migrations, in the session's transaction if one is open. */
static fr_status_t
ledger_record (PGconn *conn, const catalog_entry_t *migration, const char *applied_by, long elapsed_ms,
               db_error_t *err)
{
    char version [16], ms [24];
    snprintf (version, sizeof version, "%d", migration->version);
    snprintf (ms, sizeof ms, "%ld", elapsed_ms);
    const char *params [] = { version, migration->name, migration->checksum, applied_by, ms };
    PGresult *res = PQexecParams (conn,
        "INSERT INTO schema_migrations (version, name, checksum, applied_by, execution_ms)"
        " VALUES ($1::integer, $2, $3, $4, $5::integer)", 5, NULL, params, NULL, NULL, 0);
    fr_status_t st = PQresultStatus (res) == PGRES_COMMAND_OK ? FR_OK : ledger_failed (err, res, conn);
    PQclear (res);
    return st;
}

/* Characters (not bytes: the server counts characters) in sql's first off bytes. */
static int
ledger_chars (const char *sql, size_t off)
{
    int chars = 0;
    for (size_t i = 0; i < off; i++)
        if (((unsigned char) sql [i] & 0xc0) != 0x80)
            chars++;
    return chars;
}

/* Skips blanks, then the word w (any case) followed by a blank; NULL when it is not there. */
static const char *
ledger_word (const char *p, const char *w)
{
    while (isspace ((unsigned char) *p))
        p++;
    size_t n = strlen (w);
    if (strncasecmp (p, w, n) != 0 || !isspace ((unsigned char) p [n]))
        return NULL;
    return p + n;
}

/* The 1-based line of the file at byte off. */
static int
ledger_line (const char *sql, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off; i++)
        if (sql [i] == '\n')
            line++;
    return line;
}

/* The index a statement "CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name" builds, into name
 * (an unquoted, maybe schema-qualified name); 0 for any other statement. */
static int
ledger_concurrent_index (const char *stmt, char *name, size_t size)
{
    const char *p = ledger_word (stmt, "CREATE");
    if (p && ledger_word (p, "UNIQUE"))
        p = ledger_word (p, "UNIQUE");
    if (!p || !(p = ledger_word (p, "INDEX")) || !(p = ledger_word (p, "CONCURRENTLY")) || !(p = ledger_word (p, "IF"))
        || !(p = ledger_word (p, "NOT")) || !(p = ledger_word (p, "EXISTS")))
        return 0;
    while (isspace ((unsigned char) *p))
        p++;
    size_t n = 0;
    while (p [n] && (isalnum ((unsigned char) p [n]) || p [n] == '_' || p [n] == '.' || p [n] == '$'))
        n++;
    if (n == 0 || n >= size || !isspace ((unsigned char) p [n]))
        return 0;
    memcpy (name, p, n);
    name [n] = '\0';
    return 1;
}

/* What cancelling stmt left behind, into err's detail. */
static void
ledger_cancelled_detail (db_error_t *err, int in_transaction, const char *stmt)
{
    char name [200];
    if (in_transaction)
        snprintf (err->detail, sizeof err->detail, "the statement was cancelled and the migration's transaction "
                  "rolled back");
    else if (ledger_concurrent_index (stmt, name, sizeof name))
        snprintf (err->detail, sizeof err->detail, "the statement was cancelled; index \"%s\", which it was building, "
                  "may be left invalid, and the next up drops it and builds it again", name);
    else
        snprintf (err->detail, sizeof err->detail, "the statement was cancelled");
}

/* A statement the watch cancelled after it waited for other sessions past the limit: the error
 * says whom it waited for and what to do, not "canceling statement due to user request". */
static void
ledger_waited_out (db_error_t *err, const char *gave_up, int in_transaction, const char *stmt)
{
    db_error_printf (err, "%s", gave_up);
    err->waited_out = 1;
    ledger_cancelled_detail (err, in_transaction, stmt);
    snprintf (err->hint, sizeof err->hint, "end that session's transaction, or terminate it (SELECT "
              "pg_terminate_backend (pid)), then run ferrule-migrate up again; --wait-limit=0 waits as long as it takes");
}

/* A statement that failed once a stop signal came: the handler's cancel, most likely (stop.h). */
static void
ledger_stopped (db_error_t *err, int in_transaction, const char *stmt)
{
    db_error_printf (err, "stopped by %s", stop_name ());
    ledger_cancelled_detail (err, in_transaction, stmt);
}

/* A CREATE INDEX CONCURRENTLY that fails (a duplicate for a unique index, a cancel, a lost
 * session) leaves its index behind, marked invalid: never used, yet kept up to date by every write.
 * "IF NOT EXISTS" would then skip it for good, so before building an index that exists invalid,
 * drop it. The migration lock keeps any other ferrule-migrate from building it meanwhile. */
static fr_status_t
ledger_drop_invalid_index (PGconn *conn, watch_t *watch, const char *stmt, int line, db_error_t *err)
{
    char name [200], drop [260], what [300], gave_up [600];
    if (!ledger_concurrent_index (stmt, name, sizeof name))
        return FR_OK;
    const char *params [] = { name };
    PGresult *res = PQexecParams (conn,
        "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass ($1)", 1, NULL, params, NULL, NULL, 0);
    fr_status_t st = FR_OK;
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        st = ledger_failed (err, res, conn);
        goto out;
    }
    if (PQntuples (res) == 1 && strcmp (PQgetvalue (res, 0, 0), "t") == 0) {
        db_note ("dropping index \"%s\", left invalid by a build that did not finish, to build it again", name);
        snprintf (drop, sizeof drop, "DROP INDEX CONCURRENTLY IF EXISTS %s", name);
        /* it waits for the same transactions a concurrent build does */
        snprintf (what, sizeof what, "the drop of index \"%s\" before line %d", name, line);
        PQclear (res);
        res = watch_exec (watch, conn, drop, what, gave_up, sizeof gave_up);
        st = ledger_ran (res, conn, err);
        if (st != FR_OK && *gave_up) {
            db_error_printf (err, "%s", gave_up);
            err->waited_out = 1;
            snprintf (err->detail, sizeof err->detail, "the drop of index \"%s\", left invalid by a build that "
                      "did not finish, was cancelled; the next up drops it again", name);
            snprintf (err->hint, sizeof err->hint, "end that session's transaction, or terminate it (SELECT "
                      "pg_terminate_backend (pid)), then run ferrule-migrate up again");
        }
    }
out:
    PQclear (res);
    return st;
}

/* 1 when a statement builds or drops an index CONCURRENTLY: its lock (SHARE UPDATE EXCLUSIVE)
 * blocks no reader or writer, and what it waits for (transactions it must outlast) is worth
 * waiting for, so it runs without a lock timeout. */
static int
ledger_concurrently (const char *stmt)
{
    const char *p = ledger_word (stmt, "CREATE");
    if (p && ledger_word (p, "UNIQUE"))
        p = ledger_word (p, "UNIQUE");
    if (!p)
        p = ledger_word (stmt, "DROP");
    return p && (p = ledger_word (p, "INDEX")) && ledger_word (p, "CONCURRENTLY");
}

/* 1 when a step failed because a lock was not granted in time (lock_timeout; NOWAIT too). */
static int
ledger_lock_refused (const db_error_t *err)
{
    return strcmp (err->sqlstate, "55P03") == 0;
}

/* Sets the session's lock_timeout (SET LOCAL inside the migration's transaction). */
static fr_status_t
ledger_set_lock_timeout (PGconn *conn, int local, int ms, db_error_t *err)
{
    char set [64];
    snprintf (set, sizeof set, "SET %slock_timeout = %d", local ? "LOCAL " : "", ms);
    return db_exec (conn, set, err);
}

/* The tries of one step whose lock may be refused (ledger_locking_t). */
typedef struct {
    const ledger_locking_t *locking;
    int64_t first;                      /* when it was first tried */
    int tries;                          /* refused so far */
    char blocker [400];                 /* whom it last waited for, as the watch saw it */
    int autovacuum;                     /* that one is an autovacuum worker */
    int timeout_ms;                     /* the lock timeout of the next try */
} ledger_retry_t;

static void
ledger_retry_start (ledger_retry_t *r, const ledger_locking_t *locking)
{
    memset (r, 0, sizeof *r);
    r->locking = locking;
    r->first = clock_mono_ms ();
    r->timeout_ms = locking->lock_timeout_ms;
}

/* The server's deadlock_timeout in ms, 0 when it could not be read. */
static int
ledger_deadlock_timeout (PGconn *conn)
{
    PGresult *res = PQexec (conn, "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'");
    int ms = 0;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1 && !PQgetisnull (res, 0, 0))
        ms = (int) strtol (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return ms > 0 ? ms : 0;
}

/* The lock timeout of the next try (r->timeout_ms), and how the notice says it (said, size bytes).
 * The server cancels an autovacuum that blocks another session, but only from that session's
 * deadlock check, after deadlock_timeout (1 s by default): a try refused by an autovacuum worker
 * waits a little past it, so that the vacuum is cancelled rather than outlasting every try. */
static void
ledger_retry_timeout (ledger_retry_t *r, PGconn *conn, char *said, size_t size)
{
    int base = r->locking->lock_timeout_ms;
    *said = '\0';
    r->timeout_ms = base;
    if (!r->autovacuum)
        return;
    int deadlock_ms = ledger_deadlock_timeout (conn);
    if (!deadlock_ms || deadlock_ms + LEDGER_AUTOVACUUM_MARGIN_MS > LEDGER_AUTOVACUUM_MAX_MS
    ||  deadlock_ms + LEDGER_AUTOVACUUM_MARGIN_MS <= base)
        return;
    r->timeout_ms = deadlock_ms + LEDGER_AUTOVACUUM_MARGIN_MS;
    snprintf (said, size, " with a lock timeout of %d ms, past deadlock_timeout (%d ms), so that the server cancels "
              "the autovacuum", r->timeout_ms, deadlock_ms);
}

/* A stop signal (stop.h) came after what had tried was refused its lock and rolled back. */
static void
ledger_retry_stopped (db_error_t *err, int in_transaction)
{
    db_error_printf (err, "stopped by %s", stop_name ());
    snprintf (err->detail, sizeof err->detail, "its lock was refused and %s rolled back, and it was waiting to try "
              "again", in_transaction ? "the migration's transaction" : "the statement");
}

/* After what (a step) was refused its lock and rolled back: says so, naming whom it waited for,
 * and pauses before the next try: 1. 0 when it is not tried again: past the wait limit
 * (err->waited_out) or on a stop signal, err saying so. */
static int
ledger_retry_pause (ledger_retry_t *r, PGconn *conn, watch_t *watch, const char *what, int in_transaction,
                    db_error_t *err)
{
    char longer [160];
    int tried_ms = r->timeout_ms;
    int64_t now = clock_mono_ms ();
    int64_t pause = LEDGER_RETRY_FIRST_MS;
    for (int i = 0; i < r->tries && pause < LEDGER_RETRY_MAX_MS; i++)
        pause *= 2;
    if (pause > LEDGER_RETRY_MAX_MS)
        pause = LEDGER_RETRY_MAX_MS;
    r->tries++;
    if (*watch_blocker (watch)) {
        snprintf (r->blocker, sizeof r->blocker, "%s", watch_blocker (watch));
        r->autovacuum = watch_blocker_autovacuum (watch);
    }
    const char *who = *r->blocker ? r->blocker : "another session";
    if (stop_requested ()) {
        ledger_retry_stopped (err, in_transaction);
        return 0;
    }
    if (r->locking->wait_limit_s > 0) {
        int64_t left = (int64_t) (r->locking->wait_limit_s * 1000) - (now - r->first);
        if (left <= 0) {
            db_error_printf (err, "gave up after its lock was refused for %lld s (%d tr%s of %d ms), the last time by "
                             "%s (the wait limit is %g s)", (long long) ((now - r->first) / 1000), r->tries,
                             r->tries == 1 ? "y" : "ies", r->locking->lock_timeout_ms, who, r->locking->wait_limit_s);
            err->waited_out = 1;
            snprintf (err->detail, sizeof err->detail, "each try was rolled back when its lock was refused");
            snprintf (err->hint, sizeof err->hint, "end that session's transaction, or terminate it (SELECT "
                      "pg_terminate_backend (pid)), then run ferrule-migrate up again; --wait-limit=0 tries as long "
                      "as it takes");
            return 0;
        }
        if (pause > left)
            pause = left;
    }
    ledger_retry_timeout (r, conn, longer, sizeof longer);
    db_note ("%s was refused a lock within %d ms, held by %s; rolled back, it tries again in %.1f s%s (try %d)", what,
             tried_ms, who, (double) pause / 1000, longer, r->tries);
    for (int64_t until = clock_mono_ms () + pause; clock_mono_ms () < until;) {
        if (stop_requested ()) {
            ledger_retry_stopped (err, in_transaction);
            return 0;
        }
        int64_t slice = until - clock_mono_ms ();
        if (slice > LEDGER_RETRY_SLICE_MS)
            slice = LEDGER_RETRY_SLICE_MS;
        struct timespec ts = { 0, (long) (slice > 0 ? slice : 0) * 1000000L };
        while (nanosleep (&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return 1;
}

/* A migration marked SQLSPLIT_NO_TRANSACTION: each statement sent on its own, committed as it
 * ends, so that CREATE INDEX CONCURRENTLY can build an index on a table the workers write to
 * without holding their writes for the whole build. A failure leaves the statements before it
 * applied and the migration unrecorded; the next up runs it all again, so every statement must be
 * safe to repeat (IF NOT EXISTS, IF EXISTS). */
static fr_status_t
ledger_apply_each (PGconn *conn, watch_t *watch, const catalog_entry_t *migration, const char *applied_by,
                   const ledger_locking_t *locking, long *elapsed_ms, int *committed, db_error_t *err)
{
    char what [64], gave_up [600];
    PGresult *res = NULL;
    char *text = NULL;
    fr_status_t st = FR_OK;
    sqlsplit_stmt_t s;
    const char *open = NULL;
    size_t pos = 0;
    int r;

    /* the whole file is read first: one left open must not run half */
    while ((r = sqlsplit_next (migration->sql, migration->len, &pos, &s, &open)) > 0)
        ;
    if (r < 0) {
        db_error_printf (err, "it ends inside %s", open);
        err->position = ledger_chars (migration->sql, s.start) + 1;
        snprintf (err->hint, sizeof err->hint, "close it");
        return FR_INTERNAL;
    }
    int64_t start = clock_mono_ms ();
    pos = 0;
    while (sqlsplit_next (migration->sql, migration->len, &pos, &s, &open) > 0) {
        text = mem_strndup (migration->sql + s.start, s.len);
        st = ledger_drop_invalid_index (conn, watch, text, ledger_line (migration->sql, s.start), err);
        if (st != FR_OK)
            goto out;
        snprintf (what, sizeof what, "the statement at line %d", ledger_line (migration->sql, s.start));
        int timeout_ms = ledger_concurrently (text) ? 0 : locking->lock_timeout_ms, given_up = 0;
        ledger_retry_t retry;
        ledger_retry_start (&retry, locking);
        for (;;) {
            st = ledger_set_lock_timeout (conn, 0, timeout_ms ? retry.timeout_ms : 0, err);
            if (st != FR_OK)
                goto out;
            res = watch_exec (watch, conn, text, what, gave_up, sizeof gave_up);
            st = ledger_ran (res, conn, err);
            if (st == FR_OK || *gave_up || !timeout_ms || !ledger_lock_refused (err))
                break;
            PQclear (res);
            res = NULL;
            if (!ledger_retry_pause (&retry, conn, watch, what, 0, err)) {
                given_up = 1;
                break;
            }
        }
        if (given_up)
            ;                                   /* err says why */
        else if (st != FR_OK && *gave_up)
            ledger_waited_out (err, gave_up, 0, text);
        else if (st != FR_OK && stop_requested ())
            ledger_stopped (err, 0, text);
        if (st != FR_OK) {
            /* the server counts from the statement's start; the report counts from the file's */
            err->position = ledger_chars (migration->sql, s.start) + (err->position ? err->position : 1);
            goto out;
        }
        if (PQtransactionStatus (conn) != PQTRANS_IDLE) {
            db_error_printf (err, "it opened a transaction, which a migration marked \"%s\" must not do",
                             &SQLSPLIT_NO_TRANSACTION [3]);
            err->position = ledger_chars (migration->sql, s.start) + 1;
            snprintf (err->hint, sizeof err->hint, "remove BEGIN from the file, or the first line to run it in one");
            st = FR_INTERNAL;
            db_error_t ignored;
            if (db_exec (conn, "ROLLBACK", &ignored) != FR_OK) {
                /* closing the session ends it */
            }
            goto out;
        }
        PQclear (res);
        res = NULL;
        mem_free (text);
        text = NULL;
        (*committed)++;
    }
    *elapsed_ms = (long) (clock_mono_ms () - start);
    st = ledger_record (conn, migration, applied_by, *elapsed_ms, err);
out:
    PQclear (res);
    mem_free (text);
    if (PQstatus (conn) == CONNECTION_OK && PQtransactionStatus (conn) == PQTRANS_IDLE) {
        /* what comes after (the next migration, the grants) sets its own or waits as before */
        db_error_t ignored;
        if (db_exec (conn, "RESET lock_timeout", &ignored) != FR_OK) {
            /* the next step sets it again; the grants and fill wait for locks briefly anyway */
        }
    }
    return st;
}

/* One try of a migration in a transaction: runs it with the lock timeout, records it, commits;
 * on failure rolls back. */
static fr_status_t
ledger_apply_once (PGconn *conn, watch_t *watch, const catalog_entry_t *migration, const char *applied_by,
                   int lock_timeout_ms, long *elapsed_ms, db_error_t *err)
{
    char gave_up [600];
    PGresult *res = NULL;
    fr_status_t st = FR_OK;
    int in_transaction = 0;
    int64_t start;

    st = db_exec (conn, "BEGIN", err);
    if (st != FR_OK)
        goto out;
    in_transaction = 1;
    st = ledger_set_lock_timeout (conn, 1, lock_timeout_ms, err);
    if (st != FR_OK)
        goto out;

    start = clock_mono_ms ();
    res = watch_exec (watch, conn, migration->sql, "its transaction", gave_up, sizeof gave_up);
    *elapsed_ms = (long) (clock_mono_ms () - start);
    st = ledger_ran (res, conn, err);
    if (st != FR_OK && *gave_up)
        ledger_waited_out (err, gave_up, 1, NULL);
    else if (st != FR_OK && stop_requested ())
        ledger_stopped (err, 1, NULL);
    if (st != FR_OK)
        goto out;
    PQclear (res);
    res = NULL;
    if (PQtransactionStatus (conn) != PQTRANS_INTRANS) {
        db_error_printf (err, "it ended the transaction ferrule-migrate runs it in (BEGIN, COMMIT or ROLLBACK in the file)");
        snprintf (err->detail, sizeof err->detail,
                  "its changes may have been committed without a row in schema_migrations");
        snprintf (err->hint, sizeof err->hint,
                  "remove the transaction statements from the file; check the schema by hand before running up again");
        in_transaction = PQtransactionStatus (conn) == PQTRANS_INERROR;
        st = FR_CONFIGURATION;
        goto out;
    }

    st = ledger_record (conn, migration, applied_by, *elapsed_ms, err);
    if (st != FR_OK)
        goto out;

    in_transaction = 0;
    st = db_exec (conn, "COMMIT", err);
out:
    PQclear (res);
    if (in_transaction && PQstatus (conn) == CONNECTION_OK) {
        /* a failed ROLLBACK leaves the session to end the transaction when it closes */
        db_error_t ignored;
        if (db_exec (conn, "ROLLBACK", &ignored) != FR_OK)
            in_transaction = 0;
    }
    return st;
}

fr_status_t
ledger_apply (PGconn *conn, watch_t *watch, const catalog_entry_t *migration, const char *applied_by,
              const ledger_locking_t *locking, long *elapsed_ms, int *committed, db_error_t *err)
{
    ledger_retry_t retry;
    fr_status_t st;

    *committed = 0;
    if (migration->no_transaction)
        return ledger_apply_each (conn, watch, migration, applied_by, locking, elapsed_ms, committed, err);
    ledger_retry_start (&retry, locking);
    for (;;) {
        st = ledger_apply_once (conn, watch, migration, applied_by, retry.timeout_ms, elapsed_ms, err);
        if (st == FR_OK || !locking->lock_timeout_ms || err->waited_out || !ledger_lock_refused (err)
         || PQtransactionStatus (conn) != PQTRANS_IDLE)
            return st;
        if (!ledger_retry_pause (&retry, conn, watch, "its transaction", 1, err))
            return st;
    }
}
