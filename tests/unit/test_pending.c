/* test_pending.c - the broker's requests in flight: unguessable unique sequences, lookup, deadline order */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "pending.h"

static void
test_add_find_remove_and_bytes (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    pending_t *a = pending_add (t, "client-a", 8, "body-one", 8, 300);
    pending_t *b = pending_add (t, "client-b", 8, "second body", 11, 100);
    assert_non_null (a);
    assert_non_null (b);
    assert_true (a->seq != b->seq);
    assert_int_equal (pending_count (t), 2);
    assert_int_equal (pending_bytes (t), 8 + 11);
    assert_ptr_equal (pending_find (t, a->seq), a);
    assert_memory_equal (a->client, "client-a", 8);
    assert_memory_equal (b->body, "second body", 11);
    uint64_t gone = a->seq;
    pending_remove (t, a);
    assert_null (pending_find (t, gone));
    assert_int_equal (pending_count (t), 1);
    assert_int_equal (pending_bytes (t), 11);
    pending_table_destroy (&t);
    assert_null (t);
}

static void
test_deadline_order (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    const int64_t deadlines [] = { 500, 100, 900, 300, 100, 700 };
    for (size_t i = 0; i < sizeof deadlines / sizeof deadlines [0]; i++)
        pending_add (t, "c", 1, "x", 1, deadlines [i]);
    int64_t last = -1;
    size_t n = 0;
    for (pending_t *p = pending_first (t); p; p = p->next) {
        assert_true (p->deadline_ms >= last);
        last = p->deadline_ms;
        n++;
    }
    assert_int_equal (n, 6);
    /* removing the earliest exposes the next */
    pending_remove (t, pending_first (t));
    assert_int_equal (pending_first (t)->deadline_ms, 100);
    pending_table_destroy (&t);
}

static void
test_sequences_unique_among_many (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    enum { N = 5000 };
    static uint64_t seqs [N];
    for (int i = 0; i < N; i++)
        seqs [i] = pending_add (t, "c", 1, "b", 1, i)->seq;
    for (int i = 0; i < N; i++)
        assert_non_null (pending_find (t, seqs [i]));
    /* 64 random bits: sequences are neither 0..N nor consecutive */
    int consecutive = 0;
    for (int i = 1; i < N; i++)
        consecutive += seqs [i] == seqs [i - 1] + 1;
    assert_true (consecutive < 3);
    pending_table_destroy (&t);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_add_find_remove_and_bytes),
        cmocka_unit_test (test_deadline_order),
        cmocka_unit_test (test_sequences_unique_among_many),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
