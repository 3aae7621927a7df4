/* keys.h - the broker's allow-lists: which CURVE public keys may connect, and under what name
 *
 * Two files of the same form, one entry a line, "#" comments and blank lines allowed:
 *     NAME Z85PUBLICKEY
 * The clients file names clients (the name the policy file and the audit log use); the workers
 * file names workers, and a worker's name is the only worker id its key may use. NAME is 1 to 64
 * characters of A-Z a-z 0-9 . _ : -; a key appears at most once per file. */
#ifndef FERRULE_KEYS_H
#define FERRULE_KEYS_H
#include <stddef.h>

#define KEYS_MAX_NAME 64
#define KEYS_MAX_ENTRIES 100000

typedef struct keys keys_t;
typedef enum { KEYS_CLIENTS = 0, KEYS_WORKERS = 1 } keys_kind_t;

/* Loads both lists (a NULL path: an empty list). NULL with a reason naming file and line. */
keys_t *keys_load (const char *clients_file, const char *workers_file, char *err, size_t errlen);
void keys_destroy (keys_t **k_p);
/* The name bound to a key, given as 40 characters of Z85 (borrowed, NUL-terminated), or NULL. */
const char *keys_name (const keys_t *k, keys_kind_t kind, const char *z85);
/* Entries in a list. */
size_t keys_count (const keys_t *k, keys_kind_t kind);
#endif
