/* store.c - every statement the worker runs against PostgreSQL.
 * Transactions are short: the claim locks the row and takes a lease, the provider is called
 * with no transaction open, and the commit is a compare-and-set on the generation. */
#include "store.h"
#include "log.h"
#include "mem.h"
#include "schema.h"
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_CHANNEL "ferrule_integrations"

struct store {
    char *conninfo;
    char *worker_id;
    PGconn *conn;
};

#define ROW_COLUMNS \
    "id, provider, status, key_id, access_token, " \
    "COALESCE(extract(epoch FROM access_expires_at)::bigint, 0), refresh_token, refresh_fingerprint, " \
    "generation, array_to_string(scopes, ' '), last_error_code, last_error_message, " \
    "COALESCE(extract(epoch FROM last_error_at)::bigint, 0), COALESCE(extract(epoch FROM last_refresh_at)::bigint, 0), " \
    "extract(epoch FROM created_at)::bigint, extract(epoch FROM updated_at)::bigint, lease_owner, " \
    "COALESCE(lease_id, 0), GREATEST(COALESCE((extract(epoch FROM lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0), " \
    "refresh_token_missing AND refresh_token IS NULL"

store_t *
store_new (const char *conninfo, const char *worker_id)
{
    store_t *s = mem_alloc (sizeof *s);
    s->conninfo = mem_strdup (conninfo);
    s->worker_id = mem_strdup (worker_id);
    return s;
}

static void
store_disconnect (store_t *s)
{
    if (s->conn) {
        PQfinish (s->conn);
        s->conn = NULL;
    }
}

void
store_destroy (store_t **s_p)
{
    if (s_p && *s_p) {
        store_disconnect (*s_p);
        mem_free_secret (&(*s_p)->conninfo);    /* may hold a password */
        mem_free ((*s_p)->worker_id);
        mem_free (*s_p);
        *s_p = NULL;
    }
}

/* The first line of a libpq error, without the trailing newline. */
static void
store_error_text (PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    const char *m = res ? PQresultErrorMessage (res) : NULL;
    if (!m || !*m)
        m = conn ? PQerrorMessage (conn) : "no connection";
    snprintf (err, errlen, "%s", m);
    char *nl = strchr (err, '\n');
    if (nl)
        *nl = '\0';
}

fr_status_t
store_connect (store_t *s, char *err, size_t errlen)
{
    if (s->conn && PQstatus (s->conn) == CONNECTION_OK)
        return FR_OK;
    store_disconnect (s);
    s->conn = PQconnectdb (s->conninfo);
    if (PQstatus (s->conn) != CONNECTION_OK) {
        char why [256];
        store_error_text (s->conn, NULL, why, sizeof why);
        snprintf (err, errlen, "could not connect to the database: %s", why);
        store_disconnect (s);
        return FR_DATABASE_UNAVAILABLE;
    }
    char setup [256];
    snprintf (setup, sizeof setup, "SET TimeZone = 'UTC'; SET application_name = 'ferrule-worker'; LISTEN " NOTIFY_CHANNEL);
    PGresult *res = PQexec (s->conn, setup);
    int ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    if (!ok)
        store_error_text (s->conn, res, err, errlen);
    PQclear (res);
    if (!ok) {
        store_disconnect (s);
        return FR_DATABASE_UNAVAILABLE;
    }
    fr_status_t st = schema_check (s->conn, err, errlen);
    if (st != FR_OK) {
        store_disconnect (s);
        return st;
    }
    PQsetnonblocking (s->conn, 0);
    log_info (NULL, NULL, "connected to the database");
    return FR_OK;
}

int
store_connected (const store_t *s)
{
    return s->conn && PQstatus (s->conn) == CONNECTION_OK;
}

int
store_socket (const store_t *s)
{
    return store_connected (s) ? PQsocket (s->conn) : -1;
}

