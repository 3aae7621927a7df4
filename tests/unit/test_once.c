/* test_once.c - a broker's copies of an administering request: dropped while the first runs,
 * answered again once it has answered, forgotten at the deadline or past the bounds */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "once.h"

static const unsigned char seq1 [8] = { 0, 0, 0, 0, 0, 0, 0, 1 };
static const unsigned char seq2 [8] = { 0, 0, 0, 0, 0, 0, 0, 2 };

static once_state_t
begin (once_t *o, int link, const char *client, const unsigned char *seq, const char *body, int64_t deadline,
       int64_t now, once_reply_t *r)
{
    return once_begin (o, link, client, strlen (client), seq, body, strlen (body), deadline, now, r);
}

static void
test_copy_dropped_then_answered_again (void **state)
{
    (void) state;
    once_t *o = once_new ();
    once_reply_t r = { 0 };
    assert_int_equal (begin (o, 0, "C1", seq1, "callback S", 5000, 0, &r), ONCE_NEW);
    /* a copy while the first runs: dropped */
    assert_int_equal (begin (o, 0, "C1", seq1, "callback S", 5000, 10, &r), ONCE_RUNNING);
    /* another origin is another request: another client, sequence or broker link */
    assert_int_equal (begin (o, 0, "C2", seq1, "callback S", 5000, 10, &r), ONCE_NEW);
    assert_int_equal (begin (o, 0, "C1", seq2, "callback S", 5000, 10, &r), ONCE_NEW);
    assert_int_equal (begin (o, 1, "C1", seq1, "callback S", 5000, 10, &r), ONCE_NEW);
    once_answered (o, 0, "C1", 2, seq1, &(once_reply_t) { "ANSWER", 6, "state_invalid" });
    /* a second answer to it changes nothing: the first went */
    once_answered (o, 0, "C1", 2, seq1, &(once_reply_t) { "OTHER", 5, "ok" });
    assert_int_equal (begin (o, 0, "C1", seq1, "callback S", 5000, 20, &r), ONCE_ANSWERED);
    assert_int_equal (r.len, 6);
    assert_memory_equal (r.body, "ANSWER", 6);
    assert_string_equal (r.outcome, "state_invalid");
    /* an answer to one never remembered is not kept */
    once_answered (o, 2, "C9", 2, seq1, &(once_reply_t) { "X", 1, "ok" });
    assert_int_equal (once_count (o), 4);
    once_destroy (&o);
    assert_null (o);
}

static void
test_same_origin_other_body_is_new (void **state)
{
    (void) state;
    once_t *o = once_new ();
    once_reply_t r = { 0 };
    assert_int_equal (begin (o, 0, "C1", seq1, "apikey_create a", 5000, 0, &r), ONCE_NEW);
    once_answered (o, 0, "C1", 2, seq1, &(once_reply_t) { "KEY", 3, "ok" });
    /* a restarted broker numbers from the start again: its request is not the one answered */
    assert_int_equal (begin (o, 0, "C1", seq1, "apikey_create b", 5000, 10, &r), ONCE_NEW);
    assert_int_equal (begin (o, 0, "C1", seq1, "apikey_create b", 5000, 10, &r), ONCE_RUNNING);
    assert_int_equal (once_count (o), 1);
    once_destroy (&o);
}

static void
test_forgotten_at_the_deadline (void **state)
{
    (void) state;
    once_t *o = once_new ();
    once_reply_t r = { 0 };
    assert_int_equal (begin (o, 0, "C1", seq1, "b", 100, 0, &r), ONCE_NEW);
    assert_int_equal (begin (o, 0, "C1", seq1, "b", 100, 100, &r), ONCE_RUNNING);
    /* past its deadline no broker sends it again: a request with its origin is a new one */
    assert_int_equal (begin (o, 0, "C1", seq1, "b", 300, 101, &r), ONCE_NEW);
    assert_int_equal (once_count (o), 1);
    assert_int_equal (once_forgotten (o), 0);
    once_destroy (&o);
}

static void
test_bounded (void **state)
{
    (void) state;
    once_t *o = once_new ();
    once_reply_t r = { 0 };
    unsigned char seq [8] = { 0 };
    for (uint32_t i = 0; i < ONCE_MAX_ENTRIES + 10; i++) {
        memcpy (seq, &i, sizeof i);
        assert_int_equal (begin (o, 0, "C", seq, "b", 1000000, 0, &r), ONCE_NEW);
    }
    assert_int_equal (once_count (o), ONCE_MAX_ENTRIES);
    assert_int_equal (once_forgotten (o), 10);
    /* the oldest went first */
    uint32_t first = 0;
    memcpy (seq, &first, sizeof first);
    assert_int_equal (begin (o, 0, "C", seq, "b", 1000000, 0, &r), ONCE_NEW);
    once_destroy (&o);

    /* and the answers kept: one of half the bound, then another, forgets the first */
    o = once_new ();
    static char big [ONCE_MAX_BYTES / 2 + 1];
    memset (big, 'a', sizeof big);
    assert_int_equal (begin (o, 0, "C", seq1, "b", 1000000, 0, &r), ONCE_NEW);
    once_answered (o, 0, "C", 1, seq1, &(once_reply_t) { big, sizeof big, "ok" });
    assert_int_equal (begin (o, 0, "C", seq2, "b", 1000000, 0, &r), ONCE_NEW);
    once_answered (o, 0, "C", 1, seq2, &(once_reply_t) { big, sizeof big, "ok" });
    assert_int_equal (once_count (o), 1);
    assert_int_equal (begin (o, 0, "C", seq2, "b", 1000000, 0, &r), ONCE_ANSWERED);
    once_destroy (&o);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_copy_dropped_then_answered_again),
        cmocka_unit_test (test_same_origin_other_body_is_new),
        cmocka_unit_test (test_forgotten_at_the_deadline),
        cmocka_unit_test (test_bounded),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
