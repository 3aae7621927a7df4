/* grant.c - the runtime role's privileges, applied by the schema owner */
#include "grant.h"
#include "mem.h"
#include <stdio.h>
#include <string.h>

#define GRANT_ROLE_MAX 63           /* PostgreSQL's identifier limit */

static fr_status_t
status_of (const db_error_t *err)
{
    return err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
}

/* A one-row, one-column query with up to one parameter; the value (caller frees) or NULL with
 * err set. *isnull is 1 when the row is missing or the value is NULL. */
static char *
grant_value (PGconn *conn, const char *sql, const char *param, int *isnull, fr_status_t *st, db_error_t *err)
{
    char *value = NULL;
    const char *values [] = { param };
    PGresult *res = PQexecParams (conn, sql, param ? 1 : 0, NULL, param ? values : NULL, NULL, NULL, 0);
    *isnull = 1;
    *st = FR_OK;
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        db_error_from_result (err, res, conn);
        *st = status_of (err);
        goto out;
    }
    if (PQntuples (res) == 1 && !PQgetisnull (res, 0, 0)) {
        value = mem_strdup (PQgetvalue (res, 0, 0));
        *isnull = 0;
    }
out:
    PQclear (res);
    return value;
}

/* The rights a table gets the moment a migration creates it, before "up" grants again at its
 * end: SELECT and INSERT, what a running release's triggers need of a new table (006's triggers
 * write events). UPDATE would leave a new append-only table writable until then, and for good
 * if up stopped first; a table that needs UPDATE gets it from those last grants, and only the
 * release up installs uses it. REVOKE first: ALTER DEFAULT PRIVILEGES only adds, and an older
 * release granted UPDATE too. role_q and schema_q are quoted. */
static fr_status_t
grant_defaults (PGconn *conn, const char *role_q, const char *schema_q, db_error_t *err)
{
    char sql [512];
    fr_status_t st;
    snprintf (sql, sizeof sql, "ALTER DEFAULT PRIVILEGES IN SCHEMA %s REVOKE ALL ON TABLES FROM %s", schema_q, role_q);
    if ((st = db_exec (conn, sql, err)) != FR_OK)
        return st;
    snprintf (sql, sizeof sql, "ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT ON TABLES TO %s",
              schema_q, role_q);
    return db_exec (conn, sql, err);
}

/* The grants themselves, inside the caller's transaction. role_q and schema_q are quoted. */
static fr_status_t
grant_apply (PGconn *conn, const char *role, const char *role_q, const char *schema_q, const char *db_q,
             db_error_t *err)
{
    fr_status_t st = FR_OK;
    char sql [1024];
    PGresult *res = NULL;
    const char *fixed [] = {
        "GRANT CONNECT ON DATABASE %3$s TO %1$s",
        "GRANT USAGE ON SCHEMA %2$s TO %1$s",
        /* start from nothing, so a right granted by hand or by an older release goes away */
        "REVOKE ALL ON ALL TABLES IN SCHEMA %2$s FROM %1$s",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %2$s FROM %1$s",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA %2$s TO %1$s",
        "GRANT EXECUTE ON FUNCTION %2$s.ferrule_gc_pending_authorizations () TO %1$s",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$s GRANT USAGE ON SEQUENCES TO %1$s",
        NULL
    };
    for (int i = 0; fixed [i]; i++) {
        snprintf (sql, sizeof sql, fixed [i], role_q, schema_q, db_q);
        if ((st = db_exec (conn, sql, err)) != FR_OK)
            goto out;
    }
    if ((st = grant_defaults (conn, role_q, schema_q, err)) != FR_OK)
        goto out;
    /* every table of the schema: the ledger read-only, append-only tables SELECT and INSERT,
       the rest SELECT, INSERT and UPDATE; never DELETE, TRUNCATE, REFERENCES or TRIGGER */
    const char *values [] = { schema_q };
    res = PQexecParams (conn,
        "SELECT quote_ident (c.relname), c.relname FROM pg_class c"
        " WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1",
        1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        db_error_from_result (err, res, conn);
        st = status_of (err);
        goto out;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *name = PQgetvalue (res, i, 1);
        const char *rights = "SELECT, INSERT, UPDATE";
        if (strcmp (name, "schema_migrations") == 0)
            rights = "SELECT";
        else if (strcmp (name, "runtime_roles") == 0)
            continue;
        else {
            char needle [80];
            snprintf (needle, sizeof needle, ",%s,", name);
            if (strstr ("," GRANT_APPEND_ONLY_TABLES ",", needle))
                rights = "SELECT, INSERT";
        }
        snprintf (sql, sizeof sql, "GRANT %s ON TABLE %s.%s TO %s", rights, schema_q, PQgetvalue (res, i, 0), role_q);
        if ((st = db_exec (conn, sql, err)) != FR_OK)
            goto out;
    }
    PQclear (res);
    const char *rv [] = { role };
    res = PQexecParams (conn,
        "INSERT INTO runtime_roles (role) VALUES ($1) ON CONFLICT (role) DO UPDATE SET granted_at = now()",
        1, NULL, rv, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_COMMAND_OK) {
        db_error_from_result (err, res, conn);
        st = status_of (err);
        goto out;
    }
out:
    PQclear (res);
    return st;
}

