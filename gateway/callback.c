/* callback.c - callback pages: one per outcome, each with its action */
#include "callback.h"
#include "flow.h"
#include "crypto.h"
#include "log.h"
#include "mem.h"
#include "text.h"
#include <stdio.h>
#include <string.h>

#define MAX_CODE   16384
#define MAX_ERROR  128
#define MAX_DESC   2048   /* of error_description passed on: the worker's cap; longer is shortened */
#define MAX_RETRY_TOKEN 128    /* the worker's cap on a retry token */

static const char *
jstr (const json_t *o, const char *key)
{
    const char *s = json_string_value (json_object_get (o, key));
    return s ? s : NULL;
}


/* "a, b and c" of a JSON array of strings, escaped into h as a list. */
static void
scope_list (html_t *h, const json_t *arr)
{
    size_t i;
    json_t *v;
    if (!json_is_array (arr) || json_array_size (arr) == 0)
        return;
    html_raw (h, "<ul class=\"scopes\">\n");
    json_array_foreach (arr, i, v) {
        html_raw (h, "<li><code>");
        html_text (h, json_string_value (v));
        html_raw (h, "</code></li>\n");
    }
    html_raw (h, "</ul>\n");
}

static void
retry_form (html_t *h, const json_t *attempt, const char *label)
{
    const char *token = attempt ? jstr (attempt, "retry_token") : NULL;
    if (token)
        html_button_form (h, "/oauth/retry", label, "primary", "retry_token", token, NULL);
    else
        html_raw (h, "<p>Start again from <strong>Connect</strong> on your dashboard or in your application.</p>\n");
}

/* A link back to the application (failures too), when its origin is allowed. */
static void
back_link (gw_req_t *req, html_t *h, const json_t *attempt, const char *status, const char *code)
{
    const char *rt = attempt ? jstr (attempt, "return_to") : NULL;
    if (!rt || !gw_return_to_allowed (req->gw, rt))
        return;
    html_raw (h, "<p><a class=\"button secondary\" id=\"back\" href=\"");
    html_text (h, rt);
    html_raw (h, strchr (rt, '?') ? "&amp;" : "?");
    html_raw (h, "integration=");
    html_urlenc (h, jstr (attempt, "integration"));
    html_raw (h, "&amp;status=");
    html_urlenc (h, status);
    if (code) {
        html_raw (h, "&amp;error=");
        html_urlenc (h, code);
    }
    html_raw (h, "\">Back to the application</a></p>\n");
}

static void
para (html_t *h, const char *css, const char *before, const char *name, const char *after)
{
    html_rawf (h, "<p%s%s%s>", css ? " class=\"" : "", css ? css : "", css ? "\"" : "");
    html_text (h, before);
    html_text (h, name);
    html_text (h, after);
    html_raw (h, "</p>\n");
}

