/* test_secrets.c - secure memory (out of core dumps, wiped on free), secrets from the
 * environment or files and out of the environment afterwards, core dumps off, the fingerprint
 * key of its own, and the per-integration rate limiter */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmocka.h>
#include "testexit.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "catalog.h"
#include "config.h"
#include "crypto.h"
#include "mem.h"
#include "ratelimit.h"
#include "secmem.h"
#include "secrets.h"

#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define KEY_C "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="

/* The flags of the mapping that holds addr in /proc/self/smaps: "dd" is VM_DONTDUMP. */
static int
mapping_has_flag (const void *addr, const char *flag)
{
    FILE *f = fopen ("/proc/self/smaps", "r");
    char line [512];
    int inside = 0, found = -1;
    uintptr_t a = (uintptr_t) addr;
    if (!f)
        return -1;
    while (fgets (line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf (line, "%lx-%lx ", &lo, &hi) == 2 && strchr (line, '-') < strchr (line, ' ')) {
            inside = a >= lo && a < hi;
            continue;
        }
        if (inside && strncmp (line, "VmFlags:", 8) == 0) {
            char needle [8];
            snprintf (needle, sizeof needle, " %s", flag);
            found = strstr (line + 8, needle) != NULL;
            break;
        }
    }
    fclose (f);
    return found;
}

static void
test_secmem_dontdump_and_wipe (void **state)
{
    (void) state;
    size_t before = secmem_in_use ();
    char *small = secmem_strdup ("a-cached-access-token");
    char *big = secmem_alloc (20000);
    assert_true (secmem_owns (small));
    assert_true (secmem_owns (big));
    assert_false (secmem_owns (&before));
    assert_true (((uintptr_t) small % 16) == 0);
    assert_int_equal (mapping_has_flag (small, "dd"), 1);
    assert_int_equal (mapping_has_flag (big, "dd"), 1);
    memset (big, 'x', 20000);
    assert_true (secmem_in_use () > before);

    /* wiped on free: the block is reused, and reads zero before anyone writes it */
    char *where = small;
    secmem_free_str (&small);
    assert_null (small);
    assert_int_equal (where [0], 0);
    assert_int_equal (memcmp (where, "\0\0\0\0\0\0\0\0", 8), 0);
    char *again = secmem_alloc (sizeof "a-cached-access-token");   /* the same size class */
    assert_ptr_equal (again, where);
    secmem_free (again);
    secmem_free (big);
    secmem_free (NULL);
    assert_int_equal (secmem_in_use (), before);

    /* many small values share pages: a thousand tokens do not map a thousand pages */
    char *many [1000];
    for (int i = 0; i < 1000; i++)
        many [i] = secmem_strdup ("eyJhbGciOiJSUzI1NiJ9.a-typical-access-token-of-some-length");
    assert_true (secmem_in_use () - before <= 1000 * 128);
    for (int i = 0; i < 1000; i++)
        secmem_free_str (&many [i]);
    assert_int_equal (secmem_in_use (), before);
}

static void
test_keyring_in_secure_memory (void **state)
{
    (void) state;
    char err [256];
    crypto_keyring_t *kr = crypto_keyring_new (KEY_A, KEY_B, err, sizeof err);
    assert_non_null (kr);
    assert_true (secmem_owns (kr));
    assert_int_equal (mapping_has_flag (kr, "dd"), 1);
    crypto_keyring_destroy (&kr);
    assert_null (kr);
}

/* item 6: with a fingerprint key of its own, the same refresh token keeps its fingerprint when
 * the encryption key is rotated; without one, it is derived from the current key (and changes) */
