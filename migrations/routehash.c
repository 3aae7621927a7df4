/* routehash.c - filling in the routing hash of rows made before migration 009 (docs/operations.md,
 * "Schema and upgrades"). Workers keep serving meanwhile: rows are read without locks, and each
 * batch is one statement that locks only the rows it fills, skips those another session holds
 * (SKIP LOCKED: a refresh's claim or commit is never held up, and never holds this up), and writes
 * only a hash that is still missing. The lock taken is the one an UPDATE of a non-key column takes
 * anyway (FOR NO KEY UPDATE), so a chain row being inserted (its foreign key's KEY SHARE lock) is
 * not in the way. */
#include "routehash.h"
#include "log.h"
#include "mem.h"
#include "pgarray.h"
#include "ring.h"
#include "stop.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUTEHASH_PRESENT_SQL \
    "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass ('integrations')" \
    " AND attname = 'route_hash' AND attnum > 0 AND NOT attisdropped"
/* The next rows without a hash after the cursor $1, in the primary key's order: through
 * integrations_route_hash_missing (021), which holds those rows alone, so a look that finds none
 * reads none (without it, every row of the table is read to see its hash). */
#define ROUTEHASH_PICK_SQL \
    "SELECT id FROM integrations WHERE route_hash IS NULL AND id > $1 ORDER BY id LIMIT $2::integer"
/* Fills the rows of ids $1 (hashes $2) still without one; answers each id it filled (true) and
 * each it had to skip because another session holds it (false). Ids filled or deleted by someone
 * else meanwhile are not answered. */
#define ROUTEHASH_FILL_SQL \
    "WITH v AS (SELECT * FROM unnest ($1::text[], $2::bigint[]) AS v (id, h))," \
    " t AS (SELECT i.id, v.h FROM integrations i JOIN v ON i.id = v.id" \
    "   WHERE i.route_hash IS NULL FOR NO KEY UPDATE OF i SKIP LOCKED)," \
    " u AS (UPDATE integrations SET route_hash = t.h FROM t WHERE integrations.id = t.id RETURNING integrations.id)" \
    " SELECT v.id, u.id IS NOT NULL FROM v JOIN integrations i ON i.id = v.id LEFT JOIN u ON u.id = v.id" \
    " WHERE u.id IS NOT NULL OR i.route_hash IS NULL"

#define ROUTEHASH_TRIES     4           /* the first, and three more for rows that were held */
#define ROUTEHASH_PAUSE_MS  1000        /* before the first retry; doubled before each next one */
#define ROUTEHASH_MAX_HELD  100000      /* held ids remembered for a retry; beyond, only counted */
#define ROUTEHASH_LOG_EVERY 100000      /* rows between two progress lines in the log */

/* Ids held by another session, to try again. */
typedef struct {
    char **ids;
    size_t n;
    int64_t dropped;                    /* held, but past ROUTEHASH_MAX_HELD: not tried again */
} routehash_held_t;

static void
routehash_held_add (routehash_held_t *held, const char *id)
{
    if (held->n == ROUTEHASH_MAX_HELD) {
        held->dropped++;
        return;
    }
    if (!held->ids)
        held->ids = mem_alloc (ROUTEHASH_MAX_HELD * sizeof *held->ids);
    held->ids [held->n++] = mem_strdup (id);
}

static void
routehash_held_free (routehash_held_t *held)
{
    for (size_t i = 0; i < held->n; i++)
        mem_free (held->ids [i]);
    mem_free (held->ids);
    memset (held, 0, sizeof *held);
}

static fr_status_t
routehash_fail (PGconn *conn, const PGresult *res, db_error_t *err)
{
    db_error_from_result (err, res, conn);
    return err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
}

fr_status_t
routehash_present (PGconn *conn, int *present, db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = PQexec (conn, ROUTEHASH_PRESENT_SQL);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        st = routehash_fail (conn, res, err);
    else
        *present = strcmp (PQgetvalue (res, 0, 0), "0") != 0;
    PQclear (res);
    return st;
}

