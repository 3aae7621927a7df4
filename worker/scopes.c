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
        /* RFC 7235's BWS around '=': spaces and tabs */
        const char *v = p + nlen;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
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
            for (; *v && *v != ',' && *v != ' ' && *v != '\t' && n + 1 < outlen; v++)
                out [n++] = *v;
        out [n] = '\0';
        return n > 0;
    }
    return 0;
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
        reply_warn (&ws, "scope_already_granted",
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
    if (!scope && header && auth_param (header, "scope", from_header, sizeof from_header))
        scope = mem_strdup (from_header);
    if (header)
        auth_param (header, "error", herror, sizeof herror);
    /* another error (invalid_token: the token itself was refused, revoked or expired) is no scope
     * problem, whatever scope the header names: taken as one, doctor would send the user to
     * approve more permissions instead of to the rejected token's remedy */
    if (herror [0] && strcmp (herror, "insufficient_scope") != 0) {
        char message [300], shown [MAX_ERROR_LEN + 4];
        /* the header may hold any UTF-8, and the parameter was cut to its bound, maybe mid-character */
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
