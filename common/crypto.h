/* crypto.h - tokens at rest: AES-256-GCM sealing with a rotating keyring, fingerprints,
 * randomness, base64 and PKCE helpers (OpenSSL libcrypto underneath) */
#ifndef FERRULE_CRYPTO_H
#define FERRULE_CRYPTO_H
#include <stddef.h>
#include <stdint.h>
#include "result.h"

#define CRYPTO_KEY_LEN      32            /* AES-256 */
#define CRYPTO_NONCE_LEN    12            /* GCM nonce, fresh and random per sealed value */
#define CRYPTO_TAG_LEN      16            /* GCM tag */
#define CRYPTO_OVERHEAD     (CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN)
#define CRYPTO_MAX_PLAIN    (64 * 1024)   /* longest value crypto_seal accepts */
#define CRYPTO_MAX_KEYS     32            /* current key plus retired ones */
#define CRYPTO_FINGERPRINT_LEN 16         /* hex digits, without the terminating NUL */

typedef struct crypto_keyring crypto_keyring_t;

/* Builds the keyring from FERRULE_ENCRYPTION_KEY (current_b64: base64 of exactly 32 bytes,
 * standard or URL alphabet, padding optional, surrounding whitespace ignored) and
 * FERRULE_ENCRYPTION_OLD_KEYS (old_b64_list: NULL, empty, or comma-separated keys in the same
 * form, still accepted for opening values sealed before a rotation). Each key's id is derived
 * from the key itself, so ids need no configuration. Returns NULL with the reason in err on
 * bad input; the reason never contains key material. */
crypto_keyring_t *crypto_keyring_new (const char *current_b64, const char *old_b64_list,
                                      char *err, size_t errlen);
/* Wipes every key, frees the keyring and nulls the pointer; safe on NULL. */
void crypto_keyring_destroy (crypto_keyring_t **kr_p);
/* Sets the fingerprint key from FERRULE_FINGERPRINT_KEY (base64 of 32 bytes, like the other
 * keys); NULL or "" keeps the one derived from the current encryption key. FR_CONFIGURATION with
 * the reason in err on bad input. */
fr_status_t crypto_keyring_set_fingerprint_key (crypto_keyring_t *kr, const char *key_b64,
                                                char *err, size_t errlen) FR_MUSTCHECK;
/* 1 when the fingerprint key is its own key, 0 when derived from the current encryption key. */
int crypto_keyring_fingerprint_key_own (const crypto_keyring_t *kr);
/* 1 when the keyring holds a key with this id. */
int crypto_keyring_has (const crypto_keyring_t *kr, int32_t key_id);
/* Id of the key crypto_seal uses: a positive int32. */
int32_t crypto_keyring_current_id (const crypto_keyring_t *kr);
/* Number of keys (current plus retired). */
size_t crypto_keyring_count (const crypto_keyring_t *kr);

/* Seals plain with the current key. The associated data binds the result to its
 * integration and column, so a value copied to another row or column will not open.
 * On FR_OK *out (nonce || ciphertext || tag, crypto_seal_len bytes) belongs to the caller
 * (mem_free) and *key_id is the id to store beside it. FR_TOO_LARGE over CRYPTO_MAX_PLAIN,
 * FR_INTERNAL if the cipher fails; err gets the reason. */
fr_status_t crypto_seal (const crypto_keyring_t *kr, const char *integration, const char *column,
                         const char *plain, unsigned char **out, size_t *out_len, int32_t *key_id,
                         char *err, size_t errlen) FR_MUSTCHECK;

/* Opens a value sealed by crypto_seal with the key key_id. On FR_OK *plain_out is a new
 * NUL-terminated string the caller frees with mem_free_secret. FR_CONFIGURATION when no key
 * has that id (a retired key missing from FERRULE_ENCRYPTION_OLD_KEYS); FR_INTERNAL when the
 * value is truncated, fails authentication (wrong key, altered, or moved from another row or
 * column) or holds a NUL byte. err gets the reason; it never contains the value. */
fr_status_t crypto_open (const crypto_keyring_t *kr, int32_t key_id, const char *integration,
                         const char *column, const unsigned char *in, size_t in_len,
                         char **plain_out, char *err, size_t errlen) FR_MUSTCHECK;

/* 16 lower-case hex digits identifying secret without revealing it: HMAC-SHA256 keyed with the
 * fingerprint key (FERRULE_FINGERPRINT_KEY; when it is not set, HMAC-SHA256(current key,
 * "ferrule-fingerprint"), and then fingerprints change when the encryption key is rotated).
 * NULL or empty secret gives "". */
void crypto_fingerprint (const crypto_keyring_t *kr, const char *secret,
                         char out [CRYPTO_FINGERPRINT_LEN + 1]);

/* 1 when the two secrets are equal, compared without an early exit on the first difference. */
int crypto_secret_equal (const char *a, const char *b);

/* Fills buf with n bytes from the OpenSSL CSPRNG: 0 ok, -1 when it fails. */
int crypto_random (void *buf, size_t n) FR_MUSTCHECK;
/* The same for values that are unique but not secret (GCM nonces, lease tokens), n at most 64:
 * taken from a per-thread pool drawn a few kilobytes at a time (each crypto_random call costs a
 * getpid, a system call, in OpenSSL's fork check), each byte handed out once; a forked child
 * discards its copy. */
int crypto_random_unique (void *buf, size_t n) FR_MUSTCHECK;
/* base64url (no padding) of bytes random bytes, caller frees; NULL when the CSPRNG fails. */
char *crypto_random_token (size_t bytes);

/* Decodes base64 in the standard or the URL alphabet, padding optional. Returns a new buffer
 * (NUL-terminated for convenience, caller frees) and its length, or NULL when in is not
 * canonical base64 (stray characters, bad padding, non-zero leftover bits). */
unsigned char *crypto_b64_decode (const char *in, size_t *out_len);
/* Standard alphabet with padding; caller frees. */
char *crypto_b64_encode (const void *in, size_t len);
/* URL alphabet without padding (RFC 7636 PKCE, random tokens); caller frees. */
char *crypto_b64url_encode (const void *in, size_t len);
void crypto_sha256 (const void *in, size_t len, unsigned char out [32]);
/* SHA-256 of a string as 64 lowercase hex digits: what the database keeps of a secret handed out
 * (a connect's state, a gateway session, an API key), never the secret itself. */
void crypto_sha256_hex (const char *s, char out [65]);
/* RFC 7636 S256 code challenge: base64url (no padding) of SHA-256(verifier); caller frees. */
char *crypto_pkce_challenge (const char *verifier);
#endif
