/* schema.c - the start-up check that the database holds the schema this build needs */
#include "schema.h"
#include "pgwait.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Classifies a failed query and writes "could not read the schema version: <reason>" into err. */
static fr_status_t
schema_failure (PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    const char *sqlstate = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
    const char *message = res ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    fr_status_t st = FR_INTERNAL;
    char reason [512];

    if (!message)
        message = res && *PQresultErrorMessage (res) ? PQresultErrorMessage (res) : PQerrorMessage (conn);
    snprintf (reason, sizeof reason, "%s", *message ? message : "the query failed without a message");
    reason [strcspn (reason, "\n")] = '\0';
    if (!sqlstate)
        sqlstate = "";

    /* the session is gone (class 08, shutdown 57P0x), or the server cannot serve it now
     * (class 53 insufficient resources, 57014 canceled, 58 system error) */
    if (PQstatus (conn) == CONNECTION_BAD || !*sqlstate
     || strncmp (sqlstate, "08", 2) == 0 || strncmp (sqlstate, "53", 2) == 0
     || strncmp (sqlstate, "57", 2) == 0 || strncmp (sqlstate, "58", 2) == 0)
        st = FR_DATABASE_UNAVAILABLE;
    else if (strcmp (sqlstate, "42501") == 0)
        st = FR_CONFIGURATION;          /* permission denied: the operator must grant SELECT */
    snprintf (err, errlen, "could not read the schema version: %s", reason);
    return st;
}

/* One query's answer, waited for until the deadline or the stop (pgwait); NULL with err set
 * (FR_DATABASE_UNAVAILABLE) when the wait ended without it. */
static PGresult *
schema_query (PGconn *conn, const char *sql, int64_t deadline_ms, int stop_fd, char *err, size_t errlen)
{
    pgwait_t w = PGWAIT_FAILED;
    PGresult *res = PQsendQuery (conn, sql) ? pgwait_result (conn, deadline_ms, stop_fd, &w) : NULL;
    if (!res && w == PGWAIT_TIMED_OUT)
        snprintf (err, errlen, "could not read the schema version: the database did not answer in time");
    else if (!res && w == PGWAIT_STOPPED)
        snprintf (err, errlen, "could not read the schema version: stopping");
    else if (!res)
        (void) schema_failure (conn, NULL, err, errlen);
    return res;
}

static fr_status_t
schema_read_version_until (PGconn *conn, int64_t deadline_ms, int stop_fd, int *version, char *err, size_t errlen)
{
    PGresult *res = NULL;
    fr_status_t st = FR_OK;

    *version = 0;
    if (!conn) {
        snprintf (err, errlen, "could not read the schema version: no database session");
        return FR_DATABASE_UNAVAILABLE;
    }
    res = schema_query (conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", deadline_ms, stop_fd, err, errlen);
    if (!res)
        return FR_DATABASE_UNAVAILABLE;
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = schema_failure (conn, res, err, errlen);
        goto out;
    }
    if (strcmp (PQgetvalue (res, 0, 0), "t") != 0)
        goto out;                       /* never migrated: version 0 */
    PQclear (res);

    res = schema_query (conn, "SELECT coalesce(max(version), 0) FROM schema_migrations", deadline_ms, stop_fd,
                        err, errlen);
    if (!res)
        return FR_DATABASE_UNAVAILABLE;
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = schema_failure (conn, res, err, errlen);
        goto out;
    }
    char *end;
    errno = 0;
    long value = strtol (PQgetvalue (res, 0, 0), &end, 10);
    if (errno || *end || value < 0 || value > 2147483647L) {
        snprintf (err, errlen, "could not read the schema version: schema_migrations holds version \"%s\"",
                  PQgetvalue (res, 0, 0));
        st = FR_INTERNAL;
        goto out;
    }
    *version = (int) value;
out:
    PQclear (res);
    return st;
}

fr_status_t
schema_read_version (PGconn *conn, int *version, char *err, size_t errlen)
{
    return schema_read_version_until (conn, -1, -1, version, err, errlen);
}

fr_status_t
schema_check (PGconn *conn, char *err, size_t errlen)
{
    return schema_check_until (conn, -1, -1, err, errlen);
}

fr_status_t
schema_check_until (PGconn *conn, int64_t deadline_ms, int stop_fd, char *err, size_t errlen)
{
    int version = 0;
    fr_status_t st = schema_read_version_until (conn, deadline_ms, stop_fd, &version, err, errlen);
    if (st != FR_OK)
        return st;
    if (version < FERRULE_SCHEMA_VERSION) {
        snprintf (err, errlen, "database schema is at version %d, this build needs version %d: "
                  "run \"ferrule-migrate up\"", version, FERRULE_SCHEMA_VERSION);
        return FR_CONFIGURATION;
    }
    return FR_OK;
}