static void
test_fingerprint_key (void **state)
{
    (void) state;
    char err [256], f1 [CRYPTO_FINGERPRINT_LEN + 1], f2 [CRYPTO_FINGERPRINT_LEN + 1],
         d1 [CRYPTO_FINGERPRINT_LEN + 1], d2 [CRYPTO_FINGERPRINT_LEN + 1];
    crypto_keyring_t *before = crypto_keyring_new (KEY_A, NULL, err, sizeof err);
    crypto_keyring_t *after = crypto_keyring_new (KEY_B, KEY_A, err, sizeof err);
    crypto_fingerprint (before, "refresh-token-1", d1);
    crypto_fingerprint (after, "refresh-token-1", d2);
    assert_string_not_equal (d1, d2);                   /* derived: changes with the key */
    assert_false (crypto_keyring_fingerprint_key_own (before));
    assert_int_equal (crypto_keyring_set_fingerprint_key (before, KEY_C, err, sizeof err), FR_OK);
    assert_int_equal (crypto_keyring_set_fingerprint_key (after, KEY_C, err, sizeof err), FR_OK);
    assert_true (crypto_keyring_fingerprint_key_own (after));
    crypto_fingerprint (before, "refresh-token-1", f1);
    crypto_fingerprint (after, "refresh-token-1", f2);
    assert_string_equal (f1, f2);
    assert_string_not_equal (f1, d1);
    /* "" or NULL keeps the derived key; bad input is refused without quoting it */
    assert_int_equal (crypto_keyring_set_fingerprint_key (after, "", err, sizeof err), FR_OK);
    assert_int_equal (crypto_keyring_set_fingerprint_key (after, "not-base64!secretvalue", err, sizeof err),
                      FR_CONFIGURATION);
    assert_non_null (strstr (err, "FERRULE_FINGERPRINT_KEY"));
    assert_null (strstr (err, "secretvalue"));
    /* the upgrade rule in docs/operations.md: the derived key, given explicitly, changes nothing */
    unsigned char raw [32], derived [32];
    unsigned int len = 0;
    size_t n = 0;
    unsigned char *key = crypto_b64_decode (KEY_A, &n);
    assert_int_equal (n, 32);
    memcpy (raw, key, 32);
    mem_free (key);
    assert_non_null (HMAC (EVP_sha256 (), raw, 32, (const unsigned char *) "ferrule-fingerprint", 19, derived, &len));
    char *derived_b64 = crypto_b64_encode (derived, sizeof derived);
    crypto_keyring_t *explicit = crypto_keyring_new (KEY_A, NULL, err, sizeof err);
    assert_int_equal (crypto_keyring_set_fingerprint_key (explicit, derived_b64, err, sizeof err), FR_OK);
    crypto_fingerprint (explicit, "refresh-token-1", f2);
    assert_string_equal (f2, d1);
    crypto_keyring_destroy (&explicit);
    mem_free (derived_b64);
    assert_true (crypto_keyring_has (after, crypto_keyring_current_id (before)));
    assert_false (crypto_keyring_has (before, crypto_keyring_current_id (after)));
    crypto_keyring_destroy (&before);
    crypto_keyring_destroy (&after);
}

static void
test_secrets_from_env_and_files (void **state)
{
    (void) state;
    char err [512], path [] = "/tmp/ferrule-secret-XXXXXX";
    char *value = NULL;

    setenv ("FERRULE_TEST_SECRET", "direct-value", 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), 0);
    assert_string_equal (value, "direct-value");
    assert_null (getenv ("FERRULE_TEST_SECRET"));      /* gone once read */
    mem_free_secret (&value);
    /* a value with a file's last newline (a Kubernetes Secret made --from-file): dropped */
    setenv ("FERRULE_TEST_SECRET", "direct-value\r\n", 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), 0);
    assert_string_equal (value, "direct-value");
    mem_free_secret (&value);
    setenv ("FERRULE_TEST_SECRET", "\n", 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), 0);
    assert_null (value);

    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, "from-a-file\r\n", 13), 13);
    close (fd);
    setenv ("FERRULE_TEST_SECRET_FILE", path, 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), 0);
    assert_string_equal (value, "from-a-file");
    assert_null (getenv ("FERRULE_TEST_SECRET_FILE"));
    mem_free_secret (&value);

    /* both set: refused, and neither value is quoted */
    setenv ("FERRULE_TEST_SECRET", "direct-value", 1);
    setenv ("FERRULE_TEST_SECRET_FILE", path, 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), -1);
    assert_null (value);
    assert_non_null (strstr (err, "FERRULE_TEST_SECRET_FILE"));
    assert_null (strstr (err, "direct-value"));
    assert_null (getenv ("FERRULE_TEST_SECRET"));

    /* a missing file names the variable and the path, never a value */
    setenv ("FERRULE_TEST_SECRET_FILE", "/nonexistent/ferrule", 1);
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), -1);
    assert_non_null (strstr (err, "/nonexistent/ferrule"));

    /* unset: NULL, no error */
    assert_int_equal (secrets_from_env ("FERRULE_TEST_SECRET", &value, err, sizeof err), 0);
    assert_null (value);
    unlink (path);
}

static void
test_config_secret_file (void **state)
{
    (void) state;
    char err [512], path [] = "/tmp/ferrule-config-XXXXXX";
    char *key = NULL, *plain = NULL;
    const config_entry_t table [] = {
        { "encryption-key", "FERRULE_TEST_KEY", CONFIG_STRING, &key, NULL, 0, 0, 1, "" },
        { "plain", "FERRULE_TEST_PLAIN", CONFIG_STRING, &plain, NULL, 0, 0, 0, "" },
        CONFIG_END
    };
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, KEY_A "\n", strlen (KEY_A) + 1), (ssize_t) strlen (KEY_A) + 1);
    close (fd);
    setenv ("FERRULE_TEST_KEY_FILE", path, 1);
    setenv ("FERRULE_TEST_PLAIN", "not-secret", 1);
    char *argv [] = { "x", NULL };
    assert_int_equal (config_load (table, "x", 1, argv, err, sizeof err), 0);
    assert_string_equal (key, KEY_A);
    assert_string_equal (plain, "not-secret");
    assert_null (getenv ("FERRULE_TEST_KEY_FILE"));
    assert_non_null (getenv ("FERRULE_TEST_PLAIN"));    /* only secrets leave the environment */
    config_free (table);
    unlink (path);
}

