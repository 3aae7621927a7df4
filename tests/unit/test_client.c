/* test_client.c - the client against fake brokers: ROUTER sockets answering from a thread */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "testexit.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>
#include "client.h"
#include "codec.h"
#include "frames.h"
#include "mem.h"

typedef enum {
    FAKE_OK,            /* answers at once */
    FAKE_SILENT,        /* never answers */
    FAKE_STALE_FIRST,   /* sends a reply with another rid, then the right one */
    FAKE_MALFORMED,     /* a body that is not msgpack */
    FAKE_BAD_TAG,       /* protocol "FRL9" */
    FAKE_UNAVAILABLE,   /* error "unavailable" */
    FAKE_NO_RID_ERROR,  /* error "too_large" without rid, as for a request it could not read */
    FAKE_DELAYED,       /* answers after delay_ms */
    FAKE_DELAYED_TIMEOUT, /* answers error "timeout" after delay_ms */
    FAKE_LATE_NO_RID,   /* the first request: error late_status ("too_large" when unset) without
                           rid after delay_ms, as a backlogged broker answers a body it could not
                           read; the others: ok after later_delay_ms */
    FAKE_LATE_MALFORMED, /* the same with a body that is not msgpack first */
    FAKE_RETRY_NO_RID,  /* the first request: no answer; the others: error "too_large" without
                           rid at once */
    FAKE_UNAVAILABLE_FOR_EVER /* error "unavailable" with the largest retry_after */
} fake_mode_t;

typedef enum { HELD_OK, HELD_TIMEOUT, HELD_NO_RID_ERROR, HELD_MALFORMED } held_t;

/* A reply the fake sends later. */
typedef struct {
    char id [256];
    size_t id_len;
    char rid [80];
    int64_t due;                /* 0: the slot is free */
    held_t kind;
} fake_held_t;

#define FAKE_HELD_MAX 4

typedef struct {
    void *ctx;
    void *sock;
    char endpoint [256];
    fake_mode_t mode;
    int delay_ms;
    int later_delay_ms;
    fr_status_t late_status;
    pthread_t thread;
    atomic_int stop;
    atomic_int received;
    /* the last request; read after fake_stop */
    char op [32];
    char rid [80];
    int64_t deadline_ms;
    int has_integration;
    fake_held_t held [FAKE_HELD_MAX];
} fake_t;

