/* test_gateway.c - ferrule-gateway end to end over real HTTP: the callback page of every
 * outcome (the browser's steps done with libcurl, which does not follow redirects), return_to
 * and its allow-list, security headers, the HTTP API's statuses by error class, bearer keys of
 * named clients and of workspaces (revocation effective at once), body caps, a slow client,
 * dashboard links, sessions and CSRF. Pages and replies can hold tokens: never printed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <zmq.h>
#include "client.h"
#include "clock.h"
#include "codec.h"
#include "curve.h"
#include "itest.h"

#define APP_ORIGIN  "http://app.example.test"
#define SVC_KEY     "svc-key-0123456789abcdef"      /* the named client "svc" */
#define ADMIN_KEY   "admin-key-0123456789abcdef"    /* the named client "ops" */
#define SESSION_KEY "0123456789abcdef0123456789abcdef"  /* FERRULE_GATEWAY_SESSION_KEY, decoded */

static harness_t *h;
static pid_t gw_pid;
static int gw_port;
static char gw_url [64];
static char callback_uri [96];
static char gw_log [1024];
static int gw_upper_https;              /* the next gateway's public URL: HTTPS://, upper case */
static const char *gw_env [4];          /* "NAME=VALUE" settings of the next gateway only */
static client_t *cli;

/* --- HTTP ------------------------------------------------------------------------------------ */

typedef struct {
    long status;
    char *body;
    char *headers;                  /* all response headers, raw */
} http_t;

static size_t
collect (char *data, size_t size, size_t nmemb, void *userdata)
{
    size_t n = size * nmemb;
    char **buf = userdata;
    size_t have = *buf ? strlen (*buf) : 0;
    if (have + n > (4 << 20))
        return 0;
    *buf = realloc (*buf, have + n + 1);
    memcpy (*buf + have, data, n);
    (*buf) [have + n] = '\0';
    return n;
}

static void
http_free (http_t *r)
{
    free (r->body);
    free (r->headers);
    memset (r, 0, sizeof *r);
}

static pid_t test_pid;               /* this program's; a forked child's requests differ */

/* One request, no redirects followed. headers: NULL-terminated list or NULL. */
static http_t
http (const char *method, const char *url, const char *const *headers, const char *body)
{
    http_t r = { 0, NULL, NULL };
    struct curl_slist *list = NULL;
    CURL *curl = curl_easy_init ();
    assert_non_null (curl);
    for (int i = 0; headers && headers [i]; i++)
        list = curl_slist_append (list, headers [i]);
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp (method, "HEAD") == 0)
        curl_easy_setopt (curl, CURLOPT_NOBODY, 1L);
    curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt (curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt (curl, CURLOPT_HEADERDATA, &r.headers);
    if (body) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long) strlen (body));
    }
    CURLcode c = curl_easy_perform (curl);
    /* a failure in a forked child ends the child: cmocka's jump would run the remaining tests
     * and the teardown in it too, stopping the processes the parent's tests use */
    if (c != CURLE_OK && getpid () != test_pid)
        _exit (3);
    if (c != CURLE_OK)
        fail_msg ("%s %s: %s", method, url, curl_easy_strerror (c));
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup (curl);
    curl_slist_free_all (list);
    if (!r.body)
        r.body = strdup ("");
    if (!r.headers)
        r.headers = strdup ("");
    return r;
}

/* The value of response header name (a new string) or NULL. */
static char *
header (const http_t *r, const char *name)
{
    size_t n = strlen (name);
    for (const char *line = r->headers; line && *line; ) {
        const char *end = strstr (line, "\r\n");
        size_t len = end ? (size_t) (end - line) : strlen (line);
        if (len > n && strncasecmp (line, name, n) == 0 && line [n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return strndup (v, len - (size_t) (v - line));
        }
        if (!end)
            break;
        line = end + 2;
    }
    return NULL;
}

static int
has (const http_t *r, const char *needle)
{
    return strstr (r->body, needle) != NULL;
}

/* GET an authorization URL like a browser; returns the Location the provider redirected to. */
static char *
authorize (const char *url)
{
    http_t r = http ("GET", url, NULL, NULL);
    assert_int_equal (r.status, 302);
    char *loc = header (&r, "Location");
    assert_non_null (loc);
    http_free (&r);
    return loc;
}

/* The value of a hidden field name="NAME" value="..." in a page (a new string) or NULL. */
static char *
form_value (const char *page, const char *name)
{
    char needle [80];
    snprintf (needle, sizeof needle, "name=\"%s\" value=\"", name);
    const char *s = strstr (page, needle);
    if (!s)
        return NULL;
    s += strlen (needle);
    return strndup (s, strcspn (s, "\""));
}

/* --- the gateway process ---------------------------------------------------------------------- */

static int
free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    if (fd < 0 || bind (fd, (struct sockaddr *) &sa, sizeof sa) != 0 || getsockname (fd, (struct sockaddr *) &sa, &len) != 0)
        return -1;
    close (fd);
    return ntohs (sa.sin_port);
}

static void
hex_sha256 (const char *s, char out [65])
{
    unsigned char d [32];
    SHA256 ((const unsigned char *) s, strlen (s), d);
    for (int i = 0; i < 32; i++)
        snprintf (out + 2 * i, 3, "%02x", d [i]);
}

static int
write_file (const char *path, const char *text)
{
    FILE *f = fopen (path, "w");
    if (!f)
        return -1;
    fputs (text, f);
    return fclose (f);
}

static int
start_gateway_with (const char *name, const char *http_bind, const char *drain_ms)
{
    char keys [1024], policy [1024], text [512], a [65], b [65];
    snprintf (keys, sizeof keys, "%s/gateway-client-keys", harness_workdir (h));
    snprintf (policy, sizeof policy, "%s/gateway-policy", harness_workdir (h));
    snprintf (gw_log, sizeof gw_log, "%s/%s.log", harness_workdir (h), name);
    hex_sha256 (SVC_KEY, a);
    hex_sha256 (ADMIN_KEY, b);
    snprintf (text, sizeof text, "# test clients\nsvc %s\nops %s\n", a, b);
    if (write_file (keys, text) != 0
    ||  write_file (policy, "svc read acct1:*\nops * *\n") != 0)
        return -1;
    gw_port = free_port ();
    snprintf (gw_url, sizeof gw_url, "http://127.0.0.1:%d", gw_port);
    snprintf (callback_uri, sizeof callback_uri, "%s/oauth/callback", gw_url);
    char bind [32];
    snprintf (bind, sizeof bind, "127.0.0.1:%d", gw_port);
    gw_pid = fork ();
    if (gw_pid == 0) {
        int fd = open (gw_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2 (fd, 1);
        dup2 (fd, 2);
        setenv ("FERRULE_GATEWAY_BIND", bind, 1);
        char upper [96];
        snprintf (upper, sizeof upper, "HTTPS://127.0.0.1:%d", gw_port);
        setenv ("FERRULE_GATEWAY_PUBLIC_URL", gw_upper_https ? upper : gw_url, 1);
        setenv ("FERRULE_BROKER_URL", harness_brokers (h), 1);
        setenv ("FERRULE_GATEWAY_RETURN_TO_ORIGINS", APP_ORIGIN, 1);
        setenv ("FERRULE_GATEWAY_SESSION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", 1);  /* SESSION_KEY */
        setenv ("FERRULE_GATEWAY_CLIENT_KEYS_FILE", keys, 1);
        setenv ("FERRULE_POLICY_FILE", policy, 1);
        setenv ("FERRULE_GATEWAY_PROVIDERS", "fakebox,fakegoogle", 1);
        setenv ("FERRULE_GATEWAY_CONNECTION_TIMEOUT_S", "3", 1);
        setenv ("FERRULE_LOG_LEVEL", "info", 1);
        if (http_bind)
            setenv ("FERRULE_HTTP_BIND", http_bind, 1);
        if (drain_ms)
            setenv ("FERRULE_GATEWAY_DRAIN_MS", drain_ms, 1);
        for (int i = 0; i < 4 && gw_env [i]; i++)
            putenv ((char *) gw_env [i]);
        execl (FERRULE_GATEWAY_BIN, "ferrule-gateway", (char *) NULL);
        _exit (127);
    }
    for (int i = 0; i < 200; i++) {
        usleep (50000);
        char url [128];
        snprintf (url, sizeof url, "%s/static/ferrule.css", gw_url);
        CURL *c = curl_easy_init ();
        curl_easy_setopt (c, CURLOPT_URL, url);
        curl_easy_setopt (c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt (c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 1000L);
        CURLcode rc = curl_easy_perform (c);
        curl_easy_cleanup (c);
        if (rc == CURLE_OK)
            return 0;
        if (waitpid (gw_pid, NULL, WNOHANG) == gw_pid) {
            fprintf (stderr, "ferrule-gateway exited at start: see %s\n", gw_log);
            return -1;
        }
    }
    return -1;
}

static int
start_gateway (void)
{
    return start_gateway_with ("gateway", NULL, NULL);
}

/* The first gateway's globals, kept while a test runs another (a second one is started with
 * start_gateway_with, which sets them) and put back after. */
typedef struct {
    pid_t pid;
    int port;
    char url [sizeof gw_url], callback [sizeof callback_uri], log [sizeof gw_log];
} gw_saved_t;

static gw_saved_t
gw_save (void)
{
    gw_saved_t s = { gw_pid, gw_port, "", "", "" };
    memcpy (s.url, gw_url, sizeof s.url);
    memcpy (s.callback, callback_uri, sizeof s.callback);
    memcpy (s.log, gw_log, sizeof s.log);
    return s;
}

static void
gw_restore (const gw_saved_t *s)
{
    gw_pid = s->pid;
    gw_port = s->port;
    memcpy (gw_url, s->url, sizeof gw_url);
    memcpy (callback_uri, s->callback, sizeof callback_uri);
    memcpy (gw_log, s->log, sizeof gw_log);
}

static int
stop_gateway (void)
{
    int status = -1;
    if (gw_pid <= 0)
        return 0;
    kill (gw_pid, SIGTERM);
    for (int i = 0; i < 200 && waitpid (gw_pid, &status, WNOHANG) != gw_pid; i++)
        usleep (50000);
    if (status == -1) {
        kill (gw_pid, SIGKILL);
        waitpid (gw_pid, &status, 0);
    }
    gw_pid = 0;
    return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
}

/* 1 when the gateway's log holds needle. */
static int
log_has (const char *needle)
{
    FILE *f = fopen (gw_log, "r");
    char line [8192];
    int found = 0;
    while (f && !found && fgets (line, sizeof line, f))
        found = strstr (line, needle) != NULL;
    if (f)
        fclose (f);
    return found;
}

/* The number after the first needle in the gateway's log, -1 when none. */
static long
log_number_after (const char *needle)
{
    FILE *f = fopen (gw_log, "r");
    char line [8192];
    long n = -1;
    while (f && n < 0 && fgets (line, sizeof line, f)) {
        const char *p = strstr (line, needle);
        if (p)
            n = strtol (p + strlen (needle), NULL, 10);
    }
    if (f)
        fclose (f);
    return n;
}

/* How many lines of the file at path (the gateway's log, a broker's audit log) hold needle; 0
 * while it does not exist. */
static int
count_lines (const char *path, const char *needle)
{
    FILE *f = fopen (path, "r");
    char line [8192];
    int n = 0;
    while (f && fgets (line, sizeof line, f))
        n += strstr (line, needle) != NULL;
    if (f)
        fclose (f);
    return n;
}

/* Waits (up to 20 s: a bound against a hang, not a speed check) for a new line with needle. */
static void
wait_log_count (const char *needle, int above)
{
    for (int i = 0; i < 400 && count_lines (gw_log, needle) <= above; i++) {
        assert_int_equal (waitpid (gw_pid, NULL, WNOHANG), 0);     /* the gateway still runs */
        usleep (50000);
    }
    if (count_lines (gw_log, needle) <= above)
        fail_msg ("no new \"%s\" line in %s", needle, gw_log);
}

/* --- a broker played by the test ---------------------------------------------------------------- */

/* A broker frontend of the test's own, with the harness's broker key (the gateway's clients pin
 * its public key), that answers a ping ok and every other request with the error code it is told:
 * for the answers the real service gives in a rolling upgrade (an old worker's or broker's
 * unknown_operation) or at a request's deadline (timeout), which a test cannot wait for. */
typedef struct {
    void *ctx, *sock;
    char endpoint [64];
    pthread_t thread;
    atomic_int stop;
    atomic_int asked;               /* requests answered with the error, pings not counted */
    const char *code, *message, *hint;
} fake_broker_t;

static void *
fake_broker_run (void *arg)
{
    fake_broker_t *fb = arg;
    while (!atomic_load (&fb->stop)) {
        zmq_pollitem_t item = { fb->sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 50) != 1)
            continue;
        zmq_msg_t parts [4];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init (&m);
            zmq_msg_recv (&m, fb->sock, 0);
            more = zmq_msg_more (&m);
            if (n < 4)
                parts [n++] = m;
            else
                zmq_msg_close (&m);
        }
        codec_msg_t *msg = NULL;
        char err [128];
        json_t *req = NULL;
        if (n == 4 && codec_decode (zmq_msg_data (&parts [3]), zmq_msg_size (&parts [3]), &msg, err, sizeof err) == FR_OK)
            req = codec_to_json (codec_msg_root (msg));
        codec_msg_destroy (&msg);
        const char *op = json_string_value (json_object_get (req, "op"));
        const char *rid = json_string_value (json_object_get (req, "rid"));
        if (op && rid) {
            json_t *reply = strcmp (op, "ping") == 0
                          ? json_pack ("{s:s, s:b, s:s}", "rid", rid, "ok", 1, "service", "ferrule")
                          : json_pack ("{s:s, s:b, s:{s:s, s:s, s:s}}", "rid", rid, "ok", 0, "error", "code", fb->code,
                                       "message", fb->message, "hint", fb->hint);
            codec_builder_t *b = codec_builder_new ();
            codec_json (b, reply);
            size_t len;
            const char *data = codec_builder_data (b, &len);
            zmq_send (fb->sock, zmq_msg_data (&parts [0]), zmq_msg_size (&parts [0]), ZMQ_SNDMORE);
            zmq_send (fb->sock, "", 0, ZMQ_SNDMORE);
            zmq_send (fb->sock, "FRL1", 4, ZMQ_SNDMORE);
            zmq_send (fb->sock, data, len, 0);
            codec_builder_destroy (&b);
            json_decref (reply);
            if (strcmp (op, "ping") != 0)
                atomic_fetch_add (&fb->asked, 1);
        }
        json_decref (req);
        for (int i = 0; i < n; i++)
            zmq_msg_close (&parts [i]);
    }
    return NULL;
}

/* Starts fb answering code, message and hint on a port of its own (fb->endpoint). */
static void
fake_broker_start (fake_broker_t *fb, const char *code, const char *message, const char *hint)
{
    char key [CURVE_Z85_LEN + 1], path [1024], err [256];
    int one = 1, zero = 0;
    memset (fb, 0, sizeof *fb);
    fb->code = code;
    fb->message = message;
    fb->hint = hint;
    snprintf (path, sizeof path, "%s/broker.key", harness_keys_dir (h));
    assert_int_equal (curve_read_key_file (path, key, err, sizeof err), FR_OK);
    fb->ctx = zmq_ctx_new ();
    fb->sock = zmq_socket (fb->ctx, ZMQ_ROUTER);
    zmq_setsockopt (fb->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (fb->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt (fb->sock, ZMQ_CURVE_SECRETKEY, key, CURVE_Z85_LEN);
    memset (key, 0, sizeof key);
    assert_int_equal (zmq_bind (fb->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof fb->endpoint;
    assert_int_equal (zmq_getsockopt (fb->sock, ZMQ_LAST_ENDPOINT, fb->endpoint, &len), 0);
    assert_int_equal (pthread_create (&fb->thread, NULL, fake_broker_run, fb), 0);
}

static void
fake_broker_stop (fake_broker_t *fb)
{
    atomic_store (&fb->stop, 1);
    pthread_join (fb->thread, NULL);
    zmq_close (fb->sock);
    zmq_ctx_term (fb->ctx);
}

/* A gateway of its own whose only broker is fb ("fake-broker.log"); the first gateway's globals
 * are kept in saved, for gw_restore after stop_gateway. */
static void
start_gateway_at_fake_broker (const fake_broker_t *fb, gw_saved_t *saved)
{
    static char broker_url [96];
    snprintf (broker_url, sizeof broker_url, "FERRULE_BROKER_URL=%s", fb->endpoint);
    *saved = gw_save ();
    gw_env [0] = broker_url;
    int started = start_gateway_with ("fake-broker", NULL, NULL);
    gw_env [0] = NULL;
    if (started != 0) {
        gw_restore (saved);
        fail_msg ("the gateway at the test's broker did not start");
    }
}

/* --- setup ------------------------------------------------------------------------------------ */

/* fakebad: fakebox with a wrong client secret (the provider answers invalid_client). */
static int
write_providers (void)
{
    json_error_t jerr;
    json_t *root = json_load_file (harness_providers_file (h), 0, &jerr);
    if (!root)
        return -1;
    json_t *bad = json_deep_copy (json_object_get (root, "fakebox"));
    char url [256];
    snprintf (url, sizeof url, "http://127.0.0.1:%d/fakebad/authorize", harness_port (h));
    json_object_set_new (bad, "authorization_url", json_string (url));
    snprintf (url, sizeof url, "http://127.0.0.1:%d/fakebad/token", harness_port (h));
    json_object_set_new (bad, "token_url", json_string (url));
    json_object_set_new (bad, "client_secret", json_string ("not-the-secret"));
    json_object_set_new (root, "fakebad", bad);
    /* fakegoogleoff: fakegoogle as a Google entry whose own authorization_params lack
       access_type=offline (they replace the built-in ones whole): no refresh token ever comes */
    json_t *off = json_deep_copy (json_object_get (root, "fakegoogle"));
    json_object_set_new (off, "family", json_string ("google"));
    json_object_set_new (off, "authorization_params", json_pack ("{s:s}", "prompt", "consent"));
    json_object_set_new (root, "fakegoogleoff", off);
    /* fakegrant: fakebox whose revocation ends the account's whole grant, as Google's does */
    json_t *grant = json_deep_copy (json_object_get (root, "fakebox"));
    json_object_set_new (grant, "revocation_ends_grant", json_true ());
    json_object_set_new (root, "fakegrant", grant);
    char path [1024];
    snprintf (path, sizeof path, "%s/providers-gateway.json", harness_workdir (h));
    int rc = json_dump_file (root, path, JSON_INDENT (2));
    json_decref (root);
    if (rc != 0)
        return -1;
    harness_set_env (h, "FERRULE_PROVIDERS_FILE", path);
    return 0;
}

static int
setup (void **state)
{
    h = harness_new ("gateway");
    if (!h || write_providers () != 0 || harness_start_broker (h) < 0 || harness_start_worker (h, "w1") != 0
    ||  harness_wait_ready (h, 1, 20000) != 0 || start_gateway () != 0)
        return -1;
    const char *names [] = { "fakebox", "fakegoogle", "fakebad" };
    for (int i = 0; i < 3; i++)
        itest_fake_config (h, names [i], json_pack ("{s:[s]}", "redirect_uris", callback_uri));
    setenv ("FERRULE_GATEWAY_PUBLIC_URL", gw_url, 1);   /* ferrulectl dashboard-link's base */
    cli = client_new (harness_brokers (h));
    return cli ? 0 : -1;
}

static int
teardown (void **state)
{
    client_destroy (&cli);
    int rc = stop_gateway ();
    if (rc != 0)
        fprintf (stderr, "ferrule-gateway exited with %d on SIGTERM: see %s\n", rc, gw_log);
    int t = itest_teardown (&h);
    return rc == 0 && t == 0 ? 0 : -1;
}

/* --- protocol helpers --------------------------------------------------------------------------- */

static json_t *
call (const char *op, json_t *args)
{
    json_t *r = client_call (cli, op, args, 20000);
    json_decref (args);
    return r;
}

/* A connect over the protocol with our callback; returns the authorization URL (a new string). */
static char *
connect_url (const char *id, const char *provider, const char *scopes, const char *return_to)
{
    json_t *args = json_pack ("{s:s, s:s, s:s}", "integration", id, "provider", provider, "redirect_uri", callback_uri);
    if (scopes)
        json_object_set_new (args, "scopes", json_pack ("[s]", scopes));
    if (return_to)
        json_object_set_new (args, "return_to", json_string (return_to));
    json_t *r = call ("connect", args);
    const char *url = json_string_value (json_object_get (r, "authorization_url"));
    if (!url)
        fail_msg ("connect %s: %s", id, client_error_code (r));
    char *out = strdup (url);
    json_decref (r);
    return out;
}

/* connect, the provider's page, then the gateway's callback page for that redirect. */
static http_t
flow (const char *id, const char *provider, const char *scopes, const char *return_to, char **location)
{
    char *url = connect_url (id, provider, scopes, return_to);
    char *loc = authorize (url);
    assert_true (strncmp (loc, callback_uri, strlen (callback_uri)) == 0);
    http_t r = http ("GET", loc, NULL, NULL);
    free (url);
    if (location)
        *location = loc;
    else
        free (loc);
    return r;
}

/* The callback URL for a provider that redirected with ?error=...: a fresh connect's state. */
static http_t
flow_error (const char *id, const char *error, const char *description)
{
    char *url = connect_url (id, "fakebox", "read", NULL);
    const char *s = strstr (url, "state=");
    assert_non_null (s);
    s += 6;
    char state [300];
    snprintf (state, sizeof state, "%.*s", (int) strcspn (s, "&"), s);
    size_t n = strlen (callback_uri) + strlen (error) + strlen (description) + strlen (state) + 64;
    char *target = malloc (n);
    assert_non_null (target);
    snprintf (target, n, "%s?error=%s&error_description=%s&state=%s", callback_uri, error, description, state);
    free (url);
    http_t r = http ("GET", target, NULL, NULL);
    free (target);
    return r;
}

/* Presses the page's retry button: POST /oauth/retry; returns the answer. */
static http_t
press_retry (const http_t *page)
{
    char *token = form_value (page->body, "retry_token");
    assert_non_null (token);
    char body [512], url [128];
    snprintf (body, sizeof body, "retry_token=%s", token);
    snprintf (url, sizeof url, "%s/oauth/retry", gw_url);
    const char *hdr [] = { "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, hdr, body);
    free (token);
    return r;
}

/* --- callback pages ------------------------------------------------------------------------------ */

static void
test_callback_connected_redirects_to_return_to (void **state)
{
    char *loc = NULL;
    http_t r = flow ("acct1:box", "fakebox", "read", APP_ORIGIN "/done?x=1", &loc);
    assert_int_equal (r.status, 303);
    char *where = header (&r, "Location");
    assert_non_null (where);
    assert_string_equal (where, APP_ORIGIN "/done?x=1&integration=acct1%3Abox&status=active");
    assert_null (strstr (where, "code"));
    assert_null (strstr (where, "state"));
    free (where);
    http_free (&r);

    /* the same callback URL again (a reload): its own page, not a second exchange */
    r = http ("GET", loc, NULL, NULL);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "expired or was already used"));
    assert_true (has (&r, "already completed"));
    assert_true (has (&r, "acct1:box"));
    assert_false (has (&r, "retry_token"));
    http_free (&r);
    free (loc);
}

static void
test_callback_connected_page_and_security_headers (void **state)
{
    http_t r = flow ("acct1:plain", "fakebox", "read", NULL, NULL);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "<h1>Connected to fakebox</h1>"));
    assert_true (has (&r, "<html lang=\"en\">"));
    assert_true (has (&r, "name=\"viewport\""));
    const struct { const char *name, *want; } want [] = {
        { "Content-Security-Policy", "default-src 'none'" },
        { "Content-Security-Policy", "frame-ancestors 'none'" },
        /* forms post to this gateway, and their answers' redirects go there or to a provider: over
           http (this test's gateway, a local one) providers may be http too */
        { "Content-Security-Policy", "form-action 'self' https: http:;" },
        { "Referrer-Policy", "strict-origin" },
        { "Cache-Control", "no-store" },
        { "X-Content-Type-Options", "nosniff" },
        { "X-Frame-Options", "DENY" },
        { "Content-Type", "text/html; charset=utf-8" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        char *v = header (&r, want [i].name);
        if (!v || !strstr (v, want [i].want))
            fail_msg ("header %s is \"%s\", wanted \"%s\"", want [i].name, v ? v : "(none)", want [i].want);
        free (v);
    }
    /* the origin alone in a Referer, never the page's query (a code, a link token); and not
       no-referrer, which makes a browser post our own forms with "Origin: null" */
    char *policy = header (&r, "Referrer-Policy");
    assert_string_equal (policy, "strict-origin");
    free (policy);
    assert_true (has (&r, "<meta name=\"referrer\" content=\"strict-origin\">"));
    http_free (&r);
}

static void
test_callback_access_denied_try_again (void **state)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 1));
    http_t r = flow ("acct1:denied", "fakebox", "read", NULL, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 0));
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "Access to fakebox was not granted"));
    assert_true (has (&r, "action=\"/oauth/retry\""));
    assert_true (has (&r, ">Try again</button>"));

    /* Try again: a fresh connect for the same integration, provider and scopes */
    http_t t = press_retry (&r);
    assert_int_equal (t.status, 303);
    char *where = header (&t, "Location");
    assert_non_null (where);
    char want [128];
    snprintf (want, sizeof want, "http://127.0.0.1:%d/fakebox/authorize?", harness_port (h));
    assert_true (strncmp (where, want, strlen (want)) == 0);
    assert_non_null (strstr (where, "scope=read"));
    /* and it finishes: the same integration gets connected */
    char *loc = authorize (where);
    http_t done = http ("GET", loc, NULL, NULL);
    assert_int_equal (done.status, 200);
    assert_true (has (&done, "acct1:denied"));
    free (loc);
    free (where);
    http_free (&done);
    http_free (&t);

    /* single use */
    t = press_retry (&r);
    assert_int_equal (t.status, 400);
    assert_true (has (&t, "expired or was already used"));
    http_free (&t);
    http_free (&r);
}

