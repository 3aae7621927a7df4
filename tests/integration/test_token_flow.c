/* test_token_flow.c - import, token, expiry, a refresh that rotates, then tokens served from
 * the cache; the reusable (Google-style) variant; and no secret anywhere in the logs */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "itest.h"

static harness_t *h;

static int
setup (void **state)
{
    h = harness_new ("token_flow");
    if (!h || harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0
    ||  harness_wait_ready (h, 1, 20000) != 0)
        return -1;
    return 0;
}

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static json_t *
token (const char *id, int *rc)
{
    return harness_ctl (h, rc, "token", "--integration", id, NULL);
}

static void
test_rotation (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", "[\"files.read\"]");
    assert_non_null (rt);
    assert_int_equal (itest_import (h, "acct1:box", "fakebox", rt), 0);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 0);

    /* imported without an access token: the first request refreshes, exactly once */
    json_t *t1 = token ("acct1:box", &rc);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t1, "refreshed")));
    assert_int_equal (json_integer_value (json_object_get (t1, "generation")), 2);
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 1);
    char *at1 = strdup (json_string_value (json_object_get (t1, "access_token")));
    assert_true (strncmp (at1, "fake-at-", 8) == 0);
    assert_non_null (json_string_value (json_object_get (t1, "expires_at")));

    /* a second request is a cache hit: same token, no provider call */
    json_t *t2 = token ("acct1:box", &rc);
    assert_int_equal (rc, 0);
    itest_assert_same_token (json_string_value (json_object_get (t2, "access_token")), at1, "the second request (a cache hit)");
    assert_true (json_is_false (json_object_get (t2, "refreshed")));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 1);

    /* expiry: the next request refreshes once more, and the provider rotates the refresh token */
    json_t *st = harness_ctl (h, &rc, "status", "--integration", "acct1:box", NULL);
    char *fp1 = strdup (json_string_value (json_object_get (json_object_get (st, "integration"), "refresh_token_fingerprint")));
    itest_expire (h, "acct1:box");
    json_t *t3 = token ("acct1:box", &rc);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (t3, "refreshed")));
    assert_int_equal (json_integer_value (json_object_get (t3, "generation")), 3);
    itest_assert_other_token (json_string_value (json_object_get (t3, "access_token")), at1, "the request after the expiry");
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 2);

    json_t *t4 = token ("acct1:box", &rc);
    assert_int_equal (rc, 0);
    assert_true (json_is_false (json_object_get (t4, "refreshed")));
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls"), 2);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);

    json_t *st2 = harness_ctl (h, &rc, "status", "--integration", "acct1:box", NULL);
    json_t *integ = json_object_get (st2, "integration");
    assert_string_equal (json_string_value (json_object_get (integ, "status")), "active");
    assert_int_equal (json_integer_value (json_object_get (integ, "generation")), 3);
    assert_string_not_equal (json_string_value (json_object_get (integ, "refresh_token_fingerprint")), fp1);
    assert_string_equal (json_string_value (json_array_get (json_object_get (integ, "scopes"), 0)), "files.read");

    /* the chain: newest first, every rotation recorded with a fingerprint, never the token */
    json_t *hist = harness_ctl (h, &rc, "history", "--integration", "acct1:box", NULL);
    assert_int_equal (rc, 0);
    json_t *chain = json_object_get (hist, "chain");
    assert_int_equal (json_array_size (chain), 3);
    assert_string_equal (json_string_value (json_object_get (json_array_get (chain, 0), "outcome")), "refreshed");
    assert_true (json_is_true (json_object_get (json_array_get (chain, 0), "rotated")));
    assert_int_equal (json_integer_value (json_object_get (json_array_get (chain, 0), "generation")), 3);
    assert_string_equal (json_string_value (json_object_get (json_array_get (chain, 0), "worker")), "w1");
    assert_string_equal (json_string_value (json_object_get (json_array_get (chain, 2), "outcome")), "imported");

    /* the database holds ciphertexts only: neither token appears in the row */
    char sql [512];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM integrations WHERE position(convert_to('%s', 'UTF8') IN access_token) > 0"
              " OR position(convert_to('%s', 'UTF8') IN refresh_token) > 0 OR position(convert_to('%s', 'UTF8') IN access_token) > 0",
              json_string_value (json_object_get (t3, "access_token")), rt, at1);
    assert_int_equal (harness_sql_int (h, sql), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations WHERE key_id IS NULL OR length(refresh_token) < 28"), 0);

    /* no token in any log line */
    assert_false (itest_workdir_contains (h, rt));
    assert_false (itest_workdir_contains (h, at1));
    assert_false (itest_workdir_contains (h, json_string_value (json_object_get (t3, "access_token"))));
    assert_false (itest_workdir_contains (h, "ferrule-test-secret"));

    free (rt);
    free (at1);
    free (fp1);
    json_decref (t1);
    json_decref (t2);
    json_decref (t3);
    json_decref (t4);
    json_decref (st);
    json_decref (st2);
    json_decref (hist);
}

