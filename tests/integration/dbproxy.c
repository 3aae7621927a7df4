/* dbproxy.c - the relay of dbproxy.h: one thread polls the listening socket, a wake-up pipe and
 * both sides of every connection; the test's calls change what it relays under a mutex and wait
 * for the thread to have acted on them. */
#define _GNU_SOURCE
#include "dbproxy.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DBPROXY_PAIRS 64               /* connections relayed at once; more are refused */

typedef struct {
    int client, server;                /* -1: free */
} pair_t;

struct dbproxy {
    int listener;
    int port;
    struct sockaddr_in server;         /* where PostgreSQL listens */
    int wake [2];                      /* a byte written: look at the commands */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t done;
    int hold;                          /* under lock */
    int stop;                          /* under lock */
    unsigned cut_asked, cut_done;      /* under lock: cuts asked for, and carried out */
    int cut_count;                     /* under lock: what the last cut closed */
    char cut_on [128];                 /* under lock: client bytes holding this cut everything, once */
    pair_t pairs [DBPROXY_PAIRS];      /* the thread's */
};

static void
pair_close (pair_t *pr)
{
    if (pr->client >= 0)
        close (pr->client);
    if (pr->server >= 0)
        close (pr->server);
    pr->client = pr->server = -1;
}

/* Copies what from has to to; -1 when either side has ended, 1 (nothing copied) when the bytes
 * hold needle (not NULL): the caller cuts every connection. */
