/* doctor.c - a diagnosis from what the service knows about an integration: its status, last
 * error and flags, its chain history, the last connect attempt and the provider's catalog entry.
 * The rules run from the most specific to "healthy"; docs/troubleshooting.md is their manual. */
#define _GNU_SOURCE             /* strcasestr */
#include "doctor.h"
#include "dbwait.h"
#include "ident.h"
#include "keystats.h"
#include "clock.h"
#include "connect.h"
#include "reply.h"
#include "scopes.h"
#include "store_connect.h"
#include "log.h"
#include "mem.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS        6
#define MAX_FACTS        14
#define RECENT_ATTEMPTS  20         /* transient failures are counted over this many attempts */
/* a redirect URI mismatch at the authorization step never reaches the service: the provider shows
 * its own error page, so a connect that waits or expired may be one */
#define MISMATCH_STEP "If the provider showed an error page with redirect_uri_mismatch instead of its consent " \
                      "screen: contact support with the provider name and the exact error; connecting again does " \
                      "not help until the redirect URI is registered in the provider's OAuth app"
/* why a callback whose code exchange failed cannot be tried again */
#define CODE_SPENT "A code works once: it was sent once and is not sent again, and the provider may have " \
                   "spent it, so this callback cannot be finished. A failed connect changes no stored token."

typedef struct {
    const char *code;
    char symptom [600];
    char cause [1200];
    char step [MAX_STEPS][600];
    int nsteps;
    char fact [MAX_FACTS][400];
    int nfacts;
    int operator_only;          /* only the operator can mend it (the provider entry): a user who
                                 * connects again gets the same (the dashboard then offers no Reconnect) */
} diagnosis_t;


/* What the chain says, newest first. */
typedef struct {
    int attempts;               /* refresh attempts among the rows read */
    int recent;                 /* of which the newest RECENT_ATTEMPTS ... */
    int recent_transient;       /* ... and how many failed transiently */
    const store_chain_t *last_attempt;
    const store_chain_t *origin;            /* newest imported or connected row */
    const store_chain_t *invalid_grant;     /* newest invalid_grant */
    const store_chain_t *connect_failed;    /* newest connect_failed, if newer than origin */
    const store_chain_t *refreshed;         /* newest successful refresh */
    const store_chain_t *disconnected;
    const store_chain_t *interrupted;       /* an "interrupted" row at the newest invalid_grant's generation */
    const store_chain_t *last_use;          /* the newest refresh, import or connect before that invalid_grant:
                                             * when its refresh token was last used or issued */
    int kept_spent;             /* that newest refresh was a single-use provider's answer without a
                                 * refresh token (STORE_COMMIT_NOTE_KEPT_SPENT): it kept a spent one */
    int rotations;              /* refreshes that rotated, since origin */
    int unusable;               /* the last attempt stored a refresh token without a usable access
                                 * token (its commit kept the provider's fault as the last error) */
    int reuse_suspected;        /* evidence that a replaced refresh token was presented: a conflict
                                 * close to the invalid_grant, an interrupted rotation, or the
                                 * provider saying so (not a rotation before it: at a provider that
                                 * rotates on every refresh, one always is) */
    const char *reuse_evidence; /* ... which, in words */
} chain_facts_t;

