/* guard.c - per-connection byte budgets from TCP_INFO and a socket monitor (see guard.h) */
#include "guard.h"
#include "clock.h"
#include "frames.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <unistd.h>
#include <zmq.h>

#define GUARD_FRAME_OVERHEAD   64       /* ZMTP and CURVE framing per frame, rounded up */
#define GUARD_MESSAGE_SLACK    128      /* per message: a heartbeat ping answered meanwhile */
#define GUARD_HANDSHAKE        4096     /* greeting and CURVE handshake */
#define GUARD_CREDIT_MAX       65536    /* allowances given before they are checked against the wire */
#define GUARD_FRESH_US         100      /* events read this recently count as read now (guard_holds) */
#define GUARD_HELD_CUTS        64       /* connections cut for the unfinished total in one check */

typedef struct {
    int live;
    uint64_t delivered;                 /* payload plus allowances, never above what was consumed
                                           when last measured (guard_settle) */
    uint64_t credit;                    /* allowances given since that measure */
    uint64_t serial;                    /* the connection's number (guard_connection), 0: none seen */
    uint64_t heard;                     /* messages counted on its descriptor (guard_account) */
    uint64_t heard_checked;             /* heard at the last check that saw it change */
    int64_t quiet_since_ms;             /* then, or when its ACCEPTED event was read */
    uint64_t unsure_until;              /* a connection closed on this descriptor, its last messages
                                           perhaps unread: a message's descriptor names no sure
                                           connection until the drain numbered this (guard_check) */
    uint64_t sent;                      /* payload bytes of the messages sent to it (guard_sent) */
    uint64_t sent_checked;              /* sent at its last measure */
    uint64_t taken;                     /* bytes the kernel had taken from libzmq at that measure */
    int measured;                       /* taken is known */
    uint64_t unsent;                    /* at least this much of what was sent waits in libzmq */
    uint64_t held;                      /* bytes of no complete message yet, at the last check */
} guard_conn_t;

struct guard {
    char name [32];
    void *socket;                       /* the socket watched */
    void *monitor;
    int monitor_fd;                     /* its ZMQ_FD */
    guard_conn_t *conns;                /* indexed by fd */
    size_t nconns;                      /* allocated */
    size_t live;
    size_t budget, hard_budget;
    uint64_t cuts;
    uint64_t serials;                   /* connections accepted so far: the last serial given */
    lograte_t cut_log;                  /* cuts are logged at most once a second */
    lograte_t uncut_log;                /* and so are cuts left undone (guard_cut_sender) */
    int64_t speak_within_ms;            /* guard_expect_speech; 0: peers may stay silent */
    int64_t last_check_ms;              /* guard_check's last run */
    uint64_t drains;                    /* guard_check calls that found the socket drained */
    char silent_why [256];
    uint64_t silent_drops;
    lograte_t silent_log;
    size_t unsent_budget;               /* guard_limit_unsent; 0: none */
    uint64_t unsent_total;              /* at the last check */
    char unsent_why [256];
    uint64_t unsent_cuts;
    size_t held_budget;                 /* guard_limit_unfinished; 0: none */
    uint64_t held_total;                /* at the last check */
    char held_why [256];
    uint64_t held_cuts;
    int64_t read_us;                    /* when guard_events last began to read */
};

static guard_conn_t *
guard_conn (guard_t *g, int fd)
{
    if (fd < 0 || fd > 1 << 22)
        return NULL;
    if ((size_t) fd >= g->nconns) {
        size_t n = g->nconns ? g->nconns : 64;
        while (n <= (size_t) fd)
            n *= 2;
        g->conns = mem_realloc (g->conns, n * sizeof *g->conns);
        memset (g->conns + g->nconns, 0, (n - g->nconns) * sizeof *g->conns);
        g->nconns = n;
    }
    return &g->conns [fd];
}

