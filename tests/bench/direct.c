/* direct.c - (c)'s load sent straight to the fake provider, with no Ferrule in between: n refresh
 * chains started together, each refreshed again as soon as its answer comes (the rotated token
 * kept), as Ferrule's workers would. Its rate is the ceiling the test bed itself puts on (c): the
 * fake provider's answers, all on the same two CPUs, come later than its configured latency when
 * a hundred of them are due at once. */
#include "bench.h"
#include "mem.h"
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define DIRECT_BODY_MAX 8192           /* a token answer is a few hundred bytes */
#define DIRECT_FORM_MAX 1024

typedef struct {
    CURL *h;
    char *refresh_token;
    char form [DIRECT_FORM_MAX];
    char body [DIRECT_BODY_MAX];
    size_t len;
    int64_t sent_us;
    int64_t last_sent_us;            /* the send before, for the cycle */
} chain_t;

static size_t
direct_collect (char *data, size_t size, size_t nmemb, void *userp)
{
    chain_t *c = userp;
    size_t n = size * nmemb;
    if (c->len + n >= sizeof c->body)
        return 0;                       /* too long for a token answer: the transfer fails */
    memcpy (c->body + c->len, data, n);
    c->len += n;
    c->body [c->len] = '\0';
    return n;
}

static int
direct_send (CURLM *m, chain_t *c)
{
    char *rt = curl_easy_escape (c->h, c->refresh_token, 0);
    int n = snprintf (c->form, sizeof c->form, "grant_type=refresh_token&refresh_token=%s", rt ? rt : "");
    curl_free (rt);
    if (n < 0 || (size_t) n >= sizeof c->form)
        return -1;
    curl_easy_setopt (c->h, CURLOPT_POSTFIELDS, c->form);
    c->len = 0;
    c->body [0] = '\0';
    c->last_sent_us = c->sent_us;
    c->sent_us = bench_now_us ();
    return curl_multi_add_handle (m, c->h) == CURLM_OK ? 0 : -1;
}

/* The rotated refresh token of a 200 answer into c; 0, or -1. */
static int
direct_take (chain_t *c, long status)
{
    if (status != 200)
        return -1;
    json_t *o = json_loadb (c->body, c->len, 0, NULL);
    const char *rt = json_string_value (json_object_get (o, "refresh_token"));
    int rc = rt ? 0 : -1;
    if (rt) {
        free (c->refresh_token);
        c->refresh_token = strdup (rt);
    }
    json_decref (o);
    return rc;
}

int
direct_refresh_run (const char *fake_url, const char *provider, char *const *refresh_tokens, size_t n,
                    const char *client_id, const char *client_secret, int64_t warmup_ms, int64_t duration_ms,
                    direct_result_t *out)
{
    char url [512];
    snprintf (url, sizeof url, "%s/%s/token", fake_url, provider);
    memset (out, 0, sizeof *out);
    CURLM *m = curl_multi_init ();
    curl_multi_setopt (m, CURLMOPT_MAXCONNECTS, (long) n);
    chain_t *chains = calloc (n, sizeof *chains);
    double *lat = calloc (1 << 20, sizeof *lat);
    size_t nlat = 0;
    double cycles = 0;
    uint64_t ncycles = 0;
    int rc = 0;
    int64_t start = bench_now_us ();
    int64_t counted_from = start + warmup_ms * 1000, until = counted_from + duration_ms * 1000;
    for (size_t i = 0; i < n && rc == 0; i++) {
        chain_t *c = &chains [i];
        c->h = curl_easy_init ();
        c->refresh_token = strdup (refresh_tokens [i]);
        curl_easy_setopt (c->h, CURLOPT_URL, url);
        curl_easy_setopt (c->h, CURLOPT_WRITEFUNCTION, direct_collect);
        curl_easy_setopt (c->h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt (c->h, CURLOPT_PRIVATE, c);
        curl_easy_setopt (c->h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt (c->h, CURLOPT_TIMEOUT_MS, 30000L);
        /* as the workers authenticate to it (scripts/bench's catalog: client_secret_basic) */
        curl_easy_setopt (c->h, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        curl_easy_setopt (c->h, CURLOPT_USERNAME, client_id);
        curl_easy_setopt (c->h, CURLOPT_PASSWORD, client_secret);
        rc = direct_send (m, c);
    }
    int running = (int) n;
    while (rc == 0 && running > 0) {
        int64_t now = bench_now_us ();
        curl_multi_perform (m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read (m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            chain_t *c;
            long status = 0;
            curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &c);
            curl_easy_getinfo (msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            CURLcode result = msg->data.result;
            curl_multi_remove_handle (m, c->h);
            int64_t at = bench_now_us ();
            if (result != CURLE_OK || direct_take (c, status) != 0) {
                out->errors++;
                continue;               /* that chain ends: its token may be spent */
            }
            if (at >= counted_from && at < until) {
                out->ok_in_time++;
                if (nlat < (1 << 20))
                    lat [nlat++] = (double) (at - c->sent_us) / 1000.0;
            }
            if (at < until && direct_send (m, c) != 0)
                out->errors++;
            else
            if (at >= counted_from && at < until) {
                cycles += (double) (c->sent_us - c->last_sent_us) / 1000.0;
                ncycles++;
            }
        }
        if (now >= until + 30000000)
            break;                      /* answers overdue by 30 s: give up on them */
        curl_multi_poll (m, NULL, 0, 10, NULL);
        curl_multi_perform (m, &running);
    }
    out->window_rate = (double) out->ok_in_time / ((double) duration_ms / 1000.0);
    if (ncycles > 0) {
        out->cycle_ms = cycles / (double) ncycles;
        out->rate = (double) n / (out->cycle_ms / 1000.0);
    }
    if (nlat > 0) {
        double sum = 0;
        for (size_t i = 0; i < nlat; i++)
            sum += lat [i];
        out->mean_ms = sum / (double) nlat;
        out->p50_ms = bench_percentile (lat, nlat, 0.50);
        out->p99_ms = bench_percentile (lat, nlat, 0.99);
    }
    for (size_t i = 0; i < n; i++) {
        if (chains [i].h) {
            curl_multi_remove_handle (m, chains [i].h);
            curl_easy_cleanup (chains [i].h);
        }
        free (chains [i].refresh_token);
    }
    free (chains);
    free (lat);
    curl_multi_cleanup (m);
    return rc;
}
