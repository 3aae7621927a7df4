/* requests.c - a request's way in: the operation is read and dispatched; token, refresh, import,
 * status, history and ping are served here, the connect flow, disconnect, scopes, doctor and the
 * gateway's operations by their own modules */
#include "requests.h"
#include "store_chain.h"
#include "connect.h"
#include "disconnect.h"
#include "doctor.h"
#include "fields.h"
#include "events.h"
#include "gwops.h"
#include "keystats.h"
#include "links.h"
#include "loads.h"
#include "dbwait.h"
#include "oauth.h"
#include "once.h"
#include "ratelimit.h"
#include "reply.h"
#include "scopes.h"
#include "store_connect.h"
#include "clock.h"
#include "ident.h"
#include "ops.h"
#include "text.h"
#include "log.h"
#include "mem.h"
#include "refresh.h"
#include <stdio.h>
#include <string.h>

#define MAX_TOKEN_LEN   (16 * 1024)  /* real access tokens reach a few KiB (JWTs) */
#define MAX_IMPORT_SCOPES 256       /* a grant imported as it is: providers such as Google grant many */
#define MAX_MIN_VALID   86400
#define MAX_HISTORY     1000
#define MAX_RELOADS     3           /* reads of a row that keeps changing before the request gives up */
#define FRESH_ENOUGH_MS 10000       /* a token this young is not refreshed again for a min_valid it can never meet */

static void op_token (worker_t *w, job_t *job, const msgpack_object *root, const char *id, int forced);

/* A token request parked on its integration's row (loads.c) goes on from where it stopped. */
static void
token_loaded (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const store_row_t *row,
              const store_extra_t *x, fr_status_t st, const char *err, int forced)
{
    char why [512];
    (void) x;
    if (st == FR_OK && !refresh_loaded (w, id, row, &st, why, sizeof why))
        err = why;
    if (st != FR_OK) {
        if (st != FR_NOT_FOUND && st != FR_DATABASE_UNAVAILABLE)
            log_error (id, job->rid, "could not load the integration: %s", err);
        reply_store_error (w, job, st, err);
        return;
    }
    job->reloaded++;
    op_token (w, job, root, id, forced);
}

/* The integration's cache entry. One the cache does not hold is read without the loop waiting:
 * the request is parked (loads.c) and NULL returned, as it is when a reply was sent. */
static cache_entry_t *
entry_for (worker_t *w, const job_t *job, const msgpack_object *root, const char *id, int forced)
{
    cache_entry_t *e = cache_get (w->cache, id);
    if (e && !e->stale)
        return e;
    if (e && e->refresh)
        return e;        /* stale but busy: the refresh in flight reloads it */
    if (job->reloaded < MAX_RELOADS) {
        /* not read yet, or read a moment ago and dropped since: read (again) */
        loads_park (w, job, root, id, token_loaded, forced, 0);
        return NULL;
    }
    reply_error (w, job, FR_UNAVAILABLE, "the integration changed each time it was read",
                 "retry; if it lasts, look for a client changing this integration in a loop", 1);
    return NULL;
}

/* Refresh-ahead: a token served in the last part of its life (10 %, at least 60 s) is refreshed
 * in the background, so callers never wait on the provider for it. */
static void
refresh_ahead (worker_t *w, cache_entry_t *e, int64_t now)
{
    if (e->refresh || e->status != INTEG_ACTIVE || w->draining)
        return;                 /* a draining worker leaves it to the partition's next owner */
    int64_t lifetime = e->lifetime_s > 0 ? e->lifetime_s : 3600;   /* unknown only for imports without expiry */
    int64_t window = lifetime / 10 > 60 ? lifetime / 10 : 60;
    if (window > lifetime / 2)
        window = lifetime / 2;
    if (now >= e->access_expires_at - window)
        refresh_background (w, e, e->access_expires_at + 1, 0);    /* anything newer than this one */
}

/* A cached token that lasts min_valid seconds more is served as it is. */
static int
token_lasts (const cache_entry_t *e, int64_t now, int64_t min_valid)
{
    return e->access_token && e->access_expires_at >= now + min_valid;
}