void
store_read_notifies (store_t *s, void (*cb) (void *arg, const char *worker, const char *integration), void *arg)
{
    if (!s->conn)
        return;
    if (!PQconsumeInput (s->conn) || PQstatus (s->conn) != CONNECTION_OK) {
        char why [256];
        store_error_text (s->conn, NULL, why, sizeof why);
        log_warning (NULL, NULL, "lost the database connection: %s", why);
        store_disconnect (s);
        cb (arg, NULL, NULL);    /* anything cached may be stale now */
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies (s->conn))) {
        /* payload: "<worker id> <integration id>"; neither contains a space */
        char *space = strchr (n->extra, ' ');
        if (space) {
            *space = '\0';
            cb (arg, n->extra, space + 1);
        }
        PQfreemem (n);
    }
}

/* Runs one statement; on failure returns NULL and classifies it. A dead connection is dropped
 * so that the next call reconnects. */
static PGresult *
store_run (store_t *s, const char *sql, int n, const char *const *values, const int *lengths,
           const int *formats, ExecStatusType want, fr_status_t *st, char *err, size_t errlen)
{
    *st = store_connect (s, err, errlen);
    if (*st != FR_OK)
        return NULL;
    PGresult *res = PQexecParams (s->conn, sql, n, NULL, values, lengths, formats, 0);
    if (PQresultStatus (res) == want)
        return res;
    char why [256];
    store_error_text (s->conn, res, why, sizeof why);
    PQclear (res);
    if (PQstatus (s->conn) != CONNECTION_OK) {
        snprintf (err, errlen, "database connection lost: %s", why);
        store_disconnect (s);
        *st = FR_DATABASE_UNAVAILABLE;
    }
    else {
        snprintf (err, errlen, "database statement failed: %s", why);
        *st = FR_INTERNAL;
    }
    return NULL;
}

PGresult *
store_exec (store_t *s, const char *sql, int n, const char *const *values, const int *lengths,
            const int *formats, int want_tuples, fr_status_t *st, char *err, size_t errlen)
{
    return store_run (s, sql, n, values, lengths, formats, want_tuples ? PGRES_TUPLES_OK : PGRES_COMMAND_OK,
                      st, err, errlen);
}

const char *
store_worker_id (const store_t *s)
{
    return s->worker_id;
}

