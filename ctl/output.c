/* output.c - replies as one JSON line or as readable text; every service string is made safe */
#include "output.h"
#include "mem.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OUTPUT_MAX_ROWS    1000    /* history entries printed (the protocol's largest limit) */
#define OUTPUT_MAX_WIDTH   40      /* a column wider than this is not padded further */

static void print_value (FILE *f, const json_t *v);

void
output_safe (FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *) (s ? s : "");
    for (; *p; p++) {
        /* C0 controls, DEL, and C1 controls (U+0080..U+009F, UTF-8 C2 80..C2 9F) */
        if (*p < 0x20 || *p == 0x7f)
            fputc ('?', f);
        else
        if (*p == 0xc2 && p [1] >= 0x80 && p [1] <= 0x9f) {
            fputc ('?', f);
            p++;
        }
        else
            fputc (*p, f);
    }
}

void
output_json (const json_t *reply)
{
    char *line = json_dumps (reply, JSON_COMPACT);
    if (line) {
        fputs (line, stdout);
        fputc ('\n', stdout);
        mem_wipe (line, strlen (line));          /* may hold an access token */
        free (line);
    }
    else
        fputs ("{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"could not format the reply\",\"hint\":\"\"}}\n", stdout);
}

json_t *
output_local_error (const char *code, const char *message, const char *hint)
{
    json_t *reply = json_object ();
    json_t *error = json_object ();
    json_object_set_new (error, "code", json_string (code));
    json_object_set_new (error, "message", json_string (message));
    json_object_set_new (error, "hint", json_string (hint ? hint : ""));
    json_object_set_new (reply, "ok", json_false ());
    json_object_set_new (reply, "error", error);
    return reply;
}

void
output_error (const json_t *reply)
{
    const json_t *error = json_object_get (reply, "error");
    const char *message = json_string_value (json_object_get (error, "message"));
    const char *hint = json_string_value (json_object_get (error, "hint"));
    const char *code = json_string_value (json_object_get (error, "code"));
    const json_t *retry_after = json_object_get (error, "retry_after");
    const char *rid = json_string_value (json_object_get (reply, "rid"));

    fputs ("ferrulectl: error: ", stderr);
    output_safe (stderr, message && *message ? message : "the service answered with an error but gave no message");
    fputc ('\n', stderr);
    if (hint && *hint) {
        fputs ("hint: ", stderr);
        output_safe (stderr, hint);
        fputc ('\n', stderr);
    }
    fputs ("code: ", stderr);
    output_safe (stderr, code ? code : "internal");
    fputc ('\n', stderr);
    if (json_is_integer (retry_after))
        fprintf (stderr, "retry after: %lld s\n", (long long) json_integer_value (retry_after));
    /* what an operator needs to fix it, e.g. a redirect URI mismatch's provider and URI */
    const char *dkey;
    json_t *dvalue;
    json_object_foreach (json_object_get (error, "detail"), dkey, dvalue) {
        output_safe (stderr, dkey);
        fputs (": ", stderr);
        print_value (stderr, dvalue);
        fputc ('\n', stderr);
    }
    if (rid) {
        fputs ("request: ", stderr);
        output_safe (stderr, rid);
        fputc ('\n', stderr);
    }
}

/* last_error: "code: message (at time)". */
static void
print_last_error (FILE *f, const json_t *e)
{
    const char *code = json_string_value (json_object_get (e, "code"));
    const char *message = json_string_value (json_object_get (e, "message"));
    const char *at = json_string_value (json_object_get (e, "at"));
    output_safe (f, code ? code : "?");
    if (message) {
        fputs (": ", f);
        output_safe (f, message);
    }
    if (at) {
        fputs (" (at ", f);
        output_safe (f, at);
        fputc (')', f);
    }
}

