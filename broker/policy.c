/* policy.c - per-client rules: an operation mask and integration-id patterns */
#include "policy.h"
#include "ident.h"
#include "keys.h"
#include "mem.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_MAX_FILE (16u << 20)

typedef struct {
    char name [KEYS_MAX_NAME + 1];
    uint32_t ops;                       /* bit per op_t */
    char **patterns;
    size_t npatterns;
} policy_rule_t;

struct policy {
    policy_rule_t *rules;               /* sorted by name: a client's rules are adjacent */
    size_t count;
};

int
policy_match (const char *pattern, const char *s, size_t len)
{
    const char *star = NULL;
    size_t i = 0, resume = 0;
    while (i < len) {
        if (*pattern == '*') {
            star = pattern++;
            resume = i;
        }
        else
        if (*pattern && *pattern == s [i]) {
            pattern++;
            i++;
        }
        else
        if (star) {
            pattern = star + 1;
            i = ++resume;
        }
        else
            return 0;
    }
    while (*pattern == '*')
        pattern++;
    return *pattern == '\0';
}

/* Parses "read,import" into a mask; 0 with the unknown word in bad. */
static uint32_t
policy_ops (char *list, char *bad, size_t badlen)
{
    uint32_t mask = 0;
    for (char *save = NULL, *w = strtok_r (list, ",", &save); w; w = strtok_r (NULL, ",", &save)) {
        if (strcmp (w, "*") == 0)
            mask |= ((1u << OP__COUNT) - 1) & ~1u;
        else
        if (strcmp (w, "read") == 0 || strcmp (w, "admin") == 0) {
            for (int op = 1; op < OP__COUNT; op++)
                if (ops_is_read ((op_t) op) == (w [0] == 'r'))
                    mask |= 1u << op;
        }
        else {
            op_t op = ops_lookup (w, strlen (w));
            if (op == OP_UNKNOWN) {
                snprintf (bad, badlen, "%.40s", w);
                return 0;
            }
            mask |= 1u << op;
        }
    }
    return mask;
}

static int
policy_cmp (const void *a, const void *b)
{
    return strcmp (((const policy_rule_t *) a)->name, ((const policy_rule_t *) b)->name);
}

static void
policy_rule_clear (policy_rule_t *r)
{
    for (size_t i = 0; i < r->npatterns; i++)
        mem_free (r->patterns [i]);
    mem_free (r->patterns);
}

