/* test_scopes.c - granted scopes against requested ones (scopes_granted, scopes_missing): the forms
 * in which providers echo what they granted, so that a connect is not reported as reduced when it
 * is not */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "mem.h"
#include "scopes.h"

static void
test_exact_words (void **state)
{
    char out [256];
    assert_true (scopes_granted ("channels:read,chat:write", "chat:write"));
    assert_false (scopes_granted ("channels:read", "chat:write"));
    assert_false (scopes_granted (NULL, "chat:write"));
    assert_int_equal (scopes_missing ("channels:read chat:write users:read", "channels:read,chat:write", out,
                                      sizeof out), 1);
    assert_string_equal (out, "\"users:read\"");
    /* Google's long forms of the short OpenID scopes */
    assert_true (scopes_granted ("openid https://www.googleapis.com/auth/userinfo.email", "email"));
}

/* Microsoft answers with each Graph scope qualified by its resource, and never echoes
 * offline_access, which shows as the refresh token it issued (or no_refresh_token) instead. */
static void
test_resource_qualified_and_offline_access (void **state)
{
    char out [256];
    const char *granted = "https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read openid profile";
    assert_true (scopes_granted (granted, "User.Read"));
    assert_true (scopes_granted ("User.Read", "https://graph.microsoft.com/User.Read"));
    assert_false (scopes_granted (granted, "Read"));               /* a whole segment, not any tail */
    assert_false (scopes_granted (granted, "Calendars.Read"));
    /* Microsoft's scope names ignore case, and its documents write them in lower case: asked for
       "user.read", echoed "https://graph.microsoft.com/User.Read" (it was read as missing) */
    assert_true (scopes_granted (granted, "user.read"));
    assert_true (scopes_granted ("user.read", "https://graph.microsoft.com/User.Read"));
    assert_false (scopes_granted ("user.readwrite", "https://graph.microsoft.com/User.Read"));
    assert_int_equal (scopes_missing ("openid offline_access User.Read", granted, out, sizeof out), 0);
    assert_int_equal (scopes_missing ("openid offline_access User.Read Calendars.Read", granted, out, sizeof out), 1);
    assert_string_equal (out, "\"Calendars.Read\"");
}

/* What a connect stores: the requested spelling of what was granted in another form. */
static void
test_as_requested (void **state)
{
    char *s = scopes_as_requested ("openid offline_access User.Read Calendars.Read",
                                   "https://graph.microsoft.com/User.Read openid", 1);
    assert_string_equal (s, "https://graph.microsoft.com/User.Read openid offline_access User.Read");
    mem_free (s);
    s = scopes_as_requested ("openid offline_access", "openid", 0);   /* no refresh token: not granted */
    assert_string_equal (s, "openid");
    mem_free (s);
    s = scopes_as_requested (NULL, "", 1);
    assert_string_equal (s, "");
    mem_free (s);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_exact_words),
        cmocka_unit_test (test_resource_qualified_and_offline_access),
        cmocka_unit_test (test_as_requested),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
