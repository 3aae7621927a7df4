/* watch.c - a migration's statement run while ferrule-migrate watches what it waits for (see
 * watch.h) */
#include "watch.h"
#include "clock.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "stop.h"
#include "text.h"
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WATCH_FIRST_LOOK_MS 1000        /* a statement quicker than this is never looked at */
#define WATCH_LOOK_MS 1000              /* then a look a second */
#define WATCH_FIRST_REPORT_MS 5000      /* said once it has waited this long */
#define WATCH_REPORT_MS 30000           /* and again after this, or at once when whom it waits for changes */
#define WATCH_LOOK_TIMEOUT "2s"         /* a look is two catalog views: never worth waiting for */
#define WATCH_STOP_CANCEL_MS 1000       /* after a stop, the statement is cancelled again if it still runs */

struct watch {
    char *url;                          /* a secret: it may hold the password */
    int connect_timeout_ms;
    double limit_s;
    PGconn *monitor;                    /* opened at the first look, kept for the run */
    int monitor_failed;                 /* it could not be opened: no more looks */
    int look_failed_said;               /* a failed look is said once a run */
    int first_look_ms;                  /* a statement is first looked at after this */
    char blocker [400];                 /* whom the last statement waited for, as a look saw it, or "" */
    int blocker_autovacuum;             /* that one is an autovacuum worker */
};

typedef struct {
    long blockers;                      /* sessions the statement waits for */
    int pid;                            /* the one of them with the oldest transaction */
    char who [400];                     /* how that one reads in a notice */
    int autovacuum;                     /* that one is an autovacuum worker */
    long behind;                        /* sessions waiting for the statement */
    char progress [200];                /* an index build's phase and blocks, or "" */
} watch_look_t;

/* The sessions the statement waits for and that wait for it, and an index build's progress. The
 * oldest transaction among the blockers is named: that is the one left open longest. */
static const char WATCH_LOOK_SQL [] =
    "WITH b AS (SELECT unnest (pg_blocking_pids ($1::int)) AS pid),"
    " f AS (SELECT a.* FROM pg_stat_activity a JOIN b USING (pid) ORDER BY a.xact_start NULLS LAST, a.pid LIMIT 1)"
    " SELECT (SELECT count(*) FROM b), f.pid, f.usename, f.application_name, host (f.client_addr), f.state,"
    "  extract (epoch FROM now () - coalesce (f.xact_start, f.backend_start))::bigint,"
    "  (SELECT count(*) FROM pg_stat_activity w WHERE w.pid <> $1::int AND $1::int = ANY (pg_blocking_pids (w.pid))),"
    "  p.phase, p.blocks_done, p.blocks_total, f.backend_type"
    " FROM (SELECT 1) one LEFT JOIN f ON true LEFT JOIN pg_stat_progress_create_index p ON p.pid = $1::int";

watch_t *
watch_new (const char *url, int connect_timeout_ms, double wait_limit_s)
{
    watch_t *self = mem_alloc (sizeof (watch_t));
    self->url = mem_strdup (url);
    self->connect_timeout_ms = connect_timeout_ms;
    self->limit_s = wait_limit_s;
    self->first_look_ms = WATCH_FIRST_LOOK_MS;
    return self;
}

void
watch_first_look (watch_t *self, int ms)
{
    self->first_look_ms = ms < 50 ? 50 : ms > WATCH_FIRST_LOOK_MS ? WATCH_FIRST_LOOK_MS : ms;
}

const char *
watch_blocker (const watch_t *self)
{
    return self->blocker;
}

int
watch_blocker_autovacuum (const watch_t *self)
{
    return self->blocker_autovacuum;
}

void
watch_destroy (watch_t **self_p)
{
    if (self_p && *self_p) {
        watch_t *self = *self_p;
        if (self->monitor)
            PQfinish (self->monitor);
        mem_free_secret (&self->url);
        mem_free (self);
        *self_p = NULL;
    }
}

void
watch_duration (char *out, size_t size, long long s)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf (out, size, "%lld s", s);
    else if (s < 3600)
        snprintf (out, size, "%lld min %lld s", s / 60, s % 60);
    else
        snprintf (out, size, "%lld h %lld min", s / 3600, s % 3600 / 60);
}

