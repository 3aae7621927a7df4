/* test_doctor.c - ferrulectl doctor: the diagnosis of an integration in the troubleshooting
 * guide's form (symptom, cause, what to do, facts), for each state the service can tell apart,
 * as JSON and as the text an operator reads. Replies hold tokens: they are never printed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>
#include "itest.h"

#define REDIRECT    "http://127.0.0.1/callback"
#define GOOGLE_HINT "https://myaccount.google.com/permissions"

static harness_t *h;

/* --- helpers ------------------------------------------------------------------------------- */

/* A connect of id (fakebox) whose callback brings a code the provider refuses (code): asserts the
 * callback's code_expired_or_used. */
static void
connect_refused_code (const char *id, const char *code)
{
    int rc;
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", id, "--provider", "fakebox",
                             "--redirect-uri", REDIRECT, NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    const char *state_at = strstr (location, "state=");
    assert_non_null (state_at);
    char url [1024];
    snprintf (url, sizeof url, REDIRECT "?code=%s&%s", code, state_at);
    json_t *r = harness_ctl (h, &rc, "callback", "--url", url, NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "code_expired_or_used");
    free (location);
    json_decref (c);
    json_decref (r);
}

/* connect + browser + callback; returns ferrulectl's exit code of the callback. */
static int
connect_flow (const char *id, const char *provider)
{
    int rc;
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", id, "--provider", provider, "--redirect-uri", REDIRECT, NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_t *r = harness_ctl (h, &rc, "callback", "--url", location, NULL);
    free (location);
    json_decref (c);
    json_decref (r);
    return rc;
}

static json_t *
doctor (const char *id, int *rc)
{
    return harness_ctl (h, rc, "doctor", "--integration", id, NULL);
}

static const char *
dstr (const json_t *reply, const char *key)
{
    const char *s = json_string_value (json_object_get (json_object_get (reply, "diagnosis"), key));
    return s ? s : "";
}

/* 1 when any string of the diagnosis's array key contains needle. */
static int
dlist_has (const json_t *reply, const char *key, const char *needle)
{
    size_t i;
    json_t *item;
    json_array_foreach (json_object_get (json_object_get (reply, "diagnosis"), key), i, item)
        if (strstr (json_string_value (item), needle))
            return 1;
    return 0;
}

/* Every diagnosis has the guide's parts. */
static void
assert_shape (const json_t *reply, const char *code, const char *id)
{
    assert_string_equal (dstr (reply, "code"), code);
    assert_string_equal (dstr (reply, "integration"), id);
    assert_true (strlen (dstr (reply, "symptom")) > 10);
    assert_true (strlen (dstr (reply, "cause")) > 10);
    assert_true (json_array_size (json_object_get (json_object_get (reply, "diagnosis"), "what_to_do")) >= 1);
    assert_true (json_array_size (json_object_get (json_object_get (reply, "diagnosis"), "facts")) >= 1);
}

static int
setup (void **state)
{
    h = harness_new ("doctor");
    if (!h)
        return -1;
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!root)
        return -1;
    /* Google's rules for the fake on 127.0.0.1; notes that do not name Google's permissions page,
     * which doctor once knew Google by (test_no_refresh_token still expects Google's steps) */
    json_object_set_new (json_object_get (root, "fakegoogle"), "family", json_string ("google"));
    json_object_set_new (json_object_get (root, "fakegoogle"), "notes", json_string ("Like Google."));
    /* and Google's authorization parameters, which ask for offline access */
    json_object_set_new (json_object_get (root, "fakegoogle"), "authorization_params",
                         json_pack ("{s:s, s:s}", "access_type", "offline", "prompt", "consent"));
    /* fakegoogle2: a Google entry whose authorization_params were replaced by an override that
     * wanted a parameter of its own, and so lack access_type=offline (test_no_refresh_token_not_asked) */
    json_t *g2 = json_deep_copy (json_object_get (root, "fakegoogle"));
    char url [256];
    static const char *const ends [] = { "authorization_url", "authorize", "token_url", "token", "revocation_url",
                                         "revoke" };
    for (int i = 0; i < 6; i += 2) {
        snprintf (url, sizeof url, "http://127.0.0.1:%d/fakegoogle2/%s", harness_port (h), ends [i + 1]);
        json_object_set_new (g2, ends [i], json_string (url));
    }
    json_object_set_new (g2, "authorization_params", json_pack ("{s:s}", "hd", "example.com"));
    json_object_set_new (root, "fakegoogle2", g2);
    /* dropbox: the built-in entry overridden (to the fake), whose authorization_params were
     * replaced by the operator's and so lack token_access_type=offline (test_no_refresh_token_not_asked_dropbox) */
    json_t *dbx = json_deep_copy (json_object_get (root, "fakebox"));
    for (int i = 0; i < 6; i += 2) {
        snprintf (url, sizeof url, "http://127.0.0.1:%d/dropbox/%s", harness_port (h), ends [i + 1]);
        json_object_set_new (dbx, ends [i], json_string (url));
    }
    json_object_set_new (dbx, "authorization_params", json_pack ("{s:s}", "force_reapprove", "true"));
    json_object_set_new (root, "dropbox", dbx);
    /* as Box's: a refresh token unused for 60 days is dropped (test_needs_reconnect_idle) */
    json_object_set_new (json_object_get (root, "fakebox"), "refresh_token_idle_days", json_integer (60));
    /* fakebox asked, at each refresh, for a scope its grants never hold (test_refresh_refused_a_scope) */
    json_t *scoped = json_deep_copy (json_object_get (root, "fakebox"));
    json_object_set_new (scoped, "refresh_params", json_pack ("{s:s}", "scope", "not-granted"));
    json_object_set_new (root, "fakescoped", scoped);
    char path [1024];
    snprintf (path, sizeof path, "%s/providers-doctor.json", harness_workdir (h));
    int rc = json_dump_file (root, path, JSON_INDENT (2));
    json_decref (root);
    if (rc != 0)
        return -1;
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", path);
    harness_set_env (h, "FERRULE_PROVIDER_TIMEOUT_MS", "1500");        /* test_refresh_answer_lost */
    if (harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0 || harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

/* --- tests --------------------------------------------------------------------------------- */

static void
test_healthy (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("fine:box", "fakebox"), 0);
    json_t *d = doctor ("fine:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "healthy", "fine:box");
    assert_string_equal (dstr (d, "status"), "active");
    assert_true (dlist_has (d, "facts", "access token valid until"));
    assert_true (dlist_has (d, "facts", "connected at"));

    char *text = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &text, "doctor", "--integration", "fine:box", NULL), 0);
    assert_int_equal (rc, 0);
    assert_non_null (strstr (text, "Diagnosis: healthy\n"));
    assert_non_null (strstr (text, "\nSymptom: "));
    assert_non_null (strstr (text, "\nCause: "));
    assert_non_null (strstr (text, "\nWhat to do:\n  1. "));
    free (text);
    json_decref (d);
}

