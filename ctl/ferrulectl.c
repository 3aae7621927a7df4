/* ferrulectl.c - the operators' command line: one table of commands, one request per run
 *
 * ferrulectl [global options] COMMAND [options]. A command is a row of `commands`: its name,
 * the wire operation, whether it may be retried, its option specs (opts.h) and its printer
 * (output.h). Adding a command is adding a row. docs/ferrulectl.md is the manual.
 */
#include "client.h"
#include "codec.h"
#include "mem.h"
#include "opts.h"
#include "output.h"
#include "result.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "clock.h"

#ifndef FERRULE_VERSION
#define FERRULE_VERSION "unknown"
#endif

#define CTL_DEFAULT_BROKER      "tcp://127.0.0.1:5555"
#define CTL_DEFAULT_TIMEOUT_MS  10000
#define CTL_MAX_TIMEOUT_S       300.0         /* the protocol's largest deadline */
#define CTL_MIN_TIMEOUT_S       0.001
#define CTL_MAX_BROKER_LIST     4096          /* bytes of all --broker values together */
#define CTL_EXIT_USAGE          2
#define CTL_EXIT_CONFIGURATION  6
#define CTL_EXIT_INTERNAL       1

typedef struct {
    const char *name;
    const char *op;             /* wire operation; NULL for local commands (help) */
    int idempotent;             /* retried on another broker when it times out */
    const char *summary;
    const opt_spec_t *opts;
    output_fn print;
    const char *example;
    int local;                  /* runs here, sends nothing (keygen) */
    const char *positional;     /* request key one positional argument fills ("webhook test URL"), or NULL */
} command_t;

#define OPT_INTEGRATION { .name = "integration", .metavar = "ID", .kind = OPT_STRING, .key = "integration", \
                          .required = 1, .check = opts_check_integration,                                  \
                          .help = "the integration: 1 to 128 of A-Z a-z 0-9 . _ : -" }

static const opt_spec_t opts_none [] = { OPTS_END };

static const opt_spec_t opts_integration [] = { OPT_INTEGRATION, OPTS_END };

static const opt_spec_t opts_import [] = {
    OPT_INTEGRATION,
    { .name = "provider", .metavar = "NAME", .kind = OPT_STRING, .key = "provider", .required = 1,
      .check = opts_check_name, .help = "a provider of the service's catalog (box, google, ...)" },
    { .name = "refresh-token", .metavar = "RT", .kind = OPT_SECRET, .key = "refresh_token", .required = 1,
      .help = "the refresh token (other users can see a command line: prefer --refresh-token-file)" },
    { .name = "refresh-token-file", .metavar = "PATH", .kind = OPT_SECRET_FILE, .key = "refresh_token", .required = 1,
      .help = "read the refresh token from a file, or from standard input with \"-\"" },
    { .name = "access-token", .metavar = "AT", .kind = OPT_SECRET, .key = "access_token", .needs = "expires_in",
      .help = "a current access token, so the first \"token\" need not refresh" },
    { .name = "access-token-file", .metavar = "PATH", .kind = OPT_SECRET_FILE, .key = "access_token", .needs = "expires_in",
      .help = "read the access token from a file, or from standard input with \"-\"" },
    { .name = "expires-in", .metavar = "S", .kind = OPT_INT, .key = "expires_in", .needs = "access_token",
      .min = 1, .max = 31536000, .help = "seconds the access token stays valid from now (1 to 31536000)" },
    { .name = "scopes", .metavar = "\"A B\"", .kind = OPT_WORDS, .key = "scopes",
      .help = "the scopes granted, separated by spaces or commas" },
    { .name = "api-base-url", .metavar = "URL", .kind = OPT_STRING, .key = "api_base_url",
      .check = opts_check_api_base, .help = "the base URL of the provider's API for this grant (Salesforce's instance_url), https://" },
    OPTS_END
};

static const opt_spec_t opts_token [] = {
    OPT_INTEGRATION,
    { .name = "min-valid", .metavar = "S", .kind = OPT_INT, .key = "min_valid", .min = 0, .max = 86400,
      .help = "the token stays valid at least this many seconds (0 to 86400; the service's default is 60)" },
    { .name = "reject", .metavar = "TOKEN", .kind = OPT_SECRET, .key = "reject",
      .help = "the provider answered 401 to this token: refresh unless a newer token already exists" },
    { .name = "reject-file", .metavar = "PATH", .kind = OPT_SECRET_FILE, .key = "reject",
      .help = "read the rejected token from a file, or from standard input with \"-\"" },
    { .name = "require-scope", .metavar = "S", .kind = OPT_LIST, .key = "require_scopes",
      .help = "fail with insufficient_scope, without refreshing, unless the grant holds this scope (repeatable)" },
    OPTS_END
};

static const opt_spec_t opts_connect [] = {
    OPT_INTEGRATION,
    { .name = "provider", .metavar = "NAME", .kind = OPT_STRING, .key = "provider", .required = 1,
      .check = opts_check_name, .help = "a provider of the service's catalog (box, google, ...)" },
    { .name = "redirect-uri", .metavar = "URI", .kind = OPT_STRING, .key = "redirect_uri", .required = 1,
      .check = opts_check_uri, .help = "the callback URI registered in the provider's OAuth app" },
    { .name = "scope", .metavar = "S", .kind = OPT_LIST, .key = "scopes",
      .help = "a scope to request (repeatable; default: the provider entry's default scopes)" },
    OPTS_END
};