/* A column as printable text, cut: names and addresses are whatever the other session set. */
static const char *
watch_text (char *out, size_t size, const PGresult *res, int col)
{
    if (PQgetisnull (res, 0, col))
        return NULL;
    return text_printable (out, size, PQgetvalue (res, 0, col), (size_t) -1, 60);
}

/* The second session could not be opened or set up: why into why, and no more looks. */
static int
watch_monitor_failed (watch_t *self, const db_error_t *err, char *why, size_t whylen)
{
    self->monitor_failed = 1;
    snprintf (why, whylen, "could not open a second session to look from: %s", err->message);
    if (self->monitor) {
        PQfinish (self->monitor);
        self->monitor = NULL;
    }
    return 0;
}

/* One look at the statement of the session pid; 0 when it could not be had, with the reason in
 * why (whylen bytes). */
static int
watch_look (watch_t *self, int pid, watch_look_t *look, char *why, size_t whylen)
{
    db_error_t err;
    PGresult *res = NULL;
    int ok = 0;
    memset (look, 0, sizeof *look);
    if (self->monitor_failed) {
        snprintf (why, whylen, "there is no second session to look from");
        return 0;
    }
    if (!self->monitor) {
        self->monitor = db_connect (self->url, self->connect_timeout_ms, &err);
        if (!self->monitor)
            return watch_monitor_failed (self, &err, why, whylen);
        if (db_exec (self->monitor, "SET statement_timeout = '" WATCH_LOOK_TIMEOUT "'", &err) != FR_OK)
            return watch_monitor_failed (self, &err, why, whylen);
    }
    char pidtext [16];
    snprintf (pidtext, sizeof pidtext, "%d", pid);
    const char *params [] = { pidtext };
    res = PQexecParams (self->monitor, WATCH_LOOK_SQL, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        db_error_from_result (&err, res, self->monitor);
        if (err.lost) {
            /* the next look connects again */
            PQfinish (self->monitor);
            self->monitor = NULL;
        }
        snprintf (why, whylen, "%s", err.message);
        log_debug (NULL, NULL, "could not look at what the statement waits for: %s", err.message);
        goto out;
    }
    look->blockers = strtol (PQgetvalue (res, 0, 0), NULL, 10);
    look->behind = strtol (PQgetvalue (res, 0, 7), NULL, 10);
    if (look->blockers > 0 && !PQgetisnull (res, 0, 1)) {
        char user [80], app [80], host [80], state [80], age [40];
        look->pid = (int) strtol (PQgetvalue (res, 0, 1), NULL, 10);
        const char *u = watch_text (user, sizeof user, res, 2);
        const char *a = watch_text (app, sizeof app, res, 3);
        const char *h = watch_text (host, sizeof host, res, 4);
        const char *s = watch_text (state, sizeof state, res, 5);
        watch_duration (age, sizeof age, PQgetisnull (res, 0, 6) ? 0 : strtoll (PQgetvalue (res, 0, 6), NULL, 10));
        /* NULL when this role may not see that session (neither superuser nor pg_read_all_stats) */
        look->autovacuum = !PQgetisnull (res, 0, 11) && strcmp (PQgetvalue (res, 0, 11), "autovacuum worker") == 0;
        int n;
        if (look->autovacuum)
            n = snprintf (look->who, sizeof look->who, "pid %d (an autovacuum worker)", look->pid);
        else
            n = snprintf (look->who, sizeof look->who, "pid %d (user \"%s\"%s%s%s, %s)", look->pid, u ? u : "?",
                          a && *a ? ", application \"" : "", a && *a ? a : "", a && *a ? "\"" : "",
                          h ? h : "local socket");
        if (n > 0 && (size_t) n < sizeof look->who) {
            if (s && PQgetisnull (res, 0, 6) == 0)
                snprintf (look->who + n, sizeof look->who - (size_t) n, ", %s, its transaction open for %s", s, age);
            else
                snprintf (look->who + n, sizeof look->who - (size_t) n, ", its state hidden from this role");
        }
    }
    if (!PQgetisnull (res, 0, 8)) {
        char phase [80];
        watch_text (phase, sizeof phase, res, 8);
        long long done = strtoll (PQgetvalue (res, 0, 9), NULL, 10), total = strtoll (PQgetvalue (res, 0, 10), NULL, 10);
        if (total > 0)
            snprintf (look->progress, sizeof look->progress, "%s, %lld of %lld blocks", phase, done, total);
        else
            snprintf (look->progress, sizeof look->progress, "%s", phase);
    }
    ok = 1;
out:
    PQclear (res);
    return ok;
}

