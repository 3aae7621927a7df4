/* test_journal.c - the worker's journal of rotated tokens: what is replayed after a restart,
 * what is settled, and that nothing outside the live region (an earlier epoch behind a torn
 * write, a journal written by an older version) settles or loses a live record; and reading
 * lines back (journal_parse_line, journal_read_record), which tests/fuzz/fuzz_journal.c fuzzes */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include "clock.h"
#include "journal.h"
#include "mem.h"

static char path [256];              /* the tests of a journal file of their own */

static char retained_path [300];      /* path ".retained": the commits carried out of the journal */

static int
setup (void **state)
{
    snprintf (path, sizeof path, "/tmp/ferrule-test-journal-%d", (int) getpid ());
    snprintf (retained_path, sizeof retained_path, "%s.retained", path);
    unlink (path);
    unlink (retained_path);
    return 0;
}

static int
teardown (void **state)
{
    unlink (path);
    unlink (retained_path);
    return 0;
}

/* A commit record for integration id at generation gen. */
static store_commit_t
record (const char *id, int64_t gen)
{
    static const unsigned char ct [] = { 1, 2, 3, 4 };
    store_commit_t c;
    memset (&c, 0, sizeof c);
    c.id = id;
    c.expected_generation = gen;
    snprintf (c.lease_token, sizeof c.lease_token, "%032x", 7);
    c.access_ct = ct;
    c.access_ct_len = sizeof ct;
    c.refresh_ct = ct;
    c.refresh_ct_len = sizeof ct;
    c.access_expires_at = 1000;
    c.access_lifetime_s = 120;
    c.refresh_fingerprint = "fp";
    c.rotated = 1;
    return c;
}

typedef struct {
    int n;
    char ids [8][32];
    int64_t seqs [8];
} seen_t;

static void
collect (void *arg, int64_t seq, const store_commit_t *c, const char *spent)
{
    seen_t *s = arg;
    if (s->n < 8) {
        snprintf (s->ids [s->n], sizeof s->ids [s->n], "%s", c->id);
        s->seqs [s->n] = seq;
    }
    s->n++;
}

/* Closes the journal and opens it afresh, as a restarted worker does. */
static void
reopen (journal_t **j)
{
    char err [256];
    journal_close (j);
    *j = journal_open (path, err, sizeof err);
    assert_non_null (*j);
}

/* Opens the journal afresh and replays it. */
static seen_t
reopen_and_replay (journal_t **j)
{
    reopen (j);
    seen_t s;
    memset (&s, 0, sizeof s);
    assert_true (journal_replay (*j, collect, &s) >= 0);
    return s;
}

static void
test_outstanding_records_are_replayed (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("a", 1), b = record ("b", 1), c = record ("c", 1);
    int64_t sa = journal_append (j, &a, NULL), sb = journal_append (j, &b, NULL), sc = journal_append (j, &c, NULL);
    assert_true (sa > 0 && sb > sa && sc > sb);
    assert_int_equal (journal_sync (j), 0);
    journal_done (j, sb);
    assert_int_equal (journal_outstanding (j), 2);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 2);
    assert_string_equal (s.ids [0], "a");
    assert_string_equal (s.ids [1], "c");
    assert_int_equal (journal_outstanding (j), 2);
    /* settled during the replay: nothing the next time */
    journal_done (j, s.seqs [0]);
    journal_done (j, s.seqs [1]);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);
    journal_close (&j);
}

static void
test_file_is_written_in_place (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    struct stat before, after;
    assert_int_equal (stat (path, &before), 0);
    assert_true (before.st_size >= 1024 * 1024);       /* zeros written once, up front */
    store_commit_t a = record ("a", 1);
    for (int i = 0; i < 100; i++) {
        int64_t seq = journal_append (j, &a, NULL);
        assert_true (seq > 0);
        assert_int_equal (journal_sync (j), 0);
        journal_done (j, seq);
    }
    assert_int_equal (stat (path, &after), 0);
    assert_int_equal (after.st_size, before.st_size);  /* a sync never has a size change to flush */
    journal_close (&j);
}

/* The loop's sync runs on the journal's thread: a record counts as on disk only once the sync
 * asked for after it has ended, the descriptor wakes a poll when it has, and one written while a
 * sync runs waits for the next. */
static void
test_sync_off_the_loop (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_sync_fd (j), -1);        /* no thread until the first request */
    store_commit_t a = record ("a", 1), b = record ("b", 1);
    assert_true (journal_append (j, &a, NULL) > 0);
    uint64_t mark_a = journal_appended (j);
    assert_int_equal (mark_a, 1);
    int64_t at_us = 0;
    assert_int_equal (journal_synced (j, &at_us), 0);
    int64_t asked_us = clock_mono_us ();
    assert_int_equal (journal_sync_start (j), 0);
    int fd = journal_sync_fd (j);
    assert_true (fd >= 0);
    assert_true (journal_append (j, &b, NULL) > 0);          /* after the request: not covered by it */
    uint64_t mark_b = journal_appended (j);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    uint64_t done = 0;
    for (int i = 0; i < 100 && done < mark_a; i++) {
        assert_true (poll (&p, 1, 100) >= 0);
        done = journal_synced (j, &at_us);
    }
    assert_true (done >= mark_a);
    /* when a's sync ended, not when it was read: after it was asked for, before now */
    assert_true (at_us >= asked_us);
    assert_true (at_us <= clock_mono_us ());
    assert_int_equal (journal_sync_start (j), 0);       /* now b */
    for (int i = 0; i < 100 && done < mark_b; i++) {
        assert_true (poll (&p, 1, 100) >= 0);
        done = journal_synced (j, NULL);
    }
    assert_int_equal (done, mark_b);
    /* drained: the descriptor is quiet until the next sync ends */
    assert_int_equal (poll (&p, 1, 0), 0);
    assert_int_equal (journal_sync_start (j), 0);       /* nothing new: nothing asked */
    assert_int_equal (poll (&p, 1, 50), 0);
    seen_t s = reopen_and_replay (&j);                  /* closing joins the thread */
    assert_int_equal (s.n, 2);
    journal_close (&j);
}