guard_t *
guard_new (void *ctx, void *socket, const char *name, size_t budget, size_t hard_budget,
           char *err, size_t errlen)
{
    guard_t *g = mem_alloc (sizeof *g);
    char endpoint [80];
    snprintf (g->name, sizeof g->name, "%s", name);
    g->socket = socket;
    g->budget = budget;
    g->hard_budget = hard_budget;
    snprintf (endpoint, sizeof endpoint, "inproc://ferrule-guard-%s", name);
    if (zmq_socket_monitor (socket, endpoint, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CLOSED) != 0)
        goto fail;
    g->monitor = zmq_socket (ctx, ZMQ_PAIR);
    if (!g->monitor || zmq_connect (g->monitor, endpoint) != 0 || (g->monitor_fd = frames_socket_fd (g->monitor)) < 0)
        goto fail;
    return g;
fail:
    snprintf (err, errlen, "could not watch the %s socket's connections: %s", name, zmq_strerror (errno));
    guard_destroy (&g);
    return NULL;
}

/* The count of cut lines held back, once their second has ended (lograte_due). */
static void
guard_say_held (guard_t *g, int64_t now)
{
    uint64_t unsaid = lograte_due (&g->cut_log, now);
    if (unsaid)
        log_warning (NULL, NULL, "cut %llu more connections on the %s socket since the last line",
                     (unsigned long long) unsaid, g->name);
    unsaid = lograte_due (&g->uncut_log, now);
    if (unsaid)
        log_warning (NULL, NULL, "left %llu more connections on the %s socket uncut since the last line",
                     (unsigned long long) unsaid, g->name);
    unsaid = lograte_due (&g->silent_log, now);
    if (unsaid)
        log_warning (NULL, NULL, "dropped %llu more silent connections on the %s socket since the last line",
                     (unsigned long long) unsaid, g->name);
}

void
guard_destroy (guard_t **g_p)
{
    if (g_p && *g_p) {
        guard_t *g = *g_p;
        guard_say_held (g, clock_mono_ms () + LOGRATE_INTERVAL_MS);   /* what the last second held back */
        if (g->monitor)
            zmq_close (g->monitor);
        mem_free (g->conns);
        mem_free (g);
        *g_p = NULL;
    }
}

int
guard_fd (const guard_t *g)
{
    return g->monitor_fd;
}

/* A connection's answers are measured from scratch: a new one on its descriptor, or none. */
static void
guard_forget_sent (guard_conn_t *c)
{
    c->sent = c->sent_checked = c->taken = c->unsent = 0;
    c->measured = 0;
}

/* After a connection's end was read: when the socket has nothing to read, nothing of that
 * connection is left in it, and a message from its descriptor is surely a later connection's
 * (guard_sender). Looked at once the end is read, not left to guard_check's next run (every
 * few milliseconds): a client that connects on the descriptor just freed would find its first
 * requests refused meanwhile. */
static void
guard_look_drained (guard_t *g)
{
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt (g->socket, ZMQ_EVENTS, &ev, &len) == 0 && !(ev & ZMQ_POLLIN))
        g->drains++;
}

void
guard_events (guard_t *g)
{
    int ended = 0;
    g->read_us = clock_mono_us ();
    for (int i = 0; i < 1024; i++) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, g->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            break;
        }
        uint16_t event = 0;
        int32_t value = -1;
        int first = zmq_msg_size (&m) == 6;
        if (first) {
            const uint8_t *d = zmq_msg_data (&m);
            memcpy (&event, d, 2);
            memcpy (&value, d + 2, 4);
        }
        int more = zmq_msg_more (&m);
        zmq_msg_close (&m);
        while (more) {                      /* the endpoint frame */
            zmq_msg_init (&m);
            if (zmq_msg_recv (&m, g->monitor, 0) < 0)
                more = 0;
            else
                more = zmq_msg_more (&m);
            zmq_msg_close (&m);
        }
        if (!first)
            continue;
        guard_conn_t *c = guard_conn (g, value);
        if (!c)
            continue;
        if (event == ZMQ_EVENT_ACCEPTED) {
            c->serial = ++g->serials;       /* a new connection, even on a descriptor used before */
            guard_forget_sent (c);
            c->quiet_since_ms = clock_mono_ms ();
            c->heard_checked = c->heard;
            /* messages may have been counted before the event was read: keep them */
            if (!c->live) {
                c->live = 1;
                g->live++;
            }
        }
        else {
            /* what the closed connection sent is queued before this event is: once the socket
             * has been found drained after it, nothing of it is left to read */
            c->unsure_until = g->drains + 1;
            ended = 1;
            if (c->live) {
                c->live = 0;
                c->delivered = c->credit = 0;
                g->live--;
            }
            guard_forget_sent (c);
        }
    }
    if (ended)
        guard_look_drained (g);
}