policy_t *
policy_load (const char *path, char *err, size_t errlen)
{
    policy_t *p = mem_alloc (sizeof *p);
    char *text = NULL;
    size_t cap = 0, lineno = 0;
    FILE *f = fopen (path, "r");
    if (!f) {
        snprintf (err, errlen, "could not read the policy file \"%s\": %s", path, strerror (errno));
        goto fail;
    }
    text = mem_alloc (POLICY_MAX_FILE + 1);
    size_t n = fread (text, 1, POLICY_MAX_FILE + 1, f);
    if (ferror (f)) {
        /* a directory (EISDIR), an I/O error: what was read is no policy, nor the start of one */
        snprintf (err, errlen, "could not read the policy file \"%s\": %s", path, strerror (errno));
        fclose (f);
        goto fail;
    }
    fclose (f);
    if (n > POLICY_MAX_FILE) {
        snprintf (err, errlen, "the policy file \"%s\" is larger than %u MiB", path, POLICY_MAX_FILE >> 20);
        goto fail;
    }
    text [n] = '\0';
    /* every line counted, blank ones too: a message names the line an editor shows */
    for (char *line = text, *next; line; line = next) {
        next = strchr (line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr (line, '#');
        if (hash)
            *hash = '\0';
        char *words [POLICY_MAX_PATTERNS + 3];
        size_t nw = 0;
        for (char *wsave = NULL, *w = strtok_r (line, " \t\r", &wsave); w; w = strtok_r (NULL, " \t\r", &wsave)) {
            if (nw == POLICY_MAX_PATTERNS + 2) {
                snprintf (err, errlen, "policy file \"%s\", line %zu: more than %d patterns", path, lineno, POLICY_MAX_PATTERNS);
                goto fail;
            }
            words [nw++] = w;
        }
        if (nw == 0)
            continue;
        if (nw < 3) {
            snprintf (err, errlen, "policy file \"%s\", line %zu: expected \"CLIENT OPERATIONS PATTERN...\"", path, lineno);
            goto fail;
        }
        if (strlen (words [0]) > KEYS_MAX_NAME || !ident_valid (words [0], strlen (words [0]))) {
            snprintf (err, errlen, "policy file \"%s\", line %zu: \"%.80s\" is not a client name (1 to %d characters "
                      "of A-Z a-z 0-9 . _ : -)", path, lineno, words [0], KEYS_MAX_NAME);
            goto fail;
        }
        char bad [48] = "";
        uint32_t ops = policy_ops (words [1], bad, sizeof bad);
        if (!ops) {
            snprintf (err, errlen, "policy file \"%s\", line %zu: unknown operation \"%s\"; use operation names, "
                      "\"read\", \"admin\" or \"*\"", path, lineno, bad);
            goto fail;
        }
        for (size_t i = 2; i < nw; i++) {
            size_t len = strlen (words [i]);
            int ok = len >= 1 && len <= IDENT_MAX;
            for (size_t j = 0; ok && j < len; j++)
                ok = words [i][j] == '*' || ident_valid (&words [i][j], 1);
            if (!ok) {
                snprintf (err, errlen, "policy file \"%s\", line %zu: pattern \"%.140s\" may hold only "
                          "A-Z a-z 0-9 . _ : - and *", path, lineno, words [i]);
                goto fail;
            }
        }
        if (p->count == POLICY_MAX_RULES) {
            snprintf (err, errlen, "policy file \"%s\" has more than %d rules", path, POLICY_MAX_RULES);
            goto fail;
        }
        if (p->count == cap) {
            cap = cap ? cap * 2 : 16;
            p->rules = mem_realloc (p->rules, cap * sizeof *p->rules);
        }
        policy_rule_t *r = &p->rules [p->count++];
        memset (r, 0, sizeof *r);
        snprintf (r->name, sizeof r->name, "%s", words [0]);
        r->ops = ops;
        r->npatterns = nw - 2;
        r->patterns = mem_alloc (r->npatterns * sizeof *r->patterns);
        for (size_t i = 2; i < nw; i++)
            r->patterns [i - 2] = mem_strdup (words [i]);
    }
    if (p->count)
        qsort (p->rules, p->count, sizeof *p->rules, policy_cmp);
    mem_free (text);
    return p;
fail:
    mem_free (text);
    policy_destroy (&p);
    return NULL;
}

void
policy_destroy (policy_t **p_p)
{
    if (p_p && *p_p) {
        policy_t *p = *p_p;
        for (size_t i = 0; i < p->count; i++)
            policy_rule_clear (&p->rules [i]);
        mem_free (p->rules);
        mem_free (p);
        *p_p = NULL;
    }
}

int
policy_allows (const policy_t *p, const char *client, op_t op, const char *integ, size_t integ_len)
{
    if (!p || !client || op == OP_UNKNOWN)
        return 0;
    /* the first rule of this client: lower bound by name */
    size_t lo = 0, hi = p->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp (p->rules [mid].name, client) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* a workspace is an id prefix, and reaches every id that starts with it: a pattern allows it
     * when it matches all of them, which for a glob of "*" alone means one that ends with "*" and
     * matches the prefix (the star takes whatever follows) */
    int workspace = ops_takes_workspace (op);
    for (size_t i = lo; i < p->count && strcmp (p->rules [i].name, client) == 0; i++) {
        const policy_rule_t *r = &p->rules [i];
        if (!(r->ops & (1u << op)))
            continue;
        if (!integ)
            return 1;
        for (size_t j = 0; j < r->npatterns; j++) {
            const char *pat = r->patterns [j];
            if (workspace && (!*pat || pat [strlen (pat) - 1] != '*'))
                continue;
            if (policy_match (pat, integ, integ_len))
                return 1;
        }
    }
    return 0;
}

size_t
policy_rules (const policy_t *p)
{
    return p ? p->count : 0;
}
