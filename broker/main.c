/* ferrule-broker: routes token requests to the worker that owns each integration's partition */
#include "broker.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "ring.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop_requested = 0;

int
main (int argc, char **argv)
{
    char *frontend = NULL, *backend = NULL, *log_level = NULL, *http_bind = NULL;
    int64_t partitions = 0, heartbeat_ms = 0, max_pending = 0, deadline_ms = 0, hwm = 0;
    const config_entry_t table [] = {
        { "frontend", "FERRULE_FRONTEND_BIND", CONFIG_STRING, &frontend, "tcp://127.0.0.1:5555", 0, 0, 0, "endpoint clients connect to" },
        { "backend", "FERRULE_BACKEND_BIND", CONFIG_STRING, &backend, "tcp://127.0.0.1:5556", 0, 0, 0, "endpoint workers connect to" },
        { "partitions", "FERRULE_PARTITIONS", CONFIG_INT, &partitions, "256", 1, RING_MAX_PARTITIONS, 0, "number of partitions; the same on every broker" },
        { "heartbeat-ms", "FERRULE_HEARTBEAT_MS", CONFIG_INT, &heartbeat_ms, "1000", 50, 60000, 0, "heartbeat interval; a worker is lost after 3 silent intervals" },
        { "max-pending", "FERRULE_MAX_PENDING", CONFIG_INT, &max_pending, "100000", 1, 10000000, 0, "requests queued before new ones get \"overloaded\"" },
        { "default-deadline-ms", "FERRULE_DEFAULT_DEADLINE_MS", CONFIG_INT, &deadline_ms, "5000", 1, 300000, 0, "deadline for requests that set none" },
        { "hwm", "FERRULE_ZMQ_HWM", CONFIG_INT, &hwm, "10000", 10, 1000000, 0, "ZeroMQ high-water mark per peer" },
        { "http-bind", "FERRULE_HTTP_BIND", CONFIG_STRING, &http_bind, NULL, 0, 0, 0, "HOST:PORT for /healthz, /readyz and /metrics (unset: not served)" },
        { "log-level", "FERRULE_LOG_LEVEL", CONFIG_STRING, &log_level, "info", 0, 0, 0, "debug, info, warning or error" },
        CONFIG_END
    };
    char err [512];
    int rc;
    if (!daemon_configure (table, "ferrule-broker", "broker", argc, argv, &log_level, &rc))
        return rc;
    log_init ("broker", frontend);
    config_log (table);
    daemon_signals (&stop_requested);

    broker_config_t cfg = { frontend, backend, partitions, heartbeat_ms, max_pending, deadline_ms, hwm, http_bind };
    broker_t *broker = broker_new (&cfg, err, sizeof err);
    if (!broker) {
        log_error (NULL, NULL, "%s", err);
        config_free (table);
        return 1;
    }
    rc = broker_run (broker, &stop_requested);
    broker_destroy (&broker);
    config_free (table);
    return rc == 0 ? 0 : 1;
}
