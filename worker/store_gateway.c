/* store_gateway.c - the gateway operations' statements: pending_authorizations read for an
 * attempt, gateway_retry_tokens, gateway_dashboard_links, gateway_api_keys, and the workspace
 * listing of integrations. Each is one statement sent as a batch of its own (one round trip,
 * nothing the loop waits for), bounded by an index and a LIMIT; those that issue a retry token or
 * a dashboard link first collect stale ones (GW_COLLECT). */
#include "store_gateway.h"
#include "store_internal.h"
#include "ident.h"
#include "mem.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* A text column as a copy, "" for SQL NULL: for fields whose reply shows an empty value. */
static char *
text_or_empty (const PGresult *res, int row, int col)
{
    char *t = store_text_at (res, row, col);
    return t ? t : mem_strdup ("");
}

/* What a gateway batch's end needs: the caller's function, and what a statement that returned no
 * row means. */
typedef struct {
    union {
        store_gw_attempt_fn *attempt;
        store_gw_issued_fn *issued;
        store_gw_text_fn *text;
        store_gw_retry_fn *retry;
        store_gw_workspace_fn *workspace;
        store_gw_apikey_fn *apikey;
        store_gw_apikeys_fn *apikeys;
    } fn;
    void *arg;
    fr_status_t refusal;                  /* no row returned: this status */
    char refused [256];                   /* and this message */
    int max;                              /* rows of a listing */
    int64_t key_id;                       /* the key a revocation names */
} gw_ctx_t;

/* The runtime role may not DELETE: connect states, retry tokens and dashboard links a day past
 * their expiry go through the schema owner's function (migrations/004, 018), a bounded number per
 * call. A statement of its own before the insert, in its transaction: inside the retry token's
 * statement, which updates a connect state, its delete of that same row would fail the statement. */
#define GW_COLLECT "SELECT ferrule_gc_pending_authorizations ()"

/* Sends one statement (after GW_COLLECT when collect) as a batch whose end is done, with a copy
 * of c. */
static fr_status_t
gw_start_ex (store_t *s, int collect, const char *sql, int n, const char *const *values, store_batch_fn *done,
             const gw_ctx_t *c, char *err, size_t errlen)
{
    store_stmt_t stmts [] = { { GW_COLLECT, 0, NULL, NULL, NULL }, { sql, n, values, NULL, NULL } };
    return store_batch_start (s, stmts + !collect, collect ? 2 : 1, done, c, sizeof *c, err, errlen);
}

static fr_status_t
gw_start (store_t *s, const char *sql, int n, const char *const *values, store_batch_fn *done, const gw_ctx_t *c,
          char *err, size_t errlen)
{
    return gw_start_ex (s, 0, sql, n, values, done, c, err, errlen);
}

/* The statement's rows (the batch's last: GW_COLLECT's go unread); NULL when the batch failed. */
static const PGresult *
gw_result (fr_status_t st, PGresult **results, size_t n)
{
    return st == FR_OK && (n == 1 || n == 2) ? results [n - 1] : NULL;
}

/* The statement's one row (row 0 of the result); NULL when the batch failed (*st and *err as they
 * came) or when it returned no row (*st and *err then say the refusal). */
static const PGresult *
gw_row (const gw_ctx_t *c, fr_status_t *st, const char **err, PGresult **results, size_t n)
{
    const PGresult *res = gw_result (*st, results, n);
    if (res && PQntuples (res) != 1) {
        *st = c->refusal;
        *err = c->refused;
        return NULL;
    }
    return res;
}

/* --- connect attempts and retry tokens ------------------------------------------------------- */

static void
attempt_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    store_gw_attempt_t a = { 0 };
    if (res) {
        a.integration = text_or_empty (res, 0, 0);
        a.provider = text_or_empty (res, 0, 1);
        a.redirect_uri = text_or_empty (res, 0, 2);
        a.scopes = text_or_empty (res, 0, 3);
        a.return_to = store_text_at (res, 0, 4);
        a.outcome = store_text_at (res, 0, 5);
        a.used = store_bool_at (res, 0, 6);
        a.expired = store_bool_at (res, 0, 7);
        a.retry_issued = store_bool_at (res, 0, 8);
        a.status = store_text_at (res, 0, 9);
        a.short_grant = store_bool_at (res, 0, 10);
        a.missing_scopes = text_or_empty (res, 0, 11);
        a.other_browser = store_bool_at (res, 0, 12);
    }
    c->fn.attempt (c->arg, st, st == FR_OK ? &a : NULL, st == FR_OK ? NULL : err);
}