/* A provider's description longer than the callback keeps (2048 bytes) is shortened: the
 * callback was refused whole as damaged, the user's refusal never recorded and its state left
 * unspent. In UTF-8 ("é" is 2 bytes) so that the cut falls between characters. */
static void
test_callback_long_description (void **state)
{
    char desc [6 * 2001 + 1];               /* 3001 bytes decoded */
    size_t at = 0;
    for (int i = 0; i < 2001; i++)
        at += (size_t) snprintf (desc + at, sizeof desc - at, i % 2 ? "%%C3%%A9" : "x");
    http_t r = flow_error ("acct1:longdesc", "access_denied", desc);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "Access to fakebox was not granted"));
    assert_true (has (&r, ">Try again</button>"));
    http_free (&r);
    assert_int_equal (harness_sql_int (h, "SELECT count (*) FROM pending_authorizations WHERE integration_id = "
                                          "'acct1:longdesc' AND outcome = 'access_denied'"), 1);
}

static void
test_callback_code_expired_or_used (void **state)
{
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    http_t r = flow ("acct1:expired", "fakebox", "read", NULL, NULL);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "The sign-in with fakebox did not finish"));
    assert_true (has (&r, "within a minute"));
    assert_true (has (&r, "back button"));
    assert_true (has (&r, ">Try again</button>"));
    http_free (&r);
}

static void
test_callback_state_invalid (void **state)
{
    /* a state nobody issued */
    char url [256];
    snprintf (url, sizeof url, "%s?code=abc&state=never-issued", callback_uri);
    http_t r = http ("GET", url, NULL, NULL);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "This sign-in link has expired or was already used"));
    assert_true (has (&r, "Start again"));
    http_free (&r);
    /* with the longest code the callback takes (16384 characters), percent-encoded: the same page,
       where libmicrohttpd answered a request line that long with its own page, no code in it */
    size_t n = strlen (callback_uri) + 3 * 16384 + 64;
    char *big = malloc (n);
    assert_non_null (big);
    int at = snprintf (big, n, "%s?state=never-issued&code=", callback_uri);
    for (int i = 0; i < 16384; i++)
        at += snprintf (big + at, n - (size_t) at, "%%61");
    r = http ("GET", big, NULL, NULL);
    free (big);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "This sign-in link has expired or was already used"));
    http_free (&r);

    /* an expired state: Try again works */
    char *auth = connect_url ("acct1:late", "fakebox", "read", NULL);
    char *loc = authorize (auth);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET expires_at = now () - interval '1 second' "
                                      "WHERE integration_id = 'acct1:late'"), 0);
    r = http ("GET", loc, NULL, NULL);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "This sign-in link has expired or was already used"));
    assert_true (has (&r, ">Try again</button>"));
    http_t t = press_retry (&r);
    assert_int_equal (t.status, 303);
    http_free (&t);
    http_free (&r);
    free (loc);
    free (auth);
}

static void
test_callback_scopes_reduced (void **state)
{
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "grant_scopes", "read"));
    char *url = NULL;
    json_t *args = json_pack ("{s:s, s:s, s:s, s:[s, s]}", "integration", "acct1:reduced", "provider", "fakebox",
                              "redirect_uri", callback_uri, "scopes", "read", "write");
    json_t *c = call ("connect", args);
    url = strdup (json_string_value (json_object_get (c, "authorization_url")));
    json_decref (c);
    char *loc = authorize (url);
    http_t r = http ("GET", loc, NULL, NULL);
    itest_fake_config (h, "fakebox", json_pack ("{s:n}", "grant_scopes"));
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "Connected to fakebox with fewer permissions"));
    assert_true (has (&r, "<code>write</code>"));
    assert_false (has (&r, "<code>read</code>"));
    assert_true (has (&r, ">Approve all permissions</button>"));
    http_t t = press_retry (&r);
    assert_int_equal (t.status, 303);
    char *where = header (&t, "Location");
    assert_non_null (strstr (where, "scope=read%20write"));
    free (where);
    http_free (&t);
    http_free (&r);
    free (loc);
    free (url);
}

static void
test_callback_invalid_scope (void **state)
{
    http_t r = flow_error ("acct1:badscope", "invalid_scope", "unknown%20scope");
    assert_true (has (&r, "fakebox refused the permissions Ferrule asked for"));
    assert_true (has (&r, "<code>read</code>"));
    /* the application's configuration: approving again asks for the same permissions (it offered
       "Approve all permissions", which failed the same way each time) */
    assert_false (has (&r, "</button>"));
    assert_true (has (&r, "id=\"contact-support\""));
    assert_int_equal (r.status, 500);
    http_free (&r);
}

static void
test_callback_no_refresh_token (void **state)
{
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    http_t r = flow ("acct1:google", "fakegoogle", "read", NULL, NULL);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (r.status, 409);
    assert_true (has (&r, "fakegoogle connected without lasting access"));
    assert_true (has (&r, "remove Ferrule's access"));
    /* the guide's page for Google, and offline access for the providers that ask for it */
    assert_true (has (&r, "https://myaccount.google.com/permissions"));
    assert_true (has (&r, "offline access"));
    assert_true (has (&r, ">Reconnect</button>"));
    http_free (&r);
}

/* A Google entry that does not ask for offline access: no consent screen brings a refresh token,
 * so the page sends the user to support, with no Reconnect (it showed Google's steps and a
 * Reconnect button, and the user went round them for nothing). */
static char *dashboard_link (const char *ws, int ttl);
static char *open_session (const char *link);

/* The integration page of id, opened with a session of workspace ws: the page (200 asserted)
 * into *page, and its "What to do" list (a new string; printed). */
static char *
dashboard_steps (const char *ws, const char *id, http_t *page)
{
    char *link = dashboard_link (ws, 0);
    char *cookie = open_session (link);
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard/integrations/%s", gw_url, id);
    const char *hdr [] = { cookie, NULL };
    *page = http ("GET", url, hdr, NULL);
    assert_int_equal (page->status, 200);
    const char *ol = strstr (page->body, "<ol id=\"what-to-do\">");
    assert_non_null (ol);
    char *steps = strndup (ol, (size_t) (strstr (ol, "</ol>") - ol));
    printf ("what to do on %s's page: %s\n", id, steps);
    free (cookie);
    free (link);
    return steps;
}

static void
test_callback_no_refresh_token_of_the_entry (void **state)
{
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    http_t r = flow ("acct1:googleoff", "fakegoogleoff", "read", NULL, NULL);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    printf ("a Google entry without access_type=offline: %ld\n", r.status);
    assert_true (has (&r, "id=\"contact-support\""));
    assert_true (has (&r, "no_refresh_token"));
    assert_false (has (&r, "</button>"));
    assert_false (has (&r, "Reconnect"));
    assert_false (has (&r, "myaccount.google.com"));
    http_free (&r);

    /* the integration's dashboard page says the same: no Reconnect, nor steps at Google that
       cannot help (they showed "Remove this application's access ... myaccount.google.com" and
       "Press Reconnect", and the page a Reconnect button) */
    http_t page;
    char *steps = dashboard_steps ("acct1:", "acct1:googleoff", &page);
    assert_null (strstr (steps, "myaccount.google.com"));
    assert_null (strstr (steps, "Reconnect"));
    assert_non_null (strstr (steps, "Contact the application's support"));
    assert_false (has (&page, ">Reconnect</button>"));
    free (steps);
    http_free (&page);
}

static void
test_callback_provider_unavailable (void **state)
{
    itest_fault (h, "fakebox", "status", 1, 503, -1, -1);
    http_t r = flow ("acct1:flaky", "fakebox", "read", NULL, NULL);
    assert_int_equal (r.status, 503);
    char *ra = header (&r, "Retry-After");
    assert_non_null (ra);
    free (ra);
    assert_true (has (&r, "fakebox is having trouble right now"));
    assert_true (has (&r, ">Try again</button>"));
    http_free (&r);
}

/* Contact support: the page's reference finds the log line with every fact. */
static void
check_support (http_t *r, const char *const *facts)
{
    assert_int_equal (r->status, 500);
    assert_true (has (r, "Contact support"));
    const char *s = strstr (r->body, "id=\"reference\">");
    assert_non_null (s);
    s += strlen ("id=\"reference\">");
    char ref [32], needle [64];
    snprintf (ref, sizeof ref, "%.*s", (int) strcspn (s, "<"), s);
    assert_int_equal (strlen (ref), 13);
    snprintf (needle, sizeof needle, "support reference %s", ref);
    FILE *f = fopen (gw_log, "r");
    char line [8192];
    int found = 0;
    while (f && fgets (line, sizeof line, f))
        if (strstr (line, needle)) {
            found = 1;
            for (int i = 0; facts [i]; i++)
                if (!strstr (line, facts [i]))
                    fail_msg ("the log line of %s lacks \"%s\"", ref, facts [i]);
        }
    if (f)
        fclose (f);
    assert_true (found);
}

static void
test_callback_redirect_uri_mismatch (void **state)
{
    http_t r = flow_error ("acct1:mismatch", "redirect_uri_mismatch", "The%20redirect%20URI%20is%20not%20registered");
    assert_true (has (&r, "fakebox is not set up for this sign-in"));
    assert_true (has (&r, "redirect_uri_mismatch"));
    char sent [160];
    snprintf (sent, sizeof sent, "redirect URI sent \\\"%s\\\"", callback_uri);
    const char *facts [] = { "provider \\\"fakebox\\\"", sent, "provider error \\\"redirect_uri_mismatch\\\"",
                             "The redirect URI is not registered", NULL };
    check_support (&r, facts);
    http_free (&r);
}

static void
test_callback_invalid_client (void **state)
{
    http_t r = flow ("acct1:badclient", "fakebad", "read", NULL, NULL);
    assert_true (has (&r, "fakebad did not accept Ferrule&#39;s application"));
    const char *facts [] = { "provider \\\"fakebad\\\"", "invalid_client", NULL };
    check_support (&r, facts);
    http_free (&r);
}

static void
test_callback_bad_link (void **state)
{
    char url [256];
    snprintf (url, sizeof url, "%s?state=abc", callback_uri);     /* neither code nor error */
    http_t r = http ("GET", url, NULL, NULL);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "incomplete or damaged"));
    http_free (&r);
    /* markup in the provider's words is shown as text */
    r = flow_error ("acct1:xss", "access_denied", "%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_false (has (&r, "<script>"));
    http_free (&r);
}

/* A callback the service could not handle for a cause of its own (an old broker or worker of a
 * rolling upgrade answers unknown_operation, played here by the test's broker) says that the
 * service could not finish the sign-in and what to do, with a 5xx status; it said "This sign-in
 * link is incomplete or damaged" (400), blaming the user's link. A link that is incomplete is
 * still told so (test_callback_bad_link). */
/* A callback with state (its code derived) through a gateway whose broker answers every request
 * with code, message and hint; the page, how many requests the broker was asked (*asked), and the
 * gateway's exit status (*rc). */
static http_t
callback_at_fake_broker (const char *code, const char *message, const char *hint, const char *state, int *asked,
                         int *rc)
{
    fake_broker_t fb;
    gw_saved_t saved;
    fake_broker_start (&fb, code, message, hint);
    start_gateway_at_fake_broker (&fb, &saved);
    char url [256];
    snprintf (url, sizeof url, "%s?state=%s&code=%s-code", callback_uri, state, state);
    http_t r = http ("GET", url, NULL, NULL);
    *asked = atomic_load (&fb.asked);
    *rc = stop_gateway ();
    gw_restore (&saved);
    fake_broker_stop (&fb);
    const char *h1 = strstr (r.body, "<h1>");
    printf ("a callback answered %s: %ld, %.*s\n", code, r.status, h1 ? (int) strcspn (h1, "\n") : 1, h1 ? h1 : "-");
    return r;
}

static void
test_callback_the_service_could_not_handle (void **state)
{
    int asked, rc;
    http_t r = callback_at_fake_broker ("unknown_operation", "unknown operation \"callback\"",
                                        "check that the client and the service run the same release",
                                        "upgrade-0123456789abcdef", &asked, &rc);
    assert_int_equal (rc, 0);
    assert_true (asked >= 1);
    assert_int_equal (r.status, 503);
    assert_false (has (&r, "incomplete or damaged"));
    assert_true (has (&r, "could not finish the sign-in"));
    assert_true (has (&r, "not with your link"));
    assert_true (has (&r, "tell the service's operator"));
    assert_true (has (&r, "unknown_operation"));
    http_free (&r);
}

/* A callback answered timeout (the broker's answer at the request's deadline, played by the
 * test's broker: the gateway's own 30 s are too long to wait) says the outcome is not known, since
 * the worker may have exchanged the code after the gateway stopped waiting, and to check the
 * dashboard or the application before starting again; no Try again is offered (no attempt is
 * read after a timeout). It said Ferrule "could not finish the sign-in just now", under "Ferrule is
 * busy", and to start again. */
static void
test_callback_timeout_says_the_outcome_is_unknown (void **state)
{
    int asked, rc;
    http_t r = callback_at_fake_broker ("timeout", "worker \"w1\" did not answer within 30.0 s",
                                        "the request may have been carried out: check its outcome before sending it "
                                        "again", "slow-0123456789abcdef", &asked, &rc);
    assert_int_equal (rc, 0);
    assert_int_equal (asked, 1);                /* the callback; the attempt is not asked after it */
    assert_int_equal (r.status, 503);
    assert_false (has (&r, "could not finish the sign-in"));
    assert_false (has (&r, "Ferrule is busy"));
    assert_true (has (&r, "is not known"));
    assert_true (has (&r, "may have finished"));
    assert_true (has (&r, "Check your dashboard or your application"));
    assert_false (has (&r, "retry_token"));
    http_free (&r);
}

static void
test_return_to_allow_list (void **state)
{
    /* the API refuses a return_to outside the allow-list */
    char url [160], body [256];
    snprintf (url, sizeof url, "%s/v1/integrations/acct1:evil/connect", gw_url);
    const char *hdr [] = { "Authorization: Bearer " ADMIN_KEY, "Content-Type: application/json", NULL };
    snprintf (body, sizeof body, "{\"provider\":\"fakebox\",\"scopes\":[\"read\"],\"return_to\":\"https://evil.example/x\"}");
    http_t r = http ("POST", url, hdr, body);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "allow-list"));
    http_free (&r);
    /* a connect made over the protocol with one: the callback does not redirect there */
    const char *evil [] = { "https://evil.example/x", APP_ORIGIN "@evil.example/x", "http://app.example.test.evil.example/",
                            NULL };
    for (int i = 0; evil [i]; i++) {
        char id [32];
        snprintf (id, sizeof id, "acct1:evil%d", i);
        r = flow (id, "fakebox", "read", evil [i], NULL);
        assert_int_equal (r.status, 200);
        char *where = header (&r, "Location");
        assert_null (where);
        assert_false (has (&r, "evil.example"));
        http_free (&r);
    }
    assert_true (log_has ("not on the allow-list"));
    /* the API takes an allowed one */
    snprintf (body, sizeof body, "{\"provider\":\"fakebox\",\"scopes\":[\"read\"],\"return_to\":\"" APP_ORIGIN "/x\"}");
    r = http ("POST", url, hdr, body);
    assert_int_equal (r.status, 200);
    http_free (&r);
}

/* --- the HTTP API -------------------------------------------------------------------------------- */

static http_t
api (const char *method, const char *path, const char *key, const char *body)
{
    char url [512], auth [256];
    snprintf (url, sizeof url, "%s%s", gw_url, path);
    snprintf (auth, sizeof auth, "Authorization: Bearer %s", key ? key : "");
    const char *hdr [] = { "Content-Type: application/json", key ? auth : NULL, NULL };
    return http (method, url, hdr, body);
}

static const char *
code_of (const http_t *r, json_t **keep)
{
    json_error_t e;
    *keep = json_loads (r->body, 0, &e);
    const char *c = json_string_value (json_object_get (json_object_get (*keep, "error"), "code"));
    return c ? c : json_is_true (json_object_get (*keep, "ok")) ? "ok" : "?";
}

static void
expect (const char *method, const char *path, const char *key, const char *body, long status, const char *code)
{
    json_t *j = NULL;
    http_t r = api (method, path, key, body);
    const char *got = code_of (&r, &j);
    if (r.status != status || strcmp (got, code) != 0)
        fail_msg ("%s %s: %ld %s, wanted %ld %s", method, path, r.status, got, status, code);
    if (status == 503 || status == 429) {
        char *ra = header (&r, "Retry-After");
        assert_non_null (ra);
        assert_true (atoi (ra) >= 1);
        free (ra);
    }
    if (status == 401) {
        char *wa = header (&r, "WWW-Authenticate");
        assert_non_null (wa);
        free (wa);
    }
    json_decref (j);
    http_free (&r);
}

/* expect, and the answer's hint says want and none of the words in refused (NULL-terminated). */
static void
expect_hint (const char *method, const char *path, const char *key, long status, const char *code, const char *want,
             const char *const *refused)
{
    expect (method, path, key, NULL, status, code);
    json_t *j = NULL;
    http_t r = api (method, path, key, NULL);
    code_of (&r, &j);
    const char *hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
    if (!hint || !strstr (hint, want))
        fail_msg ("%s %s: %s, whose hint \"%s\" does not say \"%s\"", method, path, code, hint ? hint : "", want);
    for (int i = 0; refused [i]; i++)
        if (strstr (hint, refused [i]))
            fail_msg ("%s %s: %s, whose hint \"%s\" says \"%s\"", method, path, code, hint, refused [i]);
    json_decref (j);
    http_free (&r);
}

/* What an API caller must not be told about a failure retrying cannot fix: to try again, or
 * ferrulectl's commands and flags. */
static const char *const not_for_callers [] = { "try again in a moment", "ferrulectl", "--", NULL };

