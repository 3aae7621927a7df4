/* sqlsplit.h - a migration's text cut into its statements, for a migration that runs outside a
 * transaction: PostgreSQL runs a string of several statements as one implicit transaction, and
 * refuses CREATE INDEX CONCURRENTLY in one, so each statement must be sent on its own */
#ifndef FERRULE_SQLSPLIT_H
#define FERRULE_SQLSPLIT_H
#include <stddef.h>

/* The first line that makes a migration run outside a transaction, statement by statement. */
#define SQLSPLIT_NO_TRANSACTION "-- ferrule-migrate: no-transaction"

typedef struct {
    size_t start;               /* offset of its first character (never a comment or a blank) */
    size_t len;                 /* up to and including its ';', or to the text's end */
} sqlsplit_stmt_t;

/* 1 when sql's first line is SQLSPLIT_NO_TRANSACTION (trailing blanks allowed). */
int sqlsplit_no_transaction (const char *sql, size_t len);

/* The next statement at or after *pos: skips the blanks and comments before it, follows quotes,
 * quoted identifiers, E'' strings, dollar quotes and nested comments, and stops after the first ';'
 * outside them. 1 with *stmt set and *pos past it; 0 when only blanks and comments are left; -1
 * when the text ends inside a quote or a comment, with *stmt spanning from where it began and
 * *what naming what was left open. */
int sqlsplit_next (const char *sql, size_t len, size_t *pos, sqlsplit_stmt_t *stmt, const char **what);
#endif
