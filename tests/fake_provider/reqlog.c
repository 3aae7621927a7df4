/* reqlog.c - fixed ring of request records */
#include "reqlog.h"
#include "mem.h"
#include <string.h>

typedef struct {
    char   *provider, *path, *method, *grant_type, *client_auth, *redirect_uri, *scope,
           *code_challenge_method;
    bool    has_code_verifier;
    long    refresh_token_chain;
    int64_t at_ms;
} record_t;

struct reqlog_t {
    record_t ring [REQLOG_KEEP];
    size_t   next;                    /* slot the next record goes to */
    size_t   count;
};

static char *
copy (const char *s)
{
    return s ? mem_strndup (s, strnlen (s, REQLOG_FIELD_MAX)) : NULL;
}

static void
record_clear (record_t *r)
{
    mem_free (r->provider);
    mem_free (r->path);
    mem_free (r->method);
    mem_free (r->grant_type);
    mem_free (r->client_auth);
    mem_free (r->redirect_uri);
    mem_free (r->scope);
    mem_free (r->code_challenge_method);
    memset (r, 0, sizeof *r);
}

reqlog_t *
reqlog_new (void)
{
    return mem_alloc (sizeof (reqlog_t));
}

void
reqlog_destroy (reqlog_t **p)
{
    if (!p || !*p)
        return;
    for (size_t i = 0; i < REQLOG_KEEP; i++)
        record_clear (&(*p)->ring [i]);
    mem_free (*p);
    *p = NULL;
}

void
reqlog_add (reqlog_t *log, const reqlog_entry_t *entry)
{
    record_t *r = &log->ring [log->next];
    record_clear (r);
    r->provider = copy (entry->provider);
    r->path = copy (entry->path);
    r->method = copy (entry->method);
    r->grant_type = copy (entry->grant_type);
    r->client_auth = copy (entry->client_auth);
    r->redirect_uri = copy (entry->redirect_uri);
    r->scope = copy (entry->scope);
    r->code_challenge_method = copy (entry->code_challenge_method);
    r->has_code_verifier = entry->has_code_verifier;
    r->refresh_token_chain = entry->refresh_token_chain;
    r->at_ms = entry->at_ms;
    log->next = (log->next + 1) % REQLOG_KEEP;
    if (log->count < REQLOG_KEEP)
        log->count++;
}

static json_t *
string_or_null (const char *s)
{
    return s ? json_string (s) : json_null ();
}

static json_t *
record_json (const record_t *r)
{
    json_t *o = json_object ();
    json_object_set_new (o, "provider", string_or_null (r->provider));
    json_object_set_new (o, "path", string_or_null (r->path));
    json_object_set_new (o, "method", string_or_null (r->method));
    json_object_set_new (o, "grant_type", string_or_null (r->grant_type));
    json_object_set_new (o, "client_auth", string_or_null (r->client_auth));
    json_object_set_new (o, "redirect_uri", string_or_null (r->redirect_uri));
    json_object_set_new (o, "scope", string_or_null (r->scope));
    json_object_set_new (o, "code_challenge_method", string_or_null (r->code_challenge_method));
    json_object_set_new (o, "has_code_verifier", json_boolean (r->has_code_verifier));
    json_object_set_new (o, "refresh_token_chain",
                         r->refresh_token_chain ? json_integer (r->refresh_token_chain) : json_null ());
    json_object_set_new (o, "at_ms", json_integer (r->at_ms));
    return o;
}

json_t *
reqlog_json (const reqlog_t *log, const char *provider, size_t limit)
{
    json_t *list = json_array ();
    size_t picked = 0, start;

    /* Walk newest to oldest to find where the last `limit` matching records begin. */
    for (start = 0; start < log->count && picked < limit; start++) {
        const record_t *r = &log->ring [(log->next + REQLOG_KEEP - 1 - start) % REQLOG_KEEP];
        if (!provider || (r->provider && strcmp (r->provider, provider) == 0))
            picked++;
    }
    for (size_t i = start; i > 0; i--) {
        const record_t *r = &log->ring [(log->next + REQLOG_KEEP - i) % REQLOG_KEEP];
        if (!provider || (r->provider && strcmp (r->provider, provider) == 0))
            json_array_append_new (list, record_json (r));
    }
    return json_pack ("{s:o}", "requests", list);
}
