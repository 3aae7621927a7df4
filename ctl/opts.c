/* opts.c - option specs to request arguments: values parsed, range-checked and capped */
#include "opts.h"
#include "codec.h"
#include "ident.h"
#include "mem.h"
#include "text.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define OPTS_MAX_WORDS      256     /* scopes in one list */
#define OPTS_MAX_WORD       1024    /* one scope (Google's are URLs) */

/* opts_quote of the first len bytes of s */
static void
quote_n (char *dst, size_t dstlen, const char *s, size_t len, size_t max)
{
    size_t n = 0, i = 0;
    for (; i < len && s [i] && i < max && n + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char) s [i];
        dst [n++] = (ch >= 0x20 && ch < 0x7f) ? (char) ch : '?';
    }
    if (i < len && s [i] && n + 4 < dstlen) {
        memcpy (dst + n, "...", 3);
        n += 3;
    }
    dst [n] = '\0';
}

void
opts_quote (char *dst, size_t dstlen, const char *s, size_t max)
{
    quote_n (dst, dstlen, s, strlen (s), max);
}

void
opts_quote_option (char *dst, size_t dstlen, const char *arg, size_t max)
{
    /* what follows "=" may be a secret given to a misspelled option */
    quote_n (dst, dstlen, arg, strcspn (arg, "="), max);
}

void
opts_state_init (opts_state_t *s)
{
    memset (s, 0, sizeof *s);
    s->args = json_object ();
}

void
opts_state_clear (opts_state_t *s, const opt_spec_t *specs)
{
    if (!s->args)
        return;
    /* jansson frees strings without clearing them: clear the secrets first */
    for (const opt_spec_t *spec = specs; spec && spec->name; spec++) {
        int url = spec->kind == OPT_CALLBACK_URL || spec->kind == OPT_CALLBACK_URL_FILE;
        if (spec->kind != OPT_SECRET && spec->kind != OPT_SECRET_FILE && !url)
            continue;
        /* a callback URL's secret part is the authorization code */
        json_t *v = json_object_get (s->args, url ? "code" : spec->key);
        if (json_is_string (v))
            mem_wipe ((char *) json_string_value (v), json_string_length (v));
    }
    json_decref (s->args);
    s->args = NULL;
}

const opt_spec_t *
opts_find (const opt_spec_t *specs, const char *name)
{
    for (const opt_spec_t *spec = specs; spec && spec->name; spec++)
        if (strcmp (spec->name, name) == 0)
            return spec;
    return NULL;
}

