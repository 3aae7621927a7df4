/* store_events.c - the SQL of events and their deliveries (migration 006) */
#include "store_events.h"
#include "store_internal.h"
#include "crypto.h"
#include "clock.h"
#include "mem.h"
#include "pgwait.h"
#include "schema.h"
#include <assert.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store_events {
    PGconn *conn;
    char   *conninfo;
    char   *worker_id;
    char   *endpoint;                /* whose deliveries it carries; NULL: the forecasts' */
    int64_t statement_ms;
    int     stop_fd;                 /* readable once the worker is stopping: no wait goes on */
    int     claim_read;              /* the read that completed the last claim (claim_read_t) */
    int     claim_budget;            /* and its budget */
};

store_events_t *
store_events_new (const char *conninfo, const char *worker_id, const char *endpoint, int64_t statement_ms,
                  int stop_fd)
{
    store_events_t *se = mem_alloc (sizeof *se);
    se->conninfo = mem_strdup (conninfo);
    se->worker_id = mem_strdup (worker_id);
    se->endpoint = endpoint ? mem_strdup (endpoint) : NULL;
    se->statement_ms = statement_ms;
    se->stop_fd = stop_fd;
    return se;
}

/* The session is dropped, whatever state libpq left it in; the thread connects again. */
static void
drop (store_events_t *se)
{
    if (se->conn)
        PQfinish (se->conn);
    se->conn = NULL;
}

void
store_events_destroy (store_events_t **se_p)
{
    if (!se_p || !*se_p)
        return;
    store_events_t *se = *se_p;
    drop (se);
    mem_free_secret (&se->conninfo);        /* may hold a password */
    mem_free (se->worker_id);
    mem_free (se->endpoint);
    mem_free (se);
    *se_p = NULL;
}

/* The server's message, first line only; never a parameter value. */
static void
error_text (const PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    const char *m = res ? PQresultErrorMessage (res) : NULL;
    if (!m || !*m)
        m = conn ? PQerrorMessage (conn) : "no connection";
    snprintf (err, errlen, "%.*s", (int) strcspn (m, "\n"), m);
}

/* The connection is dropped after any failure that broke it; the thread reconnects. */
static fr_status_t
failed (store_events_t *se, PGresult *res, const char *what, char *err, size_t errlen)
{
    char why [256];
    error_text (se->conn, res, why, sizeof why);
    snprintf (err, errlen, "could not %s: %s", what, why);
    if (!se->conn || PQstatus (se->conn) != CONNECTION_OK) {
        drop (se);
        return FR_DATABASE_UNAVAILABLE;
    }
    return FR_INTERNAL;
}

/* Why a wait ended without the server's answer, for err: never libpq's message, which says
 * nothing of a deadline. */
static const char *
wait_failure (pgwait_t w)
{
    return w == PGWAIT_STOPPED ? "the worker is stopping"
         : w == PGWAIT_TIMED_OUT ? "the database did not answer in time" : NULL;
}

/* One round of the claim. Only the head of an (endpoint, integration) queue, its lowest pending
 * event_seq, may be sent. A failing head's retries move its own next_at on, but the rows behind
 * it keep theirs and stay due: a claim that reads due rows reads all of them, at every claim,
 * the more the longer a receiver is down. The round finds the due heads of the endpoints ($4) by
 * one of two reads, each stopped at $6 (the round's budget) rows:
 *   - the walk ($7): one descent of event_deliveries_queue to each queue's first pending row (a
 *     skip scan), complete when an endpoint has fewer than $6 queues; it reads no row behind a
 *     head, but one a queue, and a queue's descent costs as much as a few due rows;
 *   - when the walk is not complete, the first $6 due rows in next_at order ($8), each checked
 *     for being its queue's first, complete when they are every due row or hold $5 heads: many
 *     queues with one due head each (a burst of events, receivers that are well) are found here
 *     at once, and few rows behind many heads more cheaply than by the walk. Rows of one next_at
 *     come in the index's order: the rows of one fan-out share their next_at, and ordering them
 *     by event_seq too would sort all of them at every claim (the claim before this one took 85
 *     to 138 ms over a burst of 50,000 fanned out at once).
 * Either way the candidates hold the first $5 due heads in next_at order. When neither read is
 * complete the round claims nothing and says so (the last two columns: the walk was complete,
 * the round was). The candidates are locked, each checked again to be pending, due and unleased
 * (a row another worker claimed meanwhile is followed to its new version): a head another
 * worker holds keeps the rows behind it out (locked, it is skipped; leased, it is left out).
 * Whether a row is its queue's head is not checked again: that would read the same snapshot.
 * The candidates are found again by their ctid, in this statement's snapshot, and the due rows'
 * endpoints are matched by array_position, no index condition, which leaves event_deliveries_due
 * the one index for them. Heads are checked with the queue's first row (ORDER BY, LIMIT 1), which
 * a planner does not turn into a join: analyzed with one queue of 50,000 rows, the NOT EXISTS of
 * before became a hash anti-join of 110 s. Test events have no integration: each is a queue of
 * its own; those of the held endpoints ($9), which neither read looks at, are added by either
 * (a round completed by the due rows left them out, and an operator's test of a held endpoint
 * waited for the hold's end instead of going as its probe). A delivery's first attempt starts
 * its max age (first_at): one that waited behind its queue's earlier events since its fan-out
 * would otherwise fail at its first refused attempt. */
