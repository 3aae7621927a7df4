/* test_resolve.c - the brokers' dns+tcp:// names looked up now and on a thread: addresses as
 * endpoints, malformed names refused, a round's results taken once, and a resolver destroyed
 * while its round runs (its thread frees what it used: AddressSanitizer's tree checks that) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "resolve.h"

static void
test_numeric_name_now (void **state)
{
    char *specs [] = { "dns+tcp://127.0.0.1:5556" };
    resolve_t *r = resolve_new (specs, 1);
    resolve_result_t *res = resolve_now (r);
    assert_non_null (res);
    assert_true (res [0].ok);
    assert_int_equal (res [0].n, 1);
    assert_string_equal (res [0].endpoints [0], "tcp://127.0.0.1:5556");
    resolve_results_free (&res, 1);
    assert_null (res);
    resolve_destroy (&r);
    assert_null (r);
}

static void
test_malformed_names_refused (void **state)
{
    char *specs [] = { "dns+tcp://brokers", "dns+tcp://:5556", "dns+tcp://127.0.0.1:" };
    resolve_t *r = resolve_new (specs, 3);
    resolve_result_t *res = resolve_now (r);
    for (int i = 0; i < 3; i++) {
        assert_false (res [i].ok);
        assert_int_equal (res [i].n, 0);
        assert_string_equal (res [i].error, "not NAME:PORT");
    }
    resolve_results_free (&res, 3);
    resolve_destroy (&r);
    for (int i = 0; i < 3; i++)
        assert_false (resolve_spec_valid (specs [i]));
    assert_true (resolve_spec_valid ("dns+tcp://brokers.example:5556"));
}

static void
test_round_on_a_thread (void **state)
{
    char *specs [] = { "dns+tcp://127.0.0.1:1", "dns+tcp://x" };
    resolve_t *r = resolve_new (specs, 2);
    assert_null (resolve_take (r));              /* no round yet */
    assert_int_equal (resolve_start (r), 1);
    assert_int_equal (resolve_start (r), 0);     /* one round at a time */
    resolve_result_t *res = NULL;
    for (int i = 0; i < 1000 && !(res = resolve_take (r)); i++)
        usleep (5000);
    assert_non_null (res);
    assert_true (res [0].ok);
    assert_string_equal (res [0].endpoints [0], "tcp://127.0.0.1:1");
    assert_false (res [1].ok);
    resolve_results_free (&res, 2);
    assert_null (resolve_take (r));              /* taken once */
    assert_int_equal (resolve_start (r), 1);     /* and the next round may start */
    resolve_destroy (&r);                        /* without waiting for it */
    usleep (100000);                             /* its thread ends and frees the round */
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_numeric_name_now),
        cmocka_unit_test (test_malformed_names_refused),
        cmocka_unit_test (test_round_on_a_thread),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
