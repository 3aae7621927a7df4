/* test_blockwalk.c - a table walked a range of blocks at a time: the ranges' sizes follow how long
 * each took against the statement timeout, a failed range is retried smaller from the same block,
 * and the ranges that succeed cover the table once, with no gap and no overlap */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include "testexit.h"
#include "blockwalk.h"

#define TIMEOUT_MS 400

/* One range sent at now and answered took_ms later; the walk's verdict. */
static int
range_took (blockwalk_t *b, int64_t *now, int64_t took_ms, int64_t table_blocks)
{
    blockwalk_sent (b, *now);
    *now += took_ms;
    assert_int_equal (blockwalk_took_ms (b, *now), took_ms);
    return blockwalk_range_done (b, *now, TIMEOUT_MS, table_blocks);
}

static void
test_fast_ranges_grow_to_the_largest (void **state)
{
    (void) state;
    blockwalk_t b;
    int64_t now = 1000, expect_from = 0, expect_blocks = BLOCKWALK_FIRST;
    blockwalk_init (&b);
    assert_int_equal (b.from, 0);
    assert_int_equal (b.blocks, BLOCKWALK_FIRST);
    /* under an eighth of the timeout: doubled each time, then held at the largest */
    for (int i = 0; i < 10; i++) {
        assert_false (range_took (&b, &now, TIMEOUT_MS / 8 - 1, INT64_MAX));
        expect_from += expect_blocks;
        if (expect_blocks < BLOCKWALK_MAX)
            expect_blocks *= 2;
        assert_int_equal (b.from, expect_from);
        assert_int_equal (b.blocks, expect_blocks);
    }
    assert_int_equal (b.blocks, BLOCKWALK_MAX);
}

static void
test_slow_ranges_shrink_to_the_smallest (void **state)
{
    (void) state;
    blockwalk_t b;
    int64_t now = 0;
    blockwalk_init (&b);
    /* between an eighth and a half: the size stays */
    assert_false (range_took (&b, &now, TIMEOUT_MS / 8, INT64_MAX));
    assert_int_equal (b.blocks, BLOCKWALK_FIRST);
    assert_false (range_took (&b, &now, TIMEOUT_MS / 2, INT64_MAX));
    assert_int_equal (b.blocks, BLOCKWALK_FIRST);
    /* over half: halved each time, never below the smallest */
    int64_t expect = BLOCKWALK_FIRST;
    for (int i = 0; i < 10; i++) {
        assert_false (range_took (&b, &now, TIMEOUT_MS / 2 + 1, INT64_MAX));
        if (expect > BLOCKWALK_MIN)
            expect /= 2;
        assert_int_equal (b.blocks, expect);
    }
    assert_int_equal (b.blocks, BLOCKWALK_MIN);
    assert_int_equal (b.from, 2 * BLOCKWALK_FIRST + BLOCKWALK_FIRST + 256 + 128 + 64 + 32 + 16 * 5);
}

static void
test_a_failed_range_is_retried_smaller_from_the_same_block (void **state)
{
    (void) state;
    blockwalk_t b;
    int64_t now = 0;
    blockwalk_init (&b);
    assert_false (range_took (&b, &now, TIMEOUT_MS / 4, INT64_MAX));
    assert_int_equal (b.from, BLOCKWALK_FIRST);
    /* a timeout: a quarter the size, from the same block, worth trying at once */
    assert_true (blockwalk_range_failed (&b));
    assert_int_equal (b.from, BLOCKWALK_FIRST);
    assert_int_equal (b.blocks, BLOCKWALK_FIRST / 4);
    assert_true (blockwalk_range_failed (&b));
    assert_int_equal (b.blocks, BLOCKWALK_FIRST / 16 > BLOCKWALK_MIN ? BLOCKWALK_FIRST / 16 : BLOCKWALK_MIN);
    while (b.blocks > BLOCKWALK_MIN)
        assert_true (blockwalk_range_failed (&b));
    /* at the smallest, the size is not why it failed (a lock, the database away): wait */
    assert_false (blockwalk_range_failed (&b));
    assert_int_equal (b.blocks, BLOCKWALK_MIN);
    assert_int_equal (b.from, BLOCKWALK_FIRST);
}

