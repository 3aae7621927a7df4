/* share.h - each client's share of the pending requests: how many it has waiting, and their
 * bytes, so that one client cannot take every slot of FERRULE_MAX_PENDING or every byte of
 * FERRULE_MAX_PENDING_BYTES and leave every other client "overloaded". A holder is a number: under
 * CURVE the client's name (share_holder_of_name), whatever connections it sends on; over plaintext,
 * which knows no client, the connection's (guard_connection). */
#ifndef FERRULE_SHARE_H
#define FERRULE_SHARE_H
#include <stddef.h>
#include <stdint.h>

typedef struct share share_t;

share_t *share_new (void);
void share_destroy (share_t **s_p);
/* The holder for a client's name: never 0, and never a connection's number (those count up from
 * 1 and stay below 2^63). */
uint64_t share_holder_of_name (const char *name);
/* Requests pending for holder and their bytes. Holder 0 (a connection unknown: over inproc://, or
 * before its accept was read) is never counted, so has none. */
void share_held (const share_t *s, uint64_t holder, size_t *requests, size_t *bytes);
/* One more request of bytes pending for holder, looked up once: unless it holds most requests
 * already, or bytes would bring what it holds past most_bytes (a holder with nothing pending gets
 * its one request whatever its size); then -1, nothing taken, and what it holds in *requests and
 * *held_bytes. share_give when the request is answered. */
int share_take (share_t *s, uint64_t holder, size_t bytes, size_t most, size_t most_bytes, size_t *requests,
                size_t *held_bytes);
void share_give (share_t *s, uint64_t holder, size_t bytes);
#endif
