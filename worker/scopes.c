/* scopes.c - granted scopes against needed ones; upstream insufficient_scope reports */
#include "scopes.h"
#include "fields.h"
#include "reply.h"
#include "store_connect.h"
#include "dbwait.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "text.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_WWW_AUTH        4096
#define MAX_ERROR_LEN       128

/* 1 when one of a and b is the other qualified by a resource: "https://graph.microsoft.com/User.Read"
 * for "User.Read" (Microsoft echoes Graph scopes so, whichever form was asked for). The name is
 * compared ignoring case, as Microsoft does ("user.read" in its documents): qualified scopes are
 * its form, whatever else keeps RFC 6749's case-sensitive names. */
static int
scopes_qualified (const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen < blen)
        return scopes_qualified (b, blen, a, alen);
    return alen > blen + 1 && a [alen - blen - 1] == '/' && strncasecmp (a + alen - blen, b, blen) == 0
        && memchr (b, '/', blen) == NULL;
}

int
scopes_granted (const char *granted, const char *scope)
{
    static const char google_alias [] = "/auth/userinfo.";
    const size_t alen = sizeof google_alias - 1;
    size_t slen = strlen (scope), len;
    int short_openid = strcmp (scope, "email") == 0 || strcmp (scope, "profile") == 0;
    const char *p = granted ? granted : "", *word;
    while ((word = codec_next_word (&p, &len))) {
        if (len == slen && memcmp (word, scope, len) == 0)
            return 1;
        if (scopes_qualified (word, len, scope, slen))
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
scopes_missing (const char *wanted, const char *granted, char *out, size_t outlen)
{
    const char *p = wanted ? wanted : "", *word;
    size_t len, n = 0;
    int count = 0;
    char scope [FIELDS_MAX_SCOPE_LEN + 1];
    out [0] = '\0';
    while ((word = codec_next_word (&p, &len))) {
        if (len > FIELDS_MAX_SCOPE_LEN)
            continue;
        memcpy (scope, word, len);
        scope [len] = '\0';
        /* offline_access asks for a refresh token, not for access: providers do not echo it, and
         * whether it was granted shows as the refresh token (or no_refresh_token) */
        if (scopes_granted (granted, scope) || strcmp (scope, "offline_access") == 0)
            continue;
        count++;
        if (n < outlen)
            n += (size_t) snprintf (out + n, outlen - n, "%s\"%s\"", n ? ", " : "", scope);
    }
    return count;
}

/* 1 when scope stands in list as it is. */
static int
scopes_listed (const char *list, const char *scope)
{
    size_t slen = strlen (scope), len;
    const char *p = list, *word;
    while ((word = codec_next_word (&p, &len)))
        if (len == slen && memcmp (word, scope, len) == 0)
            return 1;
    return 0;
}

char *
scopes_as_requested (const char *wanted, const char *granted, int with_offline)
{
    size_t cap = strlen (granted) + (wanted ? strlen (wanted) : 0) + 2;
    char *out = mem_alloc (cap), *at = out + snprintf (out, cap, "%s", granted);
    const char *p = wanted ? wanted : "", *word;
    size_t len;
    char scope [FIELDS_MAX_SCOPE_LEN + 1];
    while ((word = codec_next_word (&p, &len))) {
        if (len > FIELDS_MAX_SCOPE_LEN)
            continue;
        memcpy (scope, word, len);
        scope [len] = '\0';
        int offline = strcmp (scope, "offline_access") == 0;
        if ((offline ? !with_offline : !scopes_granted (granted, scope)) || scopes_listed (out, scope))
            continue;
        at += snprintf (at, cap - (size_t) (at - out), "%s%s", at > out ? " " : "", scope);
    }
    return out;
}

int
scopes_held (worker_t *w, const job_t *job, const char *wanted, const cache_entry_t *e)
{
    char missing [600], message [900];
    int n = scopes_missing (wanted, e->scopes, missing, sizeof missing);
    if (n == 0)
        return 0;
    snprintf (message, sizeof message, "integration \"%s\" was not granted the required scope%s %s (granted: %s)",
              e->id, n == 1 ? "" : "s", missing, e->scopes && *e->scopes ? e->scopes : "none");
    reply_error (w, job, FR_INSUFFICIENT_SCOPE, message, SCOPES_RECONNECT_HINT, -1);
    return -1;
}

/* RFC 7230's tchar: what a token (a scheme, a parameter's name or bare value) is made of. */
static int
auth_tchar (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || (c && strchr ("!#$%&'*+-.^_`|~", c) != NULL);
}

/* One element of a WWW-Authenticate header: a challenge's scheme, or one of its parameters (the
 * value as it stands, quoted or not). 0 at the end. RFC 7235: 1#( auth-scheme [ 1*SP ( token68 /
 * #auth-param ) ] ), auth-param = token BWS "=" BWS ( token / quoted-string ). A token68 ("abc==")
 * and stray characters are stepped over. */
typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
    int is_param, quoted;
    int after_comma;                    /* a comma came between this and the item before */
} auth_item_t;

static int
auth_next (const char **pp, auth_item_t *it)
{
    const char *p = *pp;
    int comma = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            comma |= *p++ == ',';
        if (!*p) {
            *pp = p;
            return 0;
        }
        const char *t = p;
        while (auth_tchar (*p))
            p++;
        if (p == t) {
            p++;                            /* not a token: a token68's '/', or garbage */
            continue;
        }
        memset (it, 0, sizeof *it);
        it->after_comma = comma;
        it->name = t;
        it->name_len = (size_t) (p - t);
        const char *q = p;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q != '=') {
            *pp = p;                        /* a scheme (or a token68 without padding) */
            return 1;
        }
        q++;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q == '"') {
            /* a quoted-string: to its closing quote, a backslash escaping the next character */
            const char *v = ++q;
            while (*q && *q != '"')
                q += q [0] == '\\' && q [1] ? 2 : 1;
            it->value = v;
            it->value_len = (size_t) (q - v);
            it->quoted = 1;
            it->is_param = 1;
            *pp = *q ? q + 1 : q;
            return 1;
        }
        if (!auth_tchar (*q)) {
            while (*q == '=')               /* a token68's padding */
                q++;
            p = q;
            continue;
        }
        const char *v = q;
        while (auth_tchar (*q))
            q++;
        it->value = v;
        it->value_len = (size_t) (q - v);
        it->is_param = 1;
        *pp = q;
        return 1;
    }
}

