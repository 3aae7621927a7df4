/* oauth.c - token endpoint requests and the classification of their answers */
#define _GNU_SOURCE             /* memmem */
#include "oauth.h"
#include "http.h"
#include "crypto.h"
#include "mem.h"
#include "text.h"
#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define OAUTH_MAX_BUILT   (256 * 1024)    /* longest URL or body built */
#define OAUTH_MAX_SCOPE   8192            /* longest granted scope string kept */

/* A growable string for secrets (mem_buf_t wipes what it held as it grows): the first failure
 * (over OAUTH_MAX_BUILT) sticks until the caller checks it once at the end. */
typedef struct {
    mem_buf_t buf;
    int params;         /* parameters appended so far: the next one needs '&' */
    int failed;
} sb_t;

#define SB_INIT { .buf = { .max = OAUTH_MAX_BUILT } }

static void
sb_append (sb_t *b, const char *s, size_t n)
{
    if (!b->failed && mem_buf_append (&b->buf, s, n) != 0)
        b->failed = 1;
}

static void
sb_puts (sb_t *b, const char *s)
{
    sb_append (b, s, strlen (s));
}

/* Appends s percent-encoded: RFC 3986 unreserved characters stay, every other byte is %XX. */
static void
sb_encode (sb_t *b, const char *s)
{
    static const char hex [] = "0123456789ABCDEF";
    for (; *s && !b->failed; s++) {
        unsigned char c = (unsigned char) *s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
        ||  c == '-' || c == '.' || c == '_' || c == '~')   /* not isalnum: locale-free */
            sb_append (b, (const char *) &c, 1);
        else {
            char esc [3] = { '%', hex [c >> 4], hex [c & 15] };
            sb_append (b, esc, 3);
        }
    }
}

/* Appends "&name=value" (no '&' for the first parameter), both percent-encoded. */
static void
sb_param (sb_t *b, const char *name, const char *value)
{
    if (b->params++)
        sb_append (b, "&", 1);
    sb_encode (b, name);
    sb_append (b, "=", 1);
    sb_encode (b, value);
}

static void
sb_params (sb_t *b, const catalog_param_t *params, size_t count)
{
    for (size_t i = 0; i < count; i++)
        sb_param (b, params [i].name, params [i].value);
}

/* Hands the string over, or wipes it and returns NULL when the builder failed. */
static char *
sb_take (sb_t *b)
{
    char *s = b->buf.data;
    if (b->failed || !s) {
        mem_buf_free (&b->buf);
        s = NULL;
    }
    memset (b, 0, sizeof *b);
    return s;
}

static void
sb_wipe (sb_t *b)
{
    mem_buf_free (&b->buf);
    memset (b, 0, sizeof *b);
}

static int
input_ok (const char *s)
{
    return s && *s && strnlen (s, OAUTH_MAX_INPUT + 1) <= OAUTH_MAX_INPUT;
}

/* "Basic " base64(urlencode(id) ":" urlencode(secret)), as RFC 6749 2.3.1 asks. */
static char *
basic_credentials (const char *client_id, const char *client_secret)
{
    sb_t pair = SB_INIT;
    sb_t header = SB_INIT;
    char *b64 = NULL;

    sb_encode (&pair, client_id);
    sb_append (&pair, ":", 1);
    sb_encode (&pair, client_secret);
    if (!pair.failed) {
        b64 = crypto_b64_encode (pair.buf.data, pair.buf.len);
        sb_puts (&header, "Basic ");
        sb_puts (&header, b64);
        mem_free_secret (&b64);
    }
    sb_wipe (&pair);
    return sb_take (&header);
}

/* Adds client authentication: client_id always, client_secret in the body for
 * client_secret_post, or the Basic header for client_secret_basic. */
static void
add_client_auth (const catalog_provider_t *p, sb_t *body, oauth_request_t *r)
{
    sb_param (body, "client_id", p->client_id);
    if (p->auth_method == CATALOG_AUTH_POST)
        sb_param (body, "client_secret", p->client_secret);
    else
        r->authorization = basic_credentials (p->client_id, p->client_secret);
}

/* Finishes a request: NULL (and everything wiped) when any part failed. */
static oauth_request_t *
request_finish (const catalog_provider_t *p, oauth_request_t *r, sb_t *body, const char *url)
{
    r->body = sb_take (body);
    r->url = mem_strdup (url);
    if (!r->body || (p->auth_method == CATALOG_AUTH_BASIC && !r->authorization))
        oauth_request_destroy (&r);
    return r;
}

oauth_request_t *
oauth_refresh_request_new (const catalog_provider_t *p, const char *refresh_token)
{
    oauth_request_t *r = NULL;
    sb_t body = SB_INIT;

    assert (p);
    if (!p->client_id || !p->client_secret || !input_ok (refresh_token))
        return NULL;
    r = mem_alloc (sizeof *r);
    sb_param (&body, "grant_type", "refresh_token");
    sb_param (&body, "refresh_token", refresh_token);
    sb_params (&body, p->token_params, p->token_param_count);
    sb_params (&body, p->refresh_params, p->refresh_param_count);
    add_client_auth (p, &body, r);
    return request_finish (p, r, &body, p->token_url);
}

