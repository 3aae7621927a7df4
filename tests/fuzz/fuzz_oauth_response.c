/* fuzz_oauth_response.c - what a provider's token endpoint answers: the status, the Retry-After
 * header line (http_parse_retry_after, oauth_parse_retry_after) and the body, JSON or anything
 * else (oauth_parse_token_response).
 *
 * Input: the HTTP status in decimal, a newline, one header line, a newline, then the body:
 *   429\nRetry-After: 30\n{"error":"rate_limited"} */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include "catalog.h"
#include "http.h"
#include "mem.h"
#include "oauth.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_oauth_response: %s\n", #cond); abort (); } } while (0)

static catalog_t *catalog;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    char err [512];
    catalog = catalog_new (NULL, err, sizeof err);
    if (!catalog) {
        fprintf (stderr, "fuzz_oauth_response: %s\n", err);
        abort ();
    }
    return 0;
}

/* 1 when text holds no control character but spaces (what logs and replies may carry). */
static int
printable (const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char) *s < 0x20 || (unsigned char) *s == 0x7f)
            return 0;
    return 1;
}

/* The body with its access and refresh tokens replaced by others of the same length and kind
 * (every byte changed, still visible ASCII), as new JSON text; NULL when it has no such token. */
static char *
other_tokens (const char *body, size_t len)
{
    static const char *const fields [] = { "access_token", "refresh_token", NULL };
    json_t *root = json_loadb (body, len, JSON_REJECT_DUPLICATES, NULL);
    char *text = NULL;
    int changed = 0;
    if (!json_is_object (root))
        goto out;
    for (int f = 0; fields [f]; f++) {
        json_t *v = json_object_get (root, fields [f]);
        size_t n = json_string_length (v);
        const char *t = json_string_value (v);
        int visible = t && n > 0 && n <= OAUTH_MAX_TOKEN && strlen (t) == n;
        for (size_t i = 0; visible && i < n; i++)
            visible = (unsigned char) t [i] > 0x20 && (unsigned char) t [i] < 0x7f;
        if (!visible)
            continue;
        char *other = mem_strndup (t, n);
        for (size_t i = 0; i < n; i++)
            other [i] = other [i] == 'x' ? 'y' : 'x';
        json_object_set_new (root, fields [f], json_stringn (other, n));
        mem_free (other);
        changed = 1;
    }
    if (changed)
        text = json_dumps (root, JSON_COMPACT);
out:
    json_decref (root);
    return text;
}

