/* connect.c - the connect flow (RFC 6749 authorization code with RFC 7636 PKCE).
 *
 *   connect:    a random state (stored only as its SHA-256) and a PKCE verifier (sealed) go into
 *               pending_authorizations; the reply is the URL to send the user to.
 *   callback:   one UPDATE marks the state used and returns its row, so a reloaded callback URL
 *               finds it spent; a connect bound to a browser (the dashboard's, browser_binding)
 *               whose callback brings another binding or none is spent as browser_mismatch by
 *               that UPDATE, and its code never leaves the worker; the code is exchanged exactly once, never retried (a code is
 *               single use: a retry after a timeout could only fail, or be taken for a replay);
 *               the tokens are stored like an import and only then is the caller answered. */
#include "connect.h"
#include "calls.h"
#include "dbwait.h"
#include "disconnect.h"
#include "loads.h"
#include "fields.h"
#include "reply.h"
#include "scopes.h"
#include "store_connect.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "oauth.h"
#include "ratelimit.h"
#include "text.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_REDIRECT_URI    2048
#define MAX_RETURN_TO       2048                     /* where the gateway sends the user afterwards */
#define MAX_STATE_LEN       256                      /* the broker's routing limit */
#define MAX_ERROR_LEN       128
#define MAX_DESCRIPTION_IN  2048                     /* error_description accepted ... */
#define MAX_DESCRIPTION     200                      /* ... and kept for messages and logs */
#define MAX_URI_SHOWN       120                      /* of a redirect URI quoted in a message or hint
                                                        (error.detail has it whole) */
#define STATE_BYTES         32                       /* 256 bits of state and of PKCE verifier */
#define DEFAULT_EXPIRES_IN  3600                     /* when a provider omits expires_in */
#define EXCHANGE_STORE_TRIES 5                       /* a code exchange's tokens, lost with the database */

/* What an operator needs to fix a redirect URI mismatch; sent as error.detail. */
typedef struct {
    const char *provider;
    const char *redirect_uri_sent;
    const char *provider_error;
    const char *provider_error_description;
} redirect_detail_t;

/* return_to: an absolute http(s) URL with a host, no fragment, no backslash (the gateway
 * checks its origin against the allow-list; the worker keeps only well-formed ones). */
static int
return_to_ok (const char *s)
{
    size_t len = strlen (s);
    size_t skip = len >= 8 && strncasecmp (s, "https://", 8) == 0 ? 8
                : len >= 7 && strncasecmp (s, "http://", 7) == 0 ? 7 : 0;
    if (!skip || len == skip || s [skip] == '/' || s [skip] == '?')
        return 0;
    return strpbrk (s, "#\\ ") == NULL;
}

/* An absolute http(s) URI with a host, without fragment, spaces or control characters. */
static int
redirect_uri_ok (const char *uri)
{
    size_t skip;
    if (strlen (uri) > MAX_REDIRECT_URI)
        return 0;
    for (const char *c = uri; *c; c++)
        if ((unsigned char) *c <= 0x20 || (unsigned char) *c >= 0x7f || *c == '#')
            return 0;
    if (strncasecmp (uri, "https://", 8) == 0)
        skip = 8;
    else
    if (strncasecmp (uri, "http://", 7) == 0)
        skip = 7;
    else
        return 0;
    size_t host = strcspn (uri + skip, "/?:");
    return host > 0 && !memchr (uri + skip, '@', strcspn (uri + skip, "/?"));
}

/* An error reply with error.detail for a redirect URI mismatch. */
static void
reply_error_detail (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                    int64_t retry_after, const redirect_detail_t *d)
{
    if (!d) {
        reply_error (w, job, st, message, hint, retry_after);
        return;
    }
    codec_builder_t *o = reply_begin (w, job, 0, 1);
    codec_str (o, "error");
    codec_map (o, retry_after >= 0 ? 5 : 4);
    codec_kv_str (o, "code", result_code (st));
    codec_kv_str (o, "message", message);
    codec_kv_str (o, "hint", hint ? hint : result_default_hint (st));
    if (retry_after >= 0)
        codec_kv_int (o, "retry_after", retry_after);
    codec_str (o, "detail");
    codec_map (o, 4);
    codec_kv_str (o, "provider", d->provider);
    codec_kv_str (o, "redirect_uri_sent", d->redirect_uri_sent);
    codec_kv_str (o, "provider_error", d->provider_error);
    codec_kv_str (o, "provider_error_description", d->provider_error_description);
    reply_send (w, job);
}

const char *
connect_no_refresh_token_hint (const catalog_provider_t *p, const char *requested, char *buf, size_t len)
{
    const char *unasked = requested ? catalog_refresh_scope_missing (p, requested) : NULL;
    const char *param = catalog_offline_param_missing (p);
    if (param)
        /* no consent screen helps: the authorization request does not ask for offline access */
        snprintf (buf, len, "provider entry \"%s\" does not ask for offline access: its authorization_params lack "
                  "%s (a providers file's authorization_params replace the built-in ones whole), so no refresh "
                  "token is issued whatever the user approves; operators: add it%s to the entry, restart the "
                  "workers, then connect again", p->name, param, catalog_is_google (p) ? " (and prompt=consent)" : "");
    else
    if (catalog_is_google (p))
        snprintf (buf, len, "the provider issues a refresh token only on a full consent screen: open "
                  "https://myaccount.google.com/permissions with the account of this integration, remove "
                  "the app's access, then connect again");
    else
    if (unasked)
        snprintf (buf, len, "the integration was connected without scope \"%.100s\", which provider \"%s\" needs "
                  "to issue a refresh token: connect again, and the connect asks for it", unasked, p->name);
    else
    if (p && p->refresh_token_scope_count && requested)
        snprintf (buf, len, "provider \"%s\" was asked for scope \"%.100s\" and still issued no refresh token: "
                  "remove the app's access in the account's settings at the provider, then connect again and "
                  "approve every permission (offline access among them)", p->name, p->refresh_token_scopes [0]);
    else
    if (p && p->refresh_token_scope_count)
        /* a token request does not know what the connect asked for; doctor does */
        snprintf (buf, len, "provider \"%s\" issues a refresh token only for scope \"%.100s\", which a connect asks "
                  "for: connect again, and if none comes, remove the app's access in the account's settings at the "
                  "provider first (ferrulectl doctor says which)", p->name, p->refresh_token_scopes [0]);
    else
        snprintf (buf, len, "the provider issued no refresh token: check that the provider entry asks for offline "
                  "access (refresh_token_scopes, authorization_params), revoke the app's access in the account's "
                  "settings at the provider, then connect again");
    return buf;
}

int
connect_never_expires (int refresh_token_missing, int64_t lifetime_s)
{
    return refresh_token_missing && lifetime_s >= OAUTH_MAX_EXPIRES_IN;
}

/* A rejection of a token that cannot be renewed, waiting for its write (dbwait.c). */
typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    char provider [CATALOG_MAX_NAME + 1];
    int64_t generation;
    int never_expires;                   /* connect_never_expires: said in the message */
    int named;                           /* the request named the token (not a token request after it) */
    int replied;                         /* its deadline passed before the write started: nobody waits */
} reject_wait_t;