/* cmocka's asserts must not run in the fake's thread: a broken expectation there aborts */
#define FAKE_CHECK(cond) \
    do { if (!(cond)) { fprintf (stderr, "fake broker: check failed: %s (line %d)\n", #cond, __LINE__); abort (); } } while (0)

static int64_t
now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
fake_send (fake_t *f, const void *id, size_t id_len, const char *tag, const void *body, size_t len)
{
    const void *parts [4] = { id, "", tag, body };
    size_t sizes [4] = { id_len, 0, strlen (tag), len };
    FAKE_CHECK (frames_send (f->sock, parts, sizes, 4, 0) == 0);
}

static void
fake_reply_ok (fake_t *f, const void *id, size_t id_len, const char *rid)
{
    codec_builder_t *b = codec_builder_new ();
    codec_map (b, 5);
    codec_kv_str (b, "rid", rid);
    codec_kv_bool (b, "ok", 1);
    codec_kv_str (b, "service", "ferrule");
    codec_kv_str (b, "access_token", "at-1");
    codec_kv_str (b, "endpoint", f->endpoint);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    fake_send (f, id, id_len, CODEC_CLIENT_PROTOCOL, data, len);
    codec_builder_destroy (&b);
}

static void
fake_reply_error_after (fake_t *f, const void *id, size_t id_len, const char *rid, fr_status_t st,
                        int64_t retry_after)
{
    codec_builder_t *b = codec_builder_new ();
    codec_error_reply (b, rid, rid ? strlen (rid) : 0, st, "fake broker error", NULL, retry_after);
    size_t len;
    const char *data = codec_builder_data (b, &len);
    fake_send (f, id, id_len, CODEC_CLIENT_PROTOCOL, data, len);
    codec_builder_destroy (&b);
}

static void
fake_reply_error (fake_t *f, const void *id, size_t id_len, const char *rid, fr_status_t st)
{
    fake_reply_error_after (f, id, id_len, rid, st, -1);
}

/* Keeps a reply to send in delay_ms. */
static void
fake_hold (fake_t *f, const void *id, size_t id_len, const char *rid, int delay_ms, held_t kind)
{
    for (int i = 0; i < FAKE_HELD_MAX; i++) {
        fake_held_t *h = &f->held [i];
        if (h->due)
            continue;
        FAKE_CHECK (id_len <= sizeof h->id);
        memcpy (h->id, id, id_len);
        h->id_len = id_len;
        snprintf (h->rid, sizeof h->rid, "%s", rid);
        h->kind = kind;
        h->due = now_ms () + delay_ms;
        return;
    }
    FAKE_CHECK (!"no free slot for a held reply");
}

static void
fake_handle (fake_t *f, frames_t *in)
{
    codec_msg_t *msg = NULL;
    char err [128];
    char rid [80] = "";
    const char *s;
    size_t len;

    FAKE_CHECK (in->total == 4);
    FAKE_CHECK (frames_size (in, 1) == 0);
    FAKE_CHECK (frames_is (in, 2, CODEC_CLIENT_PROTOCOL));
    const void *id = frames_data (in, 0);
    size_t id_len = frames_size (in, 0);
    fr_status_t st = codec_decode (frames_data (in, 3), frames_size (in, 3), &msg, err, sizeof err);
    if (st != FR_OK) {
        /* as the broker does: a body it cannot read gets an error without rid */
        atomic_fetch_add (&f->received, 1);
        fake_reply_error (f, id, id_len, NULL, st);
        return;
    }
    const msgpack_object *root = codec_msg_root (msg);
    if (codec_get_str (root, "op", &s, &len) == 1)
        snprintf (f->op, sizeof f->op, "%.*s", (int) len, s);
    if (codec_get_str (root, "rid", &s, &len) == 1)
        snprintf (rid, sizeof rid, "%.*s", (int) len, s);
    snprintf (f->rid, sizeof f->rid, "%s", rid);
    f->deadline_ms = -1;
    FAKE_CHECK (codec_get_int (root, "deadline_ms", &f->deadline_ms) == 1);
    f->has_integration = codec_get_str (root, "integration", &s, &len) == 1;
    codec_msg_destroy (&msg);
    int n = atomic_fetch_add (&f->received, 1) + 1;

    switch (f->mode) {
        case FAKE_OK:
            fake_reply_ok (f, id, id_len, rid);
            break;
        case FAKE_SILENT:
            break;
        case FAKE_STALE_FIRST:
            fake_reply_ok (f, id, id_len, "0123456789abcdef-stale");
            fake_reply_ok (f, id, id_len, rid);
            break;
        case FAKE_MALFORMED:
            fake_send (f, id, id_len, CODEC_CLIENT_PROTOCOL, "\xc1\xc1", 2);
            break;
        case FAKE_BAD_TAG:
            fake_send (f, id, id_len, "FRL9", "\x80", 1);
            break;
        case FAKE_UNAVAILABLE:
            fake_reply_error (f, id, id_len, rid, FR_UNAVAILABLE);
            break;
        case FAKE_UNAVAILABLE_FOR_EVER:
            fake_reply_error_after (f, id, id_len, rid, FR_UNAVAILABLE, INT64_MAX);
            break;
        case FAKE_NO_RID_ERROR:
            fake_reply_error (f, id, id_len, NULL, FR_TOO_LARGE);
            break;
        case FAKE_RETRY_NO_RID:
            if (n > 1)
                fake_reply_error (f, id, id_len, NULL, FR_TOO_LARGE);
            break;
        case FAKE_DELAYED:
            fake_hold (f, id, id_len, rid, f->delay_ms, HELD_OK);
            break;
        case FAKE_DELAYED_TIMEOUT:
            fake_hold (f, id, id_len, rid, f->delay_ms, HELD_TIMEOUT);
            break;
        case FAKE_LATE_NO_RID:
        case FAKE_LATE_MALFORMED:
            if (n == 1)
                fake_hold (f, id, id_len, rid, f->delay_ms,
                           f->mode == FAKE_LATE_NO_RID ? HELD_NO_RID_ERROR : HELD_MALFORMED);
            else
                fake_hold (f, id, id_len, rid, f->later_delay_ms, HELD_OK);
            break;
    }
}

static void *
fake_run (void *arg)
{
    fake_t *f = arg;
    while (!atomic_load (&f->stop)) {
        zmq_pollitem_t item = { f->sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 10) > 0) {
            frames_t in;
            while (frames_recv (f->sock, &in, ZMQ_DONTWAIT) == 0) {
                fake_handle (f, &in);
                frames_close (&in);
            }
        }
        for (int i = 0; i < FAKE_HELD_MAX; i++) {
            fake_held_t *h = &f->held [i];
            if (!h->due || now_ms () < h->due)
                continue;
            if (h->kind == HELD_TIMEOUT)
                fake_reply_error (f, h->id, h->id_len, h->rid, FR_TIMEOUT);
            else
            if (h->kind == HELD_NO_RID_ERROR)
                fake_reply_error (f, h->id, h->id_len, NULL, f->late_status != FR_OK ? f->late_status : FR_TOO_LARGE);
            else
            if (h->kind == HELD_MALFORMED)
                fake_send (f, h->id, h->id_len, CODEC_CLIENT_PROTOCOL, "\xc1\xc1", 2);
            else
                fake_reply_ok (f, h->id, h->id_len, h->rid);
            h->due = 0;
        }
    }
    return NULL;
}

static fake_t *
fake_start (fake_mode_t mode)
{
    fake_t *f = mem_alloc (sizeof *f);
    f->mode = mode;
    f->ctx = zmq_ctx_new ();
    f->sock = zmq_socket (f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt (f->sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal (zmq_bind (f->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->endpoint;
    assert_int_equal (zmq_getsockopt (f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &len), 0);
    assert_int_equal (pthread_create (&f->thread, NULL, fake_run, f), 0);
    return f;
}

static void
fake_stop (fake_t **f_p)
{
    fake_t *f = *f_p;
    atomic_store (&f->stop, 1);
    pthread_join (f->thread, NULL);
    zmq_close (f->sock);
    zmq_ctx_term (f->ctx);
    mem_free (f);
    *f_p = NULL;
}

static client_t *
client_for (fake_t *a, fake_t *b)
{
    char list [600];
    snprintf (list, sizeof list, "%s%s%s", a->endpoint, b ? ", " : "", b ? b->endpoint : "");
    client_t *c = client_new (list);
    assert_non_null (c);
    client_set_next (c, 0);
    return c;
}

static const char *
code_of (const json_t *reply)
{
    return client_error_code (reply);
}

static const char *
message_of (const json_t *reply)
{
    const char *m = json_string_value (json_object_get (json_object_get (reply, "error"), "message"));
    return m ? m : "";
}

static void
test_endpoints (void **state)
{
    char err [256];
    assert_int_equal (client_check_endpoints ("tcp://127.0.0.1:5555", err, sizeof err), FR_OK);
    assert_int_equal (client_check_endpoints ("tcp://a:1, tcp://b:2 ,ipc:///tmp/x", err, sizeof err), FR_OK);
    assert_int_equal (client_check_endpoints ("tcp://[::1]:5555", err, sizeof err), FR_OK);
    const char *bad [] = { "", " ", "tcp://a:1,", "tcp://a:1,,tcp://b:2", "tcp://host", "tcp://:5555",
                           "tcp://a:0", "tcp://a:65536", "tcp://a:12x", "udp://a:1", "localhost:5555",
                           "tcp://a b:1", "tcp://a:1,tcp://a:1", "inproc://x", NULL };
    for (int i = 0; bad [i]; i++) {
        err [0] = '\0';
        assert_int_equal (client_check_endpoints (bad [i], err, sizeof err), FR_BAD_REQUEST);
        assert_true (strlen (err) > 0);
        assert_null (client_new (bad [i]));
    }
    assert_int_equal (client_check_endpoints (NULL, err, sizeof err), FR_BAD_REQUEST);
    char many [2048] = "";
    for (int i = 0; i <= CLIENT_MAX_ENDPOINTS; i++)
        snprintf (many + strlen (many), sizeof many - strlen (many), "%stcp://h:%d", i ? "," : "", 1000 + i);
    assert_int_equal (client_check_endpoints (many, err, sizeof err), FR_BAD_REQUEST);
    assert_non_null (strstr (err, "too many"));
}

static void
test_destroy_twice (void **state)
{
    client_t *c = client_new ("tcp://127.0.0.1:1");
    assert_non_null (c);
    assert_int_equal (client_endpoints (c), 1);
    assert_string_equal (client_endpoint (c, 0), "tcp://127.0.0.1:1");
    assert_null (client_endpoint (c, 1));
    client_destroy (&c);
    assert_null (c);
    client_destroy (&c);
    client_destroy (NULL);
}

static void
test_round_trip (void **state)
{
    fake_t *f = fake_start (FAKE_OK);
    client_t *c = client_for (f, NULL);
    json_t *args = json_pack ("{s:s, s:s, s:i}", "integration", "acct42:box", "rid", "forged", "deadline_ms", 1);
    json_t *reply = client_call (c, "status", args, 2000);
    assert_int_equal (args->refcount, 1);
    assert_true (json_is_true (json_object_get (reply, "ok")));
    assert_int_equal (client_exit_code (reply), 0);
    assert_string_equal (code_of (reply), "ok");
    fake_stop (&f);
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
}

/* The request carries op, a fresh hex rid, a deadline below the timeout, and the arguments. */
static void
test_request_body (void **state)
{
    fake_t *f = fake_start (FAKE_OK);
    client_t *c = client_for (f, NULL);
    json_t *args = json_pack ("{s:s, s:s}", "integration", "acct42:box", "rid", "forged");
    json_t *reply = client_call (c, "token", args, 3000);
    assert_true (json_is_true (json_object_get (reply, "ok")));
    atomic_store (&f->stop, 1);
    pthread_join (f->thread, NULL);
    assert_string_equal (f->op, "token");
    assert_int_equal (strlen (f->rid), 32);
    assert_int_equal (strspn (f->rid, "0123456789abcdef"), 32);
    assert_string_equal (json_string_value (json_object_get (reply, "rid")), f->rid);
    /* 1 of 2 attempts: about half the time, less the margin left for the broker's own answer */
    assert_true (f->deadline_ms > 1000 && f->deadline_ms <= 1500);
    assert_true (f->has_integration);
    zmq_close (f->sock);
    zmq_ctx_term (f->ctx);
    mem_free (f);
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
}

/* A caller's request id begins the rid (the gateway's X-Request-Id), random digits keep each
 * call's own, and a retry adds ".N" as ever; a base that is not a plain word is refused unsent. */
static void
test_rid_of_the_caller (void **state)
{
    fake_t *silent = fake_start (FAKE_SILENT);
    fake_t *ok = fake_start (FAKE_OK);
    client_t *c = client_for (ok, NULL);
    json_t *one = client_call_rid (c, "ping", NULL, 2000, 0, "req42");
    json_t *two = client_call_rid (c, "ping", NULL, 2000, 0, "req42");
    const char *r1 = json_string_value (json_object_get (one, "rid")), *r2 = json_string_value (json_object_get (two, "rid"));
    assert_true (json_is_true (json_object_get (one, "ok")) && json_is_true (json_object_get (two, "ok")));
    assert_non_null (r1);
    assert_non_null (r2);
    assert_int_equal (strlen (r1), 6 + 16);
    assert_memory_equal (r1, "req42-", 6);
    assert_int_equal (strspn (r1 + 6, "0123456789abcdef"), 16);
    assert_memory_equal (r2, "req42-", 6);
    assert_string_not_equal (r1, r2);
    json_decref (one);
    json_decref (two);
    const char *bad [] = { "", "a.b", "a b", "0123456789abcdef0123456789abcdef0" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        json_t *r = client_call_rid (c, "ping", NULL, 2000, 0, bad [i]);
        assert_string_equal (code_of (r), "bad_request");
        json_decref (r);
    }
    assert_int_equal (atomic_load (&ok->received), 2);
    client_destroy (&c);
    /* the second attempt, on the other broker */
    c = client_for (silent, ok);
    one = client_call_rid (c, "token", NULL, 1000, CLIENT_IDEMPOTENT, "req42");
    r1 = json_string_value (json_object_get (one, "rid"));
    assert_true (json_is_true (json_object_get (one, "ok")));
    assert_non_null (r1);
    assert_int_equal (strlen (r1), 6 + 16 + 2);
    assert_memory_equal (r1, "req42-", 6);
    assert_string_equal (r1 + 6 + 16, ".2");
    json_decref (one);
    client_destroy (&c);
    fake_stop (&silent);
    fake_stop (&ok);
}

static void
test_stale_reply_discarded (void **state)
{
    fake_t *f = fake_start (FAKE_STALE_FIRST);
    client_t *c = client_for (f, NULL);
    json_t *reply = client_call (c, "ping", NULL, 2000);
    const char *rid = json_string_value (json_object_get (reply, "rid"));
    assert_non_null (rid);
    assert_int_equal (strlen (rid), 32);
    assert_true (json_is_true (json_object_get (reply, "ok")));
    json_decref (reply);
    /* the next call does not take anything left over either */
    reply = client_call (c, "ping", NULL, 2000);
    assert_true (json_is_true (json_object_get (reply, "ok")));
    assert_int_equal (strlen (json_string_value (json_object_get (reply, "rid"))), 32);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&f);
}

static void
test_timeout (void **state)
{
    fake_t *f = fake_start (FAKE_SILENT);
    client_t *c = client_for (f, NULL);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "ping", NULL, 300);
    int64_t took = now_ms () - t0;
    assert_string_equal (code_of (reply), "timeout");
    assert_int_equal (client_exit_code (reply), 5);
    assert_true (took >= 290 && took < 800);
    assert_int_equal (atomic_load (&f->received), 1);
    assert_non_null (json_object_get (reply, "rid"));
    assert_true (strlen (json_string_value (json_object_get (json_object_get (reply, "error"), "hint"))) > 0);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&f);
}

static void
test_retry_on_next_broker (void **state)
{
    fake_t *silent = fake_start (FAKE_SILENT);
    fake_t *ok = fake_start (FAKE_OK);
    client_t *c = client_for (silent, ok);
    json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "token", args, 2000);
    int64_t took = now_ms () - t0;
    assert_true (json_is_true (json_object_get (reply, "ok")));
    assert_string_equal (json_string_value (json_object_get (reply, "endpoint")), ok->endpoint);
    assert_int_equal (atomic_load (&silent->received), 1);
    assert_int_equal (atomic_load (&ok->received), 1);
    assert_true (took >= 900 && took < 1600);          /* the first attempt had half the time */
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    fake_stop (&silent);
    fake_stop (&ok);
}

static void
test_no_retry_for_refresh (void **state)
{
    fake_t *silent = fake_start (FAKE_SILENT);
    fake_t *ok = fake_start (FAKE_OK);
    client_t *c = client_for (silent, ok);
    json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
    json_t *reply = client_call (c, "refresh", args, 700);
    assert_string_equal (code_of (reply), "timeout");
    assert_non_null (strstr (message_of (reply), "unknown"));
    const char *hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
    assert_non_null (strstr (hint, "status --integration acct42:box"));
    assert_int_equal (atomic_load (&silent->received), 1);
    assert_int_equal (atomic_load (&ok->received), 0);
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    fake_stop (&silent);
    fake_stop (&ok);
}

/* A change the service answers "timeout" (a broker whose worker did not answer in time, or a
 * worker whose refresh waits on its provider) may have been carried out: deadline_ms makes that
 * answer arrive before the client's own timeout, and it was returned as it came, its hint saying
 * to retry. It says the outcome is unknown, keeps the service's reason, and says to check first,
 * as a change that got no answer at all does. */
static void
test_service_timeout_of_a_change_says_its_outcome_is_unknown (void **state)
{
    fake_t *slow = fake_start (FAKE_DELAYED_TIMEOUT);
    fake_t *ok = fake_start (FAKE_OK);
    slow->delay_ms = 100;
    client_t *c = client_for (slow, ok);
    json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
    json_t *reply = client_call (c, "refresh", args, 2000);
    assert_string_equal (code_of (reply), "timeout");
    assert_int_equal (client_exit_code (reply), 5);
    const char *hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
    if (!strstr (message_of (reply), "fake broker error")
    ||  !strstr (message_of (reply), "the outcome of the \"refresh\" request is unknown"))
        fail_msg ("a refresh the broker answered \"timeout\" says \"%s\"", message_of (reply));
    if (!hint || !strstr (hint, "may have been carried out")
    ||  !strstr (hint, "check with \"ferrulectl status --integration acct42:box\" before retrying"))
        fail_msg ("a refresh the broker answered \"timeout\" hints \"%s\"", hint ? hint : "");
    assert_int_equal (atomic_load (&slow->received), 1);
    assert_int_equal (atomic_load (&ok->received), 0);
    json_decref (reply);

    /* without an integration: the service's state; a read keeps the service's wording */
    client_set_next (c, 0);
    json_t *endpoint = json_pack ("{s:s}", "endpoint", "app");
    reply = client_call (c, "webhook_test", endpoint, 2000);
    hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
    assert_string_equal (code_of (reply), "timeout");
    assert_non_null (strstr (message_of (reply), "the outcome of the \"webhook_test\" request is unknown"));
    assert_non_null (hint);
    assert_non_null (strstr (hint, "check the service's state before retrying"));
    json_decref (reply);
    json_decref (endpoint);
    json_decref (args);
    client_destroy (&c);
    fake_stop (&slow);
    fake_stop (&ok);
}

/* The reads doctor, events and webhooks are retried on another broker, as status is (and as
 * ferrulectl and the Python client declare them): client_call, which the gateway's pool uses,
 * sent them once, so one stalled broker failed a dashboard's doctor with an outcome "unknown". */
static void
test_reads_are_retried (void **state)
{
    static const char *const ops [] = { "doctor", "events", "webhooks" };
    for (size_t i = 0; i < sizeof ops / sizeof ops [0]; i++) {
        fake_t *silent = fake_start (FAKE_SILENT);
        fake_t *ok = fake_start (FAKE_OK);
        client_t *c = client_for (silent, ok);
        json_t *args = i == 0 ? json_pack ("{s:s}", "integration", "acct42:box") : NULL;
        json_t *reply = client_call (c, ops [i], args, 2000);
        if (!json_is_true (json_object_get (reply, "ok")))
            fail_msg ("\"%s\" with the first broker silent: %s (%s)", ops [i], code_of (reply), message_of (reply));
        assert_string_equal (json_string_value (json_object_get (reply, "endpoint")), ok->endpoint);
        assert_int_equal (atomic_load (&silent->received), 1);
        assert_int_equal (atomic_load (&ok->received), 1);
        json_decref (reply);
        json_decref (args);
        client_destroy (&c);
        fake_stop (&silent);
        fake_stop (&ok);
    }
}

static void
test_unavailable_retried (void **state)
{
    fake_t *busy = fake_start (FAKE_UNAVAILABLE);
    fake_t *ok = fake_start (FAKE_OK);
    client_t *c = client_for (busy, ok);
    json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
    json_t *reply = client_call (c, "status", args, 3000);
    assert_true (json_is_true (json_object_get (reply, "ok")));
    assert_int_equal (atomic_load (&busy->received), 1);
    assert_int_equal (atomic_load (&ok->received), 1);
    json_decref (reply);

    /* import is not retried: the broker's answer is the answer */
    client_set_next (c, 0);
    reply = client_call (c, "import", args, 3000);
    assert_string_equal (code_of (reply), "unavailable");
    assert_string_equal (message_of (reply), "fake broker error");
    assert_int_equal (client_exit_code (reply), 5);
    assert_int_equal (atomic_load (&busy->received), 2);
    assert_int_equal (atomic_load (&ok->received), 1);
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    fake_stop (&busy);
    fake_stop (&ok);
}

/* A retry_after longer than the call can wait is the answer: no retry. The seconds were made
 * milliseconds by a multiplication that overflowed for the largest (undefined behaviour; here a
 * negative pause, so the call was sent again at once). */
static void
test_retry_after_longer_than_the_call (void **state)
{
    fake_t *a = fake_start (FAKE_UNAVAILABLE_FOR_EVER);
    fake_t *b = fake_start (FAKE_UNAVAILABLE_FOR_EVER);
    client_t *c = client_for (a, b);
    json_t *reply = client_call (c, "ping", NULL, 3000);
    assert_string_equal (code_of (reply), "unavailable");
    assert_int_equal (atomic_load (&a->received) + atomic_load (&b->received), 1);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&a);
    fake_stop (&b);
}

/* Both brokers unavailable: the last error reply is returned, not a timeout. */
static void
test_unavailable_everywhere (void **state)
{
    fake_t *a = fake_start (FAKE_UNAVAILABLE);
    fake_t *b = fake_start (FAKE_UNAVAILABLE);
    client_t *c = client_for (a, b);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "ping", NULL, 3000);
    assert_true (now_ms () - t0 < 1000);
    assert_string_equal (code_of (reply), "unavailable");
    assert_int_equal (atomic_load (&a->received) + atomic_load (&b->received), 2);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&a);
    fake_stop (&b);
}

