/* audit.c - audit records through a bounded queue to a writer thread (see audit.h) */
#include "audit.h"
#include "clock.h"
#include "daemon.h"
#include "keys.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "text.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AUDIT_LINE_MAX 1024
#define AUDIT_BATCH    256
#define AUDIT_STOP_WAIT_MS 5000        /* a stop's wait for the writer's last batch: a write that
                                          blocks (a collector that stopped reading standard output,
                                          a hung mount) must not hold the exit for ever */

typedef struct {
    int64_t wall_ms;
    uint8_t op;
    uint8_t has_integ, has_rid;
    char client [KEYS_MAX_NAME + 1];
    char integ [IDENT_MAX + 1];
    char outcome [32];
    char rid [65];
    uint8_t rid_len;
} audit_rec_t;

struct audit {
    char *path;                         /* NULL: standard output */
    int fd;
    pthread_t thread;
    int started;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    audit_rec_t *queue;                 /* ring of AUDIT_QUEUE */
    size_t head, count;                 /* under mutex */
    int stopping;                       /* under mutex */
    int exited;                         /* under mutex: the writer has ended */
    atomic_int reopen;
    atomic_uint_fast64_t dropped, failed;
    atomic_int failing;                 /* the last write failed */
    atomic_int full;                    /* a record found the queue full since the writer last took some */
    _Atomic int64_t write_since;        /* when the write under way began (clock_mono_ms); 0: none */
    int64_t stall_said;                 /* audit_watch's: the stalled write it reported; 0: none */
};

/* Opens path for appending. A file that ends mid-line (a crash mid-write; a write a full disk cut
 * short, then a reopen of the same file) has that line ended first, so that the first record
 * written is a line of its own, not glued to a fragment. */
static int
audit_open (const char *path)
{
    int fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct stat st, rst;
    if (fd < 0 || fstat (fd, &st) != 0 || !S_ISREG (st.st_mode) || st.st_size == 0)
        return fd;
    int rfd = open (path, O_RDONLY | O_CLOEXEC);
    char last = '\n';
    if (rfd >= 0 && fstat (rfd, &rst) == 0 && rst.st_ino == st.st_ino && rst.st_dev == st.st_dev
        && pread (rfd, &last, 1, st.st_size - 1) == 1 && last != '\n' && write (fd, "\n", 1) != 1)
        log_warning (NULL, NULL, "could not end the torn last line of the audit log \"%s\": %s", path, strerror (errno));
    if (rfd >= 0)
        close (rfd);
    return fd;
}

/* Appends s as JSON string content: text as it is, control characters as \u00XX and a byte that
 * begins no UTF-8 sequence as U+FFFD, as the service log writes them (log.c). A rid is UTF-8 text,
 * and each of its bytes past ASCII written as a character of its own (\u00c3\u00a9 for "é") gave
 * another rid than the client's and its log lines'. */
static size_t
audit_escape (char *out, size_t pos, const char *s, size_t len)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < len && pos + 8 < AUDIT_LINE_MAX; ) {
        unsigned char c = (unsigned char) s [i];
        if (c == '"' || c == '\\') {
            out [pos++] = '\\';
            out [pos++] = (char) c;
            i++;
        }
        else
        if (c < 0x20 || c == 0x7f) {
            memcpy (out + pos, "\\u00", 4);
            out [pos + 4] = hex [c >> 4];
            out [pos + 5] = hex [c & 15];
            pos += 6;
            i++;
        }
        else
        if (c < 0x80)
            out [pos++] = s [i++];
        else {
            /* text_utf8_len reads up to four bytes: a sequence the end cuts is not one */
            unsigned char seq [4] = { 0 };
            memcpy (seq, s + i, len - i < 4 ? len - i : 4);
            size_t n = text_utf8_len (seq);
            if (n) {
                memcpy (out + pos, s + i, n);
                pos += n;
                i += n;
            }
            else {
                memcpy (out + pos, "\\ufffd", 6);
                pos += 6;
                i++;
            }
        }
    }
    return pos;
}