static void add_fact (diagnosis_t *d, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
static void add_step (diagnosis_t *d, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
add_fact (diagnosis_t *d, const char *fmt, ...)
{
    if (d->nfacts == MAX_FACTS)
        return;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (d->fact [d->nfacts++], sizeof d->fact [0], fmt, ap);
    va_end (ap);
}

static void
add_step (diagnosis_t *d, const char *fmt, ...)
{
    if (d->nsteps == MAX_STEPS)
        return;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (d->step [d->nsteps++], sizeof d->step [0], fmt, ap);
    va_end (ap);
}

/* A step put before the others: what the user met last comes first. */
static void
first_step (diagnosis_t *d, const char *text)
{
    if (d->nsteps == MAX_STEPS)
        d->nsteps--;
    memmove (d->step [1], d->step [0], (size_t) d->nsteps * sizeof d->step [0]);
    snprintf (d->step [0], sizeof d->step [0], "%s", text);
    d->nsteps++;
}

static const char *
at (int64_t epoch, char *buf, size_t len)
{
    return epoch > 0 ? clock_rfc3339 (epoch, buf, len) : "an unknown time";
}

static int
is_attempt (const char *outcome)
{
    static const char *const attempts [] = { "refreshed", "invalid_grant", "transient", "invalid_client",
                                             "bad_response", "configuration", "error", NULL };
    for (int i = 0; outcome && attempts [i]; i++)
        if (strcmp (outcome, attempts [i]) == 0)
            return 1;
    return 0;
}

static int
outcome_is (const store_chain_t *r, const char *outcome)
{
    return r && r->outcome && strcmp (r->outcome, outcome) == 0;
}

/* The provider's own words for a refresh token presented after it was replaced, in what it
 * answered (not in the integration's id, which the detail names first). */
static int
says_reuse (const char *detail)
{
    const char *said = detail ? strstr (detail, "\" answered ") : NULL;
    if (!said)
        said = detail;
    return said && (strcasestr (said, "reuse") || strcasestr (said, "already used")
                    || strcasestr (said, "already been used"));
}

static void
read_chain (const store_chain_t *rows, size_t n, chain_facts_t *cf)
{
    memset (cf, 0, sizeof *cf);
    for (size_t i = 0; i < n; i++) {
        const store_chain_t *r = &rows [i];
        if (!cf->origin && (outcome_is (r, "imported") || outcome_is (r, "connected")))
            cf->origin = r;
        if (!cf->origin && !cf->connect_failed && outcome_is (r, "connect_failed"))
            cf->connect_failed = r;
        if (!cf->disconnected && outcome_is (r, "disconnected"))
            cf->disconnected = r;
        if (!cf->refreshed && outcome_is (r, "refreshed"))
            cf->refreshed = r;
        if (!cf->origin && outcome_is (r, "refreshed") && r->rotated)
            cf->rotations++;
        if (!is_attempt (r->outcome))
            continue;
        cf->attempts++;
        if (!cf->last_attempt)
            cf->last_attempt = r;
        if (cf->recent < RECENT_ATTEMPTS) {
            cf->recent++;
            if (outcome_is (r, "transient"))
                cf->recent_transient++;
        }
        if (!cf->invalid_grant && !cf->origin && outcome_is (r, "invalid_grant")) {
            cf->invalid_grant = r;
            if (says_reuse (r->detail)) {
                cf->reuse_suspected = 1;
                cf->reuse_evidence = "the provider said so when it refused it";
            }
            /* an interrupted refresh of the same generation explains it (newest rows first) */
            for (size_t k = i + 1; k < n && rows [k].generation == r->generation; k++)
                if (outcome_is (&rows [k], "interrupted")) {
                    cf->interrupted = &rows [k];
                    if (!cf->reuse_suspected)
                        cf->reuse_evidence = "a refresh was interrupted while the provider rotated the token";
                    cf->reuse_suspected = 1;
                    break;
                }
            /* a refresh of the same token whose answer was lost after it was sent (timed out) or
             * was unusable: the provider may have rotated then, and the token presented again
             * afterwards was a spent one (the guide's Box case) */
            for (size_t k = i + 1; k < n && rows [k].generation == r->generation; k++)
                if ((outcome_is (&rows [k], "transient") && rows [k].detail
                     && strstr (rows [k].detail, "provider call timed out"))
                ||  outcome_is (&rows [k], "bad_response")) {
                    if (!cf->reuse_suspected)
                        cf->reuse_evidence = "an earlier refresh of the same token got no usable answer (it timed "
                                             "out, or the answer was unusable), so the provider may have rotated it "
                                             "then without the new token arriving";
                    cf->reuse_suspected = 1;
                    break;
                }
            for (size_t k = i + 1; k < n; k++)
                if (outcome_is (&rows [k], "refreshed") || outcome_is (&rows [k], "imported")
                ||  outcome_is (&rows [k], "connected")) {
                    cf->last_use = &rows [k];
                    cf->kept_spent = outcome_is (&rows [k], "refreshed") && rows [k].detail
                                  && strstr (rows [k].detail, STORE_COMMIT_NOTE_KEPT_SPENT);
                    break;
                }
            /* a conflict close to it, back to the attempt before it */
            for (size_t k = i + 1; k < n && k <= i + 5; k++) {
                if (outcome_is (&rows [k], "conflict")) {
                    if (!cf->reuse_suspected)
                        cf->reuse_evidence = "a refresh whose result lost to another, close before the refusal";
                    cf->reuse_suspected = 1;
                }
                if (is_attempt (rows [k].outcome))
                    break;
                if (outcome_is (&rows [k], "imported") || outcome_is (&rows [k], "connected"))
                    break;
            }
        }
    }
}

/* "ferrulectl connect ..." for the steps, with the redirect URI of the last attempt when known. */
static void
connect_command (char *buf, size_t len, const char *id, const char *provider, const store_attempt_t *a)
{
    snprintf (buf, len, "ferrulectl connect --integration %s --provider %s --redirect-uri %s", id,
              provider ? provider : "PROVIDER", a->found ? a->redirect_uri : "REDIRECT_URI");
}

/* The symptom, cause and steps of a code. ctx strings are used where the text names them.
 * at_connect: the code is how the last connect's callback failed, not a refresh's outcome.
 * requested: the scopes the integration's last connect asked for, NULL when not known.
 * no_refresh: it holds no refresh token; never_expires: nor do its tokens expire (connect_never_expires).
 * held_report: the scope an upstream API reported missing, when the grant holds it already; else NULL.
 * failure: at_connect, what the failed callback said (its message), or NULL. */
static void
explain (diagnosis_t *d, const char *code, const char *id, const char *provider, const catalog_provider_t *p,
         const store_attempt_t *a, const chain_facts_t *cf, int at_connect, const char *requested,
         int no_refresh, int never_expires, const char *held_report, const char *failure)
{
    char cmd [600];
    const char *name = provider ? provider : "the provider";
    connect_command (cmd, sizeof cmd, id, provider, a);
    d->code = code;

    /* the callback's state, and the code it carried, are spent whatever failed: only a new connect
     * helps (the callback's own hint), not the retry that fits a refresh */
    if (at_connect && (strcmp (code, "provider_unavailable") == 0 || strcmp (code, "provider_bad_response") == 0
                       || strcmp (code, "internal") == 0)) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" failed after the redirect back from %s, with %s.",
                  id, name, code);
        if (strcmp (code, "provider_unavailable") == 0)
            snprintf (d->cause, sizeof d->cause, "%s failed while the authorization code was exchanged for tokens (a "
                      "server error, a rate limit, a timeout or no connection). " CODE_SPENT, name);
        else
        if (strcmp (code, "provider_bad_response") == 0)
            snprintf (d->cause, sizeof d->cause, "%s answered the code exchange with something that is not a token "
                      "response (an HTML page from a proxy, an empty body, an answer without a usable access "
                      "token). " CODE_SPENT, name);
        else
            snprintf (d->cause, sizeof d->cause, "The service failed while finishing the connect (it could not open "
                      "what it kept for the connect, or could not start the call to %s). The callback's state is "
                      "used up, so the same callback URL cannot be tried again. A failed connect changes no stored "
                      "token.", name);
        add_step (d, "Start again from Connect: %s, then open the printed URL and pass the URL the browser lands on "
                  "to ferrulectl callback --url", cmd);
        if (strcmp (code, "provider_unavailable") == 0)
            add_step (d, "If it fails again, wait a few minutes, and check the provider's status page and the "
                      "workers' network path to it");
        else
        if (strcmp (code, "provider_bad_response") == 0)
            add_step (d, "If it fails again, report it with the failure below: something between the workers and %s "
                      "(a proxy, a firewall) may be answering in its place", name);
        else
            add_step (d, "Operators: read the worker log for this integration at the time below; it says what failed");
    }
    else
    if (strcmp (code, "rotation_interrupted") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail with needs_reconnect; the history "
                  "shows an interrupted refresh right before the provider refused the refresh token.", id);
        snprintf (d->cause, sizeof d->cause, "A worker stopped (killed, crashed, or stalled past its lease) while %s "
                  "was rotating the refresh token. %s issued a new refresh token and invalidated the old one, but "
                  "its answer never reached the database, so the only valid refresh token was lost. %s", name, name,
                  p && p->reuse_grace_seconds ? "This provider accepts the old token again for a short grace period; "
                  "the grace had passed before the next refresh." : "This provider accepts a refresh token only once, "
                  "so no retry can recover it.");
        add_step (d, "Operators: check whether the worker the history below names is still running. One that "
                  "stalled, or lost only its database connection, still holds the new refresh token and commits it "
                  "once the database answers it: the integration then recovers by itself (history: refreshed, "
                  "\"recovered\"). Disconnecting before that destroys the token it would commit");
        add_step (d, "If that worker stopped: disconnect the integration: ferrulectl disconnect --integration %s", id);
        add_step (d, "Connect it again and approve the provider's consent screen: %s, then open the printed URL "
                  "and pass the URL the browser lands on to ferrulectl callback --url", cmd);
        add_step (d, "Operators: find why the worker stopped at that time (its logs, the pod's events)");
    }
    else
    if (strcmp (code, "needs_reconnect") == 0) {
        /* unused longer than the provider keeps an unused refresh token: its expiry, whatever the
         * rotation (the sweep's keep-alive refreshes at half that age, so it could not) */
        int idle_days = p ? p->refresh_token_idle_days : 0;
        int64_t unused_s = cf && cf->invalid_grant && cf->last_use ? cf->invalid_grant->at - cf->last_use->at : -1;
        int idle = idle_days > 0 && unused_s >= (int64_t) idle_days * 86400;
        /* single use: evidence of a replaced token presented again (read_chain), or a refusal at the
         * first refresh after the connect (the guide's "works once after connecting") */
        int first = cf && cf->last_use && cf->last_use == cf->origin;
        int single_use = p && p->refresh_token_rotation == CATALOG_ROTATION_SINGLE_USE;
        int box = single_use && cf && !idle && (cf->reuse_suspected || first);
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail with needs_reconnect after it had "
                  "worked for a while; callers see an unauthorized or token refresh error.", id);
        /* issue 12: a grant that died about as long after its consent as the provider allows a
         * testing-mode app (Google: 7 days; the catalog's grant_max_days). Only an entry that sets
         * grant_max_days says its grants end so; for another Google entry it is one cause among
         * others (a user's removal of the app's access looks the same) */
        int stated = p && p->grant_max_days > 0;
        int64_t limit_days = stated ? p->grant_max_days : catalog_is_google (p) ? 7 : 0;
        int64_t lived_s = cf && cf->origin && cf->invalid_grant ? cf->invalid_grant->at - cf->origin->at : -1;
        int grant_limit = limit_days > 0 && lived_s >= limit_days * 86400 - 43200 && lived_s <= limit_days * 86400 + 129600;
        char stops [80] = "the old one stops working at once";
        if (p && p->reuse_grace_seconds > 0)
            snprintf (stops, sizeof stops, "the old one works only %d seconds more", p->reuse_grace_seconds);
        if (no_refresh && !(cf && cf->invalid_grant)) {
            /* no refresh token to refuse: a caller reported the access token rejected */
            snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail with needs_reconnect: an API "
                      "rejected its access token; callers see an unauthorized error.", id);
            if (never_expires)
                snprintf (d->cause, sizeof d->cause, "%s's access tokens do not expire and it issued no refresh "
                          "token, so only the provider can end one, and it did: an API rejected the token (a caller "
                          "reported it with token --reject). The user revoked the app's access in the provider's "
                          "settings, or the provider ended the grant (an authorization again elsewhere, an app's "
                          "access removed by an administrator).", name);
            else
                snprintf (d->cause, sizeof d->cause, "%s issued no refresh token when the integration was connected, "
                          "and an API rejected its access token before it expired (a caller reported it with token "
                          "--reject): the user revoked the app's access in the provider's settings, or the provider "
                          "ended the grant (an authorization again elsewhere, an app's access removed by an "
                          "administrator). Nothing can renew it, so it is no longer handed out.", name);
        }
        else
        if (cf && cf->kept_spent) {
            char buf [40];
            snprintf (d->cause, sizeof d->cause, "%s uses single-use refresh tokens, but it answered the last refresh "
                      "before the refusal (at %s) without a new refresh token: the provider's fault. The refresh "
                      "token sent was kept, as nothing else was left to keep, and the provider had spent it, so it "
                      "refused it the next time. The user did nothing wrong; if this recurs, report it to the "
                      "provider, or check the catalog entry's refresh_token_rotation.", name,
                      at (cf->last_use->at, buf, sizeof buf));
        }
        else
        if (grant_limit) {
            char buf [40];
            if (!stated)
                snprintf (d->cause, sizeof d->cause, "The grant stopped working %.1f days after it was connected. That "
                          "fits the %lld-day limit Google puts on refresh tokens of an OAuth app whose consent screen "
                          "is in Testing (every such grant dies about %lld days after consent, however often it is "
                          "used), but the user may as well have removed the app's access, or the account authorized "
                          "the app again elsewhere: the provider entry does not say the app is in Testing "
                          "(grant_max_days).", (double) lived_s / 86400.0, (long long) limit_days,
                          (long long) limit_days);
            else
            if (catalog_is_google (p))
                snprintf (d->cause, sizeof d->cause, "The grant stopped working %.1f days after it was connected, which "
                          "is the %lld-day limit %s puts on refresh tokens of an OAuth app whose consent screen is in "
                          "Testing: every such grant dies about %lld days after consent, however often it is used.",
                          (double) lived_s / 86400.0, (long long) limit_days, name, (long long) limit_days);
            else
                snprintf (d->cause, sizeof d->cause, "The grant stopped working %.1f days after it was connected, which "
                          "is the %lld-day limit %s puts on a grant: its refresh tokens die about %lld days after "
                          "consent, however often they are used.",
                          (double) lived_s / 86400.0, (long long) limit_days, name, (long long) limit_days);
            add_fact (d, "connected at %s, refused (invalid_grant) %.1f days later", at (cf->origin->at, buf, sizeof buf),
                      (double) lived_s / 86400.0);
        }
        else
        if (idle) {
            char buf [40];
            snprintf (d->cause, sizeof d->cause, "%s drops a refresh token that goes unused for %d days, and this one "
                      "was last used %.1f days before the provider refused it. The sweep refreshes such tokens at half "
                      "that age to keep them alive; it could not here (the integration's partition had no worker, the "
                      "provider kept failing, or the sweep is off).", name, idle_days, (double) unused_s / 86400.0);
            add_fact (d, "its refresh token was last used or issued at %s (%s), %.1f days before the refusal",
                      at (cf->last_use->at, buf, sizeof buf), cf->last_use->outcome, (double) unused_s / 86400.0);
        }
        else
        if (box && !cf->reuse_suspected)
            snprintf (d->cause, sizeof d->cause, "%s uses single-use refresh tokens: every refresh returns a new "
                      "refresh token and %s. The provider refused the first refresh "
                      "after the integration was connected, which is what happens when the refresh token it issued "
                      "was used elsewhere first (a copy of the token, or another system connected with the same "
                      "grant), or the user revoked the app's access right away.", name, stops);
        else
        if (box)
            snprintf (d->cause, sizeof d->cause, "%s uses single-use refresh tokens: every refresh returns a new "
                      "refresh token and %s. The history shows a refresh token used after it was replaced (%s), "
                      "which is what happens when two refreshes race, a refresh's answer is lost, or a copy of the "
                      "token is used outside this service: the provider then invalidates the whole chain.", name,
                      stops, cf->reuse_evidence ? cf->reuse_evidence : "see the history");
        else
        if (catalog_is_google (p))
            snprintf (d->cause, sizeof d->cause, "Google no longer accepts the stored refresh token: the user removed "
                      "the app's access, the token went unused for 6 months (7 days while the app's consent screen "
                      "is in Testing), or the account authorized the app more than 100 times, which silently drops "
                      "the oldest tokens.");
        else
            /* single use alone is no evidence of a reuse: every refresh there rotates */
            snprintf (d->cause, sizeof d->cause, "%s no longer accepts the stored refresh token: the user revoked the "
                      "app's access in the provider's settings, the provider expired the token (unused too long, "
                      "or past its lifetime), or the integration was authorized again in a way that replaced this "
                      "grant.%s%s%s", name, single_use ? " " : "", single_use ? name : "",
                      single_use ? " uses single-use refresh tokens, but the history shows no sign of a replaced one "
                      "presented again: no conflicting refresh, no interrupted one, and the provider did not mention "
                      "reuse." : "");
        add_step (d, "Disconnect the integration: ferrulectl disconnect --integration %s", id);
        add_step (d, "Connect it again and approve the provider's consent screen: %s, then open the printed URL "
                  "and pass the URL the browser lands on to ferrulectl callback --url", cmd);
        add_step (d, "Nothing else changes for callers: they keep asking for tokens of \"%s\" and get the new ones", id);
        if (idle)
            add_step (d, "Operators: if integrations of %s keep dying this way, check that the sweep runs and owns every "
                      "partition, and watch the \"expiring\" events, which warn at 80 %% of the idle limit", name);
        if (grant_limit && !stated) {
            add_step (d, "Publish the OAuth app if its consent screen is in Testing (Google Cloud console, OAuth consent "
                      "screen: \"Publish app\"), so that its grants stop ending after %lld days; while it stays in "
                      "Testing, set \"grant_max_days\": %lld in the provider entry, and the \"expiring\" event warns "
                      "ahead of it", (long long) limit_days, (long long) limit_days);
            add_step (d, "If the app is published, the user removed its access or authorized it again elsewhere "
                      "(https://myaccount.google.com/permissions lists the apps that have access): connecting again "
                      "is all it takes");
        }
        else
        if (grant_limit && catalog_is_google (p))
            add_step (d, "Publish the OAuth app (Google Cloud console, OAuth consent screen: \"Publish app\") so that its "
                      "grants stop expiring; until then every user must connect again every %lld days (the "
                      "\"expiring\" event warns a day ahead when the catalog entry sets grant_max_days)",
                      (long long) limit_days);
        else
        if (grant_limit)
            add_step (d, "Every user of %s must connect again every %lld days; the \"expiring\" event warns ahead of "
                      "it (at 80 %% of the limit)", name, (long long) limit_days);
        if (box) {
            add_step (d, "Do not use this account's tokens from anywhere else, and right after connecting let the "
                      "first request finish before sending many at once");
            add_step (d, "If it happens again under load, report it with this output: the service serializes "
                      "refreshes per integration, so a repeat points to a second user of the same tokens");
        }
    }
    else
    if (strcmp (code, "no_refresh_token") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "\"%s\" worked right after connecting, then its token requests "
                  "failed with no_refresh_token once the first access token expired (about an hour for Google); "
                  "reconnecting helps only until the next expiry.", id);
        if (catalog_offline_param_missing (p)) {
            const char *param = catalog_offline_param_missing (p);
            snprintf (d->cause, sizeof d->cause, "%s returned no refresh token when the integration was connected, "
                      "because the provider entry does not ask for offline access: its authorization_params lack %s, "
                      "without which no refresh token is issued whatever the user approves. A providers file's "
                      "authorization_params replace the built-in ones whole, so an override that adds a parameter "
                      "of its own drops the ones it does not repeat.", name, param);
            d->operator_only = 1;
            add_step (d, "Operators: add %s%s to the authorization_params of provider \"%s\" in the providers "
                      "file, beside the parameters of your own, and restart the workers", param,
                      catalog_is_google (p) ? " (and prompt=consent)" : "", name);
            add_step (d, "Then connect again: %s", cmd);
            add_step (d, "Check the result: ferrulectl doctor --integration %s should say healthy", id);
        }
        else
        if (catalog_is_google (p)) {
            snprintf (d->cause, sizeof d->cause, "Google returned no refresh token when the integration was "
                      "connected. Google issues one only for offline access, and for an account that had already "
                      "approved the app only when the consent screen is shown again (prompt=consent); a connect "
                      "that skips the screen comes back with an access token alone.");
            add_step (d, "Open https://myaccount.google.com/permissions with the Google account of this integration "
                      "and remove the app's access");
            add_step (d, "Connect again: %s; Google now shows the full consent screen and issues a refresh token", cmd);
            add_step (d, "Check the result: ferrulectl doctor --integration %s should say healthy", id);
        }
        else
        if (requested && catalog_refresh_scope_missing (p, requested)) {
            const char *unasked = catalog_refresh_scope_missing (p, requested);
            snprintf (d->cause, sizeof d->cause, "%s returned no refresh token when the integration was connected, "
                      "because the connect did not ask for \"%.100s\", which %s needs to issue one (it asked for "
                      "\"%.300s\"). A connect asks for it whatever scopes it names (the provider entry's "
                      "refresh_token_scopes); this one was started without it, by an earlier version of the service "
                      "or under another provider entry.", name, unasked, name, requested);
            add_step (d, "Connect again with the same scopes: %s --scope ... (the connect adds \"%.100s\"), and "
                      "approve the provider's consent screen", cmd, unasked);
            add_step (d, "Check the result: ferrulectl doctor --integration %s should say healthy", id);
        }
        else
        if (requested && p && p->refresh_token_scope_count) {
            snprintf (d->cause, sizeof d->cause, "%s returned no refresh token when the integration was connected, "
                      "although the connect asked for \"%.100s\", the scope it needs to issue one: the user did not "
                      "approve offline access on the consent screen, or the OAuth app may not be granted it.", name,
                      p->refresh_token_scopes [0]);
            add_step (d, "Remove the app's access in the account's settings at the provider, then connect again and "
                      "approve every permission: %s", cmd);
            add_step (d, "If you manage the OAuth app, check that it may be granted offline access (refresh tokens)");
        }
        else {
            snprintf (d->cause, sizeof d->cause, "%s returned no refresh token when the integration was connected, so "
                      "its access token cannot be renewed. Providers issue one only when offline access is asked "
                      "for (a scope such as offline_access, or a parameter such as access_type=offline) and, for "
                      "some, only on a full consent screen.", name);
            add_step (d, "Check that the provider entry of \"%s\" asks for offline access (its refresh_token_scopes, "
                      "scopes and authorization parameters)", name);
            add_step (d, "Remove the app's access in the account's settings at the provider, then connect again: %s", cmd);
        }
    }
    else
    if (strcmp (code, "insufficient_scope") == 0 && held_report) {
        /* the grant holds what the API named: a reconnect would get the same grant, so approving
         * everything again is no remedy; the app's permissions or the API's real need are */
        snprintf (d->symptom, sizeof d->symptom, "\"%s\" connects and hands out tokens, but some API calls fail with "
                  "insufficient_scope or permission denied.", id);
        snprintf (d->cause, sizeof d->cause, "An upstream API answered insufficient_scope naming \"%.200s\", which the "
                  "grant holds already: the user approved it. The API needs another permission than the one it "
                  "named, or %s's OAuth app (or the account at the API) lacks the permission behind that scope.",
                  held_report, name);
        add_step (d, "If you manage the OAuth app, check that its configured scopes and permissions include what "
                  "the failing call needs (for \"%.200s\", the provider's developer console)", held_report);
        add_step (d, "Check in the API's documentation which scope the failing call needs; if it is another one, "
                  "connect again with it: %s --scope ...", cmd);
        add_step (d, "Reconnecting and approving everything again does not help while the grant holds \"%.200s\"",
                  held_report);
    }
    else
    if (strcmp (code, "insufficient_scope") == 0 || strcmp (code, "scopes_reduced") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "\"%s\" connects and hands out tokens, but some API calls fail with "
                  "insufficient_scope or permission denied.", id);
        snprintf (d->cause, sizeof d->cause, "The grant lacks a permission the API needs: the user approved fewer "
                  "permissions than were requested, or the permission was never among the requested scopes.");
        add_step (d, "Disconnect and connect again (%s), and on the provider's permission screen accept everything "
                  "requested; if it offers minimal or full access, choose full access", cmd);
        add_step (d, "If the missing scope was not requested, add it to the connect with --scope");
        add_step (d, "If you manage the OAuth app, check that its configured scopes include what the integration needs");
    }
    else
    if (strcmp (code, "redirect_uri_mismatch") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" fails at once, or right after approving, with "
                  "redirect_uri_mismatch from the provider.", id);
        snprintf (d->cause, sizeof d->cause, "The redirect URI sent to %s%s%s%s is not one registered in the "
                  "provider's OAuth app (developer console). Providers compare it exactly: scheme, host, port, path "
                  "and trailing slash.", name, a->found ? " (\"" : "", a->found ? a->redirect_uri : "",
                  a->found ? "\")" : "");
        add_step (d, "Operator: register the exact redirect URI in the OAuth app of %s, or connect with one that "
                  "is registered there", name);
        add_step (d, "Users: contact support with the provider name and the exact error message; connecting again "
                  "does not help until the app is fixed");
        add_step (d, "Then connect again: %s", cmd);
    }
    else
    if (strcmp (code, "invalid_client") == 0 && !at_connect && cf->last_attempt && cf->last_attempt->detail
        && strstr (cf->last_attempt->detail, "answered unauthorized_client")) {
        /* the credentials were accepted: the app may not use the refresh_token grant (RFC 6749
         * 5.2), or the refresh token was issued to another client id */
        snprintf (d->symptom, sizeof d->symptom, "Refreshing the token of \"%s\" fails with invalid_client: %s "
                  "answered unauthorized_client.", id, name);
        snprintf (d->cause, sizeof d->cause, "%s accepted the OAuth client but refuses it the refresh: the OAuth "
                  "app is not allowed the refresh_token grant (an Auth0 or Okta application without it enabled), or "
                  "the refresh token was issued to another client id (Google answers so when the entry's client id "
                  "changed since the integration was connected).", name);
        add_step (d, "Operator: enable the refresh_token grant (refresh tokens) for the OAuth app in %s's settings, "
                  "then ask for a token again", name);
        add_step (d, "If the client id of %s (%s, or the providers file) was changed since the integration was "
                  "connected, the refresh token belongs to the old one: connect again: %s", name,
                  p && p->client_id_env ? p->client_id_env : "the client id variable", cmd);
    }
    else
    if (strcmp (code, "invalid_client") == 0 && at_connect && failure && strstr (failure, "at the authorization step")) {
        /* the user was sent to the provider with the client id alone: no secret was ever checked */
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" fails with invalid_client at %s's authorization "
                  "step, before the user could approve.", id, name);
        snprintf (d->cause, sizeof d->cause, "%s refused the OAuth client at the authorization step, when the user "
                  "was sent to sign in, where only the client id goes, no secret: the client id is wrong or belongs "
                  "to a deleted app, or the app does not allow the authorization code flow (or this kind of "
                  "account, such as a work account at an app for personal accounts only).", name);
        add_step (d, "Operator: check the client id of %s (%s, or the providers file) against the provider's OAuth "
                  "app, and that the app allows the authorization code flow for the accounts that connect", name,
                  p && p->client_id_env ? p->client_id_env : "the client id variable");
        add_step (d, "Restart the workers after changing the provider entry");
        add_step (d, "Then connect again: %s", cmd);
    }
    else
    if (strcmp (code, "invalid_client") == 0 && at_connect && failure && strstr (failure, "unauthorized_client")) {
        /* the secret was accepted: the app may not use the grant (RFC 6749 5.2) */
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" fails after the redirect back from %s with "
                  "invalid_client: %s answered unauthorized_client.", id, name, name);
        snprintf (d->cause, sizeof d->cause, "%s accepted the OAuth client at the code exchange but refuses it the "
                  "authorization code grant: the OAuth app is not allowed that grant (an Auth0 or Okta application "
                  "without \"Authorization Code\" among its grant types). Its client secret is not the problem.", name);
        add_step (d, "Operator: enable the authorization code grant for the OAuth app in %s's settings", name);
        add_step (d, "Then connect again: %s", cmd);
    }
    else
    if (strcmp (code, "invalid_client") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting or refreshing \"%s\" fails with invalid_client, as it "
                  "does for every integration of %s.", id, name);
        snprintf (d->cause, sizeof d->cause, "%s rejected the OAuth client id or secret this service uses for it "
                  "(a rotated or mistyped secret, or a deleted app).", name);
        add_step (d, "Check the client id and secret of %s (%s and %s, or the providers file) against the "
                  "provider's OAuth app", name, p && p->client_id_env ? p->client_id_env : "the client id variable",
                  p && p->client_secret_env ? p->client_secret_env : "the client secret variable");
        add_step (d, "Restart the workers after changing them");
        if (at_connect)
            add_step (d, "Then connect again: %s", cmd);
        else
            add_step (d, "No reconnect is needed for this, unless the provider also rejected the refresh token");
    }
    else
    if (strcmp (code, "invalid_scope") == 0 && !at_connect) {
        snprintf (d->symptom, sizeof d->symptom, "Refreshing the token of \"%s\" fails with invalid_scope.", id);
        snprintf (d->cause, sizeof d->cause, "%s refused a scope the refresh asked for: a refresh may ask only for "
                  "scopes the grant holds, and the provider entry asks for one it does not (its refresh_params), or "
                  "the OAuth app lost it.", name);
        add_step (d, "Compare the provider entry's refresh_params scope with the scopes the integration was granted "
                  "(ferrulectl status shows them)");
        add_step (d, "Correct the entry and restart the workers; or connect again with the scopes the refresh asks "
                  "for: %s --scope ...", cmd);
    }
    else
    if (strcmp (code, "invalid_scope") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" fails with invalid_scope.", id);
        snprintf (d->cause, sizeof d->cause, "%s refused one of the requested scopes: it is misspelled, unknown to "
                  "the provider, or not enabled for the OAuth app.", name);
        add_step (d, "Compare the scopes of the connect (--scope, or the provider entry's default scopes) with the "
                  "provider's documentation and the OAuth app's configuration");
        add_step (d, "Connect again with the corrected scopes: %s --scope ...", cmd);
    }
    else
    if (strcmp (code, "code_expired_or_used") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" fails after the redirect back from the provider "
                  "with invalid_grant (code_expired_or_used).", id);
        snprintf (d->cause, sizeof d->cause, "The authorization code the provider returned was already used or had "
                  "expired before it was exchanged; most providers let a code live about a minute.");
        add_step (d, "Start again from Connect: %s", cmd);
        add_step (d, "Do not use the browser's back button or reload the callback URL, and approve within a minute");
        add_step (d, "If it keeps failing, clear the browser's cookies for the provider's site and try from a fresh tab");
    }
    else
    if (strcmp (code, "state_invalid") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Finishing the connect of \"%s\" fails with state_invalid.", id);
        snprintf (d->cause, sizeof d->cause, "The callback was opened twice or reloaded, or came after the connect "
                  "flow expired.");
        add_step (d, "Start again from Connect: %s, and open the callback URL once", cmd);
    }
    else
    if (strcmp (code, "browser_mismatch") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Finishing the connect of \"%s\" fails with browser_mismatch.", id);
        snprintf (d->cause, sizeof d->cause, "The connect was started from the dashboard, which binds it to that "
                  "browser, and the provider sent back another browser: the sign-in link was opened elsewhere or "
                  "sent to someone. The code was not exchanged.");
        add_step (d, "Start the connection again from the dashboard, and finish it in the same browser");
        add_step (d, "Never send the provider's sign-in link to someone else, nor use one you were sent");
    }
    else
    if (strcmp (code, "access_denied") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" ends with access_denied.", id);
        snprintf (d->cause, sizeof d->cause, "The user declined the request on %s's consent screen (or an "
                  "administrator policy refused it).", name);
        add_step (d, "Connect again and approve the requested access: %s", cmd);
        add_step (d, "If an administrator controls the account, ask them to allow the app");
    }
    else
    if (strcmp (code, "disconnected") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" answer disconnected.", id);
        snprintf (d->cause, sizeof d->cause, "The integration was disconnected: its stored tokens were destroyed "
                  "(and revoked at the provider where it has a revocation endpoint). Its history is kept.");
        add_step (d, "Connect it again to use it: %s", cmd);
        add_step (d, "See what happened before: ferrulectl history --integration %s", id);
    }
    else
    if (strcmp (code, "provider_unavailable") == 0 && cf && cf->unusable) {
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail with provider_bad_response; the "
                  "integration stays active.", id);
        snprintf (d->cause, sizeof d->cause, "%s's last answer to a refresh carried a new refresh token but no usable "
                  "access token. The provider may have spent the refresh token sent, so the new one was stored, "
                  "with no access token: callers get provider_bad_response until the next refresh, after the "
                  "backoff, gets one.", name);
        add_step (d, "Retry later, after retry_after when the error gives it; callers should back off");
        add_step (d, "If every answer comes without a usable access token, report it to the provider with the last "
                  "error below, and check the workers' network path to it (a proxy rewriting the answer)");
        add_step (d, "No reconnect is needed");
    }
    else
    if (strcmp (code, "provider_unavailable") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail now and then with "
                  "provider_unavailable; the integration stays active.", id);
        snprintf (d->cause, sizeof d->cause, "%s's token endpoint failed transiently: server errors, rate limits "
                  "(429), timeouts or connection failures, or answers that are not a token response (an HTML page "
                  "from a proxy, an empty body).", name);
        add_step (d, "Retry later, after retry_after when the error gives it; callers should back off");
        add_step (d, "If it lasts, check the provider's status page and the workers' network path to it");
        add_step (d, "No reconnect is needed");
    }
    else
    if (strcmp (code, "configuration") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "Requests for \"%s\" fail with a configuration error.", id);
        snprintf (d->cause, sizeof d->cause, "The service is not set up for %s: the provider is missing from the "
                  "catalog, its client credentials are not set, or the provider refused a request the catalog "
                  "entry describes.", name);
        add_step (d, "Read the last error below, fix the provider entry or the workers' environment, and restart the workers");
        add_step (d, "If it names a key id that no configured key has, the key that sealed the stored tokens is missing: "
                  "put it back in FERRULE_ENCRYPTION_OLD_KEYS, restart the workers, and run \"ferrule-migrate rekey\"");
    }
    else
    if (strcmp (code, "internal") == 0) {
        /* a failure before the provider is called (refresh.c's "error" outcome): it repeats, after
         * each backoff, until an operator acts */
        snprintf (d->symptom, sizeof d->symptom, "Token requests for \"%s\" fail with internal, and %s is not "
                  "called; the integration stays active.", id, name);
        snprintf (d->cause, sizeof d->cause, "The worker failed before it could call %s: the stored refresh token "
                  "does not open (the value was damaged, altered or copied from another row, or sealed under a key "
                  "the workers do not hold), or the call could not be started. It does not pass by itself: every "
                  "refresh fails the same way, after a backoff.", name);
        add_step (d, "Operators: read the worker log for this integration (\"could not refresh integration\"); the "
                  "last error below says the same");
        add_step (d, "If the stored token does not open, the key that sealed it must be one of the workers' keys "
                  "(FERRULE_ENCRYPTION_KEY or FERRULE_ENCRYPTION_OLD_KEYS): put it back and restart the workers");
        add_step (d, "If that key is lost or the stored value was altered, the token cannot be recovered: disconnect "
                  "(ferrulectl disconnect --integration %s) and connect again: %s", id, cmd);
    }
    else
    if (strcmp (code, "connect_pending") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "\"%s\" has no tokens yet: its connect was started and waits for "
                  "the user.", id);
        snprintf (d->cause, sizeof d->cause, "The user has not come back from %s's consent screen yet. If the "
                  "provider showed an error page instead (redirect_uri_mismatch: the redirect URI is not registered "
                  "in its OAuth app), nothing comes back to the service.", name);
        add_step (d, "Open the authorization URL, approve, and pass the URL the browser lands on to ferrulectl "
                  "callback --url");
        add_step (d, "%s", MISMATCH_STEP);
    }
    else
    if (strcmp (code, "connect_incomplete") == 0) {
        snprintf (d->symptom, sizeof d->symptom, "\"%s\" has no tokens: its last connect never finished.", id);
        snprintf (d->cause, sizeof d->cause, "The callback never reached the service before the connect expired, or "
                  "the code exchange was interrupted. A provider that shows an error page instead of redirecting "
                  "back (redirect_uri_mismatch: the redirect URI is not registered in its OAuth app) leaves a "
                  "connect like this.");
        add_step (d, "Start again from Connect: %s", cmd);
        add_step (d, "%s", MISMATCH_STEP);
    }
    else
    if (strcmp (code, "healthy") != 0) {
        /* a code without its own text (a newer worker's, say) is still a failure, never "healthy" */
        if (at_connect) {
            snprintf (d->symptom, sizeof d->symptom, "Connecting \"%s\" failed with %s.", id, code);
            snprintf (d->cause, sizeof d->cause, "The callback failed; the failure below says how. Its state is used "
                      "up, so the same callback URL cannot be tried again.");
            add_step (d, "Start again from Connect: %s", cmd);
        }
        else {
            snprintf (d->symptom, sizeof d->symptom, "Requests for \"%s\" fail with %s.", id, code);
            snprintf (d->cause, sizeof d->cause, "The last error below says what failed.");
        }
        add_step (d, "If the failure below does not say enough, read the worker log for this integration at that time");
    }
    else {
        d->code = "healthy";
        snprintf (d->symptom, sizeof d->symptom, "No problem found with \"%s\".", id);
        if (never_expires)
            snprintf (d->cause, sizeof d->cause, "The integration is active. Its provider's access tokens do not "
                      "expire and come without a refresh token, which is normal for this provider; no caller has "
                      "reported the token rejected.");
        else
            snprintf (d->cause, sizeof d->cause, "The integration is active, holds a refresh token, and its last "
                      "refresh attempt (if any) succeeded.");
        add_step (d, "Nothing to do");
    }
}