/* A cache hit: counted, answered from the entry's packed reply, refreshed ahead near its end
 * (op_token and requests_hit, the one place each is decided). */
static void
token_hit (worker_t *w, const job_t *job, cache_entry_t *e, int64_t now)
{
    metrics_inc (w->m.cache_hits);
    reply_token (w, job, e, 0);
    if (!e->refresh_token_missing)
        refresh_ahead (w, e, now);
}

/* Without a refresh token (refresh_token_missing), the only way to needs_reconnect is an API's
 * rejection of the access token (connect_reject_unrenewable): the stock hint, which blames the
 * stored refresh token, would name a cause that cannot be. */
static void
reply_inactive (worker_t *w, const job_t *job, const cache_entry_t *e)
{
    char message [1024];
    if (e->status == INTEG_NEEDS_RECONNECT && e->refresh_token_missing) {
        snprintf (message, sizeof message, "integration \"%s\" is needs_reconnect: an API rejected its access token, "
                  "and the provider issued no refresh token to replace it when it was connected", e->id);
        reply_error (w, job, FR_NEEDS_RECONNECT, message, "access was revoked or ended at the provider: disconnect the "
                     "integration and connect it again (ferrulectl doctor says so)", -1);
        return;
    }
    if (e->status == INTEG_NEEDS_RECONNECT && e->inactive_why) {
        /* every caller gets the refusal the request that met it got (the provider's words, with
         * tokens and secrets withheld when it was recorded), and the same advice */
        snprintf (message, sizeof message, "integration \"%s\" is needs_reconnect, and no provider call is made "
                  "until it is connected again: %s", e->id, e->inactive_why);
        reply_error (w, job, FR_NEEDS_RECONNECT, message, refresh_refused_hint (e->inactive_why), -1);
        return;
    }
    if (e->status == INTEG_NEEDS_RECONNECT)
        /* the refusal's words are not known here: at least what happened, and where they are kept */
        snprintf (message, sizeof message, "integration \"%s\" is needs_reconnect: provider \"%s\" refused its "
                  "refresh token at a token refresh, and no provider call is made until it is connected again "
                  "(ferrulectl status shows the provider's answer, ferrulectl doctor what to do)", e->id,
                  e->provider ? e->provider : "?");
    else
        snprintf (message, sizeof message, "integration \"%s\" is %s", e->id, cache_status_text (e->status));
    reply_error (w, job, e->status == INTEG_DISCONNECTED ? FR_DISCONNECTED : FR_NEEDS_RECONNECT,
                        message, NULL, -1);
}

