/* log.h - level-gated JSON-lines logging on stderr; every line carries its context */
#ifndef FERRULE_LOG_H
#define FERRULE_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_FATAL } log_level_t;

extern log_level_t log_min_level;

/* process: "broker", "worker", ...; instance: worker id or bind address (may be NULL) */
void log_init (const char *process, const char *instance);
/* Parses "debug", "info", "warning", "error"; returns -1 on anything else. */
int  log_set_level_name (const char *name);

/* integration and request may be NULL. Never pass a secret in the format arguments. */
void log_write (log_level_t level, const char *integration, const char *request,
                const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

#define LOG_AT(lvl, integ, req, ...) \
    do { if ((lvl) >= log_min_level) log_write ((lvl), (integ), (req), __VA_ARGS__); } while (0)
#define log_debug(integ, req, ...)   LOG_AT (LOG_DEBUG, integ, req, __VA_ARGS__)
#define log_info(integ, req, ...)    LOG_AT (LOG_INFO, integ, req, __VA_ARGS__)
#define log_warning(integ, req, ...) LOG_AT (LOG_WARNING, integ, req, __VA_ARGS__)
#define log_error(integ, req, ...)   LOG_AT (LOG_ERROR, integ, req, __VA_ARGS__)
#endif
