/* broker.h - the routing process: clients in at the frontend, workers at the backend */
#ifndef FERRULE_BROKER_H
#define FERRULE_BROKER_H
#include <stdint.h>
#include <signal.h>

typedef struct {
    const char *frontend_bind;
    const char *backend_bind;
    int64_t partitions;
    int64_t heartbeat_ms;          /* PING interval; a worker is lost after 3 silent intervals */
    int64_t max_pending;           /* requests accepted and not yet answered */
    int64_t default_deadline_ms;
    int64_t hwm;                   /* ZeroMQ queue bound per peer */
    const char *http_bind;         /* /healthz, /readyz, /metrics; NULL: not served */
} broker_config_t;

typedef struct broker broker_t;

broker_t *broker_new (const broker_config_t *config, char *err, size_t errlen);
void broker_destroy (broker_t **b_p);
/* Runs until *stop becomes 2, or until it is 1 and every pending request has been answered. */
int broker_run (broker_t *b, volatile sig_atomic_t *stop);
#endif
