/* ferrule-bench: measures a running Ferrule (one broker, its workers, the fake provider and
 * PostgreSQL, all started by scripts/bench) next to baselines measured in the same run, and
 * prints one table. The scenarios, their targets and how each is measured are in
 * docs/performance.md. Performance targets live here and there, never in timed tests. */
#define _GNU_SOURCE
#include "bench.h"
#include "config.h"
#include "crypto.h"
#include "mem.h"
#include "store_sql.h"
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

static curve_identity_t ferrule_id;      /* the bench's client key and the brokers' public key */

/* ---- targets (docs/performance.md) ---- */
#define TARGET_A_RATIO      0.8      /* cache-hit throughput / bare ZeroMQ echo */
#define TARGET_A_P99_RATIO  1.5      /* p99 at half Ferrule's peak / the echo's p99 at the same rate */
#define TARGET_A_CPU_RATIO  1.5      /* broker + worker CPU per request / the echo's */
#define TARGET_B_RATIO      1.0      /* committed refreshes / pgbench same-shape transactions */
#define PGBENCH_BATCH       8        /* refreshes per transaction in (b)'s batched diagnostic */
#define TARGET_C_FRACTION   0.9      /* of min (C / provider latency, (b)'s rate) */
#define TARGET_E_BYTES      512.0    /* worker RSS per cached integration */
#define TARGET_H_RATIO      0.85     /* cache-hit throughput with the audit log on / off */
#define TARGET_F_LOCK_RATIO 2.0      /* cache-hit p99 with one row locked / unlocked */

#define TARGET_G_P99_MS     5.0      /* provider answer to journal fsync, p99 */

#define C_LATENCY_MS        100      /* provider latency in (c) and (d) */
/* (c)'s repetitions start with every refresh sent at once and no answer before C_LATENCY_MS: the
 * rate is counted after five provider latencies, so that the start, the same for any server,
 * does not count as throughput lost (its count from the first send is shown beside it) */
#define C_WARMUP_MS         500
/* (c)'s diagnostic row: the same load with each answer's latency drawn from 100 +- this, so that
 * refreshes started together are not answered together (a fixed latency keeps the 100 in flight
 * in lock-step, every repetition, for seconds) */
#define C_JITTER_MS         10
#define ACCESS_TTL_S        3600     /* the fake provider's access tokens */
#define FAKE_CLIENT_ID      "ferrule-test-client"   /* the fake provider's defaults, as in scripts/bench's catalog */
#define FAKE_CLIENT_SECRET  "ferrule-test-secret"
#define MAX_WORKERS         16

typedef struct {
    char *broker, *database_url, *fake_url, *worker_pids, *pgbench, *scenarios, *workdir, *key, *latency_dump,
         *worker_metrics, *broker_noaudit, *plain_broker, *plain_worker_pids;
    int64_t broker_pid, plain_broker_pid, reps, duration_ms, sockets, window_small, window_large, b_window, b_integrations,
            c_concurrency, storm, e_integrations, token_bytes, a_integrations, worker_connections;
} options_t;

static options_t opt;
static pid_t worker_pid [MAX_WORKERS];
static int nworkers;
/* (a)'s plaintext side: a broker and workers of their own, on a database of their own (scripts/bench) */
static const curve_identity_t plain_id = { .plaintext = 1 };
static pid_t plain_worker_pid [MAX_WORKERS];
static int nplain_workers;
static CURL *curl;
static PGconn *db;

/* ---- the result table ---- */

#define MAX_ROWS 48
typedef struct {
    char scenario [96], ferrule [40], baseline [40], ratio [16], target [40], verdict [12];
} row_t;
static row_t rows [MAX_ROWS];
static int nrows;
static char notes [8192];

static void die (const char *format, ...) __attribute__ ((format (printf, 1, 2), noreturn));

/* Adds a row to the table printed at the end. */
static void
row_add (const char *scenario, const char *ferrule, const char *baseline, const char *ratio,
         const char *target, const char *verdict)
{
    if (nrows == MAX_ROWS)
        die ("more than %d rows in the table: raise MAX_ROWS", MAX_ROWS);   /* never drop a result */
    row_t *r = &rows [nrows++];
    snprintf (r->scenario, sizeof r->scenario, "%s", scenario);
    snprintf (r->ferrule, sizeof r->ferrule, "%s", ferrule);
    snprintf (r->baseline, sizeof r->baseline, "%s", baseline);
    snprintf (r->ratio, sizeof r->ratio, "%s", ratio);
    snprintf (r->target, sizeof r->target, "%s", target);
    snprintf (r->verdict, sizeof r->verdict, "%s", verdict);
}

/* Adds a line to the notes printed under the table. */
static void
note (const char *format, ...)
{
    size_t len = strlen (notes);
    va_list ap;
    va_start (ap, format);
    vsnprintf (notes + len, sizeof notes - len, format, ap);
    va_end (ap);
    len = strlen (notes);
    if (len + 1 < sizeof notes) {
        notes [len] = '\n';
        notes [len + 1] = '\0';
    }
}

/* Progress on stderr. */
static void
say (const char *format, ...)
{
    va_list ap;
    va_start (ap, format);
    fputs ("ferrule-bench: ", stderr);
    vfprintf (stderr, format, ap);
    fputc ('\n', stderr);
    va_end (ap);
}

/* Says why and exits 1 (scripts/bench stops everything it started). */
static void
die (const char *format, ...)
{
    va_list ap;
    va_start (ap, format);
    fputs ("ferrule-bench: ", stderr);
    vfprintf (stderr, format, ap);
    fputc ('\n', stderr);
    va_end (ap);
    exit (1);
}

/* printf into one of 16 rotating buffers: for table cells and labels, used at once. */
static char *
fmt (const char *f, ...)
{
    static char ring [16][96];          /* as long as a row's scenario cell */
    static int next;
    char *out = ring [next++ % 16];
    va_list ap;
    va_start (ap, f);
    vsnprintf (out, sizeof ring [0], f, ap);
    va_end (ap);
    return out;
}

/* ---- the fake provider's admin API ---- */

/* curl write callback: appends to a capped buffer. */
static size_t
curl_collect (char *data, size_t size, size_t nmemb, void *userp)
{
    mem_buf_t *b = userp;
    return mem_buf_append (b, data, size * nmemb) == 0 ? size * nmemb : 0;
}

/* One admin call; the reply as JSON (caller decrefs), or NULL when it failed. */
static json_t *
fake_call (const char *method, const char *path, json_t *body)
{
    char url [512];
    snprintf (url, sizeof url, "%s%s", opt.fake_url, path);
    char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
    mem_buf_t buf;
    mem_buf_init (&buf, 1 << 20);
    struct curl_slist *h = curl_slist_append (NULL, "Content-Type: application/json");
    curl_easy_reset (curl);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, curl_collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    if (text)
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, text);
    long status = 0;
    CURLcode cc = curl_easy_perform (curl);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    json_t *out = NULL;
    if (cc == CURLE_OK && status >= 200 && status < 300)
        out = buf.len ? json_loadb (buf.data, buf.len, 0, NULL) : json_object ();
    else
        say ("fake provider: %s %s answered %ld%s%s", method, path, status, cc != CURLE_OK ? ": " : "",
             cc != CURLE_OK ? curl_easy_strerror (cc) : "");
    curl_slist_free_all (h);
    mem_buf_free (&buf);
    free (text);
    return out;
}

/* ---- (g): the workers' journal-window histogram ---- */

#define WINDOW_BUCKETS 32

typedef struct {
    double le [WINDOW_BUCKETS];      /* upper bounds, seconds; the last is +Inf */
    double count [WINDOW_BUCKETS];   /* cumulative, summed over the workers */
    int n;
    double batch [4];                /* claim batch size's sum and count, then the commit's */
} window_hist_t;

/* The value of an unlabelled series in a /metrics text, or 0. */
static double
metric_in (const char *text, const char *series)
{
    size_t len = strlen (series);
    for (const char *line = text; line; line = strchr (line, '\n')) {
        line += *line == '\n';
        if (strncmp (line, series, len) == 0 && line [len] == ' ')
            return strtod (line + len + 1, NULL);
    }
    return 0;
}

/* One worker's /metrics text into buf (mem_buf_free it). 0, or -1 with the reason said. */
static int
worker_metrics_fetch (const char *url, mem_buf_t *buf)
{
    mem_buf_init (buf, 4 << 20);
    curl_easy_reset (curl);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, curl_collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, buf);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform (curl);
    if (cc != CURLE_OK || !buf->data) {
        say ("could not read %s: %s", url, curl_easy_strerror (cc));
        mem_buf_free (buf);
        return -1;
    }
    return 0;
}

/* Calls fn with every worker's /metrics text in turn. 0, or -1 when a worker could not be read. */
static int
workers_each (void (*fn) (const char *text, void *arg), void *arg)
{
    if (!opt.worker_metrics)
        return -1;
    char urls [2048];
    snprintf (urls, sizeof urls, "%s", opt.worker_metrics);
    for (char *save = NULL, *url = strtok_r (urls, ",", &save); url; url = strtok_r (NULL, ",", &save)) {
        mem_buf_t buf;
        if (worker_metrics_fetch (url, &buf) != 0)
            return -1;
        fn (buf.data, arg);
        mem_buf_free (&buf);
    }
    return 0;
}

typedef struct {
    const char *const *series;
    size_t n;
    double *out;
} sum_ctx_t;

static void
sum_one (const char *text, void *arg)
{
    sum_ctx_t *c = arg;
    for (size_t k = 0; k < c->n; k++)
        c->out [k] += metric_in (text, c->series [k]);
}

/* The sum over every worker of each of the n series (metric_in's form: name and labels), into
 * out. 0, or -1 when a worker could not be read. */
static int
workers_sum (const char *const *series, size_t n, double *out)
{
    memset (out, 0, n * sizeof *out);
    sum_ctx_t c = { series, n, out };
    return workers_each (sum_one, &c);
}

static void
window_one (const char *text, void *arg)
{
    window_hist_t *hist = arg;
    int i = 0;
    const char *key = "ferrule_worker_journal_window_seconds_bucket{le=\"";
    for (const char *line = strstr (text, key); line && i < WINDOW_BUCKETS; line = strstr (line + 1, key), i++) {
        const char *le = line + strlen (key);
        hist->le [i] = strncmp (le, "+Inf", 4) == 0 ? 1e9 : strtod (le, NULL);
        const char *value = strchr (le, ' ');
        if (value)
            hist->count [i] += strtod (value + 1, NULL);
    }
    hist->n = i;
    static const char *const batch [4] = {
        "ferrule_worker_claim_batch_size_sum", "ferrule_worker_claim_batch_size_count",
        "ferrule_worker_commit_batch_size_sum", "ferrule_worker_commit_batch_size_count",
    };
    for (int b = 0; b < 4; b++)
        hist->batch [b] += metric_in (text, batch [b]);
}

/* Reads ferrule_worker_journal_window_seconds, and the sizes of the refresh protocol's batches,
 * from every worker's /metrics and adds them up. 0, or -1 when a worker could not be read. */
static int
window_scrape (window_hist_t *hist)
{
    memset (hist, 0, sizeof *hist);
    if (workers_each (window_one, hist) != 0)
        return -1;
    return hist->n > 0 ? 0 : -1;
}

/* Where a refresh's time goes, from the workers' own histograms (sums and counts): its claim
 * (start to provider call), the provider call, its commit (answer to committed), the batches that
 * carried claims and commits (sent to answered), and their sizes. */
static const char *const phase_series [] = {
    "ferrule_worker_refresh_phase_seconds_sum{phase=\"claim\"}", "ferrule_worker_refresh_phase_seconds_count{phase=\"claim\"}",
    "ferrule_worker_refresh_duration_seconds_sum", "ferrule_worker_refresh_duration_seconds_count",
    "ferrule_worker_refresh_phase_seconds_sum{phase=\"commit\"}", "ferrule_worker_refresh_phase_seconds_count{phase=\"commit\"}",
    "ferrule_worker_db_batch_seconds_sum", "ferrule_worker_db_batch_seconds_count",
    "ferrule_worker_claim_batch_size_sum", "ferrule_worker_claim_batch_size_count",
    "ferrule_worker_commit_batch_size_sum", "ferrule_worker_commit_batch_size_count",
};
#define PHASE_SERIES (sizeof phase_series / sizeof phase_series [0])

/* The mean of series pair k (sum, count) between two scrapes, or -1 with nothing observed. */
static double
phase_mean (const double *before, const double *after, size_t k)
{
    double n = after [2 * k + 1] - before [2 * k + 1];
    return n > 0 ? (after [2 * k] - before [2 * k]) / n : -1;
}

/* The upper bound (ms) of the bucket holding the q-quantile of what was observed between two
 * scrapes, and the number of observations; -1 when there were none. */