static void
test_api_status_codes (void **state)
{
    char *rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "acct1:api", "fakebox", rt), 0);
    free (rt);

    /* a token, and no secret of it in the log */
    json_t *j = NULL;
    http_t r = api ("GET", "/v1/integrations/acct1:api/token?min_valid=60", SVC_KEY, NULL);
    assert_int_equal (r.status, 200);
    assert_string_equal (code_of (&r, &j), "ok");
    const char *at = json_string_value (json_object_get (j, "access_token"));
    assert_non_null (at);
    assert_false (log_has (at));
    /* one request id from end to end: the reply's rid begins with X-Request-Id, and the gateway's
       line and the broker's audit record of the call are found with it (the brokers got a rid
       of the client library's own, and the reply showed that one) */
    char *xrid = header (&r, "X-Request-Id"), want [96], audit [1024];
    assert_non_null (xrid);
    const char *rid = json_string_value (json_object_get (j, "rid"));
    snprintf (want, sizeof want, "%s-", xrid);
    if (!rid || strncmp (rid, want, strlen (want)) != 0)
        fail_msg ("the reply's rid is \"%s\", X-Request-Id \"%s\"", rid ? rid : "(none)", xrid);
    assert_true (log_has (xrid));
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    snprintf (want, sizeof want, "\"op\":\"token\",\"integration\":\"acct1:api\",\"outcome\":\"ok\",\"rid\":\"%s\"", rid);
    for (int64_t until = clock_mono_ms () + 15000; count_lines (audit, want) == 0 && clock_mono_ms () < until;)
        usleep (20000);
    if (count_lines (audit, want) != 1)
        fail_msg ("no audit record %s in %s", want, audit);
    free (xrid);
    char body [512];
    snprintf (body, sizeof body, "{\"access_token\":\"%s\"}", at);
    json_decref (j);
    http_free (&r);
    /* stale-token feedback */
    expect ("POST", "/v1/integrations/acct1:api/token/reject", SVC_KEY, body, 200, "ok");
    expect ("GET", "/v1/integrations/acct1:api", SVC_KEY, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/acct1:api/history?limit=5", SVC_KEY, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/acct1:api/doctor", SVC_KEY, NULL, 200, "ok");

    /* 401: no key, an unknown key, a revoked-looking workspace key */
    expect ("GET", "/v1/integrations/acct1:api/token", NULL, NULL, 401, "unauthenticated");
    expect ("GET", "/v1/integrations/acct1:api/token", "wrong", NULL, 401, "unauthenticated");
    expect ("GET", "/v1/integrations/acct1:api/token", "frk_not-a-key", NULL, 401, "unauthenticated");
    /* a key over the limit is told so (it was told to send a bearer key, which it did) */
    char long_key [201];
    memset (long_key, 'k', 200);
    long_key [200] = '\0';
    http_t lk = api ("GET", "/v1/integrations/acct1:api/token", long_key, NULL);
    assert_int_equal (lk.status, 401);
    assert_true (has (&lk, "longer than 128 characters"));
    http_free (&lk);
    /* 403: the policy of client "svc" (read on acct1:*) */
    expect ("GET", "/v1/integrations/acct2:api/token", SVC_KEY, NULL, 403, "forbidden");
    expect ("POST", "/v1/integrations/acct1:api/disconnect", SVC_KEY, NULL, 403, "forbidden");
    /* 404, 400, 413 */
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 404, "not_found");
    /* an id that cannot be one is a bad request, not an integration that does not exist */
    expect ("GET", "/v1/integrations/bad!id/token", SVC_KEY, NULL, 400, "bad_request");
    char long_id [200];
    snprintf (long_id, sizeof long_id, "/v1/integrations/acct1:%0129d/token", 0);
    expect ("GET", long_id, SVC_KEY, NULL, 400, "bad_request");
    expect ("GET", "/v1/no/such/address", SVC_KEY, NULL, 404, "not_found");
    expect ("GET", "/v1/integrations/acct1:api/token?min_valid=-5", SVC_KEY, NULL, 400, "bad_request");
    expect ("POST", "/v1/integrations/acct1:api/connect", ADMIN_KEY, "[1,2]", 400, "bad_request");
    /* a field of the wrong type is refused, naming the field: it was left out unseen (a connect
       started without its return_to, or with the default redirect URI; a reject's min_valid
       dropped). A null is an absent field, as the brokers take it. */
    const struct { const char *path, *body, *field; } typed [] = {
        { "connect", "{\"provider\":\"fakebox\",\"return_to\":[\"https://evil.example\"]}", "return_to" },
        { "connect", "{\"provider\":\"fakebox\",\"redirect_uri\":5}", "redirect_uri" },
        { "connect", "{\"provider\":\"fakebox\",\"scopes\":\"read\"}", "scopes" },
        { "connect", "{\"provider\":\"fakebox\",\"scopes\":[\"read\",5]}", "scopes" },
        { "connect", "{\"provider\":[\"fakebox\"]}", "provider" },
        { "token/reject", "{\"access_token\":\"x\",\"min_valid\":\"300\"}", "min_valid" },
        { "token/reject", "{\"access_token\":\"x\",\"min_valid\":1.5}", "min_valid" },
        { "token/reject", "{\"access_token\":\"x\",\"min_valid\":86401}", "min_valid" },
        { "token/reject", "{\"access_token\":7}", "access_token" },
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed [0]; i++) {
        char path [96], named [64];
        snprintf (path, sizeof path, "/v1/integrations/acct1:typed/%s", typed [i].path);
        expect ("POST", path, ADMIN_KEY, typed [i].body, 400, "bad_request");
        r = api ("POST", path, ADMIN_KEY, typed [i].body);
        snprintf (named, sizeof named, "\\\"%s\\\" must be", typed [i].field);
        if (!has (&r, named))
            fail_msg ("POST %s %s: the answer does not say what \"%s\" must be", path, typed [i].body, typed [i].field);
        http_free (&r);
    }
    /* a field the request does not have is refused, naming it: a misspelt return_to would
       start a connect that never goes back to the app */
    const struct { const char *path, *body; } unknown [] = {
        { "connect", "{\"provider\":\"fakebox\",\"return_url\":\"https://app.example/done\"}" },
        { "token/reject", "{\"access_token\":\"x\",\"min_valid_s\":300}" },
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown [0]; i++) {
        char path [96];
        snprintf (path, sizeof path, "/v1/integrations/acct1:typed/%s", unknown [i].path);
        expect ("POST", path, ADMIN_KEY, unknown [i].body, 400, "bad_request");
        r = api ("POST", path, ADMIN_KEY, unknown [i].body);
        if (!has (&r, "unknown field"))
            fail_msg ("POST %s %s: the answer does not name the unknown field", path, unknown [i].body);
        http_free (&r);
    }
    expect ("POST", "/v1/integrations/acct1:typed/connect", ADMIN_KEY,
            "{\"provider\":\"fakebox\",\"redirect_uri\":null,\"return_to\":null,\"scopes\":null}", 200, "ok");
    char *big = malloc (20001);
    memset (big, 'x', 20000);
    big [20000] = '\0';
    memcpy (big, "{\"p\":\"", 6);
    expect ("POST", "/v1/integrations/acct1:api/connect", ADMIN_KEY, big, 413, "too_large");
    free (big);
    /* 422: a user action (a scope the grant lacks) */
    expect ("GET", "/v1/integrations/acct1:api/token?require_scope=admin", SVC_KEY, NULL, 422, "insufficient_scope");
    /* and what to do about it (the guide's "Scope mismatch"): reconnect and accept every
       permission, never "try again in a moment" */
    expect_hint ("GET", "/v1/integrations/acct1:api/token?require_scope=admin", SVC_KEY, 422, "insufficient_scope",
                 "reconnect", not_for_callers);
    /* a scope that is not UTF-8 text: refused, never left out of the check (the token came, 200) */
    expect ("GET", "/v1/integrations/acct1:api/token?require_scope=admin%FF", SVC_KEY, NULL, 400, "bad_request");
    expect ("GET", "/v1/integrations/acct1:api/token?require_scope=read,admin%FF", SVC_KEY, NULL, 400, "bad_request");
    /* 409: the refresh token is gone (imported without an access token: the first token
       request refreshes, and takes the fault) */
    rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "acct1:gone", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    expect ("GET", "/v1/integrations/acct1:gone/token", SVC_KEY, NULL, 409, "needs_reconnect");
    /* 409: a token without a refresh token, rejected by the API it was used with: connect again */
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 0));
    http_t cb = flow ("acct1:norefresh", "fakegoogle", "read", NULL, NULL);
    itest_fake_config (h, "fakegoogle", json_pack ("{s:b}", "issue_refresh_token", 1));
    assert_int_equal (cb.status, 409);
    http_free (&cb);
    r = api ("GET", "/v1/integrations/acct1:norefresh/token", SVC_KEY, NULL);
    assert_string_equal (code_of (&r, &j), "ok");
    snprintf (body, sizeof body, "{\"access_token\":\"%s\"}", json_string_value (json_object_get (j, "access_token")));
    json_decref (j);
    http_free (&r);
    r = api ("POST", "/v1/integrations/acct1:norefresh/token/reject", SVC_KEY, body);
    const char *rejected = code_of (&r, &j);
    const char *hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
    printf ("a rejected token without a refresh token: %ld %s (%s)\n", r.status, rejected, hint ? hint : "-");
    assert_int_equal (r.status, 409);
    assert_string_equal (rejected, "needs_reconnect");
    assert_non_null (hint);
    assert_non_null (strstr (hint, "connect it again"));
    for (int i = 0; not_for_callers [i]; i++)
        if (strstr (hint, not_for_callers [i]))
            fail_msg ("the rejection's hint \"%s\" says \"%s\"", hint, not_for_callers [i]);
    json_decref (j);
    http_free (&r);
    /* 503 + Retry-After: the provider fails transiently */
    rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "acct1:flaky", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "retry_after", 1, 503, 7, -1);
    expect ("GET", "/v1/integrations/acct1:flaky/token", SVC_KEY, NULL, 503, "provider_unavailable");
    json_decref (harness_fake (h, "DELETE", "/admin/faults", NULL));
    /* disconnect by an admin client; then 409 disconnected */
    expect ("POST", "/v1/integrations/acct1:api/disconnect", ADMIN_KEY, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/acct1:api/token", SVC_KEY, NULL, 409, "disconnected");
    /* unknown route and method */
    http_t nf = api ("GET", "/v1/nothing", SVC_KEY, NULL);
    assert_int_equal (nf.status, 404);
    http_free (&nf);
    nf = api ("DELETE", "/v1/integrations/acct1:api", SVC_KEY, NULL);
    assert_int_equal (nf.status, 405);
    http_free (&nf);
    /* the API's connect: the authorization URL, with the gateway's callback as redirect URI */
    r = api ("POST", "/v1/integrations/acct1:viaapi/connect", ADMIN_KEY, "{\"provider\":\"fakebox\",\"scopes\":[\"read\"]}");
    assert_int_equal (r.status, 200);
    assert_string_equal (code_of (&r, &j), "ok");
    assert_string_equal (json_string_value (json_object_get (j, "redirect_uri")), callback_uri);
    json_decref (j);
    http_free (&r);
}

static void
test_api_workspace_keys (void **state)
{
    char *rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "ws9:box", "fakebox", rt), 0);
    free (rt);
    rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "ws8:box", "fakebox", rt), 0);
    free (rt);
    /* the listing holds the workspace's integrations and nothing else */
    json_t *ls = call ("workspace", json_pack ("{s:s}", "integration", "ws9:"));
    assert_string_equal (client_error_code (ls), "ok");
    assert_int_equal (json_array_size (json_object_get (ls, "integrations")), 1);
    assert_string_equal (json_string_value (json_object_get (json_array_get (json_object_get (ls, "integrations"), 0), "id")),
                         "ws9:box");
    assert_null (json_object_get (json_array_get (json_object_get (ls, "integrations"), 0), "access_token"));
    json_decref (ls);
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws9:", "name", "billing"));
    assert_string_equal (client_error_code (k), "ok");
    char *key = strdup (json_string_value (json_object_get (k, "key")));
    json_int_t id = json_integer_value (json_object_get (k, "key_id"));
    assert_true (strncmp (key, json_string_value (json_object_get (k, "prefix")), 8) == 0);
    json_decref (k);
    /* only a hash is stored */
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM gateway_api_keys WHERE key_hash = '%s'", key);
    assert_int_equal (harness_sql_int (h, sql), 0);

    expect ("GET", "/v1/integrations/ws9:box/token", key, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/ws9:box/doctor", key, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/ws8:box/token", key, NULL, 403, "forbidden");       /* another workspace */
    expect ("POST", "/v1/integrations/ws9:box/disconnect", key, NULL, 403, "forbidden"); /* not a token operation */
    json_t *list = call ("apikey_list", json_pack ("{s:s}", "integration", "ws9:"));
    json_t *first = json_array_get (json_object_get (list, "keys"), 0);
    assert_string_equal (json_string_value (json_object_get (first, "name")), "billing");
    assert_true (json_is_string (json_object_get (first, "last_used_at")));
    json_decref (list);

    /* revoked: refused on the very next request */
    json_t *rv = call ("apikey_revoke", json_pack ("{s:s, s:I}", "integration", "ws9:", "key_id", id));
    assert_string_equal (client_error_code (rv), "ok");
    json_decref (rv);
    expect ("GET", "/v1/integrations/ws9:box/token", key, NULL, 401, "unauthenticated");
    assert_false (itest_workdir_contains (h, key));     /* no log of any process (the 12-character prefix may be) */
    free (key);
}

/* The brokers refuse the gateway's own client "apikey_verify" (a policy file that forgot it): a
 * workspace key is answered 500, saying what an operator must fix. It was 401 "the API key is
 * unknown or revoked", "create a new key": its owner was sent to throw a good key away. */
static void
test_api_key_check_refused_to_the_gateway (void **state)
{
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws11:", "name", "svc"));
    assert_string_equal (client_error_code (k), "ok");
    char *key = strdup (json_string_value (json_object_get (k, "key")));
    json_decref (k);
    assert_int_equal (harness_write_policy (h, "harness read *\n"), 0);
    harness_reload_brokers (h);
    http_t r = { 0, NULL, NULL };
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end;) {     /* until the brokers read it */
        http_free (&r);
        r = api ("GET", "/v1/integrations/ws11:box/token", key, NULL);
        if (r.status != 404)
            break;
        usleep (200000);
    }
    json_t *j = NULL;
    const char *got = code_of (&r, &j);
    const char *hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
    if (r.status != 500 || strcmp (got, "internal") != 0 || !hint || !strstr (hint, "\"apikey_verify\" in the brokers' policy"))
        fail_msg ("a key the gateway may not check: %ld %s (%s)", r.status, got, hint ? hint : "no hint");
    /* the operation named as one, the client by the brokers' name for it: the hint read "allow
       the gateway's client \"apikey_verify\"" */
    if (strstr (hint, "client \"apikey_verify\"") || !strstr (hint, "the operation \"apikey_verify\"")
    ||  !strstr (hint, "the gateway's client \"" HARNESS_CLIENT "\""))
        fail_msg ("the hint of a call the brokers refuse the gateway: %s", hint);
    json_decref (j);
    http_free (&r);
    /* the key checked, the call itself refused to the gateway's client: not the caller's to fix
       (it was answered 403 forbidden, its hint to change "this client's" policy) */
    assert_int_equal (harness_write_policy (h, "harness apikey_verify,status *\n"), 0);
    harness_reload_brokers (h);
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end;) {     /* until the brokers read it */
        http_free (&r);
        r = api ("GET", "/v1/integrations/ws11:box/token", key, NULL);
        j = NULL;
        got = code_of (&r, &j);
        int checked = r.status != 500 || !strstr (r.body ? r.body : "", "could not be checked");
        json_decref (j);
        if (checked)
            break;
        usleep (200000);
    }
    j = NULL;
    got = code_of (&r, &j);
    hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
    int told = r.status == 500 && strcmp (got, "internal") == 0 && hint && strstr (hint, "\"token\" in the brokers' policy");
    char said [512];
    snprintf (said, sizeof said, "%ld %s (%s)", r.status, got, hint ? hint : "no hint");
    json_decref (j);
    http_free (&r);
    /* as it was, for the tests after this one (before any assert: they share the brokers) */
    assert_int_equal (harness_write_policy (h, HARNESS_CLIENT " * *\n"), 0);
    harness_reload_brokers (h);
    if (!told)
        fail_msg ("a call the brokers refuse the gateway: %s", said);
    assert_false (itest_workdir_contains (h, key));
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end;) {
        r = api ("GET", "/v1/integrations/ws11:box/token", key, NULL);
        long status = r.status;
        http_free (&r);
        if (status == 404)
            break;
        usleep (200000);
    }
    expect ("GET", "/v1/integrations/ws11:box/token", key, NULL, 404, "not_found");
    free (key);
}

/* With no broker to reach, an API caller was answered with the brokers' addresses and ferrulectl's
 * flags ("--broker or FERRULE_BROKER_URL"): the gateway's own configuration, nothing the caller
 * can use. It is told the service could not be reached, and to try again. */
static void
test_api_without_a_broker_says_so_plainly (void **state)
{
    harness_signal_broker (h, 0, SIGTERM);
    http_t r = { 0, NULL, NULL };
    for (int64_t end = clock_mono_ms () + 20000; clock_mono_ms () < end;) {     /* until it has stopped */
        http_free (&r);
        r = api ("GET", "/v1/integrations/acct1:gone/token", SVC_KEY, NULL);
        if (r.status == 503 && !strstr (r.body ? r.body : "", "shutting down"))
            break;                      /* (a draining broker's own answer says so) */
        usleep (200000);
    }
    json_t *j = NULL;
    const char *got = code_of (&r, &j);
    const char *message = json_string_value (json_object_get (json_object_get (j, "error"), "message"));
    const char *hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
    printf ("no broker: %ld %s: %s (%s)\n", r.status, got, message ? message : "-", hint ? hint : "-");
    long status = r.status;
    int leaks = r.body && (strstr (r.body, "tcp://") || strstr (r.body, "--broker") || strstr (r.body, "FERRULE_"));
    json_decref (j);
    http_free (&r);
    assert_int_equal (harness_restart_broker (h, 0), 0);   /* before any assert: the later tests need it */
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    assert_int_equal (status, 503);
    assert_false (leaks);
    assert_non_null (hint);
}

/* A request that waits for a broker client spends its time waiting: the call after the wait gets
 * what is left, not the whole time again. A gateway with one broker client; two token requests
 * whose refreshes each take 6 s at the provider: the second waits about 6 s for the client, and
 * is answered 503 within its 10 s. It was given 10 s more after its wait, and answered 200 after
 * about 12 s: a dashboard page's 5 s budget could take twice that. */
static void
test_api_wait_for_a_broker_client_counts_in_the_deadline (void **state)
{
    gw_saved_t saved = gw_save ();
    const char *ids [] = { "acct1:slowa", "acct1:slowb" };
    for (int i = 0; i < 2; i++) {
        char *rt = itest_grant (h, "fakebox", NULL);
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    setenv ("FERRULE_GATEWAY_BROKER_CLIENTS", "1", 1);
    int started = start_gateway_with ("gateway-one-client", NULL, NULL);
    unsetenv ("FERRULE_GATEWAY_BROKER_CLIENTS");
    assert_int_equal (started, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 6000));
    pid_t first = fork ();
    if (first == 0) {
        http_t r = api ("GET", "/v1/integrations/acct1:slowa/token", SVC_KEY, NULL);
        _exit (r.status == 200 ? 0 : 1);
    }
    usleep (500000);                    /* the first holds the one client */
    int64_t t0 = clock_mono_ms ();
    json_t *j = NULL;
    http_t r = api ("GET", "/v1/integrations/acct1:slowb/token", SVC_KEY, NULL);
    int64_t took = clock_mono_ms () - t0;
    const char *got = code_of (&r, &j);
    printf ("the request that waited for the client: %ld %s after %lld ms\n", r.status, got, (long long) took);
    long status = r.status;
    char *code = strdup (got);
    json_decref (j);
    http_free (&r);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);             /* the first has held the client long enough */
    int st = 0;
    assert_int_equal (waitpid (first, &st, 0), first);
    stop_gateway ();
    gw_restore (&saved);
    assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);
    assert_int_equal (status, 503);
    assert_true (strcmp (code, "timeout") == 0 || strcmp (code, "overloaded") == 0);
    free (code);
}

/* Calls anyone can cause without a key or a session hold at most a share of the gateway's broker
 * clients. Four callbacks whose code exchanges take 12 s at the provider, on a gateway of four
 * clients, leave two to the token API. They took all four, and a service's token request (a
 * cache hit) waited its 10 s for one and was answered 503 overloaded: a review saw 32 made-up
 * callbacks or keys during a database stall shut the API out. Made-up keys no longer reach a
 * worker at all. A workspace key's check shared the callbacks' half, so they still failed every
 * workspace key's call (503 after 10 s); the checks have a quarter of their own now. */
static void
test_open_calls_leave_clients_for_the_api (void **state)
{
    enum { N = 4 };
    gw_saved_t saved = gw_save ();
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct1:served", "fakebox", rt), 0);
    free (rt);
    setenv ("FERRULE_GATEWAY_BROKER_CLIENTS", "4", 1);
    int started = start_gateway_with ("gateway-four-clients", NULL, NULL);
    unsetenv ("FERRULE_GATEWAY_BROKER_CLIENTS");
    assert_int_equal (started, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "redirect_uris", callback_uri));   /* its port */
    http_t r = api ("GET", "/v1/integrations/acct1:served/token", SVC_KEY, NULL);   /* refreshed now, a hit later */
    assert_int_equal (r.status, 200);
    http_free (&r);
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "acct1:", "name", "held-open"));
    assert_string_equal (client_error_code (k), "ok");
    char *ws_key = strdup (json_string_value (json_object_get (k, "key")));
    json_decref (k);
    char *locs [N];
    for (int i = 0; i < N; i++) {
        char id [32];
        snprintf (id, sizeof id, "acct1:held%d", i);
        char *url = connect_url (id, "fakebox", "read", NULL);
        locs [i] = authorize (url);
        free (url);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 12000));
    pid_t kids [N];
    for (int i = 0; i < N; i++) {
        kids [i] = fork ();
        if (kids [i] == 0) {
            http_t c = http ("GET", locs [i], NULL, NULL);
            _exit (c.status > 0 ? 0 : 1);
        }
    }
    usleep (1000000);                   /* the callbacks wait for their exchanges */
    int64_t t0 = clock_mono_ms ();
    r = api ("GET", "/v1/integrations/acct1:served/token", SVC_KEY, NULL);
    int64_t took = clock_mono_ms () - t0;
    json_t *j = NULL;
    printf ("a token request while %d callbacks waited 12 s for the provider: %ld %s after %lld ms\n", N, r.status,
            code_of (&r, &j), (long long) took);
    long status = r.status;
    json_decref (j);
    http_free (&r);
    /* and with a workspace key, whose check the callbacks must not hold up either */
    r = api ("GET", "/v1/integrations/acct1:served/token", ws_key, NULL);
    j = NULL;
    printf ("the same with a workspace key: %ld %s\n", r.status, code_of (&r, &j));
    long ws_status = r.status;
    json_decref (j);
    http_free (&r);
    free (ws_key);
    /* answered while every callback still waited for its exchange (not after them, as when they
     * held every thread): none of them has been answered yet */
    int callbacks_done = 0;
    for (int i = 0; i < N; i++) {
        int st = 0;
        pid_t done = waitpid (kids [i], &st, WNOHANG);
        if (done == kids [i])
            kids [i] = 0;
        callbacks_done += done != 0;
    }
    /* a made-up key is refused without a broker call: the audit log has no check of it */
    char audit [1024];
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    usleep (200000);                    /* the broker writes its lines within 50 ms */
    long checks = count_lines (audit, "\"op\":\"apikey_verify\"");
    expect ("GET", "/v1/integrations/acct1:served/token", "frk_made-up", NULL, 401, "unauthenticated");
    usleep (200000);
    assert_int_equal (count_lines (audit, "\"op\":\"apikey_verify\""), checks);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);             /* the callbacks' exchanges need not take their 12 s now */
    for (int i = 0; i < N; i++) {
        int st = 0;
        if (kids [i] > 0)
            assert_int_equal (waitpid (kids [i], &st, 0), kids [i]);
        free (locs [i]);
    }
    stop_gateway ();
    gw_restore (&saved);
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "redirect_uris", callback_uri));
    assert_int_equal (status, 200);
    assert_int_equal (ws_status, 200);
    assert_int_equal (callbacks_done, 0);
}

