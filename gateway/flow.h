/* flow.h - the browser binding of a dashboard connect
 *
 * A connect started from the dashboard (Connect, Reconnect, "Try again") is bound to the browser
 * that started it: the browser gets a cookie holding 32 random bytes (base64url, 43 characters),
 * the connect carries the value as browser_binding, and the worker keeps its SHA-256. The
 * callback passes the cookie it finds; a callback in a browser without it (an authorization URL
 * copied and sent to someone else) is refused before the code is exchanged (browser_mismatch).
 * One value per browser, reused while valid, so parallel connects in one browser all work; each
 * connect sends it again with a fresh day, so that it does not end during a sign-in.
 * HttpOnly, Path=/, no Domain, SameSite=Lax (the provider's redirect back to /oauth/callback is a
 * cross-site top-level GET, which a Strict cookie would not go along with), a day long. Over
 * https it is Secure and named "__Host-ferrule_flow" (only this very host may set it), over http
 * "ferrule_flow"; as for the session cookie, only the name in use is read, compared exactly, and
 * several of that name with different values count as none (gw_cookie). */
#ifndef FERRULE_FLOW_H
#define FERRULE_FLOW_H
#include "gateway.h"
#include "result.h"

#define FLOW_COOKIE        "ferrule_flow"          /* public URL http:// */
#define FLOW_COOKIE_SECURE "__Host-ferrule_flow"   /* public URL https:// */
#define FLOW_BINDING_LEN   43                      /* 32 bytes in base64url, unpadded */
#define FLOW_MAX_AGE_S     86400

/* The name of the flow cookie of gw. */
const char *flow_cookie_name (const gw_t *gw);
/* 1 when v is a well-formed binding: exactly FLOW_BINDING_LEN base64url characters. */
int flow_binding_valid (const char *v);
/* The Set-Cookie value carrying binding value; caller frees. */
char *flow_cookie_header (const gw_t *gw, const char *value);
/* The request's binding (borrowed): its flow cookie when there is exactly one well-formed value;
 * NULL otherwise. */
const char *flow_binding (const gw_req_t *req);
/* The binding a connect started by this request is bound to, into out: the browser's own when it
 * has one, else a new one; *set_cookie is its Set-Cookie value, for a day from now (caller frees).
 * 0, or -1 when no random bytes could be drawn. */
int flow_bind (const gw_req_t *req, char out [FLOW_BINDING_LEN + 1], char **set_cookie) FR_MUSTCHECK;
#endif
