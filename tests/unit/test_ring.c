/* test_ring.c - partition hashing and rendezvous assignment */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "ring.h"

static void
test_hash_vectors (void **state)
{
    /* published FNV-1a 64 test vectors: other-language clients must agree */
    assert_true (ring_hash ("", 0) == 0xcbf29ce484222325ULL);
    assert_true (ring_hash ("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true (ring_hash ("foobar", 6) == 0x85944171f73967e8ULL);
    assert_int_equal (ring_partition ("foobar", 256), 0x85944171f73967e8ULL % 256);
}

static void
test_owner_stable_and_minimal_moves (void **state)
{
    const char *four [] = { "worker-a", "worker-b", "worker-c", "worker-d" };
    const char *three [] = { "worker-a", "worker-b", "worker-d" };          /* c left */
    const char *shuffled [] = { "worker-d", "worker-b", "worker-a", "worker-c" };
    int counts [4] = { 0 };
    for (uint32_t p = 0; p < 256; p++) {
        int o4 = ring_owner (p, four, 4);
        assert_in_range (o4, 0, 3);
        counts [o4]++;
        /* order of the worker list does not matter: brokers agree */
        assert_string_equal (shuffled [ring_owner (p, shuffled, 4)], four [o4]);
        int o3 = ring_owner (p, three, 3);
        if (strcmp (four [o4], "worker-c") != 0)
            assert_string_equal (three [o3], four [o4]);    /* only c's partitions move */
    }
    for (int i = 0; i < 4; i++)
        assert_in_range (counts [i], 256 / 4 / 2, 256 / 4 * 2);    /* roughly balanced */
    assert_int_equal (ring_owner (0, NULL, 0), -1);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_hash_vectors),
        cmocka_unit_test (test_owner_stable_and_minimal_moves),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
