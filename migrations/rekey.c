/* rekey.c - online re-sealing under the current key (docs/operations.md, "Roles, secrets and
 * key rotation"). Workers keep serving meanwhile: a batch is one transaction of two statements,
 * the pick and one write of all its rows, so it holds its row locks for two round trips and the
 * crypto; it skips rows another transaction holds (SKIP LOCKED) or a refresh has leased, and
 * writes a row only if its key and generation are still the ones it read, so a concurrent
 * refresh or import always wins. The generation is not changed: caches stay valid. */
#include "rekey.h"
#include "clock.h"
#include "mem.h"
#include "pgarray.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REKEY_PICK_INTEGRATIONS \
    "SELECT id, key_id, generation, access_token, refresh_token FROM integrations" \
    " WHERE key_id <> $1::integer AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)" \
    "   AND (lease_expires_at IS NULL OR lease_expires_at <= now()) AND id > $3" \
    " ORDER BY id LIMIT $2::integer FOR UPDATE SKIP LOCKED"
/* the whole batch in one statement: a row per element, each a compare-and-set on its own key
   and generation as read */
#define REKEY_SET_INTEGRATIONS \
    "UPDATE integrations i SET key_id = $1::integer, access_token = v.access_token," \
    "       refresh_token = v.refresh_token" \
    "  FROM unnest ($2::text[], $3::bytea[], $4::bytea[], $5::integer[], $6::bigint[])" \
    "       AS v (id, access_token, refresh_token, key_id, generation)" \
    " WHERE i.id = v.id AND i.key_id = v.key_id AND i.generation = v.generation" \
    "   AND (i.lease_expires_at IS NULL OR i.lease_expires_at <= now())"
#define REKEY_PICK_CONNECTS \
    "SELECT state_hash, key_id, code_verifier FROM pending_authorizations" \
    " WHERE key_id <> $1::integer AND code_verifier IS NOT NULL AND used_at IS NULL AND expires_at > now()" \
    "   AND state_hash > $3" \
    " ORDER BY state_hash LIMIT $2::integer FOR UPDATE SKIP LOCKED"
#define REKEY_SET_CONNECTS \
    "UPDATE pending_authorizations p SET key_id = $1::integer, code_verifier = v.code_verifier" \
    "  FROM unnest ($2::text[], $3::bytea[], $4::integer[]) AS v (state_hash, code_verifier, key_id)" \
    " WHERE p.state_hash = v.state_hash AND p.key_id = v.key_id AND p.used_at IS NULL"

static fr_status_t
rekey_fail (PGconn *conn, const PGresult *res, db_error_t *err)
{
    db_error_from_result (err, res, conn);
    return err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
}

fr_status_t
rekey_count (PGconn *conn, int32_t current_key_id, int64_t *integrations, int64_t *connects, db_error_t *err)
{
    char id [16];
    snprintf (id, sizeof id, "%" PRId32, current_key_id);
    const char *values [] = { id };
    fr_status_t st = FR_OK;
    PGresult *res = PQexecParams (conn, REKEY_COUNT_SQL, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        st = rekey_fail (conn, res, err);
    else {
        *integrations = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
        *connects = strtoll (PQgetvalue (res, 0, 1), NULL, 10);
    }
    PQclear (res);
    return st;
}

fr_status_t
rekey_worker_keys (PGconn *conn, int32_t key_id, rekey_worker_keys_t *out, db_error_t *err)
{
    char id [16];
    snprintf (id, sizeof id, "%" PRId32, key_id);
    const char *values [] = { id };
    fr_status_t st = FR_OK;
    memset (out, 0, sizeof *out);
    PGresult *res = PQexec (conn, "SELECT to_regclass ('worker_keys') IS NOT NULL");
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = rekey_fail (conn, res, err);
        goto out;
    }
    if (strcmp (PQgetvalue (res, 0, 0), "t") != 0)
        goto out;
    PQclear (res);
    res = PQexecParams (conn,
        "SELECT count(*) FILTER (WHERE live_until > now () AND key_id = $1::integer),"
        "       count(*) FILTER (WHERE live_until > now () AND key_id <> $1::integer),"
        "       coalesce (string_agg (key_id::text, ', ' ORDER BY key_id)"
        "                 FILTER (WHERE live_until > now () AND key_id <> $1::integer), ''),"
        "       (SELECT key_id FROM worker_keys ORDER BY seen_at DESC LIMIT 1)"
        "  FROM worker_keys", 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        st = rekey_fail (conn, res, err);
        goto out;
    }
    out->live_same = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    out->live_other = strtoll (PQgetvalue (res, 0, 1), NULL, 10);
    snprintf (out->others, sizeof out->others, "%s", PQgetvalue (res, 0, 2));
    out->has_latest = !PQgetisnull (res, 0, 3);
    if (out->has_latest)
        out->latest = (int32_t) strtol (PQgetvalue (res, 0, 3), NULL, 10);
out:
    PQclear (res);
    return st;
}

