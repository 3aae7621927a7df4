/* gwops.c - the operations the gateway needs: connect attempts and retries, workspace listing,
 * dashboard links and API keys (gwops.h). Every statement here is one round trip on the
 * worker's connection, bounded by an index and a LIMIT, and touches no token column. */
#include "gwops.h"
#include "reply.h"
#include "store_internal.h"
#include "clock.h"
#include "codec.h"
#include "connect.h"
#include "crypto.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "ratelimit.h"
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_BYTES      32             /* retry tokens, link tokens and API keys: 256 bits */
#define MAX_TOKEN_LEN    128            /* what a caller may send back */
#define MAX_KEY_NAME     64
#define MAX_KEYS         100            /* live API keys per workspace */
#define KEY_PREFIX       "frk_"
#define KEY_SHOWN        12             /* "frk_" and 8 characters: tells keys apart in a list */

static void
hex_sha256 (const char *s, char out [65])
{
    static const char hex [] = "0123456789abcdef";
    unsigned char d [32];
    crypto_sha256 (s, strlen (s), d);
    for (int i = 0; i < 32; i++) {
        out [2 * i] = hex [d [i] >> 4];
        out [2 * i + 1] = hex [d [i] & 15];
    }
    out [64] = '\0';
}

static int64_t
col_int (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? 0 : strtoll (PQgetvalue (res, row, col), NULL, 10);
}

static const char *
col_str (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? NULL : PQgetvalue (res, row, col);
}

/* A printable string field of 1..max bytes: 1 copied into out (outlen > max), 0 absent (nothing
 * answered), -1 refused (answered). */
