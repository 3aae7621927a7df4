/* form.c - capped URL-encoded form parser, percent-encoder and Basic credential decoder */
#include "form.h"
#include "mem.h"
#include "text.h"
#include <string.h>
#include <strings.h>

typedef struct {
    char *name;
    char *value;
} form_field_t;

struct form_t {
    form_field_t fields [FORM_MAX_FIELDS];
    size_t       count;
};

/* Decodes len bytes of s into a new string; '+' means space when plus_is_space. */
static form_status_t
decode (const char *s, size_t len, int plus_is_space, char **out)
{
    char *buf = NULL;
    size_t n = 0;
    form_status_t rc = FORM_OK;

    *out = NULL;
    if (len > 3 * (size_t) FORM_MAX_VALUE) {
        rc = FORM_TOO_LARGE;
        goto out;
    }
    buf = mem_alloc (len + 1);
    for (size_t i = 0; i < len; i++) {
        char c = s [i];
        if (c == '%') {
            unsigned char byte;
            if (i + 2 >= len || text_unhex (s + i + 1, 1, &byte) != 0) {
                rc = FORM_MALFORMED;
                goto out;
            }
            c = (char) byte;
            i += 2;
        }
        else if (c == '+' && plus_is_space)
            c = ' ';
        if (c == '\0') {
            rc = FORM_MALFORMED;
            goto out;
        }
        buf [n++] = c;
    }
    buf [n] = '\0';
    if (n > FORM_MAX_VALUE) {
        rc = FORM_TOO_LARGE;
        goto out;
    }
    *out = buf;
    buf = NULL;
out:
    mem_free (buf);
    return rc;
}

form_status_t
form_parse (const char *text, size_t len, form_t **form)
{
    form_t *f = mem_alloc (sizeof *f);
    form_status_t rc = FORM_OK;
    size_t pos = 0;

    *form = NULL;
    while (pos < len) {
        const char *pair = text + pos;
        const char *amp = memchr (pair, '&', len - pos);
        size_t pair_len = amp ? (size_t) (amp - pair) : len - pos;
        const char *eq;
        char *name = NULL, *value = NULL;

        pos += pair_len + 1;
        if (pair_len == 0)
            continue;                       /* "a=1&&b=2" is tolerated, as browsers send it */
        if (f->count == FORM_MAX_FIELDS) {
            rc = FORM_TOO_LARGE;
            goto out;
        }
        eq = memchr (pair, '=', pair_len);
        rc = decode (pair, eq ? (size_t) (eq - pair) : pair_len, 1, &name);
        if (rc != FORM_OK)
            goto out;
        rc = eq ? decode (eq + 1, pair_len - (size_t) (eq - pair) - 1, 1, &value)
                : decode ("", 0, 1, &value);
        if (rc != FORM_OK) {
            mem_free (name);
            goto out;
        }
        if (form_get (f, name)) {
            mem_free (name);
            mem_free (value);
            rc = FORM_DUPLICATE;
            goto out;
        }
        f->fields [f->count].name = name;
        f->fields [f->count].value = value;
        f->count++;
    }
    *form = f;
    f = NULL;
out:
    form_destroy (&f);
    return rc;
}

void
form_destroy (form_t **p)
{
    if (!p || !*p)
        return;
    form_t *f = *p;
    for (size_t i = 0; i < f->count; i++) {
        mem_free_secret (&f->fields [i].name);
        mem_free_secret (&f->fields [i].value);   /* values may be tokens or secrets */
    }
    mem_free (f);
    *p = NULL;
}

const char *
form_get (const form_t *form, const char *name)
{
    if (!form)
        return NULL;
    for (size_t i = 0; i < form->count; i++)
        if (strcmp (form->fields [i].name, name) == 0)
            return form->fields [i].value;
    return NULL;
}

const char *
form_status_text (form_status_t status)
{
    switch (status) {
    case FORM_OK:        return "ok";
    case FORM_MALFORMED: return "malformed url-encoded parameters";
    case FORM_DUPLICATE: return "a parameter was included more than once";
    case FORM_TOO_LARGE: return "too many parameters or a parameter too long";
    }
    return "unknown form error";
}

int
form_encode_append (char *out, size_t cap, const char *s)
{
    static const char hex [] = "0123456789ABCDEF";
    size_t pos = strnlen (out, cap);

    if (pos >= cap)
        return -1;
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '_' || c == '.' || c == '~';
        size_t need = plain ? 1 : 3;
        if (pos + need >= cap) {
            out [pos] = '\0';
            return -1;
        }
        if (plain)
            out [pos++] = (char) c;
        else {
            out [pos++] = '%';
            out [pos++] = hex [c >> 4];
            out [pos++] = hex [c & 15];
        }
    }
    out [pos] = '\0';
    return 0;
}

static int
b64_value (char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict standard base64 (padding optional); returns a new NUL-terminated buffer or NULL. */
static char *
b64_decode (const char *s, size_t len)
{
    char *out = NULL;
    size_t n = 0;
    unsigned int acc = 0;
    int bits = 0;

    while (len > 0 && s [len - 1] == '=')
        len--;
    if (len % 4 == 1 || len > 4 * (size_t) FORM_MAX_VALUE)
        goto fail;
    out = mem_alloc (len * 3 / 4 + 2);
    for (size_t i = 0; i < len; i++) {
        int v = b64_value (s [i]);
        if (v < 0)
            goto fail;
        acc = (acc << 6) | (unsigned int) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [n++] = (char) ((acc >> bits) & 0xff);
        }
    }
    out [n] = '\0';
    if (memchr (out, '\0', n))
        goto fail;
    return out;
fail:
    mem_free_secret (&out);
    return NULL;
}

int
form_basic_credentials (const char *header, char **client_id, char **client_secret)
{
    char *plain = NULL;
    const char *colon;
    int rc = -1;

    *client_id = NULL;
    *client_secret = NULL;
    if (!header || strncasecmp (header, "Basic ", 6) != 0)
        goto out;
    header += 6;
    while (*header == ' ')
        header++;
    size_t len = strlen (header);
    while (len > 0 && header [len - 1] == ' ')
        len--;
    plain = b64_decode (header, len);
    if (!plain)
        goto out;
    colon = strchr (plain, ':');
    if (!colon)
        goto out;
    if (decode (plain, (size_t) (colon - plain), 1, client_id) != FORM_OK)
        goto out;
    if (decode (colon + 1, strlen (colon + 1), 1, client_secret) != FORM_OK)
        goto out;
    rc = 0;
out:
    if (rc != 0) {
        mem_free_secret (client_id);
        mem_free_secret (client_secret);
    }
    mem_free_secret (&plain);
    return rc;
}
