/* webhook.h - signed webhooks: the endpoints the operator configures, the event body, the
 * signature, the retry schedule and one HTTP delivery. No database, no thread: events.c drives it. */
#ifndef FERRULE_WEBHOOK_H
#define FERRULE_WEBHOOK_H
#include <stddef.h>
#include <stdint.h>
#include "result.h"

#define WEBHOOK_MAX_ENDPOINTS   32
#define WEBHOOK_NAME_MAX        64
#define WEBHOOK_URL_MAX         2048
#define WEBHOOK_SECRET_MIN      16
#define WEBHOOK_SECRET_MAX      1024
#define WEBHOOK_ENV_NAME_MAX    128     /* a "secret_env" name, as the catalog's */
#define WEBHOOK_FILE_MAX        (256 * 1024)
#define WEBHOOK_SIG_HEX         64      /* HMAC-SHA256 as lower-case hex */
#define WEBHOOK_URL_TAG_HEX     8       /* what stands for a URL's path when it is shown */
#define WEBHOOK_ANSWER_MAX      (64 * 1024)     /* of a receiver's answer body, read and ignored */
#define WEBHOOK_SIGNATURE_HEADER "Ferrule-Signature"

/* Every event type, in the order docs/protocol.md lists them ("test" is sent only by
 * "webhook test" and goes to every endpoint it is sent to). */
extern const char *const webhook_event_types [];

typedef struct {
    char    *name;                   /* [A-Za-z0-9._-]{1,64} */
    char    *url;                    /* http:// or https:// with a host, as curl parses it; may hold a password */
    char    *secret;                 /* secure memory; never logged */
    char   **types;                  /* event types it wants; NULL with all_types */
    size_t   ntypes;
    int      all_types;              /* "events": ["*"] or absent ([] is refused) */
    char    *secret_env;             /* the variable the secret came from, or NULL */
} webhook_endpoint_t;

typedef struct webhook_set webhook_set_t;

/* Reads the endpoints file (JSON: {"endpoints": [{"name", "url", "secret_file" | "secret_env",
 * "events"}]}, docs/operations.md). NULL with a reason in err (never a secret). */
webhook_set_t *webhook_set_load (const char *path, char *err, size_t errlen);
/* The same from a buffer; source names it in messages. */
webhook_set_t *webhook_set_parse (const char *text, size_t len, const char *source, char *err, size_t errlen);
/* Overwrites and unsets every variable an endpoint's secret came from (once all are read; no two
 * endpoints share one: webhook_set_parse refuses it, as a request signed for one would pass at
 * the other), as the workers do with the providers' secrets. */
void webhook_set_forget_environment (const webhook_set_t *set);
/* Wipes the secrets, frees, nulls *set_p; safe twice. */
void webhook_set_destroy (webhook_set_t **set_p);
size_t webhook_set_count (const webhook_set_t *set);
const webhook_endpoint_t *webhook_set_at (const webhook_set_t *set, size_t i);
/* The endpoint named name or with exactly that URL; NULL when none. */
const webhook_endpoint_t *webhook_set_find (const webhook_set_t *set, const char *name_or_url);
/* 1 when the endpoint wants events of this type ("test" always). */
int webhook_endpoint_wants (const webhook_endpoint_t *ep, const char *type);
/* The endpoint's URL for messages and listings: its scheme, host and port as curl parses them,
 * then "/" when it has no path nor query, else "/... (TAG)", TAG the first WEBHOOK_URL_TAG_HEX
 * hex digits of an HMAC-SHA256, keyed with the endpoint's secret, of its path and query: a
 * capability URL carries its secret there. Never its user information. A placeholder when it is
 * not a URL. */
void webhook_endpoint_shown (const webhook_endpoint_t *ep, char *out, size_t outlen);

/* HMAC-SHA256 (key: secret) of "<timestamp>.<body>", as 64 hex digits plus NUL; FR_INTERNAL,
 * out "", when OpenSSL failed. */
fr_status_t webhook_sign (const char *secret, int64_t timestamp, const char *body, size_t body_len,
                          char out [WEBHOOK_SIG_HEX + 1]) FR_MUSTCHECK;
/* 1 when signature (the header's value "t=<ts>,v1=<hex>") is a valid signature of body under
 * secret and its timestamp lies within tolerance_s of now; for receivers written in C and tests. */
int webhook_verify (const char *secret, const char *header_value, const char *body, size_t body_len,
                    int64_t now, int64_t tolerance_s);

/* The wait before attempt number attempts + 1 (attempts >= 1 made so far): base doubling per
 * attempt, at most max_ms, then "equal jitter": a value in [d/2, d] chosen by rnd. */
int64_t webhook_backoff_ms (int attempts, int64_t base_ms, int64_t max_ms, uint64_t rnd);

/* What an event's body is made of. */
typedef struct {
    const char *id;                  /* uuid */
    const char *type;
    const char *integration;         /* NULL for test events */
    const char *provider;
    const char *diagnosis;
    int64_t     created_at;          /* epoch ms */
    int64_t     generation;          /* < 0: none */
    const char *detail;              /* may be NULL */
    int64_t     expires_at;          /* epoch seconds, 0 none */
} webhook_event_t;

/* The JSON body (caller frees with mem_free), or NULL when the event cannot be one (a text that
 * is not UTF-8): it is then not to be sent at all, neither as an empty body nor without a field. */
char *webhook_body (const webhook_event_t *ev);

/* How one delivery attempt ended. */
typedef enum {
    WEBHOOK_DELIVERED,               /* 2xx */
    WEBHOOK_RETRY,                   /* anything else: try again later */
} webhook_outcome_t;

/* Called during an attempt; nonzero abandons it (the worker is stopping). */
typedef int (webhook_abort_fn) (void *arg);

/* POSTs body to the endpoint, signed at timestamp now_s, waiting at most timeout_ms; curl is an
 * easy handle the caller owns (reused between calls for its connections). *status gets the HTTP
 * status of the final answer once its headers ended, however its body ends (0: no answer); err a
 * reason for anything but a 2xx. abort_fn may be NULL. */
webhook_outcome_t webhook_send (void *curl, const webhook_endpoint_t *ep, const webhook_event_t *ev,
                                const char *body, int64_t now_s, int64_t timeout_ms,
                                webhook_abort_fn *abort_fn, void *abort_arg, long *status,
                                char *err, size_t errlen);
#endif
