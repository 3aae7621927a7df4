/* test_crypto.c - sealing, key rotation, fingerprints, base64 and PKCE */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "testexit.h"
#include <openssl/evp.h>
#include "crypto.h"
#include "mem.h"

/* bytes 0x00..0x1f, 0x20..0x3f, 0x40..0x5f */
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define KEY_C "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
/* one key, in the standard alphabet with padding and in the URL alphabet without */
#define KEY_D_STD "+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8="
#define KEY_D_URL "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8"

static crypto_keyring_t *
keyring (const char *current, const char *old)
{
    char err [256];
    crypto_keyring_t *kr = crypto_keyring_new (current, old, err, sizeof err);
    if (!kr)
        fail_msg ("keyring: %s", err);
    return kr;
}

static void
seal (const crypto_keyring_t *kr, const char *integ, const char *col, const char *plain,
      unsigned char **out, size_t *len, int32_t *id)
{
    char err [256];
    fr_status_t st = crypto_seal (kr, integ, col, plain, out, len, id, err, sizeof err);
    if (st != FR_OK)
        fail_msg ("seal: %s", err);
}

static void
test_round_trip (void **state)
{
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    unsigned char *ct = NULL;
    size_t len = 0;
    int32_t id = 0;
    char *plain = NULL;
    char err [256];

    seal (kr, "acct42:box", "refresh_token", "r3fresh-token/+=", &ct, &len, &id);
    assert_int_equal (len, strlen ("r3fresh-token/+=") + CRYPTO_OVERHEAD);
    assert_int_equal (id, crypto_keyring_current_id (kr));
    assert_true (id > 0);
    for (size_t i = 0; i + 7 <= len; i++)
        assert_memory_not_equal (ct + i, "r3fresh", 7);
    assert_int_equal (crypto_open (kr, id, "acct42:box", "refresh_token", ct, len, &plain,
                                   err, sizeof err), FR_OK);
    assert_string_equal (plain, "r3fresh-token/+=");
    mem_free_secret (&plain);
    assert_null (plain);
    mem_free (ct);

    /* the empty string seals and opens too */
    seal (kr, "acct42:box", "access_token", "", &ct, &len, &id);
    assert_int_equal (len, CRYPTO_OVERHEAD);
    assert_int_equal (crypto_open (kr, id, "acct42:box", "access_token", ct, len, &plain,
                                   err, sizeof err), FR_OK);
    assert_string_equal (plain, "");
    mem_free_secret (&plain);
    mem_free (ct);
    crypto_keyring_destroy (&kr);
    assert_null (kr);
    crypto_keyring_destroy (&kr);       /* twice is fine */
}

static void
test_nonce_differs (void **state)
{
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    unsigned char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    int32_t id = 0;

    seal (kr, "i", "refresh_token", "same value", &a, &alen, &id);
    seal (kr, "i", "refresh_token", "same value", &b, &blen, &id);
    assert_int_equal (alen, blen);
    assert_memory_not_equal (a, b, CRYPTO_NONCE_LEN);
    assert_memory_not_equal (a + CRYPTO_NONCE_LEN, b + CRYPTO_NONCE_LEN, alen - CRYPTO_NONCE_LEN);
    mem_free (a);
    mem_free (b);
    crypto_keyring_destroy (&kr);
}

static void
test_tamper_any_byte (void **state)
{
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    unsigned char *ct = NULL;
    size_t len = 0;
    int32_t id = 0;
    char *plain = NULL;
    char err [256];

    seal (kr, "acct1:google", "refresh_token", "1//0gTokenValue", &ct, &len, &id);
    for (size_t i = 0; i < len; i++) {
        ct [i] ^= 0x01;
        assert_int_equal (crypto_open (kr, id, "acct1:google", "refresh_token", ct, len, &plain,
                                       err, sizeof err), FR_INTERNAL);
        assert_null (plain);
        assert_non_null (strstr (err, "authentication failed"));
        assert_null (strstr (err, "TokenValue"));
        ct [i] ^= 0x01;
    }
    /* truncated values */
    assert_int_equal (crypto_open (kr, id, "acct1:google", "refresh_token", ct, len - 1, &plain,
                                   err, sizeof err), FR_INTERNAL);
    assert_int_equal (crypto_open (kr, id, "acct1:google", "refresh_token", ct,
                                   CRYPTO_OVERHEAD - 1, &plain, err, sizeof err), FR_INTERNAL);
    assert_int_equal (crypto_open (kr, id, "acct1:google", "refresh_token", NULL, 0, &plain,
                                   err, sizeof err), FR_INTERNAL);
    assert_null (plain);
    /* untouched it still opens */
    assert_int_equal (crypto_open (kr, id, "acct1:google", "refresh_token", ct, len, &plain,
                                   err, sizeof err), FR_OK);
    mem_free_secret (&plain);
    mem_free (ct);
    crypto_keyring_destroy (&kr);
}

