/* webhook.c - signed webhooks: endpoints file, body, signature, retry schedule, one delivery */
#include "webhook.h"
#include "mem.h"
#include "secmem.h"
#include "secrets.h"
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const webhook_event_types [] = {
    "needs_reconnect", "disconnected", "scopes_reduced", "insufficient_scope", "no_refresh_token",
    "connected", "reconnected", "recovered", "expiring", "test", NULL
};

struct webhook_set {
    webhook_endpoint_t eps [WEBHOOK_MAX_ENDPOINTS];
    size_t n;
};

static int
known_type (const char *t)
{
    for (int i = 0; webhook_event_types [i]; i++)
        if (strcmp (webhook_event_types [i], t) == 0)
            return 1;
    return 0;
}

static int
valid_name (const char *s)
{
    size_t n = strlen (s);
    if (n < 1 || n > WEBHOOK_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s [i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_'
        ||  c == '-'))
            return 0;
    }
    return 1;
}

/* 1 when curl takes url as an http:// or https:// URL with a host; else 0 and the parser's reason
 * in why, which never quotes the URL (it may hold a password) */
static int
valid_url (const char *url, char *why, size_t whylen)
{
    int ok = 0;
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLU *u = curl_url ();
    CURLUcode rc;
    snprintf (why, whylen, "not a URL");
    if (!u)
        goto out;
    if ((rc = curl_url_set (u, CURLUPART_URL, url, 0)) != CURLUE_OK) {
        snprintf (why, whylen, "%s", curl_url_strerror (rc));
        goto out;
    }
    if (curl_url_get (u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
    ||  (strcmp (scheme, "https") != 0 && strcmp (scheme, "http") != 0)) {
        snprintf (why, whylen, "not http:// or https://");
        goto out;
    }
    /* curl reads "http:///x" as host "x"; what the operator wrote names none */
    const char *after = strstr (url, "://");
    if (curl_url_get (u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host [0] || !after || after [3] == '/') {
        snprintf (why, whylen, "no host");
        goto out;
    }
    if (curl_url_get (u, CURLUPART_PORT, &port, 0) == CURLUE_OK && strcmp (port, "0") == 0) {
        snprintf (why, whylen, "port 0");
        goto out;
    }
    ok = 1;
out:
    curl_free (scheme);
    curl_free (host);
    curl_free (port);
    curl_url_cleanup (u);
    return ok;
}

/* The secret from a file (one line; a trailing newline is dropped) or an environment variable,
 * read straight into secure memory: stdio's buffer kept a copy on the heap, freed unwiped. NULL
 * with err set, which never names the file: an operator may have put the secret itself in
 * "secret_file" (a variable's name is checked before, webhook_set_parse). */
static char *
read_secret (const char *name, const char *file, const char *env, char *err, size_t errlen)
{
    char *secret = NULL;
    int fd = -1;
    char *buf = secmem_alloc (WEBHOOK_SECRET_MAX + 2);
    size_t n = 0;
    if (file) {
        if ((fd = open (file, O_RDONLY | O_CLOEXEC)) < 0) {
            snprintf (err, errlen, "could not read the secret of webhook endpoint \"%s\" from its \"secret_file\": "
                      "%s", name, strerror (errno));
            goto out;
        }
        while (n < WEBHOOK_SECRET_MAX + 1) {        /* one more than fits: too long is refused below */
            ssize_t got = read (fd, buf + n, WEBHOOK_SECRET_MAX + 1 - n);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                snprintf (err, errlen, "could not read the secret of webhook endpoint \"%s\" from its "
                          "\"secret_file\": %s", name, strerror (errno));
                goto out;
            }
            if (got == 0)
                break;
            n += (size_t) got;
        }
    }
    else {
        const char *v = getenv (env);
        if (!v) {
            snprintf (err, errlen, "webhook endpoint \"%s\": environment variable \"%s\" is not set", name, env);
            goto out;
        }
        n = strlen (v);
        if (n > WEBHOOK_SECRET_MAX + 1)
            n = WEBHOOK_SECRET_MAX + 1;
        memcpy (buf, v, n);
    }
    while (n > 0 && (buf [n - 1] == '\n' || buf [n - 1] == '\r'))
        n--;
    buf [n] = '\0';
    /* one line: a file of two was signed with both, newline and all */
    if (n < WEBHOOK_SECRET_MIN || n > WEBHOOK_SECRET_MAX || memchr (buf, '\0', n) || memchr (buf, '\n', n)
    ||  memchr (buf, '\r', n)) {
        snprintf (err, errlen, "the secret of webhook endpoint \"%s\" must be one line of %d to %d bytes: "
                  "make one with \"openssl rand -hex 32\"", name, WEBHOOK_SECRET_MIN, WEBHOOK_SECRET_MAX);
        goto out;
    }
    secret = buf;
    buf = NULL;
out:
    if (fd >= 0)
        close (fd);
    secmem_free (buf);
    return secret;
}

/* What kind of error jansson found, in words of our own: its text quotes the token it stopped
 * in ("near '...'"), or a byte of it, which may be a URL's password or a secret's name. */
static const char *
json_error_kind (const json_error_t *jerr)
{
    switch (json_error_code (jerr)) {
        case json_error_invalid_utf8:
        case json_error_null_character:
        case json_error_null_byte_in_key:       return "not UTF-8 text, or a NUL character in it";
        case json_error_premature_end_of_input: return "the file ends inside a value";
        case json_error_end_of_input_expected:  return "text after the end of the JSON object";
        case json_error_duplicate_key:          return "a key given twice in one object";
        case json_error_stack_overflow:         return "values nested too deeply";
        case json_error_numeric_overflow:       return "a number too large";
        default:                                return "not valid JSON (a bad escape, token or separator)";
    }
}

webhook_set_t *
webhook_set_parse (const char *text, size_t len, const char *source, char *err, size_t errlen)
{
    json_error_t jerr;
    char why [128];
    webhook_set_t *set = mem_alloc (sizeof *set);
    json_t *root = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf (err, errlen, "could not read webhook endpoints file \"%s\": line %d, column %d: %s", source,
                  jerr.line, jerr.column, json_error_kind (&jerr));
        goto fail;
    }
    json_t *list = json_object_get (root, "endpoints");
    if (!json_is_array (list)) {
        snprintf (err, errlen, "webhook endpoints file \"%s\" must be an object with an \"endpoints\" array", source);
        goto fail;
    }
    if (json_array_size (list) > WEBHOOK_MAX_ENDPOINTS) {
        snprintf (err, errlen, "webhook endpoints file \"%s\" lists %zu endpoints; at most %d are supported", source,
                  json_array_size (list), WEBHOOK_MAX_ENDPOINTS);
        goto fail;
    }
    size_t i;
    json_t *e;
    json_array_foreach (list, i, e) {
        const char *name = json_string_value (json_object_get (e, "name"));
        const char *url = json_string_value (json_object_get (e, "url"));
        const char *file = json_string_value (json_object_get (e, "secret_file"));
        const char *env = json_string_value (json_object_get (e, "secret_env"));
        json_t *types = json_object_get (e, "events");
        if (!json_is_object (e) || !name || !valid_name (name)) {
            snprintf (err, errlen, "webhook endpoints file \"%s\": endpoint %zu needs a \"name\" of 1 to %d characters "
                      "of A-Z a-z 0-9 . _ -", source, i + 1, WEBHOOK_NAME_MAX);
            goto fail;
        }
        if (json_object_get (e, "secret")) {
            snprintf (err, errlen, "webhook endpoint \"%s\": give the secret in a file (\"secret_file\") or an "
                      "environment variable (\"secret_env\"), not in the endpoints file", name);
            goto fail;
        }
        if (!url || strlen (url) > WEBHOOK_URL_MAX
        ||  (strncmp (url, "https://", 8) != 0 && strncmp (url, "http://", 7) != 0) || strchr (url, '#')) {
            snprintf (err, errlen, "webhook endpoint \"%s\": \"url\" must be an http:// or https:// URL of at most %d "
                      "characters without a fragment", name, WEBHOOK_URL_MAX);
            goto fail;
        }
        /* what the prefix let through curl refused at every delivery ("bad/illegal format") */
        if (!valid_url (url, why, sizeof why)) {
            snprintf (err, errlen, "webhook endpoint \"%s\": \"url\" is not a valid URL (%s); percent-encode "
                      "an '@', ':' or '/' in a user name or password (%%40, %%3A, %%2F)", name, why);
            goto fail;
        }
        if (!file == !env) {
            snprintf (err, errlen, "webhook endpoint \"%s\": give exactly one of \"secret_file\" and \"secret_env\"", name);
            goto fail;
        }
        /* what is no name may be the secret itself, put in the name's place: never quoted */
        if (env && !secrets_env_name_valid (env, WEBHOOK_ENV_NAME_MAX)) {
            snprintf (err, errlen, "webhook endpoint \"%s\": \"secret_env\" must be the name of the environment "
                      "variable that holds the secret (1 to %d of A-Z 0-9 _, not starting with a digit), not the "
                      "secret itself", name, WEBHOOK_ENV_NAME_MAX);
            goto fail;
        }
        for (size_t k = 0; k < set->n; k++) {
            if (strcmp (set->eps [k].name, name) == 0) {
                snprintf (err, errlen, "webhook endpoints file \"%s\": two endpoints are named \"%s\"", source, name);
                goto fail;
            }
            /* a signature covers the timestamp and body only: one endpoint's request would pass
             * at the other's receiver */
            if (env && set->eps [k].secret_env && strcmp (set->eps [k].secret_env, env) == 0) {
                snprintf (err, errlen, "webhook endpoint \"%s\": \"secret_env\" \"%s\" is also endpoint \"%s\"'s; "
                          "give each endpoint its own secret, or a request to one could be replayed to the other",
                          name, env, set->eps [k].name);
                goto fail;
            }
        }
        webhook_endpoint_t *ep = &set->eps [set->n];
        if (types && !json_is_array (types)) {
            snprintf (err, errlen, "webhook endpoint \"%s\": \"events\" must be an array of event types", name);
            goto fail;
        }
        if (types && json_array_size (types) == 0) {
            /* [] read as "every type" sent everything to an endpoint its operator meant to mute */
            snprintf (err, errlen, "webhook endpoint \"%s\": \"events\" is empty; list the event types it wants, or "
                      "[\"*\"] (or no \"events\") for all of them; to send it nothing, remove the endpoint", name);
            goto fail;
        }
        ep->all_types = !types;
        size_t k;
        json_t *t;
        if (!ep->all_types) {
            ep->types = mem_alloc (json_array_size (types) * sizeof *ep->types);
            json_array_foreach (types, k, t) {
                const char *tv = json_string_value (t);
                if (tv && strcmp (tv, "*") == 0) {
                    ep->all_types = 1;
                    continue;
                }
                if (!tv || !known_type (tv) || strcmp (tv, "test") == 0) {
                    snprintf (err, errlen, "webhook endpoint \"%s\": unknown event type \"%.40s\": use \"*\" or "
                              "types from docs/protocol.md (\"needs_reconnect\", \"connected\", ...)", name,
                              tv ? tv : "(not a string)");
                    ep->name = mem_strdup (name);       /* so that destroy frees the types */
                    set->n++;
                    goto fail;
                }
                ep->types [ep->ntypes++] = mem_strdup (tv);
            }
        }
        ep->name = mem_strdup (name);
        ep->url = mem_strdup (url);
        set->n++;
        ep->secret = read_secret (name, file, env, err, errlen);
        if (!ep->secret)
            goto fail;
        /* the same value from two files (or a file and a variable) signs alike as much as one
           variable does; the check of names above only says it better */
        for (size_t other = 0; other + 1 < set->n; other++)
            if (strcmp (set->eps [other].secret, ep->secret) == 0) {
                snprintf (err, errlen, "webhook endpoint \"%s\": its secret is the same as endpoint \"%s\"'s; give each "
                          "endpoint its own secret, or a request to one could be replayed to the other", name,
                          set->eps [other].name);
                goto fail;
            }
        ep->secret_env = env ? mem_strdup (env) : NULL;
    }
    json_decref (root);
    return set;
fail:
    json_decref (root);
    webhook_set_destroy (&set);
    return NULL;
}

