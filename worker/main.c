/* ferrule-worker: serves the partitions the brokers route to it */
#include "worker.h"
#include "events.h"
#include "config.h"
#include "daemon.h"
#include "dburl.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

int
main (int argc, char **argv)
{
    char *secret_file = NULL, *broker_key_file = NULL, *plaintext = NULL;
    char *worker_id = NULL, *database_url = NULL, *backends = NULL, *providers = NULL, *key = NULL,
         *old_keys = NULL, *fingerprint_key = NULL, *journal = NULL, *log_level = NULL, *http_bind = NULL;
    int64_t heartbeat_ms, min_valid, lease_ms, connect_ms, timeout_ms, max_body, drain_ms, hwm, partitions;
    int64_t idle_connections, dns_refresh_ms;
    int64_t sweep_ms, sweep_horizon, sweep_rate, sweep_batch;
    int64_t backoff_base, backoff_max, breaker_min, breaker_window, breaker_open, state_ttl;
    int64_t db_statement_ms, db_lock_ms, db_connect_ms, revalidate_ms, db_batch_connection;
    int64_t key_stats_ms, admin_burst, admin_per_min, failover_keep_ms, failover_keep_max_mb;
    /* event delivery (events.c) */
    char *webhooks_file = NULL;
    int64_t wh_max_age, wh_base, wh_max, wh_timeout, wh_lease, ev_poll, ev_forecast;
    const config_entry_t table [] = {
        { "worker-id", "FERRULE_WORKER_ID", CONFIG_STRING, &worker_id, NULL, 0, 0, 0, "stable id of this worker (default: hostname)" },
        { "database-url", "FERRULE_DATABASE_URL", CONFIG_STRING, &database_url, NULL, 0, 0, 1, "PostgreSQL connection string (or FERRULE_DATABASE_URL_FILE)" },
        { "brokers", "FERRULE_BROKER_BACKENDS", CONFIG_STRING, &backends, "tcp://127.0.0.1:5556", 0, 0, 0, "comma-separated broker backend endpoints" },
        { "broker-dns-refresh-ms", "FERRULE_BROKER_DNS_REFRESH_MS", CONFIG_INT, &dns_refresh_ms, "30000", 100, 3600000, 0, "how often the dns+tcp:// names of the broker backends are resolved again" },
        { "providers", "FERRULE_PROVIDERS_FILE", CONFIG_STRING, &providers, NULL, 0, 0, 0, "JSON file adding or overriding provider entries" },
        { "encryption-key", "FERRULE_ENCRYPTION_KEY", CONFIG_STRING, &key, NULL, 0, 0, 1, "base64 of 32 bytes: seals tokens at rest (or FERRULE_ENCRYPTION_KEY_FILE)" },
        { "old-encryption-keys", "FERRULE_ENCRYPTION_OLD_KEYS", CONFIG_STRING, &old_keys, NULL, 0, 0, 1, "comma-separated retired keys, still accepted for reading (or ..._FILE)" },
        { "fingerprint-key", "FERRULE_FINGERPRINT_KEY", CONFIG_STRING, &fingerprint_key, NULL, 0, 0, 1, "base64 of 32 bytes: keys refresh token fingerprints (default: derived from the encryption key)" },
        { "journal", "FERRULE_JOURNAL_PATH", CONFIG_STRING, &journal, NULL, 0, 0, 0, "local journal of rotated tokens (default: ferrule-<worker id>.journal)" },
        { "partitions", "FERRULE_PARTITIONS", CONFIG_INT, &partitions, "256", 1, 65536, 0, "number of partitions (the brokers' value is the one used)" },
        { "heartbeat-ms", "FERRULE_HEARTBEAT_MS", CONFIG_INT, &heartbeat_ms, "1000", 50, 60000, 0, "heartbeat interval" },
        { "min-valid", "FERRULE_MIN_VALID", CONFIG_INT, &min_valid, "60", 0, 86400, 0, "default seconds a served token must stay valid" },
        { "provider-connect-timeout-ms", "FERRULE_PROVIDER_CONNECT_TIMEOUT_MS", CONFIG_INT, &connect_ms, "5000", 100, 60000, 0, "provider connect timeout" },
        { "provider-timeout-ms", "FERRULE_PROVIDER_TIMEOUT_MS", CONFIG_INT, &timeout_ms, "15000", 100, 120000, 0, "provider call timeout, all included" },
        { "lease-ms", "FERRULE_LEASE_MS", CONFIG_INT, &lease_ms, "45000", 1000, 600000, 0, "refresh lease; must exceed the provider timeout" },
        { "provider-idle-connections", "FERRULE_PROVIDER_IDLE_CONNECTIONS", CONFIG_INT, &idle_connections, "64", 1, 10000, 0, "connections to providers kept open between calls (a burst of more calls than this makes new ones)" },
        { "max-provider-body", "FERRULE_MAX_PROVIDER_BODY", CONFIG_INT, &max_body, "65536", 1024, 1048576, 0, "largest provider answer read" },
        { "drain-ms", "FERRULE_DRAIN_MS", CONFIG_INT, &drain_ms, "25000", 0, 600000, 0, "how long SIGTERM waits for refreshes in flight" },
        { "connect-state-ttl-s", "FERRULE_CONNECT_STATE_TTL_S", CONFIG_INT, &state_ttl, "600", 60, 86400, 0, "how long a connect's authorization link stays usable" },
        { "backoff-base-ms", "FERRULE_BACKOFF_BASE_MS", CONFIG_INT, &backoff_base, "1000", 0, 3600000, 0, "first wait after a transient provider failure; doubles per failure, with jitter" },
        { "backoff-max-ms", "FERRULE_BACKOFF_MAX_MS", CONFIG_INT, &backoff_max, "300000", 0, 86400000, 0, "longest wait between attempts for one integration" },
        { "breaker-min-failures", "FERRULE_BREAKER_MIN_FAILURES", CONFIG_INT, &breaker_min, "5", 1, 1000000, 0, "failures in the window that open a provider's circuit (if also half the calls)" },
        { "breaker-window-ms", "FERRULE_BREAKER_WINDOW_MS", CONFIG_INT, &breaker_window, "30000", 100, 3600000, 0, "window over which provider failures are counted" },
        { "breaker-open-ms", "FERRULE_BREAKER_OPEN_MS", CONFIG_INT, &breaker_open, "30000", 100, 3600000, 0, "how long an open circuit refuses calls before one probe" },
        { "db-statement-timeout-ms", "FERRULE_DB_STATEMENT_TIMEOUT_MS", CONFIG_INT, &db_statement_ms, "0", 0, 60000, 0, "longest a database statement may keep the loop waiting (0: the heartbeat interval)" },
        { "db-lock-timeout-ms", "FERRULE_DB_LOCK_TIMEOUT_MS", CONFIG_INT, &db_lock_ms, "0", 0, 60000, 0, "longest a statement waits for a row lock (0: a quarter of the statement timeout)" },
        { "db-connect-timeout-ms", "FERRULE_DB_CONNECT_TIMEOUT_MS", CONFIG_INT, &db_connect_ms, "0", 0, 60000, 0, "longest a connection attempt may take (0: the heartbeat interval)" },
        { "db-batch-connection", "FERRULE_DB_BATCH_CONNECTION", CONFIG_INT, &db_batch_connection, "1", 0, 1, 0, "1: a second database connection carries the refresh protocol's batches, so that one is sent while another is in flight (0: one connection)" },
        { "cache-revalidate-ms", "FERRULE_CACHE_REVALIDATE_MS", CONFIG_INT, &revalidate_ms, "30000", 100, 3600000, 0, "a cached integration is checked against the database when older than this, even without a change notification" },
        { "failover-keep-ms", "FERRULE_FAILOVER_KEEP_MS", CONFIG_INT, &failover_keep_ms, "30000", 0, 600000, 0, "rotated refresh commits are kept in memory this long (while connected) and written again if a new database connection finds them lost, as a failover with asynchronous replication loses them (0: not kept)" },
        { "failover-keep-max-mb", "FERRULE_FAILOVER_KEEP_MAX_MB", CONFIG_INT, &failover_keep_max_mb, "32", 1, 4096, 0, "the memory the kept refresh commits may take: past it the oldest are forgotten (ferrule_worker_failover_commits_forgotten_total)" },
        { "sweep-ms", "FERRULE_SWEEP_MS", CONFIG_INT, &sweep_ms, "30000", 100, 3600000, 0, "how often the background sweep runs" },
        { "sweep-horizon-s", "FERRULE_SWEEP_HORIZON_S", CONFIG_INT, &sweep_horizon, "300", 0, 86400, 0, "the sweep refreshes tokens expiring within this" },
        { "sweep-rate", "FERRULE_SWEEP_RATE", CONFIG_INT, &sweep_rate, "10", 1, 10000, 0, "provider calls per second per provider the sweep may start" },
        { "sweep-batch", "FERRULE_SWEEP_BATCH", CONFIG_INT, &sweep_batch, "500", 1, 100000, 0, "candidates read per sweep query" },
        { "key-stats-ms", "FERRULE_KEY_STATS_MS", CONFIG_INT, &key_stats_ms, "60000", 1000, 86400000, 0, "how often the values still sealed with a retired key are counted" },
        { "admin-rate-burst", "FERRULE_ADMIN_RATE_BURST", CONFIG_INT, &admin_burst, "10", 1, 1000000, 0, "refresh and connect calls one integration may make at once" },
        { "admin-rate-per-min", "FERRULE_ADMIN_RATE_PER_MIN", CONFIG_INT, &admin_per_min, "6", 1, 6000000, 0, "refresh and connect calls per minute per integration after the burst" },
        { "webhooks-file", "FERRULE_WEBHOOKS_FILE", CONFIG_STRING, &webhooks_file, NULL, 0, 0, 0, "JSON file of webhook endpoints that receive events (unset: events are recorded, not sent)" },
        { "webhook-max-age-s", "FERRULE_WEBHOOK_MAX_AGE_S", CONFIG_INT, &wh_max_age, "86400", 1, 2592000, 0, "how long an event's delivery is retried before it is marked failed" },
        { "webhook-backoff-base-ms", "FERRULE_WEBHOOK_BACKOFF_BASE_MS", CONFIG_INT, &wh_base, "1000", 100, 3600000, 0, "first wait after a failed webhook attempt; doubles per attempt, with jitter" },
        { "webhook-backoff-max-ms", "FERRULE_WEBHOOK_BACKOFF_MAX_MS", CONFIG_INT, &wh_max, "600000", 100, 86400000, 0, "longest wait between webhook attempts (at least the first)" },
        { "webhook-timeout-ms", "FERRULE_WEBHOOK_TIMEOUT_MS", CONFIG_INT, &wh_timeout, "10000", 100, 120000, 0, "one webhook attempt, connection included" },
        { "webhook-lease-ms", "FERRULE_WEBHOOK_LEASE_MS", CONFIG_INT, &wh_lease, "30000", 200, 600000, 0, "a claimed delivery's lease: after a worker dies another sends the event after this; must exceed the timeout by 500 ms" },
        { "events-poll-ms", "FERRULE_EVENTS_POLL_MS", CONFIG_INT, &ev_poll, "1000", 10, 60000, 0, "due deliveries are looked for at least this often (new events wake the thread at once)" },
        { "events-forecast-ms", "FERRULE_EVENTS_FORECAST_MS", CONFIG_INT, &ev_forecast, "3600000", 100, 86400000, 0, "how often the expiring forecasts run" },
        { "hwm", "FERRULE_ZMQ_HWM", CONFIG_INT, &hwm, "10000", 10, 1000000, 0, "ZeroMQ high-water mark" },
        { "curve-secret-key-file", "FERRULE_CURVE_SECRET_KEY_FILE", CONFIG_STRING, &secret_file, NULL, 0, 0, 0, "file holding this worker's CURVE secret key (ferrulectl keygen)" },
        { "broker-public-key-file", "FERRULE_BROKER_PUBLIC_KEY_FILE", CONFIG_STRING, &broker_key_file, NULL, 0, 0, 0, "file holding the brokers' CURVE public key (pinned)" },
        { "allow-plaintext", "FERRULE_ALLOW_PLAINTEXT", CONFIG_STRING, &plaintext, NULL, 0, 0, 0, "1: run without CURVE (no authentication, no encryption; tests only)" },
        { "http-bind", "FERRULE_HTTP_BIND", CONFIG_STRING, &http_bind, NULL, 0, 0, 0, "HOST:PORT for /healthz, /readyz and /metrics (unset: not served)" },
        { "log-level", "FERRULE_LOG_LEVEL", CONFIG_STRING, &log_level, "info", 0, 0, 0, "debug, info, warning or error" },
        CONFIG_END
    };
    char err [1024];
    int rc;
    curve_identity_t curve;
    memset (&curve, 0, sizeof curve);
    /* jansson holds providers' answers (tokens) in blocks of its own: wiped when freed */
    json_set_alloc_funcs (mem_alloc, mem_free_wiped);
    daemon_signals (&stop_requested, NULL);
    if (!daemon_configure (table, "ferrule-worker", "worker", argc, argv, &log_level, &rc))
        return rc;
    if (!worker_id) {
        char host [256] = "worker";
        gethostname (host, sizeof host - 1);
        worker_id = mem_strdup (host);
    }
    if (!ident_valid (worker_id, strlen (worker_id))) {
        log_error (NULL, NULL, "worker id \"%s\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -", worker_id);
        rc = 2;
        goto out;
    }
    log_init ("worker", worker_id);
    if (!database_url || !key) {
        log_error (NULL, NULL, "%s is not set", !database_url ? "FERRULE_DATABASE_URL" : "FERRULE_ENCRYPTION_KEY");
        rc = 2;
        goto out;
    }
    if (dburl_kind (database_url) == DBURL_UNREADABLE) {
        /* libpq would take it for a database name, and the server's refusal would quote it */
        log_error (NULL, NULL, "FERRULE_DATABASE_URL " DBURL_UNREADABLE_TEXT);
        rc = 2;
        goto out;
    }
    /* the database may hold up the loop, but never long enough for the brokers (three silent
     * heartbeat intervals) to declare this worker lost */
    if (!db_statement_ms)
        db_statement_ms = heartbeat_ms;
    if (!db_lock_ms)
        db_lock_ms = db_statement_ms / 4 > 0 ? db_statement_ms / 4 : 1;
    if (!db_connect_ms)
        db_connect_ms = heartbeat_ms;
    if (db_statement_ms + 250 >= 2 * heartbeat_ms + 1000 || db_connect_ms >= 2 * heartbeat_ms + 1000
    ||  db_lock_ms > db_statement_ms) {
        /* the loop waits 250 ms past the server's statement_timeout before it drops the connection */
        log_error (NULL, NULL, "FERRULE_DB_STATEMENT_TIMEOUT_MS (%lld) plus the 250 ms the worker waits past it, and "
                   "FERRULE_DB_CONNECT_TIMEOUT_MS (%lld), must stay under two heartbeat intervals plus one second "
                   "(%lld ms: a statement timeout of at most %lld ms), and the lock timeout (%lld) at most the "
                   "statement timeout: a longer wait on the database would make the brokers declare this worker lost",
                   (long long) db_statement_ms, (long long) db_connect_ms, (long long) (2 * heartbeat_ms + 1000),
                   (long long) (2 * heartbeat_ms + 1000 - 251), (long long) db_lock_ms);
        rc = 2;
        goto out;
    }
    /* the lease starts when the claim's statement runs, the provider call once its answer is back
     * in the loop: up to the statement timeout and the 250 ms waited past it later. The commit of
     * the call's answer goes with the next batch, which waits for a free connection: with a batch
     * in flight on each, as long again; and the commit itself as long again. A lease that ran out
     * before that commit would let another worker claim and spend the refresh token the answer
     * replaced. (The call's timeout includes its connect.) */
    if (lease_ms <= timeout_ms + 3 * (db_statement_ms + 250)) {
        log_error (NULL, NULL, "FERRULE_LEASE_MS (%lld) must exceed the provider call timeout (%lld ms) plus the longest "
                   "a claim's answer, the wait of the call's answer for a free database connection (a batch may be "
                   "in flight on each) and its commit can take (%lld ms: three times the database statement timeout "
                   "and 250 ms): a lease that expires before the commit lets another worker spend the refresh token "
                   "the provider replaced",
                   (long long) lease_ms, (long long) timeout_ms, (long long) (3 * (db_statement_ms + 250)));
        rc = 2;
        goto out;
    }
    if (events_config_check (wh_timeout, wh_lease, wh_base, wh_max, err, sizeof err) != 0) {
        log_error (NULL, NULL, "%s", err);
        rc = 2;
        goto out;
    }
    if (!journal) {
        char path [300];
        snprintf (path, sizeof path, "ferrule-%s.journal", worker_id);
        journal = mem_strdup (path);
    }
    config_log (table);
    /* the keys come from files named by FERRULE_CURVE_SECRET_KEY_FILE and FERRULE_BROKER_PUBLIC_KEY_FILE */
    curve_env_set (secret_file, broker_key_file, plaintext);
    if (curve_identity_from_env (&curve, 1, err, sizeof err) != FR_OK) {
        log_error (NULL, NULL, "%s", err);
        rc = 2;
        goto out;
    }
    if (curve.plaintext)
        log_warning (NULL, NULL, "running in plaintext (%s=1): the broker is not authenticated and the links are not "
                     "encrypted; use CURVE keys outside tests", CURVE_ENV_PLAINTEXT);

    curl_global_init (CURL_GLOBAL_DEFAULT);
    /* jitter only, but it must differ between replicas: every container's worker is pid 1 */
    unsigned seed = (unsigned) (time (NULL) ^ getpid ());
    if (getrandom (&seed, sizeof seed, 0) != (ssize_t) sizeof seed)
        log_warning (NULL, NULL, "could not seed the backoff jitter from the kernel; using time and pid");
    srandom (seed);

    worker_config_t cfg = { worker_id, database_url, backends, providers, key, old_keys, journal,
                            heartbeat_ms, min_valid, lease_ms, connect_ms, timeout_ms, max_body, drain_ms, hwm,
                            http_bind, state_ttl, backoff_base, backoff_max, breaker_min, breaker_window, breaker_open,
                            revalidate_ms, { db_statement_ms, db_lock_ms, db_connect_ms },
                            /* partitions are left alone after as long without a PING as a broker
                             * waits for HELLOs before it gives them to others */
                            { sweep_ms, sweep_horizon, sweep_rate, sweep_batch, backoff_max, 3 * heartbeat_ms },
                            fingerprint_key, key_stats_ms, admin_burst, admin_per_min, &curve, db_batch_connection,
                            idle_connections, dns_refresh_ms, failover_keep_ms, failover_keep_max_mb };
    sigset_t saved;
    daemon_setup_begin (&saved);
    worker_t *w = worker_new (&cfg, err, sizeof err);
    daemon_setup_done (&saved);             /* a stop sent meanwhile is taken now: a drain */
    /* the keyring holds the keys in memory kept out of core dumps: their text goes now, not at exit */
    mem_free_secret (&key);
    mem_free_secret (&old_keys);
    mem_free_secret (&fingerprint_key);
    if (!w) {
        log_error (NULL, NULL, "%s", err);
        rc = strstr (err, "ferrule-migrate") ? 6 : 1;
        curl_global_cleanup ();
        goto out;
    }
    /* the event delivery thread, with its own connection and curl handle (events.c) */
    events_config_t ecfg = { worker_id, database_url, webhooks_file, wh_max_age, wh_base, wh_max, wh_timeout, wh_lease,
                             ev_poll, ev_forecast, 5000 };
    w->events = events_new (&ecfg, w->catalog, w->metrics, err, sizeof err);
    if (!w->events) {
        log_error (NULL, NULL, "%s", err);
        worker_destroy (&w);
        curl_global_cleanup ();
        rc = 2;
        goto out;
    }
    rc = worker_run (w, &stop_requested) == 0 ? 0 : 1;
    events_destroy (&w->events);
    worker_destroy (&w);
    curl_global_cleanup ();
out:
    curve_identity_clear (&curve);
    config_free (table);
    return rc;
}
