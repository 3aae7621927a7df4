/* fake_provider.c - ferrule-fake-provider: a real OAuth 2.0 authorization server on
   127.0.0.1 for tests and the local demo, so the service goes through its real HTTP path. */
#include "authz.h"
#include "log.h"
#include "mem.h"
#include "server.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_FILE_MAX  (1024 * 1024)   /* --config files larger than this are refused */

static volatile sig_atomic_t stop_requested;

/* First signal asks for a clean stop; a second one, while stopping, exits at once. */
static void
on_signal (int sig)
{
    if (stop_requested)
        _exit (1);
    stop_requested = 1;
}

static void
usage (FILE *out)
{
    fprintf (out,
             "usage: ferrule-fake-provider [--port N] [--port-file PATH] [--config FILE] [--log-level LEVEL]\n"
             "  --port N          port on 127.0.0.1; 0 (the default) picks a free one\n"
             "  --port-file PATH  write the bound port and a newline to PATH once listening\n"
             "  --config FILE     JSON object of provider settings keyed by provider name\n"
             "  --log-level LEVEL debug, info (default), warning or error; logs go to stderr\n");
}

static int
parse_port (const char *text, unsigned short *port)
{
    char *end = NULL;
    long value;

    errno = 0;
    value = strtol (text, &end, 10);
    if (errno || end == text || *end || value < 0 || value > 65535)
        return -1;
    *port = (unsigned short) value;
    return 0;
}

/* Reads and parses the --config file; NULL (with a logged reason) on failure. */
static json_t *
load_config (const char *path)
{
    FILE *file = NULL;
    char *text = NULL;
    size_t len;
    json_t *config = NULL;
    json_error_t error;

    file = fopen (path, "rb");
    if (!file) {
        log_error (NULL, NULL, "could not open configuration file \"%s\": %s", path, strerror (errno));
        goto out;
    }
    text = mem_alloc (CONFIG_FILE_MAX + 1);
    len = fread (text, 1, CONFIG_FILE_MAX + 1, file);
    if (ferror (file)) {
        log_error (NULL, NULL, "could not read configuration file \"%s\"", path);
        goto out;
    }
    if (len > CONFIG_FILE_MAX) {
        log_error (NULL, NULL, "configuration file \"%s\" is larger than %d bytes", path, CONFIG_FILE_MAX);
        goto out;
    }
    config = json_loadb (text, len, JSON_REJECT_DUPLICATES, &error);
    if (!config)
        log_error (NULL, NULL, "configuration file \"%s\" is not valid JSON: line %d: %s",
                   path, error.line, error.text);
out:
    mem_free (text);
    if (file)
        fclose (file);
    return config;
}

/* Writes "PORT\n" to path through a temporary file and a rename, so readers never see half. */
static int
write_port_file (const char *path, unsigned short port)
{
    size_t cap = strlen (path) + 32;
    char *tmp = mem_alloc (cap);
    char line [16];
    int fd = -1, rc = -1, len;

    snprintf (tmp, cap, "%s.tmp.%ld", path, (long) getpid ());
    len = snprintf (line, sizeof line, "%u\n", port);
    fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write (fd, line, (size_t) len) != len || fsync (fd) != 0) {
        log_error (NULL, NULL, "could not write port file \"%s\": %s", tmp, strerror (errno));
        goto out;
    }
    if (close (fd) != 0) {
        fd = -1;
        log_error (NULL, NULL, "could not write port file \"%s\": %s", tmp, strerror (errno));
        goto out;
    }
    fd = -1;
    if (rename (tmp, path) != 0) {
        log_error (NULL, NULL, "could not rename \"%s\" to \"%s\": %s", tmp, path, strerror (errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close (fd);
    if (rc != 0)
        unlink (tmp);
    mem_free (tmp);
    return rc;
}

int
main (int argc, char **argv)
{
    unsigned short port = 0;
    const char *port_file = NULL, *config_file = NULL;
    json_t *config = NULL;
    authz_t *authz = NULL;
    server_t *server = NULL;
    sigset_t blocked, previous;
    struct sigaction action;
    char instance [32], err [512];
    int status = 1;

    json_set_alloc_funcs (mem_alloc, mem_free);    /* out-of-memory policy covers JSON too */
    log_init ("fake-provider", NULL);
    /* every option but --help takes a value, so the arguments go in pairs */
    for (int i = 1; i < argc; i += 2) {
        const char *arg = argv [i];
        const char *value = i + 1 < argc ? argv [i + 1] : NULL;
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            usage (stdout);
            return 0;
        }
        if (!value) {
            fprintf (stderr, "ferrule-fake-provider: option \"%s\" is unknown or lacks its value\n", arg);
            usage (stderr);
            return 2;
        }
        if (strcmp (arg, "--port") == 0 && parse_port (value, &port) == 0)
            ;
        else if (strcmp (arg, "--port-file") == 0)
            port_file = value;
        else if (strcmp (arg, "--config") == 0)
            config_file = value;
        else if (strcmp (arg, "--log-level") == 0 && log_set_level_name (value) == 0)
            ;
        else {
            fprintf (stderr, "ferrule-fake-provider: bad option \"%s %s\"\n", arg, value);
            usage (stderr);
            return 2;
        }
    }

    /* Every thread started from here on inherits the mask; only sigsuspend below takes signals. */
    sigemptyset (&blocked);
    sigaddset (&blocked, SIGINT);
    sigaddset (&blocked, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &blocked, &previous);
    memset (&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    signal (SIGPIPE, SIG_IGN);

    authz = authz_new ();
    if (config_file) {
        config = load_config (config_file);
        if (!config)
            goto out;
        if (authz_configure (authz, config, err, sizeof err) != 0) {
            log_error (NULL, NULL, "configuration file \"%s\" was refused: %s", config_file, err);
            goto out;
        }
    }
    server = server_new (authz, port);
    if (!server)
        goto out;
    port = server_port (server);
    snprintf (instance, sizeof instance, "127.0.0.1:%u", port);
    log_init ("fake-provider", instance);     /* before any thread can log */
    if (server_start (server) != 0)
        goto out;
    if (port_file && write_port_file (port_file, port) != 0)
        goto out;
    printf ("listening on 127.0.0.1:%u\n", port);
    fflush (stdout);
    log_info (NULL, NULL, "listening");

    while (!stop_requested)
        sigsuspend (&previous);
    pthread_sigmask (SIG_SETMASK, &previous, NULL);   /* a second signal now exits at once */
    log_info (NULL, NULL, "stopping");
    status = 0;
out:
    if (authz)
        authz_shutdown (authz);           /* wake handlers sleeping on latency or slow faults */
    server_destroy (&server);
    authz_destroy (&authz);
    json_decref (config);
    if (status == 0 && port_file)
        unlink (port_file);
    return status;
}