static size_t
audit_format (const audit_rec_t *r, char *out)
{
    struct tm tm;
    time_t secs = (time_t) (r->wall_ms / 1000);
    gmtime_r (&secs, &tm);
    size_t pos = strftime (out, AUDIT_LINE_MAX, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, ".%03dZ\",\"client\":\"", (int) (r->wall_ms % 1000));
    pos = audit_escape (out, pos, r->client, strlen (r->client));
    pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, "\",\"op\":\"%s\",\"integration\":", ops_name ((op_t) r->op));
    if (r->has_integ) {
        out [pos++] = '"';
        pos = audit_escape (out, pos, r->integ, strlen (r->integ));
        out [pos++] = '"';
    }
    else
        pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, "null");
    pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, ",\"outcome\":\"");
    pos = audit_escape (out, pos, r->outcome, strlen (r->outcome));
    pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, "\",\"rid\":");
    if (r->has_rid) {
        out [pos++] = '"';
        pos = audit_escape (out, pos, r->rid, r->rid_len);
        out [pos++] = '"';
    }
    else
        pos += (size_t) snprintf (out + pos, AUDIT_LINE_MAX - pos, "null");
    out [pos++] = '}';
    out [pos++] = '\n';
    return pos;
}

/* The records (lines) in len bytes of buf; a line begun and not ended counts as one. */
static uint64_t
audit_lines (const char *buf, size_t len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += buf [i] == '\n';
    return n + (len > 0 && buf [len - 1] != '\n');
}

/* Writes what is pending (*len bytes from *buf); what a write could not take stays pending, to be
 * tried again: a full disk that is freed, a file moved and reopened, loses nothing but what the
 * queue could not hold meanwhile. Says the first failure of a streak, and the end of it. 1 when
 * all was written. */
static int
audit_write (audit_t *a, const char **buf, size_t *len, int *complained)
{
    while (*len > 0) {
        atomic_store (&a->write_since, clock_mono_ms ());
        ssize_t w = a->fd >= 0 ? write (a->fd, *buf, *len) : -1;
        atomic_store (&a->write_since, 0);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            atomic_store (&a->failing, 1);
            if (!*complained)
                log_error (NULL, NULL, "could not write the audit log \"%s\": %s; its records wait in memory and "
                           "are written when it can be (beyond %d waiting, they are lost and counted)",
                           a->path ? a->path : "standard output", a->fd >= 0 ? strerror (errno) : "not open",
                           AUDIT_QUEUE);
            *complained = 1;
            return 0;
        }
        *buf += w;
        *len -= (size_t) w;
    }
    atomic_store (&a->failing, 0);
    if (*complained)
        log_info (NULL, NULL, "the audit log \"%s\" is written again (records lost in all since start: %llu "
                  "dropped for a full queue, %llu not written)", a->path ? a->path : "standard output",
                  (unsigned long long) atomic_load (&a->dropped), (unsigned long long) atomic_load (&a->failed));
    *complained = 0;
    return 1;
}

