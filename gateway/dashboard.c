/* dashboard.c - the workspace's integrations, their diagnosis, the guide's buttons, API keys */
#include "dashboard.h"
#include "flow.h"
#include "ident.h"
#include "log.h"
#include "mem.h"
#include "session.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIAGNOSED 50            /* integrations diagnosed on one page (one doctor call each) */
#define KEY_NAME_MAX  64            /* an API key's name: printable ASCII (worker/gwops.c) */

static const char *
jstr (const json_t *o, const char *key)
{
    return json_string_value (json_object_get (o, key));
}

static void
no_session (const gw_t *gw, gw_resp_t *resp)
{
    /* FERRULE_GATEWAY_SESSION_TTL_S, 60 to 86400 s, in the largest unit that divides it */
    int64_t ttl = gw->cfg.session_ttl_s;
    const char *unit = ttl % 3600 == 0 ? "hour" : ttl % 60 == 0 ? "minute" : "second";
    int64_t n = ttl % 3600 == 0 ? ttl / 3600 : ttl % 60 == 0 ? ttl / 60 : ttl;
    char text [160];
    if (n == 1)
        snprintf (text, sizeof text, "Open a new dashboard link from your application: links work once and sessions "
                  "last %s.", ttl == 3600 ? "an hour" : "a minute");
    else
        snprintf (text, sizeof text, "Open a new dashboard link from your application: links work once and sessions "
                  "last %lld %ss.", (long long) n, unit);
    gw_resp_message (resp, 401, "Your dashboard session has ended", text);
}

/* Refuses a link or session of a workspace made before workspaces had to end with a separator:
 * as a prefix, "acct4" would also cover "acct42:x", another customer's. */
static void
old_workspace (gw_req_t *req, gw_resp_t *resp, const char *ws, const char *what)
{
    char title [96], hint [IDENT_MAX + 320];
    log_warning (ws, req->rid, "dashboard %s refused: its workspace \"%s\" does not end with one of "
                 IDENT_SEPARATORS, what, ws);
    snprintf (title, sizeof title, "This dashboard %s is for a workspace that is no longer accepted", what);
    snprintf (hint, sizeof hint, "Its workspace \"%s\" does not end with one of " IDENT_SEPARATORS ", so it would "
              "also take in other workspaces' integrations. Ask your application for a new dashboard link, of a "
              "workspace that ends with ':', such as \"acct42:\".", ws);
    gw_resp_message (resp, 403, title, hint);
}

/* The session's workspace; 0 after answering. POSTs also need the CSRF token. */
static int
need_session (gw_req_t *req, gw_resp_t *resp, char ws [IDENT_MAX + 1], int post)
{
    if (!session_check (req, ws, IDENT_MAX + 1)) {
        no_session (req->gw, resp);
        return 0;
    }
    if (!ident_workspace_valid (ws, strlen (ws))) {
        old_workspace (req, resp, ws, "session");
        return 0;
    }
    if (post && !session_csrf_ok (req)) {
        log_warning (NULL, req->rid, "dashboard POST refused: missing or wrong CSRF token");
        gw_resp_message (resp, 403, "This form could not be accepted",
                         "The form was not sent from this dashboard (its security token is missing or wrong). "
                         "Go back to the dashboard and use its buttons.");
        return 0;
    }
    return 1;
}

/* The failure of a button: the service's message and hint, never a raw reply. */
static void
action_failed (gw_resp_t *resp, const json_t *reply, const char *what)
{
    const json_t *e = json_object_get (reply, "error");
    const char *code = jstr (e, "code");
    html_t *h = html_new ();
    html_page_begin (h, what);
    html_raw (h, "<p class=\"problem\">");
    html_text (h, jstr (e, "message") ? jstr (e, "message") : "the service did not answer");
    html_raw (h, "</p>\n");
    if (jstr (e, "hint")) {
        html_raw (h, "<p>");
        html_text (h, jstr (e, "hint"));
        html_raw (h, "</p>\n");
    }
    html_raw (h, "<p><a href=\"/dashboard\">Back to the dashboard</a></p>\n");
    html_page_end (h);
    unsigned status = gw_http_status (code ? code : "internal");
    gw_resp_html (resp, status == 200 ? 500 : status, h);
    if (status == 503 || status == 429)
        resp->retry_after = 5;
    html_destroy (&h);
}

/* The workspace a link says it opens (?workspace=, added by ferrulectl dashboard-link): shown on
 * the confirm page and checked against the spent link's own; NULL when absent or not an id. A link
 * without it is refused: a page that could not name the workspace would lead the person into
 * whichever one the link was made for (login CSRF, into the sender's workspace). */
static const char *
claimed_workspace (const char *ws)
{
    return ws && *ws && ident_valid (ws, strlen (ws)) ? ws : NULL;
}

static void
no_workspace (gw_resp_t *resp)
{
    gw_resp_message (resp, 400, "This dashboard link is incomplete",
                     "It does not say which workspace it opens (its \"&workspace=\" part is missing or damaged), "
                     "so it cannot be opened. Ask your application for a new dashboard link, and open the whole "
                     "link; do not use dashboard links someone else sent you.");
}