static void
reject_stored (void *arg, fr_status_t st, const store_row_t *row, const store_extra_t *x, const char *err)
{
    reject_wait_t *rw = arg;
    worker_t *w = rw->w;
    const job_t *job = &rw->job;
    char message [600];
    (void) x;
    if (st != FR_OK) {
        /* the entry stays rejected (its token unserved): the next token request writes again */
        if (!rw->replied)
            reply_store_error (w, job, st, err);
        goto out;
    }
    /* the row says what follows, read again at the next use: needs_reconnect, or another
     * generation (disconnected, connected again) */
    cache_entry_t *e = cache_get (w->cache, rw->id);
    if (e && (strcmp (row->status, "active") != 0 || row->generation != rw->generation))
        e->rejected = 0;
    cache_drop (w->cache, rw->id);
    loads_invalidate (w, rw->id);        /* our own change is not notified to us */
    if (rw->replied)
        goto out;
    if (strcmp (row->status, "needs_reconnect") == 0) {
        snprintf (message, sizeof message, "the access token of integration \"%s\" was rejected by the API it was "
                  "used with, and provider \"%s\" issued no refresh token to replace it%s: access was revoked or "
                  "ended at the provider, and the integration must be connected again", rw->id, rw->provider,
                  rw->never_expires ? " (its tokens do not expire)" : "");
        if (row->generation == rw->generation && rw->named)
            log_warning (rw->id, job->rid, "%s; marked needs_reconnect", message);
        reply_error (w, job, FR_NEEDS_RECONNECT, message, "disconnect the integration and connect it again "
                     "(ferrulectl doctor says so)", -1);
    }
    else
    if (strcmp (row->status, "disconnected") == 0) {
        snprintf (message, sizeof message, "integration \"%s\" is disconnected", rw->id);
        reply_error (w, job, FR_DISCONNECTED, message, NULL, -1);
    }
    else {
        /* connected again meanwhile: the rejected token is no longer the one served */
        snprintf (message, sizeof message, "integration \"%s\" was connected again while its rejected token was "
                  "reported", rw->id);
        reply_error (w, job, FR_UNAVAILABLE, message, "ask for a token again: the new connect's is served", 0);
    }
out:
    mem_free (rw);
}

static void
reject_start (worker_t *w, store_t *store, void *arg)
{
    reject_wait_t *rw = arg;
    char message [400], err [256];
    fr_status_t st;
    /* written even when nobody waits any more: until it is, the token is served by the other
     * workers, and this one answers no token request for the integration but by writing it */
    if (dbwait_requeue_late (w, store, reject_start, rw)) {
        rw->replied = 1;
        return;
    }
    if (!store) {
        mem_free (rw);                   /* the worker is stopping */
        return;
    }
    snprintf (message, sizeof message, "an API rejected the access token (token --reject) and provider \"%s\" "
              "issued no refresh token: access was revoked or ended at the provider", rw->provider);
    if ((st = store_reject_unrenewable_start (store, rw->id, rw->generation, message, reject_stored, rw, err,
                                              sizeof err)) != FR_OK) {
        if (!rw->replied)
            reply_store_error (w, &rw->job, st, err);
        mem_free (rw);
    }
}

void
connect_reject_unrenewable (worker_t *w, const job_t *job, cache_entry_t *e)
{
    reject_wait_t *rw = mem_alloc (sizeof *rw);
    rw->named = !e->rejected;
    /* from now on, not once the write is in: a token request meanwhile would be served it */
    cache_reject_token (e);
    rw->w = w;
    rw->job = *job;
    snprintf (rw->id, sizeof rw->id, "%s", e->id);
    snprintf (rw->provider, sizeof rw->provider, "%s", e->provider ? e->provider : "");
    rw->generation = e->generation;
    rw->never_expires = connect_never_expires (e->refresh_token_missing, e->lifetime_s);
    dbwait_add_for (w, reject_start, rw, &rw->job);
}

void
connect_reply_no_refresh_token (worker_t *w, const job_t *job, const cache_entry_t *e)
{
    char message [400], hint [500], when [32];
    const catalog_provider_t *p = e->provider ? catalog_find (w->catalog, e->provider) : NULL;
    int64_t now = clock_wall_ms () / 1000;
    if (e->access_token && e->access_expires_at > now)
        snprintf (message, sizeof message, "integration \"%s\" has no refresh token (the provider issued none when it "
                  "was connected): its access token expires at %s, sooner than asked, and cannot be renewed",
                  e->id, clock_rfc3339 (e->access_expires_at, when, sizeof when));
    else
        snprintf (message, sizeof message, "integration \"%s\" has no refresh token (the provider issued none when it "
                  "was connected): its access token expired%s%s and cannot be renewed", e->id,
                  e->access_expires_at > 0 ? " at " : "",
                  e->access_expires_at > 0 ? clock_rfc3339 (e->access_expires_at, when, sizeof when) : "");
    reply_error (w, job, FR_NO_REFRESH_TOKEN, message, connect_no_refresh_token_hint (p, NULL, hint, sizeof hint), -1);
}

/* --- connect ------------------------------------------------------------------------------ */

/* A connect whose authorization URL is built, waiting for its pending authorization to be
 * written (dbwait.c) before it is answered: what the row and the answer need, owned. */
typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    char state_hash [65];
    char retry_hash [65];                 /* the retry token this connect spends, "" none */
    char browser_hash [65];               /* the binding its callback must bring, "" none */
    char *provider, *redirect_uri, *scopes, *return_to, *state, *url;
    unsigned char *verifier_ct;
    size_t verifier_ct_len;
    int32_t key_id;
} connect_wait_t;

static void
connect_wait_free (connect_wait_t *cw)
{
    mem_free (cw->provider);
    mem_free (cw->redirect_uri);
    mem_free (cw->scopes);
    mem_free (cw->return_to);
    mem_free_secret (&cw->state);
    mem_free (cw->url);
    mem_free (cw->verifier_ct);
    mem_free (cw);
}

static void
connect_pending_written (void *arg, fr_status_t st, int64_t expires_at, const char *err)
{
    connect_wait_t *cw = arg;
    worker_t *w = cw->w;
    const job_t *job = &cw->job;
    char when [32];
    if (st == FR_STATE_INVALID && cw->retry_hash [0]) {
        /* a retry of the same token, at once, got there first */
        reply_error (w, job, st, err, "start again from Connect on the dashboard", -1);
        connect_wait_free (cw);
        return;
    }
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        connect_wait_free (cw);
        return;
    }
    log_info (cw->id, job->rid, "connect started for provider \"%s\" with redirect URI \"%s\"%s%s; expires at %s",
              cw->provider, cw->redirect_uri, cw->verifier_ct ? " and PKCE" : "",
              cw->browser_hash [0] ? ", bound to the browser that started it" : "",
              clock_rfc3339 (expires_at, when, sizeof when));
    codec_builder_t *o = reply_begin (w, job, 1, 7);
    codec_kv_str (o, "authorization_url", cw->url);
    codec_kv_str (o, "state", cw->state);
    codec_kv_time (o, "expires_at", expires_at);
    codec_kv_str (o, "integration", cw->id);
    codec_kv_str (o, "provider", cw->provider);
    codec_kv_str (o, "redirect_uri", cw->redirect_uri);
    codec_kv_words (o, "scopes", cw->scopes);
    reply_send (w, job);
    connect_wait_free (cw);
}

/* The pending authorization's batch, on a free connection. A connect whose deadline passed
 * meanwhile is dropped unwritten (store NULL): its client was told timeout and holds no state. */
static void
connect_pending_start (worker_t *w, store_t *store, void *arg)
{
    connect_wait_t *cw = arg;
    char err [256];
    fr_status_t st;
    if (!store) {
        connect_wait_free (cw);
        return;
    }
    store_pending_new_t pn = { cw->state_hash, cw->id, cw->provider, cw->redirect_uri, cw->scopes, cw->key_id,
                               cw->verifier_ct, cw->verifier_ct_len, w->cfg.connect_state_ttl_s, cw->return_to,
                               cw->retry_hash [0] ? cw->retry_hash : NULL,
                               cw->browser_hash [0] ? cw->browser_hash : NULL };
    if ((st = store_pending_insert_start (store, &pn, connect_pending_written, cw, err, sizeof err)) != FR_OK) {
        reply_store_error (w, &cw->job, st, err);
        connect_wait_free (cw);
    }
}

