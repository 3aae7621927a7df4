/* gwops.c - the operations the gateway needs: connect attempts and retries, workspace listing,
 * dashboard links and API keys (gwops.h). This file reads requests, decides and replies; every
 * statement is in store_gateway.c, one round trip each on the worker's connection. */
#include "gwops.h"
#include "fields.h"
#include "reply.h"
#include "store_gateway.h"
#include "codec.h"
#include "connect.h"
#include "crypto.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "ratelimit.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

#define TOKEN_BYTES      32             /* retry tokens, link tokens and API keys: 256 bits */
#define MAX_TOKEN_LEN    128            /* what a caller may send back */
#define MAX_STATE_LEN    256
#define MAX_KEY_NAME     64
#define MAX_KEYS         100            /* live API keys per workspace */
#define MAX_KEYS_LISTED  200
#define KEY_PREFIX       "frk_"
#define KEY_SHOWN        12             /* "frk_" and 8 characters: tells keys apart in a list */

/* What the database keeps of a value handed out: its SHA-256 as hex. */
static void
hex_sha256 (const char *s, char out [65])
{
    unsigned char d [32];
    crypto_sha256 (s, strlen (s), d);
    text_hex (d, sizeof d, out);
}

/* A required string field of 1..max printable characters: 1 with *out a copy, 0 when refused or
 * missing (answered). */
