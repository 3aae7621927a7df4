/* ferrule-gateway: the browser side (callback pages, dashboard) and the HTTP API, a client of
 * the brokers; stateless, so any number of replicas can run behind one Service */
#include "gateway.h"
#include "auth.h"
#include "client.h"
#include "clock.h"
#include "config.h"
#include "crypto.h"
#include "curve.h"
#include "daemon.h"
#include "health.h"
#include "log.h"
#include "mem.h"
#include "policy.h"
#include "route.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t reload_requested = 0;

/* Splits a comma-separated list into fixed slots; -1 when an item is too long or too many. */
static int
split_list (const char *list, char *slots, size_t slot_len, size_t max, size_t *count)
{
    *count = 0;
    if (!list)
        return 0;
    char *copy = mem_strdup (list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r (copy, ", ", &save); t; t = strtok_r (NULL, ", ", &save)) {
        if (*count >= max || strlen (t) >= slot_len) {
            rc = -1;
            break;
        }
        snprintf (slots + *count * slot_len, slot_len, "%s", t);
        (*count)++;
    }
    mem_free (copy);
    return rc;
}

/* Each connection holds a descriptor, and so do the broker clients (a few each, for ZeroMQ) and
 * the process: a soft open-files limit below that refused connections under the configured
 * count (1024 is a common default, and FERRULE_GATEWAY_MAX_CONNECTIONS goes to 65536). It is raised
 * as far as the hard limit allows, as servers do; what still falls short is said. */