void
guard_expect_speech (guard_t *g, int64_t within_ms, const char *why)
{
    g->speak_within_ms = within_ms;
    snprintf (g->silent_why, sizeof g->silent_why, "%s", why);
}

/* What the peer of connection fd has sent that libzmq has read (TCP_INFO's bytes received, less
 * what still waits in the kernel) into consumed; the TCP_INFO into ti (len: its size) when not
 * NULL. -1 when fd is not TCP, or gone. */
static int
guard_consumed (int fd, uint64_t *consumed, struct tcp_info *ti, socklen_t *len)
{
    struct tcp_info own;
    socklen_t own_len = sizeof own;
    if (!ti) {
        ti = &own;
        len = &own_len;
    }
    *len = sizeof *ti;
    memset (ti, 0, sizeof *ti);
    int inq = 0;
    /* what waits in the kernel first, then what arrived in all: bytes arriving between the two
     * calls can only make the second larger, never the difference negative */
    if (ioctl (fd, FIONREAD, &inq) != 0
    ||  getsockopt (fd, IPPROTO_TCP, TCP_INFO, ti, len) != 0
    ||  *len < offsetof (struct tcp_info, tcpi_bytes_received) + sizeof ti->tcpi_bytes_received)
        return -1;
    uint64_t waiting = (uint64_t) (inq > 0 ? inq : 0);
    *consumed = ti->tcpi_bytes_received > waiting ? ti->tcpi_bytes_received - waiting : 0;
    return 0;
}

/* The allowances are generous (a message of empty frames costs some 2 bytes a frame on the wire
 * in plaintext, and is allowed 64): what the peer did not use is forgotten, or it could bank it
 * over many messages and spend it on one that never ends. */
static void
guard_settle (guard_conn_t *c, uint64_t consumed)
{
    if (c->delivered > consumed)
        c->delivered = consumed;
    c->credit = 0;
}

uint64_t
guard_account (guard_t *g, int fd, size_t bytes, int frames)
{
    guard_conn_t *c = guard_conn (g, fd);
    if (!c)
        return 0;
    uint64_t allowance = (uint64_t) frames * GUARD_FRAME_OVERHEAD + GUARD_MESSAGE_SLACK;
    c->delivered += bytes + allowance;
    c->credit += allowance;
    /* a message of many frames is allowed many times what it cost: settled at once, not at the
     * next check, so that what a peer can bank in between stays small (two system calls per
     * CREDIT_MAX of allowances, some 170 ordinary messages) */
    if (c->credit > GUARD_CREDIT_MAX) {
        uint64_t consumed;
        if (guard_consumed (fd, &consumed, NULL, NULL) == 0)
            guard_settle (c, consumed);
        c->credit = 0;
    }
    c->heard++;
    return c->serial;
}

void
guard_limit_unsent (guard_t *g, size_t total, const char *why)
{
    g->unsent_budget = total;
    snprintf (g->unsent_why, sizeof g->unsent_why, "%s", why);
}

void
guard_limit_unfinished (guard_t *g, size_t total, const char *why)
{
    g->held_budget = total;
    snprintf (g->held_why, sizeof g->held_why, "%s", why);
}

void
guard_sent (guard_t *g, int fd, uint64_t conn, size_t bytes)
{
    guard_conn_t *c = guard_conn (g, fd);
    /* a message numbered before its connection's ACCEPTED was read (conn 0, or the previous
     * connection's number) goes uncounted: the measure stays a lower bound */
    if (c && c->live && conn && c->serial == conn)
        c->sent += bytes;
}

/* The peer's address of connection fd, for a log line. */
static void
guard_peer (int fd, char *out, size_t outlen)
{
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    snprintf (out, outlen, "?");
    if (getpeername (fd, (struct sockaddr *) &sa, &salen) == 0 && sa.ss_family == AF_INET) {
        const uint8_t *ip = (const uint8_t *) &((struct sockaddr_in *) &sa)->sin_addr;
        snprintf (out, outlen, "%u.%u.%u.%u:%u", ip [0], ip [1], ip [2], ip [3],
                  ntohs (((struct sockaddr_in *) &sa)->sin_port));
    }
}

