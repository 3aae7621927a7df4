/* gateway.h - the gateway's shared state and the request/response types of its handlers
 * (private to gateway/) */
#ifndef FERRULE_GATEWAY_H
#define FERRULE_GATEWAY_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "html.h"
#include "pool.h"
#include "metrics.h"

#define GW_MAX_BODY        16384        /* request body: forms and JSON are small */
#define GW_MAX_ORIGINS     32
#define GW_MAX_PROVIDERS   64
#define GW_MAX_CLIENT_KEYS 1024
#define GW_ORIGIN_MAX      256
#define GW_CALL_MS         10000        /* a broker call */
#define GW_CALLBACK_MS     30000        /* the callback: one provider exchange */
#define GW_PAGE_MS         5000         /* every broker call of one dashboard page together */
#define GW_REQUEST_MS      30000        /* every broker call of one request together: the drain's basis */

typedef struct policy policy_t;

typedef struct {
    const char *bind;               /* HOST:PORT, loopback by default (TLS ends at the Ingress) */
    const char *public_url;         /* how browsers reach the gateway: the callback and dashboard base */
    const char *brokers;
    const char *return_to_origins;  /* comma-separated origins a connect's return_to may point to */
    const char *session_key;        /* secret: base64 of 32 bytes, the same on every replica */
    const char *client_keys_file;   /* NAME SHA256HEX per line: bearer keys of named clients */
    const char *policy_file;        /* the brokers' policy file, applied to those clients */
    const char *providers;          /* comma-separated providers the dashboard offers to Connect */
    const char *http_bind;          /* /healthz, /readyz, /metrics */
    const char *support_url;        /* Contact support: a mailto: or https: address ("" : a bare mailto:) */
    int64_t session_ttl_s;
    int64_t max_connections;
    int64_t connection_timeout_s;
    int64_t broker_clients;
} gw_config_t;

typedef struct {
    char name [65];
    unsigned char hash [32];        /* SHA-256 of the key */
} gw_client_key_t;

typedef struct gw {
    gw_config_t cfg;
    pool_t *pool;
    pthread_rwlock_t access_lock;   /* policy and client_keys: read by requests, swapped on SIGHUP */
    policy_t *policy;               /* NULL: named clients may do nothing */
    gw_client_key_t *client_keys;
    size_t nclient_keys;
    unsigned char session_key [32];
    int secure;                     /* public_url is https: Secure cookies, HSTS */
    char origin [GW_ORIGIN_MAX];    /* scheme://host[:port] of public_url */
    char origins [GW_MAX_ORIGINS][GW_ORIGIN_MAX];
    size_t norigins;
    char providers [GW_MAX_PROVIDERS][65];
    size_t nproviders;
    metrics_t *metrics;
    metrics_series_t *m_responses [6];  /* by status class: [2] 2xx ... [5] 5xx */
} gw_t;

/* One request as a handler sees it. */
typedef struct {
    gw_t *gw;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    char param [2][192];            /* the {id} and {key_id} of the route, in order */
    const char *body;               /* NUL-terminated, at most GW_MAX_BODY */
    size_t body_len;
    char rid [17];                  /* request id: logs, X-Request-Id, broker requests */
    int64_t until_ms;               /* monotonic: its broker calls end by then (GW_REQUEST_MS); 0: unbounded */
    const char *client;             /* who the API caller is, for the log (NULL: none) */
    char client_name [65];          /* a named client's name, copied: a SIGHUP may replace the list */
} gw_req_t;

/* What a handler answers; route.c adds the security headers and sends it. */
typedef struct {
    unsigned status;
    const char *type;
    char *body;                     /* owned */
    size_t len;
    char *location;                 /* owned: Location */
    char *cookie;                   /* owned: Set-Cookie */
    int retry_after;                /* seconds, -1: none */
    int www_authenticate;           /* 1: WWW-Authenticate: Bearer */
    const char *allow;              /* Allow, with 405 */
} gw_resp_t;

typedef void (gw_handler_fn) (gw_req_t *req, gw_resp_t *resp);

/* route.c */
const char *gw_query (const gw_req_t *req, const char *name);
const char *gw_header (const gw_req_t *req, const char *name);
/* The value of the cookie named exactly name (case counts); NULL when there is none, or when the
 * request carries several of that name with different values: which to believe cannot be told. */
const char *gw_cookie (const gw_req_t *req, const char *name);
/* A field of an application/x-www-form-urlencoded body, decoded into out: 1 found, 0 absent, -1
 * there but unusable (longer than out, an encoded NUL, not UTF-8; out is then ""). */
int gw_form (const gw_req_t *req, const char *name, char *out, size_t outlen);
void gw_resp_html (gw_resp_t *resp, unsigned status, html_t *h);
void gw_resp_json (gw_resp_t *resp, unsigned status, json_t *j);     /* j borrowed */
void gw_resp_redirect (gw_resp_t *resp, const char *url);             /* 303 See Other */
/* A page with a title and one paragraph (escaped), for refusals. */
void gw_resp_message (gw_resp_t *resp, unsigned status, const char *title, const char *text);

/* The broker call of a request: args borrowed (may be NULL); its rid begins with req->rid
 * ("RID-" and digits of its own). It gets timeout_ms or what is left of req->until_ms, the less;
 * nothing is asked once that is over (the reply is a "timeout"). Never NULL. */
json_t *gw_call (gw_req_t *req, const char *op, json_t *args, int timeout_ms);
/* One deadline for the broker calls of a page, and whether an answer said to stop asking. */
typedef struct {
    int64_t until_ms;               /* monotonic */
    int stalled;                    /* the service could not answer one: it will not answer the next */
} gw_budget_t;

void gw_budget_start (gw_budget_t *b, int ms);
/* gw_call with what is left of b's time; once it is over or b is stalled, nothing is asked and
 * the reply is a "timeout". A timeout, unavailable, database_unavailable or overloaded answer
 * stalls b. Never NULL. */
json_t *gw_call_within (gw_req_t *req, gw_budget_t *b, const char *op, json_t *args);
/* The error code of a reply ("ok" on success). */
const char *gw_code (const json_t *reply);
/* The HTTP status for a protocol error code (docs/openapi.yaml, "Errors"). */
unsigned gw_http_status (const char *code);
/* The Retry-After of a refusal: the reply's retry_after, from 1 (0 or less would tell a browser
 * or a client to come back at once) to 3600 s, else dflt. */
int gw_retry_after (const json_t *reply, int dflt);

/* 1 when a browser's Sec-Fetch-Site or Origin (each NULL when absent) says a request comes from
 * a page of another site than gw's public URL; 0 when they say it does not, or say nothing. */
int gw_cross_site (const gw_t *gw, const char *fetch_site, const char *origin);

/* "scheme://host[:port]" of url into out, lower case (the scheme matched in any case); 0, or -1
 * when url is not absolute http(s) or its origin does not fit. */
int gw_origin_of (const char *url, char *out, size_t len);
/* 1 when url is absolute http(s) and its origin is the gateway's own or on the allow-list. */
int gw_return_to_allowed (const gw_t *gw, const char *url);
#endif
