/* health.c - liveness, readiness and metrics endpoints on libmicrohttpd's internal thread */
#include "health.h"
#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "mem.h"
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <microhttpd.h>

#define HEALTH_CONNECTION_LIMIT   64
#define HEALTH_CONNECTION_KEEP    48        /* past this many open connections, the oldest is
                                               dropped for each new one: idle sockets cannot
                                               take every slot and starve the probes */
#define HEALTH_CONNECTION_TIMEOUT 5         /* seconds a client may stay idle */
#define HEALTH_MEMORY_LIMIT       16384     /* bytes per connection: caps the request headers */

struct health_t {
    struct MHD_Daemon *daemon;
    metrics_t *metrics;                     /* borrowed */
    int port;
    _Atomic int64_t last_beat_ms;           /* clock_mono_ms of the loop's last beat */
    _Atomic int64_t stall_ms;
    pthread_mutex_t mutex;                  /* guards ready and why */
    bool ready;
    char why [HEALTH_WHY_MAX];
    char note [HEALTH_WHY_MAX];             /* guarded by mutex: shown by /readyz whatever ready is */
    /* open connections, touched only by the server's thread */
    struct health_conn {
        int fd;
        int64_t started_ms;
        bool used;
    } conns [HEALTH_CONNECTION_LIMIT + 8];
    size_t nconns;
};

static const char TEXT_PLAIN [] = "text/plain; charset=utf-8";
static const char METRICS_TYPE [] = "text/plain; version=0.0.4; charset=utf-8";

int
health_parse_bind (const char *bind, char *host, size_t hostlen, int *port)
{
    char addr [INET_ADDRSTRLEN];
    struct in_addr in;
    long value = 0;

    assert (host && port);
    if (!bind)
        return -1;
    const char *colon = strrchr (bind, ':');
    if (!colon)
        return -1;
    size_t len = (size_t) (colon - bind);
    if (len == 0 || len >= sizeof addr || len >= hostlen)
        return -1;
    memcpy (addr, bind, len);
    addr [len] = '\0';
    if (inet_pton (AF_INET, addr, &in) != 1)
        return -1;
    const char *p = colon + 1;
    if (*p == '\0' || strlen (p) > 5)
        return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (*p - '0');
    }
    if (value > 65535)
        return -1;
    memcpy (host, addr, len + 1);
    *port = (int) value;
    return 0;
}

void
health_mhd_log (void *cls, const char *fmt, va_list ap)
{
    char msg [512];
    if (log_min_level > LOG_DEBUG)
        return;
    vsnprintf (msg, sizeof msg, fmt, ap);
    size_t len = strlen (msg);
    while (len > 0 && (msg [len - 1] == '\n' || msg [len - 1] == '\r'))
        msg [--len] = '\0';
    log_debug (NULL, NULL, "HTTP server: %s", msg);
}