static void
test_reusable_keeps_refresh_token (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakegoogle", "[\"drive.readonly\"]");
    assert_int_equal (itest_import (h, "acct2:google", "fakegoogle", rt), 0);
    json_t *t1 = token ("acct2:google", &rc);
    assert_int_equal (rc, 0);
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "acct2:google", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (r, "refreshed")));
    assert_int_equal (json_integer_value (json_object_get (r, "generation")), 3);
    assert_int_equal (itest_stat (h, "fakegoogle", "refresh_calls"), 2);

    /* no refresh_token in the answer: the old one is kept, and it still works */
    json_t *hist = harness_ctl (h, &rc, "history", "--integration", "acct2:google", NULL);
    json_t *chain = json_object_get (hist, "chain");
    assert_true (json_is_false (json_object_get (json_array_get (chain, 0), "rotated")));
    assert_string_equal (json_string_value (json_object_get (json_array_get (chain, 0), "refresh_token_fingerprint")),
                         json_string_value (json_object_get (json_array_get (chain, 2), "refresh_token_fingerprint")));
    json_t *r2 = harness_ctl (h, &rc, "refresh", "--integration", "acct2:google", NULL);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (r2, "generation")), 4);
    free (rt);
    json_decref (t1);
    json_decref (r);
    json_decref (r2);
    json_decref (hist);
}

/* A provider whose refresh answers carry the very refresh token sent (HubSpot) has not rotated it:
 * the commit used to count it as a rotation (journaled, kept against a failover, a rotated chain
 * row, and allowed over a needs_reconnect that an invalid_grant for that very token had set). */
static void
test_echoed_refresh_token_is_no_rotation (void **state)
{
    int rc;
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "echo_refresh_token", 1));
    char *rt = itest_grant (h, "fakegoogle", "[\"crm.objects.read\"]");
    assert_non_null (rt);
    assert_int_equal (itest_import (h, "acct6:hubspot", "fakegoogle", rt), 0);
    unsigned long long more;
    int kept = itest_log_lines (h, "w1", "refresh token kept", &more);
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "acct6:hubspot", NULL);
    assert_int_equal (rc, 0);
    assert_true (json_is_true (json_object_get (r, "refreshed")));
    json_t *hist = harness_ctl (h, &rc, "history", "--integration", "acct6:hubspot", NULL);
    json_t *newest = json_array_get (json_object_get (hist, "chain"), 0);
    assert_string_equal (json_string_value (json_object_get (newest, "outcome")), "refreshed");
    if (!json_is_false (json_object_get (newest, "rotated")))
        fail_msg ("a refresh answered with the refresh token sent was recorded as a rotation");
    /* the worker says so: the journal, which holds rotated tokens alone, was not written */
    assert_int_equal (itest_log_lines (h, "w1", "refresh token kept", &more) - kept, 1);
    assert_false (itest_workdir_contains (h, rt));
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "echo_refresh_token", 0));
    free (rt);
    json_decref (r);
    json_decref (hist);
}