static void
test_an_earlier_epoch_never_settles_a_live_record (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    /* an epoch whose records were all settled: the journal empties */
    store_commit_t old1 = record ("old-with-a-long-identifier-1", 1), old2 = record ("old-with-a-long-identifier-2", 1);
    int64_t s1 = journal_append (j, &old1, NULL), s2 = journal_append (j, &old2, NULL);
    journal_done (j, s1);
    journal_done (j, s2);
    assert_int_equal (journal_outstanding (j), 0);
    /* a new epoch starts at offset 0 with the same sequence numbers */
    store_commit_t n = record ("new", 2);
    int64_t sn = journal_append (j, &n, NULL);
    assert_int_equal (sn, 1);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    /* a torn write lost the NUL that ended the live region: the old epoch's lines, with
     * {"done":1} among them, now follow the live record */
    FILE *f = fopen (path, "r+");
    assert_non_null (f);
    char buf [4096];
    size_t got = fread (buf, 1, sizeof buf, f);
    char *nul = memchr (buf, '\0', got);
    assert_non_null (nul);
    fseek (f, nul - buf, SEEK_SET);
    fputc ('\n', f);
    fclose (f);
    seen_t s = reopen_and_replay (&j);
    int found = 0;
    for (int i = 0; i < s.n && i < 8; i++)
        found |= strcmp (s.ids [i], "new") == 0;
    assert_true (found);
    journal_close (&j);
}

/* Overwrites the file at off with len bytes of text (as a torn write left them). */
static void
overwrite (off_t off, const void *text, size_t len)
{
    FILE *f = fopen (path, "r+");
    assert_non_null (f);
    assert_int_equal (fseek (f, (long) off, SEEK_SET), 0);
    assert_int_equal (fwrite (text, 1, len, f), len);
    fclose (f);
}

/* A write torn by a crash (the process killed at a page boundary of its pwrite, or the power cut
 * before the sync) leaves a fragment before the zeros the file was grown with. The records of the
 * next run must not be written onto the fragment's line, where no replay could read them. */
static void
test_a_torn_record_never_swallows_the_next (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    journal_close (&j);
    static const char fragment [] = "{\"seq\":1,\"e\":77,\"id\":\"torn\",\"gen";
    overwrite (0, fragment, sizeof fragment - 1);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);                          /* the fragment is nobody's record */
    store_commit_t d = record ("after-the-tear", 3);
    assert_true (journal_append (j, &d, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    s = reopen_and_replay (&j);                         /* its commit never happened */
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "after-the-tear");
    journal_close (&j);
}

/* A record torn just before its newline is whole: it is replayed, and so is what follows it. */
static void
test_a_record_cut_before_its_newline_is_replayed (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("cut", 1);
    assert_true (journal_append (j, &a, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    char buf [4096];
    size_t got = fread (buf, 1, sizeof buf, f);
    fclose (f);
    char *nl = memchr (buf, '\n', got);
    assert_non_null (nl);
    overwrite (nl - buf, "", 1);                        /* the newline became the zero after it */
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "cut");
    store_commit_t b = record ("next", 1);
    assert_true (journal_append (j, &b, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 2);
    assert_string_equal (s.ids [0], "cut");
    assert_string_equal (s.ids [1], "next");
    journal_close (&j);
}

static void
test_journal_of_an_older_version_is_replayed_and_settled (void **state)
{
    /* appended JSON lines without epochs and without a terminating NUL */
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fprintf (f, "{\"seq\":1,\"id\":\"legacy\",\"generation\":4,\"lease\":9,\"key\":1,\"access\":\"AQID\","
                "\"refresh\":\"AQID\",\"expires_at\":1000,\"fingerprint\":\"fp\",\"rotated\":true,\"scopes\":null}\n");
    fprintf (f, "{\"seq\":2,\"id\":\"settled\",\"generation\":4,\"lease\":9,\"key\":1,\"access\":\"AQID\","
                "\"refresh\":\"AQID\",\"expires_at\":1000,\"fingerprint\":\"fp\",\"rotated\":true,\"scopes\":null}\n");
    fprintf (f, "{\"done\":2}\n");
    fclose (f);
    journal_t *j = NULL;
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "legacy");
    journal_done (j, s.seqs [0]);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);
    journal_close (&j);
}

/* Writes text to a new temporary file; its path goes into path. */
static void
write_journal (char *out, size_t len, const char *text)
{
    snprintf (out, len, "/tmp/ferrule-test-journal-XXXXXX");
    int fd = mkstemp (out);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
}

/* Removes a journal file and the retained file beside it. */
static void
remove_journal (const char *file)
{
    char retained [300];
    snprintf (retained, sizeof retained, "%s.retained", file);
    unlink (file);
    unlink (retained);
}

static void
count_record (void *arg, int64_t seq, const store_commit_t *c, const char *spent)
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
    char file [64], err [256];
    int count = 0;
    write_journal (file, sizeof file,
                   "{\"seq\":9223372036854775807,\"id\":\"a\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n"
                   "{\"seq\":1,\"id\":\"b\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n");
    journal_t *j = journal_open (file, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_replay (j, count_record, &count), 1);
    assert_int_equal (count, 1);        /* the record this code could not have written is skipped */

    store_commit_t c = { .id = "c", .access_ct = (const unsigned char *) "x", .access_ct_len = 1,
                         .refresh_ct = (const unsigned char *) "y", .refresh_ct_len = 1 };
    int64_t seq = journal_append (j, &c, NULL);
    assert_true (seq > 1);
    journal_close (&j);
    remove_journal (file);
}

/* The file's bytes (at most cap; *len gets how many). */
static void
read_file (char *buf, size_t cap, size_t *len)
{
    FILE *f = fopen (path, "r");
    assert_non_null (f);
    *len = fread (buf, 1, cap, f);
    fclose (f);
}

/* The file made of len bytes of text, then zeros up to 64 kB (as the journal grows it). */
static void
write_file (const char *text, size_t len)
{
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    assert_int_equal (fwrite (text, 1, len, f), len);
    for (size_t i = len; i < 65536; i++)
        fputc (0, f);
    fclose (f);
}

/* A journal of one record for id, written and synced; its first line (newline included) into
 * line. */