/* A word left over on the command line (a libpq connection string passed unquoted leaves its
 * "password=..." behind) was quoted whole in the start-up error, which the daemon logs: it is
 * named by its place only. */
static void
test_config_stray_argument_not_quoted (void **state)
{
    (void) state;
    char err [512];
    char *plain = NULL;
    const config_entry_t table [] = {
        { "plain", "FERRULE_TEST_PLAIN2", CONFIG_STRING, &plain, NULL, 0, 0, 0, "" },
        CONFIG_END
    };
    char *argv [] = { "x", "--plain", "host=db", "password=s3cret-value", "user=x", NULL };
    assert_int_equal (config_load (table, "x", 5, argv, err, sizeof err), -1);
    assert_null (strstr (err, "s3cret"));
    assert_non_null (strstr (err, "argument 3"));
    config_free (table);
}

/* client secrets from files: "client_secret_file" in the provider file, or the variable's
 * _FILE twin; held in secure memory; the variables leave the environment */
static void
test_catalog_client_secret_files (void **state)
{
    (void) state;
    char err [512], secret1 [] = "/tmp/ferrule-cs1-XXXXXX", secret2 [] = "/tmp/ferrule-cs2-XXXXXX",
         providers [] = "/tmp/ferrule-prov-XXXXXX";
    int fd = mkstemp (secret1);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, "box-secret-from-file\n", 21), 21);
    close (fd);
    fd = mkstemp (secret2);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, "google-secret-from-file", 23), 23);
    close (fd);
    fd = mkstemp (providers);
    assert_true (fd >= 0);
    char json [512];
    int n = snprintf (json, sizeof json, "{\"box\": {\"client_id\": \"box-id\", \"client_secret_file\": \"%s\"}}", secret1);
    assert_int_equal (write (fd, json, (size_t) n), n);
    close (fd);
    setenv ("FERRULE_GOOGLE_CLIENT_ID", "google-id", 1);
    setenv ("FERRULE_GOOGLE_CLIENT_SECRET_FILE", secret2, 1);
    setenv ("FERRULE_BOX_CLIENT_SECRET", "ignored-the-file-in-the-entry-wins", 1);

    catalog_t *c = catalog_new (providers, err, sizeof err);
    if (!c)
        fail_msg ("catalog: %s", err);
    const catalog_provider_t *box = catalog_find (c, "box");
    const catalog_provider_t *google = catalog_find (c, "google");
    assert_non_null (box);
    assert_non_null (google);
    assert_string_equal (box->client_secret, "box-secret-from-file");
    assert_string_equal (google->client_secret, "google-secret-from-file");
    assert_true (secmem_owns (box->client_secret));
    assert_true (secmem_owns (google->client_secret));
    catalog_forget_environment (c);
    assert_null (getenv ("FERRULE_GOOGLE_CLIENT_SECRET_FILE"));
    assert_null (getenv ("FERRULE_BOX_CLIENT_SECRET"));
    assert_non_null (getenv ("FERRULE_GOOGLE_CLIENT_ID"));     /* an id is no secret */
    catalog_destroy (&c);

    /* an unreadable file stops the catalog with a message naming the file, not a value */
    unlink (secret1);
    c = catalog_new (providers, err, sizeof err);
    assert_null (c);
    assert_non_null (strstr (err, secret1));
    unsetenv ("FERRULE_GOOGLE_CLIENT_ID");
    unlink (secret2);

    /* credentials in variables made from files (a Kubernetes Secret --from-file): the file's last
     * newline is not part of them, or the provider refuses the client */
    fd = open (providers, O_WRONLY | O_TRUNC);
    assert_true (fd >= 0);
    assert_int_equal (write (fd, "{\"box\": {}}", 11), 11);
    close (fd);
    setenv ("FERRULE_BOX_CLIENT_ID", "box-id\n", 1);
    setenv ("FERRULE_BOX_CLIENT_SECRET", "box-secret\r\n", 1);
    c = catalog_new (providers, err, sizeof err);
    if (!c)
        fail_msg ("catalog: %s", err);
    box = catalog_find (c, "box");
    assert_non_null (box);
    assert_string_equal (box->client_id, "box-id");
    assert_string_equal (box->client_secret, "box-secret");
    catalog_destroy (&c);
    unsetenv ("FERRULE_BOX_CLIENT_ID");
    unsetenv ("FERRULE_BOX_CLIENT_SECRET");
    unlink (providers);
}