/* A reply this client cannot read is the service's fault, not the request's: "internal" (exit 1,
 * the gateway's 500), not "malformed_frame", which says "fix the request" (exit 2, the gateway's
 * 400), as the Python client says. A change it answered may have been carried out all the same:
 * its outcome is unknown, as with no answer at all. */
static void
test_malformed_reply (void **state)
{
    fake_t *f = fake_start (FAKE_MALFORMED);
    client_t *c = client_for (f, NULL);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "ping", NULL, 2000);
    assert_true (now_ms () - t0 < 1000);
    if (strcmp (code_of (reply), "internal") != 0 || client_exit_code (reply) != 1)
        fail_msg ("an unreadable reply to \"ping\" is \"%s\", exit %d", code_of (reply), client_exit_code (reply));
    assert_non_null (strstr (message_of (reply), f->endpoint));
    json_decref (reply);

    json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
    reply = client_call (c, "refresh", args, 2000);
    const char *hint = json_string_value (json_object_get (json_object_get (reply, "error"), "hint"));
    if (strcmp (code_of (reply), "internal") != 0 || !strstr (message_of (reply), "sent a malformed reply")
    ||  !strstr (message_of (reply), "the outcome of the \"refresh\" request is unknown")
    ||  !hint || !strstr (hint, "status --integration acct42:box"))
        fail_msg ("an unreadable reply to \"refresh\" is \"%s\": \"%s\" (hint \"%s\")", code_of (reply),
                  message_of (reply), hint ? hint : "");
    assert_int_equal (atomic_load (&f->received), 2);
    json_decref (reply);
    json_decref (args);
    client_destroy (&c);
    fake_stop (&f);

    f = fake_start (FAKE_BAD_TAG);
    c = client_for (f, NULL);
    reply = client_call (c, "ping", NULL, 2000);
    assert_string_equal (code_of (reply), "unsupported_version");
    assert_non_null (strstr (message_of (reply), "FRL9"));
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&f);
}