/* GET of a dashboard link: a confirm page whose button spends it. Link scanners and the
 * previews of mail and chat programs follow GETs; a GET that spent the link would use it up
 * before the person it was sent to. */
void
dashboard_open_confirm (gw_req_t *req, gw_resp_t *resp)
{
    const char *link = gw_query (req, "link");
    const char *ws = claimed_workspace (gw_query (req, "workspace"));
    if (!link || !*link || strlen (link) > 128) {
        gw_resp_message (resp, 403, "This dashboard link is not valid", "Ask your application for a new dashboard link.");
        return;
    }
    if (!ws) {
        no_workspace (resp);
        return;
    }
    char title [IDENT_MAX + 64];
    snprintf (title, sizeof title, "Open the dashboard of %s", ws);
    html_t *h = html_new ();
    html_page_begin (h, title);
    html_raw (h, "<p>This link works once and for a few minutes. Press the button to open the dashboard in this "
                 "browser.</p>\n<form method=\"post\" action=\"/dashboard/open\">\n"
                 "<input type=\"hidden\" name=\"link\" value=\"");
    html_text (h, link);
    html_raw (h, "\">\n<input type=\"hidden\" name=\"workspace\" value=\"");
    html_text (h, ws);
    html_raw (h, "\">\n<p><button type=\"submit\" class=\"primary\" id=\"open\">Open the dashboard</button></p>\n"
                 "</form>\n");
    html_page_end (h);
    gw_resp_html (resp, 200, h);
    html_destroy (&h);
}

/* POST of the confirm page: spends the link (the link token is the proof, once; no session or
 * CSRF cookie exists yet) and starts the session. */
void
dashboard_open (gw_req_t *req, gw_resp_t *resp)
{
    char link [160], claimed [IDENT_MAX + 8] = "";
    if (gw_form (req, "link", link, sizeof link) != 1 || !*link || strlen (link) > 128) {
        gw_resp_message (resp, 403, "This dashboard link is not valid", "Ask your application for a new dashboard link.");
        return;
    }
    int got = gw_form (req, "workspace", claimed, sizeof claimed);
    if (got != 1 || !claimed_workspace (claimed)) {
        /* refused before the link is spent: the confirm page names the workspace, always */
        log_warning (NULL, req->rid, "dashboard link refused: its form does not name a valid workspace");
        no_workspace (resp);
        mem_wipe (link, sizeof link);
        return;
    }
    json_t *args = json_pack ("{s:s}", "link_token", link);
    mem_wipe (link, sizeof link);
    json_t *reply = gw_call (req, "dashboard_open", args, GW_CALL_MS);
    const char *code = gw_code (reply);
    const char *ws = jstr (reply, "workspace");
    if (strcmp (code, "ok") == 0 && ws && ident_valid (ws, strlen (ws)) && strcmp (claimed, ws) != 0) {
        /* the page named another workspace than the link opens: no session, so nobody is led
           into a workspace the page did not name */
        log_warning (ws, req->rid, "dashboard link refused: it opens workspace \"%s\" but its URL names \"%s\"", ws,
                     claimed);
        gw_resp_message (resp, 403, "This dashboard link does not match its workspace",
                         "The link was altered. Ask your application for a new dashboard link.");
    }
    else if (strcmp (code, "ok") == 0 && ws && ident_valid (ws, strlen (ws))
         &&  !ident_workspace_valid (ws, strlen (ws)))
        old_workspace (req, resp, ws, "link");                  /* spent, and no session */
    else if (strcmp (code, "ok") == 0 && ws && ident_valid (ws, strlen (ws))) {
        resp->cookie = session_issue (req->gw, ws);
        if (!resp->cookie) {
            /* no random bytes for the session's nonce: without a cookie the dashboard would only
               say the session has ended. The link is spent: the user needs a new one */
            log_error (ws, req->rid, "could not start a dashboard session for workspace \"%s\": no random bytes "
                       "for its nonce (the link is spent)", ws);
            gw_resp_message (resp, 503, "The dashboard session could not be started",
                             "This is a problem on the service's side, not with your link. Ask your application "
                             "for a new dashboard link and try again in a moment.");
            resp->retry_after = 5;
        }
        else {
            /* a same-site navigation (the form was on this gateway's page), so the SameSite=Strict
               cookie goes along to the dashboard */
            gw_resp_redirect (resp, "/dashboard");
            log_info (ws, req->rid, "dashboard session opened for workspace \"%s\"", ws);
        }
    }
    else if (gw_http_status (code) == 503) {
        gw_resp_message (resp, 503, "Ferrule is busy", "Go back and press the button again in a moment.");
        resp->retry_after = 5;
    }
    else if (strcmp (code, "state_invalid") == 0 || strcmp (code, "bad_request") == 0
         ||  strcmp (code, "too_large") == 0)
        gw_resp_message (resp, 403, "This dashboard link has expired or was already used",
                         "Dashboard links work once and for a few minutes. Ask your application for a new one.");
    else {
        /* the service refused the gateway itself (its policy, a configuration, an older worker):
           a new link would fail the same way, so the user is not sent for one */
        const json_t *e = json_object_get (reply, "error");
        log_warning (NULL, req->rid, "could not open a dashboard session: the service answered %s: %s", code,
                     jstr (e, "message") ? jstr (e, "message") : "(no message)");
        gw_resp_message (resp, 500, "The dashboard could not be opened",
                         "This is a problem on the service's side, not with your link. Try again later, or "
                         "contact the application's support.");
    }
    json_decref (args);
    json_decref (reply);
}