/* Ends connection fd: libzmq sees it closed and drops it with what it buffered. */
static void
guard_drop (guard_t *g, int fd, guard_conn_t *c)
{
    shutdown (fd, SHUT_RDWR);
    c->live = 0;
    c->delivered = c->credit = c->held = 0;
    g->live--;
    guard_forget_sent (c);
}

void
guard_cut (guard_t *g, int fd, const char *why)
{
    if (fd < 0)
        return;
    guard_conn_t *c = guard_conn (g, fd);
    if (!c)
        return;
    /* fd came with a message of this socket (ZMQ_SRCFD) or from the monitor: it is one of its
     * connections, even when its ACCEPTED event has not been read yet */
    if (!c->live) {
        c->live = 1;
        g->live++;
    }
    char peer [64];
    guard_peer (fd, peer, sizeof peer);
    uint64_t held;
    if (lograte_take (&g->cut_log, clock_mono_ms (), &held)) {
        if (held)
            log_warning (NULL, NULL, "cutting a connection on the %s socket from %s: %s (and %llu more cut since the "
                         "last line)", g->name, peer, why, (unsigned long long) held);
        else
            log_warning (NULL, NULL, "cutting a connection on the %s socket from %s: %s", g->name, peer, why);
    }
    guard_drop (g, fd, c);
    g->cuts++;
}

int
guard_cut_sender (guard_t *g, int fd, const char *why)
{
    guard_conn_t *c = guard_conn (g, fd);
    if (!c)
        return 0;
    uint64_t drains = g->drains;        /* those before the message was read (guard_events may add one) */
    guard_events (g);
    c = guard_conn (g, fd);
    /* the message's connection was accepted before it could be read, and its end is read
     * before another connection's accept on the same descriptor */
    if (!c->live || drains < c->unsure_until) {
        uint64_t held;
        if (lograte_take (&g->uncut_log, clock_mono_ms (), &held))
            log_warning (NULL, NULL, "not cutting a connection on the %s socket: %s; it has closed, or its descriptor "
                         "may be another connection's by now (its next message is cut)", g->name, why);
        return 0;
    }
    guard_cut (g, fd, why);
    return 1;
}

/* Drops connection fd when no message has come on its descriptor for longer than its peers may
 * stay silent (since it was accepted, or since the last check that saw one come); 1 when it did.
 * Called only while the socket has nothing left to read, so a message waiting to be read is never
 * taken for silence. A connection's descriptor is all a message tells of it (ZMQ_SRCFD), and a
 * connection's messages may still be read after it closed and its descriptor went to a new one:
 * a message in the last interval, not any since the accept, is what proves a connection heard. */
static int
guard_check_silence (guard_t *g, int fd, guard_conn_t *c, int64_t now)
{
    if (!g->speak_within_ms)
        return 0;
    if (c->heard != c->heard_checked) {
        c->heard_checked = c->heard;
        c->quiet_since_ms = now;
        return 0;
    }
    if (now - c->quiet_since_ms <= g->speak_within_ms)
        return 0;
    char peer [64];
    guard_peer (fd, peer, sizeof peer);
    uint64_t held;
    if (lograte_take (&g->silent_log, now, &held)) {
        char more [64] = "";
        if (held)
            snprintf (more, sizeof more, " (and %llu more dropped since the last line)", (unsigned long long) held);
        log_warning (NULL, NULL, "dropping a connection on the %s socket from %s: no message has come of it for %lld ms "
                     "(%s)%s", g->name, peer, (long long) (now - c->quiet_since_ms), g->silent_why, more);
    }
    guard_drop (g, fd, c);
    g->silent_drops++;
    return 1;
}

/* What of the payload sent to connection c still waits in libzmq, given taken, every byte the
 * kernel has taken from libzmq on it (sent, or waiting in its send queue). The payload sent since
 * the last measure is added and what the kernel took meanwhile subtracted, never below zero. The
 * kernel's bytes carry framing as well (and CURVE's), so this stays a lower bound of the payload
 * waiting, without drifting over a long connection's life; while the peer reads nothing the
 * kernel takes nothing, and it grows by exactly what is sent. */
