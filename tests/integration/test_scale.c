/* test_scale.c - the token chain holds with many brokers and workers: a storm of concurrent
 * requests over expired single-use integrations makes exactly one refresh per expiry, also when
 * two broker+worker groups share nothing but the database; caches stay coherent across them */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "clock.h"
#include "itest.h"

#define INTEGRATIONS 50
#define REQUESTS     1000

static harness_t *h;
static char ids [INTEGRATIONS][32];
static const char *id_list [INTEGRATIONS];

static int
teardown (void **state)
{
    return itest_teardown (&h);
}

static void
import_all (const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        snprintf (ids [i], sizeof ids [i], "%s%02d:box", prefix, i);
        id_list [i] = ids [i];
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
}

/* Checks a storm's replies: all ok, one token per integration. */
static void
check_storm (json_t *replies, int nids, long long calls_before, long long want_calls)
{
    const char *token_of [INTEGRATIONS] = { 0 };
    size_t i;
    json_t *r;
    json_array_foreach (replies, i, r) {
        if (!json_is_true (json_object_get (r, "ok")))
            fail_msg ("request %zu: %s", i, json_is_null (r) ? "no reply" : itest_code (r));
        const char *t = json_string_value (json_object_get (r, "access_token"));
        int k = (int) (i % (size_t) nids);
        if (!token_of [k])
            token_of [k] = t;
        else
        if (strcmp (token_of [k], t) != 0)
            fail_msg ("integration %s got two different tokens", ids [k]);
    }
    assert_int_equal (itest_stat (h, "fakebox", "refresh_calls") - calls_before, want_calls);
    assert_int_equal (itest_stat (h, "fakebox", "reuse_detections"), 0);
    assert_int_equal (itest_stat (h, "fakebox", "invalid_grants"), 0);
}

static void
slow_provider (int ms)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", ms));
}

static void
test_storm_two_brokers_three_workers (void **state)
{
    h = harness_new ("scale_storm");
    assert_non_null (h);
    assert_true (harness_start_broker (h) == 0 && harness_start_broker (h) == 1);
    assert_int_equal (harness_start_worker (h, "w1"), 0);
    assert_int_equal (harness_start_worker (h, "w2"), 0);
    assert_int_equal (harness_start_worker (h, "w3"), 0);
    assert_int_equal (harness_wait_ready (h, 3, 20000), 0);
    import_all ("storm", INTEGRATIONS);
    for (int i = 0; i < INTEGRATIONS; i++)
        itest_expire (h, ids [i]);
    slow_provider (200);
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    const char *endpoints [] = { harness_broker_frontend (h, 0), harness_broker_frontend (h, 1) };
    json_t *replies = itest_storm (endpoints, 2, id_list, INTEGRATIONS, REQUESTS, 20000);
    check_storm (replies, INTEGRATIONS, before, INTEGRATIONS);
    json_decref (replies);
    slow_provider (0);
    assert_int_equal (teardown (state), 0);
}

static void
test_two_independent_groups (void **state)
{
    h = harness_new ("scale_groups");
    assert_non_null (h);
    /* group A: broker 0 and its worker; group B: broker 1 and its worker; only the database is shared */
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "a1"), 0);
    assert_int_equal (harness_start_broker (h), 1);
    assert_int_equal (harness_start_worker_on (h, "b1", 1u << 1), 0);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    import_all ("groups", 20);
    for (int i = 0; i < 20; i++)
        itest_expire (h, ids [i]);
    slow_provider (200);
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    const char *endpoints [] = { harness_broker_frontend (h, 0), harness_broker_frontend (h, 1) };
    json_t *replies = itest_storm (endpoints, 2, id_list, 20, 400, 20000);
    check_storm (replies, 20, before, 20);
    json_decref (replies);
    slow_provider (0);

    /* coherence: a refresh through group A is what group B hands out next. Its cache hears of
     * the change from the notifications sent in a transaction of their own after the refresh's
     * commit, which the answer does not wait for (docs/architecture.md): soon, not before the
     * answer; asked again for up to 5 s */
    char a [512], b [512];
    snprintf (a, sizeof a, "%s", harness_broker_frontend (h, 0));
    snprintf (b, sizeof b, "%s", harness_broker_frontend (h, 1));
    int rc;
    json_t *via_b = harness_ctl_at (h, b, &rc, "token", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    json_t *refreshed = harness_ctl_at (h, a, &rc, "refresh", "--integration", ids [0], NULL);
    assert_int_equal (rc, 0);
    itest_assert_other_token (json_string_value (json_object_get (refreshed, "access_token")),
                              json_string_value (json_object_get (via_b, "access_token")), "the refresh through broker a");
    const char *want = json_string_value (json_object_get (refreshed, "access_token"));
    json_t *via_b2 = NULL;
    for (int64_t until = clock_mono_ms () + 5000;; usleep (50000)) {
        json_decref (via_b2);
        via_b2 = harness_ctl_at (h, b, &rc, "token", "--integration", ids [0], NULL);
        assert_int_equal (rc, 0);
        const char *got = json_string_value (json_object_get (via_b2, "access_token"));
        if ((got && want && strcmp (got, want) == 0) || clock_mono_ms () >= until)
            break;
    }
    itest_assert_same_token (json_string_value (json_object_get (via_b2, "access_token")),
                             json_string_value (json_object_get (refreshed, "access_token")),
                             "a token through broker b after the refresh through broker a");
    assert_int_equal (json_integer_value (json_object_get (via_b2, "generation")),
                      json_integer_value (json_object_get (refreshed, "generation")));
    json_decref (via_b);
    json_decref (refreshed);
    json_decref (via_b2);
    assert_int_equal (teardown (state), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_storm_two_brokers_three_workers),
        cmocka_unit_test (test_two_independent_groups),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
