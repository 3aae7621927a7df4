/* worker.h - the worker process: one poll loop serving the partitions the brokers route to it.
 * The loop is the top of worker/: it imports every module and no module imports it. */
#ifndef FERRULE_WORKER_H
#define FERRULE_WORKER_H
#include <signal.h>
#include "context.h"

worker_t *worker_new (const worker_config_t *cfg, char *err, size_t errlen);
void worker_destroy (worker_t **w_p);
int worker_run (worker_t *w, volatile sig_atomic_t *stop);
#endif