static void
test_error_without_rid (void **state)
{
    fake_t *f = fake_start (FAKE_NO_RID_ERROR);
    client_t *c = client_for (f, NULL);
    json_t *reply = client_call (c, "ping", NULL, 2000);
    assert_string_equal (code_of (reply), "too_large");
    assert_int_equal (client_exit_code (reply), 2);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&f);
}

/* A gateway pool lends one client to call after call. The broker, backlogged, answers the first
 * call's request after that call gave up, with an error it could not put a rid on (or with a
 * reply that cannot be read): that answers the first call, not the second one in flight on the
 * same socket. */
static void
test_late_error_without_rid_is_not_the_next_calls (void **state)
{
    const fake_mode_t modes [] = { FAKE_LATE_NO_RID, FAKE_LATE_MALFORMED };
    for (size_t m = 0; m < sizeof modes / sizeof modes [0]; m++) {
        fake_t *f = fake_start (modes [m]);
        f->delay_ms = 300;
        f->later_delay_ms = 500;
        client_t *c = client_for (f, NULL);
        json_t *args = json_pack ("{s:s}", "integration", "acct42:box");
        json_t *reply = client_call (c, "refresh", args, 200);
        assert_string_equal (code_of (reply), "timeout");
        json_decref (reply);
        int64_t t0 = now_ms ();
        reply = client_call (c, "refresh", args, 2000);
        int64_t took = now_ms () - t0;
        if (!json_is_true (json_object_get (reply, "ok")))
            fail_msg ("the second call ended with \"%s\" (%s) after %lld ms", code_of (reply), message_of (reply),
                      (long long) took);
        assert_true (took >= 450);
        assert_int_equal (atomic_load (&f->received), 2);
        json_decref (reply);
        json_decref (args);
        client_destroy (&c);
        fake_stop (&f);
    }
}

