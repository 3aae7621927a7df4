/* catalog.h - the migrations this ferrule-migrate knows: compiled in, or read from a folder */
#ifndef FERRULE_CATALOG_H
#define FERRULE_CATALOG_H
#include <stddef.h>

#define CATALOG_MAX_FILE_SIZE (16 * 1024 * 1024)   /* a bigger migration is a mistake */

typedef struct {
    int version;
    char *name;                 /* "token_store" */
    char *label;                /* "001_token_store", for messages */
    char *file;                 /* "001_token_store.sql" */
    char *sql;                  /* the file's bytes, NUL-terminated */
    size_t len;
    char checksum [65];         /* sha-256 of the bytes, lower-case hex */
    int no_transaction;         /* first line SQLSPLIT_NO_TRANSACTION: statement by statement, no
                                   transaction (CREATE INDEX CONCURRENTLY) */
} catalog_entry_t;

typedef struct catalog_t catalog_t;

/* The migrations compiled into this binary. NULL with err set if one cannot be used. */
catalog_t *catalog_new_embedded (char *err, size_t errlen);
/* The NNN_name.sql files in dir. NULL with err set on failure. */
catalog_t *catalog_new_from_dir (const char *dir, char *err, size_t errlen);
void catalog_destroy (catalog_t **self_p);

/* Entries are sorted by version. */
size_t catalog_size (const catalog_t *self);
const catalog_entry_t *catalog_at (const catalog_t *self, size_t index);
/* NULL when the version is unknown. */
const catalog_entry_t *catalog_find (const catalog_t *self, int version);
/* 0 when the catalog is empty. */
int catalog_highest (const catalog_t *self);
/* "built in" or the folder, for messages. */
const char *catalog_origin (const catalog_t *self);
#endif