fr_status_t
rekey_count_on_key (PGconn *conn, int32_t key_id, int64_t *count, db_error_t *err)
{
    char id [16];
    snprintf (id, sizeof id, "%" PRId32, key_id);
    const char *values [] = { id };
    fr_status_t st = FR_OK;
    PGresult *res = PQexecParams (conn, REKEY_ON_KEY_SQL, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        st = rekey_fail (conn, res, err);
    else
        *count = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return st;
}

/* Opens one sealed column of a row and seals it again under the current key. *out is NULL
 * for a NULL value. -1 when it does not open. */
static int
rekey_value (const crypto_keyring_t *kr, const PGresult *res, int row, int col, int32_t key_id,
             const char *aad_row, const char *column, unsigned char **out, size_t *out_len,
             char *err, size_t errlen)
{
    char *plain = NULL;
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    int32_t new_id = 0;
    int rc = -1;
    *out = NULL;
    *out_len = 0;
    if (PQgetisnull (res, row, col))
        return 0;
    raw = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, row, col), &raw_len);
    if (!raw) {
        snprintf (err, errlen, "could not read column \"%s\" of \"%s\"", column, aad_row);
        goto out;
    }
    if (crypto_open (kr, key_id, aad_row, column, raw, raw_len, &plain, err, errlen) != FR_OK
    ||  crypto_seal (kr, aad_row, column, plain, out, out_len, &new_id, err, errlen) != FR_OK)
        goto out;                   /* err never holds the value */
    rc = 0;
out:
    mem_free_secret (&plain);
    if (raw)
        PQfreemem (raw);
    return rc;
}

#define REKEY_MAX_WARNINGS 10        /* per pass; the final count says how many in all */

/* One line per value that will not open, for the first few of a pass. */
static void
rekey_warn (int64_t failed_so_far, const char *why)
{
    if (failed_so_far < REKEY_MAX_WARNINGS)
        fprintf (stderr, "ferrule-migrate: warning: %s\n", why);
    else if (failed_so_far == REKEY_MAX_WARNINGS)
        fprintf (stderr, "ferrule-migrate: warning: more values will not open; the final count says how many\n");
}

/* Opens a batch's transaction and picks its rows (pick_sql: $1 current key, $2 limit, $3 the
 * keyset cursor). *res NULL on failure, with the transaction rolled back. */
static fr_status_t
rekey_pick (PGconn *conn, const crypto_keyring_t *kr, const char *pick_sql, int batch, const char *last,
            PGresult **res, db_error_t *err)
{
    char cur [16], lim [16];
    snprintf (cur, sizeof cur, "%" PRId32, crypto_keyring_current_id (kr));
    snprintf (lim, sizeof lim, "%d", batch);
    *res = NULL;
    fr_status_t st = db_exec (conn, "BEGIN", err);
    if (st != FR_OK)
        return st;
    const char *pv [] = { cur, lim, last };
    /* binary results for the bytea columns would need all columns binary: text is fine here */
    PGresult *r = PQexecParams (conn, pick_sql, 3, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus (r) != PGRES_TUPLES_OK) {
        st = rekey_fail (conn, r, err);
        PQclear (r);
        PQclear (PQexec (conn, "ROLLBACK"));
        return st;
    }
    *res = r;
    return FR_OK;
}

/* The cap of one array literal of a batch: the picked rows' text, hex-encoded values included,
 * twice over (a value re-sealed under another key may grow a little; escaping at most doubles
 * an id), and room for each element's quotes and separator. */
static size_t
rekey_array_cap (const PGresult *res)
{
    size_t text = 0;
    for (int i = 0; i < PQntuples (res); i++)
        for (int c = 0; c < PQnfields (res); c++)
            text += (size_t) PQgetlength (res, i, c);
    return 2 * text + 64 * (size_t) PQntuples (res) + 64;
}

