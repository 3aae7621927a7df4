/* catalog.c - the migrations this ferrule-migrate knows: compiled in, or read from a folder */
#include "catalog.h"
#include "embedded.h"
#include "mem.h"
#include "sqlsplit.h"
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct catalog_t {
    catalog_entry_t *entries;
    size_t size;
    size_t cap;
    char *origin;
};

static catalog_t *
catalog_alloc (const char *origin)
{
    catalog_t *self = mem_alloc (sizeof *self);
    self->origin = mem_strdup (origin);
    return self;
}

void
catalog_destroy (catalog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    catalog_t *self = *self_p;
    for (size_t i = 0; i < self->size; i++) {
        mem_free (self->entries [i].name);
        mem_free (self->entries [i].label);
        mem_free (self->entries [i].file);
        mem_free (self->entries [i].sql);
    }
    mem_free (self->entries);
    mem_free (self->origin);
    mem_free (self);
    *self_p = NULL;
}

/* Hex sha-256 of the bytes into out (65 bytes). -1 if the digest fails. */
static int
catalog_checksum (const void *data, size_t len, char out [65])
{
    unsigned char md [EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest (data, len, md, &md_len, EVP_sha256 (), NULL) || md_len != 32)
        return -1;
    for (unsigned int i = 0; i < md_len; i++)
        snprintf (out + 2 * i, 3, "%02x", md [i]);
    return 0;
}

/* Takes sql (NUL-terminated, len bytes). 0, or -1 with err set. */
static int
catalog_add (catalog_t *self, int version, const char *name, char *sql, size_t len,
             char *err, size_t errlen)
{
    catalog_entry_t entry = { .version = version, .sql = sql, .len = len,
                              .no_transaction = sqlsplit_no_transaction (sql, len) };
    size_t label_size = strlen (name) + 8;
    int rc = -1;

    entry.label = mem_alloc (label_size);
    snprintf (entry.label, label_size, "%03d_%s", version, name);
    entry.file = mem_alloc (label_size + 4);
    snprintf (entry.file, label_size + 4, "%s.sql", entry.label);
    entry.name = mem_strdup (name);

    if (memchr (sql, '\0', len)) {
        snprintf (err, errlen, "migration \"%s\" contains a NUL byte: save it as plain UTF-8 text", entry.file);
        goto out;
    }
    if (catalog_checksum (sql, len, entry.checksum) < 0) {
        snprintf (err, errlen, "could not compute the checksum of migration \"%s\": the crypto library refused sha-256",
                  entry.file);
        goto out;
    }
    for (size_t i = 0; i < self->size; i++)
        if (self->entries [i].version == version) {
            snprintf (err, errlen, "two migrations have version %03d: \"%s\" and \"%s\": keep one number per file",
                      version, self->entries [i].file, entry.file);
            goto out;
        }
    if (self->size == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 16;
        self->entries = mem_realloc (self->entries, self->cap * sizeof *self->entries);
    }
    self->entries [self->size++] = entry;
    rc = 0;
out:
    if (rc < 0) {
        mem_free (entry.name);
        mem_free (entry.label);
        mem_free (entry.file);
        mem_free (entry.sql);
    }
    return rc;
}

