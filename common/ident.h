/* ident.h - integration ids: 1 to 128 characters of A-Z a-z 0-9 . _ : -
 *
 * A workspace is an id prefix that ends with a separator (one of : . _ -), such as "acct42:".
 * Its end is what keeps it from covering other ids: "acct4" would also cover "acct42:x". */
#ifndef FERRULE_IDENT_H
#define FERRULE_IDENT_H
#include <stddef.h>

#define IDENT_MAX 128
#define IDENT_SEPARATORS ": . _ -"      /* what may end a workspace, as messages list it */

/* 1 when s (len bytes, not necessarily NUL-terminated) is a valid integration id. */
int ident_valid (const char *s, size_t len);
/* 1 when s (len bytes) may be a workspace: a valid id whose last character is a separator. */
int ident_workspace_valid (const char *s, size_t len);
/* 1 when id belongs to workspace ws: ws is a valid workspace and id starts with it. The one
 * comparison of an id with a workspace; 0 for a workspace that does not end with a separator,
 * whatever the id. */
int ident_in_workspace (const char *id, const char *ws);
/* The length of the shortest workspace that holds id: up to and including its first separator,
 * 0 when it has none (or is not a valid id). Every workspace id is in starts with it, so the ids
 * it starts are those of every workspace id belongs to, and maybe more. */
size_t ident_outer_workspace_len (const char *id);
#endif