int
opts_parse_long (const char *option, const char *value, long min, long max, long *out,
                 char *err, size_t errlen)
{
    char shown [48];
    char *end = NULL;
    opts_quote (shown, sizeof shown, value, 32);
    errno = 0;
    long v = strtol (value, &end, 10);
    if (!*value || *end || errno == ERANGE || v < min || v > max) {
        snprintf (err, errlen, "invalid value \"%s\" for \"--%s\": give a whole number from %ld to %ld",
                  shown, option, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int
opts_parse_seconds (const char *option, const char *value, double min, double max, int *ms,
                    char *err, size_t errlen)
{
    char shown [48];
    char *end = NULL;
    opts_quote (shown, sizeof shown, value, 32);
    errno = 0;
    double v = strtod (value, &end);
    if (!*value || *end || errno == ERANGE || !isfinite (v) || v < min || v > max
    ||  (int) lround (v * 1000.0) < 1) {
        snprintf (err, errlen, "invalid value \"%s\" for \"--%s\": give seconds (fractions allowed), at least %g and at most %g",
                  shown, option, min, max);
        return -1;
    }
    *ms = (int) lround (v * 1000.0);
    return 0;
}

/* The workers' rule (common/ident.h), checked before sending so the operator sees it at once. */
int
opts_check_integration (const char *option, const char *value, char *err, size_t errlen)
{
    if (!ident_valid (value, strlen (value))) {
        char shown [IDENT_MAX + 32];
        opts_quote (shown, sizeof shown, value, IDENT_MAX);
        snprintf (err, errlen, "invalid integration id \"%s\" for \"--%s\": use 1 to %d of the characters A-Z a-z 0-9 . _ : -",
                  shown, option, IDENT_MAX);
        return -1;
    }
    return 0;
}

/* A workspace: an id prefix that ends with a separator, the workers' rule (common/ident.h), checked
 * before sending so the operator sees it at once. */
int
opts_check_workspace (const char *option, const char *value, char *err, size_t errlen)
{
    if (opts_check_integration (option, value, err, errlen) != 0)
        return -1;
    if (!ident_workspace_valid (value, strlen (value))) {
        snprintf (err, errlen, "invalid workspace \"%s\" for \"--%s\": end it with one of " IDENT_SEPARATORS
                  ", as in \"acct42:\", or it would also cover the ids of other workspaces that start with it",
                  value, option);
        return -1;
    }
    return 0;
}

/* Provider names: the catalog decides which exist; here only their shape. */
int
opts_check_name (const char *option, const char *value, char *err, size_t errlen)
{
    size_t len = strlen (value);
    int ok = len >= 1 && len <= 64;
    for (size_t i = 0; ok && i < len; i++) {
        char ch = value [i];
        ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
          || ch == '.' || ch == '_' || ch == '-';
    }
    if (!ok) {
        char shown [96];
        opts_quote (shown, sizeof shown, value, 64);
        snprintf (err, errlen, "invalid name \"%s\" for \"--%s\": use 1 to 64 of the characters A-Z a-z 0-9 . _ -",
                  shown, option);
        return -1;
    }
    return 0;
}

int
opts_check_uri (const char *option, const char *value, char *err, size_t errlen)
{
    size_t len = strlen (value), skip = 0;
    int ok = len <= 2048;
    if (strncasecmp (value, "https://", 8) == 0)
        skip = 8;
    else
    if (strncasecmp (value, "http://", 7) == 0)
        skip = 7;
    ok = ok && skip && value [skip] && value [skip] != '/' && value [skip] != '?';
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char) value [i] > 0x20 && (unsigned char) value [i] < 0x7f && value [i] != '#';
    if (!ok) {
        char shown [96];
        opts_quote (shown, sizeof shown, value, 64);
        snprintf (err, errlen, "invalid URI \"%s\" for \"--%s\": give an absolute http:// or https:// URI of at most "
                  "2048 characters, without spaces or fragment", shown, option);
        return -1;
    }
    return 0;
}

int
opts_check_api_base (const char *option, const char *value, char *err, size_t errlen)
{
    size_t len = strlen (value);
    /* http://127.0.0.1 is the service's to judge: it takes it for a provider served on its own
       machine (the fake provider) only */
    int loopback = strncasecmp (value, "http://", 7) == 0 && strcspn (value + 7, ":/?#") == 9
                && strncmp (value + 7, "127.0.0.1", 9) == 0;
    int ok = len <= 255 && (strncasecmp (value, "https://", 8) == 0 || loopback);
    const char *host = value + (loopback ? 7 : 8);
    size_t authority = ok ? strcspn (host, "/?#") : 0;
    ok = ok && authority > 0 && host [0] != ':' && !memchr (host, '@', authority);
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char) value [i] > 0x20 && (unsigned char) value [i] < 0x7f;
    if (!ok) {
        /* not quoted: a URL with credentials in it would show them */
        snprintf (err, errlen, "invalid URL for \"--%s\": give an absolute https:// URL with a host and no "
                  "credentials, of at most 255 characters without spaces", option);
        return -1;
    }
    return 0;
}

/* The query parameter name of url (form-decoded: %XX and '+') as a new string into *out: 1, or 0
 * when absent, or -1 when it is there twice (which of the two was meant cannot be told). */
static int
query_param (const char *url, const char *name, char **out)
{
    const char *q = strchr (url, '?');
    size_t nlen = strlen (name), end = strcspn (url, "#");
    *out = NULL;
    if (!q || (size_t) (q - url) >= end)
        return 0;
    for (const char *p = q + 1; p < url + end; ) {
        size_t plen = strcspn (p, "&#");
        if (plen > nlen && strncmp (p, name, nlen) == 0 && p [nlen] == '=') {
            if (*out) {
                mem_wipe (*out, strlen (*out));
                mem_free (*out);
                *out = NULL;
                return -1;
            }
            char *v = mem_alloc (plen + 1);
            size_t n = 0;
            for (const char *c = p + nlen + 1; c < p + plen; c++) {
                unsigned char byte;
                if (*c == '%' && c + 2 < p + plen && text_unhex (c + 1, 1, &byte) == 0) {
                    v [n++] = (char) byte;
                    c += 2;
                }
                else
                    v [n++] = *c == '+' ? ' ' : *c;
            }
            v [n] = '\0';
            *out = v;
        }
        p += plen;
        if (*p == '&')
            p++;
        else
            break;
    }
    return *out ? 1 : 0;
}

/* Fills state, code, error and error_description from a redirect URL; the state is returned.
 * from: where the URL was read ("standard input", a quoted path), NULL for the option's value. */
static json_t *
parse_callback_url (opts_state_t *s, const opt_spec_t *spec, const char *url, const char *from,
                    char *err, size_t errlen)
{
    static const struct { const char *name; size_t max; int text; } params [] = {
        { "state", 256, 0 }, { "code", 16384, 0 }, { "error", 128, 0 }, { "error_description", 2048, 1 },
    };
    json_t *state = NULL;
    if (strlen (url) > CODEC_MAX_STRING || (strncasecmp (url, "http://", 7) != 0 && strncasecmp (url, "https://", 8) != 0)) {
        snprintf (err, errlen, "the %s%s%s \"--%s\" is not an http:// or https:// URL of at most %d bytes: pass the "
                  "whole URL the provider redirected the browser to", from ? "URL read from " : "value of",
                  from ? from : "", from ? " for" : "", spec->name, CODEC_MAX_STRING);
        return NULL;
    }
    for (size_t i = 0; i < sizeof params / sizeof params [0]; i++) {
        char *v = NULL;
        int found = query_param (url, params [i].name, &v);
        if (found < 0) {
            snprintf (err, errlen, "the URL given to \"--%s\" has the \"%s\" parameter twice: pass the URL the "
                      "provider redirected the browser to, unchanged", spec->name, params [i].name);
            json_decref (state);
            return NULL;
        }
        if (!found)
            continue;
        size_t len = strlen (v);
        int bad = len == 0 || len > params [i].max;
        for (size_t k = 0; k < len; k++)
            if ((unsigned char) v [k] < 0x20 || (unsigned char) v [k] == 0x7f || (!params [i].text && (unsigned char) v [k] >= 0x7f)) {
                if (params [i].text)
                    v [k] = '?';
                else
                    bad = 1;
            }
        json_t *j = bad ? NULL : json_string (v);
        if (!j && !bad && params [i].text) {       /* not UTF-8: keep the ASCII */
            for (size_t k = 0; k < len; k++)
                if ((unsigned char) v [k] >= 0x80)
                    v [k] = '?';
            j = json_string (v);
        }
        mem_wipe (v, len);
        mem_free (v);
        if (!j) {
            snprintf (err, errlen, "the \"%s\" parameter of the URL given to \"--%s\" is empty, too long or not "
                      "printable", params [i].name, spec->name);
            json_decref (state);
            return NULL;
        }
        if (i == 0)
            state = j;
        else
            json_object_set_new (s->args, params [i].name, j);
    }
    if (!state || (!json_object_get (s->args, "code") && !json_object_get (s->args, "error"))) {
        snprintf (err, errlen, "the URL given to \"--%s\" has no %s parameter: pass the whole URL the provider "
                  "redirected the browser to, query included", spec->name, state ? "\"code\" or \"error\"" : "\"state\"");
        json_decref (state);
        return NULL;
    }
    return state;
}

/* Trims spaces and line ends, then checks that a token is printable ASCII without spaces.
 * The message never contains the secret. */
static int
check_secret (const opt_spec_t *spec, const char *from, char **s, size_t *len, char *err, size_t errlen)
{
    while (*len && (unsigned char) (*s) [*len - 1] <= 0x20)
        (*len)--;
    while (*len && (unsigned char) (*s) [0] <= 0x20) {
        (*s)++;
        (*len)--;
    }
    if (*len == 0) {
        snprintf (err, errlen, "the value of \"--%s\"%s%s is empty", spec->name, from ? " read from " : "", from ? from : "");
        return -1;
    }
    if (*len > CODEC_MAX_STRING) {
        snprintf (err, errlen, "the value of \"--%s\"%s%s is too large (more than %d bytes)",
                  spec->name, from ? " read from " : "", from ? from : "", CODEC_MAX_STRING);
        return -1;
    }
    for (size_t i = 0; i < *len; i++) {
        unsigned char ch = (unsigned char) (*s) [i];
        if (ch <= 0x20 || ch >= 0x7f) {
            snprintf (err, errlen, "the value of \"--%s\"%s%s contains a space, a control or a non-ASCII character; a token is printable ASCII",
                      spec->name, from ? " read from " : "", from ? from : "");
            return -1;
        }
    }
    return 0;
}

/* Reads a secret from a file or standard input into buf (capped). */
static int
read_secret (opts_state_t *st, const opt_spec_t *spec, const char *path, mem_buf_t *buf,
             char *shown, size_t shownlen, char *err, size_t errlen)
{
    int fd = -1;
    int rc = -1;
    char chunk [4096];
    int from_stdin = strcmp (path, "-") == 0;

    if (from_stdin) {
        snprintf (shown, shownlen, "standard input");
        if (st->stdin_used) {
            snprintf (err, errlen, "only one option can read standard input (\"--%s -\")", spec->name);
            goto out;
        }
        st->stdin_used = 1;
        fd = STDIN_FILENO;
    }
    else {
        char q [200];
        opts_quote (q, sizeof q, path, 160);
        snprintf (shown, shownlen, "\"%s\"", q);
        fd = open (path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf (err, errlen, "could not open %s for \"--%s\": %s", shown, spec->name, strerror (errno));
            goto out;
        }
    }
    for (;;) {
        ssize_t n = read (fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf (err, errlen, "could not read %s for \"--%s\": %s", shown, spec->name, strerror (errno));
            goto out;
        }
        if (n == 0)
            break;
        if (mem_buf_append (buf, chunk, (size_t) n) != 0) {
            snprintf (err, errlen, "%s is too large for \"--%s\" (more than %zu bytes)", shown, spec->name, buf->max);
            goto out;
        }
    }
    rc = 0;
out:
    mem_wipe (chunk, sizeof chunk);
    if (fd >= 0 && !from_stdin)
        close (fd);
    return rc;
}

/* Splits "a b,c" into ["a","b","c"]. */
static json_t *
split_words (const opt_spec_t *spec, const char *value, char *err, size_t errlen)
{
    json_t *words = json_array ();
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ' ' && *p != ',' && *p != '\t')
            p++;
        size_t len = (size_t) (p - start);
        int printable = 1;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char) start [i] < 0x20 || (unsigned char) start [i] >= 0x7f)
                printable = 0;
        if (len > OPTS_MAX_WORD || !printable || json_array_size (words) >= OPTS_MAX_WORDS) {
            snprintf (err, errlen, "invalid value for \"--%s\": give at most %d words of printable ASCII, each at most %d bytes",
                      spec->name, OPTS_MAX_WORDS, OPTS_MAX_WORD);
            json_decref (words);
            return NULL;
        }
        json_array_append_new (words, json_stringn (start, len));
    }
    return words;
}

