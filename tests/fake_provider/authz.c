/* authz.c - OAuth 2.0 authorization server behaviour of the fake provider.
   Every entry point takes the one mutex; latency and slow faults wait on a
   condition variable, which lets other requests run meanwhile. */
#include "authz.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "provider.h"
#include "reqlog.h"
#include "store.h"
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SCOPE_MAX       256      /* scopes accepted in one request */
#define PROVIDERS_MAX   1024     /* distinct provider names; each name seen creates one */

struct authz_t {
    pthread_mutex_t lock;
    pthread_cond_t  wake;        /* broadcast at shutdown so sleeping handlers return */
    bool            stopping;
    unsigned long   epoch;       /* bumped by reset: pointers held across a sleep are stale */
    provider_t     *providers;
    size_t          nproviders;
    store_t        *store;
    reqlog_t       *reqlog;
    json_t         *startup;     /* configuration given at start; reset comes back to it */
    long long       connections; /* TCP connections accepted since the start or the last reset */
    long            together;    /* refresh answers held for answer_together */
    unsigned long   together_gen; /* bumped when they are let go */
    unsigned long   released_gen; /* bumped by POST /admin/release: every nap in progress ends */
};

/* How a token or revoke request authenticated its client. */
typedef struct {
    const char *label;           /* "basic", "post" or "none", for the request record */
    char       *id;
    char       *secret;
    bool        conflicting;     /* Basic and client_secret in the body, or two different ids */
} client_cred_t;

static int64_t
mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

authz_t *
authz_new (void)
{
    authz_t *authz = mem_alloc (sizeof *authz);
    pthread_condattr_t attr;

    pthread_mutex_init (&authz->lock, NULL);
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&authz->wake, &attr);
    pthread_condattr_destroy (&attr);
    authz->store = store_new ();
    authz->reqlog = reqlog_new ();
    return authz;
}

/* Drops every provider, token and record. Called with the lock held. */
static void
clear_state (authz_t *authz)
{
    while (authz->providers) {
        provider_t *next = authz->providers->next;
        provider_destroy (&authz->providers);
        authz->providers = next;
    }
    authz->nproviders = 0;
    store_destroy (&authz->store);
    reqlog_destroy (&authz->reqlog);
    authz->store = store_new ();
    authz->reqlog = reqlog_new ();
    authz->connections = 0;
    authz->epoch++;
    authz->together = 0;
    authz->together_gen++;
    pthread_cond_broadcast (&authz->wake);   /* held answers go */
}

void
authz_destroy (authz_t **p)
{
    if (!p || !*p)
        return;
    authz_t *authz = *p;
    clear_state (authz);
    store_destroy (&authz->store);
    reqlog_destroy (&authz->reqlog);
    json_decref (authz->startup);
    pthread_cond_destroy (&authz->wake);
    pthread_mutex_destroy (&authz->lock);
    mem_free (authz);
    *p = NULL;
}

/* The provider called name, created with defaults on first use; NULL once
   PROVIDERS_MAX exist. name must be valid. */
static provider_t *
find_provider (authz_t *authz, const char *name)
{
    for (provider_t *p = authz->providers; p; p = p->next)
        if (strcmp (p->name, name) == 0)
            return p;
    if (authz->nproviders == PROVIDERS_MAX)
        return NULL;
    provider_t *p = provider_new (name);
    p->next = authz->providers;
    authz->providers = p;
    authz->nproviders++;
    return p;
}

static reply_t *
too_many_providers (void)
{
    return reply_error (503, "temporarily_unavailable", "the fake provider holds its maximum of "
                        "1024 providers: reset it");
}

/* Applies a {"name": {settings}} object. Called with the lock held. */
static int
apply_config (authz_t *authz, const json_t *config, char *err, size_t errlen)
{
    const char *name;
    json_t *settings;

    if (!json_is_object (config)) {
        snprintf (err, errlen, "configuration must be a JSON object keyed by provider name");
        return -1;
    }
    json_object_foreach ((json_t *) config, name, settings) {
        char inner [256];
        if (!provider_name_valid (name)) {
            snprintf (err, errlen, "invalid provider name \"%.64s\"", name);
            return -1;
        }
        provider_t *provider = find_provider (authz, name);
        if (!provider) {
            snprintf (err, errlen, "more than %d providers", PROVIDERS_MAX);
            return -1;
        }
        if (provider_configure (provider, settings, inner, sizeof inner) != 0) {
            snprintf (err, errlen, "provider \"%s\": %s", name, inner);
            return -1;
        }
    }
    return 0;
}

int
authz_configure (authz_t *authz, const json_t *config, char *err, size_t errlen)
{
    int rc;
    pthread_mutex_lock (&authz->lock);
    rc = apply_config (authz, config, err, errlen);
    if (rc == 0) {
        json_decref (authz->startup);
        authz->startup = json_deep_copy (config);
    }
    pthread_mutex_unlock (&authz->lock);
    return rc;
}

void
authz_shutdown (authz_t *authz)
{
    pthread_mutex_lock (&authz->lock);
    authz->stopping = true;
    pthread_cond_broadcast (&authz->wake);
    pthread_mutex_unlock (&authz->lock);
}

/* Waits ms milliseconds with the lock released, or less when shutting down. */
static void
nap (authz_t *authz, long ms)
{
    if (ms <= 0)
        return;
    struct timespec deadline = clock_after (CLOCK_MONOTONIC, ms);
    unsigned long gen = authz->released_gen;
    while (!authz->stopping && authz->released_gen == gen)
        if (pthread_cond_timedwait (&authz->wake, &authz->lock, &deadline) == ETIMEDOUT)
            break;
}

/* With answer_together = n: holds this refresh answer until n of them wait, then lets them all go
 * at once (or after 30 s, or at a reset or shutdown), so that a test sees answers arrive together
 * however the requests were spread out. */
