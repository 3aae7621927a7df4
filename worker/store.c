/* store.c - the token chain in PostgreSQL: the connection, and the statements of the refresh
 * protocol (load, claim, commit, failures, leases, the sweep's candidates, history).
 * Transactions are short: the claim locks the row and takes a lease, the provider is called
 * with no transaction open, and the commit is a compare-and-set on the generation. */
#include "store_internal.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "schema.h"
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_QUEUE_MAX 65536       /* past this the cache is cleared instead (see store_queue) */
#define RECONNECT_MS 1000            /* after a failure, no new connection before this */
#define ANSWER_MARGIN_MS 250         /* beyond statement_timeout, for the server's own answer */

typedef struct notice {
    struct notice *next;
    char *worker;                    /* NULL: the connection broke, anything cached may be stale */
    char *integration;
} notice_t;

struct store {
    char *conninfo;
    char *worker_id;
    store_limits_t limits;
    PGconn *conn;
    int64_t retry_after_ms;          /* monotonic: no connection attempt inside a call before this */
    notice_t *notices, **notices_tail;
    size_t nnotices;
    int overflow;                    /* notifications were dropped: tell the cache everything changed */
    char last_state [6];             /* SQLSTATE of the last failed statement, "" when none */
};

/* One statement of a batch (store_run_batch). */
typedef struct {
    const char *sql;
    int n;
    const char *const *values;
    const int *lengths;
    const int *formats;
} store_stmt_t;

#define ROW_COLUMNS \
    "id, provider, status, key_id, access_token, " \
    "COALESCE(extract(epoch FROM access_expires_at)::bigint, 0), refresh_token, refresh_fingerprint, " \
    "generation, array_to_string(scopes, ' '), last_error_code, last_error_message, " \
    "COALESCE(extract(epoch FROM last_error_at)::bigint, 0), COALESCE(extract(epoch FROM last_refresh_at)::bigint, 0), " \
    "extract(epoch FROM created_at)::bigint, extract(epoch FROM updated_at)::bigint, lease_owner, " \
    "COALESCE(replace(lease_token::text, '-', ''), ''), " \
    "GREATEST(COALESCE((extract(epoch FROM lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0), " \
    "refresh_token_missing AND refresh_token IS NULL, COALESCE(access_lifetime_s, 0), " \
    "COALESCE(interrupted_generation = generation, false)"

store_t *
store_new (const char *conninfo, const char *worker_id, const store_limits_t *limits)
{
    store_t *s = mem_alloc (sizeof *s);
    s->conninfo = mem_strdup (conninfo);
    s->worker_id = mem_strdup (worker_id);
    s->limits = *limits;
    s->notices_tail = &s->notices;
    return s;
}

/* Queues one notification (or, worker and integration NULL, "the connection broke"). */
static void
store_queue (store_t *s, const char *worker, const char *integration)
{
    if (s->nnotices >= NOTIFY_QUEUE_MAX) {
        s->overflow = 1;             /* a flood: forgetting everything cached is the safe summary */
        return;
    }
    notice_t *n = mem_alloc (sizeof *n);
    n->worker = worker ? mem_strdup (worker) : NULL;
    n->integration = integration ? mem_strdup (integration) : NULL;
    *s->notices_tail = n;
    s->notices_tail = &n->next;
    s->nnotices++;
}

/* Moves what libpq has read into the queue. Called after every result, so that a notification
 * read together with a statement's answer is not left waiting for the socket to be readable again. */
static void
store_take_notifies (store_t *s)
{
    PGnotify *n;
    while (s->conn && (n = PQnotifies (s->conn))) {
        /* payload: "<worker id> <integration id>"; neither contains a space */
        char *space = strchr (n->extra, ' ');
        if (space) {
            *space = '\0';
            store_queue (s, n->extra, space + 1);
        }
        PQfreemem (n);
    }
}

static void
store_drop_connection (store_t *s)
{
    if (s->conn) {
        PQfinish (s->conn);
        s->conn = NULL;
        store_queue (s, NULL, NULL);
    }
}

/* After a failure: drop the connection, and make the next attempt wait for the loop's retry. */
static void
store_fail_connection (store_t *s)
{
    store_drop_connection (s);
    s->retry_after_ms = clock_mono_ms () + RECONNECT_MS;
}

