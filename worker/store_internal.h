/* store_internal.h - what the store layer's files share: running a statement on the one
 * connection with its deadline and error classification, and reading result columns
 * (private to store*.c: nothing else in worker/ runs SQL) */
#ifndef FERRULE_STORE_INTERNAL_H
#define FERRULE_STORE_INTERNAL_H
#include "store.h"
#include <libpq-fe.h>

#define STORE_NOTIFY_CHANNEL "ferrule_integrations"   /* "<worker> <integration>": drop the cache entry */

/* Runs one statement, reconnecting first if needed. want_tuples: 1 for a query, 0 for a command.
 * NULL with *st and err set on failure (classified: database_unavailable for what may pass, a
 * dead, read-only or unanswering connection dropped); the caller PQclear()s the result. */
PGresult *store_exec (store_t *s, const char *sql, int n, const char *const *values, const int *lengths,
                      const int *formats, int want_tuples, fr_status_t *st, char *err, size_t errlen);
/* A column as a copy (NULL for SQL NULL), an integer (0 for NULL), a bool, or bytea (NULL, *len 0). */
char *store_text_at (const PGresult *res, int row, int col);
int64_t store_int_at (const PGresult *res, int row, int col);
int store_bool_at (const PGresult *res, int row, int col);
unsigned char *store_bytea_at (const PGresult *res, int row, int col, size_t *len);
#endif
