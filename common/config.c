/* config.c - table-driven configuration (pgbouncer CF_ABS, redis standardConfig) */
#include "config.h"
#include "log.h"
#include "mem.h"
#include "secrets.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
config_set (const config_entry_t *e, const char *value, const char *source, char *err, size_t errlen)
{
    if (e->type == CONFIG_STRING) {
        char **t = e->target;
        if (e->secret)
            mem_free_secret (t);        /* an environment value a flag replaces */
        else
            mem_free (*t);
        *t = value ? mem_strdup (value) : NULL;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long v = value ? strtoll (value, &end, 10) : 0;
    if (!value || errno || end == value || *end != '\0' || v < e->min || v > e->max) {
        snprintf (err, errlen, "invalid value for %s from %s: expected an integer from %lld to %lld",
                  e->env ? e->env : e->flag, source, (long long) e->min, (long long) e->max);
        return -1;
    }
    *(int64_t *) e->target = v;
    return 0;
}

static void
config_usage (const config_entry_t *table, const char *program)
{
    printf ("usage: %s [options]\n\noptions (environment variable, default):\n", program);
    for (const config_entry_t *e = table; e->flag; e++)
        printf ("  --%-22s %s (%s, default %s)\n", e->flag, e->help ? e->help : "",
                e->env ? e->env : "-", e->def ? (e->secret ? "***" : e->def) : "none");
}

int
config_load (const config_entry_t *table, const char *program, int argc, char **argv,
             char *err, size_t errlen)
{
    for (const config_entry_t *e = table; e->flag; e++) {
        char *secret = NULL;
        if (e->type == CONFIG_STRING)
            *(char **) e->target = NULL;
        if (e->secret && e->env) {
            /* NAME or NAME_FILE, and neither stays in the environment */
            if (secrets_from_env (e->env, &secret, err, errlen) != 0)
                return -1;
            if (secret || e->def)
                (void) config_set (e, secret ? secret : e->def, e->env, err, errlen);
            mem_free_secret (&secret);
            continue;
        }
        const char *env = e->env ? getenv (e->env) : NULL;
        const char *value = env && *env ? env : e->def;
        if ((value || e->type == CONFIG_INT)
        &&   config_set (e, value ? value : "0", env && *env ? e->env : "the default", err, errlen) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "--help") == 0 || strcmp (arg, "-h") == 0) {
            config_usage (table, program);
            return 1;
        }
        if (strncmp (arg, "--", 2) != 0) {
            /* named by its place, not quoted: a connection string passed unquoted leaves its
             * "password=..." here, and this message is logged */
            snprintf (err, errlen, "unexpected argument %d (not an option, and no option before it takes it): "
                      "quote a value that holds spaces; see --help", i);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr (name, '=');
        size_t nlen = eq ? (size_t) (eq - name) : strlen (name);
        const config_entry_t *e = table;
        while (e->flag && !(strlen (e->flag) == nlen && strncmp (e->flag, name, nlen) == 0))
            e++;
        if (!e->flag) {
            snprintf (err, errlen, "unknown option \"--%.*s\"; see --help", (int) nlen, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv [++i] : NULL);
        if (!value) {
            snprintf (err, errlen, "option \"--%s\" needs a value", e->flag);
            return -1;
        }
        char source [80];
        snprintf (source, sizeof source, "--%s", e->flag);
        if (config_set (e, value, source, err, errlen) != 0)
            return -1;
    }
    return 0;
}

void
config_log (const config_entry_t *table)
{
    char line [1800];
    size_t pos = 0;
    line [0] = '\0';
    for (const config_entry_t *e = table; e->flag && pos < sizeof line - 1; e++) {
        const char *shown;
        char num [32];
        if (e->type == CONFIG_INT) {
            snprintf (num, sizeof num, "%lld", (long long) *(int64_t *) e->target);
            shown = num;
        }
        else {
            const char *v = *(char **) e->target;
            shown = !v ? "(unset)" : e->secret ? "***" : v;
        }
        int n = snprintf (line + pos, sizeof line - pos, "%s%s=%s", pos ? " " : "", e->flag, shown);
        if (n > 0)
            pos += (size_t) n;
    }
    log_info (NULL, NULL, "configuration: %s", line);
}

void
config_free (const config_entry_t *table)
{
    for (const config_entry_t *e = table; e->flag; e++)
        if (e->type == CONFIG_STRING) {
            char **t = e->target;
            if (e->secret && *t)
                mem_free_secret (t);
            else {
                mem_free (*t);
                *t = NULL;
            }
        }
}