/* Quoted current database and schema, and whether runtime_roles exists. */
static fr_status_t
grant_context (PGconn *conn, char **db_q, char **schema_q, int *ready, db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = PQexec (conn, "SELECT quote_ident (current_database ()), quote_ident (current_schema ()),"
                                  " to_regclass ('runtime_roles') IS NOT NULL");
    *db_q = *schema_q = NULL;
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        db_error_from_result (err, res, conn);
        st = status_of (err);
        goto out;
    }
    if (PQgetisnull (res, 0, 1)) {
        db_error_printf (err, "the database has no schema to grant on: its search_path names no existing schema");
        st = FR_CONFIGURATION;
        goto out;
    }
    *db_q = mem_strdup (PQgetvalue (res, 0, 0));
    *schema_q = mem_strdup (PQgetvalue (res, 0, 1));
    *ready = strcmp (PQgetvalue (res, 0, 2), "t") == 0;
out:
    PQclear (res);
    return st;
}

/* One role's grants in its own transaction. */
static fr_status_t
grant_one (PGconn *conn, const char *role, int create, int *created, db_error_t *err)
{
    fr_status_t st;
    char *db_q = NULL, *schema_q = NULL, *me = NULL, *exists = NULL, *role_q = NULL;
    char sql [256];
    int ready = 0, isnull = 1, begun = 0;

    if (created)
        *created = 0;
    if (!*role || strlen (role) > GRANT_ROLE_MAX) {
        db_error_printf (err, "invalid role name \"%.63s\": give 1 to %d characters", role, GRANT_ROLE_MAX);
        return FR_CONFIGURATION;
    }
    if ((st = db_exec (conn, "BEGIN", err)) != FR_OK)
        goto out;
    begun = 1;
    if ((st = grant_context (conn, &db_q, &schema_q, &ready, err)) != FR_OK)
        goto out;
    if (!ready) {
        db_error_printf (err, "the schema has no table \"runtime_roles\": run \"ferrule-migrate up\" first");
        st = FR_CONFIGURATION;
        goto out;
    }
    me = grant_value (conn, "SELECT current_user", NULL, &isnull, &st, err);
    if (st != FR_OK)
        goto out;
    if (me && strcmp (me, role) == 0) {
        db_error_printf (err, "role \"%s\" is the schema owner running ferrule-migrate: the runtime role must "
                         "be another role", role);
        st = FR_CONFIGURATION;
        goto out;
    }
    exists = grant_value (conn, "SELECT 1 FROM pg_roles WHERE rolname = $1", role, &isnull, &st, err);
    if (st != FR_OK)
        goto out;
    role_q = PQescapeIdentifier (conn, role, strlen (role));
    if (!role_q) {
        db_error_printf (err, "could not quote role name \"%s\"", role);
        st = FR_INTERNAL;
        goto out;
    }
    if (isnull) {
        if (!create) {
            db_error_printf (err, "role \"%s\" no longer exists", role);
            st = FR_CONFIGURATION;
            goto out;
        }
        /* LOGIN without a password: the administrator sets one (ALTER ROLE ... PASSWORD) or maps
           a certificate; with no password a password-checking pg_hba refuses it */
        snprintf (sql, sizeof sql, "CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT", role_q);
        if ((st = db_exec (conn, sql, err)) != FR_OK)
            goto out;
        if (created)
            *created = 1;
    }
    if ((st = grant_apply (conn, role, role_q, schema_q, db_q, err)) != FR_OK)
        goto out;
    st = db_exec (conn, "COMMIT", err);
    begun = 0;
out:
    if (begun && PQstatus (conn) == CONNECTION_OK) {
        PGresult *res = PQexec (conn, "ROLLBACK");
        PQclear (res);
    }
    if (role_q)
        PQfreemem (role_q);
    mem_free (db_q);
    mem_free (schema_q);
    mem_free (me);
    mem_free (exists);
    return st;
}

