/* harness.c - starts and stops the real processes an integration test needs (see harness.h) */
#include "harness.h"
#include "curve.h"
#include "mem.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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

static int setup_keys (harness_t *self);

static harness_t *s_live;           /* harnesses not yet destroyed */
static bool s_atexit_installed;
static int s_created;               /* harnesses made by this process, for unique names */

static void
say (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "harness: ");
    vfprintf (stderr, fmt, ap);
    fprintf (stderr, "\n");
    va_end (ap);
}

static char *
strfmt (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    int len = vsnprintf (NULL, 0, fmt, ap);
    va_end (ap);
    char *s = mem_alloc ((size_t) len + 1);
    va_start (ap, fmt);
    vsnprintf (s, (size_t) len + 1, fmt, ap);
    va_end (ap);
    return s;
}

static long long
now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int
mkdir_p (const char *path)
{
    char *copy = mem_strdup (path);
    int rc = 0;
    for (char *p = copy + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir (copy, 0755) == -1 && errno != EEXIST)
                rc = -1;
            *p = '/';
        }
    }
    if (mkdir (copy, 0755) == -1 && errno != EEXIST)
        rc = -1;
    mem_free (copy);
    return rc;
}

/* --- environments ---------------------------------------------------------------------------- */

static void
env_put (env_t *env, const char *name, const char *value)
{
    size_t nlen = strlen (name);
    for (size_t i = 0; i < env->count; ) {
        if (strncmp (env->items [i], name, nlen) == 0 && env->items [i][nlen] == '=') {
            mem_free (env->items [i]);
            memmove (&env->items [i], &env->items [i + 1], (env->count - i - 1) * sizeof (char *));
            env->count--;
            env->items [env->count] = NULL;
        }
        else
            i++;
    }
    if (!value)
        return;
    if (env->count + 2 > env->cap) {
        env->cap = env->cap ? env->cap * 2 : 64;
        env->items = mem_realloc (env->items, env->cap * sizeof (char *));
    }
    env->items [env->count++] = strfmt ("%s=%s", name, value);
    env->items [env->count] = NULL;
}

/* Applies every entry of from (NAME=value strings) onto env. */
static void
env_apply (env_t *env, const env_t *from)
{
    for (size_t i = 0; i < from->count; i++) {
        const char *eq = strchr (from->items [i], '=');
        char *name = mem_strndup (from->items [i], (size_t) (eq - from->items [i]));
        env_put (env, name, eq + 1);
        mem_free (name);
    }
}

static void
env_from_parent (env_t *env)
{
    memset (env, 0, sizeof *env);
    env->cap = 64;
    env->items = mem_alloc (env->cap * sizeof (char *));
    for (char **e = environ; *e; e++) {
        const char *eq = strchr (*e, '=');
        if (!eq)
            continue;
        char *name = mem_strndup (*e, (size_t) (eq - *e));
        env_put (env, name, eq + 1);
        mem_free (name);
    }
}

/* Hands the NULL-terminated array over to the caller; env is left empty. */
static char **
env_take (env_t *env)
{
    if (!env->items) {
        env->items = mem_alloc (sizeof (char *));
    }
    char **items = env->items;
    memset (env, 0, sizeof *env);
    return items;
}

static void
env_clear (env_t *env)
{
    for (size_t i = 0; i < env->count; i++)
        mem_free (env->items [i]);
    mem_free (env->items);
    memset (env, 0, sizeof *env);
}

static void
strv_free (char ***strv_p)
{
    if (!*strv_p)
        return;
    for (char **s = *strv_p; *s; s++)
        mem_free (*s);
    mem_free (*strv_p);
    *strv_p = NULL;
}

static char **
strv_new (const char *first, va_list ap)
{
    size_t n = 0, cap = 8;
    char **v = mem_alloc (cap * sizeof (char *));
    for (const char *s = first; s; s = va_arg (ap, const char *)) {
        if (n + 2 > cap) {
            cap *= 2;
            v = mem_realloc (v, cap * sizeof (char *));
        }
        v [n++] = mem_strdup (s);
    }
    v [n] = NULL;
    return v;
}

static char **
strv_of (const char *first, ...)
{
    va_list ap;
    va_start (ap, first);
    char **v = strv_new (first, ap);
    va_end (ap);
    return v;
}

/* --- child processes ------------------------------------------------------------------------- */

/* A pipe whose ends are closed on exec (pipe2 needs _GNU_SOURCE). */
static int
pipe_cloexec (int fds [2])
{
    if (pipe (fds) == -1)
        return -1;
    fcntl (fds [0], F_SETFD, FD_CLOEXEC);
    fcntl (fds [1], F_SETFD, FD_CLOEXEC);
    return 0;
}

static int
status_code (int wstatus)
{
    if (WIFEXITED (wstatus))
        return WEXITSTATUS (wstatus);
    if (WIFSIGNALED (wstatus))
        return 128 + WTERMSIG (wstatus);
    return -1;
}

/* Starts argv[0] with envp, stdin from /dev/null, stderr to log_path (appended) and stdout to
   stdout_fd, or to the log when stdout_fd is -1. The child dies with the test process
   (PR_SET_PDEATHSIG), so a crashing test leaves nothing running. Returns the pid or -1. */
static pid_t
spawn (char *const argv [], char *const envp [], const char *log_path, int stdout_fd)
{
    int log_fd = -1, null_fd = -1, err_pipe [2] = { -1, -1 };
    pid_t pid = -1;
    pid_t parent = getpid ();

    log_fd = open (log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd == -1) {
        say ("could not open log \"%s\": %s", log_path, strerror (errno));
        goto out;
    }
    null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd == -1 || pipe_cloexec (err_pipe) == -1) {
        say ("could not prepare to start \"%s\": %s", argv [0], strerror (errno));
        goto out;
    }
    fflush (NULL);
    pid = fork ();
    if (pid == -1) {
        say ("could not start \"%s\": %s", argv [0], strerror (errno));
        goto out;
    }
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent)
            _exit (127);            /* the test died before prctl took effect */
        sigset_t none;
        sigemptyset (&none);
        sigprocmask (SIG_SETMASK, &none, NULL);
        signal (SIGPIPE, SIG_DFL);
        signal (SIGINT, SIG_DFL);
        signal (SIGTERM, SIG_DFL);
        if (dup2 (null_fd, 0) == -1
            || dup2 (stdout_fd >= 0 ? stdout_fd : log_fd, 1) == -1
            || dup2 (log_fd, 2) == -1)
            _exit (127);
        /* Sockets of the test (libpq, curl) must not leak into the child. */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != err_pipe [1])
                close (fd);
        execve (argv [0], argv, envp);
        int e = errno;
        if (write (err_pipe [1], &e, sizeof e) < 0)
            _exit (127);
        _exit (127);
    }
    close (err_pipe [1]);
    err_pipe [1] = -1;
    int child_errno = 0;
    ssize_t n;
    while ((n = read (err_pipe [0], &child_errno, sizeof child_errno)) == -1 && errno == EINTR)
        ;
    if (n > 0) {
        say ("could not run \"%s\": %s", argv [0], strerror (child_errno));
        waitpid (pid, NULL, 0);
        pid = -1;
    }
out:
    if (log_fd != -1)
        close (log_fd);
    if (null_fd != -1)
        close (null_fd);
    if (err_pipe [0] != -1)
        close (err_pipe [0]);
    if (err_pipe [1] != -1)
        close (err_pipe [1]);
    return pid;
}