static void
test_associated_data (void **state)
{
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    unsigned char *ct = NULL;
    size_t len = 0;
    int32_t id = 0;
    char *plain = NULL;
    char err [256];

    seal (kr, "acct42:box", "refresh_token", "secret", &ct, &len, &id);
    assert_int_equal (crypto_open (kr, id, "acct43:box", "refresh_token", ct, len, &plain,
                                   err, sizeof err), FR_INTERNAL);
    assert_int_equal (crypto_open (kr, id, "acct42:box", "access_token", ct, len, &plain,
                                   err, sizeof err), FR_INTERNAL);
    /* the separator keeps "a" + "b:c" apart from "a:b" + "c" */
    assert_int_equal (crypto_open (kr, id, "acct42:boxrefresh_token", "", ct, len, &plain,
                                   err, sizeof err), FR_INTERNAL);
    assert_null (plain);
    mem_free (ct);
    crypto_keyring_destroy (&kr);
}

static void
test_rotation (void **state)
{
    crypto_keyring_t *old = keyring (KEY_A, NULL);
    crypto_keyring_t *rotated = keyring (KEY_B, " " KEY_C " , " KEY_A ",");
    crypto_keyring_t *forgot = keyring (KEY_B, NULL);
    unsigned char *ct = NULL, *ct2 = NULL;
    size_t len = 0, len2 = 0;
    int32_t id_a = 0, id_b = 0;
    char *plain = NULL;
    char err [256];
    char idtext [32];

    assert_int_equal (crypto_keyring_count (rotated), 3);
    seal (old, "i1", "refresh_token", "before rotation", &ct, &len, &id_a);
    assert_int_equal (id_a, crypto_keyring_current_id (old));
    assert_int_not_equal (crypto_keyring_current_id (rotated), id_a);

    assert_int_equal (crypto_open (rotated, id_a, "i1", "refresh_token", ct, len, &plain,
                                   err, sizeof err), FR_OK);
    assert_string_equal (plain, "before rotation");
    mem_free_secret (&plain);

    seal (rotated, "i1", "refresh_token", "after rotation", &ct2, &len2, &id_b);
    assert_int_equal (id_b, crypto_keyring_current_id (rotated));
    assert_int_equal (id_b, crypto_keyring_current_id (forgot));
    assert_int_not_equal (id_b, id_a);

    /* the old keyring cannot open what the new key sealed, and says which key is missing */
    assert_int_equal (crypto_open (forgot, id_a, "i1", "refresh_token", ct, len, &plain,
                                   err, sizeof err), FR_CONFIGURATION);
    assert_null (plain);
    snprintf (idtext, sizeof idtext, "%ld", (long) id_a);
    assert_non_null (strstr (err, idtext));
    assert_non_null (strstr (err, "FERRULE_ENCRYPTION_OLD_KEYS"));
    assert_int_equal (crypto_open (old, id_b, "i1", "refresh_token", ct2, len2, &plain,
                                   err, sizeof err), FR_CONFIGURATION);
    /* a value opened with the wrong key of a known id fails authentication */
    assert_int_equal (crypto_open (rotated, id_a, "i1", "refresh_token", ct2, len2, &plain,
                                   err, sizeof err), FR_INTERNAL);
    mem_free (ct);
    mem_free (ct2);
    crypto_keyring_destroy (&old);
    crypto_keyring_destroy (&rotated);
    crypto_keyring_destroy (&forgot);
}

static void
expect_bad_key (const char *current, const char *old, const char *want)
{
    char err [256] = "";
    crypto_keyring_t *kr = crypto_keyring_new (current, old, err, sizeof err);
    assert_null (kr);
    if (!strstr (err, want))
        fail_msg ("error \"%s\" lacks \"%s\"", err, want);
    if (current && strlen (current) > 4)
        assert_null (strstr (err, current));
    if (old && strlen (old) > 4)
        assert_null (strstr (err, old));
}