/* One statement over n ids: counts what it filled, and adds what was held to held. */
static fr_status_t
routehash_batch (PGconn *conn, const char *const *ids, size_t n, routehash_held_t *held, int64_t *filled,
                 db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = NULL;
    size_t room = 2;
    for (size_t i = 0; i < n; i++)
        room += 2 * strlen (ids [i]) + 3;               /* every byte escaped, quotes, comma */
    pgarray_t *ida = pgarray_new (room);
    pgarray_t *hashes = pgarray_new (n * 22 + 2);       /* signed 64-bit decimals and commas */
    for (size_t i = 0; i < n; i++) {
        pgarray_add_text (ida, ids [i]);
        pgarray_add_int (hashes, (int64_t) ring_hash (ids [i], strlen (ids [i])));
    }
    const char *values [] = { pgarray_text (ida), pgarray_text (hashes) };
    if (!values [0] || !values [1]) {
        db_error_printf (err, "could not build the list of %zu ids", n);      /* the room is exact */
        st = FR_INTERNAL;
        goto out;
    }
    res = PQexecParams (conn, ROUTEHASH_FILL_SQL, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        st = routehash_fail (conn, res, err);
        goto out;
    }
    for (int r = 0; r < PQntuples (res); r++)
        if (strcmp (PQgetvalue (res, r, 1), "t") == 0)
            (*filled)++;
        else
            routehash_held_add (held, PQgetvalue (res, r, 0));
out:
    PQclear (res);
    pgarray_destroy (&ida);
    pgarray_destroy (&hashes);
    return st;
}

static void
routehash_log_progress (int64_t before, int64_t now)
{
    if (before / ROUTEHASH_LOG_EVERY != now / ROUTEHASH_LOG_EVERY)
        log_info (NULL, NULL, "filled in the routing hash of %lld integrations so far", (long long) now);
}

/* One reading of the whole table in id order, batch rows at a time. */
static fr_status_t
routehash_pass (PGconn *conn, int batch, routehash_held_t *held, int64_t *filled, db_error_t *err)
{
    fr_status_t st = FR_OK;
    char *last = mem_strdup ("");
    const char **ids = mem_alloc ((size_t) batch * sizeof *ids);
    char limit [16];
    snprintf (limit, sizeof limit, "%d", batch);
    for (;;) {
        if (stop_requested ()) {
            /* between two batches: the handler's cancel had no statement to end */
            db_error_printf (err, "stopped by %s", stop_name ());
            st = FR_INTERNAL;
            break;
        }
        const char *values [] = { last, limit };
        PGresult *res = PQexecParams (conn, ROUTEHASH_PICK_SQL, 2, NULL, values, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_TUPLES_OK) {
            st = routehash_fail (conn, res, err);
            PQclear (res);
            break;
        }
        int n = PQntuples (res);
        for (int i = 0; i < n; i++)
            ids [i] = PQgetvalue (res, i, 0);
        int64_t before = *filled;
        if (n > 0) {
            mem_free (last);
            last = mem_strdup (ids [n - 1]);
            st = routehash_batch (conn, ids, (size_t) n, held, filled, err);
        }
        PQclear (res);
        routehash_log_progress (before, *filled);
        if (st != FR_OK || n < batch)
            break;
    }
    mem_free (ids);
    mem_free (last);
    return st;
}

static void
routehash_sleep_ms (long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
        ;
}

fr_status_t
routehash_fill (PGconn *conn, int batch, routehash_result_t *out, db_error_t *err)
{
    routehash_held_t held = { NULL, 0, 0 }, again = { NULL, 0, 0 };
    memset (out, 0, sizeof *out);
    fr_status_t st = routehash_pass (conn, batch, &held, &out->filled, err);
    /* a refresh holds its row for milliseconds: a moment later it is free */
    long pause_ms = ROUTEHASH_PAUSE_MS;
    for (int tries = 1; st == FR_OK && held.n && tries < ROUTEHASH_TRIES; tries++, pause_ms *= 2) {
        routehash_sleep_ms (pause_ms);
        if (stop_requested ()) {
            db_error_printf (err, "stopped by %s", stop_name ());
            st = FR_INTERNAL;
            break;
        }
        again = held;
        memset (&held, 0, sizeof held);
        held.dropped = again.dropped;
        for (size_t k = 0; st == FR_OK && k < again.n; k += (size_t) batch) {
            size_t n = again.n - k < (size_t) batch ? again.n - k : (size_t) batch;
            st = routehash_batch (conn, (const char *const *) again.ids + k, n, &held, &out->filled, err);
        }
        routehash_held_free (&again);
    }
    out->remaining = (int64_t) held.n + held.dropped;
    routehash_held_free (&held);
    if (st == FR_OK && (out->filled || out->remaining))
        log_info (NULL, NULL, "filled in the routing hash of %lld integrations, %lld held by other sessions left "
                  "without one", (long long) out->filled, (long long) out->remaining);
    return st;
}
