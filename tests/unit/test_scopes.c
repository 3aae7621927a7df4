/* test_scopes.c - granted scopes against requested ones (scopes_granted, scopes_missing): the forms
 * in which providers echo what they granted, so that a connect is not reported as reduced when it
 * is not; and the parameters of an upstream WWW-Authenticate header (scopes_auth_param) */
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

/* The value of name in header, "" when none; asserts the result code. */
static const char *
param (const char *header, const char *name, int want)
{
    static char out [64];
    assert_int_equal (scopes_auth_param (header, name, out, sizeof out), want);
    return out;
}

/* A parameter's name inside another's quoted value is no parameter (a review found
 * "realm=\"api, error=invalid_token\"" read as the error, and "needs scope=admin" in an
 * error_description read as the scope); quoting and escapes are undone; the Bearer challenge's
 * parameters win over another scheme's; a value longer than the buffer is refused, not cut. */
static void
test_auth_param (void **state)
{
    (void) state;
    const char *h1 = "Bearer realm=\"api, error=invalid_token\", error=\"insufficient_scope\", scope=\"files.read\"";
    assert_string_equal (param (h1, "error", 1), "insufficient_scope");
    assert_string_equal (param (h1, "scope", 1), "files.read");
    assert_string_equal (param (h1, "realm", 1), "api, error=invalid_token");
    const char *h2 = "Bearer error=\"insufficient_scope\", error_description=\"needs scope=admin\"";
    assert_string_equal (param (h2, "scope", 0), "");
    assert_string_equal (param (h2, "error", 1), "insufficient_scope");
    assert_string_equal (param ("bearer ERROR = insufficient_scope ,Scope=\"a b\"", "error", 1), "insufficient_scope");
    assert_string_equal (param ("Bearer scope=\"a \\\"b\\\" c\"", "scope", 1), "a \"b\" c");
    assert_string_equal (param ("Bearer scope=read\tx=1", "scope", 1), "read");
    /* another scheme's parameters say nothing of the bearer token, unless there is no Bearer */
    assert_string_equal (param ("Basic realm=\"x\", scope=\"basic\", Bearer scope=\"mail\"", "scope", 1), "mail");
    assert_string_equal (param ("Basic scope=\"basic\"", "scope", 1), "basic");
    assert_string_equal (param ("error=\"insufficient_scope\", scope=\"x\"", "scope", 1), "x");
    /* a token68 and stray characters are stepped over */
    assert_string_equal (param ("Negotiate abc/def==, Bearer scope=\"s\"", "scope", 1), "s");
    assert_string_equal (param ("Bearer abc, scope=\"t\", Basic scope=\"u\"", "scope", 1), "t");
    assert_string_equal (param ("Bearer error=\"insufficient_scope", "error", 1), "insufficient_scope");
    assert_string_equal (param ("", "scope", 0), "");
    assert_string_equal (param ("Bearer scope=\"\"", "scope", 0), "");
    assert_string_equal (param ("Bearer myscope=\"x\"", "scope", 0), "");
    char longer [200];
    snprintf (longer, sizeof longer, "Bearer scope=\"%0100d\"", 7);
    assert_string_equal (param (longer, "scope", -1), "");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_exact_words),
        cmocka_unit_test (test_resource_qualified_and_offline_access),
        cmocka_unit_test (test_as_requested),
        cmocka_unit_test (test_auth_param),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