static void
test_reimport_keeps_history (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct3:box", "fakebox", rt), 0);
    json_decref (token ("acct3:box", &rc));
    assert_int_equal (rc, 0);
    char *rt2 = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct3:box", "fakebox", rt2), 0);
    json_t *t = token ("acct3:box", &rc);
    assert_int_equal (rc, 0);
    assert_int_equal (json_integer_value (json_object_get (t, "generation")), 4);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain WHERE integration_id = 'acct3:box'"), 4);
    free (rt);
    free (rt2);
    json_decref (t);
}

/* An integration whose id is "NULL" (a valid id: letters) is found like any other. Reads of
 * several ids send them as a text[] literal, where a bare NULL, in any case, is a null: "status"
 * (read from the database, not the cache) answered not_found for it. */
static void
test_id_spelled_null (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "NULL", "fakebox", rt), 0);
    free (rt);
    json_t *r = harness_ctl (h, &rc, "status", "--integration", "NULL", NULL);
    printf ("status of \"NULL\": %s\n", rc == 0 ? "ok" : itest_code (r));
    assert_int_equal (rc, 0);
    json_decref (r);
}

/* A forced refresh (ferrulectl refresh, or token --reject) that finds the row already moved on
 * by another worker (a newer generation this worker has not heard of yet) takes that generation
 * only if its access token is still good. It took it whatever its expiry: the answer was ok, with
 * an access token that had expired (or was empty: the commit of an answer whose access token was
 * unusable), and no provider call. The row here is changed behind the worker's back, as another
 * worker's commit is before its notification arrives. */
static void
test_forced_refresh_never_answers_an_expired_token (void **state)
{
    int rc;
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct4:box", "fakebox", rt), 0);
    free (rt);
    json_decref (token ("acct4:box", &rc));
    assert_int_equal (rc, 0);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET generation = generation + 1,"
                                      " access_expires_at = now () - interval '1 hour' WHERE id = 'acct4:box'"), 0);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    json_t *r = harness_ctl (h, &rc, "refresh", "--integration", "acct4:box", NULL);
    assert_int_equal (rc, 0);
    long long expires = harness_sql_int (h, "SELECT extract (epoch FROM access_expires_at)::bigint - "
                                            "extract (epoch FROM now ())::bigint FROM integrations WHERE id = 'acct4:box'");
    if (itest_stat (h, "fakebox", "refresh_calls") != calls + 1 || !json_is_true (json_object_get (r, "refreshed")))
        fail_msg ("forced refresh over an expired token: %lld provider calls, refreshed %s, the stored token expires in "
                  "%lld s", itest_stat (h, "fakebox", "refresh_calls") - calls,
                  json_is_true (json_object_get (r, "refreshed")) ? "true" : "false", expires);
    assert_true (expires > 0);
    json_decref (r);
}

/* A provider answering "expires_in": 0 gave a token that expired as it was stored: every token
 * request then called the provider again (and at a rotating provider spent a refresh token each
 * time). A lifetime under a second is taken as absent, as any other unusable one is. */
static void
test_zero_lifetime_is_not_refreshed_on_every_request (void **state)
{
    int rc;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 0));
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct5:box", "fakebox", rt), 0);
    free (rt);
    long long calls = itest_stat (h, "fakebox", "refresh_calls");
    for (int i = 0; i < 5; i++) {
        json_decref (token ("acct5:box", &rc));
        assert_int_equal (rc, 0);
    }
    long long made = itest_stat (h, "fakebox", "refresh_calls") - calls;
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "access_ttl", 3600));
    if (made != 1)
        fail_msg ("5 token requests with a lifetime of 0 made %lld provider calls (want 1)", made);
    assert_true (itest_workdir_contains (h, "expires_in is not a number of seconds from 1 to 10 years"));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rotation),
        cmocka_unit_test (test_reusable_keeps_refresh_token),
        cmocka_unit_test (test_echoed_refresh_token_is_no_rotation),
        cmocka_unit_test (test_reimport_keeps_history),
        cmocka_unit_test (test_id_spelled_null),
        cmocka_unit_test (test_forced_refresh_never_answers_an_expired_token),
        cmocka_unit_test (test_zero_lifetime_is_not_refreshed_on_every_request),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
