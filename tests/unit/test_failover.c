/* test_failover.c - the rotated commits a worker keeps against a failover's loss: what is kept,
 * and the bounds on it (a count, and the memory FERRULE_FAILOVER_KEEP_MAX_MB allows) with the
 * oldest forgotten first and counted. The check against the database is it_chain_safety's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "failover.h"
#include "mem.h"

/* Keeps one commit of integration id with sealed tokens of ct_len bytes each; returns what
 * failover_keep forgot. */
static uint64_t
keep (failover_t *f, const char *id, size_t ct_len)
{
    static unsigned char ct [8192];
    memset (ct, 'c', sizeof ct);
    assert_true (ct_len <= sizeof ct);
    store_commit_t c;
    memset (&c, 0, sizeof c);
    c.id = id;
    c.access_ct = ct;
    c.access_ct_len = ct_len;
    c.refresh_ct = ct;
    c.refresh_ct_len = ct_len;
    c.refresh_fingerprint = "fp-new";
    c.rotated = 1;
    return failover_keep (f, &c, "fp-spent", 0);
}

static void
test_nothing_kept_when_off (void **state)
{
    (void) state;
    failover_t *f = failover_new (0, 1 << 20);
    assert_int_equal (keep (f, "a:box", 100), 0);
    assert_int_equal (failover_kept (f), 0);
    assert_int_equal (failover_kept_bytes (f), 0);
    failover_destroy (&f);
    assert_null (f);
}

static void
test_commits_kept_with_their_size (void **state)
{
    (void) state;
    failover_t *f = failover_new (30000, 1 << 20);
    for (int i = 0; i < 10; i++) {
        char id [32];
        snprintf (id, sizeof id, "k%d:box", i);
        assert_int_equal (keep (f, id, 1000), 0);
    }
    assert_int_equal (failover_kept (f), 10);
    /* two sealed tokens of 1000 B each, and the id, fingerprint and slot on top */
    assert_true (failover_kept_bytes (f) >= 10 * 2000);
    assert_true (failover_kept_bytes (f) < 10 * 2600);
    assert_int_equal (failover_forgotten (f), 0);
    failover_destroy (&f);
}

/* Large tokens in a burst: the memory stays under its bound, the oldest go first, each counted. */
static void
test_memory_bound_forgets_the_oldest (void **state)
{
    (void) state;
    size_t max = 1 << 20;
    failover_t *f = failover_new (30000, max);
    uint64_t forgotten = 0;
    for (int i = 0; i < 2000; i++) {
        char id [32];
        snprintf (id, sizeof id, "big%d:box", i);
        forgotten += keep (f, id, 3000);         /* Microsoft-sized tokens */
        assert_true (failover_kept_bytes (f) <= max);
    }
    size_t kept = failover_kept (f);
    assert_true (kept > 100);                    /* about 170 of 6 KB fit in 1 MB */
    assert_true (kept < 200);
    assert_int_equal (forgotten + kept, 2000);
    assert_int_equal (failover_forgotten (f), forgotten);
    /* a small one after them is kept, at the cost of one large one at most */
    assert_true (keep (f, "small:box", 10) <= 1);
    assert_true (failover_kept (f) >= kept);
    assert_true (failover_kept_bytes (f) <= max);
    failover_destroy (&f);
}

/* The count's bound holds for commits too small for the memory's to matter. */
static void
test_count_bound (void **state)
{
    (void) state;
    failover_t *f = failover_new (30000, (size_t) 1 << 30);
    uint64_t forgotten = 0;
    for (int i = 0; i < FAILOVER_MAX + 500; i++)
        forgotten += keep (f, "c:box", 8);
    assert_int_equal (failover_kept (f), FAILOVER_MAX);
    assert_int_equal (forgotten, 500);
    failover_destroy (&f);
}

/* A commit larger than the whole bound is not kept, and is counted. */
static void
test_a_commit_larger_than_the_bound (void **state)
{
    (void) state;
    failover_t *f = failover_new (30000, 4096);
    assert_int_equal (keep (f, "a:box", 100), 0);
    size_t bytes = failover_kept_bytes (f);
    assert_int_equal (keep (f, "b:box", 5000), 1);   /* b not kept; a not forgotten for it */
    assert_int_equal (failover_kept (f), 1);
    assert_int_equal (failover_kept_bytes (f), bytes);
    assert_int_equal (failover_forgotten (f), 1);
    failover_destroy (&f);
}

/* The journal records waiting (failover_hold) are waits, and the start-up's release of an earlier
 * run's leases is given their ids, so that it leaves their rows' held leases alone. */
static void
test_held_records_wait_and_are_listed (void **state)
{
    (void) state;
    failover_t *f = failover_new (30000, 1 << 20);
    size_t n = 1;
    const char **ids = failover_waiting_ids (f, &n);
    assert_int_equal (n, 0);
    mem_free (ids);
    failover_hold (f, "a:box", 0);
    failover_hold (f, "b:box", 1);           /* its replay failed */
    assert_true (failover_waits (f, "a:box"));
    assert_false (failover_waits (f, "c:box"));
    assert_false (failover_held_failing (f, "a:box"));
    assert_true (failover_held_failing (f, "b:box"));
    ids = failover_waiting_ids (f, &n);
    assert_int_equal (n, 2);
    assert_true ((strcmp (ids [0], "a:box") == 0 && strcmp (ids [1], "b:box") == 0)
                 || (strcmp (ids [0], "b:box") == 0 && strcmp (ids [1], "a:box") == 0));
    mem_free (ids);
    failover_unhold (f, "a:box");
    assert_false (failover_waits (f, "a:box"));
    assert_true (failover_held_failing (f, "b:box"));    /* moved in the list with its flag */
    ids = failover_waiting_ids (f, &n);
    assert_int_equal (n, 1);
    assert_string_equal (ids [0], "b:box");
    mem_free (ids);
    failover_held_behind (f, "b:box");                   /* found behind since: a failover's wait */
    assert_true (failover_waits (f, "b:box"));
    assert_false (failover_held_failing (f, "b:box"));
    failover_destroy (&f);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_nothing_kept_when_off),
        cmocka_unit_test (test_commits_kept_with_their_size),
        cmocka_unit_test (test_memory_bound_forgets_the_oldest),
        cmocka_unit_test (test_count_bound),
        cmocka_unit_test (test_a_commit_larger_than_the_bound),
        cmocka_unit_test (test_held_records_wait_and_are_listed),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
