/* mem.h - allocation wrappers: out of memory is logged and aborts, once, here */
#ifndef FERRULE_MEM_H
#define FERRULE_MEM_H
#include <stddef.h>

void *mem_alloc (size_t size);             /* zeroed */
void *mem_realloc (void *ptr, size_t size);
char *mem_strdup (const char *s);
char *mem_strndup (const char *s, size_t n);
/* A copy of the n bytes at p (a block of at least one byte); NULL for p NULL. */
void *mem_memdup (const void *p, size_t n);
void  mem_free (void *ptr);
/* Overwrite a buffer that held a secret before it is freed. */
void  mem_wipe (void *ptr, size_t size);
/* Wipe a whole block of any size, then free it: the free function of a library that may copy
 * secrets into blocks it frees (jansson parsing a provider's answer). */
void  mem_free_wiped (void *ptr);
/* Wipe and free a NUL-terminated secret, and null the pointer. */
void  mem_free_secret (char **p);

/* Size-capped growable buffer (curl's dynbuf): appends fail once the cap would be passed. What
 * it held is wiped when it grows, is reset or is freed. */
typedef struct {
    char  *data;
    size_t len;
    size_t cap;      /* allocated */
    size_t max;      /* hard limit on len */
} mem_buf_t;

void mem_buf_init (mem_buf_t *b, size_t max);
int  mem_buf_append (mem_buf_t *b, const void *data, size_t len);   /* 0 ok, -1 too large */
void mem_buf_reset (mem_buf_t *b);
void mem_buf_free (mem_buf_t *b);
#endif