static void
guard_measure_unsent (guard_conn_t *c, uint64_t taken)
{
    if (c->measured) {
        uint64_t more = c->unsent + (c->sent - c->sent_checked);
        uint64_t took = taken > c->taken ? taken - c->taken : 0;
        c->unsent = more > took ? more - took : 0;
    }
    if (!c->measured || taken > c->taken)
        c->taken = taken;
    c->sent_checked = c->sent;
    c->measured = 1;
}

/* Cuts the connection holding the most unread answers; one a check (every few milliseconds), so
 * that the scan stays linear however many connections there are. 1 when it cut. */
static int
guard_cut_unsent (guard_t *g)
{
    size_t most = 0;
    if (!g->nconns)
        return 0;
    for (size_t fd = 1; fd < g->nconns; fd++)
        if (g->conns [fd].live && g->conns [fd].unsent > g->conns [most].unsent)
            most = fd;
    guard_conn_t *c = &g->conns [most];
    if (!c->live || !c->unsent)
        return 0;
    char why [512];
    snprintf (why, sizeof why, "%llu bytes of the answers sent to it wait unread, the most of any connection, and "
              "all connections' unread answers (%llu bytes) are over the budget (%zu bytes); %s",
              (unsigned long long) c->unsent, (unsigned long long) g->unsent_total, g->unsent_budget, g->unsent_why);
    g->unsent_total -= c->unsent;
    guard_cut (g, (int) most, why);
    g->unsent_cuts++;
    return 1;
}

/* Cuts the connections holding the most of what makes no complete message yet, until all of
 * them together hold at most limit; GUARD_HELD_CUTS a check at most, so that a check stays short
 * however many connections there are (the next one, 10 ms later, goes on). How many it cut. */
static int
guard_cut_held (guard_t *g, uint64_t limit)
{
    int cut = 0;
    while (g->held_total > limit && cut < GUARD_HELD_CUTS) {
        size_t most = 0;
        for (size_t fd = 1; fd < g->nconns; fd++)
            if (g->conns [fd].live && g->conns [fd].held > g->conns [most].held)
                most = fd;
        guard_conn_t *c = &g->conns [most];
        if (!c->live || !c->held)
            break;
        char why [512];
        snprintf (why, sizeof why, "it holds %llu bytes of a message not complete yet, the most of any connection, and "
                  "all connections' unfinished messages (%llu bytes) are over the budget (%llu bytes); %s",
                  (unsigned long long) c->held, (unsigned long long) g->held_total, (unsigned long long) limit,
                  g->held_why);
        g->held_total -= c->held;
        guard_cut (g, (int) most, why);
        g->held_cuts++;
        cut++;
    }
    return cut;
}

int
guard_check (guard_t *g, int drained)
{
    int cut = 0;
    uint64_t unsent = 0, held_total = 0;
    int64_t now = clock_mono_ms ();
    /* checks come every few milliseconds: a long gap is a process that did not run (stopped,
     * starved), and silence is counted only from when it listens again */
    int stalled = g->speak_within_ms && now - g->last_check_ms > g->speak_within_ms / 4;
    g->last_check_ms = now;
    guard_say_held (g, now);
    g->drains += drained != 0;
    for (size_t fd = 0; fd < g->nconns; fd++) {
        guard_conn_t *c = &g->conns [fd];
        if (!c->live)
            continue;
        c->held = 0;
        if (stalled)
            c->quiet_since_ms = now;
        if (drained && guard_check_silence (g, (int) fd, c, now))
            continue;
        struct tcp_info ti;
        socklen_t len;
        uint64_t consumed;
        if (guard_consumed ((int) fd, &consumed, &ti, &len) != 0)
            continue;                       /* not TCP, or gone */
        guard_settle (c, consumed);
        uint64_t allowed = c->delivered + GUARD_HANDSHAKE;
        uint64_t held = consumed > allowed ? consumed - allowed : 0;
        c->held = held;
        if (held > g->hard_budget || (drained && held > g->budget)) {
            char why [160];
            snprintf (why, sizeof why, "it sent %llu bytes that do not make a complete message within the budget "
                      "(%zu bytes); a peer must send whole messages of at most the frame limit",
                      (unsigned long long) held, drained ? g->budget : g->hard_budget);
            guard_cut (g, (int) fd, why);
            cut++;
            continue;
        }
        held_total += held;
        /* every byte libzmq wrote: sent once (sent less sent again) or not sent yet; read from the
         * TCP_INFO above, with no call of its own on the broker's one thread every 10 ms */
        if (g->unsent_budget && len >= offsetof (struct tcp_info, tcpi_bytes_retrans) + sizeof ti.tcpi_bytes_retrans)
            guard_measure_unsent (c, ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes);
        unsent += c->unsent;
    }
    g->unsent_total = unsent;
    if (g->unsent_budget && unsent > g->unsent_budget)
        cut += guard_cut_unsent (g);
    /* as for one connection's budget: eight times as much while messages wait unread, which
     * count as held until the application takes them */
    g->held_total = held_total;
    if (g->held_budget)
        cut += guard_cut_held (g, drained ? g->held_budget : (uint64_t) g->held_budget * 8);
    return cut;
}

