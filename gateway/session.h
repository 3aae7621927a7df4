/* session.h - dashboard sessions and CSRF tokens, signed with the key every replica shares
 *
 * A session is a cookie "1|EXPIRY|WORKSPACE|NONCE" "." HMAC-SHA256 (hex) of that text under
 * FERRULE_GATEWAY_SESSION_KEY: any replica can check it, none stores it. The cookie is HttpOnly,
 * SameSite=Strict, Path=/, without Domain. When the public URL is https it is Secure and named
 * "__Host-ferrule_session": a browser takes a cookie of that name only from this very host, so
 * another host of the same site (evil.example.com beside ferrule.example.com) cannot plant its
 * own session in a visitor's browser. Over http (local development) it is "ferrule_session".
 * Only the cookie of the name in use is read, its name compared exactly.
 * Every POST of the dashboard carries csrf = HMAC("csrf|" cookie), checked in constant time. */
#ifndef FERRULE_SESSION_H
#define FERRULE_SESSION_H
#include "gateway.h"

#define SESSION_COOKIE        "ferrule_session"         /* public URL http:// */
#define SESSION_COOKIE_SECURE "__Host-ferrule_session"  /* public URL https:// */

/* The name of the session cookie of gw. */
const char *session_cookie_name (const gw_t *gw);

/* The Set-Cookie value of a new session for workspace; caller frees. NULL when no random bytes
 * could be had for its nonce. */
char *session_issue (const gw_t *gw, const char *workspace);
/* The Set-Cookie value that clears the session cookie (same name and attributes, Max-Age=0);
 * caller frees. */
char *session_clear (const gw_t *gw);
/* 1 and the workspace (out, IDENT_MAX + 1 bytes) when the request carries a valid, unexpired
 * session cookie; 0 otherwise. */
int session_check (const gw_req_t *req, char *workspace, size_t len);
/* The CSRF token of the request's session (65 bytes); "" without a session. */
void session_csrf (const gw_req_t *req, char out [65]);
/* 1 when the form field "csrf" matches the session's token. */
int session_csrf_ok (const gw_req_t *req);
#endif
