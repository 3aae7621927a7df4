/* sqlsplit.c - a migration's text cut into its statements: PostgreSQL's lexical rules for what can
 * hide a ';' (quotes, quoted identifiers, E'' strings, dollar quotes, comments), nothing more */
#include "sqlsplit.h"
#include <stdbool.h>
#include <string.h>

static bool
ident_char (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$'
        || (unsigned char) c >= 0x80;
}

static bool
blank (char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int
sqlsplit_no_transaction (const char *sql, size_t len)
{
    size_t n = strlen (SQLSPLIT_NO_TRANSACTION);
    if (len < n || memcmp (sql, SQLSPLIT_NO_TRANSACTION, n) != 0)
        return 0;
    for (size_t i = n; i < len && sql [i] != '\n'; i++)
        if (!blank (sql [i]))
            return 0;
    return 1;
}

/* The length of a dollar quote's delimiter ("$$", "$tag$") at sql + i, or 0 when there is none:
 * a tag is an identifier that does not start with a digit ("$1" is a parameter). */
static size_t
dollar_tag (const char *sql, size_t len, size_t i)
{
    size_t j = i + 1;
    if (j < len && sql [j] >= '0' && sql [j] <= '9')
        return 0;
    while (j < len && sql [j] != '$' && ident_char (sql [j]))
        j++;
    return j < len && sql [j] == '$' ? j - i + 1 : 0;
}

/* Past a comment at sql + i ("--" or "/ *", already seen): the index after it, or len when it is
 * left open (*open set for a block comment). */
static size_t
skip_comment (const char *sql, size_t len, size_t i, bool *open)
{
    if (sql [i] == '-') {
        while (i < len && sql [i] != '\n')
            i++;
        return i;
    }
    int depth = 1;                      /* PostgreSQL's block comments nest */
    i += 2;
    while (i < len && depth > 0) {
        if (sql [i] == '/' && i + 1 < len && sql [i + 1] == '*')
            depth++, i += 2;
        else if (sql [i] == '*' && i + 1 < len && sql [i + 1] == '/')
            depth--, i += 2;
        else
            i++;
    }
    *open = depth > 0;
    return i;
}

static bool
comment_at (const char *sql, size_t len, size_t i)
{
    return i + 1 < len && ((sql [i] == '-' && sql [i + 1] == '-') || (sql [i] == '/' && sql [i + 1] == '*'));
}

int
sqlsplit_next (const char *sql, size_t len, size_t *pos, sqlsplit_stmt_t *stmt, const char **what)
{
    size_t i = *pos;
    bool open = false;
    *what = NULL;
    for (;;) {                                  /* blanks and comments before the statement */
        while (i < len && blank (sql [i]))
            i++;
        if (!comment_at (sql, len, i))
            break;
        size_t from = i;
        i = skip_comment (sql, len, i, &open);
        if (open) {
            stmt->start = from;
            stmt->len = len - from;
            *pos = len;
            *what = "a comment";
            return -1;
        }
    }
    if (i >= len) {
        *pos = len;
        return 0;
    }
    stmt->start = i;
    while (i < len) {
        char c = sql [i];
        if (c == ';') {
            i++;
            break;
        }
        if (comment_at (sql, len, i)) {
            i = skip_comment (sql, len, i, &open);
            if (open) {
                *what = "a comment";
                break;
            }
            continue;
        }
        if (c == '\'' || c == '"') {
            /* E'...' takes backslash escapes; the E must start a word of its own */
            bool escapes = c == '\'' && i > stmt->start && (sql [i - 1] == 'E' || sql [i - 1] == 'e')
                           && (i - 1 == stmt->start || !ident_char (sql [i - 2]));
            size_t j = i + 1;
            bool closed = false;
            while (j < len) {
                if (escapes && sql [j] == '\\' && j + 1 < len) {
                    j += 2;
                    continue;
                }
                if (sql [j] == c) {
                    if (j + 1 < len && sql [j + 1] == c) {      /* '' or "" stands for one */
                        j += 2;
                        continue;
                    }
                    closed = true;
                    j++;
                    break;
                }
                j++;
            }
            i = j;
            if (!closed) {
                *what = c == '"' ? "a quoted identifier" : "a quoted string";
                break;
            }
            continue;
        }
        if (c == '$' && (i == stmt->start || !ident_char (sql [i - 1]))) {
            size_t tag = dollar_tag (sql, len, i);
            if (tag) {
                size_t j = i + tag;
                while (j < len && !(sql [j] == '$' && j + tag <= len && memcmp (sql + j, sql + i, tag) == 0))
                    j++;
                if (j >= len) {
                    i = len;
                    *what = "a dollar-quoted string";
                    break;
                }
                i = j + tag;
                continue;
            }
        }
        i++;
    }
    stmt->len = (i < len ? i : len) - stmt->start;
    *pos = i < len ? i : len;
    return *what ? -1 : 1;
}