static const opt_spec_t opts_keygen [] = {
    { .name = "out", .metavar = "PREFIX", .kind = OPT_STRING, .key = "out", .required = 1,
      .help = "write the secret key to PREFIX.key (mode 0600) and the public key to PREFIX.pub; never overwrites" },
    OPTS_END
};

static const opt_spec_t opts_callback [] = {
    { .name = "url", .metavar = "URL", .kind = OPT_CALLBACK_URL, .key = "state", .required = 1,
      .help = "the whole URL the provider redirected the browser to (quote it: it holds '&'; other users can "
              "see a command line, and it holds the code: prefer --url-file)" },
    { .name = "url-file", .metavar = "PATH", .kind = OPT_CALLBACK_URL_FILE, .key = "state", .required = 1,
      .help = "read that URL from a file, or from standard input with \"-\"" },
    OPTS_END
};

static const opt_spec_t opts_report_scope [] = {
    OPT_INTEGRATION,
    { .name = "scope", .metavar = "S", .kind = OPT_STRING, .key = "scope", .one_of = "scope",
      .help = "the scope the upstream API said is missing (several separated by spaces)" },
    { .name = "www-authenticate", .metavar = "HEADER", .kind = OPT_STRING, .key = "www_authenticate",
      .one_of = "scope", .help = "the upstream 403's WWW-Authenticate header; its scope= is used when --scope is not given, and "
              "with error=\"insufficient_scope\" and no scope= the report names no scope" },
    OPTS_END
};

static const opt_spec_t opts_history [] = {
    OPT_INTEGRATION,
    { .name = "limit", .metavar = "N", .kind = OPT_INT, .key = "limit", .min = 1, .max = 1000,
      .help = "how many entries, newest first (1 to 1000; the service's default is 20)" },
    OPTS_END
};

static const opt_spec_t opts_dashboard_link [] = {
    { .name = "workspace", .metavar = "PREFIX", .kind = OPT_STRING, .key = "integration", .required = 1,
      .check = opts_check_workspace, .help = "the workspace: the integration-id prefix its integrations share, ending "
      "with one of : . _ - (acct42:)" },
    { .name = "ttl", .metavar = "S", .kind = OPT_INT, .key = "ttl_s", .min = 30, .max = 3600,
      .help = "seconds the link stays usable (30 to 3600; the service's default is 600); it works once" },
    OPTS_END
};

static const opt_spec_t opts_events [] = {
    { .name = "integration", .metavar = "ID", .kind = OPT_STRING, .key = "integration",
      .check = opts_check_integration, .help = "only this integration's events" },
    { .name = "since", .metavar = "TIME", .kind = OPT_STRING, .key = "since",
      .help = "only events from this time on (RFC 3339, e.g. 2026-01-31T12:00:00Z)" },
    { .name = "until", .metavar = "TIME", .kind = OPT_STRING, .key = "until",
      .help = "only events from before this time (RFC 3339; with --since, a window in the past)" },
    { .name = "before", .metavar = "ID", .kind = OPT_STRING, .key = "before",
      .help = "only events older than this one: the last ID of a listing that had more gives the next page" },
    { .name = "event", .metavar = "ID", .kind = OPT_STRING, .key = "event", .help = "only this event" },
    { .name = "limit", .metavar = "N", .kind = OPT_INT, .key = "limit", .min = 1, .max = 1000,
      .help = "how many events, newest first (1 to 1000; the service's default is 100)" },
    OPTS_END
};

static const opt_spec_t opts_events_replay [] = {
    { .name = "event", .metavar = "ID", .kind = OPT_STRING, .key = "event", .one_of = "which",
      .help = "replay this event's failed deliveries" },
    { .name = "integration", .metavar = "ID", .kind = OPT_STRING, .key = "integration", .one_of = "which",
      .check = opts_check_integration, .help = "replay the failed deliveries of this integration's events" },
    { .name = "endpoint", .metavar = "NAME", .kind = OPT_STRING, .key = "endpoint",
      .help = "only the deliveries to this webhook endpoint" },
    OPTS_END
};

