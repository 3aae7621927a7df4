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
