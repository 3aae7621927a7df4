/* test_refresh.c - the refresh state machine's legal moves: every pair of states checked, so a
 * new state or a new move is a deliberate change of this table */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testexit.h"
#include "refresh.h"

static void
test_every_transition (void **state)
{
    (void) state;
    enum { C = REFRESH_CLAIMING, K = REFRESH_CALLING, A = REFRESH_ANSWERED, M = REFRESH_COMMITTING,
           R = REFRESH_RECORDING, X = REFRESH_CONFLICTED };
    /* allowed [from][to] */
    static const int allowed [6][6] = {
        /*            C  K  A  M  R  X */
        /* C */     { 1, 1, 0, 0, 1, 0 },   /* claim again; lease taken; no call possible: recorded */
        /* K */     { 0, 0, 1, 0, 1, 0 },   /* answered; refused, recorded before anyone is told */
        /* A */     { 0, 0, 0, 1, 0, 1 },   /* a failed commit keeps it alive; a lost one reads the row */
        /* M */     { 0, 0, 0, 1, 0, 1 },   /* retried until committed, or lost */
        /* R */     { 1, 0, 0, 0, 0, 0 },   /* the rejected token was superseded: claim again */
        /* X */     { 1, 0, 0, 0, 0, 0 },   /* ends once the stored row is read, or claims again */
    };
    const int states [6] = { C, K, A, M, R, X };
    for (int f = 0; f < 6; f++)
        for (int t = 0; t < 6; t++)
            assert_int_equal (refresh_transition_allowed ((refresh_state_t) states [f], (refresh_state_t) states [t]),
                              allowed [f][t]);
    assert_string_equal (refresh_state_name (REFRESH_COMMITTING), "committing");
    assert_string_equal (refresh_state_name (REFRESH_RECORDING), "recording");
    assert_string_equal (refresh_state_name (REFRESH_CONFLICTED), "conflicted");
}

/* A failed commit is tried again after 250 ms, then 500 ms, doubling to 10 s
 * (docs/architecture.md). Every caller counts the failure before it schedules the retry, and the
 * first wait was 500 ms. */
static void
test_commit_retry_schedule (void **state)
{
    (void) state;
    const int64_t want [] = { 250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000 };
    for (unsigned i = 0; i < sizeof want / sizeof want [0]; i++)
        assert_int_equal (refresh_commit_retry_ms (i + 1), want [i]);
    assert_int_equal (refresh_commit_retry_ms (0), 250);
    assert_int_equal (refresh_commit_retry_ms (1000), 10000);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_every_transition),
        cmocka_unit_test (test_commit_retry_schedule),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