oauth_request_t *
oauth_code_request_new (const catalog_provider_t *p, const char *code, const char *redirect_uri,
                        const char *code_verifier)
{
    oauth_request_t *r = NULL;
    sb_t body = SB_INIT;

    assert (p);
    if (!p->client_id || !p->client_secret || !input_ok (code) || !input_ok (redirect_uri)
    ||  (code_verifier && !input_ok (code_verifier)))
        return NULL;
    r = mem_alloc (sizeof *r);
    sb_param (&body, "grant_type", "authorization_code");
    sb_param (&body, "code", code);
    sb_param (&body, "redirect_uri", redirect_uri);
    if (code_verifier)
        sb_param (&body, "code_verifier", code_verifier);
    sb_params (&body, p->token_params, p->token_param_count);
    add_client_auth (p, &body, r);
    return request_finish (p, r, &body, p->token_url);
}

oauth_request_t *
oauth_revocation_request_new (const catalog_provider_t *p, const char *token, const char *hint)
{
    oauth_request_t *r = NULL;
    sb_t body = SB_INIT;

    assert (p);
    if (!p->revocation_url || !p->client_id || !p->client_secret || !input_ok (token)
    ||  (hint && !input_ok (hint)))
        return NULL;
    r = mem_alloc (sizeof *r);
    sb_param (&body, "token", token);
    if (hint)
        sb_param (&body, "token_type_hint", hint);
    add_client_auth (p, &body, r);
    return request_finish (p, r, &body, p->revocation_url);
}

void
oauth_request_destroy (oauth_request_t **r_p)
{
    if (r_p && *r_p) {
        oauth_request_t *r = *r_p;
        mem_free (r->url);
        mem_free_secret (&r->body);
        mem_free_secret (&r->authorization);
        mem_free (r);
        *r_p = NULL;
    }
}

char *
oauth_authorization_url (const catalog_provider_t *p, const char *client_id,
                         const char *redirect_uri, const char *state,
                         const char *const *scopes, size_t n_scopes, const char *code_challenge)
{
    sb_t url = SB_INIT;
    sb_t scope = SB_INIT;
    const char *const *list = scopes;
    size_t n = n_scopes;

    assert (p);
    if (!client_id)
        client_id = p->client_id;
    if (!input_ok (client_id) || !input_ok (redirect_uri) || !input_ok (state)
    ||  (code_challenge && !input_ok (code_challenge)))
        return NULL;
    if (n == 0 || !list) {
        list = (const char *const *) p->default_scopes;
        n = p->default_scope_count;
    }
    for (size_t i = 0; i < n; i++) {
        if (!list [i] || !*list [i])
            continue;
        if (scope.buf.len)
            sb_puts (&scope, p->scope_separator);
        sb_puts (&scope, list [i]);
    }
    /* named scopes replace the default ones, never the ones a refresh token needs */
    for (size_t k = 0; k < p->refresh_token_scope_count; k++) {
        size_t i = 0;
        while (i < n && !(list [i] && strcmp (list [i], p->refresh_token_scopes [k]) == 0))
            i++;
        if (i < n)
            continue;
        if (scope.buf.len)
            sb_puts (&scope, p->scope_separator);
        sb_puts (&scope, p->refresh_token_scopes [k]);
    }
    sb_puts (&url, p->authorization_url);
    if (!strchr (p->authorization_url, '?'))
        sb_append (&url, "?", 1);
    else
    if (url.buf.len && url.buf.data [url.buf.len - 1] != '?' && url.buf.data [url.buf.len - 1] != '&')
        url.params = 1;
    sb_param (&url, "response_type", "code");
    sb_param (&url, "client_id", client_id);
    sb_param (&url, "redirect_uri", redirect_uri);
    if (scope.buf.len)
        sb_param (&url, "scope", scope.buf.data);
    sb_param (&url, "state", state);
    if (code_challenge) {
        sb_param (&url, "code_challenge", code_challenge);
        sb_param (&url, "code_challenge_method", "S256");
    }
    sb_params (&url, p->authorization_params, p->authorization_param_count);
    if (scope.failed)
        url.failed = 1;
    sb_wipe (&scope);
    return sb_take (&url);
}

/* --- classifying answers ------------------------------------------------------------------ */

const char *
oauth_kind_name (oauth_kind_t kind)
{
    switch (kind) {
        case OAUTH_OK:                return "ok";
        case OAUTH_INVALID_GRANT:     return "invalid_grant";
        case OAUTH_INVALID_CLIENT:    return "invalid_client";
        case OAUTH_INVALID_SCOPE:     return "invalid_scope";
        case OAUTH_REDIRECT_MISMATCH: return "redirect_uri_mismatch";
        case OAUTH_TRANSIENT:         return "transient";
        case OAUTH_BAD_RESPONSE:      return "bad_response";
        case OAUTH_REJECTED:          return "rejected";
    }
    return "unknown";
}

