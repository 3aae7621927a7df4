/* test_metrics.c - the metrics registry: exposition text, lookups, escaping, the cap, threads */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "metrics.h"
#include "mem.h"

static void
assert_render (metrics_t *m, const char *expected)
{
    char *text = metrics_render (m);
    assert_non_null (text);
    if (strcmp (text, expected) != 0)
        fprintf (stderr, "--- expected\n%s--- got\n%s---\n", expected, text);
    assert_string_equal (text, expected);
    mem_free (text);
}

static void
test_counter_and_gauge (void **state)
{
    metrics_t *m = metrics_new ("ferrule_");
    assert_render (m, "");
    metrics_series_t *ok = metrics_counter (m, "requests_total", "Requests answered, by outcome.",
                                            "op=\"token\",outcome=\"ok\"");
    metrics_series_t *bad = metrics_counter (m, "requests_total", "ignored: help is set once",
                                             "op=\"token\",outcome=\"needs_reconnect\"");
    metrics_series_t *restarts = metrics_counter (m, "restarts_total", "Restarts.", NULL);
    metrics_series_t *inflight = metrics_gauge (m, "refreshes_in_flight", "Refreshes in flight.", "");
    metrics_series_t *skew = metrics_gauge (m, "clock_skew_ms", "Skew.\nSecond line \\ backslash.",
                                            NULL);
    metrics_inc (ok);
    metrics_inc (ok);
    metrics_add (bad, 40);
    metrics_inc (bad);
    metrics_add (restarts, UINT64_C (18446744073709551615));
    metrics_set (inflight, 5);
    metrics_gauge_add (inflight, -2);
    metrics_inc (inflight);
    metrics_set (skew, -1234567890123);
    assert_int_equal (metrics_value (ok), 2);
    assert_int_equal (metrics_value (inflight), 4);
    assert_render (m,
        "# HELP ferrule_requests_total Requests answered, by outcome.\n"
        "# TYPE ferrule_requests_total counter\n"
        "ferrule_requests_total{op=\"token\",outcome=\"ok\"} 2\n"
        "ferrule_requests_total{op=\"token\",outcome=\"needs_reconnect\"} 41\n"
        "# HELP ferrule_restarts_total Restarts.\n"
        "# TYPE ferrule_restarts_total counter\n"
        "ferrule_restarts_total 18446744073709551615\n"
        "# HELP ferrule_refreshes_in_flight Refreshes in flight.\n"
        "# TYPE ferrule_refreshes_in_flight gauge\n"
        "ferrule_refreshes_in_flight 4\n"
        "# HELP ferrule_clock_skew_ms Skew.\\nSecond line \\\\ backslash.\n"
        "# TYPE ferrule_clock_skew_ms gauge\n"
        "ferrule_clock_skew_ms -1234567890123\n");
    metrics_destroy (&m);
    assert_null (m);
    metrics_destroy (&m);                   /* safe twice */

    m = metrics_new (NULL);                 /* no prefix */
    metrics_inc (metrics_counter (m, "up", "Up.", NULL));
    assert_render (m, "# HELP up Up.\n# TYPE up counter\nup 1\n");
    metrics_destroy (&m);
}

