/* broker.h - the routing process: clients in at the frontend, workers at the backend */
#ifndef FERRULE_BROKER_H
#define FERRULE_BROKER_H
#include <stdint.h>
#include <signal.h>
#include "curve.h"

typedef struct {
    const char *frontend_bind;
    const char *backend_bind;
    int64_t partitions;
    int64_t heartbeat_ms;          /* PING interval; a worker is lost after 3 silent intervals */
    int64_t max_pending;           /* requests accepted and not yet answered */
    int64_t default_deadline_ms;
    int64_t hwm;                   /* ZeroMQ queue bound per peer */
    const char *http_bind;         /* /healthz, /readyz, /metrics; NULL: not served */
    const curve_identity_t *curve; /* the server key, or plaintext (copied) */
    const char *clients_file;      /* allow-list of client keys (CURVE only) */
    const char *workers_file;      /* allow-list of worker keys (CURVE only) */
    const char *policy_file;       /* NULL: every listed client may do everything */
    const char *audit;             /* file path, "-" for standard output, NULL or "off": none */
    int64_t max_pending_bytes;     /* request bodies held for pending requests, in all */
    int64_t connection_budget;     /* bytes one connection may hold unread in a socket */
    const char *audit_failure;     /* while the audit log cannot be written: "serve" (NULL) the
                                      requests, their records held up to the queue, or "refuse" them */
    int64_t unread_bytes;          /* answers sent to clients and not read, in all, before the
                                      connection holding the most is cut; 0: unbounded */
    int64_t pending_share;         /* percent of max_pending and of max_pending_bytes one client
                                      connection may hold; 0: no share */
    int64_t unfinished_bytes;      /* bytes of unfinished messages all client connections may
                                      hold, before those holding the most are cut; 0: unbounded */
} broker_config_t;

typedef struct broker broker_t;

/* NULL with a reason on failure; *bad_setting then says whether a setting or a file it names is
 * at fault (an allow-list or policy that cannot be read or parsed, a value out of range: the
 * operator's to mend, exit status 2) rather than the moment (a port taken). */
broker_t *broker_new (const broker_config_t *config, int *bad_setting, char *err, size_t errlen);
void broker_destroy (broker_t **b_p);
/* Runs until *stop becomes 2, or until it is 1 and every pending request has been answered.
 * Each time *reload is set (SIGHUP) the allow-lists and the policy are read again (and the
 * audit file reopened); *reload is cleared. */
int broker_run (broker_t *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);
#endif