/* One value in text: "-" for nothing, yes/no, words for arrays, compact JSON for the rest. */
static void
print_value (FILE *f, const json_t *v)
{
    if (!v || json_is_null (v))
        fputs ("-", f);
    else
    if (json_is_string (v))
        output_safe (f, json_string_value (v));
    else
    if (json_is_integer (v))
        fprintf (f, "%lld", (long long) json_integer_value (v));
    else
    if (json_is_real (v))
        fprintf (f, "%g", json_real_value (v));
    else
    if (json_is_boolean (v))
        fputs (json_is_true (v) ? "yes" : "no", f);
    else
    if (json_is_array (v) && json_array_size (v) == 0)
        fputs ("-", f);
    else
    if (json_is_array (v)) {
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item) {
            if (i)
                fputc (' ', f);
            print_value (f, item);
        }
    }
    else {
        char *s = json_dumps (v, JSON_COMPACT);
        output_safe (f, s ? s : "?");
        free (s);
    }
}

/* print_value into a new string. */
static char *
value_string (const json_t *v)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&s, &len);
    if (!f)
        return mem_strdup ("?");
    print_value (f, v);
    fclose (f);
    return s ? s : mem_strdup ("");
}

int
output_ping (const json_t *reply, const output_mode_t *mode)
{
    const json_t *workers = json_object_get (reply, "workers");
    const json_t *partitions = json_object_get (reply, "partitions");
    const json_t *owned = json_object_get (reply, "partitions_owned");
    const char *worker = json_string_value (json_object_get (reply, "worker"));
    const char *sep = ": ";

    fputs ("ok", stdout);
    if (json_is_integer (workers) || json_is_array (workers)) {
        long long n = json_is_array (workers) ? (long long) json_array_size (workers) : (long long) json_integer_value (workers);
        printf ("%s%lld %s", sep, n, n == 1 ? "worker" : "workers");
        sep = ", ";
    }
    if (json_is_integer (partitions) && json_is_integer (owned)) {
        printf ("%s%lld/%lld partitions owned", sep, (long long) json_integer_value (owned),
                (long long) json_integer_value (partitions));
        sep = ", ";
    }
    else
    if (json_is_integer (partitions)) {
        printf ("%s%lld partitions", sep, (long long) json_integer_value (partitions));
        sep = ", ";
    }
    if (worker) {
        printf ("%sanswered by worker ", sep);
        output_safe (stdout, worker);
    }
    const char *security = json_string_value (json_object_get (reply, "security"));
    const char *client = json_string_value (json_object_get (reply, "client"));
    if (security && strcmp (security, "plaintext") == 0)
        printf ("%sPLAINTEXT: links are neither authenticated nor encrypted", sep);
    else
    if (security && client) {
        printf ("%sCURVE, this client is ", sep);
        output_safe (stdout, client);
    }
    fputc ('\n', stdout);
    return 0;
}

/* "expires at T, generation N" plus whether this request refreshed. */
static void
print_token_details (FILE *f, const json_t *reply)
{
    fputs ("expires at ", f);
    print_value (f, json_object_get (reply, "expires_at"));
    fputs (", generation ", f);
    print_value (f, json_object_get (reply, "generation"));
    if (json_is_string (json_object_get (reply, "api_base_url"))) {
        fputs (", API base URL ", f);
        print_value (f, json_object_get (reply, "api_base_url"));
    }
    if (json_is_true (json_object_get (reply, "refreshed")))
        fputs (", refreshed by this request", f);
    fputc ('\n', f);
}

/* A reply without what the command prints: a bug of the service or of this client. Says so as an
 * internal error and gives the exit status for it. */
static int
missing_field (const char *what)
{
    fprintf (stderr, "ferrulectl: error: the service's reply has no %s\n"
             "hint: report this with the output of the same command run with --json\n"
             "code: internal\n", what);
    return 1;
}

/* The token alone on stdout, so that $(ferrulectl token ...) is the token. */
int
output_token (const json_t *reply, const output_mode_t *mode)
{
    const char *token = json_string_value (json_object_get (reply, "access_token"));
    if (!token || !*token)
        return missing_field ("access token");
    output_safe (stdout, token);
    fputc ('\n', stdout);
    if (mode->verbose)
        print_token_details (stderr, reply);
    return 0;
}

/* An operator's refresh: what changed, not the token (ask "token" or --json for it). */
int
output_refresh (const json_t *reply, const output_mode_t *mode)
{
    fputs ("refreshed: ", stdout);
    print_token_details (stdout, reply);
    return 0;
}

