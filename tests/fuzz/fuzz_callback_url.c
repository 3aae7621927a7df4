/* fuzz_callback_url.c - the URL the provider redirected the browser to, as "ferrulectl callback
 * --url" reads it: the query's state, code, error and error_description (ctl/opts.c) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "mem.h"
#include "opts.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_callback_url: %s\n", #cond); abort (); } } while (0)

static const opt_spec_t specs [] = {
    { .name = "url", .metavar = "URL", .kind = OPT_CALLBACK_URL, .key = "state", .required = 1 },
    { .name = NULL }
};

/* A filled argument: a non-empty string without control characters, at most max bytes. */
static void
check_arg (json_t *args, const char *key, size_t max, int ascii)
{
    json_t *v = json_object_get (args, key);
    if (!v)
        return;
    CHECK (json_is_string (v));
    const char *s = json_string_value (v);
    size_t len = json_string_length (v);
    CHECK (len > 0 && len <= max && strlen (s) == len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        CHECK (c >= 0x20 && c != 0x7f && (!ascii || c < 0x7f));
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    opts_state_t st;
    char err [512] = "";
    char *url = mem_alloc (size + 1);       /* argv: NUL-terminated, cut at the first NUL */
    memcpy (url, data, size);
    size_t url_len = strlen (url);

    opts_state_init (&st);
    int rc = opts_apply (&st, &specs [0], url, err, sizeof err);
    /* the value is wiped once read: the code must not stay in the process list */
    for (size_t i = 0; i < url_len; i++)
        CHECK (url [i] == '\0');
    if (rc == 0) {
        CHECK (opts_finish (&st, specs, err, sizeof err) == 0);
        CHECK (json_object_get (st.args, "code") || json_object_get (st.args, "error"));
        check_arg (st.args, "state", 256, 1);
        check_arg (st.args, "code", 16384, 1);
        check_arg (st.args, "error", 128, 1);
        check_arg (st.args, "error_description", 2048, 0);
    }
    else {
        CHECK (err [0]);
        /* the message names the option and the parameter, never a value from the URL */
        for (const char *c = err; *c; c++)
            CHECK ((unsigned char) *c >= 0x20 && (unsigned char) *c < 0x7f);
    }
    opts_state_clear (&st, specs);
    mem_free (url);
    return 0;
}