static int
wants_reconnect (const char *status, const char *diagnosis)
{
    static const char *const list [] = { "needs_reconnect", "rotation_interrupted", "scopes_reduced", "no_refresh_token",
                                         "insufficient_scope", NULL };
    if (status && strcmp (status, "needs_reconnect") == 0)
        return 1;
    for (int i = 0; diagnosis && list [i]; i++)
        if (strcmp (diagnosis, list [i]) == 0)
            return 1;
    return 0;
}

static void
notice_from_query (gw_req_t *req, html_t *h)
{
    const char *id = gw_query (req, "integration");
    const char *status = gw_query (req, "status");
    const char *done = gw_query (req, "done");
    const char *text = NULL;
    if (status && strcmp (status, "active") == 0)
        text = " is connected.";
    else if (done && strcmp (done, "disconnected") == 0)
        text = " is disconnected: its tokens were destroyed and revoked at the provider.";
    else if (done && strcmp (done, "nothing_to_revoke") == 0)
        text = " is disconnected: it held no tokens, so there was nothing to revoke at the provider.";
    else if (done && strcmp (done, "grant_shared") == 0)
        text = " is disconnected: its tokens were destroyed here but not revoked at the provider, where a revocation "
               "ends the account's whole access, which another connected integration of this workspace may share. "
               "Once none of them is needed, remove this application's access in your account's settings at the "
               "provider, or disconnect the last of them, which revokes it.";
    else if (done && strcmp (done, "not_revoked") == 0)
        text = " is disconnected: its tokens were destroyed here, but not revoked at the provider, so the access "
               "it granted may still be live at the provider. To end it, remove this application's access in your "
               "account's settings at the provider.";
    else if (status && strcmp (status, "failed") == 0) {
        const char *code = gw_query (req, "error");
        if (!id || !ident_valid (id, strlen (id)))
            return;
        html_raw (h, "<p class=\"problem\" role=\"status\" id=\"notice\">The connection of <strong>");
        html_text (h, id);
        html_raw (h, "</strong> did not finish");
        if (code && ident_valid (code, strlen (code))) {
            html_raw (h, " (");
            html_text (h, code);
            html_raw (h, ")");
        }
        html_raw (h, ". Its details below say what to do.</p>\n");
        return;
    }
    else if (done && strcmp (done, "revoked") == 0) {
        html_raw (h, "<p class=\"notice\" role=\"status\">The API key was revoked. It stops working at once.</p>\n");
        return;
    }
    if (text && id && ident_valid (id, strlen (id))) {
        html_raw (h, "<p class=\"notice\" role=\"status\" id=\"notice\">Integration <strong>");
        html_text (h, id);
        html_raw (h, "</strong>");
        html_text (h, text);
        html_raw (h, "</p>\n");
    }
}

/* One row; diagnosed within budget (NULL: not diagnosed, past MAX_DIAGNOSED). 1 when the
 * diagnosis was wanted and is not there. */
static int
integration_row (gw_req_t *req, html_t *h, const json_t *it, const char *csrf, gw_budget_t *budget)
{
    const char *id = jstr (it, "id");
    const char *status = jstr (it, "status");
    const char *diag = NULL, *symptom = NULL;
    json_t *doc = NULL;
    int unchecked = 0;
    if (budget) {
        json_t *args = json_pack ("{s:s}", "integration", id);
        doc = gw_call_within (req, budget, "doctor", args);
        json_decref (args);
        const json_t *d = json_object_get (doc, "diagnosis");
        diag = jstr (d, "code");
        symptom = jstr (d, "symptom");
        unchecked = strcmp (gw_code (doc), "ok") != 0;
    }
    char base [IDENT_MAX + 64];
    snprintf (base, sizeof base, "/dashboard/integrations/%s", id);
    html_raw (h, "<tr data-integration=\"");
    html_text (h, id);
    html_raw (h, "\">\n<td><a href=\"");
    html_text (h, base);
    html_raw (h, "\">");
    html_text (h, id);
    html_raw (h, "</a></td>\n<td>");
    html_text (h, jstr (it, "provider"));
    html_raw (h, "</td>\n<td><span class=\"status status-");
    html_text (h, status);
    html_raw (h, "\">");
    html_text (h, status);
    html_raw (h, "</span></td>\n<td>");
    html_text (h, jstr (it, "last_refresh_at") ? jstr (it, "last_refresh_at") : "never");
    if (unchecked)
        html_raw (h, "</td>\n<td class=\"diagnosis muted\">not checked</td>\n<td>");
    else {
        html_raw (h, "</td>\n<td class=\"diagnosis\">");
        html_text (h, symptom ? symptom : diag ? diag : "");
        html_raw (h, "</td>\n<td>");
    }
    char action [IDENT_MAX + 96];
    if (status && strcmp (status, "disconnected") == 0) {
        snprintf (action, sizeof action, "%s/reconnect", base);
        html_button_form (h, action, "Connect", "primary", "csrf", csrf, NULL);
    }
    else {
        if (wants_reconnect (status, diag)) {
            snprintf (action, sizeof action, "%s/reconnect", base);
            html_button_form (h, action, "Reconnect", "primary", "csrf", csrf, NULL);
        }
        snprintf (action, sizeof action, "%s/disconnect", base);
        html_button_form (h, action, "Disconnect", "danger", "csrf", csrf, NULL);
    }
    html_raw (h, "</td>\n</tr>\n");
    json_decref (doc);
    return unchecked;
}