static int
arg_str (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
         char *out, size_t outlen)
{
    const char *s;
    size_t len;
    char message [160];
    int r = codec_get_str (root, key, &s, &len);
    if (r == 0)
        return 0;
    int ok = r == 1 && len >= 1 && len <= max && len < outlen;
    for (size_t i = 0; ok && i < len; i++)
        if ((unsigned char) s [i] < 0x20 || (unsigned char) s [i] >= 0x7f)
            ok = 0;
    if (!ok) {
        snprintf (message, sizeof message, "\"%s\" must be a string of 1 to %zu printable ASCII characters", key, max);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    memcpy (out, s, len);
    out [len] = '\0';
    return 1;
}

/* A required token-like field, answered when missing. */
static int
arg_required (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
              char *out, size_t outlen)
{
    int r = arg_str (w, job, root, key, max, out, outlen);
    if (r == 0) {
        char message [100];
        snprintf (message, sizeof message, "\"%s\" is required", key);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
    }
    return r == 1;
}

static void
reply_db_error (worker_t *w, const job_t *job, fr_status_t st, const char *err)
{
    reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
}

/* The workspace prefix of a request: its "integration" field. 1, or 0 when refused (answered). */
static int
arg_workspace (worker_t *w, const job_t *job, const msgpack_object *root, char out [IDENT_MAX + 1])
{
    const char *s;
    size_t len;
    if (codec_get_str (root, "integration", &s, &len) != 1 || !ident_valid (s, len)) {
        reply_error (w, job, FR_BAD_REQUEST,
                            "\"integration\" (the workspace prefix) must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                            NULL, -1);
        return 0;
    }
    memcpy (out, s, len);
    out [len] = '\0';
    return 1;
}

/* --- connect attempts and "Try again" ----------------------------------------------------- */

/* The outcomes after which a fresh connect of the same attempt is what the user needs. */
static int
outcome_retryable (const char *outcome)
{
    static const char *const list [] = { "code_expired_or_used", "access_denied", "invalid_scope",
                                         "no_refresh_token", "provider_unavailable", "state_invalid", NULL };
    for (int i = 0; outcome && list [i]; i++)
        if (strcmp (outcome, list [i]) == 0)
            return 1;
    return 0;
}

static void
op_attempt (worker_t *w, job_t *job, const msgpack_object *root)
{
    char state [257], state_hash [65], err [512];
    char *token = NULL;
    PGresult *res = NULL, *ins = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "state", 256, state, sizeof state))
        goto out;
    hex_sha256 (state, state_hash);
    const char *v1 [] = { state_hash };
    res = store_exec (w->store,
        "SELECT p.integration_id, p.provider, p.redirect_uri, array_to_string (p.requested_scopes, ' '), p.return_to,"
        "  p.outcome, p.used_at IS NOT NULL, p.expires_at < now (), p.retry_issued, i.status,"
        "  coalesce (i.refresh_token_missing OR NOT (i.scopes @> p.requested_scopes), false),"
        "  array_to_string (ARRAY (SELECT unnest (p.requested_scopes) EXCEPT SELECT unnest (i.scopes)), ' ')"
        " FROM pending_authorizations p LEFT JOIN integrations i ON i.id = p.integration_id"
        " WHERE p.state_hash = $1",
        1, v1, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        reply_error (w, job, FR_NOT_FOUND, "no connect attempt has this state",
                            "start again from Connect", -1);
        goto out;
    }
    const char *outcome = col_str (res, 0, 5);
    int used = PQgetvalue (res, 0, 6) [0] == 't';
    int expired = PQgetvalue (res, 0, 7) [0] == 't';
    int issued = PQgetvalue (res, 0, 8) [0] == 't';
    int short_grant = PQgetvalue (res, 0, 10) [0] == 't';
    /* a state that expired before its callback came, a failure the user can mend, or a connect
       that stored fewer scopes (or no refresh token) than asked */
    int retry = !issued && (outcome_retryable (outcome) || (!outcome && !used && expired)
                            || (!outcome && used) || (outcome && strcmp (outcome, "connected") == 0 && short_grant));
    int64_t retry_expires = 0;
    if (retry) {
        token = crypto_random_token (TOKEN_BYTES);
        if (!token) {
            reply_error (w, job, FR_INTERNAL, "could not draw random bytes for a retry token", NULL, -1);
            goto out;
        }
        char token_hash [65], ttl [16];
        hex_sha256 (token, token_hash);
        snprintf (ttl, sizeof ttl, "%d", GWOPS_RETRY_TTL_S);
        const char *v2 [] = { state_hash, token_hash, ttl };
        /* once per attempt: the flag is set in the statement that draws the token */
        ins = store_exec (w->store,
            "WITH c AS (UPDATE pending_authorizations SET retry_issued = true WHERE state_hash = $1 AND NOT retry_issued"
            "           RETURNING integration_id, provider, redirect_uri, requested_scopes, return_to)"
            " INSERT INTO gateway_retry_tokens (token_hash, state_hash, integration_id, provider, redirect_uri,"
            "   requested_scopes, return_to, expires_at)"
            " SELECT $2, $1, integration_id, provider, redirect_uri, requested_scopes, return_to,"
            "   now () + $3::integer * interval '1 second' FROM c"
            " RETURNING extract (epoch FROM expires_at)::bigint",
            3, v2, NULL, NULL, 1, &st, err, sizeof err);
        if (!ins) {
            reply_db_error (w, job, st, err);
            goto out;
        }
        if (PQntuples (ins) == 1)
            retry_expires = col_int (ins, 0, 0);
        else
            mem_free_secret (&token);       /* another gateway drew it first */
    }
    log_info (PQgetvalue (res, 0, 0), job->rid, "connect attempt read (outcome %s)%s", outcome ? outcome : "none",
              token ? "; a retry token was issued" : "");
    codec_builder_t *o = reply_begin (w, job, 1, 10);
    codec_kv_str (o, "integration", PQgetvalue (res, 0, 0));
    codec_kv_str (o, "provider", PQgetvalue (res, 0, 1));
    codec_kv_str (o, "redirect_uri", PQgetvalue (res, 0, 2));
    codec_kv_words (o, "scopes", PQgetvalue (res, 0, 3));
    codec_kv_str (o, "return_to", col_str (res, 0, 4));
    codec_kv_str (o, "outcome", outcome);
    codec_kv_str (o, "status", col_str (res, 0, 9));
    codec_kv_words (o, "missing_scopes", col_str (res, 0, 11) ? col_str (res, 0, 11) : "");
    codec_kv_str (o, "retry_token", token);
    codec_kv_time (o, "retry_expires_at", retry_expires);
    reply_send (w, job);
out:
    PQclear (res);
    PQclear (ins);
    mem_free_secret (&token);
}