static double
window_quantile_ms (const window_hist_t *before, const window_hist_t *after, double q, double *observed)
{
    int n = after->n;
    *observed = n ? after->count [n - 1] - before->count [n - 1] : 0;
    if (*observed <= 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (after->count [i] - before->count [i] >= q * *observed)
            return after->le [i] * 1000.0;
    return -1;
}

/* The share of what was observed between two scrapes that fell within le_ms (a bucket's upper
 * bound), or -1 when there is no such bucket or nothing was observed: finer than the quantiles'
 * bucket bounds for comparing two runs. */
static double
window_share_within (const window_hist_t *before, const window_hist_t *after, double le_ms)
{
    int n = after->n;
    double observed = n ? after->count [n - 1] - before->count [n - 1] : 0;
    for (int i = 0; i < n && observed > 0; i++)
        if (fabs (after->le [i] * 1000.0 - le_ms) < 1e-6)
            return (after->count [i] - before->count [i]) / observed;
    return -1;
}

/* Sets a provider's latency (each answer's drawn uniformly within jitter_ms of it), access token
 * lifetime and rotation mode at the fake provider. */
static void
fake_configure_jitter (const char *provider, int latency_ms, int jitter_ms, const char *mode)
{
    char path [128];
    snprintf (path, sizeof path, "/admin/providers/%s", provider);
    json_t *body = json_pack ("{s:i, s:i, s:i, s:s}", "latency_ms", latency_ms, "latency_jitter_ms", jitter_ms,
                              "access_ttl", ACCESS_TTL_S, "mode", mode);
    json_t *r = fake_call ("PUT", path, body);
    json_decref (body);
    if (!r)
        die ("could not configure provider \"%s\" at the fake provider", provider);
    json_decref (r);
}

/* Sets a provider's fixed latency, access token lifetime and rotation mode at the fake provider. */
static void
fake_configure (const char *provider, int latency_ms, const char *mode)
{
    fake_configure_jitter (provider, latency_ms, 0, mode);
}

/* A counter of the fake provider's /admin/stats for one provider, e.g. "refresh_calls"; -1 if none. */
static long long
fake_stat (const char *provider, const char *counter)
{
    json_t *s = fake_call ("GET", "/admin/stats", NULL);
    json_t *p = json_object_get (json_object_get (s, "providers"), provider);
    long long v = p ? (long long) json_integer_value (json_object_get (p, counter)) : -1;
    json_decref (s);
    return v;
}

/* The TCP connections the fake provider has accepted, all clients together; -1 if it does not say. */
static long long
fake_connections (void)
{
    json_t *s = fake_call ("GET", "/admin/stats", NULL);
    json_t *v = json_object_get (s, "connections");
    long long n = json_is_integer (v) ? (long long) json_integer_value (v) : -1;
    json_decref (s);
    return n;
}

/* A note on how many connections the workers made for their provider calls between two readings
 * (the benchmark's own admin calls share one kept-alive connection). */
static void
note_connections (const char *scenario, long long conn0, long long calls0, long long conn1, long long calls1)
{
    if (conn0 >= 0 && conn1 >= 0 && calls1 > calls0)
        note ("%s the fake provider accepted %lld new connections for %lld refresh calls (%.2f %%)", scenario,
              conn1 - conn0, calls1 - calls0, 100.0 * (double) (conn1 - conn0) / (double) (calls1 - calls0));
}

/* n grants at the fake provider: their refresh tokens (caller frees). */
static char **
fake_grants (const char *provider, size_t n)
{
    char **rt = calloc (n, sizeof *rt);
    json_t *body = json_pack ("{s:s}", "provider", provider);
    for (size_t i = 0; i < n; i++) {
        json_t *g = fake_call ("POST", "/admin/grants", body);
        const char *t = json_string_value (json_object_get (g, "refresh_token"));
        if (!t)
            die ("the fake provider made no grant for \"%s\"", provider);
        rt [i] = strdup (t);
        json_decref (g);
    }
    json_decref (body);
    return rt;
}

/* ---- PostgreSQL ---- */

/* Runs one statement on the benchmark's own connection; any failure ends the run. */
static void
db_exec (const char *sql)
{
    PGresult *res = PQexec (db, sql);
    ExecStatusType st = PQresultStatus (res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die ("database: %s", PQresultErrorMessage (res));
    PQclear (res);
}

/* A query that returns one integer. */
static long long
db_int (const char *sql)
{
    PGresult *res = PQexec (db, sql);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1)
        die ("database: %s", PQresultErrorMessage (res));
    long long v = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return v;
}

/* Refreshes committed so far: the chain rows they wrote. */
static long long
committed_refreshes (void)
{
    return db_int ("SELECT count(*) FROM token_chain WHERE outcome = 'refreshed'");
}

/* ---- processes ---- */

/* VmRSS of a process in KiB; -1 when it is gone. */
static long
rss_kib (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen (path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0)
            kib = strtol (line + 6, NULL, 10);
    fclose (f);
    return kib;
}

/* Starts this program again with argv (an echo broker or worker); stdout_fd, if not -1, becomes
 * its standard output. */
static pid_t
spawn_self (char *const argv [], int stdout_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init (&fa);
    if (stdout_fd >= 0)
        posix_spawn_file_actions_adddup2 (&fa, stdout_fd, STDOUT_FILENO);
    pid_t pid = -1;
    int rc = posix_spawn (&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy (&fa);
    if (rc != 0)
        die ("could not start \"%s %s\": %s", argv [0], argv [1], strerror (rc));
    return pid;
}

/* SIGTERM, up to 5 s to exit, then SIGKILL; reaps it. */
static void
stop_process (pid_t pid)
{
    if (pid <= 0)
        return;
    kill (pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid (pid, NULL, WNOHANG) == pid)
            return;
        usleep (100000);
    }
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
}

/* One line from fd within timeout_ms; 0 or -1. */
static int
read_line (int fd, char *out, size_t size, int timeout_ms)
{
    size_t len = 0;
    int64_t until = bench_now_us () + (int64_t) timeout_ms * 1000;
    while (len + 1 < size && bench_now_us () < until) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll (&p, 1, 100) <= 0)
            continue;
        char c;
        if (read (fd, &c, 1) != 1)
            return -1;
        if (c == '\n') {
            out [len] = '\0';
            return 0;
        }
        out [len++] = c;
    }
    return -1;
}

typedef struct {
    pid_t broker;
    pid_t workers [MAX_WORKERS];
    int nworkers;
    char frontend [256];
    curve_identity_t client;        /* how a client connects to it: plaintext, or CURVE */
} echo_t;

/* Starts the echo broker and its workers and waits until every worker has said hello; with
 * curve, every link of it is CURVE (keys made here for this run). */
static void
echo_start (echo_t *e, int workers, int token_bytes, int curve)
{
    int fds [2];
    memset (e, 0, sizeof *e);
    e->client.plaintext = !curve;
    if (curve) {
        char secret [CURVE_Z85_LEN + 1];
        zmq_curve_keypair (e->client.server, secret);
        zmq_curve_keypair (e->client.public, e->client.secret);
        setenv (ECHO_ENV_SECRET, secret, 1);
        setenv (ECHO_ENV_PUBLIC, e->client.server, 1);
        memset (secret, 0, sizeof secret);
    }
    if (pipe2 (fds, O_CLOEXEC) != 0)
        die ("pipe: %s", strerror (errno));
    char n [16], tb [16];
    snprintf (n, sizeof n, "%d", workers);
    snprintf (tb, sizeof tb, "%d", token_bytes);
    char *bargv [] = { "ferrule-bench", "--echo-broker", n, NULL };
    e->broker = spawn_self (bargv, fds [1]);
    close (fds [1]);
    char line [600], backend [300];
    if (read_line (fds [0], line, sizeof line, 10000) != 0 || sscanf (line, "%255s %299s", e->frontend, backend) != 2)
        die ("the echo broker did not say where it listens");
    for (int i = 0; i < workers; i++) {
        char id [32];
        snprintf (id, sizeof id, "echo-%d", i + 1);
        char *wargv [] = { "ferrule-bench", "--echo-worker", backend, id, tb, NULL };
        e->workers [e->nworkers++] = spawn_self (wargv, -1);
    }
    if (read_line (fds [0], line, sizeof line, 10000) != 0 || strcmp (line, "ready") != 0)
        die ("the echo workers did not reach the echo broker within 10 s");
    close (fds [0]);
    unsetenv (ECHO_ENV_SECRET);
    unsetenv (ECHO_ENV_PUBLIC);
}

/* Stops the echo workers, then the echo broker. */
static void
echo_stop (echo_t *e)
{
    for (int i = 0; i < e->nworkers; i++)
        stop_process (e->workers [i]);
    stop_process (e->broker);
}

/* ---- Ferrule ---- */

/* Waits until the broker at endpoint sees every worker and every partition has an owner. */
static void
wait_ready (const char *endpoint, const curve_identity_t *id, int workers)
{
    void *ctx = zmq_ctx_new ();
    void *s = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (s, ZMQ_LINGER, &zero, sizeof zero);
    curve_apply_client (s, id);
    zmq_connect (s, endpoint);
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 1);
    codec_kv_str (b, "op", "ping");
    size_t len;
    const char *body = codec_builder_data (b, &len);
    int64_t until = bench_now_us () + 60 * 1000000LL;
    int ready = 0;
    int64_t seen_workers = -1;
    while (!ready && bench_now_us () < until) {
        zmq_send (s, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send (s, CODEC_CLIENT_PROTOCOL, 4, ZMQ_SNDMORE);
        zmq_send (s, body, len, 0);
        zmq_pollitem_t item = { s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 1000) > 0) {
            zmq_msg_t m [3];
            int n = 0, more = 1;
            while (more && n < 3) {
                zmq_msg_init (&m [n]);
                if (zmq_msg_recv (&m [n], s, 0) < 0)
                    break;
                more = zmq_msg_more (&m [n]);
                n++;
            }
            codec_msg_t *msg = NULL;
            char err [128];
            int64_t w = 0, parts = 0, owned = -1;
            if (n == 3 && codec_decode (zmq_msg_data (&m [2]), zmq_msg_size (&m [2]), &msg, err, sizeof err) == FR_OK) {
                const msgpack_object *root = codec_msg_root (msg);
                codec_get_int (root, "workers", &w);
                codec_get_int (root, "partitions", &parts);
                codec_get_int (root, "partitions_owned", &owned);
                seen_workers = w;
                ready = w >= workers && owned == parts;
            }
            codec_msg_destroy (&msg);
            for (int i = 0; i < n; i++)
                zmq_msg_close (&m [i]);
        }
        if (!ready)
            usleep (200000);
    }
    codec_builder_destroy (&b);
    zmq_close (s);
    zmq_ctx_term (ctx);
    if (!ready)
        die ("the broker at \"%s\" does not see %d workers after 60 s (it sees %lld)", endpoint, workers,
             (long long) seen_workers);
}

/* n integration ids prefix000001 ... (caller frees with free_strings). */
static char **
make_ids (const char *prefix, size_t n)
{
    char **ids = calloc (n, sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        char id [128];
        snprintf (id, sizeof id, "%s%06zu", prefix, i + 1);     /* 1-based: pgbench's random(1, n) */
        ids [i] = strdup (id);
    }
    return ids;
}

/* Frees an array of n strings and the array. */
static void
free_strings (char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free (v [i]);
    free (v);
}

typedef struct {
    const char *provider;
    char **refresh_tokens;
    char **access_tokens;           /* NULL: imported without an access token */
} import_arg_t;

/* The import request's own keys (load_extra_fn). */
static void
import_extra (codec_builder_t *b, size_t i, void *arg)
{
    import_arg_t *a = arg;
    codec_kv_str (b, "provider", a->provider);
    codec_kv_str (b, "refresh_token", a->refresh_tokens [i]);
    if (a->access_tokens) {
        codec_kv_str (b, "access_token", a->access_tokens [i]);
        codec_kv_int (b, "expires_in", 86400);
    }
}

/* A load generator on the configured number of sockets, or exit. */
static load_t *
client_with (const char *endpoint, const curve_identity_t *id)
{
    load_t *l = load_new (endpoint, (int) opt.sockets, id);
    if (!l)
        exit (1);
    return l;
}

static load_t *
client (const char *endpoint)
{
    load_t *l = load_new (endpoint, (int) opt.sockets, &ferrule_id);
    if (!l)
        exit (1);
    return l;
}

/* Imports n integrations through the service (pipelined), every one must succeed. */
static void
import_all (load_t *l, char **ids, size_t n, import_arg_t *arg)
{
    load_spec_t spec = { .op = "import", .ids = ids, .nids = n, .window = 64, .max_requests = n,
                         .deadline_ms = 30000, .extra = import_extra, .nextra = arg->access_tokens ? 4 : 2,
                         .extra_arg = arg };
    load_result_t r;
    load_run (l, &spec, &r);
    if (r.ok != n)
        die ("importing %zu integrations for \"%s\": %llu ok, %llu errors (%s), %llu lost", n, arg->provider,
             (unsigned long long) r.ok, (unsigned long long) r.errors, r.first_error, (unsigned long long) r.lost);
    say ("imported %zu integrations for provider \"%s\" in %.1f s", n, arg->provider, r.elapsed_s);
}

/* One pass of op over every id, window in flight; returns the number of ok replies. */
static uint64_t
touch_all (load_t *l, const char *op, char **ids, size_t n, int window, load_result_t *r)
{
    load_spec_t spec = { .op = op, .ids = ids, .nids = n, .window = window, .max_requests = n,
                         .deadline_ms = 30000, .time_limit_ms = 600000 };
    load_run (l, &spec, r);
    return r->ok;
}