static void *
audit_thread (void *arg)
{
    audit_t *a = arg;
    audit_rec_t *batch = mem_alloc (AUDIT_BATCH * sizeof *batch);
    char *buf = mem_alloc (AUDIT_BATCH * AUDIT_LINE_MAX);
    const char *pending = buf;              /* formatted, not yet written */
    size_t pending_len = 0;
    int complained = 0;
    for (;;) {
        pthread_mutex_lock (&a->mutex);
        /* a batch that could not be written is tried again a flush interval later, not at once */
        if ((a->count == 0 || pending_len) && !a->stopping) {
            struct timespec until = clock_after (CLOCK_REALTIME, AUDIT_FLUSH_MS);
            pthread_cond_timedwait (&a->cond, &a->mutex, &until);
        }
        size_t n = 0;
        if (!pending_len) {
            n = a->count < AUDIT_BATCH ? a->count : AUDIT_BATCH;
            for (size_t i = 0; i < n; i++)
                batch [i] = a->queue [(a->head + i) % AUDIT_QUEUE];
            a->head = (a->head + n) % AUDIT_QUEUE;
            a->count -= n;
            if (n)
                atomic_store (&a->full, 0);
        }
        int stopping = a->stopping;
        int stop = stopping && a->count == 0;
        pthread_mutex_unlock (&a->mutex);

        if (a->path && atomic_exchange (&a->reopen, 0)) {
            int fd = audit_open (a->path);
            if (fd >= 0) {
                if (a->fd >= 0)
                    close (a->fd);
                a->fd = fd;
                /* a line the old file took only the beginning of goes whole to the new one: its
                 * rest alone would start the new file mid-line, and dropping it lost the record
                 * (the old file ends in the part it took, as after a crash mid-write) */
                while (pending_len && pending != buf && pending [-1] != '\n') {
                    pending--;
                    pending_len++;
                }
            }
            else
                log_error (NULL, NULL, "could not reopen the audit log \"%s\": %s; still writing the old file",
                           a->path, strerror (errno));
        }
        if (!pending_len && n) {
            pending = buf;
            for (size_t i = 0; i < n; i++)
                pending_len += audit_format (&batch [i], buf + pending_len);
        }
        if (pending_len && !audit_write (a, &pending, &pending_len, &complained) && stopping) {
            /* stopping: what cannot be written now is lost, and counted */
            atomic_fetch_add (&a->failed, audit_lines (pending, pending_len));
            pending_len = 0;
        }
        if (stop && !pending_len)
            break;
    }
    mem_free (batch);
    mem_free (buf);
    pthread_mutex_lock (&a->mutex);
    a->exited = 1;
    pthread_cond_broadcast (&a->cond);
    pthread_mutex_unlock (&a->mutex);
    return NULL;
}

audit_t *
audit_new (const char *target, char *err, size_t errlen)
{
    audit_t *a = mem_alloc (sizeof *a);
    sigset_t old;
    a->fd = -1;
    pthread_mutex_init (&a->mutex, NULL);
    pthread_cond_init (&a->cond, NULL);
    a->queue = mem_alloc (AUDIT_QUEUE * sizeof *a->queue);
    if (!target || strcmp (target, "-") == 0)
        a->fd = STDOUT_FILENO;
    else {
        a->path = mem_strdup (target);
        a->fd = audit_open (target);
        if (a->fd < 0) {
            snprintf (err, errlen, "could not open the audit log \"%s\": %s", target, strerror (errno));
            goto fail;
        }
    }
    /* the writer takes no signals: they belong to the loop's thread */
    daemon_threads_begin (&old);
    int rc = pthread_create (&a->thread, NULL, audit_thread, a);
    daemon_threads_done (&old);
    if (rc != 0) {
        snprintf (err, errlen, "could not start the audit writer: %s", strerror (rc));
        goto fail;
    }
    a->started = 1;
    return a;
fail:
    audit_destroy (&a);
    return NULL;
}

void
audit_destroy (audit_t **a_p)
{
    if (!a_p || !*a_p)
        return;
    audit_t *a = *a_p;
    if (a->started) {
        struct timespec until = clock_after (CLOCK_REALTIME, AUDIT_STOP_WAIT_MS);
        pthread_mutex_lock (&a->mutex);
        a->stopping = 1;
        pthread_cond_broadcast (&a->cond);
        while (!a->exited)
            if (pthread_cond_timedwait (&a->cond, &a->mutex, &until) == ETIMEDOUT)
                break;
        int exited = a->exited;
        size_t waiting = a->count;
        pthread_mutex_unlock (&a->mutex);
        if (!exited) {
            /* the writer is stuck in a write: it keeps a, which the exit reclaims */
            log_error (NULL, NULL, "the audit log \"%s\" has taken no write for %d s; stopping without its last "
                       "records (%zu still queued)", a->path ? a->path : "standard output", AUDIT_STOP_WAIT_MS / 1000,
                       waiting);
            pthread_detach (a->thread);
            *a_p = NULL;
            return;
        }
        pthread_join (a->thread, NULL);
    }
    if (a->path && a->fd >= 0)
        close (a->fd);
    pthread_mutex_destroy (&a->mutex);
    pthread_cond_destroy (&a->cond);
    mem_free (a->queue);
    mem_free (a->path);
    mem_free (a);
    *a_p = NULL;
}