static void
hold_together (authz_t *authz, long n)
{
    if (n <= 0)
        return;
    unsigned long gen = authz->together_gen;
    if (++authz->together >= n) {
        authz->together = 0;
        authz->together_gen++;
        pthread_cond_broadcast (&authz->wake);
        return;
    }
    struct timespec deadline = clock_after (CLOCK_MONOTONIC, 30000);
    while (!authz->stopping && authz->together_gen == gen)
        if (pthread_cond_timedwait (&authz->wake, &authz->lock, &deadline) == ETIMEDOUT) {
            authz->together = 0;         /* the others go too */
            authz->together_gen++;
            pthread_cond_broadcast (&authz->wake);
            break;
        }
}

/* This answer's delay: latency_ms, or drawn uniformly within latency_jitter_ms of it (under the
 * lock, so random () needs no state of its own). */
static long
latency (const provider_t *provider)
{
    long base = provider->config.latency_ms, jitter = provider->config.latency_jitter_ms;
    if (jitter <= 0)
        return base;
    long ms = base - jitter + random () % (2 * jitter + 1);
    return ms > 0 ? ms : 0;
}

static void
record (authz_t *authz, const authz_request_t *req, const char *grant_type, const char *client_auth,
        long chain)
{
    const form_t *q = req->params;
    reqlog_entry_t entry = {
        .provider = req->provider,
        .path = req->path,
        .method = req->method,
        .grant_type = grant_type,
        .client_auth = client_auth,
        .redirect_uri = form_get (q, "redirect_uri"),
        .scope = form_get (q, "scope"),
        .code_challenge_method = form_get (q, "code_challenge_method"),
        .has_code_verifier = form_get (q, "code_verifier") != NULL,
        .refresh_token_chain = chain,
        .at_ms = wall_ms (),
    };
    reqlog_add (authz->reqlog, &entry);
}

/* ---- scopes ---- */

/* Splits s on sep into a new array of distinct non-empty scopes; NULL when too many. */
static json_t *
scopes_split (const char *s, const char *sep)
{
    json_t *list = json_array ();
    size_t seplen = strlen (sep);

    while (s && *s) {
        const char *end = strstr (s, sep);
        size_t len = end ? (size_t) (end - s) : strlen (s);
        if (len > 0) {
            json_t *scope = json_stringn (s, len);
            size_t i;
            json_t *seen;
            bool dup = false;
            json_array_foreach (list, i, seen)
                dup = dup || json_equal (seen, scope);
            if (!dup && json_array_size (list) == SCOPE_MAX) {
                json_decref (scope);
                json_decref (list);
                return NULL;
            }
            if (dup)
                json_decref (scope);
            else
                json_array_append_new (list, scope);
        }
        s = end ? end + seplen : s + len;
    }
    return list;
}

/* The scopes joined by sep, as a new string. */
static char *
scopes_join (const json_t *scopes, const char *sep)
{
    mem_buf_t buf;
    size_t i;
    json_t *scope;
    char *out;

    mem_buf_init (&buf, (size_t) 1 << 24);
    json_array_foreach (scopes, i, scope) {
        if ((i > 0 && mem_buf_append (&buf, sep, strlen (sep)) != 0)
            || mem_buf_append (&buf, json_string_value (scope), json_string_length (scope)) != 0)
            break;
    }
    out = mem_strdup (buf.data ? buf.data : "");
    mem_buf_free (&buf);
    return out;
}

static bool
scopes_contain (const json_t *scopes, const json_t *scope)
{
    size_t i;
    json_t *item;
    json_array_foreach (scopes, i, item)
        if (json_equal (item, scope))
            return true;
    return false;
}

/* True unless the provider issues refresh tokens only for some scopes (refresh_token_scopes) and
 * the grant holds none of them: Microsoft without offline_access. */
static bool
offline_granted (const provider_t *provider, const json_t *granted)
{
    size_t i;
    json_t *scope;
    if (!provider->config.refresh_token_scopes)
        return true;
    json_array_foreach (provider->config.refresh_token_scopes, i, scope)
        if (scopes_contain (granted, scope))
            return true;
    return false;
}

/* ---- client authentication ---- */

static void
cred_read (client_cred_t *cred, const authz_request_t *req)
{
    const char *body_id = form_get (req->params, "client_id");
    const char *body_secret = form_get (req->params, "client_secret");

    memset (cred, 0, sizeof *cred);
    cred->label = "none";
    if (req->authorization && strncasecmp (req->authorization, "Basic ", 6) == 0) {
        cred->label = "basic";
        if (form_basic_credentials (req->authorization, &cred->id, &cred->secret) != 0)
            return;                           /* unreadable: fails as a wrong secret would */
        if (body_secret || (body_id && strcmp (body_id, cred->id) != 0))
            cred->conflicting = true;
    }
    else if (body_id || body_secret) {
        cred->label = "post";
        cred->id = body_id ? mem_strdup (body_id) : NULL;
        cred->secret = body_secret ? mem_strdup (body_secret) : NULL;
    }
}

static void
cred_clear (client_cred_t *cred)
{
    mem_free (cred->id);
    mem_free_secret (&cred->secret);
}

static bool
cred_valid (const client_cred_t *cred, const provider_t *provider)
{
    const char *want = provider->config.client_secret;
    size_t len;

    if (!cred->id || !cred->secret || strcmp (cred->id, provider->config.client_id) != 0)
        return false;
    len = strlen (want);
    return strlen (cred->secret) == len && CRYPTO_memcmp (cred->secret, want, len) == 0;
}

/* ---- answers ---- */

/* An OAuth error, or its Slack-style twin when the provider answers errors with 200. */
static reply_t *
oauth_error (const provider_t *provider, unsigned status, const char *error, const char *description)
{
    if (provider->config.errors_with_200) {
        const char *code = strcmp (error, "invalid_grant") == 0 ? "invalid_refresh_token" : error;
        return reply_json_take (200, json_pack ("{s:b, s:s}", "ok", 0, "error", code));
    }
    return reply_error (status, error, description);
}