fr_status_t
store_gw_attempt_start (store_t *s, const char *state_hash, const char *browser_hash, store_gw_attempt_fn *fn,
                        void *arg, char *err, size_t errlen)
{
    const char *values [] = { state_hash, browser_hash && *browser_hash ? browser_hash : NULL };
    gw_ctx_t c = { .fn.attempt = fn, .arg = arg, .refusal = FR_NOT_FOUND,
                   .refused = "no connect attempt has this state" };
    return gw_start (s,
        "SELECT p.integration_id, p.provider, p.redirect_uri, array_to_string (p.requested_scopes, ' '), p.return_to,"
        "  p.outcome, p.used_at IS NOT NULL, p.expires_at < now (), p.retry_issued, i.status,"
        "  coalesce (i.refresh_token_missing OR NOT (i.scopes @> p.requested_scopes), false),"
        "  array_to_string (ARRAY (SELECT unnest (p.requested_scopes) EXCEPT SELECT unnest (i.scopes)), ' '),"
        "  p.browser_hash IS NOT NULL AND p.browser_hash IS DISTINCT FROM $2::text"
        " FROM pending_authorizations p LEFT JOIN integrations i ON i.id = p.integration_id"
        " WHERE p.state_hash = $1",
        2, values, attempt_done, &c, err, errlen);
}

void
store_gw_attempt_clear (store_gw_attempt_t *a)
{
    mem_free (a->integration);
    mem_free (a->provider);
    mem_free (a->redirect_uri);
    mem_free (a->scopes);
    mem_free (a->return_to);
    mem_free (a->outcome);
    mem_free (a->status);
    mem_free (a->missing_scopes);
    memset (a, 0, sizeof *a);
}

/* A statement returning the expiry of what it stored. */
static void
issued_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    int64_t expires_at = res ? store_int_at (res, 0, 0) : 0;
    c->fn.issued (c->arg, st, expires_at, st == FR_OK ? NULL : err);
}

fr_status_t
store_gw_retry_issue_start (store_t *s, const char *state_hash, const char *token_hash, const char *browser_hash,
                            int64_t ttl_s, store_gw_issued_fn *fn, void *arg, char *err, size_t errlen)
{
    char ttl [24];
    snprintf (ttl, sizeof ttl, "%" PRId64, ttl_s);
    const char *values [] = { state_hash, token_hash, ttl, browser_hash && *browser_hash ? browser_hash : NULL };
    gw_ctx_t c = { .fn.issued = fn, .arg = arg, .refusal = FR_STATE_INVALID,
                   .refused = "a retry token was already issued for this connect attempt" };
    /* once per attempt: the flag is set in the statement that stores the token; a bound attempt's
       only for the browser that started it */
    return gw_start_ex (s, 1,
        "WITH c AS (UPDATE pending_authorizations SET retry_issued = true WHERE state_hash = $1 AND NOT retry_issued"
        "           AND (browser_hash IS NULL OR browser_hash = $4::text)"
        "           RETURNING integration_id, provider, redirect_uri, requested_scopes, return_to)"
        " INSERT INTO gateway_retry_tokens (token_hash, state_hash, integration_id, provider, redirect_uri,"
        "   requested_scopes, return_to, expires_at)"
        " SELECT $2, $1, integration_id, provider, redirect_uri, requested_scopes, return_to,"
        "   now () + $3::integer * interval '1 second' FROM c"
        " RETURNING extract (epoch FROM expires_at)::bigint",
        4, values, issued_done, &c, err, errlen);
}

/* A statement returning one text column of one row. */
static void
text_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    char *text = res ? text_or_empty (res, 0, 0) : NULL;
    c->fn.text (c->arg, st, text, st == FR_OK ? NULL : err);
    mem_free (text);
}

static void
retry_peek_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    store_gw_retry_t r = { 0 };
    if (res) {
        r.integration = text_or_empty (res, 0, 0);
        r.provider = text_or_empty (res, 0, 1);
        r.redirect_uri = text_or_empty (res, 0, 2);
        r.scopes = text_or_empty (res, 0, 3);
        r.return_to = store_text_at (res, 0, 4);
        r.bound = store_bool_at (res, 0, 5);
        r.other_browser = store_bool_at (res, 0, 6);
    }
    c->fn.retry (c->arg, st, st == FR_OK ? &r : NULL, st == FR_OK ? NULL : err);
    mem_free (r.integration);
    mem_free (r.provider);
    mem_free (r.redirect_uri);
    mem_free (r.scopes);
    mem_free (r.return_to);
}