static void
files_limit_ensure (const gw_t *gw)
{
    rlim_t need = (rlim_t) gw->cfg.max_connections + (rlim_t) gw->cfg.broker_clients * 8 + 64;
    struct rlimit lim;
    if (getrlimit (RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= need)
        return;
    rlim_t was = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max != RLIM_INFINITY && lim.rlim_max < need ? lim.rlim_max : need;
    if (lim.rlim_cur > was && setrlimit (RLIMIT_NOFILE, &lim) == 0)
        log_info (NULL, NULL, "raised the open-files limit from %llu to %llu for %lld connections",
                  (unsigned long long) was, (unsigned long long) lim.rlim_cur, (long long) gw->cfg.max_connections);
    else
        lim.rlim_cur = was;
    if (lim.rlim_cur < need)
        log_warning (NULL, NULL, "the open-files limit is %llu (its hard limit %llu), below the %llu that %lld connections "
                     "need (FERRULE_GATEWAY_MAX_CONNECTIONS): connections past it are refused; raise the limit "
                     "(ulimit -n, LimitNOFILE=) or lower the setting", (unsigned long long) lim.rlim_cur,
                     (unsigned long long) lim.rlim_max, (unsigned long long) need, (long long) gw->cfg.max_connections);
}

static int
setup (gw_t *gw, char *err, size_t errlen)
{
    char origin [GW_ORIGIN_MAX];
    size_t n;
    unsigned char *key = gw->cfg.session_key ? crypto_b64_decode (gw->cfg.session_key, &n) : NULL;
    if (!key || n != 32) {
        if (key)
            mem_wipe (key, n);
        mem_free (key);
        snprintf (err, errlen, "FERRULE_GATEWAY_SESSION_KEY must be base64 of 32 random bytes, the same on every "
                  "gateway replica (openssl rand -base64 32)");
        return -1;
    }
    memcpy (gw->session_key, key, 32);
    mem_wipe (key, 32);
    mem_free (key);
    size_t plen = strlen (gw->cfg.public_url);
    while (plen && ((char *) gw->cfg.public_url) [plen - 1] == '/')
        ((char *) gw->cfg.public_url) [--plen] = '\0';
    if (gw_origin_of (gw->cfg.public_url, gw->origin, sizeof gw->origin) != 0) {
        snprintf (err, errlen, "FERRULE_GATEWAY_PUBLIC_URL \"%.200s\" is not an absolute http:// or https:// URL",
                  gw->cfg.public_url);
        return -1;
    }
    /* from the origin, lower-cased: "HTTPS://..." is https. The URL itself is left as written: the
     * redirect URI built from it must match the provider's registration character for character */
    gw->secure = strncmp (gw->origin, "https://", 8) == 0;
    const char *su = gw->cfg.support_url;
    if (su && *su && strncmp (su, "mailto:", 7) != 0 && strncmp (su, "https://", 8) != 0) {
        snprintf (err, errlen, "FERRULE_GATEWAY_SUPPORT_URL must start with mailto: or https://");
        return -1;
    }
    char (*raw) [GW_ORIGIN_MAX] = mem_alloc (GW_MAX_ORIGINS * sizeof *raw);
    int rc = split_list (gw->cfg.return_to_origins, (char *) raw, GW_ORIGIN_MAX, GW_MAX_ORIGINS, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (gw_origin_of (raw [i], origin, sizeof origin) != 0 || strlen (origin) != strlen (raw [i])) {
            snprintf (err, errlen, "FERRULE_GATEWAY_RETURN_TO_ORIGINS: \"%.200s\" is not an origin such as "
                      "https://app.example.com (scheme, host, optional port, nothing else)", raw [i]);
            rc = -1;
        }
        else
            snprintf (gw->origins [gw->norigins++], GW_ORIGIN_MAX, "%s", origin);
    }
    mem_free (raw);
    if (rc != 0) {
        if (!err [0])
            snprintf (err, errlen, "FERRULE_GATEWAY_RETURN_TO_ORIGINS lists more than %d origins or a too long one",
                      GW_MAX_ORIGINS);
        return -1;
    }
    if (split_list (gw->cfg.providers, (char *) gw->providers, sizeof gw->providers [0], GW_MAX_PROVIDERS,
                    &gw->nproviders) != 0) {
        snprintf (err, errlen, "FERRULE_GATEWAY_PROVIDERS lists more than %d providers or a too long name",
                  GW_MAX_PROVIDERS);
        return -1;
    }
    if (gw->cfg.client_keys_file && *gw->cfg.client_keys_file
    &&  auth_load_client_keys (gw->cfg.client_keys_file, &gw->client_keys, &gw->nclient_keys, err, errlen) != 0)
        return -1;
    if (gw->cfg.policy_file && *gw->cfg.policy_file && !(gw->policy = policy_load (gw->cfg.policy_file, err, errlen)))
        return -1;
    if (gw->nclient_keys && !gw->policy)
        log_warning (NULL, NULL, "client keys are configured without FERRULE_POLICY_FILE: named clients may do nothing");
    gw->metrics = metrics_new ("ferrule_gateway_");
    for (int c = 2; c <= 5; c++) {
        char labels [32];
        snprintf (labels, sizeof labels, "class=\"%dxx\"", c);
        gw->m_responses [c] = metrics_counter (gw->metrics, "responses_total", "HTTP responses by status class", labels);
    }
    if (!(gw->pool = pool_new (gw->cfg.brokers, (int) gw->cfg.broker_clients, err, errlen)))
        return -1;
    return 0;
}

int
main (int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp (argv [i], "--print-routes") == 0) {
            route_print (stdout);
            return 0;
        }
    gw_t gw;
    memset (&gw, 0, sizeof gw);
    pthread_rwlock_init (&gw.access_lock, NULL);
    char *bind = NULL, *public_url = NULL, *brokers = NULL, *origins = NULL, *session_key = NULL, *keys_file = NULL,
         *policy_file = NULL, *providers = NULL, *http_bind = NULL, *log_level = NULL, *secret_file = NULL,
         *plaintext = NULL, *support = NULL,
         *broker_key_file = NULL;
    int64_t session_ttl = 0, max_conn = 0, conn_timeout = 0, clients = 0, drain_ms = 0;
    const config_entry_t table [] = {
        { "bind", "FERRULE_GATEWAY_BIND", CONFIG_STRING, &bind, "127.0.0.1:8080", 0, 0, 0, "HOST:PORT the gateway listens on (loopback by default: TLS ends at the Ingress)" },
        { "public-url", "FERRULE_GATEWAY_PUBLIC_URL", CONFIG_STRING, &public_url, "http://127.0.0.1:8080", 0, 0, 0, "how browsers reach the gateway; its /oauth/callback is the redirect URI to register" },
        { "broker", "FERRULE_BROKER_URL", CONFIG_STRING, &brokers, "tcp://127.0.0.1:5555", 0, 0, 0, "broker frontends, comma-separated" },
        { "return-to-origins", "FERRULE_GATEWAY_RETURN_TO_ORIGINS", CONFIG_STRING, &origins, "", 0, 0, 0, "origins a connect's return_to may point to, comma-separated (the gateway's own is always allowed)" },
        { "session-key", "FERRULE_GATEWAY_SESSION_KEY", CONFIG_STRING, &session_key, NULL, 0, 0, 1, "base64 of 32 bytes signing dashboard sessions; the same on every replica" },
        { "client-keys-file", "FERRULE_GATEWAY_CLIENT_KEYS_FILE", CONFIG_STRING, &keys_file, NULL, 0, 0, 0, "bearer keys of named clients: NAME SHA256HEX per line" },
        { "policy-file", "FERRULE_POLICY_FILE", CONFIG_STRING, &policy_file, NULL, 0, 0, 0, "the brokers' policy file, applied to named clients" },
        { "providers", "FERRULE_GATEWAY_PROVIDERS", CONFIG_STRING, &providers, "box,google,microsoft,github,slack,dropbox", 0, 0, 0, "providers the dashboard offers to Connect" },
        { "support-url", "FERRULE_GATEWAY_SUPPORT_URL", CONFIG_STRING, &support, "", 0, 0, 0, "where Contact support on a failure page leads: mailto:support@example.com or an https:// page" },
        { "session-ttl-s", "FERRULE_GATEWAY_SESSION_TTL_S", CONFIG_INT, &session_ttl, "3600", 60, 86400, 0, "how long a dashboard session lasts" },
        { "max-connections", "FERRULE_GATEWAY_MAX_CONNECTIONS", CONFIG_INT, &max_conn, "512", 8, 65536, 0, "open HTTP connections (one thread each)" },
        { "connection-timeout-s", "FERRULE_GATEWAY_CONNECTION_TIMEOUT_S", CONFIG_INT, &conn_timeout, "15", 1, 600, 0, "an idle or slow connection is closed after this" },
        { "drain-ms", "FERRULE_GATEWAY_DRAIN_MS", CONFIG_INT, &drain_ms, "25000", 0, 600000, 0, "how long SIGTERM waits for the requests in flight before the gateway exits" },
        { "broker-clients", "FERRULE_GATEWAY_BROKER_CLIENTS", CONFIG_INT, &clients, "32", 1, 256, 0, "broker connections shared by the requests in flight" },
        { "curve-secret-key-file", "FERRULE_CURVE_SECRET_KEY_FILE", CONFIG_STRING, &secret_file, NULL, 0, 0, 0, "this gateway's CURVE key (a client of the brokers)" },
        { "broker-public-key-file", "FERRULE_BROKER_PUBLIC_KEY_FILE", CONFIG_STRING, &broker_key_file, NULL, 0, 0, 0, "the brokers' CURVE public key" },
        { "allow-plaintext", "FERRULE_ALLOW_PLAINTEXT", CONFIG_STRING, &plaintext, NULL, 0, 0, 0, "1: talk to the brokers without CURVE (tests only)" },
        { "http-bind", "FERRULE_HTTP_BIND", CONFIG_STRING, &http_bind, NULL, 0, 0, 0, "HOST:PORT for /healthz, /readyz and /metrics (unset: not served)" },
        { "log-level", "FERRULE_LOG_LEVEL", CONFIG_STRING, &log_level, "info", 0, 0, 0, "debug, info, warning or error" },
        CONFIG_END
    };
    char err [512] = "";
    int rc;
    route_server_t *server = NULL;
    health_t *health = NULL;
    daemon_signals (&stop_requested, &reload_requested);
    if (!daemon_configure (table, "ferrule-gateway", "gateway", argc, argv, &log_level, &rc))
        return rc;
    log_init ("gateway", bind);
    config_log (table);
    curve_env_set (secret_file, broker_key_file, plaintext);
    gw.cfg = (gw_config_t) { bind, public_url, brokers, origins, session_key, keys_file, policy_file, providers,
                             http_bind, support, session_ttl, max_conn, conn_timeout, clients };
    rc = 2;
    if (setup (&gw, err, sizeof err) != 0) {
        log_error (NULL, NULL, "%s", err);
        goto out;
    }
    if (http_bind && *http_bind && !(health = health_new (http_bind, gw.metrics, err, sizeof err))) {
        log_error (NULL, NULL, "%s", err);
        goto out;
    }
    files_limit_ensure (&gw);
    if (!(server = route_server_new (&gw, err, sizeof err))) {
        log_error (NULL, NULL, "%s", err);
        goto out;
    }
    log_info (NULL, NULL, "listening on %s (port %d), public URL %s, redirect URI %s/oauth/callback", bind,
              route_server_port (server), public_url, public_url);
    /* ready while a broker that is not draining answers ping (checked every 5 s, on a client
       outside the pool: busy clients are load, not a reason to leave the Service): a gateway that
       cannot reach any broker it can use leaves the Service until it can. The first SIGTERM drains: no new connections,
       /readyz 503, the requests in flight answered (for drain_ms at most); a second exits at once. */
    int64_t next_ping = 0, drain_until = 0;
    int cut = 0;
    while (stop_requested < 2) {
        int64_t now = clock_mono_ms ();
        if (reload_requested) {
            reload_requested = 0;
            auth_reload (&gw);
        }
        if (stop_requested == 1 && !drain_until) {
            drain_until = now + drain_ms;
            route_server_drain (server);
            if (health)
                health_set_ready (health, 0, "draining");
            log_info (NULL, NULL, "draining: %d requests in flight, waiting up to %lld ms for them",
                      route_server_in_flight (server), (long long) drain_ms);
        }
        if (drain_until && route_server_in_flight (server) == 0)
            break;
        if (drain_until && now >= drain_until) {
            cut = route_server_in_flight (server);
            break;
        }
        if (health) {
            health_beat (health);
            if (!drain_until && now >= next_ping) {
                json_t *r = pool_ping (gw.pool, 2000);
                const char *code = client_error_code (r);
                /* a broker that is stopping answers, but refuses every request */
                int ok = strcmp (code, "ok") == 0, draining = ok && json_is_true (json_object_get (r, "draining"));
                char why [160];
                if (draining)
                    snprintf (why, sizeof why, "every broker that answers ping is draining (shutting down)");
                else
                    snprintf (why, sizeof why, "no broker answers ping (%s)", code);
                health_set_ready (health, ok && !draining, ok && !draining ? NULL : why);
                json_decref (r);
                next_ping = clock_mono_ms () + 5000;
            }
        }
        usleep (drain_until ? 20000 : 200000);
    }
    if (stop_requested >= 2 && !cut)
        cut = route_server_in_flight (server);
    if (cut) {
        /* their threads may wait on a broker for up to 30 s: leave them to the exit, do not join */
        log_warning (NULL, NULL, "stopping with %d requests in flight unanswered (%s)", cut,
                     stop_requested >= 2 ? "a second SIGTERM" : "FERRULE_GATEWAY_DRAIN_MS is over");
        _exit (0);
    }
    log_info (NULL, NULL, "stopping");
    rc = 0;
out:
    route_server_destroy (&server);
    health_destroy (&health);
    pool_destroy (&gw.pool);
    policy_destroy (&gw.policy);
    metrics_destroy (&gw.metrics);
    mem_free (gw.client_keys);
    pthread_rwlock_destroy (&gw.access_lock);
    mem_wipe (gw.session_key, sizeof gw.session_key);
    config_free (table);
    return rc;
}
