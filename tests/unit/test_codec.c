/* test_codec.c - bounded msgpack decoding and the reply builder */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
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

/* --- codec_scan: the broker's reading of a body --- */

/* codec_scan and codec_decode on the same bytes: both must accept, or refuse with the same status
 * and reason. The scan is made twice, on data into fields and on a copy of exactly len bytes (so
 * ASan sees any read past the end), and both find the same. */
static fr_status_t
scan_as_decode (const void *data, size_t len, codec_field_t *fields, size_t nfields)
{
    unsigned char *copy = malloc (len ? len : 1);
    codec_field_t again [CODEC_SCAN_MAX_FIELDS];
    if (len)
        memcpy (copy, data, len);
    if (nfields)
        memcpy (again, fields, nfields * sizeof *fields);
    char serr [256] = "", cerr [256] = "", derr [256] = "";
    codec_msg_t *msg = NULL;
    fr_status_t ss = codec_scan (data, len, fields, nfields, serr, sizeof serr);
    fr_status_t cs = codec_scan (copy, len, again, nfields, cerr, sizeof cerr);
    fr_status_t ds = codec_decode (copy, len, &msg, derr, sizeof derr);
    assert_int_equal (ss, ds);
    assert_int_equal (cs, ds);
    if (ss != FR_OK) {
        assert_string_equal (serr, derr);
        assert_string_equal (cerr, derr);
    }
    for (size_t i = 0; i < nfields; i++) {
        assert_int_equal (fields [i].kind, again [i].kind);
        assert_int_equal (fields [i].len, again [i].len);
        if (ss != FR_OK)
            assert_int_equal (fields [i].kind, CODEC_ABSENT);
        if (fields [i].ptr)
            assert_int_equal (fields [i].ptr - (const char *) data, again [i].ptr - (const char *) copy);
        if (fields [i].kind == CODEC_INT)
            assert_true (fields [i].i == again [i].i);
    }
    codec_msg_destroy (&msg);
    free (copy);
    return ss;
}

/* One body holding every kind of value, nested containers between the keys. */
static const unsigned char every_type [] = {
    0xde, 0x00, 0x18,                                   /* map 16 of 24 entries */
    0xa1, 's', 0xa3, 'a', 'b', 'c',
    0xa1, 'e', 0xa0,                                    /* "" */
    0xa2, 's', '8', 0xd9, 0x02, 'x', 'y',
    0xa3, 's', '1', '6', 0xda, 0x00, 0x01, 'z',
    0xa3, 's', '3', '2', 0xdb, 0x00, 0x00, 0x00, 0x01, 'w',
    0xa2, 'p', 'f', 0x7f,                               /* 127 */
    0xa2, 'n', 'f', 0xe0,                               /* -32 */
    0xa2, 'u', '1', 0xcc, 0xc8,                         /* 200 */
    0xa2, 'u', '2', 0xcd, 0xea, 0x60,                   /* 60000 */
    0xa2, 'u', '4', 0xce, 0xee, 0x6b, 0x28, 0x00,       /* 4000000000 */
    0xa2, 'u', '8', 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,   /* INT64_MAX */
    0xa2, 'u', 'x', 0xcf, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,   /* over INT64_MAX */
    0xa2, 'i', '1', 0xd0, 0x80,                         /* -128 */
    0xa2, 'i', '2', 0xd1, 0xfc, 0x18,                   /* -1000 */
    0xa2, 'i', '4', 0xd2, 0xff, 0xfe, 0x79, 0x60,       /* -100000 */
    0xa2, 'i', '8', 0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,   /* INT64_MIN */
    0xa2, 'i', 'p', 0xd0, 0x05,                         /* 5 as int 8 */
    0xa1, 't', 0xc3,
    0xa1, 'f', 0xc2,
    0xa1, 'z', 0xc0,
    0xa1, 'b', 0xc4, 0x02, 0x00, 0x01,                  /* binary */
    0xa1, 'd', 0xcb, 0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       /* 1.0 */
    0xa1, 'a', 0x93, 0x01, 0x91, 0x80, 0x82, 0xa1, 'k', 0x92, 0xc0, 0xa0, 0xa1, 'j', 0x90,
    0xa1, 'm', 0x82, 0xa4, 'c', 'o', 'd', 'e', 0xa2, 'n', 'o', 0xa1, 'x', 0x81, 0xa1, 'y', 0x80,
};