static void
op_retry (worker_t *w, job_t *job, const msgpack_object *root)
{
    char token [MAX_TOKEN_LEN + 1], token_hash [65], err [512];
    PGresult *res = NULL;
    codec_builder_t *b = NULL;
    codec_msg_t *msg = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "retry_token", MAX_TOKEN_LEN, token, sizeof token))
        goto out;
    hex_sha256 (token, token_hash);
    const char *v [] = { token_hash };
    /* the integration first, for the connect rate limit: a refused retry keeps its token */
    res = store_exec (w->store,
        "SELECT integration_id FROM gateway_retry_tokens"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now ()",
        1, v, NULL, NULL, 1, &st, err, sizeof err);
    if (res && PQntuples (res) == 1 && !ratelimit_admit (w, job, "connect", 7, PQgetvalue (res, 0, 0)))
        goto out;
    PQclear (res);
    res = store_exec (w->store,
        "UPDATE gateway_retry_tokens SET used_at = now ()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now ()"
        " RETURNING integration_id, provider, redirect_uri, array_to_string (requested_scopes, ' '), return_to",
        1, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        reply_error (w, job, FR_STATE_INVALID, "this retry link expired or was already used",
                            "start again from Connect on the dashboard", -1);
        goto out;
    }
    const char *id = PQgetvalue (res, 0, 0);
    /* the connect the attempt made, as a request body for connect_start */
    const char *return_to = col_str (res, 0, 4);
    b = codec_builder_new ();
    codec_map (b, return_to ? 5 : 4);
    codec_kv_str (b, "integration", id);
    codec_kv_str (b, "provider", PQgetvalue (res, 0, 1));
    codec_kv_str (b, "redirect_uri", PQgetvalue (res, 0, 2));
    codec_kv_words (b, "scopes", PQgetvalue (res, 0, 3));
    if (return_to)
        codec_kv_str (b, "return_to", return_to);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    if (codec_builder_failed (b) || codec_decode (data, len, &msg, err, sizeof err) != FR_OK) {
        reply_error (w, job, FR_INTERNAL, "could not rebuild the connect request of the attempt", NULL, -1);
        goto out;
    }
    log_info (id, job->rid, "retrying a failed connect with a retry token");
    snprintf (job->op, sizeof job->op, "retry");
    connect_start (w, job, codec_msg_root (msg), id);
out:
    PQclear (res);
    codec_builder_destroy (&b);
    codec_msg_destroy (&msg);
}

/* --- workspace listing --------------------------------------------------------------------- */

static void
op_workspace (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], upper [IDENT_MAX + 1], err [512], limit [16];
    PGresult *res = NULL;
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    /* ids starting with ws are those in [ws, ws with its last byte + 1) in byte order (ids are
       ASCII: the last byte is at most 'z', so + 1 stays ASCII) */
    snprintf (upper, sizeof upper, "%s", ws);
    upper [strlen (upper) - 1]++;
    snprintf (limit, sizeof limit, "%d", GWOPS_WORKSPACE_MAX + 1);
    const char *v [] = { ws, upper, limit };
    /* an ordered range scan of integrations_id_c stopped by the LIMIT; no token column */
    res = store_exec (w->store,
        "SELECT id, provider, status, extract (epoch FROM last_refresh_at)::bigint, last_error_code,"
        "  extract (epoch FROM updated_at)::bigint, refresh_token_missing, scope_report,"
        "  array_to_string (scopes, ' '), array_to_string (requested_scopes, ' ')"
        " FROM integrations WHERE id COLLATE \"C\" >= $1 AND id COLLATE \"C\" < $2"
        " ORDER BY id COLLATE \"C\" LIMIT $3::integer",
        3, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    int rows = PQntuples (res);
    int shown = rows > GWOPS_WORKSPACE_MAX ? GWOPS_WORKSPACE_MAX : rows;
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_str (o, "workspace", ws);
    codec_kv_bool (o, "truncated", rows > GWOPS_WORKSPACE_MAX);
    codec_str (o, "integrations");
    codec_array (o, (uint32_t) shown);
    for (int i = 0; i < shown; i++) {
        codec_map (o, 9);
        codec_kv_str (o, "id", PQgetvalue (res, i, 0));
        codec_kv_str (o, "provider", PQgetvalue (res, i, 1));
        codec_kv_str (o, "status", PQgetvalue (res, i, 2));
        codec_kv_time (o, "last_refresh_at", col_int (res, i, 3));
        codec_kv_str (o, "last_error", col_str (res, i, 4));
        codec_kv_time (o, "updated_at", col_int (res, i, 5));
        codec_kv_bool (o, "refresh_token_missing", PQgetvalue (res, i, 6) [0] == 't');
        codec_kv_words (o, "scopes", PQgetvalue (res, i, 8));
        codec_kv_str (o, "scope_report", col_str (res, i, 7));
    }
    reply_send (w, job);
out:
    PQclear (res);
}

/* --- dashboard links ------------------------------------------------------------------------ */

