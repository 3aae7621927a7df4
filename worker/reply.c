/* reply.c - what goes back to a client: a reply map (request id, ok, fields), errors with code,
 * message and hint, a token, an integration's fields; every reply counted by operation and outcome */
#include "reply.h"
#include "links.h"
#include "ops.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void
reply_count (worker_t *w, const job_t *job, const char *outcome)
{
    if (job->link < 0 || !job->op [0])
        return;
    /* the hot path, a token served: its series is looked up once */
    if (strcmp (outcome, "ok") == 0 && strcmp (job->op, "token") == 0) {
        if (!w->m.token_ok)
            w->m.token_ok = metrics_counter (w->metrics, "worker_requests_total", "requests answered, by operation and outcome",
                                             "op=\"token\",outcome=\"ok\"");
        metrics_inc (w->m.token_ok);
        return;
    }
    char labels [128];
    /* every name this version does not know is one label, "unknown", whatever a client sent */
    snprintf (labels, sizeof labels, "op=\"%s\",outcome=\"%s\"", ops_name (ops_lookup (job->op, strlen (job->op))), outcome);
    metrics_inc (metrics_counter (w->metrics, "worker_requests_total", "requests answered, by operation and outcome", labels));
}

void
reply_count_provider_error (worker_t *w, const char *provider, const char *class_name)
{
    char p [140], labels [200];
    metrics_label_escape (p, sizeof p, provider);
    snprintf (labels, sizeof labels, "provider=\"%s\",class=\"%s\"", p, class_name);
    metrics_inc (metrics_counter (w->metrics, "worker_provider_errors_total", "failed provider calls, by provider and class", labels));
}

codec_builder_t *
reply_begin (worker_t *w, const job_t *job, int ok, uint32_t fields)
{
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_map (o, fields + 1 + (job->rid [0] ? 1 : 0));
    if (job->rid [0])
        codec_kv_str (o, "rid", job->rid);
    codec_kv_bool (o, "ok", ok);
    return o;
}

int
reply_fits (const worker_t *w, char *err, size_t errlen)
{
    size_t len;
    if (codec_builder_failed (w->out)) {
        snprintf (err, errlen, "the reply does not fit in a frame");
        return 0;
    }
    const char *data = codec_builder_data (w->out, &len);
    /* the limits a client's decoder applies (objects, nesting, a string's length), which the
     * builder does not count; every object takes a byte at least, so a reply of fewer bytes than
     * the object limit (a token's, the hot path) cannot be over it */
    if (len > CODEC_MAX_ITEMS && codec_scan (data, len, NULL, 0, err, errlen) != FR_OK)
        return 0;
    return 1;
}

void
reply_send (worker_t *w, const job_t *job)
{
    size_t len;
    char err [200], message [300];
    if (!reply_fits (w, err, sizeof err)) {
        /* a client would refuse it as malformed, blaming the protocol version */
        snprintf (message, sizeof message, "the reply is over the protocol's limits, which a client would refuse "
                  "(%s)", err);
        reply_error (w, job, FR_TOO_LARGE, message, "ask for less: a lower limit, or a narrower selection", -1);
        return;
    }
    const char *data = codec_builder_data (w->out, &len);
    reply_count (w, job, "ok");
    links_send (w, job, data, len, "ok");
}

void
reply_error (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                    int64_t retry_after)
{
    codec_builder_t *o = w->out;
    codec_builder_reset (o);
    codec_error_reply (o, job->rid [0] ? job->rid : NULL, strlen (job->rid), st, message, hint, retry_after);
    reply_count (w, job, result_code (st));
    size_t len;
    const char *data = codec_builder_data (o, &len);
    links_send (w, job, data, len, result_code (st));
}

int
reply_pack_token (codec_builder_t *o, const char *rid, const cache_entry_t *e, int refreshed)
{
    if (!e->hit_reply)
        return -1;
    codec_builder_reset (o);
    codec_map (o, cache_hit_fields (e) + (rid [0] ? 1 : 0));
    if (rid [0])
        codec_kv_str (o, "rid", rid);
    /* the entry's reply as packed with its token, but for "refreshed" */
    codec_raw (o, e->hit_reply, e->hit_refreshed);
    codec_bool (o, refreshed);
    codec_raw (o, e->hit_reply + e->hit_refreshed + 1, e->hit_len - e->hit_refreshed - 1);
    return 0;
}

void
reply_token (worker_t *w, const job_t *job, const cache_entry_t *e, int refreshed)
{
    if (reply_pack_token (w->out, job->rid, e, refreshed) != 0) {
        /* only a stored token too long to serve leaves an entry without one here (cache.c) */
        char message [200];
        snprintf (message, sizeof message, "integration \"%s\" has no access token this worker can serve", e->id);
        reply_error (w, job, FR_UNAVAILABLE, message,
                     "its stored access token is longer than a reply may carry; the \"refresh\" operation replaces it",
                     -1);
        return;
    }
    reply_send (w, job);
}

