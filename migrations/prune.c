/* prune.c - event retention (docs/operations.md, "Events and webhooks"). Workers keep serving
 * meanwhile: each batch is one statement that locks only rows no other session holds (SKIP
 * LOCKED: a claim, a delivery's record or a fan-out is never held up, and never holds this up)
 * and deletes an event only together with every one of its deliveries, so the foreign key never
 * fails and no delivery is left without its event.
 *
 * Three kinds of old event are kept, because deleting them would change what the workers do:
 *   - one with a delivery a worker has leased: it is being sent, and its record would find no
 *     row (left for a later run, and counted as held);
 *   - one whose dedupe_key a forecast would write again: the forecasts (worker/store_events.c)
 *     insert an "expiring" event only when no event holds its key ('expiring:idle:ID:GENERATION',
 *     'expiring:grant:ID:SEQ of the grant's chain row'), and it is their only memory of having
 *     reported a condition. While the condition can come back (the integration still at that
 *     generation; that grant still its latest), deleting the row would send the same warning
 *     again. A generation only grows and the chain is append-only, so once the integration moved
 *     on the key can never be written again, and the event goes. A key of any other form (a later
 *     release's) is kept;
 *   - an integration's latest needs_reconnect, connected, reconnected or recovered event: the
 *     chain's trigger (events_from_chain, migration 022) reads it to decide whether a refresh
 *     after an invalid_grant is a "recovered" event. One row per integration at most. */
#include "prune.h"
#include "log.h"
#include "stop.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRUNE_PRESENT_SQL "SELECT to_regclass ('events') IS NOT NULL AND to_regclass ('event_deliveries') IS NOT NULL"

/* The run's cutoff, fixed at its start (a long run does not chase a moving line), and the seq of
 * the newest event created before it, found by events_by_time: the batches read the primary key
 * up to there and no further, so the last one does not read through every recent event. An event
 * whose transaction began before the cutoff but wrote it after that one is left for the next run. */
#define PRUNE_BOUNDS_SQL \
    "SELECT c.cutoff::text, COALESCE ((SELECT e.seq FROM events e WHERE e.created_at < c.cutoff" \
    "                                  ORDER BY e.created_at DESC LIMIT 1), 0)" \
    " FROM (SELECT now () - make_interval (days => $1::int) AS cutoff) c"

/* The types events_from_chain reads back (the integration's latest of them). */
#define PRUNE_STATE_TYPES "('needs_reconnect', 'connected', 'reconnected', 'recovered')"

/* One batch: the next $4 events after seq $1 (up to $2) created before $3. c: the candidates; k:
 * why one is kept (NULL: it may go). An idle key is live while it is the one the forecast makes
 * for the integration's current generation; a grant key while it is the one of the integration's
 * latest grant (token_chain_grants). l: the events that may go, locked unless another session
 * holds them (a fan-out inserting a delivery holds its event's key); d: their deliveries not
 * leased, locked the same way, the lease checked again on the row locked. ok: the events all of
 * whose deliveries are in d. The two deletes are one statement: the foreign key is checked at its
 * end, when both are done. Answers: candidates, the last one's seq, events and deliveries deleted,
 * deliveries deleted while pending, kept for a dedupe key, kept as the latest state event, held. */