static const command_t commands [] = {
    { "ping", "ping", 1, "check that a broker answers, and how many workers it sees",
      opts_none, output_ping, "ferrulectl ping", 0, NULL },
    { "import", "import", 0, "store tokens obtained elsewhere (replaces the tokens of an existing integration)",
      opts_import, output_integration,
      "ferrulectl import --integration acct42:box --provider box --refresh-token-file rt.txt", 0, NULL },
    { "token", "token", 1, "print a valid access token, refreshing it first when needed",
      opts_token, output_token, "TOKEN=$(ferrulectl token --integration acct42:box --min-valid 300)", 0, NULL },
    { "refresh", "refresh", 0, "refresh the access token now, whatever its remaining life",
      opts_integration, output_refresh, "ferrulectl refresh --integration acct42:box", 0, NULL },
    { "status", "status", 1, "show an integration: provider, status, generation, expiry, last error",
      opts_integration, output_integration, "ferrulectl status --integration acct42:box", 0, NULL },
    { "history", "history", 1, "show the refresh chain, newest first",
      opts_history, output_history, "ferrulectl history --integration acct42:box --limit 5", 0, NULL },
    { "connect", "connect", 0, "start the OAuth consent flow: prints the URL to open in a browser",
      opts_connect, output_connect,
      "ferrulectl connect --integration acct42:google --provider google --redirect-uri https://app.example.com/oauth/callback "
      "--scope https://www.googleapis.com/auth/drive.readonly", 0, NULL },
    { "callback", "callback", 0, "finish a connect with the URL the provider redirected the browser to",
      opts_callback, output_callback,
      "ferrulectl callback --url-file -    (paste the URL, then press Ctrl-D)", 0, NULL },
    { "disconnect", "disconnect", 0, "destroy the stored tokens and revoke them at the provider (history kept)",
      opts_integration, output_callback, "ferrulectl disconnect --integration acct42:box", 0, NULL },
    { "doctor", "doctor", 1, "explain what is wrong with an integration and what to do",
      opts_integration, output_doctor, "ferrulectl doctor --integration acct42:box", 0, NULL },
    { "report-scope", "report_scope", 0, "record that an upstream API answered 403 insufficient_scope",
      opts_report_scope, output_callback,
      "ferrulectl report-scope --integration acct42:google --www-authenticate 'Bearer error=\"insufficient_scope\", scope=\"drive\"'", 0, NULL },
    { "events", "events", 1, "list recent events (needs_reconnect, connected, expiring, ...) and their delivery",
      opts_events, output_events, "ferrulectl events --integration acct42:box --since 2026-01-31T00:00:00Z", 0, NULL },
    { "events replay", "events_replay", 0, "send failed event deliveries again",
      opts_events_replay, output_replay, "ferrulectl events replay --integration acct42:box", 0, NULL },
    { "webhook test", "webhook_test", 0, "send a signed test event to a configured webhook endpoint (URL or name)",
      opts_none, output_webhook_test, "ferrulectl webhook test https://app.example.com/ferrule/events", 0, "endpoint" },
    { "webhook doctor", "webhooks", 1, "show each webhook endpoint's deliveries, its last error and what to do",
      opts_none, output_webhooks, "ferrulectl webhook doctor", 0, NULL },
    { "dashboard-link", "dashboard_link", 0, "print a single-use link to the gateway's dashboard of a workspace",
      opts_dashboard_link, output_dashboard_link, "FERRULE_GATEWAY_PUBLIC_URL=https://ferrule.example.com "
      "ferrulectl dashboard-link --workspace acct42:", 0, NULL },
    { "keygen", "keygen", 0, "make a CURVE key pair for a broker, a worker or a client (Z85 files)",
      opts_keygen, NULL, "ferrulectl keygen --out /etc/ferrule/billing", 1, NULL },
    { "help", NULL, 0, "show help for ferrulectl or for a command",
      opts_none, NULL, "ferrulectl help import", 0, NULL },
    { .name = NULL }
};

typedef enum { G_BROKER, G_TIMEOUT, G_JSON, G_VERBOSE, G_HELP, G_VERSION } global_id_t;

static const struct {
    const char *name;
    const char *metavar;        /* NULL: a flag */
    global_id_t id;
    const char *help;
} globals [] = {
    { "broker", "ENDPOINTS", G_BROKER, "broker frontends, comma-separated; repeat to add more "
                                       "(default: $FERRULE_BROKER_URL, else " CTL_DEFAULT_BROKER ")" },
    { "timeout", "SECONDS", G_TIMEOUT, "give up after this long, retries included (default 10; fractions allowed; at most 300)" },
    { "json", NULL, G_JSON, "print the reply as one JSON object on one line, errors included" },
    { "verbose", NULL, G_VERBOSE, "print details on standard error (token expiry, request id)" },
    { "help", NULL, G_HELP, "show help (also -h)" },
    { "version", NULL, G_VERSION, "print the version" },
    { NULL, NULL, 0, NULL }
};

/* Everything one run decided from its command line. */
typedef struct {
    output_mode_t mode;
    const command_t *cmd;
    const char *help_topic;     /* "help COMMAND" */
    int help_topic_at;          /* its place on the command line */
    int help_topic_hidden;      /* it names no command and may be a token: blanked, not shown */
    char help_topic_two [96];   /* a topic of two words ("webhook test"), help_topic points here */
    int help;
    int version;
    mem_buf_t brokers;          /* --broker values, comma-joined */
    int brokers_given;
    int timeout_ms;
    opts_state_t opts;
    char err [512];             /* the first usage error */
    char hint [256];
    char prefix [32];           /* "webhook" waiting for its second word */
    int positional_done;
} ctl_t;

static const command_t *
find_command (const char *name)
{
    for (const command_t *cmd = commands; cmd->name; cmd++)
        if (strcmp (cmd->name, name) == 0)
            return cmd;
    return NULL;
}

/* 1 when some command is named "word ..." (webhook test, webhook doctor). */
static int
has_subcommands (const char *word)
{
    size_t n = strlen (word);
    for (const command_t *cmd = commands; cmd->name; cmd++)
        if (strncmp (cmd->name, word, n) == 0 && cmd->name [n] == ' ')
            return 1;
    return 0;
}

/* 1 when "name word" is a command (events replay). */
static int
has_subcommand (const char *name, const char *word)
{
    char two [96];
    snprintf (two, sizeof two, "%s %s", name, word);
    return find_command (two) != NULL;
}

