/* connect.c - the connect flow (RFC 6749 authorization code with RFC 7636 PKCE), disconnect
 * with RFC 7009 revocation, and the scope checks.
 *
 *   connect:    a random state (stored only as its SHA-256) and a PKCE verifier (sealed) go into
 *               pending_authorizations; the reply is the URL to send the user to.
 *   callback:   one UPDATE marks the state used and returns its row, so a reloaded callback URL
 *               finds it spent; the code is exchanged exactly once, never retried (a code is
 *               single use: a retry after a timeout could only fail, or be taken for a replay);
 *               the tokens are stored like an import and only then is the caller answered.
 *   disconnect: one statement destroys the stored tokens and hands the sealed refresh token
 *               back; the revocation at the provider follows, and its failure is a warning. */
#include "connect.h"
#include "gwops.h"           /* HOOK(gateway): return_to */
#include "clock.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "oauth.h"
#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NOTIFY_CHANNEL      "ferrule_integrations"   /* as store.c: other workers drop their cache */
#define MAX_REDIRECT_URI    2048
#define MAX_SCOPES          64                       /* scopes in one connect or require_scopes */
#define MAX_SCOPE_LEN       512
#define MAX_STATE_LEN       256                      /* the broker's routing limit */
#define MAX_ERROR_LEN       128
#define MAX_DESCRIPTION_IN  2048                     /* error_description accepted ... */
#define MAX_DESCRIPTION     200                      /* ... and kept for messages and logs */
#define MAX_WWW_AUTH        4096
#define MAX_WARNINGS        4
#define STATE_BYTES         32                       /* 256 bits of state and of PKCE verifier */
#define DEFAULT_EXPIRES_IN  3600                     /* when a provider omits expires_in */

typedef enum { CALL_EXCHANGE, CALL_REVOKE } call_kind_t;

/* A provider call in flight: its reply goes to job once the provider answered. */
typedef struct connect_call {
    struct connect_call *next;
    worker_t *w;
    call_kind_t kind;
    job_t job;
    char id [IDENT_MAX + 1];
    const catalog_provider_t *provider;     /* the catalog lives as long as the worker */
    char state_hash [65];
    char *redirect_uri;
    char *requested_scopes;                 /* space-separated */
    const char *token_kind;                 /* revocation: "refresh_token" or "access_token" */
} connect_call_t;

typedef struct {
    const char *code;
    char message [600];
    char hint [300];
} warning_t;

typedef struct {
    warning_t item [MAX_WARNINGS];
    int count;
} warnings_t;

/* What an operator needs to fix a redirect URI mismatch; sent as error.detail. */
typedef struct {
    const char *provider;
    const char *redirect_uri_sent;
    const char *provider_error;
    const char *provider_error_description;
} redirect_detail_t;

/* --- small helpers ------------------------------------------------------------------------ */

static void
warn_add (warnings_t *ws, const char *code, const char *hint, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

static void
warn_add (warnings_t *ws, const char *code, const char *hint, const char *fmt, ...)
{
    if (ws->count == MAX_WARNINGS)
        return;
    warning_t *wn = &ws->item [ws->count++];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (wn->message, sizeof wn->message, fmt, ap);
    va_end (ap);
    wn->code = code;
    snprintf (wn->hint, sizeof wn->hint, "%s", hint ? hint : "");
}

/* Printable ASCII, other bytes as '?', at most max bytes: for text that came from outside. */
static void
clean_text (char *dst, size_t dstlen, const char *s, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; s && s [i] && i < max && n + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char) s [i];
        dst [n++] = (ch >= 0x20 && ch < 0x7f) ? (char) ch : '?';
    }
    dst [n] = '\0';
}

static void
sha256_hex (const char *s, char out [65])
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

