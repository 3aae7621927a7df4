/* reply.h - an HTTP answer as plain data, so the OAuth logic never touches the HTTP library */
#ifndef FAKE_REPLY_H
#define FAKE_REPLY_H
#include <jansson.h>
#include <stddef.h>

#define REPLY_HUGE_SIZE  (10u * 1024 * 1024)   /* body size of the "huge" fault */

typedef enum {
    REPLY_BODY,                  /* status, content type and body */
    REPLY_HUGE,                  /* 200 with a REPLY_HUGE_SIZE JSON body, generated while sent */
    REPLY_DROP                   /* close the connection without answering */
} reply_kind_t;

typedef struct {
    reply_kind_t kind;
    unsigned     status;
    const char  *content_type;
    char        *body;
    size_t       body_len;
    char        *location;           /* Location header, or NULL */
    char        *www_authenticate;   /* WWW-Authenticate header, or NULL */
    long         retry_after;        /* Retry-After seconds, or -1 */
} reply_t;

/* Serialises body, which is taken (decref'd). */
reply_t *reply_json_take (unsigned status, json_t *body);
/* {"error": error[, "error_description": description]} */
reply_t *reply_error (unsigned status, const char *error, const char *description);
reply_t *reply_text (unsigned status, const char *content_type, const char *body, size_t len);
reply_t *reply_redirect (const char *location);
reply_t *reply_special (reply_kind_t kind);
void reply_destroy (reply_t **p);
#endif
