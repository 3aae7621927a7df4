/* log.c - one JSON object per line on stderr */
#include "log.h"
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

/* Appends s to out as JSON string content, escaping what JSON requires. */
static size_t
json_escape (char *out, size_t cap, size_t pos, const char *s)
{
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\') {
            out [pos++] = '\\';
            out [pos++] = (char) c;
        }
        else
        if (c < 0x20) {
            pos += (size_t) snprintf (out + pos, cap - pos, "\\u%04x", c);
        }
        else
            out [pos++] = (char) c;
    }
    out [pos] = '\0';
    return pos;
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
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);

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