static int
relay (int from, int to, const char *needle)
{
    char buf [16384];
    ssize_t n = recv (from, buf, sizeof buf, 0);
    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN) ? 0 : -1;
    if (needle && memmem (buf, (size_t) n, needle, strlen (needle)))
        return 1;
    for (ssize_t off = 0; off < n; ) {
        ssize_t w = send (to, buf + off, (size_t) (n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

static void
accept_one (dbproxy_t *p)
{
    int c = accept (p->listener, NULL, NULL);
    if (c < 0)
        return;
    int s = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect (s, (struct sockaddr *) &p->server, sizeof p->server) != 0) {
        if (s >= 0)
            close (s);
        close (c);
        return;
    }
    for (int i = 0; i < DBPROXY_PAIRS; i++)
        if (p->pairs [i].client < 0) {
            p->pairs [i].client = c;
            p->pairs [i].server = s;
            return;
        }
    close (s);
    close (c);
}

static void *
dbproxy_thread (void *arg)
{
    dbproxy_t *p = arg;
    struct pollfd fds [2 + 2 * DBPROXY_PAIRS];
    for (;;) {
        pthread_mutex_lock (&p->lock);
        int stop = p->stop, hold = p->hold;
        if (p->cut_asked != p->cut_done) {
            int n = 0;
            for (int i = 0; i < DBPROXY_PAIRS; i++)
                if (p->pairs [i].client >= 0) {
                    pair_close (&p->pairs [i]);
                    n++;
                }
            p->cut_count = n;
            p->cut_done = p->cut_asked;
            pthread_cond_broadcast (&p->done);
        }
        pthread_mutex_unlock (&p->lock);
        if (stop)
            break;
        int nfds = 0;
        fds [nfds++] = (struct pollfd) { .fd = p->listener, .events = POLLIN };
        fds [nfds++] = (struct pollfd) { .fd = p->wake [0], .events = POLLIN };
        for (int i = 0; i < DBPROXY_PAIRS; i++) {
            pair_t *pr = &p->pairs [i];
            fds [2 + 2 * i] = (struct pollfd) { .fd = pr->client, .events = POLLIN };
            /* held: the server's answers wait in its socket (a negative fd is skipped by poll) */
            fds [3 + 2 * i] = (struct pollfd) { .fd = hold ? -1 : pr->server, .events = POLLIN };
        }
        if (poll (fds, 2 + 2 * DBPROXY_PAIRS, 1000) < 0 && errno != EINTR)
            break;
        if (fds [1].revents) {
            char b [64];
            while (read (p->wake [0], b, sizeof b) > 0)
                ;                       /* drained; the commands are read under the lock above */
        }
        pthread_mutex_lock (&p->lock);
        char needle [sizeof p->cut_on];
        memcpy (needle, p->cut_on, sizeof needle);
        pthread_mutex_unlock (&p->lock);
        int cut = 0;
        for (int i = 0; i < DBPROXY_PAIRS && !cut; i++) {
            pair_t *pr = &p->pairs [i];
            if (pr->client < 0)
                continue;
            int rc = fds [2 + 2 * i].revents ? relay (pr->client, pr->server, needle [0] ? needle : NULL) : 0;
            if (rc == 1)
                cut = 1;
            else
            if (rc != 0 || (fds [3 + 2 * i].revents && relay (pr->server, pr->client, NULL) != 0))
                pair_close (pr);
        }
        if (cut) {
            for (int i = 0; i < DBPROXY_PAIRS; i++)
                pair_close (&p->pairs [i]);
            pthread_mutex_lock (&p->lock);
            p->cut_on [0] = '\0';
            pthread_mutex_unlock (&p->lock);
            continue;
        }
        if (fds [0].revents)
            accept_one (p);
    }
    for (int i = 0; i < DBPROXY_PAIRS; i++)
        pair_close (&p->pairs [i]);
    return NULL;
}

static void
dbproxy_poke (dbproxy_t *p)
{
    char b = 0;
    if (write (p->wake [1], &b, 1) < 0 && errno != EAGAIN)
        fprintf (stderr, "dbproxy: could not wake the relay: %s\n", strerror (errno));
}

/* The host and port conninfo names, into the server address; 0, or -1. */
static int
server_of (const char *conninfo, struct sockaddr_in *sa)
{
    PQconninfoOption *opts = PQconninfoParse (conninfo, NULL);
    if (!opts)
        return -1;
    const char *host = "127.0.0.1", *port = "5432";
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp (o->keyword, "host") == 0 && *o->val)
            host = o->val;
        else
        if (o->val && strcmp (o->keyword, "port") == 0 && *o->val)
            port = o->val;
    memset (sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons ((uint16_t) atoi (port));
    int ok = inet_pton (AF_INET, strcmp (host, "localhost") == 0 ? "127.0.0.1" : host, &sa->sin_addr) == 1;
    PQconninfoFree (opts);
    return ok ? 0 : -1;
}

dbproxy_t *
dbproxy_new (const char *conninfo)
{
    dbproxy_t *p = calloc (1, sizeof *p);
    p->listener = p->wake [0] = p->wake [1] = -1;
    for (int i = 0; i < DBPROXY_PAIRS; i++)
        p->pairs [i].client = p->pairs [i].server = -1;
    pthread_mutex_init (&p->lock, NULL);
    pthread_cond_init (&p->done, NULL);
    struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = 0 };
    socklen_t len = sizeof me;
    inet_pton (AF_INET, "127.0.0.1", &me.sin_addr);
    if (server_of (conninfo, &p->server) != 0
    ||  (p->listener = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
    ||  bind (p->listener, (struct sockaddr *) &me, sizeof me) != 0
    ||  listen (p->listener, 64) != 0
    ||  getsockname (p->listener, (struct sockaddr *) &me, &len) != 0
    ||  pipe2 (p->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        goto fail;
    p->port = ntohs (me.sin_port);
    if (pthread_create (&p->thread, NULL, dbproxy_thread, p) != 0)
        goto fail;
    return p;
fail:
    if (p->listener >= 0)
        close (p->listener);
    if (p->wake [0] >= 0) {
        close (p->wake [0]);
        close (p->wake [1]);
    }
    pthread_mutex_destroy (&p->lock);
    pthread_cond_destroy (&p->done);
    free (p);
    return NULL;
}

void
dbproxy_destroy (dbproxy_t **p_p)
{
    if (!p_p || !*p_p)
        return;
    dbproxy_t *p = *p_p;
    pthread_mutex_lock (&p->lock);
    p->stop = 1;
    pthread_mutex_unlock (&p->lock);
    dbproxy_poke (p);
    pthread_join (p->thread, NULL);
    close (p->listener);
    close (p->wake [0]);
    close (p->wake [1]);
    pthread_mutex_destroy (&p->lock);
    pthread_cond_destroy (&p->done);
    free (p);
    *p_p = NULL;
}

/* A keyword value quoted as libpq reads it: in single quotes, with \ before ' and \. */
static void
append_value (char **out, size_t *len, size_t *cap, const char *key, const char *value)
{
    size_t need = strlen (key) + 2 * strlen (value) + 8;
    if (*len + need >= *cap) {
        *cap = (*len + need) * 2;
        *out = realloc (*out, *cap);
    }
    *len += (size_t) sprintf (*out + *len, "%s%s='", *len ? " " : "", key);
    for (const char *c = value; *c; c++) {
        if (*c == '\'' || *c == '\\')
            (*out) [(*len)++] = '\\';
        (*out) [(*len)++] = *c;
    }
    (*out) [(*len)++] = '\'';
    (*out) [*len] = '\0';
}

char *
dbproxy_conninfo (const dbproxy_t *p, const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse (conninfo, NULL);
    if (!opts)
        return NULL;
    char *out = NULL, port [16];
    size_t len = 0, cap = 0;
    snprintf (port, sizeof port, "%d", p->port);
    append_value (&out, &len, &cap, "host", "127.0.0.1");
    append_value (&out, &len, &cap, "port", port);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp (o->keyword, "host") != 0 && strcmp (o->keyword, "port") != 0
            && strcmp (o->keyword, "hostaddr") != 0)
            append_value (&out, &len, &cap, o->keyword, o->val);
    PQconninfoFree (opts);
    return out;
}

void
dbproxy_hold_answers (dbproxy_t *p, int hold)
{
    pthread_mutex_lock (&p->lock);
    p->hold = hold;
    pthread_mutex_unlock (&p->lock);
    dbproxy_poke (p);
}

void
dbproxy_cut_on (dbproxy_t *p, const char *needle)
{
    pthread_mutex_lock (&p->lock);
    snprintf (p->cut_on, sizeof p->cut_on, "%s", needle);
    pthread_mutex_unlock (&p->lock);
}

int
dbproxy_cut (dbproxy_t *p)
{
    pthread_mutex_lock (&p->lock);
    unsigned want = ++p->cut_asked;
    dbproxy_poke (p);
    while (p->cut_done != want)
        pthread_cond_wait (&p->done, &p->lock);
    int n = p->cut_count;
    pthread_mutex_unlock (&p->lock);
    return n;
}
