/* ratelimit.h - token buckets per integration for the calls that reach the provider on a
 * client's behalf (refresh, connect), so one client cannot make the provider rate-limit the
 * whole OAuth app */
#ifndef FERRULE_RATELIMIT_H
#define FERRULE_RATELIMIT_H
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_MAX_ENTRIES 100000      /* integrations tracked at once; full buckets are pruned */

typedef struct ratelimit ratelimit_t;

/* burst calls at once, then per_min a minute. */
ratelimit_t *ratelimit_new (int64_t burst, int64_t per_min);
void ratelimit_destroy (ratelimit_t **rl_p);
/* Takes one call from key's bucket at monotonic time now_ms: 0 when allowed, else the whole
 * seconds (at least 1) until the next call will be; RATELIMIT_FULL for a key not tracked while
 * every entry of the table is a bucket in use (not the key's limit: the table's; its refilled
 * buckets are looked for at most once a second, each look reading all of them). */
#define RATELIMIT_FULL (-1)
int64_t ratelimit_take (ratelimit_t *rl, const char *key, int64_t now_ms);
size_t ratelimit_count (const ratelimit_t *rl);
/* How many times the table was scanned for refilled buckets. */
uint64_t ratelimit_scans (const ratelimit_t *rl);

struct worker;
struct job;
/* The calls limited, each charged where it is known to go on: a refresh of an active integration
 * and a well-formed connect (or retry), and a token request whose rejected token starts a forced
 * refresh (requests.c); all take from the integration's one bucket. */
typedef enum { RATELIMIT_REFRESH, RATELIMIT_CONNECT, RATELIMIT_REJECT } ratelimit_call_t;
/* 1 when the call may go on; 0 after replying "rate_limited" with retry_after. */
int ratelimit_admit (struct worker *w, struct job *job, ratelimit_call_t call, const char *id);
#endif