/* The provider refuses the next refresh of a fakebox integration (invalid_grant, asked by a
 * token request once its access token is expired); then its diagnosis, needs_reconnect. */
static json_t *
refused_then_diagnosed (const char *id)
{
    int rc;
    itest_expire (h, id);
    usleep (200000);
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", id, NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "needs_reconnect");
    json_decref (t);
    json_t *d = doctor (id, &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", id);
    return d;
}

static void
test_needs_reconnect_box_rotation (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("broken:box", "fakebox"), 0);
    /* two refreshes that rotate the single-use refresh token, then the provider kills the chain */
    for (int i = 0; i < 2; i++) {
        json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "broken:box", NULL);
        assert_int_equal (rc, 0);
        json_decref (r);
    }
    json_t *d = refused_then_diagnosed ("broken:box");
    assert_string_equal (dstr (d, "status"), "needs_reconnect");
    assert_non_null (strstr (dstr (d, "cause"), "single-use refresh tokens"));
    assert_true (dlist_has (d, "facts", "refresh token invalidated after 2 generations"));
    assert_true (dlist_has (d, "facts", "last successful refresh at "));
    assert_true (dlist_has (d, "facts", "2 rotations since it was connected"));
    assert_true (dlist_has (d, "what_to_do", "ferrulectl disconnect --integration broken:box"));
    assert_true (dlist_has (d, "what_to_do", "ferrulectl connect --integration broken:box --provider fakebox"));

    char *text = NULL;
    assert_int_equal (harness_ctl_text (h, &rc, &text, "doctor", "--integration", "broken:box", NULL), 0);
    assert_non_null (strstr (text, "Diagnosis: needs_reconnect\n"));
    assert_non_null (strstr (text, "What to do:\n  1. Disconnect"));
    assert_non_null (strstr (text, "\n  2. Connect it again"));
    assert_non_null (strstr (text, "Facts:\n  - "));
    free (text);
    json_decref (d);
}

/* What a reuse diagnosis must not claim without evidence: a race, or a copy of the token. */
static void
assert_no_reuse_claimed (const json_t *d, const char *id)
{
    const char *cause = dstr (d, "cause");
    if (strstr (cause, "racing") || strstr (cause, "race") || strstr (cause, "copy")
    ||  dlist_has (d, "what_to_do", "from anywhere else"))
        fail_msg ("%s: the provider refused a chain that nothing else used, and doctor says: %s", id, cause);
}

/* Token requests after the one that met the provider's refusal (every caller's, when the refresh
 * that met it was the sweep's or a refresh ahead): the guide's symptom is an error that mentions
 * the token refresh. They said only "integration "X" is needs_reconnect". */
static void
test_needs_reconnect_again_says_why (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("again:box", "fakebox"), 0);
    json_decref (refused_then_diagnosed ("again:box"));
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "again:box", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "needs_reconnect");
    const char *message = json_string_value (json_object_get (json_object_get (t, "error"), "message"));
    if (!message || !strstr (message, "refresh") || !strstr (message, "\"fakebox\""))
        fail_msg ("a later token request of a needs_reconnect integration says: %s", message ? message : "(none)");
    json_decref (t);
}

/* The user revokes the app's access at a single-use provider (fakebox rotates on every refresh)
 * after two ordinary refreshes; the next refresh is refused (invalid_grant). That is the guide's
 * first entry, a dead refresh token: revoked or expired. doctor took every invalid_grant after a
 * rotation for a reuse ("two refreshes racing, or a copy of the token"), which at a provider that
 * rotates on every refresh is every invalid_grant but the first. */
static void
test_needs_reconnect_revoked_after_rotations (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("gone:box", "fakebox"), 0);
    for (int i = 0; i < 2; i++)
        json_decref (harness_ctl (h, &rc, "refresh", "--integration", "gone:box", NULL));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'gone:box'"
                                          " AND outcome = 'refreshed' AND rotated"), 2);
    /* the user removes the app at the provider: RFC 7009 with the access token ends the chain */
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "gone:box", NULL);
    assert_int_equal (rc, 0);
    const char *at = json_string_value (json_object_get (t, "access_token"));
    assert_non_null (at);
    itest_fake_revoke (h, "fakebox", at);
    json_decref (t);
    long long reuses = itest_stat (h, "fakebox", "reuse_detections");

    itest_expire (h, "gone:box");
    t = harness_ctl (h, &rc, "token", "--integration", "gone:box", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "needs_reconnect");
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), reuses);
    json_t *d = doctor ("gone:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "gone:box");
    assert_no_reuse_claimed (d, "gone:box");
    assert_non_null (strstr (dstr (d, "cause"), "revoked"));
    assert_non_null (strstr (dstr (d, "cause"), "expired"));
    assert_true (dlist_has (d, "what_to_do", "ferrulectl disconnect --integration gone:box"));
    assert_true (dlist_has (d, "facts", "2 rotations since it was connected"));
    json_decref (d);
}