/* The code of a "connect_failed" chain detail or a pending outcome: "code: message". */
static void
code_of (const char *text, char *code, size_t len)
{
    size_t n = text ? strcspn (text, ":") : 0;
    if (n >= len)
        n = len - 1;
    memcpy (code, text ? text : "", n);
    code [n] = '\0';
}

static void
reply_diagnosis (worker_t *w, const job_t *job, const diagnosis_t *d, const char *id, const char *provider,
                 const char *status)
{
    codec_builder_t *o = reply_begin (w, job, 1, 1);
    codec_str (o, "diagnosis");
    codec_map (o, 9);
    codec_kv_str (o, "code", d->code);
    codec_kv_str (o, "integration", id);
    codec_kv_str (o, "provider", provider);
    codec_kv_str (o, "status", status);
    codec_kv_str (o, "symptom", d->symptom);
    codec_kv_str (o, "cause", d->cause);
    codec_str (o, "what_to_do");
    codec_array (o, (uint32_t) d->nsteps);
    for (int i = 0; i < d->nsteps; i++)
        codec_str (o, d->step [i]);
    codec_str (o, "facts");
    codec_array (o, (uint32_t) d->nfacts);
    for (int i = 0; i < d->nfacts; i++)
        codec_str (o, d->fact [i]);
    codec_kv_bool (o, "operator_only", d->operator_only);
    reply_send (w, job);
}

