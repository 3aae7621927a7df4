/* test_cache.c - the worker's cache: entries, stale marking while a refresh runs, the
 * re-validation scan, and the legal changes of an integration's status */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "cache.h"
#include "mem.h"

static struct refresh *const BUSY = (struct refresh *) &BUSY;   /* any non-NULL marker */

static void
test_put_get_drop (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    char id [32];
    for (int i = 0; i < 1000; i++) {                 /* past several growths of the table */
        snprintf (id, sizeof id, "acct:%d", i);
        cache_entry_t *e = cache_put (c, id);
        assert_string_equal (e->id, id);
        assert_ptr_equal (cache_put (c, id), e);     /* put of a known id returns it */
    }
    assert_int_equal (cache_count (c), 1000);
    assert_non_null (cache_get (c, "acct:999"));
    cache_drop (c, "acct:999");
    assert_null (cache_get (c, "acct:999"));
    cache_drop (c, "never-there");
    assert_int_equal (cache_count (c), 999);
    cache_set_token (cache_get (c, "acct:1"), "tok", 2000000000, 7);
    cache_entry_t *e = cache_get (c, "acct:1");
    assert_string_equal (e->access_token, "tok");
    assert_int_equal (e->generation, 7);
    assert_int_equal (e->access_expires_at, 2000000000);
    cache_clear (c);
    assert_int_equal (cache_count (c), 0);
    cache_destroy (&c);
    assert_null (c);
}

static void
test_refreshing_entries_are_only_marked_stale (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    cache_entry_t *busy = cache_put (c, "busy");
    cache_put (c, "idle");
    busy->refresh = BUSY;
    cache_drop (c, "busy");
    assert_ptr_equal (cache_get (c, "busy"), busy);  /* still there: the refresh holds it */
    assert_true (busy->stale);
    cache_clear (c);
    assert_null (cache_get (c, "idle"));
    assert_non_null (cache_get (c, "busy"));
    assert_int_equal (cache_count (c), 1);
    busy->refresh = NULL;
    cache_drop (c, "busy");
    assert_int_equal (cache_count (c), 0);
    cache_destroy (&c);
}

static void
test_collect_unchecked_covers_everything_round_robin (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    char id [32];
    for (int i = 0; i < 300; i++) {
        snprintf (id, sizeof id, "i%d", i);
        cache_put (c, id)->checked_ms = 10;
    }
    cache_get (c, "i5")->checked_ms = 5000;           /* checked recently: not collected */
    cache_get (c, "i6")->refresh = BUSY;              /* refreshing: not collected */
    int seen [300] = { 0 };
    char *ids [64];
    for (int round = 0; round < 40; round++) {
        size_t n = cache_collect_unchecked (c, 1000, ids, 64);
        assert_true (n <= 64);
        for (size_t k = 0; k < n; k++) {
            int i = -1;
            sscanf (ids [k], "i%d", &i);
            assert_in_range (i, 0, 299);
            seen [i]++;
            mem_free (ids [k]);
        }
    }
    for (int i = 0; i < 300; i++)
        if (i == 5 || i == 6)
            assert_int_equal (seen [i], 0);
        else
            assert_true (seen [i] > 0);
    cache_get (c, "i6")->refresh = NULL;
    cache_destroy (&c);
}

/* Provider names are kept once per cache, whatever the number of entries naming them. */
static void
test_provider_names_are_shared (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    cache_entry_t *a = cache_put (c, "a"), *b = cache_put (c, "b"), *d = cache_put (c, "d");
    cache_set_provider (c, a, "box");
    char name [] = "box";                    /* not the same pointer as the literal */
    cache_set_provider (c, b, name);
    cache_set_provider (c, d, "google");
    assert_string_equal (a->provider, "box");
    assert_ptr_equal (a->provider, b->provider);
    assert_string_equal (d->provider, "google");
    assert_ptr_not_equal (a->provider, d->provider);
    cache_set_provider (c, a, "google");     /* a changed provider follows */
    assert_ptr_equal (a->provider, d->provider);
    cache_set_provider (c, b, NULL);
    assert_null (b->provider);
    cache_drop (c, "d");                     /* the name outlives the entries naming it */
    assert_string_equal (a->provider, "google");
    cache_destroy (&c);
}

static void
test_status_transitions (void **state)
{
    (void) state;
    const integ_status_t A = INTEG_ACTIVE, N = INTEG_NEEDS_RECONNECT, D = INTEG_DISCONNECTED;
    assert_true (cache_status_transition_allowed (A, A));
    assert_true (cache_status_transition_allowed (A, N));
    assert_true (cache_status_transition_allowed (A, D));
    assert_true (cache_status_transition_allowed (N, A));
    assert_true (cache_status_transition_allowed (N, D));
    assert_true (cache_status_transition_allowed (D, A));
    assert_false (cache_status_transition_allowed (D, N));
    cache_t *c = cache_new ();
    cache_entry_t *e = cache_put (c, "x");
    e->status = INTEG_DISCONNECTED;
    assert_int_equal (cache_set_status (e, INTEG_NEEDS_RECONNECT), -1);
    assert_int_equal (e->status, INTEG_DISCONNECTED);               /* refused: unchanged */
    assert_int_equal (cache_set_status (e, INTEG_ACTIVE), 0);
    assert_int_equal (e->status, INTEG_ACTIVE);
    assert_int_equal (cache_status_from_text ("needs_reconnect"), N);
    assert_string_equal (cache_status_text (D), "disconnected");
    cache_destroy (&c);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_put_get_drop),
        cmocka_unit_test (test_refreshing_entries_are_only_marked_stale),
        cmocka_unit_test (test_collect_unchecked_covers_everything_round_robin),
        cmocka_unit_test (test_status_transitions),
        cmocka_unit_test (test_provider_names_are_shared),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