/* 1 when --scenarios names this one. */
static int
want (char scenario)
{
    return strchr (opt.scenarios, scenario) != NULL;
}

/* The result column. */
static const char *
verdict (int met)
{
    return met ? "met" : "MISSED";
}

/* Says (and keeps for the notes) when a run had error replies or requests without an answer. */
static void
check_run (const char *what, const load_result_t *r)
{
    if (r->errors || r->lost) {
        say ("%s: %llu errors (first: %s), %llu without an answer", what, (unsigned long long) r->errors,
             r->first_error, (unsigned long long) r->lost);
        note ("%s: %llu error replies (first: %s), %llu unanswered", what, (unsigned long long) r->errors,
              r->first_error, (unsigned long long) r->lost);
    }
}

/* ---- (a) cache-hit token requests next to a bare ZeroMQ echo ---- */

/* CPU time (user + system, every thread) a process has used, in microseconds; -1 if gone. */
static double
cpu_us (pid_t pid)
{
    char path [64], buf [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf [n] = '\0';
    char *p = strrchr (buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double) (ut + st) * 1e6 / (double) sysconf (_SC_CLK_TCK);
}

/* The processes of one side of (a): its broker, its workers and this client. */
typedef struct {
    pid_t broker;
    pid_t workers [MAX_WORKERS];
    int nworkers;
    double broker_us, workers_us, client_us;   /* summed over the measured runs */
    double requests;
} side_t;

typedef struct {
    double broker, workers, client;
} cpu_mark_t;

/* CPU used so far by a side's broker, its workers and this client. */
static cpu_mark_t
cpu_mark (const side_t *s)
{
    cpu_mark_t m = { cpu_us (s->broker), 0, cpu_us (getpid ()) };
    for (int i = 0; i < s->nworkers; i++)
        m.workers += cpu_us (s->workers [i]);
    return m;
}

/* Adds what a side used since before, and the requests it answered, to its totals. */
static void
cpu_add (side_t *s, const cpu_mark_t *before, double requests)
{
    cpu_mark_t after = cpu_mark (s);
    s->broker_us += after.broker - before->broker;
    s->workers_us += after.workers - before->workers;
    s->client_us += after.client - before->client;
    s->requests += requests;
}

static load_t *ferrule_client;     /* (a): the client of Ferrule's broker, for sf_served */
static uint64_t sf_served;          /* ok replies Ferrule sent in (a) */

/* Closed loop, window in flight for the duration: ok replies per second within it. */
static double
closed_rate (load_t *l, char **ids, size_t n, int window, load_result_t *r)
{
    load_spec_t spec = { .op = "token", .ids = ids, .nids = n, .window = window,
                         .duration_ms = opt.duration_ms, .deadline_ms = 5000 };
    load_run (l, &spec, r);
    if (l == ferrule_client)
        sf_served += r->ok;
    return (double) r->ok_in_time / ((double) opt.duration_ms / 1000.0);
}

/* Latency at a fixed request rate: p50 and p99 of one run. */
static void
paced (load_t *l, char **ids, size_t n, double rate, double *p50, double *p99, const char *what)
{
    static FILE *dump;
    if (opt.latency_dump && !dump && !(dump = fopen (opt.latency_dump, "a")))
        die ("could not open \"%s\": %s", opt.latency_dump, strerror (errno));
    if (dump)
        fprintf (dump, "# %s\n", what);
    load_spec_t spec = { .op = "token", .ids = ids, .nids = n, .rate = rate, .duration_ms = opt.duration_ms,
                         .deadline_ms = 5000, .keep_latencies = 1, .dump = dump };
    load_result_t r;
    load_run (l, &spec, &r);
    if (l == ferrule_client)
        sf_served += r.ok;
    if (dump)
        fflush (dump);
    check_run (what, &r);
    *p50 = r.p50_us;
    *p99 = r.p99_us;
    say ("%s: p50 %.0f us, p99 %.0f us, max %.0f us at %.0f req/s (%.0f/s answered in time)", what, r.p50_us,
         r.p99_us, r.max_us, rate, (double) r.ok_in_time / ((double) opt.duration_ms / 1000.0));
}

/* CPUs (of the machine's) a side's processes and the client kept busy while it ran, on average. */
static double
cpus_busy (const side_t *s, const cpu_mark_t *before, int64_t since_us)
{
    cpu_mark_t after = cpu_mark (s);
    double used = (after.broker - before->broker) + (after.workers - before->workers) + (after.client - before->client);
    return used / (double) (bench_now_us () - since_us);
}

/* One latency row: reps of each side at its rate, alternated; medians of p50 and p99. */
static void
latency_row (load_t *f, load_t *e, side_t *sf, side_t *se, char **ids, size_t n, double rate_f, double rate_e,
             const char *tag, const char *label_in, int with_target)
{
    char label [96];
    snprintf (label, sizeof label, "%s", label_in);      /* fmt ()'s buffers are reused below */
    int reps = (int) opt.reps;
    double *v = calloc (6 * (size_t) reps, sizeof *v);
    double *p50f = v, *p99f = v + reps, *p50e = v + 2 * reps, *p99e = v + 3 * reps, *cpuf = v + 4 * reps,
           *cpue = v + 5 * reps;
    for (int k = 0; k < reps; k++) {
        cpu_mark_t m = cpu_mark (sf);
        int64_t t = bench_now_us ();
        paced (f, ids, n, rate_f, &p50f [k], &p99f [k], fmt ("(a) %s%s, Ferrule, rep %d", tag, label, k + 1));
        cpuf [k] = cpus_busy (sf, &m, t);
        m = cpu_mark (se);
        t = bench_now_us ();
        paced (e, ids, n, rate_e, &p50e [k], &p99e [k], fmt ("(a) %s%s, echo, rep %d", tag, label, k + 1));
        cpue [k] = cpus_busy (se, &m, t);
    }
    note ("(a) %s%s: Ferrule's broker, workers and the client kept %.2f CPUs busy, the echo's %.2f (of %ld)", tag, label,
          bench_median (cpuf, (size_t) reps), bench_median (cpue, (size_t) reps), sysconf (_SC_NPROCESSORS_ONLN));
    double p99 = bench_median (p99f, (size_t) reps), p99e_m = bench_median (p99e, (size_t) reps);
    double ratio = p99e_m > 0 ? p99 / p99e_m : 0;
    row_add (fmt ("(a) %sp50 / p99 us, %s", tag, label), fmt ("%.0f / %.0f", bench_median (p50f, (size_t) reps), p99),
             fmt ("echo %.0f / %.0f", bench_median (p50e, (size_t) reps), p99e_m), fmt ("%.2f", ratio),
             with_target ? fmt ("p99 <= %.1f x echo's", TARGET_A_P99_RATIO) : "-",
             with_target ? verdict (ratio <= TARGET_A_P99_RATIO) : "-");
    free (v);
}

/* (h): what the trust boundary costs. Cache-hit throughput through two brokers of the same
 * workers, one writing the audit log and one not, alternated in the same run; and the bare echo
 * over plaintext and over CURVE, so that the cost of the encryption itself shows beside it. */
static void
scenario_h (void)
{
    if (!opt.broker_noaudit) {
        note ("(h) skipped: no --broker-noaudit (scripts/bench starts a second broker without the audit log)");
        return;
    }
    size_t n = (size_t) opt.a_integrations;
    char **ids = make_ids ("bench-f:acct", n);
    char **rts = calloc (n, sizeof *rts), **ats = calloc (n, sizeof *ats);
    for (size_t i = 0; i < n; i++) {
        rts [i] = crypto_random_token (32);
        char *t = crypto_random_token ((size_t) opt.token_bytes);
        t [opt.token_bytes] = '\0';
        ats [i] = t;
    }
    load_t *on = client (opt.broker), *off = client (opt.broker_noaudit);
    import_arg_t arg = { "bencha", rts, ats };
    import_all (on, ids, n, &arg);
    load_result_t r;
    if (touch_all (on, "token", ids, n, 64, &r) != n || touch_all (off, "token", ids, n, 64, &r) != n)
        die ("(h) warm-up: token requests failed (%s)", r.first_error);
    echo_t plain, curve;
    echo_start (&plain, nworkers, (int) opt.token_bytes, 0);
    echo_start (&curve, nworkers, (int) opt.token_bytes, 1);
    load_t *ep = client_with (plain.frontend, &plain.client), *ec = client_with (curve.frontend, &curve.client);
    touch_all (ep, "token", ids, n, 64, &r);
    touch_all (ec, "token", ids, n, 64, &r);
    int window = (int) opt.window_large, reps = (int) opt.reps;
    double *ron = calloc ((size_t) reps, sizeof *ron), *roff = calloc ((size_t) reps, sizeof *roff);
    double *rp = calloc ((size_t) reps, sizeof *rp), *rc = calloc ((size_t) reps, sizeof *rc);
    closed_rate (on, ids, n, window, &r);             /* neither measured cold */
    closed_rate (off, ids, n, window, &r);
    for (int k = 0; k < reps; k++) {
        /* alternated, and the order swapped each rep, so drift hits both alike */
        if (k % 2 == 0) {
            ron [k] = closed_rate (on, ids, n, window, &r);
            check_run ("(h) audit on", &r);
            roff [k] = closed_rate (off, ids, n, window, &r);
            check_run ("(h) audit off", &r);
        }
        else {
            roff [k] = closed_rate (off, ids, n, window, &r);
            check_run ("(h) audit off", &r);
            ron [k] = closed_rate (on, ids, n, window, &r);
            check_run ("(h) audit on", &r);
        }
        rp [k] = closed_rate (ep, ids, n, window, &r);
        rc [k] = closed_rate (ec, ids, n, window, &r);
        say ("(h) %d in flight, rep %d: audit on %.0f/s, off %.0f/s; echo plaintext %.0f/s, CURVE %.0f/s", window, k + 1,
             ron [k], roff [k], rp [k], rc [k]);
    }
    double mon = bench_median (ron, (size_t) reps), moff = bench_median (roff, (size_t) reps);
    double mp = bench_median (rp, (size_t) reps), mc = bench_median (rc, (size_t) reps);
    double ratio = moff > 0 ? mon / moff : 0;
    row_add (fmt ("(h) cache-hit token req/s, CURVE, audit on, %d in flight", window), fmt ("%.0f", mon),
             fmt ("audit off %.0f", moff), fmt ("%.2f", ratio), fmt (">= %.2f x audit off", TARGET_H_RATIO),
             verdict (ratio >= TARGET_H_RATIO));
    row_add (fmt ("(h) bare echo req/s over CURVE, %d in flight", window), fmt ("%.0f", mc), fmt ("plaintext %.0f", mp),
             fmt ("%.2f", mp > 0 ? mc / mp : 0), "(no target: the cost of CURVE)", "-");
    row_add (fmt ("(h) Ferrule CURVE + audit vs echo over plaintext, %d in flight", window), fmt ("%.0f", mon),
             fmt ("echo %.0f", mp), fmt ("%.2f", mp > 0 ? mon / mp : 0), "(no target: side by side)", "-");
    note ("(h) %d reps of %lld ms each, medians; two brokers of the same %d workers, one with FERRULE_AUDIT_LOG "
          "to a file and one with it off", reps, (long long) opt.duration_ms, nworkers);
    free (ron);
    free (roff);
    free (rp);
    free (rc);
    load_destroy (&ep);
    load_destroy (&ec);
    echo_stop (&plain);
    echo_stop (&curve);
    load_destroy (&on);
    load_destroy (&off);
    free_strings (ids, n);
    free_strings (rts, n);
    free_strings (ats, n);
}

/* (a): peaks at two windows, then latency at fixed rates, Ferrule and the echo alternated. */
/* One side of (a): Ferrule behind the broker at endpoint, next to the echo over the same links
 * (CURVE, or plaintext); tag prefixes its rows and notes ("" for the CURVE + audit side). */
typedef struct {
    const char *tag;
    const char *endpoint;
    const curve_identity_t *id;
    pid_t broker;
    const pid_t *workers;
    int nworkers;
} a_side_t;

static void
scenario_a_side (const a_side_t *a)
{
    const char *tag = a->tag;
    size_t n = (size_t) opt.a_integrations;
    char **ids = make_ids ("bench-a:acct", n);
    char **rts = calloc (n, sizeof *rts), **ats = calloc (n, sizeof *ats);
    for (size_t i = 0; i < n; i++) {
        rts [i] = crypto_random_token (32);
        char *t = crypto_random_token ((size_t) opt.token_bytes);   /* base64url: 4/3 as long */
        t [opt.token_bytes] = '\0';
        ats [i] = t;
    }
    load_t *f = client_with (a->endpoint, a->id);
    ferrule_client = f;
    import_arg_t arg = { "bencha", rts, ats };
    import_all (f, ids, n, &arg);
    load_result_t r;
    if (touch_all (f, "token", ids, n, 64, &r) != n)     /* loads every one into its worker's cache */
        die ("(a) %swarm-up: %llu of %zu token requests failed (%s)", tag, (unsigned long long) (n - r.ok), n,
             r.first_error);
    size_t ferrule_reply = r.reply_bytes, request = r.request_bytes;

    /* the echo's links are Ferrule's (CURVE, or plaintext): the comparison is of what Ferrule
     * adds, not of the crypto */
    echo_t echo;
    echo_start (&echo, a->nworkers, (int) opt.token_bytes, !a->id->plaintext);
    load_t *e = client_with (echo.frontend, &echo.client);
    touch_all (e, "token", ids, n, 64, &r);
    size_t echo_reply = r.reply_bytes;
    say ("(a) %srequest body %zu bytes; reply body %zu bytes (Ferrule), %zu bytes (echo)", tag, request,
         ferrule_reply, echo_reply);
    if (echo_reply != ferrule_reply)
        note ("(a) %sthe echo reply is %zu bytes, Ferrule's %zu", tag, echo_reply, ferrule_reply);

    side_t sf = { .broker = a->broker, .nworkers = a->nworkers }, se = { .broker = echo.broker, .nworkers = echo.nworkers };
    memcpy (sf.workers, a->workers, (size_t) a->nworkers * sizeof *sf.workers);
    memcpy (se.workers, echo.workers, sizeof se.workers);

    uint64_t served_before = sf_served;
    /* a short run of each first, so that neither is measured cold */
    closed_rate (f, ids, n, (int) opt.window_large, &r);
    closed_rate (e, ids, n, (int) opt.window_large, &r);

    int windows [2] = { (int) opt.window_small, (int) opt.window_large };
    double peak_f = 0, peak_e = 0;
    int reps = (int) opt.reps;
    for (int w = 0; w < 2; w++) {
        double *rf = calloc ((size_t) reps, sizeof *rf), *re = calloc ((size_t) reps, sizeof *re);
        for (int k = 0; k < reps; k++) {          /* alternated, so drift on a shared machine hits both */
            cpu_mark_t m = cpu_mark (&sf);
            rf [k] = closed_rate (f, ids, n, windows [w], &r);
            if (w == 1)
                cpu_add (&sf, &m, (double) r.ok);
            check_run (fmt ("(a) %sFerrule", tag), &r);
            m = cpu_mark (&se);
            re [k] = closed_rate (e, ids, n, windows [w], &r);
            if (w == 1)
                cpu_add (&se, &m, (double) r.ok);
            check_run (fmt ("(a) %secho", tag), &r);
            say ("(a) %s%d in flight, rep %d: Ferrule %.0f/s, echo %.0f/s", tag, windows [w], k + 1, rf [k], re [k]);
        }
        double mf = bench_median (rf, (size_t) reps), me = bench_median (re, (size_t) reps);
        if (mf > peak_f)
            peak_f = mf;
        if (me > peak_e)
            peak_e = me;
        double ratio = me > 0 ? mf / me : 0;
        row_add (fmt ("(a) %scache-hit token req/s, %d in flight", tag, windows [w]), fmt ("%.0f", mf), fmt ("echo %.0f", me),
                 fmt ("%.2f", ratio), fmt (">= %.1f x echo", TARGET_A_RATIO), verdict (ratio >= TARGET_A_RATIO));
        free (rf);
        free (re);
    }
    if (sf.requests > 0 && se.requests > 0 && sf.broker > 0) {
        double fc = (sf.broker_us + sf.workers_us) / sf.requests, ec = (se.broker_us + se.workers_us) / se.requests;
        row_add (fmt ("(a) %sbroker + worker CPU us per request, %d in flight", tag, windows [1]), fmt ("%.1f", fc),
                 fmt ("echo %.1f", ec), fmt ("%.2f", ec > 0 ? fc / ec : 0), fmt ("<= %.1f x echo", TARGET_A_CPU_RATIO),
                 verdict (ec > 0 && fc / ec <= TARGET_A_CPU_RATIO));
    }
    if (sf.requests > 0 && se.requests > 0 && sf.broker > 0)
        note ("(a) %sCPU per request at %d in flight (all threads, user + system): Ferrule broker %.1f us, workers %.1f us,"
              " client %.1f us; echo broker %.1f us, echo workers %.1f us, client %.1f us", tag, windows [1],
              sf.broker_us / sf.requests, sf.workers_us / sf.requests, sf.client_us / sf.requests,
              se.broker_us / se.requests, se.workers_us / se.requests, se.client_us / se.requests);

    latency_row (f, e, &sf, &se, ids, n, peak_f / 2, peak_e / 2, tag, "each at half its peak", 0);
    latency_row (f, e, &sf, &se, ids, n, peak_f / 2, peak_f / 2, tag,
                 fmt ("both at Ferrule's half peak, %.0f req/s", peak_f / 2), 1);
    latency_row (f, e, &sf, &se, ids, n, 1000, 1000, tag, "both at 1000 req/s", 0);
    note ("(a) %s%d client sockets; request body %zu B, reply body %zu B (access tokens of %lld B); half peak: Ferrule"
          " %.0f req/s, echo %.0f req/s; latency from each request's scheduled send time", tag, (int) opt.sockets, request,
          ferrule_reply, (long long) opt.token_bytes, peak_f / 2, peak_e / 2);
    say ("(a) %sFerrule answered %llu token requests since the warm-up started", tag,
         (unsigned long long) (sf_served - served_before));
    load_destroy (&e);
    echo_stop (&echo);
    load_destroy (&f);
    free_strings (ids, n);
    free_strings (rts, n);
    free_strings (ats, n);
}

/* (a) over CURVE with the audit log on, as deployed; then, when scripts/bench started one, over
 * plaintext (a broker with the audit log off and workers of its own), each next to an echo over
 * the same links: issue 10 asks for both rows side by side, the targets holding for both. */
static void
scenario_a (void)
{
    a_side_t curve = { "", opt.broker, &ferrule_id, (pid_t) opt.broker_pid, worker_pid, nworkers };
    scenario_a_side (&curve);
    if (!opt.plain_broker) {
        note ("(a) plaintext rows skipped: no --plain-broker (scripts/bench starts one)");
        return;
    }
    a_side_t plain = { "plaintext: ", opt.plain_broker, &plain_id, (pid_t) opt.plain_broker_pid, plain_worker_pid,
                       nplain_workers };
    scenario_a_side (&plain);
}

/* ---- (f) isolation: one row locked, and the database stalled ---- */

/* What runs beside the paced cache hits of (f): a session of its own that holds one row's lock
 * while requests for that integration keep the worker claiming it; or the whole PostgreSQL
 * server stopped (SIGSTOP) while refreshes are asked for. */
typedef struct {
    int stall;                      /* 0: lock a row; 1: stop the workers' backends */
    const char *locked_id;
    char **refresh_ids;             /* the stall's refreshes */
    size_t nrefresh;
    int64_t hold_ms;
    uint64_t refresh_ok, refresh_retry, refresh_other;
    char first_other [160];
    pthread_mutex_t lock;
    int started;
} disturb_t;

static void *
disturb_main (void *arg)
{
    disturb_t *d = arg;
    PGconn *c = PQconnectdb (opt.database_url);
    if (PQstatus (c) != CONNECTION_OK)
        die ("(f): could not connect to the database: %s", PQerrorMessage (c));
    load_t *l = client (opt.broker);
    pid_t pids [64];
    int npids = 0;
    if (!d->stall) {
        PQclear (PQexec (c, "BEGIN"));
        const char *v [] = { d->locked_id };
        PGresult *r = PQexecParams (c, "SELECT 1 FROM integrations WHERE id = $1 FOR UPDATE", 1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus (r) != PGRES_TUPLES_OK || PQntuples (r) != 1)
            die ("(f): could not lock \"%s\"", d->locked_id);
        PQclear (r);
    }
    else {
        /* the whole server: every process of it (the postmaster too, so that no new connection
         * is answered either), as a machine that stalls */
        PGresult *r = PQexec (c, "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid ()");
        for (int i = 0; i < PQntuples (r) && npids < 63; i++)
            pids [npids++] = (pid_t) atoi (PQgetvalue (r, i, 0));
        PQclear (r);
        r = PQexec (c, "SELECT current_setting ('data_directory')");
        if (PQresultStatus (r) == PGRES_TUPLES_OK && PQntuples (r) == 1) {
            char path [1024];
            snprintf (path, sizeof path, "%s/postmaster.pid", PQgetvalue (r, 0, 0));
            FILE *f = fopen (path, "r");
            long pm = 0;
            if (f && fscanf (f, "%ld", &pm) == 1 && pm > 1)
                pids [npids++] = (pid_t) pm;
            if (f)
                fclose (f);
        }
        PQclear (r);
        if (npids < 2)
            die ("(f): could not find the PostgreSQL processes to stop");
        for (int i = 0; i < npids; i++)
            kill (pids [i], SIGSTOP);
    }
    pthread_mutex_lock (&d->lock);
    d->started = 1;
    pthread_mutex_unlock (&d->lock);
    int64_t until = bench_now_us () + d->hold_ms * 1000;
    size_t k = 0;
    while (bench_now_us () < until) {
        /* the locked one: forced refreshes keep its worker claiming the row. The stall: every
         * refresh asked for while the database does not answer. */
        char *one [1] = { d->stall ? d->refresh_ids [k++ % d->nrefresh] : (char *) d->locked_id };
        load_spec_t spec = { .op = "refresh", .ids = one, .nids = 1, .window = 1, .max_requests = 1,
                             .deadline_ms = 5000 };
        load_result_t r;
        load_run (l, &spec, &r);
        usleep (d->stall ? 50000 : 200000);
    }
    if (!d->stall)
        PQclear (PQexec (c, "COMMIT"));
    else
        for (int i = 0; i < npids; i++)
            kill (pids [i], SIGCONT);
    load_destroy (&l);
    PQfinish (c);
    return NULL;
}

/* Paced cache hits at rate while d runs; the hits' p99 and how many were answered in time. */
static void
disturbed_run (load_t *f, char **ids, size_t n, double rate, int64_t duration_ms, disturb_t *d, double *p99,
               uint64_t *sent, uint64_t *ok_in_time)
{
    pthread_t t;
    if (d) {
        pthread_mutex_init (&d->lock, NULL);
        d->started = 0;
        if (pthread_create (&t, NULL, disturb_main, d) != 0)
            die ("(f): could not start a thread");
        for (;;) {                          /* the hits start once the row is locked / the database stopped */
            pthread_mutex_lock (&d->lock);
            int s = d->started;
            pthread_mutex_unlock (&d->lock);
            if (s)
                break;
            usleep (1000);
        }
    }
    load_spec_t spec = { .op = "token", .ids = ids, .nids = n, .rate = rate, .duration_ms = duration_ms,
                         .deadline_ms = 5000, .keep_latencies = 1 };
    load_result_t r;
    load_run (f, &spec, &r);
    if (d) {
        pthread_join (t, NULL);
        pthread_mutex_destroy (&d->lock);
    }
    *p99 = r.p99_us;
    *sent = r.sent;
    *ok_in_time = r.ok;               /* answered ok (the load counts a request without an answer as lost) */
}

static void
scenario_f (void)
{
    enum { NR = 20 };
    size_t n = 2000;
    char **ids = make_ids ("bench-f:acct", n), **rids = make_ids ("bench-f:refresh", NR);
    char **rts = calloc (n, sizeof *rts), **ats = calloc (n, sizeof *ats);
    for (size_t i = 0; i < n; i++) {
        rts [i] = crypto_random_token (32);
        ats [i] = crypto_random_token (32);
    }
    fake_configure ("benchf", 0, "single_use");
    char **rrts = fake_grants ("benchf", NR), **lrt = fake_grants ("benchf", 1);
    char *locked [1] = { "bench-f:locked" };
    load_t *f = client (opt.broker);
    import_arg_t hits = { "benchf", rts, ats }, lk = { "benchf", lrt, NULL }, rf = { "benchf", rrts, NULL };
    import_all (f, ids, n, &hits);
    import_all (f, locked, 1, &lk);
    import_all (f, rids, NR, &rf);
    load_result_t r;
    touch_all (f, "token", ids, n, 64, &r);
    touch_all (f, "token", rids, NR, NR, &r);
    double rate = 2000;
    int reps = (int) opt.reps;
    int64_t lock_ms = 10000, stall_ms = 2000;
    double *free_p99 = calloc ((size_t) reps, sizeof (double)), *lock_p99 = calloc ((size_t) reps, sizeof (double));
    uint64_t sent, in_time, lock_sent = 0, lock_in_time = 0;
    for (int k = 0; k < reps; k++) {
        disturbed_run (f, ids, n, rate, lock_ms, NULL, &free_p99 [k], &sent, &in_time);
        disturb_t d = { .stall = 0, .locked_id = locked [0], .hold_ms = lock_ms };
        disturbed_run (f, ids, n, rate, lock_ms, &d, &lock_p99 [k], &sent, &in_time);
        lock_sent += sent;
        lock_in_time += in_time;
        say ("(f) rep %d: cache hits at %.0f/s, p99 %.0f us unlocked, %.0f us with a row locked %lld s", k + 1, rate,
             free_p99 [k], lock_p99 [k], (long long) lock_ms / 1000);
    }
    double fm = bench_median (free_p99, (size_t) reps), lm = bench_median (lock_p99, (size_t) reps);
    double ratio = fm > 0 ? lm / fm : 0;
    row_add (fmt ("(f) cache-hit p99 us, a row locked %lld s, %.0f req/s", (long long) lock_ms / 1000, rate),
             fmt ("%.0f", lm), fmt ("unlocked %.0f", fm), fmt ("%.2f", ratio),
             fmt ("<= %.1f x unlocked", TARGET_F_LOCK_RATIO), verdict (ratio <= TARGET_F_LOCK_RATIO));
    note ("(f) lock: %llu of %llu cache hits answered while the row was locked; forced refreshes of the "
          "locked integration every 200 ms kept its worker claiming it", (unsigned long long) lock_in_time,
          (unsigned long long) lock_sent);

    /* the stall: the workers' database sessions stopped for 2 s while refreshes are asked for */
    long long reuse_before = fake_stat ("benchf", "reuse_detections");
    disturb_t d = { .stall = 1, .refresh_ids = rids, .nrefresh = NR, .hold_ms = stall_ms };
    double stall_p99 = 0;
    disturbed_run (f, ids, n, rate, stall_ms + 1000, &d, &stall_p99, &sent, &in_time);
    /* afterwards every integration refreshed during the stall is served, its chain unbroken. A
     * client retries database_unavailable after its retry_after (1 s), as the C and Python
     * clients do: each one asked again until served, for up to 10 s */
    size_t served = 0;
    int served_flags [NR] = { 0 };
    for (int attempt = 0; attempt < 10 && served < NR; attempt++) {
        for (size_t i = 0; i < NR; i++) {
            if (served_flags [i])
                continue;
            char *one [1] = { rids [i] };
            load_result_t a;
            touch_all (f, "refresh", one, 1, 1, &a);
            if (a.ok == 1) {
                served_flags [i] = 1;
                served++;
            }
        }
        if (served < NR)
            sleep (1);
    }
    load_result_t after = { .ok = served };
    long long reuse = fake_stat ("benchf", "reuse_detections") - reuse_before;
    long long broken = db_int ("SELECT count(*) FROM integrations WHERE id LIKE 'bench-f:refresh%' AND status <> 'active'");
    int ok = in_time == sent && after.ok == NR && reuse == 0 && broken == 0;
    row_add (fmt ("(f) cache hits through a %lld s database stall, %.0f req/s", (long long) stall_ms / 1000, rate),
             fmt ("%llu of %llu", (unsigned long long) in_time, (unsigned long long) sent), fmt ("p99 %.0f us", stall_p99),
             "-", "all answered; refreshes served after", verdict (ok));
    note ("(f) stall: every PostgreSQL process (postmaster, backends, background processes) stopped (SIGSTOP) for %lld ms; "
          "the refreshes asked for meanwhile, asked again after it (retrying database_unavailable after 1 s, as the "
          "clients do) were served: %llu of %d; reuse detections at the provider %lld; integrations not active %lld",
          (long long) stall_ms, (unsigned long long) after.ok, NR, reuse, broken);
    free (free_p99);
    free (lock_p99);
    load_destroy (&f);
    free_strings (lrt, 1);
    free_strings (ids, n);
    free_strings (rids, NR);
    free_strings (rts, n);
    free_strings (ats, n);
    free_strings (rrts, NR);
}

/* ---- (b) committed refreshes next to pgbench, (c) with 100 ms provider latency ---- */

/* A copy of both tables, rows and all, in schema pgb, for pgbench. */
static void
pgbench_copy_tables (void)
{
    db_exec ("DROP SCHEMA IF EXISTS pgb CASCADE");
    db_exec ("CREATE SCHEMA pgb");
    db_exec ("CREATE TABLE pgb.integrations (LIKE public.integrations INCLUDING ALL)");
    db_exec ("INSERT INTO pgb.integrations SELECT * FROM public.integrations");
    db_exec ("CREATE TABLE pgb.token_chain (LIKE public.token_chain INCLUDING ALL)");
    db_exec ("CREATE SEQUENCE pgb.token_chain_seq OWNED BY pgb.token_chain.seq");
    db_exec ("ALTER TABLE pgb.token_chain ALTER COLUMN seq SET DEFAULT nextval('pgb.token_chain_seq')");
    db_exec ("INSERT INTO pgb.token_chain SELECT * FROM public.token_chain");
    db_exec ("SELECT setval('pgb.token_chain_seq', (SELECT COALESCE(max(seq), 0) + 1 FROM pgb.token_chain))");
    db_exec ("ALTER TABLE pgb.token_chain ADD FOREIGN KEY (integration_id) REFERENCES pgb.integrations (id)");
    db_exec ("CREATE TRIGGER token_chain_no_update BEFORE UPDATE OR DELETE ON pgb.token_chain"
             " FOR EACH ROW EXECUTE FUNCTION public.token_chain_append_only()");
    db_exec ("ANALYZE integrations");
    db_exec ("ANALYZE token_chain");
    db_exec ("ANALYZE pgb.integrations");
    db_exec ("ANALYZE pgb.token_chain");
}

/* Writes a pgbench script; returns its path (caller frees). */
static char *
pgbench_script (const char *name, const char *text)
{
    char *path = mem_alloc (strlen (opt.workdir) + strlen (name) + 2);
    sprintf (path, "%s/%s", opt.workdir, name);
    FILE *f = fopen (path, "w");
    if (!f || fputs (text, f) < 0 || fclose (f) != 0)
        die ("could not write \"%s\": %s", path, strerror (errno));
    return path;
}

/* pgbench's clients in (b): as many connections as the workers use for the refresh protocol
 * (each worker's batches go on its main connection and, by default, a second one), so that both
 * sides run at the same number of connections; one thread per worker. */
static int
pgbench_clients (void)
{
    return nworkers * (int) opt.worker_connections;
}

/* sql with each parameter $k replaced by args [k - 1] (caller frees with free ()): one of the
 * worker's statements as text that pgbench can run, its own :variables in the arguments. */
static char *
sql_bind (const char *sql, const char *const *args, int nargs)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&out, &len);
    if (!f)
        die ("out of memory");
    for (const char *p = sql; *p; p++) {
        if (*p == '$' && p [1] >= '1' && p [1] <= '9') {
            char *end;
            long k = strtol (p + 1, &end, 10);
            if (k < 1 || k > nargs)
                die ("the worker's statement has a parameter $%ld the benchmark does not bind", k);
            fputs (args [k - 1], f);
            p = end - 1;
        }
        else
            fputc (*p, f);
    }
    if (fclose (f) != 0)
        die ("out of memory");
    return out;
}

