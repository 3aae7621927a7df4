/* ident.h - integration ids: 1 to 128 characters of A-Z a-z 0-9 . _ : - */
#ifndef FERRULE_IDENT_H
#define FERRULE_IDENT_H
#include <stddef.h>

#define IDENT_MAX 128

/* 1 when s (len bytes, not necessarily NUL-terminated) is a valid integration id. */
int ident_valid (const char *s, size_t len);
#endif