static void
op_dashboard_link (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512], hash [65], ttl_s [16];
    char *token = NULL;
    PGresult *res = NULL;
    fr_status_t st;
    int64_t ttl = GWOPS_LINK_TTL_DEFAULT;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    int r = codec_get_int (root, "ttl_s", &ttl);
    if (r < 0 || ttl < 30 || ttl > GWOPS_LINK_TTL_MAX) {
        snprintf (err, sizeof err, "\"ttl_s\" must be an integer from 30 to %d", GWOPS_LINK_TTL_MAX);
        reply_error (w, job, FR_BAD_REQUEST, err, NULL, -1);
        goto out;
    }
    if (!(token = crypto_random_token (TOKEN_BYTES))) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for a dashboard link", NULL, -1);
        goto out;
    }
    hex_sha256 (token, hash);
    snprintf (ttl_s, sizeof ttl_s, "%" PRId64, ttl);
    const char *v [] = { hash, ws, ttl_s };
    res = store_exec (w->store,
        "INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at)"
        " VALUES ($1, $2, now () + $3::integer * interval '1 second')"
        " RETURNING extract (epoch FROM expires_at)::bigint",
        3, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    log_info (ws, job->rid, "dashboard link issued for workspace \"%s\"", ws);
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_str (o, "workspace", ws);
    codec_kv_str (o, "link_token", token);
    codec_kv_time (o, "expires_at", col_int (res, 0, 0));
    reply_send (w, job);
out:
    PQclear (res);
    mem_free_secret (&token);
}

static void
op_dashboard_open (worker_t *w, job_t *job, const msgpack_object *root)
{
    char token [MAX_TOKEN_LEN + 1], hash [65], err [512];
    PGresult *res = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "link_token", MAX_TOKEN_LEN, token, sizeof token))
        goto out;
    hex_sha256 (token, hash);
    const char *v [] = { hash };
    res = store_exec (w->store,
        "UPDATE gateway_dashboard_links SET used_at = now ()"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now () RETURNING workspace",
        1, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        reply_error (w, job, FR_STATE_INVALID, "this dashboard link expired or was already used",
                            "ask the application for a new dashboard link", -1);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 1);
    codec_kv_str (o, "workspace", PQgetvalue (res, 0, 0));
    reply_send (w, job);
out:
    PQclear (res);
}

/* --- API keys --------------------------------------------------------------------------------- */

static void
op_apikey_create (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], name [MAX_KEY_NAME + 1], hash [65], prefix [KEY_SHOWN + 1], err [512], max [16];
    char *random = NULL, *key = NULL;
    PGresult *res = NULL;
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws) || !arg_required (w, job, root, "name", MAX_KEY_NAME, name, sizeof name))
        goto out;
    if (!(random = crypto_random_token (TOKEN_BYTES))) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for an API key", NULL, -1);
        goto out;
    }
    size_t klen = strlen (KEY_PREFIX) + strlen (random) + 1;
    key = mem_alloc (klen);
    snprintf (key, klen, "%s%s", KEY_PREFIX, random);
    snprintf (prefix, sizeof prefix, "%.*s", KEY_SHOWN, key);
    hex_sha256 (key, hash);
    snprintf (max, sizeof max, "%d", MAX_KEYS);
    const char *v [] = { hash, ws, name, prefix, max };
    res = store_exec (w->store,
        "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix)"
        " SELECT $1, $2, $3, $4"
        " WHERE (SELECT count (*) FROM gateway_api_keys WHERE workspace = $2 AND revoked_at IS NULL) < $5::integer"
        " RETURNING id, extract (epoch FROM created_at)::bigint",
        5, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        snprintf (err, sizeof err, "workspace \"%s\" already has %d API keys", ws, MAX_KEYS);
        reply_error (w, job, FR_TOO_LARGE, err, "revoke a key you no longer use, then create one", -1);
        goto out;
    }
    log_info (ws, job->rid, "API key \"%s\" (%s...) created for workspace \"%s\"", name, prefix, ws);
    codec_builder_t *o = reply_begin (w, job, 1, 6);
    codec_kv_str (o, "workspace", ws);
    codec_kv_int (o, "key_id", col_int (res, 0, 0));
    codec_kv_str (o, "name", name);
    codec_kv_str (o, "prefix", prefix);
    codec_kv_time (o, "created_at", col_int (res, 0, 1));
    codec_kv_str (o, "key", key);
    reply_send (w, job);
out:
    PQclear (res);
    mem_free_secret (&random);
    mem_free_secret (&key);
}