/* A body sent a byte at a time, each within the silence the gateway allows (3 s here): the
 * connection is closed once the body has been coming for that long. libmicrohttpd's timeout
 * counts only silence, and the connection, with its thread, was held for as long as the client
 * kept dribbling (512 such clients take every thread). */
static void
test_api_slow_body_is_cut (void **state)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) gw_port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    const char *head = "POST /oauth/retry HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                       "Content-Length: 100\r\n\r\n";
    assert_int_equal (write (fd, head, strlen (head)), (ssize_t) strlen (head));
    int64_t start = clock_mono_ms (), closed_ms = -1;
    for (int i = 0; i < 40 && closed_ms < 0; i++) {          /* 20 s of a byte every half second */
        if (send (fd, "x", 1, MSG_NOSIGNAL) != 1)
            closed_ms = clock_mono_ms () - start;
        char buf [256];
        struct pollfd p = { fd, POLLIN, 0 };
        if (closed_ms < 0 && poll (&p, 1, 500) > 0 && read (fd, buf, sizeof buf) <= 0)
            closed_ms = clock_mono_ms () - start;
    }
    close (fd);
    fprintf (stderr, "a body a byte every 500 ms: %s after %lld ms\n", closed_ms < 0 ? "still open" : "closed",
             (long long) (closed_ms < 0 ? clock_mono_ms () - start : closed_ms));
    /* closed while the client was still sending (the code before held it for all 20 s of it) */
    assert_true (closed_ms >= 0);
}

/* Many connections that send half a request and stall do not keep others out. */
static void
test_api_slow_clients (void **state)
{
    int fds [40];
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) gw_port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    for (int i = 0; i < 40; i++) {
        fds [i] = socket (AF_INET, SOCK_STREAM, 0);
        assert_true (connect (fds [i], (struct sockaddr *) &sa, sizeof sa) == 0);
        const char *part = "GET /v1/integrations/acct1:x HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        assert_true (write (fds [i], part, strlen (part)) > 0);
    }
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 404, "not_found");
    for (int i = 0; i < 40; i++)
        close (fds [i]);
    /* what libmicrohttpd says of each is a debug line of the gateway's JSON log, not its own text
     * on stderr ("Connection was closed by remote side with incomplete request."): anyone who
     * can reach the port could otherwise write a line to the log per connection */
    usleep (300000);
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 404, "not_found");
    char first [512];
    int bad = itest_log_not_json (gw_log, first, sizeof first);
    if (bad)
        printf ("%d lines of the gateway's log are not JSON, the first: %s", bad, first);
    assert_int_equal (bad, 0);
}

/* A body of exactly 16 KiB (GW_MAX_BODY) is read; one byte more is refused with 413, declared
 * (Content-Length) or not (chunked). */
static void
test_body_of_exactly_the_limit (void **state)
{
    enum { LIMIT = 16384 };
    char url [128];
    snprintf (url, sizeof url, "%s/oauth/retry", gw_url);
    const char *hdr [] = { "Content-Type: application/x-www-form-urlencoded", NULL };
    const char *chunked [] = { "Content-Type: application/x-www-form-urlencoded", "Transfer-Encoding: chunked", NULL };
    char *body = malloc (LIMIT + 2);
    memcpy (body, "retry_token=", 12);
    memset (body + 12, 'x', LIMIT + 1 - 12);
    body [LIMIT] = '\0';
    /* read, then refused for what it holds: no retry token is that long */
    http_t r = http ("POST", url, hdr, body);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "This retry link is incomplete"));
    http_free (&r);
    r = http ("POST", url, chunked, body);
    assert_int_equal (r.status, 400);
    http_free (&r);
    body [LIMIT] = 'x';
    body [LIMIT + 1] = '\0';
    r = http ("POST", url, hdr, body);
    assert_int_equal (r.status, 413);
    http_free (&r);
    r = http ("POST", url, chunked, body);
    assert_int_equal (r.status, 413);
    http_free (&r);
    free (body);
}

/* 405 names every method served at the path, not one of them. */
static void
test_method_not_allowed_lists_every_method (void **state)
{
    const struct { const char *method, *path, *allow; } want [] = {
        { "PUT", "/dashboard/open", "GET, POST" },
        { "DELETE", "/dashboard/open", "GET, POST" },
        { "POST", "/static/ferrule.css", "GET, HEAD" },
        { "DELETE", "/v1/integrations/acct1:api", "GET" },
        { "GET", "/dashboard/connect", "POST" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        char url [256];
        snprintf (url, sizeof url, "%s%s", gw_url, want [i].path);
        http_t r = http (want [i].method, url, NULL, NULL);
        char *allow = header (&r, "Allow");
        if (r.status != 405 || !allow || strcmp (allow, want [i].allow) != 0)
            fail_msg ("%s %s: %ld, Allow \"%s\"; wanted 405, Allow \"%s\"", want [i].method, want [i].path, r.status,
                      allow ? allow : "(none)", want [i].allow);
        free (allow);
        http_free (&r);
    }
}

/* Sends raw (a whole HTTP/1.1 request) to the gateway and returns its answer, headers and body
 * (a new string): for a request libcurl would not send as it is. */
static char *
raw_http (const char *raw, size_t len)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) gw_port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal (write (fd, raw, len), (ssize_t) len);
    size_t cap = 65536, got = 0;
    char *answer = calloc (1, cap);
    assert_non_null (answer);
    for (ssize_t n; got < cap - 1 && (n = read (fd, answer + got, cap - 1 - got)) > 0;)
        got += (size_t) n;
    close (fd);
    return answer;
}

/* A refusal made before any handler runs, outside /v1/, is a page with a title that says what
 * happened and a paragraph that says what to do; under /v1/ it stays JSON with its hint. The
 * pages showed the API's lowercase message ("there is nothing at this address", "this method
 * is not allowed here") under "Request refused", and no hint. */
static void
test_refusal_pages_say_what_to_do (void **state)
{
    char long_id [200];
    memset (long_id, 'a', 129);
    long_id [129] = '\0';
    char bad_id_path [256];
    snprintf (bad_id_path, sizeof bad_id_path, "/dashboard/integrations/%s", long_id);
    char *big = malloc (20001);
    assert_non_null (big);
    memset (big, 'x', 20000);
    big [20000] = '\0';
    const struct { const char *method, *path, *body; long status; const char *title, *todo, *api_message; } want [] = {
        { "GET", "/no/such/page", NULL, 404, "Page not found", "open your dashboard from the link",
          "there is nothing at this address" },
        { "PUT", "/dashboard/open", NULL, 405, "This address cannot be used that way", "use its buttons",
          "this method is not allowed here" },
        { "GET", bad_id_path, NULL, 400, "This address names no integration or key", "copied whole",
          "an id in the address is not valid" },
        { "POST", "/oauth/retry", big, 413, "What you sent was too large", "shorten what you entered",
          "the request body is larger than 16 KiB" },
    };
    const char *form [] = { "Content-Type: application/x-www-form-urlencoded", NULL };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        char url [512], h1 [160];
        snprintf (url, sizeof url, "%s%s", gw_url, want [i].path);
        http_t r = http (want [i].method, url, want [i].body ? form : NULL, want [i].body);
        char *type = header (&r, "Content-Type");
        snprintf (h1, sizeof h1, "<h1>%s</h1>", want [i].title);
        printf ("%s %.40s: %ld, %s\n", want [i].method, want [i].path, r.status, has (&r, "<h1>Request refused</h1>")
                ? "\"Request refused\"" : has (&r, h1) ? want [i].title : "another title");
        if (r.status != want [i].status || !type || strncmp (type, "text/html", 9) != 0 || !has (&r, h1)
        ||  !has (&r, want [i].todo) || has (&r, want [i].api_message))
            fail_msg ("%s %.40s: %ld, %s; wanted %ld, a page \"%s\" saying \"%s\" (and not \"%s\")", want [i].method,
                      want [i].path, r.status, type ? type : "no Content-Type", want [i].status, want [i].title,
                      want [i].todo, want [i].api_message);
        free (type);
        http_free (&r);
    }
    /* a body with a NUL byte, which libcurl would not send */
    const char nul [] = "POST /oauth/retry HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                        "Content-Length: 5\r\nConnection: close\r\n\r\nab\0cd";
    char *answer = raw_http (nul, sizeof nul - 1);
    printf ("a body with a NUL byte: %.12s\n", answer);
    assert_true (strncmp (answer, "HTTP/1.1 400", 12) == 0);
    assert_non_null (strstr (answer, "<h1>What you sent could not be read</h1>"));
    assert_non_null (strstr (answer, "use its buttons again"));
    assert_null (strstr (answer, "the request body holds a NUL byte"));
    free (answer);
    /* the API's refusals stay JSON, with the API's message and hint */
    snprintf (bad_id_path, sizeof bad_id_path, "%s/v1/no/such/thing", gw_url);
    http_t r = http ("GET", bad_id_path, NULL, NULL);
    json_t *j = json_loads (r.body, 0, NULL);
    json_t *e = json_object_get (j, "error");
    assert_int_equal (r.status, 404);
    assert_string_equal (json_string_value (json_object_get (e, "code")), "not_found");
    assert_string_equal (json_string_value (json_object_get (e, "message")), "there is nothing at this address");
    assert_string_equal (json_string_value (json_object_get (e, "hint")), "see docs/openapi.yaml");
    json_decref (j);
    http_free (&r);
    snprintf (bad_id_path, sizeof bad_id_path, "%s/v1/integrations/acct1:x/token", gw_url);
    r = http ("POST", bad_id_path, (const char *[]) { "Content-Type: application/json", NULL }, big);
    j = json_loads (r.body, 0, NULL);
    e = json_object_get (j, "error");
    assert_int_equal (r.status, 413);
    assert_string_equal (json_string_value (json_object_get (e, "code")), "too_large");
    assert_string_equal (json_string_value (json_object_get (e, "hint")), "send a smaller body");
    json_decref (j);
    http_free (&r);
    free (big);
}

/* A body refused on its declared length alone is answered, as every answer, with a request id that
 * its log line carries: it was "X-Request-Id: -", and the line had none. */
static void
test_declared_oversized_body_has_a_request_id (void **state)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) gw_port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    const char *head = "POST /v1/integrations/acct1:box/connect HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\nContent-Length: 20000\r\n\r\n";
    assert_int_equal (write (fd, head, strlen (head)), (ssize_t) strlen (head));
    char answer [8192] = "";
    size_t got = 0;
    ssize_t n;
    while (got < sizeof answer - 1 && !strstr (answer, "\r\n\r\n") && (n = read (fd, answer + got, sizeof answer - 1 - got)) > 0)
        answer [got += (size_t) n] = '\0';
    answer [got] = '\0';
    close (fd);
    assert_true (strncmp (answer, "HTTP/1.1 413", 12) == 0);
    const char *id = strstr (answer, "\r\nX-Request-Id: ");     /* as the gateway writes it */
    assert_non_null (id);
    char rid [64];
    snprintf (rid, sizeof rid, "%.*s", (int) strcspn (id + 16, "\r\n"), id + 16);
    printf ("a declared body of 20000 bytes: 413, X-Request-Id \"%s\"\n", rid);
    assert_int_equal (strlen (rid), 16);
    assert_int_equal (strspn (rid, "0123456789abcdef"), 16);
    char line [96];
    snprintf (line, sizeof line, "\"request\":\"%s\"", rid);
    wait_log_count (line, 0);
}

/* --- dashboard links, sessions, CSRF ------------------------------------------------------------- */

static char *
dashboard_link (const char *ws, int ttl)
{
    if (!ttl) {
        /* as an operator or the embedding application would: ferrulectl dashboard-link */
        int rc;
        json_t *r = harness_ctl (h, &rc, "dashboard-link", "--workspace", ws, NULL);
        assert_int_equal (rc, 0);
        const char *url = json_string_value (json_object_get (r, "url"));
        assert_non_null (url);
        char prefix [128];
        snprintf (prefix, sizeof prefix, "%s/dashboard/open?link=", gw_url);
        assert_true (strncmp (url, prefix, strlen (prefix)) == 0);
        char *out = strdup (url);
        json_decref (r);
        return out;
    }
    json_t *args = json_pack ("{s:s}", "integration", ws);
    if (ttl)
        json_object_set_new (args, "ttl_s", json_integer (ttl));
    json_t *r = call ("dashboard_link", args);
    assert_string_equal (client_error_code (r), "ok");
    char *url = malloc (512);
    snprintf (url, 512, "%s/dashboard/open?link=%s&workspace=%s", gw_url,
              json_string_value (json_object_get (r, "link_token")), ws);
    json_decref (r);
    return url;
}

static char *forged_session (const char *ws);

/* Presses the confirm page's button: POSTs the page's form to /dashboard/open with the headers
 * a browser adds (a and b, each may be NULL); returns the answer. */
static http_t
press_open_as (const http_t *page, const char *a, const char *b)
{
    char *link = form_value (page->body, "link");
    char *ws = form_value (page->body, "workspace");
    assert_non_null (link);
    char body [512], url [128];
    snprintf (body, sizeof body, "link=%s%s%s", link, ws ? "&workspace=" : "", ws ? ws : "");
    snprintf (url, sizeof url, "%s/dashboard/open", gw_url);
    const char *hdr [] = { "Content-Type: application/x-www-form-urlencoded", a ? a : b, a ? b : NULL, NULL };
    http_t r = http ("POST", url, hdr, body);
    free (link);
    free (ws);
    return r;
}

/* Presses the button as curl does: neither Origin nor Sec-Fetch-Site. */
static http_t
press_open (const http_t *page)
{
    return press_open_as (page, NULL, NULL);
}

/* Opens a link as a person does: its confirm page, then its button; returns the "Cookie:"
 * header of the session (a new string). */
static char *
open_session (const char *link)
{
    http_t page = http ("GET", link, NULL, NULL);
    assert_int_equal (page.status, 200);
    char *none = header (&page, "Set-Cookie");
    assert_null (none);
    http_t r = press_open (&page);
    http_free (&page);
    assert_int_equal (r.status, 303);
    char *where = header (&r, "Location");
    assert_string_equal (where, "/dashboard");
    free (where);
    char *set = header (&r, "Set-Cookie");
    assert_non_null (set);
    assert_non_null (strstr (set, "HttpOnly"));
    assert_non_null (strstr (set, "SameSite=Strict"));
    char *cookie = malloc (strlen (set) + 16);
    snprintf (cookie, strlen (set) + 16, "Cookie: %.*s", (int) strcspn (set, ";"), set);
    free (set);
    http_free (&r);
    return cookie;
}

/* GET /dashboard with a session's "Cookie:" header (NULL: none). */
static http_t
dashboard_home (const char *cookie)
{
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    const char *hdr [] = { cookie, NULL };
    return http ("GET", url, cookie ? hdr : NULL, NULL);
}

/* A dashboard session of workspace ws, through a link of its own (*link, *cookie: freed by the
 * caller), and the CSRF token of its home page (a new string). */
static char *
open_dashboard (const char *ws, char **link, char **cookie)
{
    *link = dashboard_link (ws, 0);
    *cookie = open_session (*link);
    http_t home = dashboard_home (*cookie);
    char *csrf = form_value (home.body, "csrf");
    assert_non_null (csrf);
    http_free (&home);
    return csrf;
}

/* The brokers refuse the gateway's own client "dashboard_open" (a policy file that forgot it):
 * the button's answer says the fault is the service's (500), and the gateway logs why. It was
 * 403 "This dashboard link has expired or was already used", "ask your application for a new
 * one": every new link failed the same way, and the log said nothing. */
static void
test_dashboard_open_refused_to_the_gateway (void **state)
{
    char *link = dashboard_link ("ws12:", 0);
    http_t page = http ("GET", link, NULL, NULL);
    assert_int_equal (page.status, 200);
    assert_int_equal (harness_write_policy (h, "harness read *\n"), 0);
    harness_reload_brokers (h);
    /* the brokers have read it once they refuse the gateway's check of a key (as the test above) */
    http_t r = { 0, NULL, NULL };
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end;) {
        http_free (&r);
        r = api ("GET", "/v1/integrations/ws12:box/token", "frk_0000000000000000000000000000000000000000000", NULL);
        if (r.status == 500)
            break;
        usleep (200000);
    }
    assert_int_equal (r.status, 500);
    http_free (&r);
    r = press_open (&page);
    long status = r.status;
    int expired = has (&r, "expired or was already used"), said = has (&r, "not with your link");
    http_free (&r);
    http_free (&page);
    free (link);
    assert_int_equal (harness_write_policy (h, HARNESS_CLIENT " * *\n"), 0);
    harness_reload_brokers (h);
    if (status != 500 || expired || !said)
        fail_msg ("a dashboard link the gateway may not open: %ld%s", status, expired ? ", \"expired\"" : "");
    itest_wait_log (h, "the brokers refused this gateway's", 10000);
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end;) {     /* as it was, for the tests after */
        r = api ("GET", "/v1/integrations/ws12:box/token", "frk_0000000000000000000000000000000000000000000", NULL);
        status = r.status;
        http_free (&r);
        if (status == 401)
            break;
        usleep (200000);
    }
    assert_int_equal (status, 401);
}

/* A GET of a dashboard link (a link scanner, a mail or chat preview) only shows the confirm
 * page: it spends nothing, and the person it was sent to can still open it. */
static void
test_dashboard_link_get_spends_nothing (void **state)
{
    char *link = dashboard_link ("ws7:", 0);
    assert_non_null (strstr (link, "&workspace=ws7:"));
    for (int i = 0; i < 3; i++) {
        http_t r = http ("GET", link, NULL, NULL);
        assert_int_equal (r.status, 200);
        assert_true (has (&r, "Open the dashboard of ws7:"));
        assert_true (has (&r, "<form method=\"post\" action=\"/dashboard/open\">"));
        char *set = header (&r, "Set-Cookie");
        assert_null (set);
        http_free (&r);
    }
    http_t r = http ("HEAD", link, NULL, NULL);
    assert_int_not_equal (r.status, 200);
    http_free (&r);
    char *cookie = open_session (link);         /* still unspent: the button opens it */
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    const char *hdr [] = { cookie, NULL };
    r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "Workspace <strong>ws7:</strong>"));
    http_free (&r);
    /* the button works once */
    r = http ("GET", link, NULL, NULL);
    http_t again = press_open (&r);
    assert_int_equal (again.status, 403);
    assert_true (has (&again, "expired or was already used"));
    assert_null (header (&again, "Set-Cookie"));
    http_free (&again);
    http_free (&r);
    free (cookie);
    free (link);

    /* a link whose URL names another workspace than it opens: spent, no session */
    link = dashboard_link ("ws7:", 0);
    char *forged = malloc (strlen (link) + 8);
    snprintf (forged, strlen (link) + 8, "%.*sws8:", (int) (strstr (link, "&workspace=") - link + 11), link);
    r = http ("GET", forged, NULL, NULL);
    assert_true (has (&r, "Open the dashboard of ws8:"));
    again = press_open (&r);
    assert_int_equal (again.status, 403);
    assert_null (header (&again, "Set-Cookie"));
    assert_true (has (&again, "does not match its workspace"));
    http_free (&again);
    http_free (&r);
    /* a POST with no link, or an invalid one */
    snprintf (url, sizeof url, "%s/dashboard/open", gw_url);
    const char *fhdr [] = { "Content-Type: application/x-www-form-urlencoded", NULL };
    r = http ("POST", url, fhdr, "");
    assert_int_equal (r.status, 403);
    http_free (&r);
    r = http ("POST", url, fhdr, "link=nope&workspace=ws7:");
    assert_int_equal (r.status, 403);
    http_free (&r);
    free (forged);
    free (link);
}

/* The brokers refuse the gateway's own client "apikey_list" (a policy file that forgot it): the
 * dashboard says the keys could not be listed. It showed the page as if the workspace had no keys,
 * so someone come to revoke a leaked key could not, and was not told why. */
static void
test_dashboard_says_when_keys_are_not_listed (void **state)
{
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws14:", "name", "svc"));
    assert_string_equal (client_error_code (k), "ok");
    json_decref (k);
    char *link = dashboard_link ("ws14:", 0);
    char *cookie = open_session (link);
    http_t r = dashboard_home (cookie);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "<table id=\"apikeys\">"));
    http_free (&r);
    assert_int_equal (harness_write_policy (h, "harness read,workspace *\n"), 0);
    harness_reload_brokers (h);
    int said = 0, listed = 1, worded = 0;
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end && !said;) {   /* until the brokers read it */
        r = dashboard_home (cookie);
        said = has (&r, "id=\"keys-not-listed\"");
        listed = has (&r, "<table id=\"apikeys\">");
        /* as troubleshooting.md says: the refusal arrives as "internal" */
        worded = has (&r, "The API keys could not be listed (internal)");
        http_free (&r);
        if (!said)
            usleep (200000);
    }
    assert_int_equal (harness_write_policy (h, HARNESS_CLIENT " * *\n"), 0);
    harness_reload_brokers (h);
    if (!said)
        fail_msg ("the dashboard with its keys refused: no notice (the keys table %s)", listed ? "shown" : "missing");
    assert_true (worded);
    assert_true (log_has ("the brokers refused this gateway's \\\"apikey_list\\\" call"));
    assert_true (log_has ("the dashboard's API keys could not be listed: the service answered internal"));
    for (int64_t end = clock_mono_ms () + 10000; clock_mono_ms () < end && said;) {     /* as it was, for the tests after */
        r = dashboard_home (cookie);
        said = has (&r, "id=\"keys-not-listed\"");
        http_free (&r);
        if (said)
            usleep (200000);
    }
    assert_false (said);
    free (cookie);
    free (link);
}