static fr_status_t
store_simple (store_t *s, const char *sql, char *err, size_t errlen)
{
    fr_status_t st;
    PGresult *res = store_run (s, sql, 0, NULL, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

static void
store_rollback (store_t *s)
{
    if (s->conn && PQtransactionStatus (s->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec (s->conn, "ROLLBACK");
        PQclear (res);
    }
}

static char *
dup_or_null (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? NULL : mem_strdup (PQgetvalue (res, row, col));
}

static int64_t
int_at (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? 0 : strtoll (PQgetvalue (res, row, col), NULL, 10);
}

static unsigned char *
bytea_at (const PGresult *res, int row, int col, size_t *len)
{
    *len = 0;
    if (PQgetisnull (res, row, col))
        return NULL;
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, row, col), &n);
    if (!raw)
        return NULL;
    unsigned char *out = mem_alloc (n ? n : 1);
    memcpy (out, raw, n);
    PQfreemem (raw);
    *len = n;
    return out;
}

static void
store_fill_row (const PGresult *res, store_row_t *row)
{
    memset (row, 0, sizeof *row);
    row->id = dup_or_null (res, 0, 0);
    row->provider = dup_or_null (res, 0, 1);
    row->status = dup_or_null (res, 0, 2);
    row->key_id = (int32_t) int_at (res, 0, 3);
    row->access_ct = bytea_at (res, 0, 4, &row->access_ct_len);
    row->access_expires_at = int_at (res, 0, 5);
    row->refresh_ct = bytea_at (res, 0, 6, &row->refresh_ct_len);
    row->refresh_fingerprint = dup_or_null (res, 0, 7);
    row->generation = int_at (res, 0, 8);
    row->scopes = dup_or_null (res, 0, 9);
    row->last_error_code = dup_or_null (res, 0, 10);
    row->last_error_message = dup_or_null (res, 0, 11);
    row->last_error_at = int_at (res, 0, 12);
    row->last_refresh_at = int_at (res, 0, 13);
    row->created_at = int_at (res, 0, 14);
    row->updated_at = int_at (res, 0, 15);
    row->lease_owner = dup_or_null (res, 0, 16);
    row->lease_id = int_at (res, 0, 17);
    row->lease_ms_left = int_at (res, 0, 18);
    row->refresh_token_missing = strcmp (PQgetvalue (res, 0, 19), "t") == 0;
}

void
store_row_clear (store_row_t *row)
{
    mem_free (row->id);
    mem_free (row->provider);
    mem_free (row->status);
    if (row->access_ct)
        mem_wipe (row->access_ct, row->access_ct_len);
    mem_free (row->access_ct);
    if (row->refresh_ct)
        mem_wipe (row->refresh_ct, row->refresh_ct_len);
    mem_free (row->refresh_ct);
    mem_free (row->refresh_fingerprint);
    mem_free (row->scopes);
    mem_free (row->last_error_code);
    mem_free (row->last_error_message);
    mem_free (row->lease_owner);
    memset (row, 0, sizeof *row);
}

fr_status_t
store_load (store_t *s, const char *id, store_row_t *row, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { id };
    PGresult *res = store_run (s, "SELECT " ROW_COLUMNS " FROM integrations WHERE id = $1",
                               1, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 0) {
        snprintf (err, errlen, "integration \"%s\" does not exist", id);
        st = FR_NOT_FOUND;
    }
    else
        store_fill_row (res, row);
    PQclear (res);
    return st;
}

fr_status_t
store_claim (store_t *s, const char *id, int64_t known_generation, int64_t valid_until,
             int forced, int64_t lease_ms, store_claim_t *outcome, store_row_t *row,
             char *err, size_t errlen)
{
    fr_status_t st;
    PGresult *res = NULL;
    memset (row, 0, sizeof *row);
    if ((st = store_simple (s, "BEGIN", err, errlen)) != FR_OK)
        return st;
    const char *values [] = { id };
    res = store_run (s, "SELECT " ROW_COLUMNS " FROM integrations WHERE id = $1 FOR UPDATE",
                     1, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        goto out;
    if (PQntuples (res) == 0) {
        snprintf (err, errlen, "integration \"%s\" does not exist", id);
        st = FR_NOT_FOUND;
        goto out;
    }
    store_fill_row (res, row);
    PQclear (res);
    res = NULL;

    if (strcmp (row->status, "active") != 0)
        *outcome = CLAIM_INACTIVE;
    else
    if (row->access_ct && ((forced && row->generation > known_generation)
                       || (!forced && row->access_expires_at >= valid_until)))
        *outcome = CLAIM_FRESH;
    else
    if (row->lease_ms_left > 0)
        *outcome = CLAIM_BUSY;
    else {
        uint64_t r = 0;
        for (int i = 0; i < 4; i++)
            r = (r << 16) ^ (uint64_t) (random () & 0xffff);
        int64_t lease_id = (int64_t) (r & 0x7fffffffffffffffULL);
        if (lease_id == 0)
            lease_id = 1;
        char lid [32], ms [32];
        snprintf (lid, sizeof lid, "%" PRId64, lease_id);
        snprintf (ms, sizeof ms, "%" PRId64, lease_ms);
        const char *v [] = { id, s->worker_id, lid, ms };
        res = store_run (s, "UPDATE integrations SET lease_owner = $2, lease_id = $3, "
                            "lease_expires_at = clock_timestamp() + $4 * interval '1 millisecond' WHERE id = $1",
                         4, v, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
        if (!res)
            goto out;
        mem_free (row->lease_owner);
        row->lease_owner = mem_strdup (s->worker_id);
        row->lease_id = lease_id;
        row->lease_ms_left = lease_ms;
        *outcome = CLAIM_ACQUIRED;
    }
    PQclear (res);
    res = NULL;
    st = store_simple (s, "COMMIT", err, errlen);
out:
    PQclear (res);
    if (st != FR_OK) {
        store_rollback (s);
        store_row_clear (row);
    }
    return st;
}

fr_status_t
store_commit_refresh (store_t *s, const store_commit_t *c, int *conflict, char *err, size_t errlen)
{
    fr_status_t st;
    char gen [32], key [32], exp [32];
    snprintf (gen, sizeof gen, "%" PRId64, c->expected_generation);
    snprintf (key, sizeof key, "%" PRId32, c->key_id);
    snprintf (exp, sizeof exp, "%" PRId64, c->access_expires_at);
    *conflict = 0;
    /* One statement, so one round trip: the UPDATE locks the row and is the compare-and-set;
     * the chain row and the notification commit with it or not at all. The check is on the
     * generation alone: tokens the provider has just issued are the newest there are, so they
     * are kept even when a stalled worker's lease was overtaken (the overtaker then conflicts). */
    const char *values [] = { c->id, gen, key, (const char *) c->access_ct, exp, (const char *) c->refresh_ct,
                              c->refresh_fingerprint, c->scopes, s->worker_id, c->rotated ? "true" : "false" };
    int lengths [] = { 0, 0, 0, (int) c->access_ct_len, 0, (int) c->refresh_ct_len, 0, 0, 0, 0 };
    int formats [] = { 0, 0, 0, 1, 0, 1, 0, 0, 0, 0 };
    PGresult *res = store_run (s,
        "WITH u AS ("
        "  UPDATE integrations SET key_id = $3, access_token = $4, access_expires_at = to_timestamp($5::bigint),"
        "    refresh_token = $6, refresh_fingerprint = $7, generation = generation + 1,"
        "    scopes = COALESCE(string_to_array($8, ' '), scopes),"
        "    lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL, last_refresh_at = now(),"
        "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()"
        "  WHERE id = $1 AND generation = $2::bigint AND status = 'active'"
        "  RETURNING generation),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated)"
        "  SELECT $1, u.generation, $9, 'refreshed', $7, $10::boolean FROM u RETURNING generation)"
        "SELECT generation, pg_notify('" NOTIFY_CHANNEL "', $9 || ' ' || $1) FROM c",
        10, values, lengths, formats, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    int committed = PQntuples (res) == 1;
    PQclear (res);
    if (committed)
        return FR_OK;

    *conflict = 1;
    const char *v2 [] = { c->id, s->worker_id, c->refresh_fingerprint, c->rotated ? "true" : "false" };
    res = store_run (s,
        "INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)"
        " SELECT id, generation, $2, 'conflict', $3, $4::boolean,"
        "  'another refresh, import or status change committed first; this result was not stored'"
        " FROM integrations WHERE id = $1",
        4, v2, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

fr_status_t
store_record_failure (store_t *s, const char *id, int64_t expected_generation, int64_t lease_id,
                      const char *outcome, const char *new_status, const char *error_code,
                      const char *error_message, const char *fingerprint, int *stale,
                      char *err, size_t errlen)
{
    fr_status_t st;
    char gen [32], lid [32];
    snprintf (gen, sizeof gen, "%" PRId64, expected_generation);
    snprintf (lid, sizeof lid, "%" PRId64, lease_id);
    /* The status and last error change only when the failure is about the current generation:
     * an invalid_grant for a refresh token someone already replaced says nothing of the new one. */
    const char *values [] = { id, gen, lid, new_status, error_code, error_message, s->worker_id, outcome, fingerprint };
    PGresult *res = store_run (s,
        "WITH cur AS (SELECT generation = $2::bigint AS current FROM integrations WHERE id = $1 FOR UPDATE),"
        " u AS ("
        "  UPDATE integrations i SET"
        "    status = CASE WHEN cur.current AND $4::text IS NOT NULL THEN $4::text ELSE i.status END,"
        "    last_error_code = CASE WHEN cur.current THEN $5 ELSE i.last_error_code END,"
        "    last_error_message = CASE WHEN cur.current THEN $6 ELSE i.last_error_message END,"
        "    last_error_at = CASE WHEN cur.current THEN now() ELSE i.last_error_at END,"
        "    lease_owner = CASE WHEN i.lease_id = $3::bigint THEN NULL ELSE i.lease_owner END,"
        "    lease_expires_at = CASE WHEN i.lease_id = $3::bigint THEN NULL ELSE i.lease_expires_at END,"
        "    lease_id = CASE WHEN i.lease_id = $3::bigint THEN NULL ELSE i.lease_id END,"
        "    updated_at = now()"
        "  FROM cur WHERE i.id = $1 RETURNING i.generation, cur.current),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
        "  SELECT $1, u.generation, $7, $8, $9, $6 FROM u RETURNING generation)"
        "SELECT u.current, pg_notify('" NOTIFY_CHANNEL "', $7 || ' ' || $1) FROM u, c",
        9, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 0) {
        snprintf (err, errlen, "integration \"%s\" does not exist", id);
        st = FR_NOT_FOUND;
    }
    else
        *stale = strcmp (PQgetvalue (res, 0, 0), "t") != 0;
    PQclear (res);
    return st;
}

fr_status_t
store_release_lease (store_t *s, const char *id, int64_t lease_id, char *err, size_t errlen)
{
    fr_status_t st;
    char lid [32];
    snprintf (lid, sizeof lid, "%" PRId64, lease_id);
    const char *values [] = { id, lid };
    PGresult *res = store_run (s, "UPDATE integrations SET lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL"
                                  " WHERE id = $1 AND lease_id = $2::bigint",
                               2, values, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

fr_status_t
store_release_own_leases (store_t *s, int64_t *count, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { s->worker_id };
    *count = 0;
    PGresult *res = store_run (s, "UPDATE integrations SET lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL"
                                  " WHERE lease_owner = $1 AND lease_expires_at > clock_timestamp()",
                               1, values, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    if (res)
        *count = strtoll (PQcmdTuples (res), NULL, 10);
    PQclear (res);
    return st;
}

fr_status_t
store_sweep_candidates (store_t *s, int64_t horizon_s, const char *provider, int64_t idle_s, int64_t limit,
                        char ***ids, char ***providers, size_t *count, char *err, size_t errlen)
{
    fr_status_t st;
    char horizon [32], idle [32], lim [32];
    snprintf (horizon, sizeof horizon, "%" PRId64, horizon_s);
    snprintf (idle, sizeof idle, "%" PRId64, idle_s);
    snprintf (lim, sizeof lim, "%" PRId64, limit);
    const char *values [] = { horizon, provider, idle, lim };
    *ids = NULL;
    *providers = NULL;
    *count = 0;
    PGresult *res = store_run (s,
        "SELECT id, provider FROM integrations"
        " WHERE status = 'active' AND refresh_token IS NOT NULL"
        "   AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())"
        "   AND CASE WHEN $2::text IS NULL"
        "       THEN access_expires_at IS NULL OR access_expires_at < now() + $1::bigint * interval '1 second'"
        "       ELSE provider = $2 AND COALESCE(last_refresh_at, created_at) < now() - $3::bigint * interval '1 second' END"
        " ORDER BY access_expires_at NULLS FIRST LIMIT $4::bigint",
        4, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    int n = PQntuples (res);
    *ids = mem_alloc ((size_t) (n ? n : 1) * sizeof **ids);
    *providers = mem_alloc ((size_t) (n ? n : 1) * sizeof **providers);
    for (int i = 0; i < n; i++) {
        (*ids) [i] = mem_strdup (PQgetvalue (res, i, 0));
        (*providers) [i] = mem_strdup (PQgetvalue (res, i, 1));
    }
    *count = (size_t) n;
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_import (store_t *s, const store_import_t *imp, char *err, size_t errlen)
{
    fr_status_t st;
    char key [32], exp [32];
    snprintf (key, sizeof key, "%" PRId32, imp->key_id);
    snprintf (exp, sizeof exp, "%" PRId64, imp->access_expires_at);
    const char *values [] = { imp->id, imp->provider, key, (const char *) imp->access_ct,
                              imp->access_ct ? exp : NULL, (const char *) imp->refresh_ct,
                              imp->refresh_fingerprint, imp->scopes ? imp->scopes : "", s->worker_id };
    int lengths [] = { 0, 0, 0, (int) imp->access_ct_len, 0, (int) imp->refresh_ct_len, 0, 0, 0 };
    int formats [] = { 0, 0, 0, 1, 0, 1, 0, 0, 0 };
    /* A re-import is a reconnect: new tokens, status active, the history kept, and the
     * generation bumped so that a refresh still in flight for the old chain cannot commit. */
    PGresult *res = store_run (s,
        "WITH u AS ("
        "  INSERT INTO integrations (id, provider, status, key_id, access_token, access_expires_at,"
        "    refresh_token, refresh_fingerprint, generation, scopes)"
        "  VALUES ($1, $2, 'active', $3::integer, $4, to_timestamp($5::bigint), $6, $7, 1, string_to_array($8, ' '))"
        "  ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, status = 'active',"
        "    key_id = EXCLUDED.key_id, access_token = EXCLUDED.access_token,"
        "    access_expires_at = EXCLUDED.access_expires_at, refresh_token = EXCLUDED.refresh_token,"
        "    refresh_fingerprint = EXCLUDED.refresh_fingerprint, generation = integrations.generation + 1,"
        "    scopes = EXCLUDED.scopes, lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL,"
        "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()"
        "  RETURNING generation),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint)"
        "  SELECT $1, u.generation, $9, 'imported', $7 FROM u RETURNING generation)"
        "SELECT generation, pg_notify('" NOTIFY_CHANNEL "', $9 || ' ' || $1) FROM c",
        9, values, lengths, formats, PGRES_TUPLES_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

fr_status_t
store_history (store_t *s, const char *id, int64_t limit, store_chain_t **rows, size_t *count,
               char *err, size_t errlen)
{
    fr_status_t st;
    char lim [32];
    snprintf (lim, sizeof lim, "%" PRId64, limit);
    const char *values [] = { id, lim };
    *rows = NULL;
    *count = 0;
    PGresult *res = store_run (s,
        "SELECT generation, extract(epoch FROM at)::bigint, outcome, worker, refresh_fingerprint, rotated, detail"
        " FROM token_chain WHERE integration_id = $1 ORDER BY seq DESC LIMIT $2::bigint",
        2, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    int n = PQntuples (res);
    *rows = mem_alloc ((size_t) (n ? n : 1) * sizeof **rows);
    for (int i = 0; i < n; i++) {
        store_chain_t *r = &(*rows) [i];
        r->generation = int_at (res, i, 0);
        r->at = int_at (res, i, 1);
        r->outcome = dup_or_null (res, i, 2);
        r->worker = dup_or_null (res, i, 3);
        r->refresh_fingerprint = dup_or_null (res, i, 4);
        r->rotated = strcmp (PQgetvalue (res, i, 5), "t") == 0;
        r->detail = dup_or_null (res, i, 6);
    }
    *count = (size_t) n;
    PQclear (res);
    return FR_OK;
}

void
store_chain_free (store_chain_t **rows, size_t count)
{
    if (!rows || !*rows)
        return;
    for (size_t i = 0; i < count; i++) {
        mem_free ((*rows) [i].outcome);
        mem_free ((*rows) [i].worker);
        mem_free ((*rows) [i].refresh_fingerprint);
        mem_free ((*rows) [i].detail);
    }
    mem_free (*rows);
    *rows = NULL;
}
