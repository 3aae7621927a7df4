/* client.c - the C client of the broker protocol: one DEALER per broker, rid matching, retries
 *
 * A call picks a broker round robin (from a random one), sends [""]["FRL1"][body] and polls
 * every broker socket until the reply carrying its rid arrives. All attempts of one call share
 * the rid, so a late reply to an earlier attempt still answers the call, and the service's log
 * lines of every attempt can be found with one id. Replies with any other rid are stale
 * (from calls that gave up) and are dropped. The retry policy is described in
 * docs/ferrulectl.md, "Retries".
 *
 * A broker answers a body it cannot read (over the limits of docs/protocol.md, "Limits") with an
 * error that carries no rid. Such a body is never sent: build_body refuses it with the broker's
 * own check. A reply without a rid (such an error, or a reply that cannot be read) is taken only
 * when it cannot answer anything but this call: every request sent on that socket that still
 * waits for its answer is one of this call's attempts (a broker answers each request once). It
 * is the live attempt's answer when it arrives on that attempt's socket while the attempt waits,
 * else an earlier attempt's. Otherwise it may be a late answer to an earlier call (a pool lends
 * one client to call after call) and is dropped.
 */
#include "client.h"
#include "clock.h"
#include "text.h"
#include "codec.h"
#include "frames.h"
#include "mem.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define CLIENT_HWM             100    /* messages queued per socket and direction */
#define CLIENT_PREFER_WAIT_MS  100    /* an attempt waits this long for its chosen broker before
                                         taking any connected one */
#define CLIENT_DRAIN_MAX       64     /* messages read per socket per wakeup, so a flood of stale
                                         replies cannot keep the call from seeing its deadline */
#define CLIENT_MAX_ATTEMPTS    3      /* attempts of an idempotent call, whatever the broker count */
#define CLIENT_BACKOFF_MS      100    /* pause after a retryable error reply, times the attempt */
#define CLIENT_RID_BYTES       16     /* random bytes in a request id (32 hex digits) */
#define CLIENT_RID_LEN         (CLIENT_RID_BASE_MAX + 1 + CLIENT_RID_BYTES)  /* the longest: a caller's
                                         base, '-', and half as many random digits */
#define CLIENT_MAX_DEADLINE_MARGIN_MS 250 /* deadline_ms is set this much (at most a tenth of the
                                         attempt) below the attempt's end, so that the broker's own
                                         "timeout" reply arrives before the client gives up */

struct client {
    void *ctx;
    size_t count;
    char *endpoints [CLIENT_MAX_ENDPOINTS];
    void *sockets [CLIENT_MAX_ENDPOINTS];
    void *monitors [CLIENT_MAX_ENDPOINTS];  /* handshake failures, to say why nothing connected */
    fr_status_t handshake [CLIENT_MAX_ENDPOINTS];  /* the last verdict each monitor gave */
    int64_t drained_ms;                     /* when the monitors were last read to their end */
    size_t next;                            /* endpoint the next request goes to first */
    size_t unanswered [CLIENT_MAX_ENDPOINTS];  /* requests sent on each socket, by this and earlier
                                               calls, whose answer has not come (or could not be
                                               told: never too few) */
};

/* One call in progress. */
typedef struct {
    client_t *c;
    const char *op;
    const json_t *args;
    char rid [CLIENT_RID_LEN + 1];
    /* the rid the current attempt sends: rid on the first, "rid.N" on the Nth, so that an answer
     * to an attempt given up on is told from the live one's (it may be a retryable error while
     * the live attempt is about to succeed) */
    char sent_rid [CLIENT_RID_LEN + 16];
    codec_builder_t *builder;
    int sent_any;                           /* a request of this call went out */
    size_t last_socket;                     /* where the last one went */
    size_t mine [CLIENT_MAX_ENDPOINTS];     /* this call's requests on each socket whose answer has
                                               not come: part of c->unanswered */
    json_t *reply;                          /* the answer, once there is one */
    json_t *late;                           /* a retryable error answering an earlier attempt */
    int unreadable;                         /* a reply this client could not read answered it: a
                                               change it answered may have been carried out */
} call_t;

typedef enum {
    ATTEMPT_REPLY,                          /* call->reply is set */
    ATTEMPT_TIMEOUT,                        /* sent, no reply in time */
    ATTEMPT_NOT_SENT                        /* no broker could take the request in time */
} attempt_t;

static int64_t
now_ms (void)
{
    return clock_mono_ms ();
}

/* Random bytes for request ids and the first broker; falls back to a clock and pid mix,
 * because a request id only has to be unlikely to repeat, not secret. */
static void
random_bytes (unsigned char *buf, size_t len)
{
    ssize_t got = getrandom (buf, len, GRND_NONBLOCK);
    if (got == (ssize_t) len)
        return;
    static uint64_t counter;
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 20) ^ ((uint64_t) getpid () << 40)
               ^ (++counter * 0x9e3779b97f4a7c15ULL);
    for (size_t i = 0; i < len; i++) {
        x += 0x9e3779b97f4a7c15ULL;                     /* splitmix64 */
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        buf [i] = (unsigned char) (z ^ (z >> 31));
    }
}