void
dashboard_home (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1], csrf [65];
    if (!need_session (req, resp, ws, 0))
        return;
    session_csrf (req, csrf);
    /* one deadline for the page, and no call after the first the service could not answer: while
       the database stalls, each diagnosis would hold a broker client for its whole timeout, and a
       few dozen views would leave none for the token API */
    gw_budget_t budget;
    gw_budget_start (&budget, GW_PAGE_MS);
    json_t *args = json_pack ("{s:s}", "integration", ws);
    json_t *list = gw_call_within (req, &budget, "workspace", args);
    json_t *keys = gw_call_within (req, &budget, "apikey_list", args);
    json_decref (args);
    if (strcmp (gw_code (list), "ok") != 0) {
        action_failed (resp, list, "The integrations could not be listed");
        json_decref (list);
        json_decref (keys);
        return;
    }
    html_t *h = html_new ();
    html_page_begin (h, "Integrations");
    html_raw (h, "<p class=\"muted\">Workspace <strong>");
    html_text (h, ws);
    html_raw (h, "</strong></p>\n");
    html_button_form (h, "/dashboard/logout", "Sign out", "secondary", "csrf", csrf, NULL);
    notice_from_query (req, h);
    const json_t *items = json_object_get (list, "integrations");
    if (json_array_size (items) == 0)
        html_raw (h, "<p>No integrations yet. Connect one below.</p>\n");
    else {
        html_raw (h, "<table id=\"integrations\">\n<caption class=\"muted\">Integrations of this workspace</caption>\n"
                     "<thead><tr><th scope=\"col\">Integration</th><th scope=\"col\">Provider</th>"
                     "<th scope=\"col\">Status</th><th scope=\"col\">Last refreshed</th>"
                     "<th scope=\"col\">Diagnosis</th><th scope=\"col\">Actions</th></tr></thead>\n<tbody>\n");
        size_t i;
        json_t *it;
        int unchecked = 0;
        json_array_foreach (items, i, it)
            unchecked += integration_row (req, h, it, csrf, i < MAX_DIAGNOSED ? &budget : NULL);
        html_raw (h, "</tbody>\n</table>\n");
        if (unchecked)
            html_raw (h, "<p class=\"muted\" id=\"not-checked\">Some integrations could not be diagnosed: Ferrule did "
                         "not answer in time. Reload the page in a moment.</p>\n");
        if (json_is_true (json_object_get (list, "truncated")))
            html_raw (h, "<p class=\"muted\">Only the first 200 integrations are shown.</p>\n");
    }
    html_raw (h, "<h2>Connect an integration</h2>\n<form method=\"post\" action=\"/dashboard/connect\">\n"
                 "<input type=\"hidden\" name=\"csrf\" value=\"");
    html_text (h, csrf);
    html_raw (h, "\">\n<label for=\"provider\">Provider</label>\n<select id=\"provider\" name=\"provider\">\n");
    for (size_t i = 0; i < req->gw->nproviders; i++) {
        html_raw (h, "<option>");
        html_text (h, req->gw->providers [i]);
        html_raw (h, "</option>\n");
    }
    html_raw (h, "</select>\n<label for=\"name\">Name (optional: letters, digits, . _ -)</label>\n"
                 "<input id=\"name\" name=\"name\" maxlength=\"64\" pattern=\"[A-Za-z0-9._\\-]*\">\n"
                 "<p><button type=\"submit\" id=\"connect\">Connect</button></p>\n</form>\n");

    html_raw (h, "<h2>API keys</h2>\n<p>Services use an API key to fetch this workspace's tokens over HTTP. A new "
                 "key is shown once; only a hash is kept.</p>\n");
    const json_t *klist = json_object_get (keys, "keys");
    if (strcmp (gw_code (keys), "ok") != 0) {
        /* not "no keys": someone here to revoke a leaked key must know the list is missing */
        html_raw (h, "<p class=\"problem\" role=\"status\" id=\"keys-not-listed\">The API keys could not be listed (");
        html_text (h, gw_code (keys));
        html_raw (h, "): reload the page in a moment. If it keeps failing, contact the application's support.</p>\n");
        log_warning (ws, req->rid, "the dashboard's API keys could not be listed: the service answered %s",
                     gw_code (keys));
    }
    else
    if (json_array_size (klist)) {
        html_raw (h, "<table id=\"apikeys\">\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Key starts with</th>"
                     "<th scope=\"col\">Created</th><th scope=\"col\">Last used</th><th scope=\"col\"></th></tr></thead>\n"
                     "<tbody>\n");
        size_t i;
        json_t *k;
        json_array_foreach (klist, i, k) {
            html_raw (h, "<tr><td>");
            html_text (h, jstr (k, "name"));
            html_raw (h, "</td><td><code>");
            html_text (h, jstr (k, "prefix"));
            html_raw (h, "</code></td><td>");
            html_text (h, jstr (k, "created_at"));
            html_raw (h, "</td><td>");
            html_text (h, jstr (k, "last_used_at") ? jstr (k, "last_used_at") : "never");
            html_raw (h, "</td><td>");
            if (jstr (k, "revoked_at"))
                html_raw (h, "revoked");
            else {
                char action [96];
                snprintf (action, sizeof action, "/dashboard/apikeys/%lld/revoke",
                          (long long) json_integer_value (json_object_get (k, "key_id")));
                html_button_form (h, action, "Revoke", "danger", "csrf", csrf, NULL);
            }
            html_raw (h, "</td></tr>\n");
        }
        html_raw (h, "</tbody>\n</table>\n");
    }
    html_raw (h, "<form method=\"post\" action=\"/dashboard/apikeys\">\n<input type=\"hidden\" name=\"csrf\" value=\"");
    html_text (h, csrf);
    html_raw (h, "\">\n<label for=\"keyname\">New key's name (up to 64 ASCII characters)</label>\n"
                 "<input id=\"keyname\" name=\"name\" required maxlength=\"64\">\n"
                 "<p><button type=\"submit\" id=\"create-key\">Create API key</button></p>\n</form>\n");
    html_page_end (h);
    gw_resp_html (resp, 200, h);
    html_destroy (&h);
    json_decref (list);
    json_decref (keys);
}

