/* migrate.c - ferrule-migrate: applies the schema, reports on it, and waits for it */
#include "catalog.h"
#include "clock.h"
#include "crypto.h"
#include "db.h"
#include "dburl.h"
#include "grant.h"
#include "ledger.h"
#include "log.h"
#include "mem.h"
#include "plan.h"
#include "prune.h"
#include "rekey.h"
#include "routehash.h"
#include "schema.h"
#include "secrets.h"
#include "stop.h"
#include "text.h"
#include "watch.h"
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exit codes: scripts and init containers test these. */
enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,
    EXIT_USAGE = 2,
    EXIT_UNREACHABLE = 5,
    EXIT_DRIFT = 6,         /* also: up refused to run */
    EXIT_PENDING = 7,
};

#define WAIT_POLL_MS 500
#define WAIT_DEFAULT_TIMEOUT_S 60.0
#define WAIT_MAX_TIMEOUT_S (7 * 86400.0)

typedef struct {
    const char *command;
    char *database_url;         /* a secret: it may hold the password */
    char *target;               /* the URL without its password, for messages */
    const char *dir;            /* NULL: the migrations compiled in */
    int json;
    double timeout_s;
    int timeout_given;
    const char *role;           /* grant-runtime ROLE */
    int batch;                  /* rekey, fill-route-hashes: rows per batch; prune-events: events */
    int older_than;             /* prune-events: days; 0 when not given (it has no default) */
    int force;                  /* rekey: even if no value is sealed under the key given yet */
    int no_fill;                /* up: leave the routing hashes for fill-route-hashes */
    double wait_limit_s;        /* up: cancel a statement that waited this long for others; 0 never */
    int wait_limit_given;
    int lock_timeout_ms;        /* up: a step gives up on a lock after this and is tried again; 0 never */
    int lock_timeout_given;
} options_t;

