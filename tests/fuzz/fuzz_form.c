/* fuzz_form.c - the fake provider's readers of what a client sends it: form bodies and query
 * strings (form_parse) and "Authorization: Basic" credentials (form_basic_credentials); what
 * form_encode_append writes must parse back to the same value */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "form.h"
#include "mem.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_form: %s\n", #cond); abort (); } } while (0)

/* name=value encoded, parsed again: the same value comes back. */
static void
round_trip (const char *name, const char *value)
{
    static char text [6 * FORM_MAX_VALUE + 8];
    form_t *again = NULL;
    text [0] = '\0';
    if (form_encode_append (text, sizeof text, name) != 0)
        return;
    size_t n = strlen (text);
    CHECK (n + 1 < sizeof text);
    text [n] = '=';
    text [n + 1] = '\0';
    if (form_encode_append (text, sizeof text, value) != 0)
        return;
    CHECK (form_parse (text, strlen (text), &again) == FORM_OK);
    const char *v = form_get (again, name);
    CHECK (v && strcmp (v, value) == 0);
    form_destroy (&again);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static const char *const names [] = { "grant_type", "code", "redirect_uri", "client_id",
                                          "client_secret", "refresh_token", "code_verifier",
                                          "state", "scope", "token", NULL };
    form_t *form = NULL;
    form_status_t st = form_parse ((const char *) data, size, &form);

    CHECK (st >= FORM_OK && st <= FORM_TOO_LARGE && form_status_text (st));
    if (st == FORM_OK) {
        CHECK (form);
        for (int i = 0; names [i]; i++) {
            const char *v = form_get (form, names [i]);
            if (v) {
                CHECK (strlen (v) <= FORM_MAX_VALUE);
                round_trip (names [i], v);
            }
        }
        form_destroy (&form);
        CHECK (!form);
    }
    else
        CHECK (!form);

    /* the same bytes as an Authorization header value */
    char *header = mem_alloc (size + 1);
    char *id = NULL, *secret = NULL;
    memcpy (header, data, size);
    if (form_basic_credentials (header, &id, &secret) == 0) {
        CHECK (id && secret);
        CHECK (strlen (id) <= FORM_MAX_VALUE && strlen (secret) <= FORM_MAX_VALUE);
        mem_free_secret (&id);
        mem_free_secret (&secret);
    }
    else
        CHECK (!id && !secret);
    mem_free (header);
    return 0;
}
