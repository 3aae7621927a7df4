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

/* 1 when the secret (NUL-terminated, len >= 4) appears in text. */
static int
leaks (const char *text, const char *secret)
{
    return secret && strlen (secret) >= 4 && strstr (text, secret);
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
    else
        CHECK (!r.access_token && !r.refresh_token);
    /* what goes to logs, the chain and replies */
    CHECK (!r.error || (strlen (r.error) <= OAUTH_MAX_ERROR && printable (r.error)));
    CHECK (!r.error_description || (strlen (r.error_description) <= OAUTH_MAX_DESCRIPTION
                                    && printable (r.error_description)));
    CHECK (!r.scope || printable (r.scope));
    CHECK (!r.token_type || printable (r.token_type));
    CHECK (!leaks (r.detail, r.access_token) && !leaks (r.detail, r.refresh_token));
    CHECK (oauth_kind_name (r.kind) != NULL);
    (void) oauth_kind_status (r.kind, (int) (blen & 1));

    oauth_result_clear (&r);
    CHECK (r.expires_in == -1 && r.retry_after == -1 && !r.access_token);
    mem_free (body);
    return 0;
}
