/* test_share.c - each client connection's share of the pending requests: counted per connection,
 * colliding numbers kept apart, an entry gone with its last request, connection 0 never counted */
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

static void
test_counted_per_connection (void **state)
{
    (void) state;
    share_t *s = share_new ();
    share_take (s, 1, 100);
    share_take (s, 1, 50);
    share_take (s, 2, 7);
    share_take (s, 1 + 1024, 9);            /* the same bucket as 1 */
    assert_held (s, 1, 2, 150);
    assert_held (s, 2, 1, 7);
    assert_held (s, 1 + 1024, 1, 9);
    assert_held (s, 3, 0, 0);
    share_give (s, 1, 100);
    assert_held (s, 1, 1, 50);
    share_give (s, 1, 50);
    assert_held (s, 1, 0, 0);
    assert_held (s, 1 + 1024, 1, 9);        /* its neighbour in the bucket stays */
    share_take (s, 1, 5);                   /* and the connection comes back from nothing */
    assert_held (s, 1, 1, 5);
    share_destroy (&s);
    assert_null (s);
    share_destroy (&s);
}

static void
test_connection_zero_not_counted (void **state)
{
    (void) state;
    share_t *s = share_new ();
    share_take (s, 0, 100);
    assert_held (s, 0, 0, 0);
    share_give (s, 0, 100);
    assert_held (s, 0, 0, 0);
    share_destroy (&s);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_counted_per_connection),
        cmocka_unit_test (test_connection_zero_not_counted),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