/* An id without an integration: diagnose its connect attempts, or not_found. */
static void
doctor_unconnected (worker_t *w, const job_t *job, const char *id, const store_attempt_t *a)
{
    diagnosis_t d;
    char t1 [32], t2 [32], code [64];
    memset (&d, 0, sizeof d);
    if (!a->found) {
        char err [300];
        snprintf (err, sizeof err, "integration \"%s\" does not exist and no connect was started for it", id);
        reply_error (w, job, FR_NOT_FOUND, err, NULL, -1);
        return;
    }
    const catalog_provider_t *p = catalog_find (w->catalog, a->provider);
    if (a->outcome)
        code_of (a->outcome, code, sizeof code);
    else
        snprintf (code, sizeof code, "%s", a->used || a->expired ? "connect_incomplete" : "connect_pending");
    explain (&d, code, id, a->provider, p, a, NULL, a->outcome != NULL, NULL, 0, 0, NULL, a->outcome_detail);
    add_fact (&d, "never connected: no tokens are stored");
    add_fact (&d, "last connect started at %s with redirect URI \"%s\"", at (a->created_at, t1, sizeof t1),
              a->redirect_uri);
    if (a->outcome_detail)
        add_fact (&d, "its callback failed: %s: %s", a->outcome, a->outcome_detail);
    else
    if (!a->used)
        add_fact (&d, "the connect %s at %s", a->expired ? "expired" : "expires", at (a->expires_at, t2, sizeof t2));
    reply_diagnosis (w, job, &d, id, a->provider, "not_connected");
}

