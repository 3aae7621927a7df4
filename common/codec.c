/* codec.c - msgpack bodies: every declared size is checked against the bytes that remain
 * before msgpack-c sees them, because msgpack-c allocates for a container's declared count. */
#include "codec.h"
#include "clock.h"
#include "mem.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

struct codec_msg {
    msgpack_unpacked unpacked;
};

struct codec_builder {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    int failed;
    unsigned char *fixed;        /* codec_builder_new_fixed: the caller's buffer, buf unused */
    size_t fixed_cap, fixed_len;
};

typedef struct {
    uint32_t left;       /* items still to read in this container */
    int      is_map;     /* keys sit at even positions counted from the end */
} walk_frame_t;

static uint64_t
read_be (const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p [i];
    return v;
}

/* A big-endian two's complement integer of n bytes, without implementation-defined casts. */
static int64_t
read_be_signed (const unsigned char *p, int n)
{
    uint64_t v = read_be (p, n);
    uint64_t sign = (uint64_t) 1 << (8 * n - 1);
    if (!(v & sign))
        return (int64_t) v;
    uint64_t mag = ((~v) & (sign | (sign - 1))) + 1;       /* 1 .. 2^(8n-1) */
    return mag == sign && n == 8 ? INT64_MIN : -(int64_t) mag;
}

/* Records a value the scan wants: the object whose type byte b is at start, its header (and so
 * any integer) read up to at, n its string length. Containers get their length when they end. */
static void
codec_capture (codec_field_t *fl, const unsigned char *p, size_t start, size_t at, unsigned char b, uint64_t n)
{
    fl->ptr = NULL;
    fl->len = 0;
    if (b <= 0x7f)              { fl->kind = CODEC_INT; fl->i = b; }
    else if (b >= 0xe0)         { fl->kind = CODEC_INT; fl->i = (int64_t) b - 256; }
    else if (b <= 0x8f || b == 0xde || b == 0xdf) { fl->kind = CODEC_MAP; fl->ptr = (const char *) p + start; }
    else if (b <= 0x9f || b == 0xdc || b == 0xdd) { fl->kind = CODEC_ARRAY; fl->ptr = (const char *) p + start; }
    else if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) {
        fl->kind = CODEC_STR;
        fl->ptr = (const char *) p + at;
        fl->len = (size_t) n;
    }
    else if (b == 0xc0)         fl->kind = CODEC_NIL;
    else if (b == 0xc2 || b == 0xc3) { fl->kind = CODEC_BOOL; fl->b = b == 0xc3; }
    else if (b >= 0xcc && b <= 0xcf) {
        uint64_t v = read_be (p + start + 1, 1 << (b - 0xcc));
        fl->kind = v > (uint64_t) INT64_MAX ? CODEC_OTHER : CODEC_INT;   /* as codec_get_int */
        fl->i = fl->kind == CODEC_INT ? (int64_t) v : 0;
    }
    else if (b >= 0xd0 && b <= 0xd3) { fl->kind = CODEC_INT; fl->i = read_be_signed (p + start + 1, 1 << (b - 0xd0)); }
    else
        fl->kind = CODEC_OTHER;  /* binary, float */
}

/* The first field that wants the root map's key s (n bytes) and has not been found yet, or -1. */
static int
codec_wanted (codec_field_t *fields, const size_t *klens, size_t nfields, const unsigned char *s, uint64_t n)
{
    for (size_t i = 0; i < nfields; i++)
        if (klens [i] == n && fields [i].kind == CODEC_ABSENT && memcmp (fields [i].key, s, (size_t) n) == 0)
            return (int) i;
    return -1;
}

/* Walks one msgpack value without allocating; checks limits and that it fills len exactly. With
 * fields, also records the value of each wanted key of the root map (the first one, as codec_get
 * does); every byte read is inside len, every count checked against the bytes that remain. */
