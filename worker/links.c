/* links.c - the worker's links to the brokers: one DEALER per broker (a DEALER connected to
 * several endpoints would round-robin its sends), brokers found by DNS followed as they come and
 * go, the HELLO/BYE heartbeat, requests read off a link and replies sent back on it */
#include "links.h"
#include "clock.h"
#include "frames.h"
#include "log.h"
#include "mem.h"
#include "once.h"
#include "resolve.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

struct link {
    void *socket;                   /* NULL once closed. A later link may take the slot: a reply
                                       owed on the closed one then goes to that link's broker, which
                                       drops it (its request numbers are random, and it sent none of
                                       this one's); the closed one's broker is gone anyway */
    int fd;                         /* the socket's ZMQ_FD */
    int drained;                    /* the last call on the socket was a receive that found nothing */
    char endpoint [256];
    int from_dns;                   /* index+1 of the dns+tcp:// name it was resolved from, 0 static */
    int seen;                       /* scratch for a resolution round */
    int64_t last_ping_ms;           /* the broker's last PING on it, or when it was opened */
    unsigned remade;                /* times made again with no PING since (links_check_silent) */
};

/* A broker PINGs every worker it knows once a heartbeat interval. A link with no PING for this
 * many intervals is made again: the broker counted this worker lost by now (three intervals), or
 * holds a connection the worker has since left (ZeroMQ connected again under the same id while
 * the broker still had the old one, and a broker refuses a second connection under a worker's
 * id: the new one would stay unheard until it broke). */
#define LINKS_SILENT_BEATS 5

static int link_connect (worker_t *w, size_t i, const char *endpoint, int from_dns, char *err, size_t errlen);

/* Opens a DEALER to one broker, in a free slot; returns the link index or -1. */
static int
link_open (worker_t *w, const char *endpoint, int from_dns, char *err, size_t errlen)
{
    size_t i;
    for (i = 0; i < w->nlinks; i++)
        if (!w->links [i].socket)
            break;
    if (i == w->nlinks) {
        if (w->nlinks == LINKS_MAX) {
            snprintf (err, errlen, "more than %d broker endpoints", LINKS_MAX);
            return -1;
        }
        w->nlinks++;
    }
    return link_connect (w, i, endpoint, from_dns, err, errlen);
}

/* Makes link i's DEALER to endpoint (the slot is free); returns i or -1. */
static int
link_connect (worker_t *w, size_t i, const char *endpoint, int from_dns, char *err, size_t errlen)
{
    link_t *l = &w->links [i];
    memset (l, 0, sizeof *l);
    l->last_ping_ms = clock_mono_ms ();
    l->socket = zmq_socket (w->ctx, ZMQ_DEALER);
    frames_socket_defaults (l->socket, (int) w->cfg.hwm, CODEC_MAX_BODY + 1024);
    zmq_setsockopt (l->socket, ZMQ_ROUTING_ID, w->cfg.worker_id, strlen (w->cfg.worker_id));
    if (curve_apply_client (l->socket, w->cfg.curve) != 0) {          /* pins the broker's key */
        snprintf (err, errlen, "could not set up CURVE for broker \"%s\": %s", endpoint, zmq_strerror (errno));
        zmq_close (l->socket);
        l->socket = NULL;
        return -1;
    }
    snprintf (l->endpoint, sizeof l->endpoint, "%s", endpoint);
    l->from_dns = from_dns;
    if (zmq_connect (l->socket, endpoint) != 0 || (l->fd = frames_socket_fd (l->socket)) < 0) {
        snprintf (err, errlen, "could not connect to broker \"%s\": %s", endpoint, zmq_strerror (errno));
        zmq_close (l->socket);
        l->socket = NULL;
        return -1;
    }
    log_info (NULL, NULL, "connected to broker \"%s\"", endpoint);
    return (int) i;
}


/* dns+tcp://NAME:PORT: a link to every address the d-th name resolved to, and none to an address
 * it no longer lists (a headless Kubernetes Service lists every broker pod). A failed lookup
 * changes nothing. */
