/* secrets.c - core dumps off, secrets from files, secret variables out of the environment */
#include "secrets.h"
#include "mem.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int
secrets_harden (char *err, size_t errlen)
{
    struct rlimit none = { 0, 0 };
    if (setrlimit (RLIMIT_CORE, &none) != 0) {
        snprintf (err, errlen, "could not switch core dumps off (RLIMIT_CORE): %s", strerror (errno));
        return -1;
    }
    if (prctl (PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf (err, errlen, "could not mark the process not dumpable: %s", strerror (errno));
        return -1;
    }
    return 0;
}

char *
secrets_read_file (const char *path, const char *what, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf (err, errlen, "could not open %s file \"%s\": %s", what, path, strerror (errno));
        goto fail;
    }
    buf = mem_alloc (SECRETS_MAX_FILE + 2);
    for (;;) {
        ssize_t n = read (fd, buf + len, SECRETS_MAX_FILE + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf (err, errlen, "could not read %s file \"%s\": %s", what, path, strerror (errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t) n;
        if (len > SECRETS_MAX_FILE) {
            snprintf (err, errlen, "%s file \"%s\" is larger than %d bytes: it should hold one value",
                      what, path, SECRETS_MAX_FILE);
            goto fail;
        }
    }
    close (fd);
    fd = -1;
    if (len && buf [len - 1] == '\n')
        len--;
    if (len && buf [len - 1] == '\r')
        len--;
    buf [len] = '\0';
    if (memchr (buf, '\0', len)) {
        snprintf (err, errlen, "%s file \"%s\" holds a NUL byte: it should hold one text value", what, path);
        goto fail;
    }
    return buf;
fail:
    if (fd >= 0)
        close (fd);
    if (buf) {
        mem_wipe (buf, SECRETS_MAX_FILE + 2);
        mem_free (buf);
    }
    return NULL;
}

int
secrets_env_name_valid (const char *name, size_t max)
{
    size_t len = strlen (name);
    if (len == 0 || len > max || (name [0] >= '0' && name [0] <= '9'))
        return 0;
    return strspn (name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == len;
}

/* Overwrites the value of name in the environment block before removing it, so the text does
 * not stay behind in the process's memory (or in /proc/PID/environ for values set at exec). */
static void
secrets_unset (const char *name)
{
    char *v = getenv (name);
    if (v)
        mem_wipe (v, strlen (v));
    unsetenv (name);
}

char *
secrets_env_value (const char *text)
{
    /* a Secret made from a file (kubectl --from-file) holds the file's last newline: dropped, as
     * a file's is, or a client secret or a URL's last parameter would carry it */
    size_t len = strlen (text);
    if (len && text [len - 1] == '\n')
        len--;
    if (len && text [len - 1] == '\r')
        len--;
    return len ? mem_strndup (text, len) : NULL;
}

int
secrets_from_env (const char *name, char **value, char *err, size_t errlen)
{
    char file_var [128];
    int rc = -1;
    *value = NULL;
    snprintf (file_var, sizeof file_var, "%s_FILE", name);
    const char *direct = getenv (name);
    const char *path = getenv (file_var);
    if (direct && *direct && path && *path) {
        snprintf (err, errlen, "both %s and %s are set: set only one", name, file_var);
        goto out;
    }
    if (path && *path) {
        *value = secrets_read_file (path, file_var, err, errlen);
        if (!*value)
            goto out;
        if (!**value)
            mem_free_secret (value);         /* an empty file counts as unset, like "" */
    }
    else if (direct && *direct)
        *value = secrets_env_value (direct);
    rc = 0;
out:
    secrets_unset (name);
    secrets_unset (file_var);
    return rc;
}
