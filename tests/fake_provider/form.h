/* form.h - the URL-encoded pieces OAuth puts on the wire: forms, query strings, Basic credentials */
#ifndef FAKE_FORM_H
#define FAKE_FORM_H
#include <stddef.h>

#define FORM_MAX_FIELDS  64       /* more parameters than this is a malformed request */
#define FORM_MAX_VALUE   8192     /* longest decoded name or value accepted */

typedef struct form_t form_t;

typedef enum {
    FORM_OK = 0,
    FORM_MALFORMED,               /* bad percent-escape, NUL byte, missing '=' is allowed */
    FORM_DUPLICATE,               /* a parameter given twice (RFC 6749 section 3.1) */
    FORM_TOO_LARGE                /* too many fields or a field too long */
} form_status_t;

/* Parses application/x-www-form-urlencoded text of len bytes ('+' is a space).
   On success *form is a new form the caller destroys; on failure it is NULL. */
form_status_t form_parse (const char *text, size_t len, form_t **form)
    __attribute__ ((warn_unused_result));
void form_destroy (form_t **p);

/* The decoded value of name, borrowed from the form, or NULL when absent. */
const char *form_get (const form_t *form, const char *name);
/* Human-readable reason for a parse status, for error_description. */
const char *form_status_text (form_status_t status);

/* Appends s percent-encoded (RFC 3986 unreserved kept) to out of size cap.
   Returns 0, or -1 when it does not fit (out is then truncated but terminated). */
int form_encode_append (char *out, size_t cap, const char *s) __attribute__ ((warn_unused_result));

/* Decodes the value of an "Authorization: Basic ..." header into client id and
   secret, each URL-decoded as RFC 6749 section 2.3.1 asks. Returns 0, or -1 when
   the header is not well-formed Basic credentials. The caller frees both. */
int form_basic_credentials (const char *header, char **client_id, char **client_secret)
    __attribute__ ((warn_unused_result));
#endif
