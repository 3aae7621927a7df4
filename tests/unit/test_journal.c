/* test_journal.c - reading a worker journal back: lines, records and the next sequence number */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "journal.h"
#include "mem.h"

/* Writes text to a new temporary file; its path goes into path. */
static void
write_journal (char *path, size_t len, const char *text)
{
    snprintf (path, len, "/tmp/ferrule-test-journal-XXXXXX");
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
}

static void
count_record (void *arg, int64_t seq, const store_commit_t *c)
{
    (*(int *) arg)++;
}

static void
test_parse_line (void **state)
{
    static const char line [] = "{\"seq\":3,\"id\":\"acct42:box\",\"generation\":7,\"lease\":9,\"key\":5,"
                                "\"access\":\"QUJD\",\"refresh\":\"REVG\",\"expires_at\":100,"
                                "\"fingerprint\":\"f\",\"rotated\":true,\"scopes\":\"a b\"}\n";
    int64_t seq, done;
    store_commit_t c;
    json_t *o = journal_parse_line (line, strlen (line), &seq, &done);
    assert_non_null (o);
    assert_int_equal (seq, 3);
    assert_int_equal (done, 0);
    assert_int_equal (journal_read_record (o, &c), 0);
    assert_string_equal (c.id, "acct42:box");
    assert_int_equal (c.expected_generation, 7);
    assert_int_equal (c.access_ct_len, 3);
    assert_memory_equal (c.access_ct, "ABC", 3);
    assert_memory_equal (c.refresh_ct, "DEF", 3);
    assert_true (c.rotated);
    assert_string_equal (c.scopes, "a b");
    mem_free ((void *) c.access_ct);
    mem_free ((void *) c.refresh_ct);
    json_decref (o);

    o = journal_parse_line ("{\"done\":3}\n", 11, &seq, &done);
    assert_non_null (o);
    assert_int_equal (done, 3);
    json_decref (o);
    assert_null (journal_parse_line ("{\"seq\":4,\"id\"", 13, &seq, &done));   /* torn */
    assert_null (journal_parse_line ("[1]", 3, &seq, &done));
}

/* Found by fuzz_journal (tests/fuzz/journal/seq_overflow): a sequence number of INT64_MAX made
 * replay compute INT64_MAX + 1 for the next record, and the next append failed. */
static void
test_huge_sequence (void **state)
{
    char path [64], err [256];
    int count = 0;
    write_journal (path, sizeof path,
                   "{\"seq\":9223372036854775807,\"id\":\"a\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n"
                   "{\"seq\":1,\"id\":\"b\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n");
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_replay (j, count_record, &count), 1);
    assert_int_equal (count, 1);        /* the record this code could not have written is skipped */

    store_commit_t c = { .id = "c", .access_ct = (const unsigned char *) "x", .access_ct_len = 1,
                         .refresh_ct = (const unsigned char *) "y", .refresh_ct_len = 1 };
    int64_t seq = journal_append (j, &c);
    assert_true (seq > 1);
    journal_close (&j);
    unlink (path);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_parse_line),
        cmocka_unit_test (test_huge_sequence),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
