/* gwops.c - the operations the gateway needs: connect attempts and retries, workspace listing,
 * dashboard links and API keys (gwops.h). This file reads requests, decides and replies; every
 * statement is in store_gateway.c, sent as a batch queued for a free connection (dbwait.c), and
 * the reply goes from the batch's end: nothing here holds the loop while the database answers. */
#include "gwops.h"
#include "dbwait.h"
#include "catalog.h"
#include "fields.h"
#include "reply.h"
#include "store_gateway.h"
#include "codec.h"
#include "connect.h"
#include "crypto.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
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

/* What a request may do with a workspace prefix that does not end with a separator. */
typedef enum {
    WS_NEW,         /* cover ids: a listing, a dashboard link, an API key. Refused */
    WS_EXISTING     /* list or revoke the keys stored under it before the rule. Allowed */
} ws_use_t;

/* The workspace prefix of a request: its "integration" field. 1, or 0 when refused (answered). */
static int
arg_workspace (worker_t *w, const job_t *job, const msgpack_object *root, ws_use_t use, char out [IDENT_MAX + 1])
{
    const char *s;
    size_t len;
    int has = codec_get_str (root, "integration", &s, &len);
    if (has != 1 || !ident_valid (s, len)) {
        reply_error (w, job, has == 1 && len > IDENT_MAX ? FR_TOO_LARGE : FR_BAD_REQUEST,
                     "\"integration\" (the workspace prefix) must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                     NULL, -1);
        return 0;
    }
    /* a prefix that stops mid-name covers other workspaces' ids too: "acct4" covers "acct42:x" */
    if (use == WS_NEW && !ident_workspace_valid (s, len)) {
        char message [2 * IDENT_MAX + 120];
        snprintf (message, sizeof message, "workspace \"%.*s\" does not end with one of " IDENT_SEPARATORS ", so it "
                  "would also cover the ids of other workspaces that start with \"%.*s\"", (int) len, s, (int) len, s);
        reply_error (w, job, FR_BAD_REQUEST, message, "end the workspace with ':', as in \"acct42:\"", -1);
        return 0;
    }
    memcpy (out, s, len);
    out [len] = '\0';
    return 1;
}

/* --- a request waiting for its statements ------------------------------------------------- */

/* The statement a waiting request starts next. */
typedef enum {
    GW_ATTEMPT, GW_RETRY_ISSUE, GW_RETRY_PEEK, GW_WORKSPACE, GW_LINK_ISSUE, GW_LINK_TAKE,
    GW_KEY_CREATE, GW_KEY_LIST, GW_KEY_REVOKE, GW_KEY_VERIFY
} gw_step_t;

/* What a request needs once its statement has answered: the body is gone by then. */
typedef struct {
    worker_t *w;
    job_t job;
    gw_step_t step;
    char ws [IDENT_MAX + 1];              /* the workspace prefix */
    char hash [65];                       /* SHA-256 of the state, token or key the request names */
    char issued_hash [65];                /* of a retry token drawn for an attempt */
    char browser_hash [65];               /* of an attempt's or a retry's browser_binding, "" none */
    char *secret;                         /* a value handed out in the reply: wiped */
    char *name;                           /* an API key's */
    char prefix [KEY_SHOWN + 1];
    int64_t ttl_s;
    int64_t key_id;
    store_gw_attempt_t a;                 /* an attempt read, while its retry token is stored */
} gw_wait_t;

static gw_wait_t *
gw_new (worker_t *w, const job_t *job, gw_step_t step)
{
    gw_wait_t *gw = mem_alloc (sizeof *gw);
    gw->w = w;
    gw->job = *job;
    gw->step = step;
    return gw;
}

static void
gw_free (gw_wait_t *gw)
{
    mem_free_secret (&gw->secret);
    mem_free (gw->name);
    store_gw_attempt_clear (&gw->a);
    mem_free (gw);
}

static void gw_start (worker_t *w, store_t *store, void *arg);

/* Queues gw's next statement; one that cannot start shortly before the request's deadline is
 * dropped unstarted and the request answered "timeout": started later, it would spend a link or a
 * retry token, or make a key, for a request already answered. */
static void
gw_queue (gw_wait_t *gw)
{
    dbwait_add_for (gw->w, gw_start, gw, &gw->job);
}

/* A statement that could not be sent, or failed: answered, and the request is done. */
static void
gw_failed (gw_wait_t *gw, fr_status_t st, const char *err)
{
    reply_store_error (gw->w, &gw->job, st, err);
    gw_free (gw);
}

/* --- connect attempts and "Try again" ----------------------------------------------------- */

/* The outcomes after which a fresh connect of the same attempt is what the user needs. */
static int
outcome_retryable (const char *outcome)
{
    /* never browser_mismatch: a fresh connect from the browser that brought another's sign-in
       link would finish the phishing it stopped */
    /* nor invalid_scope: the application's configuration, which a fresh connect asks for again */
    static const char *const list [] = { "code_expired_or_used", "access_denied", "no_refresh_token",
                                         "provider_unavailable", "state_invalid", NULL };
    for (int i = 0; outcome && list [i]; i++)
        if (strcmp (outcome, list [i]) == 0)
            return 1;
    return 0;
}

static void
attempt_reply (gw_wait_t *gw, int64_t retry_expires)
{
    const store_gw_attempt_t *a = &gw->a;
    const job_t *job = &gw->job;
    log_info (a->integration, job->rid, "connect attempt read (outcome %s)%s", a->outcome ? a->outcome : "none",
              gw->secret ? "; a retry token was issued" : "");
    codec_builder_t *o = reply_begin (gw->w, job, 1, 11);
    codec_kv_str (o, "integration", a->integration);
    codec_kv_str (o, "provider", a->provider);
    codec_kv_str (o, "redirect_uri", a->redirect_uri);
    codec_kv_words (o, "scopes", a->scopes);
    codec_kv_str (o, "return_to", a->return_to);
    codec_kv_str (o, "outcome", a->outcome);
    codec_kv_str (o, "status", a->status);
    codec_kv_words (o, "missing_scopes", a->missing_scopes);
    codec_kv_str (o, "retry_token", gw->secret);
    codec_kv_time (o, "retry_expires_at", retry_expires);
    codec_kv_bool (o, "browser_mismatch", a->other_browser);
    reply_send (gw->w, job);
    gw_free (gw);
}

static void
retry_issued (void *arg, fr_status_t st, int64_t expires_at, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_STATE_INVALID)
        mem_free_secret (&gw->secret);      /* another gateway drew it first */
    else
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    attempt_reply (gw, expires_at);
}

