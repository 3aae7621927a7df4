/* store.c - a worker's session with PostgreSQL: the connection, made and made again without
 * waiting; the notifications it hears; the batch in flight (one pipelined transaction: BEGIN, the
 * statements, COMMIT, one sync), read as the server answers; how a failure is classified; reading
 * result columns. The statements themselves are in store_chain.c (the refresh protocol),
 * store_connect.c, store_events.c and store_gateway.c. */
#include "store_internal.h"
#include "ring.h"
#include "clock.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include "pgnotice.h"
#include "pgwait.h"
#include "schema.h"
#include "text.h"
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_QUEUE_MAX 65536       /* past this the cache is cleared instead (see store_queue) */
#define RECONNECT_MS 1000            /* after a failure, no new connection before this */
#define AWAY_LOG_MS 10000            /* a database that stays away is said this often, not each try */

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
    int64_t quick_retry_ms;          /* monotonic: the last loss retried at once (store_fail_connection) */
    notice_t *notices, **notices_tail;
    size_t nnotices;
    int overflow;                    /* notifications were dropped: tell the cache everything changed */
    int events;                      /* new events were notified: wake the delivery thread */
    int batches_only;                /* store_batches_only: no LISTEN, no notices queued */
    char last_state [6];             /* SQLSTATE of the last failed statement, "" when none */
    PGconn *connecting;              /* a connection being made in the background (store_reconnect) */
    int connect_phase;               /* 1: the handshake; 2: the session's setup and schema version sent */
    PostgresPollingStatusType connect_ps;
    int64_t connect_deadline_ms;
    long long connect_version;       /* phase 2: the schema version read, -1 until it is */
    int connect_failed;              /* phase 2: a setup statement failed (connect_why says how) */
    char connect_why [256];
    int connect_read_only;           /* phase 2: the server said transaction_read_only is on */
    lograte_t away_log;              /* failed attempts and read-only servers: a line in ten seconds */
    char away_said [256];            /* the reason said last ("" once a writable connection is made):
                                        a new one is said at once */
    int64_t away_since_ms;           /* monotonic: the first failed attempt since the last writable
                                        connection, 0 when none failed */
    uint64_t away_attempts;          /* attempts since then that gave no writable connection */
    int rollback_due;                /* a failed batch left its transaction aborted: the next batch
                                        rolls it back first (store_batch_start) */
    struct batch {                   /* the batch in flight (store_batch_start), at most one */
        int active;                  /* sent: results still arriving */
        int finished;                /* every result read (or the batch failed): to deliver */
        int committed;               /* its COMMIT succeeded with a transaction after it still to
                                        read: deliverable now (store_batch_pump) */
        int delivered;               /* done has run: the rest is read for the connection's sake */
        size_t n;                    /* statements (the pipeline also holds BEGIN and COMMIT) */
        size_t lead;                 /* 1: a ROLLBACK goes first (rollback_due) */
        size_t after;                /* 3: a transaction follows the COMMIT (BEGIN, the statement after,
                                      * COMMIT: store_batch_start_then), else 0 */
        size_t q;                    /* queries whose results are fully read */
        PGresult **results;
        PGresult *failed;            /* the first failure */
        char after_err [256];        /* why the statement after the COMMIT failed, "" if it did not */
        const char *after_failure;   /* what that failure means, for the log */
        int broken, timed_out;
        fr_status_t st;              /* once finished: FR_OK, or why the whole batch failed */
        char err [256];
        int64_t deadline_ms;
        store_batch_fn *done;
        void *arg;                   /* the store's copy of the caller's context: freed after done */
    } batch;
};

static char *store_prepare_sql (void);
static void store_say_connected (store_t *s);
static const char *store_prepared_name (const char *sql);


#define ROW_COLUMNS STORE_ROW_COLUMNS

store_t *
store_new (const char *conninfo, const char *worker_id, const store_limits_t *limits)
{
    store_t *s = mem_alloc (sizeof *s);
    s->conninfo = mem_strdup (conninfo);
    s->worker_id = mem_strdup (worker_id);
    s->limits = *limits;
    s->notices_tail = &s->notices;
    s->away_log.interval_ms = AWAY_LOG_MS;
    return s;
}

void
store_batches_only (store_t *s)
{
    s->batches_only = 1;
}

/* Queues one notification (or, worker and integration NULL, "the connection broke"). */
static void
store_queue (store_t *s, const char *worker, const char *integration)
{
    if (s->batches_only)
        return;                      /* the main connection's notices are the cache's */
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
        /* the cache's channel: "<worker id> <integration id>", neither contains a space */
        char *space = strchr (n->extra, ' ');
        if (strcmp (n->relname, STORE_EVENTS_NOTIFY) == 0)
            s->events = 1;           /* events_emit's wake-up: no payload */
        else if (space) {
            *space = '\0';
            store_queue (s, n->extra, space + 1);
        }
        PQfreemem (n);
    }
}

