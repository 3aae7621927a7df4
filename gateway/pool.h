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
/* client_call_rid on a lent client (op's idempotence decides retries; the rid begins with
 * rid_base, NULL: random), all of it within timeout_ms: the wait for a free client, then the
 * call with what is left; a wait that leaves too little answers an "overloaded" reply. Never
 * NULL. open: a call anyone can cause without a key or a session (a callback, a key's check):
 * such calls hold at most half the clients (POOL_OPEN_SHARE), so that a flood of them while the
 * service is slow leaves the rest to the callers who proved who they are. */
json_t *pool_call (pool_t *p, const char *op, json_t *args, int timeout_ms, const char *rid_base, int open);
/* Clients open calls may hold at once: half, at least one. */
int pool_open_max (int size);
#endif