/* The hint for a first word alone or followed by one that makes no command: the commands it
 * starts ("webhook test", "webhook doctor"). */
static void
subcommands_hint (const char *word, char *out, size_t size)
{
    size_t n = strlen (word), len;
    const char *sep = ": ";
    len = (size_t) snprintf (out, size, "the commands that start with \"%s\"", word);
    for (const command_t *cmd = commands; cmd->name && len < size; cmd++)
        if (strncmp (cmd->name, word, n) == 0 && cmd->name [n] == ' ') {
            len += (size_t) snprintf (out + len, size - len, "%s\"ferrulectl %s\"", sep, cmd->name);
            sep = ", ";
        }
}

static int
find_global (const char *name)
{
    for (int i = 0; globals [i].name; i++)
        if (strcmp (globals [i].name, name) == 0)
            return i;
    return -1;
}

/* Records the first usage error; later ones are not reported. */
static void
usage_error (ctl_t *ctl, const char *hint, const char *fmt, const char *a, const char *b)
{
    if (ctl->err [0])
        return;
    snprintf (ctl->err, sizeof ctl->err, fmt, a, b);
    if (hint)
        snprintf (ctl->hint, sizeof ctl->hint, "%s", hint);
    else
    if (ctl->cmd && ctl->cmd->op)
        snprintf (ctl->hint, sizeof ctl->hint, "run \"ferrulectl %s --help\" for its options", ctl->cmd->name);
    else
        snprintf (ctl->hint, sizeof ctl->hint, "run \"ferrulectl help\" for the commands and global options");
}

/* Prints a local failure like a service error, and returns its exit code. */
static int
fail (const ctl_t *ctl, const char *code, const char *message, const char *hint, int exit_code)
{
    json_t *reply = output_local_error (code, message, hint);
    if (ctl->mode.json)
        output_json (reply);
    else
        output_error (reply);
    json_decref (reply);
    return exit_code;
}

static void
print_version (void)
{
    printf ("ferrulectl %s (protocol %s)\n", FERRULE_VERSION, CODEC_CLIENT_PROTOCOL);
}

static void
print_globals (FILE *f)
{
    fputs ("global options (before or after the command):\n", f);
    for (int i = 0; globals [i].name; i++) {
        char left [64];
        snprintf (left, sizeof left, "--%s%s%s", globals [i].name, globals [i].metavar ? " " : "",
                  globals [i].metavar ? globals [i].metavar : "");
        fprintf (f, "  %-26s %s\n", left, globals [i].help);
    }
}

static void
print_help (FILE *f)
{
    fputs ("ferrulectl - operate a Ferrule OAuth token service\n\n"
           "usage: ferrulectl [global options] COMMAND [options]\n\ncommands:\n", f);
    for (const command_t *cmd = commands; cmd->name; cmd++)
        fprintf (f, "  %-14s %s\n", cmd->name, cmd->summary);
    fputc ('\n', f);
    print_globals (f);
    fputs ("\nexit status: 0 ok, 2 bad usage or input, 3 not found, 4 needs user action,\n"
           "5 transient or unavailable, 6 configuration, 7 forbidden, 1 internal\n\n"
           "Run \"ferrulectl COMMAND --help\" for a command's options; docs/ferrulectl.md is the manual.\n", f);
}

static void
print_command_help (FILE *f, const command_t *cmd)
{
    char usage [1024];
    opts_usage (cmd->opts, usage, sizeof usage);
    if (!cmd->op) {
        fputs ("usage: ferrulectl help [COMMAND]\n\nShow help for ferrulectl or for a command.\n", f);
        return;
    }
    fprintf (f, "usage: ferrulectl [global options] %s%s%s%s\n\n%c%s.\n", cmd->name, cmd->positional ? " URL-OR-NAME" : "",
             usage [0] ? " " : "", usage, cmd->summary [0] - 'a' + 'A', cmd->summary + 1);
    if (cmd->opts [0].name) {
        fputs ("\noptions:\n", f);
        for (const opt_spec_t *spec = cmd->opts; spec->name; spec++) {
            char left [64];
            snprintf (left, sizeof left, "--%s%s%s", spec->name, spec->metavar ? " " : "",
                      spec->metavar ? spec->metavar : "");
            fprintf (f, "  %-26s %s\n", left, spec->help);
        }
    }
    fputc ('\n', f);
    print_globals (f);
    fprintf (f, "\nexample:\n  %s\n", cmd->example);
}

/* The value of an option: after "=" or the next argument. NULL (and a usage error) if none. */
static char *
option_value (ctl_t *ctl, int argc, char **argv, int *i, const char *name, char *inline_value)
{
    if (inline_value)
        return inline_value;
    if (*i + 1 < argc && strncmp (argv [*i + 1], "--", 2) != 0)
        return argv [++*i];
    usage_error (ctl, NULL, "option \"--%s\" needs a value%s", name, "");
    return NULL;
}