/* Reaps the process if it has exited, waiting up to timeout_ms. True once it is gone. */
static bool
proc_reap (proc_t *p, int timeout_ms)
{
    if (!p || p->pid <= 0)
        return true;
    long long deadline = now_ms () + timeout_ms;
    for (;;) {
        int wstatus;
        pid_t r = waitpid (p->pid, &wstatus, WNOHANG);
        if (r == p->pid) {
            p->status = status_code (wstatus);
            p->pid = 0;
            return true;
        }
        /* Not our child: a test forked and calls the harness from the copy. Only the test
           process can reap; here "gone" means the process no longer exists. */
        if (r == -1 && errno == ECHILD && kill (p->pid, 0) == -1 && errno == ESRCH) {
            p->status = -1;
            p->pid = 0;
            return true;
        }
        if (now_ms () >= deadline)
            return false;
        sleep_ms (10);
    }
}

static int
proc_start (proc_t *p)
{
    pid_t pid = spawn (p->argv, p->envp, p->log_path, -1);
    if (pid < 0)
        return -1;
    p->pid = pid;
    p->status = -1;
    return 0;
}

/* SIGTERM, then SIGKILL after grace_ms. Returns the exit status, or -1 if it was not running. */
static int
proc_stop (proc_t *p, int grace_ms)
{
    if (!p || p->pid <= 0)
        return -1;
    kill (p->pid, SIGTERM);
    if (!proc_reap (p, grace_ms)) {
        say ("%s did not stop within %d ms of SIGTERM: killing it (see %s)", p->name, grace_ms,
             p->log_path);
        kill (p->pid, SIGKILL);
        proc_reap (p, 60000);
    }
    return p->status;
}

static proc_t *
proc_new (proc_kind_t kind, const char *name, char *log_path, char **argv, char **envp)
{
    proc_t *p = mem_alloc (sizeof *p);
    p->kind = kind;
    p->name = mem_strdup (name);
    p->log_path = log_path;
    p->argv = argv;
    p->envp = envp;
    p->status = -1;
    return p;
}

static void
proc_destroy (proc_t **p_p)
{
    proc_t *p = *p_p;
    if (!p)
        return;
    if (p->pid > 0) {
        kill (p->pid, SIGKILL);
        proc_reap (p, 60000);
    }
    mem_free (p->name);
    mem_free (p->log_path);
    strv_free (&p->argv);
    strv_free (&p->envp);
    mem_free (p);
    *p_p = NULL;
}

/* Runs argv to completion with stdout captured (capped), stderr appended to log_path. Returns
   the exit status, or -1 if it could not run or was killed after timeout_ms. *out (may be NULL)
   gets the output; *too_large is set when it passed OUTPUT_MAX. */
static int
run_capture (char *const argv [], char *const envp [], const char *log_path, int timeout_ms,
             mem_buf_t *out, bool *too_large)
{
    int fds [2];
    if (pipe_cloexec (fds) == -1) {
        say ("could not create a pipe: %s", strerror (errno));
        return -1;
    }
    pid_t pid = spawn (argv, envp, log_path, fds [1]);
    close (fds [1]);
    if (pid < 0) {
        close (fds [0]);
        return -1;
    }
    long long deadline = now_ms () + timeout_ms;
    bool timed_out = false;
    char chunk [16384];
    for (;;) {
        long long left = deadline - now_ms ();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = { fds [0], POLLIN, 0 };
        int r = poll (&pfd, 1, (int) left);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            timed_out = r == 0;
            break;
        }
        ssize_t n = read (fds [0], chunk, sizeof chunk);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (out && mem_buf_append (out, chunk, (size_t) n) != 0 && too_large)
            *too_large = true;      /* keep draining so the child is not blocked */
    }
    mem_wipe (chunk, sizeof chunk);
    close (fds [0]);
    proc_t p = { .name = argv [0], .log_path = (char *) log_path, .pid = pid, .status = -1 };
    if (timed_out) {
        say ("\"%s\" did not finish within %d ms: killed it", argv [0], timeout_ms);
        kill (pid, SIGKILL);
        proc_reap (&p, 60000);
        return -1;
    }
    if (!proc_reap (&p, (int) (deadline - now_ms () > 0 ? deadline - now_ms () : 0))) {
        say ("\"%s\" did not exit within %d ms: killed it", argv [0], timeout_ms);
        kill (pid, SIGKILL);
        proc_reap (&p, 60000);
        return -1;
    }
    return p.status;
}

/* --- small helpers --------------------------------------------------------------------------- */

/* Lower-case letters, digits and "_" only, at most max characters. */
static char *
sanitize_name (const char *name, size_t max)
{
    size_t len = strlen (name);
    if (len > max)
        len = max;
    char *s = mem_alloc (len + 1);
    for (size_t i = 0; i < len; i++) {
        char c = name [i];
        if (c >= 'A' && c <= 'Z')
            c = (char) (c - 'A' + 'a');
        s [i] = ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    if (len == 0) {
        mem_free (s);
        s = mem_strdup ("test");
    }
    return s;
}

/* The admin URL with its database replaced by dbname. */
static char *
url_with_database (const char *url, const char *dbname)
{
    const char *scheme = strstr (url, "://");
    if (!scheme)
        return strfmt ("%s dbname=%s", url, dbname);   /* key=value connection string */
    const char *authority = scheme + 3;
    const char *slash = strchr (authority, '/');
    const char *query = strchr (authority, '?');
    if (slash && (!query || slash < query))
        return strfmt ("%.*s/%s%s", (int) (slash - url), url, dbname, query ? query : "");
    if (query)
        return strfmt ("%.*s/%s%s", (int) (query - url), url, dbname, query);
    return strfmt ("%s/%s", url, dbname);
}

/* url, connecting as user instead (a URI gets ?user=, which libpq lets win over the user part). */
static char *
url_with_user (const char *url, const char *user)
{
    if (!strstr (url, "://"))
        return strfmt ("%s user=%s", url, user);
    return strfmt ("%s%suser=%s", url, strchr (url, '?') ? "&" : "?", user);
}

static char *
base64_encode (const unsigned char *data, size_t len)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = mem_alloc ((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned) data [i] << 16;
        if (i + 1 < len)
            v |= (unsigned) data [i + 1] << 8;
        if (i + 2 < len)
            v |= data [i + 2];
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        out [o++] = i + 1 < len ? alphabet [(v >> 6) & 63] : '=';
        out [o++] = i + 2 < len ? alphabet [v & 63] : '=';
    }
    out [o] = '\0';
    return out;
}

static int
random_bytes (unsigned char *buf, size_t len)
{
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read (fd, buf + got, len - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    close (fd);
    return got == len ? 0 : -1;
}

/* A port on 127.0.0.1 that nothing listens on right now (the kernel's pick for port 0). The
   sockets stay open until all ports are chosen, so the ports differ. */
static int
free_ports (int *ports, int count)
{
    int fds [4] = { -1, -1, -1, -1 };
    int rc = 0;
    for (int i = 0; i < count && i < 4; i++) {
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
        socklen_t alen = sizeof addr;
        addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
        fds [i] = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds [i] == -1
            || bind (fds [i], (struct sockaddr *) &addr, sizeof addr) == -1
            || getsockname (fds [i], (struct sockaddr *) &addr, &alen) == -1) {
            say ("could not find a free port on 127.0.0.1: %s", strerror (errno));
            rc = -1;
            break;
        }
        ports [i] = ntohs (addr.sin_port);
    }
    for (int i = 0; i < 4; i++)
        if (fds [i] != -1)
            close (fds [i]);
    return rc;
}