static void
test_bad_keys (void **state)
{
    expect_bad_key ("AAECAwQFBgcICQoL", NULL,
                    "FERRULE_ENCRYPTION_KEY must be base64 of 32 bytes, got 12 bytes");
    expect_bad_key ("not base64 at all!", NULL, "FERRULE_ENCRYPTION_KEY is not valid base64");
    expect_bad_key ("", NULL, "FERRULE_ENCRYPTION_KEY is not set");
    expect_bad_key (NULL, NULL, "FERRULE_ENCRYPTION_KEY is not set");
    expect_bad_key ("   \n", NULL, "FERRULE_ENCRYPTION_KEY is empty");
    expect_bad_key ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8AAAA", NULL, "got 35 bytes");
    expect_bad_key (KEY_A, KEY_B ",c2hvcnQ=", "FERRULE_ENCRYPTION_OLD_KEYS entry 2 must be "
                    "base64 of 32 bytes, got 5 bytes");
    expect_bad_key (KEY_A, "%%%%", "FERRULE_ENCRYPTION_OLD_KEYS entry 1 is not valid base64");
}

static void
test_key_forms (void **state)
{
    crypto_keyring_t *std = keyring ("  " KEY_D_STD "\n", NULL);
    crypto_keyring_t *url = keyring (KEY_D_URL, "");
    crypto_keyring_t *dup = keyring (KEY_A, KEY_A "," KEY_A);
    assert_int_equal (crypto_keyring_current_id (std), crypto_keyring_current_id (url));
    assert_int_equal (crypto_keyring_count (dup), 1);
    crypto_keyring_destroy (&std);
    crypto_keyring_destroy (&url);
    crypto_keyring_destroy (&dup);
}

/* Seals with OpenSSL directly, as an independent check of the format: nonce || ct || tag
 * with associated data "ferrule/v1" 0 integration 0 column. */
static size_t
seal_raw (const unsigned char key [32], const char *integ, const char *col,
          const unsigned char *plain, size_t plen, unsigned char *out)
{
    unsigned char aad [256];
    size_t alen = 0;
    int n = 0;
    memcpy (aad, "ferrule/v1", 11);
    alen = 11;
    memcpy (aad + alen, integ, strlen (integ) + 1);
    alen += strlen (integ) + 1;
    memcpy (aad + alen, col, strlen (col));
    alen += strlen (col);
    memset (out, 7, 12);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
    assert_int_equal (EVP_EncryptInit_ex (ctx, EVP_aes_256_gcm (), NULL, key, out), 1);
    assert_int_equal (EVP_EncryptUpdate (ctx, NULL, &n, aad, (int) alen), 1);
    assert_int_equal (EVP_EncryptUpdate (ctx, out + 12, &n, plain, (int) plen), 1);
    assert_int_equal (EVP_EncryptFinal_ex (ctx, out + 12 + n, &n), 1);
    assert_int_equal (EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 12 + plen), 1);
    EVP_CIPHER_CTX_free (ctx);
    return plen + 28;
}

static void
test_format_and_nul (void **state)
{
    unsigned char key [32];
    unsigned char buf [128];
    char *plain = NULL;
    char err [256];
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    int32_t id = crypto_keyring_current_id (kr);
    for (int i = 0; i < 32; i++)
        key [i] = (unsigned char) i;

    size_t len = seal_raw (key, "acct:x", "refresh_token", (const unsigned char *) "tok", 3, buf);
    assert_int_equal (crypto_open (kr, id, "acct:x", "refresh_token", buf, len, &plain,
                                   err, sizeof err), FR_OK);
    assert_string_equal (plain, "tok");
    mem_free_secret (&plain);

    len = seal_raw (key, "acct:x", "refresh_token", (const unsigned char *) "to\0k", 4, buf);
    assert_int_equal (crypto_open (kr, id, "acct:x", "refresh_token", buf, len, &plain,
                                   err, sizeof err), FR_INTERNAL);
    assert_null (plain);
    assert_non_null (strstr (err, "NUL"));
    crypto_keyring_destroy (&kr);
}

static void
test_too_large (void **state)
{
    crypto_keyring_t *kr = keyring (KEY_A, NULL);
    char *big = mem_alloc (CRYPTO_MAX_PLAIN + 2);
    unsigned char *ct = NULL;
    size_t len = 0;
    int32_t id = 0;
    char err [256];
    memset (big, 'x', CRYPTO_MAX_PLAIN + 1);
    assert_int_equal (crypto_seal (kr, "i", "refresh_token", big, &ct, &len, &id, err, sizeof err),
                      FR_TOO_LARGE);
    assert_null (ct);
    big [CRYPTO_MAX_PLAIN] = '\0';
    assert_int_equal (crypto_seal (kr, "i", "refresh_token", big, &ct, &len, &id, err, sizeof err),
                      FR_OK);
    mem_free (ct);
    mem_free (big);
    crypto_keyring_destroy (&kr);
}

static int
is_hex16 (const char *s)
{
    return strlen (s) == 16 && strspn (s, "0123456789abcdef") == 16;
}

