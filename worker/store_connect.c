/* store_connect.c - the connect flow's statements: pending_authorizations, the connect columns
 * of integrations, the upsert that stores a connection, disconnect, scope reports */
#include "store_connect.h"
#include "store_internal.h"
#include "clock.h"
#include "ident.h"
#include "mem.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXTRA_COLUMNS \
    "refresh_token_missing AND refresh_token IS NULL, array_to_string(requested_scopes, ' ')," \
    " scope_report, COALESCE(extract(epoch FROM scope_report_at)::bigint, 0)," \
    " COALESCE(extract(epoch FROM disconnected_at)::bigint, 0)"
#define ROW_COLUMN_COUNT 23          /* in STORE_ROW_COLUMNS: EXTRA_COLUMNS follow them in a full row */

/* EXTRA_COLUMNS from row r of res, starting at column c. */
static void
extra_fill (const PGresult *res, int r, int c, store_extra_t *x)
{
    x->refresh_token_missing = store_bool_at (res, r, c);
    x->requested_scopes = store_text_at (res, r, c + 1);
    x->scope_report = store_text_at (res, r, c + 2);
    x->scope_report_at = store_int_at (res, r, c + 3);
    x->disconnected_at = store_int_at (res, r, c + 4);
}

/* The integration's row and EXTRA_COLUMNS, a statement of a batch whose $1 is the id. */
#define ROW_SQL "SELECT " STORE_ROW_COLUMNS ", " EXTRA_COLUMNS " FROM integrations WHERE id = $1"

/* The row of a ROW_SQL result into row and x; 0 (both left empty) when there is none. */
static int
row_read (const PGresult *res, store_row_t *row, store_extra_t *x)
{
    memset (row, 0, sizeof *row);
    memset (x, 0, sizeof *x);
    if (!res || PQntuples (res) != 1)
        return 0;
    store_fill_row (res, 0, row);
    extra_fill (res, 0, ROW_COLUMN_COUNT, x);
    return 1;
}

void
store_extra_clear (store_extra_t *x)
{
    mem_free (x->requested_scopes);
    mem_free (x->scope_report);
    memset (x, 0, sizeof *x);
}

void
store_extra_copy (store_extra_t *dst, const store_extra_t *src)
{
    *dst = *src;
    dst->requested_scopes = mem_strdup (src->requested_scopes);
    dst->scope_report = mem_strdup (src->scope_report);
}

typedef struct {
    store_loaded_fn *fn;
    void *arg;
} loads_ctx_t;

static void
loads_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    loads_ctx_t *c = arg;
    for (int i = 0; st == FR_OK && n == 1 && results [0] && i < PQntuples (results [0]); i++) {
        store_row_t row;
        store_extra_t x;
        store_fill_row (results [0], i, &row);
        memset (&x, 0, sizeof x);
        extra_fill (results [0], i, ROW_COLUMN_COUNT, &x);
        c->fn (c->arg, FR_OK, &row, &x, NULL);      /* the callee takes both */
    }
    c->fn (c->arg, st, NULL, NULL, st == FR_OK ? NULL : err);
}

fr_status_t
store_loads_start (store_t *s, const char *const *ids, size_t n, store_loaded_fn *fn, void *arg,
                   char *err, size_t errlen)
{
    loads_ctx_t c = { fn, arg };
    return store_ids_batch_start (s, "SELECT " STORE_ROW_COLUMNS ", " EXTRA_COLUMNS
                                  " FROM integrations WHERE id = ANY ($1::text[])",
                                  ids, n, loads_done, &c, sizeof c, "read", err, errlen);
}

/* g, the gate of a code exchange's upsert: its pending authorization, locked, as the newest commit
 * left it (a run that waits for the lock reads the row as the run before it committed it). The
 * exchange's tokens are written only while it has no outcome: the upsert sent again after a lost
 * answer finds its first run's mark, and writes nothing over what changed since. Nor over what
 * happened to the integration after the callback took the state (late, from the row locked as its
 * newest commit left it): a disconnect (its owner was told the tokens are destroyed), or another
 * connect or an import stored meanwhile (a slow exchange that ended last wrote its account over
 * the newer one's, and over a disconnect and reconnect between them); d marks the connect
 * "disconnected" or "state_invalid" instead. An import ($13 NULL) always writes. The answer: the
 * generation written (NULL: nothing), the status before, whether g was found and its outcome,
 * whether the integration existed before the callback took the state (a row that a first run
 * created is not in this statement's snapshot, or was created after used_at), and d's mark. */