static fr_status_t
codec_walk (const unsigned char *p, size_t len, codec_field_t *fields, const size_t *klens, size_t nfields,
            char *err, size_t errlen)
{
    walk_frame_t stack [CODEC_MAX_DEPTH + 1];
    int depth = 0;
    size_t pos = 0;
    size_t items = 0;
    int root_done = 0;
    int want = -1;              /* the field whose value comes next in the root map */
    int open = -1;              /* the field whose container value is being walked */
    size_t open_start = 0;

#define NEED(n) do { if ((size_t) (n) > len - pos) goto truncated; } while (0)
    while (!root_done) {
        int is_key = depth > 0 && stack [depth - 1].is_map && (stack [depth - 1].left % 2 == 0);
        NEED (1);
        size_t start = pos;
        unsigned char b = p [pos++];
        uint64_t n = 0;          /* string/bin length or container count */
        int kind = 0;            /* 0 scalar, 1 string/bin, 2 array, 3 map */
        int is_str = 0;

        if (++items > CODEC_MAX_ITEMS) {
            snprintf (err, errlen, "body holds more than %d objects", CODEC_MAX_ITEMS);
            return FR_TOO_LARGE;
        }
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            ;
        else if (b >= 0x80 && b <= 0x8f) { kind = 3; n = b & 0x0f; }
        else if (b >= 0x90 && b <= 0x9f) { kind = 2; n = b & 0x0f; }
        else if (b >= 0xa0 && b <= 0xbf) { kind = 1; n = b & 0x1f; is_str = 1; }
        else switch (b) {
            case 0xc4: NEED (1); n = read_be (p + pos, 1); pos += 1; kind = 1; break;
            case 0xc5: NEED (2); n = read_be (p + pos, 2); pos += 2; kind = 1; break;
            case 0xc6: NEED (4); n = read_be (p + pos, 4); pos += 4; kind = 1; break;
            case 0xca: NEED (4); pos += 4; break;
            case 0xcb: NEED (8); pos += 8; break;
            case 0xcc: case 0xd0: NEED (1); pos += 1; break;
            case 0xcd: case 0xd1: NEED (2); pos += 2; break;
            case 0xce: case 0xd2: NEED (4); pos += 4; break;
            case 0xcf: case 0xd3: NEED (8); pos += 8; break;
            case 0xd9: NEED (1); n = read_be (p + pos, 1); pos += 1; kind = 1; is_str = 1; break;
            case 0xda: NEED (2); n = read_be (p + pos, 2); pos += 2; kind = 1; is_str = 1; break;
            case 0xdb: NEED (4); n = read_be (p + pos, 4); pos += 4; kind = 1; is_str = 1; break;
            case 0xdc: NEED (2); n = read_be (p + pos, 2); pos += 2; kind = 2; break;
            case 0xdd: NEED (4); n = read_be (p + pos, 4); pos += 4; kind = 2; break;
            case 0xde: NEED (2); n = read_be (p + pos, 2); pos += 2; kind = 3; break;
            case 0xdf: NEED (4); n = read_be (p + pos, 4); pos += 4; kind = 3; break;
            default:
                /* 0xc1 is never used; extension types have no place in this protocol */
                snprintf (err, errlen, "unsupported msgpack type 0x%02x at byte %zu", b, pos - 1);
                return FR_MALFORMED_FRAME;
        }
        if (is_key && !is_str) {
            snprintf (err, errlen, "map key at byte %zu is not a string", pos - 1);
            return FR_MALFORMED_FRAME;
        }
        if (kind == 1) {
            if (n > CODEC_MAX_STRING || (is_key && n > CODEC_MAX_KEY)) {
                snprintf (err, errlen, "%s of %llu bytes is over the limit of %d", is_key ? "map key" : "string",
                          (unsigned long long) n, is_key ? CODEC_MAX_KEY : CODEC_MAX_STRING);
                return FR_TOO_LARGE;
            }
            NEED (n);
        }
        /* a key of the root map, or the value of a wanted one (the bytes it spans are in len) */
        if (depth == 1 && nfields > 0) {
            if (is_key)
                want = codec_wanted (fields, klens, nfields, p + pos, n);
            else
            if (want >= 0) {
                codec_capture (&fields [want], p, start, pos, b, n);
                if (kind >= 2) {
                    open = want;
                    open_start = start;
                }
                want = -1;
            }
        }
        if (kind == 1)
            pos += (size_t) n;
        else
        if (kind >= 2) {
            uint64_t need = kind == 3 ? 2 * n : n;  /* every object takes at least one byte */
            if (need > len - pos) {
                snprintf (err, errlen, "container declares %llu entries but only %zu bytes follow",
                          (unsigned long long) n, len - pos);
                return FR_MALFORMED_FRAME;
            }
            if (need > CODEC_MAX_ITEMS) {
                snprintf (err, errlen, "container of %llu entries is over the limit of %d",
                          (unsigned long long) n, CODEC_MAX_ITEMS);
                return FR_TOO_LARGE;
            }
            if (need > 0) {
                if (depth >= CODEC_MAX_DEPTH) {
                    snprintf (err, errlen, "nesting deeper than %d levels", CODEC_MAX_DEPTH);
                    return FR_TOO_LARGE;
                }
                stack [depth].left = (uint32_t) need;
                stack [depth].is_map = kind == 3;
                depth++;
                continue;       /* the container's first item is read next */
            }
        }
        /* one object complete: pop every container it finished */
        while (depth > 0) {
            if (--stack [depth - 1].left > 0)
                break;
            depth--;
        }
        if (open >= 0 && depth <= 1) {
            /* the wanted container ended with this object */
            fields [open].len = pos - open_start;
            open = -1;
        }
        if (depth == 0)
            root_done = 1;
    }
#undef NEED
    if (pos != len) {
        snprintf (err, errlen, "%zu bytes follow the body", len - pos);
        return FR_MALFORMED_FRAME;
    }
    return FR_OK;

truncated:
    snprintf (err, errlen, "body ends in the middle of an object at byte %zu", pos);
    return FR_MALFORMED_FRAME;
}