/* "ARRAY[e1, ..., ek]", element j being before, then j when numbered, then after (caller frees). */
static char *
sql_array (const char *before, int numbered, const char *after, size_t k)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&out, &len);
    if (!f)
        die ("out of memory");
    fputs ("ARRAY[", f);
    for (size_t j = 1; j <= k; j++) {
        fprintf (f, "%s%s", j > 1 ? ", " : "", before);
        if (numbered)
            fprintf (f, "%zu", j);
        fputs (after, f);
    }
    fputs ("]", f);
    if (fclose (f) != 0)
        die ("out of memory");
    return out;
}

/* The worker's own two statements (store_sql.h) as a pgbench script: k claims in one transaction
 * (one statement over arrays), then their k commits in another, as the worker's batches run them,
 * minus the provider call, the journal and the pipelining (pgbench waits for each statement). Each
 * pgbench client refreshes rows of its own, k neighbours at a time, so every compare-and-set
 * wins, as the worker's do here: the generations each commit expects are read back in the
 * statement ($2 bound to a subquery), a read the worker does not make, which errs against the
 * worker's statements. ct: a sealed token's bytes in hex. Returns the script's path (caller
 * frees). */
static char *
pgbench_statements (const char *prefix, size_t count, size_t k, const char *ct)
{
    size_t per = count / (size_t) pgbench_clients ();
    if (per < k)
        die ("(b) needs at least %zu integrations for pgbench's clients", k * (size_t) pgbench_clients ());
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&text, &len);
    if (!f)
        die ("out of memory");
    fprintf (f, "\\set b :client_id * %zu + random(0, %zu) * %zu\n", per, per / k - 1, k);
    for (size_t j = 1; j <= k; j++)
        fprintf (f, "\\set n%zu :b + %zu\n", j, j);
    char idbefore [160], sealedtext [256];
    snprintf (idbefore, sizeof idbefore, "('%s' || lpad(:n", prefix);
    snprintf (sealedtext, sizeof sealedtext, "'\\x%s'::bytea", ct);
    char *ids = sql_array (idbefore, 1, "::text, 6, '0'))", k);
    char *tokens = sql_array ("lpad(:n", 1, "::text, 32, '0')", k);     /* the leases': 32 hex digits */
    char *known = sql_array ("9223372036854775807", 0, "", k);
    char *zeros = sql_array ("0", 0, "", k);
    char *trues = sql_array ("true", 0, "", k);
    char *sealed = sql_array (sealedtext, 0, "", k);
    char *expiries = sql_array ("(extract(epoch FROM now())::bigint + 3600)", 0, "", k);
    char *fingerprints = sql_array ("'0123456789abcdef'", 0, "", k);
    char *scopes = sql_array ("NULL::text", 0, "", k);
    char *lifetimes = sql_array ("3600", 0, "", k);
    char *unusable = sql_array ("NULL::text", 0, "", k);
    char *api_bases = sql_array ("NULL::text", 0, "", k);      /* the answers carry none: the stored ones stay */
    char *faults = sql_array ("NULL::text", 0, "", k);         /* no fault in the answers */
    char *gens = NULL, *keys = NULL;
    if (asprintf (&gens, "ARRAY(SELECT g.generation FROM unnest(%s) WITH ORDINALITY AS q (qid, qord)"
                  " JOIN integrations g ON g.id = q.qid ORDER BY q.qord)", ids) < 0
        || asprintf (&keys, "ARRAY(SELECT g.key_id FROM unnest(%s) WITH ORDINALITY AS q (qid, qord)"
                     " JOIN integrations g ON g.id = q.qid ORDER BY q.qord)", ids) < 0)
        die ("out of memory");
    const char *claim_args [] = { ids, known, zeros, trues, "'pgbench'", tokens, "45000" };
    const char *commit_args [] = { ids, gens, keys, sealed, expiries, sealed, fingerprints, scopes, "'pgbench'", trues,
                                   tokens, lifetimes, unusable, api_bases, faults };
    char *claim = sql_bind (STORE_CLAIM_SQL, claim_args, 7);
    char *commit = sql_bind (STORE_COMMIT_SQL, commit_args, 15);
    /* each transaction as the worker's batches run it: generic plans first (store_sql.h) */
    fprintf (f, "BEGIN;\n" STORE_GENERIC_PLANS_SQL ";\n%s;\nCOMMIT;\nBEGIN;\n" STORE_GENERIC_PLANS_SQL ";\n%s;\nCOMMIT;\n",
             claim, commit);
    free (claim);
    free (commit);
    char *arrays [] = { ids, tokens, known, zeros, trues, sealed, expiries, fingerprints, scopes, lifetimes, unusable,
                        api_bases, faults, gens, keys };
    for (size_t i = 0; i < sizeof arrays / sizeof arrays [0]; i++)
        free (arrays [i]);
    if (fclose (f) != 0)
        die ("out of memory");
    char *path = pgbench_script (k == 1 ? "pgbench-statements.sql" : "pgbench-batched.sql", text);
    free (text);
    return path;
}

