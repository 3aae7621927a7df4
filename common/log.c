/* log.c - one JSON object per line on stderr, each line valid UTF-8 whatever the bytes it quotes */
#include "log.h"
#include "text.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

log_level_t log_min_level = LOG_INFO;
static char log_process [32] = "ferrule";
static char log_instance [160] = "";
/* The pid, read once: a worker logs a line per refresh, and getpid is a system call (glibc no
 * longer caches it). A forked child reads its own (log_forked). */
static pid_t log_pid;
/* The line's start up to the second, made once a second per thread (strftime is not free). */
static _Thread_local time_t log_stamp_sec = -1;
static _Thread_local char log_stamp [32];
static _Thread_local size_t log_stamp_len;

static void
log_forked (void)
{
    log_pid = getpid ();
}

static void
log_register_fork (void)
{
    (void) pthread_atfork (NULL, NULL, log_forked);
}

static const char *level_names [] = { "debug", "info", "warning", "error", "fatal" };

void
log_init (const char *process, const char *instance)
{
    snprintf (log_process, sizeof log_process, "%s", process ? process : "ferrule");
    snprintf (log_instance, sizeof log_instance, "%s", instance ? instance : "");
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    log_pid = getpid ();
    (void) pthread_once (&once, log_register_fork);
}

int
log_set_level_name (const char *name)
{
    for (int i = 0; i <= LOG_ERROR; i++)
        if (strcmp (name, level_names [i]) == 0) {
            log_min_level = (log_level_t) i;
            return 0;
        }
    return -1;
}

/* Appends s to out as JSON string content, escaping what JSON requires. A byte that does not
 * begin a valid UTF-8 sequence (a client's rid may be any bytes) is written as U+FFFD: a line
 * that is not UTF-8 is dropped whole by strict log shippers. Each character or escape goes whole
 * or not at all, and 4 bytes of cap are left for the string's closing quote, the line's '}' and
 * newline and a NUL: a line cut short still ends its string and its object, and never in half a
 * character. */
static size_t
json_escape (char *out, size_t cap, size_t pos, const char *s)
{
    while (*s) {
        unsigned char c = (unsigned char) *s;
        char piece [8];
        size_t n, used = 1;
        if (c == '"' || c == '\\') {
            piece [0] = '\\';
            piece [1] = (char) c;
            n = 2;
        }
        else
        if (c < 0x20)
            n = (size_t) snprintf (piece, sizeof piece, "\\u%04x", c);
        else
        if (c < 0x80) {
            piece [0] = (char) c;
            n = 1;
        }
        else
        if ((used = text_utf8_len ((const unsigned char *) s)) == 0) {
            memcpy (piece, "\\ufffd", 6);
            n = 6;
            used = 1;
        }
        else {
            memcpy (piece, s, used);
            n = used;
        }
        if (pos + n + 4 > cap)
            break;
        memcpy (out + pos, piece, n);
        pos += n;
        s += used;
    }
    out [pos] = '\0';
    return pos;
}

/* Cuts the end of s (just cut at a byte count by vsnprintf) back to a whole character: the
 * bytes of a sequence the cut split would each be written as U+FFFD. */
static void
utf8_trim_cut (char *s)
{
    size_t len = strlen (s), start = len;
    while (start > 0 && len - start < 4 && ((unsigned char) s [start - 1] & 0xc0) == 0x80)
        start--;
    if (start > 0 && (unsigned char) s [start - 1] >= 0xc0) {
        start--;                                  /* the lead byte of the last sequence */
        if (text_utf8_len ((const unsigned char *) s + start) == 0)
            s [start] = '\0';
    }
}

static size_t
json_field (char *out, size_t cap, size_t pos, const char *key, const char *value)
{
    if (!value || !*value || pos + strlen (key) + 8 >= cap)
        return pos;
    pos += (size_t) snprintf (out + pos, cap - pos, ",\"%s\":\"", key);
    pos = json_escape (out, cap, pos, value);
    if (pos + 2 < cap) {
        out [pos++] = '"';
        out [pos] = '\0';
    }
    return pos;
}

void
log_write (log_level_t level, const char *integration, const char *request, const char *fmt, ...)
{
    char msg [2048];
    char line [4096];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    va_start (ap, fmt);
    int n = vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    if (n >= (int) sizeof msg)
        utf8_trim_cut (msg);

    clock_gettime (CLOCK_REALTIME, &ts);
    if (ts.tv_sec != log_stamp_sec) {
        gmtime_r (&ts.tv_sec, &tm);
        log_stamp_len = strftime (log_stamp, sizeof log_stamp, "{\"ts\":\"%Y-%m-%dT%H:%M:%S", &tm);
        log_stamp_sec = ts.tv_sec;
    }
    memcpy (line, log_stamp, log_stamp_len);
    size_t pos = log_stamp_len;
    pos += (size_t) snprintf (line + pos, sizeof line - pos, ".%03ldZ\",\"level\":\"%s\",\"proc\":\"%s\",\"pid\":%d",
                              ts.tv_nsec / 1000000, level_names [level], log_process,
                              (int) (log_pid ? log_pid : getpid ()));
    pos = json_field (line, sizeof line, pos, "instance", log_instance);
    pos = json_field (line, sizeof line, pos, "integration", integration);
    pos = json_field (line, sizeof line, pos, "request", request);
    pos = json_field (line, sizeof line, pos, "msg", msg);
    if (pos + 3 > sizeof line)
        pos = sizeof line - 3;
    line [pos++] = '}';
    line [pos++] = '\n';
    /* one write per line, so lines from concurrent processes do not interleave */
    ssize_t rc = write (STDERR_FILENO, line, pos);
    (void) rc;
}