/* NOTICEs such as "database does not exist, skipping" are noise in a test's output. */
static void
ignore_notice (void *arg, const char *message)
{
    (void) arg;
    (void) message;
}

static PGconn *
admin_connect (harness_t *self)
{
    PGconn *conn = PQconnectdb (self->admin_url);
    if (PQstatus (conn) != CONNECTION_OK) {
        say ("could not connect to the test cluster at \"%s\": %s", self->admin_url,
             PQerrorMessage (conn));
        PQfinish (conn);
        return NULL;
    }
    PQsetNoticeProcessor (conn, ignore_notice, NULL);
    return conn;
}

static int
exec_sql (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    int rc = 0;
    if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK) {
        say ("SQL failed: %s: %s", sql, PQresultErrorMessage (res));
        rc = -1;
    }
    PQclear (res);
    return rc;
}

#define DB_COMMENT_PREFIX "ferrule integration test, harness pid "

/* Drops the test databases of harness processes that no longer exist (a test killed by a
   timeout cannot drop its own), so the cluster does not fill up over many runs. */
static void
drop_stale_databases (PGconn *admin)
{
    PGresult *res = PQexec (admin,
        "SELECT datname, shobj_description (oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'ft\\_%'");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        PQclear (res);
        return;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *comment = PQgetvalue (res, i, 1);
        size_t plen = strlen (DB_COMMENT_PREFIX);
        if (PQgetisnull (res, i, 1) || strncmp (comment, DB_COMMENT_PREFIX, plen) != 0)
            continue;
        char *end;
        long pid = strtol (comment + plen, &end, 10);
        if (end == comment + plen || pid <= 0)
            continue;
        if (kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        char *quoted = PQescapeIdentifier (admin, PQgetvalue (res, i, 0), strlen (PQgetvalue (res, i, 0)));
        if (quoted) {
            char *sql = strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
            if (exec_sql (admin, sql) == 0)
                say ("dropped %s, left by a test process that no longer runs", quoted);
            mem_free (sql);
            PQfreemem (quoted);
        }
    }
    PQclear (res);
}

#define RUNTIME_ROLE_PREFIX "frrt_"

/* Drops the runtime roles of harness processes that no longer exist (roles are cluster-wide). */
static void
drop_stale_roles (PGconn *admin)
{
    PGresult *res = PQexec (admin, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'frrt\\_%'");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        PQclear (res);
        return;
    }
    for (int i = 0; i < PQntuples (res); i++) {
        const char *name = PQgetvalue (res, i, 0);
        long pid = strtol (name + strlen (RUNTIME_ROLE_PREFIX), NULL, 10);
        if (pid <= 0 || kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;
        char *quoted = PQescapeIdentifier (admin, name, strlen (name));
        if (quoted) {
            char *sql = strfmt ("DROP ROLE IF EXISTS %s", quoted);
            PGresult *r = PQexec (admin, sql);     /* fails while a database still grants it: later */
            PQclear (r);
            mem_free (sql);
            PQfreemem (quoted);
        }
    }
    PQclear (res);
}

static int
create_database (harness_t *self)
{
    PGconn *admin = admin_connect (self);
    if (!admin)
        return -1;
    drop_stale_databases (admin);
    drop_stale_roles (admin);
    int rc = -1;
    char *sql = NULL;
    char *quoted = PQescapeIdentifier (admin, self->dbname, strlen (self->dbname));
    if (!quoted)
        goto out;
    sql = strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
    if (exec_sql (admin, sql) != 0)
        goto out;
    mem_free (sql);
    sql = strfmt ("CREATE DATABASE %s", quoted);
    if (exec_sql (admin, sql) != 0)
        goto out;
    mem_free (sql);
    sql = strfmt ("COMMENT ON DATABASE %s IS '" DB_COMMENT_PREFIX "%ld'", quoted, (long) getpid ());
    if (exec_sql (admin, sql) != 0)
        goto out;
    rc = 0;
out:
    mem_free (sql);
    if (quoted)
        PQfreemem (quoted);
    PQfinish (admin);
    return rc;
}

static void
drop_database (harness_t *self)
{
    if (!self->dbname)
        return;
    PGconn *admin = admin_connect (self);
    if (!admin)
        return;
    char *quoted = PQescapeIdentifier (admin, self->dbname, strlen (self->dbname));
    if (quoted) {
        char *sql = strfmt ("DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
        (void) exec_sql (admin, sql);
        mem_free (sql);
        PQfreemem (quoted);
    }
    quoted = self->runtime_role ? PQescapeIdentifier (admin, self->runtime_role, strlen (self->runtime_role)) : NULL;
    if (quoted) {
        char *sql = strfmt ("DROP ROLE IF EXISTS %s", quoted);
        (void) exec_sql (admin, sql);
        mem_free (sql);
        PQfreemem (quoted);
    }
    PQfinish (admin);
}

static bool
need_binary (const char *path, const char *target)
{
    if (!path) {
        say ("%s was not built: its CMake target did not exist when the tree was configured", target);
        return false;
    }
    if (access (path, X_OK) != 0) {
        say ("%s is missing at \"%s\": build the tree first", target, path);
        return false;
    }
    return true;
}

/* --- setup ----------------------------------------------------------------------------------- */

static int
migrate (harness_t *self)
{
    if (!need_binary (BIN_MIGRATE, "ferrule-migrate"))
        return -1;
    env_t env;
    env_from_parent (&env);
    env_put (&env, "FERRULE_DATABASE_URL", self->database_url);
    char **envp = env_take (&env);
    char **argv = strv_of (BIN_MIGRATE, "up", "--database-url", self->database_url, NULL);
    char *log = strfmt ("%s/migrate.log", self->workdir);
    int status = run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, NULL, NULL);
    if (status != 0)
        say ("ferrule-migrate up failed (status %d): see %s", status, log);
    mem_free (log);
    strv_free (&argv);
    if (status == 0) {
        /* the workers run as a runtime role of their own, as in production */
        argv = strv_of (BIN_MIGRATE, "grant-runtime", self->runtime_role, NULL);
        log = strfmt ("%s/grant-runtime.log", self->workdir);
        status = run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, NULL, NULL);
        if (status != 0)
            say ("ferrule-migrate grant-runtime failed (status %d): see %s", status, log);
        mem_free (log);
        strv_free (&argv);
    }
    strv_free (&envp);
    return status == 0 ? 0 : -1;
}

static int
read_port_file (const char *path)
{
    char buf [32] = "";
    FILE *f = fopen (path, "r");
    if (!f)
        return 0;
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf [n] = '\0';
    char *end;
    long port = strtol (buf, &end, 10);
    if (end == buf || port <= 0 || port > 65535)
        return 0;
    while (*end == '\n' || *end == '\r' || *end == ' ')
        end++;
    return *end == '\0' ? (int) port : 0;
}