/* Writes a batch's re-sealed rows with one statement (params: $1 the current key, then one
 * array literal each; n of them) and counts each row as done, or busy when the compare-and-set
 * found it changed. rows: how many the arrays hold. */
static fr_status_t
rekey_write (PGconn *conn, const char *sql, const char *cur, pgarray_t *const *arrays, int n, int64_t rows,
             int64_t *done, int64_t *busy, db_error_t *err)
{
    const char *values [8] = { cur };
    fr_status_t st = FR_OK;
    if (rows == 0)
        return FR_OK;
    for (int i = 0; i < n; i++) {
        values [i + 1] = pgarray_text (arrays [i]);
        if (!values [i + 1]) {
            db_error_printf (err, "a batch of %" PRId64 " rows is too large to write in one statement: run "
                             "rekey again with a smaller --batch", rows);
            return FR_INTERNAL;
        }
    }
    PGresult *u = PQexecParams (conn, sql, n + 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (u) != PGRES_COMMAND_OK)
        st = rekey_fail (conn, u, err);
    else {
        int64_t written = strtoll (PQcmdTuples (u), NULL, 10);
        *done += written;
        *busy += rows - written;    /* a refresh, an import or a callback got there first */
    }
    PQclear (u);
    return st;
}

/* Commits a batch that went well, rolls back one that did not. */
static fr_status_t
rekey_end (PGconn *conn, PGresult *res, fr_status_t st, db_error_t *err)
{
    PQclear (res);
    if (st == FR_OK)
        return db_exec (conn, "COMMIT", err);
    if (PQstatus (conn) == CONNECTION_OK)
        PQclear (PQexec (conn, "ROLLBACK"));
    return st;
}

/* One batch of integrations: *picked rows read, *done re-sealed, *busy changed meanwhile,
 * *failed would not open. last is the keyset cursor (the highest id seen, "" to start). */
static fr_status_t
rekey_batch_integrations (PGconn *conn, const crypto_keyring_t *kr, int batch, char *last, size_t last_len,
                          int64_t *picked, int64_t *done, int64_t *busy, int64_t *failed, db_error_t *err)
{
    PGresult *res = NULL;
    pgarray_t *arrays [5] = { NULL };
    char cur [16], verr [512];
    int64_t rows = 0;
    snprintf (cur, sizeof cur, "%" PRId32, crypto_keyring_current_id (kr));
    *picked = 0;
    fr_status_t st = rekey_pick (conn, kr, REKEY_PICK_INTEGRATIONS, batch, last, &res, err);
    if (st != FR_OK)
        return st;
    *picked = PQntuples (res);
    size_t cap = rekey_array_cap (res);
    for (int a = 0; a < 5; a++)
        arrays [a] = pgarray_new (cap);
    for (int i = 0; i < PQntuples (res); i++) {
        const char *id = PQgetvalue (res, i, 0);
        int32_t key_id = (int32_t) strtol (PQgetvalue (res, i, 1), NULL, 10);
        unsigned char *at = NULL, *rt = NULL;
        size_t at_len = 0, rt_len = 0;
        snprintf (last, last_len, "%s", id);
        if (rekey_value (kr, res, i, 3, key_id, id, "access_token", &at, &at_len, verr, sizeof verr) != 0
        ||  rekey_value (kr, res, i, 4, key_id, id, "refresh_token", &rt, &rt_len, verr, sizeof verr) != 0) {
            rekey_warn (*failed, verr);
            (*failed)++;
        }
        else {
            pgarray_add_text (arrays [0], id);
            pgarray_add_bytea (arrays [1], at, at_len);
            pgarray_add_bytea (arrays [2], rt, rt_len);
            pgarray_add_int (arrays [3], key_id);
            pgarray_add_int (arrays [4], strtoll (PQgetvalue (res, i, 2), NULL, 10));
            rows++;
        }
        if (at)
            mem_wipe (at, at_len);
        if (rt)
            mem_wipe (rt, rt_len);
        mem_free (at);
        mem_free (rt);
    }
    st = rekey_write (conn, REKEY_SET_INTEGRATIONS, cur, arrays, 5, rows, done, busy, err);
    for (int a = 0; a < 5; a++)
        pgarray_destroy (&arrays [a]);
    return rekey_end (conn, res, st, err);
}