static void
report (const char *level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* One line on stderr in the style of PostgreSQL's own tools: "ferrule-migrate: error: ..." */
static void
report (const char *level, const char *fmt, ...)
{
    va_list ap;
    fprintf (stderr, "ferrule-migrate: %s%s", level ? level : "", level ? ": " : "");
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fputc ('\n', stderr);
}

/* The server's words after ours: "<what>: <message>", then its detail, hint and context. */
static void
report_db_error (const char *what, const db_error_t *err)
{
    report ("error", "%s: %s", what, err->message);
    if (*err->detail)
        report ("detail", "%s", err->detail);
    if (*err->hint)
        report ("hint", "%s", err->hint);
    if (*err->context)
        report ("context", "%s", err->context);
}

/* Says what a stop signal (stop.h) interrupted, "stopped by SIGINT <what>", and gives the exit
 * status for it: 128 + the signal's number, as a shell reports a process a signal ended. */
static int
report_stopped (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static int
report_stopped (const char *fmt, ...)
{
    char what [1200];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (what, sizeof what, fmt, ap);
    va_end (ap);
    report ("error", "stopped by %s %s", stop_name (), what);
    return 128 + stop_requested ();
}

/* A stop once the schema was applied, before the runtime roles were granted again. */
static int
stopped_before_grants (void)
{
    int rc = report_stopped ("before the runtime roles were granted again: the schema is applied");
    report ("hint", "run ferrule-migrate up again: it has nothing to apply, and grants them");
    return rc;
}

/* Exit code for a failed database call: unreachable, refused, or anything else. */
static int
exit_code_for (fr_status_t st)
{
    if (st == FR_DATABASE_UNAVAILABLE)
        return EXIT_UNREACHABLE;
    return st == FR_OK ? EXIT_OK : EXIT_OTHER;
}

static long long
now_ms (void)
{
    return (long long) clock_mono_ms ();
}

static void
sleep_ms (long long ms)
{
    struct timespec ts = { .tv_sec = (time_t) (ms / 1000), .tv_nsec = (long) (ms % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* "host:pid", recorded as applied_by. */
static void
applier_id (char *out, size_t size)
{
    char host [256] = "";
    if (gethostname (host, sizeof host) < 0 || !*host)
        snprintf (host, sizeof host, "unknown-host");
    host [sizeof host - 1] = '\0';
    snprintf (out, size, "%s:%d", host, (int) getpid ());
}

/* 1-based line of the 1-based character position in sql (UTF-8), 0 when out of range. */
static int
line_of_position (const char *sql, size_t len, int position)
{
    int chars = 0, line = 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) sql [i];
        if ((c & 0xc0) == 0x80)
            continue;                       /* a UTF-8 continuation byte */
        if (++chars == position)
            return line;
        if (c == '\n')
            line++;
    }
    return 0;
}

static PGconn *
connect_or_report (const options_t *opts, int *exit_code)
{
    db_error_t err;
    PGconn *conn = db_connect (opts->database_url, db_connect_timeout_ms (opts->database_url), &err);
    if (!conn) {
        char what [512];
        snprintf (what, sizeof what, "could not connect to the database \"%s\"", opts->target);
        report_db_error (what, &err);
        if (!*err.hint)
            report ("hint", "check that PostgreSQL is running and that --database-url or FERRULE_DATABASE_URL is right");
        *exit_code = EXIT_UNREACHABLE;
    }
    return conn;
}

/* What a role that may not read schema_migrations needs: most often a runtime role (a worker's
 * init container's wait) that was never granted; up would change nothing for it. */
#define HINT_NOT_GRANTED "the role of --database-url or FERRULE_DATABASE_URL may not read the schema: as the " \
    "schema owner, grant it with \"ferrule-migrate grant-runtime ROLE\" (or \"ferrule-migrate up --runtime-role ROLE\")"

/* Reads the ledger and sets it against the catalog. EXIT_OK, or the exit code after reporting;
 * owner: the session is the schema owner's (up), which no grant-runtime helps. */
static int
read_plan (PGconn *conn, const catalog_t *catalog, int owner, ledger_t **ledger_p, plan_t **plan_p)
{
    db_error_t err;
    fr_status_t st = ledger_read (conn, -1, ledger_p, &err);
    if (st != FR_OK) {
        if (!stop_requested ())             /* up says what the stop left instead */
            report_db_error ("could not read the applied migrations", &err);
        if (!stop_requested () && !owner && !*err.hint && strcmp (err.sqlstate, "42501") == 0)
            report ("hint", "%s", HINT_NOT_GRANTED);
        return exit_code_for (st);
    }
    *plan_p = plan_new (catalog, *ledger_p);
    return EXIT_OK;
}

static const char *
short_checksum (const char *checksum, char out [13])
{
    snprintf (out, 13, "%.12s", checksum);
    return out;
}

/* One sentence on what is wrong with an item, for status, verify and wait; "" when nothing is. */
static void
describe_problem (const plan_item_t *item, char *out, size_t size)
{
    char recorded [13], file [13];
    *out = '\0';
    switch (item->state) {
    case PLAN_DRIFT:
        snprintf (out, size, "migration %s was applied with checksum %s but its file now has checksum %s",
                  item->migration->label, short_checksum (item->row->checksum, recorded),
                  short_checksum (item->migration->checksum, file));
        break;
    case PLAN_MISSING:
        snprintf (out, size, "version %03d (\"%s\") is applied but this build has no such migration",
                  item->version, item->row->name);
        break;
    case PLAN_PENDING:
        if (item->out_of_order)
            snprintf (out, size, "migration %s is not applied, yet a higher version is", item->migration->label);
        else
            snprintf (out, size, "migration %s is not applied", item->migration->label);
        break;
    case PLAN_APPLIED:
    case PLAN_NEWER:
        break;
    }
}

/* Reports every drifted or missing item with the way out. */
static void
report_drift (const plan_t *plan)
{
    char problem [1024];
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        if (item->state != PLAN_DRIFT && item->state != PLAN_MISSING)
            continue;
        describe_problem (item, problem, sizeof problem);
        report ("error", "%s", problem);
        if (item->state == PLAN_DRIFT)
            report ("hint", "restore the original %s, or undo the edit and put the change in a new migration",
                    item->migration->file);
        else
            report ("hint", "run the ferrule-migrate of the build that applied it, or restore %03d_%s.sql",
                    item->version, item->row->name);
    }
}

/* Names the session that holds the migration lock: most often another ferrule-migrate at work,
 * but a psql or a pooler's session in transaction mode (where the lock outlives the up that took
 * it) would otherwise be waited for, for ever, as one. */
static void
on_lock_wait (const ledger_holder_t *holder)
{
    if (!holder->pid)
        report (NULL, "another ferrule-migrate is applying migrations: waiting for it to finish");
    else if (holder->migrate)
        report (NULL, "another ferrule-migrate is applying migrations, %s: waiting for it to finish", holder->who);
    else {
        report (NULL, "the migration lock is held by %s: waiting for it to finish", holder->who);
        report ("hint", "if that session is no ferrule-migrate at work (a psql, or a pooler's session in transaction "
                "mode, which keeps the lock after the up that took it), end it: SELECT pg_terminate_backend (%d)",
                holder->pid);
    }
}

/* Takes the migration lock, waiting for another ferrule-migrate's turn: 0, or the exit status
 * once said what stopped it (done: what was not done, "applied", "granted"). */
static int
take_migration_lock (PGconn *conn, const char *done, db_error_t *err)
{
    fr_status_t st = ledger_lock (conn, on_lock_wait, err);
    if (st != FR_OK && stop_requested ())
        return report_stopped ("while waiting for the migration lock: nothing was %s", done);
    if (st != FR_OK) {
        report_db_error ("could not take the migration lock", err);
        return exit_code_for (st);
    }
    return 0;
}

/* The highest applied version after up: what the database now holds. */
static int
database_version (const plan_t *plan)
{
    int version = 0;
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        if (item->state != PLAN_PENDING && item->version > version)
            version = item->version;
    }
    return version;
}

/* Fills in the routing hash of rows made before migration 009 (routehash.h). up says nothing
 * when there was nothing to do, and a failure there is a warning: the schema is applied, and the
 * workers fill the hashes in as their sweeps meet the rows. EXIT_OK, or the exit code after
 * reporting. */
static int
fill_route_hashes (PGconn *conn, int batch, int from_up)
{
    db_error_t err;
    routehash_result_t result;
    int present = 0;
    fr_status_t st = routehash_present (conn, &present, &err);
    if (st == FR_OK && !present) {
        if (from_up)
            return EXIT_OK;                     /* a schema from before 009 (--dir): nothing to fill */
        report ("error", "table \"integrations\" has no column \"route_hash\": the database is not at migration "
                "009 yet");
        report ("hint", "run \"ferrule-migrate up\", which fills the routing hashes in after the migrations");
        return EXIT_PENDING;
    }
    if (st == FR_OK)
        st = routehash_fill (conn, batch, &result, &err);
    if (st != FR_OK && from_up && stop_requested ())
        return EXIT_OK;                         /* up says what the stop left */
    if (st != FR_OK) {
        if (from_up) {
            report ("warning", "could not fill in the routing hashes of integrations made before migration 009: %s",
                    err.message);
            report ("hint", "the schema is applied; run \"ferrule-migrate fill-route-hashes\" later (until then "
                    "every worker's sweep reads those rows, and fills their hashes in as it meets them)");
            return EXIT_OK;
        }
        report_db_error ("could not fill in the routing hashes", &err);
        report ("hint", "what was filled in stays so: run \"ferrule-migrate fill-route-hashes\" again to go on");
        return exit_code_for (st);
    }
    if (result.filled || !from_up)
        printf ("filled in the routing hash of %lld integration%s\n", (long long) result.filled,
                result.filled == 1 ? "" : "s");
    fflush (stdout);
    if (result.remaining) {
        report ("warning", "%lld integration%s still ha%s no routing hash: another session held %s each time it "
                "was tried", (long long) result.remaining, result.remaining == 1 ? "" : "s",
                result.remaining == 1 ? "s" : "ve", result.remaining == 1 ? "it" : "them");
        report ("hint", "run \"ferrule-migrate fill-route-hashes\" again; meanwhile every worker's sweep reads %s, "
                "and fills %s in as it meets %s", result.remaining == 1 ? "that row" : "those rows",
                result.remaining == 1 ? "its hash" : "their hashes", result.remaining == 1 ? "it" : "them");
        return from_up ? EXIT_OK : EXIT_OTHER;
    }
    return EXIT_OK;
}

static int
cmd_up (const options_t *opts, const catalog_t *catalog)
{
    ledger_t *ledger = NULL;
    plan_t *plan = NULL;
    watch_t *watch = NULL;
    db_error_t err;
    fr_status_t st;
    int rc = EXIT_OK, applied = 0, locked = 0;
    char applied_by [300];
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        goto out;
    /* from here on a stop cancels what the session runs, and up winds down (stop.h) */
    stop_catch ();
    stop_cancels (conn);
    /* and should up be killed outright, the server ends its statement within seconds */
    if (db_check_client (conn, &err) != FR_OK)
        log_info (NULL, NULL, "the server would not notice this ferrule-migrate killed while a statement waits "
                  "for a lock: %s", err.message);
    if ((st = db_no_time_limit (conn, &err)) != FR_OK) {
        if (stop_requested ())
            rc = report_stopped ("before applying any migration: nothing was applied");
        else {
            report_db_error ("could not lift the session's statement_timeout", &err);
            rc = exit_code_for (st);
        }
        goto out;
    }
    watch = watch_new (opts->database_url, db_connect_timeout_ms (opts->database_url), opts->wait_limit_s);
    /* a step that gives up on a lock sooner than a second is looked at before, to name whom it waited for */
    if (opts->lock_timeout_ms > 0)
        watch_first_look (watch, opts->lock_timeout_ms / 2);
    const ledger_locking_t locking = { .lock_timeout_ms = opts->lock_timeout_ms, .wait_limit_s = opts->wait_limit_s };

    if ((rc = take_migration_lock (conn, "applied", &err)) != 0)
        goto out;
    locked = 1;
    st = ledger_create (conn, &err);
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("before applying any migration: nothing was applied");
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not create table \"schema_migrations\"", &err);
        if (strcmp (err.sqlstate, "42501") == 0)
            report ("hint", "run ferrule-migrate as a role that may create tables in the database's first schema");
        rc = exit_code_for (st);
        goto out;
    }
    rc = read_plan (conn, catalog, 1, &ledger, &plan);
    if (rc != EXIT_OK && stop_requested ())
        rc = report_stopped ("before applying any migration: nothing was applied");
    if (rc != EXIT_OK)
        goto out;

    if (plan_verdict (plan) == PLAN_DRIFTED) {
        report_drift (plan);
        report (NULL, "nothing was applied");
        rc = EXIT_DRIFT;
        goto out;
    }
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        if (item->state == PLAN_PENDING && item->out_of_order) {
            report ("error", "migration %s is not applied, yet a higher version is: it would run out of order",
                    item->migration->label);
            report ("detail", "nothing was applied");
            report ("hint", "move its change into a new migration numbered above %03d", ledger_highest (ledger));
            rc = EXIT_DRIFT;
            goto out;
        }
    }

    /* a newer build applied migrations this one does not know: the runtime roles' rights on its
       tables follow its rules (an append-only table of its own would get UPDATE from these) */
    int newer = plan_count (plan, PLAN_NEWER) > 0;
    /* before any migration commits: a table one creates is never writable by the workers
       beyond SELECT and INSERT until the grants at the end (grant.h) */
    int narrowed = 0;
    st = newer ? FR_OK : grant_narrow_defaults (conn, &narrowed, &err);
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("before applying any migration: nothing was applied");
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not limit the runtime roles' default privileges", &err);
        report ("detail", "nothing was applied");
        rc = exit_code_for (st);
        goto out;
    }
    if (narrowed)
        log_info (NULL, NULL, "tables the migrations create: %d runtime role%s may SELECT and INSERT until the "
                  "grants after the last one", narrowed, narrowed == 1 ? "" : "s");

    applier_id (applied_by, sizeof applied_by);
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        if (item->state != PLAN_PENDING)
            continue;
        if (stop_requested ()) {
            rc = report_stopped ("before applying %s: %s", item->migration->label,
                                 applied ? "the migrations before it stay applied" : "nothing was applied");
            report ("hint", "run ferrule-migrate up again to go on");
            goto out;
        }
        long ms = 0;
        int committed = 0;
        db_notices_about (item->migration->label);
        st = ledger_apply (conn, watch, item->migration, applied_by, &locking, &ms, &committed, &err);
        db_notices_about (NULL);
        if (st != FR_OK && stop_requested ()) {
            rc = report_stopped ("while applying %s%s%s", item->migration->label, *err.detail ? ": " : "",
                                 err.detail);
            if (item->migration->no_transaction && committed)
                report (NULL, "%s is not recorded; the %d statement%s before the cancelled one stay%s applied, and "
                        "the next up runs all of it again", item->migration->label, committed,
                        committed == 1 ? "" : "s", committed == 1 ? "s" : "");
            else
                report (NULL, "%s is not recorded%s", item->migration->label,
                        applied ? "; the migrations before it stay applied" : "");
            report ("hint", "run ferrule-migrate up again to go on");
            goto out;
        }
        if (st != FR_OK) {
            char what [512];
            int line = err.position ? line_of_position (item->migration->sql, item->migration->len, err.position) : 0;
            if (line)
                snprintf (what, sizeof what, "migration %s failed at line %d", item->migration->file, line);
            else
                snprintf (what, sizeof what, "migration %s failed", item->migration->file);
            report_db_error (what, &err);
            if (st == FR_DATABASE_UNAVAILABLE)
                report ("hint", "the connection was lost: check the database, then run ferrule-migrate up again");
            else if (st == FR_CONFIGURATION)
                ;                                   /* not rolled back: the hint already says what to do */
            else if (err.waited_out && item->migration->no_transaction && committed)
                report (NULL, "%s is not recorded; the %d statement%s before the cancelled one stay%s applied, and "
                        "up runs all of it again", item->migration->label, committed, committed == 1 ? "" : "s",
                        committed == 1 ? "s" : "");
            else if (err.waited_out)
                report (NULL, "%s is not recorded%s", item->migration->label,
                        item->migration->no_transaction ? "" : ": it was rolled back");
            else if (item->migration->no_transaction && committed)
                report (NULL, "%s is not recorded, and runs without a transaction: the %d statement%s before the "
                        "failed one stay%s applied; fix it, then run ferrule-migrate up again, which runs all of it "
                        "again (each of its statements must be safe to repeat)", item->migration->label, committed,
                        committed == 1 ? "" : "s", committed == 1 ? "s" : "");
            else if (item->migration->no_transaction)
                report (NULL, "%s is not recorded and none of it is applied: fix it, then run ferrule-migrate up "
                        "again", item->migration->label);
            else
                report (NULL, "%s was rolled back%s: fix it, then run ferrule-migrate up again", item->migration->label,
                        applied ? ", the migrations before it stay applied" : "");
            rc = exit_code_for (st);
            goto out;
        }
        applied++;
        printf ("applied %s (%ld ms)\n", item->migration->label, ms);
        fflush (stdout);
        log_info (NULL, NULL, "applied migration %s in %ld ms, checksum %.12s",
                  item->migration->label, ms, item->migration->checksum);
    }

    int granted = 0;
    char missing [80] = "";
    /* the schema is applied; what is left is granting and filling in */
    if (stop_requested ()) {
        rc = stopped_before_grants ();
        goto out;
    }
    if (newer)
        report (NULL, "the schema is at version %d, newer than this build's %d: the runtime roles' rights%s are left "
                "as the build that applied it granted them", database_version (plan), catalog_highest (catalog),
                opts->role ? " (--runtime-role's too)" : "");
    else if (opts->role) {
        int created = 0;
        st = grant_runtime (conn, opts->role, &created, &err);
        if (st != FR_OK && stop_requested ()) {
            rc = stopped_before_grants ();
            goto out;
        }
        if (st != FR_OK) {
            char what [200];
            snprintf (what, sizeof what, "could not set up runtime role \"%.63s\"", opts->role);
            report_db_error (what, &err);
            rc = st == FR_CONFIGURATION ? EXIT_USAGE : exit_code_for (st);
            goto out;
        }
        if (created)
            printf ("created role \"%s\" (LOGIN, no password): set one with ALTER ROLE, or map a certificate\n",
                    opts->role);
    }
    st = newer ? FR_OK : grant_reapply (conn, &granted, missing, sizeof missing, &err);
    if (st != FR_OK && stop_requested ()) {
        rc = stopped_before_grants ();
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not grant the runtime roles again", &err);
        rc = exit_code_for (st);
        goto out;
    }
    if (granted)
        printf ("granted %d runtime role%s again\n", granted, granted == 1 ? "" : "s");
    if (*missing)
        report ("warning", "runtime role \"%s\" no longer exists: run \"ferrule-migrate grant-runtime\" for the "
                "role the workers use", missing);

    int version = applied ? catalog_highest (catalog) : database_version (plan);
    if (version < database_version (plan))
        version = database_version (plan);
    if (applied)
        printf ("schema is now at version %d\n", version);
    else if (version > catalog_highest (catalog))
        printf ("schema is up to date at version %d (newer than this build's %d)\n", version,
                catalog_highest (catalog));
    else
        printf ("schema is up to date at version %d\n", version);
    fflush (stdout);

    /* other runs need not wait for the fill, which is safe beside them (a failed unlock is tried
       again below, and needs no report) */
    if (ledger_unlock (conn, &err) == FR_OK)
        locked = 0;
    if (!opts->no_fill && !stop_requested ())
        rc = fill_route_hashes (conn, opts->batch, 1);
    if (!opts->no_fill && stop_requested ()) {
        rc = report_stopped ("while filling in the routing hashes: the schema is applied, and rows may be left "
                             "without one");
        report ("hint", "run \"ferrule-migrate fill-route-hashes\" later (until then every worker's sweep reads "
                "the rows without one, and fills their hashes in as it meets them)");
    }
