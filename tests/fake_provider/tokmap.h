/* tokmap.h - string-keyed hash table for token lookup (tokens are random, so FNV-1a spreads them well) */
#ifndef FAKE_TOKMAP_H
#define FAKE_TOKMAP_H
#include <stddef.h>

typedef struct tokmap_t tokmap_t;

tokmap_t *tokmap_new (void);
/* Frees the table and, when free_value is not NULL, every value through it. */
void tokmap_destroy (tokmap_t **p, void (*free_value) (void *value));

/* Adds key -> value. The key is borrowed: it must live as long as the entry,
   which suits values that own their key. Replaces an equal key's value. */
void tokmap_put (tokmap_t *map, const char *key, void *value);
/* The value for key, or NULL. */
void *tokmap_get (const tokmap_t *map, const char *key);
size_t tokmap_size (const tokmap_t *map);
#endif
