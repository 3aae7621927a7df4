/* test_codec.c - bounded msgpack decoding and the reply builder */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "codec.h"

static fr_status_t
decode (const void *data, size_t len, codec_msg_t **msg)
{
    char err [256] = "";
    fr_status_t st = codec_decode (data, len, msg, err, sizeof err);
    if (st != FR_OK)
        assert_true (strlen (err) > 0);     /* every refusal says why */
    return st;
}

static void
test_round_trip (void **state)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 4);
    codec_kv_str (b, "op", "token");
    codec_kv_int (b, "min_valid", 120);
    codec_kv_bool (b, "flag", 1);
    codec_str (b, "scopes");
    codec_array (b, 2);
    codec_str (b, "a");
    codec_str (b, "b");
    assert_false (codec_builder_failed (b));

    size_t len;
    const char *data = codec_builder_data (b, &len);
    codec_msg_t *msg = NULL;
    assert_int_equal (decode (data, len, &msg), FR_OK);
    const msgpack_object *root = codec_msg_root (msg);

    const char *s;
    size_t slen;
    int64_t v;
    int flag;
    assert_int_equal (codec_get_str (root, "op", &s, &slen), 1);
    assert_int_equal (slen, 5);
    assert_memory_equal (s, "token", 5);
    assert_int_equal (codec_get_int (root, "min_valid", &v), 1);
    assert_int_equal (v, 120);
    assert_int_equal (codec_get_bool (root, "flag", &flag), 1);
    assert_int_equal (flag, 1);
    assert_int_equal (codec_get_str (root, "missing", &s, &slen), 0);
    assert_int_equal (codec_get_str (root, "min_valid", &s, &slen), -1);   /* wrong type */
    assert_int_equal (codec_get_int (root, "op", &v), -1);

    json_t *j = codec_to_json (root);
    assert_int_equal (json_integer_value (json_object_get (j, "min_valid")), 120);
    assert_int_equal (json_array_size (json_object_get (j, "scopes")), 2);
    json_decref (j);
    codec_msg_destroy (&msg);
    assert_null (msg);
    codec_msg_destroy (&msg);               /* safe twice */
    codec_builder_destroy (&b);
    assert_null (b);
}