#define UPSERT_SQL \
    "WITH g AS MATERIALIZED (SELECT outcome, used_at FROM pending_authorizations WHERE state_hash = $13 FOR UPDATE)," \
    " cur AS MATERIALIZED (SELECT disconnected_at, connected_at FROM integrations" \
    "   WHERE id = $1 AND $13::text IS NOT NULL FOR UPDATE)," \
    " late AS (SELECT CASE WHEN cur.disconnected_at >= g.used_at THEN 'disconnected'" \
    "                      WHEN cur.connected_at >= g.used_at THEN 'state_invalid' END AS why FROM cur, g)," \
    " prev AS (SELECT status, created_at FROM integrations WHERE id = $1),"   /* the snapshot: before u */ \
    " u AS (" \
    "  INSERT INTO integrations (id, provider, status, key_id, access_token, access_expires_at," \
    "    refresh_token, refresh_fingerprint, generation, scopes, requested_scopes, refresh_token_missing," \
    "    access_lifetime_s, route_hash, connected_at, api_base_url)" \
    "  SELECT $1::text, $2::text, 'active', $3::integer, $4::bytea, to_timestamp($5::bigint), $6::bytea, $7::text, 1," \
    "    string_to_array($8::text, ' '), string_to_array($9::text, ' '), $10::boolean, $14::integer, $16::bigint," \
    "    now(), $17::text" \
    "  WHERE $13::text IS NULL OR EXISTS (SELECT 1 FROM g WHERE outcome IS NULL)" \
    "  ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, status = 'active'," \
    "    key_id = EXCLUDED.key_id, access_token = EXCLUDED.access_token," \
    "    access_expires_at = EXCLUDED.access_expires_at, refresh_token = EXCLUDED.refresh_token," \
    "    refresh_fingerprint = EXCLUDED.refresh_fingerprint, generation = integrations.generation + 1," \
    "    scopes = EXCLUDED.scopes," \
    "    requested_scopes = COALESCE(EXCLUDED.requested_scopes, integrations.requested_scopes)," \
    "    refresh_token_missing = EXCLUDED.refresh_token_missing, scope_report = NULL, scope_report_at = NULL," \
    "    disconnected_at = NULL, lease_owner = NULL, lease_id = NULL, lease_token = NULL, lease_expires_at = NULL," \
    "    access_lifetime_s = EXCLUDED.access_lifetime_s, route_hash = EXCLUDED.route_hash, connected_at = now()," \
    "    api_base_url = EXCLUDED.api_base_url," /* a new grant's, or none: the old one may be another org's */ \
    "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()" \
    "  WHERE $13::text IS NULL OR NOT EXISTS (SELECT 1 FROM late WHERE why IS NOT NULL)" \
    "  RETURNING generation)," \
    " c AS (" \
    "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)" \
    "  SELECT $1, u.generation, $11, $15, $7," \
    "    COALESCE('re' || $12 || ' (was ' || (SELECT status FROM prev) || ')', $12) FROM u RETURNING generation)," \
    " p AS (UPDATE pending_authorizations SET outcome = 'connected', outcome_detail = $12" \
    "   WHERE state_hash = $13 AND EXISTS (SELECT 1 FROM u))," \
    " d AS (UPDATE pending_authorizations SET outcome = (SELECT why FROM late)," \
    "   outcome_detail = CASE (SELECT why FROM late) WHEN 'disconnected'" \
    "     THEN 'the integration was disconnected while the code was exchanged'" \
    "     ELSE 'another connect or an import of the integration was stored while the code was exchanged' END" \
    "   WHERE state_hash = $13 AND NOT EXISTS (SELECT 1 FROM u) AND EXISTS (SELECT 1 FROM g WHERE outcome IS NULL)" \
    "     AND EXISTS (SELECT 1 FROM late WHERE why IS NOT NULL)" \
    "   RETURNING outcome)" \
    " SELECT (SELECT generation FROM c), (SELECT status FROM prev), EXISTS (SELECT 1 FROM g)," \
    "   (SELECT outcome FROM g), COALESCE((SELECT created_at FROM prev) < (SELECT used_at FROM g), false)," \
    "   (SELECT outcome FROM d)"

/* UPSERT_SQL's parameters for u on s (the numbers live as long as p). */
typedef struct {
    char key [32], exp [32], life [32], hash [32];
    const char *values [17];
    int lengths [17];
    int formats [17];
} upsert_params_t;

static void
upsert_params (store_t *s, const store_upsert_t *u, upsert_params_t *p)
{
    snprintf (p->key, sizeof p->key, "%" PRId32, u->key_id);
    snprintf (p->exp, sizeof p->exp, "%" PRId64, u->access_expires_at);
    snprintf (p->life, sizeof p->life, "%" PRId64, u->access_lifetime_s);
    snprintf (p->hash, sizeof p->hash, "%" PRId64, store_route_hash (u->id));
    const char *values [] = { u->id, u->provider, p->key, (const char *) u->access_ct, u->access_ct ? p->exp : NULL,
                              (const char *) u->refresh_ct, u->refresh_ct ? u->refresh_fingerprint : NULL,
                              u->scopes ? u->scopes : "", u->requested_scopes, u->refresh_ct ? "false" : "true",
                              store_worker_id (s), u->detail, u->state_hash,
                              u->access_ct && u->access_lifetime_s > 0 ? p->life : NULL, u->outcome, p->hash,
                              u->api_base_url };
    memcpy (p->values, values, sizeof values);
    memset (p->lengths, 0, sizeof p->lengths);
    memset (p->formats, 0, sizeof p->formats);
    p->lengths [3] = (int) u->access_ct_len;
    p->lengths [5] = (int) u->refresh_ct_len;
    p->formats [3] = p->formats [5] = 1;
}

/* UPSERT_SQL's answer for integration id into up (prev_status a copy, the caller frees it): what
 * it wrote, or that an earlier run of the same connect had; FR_STATE_INVALID when the connect can
 * no longer be finished. */