static void
watch_report (const watch_t *self, const watch_look_t *look, const char *what, long long waited_ms,
              long long running_ms)
{
    char waited [40], running [40], behind [80] = "", then [120];
    watch_duration (waited, sizeof waited, waited_ms / 1000);
    watch_duration (running, sizeof running, running_ms / 1000);
    if (look->behind > 0)
        snprintf (behind, sizeof behind, "; %ld session%s wait%s behind it", look->behind,
                  look->behind == 1 ? "" : "s", look->behind == 1 ? "s" : "");
    if (self->limit_s > 0)
        snprintf (then, sizeof then, "or up gives up at %g s of waiting", self->limit_s);
    else
        snprintf (then, sizeof then, "and it goes on by itself");
    if (look->blockers > 0)
        db_note ("%s has waited %s for %ld other session%s%s%s%s%s%s; end %s transaction (SELECT "
                 "pg_terminate_backend (%d) ends the session) %s", what, waited, look->blockers,
                 look->blockers == 1 ? "" : "s", look->pid ? ", the oldest " : "", look->pid ? look->who : "",
                 *look->progress ? "; " : "", look->progress, behind,
                 look->blockers == 1 ? "that session's" : "its", look->pid, then);
    else
        db_note ("%s is still running after %s%s%s%s", what, running, *look->progress ? ": " : "", look->progress,
                 behind);
}

/* Cancels the statement on conn (which, for the log: "that waited too long"); the error comes
 * back as its result. */
static void
watch_cancel (PGconn *conn, const char *which)
{
    char errbuf [256];
    PGcancel *cancel = PQgetCancel (conn);
    if (!cancel || !PQcancel (cancel, errbuf, sizeof errbuf))
        log_warning (NULL, NULL, "could not cancel the statement %s: %s", which, cancel ? errbuf : "no cancel key");
    if (cancel)
        PQfreeCancel (cancel);
}

/* Says once a run that a look failed, and what that does to the wait limit. */
static void
watch_look_failed (watch_t *self, const char *what, const char *why, const watch_look_t *last, int have_last)
{
    if (self->look_failed_said)
        return;
    self->look_failed_said = 1;
    if (have_last && last->blockers > 0)
        db_note ("could not look at what %s waits for: %s; until a look succeeds, it counts as still waiting for "
                 "the session%s the last look saw", what, why, last->blockers == 1 ? "" : "s");
    else
        db_note ("could not look at what %s waits for: %s%s", what, why,
                 self->limit_s > 0 ? "; the wait limit counts only the time a look has seen it wait" : "");
}

