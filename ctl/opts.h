/* opts.h - ferrulectl's option tables: one spec per option, parsed and checked into request arguments */
#ifndef FERRULE_CTL_OPTS_H
#define FERRULE_CTL_OPTS_H
#include <stddef.h>
#include <jansson.h>

typedef enum {
    OPT_FLAG,           /* no value; sets the key to true */
    OPT_STRING,         /* a string, checked by spec->check */
    OPT_INT,            /* an integer within [min, max] */
    OPT_WORDS,          /* words split on spaces and commas, as an array of strings */
    OPT_SECRET,         /* a secret given on the command line (wiped from argv once read) */
    OPT_SECRET_FILE,    /* a secret read from a file, or from standard input for "-" */
    OPT_LIST,           /* repeatable: each value's words (spaces, commas) appended to one array */
    OPT_CALLBACK_URL,   /* an OAuth redirect URL: its query's state, code, error and error_description
                           fill those keys (key names the one that must be present: "state") */
    OPT_CALLBACK_URL_FILE /* the same URL read from a file, or from standard input for "-" */
} opt_kind_t;

/* 0 when value is acceptable, else -1 with a message naming the option. */
typedef int (*opts_check_fn) (const char *option, const char *value, char *err, size_t errlen);

typedef struct {
    const char *name;       /* long option without the dashes: "integration" */
    const char *metavar;    /* "ID"; NULL for OPT_FLAG */
    opt_kind_t kind;
    const char *key;        /* request key it fills; several options may fill one key */
    int required;           /* the key must be filled, by this option or another */
    const char *needs;      /* another key that must be filled when this one is, or NULL */
    const char *one_of;     /* options sharing this label: at least one of them must be given */
    long min, max;          /* OPT_INT bounds */
    opts_check_fn check;    /* OPT_STRING check, or NULL */
    const char *help;
} opt_spec_t;

/* The last entry of a table (designated, so that no compiler sees fields left out). */
#define OPTS_END { .name = NULL }

#define OPTS_MAX_KEYS 32      /* request keys one command line can fill */

/* Parse state for one command line: which keys came from which option. */
typedef struct {
    json_t *args;               /* the request arguments being filled */
    const char *keys [OPTS_MAX_KEYS];
    const opt_spec_t *from [OPTS_MAX_KEYS];   /* the option that filled keys[i] */
    int count;
    int stdin_used;             /* "-" may be read once */
} opts_state_t;

void opts_state_init (opts_state_t *s);
/* Wipes secret values and frees the arguments. */
void opts_state_clear (opts_state_t *s, const opt_spec_t *specs);

/* The spec named name in a table ending with OPTS_END, or NULL. */
const opt_spec_t *opts_find (const opt_spec_t *specs, const char *name);
/* Applies one option; value is NULL for flags and may be wiped (secrets). 0, or -1 and err. */
int opts_apply (opts_state_t *s, const opt_spec_t *spec, char *value, char *err, size_t errlen);
/* Moves the options applied so far onto specs, the table of a command that a later word chose
 * ("events ... replay"). NULL when specs takes them all, else the first one it does not take. */
const opt_spec_t *opts_rebind (opts_state_t *s, const opt_spec_t *specs);
/* Checks required, paired and one-of options once the command line is read. 0, or -1 and err. */
int opts_finish (opts_state_t *s, const opt_spec_t *specs, char *err, size_t errlen);
/* "--integration ID [--min-valid S]" for a usage line. */
void opts_usage (const opt_spec_t *specs, char *buf, size_t len);

/* strtol / strtod with the whole string, the range and a message naming the option. */
int opts_parse_long (const char *option, const char *value, long min, long max, long *out,
                     char *err, size_t errlen);
int opts_parse_seconds (const char *option, const char *value, double min, double max, int *ms,
                        char *err, size_t errlen);

/* Checks for OPT_STRING values. */
int opts_check_integration (const char *option, const char *value, char *err, size_t errlen);
/* An integration id that ends with one of : . _ - (a workspace, common/ident.h). */
int opts_check_workspace (const char *option, const char *value, char *err, size_t errlen);
int opts_check_name (const char *option, const char *value, char *err, size_t errlen);
/* An absolute http:// or https:// URI of at most 2048 bytes (a redirect URI). */
int opts_check_uri (const char *option, const char *value, char *err, size_t errlen);
/* An absolute https:// URL with a host and no credentials, of at most 255 printable bytes (the
 * base URL of a provider's API: what the workers accept), or http://127.0.0.1, which the workers
 * take for a provider on their own machine only. */
int opts_check_api_base (const char *option, const char *value, char *err, size_t errlen);

/* Copies s for a message: printable ASCII only, cut at max bytes with "...". */
void opts_quote (char *dst, size_t dstlen, const char *s, size_t max);
/* The same for an option as typed ("--name=value"): its name only, never the value. */
void opts_quote_option (char *dst, size_t dstlen, const char *arg, size_t max);
#endif