static void
test_fingerprint (void **state)
{
    crypto_keyring_t *a = keyring (KEY_A, NULL);
    crypto_keyring_t *a2 = keyring (KEY_A, KEY_B);
    crypto_keyring_t *b = keyring (KEY_B, KEY_A);
    char f1 [17], f2 [17], f3 [17], f4 [17];

    crypto_fingerprint (a, "refresh-token-1", f1);
    crypto_fingerprint (a2, "refresh-token-1", f2);
    crypto_fingerprint (a, "refresh-token-2", f3);
    crypto_fingerprint (b, "refresh-token-1", f4);
    assert_true (is_hex16 (f1));
    assert_true (is_hex16 (f3));
    assert_string_equal (f1, f2);           /* depends on the current key only */
    assert_string_not_equal (f1, f3);
    assert_string_not_equal (f1, f4);       /* restarts after a rotation */
    crypto_fingerprint (a, "", f1);
    assert_string_equal (f1, "");
    crypto_fingerprint (a, NULL, f1);
    assert_string_equal (f1, "");
    crypto_keyring_destroy (&a);
    crypto_keyring_destroy (&a2);
    crypto_keyring_destroy (&b);
}

static void
test_base64_vectors (void **state)
{
    /* RFC 4648 section 10 */
    static const char *const plain [] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const std [] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    static const char *const url [] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy" };
    for (int i = 0; i < 7; i++) {
        size_t len = 99;
        char *e = crypto_b64_encode (plain [i], strlen (plain [i]));
        assert_string_equal (e, std [i]);
        mem_free (e);
        e = crypto_b64url_encode (plain [i], strlen (plain [i]));
        assert_string_equal (e, url [i]);
        mem_free (e);
        unsigned char *d = crypto_b64_decode (std [i], &len);
        assert_non_null (d);
        assert_int_equal (len, strlen (plain [i]));
        assert_memory_equal (d, plain [i], len);
        mem_free (d);
        d = crypto_b64_decode (url [i], &len);
        assert_non_null (d);
        assert_int_equal (len, strlen (plain [i]));
        assert_memory_equal (d, plain [i], len);
        mem_free (d);
    }
    unsigned char bytes [] = { 0xfb, 0xff, 0xbf };
    char *e = crypto_b64_encode (bytes, 3);
    assert_string_equal (e, "+/+/");
    mem_free (e);
    e = crypto_b64url_encode (bytes, 3);
    assert_string_equal (e, "-_-_");
    mem_free (e);

    static const char *const invalid [] = {
        "Z", "Zg=", "Zg===", "Zh==", "Zm9=", "Zm9v!", "=Zm9", "Zm 9v", "Zm9vY", "Z=g=", "Zg==Zg==", NULL
    };
    for (int i = 0; invalid [i]; i++) {
        size_t len = 0;
        unsigned char *d = crypto_b64_decode (invalid [i], &len);
        if (d)
            fail_msg ("\"%s\" decoded", invalid [i]);
    }
}

static void
test_pkce_and_sha256 (void **state)
{
    /* RFC 7636 appendix B */
    char *c = crypto_pkce_challenge ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    assert_string_equal (c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    mem_free (c);
    assert_null (crypto_pkce_challenge (NULL));

    unsigned char md [32];
    crypto_sha256 ("abc", 3, md);
    static const unsigned char abc [32] = {   /* FIPS 180-2 */
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
    };
    assert_memory_equal (md, abc, 32);
    char hex [65];
    crypto_sha256_hex ("abc", hex);
    assert_string_equal (hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void
test_random (void **state)
{
    char *a = crypto_random_token (32);
    char *b = crypto_random_token (32);
    assert_non_null (a);
    assert_non_null (b);
    assert_int_equal (strlen (a), 43);
    assert_int_equal (strspn (a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    assert_string_not_equal (a, b);
    mem_free (a);
    mem_free (b);
    unsigned char buf [64] = { 0 }, zero [64] = { 0 };
    assert_int_equal (crypto_random (buf, sizeof buf), 0);
    assert_memory_not_equal (buf, zero, sizeof buf);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_nonce_differs),
        cmocka_unit_test (test_tamper_any_byte),
        cmocka_unit_test (test_associated_data),
        cmocka_unit_test (test_rotation),
        cmocka_unit_test (test_bad_keys),
        cmocka_unit_test (test_key_forms),
        cmocka_unit_test (test_format_and_nul),
        cmocka_unit_test (test_too_large),
        cmocka_unit_test (test_fingerprint),
        cmocka_unit_test (test_base64_vectors),
        cmocka_unit_test (test_pkce_and_sha256),
        cmocka_unit_test (test_random),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