static void
one_record_line (const char *id, int64_t gen, const unsigned char *ct, size_t ct_len, char *line, size_t cap)
{
    char err [256], buf [4096];
    size_t len;
    unlink (path);
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t c = record (id, gen);
    c.access_ct = c.refresh_ct = ct;
    c.access_ct_len = c.refresh_ct_len = ct_len;
    assert_true (journal_append (j, &c, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    read_file (buf, sizeof buf, &len);
    char *nl = memchr (buf, '\n', len);
    assert_non_null (nl);
    assert_true ((size_t) (nl - buf) + 2 <= cap);
    memcpy (line, buf, (size_t) (nl - buf) + 1);
    line [nl - buf + 1] = '\0';
}

/* After the journal empties, new records overwrite the earlier epoch's lines in place. A write of a
 * new record torn by a crash leaves its first bytes joined to the rest of an old line; cut inside
 * the same field of both (the ciphertexts of one integration's records have one length), the two
 * made one well-formed record, which replay committed: the new record's integration and generation
 * with the old record's tokens. A line now carries a checksum of its own bytes, and such a line
 * is skipped as torn. */
static void
test_a_record_torn_onto_a_stale_line_is_not_replayed (void **state)
{
    static const unsigned char old_ct [48] = { 1 }, new_ct [48] = { 2 };
    char old_line [2048], new_line [2048], spliced [4096];
    one_record_line ("victim", 1, old_ct, sizeof old_ct, old_line, sizeof old_line);
    one_record_line ("victim", 2, new_ct, sizeof new_ct, new_line, sizeof new_line);
    /* cut in the middle of the access token's base64, in both */
    const char *na = strstr (new_line, "\"access\":\""), *oa = strstr (old_line, "\"access\":\"");
    assert_non_null (na);
    assert_non_null (oa);
    size_t nk = (size_t) (na - new_line) + 10 + 20, ok = (size_t) (oa - old_line) + 10 + 20;
    snprintf (spliced, sizeof spliced, "%.*s%s", (int) nk, new_line, old_line + ok);
    write_file (spliced, strlen (spliced));
    journal_t *j = NULL;
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);
    journal_close (&j);
}

/* A record of an earlier epoch that no marker settles (its marker's write failed; the journal
 * emptied all the same) lies beyond the live record once a torn write has lost the NUL that ended
 * the region. It was replayed as a live one, and its settling, written under the live epoch with
 * its sequence number, could settle the live record of the same number. The live region now ends
 * at the first line of another epoch. */
static void
test_a_stale_record_behind_a_tear_is_not_replayed (void **state)
{
    static const unsigned char ct [8] = { 3 };
    char stale [2048], live [2048], both [4096];
    one_record_line ("stale", 1, ct, sizeof ct, stale, sizeof stale);
    one_record_line ("live", 1, ct, sizeof ct, live, sizeof live);
    snprintf (both, sizeof both, "%s%s", live, stale);
    write_file (both, strlen (both));
    journal_t *j = NULL;
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "live");
    journal_done (j, s.seqs [0]);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);
    journal_close (&j);
}

/* What lies beyond the live region is zeroed when the journal is opened, so that the stale lines
 * of a version that wrote no checksums never meet a torn write. */
static void
test_stale_bytes_beyond_the_live_region_are_zeroed_at_open (void **state)
{
    static const unsigned char ct [8] = { 4 };
    char live [2048], text [4096], buf [65536];
    one_record_line ("live", 1, ct, sizeof ct, live, sizeof live);
    size_t live_len = strlen (live);
    snprintf (text, sizeof text, "%s%c{\"seq\":1,\"id\":\"old\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n", live, 0);
    write_file (text, live_len + 1 + strlen (text + live_len + 1));
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    size_t len;
    read_file (buf, sizeof buf, &len);
    assert_true (len > live_len);
    for (size_t i = live_len; i < len; i++)
        if (buf [i] != 0)
            fail_msg ("byte %zu beyond the live region (%zu bytes) is not zero", i, live_len);
    journal_close (&j);
}

/* The backlog a worker reports (journal_outstanding) counts the records left from the last run
 * from the moment the journal is opened: a worker whose database is away cannot replay them, and
 * reported 0, which operations.md tells operators to look at before removing a journal. */
static void
test_records_left_are_counted_before_the_replay (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("a", 1), b = record ("b", 1);
    int64_t sa = journal_append (j, &a, NULL);
    assert_true (journal_append (j, &b, NULL) > 0);
    journal_done (j, sa);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_outstanding (j), 1);
    journal_close (&j);
}

/* Two processes writing one journal each at their own end would overwrite each other's records:
 * the second to open it is refused, with a reason. */
static void
test_a_journal_is_opened_by_one_process_at_a_time (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    err [0] = '\0';
    journal_t *second = journal_open (path, err, sizeof err);
    assert_null (second);
    assert_non_null (strstr (err, "in use by another process"));
    journal_close (&j);
    j = journal_open (path, err, sizeof err);         /* free again once closed */
    assert_non_null (j);
    journal_close (&j);
}

/* A sequence number of exactly 2^53 was read, and the next record numbered past it, which no
 * replay reads: that record was lost. */
