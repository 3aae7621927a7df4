/* test_lograte.c - lines said at most once a second (or an interval of the caller's), and no count
 * of the held-back ones lost */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testexit.h"
#include "lograte.h"

/* The first line is said; the rest of its second are held and counted; the first line after the
 * second carries their count. */
static void
test_one_line_a_second_carrying_the_count (void **state)
{
    (void) state;
    lograte_t lr = { 0 };
    uint64_t held = 99;
    assert_int_equal (lograte_take (&lr, 5000, &held), 1);
    assert_int_equal (held, 0);
    for (int i = 0; i < 250; i++)
        assert_int_equal (lograte_take (&lr, 5000 + i * 3, &held), 0);
    assert_int_equal (lograte_take (&lr, 5999, &held), 0);
    assert_int_equal (lograte_take (&lr, 6000, &held), 1);
    assert_int_equal (held, 251);
    assert_int_equal (lograte_take (&lr, 7500, &held), 1);    /* a quiet second: nothing held */
    assert_int_equal (held, 0);
}

/* With no line after a burst, the housekeeping gets the count once the second has ended, once;
 * its summary counts as the second's line, and a line after it carries nothing twice. */
static void
test_due_gives_the_count_no_line_carried (void **state)
{
    (void) state;
    lograte_t lr = { 0 };
    uint64_t held;
    assert_int_equal (lograte_due (&lr, 0), 0);                /* nothing held */
    assert_int_equal (lograte_take (&lr, 100, &held), 1);
    for (int i = 0; i < 40; i++)
        (void) lograte_take (&lr, 200, &held);
    assert_int_equal (lograte_due (&lr, 1099), 0);             /* the second has not ended */
    assert_int_equal (lograte_due (&lr, 1100), 40);
    assert_int_equal (lograte_due (&lr, 1200), 0);             /* given once */
    assert_int_equal (lograte_take (&lr, 1500, &held), 0);     /* the summary was the second's line */
    assert_int_equal (lograte_due (&lr, 2099), 0);
    assert_int_equal (lograte_take (&lr, 2100, &held), 1);
    assert_int_equal (held, 1);
    assert_int_equal (lograte_due (&lr, 9000), 0);
}

/* Every event is either said or counted exactly once, whatever the mix of lines and
 * housekeeping. */
static void
test_every_event_said_or_counted_once (void **state)
{
    (void) state;
    lograte_t lr = { 0 };
    uint64_t said = 0, counted = 0, held;
    int64_t now = 0;
    for (int i = 0; i < 100000; i++) {
        now += (i * 7919) % 13;                                /* uneven gaps, 0 to 12 ms */
        if (lograte_take (&lr, now, &held)) {
            said++;
            counted += held;
        }
        if (i % 97 == 0)
            counted += lograte_due (&lr, now);
    }
    counted += lograte_due (&lr, now + LOGRATE_INTERVAL_MS);
    assert_int_equal (said + counted, 100000);
    assert_true (said <= (uint64_t) (now / LOGRATE_INTERVAL_MS) + 1);
}

/* A line that stands for a batch counts the batch's events when it is held back. */
static void
test_a_batch_line_counts_its_events (void **state)
{
    (void) state;
    lograte_t lr = { 0 };
    uint64_t held;
    assert_int_equal (lograte_take_n (&lr, 0, 7, &held), 1);  /* said: the line covers its own seven */
    assert_int_equal (held, 0);
    assert_int_equal (lograte_take_n (&lr, 10, 5, &held), 0);
    assert_int_equal (lograte_take (&lr, 20, &held), 0);
    assert_int_equal (lograte_take_n (&lr, 1000, 3, &held), 1);
    assert_int_equal (held, 6);
    assert_int_equal (lograte_take_n (&lr, 1001, 4, &held), 0);
    assert_int_equal (lograte_due (&lr, 2000), 4);
}

/* An interval of the caller's (a connection that fails each second, said every ten) holds lines
 * back for that long, the summary too; zero is a second. */
static void
test_an_interval_of_its_own (void **state)
{
    (void) state;
    lograte_t lr = { .interval_ms = 10000 };
    uint64_t held;
    assert_int_equal (lograte_take (&lr, 0, &held), 1);
    for (int64_t t = 1000; t < 10000; t += 1000)
        assert_int_equal (lograte_take (&lr, t, &held), 0);
    assert_int_equal (lograte_due (&lr, 9999), 0);
    assert_int_equal (lograte_take (&lr, 10000, &held), 1);
    assert_int_equal (held, 9);
    assert_int_equal (lograte_take (&lr, 11000, &held), 0);
    assert_int_equal (lograte_due (&lr, 19999), 0);
    assert_int_equal (lograte_due (&lr, 20000), 1);
    lr.interval_ms = 0;
    assert_int_equal (lograte_take (&lr, 29999, &held), 0);   /* the summary held the interval */
    assert_int_equal (lograte_take (&lr, 30000, &held), 1);
    assert_int_equal (held, 1);
    assert_int_equal (lograte_take (&lr, 30999, &held), 0);
    assert_int_equal (lograte_take (&lr, 31000, &held), 1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_one_line_a_second_carrying_the_count),
        cmocka_unit_test (test_due_gives_the_count_no_line_carried),
        cmocka_unit_test (test_every_event_said_or_counted_once),
        cmocka_unit_test (test_a_batch_line_counts_its_events),
        cmocka_unit_test (test_an_interval_of_its_own),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
