/* harness_private.h - what the harness's files share: the harness itself, its child processes,
 * environments, and the helpers each file offers the others (prefix hx_). Private to
 * tests/integration/harness*.c. */
#ifndef FERRULE_HARNESS_PRIVATE_H
#define FERRULE_HARNESS_PRIVATE_H
#include "harness.h"
#include "curve.h"
#include "mem.h"
#include "testexit.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

extern char **environ;

/* Binary paths come from CMake ($<TARGET_FILE:...>); a target that did not exist when CMake ran
   leaves its macro undefined, and the harness says so when a test needs that binary. */
#ifdef HARNESS_BIN_BROKER
#   define BIN_BROKER HARNESS_BIN_BROKER
#else
#   define BIN_BROKER NULL
#endif
#ifdef HARNESS_BIN_WORKER
#   define BIN_WORKER HARNESS_BIN_WORKER
#else
#   define BIN_WORKER NULL
#endif
#ifdef HARNESS_BIN_CTL
#   define BIN_CTL HARNESS_BIN_CTL
#else
#   define BIN_CTL NULL
#endif
#ifdef HARNESS_BIN_MIGRATE
#   define BIN_MIGRATE HARNESS_BIN_MIGRATE
#else
#   define BIN_MIGRATE NULL
#endif
#ifdef HARNESS_BIN_FAKE
#   define BIN_FAKE HARNESS_BIN_FAKE
#else
#   define BIN_FAKE NULL
#endif
#ifndef HARNESS_WORK_ROOT
#   define HARNESS_WORK_ROOT "/tmp/ferrule-it-work"
#endif

#define OUTPUT_MAX          (1024 * 1024)   /* ferrulectl stdout and fake provider replies */
#define CTL_TIMEOUT_MS      60000
#define MIGRATE_TIMEOUT_MS  120000
#define FAKE_START_MS       30000           /* ASan builds start slowly */
#define STOP_GRACE_MS       10000           /* harness_stop_worker, harness_restart_broker */
#define DESTROY_GRACE_MS    5000
#define DB_NAME_MAX         63              /* PostgreSQL's identifier limit */
#define CLIENT_ID           "ferrule-test-client"
#define CLIENT_SECRET       "ferrule-test-secret"
#define DB_COMMENT_PREFIX   "ferrule integration test, harness pid "   /* marks a harness database: stale ones are dropped */
#define RUNTIME_ROLE_PREFIX "frrt_"                 /* the runtime role of harness pid N: frrt_N[_serial] */
#define DEAD_BROKER         "tcp://127.0.0.1:9"    /* discard port: nothing answers there */

typedef enum { PROC_FAKE, PROC_BROKER, PROC_WORKER } proc_kind_t;

/* One child process the harness started, kept after it exits so it can be started again. */
typedef struct {
    proc_kind_t kind;
    char   *name;               /* "fake-provider", "broker0", or the worker id */
    char   *log_path;
    char  **argv;               /* NULL-terminated, owned */
    char  **envp;               /* NULL-terminated "NAME=value", owned */
    pid_t   pid;                /* 0 when not running */
    int     status;             /* exit status once reaped (128 + signal for a signal) */
} proc_t;

/* A growable NULL-terminated array of "NAME=value" strings. */
typedef struct {
    char  **items;
    size_t  count;
    size_t  cap;
} env_t;

struct harness_t {
    char   *name;
    char   *workdir;
    char   *admin_url;
    char   *dbname;
    char   *database_url;       /* as the schema owner (the cluster's superuser here) */
    char   *runtime_role;       /* the workers' role, set up by "ferrule-migrate grant-runtime" */
    char   *runtime_password;   /* runtime_role's: scripts/pg's clusters take no TCP login without one */
    char   *runtime_url;        /* database_url as runtime_role: what the workers use */
    char   *providers_file;
    char   *encryption_key;
    char   *keys_dir;           /* CURVE keys of this cluster: broker, clients, workers */
    char   *clients_file;
    char   *workers_file;
    char   *policy_file;
    char   *broker_pub;
    int     fake_port;
    env_t   extras;             /* harness_set_env, applied to brokers and workers */
    char   *worker_wrapper;     /* harness_set_worker_wrapper: runs each worker started after it */
    proc_t *fake;
    proc_t *brokers [HARNESS_MAX_BROKERS];
    char   *frontends [HARNESS_MAX_BROKERS];
    char   *backends [HARNESS_MAX_BROKERS];
    int     nbrokers;
    char   *brokers_csv;
    proc_t *workers [HARNESS_MAX_WORKERS];
    int     nworkers;
    PGconn *db;
    bool    curl_ready;
    pid_t   owner;              /* the test process; a forked copy must not tear down at exit */
    struct harness_t *next;     /* live harnesses, for the exit-time cleanup */
};

/* harness_proc.c */
void hx_env_apply (env_t *env, const env_t *from);
void hx_env_clear (env_t *env);
void hx_env_from_parent (env_t *env);
void hx_env_put (env_t *env, const char *name, const char *value);
char **hx_env_take (env_t *env);
int hx_mkdir_p (const char *path);
long long hx_now_ms (void);
void hx_proc_destroy (proc_t **p_p);
proc_t *hx_proc_new (proc_kind_t kind, const char *name, char *log_path, char **argv, char **envp);
bool hx_proc_reap (proc_t *p, int timeout_ms);
int hx_proc_start (proc_t *p);
int hx_proc_stop (proc_t *p, int grace_ms);
int hx_run_capture (char *const argv [], char *const envp [], const char *log_path, int timeout_ms, mem_buf_t *out, bool *too_large);
void hx_say (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void hx_sleep_ms (int ms);
char *hx_strfmt (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void hx_strv_free (char ***strv_p);
char **hx_strv_new (const char *first, va_list ap);
char **hx_strv_of (const char *first, ...);

/* harness_db.c */
char *hx_base64_encode (const unsigned char *data, size_t len);
int hx_create_database (harness_t *self);
void hx_drop_database (harness_t *self);
int hx_free_ports (int *ports, int count);
bool hx_need_binary (const char *path, const char *target);
int hx_random_bytes (unsigned char *buf, size_t len);
char *hx_sanitize_name (const char *name, size_t max);
char *hx_url_with_database (const char *url, const char *dbname);
char *hx_url_with_login (const char *url, const char *user, const char *password);
int hx_set_runtime_password (harness_t *self);

/* harness_keys.c */
int hx_add_key (harness_t *self, const char *list_file, const char *name, const char *prefix);
int hx_setup_keys (harness_t *self);

/* harness.c */
int hx_migrate (harness_t *self);
#endif