static fr_status_t
upsert_read (const PGresult *res, const char *id, store_upserted_t *up, char **prev_status, char *err,
             size_t errlen)
{
    memset (up, 0, sizeof *up);
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "no row written");
        return FR_INTERNAL;
    }
    if (!PQgetisnull (res, 0, 0)) {
        up->generation = store_int_at (res, 0, 0);
        *prev_status = store_text_at (res, 0, 1);
        up->prev_status = *prev_status;
        up->existed = *prev_status != NULL;
        return FR_OK;
    }
    const char *outcome = PQgetisnull (res, 0, 3) ? NULL : PQgetvalue (res, 0, 3);
    if (outcome && strcmp (outcome, "connected") == 0) {
        up->earlier = 1;
        up->existed = store_bool_at (res, 0, 4);
        return FR_OK;
    }
    const char *mark = PQgetisnull (res, 0, 5) ? NULL : PQgetvalue (res, 0, 5);
    if ((mark && strcmp (mark, "disconnected") == 0) || (outcome && strcmp (outcome, "disconnected") == 0)) {
        up->disconnected = 1;           /* this run's mark, or an earlier run's whose answer was lost */
        up->existed = 1;
        return FR_OK;
    }
    if (mark && strcmp (mark, "state_invalid") == 0) {
        up->superseded = 1;             /* this run's mark (an earlier run's reads as the end it was) */
        up->existed = 1;
        return FR_OK;
    }
    if (!store_bool_at (res, 0, 2))
        snprintf (err, errlen, "the connect flow of integration \"%s\" is gone from the database (a connect is "
                  "collected a day after it expired)", id);
    else
        snprintf (err, errlen, "the connect flow of integration \"%s\" already ended with \"%s\"", id,
                  outcome ? outcome : "?");
    return FR_STATE_INVALID;
}

typedef struct {
    store_upserted_fn *fn;
    void *arg;
    char id [IDENT_MAX + 1];
} upsert_ctx_t;

static void
upsert_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    upsert_ctx_t *c = arg;
    char why [256];
    char *prev_status = NULL;
    store_upserted_t up;
    store_row_t row;
    store_extra_t x;
    memset (&up, 0, sizeof up);
    row_read (NULL, &row, &x);
    if (st != FR_OK)
        snprintf (why, sizeof why, "%s", err ? err : "the batch failed");
    else
    if (n != 2) {
        snprintf (why, sizeof why, "the upsert returned an unexpected number of results");
        st = FR_INTERNAL;
    }
    else
    if ((st = upsert_read (results [0], c->id, &up, &prev_status, why, sizeof why)) == FR_OK
    &&  !row_read (results [1], &row, &x)) {
        snprintf (why, sizeof why, "the integration was not found after it was written");
        st = FR_INTERNAL;
    }
    c->fn (c->arg, st, st == FR_OK ? &up : NULL, st == FR_OK ? &row : NULL, st == FR_OK ? &x : NULL,
           st == FR_OK ? NULL : why);
    mem_free (prev_status);
    store_row_clear (&row);
    store_extra_clear (&x);
}

fr_status_t
store_upsert_start (store_t *s, const store_upsert_t *u, store_upserted_fn *fn, void *arg, char *err, size_t errlen)
{
    upsert_params_t p;
    upsert_params (s, u, &p);
    const char *ids [] = { u->id };
    store_stmt_t stmts [] = {
        { UPSERT_SQL, 17, p.values, p.lengths, p.formats },
        { ROW_SQL, 1, ids, NULL, NULL },
    };
    upsert_ctx_t c = { fn, arg, "" };
    snprintf (c.id, sizeof c.id, "%s", u->id);
    return store_batch_start_notify (s, stmts, 2, ids, 1, upsert_done, &c, sizeof c, err, errlen);
}

typedef struct {
    store_pending_inserted_fn *fn;
    void *arg;
    int retry;                            /* the write spends a retry token */
} pending_ctx_t;

static void
pending_inserted (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    pending_ctx_t *c = arg;
    int64_t expires_at = 0;
    if (st == FR_OK && n == 1 && results [0] && PQntuples (results [0]) == 1)
        expires_at = store_int_at (results [0], 0, 0);
    else
    if (st == FR_OK && c->retry) {
        st = FR_STATE_INVALID;
        err = "this retry link expired or was already used";
    }
    else
    if (st == FR_OK) {
        st = FR_INTERNAL;
        err = "no pending authorization written";
    }
    c->fn (c->arg, st, expires_at, st == FR_OK ? NULL : err);
}