static void
attempt_read (void *arg, fr_status_t st, store_gw_attempt_t *a, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_NOT_FOUND) {
        reply_error (gw->w, &gw->job, FR_NOT_FOUND, err, "start again from Connect", -1);
        gw_free (gw);
        return;
    }
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    gw->a = *a;                             /* ours now */
    a = &gw->a;
    /* a state that expired before its callback came, a failure the user can mend, or a connect
       that stored fewer scopes (or no refresh token) than asked; a bound attempt's only for the
       browser that started it: anyone else with the state (its authorization URL, sent to them)
       would get a retry bound to their own browser, and finish the phishing the binding stops */
    const char *outcome = a->outcome;
    int retry = !a->retry_issued && !a->other_browser
             && (outcome_retryable (outcome) || (!outcome && !a->used && a->expired) || (!outcome && a->used)
                 || (outcome && strcmp (outcome, "connected") == 0 && a->short_grant));
    if (!retry) {
        attempt_reply (gw, 0);
        return;
    }
    if (!(gw->secret = crypto_random_token (TOKEN_BYTES))) {
        reply_error (gw->w, &gw->job, FR_INTERNAL, "could not draw random bytes for a retry token", NULL, -1);
        gw_free (gw);
        return;
    }
    crypto_sha256_hex (gw->secret, gw->issued_hash);
    gw->step = GW_RETRY_ISSUE;
    gw_queue (gw);
}