static void
store_drop_connection (store_t *s)
{
    if (s->batch.active && s->batch.committed) {
        /* lost in the transaction after its COMMIT: what it committed stands, delivered or to be */
        s->batch.active = 0;
        s->batch.finished = 1;
        s->batch.st = FR_OK;
        log_warning (NULL, NULL, "a batch committed, but the statement after it failed: the connection was lost; %s",
                     s->batch.after_failure);
    }
    else
    if (s->batch.active) {
        /* the batch in flight cannot end any more */
        s->batch.active = 0;
        s->batch.finished = 1;
        s->batch.st = FR_DATABASE_UNAVAILABLE;
        snprintf (s->batch.err, sizeof s->batch.err, "the database connection was lost with the batch in flight");
        PQclear (s->batch.failed);
        s->batch.failed = NULL;
        for (size_t i = 0; i < s->batch.n; i++) {
            PQclear (s->batch.results [i]);
            s->batch.results [i] = NULL;
        }
    }
    if (s->conn) {
        PQfinish (s->conn);
        s->conn = NULL;
        store_queue (s, NULL, NULL);
    }
    s->rollback_due = 0;                 /* a new session has no transaction to end */
}

/* After a failure: drop the connection. A lost connection is made again at once (a backend ended
 * by an operator or a pooler, a server restarted: it is likely there, and until the listening
 * connection is back other processes' changes go unheard); later attempts wait for the loop's
 * retry, once a second, and so does every loss within a second of the last one retried at once,
 * so that a server accepting and dropping every connection costs one attempt a second. */
static void
store_fail_connection (store_t *s)
{
    int64_t now = clock_mono_ms ();
    int quick = s->conn && now - s->quick_retry_ms >= RECONNECT_MS;
    store_drop_connection (s);
    s->retry_after_ms = quick ? now : now + RECONNECT_MS;
    if (quick)
        s->quick_retry_ms = now;
}