/* Queues a response whose body is text, or owned (from mem_alloc, handed to libmicrohttpd). */
static enum MHD_Result
reply (struct MHD_Connection *conn, unsigned int status, const char *type, const char *text,
       char *owned)
{
    struct MHD_Response *resp;
    const char *body = owned ? owned : text ? text : "";
    if (owned)
        resp = MHD_create_response_from_buffer_with_free_callback (strlen (body), owned, mem_free);
    else
        resp = MHD_create_response_from_buffer (strlen (body), (void *) body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        mem_free (owned);
        return MHD_NO;                      /* closes the connection */
    }
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header (resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response (conn, status, resp);
    MHD_destroy_response (resp);
    return ret;
}

static enum MHD_Result
answer_healthz (health_t *h, struct MHD_Connection *conn)
{
    char body [80];
    int64_t age = clock_mono_ms () - atomic_load_explicit (&h->last_beat_ms, memory_order_relaxed);
    if (age < atomic_load_explicit (&h->stall_ms, memory_order_relaxed))
        return reply (conn, MHD_HTTP_OK, TEXT_PLAIN, "ok\n", NULL);
    snprintf (body, sizeof body, "loop stalled for %" PRId64 " ms\n", age);
    return reply (conn, MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, body, NULL);
}

static enum MHD_Result
answer_readyz (health_t *h, struct MHD_Connection *conn)
{
    char body [2 * HEALTH_WHY_MAX + 32];
    pthread_mutex_lock (&h->mutex);
    bool ready = h->ready;
    int n = ready ? snprintf (body, sizeof body, "ready\n") : snprintf (body, sizeof body, "not ready: %s\n", h->why);
    if (h->note [0] && n > 0 && (size_t) n < sizeof body)
        snprintf (body + n, sizeof body - (size_t) n, "note: %s\n", h->note);
    pthread_mutex_unlock (&h->mutex);
    return reply (conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, body, NULL);
}

/* Tracks open connections; past HEALTH_CONNECTION_KEEP, a new one pushes out the oldest. */
static void
health_notify (void *cls, struct MHD_Connection *conn, void **socket_context,
               enum MHD_ConnectionNotificationCode code)
{
    health_t *h = cls;
    struct health_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (c) {
            c->used = false;
            h->nconns--;
        }
        *socket_context = NULL;
        return;
    }
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (h->nconns >= HEALTH_CONNECTION_KEEP) {
        struct health_conn *oldest = NULL;
        for (size_t i = 0; i < sizeof h->conns / sizeof h->conns [0]; i++)
            if (h->conns [i].used && (!oldest || h->conns [i].started_ms < oldest->started_ms))
                oldest = &h->conns [i];
        if (oldest) {
            /* the server sees the socket fail and closes it (CLOSED frees the slot) */
            shutdown (oldest->fd, SHUT_RDWR);
            oldest->started_ms = INT64_MAX;    /* not chosen twice before it closes */
        }
    }
    for (size_t i = 0; i < sizeof h->conns / sizeof h->conns [0]; i++)
        if (!h->conns [i].used) {
            h->conns [i].used = true;
            h->conns [i].fd = info ? info->connect_fd : -1;
            h->conns [i].started_ms = clock_mono_ms ();
            h->nconns++;
            *socket_context = &h->conns [i];
            return;
        }
}

static enum MHD_Result
answer_metrics (health_t *h, struct MHD_Connection *conn)
{
    if (!h->metrics)
        return reply (conn, MHD_HTTP_NOT_FOUND, TEXT_PLAIN, "no metrics in this process\n", NULL);
    char *text = metrics_render (h->metrics);
    if (!text)
        return reply (conn, MHD_HTTP_INTERNAL_SERVER_ERROR, TEXT_PLAIN,
                      "could not render metrics: too large\n", NULL);
    return reply (conn, MHD_HTTP_OK, METRICS_TYPE, NULL, text);
}

/* Answers every request on its first call, as soon as the headers are in: nothing here waits
 * for a body, and a request that announces one is refused before it is read. */