/* The checks every body passes before anything reads it: not empty, within the size limit, and
 * one valid msgpack value filling it exactly. */
static fr_status_t
codec_validate (const void *data, size_t len, codec_field_t *fields, const size_t *klens, size_t nfields,
                char *err, size_t errlen)
{
    if (len == 0) {
        snprintf (err, errlen, "body is empty");
        return FR_MALFORMED_FRAME;
    }
    if (len > CODEC_MAX_BODY) {
        snprintf (err, errlen, "body of %zu bytes is over the limit of %d", len, CODEC_MAX_BODY);
        return FR_TOO_LARGE;
    }
    return codec_walk (data, len, fields, klens, nfields, err, errlen);
}

fr_status_t
codec_scan (const void *data, size_t len, codec_field_t *fields, size_t nfields, char *err, size_t errlen)
{
    size_t klens [CODEC_SCAN_MAX_FIELDS];
    assert (nfields <= CODEC_SCAN_MAX_FIELDS && (fields || nfields == 0));
    for (size_t i = 0; i < nfields; i++) {
        assert (fields [i].key);
        klens [i] = strlen (fields [i].key);
        fields [i].kind = CODEC_ABSENT;
        fields [i].ptr = NULL;
        fields [i].len = 0;
    }
    fr_status_t st = codec_validate (data, len, fields, klens, nfields, err, errlen);
    if (st == FR_OK) {
        /* a map is 0x80-0x8f, map 16 or map 32; the walk checked the rest (the order of the
         * checks is codec_decode's, so both give the same reason for the same body) */
        unsigned char b = *(const unsigned char *) data;
        if (!((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf)) {
            snprintf (err, errlen, "body is not a map");
            st = FR_MALFORMED_FRAME;
        }
    }
    if (st != FR_OK)
        for (size_t i = 0; i < nfields; i++) {
            fields [i].kind = CODEC_ABSENT;
            fields [i].ptr = NULL;
            fields [i].len = 0;
        }
    return st;
}

int
codec_field_str (const codec_field_t *f, const char **s, size_t *len)
{
    if (f->kind == CODEC_ABSENT || f->kind == CODEC_NIL)
        return 0;
    if (f->kind != CODEC_STR)
        return -1;
    *s = f->ptr;
    *len = f->len;
    return 1;
}

int
codec_field_int (const codec_field_t *f, int64_t *value)
{
    if (f->kind == CODEC_ABSENT || f->kind == CODEC_NIL)
        return 0;
    if (f->kind != CODEC_INT)
        return -1;
    *value = f->i;
    return 1;
}

int
codec_field_bool (const codec_field_t *f, int *value)
{
    if (f->kind == CODEC_ABSENT || f->kind == CODEC_NIL)
        return 0;
    if (f->kind != CODEC_BOOL)
        return -1;
    *value = f->b;
    return 1;
}

/* msgpack-c leaves the pointer of an empty string or binary NULL when no other string came
 * before it: readers pass it to memchr, memcpy and jansson, so give it an empty string. The
 * nesting was checked by codec_validate. */
static void
codec_fill_empty (msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_STR && !o->via.str.ptr)
        o->via.str.ptr = "";
    else
    if (o->type == MSGPACK_OBJECT_BIN && !o->via.bin.ptr)
        o->via.bin.ptr = "";
    else
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++)
            codec_fill_empty (&o->via.array.ptr [i]);
    else
    if (o->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            codec_fill_empty (&o->via.map.ptr [i].key);
            codec_fill_empty (&o->via.map.ptr [i].val);
        }
}

