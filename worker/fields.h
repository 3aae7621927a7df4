/* fields.h - reading a request's fields: every reader checks type and bounds and, when it
 * refuses, answers the request itself (bad_request or too_large, naming the field) */
#ifndef FERRULE_FIELDS_H
#define FERRULE_FIELDS_H
#include "context.h"

#define FIELDS_MAX_SCOPE_LEN 512     /* one scope name */

/* An optional string of 1 to max bytes without NUL (printable: ASCII 0x20-0x7e only).
 * 0 absent, 1 present (*out a copy), -1 refused (reply sent). */
int fields_str (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
                int printable, char **out);
/* An optional string of 1 to max bytes of valid UTF-8 text whose only control character is HTAB
 * (an HTTP header's value: RFC 7230 allows tabs in it, and descriptions in other languages).
 * 0 absent, 1 present (*out a copy), -1 refused (reply sent). */
int fields_text (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
                 char **out);
/* An optional integer from min to max. 0 absent, 1 present, -1 refused (reply sent). */
int fields_int (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, int64_t min,
                int64_t max, int64_t *out);
/* An optional array of at most max RFC 6749 scope names, joined by spaces into *out.
 * 0 absent, nil or empty, 1 present, -1 refused (reply sent). */
int fields_scopes (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, uint32_t max,
                   char **out);
/* An optional browser binding (the gateway's flow cookie): exactly FIELDS_BINDING_LEN base64url
 * characters. hash gets the SHA-256 (hex) of the value, "" when absent; the value itself is
 * never kept, logged or quoted. 0 absent, 1 present, -1 refused (reply sent). */
#define FIELDS_BINDING_LEN 43        /* 32 random bytes in base64url, unpadded */
int fields_binding (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, char hash [65]);
/* 1 when s (len bytes) is an RFC 6749 scope-token: visible ASCII but '"' and '\'. */
int fields_scope_token_ok (const char *s, size_t len);
#endif
