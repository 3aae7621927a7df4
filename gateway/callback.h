/* callback.h - the browser's end of a connect: GET /oauth/callback and POST /oauth/retry
 *
 * The provider sends the browser to /oauth/callback; the gateway finishes the connect with the
 * "callback" operation and answers a page, never a raw error: "Connected to PROVIDER" (or a
 * redirect to the connect's return_to when its origin is allowed), or one page per failure of
 * docs/troubleshooting.md with what happened, what to do and the action itself: Try again,
 * Approve all permissions, Reconnect, or Contact support with a reference id whose log line
 * has every fact the operator needs. */
#ifndef FERRULE_CALLBACK_H
#define FERRULE_CALLBACK_H
#include "gateway.h"
void callback_page (gw_req_t *req, gw_resp_t *resp);
void callback_retry (gw_req_t *req, gw_resp_t *resp);
#endif
