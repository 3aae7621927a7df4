/* test_ctl_output.c - ferrulectl's human output of replies that lack what a well-formed one has */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "output.h"

/* What fn printed on file descriptor fd (standard output or error) for the reply given as JSON
 * text (caller frees). */
static char *
printed_on (int fd, output_fn fn, const char *reply_text, int *rc)
{
    json_error_t error;
    json_t *reply = json_loads (reply_text, 0, &error);
    assert_non_null (reply);
    FILE *tmp = tmpfile ();
    assert_non_null (tmp);
    fflush (stdout);
    fflush (stderr);
    int saved = dup (fd);
    assert_true (saved >= 0);
    assert_true (dup2 (fileno (tmp), fd) >= 0);
    output_mode_t mode = { 0 };
    *rc = fn (reply, &mode);
    fflush (stdout);
    fflush (stderr);
    assert_true (dup2 (saved, fd) >= 0);
    close (saved);
    json_decref (reply);
    long len = ftell (tmp);
    assert_true (len >= 0);
    char *text = calloc (1, (size_t) len + 1);
    assert_non_null (text);
    rewind (tmp);
    assert_int_equal (fread (text, 1, (size_t) len, tmp), (size_t) len);
    fclose (tmp);
    return text;
}

static char *
printed (output_fn fn, const char *reply_text, int *rc)
{
    return printed_on (STDOUT_FILENO, fn, reply_text, rc);
}

/* A delivery with last_error and no string state (missing, nil, a number): the check "not
 * delivered, so show the error" compared the state with strcmp without looking at its type, and
 * "ferrulectl events" crashed (SIGSEGV). The error is shown, the state as "-" or its value. */
static void
test_events_delivery_without_a_string_state (void **state)
{
    static const char *const states [] = { "", "\"state\": null, ", "\"state\": 3, ", "\"state\": [\"x\"], " };
    for (size_t i = 0; i < sizeof states / sizeof states [0]; i++) {
        char reply [512];
        snprintf (reply, sizeof reply, "{\"ok\": true, \"events\": [{\"id\": 7, \"at\": \"2030-01-01T00:00:00Z\", "
                  "\"type\": \"connected\", \"integration\": \"a:box\", \"deliveries\": [{\"endpoint\": \"app\", %s"
                  "\"attempts\": 2, \"last_error\": \"answered HTTP 500\"}]}]}", states [i]);
        int rc = -1;
        char *out = printed (output_events, reply, &rc);
        assert_int_equal (rc, 0);
        if (!strstr (out, "app: ") || !strstr (out, "(2 attempts) answered HTTP 500"))
            fail_msg ("events with the delivery state of case %zu printed: %s", i, out);
        free (out);
    }
    /* a delivered one still hides its old error */
    int rc = -1;
    char *out = printed (output_events, "{\"ok\": true, \"events\": [{\"id\": 8, \"deliveries\": [{\"endpoint\": \"app\", "
                         "\"state\": \"delivered\", \"attempts\": 2, \"last_error\": \"answered HTTP 500\"}]}]}", &rc);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (out, "app: delivered (2 attempts)"));
    assert_null (strstr (out, "HTTP 500"));
    free (out);
}

/* The same delivery in "webhook test", which prints it through the same cell. */
static void
test_webhook_test_delivery_without_a_string_state (void **state)
{
    int rc = -1;
    char *out = printed (output_webhook_test, "{\"ok\": true, \"event\": \"9\", \"endpoint\": \"app\", \"url\": "
                         "\"http://127.0.0.1:1/hooks\", \"delivery_event\": {\"id\": 9, \"deliveries\": "
                         "[{\"endpoint\": \"app\", \"state\": null, \"attempts\": 1, \"last_error\": \"timed out\"}]}}", &rc);
    assert_int_equal (rc, 0);
    if (!strstr (out, "app: - (1 attempt) timed out"))
        fail_msg ("webhook test printed: %s", out);
    free (out);
}

/* A reply that lacks the field a command prints: exit status 1 and an internal error on standard
 * error, as for "token" and "doctor". Five of them returned 1 and said nothing. */
static void
test_reply_without_its_field_says_so (void **state)
{
    static const struct { output_fn fn; const char *name; } cases [] = {
        { output_token, "token" }, { output_doctor, "doctor" }, { output_dashboard_link, "dashboard-link" },
        { output_events, "events" }, { output_replay, "events replay" }, { output_webhook_test, "webhook test" },
        { output_webhooks, "webhooks" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int rc = -1;
        char *err = printed_on (STDERR_FILENO, cases [i].fn, "{\"ok\": true}", &rc);
        assert_int_equal (rc, 1);
        if (!strstr (err, "ferrulectl: error: the service's reply has no ") || !strstr (err, "code: internal\n")
        ||  !strstr (err, "hint: "))
            fail_msg ("%s printed on standard error: \"%s\"", cases [i].name, err);
        free (err);
        char *out = printed (cases [i].fn, "{\"ok\": true}", &rc);
        if (*out)
            fail_msg ("%s printed on standard output: \"%s\"", cases [i].name, out);
        free (out);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_events_delivery_without_a_string_state),
        cmocka_unit_test (test_webhook_test_delivery_without_a_string_state),
        cmocka_unit_test (test_reply_without_its_field_says_so),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