fr_status_t
store_pending_insert_start (store_t *s, const store_pending_new_t *p, store_pending_inserted_fn *fn, void *arg,
                            char *err, size_t errlen)
{
    char key [32], ttl [32];
    snprintf (key, sizeof key, "%" PRId32, p->key_id);
    snprintf (ttl, sizeof ttl, "%" PRId64, p->ttl_s);
    const char *values [] = { p->state_hash, p->integration, p->provider, p->redirect_uri, p->scopes ? p->scopes : "",
                              p->verifier_ct ? key : NULL, (const char *) p->verifier_ct, ttl, p->return_to,
                              p->browser_hash, p->retry_hash };
    int lengths [] = { 0, 0, 0, 0, 0, 0, (int) p->verifier_ct_len, 0, 0, 0, 0 };
    int formats [] = { 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
    /* the runtime role may not DELETE: states, retry tokens and dashboard links a day past
       their expiry go through a function owned by the schema owner (migrations/004, 018) */
#define PENDING_INSERT \
        "INSERT INTO pending_authorizations (state_hash, integration_id, provider, redirect_uri, requested_scopes," \
        "  key_id, code_verifier, expires_at, return_to, browser_hash)" \
        " SELECT $1, $2, $3, $4, string_to_array($5, ' '), $6::integer, $7, now() + $8::integer * interval '1 second', $9," \
        "  $10" \
        " FROM (SELECT ferrule_gc_pending_authorizations ()) gc"
#define PENDING_RETURNING " RETURNING extract(epoch FROM expires_at)::bigint"
    /* a retry's token is spent by the statement that writes its connect, so a connect refused
       before it (a provider without credentials, the database away) leaves the token usable;
       of two retries of one token, the second waits for the first's row lock, then finds it
       spent and writes nothing */
    store_stmt_t stmt = p->retry_hash
        ? (store_stmt_t) { "WITH t AS (UPDATE gateway_retry_tokens SET used_at = now ()"
                           "           WHERE token_hash = $11 AND used_at IS NULL AND expires_at > now () RETURNING 1) "
                           PENDING_INSERT ", t" PENDING_RETURNING, 11, values, lengths, formats }
        : (store_stmt_t) { PENDING_INSERT PENDING_RETURNING, 10, values, lengths, formats };
#undef PENDING_INSERT
#undef PENDING_RETURNING
    pending_ctx_t c = { fn, arg, p->retry_hash != NULL };
    return store_batch_start (s, &stmt, 1, pending_inserted, &c, sizeof c, err, errlen);
}

typedef struct {
    store_pending_taken_fn *fn;
    void *arg;
} take_ctx_t;

static void
pending_taken (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    take_ctx_t *c = arg;
    store_pending_t pd;
    char why [512], when [32];
    memset (&pd, 0, sizeof pd);
    if (st != FR_OK || n != 2) {
        c->fn (c->arg, st != FR_OK ? st : FR_INTERNAL, NULL, err ? err : "the pending authorization was not read");
        return;
    }
    const PGresult *res = results [0];
    if (PQntuples (res) == 1 && store_bool_at (res, 0, 6)) {
        /* spent by the statement, its code never to be exchanged: only what the record needs */
        pd.integration = store_text_at (res, 0, 0);
        pd.provider = store_text_at (res, 0, 1);
        snprintf (why, sizeof why, "the sign-in for integration \"%s\" was started in another browser: its "
                  "callback came without that browser's binding, so the code was not exchanged", pd.integration);
        c->fn (c->arg, FR_BROWSER_MISMATCH, &pd, why);
        return;
    }
    if (PQntuples (res) == 1) {
        pd.integration = store_text_at (res, 0, 0);
        pd.provider = store_text_at (res, 0, 1);
        pd.redirect_uri = store_text_at (res, 0, 2);
        pd.scopes = store_text_at (res, 0, 3);
        pd.key_id = (int32_t) store_int_at (res, 0, 4);
        pd.verifier_ct = store_bytea_at (res, 0, 5, &pd.verifier_ct_len);
        c->fn (c->arg, FR_OK, &pd, NULL);       /* the callee takes pd */
        return;
    }
    /* why not, from the same transaction's second statement: for the message only; the state
     * stays unusable either way */
    res = results [1];
    if (PQntuples (res) == 0)
        snprintf (why, sizeof why, "the callback's state is not one this service issued, or it is older than a day: "
                  "the connect flow cannot be finished");
    else
    if (store_bool_at (res, 0, 3)) {
        /* bound to another browser, and over: that is what the person needs to hear, not "expired"
           (whose page would lead them to start it again in this browser) */
        snprintf (why, sizeof why, "the sign-in for integration \"%s\" was started in another browser, and its state "
                  "%s at %s: nothing was exchanged", PQgetvalue (res, 0, 0),
                  store_bool_at (res, 0, 1) ? "was already used" : "expired",
                  clock_rfc3339 (store_int_at (res, 0, 2), when, sizeof when));
        c->fn (c->arg, FR_BROWSER_MISMATCH, NULL, why);
        return;
    }
    else
    if (store_bool_at (res, 0, 1))
        snprintf (why, sizeof why, "the callback for integration \"%s\" was already used at %s: a callback URL works "
                  "once (it was reloaded, or opened twice)", PQgetvalue (res, 0, 0),
                  clock_rfc3339 (store_int_at (res, 0, 2), when, sizeof when));
    else
        snprintf (why, sizeof why, "the connect flow for integration \"%s\" expired at %s, before the callback came",
                  PQgetvalue (res, 0, 0), clock_rfc3339 (store_int_at (res, 0, 2), when, sizeof when));
    c->fn (c->arg, FR_STATE_INVALID, NULL, why);
}

fr_status_t
store_pending_take_start (store_t *s, const char *state_hash, const char *browser_hash, store_pending_taken_fn *fn,
                          void *arg, char *err, size_t errlen)
{
    const char *values [] = { state_hash, browser_hash };
    store_stmt_t stmts [] = {
        /* a bound row is spent by a callback from another browser too, its outcome written in the
           same statement: the attempt read next finds it ended (no "Try again" for it), and the
           code is never sent. The hashes compared are of random values, not the values. */
        { "UPDATE pending_authorizations SET used_at = now(),"
          "  outcome = CASE WHEN browser_hash IS DISTINCT FROM $2::text AND browser_hash IS NOT NULL"
          "                 THEN 'browser_mismatch' ELSE outcome END,"
          "  outcome_detail = CASE WHEN browser_hash IS DISTINCT FROM $2::text AND browser_hash IS NOT NULL"
          "                 THEN 'the sign-in was started in another browser' ELSE outcome_detail END"
          " WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()"
          " RETURNING integration_id, provider, redirect_uri, array_to_string(requested_scopes, ' '), key_id,"
          " code_verifier, browser_hash IS DISTINCT FROM $2::text AND browser_hash IS NOT NULL", 2, values, NULL, NULL },
        /* read only when the first took nothing: then it saw the row as it was */
        { "SELECT integration_id, used_at IS NOT NULL, extract(epoch FROM COALESCE(used_at, expires_at))::bigint,"
          " browser_hash IS DISTINCT FROM $2::text AND browser_hash IS NOT NULL"
          " FROM pending_authorizations WHERE state_hash = $1", 2, values, NULL, NULL },
    };
    take_ctx_t c = { fn, arg };
    return store_batch_start (s, stmts, 2, pending_taken, &c, sizeof c, err, errlen);
}

void
store_pending_clear (store_pending_t *pd)
{
    mem_free (pd->integration);
    mem_free (pd->provider);
    mem_free (pd->redirect_uri);
    mem_free (pd->scopes);
    if (pd->verifier_ct)
        mem_wipe (pd->verifier_ct, pd->verifier_ct_len);
    mem_free (pd->verifier_ct);
    memset (pd, 0, sizeof *pd);
}

fr_status_t
store_pending_failed_start (store_t *s, const char *state_hash, const char *id, const char *outcome,
                            const char *detail, store_done_fn *fn, void *arg, char *err, size_t errlen)
{
    const char *values [] = { state_hash, outcome, detail, id, store_worker_id (s) };
    store_stmt_t stmt = {
        "WITH p AS (UPDATE pending_authorizations SET outcome = $2, outcome_detail = $3 WHERE state_hash = $1)"
        " INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
        " SELECT id, generation, $5, 'connect_failed', $2 || ': ' || $3 FROM integrations WHERE id = $4"
        " RETURNING generation",            /* a batch's statements return rows */
        5, values, NULL, NULL };
    return store_batch_start_done (s, &stmt, 1, fn, arg, err, errlen);
}

#define LAST_ATTEMPT_SQL \
    "SELECT provider, redirect_uri, outcome, outcome_detail, extract(epoch FROM created_at)::bigint," \
    " extract(epoch FROM expires_at)::bigint, used_at IS NOT NULL, expires_at <= now()" \
    " FROM pending_authorizations WHERE integration_id = $1 ORDER BY created_at DESC LIMIT 1"

static void
attempt_read (const PGresult *res, store_attempt_t *a)
{
    memset (a, 0, sizeof *a);
    if (PQntuples (res) != 1)
        return;
    a->found = 1;
    a->provider = store_text_at (res, 0, 0);
    a->redirect_uri = store_text_at (res, 0, 1);
    a->outcome = store_text_at (res, 0, 2);
    a->outcome_detail = store_text_at (res, 0, 3);
    a->created_at = store_int_at (res, 0, 4);
    a->expires_at = store_int_at (res, 0, 5);
    a->used = store_bool_at (res, 0, 6);
    a->expired = store_bool_at (res, 0, 7);
}

void
store_attempt_clear (store_attempt_t *a)
{
    mem_free (a->provider);
    mem_free (a->redirect_uri);
    mem_free (a->outcome);
    mem_free (a->outcome_detail);
    memset (a, 0, sizeof *a);
}

/* statements, then ROW_SQL, as one batch; the integration as it then is goes to fn */
typedef struct {
    store_row_fn *fn;
    void *arg;
    char id [IDENT_MAX + 1];
    int first_needs_row;                  /* the first statement returns nothing when the row is gone */
} then_row_ctx_t;

static void
then_row_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    then_row_ctx_t *c = arg;
    store_row_t row;
    store_extra_t x;
    char why [256];
    row_read (NULL, &row, &x);
    if (st == FR_OK && (n < 2 || (c->first_needs_row && PQntuples (results [0]) == 0)
                        || !row_read (results [n - 1], &row, &x))) {
        st = store_not_found (c->id, why, sizeof why);
        err = why;
    }
    c->fn (c->arg, st, st == FR_OK ? &row : NULL, st == FR_OK ? &x : NULL, st == FR_OK ? NULL : err);
    store_row_clear (&row);
    store_extra_clear (&x);
}

