/* curve.c - CURVE key files and socket setup (see curve.h) */
#include "curve.h"
#include "mem.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define CURVE_MAX_FILE 4096

int
curve_key_valid (const char *s)
{
    uint8_t raw [32];
    if (!s || strlen (s) != CURVE_Z85_LEN)
        return 0;
    int ok = zmq_z85_decode (raw, s) != NULL;
    memset (raw, 0, sizeof raw);
    return ok;
}

fr_status_t
curve_read_key_file (const char *path, char out [CURVE_Z85_LEN + 1], char *err, size_t errlen)
{
    char buf [CURVE_MAX_FILE + 1];
    fr_status_t st = FR_CONFIGURATION;
    size_t n = 0;
    out [0] = '\0';
    FILE *f = path && *path ? fopen (path, "r") : NULL;
    if (!f) {
        snprintf (err, errlen, "could not read key file \"%s\": %s", path ? path : "", path && *path ? strerror (errno) : "no file named");
        return FR_CONFIGURATION;
    }
    n = fread (buf, 1, CURVE_MAX_FILE + 1, f);
    fclose (f);
    if (n > CURVE_MAX_FILE) {
        snprintf (err, errlen, "key file \"%s\" is larger than %d bytes: it is not a key file", path, CURVE_MAX_FILE);
        goto out;
    }
    buf [n] = '\0';
    for (char *save = NULL, *line = strtok_r (buf, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t len = strlen (line);
        while (len > 0 && (line [len - 1] == ' ' || line [len - 1] == '\t' || line [len - 1] == '\r'))
            line [--len] = '\0';
        if (len == 0 || line [0] == '#')
            continue;
        if (!curve_key_valid (line)) {
            snprintf (err, errlen, "key file \"%s\" does not hold a key: expected 40 characters of Z85 "
                      "(make one with \"ferrulectl keygen --out PREFIX\")", path);
            goto out;
        }
        memcpy (out, line, CURVE_Z85_LEN + 1);
        st = FR_OK;
        goto out;
    }
    snprintf (err, errlen, "key file \"%s\" is empty", path);
out:
    mem_wipe (buf, sizeof buf);
    return st;
}

/* Writes text to a new file with the given mode; 0 or -1 with errno. */
static int
write_new_file (const char *path, const char *text, mode_t mode)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen (text);
    ssize_t w = write (fd, text, len);
    int e = errno;
    if (close (fd) != 0 || w != (ssize_t) len) {
        unlink (path);
        errno = w < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

fr_status_t
curve_keygen (const char *prefix, char public_out [CURVE_Z85_LEN + 1], char *err, size_t errlen)
{
    char pub [CURVE_Z85_LEN + 1], sec [CURVE_Z85_LEN + 1], text [128];
    char *key_path = NULL, *pub_path = NULL;
    fr_status_t st = FR_CONFIGURATION;
    if (!prefix || !*prefix || strlen (prefix) > 1000) {
        snprintf (err, errlen, "give --out PREFIX: the files PREFIX.key and PREFIX.pub are written");
        return FR_BAD_REQUEST;
    }
    if (zmq_curve_keypair (pub, sec) != 0) {
        snprintf (err, errlen, "could not make a key pair: this libzmq has no CURVE support (%s)", zmq_strerror (errno));
        return FR_CONFIGURATION;
    }
    size_t len = strlen (prefix) + 5;
    key_path = mem_alloc (len);
    pub_path = mem_alloc (len);
    snprintf (key_path, len, "%s.key", prefix);
    snprintf (pub_path, len, "%s.pub", prefix);
    snprintf (text, sizeof text, "%s\n", sec);
    if (write_new_file (key_path, text, 0600) != 0) {
        snprintf (err, errlen, "could not create \"%s\": %s%s", key_path, strerror (errno),
                  errno == EEXIST ? " (remove it first; keygen never overwrites a key)" : "");
        goto out;
    }
    snprintf (text, sizeof text, "%s\n", pub);
    if (write_new_file (pub_path, text, 0644) != 0) {
        snprintf (err, errlen, "could not create \"%s\": %s%s", pub_path, strerror (errno),
                  errno == EEXIST ? " (remove it first; keygen never overwrites a key)" : "");
        unlink (key_path);
        goto out;
    }
    if (public_out)
        memcpy (public_out, pub, sizeof pub);
    st = FR_OK;
out:
    mem_wipe (sec, sizeof sec);
    mem_wipe (text, sizeof text);
    mem_free (key_path);
    mem_free (pub_path);
    return st;
}

void
curve_env_set (const char *secret_file, const char *broker_key_file, const char *plaintext)
{
    if (secret_file && *secret_file)
        setenv (CURVE_ENV_SECRET, secret_file, 1);
    if (broker_key_file && *broker_key_file)
        setenv (CURVE_ENV_BROKER_KEY, broker_key_file, 1);
    if (plaintext && *plaintext)
        setenv (CURVE_ENV_PLAINTEXT, plaintext, 1);
}

fr_status_t
curve_identity_from_env (curve_identity_t *id, int need_server, char *err, size_t errlen)
{
    const char *secret_file = getenv (CURVE_ENV_SECRET);
    const char *server_file = getenv (CURVE_ENV_BROKER_KEY);
    const char *plain = getenv (CURVE_ENV_PLAINTEXT);
    memset (id, 0, sizeof *id);
    int have_keys = secret_file && *secret_file && (!need_server || (server_file && *server_file));
    if (!have_keys) {
        if (plain && strcmp (plain, "1") == 0 && !(secret_file && *secret_file)) {
            id->plaintext = 1;
            return FR_OK;
        }
        if (secret_file && *secret_file)
            snprintf (err, errlen, "%s is set but %s is not: set it to the file holding the brokers' public key",
                      CURVE_ENV_SECRET, CURVE_ENV_BROKER_KEY);
        else
            snprintf (err, errlen, "no CURVE key: set %s%s%s (make keys with \"ferrulectl keygen\"), "
                      "or %s=1 to run without authentication or encryption",
                      CURVE_ENV_SECRET, need_server ? " and " : "", need_server ? CURVE_ENV_BROKER_KEY : "",
                      CURVE_ENV_PLAINTEXT);
        return FR_CONFIGURATION;
    }
    fr_status_t st = curve_read_key_file (secret_file, id->secret, err, errlen);
    if (st == FR_OK && need_server)
        st = curve_read_key_file (server_file, id->server, err, errlen);
    if (st == FR_OK && zmq_curve_public (id->public, id->secret) != 0) {
        snprintf (err, errlen, "could not derive the public key from \"%s\": this libzmq has no CURVE support", secret_file);
        st = FR_CONFIGURATION;
    }
    if (st != FR_OK)
        curve_identity_clear (id);
    return st;
}

void
curve_identity_clear (curve_identity_t *id)
{
    if (id)
        mem_wipe (id, sizeof *id);
}

int
curve_apply_client (void *socket, const curve_identity_t *id)
{
    if (!id || id->plaintext)
        return 0;
    if (zmq_setsockopt (socket, ZMQ_CURVE_SERVERKEY, id->server, CURVE_Z85_LEN) != 0
    ||  zmq_setsockopt (socket, ZMQ_CURVE_PUBLICKEY, id->public, CURVE_Z85_LEN) != 0
    ||  zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, id->secret, CURVE_Z85_LEN) != 0)
        return -1;
    return 0;
}

int
curve_apply_server (void *socket, const curve_identity_t *id, const char *zap_domain)
{
    int one = 1;
    if (!id || id->plaintext)
        return 0;
    if (zmq_setsockopt (socket, ZMQ_CURVE_SERVER, &one, sizeof one) != 0
    ||  zmq_setsockopt (socket, ZMQ_CURVE_SECRETKEY, id->secret, CURVE_Z85_LEN) != 0
    ||  zmq_setsockopt (socket, ZMQ_ZAP_DOMAIN, zap_domain, strlen (zap_domain)) != 0)
        return -1;
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
    zmq_setsockopt (socket, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one);
#endif
    return 0;
}