/* The pgbench scripts over the rows prefix000001 .. prefix<count>:
 * same_shape: the one transaction of the brief (BEGIN; SELECT ... FOR UPDATE; INSERT the chain row;
 *             UPDATE tokens and generation; COMMIT);
 * statements: the worker's own statements, one refresh per claim transaction and per commit;
 * batched:    the same, PGBENCH_BATCH refreshes per transaction (pgbench_statements). Neither copy
 *             has the events trigger: the worker's commits pay it. */
static void
pgbench_prepare (const char *prefix, size_t count, char **same_shape, char **statements, char **batched)
{
    pgbench_copy_tables ();
    /* the tokens as the worker stores them: nonce || ciphertext || tag of a 40-byte token */
    char ct [2 * (40 + CRYPTO_OVERHEAD) + 1];
    for (size_t i = 0; i < sizeof ct - 1; i++)
        ct [i] = "0123456789abcdef" [(i * 7 + 3) % 16];
    ct [sizeof ct - 1] = '\0';
    char id [160];
    snprintf (id, sizeof id, "'%s' || lpad(:n::text, 6, '0')", prefix);
    size_t cap = 16384;
    char *text = mem_alloc (cap);
    snprintf (text, cap,
              "\\set n random(1, %zu)\n"
              "BEGIN;\n"
              "SELECT " STORE_ROW_COLUMNS " FROM pgb.integrations WHERE id = %s FOR UPDATE;\n"
              "INSERT INTO pgb.token_chain (integration_id, generation, worker, outcome, refresh_fingerprint, rotated)"
              " VALUES (%s, 1, 'pgbench', 'refreshed', '0123456789abcdef', true);\n"
              "UPDATE pgb.integrations SET access_token = '\\x%s'::bytea, access_expires_at = now() + interval '1 hour',"
              " refresh_token = '\\x%s'::bytea, refresh_fingerprint = '0123456789abcdef', generation = generation + 1,"
              " lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL, last_refresh_at = now(),"
              " last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, updated_at = now()"
              " WHERE id = %s;\n"
              "COMMIT;\n",
              count, id, id, ct, ct, id);
    *same_shape = pgbench_script ("pgbench-same-shape.sql", text);
    mem_free (text);

    *statements = pgbench_statements (prefix, count, 1, ct);
    *batched = pgbench_statements (prefix, count, PGBENCH_BATCH, ct);
}

