/* cluster.c - ferrule-test-cluster: a whole test deployment for tests written in other languages
 *
 *   ferrule-test-cluster [--brokers N] [--workers N] [--idle-brokers N] [--name NAME]
 *
 * Starts what the integration harness starts (harness.h: a fresh migrated database, the fake
 * OAuth provider, brokers, workers), waits until every broker sees every worker, and prints one
 * JSON line on standard output:
 *
 *   {"ok": true, "brokers": ["tcp://127.0.0.1:P", ...], "idle_brokers": [...],
 *    "fake_provider_port": P, "fake_provider_url": "http://127.0.0.1:P", "workdir": "...",
 *    "workers": ["w1", ...], "providers": ["fakebox", "fakegoogle"],
 *    "redirect_uri": "http://127.0.0.1/callback"}
 *
 * "idle_brokers" were started after the workers, so no worker serves them: a request there
 * answers "unavailable". When the harness runs the deployment with CURVE keys, the key file paths
 * are added to this line ("server_public_key_file", "client_secret_key_file",
 * "client_public_key_file"); clients/python/tests/conftest.py passes them to the client.
 *
 * Then it reads commands, one per line, on standard input and answers each with one JSON line
 * ({"ok": true} or {"ok": false, "error": "..."}):
 *
 *   pause-broker I | resume-broker I | stop-broker I | restart-broker I
 *   stop-worker ID | start-worker ID | wait-ready SECONDS
 *
 * It tears everything down (resuming paused brokers first) when standard input closes or on
 * SIGTERM or SIGINT, and exits 0 when every process stopped cleanly, 1 otherwise, 2 on bad usage,
 * 77 when no PostgreSQL cluster is configured (FERRULE_TEST_PG_ADMIN_URL, as for every
 * integration test).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLUSTER_MAX_LINE      256      /* one command line on standard input */
#define CLUSTER_READY_MS      30000    /* how long the start waits for the brokers to see the workers */
#define CLUSTER_REDIRECT_URI  "http://127.0.0.1/callback"   /* the fake provider's default */

static volatile sig_atomic_t s_stop;
static bool s_paused [HARNESS_MAX_BROKERS];

static void
on_signal (int sig)
{
    (void) sig;
    s_stop = 1;
}

/* Parses a whole number from 0 to max; -1 when it is not one. */
static int
parse_count (const char *text, int max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (!*text || *end || errno == ERANGE || v < 0 || v > max)
        return -1;
    return (int) v;
}

static void
usage (void)
{
    fprintf (stderr, "usage: ferrule-test-cluster [--brokers N] [--workers N] [--idle-brokers N] [--name NAME]\n");
}

/* The JSON line that tells the test what runs where. */
static json_t *
describe (harness_t *h, int brokers, int idle, int workers)
{
    json_t *line = json_pack ("{s:b, s:[], s:[], s:i, s:s, s:[], s:[ss], s:s}",
                              "ok", 1, "brokers", "idle_brokers",
                              "fake_provider_port", harness_port (h),
                              "workdir", harness_workdir (h),
                              "workers", "providers", "fakebox", "fakegoogle",
                              "redirect_uri", CLUSTER_REDIRECT_URI);
    if (!line)
        return NULL;
    char url [64];
    snprintf (url, sizeof url, "http://127.0.0.1:%d", harness_port (h));
    json_object_set_new (line, "fake_provider_url", json_string (url));
    for (int i = 0; i < brokers + idle; i++)
        json_array_append_new (json_object_get (line, i < brokers ? "brokers" : "idle_brokers"),
                               json_string (harness_broker_frontend (h, i)));
    for (int i = 0; i < workers; i++) {
        char id [16];
        snprintf (id, sizeof id, "w%d", i + 1);
        json_array_append_new (json_object_get (line, "workers"), json_string (id));
    }
    /* the links are CURVE: the test connects as the harness's own client */
    char path [1024];
    json_object_set_new (line, "server_public_key_file", json_string (harness_broker_public_key_file (h)));
    snprintf (path, sizeof path, "%s/client-%s.key", harness_keys_dir (h), HARNESS_CLIENT);
    json_object_set_new (line, "client_secret_key_file", json_string (path));
    snprintf (path, sizeof path, "%s/client-%s.pub", harness_keys_dir (h), HARNESS_CLIENT);
    json_object_set_new (line, "client_public_key_file", json_string (path));
    return line;
}

static void
answer (bool ok, const char *error)
{
    json_t *reply = ok ? json_pack ("{s:b}", "ok", 1) : json_pack ("{s:b, s:s}", "ok", 0, "error", error);
    if (reply) {
        json_dumpf (reply, stdout, JSON_COMPACT);
        json_decref (reply);
    }
    fputc ('\n', stdout);
    fflush (stdout);
}

/* harness_wait_ready for the first nbrokers only (the idle ones never see a worker). */
static bool
wait_ready (harness_t *h, int nbrokers, int nworkers, int timeout_ms)
{
    time_t end = time (NULL) + (timeout_ms + 999) / 1000;
    for (;;) {
        bool ready = true;
        for (int i = 0; i < nbrokers && ready; i++) {
            int rc = -1;
            json_t *reply = harness_ctl_at (h, harness_broker_frontend (h, i), &rc, "ping", NULL);
            json_t *owned = json_object_get (reply, "partitions_owned");
            ready = rc == 0 && json_integer_value (json_object_get (reply, "workers")) >= nworkers
                    && json_is_integer (owned)
                    && json_integer_value (owned) == json_integer_value (json_object_get (reply, "partitions"));
            json_decref (reply);
        }
        if (ready)
            return true;
        if (time (NULL) > end)
            return false;
        usleep (100 * 1000);
    }
}

