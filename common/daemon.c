/* daemon.c - configuration, logging and signals at process start */
#include "daemon.h"
#include "log.h"
#include "secrets.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t *daemon_stop;
static volatile sig_atomic_t *daemon_reload;

static void
on_signal (int sig)
{
    (void) sig;
    *daemon_stop = *daemon_stop < 2 ? *daemon_stop + 1 : 2;
}

static void
on_hup (int sig)
{
    (void) sig;
    *daemon_reload = 1;
}

int
daemon_configure (const config_entry_t *table, const char *program, const char *process, int argc,
                  char **argv, char *const *log_level, int *exit_status)
{
    char err [1024], harden_err [256];
    int hardened = secrets_harden (harden_err, sizeof harden_err);
    int rc = config_load (table, program, argc, argv, err, sizeof err);
    log_init (process, NULL);
    if (rc == 0 && hardened != 0) {
        snprintf (err, sizeof err, "%s", harden_err);
        rc = -1;
    }
    if (rc == 1) {                  /* --help was printed */
        config_free (table);
        *exit_status = 0;
        return 0;
    }
    if (rc < 0 || log_set_level_name (*log_level) != 0) {
        log_error (NULL, NULL, "%s", rc < 0 ? err : "invalid log level: use debug, info, warning or error");
        config_free (table);
        *exit_status = 2;
        return 0;
    }
    return 1;
}

void
daemon_signals (volatile sig_atomic_t *stop, volatile sig_atomic_t *reload)
{
    struct sigaction sa;
    daemon_stop = stop;
    daemon_reload = reload;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);
    sa.sa_handler = reload ? on_hup : SIG_IGN;
    sigaction (SIGHUP, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);
    /* a file size limit (ulimit -f, systemd's LimitFSIZE) makes a write past it fail with EFBIG,
     * which the journal and the logs handle, instead of killing the process mid-refresh */
    signal (SIGXFSZ, SIG_IGN);
}

void
daemon_setup_begin (sigset_t *saved)
{
    sigset_t block;
    sigemptyset (&block);
    sigaddset (&block, SIGHUP);
    sigaddset (&block, SIGTERM);
    sigaddset (&block, SIGINT);
    pthread_sigmask (SIG_BLOCK, &block, saved);
}

void
daemon_setup_done (const sigset_t *saved)
{
    pthread_sigmask (SIG_SETMASK, saved, NULL);
}

void
daemon_threads_begin (sigset_t *saved)
{
    sigset_t all;
    sigfillset (&all);
    pthread_sigmask (SIG_BLOCK, &all, saved);
}

void
daemon_threads_done (const sigset_t *saved)
{
    pthread_sigmask (SIG_SETMASK, saved, NULL);
}