/* A genuine reuse keeps its diagnosis: a refresh token the provider had already replaced is
 * presented again (here an older sealed refresh token put back in the row, as a restore of an old
 * backup would; the provider detects the reuse and says so), and doctor names single-use rotation
 * and a token used after it was replaced. */
static void
test_needs_reconnect_reuse_detected (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("reused:box", "fakebox"), 0);
    json_decref (harness_ctl (h, &rc, "refresh", "--integration", "reused:box", NULL));
    assert_int_equal (rc, 0);
    assert_int_equal (harness_sql (h, "CREATE TABLE doctor_saved_rt AS SELECT refresh_token FROM integrations"
                                      " WHERE id = 'reused:box'"), 0);
    json_decref (harness_ctl (h, &rc, "refresh", "--integration", "reused:box", NULL));
    assert_int_equal (rc, 0);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET refresh_token = (SELECT refresh_token FROM"
                                      " doctor_saved_rt) WHERE id = 'reused:box'; DROP TABLE doctor_saved_rt"), 0);
    long long reuses = itest_stat (h, "fakebox", "reuse_detections");
    itest_expire (h, "reused:box");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "reused:box", NULL);
    assert_int_equal (rc, 4);
    json_decref (t);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), reuses + 1);
    json_t *d = doctor ("reused:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "reused:box");
    assert_non_null (strstr (dstr (d, "cause"), "single-use refresh tokens"));
    assert_non_null (strstr (dstr (d, "cause"), "used after it was replaced"));
    assert_true (dlist_has (d, "what_to_do", "from anywhere else"));
    assert_true (dlist_has (d, "facts", "reuse detected"));
    json_decref (d);
}

/* Refused at the first refresh after the connect, at a single-use provider: the guide's "works
 * once after connecting, then fails" (Box). It got the generic cause, which names neither. */
static void
test_needs_reconnect_first_refresh_single_use (void **state)
{
    assert_int_equal (connect_flow ("first:box", "fakebox"), 0);
    json_t *d = refused_then_diagnosed ("first:box");
    assert_non_null (strstr (dstr (d, "cause"), "single-use refresh tokens"));
    assert_non_null (strstr (dstr (d, "cause"), "the first refresh after the integration was connected"));
    assert_true (dlist_has (d, "what_to_do", "let the first request finish"));
    json_decref (d);
}

/* Refused after its refresh token went unused past the provider's idle limit (60 days here, as
 * Box's): that expiry is the cause, not a reuse, though the provider rotates. The history is
 * moved 61 days back (the chain is append-only: its guard is lifted for that alone). It said
 * the generic cause, and for a chain with a rotation before, a reuse. */
static void
test_needs_reconnect_idle (void **state)
{
    assert_int_equal (connect_flow ("idle:box", "fakebox"), 0);
    assert_int_equal (harness_sql (h, "ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = at - interval '61 days' WHERE integration_id = 'idle:box';"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update"), 0);
    json_t *d = refused_then_diagnosed ("idle:box");
    assert_non_null (strstr (dstr (d, "cause"), "drops a refresh token that goes unused for 60 days"));
    assert_null (strstr (dstr (d, "cause"), "single-use"));
    assert_true (dlist_has (d, "facts", "its refresh token was last used or issued at "));
    assert_true (dlist_has (d, "what_to_do", "check that the sweep runs"));
    json_decref (d);
}

/* A Google grant refused 7 days after it was connected, at an entry that does not say its app is in
 * Testing (no grant_max_days): the 7-day limit of such an app is one cause, and the user's removal
 * of the app's access (the guide's first case) another. doctor declared the first as fact, with
 * "Publish the app" as the one step beyond reconnecting. */
static void
test_google_grant_refused_after_a_week (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("week:google", "fakegoogle"), 0);
    assert_int_equal (harness_sql (h, "ALTER TABLE token_chain DISABLE TRIGGER token_chain_no_update;"
                                      " UPDATE token_chain SET at = at - interval '7 days' WHERE integration_id = 'week:google';"
                                      " ALTER TABLE token_chain ENABLE TRIGGER token_chain_no_update"), 0);
    itest_expire (h, "week:google");
    usleep (200000);
    itest_fault (h, "fakegoogle", "invalid_grant", 1, -1, -1, -1);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "week:google", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "needs_reconnect");
    json_decref (t);
    json_t *d = doctor ("week:google", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "week:google");
    const char *cause = dstr (d, "cause");
    if (!strstr (cause, "Testing") || !strstr (cause, "removed the app's access"))
        fail_msg ("a Google grant refused after 7 days: doctor names one cause only: %s", cause);
    assert_true (dlist_has (d, "what_to_do", "Publish the OAuth app"));
    assert_true (dlist_has (d, "what_to_do", GOOGLE_HINT));
    assert_true (dlist_has (d, "what_to_do", "ferrulectl disconnect --integration week:google"));
    assert_true (dlist_has (d, "facts", "refused (invalid_grant) 7.0 days later"));
    json_decref (d);
}

