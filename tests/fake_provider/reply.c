/* reply.c - constructors for HTTP answers */
#include "reply.h"
#include "mem.h"
#include <string.h>

static reply_t *
reply_new (reply_kind_t kind, unsigned status)
{
    reply_t *reply = mem_alloc (sizeof *reply);
    reply->kind = kind;
    reply->status = status;
    reply->retry_after = -1;
    reply->content_type = "application/json";
    return reply;
}

reply_t *
reply_json_take (unsigned status, json_t *body)
{
    reply_t *reply = reply_new (REPLY_BODY, status);
    reply->body = json_dumps (body, JSON_COMPACT);
    reply->body_len = reply->body ? strlen (reply->body) : 0;
    json_decref (body);
    return reply;
}

reply_t *
reply_error (unsigned status, const char *error, const char *description)
{
    json_t *body = json_pack ("{s:s}", "error", error);
    if (description)
        json_object_set_new (body, "error_description", json_string (description));
    return reply_json_take (status, body);
}

reply_t *
reply_text (unsigned status, const char *content_type, const char *body, size_t len)
{
    reply_t *reply = reply_new (REPLY_BODY, status);
    reply->content_type = content_type;
    reply->body = mem_strndup (body, len);
    reply->body_len = len;
    return reply;
}

reply_t *
reply_redirect (const char *location)
{
    reply_t *reply = reply_new (REPLY_BODY, 302);
    reply->content_type = "text/plain";
    reply->body = mem_strdup ("");
    reply->location = mem_strdup (location);
    return reply;
}

reply_t *
reply_special (reply_kind_t kind)
{
    return reply_new (kind, 200);
}

void
reply_destroy (reply_t **p)
{
    if (!p || !*p)
        return;
    mem_free_secret (&(*p)->body);        /* bodies carry tokens */
    mem_free_secret (&(*p)->location);    /* and so do redirects, with codes */
    mem_free ((*p)->www_authenticate);
    mem_free (*p);
    *p = NULL;
}
