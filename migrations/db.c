/* db.c - ferrule-migrate's PostgreSQL sessions */
#include "db.h"
#include "clock.h"
#include "dburl.h"
#include "log.h"
#include "mem.h"
#include "pgnotice.h"
#include "pgwait.h"
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Copies src into dst (truncating), without trailing white space. */
static void
db_copy_text (char *dst, size_t size, const char *src)
{
    snprintf (dst, size, "%s", src ? src : "");
    size_t n = strlen (dst);
    while (n > 0 && (dst [n - 1] == '\n' || dst [n - 1] == ' ' || dst [n - 1] == '\t'))
        dst [--n] = '\0';
}

static const char *s_notices_about;     /* the migration being applied, or NULL */

void
db_notices_about (const char *what)
{
    s_notices_about = what;
}

/* A notice or warning the server sent (RAISE in a migration, "does not exist, skipping", a
 * deprecation): one line in the tool's words on stderr, saying which migration it came from, and
 * one in the log; made printable and cut, since a message can quote anything. */
static void
db_on_notice (void *arg, const PGresult *res)
{
    (void) arg;
    char text [PGNOTICE_MAX + 8];
    int warning = pgnotice_read (res, text, sizeof text, NULL);
    const char *about = s_notices_about ? s_notices_about : "";
    const char *sep = s_notices_about ? ": " : "";
    fprintf (stderr, "ferrule-migrate: %s: %s%sthe server said: %s\n", warning ? "warning" : "notice", about, sep, text);
    if (warning)
        log_warning (NULL, NULL, "the database server said%s%s: %s", *about ? " while applying " : "", about, text);
    else
        log_info (NULL, NULL, "the database server said%s%s: %s", *about ? " while applying " : "", about, text);
}

void
db_note (const char *fmt, ...)
{
    char text [1024];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (text, sizeof text, fmt, ap);
    va_end (ap);
    const char *about = s_notices_about ? s_notices_about : "";
    fprintf (stderr, "ferrule-migrate: notice: %s%s%s\n", about, *about ? ": " : "", text);
    log_info (NULL, NULL, "%s%s%s", about, *about ? ": " : "", text);
}

/* A conninfo string or URI, as opposed to a bare database name (or something unreadable). */
static int
db_is_conninfo (const char *url)
{
    dburl_kind_t kind = dburl_kind (url);
    return kind == DBURL_URI || kind == DBURL_CONNINFO;
}

/* The parsed options of url, or NULL. The parser's own message is dropped: it may quote the password. */
static PQconninfoOption *
db_parse (const char *url)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse (url, &errmsg);
    if (errmsg)
        PQfreemem (errmsg);
    return opts;
}

static const char *
db_option (const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp (o->keyword, keyword) == 0)
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

char *
db_describe (const char *url)
{
    if (dburl_kind (url) == DBURL_UNREADABLE)
        return NULL;                       /* another scheme's URI, or one without its scheme */
    if (!db_is_conninfo (url))
        return mem_strdup (url);           /* a bare database name */

    PQconninfoOption *opts = db_parse (url);
    if (!opts)
        return NULL;
    const char *user = db_option (opts, "user");
    const char *host = db_option (opts, "host");
    const char *port = db_option (opts, "port");
    const char *dbname = db_option (opts, "dbname");
    if (!host)
        host = db_option (opts, "hostaddr");

    size_t size = 32 + (user ? strlen (user) : 0) + (host ? strlen (host) : 0)
                + (port ? strlen (port) : 0) + (dbname ? strlen (dbname) : 0);
    char *text = mem_alloc (size);
    snprintf (text, size, "%s%s%s%s%s/%s",
              user ? user : "", user ? "@" : "",
              host ? host : "local socket",
              port ? ":" : "", port ? port : "",
              dbname ? dbname : (user ? user : ""));
    PQconninfoFree (opts);
    return text;
}