static void
op_apikey_list (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512];
    PGresult *res = NULL;
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    const char *v [] = { ws };
    res = store_exec (w->store,
        "SELECT id, name, prefix, extract (epoch FROM created_at)::bigint, extract (epoch FROM last_used_at)::bigint,"
        "  extract (epoch FROM revoked_at)::bigint"
        " FROM gateway_api_keys WHERE workspace = $1 ORDER BY created_at DESC, id DESC LIMIT 200",
        1, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    int rows = PQntuples (res);
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_kv_str (o, "workspace", ws);
    codec_str (o, "keys");
    codec_array (o, (uint32_t) rows);
    for (int i = 0; i < rows; i++) {
        codec_map (o, 6);
        codec_kv_int (o, "key_id", col_int (res, i, 0));
        codec_kv_str (o, "name", PQgetvalue (res, i, 1));
        codec_kv_str (o, "prefix", PQgetvalue (res, i, 2));
        codec_kv_time (o, "created_at", col_int (res, i, 3));
        codec_kv_time (o, "last_used_at", col_int (res, i, 4));
        codec_kv_time (o, "revoked_at", col_int (res, i, 5));
    }
    reply_send (w, job);
out:
    PQclear (res);
}

static void
op_apikey_revoke (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512], id [24];
    PGresult *res = NULL;
    fr_status_t st;
    int64_t key_id;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    if (codec_get_int (root, "key_id", &key_id) != 1 || key_id < 1) {
        reply_error (w, job, FR_BAD_REQUEST, "\"key_id\" is required: a positive integer", NULL, -1);
        goto out;
    }
    snprintf (id, sizeof id, "%" PRId64, key_id);
    const char *v [] = { id, ws };
    res = store_exec (w->store,
        "UPDATE gateway_api_keys SET revoked_at = now () WHERE id = $1::bigint AND workspace = $2 AND revoked_at IS NULL"
        " RETURNING name, prefix",
        2, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        snprintf (err, sizeof err, "workspace \"%s\" has no live API key %s", ws, id);
        reply_error (w, job, FR_NOT_FOUND, err, "list the keys to see their ids", -1);
        goto out;
    }
    log_info (ws, job->rid, "API key \"%s\" (%s...) of workspace \"%s\" revoked", PQgetvalue (res, 0, 0),
              PQgetvalue (res, 0, 1), ws);
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_kv_str (o, "workspace", ws);
    codec_kv_int (o, "key_id", key_id);
    reply_send (w, job);
out:
    PQclear (res);
}

static void
op_apikey_verify (worker_t *w, job_t *job, const msgpack_object *root)
{
    char key [MAX_TOKEN_LEN + 1], hash [65], err [512];
    PGresult *res = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "key", MAX_TOKEN_LEN, key, sizeof key))
        goto out;
    hex_sha256 (key, hash);
    const char *v [] = { hash };
    /* last_used_at is written at most once a minute per key: the check stays a read */
    res = store_exec (w->store,
        "WITH k AS (SELECT id, workspace, name FROM gateway_api_keys WHERE key_hash = $1 AND revoked_at IS NULL),"
        " u AS (UPDATE gateway_api_keys SET last_used_at = now () WHERE key_hash = $1 AND revoked_at IS NULL"
        "       AND (last_used_at IS NULL OR last_used_at < now () - interval '60 seconds') RETURNING 1)"
        " SELECT k.id, k.workspace, k.name, (SELECT count (*) FROM u) FROM k",
        1, v, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        reply_db_error (w, job, st, err);
        goto out;
    }
    if (PQntuples (res) != 1) {
        reply_error (w, job, FR_FORBIDDEN, "the API key is unknown or revoked",
                            "create a new API key on the dashboard", -1);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_int (o, "key_id", col_int (res, 0, 0));
    codec_kv_str (o, "workspace", PQgetvalue (res, 0, 1));
    codec_kv_str (o, "name", PQgetvalue (res, 0, 2));
    reply_send (w, job);
out:
    PQclear (res);
}

/* --- dispatch and the connect hooks ----------------------------------------------------------- */

int
gwops_handle (worker_t *w, job_t *job, const msgpack_object *root, const char *op, size_t op_len)
{
    static const struct {
        const char *name;
        void (*fn) (worker_t *, job_t *, const msgpack_object *);
    } table [] = {
        { "attempt", op_attempt }, { "retry", op_retry }, { "workspace", op_workspace },
        { "dashboard_link", op_dashboard_link }, { "dashboard_open", op_dashboard_open },
        { "apikey_create", op_apikey_create }, { "apikey_list", op_apikey_list },
        { "apikey_revoke", op_apikey_revoke }, { "apikey_verify", op_apikey_verify },
    };
    for (size_t i = 0; i < sizeof table / sizeof table [0]; i++)
        if (strlen (table [i].name) == op_len && memcmp (table [i].name, op, op_len) == 0) {
            snprintf (job->op, sizeof job->op, "%s", table [i].name);
            table [i].fn (w, job, root);
            return 1;
        }
    return 0;
}
