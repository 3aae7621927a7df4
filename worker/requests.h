/* requests.h - one request from a broker: decoded, checked, and run by its operation */
#ifndef FERRULE_REQUESTS_H
#define FERRULE_REQUESTS_H
#include "context.h"

/* Reads the request's id and operation and runs it; every path answers job exactly once (now, or
 * when the refresh or provider call it joined ends). A broker's copy of an administering request
 * this worker is working on or has answered (body: the request as received) is not run again
 * (once.c). */
void requests_handle (worker_t *w, job_t *job, const msgpack_object *root, const void *body, size_t body_len);
/* A cache hit answered from the undecoded body (its common form only): 1 when job was answered,
 * 0 when the request must go the whole way (decoded, then requests_handle). */
int requests_hit (worker_t *w, job_t *job, const void *body, size_t len);
#endif