/* connect_start, and connect_start_retry with retry_hash; browser_hash "" for an unbound connect. */
static void
connect_begin (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const char *retry_hash,
               const char *browser_hash)
{
    char *provider = NULL, *redirect_uri = NULL, *scopes = NULL, *state = NULL, *verifier = NULL, *return_to = NULL;
    char *challenge = NULL, *url = NULL, *words = NULL;
    unsigned char *verifier_ct = NULL;
    size_t verifier_ct_len = 0;
    int32_t key_id = 0;
    const char **list = NULL;
    size_t nlist = 0;
    char err [512], state_hash [65];
    fr_status_t st;
    int r;

    if ((r = fields_str (w, job, root, "provider", CATALOG_MAX_NAME, 1, &provider)) < 0)
        goto out;
    if (r == 0) {
        reply_error (w, job, FR_BAD_REQUEST, "\"provider\" is required", NULL, -1);
        goto out;
    }
    if ((r = fields_str (w, job, root, "redirect_uri", MAX_REDIRECT_URI, 1, &redirect_uri)) < 0)
        goto out;
    if (r == 0 || !redirect_uri_ok (redirect_uri)) {
        char shown [120];
        text_printable (shown, sizeof shown, redirect_uri, (size_t) -1, 100);
        snprintf (err, sizeof err, r == 0 ? "\"redirect_uri\" is required"
                  : "\"redirect_uri\" \"%s\" is not an absolute http:// or https:// URI with a host (and no fragment)",
                  shown);
        reply_error (w, job, FR_BAD_REQUEST, err,
                            "give the callback URI registered in the provider's OAuth app, for example "
                            "https://app.example.com/oauth/callback", -1);
        goto out;
    }
    if (fields_scopes (w, job, root, "scopes", SCOPES_MAX, &scopes) < 0)
        goto out;
    if ((r = fields_str (w, job, root, "return_to", MAX_RETURN_TO, 1, &return_to)) < 0)
        goto out;
    if (r == 1 && !return_to_ok (return_to)) {
        reply_error (w, job, FR_BAD_REQUEST,
                     "\"return_to\" must be an absolute http:// or https:// URL of at most 2048 characters, "
                     "without a fragment", "give the page of your application the user returns to", -1);
        goto out;
    }
    const catalog_provider_t *p = catalog_find (w->catalog, provider);
    if (!p) {
        snprintf (err, sizeof err, "provider \"%s\" is not in the catalog", provider);
        reply_error (w, job, FR_CONFIGURATION, err,
                            "use a provider name from the catalog, or add it with FERRULE_PROVIDERS_FILE", -1);
        goto out;
    }
    if ((st = catalog_check_credentials (p, err, sizeof err)) != FR_OK) {
        reply_error (w, job, st, err, NULL, -1);
        goto out;
    }
    /* a connect (or a retry) takes from the integration's bucket once it is well formed: one
     * refused for its own fields counted, and a client's bug left the next good one rate_limited */
    if (!ratelimit_admit (w, job, RATELIMIT_CONNECT, id))
        goto out;
    /* the request's scopes or the entry's default ones, and always those without which the
     * provider issues no refresh token (what the URL asks for is what is stored as requested) */
    words = catalog_connect_scopes (p, scopes);
    mem_free (scopes);
    scopes = *words ? mem_strdup (words) : NULL;
    /* the scope list as an array for the URL builder (pointers into words) */
    list = mem_alloc ((SCOPES_MAX + 2 * CATALOG_MAX_ITEMS + 1) * sizeof *list);
    for (char *save = NULL, *t = strtok_r (words, " ", &save); t && nlist < SCOPES_MAX + 2 * CATALOG_MAX_ITEMS;
         t = strtok_r (NULL, " ", &save))
        list [nlist++] = t;

    state = crypto_random_token (STATE_BYTES);
    if (p->pkce)
        verifier = crypto_random_token (STATE_BYTES);
    if (!state || (p->pkce && !verifier)) {
        reply_error (w, job, FR_INTERNAL, "could not draw random bytes for the state", NULL, -1);
        goto out;
    }
    crypto_sha256_hex (state, state_hash);
    if (verifier) {
        challenge = crypto_pkce_challenge (verifier);
        /* associated data: the state hash and the column, so the sealed verifier opens only in its row */
        st = crypto_seal (w->keyring, state_hash, "code_verifier", verifier, &verifier_ct, &verifier_ct_len,
                          &key_id, err, sizeof err);
        if (st != FR_OK || !challenge) {
            reply_error (w, job, st != FR_OK ? st : FR_INTERNAL, st != FR_OK ? err : "could not compute the PKCE challenge",
                                NULL, -1);
            goto out;
        }
    }
    url = oauth_authorization_url (p, NULL, redirect_uri, state, list, nlist, challenge);
    if (!url) {
        snprintf (err, sizeof err, "could not build the authorization URL for provider \"%s\" (too long?)", provider);
        reply_error (w, job, FR_CONFIGURATION, err, NULL, -1);
        goto out;
    }

    connect_wait_t *cw = mem_alloc (sizeof *cw);
    cw->w = w;
    cw->job = *job;
    snprintf (cw->id, sizeof cw->id, "%s", id);
    memcpy (cw->state_hash, state_hash, sizeof cw->state_hash);
    snprintf (cw->retry_hash, sizeof cw->retry_hash, "%s", retry_hash ? retry_hash : "");
    snprintf (cw->browser_hash, sizeof cw->browser_hash, "%s", browser_hash ? browser_hash : "");
    cw->key_id = key_id;
    cw->verifier_ct_len = verifier_ct_len;
    /* the connect owns them now */
    cw->provider = provider;
    cw->redirect_uri = redirect_uri;
    cw->scopes = scopes;
    cw->return_to = return_to;
    cw->state = state;
    cw->url = url;
    cw->verifier_ct = verifier_ct;
    provider = redirect_uri = scopes = return_to = state = url = NULL;
    verifier_ct = NULL;
    dbwait_add_for (w, connect_pending_start, cw, &cw->job);
out:
    mem_free (list);
    mem_free (words);
    mem_free (return_to);
    mem_free (provider);
    mem_free (redirect_uri);
    mem_free (scopes);
    mem_free_secret (&state);
    mem_free_secret (&verifier);
    mem_free (challenge);
    mem_free (verifier_ct);
    mem_free (url);
}

void
connect_start (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    char browser_hash [65];
    if (fields_binding (w, job, root, "browser_binding", browser_hash) < 0)
        return;
    connect_begin (w, job, root, id, NULL, browser_hash);
}

void
connect_start_retry (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const char *retry_hash,
                     const char *browser_hash)
{
    connect_begin (w, job, root, id, retry_hash, browser_hash);
}

/* --- callback ----------------------------------------------------------------------------- */

/* A failed callback waiting for its record: the reply follows the first try, so that the history
 * or the doctor a client asks for next sees how the attempt ended. The first try is not held for
 * a database that is away (nor past the request's deadline): the failure is the answer, whether
 * its record was written or not. A record the database could not take is tried again once it is
 * back, a few times. */
#define FAILED_RECORD_TRIES 5

