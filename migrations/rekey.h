/* rekey.h - "ferrule-migrate rekey": re-seals every stored token and every live PKCE verifier
 * under the current encryption key, in small batches, while the service keeps serving */
#ifndef FERRULE_REKEY_H
#define FERRULE_REKEY_H
#include "crypto.h"
#include "db.h"
#include "result.h"
#include <libpq-fe.h>
#include <stdint.h>

#define REKEY_DEFAULT_BATCH 200
#define REKEY_MAX_BATCH     10000

/* The values that still use a key other than current_key_id: integrations with a token sealed
 * under another key, and live connects (unused, unexpired) whose verifier is. The same SQL the
 * workers' metric uses. */
#define REKEY_COUNT_SQL \
    "SELECT (SELECT count(*) FROM integrations WHERE key_id <> $1::integer" \
    "          AND (access_token IS NOT NULL OR refresh_token IS NOT NULL))," \
    "       (SELECT count(*) FROM pending_authorizations WHERE key_id <> $1::integer" \
    "          AND code_verifier IS NOT NULL AND used_at IS NULL AND expires_at > now())"

typedef struct {
    int64_t integrations;       /* rows re-sealed */
    int64_t connects;           /* verifiers re-sealed */
    int64_t skipped_busy;       /* last pass: rows picked but changed before the write (a refresh,
                                   import or lease won); leased or locked rows are never picked */
    int64_t failed;             /* values that would not open (missing key, altered): left as they are */
    int64_t remaining;          /* values still on another key at the end */
} rekey_result_t;

/* Progress callback: done of total values so far. */
typedef void (*rekey_progress_fn) (int64_t done, int64_t total, void *arg);

/* Values already sealed under key_id (integrations with a token, live connects: the values
 * rekey treats): the guard's evidence when no worker has recorded its key (worker_keys). */
#define REKEY_ON_KEY_SQL \
    "SELECT (SELECT count(*) FROM integrations WHERE key_id = $1::integer" \
    "          AND (access_token IS NOT NULL OR refresh_token IS NOT NULL))" \
    "     + (SELECT count(*) FROM pending_authorizations WHERE key_id = $1::integer" \
    "          AND code_verifier IS NOT NULL AND used_at IS NULL AND expires_at > now())"

/* Counts the values sealed under key_id (REKEY_ON_KEY_SQL). */
fr_status_t rekey_count_on_key (PGconn *conn, int32_t key_id, int64_t *count, db_error_t *err) FR_MUSTCHECK;

/* What the workers recorded of the keys they seal with (worker_keys, migration 023), against
 * the key rekey was given as current. */
typedef struct {
    int64_t live_same;          /* live records of key_id: a worker seals with it */
    int64_t live_other;         /* live records of other keys: a worker seals with another */
    char others [128];          /* those other keys' ids, ", "-separated */
    int has_latest;             /* any record at all (workers of this release ran) */
    int32_t latest;             /* the key of the most recent record */
} rekey_worker_keys_t;

/* Reads worker_keys; all zero when the table is missing (a schema older than 023). */
fr_status_t rekey_worker_keys (PGconn *conn, int32_t key_id, rekey_worker_keys_t *out, db_error_t *err) FR_MUSTCHECK;

/* Counts the values on other keys than current_key_id. */
fr_status_t rekey_count (PGconn *conn, int32_t current_key_id, int64_t *integrations, int64_t *connects,
                         db_error_t *err) FR_MUSTCHECK;

/* Re-seals in batches of batch rows, each batch one short transaction of two statements (a pick
 * FOR UPDATE SKIP LOCKED, then one UPDATE of all its rows, a compare-and-set on each row's key_id
 * and generation), never touching a row whose refresh lease is live; rows skipped that way are tried again, for up to wait_s seconds. Resumable: it only ever
 * picks values not yet under the current key. */
fr_status_t rekey_run (PGconn *conn, const crypto_keyring_t *kr, int batch, double wait_s,
                       rekey_progress_fn progress, void *arg, rekey_result_t *out, db_error_t *err) FR_MUSTCHECK;
#endif