int
audit_record (audit_t *a, const char *client, op_t op, const char *integ, size_t integ_len,
              const char *outcome, const char *rid, size_t rid_len)
{
    if (!a)
        return 1;
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    pthread_mutex_lock (&a->mutex);
    if (a->count == AUDIT_QUEUE) {
        pthread_mutex_unlock (&a->mutex);
        atomic_fetch_add (&a->dropped, 1);
        atomic_store (&a->full, 1);
        return 0;
    }
    audit_rec_t *r = &a->queue [(a->head + a->count) % AUDIT_QUEUE];
    r->wall_ms = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    r->op = (uint8_t) op;
    snprintf (r->client, sizeof r->client, "%s", client ? client : "");
    r->has_integ = integ != NULL;
    if (integ) {
        size_t n = integ_len < IDENT_MAX ? integ_len : IDENT_MAX;
        memcpy (r->integ, integ, n);
        r->integ [n] = '\0';
    }
    snprintf (r->outcome, sizeof r->outcome, "%s", outcome ? outcome : "");
    r->has_rid = rid != NULL;
    r->rid_len = (uint8_t) (rid_len < 64 ? rid_len : 64);
    if (rid)
        memcpy (r->rid, rid, r->rid_len);
    a->count++;
    /* the writer wakes by itself every AUDIT_FLUSH_MS; a filling queue wakes it early */
    if (a->count == AUDIT_QUEUE / 2)
        pthread_cond_signal (&a->cond);
    pthread_mutex_unlock (&a->mutex);
    return 1;
}

size_t
audit_room (const audit_t *a)
{
    if (!a)
        return SIZE_MAX;
    pthread_mutex_lock (&((audit_t *) a)->mutex);
    size_t room = AUDIT_QUEUE - a->count;
    pthread_mutex_unlock (&((audit_t *) a)->mutex);
    return room;
}

void
audit_reopen (audit_t *a)
{
    if (a)
        atomic_store (&a->reopen, 1);
}

uint64_t
audit_dropped (const audit_t *a)
{
    return a ? atomic_load (&((audit_t *) a)->dropped) : 0;
}

uint64_t
audit_failed (const audit_t *a)
{
    return a ? atomic_load (&((audit_t *) a)->failed) : 0;
}

/* How long the write under way has been (0: none under way). */
static int64_t
audit_write_age (const audit_t *a)
{
    int64_t since = atomic_load (&((audit_t *) a)->write_since);
    return since ? clock_mono_ms () - since : 0;
}

int
audit_writing (const audit_t *a)
{
    return !a || (!atomic_load (&((audit_t *) a)->failing) && !atomic_load (&((audit_t *) a)->full)
                  && audit_write_age (a) < AUDIT_STALL_MS);
}

void
audit_watch (audit_t *a)
{
    if (!a)
        return;
    int64_t since = atomic_load (&a->write_since);
    if (a->stall_said && since != a->stall_said) {
        log_info (NULL, NULL, "the audit log \"%s\" took the write it was held in, after %lld ms",
                  a->path ? a->path : "standard output", (long long) (clock_mono_ms () - a->stall_said));
        a->stall_said = 0;
    }
    if (since && !a->stall_said && clock_mono_ms () - since >= AUDIT_STALL_MS) {
        log_error (NULL, NULL, "could not write the audit log \"%s\": a write has not returned for %d ms (a pipe "
                   "or standard output nobody reads, a hung disk); its records wait in memory (beyond %d waiting, "
                   "they are lost and counted)", a->path ? a->path : "standard output", AUDIT_STALL_MS, AUDIT_QUEUE);
        a->stall_said = since;
    }
}
