/* disconnect.c - disconnect: one statement destroys the stored tokens and hands the sealed
 * refresh token back; the RFC 7009 revocation at the provider follows, tried again a few times
 * after a transient failure, and its failure is a warning, never an error (the tokens are gone
 * here either way). Also the background revocation of a refresh token that a refresh or a
 * connect obtained while the integration was being disconnected. */
#include "disconnect.h"
#include "calls.h"
#include "dbwait.h"
#include "journal.h"
#include "loads.h"
#include "reply.h"
#include "store_connect.h"
#include "clock.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "oauth.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

#define MAX_DESCRIPTION     200

/* --- disconnect --------------------------------------------------------------------------- */

/* A revocation's chain row waiting to be written; the reply follows the first try, and reads the
 * integration back with it. A first try the database cannot take (or that finds no connection
 * free before the request's deadline) does not turn the disconnect, which is done, into an error:
 * the answer is the integration as the disconnect left it, with the revocation's outcome. The row
 * is tried again once the database is back, a few times. */
#define NOTE_TRIES 5

typedef struct {
    worker_t *w;
    job_t job;
    char id [IDENT_MAX + 1];
    char outcome [32];
    char detail [600];
    reply_warnings_t ws;
    int tries;
    int replied;
    store_row_t row;                    /* from the call (row.id NULL: none) */
    store_extra_t x;
} note_wait_t;

static void
note_free (note_wait_t *nw)
{
    store_row_clear (&nw->row);
    store_extra_clear (&nw->x);
    mem_free (nw);
}

static void note_start (worker_t *w, store_t *store, void *arg);

static void
noted (void *arg, fr_status_t st, const store_row_t *row, const store_extra_t *x, const char *err)
{
    note_wait_t *nw = arg;
    int again = st == FR_DATABASE_UNAVAILABLE && nw->tries < NOTE_TRIES;
    if (st != FR_OK)
        log_warning (nw->id, nw->job.rid, "could not record the revocation%s: %s",
                     again ? dbwait_retry_when (nw->w) : "", err);
    if (!nw->replied) {
        if (st == FR_OK)
            reply_with_integration (nw->w, &nw->job, FR_OK, NULL, NULL, row, x, &nw->ws, -1);
        else
        if (nw->row.id)
            reply_with_integration (nw->w, &nw->job, FR_OK, NULL, NULL, &nw->row, &nw->x, &nw->ws, -1);
        else
            reply_store_error (nw->w, &nw->job, st, err);
    }
    nw->replied = 1;
    if (again)
        dbwait_add (nw->w, note_start, nw, -1);
    else
        note_free (nw);
}

/* Never lost to its deadline: what the provider said is history, late or not (a first try whose
 * deadline passed before a connection was free is queued again without one). */
static void
note_start (worker_t *w, store_t *store, void *arg)
{
    note_wait_t *nw = arg;
    char err [256];
    fr_status_t st;
    if (dbwait_requeue_late (w, store, note_start, nw)) {
        nw->replied = 1;
        return;
    }
    if (!store) {
        nw->tries = NOTE_TRIES;
        noted (nw, FR_UNAVAILABLE, NULL, NULL, "the worker stopped before the revocation was recorded");
        return;
    }
    nw->tries++;
    if ((st = store_chain_note_start (store, nw->id, nw->outcome, nw->detail, noted, nw, err, sizeof err)) != FR_OK)
        noted (nw, st, NULL, NULL, err);
}

/* Adds a chain row about the revocation, then replies with the integration and ws. */
static void
note_revocation (worker_t *w, call_t *c, const char *outcome, const char *detail, const reply_warnings_t *ws)
{
    note_wait_t *nw = mem_alloc (sizeof *nw);
    nw->w = w;
    nw->job = c->job;
    snprintf (nw->id, sizeof nw->id, "%s", c->id);
    snprintf (nw->outcome, sizeof nw->outcome, "%s", outcome);
    snprintf (nw->detail, sizeof nw->detail, "%s", detail);
    nw->ws = *ws;
    nw->replied = c->job.link < 0;     /* a background revocation: nobody to answer */
    nw->row = c->row;                  /* taken over from the call */
    nw->x = c->x;
    memset (&c->row, 0, sizeof c->row);
    memset (&c->x, 0, sizeof c->x);
    /* with someone to answer, the first try starts even on a connection that is down (and fails
     * at once, answered from the kept row): the answer does not wait for the database */
    dbwait_add (w, note_start, nw, nw->replied ? -1 : c->job.deadline_ms);
}