/* The successful end: a redirect to return_to, or a page. */
static void
page_connected (gw_req_t *req, gw_resp_t *resp, const json_t *reply, const json_t *attempt, const char *provider)
{
    const json_t *integ = json_object_get (reply, "integration");
    const char *id = jstr (integ, "id");
    const char *status = jstr (integ, "status");
    int reduced = 0;
    size_t i;
    json_t *w;
    json_array_foreach (json_object_get (reply, "warnings"), i, w)
        if (jstr (w, "code") && strcmp (jstr (w, "code"), "scopes_reduced") == 0)
            reduced = 1;
    const char *rt = attempt ? jstr (attempt, "return_to") : NULL;
    int allowed = rt && gw_return_to_allowed (req->gw, rt);
    if (rt && !allowed)
        log_warning (id, req->rid, "not returning to the connect's return_to: its origin is not on the allow-list "
                     "(FERRULE_GATEWAY_RETURN_TO_ORIGINS)");
    char rt_origin [GW_ORIGIN_MAX];
    if (!reduced && allowed && gw_origin_of (rt, rt_origin, sizeof rt_origin) == 0
    &&  strcmp (rt_origin, req->gw->origin) != 0) {
        /* another application: back there at once, with the id and status, nothing secret */
        html_t *u = html_new ();
        html_raw (u, rt);
        html_raw (u, strchr (rt, '?') ? "&" : "?");
        html_raw (u, "integration=");
        html_urlenc (u, id);
        html_raw (u, "&status=");
        html_urlenc (u, status ? status : "active");
        gw_resp_redirect (resp, html_data (u));
        html_destroy (&u);
        return;
    }
    char title [200];
    html_t *h = html_new (), *next = NULL;
    snprintf (title, sizeof title, reduced ? "Connected to %s with fewer permissions" : "Connected to %s", provider);
    if (!reduced && allowed) {
        /* a page of this gateway (the dashboard): go on by a navigation this page starts, so the
           SameSite=Strict session cookie goes along even after a cross-site redirect chain */
        next = html_new ();
        html_raw (next, rt);
        html_raw (next, strchr (rt, '?') ? "&" : "?");
        html_raw (next, "integration=");
        html_urlenc (next, id);
        html_raw (next, "&status=");
        html_urlenc (next, status ? status : "active");
    }
    html_page_begin_refresh (h, title, next ? html_data (next) : NULL);
    if (reduced) {
        para (h, "problem", "", provider, " granted only some of the permissions Ferrule asked for. Tools that need "
              "the missing ones will fail with a permission error until you approve them:");
        scope_list (h, json_object_get (attempt, "missing_scopes"));
        para (h, NULL, "Approve again and, when ", provider, " shows its permissions screen, accept every "
              "permission. If it lets you choose between minimal and full access, choose full access.");
        retry_form (h, attempt, "Approve all permissions");
        back_link (req, h, attempt, status ? status : "active", "scopes_reduced");
    }
    else {
        html_raw (h, "<p class=\"notice\">Integration <strong>");
        html_text (h, id);
        html_raw (h, "</strong> is connected. Ferrule keeps its access fresh from now on; you can close this page.</p>\n");
        if (next) {
            html_raw (h, "<p><a class=\"button\" id=\"continue\" href=\"");
            html_text (h, html_data (next));
            html_raw (h, "\">Continue</a></p>\n");
        }
    }
    html_page_end (h);
    gw_resp_html (resp, 200, h);
    html_destroy (&h);
    html_destroy (&next);
}

/* Contact support: the page shows a reference, the log line under it has every fact. */
static void
page_support (gw_req_t *req, gw_resp_t *resp, const json_t *reply, const json_t *attempt, const char *provider,
              const char *code)
{
    unsigned char rnd [6];
    char ref [16] = "unknown";
    if (crypto_random (rnd, sizeof rnd) == 0)
        snprintf (ref, sizeof ref, "%02X%02X%02X-%02X%02X%02X", rnd [0], rnd [1], rnd [2], rnd [3], rnd [4], rnd [5]);
    const json_t *err = json_object_get (reply, "error");
    const json_t *detail = json_object_get (err, "detail");
    const char *sent = jstr (detail, "redirect_uri_sent");
    if (!sent && attempt)
        sent = jstr (attempt, "redirect_uri");
    const char *perr = jstr (detail, "provider_error");
    const char *pdesc = jstr (detail, "provider_error_description");
    log_error (attempt ? jstr (attempt, "integration") : NULL, req->rid,
               "support reference %s: connect failed with %s: provider \"%s\", redirect URI sent \"%s\", provider "
               "error \"%s\", provider error description \"%s\": %s", ref, code, provider, sent ? sent : "?",
               perr ? perr : "?", pdesc ? pdesc : "", jstr (err, "message") ? jstr (err, "message") : "");
    char title [200];
    html_t *h = html_new ();
    if (strcmp (code, "redirect_uri_mismatch") == 0) {
        snprintf (title, sizeof title, "%s is not set up for this sign-in", provider);
        html_page_begin (h, title);
        para (h, "problem", "The address ", provider, " should send you back to is not registered in its settings "
              "for Ferrule, so it refused to finish. Trying again will not help: this needs a change in the "
              "application's configuration.");
    }
    else if (strcmp (code, "invalid_client") == 0) {
        snprintf (title, sizeof title, "%s did not accept Ferrule's application", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " does not recognize the credentials Ferrule signs in with. Trying again "
              "will not help: this needs a change in the application's configuration.");
    }
    else if (strcmp (code, "invalid_scope") == 0) {
        /* the permissions asked for are misspelled, unknown to the provider or not enabled for the
           application: approving again asks for the same ones and fails the same way */
        snprintf (title, sizeof title, "%s refused the permissions Ferrule asked for", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " would not grant these permissions:");
        scope_list (h, json_object_get (attempt, "scopes"));
        html_raw (h, "<p class=\"problem\">Trying again will not help: the application asks for permissions the "
                     "provider does not offer it. If you manage the provider's OAuth application, enable these "
                     "permissions there; otherwise this needs a change in the application's configuration.</p>\n");
    }
    else if (strcmp (code, "no_refresh_token") == 0) {
        /* the provider entry does not ask for offline access (Google's access_type=offline): no
           consent screen brings a refresh token, and removing the app's access does not either */
        snprintf (title, sizeof title, "%s connected without lasting access", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " gave Ferrule access for a short while (usually an hour) but no refresh "
              "token, so the integration will stop working when that access ends. Ferrule's settings for this "
              "provider do not ask for lasting access. Trying again or removing Ferrule's access at the provider "
              "will not help: this needs a change in the application's configuration.");
    }
    else {
        snprintf (title, sizeof title, "The connection to %s could not be finished", provider);
        html_page_begin (h, title);
        html_raw (h, "<p class=\"problem\">Something is set up wrong on our side. Trying again will not help until "
                     "it is fixed.</p>\n");
    }
    html_raw (h, "<h2>What to do</h2>\n<p>Contact support and give them this reference, the provider name and "
                 "what you were doing:</p>\n<p>Reference: <strong class=\"ref\" id=\"reference\">");
    html_text (h, ref);
    html_raw (h, "</strong><br>Provider: <strong>");
    html_text (h, provider);
    html_raw (h, "</strong><br>Error: <strong>");
    html_text (h, code);
    html_raw (h, "</strong></p>\n<p><a class=\"button\" id=\"contact-support\" href=\"");
    const char *su = req->gw->cfg.support_url && *req->gw->cfg.support_url ? req->gw->cfg.support_url : "mailto:";
    html_text (h, su);
    if (strncmp (su, "mailto:", 7) == 0) {
        /* the subject carries the reference, the provider and the error */
        char subject [200];
        snprintf (subject, sizeof subject, "Ferrule connect failed: reference %s, provider %s, %s", ref, provider, code);
        html_raw (h, strchr (su, '?') ? "&amp;subject=" : "?subject=");
        html_urlenc (h, subject);
    }
    html_raw (h, "\">Contact support</a></p>\n");
    back_link (req, h, attempt, "failed", code);
    html_page_end (h);
    gw_resp_html (resp, 500, h);
    html_destroy (&h);
}