static void
links_follow (worker_t *w, size_t d, const resolve_result_t *res)
{
    if (!res->ok) {
        log_warning (NULL, NULL, "could not resolve brokers \"%s\": %s; keeping the brokers already known",
                     w->dns [d], res->error);
        return;
    }
    for (size_t i = 0; i < w->nlinks; i++)
        w->links [i].seen = 0;
    for (size_t k = 0; k < res->n; k++) {
        int found = 0;
        for (size_t i = 0; i < w->nlinks; i++)
            if (w->links [i].socket && strcmp (w->links [i].endpoint, res->endpoints [k]) == 0) {
                w->links [i].seen = 1;
                found = 1;
            }
        if (!found) {
            char err [256];
            int li = link_open (w, res->endpoints [k], (int) d + 1, err, sizeof err);
            if (li < 0)
                log_warning (NULL, NULL, "%s", err);
            else {
                w->links [li].seen = 1;
                w->next_hello_ms = 0;       /* introduce ourselves to the new broker now */
            }
        }
    }
    for (size_t i = 0; i < w->nlinks; i++) {
        link_t *l = &w->links [i];
        if (l->socket && l->from_dns == (int) d + 1 && !l->seen) {
            log_info (NULL, NULL, "broker \"%s\" no longer listed under \"%s\"; disconnecting", l->endpoint, w->dns [d]);
            zmq_close (l->socket);
            l->socket = NULL;
        }
    }
}

/* A round of lookups' results, followed and freed. */
static void
links_follow_all (worker_t *w, resolve_result_t *results)
{
    for (size_t d = 0; d < w->ndns; d++)
        links_follow (w, d, &results [d]);
    resolve_results_free (&results, w->ndns);
}

