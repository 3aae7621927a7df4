/* journal.c - JSON lines: {"seq":N,"e":EPOCH, ...commit...} then {"done":N,"e":EPOCH} when settled,
 * each followed by a tab and the line's checksum (16 hex digits of FNV-1a 64 over the JSON).
 *
 * The file is written in place, never appended to: it is grown in chunks of zeros written once
 * (and synced), and records go at the end of the live region followed by a NUL byte that ends it.
 * A sync then has only data to flush, no file size or extent change, which is what keeps the time
 * from a provider's answer to the disk short (docs/architecture.md, the crash window). Emptying
 * the journal writes a NUL at offset 0 and starts a new epoch, and leaves the earlier epochs' lines
 * behind it. A write torn by a crash (cut at a page boundary, or half on disk at a power cut) then
 * runs into those stale bytes instead of zeros: the checksum makes such a line unreadable (the
 * prefix of a new record joined to the tail of an old one could otherwise parse, and replay would
 * commit old or foreign ciphertext), and the live region ends at the first line of another epoch,
 * so that no stale record or "done" marker is read as live. Opening the journal zeroes what lies
 * beyond the live region, so that stale bytes of a version without checksums never meet a tear.
 * When a new epoch's first record is torn at offset 0, the region takes the epoch of the first
 * readable line after it, the emptied epoch's: its markers are read, and settle only the records
 * before them (journal_collect), never one written after the tear, which is numbered past them
 * too (journal_learn). A roll (struct journal) instead starts the other file with a synced line
 * of its new epoch: the lines behind it there are another epoch's, whose records it may have
 * copied, and no tear may make them the region. */
#define _GNU_SOURCE                      /* renameat2, RENAME_EXCHANGE */
#include "journal.h"
#include <assert.h>
#include "clock.h"
#include "daemon.h"
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "ring.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JOURNAL_MAX_LINE (256 * 1024)
#define JOURNAL_SUM_LEN  16              /* the checksum's hex digits, after a tab */
#define JOURNAL_CHUNK    (1024 * 1024)   /* the file grows by this much, zeros written once */
/* the copy of the lines not yet known to be on disk is let go past this (a disk failing for
 * minutes under load): the records are still in memory until committed, and the database has them */
#define JOURNAL_KEPT_MAX (64 * 1024 * 1024)
#define JOURNAL_RETRY_MIN_MS 50          /* the wait before a sync after a failed one, doubling */
#define JOURNAL_RETRY_MAX_MS 1000
#define JOURNAL_QUIET_WAIT_MS 1000       /* a roll waits this long at most for its flush */
/* a region this long is rolled though records are outstanding (struct journal); without a
 * retainer, also the length a roll waits for */
#define JOURNAL_ROLL_MIN (4 * 1024 * 1024)
#define JOURNAL_COPY_MAX (1024 * 1024)   /* a roll copies at most this much, on the loop */

/* A record not yet settled, and where its line is in the live region. */
typedef struct {
    int64_t seq;
    off_t off;
    size_t len;                  /* the line's bytes, without its newline; 0 once settled */
} journal_rec_t;

struct journal {
    char *path;
    int fd;
    int64_t next_seq;
    /* The records not yet settled, in sequence order: v [head, end), settled ones left in place
     * until the front passes them. A roll copies the live ones. */
    struct {
        journal_rec_t *v;
        size_t head, end, cap;
        size_t live;             /* records outstanding */
        size_t bytes;            /* their lines' bytes */
    } recs;
    int unsynced;                /* records written since the last fdatasync */
    uint64_t epoch;              /* of the live region's records and markers */
    off_t end;                   /* where the next line goes: the live region's NUL */
    off_t size;                  /* the file's size; everything up to it has been written */
    uint64_t appended;           /* records written, ever (the loop's thread only) */
    journal_flush_fn *flush;     /* fdatasync, or a test's (journal_set_flush) */
    void *flush_arg;
    /* The bytes of lines written since the last sync known to have succeeded, copied. After a
     * failed fdatasync Linux may mark the pages clean without having written them, and the next
     * fdatasync succeeds without writing them either: they are written again from this copy
     * before any further sync (journal_rewrite). The loop's thread only. */
    struct {
        char *buf;
        size_t head, len, cap;   /* the copy is buf [head, head + len) */
        off_t off;               /* where buf [head] is in the file */
        uint64_t base;           /* the count of written at buf [head] */
        int dropped;             /* past JOURNAL_KEPT_MAX: bytes before the copy are not kept */
    } kept;
    uint64_t written;            /* bytes of lines written, ever (the loop's thread only) */
    /* The live region is emptied whenever nothing in it is outstanding or retained. A region that
     * never gets there is rolled once it is long: the records still outstanding are copied, under
     * a new epoch and their own sequences, to the start of the file "<path>.retained", which is
     * synced and then exchanges names with the journal's file in one atomic rename. The journal
     * goes on after the copies, and the old region is the retained file's. Two things make a
     * region stay: records outstanding under load (some refresh is always between its provider's
     * answer and its commit, or one commit is stuck), and records kept on disk after they settle
     * (journal_done_retain) while the retainer (journal_set_retainer) holds their commits. A roll
     * that carries retained records waits until the retained file holds nothing the retainer
     * still holds; once it is done the disk has each held commit, in one file or the other. A
     * roll with nothing outstanding copies nothing (the "carry"). */
    int retained_in_region;      /* the live region has a record settled by journal_done_retain */
    journal_retainer_fn *retainer;
    void *retainer_arg;
    off_t roll_min;              /* the carry size (journal_set_retainer), or JOURNAL_ROLL_MIN */
    off_t roll_at;               /* the region's length that rolls next: roll_min, or more after a
                                  * roll that failed */
    char *retained_path;         /* "<path>.retained" */
    int rfd;                     /* that file, open (and locked) beside the journal's */
    int retained_live;           /* it may hold retained records */
    int64_t carried_ms;          /* when it was carried (monotonic; the open, for an earlier run's) */
    uint64_t sync_failures;      /* failed flushes, ever (the loop's thread only) */
    struct {                     /* the sync thread (journal_sync_start), started on first use */
        int started;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_cond_t ended;    /* broadcast when a flush has ended (journal_quiet waits on it) */
        int efd;                 /* eventfd: written when a sync ends */
        uint64_t want;           /* under lock: sync every record up to this count */
        uint64_t want_mark;      /* under lock: and the bytes written up to then (written) */
        uint64_t done;           /* under lock: records on disk */
        uint64_t done_mark;      /* under lock: bytes on disk */
        int64_t done_us;         /* under lock: when the sync that made done ended, monotonic */
        int failed;              /* under lock: the last sync failed (its errno); none is tried
                                  * until the loop has written the bytes again (journal_synced) */
        int in_row;              /* under lock: failed syncs since the last success */
        int flushing;            /* under lock: a flush is under way, outside the lock */
        int dir_pending;         /* under lock: the directory is synced before the next flush
                                  * (after a roll exchanged the files' names) */
        int stop;                /* under lock */
    } sync;
};

static const char s_zeros [65536];

static void journal_keep (journal_t *j, const char *line, size_t len);
static int journal_rewrite (journal_t *j);
static void journal_tidy (journal_t *j, int renumber);
static int journal_sync_dir (const char *path);

static int
journal_fdatasync (int fd, void *arg)
{
    (void) arg;
    return fdatasync (fd);
}