static int
arg_required (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max, char **out)
{
    int r = fields_str (w, job, root, key, max, 1, out);
    if (r == 0) {
        char message [100];
        snprintf (message, sizeof message, "\"%s\" is required", key);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
    }
    return r == 1;
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
    char state_hash [65], err [512];
    char *state = NULL, *token = NULL;
    store_gw_attempt_t a = { 0 };
    fr_status_t st;

    if (!arg_required (w, job, root, "state", MAX_STATE_LEN, &state))
        goto out;
    hex_sha256 (state, state_hash);
    st = store_gw_attempt (w->store, state_hash, &a, err, sizeof err);
    if (st == FR_NOT_FOUND) {
        reply_error (w, job, FR_NOT_FOUND, err, "start again from Connect", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    /* a state that expired before its callback came, a failure the user can mend, or a connect
       that stored fewer scopes (or no refresh token) than asked */
    const char *outcome = a.outcome;
    int retry = !a.retry_issued
             && (outcome_retryable (outcome) || (!outcome && !a.used && a.expired) || (!outcome && a.used)
                 || (outcome && strcmp (outcome, "connected") == 0 && a.short_grant));
    int64_t retry_expires = 0;
    if (retry) {
        token = crypto_random_token (TOKEN_BYTES);
        if (!token) {
            reply_error (w, job, FR_INTERNAL, "could not draw random bytes for a retry token", NULL, -1);
            goto out;
        }
        char token_hash [65];
        hex_sha256 (token, token_hash);
        st = store_gw_retry_issue (w->store, state_hash, token_hash, GWOPS_RETRY_TTL_S, &retry_expires,
                                   err, sizeof err);
        if (st == FR_STATE_INVALID)
            mem_free_secret (&token);       /* another gateway drew it first */
        else
        if (st != FR_OK) {
            reply_store_error (w, job, st, err);
            goto out;
        }
    }
    log_info (a.integration, job->rid, "connect attempt read (outcome %s)%s", outcome ? outcome : "none",
              token ? "; a retry token was issued" : "");
    codec_builder_t *o = reply_begin (w, job, 1, 10);
    codec_kv_str (o, "integration", a.integration);
    codec_kv_str (o, "provider", a.provider);
    codec_kv_str (o, "redirect_uri", a.redirect_uri);
    codec_kv_words (o, "scopes", a.scopes);
    codec_kv_str (o, "return_to", a.return_to);
    codec_kv_str (o, "outcome", outcome);
    codec_kv_str (o, "status", a.status);
    codec_kv_words (o, "missing_scopes", a.missing_scopes);
    codec_kv_str (o, "retry_token", token);
    codec_kv_time (o, "retry_expires_at", retry_expires);
    reply_send (w, job);
out:
    store_gw_attempt_clear (&a);
    mem_free_secret (&state);
    mem_free_secret (&token);
}

static void
op_retry (worker_t *w, job_t *job, const msgpack_object *root)
{
    char token_hash [65], err [512];
    char *token = NULL, *id = NULL;
    store_gw_retry_t r = { 0 };
    codec_builder_t *b = NULL;
    codec_msg_t *msg = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "retry_token", MAX_TOKEN_LEN, &token))
        goto out;
    hex_sha256 (token, token_hash);
    /* the integration first, for the connect rate limit: a refused retry keeps its token (a token
       not found here is answered by the take below) */
    if (store_gw_retry_peek (w->store, token_hash, &id, err, sizeof err) == FR_OK
    &&  !ratelimit_admit (w, job, "connect", 7, id))
        goto out;
    st = store_gw_retry_take (w->store, token_hash, &r, err, sizeof err);
    if (st == FR_STATE_INVALID) {
        reply_error (w, job, FR_STATE_INVALID, err, "start again from Connect on the dashboard", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    /* the connect the attempt made, as a request body for connect_start */
    b = codec_builder_new ();
    codec_map (b, r.return_to ? 5 : 4);
    codec_kv_str (b, "integration", r.integration);
    codec_kv_str (b, "provider", r.provider);
    codec_kv_str (b, "redirect_uri", r.redirect_uri);
    codec_kv_words (b, "scopes", r.scopes);
    if (r.return_to)
        codec_kv_str (b, "return_to", r.return_to);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    if (codec_builder_failed (b) || codec_decode (data, len, &msg, err, sizeof err) != FR_OK) {
        reply_error (w, job, FR_INTERNAL, "could not rebuild the connect request of the attempt", NULL, -1);
        goto out;
    }
    log_info (r.integration, job->rid, "retrying a failed connect with a retry token");
    snprintf (job->op, sizeof job->op, "retry");
    connect_start (w, job, codec_msg_root (msg), r.integration);
out:
    store_gw_retry_clear (&r);
    mem_free (id);
    mem_free_secret (&token);
    codec_builder_destroy (&b);
    codec_msg_destroy (&msg);
}

/* --- workspace listing --------------------------------------------------------------------- */

static void
op_workspace (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512];
    store_gw_workspace_t list = { 0 };
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    if ((st = store_gw_workspace (w->store, ws, GWOPS_WORKSPACE_MAX, &list, err, sizeof err)) != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_str (o, "workspace", ws);
    codec_kv_bool (o, "truncated", list.truncated);
    codec_str (o, "integrations");
    codec_array (o, (uint32_t) list.count);
    for (size_t i = 0; i < list.count; i++) {
        const store_gw_listed_t *e = &list.items [i];
        codec_map (o, 9);
        codec_kv_str (o, "id", e->id);
        codec_kv_str (o, "provider", e->provider);
        codec_kv_str (o, "status", e->status);
        codec_kv_time (o, "last_refresh_at", e->last_refresh_at);
        codec_kv_str (o, "last_error", e->last_error);
        codec_kv_time (o, "updated_at", e->updated_at);
        codec_kv_bool (o, "refresh_token_missing", e->refresh_token_missing);
        codec_kv_words (o, "scopes", e->scopes);
        codec_kv_str (o, "scope_report", e->scope_report);
    }
    reply_send (w, job);
out:
    store_gw_workspace_clear (&list);
}

/* --- dashboard links ------------------------------------------------------------------------ */

static void
op_dashboard_link (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512], hash [65];
    char *token = NULL;
    fr_status_t st;
    int64_t ttl = GWOPS_LINK_TTL_DEFAULT, expires_at;

    if (!arg_workspace (w, job, root, ws) || fields_int (w, job, root, "ttl_s", 30, GWOPS_LINK_TTL_MAX, &ttl) < 0)
        goto out;
    if (!(token = crypto_random_token (TOKEN_BYTES))) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for a dashboard link", NULL, -1);
        goto out;
    }
    hex_sha256 (token, hash);
    if ((st = store_gw_link_issue (w->store, hash, ws, ttl, &expires_at, err, sizeof err)) != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    log_info (ws, job->rid, "dashboard link issued for workspace \"%s\"", ws);
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_str (o, "workspace", ws);
    codec_kv_str (o, "link_token", token);
    codec_kv_time (o, "expires_at", expires_at);
    reply_send (w, job);
out:
    mem_free_secret (&token);
}

static void
op_dashboard_open (worker_t *w, job_t *job, const msgpack_object *root)
{
    char hash [65], err [512];
    char *token = NULL, *ws = NULL;
    fr_status_t st;

    if (!arg_required (w, job, root, "link_token", MAX_TOKEN_LEN, &token))
        goto out;
    hex_sha256 (token, hash);
    st = store_gw_link_take (w->store, hash, &ws, err, sizeof err);
    if (st == FR_STATE_INVALID) {
        reply_error (w, job, FR_STATE_INVALID, err, "ask the application for a new dashboard link", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 1);
    codec_kv_str (o, "workspace", ws);
    reply_send (w, job);
out:
    mem_free (ws);
    mem_free_secret (&token);
}

/* --- API keys --------------------------------------------------------------------------------- */

static void
op_apikey_create (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], hash [65], prefix [KEY_SHOWN + 1], err [512];
    char *name = NULL, *random = NULL, *key = NULL;
    store_gw_apikey_t k = { 0 };
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws) || !arg_required (w, job, root, "name", MAX_KEY_NAME, &name))
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
    st = store_gw_apikey_create (w->store, hash, ws, name, prefix, MAX_KEYS, &k, err, sizeof err);
    if (st == FR_TOO_LARGE) {
        reply_error (w, job, FR_TOO_LARGE, err, "revoke a key you no longer use, then create one", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    log_info (ws, job->rid, "API key \"%s\" (%s...) created for workspace \"%s\"", name, prefix, ws);
    codec_builder_t *o = reply_begin (w, job, 1, 6);
    codec_kv_str (o, "workspace", ws);
    codec_kv_int (o, "key_id", k.key_id);
    codec_kv_str (o, "name", name);
    codec_kv_str (o, "prefix", prefix);
    codec_kv_time (o, "created_at", k.created_at);
    codec_kv_str (o, "key", key);
    reply_send (w, job);
out:
    store_gw_apikey_clear (&k);
    mem_free (name);
    mem_free_secret (&random);
    mem_free_secret (&key);
}

static void
op_apikey_list (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512];
    store_gw_apikeys_t list = { 0 };
    fr_status_t st;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    if ((st = store_gw_apikey_list (w->store, ws, MAX_KEYS_LISTED, &list, err, sizeof err)) != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_kv_str (o, "workspace", ws);
    codec_str (o, "keys");
    codec_array (o, (uint32_t) list.count);
    for (size_t i = 0; i < list.count; i++) {
        const store_gw_apikey_t *k = &list.items [i];
        codec_map (o, 6);
        codec_kv_int (o, "key_id", k->key_id);
        codec_kv_str (o, "name", k->name);
        codec_kv_str (o, "prefix", k->prefix);
        codec_kv_time (o, "created_at", k->created_at);
        codec_kv_time (o, "last_used_at", k->last_used_at);
        codec_kv_time (o, "revoked_at", k->revoked_at);
    }
    reply_send (w, job);
out:
    store_gw_apikeys_clear (&list);
}

static void
op_apikey_revoke (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1], err [512];
    store_gw_apikey_t k = { 0 };
    fr_status_t st;
    int64_t key_id;

    if (!arg_workspace (w, job, root, ws))
        goto out;
    /* not fields_int: this message, which says what a key id is, is kept */
    if (codec_get_int (root, "key_id", &key_id) != 1 || key_id < 1) {
        reply_error (w, job, FR_BAD_REQUEST, "\"key_id\" is required: a positive integer", NULL, -1);
        goto out;
    }
    st = store_gw_apikey_revoke (w->store, ws, key_id, &k, err, sizeof err);
    if (st == FR_NOT_FOUND) {
        reply_error (w, job, FR_NOT_FOUND, err, "list the keys to see their ids", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    log_info (ws, job->rid, "API key \"%s\" (%s...) of workspace \"%s\" revoked", k.name, k.prefix, ws);
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_kv_str (o, "workspace", ws);
    codec_kv_int (o, "key_id", key_id);
    reply_send (w, job);
out:
    store_gw_apikey_clear (&k);
}

static void
op_apikey_verify (worker_t *w, job_t *job, const msgpack_object *root)
{
    char hash [65], err [512];
    char *key = NULL;
    store_gw_apikey_t k = { 0 };
    fr_status_t st;

    if (!arg_required (w, job, root, "key", MAX_TOKEN_LEN, &key))
        goto out;
    hex_sha256 (key, hash);
    st = store_gw_apikey_verify (w->store, hash, &k, err, sizeof err);
    if (st == FR_NOT_FOUND) {
        reply_error (w, job, FR_FORBIDDEN, "the API key is unknown or revoked", "create a new API key on the dashboard",
                     -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 3);
    codec_kv_int (o, "key_id", k.key_id);
    codec_kv_str (o, "workspace", k.workspace);
    codec_kv_str (o, "name", k.name);
    reply_send (w, job);
out:
    store_gw_apikey_clear (&k);
    mem_free_secret (&key);
}

/* --- dispatch and the connect hooks ----------------------------------------------------------- */

int
gwops_handle (worker_t *w, job_t *job, const msgpack_object *root, op_t op)
{
    switch (op) {
        case OP_ATTEMPT:        op_attempt (w, job, root); return 1;
        case OP_RETRY:          op_retry (w, job, root); return 1;
        case OP_WORKSPACE:      op_workspace (w, job, root); return 1;
        case OP_DASHBOARD_LINK: op_dashboard_link (w, job, root); return 1;
        case OP_DASHBOARD_OPEN: op_dashboard_open (w, job, root); return 1;
        case OP_APIKEY_CREATE:  op_apikey_create (w, job, root); return 1;
        case OP_APIKEY_LIST:    op_apikey_list (w, job, root); return 1;
        case OP_APIKEY_REVOKE:  op_apikey_revoke (w, job, root); return 1;
        case OP_APIKEY_VERIFY:  op_apikey_verify (w, job, root); return 1;
        default:                return 0;
    }
}