static void
apply_global (ctl_t *ctl, int g, const char *name, char *value)
{
    switch (globals [g].id) {
        case G_BROKER:
            ctl->brokers_given = 1;
            if ((ctl->brokers.len && mem_buf_append (&ctl->brokers, ",", 1) != 0)
            ||  mem_buf_append (&ctl->brokers, value, strlen (value)) != 0) {
                char limit [32];
                snprintf (limit, sizeof limit, "%d", CTL_MAX_BROKER_LIST);
                usage_error (ctl, NULL, "the broker list is too long (more than %s bytes)%s", limit, "");
            }
            break;
        case G_TIMEOUT: {
            char err [256];
            if (opts_parse_seconds (name, value, CTL_MIN_TIMEOUT_S, CTL_MAX_TIMEOUT_S, &ctl->timeout_ms,
                                    err, sizeof err) != 0)
                usage_error (ctl, NULL, "%s%s", err, "");
            break;
        }
        case G_JSON:    ctl->mode.json = 1; break;
        case G_VERBOSE: ctl->mode.verbose = 1; break;
        case G_HELP:    ctl->help = 1; break;
        case G_VERSION: ctl->version = 1; break;
    }
}

/* The option name of some command, or NULL. For a better hint when it comes before the command. */
static const opt_spec_t *
command_with_option (const char *name)
{
    for (const command_t *cmd = commands; cmd->name; cmd++) {
        const opt_spec_t *spec = opts_find (cmd->opts, name);
        if (spec)
            return spec;
    }
    return NULL;
}

/* Is a value of spec a secret (a token, or a callback URL and its code)? */
static int
secret_kind (const opt_spec_t *spec)
{
    return spec && (spec->kind == OPT_SECRET || spec->kind == OPT_CALLBACK_URL);
}

/* 1 when an argument that names no command may be quoted back: a short word of lower-case
 * letters and "-", as a mistyped command is; anything else may be a token. */
static int
plain_word (const char *arg)
{
    size_t n = strlen (arg);
    if (n == 0 || n > 24)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((arg [i] < 'a' || arg [i] > 'z') && arg [i] != '-')
            return 0;
    return 1;
}

/* Blanks an argument in place: out of the process list (/proc/PID/cmdline, ps) from now on. */
static void
blank (char *arg)
{
    if (arg)
        mem_wipe (arg, strlen (arg));
}

static void
parse_long_option (ctl_t *ctl, int argc, char **argv, int *i)
{
    char *arg = argv [*i] + 2;
    char name [64];
    char *eq = strchr (arg, '=');
    size_t len = eq ? (size_t) (eq - arg) : strlen (arg);
    char shown [80];
    opts_quote_option (shown, sizeof shown, argv [*i], 60);
    if (len == 0 || len >= sizeof name) {
        usage_error (ctl, NULL, "unrecognized option \"%s\"%s", shown, "");
        blank (eq ? eq + 1 : NULL);         /* the value of a misspelled option may be a token */
        return;
    }
    memcpy (name, arg, len);
    name [len] = '\0';
    char *inline_value = eq ? eq + 1 : NULL;

    int g = find_global (name);
    if (g >= 0) {
        if (!globals [g].metavar) {
            if (inline_value)
                usage_error (ctl, NULL, "option \"--%s\" takes no value%s", name, "");
            else
                apply_global (ctl, g, name, NULL);
            return;
        }
        char *value = option_value (ctl, argc, argv, i, name, inline_value);
        if (value)
            apply_global (ctl, g, name, value);
        return;
    }
    const opt_spec_t *spec = ctl->cmd ? opts_find (ctl->cmd->opts, name) : NULL;
    if (!spec) {
        const opt_spec_t *elsewhere = command_with_option (name);
        if (elsewhere && !ctl->cmd) {
            char hint [200];
            snprintf (hint, sizeof hint, "give a command's options after it: ferrulectl COMMAND --%s ...", name);
            usage_error (ctl, hint, "option \"--%s\" comes before the command%s", name, "");
        }
        else
            usage_error (ctl, NULL, "unrecognized option \"%s\"%s", shown, "");
        /* its value, inline or the next argument (unless the option is known to take none), is
           neither a command nor shown: it may be a token. Blanked from the process list */
        if (!inline_value && !(elsewhere && elsewhere->kind == OPT_FLAG) && *i + 1 < argc
        &&  argv [*i + 1][0] != '-')
            inline_value = argv [++*i];
        blank (inline_value);
        return;
    }
    char *value = NULL;
    if (spec->kind != OPT_FLAG) {
        value = option_value (ctl, argc, argv, i, name, inline_value);
        if (!value)
            return;
    }
    else
    if (inline_value) {
        usage_error (ctl, NULL, "option \"--%s\" takes no value%s", name, "");
        return;
    }
    char err [512];
    /* with --help, read nothing (no secret file, no standard input); after a usage error, apply
     * nothing more. Either way a secret value leaves the process list now, as opts_apply does */
    if (ctl->err [0] || ctl->help) {
        if (secret_kind (spec))
            blank (value);
        return;
    }
    if (opts_apply (&ctl->opts, spec, value, err, sizeof err) != 0)
        usage_error (ctl, NULL, "%s%s", err, "");
}

