/* crypto.c - tokens at rest: AES-256-GCM with a keyring whose key ids come from the keys */
#include "crypto.h"
#include "text.h"
#include "mem.h"
#include "secmem.h"
#include <assert.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define CRYPTO_MAX_KEY_TEXT   256          /* one base64 key with whitespace; 44 is normal */
#define CRYPTO_MAX_LIST_TEXT  (CRYPTO_MAX_KEYS * CRYPTO_MAX_KEY_TEXT)
#define CRYPTO_AAD_PREFIX     "ferrule/v1"

typedef struct {
    int32_t id;
    unsigned char key [CRYPTO_KEY_LEN];
} crypto_key_t;

struct crypto_keyring {
    crypto_key_t keys [CRYPTO_MAX_KEYS];   /* keys [0] is the current key */
    size_t count;
    unsigned char fingerprint_key [32];    /* FERRULE_FINGERPRINT_KEY, or HMAC-SHA256 (current key,
                                              "ferrule-fingerprint") when it is not set */
    int fingerprint_key_own;               /* 1: set by crypto_keyring_set_fingerprint_key */
};

static void set_err (char *err, size_t errlen, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* AES-256-GCM fetched once: EVP_aes_256_gcm () in an init makes OpenSSL 3 look the cipher up in
 * its providers (locks and a parameter search) at every seal, two per refresh. Shared by every
 * thread (a fetched cipher is immutable); NULL if the fetch failed, and the implicit one is used. */
static EVP_CIPHER *gcm_fetched;

static void
gcm_fetch (void)
{
    gcm_fetched = EVP_CIPHER_fetch (NULL, "AES-256-GCM", NULL);
}

static const EVP_CIPHER *
gcm (void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void) pthread_once (&once, gcm_fetch);
    return gcm_fetched ? gcm_fetched : EVP_aes_256_gcm ();
}

/* crypto_random_unique's pool, per thread; a forked child throws its copy away (unique_forked),
 * since it would hand out what its parent hands out. */
#define UNIQUE_POOL 3072
static _Thread_local unsigned char unique_pool [UNIQUE_POOL];
static _Thread_local size_t unique_left;

static void
unique_forked (void)
{
    unique_left = 0;
}

static void
unique_register_fork (void)
{
    (void) pthread_atfork (NULL, NULL, unique_forked);
}

int
crypto_random_unique (void *buf, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    assert (n <= 64);
    (void) pthread_once (&once, unique_register_fork);
    if (unique_left < n) {
        if (crypto_random (unique_pool, sizeof unique_pool) != 0)
            return -1;
        unique_left = sizeof unique_pool;
    }
    unique_left -= n;                        /* each part of the pool is handed out once */
    memcpy (buf, unique_pool + unique_left, n);
    return 0;
}

static void
set_err (char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start (ap, fmt);
    vsnprintf (err, errlen, fmt, ap);
    va_end (ap);
}

/* Key id: first 4 bytes of SHA-256 ("ferrule-key-id" || key), big-endian, as a positive int32. */
static int32_t
key_id_of (const unsigned char key [CRYPTO_KEY_LEN])
{
    static const char label [] = "ferrule-key-id";
    unsigned char buf [sizeof label - 1 + CRYPTO_KEY_LEN];
    unsigned char md [32];

    memcpy (buf, label, sizeof label - 1);
    memcpy (buf + sizeof label - 1, key, CRYPTO_KEY_LEN);
    crypto_sha256 (buf, sizeof buf, md);
    mem_wipe (buf, sizeof buf);
    uint32_t v = ((uint32_t) md [0] << 24) | ((uint32_t) md [1] << 16)
               | ((uint32_t) md [2] << 8) | (uint32_t) md [3];
    v &= 0x7fffffffu;
    return v ? (int32_t) v : 1;
}

/* Decodes one key given as text [0, len) with surrounding whitespace. what names the
 * setting in messages; the text itself never appears in them. */
