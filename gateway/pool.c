/* pool.c - a bounded set of broker clients lent one request at a time */
#include "pool.h"
#include "client.h"
#include "curve.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 256

struct pool {
    char *brokers;
    int size;
    curve_identity_t id;                /* the gateway's CURVE key and the brokers' public key */
    pthread_mutex_t mutex;
    pthread_cond_t freed;
    client_t *clients [POOL_MAX];       /* made on first need */
    client_t *probe;                    /* pool_ping's own, made on first need */
    int busy [POOL_MAX];
    int share_busy [POOL__SHARES];      /* clients lent to each share's calls */
    int share_max [POOL__SHARES];       /* and the most they may hold */
};

int
pool_share_max (int size, pool_share_t share)
{
    int max = share == POOL_OPEN ? size / 2 : share == POOL_KEY_CHECK ? size / 4 : size;
    return max > 1 ? max : 1;
}

pool_t *
pool_new (const char *brokers, int size, char *err, size_t errlen)
{
    if (size < 1 || size > POOL_MAX) {
        snprintf (err, errlen, "the broker client pool must hold 1 to %d clients", POOL_MAX);
        return NULL;
    }
    pool_t *p = mem_alloc (sizeof *p);
    if (curve_identity_from_env (&p->id, 1, err, errlen) != FR_OK) {
        mem_free (p);
        return NULL;
    }
    client_t *first = client_new_with (brokers, &p->id, err, errlen);
    if (!first) {
        curve_identity_clear (&p->id);
        mem_free (p);
        return NULL;
    }
    p->brokers = mem_strdup (brokers);
    p->size = size;
    for (int s = 0; s < POOL__SHARES; s++)
        p->share_max [s] = pool_share_max (size, (pool_share_t) s);
    pthread_mutex_init (&p->mutex, NULL);
    pthread_cond_init (&p->freed, NULL);
    p->clients [0] = first;
    return p;
}

void
pool_destroy (pool_t **p_p)
{
    if (!p_p || !*p_p)
        return;
    pool_t *p = *p_p;
    for (int i = 0; i < p->size; i++)
        client_destroy (&p->clients [i]);
    client_destroy (&p->probe);
    pthread_mutex_destroy (&p->mutex);
    pthread_cond_destroy (&p->freed);
    mem_free (p->brokers);
    curve_identity_clear (&p->id);
    mem_free (p);
    *p_p = NULL;
}

static json_t *
overloaded (const char *why)
{
    return json_pack ("{s:b, s:{s:s, s:s, s:s, s:i}}", "ok", 0, "error", "code", "overloaded", "message", why,
                      "hint", "try again in a moment", "retry_after", 1);
}

/* Gives back the client of slot, lent to a call of share. */
static void
pool_release (pool_t *p, int slot, pool_share_t share)
{
    pthread_mutex_lock (&p->mutex);
    p->busy [slot] = 0;
    p->share_busy [share]--;
    /* every waiter looks again: a call may wait for room in its share that this frees while
       another waits for any client, and one signal could wake only the waiter that cannot use it */
    pthread_cond_broadcast (&p->freed);
    pthread_mutex_unlock (&p->mutex);
}

json_t *
pool_ping (pool_t *p, int timeout_ms)
{
    if (!p->probe) {
        char err [256];
        p->probe = client_new_with (p->brokers, &p->id, err, sizeof err);
        if (!p->probe) {
            log_error (NULL, NULL, "could not set up the readiness check's broker client: %s", err);
            return json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", "unavailable", "message",
                              "no broker client for the readiness check", "hint", "see the log");
        }
    }
    /* a broker that answers but drains (it is stopping, and refuses every request) is no broker
       this gateway can use: the next is asked, each at most once (a call goes round robin) */
    int64_t until = clock_mono_ms () + timeout_ms;
    json_t *r = NULL;
    for (size_t i = 0; i < client_endpoints (p->probe); i++) {
        int64_t left = until - clock_mono_ms ();
        if (r && left < POOL_MIN_CALL_MS)
            break;
        json_decref (r);
        r = client_call_rid (p->probe, "ping", NULL, (int) (left > 1 ? left : 1), CLIENT_IDEMPOTENT, NULL);
        if (!json_is_true (json_object_get (r, "ok")) || !json_is_true (json_object_get (r, "draining")))
            break;
    }
    return r;
}

json_t *
pool_call (pool_t *p, const char *op, json_t *args, int timeout_ms, const char *rid_base, pool_share_t share)
{
    if (timeout_ms < POOL_MIN_CALL_MS)
        return json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", "timeout", "message",
                          POOL_TIME_RAN_OUT, "hint", "try again in a moment");
    int slot = -1;
    int64_t deadline_ms = clock_mono_ms () + timeout_ms;     /* the wait for a client counts in it */
    struct timespec until = clock_after (CLOCK_REALTIME, timeout_ms);
    pthread_mutex_lock (&p->mutex);
    for (;;) {
        if (p->share_busy [share] >= p->share_max [share]) {
            if (pthread_cond_timedwait (&p->freed, &p->mutex, &until) == ETIMEDOUT)
                break;
            continue;
        }
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy [i] && p->clients [i])
                slot = i;
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->clients [i] && !p->busy [i])
                slot = i;
        if (slot >= 0 || pthread_cond_timedwait (&p->freed, &p->mutex, &until) == ETIMEDOUT)
            break;
    }
    client_t *c = NULL;
    if (slot >= 0) {
        p->busy [slot] = 1;
        p->share_busy [share]++;
        c = p->clients [slot];
    }
    pthread_mutex_unlock (&p->mutex);
    if (slot < 0)
        return overloaded (share == POOL_OPEN ? "the broker clients this gateway lends to calls without a key or a "
                                                "session are busy"
                         : share == POOL_KEY_CHECK ? "the broker clients this gateway lends to API key checks are busy"
                         : "every broker client of this gateway is busy");
    if (!c) {
        char err [256];
        c = client_new_with (p->brokers, &p->id, err, sizeof err);  /* outside the lock: it connects */
        pthread_mutex_lock (&p->mutex);
        p->clients [slot] = c;
        pthread_mutex_unlock (&p->mutex);
        if (!c) {
            log_error (NULL, NULL, "could not set up another broker client: %s", err);
            pool_release (p, slot, share);
            return overloaded ("this gateway could not open another broker connection");
        }
    }
    /* the call came with time enough (above): the wait for a client took it */
    int64_t left_ms = deadline_ms - clock_mono_ms ();
    json_t *reply = left_ms < POOL_MIN_CALL_MS
                  ? overloaded ("every broker client of this gateway was busy until too little of this request's "
                                "time was left for the call")
                  : client_call_rid (c, op, args, (int) left_ms, client_op_is_idempotent (op) ? CLIENT_IDEMPOTENT : 0,
                                     rid_base);
    pool_release (p, slot, share);
    return reply;
}
