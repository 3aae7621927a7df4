/* test_ctl.c - ferrulectl's own behaviour, as an operator sees it on both output streams: what
 * its usage errors say, and never say; and "webhook test", whose answer it builds from several
 * requests, against a receiver that refuses. Standard error goes to the harness's ferrulectl.log,
 * read here. Nothing of an output is printed: a failing check names what it looked for. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include "client.h"
#include "clock.h"
#include "itest.h"
#include "receiver.h"

#define MARK        "SECRET"        /* every secret given in these tests holds it */
#define HOOK_SECRET "whsec_ctl_test_0123456789abcdef"

static harness_t *h;
static long log_seen;               /* how much of ferrulectl.log the checks have read */

/* One broker, one worker, and a webhook endpoint "app" served by the test's receiver. The
 * heartbeat is 2 s, so that a worker held for 3 s (test_webhook_test_not_delivered) is not yet
 * lost: that takes three silent intervals. */
static int
setup (void **state)
{
    h = harness_new ("ctl");
    if (!h || receiver_start (0, HOOK_SECRET) != 0)
        return -1;
    char path [512], secret [512], text [1024];
    snprintf (secret, sizeof secret, "%s/webhook.secret", harness_workdir (h));
    itest_write_file (secret, HOOK_SECRET "\n");
    snprintf (path, sizeof path, "%s/webhooks.json", harness_workdir (h));
    snprintf (text, sizeof text, "{\"endpoints\": [{\"name\": \"app\", \"url\": \"http://127.0.0.1:%d/hooks\","
              " \"secret_file\": \"%s\"}]}", receiver_port (), secret);
    itest_write_file (path, text);
    harness_set_env (h, "FERRULE_WEBHOOKS_FILE", path);
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_BASE_MS", "100");
    harness_set_env (h, "FERRULE_WEBHOOK_BACKOFF_MAX_MS", "400");
    harness_set_env (h, "FERRULE_WEBHOOK_TIMEOUT_MS", "1000");
    harness_set_env (h, "FERRULE_WEBHOOK_LEASE_MS", "1500");
    harness_set_env (h, "FERRULE_EVENTS_POLL_MS", "100");
    harness_set_env (h, "FERRULE_HTTP_BIND", "127.0.0.1:0");
    harness_set_env (h, "FERRULE_HEARTBEAT_MS", "2000");
    if (harness_start_broker (h) != 0 || harness_start_worker (h, "w1") != 0)
        return -1;
    return harness_wait_ready (h, 1, 30000);
}

static int
teardown (void **state)
{
    int bad = itest_teardown (&h);
    receiver_stop ();
    return bad;
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
 * is sent (the --json run has no broker: one that sent something would time out instead), the
 * message names the option as typed, and no stream shows any of its value. */
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
    /* before the command with its value after a space: the value was read as the command, quoted
       in "unknown command", and left in the argument list */
    misspelled ("unrecognized option \"--refresh-tokn\"", "--refresh-tokn VALUE before the command",
                "--refresh-tokn", MARK "_rt_0123456789abcdef", "import", "--integration", "a:box", NULL, NULL);
    /* an option of another command, after one that does not take it */
    misspelled ("unrecognized option \"--refresh-token\"", "token --refresh-token VALUE",
                "token", "--integration", "a:box", "--refresh-token", MARK "_rt_0123456789abcdef", NULL, NULL);
    /* a token where the command goes */
    misspelled ("not shown", "a token as the command", MARK "_rt_0123456789abcdef", NULL, NULL, NULL, NULL, NULL,
                NULL);
    misspelled ("unrecognized option \"-refresh-token\"", "-refresh-token=",
                "import", "-refresh-token=" MARK "_rt_0123456789abcdef", NULL, NULL, NULL, NULL, NULL);
    /* a name too long to be any option's: cut, still without its value */
    char arg [128], want [128];
    snprintf (arg, sizeof arg, "--refresh-token-file%060d=" MARK "_rt", 0);
    snprintf (want, sizeof want, "unrecognized option \"%.60s...\"", arg);
    misspelled (want, "an overlong name=", "import", arg, NULL, NULL, NULL, NULL, NULL);
}

/* "webhook test app" without --json, timed (ms into *took); its standard output (caller frees). */
static char *
webhook_test_text (const char *timeout, int *rc, int64_t *took)
{
    char *out = NULL;
    int64_t start = clock_mono_ms ();
    assert_int_equal (harness_ctl_text (h, rc, &out, "webhook", "test", "app", "--timeout", timeout, NULL), 0);
    *took = clock_mono_ms () - start;
    return out;
}

