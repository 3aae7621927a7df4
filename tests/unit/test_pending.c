/* test_pending.c - the broker's requests in flight: unguessable unique sequences, lookup, arrival
 * and deadline order, bodies kept as the frames received, entries reused */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "pending.h"

/* pending_add with a body frame made from text, closed after as the broker's frames are. */
static pending_t *
add (pending_table_t *t, const char *client, const void *body, size_t len, int64_t deadline_ms)
{
    zmq_msg_t m;
    assert_int_equal (zmq_msg_init_size (&m, len), 0);
    memcpy (zmq_msg_data (&m), body, len);
    pending_t *p = pending_add (t, client, strlen (client), &m, deadline_ms);
    assert_int_equal (zmq_msg_size (&m), 0);        /* moved into the entry */
    zmq_msg_close (&m);
    return p;
}

/* A fixed pseudo-random sequence (xorshift64), the same on every run. */
static uint64_t
next_random (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* A deadline as the broker makes them: its now plus the client's 1 .. 300000 ms, here from a few
 * typical values (many equal) or anywhere in the range. */
static int64_t
random_deadline (uint64_t *state)
{
    static const int64_t typical [] = { 500, 1000, 5000, 30000 };
    int64_t now = 1000000 + (int64_t) (next_random (state) % 1000);
    uint64_t r = next_random (state);
    if (r % 2)
        return now + typical [(r / 2) % 4];
    return now + 1 + (int64_t) ((r / 2) % 300000);
}

/* pending_earliest against the minimum found by walking every entry; the walk's length against
 * the count. */
static void
check_earliest (const pending_table_t *t)
{
    const pending_t *min = NULL;
    size_t n = 0;
    for (const pending_t *p = pending_first (t); p; p = p->next) {
        if (!min || p->deadline_ms < min->deadline_ms)
            min = p;
        n++;
    }
    assert_int_equal (n, pending_count (t));
    if (!min) {
        assert_null (pending_earliest (t));
        return;
    }
    assert_non_null (pending_earliest (t));
    assert_int_equal (pending_earliest (t)->deadline_ms, min->deadline_ms);
}

static void
test_add_find_remove_and_bytes (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    pending_t *a = add (t, "client-a", "body-one", 8, 300);
    pending_t *b = add (t, "client-b", "second body", 11, 100);
    assert_non_null (a);
    assert_non_null (b);
    assert_true (a->seq != b->seq);
    assert_int_equal (pending_count (t), 2);
    assert_int_equal (pending_bytes (t), 8 + 11);
    assert_ptr_equal (pending_find (t, a->seq), a);
    assert_memory_equal (a->client, "client-a", 8);
    assert_int_equal (b->body_len, 11);
    assert_int_equal (zmq_msg_size (&b->body), 11);
    assert_memory_equal (zmq_msg_data (&b->body), "second body", 11);
    uint64_t gone = a->seq;
    pending_remove (t, a);
    assert_null (pending_find (t, gone));
    assert_int_equal (pending_count (t), 1);
    assert_int_equal (pending_bytes (t), 11);
    pending_table_destroy (&t);
    assert_null (t);
}

/* The walk from pending_first is in arrival order; pending_earliest follows the deadlines. */
static void
test_arrival_and_deadline_order (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    const int64_t deadlines [] = { 500, 100, 900, 300, 100, 700 };
    enum { N = sizeof deadlines / sizeof deadlines [0] };
    for (size_t i = 0; i < N; i++)
        add (t, "c", "x", 1, deadlines [i]);
    size_t n = 0;
    for (pending_t *p = pending_first (t); p; p = p->next) {
        assert_true (n < N);
        assert_int_equal (p->deadline_ms, deadlines [n]);
        n++;
    }
    assert_int_equal (n, N);
    assert_int_equal (pending_earliest (t)->deadline_ms, 100);
    /* removing the earliest exposes the next: the other 100, then 300 */
    pending_remove (t, pending_earliest (t));
    assert_int_equal (pending_earliest (t)->deadline_ms, 100);
    pending_remove (t, pending_earliest (t));
    assert_int_equal (pending_earliest (t)->deadline_ms, 300);
    /* and the walk keeps the arrival order of the rest */
    const int64_t rest [] = { 500, 900, 300, 700 };
    n = 0;
    for (pending_t *p = pending_first (t); p; p = p->next) {
        assert_true (n < 4);
        assert_int_equal (p->deadline_ms, rest [n]);
        n++;
    }
    assert_int_equal (n, 4);
    pending_table_destroy (&t);
}

/* Mixed deadlines, entries removed from anywhere: after every add and every removal the earliest
 * is the true minimum, and what is left still comes out in deadline order. */
static void
test_earliest_mixed_deadlines (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    enum { N = 3000 };
    static pending_t *live [N];
    size_t nlive = 0;
    uint64_t rnd = 0x9e3779b97f4a7c15u;
    check_earliest (t);
    for (int i = 0; i < N; i++) {
        live [nlive++] = add (t, "c", "b", 1, random_deadline (&rnd));
        check_earliest (t);
        /* now and then one goes: any of them, or the earliest as the expiry does */
        uint64_t r = next_random (&rnd);
        if (r % 4 == 0) {
            size_t k = (size_t) ((r / 4) % nlive);
            pending_remove (t, live [k]);
            live [k] = live [--nlive];
            check_earliest (t);
        }
        else
        if (r % 16 == 1) {
            pending_t *e = pending_earliest (t);
            for (size_t k = 0; k < nlive; k++)
                if (live [k] == e) {
                    live [k] = live [--nlive];
                    break;
                }
            pending_remove (t, e);
            check_earliest (t);
        }
    }
    /* then half of what is left, at random */
    for (size_t stop = nlive / 2; nlive > stop; ) {
        size_t k = (size_t) (next_random (&rnd) % nlive);
        pending_remove (t, live [k]);
        live [k] = live [--nlive];
        check_earliest (t);
    }
    assert_int_equal (pending_count (t), nlive);
    for (size_t k = 0; k < nlive; k++)
        assert_ptr_equal (pending_find (t, live [k]->seq), live [k]);
    /* a misplaced entry deep down shows when the rest goes earliest first */
    int64_t last = INT64_MIN;
    pending_t *p;
    while ((p = pending_earliest (t))) {
        assert_true (p->deadline_ms >= last);
        last = p->deadline_ms;
        pending_remove (t, p);
        check_earliest (t);
    }
    assert_int_equal (pending_count (t), 0);
    pending_table_destroy (&t);
}

/* After removals from anywhere (the first, the last, the middle), the walk from pending_first
 * visits every entry left exactly once, oldest first, and prev mirrors next. */
static void
test_walk_arrival_order_after_removals (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    enum { N = 3000 };
    static pending_t *entry [N];
    static int gone [N], seen [N];
    uint64_t rnd = 7;
    for (uint32_t i = 0; i < N; i++) {
        entry [i] = add (t, "c", "b", 1, random_deadline (&rnd));
        entry [i]->partition = i;           /* the arrival number, in a field the test may write */
    }
    size_t left = N;
    pending_remove (t, entry [0]);
    gone [0] = 1;
    pending_remove (t, entry [N - 1]);
    gone [N - 1] = 1;
    left -= 2;
    for (int k = 0; k < N / 3; k++) {
        size_t i = (size_t) (next_random (&rnd) % N);
        if (gone [i])
            continue;
        pending_remove (t, entry [i]);
        gone [i] = 1;
        left--;
    }
    /* the entry freed last may come back: a new arrival goes at the end whatever its deadline */
    pending_t *late = add (t, "c", "b", 1, 1);
    left++;
    assert_int_equal (pending_count (t), left);

    size_t n = 0;
    long before = -1;
    const pending_t *prev = NULL;
    for (pending_t *p = pending_first (t); p; p = p->next) {
        assert_ptr_equal (p->prev, prev);
        prev = p;
        n++;
        if (p == late) {
            assert_null (p->next);
            continue;
        }
        uint32_t i = p->partition;
        assert_true (i < N);
        assert_ptr_equal (entry [i], p);
        assert_false (gone [i]);
        assert_false (seen [i]);
        seen [i] = 1;
        assert_true ((long) i > before);
        before = (long) i;
    }
    assert_int_equal (n, left);
    for (size_t i = 0; i < N; i++)
        assert_int_equal (seen [i], !gone [i]);
    assert_ptr_equal (pending_earliest (t), late);
    pending_table_destroy (&t);
}

/* Removing the earliest again and again gives the deadlines in order, every entry once. */
static void
test_drain_by_earliest (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    enum { N = 3000 };
    uint64_t rnd = 42;
    for (int i = 0; i < N; i++)
        add (t, "c", "b", 1, random_deadline (&rnd));
    int64_t last = INT64_MIN;
    size_t n = 0;
    pending_t *p;
    while ((p = pending_earliest (t))) {
        assert_true (p->deadline_ms >= last);
        last = p->deadline_ms;
        pending_remove (t, p);
        n++;
    }
    assert_int_equal (n, N);
    assert_int_equal (pending_count (t), 0);
    assert_null (pending_first (t));
    /* the heap works again after being emptied */
    add (t, "c", "b", 1, 7);
    add (t, "c", "b", 1, 3);
    assert_int_equal (pending_earliest (t)->deadline_ms, 3);
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
        seqs [i] = add (t, "c", "b", 1, i)->seq;
    for (int i = 0; i < N; i++)
        assert_non_null (pending_find (t, seqs [i]));
    /* 64 random bits: sequences are neither 0..N nor consecutive */
    int consecutive = 0;
    for (int i = 1; i < N; i++)
        consecutive += seqs [i] == seqs [i - 1] + 1;
    assert_true (consecutive < 3);
    pending_table_destroy (&t);
}

/* A removed entry comes back for the next request with every field the broker reads reset, and its
 * body can be sent again and again: each send is a copy that shares the buffer. */
static void
test_reuse_and_body_frame (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    char big [200];
    memset (big, 'b', sizeof big);
    pending_t *a = add (t, "client-a", big, sizeof big, 100);
    snprintf (a->rid, sizeof a->rid, "r-1");
    a->rid_len = 3;
    snprintf (a->integration, sizeof a->integration, "acct:1");
    a->has_integration = 1;
    snprintf (a->client_name, sizeof a->client_name, "svc");
    snprintf (a->worker, sizeof a->worker, "w1");
    a->op = 3;
    a->partition = 9;
    a->attempts = 2;

    /* what broker_route sends: a copy, while the entry keeps its own */
    zmq_msg_t copy;
    zmq_msg_init (&copy);
    assert_int_equal (zmq_msg_copy (&copy, &a->body), 0);
    assert_int_equal (zmq_msg_size (&copy), sizeof big);
    assert_ptr_equal (zmq_msg_data (&copy), zmq_msg_data (&a->body));   /* shared, not copied */
    zmq_msg_close (&copy);
    assert_memory_equal (zmq_msg_data (&a->body), big, sizeof big);

    pending_t *old = a;
    pending_remove (t, a);
    assert_int_equal (pending_spare (t), 1);
    assert_int_equal (pending_bytes (t), 0);
    pending_t *b = add (t, "client-b", "tiny", 4, 50);
    assert_ptr_equal (b, old);                      /* the same entry, reused */
    assert_int_equal (pending_spare (t), 0);
    assert_string_equal (b->rid, "");
    assert_int_equal (b->rid_len, 0);
    assert_string_equal (b->integration, "");
    assert_int_equal (b->has_integration, 0);
    assert_string_equal (b->client_name, "");
    assert_string_equal (b->worker, "");
    assert_int_equal (b->op, 0);
    assert_int_equal (b->partition, 0);
    assert_int_equal (b->attempts, 0);
    assert_int_equal (b->client_len, 8);
    assert_memory_equal (b->client, "client-b", 8);
    assert_int_equal (b->body_len, 4);
    assert_memory_equal (zmq_msg_data (&b->body), "tiny", 4);
    assert_int_equal (pending_bytes (t), 4);
    pending_table_destroy (&t);
}

/* At most PENDING_SPARE entries are kept; the rest are freed. */
static void
test_spare_bounded (void **state)
{
    (void) state;
    pending_table_t *t = pending_table_new ();
    enum { N = PENDING_SPARE + 100 };
    for (int i = 0; i < N; i++)
        add (t, "c", "b", 1, i);
    while (pending_first (t))
        pending_remove (t, pending_first (t));
    assert_int_equal (pending_count (t), 0);
    assert_int_equal (pending_spare (t), PENDING_SPARE);
    pending_table_destroy (&t);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_add_find_remove_and_bytes),
        cmocka_unit_test (test_arrival_and_deadline_order),
        cmocka_unit_test (test_reuse_and_body_frame),
        cmocka_unit_test (test_spare_bounded),
        cmocka_unit_test (test_sequences_unique_among_many),
        cmocka_unit_test (test_earliest_mixed_deadlines),
        cmocka_unit_test (test_walk_arrival_order_after_removals),
        cmocka_unit_test (test_drain_by_earliest),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
