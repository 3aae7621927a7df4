/* test_harness_smoke.c - the harness itself: a migrated database, the fake provider, the
   providers file, teardown; with FERRULE_TEST_FULL=1 also a broker, two workers and one token */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static int
setup (void **state)
{
    harness_t *h = harness_new ("harness_smoke");
    if (!h)
        return -1;
    *state = h;
    return 0;
}

static int
teardown (void **state)
{
    harness_t *h = *state;
    harness_destroy (&h);
    return 0;
}

static bool
full_run (void)
{
    const char *full = getenv ("FERRULE_TEST_FULL");
    return full && strcmp (full, "1") == 0;
}

/* The database exists and carries the schema. */
static void
test_database_migrated (void **state)
{
    harness_t *h = *state;
    assert_non_null (harness_db (h));
    assert_true (harness_sql_int (h, "SELECT count(*) FROM schema_migrations") >= 1);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM integrations"), 0);
    assert_int_equal (harness_sql_int (h, "SELECT count(*) FROM token_chain"), 0);
    assert_non_null (strstr (harness_database_url (h), "/ft_harness_smoke_"));
}

/* The fake provider answers its admin API and mints a grant. */
static void
test_fake_provider_grant (void **state)
{
    harness_t *h = *state;
    assert_true (harness_port (h) > 0);

    json_t *body = json_pack ("{s:s, s:[s]}", "provider", "fakebox", "scopes", "files.read");
    json_t *grant = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    assert_non_null (grant);
    assert_true (json_is_string (json_object_get (grant, "refresh_token")));
    assert_true (json_is_string (json_object_get (grant, "access_token")));
    assert_true (json_is_integer (json_object_get (grant, "expires_in")));
    assert_non_null (json_object_get (grant, "chain"));
    json_decref (grant);

    json_t *stats = harness_fake (h, "GET", "/admin/stats", NULL);
    assert_non_null (stats);
    assert_true (json_is_object (json_object_get (stats, "providers")));
    json_decref (stats);

    /* an unknown admin path is an error, and harness_fake says so with NULL */
    long status = 0;
    json_t *reply = harness_fake_status (h, "GET", "/admin/no-such-thing", NULL, &status);
    assert_true (status >= 400);
    json_decref (reply);
}

/* The providers file names both fake providers at the fake provider's port. */
static void
test_providers_file (void **state)
{
    harness_t *h = *state;
    json_error_t error;
    json_t *providers = json_load_file (harness_providers_file (h), 0, &error);
    assert_non_null (providers);

    char expected [128];
    snprintf (expected, sizeof expected, "http://127.0.0.1:%d/fakebox/token", harness_port (h));
    json_t *box = json_object_get (providers, "fakebox");
    assert_string_equal (json_string_value (json_object_get (box, "token_url")), expected);
    assert_string_equal (json_string_value (json_object_get (box, "refresh_token_rotation")), "single_use");
    assert_string_equal (json_string_value (json_object_get (box, "auth_method")), "client_secret_basic");

    json_t *google = json_object_get (providers, "fakegoogle");
    assert_string_equal (json_string_value (json_object_get (google, "refresh_token_rotation")), "reusable");
    assert_string_equal (json_string_value (json_object_get (google, "auth_method")), "client_secret_post");
    assert_true (json_is_true (json_object_get (google, "pkce")));
    json_decref (providers);

    assert_int_equal (strlen (harness_encryption_key (h)), 44);    /* base64 of 32 bytes */
}

/* harness_destroy drops the database: connecting to it afterwards fails. */
static void
test_destroy_drops_database (void **state)
{
    (void) state;
    harness_t *h = harness_new ("harness_drop");
    assert_non_null (h);
    char *url = strdup (harness_database_url (h));
    harness_destroy (&h);
    assert_null (h);
    harness_destroy (&h);       /* twice is fine */

    PGconn *conn = PQconnectdb (url);
    assert_int_not_equal (PQstatus (conn), CONNECTION_OK);
    PQfinish (conn);
    free (url);
}

/* A broker and two workers come up, and a grant imported through ferrulectl yields a token.
   Guarded until the broker and worker are complete. */
static void
test_broker_and_workers (void **state)
{
    if (!full_run ())
        skip ();
    harness_t *h = *state;
    assert_int_equal (harness_start_broker (h), 0);
    assert_int_equal (harness_start_worker (h, "worker-1"), 0);
    assert_int_equal (harness_start_worker (h, "worker-2"), 0);
    assert_int_equal (harness_wait_ready (h, 2, 30000), 0);

    int code = -1;
    json_t *reply = harness_ctl (h, &code, "status", "--integration", "fakebox:nobody", NULL);
    assert_int_equal (code, 3);
    json_decref (reply);

    json_t *body = json_pack ("{s:s}", "provider", "fakebox");
    json_t *grant = harness_fake (h, "POST", "/admin/grants", body);
    json_decref (body);
    assert_non_null (grant);
    reply = harness_ctl (h, &code, "import", "--integration", "fakebox:acct1", "--provider", "fakebox",
                         "--refresh-token", json_string_value (json_object_get (grant, "refresh_token")),
                         NULL);
    json_decref (grant);
    assert_int_equal (code, 0);
    json_decref (reply);

    reply = harness_ctl (h, &code, "token", "--integration", "fakebox:acct1", NULL);
    assert_int_equal (code, 0);
    assert_non_null (reply);
    assert_true (json_is_string (json_object_get (reply, "access_token")));
    assert_true (json_is_true (json_object_get (reply, "refreshed")));
    json_decref (reply);

    assert_int_equal (harness_stop_worker (h, "worker-2"), 0);
    assert_false (harness_worker_running (h, "worker-2"));
    assert_int_equal (harness_wait_ready (h, 1, 30000), 0);
    assert_int_equal (harness_stop_all (h), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_database_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown (test_fake_provider_grant, setup, teardown),
        cmocka_unit_test_setup_teardown (test_providers_file, setup, teardown),
        cmocka_unit_test (test_destroy_drops_database),
        cmocka_unit_test_setup_teardown (test_broker_and_workers, setup, teardown),
    };
    return harness_exit (cmocka_run_group_tests (tests, NULL, NULL));
}
