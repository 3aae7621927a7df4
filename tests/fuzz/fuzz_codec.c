/* fuzz_codec.c - msgpack request bodies: codec_decode, the map readers, and the copies the
 * broker and worker make of a decoded body (codec_object, codec_to_json, codec_json) */
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
        return 0;
    }
    const msgpack_object *root = codec_msg_root (msg);
    CHECK (root->type == MSGPACK_OBJECT_MAP);
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