/* What follows a then_row_start batch's commit (STORE_NOTIFY_SQL): nothing; the delivery threads'
 * wake-up, for statements that may write an event; that and the other workers' notification of the
 * integration, for statements that change what they may have cached. */
enum { THEN_ROW_QUIET, THEN_ROW_EVENTS, THEN_ROW_NOTIFY };

/* stmts [0 .. n-2] given, stmts [n-1] left for ROW_SQL; notify: THEN_ROW_* */
static fr_status_t
then_row_start (store_t *s, const char *id, store_stmt_t *stmts, size_t n, int first_needs_row, int notify,
                store_row_fn *fn, void *arg, char *err, size_t errlen)
{
    const char *ids [] = { id };
    stmts [n - 1] = (store_stmt_t) { ROW_SQL, 1, ids, NULL, NULL };
    then_row_ctx_t c = { fn, arg, "", first_needs_row };
    snprintf (c.id, sizeof c.id, "%s", id);
    if (notify != THEN_ROW_QUIET)
        return store_batch_start_notify (s, stmts, n, ids, notify == THEN_ROW_NOTIFY ? 1 : 0, then_row_done, &c,
                                         sizeof c, err, errlen);
    return store_batch_start (s, stmts, n, then_row_done, &c, sizeof c, err, errlen);
}