/* The option that filled key, or NULL. */
static const opt_spec_t *
filled_by (const opts_state_t *s, const char *key)
{
    for (int i = 0; i < s->count; i++)
        if (strcmp (s->keys [i], key) == 0)
            return s->from [i];
    return NULL;
}

int
opts_apply (opts_state_t *s, const opt_spec_t *spec, char *value, char *err, size_t errlen)
{
    const opt_spec_t *before = filled_by (s, spec->key);
    json_t *v = NULL;
    mem_buf_t buf;
    int rc = -1;

    mem_buf_init (&buf, (size_t) CODEC_MAX_STRING + 1024);
    if (before == spec && spec->kind != OPT_LIST) {
        snprintf (err, errlen, "option \"--%s\" is given twice", spec->name);
        goto out;
    }
    if (before && before != spec) {
        snprintf (err, errlen, "options \"--%s\" and \"--%s\" cannot be used together", before->name, spec->name);
        goto out;
    }
    if (s->count == OPTS_MAX_KEYS) {
        snprintf (err, errlen, "too many options");
        goto out;
    }
    switch (spec->kind) {
        case OPT_FLAG:
            v = json_true ();
            break;
        case OPT_STRING:
            if (spec->check && spec->check (spec->name, value, err, errlen) != 0)
                goto out;
            if (strlen (value) > CODEC_MAX_STRING) {
                snprintf (err, errlen, "the value of \"--%s\" is too large (more than %d bytes)", spec->name, CODEC_MAX_STRING);
                goto out;
            }
            v = json_string (value);
            if (!v) {
                snprintf (err, errlen, "the value of \"--%s\" is not valid UTF-8", spec->name);
                goto out;
            }
            break;
        case OPT_INT: {
            long n;
            if (opts_parse_long (spec->name, value, spec->min, spec->max, &n, err, errlen) != 0)
                goto out;
            v = json_integer (n);
            break;
        }
        case OPT_WORDS:
            v = split_words (spec, value, err, errlen);
            if (!v)
                goto out;
            break;
        case OPT_LIST: {
            json_t *have = before == spec ? json_object_get (s->args, spec->key) : NULL;
            v = split_words (spec, value, err, errlen);
            if (!v)
                goto out;
            if (have) {                     /* a repeat: add to the words given before */
                if (json_array_size (have) + json_array_size (v) > OPTS_MAX_WORDS) {
                    snprintf (err, errlen, "too many values for \"--%s\" (at most %d)", spec->name, OPTS_MAX_WORDS);
                    json_decref (v);
                    goto out;
                }
                json_array_extend (have, v);
                json_decref (v);
                rc = 0;
                goto out;
            }
            break;
        }
        case OPT_CALLBACK_URL:
            v = parse_callback_url (s, spec, value, NULL, err, errlen);
            if (!v)
                goto out;
            break;
        case OPT_CALLBACK_URL_FILE: {
            char shown [220];
            if (read_secret (s, spec, value, &buf, shown, sizeof shown, err, errlen) != 0)
                goto out;
            /* one line: the line end an editor or echo leaves is not part of it */
            char *p = buf.data ? buf.data : "";
            size_t len = buf.len;
            while (len && (unsigned char) p [len - 1] <= 0x20)
                p [--len] = '\0';
            while (len && (unsigned char) *p <= 0x20) {
                p++;
                len--;
            }
            if (memchr (p, '\0', len)) {
                snprintf (err, errlen, "%s holds a NUL byte: give \"--%s\" a file with the URL alone", shown, spec->name);
                goto out;
            }
            v = parse_callback_url (s, spec, p, shown, err, errlen);
            if (!v)
                goto out;
            break;
        }
        case OPT_SECRET: {
            char *p = value;
            size_t len = strlen (value);
            if (check_secret (spec, NULL, &p, &len, err, errlen) != 0)
                goto out;
            v = json_stringn (p, len);
            break;
        }
        case OPT_SECRET_FILE: {
            char shown [220];
            if (read_secret (s, spec, value, &buf, shown, sizeof shown, err, errlen) != 0)
                goto out;
            char *p = buf.data ? buf.data : "";
            size_t len = buf.len;
            if (check_secret (spec, shown, &p, &len, err, errlen) != 0)
                goto out;
            v = json_stringn (p, len);
            break;
        }
    }
    json_object_set_new (s->args, spec->key, v);
    s->keys [s->count] = spec->key;
    s->from [s->count++] = spec;
    rc = 0;
out:
    /* a token, or a callback URL and its code, leaves the process list (it was visible until
     * here) whatever refused it: a repeat or a conflict too (docs/ferrulectl.md, "Secrets") */
    if (value && (spec->kind == OPT_SECRET || spec->kind == OPT_CALLBACK_URL))
        mem_wipe (value, strlen (value));
    mem_buf_free (&buf);                                /* wipes */
    return rc;
}

