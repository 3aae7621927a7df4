/* metrics.h - counters, gauges and histograms, rendered in Prometheus text format 0.0.4
 *
 * Threads: registering or looking up a series takes the registry's mutex; updating a series
 * (metrics_inc, _add, _set, _gauge_add, _observe) is lock-free (C11 atomics) and may be done
 * from any thread. metrics_render may run in another thread at the same time (the HTTP
 * thread of health.c): it holds the mutex only to copy the list of series, never while it
 * formats. Series live until metrics_destroy, so a caller may keep the pointer it was given. */
#ifndef FERRULE_METRICS_H
#define FERRULE_METRICS_H
#include <stddef.h>
#include <stdint.h>

/* Beyond this many series in one registry, registrations get a shared overflow series that is
 * never rendered, one warning is logged and <prefix>metrics_series_dropped_total counts them. */
#define METRICS_MAX_SERIES 10000
/* Most buckets a histogram may declare (besides +Inf). */
#define METRICS_MAX_BUCKETS 64

typedef struct metrics_t metrics_t;
typedef struct metrics_series_t metrics_series_t;

/* prefix is put before every metric name, e.g. "ferrule_"; NULL or "" for none. */
metrics_t *metrics_new (const char *prefix);
/* Frees the registry and every series; sets *p to NULL. Nothing may use its series after. */
void metrics_destroy (metrics_t **p);

/* Series of a metric: the series named name (without the prefix) with the label set labels,
 * already formatted as Prometheus writes it between the braces, e.g. op="token",outcome="ok"
 * (NULL or "" for none). Build label values with metrics_label_escape. The same (name, labels)
 * gives the same series again, so callers may look a series up for every event. help is used
 * the first time the name is seen. A name registered with two types, an invalid name, or
 * histogram bounds that are not finite and strictly increasing are programmer errors (assert).
 * A label set that cannot be parsed is logged and gets the overflow series. */
metrics_series_t *metrics_counter (metrics_t *m, const char *name, const char *help,
                                   const char *labels);
metrics_series_t *metrics_gauge (metrics_t *m, const char *name, const char *help,
                                 const char *labels);
/* bounds: the upper bounds of the buckets (le), finite, strictly increasing, at most
 * METRICS_MAX_BUCKETS; +Inf is implicit. Every series of one name must use the same bounds. */
metrics_series_t *metrics_histogram (metrics_t *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds);

/* Counter (or gauge): add 1 / add n. */
void metrics_inc (metrics_series_t *s);
void metrics_add (metrics_series_t *s, uint64_t n);
/* Gauge: set the value / add a signed delta. */
void metrics_set (metrics_series_t *s, int64_t value);
void metrics_gauge_add (metrics_series_t *s, int64_t delta);
/* Histogram: count v in the first bucket whose bound is >= v and add it to the sum. The sum is
 * a double kept as its 64-bit image and updated with a compare-and-swap loop (exact as a
 * double, no scaling). NaN is ignored. */
void metrics_observe (metrics_series_t *s, double v);

/* A counter's or gauge's current value, a histogram's count (for tests and for callers that
 * report it). */
int64_t metrics_value (const metrics_series_t *s);

/* The whole exposition text; the caller frees it with mem_free. NULL when it would pass the
 * render cap (64 MiB). */
char *metrics_render (metrics_t *m);

/* Writes value escaped as a label value (backslash, double quote and newline get a backslash,
 * invalid UTF-8 becomes U+FFFD) into out, always NUL-terminated; a value that does not fit is
 * cut before an escape or a UTF-8 sequence, never inside one. */
void metrics_label_escape (char *out, size_t size, const char *value);
#endif
