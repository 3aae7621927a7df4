/* once.h - a broker request that changes something runs at most once in this worker.
 *
 * A broker sends again what it had in flight to a worker whose connection broke and came back
 * (broker_worker_reconnected) or that it counted lost: a copy of a request the worker is still
 * working on, or answered on the connection that broke. Run twice, a callback's copy finds its
 * state spent and answers "state_invalid" at once, which the broker forwards while the original
 * is still exchanging the code; an apikey_create makes a second key. Each such request is
 * remembered here by where it came from (link, the client's routing id, the broker's sequence)
 * and a hash of its body, until its deadline: a copy of one in flight is dropped (the original
 * answers), a copy of one answered gets the same answer again. Reads are not remembered: running
 * them twice is harmless, and token requests are the hot path (nor is apikey_verify, requests.c). */
#ifndef FERRULE_ONCE_H
#define FERRULE_ONCE_H
#include <stddef.h>
#include <stdint.h>

#define ONCE_MAX_ENTRIES 10000          /* remembered requests; past it the oldest are forgotten */
#define ONCE_MAX_BYTES (8u << 20)       /* and the answers they keep */

typedef struct once once_t;

typedef enum {
    ONCE_NEW = 0,       /* not seen: run it (now remembered as in flight) */
    ONCE_RUNNING,       /* a copy is being worked on: drop this one */
    ONCE_ANSWERED,      /* answered: send *reply again */
} once_state_t;

once_t *once_new (void);
void once_destroy (once_t **o_p);
/* The answer kept for a request's copies: its body and its outcome (the result code). */
typedef struct {
    const char *body;
    size_t len;
    const char *outcome;
} once_reply_t;

/* Looks up, and remembers when new, the request with this origin and body until deadline_ms
 * (monotonic). For ONCE_ANSWERED, *reply is the answer (valid until the next call). */
once_state_t once_begin (once_t *o, int link, const void *client, size_t client_len, const unsigned char seq [8],
                         const void *body, size_t body_len, int64_t deadline_ms, int64_t now_ms, once_reply_t *reply);
/* The answer to the request with this origin, kept for its copies; nothing when it is not
 * remembered (forgotten, or a request that was not). */
void once_answered (once_t *o, int link, const void *client, size_t client_len, const unsigned char seq [8],
                    const once_reply_t *reply);
size_t once_count (const once_t *o);
/* Requests forgotten before their deadline to stay within the bounds above. */
uint64_t once_forgotten (const once_t *o);
#endif