/* The first attempt got no answer; the retry, to the same broker, gets an error without a rid.
 * Both requests waiting on that socket are this call's: the error is its answer, at once. */
static void
test_error_without_rid_answers_the_retry (void **state)
{
    fake_t *f = fake_start (FAKE_RETRY_NO_RID);
    client_t *c = client_for (f, NULL);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "ping", NULL, 2000);
    int64_t took = now_ms () - t0;
    assert_string_equal (code_of (reply), "too_large");
    assert_true (took >= 900 && took < 2000);         /* after the first attempt, before the call's end */
    assert_int_equal (atomic_load (&f->received), 2);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&f);
}

/* The first attempt went to a slow broker, the second to another. An error without a rid from
 * the first broker, where only the first attempt waits, answers that attempt: a retryable one does
 * not stop the live attempt, a final one ends the call, as a late reply with the rid would. */
static void
test_error_without_rid_answers_the_first_attempt (void **state)
{
    const fr_status_t late [] = { FR_UNAVAILABLE, FR_TOO_LARGE };
    for (size_t i = 0; i < sizeof late / sizeof late [0]; i++) {
        fake_t *slow = fake_start (FAKE_LATE_NO_RID);
        fake_t *ok = fake_start (FAKE_DELAYED);
        slow->delay_ms = 1200;          /* after the first attempt's 1000 ms */
        slow->late_status = late [i];
        ok->delay_ms = 500;             /* the second attempt's answer, at about 1500 ms */
        client_t *c = client_for (slow, ok);
        int64_t t0 = now_ms ();
        json_t *reply = client_call (c, "ping", NULL, 2000);
        int64_t took = now_ms () - t0;
        if (late [i] == FR_UNAVAILABLE) {
            if (!json_is_true (json_object_get (reply, "ok")))
                fail_msg ("the call ended with \"%s\" (%s)", code_of (reply), message_of (reply));
            assert_string_equal (json_string_value (json_object_get (reply, "endpoint")), ok->endpoint);
        }
        else {
            /* the late error (sent at 1200 ms) ended it, not the call's 2 s: the code says it was
             * not the other broker's answer */
            assert_string_equal (code_of (reply), "too_large");
            assert_true (took >= 1150 && took < 2000);
        }
        json_decref (reply);
        client_destroy (&c);
        fake_stop (&slow);
        fake_stop (&ok);
    }
}