/* Every other failure: what happened, what to do, the action. */
static void
page_failed (gw_req_t *req, gw_resp_t *resp, const json_t *reply, const json_t *attempt, const char *provider,
             const char *code)
{
    char title [200];
    unsigned status = 400;
    html_t *h = html_new ();
    const char *outcome = attempt ? jstr (attempt, "outcome") : NULL;

    if (strcmp (code, "code_expired_or_used") == 0) {
        snprintf (title, sizeof title, "The sign-in with %s did not finish", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " did not accept the sign-in: it took too long, or the same sign-in was "
              "used twice (going back or reloading the last page does that).");
        html_raw (h, "<h2>What to do</h2>\n<ul><li>Try again, and finish the provider's screen within a minute.</li>"
                     "<li>Do not use the back button or reload the page at the end.</li>"
                     "<li>If it keeps failing, clear your browser's cookies for the provider's site and try again "
                     "from a fresh tab.</li></ul>\n");
        retry_form (h, attempt, "Try again");
    }
    else if (strcmp (code, "state_invalid") == 0) {
        html_page_begin (h, "This sign-in link has expired or was already used");
        if (outcome && strcmp (outcome, "connected") == 0 && !jstr (attempt, "retry_token")) {
            html_raw (h, "<p class=\"notice\">This sign-in was already completed: integration <strong>");
            html_text (h, jstr (attempt, "integration"));
            html_raw (h, "</strong> is connected. There is nothing more to do.</p>\n");
        }
        else {
            html_raw (h, "<p class=\"problem\">The page you came back to belongs to a sign-in that is over: it "
                         "waited too long, or it was already used (reloading the last page of a sign-in does "
                         "that).</p>\n<h2>What to do</h2>\n<p>Start the sign-in again, and do not reload the page "
                         "at the end.</p>\n");
            retry_form (h, attempt, "Try again");
        }
    }
    else if (strcmp (code, "browser_mismatch") == 0) {
        /* no "Try again", and no link onwards: a connect started again from this browser would
           finish what whoever sent the link wanted */
        html_page_begin (h, "This sign-in was started in another browser");
        para (h, "problem", "The sign-in link you followed was started from a Ferrule dashboard in another browser, "
              "so nothing was connected: ", provider, "'s answer was not used.");
        html_raw (h, "<h2>What to do</h2>\n<ul><li>If you started this connection yourself, start it again from "
                     "the dashboard in this browser.</li><li>Do not use sign-in links someone else sent you: "
                     "approving one would give them access to your account.</li></ul>\n");
        html_page_end (h);
        gw_resp_html (resp, gw_http_status (code), h);
        html_destroy (&h);
        return;
    }
    else if (strcmp (code, "access_denied") == 0) {
        snprintf (title, sizeof title, "Access to %s was not granted", provider);
        html_page_begin (h, title);
        para (h, "problem", "The request was declined at ", provider, "'s consent screen, so nothing was connected.");
        html_raw (h, "<h2>What to do</h2>\n<p>If you meant to allow it, try again and choose to allow access.</p>\n");
        retry_form (h, attempt, "Try again");
    }
    else if (strcmp (code, "no_refresh_token") == 0) {
        snprintf (title, sizeof title, "%s connected without lasting access", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " gave Ferrule access for a short while (usually an hour) but no refresh "
              "token, so the integration will stop working when that access ends. This happens when you approved "
              "Ferrule before and the provider skipped its consent screen this time (Google does), or when the "
              "permission to keep access while you are away (offline access) was not approved (Microsoft, Xero, "
              "Atlassian).");
        html_raw (h, "<h2>What to do</h2>\n<ol><li>Open your account's permissions page at the provider (for Google: "
                     "<a href=\"https://myaccount.google.com/permissions\">https://myaccount.google.com/permissions"
                     "</a>) and remove Ferrule's access.</li>"
                     "<li>Reconnect here and approve every permission, offline access among them: the provider then "
                     "shows its full consent screen and issues a refresh token.</li></ol>\n");
        retry_form (h, attempt, "Reconnect");
        status = 409;
    }
    else if (strcmp (code, "disconnected") == 0 || strcmp (code, "needs_reconnect") == 0) {
        /* the sign-in was stored, and the integration was disconnected (or lost its access) before
           this page could say so */
        snprintf (title, sizeof title, "The connection to %s was ended meanwhile", provider);
        html_page_begin (h, title);
        para (h, "problem", "The sign-in with ", provider, " finished, but the integration was disconnected or "
              "lost its access while the sign-in was being saved, so it is not connected now.");
        html_raw (h, "<h2>What to do</h2>\n<p>If you still want it, connect it again.</p>\n");
        retry_form (h, attempt, "Connect again");
        status = 409;
    }
    else if (strcmp (code, "provider_unavailable") == 0 || strcmp (code, "provider_bad_response") == 0) {
        snprintf (title, sizeof title, "%s is having trouble right now", provider);
        html_page_begin (h, title);
        para (h, "problem", "", provider, " failed to answer while finishing the sign-in. Nothing is wrong with "
              "your account.");
        html_raw (h, "<h2>What to do</h2>\n<p>Wait a few minutes, then try again.</p>\n");
        retry_form (h, attempt, "Try again");
        status = 503;
        resp->retry_after = 60;
    }
    else if (strcmp (code, "timeout") == 0) {
        /* the gateway stopped waiting, not the sign-in: the worker may have exchanged the code and
           stored the tokens after it (and the state is spent: the same callback again is
           state_invalid). No attempt is read after a timeout (gw_call_within), so there is no Try
           again; a connect started again for an integration that did connect only sends the user
           through the provider's consent once more, and replaces its tokens */
        snprintf (title, sizeof title, "Whether the sign-in with %s finished is not known", provider);
        html_page_begin (h, title);
        para (h, "problem", "Ferrule stopped waiting before it heard how the sign-in with ", provider, " ended. It "
              "may have finished all the same, and the integration may be connected.");
        html_raw (h, "<h2>What to do</h2>\n<ol><li>Check your dashboard or your application: if the integration "
                     "shows as connected, there is nothing more to do.</li><li>If it is not connected after a "
                     "minute, start again from Connect.</li></ol>\n");
        status = 503;
    }
    else if (strcmp (code, "unavailable") == 0 || strcmp (code, "overloaded") == 0
         ||  strcmp (code, "database_unavailable") == 0) {
        /* no rate_limited: a callback calls the provider once with its single-use code, and the
           workers limit only refreshes and connects (a Try again's retry: callback_retry) */
        html_page_begin (h, "Ferrule is busy");
        html_raw (h, "<p class=\"problem\">Ferrule could not finish the sign-in just now.</p>\n<h2>What to do</h2>\n"
                     "<p>Wait a moment and start the sign-in again from Connect.</p>\n");
        retry_form (h, attempt, "Try again");
        status = 503;
        resp->retry_after = gw_retry_after (reply, 5);
    }
    else if (strcmp (code, "bad_request") == 0 || strcmp (code, "too_large") == 0) {
        /* the address's query is not one a provider's redirect makes (the gateway's own check, or
           the worker's of the fields it was given) */
        html_page_begin (h, "This sign-in link is incomplete or damaged");
        html_raw (h, "<p class=\"problem\">The address you arrived at is missing parts the sign-in needs.</p>\n"
                     "<h2>What to do</h2>\n<p>Start again from Connect on your dashboard or in your application, "
                     "and let the provider's page send you back here by itself.</p>\n");
    }
    else {
        /* the service's failure, not the link's: an old broker or worker of a rolling upgrade that
           does not know the operation (unknown_operation, unsupported_version: gone once the
           upgrade is over), or a code this page has no words for (the log has the service's) */
        const json_t *err = json_object_get (reply, "error");
        log_error (attempt ? jstr (attempt, "integration") : NULL, req->rid, "the sign-in could not be finished: "
                   "the service answered the callback %s: %s", code,
                   jstr (err, "message") ? jstr (err, "message") : "");
        snprintf (title, sizeof title, "Ferrule could not finish the sign-in with %s", provider);
        html_page_begin (h, title);
        html_raw (h, "<p class=\"problem\">The problem is on Ferrule's side, not with your link or your "
                     "account.</p>\n<h2>What to do</h2>\n<p>Wait a few minutes, then start the sign-in again. If "
                     "it keeps failing, tell the service's operator, with the error below.</p>\n<p>Error: <strong>");
        html_text (h, code);
        html_raw (h, "</strong></p>\n");
        retry_form (h, attempt, "Try again");
        if (strcmp (code, "unknown_operation") == 0 || strcmp (code, "unsupported_version") == 0) {
            status = 503;
            resp->retry_after = 60;
        }
        else
            status = 500;
    }
    back_link (req, h, attempt, "failed", code);
    html_page_end (h);
    gw_resp_html (resp, status, h);
    html_destroy (&h);
}