fr_status_t
oauth_kind_status (oauth_kind_t kind, int code_exchange)
{
    switch (kind) {
        case OAUTH_OK:                return FR_OK;
        case OAUTH_INVALID_GRANT:     return code_exchange ? FR_CODE_EXPIRED_OR_USED
                                                           : FR_NEEDS_RECONNECT;
        case OAUTH_INVALID_CLIENT:    return FR_INVALID_CLIENT;
        case OAUTH_INVALID_SCOPE:     return FR_INVALID_SCOPE;
        case OAUTH_REDIRECT_MISMATCH: return FR_REDIRECT_URI_MISMATCH;
        case OAUTH_TRANSIENT:         return FR_PROVIDER_UNAVAILABLE;
        case OAUTH_BAD_RESPONSE:      return FR_PROVIDER_BAD_RESPONSE;
        case OAUTH_REJECTED:          return FR_CONFIGURATION;
    }
    return FR_INTERNAL;
}

/* Error codes beyond RFC 6749 that providers use, by what they mean. A code that names a dead
 * refresh token or authorization code means that at any entry, also one of the operator's own for
 * a second app of the same provider, which lists none in its invalid_grant_codes. */
static const char *const grant_codes [] = {
    "invalid_grant", "bad_verification_code" /* GitHub */, "invalid_code" /* Slack */,
    "code_already_used" /* Slack */, "invalid_refresh_token" /* Slack */,
    "bad_refresh_token" /* GitHub, and HubSpot's BAD_REFRESH_TOKEN (codes compare without case) */,
    "bad_auth_code", "expired_auth_code" /* HubSpot's BAD_AUTH_CODE and EXPIRED_AUTH_CODE */,
    "interaction_required", "consent_required",
    "login_required" /* OpenID Connect: the user has to sign in again */,
    "access_denied" /* at a token endpoint: the user withdrew the grant */, NULL
};
static const char *const client_codes [] = {
    "invalid_client", "unauthorized_client", "incorrect_client_credentials" /* GitHub */,
    "invalid_client_id", "bad_client_secret" /* Slack */, NULL
};
static const char *const redirect_codes [] = {
    "redirect_uri_mismatch", "bad_redirect_uri" /* Slack */, "invalid_redirect_uri", NULL
};
static const char *const scope_codes [] = { "invalid_scope", NULL };
static const char *const transient_codes [] = {
    "temporarily_unavailable", "server_error", "slow_down", "ratelimited", "rate_limited",
    "internal_error", NULL
};

static int
code_in (const char *code, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp (code, *list) == 0)
            return 1;
    return 0;
}

static int
code_in_provider (const char *code, const catalog_provider_t *p)
{
    for (size_t i = 0; p && i < p->invalid_grant_code_count; i++)
        if (strcasecmp (code, p->invalid_grant_codes [i]) == 0)
            return 1;
    return 0;
}

/* 1 when a description says the redirect URI does not match the registered one. */
static int
mentions_redirect_mismatch (const char *desc)
{
    char lower [OAUTH_MAX_DESCRIPTION + 1];
    size_t i = 0;
    if (!desc)
        return 0;
    for (; desc [i] && i < OAUTH_MAX_DESCRIPTION; i++)
        lower [i] = (char) tolower ((unsigned char) desc [i]);
    lower [i] = '\0';
    if (strstr (lower, "aadsts50011"))
        return 1;
    /* RFC 6749's own wording of invalid_grant, sent by oauthlib and Doorkeeper with every one,
     * lists "does not match the redirection URI" among its alternatives: a description that also
     * says "expired" or "revoked" is that list, not a finding */
    if (strstr (lower, "expired") || strstr (lower, "revoked"))
        return 0;
    return (strstr (lower, "redirect") || strstr (lower, "reply url")
            || strstr (lower, "reply address"))
        && strstr (lower, "match");
}

/* Printable ASCII only, at most max bytes; NULL when nothing is left. */
static char *
sanitize_code (const char *s, size_t max)
{
    char *out;
    size_t o = 0;
    if (!s)
        return NULL;
    out = mem_alloc (max + 1);
    for (; *s && o < max; s++)
        if ((unsigned char) *s >= 0x20 && (unsigned char) *s < 0x7f)
            out [o++] = *s;
    out [o] = '\0';
    if (o == 0)
        mem_free_secret (&out);
    return out;
}

/* UTF-8 text without control characters (tabs and newlines become spaces), cut at a
 * character boundary within max bytes; NULL when nothing is left. */
static char *
sanitize_text (const char *s, size_t max)
{
    const unsigned char *u = (const unsigned char *) s;
    char *out;
    size_t o = 0;
    if (!s)
        return NULL;
    out = mem_alloc (max + 1);
    while (*u) {
        size_t n = *u < 0x80 ? 1 : (*u >> 5) == 0x6 ? 2 : (*u >> 4) == 0xe ? 3
                 : (*u >> 3) == 0x1e ? 4 : 0;
        if (n == 0) {               /* not a lead byte: jansson gives valid UTF-8, but be safe */
            u++;
            continue;
        }
        for (size_t k = 1; k < n; k++)
            if ((u [k] & 0xc0) != 0x80) {
                n = 0;
                break;
            }
        if (n == 0) {
            u++;
            continue;
        }
        if (n == 1 && (*u < 0x20 || *u == 0x7f)) {
            if ((*u == '\t' || *u == '\n' || *u == '\r') && o && out [o - 1] != ' ' && o < max)
                out [o++] = ' ';
            u++;
            continue;
        }
        if (n == 2 && u [0] == 0xc2 && u [1] < 0xa0) {     /* C1 controls U+0080..U+009F */
            u += 2;
            continue;
        }
        if (o + n > max)
            break;
        memcpy (out + o, u, n);
        o += n;
        u += n;
    }
    while (o && out [o - 1] == ' ')
        o--;
    out [o] = '\0';
    if (o == 0)
        mem_free_secret (&out);
    return out;
}

