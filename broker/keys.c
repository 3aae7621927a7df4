/* keys.c - allow-lists of CURVE public keys, each bound to a name (open-addressing hash) */
#include "keys.h"
#include "curve.h"
#include "ident.h"
#include "mem.h"
#include "ring.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define KEYS_MAX_FILE (16u << 20)

typedef struct {
    char key [CURVE_Z85_LEN + 1];       /* "" for a free slot */
    char name [KEYS_MAX_NAME + 1];
} keys_entry_t;

typedef struct {
    keys_entry_t *slots;
    size_t nslots;                      /* power of two, at least twice count */
    size_t count;
} keys_list_t;

struct keys {
    keys_list_t list [2];
};

static keys_entry_t *
keys_slot (const keys_list_t *l, const char *z85)
{
    if (!l->nslots)
        return NULL;
    for (size_t i = ring_hash (z85, strlen (z85)) & (l->nslots - 1);; i = (i + 1) & (l->nslots - 1))
        if (!l->slots [i].key [0] || strcmp (l->slots [i].key, z85) == 0)
            return &l->slots [i];
}

/* Parses one file into l. 0, or -1 with a reason. */
static int
keys_parse (keys_list_t *l, const char *path, const char *what, char *err, size_t errlen)
{
    char *text = NULL;
    int rc = -1;
    size_t n = 0, lineno = 0, entries = 0;
    FILE *f = fopen (path, "r");
    if (!f) {
        snprintf (err, errlen, "could not read the %s file \"%s\": %s", what, path, strerror (errno));
        return -1;
    }
    text = mem_alloc (KEYS_MAX_FILE + 1);
    n = fread (text, 1, KEYS_MAX_FILE + 1, f);
    if (ferror (f)) {
        /* a directory (EISDIR), an I/O error: what was read is no list, nor the start of one */
        snprintf (err, errlen, "could not read the %s file \"%s\": %s", what, path, strerror (errno));
        fclose (f);
        goto out;
    }
    fclose (f);
    if (n > KEYS_MAX_FILE) {
        snprintf (err, errlen, "the %s file \"%s\" is larger than %u MiB", what, path, KEYS_MAX_FILE >> 20);
        goto out;
    }
    text [n] = '\0';
    for (size_t i = 0; i < n; i++)
        entries += text [i] == '\n';
    entries++;
    if (entries > KEYS_MAX_ENTRIES)
        entries = KEYS_MAX_ENTRIES;
    l->nslots = 16;
    while (l->nslots < entries * 2)
        l->nslots *= 2;
    l->slots = mem_alloc (l->nslots * sizeof *l->slots);
    /* every line counted, blank ones too: a message names the line an editor shows */
    for (char *line = text, *next; line; line = next) {
        next = strchr (line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#' || *p == '\r')
            continue;
        char name [KEYS_MAX_NAME + 2], key [CURVE_Z85_LEN + 2], extra [2];
        int fields = sscanf (p, "%65s %41s %1s", name, key, extra);
        if (fields != 2 || strlen (name) > KEYS_MAX_NAME || !ident_valid (name, strlen (name))) {
            snprintf (err, errlen, "%s file \"%s\", line %zu: expected \"NAME KEY\": a name of 1 to %d characters of "
                      "A-Z a-z 0-9 . _ : - and a 40-character Z85 public key", what, path, lineno, KEYS_MAX_NAME);
            goto out;
        }
        if (!curve_key_valid (key)) {
            snprintf (err, errlen, "%s file \"%s\", line %zu: the key of \"%s\" is not 40 characters of Z85 "
                      "(use the .pub file \"ferrulectl keygen\" wrote)", what, path, lineno, name);
            goto out;
        }
        if (l->count + 1 > KEYS_MAX_ENTRIES || (l->count + 1) * 2 > l->nslots) {
            snprintf (err, errlen, "%s file \"%s\" has more than %d entries", what, path, KEYS_MAX_ENTRIES);
            goto out;
        }
        keys_entry_t *e = keys_slot (l, key);
        if (e->key [0]) {
            snprintf (err, errlen, "%s file \"%s\", line %zu: the key of \"%s\" is already listed for \"%s\"",
                      what, path, lineno, name, e->name);
            goto out;
        }
        memcpy (e->key, key, sizeof e->key);
        memcpy (e->name, name, strlen (name) + 1);        /* at most KEYS_MAX_NAME: checked above */
        l->count++;
    }
    rc = 0;
out:
    mem_free (text);
    return rc;
}

keys_t *
keys_load (const char *clients_file, const char *workers_file, char *err, size_t errlen)
{
    keys_t *k = mem_alloc (sizeof *k);
    if ((clients_file && keys_parse (&k->list [KEYS_CLIENTS], clients_file, "clients", err, errlen) != 0)
    ||  (workers_file && keys_parse (&k->list [KEYS_WORKERS], workers_file, "workers", err, errlen) != 0))
        keys_destroy (&k);
    return k;
}

void
keys_destroy (keys_t **k_p)
{
    if (k_p && *k_p) {
        mem_free ((*k_p)->list [0].slots);
        mem_free ((*k_p)->list [1].slots);
        mem_free (*k_p);
        *k_p = NULL;
    }
}

const char *
keys_name (const keys_t *k, keys_kind_t kind, const char *z85)
{
    if (!k || !z85 || strlen (z85) != CURVE_Z85_LEN)
        return NULL;
    keys_entry_t *e = keys_slot (&k->list [kind], z85);
    return e && e->key [0] ? e->name : NULL;
}

size_t
keys_count (const keys_t *k, keys_kind_t kind)
{
    return k ? k->list [kind].count : 0;
}
