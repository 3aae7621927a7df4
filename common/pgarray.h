/* pgarray.h - PostgreSQL array literals ("{...}") for a statement's text parameters, such as
 * "id = ANY ($1::text[])" or "unnest ($1::text[], $2::bigint[])": the one place that writes
 * them, so that every element reads back as itself */
#ifndef FERRULE_PGARRAY_H
#define FERRULE_PGARRAY_H
#include <stddef.h>
#include <stdint.h>

typedef struct pgarray_t pgarray_t;

/* An empty array ("{}") whose literal may grow to max bytes. */
pgarray_t *pgarray_new (size_t max);
void pgarray_destroy (pgarray_t **self_p);

/* Appends s as a quoted element, '"' and '\' escaped with a backslash: unquoted, NULL (in any
 * case) would read as a null, "" as nothing, and a comma, a brace or white space as syntax. A
 * NULL pointer appends a null element. */
void pgarray_add_text (pgarray_t *self, const char *s);
/* Appends value in decimal (for integer[] and bigint[]). */
void pgarray_add_int (pgarray_t *self, int64_t value);
/* Appends a null element. */
void pgarray_add_null (pgarray_t *self);
/* Appends len bytes as a bytea element in hex ("\\x..."), or a null for NULL (for bytea[]). */
void pgarray_add_bytea (pgarray_t *self, const unsigned char *bytes, size_t len);

/* The literal so far (borrowed: valid until the next append or pgarray_destroy), or NULL when
 * an append would have passed max: the first failure sticks, and later appends do nothing. */
const char *pgarray_text (const pgarray_t *self);
/* Elements appended. */
size_t pgarray_count (const pgarray_t *self);
#endif