uint64_t
guard_connection (guard_t *g, int fd)
{
    /* libzmq reports a connection accepted before any message of it can be read: with the events
     * read up to now, the descriptor's last serial is the connection's, or a later one's (when it
     * closed and the descriptor was reused meanwhile), never an earlier one's */
    guard_events (g);
    guard_conn_t *c = guard_conn (g, fd);
    return c ? c->serial : 0;
}

uint64_t
guard_sender (guard_t *g, int fd)
{
    uint64_t drains = g->drains;        /* those before the message was read (guard_events may add one) */
    /* events read this recently count as read now, as in guard_holds: a look at the monitor for
     * every request read took a system call each, and halved the plaintext broker's throughput
     * (docs/performance.md). A connection that closed and another that opened on fd within that
     * time are taken for the old one: the answer then finds it gone (guard_holds) and is not sent */
    int fresh = clock_mono_us () - g->read_us >= GUARD_FRESH_US;
    if (fresh)
        guard_events (g);
    guard_conn_t *c = guard_conn (g, fd);
    /* the message's connection was accepted before it could be read: one not known yet (its
     * accept came after the last read: a plaintext client sends at once) is looked for now */
    if (!fresh && (!c || !c->live || drains < c->unsure_until)) {
        guard_events (g);
        c = guard_conn (g, fd);
    }
    /* once the socket was found drained after the end of the one before on fd was read, and
     * before this message was read, nothing of that one was left */
    if (!c || !c->live || drains < c->unsure_until)
        return 0;
    return c->serial;
}

int
guard_holds (guard_t *g, int fd, uint64_t conn)
{
    /* a look at the monitor costs a system call even when it has nothing: one per answer sent
     * would be a good part of an answer's cost, and events read a tenth of a millisecond ago
     * leave a window no wider than that */
    if (clock_mono_us () - g->read_us >= GUARD_FRESH_US)
        guard_events (g);
    guard_conn_t *c = guard_conn (g, fd);
    return c && conn && c->live && c->serial == conn;
}

void
guard_drained (guard_t *g)
{
    g->drains++;
}

uint64_t
guard_cut_count (const guard_t *g)
{
    return g ? g->cuts : 0;
}

uint64_t
guard_silent_count (const guard_t *g)
{
    return g ? g->silent_drops : 0;
}

uint64_t
guard_unsent_cut_count (const guard_t *g)
{
    return g ? g->unsent_cuts : 0;
}

uint64_t
guard_unsent_bytes (const guard_t *g)
{
    return g ? g->unsent_total : 0;
}

uint64_t
guard_unfinished_cut_count (const guard_t *g)
{
    return g ? g->held_cuts : 0;
}

uint64_t
guard_unfinished_bytes (const guard_t *g)
{
    return g ? g->held_total : 0;
}

size_t
guard_connections (const guard_t *g)
{
    return g ? g->live : 0;
}

size_t
guard_kernel_unread (const guard_t *g)
{
    size_t n = 0;
    for (size_t fd = 0; g && fd < g->nconns; fd++) {
        int inq = 0;
        if (g->conns [fd].live && ioctl ((int) fd, FIONREAD, &inq) == 0 && inq > 0)
            n++;
    }
    return n;
}