typedef struct {
    worker_t *w;
    job_t job;
    char state_hash [65];
    char id [IDENT_MAX + 1];
    fr_status_t st;
    char *message, *hint;
    int64_t retry_after;
    int has_detail;
    redirect_detail_t d;                 /* its strings owned here */
    int tries;
    int replied;
} failed_wait_t;

static void failed_record (worker_t *w, store_t *store, void *arg);

static void
failed_free (failed_wait_t *fw)
{
    mem_free (fw->message);
    mem_free (fw->hint);
    mem_free ((char *) fw->d.provider);
    mem_free ((char *) fw->d.redirect_uri_sent);
    mem_free ((char *) fw->d.provider_error);
    mem_free ((char *) fw->d.provider_error_description);
    mem_free (fw);
}

static void
failed_recorded (void *arg, fr_status_t st, const char *err)
{
    failed_wait_t *fw = arg;
    int again = st == FR_DATABASE_UNAVAILABLE && fw->tries < FAILED_RECORD_TRIES;
    if (st != FR_OK)
        log_warning (fw->id, fw->job.rid, "could not record the failed connect%s: %s",
                     again ? dbwait_retry_when (fw->w) : "", err);
    if (!fw->replied)
        reply_error_detail (fw->w, &fw->job, fw->st, fw->message, fw->hint, fw->retry_after,
                            fw->has_detail ? &fw->d : NULL);
    fw->replied = 1;
    if (again)
        dbwait_add (fw->w, failed_record, fw, -1);
    else
        failed_free (fw);
}

/* Never lost to its deadline: how the attempt ended is history, late or not (a first try whose
 * deadline passed before a connection was free is queued again without one). */
static void
failed_record (worker_t *w, store_t *store, void *arg)
{
    failed_wait_t *fw = arg;
    char err [256];
    fr_status_t st;
    if (dbwait_requeue_late (w, store, failed_record, fw)) {
        fw->replied = 1;
        return;
    }
    if (!store) {
        fw->tries = FAILED_RECORD_TRIES;
        failed_recorded (fw, FR_UNAVAILABLE, "the worker is stopping");
        return;
    }
    fw->tries++;
    if ((st = store_pending_failed_start (store, fw->state_hash, fw->id, result_code (fw->st), fw->message,
                                          failed_recorded, fw, err, sizeof err)) != FR_OK)
        failed_recorded (fw, st, err);
}

/* Fails a callback: log, record (best effort: the pending row and the history say how the
 * attempt ended), then reply. */
static void
callback_fail (worker_t *w, const job_t *job, const char *state_hash, const char *id, fr_status_t st,
               const char *message, const char *hint, int64_t retry_after, const redirect_detail_t *d)
{
    log_warning (id, job->rid, "connect failed: %s: %s", result_code (st), message);
    failed_wait_t *fw = mem_alloc (sizeof *fw);
    memset (fw, 0, sizeof *fw);
    fw->w = w;
    fw->job = *job;
    snprintf (fw->state_hash, sizeof fw->state_hash, "%s", state_hash);
    snprintf (fw->id, sizeof fw->id, "%s", id);
    fw->st = st;
    fw->message = mem_strdup (message);
    fw->hint = mem_strdup (hint);
    fw->retry_after = retry_after;
    if (d) {
        fw->has_detail = 1;
        fw->d.provider = mem_strdup (d->provider);
        fw->d.redirect_uri_sent = mem_strdup (d->redirect_uri_sent);
        fw->d.provider_error = mem_strdup (d->provider_error);
        fw->d.provider_error_description = mem_strdup (d->provider_error_description);
    }
    /* the first try starts even on a connection that is down (and fails at once, answered with
     * the failure): the answer does not wait for the database */
    dbwait_add (w, failed_record, fw, job->deadline_ms);
}

/* The provider redirected with ?error=...: nothing to exchange. */
static void
callback_provider_error (worker_t *w, const job_t *job, const char *state_hash, const store_pending_t *pd,
                         const catalog_provider_t *p, const char *error, const char *description)
{
    char message [900], hint [500], desc [MAX_DESCRIPTION + 1], code [MAX_ERROR_LEN + 1];
    char uri [MAX_URI_SHOWN + 4];
    const char *hint_used = NULL;
    redirect_detail_t d, *dp = NULL;
    fr_status_t st;

    text_printable (code, sizeof code, error, (size_t) -1, MAX_ERROR_LEN);
    text_printable (desc, sizeof desc, description, (size_t) -1, MAX_DESCRIPTION);
    const char *sep = desc [0] ? ": " : "";
    /* at the consent screen access_denied is the user's no; the other codes mean what they mean
     * at a token endpoint */
    oauth_kind_t kind = oauth_error_kind (p, code, desc);
    if (strcasecmp (code, "access_denied") == 0) {
        st = FR_ACCESS_DENIED;
        snprintf (message, sizeof message, "access to provider \"%s\" was declined for integration \"%s\" at the "
                  "consent screen (access_denied%s%s)", p->name, pd->integration, sep, desc);
    }
    else
    if (strcasecmp (code, "login_required") == 0 || strcasecmp (code, "consent_required") == 0
    ||  strcasecmp (code, "interaction_required") == 0) {
        /* OpenID Connect: the provider wants the user to sign in or approve, the user's to do */
        st = FR_ACCESS_DENIED;
        snprintf (message, sizeof message, "provider \"%s\" needs the user to sign in or approve before integration "
                  "\"%s\" can be connected (%s%s%s)", p->name, pd->integration, code, sep, desc);
        hint_used = "start again from Connect, sign in at the provider and approve the access asked for";
    }
    else
    if (kind == OAUTH_REDIRECT_MISMATCH) {
        st = FR_REDIRECT_URI_MISMATCH;
        /* a URI of up to 2048 characters, quoted whole, cut the provider's words and the advice */
        text_printable (uri, sizeof uri, pd->redirect_uri, (size_t) -1, MAX_URI_SHOWN);
        snprintf (message, sizeof message, "provider \"%s\" rejected the redirect URI \"%s\" for integration \"%s\": "
                  "it must match one registered in the provider's OAuth app (%s%s%s)", p->name, uri,
                  pd->integration, code, sep, desc);
        snprintf (hint, sizeof hint, "register \"%s\" exactly (scheme, host, port, path, trailing slash) in the OAuth "
                  "app of provider \"%s\", or connect with a registered redirect URI; users: contact support with the "
                  "provider name and this message", uri, p->name);
        hint_used = hint;
        d = (redirect_detail_t) { p->name, pd->redirect_uri, code, desc [0] ? desc : NULL };
        dp = &d;
    }
    else
    if (kind == OAUTH_INVALID_SCOPE) {
        st = FR_INVALID_SCOPE;
        snprintf (message, sizeof message, "provider \"%s\" rejected the scopes requested for integration \"%s\" "
                  "(\"%s\"): invalid_scope%s%s", p->name, pd->integration, pd->scopes ? pd->scopes : "", sep, desc);
    }
    else
    if (kind == OAUTH_INVALID_CLIENT) {
        st = FR_INVALID_CLIENT;
        snprintf (message, sizeof message, "provider \"%s\" refused the OAuth client at the authorization step for "
                  "integration \"%s\" (%s%s%s)", p->name, pd->integration, code, sep, desc);
        /* only the client id went there: no secret was checked */
        snprintf (hint, sizeof hint, "check the client id of provider \"%s\" (%s, or the providers file) against "
                  "the provider's OAuth app, and that the app allows the authorization code flow for this kind of "
                  "account, then start again from Connect; users: contact support with the provider name and this "
                  "message", p->name, p->client_id_env ? p->client_id_env : "?");
        hint_used = hint;
    }
    else
    if (kind == OAUTH_TRANSIENT) {
        st = FR_PROVIDER_UNAVAILABLE;
        snprintf (message, sizeof message, "provider \"%s\" failed at the authorization step for integration \"%s\" "
                  "(%s%s%s)", p->name, pd->integration, code, sep, desc);
        hint_used = "the provider failed for now: wait a moment, then start again from Connect";
    }
    else {
        st = FR_CONFIGURATION;
        snprintf (message, sizeof message, "provider \"%s\" refused the authorization request for integration \"%s\" "
                  "(%s%s%s)", p->name, pd->integration, code, sep, desc);
        hint_used = "check the provider entry (pkce, scopes, authorization parameters) against the provider's OAuth app";
    }
    callback_fail (w, job, state_hash, pd->integration, st, message, hint_used, -1, dp);
}