static int
start_fake (harness_t *self)
{
    if (!need_binary (BIN_FAKE, "ferrule-fake-provider"))
        return -1;
    char *port_file = strfmt ("%s/fake.port", self->workdir);
    unlink (port_file);
    env_t env;
    env_from_parent (&env);
    self->fake = proc_new (PROC_FAKE, "fake-provider", strfmt ("%s/fake-provider.log", self->workdir),
                           strv_of (BIN_FAKE, "--port", "0", "--port-file", port_file, NULL),
                           env_take (&env));
    int rc = -1;
    if (proc_start (self->fake) != 0)
        goto out;
    long long deadline = now_ms () + FAKE_START_MS;
    int previous = 0;
    while (now_ms () < deadline) {
        int port = read_port_file (port_file);
        /* the same value twice in a row: the file is complete */
        if (port > 0 && port == previous) {
            self->fake_port = port;
            rc = 0;
            goto out;
        }
        previous = port;
        if (proc_reap (self->fake, 0)) {
            say ("the fake provider exited with status %d before writing its port: see %s",
                 self->fake->status, self->fake->log_path);
            goto out;
        }
        sleep_ms (20);
    }
    say ("the fake provider wrote no port to %s within %d ms: see %s", port_file, FAKE_START_MS,
         self->fake->log_path);
out:
    mem_free (port_file);
    return rc;
}

static json_t *
provider_entry (int port, const char *name, const char *auth_method, const char *rotation)
{
    char *authorize = strfmt ("http://127.0.0.1:%d/%s/authorize", port, name);
    char *token = strfmt ("http://127.0.0.1:%d/%s/token", port, name);
    char *revoke = strfmt ("http://127.0.0.1:%d/%s/revoke", port, name);
    json_t *entry = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[], s:b}",
                               "authorization_url", authorize,
                               "token_url", token,
                               "revocation_url", revoke,
                               "auth_method", auth_method,
                               "refresh_token_rotation", rotation,
                               "client_id", CLIENT_ID,
                               "client_secret", CLIENT_SECRET,
                               "scope_separator", " ",
                               "default_scopes",
                               "pkce", 1);
    mem_free (authorize);
    mem_free (token);
    mem_free (revoke);
    return entry;
}

static int
write_providers (harness_t *self)
{
    json_t *root = json_object ();
    json_object_set_new (root, "fakebox",
                         provider_entry (self->fake_port, "fakebox", "client_secret_basic", "single_use"));
    json_object_set_new (root, "fakegoogle",
                         provider_entry (self->fake_port, "fakegoogle", "client_secret_post", "reusable"));
    self->providers_file = strfmt ("%s/providers.json", self->workdir);
    int rc = json_dump_file (root, self->providers_file, JSON_INDENT (2) | JSON_SORT_KEYS);
    json_decref (root);
    if (rc != 0) {
        say ("could not write %s: %s", self->providers_file, strerror (errno));
        return -1;
    }
    chmod (self->providers_file, 0600);     /* it holds the client secret */

    /* The fake provider behaves as the file describes. */
    static const struct { const char *name, *mode; } fake_modes [] = {
        { "fakebox", "single_use" }, { "fakegoogle", "reusable" }
    };
    for (size_t i = 0; i < sizeof fake_modes / sizeof fake_modes [0]; i++) {
        char *path = strfmt ("/admin/providers/%s", fake_modes [i].name);
        json_t *config = json_pack ("{s:s}", "mode", fake_modes [i].mode);
        json_t *reply = harness_fake (self, "PUT", path, config);
        json_decref (config);
        mem_free (path);
        if (!reply)
            return -1;
        json_decref (reply);
    }
    return 0;
}

static void
exit_cleanup (void)
{
    harness_t *h = s_live;
    if (h && h->owner != getpid ())
        return;                 /* a forked copy of the test that called exit () */
    while (s_live) {
        h = s_live;
        say ("destroying harness \"%s\", which the test did not destroy", h->name);
        harness_destroy (&h);
    }
}

harness_t *
harness_new (const char *name)
{
    const char *admin_url = getenv ("FERRULE_TEST_PG_ADMIN_URL");
    if (!admin_url || !*admin_url) {
        printf ("note: FERRULE_TEST_PG_ADMIN_URL is not set, so this integration test is skipped "
                "(scripts/test starts PostgreSQL and sets it)\n");
        fflush (stdout);
        exit (HARNESS_SKIP);
    }
    if (!s_atexit_installed) {
        atexit (exit_cleanup);
        s_atexit_installed = true;
    }

    harness_t *self = mem_alloc (sizeof *self);
    self->next = s_live;
    s_live = self;
    self->owner = getpid ();
    self->name = mem_strdup (name ? name : "test");
    self->admin_url = mem_strdup (admin_url);

    /* Names unique per test program and per harness within it. */
    int serial = s_created++;
    long pid = (long) getpid ();
    char *clean = sanitize_name (self->name, 40);
    if (serial == 0) {
        self->dbname = strfmt ("ft_%s_%ld", clean, pid);
        self->workdir = strfmt ("%s/%s-%ld", HARNESS_WORK_ROOT, self->name, pid);
    }
    else {
        self->dbname = strfmt ("ft_%s_%ld_%d", clean, pid, serial);
        self->workdir = strfmt ("%s/%s-%ld-%d", HARNESS_WORK_ROOT, self->name, pid, serial);
    }
    mem_free (clean);
    for (char *c = self->workdir + strlen (HARNESS_WORK_ROOT) + 1; *c; c++)
        if (*c == '/' || *c == ' ')
            *c = '_';
    if (mkdir_p (self->workdir) != 0) {
        say ("could not create the work folder \"%s\": %s", self->workdir, strerror (errno));
        goto fail;
    }
    self->database_url = url_with_database (self->admin_url, self->dbname);
    self->runtime_role = serial == 0 ? strfmt (RUNTIME_ROLE_PREFIX "%ld", pid)
                                     : strfmt (RUNTIME_ROLE_PREFIX "%ld_%d", pid, serial);
    self->runtime_url = url_with_user (self->database_url, self->runtime_role);

    env_put (&self->extras, "FERRULE_PARTITIONS", "64");
    /* The background sweep refreshes expired tokens on its own schedule: in a test that expires
     * a token and counts the provider calls its next request makes, a sweep pass in between
     * would make that call first. Tests of the sweep set their own interval. */
    env_put (&self->extras, "FERRULE_SWEEP_MS", "3600000");
    if (setup_keys (self) != 0)
        goto fail;

    unsigned char key [32];
    if (random_bytes (key, sizeof key) != 0) {
        say ("could not read /dev/urandom");
        goto fail;
    }
    self->encryption_key = base64_encode (key, sizeof key);
    mem_wipe (key, sizeof key);

    if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        say ("could not initialise libcurl");
        goto fail;
    }
    self->curl_ready = true;

    if (create_database (self) != 0 || migrate (self) != 0)
        goto fail;
    if (start_fake (self) != 0 || write_providers (self) != 0)
        goto fail;
    return self;
fail:
    say ("could not set up test \"%s\" (logs in %s)", self->name, self->workdir ? self->workdir : "?");
    harness_destroy (&self);
    return NULL;
}

/* --- keys ------------------------------------------------------------------------------------ */

/* Appends "line" to path; 0 or -1. */
static int
append_line (const char *path, const char *line)
{
    FILE *f = fopen (path, "a");
    if (!f) {
        say ("could not write %s: %s", path, strerror (errno));
        return -1;
    }
    int rc = fprintf (f, "%s\n", line) < 0 ? -1 : 0;
    if (fclose (f) != 0)
        rc = -1;
    return rc;
}

/* Makes keys_dir/<prefix><name>.{key,pub} and lists the public key under name in list_file;
   running brokers re-read their lists. */