/* A test event the endpoint keeps refusing (HTTP 500) is still pending when --timeout runs out:
 * exit 5 and the command's own line, with the last error. In text mode ferrulectl printed the
 * answer, which is a success, as an error: nothing on standard output and "the service answered
 * with an error but gave no message", code internal. And --timeout bounds the whole run: the
 * wait for the delivery had a --timeout of its own after the request's, so a slow answer could
 * double it. */
static void
test_webhook_test_not_delivered (void **state)
{
    int rc = -1;
    int64_t took;
    receiver_set (1000000, 0);
    free (ctl_stderr ());

    char *out = webhook_test_text ("2", &rc, &took);
    char *err = ctl_stderr ();
    assert_int_equal (rc, 5);
    if (strstr (err, "gave no message") || strstr (err, "code: internal"))
        fail_msg ("webhook test printed an internal error for an answer that was not one");
    if (!strstr (out, "test event ") || !strstr (out, "app: pending") || !strstr (out, "answered HTTP 500"))
        fail_msg ("webhook test's standard output is not the line of a pending delivery that names HTTP 500 (%zu bytes)",
                  strlen (out));
    free (out);
    free (err);
    json_t *r = harness_ctl (h, &rc, "webhook", "test", "app", "--timeout", "2", NULL);
    assert_int_equal (rc, 5);
    assert_true (json_is_true (json_object_get (r, "ok")));
    json_t *d = json_array_get (json_object_get (json_object_get (r, "delivery_event"), "deliveries"), 0);
    assert_string_equal (json_string_value (json_object_get (d, "state")), "pending");
    assert_non_null (strstr (json_string_value (json_object_get (d, "last_error")), "HTTP 500"));
    json_decref (r);

    /* the request itself takes 3 s of a 4 s --timeout (its worker is held): the run ends by the
     * 4 s, not 4 s after the answer came. 6 s leaves 2 s for ferrulectl's start and exit */
    harness_signal_worker (h, "w1", SIGSTOP);
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        usleep (3000000);
        harness_signal_worker (h, "w1", SIGCONT);
        _exit (0);
    }
    out = webhook_test_text ("4", &rc, &took);
    waitpid (child, NULL, 0);
    harness_signal_worker (h, "w1", SIGCONT);
    free (ctl_stderr ());
    if (!strstr (out, "test event "))
        fail_msg ("webhook test whose request took 3 s of its 4 printed no line of the test event");
    free (out);
    printf ("ctl: webhook test with a 4 s --timeout whose request took 3 s ran %lld ms, exit %d\n", (long long) took, rc);
    assert_int_equal (rc, 5);
    if (took >= 6000)
        fail_msg ("webhook test with --timeout 4 ran %lld ms: the wait for the delivery did not count the request's time",
                  (long long) took);
    /* the test events go once the endpoint answers: the next test starts with it not held */
    receiver_set (0, 0);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries WHERE state <> 'delivered'", 0, 30000), 0);
}

/* The deliveries of integration id in state (one integer). */
static long long
deliveries (const char *id, const char *state)
{
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
              " WHERE e.integration_id = '%s' AND d.state = '%s'", id, state);
    return harness_sql_int (h, sql);
}

/* "events --since T replay --integration X": options before "replay" were carried over to it,
 * and replay applies only event, integration and endpoint, so it replayed every failed delivery
 * of the integration, exit 0. An option that "events replay" does not take is refused wherever it
 * stands, before anything is sent; one it takes may still come before "replay". A client other
 * than ferrulectl that sends those filters with events_replay is refused by the worker. */