static json_t *
json_checked (json_t *j)
{
    if (!j) {
        fputs ("{\"level\":\"fatal\",\"msg\":\"out of memory building a JSON value\"}\n", stderr);
        abort ();
    }
    return j;
}

/* A reply synthesized on this side: {"rid", "ok": false, "error": {"code", "message", "hint"}}. */
static json_t *
error_reply (const char *rid, fr_status_t st, const char *message, const char *hint)
{
    char safe [1024];
    text_printable (safe, sizeof safe, message, strlen (message), sizeof safe - 4);
    json_t *error = json_checked (json_object ());
    json_object_set_new (error, "code", json_checked (json_string (result_code (st))));
    json_object_set_new (error, "message", json_checked (json_string (safe)));
    json_object_set_new (error, "hint", json_checked (json_string (hint ? hint : result_default_hint (st))));
    json_t *reply = json_checked (json_object ());
    if (rid && *rid)
        json_object_set_new (reply, "rid", json_checked (json_string (rid)));
    json_object_set_new (reply, "ok", json_false ());
    json_object_set_new (reply, "error", error);
    return reply;
}

/* Checks one endpoint of a list; item is not NUL-terminated. */
static fr_status_t
check_endpoint (const char *item, size_t len, char *err, size_t errlen)
{
    char shown [80];
    text_printable (shown, sizeof shown, item, len, 60);
    if (len > CLIENT_MAX_ENDPOINT_LEN) {
        snprintf (err, errlen, "broker endpoint \"%s\" is too long (%zu bytes; the limit is %d)",
                  shown, len, CLIENT_MAX_ENDPOINT_LEN);
        return FR_BAD_REQUEST;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) item [i];
        if (ch <= 0x20 || ch >= 0x7f) {
            snprintf (err, errlen, "broker endpoint \"%s\" contains a space, a control or a non-ASCII character", shown);
            return FR_BAD_REQUEST;
        }
    }
    if (len > 6 && memcmp (item, "tcp://", 6) == 0) {
        const char *hostport = item + 6;
        size_t hplen = len - 6;
        const char *colon = NULL;
        for (size_t i = 0; i < hplen; i++)
            if (hostport [i] == ':')
                colon = hostport + i;
        size_t hostlen = colon ? (size_t) (colon - hostport) : 0;
        size_t portlen = colon ? hplen - hostlen - 1 : 0;
        long port = 0;
        int digits_ok = portlen >= 1 && portlen <= 5;
        for (size_t i = 0; digits_ok && i < portlen; i++) {
            if (colon [1 + i] < '0' || colon [1 + i] > '9')
                digits_ok = 0;
            else
                port = port * 10 + (colon [1 + i] - '0');
        }
        if (!colon || hostlen == 0 || !digits_ok || port < 1 || port > 65535) {
            snprintf (err, errlen, "broker endpoint \"%s\" is not tcp://HOST:PORT with a port from 1 to 65535", shown);
            return FR_BAD_REQUEST;
        }
        return FR_OK;
    }
    if (len > 6 && memcmp (item, "ipc://", 6) == 0) {
        /* libzmq copies the path into a Unix socket address, with its NUL; a longer one fails
         * only when the socket connects */
        size_t max = sizeof ((struct sockaddr_un *) 0)->sun_path - 1;
        if (len - 6 > max) {
            snprintf (err, errlen, "broker endpoint \"%s\" is an ipc:// path of %zu bytes; the limit is %zu "
                      "(what a Unix socket address holds)", shown, len - 6, max);
            return FR_BAD_REQUEST;
        }
        return FR_OK;
    }
    snprintf (err, errlen, "broker endpoint \"%s\" is neither tcp://HOST:PORT nor ipc://PATH", shown);
    return FR_BAD_REQUEST;
}

/* Splits and checks a list; fills out[] with NUL-terminated copies when out is not NULL. */
static fr_status_t
parse_endpoints (const char *endpoints, char out [][CLIENT_MAX_ENDPOINT_LEN + 1], size_t *count,
                 char *err, size_t errlen)
{
    size_t n = 0;
    const char *p = endpoints;
    *count = 0;
    if (!endpoints) {
        snprintf (err, errlen, "no broker endpoint given");
        return FR_BAD_REQUEST;
    }
    for (;;) {
        const char *end = strchr (p, ',');
        if (!end)
            end = p + strlen (p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b [-1] == ' ' || b [-1] == '\t'))
            b--;
        if (a == b) {
            snprintf (err, errlen, n == 0 && *end == '\0' ? "no broker endpoint given"
                                                          : "the broker list has an empty entry");
            return FR_BAD_REQUEST;
        }
        if (n == CLIENT_MAX_ENDPOINTS) {
            snprintf (err, errlen, "too many broker endpoints (the limit is %d)", CLIENT_MAX_ENDPOINTS);
            return FR_BAD_REQUEST;
        }
        fr_status_t st = check_endpoint (a, (size_t) (b - a), err, errlen);
        if (st != FR_OK)
            return st;
        if (out) {
            memcpy (out [n], a, (size_t) (b - a));
            out [n][b - a] = '\0';
            for (size_t i = 0; i < n; i++)
                if (strcmp (out [i], out [n]) == 0) {
                    snprintf (err, errlen, "broker endpoint \"%s\" is listed twice", out [n]);
                    return FR_BAD_REQUEST;
                }
        }
        n++;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *count = n;
    return FR_OK;
}