static int
parse_key (const char *text, size_t len, unsigned char key [CRYPTO_KEY_LEN], const char *what,
           char *err, size_t errlen)
{
    int rc = -1;
    char *copy = NULL;
    unsigned char *raw = NULL;
    size_t raw_len = 0;

    while (len && isspace ((unsigned char) *text)) {
        text++;
        len--;
    }
    while (len && isspace ((unsigned char) text [len - 1]))
        len--;
    if (len == 0) {
        set_err (err, errlen, "%s is empty: set it to base64 of 32 random bytes, "
                 "for example from \"openssl rand -base64 32\"", what);
        goto out;
    }
    if (len > CRYPTO_MAX_KEY_TEXT) {
        set_err (err, errlen, "%s is too long (%ld characters): it must be base64 of 32 bytes",
                 what, (long) len);
        goto out;
    }
    copy = mem_strndup (text, len);
    raw = crypto_b64_decode (copy, &raw_len);
    if (!raw) {
        set_err (err, errlen, "%s is not valid base64: it must be base64 of 32 bytes", what);
        goto out;
    }
    if (raw_len != CRYPTO_KEY_LEN) {
        set_err (err, errlen, "%s must be base64 of 32 bytes, got %ld bytes", what, (long) raw_len);
        goto out;
    }
    memcpy (key, raw, CRYPTO_KEY_LEN);
    rc = 0;
out:
    if (copy) {
        mem_wipe (copy, len);
        mem_free (copy);
    }
    if (raw) {
        mem_wipe (raw, raw_len);
        mem_free (raw);
    }
    return rc;
}

/* Adds key unless the keyring already has it; -1 when two different keys share an id. */
static int
keyring_add (crypto_keyring_t *kr, const unsigned char key [CRYPTO_KEY_LEN], const char *what,
             char *err, size_t errlen)
{
    int32_t id = key_id_of (key);
    for (size_t i = 0; i < kr->count; i++) {
        if (kr->keys [i].id != id)
            continue;
        if (CRYPTO_memcmp (kr->keys [i].key, key, CRYPTO_KEY_LEN) == 0)
            return 0;       /* listed twice: harmless */
        set_err (err, errlen, "%s has the same key id as another key (id %ld): "
                 "generate a new key", what, (long) id);
        return -1;
    }
    if (kr->count == CRYPTO_MAX_KEYS) {
        set_err (err, errlen, "%s makes too many keys: at most %d keys, current and retired "
                 "together, are accepted", what, CRYPTO_MAX_KEYS);
        return -1;
    }
    kr->keys [kr->count].id = id;
    memcpy (kr->keys [kr->count].key, key, CRYPTO_KEY_LEN);
    kr->count++;
    return 0;
}