static void
test_replay_refuses_options_it_does_not_take (void **state)
{
    int rc = -1;
    receiver_set (1000000, 0);
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "rp:box", "fakebox", rt), 0);
    free (rt);
    /* its "connected" event refused once, then past the max age: failed */
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.integration_id = 'rp:box' AND d.attempts > 0", 1, 30000), 1);
    assert_int_equal (harness_sql (h, "UPDATE event_deliveries d SET first_at = first_at - interval '2 days'"
                                      " FROM events e WHERE e.seq = d.event_seq AND e.integration_id = 'rp:box'"), 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.integration_id = 'rp:box' AND d.state = 'failed'", 1, 30000), 1);
    free (ctl_stderr ());

    static const char *const before [][2] = { { "--since", "2999-01-01T00:00:00Z" }, { "--limit", "1" } };
    for (size_t i = 0; i < sizeof before / sizeof before [0]; i++) {
        json_t *r = harness_ctl (h, &rc, "events", before [i][0], before [i][1], "replay", "--integration", "rp:box", NULL);
        if (rc != 2)
            fail_msg ("\"events %s %s replay --integration rp:box\" exited %d, replayed %lld", before [i][0],
                      before [i][1], rc, (long long) json_integer_value (json_object_get (r, "replayed")));
        assert_string_equal (itest_code (r), "bad_request");
        assert_null (json_object_get (r, "replayed"));
        const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        assert_non_null (message);
        if (!strstr (message, before [i][0]) || !strstr (message, "\"events replay\" does not take"))
            fail_msg ("the refusal of %s before \"replay\" says: %s", before [i][0], message);
        json_decref (r);
        assert_int_equal (deliveries ("rp:box", "failed"), 1);
    }
    /* the same in text mode, and after "replay" as before */
    char *out = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &out, "events", "--since", "2999-01-01T00:00:00Z", "replay",
                                        "--integration", "rp:box", NULL), 0);
    assert_int_equal (rc, 2);
    assert_string_equal (out, "");
    free (out);
    char *err = ctl_stderr ();
    if (!strstr (err, "\"events replay\" does not take option \"--since\""))
        fail_msg ("standard error does not say that \"events replay\" does not take \"--since\"");
    free (err);
    json_t *r = harness_ctl (h, &rc, "events", "replay", "--integration", "rp:box", "--since", "2999-01-01T00:00:00Z", NULL);
    assert_int_equal (rc, 2);
    json_decref (r);
    assert_int_equal (deliveries ("rp:box", "failed"), 1);

    /* another client sending the filters of "events" with events_replay: the worker refuses them */
    struct client *c = itest_client_connected (harness_brokers (h));
    static const char *const keys [] = { "since", "until", "before", "limit" };
    static const char *const values [] = { "2999-01-01T00:00:00Z", "2000-01-01T00:00:00Z",
                                           "00000000-0000-0000-0000-000000000000", NULL };
    for (size_t i = 0; i < sizeof keys / sizeof keys [0]; i++) {
        json_t *args = json_pack ("{s:s}", "integration", "rp:box");
        json_object_set_new (args, keys [i], values [i] ? json_string (values [i]) : json_integer (1));
        r = client_call_ex (c, "events_replay", args, 10000, 0);
        json_decref (args);
        if (client_exit_code (r) != 2)
            fail_msg ("events_replay with \"%s\" exited %d, replayed %lld", keys [i], client_exit_code (r),
                      (long long) json_integer_value (json_object_get (r, "replayed")));
        assert_string_equal (itest_code (r), "bad_request");
        const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        assert_non_null (message);
        assert_non_null (strstr (message, keys [i]));
        assert_non_null (json_string_value (json_object_get (json_object_get (r, "error"), "hint")));
        json_decref (r);
        assert_int_equal (deliveries ("rp:box", "failed"), 1);
    }
    client_destroy (&c);

    /* an option replay takes, before "replay": sent, replayed */
    r = harness_ctl (h, &rc, "events", "--integration", "rp:box", "replay", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (r, "replayed")), 1);
    json_decref (r);
    receiver_set (0, 0);
    assert_int_equal (itest_wait_sql (h, "SELECT count(*) FROM event_deliveries d JOIN events e ON e.seq = d.event_seq"
                                         " WHERE e.integration_id = 'rp:box' AND d.state = 'delivered'", 1, 30000), 1);
}

/* "ferrulectl --help" lists every exit status docs/ferrulectl.md lists: 7 (forbidden) was left out. */
static void
test_help_names_every_exit_status (void **state)
{
    static const char *const statuses [] = { "0 ok", "2 bad usage or input", "3 not found", "4 needs user action",
                                              "5 transient or unavailable", "6 configuration", "7 forbidden", "1 internal" };
    int rc = -1;
    char *out = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &out, "--help", NULL), 0);
    assert_int_equal (rc, 0);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses [0]; i++)
        if (!strstr (out, statuses [i]))
            fail_msg ("\"ferrulectl --help\" does not list exit status \"%s\"", statuses [i]);
    free (out);
}

/* An ipc:// path longer than a Unix socket address holds (107 bytes) passed the endpoint check,
 * failed when the socket connected, and was reported as "internal", exit 1. It is a usage error
 * that says so; a path of 107 bytes is still taken (nothing listens there: exit 5). */
