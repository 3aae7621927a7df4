/* harness.c - starts and stops the real processes an integration test needs (see harness.h): setup, teardown, brokers and workers */
#include "harness_private.h"

static harness_t *s_live;           /* harnesses not yet destroyed */
static bool s_atexit_installed;
static int s_created;               /* harnesses made by this process, for unique names */

/* --- setup ----------------------------------------------------------------------------------- */

int
hx_migrate (harness_t *self)
{
    if (!hx_need_binary (BIN_MIGRATE, "ferrule-migrate"))
        return -1;
    env_t env;
    hx_env_from_parent (&env);
    hx_env_put (&env, "FERRULE_DATABASE_URL", self->database_url);
    char **envp = hx_env_take (&env);
    char **argv = hx_strv_of (BIN_MIGRATE, "up", "--database-url", self->database_url, NULL);
    char *log = hx_strfmt ("%s/migrate.log", self->workdir);
    int status = hx_run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, NULL, NULL);
    if (status != 0)
        hx_say ("ferrule-migrate up failed (status %d): see %s", status, log);
    mem_free (log);
    hx_strv_free (&argv);
    if (status == 0) {
        /* the workers run as a runtime role of their own, as in production */
        argv = hx_strv_of (BIN_MIGRATE, "grant-runtime", self->runtime_role, NULL);
        log = hx_strfmt ("%s/grant-runtime.log", self->workdir);
        status = hx_run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, NULL, NULL);
        if (status != 0)
            hx_say ("ferrule-migrate grant-runtime failed (status %d): see %s", status, log);
        else if (hx_set_runtime_password (self) != 0)
            status = -1;
        mem_free (log);
        hx_strv_free (&argv);
    }
    hx_strv_free (&envp);
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
    if (!hx_need_binary (BIN_FAKE, "ferrule-fake-provider"))
        return -1;
    char *port_file = hx_strfmt ("%s/fake.port", self->workdir);
    unlink (port_file);
    env_t env;
    hx_env_from_parent (&env);
    self->fake = hx_proc_new (PROC_FAKE, "fake-provider", hx_strfmt ("%s/fake-provider.log", self->workdir),
                           hx_strv_of (BIN_FAKE, "--port", "0", "--port-file", port_file, NULL),
                           hx_env_take (&env));
    int rc = -1;
    if (hx_proc_start (self->fake) != 0)
        goto out;
    long long deadline = hx_now_ms () + FAKE_START_MS;
    int previous = 0;
    while (hx_now_ms () < deadline) {
        int port = read_port_file (port_file);
        /* the same value twice in a row: the file is complete */
        if (port > 0 && port == previous) {
            self->fake_port = port;
            rc = 0;
            goto out;
        }
        previous = port;
        if (hx_proc_reap (self->fake, 0)) {
            hx_say ("the fake provider exited with status %d before writing its port: see %s",
                 self->fake->status, self->fake->log_path);
            goto out;
        }
        hx_sleep_ms (20);
    }
    hx_say ("the fake provider wrote no port to %s within %d ms: see %s", port_file, FAKE_START_MS,
         self->fake->log_path);
out:
    mem_free (port_file);
    return rc;
}

static json_t *
provider_entry (int port, const char *name, const char *auth_method, const char *rotation)
{
    char *authorize = hx_strfmt ("http://127.0.0.1:%d/%s/authorize", port, name);
    char *token = hx_strfmt ("http://127.0.0.1:%d/%s/token", port, name);
    char *revoke = hx_strfmt ("http://127.0.0.1:%d/%s/revoke", port, name);
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
    self->providers_file = hx_strfmt ("%s/providers.json", self->workdir);
    int rc = json_dump_file (root, self->providers_file, JSON_INDENT (2) | JSON_SORT_KEYS);
    json_decref (root);
    if (rc != 0) {
        hx_say ("could not write %s: %s", self->providers_file, strerror (errno));
        return -1;
    }
    chmod (self->providers_file, 0600);     /* it holds the client secret */

    /* The fake provider behaves as the file describes. */
    static const struct { const char *name, *mode; } fake_modes [] = {
        { "fakebox", "single_use" }, { "fakegoogle", "reusable" }
    };
    for (size_t i = 0; i < sizeof fake_modes / sizeof fake_modes [0]; i++) {
        char *path = hx_strfmt ("/admin/providers/%s", fake_modes [i].name);
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
        hx_say ("destroying harness \"%s\", which the test did not destroy", h->name);
        harness_destroy (&h);
    }
}

