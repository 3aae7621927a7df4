/* test_text.c - outside text made safe to quote, bounded copies, hex */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "text.h"

static void
test_printable (void **state)
{
    char out [16];
    assert_string_equal (text_printable (out, sizeof out, "plain", (size_t) -1, 100), "plain");
    assert_string_equal (text_printable (out, sizeof out, "a\nb\x01" "c\xff", 6, 100), "a?b?c?");
    assert_string_equal (text_printable (out, sizeof out, "abcdefgh", 8, 4), "abcd...");
    text_printable (out, sizeof out, "a much longer text than fits", (size_t) -1, 100);
    assert_int_equal (strlen (out), sizeof out - 1);                 /* cut, and still terminated */
    assert_string_equal (text_printable (out, sizeof out, NULL, (size_t) -1, 100), "");
}

static void
test_copy_is_bounded (void **state)
{
    char out [6];
    memset (out, 'z', sizeof out);
    assert_int_equal (text_copy (out, sizeof out, "abc"), 3);
    assert_string_equal (out, "abc");
    assert_int_equal (text_copy (out, sizeof out, "abcdefgh"), 5);   /* cut to fit its NUL */
    assert_string_equal (out, "abcde");
    assert_int_equal (text_copy (out, sizeof out, ""), 0);
    assert_string_equal (out, "");
    char one [1] = { 'z' };
    assert_int_equal (text_copy (one, sizeof one, "abc"), 0);
    assert_int_equal (one [0], '\0');
}

static void
test_hex (void **state)
{
    const unsigned char in [] = { 0x00, 0x9f, 0xff };
    char out [7];
    text_hex (in, sizeof in, out);
    assert_string_equal (out, "009fff");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_printable),
        cmocka_unit_test (test_copy_is_bounded),
        cmocka_unit_test (test_hex),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