void
callback_page (gw_req_t *req, gw_resp_t *resp)
{
    const char *state = gw_query (req, "state"), *code = gw_query (req, "code"), *error = gw_query (req, "error");
    const char *desc = gw_query (req, "error_description");
    json_t *args = NULL, *reply = NULL, *attempt = NULL;

    if (!state || !*state || strlen (state) > 256 || (!code && !error) || (code && strlen (code) > MAX_CODE)
    ||  (error && strlen (error) > MAX_ERROR)
    ||  !text_utf8_valid (state) || (code && !text_utf8_valid (code)) || (error && !text_utf8_valid (error))) {
        json_t *fake = json_pack ("{s:b}", "ok", 0);
        page_failed (req, resp, fake, NULL, "the provider", "bad_request");
        json_decref (fake);
        return;
    }
    args = json_pack ("{s:s}", "state", state);
    const char *binding = flow_binding (req);
    if (binding)
        json_object_set_new (args, "browser_binding", json_string (binding));
    if (code)
        json_object_set_new (args, "code", json_string (code));
    if (error)
        json_object_set_new (args, "error", json_string (error));
    if (desc) {
        /* the provider's own words, shown to the user: bytes that are not UTF-8 (a description in
           Latin-1) become '?', and a long one is shortened (the worker keeps 200 bytes of it),
           never a description dropped nor the callback refused for it */
        char plain [MAX_DESC + 1];
        if (text_utf8_valid (desc)) {
            size_t n = 0;
            for (size_t len; desc [n] && (len = text_utf8_len ((const unsigned char *) desc + n)) && n + len <= MAX_DESC;)
                n += len;
            memcpy (plain, desc, n);
            plain [n] = '\0';
        }
        else
            text_printable (plain, sizeof plain, desc, (size_t) -1, MAX_DESC);
        json_object_set_new (args, "error_description", json_string (plain));
    }
    /* both calls within the callback's 30 s: the attempt had 10 s of its own after it, so a page
       took up to 40 s during a database stall, past the deploy's drain sized on 30 s; and it is
       not asked once the service said it cannot answer now (gw_call_within) */
    gw_budget_t budget;
    gw_budget_start (&budget, GW_CALLBACK_MS);
    reply = gw_call_within (req, &budget, "callback", args);
    const char *rc = gw_code (reply);
    /* with this browser's binding: a bound attempt's retry token is issued only to its own */
    json_t *a = json_pack ("{s:s}", "state", state);
    if (binding)
        json_object_set_new (a, "browser_binding", json_string (binding));
    attempt = gw_call_within (req, &budget, "attempt", a);
    json_decref (a);
    if (strcmp (gw_code (attempt), "ok") != 0) {
        json_decref (attempt);
        attempt = NULL;
    }
    const char *provider = attempt ? jstr (attempt, "provider") : NULL;
    if (!provider)
        provider = jstr (json_object_get (json_object_get (reply, "error"), "detail"), "provider");
    if (!provider)
        provider = jstr (json_object_get (reply, "integration"), "provider");
    if (!provider)
        provider = "the provider";

    /* who must act, when only an operator can (a provider entry that asks for no offline access) */
    const char *cause = jstr (json_object_get (reply, "error"), "cause");
    if (strcmp (rc, "ok") != 0 && attempt && json_is_true (json_object_get (attempt, "browser_mismatch")))
        rc = "browser_mismatch";            /* a connect of another browser, whatever ended it */
    if (strcmp (rc, "ok") == 0)
        page_connected (req, resp, reply, attempt, provider);
    else if (strcmp (rc, "redirect_uri_mismatch") == 0 || strcmp (rc, "invalid_client") == 0
         ||  strcmp (rc, "invalid_scope") == 0 || strcmp (rc, "configuration") == 0 || strcmp (rc, "internal") == 0
         ||  strcmp (rc, "forbidden") == 0
         ||  (strcmp (rc, "no_refresh_token") == 0 && cause && strcmp (cause, "provider_entry") == 0))
        page_support (req, resp, reply, attempt, provider, rc);
    else
        page_failed (req, resp, reply, attempt, provider, rc);
    log_info (attempt ? jstr (attempt, "integration") : NULL, req->rid, "callback answered: %s", rc);
    json_decref (args);
    json_decref (reply);
    json_decref (attempt);
}