/* A string field: 0 absent, 1 copied into *out, -1 refused (reply sent). printable: ASCII only. */
static int
get_str (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
         int printable, char **out)
{
    const char *s;
    size_t len;
    char message [200];
    *out = NULL;
    int r = codec_get_str (root, key, &s, &len);
    if (r == 0)
        return 0;
    int bad = r < 0 || len == 0 || len > max || memchr (s, '\0', len);
    for (size_t i = 0; !bad && printable && i < len; i++)
        if ((unsigned char) s [i] < 0x20 || (unsigned char) s [i] >= 0x7f)
            bad = 1;
    if (bad) {
        snprintf (message, sizeof message, "\"%s\" must be a string of 1 to %zu %s", key, max,
                  printable ? "printable ASCII characters" : "bytes");
        worker_reply_error (w, job, r == 1 && len > max ? FR_TOO_LARGE : FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    *out = mem_strndup (s, len);
    return 1;
}

/* 1 when s is an RFC 6749 scope-token: visible ASCII but '"' and '\'. */
static int
scope_token_ok (const char *s, size_t len)
{
    if (len == 0 || len > MAX_SCOPE_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* An array of scope names joined by spaces: 0 absent (or empty), 1 present, -1 refused. */
static int
get_scopes (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, char **out)
{
    const msgpack_object *o = codec_get (root, key);
    char message [200];
    mem_buf_t b;
    *out = NULL;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    mem_buf_init (&b, MAX_SCOPES * (MAX_SCOPE_LEN + 1));
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > MAX_SCOPES)
        goto bad;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *s = &o->via.array.ptr [i];
        if (s->type != MSGPACK_OBJECT_STR || !scope_token_ok (s->via.str.ptr, s->via.str.size))
            goto bad;
        if ((b.len && mem_buf_append (&b, " ", 1) != 0) || mem_buf_append (&b, s->via.str.ptr, s->via.str.size) != 0)
            goto bad;
    }
    if (!b.data) {
        mem_buf_free (&b);
        return 0;
    }
    *out = b.data;
    return 1;
bad:
    mem_buf_free (&b);
    snprintf (message, sizeof message, "\"%s\" must be an array of at most %d scope names without spaces or quotes",
              key, MAX_SCOPES);
    worker_reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
    return -1;
}

int
connect_scope_granted (const char *granted, const char *scope)
{
    static const char google_alias [] = "/auth/userinfo.";
    const size_t alen = sizeof google_alias - 1;
    size_t slen = strlen (scope), len;
    int short_openid = strcmp (scope, "email") == 0 || strcmp (scope, "profile") == 0;
    const char *p = granted ? granted : "", *word;
    while ((word = codec_next_word (&p, &len))) {
        if (len == slen && memcmp (word, scope, len) == 0)
            return 1;
        if (short_openid && len > alen + slen) {
            const char *tail = word + len - (alen + slen);
            if (memcmp (tail, google_alias, alen) == 0 && memcmp (tail + alen, scope, slen) == 0)
                return 1;
        }
    }
    return 0;
}

int
connect_missing_scopes (const char *wanted, const char *granted, char *out, size_t outlen)
{
    const char *p = wanted ? wanted : "", *word;
    size_t len, n = 0;
    int count = 0;
    char scope [MAX_SCOPE_LEN + 1];
    out [0] = '\0';
    while ((word = codec_next_word (&p, &len))) {
        if (len > MAX_SCOPE_LEN)
            continue;
        memcpy (scope, word, len);
        scope [len] = '\0';
        if (connect_scope_granted (granted, scope))
            continue;
        count++;
        if (n < outlen)
            n += (size_t) snprintf (out + n, outlen - n, "%s\"%s\"", n ? ", " : "", scope);
    }
    return count;
}

static char *
pg_dup (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? NULL : mem_strdup (PQgetvalue (res, row, col));
}

static int64_t
pg_int (const PGresult *res, int row, int col)
{
    return PQgetisnull (res, row, col) ? 0 : strtoll (PQgetvalue (res, row, col), NULL, 10);
}

static int
pg_bool (const PGresult *res, int row, int col)
{
    return !PQgetisnull (res, row, col) && strcmp (PQgetvalue (res, row, col), "t") == 0;
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

/* --- the integration's connect columns ---------------------------------------------------- */

fr_status_t
connect_extra_load (store_t *s, const char *id, connect_extra_t *x, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { id };
    memset (x, 0, sizeof *x);
    PGresult *res = store_exec (s,
        "SELECT refresh_token_missing AND refresh_token IS NULL, array_to_string(requested_scopes, ' '),"
        " scope_report, COALESCE(extract(epoch FROM scope_report_at)::bigint, 0),"
        " COALESCE(extract(epoch FROM disconnected_at)::bigint, 0)"
        " FROM integrations WHERE id = $1",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 0) {
        snprintf (err, errlen, "integration \"%s\" does not exist", id);
        PQclear (res);
        return FR_NOT_FOUND;
    }
    x->refresh_token_missing = pg_bool (res, 0, 0);
    x->requested_scopes = pg_dup (res, 0, 1);
    x->scope_report = pg_dup (res, 0, 2);
    x->scope_report_at = pg_int (res, 0, 3);
    x->disconnected_at = pg_int (res, 0, 4);
    PQclear (res);
    return FR_OK;
}

void
connect_extra_clear (connect_extra_t *x)
{
    mem_free (x->requested_scopes);
    mem_free (x->scope_report);
    memset (x, 0, sizeof *x);
}

void
connect_note_import (worker_t *w, const job_t *job, const char *id)
{
    fr_status_t st;
    char err [512];
    const char *values [] = { id };
    PGresult *res = store_exec (w->store,
        "UPDATE integrations SET refresh_token_missing = false, disconnected_at = NULL,"
        " scope_report = NULL, scope_report_at = NULL"
        " WHERE id = $1 AND (refresh_token_missing OR disconnected_at IS NOT NULL OR scope_report IS NOT NULL)",
        1, values, NULL, NULL, 0, &st, err, sizeof err);
    if (!res)
        log_warning (id, job->rid, "could not clear the connect flags after the import: %s", err);
    PQclear (res);
}

/* --- replies ------------------------------------------------------------------------------ */

/* Loads the integration and its connect columns; on failure replies and returns -1. */
static int
load_integration (worker_t *w, const job_t *job, const char *id, store_row_t *row, connect_extra_t *x)
{
    char err [512];
    fr_status_t st = store_load (w->store, id, row, err, sizeof err);
    if (st == FR_OK) {
        st = connect_extra_load (w->store, id, x, err, sizeof err);
        if (st != FR_OK)
            store_row_clear (row);
    }
    if (st != FR_OK) {
        worker_reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        return -1;
    }
    return 0;
}

/* {"rid","ok",["error"],"integration",["warnings"],["reconnected"]}: a success when st is FR_OK,
 * else an error that still shows what was stored (no_refresh_token). */
static void
reply_with_integration (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                   const store_row_t *row, const connect_extra_t *x, const warnings_t *ws, int reconnected)
{
    int nwarn = ws ? ws->count : 0;
    codec_builder_t *o = worker_reply_begin (w, job, st == FR_OK,
                                             (uint32_t) (1 + (st != FR_OK) + (nwarn > 0) + (reconnected >= 0)));
    if (st != FR_OK) {
        codec_str (o, "error");
        codec_map (o, 3);
        codec_kv_str (o, "code", result_code (st));
        codec_kv_str (o, "message", message);
        codec_kv_str (o, "hint", hint ? hint : result_default_hint (st));
    }
    codec_str (o, "integration");
    requests_pack_integration (o, row, x);
    if (nwarn > 0) {
        codec_str (o, "warnings");
        codec_array (o, (uint32_t) nwarn);
        for (int i = 0; i < nwarn; i++) {
            codec_map (o, 3);
            codec_kv_str (o, "code", ws->item [i].code);
            codec_kv_str (o, "message", ws->item [i].message);
            codec_kv_str (o, "hint", ws->item [i].hint);
        }
    }
    if (reconnected >= 0)
        codec_kv_bool (o, "reconnected", reconnected);
    worker_reply (w, job);
}

/* An error reply with error.detail for a redirect URI mismatch. */
static void
reply_error_detail (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                    int64_t retry_after, const redirect_detail_t *d)
{
    if (!d) {
        worker_reply_error (w, job, st, message, hint, retry_after);
        return;
    }
    codec_builder_t *o = worker_reply_begin (w, job, 0, 1);
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
    worker_reply (w, job);
}

const char *
connect_no_refresh_token_hint (const catalog_provider_t *p, char *buf, size_t len)
{
    const char *where = p && p->notes ? strstr (p->notes, "https://myaccount.google.com/permissions") : NULL;
    if (where)
        snprintf (buf, len, "the provider issues a refresh token only on a full consent screen: open "
                  "https://myaccount.google.com/permissions with the account of this integration, remove "
                  "the app's access, then connect again");
    else
        snprintf (buf, len, "the provider issued no refresh token: check that the provider entry asks for offline "
                  "access, revoke the app's access in the account's settings at the provider, then connect again");
    return buf;
}

void
connect_reply_no_refresh_token (worker_t *w, const job_t *job, const cache_entry_t *e)
{
    char message [400], hint [400], when [32];
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
    worker_reply_error (w, job, FR_NO_REFRESH_TOKEN, message, connect_no_refresh_token_hint (p, hint, sizeof hint), -1);
}

/* --- calls in flight ---------------------------------------------------------------------- */

static connect_call_t *
call_new (worker_t *w, call_kind_t kind, const job_t *job, const char *id, const catalog_provider_t *p)
{
    connect_call_t *c = mem_alloc (sizeof *c);
    c->w = w;
    c->kind = kind;
    c->job = *job;
    c->job.next = NULL;
    snprintf (c->id, sizeof c->id, "%s", id);
    c->provider = p;
    c->next = w->connects;
    w->connects = c;
    return c;
}

static void
call_free (worker_t *w, connect_call_t *c)
{
    connect_call_t **pp = &w->connects;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    mem_free (c->redirect_uri);
    mem_free (c->requested_scopes);
    mem_free (c);
}

size_t
connect_count (const worker_t *w)
{
    size_t n = 0;
    for (const connect_call_t *c = w->connects; c; c = c->next)
        n++;
    return n;
}

void
connect_abandon_all (worker_t *w)
{
    while (w->connects)
        call_free (w, w->connects);
}

/* --- connect ------------------------------------------------------------------------------ */

void
connect_start (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    char *provider = NULL, *redirect_uri = NULL, *scopes = NULL, *state = NULL, *verifier = NULL;
    char *challenge = NULL, *url = NULL, *words = NULL;
    unsigned char *verifier_ct = NULL;
    size_t verifier_ct_len = 0;
    int32_t key_id = 0;
    const char **list = NULL;
    size_t nlist = 0;
    PGresult *res = NULL;
    char err [512], state_hash [65], when [32];
    fr_status_t st;
    int r;

    if ((r = get_str (w, job, root, "provider", CATALOG_MAX_NAME, 1, &provider)) < 0)
        goto out;
    if (r == 0) {
        worker_reply_error (w, job, FR_BAD_REQUEST, "\"provider\" is required", NULL, -1);
        goto out;
    }
    if ((r = get_str (w, job, root, "redirect_uri", MAX_REDIRECT_URI, 1, &redirect_uri)) < 0)
        goto out;
    if (r == 0 || !redirect_uri_ok (redirect_uri)) {
        char shown [120];
        clean_text (shown, sizeof shown, redirect_uri ? redirect_uri : "", 100);
        snprintf (err, sizeof err, r == 0 ? "\"redirect_uri\" is required"
                  : "\"redirect_uri\" \"%s\" is not an absolute http:// or https:// URI with a host (and no fragment)",
                  shown);
        worker_reply_error (w, job, FR_BAD_REQUEST, err,
                            "give the callback URI registered in the provider's OAuth app, for example "
                            "https://app.example.com/oauth/callback", -1);
        goto out;
    }
    if (get_scopes (w, job, root, "scopes", &scopes) < 0)
        goto out;
    if (!gwops_connect_check (w, job, root))    /* HOOK(gateway): return_to */
        goto out;
    const catalog_provider_t *p = catalog_find (w->catalog, provider);
    if (!p) {
        snprintf (err, sizeof err, "provider \"%s\" is not in the catalog", provider);
        worker_reply_error (w, job, FR_CONFIGURATION, err,
                            "use a provider name from the catalog, or add it with FERRULE_PROVIDERS_FILE", -1);
        goto out;
    }
    if ((st = catalog_check_credentials (p, err, sizeof err)) != FR_OK) {
        worker_reply_error (w, job, st, err, NULL, -1);
        goto out;
    }
    if (!scopes && p->default_scope_count) {
        mem_buf_t b;
        mem_buf_init (&b, MAX_SCOPES * (MAX_SCOPE_LEN + 1));
        for (size_t i = 0; i < p->default_scope_count; i++)
            if ((b.len && mem_buf_append (&b, " ", 1) != 0)
            ||  mem_buf_append (&b, p->default_scopes [i], strlen (p->default_scopes [i])) != 0)
                break;
        scopes = b.data;
    }
    /* the scope list as an array for the URL builder (pointers into a copy) */
    words = mem_strdup (scopes ? scopes : "");
    list = mem_alloc ((MAX_SCOPES + 1) * sizeof *list);
    for (char *save = NULL, *t = strtok_r (words, " ", &save); t && nlist < MAX_SCOPES; t = strtok_r (NULL, " ", &save))
        list [nlist++] = t;

    state = crypto_random_token (STATE_BYTES);
    if (p->pkce)
        verifier = crypto_random_token (STATE_BYTES);
    if (!state || (p->pkce && !verifier)) {
        worker_reply_error (w, job, FR_INTERNAL, "could not draw random bytes for the state", NULL, -1);
        goto out;
    }
    sha256_hex (state, state_hash);
    if (verifier) {
        challenge = crypto_pkce_challenge (verifier);
        /* associated data: the state hash and the column, so the sealed verifier opens only in its row */
        st = crypto_seal (w->keyring, state_hash, "code_verifier", verifier, &verifier_ct, &verifier_ct_len,
                          &key_id, err, sizeof err);
        if (st != FR_OK || !challenge) {
            worker_reply_error (w, job, st != FR_OK ? st : FR_INTERNAL, st != FR_OK ? err : "could not compute the PKCE challenge",
                                NULL, -1);
            goto out;
        }
    }
    url = oauth_authorization_url (p, NULL, redirect_uri, state, list, nlist, challenge);
    if (!url) {
        snprintf (err, sizeof err, "could not build the authorization URL for provider \"%s\" (too long?)", provider);
        worker_reply_error (w, job, FR_CONFIGURATION, err, NULL, -1);
        goto out;
    }

    char key [32], ttl [32];
    snprintf (key, sizeof key, "%" PRId32, key_id);
    snprintf (ttl, sizeof ttl, "%" PRId64, w->cfg.connect_state_ttl_s);
    const char *values [] = { state_hash, id, provider, redirect_uri, scopes ? scopes : "",
                              verifier_ct ? key : NULL, (const char *) verifier_ct, ttl };
    int lengths [] = { 0, 0, 0, 0, 0, 0, (int) verifier_ct_len, 0 };
    int formats [] = { 0, 0, 0, 0, 0, 0, 1, 0 };
    res = store_exec (w->store,
        /* the runtime role may not DELETE: spent states older than a day go through a
           function owned by the schema owner (migrations/004_least_privilege.sql) */
        "INSERT INTO pending_authorizations (state_hash, integration_id, provider, redirect_uri, requested_scopes,"
        "  key_id, code_verifier, expires_at)"
        " SELECT $1, $2, $3, $4, string_to_array($5, ' '), $6::integer, $7, now() + $8::integer * interval '1 second'"
        " FROM (SELECT ferrule_gc_pending_authorizations ()) gc"
        " RETURNING extract(epoch FROM expires_at)::bigint",
        8, values, lengths, formats, 1, &st, err, sizeof err);
    if (!res) {
        worker_reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        goto out;
    }
    int64_t expires_at = pg_int (res, 0, 0);
    gwops_connect_note (w, job, root, state_hash);  /* HOOK(gateway): return_to */
    log_info (id, job->rid, "connect started for provider \"%s\" with redirect URI \"%s\"%s; expires at %s",
              provider, redirect_uri, verifier ? " and PKCE" : "", clock_rfc3339 (expires_at, when, sizeof when));

    codec_builder_t *o = worker_reply_begin (w, job, 1, 7);
    codec_kv_str (o, "authorization_url", url);
    codec_kv_str (o, "state", state);
    codec_kv_time (o, "expires_at", expires_at);
    codec_kv_str (o, "integration", id);
    codec_kv_str (o, "provider", provider);
    codec_kv_str (o, "redirect_uri", redirect_uri);
    codec_kv_words (o, "scopes", scopes);
    worker_reply (w, job);
out:
    PQclear (res);
    mem_free (list);
    mem_free (words);
    mem_free (provider);
    mem_free (redirect_uri);
    mem_free (scopes);
    mem_free_secret (&state);
    mem_free_secret (&verifier);
    mem_free (challenge);
    mem_free (verifier_ct);
    mem_free (url);
}

/* --- callback ----------------------------------------------------------------------------- */

/* What the state's row holds once taken. */
typedef struct {
    char *integration;
    char *provider;
    char *redirect_uri;
    char *scopes;
    int32_t key_id;
    unsigned char *verifier_ct;
    size_t verifier_ct_len;
} pending_t;

static void
pending_clear (pending_t *pd)
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

/* Marks the state used and reads its row, in one statement. FR_STATE_INVALID (err says why)
 * for an unknown, spent or expired state. */
static fr_status_t
pending_take (worker_t *w, const char *state_hash, pending_t *pd, char *err, size_t errlen)
{
    fr_status_t st;
    const char *values [] = { state_hash };
    char when [32];
    memset (pd, 0, sizeof *pd);
    PGresult *res = store_exec (w->store,
        "UPDATE pending_authorizations SET used_at = now()"
        " WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()"
        " RETURNING integration_id, provider, redirect_uri, array_to_string(requested_scopes, ' '), key_id, code_verifier",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 1) {
        pd->integration = pg_dup (res, 0, 0);
        pd->provider = pg_dup (res, 0, 1);
        pd->redirect_uri = pg_dup (res, 0, 2);
        pd->scopes = pg_dup (res, 0, 3);
        pd->key_id = (int32_t) pg_int (res, 0, 4);
        if (!PQgetisnull (res, 0, 5)) {
            size_t n = 0;
            unsigned char *raw = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, 0, 5), &n);
            if (raw) {
                pd->verifier_ct = mem_alloc (n ? n : 1);
                memcpy (pd->verifier_ct, raw, n);
                pd->verifier_ct_len = n;
                PQfreemem (raw);
            }
        }
        PQclear (res);
        return FR_OK;
    }
    PQclear (res);
    /* why not: for the message only; the state stays unusable either way */
    res = store_exec (w->store,
        "SELECT integration_id, used_at IS NOT NULL, extract(epoch FROM COALESCE(used_at, expires_at))::bigint"
        " FROM pending_authorizations WHERE state_hash = $1",
        1, values, NULL, NULL, 1, &st, err, errlen);
    if (!res)
        return st;
    if (PQntuples (res) == 0)
        snprintf (err, errlen, "the callback's state is not one this service issued, or it is older than a day: "
                  "the connect flow cannot be finished");
    else
    if (pg_bool (res, 0, 1))
        snprintf (err, errlen, "the callback for integration \"%s\" was already used at %s: a callback URL works "
                  "once (it was reloaded, or opened twice)", PQgetvalue (res, 0, 0),
                  clock_rfc3339 (pg_int (res, 0, 2), when, sizeof when));
    else
        snprintf (err, errlen, "the connect flow for integration \"%s\" expired at %s, before the callback came",
                  PQgetvalue (res, 0, 0), clock_rfc3339 (pg_int (res, 0, 2), when, sizeof when));
    PQclear (res);
    return FR_STATE_INVALID;
}

/* Remembers how a callback ended: on the pending row, and as a chain row when the integration
 * exists (its history then shows failed reconnects). Best effort. */
static void
record_outcome (worker_t *w, const char *rid, const char *state_hash, const char *id, const char *outcome,
                const char *detail)
{
    fr_status_t st;
    char err [512];
    const char *values [] = { state_hash, outcome, detail, id, store_worker_id (w->store) };
    PGresult *res = store_exec (w->store,
        "WITH p AS (UPDATE pending_authorizations SET outcome = $2, outcome_detail = $3 WHERE state_hash = $1)"
        " INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
        " SELECT id, generation, $5, 'connect_failed', $2 || ': ' || $3 FROM integrations WHERE id = $4",
        5, values, NULL, NULL, 0, &st, err, sizeof err);
    if (!res)
        log_warning (id, rid, "could not record the failed connect: %s", err);
    PQclear (res);
}

/* Fails a callback: log, record, reply. */
static void
callback_fail (worker_t *w, const job_t *job, const char *state_hash, const char *id, fr_status_t st,
               const char *message, const char *hint, int64_t retry_after, const redirect_detail_t *d)
{
    log_warning (id, job->rid, "connect failed: %s: %s", result_code (st), message);
    record_outcome (w, job->rid, state_hash, id, result_code (st), message);
    reply_error_detail (w, job, st, message, hint, retry_after, d);
}

static int
code_is (const char *code, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp (code, *list) == 0)
            return 1;
    return 0;
}