int
output_integration (const json_t *reply, const output_mode_t *mode)
{
    static const char *const order [] = {
        "id", "provider", "status", "generation", "access_expires_at", "scopes", "api_base_url", "last_refresh_at",
        "last_error", "refresh_token_fingerprint", "created_at", "updated_at", NULL
    };
    const json_t *integration = json_object_get (reply, "integration");
    const char *key;
    json_t *value;

    for (int i = 0; order [i]; i++) {
        printf ("%s: ", order [i]);
        value = json_object_get (integration, order [i]);
        if (strcmp (order [i], "last_error") == 0 && json_is_object (value))
            print_last_error (stdout, value);
        else
            print_value (stdout, value);
        fputc ('\n', stdout);
    }
    /* key rotation: how much of the database still needs a retired key */
    const json_t *keys = json_object_get (reply, "keys");
    if (json_is_object (keys)) {
        const json_t *left = json_object_get (keys, "values_on_old_keys");
        printf ("key_id: %lld%s\n", (long long) json_integer_value (json_object_get (keys, "key_id")),
                json_is_true (json_object_get (keys, "retired_key")) ? " (retired: run ferrule-migrate rekey)" : "");
        fputs ("values_on_old_keys: ", stdout);
        print_value (stdout, left);
        fputc ('\n', stdout);
    }
    /* keys a newer service adds */
    json_object_foreach ((json_t *) integration, key, value) {
        int known = 0;
        for (int i = 0; order [i]; i++)
            if (strcmp (order [i], key) == 0)
                known = 1;
        if (known)
            continue;
        output_safe (stdout, key);
        fputs (": ", stdout);
        if (strcmp (key, "scope_report") == 0 && json_is_object (value)) {
            /* "SCOPE (at TIME)"; a report that named no scope holds "" */
            const char *scope = json_string_value (json_object_get (value, "scope"));
            json_t *shown = json_pack ("{s:s?, s:O?}", "code", scope && !*scope ? "(scope not named)" : scope,
                                       "at", json_object_get (value, "at"));
            print_last_error (stdout, shown);
            json_decref (shown);
        }
        else
            print_value (stdout, value);
        fputc ('\n', stdout);
    }
    return 0;
}

/* A table cell, padded; the last one of a row ends the line. */
static void
print_cell (const char *s, size_t width, int last)
{
    if (last)
        printf ("%s\n", s);
    else
        printf ("%-*s  ", (int) width, s);
}

/* The chain as the service sends it, newest first. */
int
output_history (const json_t *reply, const output_mode_t *mode)
{
    static const char *const heads [] = { "GENERATION", "AT", "OUTCOME", "WORKER", "FINGERPRINT", "ROTATED", "DETAIL" };
    static const char *const keys [] = { "generation", "at", "outcome", "worker", "refresh_token_fingerprint", "rotated", "detail" };
    enum { COLUMNS = 7 };
    const json_t *chain = json_object_get (reply, "chain");
    size_t rows = json_is_array (chain) ? json_array_size (chain) : 0;
    if (rows > OUTPUT_MAX_ROWS)
        rows = OUTPUT_MAX_ROWS;
    char **cells = mem_alloc ((rows ? rows : 1) * COLUMNS * sizeof *cells);
    size_t width [COLUMNS];

    for (int c = 0; c < COLUMNS; c++)
        width [c] = strlen (heads [c]);
    for (size_t r = 0; r < rows; r++) {
        const json_t *entry = json_array_get (chain, r);
        for (int c = 0; c < COLUMNS; c++) {
            char *s = value_string (json_object_get (entry, keys [c]));
            cells [r * COLUMNS + c] = s;
            size_t len = strlen (s);
            if (len > width [c])
                width [c] = len > OUTPUT_MAX_WIDTH ? OUTPUT_MAX_WIDTH : len;
        }
    }
    for (int c = 0; c < COLUMNS; c++)
        print_cell (heads [c], width [c], c == COLUMNS - 1);
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < COLUMNS; c++)
            print_cell (cells [r * COLUMNS + c], width [c], c == COLUMNS - 1);
    for (size_t i = 0; i < rows * COLUMNS; i++)
        free (cells [i]);
    mem_free (cells);
    return 0;
}