/* 1 when the dashboard's Connect offers provider (FERRULE_GATEWAY_PROVIDERS). */
static int
offered (const gw_t *gw, const char *provider)
{
    for (size_t i = 0; i < gw->nproviders; i++)
        if (strcmp (gw->providers [i], provider) == 0)
            return 1;
    return 0;
}

/* The route's integration, if it belongs to the session's workspace. */
static int
own_integration (gw_req_t *req, gw_resp_t *resp, const char *ws)
{
    if (!ident_in_workspace (req->param [0], ws)) {
        gw_resp_message (resp, 404, "No such integration", "This integration is not part of your workspace.");
        return 0;
    }
    return 1;
}

/* The "What to do" of an integration's page, for its user: doctor's what_to_do is written for
 * ferrulectl's users and operators (its commands and flags, "Operators: ..."), and the dashboard's
 * user has its buttons. By the diagnosis' code, unless only the operator can mend it
 * (operator_only: connecting again gets the same); reconnect names the button the page shows. */
static void
user_steps (html_t *h, const char *code, const char *status, int active, int reconnect, int operator_only)
{
    static const char *const sign_in [] = { "needs_reconnect", "rotation_interrupted", "no_refresh_token",
                                            "insufficient_scope", "scopes_reduced", "access_denied",
                                            "code_expired_or_used", "state_invalid", "connect_incomplete",
                                            "connect_pending", "browser_mismatch", NULL };
    int again = 0;
    for (int i = 0; code && !operator_only && sign_in [i]; i++)
        again |= strcmp (code, sign_in [i]) == 0;
    const char *how = reconnect ? "Press Reconnect" : !active ? "Press Connect"
                    : "Press Disconnect, then connect it again with the dashboard's Connect";
    char step [320];
    if (code && strcmp (code, "healthy") == 0)
        html_raw (h, "<li>Nothing to do: the integration works.</li>\n");
    else if (status && strcmp (status, "disconnected") == 0)
        html_raw (h, "<li>If you still need it, press Connect.</li>\n");
    else if (again) {
        if (strcmp (code, "no_refresh_token") == 0)
            html_raw (h, "<li>Remove this application's access in your account's settings at the provider (for "
                         "Google: https://myaccount.google.com/permissions).</li>\n");
        snprintf (step, sizeof step, "%s, and at the provider approve every permission it asks for (offline "
                  "access among them; if offered minimal or full access, choose full access).", how);
        html_raw (h, "<li>");
        html_text (h, step);
        html_raw (h, "</li>\n<li>Finish the provider's screen within a minute, in this browser, without going "
                     "back or reloading.</li>\n<li>If it keeps failing, contact the application's support with "
                     "the integration's name and the diagnosis above.</li>\n");
    }
    else if (code && (strcmp (code, "provider_unavailable") == 0 || strcmp (code, "provider_bad_response") == 0))
        html_raw (h, "<li>Nothing to do now: the provider is failing for the moment, and the service tries again. "
                     "Reload this page later.</li>\n<li>If it lasts, contact the application's support.</li>\n");
    else
        html_raw (h, "<li>This needs a change on the service's side; reconnecting will not help. Contact the "
                     "application's support with the integration's name and the diagnosis above.</li>\n");
}