webhook_set_t *
webhook_set_load (const char *path, char *err, size_t errlen)
{
    webhook_set_t *set = NULL;
    char *buf = NULL;
    FILE *f = fopen (path, "r");
    if (!f) {
        snprintf (err, errlen, "could not open webhook endpoints file \"%s\": %s", path, strerror (errno));
        return NULL;
    }
    buf = mem_alloc (WEBHOOK_FILE_MAX + 1);
    size_t n = fread (buf, 1, WEBHOOK_FILE_MAX + 1, f);
    if (n > WEBHOOK_FILE_MAX) {
        snprintf (err, errlen, "webhook endpoints file \"%s\" is larger than %d bytes", path, WEBHOOK_FILE_MAX);
        goto out;
    }
    set = webhook_set_parse (buf, n, path, err, errlen);
out:
    fclose (f);
    mem_free (buf);
    return set;
}

void
webhook_set_forget_environment (const webhook_set_t *set)
{
    for (size_t i = 0; set && i < set->n; i++) {
        const char *name = set->eps [i].secret_env;
        char *v = name ? getenv (name) : NULL;
        if (v)          /* the kernel's copy (/proc/PID/environ) is this block: unsetenv leaves it */
            mem_wipe (v, strlen (v));
        if (name)
            unsetenv (name);
    }
}