void
store_destroy (store_t **s_p)
{
    if (s_p && *s_p) {
        store_t *s = *s_p;
        if (s->conn)
            PQfinish (s->conn);
        while (s->notices) {
            notice_t *n = s->notices;
            s->notices = n->next;
            mem_free (n->worker);
            mem_free (n->integration);
            mem_free (n);
        }
        mem_free_secret (&s->conninfo);    /* may hold a password */
        mem_free (s->worker_id);
        mem_free (s);
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

/* Waits until the socket is ready for events or the deadline passes; 1 ready, 0 timed out, -1 error. */
static int
store_wait_socket (PGconn *conn, short events, int64_t deadline_ms)
{
    int fd = PQsocket (conn);
    if (fd < 0)
        return -1;
    for (;;) {
        int64_t left = deadline_ms - clock_mono_ms ();
        if (left <= 0)
            return 0;
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll (&p, 1, (int) left);
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int
store_failed (const PGresult *res)
{
    ExecStatusType rs = PQresultStatus (res);
    return rs == PGRES_FATAL_ERROR || rs == PGRES_BAD_RESPONSE;
}

/* Sends what libpq has buffered and waits for the last result of what was sent, never past
 * deadline_ms. The first failed result is kept over later ones. NULL with *timed_out set when the
 * deadline passed, NULL alone when the connection failed. */
static PGresult *
store_await (store_t *s, int64_t deadline_ms, int *timed_out)
{
    PGresult *keep = NULL, *res;
    *timed_out = 0;
    int f;
    while ((f = PQflush (s->conn)) == 1) {
        int w = store_wait_socket (s->conn, POLLOUT | POLLIN, deadline_ms);
        if (w <= 0) {
            *timed_out = w == 0;
            return NULL;
        }
        if (!PQconsumeInput (s->conn))
            return NULL;
    }
    if (f < 0)
        return NULL;
    for (;;) {
        while (PQisBusy (s->conn)) {
            int w = store_wait_socket (s->conn, POLLIN, deadline_ms);
            if (w <= 0 || !PQconsumeInput (s->conn)) {
                *timed_out = w == 0;
                PQclear (keep);
                return NULL;
            }
        }
        if (!(res = PQgetResult (s->conn)))
            break;
        if (keep && store_failed (keep))
            PQclear (res);           /* the first failure is the one to report */
        else {
            PQclear (keep);
            keep = res;
        }
    }
    store_take_notifies (s);
    return keep;
}

fr_status_t
store_connect (store_t *s, char *err, size_t errlen)
{
    if (s->conn && PQstatus (s->conn) == CONNECTION_OK)
        return FR_OK;
    if (s->conn)
        store_drop_connection (s);
    s->retry_after_ms = clock_mono_ms () + RECONNECT_MS;
    int64_t deadline = clock_mono_ms () + s->limits.connect_timeout_ms;
    /* Our defaults first and the operator's string last, so that its settings win: keepalives
     * notice a dead peer in seconds, and read-write makes libpq pass over a server that became a
     * standby (after a failover the old primary's address may answer read-only). */
    const char *keys [] = { "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "tcp_user_timeout", "target_session_attrs",
                            "application_name", "dbname", NULL };
    char ct [24], tcp_user [24];
    int64_t seconds = (s->limits.connect_timeout_ms + 999) / 1000;
    snprintf (ct, sizeof ct, "%lld", (long long) (seconds < 2 ? 2 : seconds));
    snprintf (tcp_user, sizeof tcp_user, "%lld", (long long) (s->limits.statement_timeout_ms + 4000));
    const char *values [] = { ct, "1", "5", "2", "3", tcp_user, "read-write", "ferrule-worker", s->conninfo, NULL };
    s->conn = PQconnectStartParams (keys, values, 1);
    char why [256];
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    while (s->conn && PQstatus (s->conn) != CONNECTION_BAD && ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        int w = store_wait_socket (s->conn, ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            snprintf (err, errlen, "could not connect to the database: no answer within %lld ms",
                      (long long) s->limits.connect_timeout_ms);
            goto fail;
        }
        ps = PQconnectPoll (s->conn);
    }
    if (!s->conn || PQstatus (s->conn) != CONNECTION_OK) {
        store_error_text (s->conn, NULL, why, sizeof why);
        snprintf (err, errlen, "could not connect to the database: %s", why);
        goto fail;
    }
    /* statement_timeout and lock_timeout bound the server's side; store_await bounds ours */
    char setup [400];
    snprintf (setup, sizeof setup, "SET TimeZone = 'UTC'; SET statement_timeout = %lld; SET lock_timeout = %lld; "
              "SET idle_in_transaction_session_timeout = %lld; LISTEN " STORE_NOTIFY_CHANNEL,
              (long long) s->limits.statement_timeout_ms, (long long) s->limits.lock_timeout_ms,
              (long long) (s->limits.statement_timeout_ms * 10));
    int timed_out = 0;
    PGresult *res = PQsendQuery (s->conn, setup) ? store_await (s, deadline, &timed_out) : NULL;
    int ok = res && PQresultStatus (res) == PGRES_COMMAND_OK;
    if (!ok) {
        store_error_text (s->conn, res, why, sizeof why);
        snprintf (err, errlen, "could not set up the database session: %s", timed_out ? "no answer in time" : why);
    }
    PQclear (res);
    if (!ok)
        goto fail;
    fr_status_t st = schema_check (s->conn, err, errlen);
    if (st != FR_OK) {
        store_fail_connection (s);
        return st;
    }
    /* from here on no libpq call may block: store_await waits, with a deadline */
    PQsetnonblocking (s->conn, 1);
    store_take_notifies (s);
    log_info (NULL, NULL, "connected to the database");
    return FR_OK;
fail:
    if (s->conn) {
        PQfinish (s->conn);
        s->conn = NULL;
    }
    s->retry_after_ms = clock_mono_ms () + RECONNECT_MS;
    return FR_DATABASE_UNAVAILABLE;
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
store_read_input (store_t *s)
{
    if (!s->conn)
        return;
    if (!PQconsumeInput (s->conn) || PQstatus (s->conn) != CONNECTION_OK) {
        char why [256];
        store_error_text (s->conn, NULL, why, sizeof why);
        log_warning (NULL, NULL, "lost the database connection: %s", why);
        store_fail_connection (s);
        return;
    }
    store_take_notifies (s);
}

void
store_dispatch_notifies (store_t *s, store_notify_fn *cb, void *arg)
{
    if (s->overflow) {
        s->overflow = 0;
        cb (arg, NULL, STORE_NOTIFY_ALL);
    }
    while (s->notices) {
        notice_t *n = s->notices;
        s->notices = n->next;
        if (!s->notices)
            s->notices_tail = &s->notices;
        s->nnotices--;
        cb (arg, n->worker, n->integration);
        mem_free (n->worker);
        mem_free (n->integration);
        mem_free (n);
    }
}

static void store_rollback (store_t *s);

/* SQLSTATEs after which the same statement may well succeed later: the server is shutting down or
 * read-only (a failover), out of resources (disk full), or the statement lost a lock, deadlock or
 * serialization race, or ran out of time. Other errors are this program's or the schema's. */
static int
store_transient_state (const char *state)
{
    static const char *const transient [] = { "25006", "40001", "40P01", "55P03", "57014", "57P01", "57P02",
                                              "57P03", "53000", "53100", "53200", "53300", "53400", "58030",
                                              "08000", "08003", "08006", "08001", "08004", "0A000", NULL };
    if (!state)
        return 0;
    for (int i = 0; transient [i]; i++)
        if (strcmp (state, transient [i]) == 0)
            return 1;
    return strncmp (state, "08", 2) == 0;
}

/* Classifies a failed statement (res, may be NULL; cleared here) into *st and err. A dead,
 * read-only, or unanswering connection is dropped so that the loop connects afresh; a failed
 * transaction is rolled back. */
static void
store_fail (store_t *s, PGresult *res, int timed_out, fr_status_t *st, char *err, size_t errlen)
{
    char why [256];
    const char *state = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
    store_error_text (s->conn, res, why, sizeof why);
    int transient = store_transient_state (state);
    int read_only = state && strcmp (state, "25006") == 0;
    int shutdown = state && strncmp (state, "57P0", 4) == 0;
    snprintf (s->last_state, sizeof s->last_state, "%s", state ? state : "");
    int lost = !res || PQstatus (s->conn) != CONNECTION_OK;
    PQclear (res);
    if (timed_out) {
        snprintf (err, errlen, "the database did not answer within %lld ms",
                  (long long) (s->limits.statement_timeout_ms + ANSWER_MARGIN_MS));
        store_fail_connection (s);
        *st = FR_DATABASE_UNAVAILABLE;
    }
    else
    if (lost || read_only || shutdown) {
        snprintf (err, errlen, "%s: %s", read_only ? "the database is read-only" : "database connection lost", why);
        store_fail_connection (s);
        *st = FR_DATABASE_UNAVAILABLE;
    }
    else {
        snprintf (err, errlen, "database statement failed: %s", why);
        *st = transient ? FR_DATABASE_UNAVAILABLE : FR_INTERNAL;
        if (PQtransactionStatus (s->conn) == PQTRANS_INERROR)
            store_rollback (s);      /* leave no failed transaction behind for the next statement */
    }
}

/* Connects first when needed (at most once a second). */
static fr_status_t
store_ready (store_t *s, char *err, size_t errlen)
{
    if (store_connected (s))
        return FR_OK;
    if (clock_mono_ms () < s->retry_after_ms) {
        snprintf (err, errlen, "the database is unreachable; the connection is retried every second");
        return FR_DATABASE_UNAVAILABLE;
    }
    return store_connect (s, err, errlen);
}

/* Runs one statement; on failure returns NULL and classifies it (store_fail). */
static PGresult *
store_run (store_t *s, const char *sql, int n, const char *const *values, const int *lengths,
           const int *formats, ExecStatusType want, fr_status_t *st, char *err, size_t errlen)
{
    if ((*st = store_ready (s, err, errlen)) != FR_OK)
        return NULL;
    int timed_out = 0;
    int64_t deadline = clock_mono_ms () + s->limits.statement_timeout_ms + ANSWER_MARGIN_MS;
    PGresult *res = NULL;
    s->last_state [0] = '\0';
    if (PQsendQueryParams (s->conn, sql, n, NULL, values, lengths, formats, 0))
        res = store_await (s, deadline, &timed_out);
    if (res && PQresultStatus (res) == want)
        return res;
    store_fail (s, res, timed_out, st, err, errlen);
    return NULL;
}

/* The next result of a pipeline, waiting no longer than deadline_ms; NULL between queries (as
 * PQgetResult), and NULL with *broken set when the connection failed or the deadline passed. */
static PGresult *
store_pipeline_result (store_t *s, int64_t deadline_ms, int *broken, int *timed_out)
{
    while (PQisBusy (s->conn)) {
        int w = store_wait_socket (s->conn, POLLIN, deadline_ms);
        if (w <= 0 || !PQconsumeInput (s->conn)) {
            *timed_out = w == 0;
            *broken = 1;
            return NULL;
        }
    }
    return PQgetResult (s->conn);
}

/* Runs n statements as one transaction in one round trip (libpq's pipeline mode): BEGIN, each
 * statement, COMMIT, one sync; so one WAL flush commits them all. results [i] gets statement i's
 * result (PGRES_TUPLES_OK, the caller clears it). Any failure rolls the whole transaction back:
 * every results [i] is NULL, *st and err say why (classified as store_run does). */
static fr_status_t
store_run_batch (store_t *s, const store_stmt_t *stmts, size_t n, PGresult **results, char *err, size_t errlen)
{
    fr_status_t st;
    PGresult *failed = NULL;
    int timed_out = 0, broken = 0, sent = 1;
    for (size_t i = 0; i < n; i++)
        results [i] = NULL;
    if ((st = store_ready (s, err, errlen)) != FR_OK)
        return st;
    s->last_state [0] = '\0';
    int64_t deadline = clock_mono_ms () + s->limits.statement_timeout_ms + ANSWER_MARGIN_MS;
    if (!PQenterPipelineMode (s->conn)) {
        store_fail (s, NULL, 0, &st, err, errlen);
        return st;
    }
    sent = PQsendQueryParams (s->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    for (size_t i = 0; sent && i < n; i++)
        sent = PQsendQueryParams (s->conn, stmts [i].sql, stmts [i].n, NULL, stmts [i].values, stmts [i].lengths,
                                  stmts [i].formats, 0);
    sent = sent && PQsendQueryParams (s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync (s->conn);
    int f = 0;
    while (sent && (f = PQflush (s->conn)) == 1) {
        int w = store_wait_socket (s->conn, POLLOUT | POLLIN, deadline);
        if (w <= 0 || !PQconsumeInput (s->conn)) {
            timed_out = w == 0;
            broken = 1;
            break;
        }
    }
    if (!sent || f < 0)
        broken = 1;
    /* BEGIN, the n statements, COMMIT: each ends with a NULL; then the sync */
    for (size_t q = 0; !broken && q < n + 2; q++) {
        PGresult *res;
        while ((res = store_pipeline_result (s, deadline, &broken, &timed_out))) {
            ExecStatusType rs = PQresultStatus (res);
            int ok = (q == 0 || q == n + 1) ? rs == PGRES_COMMAND_OK : rs == PGRES_TUPLES_OK;
            if (ok && q > 0 && q <= n && !results [q - 1])
                results [q - 1] = res;
            else
            if (!ok && !failed)
                failed = res;               /* the first failure (the rest are PIPELINE_ABORTED) */
            else
                PQclear (res);
        }
    }
    PGresult *sync = broken ? NULL : store_pipeline_result (s, deadline, &broken, &timed_out);
    if (!broken && (!sync || PQresultStatus (sync) != PGRES_PIPELINE_SYNC))
        broken = 1;
    PQclear (sync);
    if (!broken)
        PQexitPipelineMode (s->conn);
    store_take_notifies (s);
    if (!broken && !failed)
        return FR_OK;
    for (size_t i = 0; i < n; i++) {
        PQclear (results [i]);
        results [i] = NULL;
    }
    if (broken) {
        PQclear (failed);
        /* a pipeline left half read cannot be reused: start afresh */
        store_fail (s, NULL, timed_out, &st, err, errlen);
        if (store_connected (s))
            store_fail_connection (s);
        return st;
    }
    store_fail (s, failed, 0, &st, err, errlen);
    return st;
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

static void
store_rollback (store_t *s)
{
    if (s->conn && PQtransactionStatus (s->conn) != PQTRANS_IDLE) {
        int timed_out = 0;
        if (PQsendQuery (s->conn, "ROLLBACK"))
            PQclear (store_await (s, clock_mono_ms () + s->limits.statement_timeout_ms, &timed_out));
        if (timed_out)
            store_fail_connection (s);
    }
}

char *
store_text_at (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? NULL : mem_strdup (PQgetvalue (res, row, col));
}

int64_t
store_int_at (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? 0 : strtoll (PQgetvalue (res, row, col), NULL, 10);
}

int
store_bool_at (const PGresult *res, int row, int col)
{
    return !PQgetisnull (res, row, col) && strcmp (PQgetvalue (res, row, col), "t") == 0;
}

unsigned char *
store_bytea_at (const PGresult *res, int row, int col, size_t *len)
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
    row->id = store_text_at (res, 0, 0);
    row->provider = store_text_at (res, 0, 1);
    row->status = store_text_at (res, 0, 2);
    row->key_id = (int32_t) store_int_at (res, 0, 3);
    row->access_ct = store_bytea_at (res, 0, 4, &row->access_ct_len);
    row->access_expires_at = store_int_at (res, 0, 5);
    row->refresh_ct = store_bytea_at (res, 0, 6, &row->refresh_ct_len);
    row->refresh_fingerprint = store_text_at (res, 0, 7);
    row->generation = store_int_at (res, 0, 8);
    row->scopes = store_text_at (res, 0, 9);
    row->last_error_code = store_text_at (res, 0, 10);
    row->last_error_message = store_text_at (res, 0, 11);
    row->last_error_at = store_int_at (res, 0, 12);
    row->last_refresh_at = store_int_at (res, 0, 13);
    row->created_at = store_int_at (res, 0, 14);
    row->updated_at = store_int_at (res, 0, 15);
    row->lease_owner = store_text_at (res, 0, 16);
    snprintf (row->lease_token, sizeof row->lease_token, "%s", PQgetvalue (res, 0, 17));
    row->lease_ms_left = store_int_at (res, 0, 18);
    row->refresh_token_missing = strcmp (PQgetvalue (res, 0, 19), "t") == 0;
    row->access_lifetime_s = store_int_at (res, 0, 20);
    row->interrupted = strcmp (PQgetvalue (res, 0, 21), "t") == 0;
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

/* A lease token: 128 bits from the kernel's CSPRNG, so that no two workers ever draw the same
 * one, whatever their pids and start times (every container's worker is pid 1). */
static int
store_new_lease_token (char out [STORE_LEASE_LEN + 1])
{
    unsigned char raw [16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom (raw + got, sizeof raw - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t) n;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf (out + 2 * i, 3, "%02x", raw [i]);
    return 0;
}

/* The claim as one statement: lock the row without waiting (SKIP LOCKED: a row locked by another
 * session, an import, a rekey, an operator's transaction, must not hold up the loop, and in a
 * batch must not abort the others), decide, and take the lease when acquired. A lease still set
 * but expired was left by a holder that died or stalled during its refresh: if its provider call
 * went out, the provider may have rotated the refresh token; the chain says so, and the generation
 * is remembered so that an invalid_grant now can be explained. The last column is the outcome:
 * inactive, fresh, busy, acquired; locked or missing when no row was read. */
#define CLAIM_SQL \
    "WITH r AS (SELECT * FROM integrations WHERE id = $1 FOR UPDATE SKIP LOCKED)," \
    " d AS (SELECT CASE WHEN r.status <> 'active' THEN 'inactive'" \
    "   WHEN r.access_token IS NOT NULL AND (($4::boolean AND r.generation > $2::bigint)" \
    "        OR (NOT $4::boolean AND COALESCE(extract(epoch FROM r.access_expires_at)::bigint, 0) >= $3::bigint))" \
    "     THEN 'fresh'" \
    "   WHEN GREATEST(COALESCE((extract(epoch FROM r.lease_expires_at - clock_timestamp()) * 1000)::bigint, 0), 0) > 0" \
    "     THEN 'busy'" \
    "   ELSE 'acquired' END AS outcome FROM r)," \
    " u AS (UPDATE integrations i SET lease_owner = $5, lease_token = $6::uuid, lease_id = NULL," \
    "    lease_expires_at = clock_timestamp() + $7::bigint * interval '1 millisecond'," \
    "    interrupted_generation = CASE WHEN r.lease_owner IS NOT NULL THEN r.generation" \
    "                                  ELSE i.interrupted_generation END" \
    "  FROM r, d WHERE i.id = r.id AND d.outcome = 'acquired'" \
    "  RETURNING r.lease_owner AS old_owner, r.generation AS old_generation)," \
    " c AS (INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)" \
    "  SELECT $1, u.old_generation, u.old_owner, 'interrupted'," \
    "   'the refresh lease of worker \"' || u.old_owner || '\" expired before it stored a result: the worker " \
    "stopped or stalled during the refresh, and if its provider call went out the provider may have rotated " \
    "the refresh token'" \
    "  FROM u WHERE u.old_owner IS NOT NULL)" \
    "SELECT " ROW_COLUMNS ", d.outcome FROM r, d" \
    " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL," \
    "  NULL, NULL, NULL, NULL, NULL, NULL, NULL," \
    "  CASE WHEN EXISTS (SELECT 1 FROM integrations WHERE id = $1) THEN 'locked' ELSE 'missing' END" \
    "  WHERE NOT EXISTS (SELECT 1 FROM r)"
#define CLAIM_OUTCOME_COLUMN 22

typedef struct {
    char gen [32], until [32], ms [32];
    char token [STORE_LEASE_LEN + 1];
    const char *values [7];
} claim_params_t;

static int
claim_params (store_t *s, const store_claim_req_t *q, int64_t lease_ms, claim_params_t *p)
{
    if (store_new_lease_token (p->token) != 0)
        return -1;
    snprintf (p->gen, sizeof p->gen, "%" PRId64, q->known_generation);
    snprintf (p->until, sizeof p->until, "%" PRId64, q->valid_until);
    snprintf (p->ms, sizeof p->ms, "%" PRId64, lease_ms);
    p->values [0] = q->id;
    p->values [1] = p->gen;
    p->values [2] = p->until;
    p->values [3] = q->forced ? "true" : "false";
    p->values [4] = s->worker_id;
    p->values [5] = p->token;
    p->values [6] = p->ms;
    return 0;
}

/* Reads one claim's answer into q. */
static void
claim_read (store_t *s, store_claim_req_t *q, const PGresult *res, const claim_params_t *p, int64_t lease_ms)
{
    const char *outcome = PQntuples (res) == 1 ? PQgetvalue (res, 0, CLAIM_OUTCOME_COLUMN) : "missing";
    memset (&q->row, 0, sizeof q->row);
    q->st = FR_OK;
    q->err [0] = '\0';
    if (strcmp (outcome, "missing") == 0) {
        snprintf (q->err, sizeof q->err, "integration \"%s\" does not exist", q->id);
        q->st = FR_NOT_FOUND;
        return;
    }
    if (strcmp (outcome, "locked") == 0) {
        q->outcome = CLAIM_LOCKED;
        return;
    }
    store_fill_row (res, &q->row);
    if (strcmp (outcome, "inactive") == 0)
        q->outcome = CLAIM_INACTIVE;
    else
    if (strcmp (outcome, "fresh") == 0)
        q->outcome = CLAIM_FRESH;
    else
    if (strcmp (outcome, "busy") == 0)
        q->outcome = CLAIM_BUSY;
    else {
        if (q->row.lease_owner)
            q->row.interrupted = 1;
        mem_free (q->row.lease_owner);
        q->row.lease_owner = mem_strdup (s->worker_id);
        snprintf (q->row.lease_token, sizeof q->row.lease_token, "%s", p->token);
        q->row.lease_ms_left = lease_ms;
        q->outcome = CLAIM_ACQUIRED;
    }
}

void
store_claim_batch (store_t *s, store_claim_req_t *reqs, size_t n, int64_t lease_ms)
{
    claim_params_t *params = mem_alloc (n * sizeof *params);
    store_stmt_t *stmts = mem_alloc (n * sizeof *stmts);
    PGresult **results = mem_alloc (n * sizeof *results);
    fr_status_t st = FR_OK;
    char err [256] = "";
    for (size_t i = 0; i < n; i++) {
        memset (&reqs [i].row, 0, sizeof reqs [i].row);
        if (claim_params (s, &reqs [i], lease_ms, &params [i]) != 0) {
            snprintf (err, sizeof err, "could not draw a lease token from the kernel: %s", strerror (errno));
            st = FR_INTERNAL;
            goto out;
        }
        stmts [i] = (store_stmt_t) { CLAIM_SQL, 7, params [i].values, NULL, NULL };
    }
    if (n == 1) {
        /* alone: one statement, its own transaction */
        results [0] = store_run (s, CLAIM_SQL, 7, params [0].values, NULL, NULL, PGRES_TUPLES_OK, &st, err, sizeof err);
    }
    else {
        st = store_run_batch (s, stmts, n, results, err, sizeof err);
        if (st != FR_OK && store_connected (s)) {
            /* something in the batch failed while the database is up: claim one by one, so
             * that one integration's problem stays its own */
            for (size_t i = 0; i < n; i++) {
                results [i] = store_run (s, CLAIM_SQL, 7, params [i].values, NULL, NULL, PGRES_TUPLES_OK,
                                         &reqs [i].st, reqs [i].err, sizeof reqs [i].err);
                if (results [i])
                    claim_read (s, &reqs [i], results [i], &params [i], lease_ms);
                PQclear (results [i]);
                results [i] = NULL;
            }
            goto done;
        }
    }
out:
    for (size_t i = 0; i < n; i++) {
        if (st != FR_OK || !results [i]) {
            reqs [i].st = st != FR_OK ? st : FR_INTERNAL;
            snprintf (reqs [i].err, sizeof reqs [i].err, "%s", err);
        }
        else
            claim_read (s, &reqs [i], results [i], &params [i], lease_ms);
        PQclear (results [i]);
    }
done:
    mem_free (results);
    mem_free (stmts);
    mem_free (params);
}

/* The commit's compare-and-set, one statement, so one round trip: the UPDATE locks the row and is
 * the compare-and-set; the chain row and the notification commit with it or not at all. The check
 * is on the generation: tokens the provider has just issued are the newest there are, so they are
 * kept even when a stalled worker's lease was overtaken, and, when they carry a rotated refresh
 * token, even over a needs_reconnect recorded at the same generation (the overtaker spent the
 * token this one replaced, and its invalid_grant says nothing about the new one). One row when
 * committed, none when the compare-and-set lost. */
#define COMMIT_SQL \
    "WITH prev AS (SELECT status FROM integrations WHERE id = $1),"     /* the snapshot: before u */ \
    " u AS (" \
    "  UPDATE integrations i SET key_id = $3, access_token = $4, access_expires_at = to_timestamp($5::bigint)," \
    "    access_lifetime_s = $12::integer," \
    "    refresh_token = $6, refresh_fingerprint = $7, generation = i.generation + 1, status = 'active'," \
    "    scopes = COALESCE(string_to_array($8, ' '), i.scopes)," \
    "    lease_owner = CASE WHEN mine THEN NULL ELSE i.lease_owner END," \
    "    lease_expires_at = CASE WHEN mine THEN NULL ELSE i.lease_expires_at END," \
    "    lease_token = CASE WHEN mine THEN NULL ELSE i.lease_token END," \
    "    last_refresh_at = now()," \
    "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()" \
    "  FROM (SELECT i2.lease_owner = $9 AND i2.lease_token = $11::uuid IS TRUE AS mine" \
    "        FROM integrations i2 WHERE i2.id = $1) m" \
    "  WHERE i.id = $1 AND i.generation = $2::bigint" \
    "    AND (i.status = 'active' OR (i.status = 'needs_reconnect' AND $10::boolean))" \
    "  RETURNING i.generation)," \
    " c AS (" \
    "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)" \
    "  SELECT $1, u.generation, $9, 'refreshed', $7, $10::boolean," \
    "    CASE WHEN prev.status = 'needs_reconnect' THEN 'recovered: the invalid_grant recorded before was for the" \
    " refresh token this rotation replaced' END" \
    "  FROM u, prev RETURNING generation)" \
    "SELECT generation, pg_notify('" STORE_NOTIFY_CHANNEL "', $9 || ' ' || $1) FROM c" \
    ""

typedef struct {
    char gen [32], key [32], exp [32], life [32];
    const char *values [12];
    int lengths [12];
    int formats [12];
} commit_params_t;

static void
commit_params (store_t *s, const store_commit_t *c, commit_params_t *p)
{
    snprintf (p->gen, sizeof p->gen, "%" PRId64, c->expected_generation);
    snprintf (p->key, sizeof p->key, "%" PRId32, c->key_id);
    snprintf (p->exp, sizeof p->exp, "%" PRId64, c->access_expires_at);
    snprintf (p->life, sizeof p->life, "%" PRId64, c->access_lifetime_s);
    const char *values [] = { c->id, p->gen, p->key, (const char *) c->access_ct, p->exp, (const char *) c->refresh_ct,
                              c->refresh_fingerprint, c->scopes, s->worker_id, c->rotated ? "true" : "false",
                              c->lease_token [0] ? c->lease_token : NULL, c->access_lifetime_s > 0 ? p->life : NULL };
    memcpy (p->values, values, sizeof values);
    memset (p->lengths, 0, sizeof p->lengths);
    memset (p->formats, 0, sizeof p->formats);
    p->lengths [3] = (int) c->access_ct_len;
    p->lengths [5] = (int) c->refresh_ct_len;
    p->formats [3] = p->formats [5] = 1;
}

/* A lost compare-and-set: a "conflict" chain row, and the lease released if it is still ours. */
static fr_status_t
store_record_conflict (store_t *s, const store_commit_t *c, char *err, size_t errlen)
{
    fr_status_t st;
    const char *v2 [] = { c->id, s->worker_id, c->refresh_fingerprint, c->rotated ? "true" : "false",
                          c->lease_token [0] ? c->lease_token : NULL };
    PGresult *res = store_run (s,
        "WITH u AS (UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
        "  WHERE id = $1 AND lease_owner = $2 AND lease_token = $5::uuid RETURNING id)"
        "INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated, detail)"
        " SELECT id, generation, $2, 'conflict', $3, $4::boolean,"
        "  'another refresh, import or status change committed first; this result was not stored'"
        " FROM integrations WHERE id = $1",
        5, v2, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

fr_status_t
store_commit_refresh (store_t *s, const store_commit_t *c, int *conflict, char *err, size_t errlen)
{
    fr_status_t st;
    commit_params_t p;
    commit_params (s, c, &p);
    *conflict = 0;
    PGresult *res = store_run (s, COMMIT_SQL, 12, p.values, p.lengths, p.formats, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    int committed = PQntuples (res) == 1;
    PQclear (res);
    if (committed)
        return FR_OK;
    *conflict = 1;
    return store_record_conflict (s, c, err, errlen);
}

static int
commit_by_id (const void *a, const void *b)
{
    const store_commit_t *const *x = a, *const *y = b;
    return strcmp ((*x)->id, (*y)->id);
}

fr_status_t
store_commit_batch (store_t *s, const store_commit_t *const *commits, size_t n, int *committed,
                    char *err, size_t errlen)
{
    fr_status_t st;
    /* rows locked in id order: two batches that share rows (a takeover) cannot deadlock */
    const store_commit_t **order = mem_alloc (n * sizeof *order);
    commit_params_t *params = mem_alloc (n * sizeof *params);
    store_stmt_t *stmts = mem_alloc (n * sizeof *stmts);
    PGresult **results = mem_alloc (n * sizeof *results);
    memcpy (order, commits, n * sizeof *order);
    qsort (order, n, sizeof *order, commit_by_id);
    for (size_t i = 0; i < n; i++) {
        commit_params (s, order [i], &params [i]);
        stmts [i] = (store_stmt_t) { COMMIT_SQL, 12, params [i].values, params [i].lengths, params [i].formats };
    }
    st = store_run_batch (s, stmts, n, results, err, errlen);
    for (size_t i = 0; i < n; i++) {
        if (st == FR_OK) {
            size_t k = 0;
            while (commits [k] != order [i])
                k++;
            committed [k] = PQntuples (results [i]) == 1;
        }
        PQclear (results [i]);
    }
    mem_free (results);
    mem_free (stmts);
    mem_free (params);
    mem_free (order);
    return st;
}

fr_status_t
store_record_failure (store_t *s, const char *id, int64_t expected_generation, const char *lease_token,
                      const char *outcome, const char *new_status, const char *error_code,
                      const char *error_message, const char *fingerprint, int *stale,
                      char *err, size_t errlen)
{
    fr_status_t st;
    char gen [32];
    snprintf (gen, sizeof gen, "%" PRId64, expected_generation);
    /* The status and last error change only when the failure is about the current generation:
     * an invalid_grant for a refresh token someone already replaced says nothing of the new one.
     * The lease is released only if it is still this refresh's (owner and token). */
    const char *values [] = { id, gen, lease_token && *lease_token ? lease_token : NULL, new_status, error_code,
                              error_message, s->worker_id, outcome, fingerprint };
    PGresult *res = store_run (s,
        "WITH cur AS (SELECT generation = $2::bigint AS current,"
        "               (lease_owner = $7 AND lease_token = $3::uuid) IS TRUE AS mine"
        "             FROM integrations WHERE id = $1 FOR UPDATE),"
        " u AS ("
        "  UPDATE integrations i SET"
        "    status = CASE WHEN cur.current AND $4::text IS NOT NULL THEN $4::text ELSE i.status END,"
        "    last_error_code = CASE WHEN cur.current THEN $5 ELSE i.last_error_code END,"
        "    last_error_message = CASE WHEN cur.current THEN $6 ELSE i.last_error_message END,"
        "    last_error_at = CASE WHEN cur.current THEN now() ELSE i.last_error_at END,"
        "    lease_owner = CASE WHEN cur.mine THEN NULL ELSE i.lease_owner END,"
        "    lease_expires_at = CASE WHEN cur.mine THEN NULL ELSE i.lease_expires_at END,"
        "    lease_token = CASE WHEN cur.mine THEN NULL ELSE i.lease_token END,"
        "    updated_at = now()"
        "  FROM cur WHERE i.id = $1 RETURNING i.generation, cur.current),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
        "  SELECT $1, u.generation, $7, $8, $9, $6 FROM u RETURNING generation)"
        "SELECT u.current, pg_notify('" STORE_NOTIFY_CHANNEL "', $7 || ' ' || $1) FROM u, c",
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
store_release_lease (store_t *s, const char *id, const char *lease_token, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { id, s->worker_id, lease_token };
    PGresult *res = store_run (s, "UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
                                  " WHERE id = $1 AND lease_owner = $2 AND lease_token = $3::uuid",
                               3, values, NULL, NULL, PGRES_COMMAND_OK, &st, err, errlen);
    PQclear (res);
    return st;
}

/* Copies a result's first two columns into two arrays of strings. */
static void
store_take_pairs (const PGresult *res, char ***a, char ***b, size_t *count)
{
    int n = PQntuples (res);
    *a = mem_alloc ((size_t) (n ? n : 1) * sizeof **a);
    *b = mem_alloc ((size_t) (n ? n : 1) * sizeof **b);
    for (int i = 0; i < n; i++) {
        (*a) [i] = mem_strdup (PQgetvalue (res, i, 0));
        (*b) [i] = mem_strdup (PQgetvalue (res, i, 1));
    }
    *count = (size_t) n;
}

fr_status_t
store_release_own_leases (store_t *s, char ***ids, char ***providers, size_t *count, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { s->worker_id };
    *ids = NULL;
    *providers = NULL;
    *count = 0;
    PGresult *res = store_run (s,
        "WITH u AS (UPDATE integrations SET lease_owner = NULL, lease_token = NULL, lease_id = NULL,"
        "    lease_expires_at = NULL, interrupted_generation = generation"
        "  WHERE lease_owner = $1 RETURNING id, provider, generation),"
        " c AS (INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
        "  SELECT id, generation, $1, 'interrupted', 'worker \"' || $1 || '\" stopped during this refresh and"
        " found its lease when it started again: if the provider call had gone out, the provider may have rotated"
        " the refresh token' FROM u)"
        "SELECT id, provider FROM u",
        1, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    store_take_pairs (res, ids, providers, count);
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_sweep_candidates (store_t *s, int64_t horizon_s, double lifetime_share, int64_t floor_s,
                        const char *provider, int64_t idle_s, int64_t limit,
                        char ***ids, char ***providers, size_t *count, char *err, size_t errlen)
{
    fr_status_t st;
    char horizon [32], idle [32], lim [32], share [32], floor [32];
    snprintf (horizon, sizeof horizon, "%" PRId64, horizon_s);
    snprintf (idle, sizeof idle, "%" PRId64, idle_s);
    snprintf (lim, sizeof lim, "%" PRId64, limit);
    snprintf (share, sizeof share, "%.4f", lifetime_share);
    snprintf (floor, sizeof floor, "%" PRId64, floor_s);
    const char *values [] = { horizon, provider, idle, lim, share, floor };
    *ids = NULL;
    *providers = NULL;
    *count = 0;
    /* Each token's own horizon: the global one, but no more than a share of the token's lifetime
     * (a 120 s token is not refreshed every pass of a 300 s horizon) and no less than the floor
     * (one sweep interval and a margin, so that a pass always comes before expiry), and never more
     * than half the lifetime. */
    PGresult *res = store_run (s,
        "SELECT id, provider FROM integrations"
        " WHERE status = 'active' AND refresh_token IS NOT NULL"
        "   AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())"
        "   AND CASE WHEN $2::text IS NULL"
        "       THEN access_expires_at IS NULL OR access_expires_at < now() + interval '1 second' *"
        "         CASE WHEN COALESCE(access_lifetime_s, 0) <= 0 THEN $1::bigint"
        "              ELSE LEAST($1::bigint, access_lifetime_s / 2,"
        "                         GREATEST(access_lifetime_s * $5::float8, $6::bigint)) END"
        "       ELSE provider = $2 AND COALESCE(last_refresh_at, created_at) < now() - $3::bigint * interval '1 second' END"
        " ORDER BY access_expires_at NULLS FIRST LIMIT $4::bigint",
        6, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    if (!res)
        return st;
    store_take_pairs (res, ids, providers, count);
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_generations (store_t *s, const char *const *ids, size_t n,
                   void (*cb) (void *arg, const char *id, int64_t generation, const char *status),
                   void *arg, char *err, size_t errlen)
{
    fr_status_t st;
    mem_buf_t b;
    mem_buf_init (&b, n * 132 + 8);
    int bad = mem_buf_append (&b, "{", 1);
    for (size_t i = 0; i < n && !bad; i++)
        /* ids are [A-Za-z0-9._:-] (checked on every request), so they need no quoting */
        bad = (i && mem_buf_append (&b, ",", 1)) || mem_buf_append (&b, ids [i], strlen (ids [i]));
    bad = bad || mem_buf_append (&b, "}", 1);
    if (bad) {
        mem_buf_free (&b);
        snprintf (err, errlen, "too many integrations to re-validate at once");
        return FR_TOO_LARGE;
    }
    const char *values [] = { b.data };
    PGresult *res = store_run (s, "SELECT id, generation, status FROM integrations WHERE id = ANY ($1::text[])",
                               1, values, NULL, NULL, PGRES_TUPLES_OK, &st, err, errlen);
    mem_buf_free (&b);
    if (!res)
        return st;
    for (int i = 0; i < PQntuples (res); i++)
        cb (arg, PQgetvalue (res, i, 0), store_int_at (res, i, 1), PQgetvalue (res, i, 2));
    PQclear (res);
    return FR_OK;
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
        r->generation = store_int_at (res, i, 0);
        r->at = store_int_at (res, i, 1);
        r->outcome = store_text_at (res, i, 2);
        r->worker = store_text_at (res, i, 3);
        r->refresh_fingerprint = store_text_at (res, i, 4);
        r->rotated = strcmp (PQgetvalue (res, i, 5), "t") == 0;
        r->detail = store_text_at (res, i, 6);
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
