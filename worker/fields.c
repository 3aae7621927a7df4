/* fields.c - the request-field readers: one set, so every operation caps and words its
 * refusals the same way */
#include "fields.h"
#include "reply.h"
#include "mem.h"
#include "crypto.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

int
fields_str (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max,
            int printable, char **out)
{
    const char *s;
    size_t len;
    char message [200];
    *out = NULL;
    int r = codec_get_str (root, key, &s, &len);
    if (r == 0)
        return 0;
    int bad = r < 0 || len == 0 || len > max || memchr (s, '\0', len);
    for (size_t i = 0; !bad && printable && i < len; i++)
        if ((unsigned char) s [i] < 0x20 || (unsigned char) s [i] >= 0x7f)
            bad = 1;
    if (bad) {
        snprintf (message, sizeof message, "\"%s\" must be a string of 1 to %zu %s", key, max,
                  printable ? "printable ASCII characters" : "bytes");
        reply_error (w, job, r == 1 && len > max ? FR_TOO_LARGE : FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    *out = mem_strndup (s, len);
    return 1;
}

int
fields_text (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, size_t max, char **out)
{
    const char *s;
    size_t len;
    char message [200];
    *out = NULL;
    int r = codec_get_str (root, key, &s, &len);
    if (r == 0)
        return 0;
    int bad = r < 0 || len == 0 || len > max;
    for (size_t i = 0; !bad && i < len; ) {
        const unsigned char *c = (const unsigned char *) s + i;
        /* C0 controls (NUL among them) but HTAB, DEL, and the C1 controls U+0080 to U+009F */
        if ((c [0] < 0x20 && c [0] != '\t') || c [0] == 0x7f || (c [0] == 0xc2 && i + 1 < len && c [1] < 0xa0))
            bad = 1;
        else
        if (c [0] < 0x80)
            i++;
        else {
            /* text_utf8_len reads up to NUL-terminated bytes: at most 4, copied so */
            unsigned char seq [5] = { 0 };
            memcpy (seq, c, len - i < 4 ? len - i : 4);
            size_t n = text_utf8_len (seq);
            if (n == 0)
                bad = 1;
            i += n;
        }
    }
    if (bad) {
        snprintf (message, sizeof message, "\"%s\" must be a string of 1 to %zu bytes of UTF-8 text without control "
                  "characters other than tabs", key, max);
        reply_error (w, job, r == 1 && len > max ? FR_TOO_LARGE : FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    *out = mem_strndup (s, len);
    return 1;
}

int
fields_int (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, int64_t min, int64_t max,
            int64_t *out)
{
    char message [160];
    int r = codec_get_int (root, key, out);
    if (r == 0)
        return 0;
    if (r < 0 || *out < min || *out > max) {
        snprintf (message, sizeof message, "\"%s\" must be an integer from %lld to %lld", key,
                  (long long) min, (long long) max);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    return 1;
}

int
fields_binding (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, char hash [65])
{
    const char *s;
    size_t len;
    char message [160];
    hash [0] = '\0';
    int r = codec_get_str (root, key, &s, &len);
    if (r == 0)
        return 0;
    if (r < 0 || len != FIELDS_BINDING_LEN || !text_base64url (s, len)) {
        snprintf (message, sizeof message, "\"%s\" must be a string of %d base64url characters", key,
                  FIELDS_BINDING_LEN);
        reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
        return -1;
    }
    char value [FIELDS_BINDING_LEN + 1];
    memcpy (value, s, len);
    value [len] = '\0';
    crypto_sha256_hex (value, hash);
    mem_wipe (value, sizeof value);
    return 1;
}

int
fields_scope_token_ok (const char *s, size_t len)
{
    if (len == 0 || len > FIELDS_MAX_SCOPE_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

int
fields_scopes (worker_t *w, const job_t *job, const msgpack_object *root, const char *key, uint32_t max, char **out)
{
    const msgpack_object *o = codec_get (root, key);
    char message [200];
    mem_buf_t b;
    *out = NULL;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    mem_buf_init (&b, (size_t) max * (FIELDS_MAX_SCOPE_LEN + 1));
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > max)
        goto bad;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *s = &o->via.array.ptr [i];
        if (s->type != MSGPACK_OBJECT_STR || !fields_scope_token_ok (s->via.str.ptr, s->via.str.size))
            goto bad;
        if ((b.len && mem_buf_append (&b, " ", 1) != 0) || mem_buf_append (&b, s->via.str.ptr, s->via.str.size) != 0)
            goto bad;
    }
    if (!b.data) {
        mem_buf_free (&b);
        return 0;
    }
    *out = b.data;
    return 1;
bad:
    mem_buf_free (&b);
    snprintf (message, sizeof message, "\"%s\" must be an array of at most %u scope names without spaces or quotes",
              key, max);
    reply_error (w, job, FR_BAD_REQUEST, message, NULL, -1);
    return -1;
}