static int
add_key (harness_t *self, const char *list_file, const char *name, const char *prefix)
{
    char err [512], pub [CURVE_Z85_LEN + 1];
    char *path = strfmt ("%s/%s%s", self->keys_dir, prefix, name);
    int rc = -1;
    if (curve_keygen (path, pub, err, sizeof err) != FR_OK) {
        say ("%s", err);
        goto out;
    }
    char *line = strfmt ("%s %s", name, pub);
    rc = append_line (list_file, line);
    mem_free (line);
    if (rc == 0)
        harness_reload_brokers (self);
out:
    mem_free (path);
    return rc;
}

/* The cluster's keys: the brokers' pair, the test's client "harness" (allowed everything by the
   policy), an empty workers list (each worker's key is added when it first starts). The test
   process itself uses the client's key: ferrulectl and client_new inherit it. */
static int
setup_keys (harness_t *self)
{
    char err [512];
    self->keys_dir = strfmt ("%s/keys", self->workdir);
    if (mkdir_p (self->keys_dir) != 0) {
        say ("could not create \"%s\": %s", self->keys_dir, strerror (errno));
        return -1;
    }
    char *broker = strfmt ("%s/broker", self->keys_dir);
    fr_status_t st = curve_keygen (broker, NULL, err, sizeof err);
    mem_free (broker);
    if (st != FR_OK) {
        say ("%s", err);
        return -1;
    }
    self->broker_pub = strfmt ("%s/broker.pub", self->keys_dir);
    self->clients_file = strfmt ("%s/clients", self->keys_dir);
    self->workers_file = strfmt ("%s/workers", self->keys_dir);
    self->policy_file = strfmt ("%s/policy", self->keys_dir);
    if (append_line (self->clients_file, "# NAME KEY") != 0 || append_line (self->workers_file, "# WORKERID KEY") != 0
    ||  harness_write_policy (self, HARNESS_CLIENT " * *\n") != 0
    ||  add_key (self, self->clients_file, HARNESS_CLIENT, "client-") != 0)
        return -1;
    return harness_use_client (self, HARNESS_CLIENT);
}

int
harness_add_worker_key (harness_t *self, const char *worker_id)
{
    return add_key (self, self->workers_file, worker_id, "worker-");
}

const char *
harness_broker_backend (harness_t *self, int idx)
{
    return idx >= 0 && idx < self->nbrokers ? self->backends [idx] : NULL;
}

int
harness_broker_pid (harness_t *self, int idx)
{
    return idx >= 0 && idx < self->nbrokers && self->brokers [idx]->pid > 0 ? (int) self->brokers [idx]->pid : -1;
}

int
harness_add_client (harness_t *self, const char *name)
{
    return add_key (self, self->clients_file, name, "client-");
}

int
harness_use_client (harness_t *self, const char *name)
{
    char *key = strfmt ("%s/client-%s.key", self->keys_dir, name);
    int rc = access (key, R_OK) == 0 ? 0 : -1;
    if (rc == 0) {
        setenv (CURVE_ENV_SECRET, key, 1);
        setenv (CURVE_ENV_BROKER_KEY, self->broker_pub, 1);
        unsetenv (CURVE_ENV_PLAINTEXT);
    }
    else
        say ("no key for client \"%s\": add it with harness_add_client", name);
    mem_free (key);
    return rc;
}

int
harness_write_policy (harness_t *self, const char *text)
{
    char *tmp = strfmt ("%s.new", self->policy_file);
    FILE *f = fopen (tmp, "w");
    int rc = -1;
    if (f && fputs (text, f) >= 0 && fclose (f) == 0 && rename (tmp, self->policy_file) == 0)
        rc = 0;
    else
        say ("could not write the policy file %s: %s", self->policy_file, strerror (errno));
    mem_free (tmp);
    return rc;
}

int
harness_remove_client (harness_t *self, const char *name)
{
    FILE *f = fopen (self->clients_file, "r");
    char *tmp = strfmt ("%s.new", self->clients_file);
    FILE *out = fopen (tmp, "w");
    char line [512];
    int rc = -1;
    size_t len = strlen (name);
    if (f && out) {
        while (fgets (line, sizeof line, f))
            if (!(strncmp (line, name, len) == 0 && line [len] == ' '))
                fputs (line, out);
        rc = 0;
    }
    if (f)
        fclose (f);
    if (out && fclose (out) != 0)
        rc = -1;
    if (rc == 0 && rename (tmp, self->clients_file) != 0)
        rc = -1;
    mem_free (tmp);
    return rc;
}

/* Waits until the process catches SIGHUP (its handler is installed), up to 10 s. */
static bool
catches_sighup (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen (path, "r");
        if (!f)
            return false;
        bool caught = false;
        while (fgets (line, sizeof line, f))
            if (strncmp (line, "SigCgt:", 7) == 0)
                caught = (strtoull (line + 7, NULL, 16) & 1ULL) != 0;   /* bit 0: signal 1 */
        fclose (f);
        if (caught)
            return true;
        sleep_ms (20);
    }
    return false;
}

void
harness_reload_brokers (harness_t *self)
{
    for (int i = 0; i < self->nbrokers; i++) {
        proc_t *p = self->brokers [i];
        if (p->pid > 0 && !proc_reap (p, 0) && catches_sighup (p->pid))
            kill (p->pid, SIGHUP);
    }
}

const char *
harness_keys_dir (harness_t *self)
{
    return self->keys_dir;
}

const char *
harness_broker_public_key_file (harness_t *self)
{
    return self->broker_pub;
}

/* --- teardown -------------------------------------------------------------------------------- */

/* Every process the harness started, for bulk stops. Returns how many were put in procs. */
static int
all_procs (harness_t *self, proc_t **procs, int cap)
{
    int n = 0;
    for (int i = 0; i < self->nworkers && n < cap; i++)
        procs [n++] = self->workers [i];
    for (int i = 0; i < self->nbrokers && n < cap; i++)
        procs [n++] = self->brokers [i];
    if (self->fake && n < cap)
        procs [n++] = self->fake;
    return n;
}

/* Stops every running process: SIGTERM to all, SIGKILL to those still running after grace_ms.
   Returns how many did not exit with status 0, naming each with its log. */
static int
stop_all (harness_t *self, int grace_ms)
{
    proc_t *procs [HARNESS_MAX_WORKERS + HARNESS_MAX_BROKERS + 1];
    bool was_running [HARNESS_MAX_WORKERS + HARNESS_MAX_BROKERS + 1];
    int n = all_procs (self, procs, (int) (sizeof procs / sizeof procs [0]));
    for (int i = 0; i < n; i++) {
        was_running [i] = procs [i]->pid > 0;
        if (was_running [i])
            kill (procs [i]->pid, SIGTERM);
    }
    long long deadline = now_ms () + grace_ms;
    for (;;) {
        bool any = false;
        for (int i = 0; i < n; i++)
            if (!proc_reap (procs [i], 0))
                any = true;
        if (!any || now_ms () >= deadline)
            break;
        sleep_ms (20);
    }
    int unclean = 0;
    for (int i = 0; i < n; i++) {
        if (procs [i]->pid > 0) {
            say ("%s did not stop within %d ms of SIGTERM: killing it (see %s)", procs [i]->name,
                 grace_ms, procs [i]->log_path);
            kill (procs [i]->pid, SIGKILL);
            proc_reap (procs [i], 60000);
            unclean++;
        }
        else if (was_running [i] && procs [i]->status != 0) {
            say ("%s exited with status %d on SIGTERM (see %s)", procs [i]->name,
                 procs [i]->status, procs [i]->log_path);
            unclean++;
        }
    }
    return unclean;
}

