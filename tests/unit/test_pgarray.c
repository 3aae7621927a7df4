/* test_pgarray.c - PostgreSQL array literals: every text element quoted and escaped, integers
 * plain, the cap sticky; and, when a test cluster is given (FERRULE_TEST_PG_ADMIN_URL, as
 * scripts/test does), each literal read back by a real server as the elements it was made of */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include <libpq-fe.h>
#include "pgarray.h"

/* Elements that read as something else unquoted or unescaped. */
static const char *const s_tricky [] = {
    "plain", "NULL", "null", "", "a,b", "{", "}", "{x,y}", "\"", "\\", "a\"b\\c", "\\\"", " lead", "trail ",
    "é ü", "acct42:box.user_1-x",
};
#define NTRICKY (sizeof s_tricky / sizeof s_tricky [0])

static void
test_text_elements_are_quoted (void **state)
{
    (void) state;
    pgarray_t *a = pgarray_new (1024);
    assert_string_equal (pgarray_text (a), "{}");
    pgarray_add_text (a, "NULL");
    assert_string_equal (pgarray_text (a), "{\"NULL\"}");
    pgarray_add_text (a, "");
    pgarray_add_text (a, "a,b");
    pgarray_add_text (a, "{}");
    assert_string_equal (pgarray_text (a), "{\"NULL\",\"\",\"a,b\",\"{}\"}");
    pgarray_destroy (&a);
    assert_null (a);
    pgarray_destroy (&a);                               /* twice is fine */

    a = pgarray_new (1024);
    pgarray_add_text (a, "a\"b\\c");
    pgarray_add_text (a, "\\\"");
    assert_string_equal (pgarray_text (a), "{\"a\\\"b\\\\c\",\"\\\\\\\"\"}");
    assert_int_equal (pgarray_count (a), 2);
    pgarray_destroy (&a);
}

static void
test_integers_are_plain (void **state)
{
    (void) state;
    pgarray_t *a = pgarray_new (1024);
    pgarray_add_int (a, 0);
    pgarray_add_int (a, 17);
    pgarray_add_int (a, -42);
    pgarray_add_int (a, INT64_MAX);
    pgarray_add_int (a, INT64_MIN);
    assert_string_equal (pgarray_text (a), "{0,17,-42,9223372036854775807,-9223372036854775808}");
    assert_int_equal (pgarray_count (a), 5);
    pgarray_destroy (&a);
}

/* Nulls unquoted; bytea as hex, its backslash escaped; a NULL pointer a null. */
static void
test_nulls_and_bytea (void **state)
{
    (void) state;
    pgarray_t *a = pgarray_new (1024);
    const unsigned char bytes [] = { 0x00, 0x7f, 0xab, 0xff };
    pgarray_add_null (a);
    pgarray_add_bytea (a, bytes, sizeof bytes);
    pgarray_add_bytea (a, NULL, 0);
    pgarray_add_bytea (a, bytes, 0);
    pgarray_add_text (a, NULL);
    assert_string_equal (pgarray_text (a), "{NULL,\"\\\\x007fabff\",NULL,\"\\\\x\",NULL}");
    assert_int_equal (pgarray_count (a), 5);
    pgarray_destroy (&a);

    a = pgarray_new (8);                                /* {"\\x00"} is 9 bytes */
    pgarray_add_bytea (a, bytes, 1);
    assert_null (pgarray_text (a));
    pgarray_destroy (&a);
}

/* The cap counts the whole literal; the first append past it sticks. */
static void
test_cap_is_sticky (void **state)
{
    (void) state;
    pgarray_t *a = pgarray_new (9);                     /* {"ab","c"} is 10 bytes */
    pgarray_add_text (a, "ab");
    assert_string_equal (pgarray_text (a), "{\"ab\"}");
    pgarray_add_text (a, "c");
    assert_null (pgarray_text (a));
    pgarray_add_int (a, 1);                             /* would fit, but the failure stays */
    assert_null (pgarray_text (a));
    assert_int_equal (pgarray_count (a), 1);
    pgarray_destroy (&a);

    a = pgarray_new (10);                               /* exactly enough */
    pgarray_add_text (a, "ab");
    pgarray_add_text (a, "c");
    assert_string_equal (pgarray_text (a), "{\"ab\",\"c\"}");
    pgarray_destroy (&a);

    a = pgarray_new (5);                                /* an escape counts two bytes */
    pgarray_add_text (a, "\"");
    assert_null (pgarray_text (a));
    pgarray_destroy (&a);
}

