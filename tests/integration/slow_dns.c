/* slow_dns.c - preloaded into a worker by it_broker_dns (dns-worker.sh): a name under
 * .ferrule.test resolves to 127.0.0.1, after the delay in milliseconds that the file named by
 * FERRULE_TEST_DNS_DELAY_FILE holds (missing or 0: at once); every other name goes to the
 * system's resolver as usual. A resolver slow to answer, as a DNS server that is overloaded or
 * gone makes it, without a DNS server: what the worker does meanwhile is what the test looks at.
 * Each lookup of such a name appends "start" and then "end" to FERRULE_TEST_DNS_LOG, so that the
 * test knows a slow lookup did happen. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SUFFIX ".ferrule.test"

typedef int (getaddrinfo_fn) (const char *, const char *, const struct addrinfo *, struct addrinfo **);

static void
note (const char *what)
{
    const char *path = getenv ("FERRULE_TEST_DNS_LOG");
    FILE *f = path ? fopen (path, "a") : NULL;
    if (f) {
        fprintf (f, "%s\n", what);
        fclose (f);
    }
}

static long
delay_ms (void)
{
    const char *path = getenv ("FERRULE_TEST_DNS_DELAY_FILE");
    FILE *f = path ? fopen (path, "r") : NULL;
    long ms = 0;
    if (f) {
        if (fscanf (f, "%ld", &ms) != 1)
            ms = 0;
        fclose (f);
    }
    return ms > 0 && ms < 600000 ? ms : 0;
}

int
getaddrinfo (const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    getaddrinfo_fn *real = (getaddrinfo_fn *) dlsym (RTLD_NEXT, "getaddrinfo");
    size_t n = node ? strlen (node) : 0;
    if (!real)
        return EAI_SYSTEM;
    if (n <= strlen (SUFFIX) || strcmp (node + n - strlen (SUFFIX), SUFFIX) != 0)
        return real (node, service, hints, res);
    note ("start");
    long ms = delay_ms ();
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
    struct addrinfo h;
    memset (&h, 0, sizeof h);
    if (hints)
        h = *hints;
    h.ai_family = AF_INET;
    h.ai_flags |= AI_NUMERICHOST;
    int rc = real ("127.0.0.1", service, &h, res);
    note ("end");
    return rc;
}
