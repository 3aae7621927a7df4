/* fuzz_catalog.c - a provider override file (FERRULE_PROVIDERS_FILE) as catalog_new reads it
 * (catalog_new_from_buffer), then the requests and URLs built from every entry it accepts; no
 * message may depend on a client secret */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "catalog.h"
#include "mem.h"
#include "oauth.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_catalog: %s\n", #cond); abort (); } } while (0)

/* The same file with every client secret replaced by another of the same length (every byte
 * changed, still ASCII without NUL), as a new JSON text; NULL when there is no secret. */
static char *
other_secrets (json_t *in)
{
    const char *name;
    json_t *entry;
    int changed = 0;
    json_t *copy = json_deep_copy (in);
    json_object_foreach (copy, name, entry) {
        json_t *v = json_object_get (entry, "client_secret");
        if (!json_is_string (v) || json_string_length (v) == 0)
            continue;
        size_t len = json_string_length (v);
        char *s = mem_strndup (json_string_value (v), len);
        for (size_t i = 0; i < len; i++)
            s [i] = s [i] == 'x' ? 'y' : 'x';
        json_object_set_new (entry, "client_secret", json_stringn (s, len));
        mem_free (s);
        changed = 1;
    }
    char *text = changed ? json_dumps (copy, JSON_COMPACT) : NULL;
    json_decref (copy);
    return text;
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
    json_t *in = json_loadb ((const char *) data, size, JSON_REJECT_DUPLICATES, NULL);

    /* no message depends on a client secret's value: other secrets give the same outcome */
    char *other = json_is_object (in) ? other_secrets (in) : NULL;
    if (other) {
        char err2 [512] = "";
        catalog_t *c2 = catalog_new_from_buffer (other, strlen (other), "fuzz.json", err2, sizeof err2);
        CHECK ((c == NULL) == (c2 == NULL));
        CHECK (strcmp (err, err2) == 0);
        catalog_destroy (&c2);
        free (other);
    }
    if (!c) {
        CHECK (err [0]);
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