void
store_destroy (store_t **s_p)
{
    if (s_p && *s_p) {
        store_t *s = *s_p;
        for (size_t i = 0; s->batch.results && i < s->batch.n; i++)
            PQclear (s->batch.results [i]);     /* a batch never delivered (store_batch_finish was not called) */
        mem_free (s->batch.results);
        mem_free (s->batch.arg);                /* ...and its context, which nobody else holds */
        PQclear (s->batch.failed);
        PQfinish (s->connecting);
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
    if (!*m && res)                      /* no error: a result of another kind than expected */
        snprintf (err, errlen, "unexpected result %s", PQresStatus (PQresultStatus (res)));
    else
        snprintf (err, errlen, "%s", m);
    char *nl = strchr (err, '\n');
    if (nl)
        *nl = '\0';
}

/* Sends what libpq has buffered and waits for the last result of what was sent, never past
 * deadline_ms (pgwait_result). NULL with *timed_out set when the deadline passed, NULL alone when
 * the connection failed. */
static PGresult *
store_await (store_t *s, int64_t deadline_ms, int *timed_out)
{
    pgwait_t w;
    PGresult *res = pgwait_result (s->conn, deadline_ms, -1, &w);
    *timed_out = w == PGWAIT_TIMED_OUT;
    if (w == PGWAIT_READY)
        store_take_notifies (s);
    return res;
}

/* What the server says outside an answer (a WARNING, the FATAL that ends a terminated session)
 * goes to the log as a line of its own, not to stderr in libpq's words: the worker's log is JSON
 * lines, and an operator looking at a dropped connection wants the server's reason next to it.
 * Only the severity and the primary message, made printable: the server never sees a token in
 * the clear, but its messages can quote a parameter. */
static void
store_on_notice (void *arg, const PGresult *res)
{
    const char *sev;
    char text [PGNOTICE_MAX + 8];
    if (pgnotice_read (res, text, sizeof text, &sev))
        log_warning (NULL, NULL, "the database server said (%s): %s: %s", (const char *) arg, sev, text);
    else
        log_debug (NULL, NULL, "the database server said (%s): %s: %s", (const char *) arg, sev, text);
}

void
store_log_notices (PGconn *conn, const char *connection)
{
    if (conn)
        PQsetNoticeReceiver (conn, store_on_notice, (void *) connection);
}

void
store_app_name (char *out, const char *role, const char *worker_id)
{
    snprintf (out, STORE_APP_NAME_MAX, "%s %s", role, worker_id);
}

/* A connection attempt, started without waiting (NULL only when out of memory). */
static PGconn *
store_start_connection (const store_t *s)
{
    /* Our defaults first and the operator's string last, so that its settings win: keepalives
     * notice a dead peer in seconds, and read-write makes libpq pass over a server that became a
     * standby (after a failover the old primary's address may answer read-only). */
    const char *keys [] = { "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "tcp_user_timeout", "target_session_attrs",
                            "application_name", "dbname", NULL };
    char ct [24], tcp_user [24], app [STORE_APP_NAME_MAX];
    int64_t seconds = (s->limits.connect_timeout_ms + 999) / 1000;
    snprintf (ct, sizeof ct, "%lld", (long long) (seconds < 2 ? 2 : seconds));
    snprintf (tcp_user, sizeof tcp_user, "%lld", (long long) (s->limits.statement_timeout_ms + 4000));
    store_app_name (app, s->batches_only ? "ferrule-worker-batches" : "ferrule-worker", s->worker_id);
    const char *values [] = { ct, "1", "5", "2", "3", tcp_user, "read-write", app, s->conninfo, NULL };
    PGconn *conn = PQconnectStartParams (keys, values, 1);
    store_log_notices (conn, s->batches_only ? "the batch connection" : "the main connection");
    return conn;
}

/* The session's settings (statement_timeout and lock_timeout bound the server's side, store_await
 * ours), the notification channels (the main connection only). */
static void
store_setup_sql (const store_t *s, char *out, size_t len)
{
    snprintf (out, len, "SET TimeZone = 'UTC'; SET statement_timeout = %lld; SET lock_timeout = %lld; "
              "SET idle_in_transaction_session_timeout = %lld%s",
              (long long) s->limits.statement_timeout_ms, (long long) s->limits.lock_timeout_ms,
              (long long) (s->limits.statement_timeout_ms * 10),
              s->batches_only ? "" : "; LISTEN " STORE_NOTIFY_CHANNEL "; LISTEN " STORE_EVENTS_NOTIFY);
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
    s->conn = store_start_connection (s);
    char why [256] = "";
    if (pgwait_connect (s->conn, deadline, -1) == PGWAIT_TIMED_OUT) {
        snprintf (why, sizeof why, "no answer within %lld ms", (long long) s->limits.connect_timeout_ms);
        snprintf (err, errlen, "could not connect to the database: %s", why);
        goto fail;
    }
    if (!s->conn || PQstatus (s->conn) != CONNECTION_OK) {
        store_error_text (s->conn, NULL, why, sizeof why);
        snprintf (err, errlen, "could not connect to the database: %s", why);
        goto fail;
    }
    char setup [400];
    store_setup_sql (s, setup, sizeof setup);
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
    fr_status_t st = schema_check_until (s->conn, deadline, -1, err, errlen);
    if (st != FR_OK) {
        store_fail_connection (s);
        return st;
    }
    char *prepare = store_prepare_sql ();
    res = PQsendQuery (s->conn, prepare) ? store_await (s, deadline, &timed_out) : NULL;
    mem_free (prepare);
    ok = res && PQresultStatus (res) == PGRES_COMMAND_OK;
    if (!ok) {
        store_error_text (s->conn, res, why, sizeof why);
        snprintf (err, errlen, "could not prepare the refresh protocol's statements: %s",
                  timed_out ? "no answer in time" : why);
    }
    PQclear (res);
    if (!ok)
        goto fail;
    /* from here on no libpq call may block: store_await waits, with a deadline */
    PQsetnonblocking (s->conn, 1);
    store_take_notifies (s);
    store_say_connected (s);
    return FR_OK;
fail:
    if (s->conn) {
        PQfinish (s->conn);
        s->conn = NULL;
    }
    /* the caller says this one, and it counts as the interval's line: the background's attempts
     * after it, with the same reason, are said as their own are (a start against a database that
     * refused said it twice in its first second) */
    if (!s->away_since_ms)
        s->away_since_ms = clock_mono_ms ();
    s->away_attempts++;
    uint64_t held;
    (void) lograte_take (&s->away_log, clock_mono_ms (), &held);
    snprintf (s->away_said, sizeof s->away_said, "%s", why);
    s->retry_after_ms = clock_mono_ms () + RECONNECT_MS;
    return FR_DATABASE_UNAVAILABLE;
}

/* The connection's name in the log: "" for the main one. */
static const char *
store_label (const store_t *s)
{
    return s->batches_only ? " (the batch connection)" : "";
}

/* One more attempt that gave no writable connection (why: the reason; read_only: it gave a
 * read-only one). Attempts come once a second for as long as the database stays away, on each of
 * the worker's connections: a line each made two a second, forever, and buried everything else.
 * The first is said, then one every AWAY_LOG_MS carrying the count held back, and a new reason at
 * once. */
static void
store_say_away (store_t *s, const char *why, int read_only)
{
    int64_t now = clock_mono_ms ();
    if (!s->away_since_ms)
        s->away_since_ms = now;
    s->away_attempts++;
    if (strcmp (why, s->away_said) != 0)
        s->away_log.next_ms = 0;
    uint64_t held;
    if (!lograte_take (&s->away_log, now, &held))
        return;
    snprintf (s->away_said, sizeof s->away_said, "%s", why);
    char more [96] = "";
    if (held)
        snprintf (more, sizeof more, " (and %" PRIu64 " more attempts since the last line)", held);
    if (read_only)
        log_warning (NULL, NULL, "the database%s is read-only (%s): tokens are read from it, but nothing is "
                     "refreshed or changed until a writable server answers; the connection is made again after a "
                     "write fails%s", store_label (s), why, more);
    else
        log_warning (NULL, NULL, "could not connect to the database%s: %s; trying again every second%s",
                     store_label (s), why, more);
}

/* A writable connection made: said, with how long the database was away when it was. */
static void
store_say_connected (store_t *s)
{
    if (s->away_attempts)
        log_info (NULL, NULL, "connected to the database%s again, after %.1f s and %" PRIu64 " attempt%s that did "
                  "not give a writable connection", store_label (s),
                  (double) (clock_mono_ms () - s->away_since_ms) / 1000.0, s->away_attempts,
                  s->away_attempts == 1 ? "" : "s");
    else
        log_info (NULL, NULL, "connected to the database%s", store_label (s));
    s->away_attempts = 0;
    s->away_since_ms = 0;
    s->away_said [0] = '\0';
    s->away_log.next_ms = 0;
    s->away_log.held = 0;
}

/* Gives up the background attempt; the next one after RECONNECT_MS. */
static void
store_reconnect_failed (store_t *s, const char *why)
{
    store_say_away (s, why, 0);
    PQfinish (s->connecting);
    s->connecting = NULL;
    s->connect_phase = 0;
    s->retry_after_ms = clock_mono_ms () + RECONNECT_MS;
}

/* 1 when fd is ready for events now (without waiting). */
static int
store_fd_ready (int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    return fd >= 0 && poll (&p, 1, 0) > 0;
}

int
store_reconnect (store_t *s)
{
    char why [256];
    if (store_connected (s))
        return 0;
    int64_t now = clock_mono_ms ();
    if (!s->connecting) {
        if (now < s->retry_after_ms)
            return 0;
        if (s->conn)
            store_drop_connection (s);
        s->connecting = store_start_connection (s);
        s->connect_phase = 1;
        s->connect_ps = PGRES_POLLING_WRITING;
        s->connect_deadline_ms = now + s->limits.connect_timeout_ms;
        if (!s->connecting) {
            store_reconnect_failed (s, "out of memory");
            return 0;
        }
    }
    if (now >= s->connect_deadline_ms) {
        snprintf (why, sizeof why, "no answer within %lld ms", (long long) s->limits.connect_timeout_ms);
        store_reconnect_failed (s, why);
        return 0;
    }
    if (s->connect_phase == 1) {
        /* the handshake, a step whenever the socket is ready for what libpq waits on */
        while (PQstatus (s->connecting) != CONNECTION_BAD && s->connect_ps != PGRES_POLLING_OK
               && s->connect_ps != PGRES_POLLING_FAILED
               && store_fd_ready (PQsocket (s->connecting), s->connect_ps == PGRES_POLLING_READING ? POLLIN : POLLOUT))
            s->connect_ps = PQconnectPoll (s->connecting);
        if (PQstatus (s->connecting) == CONNECTION_BAD || s->connect_ps == PGRES_POLLING_FAILED) {
            store_error_text (s->connecting, NULL, why, sizeof why);
            store_reconnect_failed (s, why);
            return 0;
        }
        if (s->connect_ps != PGRES_POLLING_OK)
            return 0;                             /* the rest in a later turn */
        char setup [640];
        store_setup_sql (s, setup, sizeof setup);
        /* the schema's version in the same round trip: a server restored from an old backup, or
         * another database after a failover, must not take the tokens; the prepared statements
         * after it, so that on an old schema the version says why they failed */
        strncat (setup, "; SELECT coalesce (max (version), 0), current_setting ('transaction_read_only') = 'on' "
                 "FROM schema_migrations; ", sizeof setup - strlen (setup) - 1);
        char *prepare = store_prepare_sql ();
        char *all = mem_alloc (strlen (setup) + strlen (prepare) + 1);
        strcpy (all, setup);
        strcat (all, prepare);
        mem_free (prepare);
        PQsetnonblocking (s->connecting, 1);
        int sent = PQsendQuery (s->connecting, all);
        mem_free (all);
        if (!sent) {
            store_error_text (s->connecting, NULL, why, sizeof why);
            store_reconnect_failed (s, why);
            return 0;
        }
        s->connect_phase = 2;
        s->connect_version = -1;         /* the answers may come over several calls */
        s->connect_failed = 0;
        s->connect_read_only = 0;
    }
    if (PQflush (s->connecting) < 0 || !PQconsumeInput (s->connecting)) {
        store_error_text (s->connecting, NULL, why, sizeof why);
        store_reconnect_failed (s, why);
        return 0;
    }
    while (!PQisBusy (s->connecting)) {
        PGresult *res = PQgetResult (s->connecting);
        if (!res)
            break;
        ExecStatusType rs = PQresultStatus (res);
        if (rs == PGRES_TUPLES_OK && PQntuples (res) == 1 && PQnfields (res) == 2) {
            s->connect_version = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
            s->connect_read_only = strcmp (PQgetvalue (res, 0, 1), "t") == 0;
        }
        else
        if (rs != PGRES_COMMAND_OK && !s->connect_failed) {
            s->connect_failed = 1;
            store_error_text (s->connecting, res, s->connect_why, sizeof s->connect_why);
        }
        PQclear (res);
        if (PQisBusy (s->connecting))
            return 0;                             /* more results to come */
    }
    if (PQisBusy (s->connecting))
        return 0;
    if (s->connect_version >= 0 && s->connect_version < FERRULE_SCHEMA_VERSION) {
        snprintf (why, sizeof why, "the database reached has schema version %lld, this build needs %d: not using it "
                  "(run \"ferrule-migrate up\")", s->connect_version, FERRULE_SCHEMA_VERSION);
        store_reconnect_failed (s, why);
        return 0;
    }
    if (s->connect_failed || s->connect_version < 0) {
        store_reconnect_failed (s, s->connect_failed ? s->connect_why : "no schema version in the answer");
        return 0;
    }
    s->conn = s->connecting;
    s->connecting = NULL;
    s->connect_phase = 0;
    store_take_notifies (s);
    if (s->connect_read_only)
        store_say_away (s, "a standby, or default_transaction_read_only is on; target_session_attrs=read-write in "
                        "the URL passes over such servers", 1);
    else
        store_say_connected (s);
    return 1;
}

int
store_connecting (const store_t *s)
{
    return s->connecting != NULL;
}

void
store_retry_now (store_t *s)
{
    if (!store_connected (s) && !s->connecting)
        s->retry_after_ms = 0;
}

int
store_connected (const store_t *s)
{
    return s->conn && PQstatus (s->conn) == CONNECTION_OK;
}

int
store_socket (const store_t *s)
{
    if (s->connecting)
        return PQsocket (s->connecting);
    return store_connected (s) ? PQsocket (s->conn) : -1;
}

int
store_poll_events (const store_t *s)
{
    if (s->connecting) {
        if (s->connect_phase == 1)
            return s->connect_ps == PGRES_POLLING_WRITING ? STORE_POLL_OUT : STORE_POLL_IN;
        return STORE_POLL_IN | (PQflush (s->connecting) == 1 ? STORE_POLL_OUT : 0);
    }
    return STORE_POLL_IN | (s->batch.active && s->conn && PQflush (s->conn) == 1 ? STORE_POLL_OUT : 0);
}

void
store_read_input (store_t *s)
{
    if (!s->conn)
        return;
    if (!PQconsumeInput (s->conn) || PQstatus (s->conn) != CONNECTION_OK) {
        char why [256];
        store_error_text (s->conn, NULL, why, sizeof why);
        log_warning (NULL, NULL, "lost the database connection%s: %s",
                     s->batches_only ? " (the batch connection)" : "", why);
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
    if (s->events) {
        s->events = 0;
        cb (arg, NULL, STORE_NOTIFY_EVENTS);
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
                  (long long) (s->limits.statement_timeout_ms + STORE_ANSWER_MARGIN_MS));
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
        /* the failed transaction is rolled back by the next batch, in its pipeline, or by one of
         * its own when none comes (store_batch_pump): waiting for a ROLLBACK here would hold the
         * loop for as long as a server that stalled after its error stays stalled */
        if (PQtransactionStatus (s->conn) == PQTRANS_INERROR)
            s->rollback_due = 1;
    }
}

/* A statement needs the connection up: the loop never waits for one to be made (store_reconnect
 * makes it in the background). */
static fr_status_t
store_ready (store_t *s, char *err, size_t errlen)
{
    if (store_connected (s))
        return FR_OK;
    snprintf (err, errlen, "the database is unreachable; the connection is retried every second");
    return FR_DATABASE_UNAVAILABLE;
}

/* Sends one statement: by name when the session has it prepared. */
static int
store_send (store_t *s, const char *sql, int n, const char *const *values, const int *lengths, const int *formats)
{
    const char *name = store_prepared_name (sql);
    if (name)
        return PQsendQueryPrepared (s->conn, name, n, values, lengths, formats, 0);
    return PQsendQueryParams (s->conn, sql, n, NULL, values, lengths, formats, 0);
}

/* Sends a command without parameters (BEGIN, COMMIT, ROLLBACK) into the pipeline. */
static int
store_send_command (store_t *s, const char *command)
{
    return PQsendQueryParams (s->conn, command, 0, NULL, NULL, NULL, NULL, 0);
}

static void store_batch_advance (store_t *s, int block);

/* Reads what has arrived of the batch in flight; with block, waits for the rest (until its
 * deadline). Marks it finished when the last result (or a failure) is in. Never delivers it:
 * store_batch_pump does, from the loop, so no callback runs inside another store call. */
static void
store_batch_advance (store_t *s, int block)
{
    struct batch *b = &s->batch;
    if (!b->active)
        return;
    if (!s->conn) {
        b->broken = 1;
        goto finish;
    }
    if (clock_mono_ms () >= b->deadline_ms) {
        b->broken = b->timed_out = 1;
        goto finish;
    }
    for (;;) {
        int f = PQflush (s->conn);
        if (f < 0) {
            b->broken = 1;
            goto finish;
        }
        if (f == 1 || PQisBusy (s->conn)) {
            if (!block) {
                if (!PQconsumeInput (s->conn)) {
                    b->broken = 1;
                    goto finish;
                }
                if (PQisBusy (s->conn) || f == 1)
                    return;                      /* the rest later: the loop polls the socket */
                continue;
            }
            pgwait_t w = pgwait_socket (s->conn, f == 1 ? POLLOUT | POLLIN : POLLIN, b->deadline_ms, -1);
            if (w != PGWAIT_READY || !PQconsumeInput (s->conn)) {
                b->broken = 1;
                b->timed_out = w == PGWAIT_TIMED_OUT;
                goto finish;
            }
            continue;
        }
        PGresult *res = PQgetResult (s->conn);
        if (b->q == b->lead + b->n + 2 + b->after) {
            /* the ROLLBACK, BEGIN, the statements, COMMIT and the transaction after are read: the sync */
            int synced = res && PQresultStatus (res) == PGRES_PIPELINE_SYNC;
            PQclear (res);
            if (!synced)
                b->broken = 1;
            else
                PQexitPipelineMode (s->conn);
            goto finish;
        }
        if (!res) {
            b->q++;                              /* one query's results are all read */
            if (b->after && b->q == b->lead + b->n + 2 && !b->failed)
                b->committed = 1;                /* the batch's own transaction is in */
            continue;
        }
        ExecStatusType rs = PQresultStatus (res);
        size_t q = b->q - b->lead;           /* wraps for the ROLLBACK: neither 0 nor a statement */
        if (b->after && q >= b->n + 2 && q < b->n + 2 + b->after) {
            /* the transaction after the COMMIT: what the batch committed stands whatever becomes of
             * it (skipped, PIPELINE_ABORTED, when the batch failed) */
            if (rs == PGRES_FATAL_ERROR && !b->after_err [0])
                store_error_text (s->conn, res, b->after_err, sizeof b->after_err);
            PQclear (res);
            continue;
        }
        int ok = (b->q < b->lead || q == 0 || q == b->n + 1) ? rs == PGRES_COMMAND_OK : rs == PGRES_TUPLES_OK;
        if (ok && b->q >= b->lead && q > 0 && q <= b->n && !b->results [q - 1])
            b->results [q - 1] = res;
        else
        if (!ok && !b->failed)
            b->failed = res;                     /* the first failure (the rest are PIPELINE_ABORTED) */
        else
            PQclear (res);
    }
finish:
    b->active = 0;
    b->finished = 1;
    b->st = FR_OK;
    store_take_notifies (s);
    if (b->committed && b->broken && !b->after_err [0])
        snprintf (b->after_err, sizeof b->after_err, "%s", b->timed_out ? "the server did not answer in time"
                                                                        : "the connection was lost");
    /* settle the connection now, before any other statement runs on it */
    if (b->broken) {
        PQclear (b->failed);
        b->failed = NULL;
        /* a pipeline left half read cannot be reused: start afresh */
        store_fail (s, NULL, b->timed_out, &b->st, b->err, sizeof b->err);
        if (store_connected (s))
            store_fail_connection (s);
    }
    else
    if (b->failed) {
        store_fail (s, b->failed, 0, &b->st, b->err, sizeof b->err);     /* rolls the transaction back */
        b->failed = NULL;
    }
    if (b->committed)
        b->st = FR_OK;                   /* what the batch committed stands, whatever came after */
    if (b->st != FR_OK)
        for (size_t i = 0; i < b->n; i++) {
            PQclear (b->results [i]);
            b->results [i] = NULL;
        }
    else
    if (b->after_err [0]) {
        log_warning (NULL, NULL, "a batch committed, but the statement after it failed: %s; %s", b->after_err,
                     b->after_failure);
        if (PQtransactionStatus (s->conn) == PQTRANS_INERROR)
            s->rollback_due = 1;             /* it failed before its COMMIT: the next batch ends it */
    }
}

fr_status_t
store_batch_start (store_t *s, const store_stmt_t *stmts, size_t n, store_batch_fn *done, const void *ctx,
                   size_t size, char *err, size_t errlen)
{
    return store_batch_start_then (s, stmts, n, NULL, NULL, done, ctx, size, err, errlen);
}

fr_status_t
store_batch_start_then (store_t *s, const store_stmt_t *stmts, size_t n, const store_stmt_t *after,
                        const char *after_failure, store_batch_fn *done, const void *ctx, size_t size, char *err,
                        size_t errlen)
{
    fr_status_t st;
    struct batch *b = &s->batch;
    assert (!b->active && !b->finished && (n > 0 || s->rollback_due));
    if ((st = store_ready (s, err, errlen)) != FR_OK)
        return st;
    s->last_state [0] = '\0';
    if (!PQenterPipelineMode (s->conn)) {
        store_fail (s, NULL, 0, &st, err, errlen);
        return st;
    }
    size_t lead = s->rollback_due ? 1 : 0;
    int sent = (!lead || store_send_command (s, "ROLLBACK")) && store_send_command (s, "BEGIN");
    for (size_t i = 0; sent && i < n; i++)
        sent = store_send (s, stmts [i].sql, stmts [i].n, stmts [i].values, stmts [i].lengths, stmts [i].formats);
    sent = sent && store_send_command (s, "COMMIT");
    /* a transaction block, not the implicit one that a sync would commit: an error of its COMMIT is
     * then the COMMIT's result, in its place, and ends the block. The flush request before it has
     * the server send the batch's own results as soon as its COMMIT is done, which the loop then
     * delivers (store_batch_pump) while the transaction after runs */
    if (sent && after)
        sent = PQsendFlushRequest (s->conn) && store_send_command (s, "BEGIN")
            && store_send (s, after->sql, after->n, after->values, after->lengths, after->formats)
            && store_send_command (s, "COMMIT");
    sent = sent && PQpipelineSync (s->conn);
    if (!sent) {
        /* a pipeline half sent cannot be reused: start afresh */
        store_fail (s, NULL, 0, &st, err, errlen);
        if (store_connected (s))
            store_fail_connection (s);
        return st;
    }
    memset (b, 0, sizeof *b);
    s->rollback_due = 0;
    b->active = 1;
    b->n = n;
    b->lead = lead;
    b->after = after ? 3 : 0;
    b->after_failure = after_failure ? after_failure : "";
    b->results = mem_alloc ((n ? n : 1) * sizeof *b->results);
    b->deadline_ms = clock_mono_ms () + s->limits.statement_timeout_ms + STORE_ANSWER_MARGIN_MS;
    b->done = done;
    b->arg = mem_alloc (size);          /* the caller's context may be on its stack */
    memcpy (b->arg, ctx, size);
    /* sends what the socket takes now; the rest when the loop's poll finds it writable (the socket
     * is full only when the server or the network is behind, and the loop must not wait for
     * either). A statement the loop waits for on the worker's other connection can then wait on
     * the row locks of a batch not yet sent whole, for at most lock_timeout, and fail alone. */
    store_batch_advance (s, 0);
    return FR_OK;
}

/* store_batch_start_done's context and end. */
typedef struct {
    store_done_fn *fn;
    void *arg;
} done_ctx_t;

static void
status_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    const done_ctx_t *c = arg;
    (void) results;
    (void) n;
    c->fn (c->arg, st, st == FR_OK ? NULL : err);
}

