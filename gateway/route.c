/* route.c - libmicrohttpd server, routing, body caps, security headers, request logs */
#include "route.h"
#include "api.h"
#include "callback.h"
#include "client.h"
#include "clock.h"
#include "crypto.h"
#include "dashboard.h"
#include "daemon.h"
#include "health.h"
#include "log.h"
#include "mem.h"
#include "result.h"
#include "style.h"
#include "text.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <microhttpd.h>

/* What libmicrohttpd may hold of one request's line and headers: room for the callback's longest
 * query (a 16,384-character code, percent-encoded, with its state) and ordinary headers. A
 * request past it gets the library's own 414 or 431. */
#define GW_CONNECTION_MEMORY (96 * 1024)

typedef struct {
    const char *method;
    const char *pattern;            /* "{id}": an integration id or prefix; "{key_id}": digits */
    gw_handler_fn *fn;
} route_t;

static const route_t routes [] = {
    { "GET",  "/oauth/callback",                          callback_page },
    { "POST", "/oauth/retry",                             callback_retry },
    { "GET",  "/dashboard/open",                          dashboard_open_confirm },
    { "POST", "/dashboard/open",                          dashboard_open },
    { "GET",  "/dashboard",                               dashboard_home },
    { "GET",  "/dashboard/integrations/{id}",             dashboard_detail },
    { "POST", "/dashboard/connect",                       dashboard_connect },
    { "POST", "/dashboard/integrations/{id}/disconnect",  dashboard_disconnect },
    { "POST", "/dashboard/integrations/{id}/reconnect",   dashboard_reconnect },
    { "POST", "/dashboard/apikeys",                       dashboard_apikey_create },
    { "POST", "/dashboard/apikeys/{key_id}/revoke",       dashboard_apikey_revoke },
    { "POST", "/dashboard/logout",                        dashboard_logout },
    { "GET",  "/v1/integrations/{id}",                    api_status },
    { "GET",  "/v1/integrations/{id}/token",              api_token },
    { "POST", "/v1/integrations/{id}/token/reject",       api_reject },
    { "GET",  "/v1/integrations/{id}/history",            api_history },
    { "GET",  "/v1/integrations/{id}/doctor",             api_doctor },
    { "POST", "/v1/integrations/{id}/connect",            api_connect },
    { "POST", "/v1/integrations/{id}/disconnect",         api_disconnect },
    { "GET",  "/static/ferrule.css",                      style_css },
};
#define NROUTES (sizeof routes / sizeof routes [0])

struct route_server {
    gw_t *gw;
    struct MHD_Daemon *daemon;
    int port;
    atomic_int in_flight;           /* requests whose headers arrived and whose answer is not sent yet */
    atomic_int draining;            /* 1: no new connections; answers close theirs */
};

typedef struct {
    mem_buf_t body;
    int too_large;
    int64_t started_ms;             /* its headers were in (monotonic) */
    uint64_t received;              /* body bytes, kept or not */
} conn_ctx_t;

/* Body bytes read past the limit before the connection is closed instead: a chunked body that
 * never ends is not read for ever for the sake of a 413. */
#define GW_DRAIN_MAX (4 * GW_MAX_BODY)

void
route_print (FILE *out)
{
    for (size_t i = 0; i < NROUTES; i++)
        fprintf (out, "%s %s\n", routes [i].method, routes [i].pattern);
}

/* --- matching ------------------------------------------------------------------------------ */

static int
seg_ok (const char *s, size_t len, int digits)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s [i];
        int ok = digits ? (c >= '0' && c <= '9')
                        : ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                           || c == '.' || c == '_' || c == ':' || c == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

/* 1 when path matches pattern; the {params} are copied into req->param in order. loose: any
 * segment fills a {param} (to tell a malformed id from an address that does not exist). */
