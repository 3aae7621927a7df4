/* oauth.h - token endpoint requests and responses (RFC 6749, 7009, 7636): building requests
 * and classifying what the provider answered. Pure logic: the HTTP layer does the I/O. */
#ifndef FERRULE_OAUTH_H
#define FERRULE_OAUTH_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "catalog.h"
#include "result.h"

#define OAUTH_MAX_BODY          (256 * 1024)   /* longest response body classified */
#define OAUTH_MAX_TOKEN         (16 * 1024)    /* longest access or refresh token accepted */
#define OAUTH_MAX_INPUT         (16 * 1024)    /* longest code, token, URI or state sent */
#define OAUTH_MAX_ERROR         64             /* error code kept from a response */
#define OAUTH_MAX_DESCRIPTION   200            /* error_description (or message, reason) kept */
#define OAUTH_MAX_RETRY_AFTER   3600           /* Retry-After is capped to this many seconds */
#define OAUTH_MAX_EXPIRES_IN    (10LL * 366 * 86400)   /* ten years */
#define OAUTH_MAX_API_BASE      255            /* longest api_base_url kept */

/* One HTTP POST to a token or revocation endpoint. body and authorization hold secrets. */
typedef struct oauth_request {
    char *url;
    char *body;             /* application/x-www-form-urlencoded, RFC 3986 percent-encoding */
    char *authorization;    /* "Basic ..." header value for client_secret_basic, else NULL */
} oauth_request_t;

/* grant_type=refresh_token with the entry's token_params and refresh_params. NULL when the
 * provider has no client credentials (check catalog_check_credentials first) or the token
 * is empty or longer than OAUTH_MAX_INPUT. */
oauth_request_t *oauth_refresh_request_new (const catalog_provider_t *p, const char *refresh_token);
/* grant_type=authorization_code with redirect_uri and, when not NULL, the PKCE code_verifier.
 * NULL on the same conditions as oauth_refresh_request_new. */
oauth_request_t *oauth_code_request_new (const catalog_provider_t *p, const char *code,
                                         const char *redirect_uri, const char *code_verifier);
/* RFC 7009 revocation of token; hint ("refresh_token", "access_token") may be NULL. NULL when
 * the provider has no revocation_url or no client credentials. */
oauth_request_t *oauth_revocation_request_new (const catalog_provider_t *p, const char *token,
                                               const char *hint);
/* Wipes the body and the Authorization value, frees, nulls the pointer; safe on NULL. */
void oauth_request_destroy (oauth_request_t **r_p);

/* The URL to send the user to: response_type=code, client_id (client_id, or the entry's when
 * NULL), redirect_uri, scope (scopes joined with the entry's separator; the entry's default
 * scopes when n_scopes is 0; then each of its refresh_token_scopes not among them), state,
 * code_challenge with method S256 when code_challenge is not NULL, then the entry's
 * authorization_params. Caller frees; NULL without a client id. */
char *oauth_authorization_url (const catalog_provider_t *p, const char *client_id,
                               const char *redirect_uri, const char *state,
                               const char *const *scopes, size_t n_scopes,
                               const char *code_challenge);

typedef enum {
    OAUTH_OK = 0,
    OAUTH_INVALID_GRANT,        /* the refresh token or code is dead: the user must connect again */
    OAUTH_INVALID_CLIENT,       /* client id or secret rejected */
    OAUTH_INVALID_SCOPE,
    OAUTH_REDIRECT_MISMATCH,    /* redirect URI not registered with the provider's app */
    OAUTH_TRANSIENT,            /* 5xx, 429, temporarily_unavailable, server_error: retry later */
    OAUTH_BAD_RESPONSE,         /* not a token response (HTML, empty, malformed, out of range) */
    OAUTH_REJECTED              /* another OAuth error: invalid_request, unsupported_grant_type, ... */
} oauth_kind_t;

typedef struct {
    oauth_kind_t kind;
    long http_status;
    char *access_token;         /* secret */
    char *refresh_token;        /* secret; NULL when absent or empty: keep the old one. Also set in
                                   an OAUTH_BAD_RESPONSE whose access token alone is unusable: a
                                   refresh token the provider may have rotated, to be kept */
    int64_t expires_in;         /* seconds; -1 when absent */
    int expires_in_ignored;     /* it was there, but not seconds from 0 to 10 years: taken as absent */
    char *scope;                /* as granted, or NULL */
    char *token_type;           /* or NULL */
    char *api_base_url;         /* the provider's api_base_field, when it names one and the answer's
                                   value passes oauth_api_base_problem; else NULL */
    const char *api_base_ignored;   /* the field was there but not taken: why (static text that
                                       never quotes the value, for a warning); NULL otherwise */
    char *error;                /* provider's error code: printable ASCII, at most 64 */
    char *error_description;    /* error_description, else message, else reason (Zoom): control
                                   characters removed, at most 200 bytes */
    int64_t retry_after;        /* seconds for OAUTH_TRANSIENT, capped; -1 unknown */
    int already_invalid;        /* a revocation answered with an OAUTH_OK that is the provider's
                                   invalid_token: the token was already revoked or expired */
    char detail [160];          /* why this kind, for logs and the chain; never holds a token */
} oauth_result_t;