/* Carries out one command line; answers on standard output. */
static void
command (harness_t *h, int nbrokers, int nworkers, char *line)
{
    char *verb = strtok (line, " \t\r\n");
    char *arg = strtok (NULL, " \t\r\n");
    if (!verb) {
        answer (false, "empty command");
        return;
    }
    if (!arg) {
        answer (false, "the command needs an argument");
        return;
    }
    if (strcmp (verb, "stop-worker") == 0 || strcmp (verb, "start-worker") == 0) {
        if (strlen (arg) > 32) {
            answer (false, "worker id too long");
            return;
        }
        if (verb [2] == 'o')
            answer (harness_stop_worker (h, arg) >= 0, "no such worker was running");
        else
            answer (harness_start_worker (h, arg) == 0, "could not start the worker");
        return;
    }
    if (strcmp (verb, "wait-ready") == 0) {
        int seconds = parse_count (arg, 300);
        if (seconds < 0)
            answer (false, "give whole seconds from 0 to 300");
        else
            answer (wait_ready (h, nbrokers, nworkers, seconds * 1000), "not ready in time");
        return;
    }
    int idx = parse_count (arg, HARNESS_MAX_BROKERS - 1);
    if (idx < 0 || !harness_broker_frontend (h, idx)) {
        answer (false, "no such broker");
        return;
    }
        if (strcmp (verb, "pause-broker") == 0) {
        harness_signal_broker (h, idx, SIGSTOP);
        s_paused [idx] = true;
        answer (true, NULL);
    }
    else
    if (strcmp (verb, "resume-broker") == 0) {
        harness_signal_broker (h, idx, SIGCONT);
        s_paused [idx] = false;
        answer (true, NULL);
    }
    else
    if (strcmp (verb, "stop-broker") == 0) {
        /* SIGTERM: the broker exits 0, which the teardown's reaping expects */
        harness_signal_broker (h, idx, SIGTERM);
        harness_signal_broker (h, idx, SIGCONT);
        s_paused [idx] = false;
        answer (true, NULL);
    }
    else
    if (strcmp (verb, "restart-broker") == 0) {
        harness_signal_broker (h, idx, SIGCONT);
        s_paused [idx] = false;
        answer (harness_restart_broker (h, idx) == 0, "could not restart the broker");
    }
    else
        answer (false, "unknown command");
}

int
main (int argc, char **argv)
{
    int nbrokers = 2, nworkers = 2, idle = 0;
    const char *name = "cluster";
    for (int i = 1; i < argc; i++) {
        const char *opt = argv [i];
        if (i + 1 >= argc) {
            usage ();
            return 2;
        }
        const char *value = argv [++i];
        int *target = strcmp (opt, "--brokers") == 0 ? &nbrokers
                    : strcmp (opt, "--workers") == 0 ? &nworkers
                    : strcmp (opt, "--idle-brokers") == 0 ? &idle : NULL;
        if (strcmp (opt, "--name") == 0) {
            name = value;
            continue;
        }
        if (!target || (*target = parse_count (value, opt [2] == 'w' ? HARNESS_MAX_WORKERS : HARNESS_MAX_BROKERS)) < 0) {
            usage ();
            return 2;
        }
    }
    if (nbrokers < 1 || nworkers < 1 || nbrokers + idle > HARNESS_MAX_BROKERS) {
        fprintf (stderr, "ferrule-test-cluster: give 1 to %d brokers in all and at least one worker\n",
                 HARNESS_MAX_BROKERS);
        return 2;
    }

    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset (&sa.sa_mask);
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);

    int rc = 1;
    json_t *line = NULL;
    harness_t *h = harness_new (name);          /* exits 77 without a PostgreSQL cluster */
    if (!h)
        goto out;
    for (int i = 0; i < nbrokers; i++)
        if (harness_start_broker (h) < 0)
            goto out;
    for (int i = 0; i < nworkers; i++) {
        char id [16];
        snprintf (id, sizeof id, "w%d", i + 1);
        if (harness_start_worker (h, id) != 0)
            goto out;
    }
    if (harness_wait_ready (h, nworkers, CLUSTER_READY_MS) != 0)
        goto out;
    /* after the workers, so that none connects to them */
    for (int i = 0; i < idle; i++)
        if (harness_start_broker (h) < 0)
            goto out;

    line = describe (h, nbrokers, idle, nworkers);
    if (!line || json_dumpf (line, stdout, JSON_COMPACT) != 0)
        goto out;
    fputc ('\n', stdout);
    fflush (stdout);

    char buf [CLUSTER_MAX_LINE];
    size_t used = 0;
    while (!s_stop) {
        struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
        int n = poll (&pfd, 1, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        ssize_t got = read (STDIN_FILENO, buf + used, sizeof buf - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;                              /* standard input closed: the test is done */
        used += (size_t) got;
        buf [used] = '\0';
        char *nl;
        while ((nl = strchr (buf, '\n'))) {
            *nl = '\0';
            command (h, nbrokers, nworkers, buf);
            size_t rest = used - (size_t) (nl + 1 - buf);
            memmove (buf, nl + 1, rest);
            used = rest;
            buf [used] = '\0';
        }
        if (used == sizeof buf - 1) {
            answer (false, "command line too long");
            used = 0;
        }
    }
    rc = 0;
out:
    json_decref (line);
    if (h) {
        for (int i = 0; i < HARNESS_MAX_BROKERS; i++)
            if (s_paused [i])
                harness_signal_broker (h, i, SIGCONT);
        if (harness_stop_all (h) != 0)
            rc = 1;
        harness_destroy (&h);
    }
    else
        fprintf (stderr, "ferrule-test-cluster: could not set up the cluster\n");
    return rc;
}