/* A body the broker could not read would get an error without rid: refused here, not sent. */
static void
test_over_the_limits_not_sent (void **state)
{
    fake_t *f = fake_start (FAKE_OK);
    client_t *c = client_for (f, NULL);
    char key [CODEC_MAX_KEY + 2];
    memset (key, 'k', CODEC_MAX_KEY + 1);
    key [CODEC_MAX_KEY + 1] = '\0';

    json_t *args = json_pack ("{s:s, s:s}", "integration", "acct42:box", key, "x");
    json_t *reply = client_call (c, "status", args, 2000);
    assert_string_equal (code_of (reply), "too_large");
    assert_int_equal (atomic_load (&f->received), 0);
    assert_non_null (strstr (message_of (reply), "key"));
    json_decref (reply);
    json_decref (args);

    /* the same key inside an argument */
    args = json_pack ("{s:s, s:{s:s}}", "integration", "acct42:box", "nested", key, "x");
    reply = client_call (c, "status", args, 2000);
    assert_string_equal (code_of (reply), "too_large");
    assert_int_equal (atomic_load (&f->received), 0);
    json_decref (reply);
    json_decref (args);

    /* nesting: eight arrays around a value, the root map making nine levels */
    args = json_pack ("{s:s, s:[[[[[[[[i]]]]]]]]}", "integration", "acct42:box", "deep", 1);
    reply = client_call (c, "status", args, 2000);
    assert_string_equal (code_of (reply), "too_large");
    assert_int_equal (atomic_load (&f->received), 0);
    assert_non_null (strstr (message_of (reply), "nesting"));
    json_decref (reply);
    json_decref (args);

    /* objects: the root, op, rid and deadline_ms, integration, "list" and its array are 11 */
    json_t *list = json_array ();
    for (int i = 0; i < CODEC_MAX_ITEMS - 11 + 1; i++)
        json_array_append_new (list, json_integer (0));
    args = json_pack ("{s:s, s:O}", "integration", "acct42:box", "list", list);
    reply = client_call (c, "status", args, 2000);
    assert_string_equal (code_of (reply), "too_large");
    assert_int_equal (atomic_load (&f->received), 0);
    assert_non_null (strstr (message_of (reply), "objects"));
    json_decref (reply);
    json_decref (args);

    /* exactly at the limits: a 64-byte key, a value inside the eighth level, 16384 objects (the
     * key and its value are 2 more, "deep", its seven arrays and its string 9 more) */
    key [CODEC_MAX_KEY] = '\0';
    while (json_array_size (list) > CODEC_MAX_ITEMS - 11 - 2 - 9)
        assert_int_equal (json_array_remove (list, 0), 0);
    args = json_pack ("{s:s, s:O, s:s, s:[[[[[[[s]]]]]]]}", "integration", "acct42:box", "list", list,
                      key, "x", "deep", "value");
    reply = client_call (c, "status", args, 2000);
    if (!json_is_true (json_object_get (reply, "ok")))
        fail_msg ("a body at the limits ended with \"%s\" (%s)", code_of (reply), message_of (reply));
    assert_int_equal (atomic_load (&f->received), 1);
    json_decref (reply);
    json_decref (args);
    json_decref (list);
    client_destroy (&c);
    fake_stop (&f);
}