fr_status_t
store_gw_retry_peek_start (store_t *s, const char *token_hash, const char *browser_hash, store_gw_retry_fn *fn,
                           void *arg, char *err, size_t errlen)
{
    const char *values [] = { token_hash, browser_hash && *browser_hash ? browser_hash : NULL };
    gw_ctx_t c = { .fn.retry = fn, .arg = arg, .refusal = FR_NOT_FOUND,
                   .refused = "this retry link expired or was already used" };
    return gw_start (s,
        "SELECT integration_id, provider, redirect_uri, array_to_string (requested_scopes, ' '), return_to,"
        "  EXISTS (SELECT 1 FROM pending_authorizations p WHERE p.state_hash = t.state_hash"
        "          AND p.browser_hash IS NOT NULL),"
        "  EXISTS (SELECT 1 FROM pending_authorizations p WHERE p.state_hash = t.state_hash"
        "          AND p.browser_hash IS NOT NULL AND p.browser_hash IS DISTINCT FROM $2::text)"
        " FROM gateway_retry_tokens t WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now ()",
        2, values, retry_peek_done, &c, err, errlen);
}

/* --- workspace listing --------------------------------------------------------------------- */

static void
workspace_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_result (st, results, n);
    store_gw_workspace_t ws = { 0 };
    int rows = res ? PQntuples (res) : 0;
    ws.truncated = rows > c->max;
    ws.count = (size_t) (rows > c->max ? c->max : rows);
    ws.items = ws.count ? mem_alloc (ws.count * sizeof *ws.items) : NULL;
    for (size_t i = 0; i < ws.count; i++) {
        store_gw_listed_t *e = &ws.items [i];
        int r = (int) i;
        e->id = text_or_empty (res, r, 0);
        e->provider = text_or_empty (res, r, 1);
        e->status = text_or_empty (res, r, 2);
        e->last_refresh_at = store_int_at (res, r, 3);
        e->last_error = store_text_at (res, r, 4);
        e->updated_at = store_int_at (res, r, 5);
        e->refresh_token_missing = store_bool_at (res, r, 6);
        e->scope_report = store_text_at (res, r, 7);
        e->scopes = text_or_empty (res, r, 8);
    }
    c->fn.workspace (c->arg, st, st == FR_OK ? &ws : NULL, st == FR_OK ? NULL : err);
    for (size_t i = 0; i < ws.count; i++) {
        store_gw_listed_t *e = &ws.items [i];
        mem_free (e->id);
        mem_free (e->provider);
        mem_free (e->status);
        mem_free (e->last_error);
        mem_free (e->scopes);
        mem_free (e->scope_report);
    }
    mem_free (ws.items);
}

fr_status_t
store_gw_workspace_start (store_t *s, const char *prefix, int max, store_gw_workspace_fn *fn, void *arg, char *err,
                          size_t errlen)
{
    char upper [IDENT_MAX + 1], limit [16];
    size_t len = strlen (prefix);
    if (!ident_workspace_valid (prefix, len) || max < 1) {
        snprintf (err, errlen, "a workspace prefix must be 1 to %d characters and end with one of " IDENT_SEPARATORS,
                  IDENT_MAX);
        return FR_BAD_REQUEST;
    }
    /* ids starting with prefix are those in [prefix, prefix with its last byte + 1) in byte order
       (ids are ASCII: the last byte is at most 'z', so + 1 stays ASCII) */
    memcpy (upper, prefix, len + 1);
    upper [len - 1]++;
    snprintf (limit, sizeof limit, "%d", max + 1);
    const char *values [] = { prefix, upper, limit };
    gw_ctx_t c = { .fn.workspace = fn, .arg = arg, .max = max };
    /* an ordered range scan of integrations_id_c stopped by the LIMIT; no token column */
    return gw_start (s,
        "SELECT id, provider, status, extract (epoch FROM last_refresh_at)::bigint, last_error_code,"
        "  extract (epoch FROM updated_at)::bigint, refresh_token_missing, scope_report,"
        "  array_to_string (scopes, ' ')"
        " FROM integrations WHERE id COLLATE \"C\" >= $1 AND id COLLATE \"C\" < $2"
        " ORDER BY id COLLATE \"C\" LIMIT $3::integer",
        3, values, workspace_done, &c, err, errlen);
}

