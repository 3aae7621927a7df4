/* test_ident.c - integration ids and workspaces: the prefixes that may be one, and the one
 * comparison of an id with a workspace */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "ident.h"

static void
test_ident (void **state)
{
    char long_id [IDENT_MAX + 2];
    memset (long_id, 'a', sizeof long_id);
    assert_true (ident_valid ("acct42:box", 10));
    assert_true (ident_valid ("A-Z_a.z:0-9", 11));
    assert_false (ident_valid ("", 0));
    assert_false (ident_valid ("a b", 3));
    assert_false (ident_valid ("a/b", 3));
    assert_false (ident_valid ("caf\xc3\xa9", 5));
    assert_false (ident_valid ("a\0b", 3));
    assert_true (ident_valid (long_id, IDENT_MAX));
    assert_false (ident_valid (long_id, IDENT_MAX + 1));
}

/* A workspace ends with a separator; anything else that is not an id is not one either. */
static void
test_workspace_valid (void **state)
{
    const char *good [] = { "acct42:", "acct42.", "acct42_", "acct42-", ":", "a:b:", NULL };
    const char *bad [] = { "acct4", "acct42:x", "acct4 :", "acct4/", "acct4:\n", "", NULL };
    for (int i = 0; good [i]; i++)
        if (!ident_workspace_valid (good [i], strlen (good [i])))
            fail_msg ("\"%s\" was refused as a workspace", good [i]);
    for (int i = 0; bad [i]; i++)
        if (ident_workspace_valid (bad [i], strlen (bad [i])))
            fail_msg ("\"%s\" was taken as a workspace", bad [i]);
    assert_false (ident_workspace_valid (NULL, 0));
    assert_false (ident_workspace_valid ("acct4:", 5));           /* the length decides: "acct4" */
    char long_ws [IDENT_MAX + 2];
    memset (long_ws, 'a', sizeof long_ws);
    long_ws [IDENT_MAX - 1] = ':';
    assert_true (ident_workspace_valid (long_ws, IDENT_MAX));
    long_ws [IDENT_MAX] = ':';
    assert_false (ident_workspace_valid (long_ws, IDENT_MAX + 1));
}

/* "acct4" would cover "acct42:x", another customer's: no id is in it. */
static void
test_in_workspace (void **state)
{
    assert_true (ident_in_workspace ("acct4:box", "acct4:"));
    assert_true (ident_in_workspace ("acct4:", "acct4:"));
    assert_true (ident_in_workspace ("acct4-a:b", "acct4-"));
    assert_false (ident_in_workspace ("acct42:x", "acct4:"));
    assert_false (ident_in_workspace ("acct4", "acct4:"));
    assert_false (ident_in_workspace ("acct42:x", "acct4"));
    assert_false (ident_in_workspace ("acct4:box", "acct4"));     /* not even its "own" ids */
    assert_false (ident_in_workspace ("acct4:box", ""));
    assert_false (ident_in_workspace (NULL, "acct4:"));
    assert_false (ident_in_workspace ("acct4:box", NULL));
    char long_ws [IDENT_MAX + 2];
    memset (long_ws, 'a', sizeof long_ws);
    long_ws [IDENT_MAX] = ':';
    long_ws [IDENT_MAX + 1] = '\0';                               /* 129 characters: not a workspace */
    assert_false (ident_in_workspace (long_ws, long_ws));
}

/* The workspace an id is taken to live in: up to its first ':', else its first separator. */
static void
test_outer_workspace (void **state)
{
    (void) state;
    assert_int_equal (ident_home_workspace_len ("acct42:drive"), 7);
    assert_int_equal (ident_home_workspace_len ("acct42:team.drive"), 7);
    assert_int_equal (ident_home_workspace_len ("acct-42:drive"), 8);
    assert_int_equal (ident_home_workspace_len ("org_7.team:drive"), 11);
    assert_int_equal (ident_home_workspace_len ("acct-42.drive"), 5);
    assert_int_equal (ident_home_workspace_len ("drive"), 0);
    assert_int_equal (ident_home_workspace_len ("x:"), 2);
    assert_int_equal (ident_home_workspace_len ("bad id:x"), 0);
    assert_int_equal (ident_home_workspace_len (NULL), 0);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_ident),
        cmocka_unit_test (test_workspace_valid),
        cmocka_unit_test (test_in_workspace),
        cmocka_unit_test (test_outer_workspace),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