out:
    /* a failed unlock needs no report: closing the session releases the lock anyway */
    if (locked && conn && PQstatus (conn) == CONNECTION_OK && ledger_unlock (conn, &err) != FR_OK)
        locked = 0;
    plan_destroy (&plan);
    ledger_destroy (&ledger);
    watch_destroy (&watch);
    stop_cancels (NULL);
    if (conn)
        PQfinish (conn);
    return rc;
}

static const char *
state_name (plan_state_t state)
{
    switch (state) {
    case PLAN_APPLIED: return "applied";
    case PLAN_PENDING: return "pending";
    case PLAN_DRIFT:   return "drift";
    case PLAN_NEWER:   return "newer";
    case PLAN_MISSING: return "missing";
    }
    return "unknown";
}

static int
verdict_exit_code (plan_verdict_t verdict)
{
    return verdict == PLAN_DRIFTED ? EXIT_DRIFT : verdict == PLAN_BEHIND ? EXIT_PENDING : EXIT_OK;
}

static void
status_print_json (const options_t *opts, const catalog_t *catalog, const ledger_t *ledger, const plan_t *plan)
{
    static const char *verdicts [] = { "up_to_date", "pending", "drift" };
    json_t *root = json_object ();
    json_t *items = json_array ();

    json_object_set_new (root, "database", json_string (opts->target));
    json_object_set_new (root, "migrations_from", json_string (catalog_origin (catalog)));
    json_object_set_new (root, "build_version", json_integer (catalog_highest (catalog)));
    json_object_set_new (root, "database_version", json_integer (ledger_highest (ledger)));
    json_object_set_new (root, "state", json_string (verdicts [plan_verdict (plan)]));
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        json_t *o = json_object ();
        json_object_set_new (o, "version", json_integer (item->version));
        json_object_set_new (o, "name", json_string (item->migration ? item->migration->name : item->row->name));
        json_object_set_new (o, "state", json_string (state_name (item->state)));
        if (item->migration)
            json_object_set_new (o, "file_checksum", json_string (item->migration->checksum));
        if (item->row) {
            json_object_set_new (o, "checksum", json_string (item->row->checksum));
            json_object_set_new (o, "applied_at", json_string (item->row->applied_at));
            json_object_set_new (o, "applied_by", json_string (item->row->applied_by));
            json_object_set_new (o, "execution_ms", item->row->execution_ms >= 0
                                 ? json_integer (item->row->execution_ms) : json_null ());
        }
        if (item->state == PLAN_PENDING)
            json_object_set_new (o, "out_of_order", json_boolean (item->out_of_order));
        json_array_append_new (items, o);
    }
    json_object_set_new (root, "migrations", items);
    char *text = json_dumps (root, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
    if (text)
        printf ("%s\n", text);
    free (text);
    json_decref (root);
}