/* 1 when s is a plausible token: 1..OAUTH_MAX_TOKEN visible ASCII characters. Anything
 * else could inject into a header downstream. */
static int
token_ok (json_t *v)
{
    const char *s = json_string_value (v);
    size_t len = json_string_length (v);
    if (!s || len == 0 || len > OAUTH_MAX_TOKEN || strlen (s) != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) s [i] <= 0x20 || (unsigned char) s [i] >= 0x7f)
            return 0;
    return 1;
}

/* expires_in as a JSON integer, an integral real, or a string of digits. 0 ok, -1 invalid. */
static int
parse_expires_in (json_t *v, int64_t *out)
{
    int64_t value = 0;
    if (json_is_integer (v))
        value = json_integer_value (v);
    else
    if (json_is_real (v)) {
        double d = json_real_value (v);
        if (!(d >= 0 && d <= (double) OAUTH_MAX_EXPIRES_IN))
            return -1;
        value = (int64_t) d;
    }
    else
    if (json_is_string (v)) {
        const char *s = json_string_value (v);
        size_t len = json_string_length (v);
        if (len == 0 || len > 18 || strspn (s, "0123456789") != len)
            return -1;
        for (size_t i = 0; i < len; i++)
            value = value * 10 + (s [i] - '0');
    }
    else
        return -1;
    /* 0 (or under a second) would be a token that expires as it is stored: refreshed again on
     * every request, and at a connect without a refresh token, dead at once */
    if (value < 1 || value > OAUTH_MAX_EXPIRES_IN)
        return -1;
    *out = value;
    return 0;
}