int
harness_stop_all (harness_t *self)
{
    return stop_all (self, DESTROY_GRACE_MS);
}

void
harness_destroy (harness_t **self_p)
{
    harness_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    (void) stop_all (self, DESTROY_GRACE_MS);
    if (self->db) {
        PQfinish (self->db);
        self->db = NULL;
    }
    drop_database (self);

    for (harness_t **p = &s_live; *p; p = &(*p)->next)
        if (*p == self) {
            *p = self->next;
            break;
        }
    for (int i = 0; i < self->nworkers; i++)
        proc_destroy (&self->workers [i]);
    for (int i = 0; i < self->nbrokers; i++) {
        proc_destroy (&self->brokers [i]);
        mem_free (self->frontends [i]);
        mem_free (self->backends [i]);
    }
    proc_destroy (&self->fake);
    if (self->curl_ready)
        curl_global_cleanup ();
    env_clear (&self->extras);
    mem_free (self->brokers_csv);
    mem_free (self->worker_wrapper);
    mem_free (self->name);
    mem_free (self->workdir);
    mem_free (self->admin_url);
    mem_free (self->dbname);
    mem_free (self->database_url);
    mem_free (self->runtime_role);
    mem_free (self->runtime_url);
    mem_free (self->providers_file);
    mem_free_secret (&self->encryption_key);
    mem_free (self->keys_dir);
    mem_free (self->clients_file);
    mem_free (self->workers_file);
    mem_free (self->policy_file);
    mem_free (self->broker_pub);
    mem_free (self);
    *self_p = NULL;
}

/* --- brokers and workers --------------------------------------------------------------------- */

void
harness_set_env (harness_t *self, const char *name, const char *value)
{
    env_put (&self->extras, name, value);
}

void
harness_set_worker_wrapper (harness_t *self, const char *path)
{
    mem_free (self->worker_wrapper);
    self->worker_wrapper = path ? mem_strdup (path) : NULL;
}

/* The n strings joined with commas (a new string). */
static char *
join_csv (char *const *items, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen (items [i]) + 1;
    char *csv = mem_alloc (len);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t ilen = strlen (items [i]);
        if (i)
            csv [at++] = ',';
        memcpy (csv + at, items [i], ilen);
        at += ilen;
    }
    csv [at] = '\0';
    return csv;
}

static void
update_brokers_csv (harness_t *self)
{
    mem_free (self->brokers_csv);
    self->brokers_csv = join_csv (self->frontends, self->nbrokers);
}

int
harness_start_broker (harness_t *self)
{
    if (!need_binary (BIN_BROKER, "ferrule-broker"))
        return -1;
    if (self->nbrokers == HARNESS_MAX_BROKERS) {
        say ("at most %d brokers", HARNESS_MAX_BROKERS);
        return -1;
    }
    int ports [2];
    if (free_ports (ports, 2) != 0)
        return -1;
    int idx = self->nbrokers;
    char *name = strfmt ("broker%d", idx);
    env_t env;
    env_from_parent (&env);
    env_apply (&env, &self->extras);
    self->frontends [idx] = strfmt ("tcp://127.0.0.1:%d", ports [0]);
    self->backends [idx] = strfmt ("tcp://127.0.0.1:%d", ports [1]);
    env_put (&env, "FERRULE_FRONTEND_BIND", self->frontends [idx]);
    env_put (&env, "FERRULE_BACKEND_BIND", self->backends [idx]);
    char *broker_key = strfmt ("%s/broker.key", self->keys_dir);
    char *audit = strfmt ("%s/broker%d.audit", self->workdir, idx);
    char *env_items [] = { CURVE_ENV_SECRET, broker_key, "FERRULE_CLIENTS_FILE", self->clients_file,
                           "FERRULE_WORKERS_FILE", self->workers_file, "FERRULE_POLICY_FILE", self->policy_file,
                           "FERRULE_AUDIT_LOG", audit, NULL };
    for (char **e = env_items; *e; e += 2)
        env_put (&env, e [0], e [1]);
    mem_free (broker_key);
    mem_free (audit);
    env_apply (&env, &self->extras);
    self->brokers [idx] = proc_new (PROC_BROKER, name, strfmt ("%s/%s.log", self->workdir, name),
                                    strv_of (BIN_BROKER, NULL), env_take (&env));
    mem_free (name);
    self->nbrokers++;
    update_brokers_csv (self);
    if (proc_start (self->brokers [idx]) != 0)
        return -1;
    return idx;
}

static proc_t *
find_worker (harness_t *self, const char *worker_id)
{
    for (int i = 0; i < self->nworkers; i++)
        if (strcmp (self->workers [i]->name, worker_id) == 0)
            return self->workers [i];
    return NULL;
}

int
harness_start_worker (harness_t *self, const char *worker_id)
{
    return harness_start_worker_on (self, worker_id, ~0u);
}

int
harness_start_worker_on (harness_t *self, const char *worker_id, unsigned broker_mask)
{
    if (!need_binary (BIN_WORKER, "ferrule-worker"))
        return -1;
    proc_t *p = find_worker (self, worker_id);
    if (p && !proc_reap (p, 0)) {
        say ("worker \"%s\" is already running", worker_id);
        return -1;
    }
    if (!p && self->nworkers == HARNESS_MAX_WORKERS) {
        say ("at most %d workers", HARNESS_MAX_WORKERS);
        return -1;
    }
    char *chosen [HARNESS_MAX_BROKERS];
    int nchosen = 0;
    for (int i = 0; i < self->nbrokers; i++)
        if (broker_mask & (1u << i))
            chosen [nchosen++] = self->backends [i];
    char *backends = join_csv (chosen, nchosen);
    char *worker_key = strfmt ("%s/worker-%s.key", self->keys_dir, worker_id);
    if (access (worker_key, R_OK) != 0 && add_key (self, self->workers_file, worker_id, "worker-") != 0) {
        mem_free (worker_key);
        mem_free (backends);
        return -1;
    }
    env_t env;
    env_from_parent (&env);
    env_put (&env, "FERRULE_DATABASE_URL", self->runtime_url);
    env_put (&env, "FERRULE_PROVIDERS_FILE", self->providers_file);
    env_put (&env, "FERRULE_ENCRYPTION_KEY", self->encryption_key);
    env_put (&env, CURVE_ENV_SECRET, worker_key);
    env_put (&env, CURVE_ENV_BROKER_KEY, self->broker_pub);
    mem_free (worker_key);
    env_apply (&env, &self->extras);
    env_put (&env, "FERRULE_WORKER_ID", worker_id);
    env_put (&env, "FERRULE_BROKER_BACKENDS", backends);
    /* each worker's journal in this test's own folder: tests run in parallel, and a journal is
       replayed by the next worker started with that id */
    char *journal = strfmt ("%s/%s.journal", self->workdir, worker_id);
    env_put (&env, "FERRULE_JOURNAL_PATH", journal);
    mem_free (journal);
    mem_free (backends);
    char **argv = self->worker_wrapper ? strv_of (self->worker_wrapper, BIN_WORKER, NULL) : strv_of (BIN_WORKER, NULL);
    if (p) {
        /* a restart: the brokers may have changed since it first ran */
        strv_free (&p->envp);
        p->envp = env_take (&env);
        strv_free (&p->argv);
        p->argv = argv;
    }
    else {
        p = proc_new (PROC_WORKER, worker_id, strfmt ("%s/%s.log", self->workdir, worker_id),
                      argv, env_take (&env));
        self->workers [self->nworkers++] = p;
    }
    return proc_start (p);
}