static void
test_overlong_ipc_endpoint_is_a_usage_error (void **state)
{
    char endpoint [256];
    snprintf (endpoint, sizeof endpoint, "ipc:///tmp/%0108d", 0);          /* a path of 113 bytes */
    int rc = -1;
    json_t *r = harness_ctl_at (h, endpoint, &rc, "--timeout", "1", "ping", NULL);
    if (rc != 2)
        fail_msg ("an ipc:// path of 113 bytes exited %d (%s)", rc, itest_code (r));
    assert_string_equal (itest_code (r), "bad_request");
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    assert_non_null (message);
    if (!strstr (message, "107"))
        fail_msg ("the refusal of an overlong ipc:// path does not give the limit: %s", message);
    json_decref (r);
    snprintf (endpoint, sizeof endpoint, "ipc:///tmp/%0102d", 0);          /* 107 bytes */
    r = harness_ctl_at (h, endpoint, &rc, "--timeout", "1", "ping", NULL);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (r), "unavailable");
    json_decref (r);
}

/* A stray argument may be a token given without its option ("token --integration X TOKEN"): the
 * message quoted up to 60 characters of it. It names its position instead. */
static void
test_stray_argument_is_not_echoed (void **state)
{
    misspelled ("unexpected argument", "token ... TOKEN",
                "token", "--integration", "a:box", MARK "_at_0123456789abcdef", NULL, NULL, NULL);
    misspelled ("not shown", "token ... TOKEN",
                "token", "--integration", "a:box", MARK "_at_0123456789abcdef", NULL, NULL, NULL);
    /* nor is an endpoint's URL over the limit (its query may hold a secret) */
    static char url [2200];
    snprintf (url, sizeof url, "https://hooks.example/x?key=%s_%02100d", MARK, 0);
    misspelled ("2048", "webhook test URL", "webhook", "test", url, NULL, NULL, NULL, NULL);
    /* nor the URL of a "webhook test" given without "test": it was quoted as the second word of
       an unknown command, query and all. A mistyped second word is still said back */
    misspelled ("not shown", "webhook URL", "webhook", "https://hooks.example.com/catch/" MARK "abc?sig=x",
                NULL, NULL, NULL, NULL, NULL);
    misspelled ("unknown command \"webhook tset\"", "webhook tset", "webhook", "tset", NULL, NULL, NULL, NULL, NULL);
}

/* What docs/ferrulectl.md says is checked before sending: exit 2 with nothing sent (the --json run
 * has no broker) */
static void
test_checked_before_sending (void **state)
{
    misspelled ("missing option \"--scope\" or \"--www-authenticate\"", "report-scope without a scope",
                "report-scope", "--integration", "a:box", NULL, NULL, NULL, NULL);
    misspelled ("missing option \"--event\" or \"--integration\"", "events replay without a filter",
                "events", "replay", NULL, NULL, NULL, NULL, NULL);
    misspelled ("https://", "--api-base-url of http://", "import", "--integration", "a:box", "--provider", "fakebox",
                "--refresh-token=" MARK "_rt_0123456789abcdef", "--api-base-url=http://api.example.com");
    misspelled ("https://", "--api-base-url with credentials", "import", "--integration", "a:box", "--provider",
                "fakebox", "--refresh-token=" MARK "_rt_0123456789abcdef",
                "--api-base-url=https://u:" MARK "@api.example.com");
}

/* "help" reads its topic from the command line: a token given after an option it does not take,
 * or as the topic itself, was quoted in "unknown command" (up to 60 characters of it) */
static void
test_help_does_not_echo_a_token (void **state)
{
    const char *const cases [][4] = {
        { "help", "--refresh-token", MARK "_rt_0123456789abcdef", NULL },
        { "help", MARK "_rt_0123456789abcdef", NULL },
        { "--help", MARK "_rt_0123456789abcdef", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int rc = -1;
        char *out = NULL;
        assert_int_equal (harness_ctl_text (h, &rc, &out, cases [i][0], cases [i][1], cases [i][2], NULL), 0);
        char *err = ctl_stderr ();
        if (strstr (out, MARK) || strstr (err, MARK))
            fail_msg ("case %zu: the output shows part of the token (exit %d)", i, rc);
        free (out);
        free (err);
    }
}

/* "help" of a command of two words: "help webhook test" and "help webhook doctor" exited 2 with
 * unknown command "webhook", and "help events replay" printed the help of "events", with options
 * that replay refuses. Each prints its own, as "COMMAND --help" does. */
static void
test_help_of_a_two_word_command (void **state)
{
    static const char *const cases [][4] = {
        /* the words, what the help must say, what it must not */
        { "webhook", "test", "ferrulectl [global options] webhook test URL-OR-NAME", NULL },
        { "webhook", "doctor", "ferrulectl [global options] webhook doctor", NULL },
        { "events", "replay", "ferrulectl [global options] events replay", "--since" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        int rc = -1;
        char *out = NULL;
        assert_int_equal (harness_ctl_text (h, &rc, &out, "help", cases [i][0], cases [i][1], NULL), 0);
        char *err = ctl_stderr ();
        if (rc != 0 || !strstr (out, cases [i][2]) || (cases [i][3] && strstr (out, cases [i][3])))
            fail_msg ("\"help %s %s\" exited %d; its standard output does not say \"%s\"%s%s; standard error: %s",
                      cases [i][0], cases [i][1], rc, cases [i][2], cases [i][3] ? " or shows " : "",
                      cases [i][3] ? cases [i][3] : "", err);
        free (out);
        free (err);
    }
    /* the first word alone names no command: said, and the commands it starts are named */
    int rc = -1;
    char *out = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &out, "help", "webhook", NULL), 0);
    assert_int_equal (rc, 2);
    free (out);
    char *err = ctl_stderr ();
    if (!strstr (err, "\"webhook\" needs a second word") || !strstr (err, "webhook test"))
        fail_msg ("\"help webhook\" says: %s", err);
    free (err);
}

