/* flow.c - the browser binding cookie of dashboard connects */
#include "flow.h"
#include "crypto.h"
#include "mem.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

#define FLOW_BYTES 32

const char *
flow_cookie_name (const gw_t *gw)
{
    return gw->secure ? FLOW_COOKIE_SECURE : FLOW_COOKIE;
}

int
flow_binding_valid (const char *v)
{
    return v && strlen (v) == FLOW_BINDING_LEN && text_base64url (v, FLOW_BINDING_LEN);
}

char *
flow_cookie_header (const gw_t *gw, const char *value)
{
    size_t len = strlen (value) + 160;
    char *cookie = mem_alloc (len);
    /* never a Domain: a "__Host-" cookie must not have one, and without it no other host gets it */
    snprintf (cookie, len, "%s=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%d%s", flow_cookie_name (gw), value,
              FLOW_MAX_AGE_S, gw->secure ? "; Secure" : "");
    return cookie;
}

const char *
flow_binding (const gw_req_t *req)
{
    const char *v = gw_cookie (req, flow_cookie_name (req->gw));
    return flow_binding_valid (v) ? v : NULL;
}

int
flow_bind (const gw_req_t *req, char out [FLOW_BINDING_LEN + 1], char **set_cookie)
{
    const char *have = flow_binding (req);
    *set_cookie = NULL;
    if (have) {
        /* sent again, for a day from now: a cookie set a day ago would otherwise end while its
           browser is at the provider, and the callback be taken for another browser's */
        memcpy (out, have, FLOW_BINDING_LEN + 1);
        *set_cookie = flow_cookie_header (req->gw, have);
        return 0;
    }
    char *fresh = crypto_random_token (FLOW_BYTES);
    if (!fresh || !flow_binding_valid (fresh)) {
        mem_free_secret (&fresh);
        out [0] = '\0';
        return -1;
    }
    memcpy (out, fresh, FLOW_BINDING_LEN + 1);
    *set_cookie = flow_cookie_header (req->gw, fresh);
    mem_free_secret (&fresh);
    return 0;
}