#define PRUNE_BATCH_SQL \
    "WITH c AS MATERIALIZED (" \
    "    SELECT e.seq, e.type, e.integration_id, e.dedupe_key FROM events e" \
    "    WHERE e.seq > $1::bigint AND e.seq <= $2::bigint AND e.created_at < $3::timestamptz" \
    "    ORDER BY e.seq LIMIT $4::int)," \
    " k AS MATERIALIZED (" \
    "    SELECT c.seq, CASE" \
    "      WHEN c.dedupe_key IS NULL THEN NULL" \
    "      WHEN c.dedupe_key LIKE 'expiring:idle:%' THEN CASE WHEN EXISTS (SELECT 1 FROM integrations i" \
    "          WHERE i.id = c.integration_id AND c.dedupe_key = 'expiring:idle:' || i.id || ':' || i.generation)" \
    "        THEN 'dedupe' END" \
    "      WHEN c.dedupe_key LIKE 'expiring:grant:%' THEN CASE WHEN c.dedupe_key = 'expiring:grant:' || c.integration_id" \
    "          || ':' || (SELECT max (g.seq) FROM token_chain g WHERE g.integration_id = c.integration_id" \
    "                     AND g.outcome IN ('imported', 'connected'))" \
    "        THEN 'dedupe' END" \
    "      ELSE 'dedupe' END AS kept, c.type, c.integration_id FROM c)," \
    " kk AS MATERIALIZED (" \
    "    SELECT k.seq, COALESCE (k.kept, CASE WHEN k.type IN " PRUNE_STATE_TYPES " AND NOT EXISTS (" \
    "        SELECT 1 FROM events n WHERE n.integration_id = k.integration_id AND n.seq > k.seq" \
    "        AND n.type IN " PRUNE_STATE_TYPES ") THEN 'latest' END) AS kept FROM k)," \
    " l AS MATERIALIZED (" \
    "    SELECT e.seq FROM events e WHERE e.seq IN (SELECT seq FROM kk WHERE kept IS NULL)" \
    "    FOR UPDATE OF e SKIP LOCKED)," \
    " d AS MATERIALIZED (" \
    "    SELECT x.event_seq, x.endpoint FROM event_deliveries x WHERE x.event_seq IN (SELECT seq FROM l)" \
    "      AND (x.lease_expires_at IS NULL OR x.lease_expires_at <= now ())" \
    "    FOR UPDATE OF x SKIP LOCKED)," \
    " ok AS MATERIALIZED (" \
    "    SELECT l.seq FROM l WHERE NOT EXISTS (SELECT 1 FROM event_deliveries a WHERE a.event_seq = l.seq" \
    "      AND NOT EXISTS (SELECT 1 FROM d WHERE d.event_seq = a.event_seq AND d.endpoint = a.endpoint)))," \
    " dd AS (DELETE FROM event_deliveries x USING ok WHERE x.event_seq = ok.seq RETURNING x.state)," \
    " de AS (DELETE FROM events x USING ok WHERE x.seq = ok.seq RETURNING x.seq)" \
    " SELECT (SELECT count(*) FROM c), (SELECT max (seq) FROM c), (SELECT count(*) FROM de)," \
    "  (SELECT count(*) FROM dd), (SELECT count(*) FROM dd WHERE state = 'pending')," \
    "  (SELECT count(*) FROM kk WHERE kept = 'dedupe'), (SELECT count(*) FROM kk WHERE kept = 'latest')," \
    "  (SELECT count(*) FROM kk WHERE kept IS NULL) - (SELECT count(*) FROM de)"

#define PRUNE_LOCK_TIMEOUT "200"        /* ms: below the workers' own, so none of them queues behind a batch */
#define PRUNE_TRIES         4           /* a batch refused by a lock or a race, and three more tries */
#define PRUNE_PAUSE_MS      200         /* before the first retry; doubled before each next one */
#define PRUNE_LOG_EVERY     100000      /* events between two progress lines in the log */

static fr_status_t
prune_fail (PGconn *conn, const PGresult *res, db_error_t *err)
{
    db_error_from_result (err, res, conn);
    return err->lost ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
}

fr_status_t
prune_present (PGconn *conn, int *present, db_error_t *err)
{
    fr_status_t st = FR_OK;
    PGresult *res = PQexec (conn, PRUNE_PRESENT_SQL);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        st = prune_fail (conn, res, err);
    else
        *present = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    PQclear (res);
    return st;
}

static void
prune_sleep_ms (long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* 1 for a statement that failed on a lock not had in time, a deadlock, or a delivery a fan-out
 * made for one of its events meanwhile (the foreign key): it goes through a moment later. */
static int
prune_retryable (const db_error_t *err)
{
    return strcmp (err->sqlstate, "55P03") == 0 || strcmp (err->sqlstate, "40P01") == 0
        || strcmp (err->sqlstate, "23503") == 0;
}

/* Runs a statement that answers one row, tried again a while later when prune_retryable; the
 * result (the caller PQclears it), or NULL with *st and err set. */
static PGresult *
prune_exec (PGconn *conn, const char *sql, int n, const char *const *values, fr_status_t *st, db_error_t *err)
{
    long pause_ms = PRUNE_PAUSE_MS;
    for (int tries = 1;; tries++, pause_ms *= 2) {
        PGresult *res = PQexecParams (conn, sql, n, NULL, values, NULL, NULL, 0);
        if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1) {
            *st = FR_OK;
            return res;
        }
        *st = prune_fail (conn, res, err);
        PQclear (res);
        if (*st != FR_INTERNAL || !prune_retryable (err) || tries == PRUNE_TRIES || stop_requested ())
            return NULL;
        log_info (NULL, NULL, "pruning events: a statement was refused (%s), trying it again", err->message);
        prune_sleep_ms (pause_ms);
        if (stop_requested ())
            return NULL;
    }
}