/* An integration's page tells its user what to do with the page's buttons: it printed doctor's
 * steps, "ferrulectl disconnect --integration ..." and "Operators: ..." among them. */
static void
test_dashboard_steps_are_the_users (void **state)
{
    char *rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "ws41:gone", "fakebox", rt), 0);
    free (rt);
    itest_fault (h, "fakebox", "invalid_grant", 1, -1, -1, -1);
    json_t *t = call ("token", json_pack ("{s:s}", "integration", "ws41:gone"));
    assert_string_equal (client_error_code (t), "needs_reconnect");
    json_decref (t);
    http_t r;
    char *steps = dashboard_steps ("ws41:", "ws41:gone", &r);
    assert_non_null (strstr (steps, "Press Reconnect"));
    assert_null (strstr (steps, "ferrulectl"));
    assert_null (strstr (steps, "--"));
    assert_null (strstr (steps, "Operator"));
    assert_true (has (&r, ">Reconnect</button>"));
    free (steps);
    http_free (&r);
}

/* A broker that takes a request and never answers (stopped): the API's disconnect and the
 * dashboard's Disconnect say the outcome is unknown in the caller's words. They showed the
 * broker client's own message, 'no reply from broker "tcp://..." within 30.0 s: the outcome of
 * the "disconnect" request is unknown': the broker's address and the operation's name. */
static void
test_timeout_shows_no_broker_or_operation (void **state)
{
    const char *ids [] = { "acct1:stopped", "ws40:stopped", "acct1:warma", "acct1:warmb" };
    for (int i = 0; i < 4; i++) {
        char *rt = itest_grant (h, "fakebox", "[\"read\"]");
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    /* two of the gateway's broker clients connected, for the two calls: a client made once the
       broker is stopped cannot connect, and its call is not sent ("could not reach") */
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 1000));
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    pid_t warm = fork ();
    if (warm == 0) {
        http_t r = api ("GET", "/v1/integrations/acct1:warma/token", SVC_KEY, NULL);
        _exit (r.status == 200 ? 0 : 1);
    }
    assert_true (itest_wait_stat (h, "fakebox", "refresh_calls", before + 1, 20000) > before);
    expect ("GET", "/v1/integrations/acct1:warmb/token", SVC_KEY, NULL, 200, "ok");   /* while the first waits */
    int st = 0;
    waitpid (warm, &st, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);
    char *link, *cookie;
    char *csrf = open_dashboard ("ws40:", &link, &cookie);
    harness_signal_broker (h, 0, SIGSTOP);
    /* both at once: each waits its 30 s */
    int fds [2];
    assert_int_equal (pipe (fds), 0);
    pid_t child = fork ();
    if (child == 0) {
        close (fds [0]);
        http_t r = api ("POST", "/v1/integrations/acct1:stopped/disconnect", ADMIN_KEY, NULL);
        char head [32];
        snprintf (head, sizeof head, "%ld\n", r.status);
        int ok = write (fds [1], head, strlen (head)) > 0 && write (fds [1], r.body, strlen (r.body)) >= 0;
        _exit (ok ? 0 : 1);
    }
    close (fds [1]);
    char url [256], body [128];
    snprintf (url, sizeof url, "%s/dashboard/integrations/ws40:stopped/disconnect", gw_url);
    snprintf (body, sizeof body, "csrf=%s", csrf);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t page = http ("POST", url, phdr, body);
    char answer [8192];
    size_t n = 0;
    for (ssize_t got; n < sizeof answer - 1 && (got = read (fds [0], answer + n, sizeof answer - 1 - n)) > 0;)
        n += (size_t) got;
    answer [n] = '\0';
    close (fds [0]);
    waitpid (child, &st, 0);
    harness_signal_broker (h, 0, SIGCONT);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    const char *json = strchr (answer, '\n');
    json_t *j = json ? json_loads (json + 1, 0, NULL) : NULL;
    const char *message = json_string_value (json_object_get (json_object_get (j, "error"), "message"));
    printf ("the API's disconnect: %.3s %s\n", answer, message ? message : "-");
    printf ("the dashboard's Disconnect: %ld\n", page.status);
    assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);
    assert_int_equal (atoi (answer), 503);
    assert_non_null (message);
    assert_null (strstr (json + 1, "tcp://"));
    assert_null (strstr (message, "\"disconnect\""));
    assert_non_null (strstr (message, "outcome of the request is unknown"));
    assert_int_equal (page.status, 503);
    assert_false (has (&page, "tcp://"));
    assert_false (has (&page, "&quot;disconnect&quot;"));
    assert_true (has (&page, "outcome of the request is unknown"));
    json_decref (j);
    http_free (&page);
    free (csrf);
    free (cookie);
    free (link);
}

/* A read the service did not answer (the broker stopped) says that sending it again is safe: the
 * dashboard's listing of a workspace said "the outcome of the request is unknown (it may have
 * been carried out)", the words for a call that changes something. */
static void
test_timeout_of_a_read_says_retrying_is_safe (void **state)
{
    char *link = dashboard_link ("ws43:", 0);
    char *cookie = open_session (link);
    http_t home = dashboard_home (cookie);         /* the broker client it uses is connected */
    assert_int_equal (home.status, 200);
    http_free (&home);
    harness_signal_broker (h, 0, SIGSTOP);
    home = dashboard_home (cookie);                 /* the page's 5 s */
    harness_signal_broker (h, 0, SIGCONT);
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    printf ("the dashboard while its broker was stopped: %ld\n", home.status);
    assert_int_equal (home.status, 503);
    assert_true (has (&home, "could not be listed"));
    assert_true (has (&home, "did not answer in time"));
    assert_false (has (&home, "outcome of the request is unknown"));
    assert_true (has (&home, "this request changes nothing, so sending it again"));
    http_free (&home);
    free (cookie);
    free (link);
}

/* The browser binding a dashboard connect's answer set (Set-Cookie of cookie name, checked for
 * its attributes: HttpOnly, SameSite=Lax, Path=/, a day, Secure when secure, 43 base64url
 * characters) as a "Cookie:" header (a new string). */
static char *
flow_cookie_of (const http_t *r, const char *name, int secure)
{
    char *set = header (r, "Set-Cookie");
    if (!set)
        fail_msg ("the connect's answer set no cookie");
    size_t n = strlen (name);
    if (strncmp (set, name, n) != 0 || set [n] != '=')
        fail_msg ("the connect's answer set another cookie than \"%s\"", name);
    const char *v = set + n + 1;
    size_t len = strcspn (v, ";");
    assert_int_equal (len, 43);
    assert_int_equal (strspn (v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    assert_non_null (strstr (set, "; HttpOnly"));
    assert_non_null (strstr (set, "; SameSite=Lax"));
    assert_non_null (strstr (set, "; Path=/"));
    assert_non_null (strstr (set, "; Max-Age=86400"));
    assert_null (strstr (set, "Domain"));
    if (secure)
        assert_non_null (strstr (set, "; Secure"));
    else
        assert_null (strstr (set, "Secure"));
    char *cookie = malloc (len + n + 16);
    snprintf (cookie, len + n + 16, "Cookie: %s=%.*s", name, (int) len, v);
    free (set);
    return cookie;
}

/* The form of a page whose button is labelled label, as a browser would post it: its action into
 * action, its fields url-encoded into body (the values are ids and tokens: nothing to escape). */
static void
form_of_button (const char *page, const char *label, char *action, size_t alen, char *body, size_t blen)
{
    char needle [64];
    snprintf (needle, sizeof needle, ">%s</button>", label);
    const char *button = strstr (page, needle);
    assert_non_null (button);
    const char *form = NULL;
    for (const char *f = strstr (page, "<form "); f && f < button; f = strstr (f + 1, "<form "))
        form = f;
    assert_non_null (form);
    const char *a = strstr (form, "action=\"") + 8;
    snprintf (action, alen, "%.*s", (int) strcspn (a, "\""), a);
    body [0] = '\0';
    for (const char *in = strstr (form, "<input "); in && in < button; in = strstr (in + 1, "<input ")) {
        const char *n = strstr (in, "name=\"") + 6, *v = strstr (in, "value=\"") + 7;
        size_t used = strlen (body);
        snprintf (body + used, blen - used, "%s%.*s=%.*s", used ? "&" : "", (int) strcspn (n, "\""), n,
                  (int) strcspn (v, "\""), v);
    }
}

/* An integration connected from the dashboard for the first time, whose connect did not finish
 * (the user declined, or never came back): its page shows status not_connected and a Connect
 * button, which must start a connect. It posted to the reconnect action, which reads the
 * integration's row, and there is none yet: "could not be reconnected", 404. */
static void
test_dashboard_connect_of_a_never_connected_integration (void **state)
{
    char callback [160];
    snprintf (callback, sizeof callback, "%s/oauth/callback", gw_url);
    json_t *c = call ("connect", json_pack ("{s:s, s:s, s:s}", "integration", "ws13:new", "provider", "fakebox",
                                            "redirect_uri", callback));
    assert_string_equal (client_error_code (c), "ok");
    json_decref (c);
    char *link = dashboard_link ("ws13:", 0);
    char *cookie = open_session (link);
    char url [512], action [256], body [512];
    snprintf (url, sizeof url, "%s/dashboard/integrations/ws13:new", gw_url);
    const char *hdr [] = { cookie, NULL };
    http_t page = http ("GET", url, hdr, NULL);
    assert_int_equal (page.status, 200);
    assert_true (has (&page, "not_connected"));
    form_of_button (page.body, "Connect", action, sizeof action, body, sizeof body);
    http_free (&page);
    snprintf (url, sizeof url, "%s%s", gw_url, action);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, phdr, body);
    char *where = header (&r, "Location");
    if (r.status != 303 || !where || !strstr (where, "/authorize"))
        fail_msg ("the Connect button (%s): %ld, to %s", action, r.status, where ? where : "nowhere");
    free (where);
    http_free (&r);
    free (cookie);
    free (link);
}

static void
test_dashboard_session_and_csrf (void **state)
{
    char *rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "ws5:box", "fakebox", rt), 0);
    free (rt);
    char *link = dashboard_link ("ws5:", 0);
    char *cookie = open_session (link);
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    const char *hdr [] = { cookie, NULL };
    http_t r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "ws5:box"));
    assert_true (has (&r, ">Disconnect</button>"));
    char *csrf = form_value (r.body, "csrf");
    assert_non_null (csrf);
    http_free (&r);
    /* back from a failed connect: the result, and nothing of the query as markup */
    snprintf (url, sizeof url, "%s/dashboard?integration=ws5:box&status=failed&error=access_denied", gw_url);
    r = http ("GET", url, hdr, NULL);
    assert_true (has (&r, "did not finish (access_denied)"));
    http_free (&r);
    snprintf (url, sizeof url, "%s/dashboard?integration=ws5:box&status=failed&error=%%3Cb%%3Ex", gw_url);
    r = http ("GET", url, hdr, NULL);
    assert_true (has (&r, "did not finish."));
    assert_false (has (&r, "<b>x"));
    http_free (&r);
    snprintf (url, sizeof url, "%s/dashboard", gw_url);

    /* the link works once */
    http_t page = http ("GET", link, NULL, NULL);
    r = press_open (&page);
    assert_int_equal (r.status, 403);
    assert_true (has (&r, "expired or was already used"));
    http_free (&r);
    http_free (&page);
    /* an expired link */
    char *old = dashboard_link ("ws5:", 30);
    assert_int_equal (harness_sql (h, "UPDATE gateway_dashboard_links SET expires_at = now () - interval '1 second' "
                                      "WHERE used_at IS NULL"), 0);
    page = http ("GET", old, NULL, NULL);
    r = press_open (&page);
    assert_int_equal (r.status, 403);
    http_free (&r);
    http_free (&page);
    free (old);
    /* a tampered session cookie (another workspace, same signature) */
    char *tampered = strdup (cookie);
    char *ws = strstr (tampered, "|ws5:|");
    assert_non_null (ws);
    ws [3] = '6';
    const char *thdr [] = { tampered, NULL };
    r = http ("GET", url, thdr, NULL);
    assert_int_equal (r.status, 401);
    http_free (&r);
    free (tampered);
    /* a second session cookie beside the person's own, as another host of the same site can set
       one over http (Domain=): neither is believed, in either order; and the name is compared
       exactly (libmicrohttpd's lookup ignored case) */
    char *planted = forged_session ("ws6:"), both [1200];
    const char *mine = cookie + strlen ("Cookie: "), *theirs = planted + strlen ("Cookie: ");
    for (int i = 0; i < 3; i++) {
        if (i < 2)
            snprintf (both, sizeof both, "Cookie: %s; %s", i ? mine : theirs, i ? theirs : mine);
        else
            snprintf (both, sizeof both, "Cookie: FERRULE_SESSION%s", strchr (mine, '='));
        const char *bhdr [] = { both, NULL };
        r = http ("GET", url, bhdr, NULL);
        if (r.status != 401)
            fail_msg ("%s: %ld, wanted 401 (no session)", i < 2 ? "two session cookies" : "FERRULE_SESSION", r.status);
        http_free (&r);
    }
    free (planted);

    /* POST without, then with, the CSRF token */
    snprintf (url, sizeof url, "%s/dashboard/integrations/ws5:box/disconnect", gw_url);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    r = http ("POST", url, phdr, "");
    assert_int_equal (r.status, 403);
    http_free (&r);
    r = http ("POST", url, phdr, "csrf=0000000000000000000000000000000000000000000000000000000000000000");
    assert_int_equal (r.status, 403);
    http_free (&r);
    json_t *st = call ("status", json_pack ("{s:s}", "integration", "ws5:box"));
    assert_string_equal (json_string_value (json_object_get (json_object_get (st, "integration"), "status")), "active");
    json_decref (st);
    char body [128];
    snprintf (body, sizeof body, "csrf=%s", csrf);
    r = http ("POST", url, phdr, body);
    assert_int_equal (r.status, 303);
    char *where = header (&r, "Location");
    assert_string_equal (where, "/dashboard?done=disconnected&integration=ws5%3Abox");
    free (where);
    http_free (&r);
    st = call ("status", json_pack ("{s:s}", "integration", "ws5:box"));
    assert_string_equal (json_string_value (json_object_get (json_object_get (st, "integration"), "status")), "disconnected");
    json_decref (st);
    /* another workspace's integration is not reachable from this session */
    snprintf (url, sizeof url, "%s/dashboard/integrations/acct1:box", gw_url);
    r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 404);
    http_free (&r);
    /* no session at all */
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    r = http ("GET", url, NULL, NULL);
    assert_int_equal (r.status, 401);
    http_free (&r);
    free (csrf);
    free (cookie);
    free (link);
    /* nothing the provider issued reached a log of any process (the gateway's included) */
    assert_false (itest_workdir_contains (h, "fake-code-"));
    assert_false (itest_workdir_contains (h, "fake-at-"));
    assert_false (itest_workdir_contains (h, "fake-rt-"));
}

/* Presses an integration's Disconnect on the dashboard of session cookie (csrf its token) and
 * follows the answer's redirect; returns the dashboard it leads to. */
static http_t
dashboard_disconnect (const char *cookie, const char *csrf, const char *id)
{
    char url [256], body [128];
    snprintf (url, sizeof url, "%s/dashboard/integrations/%s/disconnect", gw_url, id);
    snprintf (body, sizeof body, "csrf=%s", csrf);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, phdr, body);
    char *where = header (&r, "Location");
    if (r.status != 303 || !where)
        fail_msg ("Disconnect of %s: %ld, to %s", id, r.status, where ? where : "nowhere");
    http_free (&r);
    snprintf (url, sizeof url, "%s%s", gw_url, where);
    free (where);
    const char *hdr [] = { cookie, NULL };
    return http ("GET", url, hdr, NULL);
}

/* A disconnect whose revocation the provider did not confirm (or that could not be tried) says
 * so: the dashboard said "its tokens were destroyed and revoked at the provider" on any success,
 * and the grant, still valid there, was left for nobody to end. */
static void
test_dashboard_disconnect_says_when_not_revoked (void **state)
{
    const char *ids [] = { "ws41:kept", "ws41:gone" };
    for (int i = 0; i < 2; i++) {
        char *rt = itest_grant (h, "fakebox", "[\"read\"]");
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    char *link, *cookie;
    char *csrf = open_dashboard ("ws41:", &link, &cookie);
    /* the provider answers the revocation HTTP 200 with an error in its body (as Slack's does) */
    json_t *f = json_pack ("{s:s, s:s, s:s, s:i, s:s}", "provider", "fakebox", "kind", "error_200", "endpoint", "revoke",
                           "count", 1, "error", "token_revoked_elsewhere");
    json_decref (harness_fake (h, "POST", "/admin/faults", f));
    json_decref (f);
    http_t page = dashboard_disconnect (cookie, csrf, "ws41:kept");
    assert_int_equal (page.status, 200);
    if (has (&page, "revoked at the provider") && !has (&page, "not revoked"))
        fail_msg ("a disconnect the provider did not confirm was shown as revoked at the provider");
    assert_true (has (&page, "may still be live at the provider"));
    assert_true (has (&page, "remove this application&#39;s access in your account"));
    http_free (&page);
    /* a revocation that worked is still said so */
    page = dashboard_disconnect (cookie, csrf, "ws41:gone");
    assert_int_equal (page.status, 200);
    assert_true (has (&page, "destroyed and revoked at the provider"));
    assert_false (has (&page, "may still be live"));
    http_free (&page);
    free (csrf);
    free (cookie);
    free (link);
}

/* A disconnect of an integration that held no token (the worker's not_revoked "held no token to
 * revoke") has nothing that could still be live at the provider: the dashboard said its access
 * "may still be live" there, as for a revocation that failed, and sent the user to remove it. */
static void
test_dashboard_disconnect_without_tokens_says_nothing_was_left (void **state)
{
    char *rt = itest_grant (h, "fakebox", "[\"read\"]");
    assert_int_equal (itest_import (h, "ws47:empty", "fakebox", rt), 0);
    free (rt);
    assert_int_equal (harness_sql (h, "UPDATE integrations SET access_token = NULL, refresh_token = NULL "
                                      "WHERE id = 'ws47:empty'"), 0);
    char *link, *cookie;
    char *csrf = open_dashboard ("ws47:", &link, &cookie);
    http_t page = dashboard_disconnect (cookie, csrf, "ws47:empty");
    assert_int_equal (page.status, 200);
    printf ("disconnect of an integration without tokens: %s\n",
            has (&page, "may still be live") ? "\"may still be live at the provider\"" : "no such claim");
    assert_false (has (&page, "may still be live"));
    assert_false (has (&page, "revoked at the provider"));
    assert_true (has (&page, "there was nothing to revoke"));
    http_free (&page);
    free (csrf);
    free (cookie);
    free (link);
}

/* A disconnect not revoked because the provider's revocation ends the account's whole grant, which
 * another active integration of the workspace may hold (worker/disconnect.c), is no grant to end
 * now: the dashboard told the user to remove the application's access at the provider, which
 * would end the other integration's access too. */
static void
test_dashboard_disconnect_of_a_shared_grant_keeps_the_other (void **state)
{
    const char *ids [] = { "ws49:drive", "ws49:docs" };
    for (int i = 0; i < 2; i++) {
        char *rt = itest_grant (h, "fakebox", "[\"read\"]");
        assert_int_equal (itest_import (h, ids [i], "fakegrant", rt), 0);
        free (rt);
    }
    char *link, *cookie;
    char *csrf = open_dashboard ("ws49:", &link, &cookie);
    http_t page = dashboard_disconnect (cookie, csrf, "ws49:docs");
    assert_int_equal (page.status, 200);
    printf ("disconnect of one of two integrations sharing a grant: %s\n",
            has (&page, "To end it, remove this application") ? "\"To end it, remove this application's access\""
                                                              : "no advice to end it now");
    assert_false (has (&page, "To end it, remove this application"));
    assert_true (has (&page, "another connected integration of this workspace"));
    assert_true (has (&page, "Once none of them is needed"));
    http_free (&page);
    /* the last one: revoked, and said so */
    page = dashboard_disconnect (cookie, csrf, "ws49:drive");
    assert_int_equal (page.status, 200);
    assert_true (has (&page, "destroyed and revoked at the provider"));
    http_free (&page);
    free (csrf);
    free (cookie);
    free (link);
}

/* The dashboard's Connect offers the providers of FERRULE_GATEWAY_PROVIDERS, and takes no other:
 * a form posted with another provider of the workers' catalog started a connect of it. */
static void
test_dashboard_connect_only_offered_providers (void **state)
{
    char *link = dashboard_link ("ws42:", 0);
    char *cookie = open_session (link);
    http_t home = dashboard_home (cookie);
    char *csrf = form_value (home.body, "csrf");
    assert_non_null (csrf);
    assert_false (has (&home, "<option>fakebad</option>"));
    http_free (&home);
    char url [256], body [256], audit [1024];
    snprintf (url, sizeof url, "%s/dashboard/connect", gw_url);
    snprintf (body, sizeof body, "csrf=%s&provider=fakebad&name=", csrf);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, phdr, body);
    printf ("Connect of a provider not offered: %ld\n", r.status);     /* its Location holds a state */
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "fakebad"));
    assert_true (has (&r, "fakebox"));          /* the ones it offers */
    http_free (&r);
    snprintf (body, sizeof body, "csrf=%s&provider=fakebox&name=", csrf);
    r = http ("POST", url, phdr, body);
    assert_int_equal (r.status, 303);           /* an offered one still connects */
    http_free (&r);
    /* the broker's audit line of a call is written after its answer: the offered one's is there,
       and no call was made for the other */
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    for (int64_t until = clock_mono_ms () + 10000;
         count_lines (audit, "\"op\":\"connect\",\"integration\":\"ws42:fakebox\"") < 1 && clock_mono_ms () < until;)
        usleep (50000);
    assert_int_equal (count_lines (audit, "\"integration\":\"ws42:fakebad\""), 0);
    free (csrf);
    free (cookie);
    free (link);
}

/* A workspace at its 100 live API keys: the dashboard's create is answered 409, a conflict with the
 * workspace's state, saying what to do; it was 413 "content too large" for a form of a few bytes. */