void
harness_signal_worker (harness_t *self, const char *worker_id, int sig)
{
    proc_t *p = find_worker (self, worker_id);
    /* No reaping here: until the test reaps it, the pid cannot be reused, and a forked copy
       of the test (which cannot reap) may send the signal too. */
    if (p && p->pid > 0)
        kill (p->pid, sig);
}

int
harness_stop_worker (harness_t *self, const char *worker_id)
{
    proc_t *p = find_worker (self, worker_id);
    if (!p || proc_reap (p, 0))
        return -1;
    return proc_stop (p, STOP_GRACE_MS);
}

int
harness_wait_worker_exit (harness_t *self, const char *worker_id, int timeout_ms)
{
    proc_t *p = find_worker (self, worker_id);
    if (!p)
        return -1;
    return proc_reap (p, timeout_ms) ? p->status : -1;
}

pid_t
harness_worker_pid (harness_t *self, const char *worker_id)
{
    proc_t *p = find_worker (self, worker_id);
    return p ? p->pid : 0;
}

int
harness_worker_running (harness_t *self, const char *worker_id)
{
    proc_t *p = find_worker (self, worker_id);
    return p && !proc_reap (p, 0);
}

void
harness_signal_broker (harness_t *self, int idx, int sig)
{
    if (idx < 0 || idx >= self->nbrokers)
        return;
    proc_t *p = self->brokers [idx];
    if (p->pid > 0)
        kill (p->pid, sig);
}

int
harness_restart_broker (harness_t *self, int idx)
{
    if (idx < 0 || idx >= self->nbrokers) {
        say ("no broker %d", idx);
        return -1;
    }
    proc_t *p = self->brokers [idx];
    if (!proc_reap (p, 0))
        (void) proc_stop (p, STOP_GRACE_MS);
    return proc_start (p);
}

const char *
harness_brokers (harness_t *self)
{
    return self->brokers_csv ? self->brokers_csv : "";
}

const char *
harness_broker_frontend (harness_t *self, int idx)
{
    return idx >= 0 && idx < self->nbrokers ? self->frontends [idx] : NULL;
}

/* --- ferrulectl ------------------------------------------------------------------------------ */

/* Runs ferrulectl against brokers (comma list; NULL or empty: none) with args. Returns the exit
   status or -1; the output goes to out. */
static int
ctl_run (harness_t *self, const char *brokers, bool json, char **args, mem_buf_t *out)
{
    if (!need_binary (BIN_CTL, "ferrulectl"))
        return -1;
    size_t nargs = 0;
    while (args [nargs])
        nargs++;
    char **argv = mem_alloc ((nargs + 5) * sizeof (char *));
    size_t n = 0;
    argv [n++] = mem_strdup (BIN_CTL);
    if (json)
        argv [n++] = mem_strdup ("--json");
    bool have_brokers = brokers && *brokers;
    if (have_brokers) {
        argv [n++] = mem_strdup ("--broker");
        argv [n++] = mem_strdup (brokers);
    }
    for (size_t i = 0; i < nargs; i++)
        argv [n++] = mem_strdup (args [i]);
    argv [n] = NULL;

    env_t env;
    env_from_parent (&env);
    /* Without a broker, make sure ferrulectl's default cannot reach a broker of scripts/run-local. */
    env_put (&env, "FERRULE_BROKER_URL", have_brokers ? brokers : DEAD_BROKER);
    char **envp = env_take (&env);
    char *log = strfmt ("%s/ferrulectl.log", self->workdir);
    bool too_large = false;
    int status = run_capture (argv, envp, log, CTL_TIMEOUT_MS, out, &too_large);
    if (too_large) {
        say ("ferrulectl printed more than %d bytes: output cut", OUTPUT_MAX);
        status = -1;
    }
    mem_free (log);
    strv_free (&argv);
    strv_free (&envp);
    return status;
}

static json_t *
parse_output (mem_buf_t *out)
{
    if (out->len == 0) {
        say ("ferrulectl printed nothing on standard output");
        return NULL;
    }
    json_error_t error;
    json_t *value = json_loadb (out->data, out->len, JSON_DECODE_ANY, &error);
    if (!value)
        /* not the output itself: it may hold a token */
        say ("ferrulectl printed %zu bytes that are not JSON", out->len);
    return value;
}

static void
buf_free_secret (mem_buf_t *out)
{
    if (out->data)
        mem_wipe (out->data, out->cap);
    mem_buf_free (out);
}

/* ferrulectl --json against brokers; takes args. */
static json_t *
ctl_json (harness_t *self, const char *brokers, int *exit_code, char **args)
{
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    int status = ctl_run (self, brokers, true, args, &out);
    json_t *value = status >= 0 ? parse_output (&out) : NULL;
    if (exit_code)
        *exit_code = status;
    buf_free_secret (&out);
    strv_free (&args);
    return value;
}

json_t *
harness_ctl (harness_t *self, int *exit_code, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = strv_new (arg0, ap);
    va_end (ap);
    return ctl_json (self, self->brokers_csv, exit_code, args);
}

json_t *
harness_ctl_at (harness_t *self, const char *brokers, int *exit_code, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = strv_new (arg0, ap);
    va_end (ap);
    return ctl_json (self, brokers, exit_code, args);
}

int
harness_ctl_text (harness_t *self, int *exit_code, char **stdout_text, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = strv_new (arg0, ap);
    va_end (ap);
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    int status = ctl_run (self, self->brokers_csv, false, args, &out);
    if (exit_code)
        *exit_code = status;
    if (stdout_text)
        *stdout_text = mem_strndup (out.data ? out.data : "", out.len);
    buf_free_secret (&out);
    strv_free (&args);
    return status >= 0 ? 0 : -1;
}

int
harness_migrate (harness_t *self, char **stdout_text, const char *arg0, ...)
{
    if (!need_binary (BIN_MIGRATE, "ferrule-migrate"))
        return -1;
    va_list ap;
    va_start (ap, arg0);
    char **args = strv_new (arg0, ap);
    va_end (ap);
    size_t n = 0;
    while (args [n])
        n++;
    char **argv = mem_alloc ((n + 2) * sizeof *argv);
    argv [0] = mem_strdup (BIN_MIGRATE);
    for (size_t i = 0; i < n; i++)
        argv [i + 1] = mem_strdup (args [i]);
    env_t env;
    env_from_parent (&env);
    env_put (&env, "FERRULE_DATABASE_URL", self->database_url);
    env_put (&env, "FERRULE_ENCRYPTION_KEY", self->encryption_key);
    env_apply (&env, &self->extras);
    char **envp = env_take (&env);
    char *log = strfmt ("%s/migrate-%s.log", self->workdir, arg0);
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    int status = run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, &out, NULL);
    if (stdout_text)
        *stdout_text = mem_strndup (out.data ? out.data : "", out.len);
    buf_free_secret (&out);
    mem_free (log);
    strv_free (&argv);
    strv_free (&args);
    strv_free (&envp);
    return status;
}

static json_int_t
json_int_or (const json_t *obj, const char *key, json_int_t dflt)
{
    const json_t *v = json_object_get (obj, key);
    return json_is_integer (v) ? json_integer_value (v) : dflt;
}

