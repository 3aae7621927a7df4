/* share.h - each client connection's share of the pending requests: how many it has waiting,
 * and their bytes, so that one connection cannot take every slot of FERRULE_MAX_PENDING or every
 * byte of FERRULE_MAX_PENDING_BYTES and leave every other client "overloaded" */
#ifndef FERRULE_SHARE_H
#define FERRULE_SHARE_H
#include <stddef.h>
#include <stdint.h>

typedef struct share share_t;

share_t *share_new (void);
void share_destroy (share_t **s_p);
/* Requests pending for connection conn (its number, guard_connection) and their bytes. Connection
 * 0 (unknown: over inproc://, or before its accept was read) is never counted, so has none. */
void share_held (const share_t *s, uint64_t conn, size_t *requests, size_t *bytes);
/* One more request of bytes pending for conn, looked up once: unless conn holds most requests
 * already, or bytes would bring what it holds past most_bytes (a connection holding nothing gets
 * its one request whatever its size); then -1, nothing taken, and what it holds in *requests and
 * *held_bytes. share_give when the request is answered. */
int share_take (share_t *s, uint64_t conn, size_t bytes, size_t most, size_t most_bytes, size_t *requests,
                size_t *held_bytes);
void share_give (share_t *s, uint64_t conn, size_t bytes);
#endif
