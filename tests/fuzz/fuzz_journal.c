/* fuzz_journal.c - a worker journal file as journal_replay reads it after a crash: lines of
 * JSON (journal_parse_line), records decoded into commits (journal_read_record), and the next
 * sequence number replay derives from them */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "journal.h"
#include "mem.h"

#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_journal: %s\n", #cond); abort (); } } while (0)

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
        CHECK (seq >= 0 && seq <= JOURNAL_MAX_SEQ && done >= 0 && done <= JOURNAL_MAX_SEQ);
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
                (void) sum;
            }
            mem_free ((void *) c.access_ct);
            mem_free ((void *) c.refresh_ct);
        }
        json_decref (o);
        mem_free (line);
    }
    CHECK (next_seq > 0);
    return 0;
}