static void on_exchange (void *arg, const http_response_t *resp);

/* A callback whose state is being taken: its fields, owned. */
typedef struct {
    worker_t *w;
    job_t job;
    char state_hash [65];
    char browser_hash [65];              /* of the callback's browser_binding, "" none */
    char *code, *error, *description;
} callback_wait_t;

static void
callback_wait_free (callback_wait_t *cw)
{
    mem_free_secret (&cw->code);
    mem_free (cw->error);
    mem_free (cw->description);
    mem_free (cw);
}

/* The callback once its state is taken (or refused): the exchange, or why not. */
static void
callback_taken (void *arg, fr_status_t st, store_pending_t *taken, const char *taken_err)
{
    callback_wait_t *cw = arg;
    worker_t *w = cw->w;
    const job_t *job = &cw->job;
    const char *state_hash = cw->state_hash, *code = cw->code, *error = cw->error, *description = cw->description;
    char *verifier = NULL;
    oauth_request_t *req = NULL;
    store_pending_t pd;
    char err [512], message [700];

    memset (&pd, 0, sizeof pd);
    if (st == FR_BROWSER_MISMATCH && taken) {
        /* spent already, and nothing sent to the provider: recorded, then answered */
        pd = *taken;
        callback_fail (w, job, state_hash, pd.integration, st, taken_err, NULL, -1, NULL);
        goto out;
    }
    if (st != FR_OK) {
        log_warning (NULL, job->rid, "callback refused: %s", taken_err);
        reply_store_error (w, job, st, taken_err);
        goto out;
    }
    pd = *taken;
    const catalog_provider_t *p = catalog_find (w->catalog, pd.provider);
    if (!p) {
        snprintf (message, sizeof message, "provider \"%s\" of integration \"%s\" is no longer in the catalog",
                  pd.provider, pd.integration);
        callback_fail (w, job, state_hash, pd.integration, FR_CONFIGURATION, message, NULL, -1, NULL);
        goto out;
    }
    if (error) {
        callback_provider_error (w, job, state_hash, &pd, p, error, description);
        goto out;
    }
    if ((st = catalog_check_credentials (p, err, sizeof err)) != FR_OK) {
        callback_fail (w, job, state_hash, pd.integration, st, err, NULL, -1, NULL);
        goto out;
    }
    if (pd.verifier_ct
    &&  (st = crypto_open (w->keyring, pd.key_id, state_hash, "code_verifier", pd.verifier_ct, pd.verifier_ct_len,
                           &verifier, err, sizeof err)) != FR_OK) {
        callback_fail (w, job, state_hash, pd.integration, st, err, NULL, -1, NULL);
        goto out;
    }
    req = oauth_code_request_new (p, code, pd.redirect_uri, verifier);
    if (!req) {
        snprintf (message, sizeof message, "could not build the code exchange for provider \"%s\"", p->name);
        callback_fail (w, job, state_hash, pd.integration, FR_CONFIGURATION, message, NULL, -1, NULL);
        goto out;
    }
    int64_t last = clock_mono_ms () + w->cfg.http_timeout_ms + w->cfg.db.statement_timeout_ms + 500;
    if (w->draining && w->drain_last_ms < last) {
        /* the drain began while the state was being taken, on a slow database: the state is
         * spent, and this exchange is the connection's only way on. Made all the same, and
         * waited for as a call out at the drain's start is (worker.c), a little longer */
        w->drain_last_ms = last;
        log_info (pd.integration, job->rid, "exchanging the authorization code although the worker is draining: the "
                  "callback's state was taken as the drain began; the drain waits for it");
    }
    call_t *c = calls_new (w, CALLS_EXCHANGE, job, pd.integration, p);
    c->sent = mem_strdup (code);
    c->verifier = verifier;              /* the call's now */
    verifier = NULL;
    memcpy (c->state_hash, state_hash, sizeof c->state_hash);
    c->redirect_uri = pd.redirect_uri;
    c->requested_scopes = pd.scopes;
    pd.redirect_uri = NULL;
    pd.scopes = NULL;
    /* exactly once: no retry, whatever happens (a code is single use), not even curl's own */
    if (http_post (w->http, req->url, req->body, req->authorization, HTTP_AT_MOST_ONCE, on_exchange, c) != 0) {
        calls_free (w, c);
        callback_fail (w, job, state_hash, pd.integration, FR_INTERNAL, "could not start the provider call", NULL, -1, NULL);
        goto out;
    }
    log_debug (pd.integration, job->rid, "exchanging the authorization code with provider \"%s\"", p->name);
out:
    oauth_request_destroy (&req);
    store_pending_clear (&pd);
    mem_free_secret (&verifier);
    callback_wait_free (cw);
}

/* How long a callback whose state is taken now may take to end: the take's answer, the code's
 * exchange, and the batch that stores its tokens (each statement the statement timeout and the
 * 250 ms the store waits past it). */
static int64_t
callback_drain_budget (const worker_t *w)
{
    return w->cfg.http_timeout_ms + 2 * (w->cfg.db.statement_timeout_ms + 250);
}

/* Takes the callback's state, on a free connection (dbwait.c). A callback whose deadline passed
 * meanwhile is dropped with its state untaken (store NULL): the URL still works when retried. */
static void
callback_take_start (worker_t *w, store_t *store, void *arg)
{
    callback_wait_t *cw = arg;
    char err [256];
    fr_status_t st;
    if (!store) {
        callback_wait_free (cw);
        return;
    }
    if (cw->code && w->draining && clock_mono_ms () + callback_drain_budget (w) > w->drain_until_ms) {
        /* an exchange that may outlast the drain, with the storing of its tokens, is not started:
         * the process would exit with the code spent at the provider and the grant nowhere. The
         * state is left untaken and the code unsent, so the same callback works on the
         * partition's next owner. */
        snprintf (err, sizeof err, "worker \"%s\" is shutting down and starts no code exchange it might not finish; "
                  "the callback was not used", w->cfg.worker_id);
        log_info (NULL, cw->job.rid, "no code exchange started: the drain ends in %lld ms, and taking the state, the "
                  "provider call and storing the tokens may take %lld ms; the callback is left unused",
                  (long long) (w->drain_until_ms - clock_mono_ms ()), (long long) callback_drain_budget (w));
        reply_error (w, &cw->job, FR_UNAVAILABLE, err, "send the same callback again: another worker takes it over",
                     1);
        callback_wait_free (cw);
        return;
    }
    if ((st = store_pending_take_start (store, cw->state_hash, cw->browser_hash [0] ? cw->browser_hash : NULL,
                                        callback_taken, cw, err, sizeof err)) != FR_OK) {
        log_warning (NULL, cw->job.rid, "callback refused: %s", err);
        reply_store_error (w, &cw->job, st, err);
        callback_wait_free (cw);
    }
}

