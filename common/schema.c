/* schema.c - the start-up check that the database holds the schema this build needs */
#include "schema.h"
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

fr_status_t
schema_read_version (PGconn *conn, int *version, char *err, size_t errlen)
{
    PGresult *res = NULL;
    fr_status_t st = FR_OK;

    *version = 0;
    if (!conn) {
        snprintf (err, errlen, "could not read the schema version: no database session");
        return FR_DATABASE_UNAVAILABLE;
    }
    res = PQexec (conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = schema_failure (conn, res, err, errlen);
        goto out;
    }
    if (strcmp (PQgetvalue (res, 0, 0), "t") != 0)
        goto out;                       /* never migrated: version 0 */
    PQclear (res);

    res = PQexec (conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
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
schema_check (PGconn *conn, char *err, size_t errlen)
{
    int version = 0;
    fr_status_t st = schema_read_version (conn, &version, err, errlen);
    if (st != FR_OK)
        return st;
    if (version < FERRULE_SCHEMA_VERSION) {
        snprintf (err, errlen, "database schema is at version %d, this build needs version %d: "
                  "run \"ferrule-migrate up\"", version, FERRULE_SCHEMA_VERSION);
        return FR_CONFIGURATION;
    }
    return FR_OK;
}
