/* pidns.c - runs a program as pid 1 of a new PID namespace, the way a container runs it, and
 * stands in for it outside: signals are passed on and its exit status is returned.
 *
 *     ferrule-test-pidns PROGRAM [ARG...]
 *
 * Needs CAP_SYS_ADMIN (root, as in CI). Exit 77 when the namespace cannot be made, so that a test
 * can skip. Tests use it to start two workers with the same pid. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child = -1;

static void
pass_on (int sig)
{
    if (child > 0)
        kill (child, sig);
}

int
main (int argc, char **argv)
{
    if (argc < 2) {
        fprintf (stderr, "usage: ferrule-test-pidns PROGRAM [ARG...]\n");
        return 2;
    }
    if (unshare (CLONE_NEWPID) != 0) {
        fprintf (stderr, "ferrule-test-pidns: could not make a PID namespace: %s\n", strerror (errno));
        return 77;
    }
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = pass_on;
    const int passed [] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCONT };
    for (size_t i = 0; i < sizeof passed / sizeof passed [0]; i++)
        sigaction (passed [i], &sa, NULL);
    child = fork ();
    if (child < 0) {
        fprintf (stderr, "ferrule-test-pidns: could not fork: %s\n", strerror (errno));
        return 1;
    }
    if (child == 0) {
        execv (argv [1], argv + 1);
        fprintf (stderr, "ferrule-test-pidns: could not run \"%s\": %s\n", argv [1], strerror (errno));
        _exit (127);
    }
    int status;
    while (waitpid (child, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFSIGNALED (status))
        return 128 + WTERMSIG (status);
    return WEXITSTATUS (status);
}