/* Classifies a token endpoint answer into out, which is overwritten (clear it first when
 * reusing it). http_status must be a real HTTP status: status 0 (no answer) is the caller's.
 * An "error" field makes an answer an error whatever the status; so does "ok": false. A body in
 * form encoding (access_token=...&token_type=bearer) is read as a JSON object of strings. */
void oauth_parse_token_response (const catalog_provider_t *p, long http_status,
                                 const char *retry_after_header, const char *body,
                                 size_t body_len, oauth_result_t *out);
/* NULL when value (len bytes) may be kept as an integration's api_base_url of provider p: an
 * absolute https:// URL with a host and no credentials, of 1 to OAUTH_MAX_API_BASE printable ASCII
 * bytes without spaces (http:// to 127.0.0.1 only for a provider whose token endpoint is there
 * too: the fake provider of tests and local runs); otherwise why not, as static text that does
 * not quote the value. */
const char *oauth_api_base_problem (const catalog_provider_t *p, const char *value, size_t len);
/* Wipes the tokens, frees the strings and resets the fields (expires_in, retry_after -1). */
void oauth_result_clear (oauth_result_t *r);
/* Classifies a finished token-endpoint call: a transport failure (no answer, timeout) is
 * OAUTH_TRANSIENT, a body over max_body is OAUTH_BAD_RESPONSE, anything else is parsed as above. */
struct http_response;
void oauth_read_response (const catalog_provider_t *p, const struct http_response *resp, int64_t max_body,
                          oauth_result_t *out);

/* Classifies a finished RFC 7009 revocation call: OAUTH_OK for a 2xx whose body carries no error
 * (whatever else it holds); an "error" field or "ok": false is an error whatever the status, as
 * for a token answer, but a 4xx invalid_token, Google's answer for a token already revoked or
 * expired (where RFC 7009 answers 200), is OAUTH_OK with already_invalid; a transport failure,
 * 5xx, 429 or 408 is OAUTH_TRANSIENT with retry_after. */
void oauth_read_revocation (const catalog_provider_t *p, const struct http_response *resp, int64_t max_body,
                            oauth_result_t *out);

/* Replaces the description with "(description withheld: it quoted the <what>)", the error code
 * with "withheld" and the detail likewise, when one holds secret or a piece of it of 23
 * characters or more (all of a shorter one, of 8 or more): some providers quote back the code,
 * token, PKCE verifier or client secret they were sent (Zoom's "reason"), which must reach no
 * message and no log. */
void oauth_result_withhold (oauth_result_t *r, const char *secret, const char *what);

/* Seconds to wait from a Retry-After value (delta-seconds or HTTP-date) relative to now,
 * capped at OAUTH_MAX_RETRY_AFTER; -1 when value is NULL or not parsable. */
int64_t oauth_parse_retry_after (const char *value, time_t now);

/* 1 when a refused refresh or code exchange was answered unauthorized_client (RFC 6749 5.2): the
 * client authenticated, but the provider does not allow it this grant type (an Auth0 or Okta app
 * without the refresh_token grant enabled; at Google also a refresh token issued to another client
 * id). It is classified OAUTH_INVALID_CLIENT like a rejected secret, but what fixes it differs. */
int oauth_unauthorized_client (const oauth_result_t *res);

/* "ok", "invalid_grant", ... for logs and the token chain. */
const char *oauth_kind_name (oauth_kind_t kind);
/* The service's status for a classified answer. code_exchange: the request exchanged an
 * authorization code (invalid_grant then means the code expired or was used) rather than a
 * refresh token (invalid_grant: needs reconnect). */
fr_status_t oauth_kind_status (oauth_kind_t kind, int code_exchange);
/* What an OAuth error code (and its description) means, by the one list of codes providers use:
 * for a token endpoint's answer and for an error the provider redirected the browser with. */
oauth_kind_t oauth_error_kind (const catalog_provider_t *p, const char *code, const char *description);
#endif