static void
op_token (worker_t *w, job_t *job, const msgpack_object *root, const char *id, int forced)
{
    int64_t min_valid = w->cfg.default_min_valid;
    char *wanted = NULL, *reject = NULL;
    /* every field is read before the entry is: a malformed one is refused whatever the entry's
     * state, a stale entry's refresh included */
    int asked = 0;
    if (!forced
    &&  ((asked = fields_int (w, job, root, "min_valid", 0, MAX_MIN_VALID, &min_valid)) < 0
    ||   fields_scopes (w, job, root, "require_scopes", SCOPES_MAX, &wanted) < 0
    ||   fields_str (w, job, root, "reject", MAX_TOKEN_LEN, 0, &reject) < 0))
        goto out;
    job->min_valid = min_valid;
    job->min_valid_asked = asked;
    job->forced = forced;
    cache_entry_t *e = entry_for (w, job, root, id, forced);
    if (!e)
        goto out;
    if (e->stale) {
        /* dropped while its refresh is in flight (a disconnect here destroyed its tokens, or
         * another process changed the row): what it holds is not served; the request takes the
         * refresh's outcome, which is read from the row, and its required scopes are checked
         * against the grant read there (a reconnect may have changed it) */
        refresh_join (w, e, job, wanted);
        goto out;
    }
    if (e->status != INTEG_ACTIVE && !e->refresh) {
        reply_inactive (w, job, e);      /* no provider call: the user must act first */
        goto out;
    }
    if (e->rejected) {
        /* its token was rejected and nothing can renew it: whatever was asked, the request takes
         * the outcome of the write that makes it needs_reconnect (again, if one failed); the
         * token is served to none meanwhile (requests_hit finds it forgotten) */
        connect_reject_unrenewable (w, job, e);
        goto out;
    }
    if (wanted && scopes_held (w, job, wanted, e) != 0)
        goto out;                        /* insufficient_scope: checked before any refresh */
    /* a refresh takes from the integration's bucket once it may go on: a malformed one, or one of
     * an integration that does not exist or is not active, makes no provider call, and counted it
     * filled the worker's table with ids never stored */
    if (forced && !ratelimit_admit (w, job, RATELIMIT_REFRESH, e->id))
        goto out;
    /* stale-token feedback: the caller's upstream call failed with 401 using this token */
    if (reject) {
        int current = e->access_token && crypto_secret_equal (e->access_token, reject);
        mem_free_secret (&reject);
        if (current && e->refresh_token_missing && !e->refresh) {
            /* nothing can replace it, however long it was to last: access was revoked or ended at
             * the provider, and the integration needs a new connect (never the same token again) */
            connect_reject_unrenewable (w, job, e);
            goto out;
        }
        if (current || (e->refresh && e->refresh_rejecting)) {
            /* only the token it names is refreshed away; a burst of rejections shares one refresh,
             * and one that starts a refresh takes from the integration's bucket as "refresh"
             * does: else a loop of token and reject made unlimited provider calls */
            if (!e->refresh && !ratelimit_admit (w, job, RATELIMIT_REJECT, e->id))
                goto out;
            job->forced = 1;
            e->refresh_rejecting = 1;
            refresh_join (w, e, job, wanted);
            if (!e->refresh)
                e->refresh_rejecting = 0;
            goto out;
        }
        /* the rejected token was already replaced: hand out the newer one */
    }
    /* the hot path: a cached token that lasts long enough */
    int64_t now = clock_wall_ms () / 1000;
    if (!forced && token_lasts (e, now, min_valid)) {
        token_hit (w, job, e, now);
        goto out;
    }
    metrics_inc (w->m.cache_misses);
    /* a min_valid of at least the provider's whole token lifetime can never be met: serve a token
     * refreshed moments ago rather than refreshing in a loop. Any shorter min_valid is a promise
     * kept, by refreshing (docs/ferrulectl.md). */
    if (!forced && e->access_token && e->access_expires_at > now && e->refreshed_ms
    &&  e->lifetime_s > 0 && min_valid >= e->lifetime_s
    &&  clock_mono_ms () - e->refreshed_ms < FRESH_ENOUGH_MS) {
        reply_token (w, job, e, 0);
        goto out;
    }
    if (e->refresh_token_missing && !e->refresh) {
        connect_reply_no_refresh_token (w, job, e);    /* nothing to refresh with: no provider call */
        goto out;
    }
    refresh_join (w, e, job, wanted);
out:
    mem_free (wanted);
    mem_free_secret (&reject);
}

/* An integration as stored: its row and columns, and how many values are on retired keys. */
static void
reply_row (worker_t *w, const job_t *job, const store_row_t *row, const store_extra_t *x)
{
    codec_builder_t *o = reply_begin (w, job, 1, 2);
    codec_str (o, "integration");
    reply_pack_integration (o, row, x);
    keystats_pack (w, o, row);
    reply_send (w, job);
}

/* status: what the database holds, read without the loop waiting (loads.c), never the cache. */
static void
status_loaded (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const store_row_t *row,
               const store_extra_t *x, fr_status_t st, const char *err, int flag)
{
    (void) root;
    (void) id;
    (void) flag;
    if (st != FR_OK)
        reply_store_error (w, job, st, err);
    else
        reply_row (w, job, row, x);
}

/* An import sealed and waiting for its batch: what the upsert needs, owned. */
typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    char *provider, *scopes, *api_base_url;
    unsigned char *at_ct, *rt_ct;
    size_t at_len, rt_len;
    int32_t key_id;
    int64_t expires_at, lifetime;
    char fingerprint [CRYPTO_FINGERPRINT_LEN + 1];
} import_wait_t;