static void
status_print_text (const options_t *opts, const catalog_t *catalog, const ledger_t *ledger, const plan_t *plan)
{
    char recorded [13], file [13];
    printf ("database %s: schema version %d; this build needs %d (migrations %s)\n", opts->target,
            ledger_highest (ledger), catalog_highest (catalog), catalog_origin (catalog));
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        char label [300];
        if (item->migration)
            snprintf (label, sizeof label, "%s", item->migration->label);
        else
            snprintf (label, sizeof label, "%03d_%s", item->version, item->row->name);
        switch (item->state) {
        case PLAN_APPLIED:
            printf ("  %-32s applied %s by %s\n", label, item->row->applied_at, item->row->applied_by);
            break;
        case PLAN_PENDING:
            printf ("  %-32s pending%s\n", label, item->out_of_order ? " (a higher version is already applied)" : "");
            break;
        case PLAN_DRIFT:
            printf ("  %-32s drift: applied %s with checksum %s, the file has %s\n", label, item->row->applied_at,
                    short_checksum (item->row->checksum, recorded), short_checksum (item->migration->checksum, file));
            break;
        case PLAN_NEWER:
            printf ("  %-32s applied %s by a newer build\n", label, item->row->applied_at);
            break;
        case PLAN_MISSING:
            printf ("  %-32s applied %s, but this build has no such migration\n", label, item->row->applied_at);
            break;
        }
    }
    size_t pending = plan_count (plan, PLAN_PENDING);
    switch (plan_verdict (plan)) {
    case PLAN_UP_TO_DATE:
        printf ("schema is up to date at version %d\n", ledger_highest (ledger));
        break;
    case PLAN_BEHIND:
        printf ("%zu migration%s pending: run \"ferrule-migrate up\"\n", pending, pending == 1 ? "" : "s");
        break;
    case PLAN_DRIFTED:
        printf ("applied migrations differ from this build's files: run \"ferrule-migrate verify\" for details\n");
        break;
    }
}

static int
cmd_status (const options_t *opts, const catalog_t *catalog)
{
    ledger_t *ledger = NULL;
    plan_t *plan = NULL;
    int rc = EXIT_OK;
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        goto out;
    rc = read_plan (conn, catalog, 0, &ledger, &plan);
    if (rc != EXIT_OK)
        goto out;
    if (opts->json)
        status_print_json (opts, catalog, ledger, plan);
    else
        status_print_text (opts, catalog, ledger, plan);
    rc = verdict_exit_code (plan_verdict (plan));
out:
    plan_destroy (&plan);
    ledger_destroy (&ledger);
    if (conn)
        PQfinish (conn);
    return rc;
}

static int
cmd_verify (const options_t *opts, const catalog_t *catalog)
{
    ledger_t *ledger = NULL;
    plan_t *plan = NULL;
    int rc = EXIT_OK;
    char problem [1024];
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        goto out;
    rc = read_plan (conn, catalog, 0, &ledger, &plan);
    if (rc != EXIT_OK)
        goto out;

    plan_verdict_t verdict = plan_verdict (plan);
    if (verdict == PLAN_DRIFTED)
        report_drift (plan);
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        if (item->state != PLAN_PENDING)
            continue;
        describe_problem (item, problem, sizeof problem);
        report ("error", "%s", problem);
    }
    if (verdict == PLAN_BEHIND)
        report ("hint", "run \"ferrule-migrate up\"");
    if (verdict == PLAN_UP_TO_DATE && ledger_highest (ledger) > catalog_highest (catalog))
        printf ("schema is at version %d, newer than this build's %d, and every migration of this build is applied "
                "as its file says\n", ledger_highest (ledger), catalog_highest (catalog));
    else if (verdict == PLAN_UP_TO_DATE)
        printf ("schema matches this build at version %d\n", ledger_highest (ledger));
    rc = verdict_exit_code (verdict);
out:
    plan_destroy (&plan);
    ledger_destroy (&ledger);
    if (conn)
        PQfinish (conn);
    return rc;
}

/* One look at the database for wait: 1 when ready, else 0 with the reason in why, and *denied 1
 * when the reason is that the role may not read the schema. */
static int
wait_check (const options_t *opts, const catalog_t *catalog, PGconn **conn_p, long long deadline,
            char *why, size_t whylen, int *version, int *denied, int *stuck)
{
    ledger_t *ledger = NULL;
    plan_t *plan = NULL;
    db_error_t err;
    int ready = 0;

    *denied = *stuck = 0;
    if (!*conn_p) {
        long long left = deadline - now_ms ();
        int timeout = db_connect_timeout_ms (opts->database_url);
        if (left < timeout)
            timeout = left > 100 ? (int) left : 100;
        *conn_p = db_connect (opts->database_url, timeout, &err);
        if (!*conn_p) {
            snprintf (why, whylen, "could not connect to the database \"%s\": %s", opts->target, err.message);
            goto out;
        }
    }
    /* bounded by the deadline on the server too: a read that waits for a lock on schema_migrations
       would otherwise outlast the timeout, and stay queued for that lock once wait has given up */
    fr_status_t st = ledger_read (*conn_p, deadline, &ledger, &err);
    if (st != FR_OK) {
        snprintf (why, whylen, "could not read the applied migrations: %s", err.message);
        *denied = strcmp (err.sqlstate, "42501") == 0;
        if (st == FR_DATABASE_UNAVAILABLE || PQstatus (*conn_p) != CONNECTION_OK) {
            PQfinish (*conn_p);
            *conn_p = NULL;
        }
        goto out;
    }
    plan = plan_new (catalog, ledger);
    *version = ledger_highest (ledger);
    *why = '\0';
    for (size_t i = 0; i < plan_size (plan); i++) {
        const plan_item_t *item = plan_at (plan, i);
        /* a migration missing from this build does not stop it from running: wait only for its own */
        if (item->state != PLAN_PENDING && item->state != PLAN_DRIFT)
            continue;
        describe_problem (item, why, whylen);
        if (!ledger_exists (ledger))
            snprintf (why, whylen, "the database has no schema yet (no table \"schema_migrations\")");
        /* what no up mends (it refuses both): waiting on would only put the failure off */
        *stuck = item->state == PLAN_DRIFT || item->out_of_order;
        break;
    }
    ready = *why == '\0';
out:
    plan_destroy (&plan);
    ledger_destroy (&ledger);
    return ready;
}

static int
cmd_wait (const options_t *opts, const catalog_t *catalog)
{
    PGconn *conn = NULL;
    long long start = now_ms ();
    long long deadline = start + (long long) (opts->timeout_s * 1000.0);
    /* room for a database error message (db_error_t.message) and the sentence around it */
    char why [sizeof ((db_error_t *) 0)->message + 256] = "", last [sizeof why] = "";
    int rc = EXIT_OK, version = 0, denied = 0, stuck = 0;

    for (;;) {
        if (wait_check (opts, catalog, &conn, deadline, why, sizeof why, &version, &denied, &stuck)) {
            printf ("schema is ready at version %d\n", version);
            goto out;
        }
        if (stuck) {
            report ("error", "the schema cannot become ready for this build: %s", why);
            report ("hint", "the applied schema differs from this build's files, which \"ferrule-migrate up\" "
                    "refuses too: run \"ferrule-migrate verify\"");
            rc = EXIT_DRIFT;
            goto out;
        }
        if (strcmp (why, last) != 0) {
            report (NULL, "waiting: %s", why);
            snprintf (last, sizeof last, "%s", why);
        }
        long long left = deadline - now_ms ();
        if (left <= 0)
            break;
        sleep_ms (left < WAIT_POLL_MS ? left : WAIT_POLL_MS);
    }
    report ("error", "the schema was not ready after %.1f seconds: %s", (double) (now_ms () - start) / 1000.0, why);
    if (denied)
        report ("hint", "%s", HINT_NOT_GRANTED);
    else if (strncmp (why, "could not connect", 17) == 0)
        report ("hint", "check that PostgreSQL is running and that --database-url or FERRULE_DATABASE_URL is right, "
                "then run \"ferrule-migrate up\"");
    else if (strstr (why, "checksum"))
        report ("hint", "the applied schema differs from this build's: run \"ferrule-migrate verify\"");
    else if (strstr (why, "may hold a lock"))
        report ("hint", "find that session in pg_locks (relation 'schema_migrations'::regclass) and end its "
                "transaction");
    else if (strstr (why, "did not answer in time"))
        report ("hint", "check that the database server is not stalled (its disk, its load) and that the network "
                "to it works");
    else
        report ("hint", "run \"ferrule-migrate up\" (schema version %d is needed)", catalog_highest (catalog));
    rc = EXIT_UNREACHABLE;
out:
    if (conn)
        PQfinish (conn);
    return rc;
}