static enum MHD_Result
health_answer (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
               const char *version, const char *upload_data, size_t *upload_data_size,
               void **con_cls)
{
    static int answered;
    health_t *h = cls;

    if (*con_cls) {                         /* a body arrived after all: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    *con_cls = &answered;
    if (strcmp (method, MHD_HTTP_METHOD_GET) != 0 && strcmp (method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply (conn, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT_PLAIN, "method not allowed\n", NULL);
    const char *length = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                      MHD_HTTP_HEADER_CONTENT_LENGTH);
    if ((length && strcmp (length, "0") != 0)
    || MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return reply (conn, MHD_HTTP_CONTENT_TOO_LARGE, TEXT_PLAIN,
                      "request body not allowed\n", NULL);
    if (strcmp (url, "/healthz") == 0)
        return answer_healthz (h, conn);
    if (strcmp (url, "/readyz") == 0)
        return answer_readyz (h, conn);
    if (strcmp (url, "/metrics") == 0)
        return answer_metrics (h, conn);
    return reply (conn, MHD_HTTP_NOT_FOUND, TEXT_PLAIN, "not found\n", NULL);
}

health_t *
health_new (const char *bind, metrics_t *m, char *err, size_t errlen)
{
    health_t *h = NULL;
    char host [INET_ADDRSTRLEN];
    int port = 0;
    struct sockaddr_in sa;
    sigset_t old;

    assert (err && errlen > 0);
    err [0] = '\0';
    if (health_parse_bind (bind, host, sizeof host, &port) < 0) {
        snprintf (err, errlen, "invalid HTTP bind address \"%.100s\": expected an IPv4 address and "
                  "a port, such as \"0.0.0.0:9100\"", bind ? bind : "");
        goto fail;
    }
    h = mem_alloc (sizeof *h);
    h->metrics = m;
    atomic_init (&h->last_beat_ms, clock_mono_ms ());
    atomic_init (&h->stall_ms, HEALTH_DEFAULT_STALL_MS);
    pthread_mutex_init (&h->mutex, NULL);
    snprintf (h->why, sizeof h->why, "starting");

    memset (&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons ((uint16_t) port);
    if (inet_pton (AF_INET, host, &sa.sin_addr) != 1) {
        snprintf (err, errlen, "invalid HTTP bind address \"%.100s\"", bind);
        goto fail;
    }
    /* the server's thread takes no signals: they go to the loop's thread, whose handler sets the
     * flag it polls for */
    daemon_threads_begin (&old);
    errno = 0;
    h->daemon = MHD_start_daemon (MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                                  (uint16_t) port, NULL, NULL, health_answer, h,
                                  MHD_OPTION_EXTERNAL_LOGGER, health_mhd_log, (void *) NULL,
                                  MHD_OPTION_NOTIFY_CONNECTION, health_notify, (void *) h,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) HEALTH_CONNECTION_LIMIT,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) HEALTH_CONNECTION_TIMEOUT,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HEALTH_MEMORY_LIMIT,
                                  MHD_OPTION_END);
    int saved = errno;
    daemon_threads_done (&old);
    if (!h->daemon) {
        snprintf (err, errlen, "could not start the HTTP server on \"%s\": %s", bind,
                  saved ? strerror (saved) : "libmicrohttpd refused to start");
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    log_info (NULL, NULL, "serving /healthz, /readyz and /metrics on %s:%d", host, h->port);
    return h;
fail:
    health_destroy (&h);
    return NULL;
}

void
health_destroy (health_t **p)
{
    if (!p || !*p)
        return;
    health_t *h = *p;
    if (h->daemon)
        MHD_stop_daemon (h->daemon);
    pthread_mutex_destroy (&h->mutex);
    mem_free (h);
    *p = NULL;
}

int
health_port (const health_t *h)
{
    assert (h);
    return h->port;
}

void
health_beat (health_t *h)
{
    atomic_store_explicit (&h->last_beat_ms, clock_mono_ms (), memory_order_relaxed);
}

void
health_set_stall_ms (health_t *h, int64_t stall_ms)
{
    assert (h && stall_ms > 0);
    atomic_store_explicit (&h->stall_ms, stall_ms, memory_order_relaxed);
}

void
health_set_ready (health_t *h, int ready, const char *why)
{
    char copy [HEALTH_WHY_MAX];
    assert (h);
    /* one line, cut at HEALTH_WHY_MAX - 1 bytes but not inside a UTF-8 sequence */
    snprintf (copy, sizeof copy, "%s", why ? why : "");
    size_t len = strlen (copy);
    if (why && why [len] != '\0')
        while (len > 0 && ((unsigned char) why [len] & 0xc0) == 0x80)
            len--;
    copy [len] = '\0';
    for (char *c = copy; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    pthread_mutex_lock (&h->mutex);
    bool was = h->ready;
    h->ready = ready != 0;
    memcpy (h->why, copy, len + 1);
    pthread_mutex_unlock (&h->mutex);
    if (was != (ready != 0)) {
        if (ready)
            log_info (NULL, NULL, "process is ready");
        else
            log_info (NULL, NULL, "process is not ready: %s", copy);
    }
}

void
health_set_note (health_t *h, const char *note)
{
    assert (h);
    pthread_mutex_lock (&h->mutex);
    snprintf (h->note, sizeof h->note, "%s", note ? note : "");
    pthread_mutex_unlock (&h->mutex);
}