static void
import_free (import_wait_t *iw)
{
    mem_free (iw->provider);
    mem_free (iw->scopes);
    mem_free (iw->api_base_url);
    mem_free (iw->at_ct);
    mem_free (iw->rt_ct);
    mem_free (iw);
}

static void
import_done (void *arg, fr_status_t st, const store_upserted_t *up, const store_row_t *row, const store_extra_t *x,
             const char *err)
{
    import_wait_t *iw = arg;
    worker_t *w = iw->w;
    (void) up;
    if (st != FR_OK)
        reply_store_error (w, &iw->job, st, err);
    else {
        cache_drop (w->cache, iw->id);
        loads_invalidate (w, iw->id);    /* a read in flight may predate it: our own change is not notified to us */
        log_info (iw->id, iw->job.rid, "imported integration for provider \"%s\"", iw->provider);
        reply_row (w, &iw->job, row, x);
    }
    import_free (iw);
}

/* The import's upsert and the integration's row, one batch on a free connection (dbwait.c). */
static void
import_start (worker_t *w, store_t *store, void *arg)
{
    import_wait_t *iw = arg;
    char err [256];
    if (!store) {
        import_free (iw);                /* the worker goes away, or the broker has answered: not written */
        return;
    }
    /* the same statement as a connect's: a re-import is a reconnect */
    store_upsert_t imp = { iw->id, iw->provider, iw->key_id, iw->at_ct, iw->at_len, iw->expires_at, iw->lifetime,
                           iw->rt_ct, iw->rt_len, iw->fingerprint, iw->scopes, NULL, "imported", NULL, NULL,
                           iw->api_base_url };
    fr_status_t st = store_upsert_start (store, &imp, import_done, iw, err, sizeof err);
    if (st != FR_OK) {
        reply_store_error (w, &iw->job, st, err);
        import_free (iw);
    }
}

static void
op_import (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    char *provider = NULL, *refresh_token = NULL, *access_token = NULL, *scopes = NULL, *api_base_url = NULL;
    const char *problem;
    unsigned char *at_ct = NULL, *rt_ct = NULL;
    size_t at_len = 0, rt_len = 0;
    int64_t expires_in = 0;
    int32_t key_id = 0;
    char err [512];
    int r;

    if ((r = fields_str (w, job, root, "provider", CATALOG_MAX_NAME, 1, &provider)) < 0)
        goto out;
    if (r == 0 || !catalog_find (w->catalog, provider)) {
        snprintf (err, sizeof err, r == 0 ? "\"provider\" is required"
                                          : "provider \"%s\" is not in the catalog", provider ? provider : "");
        reply_error (w, job, r == 0 ? FR_BAD_REQUEST : FR_CONFIGURATION, err,
                            r == 0 ? NULL : "use a provider name from the catalog, or add it with FERRULE_PROVIDERS_FILE", -1);
        goto out;
    }
    if ((r = fields_str (w, job, root, "refresh_token", MAX_TOKEN_LEN, 0, &refresh_token)) <= 0) {
        if (r == 0)
            reply_error (w, job, FR_BAD_REQUEST, "\"refresh_token\" is required", NULL, -1);
        goto out;
    }
    if ((r = fields_str (w, job, root, "access_token", MAX_TOKEN_LEN, 0, &access_token)) < 0)
        goto out;
    if ((r = fields_int (w, job, root, "expires_in", 0, 10LL * 365 * 86400, &expires_in)) < 0)
        goto out;
    if (access_token && r == 0) {
        reply_error (w, job, FR_BAD_REQUEST, "\"expires_in\" is required with \"access_token\"", NULL, -1);
        goto out;
    }
    if (fields_scopes (w, job, root, "scopes", MAX_IMPORT_SCOPES, &scopes) < 0)
        goto out;
    if ((r = fields_str (w, job, root, "api_base_url", OAUTH_MAX_API_BASE, 1, &api_base_url)) < 0)
        goto out;
    /* the operator is told, where a provider's odd value is only logged: nothing is spent yet */
    if (r == 1 && (problem = oauth_api_base_problem (catalog_find (w->catalog, provider), api_base_url,
                                                     strlen (api_base_url)))) {
        snprintf (err, sizeof err, "\"api_base_url\" is not usable: %s", problem);
        reply_error (w, job, FR_BAD_REQUEST, err, "give the base URL of the provider's API for this grant, such as "
                     "https://acme.my.salesforce.com, or leave it out", -1);
        goto out;
    }

    fr_status_t st = crypto_seal (w->keyring, id, "refresh_token", refresh_token, &rt_ct, &rt_len, &key_id,
                                  err, sizeof err);
    if (st == FR_OK && access_token)
        st = crypto_seal (w->keyring, id, "access_token", access_token, &at_ct, &at_len, &key_id, err, sizeof err);
    if (st != FR_OK) {
        reply_error (w, job, st, err, NULL, -1);
        goto out;
    }
    import_wait_t *iw = mem_alloc (sizeof *iw);
    iw->w = w;
    iw->job = *job;
    snprintf (iw->id, sizeof iw->id, "%s", id);
    crypto_fingerprint (w->keyring, refresh_token, iw->fingerprint);
    iw->key_id = key_id;
    iw->expires_at = access_token ? clock_wall_ms () / 1000 + expires_in : 0;
    iw->lifetime = access_token ? expires_in : 0;
    iw->provider = provider;             /* the import owns them now */
    iw->scopes = scopes;
    iw->api_base_url = api_base_url;
    iw->at_ct = at_ct;
    iw->at_len = at_len;
    iw->rt_ct = rt_ct;
    iw->rt_len = rt_len;
    provider = scopes = api_base_url = NULL;
    at_ct = rt_ct = NULL;
    dbwait_add_for (w, import_start, iw, &iw->job);
out:
    mem_free (provider);
    mem_free_secret (&refresh_token);
    mem_free_secret (&access_token);
    mem_free (scopes);
    mem_free (api_base_url);
    mem_free (at_ct);
    mem_free (rt_ct);
}

