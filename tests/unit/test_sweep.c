/* test_sweep.c - the sweep's view of the membership: brokers that list the same workers in
 * another order (each lists them as they joined it) are the same membership, not a change to
 * recompute and log at every PING */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "sweep.h"

/* The workers as a PING's "workers" array. */
static msgpack_object
workers_of (msgpack_object *items, const char *const *ids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        items [i].type = MSGPACK_OBJECT_STR;
        items [i].via.str.ptr = ids [i];
        items [i].via.str.size = (uint32_t) strlen (ids [i]);
    }
    msgpack_object o = { .type = MSGPACK_OBJECT_ARRAY };
    o.via.array.size = n;
    o.via.array.ptr = items;
    return o;
}

/* How many "owning N of M partitions" lines standard error got while fn ran. */
static int
owning_lines (void (*fn) (sweep_t *), sweep_t *s)
{
    char path [] = "/tmp/ferrule-test-sweep-XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    fflush (stderr);
    int saved = dup (2);
    dup2 (fd, 2);
    fn (s);
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    char line [1024];
    int n = 0;
    while (fgets (line, sizeof line, f))
        n += strstr (line, "owning ") != NULL;
    fclose (f);
    close (fd);
    unlink (path);
    return n;
}

static void
two_orders (sweep_t *s)
{
    msgpack_object items [3];
    const char *ab [] = { "w-a", "w-b", "w-c" };
    const char *ba [] = { "w-c", "w-a", "w-b" };
    msgpack_object one = workers_of (items, ab, 3);
    uint32_t owned = sweep_set_membership (s, "w-a", &one, 64, 1000);
    for (int ping = 0; ping < 4; ping++) {
        msgpack_object m = workers_of (items, ping % 2 ? ab : ba, 3);
        assert_int_equal (sweep_set_membership (s, "w-a", &m, 64, 2000 + ping), owned);
    }
}

static void
test_same_workers_in_another_order_are_no_change (void **state)
{
    (void) state;
    sweep_config_t cfg = { 30000, 300, 10, 500, 300000, 3000 };
    sweep_t *s = sweep_new (&cfg);
    assert_int_equal (owning_lines (two_orders, s), 1);
    sweep_destroy (&s);
}

static void
another_worker (sweep_t *s)
{
    msgpack_object items [2];
    const char *a [] = { "w-a" };
    const char *ab [] = { "w-a", "w-b" };
    msgpack_object one = workers_of (items, a, 1);
    assert_int_equal (sweep_set_membership (s, "w-a", &one, 64, 1000), 64);
    msgpack_object two = workers_of (items, ab, 2);
    assert_true (sweep_set_membership (s, "w-a", &two, 64, 2000) < 64);
    msgpack_object fewer = workers_of (items, ab, 2);
    assert_true (sweep_set_membership (s, "w-a", &fewer, 32, 3000) < 32);
}

/* and a real change is one: another worker, another partition count */
static void
test_a_change_is_seen (void **state)
{
    (void) state;
    sweep_config_t cfg = { 30000, 300, 10, 500, 300000, 3000 };
    sweep_t *s = sweep_new (&cfg);
    assert_int_equal (owning_lines (another_worker, s), 3);
    sweep_destroy (&s);
}

/* A configured horizon shorter than one sweep interval would let tokens expire between two passes
 * (a pass every 10 minutes, a 5-minute horizon): every token's horizon is at least the floor the
 * docs promise, the configured one included, so the passes' index scan reaches that far too. */
static void
test_the_horizon_is_never_shorter_than_a_pass (void **state)
{
    (void) state;
    sweep_config_t cfg = { .interval_ms = 600000, .horizon_s = 300, .rate_per_s = 10, .batch = 100,
                           .quiet_ms = 300000, .membership_ms = 10000 };
    sweep_t *s = sweep_new (&cfg);
    assert_true (sweep_horizon (s, 3600) >= 721);      /* 600 s, a fifth more, a second */
    assert_true (sweep_horizon (s, 0) >= 721);         /* a lifetime not known: the configured one */
    assert_int_equal (sweep_horizon (s, 1000), 500);   /* never past half the lifetime */
    sweep_destroy (&s);
    /* a horizon already past the floor is kept as configured */
    cfg.interval_ms = 30000;
    s = sweep_new (&cfg);
    assert_int_equal (sweep_horizon (s, 0), 300);
    assert_int_equal (sweep_horizon (s, 86400), 300);
    assert_int_equal (sweep_horizon (s, 200), 50);     /* a quarter of it, above the floor of 37 */
    sweep_destroy (&s);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_same_workers_in_another_order_are_no_change),
        cmocka_unit_test (test_a_change_is_seen),
        cmocka_unit_test (test_the_horizon_is_never_shorter_than_a_pass),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