static void
test_needs_reconnect_revoked (void **state)
{
    int rc;
    /* a refresh token the provider never issued: the generic explanation */
    assert_int_equal (itest_import (h, "revoked:google", "fakegoogle", "fake-rt-00000000000000000000000000000000"), 0);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "revoked:google", NULL);
    assert_int_equal (rc, 4);
    json_t *d = doctor ("revoked:google", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "revoked:google");
    assert_null (strstr (dstr (d, "cause"), "single-use"));
    assert_non_null (strstr (dstr (d, "cause"), "no longer accepts the stored refresh token"));
    assert_true (dlist_has (d, "facts", "refresh token invalidated after 0 generations"));
    assert_true (dlist_has (d, "facts", "no successful refresh since it was imported"));
    assert_true (dlist_has (d, "facts", "invalid_grant"));
    json_decref (t);
    json_decref (d);
}

static void
test_no_refresh_token (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    int cb = connect_flow ("norefresh:google", "fakegoogle");
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (cb, 4);
    json_t *d = doctor ("norefresh:google", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "no_refresh_token", "norefresh:google");
    assert_non_null (strstr (dstr (d, "cause"), "prompt=consent"));
    assert_true (dlist_has (d, "what_to_do", GOOGLE_HINT));
    assert_true (dlist_has (d, "facts", "connected without a refresh token"));
    json_decref (d);
}

/* A Google entry that does not ask for offline access (its authorization_params lack
 * access_type=offline: an override replaces them whole, so adding "hd" drops Google's): Google
 * never issues a refresh token, and the callback, the token requests and doctor told the user to
 * remove the app's access at Google and connect again, which cannot help. The entry is the
 * operator's to fix. */
static void
test_no_refresh_token_not_asked (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle2", json_pack ("{s:b}", "issue_refresh_token", 0));
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "notasked:google", "--provider", "fakegoogle2",
                             "--redirect-uri", REDIRECT, NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_t *r = harness_ctl (h, &rc, "callback", "--url", location, NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "no_refresh_token");
    const char *hint = json_string_value (json_object_get (json_object_get (r, "error"), "hint"));
    assert_non_null (hint);
    if (!strstr (hint, "access_type=offline") || strstr (hint, GOOGLE_HINT))
        fail_msg ("a Google entry without access_type=offline: the callback's hint is \"%s\"", hint);
    /* the token requests once the access token is spent say the same */
    itest_expire (h, "notasked:google");
    usleep (200000);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "notasked:google", NULL);
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (t), "no_refresh_token");
    hint = json_string_value (json_object_get (json_object_get (t, "error"), "hint"));
    assert_non_null (strstr (hint, "access_type=offline"));
    assert_null (strstr (hint, GOOGLE_HINT));
    json_t *d = doctor ("notasked:google", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "no_refresh_token", "notasked:google");
    assert_non_null (strstr (dstr (d, "cause"), "access_type=offline"));
    assert_true (dlist_has (d, "what_to_do", "authorization_params"));
    assert_false (dlist_has (d, "what_to_do", GOOGLE_HINT));
    free (location);
    json_decref (c);
    json_decref (r);
    json_decref (t);
    json_decref (d);
}

/* The same for a Dropbox entry without token_access_type=offline: only Google's entries were
 * checked, so the user was told to remove the app's access and connect again, a loop. */
static void
test_no_refresh_token_not_asked_dropbox (void **state)
{
    int rc;
    itest_fake_config (h, "dropbox", json_pack ("{s:b}", "issue_refresh_token", 0));
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "notasked:dropbox", "--provider", "dropbox",
                             "--redirect-uri", REDIRECT, NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_t *r = harness_ctl (h, &rc, "callback", "--url", location, NULL);
    const char *hint = json_string_value (json_object_get (json_object_get (r, "error"), "hint"));
    const char *cause = json_string_value (json_object_get (json_object_get (r, "error"), "cause"));
    print_message ("a Dropbox entry without token_access_type=offline: %s, cause %s, hint \"%s\"\n", itest_code (r),
                   cause ? cause : "(none)", hint ? hint : "");
    assert_int_equal (rc, 4);
    assert_string_equal (itest_code (r), "no_refresh_token");
    assert_non_null (hint);
    assert_non_null (strstr (hint, "token_access_type=offline"));
    assert_null (strstr (hint, "prompt=consent"));
    assert_non_null (cause);
    assert_string_equal (cause, "provider_entry");
    json_t *d = doctor ("notasked:dropbox", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "no_refresh_token", "notasked:dropbox");
    assert_non_null (strstr (dstr (d, "cause"), "token_access_type=offline"));
    assert_true (dlist_has (d, "what_to_do", "authorization_params"));
    free (location);
    json_decref (c);
    json_decref (r);
    json_decref (d);
}

static void
test_provider_unavailable (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("flaky:box", "fakebox"), 0);
    itest_expire (h, "flaky:box");
    usleep (200000);
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "flaky:box", NULL);
    assert_int_equal (rc, 5);
    json_t *d = doctor ("flaky:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "provider_unavailable", "flaky:box");
    assert_true (dlist_has (d, "facts", "1 transient failure in the last 1 attempt"));
    assert_true (dlist_has (d, "what_to_do", "No reconnect is needed"));
    json_decref (t);
    json_decref (d);
}

/* The guide's Box case by another road: a refresh reached the provider, which rotated, and its
 * answer was lost (the call timed out); the next refresh presented the spent token. Doctor said
 * "the history shows no sign of a replaced one presented again": the timed-out refresh is that
 * sign. (The fake's refusal here does not say "reuse", as many providers' do not.) */
