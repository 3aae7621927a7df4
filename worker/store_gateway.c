/* store_gateway.c - the gateway operations' statements: pending_authorizations read for an
 * attempt, gateway_retry_tokens, gateway_dashboard_links, gateway_api_keys, and the workspace
 * listing of integrations. Each is one round trip, bounded by an index and a LIMIT. */
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

fr_status_t
store_gw_attempt (store_t *s, const char *state_hash, store_gw_attempt_t *a, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { state_hash };
    memset (a, 0, sizeof *a);
    PGresult *res = store_exec (s,
        "SELECT p.integration_id, p.provider, p.redirect_uri, array_to_string (p.requested_scopes, ' '), p.return_to,"
        "  p.outcome, p.used_at IS NOT NULL, p.expires_at < now (), p.retry_issued, i.status,"
        "  coalesce (i.refresh_token_missing OR NOT (i.scopes @> p.requested_scopes), false),"
        "  array_to_string (ARRAY (SELECT unnest (p.requested_scopes) EXCEPT SELECT unnest (i.scopes)), ' ')"
        " FROM pending_authorizations p LEFT JOIN integrations i ON i.id = p.integration_id"
        " WHERE p.state_hash = $1",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "no connect attempt has this state");
        PQclear (res);
        return FR_NOT_FOUND;
    }
    a->integration = text_or_empty (res, 0, 0);
    a->provider = text_or_empty (res, 0, 1);
    a->redirect_uri = text_or_empty (res, 0, 2);
    a->scopes = text_or_empty (res, 0, 3);
    a->return_to = store_text_at (res, 0, 4);
    a->outcome = store_text_at (res, 0, 5);
    a->used = store_bool_at (res, 0, 6);
    a->expired = store_bool_at (res, 0, 7);
    a->retry_issued = store_bool_at (res, 0, 8);
    a->status = store_text_at (res, 0, 9);
    a->short_grant = store_bool_at (res, 0, 10);
    a->missing_scopes = text_or_empty (res, 0, 11);
    PQclear (res);
    return FR_OK;
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

