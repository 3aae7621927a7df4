/* requests.h - one request from a broker: decoded, checked, and run by its operation */
#ifndef FERRULE_REQUESTS_H
#define FERRULE_REQUESTS_H
#include "context.h"

/* Reads the request's id and operation and runs it; every path answers job exactly once (now, or
 * when the refresh or provider call it joined ends). */
void requests_handle (worker_t *w, job_t *job, const msgpack_object *root);
/* Before requests_handle: 1 when the request is to run; 0 when it is a broker's copy of an
 * administering request this worker is working on (dropped: the first answers) or answered
 * (answered again the same), once.c. */
int requests_once (worker_t *w, job_t *job, const msgpack_object *root, const void *body, size_t len);
/* A cache hit answered from the undecoded body (its common form only): 1 when job was answered,
 * 0 when the request must go the whole way (decoded, then requests_handle). */
int requests_hit (worker_t *w, job_t *job, const void *body, size_t len);
#endif