crypto_keyring_t *
crypto_keyring_new (const char *current_b64, const char *old_b64_list, char *err, size_t errlen)
{
    crypto_keyring_t *kr = NULL;
    unsigned char key [CRYPTO_KEY_LEN];
    char what [80];
    unsigned int mdlen = 0;
    int ok = 0;

    if (err && errlen)
        err [0] = '\0';
    if (!current_b64 || !*current_b64) {
        set_err (err, errlen, "FERRULE_ENCRYPTION_KEY is not set: set it to base64 of 32 random "
                 "bytes, for example from \"openssl rand -base64 32\"");
        goto out;
    }
    kr = secmem_alloc (sizeof *kr);        /* keys stay out of core dumps, wiped on free */
    if (parse_key (current_b64, strnlen (current_b64, CRYPTO_MAX_KEY_TEXT + 1), key,
                   "FERRULE_ENCRYPTION_KEY", err, errlen) != 0
    ||  keyring_add (kr, key, "FERRULE_ENCRYPTION_KEY", err, errlen) != 0)
        goto out;

    if (old_b64_list && *old_b64_list) {
        size_t total = strnlen (old_b64_list, CRYPTO_MAX_LIST_TEXT + 1);
        if (total > CRYPTO_MAX_LIST_TEXT) {
            set_err (err, errlen, "FERRULE_ENCRYPTION_OLD_KEYS is too long: it may list at most "
                     "%d keys", CRYPTO_MAX_KEYS - 1);
            goto out;
        }
        const char *p = old_b64_list;
        int index = 0;
        for (;;) {
            const char *comma = memchr (p, ',', total - (size_t) (p - old_b64_list));
            size_t len = comma ? (size_t) (comma - p) : total - (size_t) (p - old_b64_list);
            size_t j = 0;
            while (j < len && isspace ((unsigned char) p [j]))
                j++;
            index++;
            if (j < len) {      /* skip empty items, e.g. after a trailing comma */
                snprintf (what, sizeof what, "FERRULE_ENCRYPTION_OLD_KEYS entry %d", index);
                if (parse_key (p, len, key, what, err, errlen) != 0
                ||  keyring_add (kr, key, what, err, errlen) != 0)
                    goto out;
            }
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    if (!HMAC (EVP_sha256 (), kr->keys [0].key, CRYPTO_KEY_LEN,
               (const unsigned char *) "ferrule-fingerprint", strlen ("ferrule-fingerprint"),
               kr->fingerprint_key, &mdlen) || mdlen != sizeof kr->fingerprint_key) {
        set_err (err, errlen, "could not derive the fingerprint key: HMAC-SHA256 is not "
                 "available in OpenSSL");
        goto out;
    }
    ok = 1;
out:
    mem_wipe (key, sizeof key);
    if (!ok)
        crypto_keyring_destroy (&kr);
    return kr;
}

void
crypto_keyring_destroy (crypto_keyring_t **kr_p)
{
    if (kr_p && *kr_p) {
        secmem_free (*kr_p);                /* wipes */
        *kr_p = NULL;
    }
}

fr_status_t
crypto_keyring_set_fingerprint_key (crypto_keyring_t *kr, const char *key_b64, char *err, size_t errlen)
{
    unsigned char key [CRYPTO_KEY_LEN];
    assert (kr);
    if (err && errlen)
        err [0] = '\0';
    if (!key_b64 || !*key_b64)
        return FR_OK;
    if (parse_key (key_b64, strnlen (key_b64, CRYPTO_MAX_KEY_TEXT + 1), key, "FERRULE_FINGERPRINT_KEY",
                   err, errlen) != 0)
        return FR_CONFIGURATION;
    memcpy (kr->fingerprint_key, key, sizeof kr->fingerprint_key);
    kr->fingerprint_key_own = 1;
    mem_wipe (key, sizeof key);
    return FR_OK;
}

int
crypto_keyring_fingerprint_key_own (const crypto_keyring_t *kr)
{
    assert (kr);
    return kr->fingerprint_key_own;
}

int
crypto_keyring_has (const crypto_keyring_t *kr, int32_t key_id)
{
    assert (kr);
    for (size_t i = 0; i < kr->count; i++)
        if (kr->keys [i].id == key_id)
            return 1;
    return 0;
}

int32_t
crypto_keyring_current_id (const crypto_keyring_t *kr)
{
    assert (kr);
    return kr->keys [0].id;
}

size_t
crypto_keyring_count (const crypto_keyring_t *kr)
{
    assert (kr);
    return kr->count;
}

/* "ferrule/v1" '\0' integration '\0' column: binds a sealed value to its row and column. */
static unsigned char *
build_aad (const char *integration, const char *column, size_t *len)
{
    size_t plen = sizeof CRYPTO_AAD_PREFIX;        /* includes the '\0' */
    size_t ilen = strlen (integration) + 1;
    size_t clen = strlen (column);
    unsigned char *aad = mem_alloc (plen + ilen + clen);
    memcpy (aad, CRYPTO_AAD_PREFIX, plen);
    memcpy (aad + plen, integration, ilen);
    memcpy (aad + plen + ilen, column, clen);
    *len = plen + ilen + clen;
    return aad;
}

fr_status_t
crypto_seal (const crypto_keyring_t *kr, const char *integration, const char *column,
             const char *plain, unsigned char **out, size_t *out_len, int32_t *key_id,
             char *err, size_t errlen)
{
    fr_status_t st = FR_INTERNAL;
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char *aad = NULL;
    unsigned char *buf = NULL;
    size_t aad_len = 0;
    size_t plen;
    int n = 0;
    int fin = 0;

    assert (kr && integration && column && plain && out && out_len && key_id);
    *out = NULL;
    *out_len = 0;
    if (err && errlen)
        err [0] = '\0';
    plen = strnlen (plain, CRYPTO_MAX_PLAIN + 1);
    if (plen > CRYPTO_MAX_PLAIN) {
        st = FR_TOO_LARGE;
        set_err (err, errlen, "value for column \"%s\" is too long to store: the limit is %d bytes",
                 column, CRYPTO_MAX_PLAIN);
        goto out;
    }
    buf = mem_alloc (plen + CRYPTO_OVERHEAD);
    if (crypto_random_unique (buf, CRYPTO_NONCE_LEN) != 0) {
        set_err (err, errlen, "could not seal column \"%s\": the random number generator failed",
                 column);
        goto out;
    }
    aad = build_aad (integration, column, &aad_len);
    ctx = EVP_CIPHER_CTX_new ();
    if (!ctx
    ||  EVP_EncryptInit_ex (ctx, gcm (), NULL, NULL, NULL) != 1
    ||  EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) != 1
    ||  EVP_EncryptInit_ex (ctx, NULL, NULL, kr->keys [0].key, buf) != 1
    ||  EVP_EncryptUpdate (ctx, NULL, &n, aad, (int) aad_len) != 1
    ||  EVP_EncryptUpdate (ctx, buf + CRYPTO_NONCE_LEN, &n, (const unsigned char *) plain,
                           (int) plen) != 1
    ||  EVP_EncryptFinal_ex (ctx, buf + CRYPTO_NONCE_LEN + n, &fin) != 1
    ||  (size_t) n + (size_t) fin != plen
    ||  EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN,
                             buf + CRYPTO_NONCE_LEN + plen) != 1) {
        set_err (err, errlen, "could not seal column \"%s\": AES-256-GCM encryption failed",
                 column);
        goto out;
    }
    *out = buf;
    *out_len = plen + CRYPTO_OVERHEAD;
    *key_id = kr->keys [0].id;
    buf = NULL;
    st = FR_OK;
out:
    EVP_CIPHER_CTX_free (ctx);
    mem_free (aad);
    if (buf) {
        mem_wipe (buf, plen + CRYPTO_OVERHEAD);
        mem_free (buf);
    }
    return st;
}