fr_status_t
store_batch_start_done (store_t *s, const store_stmt_t *stmts, size_t n, store_done_fn *fn, void *arg, char *err,
                        size_t errlen)
{
    done_ctx_t c = { fn, arg };
    return store_batch_start (s, stmts, n, status_done, &c, sizeof c, err, errlen);
}

int
store_batch_busy (const store_t *s)
{
    return s->batch.active || s->batch.finished;
}

int64_t
store_batch_deadline (const store_t *s)
{
    return s->batch.active ? s->batch.deadline_ms : -1;
}

void
store_batch_finish (store_t *s)
{
    store_batch_advance (s, 1);
    store_batch_pump (s);
}

/* The end of a batch that only rolled a failed transaction back. */
static void
store_rolled_back (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    (void) arg;
    (void) results;
    (void) n;
    if (st != FR_OK)
        log_debug (NULL, NULL, "the rollback of a failed transaction did not end: %s", err);
}

/* Delivers a batch whose COMMIT is in while the transaction after it is still being read: the
 * callers' answers do not wait for the other workers' notifications (nor, when another session
 * holds their lock, for lock_timeout). The batch stays busy until its sync is read. */
static void
store_batch_deliver_committed (store_t *s)
{
    struct batch *b = &s->batch;
    PGresult **results = b->results;
    void *arg = b->arg;
    b->results = NULL;
    b->arg = NULL;
    b->delivered = 1;
    b->done (arg, FR_OK, results, b->n, "");
    mem_free (arg);
    for (size_t i = 0; i < b->n; i++)
        PQclear (results [i]);
    mem_free (results);
}