/* The classic msgpack-c trap: five bytes that declare a container of 4 billion entries. */
static void
test_huge_declared_counts (void **state)
{
    codec_msg_t *msg = NULL;
    const unsigned char array32 [] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
    const unsigned char map32 [] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    const unsigned char str32 [] = { 0x81, 0xa1, 'k', 0xdb, 0xff, 0xff, 0xff, 0xff };
    const unsigned char bin32 [] = { 0x81, 0xa1, 'k', 0xc6, 0x7f, 0xff, 0xff, 0xff };
    const unsigned char nested [] = { 0x81, 0xa1, 'k', 0xdd, 0x00, 0x10, 0x00, 0x00, 0x01 };
    assert_int_equal (decode (array32, sizeof array32, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (map32, sizeof map32, &msg), FR_MALFORMED_FRAME);
    assert_int_not_equal (decode (str32, sizeof str32, &msg), FR_OK);
    assert_int_not_equal (decode (bin32, sizeof bin32, &msg), FR_OK);
    assert_int_equal (decode (nested, sizeof nested, &msg), FR_MALFORMED_FRAME);
    assert_null (msg);
}

static void
test_malformed (void **state)
{
    codec_msg_t *msg = NULL;
    const unsigned char not_map [] = { 0x92, 0x01, 0x02 };
    const unsigned char int_key [] = { 0x81, 0x01, 0x02 };
    const unsigned char trailing [] = { 0x80, 0x00 };
    const unsigned char truncated [] = { 0x81, 0xa2, 'o', 'p', 0xa5, 't', 'o' };
    const unsigned char ext [] = { 0x81, 0xa1, 'k', 0xd4, 0x01, 0x00 };
    const unsigned char never_used [] = { 0x81, 0xa1, 'k', 0xc1 };
    const unsigned char uint_trunc [] = { 0x81, 0xa1, 'k', 0xcf, 0x00 };
    assert_int_equal (decode ("", 0, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (not_map, sizeof not_map, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (int_key, sizeof int_key, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (trailing, sizeof trailing, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (truncated, sizeof truncated, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (ext, sizeof ext, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (never_used, sizeof never_used, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode (uint_trunc, sizeof uint_trunc, &msg), FR_MALFORMED_FRAME);
    assert_int_equal (decode ("hello world", 11, &msg), FR_MALFORMED_FRAME);
    assert_null (msg);
}

static void
test_limits (void **state)
{
    codec_msg_t *msg = NULL;
    /* nesting: map -> array -> array ... deeper than the limit */
    unsigned char deep [64];
    size_t n = 0;
    deep [n++] = 0x81;
    deep [n++] = 0xa1;
    deep [n++] = 'k';
    for (int i = 0; i < CODEC_MAX_DEPTH + 1; i++)
        deep [n++] = 0x91;
    deep [n++] = 0x01;
    assert_int_equal (decode (deep, n, &msg), FR_TOO_LARGE);

    /* exactly at the limit is fine: the map plus depth-1 arrays */
    n = 0;
    deep [n++] = 0x81;
    deep [n++] = 0xa1;
    deep [n++] = 'k';
    for (int i = 0; i < CODEC_MAX_DEPTH - 1; i++)
        deep [n++] = 0x91;
    deep [n++] = 0x01;
    assert_int_equal (decode (deep, n, &msg), FR_OK);
    codec_msg_destroy (&msg);

    /* a string over the limit */
    size_t big = CODEC_MAX_STRING + 1;
    unsigned char *s = malloc (big + 16);
    size_t off = 0;
    s [off++] = 0x81; s [off++] = 0xa1; s [off++] = 'k';
    s [off++] = 0xdb; s [off++] = 0; s [off++] = (unsigned char) (big >> 16);
    s [off++] = (unsigned char) (big >> 8); s [off++] = (unsigned char) big;
    memset (s + off, 'x', big);
    assert_int_equal (decode (s, off + big, &msg), FR_TOO_LARGE);
    free (s);

    /* a long key */
    unsigned char key [CODEC_MAX_KEY + 8];
    key [0] = 0x81;
    key [1] = 0xd9;
    key [2] = CODEC_MAX_KEY + 1;
    memset (key + 3, 'k', CODEC_MAX_KEY + 1);
    key [3 + CODEC_MAX_KEY + 1] = 0xc0;
    assert_int_equal (decode (key, CODEC_MAX_KEY + 5, &msg), FR_TOO_LARGE);

    /* a body over the frame limit */
    unsigned char *huge = calloc (1, CODEC_MAX_BODY + 1);
    assert_int_equal (decode (huge, CODEC_MAX_BODY + 1, &msg), FR_TOO_LARGE);
    free (huge);
}

/* Random and mutated inputs must never crash or leak: only OK or a refusal. */
static void
test_random_inputs (void **state)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 3);
    codec_kv_str (b, "op", "import");
    codec_kv_str (b, "integration", "acct42:box");
    codec_str (b, "scopes");
    codec_array (b, 3);
    codec_str (b, "files.read");
    codec_int (b, -5);
    codec_map (b, 1);
    codec_kv_int (b, "x", 1LL << 40);
    size_t len;
    const char *good = codec_builder_data (b, &len);
    unsigned char buf [256];
    unsigned int seed = 12345;
    for (int iter = 0; iter < 200000; iter++) {
        size_t n;
        if (iter % 2) {
            n = len;
            memcpy (buf, good, len);
            int flips = 1 + rand_r (&seed) % 4;
            for (int f = 0; f < flips; f++)
                buf [rand_r (&seed) % n] = (unsigned char) rand_r (&seed);
            if (rand_r (&seed) % 4 == 0)
                n = (size_t) rand_r (&seed) % len;
        }
        else {
            n = (size_t) rand_r (&seed) % sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf [i] = (unsigned char) rand_r (&seed);
            if (n)
                buf [0] = (unsigned char) (0x80 | (rand_r (&seed) & 0x0f));
        }
        codec_msg_t *msg = NULL;
        char err [256];
        if (codec_decode (buf, n, &msg, err, sizeof err) == FR_OK) {
            json_t *j = codec_to_json (codec_msg_root (msg));
            json_decref (j);
            codec_msg_destroy (&msg);
        }
    }
    codec_builder_destroy (&b);
}

static void
test_error_reply (void **state)
{
    codec_builder_t *b = codec_builder_new ();
    codec_error_reply (b, "r1", 2, FR_PROVIDER_UNAVAILABLE, "provider answered 503", NULL, 7);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    codec_msg_t *msg = NULL;
    assert_int_equal (decode (data, len, &msg), FR_OK);
    json_t *j = codec_to_json (codec_msg_root (msg));
    assert_string_equal (json_string_value (json_object_get (j, "rid")), "r1");
    assert_true (json_is_false (json_object_get (j, "ok")));
    json_t *e = json_object_get (j, "error");
    assert_string_equal (json_string_value (json_object_get (e, "code")), "provider_unavailable");
    assert_string_equal (json_string_value (json_object_get (e, "message")), "provider answered 503");
    assert_true (strlen (json_string_value (json_object_get (e, "hint"))) > 10);
    assert_int_equal (json_integer_value (json_object_get (e, "retry_after")), 7);
    json_decref (j);
    codec_msg_destroy (&msg);
    codec_builder_destroy (&b);
}

/* Found by fuzz_codec (tests/fuzz/codec/empty_strings.msgpack): msgpack-c leaves an empty
 * string's pointer NULL, which reached memchr, memcpy and json_stringn. */
static void
test_empty_strings (void **state)
{
    /* {"": "", "rid": "", "b": <empty bin>, "a": [""]}: msgpack-c leaves the pointer of an
     * empty string NULL when no other string came before it */
    static const unsigned char body [] = { 0x84, 0xa0, 0xa0, 0xa3, 'r', 'i', 'd', 0xa0,
                                           0xa1, 'b', 0xc4, 0x00, 0xa1, 'a', 0x91, 0xa0 };
    codec_msg_t *msg = NULL;
    assert_int_equal (decode (body, sizeof body, &msg), FR_OK);
    const msgpack_object *root = codec_msg_root (msg);

    const char *s = NULL;
    size_t len = 99;
    assert_int_equal (codec_get_str (root, "rid", &s, &len), 1);
    assert_non_null (s);
    assert_int_equal (len, 0);
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        assert_non_null (root->via.map.ptr [i].key.via.str.ptr);
        char *copy = codec_strdup (&root->via.map.ptr [i].key);
        assert_non_null (copy);
        free (copy);
    }
    s = NULL;
    assert_int_equal (codec_get_str (root, "", &s, &len), 1);
    assert_non_null (s);
    char *copy = codec_strdup (codec_get (root, ""));
    assert_non_null (copy);
    assert_string_equal (copy, "");
    free (copy);

    json_t *j = codec_to_json (root);
    assert_true (json_is_string (json_object_get (j, "")));
    assert_true (json_is_string (json_object_get (j, "rid")));
    assert_string_equal (json_string_value (json_object_get (j, "rid")), "");
    assert_true (json_is_string (json_array_get (json_object_get (j, "a"), 0)));
    json_decref (j);

    /* forwarded as it is (the broker's codec_object) and decoded again */
    codec_builder_t *b = codec_builder_new ();
    codec_object (b, root);
    assert_false (codec_builder_failed (b));
    const char *data = codec_builder_data (b, &len);
    assert_memory_equal (data, body, sizeof body);
    codec_builder_destroy (&b);
    codec_msg_destroy (&msg);
}

static void
test_builder_cap (void **state)
{
    codec_builder_t *b = codec_builder_new ();
    char *chunk = malloc (CODEC_MAX_STRING);
    memset (chunk, 'a', CODEC_MAX_STRING);
    codec_array (b, 10);
    for (int i = 0; i < 10; i++)
        codec_strn (b, chunk, CODEC_MAX_STRING);
    assert_true (codec_builder_failed (b));    /* 640 KiB does not fit a frame */
    codec_builder_reset (b);
    assert_false (codec_builder_failed (b));
    free (chunk);
    codec_builder_destroy (&b);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_huge_declared_counts),
        cmocka_unit_test (test_malformed),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_random_inputs),
        cmocka_unit_test (test_error_reply),
        cmocka_unit_test (test_builder_cap),
        cmocka_unit_test (test_empty_strings),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
