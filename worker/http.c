/* http.c - curl multi with the socket interface: curl tells us which sockets to watch, the
 * worker's zmq_poll watches them next to its ZeroMQ sockets. */
#include "http.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include <curl/curl.h>
#include <string.h>
#include <strings.h>

#define HTTP_SPARE_CALLS 64          /* finished calls kept, with their curl handles, for the next */

_Static_assert (2 * HTTP_MAX_CALLS < HTTP_MAX_SOCKETS, "every call in flight may hold two sockets");

typedef struct {
    curl_socket_t fd;
    int what;                        /* CURL_POLL_IN/OUT/INOUT */
} http_socket_t;

typedef struct http_call {
    CURL *easy;
    struct curl_slist *headers;
    mem_buf_t body;
    int too_large;
    char retry_after [64];
    char error [CURL_ERROR_SIZE];
    char *post;                      /* owned copy of the request body (holds a secret) */
    http_done_fn *done;
    void *arg;
    int64_t posted_ms;               /* when http_post took it (monotonic): its timeout counts from here */
    struct http_call *prev, *next;   /* every call in flight, so shutdown can free them; or the queue */
} http_call_t;

struct http {
    CURLM *multi;
    int64_t connect_timeout_ms;
    int64_t total_timeout_ms;
    size_t max_body;
    http_socket_t sockets [HTTP_MAX_SOCKETS];
    size_t nsockets;
    int64_t timer_due_ms;            /* when curl's timer fires (monotonic); -1 none */
    size_t in_flight;
    http_call_t *calls;
    /* Calls waiting for one of the HTTP_MAX_CALLS in flight to end, oldest first (next only).
     * All have the same timeout, so the oldest is also the first whose time runs out. */
    http_call_t *queue, *queue_tail;
    size_t nqueued;
    int said_full;                   /* the socket table's overflow was logged */
    /* Finished calls with their curl handles reset, for the next ones: curl_easy_init and
     * curl_easy_cleanup allocate and free a few kilobytes each, once per provider call. */
    http_call_t *spare;
    size_t nspare;
};

static int
on_socket (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_t *h = userp;
    size_t i;
    for (i = 0; i < h->nsockets; i++)
        if (h->sockets [i].fd == fd)
            break;
    if (what == CURL_POLL_REMOVE) {
        if (i < h->nsockets)
            h->sockets [i] = h->sockets [--h->nsockets];
        return 0;
    }
    if (i == h->nsockets) {
        if (h->nsockets == HTTP_MAX_SOCKETS) {
            /* HTTP_MAX_CALLS keeps this from happening. Refusing the socket (-1) would make curl
             * fail every call in flight: it goes unwatched instead, and its call moves on
             * curl's timers alone */
            if (!h->said_full)
                log_error (NULL, NULL, "provider calls use more than %d sockets; the ones past them are not "
                           "watched, and their calls may time out", HTTP_MAX_SOCKETS);
            h->said_full = 1;
            return 0;
        }
        h->nsockets++;
    }
    h->sockets [i].fd = fd;
    h->sockets [i].what = what;
    return 0;
}

static int
on_timer (CURLM *multi, long timeout_ms, void *userp)
{
    http_t *h = userp;
    h->timer_due_ms = timeout_ms < 0 ? -1 : clock_mono_ms () + timeout_ms;
    return 0;
}