static void
test_histogram (void **state)
{
    static const double bounds [] = { 0.005, 0.25, 1, 2.5, 1e6 };
    metrics_t *m = metrics_new ("ferrule_");
    metrics_series_t *google = metrics_histogram (m, "refresh_seconds", "Time to refresh a token.",
                                                  "provider=\"google\"", bounds, 5);
    metrics_series_t *none = metrics_histogram (m, "refresh_seconds", NULL, NULL, bounds, 5);
    assert_ptr_equal (metrics_histogram (m, "refresh_seconds", NULL, "provider=\"google\"",
                                         bounds, 5), google);
    metrics_observe (google, 0.125);
    metrics_observe (google, 0.25);         /* on a bound: le means <= */
    metrics_observe (google, 0.5);
    metrics_observe (google, 2);
    metrics_observe (google, 3);
    metrics_observe (google, 2e6);          /* only in +Inf */
    metrics_observe (google, 0.0 / 0.0);    /* NaN is ignored */
    metrics_observe (none, -1);             /* below every bound */
    assert_int_equal (metrics_value (google), 6);
    assert_render (m,
        "# HELP ferrule_refresh_seconds Time to refresh a token.\n"
        "# TYPE ferrule_refresh_seconds histogram\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"0.005\"} 0\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"0.25\"} 2\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"1\"} 3\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"2.5\"} 4\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"1e+06\"} 5\n"
        "ferrule_refresh_seconds_bucket{provider=\"google\",le=\"+Inf\"} 6\n"
        "ferrule_refresh_seconds_sum{provider=\"google\"} 2.000005875e+06\n"
        "ferrule_refresh_seconds_count{provider=\"google\"} 6\n"
        "ferrule_refresh_seconds_bucket{le=\"0.005\"} 1\n"
        "ferrule_refresh_seconds_bucket{le=\"0.25\"} 1\n"
        "ferrule_refresh_seconds_bucket{le=\"1\"} 1\n"
        "ferrule_refresh_seconds_bucket{le=\"2.5\"} 1\n"
        "ferrule_refresh_seconds_bucket{le=\"1e+06\"} 1\n"
        "ferrule_refresh_seconds_bucket{le=\"+Inf\"} 1\n"
        "ferrule_refresh_seconds_sum -1\n"
        "ferrule_refresh_seconds_count 1\n");
    metrics_destroy (&m);

    /* float formatting of bounds and sums, as Prometheus' Go client writes them */
    static const double odd [] = { 1e-05, 0.0001, 0.1, 123.456, 100000, 1234567 };
    m = metrics_new ("");
    metrics_series_t *h = metrics_histogram (m, "h", "H.", NULL, odd, 6);
    metrics_observe (h, 0.1);
    metrics_observe (h, 0.2);
    assert_render (m,
        "# HELP h H.\n# TYPE h histogram\n"
        "h_bucket{le=\"1e-05\"} 0\n"
        "h_bucket{le=\"0.0001\"} 0\n"
        "h_bucket{le=\"0.1\"} 1\n"
        "h_bucket{le=\"123.456\"} 2\n"
        "h_bucket{le=\"100000\"} 2\n"
        "h_bucket{le=\"1.234567e+06\"} 2\n"
        "h_bucket{le=\"+Inf\"} 2\n"
        "h_sum 0.30000000000000004\n"       /* the double 0.1 + 0.2, read back exactly */
        "h_count 2\n");
    metrics_destroy (&m);

    /* no bounds at all: only +Inf */
    m = metrics_new ("x_");
    metrics_observe (metrics_histogram (m, "d", "D.", NULL, NULL, 0), 7.5);
    assert_render (m, "# HELP x_d D.\n# TYPE x_d histogram\nx_d_bucket{le=\"+Inf\"} 1\n"
                      "x_d_sum 7.5\nx_d_count 1\n");
    metrics_destroy (&m);
}

static void
test_same_series (void **state)
{
    metrics_t *m = metrics_new ("ferrule_");
    metrics_series_t *a = metrics_counter (m, "calls_total", "Calls.", "op=\"a\"");
    metrics_series_t *b = metrics_counter (m, "calls_total", "Calls.", "op=\"b\"");
    metrics_series_t *plain = metrics_counter (m, "calls_total", "Calls.", NULL);
    assert_ptr_not_equal (a, b);
    assert_ptr_not_equal (a, plain);
    assert_ptr_equal (metrics_counter (m, "calls_total", NULL, "op=\"a\""), a);
    assert_ptr_equal (metrics_counter (m, "calls_total", NULL, ""), plain);
    /* the same labels under another name are another series */
    assert_ptr_not_equal (metrics_counter (m, "other_total", "Other.", "op=\"a\""), a);

    /* enough series to grow the hash table several times, all found again */
    enum { N = 3000 };
    metrics_series_t **s = mem_alloc (N * sizeof *s);
    char labels [64];
    for (int i = 0; i < N; i++) {
        snprintf (labels, sizeof labels, "integration=\"acct%d:box\"", i);
        s [i] = metrics_gauge (m, "cached", "Cached.", labels);
        metrics_set (s [i], i);
    }
    for (int i = 0; i < N; i++) {
        snprintf (labels, sizeof labels, "integration=\"acct%d:box\"", i);
        assert_ptr_equal (metrics_gauge (m, "cached", NULL, labels), s [i]);
        assert_int_equal (metrics_value (s [i]), i);
    }
    mem_free (s);
    metrics_destroy (&m);
}

