/* test_registry.c - the broker's view of its workers: heartbeats, draining, expiry, partition owners */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "registry.h"

static void
test_seen_adds_once_and_assigns_every_partition (void **state)
{
    (void) state;
    registry_t *r = registry_new (64, 3000);
    assert_null (registry_owner (r, 0));                     /* nobody yet */
    assert_int_equal (registry_seen (r, "w1", 0, -1, 0, 1000), 1);  /* the map changed */
    assert_int_equal (registry_seen (r, "w1", 0, -1, 0, 1500), 0);  /* a heartbeat only */
    assert_int_equal (registry_seen (r, "w2", 0, -1, 0, 1500), 1);
    assert_int_equal (registry_count (r), 2);
    assert_int_equal (registry_live_count (r), 2);
    assert_int_equal (registry_partitions (r), 64);
    assert_int_equal (registry_partitions_owned (r), 64);
    int w1 = 0, w2 = 0;
    for (uint32_t p = 0; p < 64; p++) {
        const char *o = registry_owner (r, p);
        assert_non_null (o);
        w1 += strcmp (o, "w1") == 0;
        w2 += strcmp (o, "w2") == 0;
    }
    assert_int_equal (w1 + w2, 64);
    assert_true (w1 > 0 && w2 > 0);                          /* both own some */
    registry_destroy (&r);
    assert_null (r);
}

static void
test_draining_worker_owns_nothing (void **state)
{
    (void) state;
    registry_t *r = registry_new (32, 3000);
    registry_seen (r, "a", 0, -1, 0, 0);
    registry_seen (r, "b", 0, -1, 0, 0);
    assert_int_equal (registry_seen (r, "b", 1, -1, 0, 10), 1);     /* draining changes the map */
    assert_int_equal (registry_live_count (r), 1);
    assert_int_equal (registry_count (r), 2);
    assert_true (registry_known (r, "b"));
    for (uint32_t p = 0; p < 32; p++)
        assert_string_equal (registry_owner (r, p), "a");
    int draining = 0;
    int found = 0;
    for (size_t i = 0; i < registry_count (r); i++)
        if (strcmp (registry_worker_at (r, i, &draining), "b") == 0) {
            found = 1;
            assert_true (draining);
        }
    assert_true (found);
    registry_destroy (&r);
}

/* A reply from a draining worker keeps it alive and draining: only its HELLO changes that. */
static void
test_touch_keeps_draining (void **state)
{
    (void) state;
    registry_t *r = registry_new (32, 3000);
    char out [4][REGISTRY_MAX_WORKER_ID + 1];
    registry_seen (r, "a", 0, -1, 0, 0);
    registry_seen (r, "b", 1, -1, 0, 0);
    assert_int_equal (registry_touch (r, "b", 2500), 1);
    assert_int_equal (registry_touch (r, "nobody", 2500), 0);
    assert_false (registry_known (r, "nobody"));
    assert_int_equal (registry_live_count (r), 1);
    for (uint32_t p = 0; p < 32; p++)
        assert_string_equal (registry_owner (r, p), "a");
    assert_int_equal (registry_expired (r, 4000, out, 4), 1);   /* "a" only: "b" was heard at 2500 */
    assert_string_equal (out [0], "a");
    registry_destroy (&r);
}

/* A HELLO from another process under a known id is a restart; one that says nothing of its
 * process, or the same one, is a heartbeat. */
static void
test_restart_told_by_pid_or_session (void **state)
{
    (void) state;
    registry_t *r = registry_new (8, 3000);
    assert_false (registry_restarted (r, "w1", 100, 7));          /* unknown: a join, not a restart */
    registry_seen (r, "w1", 0, 100, 7, 0);
    assert_false (registry_restarted (r, "w1", 100, 7));
    assert_false (registry_restarted (r, "w1", -1, 0));           /* an older worker's HELLO */
    assert_true (registry_restarted (r, "w1", 101, 0));
    assert_true (registry_restarted (r, "w1", 100, 8));           /* pid 1 in a container, again */
    assert_false (registry_restarted (r, "w2", 101, 8));
    registry_seen (r, "w2", 0, -1, 0, 0);                          /* says nothing of its process */
    assert_false (registry_restarted (r, "w2", 5, 9));
    registry_seen (r, "w2", 0, 5, 9, 10);                          /* from now on it is known */
    assert_true (registry_restarted (r, "w2", 6, 9));
    registry_destroy (&r);
}

/* The connection a worker's HELLOs come on: each HELLO says which, and the one before is returned
 * so the broker can tell a connection made again; an unknown one (0) changes nothing. */
