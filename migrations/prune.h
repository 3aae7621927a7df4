/* prune.h - event retention: "ferrule-migrate prune-events" deletes the events older than a number
 * of days together with their deliveries, in small batches, while the service keeps running. The
 * workers' runtime role may not DELETE; this runs as the schema owner. */
#ifndef FERRULE_PRUNE_H
#define FERRULE_PRUNE_H
#include "db.h"
#include "result.h"
#include <libpq-fe.h>
#include <stdint.h>

#define PRUNE_DEFAULT_BATCH 1000        /* events per statement; --batch's range is rekey's */
#define PRUNE_MAX_DAYS      36500       /* --older-than: 1 to this many days, no default */

typedef struct {
    int64_t events;             /* events deleted by this run */
    int64_t deliveries;         /* their deliveries, deleted with them */
    int64_t unsent;             /* of those deliveries, ones still pending: never delivered nor failed */
    int64_t held;               /* events left for a later run: a delivery being sent (leased), or a row
                                   another session held */
    int64_t dedupe;             /* events kept: a forecast's condition they reported may still hold, and
                                   their dedupe key keeps the forecast from reporting it again */
    int64_t latest;             /* events kept: their integration's latest change of connection state,
                                   which the chain's trigger reads to decide on "recovered" */
} prune_result_t;

/* *present 1 when the database has the events table (migration 006 or later), else 0. */
fr_status_t prune_present (PGconn *conn, int *present, db_error_t *err) FR_MUSTCHECK;

/* Deletes the events created more than days days before the run began, and their deliveries,
 * batch events at a time in seq order: each batch is one statement, its own short transaction,
 * that locks only rows no other session holds (SKIP LOCKED) and deletes an event only with all of
 * its deliveries. It keeps, and counts in out, an event with a delivery a worker has leased (it is
 * being sent: out->held, for a later run), an event whose dedupe key a forecast would otherwise
 * write again for a condition it already reported (out->dedupe), and an integration's latest
 * connection event (out->latest). A stop signal (stop.h) ends it between two statements, as a
 * failure; what was deleted stays deleted, and out says how much. */
fr_status_t prune_events (PGconn *conn, int days, int batch, prune_result_t *out, db_error_t *err) FR_MUSTCHECK;
#endif