void
webhook_set_destroy (webhook_set_t **set_p)
{
    if (!set_p || !*set_p)
        return;
    webhook_set_t *set = *set_p;
    for (size_t i = 0; i < set->n; i++) {
        webhook_endpoint_t *ep = &set->eps [i];
        mem_free (ep->name);
        mem_free (ep->url);
        mem_free (ep->secret_env);
        secmem_free_str (&ep->secret);
        for (size_t k = 0; k < ep->ntypes; k++)
            mem_free (ep->types [k]);
        mem_free (ep->types);
    }
    mem_free (set);
    *set_p = NULL;
}

size_t
webhook_set_count (const webhook_set_t *set)
{
    return set ? set->n : 0;
}

const webhook_endpoint_t *
webhook_set_at (const webhook_set_t *set, size_t i)
{
    return set && i < set->n ? &set->eps [i] : NULL;
}

const webhook_endpoint_t *
webhook_set_find (const webhook_set_t *set, const char *name_or_url)
{
    for (size_t i = 0; set && i < set->n; i++)
        if (strcmp (set->eps [i].name, name_or_url) == 0 || strcmp (set->eps [i].url, name_or_url) == 0)
            return &set->eps [i];
    return NULL;
}

int
webhook_endpoint_wants (const webhook_endpoint_t *ep, const char *type)
{
    if (ep->all_types || strcmp (type, "test") == 0)
        return 1;
    for (size_t i = 0; i < ep->ntypes; i++)
        if (strcmp (ep->types [i], type) == 0)
            return 1;
    return 0;
}