static int
month_of (const char *m)
{
    static const char *const months [] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    for (int i = 0; i < 12; i++)
        if (strcasecmp (m, months [i]) == 0)
            return i + 1;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
days_from_civil (int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Parses the three HTTP-date forms of RFC 9110 5.6.7 into seconds since the epoch. */
static int
parse_http_date (const char *s, int64_t *t)
{
    char mon [4] = "";
    int day = 0, year = 0, h = 0, mi = 0, sec = 0, n = 0;
    int ok = 0;

    if (sscanf (s, "%*[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n",
                &day, mon, &year, &h, &mi, &sec, &n) == 6 && n > 0 && s [n] == '\0')
        ok = 1;     /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    else {
        n = 0;
        if (sscanf (s, "%*[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n",
                    &day, mon, &year, &h, &mi, &sec, &n) == 6 && n > 0 && s [n] == '\0') {
            year += year < 70 ? 2000 : 1900;   /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
            ok = 1;
        }
        else {
            n = 0;
            if (sscanf (s, "%*[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n",
                        mon, &day, &h, &mi, &sec, &year, &n) == 6 && n > 0 && s [n] == '\0')
                ok = 1;     /* asctime: Sun Nov  6 08:49:37 1994 */
        }
    }
    int m = month_of (mon);
    if (!ok || !m || day < 1 || day > 31 || h < 0 || h > 23 || mi < 0 || mi > 59
    ||  sec < 0 || sec > 60 || year < 1970 || year > 9999)
        return -1;
    *t = days_from_civil (year, m, day) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}

int64_t
oauth_parse_retry_after (const char *value, time_t now)
{
    char buf [64];
    size_t len;
    int64_t seconds = -1;

    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    len = strnlen (value, sizeof buf);
    if (len == sizeof buf)
        return -1;
    memcpy (buf, value, len + 1);
    while (len && (buf [len - 1] == ' ' || buf [len - 1] == '\t' || buf [len - 1] == '\r'
                   || buf [len - 1] == '\n'))
        buf [--len] = '\0';
    if (len == 0)
        return -1;
    if (strspn (buf, "0123456789") == len) {
        seconds = 0;
        for (size_t i = 0; i < len && seconds <= OAUTH_MAX_RETRY_AFTER; i++)
            seconds = seconds * 10 + (buf [i] - '0');
    }
    else {
        int64_t t;
        if (parse_http_date (buf, &t) != 0)
            return -1;
        seconds = t - (int64_t) now;
        if (seconds < 0)
            seconds = 0;
    }
    return seconds > OAUTH_MAX_RETRY_AFTER ? OAUTH_MAX_RETRY_AFTER : seconds;
}

static const char *
string_field (json_t *obj, const char *name)
{
    return json_string_value (json_object_get (obj, name));
}

/* Classifies an OAuth error answer by its code, description and status. */
static oauth_kind_t
classify_error (const catalog_provider_t *p, long status, const char *code, const char *desc)
{
    if ((status >= 500 && status <= 599) || status == 429 || status == 408)
        return OAUTH_TRANSIENT;         /* whatever the body says, the server failed */
    if (code) {
        if (code_in (code, redirect_codes))
            return OAUTH_REDIRECT_MISMATCH;
        if (code_in (code, grant_codes) || code_in_provider (code, p))
            return mentions_redirect_mismatch (desc) ? OAUTH_REDIRECT_MISMATCH
                                                     : OAUTH_INVALID_GRANT;
        if (code_in (code, client_codes))
            return OAUTH_INVALID_CLIENT;
        if (code_in (code, scope_codes))
            return OAUTH_INVALID_SCOPE;
        if (code_in (code, transient_codes))
            return OAUTH_TRANSIENT;
    }
    if (mentions_redirect_mismatch (desc))
        return OAUTH_REDIRECT_MISMATCH;
    return status == 401 ? OAUTH_INVALID_CLIENT : OAUTH_REJECTED;
}

int
oauth_unauthorized_client (const oauth_result_t *res)
{
    return res && res->kind == OAUTH_INVALID_CLIENT && res->error
           && strcasecmp (res->error, "unauthorized_client") == 0;
}

oauth_kind_t
oauth_error_kind (const catalog_provider_t *p, const char *code, const char *description)
{
    return classify_error (p, 0, code, description);
}

static int
occurrences (const char *hay, size_t len, const char *needle)
{
    size_t n = strlen (needle);
    int count = 0;
    for (size_t i = 0; n <= len && i <= len - n; i++)
        count += memcmp (hay + i, needle, n) == 0;
    return count;
}

/* Says why a body that should be a token response is not one. */
static const char *
describe_non_json (const char *body, size_t len)
{
    size_t i = 0;
    while (i < len && isspace ((unsigned char) body [i]))
        i++;
    if (i == len)
        return "the response body is empty";
    if (body [i] == '<')
        return "the response is HTML, not JSON";
    if (occurrences (body, len, "access_token=") || occurrences (body, len, "error="))
        return "the response is form-encoded, but not readable as a form (a bad escape, a pair without a "
               "name, or a token given twice)";
    return "the response is not a JSON object";
}

static int
number_char (char c)
{
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
}


/* jansson with flags, where a number too large for it (1e999, twenty digits), which makes it
 * refuse the whole text, is read as the string "?", a value no field accepts. The copy mended
 * holds the answer's secrets: wiped. */
static json_t *
load_mending_numbers (const char *body, size_t len, size_t flags, json_error_t *jerr)
{
    json_t *root = json_loadb (body, len, flags, jerr);
    if (root || json_error_code (jerr) != json_error_numeric_overflow)
        return root;
    char *copy = mem_memdup (body, len);
    /* each pass mends the number the last one stopped at (jansson gives the offset just past it) */
    for (int pass = 0; !root && pass < 64 && json_error_code (jerr) == json_error_numeric_overflow; pass++) {
        size_t end = (size_t) jerr->position, start = end;
        if (end > len)
            break;
        while (start > 0 && number_char (copy [start - 1]))
            start--;
        if (end - start < 3)        /* no overflowing number is this short */
            break;
        memcpy (copy + start, "\"?\"", 3);
        memset (copy + start + 3, ' ', end - start - 3);
        root = json_loadb (copy, len, flags, jerr);
    }
    mem_wipe (copy, len);
    mem_free (copy);
    return root;
}

/* Reads an answer as JSON as leniently as is safe, since it may hold a refresh token the
 * provider has just rotated (the one sent is spent): an odd number elsewhere is no reason to
 * drop it, nor a byte order mark before it, nor is a key given twice (the last value counts, as
 * most JSON readers have it), unless that key may be one of the tokens: which of two is the real
 * one cannot be known. A key is compared as written, so an answer with a key given twice and any
 * \u escape (which could spell a token's key otherwise: "access\u005ftoken") is not read. */
static json_t *
load_answer (const char *body, size_t len)
{
    json_error_t jerr;
    if (len >= 3 && memcmp (body, "\xEF\xBB\xBF", 3) == 0) {
        body += 3;
        len -= 3;
    }
    json_t *root = load_mending_numbers (body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root || json_error_code (&jerr) != json_error_duplicate_key
    ||  occurrences (body, len, "\"access_token\"") > 1 || occurrences (body, len, "\"refresh_token\"") > 1
    ||  occurrences (body, len, "\\u") > 0)
        return root;
    return load_mending_numbers (body, len, 0, &jerr);
}

/* The n bytes at s form-decoded ('+' a space, %XX a byte) into out (room for n + 1); its length,
 * or -1 for a bad escape or a NUL byte. */
static long
form_decode (const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s [i];
        if (c == '+')
            c = ' ';
        else
        if (c == '%') {
            unsigned char byte;
            if (i + 2 >= n || text_unhex (s + i + 1, 1, &byte) != 0 || byte == 0)
                return -1;
            c = (char) byte;
            i += 2;
        }
        out [o++] = c;
    }
    out [o] = '\0';
    return (long) o;
}

/* Reads an application/x-www-form-urlencoded answer ("access_token=...&scope=repo&token_type=bearer",
 * GitHub's to a request without Accept: application/json, which some providers send whatever Accept
 * says) as an object of strings, for the same reading as a JSON answer: it may hold a refresh token
 * the provider has just rotated. NULL when the body is not a form: a character no form holds (a
 * space, a quote, a brace, '<'), a pair without a name or '=', a bad escape or %00, or a token
 * given twice (which of two is the real one cannot be known). A trailing line end is allowed. */
static json_t *
load_form (const char *body, size_t len)
{
    json_t *root = NULL;
    char *name = NULL, *value = NULL;
    while (len && (body [len - 1] == '\n' || body [len - 1] == '\r'))
        len--;
    if (!len || !memchr (body, '=', len))
        return NULL;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) body [i] <= 0x20 || (unsigned char) body [i] >= 0x7f || strchr ("\"'<>{}[]\\`", body [i]))
            return NULL;
    root = json_object ();
    name = mem_alloc (len + 1);
    value = mem_alloc (len + 1);
    for (size_t at = 0; at < len; ) {
        const char *amp = memchr (body + at, '&', len - at);
        size_t pair = amp ? (size_t) (amp - (body + at)) : len - at;
        if (pair == 0) {
            at++;
            continue;
        }
        const char *eq = memchr (body + at, '=', pair);
        long nlen = eq ? form_decode (body + at, (size_t) (eq - (body + at)), name) : -1;
        long vlen = eq ? form_decode (eq + 1, pair - (size_t) (eq + 1 - (body + at)), value) : -1;
        if (nlen <= 0 || vlen < 0)
            goto fail;
        int token = strcmp (name, "access_token") == 0 || strcmp (name, "refresh_token") == 0;
        if (token && json_object_get (root, name))
            goto fail;
        json_t *v = json_stringn (value, (size_t) vlen);     /* NULL: not UTF-8 */
        if (!v && token)
            goto fail;
        if (v)
            json_object_set_new (root, name, v);
        mem_wipe (value, len + 1);
        at += pair + 1;
    }
    goto out;