void
store_batch_pump (store_t *s)
{
    struct batch *b = &s->batch;
    store_batch_advance (s, 0);
    if (b->committed && !b->delivered)
        store_batch_deliver_committed (s);     /* may start nothing here: the batch is still busy */
    if (!b->finished)
        return;
    if (b->delivered) {
        memset (b, 0, sizeof *b);              /* done has run: only the connection's state was left */
        goto rollback;
    }
    PGresult **results = b->results;
    size_t n = b->n;
    fr_status_t st = b->st;
    char err [256];
    snprintf (err, sizeof err, "%s", b->err);
    store_batch_fn *done = b->done;
    void *arg = b->arg;
    memset (b, 0, sizeof *b);           /* free for the next batch before the callback runs */
    done (arg, st, results, n, err);
    mem_free (arg);
    for (size_t i = 0; i < n; i++)
        PQclear (results [i]);
    mem_free (results);
rollback:
    /* a failed transaction the callback's own batch did not roll back: a batch of its own, so that
     * the session does not sit "idle in transaction (aborted)" until the next statement */
    if (s->rollback_due && !b->active && !b->finished && store_connected (s)) {
        char none = 0, e [256];
        if (store_batch_start (s, NULL, 0, store_rolled_back, &none, sizeof none, e, sizeof e) != FR_OK)
            log_warning (NULL, NULL, "could not roll back a failed transaction: %s", e);
    }
}