fr_status_t
store_chain_note_start (store_t *s, const char *id, const char *outcome, const char *detail, store_row_fn *fn,
                        void *arg, char *err, size_t errlen)
{
    const char *values [] = { id, store_worker_id (s), outcome, detail };
    store_stmt_t stmts [2] = {
        { "INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
          " SELECT id, generation, $2, $3, $4 FROM integrations WHERE id = $1 RETURNING generation",
          4, values, NULL, NULL },
    };
    return then_row_start (s, id, stmts, 2, 0, THEN_ROW_QUIET, fn, arg, err, errlen);
}

typedef struct {
    store_disconnected_fn *fn;
    void *arg;
    char id [IDENT_MAX + 1];
} disconnect_ctx_t;

static void
disconnect_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    disconnect_ctx_t *c = arg;
    store_disconnected_t d;
    store_row_t row;
    store_extra_t x;
    char why [256];
    memset (&d, 0, sizeof d);
    row_read (NULL, &row, &x);
    if (st == FR_OK && (n != 2 || PQntuples (results [0]) != 1 || !row_read (results [1], &row, &x))) {
        st = store_not_found (c->id, why, sizeof why);
        err = why;
    }
    if (st == FR_OK) {
        const PGresult *res = results [0];
        d.prev_status = store_text_at (res, 0, 0);
        d.provider = store_text_at (res, 0, 1);
        d.key_id = (int32_t) store_int_at (res, 0, 2);
        d.refresh_ct = store_bytea_at (res, 0, 3, &d.refresh_ct_len);
        d.access_ct = store_bytea_at (res, 0, 4, &d.access_ct_len);
        d.grant_sharers = (int) store_int_at (res, 0, 6);
    }
    c->fn (c->arg, st, st == FR_OK ? &d : NULL, st == FR_OK ? &row : NULL, st == FR_OK ? &x : NULL,
           st == FR_OK ? NULL : err);
    store_disconnected_clear (&d);
    store_row_clear (&row);
    store_extra_clear (&x);
}

fr_status_t
store_disconnect_start (store_t *s, const char *id, store_disconnected_fn *fn, void *arg, char *err, size_t errlen)
{
    /* the other integrations that may share the grant: those of id's home workspace
     * (ident_home_workspace_len), as the range [ws, ws with its last byte + 1) in byte
     * order; an id outside any workspace has none (NULL bounds match no row) */
    char ws [IDENT_MAX + 1], upper [IDENT_MAX + 1];
    size_t wlen = ident_home_workspace_len (id);
    snprintf (ws, sizeof ws, "%.*s", (int) wlen, id);
    memcpy (upper, ws, sizeof upper);
    if (wlen)
        upper [wlen - 1]++;               /* a separator: + 1 stays ASCII */
    const char *values [] = { id, store_worker_id (s), wlen ? ws : NULL, wlen ? upper : NULL };
    const char *ids [] = { id };
    store_stmt_t stmts [] = {
        { "WITH old AS (SELECT id, status, provider, key_id, refresh_token, access_token, refresh_fingerprint"
          "   FROM integrations WHERE id = $1 FOR UPDATE),"
          " u AS ("
          "  UPDATE integrations i SET status = 'disconnected', access_token = NULL, refresh_token = NULL,"
          "    access_expires_at = NULL, refresh_fingerprint = NULL, refresh_token_missing = false,"
          "    generation = i.generation + 1, disconnected_at = now(), lease_owner = NULL, lease_id = NULL,"
          "    lease_token = NULL, lease_expires_at = NULL, updated_at = now()"
          "  FROM old WHERE i.id = old.id AND old.status <> 'disconnected' RETURNING i.generation),"
          " c AS ("
          "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
          "  SELECT $1, u.generation, $2, 'disconnected', old.refresh_fingerprint,"
          "    'disconnected by request (was ' || old.status || '); stored tokens destroyed' FROM u, old"
          "  RETURNING generation)"
          " SELECT old.status, old.provider, old.key_id, old.refresh_token, old.access_token,"
          "  CASE WHEN EXISTS (SELECT 1 FROM c) THEN pg_notify('" STORE_NOTIFY_CHANNEL "', $2 || ' ' || $1) END,"
          /* a range scan of integrations_id_c; an active row holds a live grant (a refresh in
           * flight leaves it active), a needs_reconnect one none Ferrule can use */
          "  (SELECT count(*) FROM (SELECT 1 FROM integrations o"
          "    WHERE o.id COLLATE \"C\" >= $3::text AND o.id COLLATE \"C\" < $4::text AND o.id <> $1"
          "      AND o.provider = old.provider AND o.status = 'active' LIMIT 100) s)"
          " FROM old",
          4, values, NULL, NULL },
        /* in the same transaction: sees the row as the statement above left it */
        { ROW_SQL, 1, ids, NULL, NULL },
    };
    disconnect_ctx_t c = { fn, arg, "" };
    snprintf (c.id, sizeof c.id, "%s", id);
    /* the cache's notification stays inside (above), with the destruction of the tokens; the
     * event's wake-up follows the commit, as every other one does (STORE_NOTIFY_SQL, no ids) */
    return store_batch_start_notify (s, stmts, 2, NULL, 0, disconnect_done, &c, sizeof c, err, errlen);
}

