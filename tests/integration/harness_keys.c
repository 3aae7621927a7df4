/* harness_keys.c - the CURVE keys, allow-lists and policy of a harness's cluster */
#include "harness_private.h"

/* --- keys ------------------------------------------------------------------------------------ */

/* Appends "line" to path; 0 or -1. */
static int
append_line (const char *path, const char *line)
{
    FILE *f = fopen (path, "a");
    if (!f) {
        hx_say ("could not write %s: %s", path, strerror (errno));
        return -1;
    }
    int rc = fprintf (f, "%s\n", line) < 0 ? -1 : 0;
    if (fclose (f) != 0)
        rc = -1;
    return rc;
}

/* Makes keys_dir/<prefix><name>.{key,pub} and lists the public key under name in list_file;
   running brokers re-read their lists. */
int
hx_add_key (harness_t *self, const char *list_file, const char *name, const char *prefix)
{
    char err [512], pub [CURVE_Z85_LEN + 1];
    char *path = hx_strfmt ("%s/%s%s", self->keys_dir, prefix, name);
    int rc = -1;
    if (curve_keygen (path, pub, err, sizeof err) != FR_OK) {
        hx_say ("%s", err);
        goto out;
    }
    char *line = hx_strfmt ("%s %s", name, pub);
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
int
hx_setup_keys (harness_t *self)
{
    char err [512];
    self->keys_dir = hx_strfmt ("%s/keys", self->workdir);
    if (hx_mkdir_p (self->keys_dir) != 0) {
        hx_say ("could not create \"%s\": %s", self->keys_dir, strerror (errno));
        return -1;
    }
    char *broker = hx_strfmt ("%s/broker", self->keys_dir);
    fr_status_t st = curve_keygen (broker, NULL, err, sizeof err);
    mem_free (broker);
    if (st != FR_OK) {
        hx_say ("%s", err);
        return -1;
    }
    self->broker_pub = hx_strfmt ("%s/broker.pub", self->keys_dir);
    self->clients_file = hx_strfmt ("%s/clients", self->keys_dir);
    self->workers_file = hx_strfmt ("%s/workers", self->keys_dir);
    self->policy_file = hx_strfmt ("%s/policy", self->keys_dir);
    if (append_line (self->clients_file, "# NAME KEY") != 0 || append_line (self->workers_file, "# WORKERID KEY") != 0
    ||  harness_write_policy (self, HARNESS_CLIENT " * *\n") != 0
    ||  hx_add_key (self, self->clients_file, HARNESS_CLIENT, "client-") != 0)
        return -1;
    return harness_use_client (self, HARNESS_CLIENT);
}

int
harness_add_worker_key (harness_t *self, const char *worker_id)
{
    return hx_add_key (self, self->workers_file, worker_id, "worker-");
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
harness_wait_broker_exit (harness_t *self, int idx, int timeout_ms)
{
    if (idx < 0 || idx >= self->nbrokers)
        return -1;
    return hx_proc_reap (self->brokers [idx], timeout_ms) ? self->brokers [idx]->status : -1;
}

int
harness_add_client (harness_t *self, const char *name)
{
    return hx_add_key (self, self->clients_file, name, "client-");
}

int
harness_use_client (harness_t *self, const char *name)
{
    char *key = hx_strfmt ("%s/client-%s.key", self->keys_dir, name);
    int rc = access (key, R_OK) == 0 ? 0 : -1;
    if (rc == 0) {
        setenv (CURVE_ENV_SECRET, key, 1);
        setenv (CURVE_ENV_BROKER_KEY, self->broker_pub, 1);
        unsetenv (CURVE_ENV_PLAINTEXT);
    }
    else
        hx_say ("no key for client \"%s\": add it with harness_add_client", name);
    mem_free (key);
    return rc;
}

int
harness_write_policy (harness_t *self, const char *text)
{
    char *tmp = hx_strfmt ("%s.new", self->policy_file);
    FILE *f = fopen (tmp, "w");
    int rc = -1;
    if (f && fputs (text, f) >= 0 && fclose (f) == 0 && rename (tmp, self->policy_file) == 0)
        rc = 0;
    else
        hx_say ("could not write the policy file %s: %s", self->policy_file, strerror (errno));
    mem_free (tmp);
    return rc;
}

/* Rewrites the list at path without the entries named name. 0 or -1. */
static int
remove_entry (const char *path, const char *name)
{
    FILE *f = fopen (path, "r");
    char *tmp = hx_strfmt ("%s.new", path);
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
    if (rc == 0 && rename (tmp, path) != 0)
        rc = -1;
    mem_free (tmp);
    return rc;
}

int
harness_remove_client (harness_t *self, const char *name)
{
    return remove_entry (self->clients_file, name);
}

int
harness_remove_worker_key (harness_t *self, const char *worker_id)
{
    return remove_entry (self->workers_file, worker_id);
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
        hx_sleep_ms (20);
    }
    return false;
}

/* How many times a broker's log says it put freshly read allow-lists in effect. */
static int
reloads_done (const proc_t *p)
{
    char line [4096];
    int n = 0;
    FILE *f = fopen (p->log_path, "r");
    if (!f)
        return 0;
    while (fgets (line, sizeof line, f))
        n += strstr (line, "the allow-lists and the policy in effect are the ones just read") != NULL;
    fclose (f);
    return n;
}

void
harness_reload_brokers (harness_t *self)
{
    int before [HARNESS_MAX_BROKERS] = { 0 }, sent [HARNESS_MAX_BROKERS] = { 0 };
    for (int i = 0; i < self->nbrokers; i++) {
        proc_t *p = self->brokers [i];
        before [i] = reloads_done (p);
        if (p->pid > 0 && !hx_proc_reap (p, 0) && catches_sighup (p->pid))
            sent [i] = kill (p->pid, SIGHUP) == 0;
    }
    /* the reload is done in the broker's loop: wait for it, so that a key added now is known
     * before its holder connects (a handshake refused by ZAP is not retried by the client) */
    for (int i = 0; i < self->nbrokers; i++)
        for (int k = 0; sent [i] && k < 500 && reloads_done (self->brokers [i]) <= before [i]; k++)
            hx_sleep_ms (10);
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