static void
op_attempt (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *state = NULL;
    if (!arg_required (w, job, root, "state", MAX_STATE_LEN, &state))
        return;
    char browser_hash [65];
    if (fields_binding (w, job, root, "browser_binding", browser_hash) < 0) {
        mem_free_secret (&state);
        return;
    }
    gw_wait_t *gw = gw_new (w, job, GW_ATTEMPT);
    crypto_sha256_hex (state, gw->hash);
    memcpy (gw->browser_hash, browser_hash, sizeof gw->browser_hash);
    mem_free_secret (&state);
    gw_queue (gw);
}

/* The token's connect, read without spending it: the connect rate limit first (a refused retry
 * keeps its token), then a fresh connect, whose pending authorization's statement spends the
 * token. A connect refused before that (the provider gone from the catalog or without
 * credentials, the database away) leaves the token usable for another try. */
static void
retry_peeked (void *arg, fr_status_t st, const store_gw_retry_t *r, const char *err)
{
    gw_wait_t *gw = arg;
    worker_t *w = gw->w;
    job_t *job = &gw->job;
    char why [512];
    char *asked = NULL;
    codec_builder_t *b = NULL;
    codec_msg_t *msg = NULL;

    if (st == FR_NOT_FOUND) {
        reply_error (w, job, FR_STATE_INVALID, err, "start again from Connect on the dashboard", -1);
        goto out;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    if (r->bound && (!gw->browser_hash [0] || r->other_browser)) {
        /* the attempt was bound to the browser that started it: so is its retry, or a retry token
           read with the state would start an unbound connect to send to someone else, and one
           pressed in another browser would bind that browser to the sender's integration */
        snprintf (why, sizeof why, "the connect of integration \"%s\" was started from the dashboard in another "
                  "browser: its retry needs that browser's binding", r->integration);
        reply_error (w, job, FR_BROWSER_MISMATCH, why, NULL, -1);
        goto out;
    }
    /* the connect the attempt made, as a request body for connect_start (which takes from the
     * integration's rate bucket): its scopes without the refresh_token_scopes the connect added,
     * which it adds again (64 scopes asked and one added are more than a request may name, and the
     * retry was refused for good) */
    const catalog_provider_t *p = catalog_find (w->catalog, r->provider);
    if (!p) {
        /* the scopes could not be told apart, and the connect would be refused for its provider */
        snprintf (why, sizeof why, "provider \"%.100s\" of this attempt is not in the catalog any more", r->provider);
        reply_error (w, job, FR_CONFIGURATION, why, "add the provider back with FERRULE_PROVIDERS_FILE, or connect "
                     "the integration with another provider", -1);
        goto out;
    }
    asked = p && r->scopes ? catalog_asked_scopes (p, r->scopes) : NULL;
    b = codec_builder_new ();
    codec_map (b, r->return_to ? 5 : 4);
    codec_kv_str (b, "integration", r->integration);
    codec_kv_str (b, "provider", r->provider);
    codec_kv_str (b, "redirect_uri", r->redirect_uri);
    codec_kv_words (b, "scopes", asked ? asked : r->scopes);
    if (r->return_to)
        codec_kv_str (b, "return_to", r->return_to);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    if (codec_builder_failed (b) || codec_decode (data, len, &msg, why, sizeof why) != FR_OK) {
        reply_error (w, job, FR_INTERNAL, "could not rebuild the connect request of the attempt", NULL, -1);
        goto out;
    }
    /* a retry of an unbound attempt (an API connect's) stays unbound, as its first try was */
    log_info (r->integration, job->rid, "retrying a failed connect with a retry token%s",
              r->bound ? ", bound to the browser that started it" : "");
    snprintf (job->op, sizeof job->op, "retry");
    connect_start_retry (w, job, codec_msg_root (msg), r->integration, gw->hash, r->bound ? gw->browser_hash : "");
out:
    mem_free (asked);
    codec_builder_destroy (&b);
    codec_msg_destroy (&msg);
    gw_free (gw);
}

static void
op_retry (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *token = NULL, browser_hash [65];
    if (!arg_required (w, job, root, "retry_token", MAX_TOKEN_LEN, &token))
        return;
    if (fields_binding (w, job, root, "browser_binding", browser_hash) < 0) {
        mem_free_secret (&token);
        return;
    }
    gw_wait_t *gw = gw_new (w, job, GW_RETRY_PEEK);
    crypto_sha256_hex (token, gw->hash);
    memcpy (gw->browser_hash, browser_hash, sizeof gw->browser_hash);
    mem_free_secret (&token);
    gw_queue (gw);
}

/* --- workspace listing --------------------------------------------------------------------- */

/* The workspace reply with the first n integrations of list into the worker's reply builder. */
static void
workspace_pack (gw_wait_t *gw, const store_gw_workspace_t *list, size_t n)
{
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 3);
    codec_kv_str (o, "workspace", gw->ws);
    codec_kv_bool (o, "truncated", list->truncated || n < list->count);
    codec_str (o, "integrations");
    codec_array (o, (uint32_t) n);
    for (size_t i = 0; i < n; i++) {
        const store_gw_listed_t *e = &list->items [i];
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
}

static void
workspace_listed (void *arg, fr_status_t st, const store_gw_workspace_t *list, const char *err)
{
    gw_wait_t *gw = arg;
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    /* as many as one reply holds: 200 integrations of many scopes each are more objects than a
     * client decodes (or more bytes than a frame takes); the rest is what "truncated" says */
    size_t n = list->count;
    char why [200];
    for (;;) {
        workspace_pack (gw, list, n);
        if (n == 0 || reply_fits (gw->w, why, sizeof why))
            break;
        n = n - 1 - n / 8;
    }
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_workspace (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1];
    if (!arg_workspace (w, job, root, WS_NEW, ws))
        return;
    gw_wait_t *gw = gw_new (w, job, GW_WORKSPACE);
    memcpy (gw->ws, ws, sizeof ws);
    gw_queue (gw);
}

/* --- dashboard links ------------------------------------------------------------------------ */

static void
link_issued (void *arg, fr_status_t st, int64_t expires_at, const char *err)
{
    gw_wait_t *gw = arg;
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    log_info (gw->ws, gw->job.rid, "dashboard link issued for workspace \"%s\"", gw->ws);
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 3);
    codec_kv_str (o, "workspace", gw->ws);
    codec_kv_str (o, "link_token", gw->secret);
    codec_kv_time (o, "expires_at", expires_at);
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_dashboard_link (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1];
    char *token = NULL;
    int64_t ttl = GWOPS_LINK_TTL_DEFAULT;

    if (!arg_workspace (w, job, root, WS_NEW, ws)
    ||  fields_int (w, job, root, "ttl_s", 30, GWOPS_LINK_TTL_MAX, &ttl) < 0)
        return;
    if (!(token = crypto_random_token (TOKEN_BYTES))) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for a dashboard link", NULL, -1);
        return;
    }
    gw_wait_t *gw = gw_new (w, job, GW_LINK_ISSUE);
    memcpy (gw->ws, ws, sizeof ws);
    gw->secret = token;
    gw->ttl_s = ttl;
    crypto_sha256_hex (token, gw->hash);
    gw_queue (gw);
}