int
output_connect (const json_t *reply, const output_mode_t *mode)
{
    static const char *const keys [] = { "authorization_url", "expires_at", "integration", "provider",
                                         "redirect_uri", "scopes", NULL };
    for (int i = 0; keys [i]; i++) {
        printf ("%s: ", keys [i]);
        print_value (stdout, json_object_get (reply, keys [i]));
        fputc ('\n', stdout);
    }
    fputs ("next: open authorization_url in a browser, approve, then run\n"
           "  ferrulectl callback --url-file -\n"
           "and paste the URL the browser was redirected to, then press Ctrl-D\n", stdout);
    return 0;
}

int
output_callback (const json_t *reply, const output_mode_t *mode)
{
    size_t i;
    json_t *w;
    output_integration (reply, mode);
    json_array_foreach (json_object_get (reply, "warnings"), i, w) {
        const char *hint = json_string_value (json_object_get (w, "hint"));
        fputs ("ferrulectl: warning: ", stderr);
        output_safe (stderr, json_string_value (json_object_get (w, "message")));
        fputs (" (", stderr);
        output_safe (stderr, json_string_value (json_object_get (w, "code")));
        fputs (")\n", stderr);
        if (hint && *hint) {
            fputs ("hint: ", stderr);
            output_safe (stderr, hint);
            fputc ('\n', stderr);
        }
    }
    return 0;
}

int
output_doctor (const json_t *reply, const output_mode_t *mode)
{
    const json_t *d = json_object_get (reply, "diagnosis");
    size_t i;
    json_t *item;
    if (!json_is_object (d))
        return missing_field ("diagnosis");
    fputs ("Integration: ", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "integration")));
    fputs (" (", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "provider")));
    fputs (", ", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "status")));
    fputs (")\nDiagnosis: ", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "code")));
    fputs ("\nSymptom: ", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "symptom")));
    fputs ("\nCause: ", stdout);
    output_safe (stdout, json_string_value (json_object_get (d, "cause")));
    fputs ("\nWhat to do:\n", stdout);
    json_array_foreach (json_object_get (d, "what_to_do"), i, item) {
        printf ("  %zu. ", i + 1);
        output_safe (stdout, json_string_value (item));
        fputc ('\n', stdout);
    }
    if (json_array_size (json_object_get (d, "facts")))
        fputs ("Facts:\n", stdout);
    json_array_foreach (json_object_get (d, "facts"), i, item) {
        fputs ("  - ", stdout);
        output_safe (stdout, json_string_value (item));
        fputc ('\n', stdout);
    }
    return 0;
}

int
output_check_gateway_url (char *err, size_t errlen)
{
    const char *url = getenv ("FERRULE_GATEWAY_PUBLIC_URL");
    if (!url || !*url)
        return 0;
    size_t skip = strncasecmp (url, "https://", 8) == 0 ? 8 : strncasecmp (url, "http://", 7) == 0 ? 7 : 0;
    const char *why = NULL;
    if (!skip || strcspn (url + skip, "/") == 0)
        why = "it is not an absolute http:// or https:// URL with a host";
    else
    if (strpbrk (url, "?#"))
        why = "the link cannot follow a query or a fragment";
    for (const unsigned char *p = (const unsigned char *) url; !why && *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            why = "it contains a space, a control or a non-ASCII character";
    if (!why)
        return 0;
    char shown [160];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) url; *p && n < 120; p++)
        shown [n++] = *p < 0x20 || *p >= 0x7f ? '?' : (char) *p;
    shown [n] = '\0';
    snprintf (err, errlen, "FERRULE_GATEWAY_PUBLIC_URL \"%s%s\" cannot begin a dashboard link: %s", shown,
              url [n] ? "..." : "", why);
    return -1;
}

void
output_add_dashboard_url (json_t *reply)
{
    const char *base = getenv ("FERRULE_GATEWAY_PUBLIC_URL");
    const char *token = json_string_value (json_object_get (reply, "link_token"));
    if (!token)
        return;
    if (!base || !*base)
        base = "http://127.0.0.1:8080";
    size_t blen = strlen (base);
    while (blen && base [blen - 1] == '/')
        blen--;
    /* the workspace, for the gateway's confirm page ("Open the dashboard of WS"); the gateway
       checks it against the link's own */
    const char *ws = json_string_value (json_object_get (reply, "workspace"));
    size_t len = blen + strlen (token) + (ws ? strlen (ws) : 0) + 48;
    char *url = malloc (len);
    if (!url)
        return;
    snprintf (url, len, "%.*s/dashboard/open?link=%s%s%s", (int) blen, base, token, ws ? "&workspace=" : "",
              ws ? ws : "");
    json_object_set_new (reply, "url", json_string (url));
    memset (url, 0, len);
    free (url);
}