fr_status_t
store_gw_retry_issue (store_t *s, const char *state_hash, const char *token_hash, int64_t ttl_s, int64_t *expires_at,
                      char *err, size_t errlen)
{
    fr_status_t st;
    char ttl [24];
    snprintf (ttl, sizeof ttl, "%" PRId64, ttl_s);
    const char *values [] = { state_hash, token_hash, ttl };
    *expires_at = 0;
    /* once per attempt: the flag is set in the statement that stores the token */
    PGresult *res = store_exec (s,
        "WITH c AS (UPDATE pending_authorizations SET retry_issued = true WHERE state_hash = $1 AND NOT retry_issued"
        "           RETURNING integration_id, provider, redirect_uri, requested_scopes, return_to)"
        " INSERT INTO gateway_retry_tokens (token_hash, state_hash, integration_id, provider, redirect_uri,"
        "   requested_scopes, return_to, expires_at)"
        " SELECT $2, $1, integration_id, provider, redirect_uri, requested_scopes, return_to,"
        "   now () + $3::integer * interval '1 second' FROM c"
        " RETURNING extract (epoch FROM expires_at)::bigint",
        3, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    int issued = PQntuples (res) == 1;
    if (issued)
        *expires_at = store_int_at (res, 0, 0);
    PQclear (res);
    if (!issued) {
        snprintf (err, errlen, "a retry token was already issued for this connect attempt");
        return FR_STATE_INVALID;
    }
    return FR_OK;
}

fr_status_t
store_gw_retry_peek (store_t *s, const char *token_hash, char **integration, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { token_hash };
    *integration = NULL;
    PGresult *res = store_exec (s,
        "SELECT integration_id FROM gateway_retry_tokens"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now ()",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 1)
        *integration = text_or_empty (res, 0, 0);
    PQclear (res);
    if (!*integration) {
        snprintf (err, errlen, "this retry link expired or was already used");
        return FR_NOT_FOUND;
    }
    return FR_OK;
}

fr_status_t
store_gw_retry_take (store_t *s, const char *token_hash, store_gw_retry_t *r, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { token_hash };
    memset (r, 0, sizeof *r);
    PGresult *res = store_exec (s,
        "UPDATE gateway_retry_tokens SET used_at = now ()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now ()"
        " RETURNING integration_id, provider, redirect_uri, array_to_string (requested_scopes, ' '), return_to",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "this retry link expired or was already used");
        PQclear (res);
        return FR_STATE_INVALID;
    }
    r->integration = text_or_empty (res, 0, 0);
    r->provider = text_or_empty (res, 0, 1);
    r->redirect_uri = text_or_empty (res, 0, 2);
    r->scopes = text_or_empty (res, 0, 3);
    r->return_to = store_text_at (res, 0, 4);
    PQclear (res);
    return FR_OK;
}

void
store_gw_retry_clear (store_gw_retry_t *r)
{
    mem_free (r->integration);
    mem_free (r->provider);
    mem_free (r->redirect_uri);
    mem_free (r->scopes);
    mem_free (r->return_to);
    memset (r, 0, sizeof *r);
}

fr_status_t
store_gw_workspace (store_t *s, const char *prefix, int max, store_gw_workspace_t *out, char *err, size_t errlen)
{
    fr_status_t st;
    char upper [IDENT_MAX + 1], limit [16];
    memset (out, 0, sizeof *out);
    size_t len = strlen (prefix);
    if (len == 0 || len > IDENT_MAX || max < 1) {
        snprintf (err, errlen, "a workspace prefix must be 1 to %d characters", IDENT_MAX);
        return FR_BAD_REQUEST;
    }
    /* ids starting with prefix are those in [prefix, prefix with its last byte + 1) in byte order
       (ids are ASCII: the last byte is at most 'z', so + 1 stays ASCII) */
    memcpy (upper, prefix, len + 1);
    upper [len - 1]++;
    snprintf (limit, sizeof limit, "%d", max + 1);
    const char *values [] = { prefix, upper, limit };
    /* an ordered range scan of integrations_id_c stopped by the LIMIT; no token column */
    PGresult *res = store_exec (s,
        "SELECT id, provider, status, extract (epoch FROM last_refresh_at)::bigint, last_error_code,"
        "  extract (epoch FROM updated_at)::bigint, refresh_token_missing, scope_report,"
        "  array_to_string (scopes, ' ')"
        " FROM integrations WHERE id COLLATE \"C\" >= $1 AND id COLLATE \"C\" < $2"
        " ORDER BY id COLLATE \"C\" LIMIT $3::integer",
        3, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    int rows = PQntuples (res);
    out->truncated = rows > max;
    out->count = (size_t) (rows > max ? max : rows);
    out->items = out->count ? mem_alloc (out->count * sizeof *out->items) : NULL;
    for (size_t i = 0; i < out->count; i++) {
        store_gw_listed_t *e = &out->items [i];
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
    PQclear (res);
    return FR_OK;
}

void
store_gw_workspace_clear (store_gw_workspace_t *ws)
{
    for (size_t i = 0; i < ws->count; i++) {
        store_gw_listed_t *e = &ws->items [i];
        mem_free (e->id);
        mem_free (e->provider);
        mem_free (e->status);
        mem_free (e->last_error);
        mem_free (e->scopes);
        mem_free (e->scope_report);
    }
    mem_free (ws->items);
    memset (ws, 0, sizeof *ws);
}

fr_status_t
store_gw_link_issue (store_t *s, const char *token_hash, const char *workspace, int64_t ttl_s, int64_t *expires_at,
                     char *err, size_t errlen)
{
    fr_status_t st;
    char ttl [24];
    snprintf (ttl, sizeof ttl, "%" PRId64, ttl_s);
    const char *values [] = { token_hash, workspace, ttl };
    *expires_at = 0;
    PGresult *res = store_exec (s,
        "INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)"
        " VALUES ($1, $2, now () + $3::integer * interval '1 second')"
        " RETURNING extract (epoch FROM expires_at)::bigint",
        3, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 1)
        *expires_at = store_int_at (res, 0, 0);
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_gw_link_take (store_t *s, const char *token_hash, char **workspace, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { token_hash };
    *workspace = NULL;
    PGresult *res = store_exec (s,
        "UPDATE gateway_dashboard_links SET used_at = now ()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now () RETURNING workspace",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 1)
        *workspace = text_or_empty (res, 0, 0);
    PQclear (res);
    if (!*workspace) {
        snprintf (err, errlen, "this dashboard link expired or was already used");
        return FR_STATE_INVALID;
    }
    return FR_OK;
}

fr_status_t
store_gw_apikey_create (store_t *s, const char *key_hash, const char *workspace, const char *name, const char *prefix,
                        int max_live, store_gw_apikey_t *k, char *err, size_t errlen)
{
    fr_status_t st;
    char max [16];
    snprintf (max, sizeof max, "%d", max_live);
    const char *values [] = { key_hash, workspace, name, prefix, max };
    memset (k, 0, sizeof *k);
    PGresult *res = store_exec (s,
        "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)"
        " SELECT $1, $2, $3, $4"
        " WHERE (SELECT count (*) FROM gateway_api_keys WHERE workspace = $2 AND revoked_at IS NULL) < $5::integer"
        " RETURNING id, extract (epoch FROM created_at)::bigint",
        5, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "workspace \"%s\" already has %d API keys", workspace, max_live);
        PQclear (res);
        return FR_TOO_LARGE;
    }
    k->key_id = store_int_at (res, 0, 0);
    k->created_at = store_int_at (res, 0, 1);
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_gw_apikey_list (store_t *s, const char *workspace, int limit, store_gw_apikeys_t *out, char *err, size_t errlen)
{
    fr_status_t st;
    char lim [16];
    snprintf (lim, sizeof lim, "%d", limit);
    const char *values [] = { workspace, lim };
    memset (out, 0, sizeof *out);
    PGresult *res = store_exec (s,
        "SELECT id, name, prefix, extract (epoch FROM created_at)::bigint, extract (epoch FROM last_used_at)::bigint,"
        "  extract (epoch FROM revoked_at)::bigint"
        " FROM gateway_api_keys WHERE workspace = $1 ORDER BY created_at DESC, id DESC LIMIT $2::integer",
        2, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    int rows = PQntuples (res);
    out->count = (size_t) rows;
    out->items = rows ? mem_alloc ((size_t) rows * sizeof *out->items) : NULL;
    for (int i = 0; i < rows; i++) {
        store_gw_apikey_t *k = &out->items [i];
        k->key_id = store_int_at (res, i, 0);
        k->name = text_or_empty (res, i, 1);
        k->prefix = text_or_empty (res, i, 2);
        k->created_at = store_int_at (res, i, 3);
        k->last_used_at = store_int_at (res, i, 4);
        k->revoked_at = store_int_at (res, i, 5);
    }
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_gw_apikey_revoke (store_t *s, const char *workspace, int64_t key_id, store_gw_apikey_t *k, char *err,
                        size_t errlen)
{
    fr_status_t st;
    char id [24];
    snprintf (id, sizeof id, "%" PRId64, key_id);
    const char *values [] = { id, workspace };
    memset (k, 0, sizeof *k);
    PGresult *res = store_exec (s,
        "UPDATE gateway_api_keys SET revoked_at = now () WHERE id = $1::bigint AND workspace = $2 AND revoked_at IS NULL"
        " RETURNING name, prefix",
        2, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "workspace \"%s\" has no live API key %s", workspace, id);
        PQclear (res);
        return FR_NOT_FOUND;
    }
    k->key_id = key_id;
    k->name = text_or_empty (res, 0, 0);
    k->prefix = text_or_empty (res, 0, 1);
    PQclear (res);
    return FR_OK;
}

fr_status_t
store_gw_apikey_verify (store_t *s, const char *key_hash, store_gw_apikey_t *k, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { key_hash };
    memset (k, 0, sizeof *k);
    /* last_used_at is written at most once a minute per key: the check stays a read */
    PGresult *res = store_exec (s,
        "WITH k AS (SELECT id, workspace, name FROM gateway_api_keys WHERE key_hash = $1 AND revoked_at IS NULL),"
        " u AS (UPDATE gateway_api_keys SET last_used_at = now () WHERE key_hash = $1 AND revoked_at IS NULL"
        "       AND (last_used_at IS NULL OR last_used_at < now () - interval '60 seconds') RETURNING 1)"
        " SELECT k.id, k.workspace, k.name, (SELECT count (*) FROM u) FROM k",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) != 1) {
        snprintf (err, errlen, "the API key is unknown or revoked");
        PQclear (res);
        return FR_NOT_FOUND;
    }
    k->key_id = store_int_at (res, 0, 0);
    k->workspace = text_or_empty (res, 0, 1);
    k->name = text_or_empty (res, 0, 2);
    PQclear (res);
    return FR_OK;
}

void
store_gw_apikey_clear (store_gw_apikey_t *k)
{
    mem_free (k->workspace);
    mem_free (k->name);
    mem_free (k->prefix);
    memset (k, 0, sizeof *k);
}

void
store_gw_apikeys_clear (store_gw_apikeys_t *list)
{
    for (size_t i = 0; i < list->count; i++)
        store_gw_apikey_clear (&list->items [i]);
    mem_free (list->items);
    memset (list, 0, sizeof *list);
}