/* --- the revocation call, tried again after a transient failure ---------------------------- */

#define REVOKE_TRIES            3       /* attempts in all; the user waits for the outcome */
#define REVOKE_BACKOFF_MS       500     /* before the second attempt; doubles */
#define REVOKE_MAX_RETRY_AFTER  5       /* seconds: a longer Retry-After is not waited for */
#define REVOKE_REPLY_MARGIN_MS  1000    /* a new attempt starts at least this long before the deadline */
#define ORPHAN_BUDGET_MS        30000   /* a background revocation's attempts end within this */

/* Texts of the background revocation (disconnect_revoke_orphan). */
#define ORPHAN_WHAT "refresh token that %s obtained while the integration was being disconnected"
#define ORPHAN_HINT "the integration is disconnected here; to end the grant at the provider too, remove the app's " \
                    "access in the provider's console (the account's connected apps)"

/* ORPHAN_WHAT for by ("a refresh", "a connect"), in buf. */
static const char *
orphan_what (const char *by, char *buf, size_t len)
{
    snprintf (buf, len, ORPHAN_WHAT, by);
    return buf;
}

static void on_revoke (void *arg, const http_response_t *resp);

static int
revoke_send (worker_t *w, call_t *c)
{
    c->attempts++;
    /* revoking a token twice does no harm (RFC 7009): a kept connection will do */
    return http_post (w->http, c->request->url, c->request->body, c->request->authorization, HTTP_IDEMPOTENT,
                      on_revoke, c);
}

/* How long to wait before the next attempt, or -1 for none: the failure was not transient, the
 * tries are spent, the provider asks for a longer wait than is worth it, the reply's deadline is
 * too near, or the worker is leaving. */
static int64_t
retry_delay (const worker_t *w, const call_t *c, const oauth_result_t *res, int64_t now)
{
    if (res->kind != OAUTH_TRANSIENT || c->attempts >= REVOKE_TRIES || w->draining
    ||  res->retry_after > REVOKE_MAX_RETRY_AFTER)
        return -1;
    int64_t delay = (int64_t) REVOKE_BACKOFF_MS << (c->attempts - 1);
    if (res->retry_after * 1000 > delay)
        delay = res->retry_after * 1000;
    if (now + delay + REVOKE_REPLY_MARGIN_MS > c->job.deadline_ms)
        return -1;
    return delay;
}

/* An orphan's journal record, once its revocation has an outcome: settled. */
static void
orphan_settle (worker_t *w, call_t *c)
{
    if (c->journal_seq > 0)
        journal_done (w->journal, c->journal_seq);
    c->journal_seq = 0;
}

/* The outcome, as a chain row and the reply; frees the call. status: the last answer's HTTP
 * status (0: none). */
