/* output.h - ferrulectl's output: one JSON line, or readable lines and tables */
#ifndef FERRULE_CTL_OUTPUT_H
#define FERRULE_CTL_OUTPUT_H
#include <stdio.h>
#include <jansson.h>

typedef struct {
    int json;           /* --json: the reply as one compact line */
    int verbose;        /* --verbose: details on stderr */
} output_mode_t;

/* A success printer of a command (human mode): 0, or 1 when the reply lacks what it needs. */
typedef int (*output_fn) (const json_t *reply, const output_mode_t *mode);

/* Writes s with control characters replaced, so a reply cannot drive the terminal. */
void output_safe (FILE *f, const char *s);

/* The whole reply as one JSON line on stdout. */
void output_json (const json_t *reply);
/* An error reply in human form on stderr: error, hint, code, retry after, request id. */
void output_error (const json_t *reply);
/* A local failure (bad usage, configuration): a reply-shaped object, so --json stays one object. */
json_t *output_local_error (const char *code, const char *message, const char *hint);

/* Success printers. */
int output_ping (const json_t *reply, const output_mode_t *mode);
int output_token (const json_t *reply, const output_mode_t *mode);
int output_refresh (const json_t *reply, const output_mode_t *mode);
int output_integration (const json_t *reply, const output_mode_t *mode);
int output_history (const json_t *reply, const output_mode_t *mode);
/* connect: the authorization URL, expiry and what to do next. */
int output_connect (const json_t *reply, const output_mode_t *mode);
/* callback, disconnect, report-scope: the integration as status prints it, warnings on stderr. */
int output_callback (const json_t *reply, const output_mode_t *mode);
/* doctor: Symptom, Cause, What to do (numbered), Facts. */
int output_doctor (const json_t *reply, const output_mode_t *mode);
/* dashboard-link: 0 when $FERRULE_GATEWAY_PUBLIC_URL (unset or empty: the default) can begin a link,
 * an absolute http:// or https:// URL with a host and no query or fragment; -1 and the reason in err
 * otherwise (the value is shown: it is no secret). */
int output_check_gateway_url (char *err, size_t errlen);
/* dashboard-link: adds "url", the gateway's /dashboard/open?link=... under $FERRULE_GATEWAY_PUBLIC_URL
 * (default http://127.0.0.1:8080), to a successful reply. */
void output_add_dashboard_url (json_t *reply);
/* dashboard-link: the URL and when it expires. */
int output_dashboard_link (const json_t *reply, const output_mode_t *mode);
/* events: one row per event with its deliveries. */
int output_events (const json_t *reply, const output_mode_t *mode);
/* events replay: how many deliveries were queued again, and how many were left for their endpoint
 * is no longer configured. */
int output_replay (const json_t *reply, const output_mode_t *mode);
/* webhook test: the test event and how its delivery went ("delivery_event", added by ferrulectl),
 * and on standard error the error that stopped following it ("delivery_error"), if any. */
int output_webhook_test (const json_t *reply, const output_mode_t *mode);
/* webhook doctor: per endpoint, its counts, last error and what to do. */
int output_webhooks (const json_t *reply, const output_mode_t *mode);
#endif