/* The same for live connects' PKCE verifiers (associated data: the state hash). */
static fr_status_t
rekey_batch_connects (PGconn *conn, const crypto_keyring_t *kr, int batch, char *last, size_t last_len,
                      int64_t *picked, int64_t *done, int64_t *busy, int64_t *failed, db_error_t *err)
{
    PGresult *res = NULL;
    pgarray_t *arrays [3] = { NULL };
    char cur [16], verr [512];
    int64_t rows = 0;
    snprintf (cur, sizeof cur, "%" PRId32, crypto_keyring_current_id (kr));
    *picked = 0;
    fr_status_t st = rekey_pick (conn, kr, REKEY_PICK_CONNECTS, batch, last, &res, err);
    if (st != FR_OK)
        return st;
    *picked = PQntuples (res);
    size_t cap = rekey_array_cap (res);
    for (int a = 0; a < 3; a++)
        arrays [a] = pgarray_new (cap);
    for (int i = 0; i < PQntuples (res); i++) {
        const char *state_hash = PQgetvalue (res, i, 0);
        int32_t key_id = (int32_t) strtol (PQgetvalue (res, i, 1), NULL, 10);
        unsigned char *cv = NULL;
        size_t cv_len = 0;
        snprintf (last, last_len, "%s", state_hash);
        if (rekey_value (kr, res, i, 2, key_id, state_hash, "code_verifier", &cv, &cv_len, verr, sizeof verr) != 0) {
            rekey_warn (*failed, verr);
            (*failed)++;
            continue;
        }
        pgarray_add_text (arrays [0], state_hash);
        pgarray_add_bytea (arrays [1], cv, cv_len);
        pgarray_add_int (arrays [2], key_id);
        rows++;
        if (cv)
            mem_wipe (cv, cv_len);
        mem_free (cv);
    }
    st = rekey_write (conn, REKEY_SET_CONNECTS, cur, arrays, 3, rows, done, busy, err);
    for (int a = 0; a < 3; a++)
        pgarray_destroy (&arrays [a]);
    return rekey_end (conn, res, st, err);
}

static double
rekey_now_s (void)
{
    return (double) clock_mono_us () / 1e6;
}

fr_status_t
rekey_run (PGconn *conn, const crypto_keyring_t *kr, int batch, double wait_s, rekey_progress_fn progress,
           void *arg, rekey_result_t *out, db_error_t *err)
{
    fr_status_t st;
    int64_t integ = 0, conns = 0, total;
    double deadline = rekey_now_s () + wait_s;
    memset (out, 0, sizeof *out);
    if ((st = rekey_count (conn, crypto_keyring_current_id (kr), &integ, &conns, err)) != FR_OK)
        return st;
    total = integ + conns;
    if (progress)
        progress (0, total, arg);
    for (;;) {
        /* one pass over everything not yet on the current key */
        char last [256] = "";
        int64_t picked = 0, busy = 0, failed = 0;
        do {
            if ((st = rekey_batch_integrations (conn, kr, batch, last, sizeof last, &picked, &out->integrations,
                                                &busy, &failed, err)) != FR_OK)
                return st;
            if (progress)
                progress (out->integrations + out->connects, total, arg);
        } while (picked > 0);
        last [0] = '\0';
        do {
            if ((st = rekey_batch_connects (conn, kr, batch, last, sizeof last, &picked, &out->connects,
                                            &busy, &failed, err)) != FR_OK)
                return st;
            if (progress)
                progress (out->integrations + out->connects, total, arg);
        } while (picked > 0);
        out->failed = failed;
        out->skipped_busy = busy;
        if ((st = rekey_count (conn, crypto_keyring_current_id (kr), &integ, &conns, err)) != FR_OK)
            return st;
        out->remaining = integ + conns;
        /* done, or nothing left but values that will not open, or out of time for leased rows */
        if (out->remaining <= failed || rekey_now_s () >= deadline)
            break;
        struct timespec pause = { 0, 250 * 1000000L };   /* leased rows: their refresh ends soon */
        while (nanosleep (&pause, &pause) < 0 && errno == EINTR)
            ;
    }
    if (progress)
        progress (out->integrations + out->connects, total > out->integrations + out->connects
                  ? total : out->integrations + out->connects, arg);
    return FR_OK;
}