static void
test_harden (void **state)
{
    (void) state;
    char err [256];
    struct rlimit rl;
    assert_int_equal (secrets_harden (err, sizeof err), 0);
    assert_int_equal (getrlimit (RLIMIT_CORE, &rl), 0);
    assert_int_equal (rl.rlim_cur, 0);
    assert_int_equal (rl.rlim_max, 0);
    assert_int_equal (prctl (PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

/* item 9: a burst, then the refill rate; a refused call says when to retry */
static void
test_ratelimit (void **state)
{
    (void) state;
    ratelimit_t *rl = ratelimit_new (3, 6);            /* 3 at once, then one every 10 s */
    int64_t t = 1000000;
    assert_int_equal (ratelimit_take (rl, "a", t), 0);
    assert_int_equal (ratelimit_take (rl, "a", t), 0);
    assert_int_equal (ratelimit_take (rl, "a", t), 0);
    int64_t wait = ratelimit_take (rl, "a", t);
    assert_true (wait >= 9 && wait <= 11);
    assert_int_equal (ratelimit_take (rl, "b", t), 0);  /* its own bucket */
    assert_true (ratelimit_take (rl, "a", t + 5000) > 0);
    assert_int_equal (ratelimit_take (rl, "a", t + 10001), 0);
    assert_true (ratelimit_take (rl, "a", t + 10002) > 0);
    /* bounded: buckets that refilled are forgotten when the table is full */
    char key [32];
    for (int i = 0; i < RATELIMIT_MAX_ENTRIES + 10; i++) {
        snprintf (key, sizeof key, "k%d", i);
        (void) ratelimit_take (rl, key, t + 1000000 + (int64_t) i * 100000);
    }
    assert_true (ratelimit_count (rl) <= RATELIMIT_MAX_ENTRIES);
    ratelimit_destroy (&rl);
    assert_null (rl);
}

/* A table full of integrations that all called lately: a new one is refused as the table's
 * limit, not as its own (it has made no call; its message said "too many calls for" it), and the
 * table is scanned for refilled buckets at most once a second, not at every new integration's call
 * (each scan reads all 100,000). Integrations already tracked keep their own buckets; once buckets
 * have refilled, a new one gets in. */
static void
test_ratelimit_full (void **state)
{
    (void) state;
    ratelimit_t *rl = ratelimit_new (3, 6);
    int64_t t = 1000000;
    char key [32];
    for (int i = 0; i < RATELIMIT_MAX_ENTRIES; i++) {
        snprintf (key, sizeof key, "k%d", i);
        assert_int_equal (ratelimit_take (rl, key, t), 0);
    }
    assert_int_equal (ratelimit_take (rl, "new", t), RATELIMIT_FULL);
    assert_int_equal (ratelimit_scans (rl), 1);
    for (int i = 0; i < 1000; i++) {
        snprintf (key, sizeof key, "new%d", i);
        assert_int_equal (ratelimit_take (rl, key, t + i), RATELIMIT_FULL);
    }
    assert_int_equal (ratelimit_scans (rl), 1);         /* the second's one scan */
    assert_int_equal (ratelimit_take (rl, "k7", t + 10), 0);
    assert_int_equal (ratelimit_take (rl, "new", t + 5000), RATELIMIT_FULL);    /* none refilled yet */
    assert_int_equal (ratelimit_scans (rl), 2);
    assert_int_equal (ratelimit_take (rl, "new", t + 5500), RATELIMIT_FULL);
    assert_int_equal (ratelimit_scans (rl), 2);
    assert_int_equal (ratelimit_take (rl, "new", t + 11000), 0);   /* k0 ... refilled (10 s): forgotten */
    assert_int_equal (ratelimit_scans (rl), 3);
    assert_true (ratelimit_count (rl) < RATELIMIT_MAX_ENTRIES);
    ratelimit_destroy (&rl);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_secmem_dontdump_and_wipe),
        cmocka_unit_test (test_keyring_in_secure_memory),
        cmocka_unit_test (test_fingerprint_key),
        cmocka_unit_test (test_secrets_from_env_and_files),
        cmocka_unit_test (test_config_secret_file),
        cmocka_unit_test (test_config_stray_argument_not_quoted),
        cmocka_unit_test (test_catalog_client_secret_files),
        cmocka_unit_test (test_harden),
        cmocka_unit_test (test_ratelimit),
        cmocka_unit_test (test_ratelimit_full),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