static reply_t *
client_error (const provider_t *provider, const client_cred_t *cred)
{
    reply_t *reply = oauth_error (provider, 401, "invalid_client", NULL);
    if (reply->status == 401 && strcmp (cred->label, "basic") == 0)
        reply->www_authenticate = mem_strdup ("Basic realm=\"ferrule-fake-provider\"");
    return reply;
}

static reply_t *
token_reply (const provider_t *provider, const token_t *access, const token_t *refresh,
             const json_t *scopes, int64_t now)
{
    int64_t left = access->expires_ms - now;
    char *scope = scopes_join (scopes, provider->config.scope_separator);
    json_t *body = json_pack ("{s:s, s:s, s:I, s:s}",
                              "access_token", access->value,
                              "token_type", "Bearer",
                              "expires_in", (json_int_t) (left > 0 ? (left + 999) / 1000 : 0),
                              "scope", scope);
    if (refresh)
        json_object_set_new (body, "refresh_token", json_string (refresh->value));
    if (provider->config.omit_expires_in)
        json_object_del (body, "expires_in");
    if (provider->config.errors_with_200)
        json_object_set_new (body, "ok", json_true ());
    if (provider->config.instance_url)
        json_object_set_new (body, "instance_url", json_string (provider->config.instance_url));
    mem_free (scope);
    return reply_json_take (200, body);
}

/* The answer a fault asks for; presented is the code or token the request carried (or NULL). */
static reply_t *
fault_reply (const provider_t *provider, const fault_t *fault, const char *presented)
{
    static const char malformed [] = "{\"access_token\": \"abc\", ";
    static const char html [] =
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
        "</center><hr><center>nginx</center></body></html>\n";
    reply_t *reply = NULL;

    switch (fault->kind) {
    case FAULT_STATUS:
        return reply_error ((unsigned) fault->status, "server_error", NULL);
    case FAULT_RETRY_AFTER:
        reply = reply_error ((unsigned) fault->status, "temporarily_unavailable", NULL);
        reply->retry_after = fault->retry_after;
        return reply;
    case FAULT_MALFORMED:
        return reply_text (200, "application/json", malformed, sizeof malformed - 1);
    case FAULT_HTML:
        return reply_text (200, "text/html", html, sizeof html - 1);
    case FAULT_INVALID_GRANT:
        return oauth_error (provider, 400, "invalid_grant", "token is invalid, expired or revoked");
    case FAULT_INVALID_CLIENT:
        return oauth_error (provider, 401, "invalid_client", NULL);
    case FAULT_INVALID_TOKEN:   /* Google's /revoke for a token already revoked or expired */
        return oauth_error (provider, 400, "invalid_token", "Token expired or revoked");
    case FAULT_DROP:
        return reply_special (REPLY_DROP);
    case FAULT_EMPTY:
        return reply_text (200, "application/json", "", 0);
    case FAULT_HUGE:
        return reply_special (REPLY_HUGE);
    case FAULT_ERROR_200:       /* Slack's way to fail: success status, failure in the body */
        return reply_json_take (200, json_pack ("{s:b, s:s}", "ok", 0, "error", fault->error));
    case FAULT_STATUS_ERROR:    /* HubSpot's way: the code in "status", no "error" field */
        return reply_json_take ((unsigned) fault->status, json_pack ("{s:s, s:s, s:s}", "status", fault->error,
                                                                     "message", "the fake provider's status_error fault",
                                                                     "correlationId", "fake-correlation-id"));
    case FAULT_OAUTH_ERROR:     /* any RFC 6749 5.2 error, such as unauthorized_client */
        return oauth_error (provider, (unsigned) fault->status, fault->error, "the fake provider's oauth_error fault");
    case FAULT_REASON_QUOTING: {    /* Zoom's "reason", quoting what was sent back */
        char reason [600];
        snprintf (reason, sizeof reason, "Invalid authorization code or token %.500s", presented ? presented : "");
        return reply_json_take (400, json_pack ("{s:s, s:s}", "reason", reason, "error", "invalid_grant"));
    }
    case FAULT_SLOW:
    case FAULT_NO_ACCESS_TOKEN:
    case FAULT_NO_REFRESH_TOKEN:
    case FAULT_DROP_AFTER:
        break;
    }
    return reply_error (500, "server_error", NULL);   /* not reached at /token: these answer normally */
}

/* Faults whose request takes effect as it would without them (a code used, a refresh token spent,
 * a token revoked): they change only the answer, or when it comes. */
static bool
fault_takes_effect (const fault_t *fault)
{
    return fault->kind == FAULT_SLOW || fault->kind == FAULT_NO_ACCESS_TOKEN || fault->kind == FAULT_NO_REFRESH_TOKEN
        || fault->kind == FAULT_DROP_AFTER;
}

/* The drop_after fault: the request took effect, and the client hears nothing of it. */
static reply_t *
dropped_after (reply_t *reply)
{
    reply_destroy (&reply);
    return reply_special (REPLY_DROP);
}

static bool
is_form_content (const char *content_type)
{
    static const char form [] = "application/x-www-form-urlencoded";
    if (!content_type || strncasecmp (content_type, form, sizeof form - 1) != 0)
        return false;
    char next = content_type [sizeof form - 1];
    return next == '\0' || next == ';' || next == ' ';
}

/* The checks every POST endpoint of a provider shares; NULL when the request may proceed. */
static reply_t *
check_post (const provider_t *provider, const authz_request_t *req, const client_cred_t *cred)
{
    if (!req->params)
        return oauth_error (provider, 400, "invalid_request", form_status_text (req->params_status));
    if (!is_form_content (req->content_type))
        return oauth_error (provider, 400, "invalid_request",
                            "content type must be application/x-www-form-urlencoded");
    if (cred->conflicting)
        return oauth_error (provider, 400, "invalid_request",
                            "the client authenticated with more than one method");
    if (!cred_valid (cred, provider))
        return client_error (provider, cred);
    return NULL;
}

/* ---- token endpoint ---- */