static void
link_taken (void *arg, fr_status_t st, const char *ws, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_STATE_INVALID) {
        reply_error (gw->w, &gw->job, FR_STATE_INVALID, err, "ask the application for a new dashboard link", -1);
        gw_free (gw);
        return;
    }
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 1);
    codec_kv_str (o, "workspace", ws);
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_dashboard_open (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *token = NULL;
    if (!arg_required (w, job, root, "link_token", MAX_TOKEN_LEN, &token))
        return;
    gw_wait_t *gw = gw_new (w, job, GW_LINK_TAKE);
    crypto_sha256_hex (token, gw->hash);
    mem_free_secret (&token);
    gw_queue (gw);
}

/* --- API keys --------------------------------------------------------------------------------- */

static void
key_created (void *arg, fr_status_t st, const store_gw_apikey_t *k, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_TOO_LARGE) {
        reply_error (gw->w, &gw->job, FR_TOO_LARGE, err, "revoke a key you no longer use, then create one", -1);
        gw_free (gw);
        return;
    }
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    log_info (gw->ws, gw->job.rid, "API key \"%s\" (%s...) created for workspace \"%s\"", gw->name, gw->prefix,
              gw->ws);
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 6);
    codec_kv_str (o, "workspace", gw->ws);
    codec_kv_int (o, "key_id", k->key_id);
    codec_kv_str (o, "name", gw->name);
    codec_kv_str (o, "prefix", gw->prefix);
    codec_kv_time (o, "created_at", k->created_at);
    codec_kv_str (o, "key", gw->secret);
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_apikey_create (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1];
    char *name = NULL, *random = NULL;
    gw_wait_t *gw;

    if (!arg_workspace (w, job, root, WS_NEW, ws) || !arg_required (w, job, root, "name", MAX_KEY_NAME, &name))
        goto out;
    if (!(random = crypto_random_token (TOKEN_BYTES))) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for an API key", NULL, -1);
        goto out;
    }
    gw = gw_new (w, job, GW_KEY_CREATE);
    memcpy (gw->ws, ws, sizeof ws);
    size_t klen = strlen (KEY_PREFIX) + strlen (random) + 1;
    gw->secret = mem_alloc (klen);
    snprintf (gw->secret, klen, "%s%s", KEY_PREFIX, random);
    snprintf (gw->prefix, sizeof gw->prefix, "%.*s", KEY_SHOWN, gw->secret);
    crypto_sha256_hex (gw->secret, gw->hash);
    gw->name = name;
    name = NULL;
    gw_queue (gw);