int
harness_exit (int failed)
{
    if (failed)
        exit_cleanup ();
    return testexit (failed);
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
        /* a test that writes to a connection the other end closed gets EPIPE, which it can
         * report, not a SIGPIPE that ends the program without a word (the processes it starts
         * get the default back: hx_proc_start) */
        signal (SIGPIPE, SIG_IGN);
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
    char *clean = hx_sanitize_name (self->name, 40);
    if (serial == 0) {
        self->dbname = hx_strfmt ("ft_%s_%ld", clean, pid);
        self->workdir = hx_strfmt ("%s/%s-%ld", HARNESS_WORK_ROOT, self->name, pid);
    }
    else {
        self->dbname = hx_strfmt ("ft_%s_%ld_%d", clean, pid, serial);
        self->workdir = hx_strfmt ("%s/%s-%ld-%d", HARNESS_WORK_ROOT, self->name, pid, serial);
    }
    mem_free (clean);
    for (char *c = self->workdir + strlen (HARNESS_WORK_ROOT) + 1; *c; c++)
        if (*c == '/' || *c == ' ')
            *c = '_';
    if (hx_mkdir_p (self->workdir) != 0) {
        hx_say ("could not create the work folder \"%s\": %s", self->workdir, strerror (errno));
        goto fail;
    }
    self->database_url = hx_url_with_database (self->admin_url, self->dbname);
    self->runtime_role = serial == 0 ? hx_strfmt (RUNTIME_ROLE_PREFIX "%ld", pid)
                                     : hx_strfmt (RUNTIME_ROLE_PREFIX "%ld_%d", pid, serial);
    unsigned char pw [16];
    if (hx_random_bytes (pw, sizeof pw) != 0) {
        hx_say ("could not read /dev/urandom");
        goto fail;
    }
    self->runtime_password = mem_alloc (2 * sizeof pw + 1);
    for (size_t i = 0; i < sizeof pw; i++)
        snprintf (self->runtime_password + 2 * i, 3, "%02x", pw [i]);
    mem_wipe (pw, sizeof pw);
    self->runtime_url = hx_url_with_login (self->database_url, self->runtime_role, self->runtime_password);

    hx_env_put (&self->extras, "FERRULE_PARTITIONS", "64");
    /* The background sweep refreshes expired tokens on its own schedule: in a test that expires
     * a token and counts the provider calls its next request makes, a sweep pass in between
     * would make that call first. Tests of the sweep set their own interval. */
    hx_env_put (&self->extras, "FERRULE_SWEEP_MS", "3600000");
    if (hx_setup_keys (self) != 0)
        goto fail;

    unsigned char key [32];
    if (hx_random_bytes (key, sizeof key) != 0) {
        hx_say ("could not read /dev/urandom");
        goto fail;
    }
    self->encryption_key = hx_base64_encode (key, sizeof key);
    mem_wipe (key, sizeof key);

    if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        hx_say ("could not initialise libcurl");
        goto fail;
    }
    self->curl_ready = true;

    if (hx_create_database (self) != 0 || hx_migrate (self) != 0)
        goto fail;
    if (start_fake (self) != 0 || write_providers (self) != 0)
        goto fail;
    return self;
