/* harness_ctl.c - running ferrulectl and ferrule-migrate, and the fake provider's admin API */
#include "harness_private.h"

/* --- ferrulectl ------------------------------------------------------------------------------ */

/* Runs ferrulectl against brokers (comma list; NULL or empty: none) with args. Returns the exit
   status or -1; the output goes to out. */
static int
ctl_run (harness_t *self, const char *brokers, bool json, char **args, mem_buf_t *out)
{
    if (!hx_need_binary (BIN_CTL, "ferrulectl"))
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
    hx_env_from_parent (&env);
    /* Without a broker, make sure ferrulectl's default cannot reach a broker of scripts/run-local. */
    hx_env_put (&env, "FERRULE_BROKER_URL", have_brokers ? brokers : DEAD_BROKER);
    char **envp = hx_env_take (&env);
    char *log = hx_strfmt ("%s/ferrulectl.log", self->workdir);
    bool too_large = false;
    int status = hx_run_capture (argv, envp, log, CTL_TIMEOUT_MS, out, &too_large);
    if (too_large) {
        hx_say ("ferrulectl printed more than %d bytes: output cut", OUTPUT_MAX);
        status = -1;
    }
    mem_free (log);
    hx_strv_free (&argv);
    hx_strv_free (&envp);
    return status;
}

static json_t *
parse_output (mem_buf_t *out)
{
    if (out->len == 0) {
        hx_say ("ferrulectl printed nothing on standard output");
        return NULL;
    }
    json_error_t error;
    json_t *value = json_loadb (out->data, out->len, JSON_DECODE_ANY, &error);
    if (!value)
        /* not the output itself: it may hold a token */
        hx_say ("ferrulectl printed %zu bytes that are not JSON", out->len);
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
    hx_strv_free (&args);
    return value;
}

json_t *
harness_ctl (harness_t *self, int *exit_code, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = hx_strv_new (arg0, ap);
    va_end (ap);
    return ctl_json (self, self->brokers_csv, exit_code, args);
}

json_t *
harness_ctl_at (harness_t *self, const char *brokers, int *exit_code, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = hx_strv_new (arg0, ap);
    va_end (ap);
    return ctl_json (self, brokers, exit_code, args);
}

int
harness_ctl_text (harness_t *self, int *exit_code, char **stdout_text, const char *arg0, ...)
{
    va_list ap;
    va_start (ap, arg0);
    char **args = hx_strv_new (arg0, ap);
    va_end (ap);
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    int status = ctl_run (self, self->brokers_csv, false, args, &out);
    if (exit_code)
        *exit_code = status;
    if (stdout_text)
        *stdout_text = mem_strndup (out.data ? out.data : "", out.len);
    buf_free_secret (&out);
    hx_strv_free (&args);
    return status >= 0 ? 0 : -1;
}

int
harness_migrate (harness_t *self, char **stdout_text, const char *arg0, ...)
{
    if (!hx_need_binary (BIN_MIGRATE, "ferrule-migrate"))
        return -1;
    va_list ap;
    va_start (ap, arg0);
    char **args = hx_strv_new (arg0, ap);
    va_end (ap);
    size_t n = 0;
    while (args [n])
        n++;
    char **argv = mem_alloc ((n + 2) * sizeof *argv);
    argv [0] = mem_strdup (BIN_MIGRATE);
    for (size_t i = 0; i < n; i++)
        argv [i + 1] = mem_strdup (args [i]);
    env_t env;
    hx_env_from_parent (&env);
    hx_env_put (&env, "FERRULE_DATABASE_URL", self->database_url);
    hx_env_put (&env, "FERRULE_ENCRYPTION_KEY", self->encryption_key);
    hx_env_apply (&env, &self->extras);
    char **envp = hx_env_take (&env);
    char *log = hx_strfmt ("%s/migrate-%s.log", self->workdir, arg0);
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    int status = hx_run_capture (argv, envp, log, MIGRATE_TIMEOUT_MS, &out, NULL);
    if (stdout_text)
        *stdout_text = mem_strndup (out.data ? out.data : "", out.len);
    buf_free_secret (&out);
    mem_free (log);
    hx_strv_free (&argv);
    hx_strv_free (&args);
    hx_strv_free (&envp);
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
        hx_say ("harness_wait_ready: no broker was started");
        return -1;
    }
    long long deadline = hx_now_ms () + timeout_ms;
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
                last = hx_strfmt ("broker%d (%s): exit %d, ok %s, workers %lld, partitions_owned %lld "
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
        if (hx_now_ms () >= deadline)
            break;
        hx_sleep_ms (100);
    }
    hx_say ("not ready within %d ms (wanted %d workers): last answer from %s", timeout_ms, workers,
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
    char *url = hx_strfmt ("http://127.0.0.1:%d%s", self->fake_port, path);
    char *payload = body ? json_dumps (body, JSON_COMPACT) : NULL;
    struct curl_slist *headers = NULL;
    mem_buf_t out;
    mem_buf_init (&out, OUTPUT_MAX);
    long status = 0;
    CURL *curl = curl_easy_init ();
    if (!curl) {
        hx_say ("could not create a curl handle");
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
        hx_say ("%s %s at the fake provider failed: %s", method, path, curl_easy_strerror (rc));
        goto out;
    }
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    if (out.len == 0)
        value = json_object ();
    else {
        value = json_loadb (out.data, out.len, JSON_DECODE_ANY, NULL);
        if (!value)
            hx_say ("%s %s at the fake provider answered %ld with %zu bytes that are not JSON", method,
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
        hx_say ("%s %s at the fake provider answered %ld: %s%s%s", method, path, status,
             json_is_string (err) ? json_string_value (err) : "(no error field)",
             json_is_string (desc) ? ": " : "", json_is_string (desc) ? json_string_value (desc) : "");
        json_decref (value);
        value = NULL;
    }
    return value;
}