static int64_t
prune_value (const PGresult *res, int col)
{
    return PQgetisnull (res, 0, col) ? 0 : strtoll (PQgetvalue (res, 0, col), NULL, 10);
}

/* One batch after *after: adds what it did to out, moves *after on; *read gets how many events it
 * looked at. */
static fr_status_t
prune_batch (PGconn *conn, const char *upto, const char *cutoff, const char *limit, int64_t *after,
             int64_t *read, prune_result_t *out, db_error_t *err)
{
    fr_status_t st;
    char from [24];
    snprintf (from, sizeof from, "%lld", (long long) *after);
    const char *values [] = { from, upto, cutoff, limit };
    PGresult *res = prune_exec (conn, PRUNE_BATCH_SQL, 4, values, &st, err);
    if (!res)
        return st;
    *read = prune_value (res, 0);
    if (*read > 0)
        *after = prune_value (res, 1);
    out->events += prune_value (res, 2);
    out->deliveries += prune_value (res, 3);
    out->unsent += prune_value (res, 4);
    out->dedupe += prune_value (res, 5);
    out->latest += prune_value (res, 6);
    out->held += prune_value (res, 7);
    PQclear (res);
    return FR_OK;
}

/* Reads the cutoff (into cutoff) and the last seq to read (into upto). */
static fr_status_t
prune_bounds (PGconn *conn, int days, char *cutoff, size_t cutoff_size, char *upto, size_t upto_size,
              db_error_t *err)
{
    fr_status_t st;
    char d [16];
    snprintf (d, sizeof d, "%d", days);
    const char *values [] = { d };
    PGresult *res = prune_exec (conn, PRUNE_BOUNDS_SQL, 1, values, &st, err);
    if (!res)
        return st;
    snprintf (cutoff, cutoff_size, "%s", PQgetvalue (res, 0, 0));
    snprintf (upto, upto_size, "%s", PQgetvalue (res, 0, 1));
    PQclear (res);
    return FR_OK;
}

static void
prune_log_progress (int64_t before, int64_t now)
{
    if (before / PRUNE_LOG_EVERY != now / PRUNE_LOG_EVERY)
        log_info (NULL, NULL, "pruned %lld events so far", (long long) now);
}

fr_status_t
prune_events (PGconn *conn, int days, int batch, prune_result_t *out, db_error_t *err)
{
    char cutoff [64], upto [24], limit [16];
    int64_t after = 0;
    memset (out, 0, sizeof *out);
    snprintf (limit, sizeof limit, "%d", batch);
    /* a batch never queues behind another session's lock for long, nor keeps a worker queued
       behind it: SKIP LOCKED for rows, this for the rest (a table lock an ALTER holds) */
    fr_status_t st = db_exec (conn, "SET lock_timeout = " PRUNE_LOCK_TIMEOUT, err);
    if (st == FR_OK)
        st = prune_bounds (conn, days, cutoff, sizeof cutoff, upto, sizeof upto, err);
    while (st == FR_OK) {
        if (stop_requested ()) {
            /* between two batches: the handler's cancel had no statement to end */
            db_error_printf (err, "stopped by %s", stop_name ());
            st = FR_INTERNAL;
            break;
        }
        int64_t read = 0, before = out->events;
        st = prune_batch (conn, upto, cutoff, limit, &after, &read, out, err);
        prune_log_progress (before, out->events);
        if (read < batch)
            break;
    }
    if (out->events || out->held || out->dedupe || out->latest)
        log_info (NULL, NULL, "events older than %d days: %lld deleted with %lld deliveries; %lld left held by "
                  "workers, %lld kept for their dedupe key, %lld as their integration's latest connection event",
                  days, (long long) out->events, (long long) out->deliveries, (long long) out->held,
                  (long long) out->dedupe, (long long) out->latest);
    return st;
}