static void
test_escape (void **state)
{
    char out [64];
    metrics_label_escape (out, sizeof out, "a\\b\"c\nd");
    assert_string_equal (out, "a\\\\b\\\"c\\nd");
    metrics_label_escape (out, sizeof out, NULL);
    assert_string_equal (out, "");
    metrics_label_escape (out, sizeof out, "caf\xc3\xa9 \xff!");    /* invalid byte replaced */
    assert_string_equal (out, "caf\xc3\xa9 \xef\xbf\xbd!");
    /* cut before an escape or a UTF-8 sequence, never inside one */
    metrics_label_escape (out, 4, "ab\"c");
    assert_string_equal (out, "ab");
    metrics_label_escape (out, 5, "ab\"c");
    assert_string_equal (out, "ab\\\"");
    metrics_label_escape (out, 4, "ab\xc3\xa9");
    assert_string_equal (out, "ab");
    metrics_label_escape (out, 1, "abc");
    assert_string_equal (out, "");
    metrics_label_escape (out, 0, "abc");   /* writes nothing */

    metrics_t *m = metrics_new ("ferrule_");
    char value [64], labels [128];
    metrics_label_escape (value, sizeof value, "acme \"prod\"\nline2 \\ end");
    snprintf (labels, sizeof labels, "provider=\"%s\",outcome=\"ok\"", value);
    metrics_series_t *good = metrics_counter (m, "calls_total", "Calls.", labels);
    metrics_inc (good);
    /* a caller that forgot to escape still renders text Prometheus can parse */
    metrics_inc (metrics_counter (m, "calls_total", NULL, "provider=\"ac\"me\",outcome=\"ok\""));
    metrics_inc (metrics_counter (m, "calls_total", NULL, "provider=\"two\nlines\""));
    metrics_inc (metrics_counter (m, "calls_total", NULL, "provider=\"ends with \\\""));
    metrics_inc (metrics_counter (m, "calls_total", NULL, "provider=\"bad \\x \xfe\","));
    /* structure that cannot be parsed is not exported and is counted */
    metrics_series_t *lost = metrics_counter (m, "calls_total", NULL, "provider=acme");
    assert_non_null (lost);
    metrics_inc (lost);
    assert_ptr_equal (metrics_counter (m, "calls_total", NULL, "9x=\"a\""), lost);
    assert_ptr_equal (metrics_counter (m, "calls_total", NULL, "a=\"1\",a=\"2\""), lost);
    assert_ptr_equal (metrics_counter (m, "calls_total", NULL, "a=\"unterminated"), lost);
    static const double b [] = { 1 };
    metrics_series_t *hlost = metrics_histogram (m, "h", "H.", "le=\"1\"", b, 1);
    metrics_observe (hlost, 1);             /* the histogram overflow series takes it */
    assert_render (m,
        "# HELP ferrule_calls_total Calls.\n"
        "# TYPE ferrule_calls_total counter\n"
        "ferrule_calls_total{provider=\"acme \\\"prod\\\"\\nline2 \\\\ end\",outcome=\"ok\"} 1\n"
        "ferrule_calls_total{provider=\"ac\\\"me\",outcome=\"ok\"} 1\n"
        "ferrule_calls_total{provider=\"two\\nlines\"} 1\n"
        "ferrule_calls_total{provider=\"ends with \\\\\"} 1\n"
        "ferrule_calls_total{provider=\"bad \\\\x \xef\xbf\xbd\"} 1\n"
        "# HELP ferrule_metrics_series_dropped_total Registrations refused because the registry "
        "was full or the labels could not be parsed.\n"
        "# TYPE ferrule_metrics_series_dropped_total counter\n"
        "ferrule_metrics_series_dropped_total 5\n");
    metrics_destroy (&m);
}

