/* fuzz_catalog.c - a provider override file (FERRULE_PROVIDERS_FILE) as catalog_new reads it
 * (catalog_new_from_buffer), then the requests and URLs built from every entry it accepts */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "catalog.h"
#include "mem.h"
#include "oauth.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_catalog: %s\n", #cond); abort (); } } while (0)

/* How many times needle occurs in the len bytes of hay. */
static size_t
occurrences (const char *hay, size_t len, const char *needle)
{
    size_t n = strlen (needle), count = 0;
    for (size_t i = 0; n && i + n <= len; i++)
        if (memcmp (hay + i, needle, n) == 0)
            count++;
    return count;
}

/* 1 when a client secret of the file (4 bytes or more) appears in text. A secret that the
 * file also holds elsewhere (in a field name, say) is not one a message could only copy from
 * the value. */
static int
leaks_secret (json_t *in, const char *data, size_t size, const char *text)
{
    const char *name;
    json_t *entry;
    int found = 0;
    if (!json_is_object (in))
        return 0;
    json_object_foreach (in, name, entry) {
        const char *secret = json_string_value (json_object_get (entry, "client_secret"));
        if (secret && strlen (secret) >= 4 && occurrences (data, size, secret) == 1
        &&  strstr (text, secret))
            found = 1;
    }
    return found;
}

/* Builds what the worker builds from an entry; none may fail on an entry the catalog took. */
static void
use_provider (const catalog_provider_t *p)
{
    static const char *const scopes [] = { "read", "write offline" };
    char err [256];

    CHECK (p->name && p->authorization_url && p->token_url && p->scope_separator);
    char *url = oauth_authorization_url (p, "fuzz-client", "https://app.example/cb", "st4te",
                                         scopes, 2, p->pkce ? "challenge" : NULL);
    CHECK (url && strncmp (url, p->authorization_url, strlen (p->authorization_url)) == 0);
    mem_free (url);
    if (catalog_check_credentials (p, err, sizeof err) != FR_OK) {
        CHECK (err [0]);
        return;
    }
    oauth_request_t *r = oauth_refresh_request_new (p, "refresh-token");
    CHECK (r && r->body && r->url);
    CHECK ((p->auth_method == CATALOG_AUTH_BASIC) == (r->authorization != NULL));
    oauth_request_destroy (&r);
    r = oauth_code_request_new (p, "code", "https://app.example/cb", p->pkce ? "verifier" : NULL);
    CHECK (r);
    oauth_request_destroy (&r);
    r = oauth_revocation_request_new (p, "token", "refresh_token");
    CHECK ((r != NULL) == (p->revocation_url != NULL));
    oauth_request_destroy (&r);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err [512] = "";
    catalog_t *c = catalog_new_from_buffer ((const char *) data, size, "fuzz.json", err, sizeof err);
    json_t *in = json_loadb ((const char *) data, size, 0, NULL);

    if (!c) {
        CHECK (err [0]);
        CHECK (!leaks_secret (in, (const char *) data, size, err));
        json_decref (in);
        return 0;
    }
    CHECK (catalog_count (c) > 0 && catalog_count (c) <= CATALOG_MAX_PROVIDERS);
    for (size_t i = 0; i < catalog_count (c); i++) {
        const catalog_provider_t *p = catalog_at (c, i);
        CHECK (catalog_find (c, p->name) == p);
        if (i > 0)
            CHECK (strcmp (catalog_at (c, i - 1)->name, p->name) < 0);
        /* the built-in entries the file leaves alone are not worth the time of every run */
        if (json_is_object (in) && json_object_get (in, p->name))
            use_provider (p);
    }
    catalog_destroy (&c);
    CHECK (!c);
    json_decref (in);
    return 0;
}
