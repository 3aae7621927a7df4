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
/* The length of the workspace id is taken to live in where the service must guess one (ids do not
 * say which of their prefixes is the workspace): up to and including its first ':', the
 * separator the docs' workspaces end with ("acct-42:" of "acct-42:drive"); without one, up to and
 * including its first separator; 0 when it has none (or is not a valid id). A workspace nested
 * across a ':' ("acct-" holding "acct-42:drive") is not seen. */
size_t ident_home_workspace_len (const char *id);
#endif
