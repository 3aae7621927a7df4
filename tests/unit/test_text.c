/* test_text.c - outside text made safe to quote, bounded copies, UTF-8 checks, hex */
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
    /* and back, either case; anything but two hex digits a byte is refused */
    unsigned char back [3];
    assert_int_equal (text_unhex ("009FfF", 3, back), 0);
    assert_memory_equal (back, in, 3);
    static const char *const bad [] = { "1g0000", "-10000", "+f0000", "0x0000", " 10000", "0000", "00 000" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        assert_int_equal (text_unhex (bad [i], 3, back), -1);
}

static void
test_base64url (void **state)
{
    (void) state;
    assert_true (text_base64url ("AZaz09-_", 8));
    assert_true (text_base64url ("", 0));
    assert_false (text_base64url ("abc=", 4));           /* padding is not of the alphabet */
    assert_false (text_base64url ("ab+/", 4));           /* base64's, not base64url's */
    assert_false (text_base64url ("ab c", 4));
    assert_false (text_base64url ("ab\0c", 4));          /* len, not the NUL, ends it */
    assert_true (text_base64url ("ab\0c", 2));
}

static void
test_utf8 (void **state)
{
    assert_true (text_utf8_valid (""));
    assert_true (text_utf8_valid ("plain ascii"));
    assert_true (text_utf8_valid ("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91"));   /* 2, 3 and 4 bytes */
    assert_false (text_utf8_valid ("admin\xff"));
    assert_false (text_utf8_valid ("caf\xe9"));                                 /* Latin-1 */
    assert_false (text_utf8_valid ("\xc3"));                                    /* cut by the end */
    assert_false (text_utf8_valid ("\xc0\xaf"));                                /* overlong '/' */
    assert_false (text_utf8_valid ("\xe0\x80\xaf"));
    assert_false (text_utf8_valid ("\xed\xa0\x80"));                            /* a UTF-16 surrogate */
    assert_false (text_utf8_valid ("\xf4\x90\x80\x80"));                        /* past U+10FFFF */
    assert_int_equal (text_utf8_len ((const unsigned char *) "\xe2\x82\xac"), 3);
    assert_int_equal (text_utf8_len ((const unsigned char *) "\x80"), 0);
}

/* text_line reads exactly len bytes: a sequence the length cuts is not text, whatever follows */
static void
test_line (void **state)
{
    (void) state;
    assert_true (text_line ("", 0));
    assert_true (text_line ("req-42.1", 8));
    assert_true (text_line ("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", 14));
    assert_false (text_line ("a\0b", 3));
    assert_false (text_line ("r\n", 2));
    assert_false (text_line ("\t", 1));
    assert_false (text_line ("\x7f", 1));
    assert_false (text_line ("\xff", 1));
    assert_false (text_line ("a\xc2\x85" "b", 4));           /* U+0085, a C1 control */
    assert_false (text_line ("\xc2\x9b[2J", 5));            /* U+009B, the CSI */
    assert_true (text_line ("\xc2\xa0", 2));                /* U+00A0, a space */
    assert_false (text_line ("\xed\xa0\x80", 3));
    assert_false (text_line ("\xe2\x82\xac", 2));            /* cut by the length */
    assert_false (text_line ("\xf0\x9f\x94\x91", 3));
    assert_true (text_line ("ok\xe2\x82\xac", 2));           /* the rest is not read */
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_printable),
        cmocka_unit_test (test_copy_is_bounded),
        cmocka_unit_test (test_hex),
        cmocka_unit_test (test_utf8),
        cmocka_unit_test (test_line),
        cmocka_unit_test (test_base64url),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
