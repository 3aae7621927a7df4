/* journal.c - JSON lines: {"seq":N, ...commit...} then {"done":N} when settled */
#include "journal.h"
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define JOURNAL_MAX_LINE (256 * 1024)

struct journal {
    char *path;
    int fd;
    int64_t next_seq;
    size_t outstanding;
};

journal_t *
journal_open (const char *path, char *err, size_t errlen)
{
    int fd = open (path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf (err, errlen, "could not open journal \"%s\": %s", path, strerror (errno));
        return NULL;
    }
    journal_t *j = mem_alloc (sizeof *j);
    j->path = mem_strdup (path);
    j->fd = fd;
    j->next_seq = 1;
    return j;
}

void
journal_close (journal_t **j_p)
{
    if (j_p && *j_p) {
        if ((*j_p)->fd >= 0)
            close ((*j_p)->fd);
        mem_free ((*j_p)->path);
        mem_free (*j_p);
        *j_p = NULL;
    }
}

static int
journal_write_line (journal_t *j, json_t *obj, int sync)
{
    char *line = json_dumps (obj, JSON_COMPACT);
    if (!line)
        return -1;
    size_t len = strlen (line);
    int rc = 0;
    char *buf = mem_alloc (len + 2);
    memcpy (buf, line, len);
    buf [len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t n = write (j->fd, buf + off, len + 1 - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = -1;
            break;
        }
        off += (size_t) n;
    }
    if (rc == 0 && sync && fsync (j->fd) != 0)
        rc = -1;
    mem_free (buf);
    free (line);
    return rc;
}

int64_t
journal_append (journal_t *j, const store_commit_t *c)
{
    char *at = crypto_b64_encode (c->access_ct, c->access_ct_len);
    char *rt = crypto_b64_encode (c->refresh_ct, c->refresh_ct_len);
    int64_t seq = j->next_seq++;
    json_t *o = json_pack ("{sI ss sI sI si ss ss sI ss sb ss?}",
                           "seq", (json_int_t) seq, "id", c->id,
                           "generation", (json_int_t) c->expected_generation,
                           "lease", (json_int_t) c->lease_id, "key", (int) c->key_id,
                           "access", at, "refresh", rt, "expires_at", (json_int_t) c->access_expires_at,
                           "fingerprint", c->refresh_fingerprint ? c->refresh_fingerprint : "",
                           "rotated", c->rotated, "scopes", c->scopes);
    int rc = o ? journal_write_line (j, o, 1) : -1;
    json_decref (o);
    mem_free (at);
    mem_free (rt);
    if (rc != 0) {
        log_error (c->id, NULL, "could not write the journal \"%s\": %s", j->path, strerror (errno));
        return -1;
    }
    j->outstanding++;
    return seq;
}

void
journal_done (journal_t *j, int64_t seq)
{
    json_t *o = json_pack ("{sI}", "done", (json_int_t) seq);
    /* no fsync: a lost marker only makes the start-up replay look at a settled record again */
    if (journal_write_line (j, o, 0) != 0)
        log_warning (NULL, NULL, "could not mark journal record %lld settled: %s", (long long) seq, strerror (errno));
    json_decref (o);
    if (j->outstanding > 0)
        j->outstanding--;
    if (j->outstanding == 0 && ftruncate (j->fd, 0) == 0)
        j->next_seq = 1;
}

json_t *
journal_parse_line (const char *line, size_t len, int64_t *seq, int64_t *done)
{
    json_t *o = json_loadb (line, len, 0, NULL);
    *seq = 0;
    *done = 0;
    if (!json_is_object (o)) {
        json_decref (o);
        return NULL;
    }
    int64_t s = json_integer_value (json_object_get (o, "seq"));
    int64_t d = json_integer_value (json_object_get (o, "done"));
    if (s < 0 || s > JOURNAL_MAX_SEQ || d < 0 || d > JOURNAL_MAX_SEQ) {
        json_decref (o);        /* not a number this code wrote: the next one would overflow */
        return NULL;
    }
    *seq = s;
    *done = d;
    return o;
}

int
journal_read_record (const json_t *o, store_commit_t *c)
{
    size_t at_len = 0, rt_len = 0;
    memset (c, 0, sizeof *c);
    unsigned char *at = crypto_b64_decode (json_string_value (json_object_get (o, "access")) ?: "", &at_len);
    unsigned char *rt = crypto_b64_decode (json_string_value (json_object_get (o, "refresh")) ?: "", &rt_len);
    c->id = json_string_value (json_object_get (o, "id"));
    c->expected_generation = json_integer_value (json_object_get (o, "generation"));
    c->lease_id = json_integer_value (json_object_get (o, "lease"));
    c->key_id = (int32_t) json_integer_value (json_object_get (o, "key"));
    c->access_ct = at;
    c->access_ct_len = at_len;
    c->refresh_ct = rt;
    c->refresh_ct_len = rt_len;
    c->access_expires_at = json_integer_value (json_object_get (o, "expires_at"));
    c->refresh_fingerprint = json_string_value (json_object_get (o, "fingerprint"));
    c->rotated = json_is_true (json_object_get (o, "rotated"));
    c->scopes = json_string_value (json_object_get (o, "scopes"));
    return c->id && at && rt ? 0 : -1;
}

int
journal_replay (journal_t *j, journal_replay_fn *fn, void *arg)
{
    FILE *f = fopen (j->path, "r");
    if (!f)
        return -1;
    json_t *records = json_array ();
    json_t *done = json_object ();
    char *line = mem_alloc (JOURNAL_MAX_LINE);
    int count = 0;
    while (fgets (line, JOURNAL_MAX_LINE, f)) {
        int64_t seq, d;
        json_t *o = journal_parse_line (line, strlen (line), &seq, &d);
        if (!o) {
            /* a torn last line from a crash mid-write: the record never counted */
            log_warning (NULL, NULL, "skipping an unreadable journal line in \"%s\"", j->path);
            continue;
        }
        if (d > 0) {
            char key [32];
            snprintf (key, sizeof key, "%lld", (long long) d);
            json_object_set_new (done, key, json_true ());
        }
        else
        if (seq > 0)
            json_array_append (records, o);
        if (seq >= j->next_seq)
            j->next_seq = seq + 1;
        json_decref (o);
    }
    fclose (f);
    mem_free (line);

    size_t i;
    json_t *o;
    j->outstanding = 0;
    json_array_foreach (records, i, o) {
        char key [32];
        json_int_t seq = json_integer_value (json_object_get (o, "seq"));
        snprintf (key, sizeof key, "%lld", (long long) seq);
        if (json_object_get (done, key))
            continue;
        j->outstanding++;
    }
    json_array_foreach (records, i, o) {
        char key [32];
        json_int_t seq = json_integer_value (json_object_get (o, "seq"));
        snprintf (key, sizeof key, "%lld", (long long) seq);
        if (json_object_get (done, key))
            continue;
        store_commit_t c;
        if (journal_read_record (o, &c) == 0) {
            fn (arg, seq, &c);
            count++;
        }
        else {
            log_warning (NULL, NULL, "journal record %lld in \"%s\" is incomplete; skipped", (long long) seq, j->path);
            journal_done (j, seq);
        }
        mem_free ((void *) c.access_ct);
        mem_free ((void *) c.refresh_ct);
    }
    json_decref (records);
    json_decref (done);
    return count;
}

size_t
journal_outstanding (const journal_t *j)
{
    return j->outstanding;
}