int
output_dashboard_link (const json_t *reply, const output_mode_t *mode)
{
    const char *url = json_string_value (json_object_get (reply, "url"));
    if (!url)
        return missing_field ("link");
    output_safe (stdout, url);
    fputc ('\n', stdout);
    if (mode->verbose) {
        fputs ("expires at ", stderr);
        output_safe (stderr, json_string_value (json_object_get (reply, "expires_at")));
        fputs ("; the link works once\n", stderr);
    }
    return 0;
}

/* A table of rows from an array of maps: heads, and per column a key (or NULL: fill (row, col)). */
static void
print_table (const json_t *list, const char *const *heads, const char *const *keys, int columns,
             char *(*fill) (const json_t *row, int col))
{
    size_t rows = json_is_array (list) ? json_array_size (list) : 0;
    if (rows > OUTPUT_MAX_ROWS)
        rows = OUTPUT_MAX_ROWS;
    char **cells = mem_alloc ((rows ? rows : 1) * (size_t) columns * sizeof *cells);
    size_t width [16];
    for (int c = 0; c < columns; c++)
        width [c] = strlen (heads [c]);
    for (size_t r = 0; r < rows; r++) {
        const json_t *entry = json_array_get (list, r);
        for (int c = 0; c < columns; c++) {
            char *s = keys [c] ? value_string (json_object_get (entry, keys [c])) : fill (entry, c);
            cells [r * (size_t) columns + (size_t) c] = s;
            size_t len = strlen (s);
            if (len > width [c])
                width [c] = len > OUTPUT_MAX_WIDTH ? OUTPUT_MAX_WIDTH : len;
        }
    }
    for (int c = 0; c < columns; c++)
        print_cell (heads [c], width [c], c == columns - 1);
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < columns; c++)
            print_cell (cells [r * (size_t) columns + (size_t) c], width [c], c == columns - 1);
    for (size_t i = 0; i < rows * (size_t) columns; i++)
        free (cells [i]);
    mem_free (cells);
}

/* "endpoint: state (attempts), ..." of an event's deliveries. */
static char *
deliveries_cell (const json_t *event, int col)
{
    const json_t *list = json_object_get (event, "deliveries");
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream (&s, &len);
    if (!f)
        return mem_strdup ("?");
    size_t i;
    const json_t *d;
    if (!json_array_size (list))
        fputs ("-", f);
    json_array_foreach (list, i, d) {
        fprintf (f, "%s", i ? ", " : "");
        print_value (f, json_object_get (d, "endpoint"));
        fputs (": ", f);
        print_value (f, json_object_get (d, "state"));
        json_int_t attempts = json_integer_value (json_object_get (d, "attempts"));
        fprintf (f, " (%lld attempt%s)", (long long) attempts, attempts == 1 ? "" : "s");
        const char *error = json_string_value (json_object_get (d, "last_error"));
        const char *st = json_string_value (json_object_get (d, "state"));   /* NULL unless a string */
        if (error && (!st || strcmp (st, "delivered") != 0)) {
            fputs (" ", f);
            print_value (f, json_object_get (d, "last_error"));
        }
    }
    fclose (f);
    return s ? s : mem_strdup ("");
}

int
output_events (const json_t *reply, const output_mode_t *mode)
{
    static const char *const heads [] = { "ID", "AT", "TYPE", "INTEGRATION", "DIAGNOSIS", "DELIVERY" };
    static const char *const keys [] = { "id", "at", "type", "integration", "diagnosis", NULL };
    const json_t *events = json_object_get (reply, "events");
    if (!json_is_array (events))
        return missing_field ("list of events");
    print_table (events, heads, keys, 6, deliveries_cell);
    if (json_is_true (json_object_get (reply, "truncated"))) {
        const json_t *last = json_object_get (json_array_get (events, json_array_size (events) - 1), "id");
        fputs ("more events matched than were listed", stderr);
        if (json_is_string (last)) {
            fputs (": the next page is --before ", stderr);
            print_value (stderr, last);
        }
        fputc ('\n', stderr);
    }
    return 0;
}