/* Transactions per second of one pgbench run, or -1. copy: the script names its tables without
 * a schema, and runs on the copy (schema pgb). */
static double
pgbench_run (const char *script, const char *mode, int seconds, int copy)
{
    char cmd [4096];
    snprintf (cmd, sizeof cmd, "%s'%s' -n -M %s -c %d -j %d -T %d -f '%s' '%s' 2>&1",
              copy ? "PGOPTIONS='-c search_path=pgb,public' " : "", opt.pgbench, mode, pgbench_clients (), nworkers,
              seconds, script, opt.database_url);
    FILE *p = popen (cmd, "r");
    if (!p)
        die ("could not run pgbench: %s", strerror (errno));
    char line [512];
    double tps = -1;
    long failed = 0;
    while (fgets (line, sizeof line, p)) {
        if (strncmp (line, "tps = ", 6) == 0 && tps < 0)
            tps = strtod (line + 6, NULL);
        if (strncmp (line, "number of failed transactions: ", 31) == 0)
            failed = strtol (line + 31, NULL, 10);
        if (strstr (line, "ERROR") || strstr (line, "error"))
            say ("pgbench: %s", line);
    }
    int rc = pclose (p);
    if (rc != 0 || tps < 0)
        die ("pgbench failed (exit %d)", rc);
    if (failed)
        note ("(b) pgbench reported %ld failed transactions", failed);
    return tps;
}

typedef struct {
    const char *label;
    const char *provider;
    const char *mode;
    char **ids;
    size_t n;
    double *rates;
    double *cold_rates;             /* (c): counted from the first send, the warm-up included */
} refresh_set_t;

/* n integrations with real grants at the fake provider, imported through the service. */
static void
refresh_set_prepare (load_t *l, refresh_set_t *s, const char *prefix, size_t n, int latency_ms)
{
    s->n = n;
    s->ids = make_ids (prefix, n);
    s->rates = calloc ((size_t) opt.reps, sizeof *s->rates);
    fake_configure (s->provider, latency_ms, s->mode);
    char **rts = fake_grants (s->provider, n);
    import_arg_t arg = { s->provider, rts, NULL };
    import_all (l, s->ids, n, &arg);
    free_strings (rts, n);
}

/* Forced refreshes with window in flight for the duration (after warmup_ms, which is not counted):
 * committed refreshes per second, as counted by the client (ok replies that refreshed, within
 * the duration); the database's count of chain rows is the check. *cold (may be NULL): the same
 * count over the duration from the first send, the warm-up included. */
static double
refresh_rate (load_t *l, refresh_set_t *s, int window, int64_t warmup_ms, double *cold, const char *what)
{
    load_spec_t spec = { .op = "refresh", .ids = s->ids, .nids = s->n, .window = window,
                         .duration_ms = opt.duration_ms, .warmup_ms = warmup_ms, .deadline_ms = 30000,
                         .keep_latencies = 1 };
    load_result_t r;
    long long before = committed_refreshes ();
    load_run (l, &spec, &r);
    long long after = committed_refreshes ();
    check_run (what, &r);
    if (r.refreshed != r.ok)
        note ("%s: %llu of %llu ok replies did not refresh", what, (unsigned long long) (r.ok - r.refreshed),
              (unsigned long long) r.ok);
    double rate = (double) r.ok_in_time / ((double) opt.duration_ms / 1000.0);
    if (cold)
        *cold = (double) r.ok_from_start / ((double) opt.duration_ms / 1000.0);
    say ("%s: %.0f refreshes/s (%llu replies ok in %.1f s, %lld chain rows committed; latency p50 %.1f ms,"
         " p99 %.1f ms)", what, rate, (unsigned long long) r.ok, r.elapsed_s, after - before, r.p50_us / 1000,
         r.p99_us / 1000);
    if (warmup_ms && cold)
        say ("%s: %.0f refreshes/s counted from the first send, the %lld ms warm-up included", what, *cold,
             (long long) warmup_ms);
    return rate;
}

static double b_rotating_rate = -1;

/* (b): both sets of forced refreshes and both pgbench scripts, alternated per repetition. */
static void
scenario_b (void)
{
    load_t *l = client (opt.broker);
    refresh_set_t sets [2] = {
        { "rotating refresh tokens", "benchb", "single_use", NULL, 0, NULL, NULL },
        { "reusable refresh tokens", "benchbr", "reusable", NULL, 0, NULL, NULL },
    };
    size_t n = (size_t) opt.b_integrations;
    refresh_set_prepare (l, &sets [0], "bench-b:", n, 0);
    refresh_set_prepare (l, &sets [1], "bench-br:", n, 0);
    char *script = NULL, *statements = NULL, *batched = NULL;
    pgbench_prepare ("bench-b:", n, &script, &statements, &batched);
    int seconds = (int) (opt.duration_ms + 999) / 1000;
    load_result_t r;
    for (int s = 0; s < 2; s++)                               /* warm: connections, caches, plans */
        touch_all (l, "refresh", sets [s].ids, n < 500 ? n : 500, (int) opt.b_window, &r);
    pgbench_run (script, "extended", 1, 0);
    pgbench_run (script, "prepared", 1, 0);
    pgbench_run (statements, "prepared", 1, 1);
    pgbench_run (batched, "prepared", 1, 1);
    int reps = (int) opt.reps;
    double *pg = calloc ((size_t) reps, sizeof *pg), *pgs = calloc ((size_t) reps, sizeof *pgs);
    double *pgp = calloc ((size_t) reps, sizeof *pgp), *pgbt = calloc ((size_t) reps, sizeof *pgbt);
    double *p99 = calloc ((size_t) reps, sizeof *p99), *p50 = calloc ((size_t) reps, sizeof *p50), seen = 0;
    double *within = calloc ((size_t) reps, sizeof *within);
    int windows = 0;
    double batches [4] = { 0 };       /* the workers' claim and commit batches, as in window_hist_t */
    long long conn0 = fake_connections ();
    long long calls0 = fake_stat (sets [0].provider, "refresh_calls") + fake_stat (sets [1].provider, "refresh_calls");
    for (int k = 0; k < reps; k++) {
        for (int s = 0; s < 2; s++) {
            window_hist_t before, after;
            db_exec ("CHECKPOINT");           /* the last run's dirty pages are not flushed on this one's time */
            int scraped = s == 0 && window_scrape (&before) == 0;
            sets [s].rates [k] = refresh_rate (l, &sets [s], (int) opt.b_window, 0, NULL, fmt ("(b) %s, rep %d", sets [s].label, k + 1));
            if (scraped && window_scrape (&after) == 0) {
                /* (g): only rotating refreshes are journaled */
                double n99 = 0, n50 = 0;
                for (int b = 0; b < 4; b++)
                    batches [b] += after.batch [b] - before.batch [b];
                p99 [windows] = window_quantile_ms (&before, &after, 0.99, &n99);
                p50 [windows] = window_quantile_ms (&before, &after, 0.50, &n50);
                within [windows] = window_share_within (&before, &after, TARGET_G_P99_MS);
                if (p99 [windows] >= 0) {
                    say ("(g) rep %d: journal window p50 <= %.2f ms, p99 <= %.2f ms, %.2f %% within %.0f ms over %.0f"
                         " rotations", k + 1, p50 [windows], p99 [windows], within [windows] * 100, TARGET_G_P99_MS, n99);
                    seen += n99;
                    windows++;
                }
            }
        }
        db_exec ("CHECKPOINT");
        pg [k] = pgbench_run (script, "extended", seconds, 0);
        db_exec ("CHECKPOINT");
        pgp [k] = pgbench_run (script, "prepared", seconds, 0);
        db_exec ("CHECKPOINT");
        pgs [k] = pgbench_run (statements, "prepared", seconds, 1);
        db_exec ("CHECKPOINT");
        pgbt [k] = PGBENCH_BATCH * pgbench_run (batched, "prepared", seconds, 1);
        say ("(b) pgbench, rep %d: %.0f same-shape transactions/s (%.0f prepared); %.0f refreshes/s with the worker's"
             " own statements, %.0f with %d per transaction", k + 1, pg [k], pgp [k], pgs [k], pgbt [k], PGBENCH_BATCH);
    }
    note_connections ("(b)", conn0, calls0, fake_connections (),
                      fake_stat (sets [0].provider, "refresh_calls") + fake_stat (sets [1].provider, "refresh_calls"));
    double pgm = bench_median (pg, (size_t) reps), pgsm = bench_median (pgs, (size_t) reps);
    for (int s = 0; s < 2; s++) {
        double m = bench_median (sets [s].rates, (size_t) reps);
        double ratio = pgm > 0 ? m / pgm : 0;
        if (s == 0)
            b_rotating_rate = m;
        row_add (fmt ("(b) refreshes/s, %s, 0 ms provider", sets [s].label), fmt ("%.0f", m), fmt ("pgbench %.0f", pgm),
                 fmt ("%.2f", ratio), fmt (">= %.1f x pgbench", TARGET_B_RATIO), verdict (ratio >= TARGET_B_RATIO));
    }
    /* the worker prepares its two statements once per session; the same-shape transaction with
     * prepared statements too is the stricter baseline */
    double pgpm = bench_median (pgp, (size_t) reps);
    for (int s = 0; s < 2; s++) {
        double m = bench_median (sets [s].rates, (size_t) reps);
        double ratio = pgpm > 0 ? m / pgpm : 0;
        row_add (fmt ("(b) refreshes/s, %s, vs pgbench -M prepared", sets [s].label), fmt ("%.0f", m),
                 fmt ("pgbench %.0f", pgpm), fmt ("%.2f", ratio), fmt (">= %.1f x pgbench", TARGET_B_RATIO),
                 verdict (ratio >= TARGET_B_RATIO));
    }
    /* the worker's statements run by pgbench alone, one refresh per transaction and a batch's
     * worth: how far its SQL could go with no CPU spent on the service's own processes */
    double pgbtm = bench_median (pgbt, (size_t) reps);
    row_add ("(b) diagnostic: pgbench, the worker's two statements, unbatched", "-", fmt ("pgbench %.0f", pgsm),
             fmt ("%.2f", pgpm > 0 ? pgsm / pgpm : 0), "(of prepared same-shape)", "-");
    row_add (fmt ("(b) diagnostic: the same, %d refreshes per transaction", PGBENCH_BATCH), "-", fmt ("pgbench %.0f", pgbtm),
             fmt ("%.2f", pgpm > 0 ? pgbtm / pgpm : 0), "(of prepared same-shape)", "-");
    if (windows > 0) {
        double m99 = bench_median (p99, (size_t) windows), m50 = bench_median (p50, (size_t) windows);
        row_add ("(g) provider answer to journal on disk, p99 (p50)", fmt ("<= %.2f ms (%.2f)", m99, m50), "-", "-",
                 fmt ("p99 <= %.0f ms", TARGET_G_P99_MS), verdict (m99 <= TARGET_G_P99_MS));
        note ("(g) from ferrule_worker_journal_window_seconds during (b)'s rotating runs: %.0f rotations; quantiles are "
              "the upper bounds of the histogram buckets holding them; on disk within %.0f ms: %.2f %% (median)", seen,
              TARGET_G_P99_MS, bench_median (within, (size_t) windows) * 100);
    }
    else
        note ("(g) not measured: no --worker-metrics, or no rotation was journaled");
    if (batches [1] > 0 && batches [3] > 0)
        note ("(b) the workers' batches during the rotating runs: %.1f claims and %.1f commits per transaction (means over"
              " %.0f and %.0f batches)", batches [0] / batches [1], batches [2] / batches [3], batches [1], batches [3]);
    free (p99);
    free (p50);
    free (within);
    note ("(b) %lld forced refreshes in flight over %zu integrations per set; pgbench -M extended (and -M prepared)"
          " -c %d -j %d -T %d (the workers' connections for refreshes: %lld each), same-shape transaction on a copy of the"
          " tables (schema pgb); the diagnostic rows run the worker's own claim and commit statements on that copy with"
          " -M prepared, each client on rows of its own", (long long) opt.b_window, n, pgbench_clients (), nworkers, seconds,
          (long long) opt.worker_connections);
    for (int s = 0; s < 2; s++) {
        free_strings (sets [s].ids, n);
        free (sets [s].rates);
    }
    free (pg);
    free (pgs);
    free (pgp);
    free (pgbt);
    unlink (script);
    unlink (statements);
    unlink (batched);
    mem_free (script);
    mem_free (statements);
    mem_free (batched);
    load_destroy (&l);
}