fr_status_t
codec_decode (const void *data, size_t len, codec_msg_t **msg_p, char *err, size_t errlen)
{
    assert (msg_p);
    *msg_p = NULL;
    fr_status_t st = codec_validate (data, len, NULL, NULL, 0, err, errlen);
    if (st != FR_OK)
        return st;

    codec_msg_t *msg = mem_alloc (sizeof *msg);
    size_t off = 0;
    msgpack_unpacked_init (&msg->unpacked);
    if (msgpack_unpack_next (&msg->unpacked, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        snprintf (err, errlen, "body is not valid msgpack");
        codec_msg_destroy (&msg);
        return FR_MALFORMED_FRAME;
    }
    if (msg->unpacked.data.type != MSGPACK_OBJECT_MAP) {
        snprintf (err, errlen, "body is not a map");
        codec_msg_destroy (&msg);
        return FR_MALFORMED_FRAME;
    }
    codec_fill_empty (&msg->unpacked.data);
    *msg_p = msg;
    return FR_OK;
}

const msgpack_object *
codec_msg_root (const codec_msg_t *msg)
{
    return &msg->unpacked.data;
}

void
codec_msg_destroy (codec_msg_t **msg_p)
{
    if (msg_p && *msg_p) {
        msgpack_unpacked_destroy (&(*msg_p)->unpacked);
        mem_free (*msg_p);
        *msg_p = NULL;
    }
}

const msgpack_object *
codec_get (const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen (key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr [i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen
        &&  memcmp (k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr [i].val;
    }
    return NULL;
}

int
codec_get_str (const msgpack_object *map, const char *key, const char **s, size_t *len)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return -1;
    const msgpack_object *o = codec_get (map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    *s = o->via.str.ptr;
    *len = o->via.str.size;
    return 1;
}

int
codec_get_int (const msgpack_object *map, const char *key, int64_t *value)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return -1;
    const msgpack_object *o = codec_get (map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t) INT64_MAX)
            return -1;
        *value = (int64_t) o->via.u64;
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *value = o->via.i64;
        return 1;
    }
    return -1;
}

int
codec_get_bool (const msgpack_object *map, const char *key, int *value)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return -1;
    const msgpack_object *o = codec_get (map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *value = o->via.boolean ? 1 : 0;
    return 1;
}

char *
codec_strdup (const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    if (memchr (o->via.str.ptr, '\0', o->via.str.size))
        return NULL;
    return mem_strndup (o->via.str.ptr, o->via.str.size);
}

/* --- builder --- */

static int
builder_write (void *data, const char *buf, size_t len)
{
    codec_builder_t *b = data;
    if (b->failed)
        return -1;
    if (b->fixed) {
        if (len > b->fixed_cap - b->fixed_len) {
            b->failed = 1;
            return -1;
        }
        memcpy (b->fixed + b->fixed_len, buf, len);
        b->fixed_len += len;
        return 0;
    }
    if (len > CODEC_MAX_BODY || b->buf.size + len > CODEC_MAX_BODY) {
        b->failed = 1;
        return -1;
    }
    if (msgpack_sbuffer_write (&b->buf, buf, len) != 0) {
        b->failed = 1;
        return -1;
    }
    return 0;
}