/* The process's argument list (NULs between arguments turned into spaces) of ferrulectl run with
 * args, read while it is blocked writing to a full pipe, that is once it has parsed them and
 * printed (or begun to print) its answer. 1 when the list no longer holds MARK within 3 s. */
static int
argv_blanked (const char *const *args)
{
    int p [2];
    assert_int_equal (pipe (p), 0);
    /* fill the pipe: any write of ferrulectl's blocks, so it is still there to be looked at */
    int flags = fcntl (p [1], F_GETFL);
    assert_int_equal (fcntl (p [1], F_SETFL, flags | O_NONBLOCK), 0);
    char block [4096];
    memset (block, 'x', sizeof block);
    while (write (p [1], block, sizeof block) > 0 || write (p [1], block, 1) > 0)
        ;
    assert_int_equal (fcntl (p [1], F_SETFL, flags), 0);
    char *argv [16];
    size_t n = 0;
    argv [n++] = (char *) FERRULE_CTL_BIN;
    for (; args [n - 1] && n < 15; n++)
        argv [n] = (char *) args [n - 1];
    argv [n] = NULL;
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) {
        dup2 (p [1], STDOUT_FILENO);
        dup2 (p [1], STDERR_FILENO);
        close (p [0]);
        close (p [1]);
        setenv ("FERRULE_ALLOW_PLAINTEXT", "1", 1);
        execv (FERRULE_CTL_BIN, argv);
        _exit (127);
    }
    close (p [1]);
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/cmdline", (int) pid);
    int blanked = 0;
    for (int64_t deadline = clock_mono_ms () + 3000; !blanked && clock_mono_ms () < deadline; usleep (20000)) {
        char text [4096];
        FILE *f = fopen (path, "r");
        size_t len = f ? fread (text, 1, sizeof text - 1, f) : 0;
        if (f)
            fclose (f);
        text [len] = '\0';
        if (strcmp (text, FERRULE_CTL_BIN) != 0)
            continue;                       /* not yet the new program (or gone: then never blanked) */
        for (size_t i = 0; i < len; i++)
            if (text [i] == '\0')
                text [i] = ' ';
        blanked = !strstr (text, MARK);
    }
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    close (p [0]);
    return blanked;
}

/* --refresh-token, --reject and --url values are blanked from the argument list while the
 * command line is read. They stayed in /proc/PID/cmdline (ps shows them) once an earlier usage
 * error was recorded, or with --help, because the blanking happened only where they were used;
 * and when the option table refused one (given twice, or with the option it excludes). The URL
 * of "webhook test" was never blanked. */