/* Key rotation: this integration's key, and what in the whole database still uses a retired one. */
static void
doctor_key_facts (worker_t *w, diagnosis_t *d, const store_row_t *row)
{
    int64_t integrations = 0, connects = 0;
    int32_t current = crypto_keyring_current_id (w->keyring);
    if ((row->access_ct || row->refresh_ct) && row->key_id != current)
        add_fact (d, "its tokens are sealed with retired key %ld (the current key is %ld): run \"ferrule-migrate "
                  "rekey\"", (long) row->key_id, (long) current);
    if (!keystats_last (w, &integrations, &connects))
        return;                          /* not counted yet: the next housekeeping tick counts */
    if (integrations + connects > 0)
        add_fact (d, "%lld stored values (%lld integrations, %lld connects in progress) still use a retired key: "
                  "keep FERRULE_ENCRYPTION_OLD_KEYS until \"ferrule-migrate rekey\" has re-sealed them",
                  (long long) (integrations + connects), (long long) integrations, (long long) connects);
    else if (crypto_keyring_count (w->keyring) > 1)
        add_fact (d, "the last count found no stored value on a retired key: confirm with \"ferrule-migrate rekey\" "
                  "(it exits 0 when none is left); then FERRULE_ENCRYPTION_OLD_KEYS can be emptied once every "
                  "worker's journal is empty");
}

