/* disconnect.h - op "disconnect": the stored tokens destroyed at once, then revoked at the
 * provider (RFC 7009) when it has an endpoint for it */
#ifndef FERRULE_DISCONNECT_H
#define FERRULE_DISCONNECT_H
#include "context.h"

void disconnect_run (worker_t *w, job_t *job, const char *id);
#endif