static void
test_secret_values_are_blanked_whatever_else_is_wrong (void **state)
{
    char file [512];
    snprintf (file, sizeof file, "%s/rejected-token", harness_workdir (h));
    itest_write_file (file, "at_0123456789abcdef\n");
    const char *const cases [][10] = {
        { "token", "--integration", "bad id!", "--reject", MARK "_at_0123456789abcdef", NULL },
        { "token", "--integration", "a:box", "--reject", MARK "_at_0123456789abcdef", "--help", NULL },
        { "import", "--bogus", "--integration", "a:box", "--provider", "fakebox", "--refresh-token",
          MARK "_rt_0123456789abcdef", NULL },
        { "callback", "--bogus", "--url", "https://app.example.com/cb?code=" MARK "_code&state=s", NULL },
        { "--refresh-token", MARK "_rt_0123456789abcdef", "import", "--integration", "a:box", NULL },
        { "import", "--integration", "a:box", "--refresh-tokn=" MARK "_rt_0123456789abcdef", NULL },
        { "token", "--integration", "a:box", MARK "_at_0123456789abcdef", NULL },
        /* refused by the option table itself: given twice, or with the option it excludes */
        { "token", "--integration", "a:box", "--reject", "at_1", "--reject", MARK "_at_0123456789abcdef", NULL },
        { "token", "--integration", "a:box", "--reject-file", file, "--reject", MARK "_at_0123456789abcdef", NULL },
        { "callback", "--url", "https://app.example.com/cb?code=c1&state=s", "--url",
          "https://app.example.com/cb?code=" MARK "_code&state=s", NULL },
        /* a misspelled option's value after a space, before the command; help's topic */
        { "--refresh-tokn", MARK "_rt_0123456789abcdef", "import", "--integration", "a:box", NULL },
        { "help", "--refresh-token", MARK "_rt_0123456789abcdef", NULL },
        { "help", MARK "_rt_0123456789abcdef", NULL },
        { MARK "_rt_0123456789abcdef", NULL },
        /* an endpoint's URL may hold its secret in its query */
        { "webhook", "test", "https://hooks.example/x?key=" MARK "_0123456789abcdef", NULL },
        /* and when "test" is left out */
        { "webhook", "https://hooks.example/x?key=" MARK "_0123456789abcdef", NULL },
    };
    char failed [64] = "";
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        if (!argv_blanked (cases [i]))
            snprintf (failed + strlen (failed), sizeof failed - strlen (failed), " %zu", i);
    if (failed [0])
        fail_msg ("cases%s: the secret is still in the process's argument list", failed);
}

/* The error of a request that changes something and timed out at the service: the outcome is
 * unknown, the service's reason (reason) is kept, and the hint says to check id first. */
static void
expect_outcome_unknown (const json_t *r, const char *op, const char *reason, const char *id)
{
    const json_t *e = json_object_get (r, "error");
    const char *message = json_string_value (json_object_get (e, "message"));
    const char *hint = json_string_value (json_object_get (e, "hint"));
    char unknown [96], check [200];
    snprintf (unknown, sizeof unknown, "the outcome of the \"%s\" request is unknown", op);
    snprintf (check, sizeof check, "may have been carried out: check with \"ferrulectl status --integration %s\" "
              "before retrying", id);
    if (strcmp (itest_code (r), "timeout") != 0)
        fail_msg ("the \"%s\" run ended with \"%s\", not a timeout", op, itest_code (r));
    if (!message || !strstr (message, unknown) || !strstr (message, reason))
        fail_msg ("a timed-out \"%s\" says \"%s\": not that its outcome is unknown, or not why", op, message ? message : "");
    if (!hint || !strstr (hint, check))
        fail_msg ("a timed-out \"%s\" hints \"%s\", not to check it before retrying", op, hint ? hint : "");
}

/* A change that times out at the service (the worker's own "timeout" while its provider call
 * runs, or the broker's when the worker does not answer) may have been carried out. Both clients
 * send a deadline below their own timeout so that the service's answer, which says where the
 * time went, comes first: it was shown as it came, with the hint to retry ("raise --timeout"),
 * and the "outcome is unknown, check before retrying" of docs/ferrulectl.md appeared only when
 * the service said nothing. A read keeps the service's wording, whose default hint names no
 * ferrulectl flag: the broker sends it to every client, the Python one and the gateway's too. */
static void
test_timed_out_change_says_its_outcome_is_unknown (void **state)
{
    int rc = -1;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "slow:box", "fakebox", rt), 0);
    free (rt);

    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 10000));
    json_t *r = harness_ctl (h, &rc, "--timeout", "1", "refresh", "--integration", "slow:box", NULL);
    itest_fake_release (h);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    assert_int_equal (rc, 5);
    expect_outcome_unknown (r, "refresh", "provider \"fakebox\"", "slow:box");
    json_decref (r);

    /* the worker stopped: the broker answers at the deadline */
    rt = itest_grant (h, "fakebox", NULL);
    harness_signal_worker (h, "w1", SIGSTOP);
    r = harness_ctl (h, &rc, "--timeout", "1", "import", "--integration", "stopped:box", "--provider", "fakebox",
                     "--refresh-token", rt, NULL);
    json_t *read = harness_ctl (h, NULL, "--timeout", "1", "status", "--integration", "slow:box", NULL);
    harness_signal_worker (h, "w1", SIGCONT);
    free (rt);
    assert_int_equal (rc, 5);
    expect_outcome_unknown (r, "import", "did not answer within the deadline", "stopped:box");
    json_decref (r);
    const json_t *e = json_object_get (read, "error");
    const char *message = json_string_value (json_object_get (e, "message"));
    const char *hint = json_string_value (json_object_get (e, "hint"));
    assert_string_equal (itest_code (read), "timeout");
    if (!message || strstr (message, "unknown") || !hint || !*hint || strstr (hint, "--") || strstr (hint, "ferrulectl"))
        fail_msg ("a timed-out status says \"%s\", hint \"%s\"", message ? message : "", hint ? hint : "");
    json_decref (read);
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
}