fr_status_t
links_setup (worker_t *w, const char *backends, char *err, size_t errlen)
{
    /* a copy of the whole value: 64 endpoints of fully qualified names run past any fixed size */
    char *list = mem_strdup (backends);
    fr_status_t st = FR_CONFIGURATION;
    w->links = mem_alloc (LINKS_MAX * sizeof *w->links);
    for (char *save = NULL, *ep = strtok_r (list, ",", &save); ep; ep = strtok_r (NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        if (strncmp (ep, "dns+tcp://", 10) == 0) {
            if (w->ndns == LINKS_MAX_DNS_NAMES) {
                snprintf (err, errlen, "more than %d dns+tcp:// names in FERRULE_BROKER_BACKENDS", LINKS_MAX_DNS_NAMES);
                goto out;
            }
            if (!resolve_spec_valid (ep)) {
                snprintf (err, errlen, "\"%.200s\" in FERRULE_BROKER_BACKENDS is not dns+tcp://NAME:PORT", ep);
                goto out;
            }
            w->dns [w->ndns++] = mem_strdup (ep);
        }
        else
        if (link_open (w, ep, 0, err, errlen) < 0)
            goto out;
    }
    if (w->ndns) {
        /* the first lookup waits: nothing is served before the worker has its brokers */
        w->resolver = resolve_new (w->dns, w->ndns);
        links_follow_all (w, resolve_now (w->resolver));
        w->next_resolve_ms = clock_mono_ms () + w->cfg.broker_dns_refresh_ms;
    }
    if (w->nlinks == 0 && w->ndns == 0) {
        snprintf (err, errlen, "no broker endpoints: set FERRULE_BROKER_BACKENDS");
        goto out;
    }
    st = FR_OK;
out:
    mem_free (list);
    return st;
}

void
links_close_all (worker_t *w)
{
    for (size_t i = 0; w->links && i < w->nlinks; i++)
        if (w->links [i].socket) {
            /* let the goodbye and the last replies leave before the socket goes */
            int linger = 500;
            zmq_setsockopt (w->links [i].socket, ZMQ_LINGER, &linger, sizeof linger);
            zmq_close (w->links [i].socket);
            w->links [i].socket = NULL;
        }
    mem_free (w->links);
    w->links = NULL;
    resolve_destroy (&w->resolver);     /* a lookup under way ends on its own thread */
    for (size_t i = 0; i < w->ndns; i++)
        mem_free (w->dns [i]);
    w->ndns = 0;
}

void
links_follow_dns (worker_t *w, int64_t now)
{
    if (!w->ndns)
        return;
    resolve_result_t *results = resolve_take (w->resolver);
    if (results)
        links_follow_all (w, results);
    if (now >= w->next_resolve_ms) {
        /* on a thread: the system's resolver may take seconds, the loop serves meanwhile; a round
         * still under way is let be */
        if (resolve_start (w->resolver) < 0)
            log_warning (NULL, NULL, "could not start a thread to resolve the brokers' names; trying again in %lld ms",
                         (long long) w->cfg.broker_dns_refresh_ms);
        w->next_resolve_ms = now + w->cfg.broker_dns_refresh_ms;
    }
}

void
links_check_silent (worker_t *w, int64_t now)
{
    int64_t limit = LINKS_SILENT_BEATS * w->cfg.heartbeat_ms;
    for (size_t i = 0; i < w->nlinks; i++) {
        link_t *l = &w->links [i];
        if (!l->socket || now - l->last_ping_ms <= limit)
            continue;
        char endpoint [sizeof l->endpoint], err [256];
        int from_dns = l->from_dns;
        unsigned remade = l->remade + 1;
        snprintf (endpoint, sizeof endpoint, "%s", l->endpoint);
        if (remade == 1)
            log_warning (NULL, NULL, "broker \"%s\" has not PINGed this worker for %lld ms; connecting to it again",
                         endpoint, (long long) (now - l->last_ping_ms));
        else
        if (remade % 12 == 0)                       /* a broker that stays away is not logged every time */
            log_warning (NULL, NULL, "still no PING from broker \"%s\" after connecting to it again %u times; "
                         "trying again", endpoint, remade - 1);
        int zero = 0;
        zmq_setsockopt (l->socket, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close (l->socket);
        l->socket = NULL;
        /* the same slot: replies to requests read off the old connection go out on the new one,
         * where the broker still waits for them */
        if (link_connect (w, i, endpoint, from_dns, err, sizeof err) < 0)
            log_error (NULL, NULL, "%s; this worker no longer serves that broker until it restarts", err);
        else
            l->remade = remade;
        w->next_hello_ms = 0;               /* introduce ourselves on it now */
    }
}

size_t
links_pollitems (worker_t *w, zmq_pollitem_t *items, int *link_of, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nlinks && n < max; i++) {
        if (!w->links [i].socket)
            continue;
        link_of [n] = (int) i;
        /* A link read until it had nothing, and not written to since, is watched by its
         * descriptor alone, which then signals what arrives: zmq_poll asks each socket among its
         * items for ZMQ_EVENTS, two system calls, on every pass, and a worker has a link to every
         * broker. Any other is watched as a socket, because a call on it may have taken in the
         * signal of a message it did not read. */
        items [n].socket = w->links [i].drained ? NULL : w->links [i].socket;
        items [n].fd = w->links [i].drained ? w->links [i].fd : 0;
        items [n].events = ZMQ_POLLIN;
        items [n].revents = 0;
        n++;
    }
    return n;
}

/* The reply, and its outcome code ("ok" or the error's) for the broker's audit log. */
void
links_send (worker_t *w, const job_t *job, const char *body, size_t len, const char *outcome)
{
    if (job->once && job->link >= 0 && (size_t) job->link < w->nlinks)
        /* kept even when the link is closed: a copy on it reopened gets this answer */
        once_answered (w->once, job->link, job->client, job->client_len, job->seq,
                       &(once_reply_t) { body, len, outcome });
    if (job->link < 0 || (size_t) job->link >= w->nlinks || !w->links [job->link].socket)
        return;                 /* a background job, or the broker it came through is gone */
    const void *parts [] = { CODEC_WORKER_PROTOCOL, "REP", job->client, job->seq, body, outcome };
    size_t sizes [] = { 4, 3, job->client_len, 8, len, strlen (outcome) };
    w->links [job->link].drained = 0;
    if (frames_send (w->links [job->link].socket, parts, sizes, 6, ZMQ_DONTWAIT) != 0)
        log_warning (NULL, job->rid, "could not send a reply to broker \"%s\": %s",
                     w->links [job->link].endpoint, zmq_strerror (errno));
}

void
links_hello (worker_t *w, int draining)
{
    char body [256];
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_map (o, 4);
    codec_kv_str (o, "worker", w->cfg.worker_id);
    codec_kv_int (o, "pid", (int64_t) getpid ());
    codec_kv_int (o, "session", w->session);
    codec_kv_bool (o, "draining", draining);
    size_t len;
    const char *data = codec_builder_data (o, &len);
    memcpy (body, data, len < sizeof body ? len : sizeof body);
    for (size_t i = 0; i < w->nlinks; i++) {
        if (!w->links [i].socket)
            continue;
        const void *parts [] = { CODEC_WORKER_PROTOCOL, "HELLO", body };
        size_t sizes [] = { 4, 5, len };
        w->links [i].drained = 0;
        frames_send (w->links [i].socket, parts, sizes, 3, ZMQ_DONTWAIT);   /* best effort: next beat retries */
    }
}

void
links_bye (worker_t *w)
{
    for (size_t i = 0; i < w->nlinks; i++) {
        if (!w->links [i].socket)
            continue;
        const void *parts [] = { CODEC_WORKER_PROTOCOL, "BYE" };
        size_t sizes [] = { 4, 3 };
        frames_send (w->links [i].socket, parts, sizes, 2, ZMQ_DONTWAIT);
    }
}

fr_status_t
links_receive (worker_t *w, int li, int *taken, frames_t *frames, job_t *job)
{
    link_t *l = &w->links [li];
    frames_t f;
    fr_status_t st = FR_NOT_FOUND;
    memset (job, 0, sizeof *job);
    job->link = -1;
    frames->count = 0;
    *taken = 0;
    if (frames_recv (l->socket, &f, ZMQ_DONTWAIT) != 0) {
        l->drained = errno == EAGAIN;
        return FR_NOT_FOUND;
    }
    *taken = 1;
    l->drained = 0;
    if (!frames_is (&f, 0, CODEC_WORKER_PROTOCOL) || f.count < 2) {
        log_warning (NULL, NULL, "ignoring a malformed message from broker \"%s\"", l->endpoint);
        goto out;
    }
    if (frames_is (&f, 1, "PING")) {
        l->last_ping_ms = clock_mono_ms ();
        l->remade = 0;
        int64_t partitions = 0;
        codec_msg_t *ping = NULL;
        char err [128];
        if (f.total == 3 && codec_decode (frames_data (&f, 2), frames_size (&f, 2), &ping, err, sizeof err) == FR_OK
        &&  codec_get_int (codec_msg_root (ping), "partitions", &partitions) == 1)
            sweep_set_membership (w->sweep, w->cfg.worker_id, codec_get (codec_msg_root (ping), "workers"), partitions,
                                  clock_mono_ms ());
        codec_msg_destroy (&ping);
        goto out;
    }
    if (!frames_is (&f, 1, "REQ") || f.total != 6 || frames_size (&f, 2) > 255 || frames_size (&f, 3) != 8
    ||  frames_size (&f, 4) != 4) {
        log_warning (NULL, NULL, "ignoring a malformed message from broker \"%s\" (%d frames)", l->endpoint, f.total);
        goto out;
    }
    job->link = li;
    job->client_len = frames_size (&f, 2);
    memcpy (job->client, frames_data (&f, 2), job->client_len);
    memcpy (job->seq, frames_data (&f, 3), 8);
    job->deadline_ms = clock_mono_ms () + (int64_t) frames_get_u32 (frames_data (&f, 4));
    *frames = f;            /* the body stays in its frame: the caller reads it, then closes them */
    return FR_OK;
out:
    frames_close (&f);
    return st;
}