#define CLAIM_SQL \
    "WITH RECURSIVE walk (endpoint, integration_id, ctid, next_at, lease_expires_at, n) AS (" \
    "    SELECT h.*, 1 FROM unnest ($4::text[]) ep (name) CROSS JOIN LATERAL (" \
    "      SELECT q.endpoint, q.integration_id, q.ctid, q.next_at, q.lease_expires_at FROM event_deliveries q" \
    "      WHERE q.state = 'pending' AND q.endpoint = ep.name AND q.integration_id IS NOT NULL" \
    "      ORDER BY q.integration_id, q.event_seq LIMIT 1) h WHERE $7::boolean" \
    "  UNION ALL" \
    "    SELECT h.*, w.n + 1 FROM walk w CROSS JOIN LATERAL (" \
    "      SELECT q.endpoint, q.integration_id, q.ctid, q.next_at, q.lease_expires_at FROM event_deliveries q" \
    "      WHERE q.state = 'pending' AND q.endpoint = w.endpoint AND q.integration_id > w.integration_id" \
    "      ORDER BY q.integration_id, q.event_seq LIMIT 1) h" \
    "    WHERE w.n < $6::int)," \
    " heads AS MATERIALIZED (SELECT ctid, next_at, lease_expires_at, n FROM walk)," \
    " walked AS (SELECT $7::boolean AND coalesce (max (n), 0) < $6::int AS ok FROM heads)," \
    " due AS MATERIALIZED (" \
    "    SELECT d.ctid, d.integration_id IS NULL OR d.event_seq = (" \
    "        SELECT p.event_seq FROM event_deliveries p WHERE p.endpoint = d.endpoint" \
    "        AND p.integration_id = d.integration_id AND p.state = 'pending' ORDER BY p.event_seq LIMIT 1) AS head" \
    "    FROM event_deliveries d" \
    "    WHERE $8::boolean AND NOT (SELECT ok FROM walked) AND d.state = 'pending' AND d.next_at <= now()" \
    "      AND array_position ($4::text[], d.endpoint) IS NOT NULL" \
    "      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())" \
    "    ORDER BY d.next_at LIMIT $6::int)," \
    " dued AS (SELECT (SELECT ok FROM walked)" \
    "    OR $8::boolean AND (count(*) < $6::int OR count(*) FILTER (WHERE head) >= $5::int) AS ok FROM due)," \
    " cand AS (" \
    "    SELECT ctid FROM heads WHERE (SELECT ok FROM walked)" \
    "      AND next_at <= now() AND (lease_expires_at IS NULL OR lease_expires_at < now())" \
    "  UNION ALL" \
    "    SELECT t.ctid FROM event_deliveries t WHERE (SELECT ok FROM walked) AND t.state = 'pending'" \
    "      AND t.endpoint = ANY ($4::text[] || $9::text[]) AND t.integration_id IS NULL" \
    "  UNION ALL" \
    "    SELECT t.ctid FROM event_deliveries t WHERE NOT (SELECT ok FROM walked) AND (SELECT ok FROM dued)" \
    "      AND t.state = 'pending' AND t.endpoint = ANY ($9::text[]) AND t.integration_id IS NULL" \
    "  UNION ALL" \
    "    SELECT ctid FROM due WHERE head AND (SELECT ok FROM dued))," \
    " c AS (" \
    "    SELECT d.event_seq, d.endpoint FROM event_deliveries d" \
    "    WHERE d.ctid = ANY ((SELECT array_agg (ctid) FROM cand)::tid[])" \
    "      AND d.state = 'pending' AND d.next_at <= now() AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())" \
    "    ORDER BY d.next_at, d.event_seq LIMIT $5::int FOR UPDATE OF d SKIP LOCKED)," \
    " u AS (" \
    "    UPDATE event_deliveries d SET lease_owner = $1, lease_token = $2," \
    "      lease_expires_at = now() + make_interval (secs => $3::bigint / 1000.0)," \
    "      attempts = d.attempts + 1," \
    "      first_at = CASE WHEN d.attempts = 0 THEN now() ELSE d.first_at END" \
    "    FROM c, events e WHERE d.event_seq = c.event_seq AND d.endpoint = c.endpoint AND e.seq = d.event_seq" \
    "    RETURNING d.event_seq, d.endpoint, e.id::text, e.type, e.integration_id, e.provider, e.diagnosis, e.detail," \
    "      (extract (epoch FROM e.created_at) * 1000)::bigint, COALESCE (e.generation, -1)," \
    "      COALESCE (extract (epoch FROM e.expires_at)::bigint, 0), d.attempts," \
    "      (extract (epoch FROM now () - d.first_at) * 1000)::bigint)" \
    " SELECT u.*, (SELECT ok FROM walked), (SELECT ok FROM dued) FROM (SELECT 1) one LEFT JOIN u ON true"

/* Every wait is bounded: the connection by its timeout, each statement by statement_timeout and
 * a margin, and all of them by the worker's stop. A stalled server (stopped, its disk frozen)
 * never answers, cannot enforce its own timeouts, and its kernel keeps the TCP session alive:
 * libpq's blocking calls waited for it, and the worker's stop waited for this thread. */
