/* clock.c - time helpers */
#include "clock.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t
clock_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
clock_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct timespec
clock_after (clockid_t clock, int64_t ms)
{
    struct timespec ts;
    clock_gettime (clock, &ts);
    ts.tv_sec += (time_t) (ms / 1000);
    ts.tv_nsec += (long) (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int64_t
clock_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
clock_rfc3339 (int64_t epoch_seconds, char *out, size_t size)
{
    struct tm tm;
    time_t t = (time_t) epoch_seconds;
    gmtime_r (&t, &tm);
    strftime (out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return out;
}

int
clock_parse_pg (const char *s, int64_t *epoch_seconds)
{
    struct tm tm;
    memset (&tm, 0, sizeof tm);
    int n = 0;
    if (!s || sscanf (s, "%4d-%2d-%2d%*[ T]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    /* the worker's sessions run with TimeZone=UTC, so any offset is +00 */
    *epoch_seconds = (int64_t) timegm (&tm);
    return 0;
}

/* n decimal digits at s, exactly: sscanf's %2d took " 1" and "+1" */
static int
clock_digits (const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s [i] < '0' || s [i] > '9')
            return -1;
        v = v * 10 + (s [i] - '0');
    }
    *out = v;
    return 0;
}

int
clock_parse_rfc3339 (const char *s, int64_t *epoch_seconds)
{
    static const int days [] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0;
    struct tm tm;
    if (clock_digits (s, 4, &y) || s [4] != '-' || clock_digits (s + 5, 2, &mo) || s [7] != '-'
    ||  clock_digits (s + 8, 2, &d))
        return -1;
    const char *p = s + 10;
    int64_t offset = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if (clock_digits (p + 1, 2, &h) || p [3] != ':' || clock_digits (p + 4, 2, &mi) || p [6] != ':'
        ||  clock_digits (p + 7, 2, &sec))
            return -1;
        p += 9;
        if (*p == '.') {
            p++;
            if (!(*p >= '0' && *p <= '9'))
                return -1;
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (*p == 'Z' || *p == 'z')
            p++;
        else if (*p == '+' || *p == '-') {
            if (clock_digits (p + 1, 2, &oh) || p [3] != ':' || clock_digits (p + 4, 2, &om) || oh > 23 || om > 59)
                return -1;
            offset = (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
            p += 6;
        }
        else
            return -1;
    }
    if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
        return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    /* timegm rolls 2026-02-31 into March: a time the operator did not write */
    if (d > days [mo - 1] + (mo == 2 && leap))
        return -1;
    memset (&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    int64_t t = (int64_t) timegm (&tm) - offset;
    if (t < 0)
        return -1;
    *epoch_seconds = t;
    return 0;
}
