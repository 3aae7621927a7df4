/* ops.c - the operation table */
#include "ops.h"
#include <string.h>

/* What an operation's "integration" means when the operation concerns the whole deployment */
enum {
    WIDE_NO = 0,        /* not deployment-wide: the integration is required */
    WIDE_FILTER,        /* optional; one named narrows the answer to it (events, events_replay) */
    WIDE_ONLY,          /* never one integration's (the configured webhooks): none may be named */
};

static const struct {
    const char *name;
    int read;
    int wide;
} ops_table [OP__COUNT] = {
    [OP_UNKNOWN]      = { "unknown", 0, WIDE_NO },
    [OP_PING]         = { "ping", 1, WIDE_NO },
    [OP_TOKEN]        = { "token", 1, WIDE_NO },
    [OP_STATUS]       = { "status", 1, WIDE_NO },
    [OP_HISTORY]      = { "history", 1, WIDE_NO },
    [OP_DOCTOR]       = { "doctor", 1, WIDE_NO },
    [OP_IMPORT]       = { "import", 0, WIDE_NO },
    [OP_REFRESH]      = { "refresh", 0, WIDE_NO },
    [OP_CONNECT]      = { "connect", 0, WIDE_NO },
    [OP_CALLBACK]     = { "callback", 0, WIDE_NO },
    [OP_DISCONNECT]   = { "disconnect", 0, WIDE_NO },
    [OP_REPORT_SCOPE] = { "report_scope", 0, WIDE_NO },
    [OP_ATTEMPT]      = { "attempt", 0, WIDE_NO },
    [OP_RETRY]        = { "retry", 0, WIDE_NO },
    [OP_WORKSPACE]    = { "workspace", 0, WIDE_NO },
    [OP_DASHBOARD_LINK] = { "dashboard_link", 0, WIDE_NO },
    [OP_DASHBOARD_OPEN] = { "dashboard_open", 0, WIDE_NO },
    [OP_APIKEY_CREATE] = { "apikey_create", 0, WIDE_NO },
    [OP_APIKEY_LIST]  = { "apikey_list", 0, WIDE_NO },
    [OP_APIKEY_REVOKE] = { "apikey_revoke", 0, WIDE_NO },
    [OP_APIKEY_VERIFY] = { "apikey_verify", 0, WIDE_NO },
    [OP_EVENTS]       = { "events", 1, WIDE_FILTER },
    [OP_WEBHOOKS]     = { "webhooks", 1, WIDE_ONLY },
    [OP_EVENTS_REPLAY] = { "events_replay", 0, WIDE_FILTER },
    [OP_WEBHOOK_TEST] = { "webhook_test", 0, WIDE_ONLY },
};

op_t
ops_lookup (const char *s, size_t len)
{
    if (!s)
        return OP_UNKNOWN;
    for (int i = 1; i < OP__COUNT; i++)
        if (strlen (ops_table [i].name) == len && memcmp (ops_table [i].name, s, len) == 0)
            return (op_t) i;
    return OP_UNKNOWN;
}

const char *
ops_name (op_t op)
{
    return (int) op > 0 && op < OP__COUNT ? ops_table [op].name : ops_table [OP_UNKNOWN].name;
}

int
ops_is_read (op_t op)
{
    return (int) op > 0 && op < OP__COUNT && ops_table [op].read;
}

const char *
ops_route_key (op_t op)
{
    switch (op) {
        case OP_CALLBACK:       return "state";
        case OP_ATTEMPT:        return "state";
        case OP_RETRY:          return "retry_token";
        case OP_DASHBOARD_OPEN: return "link_token";
        case OP_APIKEY_VERIFY:  return "key";
        default:                return NULL;
    }
}

int
ops_is_deployment_wide (op_t op)
{
    return (int) op > 0 && op < OP__COUNT && ops_table [op].wide != WIDE_NO;
}

int
ops_takes_no_integration (op_t op)
{
    return (int) op > 0 && op < OP__COUNT && ops_table [op].wide == WIDE_ONLY;
}

int
ops_takes_workspace (op_t op)
{
    return op == OP_WORKSPACE || op == OP_DASHBOARD_LINK || op == OP_APIKEY_CREATE || op == OP_APIKEY_LIST
        || op == OP_APIKEY_REVOKE;
}
