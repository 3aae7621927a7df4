/* clock.h - monotonic milliseconds for deadlines, wall-clock seconds and RFC 3339 for the wire */
#ifndef FERRULE_CLOCK_H
#define FERRULE_CLOCK_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

int64_t clock_mono_ms (void);
int64_t clock_mono_us (void);            /* for measuring short intervals */
int64_t clock_wall_ms (void);
/* The time ms (>= 0) milliseconds from now on clock (CLOCK_MONOTONIC, CLOCK_REALTIME), as the
 * absolute deadline pthread_cond_timedwait takes. */
struct timespec clock_after (clockid_t clock, int64_t ms);
/* "2026-11-25T18:31:33Z" into out (at least 32 bytes); returns out. */
char *clock_rfc3339 (int64_t epoch_seconds, char *out, size_t size);
/* Parses PostgreSQL's "2026-11-25 18:31:33.123+00" (UTC, any fractional part) to epoch seconds. */
int clock_parse_pg (const char *s, int64_t *epoch_seconds);
/* Parses RFC 3339 (2026-01-31T12:00:00Z, fractions and +HH:MM offsets allowed, or a date alone)
 * to epoch seconds; -1 when it is not one, or is before 1970. */
int clock_parse_rfc3339 (const char *s, int64_t *epoch_seconds);
#endif