static reply_t *
grant_refresh (authz_t *authz, provider_t *provider, const authz_request_t *req)
{
    const char *value = form_get (req->params, "refresh_token");
    const char *scope_param = form_get (req->params, "scope");
    int64_t now = mono_ms ();
    json_t *scopes = NULL;
    reply_t *reply = NULL;
    token_t *token, *access;
    chain_t *chain;

    if (!value || !*value) {
        reply = oauth_error (provider, 400, "invalid_request", "missing refresh_token");
        goto out;
    }
    token = store_lookup (authz->store, value);
    if (!token || token->kind != TOKEN_REFRESH || strcmp (token->chain->provider, provider->name) != 0) {
        provider->stats.invalid_grants++;
        reply = oauth_error (provider, 400, "invalid_grant", "unknown refresh token");
        goto out;
    }
    chain = token->chain;
    if (chain->revoked || token->revoked) {
        provider->stats.invalid_grants++;
        reply = oauth_error (provider, 400, "invalid_grant", "refresh token has been revoked");
        goto out;
    }
    /* A refresh may narrow the scopes (RFC 6749 section 6), never widen them. */
    scopes = scope_param ? scopes_split (scope_param, provider->config.scope_separator) : NULL;
    if (scope_param) {
        size_t i;
        json_t *scope;
        bool ok = scopes != NULL;
        if (ok)
            json_array_foreach (scopes, i, scope)
                ok = ok && scopes_contain (chain->scopes, scope);
        if (!ok) {
            reply = oauth_error (provider, 400, "invalid_scope", "requested scope exceeds the grant");
            goto out;
        }
    }
    if (!scopes || json_array_size (scopes) == 0) {
        json_decref (scopes);
        scopes = json_deep_copy (chain->scopes);
    }

    if (token == chain->refresh) {
        const token_t *refresh = provider->config.echo_refresh_token ? token : NULL;
        access = store_issue_access (authz->store, chain, provider->config.access_ttl, now);
        if (!provider->config.reusable) {
            token->spent_ms = now;
            refresh = store_issue_refresh (authz->store, chain);
            chain->rotated_ms = wall_ms ();      /* the answer leaves right after this */
        }
        chain->generation++;
        provider->stats.refresh_ok++;
        reply = token_reply (provider, access, refresh, scopes, now);
        goto out;
    }
    /* A spent token: inside the grace window it gets the current tokens once more. */
    if (provider->config.reuse_grace_s > 0 && !token->grace_used
        && now - token->spent_ms <= (int64_t) provider->config.reuse_grace_s * 1000) {
        token->grace_used = true;
        access = chain->access;
        if (!access || access->expires_ms <= now)
            access = store_issue_access (authz->store, chain, provider->config.access_ttl, now);
        provider->stats.refresh_ok++;
        reply = token_reply (provider, access, !provider->config.reusable ? chain->refresh
                             : provider->config.echo_refresh_token ? token : NULL, scopes, now);
        goto out;
    }
    chain->revoked = true;
    chain->reuse_detected = true;
    provider->stats.reuse_detections++;
    provider->stats.invalid_grants++;
    log_info (NULL, NULL, "provider \"%s\": refresh token reuse detected on chain %ld, chain revoked",
              provider->name, chain->id);
    reply = oauth_error (provider, 400, "invalid_grant", "refresh token reuse detected");
out:
    json_decref (scopes);
    return reply;
}

static bool
is_pkce_string (const char *s)
{
    size_t len = strlen (s);
    if (len < 43 || len > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')
              || *s == '-' || *s == '.' || *s == '_' || *s == '~'))
            return false;
    return true;
}

