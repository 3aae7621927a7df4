/* authz.h - the fake authorization server: grants, tokens, admin operations, behind one mutex */
#ifndef FAKE_AUTHZ_H
#define FAKE_AUTHZ_H
#include "form.h"
#include "reply.h"
#include <jansson.h>

typedef struct authz_t authz_t;

/* What the HTTP layer hands over about a request to a provider endpoint. */
typedef struct {
    const char   *provider;      /* valid provider name */
    const char   *path;          /* for the request record */
    const char   *method;
    const form_t *params;        /* body form (POST) or query (GET); NULL when it did not parse */
    form_status_t params_status;
    const char   *content_type;  /* may be NULL */
    const char   *authorization; /* Authorization header, may be NULL */
} authz_request_t;

authz_t *authz_new (void);
void authz_destroy (authz_t **p);

/* Applies a {"provider": {settings}} object and keeps it, so reset comes back to it. */
int authz_configure (authz_t *authz, const json_t *config, char *err, size_t errlen)
    __attribute__ ((warn_unused_result));
/* One more TCP connection accepted (GET /admin/stats "connections"). */
void authz_count_connection (authz_t *authz);
/* Wakes every handler sleeping on latency or a slow fault, so the server can stop. */
void authz_shutdown (authz_t *authz);

/* Provider endpoints; each returns a reply the caller destroys. */
reply_t *authz_token (authz_t *authz, const authz_request_t *req);
reply_t *authz_authorize (authz_t *authz, const authz_request_t *req);
reply_t *authz_revoke (authz_t *authz, const authz_request_t *req);
reply_t *authz_resource_me (authz_t *authz, const authz_request_t *req);

/* Admin endpoints. body is the parsed JSON body, or NULL when absent or not JSON. */
reply_t *authz_admin_put_provider (authz_t *authz, const char *provider, const json_t *body);
reply_t *authz_admin_get_provider (authz_t *authz, const char *provider);
reply_t *authz_admin_grant (authz_t *authz, const json_t *body);
reply_t *authz_admin_add_fault (authz_t *authz, const json_t *body);
reply_t *authz_admin_clear_faults (authz_t *authz, const char *provider);   /* NULL: all */
reply_t *authz_admin_stats (authz_t *authz);
reply_t *authz_admin_requests (authz_t *authz, const char *provider, size_t limit);
reply_t *authz_admin_reset (authz_t *authz);
/* Ends every wait in progress (latency_ms, answer_delay_ms, a slow fault's delay) now: a test
 * whose window a long latency held open lets the calls in it go once it has seen what it needed. */
reply_t *authz_admin_release (authz_t *authz);
#endif
