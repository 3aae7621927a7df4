/* test_sqlsplit.c - a migration cut into statements: a ';' inside a string, a quoted identifier,
 * an E'' string, a dollar quote or a comment ends nothing; blanks and comments between statements
 * are not statements; a text that ends inside a quote is refused, naming what was left open */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "sqlsplit.h"

#define MAXSTMT 16

/* Cuts sql into out [] (NUL-terminated copies); returns the count, or -1 - count when the last
 * one was left open. */
static int
split (const char *sql, char out [MAXSTMT][256])
{
    size_t pos = 0, len = strlen (sql);
    int n = 0;
    for (;;) {
        sqlsplit_stmt_t s;
        const char *what = NULL;
        int r = sqlsplit_next (sql, len, &pos, &s, &what);
        if (r == 0)
            return n;
        assert_true (n < MAXSTMT);
        assert_true (s.len < 256);
        memcpy (out [n], sql + s.start, s.len);
        out [n][s.len] = '\0';
        n++;
        if (r < 0) {
            assert_non_null (what);
            return -1 - (n - 1);
        }
        assert_null (what);
    }
}

static void
test_statements_end_at_semicolons (void **state)
{
    (void) state;
    char out [MAXSTMT][256];
    assert_int_equal (split ("CREATE INDEX a ON t (x);\n\nDROP INDEX b;  \n", out), 2);
    assert_string_equal (out [0], "CREATE INDEX a ON t (x);");
    assert_string_equal (out [1], "DROP INDEX b;");
    /* the last statement needs no ';' */
    assert_int_equal (split ("SELECT 1;SELECT 2", out), 2);
    assert_string_equal (out [1], "SELECT 2");
    assert_int_equal (split ("", out), 0);
    assert_int_equal (split ("  \n\t", out), 0);
}

static void
test_comments_are_not_statements (void **state)
{
    (void) state;
    char out [MAXSTMT][256];
    assert_int_equal (split ("-- ferrule-migrate: no-transaction\n-- why; and how\n/* a; b /* nested; */ c; */\n"
                             "SELECT 1; -- after; it\n-- the end;\n", out), 1);
    assert_string_equal (out [0], "SELECT 1;");
    /* a comment inside a statement hides its ';' */
    assert_int_equal (split ("SELECT 1 -- no; end here\n + 2; SELECT /* ; */ 3;", out), 2);
    assert_string_equal (out [0], "SELECT 1 -- no; end here\n + 2;");
    assert_string_equal (out [1], "SELECT /* ; */ 3;");
    /* a lone '-' or '/' is an operator */
    assert_int_equal (split ("SELECT 4 - 1 / 1; SELECT 2", out), 2);
}

static void
test_quotes_hide_semicolons (void **state)
{
    (void) state;
    char out [MAXSTMT][256];
    assert_int_equal (split ("COMMENT ON TABLE t IS 'a; it''s; b'; SELECT 1;", out), 2);
    assert_string_equal (out [0], "COMMENT ON TABLE t IS 'a; it''s; b';");
    assert_int_equal (split ("CREATE INDEX \"odd;name\"\"x\" ON t (a); SELECT 1;", out), 2);
    assert_string_equal (out [0], "CREATE INDEX \"odd;name\"\"x\" ON t (a);");
    /* E'' takes backslash escapes: \' does not end it */
    assert_int_equal (split ("SELECT E'a\\'; b'; SELECT 2;", out), 2);
    assert_string_equal (out [0], "SELECT E'a\\'; b';");
    /* without the E a backslash is a plain character, so the string ends at the quote after it */
    assert_int_equal (split ("SELECT 'a\\'; SELECT 2;", out), 2);
    assert_string_equal (out [0], "SELECT 'a\\';");
    /* an identifier ending in e is not an E'' prefix */
    assert_int_equal (split ("SELECT some'x\\'; SELECT 2;", out), 2);
}

static void
test_dollar_quotes_hide_semicolons (void **state)
{
    (void) state;
    char out [MAXSTMT][256];
    assert_int_equal (split ("CREATE FUNCTION f () RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n"
                             "DO $body$ BEGIN PERFORM 1; RAISE NOTICE '$$;'; END $body$; SELECT 3;", out), 3);
    assert_string_equal (out [0], "CREATE FUNCTION f () RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;");
    assert_string_equal (out [1], "DO $body$ BEGIN PERFORM 1; RAISE NOTICE '$$;'; END $body$;");
    /* $1 is a parameter, and a $ inside an identifier starts no quote */
    assert_int_equal (split ("PREPARE p AS SELECT $1; SELECT a$b$c FROM t; SELECT 3;", out), 3);
}

static void
test_an_open_quote_is_refused (void **state)
{
    (void) state;
    char out [MAXSTMT][256];
    const char *open [] = {
        "SELECT 1; SELECT 'never closed;", "SELECT \"x;", "DO $$ BEGIN; END;", "SELECT 1; /* open; /* */",
        "/* open before any statement", "SELECT E'\\';",
    };
    for (size_t i = 0; i < sizeof open / sizeof open [0]; i++) {
        int r = split (open [i], out);
        assert_true (r < 0);
    }
    size_t pos = 0;
    sqlsplit_stmt_t s;
    const char *what = NULL;
    const char *sql = "SELECT 1; DO $x$ a; $y$;";
    assert_int_equal (sqlsplit_next (sql, strlen (sql), &pos, &s, &what), 1);
    assert_int_equal (sqlsplit_next (sql, strlen (sql), &pos, &s, &what), -1);
    assert_string_equal (what, "a dollar-quoted string");
    assert_int_equal (s.start, 10);
    assert_int_equal (pos, strlen (sql));
}

static void
test_the_directive (void **state)
{
    (void) state;
    const char *yes [] = {
        "-- ferrule-migrate: no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);",
        "-- ferrule-migrate: no-transaction  \r\nSELECT 1;", "-- ferrule-migrate: no-transaction",
    };
    const char *no [] = {
        "-- ferrule-migrate: no-transactions\n", "\n-- ferrule-migrate: no-transaction\n",
        " -- ferrule-migrate: no-transaction\n", "-- ferrule-migrate: no-transaction x\n", "-- ferrule-migrate:",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes [0]; i++)
        assert_true (sqlsplit_no_transaction (yes [i], strlen (yes [i])));
    for (size_t i = 0; i < sizeof no / sizeof no [0]; i++)
        assert_false (sqlsplit_no_transaction (no [i], strlen (no [i])));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_statements_end_at_semicolons),
        cmocka_unit_test (test_comments_are_not_statements),
        cmocka_unit_test (test_quotes_hide_semicolons),
        cmocka_unit_test (test_dollar_quotes_hide_semicolons),
        cmocka_unit_test (test_an_open_quote_is_refused),
        cmocka_unit_test (test_the_directive),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