out:
    mem_free (name);
    mem_free_secret (&random);
}

static void
keys_listed (void *arg, fr_status_t st, const store_gw_apikeys_t *list, const char *err)
{
    gw_wait_t *gw = arg;
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 2);
    codec_kv_str (o, "workspace", gw->ws);
    codec_str (o, "keys");
    codec_array (o, (uint32_t) list->count);
    for (size_t i = 0; i < list->count; i++) {
        const store_gw_apikey_t *k = &list->items [i];
        codec_map (o, 6);
        codec_kv_int (o, "key_id", k->key_id);
        codec_kv_str (o, "name", k->name);
        codec_kv_str (o, "prefix", k->prefix);
        codec_kv_time (o, "created_at", k->created_at);
        codec_kv_time (o, "last_used_at", k->last_used_at);
        codec_kv_time (o, "revoked_at", k->revoked_at);
    }
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_apikey_list (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1];
    if (!arg_workspace (w, job, root, WS_EXISTING, ws))
        return;
    gw_wait_t *gw = gw_new (w, job, GW_KEY_LIST);
    memcpy (gw->ws, ws, sizeof ws);
    gw_queue (gw);
}

static void
key_revoked (void *arg, fr_status_t st, const store_gw_apikey_t *k, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_NOT_FOUND) {
        reply_error (gw->w, &gw->job, FR_NOT_FOUND, err, "list the keys to see their ids", -1);
        gw_free (gw);
        return;
    }
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    log_info (gw->ws, gw->job.rid, "API key \"%s\" (%s...) of workspace \"%s\" revoked", k->name, k->prefix, gw->ws);
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 2);
    codec_kv_str (o, "workspace", gw->ws);
    codec_kv_int (o, "key_id", gw->key_id);
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_apikey_revoke (worker_t *w, job_t *job, const msgpack_object *root)
{
    char ws [IDENT_MAX + 1];
    int64_t key_id;

    if (!arg_workspace (w, job, root, WS_EXISTING, ws))
        return;
    /* not fields_int: this message, which says what a key id is, is kept */
    if (codec_get_int (root, "key_id", &key_id) != 1 || key_id < 1) {
        reply_error (w, job, FR_BAD_REQUEST, "\"key_id\" is required: a positive integer", NULL, -1);
        return;
    }
    gw_wait_t *gw = gw_new (w, job, GW_KEY_REVOKE);
    memcpy (gw->ws, ws, sizeof ws);
    gw->key_id = key_id;
    gw_queue (gw);
}