static void
test_dashboard_key_limit_is_a_conflict (void **state)
{
    for (int i = 0; i < 100; i++) {
        char name [16];
        snprintf (name, sizeof name, "k%d", i);
        json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "ws44:", "name", name));
        assert_string_equal (client_error_code (k), "ok");
        json_decref (k);
    }
    char *link, *cookie;
    char *csrf = open_dashboard ("ws44:", &link, &cookie);
    char url [256], body [128];
    snprintf (url, sizeof url, "%s/dashboard/apikeys", gw_url);
    snprintf (body, sizeof body, "csrf=%s&name=one-more", csrf);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, phdr, body);
    printf ("the 101st key: %ld\n", r.status);
    assert_int_equal (r.status, 409);
    assert_true (has (&r, "revoke a key you no longer use"));
    http_free (&r);
    free (csrf);
    free (cookie);
    free (link);
}

/* A dashboard session that has ended says how long sessions last as configured
 * (FERRULE_GATEWAY_SESSION_TTL_S): it said "an hour" whatever they lasted. */
static void
test_ended_session_says_its_ttl (void **state)
{
    gw_saved_t saved = gw_save ();
    gw_env [0] = "FERRULE_GATEWAY_SESSION_TTL_S=120";
    int started = start_gateway_with ("gateway-ttl", NULL, NULL);
    gw_env [0] = NULL;
    http_t r = { 0, NULL, NULL };
    if (started == 0)
        r = dashboard_home (NULL);
    int stopped = started == 0 ? stop_gateway () : -1;
    gw_restore (&saved);
    assert_int_equal (started, 0);
    assert_int_equal (stopped, 0);
    assert_int_equal (r.status, 401);
    assert_false (has (&r, "an hour"));
    assert_true (has (&r, "sessions last 2 minutes"));
    http_free (&r);
    r = dashboard_home (NULL);                      /* the suite's gateway: the default hour */
    assert_int_equal (r.status, 401);
    assert_true (has (&r, "sessions last an hour"));
    http_free (&r);
}

/* A form value that is there but cannot be used (longer than the field, an encoded NUL, bytes
 * that are not UTF-8) is refused with a 400, never taken for an absent one. A Connect whose name
 * was too long started a connect of WORKSPACE:PROVIDER instead (the name's default), which may
 * be an integration that exists; an API key's name that was not UTF-8 reached the worker as no
 * request at all, and the page said the workspace prefix was wrong. */
static void
test_dashboard_refuses_unusable_form_values (void **state)
{
    char *link = dashboard_link ("ws16:", 0);
    char *cookie = open_session (link);
    http_t r = dashboard_home (cookie);
    assert_int_equal (r.status, 200);
    char *csrf = form_value (r.body, "csrf");
    assert_non_null (csrf);
    http_free (&r);
    char audit [1024], url [256], body [512], long_name [201];
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    memset (long_name, 'a', 200);
    long_name [200] = '\0';
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    const char *names [] = { long_name, "x%00y", "x%FFy" };
    snprintf (url, sizeof url, "%s/dashboard/connect", gw_url);
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        snprintf (body, sizeof body, "csrf=%s&provider=fakebox&name=%s", csrf, names [i]);
        r = http ("POST", url, phdr, body);
        if (r.status != 400 || !has (&r, "This name cannot be used"))
            fail_msg ("Connect named \"%.12s\": %ld", names [i], r.status);
        http_free (&r);
    }
    snprintf (body, sizeof body, "csrf=%s&provider=fake%%FFbox", csrf);
    r = http ("POST", url, phdr, body);
    assert_int_equal (r.status, 400);
    http_free (&r);
    usleep (200000);                            /* room for a line that should not come */
    assert_int_equal (count_lines (audit, "\"op\":\"connect\",\"integration\":\"ws16:"), 0);

    snprintf (url, sizeof url, "%s/dashboard/apikeys", gw_url);
    snprintf (body, sizeof body, "csrf=%s&name=svc%%FF", csrf);
    r = http ("POST", url, phdr, body);
    if (r.status != 400 || !has (&r, "This name cannot be used"))
        fail_msg ("an API key named with a byte that is not UTF-8: %ld", r.status);
    http_free (&r);
    free (csrf);
    free (cookie);
    free (link);
}

/* An API key's name is what the workers take: 1 to 64 printable ASCII characters. The dashboard
 * refused a name of 72 bytes or more as longer than "64 characters of text" (40 accented letters
 * are 80 bytes), let shorter ones through to the worker, and answered its too_large for a name of
 * 65 to 71 bytes 409, the status of the workspace's 100 live keys. */
static void
test_dashboard_key_name_is_printable_ascii (void **state)
{
    char *link, *cookie;
    char *csrf = open_dashboard ("ws48:", &link, &cookie);
    char url [256], body [1024], name [512];
    snprintf (url, sizeof url, "%s/dashboard/apikeys", gw_url);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    /* 65 ASCII letters; 33 and 40 "é" (66 and 80 bytes); one "é"; a tab */
    const struct { const char *unit; int n; } bad [] = { { "a", 65 }, { "%C3%A9", 33 }, { "%C3%A9", 40 },
                                                          { "%C3%A9", 1 }, { "a%09b", 1 } };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        name [0] = '\0';
        for (int k = 0; k < bad [i].n; k++)
            strcat (name, bad [i].unit);
        snprintf (body, sizeof body, "csrf=%s&name=%s", csrf, name);
        http_t r = http ("POST", url, phdr, body);
        printf ("an API key named %d x \"%s\": %ld%s\n", bad [i].n, bad [i].unit, r.status,
                has (&r, "64 characters of text") ? ", \"64 characters of text\"" : "");
        if (r.status != 400 || !has (&r, "This name cannot be used") || !has (&r, "1 to 64 ASCII characters"))
            fail_msg ("an API key named %d x \"%s\": %ld", bad [i].n, bad [i].unit, r.status);
        http_free (&r);
    }
    /* 64 ASCII characters, spaces and punctuation among them, are a name */
    snprintf (body, sizeof body, "csrf=%s&name=%s", csrf,
              "sync+%28nightly%29+0123456789012345678901234567890123456789abcdefghi");
    http_t r = http ("POST", url, phdr, body);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "frk_"));
    http_free (&r);
    free (csrf);
    free (cookie);
    free (link);
}

/* A public URL written in upper case (HTTPS://HOST) is https all the same: cookies Secure, HSTS
 * sent. And the dashboard's own connect comes back to the dashboard's page, the one that keeps the
 * session cookie. The redirect URI goes to the provider as configured, character for character
 * (providers compare it so). Both compared the URL as written: no Secure flag and no HSTS, and the return
 * after a connect was taken for another application's (a 303, which drops the SameSite=Strict
 * cookie after the provider's redirect: "Your dashboard session has ended"). */
static void
test_public_url_in_upper_case (void **state)
{
    gw_saved_t saved = gw_save ();
    gw_upper_https = 1;
    int started = start_gateway_with ("gateway-upper", NULL, NULL);
    gw_upper_https = 0;
    assert_int_equal (started, 0);
    char https_callback [128];
    snprintf (https_callback, sizeof https_callback, "HTTPS://127.0.0.1:%d/oauth/callback", gw_port);
    itest_fake_config (h, "fakebox", json_pack ("{s:[s,s]}", "redirect_uris", saved.callback, https_callback));
    char *link = dashboard_link ("ws17:", 600);
    http_t page = http ("GET", link, NULL, NULL);
    assert_int_equal (page.status, 200);
    http_t r = press_open (&page);
    http_free (&page);
    assert_int_equal (r.status, 303);
    char *set = header (&r, "Set-Cookie"), *hsts = header (&r, "Strict-Transport-Security");
    assert_non_null (set);
    if (!strstr (set, "; Secure") || !hsts)
        fail_msg ("public URL HTTPS://...: the session cookie %s Secure, HSTS %s", strstr (set, "; Secure") ? "is" : "is not",
                  hsts ? "sent" : "not sent");
    /* "__Host-": a browser takes it only from this host (Secure, Path=/, no Domain), so another
       host of the same site cannot plant a session of its own workspace in the visitor's browser */
    if (strncmp (set, "__Host-ferrule_session=", 23) != 0 || !strstr (set, "; Path=/;") || strstr (set, "Domain") || strstr (set, "domain"))
        fail_msg ("public URL HTTPS://...: the session cookie is \"%.*s...\", wanted __Host-ferrule_session=, Path=/ "
                  "and no Domain", (int) strcspn (set, "="), set);
    char cookie [512], plain [512], upper [512], planted_too [1200];
    snprintf (cookie, sizeof cookie, "Cookie: %.*s", (int) strcspn (set, ";"), set);
    free (set);
    free (hsts);
    http_free (&r);
    /* the same session under a name another host can set is no session */
    snprintf (plain, sizeof plain, "Cookie: ferrule_session%s", strchr (cookie, '='));
    snprintf (upper, sizeof upper, "Cookie: __HOST-ferrule_session%s", strchr (cookie, '='));
    const char *others [] = { plain, upper };
    for (size_t i = 0; i < 2; i++) {
        r = dashboard_home (others [i]);
        if (r.status != 401)
            fail_msg ("public URL HTTPS://...: a session in \"%.*s\": %ld, wanted 401", (int) strcspn (others [i] + 8, "="),
                      others [i] + 8, r.status);
        http_free (&r);
    }
    /* and one planted beside the person's own is not read */
    char *planted = forged_session ("ws18:");
    snprintf (planted_too, sizeof planted_too, "%s; %s", planted, cookie + strlen ("Cookie: "));
    free (planted);
    r = dashboard_home (planted_too);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "ws17:"));
    assert_false (has (&r, "ws18:"));
    http_free (&r);

    r = dashboard_home (cookie);
    assert_int_equal (r.status, 200);
    char *csrf = form_value (r.body, "csrf");
    assert_non_null (csrf);
    /* an https gateway's forms, and the redirects they answer, go to https only (or itself) */
    char *csp = header (&r, "Content-Security-Policy");
    if (!csp || !strstr (csp, "form-action 'self' https:;") || strstr (csp, "http:"))
        fail_msg ("an https gateway's Content-Security-Policy \"%s\": wanted form-action 'self' https: alone",
                  csp ? csp : "(none)");
    free (csp);
    http_free (&r);
    char url [256], body [256];
    snprintf (url, sizeof url, "%s/dashboard/connect", gw_url);
    snprintf (body, sizeof body, "csrf=%s&provider=fakebox&name=box", csrf);
    const char *phdr [] = { cookie, "Content-Type: application/x-www-form-urlencoded", NULL };
    r = http ("POST", url, phdr, body);
    assert_int_equal (r.status, 303);
    char *to_provider = header (&r, "Location");
    /* a public URL of https (in any case): the binding cookie is the "__Host-" one, Secure */
    char *flow_cookie = flow_cookie_of (&r, "__Host-ferrule_flow", 1);
    http_free (&r);
    assert_non_null (to_provider);
    assert_non_null (strstr (to_provider, "redirect_uri=HTTPS%3A%2F%2F127.0.0.1"));
    char *back = authorize (to_provider);
    free (to_provider);
    /* the provider sends the browser to HTTPS://...: this gateway is that, over plain HTTP here */
    assert_true (strncmp (back, "HTTPS://", 8) == 0);
    snprintf (url, sizeof url, "%s%s", gw_url, strstr (back + 8, "/oauth/callback"));
    free (back);
    const char *fhdr [] = { flow_cookie, NULL };
    r = http ("GET", url, fhdr, NULL);
    free (flow_cookie);
    if (r.status != 200 || !has (&r, "http-equiv=\"refresh\""))
        fail_msg ("the dashboard's own connect came back with %ld, not its page back to the dashboard", r.status);
    http_free (&r);
    free (csrf);
    free (link);
    assert_int_equal (stop_gateway (), 0);
    gw_restore (&saved);
    itest_fake_config (h, "fakebox", json_pack ("{s:[s]}", "redirect_uris", callback_uri));
}

/* A form posted from another site is refused before it does anything: above all the dashboard
 * link's button, which a page elsewhere could submit with its author's own link to start a
 * session of the author's workspace in the victim's browser. A browser says where a form came
 * from in Sec-Fetch-Site, or else in Origin; curl and old browsers send neither. */
static void
test_dashboard_refuses_cross_site_posts (void **state)
{
    char own [128];
    snprintf (own, sizeof own, "Origin: %s", gw_url);
    char *link = dashboard_link ("ws10:", 0);
    http_t page = http ("GET", link, NULL, NULL);
    assert_int_equal (page.status, 200);
    const struct { const char *a, *b; } foreign [] = {
        { "Origin: https://evil.example", NULL },
        { "Sec-Fetch-Site: cross-site", NULL },
        { "Sec-Fetch-Site: cross-site", own },          /* Sec-Fetch-Site decides when present */
        { "Sec-Fetch-Site: same-site", NULL },          /* another host of the same site */
        { "Origin: null", NULL },                       /* a sandboxed frame, or a page's no-referrer */
        { "Origin: http://127.0.0.1:1", NULL },
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign [0]; i++) {
        http_t r = press_open_as (&page, foreign [i].a, foreign [i].b);
        char *set = header (&r, "Set-Cookie");
        if (r.status != 403 || set)
            fail_msg ("POST /dashboard/open with \"%s\"%s%s: %ld%s, wanted 403 and no session", foreign [i].a,
                      foreign [i].b ? " and " : "", foreign [i].b ? foreign [i].b : "", r.status,
                      set ? " with a session cookie" : "");
        assert_true (has (&r, "sent from another site"));
        http_free (&r);
    }
    /* none of them spent the link: the gateway's own page still opens it */
    http_t r = press_open_as (&page, own, NULL);
    assert_int_equal (r.status, 303);
    char *set = header (&r, "Set-Cookie");
    assert_non_null (set);
    char cookie [512];
    snprintf (cookie, sizeof cookie, "Cookie: %.*s", (int) strcspn (set, ";"), set);
    free (set);
    http_free (&r);
    http_free (&page);
    free (link);
    /* Sec-Fetch-Site decides when present, whatever Origin says */
    link = dashboard_link ("ws10:", 0);
    page = http ("GET", link, NULL, NULL);
    r = press_open_as (&page, "Sec-Fetch-Site: same-origin", "Origin: null");
    assert_int_equal (r.status, 303);
    http_free (&r);
    http_free (&page);
    free (link);

    /* the session's other forms and the failure pages' Try again buttons too */
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    const char *chdr [] = { cookie, NULL };
    r = http ("GET", url, chdr, NULL);
    assert_int_equal (r.status, 200);
    char *csrf = form_value (r.body, "csrf");
    assert_non_null (csrf);
    http_free (&r);
    char body [160];
    snprintf (body, sizeof body, "csrf=%s&name=planted", csrf);
    snprintf (url, sizeof url, "%s/dashboard/apikeys", gw_url);
    const char *evil [] = { cookie, "Content-Type: application/x-www-form-urlencoded", "Origin: https://evil.example",
                            NULL };
    r = http ("POST", url, evil, body);
    assert_int_equal (r.status, 403);
    http_free (&r);
    json_t *keys = call ("apikey_list", json_pack ("{s:s}", "integration", "ws10:"));
    assert_int_equal (json_array_size (json_object_get (keys, "keys")), 0);
    json_decref (keys);
    const char *same [] = { cookie, "Content-Type: application/x-www-form-urlencoded", "Sec-Fetch-Site: same-origin",
                            NULL };
    r = http ("POST", url, same, body);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "Your new API key"));
    http_free (&r);
    snprintf (url, sizeof url, "%s/oauth/retry", gw_url);
    const char *retry [] = { "Content-Type: application/x-www-form-urlencoded", "Sec-Fetch-Site: cross-site", NULL };
    r = http ("POST", url, retry, "retry_token=x");
    assert_int_equal (r.status, 403);
    http_free (&r);
    /* the HTTP API is not a browser's: its bearer key is the proof, whatever Origin says */
    const char *apih [] = { "Authorization: Bearer " ADMIN_KEY, "Content-Type: application/json",
                            "Origin: https://evil.example", NULL };
    snprintf (url, sizeof url, "%s/v1/integrations/acct1:nothing/connect", gw_url);
    r = http ("POST", url, apih, "{}");
    assert_int_not_equal (r.status, 403);
    http_free (&r);
    assert_true (log_has ("refused: it was sent from another site"));
    free (csrf);
}

/* The "Cookie:" header of a session the gateway signed for workspace ws, as one issued before
 * workspaces had to end with a separator would be (gateway/session.c's format). */
static char *
forged_session (const char *ws)
{
    char payload [256], mac [65];
    unsigned char md [32];
    unsigned int mdlen = 0;
    snprintf (payload, sizeof payload, "session|1|%lld|%s|0011223344556677", (long long) time (NULL) + 600, ws);
    HMAC (EVP_sha256 (), SESSION_KEY, 32, (const unsigned char *) payload, strlen (payload), md, &mdlen);
    for (int i = 0; i < 32; i++)
        snprintf (mac + 2 * i, 3, "%02x", md [i]);
    char *cookie = malloc (512);
    snprintf (cookie, 512, "Cookie: ferrule_session=%s.%s", payload + strlen ("session|"), mac);
    return cookie;
}

/* A workspace is an id prefix: "acct4" would cover "acct42:x", another customer's. A key or a
 * dashboard link of a workspace that does not end with a separator, stored before the workers
 * refused to make them, is refused outright, never taken as covering other ids; and a key of
 * "acct4:" does not reach "acct42:x". */
static void
test_workspace_boundary (void **state)
{
    const char *ids [] = { "acct42:x", "acct4:box" };
    for (size_t i = 0; i < 2; i++) {
        char *rt = itest_grant (h, "fakebox", "[\"read\"]");
        assert_int_equal (itest_import (h, ids [i], "fakebox", rt), 0);
        free (rt);
    }
    json_t *k = call ("apikey_create", json_pack ("{s:s, s:s}", "integration", "acct4:", "name", "svc"));
    assert_string_equal (client_error_code (k), "ok");
    char *key = strdup (json_string_value (json_object_get (k, "key")));
    json_decref (k);
    expect ("GET", "/v1/integrations/acct4:box/token", key, NULL, 200, "ok");
    expect ("GET", "/v1/integrations/acct42:x/token", key, NULL, 403, "forbidden");
    free (key);

    /* a key of workspace "acct4", stored before the rule: no integration at all */
    const char *old_key = "frk_stored-before-the-separator-rule-0123456789";
    char hash [65], sql [512];
    hex_sha256 (old_key, hash);
    snprintf (sql, sizeof sql, "INSERT INTO gateway_api_keys (key_hash, workspace, name, prefix) VALUES"
                               " ('%s', 'acct4', 'old', 'frk_stored-b')", hash);
    assert_int_equal (harness_sql_before_constraint (h, "gateway_api_keys", "gateway_api_keys_workspace_end", sql), 0);
    for (size_t i = 0; i < 2; i++) {
        char path [128];
        snprintf (path, sizeof path, "/v1/integrations/%s/token", ids [i]);
        json_t *j = NULL;
        http_t r = api ("GET", path, old_key, NULL);
        if (r.status != 403 || strcmp (code_of (&r, &j), "forbidden") != 0)
            fail_msg ("GET %s with a key of workspace \"acct4\": %ld %s, wanted 403 forbidden", path, r.status,
                      code_of (&r, &j));
        const char *hint = json_string_value (json_object_get (json_object_get (j, "error"), "hint"));
        assert_non_null (hint);
        assert_non_null (strstr (hint, "ends with ':'"));
        assert_null (json_object_get (j, "access_token"));
        json_decref (j);
        http_free (&r);
    }

    /* a dashboard link of workspace "acct4", stored before the rule: no session */
    const char *old_link = "link-stored-before-the-separator-rule";
    hex_sha256 (old_link, hash);
    snprintf (sql, sizeof sql, "INSERT INTO gateway_dashboard_links (token_hash, workspace, expires_at) VALUES"
                               " ('%s', 'acct4', now () + interval '10 minutes')", hash);
    assert_int_equal (harness_sql_before_constraint (h, "gateway_dashboard_links", "gateway_dashboard_links_workspace_end",
                                                     sql), 0);
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard/open?link=%s&workspace=acct4", gw_url, old_link);
    http_t page = http ("GET", url, NULL, NULL);
    assert_int_equal (page.status, 200);
    http_t r = press_open (&page);
    char *set = header (&r, "Set-Cookie");
    if (r.status != 403 || set)
        fail_msg ("a dashboard link of workspace \"acct4\": %ld%s, wanted 403 and no session", r.status,
                  set ? " with a session cookie" : "");
    assert_true (has (&r, "ends with"));
    http_free (&r);
    http_free (&page);

    /* a session of workspace "acct4", signed before the rule: not a page of it */
    char *cookie = forged_session ("acct4");
    const char *hdr [] = { cookie, NULL };
    const char *pages [] = { "/dashboard", "/dashboard/integrations/acct42:x", "/dashboard/integrations/acct4:box" };
    for (size_t i = 0; i < 3; i++) {
        snprintf (url, sizeof url, "%s%s", gw_url, pages [i]);
        r = http ("GET", url, hdr, NULL);
        if (r.status != 403 || !has (&r, "ends with"))
            fail_msg ("GET %s in a session of workspace \"acct4\": %ld, wanted 403 saying why", pages [i], r.status);
        assert_false (has (&r, "acct42:x</"));
        http_free (&r);
    }
    free (cookie);
    /* the same forgery for "acct4:" is a working session: the refusals above are the rule's */
    cookie = forged_session ("acct4:");
    hdr [0] = cookie;
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "acct4:box"));
    assert_false (has (&r, "acct42:x"));
    http_free (&r);
    snprintf (url, sizeof url, "%s/dashboard/integrations/acct42:x", gw_url);
    r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 404);
    http_free (&r);
    free (cookie);
    assert_false (itest_workdir_contains (h, old_key));         /* in no log of any process */
    assert_false (itest_workdir_contains (h, old_link));
}

/* How many times needle occurs in the page. */
static int
count_of (const http_t *r, const char *needle)
{
    int n = 0;
    for (const char *s = r->body; (s = strstr (s, needle)); s += strlen (needle))
        n++;
    return n;
}

/* A Try again the worker refuses for the integration's rate limit (rate_limited) is answered 429
 * with a Retry-After of at least a second, as docs/openapi.yaml maps the code; it was 503. */