static int
cmd_grant_runtime (const options_t *opts, const catalog_t *catalog)
{
    db_error_t err;
    ledger_t *ledger = NULL;
    int rc = EXIT_OK, created = 0, locked = 0;
    fr_status_t st;
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        return rc;
    /* up's lock: up grants again at its end, and two sessions granting on the same tables at
       once can fail one with "tuple concurrently updated" */
    stop_catch ();
    stop_cancels (conn);
    if ((rc = take_migration_lock (conn, "granted", &err)) != 0)
        goto out;
    locked = 1;
    /* a newer build's tables follow its rules: an append-only one would get UPDATE from these */
    st = ledger_read (conn, -1, &ledger, &err);
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("while reading the applied migrations: nothing was granted");
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not read the applied migrations", &err);
        rc = exit_code_for (st);
        goto out;
    }
    if (ledger_highest (ledger) > catalog_highest (catalog)) {
        report ("error", "the schema is at version %d, newer than this build's %d: the runtime roles' rights on it "
                "are the newer build's to grant", ledger_highest (ledger), catalog_highest (catalog));
        report ("hint", "run the grant-runtime of the build that applied version %d", ledger_highest (ledger));
        rc = EXIT_DRIFT;
        goto out;
    }
    st = grant_runtime (conn, opts->role, &created, &err);
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("while granting: nothing was granted");
        goto out;
    }
    if (st != FR_OK) {
        char what [200];
        snprintf (what, sizeof what, "could not set up runtime role \"%.63s\"", opts->role);
        report_db_error (what, &err);
        if (strcmp (err.sqlstate, "42501") == 0)
            report ("hint", "run grant-runtime as the schema owner (the role that ran \"up\"), with CREATEROLE "
                    "to create the role, or create it first");
        rc = st == FR_CONFIGURATION ? EXIT_USAGE : exit_code_for (st);
    }
    else {
        if (created)
            printf ("created role \"%s\" (LOGIN, no password): set one with ALTER ROLE, or map a certificate\n",
                    opts->role);
        printf ("granted runtime role \"%s\": SELECT, INSERT, UPDATE on the state tables, SELECT and INSERT "
                "on token_chain; no DDL, DELETE or TRUNCATE\n", opts->role);
    }
out:
    stop_cancels (NULL);
    /* a failed unlock needs no report: closing the session releases the lock anyway */
    if (locked && PQstatus (conn) == CONNECTION_OK && ledger_unlock (conn, &err) != FR_OK)
        locked = 0;
    ledger_destroy (&ledger);
    PQfinish (conn);
    return rc;
}

/* A progress bar on a terminal, nothing otherwise. */
static void
rekey_progress (int64_t done, int64_t total, void *arg)
{
    (void) arg;
    if (!isatty (STDERR_FILENO))
        return;
    int width = 40;
    int filled = total > 0 ? (int) (done * width / total) : width;
    if (filled > width)
        filled = width;
    fprintf (stderr, "\rrekey [%.*s%*s] %lld/%lld", filled, "########################################",
             width - filled, "", (long long) done, (long long) total);
    if (done >= total)
        fputc ('\n', stderr);
    fflush (stderr);
}

static int
cmd_rekey (const options_t *opts)
{
    db_error_t err;
    char kerr [512];
    char *key = NULL, *old = NULL;
    crypto_keyring_t *kr = NULL;
    PGconn *conn = NULL;
    rekey_result_t result;
    int rc = EXIT_OK;

    if (secrets_from_env ("FERRULE_ENCRYPTION_KEY", &key, kerr, sizeof kerr) != 0
    ||  secrets_from_env ("FERRULE_ENCRYPTION_OLD_KEYS", &old, kerr, sizeof kerr) != 0) {
        report ("error", "%s", kerr);
        rc = EXIT_USAGE;
        goto out;
    }
    kr = crypto_keyring_new (key, old, kerr, sizeof kerr);
    if (!kr) {
        report ("error", "%s", kerr);
        report ("hint", "give the workers' keys: FERRULE_ENCRYPTION_KEY (the current one) and "
                "FERRULE_ENCRYPTION_OLD_KEYS (every retired one still in use), or their _FILE forms");
        rc = EXIT_USAGE;
        goto out;
    }
    conn = connect_or_report (opts, &rc);
    if (!conn)
        goto out;
    /* Re-sealing under a key the workers do not seal with would leave every value unreadable
       to them. The workers record their key (worker_keys); a value sealed under the key is the
       only evidence before any did (workers of an older release) */
    int32_t given = crypto_keyring_current_id (kr);
    rekey_worker_keys_t wk;
    fr_status_t st = rekey_worker_keys (conn, given, &wk, &err);
    if (st != FR_OK) {
        report_db_error ("could not read the workers' keys", &err);
        rc = exit_code_for (st);
        goto out;
    }
    if (wk.live_other > 0 && wk.live_same > 0) {
        report ("error", "the workers seal with more than one key: key %ld (FERRULE_ENCRYPTION_KEY) and key %s",
                (long) given, wk.others);
        report ("hint", "a rolling key change is not finished: restart every worker with the new "
                "FERRULE_ENCRYPTION_KEY, then run rekey again once two FERRULE_KEY_STATS_MS intervals have passed");
        rc = EXIT_USAGE;
        goto out;
    }
    if (wk.live_other > 0) {
        report ("error", "the workers seal with key %s, not with key %ld given as FERRULE_ENCRYPTION_KEY",
                wk.others, (long) given);
        report ("hint", "give rekey the workers' current key as FERRULE_ENCRYPTION_KEY and the retired ones as "
                "FERRULE_ENCRYPTION_OLD_KEYS; to move to this key, restart every worker with it first");
        rc = EXIT_USAGE;
        goto out;
    }
    if (wk.live_same == 0 && wk.has_latest && wk.latest != given && !opts->force) {
        report ("error", "no worker said lately which key it seals with, and the last one sealed with key %ld, "
                "not with key %ld given as FERRULE_ENCRYPTION_KEY", (long) wk.latest, (long) given);
        report ("hint", "start the workers with this FERRULE_ENCRYPTION_KEY first; if it is right and they are "
                "stopped on purpose, run again with --force");
        rc = EXIT_USAGE;
        goto out;
    }
    if (!wk.has_latest) {
        int64_t on_current = 0;
        st = rekey_count_on_key (conn, given, &on_current, &err);
        if (st != FR_OK) {
            report_db_error ("could not count the values on the current key", &err);
            rc = exit_code_for (st);
            goto out;
        }
        if (on_current == 0 && !opts->force) {
            report ("error", "no worker has recorded its key and no stored value is sealed with key %ld yet, so "
                    "no worker is known to use it as FERRULE_ENCRYPTION_KEY", (long) given);
            report ("hint", "give rekey the workers' current key; if it is right and nothing was imported, "
                    "refreshed or connected since the workers got it, run again with --force");
            rc = EXIT_USAGE;
            goto out;
        }
    }
    st = rekey_run (conn, kr, opts->batch, opts->timeout_s, rekey_progress, NULL, &result, &err);
    if (st != FR_OK) {
        report_db_error ("rekey stopped", &err);
        report ("hint", "what was re-sealed stays so: run \"ferrule-migrate rekey\" again to go on");
        rc = exit_code_for (st);
        goto out;
    }
    printf ("re-sealed %lld integrations and %lld connects in progress under key %ld; %lld values remain on "
            "other keys\n", (long long) result.integrations, (long long) result.connects,
            (long) crypto_keyring_current_id (kr), (long long) result.remaining);
    if (result.failed)
        report ("warning", "%lld values would not open with the keys given and were left as they are: "
                "add the missing keys to FERRULE_ENCRYPTION_OLD_KEYS, or disconnect those integrations",
                (long long) result.failed);
    if (result.remaining > 0) {
        if (result.skipped_busy || result.remaining > result.failed)
            report ("hint", "some rows were being refreshed: run \"ferrule-migrate rekey\" again");
        rc = EXIT_OTHER;
    }
    else
        printf ("no value uses a retired key: FERRULE_ENCRYPTION_OLD_KEYS can be emptied once the workers' "
                "journals are empty\n");
out:
    if (conn)
        PQfinish (conn);
    crypto_keyring_destroy (&kr);
    mem_free_secret (&key);
    mem_free_secret (&old);
    return rc;
}

static int
cmd_fill (const options_t *opts)
{
    int rc = EXIT_OK;
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        return rc;
    rc = fill_route_hashes (conn, opts->batch, 0);
    PQfinish (conn);
    return rc;
}

/* What prune-events did, on standard output: "pruned N events and M deliveries older than D
 * days; K left: ...". */