/* --- dashboard links ------------------------------------------------------------------------ */

fr_status_t
store_gw_link_issue_start (store_t *s, const char *token_hash, const char *workspace, int64_t ttl_s,
                           store_gw_issued_fn *fn, void *arg, char *err, size_t errlen)
{
    char ttl [24];
    snprintf (ttl, sizeof ttl, "%" PRId64, ttl_s);
    const char *values [] = { token_hash, workspace, ttl };
    gw_ctx_t c = { .fn.issued = fn, .arg = arg, .refusal = FR_INTERNAL,       /* an INSERT ... VALUES: a row */
                   .refused = "the dashboard link was not stored" };
    return gw_start_ex (s, 1,
        "INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)"
        " VALUES ($1, $2, now () + $3::integer * interval '1 second')"
        " RETURNING extract (epoch FROM expires_at)::bigint",
        3, values, issued_done, &c, err, errlen);
}

fr_status_t
store_gw_link_take_start (store_t *s, const char *token_hash, store_gw_text_fn *fn, void *arg, char *err,
                          size_t errlen)
{
    const char *values [] = { token_hash };
    gw_ctx_t c = { .fn.text = fn, .arg = arg, .refusal = FR_STATE_INVALID,
                   .refused = "this dashboard link expired or was already used" };
    return gw_start (s,
        "UPDATE gateway_dashboard_links SET used_at = now ()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now () RETURNING workspace",
        1, values, text_done, &c, err, errlen);
}

/* --- API keys --------------------------------------------------------------------------------- */

static void
apikey_clear (store_gw_apikey_t *k)
{
    mem_free (k->workspace);
    mem_free (k->name);
    mem_free (k->prefix);
    memset (k, 0, sizeof *k);
}

static void
apikey_create_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    store_gw_apikey_t k = { 0 };
    if (res) {
        k.key_id = store_int_at (res, 0, 0);
        k.created_at = store_int_at (res, 0, 1);
    }
    c->fn.apikey (c->arg, st, st == FR_OK ? &k : NULL, st == FR_OK ? NULL : err);
}

fr_status_t
store_gw_apikey_create_start (store_t *s, const char *key_hash, const char *workspace, const char *name,
                              const char *prefix, int max_live, store_gw_apikey_fn *fn, void *arg,
                              char *err, size_t errlen)
{
    char max [16];
    snprintf (max, sizeof max, "%d", max_live);
    const char *values [] = { key_hash, workspace, name, prefix, max };
    gw_ctx_t c = { .fn.apikey = fn, .arg = arg, .refusal = FR_TOO_LARGE };
    snprintf (c.refused, sizeof c.refused, "workspace \"%s\" already has %d API keys", workspace, max_live);
    /* Each create counts the workspace's live keys in its own transaction, so two at once (the
     * worker's two connections, or two workers of one partition) both counted one short of the
     * cap and both inserted. A transaction lock per workspace, taken first, makes them take
     * turns; it ends with the transaction. (Two workspaces whose names hash alike only wait for
     * each other.) */
    store_stmt_t stmts [] = {
        { "SELECT pg_advisory_xact_lock (hashtextextended ('ferrule.gateway_api_keys ' || $1, 0))", 1, values + 1,
          NULL, NULL },
        { "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)"
          " SELECT $1, $2, $3, $4"
          " WHERE (SELECT count (*) FROM gateway_api_keys WHERE workspace = $2 AND revoked_at IS NULL) < $5::integer"
          " RETURNING id, extract (epoch FROM created_at)::bigint", 5, values, NULL, NULL },
    };
    return store_batch_start (s, stmts, 2, apikey_create_done, &c, sizeof c, err, errlen);
}

