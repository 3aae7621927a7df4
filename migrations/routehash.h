/* routehash.h - the routing hash (integrations.route_hash, migration 009) of rows made before
 * 009: filled in after "up" and by "ferrule-migrate fill-route-hashes", in small batches, while
 * the service keeps serving. Until a row has it, every worker's sweep reads it. */
#ifndef FERRULE_ROUTEHASH_H
#define FERRULE_ROUTEHASH_H
#include "db.h"
#include "result.h"
#include <libpq-fe.h>
#include <stdint.h>

#define ROUTEHASH_DEFAULT_BATCH 1000        /* --batch's range is rekey's: 1 to REKEY_MAX_BATCH */

typedef struct {
    int64_t filled;             /* rows given their hash by this run */
    int64_t remaining;          /* rows another session held every time they were tried */
} routehash_result_t;

/* *present 1 when integrations has route_hash (the database is at 009 or later), else 0. */
fr_status_t routehash_present (PGconn *conn, int *present, db_error_t *err) FR_MUSTCHECK;

/* Gives every row without a routing hash its hash: ring_hash of its id (common/ring.c) as a
 * signed bigint, as the workers write it. Reads the rows in id order, batch at a time; each batch
 * is one statement (its own short transaction) that skips rows another session holds (a worker's
 * claim, commit or fill) instead of waiting, and fills only rows still without a hash, so it is
 * idempotent and safe beside workers and other runs. Rows skipped are tried again a few times,
 * a while apart; those still held then are counted in out->remaining. Rows that a worker of an
 * older build makes meanwhile are filled only if the reading has not yet passed their ids. A stop
 * signal (stop.h) ends it between two statements, as a failure. */
fr_status_t routehash_fill (PGconn *conn, int batch, routehash_result_t *out, db_error_t *err) FR_MUSTCHECK;
#endif