static void
prune_print (const prune_result_t *r, int days)
{
    int64_t left = r->held + r->dedupe + r->latest;
    const char *sep = "";
    printf ("pruned %lld event%s and %lld deliver%s older than %d day%s", (long long) r->events,
            r->events == 1 ? "" : "s", (long long) r->deliveries, r->deliveries == 1 ? "y" : "ies", days,
            days == 1 ? "" : "s");
    if (r->unsent)
        printf (" (%lld of them never sent: still pending)", (long long) r->unsent);
    if (left)
        printf ("; %lld left:", (long long) left);
    if (r->held) {
        printf (" %lld with a delivery a worker is sending (for a later run)", (long long) r->held);
        sep = ",";
    }
    if (r->dedupe) {
        printf ("%s %lld kept for the dedupe key that stops a forecast from repeating", sep, (long long) r->dedupe);
        sep = ",";
    }
    if (r->latest)
        printf ("%s %lld kept as their integration's latest connection event", sep, (long long) r->latest);
    printf ("\n");
    fflush (stdout);
}

/* Deletes the events older than --older-than days with their deliveries (prune.h). A stop ends
 * the running batch on the server at once (it rolls back alone) and the run between two batches;
 * what was deleted stays so. EXIT_OK, or the exit code after reporting. */
static int
cmd_prune (const options_t *opts)
{
    db_error_t err;
    prune_result_t result;
    int rc = EXIT_OK, present = 0;
    PGconn *conn = connect_or_report (opts, &rc);
    if (!conn)
        return rc;
    stop_catch ();
    stop_cancels (conn);
    /* and should it be killed outright, the server ends its statement within seconds */
    if (db_check_client (conn, &err) != FR_OK)
        log_info (NULL, NULL, "the server would not notice this ferrule-migrate killed while a statement waits "
                  "for a lock: %s", err.message);
    fr_status_t st = prune_present (conn, &present, &err);
    if (st == FR_OK && !present) {
        report ("error", "the database has no table \"events\": it is not at migration 006 yet");
        report ("hint", "run \"ferrule-migrate up\"; there is nothing to prune before it");
        rc = EXIT_PENDING;
        goto out;
    }
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("before pruning events: nothing was deleted");
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not read the schema", &err);
        rc = exit_code_for (st);
        goto out;
    }
    st = prune_events (conn, opts->older_than, opts->batch, &result, &err);
    prune_print (&result, opts->older_than);
    if (st != FR_OK && stop_requested ()) {
        rc = report_stopped ("while pruning events: what was deleted stays so");
        report ("hint", "run \"ferrule-migrate prune-events\" again to go on");
        goto out;
    }
    if (st != FR_OK) {
        report_db_error ("could not prune events", &err);
        if (strcmp (err.sqlstate, "42501") == 0)
            report ("hint", "run prune-events as the schema owner (the role that ran \"up\"): the workers' runtime "
                    "role may not delete");
        else
            report ("hint", "what was deleted stays so: run \"ferrule-migrate prune-events\" again to go on");
        rc = exit_code_for (st);
        goto out;
    }
    if (result.held) {
        report ("warning", "%lld event%s older than %d day%s left: a worker was sending a delivery of %s, or another "
                "session held %s", (long long) result.held, result.held == 1 ? "" : "s", opts->older_than,
                opts->older_than == 1 ? "" : "s", result.held == 1 ? "it" : "each", result.held == 1 ? "it" : "them");
        report ("hint", "run \"ferrule-migrate prune-events\" again later");
        rc = EXIT_OTHER;
    }
out:
    stop_cancels (NULL);
    PQfinish (conn);
    return rc;
}

static void
print_usage (FILE *out)
{
    fprintf (out,
        "ferrule-migrate applies Ferrule's database schema and reports on it.\n"
        "\n"
        "Usage:\n"
        "  ferrule-migrate [OPTION]... COMMAND\n"
        "\n"
        "Commands:\n"
        "  up [--no-fill]  apply every pending migration, each in its own transaction; concurrent\n"
        "                  runs take turns on an advisory lock, so all of them succeed. Then fill\n"
        "                  in the routing hash of integrations made before migration 009\n"
        "                  (as fill-route-hashes does), unless --no-fill\n"
        "  status [--json] list the migrations and whether each is applied\n"
        "  verify          check that every migration is applied and unchanged\n"
        "  wait            wait until every migration of this build is applied (for init containers)\n"
        "  grant-runtime ROLE\n"
        "                  set up the workers' runtime role (created when missing, WITH LOGIN and\n"
        "                  no password): read and write the current state, append to the chain,\n"
        "                  no DDL, DELETE or TRUNCATE; idempotent, and \"up\" grants it again after\n"
        "                  later migrations. Takes turns with up on its advisory lock\n"
        "  rekey [--batch=N] [--timeout=SECONDS] [--force]\n"
        "                  re-seal every stored token and live PKCE verifier under the current key\n"
        "                  (FERRULE_ENCRYPTION_KEY[_FILE], FERRULE_ENCRYPTION_OLD_KEYS[_FILE]) while\n"
        "                  the service runs; resumable; exit 0 when nothing is left on an old key.\n"
        "                  Refuses a key other than the one the workers say they seal with, and\n"
        "                  two keys at once (a rolling change not finished); with no worker\n"
        "                  heard lately, a key other than the last one's, or with none ever, a key\n"
        "                  no stored value uses yet, unless --force\n"
        "  fill-route-hashes [--batch=N]\n"
        "                  fill in the routing hash of integrations made before migration 009\n"
        "                  while the service runs, skipping rows a worker holds (tried again a\n"
        "                  few times); idempotent; exit 1 when some stayed held\n"
        "  prune-events --older-than=DAYS [--batch=N]\n"
        "                  delete the events created more than DAYS days ago (1 to %d; no default)\n"
        "                  with their webhook deliveries, in batches, while the service runs.\n"
        "                  Keeps an event a worker is sending (exit 1: run again later), one whose\n"
        "                  dedupe key stops a forecast from warning again, and each integration's\n"
        "                  latest connection event\n"
        "  version         print the schema version this build needs (%d)\n"
        "  help            show this help\n"
        "\n"
        "Options:\n"
        "  -d, --database-url=URL  libpq connection string or postgresql:// URI\n"
        "                          (default: $FERRULE_DATABASE_URL, or the file $FERRULE_DATABASE_URL_FILE,\n"
        "                          which keep the password out of ps)\n"
        "      --dir=DIR           read NNN_name.sql from DIR instead of the migrations compiled in\n"
        "                          (default: $FERRULE_MIGRATIONS_DIR; for development)\n"
        "      --json              status: print JSON\n"
        "      --timeout=SECONDS   wait: give up after this long (default %.0f); rekey: how long to\n"
        "                          retry rows a refresh has leased\n"
        "      --batch=N           rekey: rows per transaction (default 200); fill-route-hashes: rows\n"
        "                          per statement (default 1000); prune-events: events per statement\n"
        "                          (default 1000)\n"
        "      --older-than=DAYS   prune-events: the age in days past which events are deleted\n"
        "      --no-fill           up: leave the routing hashes to fill-route-hashes\n"
        "      --wait-limit=SECONDS\n"
        "                          up: cancel a statement that has waited this long for other\n"
        "                          sessions (their locks, or the transactions a concurrent index\n"
        "                          build must outlast), and fail naming them (default:\n"
        "                          $FERRULE_MIGRATE_WAIT_LIMIT_S, or 0: as long as it takes). Either\n"
        "                          way, up names them once a statement has waited 5 s\n"
        "      --lock-timeout=MS   up: a migration's step (but a concurrent index build) gives up on\n"
        "                          a lock after MS milliseconds, so that the readers and writers of\n"
        "                          its table do not queue behind it, is rolled back, and is tried\n"
        "                          again after a pause until the wait limit (default:\n"
        "                          $FERRULE_MIGRATE_LOCK_TIMEOUT_MS, or %d; 0: wait for locks)\n"
        "      --runtime-role=ROLE up: then set up ROLE as grant-runtime does\n"
        "                          (default: $FERRULE_RUNTIME_ROLE)\n"
        "  -h, --help              show this help\n"
        "\n"
        "Connect directly or through a session-pooling proxy: the advisory lock needs one session.\n"
        "\n"
        "Exit status:\n"
        "  0 done or up to date, 1 other failure, 2 usage, 5 database unreachable (wait: timed out),\n"
        "  6 applied migrations differ from the files (up refuses), 7 migrations pending\n"
        "  (rekey: 1 when values remain on an old key; fill-route-hashes: 1 when rows remain\n"
        "  without a routing hash, 7 when the schema is older than 009; prune-events: 1 when\n"
        "  events a worker was sending were left, 7 when the schema is older than 006); up and\n"
        "  prune-events: 130 or 143 when stopped by SIGINT or SIGTERM, which cancel the running\n"
        "  statement on the server; grant-runtime: 6 when the schema is newer than this build\n",
        PRUNE_MAX_DAYS, FERRULE_SCHEMA_VERSION, WAIT_DEFAULT_TIMEOUT_S, LEDGER_DEFAULT_LOCK_TIMEOUT_MS);
}

