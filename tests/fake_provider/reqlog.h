/* reqlog.h - the last token, authorize and revoke requests received, without their secrets */
#ifndef FAKE_REQLOG_H
#define FAKE_REQLOG_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQLOG_KEEP        1000   /* entries kept; older ones are dropped */
#define REQLOG_FIELD_MAX   512    /* longer recorded strings are cut */

/* What a request looked like. Strings are borrowed and may be NULL; none may hold a secret. */
typedef struct {
    const char *provider;
    const char *path;
    const char *method;
    const char *grant_type;
    const char *client_auth;          /* "basic", "post" or "none" */
    const char *redirect_uri;
    const char *scope;
    const char *code_challenge_method;
    bool        has_code_verifier;
    long        refresh_token_chain;  /* 0 for none */
    int64_t     at_ms;                /* wall clock, milliseconds since the epoch */
} reqlog_entry_t;

typedef struct reqlog_t reqlog_t;

reqlog_t *reqlog_new (void);
void reqlog_destroy (reqlog_t **p);
/* Records a copy of entry, dropping the oldest when full. */
void reqlog_add (reqlog_t *log, const reqlog_entry_t *entry);
/* The last limit entries, oldest first, of provider (all when NULL), as {"requests": [...]}. */
json_t *reqlog_json (const reqlog_t *log, const char *provider, size_t limit);
#endif