void
dashboard_detail (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1], csrf [65];
    if (!need_session (req, resp, ws, 0) || !own_integration (req, resp, ws))
        return;
    session_csrf (req, csrf);
    /* the page's deadline, as the dashboard's: no history asked once the diagnosis could not be
       had (a database stall would hold a broker client for both) */
    gw_budget_t budget;
    gw_budget_start (&budget, GW_PAGE_MS);
    json_t *args = json_pack ("{s:s, s:i}", "integration", req->param [0], "limit", 20);
    json_t *doc = gw_call_within (req, &budget, "doctor", args);
    if (strcmp (gw_code (doc), "ok") != 0) {
        action_failed (resp, doc, "This integration could not be diagnosed");
        json_decref (args);
        json_decref (doc);
        return;
    }
    json_t *hist = gw_call_within (req, &budget, "history", args);
    json_decref (args);
    const json_t *d = json_object_get (doc, "diagnosis");
    html_t *h = html_new ();
    html_page_begin (h, req->param [0]);
    html_raw (h, "<p>Provider <strong>");
    html_text (h, jstr (d, "provider"));
    html_raw (h, "</strong>, status <span class=\"status status-");
    html_text (h, jstr (d, "status"));
    html_raw (h, "\">");
    html_text (h, jstr (d, "status"));
    html_raw (h, "</span></p>\n<h2>Diagnosis</h2>\n<dl>\n<dt>Symptom</dt><dd id=\"symptom\">");
    html_text (h, jstr (d, "symptom"));
    html_raw (h, "</dd>\n<dt>Cause</dt><dd id=\"cause\">");
    html_text (h, jstr (d, "cause"));
    html_raw (h, "</dd>\n<dt>What to do</dt><dd><ol id=\"what-to-do\">\n");
    size_t i;
    json_t *v;
    char base [sizeof req->param [0] + 32], action [sizeof req->param [0] + 64];
    snprintf (base, sizeof base, "/dashboard/integrations/%s", req->param [0]);
    const char *status = jstr (d, "status");
    int active = status && strcmp (status, "disconnected") != 0 && strcmp (status, "not_connected") != 0;
    int operator_only = json_is_true (json_object_get (d, "operator_only"));
    int reconnect = active && !operator_only && wants_reconnect (status, jstr (d, "code"));
    user_steps (h, jstr (d, "code"), status, active, reconnect, operator_only);
    html_raw (h, "</ol></dd>\n</dl>\n");
    if (active) {
        if (reconnect) {
            snprintf (action, sizeof action, "%s/reconnect", base);
            html_button_form (h, action, "Reconnect", "primary", "csrf", csrf, NULL);
        }
        snprintf (action, sizeof action, "%s/disconnect", base);
        html_button_form (h, action, "Disconnect", "danger", "csrf", csrf, NULL);
    }
    else
    if (status && strcmp (status, "not_connected") == 0 && jstr (d, "provider")) {
        /* no row yet (a first connect that did not finish): the reconnect action reads the row for
           its provider, so the button starts a connect as the dashboard's own Connect does, and
           only of a provider it offers (it refuses the others) */
        if (offered (req->gw, jstr (d, "provider")))
            html_button_form (h, "/dashboard/connect", "Connect", "primary", "csrf", csrf, "provider",
                              jstr (d, "provider"), "name", req->param [0] + strlen (ws), NULL);
    }
    else {
        snprintf (action, sizeof action, "%s/reconnect", base);
        html_button_form (h, action, "Connect", "primary", "csrf", csrf, NULL);
    }
    html_raw (h, "<h2>History</h2>\n");
    if (strcmp (gw_code (hist), "ok") != 0)
        html_raw (h, "<p class=\"notice\" id=\"history-not-read\">The history could not be read just now. Reload the "
                     "page in a moment.</p>\n");
    html_raw (h, "<table id=\"history\">\n<thead><tr><th scope=\"col\">When</th>"
                 "<th scope=\"col\">What</th><th scope=\"col\">Detail</th></tr></thead>\n<tbody>\n");
    json_array_foreach (json_object_get (hist, "chain"), i, v) {
        html_raw (h, "<tr><td>");
        html_text (h, jstr (v, "at"));
        html_raw (h, "</td><td>");
        html_text (h, jstr (v, "outcome"));
        html_raw (h, "</td><td>");
        html_text (h, jstr (v, "detail") ? jstr (v, "detail") : "");
        html_raw (h, "</td></tr>\n");
    }
    html_raw (h, "</tbody>\n</table>\n<p><a href=\"/dashboard\">Back to the dashboard</a></p>\n");
    html_page_end (h);
    gw_resp_html (resp, 200, h);
    html_destroy (&h);
    json_decref (doc);
    json_decref (hist);
}

