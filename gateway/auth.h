/* auth.h - who calls the HTTP API: bearer keys
 *
 * Two kinds of key, both sent as "Authorization: Bearer KEY":
 *   - a named client's key (FERRULE_GATEWAY_CLIENT_KEYS_FILE, "NAME SHA256HEX" per line): the
 *     client is NAME, and the brokers' policy file (FERRULE_POLICY_FILE) decides what it may do,
 *     exactly as for that client over ZeroMQ; both files are read again on SIGHUP (auth_reload),
 *     so a key removed from the file is refused from the next request on;
 *   - a workspace's API key ("frk_...", made on the dashboard): checked with the workers on every
 *     request, so a revocation holds at once on every gateway; it may use the token operations
 *     (token, reject, status, history, doctor) on the workspace's integrations only. */
#ifndef FERRULE_AUTH_H
#define FERRULE_AUTH_H
#include "gateway.h"

/* Reads the named clients' keys into a new array (*keys, caller frees) of *n; 0, or -1 with a
 * reason naming the file and line. */
int auth_load_client_keys (const char *path, gw_client_key_t **keys, size_t *n, char *err, size_t errlen);
/* SIGHUP: reads the client keys file and the policy file again and puts both in effect at once
 * for the next request; when either cannot be read, logs why and keeps the ones in effect. */
void auth_reload (gw_t *gw);
/* 1 when the caller may use op on integration id; otherwise 0 with resp filled (401, 403 or 503). */
int auth_check (gw_req_t *req, gw_resp_t *resp, const char *op, const char *id);
#endif
