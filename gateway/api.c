/* api.c - /v1/integrations/{id}/...: authenticate, call the brokers, answer their reply */
#include "api.h"
#include "auth.h"
#include "mem.h"
#include "text.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SCOPES 64

static void
bad (gw_resp_t *resp, const char *message, const char *hint)
{
    json_t *j = json_pack ("{s:b, s:{s:s, s:s, s:s}}", "ok", 0, "error", "code", "bad_request", "message", message,
                           "hint", hint);
    gw_resp_json (resp, 400, j);
    json_decref (j);
}

/* Sends op with args (taken) for the route's integration and answers the reply as it is. */
static void
forward (gw_req_t *req, gw_resp_t *resp, const char *op, json_t *args)
{
    json_object_set_new (args, "integration", json_string (req->param [0]));
    json_t *reply = gw_call (req, op, args, op [0] == 'c' || op [0] == 'd' ? GW_CALLBACK_MS : GW_CALL_MS);
    const char *code = gw_code (reply);
    unsigned status = gw_http_status (code);
    gw_resp_json (resp, status, reply);
    if (status == 503 || status == 429)
        resp->retry_after = gw_retry_after (reply, 1);
    json_decref (reply);
    json_decref (args);
}

/* An integer query parameter in [min, max]: 1 set, 0 absent, -1 refused (answered). */
static int
query_int (gw_req_t *req, gw_resp_t *resp, const char *name, long min, long max, long *out)
{
    const char *s = gw_query (req, name);
    char *end;
    if (!s)
        return 0;
    errno = 0;
    long v = strtol (s, &end, 10);
    if (!*s || *end || errno || v < min || v > max) {
        char message [160];
        snprintf (message, sizeof message, "\"%s\" must be an integer from %ld to %ld", name, min, max);
        bad (resp, message, "fix the query parameter");
        return -1;
    }
    *out = v;
    return 1;
}

/* The request's JSON object body; NULL after answering 400. An empty body is an empty object. */
static json_t *
body_object (gw_req_t *req, gw_resp_t *resp)
{
    json_error_t e;
    if (req->body_len == 0)
        return json_object ();
    json_t *j = json_loadb (req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object (j)) {
        json_decref (j);
        bad (resp, "the body must be a JSON object", "send Content-Type: application/json with an object");
        return NULL;
    }
    return j;
}

/* 1 when every field of body is one of known (NULL-terminated), else 0 after answering 400
 * naming the first other one: a misspelt optional field ("return_url") would otherwise be
 * dropped unseen, and the request carried out without it. */
static int
body_known (gw_resp_t *resp, json_t *body, const char *const *known, const char *list)
{
    const char *name;
    json_t *v;
    json_object_foreach (body, name, v) {
        size_t i = 0;
        while (known [i] && strcmp (known [i], name) != 0)
            i++;
        if (!known [i]) {
            char message [160], shown [64], hint [200];
            text_printable (shown, sizeof shown, name, strlen (name), 48);
            snprintf (message, sizeof message, "unknown field \"%s\"", shown);
            snprintf (hint, sizeof hint, "send only %s", list);
            bad (resp, message, hint);
            return 0;
        }
    }
    return 1;
}

/* Field name of a body object: 1 and *out (borrowed) when it has type, 0 when it is absent or
 * null (as the brokers take a null), -1 after answering 400 when it has another type: a value
 * the caller sent is never dropped unseen. what: the type in words; example: a field as it
 * should be sent. */
static int
body_field (gw_resp_t *resp, json_t *body, const char *name, json_type type, const char *what, const char *example,
            json_t **out)
{
    json_t *v = json_object_get (body, name);
    *out = NULL;
    if (!v || json_is_null (v))
        return 0;
    if (json_typeof (v) != type) {
        char message [160], hint [200];
        snprintf (message, sizeof message, "\"%s\" must be %s", name, what);
        snprintf (hint, sizeof hint, "send %s", example);
        bad (resp, message, hint);
        return -1;
    }
    *out = v;
    return 1;
}

void
api_token (gw_req_t *req, gw_resp_t *resp)
{
    long min_valid;
    if (!auth_check (req, resp, "token", req->param [0]))
        return;
    int r = query_int (req, resp, "min_valid", 0, 86400, &min_valid);
    if (r < 0)
        return;
    json_t *args = json_object ();
    if (r == 1)
        json_object_set_new (args, "min_valid", json_integer (min_valid));
    const char *scopes = gw_query (req, "require_scope");
    if (scopes && !text_utf8_valid (scopes)) {
        /* a scope that would be dropped from the list would not be checked */
        json_decref (args);
        bad (resp, "\"require_scope\" is not UTF-8 text", "send the scope names percent-encoded from UTF-8");
        return;
    }
    if (scopes) {
        json_t *arr = json_array ();
        char *copy = mem_strdup (scopes), *save = NULL;
        for (char *t = strtok_r (copy, " ,", &save); t; t = strtok_r (NULL, " ,", &save))
            json_array_append_new (arr, json_string (t));
        mem_free (copy);
        if (json_array_size (arr) > MAX_SCOPES) {
            json_decref (arr);
            json_decref (args);
            bad (resp, "\"require_scope\" names more than 64 scopes", "ask for fewer scopes");
            return;
        }
        json_object_set_new (args, "require_scopes", arr);
    }
    forward (req, resp, "token", args);
}

