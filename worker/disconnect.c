/* disconnect.c - disconnect: one statement destroys the stored tokens and hands the sealed
 * refresh token back; the RFC 7009 revocation at the provider follows, and its failure is a
 * warning, never an error (the tokens are gone here either way) */
#include "disconnect.h"
#include "calls.h"
#include "reply.h"
#include "store_connect.h"
#include "log.h"
#include "mem.h"
#include "oauth.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

#define MAX_DESCRIPTION     200

/* --- disconnect --------------------------------------------------------------------------- */

/* Adds a chain row about the revocation (best effort). */
static void
note_revocation (worker_t *w, const call_t *c, const char *outcome, const char *detail)
{
    char err [512];
    if (store_chain_note (w->store, c->id, outcome, detail, err, sizeof err) != FR_OK)
        log_warning (c->id, c->job.rid, "could not record the revocation: %s", err);
}

static void
disconnect_finish (worker_t *w, const job_t *job, const char *id, const reply_warnings_t *ws)
{
    store_row_t row;
    store_extra_t x;
    char err [512];
    fr_status_t st = store_load_full (w->store, id, &row, &x, err, sizeof err);
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        return;
    }
    reply_with_integration (w, job, FR_OK, NULL, NULL, &row, &x, ws, -1);
    store_row_clear (&row);
    store_extra_clear (&x);
}

static void
on_revoke (void *arg, const http_response_t *resp)
{
    call_t *c = arg;
    worker_t *w = c->w;
    reply_warnings_t ws = { .count = 0 };
    char detail [400];

    if (resp->status >= 200 && resp->status <= 299) {
        snprintf (detail, sizeof detail, "provider \"%s\" revoked the %s (HTTP %ld)", c->provider->name,
                  c->token_kind, resp->status);
        note_revocation (w, c, "revoked", detail);
        log_info (c->id, c->job.rid, "%s", detail);
    }
    else {
        oauth_result_t res;
        char desc [MAX_DESCRIPTION + 1] = "";
        memset (&res, 0, sizeof res);
        if (resp->status == 0)
            snprintf (detail, sizeof detail, "%s", resp->error ? resp->error : "no answer");
        else {
            oauth_parse_token_response (c->provider, resp->status, resp->retry_after, resp->body,
                                        resp->too_large ? 0 : resp->body_len, &res);
            text_printable (desc, sizeof desc, res.error_description, (size_t) -1, MAX_DESCRIPTION);
            snprintf (detail, sizeof detail, "HTTP %ld%s%s%s%s", resp->status, res.error ? " " : "",
                      res.error ? res.error : "", desc [0] ? ": " : "", desc);
        }
        oauth_result_clear (&res);
        reply_warn (&ws, "revocation_failed",
                  "the stored tokens are destroyed; to be sure the grant is gone, remove the app's access in the "
                  "account's settings at the provider",
                  "provider \"%s\" did not confirm the revocation of the %s of integration \"%s\" (%s)",
                  c->provider->name, c->token_kind, c->id, detail);
        note_revocation (w, c, "revocation_failed", ws.item [0].message);
        log_warning (c->id, c->job.rid, "%s", ws.item [0].message);
    }
    disconnect_finish (w, &c->job, c->id, &ws);
    calls_free (w, c);
}

void
disconnect_run (worker_t *w, job_t *job, const char *id)
{
    fr_status_t st;
    char err [512];
    char *token = NULL;
    oauth_request_t *req = NULL;
    reply_warnings_t ws = { .count = 0 };
    store_disconnected_t d;
    if ((st = store_disconnect (w->store, id, &d, err, sizeof err)) != FR_OK) {
        reply_store_error (w, job, st, err);
        return;
    }
    cache_drop (w->cache, id);
    if (strcmp (d.prev_status, "disconnected") == 0) {
        disconnect_finish (w, job, id, NULL);          /* nothing left to revoke */
        goto out;
    }
    log_info (id, job->rid, "disconnected (was %s); stored tokens destroyed", d.prev_status);

    const catalog_provider_t *p = catalog_find (w->catalog, d.provider);
    const unsigned char *ct = d.refresh_ct ? d.refresh_ct : d.access_ct;
    size_t ct_len = d.refresh_ct ? d.refresh_ct_len : d.access_ct_len;
    const char *kind = d.refresh_ct ? "refresh_token" : "access_token";
    const char *hint = "remove the app's access in the account's settings at the provider if the grant must end there too";
    if (!ct)
        reply_warn (&ws, "not_revoked", hint, "integration \"%s\" held no token to revoke", id);
    else
    if (!p || !p->revocation_url)
        reply_warn (&ws, "not_revoked", hint, "provider \"%s\" has no token revocation endpoint (RFC 7009) in the "
                    "catalog: the tokens are destroyed here, but the grant stays valid at the provider", d.provider);
    else
    if (catalog_check_credentials (p, err, sizeof err) != FR_OK)
        reply_warn (&ws, "not_revoked", hint, "the tokens were not revoked at provider \"%s\": %s", p->name, err);
    else {
        st = crypto_open (w->keyring, d.key_id, id, kind, ct, ct_len, &token, err, sizeof err);
        if (st == FR_OK)
            req = oauth_revocation_request_new (p, token, kind);
        if (!req)
            reply_warn (&ws, "not_revoked", hint, "the tokens were not revoked at provider \"%s\": %s", p->name,
                        st != FR_OK ? err : "the revocation request could not be built");
        else {
            call_t *c = calls_new (w, CALLS_REVOKE, job, id, p);
            c->token_kind = kind;
            if (http_post (w->http, req->url, req->body, req->authorization, on_revoke, c) == 0)
                goto out;                  /* the reply follows the provider's answer */
            calls_free (w, c);
            reply_warn (&ws, "not_revoked", hint, "could not start the revocation call to provider \"%s\"", p->name);
        }
    }
    log_warning (id, job->rid, "%s", ws.item [0].message);
    disconnect_finish (w, job, id, &ws);
out:
    oauth_request_destroy (&req);
    mem_free_secret (&token);
    store_disconnected_clear (&d);
}