static void
test_retry_rate_limited_is_429 (void **state)
{
    http_t page = flow_error ("ws45:rl", "access_denied", "no");
    assert_true (has (&page, "retry_token"));
    /* the connect above, and nine more: FERRULE_ADMIN_RATE_BURST's 10 */
    for (int i = 0; i < 9; i++)
        free (connect_url ("ws45:rl", "fakebox", "read", NULL));
    http_t r = press_retry (&page);
    char *ra = header (&r, "Retry-After");
    printf ("a Try again past the rate limit: %ld, Retry-After %s\n", r.status, ra ? ra : "(none)");
    assert_int_equal (r.status, 429);
    assert_non_null (ra);
    assert_true (atoi (ra) >= 1);
    free (ra);
    http_free (&r);
    http_free (&page);
}

/* A callback the service could not answer (its database stalled) was followed by the attempt's
 * read, with 10 s of its own: a page took up to 40 s where 30 s are documented, and the deploy's
 * drain is sized on them. The attempt now shares the callback's 30 s, and is not asked at all
 * once the callback was answered that the service cannot answer now. */
static void
test_callback_in_a_stall_asks_nothing_more (void **state)
{
    char audit [1024], url [512];
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    snprintf (url, sizeof url, "%s?state=stalled-0123456789abcdef&code=stalled-code", callback_uri);
    PGconn *locker = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (locker), CONNECTION_OK);
    PGresult *res = PQexec (locker, "BEGIN; LOCK TABLE pending_authorizations IN ACCESS EXCLUSIVE MODE");
    int locked = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    http_t r = { 0, NULL, NULL };
    if (locked)
        r = http ("GET", url, NULL, NULL);
    PQclear (PQexec (locker, "COMMIT"));       /* before any assert: the later tests need the table */
    PQfinish (locker);
    assert_true (locked);
    printf ("a callback while its table was locked: %ld\n", r.status);
    assert_true (r.status >= 400);
    assert_false (has (&r, "is connected"));
    /* its calls' rids begin with its X-Request-Id: the broker's audit line of the callback is
       there (written after its answer), and no attempt's ever comes */
    char *xrid = header (&r, "X-Request-Id");
    http_free (&r);
    assert_non_null (xrid);
    char mine [96];
    snprintf (mine, sizeof mine, "\"rid\":\"%s-", xrid);
    free (xrid);
    for (int64_t until = clock_mono_ms () + 10000; count_lines (audit, mine) < 1 && clock_mono_ms () < until;)
        usleep (50000);
    assert_int_equal (count_lines (audit, mine), 1);       /* the callback's, and only it */
    usleep (200000);                            /* room for a line that should not come */
    assert_int_equal (count_lines (audit, mine), 1);
}

/* A database that does not answer costs a dashboard page one diagnosis, not one per integration:
 * after the first diagnosis the service could not answer, the rest are shown as not checked and
 * never asked. Each was a broker call of up to 10 s, one after another with no deadline for the
 * page; a few dozen such views took every broker client of the gateway. */
static void
test_dashboard_page_gives_up_in_a_stall (void **state)
{
    enum { N = 5 };
    for (int i = 0; i < N; i++) {
        char id [32];
        snprintf (id, sizeof id, "ws11:box%d", i);
        char *rt = itest_grant (h, "fakebox", "[\"read\"]");
        assert_int_equal (itest_import (h, id, "fakebox", rt), 0);
        free (rt);
    }
    char *link = dashboard_link ("ws11:", 0);
    char *cookie = open_session (link);
    char url [256];
    snprintf (url, sizeof url, "%s/dashboard", gw_url);
    const char *hdr [] = { cookie, NULL };
    http_t r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 200);
    assert_int_equal (count_of (&r, "not checked"), 0);
    http_free (&r);

    /* a diagnosis reads the chain's table and the listing does not: the listing is answered, and
       the worker answers each diagnosis database_unavailable once its lock_timeout is over */
    const char *asked = "\"op\":\"doctor\",\"integration\":\"ws11:box";
    char audit [1024];
    snprintf (audit, sizeof audit, "%s/broker0.audit", harness_workdir (h));
    for (int64_t until = clock_mono_ms () + 15000; count_lines (audit, asked) < N && clock_mono_ms () < until;)
        usleep (50000);                         /* the broker writes a line after its answer */
    assert_int_equal (count_lines (audit, asked), N);  /* the page above asked each once */
    PGconn *locker = PQconnectdb (harness_database_url (h));
    assert_int_equal (PQstatus (locker), CONNECTION_OK);
    PGresult *res = PQexec (locker, "BEGIN; LOCK TABLE token_chain IN ACCESS EXCLUSIVE MODE");
    int locked = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    /* an integration's own page as well: its diagnosis, then (not) its history */
    char detail_url [256];
    snprintf (detail_url, sizeof detail_url, "%s/dashboard/integrations/ws11:box0", gw_url);
    http_t detail = { 0, NULL, NULL };
    if (locked) {
        r = http ("GET", url, hdr, NULL);
        detail = http ("GET", detail_url, hdr, NULL);
    }
    PQclear (PQexec (locker, "COMMIT"));       /* before any assert: the later tests need the table */
    PQfinish (locker);
    assert_true (locked);
    const char *history = "\"op\":\"history\",\"integration\":\"ws11:box0\"";
    usleep (200000);                            /* room for a line that should not come */
    if (count_lines (audit, history) != 0)
        fail_msg ("the integration's page asked for its history after its diagnosis could not be had (%ld)",
                  detail.status);
    assert_int_equal (detail.status, 503);
    http_free (&detail);
    assert_int_equal (r.status, 200);
    assert_int_equal (count_of (&r, "<tr data-integration=\"ws11:box"), N);    /* every row is there */
    assert_int_equal (count_of (&r, ">not checked</td>"), N);
    assert_true (has (&r, "id=\"not-checked\""));
    http_free (&r);
    /* the home page asked one diagnosis, the integration's page one */
    for (int64_t until = clock_mono_ms () + 15000; count_lines (audit, asked) < N + 2 && clock_mono_ms () < until;)
        usleep (50000);
    usleep (200000);                            /* room for a line that should not come */
    assert_int_equal (count_lines (audit, asked), N + 2);

    /* the database answers again: so does every diagnosis */
    r = http ("GET", url, hdr, NULL);
    assert_int_equal (r.status, 200);
    assert_int_equal (count_of (&r, "not checked"), 0);
    http_free (&r);
    free (cookie);
    free (link);
}

/* --- SIGHUP and SIGTERM ---------------------------------------------------------------------------- */

/* A named client's key removed from FERRULE_GATEWAY_CLIENT_KEYS_FILE is refused from the next
 * request after SIGHUP, without a restart; a file that cannot be read keeps the keys in effect. */
static void
test_client_keys_reload_on_sighup (void **state)
{
    const char *done = "client keys and the policy just read are in effect";
    char keys [1024], text [512], a [65], b [65];
    snprintf (keys, sizeof keys, "%s/gateway-client-keys", harness_workdir (h));
    hex_sha256 (SVC_KEY, a);
    hex_sha256 (ADMIN_KEY, b);
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 404, "not_found");
    /* svc's key revoked: only ops is left */
    snprintf (text, sizeof text, "ops %s\n", b);
    assert_int_equal (write_file (keys, text), 0);
    int n = count_lines (gw_log, done);
    assert_int_equal (kill (gw_pid, SIGHUP), 0);
    wait_log_count (done, n);
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 401, "unauthenticated");
    expect ("GET", "/v1/integrations/acct1:nothing", ADMIN_KEY, NULL, 404, "not_found");
    /* a damaged file: logged, the keys in effect stay */
    assert_int_equal (write_file (keys, "ops not-a-hash\n"), 0);
    n = count_lines (gw_log, "keeping the client keys and the policy read before");
    assert_int_equal (kill (gw_pid, SIGHUP), 0);
    wait_log_count ("keeping the client keys and the policy read before", n);
    expect ("GET", "/v1/integrations/acct1:nothing", ADMIN_KEY, NULL, 404, "not_found");
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 401, "unauthenticated");
    /* the policy is read again too: svc back, but with no rights on acct1: */
    snprintf (text, sizeof text, "svc %s\nops %s\n", a, b);
    assert_int_equal (write_file (keys, text), 0);
    char policy [1024];
    snprintf (policy, sizeof policy, "%s/gateway-policy", harness_workdir (h));
    assert_int_equal (write_file (policy, "svc read acct2:*\nops * *\n"), 0);
    n = count_lines (gw_log, done);
    assert_int_equal (kill (gw_pid, SIGHUP), 0);
    wait_log_count (done, n);
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 403, "forbidden");
    /* as it was, for the tests after this one */
    assert_int_equal (write_file (policy, "svc read acct1:*\nops * *\n"), 0);
    n = count_lines (gw_log, done);
    assert_int_equal (kill (gw_pid, SIGHUP), 0);
    wait_log_count (done, n);
    expect ("GET", "/v1/integrations/acct1:nothing", SVC_KEY, NULL, 404, "not_found");
}

/* The status line and body of GET http://127.0.0.1:PORT/PATH (a new string), or NULL. */
static char *
get_text (int port, const char *path, long *status)
{
    char url [128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init ();
    char *body = NULL;
    curl_easy_setopt (c, CURLOPT_URL, url);
    curl_easy_setopt (c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt (c, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform (c);
    *status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup (c);
    return body;
}

/* A gateway whose broker clients are all busy (its one client held by a token request whose
 * refresh waits on a slow provider) stays ready: its readiness ping has a client of its own. It
 * went through the same pool, waited its 2 s for a client, got "overloaded", and /readyz answered
 * 503: with deploy/k8s's probe every replica left the Service, and a slow provider became an
 * outage that said "no broker answers ping". */
static void
test_ready_while_every_broker_client_is_busy (void **state)
{
    gw_saved_t saved = gw_save ();
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct1:readyslow", "fakebox", rt), 0);
    free (rt);
    int hport = free_port ();
    char hbind [32];
    snprintf (hbind, sizeof hbind, "127.0.0.1:%d", hport);
    setenv ("FERRULE_GATEWAY_BROKER_CLIENTS", "1", 1);
    int started = start_gateway_with ("gateway-ready", hbind, NULL);
    unsetenv ("FERRULE_GATEWAY_BROKER_CLIENTS");
    assert_int_equal (started, 0);
    long status = 0;
    for (int i = 0; i < 200 && status != 200; i++) {
        free (get_text (hport, "/readyz", &status));
        if (status != 200)
            usleep (100000);
    }
    assert_int_equal (status, 200);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 30000));
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    pid_t holder = fork ();
    if (holder == 0) {
        http_t r = api ("GET", "/v1/integrations/acct1:readyslow/token", SVC_KEY, NULL);
        _exit (r.status == 503 ? 0 : 1);
    }
    /* the refresh is at the provider: the one client is held until the request's 10 s are over,
       longer than the 5 s between pings and a ping's 2 s */
    long long arrived = itest_wait_stat (h, "fakebox", "refresh_calls", before + 1, 20000);
    int checks = 0, not_ready = 0, st = 0;
    char *why = NULL;
    while (arrived > before && waitpid (holder, &st, WNOHANG) == 0) {
        char *text = get_text (hport, "/readyz", &status);
        checks++;
        if (status != 200 && !why)
            why = text ? strdup (text) : strdup ("(no answer)");
        not_ready += status != 200;
        free (text);
        usleep (100000);
    }
    if (arrived <= before)
        waitpid (holder, &st, 0);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);
    int said_not_ready = log_has ("process is not ready");
    stop_gateway ();
    gw_restore (&saved);
    printf ("/readyz while the one broker client was held: %d of %d checks not ready%s%s\n", not_ready, checks,
            why ? ": " : "", why ? why : "");
    free (why);
    assert_true (arrived > before);
    assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);  /* held until its deadline, answered 503 */
    assert_int_equal (not_ready, 0);
    assert_false (said_not_ready);
}

/* A gateway whose only broker is stopping is not ready: such a broker answers ping, saying
 * "draining", and refuses every request with "unavailable". The gateway counted any broker that
 * answered ping, and stayed in the Service with none it could use (review, 2026-12-07). The
 * broker is kept draining by a request its worker holds at a slow provider. */
static void
test_not_ready_while_its_only_broker_drains (void **state)
{
    (void) state;
    gw_saved_t saved = gw_save ();
    char *rt = itest_grant (h, "fakebox", NULL);
    assert_int_equal (itest_import (h, "acct1:brokerdrains", "fakebox", rt), 0);
    free (rt);
    int hport = free_port ();
    char hbind [32];
    snprintf (hbind, sizeof hbind, "127.0.0.1:%d", hport);
    assert_int_equal (start_gateway_with ("gateway-broker-drains", hbind, NULL), 0);
    long status = 0;
    for (int i = 0; i < 200 && status != 200; i++) {
        free (get_text (hport, "/readyz", &status));
        if (status != 200)
            usleep (100000);
    }
    assert_int_equal (status, 200);
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 30000));
    long long before = itest_stat (h, "fakebox", "refresh_calls");
    void *ctx = zmq_ctx_new ();
    void *c = itest_raw_token (h, ctx, "acct1:brokerdrains", "held", 15000);
    long long arrived = itest_wait_stat (h, "fakebox", "refresh_calls", before + 1, 10000);
    harness_signal_broker (h, 0, SIGTERM);
    /* the broker drains until the request is answered (at its deadline at the latest) */
    json_t *r = NULL;
    char *why = NULL;
    while (arrived > before && !(r = itest_raw_reply (c, 100))) {
        char *text = get_text (hport, "/readyz", &status);
        if (status == 503) {
            why = text ? text : strdup ("(no answer)");
            break;
        }
        free (text);
    }
    itest_fake_config (h, "fakebox", json_pack ("{s:i}", "latency_ms", 0));
    itest_fake_release (h);
    if (!r)
        r = itest_raw_reply (c, 15000);
    json_decref (r);
    zmq_close (c);
    zmq_ctx_term (ctx);
    stop_gateway ();
    gw_restore (&saved);
    assert_int_equal (harness_restart_broker (h, 0), 0);   /* before any assert: the later tests need it */
    assert_int_equal (harness_wait_ready (h, 1, 20000), 0);
    assert_true (arrived > before);
    if (!why)
        fail_msg ("the gateway stayed ready while its only broker was draining");
    printf ("/readyz while the only broker drained: %s", why);
    assert_non_null (strstr (why, "every broker that answers ping is draining"));
    free (why);
}

/* A connection whose request is in flight: its headers are in (the gateway answered 100
 * Continue), its body of 13 bytes is not. Returns the socket. */
static int
request_in_flight (int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
    const char *head = "POST /oauth/retry HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                       "Content-Length: 13\r\nExpect: 100-continue\r\n\r\n";
    assert_int_equal (write (fd, head, strlen (head)), (ssize_t) strlen (head));
    char buf [64];
    ssize_t n = read (fd, buf, sizeof buf - 1);
    assert_true (n > 0);
    buf [n] = '\0';
    assert_non_null (strstr (buf, " 100 "));
    return fd;
}

static int
connect_refused (int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    int refused = connect (fd, (struct sockaddr *) &sa, sizeof sa) != 0;
    close (fd);
    return refused;
}

/* The exit status of the gateway, waiting up to 30 s (a bound against a hang); -1 if it runs on. */
static int
wait_exit (void)
{
    int status;
    for (int i = 0; i < 600; i++) {
        if (waitpid (gw_pid, &status, WNOHANG) == gw_pid) {
            gw_pid = 0;
            return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
        }
        usleep (50000);
    }
    return -1;
}

/* SIGTERM drains: /readyz 503 "draining", new connections refused, the request in flight
 * answered (and its connection closed), exit 0; FERRULE_GATEWAY_DRAIN_MS bounds the wait. */
static void
test_sigterm_drains (void **state)
{
    gw_saved_t saved = gw_save ();
    int hport = free_port ();
    char hbind [32];
    snprintf (hbind, sizeof hbind, "127.0.0.1:%d", hport);
    assert_int_equal (start_gateway_with ("gateway-drain", hbind, "20000"), 0);
    long status = 0;
    char *text = NULL;
    for (int i = 0; i < 200 && status != 200; i++) {
        free (text);
        text = get_text (hport, "/readyz", &status);
        if (status != 200)
            usleep (100000);
    }
    assert_int_equal (status, 200);
    free (text);

    int fd = request_in_flight (gw_port);
    assert_int_equal (kill (gw_pid, SIGTERM), 0);
    for (int i = 0; i < 200; i++) {
        text = get_text (hport, "/readyz", &status);
        if (status == 503)
            break;
        free (text);
        text = NULL;
        usleep (50000);
    }
    assert_int_equal (status, 503);
    assert_non_null (strstr (text, "draining"));
    free (text);
    int refused = 0;
    for (int i = 0; i < 200 && !(refused = connect_refused (gw_port)); i++)
        usleep (50000);
    assert_true (refused);
    assert_int_equal (waitpid (gw_pid, NULL, WNOHANG), 0);     /* still there: the request is in flight */
    /* the body arrives: the request is answered in full, and its connection closed */
    assert_int_equal (write (fd, "retry_token=x", 13), 13);
    char answer [8192];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof answer - 1 && (n = read (fd, answer + got, sizeof answer - 1 - got)) > 0)
        got += (size_t) n;
    answer [got] = '\0';
    close (fd);
    assert_true (strncmp (answer, "HTTP/1.1 400", 12) == 0);
    assert_non_null (strstr (answer, "Connection: close"));
    assert_non_null (strstr (answer, "This retry link has expired or was already used"));
    assert_int_equal (wait_exit (), 0);
    /* the request was counted; the readiness probe start_gateway_with sent a moment before may
     * still be too (its answer was sent, its completion not yet seen: CI met that twice) */
    long counted = log_number_after ("draining: ");
    assert_true (counted >= 1 && counted <= 2);
    assert_false (log_has ("unanswered"));

    /* a request that never completes holds the exit for FERRULE_GATEWAY_DRAIN_MS, no longer */
    assert_int_equal (start_gateway_with ("gateway-drain-bound", NULL, "1000"), 0);
    fd = request_in_flight (gw_port);
    assert_int_equal (kill (gw_pid, SIGTERM), 0);
    assert_int_equal (wait_exit (), 0);
    assert_true (log_has ("stopping with 1 requests in flight unanswered (FERRULE_GATEWAY_DRAIN_MS is over)"));
    close (fd);

    gw_restore (&saved);
}

/* The descriptors a process has open (-1: unknown). */
static int
open_fds (pid_t pid)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/fd", (int) pid);
    DIR *d = opendir (path);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir (d));)
        n += e->d_name [0] != '.';
    closedir (d);
    return n;
}

/* FERRULE_GATEWAY_MAX_CONNECTIONS goes up to 65536, but libmicrohttpd waited in select(), which
 * closes at once every connection whose descriptor is past FD_SETSIZE (1024): with about a
 * thousand connections open, a new request got no answer at all. */
static void
test_connections_past_fd_setsize (void **state)
{
    enum { HELD = 1100 };
    struct rlimit old, lim;
    assert_int_equal (getrlimit (RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 2500) {
        print_message ("skipped: the hard limit of open files is %llu, and this test needs 2500\n",
                       (unsigned long long) old.rlim_max);
        skip ();
    }
    /* the gateway inherits it: past 1024, its descriptors are past FD_SETSIZE */
    lim = old;
    lim.rlim_cur = old.rlim_max == RLIM_INFINITY || old.rlim_max > 4096 ? 4096 : old.rlim_max;
    assert_int_equal (setrlimit (RLIMIT_NOFILE, &lim), 0);
    gw_saved_t saved = gw_save ();
    gw_env [0] = "FERRULE_GATEWAY_MAX_CONNECTIONS=3000";
    gw_env [1] = "FERRULE_GATEWAY_CONNECTION_TIMEOUT_S=120";   /* the idle ones stay open */
    int started = start_gateway_with ("gateway-many", NULL, NULL);
    gw_env [0] = gw_env [1] = NULL;
    int fds [HELD], held = 0, at_gateway = -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) gw_port),
                              .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    for (; started == 0 && held < HELD; held++) {
        fds [held] = socket (AF_INET, SOCK_STREAM, 0);
        if (fds [held] < 0 || connect (fds [held], (struct sockaddr *) &sa, sizeof sa) != 0) {
            if (fds [held] >= 0)
                close (fds [held]);
            break;
        }
    }
    /* until the gateway has taken them all (it closed those past FD_SETSIZE as it took them) */
    for (int i = 0; i < 100 && held == HELD && (at_gateway = open_fds (gw_pid)) < HELD; i++)
        usleep (100000);
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (held == HELD) {
        char url [128];
        snprintf (url, sizeof url, "%s/static/ferrule.css", gw_url);
        CURL *c = curl_easy_init ();
        curl_easy_setopt (c, CURLOPT_URL, url);
        curl_easy_setopt (c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt (c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, 10000L);
        rc = curl_easy_perform (c);
        if (rc == CURLE_OK)
            curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup (c);
    }
    for (int i = 0; i < held; i++)
        close (fds [i]);
    int stopped = started == 0 ? stop_gateway () : -1;
    gw_restore (&saved);
    assert_int_equal (setrlimit (RLIMIT_NOFILE, &old), 0);
    assert_int_equal (started, 0);
    assert_int_equal (held, HELD);
    printf ("%d connections held, %d descriptors open at the gateway; a new request: %s, %ld\n", held, at_gateway,
            curl_easy_strerror (rc), status);
    assert_int_equal (rc, CURLE_OK);
    assert_int_equal (status, 200);
    assert_int_equal (stopped, 0);
}

/* The soft limit of open files ("Max open files" in /proc/PID/limits) of process pid; -1 unknown. */
static long long
files_soft_limit (pid_t pid)
{
    char path [64], line [256];
    long long soft = -1;
    snprintf (path, sizeof path, "/proc/%d/limits", (int) pid);
    FILE *f = fopen (path, "r");
    while (f && fgets (line, sizeof line, f))
        if (strncmp (line, "Max open files", 14) == 0 && sscanf (line + 14, " %lld", &soft) != 1)
            soft = -1;
    if (f)
        fclose (f);
    return soft;
}

/* A gateway started under a soft open-files limit below what its connections need raises it
 * (within the hard limit) and says so: under 256, a gateway of 512 connections refused the ones
 * past its descriptors, and nothing said why. */