void
api_reject (gw_req_t *req, gw_resp_t *resp)
{
    if (!auth_check (req, resp, "token", req->param [0]))
        return;
    json_t *body = body_object (req, resp);
    if (!body)
        return;
    json_t *at, *mv;
    static const char *const known [] = { "access_token", "min_valid", NULL };
    if (!body_known (resp, body, known, "\"access_token\" and \"min_valid\""))
        goto out;
    int got = body_field (resp, body, "access_token", JSON_STRING, "a string", "{\"access_token\": \"...\"}", &at);
    if (got < 0)
        goto out;
    const char *rejected = json_string_value (at);
    if (!rejected || !*rejected || strlen (rejected) > 16384) {
        bad (resp, "\"access_token\" is required: the token your upstream API answered 401 to",
             "send {\"access_token\": \"...\"}");
        goto out;
    }
    got = body_field (resp, body, "min_valid", JSON_INTEGER, "an integer from 0 to 86400",
                      "\"min_valid\": 300 (seconds), or leave it out", &mv);
    if (got < 0)
        goto out;
    if (got == 1 && (json_integer_value (mv) < 0 || json_integer_value (mv) > 86400)) {
        bad (resp, "\"min_valid\" must be an integer from 0 to 86400", "send \"min_valid\": 300 (seconds), or leave it out");
        goto out;
    }
    json_t *args = json_pack ("{s:s}", "reject", rejected);
    if (mv)
        json_object_set (args, "min_valid", mv);
    forward (req, resp, "token", args);
out:
    json_decref (body);
}

void
api_status (gw_req_t *req, gw_resp_t *resp)
{
    if (auth_check (req, resp, "status", req->param [0]))
        forward (req, resp, "status", json_object ());
}

void
api_history (gw_req_t *req, gw_resp_t *resp)
{
    long limit;
    if (!auth_check (req, resp, "history", req->param [0]))
        return;
    int r = query_int (req, resp, "limit", 1, 1000, &limit);
    if (r < 0)
        return;
    json_t *args = json_object ();
    if (r == 1)
        json_object_set_new (args, "limit", json_integer (limit));
    forward (req, resp, "history", args);
}

void
api_doctor (gw_req_t *req, gw_resp_t *resp)
{
    if (auth_check (req, resp, "doctor", req->param [0]))
        forward (req, resp, "doctor", json_object ());
}

void
api_connect (gw_req_t *req, gw_resp_t *resp)
{
    if (!auth_check (req, resp, "connect", req->param [0]))
        return;
    json_t *body = body_object (req, resp);
    if (!body)
        return;
    json_t *args = json_object ();
    json_t *p, *ru, *rt, *scopes;
    static const char *const known [] = { "provider", "redirect_uri", "return_to", "scopes", NULL };
    if (!body_known (resp, body, known, "\"provider\", \"redirect_uri\", \"return_to\" and \"scopes\""))
        goto out;
    if (body_field (resp, body, "provider", JSON_STRING, "a string: a provider name from the catalog",
                    "{\"provider\": \"box\"}", &p) < 0
    ||  body_field (resp, body, "redirect_uri", JSON_STRING, "a string", "\"redirect_uri\": \"https://...\", or leave it "
                    "out for the gateway's own /oauth/callback", &ru) < 0
    ||  body_field (resp, body, "return_to", JSON_STRING, "a string", "\"return_to\": \"https://...\", or leave it out",
                    &rt) < 0
    ||  body_field (resp, body, "scopes", JSON_ARRAY, "an array of strings", "\"scopes\": [\"read\"], or leave it out "
                    "for the provider's default", &scopes) < 0)
        goto out;
    const char *provider = json_string_value (p), *redirect = json_string_value (ru), *return_to = json_string_value (rt);
    if (!provider) {
        bad (resp, "\"provider\" is required: a provider name from the catalog", "send {\"provider\": \"box\"}");
        goto out;
    }
    size_t i;
    json_t *scope;
    json_array_foreach (scopes, i, scope)
        if (!json_is_string (scope) || i >= MAX_SCOPES) {
            bad (resp, "\"scopes\" must be an array of at most 64 strings", "send \"scopes\": [\"read\"], or leave it out "
                 "for the provider's default");
            goto out;
        }
    if (return_to && !gw_return_to_allowed (req->gw, return_to)) {
        bad (resp, "\"return_to\" is not on this gateway's allow-list of origins",
             "use a page of an allowed origin (FERRULE_GATEWAY_RETURN_TO_ORIGINS)");
        goto out;
    }
    char callback [GW_ORIGIN_MAX + 64];
    snprintf (callback, sizeof callback, "%s/oauth/callback", req->gw->cfg.public_url);
    json_object_set_new (args, "provider", json_string (provider));
    json_object_set_new (args, "redirect_uri", json_string (redirect ? redirect : callback));
    if (return_to)
        json_object_set_new (args, "return_to", json_string (return_to));
    if (scopes)
        json_object_set (args, "scopes", scopes);
    forward (req, resp, "connect", args);
    args = NULL;
out:
    json_decref (args);
    json_decref (body);
}

void
api_disconnect (gw_req_t *req, gw_resp_t *resp)
{
    if (auth_check (req, resp, "disconnect", req->param [0]))
        forward (req, resp, "disconnect", json_object ());
}