static uint64_t
journal_new_epoch (void)
{
    uint64_t e = 0;
    if (getrandom (&e, sizeof e, 0) != (ssize_t) sizeof e)
        e = (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32);
    return e & 0x1fffffffffffffULL;      /* exact in a JSON number of any reader */
}

/* Writes all of buf at off. 0, or -1 with errno set. */
static int
journal_pwrite_fd (int fd, const void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite (fd, (const char *) buf + done, len - done, off + (off_t) done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t) n;
    }
    return 0;
}

static int
journal_pwrite (journal_t *j, const void *buf, size_t len, off_t off)
{
    return journal_pwrite_fd (j->fd, buf, len, off);
}

/* Makes the file fd (*size bytes long) at least need bytes long with zeros written (not a hole,
 * not unwritten extents: writing into those later would make every sync a metadata sync too),
 * and syncs that once. 0, or -1 with errno set. */
static int
journal_grow (int fd, off_t *size, off_t need)
{
    if (need <= *size)
        return 0;
    off_t target = *size + JOURNAL_CHUNK;
    if (target < need)
        target = need + JOURNAL_CHUNK;
    for (off_t off = *size; off < target; ) {
        size_t n = target - off < (off_t) sizeof s_zeros ? (size_t) (target - off) : sizeof s_zeros;
        if (journal_pwrite_fd (fd, s_zeros, n, off) != 0)
            return -1;
        off += (off_t) n;
    }
    if (fsync (fd) != 0)
        return -1;
    *size = target;
    return 0;
}

static int
journal_reserve (journal_t *j, off_t need)
{
    return journal_grow (j->fd, &j->size, need);
}

/* The checksum of a line's JSON, as 16 lower-case hex digits and a NUL into out. */
static void
journal_sum (const char *json, size_t len, char out [JOURNAL_SUM_LEN + 1])
{
    snprintf (out, JOURNAL_SUM_LEN + 1, "%016llx", (unsigned long long) ring_hash (json, len));
}