/* history's answer: the chain rows (newest first), or why not. */
static void
reply_history (worker_t *w, const job_t *job, fr_status_t st, store_chain_t *rows, size_t n, const char *err)
{
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        return;
    }
    codec_builder_t *o = reply_begin (w, job, 1, 1);
    codec_str (o, "chain");
    codec_array (o, (uint32_t) n);
    for (size_t i = 0; i < n; i++) {
        codec_map (o, 7);
        codec_kv_int (o, "generation", rows [i].generation);
        codec_kv_time (o, "at", rows [i].at);
        codec_kv_str (o, "outcome", rows [i].outcome);
        codec_kv_str (o, "worker", rows [i].worker);
        codec_kv_str (o, "refresh_token_fingerprint", rows [i].refresh_fingerprint);
        codec_kv_bool (o, "rotated", rows [i].rotated);
        codec_kv_str (o, "detail", rows [i].detail);
    }
    store_chain_free (&rows, n);
    reply_send (w, job);
}

typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    int64_t limit;
} history_wait_t;

static void
history_rows (void *arg, fr_status_t st, store_chain_t *rows, size_t n, const char *err)
{
    history_wait_t *hw = arg;
    reply_history (hw->w, &hw->job, st, rows, n, err);
    mem_free (hw);
}

/* The chain's batch, on a free connection (dbwait.c). */
static void
history_start (worker_t *w, store_t *store, void *arg)
{
    history_wait_t *hw = arg;
    char err [256];
    fr_status_t st;
    if (!store)
        mem_free (hw);                   /* the worker goes away, or the broker has answered */
    else
    if ((st = store_history_start (store, hw->id, hw->limit, history_rows, hw, err, sizeof err)) != FR_OK) {
        reply_store_error (w, &hw->job, st, err);
        mem_free (hw);
    }
}

/* history, once the integration is known to exist (read by loads.c, so unknown ids are
 * not_found): its chain rows in a batch of their own. */
static void
history_loaded (worker_t *w, job_t *job, const msgpack_object *root, const char *id, const store_row_t *row,
                const store_extra_t *x, fr_status_t st, const char *err, int limit)
{
    (void) root;
    (void) row;
    (void) x;
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        return;
    }
    history_wait_t *hw = mem_alloc (sizeof *hw);
    *hw = (history_wait_t) { w, *job, "", limit };
    snprintf (hw->id, sizeof hw->id, "%s", id);
    dbwait_add_for (w, history_start, hw, &hw->job);
}