int
scopes_auth_param (const char *header, const char *name, char *out, size_t outlen)
{
    assert (outlen > 0);
    out [0] = '\0';
    /* the Bearer challenge's parameters when there is one (RFC 6750), else the first anywhere: a
     * header may carry other schemes' challenges, whose parameters say nothing of the token */
    int bearer = 0, in_bearer = 0, found = 0, after_scheme = 0;
    auth_item_t it;
    const char *p = header;
    while (auth_next (&p, &it))
        bearer |= !it.is_param && it.name_len == 6 && strncasecmp (it.name, "Bearer", 6) == 0;
    for (p = header; auth_next (&p, &it); ) {
        if (!it.is_param) {
            /* a bare token right after a scheme is its token68, not the next challenge's scheme */
            if (!(after_scheme && !it.after_comma))
                in_bearer = it.name_len == 6 && strncasecmp (it.name, "Bearer", 6) == 0;
            after_scheme = !(after_scheme && !it.after_comma);
            continue;
        }
        after_scheme = 0;
        if ((bearer && !in_bearer) || it.name_len != strlen (name) || strncasecmp (it.name, name, it.name_len) != 0)
            continue;
        size_t n = 0;
        for (size_t i = 0; i < it.value_len; i++) {
            if (it.quoted && it.value [i] == '\\' && i + 1 < it.value_len)
                i++;
            if (n + 1 >= outlen) {
                out [0] = '\0';
                return -1;
            }
            out [n++] = it.value [i];
        }
        out [n] = '\0';
        found = n > 0;
        break;
    }
    return found;
}

/* A scope report waiting for its batch (dbwait.c). */
typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    char *scope;
    char detail [1200];
} report_wait_t;

static void
report_free (report_wait_t *rw)
{
    mem_free (rw->scope);
    mem_free (rw);
}

static void
report_stored (void *arg, fr_status_t st, const store_row_t *row, const store_extra_t *x, const char *err)
{
    report_wait_t *rw = arg;
    worker_t *w = rw->w;
    reply_warnings_t ws = { .count = 0 };
    char missing [600];
    if (st != FR_OK) {
        reply_store_error (w, &rw->job, st, err);
        report_free (rw);
        return;
    }
    log_warning (rw->id, rw->job.rid, "scope reported missing by a caller: %s", rw->detail);
    if (rw->scope [0] && scopes_missing (rw->scope, row->scopes, missing, sizeof missing) == 0)
        reply_warn (&ws, "scope_already_granted", NULL,
                  "the upstream API may need another scope, or the provider's OAuth app lacks the permission: "
                  "check the API's documentation and the app's configured scopes",
                  "integration \"%s\" already holds \"%s\" in its grant", rw->id, rw->scope);
    reply_with_integration (w, &rw->job, FR_OK, NULL, NULL, row, x, &ws, -1);
    report_free (rw);
}