static int
usage_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static int
usage_error (const char *fmt, ...)
{
    va_list ap;
    fprintf (stderr, "ferrule-migrate: error: ");
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fprintf (stderr, "\nferrule-migrate: hint: try \"ferrule-migrate --help\"\n");
    return EXIT_USAGE;
}

/* An option as a usage error may quote it: its name up to "=" (what follows may be the password,
 * given to a misspelled option), printable and cut. Returns out. */
static const char *
usage_option (char *out, size_t size, const char *arg)
{
    return text_printable (out, size, arg, strcspn (arg, "="), 40);
}

/* 1 when a stray argument may be quoted back: a short plain word (a mistyped command), never a
 * URL or a "key=value" string, which may hold the password. */
static int
usage_plain_word (const char *arg)
{
    size_t n = strlen (arg);
    if (n == 0 || n > 40)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum ((unsigned char) arg [i]) && arg [i] != '-' && arg [i] != '_' && arg [i] != '.')
            return 0;
    return 1;
}

/* The long options that "--name" (up to "=") abbreviates, into out as "--a or --b"; how many
 * there are. An exact name counts as one: getopt takes it. */
static int
usage_candidates (const struct option *longopts, const char *arg, char *out, size_t size)
{
    const char *name = arg + 2;
    size_t len = strcspn (name, "=");
    size_t used = 0;
    int count = 0;
    *out = '\0';
    for (const struct option *o = longopts; o->name; o++) {
        if (strncmp (o->name, name, len) != 0)
            continue;
        if (strlen (o->name) == len)
            return 1;
        size_t need = strlen (o->name) + (count ? 6 : 2);
        if (used + need < size)         /* the names that fit; the count is what matters */
            used += (size_t) snprintf (out + used, size - used, "%s--%s", count ? " or " : "", o->name);
        count++;
    }
    return count;
}

/* Seconds from 0 (no limit) to WATCH_MAX_LIMIT_S. EXIT_OK, or EXIT_USAGE after reporting. */
static int
parse_wait_limit (const char *text, const char *name, double *out)
{
    char *end;
    errno = 0;
    double value = strtod (text, &end);
    if (errno || end == text || *end || !isfinite (value) || value < 0 || value > WATCH_MAX_LIMIT_S)
        return usage_error ("invalid %s \"%s\": give seconds from 0 (no limit) to %.0f", name, text, WATCH_MAX_LIMIT_S);
    *out = value;
    return EXIT_OK;
}

/* Milliseconds from 0 (no lock timeout) to LEDGER_MAX_LOCK_TIMEOUT_MS. EXIT_OK, or EXIT_USAGE after
 * reporting. */
static int
parse_lock_timeout (const char *text, const char *name, int *out)
{
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || end == text || *end || value < 0 || value > LEDGER_MAX_LOCK_TIMEOUT_MS)
        return usage_error ("invalid %s \"%s\": give milliseconds from 0 (wait for locks) to %d", name, text,
                            LEDGER_MAX_LOCK_TIMEOUT_MS);
    *out = (int) value;
    return EXIT_OK;
}

