/* fuzz_codec.c - msgpack request bodies: codec_decode, the map readers, the copies the broker
 * and worker make of a decoded body (codec_object, codec_to_json, codec_json), and codec_scan,
 * the broker's reading, checked against the decoder on every input */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "ident.h"
#include "mem.h"
#include "ring.h"

/* A harness invariant failed: abort so libFuzzer saves the input. */
#define CHECK(cond) do { if (!(cond)) { fprintf (stderr, "fuzz_codec: %s\n", #cond); abort (); } } while (0)

/* Keys the broker and the worker read from request bodies. */
static const char *const keys [] = {
    "v", "op", "rid", "id", "provider", "min_valid", "force", "state", "code", "error",
    "error_description", "scopes", "require_scopes", "redirect_uri", "access_token",
    "refresh_token", "expires_at", "client_id", "www_authenticate", "scope", "deadline_ms",
    "ok", "error", "partitions", "worker", NULL
};

/* Every reader on one key of map; the results must agree with each other. */
static void
read_key (const msgpack_object *map, const char *key)
{
    const char *s = NULL;
    size_t len = 0;
    int64_t i = 0;
    int b = 0;
    const msgpack_object *o = codec_get (map, key);
    int rs = codec_get_str (map, key, &s, &len);
    int ri = codec_get_int (map, key, &i);
    int rb = codec_get_bool (map, key, &b);

    CHECK (rs >= -1 && rs <= 1 && ri >= -1 && ri <= 1 && rb >= -1 && rb <= 1);
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        CHECK (rs == 0 && ri == 0 && rb == 0);
    if (rs == 1) {
        CHECK (o && o->type == MSGPACK_OBJECT_STR && s == o->via.str.ptr && len == o->via.str.size);
        CHECK (len <= CODEC_MAX_STRING);
    }
    if (rb == 1)
        CHECK (b == 0 || b == 1);
    char *copy = codec_strdup (o);
    if (copy) {
        CHECK (rs == 1 && strlen (copy) == len && memcmp (copy, s, len) == 0);
        /* string lists (scopes) are split with codec_next_word */
        const char *p = copy;
        size_t wlen;
        const char *w;
        while ((w = codec_next_word (&p, &wlen)))
            CHECK (wlen > 0 && w + wlen <= copy + len);
        mem_free (copy);
    }
}

/* codec_scan on the same bytes must refuse what codec_decode refused, with the same status and
 * reason, and otherwise find for each key what the decoder's readers find. */