const char *
store_last_state (const store_t *s)
{
    return s->last_state;
}

const char *
store_worker_id (const store_t *s)
{
    return s->worker_id;
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

void
store_fill_row (const PGresult *res, int r, store_row_t *row)
{
    memset (row, 0, sizeof *row);
    row->id = store_text_at (res, r, 0);
    row->provider = store_text_at (res, r, 1);
    row->status = store_text_at (res, r, 2);
    row->key_id = (int32_t) store_int_at (res, r, 3);
    row->access_ct = store_bytea_at (res, r, 4, &row->access_ct_len);
    row->access_expires_at = store_int_at (res, r, 5);
    row->refresh_ct = store_bytea_at (res, r, 6, &row->refresh_ct_len);
    row->refresh_fingerprint = store_text_at (res, r, 7);
    row->generation = store_int_at (res, r, 8);
    row->scopes = store_text_at (res, r, 9);
    row->last_error_code = store_text_at (res, r, 10);
    row->last_error_message = store_text_at (res, r, 11);
    row->last_error_at = store_int_at (res, r, 12);
    row->last_refresh_at = store_int_at (res, r, 13);
    row->created_at = store_int_at (res, r, 14);
    row->updated_at = store_int_at (res, r, 15);
    row->lease_owner = store_text_at (res, r, 16);
    snprintf (row->lease_token, sizeof row->lease_token, "%s", PQgetvalue (res, r, 17));
    row->lease_ms_left = store_int_at (res, r, 18);
    row->refresh_token_missing = strcmp (PQgetvalue (res, r, 19), "t") == 0;
    row->access_lifetime_s = store_int_at (res, r, 20);
    row->interrupted = strcmp (PQgetvalue (res, r, 21), "t") == 0;
    row->api_base_url = store_text_at (res, r, 22);
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
    mem_free (row->api_base_url);
    memset (row, 0, sizeof *row);
}

void
store_row_copy (store_row_t *dst, const store_row_t *src)
{
    *dst = *src;
    dst->id = mem_strdup (src->id);
    dst->provider = mem_strdup (src->provider);
    dst->status = mem_strdup (src->status);
    dst->access_ct = mem_memdup (src->access_ct, src->access_ct_len);
    dst->refresh_ct = mem_memdup (src->refresh_ct, src->refresh_ct_len);
    dst->refresh_fingerprint = mem_strdup (src->refresh_fingerprint);
    dst->scopes = mem_strdup (src->scopes);
    dst->last_error_code = mem_strdup (src->last_error_code);
    dst->last_error_message = mem_strdup (src->last_error_message);
    dst->lease_owner = mem_strdup (src->lease_owner);
    dst->api_base_url = mem_strdup (src->api_base_url);
}

fr_status_t
store_not_found (const char *id, char *err, size_t errlen)
{
    snprintf (err, errlen, "integration \"%s\" does not exist", id);
    return FR_NOT_FOUND;
}

/* The refresh protocol's statements (and the setting their batches run with) run thousands of
 * times a second: each session prepares them once (in its setup), because parsing, analysing and
 * planning them again for every refresh was half of the server's CPU under (b)'s load
 * (docs/performance.md). The parameters' types are
 * the ones the server infers, as for an unnamed statement. */
const char store_claim_sql [] = STORE_CLAIM_SQL;
const char store_commit_sql [] = STORE_COMMIT_SQL;
const char store_generic_plans_sql [] = STORE_GENERIC_PLANS_SQL;
const char store_notify_sql [] = STORE_NOTIFY_SQL;

static const struct {
    const char *name, *sql;
} s_prepared [] = {
    { "ferrule_claim", store_claim_sql },
    { "ferrule_commit", store_commit_sql },
    { "ferrule_generic_plans", store_generic_plans_sql },
    { "ferrule_notify", store_notify_sql },
};

static const char *
store_prepared_name (const char *sql)
{
    for (size_t i = 0; i < sizeof s_prepared / sizeof s_prepared [0]; i++)
        if (sql == s_prepared [i].sql)
            return s_prepared [i].name;
    return NULL;
}

/* "PREPARE name AS sql; ..." for every statement above (caller frees). */
static char *
store_prepare_sql (void)
{
    size_t len = 1;
    for (size_t i = 0; i < sizeof s_prepared / sizeof s_prepared [0]; i++)
        len += strlen (s_prepared [i].name) + strlen (s_prepared [i].sql) + 16;
    char *out = mem_alloc (len), *at = out;
    for (size_t i = 0; i < sizeof s_prepared / sizeof s_prepared [0]; i++)
        at += sprintf (at, "PREPARE %s AS %s; ", s_prepared [i].name, s_prepared [i].sql);
    return out;
}

/* Room for n ids of up to 128 characters, each quoted, and the commas and braces. */
#define STORE_ID_ARRAY_MAX(n) ((n) * 134 + 8)

pgarray_t *
store_id_array (const char *const *ids, size_t n)
{
    pgarray_t *a = pgarray_new (STORE_ID_ARRAY_MAX (n));
    for (size_t i = 0; i < n; i++)
        pgarray_add_text (a, ids [i]);
    return a;
}

int64_t
store_route_hash (const char *id)
{
    return (int64_t) ring_hash (id, strlen (id));
}

fr_status_t
store_batch_start_notify (store_t *s, const store_stmt_t *stmts, size_t n, const char *const *ids, size_t nids,
                          store_batch_fn *done, const void *ctx, size_t size, char *err, size_t errlen)
{
    pgarray_t *a = store_id_array (ids, nids);
    fr_status_t st = FR_TOO_LARGE;
    if (!pgarray_text (a))
        snprintf (err, errlen, "too many integrations to notify at once");
    else {
        const char *values [] = { pgarray_text (a), s->worker_id };
        store_stmt_t notify = { store_notify_sql, 2, values, NULL, NULL };
        st = store_batch_start_then (s, stmts, n, &notify, STORE_NOTIFY_FAILURE, done, ctx, size, err, errlen);
    }
    pgarray_destroy (&a);                /* sent: libpq has copied it */
    return st;
}

fr_status_t
store_ids_batch_start (store_t *s, const char *sql, const char *const *ids, size_t n, store_batch_fn *done,
                       const void *ctx, size_t size, const char *what, char *err, size_t errlen)
{
    pgarray_t *a = store_id_array (ids, n);
    fr_status_t st = FR_TOO_LARGE;
    if (!pgarray_text (a))
        snprintf (err, errlen, "too many integrations to %s at once", what);
    else {
        const char *values [] = { pgarray_text (a) };
        store_stmt_t stmt = { sql, 1, values, NULL, NULL };
        st = store_batch_start (s, &stmt, 1, done, ctx, size, err, errlen);
    }
    pgarray_destroy (&a);                /* sent: libpq has copied it */
    return st;
}