/* A reply to the first attempt that arrives during the second still answers the call. */
static void
test_late_reply_accepted (void **state)
{
    fake_t *slow = fake_start (FAKE_DELAYED);
    fake_t *silent = fake_start (FAKE_SILENT);
    slow->delay_ms = 900;
    client_t *c = client_for (slow, silent);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "ping", NULL, 1600);
    int64_t took = now_ms () - t0;
    assert_true (json_is_true (json_object_get (reply, "ok")));
    assert_string_equal (json_string_value (json_object_get (reply, "endpoint")), slow->endpoint);
    assert_true (took >= 850 && took < 1500);
    assert_int_equal (atomic_load (&silent->received), 1);
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&slow);
    fake_stop (&silent);
}

/* A retryable error answering an attempt the client gave up on, arriving during the next one:
 * it ended the call (here the last attempt), though the broker now asked was about to answer. It
 * is kept as the last error, and the live attempt's answer is the call's. */
static void
test_late_retryable_error_does_not_end_the_call (void **state)
{
    fake_t *slow = fake_start (FAKE_DELAYED_TIMEOUT);
    fake_t *ok = fake_start (FAKE_DELAYED);
    slow->delay_ms = 1200;          /* after the first attempt's 1000 ms */
    ok->delay_ms = 500;             /* the second attempt's answer, at about 1500 ms */
    client_t *c = client_for (slow, ok);
    json_t *reply = client_call (c, "ping", NULL, 2000);
    if (!json_is_true (json_object_get (reply, "ok")))
        fail_msg ("the call ended with \"%s\" (%s)", code_of (reply), message_of (reply));
    assert_string_equal (json_string_value (json_object_get (reply, "endpoint")), ok->endpoint);
    assert_int_equal (atomic_load (&slow->received), 1);
    assert_int_equal (atomic_load (&ok->received), 1);
    json_decref (reply);

    /* with nothing better, the late error is the answer, not a timeout of the client's own */
    client_destroy (&c);
    fake_stop (&ok);
    ok = fake_start (FAKE_SILENT);
    c = client_for (slow, ok);
    reply = client_call (c, "ping", NULL, 2000);
    assert_string_equal (code_of (reply), "timeout");
    assert_string_equal (message_of (reply), "fake broker error");
    json_decref (reply);
    client_destroy (&c);
    fake_stop (&slow);
    fake_stop (&ok);
}