/* The diagnosis, from what the batch read. */
static void
doctor_read (void *arg, fr_status_t st, const store_attempt_t *a, const store_row_t *rowp, const store_extra_t *xp,
             const store_chain_t *rows, size_t n, const char *err)
{
    dbwait_about_t *dw = arg;
    worker_t *w = dw->req.w;
    const job_t *job = &dw->req.job;
    const char *id = dw->id;
    chain_facts_t cf;
    diagnosis_t d;
    char t1 [32], t2 [32], code [64], missing [600];

    memset (&d, 0, sizeof d);
    if (st != FR_OK) {
        reply_store_error (w, job, st, err);
        goto out;
    }
    if (!rowp) {
        doctor_unconnected (w, job, id, a);
        goto out;
    }
    const store_row_t row = *rowp;
    const store_extra_t x = *xp;
    read_chain (rows, n, &cf);
    const catalog_provider_t *p = catalog_find (w->catalog, row.provider);
    int64_t now = clock_wall_ms () / 1000;
    int nmissing = x.requested_scopes ? scopes_missing (x.requested_scopes, row.scopes, missing, sizeof missing) : 0;
    int never_expires = connect_never_expires (x.refresh_token_missing, row.access_lifetime_s);
    const char *failed_code = NULL;
    if (cf.connect_failed) {
        code_of (cf.connect_failed->detail, code, sizeof code);
        failed_code = code;
    }
    int config_failure = failed_code && (strcmp (failed_code, "redirect_uri_mismatch") == 0
                                      || strcmp (failed_code, "invalid_client") == 0
                                      || strcmp (failed_code, "invalid_scope") == 0
                                      || strcmp (failed_code, "configuration") == 0);
    const char *last_attempt = cf.last_attempt ? cf.last_attempt->outcome : NULL;
    /* a commit clears the last error, but one whose access token was unusable keeps the fault */
    cf.unusable = last_attempt && strcmp (last_attempt, "refreshed") == 0 && row.last_error_code
                  && strcmp (row.status, "active") == 0;

    /* a connect after a disconnect (the usual fix for a dead token) that failed: its failure is
     * what the user meets now, not the disconnect (rows newest first: a lower address is newer) */
    int failed_since_disconnect = cf.connect_failed && cf.disconnected && cf.connect_failed < cf.disconnected;
    /* a reconnect of an integration that still works, which failed (the guide's "invalid grant
     * during reconnect"), after its last connect and its last successful refresh: the user met
     * that failure last, and its steps are what helps */
    int failed_reconnect = cf.connect_failed && strcmp (row.status, "active") == 0
                           && (!cf.refreshed || cf.connect_failed < cf.refreshed);

    /* the newest connect came to nothing and is not older than what the integration holds: its
     * user never came back from the provider, which is where a redirect URI the provider's app does
     * not list stops a connect (its own error page, no redirect); whatever the verdict, connecting
     * again the same way would stop there again */
    int never_back = a->found && !a->outcome && !a->used && (!cf.origin || a->created_at >= cf.origin->at);

    /* from the most specific to healthy */
    const char *verdict;
    if (strcmp (row.status, "disconnected") == 0 && !failed_since_disconnect)
        verdict = "disconnected";
    else
    if (failed_code && (config_failure || strcmp (row.status, "active") != 0 || failed_reconnect))
        verdict = failed_code;
    else
    if (strcmp (row.status, "needs_reconnect") == 0)
        verdict = cf.interrupted ? "rotation_interrupted" : "needs_reconnect";
    else
    if (last_attempt && strcmp (last_attempt, "invalid_client") == 0)
        verdict = "invalid_client";
    else
    if (x.refresh_token_missing && !never_expires)
        verdict = "no_refresh_token";
    else
    if (x.scope_report)
        verdict = "insufficient_scope";
    else
    if (nmissing)
        verdict = "scopes_reduced";
    else
    if (last_attempt && (strcmp (last_attempt, "transient") == 0 || strcmp (last_attempt, "bad_response") == 0))
        verdict = "provider_unavailable";
    else
    if (cf.unusable)
        verdict = "provider_unavailable";
    else
    if (last_attempt && strcmp (last_attempt, "configuration") == 0)
        /* the chain keeps one outcome for both; the row's error says which the caller got */
        verdict = row.last_error_code && strcmp (row.last_error_code, "invalid_scope") == 0 ? "invalid_scope"
                                                                                          : "configuration";
    else
    if (last_attempt && strcmp (last_attempt, "error") == 0)
        verdict = "internal";
    else
        verdict = "healthy";
    /* a report of a scope the grant holds (report-scope warned scope_already_granted) */
    char unused [8];
    const char *held_report = x.scope_report && *x.scope_report
                              && scopes_missing (x.scope_report, row.scopes, unused, sizeof unused) == 0
                              ? x.scope_report : NULL;
    explain (&d, verdict, id, row.provider, p, a, &cf, verdict == failed_code, x.requested_scopes,
             x.refresh_token_missing, never_expires, held_report,
             verdict == failed_code ? cf.connect_failed->detail : NULL);

    /* the facts that led there */
    add_fact (&d, "status %s, generation %lld, provider \"%s\"", row.status, (long long) row.generation, row.provider);
    if (cf.invalid_grant) {
        if (cf.origin)
            add_fact (&d, "refresh token invalidated after %lld generation%s, at %s",
                      (long long) (cf.invalid_grant->generation - cf.origin->generation),
                      cf.invalid_grant->generation - cf.origin->generation == 1 ? "" : "s",
                      at (cf.invalid_grant->at, t1, sizeof t1));
        else
            add_fact (&d, "refresh token invalidated at generation %lld, at %s", (long long) cf.invalid_grant->generation,
                      at (cf.invalid_grant->at, t1, sizeof t1));
        if (cf.invalid_grant->detail && !(row.last_error_message && strcmp (row.last_error_message, cf.invalid_grant->detail) == 0))
            add_fact (&d, "the provider said: %s", cf.invalid_grant->detail);
    }
    if (cf.interrupted)
        add_fact (&d, "refresh of generation %lld interrupted at %s: %s", (long long) cf.interrupted->generation,
                  at (cf.interrupted->at, t1, sizeof t1), cf.interrupted->detail ? cf.interrupted->detail : "");
    if (p && p->refresh_token_rotation == CATALOG_ROTATION_SINGLE_USE && (cf.rotations || cf.reuse_suspected))
        add_fact (&d, "%s rotates the refresh token on every refresh (single use%s); %d rotations since it was "
                  "connected", row.provider, p->reuse_grace_seconds ? ", with a grace period" : ", no grace period",
                  cf.rotations);
    if (row.last_refresh_at)
        add_fact (&d, "last successful refresh at %s", at (row.last_refresh_at, t1, sizeof t1));
    else
        add_fact (&d, "no successful refresh since it was %s", cf.origin && outcome_is (cf.origin, "connected")
                  ? "connected" : "imported");
    if (cf.origin)
        add_fact (&d, "%s at %s", outcome_is (cf.origin, "connected") ? "connected" : "imported",
                  at (cf.origin->at, t1, sizeof t1));
    if (cf.recent_transient)
        add_fact (&d, "%d transient failure%s in the last %d attempt%s", cf.recent_transient,
                  cf.recent_transient == 1 ? "" : "s", cf.recent, cf.recent == 1 ? "" : "s");
    if (row.last_error_code)
        add_fact (&d, "last error at %s: %s: %s", at (row.last_error_at, t1, sizeof t1), row.last_error_code,
                  row.last_error_message ? row.last_error_message : "");
    if (never_expires)
        add_fact (&d, "%s's access token does not expire and there is no refresh token: normal for this provider; "
                  "only a rejection by an API (token --reject) or a revocation ends it", row.provider);
    else
    if (x.refresh_token_missing)
        add_fact (&d, "connected without a refresh token; the access token %s at %s",
                  row.access_expires_at > now ? "expires" : "expired", at (row.access_expires_at, t1, sizeof t1));
    else
    if (row.access_ct && row.access_expires_at)
        add_fact (&d, "access token %s at %s", row.access_expires_at > now ? "valid until" : "expired",
                  at (row.access_expires_at, t1, sizeof t1));
    if (x.scope_report && *x.scope_report)
        add_fact (&d, "an upstream API reported missing scope \"%s\" at %s", x.scope_report,
                  at (x.scope_report_at, t2, sizeof t2));
    else
    if (x.scope_report)
        add_fact (&d, "an upstream API answered insufficient_scope at %s without naming the scope it needs: "
                  "compare what the failing call needs (its API's documentation) with the granted scopes",
                  at (x.scope_report_at, t2, sizeof t2));
    if (nmissing)
        add_fact (&d, "requested but not granted: %s", missing);
    if (row.scopes && *row.scopes)
        add_fact (&d, "granted scopes: %s", row.scopes);
    if (cf.connect_failed)
        add_fact (&d, "the last connect attempt failed at %s: %s", at (cf.connect_failed->at, t1, sizeof t1),
                  cf.connect_failed->detail ? cf.connect_failed->detail : "");
    if (never_back) {
        add_fact (&d, "a connect started at %s with redirect URI \"%.120s%s\" %s at %s): the user is still at the "
                  "provider's consent screen, left it, or was stopped by its error page (redirect_uri_mismatch)",
                  at (a->created_at, t1, sizeof t1), a->redirect_uri ? a->redirect_uri : "",
                  a->redirect_uri && strlen (a->redirect_uri) > 120 ? "..." : "",
                  a->expired ? "never came back (it expired" : "has not come back (it expires",
                  at (a->expires_at, t2, sizeof t2));
        first_step (&d, MISMATCH_STEP);
    }
    if (failed_reconnect && verdict == failed_code)
        add_fact (&d, "the failed connect changed nothing stored: the integration keeps the tokens of its earlier "
                  "connect, and token requests still get them");
    if (x.disconnected_at)
        add_fact (&d, "disconnected at %s", at (x.disconnected_at, t1, sizeof t1));
    doctor_key_facts (w, &d, &row);
    log_debug (id, job->rid, "doctor: %s", d.code);
    reply_diagnosis (w, job, &d, id, row.provider, row.status);
out:
    mem_free (dw);
}

/* The reads, one batch on a free connection (dbwait.c; dropped unread when the deadline passed). */
static fr_status_t
doctor_start (store_t *store, void *req, char *err, size_t errlen)
{
    dbwait_about_t *dw = req;
    return store_doctor_start (store, dw->id, DOCTOR_HISTORY, doctor_read, dw, err, errlen);
}

void
doctor_run (worker_t *w, job_t *job, const char *id)
{
    dbwait_about (w, job, id, doctor_start);
}