void
connect_callback (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *state = NULL, *code = NULL, *error = NULL, *description = NULL;
    char state_hash [65], browser_hash [65];
    int r;

    if ((r = fields_str (w, job, root, "state", MAX_STATE_LEN, 1, &state)) <= 0) {
        if (r == 0)
            reply_error (w, job, FR_BAD_REQUEST, "\"state\" is required", NULL, -1);
        goto out;
    }
    if (fields_str (w, job, root, "code", OAUTH_MAX_INPUT, 1, &code) < 0
    ||  fields_str (w, job, root, "error", MAX_ERROR_LEN, 1, &error) < 0
    ||  fields_str (w, job, root, "error_description", MAX_DESCRIPTION_IN, 0, &description) < 0
    ||  fields_binding (w, job, root, "browser_binding", browser_hash) < 0)
        goto out;
    if (!code && !error) {
        reply_error (w, job, FR_BAD_REQUEST, "the callback has neither \"code\" nor \"error\"",
                            "pass the whole URL the provider redirected the browser to", -1);
        goto out;
    }
    crypto_sha256_hex (state, state_hash);
    /* the state is taken by a batch on a free connection; the callback goes on when it is */
    callback_wait_t *cw = mem_alloc (sizeof *cw);
    cw->w = w;
    cw->job = *job;
    memcpy (cw->state_hash, state_hash, sizeof cw->state_hash);
    memcpy (cw->browser_hash, browser_hash, sizeof cw->browser_hash);
    cw->code = code;
    cw->error = error;
    cw->description = description;
    code = error = description = NULL;
    dbwait_add_for (w, callback_take_start, cw, &cw->job);
out:
    mem_free (state);
    mem_free_secret (&code);
    mem_free (error);
    mem_free (description);
}

/* A successful exchange's tokens, sealed and waiting to be stored: the call stays open (a
 * draining worker waits for it) until they are. */
typedef struct {
    call_t *c;
    unsigned char *at_ct, *rt_ct;
    size_t at_len, rt_len;
    int32_t key_id;
    int64_t expires_at, expires_in;
    int has_refresh;
    int no_expiry;                   /* neither a lifetime nor a refresh token came */
    char unusable [160];             /* why the access token beside the refresh token was unusable; "" */
    int tries;                       /* upserts lost with the database so far */
    char fingerprint [CRYPTO_FINGERPRINT_LEN + 1];
    char *granted;
    char *api_base_url;              /* the answer's API base URL (the catalog's api_base_field), or NULL */
    int nmissing;
    char missing [512], detail [700];
} exchange_wait_t;

static void
exchange_free (worker_t *w, exchange_wait_t *ew)
{
    calls_free (w, ew->c);
    mem_free (ew->granted);
    mem_free (ew->api_base_url);
    mem_free (ew->at_ct);
    mem_free (ew->rt_ct);
    mem_free (ew);
}

/* The tokens could not be stored: the code is spent, so the user starts again. */
static void
exchange_not_stored (worker_t *w, exchange_wait_t *ew, fr_status_t st, const char *err)
{
    call_t *c = ew->c;
    char detail [700];
    log_error (c->id, c->job.rid, "the provider issued tokens but they could not be stored: %s", err);
    snprintf (detail, sizeof detail, "provider \"%s\" issued tokens for integration \"%s\" but they could not be "
              "stored (%.300s): start again from Connect", c->provider->name, c->id, err);
    /* not "retry": this callback's state and code are spent, and a retry answers state_invalid */
    reply_error (w, &c->job, st, detail, "start again from Connect once the service is back; this callback URL "
                 "cannot be used again", -1);
}

static void exchange_store_start (worker_t *w, store_t *store, void *arg);

/* This connect's tokens were stored by an earlier attempt whose answer was lost, and the
 * integration has left "active" since (a disconnect, a refresh token the provider refused): the
 * caller is told so, with the integration as it is. */
static void
exchange_overtaken (worker_t *w, exchange_wait_t *ew, const store_row_t *row, const store_extra_t *x, int reconnected)
{
    call_t *c = ew->c;
    char message [600];
    int gone = strcmp (row->status, "disconnected") == 0;
    if (gone)
        snprintf (message, sizeof message, "integration \"%s\" was connected with provider \"%s\", then disconnected "
                  "before this callback was answered: its tokens are destroyed", c->id, c->provider->name);
    else
        snprintf (message, sizeof message, "integration \"%s\" was connected with provider \"%s\", then became "
                  "\"%s\" before this callback was answered", c->id, c->provider->name, row->status);
    log_warning (c->id, c->job.rid, "%s", message);
    reply_with_integration (w, &c->job, gone ? FR_DISCONNECTED : FR_NEEDS_RECONNECT, message,
                            "connect the integration again to use it", row, x, NULL, reconnected);
}

/* The integration was disconnected after this callback took its state, while the code was at the
 * provider: the disconnect stands (its caller was told the tokens are destroyed), nothing of the
 * exchange is stored, and the refresh token it got, which nobody will hold, is revoked in the
 * background. Not journaled as a refresh's is: a worker that dies first leaves it valid there. */
static void
exchange_disconnected (worker_t *w, exchange_wait_t *ew, const store_row_t *row, const store_extra_t *x)
{
    call_t *c = ew->c;
    char message [600];
    snprintf (message, sizeof message, "integration \"%s\" was disconnected while this callback's code was exchanged "
              "with provider \"%s\": the tokens the provider issued are not stored%s", c->id, c->provider->name,
              ew->has_refresh ? ", and its refresh token is revoked there" : "");
    log_warning (c->id, c->job.rid, "%s", message);
    reply_with_integration (w, &c->job, FR_DISCONNECTED, message, "connect the integration again to use it", row, x,
                            NULL, 1);
    if (ew->has_refresh)
        disconnect_revoke_orphan (w, c->id, c->provider, ew->key_id, ew->rt_ct, ew->rt_len, c->job.rid, 0,
                                  "a connect");
}

/* Another connect or an import of the integration was stored after this callback took its state,
 * while its code was at the provider: the newer one stands (this exchange, ending last, wrote its
 * account over it), nothing of this one is stored. Its refresh token is left valid at the provider,
 * as a reconnect leaves the one it replaces: at providers that revoke per grant (Google) revoking
 * it would end the grant the newer connect holds, when both signed in with one account. */
static void
exchange_superseded (worker_t *w, exchange_wait_t *ew, const store_row_t *row, const store_extra_t *x)
{
    call_t *c = ew->c;
    char message [600];
    snprintf (message, sizeof message, "integration \"%s\" was connected again (or imported) while this callback's "
              "code was exchanged with provider \"%s\": the newer connection stands, and the tokens this sign-in "
              "got are not stored", c->id, c->provider->name);
    log_warning (c->id, c->job.rid, "%s", message);
    reply_with_integration (w, &c->job, FR_STATE_INVALID, message, "nothing to do if the newer connection is the "
                            "one wanted; otherwise connect the integration again", row, x, NULL, 1);
}

