/* ops.h - the protocol's operations: one table for names, metric labels and policy groups */
#ifndef FERRULE_OPS_H
#define FERRULE_OPS_H
#include <stddef.h>

typedef enum {
    OP_UNKNOWN = 0,
    OP_PING, OP_TOKEN, OP_STATUS, OP_HISTORY, OP_DOCTOR,                          /* read */
    OP_IMPORT, OP_REFRESH, OP_CONNECT, OP_CALLBACK, OP_DISCONNECT, OP_REPORT_SCOPE, /* admin */
    /* the gateway's (worker/gwops.c), all admin */
    OP_ATTEMPT, OP_RETRY, OP_WORKSPACE, OP_DASHBOARD_LINK, OP_DASHBOARD_OPEN,
    OP_APIKEY_CREATE, OP_APIKEY_LIST, OP_APIKEY_REVOKE, OP_APIKEY_VERIFY,
    OP_EVENTS, OP_WEBHOOKS,                                                       /* read */
    OP_EVENTS_REPLAY, OP_WEBHOOK_TEST,                                            /* admin */
    OP__COUNT
} op_t;

/* The operation named by s (len bytes, not NUL-terminated); OP_UNKNOWN for anything else. */
op_t ops_lookup (const char *s, size_t len);
/* Wire name; "unknown" for OP_UNKNOWN: the one metric label and audit value for every name
 * this version does not know, whatever a client sent. */
const char *ops_name (op_t op);
/* For the operations a broker routes by a value instead of an integration id (callback: "state";
 * the gateway's attempt, retry, dashboard_open, apikey_verify), that key; else NULL. */
const char *ops_route_key (op_t op);
/* 1 for the operations that read (ping, token, status, history, doctor, events, webhooks); the
 * others administer. */
int ops_is_read (op_t op);
/* 1 for the operations that may go without an integration (events, events_replay, webhook_test,
 * webhooks): they concern the whole deployment, any worker serves them, and without an
 * integration the broker's policy checks them as if for the integration "*". */
int ops_is_deployment_wide (op_t op);
/* 1 for those of them that concern no single integration whatever the request says
 * (webhook_test, webhooks: the configured endpoints): one that names an integration is refused,
 * so that naming one cannot pass them under a rule for some integrations only. */
int ops_takes_no_integration (op_t op);
/* 1 for the gateway's operations whose "integration" is a workspace, an id prefix (workspace,
 * dashboard_link, apikey_create, apikey_list, apikey_revoke): they reach every integration
 * whose id starts with it, and the policy allows them only by a pattern that covers all of
 * those (policy_allows). */
int ops_takes_workspace (op_t op);
#endif