static void
key_verified (void *arg, fr_status_t st, const store_gw_apikey_t *k, const char *err)
{
    gw_wait_t *gw = arg;
    if (st == FR_NOT_FOUND) {
        /* not forbidden: that is what a broker answers a client its policy refuses, and the
         * gateway must tell the two apart (a refused gateway is not a revoked key) */
        reply_error (gw->w, &gw->job, FR_NOT_FOUND, "the API key is unknown or revoked",
                     "create a new API key on the dashboard", -1);
        gw_free (gw);
        return;
    }
    if (st != FR_OK) {
        gw_failed (gw, st, err);
        return;
    }
    codec_builder_t *o = reply_begin (gw->w, &gw->job, 1, 3);
    codec_kv_int (o, "key_id", k->key_id);
    codec_kv_str (o, "workspace", k->workspace);
    codec_kv_str (o, "name", k->name);
    reply_send (gw->w, &gw->job);
    gw_free (gw);
}

static void
op_apikey_verify (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *key = NULL;
    if (!arg_required (w, job, root, "key", MAX_TOKEN_LEN, &key))
        return;
    gw_wait_t *gw = gw_new (w, job, GW_KEY_VERIFY);
    crypto_sha256_hex (key, gw->hash);
    mem_free_secret (&key);
    gw_queue (gw);
}

/* --- starting a statement ------------------------------------------------------------------- */

/* Starts gw's statement on a free connection; its end replies (or queues the next one). */
static void
gw_start (worker_t *w, store_t *store, void *arg)
{
    gw_wait_t *gw = arg;
    char err [256] = "";
    fr_status_t st = FR_INTERNAL;
    (void) w;
    if (!store) {
        gw_free (gw);
        return;
    }
    switch (gw->step) {
        case GW_ATTEMPT:
            st = store_gw_attempt_start (store, gw->hash, gw->browser_hash, attempt_read, gw, err, sizeof err);
            break;
        case GW_RETRY_ISSUE:
            st = store_gw_retry_issue_start (store, gw->hash, gw->issued_hash, gw->browser_hash, GWOPS_RETRY_TTL_S,
                                             retry_issued, gw, err, sizeof err);
            break;
        case GW_RETRY_PEEK:
            st = store_gw_retry_peek_start (store, gw->hash, gw->browser_hash, retry_peeked, gw, err, sizeof err);
            break;
        case GW_WORKSPACE:
            st = store_gw_workspace_start (store, gw->ws, GWOPS_WORKSPACE_MAX, workspace_listed, gw, err, sizeof err);
            break;
        case GW_LINK_ISSUE:
            st = store_gw_link_issue_start (store, gw->hash, gw->ws, gw->ttl_s, link_issued, gw, err, sizeof err);
            break;
        case GW_LINK_TAKE:
            st = store_gw_link_take_start (store, gw->hash, link_taken, gw, err, sizeof err);
            break;
        case GW_KEY_CREATE:
            st = store_gw_apikey_create_start (store, gw->hash, gw->ws, gw->name, gw->prefix, MAX_KEYS, key_created,
                                               gw, err, sizeof err);
            break;
        case GW_KEY_LIST:
            st = store_gw_apikey_list_start (store, gw->ws, MAX_KEYS_LISTED, keys_listed, gw, err, sizeof err);
            break;
        case GW_KEY_REVOKE:
            st = store_gw_apikey_revoke_start (store, gw->ws, gw->key_id, key_revoked, gw, err, sizeof err);
            break;
        case GW_KEY_VERIFY:
            st = store_gw_apikey_verify_start (store, gw->hash, key_verified, gw, err, sizeof err);
            break;
    }
    if (st != FR_OK)
        gw_failed (gw, st, err);
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
