/* test_reply.c - the token reply a cache hit sends: packed once per token into the entry (cache.c)
 * and completed with the request's id (reply_pack_token); what a client decodes from it */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include "cache.h"
#include "codec.h"
#include "mem.h"
#include "reply.h"
#include "secmem.h"

/* A token of n copies of ch (the caller frees it). */
static char *
token_of (char ch, size_t n)
{
    char *t = mem_alloc (n + 1);
    memset (t, ch, n);
    t [n] = '\0';
    return t;
}

/* Decodes o's body and checks every field of a token reply. */
static void
check_reply (codec_builder_t *o, const char *rid, const char *token, const char *expires, int64_t generation,
             int refreshed)
{
    size_t len;
    const char *data = codec_builder_data (o, &len);
    codec_msg_t *msg = NULL;
    char err [128];
    assert_int_equal (codec_decode (data, len, &msg, err, sizeof err), FR_OK);
    const msgpack_object *root = codec_msg_root (msg);
    assert_int_equal (root->type, MSGPACK_OBJECT_MAP);
    assert_int_equal (root->via.map.size, CACHE_HIT_FIELDS + (rid [0] ? 1 : 0));
    const char *s;
    size_t n;
    int64_t v;
    int b;
    if (rid [0]) {
        assert_int_equal (codec_get_str (root, "rid", &s, &n), 1);
        assert_int_equal (n, strlen (rid));
        assert_memory_equal (s, rid, n);
    }
    else
        assert_null (codec_get (root, "rid"));
    assert_int_equal (codec_get_bool (root, "ok", &b), 1);
    assert_true (b);
    assert_int_equal (codec_get_str (root, "access_token", &s, &n), 1);
    assert_int_equal (n, strlen (token));
    assert_memory_equal (s, token, n);
    assert_int_equal (codec_get_str (root, "expires_at", &s, &n), 1);
    assert_int_equal (n, strlen (expires));
    assert_memory_equal (s, expires, n);
    assert_int_equal (codec_get_int (root, "generation", &v), 1);
    assert_int_equal (v, generation);
    assert_int_equal (codec_get_bool (root, "refreshed", &b), 1);
    assert_int_equal (b, refreshed);
    codec_msg_destroy (&msg);
}

static void
test_hit_reply_carries_every_field (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    cache_entry_t *e = cache_put (c, "acct:1");
    codec_builder_t *o = codec_builder_new ();
    char *token = token_of ('k', 120);
    cache_set_token (e, token, 2000000000, 7);
    assert_string_equal (e->access_token, token);
    assert_true (secmem_owns (e->hit_reply));
    assert_ptr_equal (e->access_token, (char *) e->hit_reply + e->hit_len - 120);

    assert_int_equal (reply_pack_token (o, "r-1", e, 0), 0);
    check_reply (o, "r-1", token, "2033-05-18T03:33:20Z", 7, 0);
    /* the same entry for another request: only the id changes */
    assert_int_equal (reply_pack_token (o, "another-request-id", e, 1), 0);
    check_reply (o, "another-request-id", token, "2033-05-18T03:33:20Z", 7, 1);
    /* no request id: no "rid" field */
    assert_int_equal (reply_pack_token (o, "", e, 0), 0);
    check_reply (o, "", token, "2033-05-18T03:33:20Z", 7, 0);

    /* a new token replaces the reply; generations past 32 bits survive */
    cache_set_token (e, "short", 1700000000, (int64_t) 1 << 40);
    assert_string_equal (e->access_token, "short");
    assert_int_equal (reply_pack_token (o, "r-2", e, 1), 0);
    check_reply (o, "r-2", "short", "2023-11-14T22:13:20Z", (int64_t) 1 << 40, 1);

    /* a token of several KiB (a JWT) */
    char *jwt = token_of ('j', 12 * 1024);
    cache_set_token (e, jwt, 2000000000, 8);
    assert_int_equal (reply_pack_token (o, "r-3", e, 0), 0);
    check_reply (o, "r-3", jwt, "2033-05-18T03:33:20Z", 8, 0);
    mem_free (jwt);

    /* no token: nothing to pack */
    cache_set_token (e, NULL, 0, 9);
    assert_null (e->access_token);
    assert_null (e->hit_reply);
    assert_int_equal (reply_pack_token (o, "r-4", e, 0), -1);
    mem_free (token);
    codec_builder_destroy (&o);
    cache_destroy (&c);
}

/* A 120-byte token and its whole reply take one block of the size class the token alone took:
 * the pre-packed reply costs the cache no memory (docs/performance.md, (e)). */
static void
test_hit_reply_keeps_the_token_size_class (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    cache_entry_t *e = cache_put (c, "bench-e:acct000001");
    char *token = token_of ('a', 120);
    size_t before = secmem_in_use ();
    char *alone = secmem_strdup (token);
    size_t token_alone = secmem_in_use () - before;
    secmem_free_str (&alone);
    before = secmem_in_use ();
    cache_set_token (e, token, 2000000000, 1);
    assert_int_equal (secmem_in_use () - before, token_alone);
    mem_free (token);
    cache_destroy (&c);
}

/* A stored token longer than a reply may carry (a row written around Ferrule) is not served:
 * the entry holds no token (a token request is answered unavailable until a refresh replaces it). */
static void
test_a_token_too_long_to_serve_is_dropped (void **state)
{
    (void) state;
    cache_t *c = cache_new ();
    cache_entry_t *e = cache_put (c, "acct:long");
    char *t = token_of ('x', CODEC_MAX_STRING + 1);
    cache_set_token (e, t, 2000000000, 3);
    assert_null (e->access_token);
    assert_null (e->hit_reply);
    assert_int_equal (e->generation, 3);
    mem_free (t);
    cache_destroy (&c);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_hit_reply_carries_every_field),
        cmocka_unit_test (test_hit_reply_keeps_the_token_size_class),
        cmocka_unit_test (test_a_token_too_long_to_serve_is_dropped),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