static void
test_refresh_answer_lost (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("lost:box", "fakebox"), 0);
    itest_expire (h, "lost:box");
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "answer_delay_ms", 3000));
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "lost:box", NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "answer_delay_ms", 0));
    assert_string_equal (itest_code (t), "provider_unavailable");
    json_decref (t);
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    /* the next refresh comes once the backoff after the timeout (a second at most here) has passed */
    for (int i = 0; i < 30; i++) {
        t = harness_ctl (h, &rc, "token", "--integration", "lost:box", NULL);
        int done = strcmp (itest_code (t), "needs_reconnect") == 0;
        json_decref (t);
        if (done)
            break;
        usleep (200 * 1000);
    }
    json_t *d = doctor ("lost:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "lost:box");
    if (!strstr (dstr (d, "cause"), "no usable answer"))
        fail_msg ("cause: %s", dstr (d, "cause"));
    json_decref (d);
}

/* A refresh the provider refused with invalid_scope: the token request says invalid_scope, and
 * doctor said "configuration" (the provider missing from the catalog, or its credentials unset),
 * another code with other advice. */
static void
test_refresh_refused_a_scope (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("scoped:box", "fakescoped"), 0);
    itest_expire (h, "scoped:box");
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "scoped:box", NULL);
    assert_int_not_equal (rc, 0);
    assert_string_equal (itest_code (t), "invalid_scope");
    json_t *d = doctor ("scoped:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "invalid_scope", "scoped:box");
    assert_non_null (strstr (dstr (d, "symptom"), "Refreshing"));
    assert_true (dlist_has (d, "what_to_do", "refresh_params"));
    json_decref (t);
    json_decref (d);
}

/* A refresh the provider answered unauthorized_client (RFC 6749 5.2: the client may not use this
 * grant, as an Auth0 or Okta app without the refresh_token grant; at Google also a refresh token
 * of another client id). It was taken for a rejected client id or secret: the hint and doctor said
 * to check them, and that no reconnect was needed. */
static void
test_refresh_unauthorized_client (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("nogrant:box", "fakebox"), 0);
    itest_expire (h, "nogrant:box");
    json_t *f = json_pack ("{s:s, s:s, s:s}", "provider", "fakebox", "kind", "oauth_error", "error",
                           "unauthorized_client");
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "nogrant:box", NULL);
    assert_int_equal (rc, 6);
    assert_string_equal (itest_code (t), "invalid_client");
    const char *hint = json_string_value (json_object_get (json_object_get (t, "error"), "hint"));
    if (!hint || !strstr (hint, "refresh_token grant") || strstr (hint, "client id or secret"))
        fail_msg ("hint: %s", hint ? hint : "(none)");
    json_t *d = doctor ("nogrant:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "invalid_client", "nogrant:box");
    if (!strstr (dstr (d, "cause"), "refuses it the refresh") || strstr (dstr (d, "cause"), "client id or secret"))
        fail_msg ("cause: %s", dstr (d, "cause"));
    assert_true (dlist_has (d, "what_to_do", "enable the refresh_token grant"));
    assert_true (dlist_has (d, "what_to_do", "connect again"));
    assert_false (dlist_has (d, "what_to_do", "No reconnect is needed"));
    json_decref (t);
    json_decref (d);
}

static void
test_insufficient_scope_and_disconnected (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("perm:box", "fakebox"), 0);
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "perm:box", "--scope", "admin", NULL);
    assert_int_equal (rc, 0);
    json_t *d = doctor ("perm:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "insufficient_scope", "perm:box");
    assert_true (dlist_has (d, "facts", "missing scope \"admin\""));
    assert_true (dlist_has (d, "what_to_do", "accept everything requested"));

    json_t *x = harness_ctl (h, &rc, "disconnect", "--integration", "perm:box", NULL);
    assert_int_equal (rc, 0);
    json_t *d2 = doctor ("perm:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d2, "disconnected", "perm:box");
    assert_true (dlist_has (d2, "facts", "disconnected at "));
    json_decref (r);
    json_decref (d);
    json_decref (x);
    json_decref (d2);
}

/* An upstream API answers insufficient_scope naming a scope the grant holds (report-scope warns
 * scope_already_granted: the API needs another scope, or the OAuth app lacks the permission).
 * doctor said the grant lacks it, "the user approved fewer permissions than were requested", with
 * reconnecting and accepting everything as the first step: the facts list the scope as granted,
 * and a reconnect gets the same grant. */
static void
test_insufficient_scope_already_granted (void **state)
{
    int rc;
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "held:box", "--provider", "fakebox",
                             "--redirect-uri", REDIRECT, "--scope", "files.read", NULL);
    assert_int_equal (rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (harness_ctl (h, &rc, "callback", "--url", location, NULL));
    assert_int_equal (rc, 0);
    free (location);
    json_decref (c);
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "held:box", "--scope", "files.read", NULL);
    assert_int_equal (rc, 0);
    json_decref (r);
    json_t *d = doctor ("held:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "insufficient_scope", "held:box");
    assert_true (dlist_has (d, "facts", "granted scopes: files.read"));
    const char *cause = dstr (d, "cause");
    const json_t *steps = json_object_get (json_object_get (d, "diagnosis"), "what_to_do");
    const char *first = json_string_value (json_array_get (steps, 0));
    if (strstr (cause, "approved fewer") || !strstr (cause, "holds") || !first || strstr (first, "Disconnect"))
        fail_msg ("a reported scope the grant holds: doctor says: %s; first step: %s", cause, first ? first : "");
    assert_true (dlist_has (d, "what_to_do", "OAuth app"));
    json_decref (d);
}

/* A 401 whose WWW-Authenticate says invalid_token names a refused token, not a missing scope,
 * also when it carries a scope parameter: it was stored as a scope report, and doctor sent the
 * user to approve every permission. It is refused, pointing to token --reject. */
static void
test_invalid_token_is_no_scope_report (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("badtok:box", "fakebox"), 0);
    json_t *r = harness_ctl (h, &rc, "report-scope", "--integration", "badtok:box", "--www-authenticate",
                             "Bearer error=\"invalid_token\", scope=\"read\"", NULL);
    json_t *d = doctor ("badtok:box", &rc);
    assert_int_equal (rc, 0);
    if (strcmp (dstr (d, "code"), "healthy") != 0)
        fail_msg ("an invalid_token report was taken as a scope problem: doctor says %s", dstr (d, "code"));
    assert_false (dlist_has (d, "facts", "missing scope"));
    assert_string_equal (itest_code (r), "bad_request");
    const char *hint = json_string_value (json_object_get (json_object_get (r, "error"), "hint"));
    assert_non_null (hint);
    assert_non_null (strstr (hint, "--reject"));
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'badtok:box'"
                                          " AND outcome = 'scope_reported'"), 0);
    json_decref (r);
    json_decref (d);
}

