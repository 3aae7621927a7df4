/* policy.h - which operations each client may use, on which integrations
 *
 * The policy file, one rule a line, "#" comments and blank lines allowed:
 *     CLIENT  OPERATIONS  PATTERN [PATTERN...]
 * CLIENT is a name from the clients file; OPERATIONS is a comma-separated list of operation
 * names and the groups "read" (ping, token, status, history, doctor, events, webhooks), "admin"
 * (import, refresh, connect, callback, disconnect, report_scope, events_replay, webhook_test, the
 * gateway's) and "*" (all); a PATTERN matches integration ids,
 * "*" standing for any run of characters ("acct42:*", "*:box", "*"). A request is allowed when
 * one of its client's rules names its operation and has a pattern matching its integration.
 * An operation on a workspace (ops_takes_workspace) names an id prefix, and needs a pattern that
 * covers every id starting with it ("acct42:*", not "acct42:").
 * A client without rules may do nothing but "ping" without an integration. "callback" carries
 * no integration id (its 256-bit state binds it to one): a rule naming "callback" allows it
 * whatever its patterns. The broker asks for the pattern "*" for the operations of the whole
 * deployment and the gateway's operations routed by a value (broker.c). */
#ifndef FERRULE_POLICY_H
#define FERRULE_POLICY_H
#include <stddef.h>
#include "ops.h"

#define POLICY_MAX_RULES    100000
#define POLICY_MAX_PATTERNS 64

typedef struct policy policy_t;

/* NULL with a reason naming the file and line. */
policy_t *policy_load (const char *path, char *err, size_t errlen);
void policy_destroy (policy_t **p_p);
/* 1 when client may use op on the integration (integ NULL: an operation without one); for an
 * operation on a workspace (ops_takes_workspace), integ is its prefix, and the rule's pattern
 * must cover every id that starts with it ("acct42:*", "*"; not "acct42:"). */
int policy_allows (const policy_t *p, const char *client, op_t op, const char *integ, size_t integ_len);
size_t policy_rules (const policy_t *p);
/* 1 when the glob pattern ("*" any run) matches s (len bytes). */
int policy_match (const char *pattern, const char *s, size_t len);
#endif