fail:
    json_decref (root);
    root = NULL;
out:
    mem_wipe (name, len + 1);
    mem_wipe (value, len + 1);
    mem_free (name);
    mem_free (value);
    return root;
}

/* 1 when url is http://127.0.0.1, with a port or a path or neither. */
static int
loopback_http (const char *url)
{
    return url && strncasecmp (url, "http://", 7) == 0 && strcspn (url + 7, ":/?#") == 9
        && strncmp (url + 7, "127.0.0.1", 9) == 0;
}

const char *
oauth_api_base_problem (const catalog_provider_t *p, const char *value, size_t len)
{
    const char *auth;
    size_t auth_len;
    if (!value || len == 0)
        return "it is empty";
    if (len > OAUTH_MAX_API_BASE)
        return "it is longer than 255 bytes";
    if (strlen (value) != len)
        return "it holds a NUL character";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) value [i] <= 0x20 || (unsigned char) value [i] >= 0x7f)
            return "it holds spaces, control characters or characters other than ASCII";
    if (strncasecmp (value, "https://", 8) == 0)
        auth = value + 8;
    else
    if (strncasecmp (value, "http://", 7) == 0) {
        auth = value + 7;
        /* a real provider's API is never plain HTTP, nor on this machine: only a provider served
           here (the fake one) may name a plain address here, and only this one */
        if (!loopback_http (p ? p->token_url : NULL))
            return "it is an http:// URL: only https:// is taken";
        if (!loopback_http (value))
            return "it is an http:// URL to a host other than 127.0.0.1: only https:// is taken";
    }
    else
        return "it is not an absolute https:// URL";
    auth_len = strcspn (auth, "/?#");
    if (auth_len == 0)
        return "it names no host";
    if (memchr (auth, '@', auth_len))
        return "it carries credentials";
    return NULL;
}

/* The provider's api_base_field of a good answer into out, or why it was not taken. */
static void
read_api_base (const catalog_provider_t *p, json_t *root, oauth_result_t *out)
{
    json_t *v;
    const char *problem;
    if (!p || !p->api_base_field)
        return;
    v = json_object_get (root, p->api_base_field);
    if (!v || json_is_null (v))
        return;
    if (!json_is_string (v))
        problem = "it is not a string";
    else
        problem = oauth_api_base_problem (p, json_string_value (v), json_string_length (v));
    if (problem)
        out->api_base_ignored = problem;
    else
        out->api_base_url = mem_strdup (json_string_value (v));
}

