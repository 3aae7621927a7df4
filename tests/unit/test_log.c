/* test_log.c - every log line is one JSON object in valid UTF-8, whatever bytes it quotes: a
 * client's rid may be any 1 to 64 bytes, and a long message is cut at a byte count */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "testexit.h"
#include "log.h"
#include "text.h"

#define MAX_LINES 16

typedef struct {
    FILE *f;
    int saved;
} capture_t;

/* Sends stderr, where every line goes, to a file of the test's own. */
static void
capture_start (capture_t *c)
{
    fflush (stderr);
    c->f = tmpfile ();
    assert_non_null (c->f);
    c->saved = dup (STDERR_FILENO);
    assert_true (c->saved >= 0);
    assert_true (dup2 (fileno (c->f), STDERR_FILENO) >= 0);
}

/* Gives stderr back; the lines written meanwhile into lines (at most MAX_LINES, each without its
 * newline, caller frees), their count returned. */
static int
capture_end (capture_t *c, char *lines [MAX_LINES])
{
    assert_true (dup2 (c->saved, STDERR_FILENO) >= 0);
    close (c->saved);
    rewind (c->f);
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline (&line, &cap, c->f)) > 0 && n < MAX_LINES) {
        assert_int_equal (line [len - 1], '\n');          /* every line ends */
        line [len - 1] = '\0';
        lines [n++] = strdup (line);
    }
    free (line);
    fclose (c->f);
    return n;
}

/* Fails unless line is valid UTF-8 and one JSON object, which is returned (caller decrefs). */
static json_t *
parsed (const char *line, const char *what)
{
    if (!text_utf8_valid (line))
        fail_msg ("%s: the line is not valid UTF-8", what);
    json_error_t err;
    json_t *j = json_loads (line, JSON_REJECT_DUPLICATES, &err);
    if (!j || !json_is_object (j))
        fail_msg ("%s: the line is not one JSON object: %s", what, err.text);
    return j;
}

static const char *
field (const json_t *j, const char *key)
{
    const char *s = json_string_value (json_object_get (j, key));
    assert_non_null (s);
    return s;
}

/* Bytes that are not UTF-8, as a client's rid or in a message: each written as U+FFFD; valid
 * UTF-8 (a German description) kept as it is. */
static void
test_bytes_that_are_not_utf8 (void **state)
{
    (void) state;
    capture_t c;
    char *lines [MAX_LINES];
    capture_start (&c);
    log_write (LOG_INFO, "acct:box", "\xff\xfe", "request from a client");
    log_write (LOG_INFO, NULL, NULL, "overlong %s, surrogate %s, lone %s, cut %s", "\xc0\xaf", "\xed\xa0\x80", "\x80",
               "\xe2\x82");
    log_write (LOG_INFO, NULL, "r-1", "Berechtigung f\xc3\xbcr Dateien fehlt \xe2\x80\x93 \xf0\x9f\x98\x80 \"q\" \\ \t");
    int n = capture_end (&c, lines);
    assert_int_equal (n, 3);
    json_t *j = parsed (lines [0], "a rid of bytes ff fe");
    assert_string_equal (field (j, "request"), "\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal (field (j, "integration"), "acct:box");
    json_decref (j);
    j = parsed (lines [1], "invalid sequences");
    assert_string_equal (field (j, "msg"), "overlong \xef\xbf\xbd\xef\xbf\xbd, surrogate \xef\xbf\xbd\xef\xbf\xbd"
                                           "\xef\xbf\xbd, lone \xef\xbf\xbd, cut \xef\xbf\xbd\xef\xbf\xbd");
    json_decref (j);
    j = parsed (lines [2], "valid UTF-8");
    assert_string_equal (field (j, "msg"), "Berechtigung f\xc3\xbcr Dateien fehlt \xe2\x80\x93 \xf0\x9f\x98\x80 "
                                           "\"q\" \\ \t");
    json_decref (j);
    for (int i = 0; i < n; i++)
        free (lines [i]);
}

/* A message longer than a line holds is cut between characters: at the message's bound (2047
 * bytes) and at the line's (4096, reached here through control characters or bytes that are not
 * UTF-8, six bytes each escaped), wherever the cut falls in a character of two, three or four
 * bytes or in an escape; and the line still ends its string and its object. */
static void
test_a_cut_never_splits_a_character (void **state)
{
    (void) state;
    static const char *const chars [] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
    char msg [2100];
    for (int k = 0; k < 3; k++)
        for (size_t pad = 0; pad < 6; pad++) {
            capture_t c;
            char *lines [MAX_LINES];
            char what [96];
            size_t clen = strlen (chars [k]);
            capture_start (&c);
            /* at the message's bound: ASCII, then characters across byte 2047 */
            memset (msg, 'a', 2040 + pad);
            size_t len = 2040 + pad;
            while (len + clen < sizeof msg) {
                memcpy (msg + len, chars [k], clen);
                len += clen;
            }
            msg [len] = '\0';
            log_write (LOG_INFO, NULL, NULL, "%s", msg);
            /* at the line's bound: 600 escaped control characters (3600 bytes), then characters */
            memset (msg, '\x01', 600);
            memset (msg + 600, 'b', pad);
            len = 600 + pad;
            while (len < 1200) {
                memcpy (msg + len, chars [k], clen);
                len += clen;
            }
            msg [len] = '\0';
            log_write (LOG_INFO, NULL, NULL, "%s", msg);
            /* at the line's bound, within escapes: of control characters, of bytes not UTF-8 */
            memset (msg, 'b', pad);
            memset (msg + pad, '\x01', 1000);
            msg [pad + 1000] = '\0';
            log_write (LOG_INFO, NULL, NULL, "%s", msg);
            memset (msg + pad, '\xff', 1000);
            log_write (LOG_INFO, NULL, NULL, "%s", msg);
            int n = capture_end (&c, lines);
            assert_int_equal (n, 4);
            for (int i = 0; i < n; i++) {
                snprintf (what, sizeof what, "a %zu-byte character, pad %zu, line %d", clen, pad, i);
                json_t *j = parsed (lines [i], what);
                /* no replacement character for half of one */
                if (i < 2 && strstr (field (j, "msg"), "\xef\xbf\xbd"))
                    fail_msg ("%s: a character was split into replacement characters", what);
                json_decref (j);
                free (lines [i]);
            }
        }
}

int
main (void)
{
    log_init ("test", "unit");
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_bytes_that_are_not_utf8),
        cmocka_unit_test (test_a_cut_never_splits_a_character),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