/* The provider redirected with ?error=...: nothing to exchange. */
static void
callback_provider_error (worker_t *w, const job_t *job, const char *state_hash, const pending_t *pd,
                         const catalog_provider_t *p, const char *error, const char *description)
{
    static const char *const redirect [] = { "redirect_uri_mismatch", "invalid_redirect_uri", "bad_redirect_uri", NULL };
    static const char *const client [] = { "unauthorized_client", "invalid_client", NULL };
    static const char *const transient [] = { "temporarily_unavailable", "server_error", NULL };
    char message [900], hint [400], desc [MAX_DESCRIPTION + 1], code [MAX_ERROR_LEN + 1];
    const char *hint_used = NULL;
    redirect_detail_t d, *dp = NULL;
    fr_status_t st;

    clean_text (code, sizeof code, error, MAX_ERROR_LEN);
    clean_text (desc, sizeof desc, description ? description : "", MAX_DESCRIPTION);
    const char *sep = desc [0] ? ": " : "";
    if (strcasecmp (code, "access_denied") == 0) {
        st = FR_ACCESS_DENIED;
        snprintf (message, sizeof message, "access to provider \"%s\" was declined for integration \"%s\" at the "
                  "consent screen (access_denied%s%s)", p->name, pd->integration, sep, desc);
    }
    else
    if (code_is (code, redirect)) {
        st = FR_REDIRECT_URI_MISMATCH;
        snprintf (message, sizeof message, "provider \"%s\" rejected the redirect URI \"%s\" for integration \"%s\": "
                  "it must match one registered in the provider's OAuth app (%s%s%s)", p->name, pd->redirect_uri,
                  pd->integration, code, sep, desc);
        snprintf (hint, sizeof hint, "register \"%s\" exactly (scheme, host, port, path, trailing slash) in the OAuth "
                  "app of provider \"%s\", or connect with a registered redirect URI; users: contact support with the "
                  "provider name and this message", pd->redirect_uri, p->name);
        hint_used = hint;
        d = (redirect_detail_t) { p->name, pd->redirect_uri, code, desc [0] ? desc : NULL };
        dp = &d;
    }
    else
    if (strcasecmp (code, "invalid_scope") == 0) {
        st = FR_INVALID_SCOPE;
        snprintf (message, sizeof message, "provider \"%s\" rejected the scopes requested for integration \"%s\" "
                  "(\"%s\"): invalid_scope%s%s", p->name, pd->integration, pd->scopes ? pd->scopes : "", sep, desc);
    }
    else
    if (code_is (code, client)) {
        st = FR_INVALID_CLIENT;
        snprintf (message, sizeof message, "provider \"%s\" refused the OAuth client at the authorization step for "
                  "integration \"%s\" (%s%s%s)", p->name, pd->integration, code, sep, desc);
    }
    else
    if (code_is (code, transient)) {
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

void
connect_callback (worker_t *w, job_t *job, const msgpack_object *root)
{
    char *state = NULL, *code = NULL, *error = NULL, *description = NULL, *verifier = NULL;
    oauth_request_t *req = NULL;
    pending_t pd;
    char err [512], state_hash [65], message [700];
    fr_status_t st;
    int r;

    memset (&pd, 0, sizeof pd);
    if ((r = get_str (w, job, root, "state", MAX_STATE_LEN, 1, &state)) <= 0) {
        if (r == 0)
            worker_reply_error (w, job, FR_BAD_REQUEST, "\"state\" is required", NULL, -1);
        goto out;
    }
    if (get_str (w, job, root, "code", OAUTH_MAX_INPUT, 1, &code) < 0
    ||  get_str (w, job, root, "error", MAX_ERROR_LEN, 1, &error) < 0
    ||  get_str (w, job, root, "error_description", MAX_DESCRIPTION_IN, 0, &description) < 0)
        goto out;
    if (!code && !error) {
        worker_reply_error (w, job, FR_BAD_REQUEST, "the callback has neither \"code\" nor \"error\"",
                            "pass the whole URL the provider redirected the browser to", -1);
        goto out;
    }
    sha256_hex (state, state_hash);
    st = pending_take (w, state_hash, &pd, err, sizeof err);
    if (st != FR_OK) {
        log_warning (NULL, job->rid, "callback refused: %s", err);
        worker_reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        goto out;
    }
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
    connect_call_t *c = call_new (w, CALL_EXCHANGE, job, pd.integration, p);
    memcpy (c->state_hash, state_hash, sizeof c->state_hash);
    c->redirect_uri = pd.redirect_uri;
    c->requested_scopes = pd.scopes;
    pd.redirect_uri = NULL;
    pd.scopes = NULL;
    /* exactly once: no retry, whatever happens (a code is single use) */
    if (http_post (w->http, req->url, req->body, req->authorization, on_exchange, c) != 0) {
        call_free (w, c);
        callback_fail (w, job, state_hash, pd.integration, FR_INTERNAL, "could not start the provider call", NULL, -1, NULL);
        goto out;
    }
    log_debug (pd.integration, job->rid, "exchanging the authorization code with provider \"%s\"", p->name);
out:
    oauth_request_destroy (&req);
    pending_clear (&pd);
    mem_free (state);
    mem_free_secret (&code);
    mem_free (error);
    mem_free (description);
    mem_free_secret (&verifier);
}

/* Stores the tokens of a successful exchange and answers. */
static void
exchange_succeeded (worker_t *w, connect_call_t *c, oauth_result_t *res)
{
    const catalog_provider_t *p = c->provider;
    const job_t *job = &c->job;
    unsigned char *at_ct = NULL, *rt_ct = NULL;
    size_t at_len = 0, rt_len = 0;
    int32_t key_id = 0;
    char *granted = NULL;
    char err [512] = "", fingerprint [CRYPTO_FINGERPRINT_LEN + 1] = "", missing [512], detail [700], when [32];
    store_row_t row;
    connect_extra_t x;
    warnings_t ws = { .count = 0 };
    PGresult *res_db = NULL;
    fr_status_t st;

    memset (&row, 0, sizeof row);
    memset (&x, 0, sizeof x);
    int64_t expires_in = res->expires_in >= 0 ? res->expires_in : DEFAULT_EXPIRES_IN;
    int64_t expires_at = clock_wall_ms () / 1000 + expires_in;
    st = crypto_seal (w->keyring, c->id, "access_token", res->access_token, &at_ct, &at_len, &key_id, err, sizeof err);
    if (st == FR_OK && res->refresh_token)
        st = crypto_seal (w->keyring, c->id, "refresh_token", res->refresh_token, &rt_ct, &rt_len, &key_id, err, sizeof err);
    if (st != FR_OK) {
        log_error (c->id, job->rid, "could not seal the new tokens: %s", err);
        worker_reply_error (w, job, FR_INTERNAL, "could not seal the new tokens: start again from Connect", NULL, -1);
        goto out;
    }
    if (res->refresh_token)
        crypto_fingerprint (w->keyring, res->refresh_token, fingerprint);
    /* RFC 6749 5.1: no scope in the answer means the scopes requested were granted */
    granted = mem_strdup (res->scope ? res->scope : (c->requested_scopes ? c->requested_scopes : ""));
    for (char *q = granted; *q; q++)
        if (*q == ',')
            *q = ' ';
    int nmissing = connect_missing_scopes (c->requested_scopes, granted, missing, sizeof missing);
    snprintf (detail, sizeof detail, "connected with provider \"%s\"%s%s%s", p->name,
              res->refresh_token ? "" : "; no refresh token issued", nmissing ? "; scopes not granted: " : "",
              nmissing ? missing : "");

    char key [32], exp [32];
    snprintf (key, sizeof key, "%" PRId32, key_id);
    snprintf (exp, sizeof exp, "%" PRId64, expires_at);
    char life [32];
    snprintf (life, sizeof life, "%" PRId64, expires_in);
    const char *values [] = { c->id, p->name, key, (const char *) at_ct, exp, (const char *) rt_ct,
                              res->refresh_token ? fingerprint : NULL, granted,
                              c->requested_scopes ? c->requested_scopes : "", res->refresh_token ? "false" : "true",
                              store_worker_id (w->store), detail, c->state_hash, life };
    int lengths [] = { 0, 0, 0, (int) at_len, 0, (int) rt_len, 0, 0, 0, 0, 0, 0, 0, 0 };
    int formats [] = { 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 };
    /* Like an import: a reconnect replaces the tokens, returns the integration to active, keeps the
     * history and bumps the generation so that a refresh in flight for the old chain cannot commit. */
    res_db = store_exec (w->store,
        "WITH prev AS (SELECT status FROM integrations WHERE id = $1),"     /* the snapshot: before u */
        " u AS ("
        "  INSERT INTO integrations (id, provider, status, key_id, access_token, access_expires_at,"
        "    refresh_token, refresh_fingerprint, generation, scopes, requested_scopes, refresh_token_missing,"
        "    access_lifetime_s)"
        "  VALUES ($1, $2, 'active', $3::integer, $4, to_timestamp($5::bigint), $6, $7, 1,"
        "    string_to_array($8, ' '), string_to_array($9, ' '), $10::boolean, $14::integer)"
        "  ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, status = 'active',"
        "    key_id = EXCLUDED.key_id, access_token = EXCLUDED.access_token,"
        "    access_expires_at = EXCLUDED.access_expires_at, refresh_token = EXCLUDED.refresh_token,"
        "    refresh_fingerprint = EXCLUDED.refresh_fingerprint, generation = integrations.generation + 1,"
        "    scopes = EXCLUDED.scopes, requested_scopes = EXCLUDED.requested_scopes,"
        "    refresh_token_missing = EXCLUDED.refresh_token_missing, scope_report = NULL, scope_report_at = NULL,"
        "    disconnected_at = NULL, lease_owner = NULL, lease_id = NULL, lease_token = NULL, lease_expires_at = NULL,"
        "    access_lifetime_s = EXCLUDED.access_lifetime_s,"
        "    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()"
        "  RETURNING generation),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
        "  SELECT $1, u.generation, $11, 'connected', $7,"
        "    COALESCE('re' || $12 || ' (was ' || (SELECT status FROM prev) || ')', $12) FROM u RETURNING generation),"
        " p AS (UPDATE pending_authorizations SET outcome = 'connected', outcome_detail = $12 WHERE state_hash = $13)"
        " SELECT c.generation, (SELECT status FROM prev), pg_notify('" NOTIFY_CHANNEL "', $11 || ' ' || $1) FROM c",
        14, values, lengths, formats, 1, &st, err, sizeof err);
    if (!res_db || PQntuples (res_db) != 1) {
        if (res_db)
            st = FR_INTERNAL;
        log_error (c->id, job->rid, "the provider issued tokens but they could not be stored: %s", err);
        snprintf (detail, sizeof detail, "provider \"%s\" issued tokens for integration \"%s\" but they could not be "
                  "stored (%.300s): start again from Connect", p->name, c->id, res_db ? "no row written" : err);
        worker_reply_error (w, job, st == FR_OK ? FR_INTERNAL : st, detail, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        goto out;
    }
    int reconnected = !PQgetisnull (res_db, 0, 1);
    cache_drop (w->cache, c->id);
    log_info (c->id, job->rid, "%s with provider \"%s\": generation %s, access token until %s%s%s%s",
              reconnected ? "reconnected" : "connected", p->name, PQgetvalue (res_db, 0, 0),
              clock_rfc3339 (expires_at, when, sizeof when), res->refresh_token ? "" : ", no refresh token",
              nmissing ? ", scopes not granted: " : "", nmissing ? missing : "");

    if (load_integration (w, job, c->id, &row, &x) != 0)
        goto out;
    if (nmissing)
        warn_add (&ws, "scopes_reduced",
                  "disconnect and reconnect the integration, and accept all requested permissions on the "
                  "provider's consent screen",
                  "provider \"%s\" granted fewer scopes than requested for integration \"%s\": missing %s",
                  p->name, c->id, missing);
    if (!res->refresh_token) {
        char message [600], hint [400];
        snprintf (message, sizeof message, "provider \"%s\" issued no refresh token for integration \"%s\": it is "
                  "stored and its access token works until %s, but it cannot be renewed after that",
                  p->name, c->id, clock_rfc3339 (expires_at, when, sizeof when));
        reply_with_integration (w, job, FR_NO_REFRESH_TOKEN, message, connect_no_refresh_token_hint (p, hint, sizeof hint),
                           &row, &x, &ws, reconnected);
    }
    else
        reply_with_integration (w, job, FR_OK, NULL, NULL, &row, &x, &ws, reconnected);
out:
    PQclear (res_db);
    store_row_clear (&row);
    connect_extra_clear (&x);
    mem_free (granted);
    mem_free (at_ct);
    mem_free (rt_ct);
}

static void
on_exchange (void *arg, const http_response_t *resp)
{
    connect_call_t *c = arg;
    worker_t *w = c->w;
    const catalog_provider_t *p = c->provider;
    oauth_result_t res;
    char message [900], hint [400], desc [MAX_DESCRIPTION + 1] = "";
    redirect_detail_t d, *dp = NULL;
    const char *hint_used = NULL;
    memset (&res, 0, sizeof res);

    oauth_read_response (p, resp, w->cfg.max_provider_body, &res);

    if (res.kind == OAUTH_OK) {
        exchange_succeeded (w, c, &res);
        goto out;
    }
    fr_status_t st = oauth_kind_status (res.kind, 1);
    clean_text (desc, sizeof desc, res.error_description ? res.error_description : "", MAX_DESCRIPTION);
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
            snprintf (message, sizeof message, "provider \"%s\" rejected the redirect URI \"%s\" sent with the code "
                      "of integration \"%s\": it must match the one registered in the provider's OAuth app and the "
                      "one the authorization used (provider said: %s)", p->name, c->redirect_uri, c->id, said);
            snprintf (hint, sizeof hint, "register \"%s\" exactly (scheme, host, port, path, trailing slash) in the "
                      "OAuth app of provider \"%s\" and start again from Connect; users: contact support with the "
                      "provider name and this message", c->redirect_uri, p->name);
            hint_used = hint;
            d = (redirect_detail_t) { p->name, c->redirect_uri, res.error ? res.error : "redirect_uri_mismatch",
                                      desc [0] ? desc : NULL };
            dp = &d;
            break;
        case OAUTH_INVALID_CLIENT:
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
        default:
            snprintf (message, sizeof message, "provider \"%s\" refused the code exchange for integration \"%s\" "
                      "(provider said: %s)", p->name, c->id, said);
            break;
    }
    callback_fail (w, &c->job, c->state_hash, c->id, st, message, hint_used,
                   st == FR_PROVIDER_UNAVAILABLE ? res.retry_after : -1, dp);
out:
    oauth_result_clear (&res);
    call_free (w, c);
}

/* --- disconnect --------------------------------------------------------------------------- */

/* Adds a chain row about the revocation (best effort). */
static void
note_revocation (worker_t *w, const connect_call_t *c, const char *outcome, const char *detail)
{
    fr_status_t st;
    char err [512];
    const char *values [] = { c->id, store_worker_id (w->store), outcome, detail };
    PGresult *res = store_exec (w->store,
        "INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
        " SELECT id, generation, $2, $3, $4 FROM integrations WHERE id = $1",
        4, values, NULL, NULL, 0, &st, err, sizeof err);
    if (!res)
        log_warning (c->id, c->job.rid, "could not record the revocation: %s", err);
    PQclear (res);
}

static void
disconnect_finish (worker_t *w, const job_t *job, const char *id, const warnings_t *ws)
{
    store_row_t row;
    connect_extra_t x;
    if (load_integration (w, job, id, &row, &x) != 0)
        return;
    reply_with_integration (w, job, FR_OK, NULL, NULL, &row, &x, ws, -1);
    store_row_clear (&row);
    connect_extra_clear (&x);
}

static void
on_revoke (void *arg, const http_response_t *resp)
{
    connect_call_t *c = arg;
    worker_t *w = c->w;
    warnings_t ws = { .count = 0 };
    char detail [400];

    if (resp->status >= 200 && resp->status <= 299) {
        snprintf (detail, sizeof detail, "provider \"%s\" revoked the %s (HTTP %ld)", c->provider->name,
                  c->token_kind, resp->status);
        note_revocation (w, c, "revoked", detail);
        log_info (c->id, c->job.rid, "%s", detail);
    }
    else {
        oauth_result_t res;
        char desc [MAX_DESCRIPTION + 1] = "";
        memset (&res, 0, sizeof res);
        if (resp->status == 0)
            snprintf (detail, sizeof detail, "%s", resp->error ? resp->error : "no answer");
        else {
            oauth_parse_token_response (c->provider, resp->status, resp->retry_after, resp->body,
                                        resp->too_large ? 0 : resp->body_len, &res);
            clean_text (desc, sizeof desc, res.error_description ? res.error_description : "", MAX_DESCRIPTION);
            snprintf (detail, sizeof detail, "HTTP %ld%s%s%s%s", resp->status, res.error ? " " : "",
                      res.error ? res.error : "", desc [0] ? ": " : "", desc);
        }
        oauth_result_clear (&res);
        warn_add (&ws, "revocation_failed",
                  "the stored tokens are destroyed; to be sure the grant is gone, remove the app's access in the "
                  "account's settings at the provider",
                  "provider \"%s\" did not confirm the revocation of the %s of integration \"%s\" (%s)",
                  c->provider->name, c->token_kind, c->id, detail);
        note_revocation (w, c, "revocation_failed", ws.item [0].message);
        log_warning (c->id, c->job.rid, "%s", ws.item [0].message);
    }
    disconnect_finish (w, &c->job, c->id, &ws);
    call_free (w, c);
}

void
connect_disconnect (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    fr_status_t st;
    char err [512];
    char *token = NULL;
    oauth_request_t *req = NULL;
    warnings_t ws = { .count = 0 };
    const char *values [] = { id, store_worker_id (w->store) };
    /* One statement: lock the row, take the sealed tokens out, destroy them, record it, notify. */
    PGresult *res = store_exec (w->store,
        "WITH old AS (SELECT id, status, provider, key_id, refresh_token, access_token, refresh_fingerprint"
        "   FROM integrations WHERE id = $1 FOR UPDATE),"
        " u AS ("
        "  UPDATE integrations i SET status = 'disconnected', access_token = NULL, refresh_token = NULL,"
        "    access_expires_at = NULL, refresh_fingerprint = NULL, refresh_token_missing = false,"
        "    generation = i.generation + 1, disconnected_at = now(), lease_owner = NULL, lease_id = NULL, lease_token = NULL,"
        "    lease_expires_at = NULL, updated_at = now()"
        "  FROM old WHERE i.id = old.id AND old.status <> 'disconnected' RETURNING i.generation),"
        " c AS ("
        "  INSERT INTO token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, detail)"
        "  SELECT $1, u.generation, $2, 'disconnected', old.refresh_fingerprint,"
        "    'disconnected by request (was ' || old.status || '); stored tokens destroyed' FROM u, old"
        "  RETURNING generation)"
        " SELECT old.status, old.provider, old.key_id, old.refresh_token, old.access_token,"
        "  CASE WHEN EXISTS (SELECT 1 FROM c) THEN pg_notify('" NOTIFY_CHANNEL "', $2 || ' ' || $1) END FROM old",
        2, values, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        worker_reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        return;
    }
    if (PQntuples (res) == 0) {
        snprintf (err, sizeof err, "integration \"%s\" does not exist", id);
        worker_reply_error (w, job, FR_NOT_FOUND, err, NULL, -1);
        goto out;
    }
    cache_drop (w->cache, id);
    if (strcmp (PQgetvalue (res, 0, 0), "disconnected") == 0) {
        disconnect_finish (w, job, id, NULL);          /* nothing left to revoke */
        goto out;
    }
    log_info (id, job->rid, "disconnected (was %s); stored tokens destroyed", PQgetvalue (res, 0, 0));

    const catalog_provider_t *p = catalog_find (w->catalog, PQgetvalue (res, 0, 1));
    int col = !PQgetisnull (res, 0, 3) ? 3 : !PQgetisnull (res, 0, 4) ? 4 : -1;
    const char *kind = col == 3 ? "refresh_token" : "access_token";
    const char *hint = "remove the app's access in the account's settings at the provider if the grant must end there too";
    if (col < 0)
        warn_add (&ws, "not_revoked", hint, "integration \"%s\" held no token to revoke", id);
    else
    if (!p || !p->revocation_url)
        warn_add (&ws, "not_revoked", hint, "provider \"%s\" has no token revocation endpoint (RFC 7009) in the "
                  "catalog: the tokens are destroyed here, but the grant stays valid at the provider",
                  PQgetvalue (res, 0, 1));
    else
    if (catalog_check_credentials (p, err, sizeof err) != FR_OK)
        warn_add (&ws, "not_revoked", hint, "the tokens were not revoked at provider \"%s\": %s", p->name, err);
    else {
        size_t n = 0;
        unsigned char *ct = PQunescapeBytea ((const unsigned char *) PQgetvalue (res, 0, col), &n);
        st = ct ? crypto_open (w->keyring, (int32_t) pg_int (res, 0, 2), id, kind, ct, n, &token, err, sizeof err)
                : FR_INTERNAL;
        if (ct) {
            mem_wipe (ct, n);
            PQfreemem (ct);
        }
        if (st == FR_OK)
            req = oauth_revocation_request_new (p, token, kind);
        if (!req)
            warn_add (&ws, "not_revoked", hint, "the tokens were not revoked at provider \"%s\": %s", p->name,
                      st != FR_OK ? err : "the revocation request could not be built");
        else {
            connect_call_t *c = call_new (w, CALL_REVOKE, job, id, p);
            c->token_kind = kind;
            if (http_post (w->http, req->url, req->body, req->authorization, on_revoke, c) == 0)
                goto out;                  /* the reply follows the provider's answer */
            call_free (w, c);
            warn_add (&ws, "not_revoked", hint, "could not start the revocation call to provider \"%s\"", p->name);
        }
    }
    log_warning (id, job->rid, "%s", ws.item [0].message);
    disconnect_finish (w, job, id, &ws);
out:
    oauth_request_destroy (&req);
    mem_free_secret (&token);
    PQclear (res);
}

/* --- scopes ------------------------------------------------------------------------------- */

int
connect_require_scopes (worker_t *w, const job_t *job, const msgpack_object *root, const cache_entry_t *e)
{
    char *wanted = NULL, missing [600], message [900];
    int r = get_scopes (w, job, root, "require_scopes", &wanted);
    if (r <= 0)
        return r;
    int n = connect_missing_scopes (wanted, e->scopes, missing, sizeof missing);
    mem_free (wanted);
    if (n == 0)
        return 0;
    snprintf (message, sizeof message, "integration \"%s\" was not granted the required scope%s %s (granted: %s)",
              e->id, n == 1 ? "" : "s", missing, e->scopes && *e->scopes ? e->scopes : "none");
    worker_reply_error (w, job, FR_INSUFFICIENT_SCOPE, message,
                        "disconnect and reconnect the integration (with --scope for each scope it needs), and accept "
                        "all requested permissions on the provider's consent screen", -1);
    return -1;
}

/* The value of auth-param name in a WWW-Authenticate header (quoted or token) into out. */
static int
auth_param (const char *header, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen (name);
    for (const char *p = header; *p; p++) {
        if (strncasecmp (p, name, nlen) != 0)
            continue;
        if (p != header && p [-1] != ' ' && p [-1] != ',' && p [-1] != '\t')
            continue;
        const char *v = p + nlen;
        while (*v == ' ')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ')
            v++;
        size_t n = 0;
        if (*v == '"') {
            for (v++; *v && *v != '"' && n + 1 < outlen; v++) {
                if (*v == '\\' && v [1])
                    v++;
                out [n++] = *v;
            }
        }
        else
            for (; *v && *v != ',' && *v != ' ' && n + 1 < outlen; v++)
                out [n++] = *v;
        out [n] = '\0';
        return n > 0;
    }
    return 0;
}

void
connect_report_scope (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    char *scope = NULL, *header = NULL;
    char from_header [MAX_SCOPE_LEN * 4], herror [MAX_ERROR_LEN + 1] = "", detail [1200], err [512];
    warnings_t ws = { .count = 0 };
    store_row_t row;
    connect_extra_t x;
    PGresult *res = NULL;
    fr_status_t st;

    if (get_str (w, job, root, "scope", sizeof from_header - 1, 1, &scope) < 0
    ||  get_str (w, job, root, "www_authenticate", MAX_WWW_AUTH, 1, &header) < 0)
        goto out;
    if (!scope && header && auth_param (header, "scope", from_header, sizeof from_header))
        scope = mem_strdup (from_header);
    if (header)
        auth_param (header, "error", herror, sizeof herror);
    int ok = scope != NULL;
    const char *p = scope ? scope : "", *word;
    size_t len, count = 0;
    while (ok && (word = codec_next_word (&p, &len))) {
        ok = scope_token_ok (word, len);
        count++;
    }
    if (!ok || count == 0) {
        worker_reply_error (w, job, FR_BAD_REQUEST,
                            scope ? "\"scope\" must hold scope names separated by spaces, without quotes"
                                  : "\"scope\" is required (or a \"www_authenticate\" header with a scope parameter)",
                            NULL, -1);
        goto out;
    }
    snprintf (detail, sizeof detail, "an upstream API answered %s; it needs scope \"%s\"",
              herror [0] ? herror : "insufficient_scope", scope);
    const char *values [] = { id, scope, store_worker_id (w->store), detail };
    res = store_exec (w->store,
        "WITH u AS (UPDATE integrations SET scope_report = $2, scope_report_at = now(), updated_at = now()"
        "   WHERE id = $1 RETURNING generation)"
        " INSERT INTO token_chain (integration_id, generation, worker, outcome, detail)"
        " SELECT $1, u.generation, $3, 'scope_reported', $4 FROM u RETURNING generation",
        4, values, NULL, NULL, 1, &st, err, sizeof err);
    if (!res) {
        worker_reply_error (w, job, st, err, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
        goto out;
    }
    if (PQntuples (res) == 0) {
        snprintf (err, sizeof err, "integration \"%s\" does not exist", id);
        worker_reply_error (w, job, FR_NOT_FOUND, err, NULL, -1);
        goto out;
    }
    log_warning (id, job->rid, "scope reported missing by a caller: %s", detail);
    if (load_integration (w, job, id, &row, &x) != 0)
        goto out;
    char missing [600];
    if (connect_missing_scopes (scope, row.scopes, missing, sizeof missing) == 0)
        warn_add (&ws, "scope_already_granted",
                  "the upstream API may need another scope, or the provider's OAuth app lacks the permission: "
                  "check the API's documentation and the app's configured scopes",
                  "integration \"%s\" already holds \"%s\" in its grant", id, scope);
    reply_with_integration (w, job, FR_OK, NULL, NULL, &row, &x, &ws, -1);
    store_row_clear (&row);
    connect_extra_clear (&x);
out:
    PQclear (res);
    mem_free (scope);
    mem_free (header);
}
