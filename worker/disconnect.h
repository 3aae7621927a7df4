/* disconnect.h - op "disconnect": the stored tokens destroyed at once, then revoked at the
 * provider (RFC 7009) when it has an endpoint for it */
#ifndef FERRULE_DISCONNECT_H
#define FERRULE_DISCONNECT_H
#include "context.h"

void disconnect_run (worker_t *w, job_t *job, const char *id);
/* Sends again the revocations whose wait after a transient failure has passed. */
void disconnect_tick (worker_t *w, int64_t now);
/* When the next of them is due (monotonic ms), or -1 when none waits. */
int64_t disconnect_next_due (const worker_t *w);
#endif