static void
test_the_largest_sequence_is_refused (void **state)
{
    char file [64], err [256];
    int count = 0;
    write_journal (file, sizeof file,
                   "{\"seq\":9007199254740992,\"id\":\"a\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n");
    journal_t *j = journal_open (file, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_replay (j, count_record, &count), 0);
    store_commit_t c = record ("after", 1);
    assert_true (journal_append (j, &c, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    j = journal_open (file, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (journal_replay (j, count_record, &count), 1);
    journal_close (&j);
    remove_journal (file);
}

/* New records continue the live region's epoch, whatever its first line is: here a marker of a
 * version without epochs (epoch 0). Started under an epoch of their own, they would have been read
 * as lying beyond the region, and not replayed. */
static void
test_records_after_an_older_versions_marker_are_replayed (void **state)
{
    char err [256];
    /* a marker of 1 too: the number the next record would have been given, and settled by */
    static const char *const markers [] = { "{\"done\":5}\n", "{\"done\":1}\n" };
    for (size_t i = 0; i < sizeof markers / sizeof markers [0]; i++) {
        write_file (markers [i], strlen (markers [i]));
        journal_t *j = journal_open (path, err, sizeof err);
        assert_non_null (j);
        store_commit_t c = record ("after-a-marker", 1);
        assert_true (journal_append (j, &c, NULL) > 0);
        assert_int_equal (journal_sync (j), 0);
        seen_t s = reopen_and_replay (&j);
        assert_int_equal (s.n, 1);
        assert_string_equal (s.ids [0], "after-a-marker");
        journal_close (&j);
    }
}

/* The first record of an epoch, torn at offset 0 by a power cut, runs into the tail of the line
 * the emptied epoch left there: unreadable. The region took the epoch of the next readable line,
 * that epoch's {"done":1}; the next record was numbered 1 again, in that epoch, and the marker
 * before it settled it: synced, neither counted nor replayed at the next start. */
static void
test_a_marker_left_behind_a_torn_first_record_never_settles_a_new_one (void **state)
{
    static const char torn [] = "{\"seq\":1,\"e\":42,\"id\":\"to";
    char err [256], buf [4096];
    size_t len;
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("old", 1);
    int64_t s1 = journal_append (j, &a, NULL);
    assert_int_equal (journal_sync (j), 0);
    journal_done (j, s1);                /* emptied: a NUL at 0, the epoch's lines behind it */
    journal_close (&j);
    read_file (buf, sizeof buf, &len);
    assert_int_equal (buf [0], '\0');
    memcpy (buf, torn, sizeof torn - 1);
    write_file (buf, len);
    j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t b = record ("new", 2);
    assert_true (journal_append (j, &b, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (journal_outstanding (j), 1);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "new");
    journal_close (&j);
}

/* A record is numbered past every number the live region holds, its markers' too: a region whose
 * first readable line is a marker (left behind a torn record, or of an older version) gave the
 * next record that marker's number, which an older version reading the journal takes as settled. */
static void
test_new_records_are_numbered_past_the_markers (void **state)
{
    char err [256];
    write_file ("{\"done\":7}\n", 11);
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t c = record ("after-a-marker", 1);
    assert_int_equal (journal_append (j, &c, NULL), 8);
    journal_close (&j);
}

/* A marker settles the records before it, not one after it with the same number (a number used
 * again): that one is outstanding until a marker of its own follows it. */
static void
test_a_marker_settles_only_the_records_before_it (void **state)
{
    static const char text [] = "{\"done\":1}\n"
                                "{\"seq\":1,\"id\":\"after\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n";
    write_file (text, sizeof text - 1);
    journal_t *j = NULL;
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "after");
    assert_int_equal (journal_outstanding (j), 1);
    store_commit_t b = record ("b", 1);
    assert_true (journal_append (j, &b, NULL) > 0);     /* outstanding: the region stays */
    journal_done (j, s.seqs [0]);                       /* the marker after it */
    assert_int_equal (journal_sync (j), 0);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "b");
    journal_close (&j);
}

/* A flush that fails the way a disk does, n times: the bytes written since the last sync (from
 * offset from on) did not reach the disk, and after the error the kernel marks their pages clean,
 * so that they are neither on the disk nor written by the next fdatasync, which succeeds. Zeros
 * in the file stand for both. Then the real fdatasync. */
typedef struct {
    int fails;
    int calls;
    off_t from;
} failing_t;

static int
failing_flush (int fd, void *arg)
{
    static const char zeros [4096];
    failing_t *f = arg;
    f->calls++;
    if (f->fails > 0) {
        f->fails--;
        if (pwrite (fd, zeros, sizeof zeros, f->from) != (ssize_t) sizeof zeros)
            return -1;
        errno = EIO;
        return -1;
    }
    return fdatasync (fd);
}

/* Where the next line goes: the live region's terminating NUL, read from the file. */
static off_t
live_end (void)
{
    FILE *f = fopen (path, "rb");
    assert_non_null (f);
    off_t off = 0;
    int ch;
    while ((ch = fgetc (f)) != EOF && ch != '\0')
        off++;
    fclose (f);
    return off;
}

/* Polls the journal's descriptor until done reaches want or about ms have passed; the last done. */
static uint64_t
wait_synced (journal_t *j, uint64_t want, int ms)
{
    struct pollfd p = { .fd = journal_sync_fd (j), .events = POLLIN };
    uint64_t done = journal_synced (j, NULL);
    for (int waited = 0; done < want && waited < ms; waited += 10) {
        assert_true (poll (&p, 1, 10) >= 0);
        done = journal_synced (j, NULL);
    }
    return done;
}

/* A failed fdatasync of the loop's own sync was logged and taken as done: the records written
 * since the last sync were lost with the disk's error. They are written again and synced again. */
static void
test_a_failed_sync_writes_the_records_again (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("a", 1), b = record ("b", 1), c = record ("c", 1);
    assert_true (journal_append (j, &a, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    failing_t f = { 1, 0, live_end () };
    journal_set_flush (j, failing_flush, &f);
    assert_true (journal_append (j, &b, NULL) > 0);
    assert_true (journal_append (j, &c, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);           /* the second flush, after writing them again */
    assert_int_equal (f.calls, 2);
    assert_int_equal (journal_sync_failures (j), 1);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 3);
    assert_string_equal (s.ids [1], "b");
    assert_string_equal (s.ids [2], "c");
    journal_close (&j);
}

/* The same on the journal's thread: a failed sync was counted as done, so the records it was
 * for were reported on disk (and their window measured) while they were not. Now they are not
 * counted until a sync after writing them again has succeeded, which the journal retries itself. */
static void
test_a_failed_sync_off_the_loop_is_not_counted_and_is_retried (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("a", 1), b = record ("b", 1), c = record ("c", 1);
    assert_true (journal_append (j, &a, NULL) > 0);
    assert_int_equal (journal_sync_start (j), 0);
    assert_int_equal (wait_synced (j, 1, 5000), 1);
    failing_t f = { 1, 0, live_end () };
    journal_set_flush (j, failing_flush, &f);
    assert_true (journal_append (j, &b, NULL) > 0);
    assert_true (journal_append (j, &c, NULL) > 0);
    assert_int_equal (journal_sync_start (j), 0);
    struct pollfd p = { .fd = journal_sync_fd (j), .events = POLLIN };
    for (int i = 0; i < 500 && f.calls == 0; i++)
        assert_true (poll (&p, 1, 10) >= 0);
    assert_int_equal (poll (&p, 1, 5000), 1);         /* the failed sync has ended */
    assert_int_equal (journal_synced (j, NULL), 1);   /* and b and c are not on disk */
    assert_int_equal (wait_synced (j, 3, 5000), 3);   /* retried without being asked again */
    assert_int_equal (f.calls, 2);
    assert_int_equal (journal_sync_failures (j), 1);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 3);
    journal_close (&j);
}

/* A failed sync on the thread the loop has not yet heard of when the journal is closed (a stop
 * right after it): closing writes the records again before its own sync. */
static void
test_a_close_after_a_failed_sync_writes_the_records_again (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t a = record ("a", 1), b = record ("b", 1);
    assert_true (journal_append (j, &a, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    failing_t f = { 1, 0, live_end () };
    journal_set_flush (j, failing_flush, &f);
    assert_true (journal_append (j, &b, NULL) > 0);
    assert_int_equal (journal_sync_start (j), 0);
    struct pollfd p = { .fd = journal_sync_fd (j), .events = POLLIN };
    assert_int_equal (poll (&p, 1, 5000), 1);         /* failed; journal_synced not called */
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 2);
    assert_string_equal (s.ids [1], "b");
    journal_close (&j);
}

/* ---- records retained after they settle (journal_done_retain), for worker/failover.c ---- */

/* A retainer that holds n commits, the oldest kept at oldest_ms (monotonic). */
typedef struct {
    size_t n;
    int64_t oldest_ms;
} holder_t;

static size_t
holder_fn (void *arg, int64_t *oldest_ms)
{
    holder_t *hd = arg;
    *oldest_ms = hd->oldest_ms;
    return hd->n;
}

typedef struct {
    int n;
    char ids [32][16];
    char spent [32][16];
    int64_t age_ms [32];
} retained_t;

static void
retained_fn (void *arg, const store_commit_t *c, const char *spent, int64_t age_ms)
{
    retained_t *r = arg;
    if (r->n < 32) {
        snprintf (r->ids [r->n], sizeof r->ids [r->n], "%s", c->id);
        snprintf (r->spent [r->n], sizeof r->spent [r->n], "%s", spent ? spent : "");
        r->age_ms [r->n] = age_ms;
    }
    r->n++;
}

/* Opens the journal afresh, with hd as its retainer, and reads back what it retained. */
static retained_t
reopen_retained (journal_t **j, holder_t *hd, size_t carry_min)
{
    reopen (j);
    journal_set_retainer (*j, holder_fn, hd, carry_min);
    retained_t r;
    memset (&r, 0, sizeof r);
    assert_true (journal_retained (*j, retained_fn, &r) >= 0);
    return r;
}

/* A retained record stays on disk while the retainer holds commits, though nothing is
 * outstanding: a restarted worker reads it back with the token it replaced; once the retainer
 * holds nothing, the next settle empties the journal as before. */
static void
test_retained_records_outlive_their_settle (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    journal_set_retainer (j, holder_fn, &hd, 1 << 20);
    store_commit_t a = record ("a", 1), b = record ("b", 1);
    int64_t sa = journal_append (j, &a, "spent-a"), sb = journal_append (j, &b, "spent-b");
    assert_int_equal (journal_sync (j), 0);
    hd.n = 1;                            /* the worker keeps a's commit before it settles it */
    hd.oldest_ms = clock_mono_ms ();
    journal_done_retain (j, sa);
    journal_done (j, sb);                /* b superseded: not retained */
    assert_int_equal (journal_outstanding (j), 0);

    retained_t r = reopen_retained (&j, &hd, 1 << 20);
    assert_int_equal (r.n, 1);
    assert_string_equal (r.ids [0], "a");
    assert_string_equal (r.spent [0], "spent-a");
    assert_int_equal (r.age_ms [0], 0);  /* the newest */
    seen_t s;
    memset (&s, 0, sizeof s);
    assert_int_equal (journal_replay (j, collect, &s), 0);     /* settled: nothing to replay */

    /* the retainer let a go: the next settle empties the journal */
    hd.n = 0;
    int64_t sc = journal_append (j, &b, NULL);
    journal_done (j, sc);
    r = reopen_retained (&j, &hd, 1 << 20);
    assert_int_equal (r.n, 0);
    journal_close (&j);
}

static ino_t
inode_of (const char *p)
{
    struct stat st;
    assert_int_equal (stat (p, &st), 0);
    return st.st_ino;
}

/* A region of retained records grown to the carry size goes to the retained file by an exchange
 * of the two files' names (nothing copied), once the retained file holds nothing the retainer
 * still holds; the journal goes on, emptied, in the other file. A restarted worker reads the
 * retained file first (older), then the journal, with ages relative to the newest. Once the
 * retainer holds nothing, both are emptied. */
static void
test_retained_records_carried_by_exchanging_the_files (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    struct stat st;
    assert_int_equal (stat (retained_path, &st), 0);
    assert_true ((st.st_mode & 0777) == 0600);        /* sealed tokens: the owner's only */
    ino_t journal_ino = inode_of (path), retained_ino = inode_of (retained_path);
    journal_set_retainer (j, holder_fn, &hd, 1);      /* carried at any length */

    store_commit_t a = record ("a", 1), b = record ("b", 1), c = record ("c", 1), d = record ("d", 1);
    int64_t sa = journal_append (j, &a, "spent-a");
    hd.n = 1;
    hd.oldest_ms = clock_mono_ms ();
    journal_done_retain (j, sa);         /* the retained file held nothing: carried */
    assert_true (inode_of (path) == retained_ino && inode_of (retained_path) == journal_ino);

    /* b settles later: the retained file holds a, which the retainer still holds, so b stays in
     * the journal */
    usleep (30 * 1000);
    int64_t sb = journal_append (j, &b, "spent-b");
    hd.n = 2;
    journal_done_retain (j, sb);
    assert_true (inode_of (path) == retained_ino);

    retained_t r = reopen_retained (&j, &hd, 1);
    assert_int_equal (r.n, 2);
    assert_string_equal (r.ids [0], "a");
    assert_string_equal (r.spent [0], "spent-a");
    assert_string_equal (r.ids [1], "b");
    assert_string_equal (r.spent [1], "spent-b");
    assert_true (r.age_ms [0] >= 20 && r.age_ms [0] < 60000);
    assert_int_equal (r.age_ms [1], 0);

    /* the retainer let a go (its oldest is newer than the retained file): c's settle carries b and
     * c, and the file that held a is the journal again, emptied */
    hd.n = 2;
    hd.oldest_ms = clock_mono_ms () + 1;
    int64_t sc = journal_append (j, &c, "spent-c");
    journal_done_retain (j, sc);
    assert_true (inode_of (path) == journal_ino);
    r = reopen_retained (&j, &hd, 1);
    assert_int_equal (r.n, 2);
    assert_string_equal (r.ids [0], "b");
    assert_string_equal (r.ids [1], "c");
    seen_t s;
    memset (&s, 0, sizeof s);
    assert_int_equal (journal_replay (j, collect, &s), 0);

    /* nothing held: the next settle empties both */
    hd.n = 0;
    int64_t sd = journal_append (j, &d, NULL);
    journal_done (j, sd);
    r = reopen_retained (&j, &hd, 1);
    assert_int_equal (r.n, 0);
    journal_close (&j);
}

/* With the sync thread running, the settle that carries waits for the flush of the markers
 * written since the last one (the last one is its own): without it, no settle ever found them all
 * on disk, and under load the journal grew without a carry. */
static void
test_a_carry_waits_for_the_sync_thread (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    ino_t retained_ino = inode_of (retained_path);
    journal_set_retainer (j, holder_fn, &hd, 1);
    store_commit_t a = record ("a", 1);
    int64_t sa = journal_append (j, &a, "spent-a");
    assert_int_equal (journal_sync_start (j), 0);
    struct pollfd p = { .fd = journal_sync_fd (j), .events = POLLIN };
    while (journal_synced (j, NULL) < journal_appended (j))
        assert_true (poll (&p, 1, 5000) == 1);
    hd.n = 1;
    hd.oldest_ms = clock_mono_ms ();
    journal_done_retain (j, sa);
    assert_true (inode_of (path) == retained_ino);
    /* the next record goes to the other file, synced with the directory's new names */
    int64_t sb = journal_append (j, &a, NULL);
    assert_true (sb > 0);
    assert_int_equal (journal_sync_start (j), 0);
    while (journal_synced (j, NULL) < journal_appended (j))
        assert_true (poll (&p, 1, 5000) == 1);
    journal_close (&j);
    j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    seen_t s;
    memset (&s, 0, sizeof s);
    assert_int_equal (journal_replay (j, collect, &s), 1);
    journal_set_retainer (j, holder_fn, &hd, 1);
    retained_t r;
    memset (&r, 0, sizeof r);
    assert_int_equal (journal_retained (j, retained_fn, &r), 1);
    assert_string_equal (r.ids [0], "a");
    journal_close (&j);
}

/* An exchange that fails (here the retained file was removed) leaves the region as it is,
 * retained records and all, and is tried again only once the region has grown by the carry size. */
static void
test_a_failed_carry_keeps_the_region (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (unlink (retained_path), 0);
    journal_set_retainer (j, holder_fn, &hd, 4096);
    store_commit_t a = record ("a", 1);
    int64_t seqs [20];
    for (int i = 0; i < 20; i++)         /* past the carry size when the last settles */
        seqs [i] = journal_append (j, &a, "spent-a");
    hd.n = 1;
    hd.oldest_ms = clock_mono_ms ();
    for (int i = 0; i < 20; i++)
        journal_done_retain (j, seqs [i]);
    int64_t sb = journal_append (j, &a, NULL);
    journal_done (j, sb);
    assert_int_equal (access (retained_path, F_OK), -1);
    retained_t r = reopen_retained (&j, &hd, 1 << 20);
    assert_int_equal (r.n, 20);
    assert_string_equal (r.ids [0], "a");
    journal_close (&j);
}

/* ---- a journal never idle: rolled with its outstanding records copied ---- */

static off_t
size_of (const char *p)
{
    struct stat st;
    return stat (p, &st) == 0 ? st.st_size : 0;
}

#define ROLL_TEST_BOUND (8 << 20)        /* the roll happens at 4 MB; the file grows by 1 MB */

/* Opens the journal afresh: its replay gives exactly the records first ("stuck") and second, in
 * that order. */
static void
expect_replayed_two (journal_t **j, int64_t first, int64_t second)
{
    seen_t s = reopen_and_replay (j);
    assert_int_equal (s.n, 2);
    assert_string_equal (s.ids [0], "stuck");
    assert_int_equal (s.seqs [0], first);
    assert_int_equal (s.seqs [1], second);
    assert_int_equal (journal_outstanding (*j), 2);
}

/* Under load some record may be outstanding at every settle: here one refresh's commit is stuck
 * from the start, and another is always in flight. The journal used to empty only when nothing
 * was outstanding, so it grew without end. Once its region is long it is rolled: the outstanding
 * records are copied into the other file, which takes the journal's name. Both files stay
 * bounded, and a restart replays exactly the outstanding records, under the sequences the worker
 * holds them by. */
static void
test_a_journal_never_idle_is_rolled (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t stuck = record ("stuck", 1);
    int64_t s_stuck = journal_append (j, &stuck, "spent-stuck");
    store_commit_t a = record ("a", 1);
    int64_t prev = journal_append (j, &a, NULL);
    off_t largest = 0;
    size_t written = 0;
    for (int i = 0; written < 3 * ROLL_TEST_BOUND; i++) {
        store_commit_t n = record (i % 2 ? "b" : "a", i + 2);
        int64_t s = journal_append (j, &n, NULL);
        assert_true (s > prev);
        if (i % 64 == 0)
            assert_int_equal (journal_sync (j), 0);
        journal_done (j, prev);
        assert_int_equal (journal_outstanding (j), 2);
        prev = s;
        written += 300;                  /* about a record and its marker */
        if (i % 1000 == 0) {
            off_t now = size_of (path) > size_of (retained_path) ? size_of (path) : size_of (retained_path);
            largest = now > largest ? now : largest;
        }
    }
    assert_true (largest > 0 && largest <= ROLL_TEST_BOUND);
    assert_int_equal (journal_sync (j), 0);
    expect_replayed_two (&j, s_stuck, prev);
    journal_done (j, s_stuck);
    journal_done (j, prev);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, 0);
    journal_close (&j);
}

/* A roll's copies are not the lines they copy (a new epoch, which may be written with another
 * number of digits; a record of a version without epochs or checksums gains both), and the count
 * of outstanding bytes kept the originals' lengths while their settles took off the copies'. It
 * drifted from the truth with every roll, and wrapped below zero, which refuses every roll (the
 * journal then grows while records stay outstanding). Here an older version's record, carried
 * through a roll, then settled with everything else: the count must come back to zero. */
static void
test_a_roll_keeps_the_count_of_outstanding_bytes (void **state)
{
    char err [256];
    static const char legacy [] = "{\"seq\":1,\"id\":\"legacy\",\"generation\":4,\"lease\":9,\"key\":1,"
        "\"access\":\"AQID\",\"refresh\":\"AQID\",\"expires_at\":1000,\"fingerprint\":\"fp\",\"rotated\":true,"
        "\"scopes\":null}\n";
    write_file (legacy, sizeof legacy - 1);
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    seen_t s;
    memset (&s, 0, sizeof s);
    assert_int_equal (journal_replay (j, collect, &s), 1);
    int64_t s_legacy = s.seqs [0];
    store_commit_t a = record ("a", 1);
    int64_t prev = journal_append (j, &a, NULL);
    ino_t before = inode_of (path);
    size_t written = 0;
    for (int i = 0; written < ROLL_TEST_BOUND && inode_of (path) == before; i++) {
        store_commit_t n = record ("a", i + 2);
        int64_t seq = journal_append (j, &n, NULL);
        journal_done (j, prev);
        prev = seq;
        written += 300;
    }
    assert_true (inode_of (path) != before);        /* rolled once: the legacy record was copied */
    assert_int_equal (journal_outstanding (j), 2);
    journal_done (j, s_legacy);
    journal_done (j, prev);
    assert_int_equal (journal_outstanding (j), 0);
    assert_int_equal (journal_outstanding_bytes (j), 0);
    journal_close (&j);
}

/* The same with the sync thread and a retainer that holds commits: the carry, which used to wait
 * for a moment with nothing outstanding, happens with the outstanding records copied into the
 * journal's new file; every retained record is still on disk, in one file or the other. */
static void
test_a_carry_copies_the_outstanding_records (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    ino_t retained_ino = inode_of (retained_path);
    usleep (2000);
    hd.n = 1;
    hd.oldest_ms = clock_mono_ms ();     /* kept after the retained file was: it may be carried over */
    journal_set_retainer (j, holder_fn, &hd, 1 << 20);
    store_commit_t stuck = record ("stuck", 1);
    int64_t s_stuck = journal_append (j, &stuck, NULL);
    store_commit_t a = record ("a", 1);
    int64_t prev = journal_append (j, &a, "spent-a");
    int retained = 0;
    size_t written = 0;
    for (int i = 0; written < ROLL_TEST_BOUND; i++) {
        store_commit_t n = record ("a", i + 2);
        int64_t s = journal_append (j, &n, "spent-a");
        assert_true (s > prev);
        assert_int_equal (journal_sync_start (j), 0);
        journal_done_retain (j, prev);
        retained++;
        prev = s;
        written += 330;
    }
    assert_true (inode_of (path) == retained_ino);      /* carried */
    assert_true (size_of (path) <= ROLL_TEST_BOUND);
    expect_replayed_two (&j, s_stuck, prev);
    journal_set_retainer (j, holder_fn, &hd, 1 << 20);
    retained_t r;
    memset (&r, 0, sizeof r);
    assert_int_equal (journal_retained (j, retained_fn, &r), retained);
    assert_string_equal (r.spent [0], "spent-a");
    journal_close (&j);
}

/* The whole of file p, malloc'd (*len bytes). */
static char *
slurp (const char *p, size_t *len)
{
    FILE *f = fopen (p, "r");
    assert_non_null (f);
    assert_int_equal (fseek (f, 0, SEEK_END), 0);
    long n = ftell (f);
    assert_true (n >= 0);
    rewind (f);
    char *buf = malloc ((size_t) n + 1);
    assert_non_null (buf);
    assert_int_equal (fread (buf, 1, (size_t) n, f), (size_t) n);
    fclose (f);
    *len = (size_t) n;
    return buf;
}

/* A roll leaves the lines it copied where they were, in the file that becomes the retained one;
 * a later carry (nothing outstanding, so nothing copied) makes that file the journal again with
 * only a NUL at offset 0 in front of them. When the first record written after it was torn by a
 * crash, the region took the epoch of the first readable line behind the tear: the first roll's
 * originals, settled only by their copies in the other file, were replayed as outstanding. A
 * roll now starts the new journal with a line of its epoch on disk, whatever it copies. */
static void
test_a_tear_after_a_carry_never_replays_what_an_earlier_roll_copied (void **state)
{
    char err [256];
    holder_t hd = { 0, 0 };
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    ino_t first_ino = inode_of (path);
    /* a roll with records outstanding: "stuck" and the last one are copied */
    store_commit_t stuck = record ("stuck", 1);
    int64_t s_stuck = journal_append (j, &stuck, NULL);
    store_commit_t a = record ("a", 1);
    int64_t prev = journal_append (j, &a, NULL);
    for (int i = 0; inode_of (path) == first_ino; i++) {
        assert_true (i < 100000);
        store_commit_t n = record ("a", i + 2);
        int64_t s = journal_append (j, &n, NULL);
        journal_done (j, prev);
        prev = s;
    }
    assert_int_equal (journal_sync (j), 0);
    journal_done (j, s_stuck);
    journal_done (j, prev);
    assert_int_equal (journal_outstanding (j), 0);
    /* a carry with nothing outstanding: the first file is the journal again */
    journal_set_retainer (j, holder_fn, &hd, 1);
    store_commit_t c = record ("carried", 1);
    int64_t s_c = journal_append (j, &c, "spent-c");
    assert_int_equal (journal_sync (j), 0);
    hd.n = 1;
    hd.oldest_ms = clock_mono_ms ();
    journal_done_retain (j, s_c);
    assert_true (inode_of (path) == first_ino);
    size_t before_len, after_len;
    char *before = slurp (path, &before_len);
    /* the next record, torn by a crash: its second half never reached the disk */
    store_commit_t fresh = record ("fresh", 1);
    assert_true (journal_append (j, &fresh, NULL) > 0);
    assert_int_equal (journal_sync (j), 0);
    journal_close (&j);
    char *after = slurp (path, &after_len);
    assert_true (after_len <= before_len);
    char *line = memmem (after, after_len, "\"id\":\"fresh\"", 12);
    assert_non_null (line);
    size_t from = (size_t) (line - after) + 6, to = from;
    while (to < after_len && after [to] != '\0')
        to++;
    memcpy (after + from, before + from, to + 1 - from);
    FILE *f = fopen (path, "r+");
    assert_non_null (f);
    assert_int_equal (fwrite (after, 1, after_len, f), after_len);
    fclose (f);
    free (before);
    free (after);

    seen_t s = reopen_and_replay (&j);
    for (int i = 0; i < s.n && i < 8; i++)
        print_message ("replayed: %s (sequence %lld)\n", s.ids [i], (long long) s.seqs [i]);
    assert_int_equal (s.n, 0);
    assert_int_equal (journal_outstanding (j), 0);
    journal_close (&j);
}

/* A roll whose exchange fails (the retained file was removed) leaves the journal as it was: it
 * grows, and a restart replays every outstanding record. */
static void
test_a_failed_roll_keeps_the_journal (void **state)
{
    char err [256];
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (unlink (retained_path), 0);
    store_commit_t stuck = record ("stuck", 1);
    int64_t s_stuck = journal_append (j, &stuck, NULL);
    store_commit_t a = record ("a", 1);
    int64_t prev = journal_append (j, &a, NULL);
    for (int i = 0; size_of (path) <= ROLL_TEST_BOUND; i++) {
        store_commit_t n = record ("a", i + 2);
        int64_t s = journal_append (j, &n, NULL);
        journal_done (j, prev);
        prev = s;
    }
    assert_int_equal (access (retained_path, F_OK), -1);
    expect_replayed_two (&j, s_stuck, prev);
    journal_close (&j);
}

/* ---- sequence numbers at their limit ---- */

/* A line numbered 2^53 - 1, the largest read, numbered the next record 2^53, which no replay reads:
 * that record was lost. A number the journal does not read back is never given: it takes no record
 * (the refresh commits it directly, as with a full disk) until its numbers can start again. */
static void
test_a_record_is_never_numbered_past_the_largest_read (void **state)
{
    static const char text [] = "{\"seq\":9007199254740991,\"id\":\"a\",\"access\":\"QQ==\",\"refresh\":\"Qg==\"}\n";
    char err [256];
    write_file (text, sizeof text - 1);
    journal_t *j = journal_open (path, err, sizeof err);
    assert_non_null (j);
    store_commit_t c = record ("after", 1);
    int64_t seq = journal_append (j, &c, NULL);
    assert_int_equal (journal_sync (j), 0);
    seen_t s = reopen_and_replay (&j);
    assert_int_equal (s.n, seq > 0 ? 2 : 1);            /* every record it took */
    assert_string_equal (s.ids [0], "a");
    /* "a" settled, the journal empties, and its numbers start again */
    journal_done (j, s.seqs [0]);
    if (s.n == 2)
        journal_done (j, s.seqs [1]);
    seq = journal_append (j, &c, NULL);
    assert_int_equal (seq, 1);
    assert_int_equal (journal_sync (j), 0);
    s = reopen_and_replay (&j);
    assert_int_equal (s.n, 1);
    assert_string_equal (s.ids [0], "after");
    journal_close (&j);
}

/* The same with nothing outstanding (a marker of the largest number is the region's last line),
 * with and without retained records: the next record starts the numbers again at 1 (the region
 * emptied, or carried to the retained file), and is replayed. */
static void
test_sequence_numbers_that_ran_out_start_again (void **state)
{
    static const char marker [] = "{\"done\":9007199254740991}\n";
    static const char retained [] = "{\"seq\":9007199254740991,\"id\":\"kept\",\"access\":\"QQ==\","
                                    "\"refresh\":\"Qg==\",\"spent\":\"spent-kept\"}\n"
                                    "{\"done\":9007199254740991,\"t\":1000}\n";
    char err [256];
    for (int keep = 0; keep < 2; keep++) {
        holder_t hd = { 0, 0 };
        unlink (retained_path);
        write_file (keep ? retained : marker, keep ? sizeof retained - 1 : sizeof marker - 1);
        journal_t *j = journal_open (path, err, sizeof err);
        assert_non_null (j);
        if (keep) {
            hd.n = 1;
            hd.oldest_ms = clock_mono_ms ();
            journal_set_retainer (j, holder_fn, &hd, 1 << 20);
        }
        store_commit_t c = record ("after", 1);
        assert_int_equal (journal_append (j, &c, NULL), 1);
        assert_int_equal (journal_sync (j), 0);
        seen_t s = reopen_and_replay (&j);
        assert_int_equal (s.n, 1);
        assert_string_equal (s.ids [0], "after");
        if (keep) {
            retained_t r;
            memset (&r, 0, sizeof r);
            journal_set_retainer (j, holder_fn, &hd, 1 << 20);
            assert_int_equal (journal_retained (j, retained_fn, &r), 1);
            assert_string_equal (r.ids [0], "kept");
        }
        journal_close (&j);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_outstanding_records_are_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown (test_file_is_written_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sync_off_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown (test_an_earlier_epoch_never_settles_a_live_record, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_torn_record_never_swallows_the_next, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_record_cut_before_its_newline_is_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown (test_journal_of_an_older_version_is_replayed_and_settled, setup, teardown),
        cmocka_unit_test (test_parse_line),
        cmocka_unit_test (test_huge_sequence),
        cmocka_unit_test_setup_teardown (test_a_record_torn_onto_a_stale_line_is_not_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_stale_record_behind_a_tear_is_not_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown (test_stale_bytes_beyond_the_live_region_are_zeroed_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown (test_records_left_are_counted_before_the_replay, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_journal_is_opened_by_one_process_at_a_time, setup, teardown),
        cmocka_unit_test (test_the_largest_sequence_is_refused),
        cmocka_unit_test_setup_teardown (test_a_record_is_never_numbered_past_the_largest_read, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sequence_numbers_that_ran_out_start_again, setup, teardown),
        cmocka_unit_test_setup_teardown (test_records_after_an_older_versions_marker_are_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_marker_left_behind_a_torn_first_record_never_settles_a_new_one, setup,
                                         teardown),
        cmocka_unit_test_setup_teardown (test_a_marker_settles_only_the_records_before_it, setup, teardown),
        cmocka_unit_test_setup_teardown (test_new_records_are_numbered_past_the_markers, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_failed_sync_writes_the_records_again, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_failed_sync_off_the_loop_is_not_counted_and_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_close_after_a_failed_sync_writes_the_records_again, setup, teardown),
        cmocka_unit_test_setup_teardown (test_retained_records_outlive_their_settle, setup, teardown),
        cmocka_unit_test_setup_teardown (test_retained_records_carried_by_exchanging_the_files, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_carry_waits_for_the_sync_thread, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_failed_carry_keeps_the_region, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_roll_keeps_the_count_of_outstanding_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_journal_never_idle_is_rolled, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_carry_copies_the_outstanding_records, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_failed_roll_keeps_the_journal, setup, teardown),
        cmocka_unit_test_setup_teardown (test_a_tear_after_a_carry_never_replays_what_an_earlier_roll_copied, setup,
                                         teardown),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
