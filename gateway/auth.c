/* auth.c - bearer keys of named clients and of workspaces */
#include "auth.h"
#include "crypto.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "ops.h"
#include "policy.h"
#include "text.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>

#define MAX_KEY 128
#define API_KEY_CHARS 43        /* 32 bytes in unpadded base64url (worker/gwops.c's TOKEN_BYTES) */

int
auth_load_client_keys (const char *path, gw_client_key_t **keys_out, size_t *n_out, char *err, size_t errlen)
{
    FILE *f = fopen (path, "r");
    char line [512];
    int lineno = 0;
    if (!f) {
        snprintf (err, errlen, "could not open the client keys file \"%s\": check FERRULE_GATEWAY_CLIENT_KEYS_FILE", path);
        return -1;
    }
    gw_client_key_t *keys = mem_alloc (GW_MAX_CLIENT_KEYS * sizeof *keys);
    size_t nkeys = 0;
    int rc = 0;
    while (fgets (line, sizeof line, f)) {
        char name [80], hex [80];
        lineno++;
        char *hash = strchr (line, '#');
        if (!strchr (line, '\n') && !feof (f)) {
            /* longer than the buffer: its rest is read away, so that it is never taken for a line
             * of its own; fine in a comment, which the first part then began */
            int c;
            while ((c = fgetc (f)) != EOF && c != '\n')
                ;
            if (!hash) {
                snprintf (err, errlen, "client keys file \"%s\", line %d: longer than %zu bytes, which no \"NAME "
                          "SHA256HEX\" line is", path, lineno, sizeof line - 2);
                rc = -1;
                break;
            }
        }
        if (hash)
            *hash = '\0';
        int n = sscanf (line, "%79s %79s", name, hex);
        if (n <= 0)
            continue;
        int ok = n == 2 && strlen (name) <= 64 && strlen (hex) == 64 && nkeys < GW_MAX_CLIENT_KEYS;
        gw_client_key_t *k = &keys [ok ? nkeys : 0];
        /* strictly 64 hex digits: sscanf's "%2x" took "1g" for 1, and a sign or "0x" for digits */
        if (ok && text_unhex (hex, 32, k->hash) != 0)
            ok = 0;
        if (!ok) {
            snprintf (err, errlen, "client keys file \"%s\", line %d: expected \"NAME SHA256HEX\" (the SHA-256 of the "
                      "key in 64 hex digits, at most %d lines)", path, lineno, GW_MAX_CLIENT_KEYS);
            rc = -1;
            break;
        }
        memcpy (k->name, name, strlen (name) + 1);     /* at most 64 bytes, checked above */
        nkeys++;
    }
    if (rc == 0 && ferror (f)) {
        /* a directory (EISDIR), an I/O error: not the end of the list */
        snprintf (err, errlen, "could not read the client keys file \"%s\": %s", path, strerror (errno));
        rc = -1;
    }
    fclose (f);
    if (rc != 0) {
        mem_wipe (keys, GW_MAX_CLIENT_KEYS * sizeof *keys);
        mem_free (keys);
        return -1;
    }
    *keys_out = keys;
    *n_out = nkeys;
    return 0;
}

void
auth_reload (gw_t *gw)
{
    char err [512] = "";
    gw_client_key_t *keys = NULL;
    size_t nkeys = 0;
    policy_t *policy = NULL;
    const char *kf = gw->cfg.client_keys_file, *pf = gw->cfg.policy_file;
    log_info (NULL, NULL, "SIGHUP: reading the client keys file and the policy file again");
    if (kf && *kf && auth_load_client_keys (kf, &keys, &nkeys, err, sizeof err) != 0)
        goto out;
    if (pf && *pf && !(policy = policy_load (pf, err, sizeof err)))
        goto out;
    pthread_rwlock_wrlock (&gw->access_lock);
    gw_client_key_t *old_keys = gw->client_keys;
    size_t old_n = gw->nclient_keys;
    policy_t *old_policy = gw->policy;
    if (kf && *kf) {
        gw->client_keys = keys;
        gw->nclient_keys = nkeys;
        keys = old_keys;
        nkeys = old_n;
    }
    if (pf && *pf) {
        gw->policy = policy;
        policy = old_policy;
    }
    size_t now_n = gw->nclient_keys;
    pthread_rwlock_unlock (&gw->access_lock);
    log_info (NULL, NULL, "SIGHUP: %zu client keys and the policy just read are in effect", now_n);
out:
    if (err [0])
        log_error (NULL, NULL, "%s; keeping the client keys and the policy read before", err);
    if (keys)
        mem_wipe (keys, GW_MAX_CLIENT_KEYS * sizeof *keys);
    mem_free (keys);
    policy_destroy (&policy);
}

static void
refuse (gw_resp_t *resp, unsigned status, const char *code, const char *message, const char *hint)
{
    json_t *j = json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", code, "message", message, "hint", hint);
    gw_resp_json (resp, status, j);
    json_decref (j);
    if (status == 401)
        resp->www_authenticate = 1;
}

static int
token_op (const char *op)
{
    return strcmp (op, "token") == 0 || strcmp (op, "status") == 0 || strcmp (op, "history") == 0
        || strcmp (op, "doctor") == 0;
}