static void
test_open_files_limit_raised_for_max_connections (void **state)
{
    struct rlimit old, lim;
    assert_int_equal (getrlimit (RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 1200) {
        print_message ("skipped: the hard limit of open files is %llu, and this test needs 1200\n",
                       (unsigned long long) old.rlim_max);
        skip ();
    }
    lim = old;
    lim.rlim_cur = 256;
    assert_int_equal (setrlimit (RLIMIT_NOFILE, &lim), 0);
    gw_saved_t saved = gw_save ();
    int started = start_gateway_with ("gateway-files", NULL, NULL);    /* 512 connections, 32 clients */
    long long soft = started == 0 ? files_soft_limit (gw_pid) : -1;
    int said = started == 0 && log_has ("raised the open-files limit from 256");
    int stopped = started == 0 ? stop_gateway () : -1;
    gw_restore (&saved);
    assert_int_equal (setrlimit (RLIMIT_NOFILE, &old), 0);
    printf ("a gateway started under 256 open files: its limit %lld\n", soft);
    assert_int_equal (started, 0);
    assert_true (soft >= 512 + 32 * 8 + 64);
    assert_true (said);
    assert_int_equal (stopped, 0);
}

/* Presses the dashboard's Connect for integration WS + name with the session cookie and, when
 * not NULL, a flow cookie (its value only, "name=value"); returns the answer. */
static http_t
dashboard_press_connect (const char *session, const char *flow_pair, const char *name)
{
    http_t home = dashboard_home (session);
    assert_int_equal (home.status, 200);
    char *csrf = form_value (home.body, "csrf");
    assert_non_null (csrf);
    http_free (&home);
    char url [256], body [256], cookies [1024];
    snprintf (url, sizeof url, "%s/dashboard/connect", gw_url);
    snprintf (body, sizeof body, "csrf=%s&provider=fakebox&name=%s", csrf, name);
    snprintf (cookies, sizeof cookies, "%s%s%s", session, flow_pair ? "; " : "", flow_pair ? flow_pair : "");
    const char *phdr [] = { cookies, "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, phdr, body);
    free (csrf);
    return r;
}

/* The callback page of a provider redirect (the provider's Location) in a browser with the given
 * "Cookie:" header (NULL: none). */
static http_t
callback_in_browser (const char *loc, const char *cookie)
{
    assert_true (strncmp (loc, callback_uri, strlen (callback_uri)) == 0);
    const char *hdr [] = { cookie, NULL };
    return http ("GET", loc, cookie ? hdr : NULL, NULL);
}

/* Consent phishing: a dashboard user copies the authorization URL of their Connect (it carries
 * the state) and sends it to someone else, who approves at the provider; the provider sends that
 * person's browser to the callback. It exchanged the code, and the victim's tokens went into the
 * sender's integration. A dashboard connect is now bound to the browser that started it: the
 * callback elsewhere says so, exchanges nothing, offers no "Try again", and the integration stays
 * unconnected; in the starting browser it connects; a connect through the API needs no cookie. */
static void
test_dashboard_connect_is_bound_to_its_browser (void **state)
{
    char *link = dashboard_link ("ws30:", 0);
    char *session = open_session (link);
    char wrong_name [256];

    /* (a) the attacker's Connect; the URL followed by the victim, without the cookie */
    http_t r = dashboard_press_connect (session, NULL, "phished");
    assert_int_equal (r.status, 303);
    char *to_provider = header (&r, "Location");
    char *flow = flow_cookie_of (&r, "ferrule_flow", 0);
    http_free (&r);
    assert_non_null (to_provider);
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    char *loc = authorize (to_provider);
    free (to_provider);
    r = callback_in_browser (loc, NULL);
    if (r.status != 422 || !has (&r, "This sign-in was started in another browser"))
        fail_msg ("a dashboard connect's callback in another browser: %ld, not the browser_mismatch page", r.status);
    assert_true (has (&r, "Do not use sign-in links someone else sent you"));
    assert_false (has (&r, "retry_token"));
    assert_false (has (&r, "Try again</button>"));
    assert_false (has (&r, "is connected"));
    http_free (&r);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);
    json_t *st = call ("status", json_pack ("{s:s}", "integration", "ws30:phished"));
    assert_string_equal (client_error_code (st), "not_found");
    json_decref (st);
    /* spent: the same callback again, now with the cookie, does not connect either */
    r = callback_in_browser (loc, flow);
    assert_int_not_equal (r.status, 200);
    assert_true (has (&r, "expired or was already used"));
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);

    /* the cookie's name is compared exactly: "FERRULE_FLOW" is not it. The browser's own value is
       reused for a second connect, and sent again for a day from now: it was not, and a cookie set
       a day before ended while its browser was at the provider (the callback then said "another
       browser") */
    r = dashboard_press_connect (session, flow + strlen ("Cookie: "), "phished");
    assert_int_equal (r.status, 303);
    char *again = flow_cookie_of (&r, "ferrule_flow", 0);
    assert_string_equal (again, flow);
    free (again);
    to_provider = header (&r, "Location");
    http_free (&r);
    loc = authorize (to_provider);
    free (to_provider);
    snprintf (wrong_name, sizeof wrong_name, "Cookie: FERRULE_FLOW%s", strchr (flow, '='));
    r = callback_in_browser (loc, wrong_name);
    assert_true (has (&r, "This sign-in was started in another browser"));
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);

    /* (b) in the browser that pressed Connect, with its cookie: connected */
    r = dashboard_press_connect (session, flow + strlen ("Cookie: "), "mine");
    assert_int_equal (r.status, 303);
    to_provider = header (&r, "Location");
    http_free (&r);
    loc = authorize (to_provider);
    free (to_provider);
    r = callback_in_browser (loc, flow);
    if (r.status != 200 || !has (&r, "is connected"))
        fail_msg ("a dashboard connect's callback in its own browser: %ld", r.status);
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 1);
    st = call ("status", json_pack ("{s:s}", "integration", "ws30:mine"));
    assert_string_equal (client_error_code (st), "ok");
    assert_string_equal (json_string_value (json_object_get (json_object_get (st, "integration"), "status")), "active");
    json_decref (st);

    /* (c) a connect through the HTTP API is not bound: its callback needs no cookie */
    char url [256];
    snprintf (url, sizeof url, "%s/v1/integrations/ws30:api/connect", gw_url);
    const char *ahdr [] = { "Authorization: Bearer " ADMIN_KEY, "Content-Type: application/json", NULL };
    r = http ("POST", url, ahdr, "{\"provider\":\"fakebox\",\"scopes\":[\"read\"]}");
    assert_int_equal (r.status, 200);
    char *none = header (&r, "Set-Cookie");
    assert_null (none);
    json_t *j = json_loads (r.body, 0, NULL);
    http_free (&r);
    assert_non_null (j);
    const char *auth = json_string_value (json_object_get (j, "authorization_url"));
    assert_non_null (auth);
    loc = authorize (auth);
    json_decref (j);
    r = callback_in_browser (loc, NULL);
    if (r.status != 200 || !has (&r, "is connected"))
        fail_msg ("an API connect's callback without a cookie: %ld", r.status);
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 2);
    free (flow);
    free (session);
    free (link);
}

/* "Try again" after a dashboard connect failed in its own browser: the fresh connect is bound to
 * the browser that pressed it, and a retry token read with the state (the attempt operation) is
 * of no use without a binding: it cannot start an unbound connect to send to someone else. */
static void
test_dashboard_retry_is_bound (void **state)
{
    char *link = dashboard_link ("ws31:", 0);
    char *session = open_session (link);
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 1));
    http_t r = dashboard_press_connect (session, NULL, "denied");
    assert_int_equal (r.status, 303);
    char *to_provider = header (&r, "Location");
    char *flow = flow_cookie_of (&r, "ferrule_flow", 0);
    http_free (&r);
    char *loc = authorize (to_provider);
    itest_fake_config (h, "fakebox", json_pack ("{s:b}", "deny", 0));
    free (to_provider);
    r = callback_in_browser (loc, flow);
    assert_true (has (&r, "Access to fakebox was not granted"));
    free (loc);
    /* the worker refuses a retry of a bound attempt that brings no binding */
    char *token = form_value (r.body, "retry_token");
    assert_non_null (token);
    json_t *t = call ("retry", json_pack ("{s:s}", "retry_token", token));
    assert_string_equal (client_error_code (t), "browser_mismatch");
    json_decref (t);
    free (token);
    /* the page's button, in the same browser (its cookie goes along) */
    char body [512], url [128];
    token = form_value (r.body, "retry_token");
    snprintf (body, sizeof body, "retry_token=%s", token);
    free (token);
    snprintf (url, sizeof url, "%s/oauth/retry", gw_url);
    const char *hdr [] = { "Content-Type: application/x-www-form-urlencoded", flow, NULL };
    http_t again = http ("POST", url, hdr, body);
    http_free (&r);
    assert_int_equal (again.status, 303);
    to_provider = header (&again, "Location");
    http_free (&again);
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");
    loc = authorize (to_provider);
    free (to_provider);
    r = callback_in_browser (loc, NULL);
    assert_true (has (&r, "This sign-in was started in another browser"));
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);
    free (flow);
    free (session);
    free (link);
}

/* Consent phishing through an expired state: the sender's Connect URL, opened by someone else
 * after the state's time ran out, came back state_invalid (the take needs a live state) instead
 * of browser_mismatch, and its page offered "Try again" with a retry token issued to whoever read
 * the attempt first; the retry bound the fresh connect to the presser's browser, so the victim
 * approved once more and their grant landed in the sender's integration. A bound attempt's retry
 * token is now issued to, and used by, only the browser that started it; the starting browser
 * can still Try again after its state expired. */
static void
test_dashboard_expired_state_is_bound_too (void **state)
{
    char *link = dashboard_link ("ws32:", 0);
    char *session = open_session (link);
    http_t r = dashboard_press_connect (session, NULL, "late");
    assert_int_equal (r.status, 303);
    char *to_provider = header (&r, "Location");
    char *flow = flow_cookie_of (&r, "ferrule_flow", 0);
    http_free (&r);
    char *loc = authorize (to_provider);
    free (to_provider);
    assert_int_equal (harness_sql (h, "UPDATE pending_authorizations SET expires_at = now () - interval '1 second' "
                                      "WHERE integration_id = 'ws32:late'"), 0);
    long long exchanges = itest_stat (h, "fakebox", "code_exchanges");

    /* the victim's browser: no flow cookie */
    r = callback_in_browser (loc, NULL);
    char *token = form_value (r.body, "retry_token");
    if (token) {
        /* what the victim could do: Try again (a fresh cookie), approve, and land in ws32:late */
        http_t t = press_retry (&r);
        char *again = t.status == 303 ? header (&t, "Location") : NULL;
        char *vflow = t.status == 303 ? flow_cookie_of (&t, "ferrule_flow", 0) : NULL;
        char *vloc = again ? authorize (again) : NULL;
        http_t done = vloc ? callback_in_browser (vloc, vflow) : (http_t) { 0 };
        fail_msg ("an expired dashboard connect's callback in another browser offered Try again; pressed there it "
                  "answered %ld, and the victim's approval then ended in %ld%s", t.status, done.status,
                  done.status == 200 && has (&done, "is connected") ? ": connected into the sender's integration" : "");
    }
    if (r.status != 422 || !has (&r, "This sign-in was started in another browser"))
        fail_msg ("an expired dashboard connect's callback in another browser: %ld, not the browser_mismatch page",
                  r.status);
    assert_false (has (&r, "Try again</button>"));
    http_free (&r);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges);

    /* the worker issues no retry token to a read of the attempt without that browser's binding */
    const char *s = strstr (loc, "state=");
    assert_non_null (s);
    char st [300];
    snprintf (st, sizeof st, "%.*s", (int) strcspn (s + 6, "&"), s + 6);
    json_t *a = call ("attempt", json_pack ("{s:s}", "state", st));
    assert_string_equal (client_error_code (a), "ok");
    assert_null (json_string_value (json_object_get (a, "retry_token")));
    assert_true (json_is_true (json_object_get (a, "browser_mismatch")));
    json_decref (a);
    a = call ("attempt", json_pack ("{s:s, s:s}", "state", st, "browser_binding",
                                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert_null (json_string_value (json_object_get (a, "retry_token")));
    json_decref (a);

    /* the browser that started it: "Try again" works after its state expired */
    r = callback_in_browser (loc, flow);
    assert_int_equal (r.status, 400);
    assert_true (has (&r, "This sign-in link has expired or was already used"));
    assert_true (has (&r, ">Try again</button>"));
    /* its retry token pressed in another browser: refused, and still usable */
    http_t t = press_retry (&r);
    if (t.status != 422 || !has (&t, "started in another browser"))
        fail_msg ("the retry token of a bound attempt pressed in another browser: %ld, wanted 422", t.status);
    char *none = header (&t, "Set-Cookie");
    assert_null (none);
    http_free (&t);
    token = form_value (r.body, "retry_token");
    assert_non_null (token);
    char body [512], url [128];
    snprintf (body, sizeof body, "retry_token=%s", token);
    free (token);
    snprintf (url, sizeof url, "%s/oauth/retry", gw_url);
    const char *hdr [] = { "Content-Type: application/x-www-form-urlencoded", flow, NULL };
    t = http ("POST", url, hdr, body);
    http_free (&r);
    assert_int_equal (t.status, 303);
    to_provider = header (&t, "Location");
    http_free (&t);
    free (loc);
    loc = authorize (to_provider);
    free (to_provider);
    r = callback_in_browser (loc, flow);
    if (r.status != 200 || !has (&r, "is connected"))
        fail_msg ("Try again in the browser whose dashboard connect expired: %ld", r.status);
    http_free (&r);
    free (loc);
    assert_int_equal (itest_stat (h, "fakebox", "code_exchanges"), exchanges + 1);
    free (flow);
    free (session);
    free (link);
}

/* Login CSRF: a dashboard link without "&workspace=" had a confirm page that said only "Open your
 * dashboard", and its button opened whatever workspace the link was for. An attacker sent a link
 * to their own workspace; the victim pressed the button, landed in the attacker's dashboard and
 * connected their own accounts there. A link must now say which workspace it opens, and the page
 * names it; one that does not is refused, and spent by nothing. */
static void
test_dashboard_link_must_name_its_workspace (void **state)
{
    char *link = dashboard_link ("evil:", 600);
    char *bare = strdup (link);
    *strstr (bare, "&workspace=") = '\0';
    http_t page = http ("GET", bare, NULL, NULL);
    if (page.status == 200) {
        /* the victim presses "Open the dashboard" */
        http_t r = press_open (&page);
        char *set = header (&r, "Set-Cookie");
        fail_msg ("a dashboard link without its workspace: confirm page 200 (\"%s\"), and pressing it %ld%s",
                  has (&page, "Open your dashboard") ? "Open your dashboard" : "?", r.status,
                  set ? " with a session cookie: logged into the sender's workspace" : "");
    }
    assert_int_equal (page.status, 400);
    assert_true (has (&page, "does not say which workspace"));
    assert_false (has (&page, "action=\"/dashboard/open\""));
    http_free (&page);
    /* the form posted by hand, without the workspace: refused before the link is spent */
    const char *l = strstr (bare, "link=") + 5;
    char body [512], url [256];
    snprintf (body, sizeof body, "link=%s", l);
    snprintf (url, sizeof url, "%s/dashboard/open", gw_url);
    const char *fhdr [] = { "Content-Type: application/x-www-form-urlencoded", NULL };
    http_t r = http ("POST", url, fhdr, body);
    char *set = header (&r, "Set-Cookie");
    if (r.status != 400 || set)
        fail_msg ("POST /dashboard/open without a workspace: %ld%s, wanted 400 and no session", r.status,
                  set ? " with a session cookie" : "");
    http_free (&r);
    /* the whole link still works, and its page names the workspace */
    page = http ("GET", link, NULL, NULL);
    assert_int_equal (page.status, 200);
    assert_true (has (&page, "Open the dashboard of evil:"));
    http_free (&page);
    char *cookie = open_session (link);
    free (cookie);
    free (bare);
    free (link);
}

/* Signing out: the dashboard had no way to end a session in a shared browser but waiting out its
 * hour. POST /dashboard/logout (a button on the dashboard, with the CSRF token) clears the cookie:
 * the same name and attributes, Max-Age=0. */
static void
test_dashboard_logout (void **state)
{
    char *link = dashboard_link ("ws33:", 0);
    char *session = open_session (link);
    char url [256], body [256];
    snprintf (url, sizeof url, "%s/dashboard/logout", gw_url);
    const char *fhdr [] = { session, "Content-Type: application/x-www-form-urlencoded", NULL };
    /* without the CSRF token: refused, the session goes on */
    http_t r = http ("POST", url, fhdr, "csrf=0");
    if (r.status == 404)
        fail_msg ("POST /dashboard/logout: 404, there is no way to sign out of the dashboard");
    assert_int_equal (r.status, 403);
    assert_null (header (&r, "Set-Cookie"));
    http_free (&r);
    http_t home = dashboard_home (session);
    assert_int_equal (home.status, 200);
    assert_true (has (&home, "action=\"/dashboard/logout\""));
    assert_true (has (&home, ">Sign out</button>"));
    char *csrf = form_value (home.body, "csrf");
    assert_non_null (csrf);
    http_free (&home);
    snprintf (body, sizeof body, "csrf=%s", csrf);
    free (csrf);
    r = http ("POST", url, fhdr, body);
    assert_int_equal (r.status, 200);
    assert_true (has (&r, "signed out"));
    char *set = header (&r, "Set-Cookie");
    assert_non_null (set);
    if (strncmp (set, "ferrule_session=;", 17) != 0 || !strstr (set, "; Max-Age=0") || !strstr (set, "; Path=/")
    ||  !strstr (set, "; HttpOnly") || !strstr (set, "; SameSite=Strict"))
        fail_msg ("the sign-out's Set-Cookie \"%s\" does not clear the session cookie", set);
    free (set);
    http_free (&r);
    /* the browser has no session now: the dashboard asks for a new link */
    home = dashboard_home (NULL);
    assert_int_equal (home.status, 401);
    http_free (&home);
    free (session);
    free (link);
}

int
main (void)
{
    test_pid = getpid ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_callback_connected_redirects_to_return_to),
        cmocka_unit_test (test_callback_connected_page_and_security_headers),
        cmocka_unit_test (test_callback_access_denied_try_again),
        cmocka_unit_test (test_callback_long_description),
        cmocka_unit_test (test_callback_code_expired_or_used),
        cmocka_unit_test (test_callback_state_invalid),
        cmocka_unit_test (test_callback_scopes_reduced),
        cmocka_unit_test (test_callback_invalid_scope),
        cmocka_unit_test (test_callback_no_refresh_token),
        cmocka_unit_test (test_callback_no_refresh_token_of_the_entry),
        cmocka_unit_test (test_callback_provider_unavailable),
        cmocka_unit_test (test_callback_redirect_uri_mismatch),
        cmocka_unit_test (test_callback_invalid_client),
        cmocka_unit_test (test_callback_bad_link),
        cmocka_unit_test (test_callback_the_service_could_not_handle),
        cmocka_unit_test (test_callback_timeout_says_the_outcome_is_unknown),
        cmocka_unit_test (test_return_to_allow_list),
        cmocka_unit_test (test_api_status_codes),
        cmocka_unit_test (test_api_workspace_keys),
        cmocka_unit_test (test_api_key_check_refused_to_the_gateway),
        cmocka_unit_test (test_api_without_a_broker_says_so_plainly),
        cmocka_unit_test (test_api_wait_for_a_broker_client_counts_in_the_deadline),
        cmocka_unit_test (test_api_slow_clients),
        cmocka_unit_test (test_open_calls_leave_clients_for_the_api),
        cmocka_unit_test (test_api_slow_body_is_cut),
        cmocka_unit_test (test_body_of_exactly_the_limit),
        cmocka_unit_test (test_declared_oversized_body_has_a_request_id),
        cmocka_unit_test (test_method_not_allowed_lists_every_method),
        cmocka_unit_test (test_refusal_pages_say_what_to_do),
        cmocka_unit_test (test_dashboard_session_and_csrf),
        cmocka_unit_test (test_dashboard_disconnect_says_when_not_revoked),
        cmocka_unit_test (test_dashboard_disconnect_without_tokens_says_nothing_was_left),
        cmocka_unit_test (test_dashboard_disconnect_of_a_shared_grant_keeps_the_other),
        cmocka_unit_test (test_dashboard_connect_only_offered_providers),
        cmocka_unit_test (test_dashboard_key_limit_is_a_conflict),
        cmocka_unit_test (test_ended_session_says_its_ttl),
        cmocka_unit_test (test_retry_rate_limited_is_429),
        cmocka_unit_test (test_dashboard_refuses_unusable_form_values),
        cmocka_unit_test (test_dashboard_key_name_is_printable_ascii),
        cmocka_unit_test (test_public_url_in_upper_case),
        cmocka_unit_test (test_dashboard_open_refused_to_the_gateway),
        cmocka_unit_test (test_dashboard_link_get_spends_nothing),
        cmocka_unit_test (test_dashboard_link_must_name_its_workspace),
        cmocka_unit_test (test_dashboard_logout),
        cmocka_unit_test (test_dashboard_connect_of_a_never_connected_integration),
        cmocka_unit_test (test_dashboard_steps_are_the_users),
        cmocka_unit_test (test_timeout_shows_no_broker_or_operation),
        cmocka_unit_test (test_timeout_of_a_read_says_retrying_is_safe),
        cmocka_unit_test (test_dashboard_says_when_keys_are_not_listed),
        cmocka_unit_test (test_dashboard_refuses_cross_site_posts),
        cmocka_unit_test (test_workspace_boundary),
        cmocka_unit_test (test_dashboard_connect_is_bound_to_its_browser),
        cmocka_unit_test (test_dashboard_retry_is_bound),
        cmocka_unit_test (test_dashboard_expired_state_is_bound_too),
        cmocka_unit_test (test_callback_in_a_stall_asks_nothing_more),
        cmocka_unit_test (test_dashboard_page_gives_up_in_a_stall),
        cmocka_unit_test (test_client_keys_reload_on_sighup),
        cmocka_unit_test (test_ready_while_every_broker_client_is_busy),
        cmocka_unit_test (test_not_ready_while_its_only_broker_drains),
        cmocka_unit_test (test_sigterm_drains),
        cmocka_unit_test (test_connections_past_fd_setsize),
        cmocka_unit_test (test_open_files_limit_raised_for_max_connections),
    };
    return harness_exit (cmocka_run_group_tests (tests, setup, teardown));
}