/* (c)'s load with no Ferrule: c chains of a provider of their own (same latency and rotation),
 * refreshed by the benchmark itself straight at the fake provider, as many repetitions as (c)'s,
 * run right after them. The median rate, or -1 when it could not be measured. */
static double
scenario_c_direct (int c)
{
    const char *provider = "benchc-direct";
    fake_configure (provider, C_LATENCY_MS, "single_use");
    char **rts = fake_grants (provider, (size_t) c);
    int reps = (int) opt.reps;
    double *rates = calloc ((size_t) reps, sizeof *rates), *means = calloc ((size_t) reps, sizeof *means);
    int done = 0;
    uint64_t errors = 0;
    for (int k = 0; k < reps; k++) {
        direct_result_t r;
        if (direct_refresh_run (opt.fake_url, provider, rts, (size_t) c, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, C_WARMUP_MS,
                                opt.duration_ms, &r) != 0)
            break;
        say ("(c) the fake provider alone, rep %d: %.0f refreshes/s (%d / a cycle of %.2f ms; %.0f counted in the window);"
             " answers %.1f ms after their send: mean, p50 %.1f, p99 %.1f; %llu failed", k + 1, r.rate, c, r.cycle_ms,
             r.window_rate, r.mean_ms, r.p50_ms, r.p99_ms, (unsigned long long) r.errors);
        errors += r.errors;
        rates [done] = r.rate;
        means [done++] = r.mean_ms;
        /* each chain's last token is spent or in flight: the next repetition starts new chains */
        if (k + 1 < reps) {
            free_strings (rts, (size_t) c);
            rts = fake_grants (provider, (size_t) c);
        }
    }
    double m = done == reps ? bench_median (rates, (size_t) done) : -1;
    if (done == reps)
        note ("(c) the fake provider alone: %d chains refreshed by the benchmark straight over HTTP (HTTP Basic, as the"
              " workers), the same warm-up and duration; its answers came %.1f ms (median of the means) after their"
              " send, against the %d ms configured; the rate is %d chains / the mean time from one send of a chain to"
              " its next (counted in the window, chains that keep in step give a multiple of %d per window)%s", c,
              bench_median (means, (size_t) done), C_LATENCY_MS, c, c,
              errors ? fmt ("; %llu calls failed", (unsigned long long) errors) : "");
    else
        note ("(c) the fake provider alone: not measured (a call could not be started)");
    free_strings (rts, (size_t) c);
    free (rates);
    free (means);
    return m;
}

/* (c): C forced refreshes in flight against a provider that takes C_LATENCY_MS. */
static void
scenario_c (void)
{
    load_t *l = client (opt.broker);
    int c = (int) opt.c_concurrency;
    size_t n = (size_t) (c * 10 > 1000 ? c * 10 : 1000);
    refresh_set_t set = { "100 ms provider", "benchc", "single_use", NULL, 0, NULL, NULL };
    refresh_set_prepare (l, &set, "bench-c:", n, C_LATENCY_MS);
    load_result_t r;
    touch_all (l, "refresh", set.ids, (size_t) c * 2, c, &r);
    int reps = (int) opt.reps;
    set.cold_rates = calloc ((size_t) reps, sizeof *set.cold_rates);
    long long conn0 = fake_connections (), calls0 = fake_stat (set.provider, "refresh_calls");
    double ph0 [PHASE_SERIES], ph1 [PHASE_SERIES];
    int phases = workers_sum (phase_series, PHASE_SERIES, ph0) == 0;
    for (int k = 0; k < reps; k++)
        set.rates [k] = refresh_rate (l, &set, c, C_WARMUP_MS, &set.cold_rates [k],
                                      fmt ("(c) %d concurrent, rep %d", c, k + 1));
    phases = phases && workers_sum (phase_series, PHASE_SERIES, ph1) == 0;
    note_connections ("(c)", conn0, calls0, fake_connections (), fake_stat (set.provider, "refresh_calls"));
    double direct = scenario_c_direct (c);
    if (phases && phase_mean (ph0, ph1, 1) > 0)
        note ("(c) where a refresh's time went, means from the workers' histograms over the repetitions (%.0f "
              "refreshes): claim (start to provider call) %.1f ms, provider call %.1f ms, commit (answer to committed) "
              "%.1f ms; a batch %.1f ms from sent to answered, %.1f claims and %.1f commits per transaction",
              ph1 [3] - ph0 [3], phase_mean (ph0, ph1, 0) * 1000, phase_mean (ph0, ph1, 1) * 1000,
              phase_mean (ph0, ph1, 2) * 1000, phase_mean (ph0, ph1, 3) * 1000, phase_mean (ph0, ph1, 4),
              phase_mean (ph0, ph1, 5));
    double m = bench_median (set.rates, (size_t) reps);
    double cold = bench_median (set.cold_rates, (size_t) reps);
    double ideal = (double) c / (C_LATENCY_MS / 1000.0);
    double target = TARGET_C_FRACTION * ideal;
    const char *bound = "";
    if (b_rotating_rate > 0 && b_rotating_rate < ideal) {
        target = TARGET_C_FRACTION * b_rotating_rate;
        bound = " (0.9 x (b))";
    }
    row_add (fmt ("(c) refreshes/s, %d ms provider, %d concurrent", C_LATENCY_MS, c), fmt ("%.0f", m),
             fmt ("ideal %.0f", ideal), fmt ("%.2f", m / ideal), fmt (">= %.0f%s", target, bound), verdict (m >= target));
    row_add (fmt ("(c) diagnostic: the same, counted from a cold start"), fmt ("%.0f", cold),
             fmt ("ideal %.0f", ideal), fmt ("%.2f", cold / ideal), "(no target)", "-");
    if (direct > 0) {
        row_add ("(c) diagnostic: the fake provider alone, the same load without Ferrule", fmt ("%.0f", direct),
                 fmt ("ideal %.0f", ideal), fmt ("%.2f", direct / ideal), "(no target: the test bed's ceiling)", "-");
        note ("(c) Ferrule's rate / the fake provider's alone: %.2f", m / direct);
    }
    note ("(c) %zu integrations; the fake provider saw at most %lld refresh calls at once", n,
          fake_stat (set.provider, "max_concurrent_refresh"));
    fake_configure_jitter (set.provider, C_LATENCY_MS, C_JITTER_MS, "single_use");
    for (int k = 0; k < reps; k++)
        set.rates [k] = refresh_rate (l, &set, c, C_WARMUP_MS, NULL,
                                      fmt ("(c) %d concurrent, provider %d +- %d ms, rep %d", c, C_LATENCY_MS,
                                           C_JITTER_MS, k + 1));
    fake_configure (set.provider, C_LATENCY_MS, "single_use");
    double jm = bench_median (set.rates, (size_t) reps);
    row_add (fmt ("(c) diagnostic: the same, provider latency %d to %d ms", C_LATENCY_MS - C_JITTER_MS,
                  C_LATENCY_MS + C_JITTER_MS), fmt ("%.0f", jm), fmt ("ideal %.0f", ideal), fmt ("%.2f", jm / ideal),
             "(no target)", "-");
    note ("(c) each repetition: %d refreshes sent at once, %d ms of warm-up not counted (the first answers"
          " come after the provider's %d ms), then %lld ms counted; the diagnostic row counts the %lld ms from the"
          " first send, as the runs before issue 10's sixth pass did", c, C_WARMUP_MS, C_LATENCY_MS, (long long) opt.duration_ms,
          (long long) opt.duration_ms);
    if (b_rotating_rate <= 0)
        note ("(c) (b) was not run: the target is %.1f x C / %d ms alone", TARGET_C_FRACTION, C_LATENCY_MS);
    free_strings (set.ids, n);
    free (set.rates);
    free (set.cold_rates);
    load_destroy (&l);
}

/* ---- (d) provider calls per expiry under a storm of token requests ---- */

/* (d): storms of token requests on one expired integration; provider calls per storm. */
static void
scenario_d (void)
{
    load_t *l = client (opt.broker);
    const char *provider = "benchd";
    fake_configure (provider, C_LATENCY_MS, "single_use");
    char **rts = fake_grants (provider, 1);
    char *ids [1] = { "bench-d:storm" };
    import_arg_t arg = { provider, rts, NULL };
    import_all (l, ids, 1, &arg);
    free_strings (rts, 1);
    load_result_t r;
    touch_all (l, "token", ids, 1, 1, &r);           /* the first token: one refresh */
    int reps = (int) opt.reps, exact = 0;
    double *calls = calloc ((size_t) reps, sizeof *calls);
    char list [256] = "";
    for (int k = 0; k < reps; k++) {
        /* counted from before the expiry: a sweep pass (every 30 s) that refreshes the expired
         * token in the 200 ms below makes the expiry's one call, and the storm then none (it
         * counted 0 once, in the storm's window alone) */
        long long before = fake_stat (provider, "refresh_calls");
        db_exec ("WITH u AS (UPDATE integrations SET access_expires_at = now() - interval '1 second'"
                 " WHERE id = 'bench-d:storm' RETURNING id) SELECT pg_notify('ferrule_integrations', 'bench ' || id) FROM u");
        usleep (200000);                               /* the notification reaches the workers */
        load_spec_t spec = { .op = "token", .ids = ids, .nids = 1, .window = (int) opt.storm,
                             .max_requests = (size_t) opt.storm, .deadline_ms = 10000 };
        load_run (l, &spec, &r);
        long long after = fake_stat (provider, "refresh_calls");
        calls [k] = (double) (after - before);
        exact += after - before == 1 && r.ok == (uint64_t) opt.storm;
        check_run ("(d) storm", &r);
        say ("(d) storm %d: %lld requests, %llu ok (%llu say refreshed), %lld provider calls, %.0f ms",
             k + 1, (long long) opt.storm, (unsigned long long) r.ok, (unsigned long long) r.refreshed, after - before,
             r.elapsed_s * 1000);
        size_t len = strlen (list);
        snprintf (list + len, sizeof list - len, "%s%lld", k ? "," : "", after - before);
    }
    double m = bench_median (calls, (size_t) reps);
    row_add (fmt ("(d) provider calls per expiry, %lld-request storm", (long long) opt.storm),
             fmt ("%.2f (%s)", m, list), "-", "-", "1.00 exactly", verdict (exact == reps));
    free (calls);
    load_destroy (&l);
}

/* ---- (e) worker memory per cached integration ---- */

/* Sends COPY data; any failure ends the run. */
static void
copy_put (const char *data, size_t len)
{
    if (PQputCopyData (db, data, (int) len) != 1)
        die ("database: %s", PQerrorMessage (db));
}

/* A bytea value in COPY text format: \\x and hex digits. */
static void
hex_append (mem_buf_t *b, const unsigned char *p, size_t n)
{
    static const char hex [] = "0123456789abcdef";
    char chunk [256];
    mem_buf_append (b, "\\\\x", 3);                    /* COPY text escapes the bytea's backslash */
    for (size_t i = 0; i < n; i += 128) {
        size_t k = n - i < 128 ? n - i : 128;
        for (size_t j = 0; j < k; j++) {
            chunk [2 * j] = hex [p [i + j] >> 4];
            chunk [2 * j + 1] = hex [p [i + j] & 15];
        }
        mem_buf_append (b, chunk, 2 * k);
    }
}