/* A connect from the dashboard: back to the dashboard afterwards. scopes borrowed (may be NULL).
 * Bound to this browser (flow.h): its callback must come back to it, so an authorization URL
 * copied out of this browser and sent to someone else cannot connect their account here. */
static void
start_connect (gw_req_t *req, gw_resp_t *resp, const char *id, const char *provider, json_t *scopes)
{
    char callback [GW_ORIGIN_MAX + 64], back [GW_ORIGIN_MAX + 64], binding [FLOW_BINDING_LEN + 1];
    char *set_cookie = NULL;
    if (flow_bind (req, binding, &set_cookie) != 0) {
        log_error (id, req->rid, "could not start a dashboard connect: no random bytes for its browser binding");
        gw_resp_message (resp, 500, "The connection could not be started",
                         "This is a problem on the service's side. Try again in a moment.");
        return;
    }
    snprintf (callback, sizeof callback, "%s/oauth/callback", req->gw->cfg.public_url);
    snprintf (back, sizeof back, "%s/dashboard", req->gw->cfg.public_url);
    json_t *args = json_pack ("{s:s, s:s, s:s, s:s, s:s}", "integration", id, "provider", provider,
                              "redirect_uri", callback, "return_to", back, "browser_binding", binding);
    mem_wipe (binding, sizeof binding);
    if (scopes && json_array_size (scopes))
        json_object_set (args, "scopes", scopes);
    json_t *reply = gw_call (req, "connect", args, GW_CALLBACK_MS);
    const char *url = jstr (reply, "authorization_url");
    if (strcmp (gw_code (reply), "ok") == 0 && url) {
        gw_resp_redirect (resp, url);
        resp->cookie = set_cookie;          /* the browser keeps it for its callback */
        set_cookie = NULL;
    }
    else
        action_failed (resp, reply, "The connection could not be started");
    mem_free_secret (&set_cookie);
    json_decref (args);
    json_decref (reply);
}

void
dashboard_connect (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1], provider [72] = "", name [IDENT_MAX + 1] = "", id [2 * IDENT_MAX + 2] = "";
    if (!need_session (req, resp, ws, 1))
        return;
    int got_provider = gw_form (req, "provider", provider, sizeof provider);
    if (got_provider == 0 || (got_provider == 1 && !*provider)) {
        gw_resp_message (resp, 400, "Choose a provider", "Pick the provider to connect, then press Connect.");
        return;
    }
    /* a name that is there but unusable is refused, never replaced by the provider's: that
       would start a connect of another integration, perhaps one that exists */
    int got_name = gw_form (req, "name", name, sizeof name);
    if (got_provider > 0 && got_name >= 0) {
        if (!*name)
            snprintf (name, sizeof name, "%s", provider);
        snprintf (id, sizeof id, "%s%s", ws, name);
    }
    if (!*id || !ident_valid (id, strlen (id)) || !ident_valid (provider, strlen (provider))) {
        gw_resp_message (resp, 400, "This name cannot be used",
                         "Use letters, digits, dot, underscore and dash only, and keep it short.");
        return;
    }
    if (!offered (req->gw, provider)) {
        /* the form offers only these: another one was typed in, or the list changed since */
        html_t *h = html_new ();
        html_page_begin (h, "This provider cannot be connected here");
        html_raw (h, "<p class=\"problem\">");
        html_text (h, provider);
        html_raw (h, " is not one of the providers this dashboard offers:");
        for (size_t i = 0; i < req->gw->nproviders; i++) {
            html_raw (h, i ? ", " : " ");
            html_text (h, req->gw->providers [i]);
        }
        html_raw (h, ".</p>\n<p><a href=\"/dashboard\">Back to the dashboard</a>, and pick one of its list.</p>\n");
        html_page_end (h);
        gw_resp_html (resp, 400, h);
        html_destroy (&h);
        log_warning (NULL, req->rid, "dashboard connect refused: provider \"%s\" is not in FERRULE_GATEWAY_PROVIDERS",
                     provider);
        return;
    }
    start_connect (req, resp, id, provider, NULL);
}

void
dashboard_reconnect (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1];
    if (!need_session (req, resp, ws, 1) || !own_integration (req, resp, ws))
        return;
    json_t *args = json_pack ("{s:s}", "integration", req->param [0]);
    json_t *st = gw_call (req, "status", args, GW_CALL_MS);
    json_decref (args);
    const json_t *integ = json_object_get (st, "integration");
    if (strcmp (gw_code (st), "ok") != 0 || !jstr (integ, "provider"))
        action_failed (resp, st, "The integration could not be reconnected");
    else {
        json_t *scopes = json_object_get (integ, "requested_scopes");
        start_connect (req, resp, req->param [0], jstr (integ, "provider"), json_is_array (scopes) ? scopes : NULL);
    }
    json_decref (st);
}