codec_builder_t *
codec_builder_new (void)
{
    codec_builder_t *b = mem_alloc (sizeof *b);
    msgpack_sbuffer_init (&b->buf);
    msgpack_packer_init (&b->pk, b, builder_write);
    return b;
}

codec_builder_t *
codec_builder_new_fixed (void *buf, size_t cap)
{
    codec_builder_t *b = codec_builder_new ();
    b->fixed = buf;
    b->fixed_cap = cap;
    return b;
}

void
codec_builder_destroy (codec_builder_t **b_p)
{
    if (b_p && *b_p) {
        codec_builder_t *b = *b_p;
        /* replies carry access tokens: do not leave them in freed memory (a fixed buffer is
         * the caller's, and stays as packed) */
        if (b->buf.data)
            mem_wipe (b->buf.data, b->buf.size);
        msgpack_sbuffer_destroy (&b->buf);
        mem_free (b);
        *b_p = NULL;
    }
}

void
codec_builder_reset (codec_builder_t *b)
{
    if (b->buf.data)
        mem_wipe (b->buf.data, b->buf.size);
    msgpack_sbuffer_clear (&b->buf);
    if (b->fixed)
        mem_wipe (b->fixed, b->fixed_len);
    b->fixed_len = 0;
    b->failed = 0;
}

void
codec_raw (codec_builder_t *b, const void *packed, size_t len)
{
    (void) builder_write (b, packed, len);
}

void codec_map (codec_builder_t *b, uint32_t n)   { msgpack_pack_map (&b->pk, n); }
void codec_array (codec_builder_t *b, uint32_t n) { msgpack_pack_array (&b->pk, n); }
void codec_int (codec_builder_t *b, int64_t v)    { msgpack_pack_int64 (&b->pk, v); }
void codec_bool (codec_builder_t *b, int v)       { if (v) msgpack_pack_true (&b->pk); else msgpack_pack_false (&b->pk); }
void codec_nil (codec_builder_t *b)               { msgpack_pack_nil (&b->pk); }

void
codec_strn (codec_builder_t *b, const char *s, size_t len)
{
    if (!s) {
        msgpack_pack_nil (&b->pk);
        return;
    }
    if (len > CODEC_MAX_STRING) {
        b->failed = 1;
        return;
    }
    msgpack_pack_str (&b->pk, len);
    msgpack_pack_str_body (&b->pk, s, len);
}

void
codec_str (codec_builder_t *b, const char *s)
{
    codec_strn (b, s, s ? strlen (s) : 0);
}

void
codec_kv_str (codec_builder_t *b, const char *key, const char *value)
{
    codec_str (b, key);
    codec_str (b, value);
}

void
codec_kv_int (codec_builder_t *b, const char *key, int64_t value)
{
    codec_str (b, key);
    codec_int (b, value);
}

void
codec_kv_bool (codec_builder_t *b, const char *key, int value)
{
    codec_str (b, key);
    codec_bool (b, value);
}

void
codec_kv_time (codec_builder_t *b, const char *key, int64_t epoch_seconds)
{
    char buf [32];
    codec_str (b, key);
    if (epoch_seconds > 0)
        codec_str (b, clock_rfc3339 (epoch_seconds, buf, sizeof buf));
    else
        codec_nil (b);
}

const char *
codec_next_word (const char **p, size_t *len)
{
    const char *s = *p;
    while (*s == ' ' || *s == ',')
        s++;
    if (!*s)
        return NULL;
    *len = strcspn (s, " ,");
    *p = s + *len;
    return s;
}

void
codec_kv_words (codec_builder_t *b, const char *key, const char *list)
{
    const char *p = list ? list : "", *word;
    size_t len;
    uint32_t n = 0;
    codec_str (b, key);
    while (codec_next_word (&p, &len))
        n++;
    codec_array (b, n);
    p = list ? list : "";
    while ((word = codec_next_word (&p, &len)))
        codec_strn (b, word, len);
}