/* (e): 100k sealed integrations by COPY, each asked for once, worker RSS before and after. */
static void
scenario_e (void)
{
    size_t n = (size_t) opt.e_integrations;
    char err [256];
    crypto_keyring_t *kr = crypto_keyring_new (opt.key, NULL, err, sizeof err);
    if (!kr)
        die ("FERRULE_ENCRYPTION_KEY: %s", err);
    char **ids = make_ids ("bench-e:acct", n);
    int64_t t0 = bench_now_us ();
    time_t expires = time (NULL) + 86400;
    char when [64];
    strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S+00", gmtime (&expires));
    db_exec ("DELETE FROM integrations WHERE provider = 'benche'");
    PGresult *res = PQexec (db, "COPY integrations (id, provider, status, key_id, access_token, access_expires_at,"
                                " refresh_token, refresh_fingerprint, generation, scopes, last_refresh_at) FROM STDIN");
    if (PQresultStatus (res) != PGRES_COPY_IN)
        die ("database: %s", PQresultErrorMessage (res));
    PQclear (res);
    mem_buf_t line;
    mem_buf_init (&line, 1 << 20);
    for (size_t i = 0; i < n; i++) {
        char *at = crypto_random_token ((size_t) opt.token_bytes);
        at [opt.token_bytes] = '\0';
        char *rt = crypto_random_token (48);
        unsigned char *at_ct = NULL, *rt_ct = NULL;
        size_t at_len, rt_len;
        int32_t key_id;
        char fp [CRYPTO_FINGERPRINT_LEN + 1];
        if (crypto_seal (kr, ids [i], "access_token", at, &at_ct, &at_len, &key_id, err, sizeof err) != FR_OK
        ||  crypto_seal (kr, ids [i], "refresh_token", rt, &rt_ct, &rt_len, &key_id, err, sizeof err) != FR_OK)
            die ("could not seal a token: %s", err);
        crypto_fingerprint (kr, rt, fp);
        char head [256];
        snprintf (head, sizeof head, "%s\tbenche\tactive\t%d\t", ids [i], (int) key_id);
        mem_buf_append (&line, head, strlen (head));
        hex_append (&line, at_ct, at_len);
        snprintf (head, sizeof head, "\t%s\t", when);
        mem_buf_append (&line, head, strlen (head));
        hex_append (&line, rt_ct, rt_len);
        snprintf (head, sizeof head, "\t%s\t1\t{files.read,files.write}\tnow\n", fp);
        mem_buf_append (&line, head, strlen (head));
        if (line.len > (1 << 19)) {
            copy_put (line.data, line.len);
            mem_buf_reset (&line);
        }
        mem_free (at_ct);
        mem_free (rt_ct);
        mem_free_secret (&at);
        mem_free_secret (&rt);
    }
    if (line.len)
        copy_put (line.data, line.len);
    mem_buf_free (&line);
    if (PQputCopyEnd (db, NULL) != 1)
        die ("database: %s", PQerrorMessage (db));
    res = PQgetResult (db);
    if (PQresultStatus (res) != PGRES_COMMAND_OK)
        die ("database: %s", PQresultErrorMessage (res));
    PQclear (res);
    while ((res = PQgetResult (db)))
        PQclear (res);
    db_exec ("ANALYZE integrations");
    say ("(e) inserted %zu sealed integrations in %.1f s", n, (double) (bench_now_us () - t0) / 1e6);

    load_t *l = client (opt.broker);
    long before [MAX_WORKERS], after [MAX_WORKERS], sum_before = 0, sum_after = 0;
    for (int i = 0; i < nworkers; i++)
        sum_before += before [i] = rss_kib (worker_pid [i]);
    load_result_t r;
    t0 = bench_now_us ();
    touch_all (l, "token", ids, n, 256, &r);
    if (r.ok != n)
        note ("(e) %llu of %zu token requests failed (first: %s)", (unsigned long long) (n - r.ok), n, r.first_error);
    for (int i = 0; i < nworkers; i++)
        sum_after += after [i] = rss_kib (worker_pid [i]);
    double per = (double) (sum_after - sum_before) * 1024.0 / (double) n;
    say ("(e) %zu first token requests (each a database read) in %.1f s; worker RSS before %ld KiB, after %ld KiB",
         n, (double) (bench_now_us () - t0) / 1e6, sum_before, sum_after);
    char per_worker [256] = "";
    for (int i = 0; i < nworkers; i++) {
        size_t len = strlen (per_worker);
        snprintf (per_worker + len, sizeof per_worker - len, "%s%ld -> %ld KiB", i ? ", " : "", before [i], after [i]);
    }
    row_add (fmt ("(e) worker RSS per cached integration, %zuk", n / 1000), fmt ("%.0f B", per), "-", "-",
             fmt ("< %.0f B", TARGET_E_BYTES), verdict (per < TARGET_E_BYTES));
    note ("(e) %zu integrations, %lld-byte access tokens, ids of %zu characters; VmRSS of the workers: %s",
          n, (long long) opt.token_bytes, strlen (ids [0]), per_worker);
    load_destroy (&l);
    free_strings (ids, n);
    crypto_keyring_destroy (&kr);
}

/* ---- main ---- */

/* The first three fields of /proc/loadavg. */
static void
loadavg (char *out, size_t size)
{
    double a = 0, b = 0, c = 0;
    FILE *f = fopen ("/proc/loadavg", "r");
    if (f) {
        if (fscanf (f, "%lf %lf %lf", &a, &b, &c) != 3)
            a = b = c = 0;
        fclose (f);
    }
    snprintf (out, size, "%.2f %.2f %.2f", a, b, c);
}

/* The table (Markdown) and the notes, on stdout. */
static void
print_table (void)
{
    int w [6] = { 8, 7, 8, 5, 6, 6 };
    const char *head [6] = { "scenario", "Ferrule", "baseline", "ratio", "target", "result" };
    for (int i = 0; i < nrows; i++) {
        const char *cells [6] = { rows [i].scenario, rows [i].ferrule, rows [i].baseline, rows [i].ratio,
                                  rows [i].target, rows [i].verdict };
        for (int c = 0; c < 6; c++)
            if ((int) strlen (cells [c]) > w [c])
                w [c] = (int) strlen (cells [c]);
    }
    printf ("\n| %-*s | %*s | %*s | %*s | %-*s | %-*s |\n", w [0], head [0], w [1], head [1], w [2], head [2],
            w [3], head [3], w [4], head [4], w [5], head [5]);
    printf ("|");
    for (int c = 0; c < 6; c++) {
        putchar ('-');
        for (int k = 0; k < w [c]; k++)
            putchar ('-');
        putchar (c >= 1 && c <= 3 ? ':' : '-');
        putchar ('|');
    }
    printf ("\n");
    for (int i = 0; i < nrows; i++)
        printf ("| %-*s | %*s | %*s | %*s | %-*s | %-*s |\n", w [0], rows [i].scenario, w [1], rows [i].ferrule,
                w [2], rows [i].baseline, w [3], rows [i].ratio, w [4], rows [i].target, w [5], rows [i].verdict);
    if (notes [0])
        printf ("\n%s", notes);
}

int
main (int argc, char **argv)
{
    if (argc >= 3 && strcmp (argv [1], "--echo-broker") == 0)
        return echo_broker_main (atoi (argv [2]));
    if (argc >= 5 && strcmp (argv [1], "--echo-worker") == 0)
        return echo_worker_main (argv [2], argv [3], atoi (argv [4]));

    const config_entry_t table [] = {
        { "broker", NULL, CONFIG_STRING, &opt.broker, "tcp://127.0.0.1:5555", 0, 0, 0, "the broker's frontend" },
        { "database-url", NULL, CONFIG_STRING, &opt.database_url, NULL, 0, 0, 0, "the workers' database" },
        { "fake-url", NULL, CONFIG_STRING, &opt.fake_url, NULL, 0, 0, 0, "the fake provider, http://127.0.0.1:PORT" },
        { "broker-noaudit", NULL, CONFIG_STRING, &opt.broker_noaudit, NULL, 0, 0, 0, "(h) a second broker of the same workers, its audit log off" },
        { "broker-pid", NULL, CONFIG_INT, &opt.broker_pid, "0", 0, 4194304, 0, "pid of the broker, for (a)'s CPU accounting" },
        { "plain-broker", NULL, CONFIG_STRING, &opt.plain_broker, NULL, 0, 0, 0, "(a) a plaintext broker (audit log off) of workers of its own, for (a)'s plaintext rows" },
        { "plain-broker-pid", NULL, CONFIG_INT, &opt.plain_broker_pid, "0", 0, 4194304, 0, "pid of the plaintext broker" },
        { "plain-worker-pids", NULL, CONFIG_STRING, &opt.plain_worker_pids, NULL, 0, 0, 0, "comma-separated pids of the plaintext broker's workers" },
        { "worker-pids", NULL, CONFIG_STRING, &opt.worker_pids, NULL, 0, 0, 0, "comma-separated pids of the workers" },
        { "worker-metrics", NULL, CONFIG_STRING, &opt.worker_metrics, NULL, 0, 0, 0, "comma-separated /metrics URLs of the workers, for (g)" },
        { "pgbench", NULL, CONFIG_STRING, &opt.pgbench, "/usr/lib/postgresql/15/bin/pgbench", 0, 0, 0, "pgbench to run" },
        { "scenarios", NULL, CONFIG_STRING, &opt.scenarios, "ahfdbce", 0, 0, 0, "which of a b c d e f h to run" },
        { "workdir", NULL, CONFIG_STRING, &opt.workdir, "/tmp", 0, 0, 0, "where pgbench's script is written" },
        { "latency-dump", NULL, CONFIG_STRING, &opt.latency_dump, NULL, 0, 0, 0, "(a) append every paced latency here: run scheduled_us latency_us" },
        { "encryption-key", "FERRULE_ENCRYPTION_KEY", CONFIG_STRING, &opt.key, NULL, 0, 0, 1, "the workers' key, for (e)" },
        { "reps", NULL, CONFIG_INT, &opt.reps, "5", 1, 100, 0, "repetitions of each measurement (the median is reported)" },
        { "duration-ms", NULL, CONFIG_INT, &opt.duration_ms, "2000", 200, 60000, 0, "length of one measurement" },
        { "sockets", NULL, CONFIG_INT, &opt.sockets, "4", 1, 64, 0, "client DEALER sockets" },
        { "window-small", NULL, CONFIG_INT, &opt.window_small, "64", 1, 10000, 0, "(a) requests in flight, first peak" },
        { "window-large", NULL, CONFIG_INT, &opt.window_large, "256", 1, 10000, 0, "(a) requests in flight, second peak" },
        { "a-integrations", NULL, CONFIG_INT, &opt.a_integrations, "1000", 1, 1000000, 0, "(a) integrations cycled through" },
        { "token-bytes", NULL, CONFIG_INT, &opt.token_bytes, "120", 16, 4096, 0, "(a), (e) access token length" },
        { "b-window", NULL, CONFIG_INT, &opt.b_window, "64", 1, 10000, 0, "(b) refreshes in flight" },
        { "worker-connections", NULL, CONFIG_INT, &opt.worker_connections, "2", 1, 8, 0,
          "(b) database connections each worker sends refreshes on (2 with FERRULE_DB_BATCH_CONNECTION=1, "
          "the default; 1 with 0); pgbench runs with as many in all" },
        { "b-integrations", NULL, CONFIG_INT, &opt.b_integrations, "2000", 100, 1000000, 0, "(b) integrations per set" },
        { "c-concurrency", NULL, CONFIG_INT, &opt.c_concurrency, "100", 1, 10000, 0, "(c) refreshes in flight" },
        { "storm", NULL, CONFIG_INT, &opt.storm, "1000", 1, 100000, 0, "(d) requests in one storm" },
        { "e-integrations", NULL, CONFIG_INT, &opt.e_integrations, "100000", 1000, 10000000, 0, "(e) integrations cached" },
        CONFIG_END
    };
    char err [512];
    int rc = config_load (table, "ferrule-bench", argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0)
        die ("%s", err);
    if (!opt.database_url || !opt.fake_url || !opt.worker_pids)
        die ("--database-url, --fake-url and --worker-pids are required (scripts/bench passes them)");
    if (want ('e') && !opt.key)
        die ("(e) needs FERRULE_ENCRYPTION_KEY, the workers' key");
    for (char *save = NULL, *p = strtok_r (opt.worker_pids, ",", &save); p && nworkers < MAX_WORKERS;
         p = strtok_r (NULL, ",", &save))
        worker_pid [nworkers++] = (pid_t) atoi (p);
    for (int i = 0; i < nworkers; i++)
        if (rss_kib (worker_pid [i]) < 0)
            die ("no worker process %d", (int) worker_pid [i]);
    if (curve_identity_from_env (&ferrule_id, 1, err, sizeof err) != FR_OK)
        die ("%s", err);
    prctl (PR_SET_TIMERSLACK, 1UL);          /* paced sends wake on time, not 50 us late */
    signal (SIGPIPE, SIG_IGN);
    curl_global_init (CURL_GLOBAL_DEFAULT);
    curl = curl_easy_init ();
    db = PQconnectdb (opt.database_url);
    if (PQstatus (db) != CONNECTION_OK)
        die ("could not connect to the database: %s", PQerrorMessage (db));
    db_exec ("SET client_min_messages = warning");
    wait_ready (opt.broker, &ferrule_id, nworkers);
    if (opt.plain_broker) {
        for (char *save = NULL, *p = opt.plain_worker_pids ? strtok_r (opt.plain_worker_pids, ",", &save) : NULL;
             p && nplain_workers < MAX_WORKERS; p = strtok_r (NULL, ",", &save))
            plain_worker_pid [nplain_workers++] = (pid_t) atoi (p);
        wait_ready (opt.plain_broker, &plain_id, nplain_workers);
    }
    fake_configure ("bencha", 0, "single_use");
    fake_configure ("benche", 0, "single_use");

    char load_start [64];
    loadavg (load_start, sizeof load_start);
    int64_t t0 = bench_now_us ();
    /* (a) first: its caches are then small; (e) last: it leaves 100k rows and cache entries */
    if (want ('a'))
        scenario_a ();
    if (want ('h'))
        scenario_h ();
    if (want ('f'))
        scenario_f ();
    if (want ('d'))
        scenario_d ();
    if (want ('b'))
        scenario_b ();
    if (want ('c'))
        scenario_c ();
    if (want ('e'))
        scenario_e ();
    say ("done in %.0f s", (double) (bench_now_us () - t0) / 1e6);
    char load_end [64];
    loadavg (load_end, sizeof load_end);
    note ("load average (1, 5, 15 min) of the machine: %s at the start, %s at the end; %.0f s in all",
          load_start, load_end, (double) (bench_now_us () - t0) / 1e6);

    print_table ();
    PQfinish (db);
    curl_easy_cleanup (curl);
    curl_global_cleanup ();
    config_free (table);
    return 0;
}