static void
exchange_stored (void *arg, fr_status_t st, const store_upserted_t *up, const store_row_t *row,
                 const store_extra_t *x, const char *err)
{
    exchange_wait_t *ew = arg;
    call_t *c = ew->c;
    worker_t *w = c->w;
    const catalog_provider_t *p = c->provider;
    char when [32];
    reply_warnings_t ws = { .count = 0 };
    if (st == FR_DATABASE_UNAVAILABLE && ew->tries < EXCHANGE_STORE_TRIES) {
        /* the code is spent and these tokens are the grant's only copy: stored once a connection
         * is up again (the caller may have been told "timeout" by then; the integration then
         * shows as connected). An upsert the server made before the loss is not made again: it
         * finds its own mark on the pending authorization, and what changed since stands. */
        ew->tries++;
        log_warning (c->id, c->job.rid, "could not store the new tokens (attempt %d), trying again once the database "
                     "is back: %s", ew->tries, err);
        dbwait_add (w, exchange_store_start, ew, -1);
        return;
    }
    if (st != FR_OK) {
        exchange_not_stored (w, ew, st, err);
        exchange_free (w, ew);
        return;
    }
    int reconnected = up->existed;
    cache_drop (w->cache, c->id);
    loads_invalidate (w, c->id);         /* a read in flight may predate it: our own change is not notified to us */
    if (up->disconnected) {
        exchange_disconnected (w, ew, row, x);
        exchange_free (w, ew);
        return;
    }
    if (up->superseded) {
        exchange_superseded (w, ew, row, x);
        exchange_free (w, ew);
        return;
    }
    if (up->earlier) {
        log_info (c->id, c->job.rid, "the tokens from provider \"%s\" were stored by an earlier attempt whose answer "
                  "was lost with the database connection: not stored again (the integration is \"%s\" at generation "
                  "%lld)", p->name, row->status, (long long) row->generation);
        if (strcmp (row->status, "active") != 0) {
            exchange_overtaken (w, ew, row, x, reconnected);
            exchange_free (w, ew);
            return;
        }
    }
    else
        log_info (c->id, c->job.rid, "%s with provider \"%s\": generation %lld, %s%s%s%s%s",
                  reconnected ? "reconnected" : "connected", p->name, (long long) up->generation,
                  ew->unusable [0] ? "no usable access token" : "access token until ",
                  ew->unusable [0] ? "" : clock_rfc3339 (ew->expires_at, when, sizeof when),
                  ew->has_refresh ? "" : ", no refresh token",
                  ew->nmissing ? ", scopes not granted: " : "", ew->nmissing ? ew->missing : "");
    if (ew->unusable [0])
        reply_warn (&ws, "provider_bad_response", NULL, "nothing to do now; if token requests of the integration fail "
                    "with provider_bad_response, see ferrulectl doctor",
                    "provider \"%s\" answered the code exchange of integration \"%s\" with a refresh token but no "
                    "usable access token (%s): the refresh token is stored, and the first token request refreshes to "
                    "get an access token", p->name, c->id, ew->unusable);
    if (ew->nmissing)
        reply_warn (&ws, "scopes_reduced", NULL, SCOPES_RECONNECT_HINT,
                  "provider \"%s\" granted fewer scopes than requested for integration \"%s\": missing %s",
                  p->name, c->id, ew->missing);
    if (ew->no_expiry)
        /* GitHub OAuth Apps' tokens, Notion's: nothing ends them but a revocation, and nothing
         * could renew them; a caller whose upstream call is refused says so (token --reject) */
        reply_warn (&ws, "no_refresh_token", NULL, "if a caller reports the token rejected, connect the integration again",
                    "provider \"%s\" gave the access token of integration \"%s\" no lifetime and issued no refresh "
                    "token: it is served as not expiring, until a caller reports it rejected", p->name, c->id);
    /* after an earlier attempt, the row may hold a refresh token imported since */
    if (!ew->has_refresh && !ew->no_expiry && (!up->earlier || x->refresh_token_missing)) {
        char message [600], hint [500];
        snprintf (message, sizeof message, "provider \"%s\" issued no refresh token for integration \"%s\": it is "
                  "stored and its access token works until %s, but it cannot be renewed after that",
                  p->name, c->id, clock_rfc3339 (ew->expires_at, when, sizeof when));
        /* an entry that does not ask for offline access: no consent screen helps, only its operator */
        reply_with_integration_cause (w, &c->job, FR_NO_REFRESH_TOKEN, message,
                                      connect_no_refresh_token_hint (p, c->requested_scopes ? c->requested_scopes : "",
                                                                     hint, sizeof hint),
                                      catalog_offline_param_missing (p) ? "provider_entry" : NULL, row, x, &ws,
                                      reconnected);
    }
    else
        reply_with_integration (w, &c->job, FR_OK, NULL, NULL, row, x, &ws, reconnected);
    exchange_free (w, ew);
}

/* The upsert and the row it wrote, one batch on a free connection (dbwait.c). Never dropped for
 * the request's deadline: the code is spent, and these tokens are the only copy of the grant. */
static void
exchange_store_start (worker_t *w, store_t *store, void *arg)
{
    exchange_wait_t *ew = arg;
    call_t *c = ew->c;
    char err [256];
    fr_status_t st;
    if (!store) {
        exchange_not_stored (w, ew, FR_UNAVAILABLE, "the worker stopped first");
        exchange_free (w, ew);
        return;
    }
    store_upsert_t u = { c->id, c->provider->name, ew->key_id, ew->at_ct, ew->at_len, ew->expires_at, ew->expires_in,
                         ew->rt_ct, ew->rt_len, ew->has_refresh ? ew->fingerprint : NULL, ew->granted,
                         c->requested_scopes ? c->requested_scopes : "", "connected", ew->detail, c->state_hash,
                         ew->api_base_url };
    if ((st = store_upsert_start (store, &u, exchange_stored, ew, err, sizeof err)) != FR_OK) {
        exchange_not_stored (w, ew, st, err);
        exchange_free (w, ew);
    }
}

/* Seals the tokens of a successful exchange and has them stored; 1 when the call is theirs now
 * (it ends with the store), 0 when it was answered here and the caller frees it. unusable: why
 * the answer's access token could not be used (its refresh token is stored all the same), or NULL. */