static int
match (const char *pattern, const char *path, gw_req_t *req, int loose)
{
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr (p, '}');
            int digits = strncmp (p, "{key_id}", 8) == 0;
            size_t n = strcspn (s, "/");
            if (!close || np >= 2 || (loose ? n == 0 : !seg_ok (s, n, digits)))
                return 0;
            if (req) {
                memcpy (req->param [np], s, n);
                req->param [np][n] = '\0';
            }
            np++;
            p = close + 1;
            s += n;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

/* --- helpers for handlers ------------------------------------------------------------------- */

const char *
gw_query (const gw_req_t *req, const char *name)
{
    return MHD_lookup_connection_value (req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
gw_header (const gw_req_t *req, const char *name)
{
    return MHD_lookup_connection_value (req->conn, MHD_HEADER_KIND, name);
}

typedef struct {
    const char *name;
    const char *value;              /* the first with that exact name */
    int differ;                     /* another with that name has another value */
} cookie_find_t;

static enum MHD_Result
cookie_each (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    cookie_find_t *f = cls;
    (void) kind;
    if (!key || strcmp (key, f->name) != 0)
        return MHD_YES;
    if (!value)
        value = "";
    if (!f->value)
        f->value = value;
    else if (strcmp (f->value, value) != 0)
        f->differ = 1;
    return MHD_YES;
}

const char *
gw_cookie (const gw_req_t *req, const char *name)
{
    /* the name compared as written: libmicrohttpd's lookup ignores case, and "__HOST-x" is a
       name a browser lets another host of the site set, where it refuses "__Host-x" */
    cookie_find_t f = { name, NULL, 0 };
    MHD_get_connection_values (req->conn, MHD_COOKIE_KIND, cookie_each, &f);
    if (f.differ) {
        log_warning (NULL, req->rid, "the request carries the cookie \"%s\" more than once, with different values "
                     "(another host of the same site may have set one): it is taken as absent", name);
        return NULL;
    }
    return f.value;
}

static int
hexval (char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int
gw_form (const gw_req_t *req, const char *name, char *out, size_t outlen)
{
    const char *type = gw_header (req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!req->body || !type || strncasecmp (type, "application/x-www-form-urlencoded", 33) != 0)
        return 0;
    size_t nlen = strlen (name);
    for (const char *s = req->body; *s; ) {
        const char *end = strchr (s, '&');
        size_t len = end ? (size_t) (end - s) : strlen (s);
        if (len > nlen && strncmp (s, name, nlen) == 0 && s [nlen] == '=') {
            size_t o = 0;
            for (size_t i = nlen + 1; i < len; i++) {
                char c = s [i];
                if (c == '+')
                    c = ' ';
                else if (c == '%' && i + 2 < len + 1 && hexval (s [i + 1]) >= 0 && hexval (s [i + 2]) >= 0) {
                    c = (char) (hexval (s [i + 1]) * 16 + hexval (s [i + 2]));
                    i += 2;
                }
                if (c == '\0' || o + 1 >= outlen) {
                    out [0] = '\0';     /* a NUL, or too long */
                    return -1;
                }
                out [o++] = c;
            }
            out [o] = '\0';
            if (text_utf8_valid (out))
                return 1;
            out [0] = '\0';
            return -1;
        }
        if (!end)
            break;
        s = end + 1;
    }
    return 0;
}

void
gw_resp_html (gw_resp_t *resp, unsigned status, html_t *h)
{
    if (html_failed (h)) {
        gw_resp_message (resp, 500, "Something went wrong", "This page came out too long to show. Try again later.");
        return;
    }
    mem_free (resp->body);
    resp->status = status;
    resp->type = "text/html; charset=utf-8";
    resp->body = html_take (h, &resp->len);
}

void
gw_resp_json (gw_resp_t *resp, unsigned status, json_t *j)
{
    mem_free (resp->body);
    char *text = json_dumps (j, JSON_COMPACT);
    resp->status = status;
    resp->type = "application/json";
    resp->body = mem_strdup (text ? text : "{}");
    resp->len = strlen (resp->body);
    free (text);
}

void
gw_resp_redirect (gw_resp_t *resp, const char *url)
{
    mem_free (resp->location);
    resp->status = 303;
    resp->location = mem_strdup (url);
    mem_free (resp->body);
    resp->body = mem_strdup ("");
    resp->len = 0;
    resp->type = "text/plain; charset=utf-8";
}

void
gw_resp_message (gw_resp_t *resp, unsigned status, const char *title, const char *text)
{
    html_t *h = html_new ();
    html_page_begin (h, title);
    html_raw (h, "<p>");
    html_text (h, text);
    html_raw (h, "</p>\n");
    html_page_end (h);
    gw_resp_html (resp, status, h);
    html_destroy (&h);
}

/* The share of the broker clients op's calls may hold (pool.h): a request without a key or a
 * session can cause a callback and its attempt and retry, a dashboard link's opening (half the
 * clients together), and a workspace key's check (a quarter, apart: a flood of slow callbacks
 * had taken the half it shared with them, and every workspace key's call failed its check). */
static pool_share_t
op_share (const char *op)
{
    static const char *const open [] = { "callback", "attempt", "retry", "dashboard_open", NULL };
    if (strcmp (op, "apikey_verify") == 0)
        return POOL_KEY_CHECK;
    for (int i = 0; open [i]; i++)
        if (strcmp (op, open [i]) == 0)
            return POOL_OPEN;
    return POOL_KEYED;
}

/* 1 for an operation that changes nothing, so that a caller may send it again after a timeout:
 * the protocol's reads, and the gateway's own (a workspace's listing, its keys', a key's check). */
static int
op_reads (const char *op)
{
    return client_op_is_idempotent (op) || strcmp (op, "workspace") == 0 || strcmp (op, "apikey_list") == 0
        || strcmp (op, "apikey_verify") == 0;
}

/* What a caller of the API or the dashboard does about an error the service's hint tells in
 * ferrulectl's words (its commands, its flags), by the code: a failure retrying cannot fix is never
 * answered "try again". NULL for a code without one of its own. */
static const char *
gw_caller_hint (const char *code)
{
    static const struct { const char *code, *hint; } hints [] = {
        { "insufficient_scope", "disconnect and reconnect the integration, asking for every scope it needs, "
                                "and accept all requested permissions on the provider's consent screen (if offered "
                                "minimal or full access, choose full access); if you manage the provider's OAuth "
                                "app, check that it is configured with these scopes" },
        { "needs_reconnect", "disconnect the integration, then connect it again" },
        { "disconnected", "connect the integration again to use it" },
        { "no_refresh_token", "connect the integration again and approve every permission, offline access among "
                              "them; if the provider still issues no refresh token, remove the app's access in the "
                              "account's settings at the provider first" },
        { "access_denied", "connect again and approve the requested access" },
        { "bad_request", "check the request against the API's documentation" },
    };
    for (size_t i = 0; i < sizeof hints / sizeof hints [0]; i++)
        if (strcmp (hints [i].code, code) == 0)
            return hints [i].hint;
    return NULL;
}

/* The reply of a broker call as the gateway's HTTP callers may see it. "forbidden" refuses the
 * gateway's own client (the brokers' policy, or its key unknown to them; its callers' keys are the
 * gateway's to check, auth.c): the caller has nothing to change, so it is an internal error with
 * a hint for the operator, not a 403 telling the caller to change "this client's" policy. A reply
 * the broker client made itself names the brokers' addresses and ferrulectl's flags: the caller
 * is told the service could not be reached, and to try again. A timeout names a broker or a
 * worker, and the operation: the caller is told the service did not answer, and for a call that
 * changes something that its outcome is unknown (the log keeps the service's words). A hint in
 * ferrulectl's words becomes the caller's, by the code (gw_caller_hint): a failure retrying cannot
 * fix is never answered "try again"; "insufficient_scope" and "needs_reconnect" always have the
 * caller's, whoever wrote the service's. */
static json_t *
gw_reply_for_http (gw_req_t *req, json_t *reply, const char *op)
{
    const char *code = gw_code (reply);
    json_t *e = json_object_get (reply, "error");
    const char *message = json_string_value (json_object_get (e, "message"));
    const char *hint = json_string_value (json_object_get (e, "hint"));
    const char *caller_hint = gw_caller_hint (code);
    char text [512];
    if (strcmp (code, "forbidden") == 0) {
        log_error (NULL, req->rid, "the brokers refused this gateway's \"%s\" call: %s", op, message ? message : "");
        /* the brokers' name for the gateway's key, when their message gives it (client "NAME" ...) */
        const char *named = message ? strstr (message, "client \"") : NULL;
        size_t nlen = named ? strcspn (named + 8, "\"") : 0;
        if (named && nlen > 0 && nlen <= 64 && named [8 + nlen] == '"')
            snprintf (text, sizeof text, "an operator must allow the gateway's client \"%.*s\" the operation \"%s\" in "
                      "the brokers' policy file (and list its key in their clients file)", (int) nlen, named + 8, op);
        else
            snprintf (text, sizeof text, "an operator must allow the gateway's client the operation \"%s\" in the "
                      "brokers' policy file (and list its key in their clients file)", op);
        json_object_set_new (e, "code", json_string ("internal"));
        json_object_set_new (e, "message", json_string ("the token service refused this gateway's call"));
        json_object_set_new (e, "hint", json_string (text));
    }
    else if ((strcmp (code, "unavailable") == 0 || strcmp (code, "configuration") == 0)
             && message && (strstr (message, "could not connect to") || strstr (message, "link security"))) {
        log_warning (NULL, req->rid, "\"%s\" call: %s", op, message);
        json_object_set_new (e, "code", json_string ("unavailable"));
        json_object_set_new (e, "message", json_string ("the gateway could not reach the token service"));
        json_object_set_new (e, "hint", json_string ("try again in a moment; if it lasts, tell the service's operator"));
    }
    else if (strcmp (code, "timeout") == 0) {
        int changes = !op_reads (op);
        log_warning (NULL, req->rid, "\"%s\" call: %s", op, message ? message : "timeout");
        json_object_set_new (e, "message", json_string (changes
                             ? "the token service did not answer in time: the outcome of the request is unknown (it "
                               "may have been carried out)"
                             : "the token service did not answer in time"));
        json_object_set_new (e, "hint", json_string (changes
                             ? "check the outcome first (the integration's status) rather than sending the request "
                               "again blindly"
                             : "try again in a moment: this request changes nothing, so sending it again (reloading "
                               "the page) is safe"));
    }
    else if (caller_hint && (strcmp (code, "insufficient_scope") == 0 || strcmp (code, "needs_reconnect") == 0))
        json_object_set_new (e, "hint", json_string (caller_hint));
    else if (hint && (strstr (hint, "--") || strstr (hint, "ferrulectl")))
        json_object_set_new (e, "hint", json_string (caller_hint ? caller_hint
                             : result_is_transient (result_from_code (code)) ? "try again in a moment"
                             : "tell the service's operator, with the request id (X-Request-Id)"));
    return reply;
}

json_t *
gw_call (gw_req_t *req, const char *op, json_t *args, int timeout_ms)
{
    /* a second call gets what the first left of the request's time: a status then a connect
       (Reconnect), a key's check then a diagnosis, took up to 40 s, past the drain's 30 */
    if (req->until_ms) {
        int64_t left = req->until_ms - clock_mono_ms ();
        if (left < timeout_ms)
            timeout_ms = left < 0 ? 0 : (int) left;
    }
    /* too little of the request's time is left for an answer (its earlier calls, or a page's, used
       it): nothing is sent, so nothing was done; it was answered "every broker client of this
       gateway was busy" with every client free, and must not be told "may have been carried out" */
    if (timeout_ms < POOL_MIN_CALL_MS)
        return json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", "timeout", "message",
                          POOL_TIME_RAN_OUT, "hint", "try again in a moment");
    /* the rid begins with the request's own (X-Request-Id, the gateway's log lines), so that
       the brokers' and workers' lines of its calls are found with it */
    json_t *reply = pool_call (req->gw->pool, op, args, timeout_ms, req->rid [0] ? req->rid : NULL, op_share (op));
    return gw_reply_for_http (req, reply, op);
}

void
gw_budget_start (gw_budget_t *b, int ms)
{
    b->until_ms = clock_mono_ms () + ms;
    b->stalled = 0;
}

json_t *
gw_call_within (gw_req_t *req, gw_budget_t *b, const char *op, json_t *args)
{
    int64_t left = b->until_ms - clock_mono_ms ();
    if (b->stalled || left <= 0)
        return json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", "timeout", "message",
                          "the service did not answer in time", "hint", "reload the page in a moment");
    json_t *reply = gw_call (req, op, args, (int) left);
    const char *code = gw_code (reply);
    if (strcmp (code, "timeout") == 0 || strcmp (code, "unavailable") == 0
    ||  strcmp (code, "database_unavailable") == 0 || strcmp (code, "overloaded") == 0)
        b->stalled = 1;
    return reply;
}

const char *
gw_code (const json_t *reply)
{
    return client_error_code (reply);
}

int
gw_retry_after (const json_t *reply, int dflt)
{
    json_t *ra = json_object_get (json_object_get (reply, "error"), "retry_after");
    if (!json_is_integer (ra))
        return dflt;
    json_int_t v = json_integer_value (ra);
    return v < 1 ? 1 : v > 3600 ? 3600 : (int) v;
}

unsigned
gw_http_status (const char *code)
{
    static const struct { const char *code; unsigned status; } map [] = {
        { "ok", 200 },
        { "bad_request", 400 }, { "malformed_frame", 400 }, { "unsupported_version", 400 },
        { "unknown_operation", 400 }, { "too_large", 413 },
        { "not_found", 404 },
        { "needs_reconnect", 409 }, { "disconnected", 409 }, { "no_refresh_token", 409 },
        { "code_expired_or_used", 422 }, { "state_invalid", 422 }, { "access_denied", 422 },
        { "insufficient_scope", 422 }, { "invalid_scope", 422 }, { "redirect_uri_mismatch", 422 },
        { "browser_mismatch", 422 },
        { "rate_limited", 429 },
        { "provider_unavailable", 503 }, { "provider_bad_response", 503 }, { "timeout", 503 },
        { "unavailable", 503 }, { "overloaded", 503 }, { "database_unavailable", 503 },
        { "invalid_client", 500 }, { "configuration", 500 }, { "internal", 500 },
        { "forbidden", 403 },
    };
    for (size_t i = 0; i < sizeof map / sizeof map [0]; i++)
        if (strcmp (map [i].code, code) == 0)
            return map [i].status;
    return 500;
}

int
gw_origin_of (const char *url, char *out, size_t len)
{
    size_t skip = strncasecmp (url, "https://", 8) == 0 ? 8 : strncasecmp (url, "http://", 7) == 0 ? 7 : 0;
    size_t n = skip + strcspn (url + skip, "/?#");
    if (!skip || n == skip || n >= len)
        return -1;
    memcpy (out, url, n);
    out [n] = '\0';
    for (char *c = out; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char) (*c - 'A' + 'a');
    return 0;
}

int
gw_return_to_allowed (const gw_t *gw, const char *url)
{
    char origin [GW_ORIGIN_MAX];
    for (size_t i = 0; url [i]; i++)
        if ((unsigned char) url [i] <= 0x20 || (unsigned char) url [i] >= 0x7f || url [i] == '\\' || url [i] == '#')
            return 0;
    if (gw_origin_of (url, origin, sizeof origin) != 0)
        return 0;
    if (strchr (strstr (origin, "://") + 3, '@'))
        return 0;                   /* user info: "https://good.example@evil.example" */
    if (strcmp (origin, gw->origin) == 0)
        return 1;
    for (size_t i = 0; i < gw->norigins; i++)
        if (strcmp (origin, gw->origins [i]) == 0)
            return 1;
    return 0;
}

/* A browser tells where a form comes from: Sec-Fetch-Site, or before it Origin. "null" is
 * refused: a sandboxed frame sends it, and so does any page whose author set no-referrer. With
 * neither (curl, browsers from before 2020) there is no telling, and nothing is refused. */
int
gw_cross_site (const gw_t *gw, const char *fetch_site, const char *origin)
{
    if (fetch_site)
        return strcmp (fetch_site, "same-origin") != 0 && strcmp (fetch_site, "none") != 0;
    if (origin)
        return strcasecmp (origin, gw->origin) != 0;
    return 0;
}

/* --- the server ------------------------------------------------------------------------------ */

static void
resp_clear (gw_resp_t *r)
{
    mem_free (r->body);
    mem_free (r->location);
    mem_free (r->cookie);
}

static enum MHD_Result
send_resp (gw_t *gw, struct MHD_Connection *conn, const gw_req_t *req, gw_resp_t *r, int close_after)
{
    struct MHD_Response *mr = MHD_create_response_from_buffer (r->len, r->body ? r->body : (char *) "",
                                                                MHD_RESPMEM_MUST_COPY);
    if (!mr)
        return MHD_NO;
    MHD_add_response_header (mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->type ? r->type : "text/plain; charset=utf-8");
    MHD_add_response_header (mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* form-action: forms post here only, and the redirects their answers make (Connect, Try again:
       303 to the provider's authorization URL) go to https, or to http only from a gateway that
       itself runs over http (local development, where a provider may be http too) */
    MHD_add_response_header (mr, "Content-Security-Policy", gw->secure
                             ? "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'self' https:; frame-ancestors 'none'"
                             : "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'self' https: http:; frame-ancestors 'none'");
    /* never a path or a query (a link token, a code) in a Referer; the origin alone, so that a
       form of ours is posted with our Origin and not "null", which no-referrer gave it */
    MHD_add_response_header (mr, "Referrer-Policy", "strict-origin");
    MHD_add_response_header (mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header (mr, "X-Frame-Options", "DENY");
    MHD_add_response_header (mr, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header (mr, "Cross-Origin-Resource-Policy", "same-origin");
    MHD_add_response_header (mr, "Permissions-Policy", "camera=(), microphone=(), geolocation=()");
    if (gw->secure)
        MHD_add_response_header (mr, "Strict-Transport-Security", "max-age=31536000");
    if (req)
        MHD_add_response_header (mr, "X-Request-Id", req->rid);
    if (close_after)
        MHD_add_response_header (mr, MHD_HTTP_HEADER_CONNECTION, "close");    /* draining: no next request */
    if (r->location)
        MHD_add_response_header (mr, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->cookie)
        MHD_add_response_header (mr, MHD_HTTP_HEADER_SET_COOKIE, r->cookie);
    if (r->www_authenticate)
        MHD_add_response_header (mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"ferrule\"");
    if (r->allow)
        MHD_add_response_header (mr, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->retry_after >= 0) {
        char ra [16];
        snprintf (ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header (mr, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response (conn, r->status, mr);
    MHD_destroy_response (mr);
    return ret;
}

static int
is_api (const char *url)
{
    return strncmp (url, "/v1/", 4) == 0;
}

/* A refusal before any handler ran: JSON under /v1/ (the API's message and hint, for a
 * program), a page elsewhere in a browser user's words: a title saying what happened and a
 * paragraph saying what to do (the API's lowercase message alone told a user neither). */
static void
refuse (gw_resp_t *r, const char *url, unsigned status, const char *code, const char *message, const char *hint,
        const char *title, const char *text)
{
    if (is_api (url)) {
        json_t *j = json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", code, "message", message,
                               "hint", hint);
        gw_resp_json (r, status, j);
        json_decref (j);
    }
    else
        gw_resp_message (r, status, title, text);
}

/* The pages of the refusals made for more than one reason alike. */
#define PAGE_TOO_LARGE "What you sent was too large", \
    "A form of this gateway holds at most 16 KiB, and this one held more. Go back, shorten what you " \
    "entered, and send it again."

/* A new request id: 16 hex digits (logs, X-Request-Id, the rids of its broker calls). */
static void
new_rid (char rid [17])
{
    unsigned char rnd [8];
    if (crypto_random (rnd, sizeof rnd) != 0)
        memset (rnd, 0, sizeof rnd);
    text_hex (rnd, sizeof rnd, rid);
}

static enum MHD_Result
answer (void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
        const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    route_server_t *srv = cls;
    gw_t *gw = srv->gw;
    conn_ctx_t *ctx = *con_cls;
    gw_resp_t r = { .status = 500, .retry_after = -1 };
    gw_req_t req;
    enum MHD_Result ret;

    if (!ctx) {
        ctx = mem_alloc (sizeof *ctx);
        mem_buf_init (&ctx->body, GW_MAX_BODY + 1);     /* and the NUL that ends it */
        ctx->started_ms = clock_mono_ms ();
        *con_cls = ctx;
        atomic_fetch_add (&srv->in_flight, 1);     /* until completed () */
        const char *length = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull (length, NULL, 10) > GW_MAX_BODY) {
            /* answered before the body is read: a declared oversized body costs nothing more */
            ctx->too_large = 1;
            memset (&req, 0, sizeof req);
            new_rid (req.rid);
            refuse (&r, url, 413, "too_large", "the request body is larger than 16 KiB", "send a smaller body",
                    PAGE_TOO_LARGE);
            ret = send_resp (gw, conn, &req, &r, atomic_load (&srv->draining));
            if (gw->m_responses [4])
                metrics_inc (gw->m_responses [4]);
            log_info (NULL, req.rid, "%s %s: a declared body of %llu bytes refused with 413", method,
                      is_api (url) ? "/v1/..." : "-", (unsigned long long) strtoull (length, NULL, 10));
            resp_clear (&r);
            return ret;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* libmicrohttpd's timeout counts only silence: a body sent a byte at a time, or without
           end, would hold the connection and its thread for as long as the client likes */
        ctx->received += *upload_data_size;
        if (clock_mono_ms () - ctx->started_ms > (int64_t) gw->cfg.connection_timeout_s * 1000
        ||  (ctx->too_large && ctx->received > GW_DRAIN_MAX)) {
            log_info (NULL, NULL, "%s %s: closed: its body %s", method, is_api (url) ? "/v1/..." : "-",
                      ctx->too_large ? "went on far past the 16 KiB limit"
                                     : "was still coming after FERRULE_GATEWAY_CONNECTION_TIMEOUT_S");
            *upload_data_size = 0;
            return MHD_NO;
        }
        if (!ctx->too_large && mem_buf_append (&ctx->body, upload_data, *upload_data_size) != 0)
            ctx->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    int64_t started = clock_mono_ms ();
    memset (&req, 0, sizeof req);
    req.gw = gw;
    req.conn = conn;
    req.method = method;
    req.path = url;
    new_rid (req.rid);
    req.until_ms = started + GW_REQUEST_MS;
    const char *pattern = "-";

    if (ctx->too_large) {
        refuse (&r, url, 413, "too_large", "the request body is larger than 16 KiB", "send a smaller body",
                PAGE_TOO_LARGE);
        goto send;
    }
    if (mem_buf_append (&ctx->body, "", 1) != 0) {
        refuse (&r, url, 413, "too_large", "the request body is larger than 16 KiB", "send a smaller body",
                PAGE_TOO_LARGE);
        goto send;
    }
    req.body = ctx->body.data;
    req.body_len = ctx->body.len - 1;
    if (strlen (req.body) != req.body_len) {
        refuse (&r, url, 400, "bad_request", "the request body holds a NUL byte", "send text",
                "What you sent could not be read", "It held a NUL character, which no page of this gateway "
                "sends. Go back to the page, reload it, and use its buttons again.");
        goto send;
    }
    const route_t *found = NULL;
    char allow [32] = "";           /* every method served at this path, for a 405 */
    for (size_t i = 0; i < NROUTES && !found; i++) {
        if (!match (routes [i].pattern, url, NULL, 0))
            continue;
        /* HEAD only where a GET changes nothing: a HEAD of a callback or a dashboard link would
           spend its code or link (link scanners send them) */
        if (strcmp (routes [i].method, method) == 0
        ||  (strcmp (method, "HEAD") == 0 && routes [i].fn == style_css))
            found = &routes [i];
        else {
            size_t n = strlen (allow);
            snprintf (allow + n, sizeof allow - n, "%s%s%s", n ? ", " : "", routes [i].method,
                      routes [i].fn == style_css ? ", HEAD" : "");
        }
    }
    if (!found) {
        if (allow [0]) {
            refuse (&r, url, 405, "bad_request", "this method is not allowed here", "see docs/openapi.yaml",
                    "This address cannot be used that way", "It does not take the kind of request your browser "
                    "sent. Go back to the page you came from and use its buttons, or open your dashboard from "
                    "the link your application gave you.");
            r.allow = allow;
        }
        else {
            /* an address that exists but for an id that cannot be one: the id is wrong, not missing */
            int malformed = 0;
            for (size_t i = 0; i < NROUTES && !malformed; i++)
                malformed = strchr (routes [i].pattern, '{') && match (routes [i].pattern, url, NULL, 1);
            if (malformed)
                refuse (&r, url, 400, "bad_request", "an id in the address is not valid",
                        "an integration id is 1 to 128 characters of A-Z a-z 0-9 . _ : -, a key id is digits",
                        "This address names no integration or key", "The id in it cannot be one. Check that "
                        "the link was copied whole, or open your dashboard from the link your application gave "
                        "you and choose it there.");
            else
                refuse (&r, url, 404, "not_found", "there is nothing at this address", "see docs/openapi.yaml",
                        "Page not found", "There is nothing at this address. Check that the link was copied "
                        "whole, or open your dashboard from the link your application gave you.");
        }
        goto send;
    }
    pattern = found->pattern;
    /* a form posted from a page of another site does nothing: else a page anywhere could post its
       author's own dashboard link and leave the visitor's browser in the author's workspace (the
       session cookie's SameSite does not stop a top-level POST's answer from setting it). The
       API is not a browser's: its bearer key is the proof. */
    if (strcmp (method, "POST") == 0 && !is_api (url)
    &&  gw_cross_site (gw, gw_header (&req, "Sec-Fetch-Site"), gw_header (&req, "Origin"))) {
        const char *site = gw_header (&req, "Sec-Fetch-Site"), *origin = gw_header (&req, "Origin");
        log_warning (NULL, req.rid, "POST %s refused: it was sent from another site (Sec-Fetch-Site \"%.32s\", "
                     "Origin \"%.200s\")", pattern, site ? site : "", origin ? origin : "");
        gw_resp_message (&r, 403, "This form could not be accepted",
                         "It was sent from another site, not from a page of this gateway. To open your "
                         "dashboard, follow the link your application gave you; on the dashboard, use its buttons.");
        goto send;
    }
    (void) match (found->pattern, url, &req, 0);
    found->fn (&req, &r);
send:
    ret = send_resp (gw, conn, &req, &r, atomic_load (&srv->draining));
    if (r.status / 100 >= 2 && r.status / 100 <= 5 && gw->m_responses [r.status / 100])
        metrics_inc (gw->m_responses [r.status / 100]);
    /* the route's pattern, never the path or query: a query may hold a code or a state */
    log_info (NULL, req.rid, "%s %s %u%s%s (%lld ms)", method, pattern, r.status, req.client ? " client " : "",
              req.client ? req.client : "", (long long) (clock_mono_ms () - started));
    resp_clear (&r);
    (void) version;
    return ret;
}

static void
completed (void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    route_server_t *srv = cls;
    conn_ctx_t *ctx = *con_cls;
    if (ctx) {
        mem_buf_free (&ctx->body);
        mem_free (ctx);
        *con_cls = NULL;
        atomic_fetch_sub (&srv->in_flight, 1);
    }
}

route_server_t *
route_server_new (gw_t *gw, char *err, size_t errlen)
{
    char host [64];
    int port;
    struct sockaddr_in sa;
    if (health_parse_bind (gw->cfg.bind, host, sizeof host, &port) != 0) {
        snprintf (err, errlen, "bind address \"%s\" is not HOST:PORT with an IPv4 host", gw->cfg.bind);
        return NULL;
    }
    memset (&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons ((uint16_t) port);
    inet_pton (AF_INET, host, &sa.sin_addr);
    route_server_t *s = mem_alloc (sizeof *s);
    s->gw = gw;
    atomic_init (&s->in_flight, 0);
    atomic_init (&s->draining, 0);
    /* MHD_USE_ITC: route_server_drain can stop the listening without stopping the daemon.
     * MHD_USE_POLL: with select() libmicrohttpd closes, unanswered, every connection whose
     * descriptor is past FD_SETSIZE (1024), far below FERRULE_GATEWAY_MAX_CONNECTIONS' bound (and
     * epoll does not go with a thread per connection). Its threads, one per connection, take no
     * signals: they go to the main loop's thread, whose sleep the handler cuts short */
    sigset_t old;
    daemon_threads_begin (&old);
    s->daemon = MHD_start_daemon (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION
                                  | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
                                  0, NULL, NULL, answer, s,
                                  MHD_OPTION_EXTERNAL_LOGGER, health_mhd_log, (void *) NULL,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) gw->cfg.max_connections,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) gw->cfg.connection_timeout_s,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) GW_CONNECTION_MEMORY,
                                  MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                                  MHD_OPTION_END);
    daemon_threads_done (&old);
    if (!s->daemon) {
        snprintf (err, errlen, "could not listen on \"%s\": the port is taken or the address is not local",
                  gw->cfg.bind);
        mem_free (s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    return s;
}

void
route_server_destroy (route_server_t **s_p)
{
    if (s_p && *s_p) {
        MHD_stop_daemon ((*s_p)->daemon);
        mem_free (*s_p);
        *s_p = NULL;
    }
}

int
route_server_port (const route_server_t *s)
{
    return s->port;
}

void
route_server_drain (route_server_t *s)
{
    if (atomic_exchange (&s->draining, 1))
        return;
    MHD_socket fd = MHD_quiesce_daemon (s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close (fd);                 /* new connections are refused from here on */
    else
        log_warning (NULL, NULL, "draining: the gateway could not stop listening; new requests are still served");
}

int
route_server_in_flight (route_server_t *s)
{
    return atomic_load (&s->in_flight);
}
