/* daemon.h - what the Ferrule processes do alike: their start, and where signals go */
#ifndef FERRULE_DAEMON_H
#define FERRULE_DAEMON_H
#include <signal.h>
#include "config.h"

/* Switches core dumps off (secrets_harden), then fills the configuration table (environment, then flags) and sets the log level from
 * *log_level. Returns 1 to go on; 0 when the process should exit with *exit_status (0 after
 * --help, 2 on a bad setting, which has been logged); the table is freed then. */
int daemon_configure (const config_entry_t *table, const char *program, const char *process, int argc,
                      char **argv, char *const *log_level, int *exit_status);
/* The first SIGTERM or SIGINT sets *stop to 1 (drain), a second to 2 (stop at once); SIGHUP sets
 * *reload, or is ignored when reload is NULL (a process with nothing to read again must not die of
 * an operator's "reload everything"); SIGPIPE is ignored. The handlers only set flags: the loop
 * acts on them. Called first thing in main, so that no signal finds the default action (which
 * for SIGHUP and SIGTERM is to die) while the configuration is read. */
void daemon_signals (volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);
/* Holds SIGHUP, SIGTERM and SIGINT back while the process sets itself up (its sockets, its first
 * database connection): one arriving then would interrupt a libzmq or libpq call with EINTR,
 * which the setup reads as a failure, and the process would exit instead of reloading or
 * draining. Held signals are delivered, to the handlers, by daemon_setup_done. */
void daemon_setup_begin (sigset_t *saved);
void daemon_setup_done (const sigset_t *saved);
/* Around the start of a thread (pthread_create, a libmicrohttpd daemon): holds every signal back
 * on the calling thread, so that the thread started inherits a mask that takes none, and
 * daemon_threads_done restores the caller's. Signals then go to the loop's thread, whose poll
 * the handler interrupts; one taken by another thread set the flag unseen until the poll's next
 * timeout (100 to 200 ms later). */
void daemon_threads_begin (sigset_t *saved);
void daemon_threads_done (const sigset_t *saved);
#endif