int
harness_wait_ready (harness_t *self, int workers, int timeout_ms)
{
    if (self->nbrokers == 0) {
        say ("harness_wait_ready: no broker was started");
        return -1;
    }
    long long deadline = now_ms () + timeout_ms;
    char *last = NULL;
    char *args [] = { "ping", NULL };
    for (;;) {
        bool ready = true;
        for (int i = 0; i < self->nbrokers && ready; i++) {
            mem_buf_t out;
            mem_buf_init (&out, OUTPUT_MAX);
            int status = ctl_run (self, self->frontends [i], true, args, &out);
            json_t *reply = NULL;
            if (status >= 0 && out.len > 0)
                reply = json_loadb (out.data, out.len, JSON_DECODE_ANY, NULL);
            buf_free_secret (&out);
            json_int_t seen = json_int_or (reply, "workers", -1);
            json_int_t owned = json_int_or (reply, "partitions_owned", -1);
            json_int_t partitions = json_int_or (reply, "partitions", -2);
            ready = status == 0 && json_is_true (json_object_get (reply, "ok"))
                    && seen >= workers && owned == partitions;
            if (!ready) {
                mem_free (last);
                last = strfmt ("broker%d (%s): exit %d, ok %s, workers %lld, partitions_owned %lld "
                               "of %lld", i, self->frontends [i], status,
                               json_is_true (json_object_get (reply, "ok")) ? "true" : "false",
                               (long long) seen, (long long) owned, (long long) partitions);
            }
            json_decref (reply);
        }
        if (ready) {
            mem_free (last);
            return 0;
        }
        if (now_ms () >= deadline)
            break;
        sleep_ms (100);
    }
    say ("not ready within %d ms (wanted %d workers): last answer from %s", timeout_ms, workers,
         last ? last : "none");
    mem_free (last);
    return -1;
}

/* --- the fake provider's admin API ----------------------------------------------------------- */

static size_t
collect (char *data, size_t size, size_t nmemb, void *userdata)
{
    mem_buf_t *buf = userdata;
    return mem_buf_append (buf, data, size * nmemb) == 0 ? size * nmemb : 0;
}

json_t *
harness_fake_status (harness_t *self, const char *method, const char *path, json_t *body,
                     long *http_status)
{
    json_t *value = NULL;
    char *url = strfmt ("http://127.0.0.1:%d%s", self->fake_port, path);
    char *payload = body ? json_dumps (body, JSON_COMPACT) : NULL;
    struct curl_slist *headers = NULL;
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    long status = 0;
    CURL *curl = curl_easy_init ();
    if (!curl) {
        say ("could not create a curl handle");
        goto out;
    }
    headers = curl_slist_append (headers, "Content-Type: application/json");
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &out);
    if (payload || strcmp (method, "POST") == 0 || strcmp (method, "PUT") == 0) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, payload ? payload : "");
        curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) (payload ? strlen (payload) : 0));
    }
    CURLcode rc = curl_easy_perform (curl);
    if (rc != CURLE_OK) {
        say ("%s %s at the fake provider failed: %s", method, path, curl_easy_strerror (rc));
        goto out;
    }
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    if (out.len == 0)
        value = json_object ();
    else {
        value = json_loadb (out.data, out.len, JSON_DECODE_ANY, NULL);
        if (!value)
            say ("%s %s at the fake provider answered %ld with %zu bytes that are not JSON", method,
                 path, status, out.len);
    }
out:
    if (http_status)
        *http_status = status;
    if (curl)
        curl_easy_cleanup (curl);
    curl_slist_free_all (headers);
    free (payload);
    buf_free_secret (&out);
    mem_free (url);
    return value;
}

json_t *
harness_fake (harness_t *self, const char *method, const char *path, json_t *body)
{
    long status = 0;
    json_t *value = harness_fake_status (self, method, path, body, &status);
    if (value && (status < 200 || status > 299)) {
        const json_t *err = json_object_get (value, "error");
        const json_t *desc = json_object_get (value, "error_description");
        say ("%s %s at the fake provider answered %ld: %s%s%s", method, path, status,
             json_is_string (err) ? json_string_value (err) : "(no error field)",
             json_is_string (desc) ? ": " : "", json_is_string (desc) ? json_string_value (desc) : "");
        json_decref (value);
        value = NULL;
    }
    return value;
}

/* --- the database ---------------------------------------------------------------------------- */

PGconn *
harness_db (harness_t *self)
{
    if (self->db && PQstatus (self->db) == CONNECTION_OK)
        return self->db;
    if (self->db)
        PQfinish (self->db);
    self->db = PQconnectdb (self->database_url);
    if (PQstatus (self->db) != CONNECTION_OK) {
        say ("could not connect to the test database \"%s\": %s", self->dbname,
             PQerrorMessage (self->db));
        PQfinish (self->db);
        self->db = NULL;
        return NULL;
    }
    PQsetNoticeProcessor (self->db, ignore_notice, NULL);
    return self->db;
}

/* Runs sql on harness_db, reconnecting once if the server went away since the last query (a
   test that stops and starts PostgreSQL). NULL only when there is no connection. */
static PGresult *
db_query (harness_t *self, const char *sql)
{
    PGconn *db = harness_db (self);
    if (!db)
        return NULL;
    PGresult *res = PQexec (db, sql);
    if (PQstatus (db) == CONNECTION_BAD) {
        PQclear (res);
        PQreset (db);
        if (PQstatus (db) != CONNECTION_OK) {
            say ("could not reconnect to the test database \"%s\": %s", self->dbname, PQerrorMessage (db));
            return NULL;
        }
        res = PQexec (db, sql);
    }
    return res;
}

int
harness_sql (harness_t *self, const char *sql)
{
    PGresult *res = db_query (self, sql);
    if (!res)
        return -1;
    int rc = 0;
    if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK) {
        say ("SQL failed: %s: %s", sql, PQresultErrorMessage (res));
        rc = -1;
    }
    PQclear (res);
    return rc;
}

long long
harness_sql_int (harness_t *self, const char *sql)
{
    PGresult *res = db_query (self, sql);
    if (!res)
        return -1;
    long long value = -1;
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        say ("SQL failed: %s: %s", sql, PQresultErrorMessage (res));
    else if (PQntuples (res) != 1 || PQnfields (res) != 1 || PQgetisnull (res, 0, 0))
        say ("SQL did not return one non-null value: %s", sql);
    else {
        char *end;
        value = strtoll (PQgetvalue (res, 0, 0), &end, 10);
        if (*end) {
            say ("SQL returned \"%s\", not an integer: %s", PQgetvalue (res, 0, 0), sql);
            value = -1;
        }
    }
    PQclear (res);
    return value;
}

/* --- accessors ------------------------------------------------------------------------------- */

int
harness_port (harness_t *self)
{
    return self->fake_port;
}

const char *
harness_runtime_url (harness_t *self)
{
    return self->runtime_url;
}

const char *
harness_runtime_role (harness_t *self)
{
    return self->runtime_role;
}

const char *
harness_database_url (harness_t *self)
{
    return self->database_url;
}

const char *
harness_workdir (harness_t *self)
{
    return self->workdir;
}

const char *
harness_providers_file (harness_t *self)
{
    return self->providers_file;
}

const char *
harness_encryption_key (harness_t *self)
{
    return self->encryption_key;
}
