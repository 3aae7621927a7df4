/* test_access.c - the broker's allow-lists (keys), its policy and its audit log, and the CURVE
 * key files (curve), each on its own */
#define _GNU_SOURCE                  /* pthread_tryjoin_np */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include <jansson.h>
#include <zmq.h>
#include "audit.h"
#include "curve.h"
#include "keys.h"
#include "ops.h"
#include "policy.h"

static char dir [] = "/tmp/ferrule-test-access-XXXXXX";

static const char *
path_of (const char *name)
{
    static char p [4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf (p [i], sizeof p [i], "%s/%s", dir, name);
    return p [i];
}

static void
write_file (const char *name, const char *text)
{
    FILE *f = fopen (path_of (name), "w");
    assert_non_null (f);
    fputs (text, f);
    fclose (f);
}

static void
test_curve_keys (void **state)
{
    char err [512], pub [CURVE_Z85_LEN + 1], key [CURVE_Z85_LEN + 1];
    assert_int_equal (curve_keygen (path_of ("a"), pub, err, sizeof err), FR_OK);
    struct stat st;
    assert_int_equal (stat (path_of ("a.key"), &st), 0);
    assert_int_equal (st.st_mode & 0777, 0600);
    /* never overwrites */
    assert_int_equal (curve_keygen (path_of ("a"), NULL, err, sizeof err), FR_CONFIGURATION);
    assert_non_null (strstr (err, "never overwrites"));
    assert_int_equal (curve_read_key_file (path_of ("a.pub"), key, err, sizeof err), FR_OK);
    assert_string_equal (key, pub);
    assert_true (curve_key_valid (pub));
    /* comments and blank lines before the key are fine; garbage is not, and is not echoed */
    write_file ("c.key", "# a comment\n\n  ");
    FILE *f = fopen (path_of ("c.key"), "a");
    fprintf (f, "%s\n", pub);
    fclose (f);
    assert_int_equal (curve_read_key_file (path_of ("c.key"), key, err, sizeof err), FR_OK);
    write_file ("bad.key", "not,a,key,but,a,secret-value,0123456789\n");
    assert_int_equal (curve_read_key_file (path_of ("bad.key"), key, err, sizeof err), FR_CONFIGURATION);
    assert_null (strstr (err, "secret-value"));
    assert_int_equal (curve_read_key_file (path_of ("missing.key"), key, err, sizeof err), FR_CONFIGURATION);

    /* the environment: keys, the opt-in, or a refusal */
    curve_identity_t id;
    unsetenv (CURVE_ENV_SECRET);
    unsetenv (CURVE_ENV_BROKER_KEY);
    unsetenv (CURVE_ENV_PLAINTEXT);
    assert_int_equal (curve_identity_from_env (&id, 1, err, sizeof err), FR_CONFIGURATION);
    assert_non_null (strstr (err, "FERRULE_ALLOW_PLAINTEXT"));
    curve_env_set (NULL, "", "1");                          /* a command line's --allow-plaintext=1 */
    assert_int_equal (curve_identity_from_env (&id, 1, err, sizeof err), FR_OK);
    assert_true (id.plaintext);
    curve_env_set (path_of ("a.key"), NULL, NULL);          /* keys win over the opt-in */
    assert_string_equal (getenv (CURVE_ENV_PLAINTEXT), "1"); /* NULL leaves a variable as it is */
    assert_int_equal (curve_identity_from_env (&id, 1, err, sizeof err), FR_CONFIGURATION);
    curve_env_set ("", path_of ("a.pub"), "");
    assert_int_equal (curve_identity_from_env (&id, 1, err, sizeof err), FR_OK);
    assert_false (id.plaintext);
    assert_string_equal (id.public, pub);
    assert_string_equal (id.server, pub);
    curve_identity_clear (&id);
    unsetenv (CURVE_ENV_SECRET);
    unsetenv (CURVE_ENV_BROKER_KEY);
    unsetenv (CURVE_ENV_PLAINTEXT);
}

static void
test_keys_lists (void **state)
{
    char err [512], p1 [CURVE_Z85_LEN + 1], p2 [CURVE_Z85_LEN + 1], sec [CURVE_Z85_LEN + 1], text [512];
    assert_int_equal (zmq_curve_keypair (p1, sec), 0);
    assert_int_equal (zmq_curve_keypair (p2, sec), 0);
    snprintf (text, sizeof text, "# clients\n\nbilling %s\n  ops-alice\t%s  \n", p1, p2);
    write_file ("clients", text);
    snprintf (text, sizeof text, "worker-0 %s\n", p2);
    write_file ("workers", text);
    keys_t *k = keys_load (path_of ("clients"), path_of ("workers"), err, sizeof err);
    assert_non_null (k);
    assert_int_equal (keys_count (k, KEYS_CLIENTS), 2);
    assert_string_equal (keys_name (k, KEYS_CLIENTS, p1), "billing");
    assert_string_equal (keys_name (k, KEYS_CLIENTS, p2), "ops-alice");
    assert_string_equal (keys_name (k, KEYS_WORKERS, p2), "worker-0");
    assert_null (keys_name (k, KEYS_WORKERS, p1));
    assert_null (keys_name (k, KEYS_CLIENTS, NULL));
    assert_null (keys_name (k, KEYS_CLIENTS, "short"));
    keys_destroy (&k);
    keys_destroy (&k);

    snprintf (text, sizeof text, "billing %s\nagain %s\n", p1, p1);
    write_file ("dup", text);
    assert_null (keys_load (path_of ("dup"), NULL, err, sizeof err));
    assert_non_null (strstr (err, "line 2"));
    write_file ("bad", "billing notakey\n");
    assert_null (keys_load (path_of ("bad"), NULL, err, sizeof err));
    assert_non_null (strstr (err, "line 1"));
    /* blank lines count: an error names the line an editor shows (they were skipped, so a bad
     * fourth line after a blank one was "line 3") */
    snprintf (text, sizeof text, "# clients\n\nbilling %s\nbilling-2 notakey\n", p1);
    write_file ("blank", text);
    assert_null (keys_load (path_of ("blank"), NULL, err, sizeof err));
    assert_non_null (strstr (err, "line 4"));
    snprintf (text, sizeof text, "bad/name %s\n", p1);
    write_file ("badname", text);
    assert_null (keys_load (path_of ("badname"), NULL, err, sizeof err));
    assert_null (keys_load (path_of ("nothere"), NULL, err, sizeof err));
    /* a read error is no empty list (a folder in the file's place: EISDIR on the read) */
    assert_int_equal (mkdir (path_of ("folder"), 0700), 0);
    assert_null (keys_load (path_of ("clients"), path_of ("folder"), err, sizeof err));
    assert_non_null (strstr (err, "could not read the workers file"));
    assert_non_null (strstr (err, "Is a directory"));
}

static void
test_policy (void **state)
{
    char err [512];
    assert_true (policy_match ("acct42:*", "acct42:box", 10));
    assert_false (policy_match ("acct42:*", "acct420:box", 11));
    assert_true (policy_match ("*:box", "a:b:box", 7));
    assert_true (policy_match ("*", "x", 1));
    assert_true (policy_match ("a*b*c", "aXXbYYc", 7));
    assert_false (policy_match ("a*b*c", "aXXbYY", 6));
    assert_false (policy_match ("exact", "exactly", 7));

    write_file ("policy", "# rules\n"
                          "billing read acct42:* shared:box  # tokens only\n"
                          "billing import acct42:new\n"
                          "frontend connect,callback *\n"
                          "ops * *\n");
    policy_t *p = policy_load (path_of ("policy"), err, sizeof err);
    assert_non_null (p);
    assert_int_equal (policy_rules (p), 4);
    assert_true (policy_allows (p, "billing", OP_TOKEN, "acct42:box", 10));
    assert_true (policy_allows (p, "billing", OP_STATUS, "shared:box", 10));
    assert_false (policy_allows (p, "billing", OP_TOKEN, "acct43:box", 10));
    assert_false (policy_allows (p, "billing", OP_IMPORT, "acct42:box", 10));
    assert_true (policy_allows (p, "billing", OP_IMPORT, "acct42:new", 10));
    assert_false (policy_allows (p, "billing", OP_REFRESH, "acct42:box", 10));
    assert_false (policy_allows (p, "billing", OP_CALLBACK, NULL, 0));
    assert_true (policy_allows (p, "frontend", OP_CALLBACK, NULL, 0));
    assert_false (policy_allows (p, "frontend", OP_TOKEN, "x", 1));
    assert_true (policy_allows (p, "ops", OP_DISCONNECT, "anything", 8));
    assert_false (policy_allows (p, "ops", OP_UNKNOWN, "anything", 8));
    assert_false (policy_allows (p, "stranger", OP_PING, NULL, 0));
    policy_destroy (&p);
    policy_destroy (&p);

    /* A workspace operation's "integration" is a prefix: it reaches every id that starts with
     * it, so only a pattern that matches all of them allows it (one ending in "*" that matches the
     * prefix). A rule for the id "acct42:" alone, or for ids ending in ":", allowed an API key,
     * a dashboard and the listing of the whole workspace. */
    write_file ("pws", "one token,apikey_create,workspace,dashboard_link,apikey_list,apikey_revoke acct42:\n"
                       "colon apikey_create,workspace *:\n"
                       "ws apikey_create,workspace acct42:* acct*:x*\n"
                       "all apikey_create *\n");
    p = policy_load (path_of ("pws"), err, sizeof err);
    assert_non_null (p);
    assert_true (policy_allows (p, "one", OP_TOKEN, "acct42:", 7));             /* the id itself */
    const op_t wsops [] = { OP_APIKEY_CREATE, OP_WORKSPACE, OP_DASHBOARD_LINK, OP_APIKEY_LIST, OP_APIKEY_REVOKE };
    for (size_t i = 0; i < sizeof wsops / sizeof wsops [0]; i++)
        assert_false (policy_allows (p, "one", wsops [i], "acct42:", 7));
    assert_false (policy_allows (p, "colon", OP_APIKEY_CREATE, "acct42:", 7));
    assert_false (policy_allows (p, "colon", OP_WORKSPACE, "acct42:", 7));
    assert_true (policy_allows (p, "ws", OP_APIKEY_CREATE, "acct42:", 7));
    assert_true (policy_allows (p, "ws", OP_WORKSPACE, "acct42:", 7));
    assert_false (policy_allows (p, "ws", OP_WORKSPACE, "acct43:", 7));
    assert_false (policy_allows (p, "ws", OP_WORKSPACE, "acct7:", 6));         /* acct*:x* does not cover it */
    assert_true (policy_allows (p, "ws", OP_WORKSPACE, "acct7:x", 7));         /* a workspace within acct7: */
    assert_true (policy_allows (p, "all", OP_APIKEY_CREATE, "acct42:", 7));
    assert_true (ops_takes_workspace (OP_APIKEY_LIST));
    assert_false (ops_takes_workspace (OP_TOKEN));
    assert_false (ops_takes_workspace (OP_APIKEY_VERIFY));
    policy_destroy (&p);

    write_file ("p1", "billing frobnicate *\n");
    assert_null (policy_load (path_of ("p1"), err, sizeof err));
    assert_non_null (strstr (err, "frobnicate"));
    write_file ("p2", "billing read\n");
    assert_null (policy_load (path_of ("p2"), err, sizeof err));
    assert_non_null (strstr (err, "line 1"));
    write_file ("p3", "billing read acct/42\n");
    assert_null (policy_load (path_of ("p3"), err, sizeof err));
    write_file ("p4", "# rules\n\n\nbilling read *\nbilling read\n");
    assert_null (policy_load (path_of ("p4"), err, sizeof err));
    assert_non_null (strstr (err, "line 5"));
    assert_int_equal (mkdir (path_of ("pfolder"), 0700), 0);
    assert_null (policy_load (path_of ("pfolder"), err, sizeof err));
    assert_non_null (strstr (err, "could not read the policy file"));
    assert_non_null (strstr (err, "Is a directory"));
}

static void
test_ops (void **state)
{
    assert_int_equal (ops_lookup ("token", 5), OP_TOKEN);
    assert_int_equal (ops_lookup ("tokens", 6), OP_UNKNOWN);
    assert_int_equal (ops_lookup ("report_scope", 12), OP_REPORT_SCOPE);
    assert_string_equal (ops_name (ops_lookup ("frobnicate", 10)), "unknown");
    assert_string_equal (ops_name (OP__COUNT), "unknown");
    assert_true (ops_is_read (OP_TOKEN));
    assert_false (ops_is_read (OP_IMPORT));
    /* deployment-wide: an integration narrows events and events_replay, and the webhook
     * operations take none */
    assert_true (ops_is_deployment_wide (OP_EVENTS) && ops_is_deployment_wide (OP_EVENTS_REPLAY));
    assert_true (ops_is_deployment_wide (OP_WEBHOOKS) && ops_is_deployment_wide (OP_WEBHOOK_TEST));
    assert_false (ops_is_deployment_wide (OP_TOKEN) || ops_is_deployment_wide (OP__COUNT));
    assert_true (ops_takes_no_integration (OP_WEBHOOKS) && ops_takes_no_integration (OP_WEBHOOK_TEST));
    assert_false (ops_takes_no_integration (OP_EVENTS) || ops_takes_no_integration (OP_EVENTS_REPLAY));
    assert_false (ops_takes_no_integration (OP_TOKEN) || ops_takes_no_integration (OP_UNKNOWN));
}

static void
test_audit (void **state)
{
    char err [512];
    audit_t *a = audit_new (path_of ("audit.jsonl"), err, sizeof err);
    assert_non_null (a);
    assert_int_equal (audit_record (a, "billing", OP_TOKEN, "acct42:box", 10, "ok", "rid-1", 5), 1);
    assert_int_equal (audit_record (a, "", OP_UNKNOWN, NULL, 0, "bad_request", "q\"\n\x01\xff", 5), 1);
    assert_int_equal (audit_record (a, "ops", OP_PING, NULL, 0, "ok", NULL, 0), 1);
    audit_destroy (&a);                     /* writes what is queued */
    audit_destroy (&a);
    FILE *f = fopen (path_of ("audit.jsonl"), "r");
    assert_non_null (f);
    char line [2048];
    json_t *rec [3];
    for (int i = 0; i < 3; i++) {
        assert_non_null (fgets (line, sizeof line, f));
        json_error_t jerr;
        rec [i] = json_loads (line, 0, &jerr);
        assert_non_null (rec [i]);
    }
    assert_null (fgets (line, sizeof line, f));
    fclose (f);
    assert_string_equal (json_string_value (json_object_get (rec [0], "client")), "billing");
    assert_string_equal (json_string_value (json_object_get (rec [0], "op")), "token");
    assert_string_equal (json_string_value (json_object_get (rec [0], "integration")), "acct42:box");
    assert_string_equal (json_string_value (json_object_get (rec [0], "outcome")), "ok");
    assert_string_equal (json_string_value (json_object_get (rec [0], "rid")), "rid-1");
    assert_int_equal (strlen (json_string_value (json_object_get (rec [0], "time"))), 24);
    assert_string_equal (json_string_value (json_object_get (rec [1], "op")), "unknown");
    assert_true (json_is_null (json_object_get (rec [1], "integration")));
    /* a byte that begins no UTF-8 sequence is U+FFFD, as in the service log (log.c) */
    assert_string_equal (json_string_value (json_object_get (rec [1], "rid")), "q\"\n\x01\xef\xbf\xbd");
    assert_true (json_is_null (json_object_get (rec [2], "rid")));
    for (int i = 0; i < 3; i++)
        json_decref (rec [i]);
    assert_null (audit_new ("/nonexistent-dir/audit", err, sizeof err));
    assert_non_null (strstr (err, "could not open the audit log"));
}

/* Records one request with rid in a fresh audit log at name, and returns the record read back
 * (the caller decrefs); fails the test unless the file holds one line of JSON. */
static json_t *
audit_one (const char *name, const char *rid)
{
    char err [512], line [2048];
    audit_t *a = audit_new (path_of (name), err, sizeof err);
    assert_non_null (a);
    assert_int_equal (audit_record (a, "billing", OP_TOKEN, "acct42:box", 10, "ok", rid, strlen (rid)), 1);
    audit_destroy (&a);                     /* writes what is queued */
    FILE *f = fopen (path_of (name), "r");
    assert_non_null (f);
    char *got = fgets (line, sizeof line, f);
    int more = got && fgetc (f) != EOF;
    fclose (f);
    assert_non_null (got);
    assert_false (more);
    json_error_t jerr;
    json_t *record = json_loads (line, 0, &jerr);
    if (!record)
        fail_msg ("the audit record is not JSON (%s): %s", jerr.text, line);
    return record;
}

/* A rid is UTF-8 text (the broker refuses any other), and the record keeps it as the client sent
 * it: an operator finds the request's lines in the service log by it, which writes it as it is.
 * Each byte past ASCII was escaped as a character of its own ("caf\u00c3\u00a9" for "café"); a
 * sequence the end of the value cuts is no text, and is U+FFFD. */
static void
test_audit_rid_recorded_as_sent (void **state)
{
    const char *rid = "caf\xc3\xa9-\xe2\x9c\x93-\xf0\x9f\x94\x91";
    json_t *record = audit_one ("audit-rid.jsonl", rid);
    const char *got = json_string_value (json_object_get (record, "rid"));
    assert_non_null (got);
    if (strcmp (got, rid) != 0)
        fail_msg ("the record's rid is \"%s\", not the request's \"%s\"", got, rid);
    json_decref (record);
    record = audit_one ("audit-cut.jsonl", "r\xe2\x9c");
    assert_string_equal (json_string_value (json_object_get (record, "rid")), "r\xef\xbf\xbd\xef\xbf\xbd");
    json_decref (record);
}

static void *
destroy_audit (void *arg)
{
    audit_destroy ((audit_t **) arg);
    return NULL;
}

/* A stop while the audit log takes no write (a FIFO whose reader stopped reading: a collector of
 * standard output that stalled) ends anyway: the broker joined its writer for ever, and a second
 * SIGTERM could not end it either. */
static void
test_audit_blocked_writer_does_not_hold_the_stop (void **state)
{
    char err [512];
    const char *fifo = path_of ("audit.fifo");
    assert_int_equal (mkfifo (fifo, 0600), 0);
    int reader = open (fifo, O_RDONLY | O_NONBLOCK);      /* open, never read */
    assert_true (reader >= 0);
    audit_t *a = audit_new (fifo, err, sizeof err);
    assert_non_null (a);
    for (int i = 0; i < 4000; i++)                        /* well past a pipe's 64 KiB */
        assert_int_equal (audit_record (a, "billing", OP_TOKEN, "acct42:box", 10, "ok", "rid-1", 5), 1);
    usleep (300000);                                      /* the writer is blocked in write */
    pthread_t t;
    assert_int_equal (pthread_create (&t, NULL, destroy_audit, &a), 0);
    int ended = 0;
    for (int ms = 0; ms < 10000 && !ended; ms += 100) {
        usleep (100000);
        ended = pthread_tryjoin_np (t, NULL) == 0;
    }
    if (!ended)
        fail_msg ("audit_destroy did not return within 10 s of a stop while its writer was blocked");
    assert_null (a);
    /* the reader stays open: the writer stays blocked, holding what it was left (a process's exit
     * reclaims it; a writer that ended would leave it unreachable) */
    (void) reader;
}

static int
setup (void **state)
{
    return mkdtemp (dir) ? 0 : -1;
}

static int
teardown (void **state)
{
    char cmd [300];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system (cmd) == 0 ? 0 : -1;
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_curve_keys),
        cmocka_unit_test (test_keys_lists),
        cmocka_unit_test (test_policy),
        cmocka_unit_test (test_ops),
        cmocka_unit_test (test_audit),
        cmocka_unit_test (test_audit_rid_recorded_as_sent),
        cmocka_unit_test (test_audit_blocked_writer_does_not_hold_the_stop),
    };
    return testexit (cmocka_run_group_tests (tests, setup, teardown));
}