int
output_replay (const json_t *reply, const output_mode_t *mode)
{
    const json_t *n = json_object_get (reply, "replayed");
    if (!json_is_integer (n))
        return missing_field ("count of replayed deliveries");
    printf ("%lld failed deliver%s queued again\n", (long long) json_integer_value (n),
            json_integer_value (n) == 1 ? "y" : "ies");
    /* a service before it counts them sends no "not_configured" */
    const json_t *left = json_object_get (reply, "not_configured");
    if (json_is_integer (left) && json_integer_value (left) > 0)
        printf ("%lld failed deliver%s left: %s endpoint is no longer configured (a renamed endpoint is a new one)\n",
                (long long) json_integer_value (left), json_integer_value (left) == 1 ? "y" : "ies",
                json_integer_value (left) == 1 ? "its" : "their");
    return 0;
}

int
output_webhook_test (const json_t *reply, const output_mode_t *mode)
{
    const json_t *event = json_object_get (reply, "event");
    if (!json_is_string (event))
        return missing_field ("test event");
    json_t *error = json_object_get (reply, "delivery_error");
    fputs ("test event ", stdout);
    print_value (stdout, event);
    fputs (" to ", stdout);
    print_value (stdout, json_object_get (reply, "endpoint"));
    fputs (" (", stdout);
    print_value (stdout, json_object_get (reply, "url"));
    fputs ("): ", stdout);
    char *cell = deliveries_cell (json_object_get (reply, "delivery_event"), 0);
    const json_t *list = json_object_get (json_object_get (reply, "delivery_event"), "deliveries");
    if (json_array_size (list))
        output_safe (stdout, cell);
    else
    if (json_object_get (reply, "delivery_event"))
        fputs ("not sent yet (no worker has picked it up)", stdout);
    else
    if (error)
        fputs ("its delivery could not be looked up (the error follows)", stdout);
    else {
        /* the request took the whole --timeout, or every look-up found the service busy */
        fputs ("not looked up in time: \"ferrulectl events --event ", stdout);
        print_value (stdout, event);
        fputs ("\" shows its delivery", stdout);
    }
    fputc ('\n', stdout);
    free (cell);
    if (error) {
        /* the "events" request that follows the delivery failed, and waiting would not mend it */
        json_t *failed = json_pack ("{s:b, s:O}", "ok", 0, "error", error);
        fflush (stdout);
        output_error (failed);
        json_decref (failed);
    }
    return 0;
}

int
output_webhooks (const json_t *reply, const output_mode_t *mode)
{
    const json_t *list = json_object_get (reply, "webhooks");
    if (!json_is_array (list))
        return missing_field ("list of webhook endpoints");
    if (!json_array_size (list))
        puts ("no webhook endpoints are configured (FERRULE_WEBHOOKS_FILE): events are recorded, not sent");
    size_t i;
    const json_t *w;
    static const char *const keys [] = { "url", "events", "diagnosis", "pending", "retrying", "delivered_last_day", "failed",
                                         "last_error", "last_failure_at", "last_delivered_at", NULL };
    json_array_foreach (list, i, w) {
        if (i)
            fputc ('\n', stdout);
        fputs ("webhook ", stdout);
        print_value (stdout, json_object_get (w, "name"));
        fputc ('\n', stdout);
        for (int k = 0; keys [k]; k++) {
            printf ("  %-18s ", keys [k]);
            print_value (stdout, json_object_get (w, keys [k]));
            fputc ('\n', stdout);
        }
        const char *code = json_string_value (json_object_get (w, "diagnosis"));
        if (code && strcmp (code, "failed_events") == 0)
            puts ("  what to do         fix the endpoint (the last error says why it refused), then "
                  "\"ferrulectl events replay --integration ID\" or \"--event ID\" for the failed events");
        else if (code && strcmp (code, "retrying") == 0)
            puts ("  what to do         the endpoint refuses or does not answer; deliveries are retried with backoff "
                  "until FERRULE_WEBHOOK_MAX_AGE_S, then marked failed");
    }
    return 0;
}