static void
op_history (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    int64_t limit = 20;
    if (fields_int (w, job, root, "limit", 1, MAX_HISTORY, &limit) < 0)
        return;
    loads_park (w, job, NULL, id, history_loaded, (int) limit, 1);
}

/* The cache hit, read with one scan of the body that allocates nothing (codec_scan, as the broker
 * reads a request) instead of decoding it into a msgpack zone: the common request answered
 * without the work every other request needs. It answers only what op_token would answer the same
 * way from the cache: a "token" request whose fields hold nothing to check or refuse (no
 * "require_scopes", no "reject", a valid integration, "min_valid" absent or in range) for an
 * entry cached, current and active whose token lasts long enough. Anything else is left to the
 * whole way (requests_handle), which words every refusal. */
int
requests_hit (worker_t *w, job_t *job, const void *body, size_t len)
{
    enum { HIT_RID, HIT_OP, HIT_INTEGRATION, HIT_MIN_VALID, HIT_SCOPES, HIT_REJECT, HIT__N };
    codec_field_t f [HIT__N] = {
        [HIT_RID] = { .key = "rid" }, [HIT_OP] = { .key = "op" }, [HIT_INTEGRATION] = { .key = "integration" },
        [HIT_MIN_VALID] = { .key = "min_valid" }, [HIT_SCOPES] = { .key = "require_scopes" },
        [HIT_REJECT] = { .key = "reject" },
    };
    char err [64], id [IDENT_MAX + 1];
    const char *s;
    size_t n;
    int64_t min_valid = w->cfg.default_min_valid;
    if (codec_scan (body, len, f, HIT__N, err, sizeof err) != FR_OK
    ||  codec_field_str (&f [HIT_OP], &s, &n) != 1 || ops_lookup (s, n) != OP_TOKEN
    ||  codec_field_str (&f [HIT_INTEGRATION], &s, &n) != 1 || !ident_valid (s, n))
        return 0;
    memcpy (id, s, n);
    id [n] = '\0';
    int r = codec_field_int (&f [HIT_MIN_VALID], &min_valid);
    if (r < 0 || min_valid < 0 || min_valid > MAX_MIN_VALID
    ||  codec_field_str (&f [HIT_SCOPES], &s, &n) != 0 || codec_field_str (&f [HIT_REJECT], &s, &n) != 0)
        return 0;                   /* "require_scopes" and "reject" of any type but nil: the whole way */
    cache_entry_t *e = cache_get (w->cache, id);
    int64_t now = clock_wall_ms () / 1000;
    if (!e || e->stale || e->rejected || e->status != INTEG_ACTIVE || !e->hit_reply
    ||  !token_lasts (e, now, min_valid))
        return 0;
    if (codec_field_str (&f [HIT_RID], &s, &n) == 1 && n < sizeof job->rid) {
        memcpy (job->rid, s, n);
        job->rid [n] = '\0';
    }
    memcpy (job->op, "token", sizeof "token");
    job->min_valid = min_valid;
    token_hit (w, job, e, now);
    return 1;
}

/* 1 when the request with operation o is to run; 0 when it is a broker's copy of an administering
 * request this worker is working on (dropped: the first answers) or answered (answered again the
 * same), once.c. */
static int
requests_once (worker_t *w, job_t *job, op_t o, const void *body, size_t len)
{
    /* twice is harmless for reads, and token requests are the hot path; so is apikey_verify (it
     * writes only when the key was last used), which the gateway sends on every API request and
     * which would crowd the rare ones out of the table */
    if (job->link < 0 || o == OP_UNKNOWN || ops_is_read (o) || o == OP_APIKEY_VERIFY)
        return 1;
    once_reply_t reply;
    switch (once_begin (w->once, job->link, job->client, job->client_len, job->seq, body, len, job->deadline_ms,
                        clock_mono_ms (), &reply)) {
        case ONCE_NEW:
            job->once = 1;
            return 1;
        case ONCE_RUNNING:
            metrics_inc (w->m.once_dropped);
            log_info (NULL, NULL, "a broker sent again a \"%s\" request this worker is working on; the first "
                      "answers it", ops_name (o));
            return 0;
        case ONCE_ANSWERED:
            metrics_inc (w->m.once_answered);
            log_info (NULL, NULL, "a broker sent again a \"%s\" request this worker answered; sending the same "
                      "answer", ops_name (o));
            links_send (w, job, reply.body, reply.len, reply.outcome);
            return 0;
    }
    return 1;
}