static void
revoke_report (worker_t *w, call_t *c, const oauth_result_t *res, long status)
{
    reply_warnings_t ws = { .count = 0 };
    char detail [640], what [128];
    char tries [48] = "";

    if (c->orphan && c->journal_seq > 0 && res->kind == OAUTH_TRANSIENT && w->draining) {
        /* not a failure yet: the record stays in the journal, and the next start, replaying it,
         * finds the row disconnected and revokes the token then */
        log_info (c->id, c->job.rid, "the worker is stopping: the %s is revoked at its next start",
                  orphan_what (c->orphan_by, what, sizeof what));
        calls_free (w, c);
        return;
    }
    if (c->orphan)
        orphan_settle (w, c);
    if (c->attempts > 1)
        snprintf (tries, sizeof tries, " after %d attempts", c->attempts);
    metrics_inc (res->kind == OAUTH_OK ? w->m.revoked : w->m.revocation_failed);
    if (res->kind == OAUTH_OK && res->already_invalid) {
        char desc [MAX_DESCRIPTION + 4];
        text_printable (desc, sizeof desc, res->error_description, (size_t) -1, MAX_DESCRIPTION);
        snprintf (detail, sizeof detail, "provider \"%s\" says the %s was already revoked or expired (HTTP %ld "
                  "invalid_token%s%s%s): nothing left to revoke", c->provider->name,
                  c->orphan ? orphan_what (c->orphan_by, what, sizeof what) : c->token_kind, status,
                  desc [0] ? ": " : "", desc, tries);
        log_info (c->id, c->job.rid, "%s", detail);
        note_revocation (w, c, "revoked", detail, &ws);
    }
    else if (res->kind == OAUTH_OK) {
        snprintf (detail, sizeof detail, "provider \"%s\" revoked the %s (HTTP %ld%s)", c->provider->name,
                  c->orphan ? orphan_what (c->orphan_by, what, sizeof what) : c->token_kind, status, tries);
        log_info (c->id, c->job.rid, "%s", detail);
        note_revocation (w, c, "revoked", detail, &ws);
    }
    else {
        char desc [MAX_DESCRIPTION + 4];
        text_printable (desc, sizeof desc, res->error_description, (size_t) -1, MAX_DESCRIPTION);
        if (res->error)         /* the provider's code: sanitized to printable ASCII, never a token */
            snprintf (detail, sizeof detail, "HTTP %ld with error \"%s\"%s%s%s", status, res->error,
                      desc [0] ? ": " : "", desc, tries);
        else
            snprintf (detail, sizeof detail, "%s%s", res->detail, tries);
        if (c->orphan)
            reply_warn (&ws, "revocation_failed", NULL, ORPHAN_HINT,
                        "provider \"%s\" did not confirm the revocation of the refresh token that %s of "
                        "integration \"%s\" obtained while it was being disconnected; the grant may stay valid at "
                        "the provider (%s)", c->provider->name, c->orphan_by, c->id, detail);
        else
            reply_warn (&ws, "revocation_failed", NULL,
                        "the stored tokens are destroyed here; to end the grant at the provider too, remove the app's "
                        "access in the provider's console (the account's connected apps)",
                        "provider \"%s\" did not confirm the revocation of the %s of integration \"%s\" (%s)",
                        c->provider->name, c->token_kind, c->id, detail);
        log_warning (c->id, c->job.rid, "%s", ws.item [0].message);
        note_revocation (w, c, "revocation_failed", ws.item [0].message, &ws);
    }
    calls_free (w, c);
}

static void
on_revoke (void *arg, const http_response_t *resp)
{
    call_t *c = arg;
    worker_t *w = c->w;
    oauth_result_t res;
    int64_t now = clock_mono_ms ();

    oauth_read_revocation (c->provider, resp, w->cfg.max_provider_body, &res);
    oauth_result_withhold (&res, c->sent, "token");
    oauth_result_withhold (&res, c->provider ? c->provider->client_secret : NULL, "client secret");
    int64_t delay = retry_delay (w, c, &res, now);
    if (delay >= 0) {
        /* disconnect_tick sends it again: the loop does not wait */
        log_info (c->id, c->job.rid, "provider \"%s\" did not revoke the %s (attempt %d of %d: %s); trying again "
                  "in %lld ms", c->provider->name, c->token_kind, c->attempts, REVOKE_TRIES, res.detail,
                  (long long) delay);
        c->due_ms = now + delay;
    }
    else
        revoke_report (w, c, &res, resp->status);
    oauth_result_clear (&res);
}

void
disconnect_tick (worker_t *w, int64_t now)
{
    call_t *next;
    for (call_t *c = w->calls; c; c = next) {
        next = c->next;
        if (c->kind != CALLS_REVOKE || c->due_ms == 0 || c->due_ms > now)
            continue;
        c->due_ms = 0;
        if (revoke_send (w, c) != 0) {
            oauth_result_t res;
            memset (&res, 0, sizeof res);
            res.kind = OAUTH_TRANSIENT;
            snprintf (res.detail, sizeof res.detail, "the call could not be started again");
            revoke_report (w, c, &res, 0);
        }
    }
}

int64_t
disconnect_next_due (const worker_t *w)
{
    int64_t due = -1;
    for (const call_t *c = w->calls; c; c = c->next)
        if (c->kind == CALLS_REVOKE && c->due_ms != 0 && (due < 0 || c->due_ms < due))
            due = c->due_ms;
    return due;
}

