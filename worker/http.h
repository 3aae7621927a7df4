/* http.h - provider calls through curl multi, driven by the worker's own poll loop, so a slow
 * provider never stalls other integrations on the same worker */
#ifndef FERRULE_HTTP_H
#define FERRULE_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

/* Calls in flight at once; more wait in http.c's queue, in order, each started as one ends. Each
 * call may hold two sockets (connecting, one per address family), and curl adds a call's new
 * sockets before it drops its old ones (the resolver's, when its connects begin): the room
 * left over covers that. */
#define HTTP_MAX_CALLS 500
/* The most sockets curl can ask the loop to watch at once: http_pollitems needs this many items. */
#define HTTP_MAX_SOCKETS 1024

typedef struct http_response {
    long   status;              /* HTTP status, 0 when no answer arrived */
    const char *body;           /* NUL-terminated, may contain anything */
    size_t body_len;
    const char *retry_after;    /* the Retry-After header or NULL */
    int    too_large;           /* the body passed the cap and was cut off */
    const char *error;          /* transport failure text (connect, timeout, TLS), NULL on an answer */
    int    timed_out;           /* the request was sent and the call ran out of time: the provider may have acted */
    int    not_started;         /* its time ran out in the queue: nothing was sent, the provider saw nothing */
} http_response_t;

typedef void (http_done_fn) (void *arg, const http_response_t *response);

/* Whether the provider may see a request twice. curl sends a request again, POSTs included, when
 * the kept connection it went out on dies before any answer; it never does on a new connection. */
typedef enum {
    HTTP_IDEMPOTENT = 0,        /* on a kept connection when there is one (a revocation, a refresh) */
    HTTP_AT_MOST_ONCE           /* on a new connection: a code exchange, which nothing sends again */
} http_send_t;

typedef struct http http_t;

/* max_idle: connections kept open after their call, for the next ones to the same host. */
http_t *http_new (int64_t connect_timeout_ms, int64_t total_timeout_ms, size_t max_body, long max_idle);
void http_destroy (http_t **h_p);
/* Starts a POST of an application/x-www-form-urlencoded body, or queues it while HTTP_MAX_CALLS
 * are in flight. authorization may be NULL. The total timeout counts from here: a queued call
 * gets what its wait left, and one left too little fails unsent (not_started). done is called
 * exactly once from http_process (never from inside http_post). 0 or -1. */
int http_post (http_t *h, const char *url, const char *body, const char *authorization, http_send_t send,
               http_done_fn *done, void *arg);
/* Adds the sockets curl waits on to items (at most max, which is never less than
 * HTTP_MAX_SOCKETS: a socket left out is not watched); returns how many were added. */
size_t http_pollitems (http_t *h, zmq_pollitem_t *items, size_t max);
/* How long the caller may sleep before curl needs a call, in ms (-1: no limit). */
long http_timeout_ms (http_t *h);
/* After poll: drives transfers on the ready sockets and timers, and completes finished ones. */
void http_process (http_t *h, const zmq_pollitem_t *items, size_t n);
/* Calls started (curl's), and calls waiting in the queue for one of them to end. */
size_t http_in_flight (const http_t *h);
size_t http_queued (const http_t *h);
/* A header line as curl hands it over (n bytes, not NUL-terminated, CRLF included): when it is
 * Retry-After, its value trimmed and cut to outlen - 1 bytes into out, and 1; else 0. */
int http_parse_retry_after (const char *line, size_t n, char *out, size_t outlen);
#endif