static void
test_the_walk_ends_at_the_table_it_saw (void **state)
{
    (void) state;
    blockwalk_t b;
    int64_t now = 0;
    blockwalk_init (&b);
    /* an empty table: the first range is the last */
    assert_true (range_took (&b, &now, 1, 0));
    blockwalk_init (&b);
    assert_false (range_took (&b, &now, TIMEOUT_MS / 4, BLOCKWALK_FIRST + 1));
    assert_true (range_took (&b, &now, TIMEOUT_MS / 4, BLOCKWALK_FIRST + 1));
    /* a range that ends exactly at the table's end is the last */
    blockwalk_init (&b);
    assert_true (range_took (&b, &now, TIMEOUT_MS / 4, BLOCKWALK_FIRST));
    /* a table that grew meanwhile: the walk goes on to its new end */
    blockwalk_init (&b);
    assert_false (range_took (&b, &now, TIMEOUT_MS / 4, 2 * BLOCKWALK_FIRST));
    assert_false (range_took (&b, &now, TIMEOUT_MS / 4, 3 * BLOCKWALK_FIRST));
    assert_true (range_took (&b, &now, TIMEOUT_MS / 4, 3 * BLOCKWALK_FIRST));
}

static void
test_a_restart_keeps_the_size_learned (void **state)
{
    (void) state;
    blockwalk_t b = { 0 };
    /* never walked: the first size */
    blockwalk_restart (&b);
    assert_int_equal (b.from, 0);
    assert_int_equal (b.blocks, BLOCKWALK_FIRST);
    int64_t now = 0;
    assert_false (range_took (&b, &now, 1, INT64_MAX));
    assert_false (range_took (&b, &now, 1, INT64_MAX));
    assert_int_equal (b.blocks, 4 * BLOCKWALK_FIRST);
    blockwalk_restart (&b);
    assert_int_equal (b.from, 0);
    assert_int_equal (b.blocks, 4 * BLOCKWALK_FIRST);
}

/* Whatever the server does (fast, slow, failing), the ranges that succeed cover every block of
 * the table once, in order, and the walk ends with the last of them. */
static void
test_the_ranges_that_succeed_cover_the_table_once (void **state)
{
    (void) state;
    unsigned seed = 20261202;
    for (int round = 0; round < 200; round++) {
        int64_t table = rand_r (&seed) % 200000, covered = 0, now = 0;
        blockwalk_t b;
        blockwalk_init (&b);
        for (int step = 0;; step++) {
            assert_true (step < 100000);
            int64_t from = b.from, blocks = b.blocks;
            assert_int_equal (from, covered);               /* no gap, no overlap */
            assert_true (blocks >= BLOCKWALK_MIN && blocks <= BLOCKWALK_MAX);
            if (rand_r (&seed) % 4 == 0) {
                (void) blockwalk_range_failed (&b);
                assert_int_equal (b.from, from);
                continue;
            }
            int done = range_took (&b, &now, rand_r (&seed) % TIMEOUT_MS, table);
            covered += blocks;
            if (done) {
                assert_true (covered >= table);
                assert_true (covered - blocks < table || table == 0);  /* it ended with the last range */
                break;
            }
            assert_true (covered < table);
        }
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_fast_ranges_grow_to_the_largest),
        cmocka_unit_test (test_slow_ranges_shrink_to_the_smallest),
        cmocka_unit_test (test_a_failed_range_is_retried_smaller_from_the_same_block),
        cmocka_unit_test (test_the_walk_ends_at_the_table_it_saw),
        cmocka_unit_test (test_a_restart_keeps_the_size_learned),
        cmocka_unit_test (test_the_ranges_that_succeed_cover_the_table_once),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
