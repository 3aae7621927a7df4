/* health.h - /healthz, /readyz and /metrics over HTTP, served from libmicrohttpd's own thread
 *
 * The HTTP thread never touches the loop's data: the loop publishes a heartbeat (an atomic
 * timestamp), its readiness (copied under a mutex) and its metrics (atomics); the HTTP thread
 * only reads what was published. None of the calls below blocks the loop for longer than a
 * short copy under a mutex.
 *
 *   GET /healthz  200 "ok" while the loop beat within the stall limit, else 503
 *                 "loop stalled for N ms" (Kubernetes liveness: restarts a stuck process)
 *   GET /readyz   200 "ready" or 503 "not ready: <why>" (Kubernetes readiness), then a line
 *                 "note: <note>" when the process has one (plaintext links)
 *   GET /metrics  200, Prometheus text format 0.0.4
 * Other paths get 404, other methods than GET and HEAD 405, a request with a body 413.
 * Past 48 open connections each new one closes the oldest, so idle sockets cannot keep the
 * probes out; an idle connection is closed after 5 s anyway. */
#ifndef FERRULE_HEALTH_H
#define FERRULE_HEALTH_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "metrics.h"
#include "result.h"

#define HEALTH_DEFAULT_STALL_MS 10000
#define HEALTH_WHY_MAX          256     /* longest readiness reason kept, with its NUL */

typedef struct health_t health_t;

/* Listens on bind ("HOST:PORT", an IPv4 address such as "0.0.0.0:9100"; port 0 picks a free
 * one) and serves from a thread of its own. m is borrowed and may be NULL (then /metrics is
 * 404); destroy the health server before the registry. The process starts alive (as if it had
 * just beaten) and not ready ("starting"). On failure returns NULL with the reason in err. */
health_t *health_new (const char *bind, metrics_t *m, char *err, size_t errlen);
/* Stops the server (waiting for its thread) and frees it; sets *p to NULL. */
void health_destroy (health_t **p);

/* The port the server listens on (the one chosen when bind asked for port 0). */
int health_port (const health_t *h);

/* The loop calls this on every iteration: one atomic store of the monotonic clock. */
void health_beat (health_t *h);
/* How long the loop may go without a beat before /healthz answers 503 (ms, > 0). */
void health_set_stall_ms (health_t *h, int64_t stall_ms);
/* Publishes readiness with a short reason (NULL for none), e.g. "database unreachable". The
 * reason is copied, cut to HEALTH_WHY_MAX - 1 bytes; changes of ready are logged. */
void health_set_ready (health_t *h, int ready, const char *why);

/* A standing remark /readyz adds on a line "note: ..." whether ready or not (NULL or "": none),
 * e.g. that links run in plaintext. */
void health_set_note (health_t *h, const char *note);

/* Splits "HOST:PORT" (HOST an IPv4 address in dotted form, PORT 0 to 65535) into host and port.
 * Returns 0, or -1 when bind is not of that form or host does not fit in hostlen. */
int health_parse_bind (const char *bind, char *host, size_t hostlen, int *port) FR_MUSTCHECK;
/* For MHD_OPTION_EXTERNAL_LOGGER of every HTTP server of ours: libmicrohttpd's messages, which are
 * mostly about misbehaving clients, as debug lines of the JSON log (never its own text on stderr,
 * and never a line per connection at the default level, which anyone who can connect could fill). */
void health_mhd_log (void *cls, const char *fmt, va_list ap);
#endif