int
db_connect_timeout_ms (const char *url)
{
    int ms = DB_DEFAULT_CONNECT_TIMEOUT_MS;
    PQconninfoOption *opts = db_is_conninfo (url) ? db_parse (url) : NULL;
    const char *value = db_option (opts, "connect_timeout");
    if (value) {
        char *end;
        errno = 0;
        long seconds = strtol (value, &end, 10);
        if (errno == 0 && *end == '\0' && seconds > 0 && seconds <= 3600)
            ms = (int) (seconds < 2 ? 2000 : seconds * 1000);     /* libpq's own minimum is 2 s */
    }
    if (opts)
        PQconninfoFree (opts);
    return ms;
}

static long long
db_now_ms (void)
{
    return (long long) clock_mono_ms ();
}

/* Splits libpq's connection message: first line to message, the rest (its advice) to detail. */
static void
db_error_from_connection (db_error_t *err, PGconn *conn)
{
    memset (err, 0, sizeof *err);
    err->lost = 1;
    const char *text = conn ? PQerrorMessage (conn) : "";
    const char *newline = strchr (text, '\n');
    size_t first = newline ? (size_t) (newline - text) : strlen (text);
    if (first >= sizeof err->message)
        first = sizeof err->message - 1;
    memcpy (err->message, text, first);
    err->message [first] = '\0';
    if (newline) {
        const char *rest = newline + 1;
        while (*rest == '\t' || *rest == ' ')
            rest++;
        db_copy_text (err->detail, sizeof err->detail, rest);
    }
    if (!*err->message)
        snprintf (err->message, sizeof err->message, "the connection failed without a message");
}

PGconn *
db_connect (const char *url, int timeout_ms, db_error_t *err)
{
    /* Defaults come before dbname, so that the same settings in the URL override them. */
    const char *keys [] = { "fallback_application_name", "client_encoding",
                            "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                            "dbname", NULL };
    const char *values [] = { "ferrule-migrate", "UTF8", "1", "10", "5", "3", url, NULL };
    long long deadline = db_now_ms () + (timeout_ms > 0 ? timeout_ms : DB_DEFAULT_CONNECT_TIMEOUT_MS);
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    PGconn *conn = NULL;
    int ok = 0;

    if (dburl_kind (url) == DBURL_UNREADABLE) {
        memset (err, 0, sizeof *err);
        db_error_printf (err, "the database URL " DBURL_UNREADABLE_TEXT);
        goto out;
    }
    if (db_is_conninfo (url)) {
        PQconninfoOption *opts = db_parse (url);
        if (!opts) {
            memset (err, 0, sizeof *err);
            db_error_printf (err, "the database URL is neither a \"postgresql://\" URI nor a \"key=value\" "
                             "connection string (the parser's detail is not shown: it may quote the password)");
            goto out;
        }
        PQconninfoFree (opts);
    }
    conn = PQconnectStartParams (keys, values, 1);
    if (!conn || PQstatus (conn) == CONNECTION_BAD) {
        db_error_from_connection (err, conn);
        goto out;
    }
    /* libpq's loop: wait for the socket as the last poll asked, then poll again */
    while (state != PGRES_POLLING_OK) {
        if (state == PGRES_POLLING_FAILED) {
            db_error_from_connection (err, conn);
            goto out;
        }
        long long left = deadline - db_now_ms ();
        if (left <= 0) {
            memset (err, 0, sizeof *err);
            err->lost = 1;
            snprintf (err->message, sizeof err->message, "no connection within %d ms",
                      timeout_ms > 0 ? timeout_ms : DB_DEFAULT_CONNECT_TIMEOUT_MS);
            snprintf (err->detail, sizeof err->detail, "the server did not answer in time; "
                      "check that it is running and that the host and port are right");
            goto out;
        }
        struct pollfd pfd = { .fd = PQsocket (conn),
                              .events = state == PGRES_POLLING_READING ? POLLIN : POLLOUT };
        if (pfd.fd < 0) {
            db_error_from_connection (err, conn);
            goto out;
        }
        int rc = poll (&pfd, 1, (int) (left > 1000 ? 1000 : left));
        if (rc < 0 && errno != EINTR) {
            db_error_printf (err, "could not wait for the database socket: %s", strerror (errno));
            err->lost = 1;
            goto out;
        }
        if (rc > 0)
            state = PQconnectPoll (conn);
    }
    PQsetNoticeReceiver (conn, db_on_notice, NULL);
    ok = 1;
out:
    if (!ok && conn) {
        PQfinish (conn);
        conn = NULL;
    }
    return conn;
}

void
db_error_from_result (db_error_t *err, const PGresult *res, PGconn *conn)
{
    memset (err, 0, sizeof *err);
    if (!res || !PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY)) {
        /* no server error: the session failed, or ran out of memory */
        const char *text = res && *PQresultErrorMessage (res) ? PQresultErrorMessage (res)
                                                              : (conn ? PQerrorMessage (conn) : "");
        db_copy_text (err->message, sizeof err->message, *text ? text : "the query failed without a message");
        char *newline = strchr (err->message, '\n');
        if (newline) {
            db_copy_text (err->detail, sizeof err->detail, newline + 1);
            *newline = '\0';
        }
    }
    else {
        db_copy_text (err->sqlstate, sizeof err->sqlstate, PQresultErrorField (res, PG_DIAG_SQLSTATE));
        db_copy_text (err->message, sizeof err->message, PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY));
        db_copy_text (err->detail, sizeof err->detail, PQresultErrorField (res, PG_DIAG_MESSAGE_DETAIL));
        db_copy_text (err->hint, sizeof err->hint, PQresultErrorField (res, PG_DIAG_MESSAGE_HINT));
        db_copy_text (err->context, sizeof err->context, PQresultErrorField (res, PG_DIAG_CONTEXT));
        const char *position = PQresultErrorField (res, PG_DIAG_STATEMENT_POSITION);
        long value = position ? strtol (position, NULL, 10) : 0;
        err->position = value > 0 && value < INT_MAX ? (int) value : 0;
    }
    /* class 08 (connection exception) and 57P01..57P03 (shutdown) mean the session is gone */
    err->lost = (conn && PQstatus (conn) == CONNECTION_BAD)
             || strncmp (err->sqlstate, "08", 2) == 0 || strncmp (err->sqlstate, "57P", 3) == 0;
}