/* Fills opts from argv and the environment. EXIT_OK, or EXIT_USAGE after reporting. */
static int
parse_options (int argc, char **argv, options_t *opts)
{
    static const struct option longopts [] = {
        { "database-url", required_argument, NULL, 'd' },
        { "dir",          required_argument, NULL, 'D' },
        { "json",         no_argument,       NULL, 'j' },
        { "timeout",      required_argument, NULL, 't' },
        { "batch",        required_argument, NULL, 'b' },
        { "runtime-role", required_argument, NULL, 'r' },
        { "force",        no_argument,       NULL, 'f' },
        { "no-fill",      no_argument,       NULL, 'n' },
        { "wait-limit",   required_argument, NULL, 'w' },
        { "lock-timeout", required_argument, NULL, 'l' },
        { "older-than",   required_argument, NULL, 'o' },
        { "help",         no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    char name [64], candidates [128];
    int c;

    opterr = 0;
    while ((c = getopt_long (argc, argv, ":d:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            mem_free_secret (&opts->database_url);
            opts->database_url = mem_strdup (optarg);
            /* hide the password from ps and /proc/PID/cmdline */
            memset (optarg, 'x', strlen (optarg));
            break;
        case 'D':
            opts->dir = optarg;
            break;
        case 'j':
            opts->json = 1;
            break;
        case 't': {
            char *end;
            errno = 0;
            double value = strtod (optarg, &end);
            if (errno || end == optarg || *end || !isfinite (value) || value < 0 || value > WAIT_MAX_TIMEOUT_S)
                return usage_error ("invalid --timeout \"%s\": give seconds from 0 to %.0f", optarg, WAIT_MAX_TIMEOUT_S);
            opts->timeout_s = value;
            opts->timeout_given = 1;
            break;
        }
        case 'b': {
            char *end;
            errno = 0;
            long value = strtol (optarg, &end, 10);
            if (errno || end == optarg || *end || value < 1 || value > REKEY_MAX_BATCH)
                return usage_error ("invalid --batch \"%s\": give rows from 1 to %d", optarg, REKEY_MAX_BATCH);
            opts->batch = (int) value;
            break;
        }
        case 'o': {
            char *end;
            errno = 0;
            long value = strtol (optarg, &end, 10);
            if (errno || end == optarg || *end || value < 1 || value > PRUNE_MAX_DAYS)
                return usage_error ("invalid --older-than \"%s\": give days from 1 to %d", optarg, PRUNE_MAX_DAYS);
            opts->older_than = (int) value;
            break;
        }
        case 'r':
            opts->role = optarg;
            break;
        case 'f':
            opts->force = 1;
            break;
        case 'n':
            opts->no_fill = 1;
            break;
        case 'w':
            if (parse_wait_limit (optarg, "--wait-limit", &opts->wait_limit_s) != EXIT_OK)
                return EXIT_USAGE;
            opts->wait_limit_given = 1;
            break;
        case 'l':
            if (parse_lock_timeout (optarg, "--lock-timeout", &opts->lock_timeout_ms) != EXIT_OK)
                return EXIT_USAGE;
            opts->lock_timeout_given = 1;
            break;
        case 'h':
            opts->command = "help";
            return EXIT_OK;
        case ':':
            return usage_error ("option \"%s\" needs a value", usage_option (name, sizeof name, argv [optind - 1]));
        default:
            if (optopt)             /* a short option, maybe inside "-xyz": argv names the wrong word */
                return usage_error ("unknown option \"-%c\"", optopt > 0 && optopt < 0x7f && isgraph (optopt)
                                    ? optopt : '?');
            usage_option (name, sizeof name, argv [optind - 1]);
            if (strncmp (argv [optind - 1], "--", 2) == 0
             && usage_candidates (longopts, argv [optind - 1], candidates, sizeof candidates) > 1)
                return usage_error ("option \"%s\" is ambiguous: it may be %s", name, candidates);
            return usage_error ("unknown option \"%s\"", name);
        }
    }
    if (optind >= argc)
        return usage_error ("no command given: use up, status, verify, wait, grant-runtime, rekey, fill-route-hashes, "
                            "prune-events or version");
    int command_at = optind;
    opts->command = argv [optind++];
    /* named before anything quotes it: a URL given without --database-url lands here */
    if (strcmp (opts->command, "up") && strcmp (opts->command, "status") && strcmp (opts->command, "verify")
     && strcmp (opts->command, "wait") && strcmp (opts->command, "version") && strcmp (opts->command, "help")
     && strcmp (opts->command, "grant-runtime") && strcmp (opts->command, "rekey")
     && strcmp (opts->command, "fill-route-hashes") && strcmp (opts->command, "prune-events")) {
        if (usage_plain_word (opts->command))
            return usage_error ("unknown command \"%s\": use up, status, verify, wait, grant-runtime, rekey, "
                                "fill-route-hashes, prune-events or version", opts->command);
        return usage_error ("unknown command (not shown: it may hold a password): use up, status, verify, wait, "
                            "grant-runtime, rekey, fill-route-hashes, prune-events or version; a database URL goes "
                            "in --database-url or FERRULE_DATABASE_URL");
    }
    if (opts->role && strcmp (opts->command, "up") != 0)
        return usage_error ("--runtime-role applies to up only; grant-runtime takes the role as its argument");
    if (!opts->role && strcmp (opts->command, "up") == 0 && getenv ("FERRULE_RUNTIME_ROLE")
     && *getenv ("FERRULE_RUNTIME_ROLE"))
        opts->role = getenv ("FERRULE_RUNTIME_ROLE");
    if (strcmp (opts->command, "grant-runtime") == 0) {
        if (optind >= argc)
            return usage_error ("grant-runtime needs the runtime role's name, e.g. \"ferrule-migrate grant-runtime ferrule_runtime\"");
        opts->role = argv [optind++];
    }
    /* a role name longer than PostgreSQL keeps, or one holding what a URL or a connection string
     * holds: a database URL given in the wrong place, which would be quoted in messages and even
     * created as a role, its password with it */
    if (opts->role && (!*opts->role || strlen (opts->role) > 63 || strpbrk (opts->role, ":/@= ")))
        return usage_error ("the runtime role's name must be 1 to 63 characters without \":\", \"/\", \"@\", \"=\" or "
                            "spaces (not shown: it may hold a password)");
    if (optind < argc && usage_plain_word (argv [optind]))
        return usage_error ("unexpected argument \"%s\" after command \"%s\"", argv [optind], opts->command);
    if (optind < argc)
        return usage_error ("unexpected argument number %d after command \"%s\" (not shown: it may hold a "
                            "password)", optind - command_at, opts->command);
    if (opts->json && strcmp (opts->command, "status") != 0)
        return usage_error ("--json applies to status only");
    if (opts->timeout_given && strcmp (opts->command, "wait") != 0 && strcmp (opts->command, "rekey") != 0)
        return usage_error ("--timeout applies to wait and rekey only");
    if (opts->force && strcmp (opts->command, "rekey") != 0)
        return usage_error ("--force applies to rekey only");
    if (opts->batch && strcmp (opts->command, "rekey") != 0 && strcmp (opts->command, "fill-route-hashes") != 0
     && strcmp (opts->command, "prune-events") != 0)
        return usage_error ("--batch applies to rekey, fill-route-hashes and prune-events only");
    if (opts->older_than && strcmp (opts->command, "prune-events") != 0)
        return usage_error ("--older-than applies to prune-events only");
    /* deletion is asked for explicitly, never by a default */
    if (!opts->older_than && strcmp (opts->command, "prune-events") == 0)
        return usage_error ("prune-events needs --older-than=DAYS: the age in days past which events are deleted "
                            "(1 to %d; there is no default)", PRUNE_MAX_DAYS);
    if (opts->no_fill && strcmp (opts->command, "up") != 0)
        return usage_error ("--no-fill applies to up only");
    if (opts->wait_limit_given && strcmp (opts->command, "up") != 0)
        return usage_error ("--wait-limit applies to up only");
    if (!opts->wait_limit_given && strcmp (opts->command, "up") == 0 && getenv ("FERRULE_MIGRATE_WAIT_LIMIT_S")
     && *getenv ("FERRULE_MIGRATE_WAIT_LIMIT_S")
     && parse_wait_limit (getenv ("FERRULE_MIGRATE_WAIT_LIMIT_S"), "FERRULE_MIGRATE_WAIT_LIMIT_S",
                          &opts->wait_limit_s) != EXIT_OK)
        return EXIT_USAGE;
    if (opts->lock_timeout_given && strcmp (opts->command, "up") != 0)
        return usage_error ("--lock-timeout applies to up only");
    if (!opts->lock_timeout_given)
        opts->lock_timeout_ms = LEDGER_DEFAULT_LOCK_TIMEOUT_MS;
    if (!opts->lock_timeout_given && strcmp (opts->command, "up") == 0 && getenv ("FERRULE_MIGRATE_LOCK_TIMEOUT_MS")
     && *getenv ("FERRULE_MIGRATE_LOCK_TIMEOUT_MS")
     && parse_lock_timeout (getenv ("FERRULE_MIGRATE_LOCK_TIMEOUT_MS"), "FERRULE_MIGRATE_LOCK_TIMEOUT_MS",
                            &opts->lock_timeout_ms) != EXIT_OK)
        return EXIT_USAGE;
    if (!opts->batch)
        opts->batch = strcmp (opts->command, "rekey") == 0 ? REKEY_DEFAULT_BATCH
                    : strcmp (opts->command, "prune-events") == 0 ? PRUNE_DEFAULT_BATCH : ROUTEHASH_DEFAULT_BATCH;
    if (!opts->timeout_given)
        opts->timeout_s = WAIT_DEFAULT_TIMEOUT_S;

    if (!opts->dir && getenv ("FERRULE_MIGRATIONS_DIR") && *getenv ("FERRULE_MIGRATIONS_DIR"))
        opts->dir = getenv ("FERRULE_MIGRATIONS_DIR");
    if (!opts->database_url) {
        char err [512];
        if (secrets_from_env ("FERRULE_DATABASE_URL", &opts->database_url, err, sizeof err) != 0)
            return usage_error ("%s", err);
    }
    return EXIT_OK;
}

int
main (int argc, char **argv)
{
    options_t opts = { 0 };
    catalog_t *catalog = NULL;
    char err [1024];
    /* rekey holds every key: no core dumps, whatever the command */
    if (secrets_harden (err, sizeof err) != 0)
        report ("warning", "%s", err);
    int rc = parse_options (argc, argv, &opts);

    if (rc != EXIT_OK)
        goto out;
    if (strcmp (opts.command, "help") == 0) {
        print_usage (stdout);
        goto out;
    }
    if (strcmp (opts.command, "version") == 0) {
        printf ("%d\n", FERRULE_SCHEMA_VERSION);
        goto out;
    }

    catalog = opts.dir ? catalog_new_from_dir (opts.dir, err, sizeof err) : catalog_new_embedded (err, sizeof err);
    if (!catalog) {
        report ("error", "%s", err);
        rc = EXIT_OTHER;
        goto out;
    }
    if (catalog_size (catalog) == 0) {
        report ("error", "this ferrule-migrate was built without migrations");
        report ("hint", "rebuild it with migrations/NNN_name.sql in place, or pass --dir");
        rc = EXIT_OTHER;
        goto out;
    }
    if (opts.dir && catalog_highest (catalog) < FERRULE_SCHEMA_VERSION)
        report ("warning", "\"%s\" goes up to version %d only, but this build's services need version %d",
                opts.dir, catalog_highest (catalog), FERRULE_SCHEMA_VERSION);

    if (!opts.database_url || !*opts.database_url) {
        rc = usage_error ("no database given: pass --database-url or set FERRULE_DATABASE_URL");
        goto out;
    }
    opts.target = db_describe (opts.database_url);
    if (!opts.target) {
        report ("error", "the database URL " DBURL_UNREADABLE_TEXT);
        report ("detail", "a parser's detail is not shown either, because it may quote the password");
        rc = EXIT_USAGE;
        goto out;
    }
    log_init ("ferrule-migrate", opts.target);

    if (strcmp (opts.command, "up") == 0)
        rc = cmd_up (&opts, catalog);
    else if (strcmp (opts.command, "status") == 0)
        rc = cmd_status (&opts, catalog);
    else if (strcmp (opts.command, "verify") == 0)
        rc = cmd_verify (&opts, catalog);
    else if (strcmp (opts.command, "grant-runtime") == 0)
        rc = cmd_grant_runtime (&opts, catalog);
    else if (strcmp (opts.command, "rekey") == 0)
        rc = cmd_rekey (&opts);
    else if (strcmp (opts.command, "fill-route-hashes") == 0)
        rc = cmd_fill (&opts);
    else if (strcmp (opts.command, "prune-events") == 0)
        rc = cmd_prune (&opts);
    else
        rc = cmd_wait (&opts, catalog);
out:
    catalog_destroy (&catalog);
    mem_free_secret (&opts.database_url);
    mem_free (opts.target);
    fflush (stdout);
    return rc;
}