void
callback_retry (gw_req_t *req, gw_resp_t *resp)
{
    char token [200];
    if (gw_form (req, "retry_token", token, sizeof token) != 1 || !*token || strlen (token) > MAX_RETRY_TOKEN) {
        gw_resp_message (resp, 400, "This retry link is incomplete",
                         "Start again from Connect on your dashboard or in your application.");
        return;
    }
    /* the fresh connect is bound to this browser, as the dashboard's are (flow.h) */
    char binding [FLOW_BINDING_LEN + 1], *set_cookie = NULL;
    if (flow_bind (req, binding, &set_cookie) != 0) {
        mem_wipe (token, sizeof token);
        log_error (NULL, req->rid, "could not start a retry: no random bytes for its browser binding");
        gw_resp_message (resp, 500, "The sign-in could not be started again",
                         "This is a problem on the service's side. Try again in a moment.");
        return;
    }
    json_t *args = json_pack ("{s:s, s:s}", "retry_token", token, "browser_binding", binding);
    mem_wipe (binding, sizeof binding);
    json_t *reply = gw_call (req, "retry", args, GW_CALL_MS);
    mem_wipe (token, sizeof token);
    const char *rc = gw_code (reply);
    const char *url = jstr (reply, "authorization_url");
    if (strcmp (rc, "ok") == 0 && url) {
        gw_resp_redirect (resp, url);
        resp->cookie = set_cookie;
        set_cookie = NULL;
    }
    else if (strcmp (rc, "browser_mismatch") == 0)
        gw_resp_message (resp, gw_http_status (rc), "This sign-in was started in another browser",
                         "Nothing was started again. If you started this connection yourself, start it again from "
                         "the dashboard in this browser. Do not use sign-in links someone else sent you: approving "
                         "one would give them access to your account.");
    else if (strcmp (rc, "state_invalid") == 0)
        gw_resp_message (resp, 400, "This retry link has expired or was already used",
                         "Each Try again button works once, for 15 minutes. Start again from Connect on your "
                         "dashboard or in your application.");
    else if (gw_http_status (rc) == 503 || gw_http_status (rc) == 429) {
        gw_resp_message (resp, gw_http_status (rc), "Ferrule is busy",
                         "Wait a moment, then go back and press the button again.");
        resp->retry_after = gw_retry_after (reply, 5);
    }
    else
        gw_resp_message (resp, gw_http_status (rc), "The sign-in could not be started again",
                         "Start again from Connect on your dashboard or in your application.");
    mem_free_secret (&set_cookie);
    json_decref (args);
    json_decref (reply);
}