/* A reconnect of an integration that still works, whose code the provider refused (a reused or
 * expired code: the guide's "Invalid grant during reconnect"): that failure is what the user
 * meets, and doctor said healthy. */
static void
test_failed_reconnect_while_active (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("redo:box", "fakebox"), 0);
    connect_refused_code ("redo:box", "used-before");
    json_t *d = doctor ("redo:box", &rc);
    assert_int_equal (rc, 0);
    if (strcmp (dstr (d, "code"), "code_expired_or_used") != 0)
        fail_msg ("a failed reconnect of an active integration: doctor says %s", dstr (d, "code"));
    assert_shape (d, "code_expired_or_used", "redo:box");
    assert_string_equal (dstr (d, "status"), "active");
    assert_true (dlist_has (d, "what_to_do", "Do not use the browser's back button"));
    assert_true (dlist_has (d, "what_to_do", "approve within a minute"));
    assert_true (dlist_has (d, "what_to_do", "clear the browser's cookies"));
    assert_true (dlist_has (d, "facts", "the last connect attempt failed at "));
    /* a later refresh that works again is newer than the failure: healthy */
    itest_expire (h, "redo:box");
    usleep (200000);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "redo:box", NULL);
    assert_int_equal (rc, 0);
    json_t *d2 = doctor ("redo:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d2, "healthy", "redo:box");
    json_decref (d);
    json_decref (t);
    json_decref (d2);
}

/* The guide's fix for a dead token is to disconnect and connect again. When that connect fails
 * (here the code is refused: code_expired_or_used), the failure is the diagnosis, with the
 * guide's steps for it; it used to be "disconnected: connect it again", which loops. */
static void
test_failed_reconnect_after_disconnect (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("again:box", "fakebox"), 0);
    json_decref (harness_ctl (h, &rc, "disconnect", "--integration", "again:box", NULL));
    assert_int_equal (rc, 0);
    connect_refused_code ("again:box", "forged");
    json_t *d = doctor ("again:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "code_expired_or_used", "again:box");
    assert_string_equal (dstr (d, "status"), "disconnected");
    assert_true (dlist_has (d, "what_to_do", "approve within a minute"));
    assert_true (dlist_has (d, "facts", "the last connect attempt failed at "));
    assert_true (dlist_has (d, "facts", "disconnected at "));
    json_decref (d);
}

/* A connect whose code exchange fails at the provider: a fault (kind, and status when >= 0) is
 * queued on fakebox's token endpoint between the browser's step and the callback. Returns the
 * callback's exit code; its error code into code. */
static json_t *
connect_exchange_reply (const char *id, const char *kind, int status, int *rc)
{
    json_t *c = harness_ctl (h, rc, "connect", "--integration", id, "--provider", "fakebox", "--redirect-uri",
                             REDIRECT, NULL);
    assert_int_equal (*rc, 0);
    char *location = itest_authorize (json_string_value (json_object_get (c, "authorization_url")));
    itest_fault (h, "fakebox", kind, 1, status, -1, -1);
    json_t *r = harness_ctl (h, rc, "callback", "--url", location, NULL);
    free (location);
    json_decref (c);
    return r;
}

static int
connect_exchange_fails (const char *id, const char *kind, int status, char *code, size_t len)
{
    int rc;
    json_t *r = connect_exchange_reply (id, kind, status, &rc);
    snprintf (code, len, "%s", itest_code (r));
    json_decref (r);
    return rc;
}

/* The callback's failure named, and the connect started again: the code it carried may be spent
 * (the callback's own hint), so nothing else helps. */
static void
assert_failed_callback (const json_t *d, const char *code, const char *id, const char *status)
{
    if (strcmp (dstr (d, "code"), code) != 0 || !dlist_has (d, "what_to_do", "Start again from Connect")
    ||  dlist_has (d, "what_to_do", "No reconnect is needed") || dlist_has (d, "what_to_do", "Nothing to do"))
        fail_msg ("%s after a callback that failed with %s: doctor says %s (%s), first step \"%s\"", id, code,
                  dstr (d, "code"), dstr (d, "cause"),
                  json_string_value (json_array_get (json_object_get (json_object_get (d, "diagnosis"), "what_to_do"), 0)));
    assert_shape (d, code, id);
    assert_string_equal (dstr (d, "status"), status);
    assert_true (dlist_has (d, "facts", code));
}

/* The provider answered the code exchange with an HTML page, or with 503: the callback fails
 * (provider_bad_response, provider_unavailable) and says to start again from Connect. doctor said
 * "healthy" ("Nothing to do") after the HTML page, and "No reconnect is needed" after the 503,
 * for an id never connected as for an integration that needed a reconnect. */