void
db_error_printf (db_error_t *err, const char *fmt, ...)
{
    va_list ap;
    memset (err, 0, sizeof *err);
    va_start (ap, fmt);
    vsnprintf (err->message, sizeof err->message, fmt, ap);
    va_end (ap);
}

fr_status_t
db_exec (PGconn *conn, const char *sql, db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = PQexec (conn, sql);
    ExecStatusType rs = PQresultStatus (res);
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        db_error_from_result (err, res, conn);
        st = err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
    }
    PQclear (res);
    return st;
}

fr_status_t
db_check_client (PGconn *conn, db_error_t *err)
{
    if (PQserverVersion (conn) < 140000)
        return FR_OK;
    return db_exec (conn, "SET client_connection_check_interval = '" DB_CLIENT_CHECK_INTERVAL "'", err);
}

fr_status_t
db_no_time_limit (PGconn *conn, db_error_t *err)
{
    fr_status_t st = db_exec (conn, "SET statement_timeout = 0", err);
    if (st == FR_OK && PQserverVersion (conn) >= 170000)
        st = db_exec (conn, "SET transaction_timeout = 0", err);
    return st;
}

PGresult *
db_exec_until (PGconn *conn, const char *sql, int64_t deadline_ms, db_error_t *err)
{
    pgwait_t outcome = PGWAIT_FAILED;
    PGresult *res = NULL;
    if (deadline_ms < 0)
        res = PQexec (conn, sql);
    else if (PQsendQuery (conn, sql))
        res = pgwait_result (conn, deadline_ms, -1, &outcome);
    if (res)
        return res;
    if (outcome == PGWAIT_TIMED_OUT) {
        db_error_printf (err, "the database did not answer in time");
        snprintf (err->hint, sizeof err->hint, "check that the server is not stalled (its disk, its load) and that "
                  "the network to it works");
    }
    else
        db_error_from_result (err, NULL, conn);
    err->lost = 1;
    return NULL;
}