/* "callback --url" puts the authorization code on the command line (shell history, process
 * accounting): "--url-file PATH" reads the URL from a file instead, checked as --url is. */
static void
test_callback_url_from_a_file (void **state)
{
    int rc = -1;
    char path [512];
    snprintf (path, sizeof path, "%s/callback-url", harness_workdir (h));
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "file:box", "--provider", "fakebox",
                             "--redirect-uri", "http://127.0.0.1/callback", NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (c);

    /* no state: refused before sending, naming the option */
    const char *no_state = strstr (location, "state=");
    assert_non_null (no_state);
    char *cut = strndup (location, (size_t) (no_state - location));
    itest_write_file (path, cut);
    free (cut);
    json_t *r = harness_ctl (h, &rc, "callback", "--url-file", path, NULL);
    assert_int_equal (rc, 2);
    const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    if (!message || !strstr (message, "--url-file") || !strstr (message, "\"state\""))
        fail_msg ("a URL file without a state is refused with \"%s\"", message ? message : "");
    json_decref (r);
    /* with --url as well */
    r = harness_ctl (h, &rc, "callback", "--url", "https://app.example.com/cb?code=c&state=s", "--url-file", path, NULL);
    assert_int_equal (rc, 2);
    message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    assert_non_null (message);
    assert_non_null (strstr (message, "cannot be used together"));
    json_decref (r);
    /* over the cap */
    char *big = malloc (70000);
    assert_non_null (big);
    memset (big, 'a', 69999);
    memcpy (big, "https://", 8);
    big [69999] = '\0';
    itest_write_file (path, big);
    free (big);
    r = harness_ctl (h, &rc, "callback", "--url-file", path, NULL);
    assert_int_equal (rc, 2);
    message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    if (!message || !strstr (message, "too large"))
        fail_msg ("a URL file of 69999 bytes is refused with \"%s\"", message ? message : "");
    json_decref (r);

    /* a parameter twice: refused, as the Python client refuses it (which of the two the provider
     * meant cannot be told; the first was sent) */
    r = harness_ctl (h, &rc, "callback", "--url", "https://app.example.com/cb?code=c1&state=s&code=c2", NULL);
    message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
    if (rc != 2 || !message || !strstr (message, "\"code\" parameter twice"))
        fail_msg ("a URL with code twice: exit %d, \"%s\"", rc, message ? message : "");
    json_decref (r);

    /* the whole URL, with the line end an editor leaves */
    char *line = malloc (strlen (location) + 2);
    assert_non_null (line);
    sprintf (line, "%s\n", location);
    itest_write_file (path, line);
    free (line);
    free (location);
    r = harness_ctl (h, &rc, "callback", "--url-file", path, NULL);
    if (rc != 0)
        fail_msg ("callback --url-file exited %d (%s)", rc, itest_code (r));
    assert_string_equal (json_string_value (json_object_get (json_object_get (r, "integration"), "id")), "file:box");
    json_decref (r);
    r = harness_ctl (h, &rc, "status", "--integration", "file:box", NULL);
    assert_int_equal (rc, 0);
    assert_string_equal (json_string_value (json_object_get (json_object_get (r, "integration"), "status")), "active");
    json_decref (r);
}

/* "webhook test" follows its event with "events" requests. A client whose policy allows
 * webhook_test but not events had each of them refused "forbidden", dropped unread: the run
 * polled until --timeout, then said the delivery was "not looked up in time", exit 5. The first
 * error that waiting cannot mend ends it: shown (and in --json), with its exit status. */
