/* doctor.h - explains what is wrong with an integration, in the troubleshooting guide's form:
 * symptom, cause, what to do, and the facts from its status and history that led there
 * (private to worker/) */
#ifndef FERRULE_DOCTOR_H
#define FERRULE_DOCTOR_H
#include "context.h"

#define DOCTOR_HISTORY 50           /* chain rows read */

/* op "doctor": replies {"ok": true, "diagnosis": {code, integration, provider, status, symptom,
 * cause, what_to_do: [str], facts: [str]}}. An id that never connected but has failed connect
 * attempts is diagnosed from them; otherwise an unknown id is not_found. */
void doctor_run (worker_t *w, job_t *job, const char *id);
#endif