fail:
    hx_say ("could not set up test \"%s\" (logs in %s)", self->name, self->workdir ? self->workdir : "?");
    harness_destroy (&self);
    return NULL;
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
    long long deadline = hx_now_ms () + grace_ms;
    for (;;) {
        bool any = false;
        for (int i = 0; i < n; i++)
            if (!hx_proc_reap (procs [i], 0))
                any = true;
        if (!any || hx_now_ms () >= deadline)
            break;
        hx_sleep_ms (20);
    }
    int unclean = 0;
    for (int i = 0; i < n; i++) {
        if (procs [i]->pid > 0) {
            hx_say ("%s did not stop within %d ms of SIGTERM: killing it (see %s)", procs [i]->name,
                 grace_ms, procs [i]->log_path);
            kill (procs [i]->pid, SIGKILL);
            hx_proc_reap (procs [i], 60000);
            unclean++;
        }
        else if (was_running [i] && procs [i]->status != 0) {
            hx_say ("%s exited with status %d on SIGTERM (see %s)", procs [i]->name,
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
    hx_drop_database (self);

    for (harness_t **p = &s_live; *p; p = &(*p)->next)
        if (*p == self) {
            *p = self->next;
            break;
        }
    for (int i = 0; i < self->nworkers; i++)
        hx_proc_destroy (&self->workers [i]);
    for (int i = 0; i < self->nbrokers; i++) {
        hx_proc_destroy (&self->brokers [i]);
        mem_free (self->frontends [i]);
        mem_free (self->backends [i]);
    }
    hx_proc_destroy (&self->fake);
    if (self->curl_ready)
        curl_global_cleanup ();
    hx_env_clear (&self->extras);
    mem_free (self->brokers_csv);
    mem_free (self->worker_wrapper);
    mem_free (self->name);
    mem_free (self->workdir);
    mem_free (self->admin_url);
    mem_free (self->dbname);
    mem_free (self->database_url);
    mem_free (self->runtime_role);
    mem_free_secret (&self->runtime_password);
    mem_free_secret (&self->runtime_url);
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
    hx_env_put (&self->extras, name, value);
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
    if (!hx_need_binary (BIN_BROKER, "ferrule-broker"))
        return -1;
    if (self->nbrokers == HARNESS_MAX_BROKERS) {
        hx_say ("at most %d brokers", HARNESS_MAX_BROKERS);
        return -1;
    }
    int ports [2];
    if (hx_free_ports (ports, 2) != 0)
        return -1;
    int idx = self->nbrokers;
    char *name = hx_strfmt ("broker%d", idx);
    env_t env;
    hx_env_from_parent (&env);
    hx_env_apply (&env, &self->extras);
    self->frontends [idx] = hx_strfmt ("tcp://127.0.0.1:%d", ports [0]);
    self->backends [idx] = hx_strfmt ("tcp://127.0.0.1:%d", ports [1]);
    hx_env_put (&env, "FERRULE_FRONTEND_BIND", self->frontends [idx]);
    hx_env_put (&env, "FERRULE_BACKEND_BIND", self->backends [idx]);
    char *broker_key = hx_strfmt ("%s/broker.key", self->keys_dir);
    char *audit = hx_strfmt ("%s/broker%d.audit", self->workdir, idx);
    char *env_items [] = { CURVE_ENV_SECRET, broker_key, "FERRULE_CLIENTS_FILE", self->clients_file,
                           "FERRULE_WORKERS_FILE", self->workers_file, "FERRULE_POLICY_FILE", self->policy_file,
                           "FERRULE_AUDIT_LOG", audit, NULL };
    for (char **e = env_items; *e; e += 2)
        hx_env_put (&env, e [0], e [1]);
    mem_free (broker_key);
    mem_free (audit);
    hx_env_apply (&env, &self->extras);
    self->brokers [idx] = hx_proc_new (PROC_BROKER, name, hx_strfmt ("%s/%s.log", self->workdir, name),
                                    hx_strv_of (BIN_BROKER, NULL), hx_env_take (&env));
    mem_free (name);
    self->nbrokers++;
    update_brokers_csv (self);
    if (hx_proc_start (self->brokers [idx]) != 0)
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
    if (!hx_need_binary (BIN_WORKER, "ferrule-worker"))
        return -1;
    proc_t *p = find_worker (self, worker_id);
    if (p && !hx_proc_reap (p, 0)) {
        hx_say ("worker \"%s\" is already running", worker_id);
        return -1;
    }
    if (!p && self->nworkers == HARNESS_MAX_WORKERS) {
        hx_say ("at most %d workers", HARNESS_MAX_WORKERS);
        return -1;
    }
    char *chosen [HARNESS_MAX_BROKERS];
    int nchosen = 0;
    for (int i = 0; i < self->nbrokers; i++)
        if (broker_mask & (1u << i))
            chosen [nchosen++] = self->backends [i];
    char *backends = join_csv (chosen, nchosen);
    char *worker_key = hx_strfmt ("%s/worker-%s.key", self->keys_dir, worker_id);
    if (access (worker_key, R_OK) != 0 && hx_add_key (self, self->workers_file, worker_id, "worker-") != 0) {
        mem_free (worker_key);
        mem_free (backends);
        return -1;
    }
    env_t env;
    hx_env_from_parent (&env);
    hx_env_put (&env, "FERRULE_DATABASE_URL", self->runtime_url);
    hx_env_put (&env, "FERRULE_PROVIDERS_FILE", self->providers_file);
    hx_env_put (&env, "FERRULE_ENCRYPTION_KEY", self->encryption_key);
    hx_env_put (&env, CURVE_ENV_SECRET, worker_key);
    hx_env_put (&env, CURVE_ENV_BROKER_KEY, self->broker_pub);
    mem_free (worker_key);
    hx_env_apply (&env, &self->extras);
    hx_env_put (&env, "FERRULE_WORKER_ID", worker_id);
    hx_env_put (&env, "FERRULE_BROKER_BACKENDS", backends);
    /* each worker's journal in this test's own folder: tests run in parallel, and a journal is
       replayed by the next worker started with that id */
    char *journal = hx_strfmt ("%s/%s.journal", self->workdir, worker_id);
    hx_env_put (&env, "FERRULE_JOURNAL_PATH", journal);
    mem_free (journal);
    mem_free (backends);
    char **argv = self->worker_wrapper ? hx_strv_of (self->worker_wrapper, BIN_WORKER, NULL) : hx_strv_of (BIN_WORKER, NULL);
    if (p) {
        /* a restart: the brokers may have changed since it first ran */
        hx_strv_free (&p->envp);
        p->envp = hx_env_take (&env);
        hx_strv_free (&p->argv);
        p->argv = argv;
    }
    else {
        p = hx_proc_new (PROC_WORKER, worker_id, hx_strfmt ("%s/%s.log", self->workdir, worker_id),
                      argv, hx_env_take (&env));
        self->workers [self->nworkers++] = p;
    }
    return hx_proc_start (p);
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
    if (!p || hx_proc_reap (p, 0))
        return -1;
    return hx_proc_stop (p, STOP_GRACE_MS);
}

int
harness_wait_worker_exit (harness_t *self, const char *worker_id, int timeout_ms)
{
    proc_t *p = find_worker (self, worker_id);
    if (!p)
        return -1;
    return hx_proc_reap (p, timeout_ms) ? p->status : -1;
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
    return p && !hx_proc_reap (p, 0);
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
        hx_say ("no broker %d", idx);
        return -1;
    }
    proc_t *p = self->brokers [idx];
    if (!hx_proc_reap (p, 0))
        (void) hx_proc_stop (p, STOP_GRACE_MS);
    return hx_proc_start (p);
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