/* The server's own reading: unnest gives back each element, in order, none of them a null. */
static void
test_round_trip_through_a_server (void **state)
{
    (void) state;
    const char *url = getenv ("FERRULE_TEST_PG_ADMIN_URL");
    if (!url || !*url) {
        printf ("no FERRULE_TEST_PG_ADMIN_URL: the server's reading is not checked\n");
        skip ();
    }
    PGconn *conn = PQconnectdb (url);
    assert_int_equal (PQstatus (conn), CONNECTION_OK);

    pgarray_t *a = pgarray_new (4096);
    for (size_t i = 0; i < NTRICKY; i++)
        pgarray_add_text (a, s_tricky [i]);
    const char *values [] = { pgarray_text (a) };
    PGresult *res = PQexecParams (conn, "SELECT e, e IS NULL FROM unnest ($1::text[]) WITH ORDINALITY AS u (e, n)"
                                  " ORDER BY n", 1, NULL, values, NULL, NULL, 0);
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    assert_int_equal (PQntuples (res), NTRICKY);
    for (size_t i = 0; i < NTRICKY; i++) {
        assert_string_equal (PQgetvalue (res, (int) i, 1), "f");
        assert_string_equal (PQgetvalue (res, (int) i, 0), s_tricky [i]);
    }
    PQclear (res);
    pgarray_destroy (&a);

    /* bigint[] and integer[], and the empty array */
    a = pgarray_new (4096);
    const int64_t ints [] = { 0, -1, 42, INT64_MAX, INT64_MIN };
    for (size_t i = 0; i < sizeof ints / sizeof ints [0]; i++)
        pgarray_add_int (a, ints [i]);
    values [0] = pgarray_text (a);
    res = PQexecParams (conn, "SELECT e FROM unnest ($1::bigint[]) WITH ORDINALITY AS u (e, n) ORDER BY n", 1, NULL,
                        values, NULL, NULL, 0);
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    assert_int_equal (PQntuples (res), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal (strtoll (PQgetvalue (res, i, 0), NULL, 10), ints [i]);
    PQclear (res);
    pgarray_destroy (&a);

    /* bytea[] with nulls: every byte value, the empty value, a null */
    a = pgarray_new (4096);
    unsigned char all [256];
    for (int i = 0; i < 256; i++)
        all [i] = (unsigned char) i;
    pgarray_add_bytea (a, all, sizeof all);
    pgarray_add_bytea (a, all, 0);
    pgarray_add_bytea (a, NULL, 0);
    pgarray_add_null (a);
    values [0] = pgarray_text (a);
    res = PQexecParams (conn, "SELECT length (e), e IS NULL, e = (SELECT string_agg (set_byte ('\\x00'::bytea, 0, b), ''"
                        " ORDER BY b) FROM generate_series (0, 255) b) FROM unnest ($1::bytea[]) WITH ORDINALITY AS"
                        " u (e, n) ORDER BY n", 1, NULL, values, NULL, NULL, 0);
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    assert_int_equal (PQntuples (res), 4);
    assert_string_equal (PQgetvalue (res, 0, 0), "256");
    assert_string_equal (PQgetvalue (res, 0, 2), "t");
    assert_string_equal (PQgetvalue (res, 1, 0), "0");
    assert_string_equal (PQgetvalue (res, 1, 1), "f");
    assert_string_equal (PQgetvalue (res, 2, 1), "t");
    assert_string_equal (PQgetvalue (res, 3, 1), "t");
    PQclear (res);
    pgarray_destroy (&a);

    a = pgarray_new (64);
    values [0] = pgarray_text (a);
    res = PQexecParams (conn, "SELECT cardinality ($1::integer[])", 1, NULL, values, NULL, NULL, 0);
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    assert_string_equal (PQgetvalue (res, 0, 0), "0");
    PQclear (res);
    pgarray_destroy (&a);
    PQfinish (conn);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_text_elements_are_quoted),
        cmocka_unit_test (test_integers_are_plain),
        cmocka_unit_test (test_nulls_and_bytea),
        cmocka_unit_test (test_cap_is_sticky),
        cmocka_unit_test (test_round_trip_through_a_server),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
