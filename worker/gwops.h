/* gwops.h - the operations the gateway (ferrule-gateway) needs from a worker
 *
 *   attempt          {state}: what a connect attempt was (integration, provider, redirect URI,
 *                    scopes, return_to, outcome) and, once per attempt when its failure calls for
 *                    "Try again", a single-use retry token
 *   retry            {retry_token}: spends the token and starts a fresh connect like the attempt
 *   workspace        {integration: PREFIX}: the integrations whose id starts with PREFIX
 *   dashboard_link   {integration: PREFIX, ttl_s}: a single-use link token for the dashboard
 *   dashboard_open   {link_token}: spends a link token, answers its workspace
 *   apikey_create    {integration: PREFIX, name}: a new API key, shown once (only its hash is kept)
 *   apikey_list      {integration: PREFIX}
 *   apikey_revoke    {integration: PREFIX, key_id}
 *   apikey_verify    {key}: the key's workspace and name, when it exists and is not revoked
 * A PREFIX that covers ids (workspace, dashboard_link, apikey_create) must end with a separator
 * (ident_workspace_valid); apikey_list and apikey_revoke also take the keys stored before that rule.
 * and return_to on connect. Every value handed out is stored only as its SHA-256. gwops.c reads
 * the requests, decides and replies; the statements are in store_gateway.c (docs/protocol.md,
 * "Gateway operations"). */
#ifndef FERRULE_GWOPS_H
#define FERRULE_GWOPS_H
#include <stddef.h>
#include <msgpack.h>
#include "context.h"
#include "ops.h"

#define GWOPS_RETRY_TTL_S       900         /* a retry token lives 15 minutes */
#define GWOPS_LINK_TTL_DEFAULT  600
#define GWOPS_LINK_TTL_MAX      3600
#define GWOPS_WORKSPACE_MAX     200         /* rows of one listing */

/* 1 when op is one of this module's operations; it then ran and answered. */
int gwops_handle (worker_t *w, job_t *job, const msgpack_object *root, op_t op);
#endif