static void
test_failed_code_exchange (void **state)
{
    int rc;
    char code [64];
    assert_int_equal (connect_exchange_fails ("cbhtml:box", "html", -1, code, sizeof code), 5);
    assert_string_equal (code, "provider_bad_response");
    json_t *d = doctor ("cbhtml:box", &rc);
    assert_int_equal (rc, 0);
    assert_failed_callback (d, "provider_bad_response", "cbhtml:box", "not_connected");
    json_decref (d);

    assert_int_equal (connect_exchange_fails ("cb503:box", "status", 503, code, sizeof code), 5);
    assert_string_equal (code, "provider_unavailable");
    d = doctor ("cb503:box", &rc);
    assert_int_equal (rc, 0);
    assert_failed_callback (d, "provider_unavailable", "cb503:box", "not_connected");
    json_decref (d);

    /* the reconnect of a dead integration, failing the same ways: its old tokens stay as they were */
    assert_int_equal (connect_flow ("cbdead:box", "fakebox"), 0);
    json_decref (refused_then_diagnosed ("cbdead:box"));
    assert_int_equal (connect_exchange_fails ("cbdead:box", "html", -1, code, sizeof code), 5);
    d = doctor ("cbdead:box", &rc);
    assert_int_equal (rc, 0);
    assert_failed_callback (d, "provider_bad_response", "cbdead:box", "needs_reconnect");
    json_decref (d);
    assert_int_equal (connect_exchange_fails ("cbdead:box", "status", 503, code, sizeof code), 5);
    d = doctor ("cbdead:box", &rc);
    assert_int_equal (rc, 0);
    assert_failed_callback (d, "provider_unavailable", "cbdead:box", "needs_reconnect");
    json_decref (d);
}

/* The token endpoint answers the code exchange with an HTML page, an empty body or broken JSON:
 * the code is spent and the state used, so only a new connect helps. The callback's hint said
 * "retry later, and report it if it persists" (a retry answers state_invalid), and its message
 * that the provider "refused the code exchange". */
static void
test_bad_code_exchange_answer_says_start_again (void **state)
{
    static const char *const kinds [] = { "html", "empty", "malformed" };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds [0]; i++) {
        int rc;
        char id [64];
        snprintf (id, sizeof id, "bad%s:box", kinds [i]);
        json_t *r = connect_exchange_reply (id, kinds [i], -1, &rc);
        const json_t *e = json_object_get (r, "error");
        const char *message = json_string_value (json_object_get (e, "message"));
        const char *hint = json_string_value (json_object_get (e, "hint"));
        assert_int_equal (rc, 5);
        assert_string_equal (itest_code (r), "provider_bad_response");
        if (!hint || !strstr (hint, "start again from Connect") || !message || strstr (message, "refused"))
            fail_msg ("%s answer to the code exchange: message \"%s\", hint \"%s\"", kinds [i], message ? message : "",
                      hint ? hint : "");
        assert_non_null (strstr (message, "not a token response"));
        json_decref (r);
    }
}

static void
test_not_connected (void **state)
{
    int rc;
    json_t *n = doctor ("nobody:box", &rc);
    assert_int_equal (rc, 3);
    assert_string_equal (itest_code (n), "not_found");
    /* a connect started and not finished: waiting for the user */
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", "waiting:box", "--provider", "fakebox",
                             "--redirect-uri", REDIRECT, NULL);
    assert_int_equal (rc, 0);
    json_t *d = doctor ("waiting:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "connect_pending", "waiting:box");
    assert_string_equal (dstr (d, "status"), "not_connected");
    assert_true (dlist_has (d, "facts", REDIRECT));
    /* a redirect URI the provider's app does not know never comes back: the provider shows its own
     * error page (it_connect test_redirect_uri_mismatch), and the connect just waits; the guide
     * says to contact support then, not to try again */
    assert_true (dlist_has (d, "what_to_do", "redirect_uri_mismatch"));
    assert_true (dlist_has (d, "what_to_do", "contact support"));
    json_decref (n);
    json_decref (c);
    json_decref (d);
}

/* A connect of id with a redirect URI the provider's app does not list: the provider shows its own
 * error page (400, no redirect), so nothing comes back to the service. */
