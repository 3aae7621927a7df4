/* test_ctl.c - ferrulectl's own behaviour, as an operator sees it on both output streams: what
 * its usage errors say, and never say. Standard error goes to the harness's ferrulectl.log, read
 * here. Nothing of an output is printed: a failing check names what it looked for. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "itest.h"

#define MARK        "SECRET"        /* every secret given in these tests holds it */

static harness_t *h;
static long log_seen;               /* how much of ferrulectl.log the checks have read */

static int
setup (void **state)
{
    h = harness_new ("ctl");
    return h ? 0 : -1;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* What ferrulectl wrote to standard error since the last call (caller frees). */
static char *
ctl_stderr (void)
{
    char path [512];
    snprintf (path, sizeof path, "%s/ferrulectl.log", harness_workdir (h));
    FILE *f = fopen (path, "r");
    if (!f)
        return strdup ("");
    fseek (f, 0, SEEK_END);
    long end = ftell (f);
    long len = end > log_seen ? end - log_seen : 0;
    char *text = calloc (1, (size_t) len + 1);
    assert_non_null (text);
    fseek (f, log_seen, SEEK_SET);
    size_t got = fread (text, 1, (size_t) len, f);
    text [got] = '\0';
    fclose (f);
    log_seen = end;
    return text;
}

/* The text must hold want and must not hold MARK; stream names it in a failure. */
static void
expect_named_not_echoed (const char *text, const char *want, const char *stream, const char *what)
{
    if (strstr (text, MARK))
        fail_msg ("%s: %s shows part of the value given to the option", what, stream);
    if (!strstr (text, want))
        fail_msg ("%s: %s does not say %s", what, stream, want);
}

/* One misspelled option holding a secret, run with --json and without: exit 2 before anything
 * is sent (no broker: a run that sent something would time out instead), the message names the
 * option as typed, and no stream shows any of its value. */
static void
misspelled (const char *want, const char *what, const char *a0, const char *a1, const char *a2, const char *a3,
            const char *a4, const char *a5, const char *a6)
{
    int rc = -1;
    char *out = NULL;
    json_t *r = harness_ctl_at (h, NULL, &rc, "--timeout", "2", a0, a1, a2, a3, a4, a5, a6, NULL);
    assert_int_equal (rc, 2);
    assert_string_equal (itest_code (r), "bad_request");
    char *json = json_dumps (r, JSON_COMPACT);
    if (strstr (json, MARK))
        fail_msg ("%s: the --json output shows part of the value given to the option", what);
    free (json);
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    expect_named_not_echoed (message ? message : "", want, "the --json message", what);
    json_decref (r);
    char *err = ctl_stderr ();
    if (strstr (err, MARK))
        fail_msg ("%s: standard error of the --json run shows part of the value", what);
    free (err);

    assert_int_equal (harness_ctl_text (h, &rc, &out, "--timeout", "2", a0, a1, a2, a3, a4, a5, a6, NULL), 0);
    assert_int_equal (rc, 2);
    if (strstr (out, MARK))
        fail_msg ("%s: standard output shows part of the value given to the option", what);
    free (out);
    err = ctl_stderr ();
    expect_named_not_echoed (err, want, "standard error", what);
    free (err);
}

/* An option name mistyped with its value after "=" (as scripts write it): the message quoted the
 * whole argument, up to 60 characters of a refresh token, a rejected access token or an
 * authorization code. It names the option only. */
static void
test_misspelled_option_keeps_its_value_out (void **state)
{
    misspelled ("unrecognized option \"--refresh-tokn\"", "import --refresh-tokn=",
                "import", "--integration", "a:box", "--provider", "fakebox", "--refresh-tokn=" MARK "_rt_0123456789abcdef", NULL);
    misspelled ("unrecognized option \"--rejct\"", "token --rejct=",
                "token", "--integration", "a:box", "--rejct=" MARK "_at_0123456789abcdef", NULL, NULL, NULL);
    misspelled ("unrecognized option \"--ur\"", "callback --ur=",
                "callback", "--ur=https://app.example.com/cb?code=" MARK "_code_0123&state=s", NULL, NULL, NULL, NULL, NULL);
    /* before the command, and with one dash */
    misspelled ("unrecognized option \"--refresh-tokn\"", "--refresh-tokn= before the command",
                "--refresh-tokn=" MARK "_rt_0123456789abcdef", "import", NULL, NULL, NULL, NULL, NULL);
    misspelled ("unrecognized option \"-refresh-token\"", "-refresh-token=",
                "import", "-refresh-token=" MARK "_rt_0123456789abcdef", NULL, NULL, NULL, NULL, NULL);
    /* a name too long to be any option's: cut, still without its value */
    char arg [128], want [128];
    snprintf (arg, sizeof arg, "--refresh-token-file%060d=" MARK "_rt", 0);
    snprintf (want, sizeof want, "unrecognized option \"%.60s...\"", arg);
    misspelled (want, "an overlong name=", "import", arg, NULL, NULL, NULL, NULL, NULL);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_misspelled_option_keeps_its_value_out),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