static int
catalog_compare (const void *a, const void *b)
{
    const catalog_entry_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

catalog_t *
catalog_new_embedded (char *err, size_t errlen)
{
    catalog_t *self = catalog_alloc ("built in");
    for (size_t i = 0; i < embedded_count; i++) {
        const embedded_file_t *f = &embedded_files [i];
        char *sql = mem_alloc (f->len + 1);
        memcpy (sql, f->sql, f->len);
        if (catalog_add (self, f->version, f->name, sql, f->len, err, errlen) < 0) {
            catalog_destroy (&self);
            return NULL;
        }
    }
    qsort (self->entries, self->size, sizeof *self->entries, catalog_compare);
    return self;
}

/* Splits "NNN_name.sql" into its version (1..999) and name; -1 if it is not such a name. */
static int
catalog_parse_file_name (const char *file, int *version, char *name, size_t name_size)
{
    size_t len = strlen (file);
    if (len < 9 || strcmp (file + len - 4, ".sql") != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (file [i] < '0' || file [i] > '9')
            return -1;
    if (file [3] != '_')
        return -1;
    size_t name_len = len - 8;
    if (name_len >= name_size)
        return -1;
    for (size_t i = 4; i < len - 4; i++) {
        char c = file [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return -1;
    }
    *version = (file [0] - '0') * 100 + (file [1] - '0') * 10 + (file [2] - '0');
    if (*version == 0)
        return -1;
    memcpy (name, file + 4, name_len);
    name [name_len] = '\0';
    return 0;
}

/* Reads a whole file, at most CATALOG_MAX_FILE_SIZE bytes. NULL with err set on failure. */
static char *
catalog_read_file (const char *path, size_t *len_out, char *err, size_t errlen)
{
    char *data = NULL;
    FILE *fp = fopen (path, "rb");
    struct stat st;
    int ok = 0;

    if (!fp) {
        snprintf (err, errlen, "could not open migration \"%s\": %s", path, strerror (errno));
        goto out;
    }
    if (fstat (fileno (fp), &st) < 0 || !S_ISREG (st.st_mode)) {
        snprintf (err, errlen, "migration \"%s\" is not a regular file", path);
        goto out;
    }
    if (st.st_size > CATALOG_MAX_FILE_SIZE) {
        snprintf (err, errlen, "migration \"%s\" is too large (%lld bytes, the limit is %d): split it",
                  path, (long long) st.st_size, CATALOG_MAX_FILE_SIZE);
        goto out;
    }
    size_t len = (size_t) st.st_size;
    data = mem_alloc (len + 1);
    if (fread (data, 1, len, fp) != len || ferror (fp)) {
        snprintf (err, errlen, "could not read migration \"%s\": %s", path,
                  ferror (fp) ? strerror (errno) : "the file shrank while it was read");
        goto out;
    }
    data [len] = '\0';
    *len_out = len;
    ok = 1;
out:
    if (fp)
        fclose (fp);
    if (!ok) {
        mem_free (data);
        data = NULL;
    }
    return data;
}

catalog_t *
catalog_new_from_dir (const char *dir, char *err, size_t errlen)
{
    catalog_t *self = catalog_alloc (dir);
    DIR *d = opendir (dir);
    char *path = NULL;
    int ok = 0;

    if (!d) {
        snprintf (err, errlen, "could not open the migrations folder \"%s\": %s", dir, strerror (errno));
        goto out;
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir (d);
        if (!de) {
            if (errno) {
                snprintf (err, errlen, "could not list the migrations folder \"%s\": %s", dir, strerror (errno));
                goto out;
            }
            break;
        }
        int version;
        char name [256];
        if (catalog_parse_file_name (de->d_name, &version, name, sizeof name) < 0) {
            size_t n = strlen (de->d_name);
            if (n > 4 && strcmp (de->d_name + n - 4, ".sql") == 0)
                fprintf (stderr, "ferrule-migrate: warning: ignoring \"%s\" in \"%s\": a migration is named NNN_name.sql "
                         "(001 to 999, then letters, digits, \"_\" or \"-\")\n", de->d_name, dir);
            continue;
        }
        size_t path_size = strlen (dir) + strlen (de->d_name) + 2;
        mem_free (path);
        path = mem_alloc (path_size);
        snprintf (path, path_size, "%s/%s", dir, de->d_name);
        size_t len = 0;
        char *sql = catalog_read_file (path, &len, err, errlen);
        if (!sql || catalog_add (self, version, name, sql, len, err, errlen) < 0)
            goto out;
    }
    if (self->size == 0) {
        snprintf (err, errlen, "no migrations in \"%s\": it should hold files named NNN_name.sql", dir);
        goto out;
    }
    qsort (self->entries, self->size, sizeof *self->entries, catalog_compare);
    ok = 1;
out:
    if (d)
        closedir (d);
    mem_free (path);
    if (!ok)
        catalog_destroy (&self);
    return self;
}

size_t
catalog_size (const catalog_t *self)
{
    return self->size;
}

const catalog_entry_t *
catalog_at (const catalog_t *self, size_t index)
{
    return index < self->size ? &self->entries [index] : NULL;
}

const catalog_entry_t *
catalog_find (const catalog_t *self, int version)
{
    for (size_t i = 0; i < self->size; i++)
        if (self->entries [i].version == version)
            return &self->entries [i];
    return NULL;
}

int
catalog_highest (const catalog_t *self)
{
    return self->size ? self->entries [self->size - 1].version : 0;
}

const char *
catalog_origin (const catalog_t *self)
{
    return self->origin;
}