void
requests_handle (worker_t *w, job_t *job, const msgpack_object *root, const void *body, size_t body_len)
{
    const char *op, *s;
    size_t op_len, len;
    char id [IDENT_MAX + 1];

    if (codec_get_str (root, "rid", &s, &len) == 1 && len <= 64) {
        memcpy (job->rid, s, len);
        job->rid [len] = '\0';
    }
    if (codec_get_str (root, "op", &op, &op_len) != 1) {
        reply_error (w, job, FR_BAD_REQUEST, "\"op\" is required and must be a string", NULL, -1);
        return;
    }
    op_t o = ops_lookup (op, op_len);       /* the one table of operation names */
    if (!requests_once (w, job, o, body, body_len))
        return;
    /* a metrics label: what this version knows, "unknown" for anything else a client sent */
    text_copy (job->op, sizeof job->op, ops_name (o));
    if (o == OP_CALLBACK && !codec_get (root, "integration")) {
        connect_callback (w, job, root);        /* the state names the integration */
        return;
    }
    if (gwops_handle (w, job, root, o))          /* the gateway's operations (gwops.c) */
        return;
    if (ops_takes_no_integration (o) && codec_get (root, "integration")) {
        /* as the broker does: the answer would be every integration's, whatever one is named */
        char message [120];
        snprintf (message, sizeof message, "\"%s\" concerns every integration and takes no \"integration\"", ops_name (o));
        reply_error (w, job, FR_BAD_REQUEST, message, "send it without \"integration\"", -1);
        return;
    }
    if (ops_is_deployment_wide (o)) {
        events_handle (w, job, o, root);   /* events.c: the integration is optional */
        return;
    }
    int has = codec_get_str (root, "integration", &s, &len);
    if (has != 1 || !ident_valid (s, len)) {
        /* over the cap is too_large, as for every other string (docs/protocol.md, Limits) */
        reply_error (w, job, has == 1 && len > IDENT_MAX ? FR_TOO_LARGE : FR_BAD_REQUEST,
                            "\"integration\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -", NULL, -1);
        return;
    }
    memcpy (id, s, len);
    id [len] = '\0';

    switch (o) {
        case OP_TOKEN:        op_token (w, job, root, id, 0); break;
        case OP_REFRESH:      op_token (w, job, root, id, 1); break;
        case OP_STATUS:       loads_park (w, job, NULL, id, status_loaded, 0, 1); break;
        case OP_IMPORT:       op_import (w, job, root, id); break;
        case OP_HISTORY:      op_history (w, job, root, id); break;
        case OP_CONNECT:      connect_start (w, job, root, id); break;
        case OP_CALLBACK:     connect_callback (w, job, root); break;
        case OP_DISCONNECT:   disconnect_run (w, job, id); break;
        case OP_REPORT_SCOPE: scopes_report (w, job, root, id); break;
        case OP_DOCTOR:       doctor_run (w, job, id); break;
        case OP_PING: {
            codec_builder_t *b = reply_begin (w, job, 1, 3);
            codec_kv_str (b, "service", "ferrule");
            codec_kv_str (b, "role", "worker");
            codec_kv_str (b, "worker", w->cfg.worker_id);
            reply_send (w, job);
            break;
        }
        default: {
            char message [120];
            snprintf (message, sizeof message, "unknown operation \"%.*s\"", (int) (op_len > 32 ? 32 : op_len), op);
            reply_error (w, job, FR_UNKNOWN_OPERATION, message, NULL, -1);
            break;
        }
    }
}
