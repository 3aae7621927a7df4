/* metrics.c - a registry of series with lock-free updates and Prometheus text rendering */
#include "metrics.h"
#include "log.h"
#include "mem.h"
#include "text.h"
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_RENDER_MAX   (64u * 1024 * 1024)  /* the exposition text may not pass this */
#define METRICS_HASH_INITIAL 256                  /* buckets; doubles while series > buckets */

typedef enum { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_kind_t;

static const char *kind_names [] = { "counter", "gauge", "histogram" };

/* All series of one metric name: HELP and TYPE are written once per family. */
typedef struct metrics_family_t {
    char *name;                         /* as registered, without the prefix */
    char *full;                         /* prefix + name, as rendered */
    char *help;
    metrics_kind_t kind;
    double *bounds;                     /* histogram bucket bounds, shared by its series */
    char **le;                          /* the bounds formatted for the le label */
    size_t nbounds;
    metrics_series_t *first, *last;     /* series in registration order */
    struct metrics_family_t *next;      /* families in registration order */
} metrics_family_t;

struct metrics_series_t {
    metrics_family_t *family;           /* NULL for the overflow series */
    metrics_kind_t kind;
    char *labels;                       /* the caller's label text: the lookup key */
    char *out_labels;                   /* the same labels, canonical and escaped, for output */
    uint64_t hash;
    metrics_series_t *hash_next;
    metrics_series_t *next;             /* next series of the family */
    _Atomic uint64_t counter;
    _Atomic int64_t gauge;
    _Atomic uint64_t *buckets;          /* histogram: nbounds + 1 counts, the last is +Inf */
    _Atomic uint64_t sum_bits;          /* histogram: image of the double sum */
    const double *bounds;
    size_t nbounds;
};

struct metrics_t {
    pthread_mutex_t mutex;              /* guards everything below but the atomics */
    char *prefix;
    metrics_family_t *families, *families_last;
    metrics_series_t **hash;
    size_t hash_size;                   /* power of two */
    size_t nseries;
    uint64_t dropped;                   /* registrations refused, rendered when not 0 */
    bool warned_full;
    bool warned_labels;
    metrics_series_t overflow [3];      /* one per kind, never rendered */
    _Atomic uint64_t overflow_bucket;   /* the histogram overflow series' only bucket */
};

static void
series_init_atomics (metrics_series_t *s)
{
    atomic_init (&s->counter, 0);
    atomic_init (&s->gauge, 0);
    atomic_init (&s->sum_bits, 0);      /* the image of +0.0 */
}

metrics_t *
metrics_new (const char *prefix)
{
    metrics_t *m = mem_alloc (sizeof *m);
    pthread_mutex_init (&m->mutex, NULL);
    m->prefix = mem_strdup (prefix ? prefix : "");
    m->hash_size = METRICS_HASH_INITIAL;
    m->hash = mem_alloc (m->hash_size * sizeof *m->hash);
    for (int k = 0; k < 3; k++) {
        m->overflow [k].kind = (metrics_kind_t) k;
        series_init_atomics (&m->overflow [k]);
    }
    atomic_init (&m->overflow_bucket, 0);
    m->overflow [METRICS_HISTOGRAM].buckets = &m->overflow_bucket;
    return m;
}

void
metrics_destroy (metrics_t **p)
{
    if (!p || !*p)
        return;
    metrics_t *m = *p;
    metrics_family_t *f = m->families;
    while (f) {
        metrics_family_t *fnext = f->next;
        metrics_series_t *s = f->first;
        while (s) {
            metrics_series_t *snext = s->next;
            mem_free (s->labels);
            mem_free (s->out_labels);
            mem_free ((void *) s->buckets);
            mem_free (s);
            s = snext;
        }
        for (size_t i = 0; i < f->nbounds; i++)
            mem_free (f->le [i]);
        mem_free (f->le);
        mem_free (f->bounds);
        mem_free (f->name);
        mem_free (f->full);
        mem_free (f->help);
        mem_free (f);
        f = fnext;
    }
    mem_free (m->hash);
    mem_free (m->prefix);
    pthread_mutex_destroy (&m->mutex);
    mem_free (m);
    *p = NULL;
}

/* ---------------------------------------------------------------- text helpers */

#define UTF8_REPLACEMENT "\xef\xbf\xbd"

void
metrics_label_escape (char *out, size_t size, const char *value)
{
    assert (out || size == 0);
    if (size == 0)
        return;
    size_t pos = 0;
    const unsigned char *p = (const unsigned char *) (value ? value : "");
    while (*p) {
        char esc [4];
        const char *piece = esc;
        size_t n = 1, adv = 1;
        if (*p == '\\' || *p == '"') {
            esc [0] = '\\';
            esc [1] = (char) *p;
            n = 2;
        }
        else
        if (*p == '\n') {
            esc [0] = '\\';
            esc [1] = 'n';
            n = 2;
        }
        else {
            adv = text_utf8_len (p);
            if (adv == 0) {             /* Prometheus rejects invalid UTF-8 */
                piece = UTF8_REPLACEMENT;
                n = 3;
                adv = 1;
            }
            else {
                piece = (const char *) p;
                n = adv;
            }
        }
        if (pos + n >= size)
            break;
        memcpy (out + pos, piece, n);
        pos += n;
        p += adv;
    }
    out [pos] = '\0';
}

/* Prometheus metric name: [a-zA-Z_:][a-zA-Z0-9_:]* (only asserts call it: unused under NDEBUG) */
static bool __attribute__ ((unused))
name_valid (const char *s)
{
    if (!*s)
        return false;
    for (const char *c = s; *c; c++) {
        bool alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == ':';
        if (!alpha && !(c > s && *c >= '0' && *c <= '9'))
            return false;
    }
    return true;
}

/* Length of a label name at p ([a-zA-Z_][a-zA-Z0-9_]*), 0 when there is none. */
static size_t
label_name_len (const char *p)
{
    size_t n = 0;
    while ((p [n] >= 'a' && p [n] <= 'z') || (p [n] >= 'A' && p [n] <= 'Z') || p [n] == '_'
       || (n > 0 && p [n] >= '0' && p [n] <= '9'))
        n++;
    return n;
}

/* True when the '"' at q closes a label value: the text ends after it or goes on with
 * ,name=" or a final comma (an unescaped quote in a value is not followed by those). */
static bool
closes_value (const char *q)
{
    if (q [1] == '\0' || (q [1] == ',' && q [2] == '\0'))
        return true;
    if (q [1] != ',')
        return false;
    size_t n = label_name_len (q + 2);
    return n > 0 && q [2 + n] == '=' && q [3 + n] == '"';
}

/* Canonical, correctly escaped copy of a caller's label text, or NULL when its structure cannot
 * be parsed (bad or repeated label name, missing '=' or quotes). Values the caller did not
 * escape are escaped here, and invalid UTF-8 is replaced, so the output always parses. */
static char *
labels_canonical (const char *in, bool histogram)
{
    mem_buf_t b;
    const char *names [32];
    size_t lens [32], nlabels = 0;
    const char *p = in;
    char *result = NULL;

    mem_buf_init (&b, 64 * 1024);
    if (mem_buf_append (&b, "", 0) < 0)
        goto out;
    while (*p) {
        size_t n = label_name_len (p);
        if (n == 0 || p [n] != '=' || p [n + 1] != '"' || nlabels == 32)
            goto out;
        if (histogram && n == 2 && memcmp (p, "le", 2) == 0)
            goto out;                   /* le belongs to the buckets */
        for (size_t i = 0; i < nlabels; i++)
            if (lens [i] == n && memcmp (names [i], p, n) == 0)
                goto out;
        names [nlabels] = p;
        lens [nlabels++] = n;
        if ((b.len > 0 && mem_buf_append (&b, ",", 1) < 0) || mem_buf_append (&b, p, n + 2) < 0)
            goto out;
        p += n + 2;
        for (;;) {
            const char *piece = p;
            size_t len = 1, adv = 1;
            if (*p == '\0')
                goto out;               /* no closing quote */
            if (*p == '"' && closes_value (p))
                break;
            if (*p == '\\' && (p [1] == '\\' || p [1] == 'n'
                           || (p [1] == '"' && !closes_value (p + 1)))) {
                len = adv = 2;          /* an escape the caller wrote */
            }
            else
            if (*p == '\\' || *p == '"' || *p == '\n') {
                piece = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : "\\n";
                len = 2;
            }
            else {
                adv = len = text_utf8_len ((const unsigned char *) p);
                if (adv == 0) {
                    piece = UTF8_REPLACEMENT;
                    len = 3;
                    adv = 1;
                }
            }
            if (mem_buf_append (&b, piece, len) < 0)
                goto out;
            p += adv;
        }
        if (mem_buf_append (&b, "\"", 1) < 0)
            goto out;
        p++;
        if (*p == ',')
            p++;                        /* a trailing comma is tolerated and dropped */
    }
    result = mem_strdup (b.data);
out:
    mem_buf_free (&b);
    return result;
}

/* ---------------------------------------------------------------- registration */

static uint64_t
series_hash (const char *name, const char *labels)
{
    uint64_t h = 0xcbf29ce484222325ULL;     /* FNV-1a over name, a NUL, labels */
    for (const unsigned char *p = (const unsigned char *) name; ; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
        if (!*p)
            break;
    }
    for (const unsigned char *p = (const unsigned char *) labels; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

static void
hash_grow (metrics_t *m)
{
    size_t size = m->hash_size * 2;
    metrics_series_t **hash = mem_alloc (size * sizeof *hash);
    for (size_t i = 0; i < m->hash_size; i++) {
        metrics_series_t *s = m->hash [i];
        while (s) {
            metrics_series_t *next = s->hash_next;
            s->hash_next = hash [s->hash & (size - 1)];
            hash [s->hash & (size - 1)] = s;
            s = next;
        }
    }
    mem_free (m->hash);
    m->hash = hash;
    m->hash_size = size;
}

/* Shortest text that reads back as v, written as Prometheus' Go client writes floats
 * (strconv 'g', -1): exponent form below 1e-4 and from 1e6 up. */
static void
format_double (char *out, size_t size, double v)
{
    char buf [40];
    if (isnan (v)) {
        snprintf (out, size, "NaN");
        return;
    }
    if (isinf (v)) {
        snprintf (out, size, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        snprintf (out, size, "0");
        return;
    }
    int digits;
    for (digits = 1; digits < 17; digits++) {
        snprintf (buf, sizeof buf, "%.*e", digits - 1, v);
        if (strtod (buf, NULL) == v)
            break;
    }
    snprintf (buf, sizeof buf, "%.*e", digits - 1, v);
    long exp = strtol (strchr (buf, 'e') + 1, NULL, 10);
    if (exp < -4 || exp >= 6)
        snprintf (out, size, "%s", buf);
    else
        snprintf (out, size, "%.*f", (int) (digits - 1 - exp > 0 ? digits - 1 - exp : 0), v);
}

static metrics_family_t *
family_find (metrics_t *m, const char *name)
{
    for (metrics_family_t *f = m->families; f; f = f->next)
        if (strcmp (f->name, name) == 0)
            return f;
    return NULL;
}

static metrics_family_t *
family_new (metrics_t *m, metrics_kind_t kind, const char *name, const char *help,
            const double *bounds, size_t nbounds)
{
    metrics_family_t *f = mem_alloc (sizeof *f);
    size_t plen = strlen (m->prefix), nlen = strlen (name);
    f->name = mem_strdup (name);
    f->full = mem_alloc (plen + nlen + 1);
    memcpy (f->full, m->prefix, plen);
    memcpy (f->full + plen, name, nlen + 1);
    assert (name_valid (f->full) && "metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*");
    f->help = mem_strdup (help ? help : "");
    f->kind = kind;
    if (kind == METRICS_HISTOGRAM) {
        f->nbounds = nbounds;
        f->bounds = mem_alloc ((nbounds ? nbounds : 1) * sizeof *f->bounds);
        f->le = mem_alloc ((nbounds ? nbounds : 1) * sizeof *f->le);
        for (size_t i = 0; i < nbounds; i++) {
            char text [40];
            f->bounds [i] = bounds [i];
            format_double (text, sizeof text, bounds [i]);
            f->le [i] = mem_strdup (text);
        }
    }
    if (m->families_last)
        m->families_last->next = f;
    else
        m->families = f;
    m->families_last = f;
    return f;
}

/* Warns once per registry; the caller holds the mutex. */
static metrics_series_t *
refuse (metrics_t *m, metrics_kind_t kind, const char *name, const char *labels, bool full)
{
    m->dropped++;
    if (full && !m->warned_full) {
        m->warned_full = true;
        log_warning (NULL, NULL, "metric \"%s%s\" with labels {%.200s} is not exported: the registry "
                     "already holds %d series, the most it takes; look for a label whose values "
                     "are unbounded, and watch %smetrics_series_dropped_total",
                     m->prefix, name, labels, METRICS_MAX_SERIES, m->prefix);
    }
    if (!full && !m->warned_labels) {
        m->warned_labels = true;
        log_warning (NULL, NULL, "metric \"%s%s\" is not exported: cannot parse its labels {%.200s}, "
                     "expected name=\"value\" pairs separated by commas", m->prefix, name, labels);
    }
    return &m->overflow [kind];
}

static metrics_series_t *
series_get (metrics_t *m, metrics_kind_t kind, const char *name, const char *help,
            const char *labels, const double *bounds, size_t nbounds)
{
    metrics_series_t *s = NULL;
    char *out_labels = NULL;

    assert (m && name);
    if (!labels)
        labels = "";
    uint64_t h = series_hash (name, labels);
    pthread_mutex_lock (&m->mutex);
    for (s = m->hash [h & (m->hash_size - 1)]; s; s = s->hash_next)
        if (s->hash == h && strcmp (s->labels, labels) == 0 && strcmp (s->family->name, name) == 0) {
            assert (s->kind == kind && "a metric name is registered with two types");
            goto out;
        }
    if (m->nseries >= METRICS_MAX_SERIES) {
        s = refuse (m, kind, name, labels, true);
        goto out;
    }
    out_labels = labels_canonical (labels, kind == METRICS_HISTOGRAM);
    if (!out_labels) {
        s = refuse (m, kind, name, labels, false);
        goto out;
    }
    metrics_family_t *f = family_find (m, name);
    if (f) {
        assert (f->kind == kind && "a metric name is registered with two types");
        assert (kind != METRICS_HISTOGRAM || (f->nbounds == nbounds
                && memcmp (f->bounds, bounds, nbounds * sizeof *bounds) == 0));
    }
    else
        f = family_new (m, kind, name, help, bounds, nbounds);

    s = mem_alloc (sizeof *s);
    s->family = f;
    s->kind = kind;
    s->labels = mem_strdup (labels);
    s->out_labels = out_labels;
    out_labels = NULL;
    s->hash = h;
    series_init_atomics (s);
    if (kind == METRICS_HISTOGRAM) {
        s->bounds = f->bounds;
        s->nbounds = f->nbounds;
        s->buckets = mem_alloc ((f->nbounds + 1) * sizeof *s->buckets);
        for (size_t i = 0; i <= f->nbounds; i++)
            atomic_init (&s->buckets [i], 0);
    }
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    s->hash_next = m->hash [h & (m->hash_size - 1)];
    m->hash [h & (m->hash_size - 1)] = s;
    if (++m->nseries > m->hash_size)
        hash_grow (m);
out:
    pthread_mutex_unlock (&m->mutex);
    mem_free (out_labels);
    return s;
}

metrics_series_t *
metrics_counter (metrics_t *m, const char *name, const char *help, const char *labels)
{
    return series_get (m, METRICS_COUNTER, name, help, labels, NULL, 0);
}

metrics_series_t *
metrics_gauge (metrics_t *m, const char *name, const char *help, const char *labels)
{
    return series_get (m, METRICS_GAUGE, name, help, labels, NULL, 0);
}

metrics_series_t *
metrics_histogram (metrics_t *m, const char *name, const char *help, const char *labels,
                   const double *bounds, size_t nbounds)
{
    assert ((bounds || nbounds == 0) && nbounds <= METRICS_MAX_BUCKETS);
    for (size_t i = 0; i < nbounds; i++)
        assert (isfinite (bounds [i]) && (i == 0 || bounds [i] > bounds [i - 1])
                && "histogram bounds must be finite and strictly increasing");
    return series_get (m, METRICS_HISTOGRAM, name, help, labels, bounds, nbounds);
}

/* ---------------------------------------------------------------- updates (lock-free) */

void
metrics_inc (metrics_series_t *s)
{
    metrics_add (s, 1);
}

void
metrics_add (metrics_series_t *s, uint64_t n)
{
    assert (s && s->kind != METRICS_HISTOGRAM);
    if (s->kind == METRICS_COUNTER)
        atomic_fetch_add_explicit (&s->counter, n, memory_order_relaxed);
    else
        atomic_fetch_add_explicit (&s->gauge, (int64_t) n, memory_order_relaxed);
}

void
metrics_set (metrics_series_t *s, int64_t value)
{
    assert (s && s->kind == METRICS_GAUGE && "only a gauge can be set");
    atomic_store_explicit (&s->gauge, value, memory_order_relaxed);
}

void
metrics_gauge_add (metrics_series_t *s, int64_t delta)
{
    assert (s && s->kind == METRICS_GAUGE);
    atomic_fetch_add_explicit (&s->gauge, delta, memory_order_relaxed);
}

void
metrics_observe (metrics_series_t *s, double v)
{
    assert (s && s->kind == METRICS_HISTOGRAM);
    if (isnan (v))
        return;
    size_t lo = 0, hi = s->nbounds;     /* first bound >= v; nbounds is the +Inf bucket */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->bounds [mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit (&s->buckets [lo], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit (&s->sum_bits, memory_order_relaxed), new;
    do {
        double sum;
        memcpy (&sum, &old, sizeof sum);
        sum += v;
        memcpy (&new, &sum, sizeof new);
    } while (!atomic_compare_exchange_weak_explicit (&s->sum_bits, &old, new,
                                                     memory_order_relaxed, memory_order_relaxed));
}

int64_t
metrics_value (const metrics_series_t *s)
{
    assert (s);
    switch (s->kind) {
    case METRICS_COUNTER:
        return (int64_t) atomic_load_explicit (&s->counter, memory_order_relaxed);
    case METRICS_GAUGE:
        return atomic_load_explicit (&s->gauge, memory_order_relaxed);
    default: {
        uint64_t count = 0;
        for (size_t i = 0; i <= s->nbounds; i++)
            count += atomic_load_explicit (&s->buckets [i], memory_order_relaxed);
        return (int64_t) count;
    }
    }
}

/* ---------------------------------------------------------------- rendering */

/* Builder with sticky failure: the first append past the cap fails every later one. */
typedef struct {
    mem_buf_t buf;
    bool failed;
} render_t;

static void
put (render_t *r, const char *s, size_t len)
{
    if (!r->failed && mem_buf_append (&r->buf, s, len) < 0)
        r->failed = true;
}

static void
puts_ (render_t *r, const char *s)
{
    put (r, s, strlen (s));
}

static void __attribute__ ((format (printf, 2, 3)))
putf (render_t *r, const char *fmt, ...)
{
    char tmp [64];
    va_list ap;
    va_start (ap, fmt);
    int n = vsnprintf (tmp, sizeof tmp, fmt, ap);
    va_end (ap);
    assert (n >= 0 && (size_t) n < sizeof tmp);
    put (r, tmp, (size_t) n);
}

/* HELP text: backslash and newline are escaped, invalid UTF-8 replaced. */
static void
put_help (render_t *r, const char *help)
{
    for (const unsigned char *p = (const unsigned char *) help; *p; ) {
        size_t n = text_utf8_len (p);
        if (*p == '\\')
            puts_ (r, "\\\\");
        else
        if (*p == '\n')
            puts_ (r, "\\n");
        else
        if (n == 0)
            puts_ (r, UTF8_REPLACEMENT);
        else
            put (r, (const char *) p, n);
        p += n ? n : 1;
    }
}

/* name{labels} or name{labels,le="x"}; suffix is "", "_bucket", "_sum" or "_count". */
static void
put_name (render_t *r, const metrics_series_t *s, const char *suffix, const char *le)
{
    puts_ (r, s->family->full);
    puts_ (r, suffix);
    if (!*s->out_labels && !le)
        return;
    puts_ (r, "{");
    puts_ (r, s->out_labels);
    if (le) {
        if (*s->out_labels)
            puts_ (r, ",");
        puts_ (r, "le=\"");
        puts_ (r, le);
        puts_ (r, "\"");
    }
    puts_ (r, "}");
}

static void
put_series (render_t *r, const metrics_series_t *s)
{
    if (s->kind == METRICS_COUNTER) {
        put_name (r, s, "", NULL);
        putf (r, " %" PRIu64 "\n", atomic_load_explicit (&s->counter, memory_order_relaxed));
        return;
    }
    if (s->kind == METRICS_GAUGE) {
        put_name (r, s, "", NULL);
        putf (r, " %" PRId64 "\n", atomic_load_explicit (&s->gauge, memory_order_relaxed));
        return;
    }
    /* count is the sum of the buckets read here, so _count always equals the +Inf bucket and
     * the buckets always rise; an observation in flight may be in the sum and not the count */
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= s->nbounds; i++) {
        cumulative += atomic_load_explicit (&s->buckets [i], memory_order_relaxed);
        put_name (r, s, "_bucket", i < s->nbounds ? s->family->le [i] : "+Inf");
        putf (r, " %" PRIu64 "\n", cumulative);
    }
    uint64_t bits = atomic_load_explicit (&s->sum_bits, memory_order_relaxed);
    double sum;
    char text [40];
    memcpy (&sum, &bits, sizeof sum);
    format_double (text, sizeof text, sum);
    put_name (r, s, "_sum", NULL);
    putf (r, " %s\n", text);
    put_name (r, s, "_count", NULL);
    putf (r, " %" PRIu64 "\n", cumulative);
}

char *
metrics_render (metrics_t *m)
{
    metrics_series_t **snap = NULL;
    size_t n = 0;
    uint64_t dropped;
    render_t r = { .failed = false };
    char *text = NULL;

    assert (m);
    /* the mutex only covers copying the list: series are never freed before the registry,
     * their names never change, and their values are atomics */
    pthread_mutex_lock (&m->mutex);
    snap = mem_alloc ((m->nseries ? m->nseries : 1) * sizeof *snap);
    for (metrics_family_t *f = m->families; f; f = f->next)
        for (metrics_series_t *s = f->first; s; s = s->next)
            snap [n++] = s;
    dropped = m->dropped;
    pthread_mutex_unlock (&m->mutex);

    mem_buf_init (&r.buf, METRICS_RENDER_MAX);
    put (&r, "", 0);                    /* an empty registry renders as "" */
    for (size_t i = 0; i < n; i++) {
        const metrics_family_t *f = snap [i]->family;
        if (i == 0 || snap [i - 1]->family != f) {
            puts_ (&r, "# HELP ");
            puts_ (&r, f->full);
            puts_ (&r, " ");
            put_help (&r, f->help);
            puts_ (&r, "\n# TYPE ");
            puts_ (&r, f->full);
            puts_ (&r, " ");
            puts_ (&r, kind_names [f->kind]);
            puts_ (&r, "\n");
        }
        put_series (&r, snap [i]);
    }
    if (dropped) {
        puts_ (&r, "# HELP ");
        puts_ (&r, m->prefix);
        puts_ (&r, "metrics_series_dropped_total Registrations refused because the registry was "
                   "full or the labels could not be parsed.\n# TYPE ");
        puts_ (&r, m->prefix);
        puts_ (&r, "metrics_series_dropped_total counter\n");
        puts_ (&r, m->prefix);
        putf (&r, "metrics_series_dropped_total %" PRIu64 "\n", dropped);
    }
    if (r.failed) {
        log_warning (NULL, NULL, "could not render metrics: the text would pass %u bytes",
                     METRICS_RENDER_MAX);
        goto out;
    }
    text = r.buf.data;
    r.buf.data = NULL;                  /* handed to the caller */
out:
    mem_buf_free (&r.buf);
    mem_free (snap);
    return text;
}
