/* registry.h - the workers a broker can see, their heartbeats, and who owns which partition */
#ifndef FERRULE_REGISTRY_H
#define FERRULE_REGISTRY_H
#include <stddef.h>
#include <stdint.h>

#define REGISTRY_MAX_WORKER_ID 128
#define REGISTRY_KEY_LEN 40                /* a CURVE public key in Z85 */

typedef struct registry registry_t;

registry_t *registry_new (uint32_t partitions, int64_t heartbeat_timeout_ms);
void registry_destroy (registry_t **r_p);

/* A HELLO from a worker: adds it (returns 1: the partition map changed) or refreshes it (0).
 * A draining worker keeps its in-flight requests but owns no partitions. pid and session name
 * the process (-1 and 0 when the HELLO had none). */
int registry_seen (registry_t *r, const char *worker_id, int draining, int64_t pid, int64_t session,
                   int64_t now_ms);
/* 1 when a HELLO with this pid and session comes from another process than the worker known
 * under that id: the old one restarted (or was replaced) faster than its heartbeats expired, and
 * will answer nothing it was sent; the caller removes it before registry_seen. */
int registry_restarted (const registry_t *r, const char *worker_id, int64_t pid, int64_t session);
/* Records the connection (guard_connection) a known worker's HELLO came on, and returns the one
 * recorded before (0: none; connection 0 records nothing). Another one than before, from the same
 * process: its connection broke and ZeroMQ made another, and what was sent on the old one may
 * never have reached it. */
uint64_t registry_connection (registry_t *r, const char *worker_id, uint64_t connection);
/* Records the CURVE key (Z85, REGISTRY_KEY_LEN characters) a known worker's HELLO came with, so
 * that a reload of the allow-lists can drop a worker whose key it removed at once, not at the
 * worker's next message. NULL or another length: none (plaintext). */
void registry_set_key (registry_t *r, const char *worker_id, const char *z85);
/* Any other message from a worker (a REP): proves it alive, and changes nothing else; a draining
 * worker stays draining until its own HELLO says otherwise. 0 when the worker is unknown. */
int registry_touch (registry_t *r, const char *worker_id, int64_t now_ms);
/* Removes a worker (BYE with nothing in flight, heartbeat expired, or unreachable). Returns 1 if it existed. */
int registry_remove (registry_t *r, const char *worker_id);
/* Moves every worker's last sign of life ms later, but never past now_ms: time in which the broker
 * did not run (stopped, starved) is no worker's silence, and what the workers said meanwhile still
 * waits to be read; a worker already heard after it is not credited it again. */
void registry_discount (registry_t *r, int64_t ms, int64_t now_ms);
/* Worker ids whose heartbeat expired at now_ms; caller removes them. Returns the count, ids into out. */
size_t registry_expired (const registry_t *r, int64_t now_ms, char out [][REGISTRY_MAX_WORKER_ID + 1], size_t max);

/* Owner of a partition, or NULL when no live worker exists. */
const char *registry_owner (const registry_t *r, uint32_t partition);
uint32_t registry_partitions (const registry_t *r);
uint32_t registry_partitions_owned (const registry_t *r);
size_t registry_live_count (const registry_t *r);         /* not draining */
size_t registry_count (const registry_t *r);              /* all known */
/* Worker i (0..registry_count-1): id and whether it is draining. */
const char *registry_worker_at (const registry_t *r, size_t i, int *draining);
/* Worker i's key as registry_set_key recorded it; "" when none was. */
const char *registry_key_at (const registry_t *r, size_t i);
int registry_known (const registry_t *r, const char *worker_id);
#endif
