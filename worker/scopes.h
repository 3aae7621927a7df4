/* scopes.h - what an integration was granted against what a caller needs: the require_scopes
 * check of the token operation, and upstream insufficient_scope reports (op report_scope) */
#ifndef FERRULE_SCOPES_H
#define FERRULE_SCOPES_H
#include "context.h"

#define SCOPES_MAX 64                /* scopes in one connect or require_scopes */
/* What a user does about scopes missing from a grant (the guide's "Scope mismatch"): a connect
 * that granted fewer, a token that lacks a required one. */
#define SCOPES_RECONNECT_HINT \
    "disconnect and reconnect the integration (with --scope for each scope it needs), and accept all requested " \
    "permissions on the provider's consent screen (if offered minimal or full access, choose full access); if you " \
    "manage the provider's OAuth app, check that it is configured with these scopes"

/* 1 when scope is among granted (scopes separated by spaces or commas), as it is or qualified by a
 * resource either way ("https://graph.microsoft.com/User.Read" and "User.Read"). A short OpenID
 * scope ("email", "profile") also counts as granted by Google's ".../auth/userinfo.<scope>". */
int scopes_granted (const char *granted, const char *scope);
/* The scopes of wanted (separated by spaces) that granted lacks, as "\"a\", \"b\"" in out; how many.
 * offline_access is never among them: no provider echoes it. */
int scopes_missing (const char *wanted, const char *granted, char *out, size_t outlen);

/* granted (spaces between scopes) with each scope of wanted that it grants in another form added
 * as wanted spells it, and offline_access when with_offline (a refresh token was issued): what a
 * connect stores, so that what was asked for reads as granted wherever it is compared (the
 * database's own check of a reduced grant included). A new string. */
char *scopes_as_requested (const char *wanted, const char *granted, int with_offline);

/* op "token" with "require_scopes" (wanted, spaces between, as fields_scopes reads it): 0 when the
 * entry's scopes hold every one, -1 when insufficient_scope was sent. Makes no provider call. */
int scopes_held (worker_t *w, const job_t *job, const char *wanted, const cache_entry_t *e);
/* The value of parameter name (case-insensitive) in a WWW-Authenticate header, unquoted, into out:
 * from the Bearer challenge when the header has one, else the first anywhere; never from inside
 * another parameter's quoted value. 1 found, 0 not there (or empty), -1 longer than outlen - 1
 * ("" in out). */
int scopes_auth_param (const char *header, const char *name, char *out, size_t outlen);
/* op "report_scope": records an upstream 403 insufficient_scope a caller saw. */
void scopes_report (worker_t *w, job_t *job, const msgpack_object *root, const char *id);
#endif