/* True when verifier answers the code's challenge (RFC 7636 section 4.6). */
static bool
pkce_matches (const code_t *code, const char *verifier)
{
    unsigned char digest [EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char encoded [EVP_MAX_MD_SIZE * 2];
    const char *expected = verifier;
    size_t len;

    if (!is_pkce_string (verifier))
        return false;
    if (strcmp (code->challenge_method, "S256") == 0) {
        if (EVP_Digest (verifier, strlen (verifier), digest, &digest_len, EVP_sha256 (), NULL) != 1)
            return false;
        len = (size_t) EVP_EncodeBlock ((unsigned char *) encoded, digest, (int) digest_len);
        while (len > 0 && encoded [len - 1] == '=')
            len--;
        encoded [len] = '\0';
        for (size_t i = 0; i < len; i++)
            encoded [i] = encoded [i] == '+' ? '-' : encoded [i] == '/' ? '_' : encoded [i];
        expected = encoded;
    }
    len = strlen (expected);
    return strlen (code->challenge) == len && CRYPTO_memcmp (expected, code->challenge, len) == 0;
}

static reply_t *
grant_code (authz_t *authz, provider_t *provider, const authz_request_t *req)
{
    const char *value = form_get (req->params, "code");
    const char *redirect_uri = form_get (req->params, "redirect_uri");
    const char *verifier = form_get (req->params, "code_verifier");
    const char *problem = NULL;
    int64_t now = mono_ms ();
    token_t *token, *access, *refresh = NULL;
    code_t *code;
    chain_t *chain;

    if (!value || !*value || !redirect_uri)
        return oauth_error (provider, 400, "invalid_request", "missing code or redirect_uri");
    token = store_lookup (authz->store, value);
    code = token && token->kind == TOKEN_CODE ? token->code : NULL;
    if (!code || strcmp (code->provider, provider->name) != 0)
        problem = "unknown authorization code";
    else if (code->used) {
        /* A replayed code may be stolen: revoke what it issued (RFC 6749 section 4.1.2). */
        if (code->chain)
            code->chain->revoked = true;
        problem = "authorization code already used";
    }
    else if (now >= token->expires_ms)
        problem = "authorization code expired";
    else if (strcmp (redirect_uri, code->redirect_uri) != 0)
        problem = "redirect_uri mismatch";
    else if (code->challenge && !verifier)
        problem = "missing code_verifier";
    else if (code->challenge && !pkce_matches (code, verifier))
        problem = "code_verifier does not match code_challenge";
    else if (!code->challenge && verifier)
        problem = "code_verifier sent but the authorization request had no code_challenge";
    if (problem) {
        provider->stats.invalid_grants++;
        return oauth_error (provider, 400, "invalid_grant", problem);
    }
    code->used = true;
    chain = store_chain_new (authz->store, provider->name, code->account, code->scopes);
    code->chain = chain;
    access = store_issue_access (authz->store, chain, provider->config.access_ttl, now);
    if (provider->config.issue_refresh_token && offline_granted (provider, chain->scopes))
        refresh = store_issue_refresh (authz->store, chain);
    provider->stats.code_exchanges++;
    return token_reply (provider, access, refresh, chain->scopes, now);
}

static reply_t *
token_grant (authz_t *authz, provider_t *provider, const authz_request_t *req,
             const client_cred_t *cred, const char *grant_type)
{
    reply_t *reply = check_post (provider, req, cred);
    if (reply)
        return reply;
    if (!grant_type)
        return oauth_error (provider, 400, "invalid_request", "missing grant_type");
    if (strcmp (grant_type, "refresh_token") == 0)
        return grant_refresh (authz, provider, req);
    if (strcmp (grant_type, "authorization_code") == 0)
        return grant_code (authz, provider, req);
    return oauth_error (provider, 400, "unsupported_grant_type", NULL);
}

/* The no_access_token and no_refresh_token faults: a grant that took effect (a rotated refresh
 * token issued, the one sent spent), answered without field. */
static reply_t *
without_field (reply_t *reply, const char *field)
{
    if (!reply || reply->kind != REPLY_BODY || reply->status != 200)
        return reply;
    json_t *body = json_loadb (reply->body, reply->body_len, 0, NULL);
    if (!body)
        return reply;
    json_object_del (body, field);
    reply_destroy (&reply);
    return reply_json_take (200, body);
}

/* Appends the separator c to the form text in out of size cap; 0, or -1 when it does not fit. */
static int
form_separator (char *out, size_t cap, char c)
{
    size_t pos = strnlen (out, cap);
    if (pos + 1 >= cap)
        return -1;
    out [pos] = c;
    out [pos + 1] = '\0';
    return 0;
}

/* The form_answers setting: a JSON object answer as application/x-www-form-urlencoded, its strings,
 * integers and booleans as name=value pairs (other values left out), as GitHub answers a request
 * without Accept: application/json. Any other answer (HTML, a cut-off body) is left as it is. */
static reply_t *
as_form (reply_t *reply)
{
    if (!reply || reply->kind != REPLY_BODY || !reply->content_type
    ||  strcmp (reply->content_type, "application/json") != 0)
        return reply;
    json_t *body = json_loadb (reply->body, reply->body_len, 0, NULL);
    if (!json_is_object (body)) {
        json_decref (body);
        return reply;
    }
    size_t cap = 3 * reply->body_len + 64;
    char *text = mem_alloc (cap);
    const char *key;
    json_t *value;
    char number [32];
    int failed = 0;
    text [0] = '\0';
    json_object_foreach (body, key, value) {
        const char *v = json_is_string (value) ? json_string_value (value)
                      : json_is_true (value) ? "true" : json_is_false (value) ? "false" : NULL;
        if (json_is_integer (value)) {
            snprintf (number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value (value));
            v = number;
        }
        if (!v)
            continue;
        if ((text [0] && form_separator (text, cap, '&') != 0) || form_encode_append (text, cap, key) != 0
        ||  form_separator (text, cap, '=') != 0 || form_encode_append (text, cap, v) != 0)
            failed = 1;
    }
    json_decref (body);
    if (!failed) {
        reply_t *form = reply_text (reply->status, "application/x-www-form-urlencoded", text, strlen (text));
        form->retry_after = reply->retry_after;
        form->www_authenticate = reply->www_authenticate;
        reply->www_authenticate = NULL;
        reply_destroy (&reply);
        reply = form;
    }
    mem_wipe (text, cap);
    mem_free (text);
    return reply;
}

reply_t *
authz_token (authz_t *authz, const authz_request_t *req)
{
    const char *grant_type = form_get (req->params, "grant_type");
    bool is_refresh = grant_type && strcmp (grant_type, "refresh_token") == 0;
    client_cred_t cred;
    reply_t *reply = NULL;
    provider_t *provider;
    token_t *presented;
    chain_t *chain = NULL;
    fault_t fault;
    bool faulted;
    unsigned long epoch;

    cred_read (&cred, req);
    pthread_mutex_lock (&authz->lock);
    provider = find_provider (authz, req->provider);
    if (!provider) {
        reply = too_many_providers ();
        goto out;
    }
    presented = is_refresh ? store_lookup (authz->store, form_get (req->params, "refresh_token")) : NULL;
    if (presented && presented->kind == TOKEN_REFRESH
        && strcmp (presented->chain->provider, provider->name) == 0)
        chain = presented->chain;
    record (authz, req, grant_type, cred.label, chain ? chain->id : 0);
    if (is_refresh) {
        provider->stats.refresh_calls++;
        if (chain)
            chain->refresh_calls++;
        if (++provider->stats.concurrent_refresh > provider->stats.max_concurrent_refresh)
            provider->stats.max_concurrent_refresh = provider->stats.concurrent_refresh;
    }
    faulted = provider_fault_take (provider, FAULT_AT_TOKEN, &fault);
    if (faulted)
        provider->stats.faults_served++;

    epoch = authz->epoch;
    nap (authz, latency (provider) + (faulted && fault.kind == FAULT_SLOW ? fault.delay_ms : 0));
    if (authz->epoch != epoch)
        provider = find_provider (authz, req->provider);   /* reset while we slept */
    else if (is_refresh)
        provider->stats.concurrent_refresh--;

    if (!provider)
        reply = too_many_providers ();
    else if (faulted && !fault_takes_effect (&fault))
        reply = fault_reply (provider, &fault, form_get (req->params, is_refresh ? "refresh_token" : "code"));
    else {
        reply = token_grant (authz, provider, req, &cred, grant_type);
        if (faulted && fault.kind == FAULT_NO_ACCESS_TOKEN)
            reply = without_field (reply, "access_token");
        if (faulted && fault.kind == FAULT_NO_REFRESH_TOKEN)
            reply = without_field (reply, "refresh_token");
        /* the refresh has taken effect (a new refresh token issued, the old one spent): its answer
         * waits, so that a test can act in the window while a client has not heard of it yet */
        if (is_refresh) {
            long together = provider->config.answer_together;
            nap (authz, provider->config.answer_delay_ms);
            hold_together (authz, together);
        }
        if (faulted && fault.kind == FAULT_DROP_AFTER)
            reply = dropped_after (reply);
    }
    if (provider && provider->config.form_answers)
        reply = as_form (reply);
out:
    pthread_mutex_unlock (&authz->lock);
    cred_clear (&cred);
    return reply;
}

/* ---- authorization endpoint ---- */

static bool
redirect_registered (const provider_t *provider, const char *uri)
{
    size_t i;
    json_t *item;
    json_array_foreach (provider->config.redirect_uris, i, item)
        if (strcmp (json_string_value (item), uri) == 0)
            return true;
    return false;
}

/* 302 to uri with the name/value pairs (NULL-terminated) and state appended as query parameters. */
static reply_t *
redirect_to (const char *uri, const char *const *pairs, const char *state)
{
    size_t cap = strlen (uri) + 16;
    char *location;
    char sep = strchr (uri, '?') ? '&' : '?';
    reply_t *reply;

    for (size_t i = 0; pairs [i]; i += 2)
        cap += strlen (pairs [i]) + 3 * strlen (pairs [i + 1]) + 2;
    if (state)
        cap += 7 + 3 * strlen (state);
    location = mem_alloc (cap);
    snprintf (location, cap, "%s", uri);
    for (size_t i = 0; pairs [i]; i += 2) {
        size_t len = strlen (location);
        snprintf (location + len, cap - len, "%c%s=", sep, pairs [i]);
        if (form_encode_append (location, cap, pairs [i + 1]) != 0)
            break;                             /* cannot happen: cap counts the worst case */
        sep = '&';
    }
    if (state) {
        size_t len = strlen (location);
        snprintf (location + len, cap - len, "%cstate=", sep);
        if (form_encode_append (location, cap, state) != 0)
            log_warning (NULL, NULL, "redirect location was cut short");
    }
    reply = reply_redirect (location);
    mem_free_secret (&location);
    return reply;
}

static reply_t *
authorize_locked (authz_t *authz, provider_t *provider, const authz_request_t *req)
{
    const form_t *q = req->params;
    const char *client_id, *redirect_uri, *state, *response_type, *challenge, *method, *scope, *account;
    json_t *requested = NULL, *granted = NULL;
    reply_t *reply = NULL;

    if (!q) {
        reply = reply_error (400, "invalid_request", form_status_text (req->params_status));
        goto out;
    }
    client_id = form_get (q, "client_id");
    redirect_uri = form_get (q, "redirect_uri");
    state = form_get (q, "state");
    response_type = form_get (q, "response_type");
    challenge = form_get (q, "code_challenge");
    method = form_get (q, "code_challenge_method");
    scope = form_get (q, "scope");
    account = form_get (q, "login_hint");     /* who signs in; a test names the account */
    if (!client_id || strcmp (client_id, provider->config.client_id) != 0) {
        reply = reply_error (400, "invalid_client", NULL);
        goto out;
    }
    if (!redirect_uri) {
        reply = reply_error (400, "invalid_request", "missing redirect_uri");
        goto out;
    }
    if (account && (!*account || strlen (account) > STORE_ACCOUNT_MAX)) {
        reply = reply_error (400, "invalid_request", "login_hint must be 1 to 64 characters");
        goto out;
    }
    if (!redirect_registered (provider, redirect_uri)) {
        size_t cap = strlen (redirect_uri) + 128;
        char *description = mem_alloc (cap);
        snprintf (description, cap, "The redirect URI in the request, %s, does not match the ones "
                  "authorized for the OAuth client.", redirect_uri);
        reply = reply_error (400, "redirect_uri_mismatch", description);
        mem_free (description);
        goto out;
    }
    /* From here on errors go back to the client through the redirect (RFC 6749 section 4.1.2.1). */
    if (!response_type || strcmp (response_type, "code") != 0) {
        const char *pairs [] = { "error", "unsupported_response_type", NULL };
        reply = redirect_to (redirect_uri, pairs, state);
        goto out;
    }
    if (provider->config.deny) {
        const char *pairs [] = { "error", "access_denied", NULL };
        reply = redirect_to (redirect_uri, pairs, state);
        goto out;
    }
    if (challenge) {
        if (!method)
            method = "plain";
        if ((strcmp (method, "S256") != 0 && strcmp (method, "plain") != 0) || !is_pkce_string (challenge)) {
            const char *pairs [] = { "error", "invalid_request", "error_description",
                                     "unsupported code_challenge_method or malformed code_challenge", NULL };
            reply = redirect_to (redirect_uri, pairs, state);
            goto out;
        }
    }
    else if (provider->config.require_pkce) {
        const char *pairs [] = { "error", "invalid_request", "error_description",
                                 "code_challenge required", NULL };
        reply = redirect_to (redirect_uri, pairs, state);
        goto out;
    }
    requested = scopes_split (scope, provider->config.scope_separator);
    if (!requested) {
        const char *pairs [] = { "error", "invalid_scope", "error_description", "too many scopes", NULL };
        reply = redirect_to (redirect_uri, pairs, state);
        goto out;
    }
    granted = json_array ();
    {
        size_t i;
        json_t *item;
        json_array_foreach (requested, i, item)
            if (provider_scope_grantable (provider, json_string_value (item)))
                json_array_append (granted, item);
    }
    {
        code_t *code = store_code_new (provider->name, account, redirect_uri, granted, challenge,
                                       challenge ? method : NULL);
        token_t *token = store_issue_code (authz->store, code, provider->config.code_ttl, mono_ms ());
        const char *pairs [] = { "code", token->value, NULL };
        reply = redirect_to (redirect_uri, pairs, state);
    }
out:
    json_decref (requested);
    json_decref (granted);
    return reply;
}

reply_t *
authz_authorize (authz_t *authz, const authz_request_t *req)
{
    reply_t *reply;
    pthread_mutex_lock (&authz->lock);
    provider_t *provider = find_provider (authz, req->provider);
    if (provider) {
        provider->stats.authorize_calls++;
        record (authz, req, NULL, "none", 0);
        reply = authorize_locked (authz, provider, req);
    }
    else
        reply = too_many_providers ();
    pthread_mutex_unlock (&authz->lock);
    return reply;
}

/* ---- revocation and resource endpoints ---- */

reply_t *
authz_revoke (authz_t *authz, const authz_request_t *req)
{
    const char *value = form_get (req->params, "token");
    client_cred_t cred;
    reply_t *reply;
    provider_t *provider;
    token_t *token;
    chain_t *chain = NULL;
    fault_t fault;
    bool faulted;
    unsigned long epoch;

    cred_read (&cred, req);
    pthread_mutex_lock (&authz->lock);
    provider = find_provider (authz, req->provider);
    if (!provider) {
        reply = too_many_providers ();
        goto out;
    }
    token = store_lookup (authz->store, value);
    if (token && (token->kind == TOKEN_ACCESS || token->kind == TOKEN_REFRESH)
        && strcmp (token->chain->provider, provider->name) == 0)
        chain = token->chain;
    record (authz, req, NULL, cred.label, chain && token->kind == TOKEN_REFRESH ? chain->id : 0);
    faulted = provider_fault_take (provider, FAULT_AT_REVOKE, &fault);
    if (faulted) {
        provider->stats.faults_served++;
        if (fault.kind != FAULT_SLOW && fault.kind != FAULT_DROP_AFTER) {
            reply = fault_reply (provider, &fault, value);     /* revokes nothing */
            goto out;
        }
        epoch = authz->epoch;
        nap (authz, fault.kind == FAULT_SLOW ? fault.delay_ms : 0);
        if (authz->epoch != epoch) {    /* reset while we slept: the token is gone anyway */
            reply = reply_json_take (200, json_object ());
            goto out;
        }
    }
    reply = check_post (provider, req, &cred);
    if (!reply && !value)
        reply = oauth_error (provider, 400, "invalid_request", "missing token");
    if (!reply) {
        /* RFC 7009 section 2.2: unknown tokens get 200 as well. */
        if (chain && provider->config.revoke_account_grant)
            store_revoke_account (authz->store, provider->name, chain->account);
        else if (chain && provider->config.revoke_whole_grant)
            chain->revoked = true;
        else if (chain)
            token->revoked = true;
        provider->stats.revocations++;
        reply = reply_json_take (200, provider->config.errors_with_200 ? json_pack ("{s:b}", "ok", 1)
                                                                       : json_object ());
    }
    if (faulted && fault.kind == FAULT_DROP_AFTER)
        reply = dropped_after (reply);
out:
    pthread_mutex_unlock (&authz->lock);
    cred_clear (&cred);
    return reply;
}

reply_t *
authz_resource_me (authz_t *authz, const authz_request_t *req)
{
    const char *header = req->authorization;
    const char *value = NULL;
    reply_t *reply;
    token_t *token = NULL;
    provider_t *provider;

    if (header && strncasecmp (header, "Bearer ", 7) == 0) {
        value = header + 7;
        while (*value == ' ')
            value++;
    }
    pthread_mutex_lock (&authz->lock);
    provider = find_provider (authz, req->provider);
    if (value)
        token = store_lookup (authz->store, value);
    if (!provider)
        reply = too_many_providers ();
    else if (token && token->kind == TOKEN_ACCESS && strcmp (token->chain->provider, provider->name) == 0
        && !token->chain->revoked && !token->revoked && mono_ms () < token->expires_ms)
        reply = reply_json_take (200, json_pack ("{s:b, s:o}", "ok", 1, "scopes",
                                                   json_deep_copy (token->chain->scopes)));
    else if (provider->config.errors_with_200)
        reply = reply_json_take (200, json_pack ("{s:b, s:s}", "ok", 0, "error", "invalid_auth"));
    else {
        reply = reply_error (401, "invalid_token", NULL);
        reply->www_authenticate = mem_strdup ("Bearer error=\"invalid_token\"");
    }
    pthread_mutex_unlock (&authz->lock);
    return reply;
}

/* ---- admin ---- */

static reply_t *
bad_admin (const char *description)
{
    return reply_error (400, "invalid_request", description);
}

reply_t *
authz_admin_put_provider (authz_t *authz, const char *name, const json_t *body)
{
    char err [256];
    reply_t *reply;

    if (!provider_name_valid (name))
        return bad_admin ("provider names are 1 to 64 of A-Z a-z 0-9 _ -");
    if (!json_is_object (body))
        return bad_admin ("body must be a JSON object of provider settings");
    pthread_mutex_lock (&authz->lock);
    provider_t *provider = find_provider (authz, name);
    if (!provider)
        reply = too_many_providers ();
    else if (provider_configure (provider, body, err, sizeof err) != 0)
        reply = bad_admin (err);
    else
        reply = reply_json_take (200, provider_config_json (provider));
    pthread_mutex_unlock (&authz->lock);
    return reply;
}

reply_t *
authz_admin_get_provider (authz_t *authz, const char *name)
{
    reply_t *reply;
    if (!provider_name_valid (name))
        return bad_admin ("provider names are 1 to 64 of A-Z a-z 0-9 _ -");
    pthread_mutex_lock (&authz->lock);
    provider_t *provider = find_provider (authz, name);
    reply = provider ? reply_json_take (200, provider_config_json (provider)) : too_many_providers ();
    pthread_mutex_unlock (&authz->lock);
    return reply;
}

reply_t *
authz_admin_grant (authz_t *authz, const json_t *body)
{
    const char *name = json_string_value (json_object_get (body, "provider"));
    json_t *scopes = json_object_get (body, "scopes");
    json_t *ttl = json_object_get (body, "access_ttl");
    int64_t now = mono_ms ();
    size_t i;
    json_t *item;

    if (!provider_name_valid (name))
        return bad_admin ("\"provider\" must be a valid provider name");
    if (scopes && !json_is_array (scopes))
        return bad_admin ("\"scopes\" must be an array of strings");
    if (json_array_size (scopes) > SCOPE_MAX)
        return bad_admin ("too many scopes");
    json_array_foreach (scopes, i, item)
        if (!json_is_string (item) || json_string_length (item) == 0 || json_string_length (item) > 256)
            return bad_admin ("\"scopes\" must be an array of strings of 1 to 256 characters");
    if (ttl && (!json_is_integer (ttl) || json_integer_value (ttl) < 0
                || json_integer_value (ttl) > 315360000))
        return bad_admin ("\"access_ttl\" must be an integer from 0 to 315360000");

    pthread_mutex_lock (&authz->lock);
    provider_t *provider = find_provider (authz, name);
    if (!provider) {
        pthread_mutex_unlock (&authz->lock);
        return too_many_providers ();
    }
    long seconds = ttl ? (long) json_integer_value (ttl) : provider->config.access_ttl;
    chain_t *chain = store_chain_new (authz->store, name, NULL, scopes);
    token_t *access = store_issue_access (authz->store, chain, seconds, now);
    token_t *refresh = store_issue_refresh (authz->store, chain);
    json_t *out = json_pack ("{s:I, s:s, s:s, s:I, s:s, s:o}",
                             "chain", (json_int_t) chain->id,
                             "refresh_token", refresh->value,
                             "access_token", access->value,
                             "expires_in", (json_int_t) seconds,
                             "provider", name,
                             "scopes", json_deep_copy (chain->scopes));
    pthread_mutex_unlock (&authz->lock);
    return reply_json_take (200, out);
}

reply_t *
authz_admin_add_fault (authz_t *authz, const json_t *body)
{
    const char *name = json_string_value (json_object_get (body, "provider"));
    char err [256];
    reply_t *reply;

    if (!json_is_object (body))
        return bad_admin ("body must be a JSON object describing the fault");
    if (!provider_name_valid (name))
        return bad_admin ("\"provider\" must be a valid provider name");
    pthread_mutex_lock (&authz->lock);
    provider_t *provider = find_provider (authz, name);
    if (!provider)
        reply = too_many_providers ();
    else if (provider_fault_add (provider, body, err, sizeof err) != 0)
        reply = bad_admin (err);
    else
        reply = reply_json_take (200, json_pack ("{s:b, s:s, s:I}", "ok", 1, "provider", name,
                                                 "queued", (json_int_t) provider->nfaults));
    pthread_mutex_unlock (&authz->lock);
    return reply;
}

reply_t *
authz_admin_clear_faults (authz_t *authz, const char *name)
{
    if (name && !provider_name_valid (name))
        return bad_admin ("\"provider\" must be a valid provider name");
    pthread_mutex_lock (&authz->lock);
    for (provider_t *p = authz->providers; p; p = p->next)
        if (!name || strcmp (p->name, name) == 0)
            provider_faults_clear (p);
    pthread_mutex_unlock (&authz->lock);
    return reply_json_take (200, json_pack ("{s:b}", "ok", 1));
}

void
authz_count_connection (authz_t *authz)
{
    pthread_mutex_lock (&authz->lock);
    authz->connections++;
    pthread_mutex_unlock (&authz->lock);
}

reply_t *
authz_admin_stats (authz_t *authz)
{
    json_t *providers = json_object ();
    json_t *chains = json_object ();

    pthread_mutex_lock (&authz->lock);
    for (provider_t *p = authz->providers; p; p = p->next)
        json_object_set_new (providers, p->name, provider_stats_json (p));
    for (size_t id = 1; id <= store_chain_count (authz->store); id++) {
        const chain_t *chain = store_chain_by_id (authz->store, (long) id);
        char key [32];
        snprintf (key, sizeof key, "%zu", id);
        json_object_set_new (chains, key,
                             json_pack ("{s:s, s:I, s:I, s:I, s:b, s:b, s:b}",
                                        "provider", chain->provider,
                                        "generation", (json_int_t) chain->generation,
                                        "rotated_ms", (json_int_t) chain->rotated_ms,
                                        "refresh_calls", (json_int_t) chain->refresh_calls,
                                        "revoked", chain->revoked,
                                        "reuse_detected", chain->reuse_detected,
                                        "refresh_usable", chain->refresh && !chain->revoked
                                                          && !chain->refresh->revoked));
    }
    json_int_t connections = (json_int_t) authz->connections;
    pthread_mutex_unlock (&authz->lock);
    return reply_json_take (200, json_pack ("{s:o, s:o, s:I}", "providers", providers, "chains", chains,
                                            "connections", connections));
}

reply_t *
authz_admin_requests (authz_t *authz, const char *provider, size_t limit)
{
    json_t *out;
    pthread_mutex_lock (&authz->lock);
    out = reqlog_json (authz->reqlog, provider, limit);
    pthread_mutex_unlock (&authz->lock);
    return reply_json_take (200, out);
}

reply_t *
authz_admin_release (authz_t *authz)
{
    pthread_mutex_lock (&authz->lock);
    authz->released_gen++;
    pthread_cond_broadcast (&authz->wake);
    pthread_mutex_unlock (&authz->lock);
    return reply_json_take (200, json_pack ("{s:b}", "ok", 1));
}

reply_t *
authz_admin_reset (authz_t *authz)
{
    char err [256];
    pthread_mutex_lock (&authz->lock);
    clear_state (authz);
    if (authz->startup && apply_config (authz, authz->startup, err, sizeof err) != 0)
        log_warning (NULL, NULL, "could not re-apply the startup configuration after reset: %s", err);
    pthread_mutex_unlock (&authz->lock);
    log_info (NULL, NULL, "state reset");
    return reply_json_take (200, json_pack ("{s:b}", "ok", 1));
}