static void
test_overflow_cap (void **state)
{
    metrics_t *m = metrics_new ("ferrule_");
    char labels [64];
    metrics_series_t *first = NULL;
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        snprintf (labels, sizeof labels, "id=\"%d\"", i);
        metrics_series_t *s = metrics_counter (m, "per_id_total", "Per id (a bug).", labels);
        if (i == 0)
            first = s;
        metrics_inc (s);
    }
    metrics_series_t *over = metrics_counter (m, "per_id_total", NULL, "id=\"overflow1\"");
    metrics_series_t *over2 = metrics_counter (m, "another_total", "Another.", NULL);
    assert_ptr_equal (over, over2);         /* one shared series */
    metrics_add (over, 1000);
    metrics_set (metrics_gauge (m, "g", "G.", NULL), 3);
    metrics_observe (metrics_histogram (m, "h", "H.", NULL, NULL, 0), 1);
    /* existing series are still found */
    assert_ptr_equal (metrics_counter (m, "per_id_total", NULL, "id=\"0\""), first);

    char *text = metrics_render (m);
    assert_non_null (text);
    assert_non_null (strstr (text, "ferrule_per_id_total{id=\"9999\"} 1\n"));
    assert_null (strstr (text, "overflow1"));
    assert_null (strstr (text, "another_total"));
    assert_null (strstr (text, "ferrule_g "));
    assert_non_null (strstr (text, "\nferrule_metrics_series_dropped_total 4\n"));
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal (lines, 2 + METRICS_MAX_SERIES + 3);
    mem_free (text);
    metrics_destroy (&m);
}

/* ---------------------------------------------------------------- one writer, one reader */

#define WRITES 1000000

typedef struct {
    metrics_t *m;
    metrics_series_t *counter;
    metrics_series_t *hist;
    atomic_int done;
} race_t;

static void *
writer (void *arg)
{
    race_t *r = arg;
    char labels [32];
    for (int i = 0; i < WRITES; i++) {
        metrics_inc (r->counter);
        if (i % 4 == 0)
            metrics_observe (r->hist, (double) (i % 3));
        if (i % 1000 == 0) {                /* new series while the reader walks the list */
            snprintf (labels, sizeof labels, "n=\"%d\"", i / 1000);
            metrics_inc (metrics_counter (r->m, "created_total", "Created.", labels));
        }
    }
    atomic_store (&r->done, 1);
    return NULL;
}

static uint64_t
value_after (const char *text, const char *key)
{
    const char *p = strstr (text, key);
    assert_non_null (p);
    return strtoull (p + strlen (key), NULL, 10);
}

static void
test_concurrent_render (void **state)
{
    static const double bounds [] = { 0.5, 1.5 };
    race_t r = { .m = metrics_new ("ferrule_") };
    pthread_t t;
    uint64_t last = 0;
    int renders = 0;
    r.counter = metrics_counter (r.m, "events_total", "Events.", NULL);
    r.hist = metrics_histogram (r.m, "values", "Values.", NULL, bounds, 2);
    atomic_init (&r.done, 0);

    assert_int_equal (pthread_create (&t, NULL, writer, &r), 0);
    while (!atomic_load (&r.done) || renders == 0) {
        char *text = metrics_render (r.m);
        assert_non_null (text);
        uint64_t now = value_after (text, "\nferrule_events_total ");
        assert_true (now >= last && now <= WRITES);     /* never goes back */
        last = now;
        /* histogram snapshot is coherent: buckets rise and _count is the +Inf bucket */
        uint64_t b0 = value_after (text, "ferrule_values_bucket{le=\"0.5\"} ");
        uint64_t b1 = value_after (text, "ferrule_values_bucket{le=\"1.5\"} ");
        uint64_t inf = value_after (text, "ferrule_values_bucket{le=\"+Inf\"} ");
        assert_true (b0 <= b1 && b1 <= inf);
        assert_true (value_after (text, "ferrule_values_count ") == inf);
        mem_free (text);
        renders++;
    }
    pthread_join (t, NULL);
    char *text = metrics_render (r.m);
    assert_int_equal (value_after (text, "\nferrule_events_total "), WRITES);
    assert_int_equal (value_after (text, "ferrule_values_count "), WRITES / 4);
    /* i % 3 over i = 0, 4, 8, ...: 0, 1, 2 in turn, 250000 observations summing to 249999 */
    assert_non_null (strstr (text, "ferrule_values_sum 249999\n"));
    assert_non_null (strstr (text, "ferrule_created_total{n=\"999\"} 1\n"));
    mem_free (text);
    print_message ("rendered %d times while writing\n", renders);
    metrics_destroy (&r.m);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_counter_and_gauge),
        cmocka_unit_test (test_histogram),
        cmocka_unit_test (test_same_series),
        cmocka_unit_test (test_escape),
        cmocka_unit_test (test_overflow_cap),
        cmocka_unit_test (test_concurrent_render),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