json_t *
journal_parse_line (const char *line, size_t len, int64_t *seq, int64_t *done)
{
    *seq = 0;
    *done = 0;
    /* a line with a tab carries its checksum after it, and must match it whole; one without is a
     * line of a version that wrote none (read as it always was) */
    const char *tab = memchr (line, '\t', len);
    if (tab) {
        size_t jlen = (size_t) (tab - line);
        char sum [JOURNAL_SUM_LEN + 1];
        journal_sum (line, jlen, sum);
        if (len - jlen - 1 != JOURNAL_SUM_LEN || memcmp (tab + 1, sum, JOURNAL_SUM_LEN) != 0)
            return NULL;
        len = jlen;
    }
    json_t *o = json_loadb (line, len, 0, NULL);
    if (!json_is_object (o)) {
        json_decref (o);
        return NULL;
    }
    int64_t s = json_integer_value (json_object_get (o, "seq"));
    int64_t d = json_integer_value (json_object_get (o, "done"));
    /* JOURNAL_MAX_SEQ and past: not a number this code gives (journal_append), and the next one
     * would overflow */
    if (s < 0 || s >= JOURNAL_MAX_SEQ || d < 0 || d >= JOURNAL_MAX_SEQ) {
        json_decref (o);
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
    /* journals written before lease tokens carry a numeric "lease": no token, so the replayed
     * commit leaves that lease to the release that follows the replay */
    snprintf (c->lease_token, sizeof c->lease_token, "%s", json_string_value (json_object_get (o, "lease_token")) ?: "");
    c->key_id = (int32_t) json_integer_value (json_object_get (o, "key"));
    c->access_ct = at;
    c->access_ct_len = at_len;
    c->refresh_ct = rt;
    c->refresh_ct_len = rt_len;
    c->access_expires_at = json_integer_value (json_object_get (o, "expires_at"));
    c->access_lifetime_s = json_integer_value (json_object_get (o, "lifetime"));
    c->refresh_fingerprint = json_string_value (json_object_get (o, "fingerprint"));
    c->rotated = json_is_true (json_object_get (o, "rotated"));
    c->scopes = json_string_value (json_object_get (o, "scopes"));
    c->unusable = json_string_value (json_object_get (o, "unusable"));   /* absent before it was kept */
    c->api_base_url = json_string_value (json_object_get (o, "api_base_url"));     /* likewise */
    return c->id && at && rt ? 0 : -1;
}

/* The state of a scan of the live region: its epoch is the first readable line's ("e", 0 for a
 * line of a version without epochs). */
typedef struct {
    int have_epoch;
    int64_t epoch;
} scan_t;

/* A parsed line of a scan, and where it is: off, and len bytes without its newline. */
typedef void (scan_fn) (void *arg, json_t *o, off_t off, size_t len);

/* One line (len bytes at off, no newline) to fn, or a warning when it is unreadable. 1 when the
 * line is of another epoch than the region's: the region ended before it, and fn is not called. */
static int
journal_scan_line (const char *path, scan_t *sc, const char *line, off_t off, size_t len, int overlong,
                   scan_fn *fn, void *arg)
{
    int64_t seq, done;
    if (len == 0 && !overlong)
        return 0;
    json_t *o = overlong ? NULL : journal_parse_line (line, len, &seq, &done);
    if (!o) {
        /* a line cut by a crash mid-write, or nothing this code wrote */
        log_warning (NULL, NULL, "skipping an unreadable journal line in \"%s\"", path);
        return 0;
    }
    int64_t e = json_integer_value (json_object_get (o, "e"));
    if (sc->have_epoch && e != sc->epoch) {
        json_decref (o);
        return 1;
    }
    sc->have_epoch = 1;
    sc->epoch = e;
    fn (arg, o, off, len);
    json_decref (o);
    return 0;
}

/* Calls fn for every parsed line of the live region: the bytes before the file's first NUL
 * (journal_write_line ends the region with one; a torn write leaves what it wrote before the
 * zeros the file was grown with, or before an earlier epoch's lines), up to the first line of
 * another epoch. Returns the region's length, -1 on a read error. *torn (may be NULL) is set when
 * the region does not end with a newline: its last line was cut (it is still read: a record cut
 * just before its newline is whole), and the next one must not continue it. */
static off_t
journal_scan (int fd, const char *path, scan_fn *fn, void *arg, int *torn, scan_t *region)
{
    char *line = mem_alloc (JOURNAL_MAX_LINE);
    char block [65536];
    size_t len = 0;
    int overlong = 0, nul = 0, other = 0;
    off_t off = 0, line_start = 0;
    scan_t sc = { 0, 0 };
    while (!nul && !other) {
        ssize_t n = pread (fd, block, sizeof block, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            mem_free (line);
            return -1;
        }
        if (n == 0)
            break;
        ssize_t i;
        for (i = 0; i < n && !(nul = block [i] == '\0'); i++) {
            if (block [i] == '\n') {
                if ((other = journal_scan_line (path, &sc, line, line_start, len, overlong, fn, arg)))
                    break;
                len = 0;
                overlong = 0;
                line_start = off + i + 1;
            }
            else
            if (len < JOURNAL_MAX_LINE)
                line [len++] = block [i];
            else
                overlong = 1;
        }
        off += (off_t) i;
    }
    if (!other)
        other = journal_scan_line (path, &sc, line, line_start, len, overlong, fn, arg);
    if (torn)
        *torn = !other && (len > 0 || overlong);
    if (region)
        *region = sc;
    mem_free (line);
    return other ? line_start : off;
}

/* At open: the next sequence passes every number of the live region, its markers' too. A marker
 * can be there without its record (the emptied epoch's, read after a torn first record): a new
 * record of its number is not settled by it (journal_collect), but would be by an older version
 * reading the journal, and each number is one record in the list of those outstanding. */
static void
journal_learn (journal_t *j, json_t *o)
{
    json_int_t seq = json_integer_value (json_object_get (o, "seq"));
    json_int_t done = json_integer_value (json_object_get (o, "done"));
    if (done > seq)
        seq = done;
    if (seq >= j->next_seq)
        j->next_seq = seq + 1;
}

/* A record written at off (len bytes, without its newline), outstanding until journal_untrack. */
static void
journal_track (journal_t *j, int64_t seq, off_t off, size_t len)
{
    /* sequences only grow within a region, so the list stays in order (binary search) */
    assert (j->recs.end == j->recs.head || j->recs.v [j->recs.end - 1].seq < seq);
    if (j->recs.end == j->recs.cap) {
        if (j->recs.head > 0) {              /* the settled front first */
            memmove (j->recs.v, j->recs.v + j->recs.head, (j->recs.end - j->recs.head) * sizeof *j->recs.v);
            j->recs.end -= j->recs.head;
            j->recs.head = 0;
        }
        if (j->recs.end == j->recs.cap) {
            j->recs.cap = j->recs.cap ? 2 * j->recs.cap : 64;
            j->recs.v = mem_realloc (j->recs.v, j->recs.cap * sizeof *j->recs.v);
        }
    }
    j->recs.v [j->recs.end++] = (journal_rec_t) { seq, off, len };
    j->recs.live++;
    j->recs.bytes += len;
}

/* seq is settled. 1 when it was outstanding. */
static int
journal_untrack (journal_t *j, int64_t seq)
{
    size_t lo = j->recs.head, hi = j->recs.end;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->recs.v [mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == j->recs.end || j->recs.v [lo].seq != seq || j->recs.v [lo].len == 0)
        return 0;
    j->recs.bytes -= j->recs.v [lo].len;
    j->recs.v [lo].len = 0;
    j->recs.live--;
    while (j->recs.head < j->recs.end && j->recs.v [j->recs.head].len == 0)
        j->recs.head++;
    if (j->recs.head == j->recs.end)
        j->recs.head = j->recs.end = 0;
    return 1;
}

/* Zeroes the file from off to its end where it is not zero already, and syncs what that wrote:
 * the lines earlier epochs left beyond the live region (see the top of this file). 0, or -1 with
 * errno set. */
static int
journal_scrub (journal_t *j, off_t off)
{
    char block [sizeof s_zeros];
    int wrote = 0;
    while (off < j->size) {
        size_t want = j->size - off < (off_t) sizeof block ? (size_t) (j->size - off) : sizeof block;
        ssize_t n = pread (j->fd, block, want, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        if (memcmp (block, s_zeros, (size_t) n) != 0) {
            if (journal_pwrite (j, s_zeros, (size_t) n, off) != 0)
                return -1;
            wrote = 1;
        }
        off += (off_t) n;
    }
    return wrote && fdatasync (j->fd) != 0 ? -1 : 0;
}

typedef struct {
    json_t *records;
    json_t *done;                /* "epoch/seq" of every settled record (a marker after its last
                                  * record of that number): true, or when it settled (ms, wall
                                  * clock) for a retained one */
} replay_scan_t;

static void journal_collect (void *arg, json_t *o, off_t off, size_t len);
static void journal_key (json_t *o, char *key, size_t len);

/* The live region's records and settled markers into rs (the caller decrefs both). 0, or -1 on a
 * read error. */
static int
journal_collect_all (journal_t *j, replay_scan_t *rs)
{
    rs->records = json_array ();
    rs->done = json_object ();
    return journal_scan (j->fd, j->path, journal_collect, rs, NULL, NULL) < 0 ? -1 : 0;
}

/* At open, one pass over the live region: its highest sequence, its records (and where their
 * lines are: at [i] for the record at i in rs.records) and their markers. */
typedef struct {
    journal_t *j;
    replay_scan_t rs;
    journal_rec_t *at;
    size_t n, cap;
} open_scan_t;

static void
journal_open_line (void *arg, json_t *o, off_t off, size_t len)
{
    open_scan_t *os = arg;
    size_t before = json_array_size (os->rs.records);
    journal_learn (os->j, o);
    journal_collect (&os->rs, o, off, len);
    if (json_array_size (os->rs.records) > before) {
        if (os->n == os->cap) {
            os->cap = os->cap ? 2 * os->cap : 64;
            os->at = mem_realloc (os->at, os->cap * sizeof *os->at);
        }
        os->at [os->n++] = (journal_rec_t) { json_integer_value (json_object_get (o, "seq")), off, len };
    }
}

/* At open: the records no marker settles are outstanding. */
static void
journal_track_unsettled (journal_t *j, const open_scan_t *os)
{
    size_t i;
    json_t *o;
    json_array_foreach (os->rs.records, i, o) {
        char key [64];
        journal_key (o, key, sizeof key);
        /* a sequence seen twice (not written by this code) is tracked once */
        if (json_object_get (os->rs.done, key) == NULL && i < os->n
        &&  (j->recs.end == j->recs.head || j->recs.v [j->recs.end - 1].seq < os->at [i].seq))
            journal_track (j, os->at [i].seq, os->at [i].off, os->at [i].len);
    }
}

/* 1 when a marker of rs settles a record as retained (journal_done_retain: it carries "t"). */
static int
journal_any_retained (const replay_scan_t *rs)
{
    const char *key;
    json_t *v;
    json_object_foreach (rs->done, key, v)
        if (json_is_integer (v))
            return 1;
    return 0;
}

journal_t *
journal_open (const char *path, char *err, size_t errlen)
{
    int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf (err, errlen, "could not open journal \"%s\": %s", path, strerror (errno));
        return NULL;
    }
    journal_t *j = mem_alloc (sizeof *j);
    j->path = mem_strdup (path);
    size_t plen = strlen (path);
    j->retained_path = mem_alloc (plen + sizeof ".retained");
    memcpy (j->retained_path, path, plen);
    memcpy (j->retained_path + plen, ".retained", sizeof ".retained");
    j->fd = fd;
    j->rfd = -1;
    j->next_seq = 1;
    j->flush = journal_fdatasync;
    j->sync.efd = -1;
    /* one process at a time: two writing at their own ends would overwrite each other's records
     * (two workers given one id, or one started before the last one has stopped) */
    if (flock (fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            snprintf (err, errlen, "journal \"%s\" is in use by another process: a second worker with the same "
                      "id, or one that has not stopped yet", path);
            journal_close (&j);
            return NULL;
        }
        /* a file system without locks (some network ones): the journal works, unguarded */
        log_warning (NULL, NULL, "could not lock journal \"%s\" (%s): nothing keeps another worker with the same id "
                     "from writing it too", path, strerror (errno));
    }
    struct stat st;
    int torn = 0;
    scan_t region = { 0, 0 };
    open_scan_t os = { j, { json_array (), json_object () }, NULL, 0, 0 };
    if (fstat (fd, &st) != 0 || (j->end = journal_scan (fd, path, journal_open_line, &os, &torn, &region)) < 0) {
        snprintf (err, errlen, "could not read journal \"%s\": %s", path, strerror (errno));
        json_decref (os.rs.records);
        json_decref (os.rs.done);
        mem_free (os.at);
        journal_close (&j);
        return NULL;
    }
    /* counted before the replay, so that the backlog a worker reports while the database is away
     * is the records it holds, not 0 */
    journal_track_unsettled (j, &os);
    j->retained_in_region = journal_any_retained (&os.rs);
    json_decref (os.rs.records);
    json_decref (os.rs.done);
    mem_free (os.at);
    j->roll_min = j->roll_at = JOURNAL_ROLL_MIN;
    j->size = st.st_size;
    /* new lines continue the live region's epoch (0 for a journal of a version without epochs:
     * its markers must match its records until it empties), or start one */
    j->epoch = region.have_epoch ? (uint64_t) region.epoch : journal_new_epoch ();
    /* a journal written by an earlier version was appended to, without a terminating NUL; a cut
     * last line is ended, so that the next record starts a line of its own (written onto the
     * cut one, no replay could read it) */
    static const char end_line [2] = { '\n', '\0' };
    if (journal_reserve (j, j->end + 2) != 0
    ||  (torn && journal_pwrite (j, end_line, sizeof end_line, j->end) != 0)
    ||  journal_scrub (j, j->end + torn) != 0) {
        snprintf (err, errlen, "could not prepare journal \"%s\": %s", path, strerror (errno));
        journal_close (&j);
        return NULL;
    }
    if (torn) {
        journal_keep (j, end_line, 1);       /* unsynced like a line: written again if a sync fails */
        j->end++;
    }
    /* the retained file: the journal's other half (struct journal), locked with it */
    replay_scan_t rs = { json_array (), json_object () };
    j->rfd = open (j->retained_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->rfd < 0 || (flock (j->rfd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
    ||  journal_scan (j->rfd, j->retained_path, journal_collect, &rs, NULL, NULL) < 0) {
        snprintf (err, errlen, "could not open \"%s\": %s", j->retained_path, strerror (errno));
        json_decref (rs.records);
        json_decref (rs.done);
        journal_close (&j);
        return NULL;
    }
    j->retained_live = journal_any_retained (&rs);
    j->carried_ms = clock_mono_ms ();    /* what it holds was kept by the run before, before now */
    json_decref (rs.records);
    json_decref (rs.done);
    return j;
}

void
journal_close (journal_t **j_p)
{
    if (j_p && *j_p) {
        journal_t *j = *j_p;
        if (j->sync.started) {
            pthread_mutex_lock (&j->sync.lock);
            j->sync.stop = 1;
            pthread_cond_signal (&j->sync.wake);
            pthread_mutex_unlock (&j->sync.lock);
            pthread_join (j->sync.thread, NULL);
            /* a failure the loop has not heard of: the bytes again before the last sync below */
            if (j->sync.failed) {
                log_error (NULL, NULL, "could not flush the journal \"%s\" to disk: %s; writing its last %zu bytes "
                           "again before closing it", j->path, strerror (j->sync.failed), j->kept.len);
                if (journal_rewrite (j) != 0)
                    log_error (NULL, NULL, "could not write the journal \"%s\" again: %s", j->path, strerror (errno));
            }
            pthread_mutex_destroy (&j->sync.lock);
            pthread_cond_destroy (&j->sync.wake);
            pthread_cond_destroy (&j->sync.ended);
        }
        if (j->sync.efd >= 0)
            close (j->sync.efd);
        /* what was appended reaches the disk before the file is let go, asked for or not (the
         * thread syncs all it was asked for before it ends; a stop may come between a turn's
         * records and its request) */
        if (j->fd >= 0 && j->unsynced)
            (void) journal_sync (j);
        if ((*j_p)->fd >= 0)
            close ((*j_p)->fd);
        if ((*j_p)->rfd >= 0)
            close ((*j_p)->rfd);
        mem_free ((*j_p)->path);
        mem_free ((*j_p)->retained_path);
        mem_free ((*j_p)->kept.buf);
        mem_free ((*j_p)->recs.v);
        mem_free (*j_p);
        *j_p = NULL;
    }
}

/* A line of len bytes just written at j->end, copied until a sync covers it. */
static void
journal_keep (journal_t *j, const char *line, size_t len)
{
    j->written += len;
    if (j->kept.dropped)
        return;
    /* lines are only ever written at the region's end, and the copy is let go when it restarts */
    assert (j->kept.len == 0 || j->kept.off + (off_t) j->kept.len == j->end);
    if (j->kept.len + len > JOURNAL_KEPT_MAX) {
        log_error (NULL, NULL, "journal \"%s\": %zu bytes written since the last sync that succeeded; no longer "
                   "keeping a copy to write again", j->path, j->kept.len + len);
        mem_free (j->kept.buf);
        memset (&j->kept, 0, sizeof j->kept);
        j->kept.dropped = 1;
        return;
    }
    if (j->kept.len == 0) {
        j->kept.head = 0;
        j->kept.off = j->end;
        j->kept.base = j->written - len;
    }
    if (j->kept.head + j->kept.len + len > j->kept.cap) {
        if (j->kept.head > 0) {              /* the synced front first */
            memmove (j->kept.buf, j->kept.buf + j->kept.head, j->kept.len);
            j->kept.head = 0;
        }
        if (j->kept.len + len > j->kept.cap) {
            size_t cap = j->kept.cap ? j->kept.cap : 4096;
            while (cap < j->kept.len + len)
                cap *= 2;
            j->kept.buf = mem_realloc (j->kept.buf, cap);
            j->kept.cap = cap;
        }
    }
    memcpy (j->kept.buf + j->kept.head + j->kept.len, line, len);
    j->kept.len += len;
}

/* A sync that began once mark bytes had been written has succeeded: the copy of them goes. */
static void
journal_kept_synced (journal_t *j, uint64_t mark)
{
    if (j->kept.dropped && mark >= j->written)
        j->kept.dropped = 0;                 /* everything is on disk: kept from here on again */
    if (mark <= j->kept.base)
        return;
    uint64_t n = mark - j->kept.base;
    if (n >= j->kept.len) {
        j->kept.base += j->kept.len;
        j->kept.off += (off_t) j->kept.len;
        j->kept.head = j->kept.len = 0;
        return;
    }
    j->kept.head += (size_t) n;
    j->kept.len -= (size_t) n;
    j->kept.off += (off_t) n;
    j->kept.base += n;
}

/* After a failed flush: the lines no sync has put on disk, and the live region's NUL, written
 * again, so that the next flush has them to write. 0, or -1 with errno set. */
static int
journal_rewrite (journal_t *j)
{
    j->sync_failures++;
    if (j->kept.dropped)
        log_error (NULL, NULL, "journal \"%s\": lines written while no sync succeeded were not kept; only the last "
                   "%zu bytes are written again", j->path, j->kept.len);
    if (j->kept.len > 0 && journal_pwrite (j, j->kept.buf + j->kept.head, j->kept.len, j->kept.off) != 0)
        return -1;
    return journal_pwrite (j, "", 1, j->end);
}

/* obj as a line: its JSON, a tab, the checksum and a newline, then a NUL (not counted in *len).
 * NULL when it cannot be written as JSON. */
static char *
journal_format_line (json_t *obj, size_t *len)
{
    char *line = json_dumps (obj, JSON_COMPACT);
    if (!line)
        return NULL;
    size_t n = strlen (line);
    char *buf = mem_alloc (n + JOURNAL_SUM_LEN + 4);
    memcpy (buf, line, n);
    buf [n] = '\t';
    journal_sum (line, n, buf + n + 1);
    n += 1 + JOURNAL_SUM_LEN;
    buf [n] = '\n';
    buf [n + 1] = '\0';
    free (line);
    *len = n + 1;
    return buf;
}

/* Writes one line and the NUL that ends the live region, at its end; *len (may be NULL): the
 * line's bytes, without its newline. */
static int
journal_write_line (journal_t *j, json_t *obj, size_t *len)
{
    size_t n;
    char *buf = journal_format_line (obj, &n);
    if (!buf)
        return -1;
    int rc = journal_reserve (j, j->end + (off_t) n + 1);
    if (rc == 0)
        rc = journal_pwrite (j, buf, n + 1, j->end);
    if (rc == 0) {
        journal_keep (j, buf, n);
        j->end += (off_t) n;
        if (len)
            *len = n - 1;
    }
    mem_free (buf);
    return rc;
}

/* A commit as a record's JSON (journal_read_record reads it back); spent may be NULL. */
static json_t *
journal_record_json (const store_commit_t *c, const char *spent)
{
    char *at = crypto_b64_encode (c->access_ct, c->access_ct_len);
    char *rt = crypto_b64_encode (c->refresh_ct, c->refresh_ct_len);
    json_t *o = json_pack ("{ss sI ss si ss ss sI sI ss sb ss? ss? ss? ss?}", "id", c->id,
                           "generation", (json_int_t) c->expected_generation,
                           "lease_token", c->lease_token, "key", (int) c->key_id,
                           "access", at, "refresh", rt, "expires_at", (json_int_t) c->access_expires_at,
                           "lifetime", (json_int_t) c->access_lifetime_s,
                           "fingerprint", c->refresh_fingerprint ? c->refresh_fingerprint : "",
                           "rotated", c->rotated, "scopes", c->scopes, "spent", spent && *spent ? spent : NULL,
                           "unusable", c->unusable, "api_base_url", c->api_base_url);
    mem_free (at);
    mem_free (rt);
    return o;
}

int64_t
journal_append (journal_t *j, const store_commit_t *c, const char *spent)
{
    /* never a number journal_parse_line refuses: a region numbered that far (by a line this code
     * did not write) takes no record until its numbers start again at 1, which they do once
     * nothing in it is outstanding (emptied, or rolled with nothing to copy) */
    if (j->next_seq >= JOURNAL_MAX_SEQ && j->recs.live == 0)
        journal_tidy (j, 1);
    if (j->next_seq >= JOURNAL_MAX_SEQ) {
        log_error (c->id, NULL, "could not write the journal \"%s\": its sequence numbers have run out (%zu records "
                   "outstanding); they start again once it empties, or rolls with none outstanding", j->path,
                   j->recs.live);
        return -1;
    }
    int64_t seq = j->next_seq++;
    json_t *o = journal_record_json (c, spent);
    off_t off = j->end;
    size_t len = 0;
    int rc = -1;
    if (o && json_object_set_new (o, "seq", json_integer (seq)) == 0
    &&  json_object_set_new (o, "e", json_integer ((json_int_t) j->epoch)) == 0)
        rc = journal_write_line (j, o, &len);
    json_decref (o);
    if (rc != 0) {
        log_error (c->id, NULL, "could not write the journal \"%s\": %s", j->path, strerror (errno));
        return -1;
    }
    journal_track (j, seq, off, len);
    j->unsynced = 1;
    j->appended++;
    return seq;
}

uint64_t
journal_appended (const journal_t *j)
{
    return j->appended;
}

int
journal_sync (journal_t *j)
{
    if (!j->unsynced)
        return 0;
    if (j->sync.dir_pending && journal_sync_dir (j->path) != 0) {
        log_error (NULL, NULL, "could not sync the directory of the journal \"%s\": %s", j->path, strerror (errno));
        return -1;
    }
    j->sync.dir_pending = 0;
    /* once more after a failure, with the bytes written again: a second flush of pages an error
     * marked clean would succeed without writing them */
    for (int attempt = 1; j->flush (j->fd, j->flush_arg) != 0; attempt++) {
        int e = errno;
        if (attempt == 2 || journal_rewrite (j) != 0) {
            log_error (NULL, NULL, "could not flush the journal \"%s\" to disk: %s", j->path, strerror (e));
            return -1;
        }
        log_error (NULL, NULL, "could not flush the journal \"%s\" to disk: %s; wrote its last %zu bytes again, "
                   "flushing again", j->path, strerror (e), j->kept.len);
    }
    j->unsynced = 0;
    journal_kept_synced (j, j->written);
    return 0;
}

/* 1 when a sync is asked for (under the lock): of records, or (journal_quiet) only of the bytes
 * of settled markers. */
static int
journal_sync_asked (const journal_t *j)
{
    return j->sync.want > j->sync.done || j->sync.want_mark > j->sync.done_mark;
}

/* The sync thread: one fdatasync at a time, for every record appended before it began. Records
 * written meanwhile wait for the next one. A failed sync counts nothing as done: the thread waits
 * until the loop has written the bytes again (journal_synced), and then, after a pause that
 * doubles while the disk keeps failing, syncs again. Refreshes go on meanwhile: their tokens are
 * in memory until the database has them. */
static void *
journal_syncer (void *arg)
{
    journal_t *j = arg;
    pthread_mutex_lock (&j->sync.lock);
    for (;;) {
        while (!j->sync.stop && (j->sync.failed || !journal_sync_asked (j)))
            pthread_cond_wait (&j->sync.wake, &j->sync.lock);
        if (j->sync.failed || !journal_sync_asked (j))
            break;                       /* stopping: every sync asked for is made, or the close syncs */
        if (j->sync.in_row > 0 && !j->sync.stop) {
            int ms = JOURNAL_RETRY_MIN_MS << (j->sync.in_row < 10 ? j->sync.in_row - 1 : 9);
            if (ms > JOURNAL_RETRY_MAX_MS)
                ms = JOURNAL_RETRY_MAX_MS;
            struct timespec until = clock_after (CLOCK_MONOTONIC, ms);
            while (!j->sync.stop && pthread_cond_timedwait (&j->sync.wake, &j->sync.lock, &until) != ETIMEDOUT)
                ;
        }
        uint64_t target = j->sync.want, mark = j->sync.want_mark;
        journal_flush_fn *flush = j->flush;
        void *flush_arg = j->flush_arg;
        int fd = j->fd, dir = j->sync.dir_pending;   /* a carry changes them only while no flush runs */
        j->sync.flushing = 1;
        pthread_mutex_unlock (&j->sync.lock);
        int rc = dir ? journal_sync_dir (j->path) : 0;
        int e = errno;
        if (rc == 0) {
            rc = flush (fd, flush_arg);
            e = errno;
        }
        int64_t ended_us = clock_mono_us ();
        pthread_mutex_lock (&j->sync.lock);
        j->sync.flushing = 0;
        if (rc == 0 && dir)
            j->sync.dir_pending = 0;
        if (rc == 0) {
            j->sync.done = target;
            j->sync.done_mark = mark;
            j->sync.done_us = ended_us;
            j->sync.in_row = 0;
        }
        else {
            j->sync.failed = e ? e : EIO;
            j->sync.in_row++;
        }
        pthread_cond_broadcast (&j->sync.ended);
        uint64_t one = 1;
        if (write (j->sync.efd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error (NULL, NULL, "could not signal the end of a journal sync: %s", strerror (errno));
    }
    pthread_mutex_unlock (&j->sync.lock);
    return NULL;
}

int
journal_sync_start (journal_t *j)
{
    if (!j->sync.started) {
        j->sync.efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (j->sync.efd < 0)
            goto fail;
        pthread_mutex_init (&j->sync.lock, NULL);
        pthread_condattr_t ca;               /* the retry's pause, on the monotonic clock */
        pthread_condattr_init (&ca);
        pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
        pthread_cond_init (&j->sync.wake, &ca);
        pthread_cond_init (&j->sync.ended, &ca);
        pthread_condattr_destroy (&ca);
        sigset_t old;
        daemon_threads_begin (&old);         /* the syncer takes no signals: the loop's thread does */
        int rc = pthread_create (&j->sync.thread, NULL, journal_syncer, j);
        daemon_threads_done (&old);
        if (rc != 0) {
            pthread_mutex_destroy (&j->sync.lock);
            pthread_cond_destroy (&j->sync.wake);
            pthread_cond_destroy (&j->sync.ended);
            close (j->sync.efd);
            j->sync.efd = -1;
            goto fail;
        }
        j->sync.started = 1;
    }
    pthread_mutex_lock (&j->sync.lock);
    if (j->appended > j->sync.want) {
        j->sync.want = j->appended;
        j->sync.want_mark = j->written;
        pthread_cond_signal (&j->sync.wake);
    }
    pthread_mutex_unlock (&j->sync.lock);
    return 0;
fail:
    log_error (NULL, NULL, "could not start the journal's sync thread: %s; syncing in the loop", strerror (errno));
    return journal_sync (j);
}

int
journal_sync_fd (const journal_t *j)
{
    return j->sync.started ? j->sync.efd : -1;
}

uint64_t
journal_synced (journal_t *j, int64_t *at_us)
{
    if (at_us)
        *at_us = clock_mono_us ();
    if (!j->sync.started)
        return j->unsynced ? 0 : j->appended;    /* only journal_sync has run */
    uint64_t one;
    while (read (j->sync.efd, &one, sizeof one) > 0)
        ;                                          /* drained: poll waits for the next one */
    pthread_mutex_lock (&j->sync.lock);
    uint64_t done = j->sync.done, mark = j->sync.done_mark;
    int failed = j->sync.failed;
    if (at_us && done)
        *at_us = j->sync.done_us;
    pthread_mutex_unlock (&j->sync.lock);
    journal_kept_synced (j, mark);
    if (failed) {
        /* the bytes again, then a sync of everything written so far; a write that fails too is
         * left to that sync to report */
        size_t again = j->kept.len;
        if (journal_rewrite (j) != 0)
            log_error (NULL, NULL, "could not write the journal \"%s\" again: %s", j->path, strerror (errno));
        log_error (NULL, NULL, "could not flush the journal \"%s\" to disk: %s; wrote its last %zu bytes again, "
                   "flushing again", j->path, strerror (failed), again);
        pthread_mutex_lock (&j->sync.lock);
        j->sync.failed = 0;
        j->sync.want = j->appended;
        j->sync.want_mark = j->written;
        pthread_cond_signal (&j->sync.wake);
        pthread_mutex_unlock (&j->sync.lock);
    }
    return done;
}

/* Nothing outstanding: the live region starts again at offset 0, in a new epoch, and nothing
 * before it needs writing again. */
static void
journal_empty (journal_t *j)
{
    if (journal_pwrite (j, "", 1, 0) != 0)
        return;                          /* stays as it is: a replay reads it settled */
    j->kept.head = j->kept.len = 0;
    j->kept.off = 0;
    j->kept.base = j->written;
    j->kept.dropped = 0;                 /* what was not kept is settled too */
    j->end = 0;
    j->recs.head = j->recs.end = 0;      /* nothing outstanding */
    j->recs.bytes = 0;
    j->next_seq = 1;
    j->epoch = journal_new_epoch ();
    j->retained_in_region = 0;
}

/* Syncs the directory that holds path, so that a rename in it is on disk. 0, or -1. */
static int
journal_sync_dir (const char *path)
{
    const char *slash = strrchr (path, '/');
    char *dir = slash ? mem_strndup (path, slash == path ? 1 : (size_t) (slash - path)) : mem_strdup (".");
    int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1;
    mem_free (dir);
    if (fd >= 0) {
        rc = fsync (fd);
        close (fd);
    }
    return rc;
}

/* Every byte written on disk (the settled markers too: they say which records are retained, and
 * the last one was written just now), and no flush under way: the files may change places. The
 * loop waits for that flush, a few kilobytes once in a carry, rather than for a moment when
 * nothing was written since the last one, which under load never comes. 1 when quiet. */
static int
journal_quiet (journal_t *j)
{
    if (!j->sync.started) {
        j->unsynced = 1;
        return journal_sync (j) == 0;
    }
    pthread_mutex_lock (&j->sync.lock);
    if (!j->sync.failed && j->sync.done_mark < j->written) {
        if (j->sync.want_mark < j->written) {
            j->sync.want = j->appended;
            j->sync.want_mark = j->written;
            pthread_cond_signal (&j->sync.wake);
        }
        struct timespec until = clock_after (CLOCK_MONOTONIC, JOURNAL_QUIET_WAIT_MS);
        while (!j->sync.failed && j->sync.done_mark < j->written
               && pthread_cond_timedwait (&j->sync.ended, &j->sync.lock, &until) != ETIMEDOUT)
            ;
    }
    int quiet = !j->sync.flushing && !j->sync.failed && j->sync.done_mark >= j->written;
    pthread_mutex_unlock (&j->sync.lock);
    return quiet;
}

/* 1 when the names the last roll gave the files are on disk: until the directory is synced, a
 * crash may bring the names back as they were, and the file called retained now is the journal. */
static int
journal_names_synced (journal_t *j)
{
    if (!j->sync.started)
        return !j->sync.dir_pending;
    pthread_mutex_lock (&j->sync.lock);
    int synced = !j->sync.dir_pending;
    pthread_mutex_unlock (&j->sync.lock);
    return synced;
}

/* The start of the journal's new file for a roll, under epoch: a line that names the epoch, then
 * the copies of the outstanding records one after the other, into *buf (*len bytes, and a NUL),
 * and where each copy goes into at [] (the live records' order). The file's older lines stay
 * behind it, among them the originals of what an earlier roll copied, settled only by their
 * copies in the other file: with no line of the new epoch on disk at offset 0 (nothing to copy,
 * then the first record torn by a crash), a start would read them as the live region. 0, or -1
 * with errno set. */
static int
journal_copies (journal_t *j, uint64_t epoch, char **buf, size_t *len, journal_rec_t *at)
{
    size_t cap = j->recs.bytes + j->recs.live * 64 + 128, n = 0, k = 0;
    char *out = mem_alloc (cap);
    char *line = NULL;
    int rc = -1;
    json_t *head = json_pack ("{s:I}", "e", (json_int_t) epoch);
    char *head_line = head ? journal_format_line (head, &n) : NULL;
    json_decref (head);
    if (!head_line) {
        errno = ENOMEM;
        goto cleanup;
    }
    memcpy (out, head_line, n);          /* a line without "seq" or "done": no record, no marker */
    mem_free (head_line);
    for (size_t i = j->recs.head; i < j->recs.end; i++) {
        journal_rec_t *r = &j->recs.v [i];
        if (r->len == 0)
            continue;
        line = mem_realloc (line, r->len);
        size_t got = 0;
        while (got < r->len) {
            ssize_t m = pread (j->fd, line + got, r->len - got, r->off + (off_t) got);
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0) {
                errno = m == 0 ? EIO : errno;
                goto cleanup;
            }
            got += (size_t) m;
        }
        int64_t seq, done;
        json_t *o = journal_parse_line (line, r->len, &seq, &done);
        size_t one = 0;
        char *copy = NULL;
        if (o && seq == r->seq && json_object_set_new (o, "e", json_integer ((json_int_t) epoch)) == 0)
            copy = journal_format_line (o, &one);
        json_decref (o);
        if (!copy) {
            errno = EINVAL;              /* the line read back is not the record it was */
            goto cleanup;
        }
        if (n + one + 1 > cap) {
            cap = 2 * (n + one + 1);
            out = mem_realloc (out, cap);
        }
        memcpy (out + n, copy, one);
        mem_free (copy);
        at [k++] = (journal_rec_t) { r->seq, (off_t) n, one - 1 };
        n += one;
    }
    out [n] = '\0';
    *buf = out;
    *len = n;
    out = NULL;
    rc = 0;
cleanup:
    mem_free (line);
    mem_free (out);
    return rc;
}

/* The roll (see struct journal): the outstanding records, copied under a new epoch to the start
 * of the retained file, which is synced and then exchanges names with the journal's file. carry:
 * the region holds retained records a retainer holds, and the retained file keeps them. 0, or -1
 * (logged; the journal is as it was). */
static int
journal_roll (journal_t *j, int carry)
{
    int64_t started_us = clock_mono_us ();
    /* everything written on disk and no flush under way: the copies are of lines on disk, the
     * retained markers of a carried region are on disk, and the files may change places */
    if (!journal_quiet (j))
        return -1;
    int64_t quiet_us = clock_mono_us ();
    if (!journal_names_synced (j)) {
        /* the last roll's names first: the retained file is about to be written over, and until
         * they are on disk it may be the journal after a crash */
        if (journal_sync_dir (j->path) != 0) {
            log_error (NULL, NULL, "could not sync the directory of the journal \"%s\": %s", j->path, strerror (errno));
            return -1;
        }
        if (j->sync.started)
            pthread_mutex_lock (&j->sync.lock);
        j->sync.dir_pending = 0;
        if (j->sync.started)
            pthread_mutex_unlock (&j->sync.lock);
    }
    uint64_t epoch = journal_new_epoch ();
    size_t copied = j->recs.live, len = 0;
    journal_rec_t *at = mem_alloc ((copied ? copied : 1) * sizeof *at);
    char *buf = NULL;
    struct stat st;
    off_t rsize = 0;
    int rc = -1;
    if (journal_copies (j, epoch, &buf, &len, at) != 0) {
        log_error (NULL, NULL, "could not copy the %zu outstanding records of the journal \"%s\": %s", copied, j->path,
                   strerror (errno));
        goto cleanup;
    }
    if (fstat (j->rfd, &st) == 0)
        rsize = st.st_size;
    /* the epoch's line and the copies are on disk before the retained file becomes the journal */
    if (journal_grow (j->rfd, &rsize, (off_t) len + 1) != 0 || journal_pwrite_fd (j->rfd, buf, len + 1, 0) != 0
    ||  fdatasync (j->rfd) != 0) {
        log_error (NULL, NULL, "could not write the outstanding records of the journal \"%s\" to \"%s\": %s", j->path,
                   j->retained_path, strerror (errno));
        j->retained_live = 0;            /* written over: it holds no retained record now */
        goto cleanup;
    }
    int64_t copied_us = clock_mono_us ();
    if (renameat2 (AT_FDCWD, j->path, AT_FDCWD, j->retained_path, RENAME_EXCHANGE) != 0) {
        log_error (NULL, NULL, "could not exchange the journal \"%s\" with \"%s\": %s; the journal keeps growing until "
                   "nothing in it is outstanding or kept against a failover", j->path, j->retained_path,
                   strerror (errno));
        j->retained_live = 0;
        goto cleanup;
    }
    /* no flush runs (journal_quiet): the sync thread takes the new descriptor with its next one,
     * and syncs the directory first */
    if (j->sync.started)
        pthread_mutex_lock (&j->sync.lock);
    int fd = j->rfd;
    j->rfd = j->fd;
    j->fd = fd;
    j->sync.dir_pending = 1;
    if (j->sync.started)
        pthread_mutex_unlock (&j->sync.lock);
    off_t region = j->end;
    j->size = rsize;
    j->end = (off_t) len;
    j->epoch = epoch;
    j->kept.head = j->kept.len = 0;      /* the copies are on disk; nothing before them to write again */
    j->kept.off = j->end;
    j->kept.base = j->written;
    j->kept.dropped = 0;
    if (copied > 0)
        memcpy (j->recs.v, at, copied * sizeof *at);
    j->recs.head = 0;
    j->recs.end = copied;
    if (copied == 0)
        j->next_seq = 1;                 /* a new epoch, and no record in it */
    /* the copies' bytes, not the originals': a new epoch may take another number of digits, and
     * a line of an older version gains an epoch and a checksum (settles take the copies' off) */
    j->recs.bytes = 0;
    for (size_t i = 0; i < copied; i++)
        j->recs.bytes += at [i].len;
    /* the old region's retained records: kept while a retainer holds them (a start reads them);
     * held by none, the next settle ends the file's region once the new names are on disk */
    j->retained_live = carry || j->retained_in_region;
    j->retained_in_region = 0;
    if (carry)
        j->carried_ms = clock_mono_ms ();
    j->unsynced = 1;                     /* the directory, at the next sync */
    int64_t now_us = clock_mono_us ();
    log_info (NULL, NULL, "the journal \"%s\" was rolled at %lld bytes%s: %zu outstanding records (%zu bytes) copied, "
              "in %lld us (%lld us waiting for the flush of what was written, %lld us preparing the other file)",
              j->path, (long long) region, carry ? ", its refresh commits kept against a failover carried to the "
              "retained file" : "", copied, (size_t) j->recs.bytes, (long long) (now_us - started_us),
              (long long) (quiet_us - started_us), (long long) (copied_us - quiet_us));
    rc = 0;
cleanup:
    mem_free (buf);
    mem_free (at);
    return rc;
}

/* The region's length that rolls it: a roll that has to copy waits for JOURNAL_ROLL_MIN at least
 * (the copies' sync is on the loop). */
static off_t
journal_roll_at (const journal_t *j)
{
    return j->recs.live > 0 && j->roll_at < JOURNAL_ROLL_MIN ? JOURNAL_ROLL_MIN : j->roll_at;
}

/* seq is settled: with nothing outstanding the live region is emptied, unless retained records in
 * it must stay; a long one is rolled (see struct journal). */
static void
journal_settled (journal_t *j, int64_t seq)
{
    (void) journal_untrack (j, seq);
    journal_tidy (j, 0);
}

/* The live region emptied or rolled when it may be (journal_settled); renumber: its numbers have
 * run out, and it is rolled at any length. */
static void
journal_tidy (journal_t *j, int renumber)
{
    if (j->recs.live > 0 && j->end < journal_roll_at (j))
        return;
    int64_t oldest_ms = 0;
    size_t held = j->retainer ? j->retainer (j->retainer_arg, &oldest_ms) : 0;
    if (held == 0 && j->retained_live && journal_names_synced (j) && journal_pwrite_fd (j->rfd, "", 1, 0) == 0)
        j->retained_live = 0;            /* unsynced: a crash only makes a start check them again */
    int carry = held > 0 && j->retained_in_region;
    if (j->recs.live == 0 && !carry) {
        journal_empty (j);
        return;
    }
    /* rolled once long enough, when the retained file holds nothing still held, and when the
     * copies would be few (not while the database is away and everything is outstanding) */
    if ((j->end < journal_roll_at (j) && !renumber) || (held > 0 && j->retained_live && oldest_ms <= j->carried_ms)
    ||  j->recs.bytes > JOURNAL_COPY_MAX || (off_t) j->recs.bytes > j->end / 2)
        return;
    if (journal_roll (j, carry) != 0) {
        j->roll_at = j->end + j->roll_min;       /* not at every settle */
        return;
    }
    j->roll_at = j->roll_min;
}

/* Writes the marker that settles seq, retained ones with when (wall clock, ms). */
static void
journal_mark (journal_t *j, int64_t seq, int retain)
{
    json_t *o = json_pack ("{sI sI}", "done", (json_int_t) seq, "e", (json_int_t) j->epoch);
    if (retain) {
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        json_object_set_new (o, "t", json_integer ((json_int_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    }
    /* no sync: a lost marker only makes the start-up replay look at a settled record again (and a
     * retained one's record replays, and is found settled in the database) */
    if (journal_write_line (j, o, NULL) != 0)
        log_warning (NULL, NULL, "could not mark journal record %lld settled: %s", (long long) seq, strerror (errno));
    else
    if (retain)
        j->retained_in_region = 1;
    json_decref (o);
}

void
journal_done (journal_t *j, int64_t seq)
{
    journal_mark (j, seq, 0);
    journal_settled (j, seq);
}

void
journal_done_retain (journal_t *j, int64_t seq)
{
    journal_mark (j, seq, 1);
    journal_settled (j, seq);
}

void
journal_set_retainer (journal_t *j, journal_retainer_fn *fn, void *arg, size_t carry_min)
{
    j->retainer = fn;
    j->retainer_arg = arg;
    j->roll_min = j->roll_at = (off_t) carry_min;
}

/* The retained records of one file's live region, with when they settled, appended to out. */
static int
journal_retained_of (int fd, const char *path, json_t *out)
{
    replay_scan_t rs = { json_array (), json_object () };
    int rc = journal_scan (fd, path, journal_collect, &rs, NULL, NULL) < 0 ? -1 : 0;
    size_t i;
    json_t *o;
    json_array_foreach (rs.records, i, o) {
        char key [64];
        journal_key (o, key, sizeof key);
        json_t *t = json_object_get (rs.done, key);
        if (json_is_integer (t)) {
            json_object_set (o, "t", t);
            json_array_append (out, o);
        }
    }
    json_decref (rs.records);
    json_decref (rs.done);
    return rc;
}

int
journal_retained (journal_t *j, journal_retained_fn *fn, void *arg)
{
    json_t *all = json_array ();
    if ((j->retained_live && journal_retained_of (j->rfd, j->retained_path, all) != 0)
    ||  journal_retained_of (j->fd, j->path, all) != 0) {
        json_decref (all);
        return -1;
    }
    int64_t newest = INT64_MIN;
    size_t i;
    json_t *o;
    json_array_foreach (all, i, o)
        if (json_integer_value (json_object_get (o, "t")) > newest)
            newest = json_integer_value (json_object_get (o, "t"));
    int count = 0;
    json_array_foreach (all, i, o) {
        store_commit_t c;
        if (journal_read_record (o, &c) == 0) {
            fn (arg, &c, json_string_value (json_object_get (o, "spent")),
                newest - json_integer_value (json_object_get (o, "t")));
            count++;
        }
        else
            log_warning (NULL, NULL, "a retained refresh commit in \"%s\" is incomplete; skipped", j->path);
        mem_free ((void *) c.access_ct);
        mem_free ((void *) c.refresh_ct);
    }
    json_decref (all);
    return count;
}

static void
journal_collect (void *arg, json_t *o, off_t off, size_t len)
{
    (void) off;
    (void) len;
    replay_scan_t *rs = arg;
    json_int_t seq = json_integer_value (json_object_get (o, "seq"));
    json_int_t d = json_integer_value (json_object_get (o, "done"));
    json_int_t e = json_integer_value (json_object_get (o, "e"));
    if (d > 0) {
        char key [64];
        snprintf (key, sizeof key, "%lld/%lld", (long long) e, (long long) d);
        /* a retained record's marker carries when it settled (wall clock, ms) */
        json_t *t = json_object_get (o, "t");
        json_object_set_new (rs->done, key, json_is_integer (t) ? json_integer (json_integer_value (t)) : json_true ());
    }
    else
    if (seq > 0) {
        /* a marker settles the records before it only: the region's first readable line may be a
         * marker an earlier epoch left behind a torn record, which a new record of its number
         * follows; that one stays outstanding until a marker of its own comes after it */
        char key [64];
        journal_key (o, key, sizeof key);
        json_object_del (rs->done, key);
        json_array_append (rs->records, o);
    }
}

/* The key of a record in replay_scan_t.done. */
static void
journal_key (json_t *o, char *key, size_t len)
{
    snprintf (key, len, "%lld/%lld", (long long) json_integer_value (json_object_get (o, "e")),
              (long long) json_integer_value (json_object_get (o, "seq")));
}

int
journal_replay (journal_t *j, journal_replay_fn *fn, void *arg)
{
    replay_scan_t rs;
    int count = 0;
    if (journal_collect_all (j, &rs) != 0) {
        json_decref (rs.records);
        json_decref (rs.done);
        return -1;
    }
    json_t *records = rs.records, *done = rs.done;
    size_t i;
    json_t *o;
    json_array_foreach (records, i, o) {
        char key [64];
        json_int_t seq = json_integer_value (json_object_get (o, "seq"));
        journal_key (o, key, sizeof key);
        if (json_object_get (done, key))
            continue;
        store_commit_t c;
        if (journal_read_record (o, &c) == 0) {
            fn (arg, seq, &c, json_string_value (json_object_get (o, "spent")));
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

void
journal_set_flush (journal_t *j, journal_flush_fn *fn, void *arg)
{
    if (j->sync.started)
        pthread_mutex_lock (&j->sync.lock);
    j->flush = fn ? fn : journal_fdatasync;
    j->flush_arg = fn ? arg : NULL;
    if (j->sync.started)
        pthread_mutex_unlock (&j->sync.lock);
}

uint64_t
journal_sync_failures (const journal_t *j)
{
    return j->sync_failures;
}

size_t
journal_outstanding (const journal_t *j)
{
    return j->recs.live;
}

size_t
journal_outstanding_bytes (const journal_t *j)
{
    return j->recs.bytes;
}
