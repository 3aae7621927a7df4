/* secrets.h - how a process holds its secrets: no core dumps, values read from the environment
 * or from files (the form Kubernetes Secrets mount), and removed from the environment once read */
#ifndef FERRULE_SECRETS_H
#define FERRULE_SECRETS_H
#include <stddef.h>

#define SECRETS_MAX_FILE (64 * 1024)     /* longest secret file read */

/* Switches core dumps off for this process (RLIMIT_CORE 0, PR_SET_DUMPABLE 0, which also keeps
 * other processes of the same user from attaching or reading /proc/PID/mem). 0, or -1 with the
 * reason in err. */
int secrets_harden (char *err, size_t errlen);

/* Reads a secret file: at most SECRETS_MAX_FILE bytes, one trailing newline (or CRLF) dropped.
 * Returns a string the caller frees with mem_free_secret, or NULL with the reason in err (which
 * names the file and what to do, never its content). */
char *secrets_read_file (const char *path, const char *what, char *err, size_t errlen);

/* 1 when name is a name a secret's variable may have: 1 to max of A-Z 0-9 _, not starting with a
 * digit. What fails it may be a value put in a name's place: a message never quotes it. */
int secrets_env_name_valid (const char *name, size_t max);

/* The value of secret variable name, taken from name or from the file named by name_FILE;
 * afterwards both are removed from the environment. *value is NULL when neither is set (an
 * empty value counts as unset). Returns 0, or -1 with the reason in err when both are set or
 * the file cannot be read. The caller frees *value with mem_free_secret. */
int secrets_from_env (const char *name, char **value, char *err, size_t errlen);
/* A copy of an environment variable's secret value without a file's last newline ("\n" or
 * "\r\n"), as secrets_read_file drops it; NULL when nothing else is left. */
char *secrets_env_value (const char *text);
#endif
