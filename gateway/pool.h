/* pool.h - broker clients shared by the gateway's connection threads
 *
 * common/client.c's client is used by one thread at a time; the pool lends each request one
 * (made on first need, at most `size`), so a slow call holds one client, never the others. */
#ifndef FERRULE_POOL_H
#define FERRULE_POOL_H
#include <jansson.h>

typedef struct pool pool_t;

/* NULL with a reason in err when the endpoints or the keys are unusable (one client is made
 * at once to find out). */
pool_t *pool_new (const char *brokers, int size, char *err, size_t errlen);
void pool_destroy (pool_t **p_p);
/* Who may cause a call, which decides the share of the clients it may hold. Calls anyone can cause
 * without a key or a session are held to shares, so that a flood of them while the service is
 * slow leaves the rest to the callers who proved who they are; a key's check has a share of its
 * own, so that such a flood of callbacks does not stop every workspace key's calls either. */
typedef enum {
    POOL_KEYED = 0,       /* a caller with a key or a session: any free client */
    POOL_OPEN,            /* a callback and its attempt and retry, a dashboard link's opening: half */
    POOL_KEY_CHECK,       /* a workspace API key's check, before the caller is known: a quarter */
    POOL__SHARES
} pool_share_t;

/* The least time a broker call is sent with: less is no time for an answer. A call given less
 * is answered "timeout" with this message: the time was the caller's, and nothing was sent. */
#define POOL_MIN_CALL_MS 100
#define POOL_TIME_RAN_OUT "this request's time ran out before the token service could be asked: the call was not sent"

/* client_call_rid on a lent client (op's idempotence decides retries; the rid begins with
 * rid_base, NULL: random), all of it within timeout_ms: the wait for a free client (and for
 * room in share), then the call with what is left. A timeout_ms under POOL_MIN_CALL_MS (the
 * caller's time ran out) sends nothing and answers "timeout" saying so; a wait for a client that
 * leaves too little answers "overloaded". Never NULL. */
json_t *pool_call (pool_t *p, const char *op, json_t *args, int timeout_ms, const char *rid_base,
                   pool_share_t share);
/* A ping of the brokers on a client of its own, outside the pool (made on first need): the
 * readiness check's, so that a gateway whose clients are all busy (callers waiting on a slow
 * provider) still tells whether a broker answers. One that answers "draining" is passed over for
 * the next; the reply is the first that is not ok or not draining, else the last. For one thread
 * at a time (the main loop). */
json_t *pool_ping (pool_t *p, int timeout_ms);
/* Clients the calls of share may hold at once in a pool of size (at least one). */
int pool_share_max (int size, pool_share_t share);
#endif