static void
apikey_list_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_result (st, results, n);
    store_gw_apikeys_t list = { 0 };
    int rows = res ? PQntuples (res) : 0;
    list.count = (size_t) rows;
    list.items = rows ? mem_alloc ((size_t) rows * sizeof *list.items) : NULL;
    for (int i = 0; i < rows; i++) {
        store_gw_apikey_t *k = &list.items [i];
        memset (k, 0, sizeof *k);
        k->key_id = store_int_at (res, i, 0);
        k->name = text_or_empty (res, i, 1);
        k->prefix = text_or_empty (res, i, 2);
        k->created_at = store_int_at (res, i, 3);
        k->last_used_at = store_int_at (res, i, 4);
        k->revoked_at = store_int_at (res, i, 5);
    }
    c->fn.apikeys (c->arg, st, st == FR_OK ? &list : NULL, st == FR_OK ? NULL : err);
    for (size_t i = 0; i < list.count; i++)
        apikey_clear (&list.items [i]);
    mem_free (list.items);
}

fr_status_t
store_gw_apikey_list_start (store_t *s, const char *workspace, int limit, store_gw_apikeys_fn *fn, void *arg,
                            char *err, size_t errlen)
{
    char lim [16];
    snprintf (lim, sizeof lim, "%d", limit);
    const char *values [] = { workspace, lim };
    gw_ctx_t c = { .fn.apikeys = fn, .arg = arg };
    return gw_start (s,
        "SELECT id, name, prefix, extract (epoch FROM created_at)::bigint, extract (epoch FROM last_used_at)::bigint,"
        "  extract (epoch FROM revoked_at)::bigint"
        " FROM gateway_api_keys WHERE workspace = $1 ORDER BY created_at DESC, id DESC LIMIT $2::integer",
        2, values, apikey_list_done, &c, err, errlen);
}

static void
apikey_revoke_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    store_gw_apikey_t k = { 0 };
    if (res) {
        k.key_id = c->key_id;
        k.name = text_or_empty (res, 0, 0);
        k.prefix = text_or_empty (res, 0, 1);
    }
    c->fn.apikey (c->arg, st, st == FR_OK ? &k : NULL, st == FR_OK ? NULL : err);
    apikey_clear (&k);
}

fr_status_t
store_gw_apikey_revoke_start (store_t *s, const char *workspace, int64_t key_id, store_gw_apikey_fn *fn, void *arg,
                              char *err, size_t errlen)
{
    char id [24];
    snprintf (id, sizeof id, "%" PRId64, key_id);
    const char *values [] = { id, workspace };
    gw_ctx_t c = { .fn.apikey = fn, .arg = arg, .refusal = FR_NOT_FOUND, .key_id = key_id };
    snprintf (c.refused, sizeof c.refused, "workspace \"%s\" has no live API key %" PRId64, workspace, key_id);
    return gw_start (s,
        "UPDATE gateway_api_keys SET revoked_at = now () WHERE id = $1::bigint AND workspace = $2 AND revoked_at IS NULL"
        " RETURNING name, prefix",
        2, values, apikey_revoke_done, &c, err, errlen);
}

static void
apikey_verify_done (void *arg, fr_status_t st, PGresult **results, size_t n, const char *err)
{
    gw_ctx_t *c = arg;
    const PGresult *res = gw_row (c, &st, &err, results, n);
    store_gw_apikey_t k = { 0 };
    if (res) {
        k.key_id = store_int_at (res, 0, 0);
        k.workspace = text_or_empty (res, 0, 1);
        k.name = text_or_empty (res, 0, 2);
    }
    c->fn.apikey (c->arg, st, st == FR_OK ? &k : NULL, st == FR_OK ? NULL : err);
    apikey_clear (&k);
}

fr_status_t
store_gw_apikey_verify_start (store_t *s, const char *key_hash, store_gw_apikey_fn *fn, void *arg, char *err,
                              size_t errlen)
{
    const char *values [] = { key_hash };
    gw_ctx_t c = { .fn.apikey = fn, .arg = arg, .refusal = FR_NOT_FOUND,
                   .refused = "the API key is unknown or revoked" };
    /* last_used_at is written at most once a minute per key: the check stays a read */
    return gw_start (s,
        "WITH k AS (SELECT id, workspace, name FROM gateway_api_keys WHERE key_hash = $1 AND revoked_at IS NULL),"
        " u AS (UPDATE gateway_api_keys SET last_used_at = now () WHERE key_hash = $1 AND revoked_at IS NULL"
        "       AND (last_used_at IS NULL OR last_used_at < now () - interval '60 seconds') RETURNING 1)"
        " SELECT k.id, k.workspace, k.name, (SELECT count (*) FROM u) FROM k",
        1, values, apikey_verify_done, &c, err, errlen);
}
