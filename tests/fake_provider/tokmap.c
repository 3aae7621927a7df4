/* tokmap.c - chained hash table that doubles when the load factor passes one */
#include "tokmap.h"
#include "mem.h"
#include <stdint.h>
#include <string.h>

typedef struct tokmap_entry_t {
    const char            *key;      /* borrowed from the value */
    void                  *value;
    uint64_t               hash;
    struct tokmap_entry_t *next;
} tokmap_entry_t;

struct tokmap_t {
    tokmap_entry_t **buckets;
    size_t           nbuckets;       /* power of two */
    size_t           size;
};

static uint64_t
fnv1a (const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char) *s;
        h *= 1099511628211ULL;
    }
    return h;
}

tokmap_t *
tokmap_new (void)
{
    tokmap_t *map = mem_alloc (sizeof *map);
    map->nbuckets = 1024;
    map->buckets = mem_alloc (map->nbuckets * sizeof *map->buckets);
    return map;
}

void
tokmap_destroy (tokmap_t **p, void (*free_value) (void *value))
{
    if (!p || !*p)
        return;
    tokmap_t *map = *p;
    for (size_t i = 0; i < map->nbuckets; i++) {
        tokmap_entry_t *e = map->buckets [i];
        while (e) {
            tokmap_entry_t *next = e->next;
            if (free_value)
                free_value (e->value);
            mem_free (e);
            e = next;
        }
    }
    mem_free (map->buckets);
    mem_free (map);
    *p = NULL;
}

static void
grow (tokmap_t *map)
{
    size_t nbuckets = map->nbuckets * 2;
    tokmap_entry_t **buckets = mem_alloc (nbuckets * sizeof *buckets);
    for (size_t i = 0; i < map->nbuckets; i++) {
        tokmap_entry_t *e = map->buckets [i];
        while (e) {
            tokmap_entry_t *next = e->next;
            size_t slot = e->hash & (nbuckets - 1);
            e->next = buckets [slot];
            buckets [slot] = e;
            e = next;
        }
    }
    mem_free (map->buckets);
    map->buckets = buckets;
    map->nbuckets = nbuckets;
}

void
tokmap_put (tokmap_t *map, const char *key, void *value)
{
    uint64_t hash = fnv1a (key);
    size_t slot = hash & (map->nbuckets - 1);
    for (tokmap_entry_t *e = map->buckets [slot]; e; e = e->next)
        if (e->hash == hash && strcmp (e->key, key) == 0) {
            e->key = key;
            e->value = value;
            return;
        }
    tokmap_entry_t *e = mem_alloc (sizeof *e);
    e->key = key;
    e->value = value;
    e->hash = hash;
    e->next = map->buckets [slot];
    map->buckets [slot] = e;
    if (++map->size > map->nbuckets)
        grow (map);
}

void *
tokmap_get (const tokmap_t *map, const char *key)
{
    uint64_t hash = fnv1a (key);
    for (tokmap_entry_t *e = map->buckets [hash & (map->nbuckets - 1)]; e; e = e->next)
        if (e->hash == hash && strcmp (e->key, key) == 0)
            return e->value;
    return NULL;
}

size_t
tokmap_size (const tokmap_t *map)
{
    return map->size;
}