void
oauth_parse_token_response (const catalog_provider_t *p, long http_status,
                            const char *retry_after_header, const char *body, size_t body_len,
                            oauth_result_t *out)
{
    json_t *root = NULL;
    json_t *v;
    const char *code = NULL;
    const char *desc = NULL;
    int is_error = 0;
    int transient_status = (http_status >= 500 && http_status <= 599) || http_status == 429
                        || http_status == 408;

    assert (out);
    memset (out, 0, sizeof *out);
    out->http_status = http_status;
    out->expires_in = -1;
    out->retry_after = -1;
    if (!body)
        body_len = 0;

    if (body_len > OAUTH_MAX_BODY) {
        out->kind = transient_status ? OAUTH_TRANSIENT : OAUTH_BAD_RESPONSE;
        snprintf (out->detail, sizeof out->detail, "HTTP %ld with a %zu-byte body, over the "
                  "%d-byte limit", http_status, body_len, OAUTH_MAX_BODY);
        goto out;
    }
    if (body_len) {
        root = load_answer (body, body_len);
        if (root && !json_is_object (root)) {
            json_decref (root);
            root = NULL;
        }
        if (!root)
            root = load_form (body, body_len);
    }
    if (root) {
        v = json_object_get (root, "error");
        if (json_is_string (v)) {
            is_error = 1;
            code = json_string_value (v);
        }
        else
        if (json_is_object (v)) {       /* {"error": {"code": ..., "message": ...}} */
            is_error = 1;
            code = string_field (v, "code") ? string_field (v, "code") : string_field (v, "status");
            desc = string_field (v, "message");
        }
        else
        if (v && !json_is_null (v) && !json_is_false (v))
            is_error = 1;
        /* an "error" that names nothing ("" or {}) beside an access token in a success is no
           error: read as one, the answer was "rejected" and a refresh token it rotated lost */
        if (is_error && (!code || !*code) && (!desc || !*desc) && http_status >= 200 && http_status <= 299
        &&  (json_is_string (v) || json_is_object (v)) && token_ok (json_object_get (root, "access_token")))
            is_error = 0;
        if (json_is_false (json_object_get (root, "ok")))
            is_error = 1;               /* Slack: {"ok": false, "error": "..."} */
        if (!is_error && (http_status < 200 || http_status > 299)
        &&  json_is_string (json_object_get (root, "status"))) {
            is_error = 1;               /* HubSpot: {"status": "BAD_REFRESH_TOKEN", "message": ...} */
            code = string_field (root, "status");
        }
        if (!desc)
            desc = string_field (root, "error_description");
        if (!desc)
            desc = string_field (root, "message");
        if (!desc)
            desc = string_field (root, "reason");   /* Zoom: {"reason": "...", "error": "invalid_grant"} */
    }

    if (is_error) {
        out->error = sanitize_code (code, OAUTH_MAX_ERROR);
        out->error_description = sanitize_text (desc, OAUTH_MAX_DESCRIPTION);
        out->kind = classify_error (p, http_status, out->error, out->error_description);
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld with error \"%s\"",
                  http_status, out->error ? out->error : "(no code)");
        goto out;
    }
    if (transient_status) {
        out->kind = OAUTH_TRANSIENT;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld", http_status);
        goto out;
    }
    if (http_status == 401) {
        out->kind = OAUTH_INVALID_CLIENT;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP 401 without an OAuth "
                  "error: client authentication failed");
        goto out;
    }
    if (http_status < 200 || http_status > 299) {
        out->kind = OAUTH_BAD_RESPONSE;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld without an OAuth "
                  "error%s%s", http_status, root ? "" : ": ",
                  root ? "" : describe_non_json (body, body_len));
        goto out;
    }
    out->kind = OAUTH_BAD_RESPONSE;
    if (!root) {
        snprintf (out->detail, sizeof out->detail, "%s", describe_non_json (body, body_len));
        goto out;
    }
    v = json_object_get (root, "access_token");
    if (!v || json_is_null (v) || !token_ok (v)) {
        if (!v || json_is_null (v))
            snprintf (out->detail, sizeof out->detail, "the response has no access_token");
        else
            snprintf (out->detail, sizeof out->detail, "the response's access_token is not a string "
                      "of 1 to %d visible ASCII characters", OAUTH_MAX_TOKEN);
        /* a refresh token beside it may be a rotation that has spent the one sent: kept, and with
         * it the API base URL of the grant it continues */
        v = json_object_get (root, "refresh_token");
        if (v && token_ok (v)) {
            out->refresh_token = mem_strdup (json_string_value (v));
            read_api_base (p, root, out);
        }
        goto out;
    }
    v = json_object_get (root, "refresh_token");
    if (v && !json_is_null (v) && !(json_is_string (v) && json_string_length (v) == 0)
    &&  !token_ok (v)) {
        snprintf (out->detail, sizeof out->detail, "the response's refresh_token is not a string "
                  "of 1 to %d visible ASCII characters", OAUTH_MAX_TOKEN);
        goto out;
    }
    /* a lifetime that is not a number of seconds from 1 to 10 years is taken as absent: the
     * tokens are good, and the refresh token may be one the provider has just rotated, whose
     * predecessor is spent (the caller logs it: expires_in_ignored) */
    v = json_object_get (root, "expires_in");
    if (v && !json_is_null (v) && parse_expires_in (v, &out->expires_in) != 0) {
        out->expires_in = -1;
        out->expires_in_ignored = 1;
    }
    out->access_token = mem_strdup (string_field (root, "access_token"));
    v = json_object_get (root, "refresh_token");
    if (json_is_string (v) && json_string_length (v) > 0)
        out->refresh_token = mem_strdup (json_string_value (v));
    out->scope = sanitize_text (string_field (root, "scope"), OAUTH_MAX_SCOPE);
    out->token_type = sanitize_code (string_field (root, "token_type"), OAUTH_MAX_ERROR);
    read_api_base (p, root, out);
    out->kind = OAUTH_OK;