static void
test_webhook_test_shows_a_refused_events_lookup (void **state)
{
    int rc = -1;
    assert_int_equal (harness_add_client (h, "hooktester"), 0);
    assert_int_equal (harness_write_policy (h, HARNESS_CLIENT " * *\nhooktester webhook_test *\n"), 0);
    harness_reload_brokers (h);
    assert_int_equal (harness_use_client (h, "hooktester"), 0);
    int64_t end = clock_mono_ms () + 10000;
    do {                                /* until the broker has read the new lists */
        json_decref (harness_ctl (h, &rc, "ping", NULL));
        if (rc != 0)
            usleep (100000);
    } while (rc != 0 && clock_mono_ms () < end);
    assert_int_equal (rc, 0);

    json_t *r = harness_ctl (h, &rc, "--timeout", "5", "webhook", "test", "app", NULL);
    assert_true (json_is_true (json_object_get (r, "ok")));        /* the test event was sent */
    if (rc != 7)
        fail_msg ("webhook test whose events lookups are refused exited %d", rc);
    const json_t *e = json_object_get (r, "delivery_error");
    assert_string_equal (json_string_value (json_object_get (e, "code")), "forbidden");
    assert_non_null (json_string_value (json_object_get (e, "message")));
    json_decref (r);

    free (ctl_stderr ());
    char *out = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &out, "--timeout", "5", "webhook", "test", "app", NULL), 0);
    char *err = ctl_stderr ();
    assert_int_equal (rc, 7);
    if (!strstr (out, "test event ") || strstr (out, "not looked up in time"))
        fail_msg ("webhook test whose events lookups are refused printed no line of its event, or blamed the time");
    if (!strstr (err, "code: forbidden") || !strstr (err, "\"events\""))
        fail_msg ("webhook test whose events lookups are refused does not show that refusal on standard error");
    free (out);
    free (err);

    assert_int_equal (harness_use_client (h, HARNESS_CLIENT), 0);
    assert_int_equal (harness_write_policy (h, HARNESS_CLIENT " * *\n"), 0);
    harness_reload_brokers (h);
}

/* dashboard-link builds its link on FERRULE_GATEWAY_PUBLIC_URL. One that is no absolute http(s)
 * URL, or has a query or fragment the link cannot follow, is a configuration error found before
 * anything is sent: the link was minted and printed as "ferrule.example.com/dashboard/open?..."
 * (a relative link), exit 0. */
static void
test_dashboard_link_refuses_a_bad_gateway_url (void **state)
{
    static const char *const bad [] = { "ferrule.example.com", "https://", "https://ferrule.example.com/?x=1",
                                        "https://ferrule.example.com/#top", "https://ferrule example.com" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        int rc = -1;
        setenv ("FERRULE_GATEWAY_PUBLIC_URL", bad [i], 1);
        json_t *r = harness_ctl (h, &rc, "dashboard-link", "--workspace", "dl:", NULL);
        unsetenv ("FERRULE_GATEWAY_PUBLIC_URL");
        const char *message = json_string_value (json_object_get (json_object_get (r, "error"), "message"));
        if (rc != 6 || strcmp (itest_code (r), "configuration") != 0 || !message
        ||  !strstr (message, "FERRULE_GATEWAY_PUBLIC_URL"))
            fail_msg ("dashboard-link with FERRULE_GATEWAY_PUBLIC_URL=\"%s\" exited %d, code \"%s\"%s", bad [i], rc,
                      itest_code (r), json_object_get (r, "url") ? ", and printed a link" : "");
        json_decref (r);
    }
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM gateway_dashboard_links WHERE workspace = 'dl:'"), 0);
    free (ctl_stderr ());

    /* a good one, with a trailing slash */
    int rc = -1;
    setenv ("FERRULE_GATEWAY_PUBLIC_URL", "https://ferrule.example.com/", 1);
    json_t *r = harness_ctl (h, &rc, "dashboard-link", "--workspace", "dl:", NULL);
    unsetenv ("FERRULE_GATEWAY_PUBLIC_URL");
    assert_int_equal (rc, 0);
    const char *url = json_string_value (json_object_get (r, "url"));
    assert_non_null (url);
    assert_int_equal (strncmp (url, "https://ferrule.example.com/dashboard/open?link=", 48), 0);
    json_decref (r);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_misspelled_option_keeps_its_value_out),
        cmocka_unit_test (test_webhook_test_not_delivered),
        cmocka_unit_test (test_replay_refuses_options_it_does_not_take),
        cmocka_unit_test (test_help_names_every_exit_status),
        cmocka_unit_test (test_overlong_ipc_endpoint_is_a_usage_error),
        cmocka_unit_test (test_stray_argument_is_not_echoed),
        cmocka_unit_test (test_help_does_not_echo_a_token),
        cmocka_unit_test (test_help_of_a_two_word_command),
        cmocka_unit_test (test_checked_before_sending),
        cmocka_unit_test (test_secret_values_are_blanked_whatever_else_is_wrong),
        cmocka_unit_test (test_timed_out_change_says_its_outcome_is_unknown),
        cmocka_unit_test (test_callback_url_from_a_file),
        cmocka_unit_test (test_dashboard_link_refuses_a_bad_gateway_url),
        cmocka_unit_test (test_webhook_test_shows_a_refused_events_lookup),      /* last: it changes the policy */
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