fr_status_t
client_check_endpoints (const char *endpoints, char *err, size_t errlen)
{
    char (*list) [CLIENT_MAX_ENDPOINT_LEN + 1] = mem_alloc (CLIENT_MAX_ENDPOINTS * sizeof *list);
    size_t count;
    fr_status_t st = parse_endpoints (endpoints, list, &count, err, errlen);
    mem_free (list);
    return st;
}

static void *
open_socket (void *ctx, const char *endpoint, const curve_identity_t *id, void **monitor)
{
    void *sock = zmq_socket (ctx, ZMQ_DEALER);
    if (!sock)
        return NULL;
    int one = 1;
    char name [80];
    snprintf (name, sizeof name, "inproc://ferrule-client-%p", sock);
    if (zmq_socket_monitor (sock, name, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                        | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0) {
        /* libzmq sends the events from its I/O thread with a blocking send: a queue at its
         * high-water mark would stop that thread (no reconnect, ever, even once the broker takes
         * the key). Unbounded here, and read to its end at least once a second while calls are
         * made (monitors_drain). */
        int unbounded = 0;
        *monitor = zmq_socket (ctx, ZMQ_PAIR);
        if (*monitor && (zmq_setsockopt (*monitor, ZMQ_RCVHWM, &unbounded, sizeof unbounded) != 0
                         || zmq_connect (*monitor, name) != 0)) {
            zmq_close (*monitor);
            *monitor = NULL;
        }
    }
    frames_socket_defaults (sock, CLIENT_HWM, CODEC_MAX_BODY);   /* linger 0, hwm, frame cap */
    /* a request must not wait in a queue for a broker that is not there; with CURVE a broker
     * that refused this client's key never counts as there */
    if (curve_apply_client (sock, id) != 0
    ||  zmq_setsockopt (sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0
    ||  zmq_connect (sock, endpoint) != 0) {
        zmq_close (sock);
        return NULL;
    }
    return sock;
}

client_t *
client_new (const char *endpoints)
{
    char err [512];
    curve_identity_t id;
    if (curve_identity_from_env (&id, 1, err, sizeof err) != FR_OK)
        return NULL;
    client_t *c = client_new_with (endpoints, &id, err, sizeof err);
    curve_identity_clear (&id);
    return c;
}

client_t *
client_new_with (const char *endpoints, const curve_identity_t *id, char *err, size_t errlen)
{
    char (*list) [CLIENT_MAX_ENDPOINT_LEN + 1] = mem_alloc (CLIENT_MAX_ENDPOINTS * sizeof *list);
    client_t *c = NULL;
    size_t count = 0;

    if (parse_endpoints (endpoints, list, &count, err, errlen) != FR_OK)
        goto out;
    c = mem_alloc (sizeof *c);
    c->ctx = zmq_ctx_new ();
    if (!c->ctx) {
        snprintf (err, errlen, "could not create a ZeroMQ context: %s", zmq_strerror (errno));
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        c->endpoints [i] = mem_strdup (list [i]);
        c->sockets [i] = open_socket (c->ctx, list [i], id, &c->monitors [i]);
        c->count = i + 1;
        if (!c->sockets [i]) {
            snprintf (err, errlen, "could not set up the connection to broker \"%s\": %s", list [i], zmq_strerror (errno));
            goto fail;
        }
    }
    unsigned char r [4];
    random_bytes (r, sizeof r);
    c->next = (((size_t) r [0] << 24) | ((size_t) r [1] << 16) | ((size_t) r [2] << 8) | r [3]) % count;
    goto out;
fail:
    client_destroy (&c);
out:
    mem_free (list);
    return c;
}

void
client_destroy (client_t **c_p)
{
    if (!c_p || !*c_p)
        return;
    client_t *c = *c_p;
    for (size_t i = 0; i < c->count; i++) {
        /* the monitor stopped first: an event sent to a closed pair would block libzmq's thread */
        if (c->sockets [i] && c->monitors [i])
            zmq_socket_monitor (c->sockets [i], NULL, 0);
        if (c->sockets [i])
            zmq_close (c->sockets [i]);
        if (c->monitors [i])
            zmq_close (c->monitors [i]);
        mem_free (c->endpoints [i]);
    }
    frames_ctx_term (c->ctx);
    mem_free (c);
    *c_p = NULL;
}

size_t
client_endpoints (const client_t *c)
{
    return c ? c->count : 0;
}

const char *
client_endpoint (const client_t *c, size_t i)
{
    return c && i < c->count ? c->endpoints [i] : NULL;
}

void
client_set_next (client_t *c, size_t i)
{
    if (c && c->count)
        c->next = i % c->count;
}

int
client_op_is_idempotent (const char *op)
{
    /* reads only (worker/requests.c, worker/events.c): sending one again changes nothing */
    static const char *const ops [] = { "ping", "token", "status", "history", "doctor", "events", "webhooks" };
    for (size_t i = 0; op && i < sizeof ops / sizeof ops [0]; i++)
        if (strcmp (op, ops [i]) == 0)
            return 1;
    return 0;
}

static int
is_reserved_key (const char *key)
{
    return strcmp (key, "op") == 0 || strcmp (key, "rid") == 0 || strcmp (key, "deadline_ms") == 0;
}

/* Encodes the request body; FR_OK, or a status and a reason. A body the broker could not read
 * (it would answer without a rid) is refused with the reason the broker would give. */
static fr_status_t
build_body (call_t *call, int64_t deadline_ms, char *err, size_t errlen)
{
    codec_builder_t *b = call->builder;
    const char *key;
    json_t *value;
    uint32_t entries = 3;

    codec_builder_reset (b);                    /* wipes: a body may carry a refresh token */
    if (call->args)
        json_object_foreach ((json_t *) call->args, key, value)
            if (!is_reserved_key (key))
                entries++;
    codec_map (b, entries);
    codec_kv_str (b, "op", call->op);
    codec_kv_str (b, "rid", call->sent_rid);
    codec_kv_int (b, "deadline_ms", deadline_ms);
    if (call->args)
        json_object_foreach ((json_t *) call->args, key, value)
            if (!is_reserved_key (key)) {
                codec_str (b, key);
                codec_json (b, value);
            }
    size_t len = 0;
    /* the builder packs every JSON type; it fails only on its size limits */
    const char *data = codec_builder_failed (b) ? NULL : codec_builder_data (b, &len);
    if (!data || len > CODEC_MAX_BODY) {
        snprintf (err, errlen, "the \"%s\" request is too large: a value is over %d bytes or the whole request over %d",
                  call->op, CODEC_MAX_STRING, CODEC_MAX_BODY);
        return FR_TOO_LARGE;
    }
    /* the broker's own check: map keys, objects in the body, nesting */
    char reason [200];
    fr_status_t st = codec_scan (data, len, NULL, 0, reason, sizeof reason);
    if (st != FR_OK) {
        snprintf (err, errlen, "the \"%s\" request is over the protocol's limits: %s", call->op, reason);
        return st;
    }
    return FR_OK;
}

/* Sends the three frames; 0, or -1 when the socket cannot take them now. */
static int
send_body (void *sock, codec_builder_t *b)
{
    size_t len = 0;
    const char *data = codec_builder_data (b, &len);
    const void *parts [3] = { "", CODEC_CLIENT_PROTOCOL, data };
    size_t sizes [3] = { 0, 4, len };
    /* ZeroMQ delivers all parts of a message or none; only the first can meet a full queue */
    return frames_send (sock, parts, sizes, 3, ZMQ_DONTWAIT);
}

typedef enum { RX_NONE, RX_STALE, RX_REPLY, RX_LATE } rx_t;

/* 1 when rid (len bytes) is the rid of one of this call's attempts other than the live one. */
static int
earlier_attempt (const call_t *call, const char *rid, size_t len)
{
    size_t base = strlen (call->rid);
    if (len < base || memcmp (rid, call->rid, base) != 0)
        return 0;
    if (len == base)
        return 1;
    if (rid [base] != '.' || len == base + 1)
        return 0;
    for (size_t i = base + 1; i < len; i++)
        if (rid [i] < '0' || rid [i] > '9')
            return 0;
    return 1;
}

/* Checks one received message, which answers one request sent on that socket; sets *reply for
 * ours (possibly a synthesized malformed_frame). live: it came on the socket of the attempt that
 * waits for its answer. */
static rx_t
check_reply (call_t *call, size_t socket, int live, frames_t *f, json_t **reply)
{
    client_t *c = call->c;
    const char *endpoint = c->endpoints [socket];
    codec_msg_t *msg = NULL;
    char reason [256] = "";
    char message [512];
    fr_status_t st = FR_MALFORMED_FRAME;
    rx_t rx = RX_STALE;
    /* the request it answers: this call's, another's (a call that gave up), or one that cannot
     * be told, which leaves the counts as they are (too many is safe) */
    enum { ANSWERS_UNKNOWN, ANSWERS_OURS, ANSWERS_OTHER } answers = ANSWERS_UNKNOWN;
    /* without a rid, it answers this call when every request on this socket still waiting for
     * its answer is this call's, another when none is, and cannot be told otherwise */
    int only_ours = call->mine [socket] > 0 && c->unanswered [socket] == call->mine [socket];

    if (f->total != 3) {
        snprintf (reason, sizeof reason, "%d frames instead of 3", f->total);
        goto malformed;
    }
    if (frames_size (f, 0) != 0) {
        snprintf (reason, sizeof reason, "the first frame is not an empty delimiter");
        goto malformed;
    }
    if (!frames_is (f, 1, CODEC_CLIENT_PROTOCOL)) {
        char tag [40];
        text_printable (tag, sizeof tag, frames_data (f, 1), frames_size (f, 1), 16);
        snprintf (reason, sizeof reason, "protocol \"%s\" instead of \"%s\"", tag, CODEC_CLIENT_PROTOCOL);
        st = FR_UNSUPPORTED_VERSION;
        goto malformed;
    }
    st = codec_decode (frames_data (f, 2), frames_size (f, 2), &msg, reason, sizeof reason);
    if (st != FR_OK)
        goto malformed;
    st = FR_MALFORMED_FRAME;
    const msgpack_object *root = codec_msg_root (msg);
    if (!root || root->type != MSGPACK_OBJECT_MAP) {
        snprintf (reason, sizeof reason, "the body is not a map");
        goto malformed;
    }
    const char *rid = NULL;
    size_t rid_len = 0;
    int ok = 0;
    int has_rid = codec_get_str (root, "rid", &rid, &rid_len);
    int has_ok = codec_get_bool (root, "ok", &ok);
    if (has_rid < 0) {
        snprintf (reason, sizeof reason, "\"rid\" is not a string");
        goto malformed;
    }
    int late = 0;
    if (has_rid == 1 && (rid_len != strlen (call->sent_rid) || memcmp (rid, call->sent_rid, rid_len) != 0)) {
        if (!earlier_attempt (call, rid, rid_len)) {
            answers = ANSWERS_OTHER;                /* stale: a call that gave up */
            goto out;
        }
        late = 1;                                   /* this call's, to an attempt given up on */
    }
    if (has_rid == 1)
        answers = ANSWERS_OURS;
    if (has_ok != 1) {
        snprintf (reason, sizeof reason, "\"ok\" is missing or not a boolean");
        goto malformed;
    }
    /* A broker that could not read a request cannot echo its rid: such an error is ours only
     * when it can answer nothing else (the live attempt's when it came on its socket). A
     * success without our rid is not ours. */
    if (has_rid == 0) {
        if (ok || !only_ours)
            goto out;
        answers = ANSWERS_OURS;
        late = !live;
    }
    *reply = codec_to_json (root);
    if (!*reply || !json_is_object (*reply)) {
        json_decref (*reply);
        *reply = NULL;
        snprintf (reason, sizeof reason, "the body cannot be represented as JSON");
        goto malformed;
    }
    rx = late ? RX_LATE : RX_REPLY;
    goto out;
malformed:
    if (answers == ANSWERS_OURS || only_ours) {
        answers = ANSWERS_OURS;
        snprintf (message, sizeof message, "broker \"%s\" sent a malformed reply: %s", endpoint, reason);
        /* the service's fault, not the request's: not malformed_frame or too_large, which say
         * "fix the request" (exit 2, the gateway's 400) */
        if (st != FR_UNSUPPORTED_VERSION)
            st = FR_INTERNAL;
        call->unreadable = 1;
        *reply = error_reply (call->rid, st, message,
                              "the broker does not speak this client's protocol (FRL1): check that the endpoint is a Ferrule broker's frontend and that versions match");
        rx = RX_REPLY;
    }
out:
    if (answers == ANSWERS_UNKNOWN)
        answers = only_ours ? ANSWERS_OURS : call->mine [socket] == 0 ? ANSWERS_OTHER : ANSWERS_UNKNOWN;
    if (answers != ANSWERS_UNKNOWN && c->unanswered [socket] > 0)
        c->unanswered [socket]--;
    if (answers == ANSWERS_OURS && call->mine [socket] > 0)
        call->mine [socket]--;
    codec_msg_destroy (&msg);
    return rx;
}

/* Reads one message from a socket without blocking. */
static rx_t
receive_one (call_t *call, size_t socket, int live, json_t **reply)
{
    frames_t f;
    if (frames_recv (call->c->sockets [socket], &f, ZMQ_DONTWAIT) != 0)
        return RX_NONE;
    rx_t rx = check_reply (call, socket, live, &f, reply);
    frames_close (&f);
    return rx;
}

/* Worth another broker: the broker or the worker behind it could not answer, nothing was done. */
static int
is_retryable_reply (const json_t *reply, int64_t *retry_after_ms)
{
    const char *code = client_error_code (reply);
    json_t *after = json_object_get (json_object_get (reply, "error"), "retry_after");
    /* capped before it becomes milliseconds: no call waits longer than the longest deadline */
    json_int_t s = json_is_integer (after) ? json_integer_value (after) : -1;
    if (s > CLIENT_MAX_TIMEOUT_MS / 1000 + 1)
        s = CLIENT_MAX_TIMEOUT_MS / 1000 + 1;
    *retry_after_ms = s >= 0 ? (int64_t) s * 1000 : -1;
    return strcmp (code, "unavailable") == 0 || strcmp (code, "overloaded") == 0
        || strcmp (code, "timeout") == 0;
}

/* One attempt: send to the next broker that can take the request (when send is set), then
 * wait until `until` for the reply on every socket. */
static attempt_t
attempt (call_t *call, int send, int64_t send_until, int64_t until)
{
    client_t *c = call->c;
    zmq_pollitem_t items [CLIENT_MAX_ENDPOINTS];
    int need_send = send;
    int64_t started = now_ms ();
    size_t preferred = c->next;

    for (;;) {
        int64_t now = now_ms ();
        if (now >= until || (need_send && now >= send_until))
            return need_send ? ATTEMPT_NOT_SENT : ATTEMPT_TIMEOUT;
        int64_t wake = until;
        if (need_send && send_until < wake)
            wake = send_until;
        /* at first only the chosen broker; a busy loop on the others' POLLOUT is avoided */
        int any_broker = now - started >= CLIENT_PREFER_WAIT_MS;
        if (need_send && !any_broker && started + CLIENT_PREFER_WAIT_MS < wake)
            wake = started + CLIENT_PREFER_WAIT_MS;
        for (size_t i = 0; i < c->count; i++) {
            items [i].socket = c->sockets [i];
            items [i].fd = 0;
            items [i].events = ZMQ_POLLIN;
            if (need_send && (any_broker || i == preferred))
                items [i].events |= ZMQ_POLLOUT;
            items [i].revents = 0;
        }
        int rc = zmq_poll (items, (int) c->count, (long) (wake - now));
        if (rc < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            char message [256];
            snprintf (message, sizeof message, "could not wait for the broker's reply: %s", zmq_strerror (errno));
            call->reply = error_reply (call->rid, FR_INTERNAL, message, NULL);
            return ATTEMPT_REPLY;
        }
        for (size_t i = 0; i < c->count; i++) {
            if (!(items [i].revents & ZMQ_POLLIN))
                continue;
            /* this attempt's request is out and waits on socket i */
            int live = send && !need_send && i == call->last_socket;
            for (int n = 0; n < CLIENT_DRAIN_MAX; n++) {
                json_t *reply = NULL;
                rx_t rx = receive_one (call, i, live, &reply);
                if (rx == RX_NONE)
                    break;
                if (rx == RX_REPLY) {
                    call->reply = reply;
                    return ATTEMPT_REPLY;
                }
                int64_t ignored;
                if (rx == RX_LATE) {
                    /* an attempt given up on answered after all: a success, or an answer that
                     * retrying would not change, ends the call; a retryable error does not
                     * stop the live attempt, and is the answer only if nothing better comes */
                    if (json_is_true (json_object_get (reply, "ok")) || !is_retryable_reply (reply, &ignored)) {
                        call->reply = reply;
                        return ATTEMPT_REPLY;
                    }
                    json_decref (call->late);
                    call->late = reply;
                }
            }
        }
        if (!need_send)
            continue;
        for (size_t k = 0; k < c->count; k++) {
            size_t i = (preferred + k) % c->count;
            if (!(items [i].revents & ZMQ_POLLOUT))
                continue;
            now = now_ms ();
            int64_t left = until - now;
            int64_t margin = left / 10 < CLIENT_MAX_DEADLINE_MARGIN_MS ? left / 10 : CLIENT_MAX_DEADLINE_MARGIN_MS;
            int64_t deadline_ms = left - margin;
            if (deadline_ms < 1)
                deadline_ms = 1;
            if (deadline_ms > CLIENT_MAX_TIMEOUT_MS)
                deadline_ms = CLIENT_MAX_TIMEOUT_MS;
            char err [256];
            if (build_body (call, deadline_ms, err, sizeof err) != FR_OK)
                continue;                           /* checked before the first attempt */
            if (send_body (c->sockets [i], call->builder) == 0) {
                c->unanswered [i]++;
                call->mine [i]++;
                need_send = 0;
                call->sent_any = 1;
                call->last_socket = i;
                c->next = (i + 1) % c->count;
                break;
            }
        }
    }
}

/* Reads every event broker i's monitor holds into the verdict c->handshake [i]: FR_FORBIDDEN
 * (the broker refused this client's key), FR_CONFIGURATION (the two sides use different
 * security: a mechanism mismatch, or a broker that closed the connection mid-handshake, as one
 * does for a plaintext client or a wrong public key of its own), or FR_OK. A success clears what
 * failed before; a refused key outweighs a failure without detail. */
static void
monitor_drain (client_t *c, size_t i)
{
    while (c->monitors [i]) {
        zmq_msg_t m;
        zmq_msg_init (&m);
        if (zmq_msg_recv (&m, c->monitors [i], ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&m);
            break;
        }
        if (zmq_msg_size (&m) == 6) {
            uint16_t event;
            memcpy (&event, zmq_msg_data (&m), 2);
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
                c->handshake [i] = FR_OK;
            else
            if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                c->handshake [i] = FR_FORBIDDEN;
            else
            if ((event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
                && c->handshake [i] != FR_FORBIDDEN)
                c->handshake [i] = FR_CONFIGURATION;
        }
        int more = zmq_msg_more (&m);
        zmq_msg_close (&m);
        while (more) {
            zmq_msg_init (&m);
            more = zmq_msg_recv (&m, c->monitors [i], 0) >= 0 && zmq_msg_more (&m);
            zmq_msg_close (&m);
        }
    }
}

/* Every monitor read to its end, at most once a second (force: now): a client refused for hours
 * queues an event per reconnection. */
static void
monitors_drain (client_t *c, int force)
{
    int64_t now = now_ms ();
    if (!force && now - c->drained_ms < 1000)
        return;
    c->drained_ms = now;
    for (size_t i = 0; i < c->count; i++)
        monitor_drain (c, i);
}

/* The synthesized answer when no reply came (a change's "timeout" is worded by outcome_unknown). */
static json_t *
no_reply (call_t *call, int idempotent, int attempts, int timeout_ms)
{
    client_t *c = call->c;
    char message [768];

    if (!call->sent_any) {
        monitors_drain (c, 1);
        for (size_t i = 0; i < c->count; i++) {
            fr_status_t why = c->handshake [i];
            if (why == FR_FORBIDDEN) {
                snprintf (message, sizeof message, "broker \"%s\" refused this client's key: the \"%s\" request was not sent",
                          c->endpoints [i], call->op);
                return error_reply (call->rid, FR_FORBIDDEN, message,
                                    "ask the operator to add this client's public key to the broker's clients file");
            }
            if (why == FR_CONFIGURATION) {
                snprintf (message, sizeof message, "broker \"%s\" and this client do not use the same link security "
                          "(CURVE or plaintext), or the broker's public key is wrong: the \"%s\" request was not sent",
                          c->endpoints [i], call->op);
                return error_reply (call->rid, FR_CONFIGURATION, message,
                                    "set FERRULE_CURVE_SECRET_KEY_FILE and FERRULE_BROKER_PUBLIC_KEY_FILE to this client's key and the brokers' public key");
            }
        }
        if (c->count == 1)
            snprintf (message, sizeof message, "could not connect to broker \"%s\": the \"%s\" request was not sent",
                      c->endpoints [0], call->op);
        else {
            size_t n = (size_t) snprintf (message, sizeof message, "could not connect to any of %zu brokers (", c->count);
            for (size_t i = 0; i < c->count && n < sizeof message; i++)
                n += (size_t) snprintf (message + n, sizeof message - n, "%s\"%s\"", i ? ", " : "", c->endpoints [i]);
            if (n < sizeof message)
                snprintf (message + n, sizeof message - n, "): the \"%s\" request was not sent", call->op);
        }
        return error_reply (call->rid, FR_UNAVAILABLE, message,
                            "check that a broker is running and listening on that address (--broker or FERRULE_BROKER_URL)");
    }
    if (idempotent) {
        snprintf (message, sizeof message, "no reply to the \"%s\" request within %.1f s (%d %s)",
                  call->op, timeout_ms / 1000.0, attempts, attempts == 1 ? "attempt" : "attempts");
        return error_reply (call->rid, FR_TIMEOUT, message, NULL);
    }
    /* outcome_unknown says the rest */
    snprintf (message, sizeof message, "no reply from broker \"%s\" within %.1f s",
              c->endpoints [call->last_socket], timeout_ms / 1000.0);
    return error_reply (call->rid, FR_TIMEOUT, message, "");
}

/* A "timeout" answering a call that is not idempotent, the broker's or this client's own, or a
 * reply this client could not read: the request may have been carried out all the same, so
 * retrying it blindly could do it twice.
 * The message keeps why (the service's reason) and says the outcome is unknown; the hint says to
 * check first. */
static void
outcome_unknown (const call_t *call, json_t *reply)
{
    json_t *error = json_object_get (reply, "error");
    const char *why = json_string_value (json_object_get (error, "message"));
    char op [80];
    char hint [512];

    if (!json_is_object (error))
        return;
    if (!why || !*why)
        why = "the service answered \"timeout\"";
    /* the reason whole (valid UTF-8, as it came in JSON): tests and operators search it */
    text_printable (op, sizeof op, call->op, (size_t) -1, 64);
    size_t len = strlen (why) + strlen (op) + 64;
    char *message = mem_alloc (len);
    snprintf (message, len, "%s: the outcome of the \"%s\" request is unknown", why, op);
    json_object_set_new (error, "message", json_checked (json_string (message)));
    mem_free (message);
    json_t *integration = call->args ? json_object_get (call->args, "integration") : NULL;
    if (json_is_string (integration)) {
        char id [160];
        const char *s = json_string_value (integration);
        text_printable (id, sizeof id, s, strlen (s), 128);
        snprintf (hint, sizeof hint, "the request may have been carried out: check with \"ferrulectl status --integration %s\" before retrying", id);
    }
    else
        snprintf (hint, sizeof hint, "the request may have been carried out: check the service's state before retrying");
    json_object_set_new (error, "hint", json_checked (json_string (hint)));
}

/* 1 when base may begin a request id: 1..CLIENT_RID_BASE_MAX of A-Z a-z 0-9 _ - */
static int
rid_base_ok (const char *base)
{
    size_t n = strlen (base);
    return n >= 1 && n <= CLIENT_RID_BASE_MAX
        && strspn (base, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

json_t *
client_call_rid (client_t *c, const char *op, json_t *args, int timeout_ms, int flags, const char *rid_base)
{
    call_t call = { .c = c, .op = op, .args = args };
    int idempotent = (flags & CLIENT_IDEMPOTENT) != 0;
    json_t *last_error = NULL;                  /* a retryable error reply, kept for the end */
    json_t *result = NULL;
    char err [256];
    int attempts = 0;

    unsigned char r [CLIENT_RID_BYTES];
    char hex [2 * CLIENT_RID_BYTES + 1];
    random_bytes (r, sizeof r);
    for (size_t i = 0; i < sizeof r; i++)
        snprintf (hex + 2 * i, 3, "%02x", r [i]);
    /* with a caller's base, random digits still make each call's rid its own: a late answer to
       an earlier call of the same base is not taken for this one's */
    if (rid_base && rid_base_ok (rid_base))
        snprintf (call.rid, sizeof call.rid, "%s-%.*s", rid_base, CLIENT_RID_BYTES, hex);
    else
        snprintf (call.rid, sizeof call.rid, "%s", hex);
    /* the size check below with the longest rid an attempt sends: every attempt then fits */
    snprintf (call.sent_rid, sizeof call.sent_rid, "%s.%d", call.rid, CLIENT_MAX_ATTEMPTS);

    if (rid_base && !rid_base_ok (rid_base)) {
        snprintf (err, sizeof err, "\"%.40s\" cannot begin a request id: it must be 1 to %d characters "
                  "of A-Z a-z 0-9 _ -", rid_base, CLIENT_RID_BASE_MAX);
        result = error_reply (call.rid, FR_BAD_REQUEST, err, NULL);
        goto out;
    }
    if (!c || !op || !*op) {
        result = error_reply (call.rid, FR_BAD_REQUEST, "no client or no operation given", NULL);
        goto out;
    }
    if (args && !json_is_object (args)) {
        result = error_reply (call.rid, FR_BAD_REQUEST, "the request's arguments are not a JSON object", NULL);
        goto out;
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (timeout_ms > CLIENT_MAX_TIMEOUT_MS)
        timeout_ms = CLIENT_MAX_TIMEOUT_MS;
    monitors_drain (c, 0);
    call.builder = codec_builder_new ();
    fr_status_t st = build_body (&call, timeout_ms, err, sizeof err);
    if (st != FR_OK) {
        result = error_reply (call.rid, st, err, st != FR_TOO_LARGE ? NULL
                              : "nothing was sent: shorten the values, keys or lists, or nest them less deeply (docs/protocol.md, \"Limits\")");
        goto out;
    }

    int64_t start = now_ms ();
    int64_t deadline = start + timeout_ms;
    int max_attempts = 1;
    if (idempotent)
        max_attempts = c->count < 2 ? 2 : c->count > CLIENT_MAX_ATTEMPTS ? CLIENT_MAX_ATTEMPTS : (int) c->count;

    while (attempts < max_attempts) {
        int64_t now = now_ms ();
        int64_t remaining = deadline - now;
        if (remaining <= 0)
            break;
        int64_t budget = remaining / (max_attempts - attempts);
        if (budget < CLIENT_MIN_ATTEMPT_MS)
            budget = CLIENT_MIN_ATTEMPT_MS;
        if (budget > remaining)
            budget = remaining;
        /* until one broker has taken a request, a dead list fails fast */
        int64_t send_until = now + budget;
        if (!call.sent_any && start + CLIENT_CONNECT_WAIT_MS < send_until)
            send_until = start + CLIENT_CONNECT_WAIT_MS;
        attempts++;
        if (attempts == 1)
            snprintf (call.sent_rid, sizeof call.sent_rid, "%s", call.rid);
        else
            snprintf (call.sent_rid, sizeof call.sent_rid, "%s.%d", call.rid, attempts);
        attempt_t a = attempt (&call, 1, send_until, now + budget);
        if (a == ATTEMPT_NOT_SENT) {
            if (!call.sent_any)
                break;                          /* no broker connected at all */
            continue;
        }
        if (a == ATTEMPT_TIMEOUT)
            continue;
        /* a reply */
        int64_t retry_after_ms;
        if (!idempotent || json_is_true (json_object_get (call.reply, "ok"))
        ||  !is_retryable_reply (call.reply, &retry_after_ms) || attempts >= max_attempts) {
            result = call.reply;
            call.reply = NULL;
            goto out;
        }
        json_decref (last_error);
        last_error = call.reply;
        call.reply = NULL;
        int64_t pause = retry_after_ms >= 0 ? retry_after_ms : (int64_t) CLIENT_BACKOFF_MS * attempts;
        if (now_ms () + pause >= deadline)
            break;                              /* no time left to wait that long */
        /* pause, still taking a late reply to an earlier attempt */
        if (pause > 0 && attempt (&call, 0, 0, now_ms () + pause) == ATTEMPT_REPLY) {
            result = call.reply;
            call.reply = NULL;
            goto out;
        }
    }
    if (last_error) {
        result = last_error;
        last_error = NULL;
    }
    else
    if (call.late) {
        result = call.late;
        call.late = NULL;
    }
    else
        result = no_reply (&call, idempotent, attempts, timeout_ms);
out:
    /* sent once, so the answer is that one request's */
    if (!idempotent && call.sent_any && (call.unreadable || strcmp (client_error_code (result), "timeout") == 0))
        outcome_unknown (&call, result);
    json_decref (last_error);
    json_decref (call.late);
    json_decref (call.reply);
    codec_builder_destroy (&call.builder);
    return result;
}

json_t *
client_call_ex (client_t *c, const char *op, json_t *args, int timeout_ms, int flags)
{
    return client_call_rid (c, op, args, timeout_ms, flags, NULL);
}

json_t *
client_call (client_t *c, const char *op, json_t *args, int timeout_ms)
{
    return client_call_ex (c, op, args, timeout_ms, client_op_is_idempotent (op) ? CLIENT_IDEMPOTENT : 0);
}

const char *
client_error_code (const json_t *reply)
{
    if (json_is_true (json_object_get (reply, "ok")))
        return "ok";
    const char *code = json_string_value (json_object_get (json_object_get (reply, "error"), "code"));
    return code ? code : "internal";
}

int
client_exit_code (const json_t *reply)
{
    if (json_is_true (json_object_get (reply, "ok")))
        return 0;
    return result_exit_code (result_from_code (client_error_code (reply)));
}