void
codec_object (codec_builder_t *b, const msgpack_object *o)
{
    if (msgpack_pack_object (&b->pk, *o) != 0)
        b->failed = 1;
}

void
codec_json (codec_builder_t *b, const json_t *j)
{
    switch (json_typeof (j)) {
        case JSON_OBJECT: {
            const char *key;
            json_t *value;
            codec_map (b, (uint32_t) json_object_size (j));
            json_object_foreach ((json_t *) j, key, value) {
                codec_str (b, key);
                codec_json (b, value);
            }
            break;
        }
        case JSON_ARRAY: {
            size_t i;
            json_t *value;
            codec_array (b, (uint32_t) json_array_size (j));
            json_array_foreach (j, i, value)
                codec_json (b, value);
            break;
        }
        case JSON_STRING:
            codec_strn (b, json_string_value (j), json_string_length (j));
            break;
        case JSON_INTEGER:
            codec_int (b, json_integer_value (j));
            break;
        case JSON_REAL:
            msgpack_pack_double (&b->pk, json_real_value (j));
            break;
        case JSON_TRUE:
            codec_bool (b, 1);
            break;
        case JSON_FALSE:
            codec_bool (b, 0);
            break;
        default:
            codec_nil (b);
            break;
    }
}

int
codec_builder_failed (const codec_builder_t *b)
{
    return b->failed;
}

const char *
codec_builder_data (const codec_builder_t *b, size_t *len)
{
    if (b->fixed) {
        *len = b->fixed_len;
        return (const char *) b->fixed;
    }
    *len = b->buf.size;
    return b->buf.data;
}

json_t *
codec_to_json (const msgpack_object *o)
{
    switch (o->type) {
        case MSGPACK_OBJECT_NIL:
            return json_null ();
        case MSGPACK_OBJECT_BOOLEAN:
            return json_boolean (o->via.boolean);
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            return json_integer (o->via.u64 > (uint64_t) INT64_MAX ? INT64_MAX : (json_int_t) o->via.u64);
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            return json_integer (o->via.i64);
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            return json_real (o->via.f64);
        case MSGPACK_OBJECT_STR: {
            json_t *s = json_stringn (o->via.str.ptr, o->via.str.size);
            return s ? s : json_null ();       /* not UTF-8 */
        }
        case MSGPACK_OBJECT_ARRAY: {
            json_t *a = json_array ();
            for (uint32_t i = 0; i < o->via.array.size; i++)
                json_array_append_new (a, codec_to_json (&o->via.array.ptr [i]));
            return a;
        }
        case MSGPACK_OBJECT_MAP: {
            json_t *m = json_object ();
            for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr [i].key;
                if (k->type != MSGPACK_OBJECT_STR || memchr (k->via.str.ptr, '\0', k->via.str.size))
                    continue;
                char *key = mem_strndup (k->via.str.ptr, k->via.str.size);
                /* a key given twice: the first counts, as codec_get and the scan read it */
                if (!json_object_get (m, key))
                    json_object_set_new (m, key, codec_to_json (&o->via.map.ptr [i].val));
                mem_free (key);
            }
            return m;
        }
        default:
            return json_null ();
    }
}

void
codec_error_reply (codec_builder_t *b, const char *rid, size_t rid_len, fr_status_t st,
                   const char *message, const char *hint, int64_t retry_after)
{
    codec_map (b, rid ? 3 : 2);
    if (rid) {
        codec_str (b, "rid");
        codec_strn (b, rid, rid_len);
    }
    codec_kv_bool (b, "ok", 0);
    codec_str (b, "error");
    codec_map (b, retry_after >= 0 ? 4 : 3);
    codec_kv_str (b, "code", result_code (st));
    codec_kv_str (b, "message", message ? message : result_code (st));
    codec_kv_str (b, "hint", hint ? hint : result_default_hint (st));
    if (retry_after >= 0)
        codec_kv_int (b, "retry_after", retry_after);
}