fr_status_t
grant_runtime (PGconn *conn, const char *role, int *created, db_error_t *err)
{
    return grant_one (conn, role, 1, created, err);
}

fr_status_t
grant_reapply (PGconn *conn, int *count, char *missing, size_t missing_len, db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = NULL;
    *count = 0;
    if (missing && missing_len)
        missing [0] = '\0';
    res = PQexec (conn, "SELECT role FROM runtime_roles WHERE to_regclass ('runtime_roles') IS NOT NULL ORDER BY 1");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        /* 42P01: no runtime_roles yet (a schema before 004): nothing to grant */
        const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
        if (state && strcmp (state, "42P01") == 0)
            goto out;
        db_error_from_result (err, res, conn);
        st = status_of (err);
        goto out;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *role = PQgetvalue (res, i, 0);
        st = grant_one (conn, role, 0, NULL, err);
        if (st == FR_CONFIGURATION && strstr (err->message, "no longer exists")) {
            if (missing && missing_len && !*missing)
                snprintf (missing, missing_len, "%s", role);
            st = FR_OK;
            continue;
        }
        if (st != FR_OK)
            goto out;
        (*count)++;
    }
out:
    PQclear (res);
    return st;
}

fr_status_t
grant_narrow_defaults (PGconn *conn, int *count, db_error_t *err)
{
    fr_status_t st;
    char *db_q = NULL, *schema_q = NULL;
    PGresult *res = NULL;
    int ready = 0, begun = 0;
    *count = 0;
    if ((st = db_exec (conn, "BEGIN", err)) != FR_OK)
        goto out;
    begun = 1;
    if ((st = grant_context (conn, &db_q, &schema_q, &ready, err)) != FR_OK)
        goto out;
    if (ready) {
        /* a recorded role dropped since is left to grant_reapply, which names it */
        res = PQexec (conn, "SELECT quote_ident (r.role) FROM runtime_roles r"
                            " JOIN pg_roles p ON p.rolname = r.role ORDER BY 1");
        if (PQresultStatus (res) != PGRES_TUPLES_OK) {
            db_error_from_result (err, res, conn);
            st = status_of (err);
            goto out;
        }
        for (int i = 0; i < PQntuples (res); i++) {
            if ((st = grant_defaults (conn, PQgetvalue (res, i, 0), schema_q, err)) != FR_OK)
                goto out;
            (*count)++;
        }
    }
    st = db_exec (conn, "COMMIT", err);
    begun = 0;
out:
    if (begun && PQstatus (conn) == CONNECTION_OK)
        PQclear (PQexec (conn, "ROLLBACK"));
    PQclear (res);
    mem_free (db_q);
    mem_free (schema_q);
    return st;
}