void
reply_store_error (worker_t *w, const job_t *job, fr_status_t st, const char *message)
{
    reply_error (w, job, st, message, NULL, st == FR_DATABASE_UNAVAILABLE ? 1 : -1);
}

void
reply_warn (reply_warnings_t *ws, const char *code, const char *reason, const char *hint, const char *fmt, ...)
{
    if (ws->count == REPLY_MAX_WARNINGS)
        return;
    reply_warning_t *wn = &ws->item [ws->count++];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (wn->message, sizeof wn->message, fmt, ap);
    va_end (ap);
    wn->code = code;
    wn->reason = reason;
    snprintf (wn->hint, sizeof wn->hint, "%s", hint ? hint : "");
}

void
reply_pack_integration (codec_builder_t *o, const store_row_t *row, const store_extra_t *x)
{
    codec_map (o, x ? 16 : 12);
    codec_kv_str (o, "id", row->id);
    codec_kv_str (o, "provider", row->provider);
    codec_kv_str (o, "status", row->status);
    codec_kv_int (o, "generation", row->generation);
    codec_kv_time (o, "access_expires_at", row->access_ct ? row->access_expires_at : 0);
    codec_kv_words (o, "scopes", row->scopes);
    codec_str (o, "last_error");
    if (row->last_error_code) {
        codec_map (o, 3);
        codec_kv_str (o, "code", row->last_error_code);
        codec_kv_str (o, "message", row->last_error_message ? row->last_error_message : "");
        codec_kv_time (o, "at", row->last_error_at);
    }
    else
        codec_nil (o);
    codec_kv_time (o, "last_refresh_at", row->last_refresh_at);
    codec_kv_str (o, "refresh_token_fingerprint", row->refresh_fingerprint);
    codec_kv_time (o, "created_at", row->created_at);
    codec_kv_time (o, "updated_at", row->updated_at);
    codec_str (o, "api_base_url");
    if (row->api_base_url)
        codec_str (o, row->api_base_url);
    else
        codec_nil (o);
    if (!x)
        return;
    /* the connect flow's fields (migration 002) */
    if (x->requested_scopes)
        codec_kv_words (o, "requested_scopes", x->requested_scopes);
    else {
        codec_str (o, "requested_scopes");
        codec_nil (o);
    }
    codec_kv_bool (o, "refresh_token_missing", x->refresh_token_missing);
    codec_str (o, "scope_report");
    if (x->scope_report) {
        codec_map (o, 2);
        codec_kv_str (o, "scope", x->scope_report);
        codec_kv_time (o, "at", x->scope_report_at);
    }
    else
        codec_nil (o);
    codec_kv_time (o, "disconnected_at", x->disconnected_at);
}

void
reply_with_integration (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                        const store_row_t *row, const store_extra_t *x, const reply_warnings_t *ws, int reconnected)
{
    reply_with_integration_cause (w, job, st, message, hint, NULL, row, x, ws, reconnected);
}

void
reply_with_integration_cause (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                              const char *cause, const store_row_t *row, const store_extra_t *x,
                              const reply_warnings_t *ws, int reconnected)
{
    int nwarn = ws ? ws->count : 0;
    codec_builder_t *o = reply_begin (w, job, st == FR_OK,
                                      (uint32_t) (1 + (st != FR_OK) + (nwarn > 0) + (reconnected >= 0)));
    if (st != FR_OK) {
        codec_str (o, "error");
        codec_map (o, cause ? 4 : 3);
        codec_kv_str (o, "code", result_code (st));
        codec_kv_str (o, "message", message);
        codec_kv_str (o, "hint", hint ? hint : result_default_hint (st));
        if (cause)
            codec_kv_str (o, "cause", cause);
    }
    codec_str (o, "integration");
    reply_pack_integration (o, row, x);
    if (nwarn > 0) {
        codec_str (o, "warnings");
        codec_array (o, (uint32_t) nwarn);
        for (int i = 0; i < nwarn; i++) {
            codec_map (o, ws->item [i].reason ? 4 : 3);
            codec_kv_str (o, "code", ws->item [i].code);
            if (ws->item [i].reason)
                codec_kv_str (o, "reason", ws->item [i].reason);
            codec_kv_str (o, "message", ws->item [i].message);
            codec_kv_str (o, "hint", ws->item [i].hint);
        }
    }
    if (reconnected >= 0)
        codec_kv_bool (o, "reconnected", reconnected);
    reply_send (w, job);
}

