/* clock.h - monotonic milliseconds for deadlines, wall-clock seconds and RFC 3339 for the wire */
#ifndef FERRULE_CLOCK_H
#define FERRULE_CLOCK_H
#include <stddef.h>
#include <stdint.h>

int64_t clock_mono_ms (void);
int64_t clock_mono_us (void);            /* for measuring short intervals */
int64_t clock_wall_ms (void);
/* "2026-11-25T18:31:33Z" into out (at least 32 bytes); returns out. */
char *clock_rfc3339 (int64_t epoch_seconds, char *out, size_t size);
/* Parses PostgreSQL's "2026-11-25 18:31:33.123+00" (UTC, any fractional part) to epoch seconds. */
int clock_parse_pg (const char *s, int64_t *epoch_seconds);
#endif