int
auth_check (gw_req_t *req, gw_resp_t *resp, const char *op, const char *id)
{
    const char *h = gw_header (req, "Authorization");
    char message [300];
    if (!h || strncasecmp (h, "Bearer ", 7) != 0 || !h [7]) {
        refuse (resp, 401, "unauthenticated", "this API needs a bearer key",
                "send \"Authorization: Bearer KEY\" with a client key or a workspace API key");
        return 0;
    }
    if (strlen (h + 7) > MAX_KEY) {
        snprintf (message, sizeof message, "the bearer key is longer than %d characters, the most a key may have",
                  MAX_KEY);
        refuse (resp, 401, "unauthenticated", message, "give the client a key of at most 128 characters (and its "
                "hash in the gateway's client keys file)");
        return 0;
    }
    const char *key = h + 7;
    unsigned char digest [32];
    crypto_sha256 (key, strlen (key), digest);
    /* a named client: the brokers' policy, as over ZeroMQ (under the lock a SIGHUP swaps both in) */
    int named = 0, allowed = 0;
    pthread_rwlock_rdlock (&req->gw->access_lock);
    for (size_t i = 0; i < req->gw->nclient_keys && !named; i++) {
        if (CRYPTO_memcmp (digest, req->gw->client_keys [i].hash, 32) != 0)
            continue;
        named = 1;
        snprintf (req->client_name, sizeof req->client_name, "%s", req->gw->client_keys [i].name);
        allowed = req->gw->policy && policy_allows (req->gw->policy, req->client_name, ops_lookup (op, strlen (op)), id,
                                                    strlen (id));
    }
    pthread_rwlock_unlock (&req->gw->access_lock);
    if (named) {
        req->client = req->client_name;
        if (!allowed) {
            snprintf (message, sizeof message, "client \"%s\" may not use \"%s\" on this integration",
                      req->client_name, op);
            refuse (resp, 403, "forbidden", message, "ask the operator to extend the client's policy");
            return 0;
        }
        return 1;
    }
    /* a workspace API key is "frk_" and 32 random bytes in base64url: anything else is no key,
       refused here without asking a worker (a stream of made-up keys costs no broker call) */
    if (strncmp (key, "frk_", 4) != 0 || strlen (key) != 4 + API_KEY_CHARS || !text_base64url (key + 4, API_KEY_CHARS)) {
        refuse (resp, 401, "unauthenticated", "the bearer key is not known", "check the key, or create one on the dashboard");
        return 0;
    }
    json_t *args = json_pack ("{s:s}", "key", key);
    json_t *reply = gw_call (req, "apikey_verify", args, GW_CALL_MS);
    const char *code = gw_code (reply);
    int ok = 0;
    if (strcmp (code, "ok") == 0) {
        const char *ws = json_string_value (json_object_get (reply, "workspace"));
        req->client = "workspace-key";
        if (ws && ident_valid (ws, strlen (ws)) && !ident_workspace_valid (ws, strlen (ws))) {
            /* made before workspaces had to end with a separator: as a prefix, "acct4" would also
               cover "acct42:x", so the key covers nothing */
            snprintf (message, sizeof message, "this API key belongs to workspace \"%s\", which does not end with "
                      "one of " IDENT_SEPARATORS ", so it may not be used", ws);
            refuse (resp, 403, "forbidden", message, "create a new API key on the dashboard of a workspace that "
                    "ends with ':', such as \"acct42:\"");
            log_warning (id, req->rid, "workspace API key refused: its workspace \"%s\" does not end with one of "
                         IDENT_SEPARATORS, ws);
        }
        else if (!ident_in_workspace (id, ws) || !token_op (op)) {
            snprintf (message, sizeof message, "this workspace API key may not use \"%s\" on this integration", op);
            refuse (resp, 403, "forbidden", message, "workspace keys may use token, reject, status, history and "
                    "doctor on the workspace's own integrations");
        }
        else
            ok = 1;
    }
    else if (gw_http_status (code) == 503 || gw_http_status (code) == 429) {
        refuse (resp, gw_http_status (code), code, "the API key could not be checked just now", "try again in a moment");
        resp->retry_after = 1;
    }
    else if (strcmp (code, "not_found") == 0 || strcmp (code, "bad_request") == 0 || strcmp (code, "too_large") == 0)
        refuse (resp, 401, "unauthenticated", "the API key is unknown or revoked", "create a new key on the dashboard");
    else {
        /* the check itself failed (the brokers refuse the gateway's own client, a worker's
         * error): the key may be good, and its owner must not be told to throw it away */
        const char *why = json_string_value (json_object_get (json_object_get (reply, "error"), "message"));
        snprintf (message, sizeof message, "the API key could not be checked: the service answered %s%s%s", code,
                  why && *why ? ": " : "", why ? why : "");
        const char *hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
        refuse (resp, 500, "internal", message, hint && strstr (hint, "brokers' policy")
                ? hint : "an operator should read the gateway's and the workers' logs");
        log_error (NULL, req->rid, "could not check a workspace API key: %s: %s", code, why ? why : "");
    }
    json_decref (args);
    json_decref (reply);
    return ok;
}
