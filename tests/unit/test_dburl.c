/* test_dburl.c - the forms a database URL setting may take, and what is refused unshown */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "testexit.h"
#include "dburl.h"

static void
test_kinds (void **state)
{
    (void) state;
    assert_int_equal (dburl_kind ("postgresql://u:pw@db:5432/ferrule"), DBURL_URI);
    assert_int_equal (dburl_kind ("postgres://db/ferrule"), DBURL_URI);
    assert_int_equal (dburl_kind ("host=db user=u password=pw dbname=ferrule"), DBURL_CONNINFO);
    assert_int_equal (dburl_kind ("ferrule"), DBURL_NAME);
    assert_int_equal (dburl_kind ("ferrule_test-2"), DBURL_NAME);
    /* what libpq would have taken for a name, and the server quoted back */
    assert_int_equal (dburl_kind ("postgresql+psycopg2://u:pw@db/ferrule"), DBURL_UNREADABLE);
    assert_int_equal (dburl_kind ("u:pw@db/ferrule"), DBURL_UNREADABLE);
    assert_int_equal (dburl_kind ("jdbc:postgresql://db/ferrule"), DBURL_UNREADABLE);
    assert_int_equal (dburl_kind ("Postgresql://u:pw@db/ferrule"), DBURL_UNREADABLE);
    assert_int_equal (dburl_kind (""), DBURL_UNREADABLE);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_kinds),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