http_t *
http_new (int64_t connect_timeout_ms, int64_t total_timeout_ms, size_t max_body, long max_idle)
{
    http_t *h = mem_alloc (sizeof *h);
    h->multi = curl_multi_init ();
    h->connect_timeout_ms = connect_timeout_ms;
    h->total_timeout_ms = total_timeout_ms;
    h->max_body = max_body;
    h->timer_due_ms = -1;
    curl_multi_setopt (h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt (h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt (h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt (h->multi, CURLMOPT_TIMERDATA, h);
    /* curl's own rule keeps four idle connections per call still in progress: after a burst,
     * the call that ends last, alone, closes all but four, and the next burst connects (and
     * shakes hands over TLS) again for most of its calls. A fixed size keeps them. */
    curl_multi_setopt (h->multi, CURLMOPT_MAXCONNECTS, max_idle);
    return h;
}

/* What a call held for its request and answer (the request body holds a secret, the headers
 * the Authorization header); the curl handle stays. */
static void
http_call_clear (http_call_t *c)
{
    curl_slist_free_all (c->headers);
    c->headers = NULL;
    mem_buf_free (&c->body);
    mem_free_secret (&c->post);
}

static void
http_call_free (http_call_t *c)
{
    if (c->easy)
        curl_easy_cleanup (c->easy);
    http_call_clear (c);
    mem_free (c);
}

/* A finished call kept for the next one, its handle reset to curl's defaults (options, the
 * request's pointers and the error buffer forgotten), or freed when enough are kept. */
static void
http_call_done (http_t *h, http_call_t *c)
{
    if (h->nspare >= HTTP_SPARE_CALLS || !c->easy) {
        http_call_free (c);
        return;
    }
    http_call_clear (c);
    curl_easy_reset (c->easy);
    CURL *easy = c->easy;
    memset (c, 0, sizeof *c);
    c->easy = easy;
    c->next = h->spare;
    h->spare = c;
    h->nspare++;
}

/* A call ready for a request: a spare one, or a new one with its own handle; NULL if curl could
 * not make one. */
static http_call_t *
http_call_take (http_t *h)
{
    http_call_t *c = h->spare;
    if (c) {
        h->spare = c->next;
        h->nspare--;
        c->next = NULL;
        return c;
    }
    c = mem_alloc (sizeof *c);
    c->easy = curl_easy_init ();
    if (!c->easy) {
        mem_free (c);
        return NULL;
    }
    return c;
}

void
http_destroy (http_t **h_p)
{
    if (h_p && *h_p) {
        http_t *h = *h_p;
        /* abandon transfers still running: only at exit, after the drain gave up on them */
        while (h->calls) {
            http_call_t *c = h->calls;
            h->calls = c->next;
            curl_multi_remove_handle (h->multi, c->easy);
            http_call_free (c);
        }
        while (h->queue) {
            http_call_t *c = h->queue;
            h->queue = c->next;
            http_call_free (c);
        }
        while (h->spare) {
            http_call_t *c = h->spare;
            h->spare = c->next;
            http_call_free (c);
        }
        curl_multi_cleanup (h->multi);
        mem_free (h);
        *h_p = NULL;
    }
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *userp)
{
    http_call_t *c = userp;
    size_t n = size * nmemb;
    if (mem_buf_append (&c->body, data, n) != 0) {
        c->too_large = 1;
        return 0;               /* makes curl stop with CURLE_WRITE_ERROR */
    }
    return n;
}

int
http_parse_retry_after (const char *line, size_t n, char *out, size_t outlen)
{
    static const char name [] = "retry-after:";
    if (outlen == 0 || n < sizeof name || strncasecmp (line, name, sizeof name - 1) != 0)
        return 0;
    size_t start = sizeof name - 1;
    while (start < n && (line [start] == ' ' || line [start] == '\t'))
        start++;
    size_t end = n;
    while (end > start && (line [end - 1] == '\r' || line [end - 1] == '\n' || line [end - 1] == ' '))
        end--;
    size_t len = end - start < outlen - 1 ? end - start : outlen - 1;
    memcpy (out, line + start, len);
    out [len] = '\0';
    return 1;
}

static size_t
on_header (char *data, size_t size, size_t nitems, void *userp)
{
    http_call_t *c = userp;
    size_t n = size * nitems;
    http_parse_retry_after (data, n, c->retry_after, sizeof c->retry_after);
    return n;
}

/* The least time a queued call is started with: sent with less, it would more likely run out
 * after the provider acted on it (a rotation the worker never hears of) than be answered. */
static int64_t
http_min_left (const http_t *h)
{
    return h->total_timeout_ms / 10;
}

/* Hands a call to curl with left ms of its timeout; 0, or -1 when curl would not take it. */
static int
http_start (http_t *h, http_call_t *c, int64_t left)
{
    CURL *e = c->easy;
    curl_easy_setopt (e, CURLOPT_CONNECTTIMEOUT_MS, (long) (h->connect_timeout_ms < left ? h->connect_timeout_ms : left));
    curl_easy_setopt (e, CURLOPT_TIMEOUT_MS, (long) left);
    if (curl_multi_add_handle (h->multi, e) != CURLM_OK)
        return -1;
    c->prev = NULL;
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    h->in_flight++;
    /* start connecting now, not after the loop has worked through the rest of its batch */
    int running;
    curl_multi_socket_action (h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    return 0;
}

/* A queued call that is not made: its done learns that nothing was sent. */
static void
http_fail_unsent (http_t *h, http_call_t *c, const char *why)
{
    http_response_t r;
    memset (&r, 0, sizeof r);
    snprintf (c->error, sizeof c->error, "%s", why);
    r.body = "";
    r.error = c->error;
    r.not_started = 1;
    c->done (c->arg, &r);
    http_call_done (h, c);
}

/* Starts the queue's calls, oldest first, while fewer than HTTP_MAX_CALLS are in flight; fails
 * the ones whose wait left them less than http_min_left, unsent. */
static void
http_start_queued (http_t *h)
{
    while (h->queue) {
        http_call_t *c = h->queue;
        int64_t waited = clock_mono_ms () - c->posted_ms;
        int64_t left = h->total_timeout_ms - waited;
        if (left >= http_min_left (h) && h->in_flight >= HTTP_MAX_CALLS)
            break;
        h->queue = c->next;
        if (!h->queue)
            h->queue_tail = NULL;
        h->nqueued--;
        c->next = NULL;
        char why [CURL_ERROR_SIZE];
        if (left < http_min_left (h))
            snprintf (why, sizeof why, "it waited %lld of its %lld ms for one of the %d provider calls a worker "
                      "makes at once, too long to be made: nothing was sent", (long long) waited,
                      (long long) h->total_timeout_ms, HTTP_MAX_CALLS);
        else
        if (http_start (h, c, left) == 0)
            continue;
        else
            snprintf (why, sizeof why, "it could not be started: nothing was sent");
        http_fail_unsent (h, c, why);
    }
}

int
http_post (http_t *h, const char *url, const char *body, const char *authorization, http_send_t send,
           http_done_fn *done, void *arg)
{
    http_call_t *c = http_call_take (h);
    if (!c)
        return -1;
    c->posted_ms = clock_mono_ms ();
    mem_buf_init (&c->body, h->max_body);
    c->post = mem_strdup (body);
    c->done = done;
    c->arg = arg;
    c->headers = curl_slist_append (c->headers, "Content-Type: application/x-www-form-urlencoded");
    c->headers = curl_slist_append (c->headers, "Accept: application/json");
    c->headers = curl_slist_append (c->headers, "Expect:");
    if (authorization) {
        size_t len = strlen ("Authorization: ") + strlen (authorization) + 1;
        char *line = mem_alloc (len);
        snprintf (line, len, "Authorization: %s", authorization);
        c->headers = curl_slist_append (c->headers, line);
        mem_wipe (line, len);
        mem_free (line);
    }
    CURL *e = c->easy;
    curl_easy_setopt (e, CURLOPT_URL, url);
    curl_easy_setopt (e, CURLOPT_POSTFIELDS, c->post);
    curl_easy_setopt (e, CURLOPT_POSTFIELDSIZE, (long) strlen (c->post));
    curl_easy_setopt (e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt (e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt (e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt (e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt (e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt (e, CURLOPT_ERRORBUFFER, c->error);
    curl_easy_setopt (e, CURLOPT_PRIVATE, c);
    curl_easy_setopt (e, CURLOPT_NOSIGNAL, 1L);
    /* a token endpoint that redirects is misconfigured: following it would resend the secret */
    curl_easy_setopt (e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt (e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt (e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt (e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (e, CURLOPT_USERAGENT, "ferrule/0.1");
    curl_easy_setopt (e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) h->max_body);
    /* set on every call, the handle maybe a spare one's: a request the provider must see at most
     * once goes on a new connection, on which curl never sends it again (http_send_t) */
    curl_easy_setopt (e, CURLOPT_FRESH_CONNECT, send == HTTP_AT_MOST_ONCE ? 1L : 0L);
    if (h->in_flight < HTTP_MAX_CALLS && !h->queue) {
        if (http_start (h, c, h->total_timeout_ms) != 0) {
            http_call_done (h, c);
            return -1;
        }
        return 0;
    }
    /* behind the calls queued before it, whatever room there is: http_process starts them in order */
    if (h->queue_tail)
        h->queue_tail->next = c;
    else
        h->queue = c;
    h->queue_tail = c;
    h->nqueued++;
    return 0;
}

size_t
http_pollitems (http_t *h, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < h->nsockets && n < max; i++) {
        items [n].socket = NULL;
        items [n].fd = h->sockets [i].fd;
        items [n].events = (short) (((h->sockets [i].what & CURL_POLL_IN) ? ZMQ_POLLIN : 0)
                                  | ((h->sockets [i].what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
        items [n].revents = 0;
        n++;
    }
    return n;
}

long
http_timeout_ms (http_t *h)
{
    int64_t due = h->in_flight ? h->timer_due_ms : -1;
    if (h->queue) {
        /* when the oldest queued call would be left too little time to be started */
        int64_t expires = h->queue->posted_ms + h->total_timeout_ms - http_min_left (h) + 1;
        if (due < 0 || expires < due)
            due = expires;
    }
    if (due < 0)
        return -1;
    int64_t left = due - clock_mono_ms ();
    return left < 0 ? 0 : (long) left;
}

static void
http_complete (http_t *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read (h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        http_call_t *c = NULL;
        curl_easy_getinfo (e, CURLINFO_PRIVATE, (char **) &c);
        curl_multi_remove_handle (h->multi, e);
        h->in_flight--;
        if (c->prev)
            c->prev->next = c->next;
        else
            h->calls = c->next;
        if (c->next)
            c->next->prev = c->prev;

        http_response_t r;
        memset (&r, 0, sizeof r);
        curl_easy_getinfo (e, CURLINFO_RESPONSE_CODE, &r.status);
        mem_buf_append (&c->body, "", 0);      /* ensures a NUL-terminated buffer */
        r.body = c->body.data ? c->body.data : "";
        r.body_len = c->body.len;
        r.retry_after = c->retry_after [0] ? c->retry_after : NULL;
        r.too_large = c->too_large || cc == CURLE_FILESIZE_EXCEEDED;
        if (cc != CURLE_OK && !r.too_large) {
            r.status = 0;
            /* a call timed out before its request went out (connecting, resolving) is no call the
             * provider could have acted on: only one with request bytes sent says "timed out" */
            long sent = 0;
            curl_easy_getinfo (e, CURLINFO_REQUEST_SIZE, &sent);
            r.timed_out = cc == CURLE_OPERATION_TIMEDOUT && sent > 0;
            r.error = c->error [0] ? c->error : curl_easy_strerror (cc);
        }
        c->done (c->arg, &r);
        http_call_done (h, c);
    }
}

void
http_process (http_t *h, const zmq_pollitem_t *items, size_t n)
{
    int running;
    for (size_t i = 0; i < n; i++) {
        if (!items [i].revents)
            continue;
        int ev = ((items [i].revents & ZMQ_POLLIN) ? CURL_CSELECT_IN : 0)
               | ((items [i].revents & ZMQ_POLLOUT) ? CURL_CSELECT_OUT : 0)
               | ((items [i].revents & ZMQ_POLLERR) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action (h->multi, items [i].fd, ev, &running);
    }
    /* curl's timer drives connects, timeouts and newly added transfers */
    if (h->in_flight && h->timer_due_ms >= 0 && clock_mono_ms () >= h->timer_due_ms) {
        h->timer_due_ms = -1;
        curl_multi_socket_action (h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    if (h->in_flight || n)
        http_complete (h);
    /* the room the calls that ended made, and the queued calls whose time ran out */
    if (h->queue)
        http_start_queued (h);
}

size_t
http_in_flight (const http_t *h)
{
    return h->in_flight;
}

size_t
http_queued (const http_t *h)
{
    return h->nqueued;
}
