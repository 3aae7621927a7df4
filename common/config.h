/* config.h - configuration as one table: environment first, then flags override */
#ifndef FERRULE_CONFIG_H
#define FERRULE_CONFIG_H
#include <stddef.h>
#include <stdint.h>

typedef enum { CONFIG_STRING, CONFIG_INT } config_type_t;

typedef struct {
    const char   *flag;        /* "frontend" for --frontend */
    const char   *env;         /* "FERRULE_FRONTEND_BIND", or NULL */
    config_type_t type;
    void         *target;      /* char ** (owned, freed by config_free) or int64_t * */
    const char   *def;         /* default as text, NULL for none */
    int64_t       min, max;    /* bounds for CONFIG_INT */
    int           secret;      /* masked when printed; also read from env_FILE, and removed from
                                  the environment once read (CONFIG_STRING only) */
    const char   *help;
} config_entry_t;

#define CONFIG_END { NULL, NULL, CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL }

/* Fills every target from defaults, the environment and argv (--flag VALUE or --flag=VALUE).
 * Returns 0, 1 when --help was printed (caller exits 0), -1 with a reason in err. */
int  config_load (const config_entry_t *table, const char *program, int argc, char **argv,
                  char *err, size_t errlen);
/* One log line with every setting, secrets masked. */
void config_log (const config_entry_t *table);
void config_free (const config_entry_t *table);
#endif
