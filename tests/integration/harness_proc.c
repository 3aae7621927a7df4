/* harness_proc.c - the harness's child processes: environments, spawning with a log, stopping, reaping, running a command to completion */
#include "harness_private.h"

void
hx_say (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "harness: ");
    vfprintf (stderr, fmt, ap);
    fprintf (stderr, "\n");
    va_end (ap);
}

char *
hx_strfmt (const char *fmt, ...)
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

long long
hx_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
hx_sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

int
hx_mkdir_p (const char *path)
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

void
hx_env_put (env_t *env, const char *name, const char *value)
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
    env->items [env->count++] = hx_strfmt ("%s=%s", name, value);
    env->items [env->count] = NULL;
}

/* Applies every entry of from (NAME=value strings) onto env. */
void
hx_env_apply (env_t *env, const env_t *from)
{
    for (size_t i = 0; i < from->count; i++) {
        const char *eq = strchr (from->items [i], '=');
        char *name = mem_strndup (from->items [i], (size_t) (eq - from->items [i]));
        hx_env_put (env, name, eq + 1);
        mem_free (name);
    }
}

void
hx_env_from_parent (env_t *env)
{
    memset (env, 0, sizeof *env);
    env->cap = 64;
    env->items = mem_alloc (env->cap * sizeof (char *));
    for (char **e = environ; *e; e++) {
        const char *eq = strchr (*e, '=');
        if (!eq)
            continue;
        char *name = mem_strndup (*e, (size_t) (eq - *e));
        hx_env_put (env, name, eq + 1);
        mem_free (name);
    }
}

/* Hands the NULL-terminated array over to the caller; env is left empty. */
char **
hx_env_take (env_t *env)
{
    if (!env->items) {
        env->items = mem_alloc (sizeof (char *));
    }
    char **items = env->items;
    memset (env, 0, sizeof *env);
    return items;
}

void
hx_env_clear (env_t *env)
{
    for (size_t i = 0; i < env->count; i++)
        mem_free (env->items [i]);
    mem_free (env->items);
    memset (env, 0, sizeof *env);
}

void
hx_strv_free (char ***strv_p)
{
    if (!*strv_p)
        return;
    for (char **s = *strv_p; *s; s++)
        mem_free (*s);
    mem_free (*strv_p);
    *strv_p = NULL;
}

char **
hx_strv_new (const char *first, va_list ap)
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

char **
hx_strv_of (const char *first, ...)
{
    va_list ap;
    va_start (ap, first);
    char **v = hx_strv_new (first, ap);
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
        hx_say ("could not open log \"%s\": %s", log_path, strerror (errno));
        goto out;
    }
    null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd == -1 || pipe_cloexec (err_pipe) == -1) {
        hx_say ("could not prepare to start \"%s\": %s", argv [0], strerror (errno));
        goto out;
    }
    fflush (NULL);
    pid = fork ();
    if (pid == -1) {
        hx_say ("could not start \"%s\": %s", argv [0], strerror (errno));
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
        hx_say ("could not run \"%s\": %s", argv [0], strerror (child_errno));
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
bool
hx_proc_reap (proc_t *p, int timeout_ms)
{
    if (!p || p->pid <= 0)
        return true;
    long long deadline = hx_now_ms () + timeout_ms;
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
        if (hx_now_ms () >= deadline)
            return false;
        hx_sleep_ms (10);
    }
}

int
hx_proc_start (proc_t *p)
{
    pid_t pid = spawn (p->argv, p->envp, p->log_path, -1);
    if (pid < 0)
        return -1;
    p->pid = pid;
    p->status = -1;
    return 0;
}

/* SIGTERM, then SIGKILL after grace_ms. Returns the exit status, or -1 if it was not running. */
int
hx_proc_stop (proc_t *p, int grace_ms)
{
    if (!p || p->pid <= 0)
        return -1;
    kill (p->pid, SIGTERM);
    if (!hx_proc_reap (p, grace_ms)) {
        hx_say ("%s did not stop within %d ms of SIGTERM: killing it (see %s)", p->name, grace_ms,
             p->log_path);
        kill (p->pid, SIGKILL);
        hx_proc_reap (p, 60000);
    }
    return p->status;
}

proc_t *
hx_proc_new (proc_kind_t kind, const char *name, char *log_path, char **argv, char **envp)
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

void
hx_proc_destroy (proc_t **p_p)
{
    proc_t *p = *p_p;
    if (!p)
        return;
    if (p->pid > 0) {
        kill (p->pid, SIGKILL);
        hx_proc_reap (p, 60000);
    }
    mem_free (p->name);
    mem_free (p->log_path);
    hx_strv_free (&p->argv);
    hx_strv_free (&p->envp);
    mem_free (p);
    *p_p = NULL;
}

/* Runs argv to completion with stdout captured (capped), stderr appended to log_path. Returns
   the exit status, or -1 if it could not run or was killed after timeout_ms. *out (may be NULL)
   gets the output; *too_large is set when it passed OUTPUT_MAX. */
int
hx_run_capture (char *const argv [], char *const envp [], const char *log_path, int timeout_ms,
             mem_buf_t *out, bool *too_large)
{
    int fds [2];
    if (pipe_cloexec (fds) == -1) {
        hx_say ("could not create a pipe: %s", strerror (errno));
        return -1;
    }
    pid_t pid = spawn (argv, envp, log_path, fds [1]);
    close (fds [1]);
    if (pid < 0) {
        close (fds [0]);
        return -1;
    }
    long long deadline = hx_now_ms () + timeout_ms;
    bool timed_out = false;
    char chunk [16384];
    for (;;) {
        long long left = deadline - hx_now_ms ();
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
        hx_say ("\"%s\" did not finish within %d ms: killed it", argv [0], timeout_ms);
        kill (pid, SIGKILL);
        hx_proc_reap (&p, 60000);
        return -1;
    }
    if (!hx_proc_reap (&p, (int) (deadline - hx_now_ms () > 0 ? deadline - hx_now_ms () : 0))) {
        hx_say ("\"%s\" did not exit within %d ms: killed it", argv [0], timeout_ms);
        kill (pid, SIGKILL);
        hx_proc_reap (&p, 60000);
        return -1;
    }
    return p.status;
}