static void
test_scan_every_type (void **state)
{
    codec_field_t f [] = {
        { .key = "s" }, { .key = "e" }, { .key = "s8" }, { .key = "s16" }, { .key = "s32" },
        { .key = "pf" }, { .key = "nf" }, { .key = "u1" }, { .key = "u2" }, { .key = "u4" },
        { .key = "u8" }, { .key = "ux" }, { .key = "i1" }, { .key = "i2" }, { .key = "i4" },
        { .key = "i8" },
    };
    codec_field_t g [] = {
        { .key = "ip" }, { .key = "t" }, { .key = "f" }, { .key = "z" }, { .key = "b" }, { .key = "d" },
        { .key = "a" }, { .key = "m" }, { .key = "missing" }, { .key = "" },
    };
    assert_int_equal (scan_as_decode (every_type, sizeof every_type, f, 16), FR_OK);
    const char *s;
    size_t len;
    int64_t v;
    int bv;
    assert_int_equal (codec_field_str (&f [0], &s, &len), 1);
    assert_int_equal (len, 3);
    assert_memory_equal (s, "abc", 3);
    assert_int_equal (codec_field_str (&f [1], &s, &len), 1);
    assert_int_equal (len, 0);
    assert_non_null (s);
    assert_int_equal (f [2].len, 2);
    assert_memory_equal (f [2].ptr, "xy", 2);
    assert_int_equal (f [3].len, 1);
    assert_memory_equal (f [3].ptr, "z", 1);
    assert_int_equal (f [4].len, 1);
    assert_memory_equal (f [4].ptr, "w", 1);
    const int64_t want [] = { 127, -32, 200, 60000, 4000000000LL, INT64_MAX, 0, -128, -1000, -100000, INT64_MIN };
    for (int i = 5; i < 16; i++) {
        if (i == 11) {
            assert_int_equal (f [i].kind, CODEC_OTHER);   /* uint 64 over INT64_MAX */
            assert_int_equal (codec_field_int (&f [i], &v), -1);
            continue;
        }
        assert_int_equal (codec_field_int (&f [i], &v), 1);
        assert_true (v == want [i - 5]);
    }
    assert_int_equal (codec_field_str (&f [5], &s, &len), -1);

    assert_int_equal (scan_as_decode (every_type, sizeof every_type, g, 10), FR_OK);
    assert_int_equal (codec_field_int (&g [0], &v), 1);
    assert_int_equal (v, 5);
    assert_int_equal (codec_field_bool (&g [1], &bv), 1);
    assert_int_equal (bv, 1);
    assert_int_equal (codec_field_bool (&g [2], &bv), 1);
    assert_int_equal (bv, 0);
    assert_int_equal (g [3].kind, CODEC_NIL);
    assert_int_equal (codec_field_str (&g [3], &s, &len), 0);
    assert_int_equal (codec_field_int (&g [3], &v), 0);
    assert_int_equal (codec_field_bool (&g [3], &bv), 0);
    assert_int_equal (g [4].kind, CODEC_OTHER);
    assert_int_equal (g [5].kind, CODEC_OTHER);
    assert_int_equal (codec_field_int (&g [5], &v), -1);
    /* containers: the value as encoded, skipped whole */
    assert_int_equal (g [6].kind, CODEC_ARRAY);
    assert_int_equal (g [6].len, 13);
    assert_int_equal ((unsigned char) g [6].ptr [0], 0x93);
    assert_int_equal (g [7].kind, CODEC_MAP);
    assert_int_equal (g [7].len, 15);
    assert_int_equal (g [8].kind, CODEC_ABSENT);
    assert_int_equal (codec_field_str (&g [8], &s, &len), 0);
    assert_int_equal (g [9].kind, CODEC_ABSENT);

    /* a nested map scanned again for its own keys */
    codec_field_t code [] = { { .key = "code" }, { .key = "y" }, { .key = "x" } };
    assert_int_equal (scan_as_decode (g [7].ptr, g [7].len, code, 3), FR_OK);
    assert_int_equal (code [0].len, 2);
    assert_memory_equal (code [0].ptr, "no", 2);
    assert_int_equal (code [1].kind, CODEC_ABSENT);     /* a key one level further down */
    assert_int_equal (code [2].kind, CODEC_MAP);
    codec_field_t none [1] = { { .key = "k" } };
    assert_int_equal (scan_as_decode (g [6].ptr, g [6].len, none, 1), FR_MALFORMED_FRAME);   /* an array */
    assert_int_equal (scan_as_decode (every_type, sizeof every_type, NULL, 0), FR_OK);
}