const opt_spec_t *
opts_rebind (opts_state_t *s, const opt_spec_t *specs)
{
    for (int i = 0; i < s->count; i++) {
        const opt_spec_t *same = opts_find (specs, s->from [i]->name);
        /* the same name read into another key or kind would send what the operator did not mean */
        if (!same || same->kind != s->from [i]->kind || strcmp (same->key, s->from [i]->key) != 0)
            return s->from [i];
        s->from [i] = same;
    }
    return NULL;
}

/* "--a" or "--a" or "--b" for every option that fills key. */
static void
options_for_key (const opt_spec_t *specs, const char *key, char *buf, size_t len)
{
    size_t n = 0;
    buf [0] = '\0';
    for (const opt_spec_t *spec = specs; spec->name && n < len; spec++)
        if (strcmp (spec->key, key) == 0)
            n += (size_t) snprintf (buf + n, len - n, "%s\"--%s\"", n ? " or " : "", spec->name);
}

int
opts_finish (opts_state_t *s, const opt_spec_t *specs, char *err, size_t errlen)
{
    char names [160];
    for (const opt_spec_t *spec = specs; spec && spec->name; spec++) {
        if (spec->required && !filled_by (s, spec->key)) {
            options_for_key (specs, spec->key, names, sizeof names);
            snprintf (err, errlen, "missing option %s", names);
            return -1;
        }
        if (spec->one_of) {
            int given = 0;
            size_t n = 0;
            names [0] = '\0';
            for (const opt_spec_t *p = specs; p->name; p++)
                if (p->one_of && strcmp (p->one_of, spec->one_of) == 0) {
                    given = given || filled_by (s, p->key);
                    if (n < sizeof names)
                        n += (size_t) snprintf (names + n, sizeof names - n, "%s\"--%s\"", n ? " or " : "", p->name);
                }
            if (!given) {
                snprintf (err, errlen, "missing option %s: give at least one", names);
                return -1;
            }
        }
        const opt_spec_t *by = filled_by (s, spec->key);
        if (by == spec && spec->needs && !filled_by (s, spec->needs)) {
            options_for_key (specs, spec->needs, names, sizeof names);
            snprintf (err, errlen, "option \"--%s\" needs %s as well", spec->name, names);
            return -1;
        }
    }
    return 0;
}