/* No request waits: the job only carries the refresh's request id for the log, and a deadline
 * that bounds the attempts. */
void
disconnect_revoke_orphan (worker_t *w, const char *id, const catalog_provider_t *p, int32_t key_id,
                          const unsigned char *refresh_ct, size_t refresh_ct_len, const char *rid,
                          int64_t journal_seq, const char *by)
{
    char err [512], what [128];
    char *token = NULL;
    oauth_request_t *req = NULL;
    reply_warnings_t ws = { .count = 0 };
    job_t job;
    /* every way out but a call under way settles the record: nothing a later start could do
     * differs (no endpoint, no credentials, a token that does not open) */
    if (!p || !refresh_ct) {
        if (journal_seq > 0)
            journal_done (w->journal, journal_seq);
        return;
    }
    memset (&job, 0, sizeof job);
    job.link = -1;                       /* links_send and reply_count ignore it */
    job.deadline_ms = clock_mono_ms () + ORPHAN_BUDGET_MS;
    if (rid)
        snprintf (job.rid, sizeof job.rid, "%s", rid);
    if (!p->revocation_url) {
        /* the disconnect's reply warned that the grant stays valid at this provider */
        log_warning (id, job.rid, "provider \"%s\" has no token revocation endpoint: the %s stays valid there",
                     p->name, orphan_what (by, what, sizeof what));
        if (journal_seq > 0)
            journal_done (w->journal, journal_seq);
        return;
    }
    if (catalog_check_credentials (p, err, sizeof err) != FR_OK) {
        log_warning (id, job.rid, "the %s was not revoked at provider \"%s\": %s", orphan_what (by, what, sizeof what),
                     p->name, err);
        if (journal_seq > 0)
            journal_done (w->journal, journal_seq);
        return;
    }
    call_t *c = calls_new (w, CALLS_REVOKE, &job, id, p);
    c->token_kind = "refresh_token";
    c->orphan = 1;
    c->orphan_by = by;
    c->journal_seq = journal_seq;
    fr_status_t st = crypto_open (w->keyring, key_id, id, "refresh_token", refresh_ct, refresh_ct_len, &token,
                                  err, sizeof err);
    if (st == FR_OK && !(req = oauth_revocation_request_new (p, token, "refresh_token")))
        snprintf (err, sizeof err, "the revocation request could not be built");
    if (req) {
        c->request = req;                /* the call's now: kept for a second attempt */
        req = NULL;
        c->sent = token;
        token = NULL;
        log_info (id, job.rid, "revoking the %s at provider \"%s\"", orphan_what (by, what, sizeof what), p->name);
        if (revoke_send (w, c) == 0)
            goto out;                    /* the chain row follows the provider's answer */
        snprintf (err, sizeof err, "the revocation call could not be started");
    }
    reply_warn (&ws, "revocation_failed", NULL, ORPHAN_HINT, "the refresh token that %s of integration \"%s\" "
                "obtained while it was being disconnected was not revoked at provider \"%s\": %s", by, id, p->name,
                err);
    log_warning (id, job.rid, "%s", ws.item [0].message);
    metrics_inc (w->m.revocation_failed);
    note_revocation (w, c, "revocation_failed", ws.item [0].message, &ws);
    orphan_settle (w, c);
    calls_free (w, c);
out:
    oauth_request_destroy (&req);
    mem_free_secret (&token);
}

/* The tokens are destroyed: revoke the one taken out at the provider, or say why not (also when
 * the revocation would end a grant another integration of the workspace may hold). */