static void
parse (ctl_t *ctl, int argc, char **argv)
{
    int options_done = 0;

    /* --help and --json count wherever they are, even after an error (no value starts with "--") */
    for (int i = 1; i < argc && strcmp (argv [i], "--") != 0; i++) {
        if (strcmp (argv [i], "--help") == 0)
            ctl->help = 1;
        if (strcmp (argv [i], "--json") == 0)
            ctl->mode.json = 1;
    }
    for (int i = 1; i < argc; i++) {
        char *arg = argv [i];
        if (!options_done && strcmp (arg, "--") == 0) {
            options_done = 1;
            continue;
        }
        if (!options_done && arg [0] == '-' && arg [1] != '\0') {
            if (strcmp (arg, "-h") == 0)
                ctl->help = 1;
            else
            if (arg [1] == '-')
                parse_long_option (ctl, argc, argv, &i);
            else {
                char shown [80];
                opts_quote_option (shown, sizeof shown, arg, 60);
                usage_error (ctl, NULL, "unrecognized option \"%s\"%s", shown, "");
            }
            continue;
        }
        char shown [80];
        opts_quote (shown, sizeof shown, arg, 60);
        if (ctl->prefix [0]) {
            /* the second word of "webhook test": said back only if it cannot be a token (the
             * URL of a "webhook test" without "test" may hold the endpoint's secret) */
            char two [96], hint [200];
            snprintf (two, sizeof two, "%s %s", ctl->prefix, arg);
            ctl->cmd = find_command (two);
            subcommands_hint (ctl->prefix, hint, sizeof hint);
            if (!ctl->cmd && plain_word (arg))
                usage_error (ctl, hint, "unknown command \"%s %s\"", ctl->prefix, shown);
            else
            if (!ctl->cmd) {
                char place [32];
                snprintf (place, sizeof place, "%d", i);
                usage_error (ctl, hint, "unknown command \"%s\" followed by argument %s of the command line (not "
                             "shown: it may be a token)", ctl->prefix, place);
                blank (arg);
            }
            ctl->prefix [0] = '\0';
        }
        else
        if (!ctl->cmd) {
            ctl->cmd = find_command (arg);
            if (!ctl->cmd && has_subcommands (arg))
                snprintf (ctl->prefix, sizeof ctl->prefix, "%s", arg);
            else
            if (!ctl->cmd && plain_word (arg))
                usage_error (ctl, "run \"ferrulectl help\" for the list of commands", "unknown command \"%s\"%s", shown, "");
            else
            if (!ctl->cmd) {
                char place [32];
                snprintf (place, sizeof place, "%d", i);
                usage_error (ctl, "run \"ferrulectl help\" for the list of commands",
                             "unknown command: argument %s of the command line (not shown: it may be a token)%s",
                             place, "");
                blank (arg);
            }
        }
        else
        if (ctl->cmd->op && !ctl->positional_done && has_subcommand (ctl->cmd->name, arg)) {
            char two [96];
            snprintf (two, sizeof two, "%s %s", ctl->cmd->name, arg);
            ctl->cmd = find_command (two);
            /* options given before the second word go to it: one it does not take would be
             * dropped unread ("events --since T replay" replayed without the filter) */
            const opt_spec_t *left = opts_rebind (&ctl->opts, ctl->cmd->opts);
            if (left)
                usage_error (ctl, NULL, "\"%s\" does not take option \"--%s\"", ctl->cmd->name, left->name);
        }
        else
        if (ctl->cmd->positional && !ctl->positional_done) {
            ctl->positional_done = 1;
            /* not quoted, and blanked from the process list once copied: an endpoint's URL may
             * hold a secret in its query */
            json_t *value = strlen (arg) <= 2048 && *arg ? json_string (arg) : NULL;
            if (!value) {
                char where [96];
                snprintf (where, sizeof where, "argument %d of the command line, of %zu characters", i, strlen (arg));
                usage_error (ctl, NULL, "the %s (%s) must be 1 to 2048 characters of UTF-8", ctl->cmd->positional, where);
            }
            else
                json_object_set_new (ctl->opts.args, ctl->cmd->positional, value);
            blank (arg);
        }
        else
        if (!ctl->cmd->op && ctl->help_topic && !ctl->help_topic_two [0] && !ctl->help_topic_hidden
        &&  has_subcommand (ctl->help_topic, arg)) {
            /* the second word of a topic: "help webhook test", "help events replay" */
            snprintf (ctl->help_topic_two, sizeof ctl->help_topic_two, "%s %s", ctl->help_topic, arg);
            ctl->help_topic = ctl->help_topic_two;
        }
        else
        if (!ctl->cmd->op && !ctl->help_topic) {
            ctl->help_topic = arg;
            ctl->help_topic_at = i;
            /* a topic that names no command is said back only if it cannot be a token */
            if (!find_command (arg) && !has_subcommands (arg) && !plain_word (arg)) {
                ctl->help_topic_hidden = 1;
                blank (arg);
            }
        }
        else {
            /* it may be a token given without its option: named by its place, never shown, and
             * blanked from the process list */
            char place [32];
            snprintf (place, sizeof place, "%d", i);
            usage_error (ctl, NULL, "unexpected argument %s of the command line (not shown: it may be a token)%s",
                         place, "");
            blank (arg);
        }
    }
}