void
dashboard_disconnect (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1];
    if (!need_session (req, resp, ws, 1) || !own_integration (req, resp, ws))
        return;
    json_t *args = json_pack ("{s:s}", "integration", req->param [0]);
    json_t *reply = gw_call (req, "disconnect", args, GW_CALLBACK_MS);
    if (strcmp (gw_code (reply), "ok") == 0) {
        /* a success can still leave the grant valid at the provider (docs/protocol.md, warnings):
           the user is the one who can end it there, so is told; but not when the integration held
           no token (not_revoked's reason no_token): nothing of it can be live there; nor to end it
           at once when the provider ends the account's whole grant (grant_shared): that would end
           the other integrations' access too */
        const char *done = "disconnected";
        size_t i;
        json_t *w;
        json_array_foreach (json_object_get (reply, "warnings"), i, w) {
            const char *wc = jstr (w, "code"), *why = jstr (w, "reason");
            if (wc && strcmp (wc, "not_revoked") == 0 && why && strcmp (why, "no_token") == 0)
                done = "nothing_to_revoke";
            else if (wc && strcmp (wc, "not_revoked") == 0 && why && strcmp (why, "grant_shared") == 0)
                done = "grant_shared";
            else if (wc && (strcmp (wc, "revocation_failed") == 0 || strcmp (wc, "not_revoked") == 0)) {
                done = "not_revoked";
                break;
            }
        }
        html_t *u = html_new ();
        html_rawf (u, "/dashboard?done=%s&integration=", done);
        html_urlenc (u, req->param [0]);
        gw_resp_redirect (resp, html_data (u));
        html_destroy (&u);
    }
    else
        action_failed (resp, reply, "The integration could not be disconnected");
    json_decref (args);
    json_decref (reply);
}

void
dashboard_apikey_create (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1], name [KEY_NAME_MAX + 2];
    if (!need_session (req, resp, ws, 1))
        return;
    int got = gw_form (req, "name", name, sizeof name);
    if (got == 0 || (got == 1 && !*name)) {
        gw_resp_message (resp, 400, "Name the key", "Give the new API key a name, such as the service that will use it.");
        return;
    }
    /* the workers' rule, checked here: a name they refuse came back as their "name" message, and
       one of 65 bytes or more as too_large, which this page answers 409 (the workspace's keys) */
    int usable = got == 1 && strlen (name) <= KEY_NAME_MAX;
    for (const char *c = name; usable && *c; c++)
        usable = (unsigned char) *c >= 0x20 && (unsigned char) *c < 0x7f;
    if (!usable) {
        gw_resp_message (resp, 400, "This name cannot be used", "Give the key a name of 1 to 64 ASCII characters: "
                         "letters, digits, spaces and punctuation, without accents or other scripts.");
        return;
    }
    json_t *args = json_pack ("{s:s, s:s}", "integration", ws, "name", name);
    json_t *reply = gw_call (req, "apikey_create", args, GW_CALL_MS);
    if (strcmp (gw_code (reply), "ok") != 0) {
        action_failed (resp, reply, "The API key could not be created");
        if (strcmp (gw_code (reply), "too_large") == 0)
            resp->status = 409;     /* the workspace's 100 live keys, not the form's size (413) */
    }
    else {
        html_t *h = html_new ();
        html_page_begin (h, "Your new API key");
        html_raw (h, "<p class=\"notice\">Copy this key now: it is shown only once. Keep it like a password.</p>\n"
                     "<p class=\"secret\" id=\"new-key\">");
        html_text (h, jstr (reply, "key"));
        html_raw (h, "</p>\n<p>Services send it as <code>Authorization: Bearer KEY</code>.</p>\n"
                     "<p><a href=\"/dashboard\">Back to the dashboard</a></p>\n");
        html_page_end (h);
        gw_resp_html (resp, 200, h);
        html_destroy (&h);
    }
    json_decref (args);
    json_decref (reply);
}

void
dashboard_apikey_revoke (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1];
    if (!need_session (req, resp, ws, 1))
        return;
    json_t *args = json_pack ("{s:s, s:I}", "integration", ws, "key_id", (json_int_t) strtoll (req->param [0], NULL, 10));
    json_t *reply = gw_call (req, "apikey_revoke", args, GW_CALL_MS);
    if (strcmp (gw_code (reply), "ok") == 0)
        gw_resp_redirect (resp, "/dashboard?done=revoked");
    else
        action_failed (resp, reply, "The API key could not be revoked");
    json_decref (args);
    json_decref (reply);
}

/* Sign out: clears this browser's session cookie. The session is signed, not stored, so a copy
 * of the cookie taken before stays valid until its expiry; in this browser it is gone. */
void
dashboard_logout (gw_req_t *req, gw_resp_t *resp)
{
    char ws [IDENT_MAX + 1];
    if (!need_session (req, resp, ws, 1))
        return;
    gw_resp_message (resp, 200, "You are signed out of the dashboard",
                     "Your dashboard session in this browser has ended. To come back, open a new dashboard link "
                     "from your application.");
    resp->cookie = session_clear (req->gw);
    log_info (ws, req->rid, "dashboard session of workspace \"%s\" signed out", ws);
}