out:
    if (out->kind == OAUTH_TRANSIENT)
        out->retry_after = oauth_parse_retry_after (retry_after_header, time (NULL));
    json_decref (root);
}

void
oauth_result_clear (oauth_result_t *r)
{
    if (!r)
        return;
    mem_free_secret (&r->access_token);
    mem_free_secret (&r->refresh_token);
    mem_free (r->scope);
    mem_free (r->token_type);
    mem_free (r->api_base_url);
    mem_free (r->error);
    mem_free (r->error_description);
    memset (r, 0, sizeof *r);
    r->expires_in = -1;
    r->retry_after = -1;
}

void
oauth_read_response (const catalog_provider_t *p, const http_response_t *resp, int64_t max_body, oauth_result_t *out)
{
    memset (out, 0, sizeof *out);
    if (resp->status == 0) {
        out->kind = OAUTH_TRANSIENT;
        out->retry_after = -1;
        out->expires_in = -1;
        snprintf (out->detail, sizeof out->detail, "%s: %s",
                  resp->timed_out ? "provider call timed out"
                  : resp->not_started ? "provider call not made" : "provider unreachable",
                  resp->error ? resp->error : "no answer");
    }
    else
    if (resp->too_large) {
        /* as oauth_parse_token_response takes a body over its own cap: a big error page with a
         * transient status is that status, Retry-After and all */
        int transient = (resp->status >= 500 && resp->status <= 599) || resp->status == 429 || resp->status == 408;
        out->kind = transient ? OAUTH_TRANSIENT : OAUTH_BAD_RESPONSE;
        out->retry_after = transient ? oauth_parse_retry_after (resp->retry_after, time (NULL)) : -1;
        out->expires_in = -1;
        out->http_status = resp->status;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld, larger than %lld bytes", resp->status,
                  (long long) max_body);
    }
    else
        oauth_parse_token_response (p, resp->status, resp->retry_after, resp->body, resp->body_len, out);
}

void
oauth_read_revocation (const catalog_provider_t *p, const http_response_t *resp, int64_t max_body, oauth_result_t *out)
{
    oauth_read_response (p, resp, max_body, out);
    /* a token answer's parser finds no access_token in a success: for RFC 7009 that is the
     * answer (its body may be anything, even empty), unless the body carries an error, which
     * the parser would have classified as one */
    if (out->kind == OAUTH_BAD_RESPONSE && !resp->too_large && resp->status >= 200 && resp->status <= 299) {
        out->kind = OAUTH_OK;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld", resp->status);
    }
    /* nothing left to revoke: the grant has ended, which is what the revocation was for */
    if (out->kind != OAUTH_OK && out->kind != OAUTH_TRANSIENT && resp->status >= 400 && resp->status <= 499
        && out->error && strcmp (out->error, "invalid_token") == 0) {
        out->kind = OAUTH_OK;
        out->already_invalid = 1;
        snprintf (out->detail, sizeof out->detail, "provider answered HTTP %ld invalid_token", resp->status);
    }
}

/* 1 when text holds a piece of secret of WITHHOLD_SPAN characters or more: the secret is looked
 * for in chunks of WITHHOLD_CHUNK taken every WITHHOLD_STEP characters, so that any such piece,
 * from anywhere in it (a description cut short, a quote of its end), holds a whole chunk. A
 * shorter secret is looked for whole; one under WITHHOLD_MIN is not (it would match words). */
#define WITHHOLD_CHUNK 16
#define WITHHOLD_STEP  8
#define WITHHOLD_SPAN  (WITHHOLD_CHUNK + WITHHOLD_STEP - 1)
#define WITHHOLD_MIN   8
static int
quotes (const char *text, const char *secret)
{
    size_t n = strlen (secret), m = text ? strlen (text) : 0;
    if (!m || n < WITHHOLD_MIN)
        return 0;
    if (n <= WITHHOLD_CHUNK)
        return memmem (text, m, secret, n) != NULL;
    for (size_t k = 0; k + WITHHOLD_CHUNK <= n; k += WITHHOLD_STEP)
        if (memmem (text, m, secret + k, WITHHOLD_CHUNK))
            return 1;
    return 0;
}

void
oauth_result_withhold (oauth_result_t *r, const char *secret, const char *what)
{
    char text [96];
    if (!secret || !secret [0])
        return;
    if (quotes (r->error_description, secret)) {
        mem_free_secret (&r->error_description);
        snprintf (text, sizeof text, "(description withheld: it quoted the %s)", what);
        r->error_description = mem_strdup (text);
    }
    if (quotes (r->error, secret)) {
        /* its kind was decided from it already; what is said of it no longer holds it */
        mem_free_secret (&r->error);
        r->error = mem_strdup ("withheld");
        snprintf (r->detail, sizeof r->detail, "provider answered HTTP %ld with an error code that quoted the %s "
                  "(withheld)", r->http_status, what);
    }
    if (quotes (r->detail, secret))
        snprintf (r->detail, sizeof r->detail, "provider answered HTTP %ld (detail withheld: it quoted the %s)",
                  r->http_status, what);
}