/* The broker list: --broker, else $FERRULE_BROKER_URL, else the default. */
static int
broker_list (ctl_t *ctl, const char **list)
{
    char err [512];
    const char *env = getenv ("FERRULE_BROKER_URL");

    if (ctl->brokers_given) {
        *list = ctl->brokers.data ? ctl->brokers.data : "";
        if (client_check_endpoints (*list, err, sizeof err) != FR_OK)
            return fail (ctl, "bad_request", err, "give --broker tcp://HOST:PORT, several separated by commas", CTL_EXIT_USAGE);
        return 0;
    }
    if (env && *env) {
        *list = env;
        if (client_check_endpoints (*list, err, sizeof err) != FR_OK) {
            char message [600];
            snprintf (message, sizeof message, "FERRULE_BROKER_URL is invalid: %s", err);
            return fail (ctl, "configuration", message,
                         "set FERRULE_BROKER_URL to tcp://HOST:PORT (several separated by commas), or give --broker",
                         CTL_EXIT_CONFIGURATION);
        }
        return 0;
    }
    *list = CTL_DEFAULT_BROKER;
    return 0;
}

/* ferrulectl keygen --out PREFIX: a key pair in two files; prints the public key. */
static int
keygen (ctl_t *ctl)
{
    char err [1200], pub [CURVE_Z85_LEN + 1];
    const char *prefix = json_string_value (json_object_get (ctl->opts.args, "out"));
    fr_status_t st = curve_keygen (prefix, pub, err, sizeof err);
    if (st != FR_OK)
        return fail (ctl, result_code (st), err, "give --out with a path prefix in a writable folder", result_exit_code (st));
    if (ctl->mode.json) {
        json_t *reply = json_pack ("{s:b, s:s, s:s++, s:s++}", "ok", 1, "public_key", pub,
                                   "secret_key_file", prefix, ".key", "public_key_file", prefix, ".pub");
        output_json (reply);
        json_decref (reply);
    }
    else {
        fputs ("wrote ", stdout);
        output_safe (stdout, prefix);
        fputs (".key (secret, mode 0600) and ", stdout);
        output_safe (stdout, prefix);
        printf (".pub\npublic key: %s\n", pub);
    }
    return 0;
}

/* webhook test: follows the test event until its delivery is done or the run's deadline (monotonic
 * ms) passes, and adds it to the reply as "delivery_event". 0 when delivered, 5 otherwise (the
 * output says how far it got). An "events" error that waiting cannot mend (forbidden by the
 * policy, say) ends it at once: added as "delivery_error", its exit status the run's. */
static int
webhook_test_wait (client_t *client, json_t *reply, int64_t deadline)
{
    const char *id = json_string_value (json_object_get (reply, "event"));
    int rc = 5;
    json_t *last = NULL;
    while (id) {
        int64_t left = deadline - clock_mono_ms ();
        if (left <= 0)
            break;
        json_t *args = json_pack ("{s:s}", "event", id);
        json_t *r = client_call_ex (client, "events", args, (int) (left < 2000 ? left : 2000), CLIENT_IDEMPOTENT);
        json_decref (args);
        const char *code = client_error_code (r);
        if (strcmp (code, "ok") != 0 && strcmp (code, "timeout") != 0 && strcmp (code, "unavailable") != 0
        &&  strcmp (code, "overloaded") != 0) {
            json_t *error = json_object_get (r, "error");
            rc = client_exit_code (r);
            json_object_set_new (reply, "delivery_error", json_is_object (error) ? json_incref (error)
                                 : json_pack ("{s:s, s:s, s:s}", "code", code, "message",
                                              "the \"events\" request failed without an error", "hint", ""));
            json_decref (r);
            break;
        }
        json_t *event = json_array_get (json_object_get (r, "events"), 0);
        json_t *d = json_array_get (json_object_get (event, "deliveries"), 0);
        if (event) {
            json_decref (last);
            last = json_incref (event);
        }
        const char *state = json_string_value (json_object_get (d, "state"));
        json_decref (r);
        if (state && strcmp (state, "pending") != 0) {
            rc = strcmp (state, "delivered") == 0 ? 0 : 5;
            break;
        }
        left = deadline - clock_mono_ms ();
        if (left <= 0)
            break;
        usleep ((useconds_t) (left < 200 ? left : 200) * 1000);
    }
    if (last)
        json_object_set_new (reply, "delivery_event", last);
    return rc;
}

/* Clears the access token of a reply before it is freed. */
static void
wipe_reply (json_t *reply)
{
    static const char *const secrets [] = { "access_token", "link_token", "url", NULL };
    for (int i = 0; secrets [i]; i++) {
        json_t *token = json_object_get (reply, secrets [i]);
        if (json_is_string (token))
            mem_wipe ((char *) json_string_value (token), json_string_length (token));
    }
}