fr_status_t
store_events_connect (store_events_t *se, char *err, size_t errlen)
{
    if (se->conn && PQstatus (se->conn) == CONNECTION_OK)
        return FR_OK;
    drop (se);
    const char *keys [] = { "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "target_session_attrs", "application_name", "dbname", NULL };
    char tcp [24], app [STORE_APP_NAME_MAX], who [STORE_APP_NAME_MAX];
    int64_t connect_s = se->statement_ms / 1000 + 2;
    /* one session per endpoint: which one each is, in pg_stat_activity */
    if (se->endpoint) {
        snprintf (who, sizeof who, "%s %s", se->worker_id, se->endpoint);
        store_app_name (app, "ferrule-worker-webhook", who);
    }
    else
        store_app_name (app, "ferrule-worker-events", se->worker_id);
    snprintf (tcp, sizeof tcp, "%lld", (long long) connect_s);
    const char *values [] = { tcp, "1", "5", "2", "3", "read-write", app, se->conninfo, NULL };
    int64_t deadline = clock_mono_ms () + connect_s * 1000;
    se->conn = PQconnectStartParams (keys, values, 1);
    store_log_notices (se->conn, "the event delivery's connection");
    pgwait_t w = pgwait_connect (se->conn, deadline, se->stop_fd);
    if (w != PGWAIT_READY) {
        if (wait_failure (w))
            snprintf (err, errlen, "could not connect to the database for event delivery: %s", wait_failure (w));
        else
            (void) failed (se, NULL, "connect to the database for event delivery", err, errlen);
        drop (se);
        return FR_DATABASE_UNAVAILABLE;
    }
    PQsetnonblocking (se->conn, 1);
    char setup [300];
    snprintf (setup, sizeof setup, "SET TimeZone = 'UTC'; SET statement_timeout = %lld; SET lock_timeout = %lld; "
              "SET idle_in_transaction_session_timeout = %lld",
              (long long) se->statement_ms, (long long) (se->statement_ms / 2),
              (long long) (se->statement_ms * 10));
    PGresult *res = PQsendQuery (se->conn, setup) ? pgwait_result (se->conn, deadline, se->stop_fd, &w) : NULL;
    if (PQresultStatus (res) != PGRES_COMMAND_OK) {
        if (!res && wait_failure (w))
            snprintf (err, errlen, "could not set up the event delivery session: %s", wait_failure (w));
        else
            (void) failed (se, res, "set up the event delivery session", err, errlen);
        PQclear (res);
        drop (se);
        return FR_DATABASE_UNAVAILABLE;     /* whatever failed, the session is dropped and retried */
    }
    PQclear (res);
    fr_status_t st = schema_check_until (se->conn, deadline, se->stop_fd, err, errlen);
    if (st != FR_OK)
        drop (se);
    return st;
}

int
store_events_connected (const store_events_t *se)
{
    return se->conn && PQstatus (se->conn) == CONNECTION_OK;
}

int
store_events_socket (const store_events_t *se)
{
    return store_events_connected (se) ? PQsocket (se->conn) : -1;
}

void
store_events_consume (store_events_t *se)
{
    if (!store_events_connected (se))
        return;
    if (!PQconsumeInput (se->conn)) {
        PQfinish (se->conn);
        se->conn = NULL;
        return;
    }
}

/* Runs one statement; NULL with *st and err set on failure. */
static PGresult *
run (store_events_t *se, const char *what, const char *sql, int n, const char *const *values, int want_tuples,
     fr_status_t *st, char *err, size_t errlen)
{
    *st = FR_OK;
    if (!store_events_connected (se)) {
        snprintf (err, errlen, "could not %s: not connected to the database", what);
        *st = FR_DATABASE_UNAVAILABLE;
        return NULL;
    }
    pgwait_t w = PGWAIT_FAILED;
    int64_t deadline = clock_mono_ms () + se->statement_ms + STORE_ANSWER_MARGIN_MS;
    PGresult *res = PQsendQueryParams (se->conn, sql, n, NULL, values, NULL, NULL, 0)
                  ? pgwait_result (se->conn, deadline, se->stop_fd, &w) : NULL;
    if (!res) {
        if (wait_failure (w))
            snprintf (err, errlen, "could not %s: %s", what, wait_failure (w));
        else
            (void) failed (se, NULL, what, err, errlen);
        drop (se);                   /* mid-answer, or broken: of no further use */
        *st = FR_DATABASE_UNAVAILABLE;
        return NULL;
    }
    if (PQresultStatus (res) != (want_tuples ? PGRES_TUPLES_OK : PGRES_COMMAND_OK)) {
        *st = failed (se, res, what, err, errlen);
        PQclear (res);
        return NULL;
    }
    return res;
}

/* A text[] literal of event types or endpoint names (mem_free it), made by the one builder
 * (common/pgarray.h) with room for any of them escaped, so that it is never cut short. */
static char *
text_array (const char *const *items, size_t n)
{
    size_t cap = 8;
    for (size_t i = 0; i < n; i++)
        cap += 2 * strlen (items [i]) + 3;
    pgarray_t *a = pgarray_new (cap);
    for (size_t i = 0; i < n; i++)
        pgarray_add_text (a, items [i]);
    assert (pgarray_text (a));
    char *out = mem_strdup (pgarray_text (a));
    pgarray_destroy (&a);
    return out;
}

fr_status_t
store_events_fanned_age (store_events_t *se, const char *endpoint, int64_t *age_s, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { endpoint };
    /* the endpoint's last entry of event_deliveries_by_endpoint_seq (migration 024), then its
     * event by the primary key: joined, the planner walked the events backwards beside the
     * deliveries, and before 024 the deliveries' primary key from the top down, through every
     * newer delivery of the other endpoints (a statement timeout at some 30 million) */
    PGresult *res = run (se, "read the newest event fanned out",
        "SELECT ceil (extract (epoch FROM now () - e.created_at))::bigint FROM events e"
        " WHERE e.seq = (SELECT d.event_seq FROM event_deliveries d WHERE d.endpoint = $1"
        "                ORDER BY d.event_seq DESC LIMIT 1)",
        1, values, 1, &st, err, errlen);
    *age_s = res && PQntuples (res) == 1 ? strtoll (PQgetvalue (res, 0, 0), NULL, 10) : -1;
    PQclear (res);
    return st;
}

#define HOLD_SEQ_MARGIN_S 60     /* the fan-out's seq bound of the events that hold a newer one back */

fr_status_t
store_events_fanout (store_events_t *se, const char *endpoint, const char *const *types, size_t ntypes,
                     int64_t window_s, int64_t hold_s, int64_t *added, char *err, size_t errlen)
{
    fr_status_t st;
    char window [24], hold [24], bound [24];
    char *arr = types ? text_array (types, ntypes) : NULL;
    snprintf (window, sizeof window, "%lld", (long long) window_s);
    snprintf (hold, sizeof hold, "%lld", (long long) (hold_s > 0 ? hold_s : 0));
    snprintf (bound, sizeof bound, "%lld", (long long) ((hold_s > 0 ? hold_s : 0) + HOLD_SEQ_MARGIN_S));
    const char *values [] = { endpoint, arr, window, hold, bound };
    PGresult *res = run (se, "create event deliveries",
        "INSERT INTO event_deliveries (event_seq, endpoint, integration_id)"
        " SELECT e.seq, $1, e.integration_id FROM events e"
        " WHERE e.created_at > now() - make_interval (secs => $3::bigint)"
        "   AND (CASE WHEN e.type = 'test' THEN e.endpoint = $1 ELSE $2::text[] IS NULL OR e.type = ANY ($2::text[]) END)"
        /* the claim orders an integration's queue by the rows there are: an older event whose
         * transaction was open longer than the window (its time is its transaction's start) has
         * none until the look for late commits, and its integration's newer event, given one
         * here, went first. It waits for the older's row instead. Older events of this look are
         * given theirs by this statement (the check does not see them), and those created before
         * hold_s are not waited for; events_by_integration reads the integration's events of
         * hold_s only, from a seq below which every event is older than hold_s (bar one whose
         * transaction ran longer than the margin), found once by events_by_time */
        "   AND NOT (e.integration_id IS NOT NULL AND EXISTS (SELECT 1 FROM events o"
        "     WHERE o.integration_id = e.integration_id AND o.seq < e.seq"
        "       AND o.seq > COALESCE ((SELECT b.seq FROM events b WHERE b.created_at <= now() - make_interval (secs => $5::bigint)"
        "                              ORDER BY b.created_at DESC LIMIT 1), 0)"
        "       AND o.created_at <= now() - make_interval (secs => $3::bigint)"
        "       AND o.created_at > now() - make_interval (secs => $4::bigint)"
        "       AND ($2::text[] IS NULL OR o.type = ANY ($2::text[]))"
        "       AND NOT EXISTS (SELECT 1 FROM event_deliveries p WHERE p.event_seq = o.seq AND p.endpoint = $1)))"
        /* an event that has its delivery already is skipped by the conflict on the primary key,
         * one index probe each; a NOT EXISTS here let the planner pick a hash anti-join that read
         * every delivery the endpoint ever had (they are never deleted), at every pass */
        " ORDER BY e.seq"
        " ON CONFLICT DO NOTHING",
        5, values, 0, &st, err, errlen);
    *added = res ? strtoll (PQcmdTuples (res), NULL, 10) : 0;
    PQclear (res);
    mem_free (arr);
    return st;
}

fr_status_t
store_events_scan_bounds (store_events_t *se, int64_t lookback_s, int64_t *after, int64_t *upto, char *err,
                          size_t errlen)
{
    fr_status_t st;
    char back [24];
    snprintf (back, sizeof back, "%lld", (long long) lookback_s);
    const char *values [] = { back };
    /* two index probes (events_by_time backwards, the primary key), whatever the window */
    PGresult *res = run (se, "find where to fan out from",
        "SELECT COALESCE ((SELECT seq FROM events WHERE created_at <= now () - make_interval (secs => $1::bigint)"
        "                  ORDER BY created_at DESC LIMIT 1), 0),"
        "       COALESCE ((SELECT max (seq) FROM events), 0)",
        1, values, 1, &st, err, errlen);
    *after = res ? strtoll (PQgetvalue (res, 0, 0), NULL, 10) : 0;
    *upto = res ? strtoll (PQgetvalue (res, 0, 1), NULL, 10) : 0;
    PQclear (res);
    return st;
}

fr_status_t
store_events_fanout_step (store_events_t *se, const char *endpoint, const char *const *types, size_t ntypes,
                          int64_t window_s, int64_t after, int64_t upto, int limit, int64_t *next, int64_t *added,
                          char *err, size_t errlen)
{
    fr_status_t st;
    char window [24], s_after [24], s_upto [24], s_limit [16];
    char *arr = types ? text_array (types, ntypes) : NULL;
    snprintf (window, sizeof window, "%lld", (long long) window_s);
    snprintf (s_after, sizeof s_after, "%lld", (long long) after);
    snprintf (s_upto, sizeof s_upto, "%lld", (long long) upto);
    snprintf (s_limit, sizeof s_limit, "%d", limit);
    const char *values [] = { endpoint, arr, window, s_after, s_upto, s_limit };
    /* a range of the primary key, limit rows of it, whatever the types wanted */
    PGresult *res = run (se, "create event deliveries",
        "WITH c AS (SELECT e.seq, e.type, e.endpoint, e.integration_id, e.created_at FROM events e"
        "           WHERE e.seq > $4::bigint AND e.seq <= $5::bigint ORDER BY e.seq LIMIT $6::int),"
        " i AS (INSERT INTO event_deliveries (event_seq, endpoint, integration_id)"
        "       SELECT c.seq, $1, c.integration_id FROM c"
        "       WHERE c.created_at > now() - make_interval (secs => $3::bigint)"
        "         AND (CASE WHEN c.type = 'test' THEN c.endpoint = $1"
        "              ELSE $2::text[] IS NULL OR c.type = ANY ($2::text[]) END)"
        "       ORDER BY c.seq ON CONFLICT DO NOTHING RETURNING 1)"
        " SELECT (SELECT count(*) FROM c), (SELECT max (seq) FROM c), (SELECT count(*) FROM i)",
        6, values, 1, &st, err, errlen);
    *next = after;
    *added = 0;
    if (res) {
        int64_t read = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
        *next = read < limit ? upto : strtoll (PQgetvalue (res, 0, 1), NULL, 10);
        *added = strtoll (PQgetvalue (res, 0, 2), NULL, 10);
    }
    PQclear (res);
    mem_free (arr);
    return st;
}

void
store_events_claims_free (store_events_claim_t **claims, size_t count)
{
    if (!claims || !*claims)
        return;
    for (size_t i = 0; i < count; i++) {
        store_events_claim_t *c = &(*claims) [i];
        mem_free (c->endpoint);
        mem_free (c->id);
        mem_free (c->type);
        mem_free (c->integration);
        mem_free (c->provider);
        mem_free (c->diagnosis);
        mem_free (c->detail);
    }
    mem_free (*claims);
    *claims = NULL;
}

static char *
dup_or_null (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? NULL : mem_strdup (PQgetvalue (res, row, col));
}

#define CLAIM_FIRST_BUDGET  64       /* the walk's queues and the due rows of a first round */
#define CLAIM_BUDGET_GROWTH 8        /* and the factor of each further round */
#define CLAIM_COLUMNS       13       /* then "walked" and "complete" */

typedef enum { CLAIM_ROUNDS, CLAIM_WALK, CLAIM_DUE } claim_read_t;

fr_status_t
store_events_claim (store_events_t *se, const char *const *endpoints, size_t nendpoints,
                    const char *const *tests_only, size_t ntests_only, int64_t lease_ms,
                    int limit, char lease_token [STORE_EVENTS_LEASE_LEN + 1],
                    store_events_claim_t **claims, size_t *count, char *err, size_t errlen)
{
    fr_status_t st = FR_OK;
    unsigned char raw [STORE_EVENTS_LEASE_LEN / 2];
    PGresult *res = NULL;
    int n = 0;
    *claims = NULL;
    *count = 0;
    if (crypto_random (raw, sizeof raw) != 0) {
        snprintf (err, errlen, "could not draw a delivery lease from the kernel's random source");
        return FR_INTERNAL;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf (lease_token + 2 * i, 3, "%02x", raw [i]);
    char *arr = text_array (endpoints, nendpoints), *tests = text_array (tests_only, ntests_only);
    char lease [24], lim [16], budget [16];
    snprintf (lease, sizeof lease, "%lld", (long long) lease_ms);
    snprintf (lim, sizeof lim, "%d", limit);
    const char *values [] = { se->worker_id, lease_token, lease, arr, lim, budget, "t", "t", tests };
    /* The read and budget that completed the last claim go first, alone: the queues' shape changes
     * slowly, and the rounds cost more. When that is not complete, rounds of a growing budget,
     * until one is: a round reads at most about twice its budget, so a claim reads a bounded
     * multiple of what the cheaper read needs. The walk is complete without a bound (INT_MAX). */
    claim_read_t read = (claim_read_t) se->claim_read;
    int b = read == CLAIM_ROUNDS ? CLAIM_FIRST_BUDGET : se->claim_budget;
    for (;;) {
        snprintf (budget, sizeof budget, "%d", b);
        values [6] = read != CLAIM_DUE ? "t" : "f";
        values [7] = read != CLAIM_WALK ? "t" : "f";
        PQclear (res);
        if (!(res = run (se, "claim event deliveries", CLAIM_SQL, 9, values, 1, &st, err, errlen)))
            goto out;
        if (PQntuples (res) < 1 || PQnfields (res) != CLAIM_COLUMNS + 2) {
            snprintf (err, errlen, "could not claim event deliveries: the claim returned no answer row");
            st = FR_INTERNAL;
            goto out;
        }
        int walked = strcmp (PQgetvalue (res, 0, CLAIM_COLUMNS), "t") == 0;
        if (strcmp (PQgetvalue (res, 0, CLAIM_COLUMNS + 1), "t") == 0 || (read == CLAIM_ROUNDS && b == INT_MAX)) {
            se->claim_read = walked ? CLAIM_WALK : CLAIM_DUE;
            se->claim_budget = b;
            break;
        }
        if (read != CLAIM_ROUNDS) {
            read = CLAIM_ROUNDS;
            b = CLAIM_FIRST_BUDGET;
        }
        else
            b = b > INT_MAX / CLAIM_BUDGET_GROWTH ? INT_MAX : b * CLAIM_BUDGET_GROWTH;
    }
    n = PQgetisnull (res, 0, 0) ? 0 : PQntuples (res);          /* none: one row of NULLs */
    if (n > 0) {
        *claims = mem_alloc ((size_t) n * sizeof **claims);
        for (int i = 0; i < n; i++) {
            store_events_claim_t *c = &(*claims) [i];
            c->seq = strtoll (PQgetvalue (res, i, 0), NULL, 10);
            c->endpoint = mem_strdup (PQgetvalue (res, i, 1));
            c->id = mem_strdup (PQgetvalue (res, i, 2));
            c->type = mem_strdup (PQgetvalue (res, i, 3));
            c->integration = dup_or_null (res, i, 4);
            c->provider = dup_or_null (res, i, 5);
            c->diagnosis = mem_strdup (PQgetvalue (res, i, 6));
            c->detail = dup_or_null (res, i, 7);
            c->created_ms = strtoll (PQgetvalue (res, i, 8), NULL, 10);
            c->generation = strtoll (PQgetvalue (res, i, 9), NULL, 10);
            c->expires_at = strtoll (PQgetvalue (res, i, 10), NULL, 10);
            c->attempts = (int) strtol (PQgetvalue (res, i, 11), NULL, 10);
            c->age_ms = strtoll (PQgetvalue (res, i, 12), NULL, 10);
        }
        *count = (size_t) n;
    }
out:
    PQclear (res);
    mem_free (arr);
    mem_free (tests);
    return st;
}

fr_status_t
store_events_finish (store_events_t *se, int64_t seq, const char *endpoint, const char *lease_token,
                     store_events_result_t result, int64_t retry_in_ms, long http_status,
                     const char *error, int *applied, char *err, size_t errlen)
{
    fr_status_t st;
    char s_seq [24], s_retry [24], s_status [16];
    snprintf (s_seq, sizeof s_seq, "%lld", (long long) seq);
    snprintf (s_retry, sizeof s_retry, "%lld", (long long) retry_in_ms);
    snprintf (s_status, sizeof s_status, "%ld", http_status);
    const char *state = result == STORE_EVENTS_DELIVERED ? "delivered" : result == STORE_EVENTS_FAILED ? "failed" : "pending";
    const char *values [] = { s_seq, endpoint, lease_token, state, s_retry, http_status > 0 ? s_status : NULL, error };
    *applied = 0;
    /* the attempt's time is written here, with its outcome, not by the claim: an attempt in
     * flight has not failed yet, one given back unsent never happened, and the claim, which
     * writes no indexed column, can stay a HOT update beside an index on the failures' times */
    PGresult *res = run (se, "record an event delivery",
        "UPDATE event_deliveries SET state = $4, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
        "  next_at = now() + make_interval (secs => $5::bigint / 1000.0), last_status = $6::int, last_attempt_at = now(),"
        "  last_error = CASE WHEN $4 = 'delivered' THEN last_error ELSE left ($7, 512) END,"
        "  delivered_at = CASE WHEN $4 = 'delivered' THEN now() END,"
        "  failed_at = CASE WHEN $4 = 'failed' THEN now() END"
        " WHERE event_seq = $1::bigint AND endpoint = $2 AND lease_token = $3 AND state = 'pending'",
        7, values, 0, &st, err, errlen);
    if (res)
        *applied = strcmp (PQcmdTuples (res), "1") == 0;
    PQclear (res);
    return st;
}

fr_status_t
store_events_release (store_events_t *se, const store_events_claim_t *claims, size_t n, const char *lease_token,
                      int64_t *released, char *err, size_t errlen)
{
    fr_status_t st;
    const char **endpoints = mem_alloc ((n ? n : 1) * sizeof *endpoints);
    char *seqs = mem_alloc (n * 21 + 3), *at = seqs;
    *at++ = '{';
    for (size_t i = 0; i < n; i++) {
        endpoints [i] = claims [i].endpoint;
        at += sprintf (at, "%s%lld", i ? "," : "", (long long) claims [i].seq);
    }
    strcpy (at, "}");
    char *names = text_array (endpoints, n);
    const char *values [] = { lease_token, seqs, names };
    *released = 0;
    PGresult *res = run (se, "give back unsent event deliveries",
        "UPDATE event_deliveries SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
        "  attempts = greatest (attempts - 1, 0)"
        " WHERE lease_token = $1 AND state = 'pending'"
        "   AND (event_seq, endpoint) IN (SELECT * FROM unnest ($2::bigint[], $3::text[]))",
        3, values, 0, &st, err, errlen);
    if (res)
        *released = strtoll (PQcmdTuples (res), NULL, 10);
    PQclear (res);
    mem_free (names);
    mem_free (seqs);
    mem_free (endpoints);
    return st;
}

/* Ends a transaction that failed; a session that cannot is dropped, and the thread reconnects. */
static void
rollback (store_events_t *se)
{
    fr_status_t st;
    char err [256];
    PGresult *res = store_events_connected (se) ? run (se, "roll back", "ROLLBACK", 0, NULL, 0, &st, err, sizeof err)
                                                : NULL;
    if (!res)
        drop (se);
    PQclear (res);
}

/* The idle forecast: at most this many events a pass and provider; a pass that made them all
 * hands its turn on. A turn lasts this share of the caller's interval, so that the worker whose
 * pass came last is not skipped for coming a little early. */
#define FORECAST_IDLE_MAX   1000
#define FORECAST_TURN_SHARE 0.9

fr_status_t
store_events_forecast (store_events_t *se, const char *provider, int64_t idle_s, int64_t idle_warn_s,
                       int64_t grant_s, int64_t grant_warn_s, int64_t every_ms, int64_t *added, char *err,
                       size_t errlen)
{
    fr_status_t st = FR_OK;
    char a [24], b [24];
    PGresult *res = NULL;
    *added = 0;
    /* the integration's row is locked (skipped when busy) so that the event's seq is in commit
     * order with the events its state changes make */
    if (idle_s > 0) {
        char turn [24], most [24];
        snprintf (a, sizeof a, "%lld", (long long) idle_s);
        snprintf (b, sizeof b, "%lld", (long long) idle_warn_s);
        snprintf (turn, sizeof turn, "%lld", (long long) (every_ms * FORECAST_TURN_SHARE));
        snprintf (most, sizeof most, "%d", FORECAST_IDLE_MAX);
        res = run (se, "take the turn of the idle forecast",
                   "INSERT INTO forecast_turns (provider, ran_at, ran_by) VALUES ($1, '-infinity', $2)"
                   " ON CONFLICT (provider) DO NOTHING", 2, (const char *const []) { provider, se->worker_id }, 0,
                   &st, err, errlen);
        if (!res)
            return st;
        PQclear (res);
        /* one transaction: the turn commits with the events, or rolls back with a pass that failed */
        res = run (se, "begin the idle forecast", "BEGIN", 0, NULL, 0, &st, err, errlen);
        if (!res)
            return st;
        PQclear (res);
        /* the turn (t) is taken in the statement that reads the table: locked, or skipped while
         * another worker's pass holds it, and moved on only if the last pass is older than the
         * interval (migration 016); without it the scan below is not run at all (a one-time
         * filter). The scan locks no integration: no index serves the last refresh, so it is one
         * sequential read of the table (0.38 s at 2 million rows), and a row locked as the scan
         * passed it stayed locked until the statement ended, past the lock_timeout of a refresh,
         * an import or a connect of it (540 ms at 1 million rows). It names the candidates; the
         * next statement locks those, and checks them again, by their primary key */
        const char *scan [] = { provider, b, se->worker_id, turn, most };
        res = run (se, "forecast idle refresh tokens",
            "WITH t AS (UPDATE forecast_turns SET ran_at = now(), ran_by = $3"
            "   WHERE provider IN (SELECT provider FROM forecast_turns WHERE provider = $1"
            "                        AND ran_at < now() - $4::bigint * interval '1 millisecond'"
            "                      FOR UPDATE SKIP LOCKED)"
            "   RETURNING 1)"
            " SELECT count(*), array_agg (c.id)::text FROM (SELECT i.id FROM integrations i"
            "  WHERE EXISTS (SELECT 1 FROM t)"
            "    AND i.provider = $1 AND i.status = 'active' AND i.refresh_token IS NOT NULL"
            "    AND " STORE_IDLE_SINCE_OF ("i.") " < now() - make_interval (secs => $2::bigint)"
            "    AND NOT EXISTS (SELECT 1 FROM events e WHERE e.dedupe_key = 'expiring:idle:' || i.id || ':' || i.generation)"
            /* unordered: ordered by id, it was a walk of the whole primary key with a random heap
             * read per row (1.26 s, seven times the pages), and nothing needs the order */
            "  LIMIT $5::int) c",
            5, scan, 1, &st, err, errlen);
        int64_t found = res ? strtoll (PQgetvalue (res, 0, 0), NULL, 10) : 0;
        char *ids = res && !PQgetisnull (res, 0, 1) ? mem_strdup (PQgetvalue (res, 0, 1)) : NULL;
        PQclear (res);
        res = NULL;
        int64_t idle_added = 0;
        if (st == FR_OK && ids) {
            /* a short statement: SKIP LOCKED waits for no one, and the dedupe key makes the next
             * pass go on with a row skipped here */
            const char *values [] = { provider, a, b, ids };
            res = run (se, "forecast idle refresh tokens",
                "INSERT INTO events (type, integration_id, provider, diagnosis, generation, detail, expires_at, dedupe_key)"
                " SELECT 'expiring', i.id, i.provider, 'refresh_token_idle', i.generation,"
                "   format ('the refresh token was last used %s; %s ends refresh tokens unused for %s days, and the"
                " keep-alive could not refresh it', to_char (" STORE_IDLE_SINCE_OF ("i.") ","
                " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), i.provider, $2::bigint / 86400),"
                "   " STORE_IDLE_SINCE_OF ("i.") " + make_interval (secs => $2::bigint),"
                "   'expiring:idle:' || i.id || ':' || i.generation"
                " FROM integrations i"
                " WHERE i.id = ANY ($4::text[])"
                "   AND i.provider = $1 AND i.status = 'active' AND i.refresh_token IS NOT NULL"
                "   AND " STORE_IDLE_SINCE_OF ("i.") " < now() - make_interval (secs => $3::bigint)"
                "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.dedupe_key = 'expiring:idle:' || i.id || ':' || i.generation)"
                " FOR UPDATE OF i SKIP LOCKED"
                " ON CONFLICT (dedupe_key) DO NOTHING",
                4, values, 0, &st, err, errlen);
            idle_added = res ? strtoll (PQcmdTuples (res), NULL, 10) : 0;
            PQclear (res);
        }
        mem_free (ids);
        if (st == FR_OK && found >= FORECAST_IDLE_MAX) {
            /* more may be due: the turn is the next pass's, whichever worker makes it */
            res = run (se, "hand on the turn of the idle forecast",
                       "UPDATE forecast_turns SET ran_at = '-infinity' WHERE provider = $1 AND ran_by = $2", 2,
                       (const char *const []) { provider, se->worker_id }, 0, &st, err, errlen);
            PQclear (res);
        }
        if (st == FR_OK) {
            res = run (se, "commit the idle forecast", "COMMIT", 0, NULL, 0, &st, err, errlen);
            PQclear (res);
        }
        if (st != FR_OK) {
            rollback (se);
            return st;
        }
        *added += idle_added;
    }
    if (grant_s > 0) {
        snprintf (a, sizeof a, "%lld", (long long) grant_s);
        snprintf (b, sizeof b, "%lld", (long long) grant_warn_s);
        const char *values [] = { provider, a, b };
        res = run (se, "forecast grants near their age limit",
            "INSERT INTO events (type, integration_id, provider, diagnosis, generation, detail, expires_at, dedupe_key)"
            " SELECT 'expiring', i.id, i.provider, 'grant_age_limit', i.generation,"
            "   format ('connected %s; %s ends grants %s days after consent: the user must connect again', to_char (g.at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), i.provider, $2::bigint / 86400),"
            "   g.at + make_interval (secs => $2::bigint),"
            "   'expiring:grant:' || i.id || ':' || g.seq"
            /* from the grants that began in the window (token_chain_grants_by_time, migration 012),
             * not from every integration of the provider: a grant past twice its limit is long
             * dead (its refresh has failed and said so), and its integration's latest grant is
             * the only one that counts (token_chain_grants) */
            " FROM token_chain g JOIN integrations i ON i.id = g.integration_id"
            " WHERE g.outcome IN ('imported', 'connected')"
            "   AND g.at < now() - make_interval (secs => $3::bigint)"
            "   AND g.at > now() - make_interval (secs => 2 * $2::bigint)"
            "   AND i.provider = $1 AND i.status = 'active'"
            "   AND NOT EXISTS (SELECT 1 FROM token_chain c WHERE c.integration_id = g.integration_id"
            "                   AND c.outcome IN ('imported', 'connected') AND c.seq > g.seq)"
            "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.dedupe_key = 'expiring:grant:' || i.id || ':' || g.seq)"
            " ORDER BY g.at LIMIT 1000 FOR UPDATE OF i SKIP LOCKED"
            " ON CONFLICT (dedupe_key) DO NOTHING",
            3, values, 0, &st, err, errlen);
        if (!res)
            return st;
        *added += strtoll (PQcmdTuples (res), NULL, 10);
        PQclear (res);
    }
    if (*added > 0) {
        /* after the commit, and without waiting for a flush (see STORE_NOTIFY_SQL) */
        res = run (se, "wake the event delivery", "SELECT set_config ('synchronous_commit', 'off', true),"
                   " pg_notify ('" STORE_EVENTS_NOTIFY "', '')", 0, NULL, 1, &st, err, errlen);
        PQclear (res);
    }
    return st;
}

fr_status_t
store_events_counts (store_events_t *se, const char *const *endpoints, size_t nendpoints, int64_t *pending,
                     int64_t *failed_n, char *err, size_t errlen)
{
    fr_status_t st;
    char *arr = text_array (endpoints, nendpoints), cap [16];
    snprintf (cap, sizeof cap, "%d", STORE_EVENTS_COUNT_CAP);
    const char *values [] = { arr, cap };
    PGresult *res = run (se, "count event deliveries",
        /* states named, not "<> 'delivered'": the (endpoint, state) index then reads only these
         * rows, not every delivery an endpoint ever had (delivered ones are never deleted). And
         * no more than the cap of each: failed ones are never deleted either, and every worker
         * counts every 5 s */
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE state = 'pending'"
        "          AND endpoint = ANY ($1::text[]) LIMIT $2::int) p),"
        "       (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE state = 'failed'"
        "          AND endpoint = ANY ($1::text[]) LIMIT $2::int) f)", 2, values, 1,
        &st, err, errlen);
    mem_free (arr);
    if (!res)
        return st;
    *pending = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    *failed_n = strtoll (PQgetvalue (res, 0, 1), NULL, 10);
    PQclear (res);
    return FR_OK;
}

/* --- the operations' queries: batches on a connection of the worker's loop (store_batch_start),
 * which the loop never waits for --- */

#define LIST_SQL \
    "SELECT e.id::text, e.type, e.integration_id, e.provider, e.diagnosis, e.generation, e.detail," \
    "  to_char (e.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')," \
    "  to_char (e.expires_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')," \
    "  COALESCE ((SELECT json_agg (json_build_object ('endpoint', d.endpoint, 'state', d.state," \
    "     'attempts', d.attempts, 'last_status', d.last_status, 'last_error', d.last_error," \
    "     'next_at', CASE WHEN d.state = 'pending' THEN to_char (d.next_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END," \
    "     'delivered_at', to_char (d.delivered_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')," \
    "     'failed_at', to_char (d.failed_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY d.endpoint)" \
    "   FROM event_deliveries d WHERE d.event_seq = e.seq), '[]')::text" \
    " FROM events e" \
    " WHERE ($1::text IS NULL OR e.integration_id = $1) AND ($2::text IS NULL OR e.created_at >= to_timestamp ($2::bigint))" \
    "   AND ($3::text IS NULL OR e.id = $3::uuid) AND ($5::text IS NULL OR e.created_at < to_timestamp ($5::bigint))" \
    "   AND ($6::text IS NULL OR e.seq < (SELECT b.seq FROM events b WHERE b.id = $6::uuid))" \
    " ORDER BY e.seq DESC LIMIT $4::int"

/* An operation's batch and where its end goes: one of the fn, as the operation is. */
typedef struct {
    union {
        store_events_listed_fn *listed;
        store_events_replayed_fn *replayed;
        store_events_tested_fn *tested;
        store_events_stats_fn *stats;
    } fn;
    void *arg;
} op_ctx_t;

/* Starts an operation's batch; done's arg is the store's copy of c. */
static fr_status_t
op_start (store_t *s, const store_stmt_t *stmts, size_t n, store_batch_fn *done, op_ctx_t c, char *err, size_t errlen)
{
    return store_batch_start (s, stmts, n, done, &c, sizeof c, err, errlen);
}

/* op_start for a batch that makes deliveries due (it marks its session: STORE_EVENTS_MARK): the
 * delivery threads are woken after its commit, as for every event (STORE_NOTIFY_SQL) */
static fr_status_t
op_start_waking (store_t *s, const store_stmt_t *stmts, size_t n, store_batch_fn *done, op_ctx_t c, char *err,
                 size_t errlen)
{
    return store_batch_start_notify (s, stmts, n, NULL, 0, done, &c, sizeof c, err, errlen);
}

static void
list_free (store_event_t *rows, size_t count)
{
    for (size_t i = 0; rows && i < count; i++) {
        store_event_t *e = &rows [i];
        char *text [] = { e->id, e->type, e->integration, e->provider, e->diagnosis, e->detail, e->at, e->expires_at,
                          e->deliveries };
        for (size_t k = 0; k < sizeof text / sizeof text [0]; k++)
            mem_free (text [k]);
    }
    mem_free (rows);
}

static void
listed (void *arg, fr_status_t st, PGresult **results, size_t nres, const char *err)
{
    op_ctx_t *c = arg;
    store_event_t *rows = NULL;
    int n = 0;
    /* with a "before", a first statement looked for its event: an unknown one is said so, rather
     * than taken for the end of the listing */
    if (st == FR_OK && nres == 2 && PQntuples (results [0]) == 0) {
        st = FR_NOT_FOUND;
        err = "no event has the id \"before\" gives (a listing's ids stay valid as long as their events are kept)";
    }
    if (st == FR_OK && nres >= 1) {
        const PGresult *res = results [nres - 1];
        n = PQntuples (res);
        rows = mem_alloc ((size_t) (n ? n : 1) * sizeof *rows);
        for (int i = 0; i < n; i++) {
            store_event_t *e = &rows [i];
            char **text [] = { &e->id, &e->type, &e->integration, &e->provider, &e->diagnosis, NULL, &e->detail,
                               &e->at, &e->expires_at, &e->deliveries };
            memset (e, 0, sizeof *e);
            for (int col = 0; col < 10; col++) {
                e->bytes += (size_t) PQgetlength (res, i, col) + 16;
                if (text [col])
                    *text [col] = store_text_at (res, i, col);
            }
            e->has_generation = !PQgetisnull (res, i, 5);
            e->generation = e->has_generation ? store_int_at (res, i, 5) : 0;
        }
    }
    c->fn.listed (c->arg, st, rows, (size_t) n, st == FR_OK ? NULL : err);
    list_free (rows, (size_t) n);
}

fr_status_t
store_events_list_start (store_t *s, const store_events_filter_t *f, int64_t limit, store_events_listed_fn *fn,
                         void *arg, char *err, size_t errlen)
{
    char lim [24];
    snprintf (lim, sizeof lim, "%lld", (long long) limit + 1);    /* the one more says whether there are more */
    const char *values [] = { f->integration, f->since, f->event_id, lim, f->until, f->before };
    store_stmt_t stmts [] = {
        { "SELECT 1 FROM events WHERE id = $1::uuid", 1, &f->before, NULL, NULL },
        { LIST_SQL, 6, values, NULL, NULL },
    };
    size_t first = f->before ? 0 : 1;
    return op_start (s, stmts + first, 2 - first, listed, (op_ctx_t) { .fn.listed = fn, .arg = arg }, err, errlen);
}

static void
replayed (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    op_ctx_t *c = arg;
    int ok = st == FR_OK && n == 2 && PQntuples (results [0]) == 1;
    int64_t count = ok ? store_int_at (results [0], 0, 0) : 0, not_configured = ok ? store_int_at (results [0], 0, 1) : 0;
    c->fn.replayed (c->arg, st, count, not_configured, st == FR_OK ? NULL : err);
}

fr_status_t
store_events_replay_start (store_t *s, const char *event_id, const char *integration, const char *endpoint,
                           const char *const *configured, size_t nconfigured,
                           store_events_replayed_fn *fn, void *arg, char *err, size_t errlen)
{
    char *names = text_array (configured, nconfigured);
    const char *values [] = { event_id, integration, endpoint, names };
    store_stmt_t stmts [] = {
        { "WITH r AS (UPDATE event_deliveries d SET state = 'pending', attempts = 0, first_at = now(), next_at = now(),"
          "    failed_at = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
          "  FROM events e WHERE e.seq = d.event_seq AND d.state = 'failed'"
          "    AND ($1::text IS NULL OR e.id = $1::uuid) AND ($2::text IS NULL OR e.integration_id = $2)"
          "    AND ($3::text IS NULL OR d.endpoint = $3) AND d.endpoint = ANY ($4::text[])"
          "  RETURNING 1)"
          " SELECT (SELECT count(*) FROM r),"
          "  (SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.state = 'failed'"
          "    AND ($1::text IS NULL OR e.id = $1::uuid) AND ($2::text IS NULL OR e.integration_id = $2)"
          "    AND ($3::text IS NULL OR d.endpoint = $3) AND d.endpoint <> ALL ($4::text[]))", 4, values, NULL, NULL },
        { "SELECT " STORE_EVENTS_MARK, 0, NULL, NULL, NULL },
    };
    fr_status_t st = op_start_waking (s, stmts, 2, replayed, (op_ctx_t) { .fn.replayed = fn, .arg = arg }, err, errlen);
    mem_free (names);
    return st;
}

static void
tested (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    op_ctx_t *c = arg;
    char id [37] = "";
    if (st == FR_OK && n == 1 && PQntuples (results [0]) == 1)
        snprintf (id, sizeof id, "%s", PQgetvalue (results [0], 0, 0));
    c->fn.tested (c->arg, st, id, st == FR_OK ? NULL : err);
}

fr_status_t
store_events_insert_test_start (store_t *s, const char *endpoint, store_events_tested_fn *fn, void *arg,
                                char *err, size_t errlen)
{
    const char *values [] = { endpoint };
    store_stmt_t stmt = {
        "WITH e AS (INSERT INTO events (type, diagnosis, endpoint, detail) VALUES ('test', 'healthy', $1,"
        "  'a test event sent by \"ferrulectl webhook test\"') RETURNING id::text),"
        " n AS (SELECT " STORE_EVENTS_MARK ")"
        " SELECT e.id FROM e, n",
        1, values, NULL, NULL };
    return op_start_waking (s, &stmt, 1, tested, (op_ctx_t) { .fn.tested = fn, .arg = arg }, err, errlen);
}

static void
stats_clear (store_endpoint_stats_t *stats)
{
    mem_free (stats->last_error);
    mem_free (stats->last_failure_at);
    mem_free (stats->last_delivered_at);
    memset (stats, 0, sizeof *stats);
}

static void
stats_read (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    op_ctx_t *c = arg;
    store_endpoint_stats_t *stats = mem_alloc ((n ? n : 1) * sizeof *stats);
    memset (stats, 0, (n ? n : 1) * sizeof *stats);
    for (size_t i = 0; st == FR_OK && i < n; i++) {
        const PGresult *res = results [i];
        store_endpoint_stats_t *out = &stats [i];
        if (PQntuples (res) != 1) {
            st = FR_INTERNAL;
            err = "the endpoint's counts returned no row";
            break;
        }
        out->pending = store_int_at (res, 0, 0);
        out->delivered_last_day = store_int_at (res, 0, 1);
        out->failed = store_int_at (res, 0, 2);
        out->last_error = store_text_at (res, 0, 3);
        out->last_failure_at = store_text_at (res, 0, 4);
        out->last_delivered_at = store_text_at (res, 0, 5);
        out->retrying = store_int_at (res, 0, 6);
    }
    c->fn.stats (c->arg, st, st == FR_OK ? stats : NULL, st == FR_OK ? n : 0, st == FR_OK ? NULL : err);
    for (size_t i = 0; i < n; i++)
        stats_clear (&stats [i]);
    mem_free (stats);
}

fr_status_t
store_events_endpoint_stats_start (store_t *s, const char *const *endpoints, size_t n, store_events_stats_fn *fn,
                                   void *arg, char *err, size_t errlen)
{
    assert (n > 0 && n <= STORE_EVENTS_STATS_MAX);
    store_stmt_t stmts [STORE_EVENTS_STATS_MAX];
    /* every part is bounded by an index: the loop's connection must not scan a day of deliveries.
     * The newest failure needs one on (endpoint, last_attempt_at) over the failed and pending rows
     * with an error (event_deliveries_last_error): without it, all of them are read and sorted
     * (19,000 failed rows: 0.7 to 1.2 s cold, past a 1 s statement timeout). Retrying: pending
     * after an attempt of this round that finished and failed. The claim counts an attempt before
     * it is sent, so attempts alone called a first attempt in flight (a slow receiver) a retry;
     * last_attempt_at is written when an attempt ends, and first_at when the round's first is
     * claimed (a replay starts a new round: its old attempts are not retries of it) */
    /* and each count stops at STORE_EVENTS_COUNT_CAP, as the metrics' do: an index bounds what a
     * count reads to its rows, not their number, and a day of a busy endpoint's deliveries, or
     * the failed ones (never deleted), could run past the loop connection's statement timeout */
    char cap [16];
    const char *values [STORE_EVENTS_STATS_MAX][2];
    snprintf (cap, sizeof cap, "%d", STORE_EVENTS_COUNT_CAP);
    for (size_t i = 0; i < n; i++) {
        values [i][0] = endpoints [i];
        values [i][1] = cap;
        stmts [i] = (store_stmt_t) {
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE endpoint = $1 AND state = 'pending'"
            "     LIMIT $2::int) c),"
            "  (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE endpoint = $1 AND state = 'delivered'"
            "     AND delivered_at > now() - interval '1 day' LIMIT $2::int) c),"
            "  (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE endpoint = $1 AND state = 'failed'"
            "     LIMIT $2::int) c),"
            "  l.last_error, to_char (l.last_attempt_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
            "  (SELECT to_char (max (delivered_at), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM event_deliveries"
            "     WHERE endpoint = $1 AND state = 'delivered'),"
            "  (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE endpoint = $1 AND state = 'pending'"
            "     AND attempts > 0 AND last_attempt_at >= first_at LIMIT $2::int) c)"
            " FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT last_error, last_attempt_at FROM event_deliveries"
            "   WHERE endpoint = $1 AND state IN ('pending', 'failed') AND last_error IS NOT NULL"
            "   ORDER BY last_attempt_at DESC LIMIT 1) l ON true",
            2, values [i], NULL, NULL };
    }
    return op_start (s, stmts, n, stats_read, (op_ctx_t) { .fn.stats = fn, .arg = arg }, err, errlen);
}