static void
test_no_broker (void **state)
{
    /* a port that was just free */
    void *ctx = zmq_ctx_new ();
    void *s = zmq_socket (ctx, ZMQ_ROUTER);
    char endpoint [256];
    size_t len = sizeof endpoint;
    assert_int_equal (zmq_bind (s, "tcp://127.0.0.1:*"), 0);
    assert_int_equal (zmq_getsockopt (s, ZMQ_LAST_ENDPOINT, endpoint, &len), 0);
    zmq_close (s);
    zmq_ctx_term (ctx);

    client_t *c = client_new (endpoint);
    int64_t t0 = now_ms ();
    json_t *reply = client_call (c, "refresh", NULL, 5000);
    int64_t took = now_ms () - t0;
    assert_string_equal (code_of (reply), "unavailable");
    assert_non_null (strstr (message_of (reply), "not sent"));
    assert_true (took < CLIENT_CONNECT_WAIT_MS + 500);
    json_decref (reply);
    client_destroy (&c);
}

static void
test_bad_calls (void **state)
{
    client_t *c = client_new ("tcp://127.0.0.1:1");
    json_t *array = json_array ();
    json_t *reply = client_call (c, "ping", array, 100);
    assert_string_equal (code_of (reply), "bad_request");
    json_decref (reply);
    reply = client_call (c, NULL, NULL, 100);
    assert_string_equal (code_of (reply), "bad_request");
    json_decref (reply);
    reply = client_call (NULL, "ping", NULL, 100);
    assert_string_equal (code_of (reply), "bad_request");
    json_decref (reply);

    /* one string over the codec's limit, and a body over the frame limit */
    size_t big = CODEC_MAX_STRING + 1;
    char *s = mem_alloc (big + 1);
    memset (s, 'a', big);
    json_t *args = json_pack ("{s:s}", "refresh_token", s);
    reply = client_call (c, "import", args, 100);
    assert_string_equal (code_of (reply), "too_large");
    assert_null (strstr (message_of (reply), "aaaa"));
    json_decref (reply);
    json_decref (args);
    s [CODEC_MAX_STRING - 10] = '\0';
    args = json_pack ("{s:s, s:s, s:s, s:s, s:s}", "a", s, "b", s, "c", s, "d", s, "e", s);
    reply = client_call (c, "import", args, 100);
    assert_string_equal (code_of (reply), "too_large");
    json_decref (reply);
    json_decref (args);
    mem_free (s);
    json_decref (array);
    client_destroy (&c);
}

static void
test_exit_codes (void **state)
{
    json_t *ok = json_pack ("{s:b}", "ok", 1);
    json_t *nf = json_pack ("{s:b, s:{s:s}}", "ok", 0, "error", "code", "not_found");
    json_t *nr = json_pack ("{s:b, s:{s:s}}", "ok", 0, "error", "code", "needs_reconnect");
    json_t *ic = json_pack ("{s:b, s:{s:s}}", "ok", 0, "error", "code", "invalid_client");
    json_t *unknown = json_pack ("{s:b, s:{s:s}}", "ok", 0, "error", "code", "from_the_future");
    json_t *bare = json_pack ("{s:b}", "ok", 0);
    assert_int_equal (client_exit_code (ok), 0);
    assert_int_equal (client_exit_code (nf), 3);
    assert_int_equal (client_exit_code (nr), 4);
    assert_int_equal (client_exit_code (ic), 6);
    assert_int_equal (client_exit_code (unknown), 1);
    assert_int_equal (client_exit_code (bare), 1);
    assert_int_equal (client_exit_code (NULL), 1);
    assert_true (client_op_is_idempotent ("token"));
    assert_true (client_op_is_idempotent ("history"));
    assert_false (client_op_is_idempotent ("refresh"));
    assert_false (client_op_is_idempotent ("import"));
    assert_false (client_op_is_idempotent ("connect"));
    json_decref (ok);
    json_decref (nf);
    json_decref (nr);
    json_decref (ic);
    json_decref (unknown);
    json_decref (bare);
}

int
main (void)
{
    /* the fake brokers here are plain ROUTER sockets: opt in to plaintext, explicitly */
    unsetenv ("FERRULE_CURVE_SECRET_KEY_FILE");
    unsetenv ("FERRULE_BROKER_PUBLIC_KEY_FILE");
    setenv ("FERRULE_ALLOW_PLAINTEXT", "1", 1);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_endpoints),
        cmocka_unit_test (test_destroy_twice),
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_request_body),
        cmocka_unit_test (test_rid_of_the_caller),
        cmocka_unit_test (test_stale_reply_discarded),
        cmocka_unit_test (test_timeout),
        cmocka_unit_test (test_retry_on_next_broker),
        cmocka_unit_test (test_no_retry_for_refresh),
        cmocka_unit_test (test_service_timeout_of_a_change_says_its_outcome_is_unknown),
        cmocka_unit_test (test_reads_are_retried),
        cmocka_unit_test (test_unavailable_retried),
        cmocka_unit_test (test_unavailable_everywhere),
        cmocka_unit_test (test_retry_after_longer_than_the_call),
        cmocka_unit_test (test_malformed_reply),
        cmocka_unit_test (test_error_without_rid),
        cmocka_unit_test (test_late_error_without_rid_is_not_the_next_calls),
        cmocka_unit_test (test_error_without_rid_answers_the_retry),
        cmocka_unit_test (test_error_without_rid_answers_the_first_attempt),
        cmocka_unit_test (test_over_the_limits_not_sent),
        cmocka_unit_test (test_late_reply_accepted),
        cmocka_unit_test (test_late_retryable_error_does_not_end_the_call),
        cmocka_unit_test (test_no_broker),
        cmocka_unit_test (test_bad_calls),
        cmocka_unit_test (test_exit_codes),
    };
    return testexit (cmocka_run_group_tests (tests, NULL, NULL));
}