void
store_disconnected_clear (store_disconnected_t *d)
{
    mem_free (d->prev_status);
    mem_free (d->provider);
    if (d->refresh_ct)
        mem_wipe (d->refresh_ct, d->refresh_ct_len);
    if (d->access_ct)
        mem_wipe (d->access_ct, d->access_ct_len);
    mem_free (d->refresh_ct);
    mem_free (d->access_ct);
    memset (d, 0, sizeof *d);
}

fr_status_t
store_reject_unrenewable_start (store_t *s, const char *id, int64_t generation, const char *message,
                                store_row_fn *fn, void *arg, char *err, size_t errlen)
{
    char gen [32];
    snprintf (gen, sizeof gen, "%" PRId64, generation);
    const char *values [] = { id, gen, message };
    store_stmt_t stmts [2] = {
        { "UPDATE integrations SET status = 'needs_reconnect', last_error_code = 'needs_reconnect',"
          "   last_error_message = $3, last_error_at = now(), updated_at = now()"
          " WHERE id = $1 AND generation = $2 AND status = 'active' AND refresh_token IS NULL"
          " RETURNING generation", 3, values, NULL,
          NULL },
    };
    /* a change of status like any other: the other workers drop their copy of the rejected token,
     * and the needs_reconnect event the trigger writes wakes the delivery (migration 015) */
    return then_row_start (s, id, stmts, 2, 0, THEN_ROW_NOTIFY, fn, arg, err, errlen);
}

fr_status_t
store_report_scope_start (store_t *s, const char *id, const char *scope, const char *detail, store_row_fn *fn,
                          void *arg, char *err, size_t errlen)
{
    const char *values [] = { id, scope, store_worker_id (s), detail };
    store_stmt_t stmts [2] = {
        { "WITH u AS (UPDATE integrations SET scope_report = $2, scope_report_at = now(), updated_at = now()"
          "   WHERE id = $1 RETURNING generation)"
          " INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
          " SELECT $1, u.generation, $3, 'scope_reported', $4 FROM u RETURNING generation", 4, values, NULL, NULL },
    };
    return then_row_start (s, id, stmts, 2, 1, THEN_ROW_EVENTS, fn, arg, err, errlen);
}

typedef struct {
    store_doctor_fn *fn;
    void *arg;
} doctor_ctx_t;

static void
doctor_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    doctor_ctx_t *c = arg;
    store_attempt_t a;
    store_row_t row;
    store_extra_t x;
    store_chain_t *rows = NULL;
    size_t count = 0;
    int found = 0;
    memset (&a, 0, sizeof a);
    row_read (NULL, &row, &x);
    if (st == FR_OK && n != 3) {
        st = FR_INTERNAL;
        err = "the doctor's reads returned an unexpected number of results";
    }
    if (st == FR_OK) {
        attempt_read (results [0], &a);
        found = row_read (results [1], &row, &x);
        rows = store_history_read (results [2], &count);
    }
    c->fn (c->arg, st, st == FR_OK ? &a : NULL, found ? &row : NULL, found ? &x : NULL, rows, count,
           st == FR_OK ? NULL : err);
    store_attempt_clear (&a);
    store_row_clear (&row);
    store_extra_clear (&x);
    store_chain_free (&rows, count);
}

fr_status_t
store_doctor_start (store_t *s, const char *id, int64_t history_limit, store_doctor_fn *fn, void *arg, char *err,
                    size_t errlen)
{
    char lim [32];
    snprintf (lim, sizeof lim, "%" PRId64, history_limit);
    const char *values [] = { id, lim };
    store_stmt_t stmts [] = {
        { LAST_ATTEMPT_SQL, 1, values, NULL, NULL },
        { ROW_SQL, 1, values, NULL, NULL },
        { STORE_HISTORY_SQL, 2, values, NULL, NULL },
    };
    doctor_ctx_t c = { fn, arg };
    return store_batch_start (s, stmts, 3, doctor_done, &c, sizeof c, err, errlen);
}

/* The count is REKEY_COUNT_SQL's (migrations/rekey.h), in ranges of integrations' blocks. */

typedef struct {
    store_keystats_fn *fn;
    store_keystats_range_fn *range_fn;
    void *arg;
} keystats_ctx_t;

static void
keystats_claim_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    keystats_ctx_t *c = arg;
    if (st == FR_OK && (n != 1 || PQntuples (results [0]) != 1)) {
        st = FR_INTERNAL;
        err = "the key count's claim returned no row";
    }
    if (st != FR_OK) {
        c->fn (c->arg, st, 0, 0, 0, 0, err);
        return;
    }
    int counted = strcmp (PQgetvalue (results [0], 0, 1), "t") == 0;
    c->fn (c->arg, FR_OK, strcmp (PQgetvalue (results [0], 0, 0), "t") == 0, counted,
           counted ? store_int_at (results [0], 0, 2) : 0, counted ? store_int_at (results [0], 0, 3) : 0, NULL);
}

