/* test_refresh.c - the refresh state machine's legal moves: every pair of states checked, so a
 * new state or a new move is a deliberate change of this table */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "refresh.h"

static void
test_every_transition (void **state)
{
    (void) state;
    enum { C = REFRESH_CLAIMING, K = REFRESH_CALLING, A = REFRESH_ANSWERED, M = REFRESH_COMMITTING };
    /* allowed [from][to] */
    static const int allowed [4][4] = {
        /*            C  K  A  M */
        /* C */     { 1, 1, 0, 0 },   /* claim again; lease taken */
        /* K */     { 1, 0, 1, 0 },   /* superseded token: claim again; answered */
        /* A */     { 0, 0, 0, 1 },   /* only a failed commit keeps it alive */
        /* M */     { 0, 0, 0, 1 },   /* retried until committed */
    };
    const int states [4] = { C, K, A, M };
    for (int f = 0; f < 4; f++)
        for (int t = 0; t < 4; t++)
            assert_int_equal (refresh_transition_allowed ((refresh_state_t) states [f], (refresh_state_t) states [t]),
                              allowed [f][t]);
    assert_string_equal (refresh_state_name (REFRESH_COMMITTING), "committing");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_every_transition),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