/* The first occurrence of a key counts, as with codec_get; keys of nested maps do not. */
static void
test_scan_first_and_nested_keys (void **state)
{
    const unsigned char body [] = {
        0x84, 0xa1, 'x', 0x81, 0xa3, 'r', 'i', 'd', 0xa5, 'i', 'n', 'n', 'e', 'r',
        0xa3, 'r', 'i', 'd', 0xa5, 'o', 'u', 't', 'e', 'r',
        0xa3, 'r', 'i', 'd', 0xa5, 'l', 'a', 't', 'e', 'r',
        0xa2, 'o', 'p', 0xc0,
    };
    const unsigned char nil_first [] = { 0x82, 0xa2, 'o', 'p', 0xc0, 0xa2, 'o', 'p', 0xa1, 'x' };
    codec_field_t f [] = { { .key = "rid" }, { .key = "op" }, { .key = "x" } };
    assert_int_equal (scan_as_decode (body, sizeof body, f, 3), FR_OK);
    assert_int_equal (f [0].len, 5);
    assert_memory_equal (f [0].ptr, "outer", 5);
    assert_int_equal (f [1].kind, CODEC_NIL);
    assert_int_equal (f [2].kind, CODEC_MAP);
    assert_int_equal (f [2].len, 11);
    assert_int_equal (scan_as_decode (nil_first, sizeof nil_first, f, 3), FR_OK);
    assert_int_equal (f [1].kind, CODEC_NIL);          /* codec_get_str says 0 here too */
    assert_int_equal (f [0].kind, CODEC_ABSENT);
}

/* A reply's JSON reads a key given twice as codec_get and the scan do: the first counts. A client
 * checking "ok" with codec_get and handing the JSON on must not see two different answers. */
static void
test_to_json_first_key_counts (void **state)
{
    const unsigned char body [] = {
        0x83, 0xa2, 'o', 'k', 0xc2, 0xa1, 'e', 0x01, 0xa2, 'o', 'k', 0xc3,
    };
    codec_msg_t *msg = NULL;
    assert_int_equal (decode (body, sizeof body, &msg), FR_OK);
    const msgpack_object *root = codec_msg_root (msg);
    const msgpack_object *ok = codec_get (root, "ok");
    assert_non_null (ok);
    assert_false (ok->via.boolean);
    json_t *j = codec_to_json (root);
    assert_true (json_is_false (json_object_get (j, "ok")));
    assert_int_equal (json_object_size (j), 2);
    json_decref (j);
    codec_msg_destroy (&msg);
}

/* Every prefix of a valid body is refused, with decode's reason, and nothing past it is read. */
static void
test_scan_every_truncation (void **state)
{
    codec_field_t f [] = { { .key = "s32" }, { .key = "a" }, { .key = "m" }, { .key = "i8" }, { .key = "d" } };
    for (size_t n = 0; n < sizeof every_type; n++)
        assert_int_not_equal (scan_as_decode (every_type, n, f, 5), FR_OK);
    /* and with bytes added after it */
    unsigned char more [sizeof every_type + 1];
    memcpy (more, every_type, sizeof every_type);
    more [sizeof every_type] = 0xc0;
    assert_int_equal (scan_as_decode (more, sizeof more, f, 5), FR_MALFORMED_FRAME);
}