/* The first hexlen (at most 64) lower-case hex digits of HMAC-SHA256 (key, msg) and a NUL in
 * out: 0, or -1 with out "" when OpenSSL failed. */
static int
hmac_hex (const char *key, const unsigned char *msg, size_t len, char *out, int hexlen)
{
    unsigned char mac [EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    out [0] = '\0';
    if (!HMAC (EVP_sha256 (), key, (int) strlen (key), msg, len, mac, &mac_len) || mac_len != 32)
        return -1;
    for (int i = 0; i < hexlen; i++)
        out [i] = "0123456789abcdef" [(mac [i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
    out [hexlen] = '\0';
    mem_wipe (mac, sizeof mac);
    return 0;
}

void
webhook_endpoint_shown (const webhook_endpoint_t *ep, char *out, size_t outlen)
{
    /* from the parsed parts: split by hand at the first '@', a password holding one showed its
     * tail */
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *rest = NULL;
    char tag [WEBHOOK_URL_TAG_HEX + 1] = "";
    CURLU *u = curl_url ();
    if (!u || curl_url_set (u, CURLUPART_URL, ep->url, 0) != CURLUE_OK
    ||  curl_url_get (u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
    ||  curl_url_get (u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf (out, outlen, "(not a valid URL)");
        goto out;
    }
    if (curl_url_get (u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;                /* none given: the scheme's */
    if (curl_url_get (u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    if (curl_url_get (u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
        query = NULL;
    if ((!path || strcmp (path, "/") == 0 || !path [0]) && !query) {
        snprintf (out, outlen, "%s://%s%s%s/", scheme, host, port ? ":" : "", port ? port : "");
        goto out;
    }
    /* a capability URL (Zapier's, n8n's hooks) is its own secret, in its path or
     * query: those show as a tag keyed with the endpoint's secret, the same on every worker, which
     * tells two apart and, unlike a plain hash, cannot be tried against guesses of a short path */
    size_t n = strlen ("ferrule-webhook-url:") + (path ? strlen (path) : 0) + 1 + (query ? strlen (query) : 0) + 1;
    rest = mem_alloc (n);
    snprintf (rest, n, "ferrule-webhook-url:%s%s%s", path ? path : "", query ? "?" : "", query ? query : "");
    (void) hmac_hex (ep->secret, (const unsigned char *) rest, strlen (rest), tag, WEBHOOK_URL_TAG_HEX);
    snprintf (out, outlen, "%s://%s%s%s/... (%s)", scheme, host, port ? ":" : "", port ? port : "",
              tag [0] ? tag : "path not shown");
out:
    if (rest)
        mem_free_wiped (rest);
    curl_free (scheme);
    curl_free (host);
    curl_free (port);
    curl_free (path);
    curl_free (query);
    curl_url_cleanup (u);
}

fr_status_t
webhook_sign (const char *secret, int64_t timestamp, const char *body, size_t body_len,
              char out [WEBHOOK_SIG_HEX + 1])
{
    char prefix [32];
    int plen = snprintf (prefix, sizeof prefix, "%lld.", (long long) timestamp);
    unsigned char *msg = mem_alloc ((size_t) plen + body_len + 1);
    memcpy (msg, prefix, (size_t) plen);
    memcpy (msg + plen, body, body_len);
    int rc = hmac_hex (secret, msg, (size_t) plen + body_len, out, WEBHOOK_SIG_HEX);
    mem_free (msg);
    return rc == 0 ? FR_OK : FR_INTERNAL;
}

int
webhook_verify (const char *secret, const char *header_value, const char *body, size_t body_len,
                int64_t now, int64_t tolerance_s)
{
    long long ts;
    char hex [WEBHOOK_SIG_HEX + 2], want [WEBHOOK_SIG_HEX + 1];
    int used = 0;
    if (!header_value || sscanf (header_value, "t=%lld,v1=%65[0-9a-f]%n", &ts, hex, &used) != 2
    ||  header_value [used] != '\0' || strlen (hex) != WEBHOOK_SIG_HEX)
        return 0;
    if ((int64_t) ts > now + tolerance_s || (int64_t) ts < now - tolerance_s)
        return 0;
    /* one that could not be computed matches nothing: it used to be all zeros, which did */
    if (webhook_sign (secret, (int64_t) ts, body, body_len, want) != FR_OK)
        return 0;
    return CRYPTO_memcmp (want, hex, WEBHOOK_SIG_HEX) == 0;
}

int64_t
webhook_backoff_ms (int attempts, int64_t base_ms, int64_t max_ms, uint64_t rnd)
{
    if (attempts < 1)
        attempts = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempts && d < max_ms; i++)
        d = d > INT64_MAX / 2 ? INT64_MAX : d * 2;
    if (d > max_ms)
        d = max_ms;
    if (d < 1)
        return 0;
    int64_t half = d / 2;
    return half + (int64_t) (rnd % (uint64_t) (d - half + 1));
}

char *
webhook_body (const webhook_event_t *ev)
{
    char at [40], exp [32];
    time_t secs = (time_t) (ev->created_at / 1000);
    struct tm tm;
    gmtime_r (&secs, &tm);
    size_t n = strftime (at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (at + n, sizeof at - n, ".%03dZ", (int) (ev->created_at % 1000));
    char *text = NULL, *body = NULL;
    json_t *o = json_pack ("{s:s, s:s, s:s, s:s*, s:s*, s:s*}",
                           "id", ev->id, "type", ev->type, "time", at,
                           "integration", ev->integration, "provider", ev->provider, "diagnosis", ev->diagnosis);
    /* each part or none: a field jansson refused (json_string of a text that is not UTF-8) was
     * left out, and a body it could not make at all was sent as "{}" */
    if (!o)
        goto out;
    if (ev->generation >= 0 && json_object_set_new (o, "generation", json_integer (ev->generation)) != 0)
        goto out;
    if (ev->detail && json_object_set_new (o, "detail", json_string (ev->detail)) != 0)
        goto out;
    if (ev->expires_at > 0) {
        secs = (time_t) ev->expires_at;
        gmtime_r (&secs, &tm);
        strftime (exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (json_object_set_new (o, "expires_at", json_string (exp)) != 0)
            goto out;
    }
    if ((text = json_dumps (o, JSON_COMPACT | JSON_SORT_KEYS)))
        body = mem_strdup (text);
out:
    json_decref (o);
    free (text);
    return body;
}

/* What the receiver answered: only its status counts, once the headers of its final answer
 * (not a 1xx) have ended; its body is read up to WEBHOOK_ANSWER_MAX, so that a small one keeps
 * the connection for the next attempt, and no further. */
typedef struct {
    CURL *curl;
    long status;                     /* the final answer's, once its headers ended; 0 before */
    size_t body;                     /* bytes of its body read */
} answer_t;

static size_t
answer_header (char *ptr, size_t size, size_t nmemb, void *arg)
{
    answer_t *a = arg;
    size_t n = size * nmemb;
    long code = 0;
    if ((n == 2 && ptr [0] == '\r' && ptr [1] == '\n') || (n == 1 && ptr [0] == '\n'))
        if (curl_easy_getinfo (a->curl, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code >= 200 && !a->status)
            a->status = code;
    return n;
}

static size_t
answer_body (char *ptr, size_t size, size_t nmemb, void *arg)
{
    answer_t *a = arg;
    (void) ptr;
    a->body += size * nmemb;
    return a->body > WEBHOOK_ANSWER_MAX ? 0 : size * nmemb;    /* 0: curl ends the transfer */
}

typedef struct {
    webhook_abort_fn *fn;
    void *arg;
} abort_ctx_t;

static int
progress (void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    abort_ctx_t *a = arg;
    return a->fn (a->arg) ? 1 : 0;
}

webhook_outcome_t
webhook_send (void *curl, const webhook_endpoint_t *ep, const webhook_event_t *ev, const char *body,
              int64_t now_s, int64_t timeout_ms, webhook_abort_fn *abort_fn, void *abort_arg, long *status,
              char *err, size_t errlen)
{
    abort_ctx_t actx = { abort_fn, abort_arg };
    CURL *c = curl;
    answer_t answer = { c, 0, 0 };
    char sig [WEBHOOK_SIG_HEX + 1], h_sig [160], h_id [80], h_type [64];
    char curl_err [CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    webhook_outcome_t outcome = WEBHOOK_RETRY;
    *status = 0;
    err [0] = '\0';
    if (webhook_sign (ep->secret, now_s, body, strlen (body), sig) != FR_OK) {
        snprintf (err, errlen, "could not sign the request (HMAC-SHA256 failed), so it was not sent");
        goto out;
    }
    snprintf (h_sig, sizeof h_sig, WEBHOOK_SIGNATURE_HEADER ": t=%lld,v1=%s", (long long) now_s, sig);
    snprintf (h_id, sizeof h_id, "Ferrule-Event-Id: %s", ev->id);
    snprintf (h_type, sizeof h_type, "Ferrule-Event-Type: %s", ev->type);
    headers = curl_slist_append (headers, "Content-Type: application/json");
    headers = curl_slist_append (headers, h_sig);
    headers = curl_slist_append (headers, h_id);
    headers = curl_slist_append (headers, h_type);
    headers = curl_slist_append (headers, "Expect:");
    curl_easy_reset (c);
    curl_easy_setopt (c, CURLOPT_URL, ep->url);
    curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt (c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt (c, CURLOPT_POSTFIELDSIZE, (long) strlen (body));
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT_MS, (long) (timeout_ms < 5000 ? timeout_ms : 5000));
    curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt (c, CURLOPT_USERAGENT, "ferrule-webhook/1");
    curl_easy_setopt (c, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);     /* a proxy's 200 is no answer */
    curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, answer_header);
    curl_easy_setopt (c, CURLOPT_HEADERDATA, &answer);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, answer_body);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt (c, CURLOPT_ERRORBUFFER, curl_err);
    if (abort_fn) {
        curl_easy_setopt (c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt (c, CURLOPT_XFERINFOFUNCTION, progress);
        curl_easy_setopt (c, CURLOPT_XFERINFODATA, &actx);
    }
    CURLcode rc = curl_easy_perform (c);
    /* an answer whose headers ended is one, however its body ends (cut at the cap, a timeout, a
     * stop): a 2xx followed by a large or slow body was a failed attempt, and the receiver had
     * the event again and again until its max age failed it */
    if (rc != CURLE_OK && !answer.status) {
        snprintf (err, errlen, "no answer: %s", curl_err [0] ? curl_err : curl_easy_strerror (rc));
        goto out;
    }
    if (rc == CURLE_OK)
        curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, status);
    else
        *status = answer.status;
    if (*status >= 200 && *status < 300)
        outcome = WEBHOOK_DELIVERED;
    else if (*status >= 300 && *status < 400)
        /* every attempt gets the same until the max age: only the operator can mend it. Where
         * it points is not said: a receiver's path may be its secret, and the error is shown to
         * every client that may list the integration's events */
        snprintf (err, errlen, "the endpoint answered HTTP %ld, a redirect, which is not followed: put the URL it "
                  "redirects to in the endpoints file", *status);
    else
        snprintf (err, errlen, "the endpoint answered HTTP %ld", *status);
out:
    curl_easy_setopt (c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt (c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt (c, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt (c, CURLOPT_NOPROGRESS, 1L);
    curl_easy_setopt (c, CURLOPT_XFERINFOFUNCTION, NULL);
    curl_easy_setopt (c, CURLOPT_XFERINFODATA, NULL);
    curl_slist_free_all (headers);
    mem_wipe (sig, sizeof sig);
    return outcome;
}
