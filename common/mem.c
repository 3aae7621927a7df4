/* mem.c - allocation policy: abort on out-of-memory (redis zmalloc style) */
#include "mem.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
oom (size_t size)
{
    fprintf (stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory allocating %zu bytes\"}\n", size);
    abort ();
}

void *
mem_alloc (size_t size)
{
    void *p = calloc (1, size ? size : 1);
    if (!p)
        oom (size);
    return p;
}

void *
mem_realloc (void *ptr, size_t size)
{
    void *p = realloc (ptr, size ? size : 1);
    if (!p)
        oom (size);
    return p;
}

char *
mem_strdup (const char *s)
{
    return s ? mem_strndup (s, strlen (s)) : NULL;
}

void *
mem_memdup (const void *p, size_t n)
{
    if (!p)
        return NULL;
    void *q = mem_alloc (n ? n : 1);
    memcpy (q, p, n);
    return q;
}

char *
mem_strndup (const char *s, size_t n)
{
    char *p = mem_alloc (n + 1);
    memcpy (p, s, n);
    p [n] = '\0';
    return p;
}

void
mem_free (void *ptr)
{
    free (ptr);
}

void
mem_wipe (void *ptr, size_t size)
{
    /* explicit_bzero is not optimised away and runs at memset speed */
    explicit_bzero (ptr, size);
}

void
mem_free_wiped (void *ptr)
{
    if (ptr) {
        mem_wipe (ptr, malloc_usable_size (ptr));
        free (ptr);
    }
}

void
mem_free_secret (char **p)
{
    if (p && *p) {
        mem_wipe (*p, strlen (*p));
        free (*p);
        *p = NULL;
    }
}

void
mem_buf_init (mem_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int
mem_buf_append (mem_buf_t *b, const void *data, size_t len)
{
    if (len > b->max - b->len)
        return -1;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        /* moved by hand, not realloc: the old block is wiped before it is freed, since a buffer
         * may hold a secret (a provider's answer, a request's body) */
        char *grown = mem_alloc (cap);
        if (b->data) {
            memcpy (grown, b->data, b->len);
            mem_wipe (b->data, b->len);
            free (b->data);
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy (b->data + b->len, data, len);
    b->len += len;
    b->data [b->len] = '\0';
    return 0;
}

void
mem_buf_reset (mem_buf_t *b)
{
    if (b->data)
        mem_wipe (b->data, b->len);
    b->len = 0;
}

void
mem_buf_free (mem_buf_t *b)
{
    mem_buf_reset (b);
    free (b->data);
    b->data = NULL;
    b->cap = 0;
}
