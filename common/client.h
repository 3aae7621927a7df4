/* client.h - the C client of the broker protocol (docs/protocol.md): requests, replies, retries */
#ifndef FERRULE_CLIENT_H
#define FERRULE_CLIENT_H
#include <stddef.h>
#include <jansson.h>
#include "result.h"
#include "curve.h"

#define CLIENT_MAX_ENDPOINTS      16        /* brokers in one list */
#define CLIENT_MAX_ENDPOINT_LEN   255       /* one endpoint, e.g. "tcp://broker-1.internal:5555" */
#define CLIENT_MAX_TIMEOUT_MS     300000    /* the protocol's largest deadline_ms */
#define CLIENT_MIN_ATTEMPT_MS     500       /* a retry never gets less than this (unless less remains) */
#define CLIENT_CONNECT_WAIT_MS    1000      /* how long a call waits for a first broker connection */
#define CLIENT_RID_BASE_MAX       32        /* a caller's request id that begins a call's rid */

/* client_call_ex flags */
#define CLIENT_IDEMPOTENT         1         /* safe to send again: retried on timeout and "unavailable" */

typedef struct client client_t;

/* Checks a comma-separated endpoint list ("tcp://host:port" or "ipc://path"; spaces around
 * commas ignored). FR_OK, or FR_BAD_REQUEST with the reason in err. */
fr_status_t client_check_endpoints (const char *endpoints, char *err, size_t errlen) FR_MUSTCHECK;

/* One DEALER socket per broker endpoint, all connected at once, with CURVE keys from the
 * environment (curve.h: FERRULE_CURVE_SECRET_KEY_FILE and FERRULE_BROKER_PUBLIC_KEY_FILE, or the
 * explicit FERRULE_ALLOW_PLAINTEXT=1). NULL when the keys are missing or unreadable, the list
 * fails client_check_endpoints, or ZeroMQ refuses an endpoint. */
client_t *client_new (const char *endpoints);
/* The same with the given identity (copied into the sockets; plaintext only if id->plaintext);
 * NULL with a reason in err. */
client_t *client_new_with (const char *endpoints, const curve_identity_t *id, char *err, size_t errlen);
void client_destroy (client_t **c_p);

/* Number of endpoints, and endpoint i as given. */
size_t client_endpoints (const client_t *c);
const char *client_endpoint (const client_t *c, size_t i);
/* The next request goes to endpoint i first (normally a random one); for tests, and for
 * callers that prefer a nearby broker. */
void client_set_next (client_t *c, size_t i);

/* 1 for the operations that are safe to repeat: ping, token, status, history, and the reads
 * doctor, events and webhooks (as ferrulectl and the Python client declare them). */
int client_op_is_idempotent (const char *op);

/* Sends {"op", "rid", "deadline_ms", ...args} and waits at most timeout_ms for the reply.
 * args is borrowed (an object or NULL); its "op", "rid" and "deadline_ms" are ignored.
 * Returns a new JSON object, never NULL: the broker's reply, or a reply synthesized here
 * ({"rid", "ok": false, "error": {"code", "message", "hint"}}) with code "timeout",
 * "unavailable", "internal" (a reply it could not read), "unsupported_version" (a reply of
 * another protocol), "too_large" or "bad_request" (a request it would not send).
 * Idempotent operations are retried on another broker (docs/ferrulectl.md, "Retries");
 * the others are sent at most once. */
json_t *client_call (client_t *c, const char *op, json_t *args, int timeout_ms);
/* client_call with the retry policy chosen by the caller (flags: CLIENT_IDEMPOTENT). */
json_t *client_call_ex (client_t *c, const char *op, json_t *args, int timeout_ms, int flags);
/* client_call_ex whose rid begins with the caller's own request id (an HTTP request's, say), so
 * that the service's log lines join the caller's: "RID_BASE-" and 16 random hex digits, unique
 * per call, then ".N" on the Nth attempt. rid_base: 1..CLIENT_RID_BASE_MAX characters of
 * A-Z a-z 0-9 _ - (another is answered "bad_request" and nothing is sent); NULL: a random rid. */
json_t *client_call_rid (client_t *c, const char *op, json_t *args, int timeout_ms, int flags, const char *rid_base);

/* ferrulectl's exit code for a reply: 0 when "ok" is true, else by the error code. */
int client_exit_code (const json_t *reply);
/* The reply's error code ("ok" for success, "internal" when the reply carries none). */
const char *client_error_code (const json_t *reply);
#endif
