/* resolve.c - broker names looked up off the loop (resolve.h). A round runs on a detached thread
 * and shares one block with the loop, counted: whichever lets go of it last frees it, so that a
 * stop never joins a thread that may sit in getaddrinfo for seconds. */
#include "resolve.h"
#include "mem.h"
#include "daemon.h"
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define RESOLVE_MAX_ADDRESSES 64         /* as many brokers as a worker links to */

typedef struct {
    pthread_mutex_t lock;
    int refs;                            /* under lock: the loop's, and the thread's */
    int done;                            /* under lock */
    char **specs;
    size_t n;
    resolve_result_t *results;           /* the thread's until done, then the loop's to take */
} resolve_round_t;

struct resolve {
    char **specs;
    size_t n;
    resolve_round_t *round;              /* the round under way or ended, NULL: none */
};

static char **
resolve_copy_specs (char *const *specs, size_t n)
{
    char **out = mem_alloc ((n + 1) * sizeof *out);
    for (size_t i = 0; i < n; i++)
        out [i] = mem_strdup (specs [i]);
    return out;
}

static void
resolve_free_specs (char ***specs, size_t n)
{
    for (size_t i = 0; *specs && i < n; i++)
        mem_free ((*specs) [i]);
    mem_free (*specs);
    *specs = NULL;
}

/* "dns+tcp://NAME:PORT" into host and port; -1 when it is not that. */
static int
resolve_split (const char *spec, char host [256], char port [16])
{
    const char *name = strncmp (spec, "dns+tcp://", 10) == 0 ? spec + 10 : spec;
    const char *colon = strrchr (name, ':');
    if (!colon || colon == name || (size_t) (colon - name) >= 256 || !colon [1] || strlen (colon + 1) >= 16)
        return -1;
    memcpy (host, name, (size_t) (colon - name));
    host [colon - name] = '\0';
    snprintf (port, 16, "%s", colon + 1);
    return 0;
}

int
resolve_spec_valid (const char *spec)
{
    char host [256], port [16];
    return resolve_split (spec, host, port) == 0;
}

/* One spec looked up into out. */
static void
resolve_one (const char *spec, resolve_result_t *out)
{
    char host [256], port [16];
    memset (out, 0, sizeof *out);
    if (resolve_split (spec, host, port) != 0) {
        snprintf (out->error, sizeof out->error, "not NAME:PORT");
        return;
    }
    struct addrinfo hints, *res = NULL;
    memset (&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo (host, port, &hints, &res);
    if (rc != 0) {
        snprintf (out->error, sizeof out->error, "%s", gai_strerror (rc));
        return;
    }
    out->ok = 1;
    out->endpoints = mem_alloc (RESOLVE_MAX_ADDRESSES * sizeof *out->endpoints);
    for (struct addrinfo *a = res; a && out->n < RESOLVE_MAX_ADDRESSES; a = a->ai_next) {
        char ip [INET6_ADDRSTRLEN], endpoint [INET6_ADDRSTRLEN + 32];
        if (a->ai_family == AF_INET)
            inet_ntop (AF_INET, &((struct sockaddr_in *) a->ai_addr)->sin_addr, ip, sizeof ip);
        else
        if (a->ai_family == AF_INET6)
            inet_ntop (AF_INET6, &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr, ip, sizeof ip);
        else
            continue;
        snprintf (endpoint, sizeof endpoint, a->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", ip, port);
        out->endpoints [out->n++] = mem_strdup (endpoint);
    }
    freeaddrinfo (res);
}

static resolve_result_t *
resolve_all (char *const *specs, size_t n)
{
    resolve_result_t *results = mem_alloc ((n ? n : 1) * sizeof *results);
    for (size_t i = 0; i < n; i++)
        resolve_one (specs [i], &results [i]);
    return results;
}

void
resolve_results_free (resolve_result_t **results, size_t n)
{
    if (!results || !*results)
        return;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < (*results) [i].n; k++)
            mem_free ((*results) [i].endpoints [k]);
        mem_free ((*results) [i].endpoints);
    }
    mem_free (*results);
    *results = NULL;
}

/* Lets go of a round; the last one to do so frees it. */
static void
resolve_round_release (resolve_round_t *round)
{
    pthread_mutex_lock (&round->lock);
    int last = --round->refs == 0;
    pthread_mutex_unlock (&round->lock);
    if (!last)
        return;
    resolve_results_free (&round->results, round->n);
    resolve_free_specs (&round->specs, round->n);
    pthread_mutex_destroy (&round->lock);
    mem_free (round);
}

static void *
resolve_thread (void *arg)
{
    resolve_round_t *round = arg;
    resolve_result_t *results = resolve_all (round->specs, round->n);
    pthread_mutex_lock (&round->lock);
    round->results = results;
    round->done = 1;
    pthread_mutex_unlock (&round->lock);
    resolve_round_release (round);
    return NULL;
}

resolve_t *
resolve_new (char *const *specs, size_t n)
{
    resolve_t *r = mem_alloc (sizeof *r);
    r->specs = resolve_copy_specs (specs, n);
    r->n = n;
    return r;
}

void
resolve_destroy (resolve_t **r_p)
{
    if (!r_p || !*r_p)
        return;
    resolve_t *r = *r_p;
    if (r->round)
        resolve_round_release (r->round);
    resolve_free_specs (&r->specs, r->n);
    mem_free (r);
    *r_p = NULL;
}

resolve_result_t *
resolve_now (const resolve_t *r)
{
    return resolve_all (r->specs, r->n);
}

int
resolve_start (resolve_t *r)
{
    if (r->round)
        return 0;                        /* under way, or ended and not taken yet */
    resolve_round_t *round = mem_alloc (sizeof *round);
    pthread_mutex_init (&round->lock, NULL);
    round->refs = 2;
    round->specs = resolve_copy_specs (r->specs, r->n);
    round->n = r->n;
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    sigset_t old;
    daemon_threads_begin (&old);         /* the lookup takes no signals: the loop's thread does */
    int rc = pthread_create (&thread, &attr, resolve_thread, round);
    daemon_threads_done (&old);
    pthread_attr_destroy (&attr);
    if (rc != 0) {
        round->refs = 1;
        resolve_round_release (round);
        return -1;
    }
    r->round = round;
    return 1;
}

resolve_result_t *
resolve_take (resolve_t *r)
{
    if (!r->round)
        return NULL;
    resolve_round_t *round = r->round;
    pthread_mutex_lock (&round->lock);
    resolve_result_t *results = round->done ? round->results : NULL;
    if (results)
        round->results = NULL;
    pthread_mutex_unlock (&round->lock);
    if (!results)
        return NULL;
    r->round = NULL;
    resolve_round_release (round);
    return results;
}