fr_status_t
crypto_open (const crypto_keyring_t *kr, int32_t key_id, const char *integration,
             const char *column, const unsigned char *in, size_t in_len, char **plain_out,
             char *err, size_t errlen)
{
    fr_status_t st = FR_INTERNAL;
    const crypto_key_t *key = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char *aad = NULL;
    char *plain = NULL;
    size_t aad_len = 0;
    size_t clen = 0;
    int n = 0;
    int fin = 0;

    assert (kr && integration && column && plain_out);
    *plain_out = NULL;
    if (err && errlen)
        err [0] = '\0';
    for (size_t i = 0; i < kr->count && !key; i++)
        if (kr->keys [i].id == key_id)
            key = &kr->keys [i];
    if (!key) {
        st = FR_CONFIGURATION;
        set_err (err, errlen, "column \"%s\" of integration \"%s\" was sealed with key id %ld, "
                 "which no configured key has: add the retired key to "
                 "FERRULE_ENCRYPTION_OLD_KEYS", column, integration, (long) key_id);
        goto out;
    }
    if (!in || in_len < CRYPTO_OVERHEAD || in_len > CRYPTO_MAX_PLAIN + CRYPTO_OVERHEAD) {
        set_err (err, errlen, "column \"%s\" of integration \"%s\" does not hold a sealed value: "
                 "%zu bytes, expected %d to %d", column, integration, in ? in_len : 0,
                 CRYPTO_OVERHEAD, CRYPTO_MAX_PLAIN + CRYPTO_OVERHEAD);
        goto out;
    }
    clen = in_len - CRYPTO_OVERHEAD;
    plain = mem_alloc (clen + 1);
    aad = build_aad (integration, column, &aad_len);
    ctx = EVP_CIPHER_CTX_new ();
    if (!ctx
    ||  EVP_DecryptInit_ex (ctx, gcm (), NULL, NULL, NULL) != 1
    ||  EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) != 1
    ||  EVP_DecryptInit_ex (ctx, NULL, NULL, key->key, in) != 1
    ||  EVP_DecryptUpdate (ctx, NULL, &n, aad, (int) aad_len) != 1
    ||  EVP_DecryptUpdate (ctx, (unsigned char *) plain, &n, in + CRYPTO_NONCE_LEN, (int) clen) != 1
    ||  EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN,
                             (void *) (in + CRYPTO_NONCE_LEN + clen)) != 1
    ||  EVP_DecryptFinal_ex (ctx, (unsigned char *) plain + n, &fin) != 1
    ||  (size_t) n + (size_t) fin != clen) {
        set_err (err, errlen, "could not decrypt column \"%s\" of integration \"%s\": "
                 "authentication failed (wrong key, or the value was altered or copied "
                 "from another integration or column)", column, integration);
        goto out;
    }
    if (memchr (plain, '\0', clen)) {
        set_err (err, errlen, "column \"%s\" of integration \"%s\" decrypts to a value with a "
                 "NUL byte, which no token has", column, integration);
        goto out;
    }
    plain [clen] = '\0';
    *plain_out = plain;
    plain = NULL;
    st = FR_OK;
out:
    EVP_CIPHER_CTX_free (ctx);
    mem_free (aad);
    if (plain) {
        mem_wipe (plain, clen + 1);
        mem_free (plain);
    }
    return st;
}

int
crypto_secret_equal (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char) (a [i] ^ b [i]);
    return diff == 0;
}