static void
test_scan_malformed (void **state)
{
    codec_field_t f [] = { { .key = "k" }, { .key = "op" } };
    const unsigned char not_map [] = { 0x92, 0x01, 0x02 };
    const unsigned char scalar [] = { 0xa2, 'o', 'p' };
    const unsigned char not_map_trailing [] = { 0x91, 0x01, 0x02 };
    const unsigned char int_key [] = { 0x81, 0x01, 0x02 };
    const unsigned char bin_key [] = { 0x81, 0xc4, 0x01, 'k', 0x02 };
    const unsigned char nil_key [] = { 0x81, 0xc0, 0x02 };
    const unsigned char nested_int_key [] = { 0x81, 0xa1, 'k', 0x81, 0x05, 0x06 };
    const unsigned char trailing [] = { 0x80, 0x00 };
    const unsigned char truncated [] = { 0x81, 0xa2, 'o', 'p', 0xa5, 't', 'o' };
    const unsigned char ext [] = { 0x81, 0xa1, 'k', 0xd4, 0x01, 0x00 };
    const unsigned char never_used [] = { 0x81, 0xa1, 'k', 0xc1 };
    const unsigned char uint_trunc [] = { 0x81, 0xa1, 'k', 0xcf, 0x00 };
    const unsigned char array32 [] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
    const unsigned char map32 [] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    const unsigned char map32_in [] = { 0x81, 0xa1, 'k', 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0 };
    const unsigned char str32 [] = { 0x81, 0xa1, 'k', 0xdb, 0xff, 0xff, 0xff, 0xff };
    const unsigned char str32_key [] = { 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'k' };
    const unsigned char str16 [] = { 0x81, 0xa1, 'k', 0xda, 0x01, 0x00, 'x' };
    const unsigned char bin32 [] = { 0x81, 0xa1, 'k', 0xc6, 0x7f, 0xff, 0xff, 0xff };
    const unsigned char nested [] = { 0x81, 0xa1, 'k', 0xdd, 0x00, 0x10, 0x00, 0x00, 0x01 };
    const unsigned char many [] = { 0x81, 0xa1, 'k', 0xdc, 0xff, 0xff };
    const struct { const unsigned char *b; size_t n; fr_status_t st; } cases [] = {
        { not_map, sizeof not_map, FR_MALFORMED_FRAME },
        { scalar, sizeof scalar, FR_MALFORMED_FRAME },
        { not_map_trailing, sizeof not_map_trailing, FR_MALFORMED_FRAME },
        { int_key, sizeof int_key, FR_MALFORMED_FRAME },
        { bin_key, sizeof bin_key, FR_MALFORMED_FRAME },
        { nil_key, sizeof nil_key, FR_MALFORMED_FRAME },
        { nested_int_key, sizeof nested_int_key, FR_MALFORMED_FRAME },
        { trailing, sizeof trailing, FR_MALFORMED_FRAME },
        { truncated, sizeof truncated, FR_MALFORMED_FRAME },
        { ext, sizeof ext, FR_MALFORMED_FRAME },
        { never_used, sizeof never_used, FR_MALFORMED_FRAME },
        { uint_trunc, sizeof uint_trunc, FR_MALFORMED_FRAME },
        { array32, sizeof array32, FR_MALFORMED_FRAME },
        { map32, sizeof map32, FR_MALFORMED_FRAME },
        { map32_in, sizeof map32_in, FR_MALFORMED_FRAME },
        { str32, sizeof str32, FR_TOO_LARGE },
        { str32_key, sizeof str32_key, FR_TOO_LARGE },
        { str16, sizeof str16, FR_MALFORMED_FRAME },
        { bin32, sizeof bin32, FR_TOO_LARGE },
        { nested, sizeof nested, FR_MALFORMED_FRAME },
        { many, sizeof many, FR_MALFORMED_FRAME },
        { (const unsigned char *) "hello world", 11, FR_MALFORMED_FRAME },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        assert_int_equal (scan_as_decode (cases [i].b, cases [i].n, f, 2), cases [i].st);
    assert_int_equal (scan_as_decode ("", 0, f, 2), FR_MALFORMED_FRAME);
    char err [128];
    assert_int_equal (codec_scan (not_map, sizeof not_map, f, 2, err, sizeof err), FR_MALFORMED_FRAME);
    assert_string_equal (err, "body is not a map");
}

static void
test_scan_limits (void **state)
{
    codec_field_t f [] = { { .key = "k" }, { .key = "after" } };
    unsigned char deep [64];
    size_t n = 0;
    /* nesting one deeper than the limit, in the value of a wanted key */
    deep [n++] = 0x81;
    deep [n++] = 0xa1;
    deep [n++] = 'k';
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        deep [n++] = 0x91;
    deep [n++] = 0x01;
    assert_int_equal (scan_as_decode (deep, n, f, 2), FR_TOO_LARGE);
    /* at the limit it is skipped whole, and the key after it is found */
    n = 0;
    deep [n++] = 0x82;
    deep [n++] = 0xa1;
    deep [n++] = 'k';
    for (int i = 0; i < CODEC_MAX_DEPTH - 1; i++)
        deep [n++] = 0x91;
    deep [n++] = 0x01;
    deep [n++] = 0xa5;
    memcpy (deep + n, "after", 5);
    n += 5;
    deep [n++] = 0x2a;
    assert_int_equal (scan_as_decode (deep, n, f, 2), FR_OK);
    assert_int_equal (f [0].kind, CODEC_ARRAY);
    assert_int_equal (f [0].len, CODEC_MAX_DEPTH);
    assert_int_equal (f [1].kind, CODEC_INT);
    assert_int_equal (f [1].i, 42);

    /* more objects than the limit: an array of nils one over it */
    size_t big = CODEC_MAX_ITEMS + 16;
    unsigned char *items = malloc (big);
    n = 0;
    items [n++] = 0x81;
    items [n++] = 0xa1;
    items [n++] = 'k';
    items [n++] = 0xdc;
    items [n++] = (unsigned char) ((CODEC_MAX_ITEMS - 2) >> 8);
    items [n++] = (unsigned char) (CODEC_MAX_ITEMS - 2);
    memset (items + n, 0xc0, CODEC_MAX_ITEMS - 2);
    n += CODEC_MAX_ITEMS - 2;
    assert_int_equal (scan_as_decode (items, n, f, 2), FR_TOO_LARGE);
    free (items);

    /* a key over the limit, and a body over the frame limit */
    unsigned char key [CODEC_MAX_KEY + 8];
    key [0] = 0x81;
    key [1] = 0xd9;
    key [2] = CODEC_MAX_KEY + 1;
    memset (key + 3, 'k', CODEC_MAX_KEY + 1);
    key [3 + CODEC_MAX_KEY + 1] = 0xc0;
    assert_int_equal (scan_as_decode (key, CODEC_MAX_KEY + 5, f, 2), FR_TOO_LARGE);
    unsigned char *huge = calloc (1, CODEC_MAX_BODY + 1);
    huge [0] = 0x80;
    assert_int_equal (scan_as_decode (huge, CODEC_MAX_BODY + 1, f, 2), FR_TOO_LARGE);
    free (huge);
}

/* Mutated bodies: the scanner and the decoder agree on every one. */
static void
test_scan_random (void **state)
{
    codec_field_t f [] = { { .key = "op" }, { .key = "integration" }, { .key = "scopes" }, { .key = "n" } };
    unsigned char buf [sizeof every_type];
    unsigned int seed = 4242;
    for (int iter = 0; iter < 100000; iter++) {
        memcpy (buf, every_type, sizeof buf);
        int flips = 1 + rand_r (&seed) % 3;
        for (int i = 0; i < flips; i++)
            buf [rand_r (&seed) % sizeof buf] = (unsigned char) rand_r (&seed);
        size_t n = rand_r (&seed) % 4 == 0 ? (size_t) rand_r (&seed) % sizeof buf : sizeof buf;
        (void) scan_as_decode (buf, n, f, 4);
    }
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
        cmocka_unit_test (test_scan_every_type),
        cmocka_unit_test (test_scan_first_and_nested_keys),
        cmocka_unit_test (test_to_json_first_key_counts),
        cmocka_unit_test (test_scan_every_truncation),
        cmocka_unit_test (test_scan_malformed),
        cmocka_unit_test (test_scan_limits),
        cmocka_unit_test (test_scan_random),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