static int
same (const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp (a, b) == 0);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *in = (const char *) data;
    const char *nl1 = memchr (in, '\n', size);
    const char *nl2 = nl1 ? memchr (nl1 + 1, '\n', size - (size_t) (nl1 + 1 - in)) : NULL;
    char status_text [16] = "";
    char header [64] = "";
    const char *retry_after = NULL;
    oauth_result_t r;

    if (!nl1 || !nl2 || nl1 - in >= (long) sizeof status_text)
        return -1;      /* not in the harness's format: keep it out of the corpus */
    memcpy (status_text, in, (size_t) (nl1 - in));
    long status = strtol (status_text, NULL, 10);
    if (status < 100 || status > 999)
        return -1;      /* status 0 (no answer) is the caller's, never parsed */

    /* the header line as curl hands it over: CRLF included */
    size_t hlen = (size_t) (nl2 - (nl1 + 1));
    char *line = mem_alloc (hlen + 2);
    memcpy (line, nl1 + 1, hlen);
    memcpy (line + hlen, "\r\n", 2);
    if (http_parse_retry_after (line, hlen + 2, header, sizeof header)) {
        CHECK (strlen (header) < sizeof header);
        retry_after = header;
        int64_t s = oauth_parse_retry_after (header, time (NULL));
        CHECK (s >= -1 && s <= OAUTH_MAX_RETRY_AFTER);
    }
    mem_free (line);

    /* the body as the HTTP layer keeps it: NUL-terminated, may contain anything */
    size_t blen = size - (size_t) (nl2 + 1 - in);
    char *body = mem_alloc (blen + 1);
    memcpy (body, nl2 + 1, blen);

    const catalog_provider_t *p = catalog_at (catalog, blen % catalog_count (catalog));
    oauth_parse_token_response (p, status, retry_after, body, blen, &r);

    CHECK (r.kind >= OAUTH_OK && r.kind <= OAUTH_REJECTED);
    CHECK (r.http_status == status);
    CHECK (memchr (r.detail, '\0', sizeof r.detail));
    CHECK (r.retry_after >= -1 && r.retry_after <= OAUTH_MAX_RETRY_AFTER);
    CHECK (r.retry_after == -1 || r.kind == OAUTH_TRANSIENT);
    CHECK (r.expires_in >= -1 && r.expires_in <= OAUTH_MAX_EXPIRES_IN);
    if (r.kind == OAUTH_OK) {
        CHECK (status >= 200 && status <= 299);
        CHECK (r.access_token && strlen (r.access_token) <= OAUTH_MAX_TOKEN);
        for (const char *c = r.access_token; *c; c++)
            CHECK ((unsigned char) *c > 0x20 && (unsigned char) *c < 0x7f);
        for (const char *c = r.refresh_token; c && *c; c++)
            CHECK ((unsigned char) *c > 0x20 && (unsigned char) *c < 0x7f);
        CHECK (!r.error);
    }
    else {
        CHECK (!r.access_token);
        /* a refresh token only beside an unusable access token in a 2xx answer (kept: the
         * provider may have rotated), and then a token like any other */
        CHECK (!r.refresh_token || (r.kind == OAUTH_BAD_RESPONSE && status >= 200 && status <= 299
                                    && strlen (r.refresh_token) <= OAUTH_MAX_TOKEN));
        for (const char *c = r.refresh_token; c && *c; c++)
            CHECK ((unsigned char) *c > 0x20 && (unsigned char) *c < 0x7f);
    }
    /* what goes to logs, the chain and replies */
    CHECK (!r.error || (strlen (r.error) <= OAUTH_MAX_ERROR && printable (r.error)));
    CHECK (!r.error_description || (strlen (r.error_description) <= OAUTH_MAX_DESCRIPTION
                                    && printable (r.error_description)));
    CHECK (!r.scope || printable (r.scope));
    CHECK (!r.token_type || printable (r.token_type));
    /* an API base URL only from a good answer (or one whose refresh token is kept beside an
     * unusable access token), and only one that would be taken again */
    CHECK (!r.api_base_url || ((r.kind == OAUTH_OK || (r.kind == OAUTH_BAD_RESPONSE && r.refresh_token))
                               && p->api_base_field
                               && !oauth_api_base_problem (p, r.api_base_url, strlen (r.api_base_url))));
    CHECK (!(r.api_base_url && r.api_base_ignored));
    /* no text for logs and replies depends on a token: other tokens give the same texts */
    char *other = other_tokens (body, blen);
    if (other) {
        oauth_result_t r2;
        oauth_parse_token_response (p, status, retry_after, other, strlen (other), &r2);
        CHECK (r2.kind == r.kind && strcmp (r2.detail, r.detail) == 0);
        CHECK (same (r2.error, r.error) && same (r2.error_description, r.error_description));
        CHECK (same (r2.scope, r.scope) && same (r2.token_type, r.token_type));
        CHECK (r2.expires_in == r.expires_in);
        oauth_result_clear (&r2);
        free (other);
    }
    CHECK (oauth_kind_name (r.kind) != NULL);
    (void) oauth_kind_status (r.kind, (int) (blen & 1));

    oauth_result_clear (&r);
    CHECK (r.expires_in == -1 && r.retry_after == -1 && !r.access_token && !r.api_base_url);
    mem_free (body);
    return 0;
}