void
opts_usage (const opt_spec_t *specs, char *buf, size_t len)
{
    size_t n = 0;
    buf [0] = '\0';
    for (const opt_spec_t *spec = specs; spec && spec->name && n < len; spec++) {
        /* options filling the same key are alternatives: group them once */
        int first = 1;
        for (const opt_spec_t *p = specs; p != spec; p++)
            if (strcmp (p->key, spec->key) == 0)
                first = 0;
        if (!first)
            continue;
        int alternatives = 0;
        for (const opt_spec_t *p = spec; p->name; p++)
            if (strcmp (p->key, spec->key) == 0)
                alternatives++;
        n += (size_t) snprintf (buf + n, n < len ? len - n : 0, "%s%s", n ? " " : "",
                                spec->required ? (alternatives > 1 ? "(" : "") : "[");
        int k = 0;
        for (const opt_spec_t *p = spec; p->name && n < len; p++) {
            if (strcmp (p->key, spec->key) != 0)
                continue;
            n += (size_t) snprintf (buf + n, len - n, "%s--%s%s%s", k++ ? " | " : "", p->name,
                                    p->metavar ? " " : "", p->metavar ? p->metavar : "");
        }
        if (n < len)
            n += (size_t) snprintf (buf + n, len - n, "%s",
                                    spec->required ? (alternatives > 1 ? ")" : "") : "]");
    }
}