int
main (int argc, char **argv)
{
    ctl_t ctl = { .timeout_ms = CTL_DEFAULT_TIMEOUT_MS };
    client_t *client = NULL;
    json_t *reply = NULL;
    const char *brokers = NULL;
    int rc = CTL_EXIT_INTERNAL;

    mem_buf_init (&ctl.brokers, CTL_MAX_BROKER_LIST);
    opts_state_init (&ctl.opts);
    parse (&ctl, argc, argv);

    if (ctl.version) {
        print_version ();
        rc = 0;
        goto out;
    }
    if (ctl.help || (ctl.cmd && !ctl.cmd->op)) {
        const command_t *topic = ctl.help_topic ? find_command (ctl.help_topic) : ctl.cmd;
        if (ctl.help_topic && !topic) {
            char shown [80], message [160];
            opts_quote (shown, sizeof shown, ctl.help_topic, 60);
            if (ctl.help_topic_hidden)
                snprintf (message, sizeof message, "unknown command: argument %d of the command line (not shown: "
                          "it may be a token)", ctl.help_topic_at);
            else
            if (has_subcommands (ctl.help_topic)) {
                char hint [200];
                snprintf (message, sizeof message, "\"%s\" needs a second word", shown);
                subcommands_hint (ctl.help_topic, hint, sizeof hint);
                rc = fail (&ctl, "bad_request", message, hint, CTL_EXIT_USAGE);
                goto out;
            }
            else
                snprintf (message, sizeof message, "unknown command \"%s\"", shown);
            rc = fail (&ctl, "bad_request", message, "run \"ferrulectl help\" for the list of commands", CTL_EXIT_USAGE);
            goto out;
        }
        if (topic && topic->op)
            print_command_help (stdout, topic);
        else
            print_help (stdout);
        rc = 0;
        goto out;
    }
    if (ctl.err [0]) {
        rc = fail (&ctl, "bad_request", ctl.err, ctl.hint, CTL_EXIT_USAGE);
        goto out;
    }
    if (!ctl.cmd && ctl.prefix [0]) {
        char message [96], hint [200];
        snprintf (message, sizeof message, "\"%s\" needs a second word", ctl.prefix);
        subcommands_hint (ctl.prefix, hint, sizeof hint);
        rc = fail (&ctl, "bad_request", message, hint, CTL_EXIT_USAGE);
        goto out;
    }
    if (!ctl.cmd) {
        rc = fail (&ctl, "bad_request", "no command given", "run \"ferrulectl help\" for the list of commands", CTL_EXIT_USAGE);
        goto out;
    }
    char err [512];
    if (opts_finish (&ctl.opts, ctl.cmd->opts, err, sizeof err) != 0) {
        char hint [128];
        snprintf (hint, sizeof hint, "run \"ferrulectl %s --help\" for its options", ctl.cmd->name);
        rc = fail (&ctl, "bad_request", err, hint, CTL_EXIT_USAGE);
        goto out;
    }
    if (ctl.cmd->local) {
        rc = keygen (&ctl);
        goto out;
    }
    /* before anything is sent: a link that cannot be used is not minted */
    if (ctl.cmd->print == output_dashboard_link && output_check_gateway_url (err, sizeof err) != 0) {
        rc = fail (&ctl, "configuration", err, "set FERRULE_GATEWAY_PUBLIC_URL to the gateway's public URL, as the "
                   "gateway has it (https://ferrule.example.com)", CTL_EXIT_CONFIGURATION);
        goto out;
    }
    rc = broker_list (&ctl, &brokers);
    if (rc != 0)
        goto out;
    curve_identity_t id;
    if (curve_identity_from_env (&id, 1, err, sizeof err) != FR_OK) {
        rc = fail (&ctl, "configuration", err,
                   "set FERRULE_CURVE_SECRET_KEY_FILE to this client's key file and FERRULE_BROKER_PUBLIC_KEY_FILE "
                   "to the brokers' public key file", CTL_EXIT_CONFIGURATION);
        goto out;
    }
    client = client_new_with (brokers, &id, err, sizeof err);
    curve_identity_clear (&id);
    if (!client) {
        rc = fail (&ctl, "internal", err, "check that the broker endpoints are valid ZeroMQ addresses", CTL_EXIT_INTERNAL);
        goto out;
    }

    /* --timeout covers the run, not each request: webhook test's wait gets what is left */
    int64_t deadline = clock_mono_ms () + ctl.timeout_ms;
    reply = client_call_ex (client, ctl.cmd->op, ctl.opts.args, ctl.timeout_ms,
                            ctl.cmd->idempotent ? CLIENT_IDEMPOTENT : 0);
    rc = client_exit_code (reply);
    int answered = rc == 0;     /* printed as one also when webhook test's delivery makes the exit 5 */
    if (rc == 0 && ctl.cmd->print == output_dashboard_link)
        output_add_dashboard_url (reply);
    if (rc == 0 && strcmp (ctl.cmd->op, "webhook_test") == 0)
        rc = webhook_test_wait (client, reply, deadline);
    if (ctl.mode.json)
        output_json (reply);
    else
    if (answered) {
        if (ctl.cmd->print (reply, &ctl.mode) != 0)
            rc = CTL_EXIT_INTERNAL;
    }
    else
        output_error (reply);
    if (ctl.mode.verbose && !ctl.mode.json && answered) {
        const char *rid = json_string_value (json_object_get (reply, "rid"));
        if (rid) {
            fputs ("request: ", stderr);
            output_safe (stderr, rid);
            fputc ('\n', stderr);
        }
    }
out:
    if (fflush (stdout) != 0 || ferror (stdout)) {
        fputs ("ferrulectl: error: could not write to standard output\n", stderr);
        rc = CTL_EXIT_INTERNAL;
    }
    wipe_reply (reply);
    json_decref (reply);
    client_destroy (&client);
    if (ctl.cmd && ctl.cmd->positional) {       /* an endpoint's URL, which may hold a secret */
        json_t *v = json_object_get (ctl.opts.args, ctl.cmd->positional);
        if (json_is_string (v))
            mem_wipe ((char *) json_string_value (v), json_string_length (v));
    }
    opts_state_clear (&ctl.opts, ctl.cmd ? ctl.cmd->opts : NULL);
    mem_buf_free (&ctl.brokers);
    return rc;
}
