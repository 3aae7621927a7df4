/* test_share.c - each client's share of the pending requests: counted per holder, colliding
 * numbers kept apart, an entry gone with its last request, holder 0 never counted, a name's holder
 * apart from every connection's */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testexit.h"
#include "share.h"

static void
assert_held (const share_t *s, uint64_t conn, size_t requests, size_t bytes)
{
    size_t r, b;
    share_held (s, conn, &r, &b);
    assert_int_equal (r, requests);
    assert_int_equal (b, bytes);
}

/* One request of bytes for conn, with no share to stop it. */
static void
take (share_t *s, uint64_t conn, size_t bytes)
{
    size_t r, b;
    assert_int_equal (share_take (s, conn, bytes, SIZE_MAX, SIZE_MAX, &r, &b), 0);
}

static void
test_counted_per_connection (void **state)
{
    (void) state;
    share_t *s = share_new ();
    take (s, 1, 100);
    take (s, 1, 50);
    take (s, 2, 7);
    take (s, 1 + 1024, 9);                  /* the same bucket as 1 */
    assert_held (s, 1, 2, 150);
    assert_held (s, 2, 1, 7);
    assert_held (s, 1 + 1024, 1, 9);
    assert_held (s, 3, 0, 0);
    share_give (s, 1, 100);
    assert_held (s, 1, 1, 50);
    share_give (s, 1, 50);
    assert_held (s, 1, 0, 0);
    assert_held (s, 1 + 1024, 1, 9);        /* its neighbour in the bucket stays */
    take (s, 1, 5);                         /* and the connection comes back from nothing */
    assert_held (s, 1, 1, 5);
    share_destroy (&s);
    assert_null (s);
    share_destroy (&s);
}

/* Past its share, of requests or of bytes, a connection's request is refused, nothing taken, and
 * what it holds is said; another connection is not held back by it. */
static void
test_refused_past_its_share (void **state)
{
    (void) state;
    share_t *s = share_new ();
    size_t r = 99, b = 99;
    assert_int_equal (share_take (s, 1, 60, 2, 100, &r, &b), 0);
    assert_int_equal (share_take (s, 1, 50, 2, 100, &r, &b), -1);     /* 110 bytes of 100 */
    assert_int_equal (r, 1);
    assert_int_equal (b, 60);
    assert_int_equal (share_take (s, 1, 40, 2, 100, &r, &b), 0);
    assert_int_equal (share_take (s, 1, 0, 2, 100, &r, &b), -1);      /* 2 requests of 2 */
    assert_int_equal (r, 2);
    assert_int_equal (b, 100);
    assert_held (s, 1, 2, 100);
    assert_int_equal (share_take (s, 2, 100, 2, 100, &r, &b), 0);
    share_give (s, 1, 60);
    assert_int_equal (share_take (s, 1, 10, 2, 100, &r, &b), 0);      /* room again */
    assert_held (s, 1, 2, 50);
    assert_int_equal (share_take (s, 0, 1000, 1, 1, &r, &b), 0);      /* connection 0: never counted */
    share_destroy (&s);
}

/* A connection holding nothing gets one request whatever its size: a body larger than its byte
 * share was refused for ever (FERRULE_PENDING_SHARE 1 of a 1 MiB FERRULE_MAX_PENDING_BYTES is
 * 10 KB, below an import's 12 KB), with a hint to wait for answers that were never coming; the
 * docs promise "at least one request". The next one waits for it. */
static void
test_one_request_whatever_its_size (void **state)
{
    (void) state;
    share_t *s = share_new ();
    size_t r = 99, b = 99;
    assert_int_equal (share_take (s, 2, 12000, 2, 10485, &r, &b), 0);
    assert_held (s, 2, 1, 12000);
    assert_int_equal (share_take (s, 2, 1, 2, 10485, &r, &b), -1);
    assert_int_equal (r, 1);
    assert_int_equal (b, 12000);
    share_give (s, 2, 12000);
    assert_held (s, 2, 0, 0);
    share_destroy (&s);
}

static void
test_connection_zero_not_counted (void **state)
{
    (void) state;
    share_t *s = share_new ();
    take (s, 0, 100);
    assert_held (s, 0, 0, 0);
    share_give (s, 0, 100);
    assert_held (s, 0, 0, 0);
    share_destroy (&s);
}

/* A name's holder is the same for the same name, apart for another, never 0 and never a
 * connection's number (below 2^63); its requests are counted like a connection's. */
static void
test_holder_of_a_name (void **state)
{
    (void) state;
    uint64_t a = share_holder_of_name ("billing"), b = share_holder_of_name ("gateway");
    assert_true (a == share_holder_of_name ("billing"));
    assert_true (a != b);
    assert_true (share_holder_of_name ("") != 0);
    assert_true (a >> 63 == 1 && b >> 63 == 1 && share_holder_of_name ("") >> 63 == 1);
    share_t *s = share_new ();
    take (s, a, 10);
    take (s, a, 20);
    take (s, a & ~(1ULL << 63), 5);         /* a connection of the same low bits */
    assert_held (s, a, 2, 30);
    assert_held (s, b, 0, 0);
    assert_held (s, a & ~(1ULL << 63), 1, 5);
    share_give (s, a, 10);
    share_give (s, a, 20);
    assert_held (s, a, 0, 0);
    share_destroy (&s);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_counted_per_connection),
        cmocka_unit_test (test_refused_past_its_share),
        cmocka_unit_test (test_one_request_whatever_its_size),
        cmocka_unit_test (test_connection_zero_not_counted),
        cmocka_unit_test (test_holder_of_a_name),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