static void
scan_check (const uint8_t *data, size_t size, fr_status_t decoded, const char *derr, const msgpack_object *root)
{
    enum { N = 6 };
    static const char *const wanted [] = { "rid", "op", "deadline_ms", "integration", "error", "state" };
    /* the key set varies with the input, so first-occurrence and duplicate handling get exercised
     * on keys the body really holds */
    codec_field_t f [N + 1];
    char key [CODEC_MAX_KEY + 1] = "";
    size_t n = 0;
    for (; n < N; n++)
        f [n] = (codec_field_t) { .key = wanted [n] };
    if (root && root->via.map.size > 0) {
        const msgpack_object *k = &root->via.map.ptr [size % root->via.map.size].key;
        if (!memchr (k->via.str.ptr, '\0', k->via.str.size)) {
            memcpy (key, k->via.str.ptr, k->via.str.size);
            key [k->via.str.size] = '\0';
            int known = 0;          /* the keys asked for must differ (codec.h) */
            for (size_t i = 0; i < n; i++)
                known |= strcmp (wanted [i], key) == 0;
            if (!known)
                f [n++] = (codec_field_t) { .key = key };
        }
    }
    char err [256] = "";
    fr_status_t st = codec_scan (data, size, f, n, err, sizeof err);
    CHECK (st == decoded);
    if (st != FR_OK) {
        CHECK (strcmp (err, derr) == 0);
        for (size_t i = 0; i < n; i++)
            CHECK (f [i].kind == CODEC_ABSENT);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = codec_get (root, f [i].key);
        const char *s = NULL, *fs = NULL;
        size_t len = 0, flen = 0;
        int64_t v = 0, fv = 0;
        int b = 0, fb = 0;
        CHECK ((o == NULL) == (f [i].kind == CODEC_ABSENT));
        CHECK (codec_field_str (&f [i], &fs, &flen) == codec_get_str (root, f [i].key, &s, &len));
        CHECK (flen == len && (len == 0 || memcmp (fs, s, len) == 0));
        if (fs)
            CHECK (fs >= (const char *) data && fs + flen <= (const char *) data + size);
        CHECK (codec_field_int (&f [i], &fv) == codec_get_int (root, f [i].key, &v) && fv == v);
        CHECK (codec_field_bool (&f [i], &fb) == codec_get_bool (root, f [i].key, &b) && fb == b);
        if (f [i].kind == CODEC_MAP || f [i].kind == CODEC_ARRAY) {
            CHECK (o->type == (f [i].kind == CODEC_MAP ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY));
            CHECK (f [i].ptr >= (const char *) data && f [i].len <= size
                   && f [i].ptr + f [i].len <= (const char *) data + size);
            /* a nested map is scanned again as the broker reads an error's code */
            codec_field_t code = { .key = "code" };
            fr_status_t nested = codec_scan (f [i].ptr, f [i].len, &code, 1, err, sizeof err);
            CHECK ((nested == FR_OK) == (f [i].kind == CODEC_MAP));
            if (nested == FR_OK) {
                CHECK (codec_field_str (&code, &fs, &flen) == codec_get_str (o, "code", &s, &len));
                CHECK (flen == len && (len == 0 || memcmp (fs, s, len) == 0));
            }
        }
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    codec_msg_t *msg = NULL;
    codec_msg_t *again = NULL;
    codec_builder_t *b = NULL;
    char err [256] = "";
    fr_status_t st = codec_decode (data, size, &msg, err, sizeof err);

    if (st != FR_OK) {
        CHECK (!msg && err [0] && (st == FR_MALFORMED_FRAME || st == FR_TOO_LARGE));
        scan_check (data, size, st, err, NULL);
        return 0;
    }
    const msgpack_object *root = codec_msg_root (msg);
    CHECK (root->type == MSGPACK_OBJECT_MAP);
    scan_check (data, size, st, err, root);
    for (int k = 0; keys [k]; k++)
        read_key (root, keys [k]);
    /* every key the body holds, as a C string when it has no NUL */
    for (uint32_t k = 0; k < root->via.map.size; k++) {
        char *key = codec_strdup (&root->via.map.ptr [k].key);
        CHECK (root->via.map.ptr [k].key.type == MSGPACK_OBJECT_STR);
        if (key) {
            CHECK (strlen (key) <= CODEC_MAX_KEY);
            read_key (root, key);
            mem_free (key);
        }
    }

    /* the broker checks the integration id, then routes by it (or by a callback's state) */
    const char *integ;
    size_t integ_len;
    if (codec_get_str (root, "integration", &integ, &integ_len) == 1) {
        if (ident_valid (integ, integ_len)) {
            CHECK (integ_len >= 1 && integ_len <= IDENT_MAX);
            for (size_t i = 0; i < integ_len; i++)
                CHECK (integ [i] && strchr ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-", integ [i]));
            char *id = mem_strndup (integ, integ_len);
            CHECK (ring_partition (id, 64) < 64);
            mem_free (id);
        }
        (void) ring_hash (integ, integ_len);
    }

    /* the broker forwards bodies with codec_object: what it packs must decode again */
    b = codec_builder_new ();
    codec_object (b, root);
    CHECK (!codec_builder_failed (b));
    size_t len;
    const char *packed = codec_builder_data (b, &len);
    CHECK (len <= size);
    st = codec_decode (packed, len, &again, err, sizeof err);
    CHECK (st == FR_OK);
    CHECK (codec_msg_root (again)->via.map.size == root->via.map.size);

    /* ferrulectl prints bodies as JSON, and the worker packs JSON back */
    json_t *j = codec_to_json (root);
    CHECK (json_is_object (j));
    codec_builder_reset (b);
    codec_json (b, j);
    if (!codec_builder_failed (b)) {
        codec_msg_t *from_json = NULL;
        packed = codec_builder_data (b, &len);
        if (codec_decode (packed, len, &from_json, err, sizeof err) == FR_OK)
            codec_msg_destroy (&from_json);
    }
    json_decref (j);

    /* an error reply echoes the request id */
    const char *rid = NULL;
    size_t rid_len = 0;
    if (codec_get_str (root, "rid", &rid, &rid_len) != 1)
        rid = NULL;
    codec_builder_reset (b);
    codec_error_reply (b, rid, rid_len, FR_BAD_REQUEST, "fuzz", NULL, 1);
    CHECK (!codec_builder_failed (b));

    codec_builder_destroy (&b);
    codec_msg_destroy (&again);
    codec_msg_destroy (&msg);
    return 0;
}