fr_status_t
store_keystats_claim_start (store_t *s, int32_t current_key_id, int64_t interval_ms, store_keystats_fn *fn,
                            void *arg, char *err, size_t errlen)
{
    char id [16], interval [24], claim [24];
    snprintf (id, sizeof id, "%" PRId32, current_key_id);
    snprintf (interval, sizeof interval, "%" PRId64, interval_ms);
    snprintf (claim, sizeof claim, "%d", STORE_KEYSTATS_CLAIM_S);
    const char *values [] = { id, store_worker_id (s), interval, claim };
    /* the outer read sees the row as it was before the claim: the last count. k records the key
       this worker seals with for "ferrule-migrate rekey"'s guard (migration 023), live for two
       intervals: the next claim comes one interval later */
    store_stmt_t stmt = {
        "WITH k AS (INSERT INTO worker_keys (key_id, seen_at, live_until)"
        "  VALUES ($1::integer, now (), now () + 2 * $3::bigint * interval '1 millisecond')"
        "  ON CONFLICT (key_id) DO UPDATE SET seen_at = excluded.seen_at,"
        "    live_until = greatest (worker_keys.live_until, excluded.live_until)),"
        " c AS (UPDATE key_stats SET walker = $2, walk_until = now () + $4::bigint * interval '1 second'"
        "  WHERE (counted_at IS NULL OR counted_at < now () - $3::bigint * interval '1 millisecond'"
        "         OR key_id IS DISTINCT FROM $1::integer)"
        "    AND (walk_until IS NULL OR walk_until < now () OR walker = $2) RETURNING 1)"
        " SELECT EXISTS (SELECT 1 FROM c), key_id IS NOT DISTINCT FROM $1::integer AND counted_at IS NOT NULL,"
        "   COALESCE (integrations, 0), COALESCE (connects, 0) FROM key_stats",
        4, values, NULL, NULL };
    keystats_ctx_t c = { fn, NULL, arg };
    return store_batch_start (s, &stmt, 1, keystats_claim_done, &c, sizeof c, err, errlen);
}

static void
keystats_range_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    keystats_ctx_t *c = arg;
    /* the claim's renewal may find none: another worker took it after this one's lapsed, and this
     * walk's result is still good for this worker's gauge */
    if (st == FR_OK && (n != 3 || PQntuples (results [0]) != 1 || PQntuples (results [1]) != 1)) {
        st = FR_INTERNAL;
        err = "the key count's range returned no row";
    }
    c->range_fn (c->arg, st, st == FR_OK ? store_int_at (results [0], 0, 0) : 0,
                 st == FR_OK ? store_int_at (results [1], 0, 0) : 0, st == FR_OK ? NULL : err);
}

fr_status_t
store_keystats_range_start (store_t *s, int32_t current_key_id, int64_t from, int64_t count,
                            store_keystats_range_fn *fn, void *arg, char *err, size_t errlen)
{
    char id [16], lo [40], hi [40], claim [24];
    snprintf (id, sizeof id, "%" PRId32, current_key_id);
    snprintf (lo, sizeof lo, "(%" PRId64 ",0)", from);
    snprintf (hi, sizeof hi, "(%" PRId64 ",0)", from + count);
    snprintf (claim, sizeof claim, "%d", STORE_KEYSTATS_CLAIM_S);
    const char *values [] = { id, lo, hi, store_worker_id (s), claim };
    /* a TID range scan, each range its own snapshot: a row updated during the walk may move to a
     * block already read (missed by this count) or to one ahead (counted twice). Good enough for
     * a gauge of a rotation's progress; "ferrule-migrate rekey" is the consistent check */
    store_stmt_t stmts [] = {
        { "SELECT count(*) FROM integrations WHERE ctid >= $2::tid AND ctid < $3::tid AND key_id <> $1::integer"
          "   AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)", 3, values, NULL, NULL },
        { "SELECT pg_relation_size ('integrations') / current_setting ('block_size')::bigint", 0, NULL, NULL, NULL },
        { "UPDATE key_stats SET walk_until = now () + $2::bigint * interval '1 second' WHERE walker = $1 RETURNING 1",
          2, values + 3, NULL, NULL },
    };
    keystats_ctx_t c = { NULL, fn, arg };
    return store_batch_start (s, stmts, 3, keystats_range_done, &c, sizeof c, err, errlen);
}

static void
keystats_publish_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    keystats_ctx_t *c = arg;
    if (st == FR_OK && (n != 1 || PQntuples (results [0]) != 1)) {
        st = FR_INTERNAL;
        err = "the key count's end returned no row";
    }
    c->fn (c->arg, st, 1, st == FR_OK, st == FR_OK ? store_int_at (results [0], 0, 0) : 0,
           st == FR_OK ? store_int_at (results [0], 0, 1) : 0, st == FR_OK ? NULL : err);
}

fr_status_t
store_keystats_publish_start (store_t *s, int32_t current_key_id, int64_t integrations, store_keystats_fn *fn,
                              void *arg, char *err, size_t errlen)
{
    char id [16], n [24];
    snprintf (id, sizeof id, "%" PRId32, current_key_id);
    snprintf (n, sizeof n, "%" PRId64, integrations);
    const char *values [] = { id, store_worker_id (s), n };
    store_stmt_t stmt = {
        "WITH p AS (SELECT count(*) AS n FROM pending_authorizations WHERE key_id <> $1::integer"
        "             AND code_verifier IS NOT NULL AND used_at IS NULL AND expires_at > now ()),"
        " u AS (UPDATE key_stats SET key_id = $1::integer, integrations = $3::bigint, connects = (SELECT n FROM p),"
        "       counted_at = now (), walker = NULL, walk_until = NULL WHERE walker = $2 RETURNING 1)"
        " SELECT $3::bigint, n FROM p",
        3, values, NULL, NULL };
    keystats_ctx_t c = { fn, NULL, arg };
    return store_batch_start (s, &stmt, 1, keystats_publish_done, &c, sizeof c, err, errlen);
}