static void
test_connection_recorded (void **state)
{
    (void) state;
    registry_t *r = registry_new (8, 3000);
    assert_int_equal (registry_connection (r, "w1", 4), 0);      /* unknown worker */
    registry_seen (r, "w1", 0, 100, 7, 0);
    assert_int_equal (registry_connection (r, "w1", 4), 0);      /* its first */
    assert_int_equal (registry_connection (r, "w1", 4), 4);      /* the same */
    assert_int_equal (registry_connection (r, "w1", 0), 4);      /* no descriptor: kept */
    assert_int_equal (registry_connection (r, "w1", 9), 4);      /* connected again */
    assert_int_equal (registry_connection (r, "w1", 9), 9);
    registry_remove (r, "w1");
    registry_seen (r, "w1", 0, 101, 8, 10);                        /* a new process starts afresh */
    assert_int_equal (registry_connection (r, "w1", 12), 0);
    registry_destroy (&r);
}

/* The key a worker's HELLO came with is kept per worker, for the reload's check; a value of
 * another length (none over plaintext) records none, and an unknown worker records nothing. */
static void
test_key_recorded (void **state)
{
    (void) state;
    static const char k1 [] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    static const char k2 [] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
    registry_t *r = registry_new (8, 3000);
    registry_set_key (r, "ghost", k1);                      /* not known: nothing */
    assert_int_equal (registry_count (r), 0);
    assert_string_equal (registry_key_at (r, 0), "");        /* out of range */
    registry_seen (r, "w1", 0, -1, 0, 1000);
    assert_string_equal (registry_key_at (r, 0), "");
    registry_set_key (r, "w1", k1);
    assert_string_equal (registry_key_at (r, 0), k1);
    registry_set_key (r, "w1", k2);                          /* the last HELLO's */
    assert_string_equal (registry_key_at (r, 0), k2);
    registry_set_key (r, "w1", "short");
    assert_string_equal (registry_key_at (r, 0), "");
    registry_set_key (r, "w1", k1);
    registry_set_key (r, "w1", NULL);
    assert_string_equal (registry_key_at (r, 0), "");
    registry_destroy (&r);
}

static void
test_expiry_and_removal (void **state)
{
    (void) state;
    registry_t *r = registry_new (16, 3000);
    char out [4][REGISTRY_MAX_WORKER_ID + 1];
    registry_seen (r, "old", 0, -1, 0, 0);
    registry_seen (r, "fresh", 0, -1, 0, 2500);
    assert_int_equal (registry_expired (r, 2999, out, 4), 0);
    size_t n = registry_expired (r, 3500, out, 4);
    assert_int_equal (n, 1);
    assert_string_equal (out [0], "old");
    assert_int_equal (registry_remove (r, "old"), 1);
    assert_int_equal (registry_remove (r, "old"), 0);
    assert_false (registry_known (r, "old"));
    for (uint32_t p = 0; p < 16; p++)
        assert_string_equal (registry_owner (r, p), "fresh");
    registry_remove (r, "fresh");
    assert_null (registry_owner (r, 3));
    assert_int_equal (registry_partitions_owned (r), 0);
    registry_destroy (&r);
}

/* The broker's own pause is not counted as its workers' silence (registry_discount), but a worker
 * heard after the pause (its HELLO read before the tick that discounts) was credited the pause
 * again: seen "in the future", it was counted lost that much later after it went silent. */
static void
test_discount_credits_no_one_past_now (void **state)
{
    (void) state;
    registry_t *r = registry_new (16, 3000);
    registry_seen (r, "quiet", 0, -1, 0, 1000);      /* silent through the pause */
    registry_seen (r, "heard", 0, -1, 0, 61000);     /* its HELLO read as the pause ended */
    registry_discount (r, 59000, 61000);             /* a 60 s pause at 61000 */
    char out [4][REGISTRY_MAX_WORKER_ID + 1];
    assert_int_equal (registry_expired (r, 63000, out, 4), 0);
    /* "heard" went silent at 61000: lost past the timeout, not a pause later */
    assert_int_equal (registry_expired (r, 64001, out, 4), 2);
    registry_destroy (&r);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_seen_adds_once_and_assigns_every_partition),
        cmocka_unit_test (test_draining_worker_owns_nothing),
        cmocka_unit_test (test_touch_keeps_draining),
        cmocka_unit_test (test_connection_recorded),
        cmocka_unit_test (test_restart_told_by_pid_or_session),
        cmocka_unit_test (test_key_recorded),
        cmocka_unit_test (test_expiry_and_removal),
        cmocka_unit_test (test_discount_credits_no_one_past_now),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
