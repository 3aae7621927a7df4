/* fuzz_journal.c - a worker journal file as journal_replay reads it after a crash: lines of
 * JSON (journal_parse_line), records decoded into commits (journal_read_record), and the next
 * sequence number replay derives from them; then the same bytes as a journal file on disk
 * (journal_open, journal_replay): a record appended after whatever the file held, and synced,
 * is replayed at the next open (a torn line must never swallow it) */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "journal.h"
#include "mem.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_journal: %s\n", #cond); abort (); } } while (0)

static void
count_replayed (void *arg, int64_t seq, const store_commit_t *c, const char *spent)
{
    (void) seq;
    if (strcmp (c->id, "fuzz:appended") == 0)
        (*(int *) arg)++;
}

/* journal_retained's callback: a retained commit read back whole (journal_read_record checked it). */
static void
count_retained (void *arg, const store_commit_t *c, const char *spent, int64_t age_ms)
{
    (void) arg;
    (void) spent;
    (void) age_ms;
    CHECK (c->id != NULL);
}

/* The bytes as a journal file: opened, replayed, one record appended and synced, opened again. */
static void
file_round (const uint8_t *data, size_t size)
{
    static char path [64];
    if (!path [0])
        snprintf (path, sizeof path, "/dev/shm/ferrule-fuzz-journal-%d", (int) getpid ());
    FILE *f = fopen (path, "w");
    CHECK (f);
    CHECK (fwrite (data, 1, size, f) == size);
    fclose (f);
    char err [256];
    int seen = 0;
    journal_t *j = journal_open (path, err, sizeof err);
    CHECK (j);
    CHECK (journal_replay (j, count_replayed, &seen) >= 0);
    static const unsigned char ct [] = { 1, 2, 3 };
    store_commit_t c;
    memset (&c, 0, sizeof c);
    c.id = "fuzz:appended";
    c.access_ct = ct;
    c.access_ct_len = sizeof ct;
    c.refresh_ct = ct;
    c.refresh_ct_len = sizeof ct;
    c.refresh_fingerprint = "fp";
    c.rotated = 1;
    CHECK (journal_append (j, &c, NULL) > 0);
    CHECK (journal_sync (j) == 0);
    journal_close (&j);
    int before = seen;
    seen = 0;
    j = journal_open (path, err, sizeof err);
    CHECK (j);
    CHECK (journal_replay (j, count_replayed, &seen) >= 0);
    CHECK (journal_retained (j, count_retained, NULL) >= 0);
    journal_close (&j);
    /* settled markers the bytes held may name the new record's sequence: then it may be settled */
    if (!memmem (data, size, "done", 4))
        CHECK (seen == before + 1);
    unlink (path);
    char retained [80];
    snprintf (retained, sizeof retained, "%s.retained", path);
    unlink (retained);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *p = (const char *) data, *end = p + size;
    int64_t next_seq = 1;

    while (p < end) {
        /* fgets: a line ends at '\n' (included) or at the end of the file */
        const char *nl = memchr (p, '\n', (size_t) (end - p));
        size_t len = nl ? (size_t) (nl + 1 - p) : (size_t) (end - p);
        char *line = mem_alloc (len + 1);
        memcpy (line, p, len);
        p += len;

        int64_t seq = -1, done = -1;
        json_t *o = journal_parse_line (line, strlen (line), &seq, &done);
        if (!o) {
            CHECK (seq == 0 && done == 0);
            mem_free (line);
            continue;
        }
        CHECK (json_is_object (o));
        CHECK (seq >= 0 && seq < JOURNAL_MAX_SEQ && done >= 0 && done < JOURNAL_MAX_SEQ);
        /* replay: the next record gets a sequence after every one seen */
        if (seq >= next_seq)
            CHECK (!__builtin_add_overflow (seq, 1, &next_seq));
        if (done <= 0 && seq > 0) {
            store_commit_t c;
            int rc = journal_read_record (o, &c);
            if (rc == 0) {
                CHECK (c.id && c.access_ct && c.refresh_ct);
                /* the commit is handed to the database as it is: read every byte */
                size_t sum = strlen (c.id);
                for (size_t i = 0; i < c.access_ct_len; i++)
                    sum += c.access_ct [i];
                for (size_t i = 0; i < c.refresh_ct_len; i++)
                    sum += c.refresh_ct [i];
                sum += c.refresh_fingerprint ? strlen (c.refresh_fingerprint) : 0;
                sum += c.scopes ? strlen (c.scopes) : 0;
                sum += c.unusable ? strlen (c.unusable) : 0;
                (void) sum;
            }
            mem_free ((void *) c.access_ct);
            mem_free ((void *) c.refresh_ct);
        }
        json_decref (o);
        mem_free (line);
    }
    CHECK (next_seq > 0);
    file_round (data, size);
    return 0;
}
