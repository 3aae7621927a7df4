/* events.h - event delivery: one thread per configured webhook endpoint sends the outbox's
 * events to it, and one more writes the "expiring" forecasts and counts the deliveries, each
 * with its own database connection (and curl handle), so that neither the worker's loop nor
 * another endpoint ever waits on one that hangs; and the operations that list, replay and test
 * them. */
#ifndef FERRULE_EVENTS_H
#define FERRULE_EVENTS_H
#include "ops.h"
#include <stddef.h>
#include <stdint.h>
#include "breaker.h"
#include "catalog.h"
#include "codec.h"
#include "metrics.h"

typedef struct {
    const char *worker_id;
    const char *database_url;        /* secret */
    const char *webhooks_file;       /* NULL or "": no endpoints (events are still recorded) */
    int64_t max_age_s;               /* retries stop this long after the first attempt: failed */
    int64_t backoff_base_ms;         /* first wait after a failed attempt; doubles, with jitter */
    int64_t backoff_max_ms;          /* at least backoff_base_ms: events_config_check */
    int64_t timeout_ms;              /* one HTTP attempt, all included */
    int64_t lease_ms;                /* a claimed delivery's lease: events_config_check */
    int64_t poll_ms;                 /* due deliveries are looked for at least this often */
    int64_t forecast_ms;             /* how often the expiring forecasts run */
    int64_t statement_ms;            /* the thread's statement timeout */
} events_config_t;

typedef struct events events_t;

#define EVENTS_LEASE_MARGIN_MS 500   /* the lease's room beyond one attempt: the claim's own time */

/* 0 when a delivery's lease leaves room for an attempt and its claim, and the longest wait between
 * attempts is at least the first; else -1 and why in err. Checked with the rest of the
 * configuration, before the worker connects. */
int events_config_check (int64_t timeout_ms, int64_t lease_ms, int64_t backoff_base_ms, int64_t backoff_max_ms,
                         char *err, size_t errlen);

/* The breaker that holds an endpoint whose attempts keep failing, as its delivery thread makes
 * it from cfg (its peers are endpoint names). */
breaker_t *events_hold_new (const events_config_t *cfg);

/* Reads the endpoints, registers the metrics and starts the threads. NULL with a reason. */
events_t *events_new (const events_config_t *cfg, const catalog_t *catalog, metrics_t *metrics,
                      char *err, size_t errlen);
/* Makes the delivery threads look for due deliveries now: the loop calls it when its main
 * connection hears that events were recorded. Safe from any thread; NULL is ignored. */
void events_wake (events_t *ev);
/* Stops the threads (an attempt in flight is abandoned: its lease expires and another worker sends
 * it again; the claimed deliveries not yet attempted are given back, the stop waiting a second at
 * most for the database), frees, nulls *ev_p; safe twice. */
void events_destroy (events_t **ev_p);

/* The operations, served from the worker's loop (requests.c dispatches): "events",
 * "events_replay", "webhook_test", "webhooks". Each sends its reply, from its batch's end when it
 * reads or writes the database (queued for a free connection of the loop's, dbwait.c). */
struct worker;
struct job;
void events_op_list (struct worker *w, struct job *job, const msgpack_object *root);
void events_op_replay (struct worker *w, struct job *job, const msgpack_object *root);
void events_op_webhook_test (struct worker *w, struct job *job, const msgpack_object *root);
void events_op_webhooks (struct worker *w, struct job *job, const msgpack_object *root);
/* Dispatches one of them (ops_is_deployment_wide (op)). */
void events_handle (struct worker *w, struct job *job, op_t op, const msgpack_object *root);
#endif