/* The report and the integration's row, one batch on a free connection; dropped unwritten when
 * the request's deadline passed meanwhile (store NULL). */
static void
report_start (worker_t *w, store_t *store, void *arg)
{
    report_wait_t *rw = arg;
    char err [256];
    fr_status_t st;
    if (!store) {
        report_free (rw);
        return;
    }
    if ((st = store_report_scope_start (store, rw->id, rw->scope, rw->detail, report_stored, rw, err, sizeof err))
        != FR_OK) {
        reply_store_error (w, &rw->job, st, err);
        report_free (rw);
    }
}

void
scopes_report (worker_t *w, job_t *job, const msgpack_object *root, const char *id)
{
    char *scope = NULL, *header = NULL;
    char from_header [FIELDS_MAX_SCOPE_LEN * 4], herror [MAX_ERROR_LEN + 1] = "";

    if (fields_str (w, job, root, "scope", sizeof from_header - 1, 1, &scope) < 0
    ||  fields_text (w, job, root, "www_authenticate", MAX_WWW_AUTH, &header) < 0)
        goto out;
    /* a parameter longer than its bound is refused, not cut: a scope cut short would be recorded
     * as needed, and doctor would send the user after it */
    int found = header && !scope ? scopes_auth_param (header, "scope", from_header, sizeof from_header) : 0;
    const char *too_long = found < 0 ? "scope" : NULL;
    if (!too_long && header && scopes_auth_param (header, "error", herror, sizeof herror) < 0)
        too_long = "error";
    if (too_long) {
        char message [200];
        snprintf (message, sizeof message, "the \"www_authenticate\" header's %s parameter is longer than %zu bytes",
                  too_long, strcmp (too_long, "scope") == 0 ? sizeof from_header - 1 : sizeof herror - 1);
        reply_error (w, job, FR_TOO_LARGE, message, "send the scope the API needs in \"scope\" instead", -1);
        goto out;
    }
    if (found > 0)
        scope = mem_strdup (from_header);
    /* another error (invalid_token: the token itself was refused, revoked or expired) is no scope
     * problem, whatever scope the header names: taken as one, doctor would send the user to
     * approve more permissions instead of to the rejected token's remedy */
    if (herror [0] && strcmp (herror, "insufficient_scope") != 0) {
        char message [300], shown [MAX_ERROR_LEN + 4];
        /* the header may hold any UTF-8 text */
        text_printable (shown, sizeof shown, herror, (size_t) -1, MAX_ERROR_LEN);
        snprintf (message, sizeof message, "the upstream API answered error \"%s\", not \"insufficient_scope\": no "
                  "scope is missing (invalid_token: it refused the access token itself)", shown);
        reply_error (w, job, FR_BAD_REQUEST, message, "report the refused token instead (ferrulectl token "
                     "--integration ID --reject TOKEN; op \"token\" with \"reject\"): it is replaced, or the "
                     "answer says why it cannot be", -1);
        goto out;
    }
    /* RFC 6750 lets a resource server answer insufficient_scope without naming the scope it needs
     * (many do): recorded as a report whose scope is not named (""), which doctor still diagnoses */
    int unnamed = !scope && strcmp (herror, "insufficient_scope") == 0;
    if (unnamed)
        scope = mem_strdup ("");
    int ok = scope != NULL;
    const char *p = scope ? scope : "", *word;
    size_t len, count = 0;
    while (ok && (word = codec_next_word (&p, &len))) {
        ok = fields_scope_token_ok (word, len);
        count++;
    }
    if (!ok || (count == 0 && !unnamed)) {
        reply_error (w, job, FR_BAD_REQUEST,
                     scope ? "\"scope\" must hold scope names separated by spaces, without quotes"
                           : "\"scope\" is required, or a \"www_authenticate\" header with error=\"insufficient_scope\" "
                             "(with or without a scope parameter)",
                     NULL, -1);
        goto out;
    }
    report_wait_t *rw = mem_alloc (sizeof *rw);
    rw->w = w;
    rw->job = *job;
    snprintf (rw->id, sizeof rw->id, "%s", id);
    if (unnamed)
        snprintf (rw->detail, sizeof rw->detail, "an upstream API answered insufficient_scope without naming the "
                  "scope it needs");
    else
        snprintf (rw->detail, sizeof rw->detail, "an upstream API answered %s; it needs scope \"%s\"",
                  herror [0] ? herror : "insufficient_scope", scope);
    rw->scope = scope;                   /* the report owns it now */
    scope = NULL;
    dbwait_add_for (w, report_start, rw, &rw->job);
out:
    mem_free (scope);
    mem_free (header);
}