static void
connect_stopped_at_the_providers_page (const char *id)
{
    int rc;
    json_t *c = harness_ctl (h, &rc, "connect", "--integration", id, "--provider", "fakebox", "--redirect-uri",
                             "http://127.0.0.1/not-registered", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (itest_http_get (json_string_value (json_object_get (c, "authorization_url")), NULL), 400);
    json_decref (c);
}

/* The guide's fix for a dead token is to connect again. When that connect's redirect URI is not
 * registered, the provider stops it at its own redirect_uri_mismatch page and nothing comes back:
 * doctor read that unfinished attempt and ignored it for an integration that needs a reconnect or
 * was disconnected, and said "disconnect and connect again", the same loop. */
static void
test_reconnect_stopped_at_the_providers_page (void **state)
{
    int rc;
    assert_int_equal (connect_flow ("loop:box", "fakebox"), 0);
    json_decref (refused_then_diagnosed ("loop:box"));
    connect_stopped_at_the_providers_page ("loop:box");
    json_t *d = doctor ("loop:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "needs_reconnect", "loop:box");
    if (!dlist_has (d, "facts", "has not come back") || !dlist_has (d, "what_to_do", "redirect_uri_mismatch"))
        fail_msg ("a reconnect stopped at the provider's error page: doctor says %s, first step \"%s\"",
                  dstr (d, "code"),
                  json_string_value (json_array_get (json_object_get (json_object_get (d, "diagnosis"), "what_to_do"), 0)));
    assert_true (dlist_has (d, "facts", "http://127.0.0.1/not-registered"));
    assert_true (dlist_has (d, "what_to_do", "contact support"));
    json_decref (d);

    /* and once it is disconnected, the next such connect too */
    json_decref (harness_ctl (h, &rc, "disconnect", "--integration", "loop:box", NULL));
    assert_int_equal (rc, 0);
    connect_stopped_at_the_providers_page ("loop:box");
    d = doctor ("loop:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "disconnected", "loop:box");
    assert_true (dlist_has (d, "facts", "has not come back"));
    assert_true (dlist_has (d, "what_to_do", "redirect_uri_mismatch"));
    json_decref (d);

    /* a connect that came back is no such fact */
    assert_int_equal (connect_flow ("loop:box", "fakebox"), 0);
    d = doctor ("loop:box", &rc);
    assert_int_equal (rc, 0);
    assert_shape (d, "healthy", "loop:box");
    assert_false (dlist_has (d, "facts", "come back"));
    assert_false (dlist_has (d, "what_to_do", "redirect_uri_mismatch"));
    json_decref (d);
}

/* Every token request fails before the provider is called: the stored refresh token does not
 * open (a damaged value; a key missing from the workers' keys fails alike). The chain records
 * the failure ("error"), and doctor said "healthy ... its last refresh attempt (if any)
 * succeeded": no verdict took that outcome. */
static void
test_stored_token_does_not_open (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "sealed:box", "fakebox", rt), 0);
    free (rt);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET refresh_token = set_byte (refresh_token, 20,"
                                      " get_byte (refresh_token, 20) # 1) WHERE id = 'sealed:box'"), 0);
    json_t *t = harness_ctl (h, &rc, "token", "--integration", "sealed:box", NULL);
    assert_int_not_equal (rc, 0);
    assert_string_equal (itest_code (t), "internal");
    json_decref (t);
    json_t *d = doctor ("sealed:box", &rc);
    assert_int_equal (rc, 0);
    if (strcmp (dstr (d, "code"), "internal") != 0)
        fail_msg ("every token request fails with internal, and doctor says %s: %s", dstr (d, "code"), dstr (d, "cause"));
    assert_shape (d, "internal", "sealed:box");
    assert_non_null (strstr (dstr (d, "cause"), "does not open"));
    assert_true (dlist_has (d, "what_to_do", "worker log"));
    assert_true (dlist_has (d, "what_to_do", "FERRULE_ENCRYPTION_OLD_KEYS"));
    assert_true (dlist_has (d, "facts", "could not decrypt"));
    json_decref (d);
}

/* The provider's answer rotates the refresh token but carries no access token: the refresh token
 * is stored (a commit, generation + 1) and the caller told provider_bad_response until the next
 * refresh. The commit cleared last_error and wrote an ordinary "refreshed" row, and doctor said
 * "healthy": its last refresh attempt had succeeded. */
static void
test_unusable_access_token (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "noat:box", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "no_access_token", 1, -1, -1, -1);
    json_t *t = harness_ctl (h, &rc, "refresh", "--integration", "noat:box", NULL);
    assert_int_equal (rc, 5);
    assert_string_equal (itest_code (t), "provider_bad_response");
    json_decref (t);
    json_t *d = doctor ("noat:box", &rc);
    assert_int_equal (rc, 0);
    if (strcmp (dstr (d, "code"), "healthy") == 0)
        fail_msg ("the provider's last answer had no access token, and doctor says healthy: %s", dstr (d, "cause"));
    assert_shape (d, "provider_unavailable", "noat:box");
    assert_non_null (strstr (dstr (d, "cause"), "no usable access token"));
    assert_true (dlist_has (d, "facts", "provider_bad_response"));
    assert_true (dlist_has (d, "what_to_do", "No reconnect is needed"));
    json_decref (d);
    /* the history says so too, on the refresh that stored the refresh token */
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'noat:box'"
                                          " AND outcome = 'refreshed' AND detail LIKE '%no usable access token%'"), 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_healthy),
        cmocka_unit_test (test_needs_reconnect_box_rotation),
        cmocka_unit_test (test_needs_reconnect_again_says_why),
        cmocka_unit_test (test_needs_reconnect_first_refresh_single_use),
        cmocka_unit_test (test_needs_reconnect_revoked_after_rotations),
        cmocka_unit_test (test_needs_reconnect_reuse_detected),
        cmocka_unit_test (test_needs_reconnect_idle),
        cmocka_unit_test (test_google_grant_refused_after_a_week),
        cmocka_unit_test (test_needs_reconnect_revoked),
        cmocka_unit_test (test_no_refresh_token),
        cmocka_unit_test (test_no_refresh_token_not_asked),
        cmocka_unit_test (test_no_refresh_token_not_asked_dropbox),
        cmocka_unit_test (test_provider_unavailable),
        cmocka_unit_test (test_refresh_refused_a_scope),
        cmocka_unit_test (test_refresh_unauthorized_client),
        cmocka_unit_test (test_refresh_answer_lost),
        cmocka_unit_test (test_insufficient_scope_and_disconnected),
        cmocka_unit_test (test_insufficient_scope_already_granted),
        cmocka_unit_test (test_failed_reconnect_after_disconnect),
        cmocka_unit_test (test_invalid_token_is_no_scope_report),
        cmocka_unit_test (test_failed_reconnect_while_active),
        cmocka_unit_test (test_not_connected),
        cmocka_unit_test (test_reconnect_stopped_at_the_providers_page),
        cmocka_unit_test (test_failed_code_exchange),
        cmocka_unit_test (test_bad_code_exchange_answer_says_start_again),
        cmocka_unit_test (test_stored_token_does_not_open),
        cmocka_unit_test (test_unusable_access_token),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
