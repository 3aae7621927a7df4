/* secmem.c - a small allocator for secrets: size classes carved from 64 KiB arenas mapped with
 * mmap and marked MADV_DONTDUMP; blocks are wiped when freed and reused, arenas stay mapped.
 * A mutex makes it safe from the HTTP thread too, though only the main loops use it today. */
#include "secmem.h"
#include "mem.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SECMEM_ARENA      (64 * 1024)
#define SECMEM_MIN_SHIFT  5                    /* 32 bytes */
#define SECMEM_CLASSES    7                    /* 32 .. 2048 */
#define SECMEM_HEADER     16                   /* keeps blocks 16-byte aligned */
#define SECMEM_MAX_ARENAS 4096                 /* 256 MiB of small secrets */

typedef struct secmem_free_block { struct secmem_free_block *next; } secmem_free_block_t;

/* Every block starts with this header: the size class, or SECMEM_CLASSES for a block with pages
 * of its own (then the mapping's length). */
typedef struct {
    uint32_t cls;
    uint32_t magic;
    uint64_t mapped;
} secmem_header_t;

#define SECMEM_MAGIC 0x5ec3e3u

static pthread_mutex_t secmem_lock = PTHREAD_MUTEX_INITIALIZER;
static secmem_free_block_t *secmem_free_lists [SECMEM_CLASSES];
static unsigned char *secmem_arenas [SECMEM_MAX_ARENAS];
static size_t secmem_narenas;
static unsigned char *secmem_cursor;           /* next unused byte of the newest arena */
static size_t secmem_left;                     /* bytes after secmem_cursor */
static size_t secmem_used;
static unsigned char **secmem_large;           /* blocks with pages of their own, for secmem_owns */
static size_t secmem_nlarge, secmem_large_cap;

static void
secmem_oom (size_t size)
{
    fprintf (stderr, "{\"level\":\"fatal\",\"msg\":\"out of secure memory allocating %zu bytes\"}\n", size);
    abort ();
}

/* Pages of our own, excluded from dumps. MADV_DONTDUMP failing (an old kernel) is not fatal:
 * core dumps are also switched off for the whole process (secrets_harden). */
static unsigned char *
secmem_map (size_t len)
{
    void *p = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_DONTDUMP
    (void) madvise (p, len, MADV_DONTDUMP);
#endif
    return p;
}

static int
secmem_class_of (size_t total)
{
    for (int c = 0; c < SECMEM_CLASSES; c++)
        if (total <= ((size_t) 1 << (SECMEM_MIN_SHIFT + c)))
            return c;
    return -1;
}

void *
secmem_alloc (size_t size)
{
    size_t total = size + SECMEM_HEADER;
    secmem_header_t *h = NULL;
    if (size > SIZE_MAX / 2)
        secmem_oom (size);
    int cls = secmem_class_of (total);
    if (cls < 0) {
        size_t page = (size_t) sysconf (_SC_PAGESIZE);
        size_t len = (total + page - 1) / page * page;
        unsigned char *p = secmem_map (len);
        if (!p)
            secmem_oom (size);
        h = (secmem_header_t *) p;
        h->cls = SECMEM_CLASSES;
        h->mapped = len;
        pthread_mutex_lock (&secmem_lock);
        secmem_used += len;
        if (secmem_nlarge == secmem_large_cap) {
            secmem_large_cap = secmem_large_cap ? secmem_large_cap * 2 : 16;
            secmem_large = mem_realloc (secmem_large, secmem_large_cap * sizeof *secmem_large);
        }
        secmem_large [secmem_nlarge++] = p;
        pthread_mutex_unlock (&secmem_lock);
    }
    else {
        size_t block = (size_t) 1 << (SECMEM_MIN_SHIFT + cls);
        pthread_mutex_lock (&secmem_lock);
        if (secmem_free_lists [cls]) {
            h = (secmem_header_t *) secmem_free_lists [cls];
            secmem_free_lists [cls] = secmem_free_lists [cls]->next;
        }
        else {
            if (secmem_left < block) {
                unsigned char *arena = secmem_narenas < SECMEM_MAX_ARENAS ? secmem_map (SECMEM_ARENA) : NULL;
                if (!arena) {
                    pthread_mutex_unlock (&secmem_lock);
                    secmem_oom (size);
                }
                secmem_arenas [secmem_narenas++] = arena;
                secmem_cursor = arena;
                secmem_left = SECMEM_ARENA;     /* the tail of the previous arena is lost: < 2 KiB */
            }
            h = (secmem_header_t *) secmem_cursor;
            secmem_cursor += block;
            secmem_left -= block;
        }
        secmem_used += block;
        pthread_mutex_unlock (&secmem_lock);
        memset (h, 0, block);
        h->cls = (uint32_t) cls;
        h->mapped = block;
    }
    h->magic = SECMEM_MAGIC;
    return (unsigned char *) h + SECMEM_HEADER;
}

int
secmem_owns (const void *ptr)
{
    const unsigned char *p = ptr;
    int found = 0;
    if (!p)
        return 0;
    pthread_mutex_lock (&secmem_lock);
    for (size_t i = 0; i < secmem_narenas && !found; i++)
        found = p >= secmem_arenas [i] && p < secmem_arenas [i] + SECMEM_ARENA;
    for (size_t i = 0; i < secmem_nlarge && !found; i++)
        found = p >= secmem_large [i]
             && p < secmem_large [i] + ((const secmem_header_t *) secmem_large [i])->mapped;
    pthread_mutex_unlock (&secmem_lock);
    return found;
}

void
secmem_free (void *ptr)
{
    if (!ptr)
        return;
    secmem_header_t *h = (secmem_header_t *) ((unsigned char *) ptr - SECMEM_HEADER);
    if (h->magic != SECMEM_MAGIC) {
        fprintf (stderr, "{\"level\":\"fatal\",\"msg\":\"secmem_free of memory secmem_alloc did not return\"}\n");
        abort ();
    }
    if (h->cls == SECMEM_CLASSES) {
        size_t len = (size_t) h->mapped;
        pthread_mutex_lock (&secmem_lock);
        for (size_t i = 0; i < secmem_nlarge; i++)
            if (secmem_large [i] == (unsigned char *) h) {
                secmem_large [i] = secmem_large [--secmem_nlarge];
                break;
            }
        secmem_used -= len <= secmem_used ? len : secmem_used;
        pthread_mutex_unlock (&secmem_lock);
        mem_wipe (h, len);
        munmap (h, len);
        return;
    }
    uint32_t cls = h->cls;
    size_t block = (size_t) 1 << (SECMEM_MIN_SHIFT + cls);
    mem_wipe (h, block);
    pthread_mutex_lock (&secmem_lock);
    secmem_free_block_t *b = (secmem_free_block_t *) h;
    b->next = secmem_free_lists [cls];
    secmem_free_lists [cls] = b;
    secmem_used -= block <= secmem_used ? block : secmem_used;
    pthread_mutex_unlock (&secmem_lock);
}

char *
secmem_strdup (const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen (s);
    char *p = secmem_alloc (n + 1);
    memcpy (p, s, n + 1);
    return p;
}

void
secmem_free_str (char **p)
{
    if (p && *p) {
        secmem_free (*p);
        *p = NULL;
    }
}

size_t
secmem_in_use (void)
{
    pthread_mutex_lock (&secmem_lock);
    size_t n = secmem_used;
    pthread_mutex_unlock (&secmem_lock);
    return n;
}