static void
disconnected (void *arg, fr_status_t st, const store_disconnected_t *dp, const store_row_t *row,
              const store_extra_t *x, const char *serr)
{
    dbwait_about_t *dw = arg;
    worker_t *w = dw->req.w;
    const job_t *job = &dw->req.job;
    const char *id = dw->id;
    char err [512];
    char *token = NULL;
    oauth_request_t *req = NULL;
    reply_warnings_t ws = { .count = 0 };
    if (st != FR_OK) {
        reply_store_error (w, job, st, serr);
        goto out;
    }
    const store_disconnected_t d = *dp;
    cache_drop (w->cache, id);
    loads_invalidate (w, id);            /* a read in flight may predate it: our own change is not notified to us */
    if (strcmp (d.prev_status, "disconnected") == 0) {
        reply_with_integration (w, job, FR_OK, NULL, NULL, row, x, NULL, -1);     /* nothing left to revoke */
        goto out;
    }
    log_info (id, job->rid, "disconnected (was %s); stored tokens destroyed", d.prev_status);

    const catalog_provider_t *p = catalog_find (w->catalog, d.provider);
    const unsigned char *ct = d.refresh_ct ? d.refresh_ct : d.access_ct;
    size_t ct_len = d.refresh_ct ? d.refresh_ct_len : d.access_ct_len;
    const char *kind = d.refresh_ct ? "refresh_token" : "access_token";
    const char *hint = "remove the app's access in the account's settings at the provider if the grant must end there too";
    if (!ct)
        reply_warn (&ws, "not_revoked", "no_token", hint, "integration \"%s\" held no token to revoke", id);
    else
    if (!p || !p->revocation_url)
        reply_warn (&ws, "not_revoked", "no_revocation_endpoint", hint, "provider \"%s\" has no token revocation "
                    "endpoint (RFC 7009) in the catalog: the tokens are destroyed here, but the grant stays valid at "
                    "the provider", d.provider);
    else
    if (p->revocation_ends_grant && d.grant_sharers > 0)
        /* the provider keeps no grant per integration: Ferrule does not know the accounts, so any
         * live one of the workspace may have signed in with this one's */
        reply_warn (&ws, "not_revoked", "grant_shared", "once none of them is needed, remove the app's access in the "
                    "account's settings at the provider (for Google: https://myaccount.google.com/permissions)",
                    "the tokens of integration \"%s\" are destroyed here but were not revoked at provider \"%s\": "
                    "a revocation there ends the account's whole grant, which %d other active integration%s of the "
                    "provider in workspace \"%.*s\" hold%s if signed in with the same account", id, p->name,
                    d.grant_sharers, d.grant_sharers == 1 ? "" : "s", (int) ident_home_workspace_len (id), id,
                    d.grant_sharers == 1 ? "s" : "");
    else
    if (catalog_check_credentials (p, err, sizeof err) != FR_OK)
        reply_warn (&ws, "not_revoked", "no_credentials", hint, "the tokens were not revoked at provider \"%s\": %s", p->name, err);
    else {
        st = crypto_open (w->keyring, d.key_id, id, kind, ct, ct_len, &token, err, sizeof err);
        if (st == FR_OK)
            req = oauth_revocation_request_new (p, token, kind);
        if (!req)
            reply_warn (&ws, "not_revoked", "not_sent", hint, "the tokens were not revoked at provider \"%s\": %s", p->name,
                        st != FR_OK ? err : "the revocation request could not be built");
        else {
            call_t *c = calls_new (w, CALLS_REVOKE, job, id, p);
            c->token_kind = kind;
            store_row_copy (&c->row, row);         /* both are there once the statement succeeded */
            store_extra_copy (&c->x, x);
            c->request = req;              /* the call's now: kept for a second attempt */
            req = NULL;
            c->sent = token;
            token = NULL;
            if (revoke_send (w, c) == 0)
                goto out;                  /* the reply follows the provider's answer */
            calls_free (w, c);
            reply_warn (&ws, "not_revoked", "not_sent", hint, "could not start the revocation call to provider \"%s\"", p->name);
        }
    }
    log_warning (id, job->rid, "%s", ws.item [0].message);
    reply_with_integration (w, job, FR_OK, NULL, NULL, row, x, &ws, -1);
out:
    oauth_request_destroy (&req);
    mem_free_secret (&token);
    mem_free (dw);
}

/* The statement, one batch on a free connection (dbwait.c); dropped unstarted when the deadline
 * passed: nothing was destroyed, the client was told "timeout" and may ask again. */
static fr_status_t
disconnect_start (store_t *store, void *req, char *err, size_t errlen)
{
    dbwait_about_t *dw = req;
    return store_disconnect_start (store, dw->id, disconnected, dw, err, errlen);
}

void
disconnect_run (worker_t *w, job_t *job, const char *id)
{
    dbwait_about (w, job, id, disconnect_start);
}