void
crypto_fingerprint (const crypto_keyring_t *kr, const char *secret,
                    char out [CRYPTO_FINGERPRINT_LEN + 1])
{
    unsigned char md [EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    assert (kr && out);
    out [0] = '\0';
    if (!secret || !*secret)
        return;
    if (!HMAC (EVP_sha256 (), kr->fingerprint_key, sizeof kr->fingerprint_key,
               (const unsigned char *) secret, strlen (secret), md, &mdlen) || mdlen < 8)
        return;
    text_hex (md, CRYPTO_FINGERPRINT_LEN / 2, out);
    mem_wipe (md, sizeof md);
}

int
crypto_random (void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int) n;
        if (RAND_bytes (p, chunk) != 1)
            return -1;
        p += chunk;
        n -= (size_t) chunk;
    }
    return 0;
}

char *
crypto_random_token (size_t bytes)
{
    char *token = NULL;
    unsigned char *raw = mem_alloc (bytes);
    if (crypto_random (raw, bytes) == 0)
        token = crypto_b64url_encode (raw, bytes);
    mem_wipe (raw, bytes);
    mem_free (raw);
    return token;
}

/* Value of a base64 digit in either alphabet, -1 for anything else. */
static int
b64_value (unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

unsigned char *
crypto_b64_decode (const char *in, size_t *out_len)
{
    unsigned char *out = NULL;
    size_t len, pad = 0, digits, o = 0;
    uint32_t acc = 0;

    assert (out_len);
    *out_len = 0;
    if (!in)
        return NULL;
    len = strlen (in);
    while (pad < 2 && len > pad && in [len - 1 - pad] == '=')
        pad++;
    digits = len - pad;
    if (digits % 4 == 1)
        return NULL;
    if (pad && (len % 4 != 0 || digits % 4 == 0))
        return NULL;
    out = mem_alloc (digits / 4 * 3 + 3);
    for (size_t i = 0; i < digits; i++) {
        int v = b64_value ((unsigned char) in [i]);
        if (v < 0)
            goto bad;
        acc = (acc << 6) | (uint32_t) v;
        if (i % 4 == 3) {
            out [o++] = (unsigned char) (acc >> 16);
            out [o++] = (unsigned char) (acc >> 8);
            out [o++] = (unsigned char) acc;
            acc = 0;
        }
    }
    switch (digits % 4) {
        case 2:             /* 12 bits: one byte, 4 leftover bits that must be zero */
            if (acc & 0x0f)
                goto bad;
            out [o++] = (unsigned char) (acc >> 4);
            break;
        case 3:             /* 18 bits: two bytes, 2 leftover bits */
            if (acc & 0x03)
                goto bad;
            out [o++] = (unsigned char) (acc >> 10);
            out [o++] = (unsigned char) (acc >> 2);
            break;
        default:
            break;
    }
    out [o] = '\0';
    *out_len = o;
    return out;
bad:
    mem_wipe (out, digits / 4 * 3 + 3);
    mem_free (out);
    return NULL;
}

static char *
b64_encode_with (const void *in, size_t len, const char *alphabet, int pad)
{
    const unsigned char *p = in;
    size_t o = 0;

    assert (in || len == 0);
    assert (len < SIZE_MAX / 2);
    char *out = mem_alloc ((len + 2) / 3 * 4 + 1);
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t) p [i] << 16) | ((uint32_t) p [i + 1] << 8) | p [i + 2];
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        out [o++] = alphabet [(v >> 6) & 63];
        out [o++] = alphabet [v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t) p [i] << 16;
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        if (pad) {
            out [o++] = '=';
            out [o++] = '=';
        }
    }
    else
    if (len - i == 2) {
        uint32_t v = ((uint32_t) p [i] << 16) | ((uint32_t) p [i + 1] << 8);
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        out [o++] = alphabet [(v >> 6) & 63];
        if (pad)
            out [o++] = '=';
    }
    out [o] = '\0';
    return out;
}

char *
crypto_b64_encode (const void *in, size_t len)
{
    return b64_encode_with (in, len,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 1);
}

char *
crypto_b64url_encode (const void *in, size_t len)
{
    return b64_encode_with (in, len,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 0);
}

void
crypto_sha256 (const void *in, size_t len, unsigned char out [32])
{
    unsigned int mdlen = 0;
    assert (in || len == 0);
    if (EVP_Digest (len ? in : "", len, out, &mdlen, EVP_sha256 (), NULL) != 1 || mdlen != 32)
        memset (out, 0, 32);        /* unreachable with a working libcrypto */
}

void
crypto_sha256_hex (const char *s, char out [65])
{
    unsigned char md [32];
    crypto_sha256 (s, strlen (s), md);
    text_hex (md, sizeof md, out);
}

char *
crypto_pkce_challenge (const char *verifier)
{
    unsigned char md [32];
    if (!verifier)
        return NULL;
    crypto_sha256 (verifier, strlen (verifier), md);
    return crypto_b64url_encode (md, sizeof md);
}
