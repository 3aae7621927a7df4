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
static volatile sig_atomic_t reload_requested = 0;

int
main (int argc, char **argv)
{
    char *frontend = NULL, *backend = NULL, *log_level = NULL, *http_bind = NULL, *secret_file = NULL,
         *clients_file = NULL, *workers_file = NULL, *policy_file = NULL, *audit = NULL, *plaintext = NULL,
         *audit_failure = NULL;
    int64_t partitions = 0, heartbeat_ms = 0, max_pending = 0, deadline_ms = 0, hwm = 0, pending_bytes = 0,
            budget = 0, unread_bytes = 0, pending_share = 0, unfinished = 0;
    curve_identity_t curve;
    const config_entry_t table [] = {
        { "frontend", "FERRULE_FRONTEND_BIND", CONFIG_STRING, &frontend, "tcp://127.0.0.1:5555", 0, 0, 0, "endpoint clients connect to" },
        { "backend", "FERRULE_BACKEND_BIND", CONFIG_STRING, &backend, "tcp://127.0.0.1:5556", 0, 0, 0, "endpoint workers connect to" },
        { "partitions", "FERRULE_PARTITIONS", CONFIG_INT, &partitions, "256", 1, RING_MAX_PARTITIONS, 0, "number of partitions; the same on every broker" },
        { "heartbeat-ms", "FERRULE_HEARTBEAT_MS", CONFIG_INT, &heartbeat_ms, "1000", 50, 60000, 0, "heartbeat interval; a worker is lost after 3 silent intervals" },
        { "max-pending", "FERRULE_MAX_PENDING", CONFIG_INT, &max_pending, "100000", 1, 10000000, 0, "requests queued before new ones get \"overloaded\"" },
        { "default-deadline-ms", "FERRULE_DEFAULT_DEADLINE_MS", CONFIG_INT, &deadline_ms, "5000", 1, 300000, 0, "deadline for requests that set none" },
        { "hwm", "FERRULE_ZMQ_HWM", CONFIG_INT, &hwm, "10000", 10, 1000000, 0, "ZeroMQ high-water mark per peer" },
        { "max-pending-bytes", "FERRULE_MAX_PENDING_BYTES", CONFIG_INT, &pending_bytes, "268435456", 1048576, 68719476736LL, 0, "request bytes held for pending requests before new ones get \"overloaded\"" },
        { "pending-share", "FERRULE_PENDING_SHARE", CONFIG_INT, &pending_share, "25", 1, 100, 0, "percent of max-pending and of max-pending-bytes one client (all its connections) may hold before its new requests get \"overloaded\"" },
        { "connection-budget", "FERRULE_CONNECTION_BUDGET", CONFIG_INT, &budget, "1048576", 524288, 1073741824, 0, "bytes one connection may hold unread (an unfinished message) before it is cut" },
        { "unfinished-bytes", "FERRULE_UNFINISHED_BYTES", CONFIG_INT, &unfinished, "16777216", 1048576, 68719476736LL, 0, "bytes of unfinished messages all client connections together may hold before those holding the most are cut" },
        { "unread-answer-bytes", "FERRULE_UNREAD_ANSWER_BYTES", CONFIG_INT, &unread_bytes, "33554432", 1048576, 68719476736LL, 0, "bytes of answers clients leave unread, in all, before the connection holding the most is cut" },
        { "curve-secret-key-file", "FERRULE_CURVE_SECRET_KEY_FILE", CONFIG_STRING, &secret_file, NULL, 0, 0, 0, "file holding the brokers' CURVE secret key (ferrulectl keygen)" },
        { "clients-file", "FERRULE_CLIENTS_FILE", CONFIG_STRING, &clients_file, NULL, 0, 0, 0, "allow-list of client keys: NAME Z85KEY per line" },
        { "workers-file", "FERRULE_WORKERS_FILE", CONFIG_STRING, &workers_file, NULL, 0, 0, 0, "allow-list of worker keys: WORKERID Z85KEY per line" },
        { "policy-file", "FERRULE_POLICY_FILE", CONFIG_STRING, &policy_file, NULL, 0, 0, 0, "per-client operations and integration patterns (unset: all)" },
        { "audit-log", "FERRULE_AUDIT_LOG", CONFIG_STRING, &audit, "-", 0, 0, 0, "audit records: a file, \"-\" for standard output, or \"off\"" },
        { "audit-failure", "FERRULE_AUDIT_FAILURE", CONFIG_STRING, &audit_failure, "serve", 0, 0, 0, "while the audit log cannot be written: \"serve\" requests (their records held, up to the queue) or \"refuse\" them (unavailable; the broker not ready)" },
        { "allow-plaintext", "FERRULE_ALLOW_PLAINTEXT", CONFIG_STRING, &plaintext, NULL, 0, 0, 0, "1: run without CURVE (no authentication, no encryption; tests only)" },
        { "http-bind", "FERRULE_HTTP_BIND", CONFIG_STRING, &http_bind, NULL, 0, 0, 0, "HOST:PORT for /healthz, /readyz and /metrics (unset: not served)" },
        { "log-level", "FERRULE_LOG_LEVEL", CONFIG_STRING, &log_level, "info", 0, 0, 0, "debug, info, warning or error" },
        CONFIG_END
    };
    char err [512];
    int rc;
    daemon_signals (&stop_requested, &reload_requested);
    if (!daemon_configure (table, "ferrule-broker", "broker", argc, argv, &log_level, &rc))
        return rc;
    log_init ("broker", frontend);
    config_log (table);
    /* keys come from the environment's files only; the table above shows them in --help */
    curve_env_set (secret_file, NULL, plaintext);
    if (curve_identity_from_env (&curve, 0, err, sizeof err) != FR_OK) {
        log_error (NULL, NULL, "%s", err);
        config_free (table);
        return 2;
    }
    if (curve.plaintext)
        log_warning (NULL, NULL, "running in plaintext (%s=1): any peer that reaches the broker's ports may use "
                     "every integration and read every token; use CURVE keys outside tests", CURVE_ENV_PLAINTEXT);

    broker_config_t cfg = { frontend, backend, partitions, heartbeat_ms, max_pending, deadline_ms, hwm, http_bind,
                            &curve, clients_file, workers_file, policy_file, audit, pending_bytes, budget, audit_failure,
                            unread_bytes, pending_share, unfinished };
    sigset_t saved;
    daemon_setup_begin (&saved);
    int bad_setting = 0;
    broker_t *broker = broker_new (&cfg, &bad_setting, err, sizeof err);
    daemon_setup_done (&saved);             /* a reload or a stop sent meanwhile is taken now */
    curve_identity_clear (&curve);
    if (!broker) {
        log_error (NULL, NULL, "%s", err);
        config_free (table);
        return bad_setting ? 2 : 1;
    }
    rc = broker_run (broker, &stop_requested, &reload_requested);
    broker_destroy (&broker);
    config_free (table);
    return rc == 0 ? 0 : 1;
}