static int
exchange_succeeded (worker_t *w, call_t *c, oauth_result_t *res, const char *unusable)
{
    const catalog_provider_t *p = c->provider;
    const job_t *job = &c->job;
    char err [512] = "";
    exchange_wait_t *ew = mem_alloc (sizeof *ew);
    ew->c = c;
    /* no lifetime and no refresh token: a token that does not expire (GitHub OAuth Apps'), unless
     * the provider issues refresh tokens for offline access only, whose tokens expire though its
     * answers may not say when (Salesforce's never do): then it is one that cannot be renewed */
    ew->no_expiry = res->expires_in < 0 && !res->refresh_token && !res->expires_in_ignored
                    && !catalog_needs_offline_access (p);
    ew->expires_in = res->expires_in >= 0 ? res->expires_in : ew->no_expiry ? OAUTH_MAX_EXPIRES_IN : DEFAULT_EXPIRES_IN;
    if (res->expires_in_ignored)
        log_warning (c->id, NULL, "the provider's expires_in is not a number of seconds from 1 to 10 years: the token "
                     "is taken to last %d s", DEFAULT_EXPIRES_IN);
    ew->expires_at = clock_wall_ms () / 1000 + ew->expires_in;
    if (unusable) {
        /* as a refresh stores such an answer: an empty access token, expired, so that the first
         * token request refreshes */
        snprintf (ew->unusable, sizeof ew->unusable, "%s", unusable);
        ew->no_expiry = 0;
        ew->expires_in = 0;
        ew->expires_at = clock_wall_ms () / 1000 - 1;
    }
    ew->has_refresh = res->refresh_token != NULL;
    /* an odd extra field never fails the connect: the grant's tokens are stored all the same */
    if (res->api_base_ignored)
        log_warning (c->id, NULL, "the provider's \"%s\" is ignored, %s: the integration is stored without an API "
                     "base URL", p->api_base_field, res->api_base_ignored);
    fr_status_t st = crypto_seal (w->keyring, c->id, "access_token", unusable ? "" : res->access_token, &ew->at_ct,
                                  &ew->at_len, &ew->key_id, err, sizeof err);
    if (st == FR_OK && res->refresh_token)
        st = crypto_seal (w->keyring, c->id, "refresh_token", res->refresh_token, &ew->rt_ct, &ew->rt_len, &ew->key_id,
                          err, sizeof err);
    if (st != FR_OK) {
        log_error (c->id, job->rid, "could not seal the new tokens: %s", err);
        reply_error (w, job, FR_INTERNAL, "could not seal the new tokens: start again from Connect", NULL, -1);
        mem_free (ew->at_ct);
        mem_free (ew->rt_ct);
        mem_free (ew);
        return 0;
    }
    if (res->refresh_token)
        crypto_fingerprint (w->keyring, res->refresh_token, ew->fingerprint);
    ew->api_base_url = res->api_base_url;
    res->api_base_url = NULL;
    /* RFC 6749 5.1: no scope in the answer means the scopes requested were granted */
    ew->granted = mem_strdup (res->scope ? res->scope : (c->requested_scopes ? c->requested_scopes : ""));
    for (char *q = ew->granted; *q; q++)
        if (*q == ',')
            *q = ' ';
    char *as_requested = scopes_as_requested (c->requested_scopes, ew->granted, res->refresh_token != NULL);
    mem_free (ew->granted);
    ew->granted = as_requested;
    ew->nmissing = scopes_missing (c->requested_scopes, ew->granted, ew->missing, sizeof ew->missing);
    snprintf (ew->detail, sizeof ew->detail, "connected with provider \"%s\"%s%s%.300s%s%s", p->name,
              res->refresh_token ? "" : "; no refresh token issued", ew->nmissing ? "; scopes not granted: " : "",
              ew->nmissing ? ew->missing : "", unusable ? "; no usable access token, the first token request "
              "refreshes: " : "", unusable ? unusable : "");
    dbwait_add (w, exchange_store_start, ew, -1);   /* the code is spent: never dropped for time */
    return 1;
}

static void
on_exchange (void *arg, const http_response_t *resp)
{
    call_t *c = arg;
    worker_t *w = c->w;
    const catalog_provider_t *p = c->provider;
    oauth_result_t res;
    char message [900], hint [500], desc [MAX_DESCRIPTION + 1] = "", uri [MAX_URI_SHOWN + 4];
    redirect_detail_t d, *dp = NULL;
    const char *hint_used = NULL;
    memset (&res, 0, sizeof res);

    oauth_read_response (p, resp, w->cfg.max_provider_body, &res);
    /* everything the request carried that a provider, or a proxy's error page, could quote back */
    oauth_result_withhold (&res, c->sent, "authorization code");
    oauth_result_withhold (&res, c->verifier, "PKCE code verifier");
    oauth_result_withhold (&res, p->client_secret, "client secret");

    /* a refresh token beside an unusable access token: the code is spent and it is the grant's
     * only copy, so it is stored, as a refresh's answer like it is */
    if (res.kind == OAUTH_OK || (res.kind == OAUTH_BAD_RESPONSE && res.refresh_token)) {
        if (exchange_succeeded (w, c, &res, res.kind == OAUTH_OK ? NULL : res.detail)) {
            oauth_result_clear (&res);      /* sealed: the call ends when they are stored */
            return;
        }
        goto out;
    }
    fr_status_t st = oauth_kind_status (res.kind, 1);
    text_printable (desc, sizeof desc, res.error_description, (size_t) -1, MAX_DESCRIPTION);
    char said [400];
    if (res.error)
        snprintf (said, sizeof said, "%s%s%s", res.error, desc [0] ? ": " : "", desc);
    else
        snprintf (said, sizeof said, "%s", res.detail);
    switch (res.kind) {
        case OAUTH_INVALID_GRANT:
            snprintf (message, sizeof message, "provider \"%s\" did not accept the authorization code for integration "
                      "\"%s\": it expired or was already used (provider said: %s)", p->name, c->id, said);
            break;
        case OAUTH_REDIRECT_MISMATCH:
            text_printable (uri, sizeof uri, c->redirect_uri, (size_t) -1, MAX_URI_SHOWN);
            snprintf (message, sizeof message, "provider \"%s\" rejected the redirect URI \"%s\" sent with the code "
                      "of integration \"%s\": it must match the one registered in the provider's OAuth app and the "
                      "one the authorization used (provider said: %s)", p->name, uri, c->id, said);
            snprintf (hint, sizeof hint, "register \"%s\" exactly (scheme, host, port, path, trailing slash) in the "
                      "OAuth app of provider \"%s\" and start again from Connect; users: contact support with the "
                      "provider name and this message", uri, p->name);
            hint_used = hint;
            d = (redirect_detail_t) { p->name, c->redirect_uri, res.error ? res.error : "redirect_uri_mismatch",
                                      desc [0] ? desc : NULL };
            dp = &d;
            break;
        case OAUTH_INVALID_CLIENT:
            if (oauth_unauthorized_client (&res)) {
                /* RFC 6749 5.2: the client authenticated, and may not use this grant */
                snprintf (message, sizeof message, "provider \"%s\" accepted the OAuth client but refuses it the "
                          "authorization code grant, while exchanging the code of integration \"%s\" (provider said: "
                          "%s)", p->name, c->id, said);
                snprintf (hint, sizeof hint, "enable the authorization code grant for the OAuth app of provider \"%s\" "
                          "in the provider's settings (its client secret was accepted), then start again from "
                          "Connect", p->name);
                hint_used = hint;
                break;
            }
            snprintf (message, sizeof message, "provider \"%s\" rejected the OAuth client while exchanging the code "
                      "of integration \"%s\" (provider said: %s)", p->name, c->id, said);
            snprintf (hint, sizeof hint, "check the client id and secret of provider \"%s\" (%s and %s, or the "
                      "providers file) against the provider's OAuth app, then start again from Connect",
                      p->name, p->client_id_env ? p->client_id_env : "?", p->client_secret_env ? p->client_secret_env : "?");
            hint_used = hint;
            break;
        case OAUTH_INVALID_SCOPE:
            snprintf (message, sizeof message, "provider \"%s\" rejected the scopes of integration \"%s\" (\"%s\") "
                      "(provider said: %s)", p->name, c->id, c->requested_scopes ? c->requested_scopes : "", said);
            break;
        case OAUTH_TRANSIENT:
            snprintf (message, sizeof message, "provider \"%s\" failed while exchanging the code of integration "
                      "\"%s\" (%s); the code was not sent again", p->name, c->id, said);
            hint_used = "an authorization code works once and may be spent now: wait a moment, then start again from Connect";
            break;
        case OAUTH_BAD_RESPONSE:
            /* an HTML page, an empty or broken body: nothing the provider refused in words */
            snprintf (message, sizeof message, "provider \"%s\" answered the code exchange of integration \"%s\" "
                      "with something that is not a token response (%s); the code was not sent again",
                      p->name, c->id, said);
            hint_used = "an authorization code works once and may be spent now: start again from Connect; if it "
                        "happens again, something between the service and the provider (a proxy) may be answering "
                        "in its place";
            break;
        default:
            snprintf (message, sizeof message, "provider \"%s\" refused the code exchange for integration \"%s\" "
                      "(provider said: %s)", p->name, c->id, said);
            break;
    }
    callback_fail (w, &c->job, c->state_hash, c->id, st, message, hint_used,
                   st == FR_PROVIDER_UNAVAILABLE ? res.retry_after : -1, dp);
out:
    oauth_result_clear (&res);
    calls_free (w, c);
}

