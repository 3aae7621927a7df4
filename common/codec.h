/* codec.h - msgpack bodies of the wire protocol: bounded decoding and a sticky-failure builder */
#ifndef FERRULE_CODEC_H
#define FERRULE_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include <jansson.h>
#include "result.h"

#define CODEC_CLIENT_PROTOCOL "FRL1"   /* client <-> broker frames */
#define CODEC_WORKER_PROTOCOL "FRW1"   /* broker <-> worker frames */

/* Limits enforced on every decoded body (docs/protocol.md). */
#define CODEC_MAX_BODY      (256 * 1024)  /* bytes; also ZMQ_MAXMSGSIZE on every socket */
#define CODEC_MAX_DEPTH     8             /* nesting of arrays and maps */
#define CODEC_MAX_ITEMS     16384         /* objects in one body, all levels together */
#define CODEC_MAX_STRING    (64 * 1024)   /* one string or binary */
#define CODEC_MAX_KEY       64            /* one map key */

typedef struct codec_msg codec_msg_t;

/* Checks the bytes against the limits before any allocation, then unpacks them.
 * On failure returns FR_MALFORMED_FRAME or FR_TOO_LARGE and a reason in err. */
fr_status_t codec_decode (const void *data, size_t len, codec_msg_t **msg_p,
                          char *err, size_t errlen) FR_MUSTCHECK;
const msgpack_object *codec_msg_root (const codec_msg_t *msg);
void codec_msg_destroy (codec_msg_t **msg_p);

/* What a scanned key of a body's root map holds. */
typedef enum {
    CODEC_ABSENT = 0,       /* no such key */
    CODEC_NIL,
    CODEC_BOOL,
    CODEC_INT,              /* any msgpack integer that fits int64_t */
    CODEC_STR,
    CODEC_ARRAY,
    CODEC_MAP,
    CODEC_OTHER             /* binary, float, or an integer over INT64_MAX */
} codec_kind_t;

/* One key codec_scan looks for, and what it found (the first occurrence, as codec_get). */
typedef struct {
    const char  *key;       /* in: the key wanted */
    codec_kind_t kind;
    const char  *ptr;       /* STR: the string (not NUL-terminated); ARRAY, MAP: the value as encoded */
    size_t       len;
    int64_t      i;         /* INT */
    int          b;         /* BOOL: 0 or 1 */
} codec_field_t;

#define CODEC_SCAN_MAX_FIELDS 16

/* Reads only the root map's wanted keys, in one pass that allocates nothing: the body passes the
 * same checks as codec_decode and fails with the same status and reason; the values point into
 * data. A MAP value can be scanned again for its own keys. On failure every field is ABSENT.
 * The keys asked for must differ: a repeated one is filled in its first field only. */
fr_status_t codec_scan (const void *data, size_t len, codec_field_t *fields, size_t nfields,
                        char *err, size_t errlen) FR_MUSTCHECK;
/* A scanned field read as codec_get_str, codec_get_int and codec_get_bool read a key: 1 when it
 * holds the type asked for, 0 when it is absent or nil, -1 when it holds another type. */
int codec_field_str (const codec_field_t *f, const char **s, size_t *len);
int codec_field_int (const codec_field_t *f, int64_t *value);
int codec_field_bool (const codec_field_t *f, int *value);

/* Map accessors. They return 1 when key holds the type asked for, 0 when the key is
 * missing or nil, and -1 when it holds another type (or map is not a map). */
const msgpack_object *codec_get (const msgpack_object *map, const char *key);
int codec_get_str (const msgpack_object *map, const char *key, const char **s, size_t *len);
int codec_get_int (const msgpack_object *map, const char *key, int64_t *value);
int codec_get_bool (const msgpack_object *map, const char *key, int *value);
/* A string as a new NUL-terminated copy; NULL when o is not a string or holds a NUL. */
char *codec_strdup (const msgpack_object *o);

typedef struct codec_builder codec_builder_t;

codec_builder_t *codec_builder_new (void);
/* A builder that packs into the caller's buf (secure memory, for one) and allocates nothing for
 * the data: packing past cap fails it (codec_builder_failed). Destroying it leaves buf as packed. */
codec_builder_t *codec_builder_new_fixed (void *buf, size_t cap);
void codec_builder_destroy (codec_builder_t **b_p);
void codec_builder_reset (codec_builder_t *b);
void codec_map (codec_builder_t *b, uint32_t entries);
void codec_array (codec_builder_t *b, uint32_t items);
void codec_str (codec_builder_t *b, const char *s);          /* NULL packs nil */
void codec_strn (codec_builder_t *b, const char *s, size_t len);
void codec_int (codec_builder_t *b, int64_t v);
void codec_bool (codec_builder_t *b, int v);
void codec_nil (codec_builder_t *b);
/* Appends bytes packed before (a pre-packed part of a reply) as they are. */
void codec_raw (codec_builder_t *b, const void *packed, size_t len);
void codec_kv_str (codec_builder_t *b, const char *key, const char *value);
void codec_kv_int (codec_builder_t *b, const char *key, int64_t value);
void codec_kv_bool (codec_builder_t *b, const char *key, int value);
/* key, then the time as RFC 3339 UTC, or nil when epoch_seconds <= 0. */
void codec_kv_time (codec_builder_t *b, const char *key, int64_t epoch_seconds);
/* key, then the words of a list separated by spaces or commas as an array of strings. */
void codec_kv_words (codec_builder_t *b, const char *key, const char *list);
/* The next word of a list separated by spaces or commas (*len bytes), or NULL at the end. */
const char *codec_next_word (const char **p, size_t *len);
/* Copies a decoded object as it is. */
void codec_object (codec_builder_t *b, const msgpack_object *o);
/* Packs a JSON value (object keys as strings, integers, reals, strings, arrays, booleans, null). */
void codec_json (codec_builder_t *b, const json_t *j);
/* First failure is sticky; check once before sending. */
int codec_builder_failed (const codec_builder_t *b);
const char *codec_builder_data (const codec_builder_t *b, size_t *len);

/* A decoded object as JSON (binary as base64 is not needed on this wire: binary becomes null). A
 * key given twice keeps its first value, as codec_get reads it. */
json_t *codec_to_json (const msgpack_object *o);

/* A complete error reply body: {"rid":rid,"ok":false,"error":{"code","message","hint"[, "retry_after"]}}.
 * retry_after < 0 leaves it out; hint NULL uses the default hint for st. */
void codec_error_reply (codec_builder_t *b, const char *rid, size_t rid_len, fr_status_t st,
                        const char *message, const char *hint, int64_t retry_after);
#endif
