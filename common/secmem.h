/* secmem.h - memory for secrets: keys and cached plaintext tokens live in pages marked
 * MADV_DONTDUMP (left out of core dumps even where dumps are allowed) and are wiped on free */
#ifndef FERRULE_SECMEM_H
#define FERRULE_SECMEM_H
#include <stddef.h>

/* Zeroed memory in a page excluded from core dumps; aborts on out-of-memory like mem_alloc.
 * Small sizes share pages (size classes of 32 to 2048 bytes), larger ones get pages of their own. */
void *secmem_alloc (size_t size);
/* Wipes the whole block and returns it; NULL is fine. */
void  secmem_free (void *ptr);
/* A copy of s in secure memory (NULL for NULL). */
char *secmem_strdup (const char *s);
/* Wipes and frees a string from secmem_strdup, and nulls the pointer. */
void  secmem_free_str (char **p);
/* 1 when ptr points into memory secmem_alloc handed out (for tests). */
int   secmem_owns (const void *ptr);
/* Bytes currently handed out, counted in whole blocks (for tests). */
size_t secmem_in_use (void);
#endif