PGresult *
watch_exec (watch_t *self, PGconn *conn, const char *sql, const char *what, char *gave_up, size_t size)
{
    PGresult *last = NULL, *res;
    int64_t start = clock_mono_ms (), next_look = start + self->first_look_ms, last_look = start;
    int64_t waited = 0, next_report = 0, seen_at = 0;
    int cancelled = 0, stopping = 0, reported_pid = 0, have_seen = 0;
    long reported_blockers = 0;
    watch_look_t seen;                          /* the last look that succeeded */
    memset (&seen, 0, sizeof seen);
    if (gave_up && size)
        *gave_up = '\0';
    *self->blocker = '\0';
    self->blocker_autovacuum = 0;
    if (!PQsendQuery (conn, sql))
        return NULL;
    for (;;) {
        while (PQisBusy (conn)) {
            int64_t now = clock_mono_ms ();
            int timeout = (int) (next_look > now ? next_look - now : 0);
            struct pollfd pfd = { .fd = PQsocket (conn), .events = POLLIN };
            int rc = poll (&pfd, 1, timeout);
            if (rc < 0 && errno != EINTR)
                break;                          /* PQgetResult reports the session's state */
            if (rc > 0 && !PQconsumeInput (conn))
                break;
            now = clock_mono_ms ();
            if (stop_requested () && !stopping) {
                /* the signal handler has sent a cancel; it may have reached the server before the
                 * statement did, so it is sent again if the statement still runs a moment later,
                 * and nothing is looked at any more */
                stopping = 1;
                next_look = now + WATCH_STOP_CANCEL_MS;
                continue;
            }
            if (now < next_look || !PQisBusy (conn))
                continue;
            if (cancelled || stopping) {
                /* the cancel is a request the server may not have had (a lost packet): again */
                watch_cancel (conn, stopping ? "on the stop" : "that waited too long");
                next_look = now + WATCH_FIRST_REPORT_MS;
                continue;
            }
            watch_look_t look;
            char why [sizeof ((db_error_t *) 0)->message + 64];
            int looked = watch_look (self, PQbackendPID (conn), &look, why, sizeof why);
            if (looked) {
                seen = look;
                seen_at = now;
                have_seen = 1;
                if (look.blockers > 0 && look.pid) {
                    snprintf (self->blocker, sizeof self->blocker, "%s", look.who);
                    self->blocker_autovacuum = look.autovacuum;
                }
            }
            else {
                watch_look_failed (self, what, why, &seen, have_seen);
                if (have_seen && seen.blockers > 0) {
                    /* it waited at the last look: the time since counts, so that failing looks do
                     * not keep the wait limit from ever being reached */
                    char ago [40];
                    look = seen;
                    watch_duration (ago, sizeof ago, (now - seen_at) / 1000);
                    size_t n = strlen (look.who);
                    snprintf (look.who + n, sizeof look.who - n, ", as a look %s ago saw it", ago);
                    looked = 1;
                }
            }
            if (looked) {
                /* counted from the look before, so a statement that waited from its start has
                 * its first second counted too */
                waited = look.blockers > 0 ? waited + (now - last_look) : 0;
                if (look.blockers > 0 && (waited >= WATCH_FIRST_REPORT_MS || (self->limit_s > 0 && waited >= self->limit_s * 1000))
                    && (now >= next_report || look.pid != reported_pid || look.blockers != reported_blockers)) {
                    watch_report (self, &look, what, waited, now - start);
                    next_report = now + WATCH_REPORT_MS;
                    reported_pid = look.pid;
                    reported_blockers = look.blockers;
                }
                else
                if (look.blockers == 0 && now - start >= WATCH_REPORT_MS && now >= next_report) {
                    watch_report (self, &look, what, 0, now - start);
                    next_report = now + WATCH_REPORT_MS;
                }
                if (self->limit_s > 0 && waited >= self->limit_s * 1000) {
                    char w [40];
                    watch_duration (w, sizeof w, waited / 1000);
                    if (gave_up && size)
                        snprintf (gave_up, size, "gave up after it waited %s for %ld other session%s%s%s (the wait "
                                  "limit is %g s)", w, look.blockers, look.blockers == 1 ? "" : "s",
                                  look.pid ? ", the oldest " : "", look.pid ? look.who : "", self->limit_s);
                    watch_cancel (conn, "that waited too long");
                    cancelled = 1;
                }
                last_look = now;
            }
            /* else last_look stays: the next look that succeeds counts the time since the last one */
            next_look = now + (cancelled ? WATCH_FIRST_REPORT_MS : WATCH_LOOK_MS);
        }
        res = PQgetResult (conn);
        if (!res)
            break;
        PQclear (last);
        last = res;
        ExecStatusType rs = PQresultStatus (res);
        if (rs == PGRES_COPY_IN || rs == PGRES_COPY_OUT || rs == PGRES_COPY_BOTH || PQstatus (conn) == CONNECTION_BAD)
            break;                              /* as PQexec: the caller refuses COPY */
    }
    if (gave_up && size && *gave_up && PQresultStatus (last) != PGRES_FATAL_ERROR)
        *gave_up = '\0';                        /* it ended before the cancel reached it */
    return last;
}
