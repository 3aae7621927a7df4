/* broker.c - accept client requests, route each to its partition's worker, answer every one.
 * Nothing is dropped silently: ROUTER_MANDATORY on both sockets turns an unroutable or full
 * peer into an error we handle, and every pending request has a deadline. */
#include "broker.h"
#include "text.h"
#include "clock.h"
#include "codec.h"
#include "frames.h"
#include "health.h"
#include "metrics.h"
#include "ident.h"
#include "log.h"
#include "lograte.h"
#include "mem.h"
#include "pending.h"
#include "share.h"
#include "registry.h"
#include "ring.h"
#include "audit.h"
#include "guard.h"
#include "keys.h"
#include "ops.h"
#include "policy.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_DEADLINE_MS 300000
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define MESSAGE_BUDGET (CODEC_MAX_BODY + 4096)   /* bytes in one multipart message, all frames */
#define PLAINTEXT_NAME "anonymous"               /* the client name when links are plaintext */
#define CHECK_MS 10                               /* how often connections are measured */
#define STOP_LINGER_MS 1000                       /* the last answers' time to leave at a stop */
#define STOP_READ_MAX 100000                      /* requests read and refused at a stop, at most */
#define STOP_QUIET_MS 50                          /* ... until the frontend is quiet this long */
#define AUDIT_REFUSED "this broker cannot write its audit log, and refuses requests until it can"
/* a worker may carry out a request the broker answered "timeout": only a read is safe to send
 * again blindly (ops_is_read, the client libraries' idempotent operations) */
#define TIMEOUT_ADMIN_HINT "the request may have been carried out all the same: check its outcome (the integration's " \
    "status, the attempt) before sending it again, which could do it twice; a callback's state is spent once taken, " \
    "and sent again it is answered state_invalid"
#define AUDIT_REFUSED_HINT "send the request to another broker; this one says why in its log (\"could not write the audit log\")"

/* 1 when a request op is safe to send again after a timeout: a read, or the gateway's check of an
 * API key (its one write, the key's last use, is idempotent; the worker takes it as a read too). */
static int
repeatable (int op)
{
    return ops_is_read ((op_t) op) || op == OP_APIKEY_VERIFY;
}

/* The hint of a "timeout" saying that request op may have been carried out. */
static const char *
timeout_hint (int op)
{
    return repeatable (op) ? "send it again (to another broker); a read is safe to repeat" : TIMEOUT_ADMIN_HINT;
}

/* What the broker knows of the request it is answering, for the audit log. */
typedef struct {
    const char *client_name;
    op_t op;
    const char *integ;                   /* NULL: none */
    size_t integ_len;
    const char *rid;                     /* NULL: none */
    size_t rid_len;
    int owed;                            /* the answer to a pending request (broker_audit) */
    int fd;                              /* the connection it came on (ZMQ_SRCFD), -1: unknown */
    uint64_t conn;                       /* and its number (guard_account), for guard_sent */
} req_t;

struct broker {
    broker_config_t cfg;
    curve_identity_t curve;
    void *ctx;
    void *frontend;
    void *backend;
    void *zap;                     /* ZAP handler (CURVE only) */
    int zap_fd;                    /* its ZMQ_FD */
    keys_t *keys;
    policy_t *policy;
    audit_t *audit;
    guard_t *front_guard, *back_guard;
    registry_t *registry;
    pending_table_t *pending;
    share_t *shares;                     /* each client's part of pending (share.h) */
    codec_builder_t *out;          /* reused for every reply the broker writes itself */
    int64_t next_ping_ms;
    int64_t next_publish_ms;
    int64_t next_check_ms;
    int64_t last_tick_ms;          /* 0: none yet */
    lograte_t refusal_log;         /* refusals are logged at most once a second */
    lograte_t failed_log;          /* so are requests the broker answers with an error itself */
    lograte_t worker_log;          /* and messages on the worker socket it cannot use */
    uint64_t failed_held [FR__COUNT];   /* those held back since the last line, by code */
    int redispatch;                /* the requests without a worker are to be routed again: the
                                    * partition map changed, or requests lost their worker */
    int draining;
    volatile sig_atomic_t *stop;   /* broker_run's: a SIGTERM is seen by broker_stopping at once */
    metrics_t *metrics;
    health_t *health;
    metrics_series_t *m_routed, *m_replied, *m_redispatched, *m_workers_lost, *m_pending, *m_workers,
                     *m_partitions_owned, *m_zap_refused, *m_forbidden, *m_foreign_replies, *m_cut,
                     *m_audit_dropped, *m_audit_unwritten, *m_pending_bytes, *m_reconnects, *m_undelivered,
                     *m_silent, *m_audit_unrecorded, *m_unread, *m_unread_cut, *m_worker_ignored,
                     *m_unfinished, *m_unfinished_cut;
    uint64_t silent_counted;       /* the worker guard's silent drops already in m_silent */
    uint64_t unread_cut_counted;   /* the client guard's cuts for unread answers already in m_unread_cut */
    uint64_t unfinished_cut_counted;   /* and for the unfinished total, already in m_unfinished_cut */
    int audit_refuse;              /* FERRULE_AUDIT_FAILURE=refuse */
};

/* Logs a refusal at most once a second, counting the rest, so a flood cannot fill the log: a key
 * refused, a malformed or undecodable request, one the policy refuses (each is answered all the
 * same, and counted in the metrics). */
static void
broker_refusal (broker_t *b, const char *what, const char *detail)
{
    uint64_t held;
    if (!lograte_take (&b->refusal_log, clock_mono_ms (), &held))
        return;
    if (held)
        log_warning (NULL, NULL, "%s: %s (and %llu more refusals since the last line)", what, detail,
                     (unsigned long long) held);
    else
        log_warning (NULL, NULL, "%s: %s", what, detail);
}

/* Logs a message on the worker socket that the broker ignores (malformed, a HELLO it cannot read,
 * an unknown command) at most once a second, counting the rest: any peer that reaches the worker
 * port over plaintext, or a worker gone wrong, could otherwise fill the log. */
static void
broker_worker_ignored (broker_t *b, const char *what)
{
    uint64_t held;
    metrics_inc (b->m_worker_ignored);
    if (!lograte_take (&b->worker_log, clock_mono_ms (), &held))
        return;
    if (held)
        log_warning (NULL, NULL, "%s (and %llu more ignored since the last line)", what,
                     (unsigned long long) held);
    else
        log_warning (NULL, NULL, "%s", what);
}

/* "12 timeout, 3 unavailable" for the requests answered with an error and held back from the
 * log, which it then forgets. */
static void
broker_failed_held (broker_t *b, char *out, size_t size)
{
    size_t len = 0;
    out [0] = '\0';
    for (int st = 0; st < FR__COUNT; st++) {
        if (!b->failed_held [st])
            continue;
        int n = snprintf (out + len, size - len, "%s%llu %s", len ? ", " : "", (unsigned long long) b->failed_held [st],
                          result_code ((fr_status_t) st));
        if (n < 0 || (size_t) n >= size - len)
            break;
        len += (size_t) n;
    }
    memset (b->failed_held, 0, sizeof b->failed_held);
}

/* Logs a request the broker answers with an error itself (a deadline passed, no worker, a
 * worker's queue full) at most once a second: when a worker stalls under load every request
 * it held times out, and a line each would be thousands a second. The lines held back are
 * counted by code, and said with the next line or by broker_log_held. */
static void
broker_log_failed (broker_t *b, const pending_t *p, fr_status_t st, const char *message)
{
    uint64_t held;
    if (!lograte_take (&b->failed_log, clock_mono_ms (), &held)) {
        if ((unsigned) st < FR__COUNT)
            b->failed_held [st]++;
        return;
    }
    if (held) {
        char counts [256];
        broker_failed_held (b, counts, sizeof counts);
        log_info (p->integration, p->rid, "answering with %s: %s (and %llu more requests answered with an error "
                  "since the last line: %s)", result_code (st), message, (unsigned long long) held, counts);
    }
    else
        log_info (p->integration, p->rid, "answering with %s: %s", result_code (st), message);
}

/* The housekeeping's part: the count of the lines held back once their second has ended. */
static void
broker_log_held (broker_t *b, int64_t now)
{
    uint64_t held = lograte_due (&b->refusal_log, now);
    if (held)
        log_warning (NULL, NULL, "%llu more refusals since the last line", (unsigned long long) held);
    held = lograte_due (&b->worker_log, now);
    if (held)
        log_warning (NULL, NULL, "ignored %llu more messages on the worker socket since the last line",
                     (unsigned long long) held);
    held = lograte_due (&b->failed_log, now);
    if (held) {
        char counts [256];
        broker_failed_held (b, counts, sizeof counts);
        log_info (NULL, NULL, "answered %llu more requests with an error since the last line: %s",
                  (unsigned long long) held, counts);
    }
}

/* Reads the allow-lists and the policy; on failure keeps what it had and says why. */
static int
broker_load_access (broker_t *b, char *err, size_t errlen)
{
    keys_t *keys = NULL;
    policy_t *policy = NULL;
    if (!b->curve.plaintext) {
        keys = keys_load (b->cfg.clients_file, b->cfg.workers_file, err, errlen);
        if (!keys)
            return -1;
    }
    if (b->cfg.policy_file && *b->cfg.policy_file) {
        policy = policy_load (b->cfg.policy_file, err, errlen);
        if (!policy) {
            keys_destroy (&keys);
            return -1;
        }
    }
    keys_destroy (&b->keys);
    policy_destroy (&b->policy);
    b->keys = keys;
    b->policy = policy;
    if (b->curve.plaintext)
        log_info (NULL, NULL, "policy: %s", policy ? "read" : "none, every client may do everything");
    else
        log_info (NULL, NULL, "access lists read: %zu client keys, %zu worker keys, %s", keys_count (keys, KEYS_CLIENTS),
                  keys_count (keys, KEYS_WORKERS), policy ? "a policy file" : "no policy file (every listed client may do everything)");
    return 0;
}

broker_t *
broker_new (const broker_config_t *config, int *bad_setting, char *err, size_t errlen)
{
    broker_t *b = mem_alloc (sizeof *b);
    *bad_setting = 0;
    int one = 1, zero = 0;
    b->cfg = *config;
    b->cfg.curve = NULL;
    if (config->curve)
        b->curve = *config->curve;
    else
        b->curve.plaintext = 1;
    b->ctx = zmq_ctx_new ();
    if (!b->ctx) {
        snprintf (err, errlen, "could not create a ZeroMQ context: %s", zmq_strerror (errno));
        goto fail;
    }
    if (!b->curve.plaintext) {
        if (!config->clients_file || !*config->clients_file || !config->workers_file || !*config->workers_file) {
            snprintf (err, errlen, "CURVE needs both allow-lists: set FERRULE_CLIENTS_FILE and FERRULE_WORKERS_FILE");
            *bad_setting = 1;
            goto fail;
        }
        /* the ZAP handler must exist before the first handshake */
        b->zap = zmq_socket (b->ctx, ZMQ_REP);
        if (!b->zap || zmq_bind (b->zap, ZAP_ENDPOINT) != 0 || (b->zap_fd = frames_socket_fd (b->zap)) < 0) {
            snprintf (err, errlen, "could not start the authentication handler: %s", zmq_strerror (errno));
            goto fail;
        }
    }
    if (broker_load_access (b, err, errlen) != 0) {
        *bad_setting = 1;
        goto fail;
    }
    b->frontend = zmq_socket (b->ctx, ZMQ_ROUTER);
    b->backend = zmq_socket (b->ctx, ZMQ_ROUTER);
    if (!b->frontend || !b->backend) {
        snprintf (err, errlen, "could not create ZeroMQ sockets: %s", zmq_strerror (errno));
        goto fail;
    }
    frames_socket_defaults (b->frontend, (int) config->hwm, CODEC_MAX_BODY + 1024);
    frames_socket_defaults (b->backend, (int) config->hwm, CODEC_MAX_BODY + 1024);
    zmq_setsockopt (b->frontend, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (b->backend, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* No ZMQ_ROUTER_HANDOVER: a second connection under a worker's id is refused, so no peer can
     * take a worker's traffic. A restarted worker's old connection goes away with its process;
     * one that hangs is dropped by ZMTP heartbeats within three intervals. */
    int ivl = (int) config->heartbeat_ms, ttl = (int) config->heartbeat_ms * 3;
    zmq_setsockopt (b->backend, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt (b->backend, ZMQ_HEARTBEAT_TIMEOUT, &ttl, sizeof ttl);
    /* ZeroMQ's queues of what connections sent have no bound of their own: the guards below
     * bound the bytes each one holds unread. libzmq 4.3 stops reading a connection whose queue
     * is full, and never looks at it again unless the queue is read: one ZeroMQ keeps apart (a
     * second connection under a routing id) never is. Once cut, a worker's aborted the broker at
     * its next ZMTP heartbeat on an assertion ("!_io_error"); once closed by its peer, a
     * client's kept its descriptor open for good (it_security). */
    zmq_setsockopt (b->frontend, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt (b->backend, ZMQ_RCVHWM, &zero, sizeof zero);
    if (curve_apply_server (b->frontend, &b->curve, "clients") != 0
    ||  curve_apply_server (b->backend, &b->curve, "workers") != 0) {
        snprintf (err, errlen, "could not set up CURVE on the broker's sockets: %s", zmq_strerror (errno));
        goto fail;
    }
    size_t budget = (size_t) config->connection_budget;
    /* while complete messages wait to be read, a connection may hold more: requests pipelined */
    b->front_guard = guard_new (b->ctx, b->frontend, "client", budget, budget * 8, err, errlen);
    if (!b->front_guard)
        goto fail;
    /* ZeroMQ queues up to the high-water mark of answers for each client that does not read them:
     * bounded per connection only, clients that never read would grow the broker without end */
    guard_limit_unsent (b->front_guard, (size_t) config->unread_bytes,
                        "the connection is cut so that its answers are dropped (FERRULE_UNREAD_ANSWER_BYTES); a "
                        "client must read its answers");
    /* and each connection's budget bounds one connection's unfinished message, not how many
     * connections hold one: a client may open any number. The worker socket has no such bound:
     * its peers are the deployment's own workers, a few, each under its budget. */
    guard_limit_unfinished (b->front_guard, (size_t) config->unfinished_bytes,
                            "the connection is cut so that what it holds is dropped (FERRULE_UNFINISHED_BYTES); a "
                            "client must send whole messages");
    b->back_guard = guard_new (b->ctx, b->backend, "worker", budget, budget * 8, err, errlen);
    if (!b->back_guard)
        goto fail;
    /* Without HANDOVER, a worker's new connection that comes while the broker still holds its
     * old one is kept apart and never read (the worker then makes its link again only after
     * five heartbeat intervals without a PING): a broker paused past that, or one behind a
     * connection cut on the way, went that long without hearing a live worker. A worker says HELLO
     * as soon as it connects and once an interval, so two silent intervals mark such a
     * connection: dropped, ZeroMQ connects it again at once, and it is heard once the old one has
     * gone. */
    guard_expect_speech (b->back_guard, config->heartbeat_ms * 2,
                         "a worker says HELLO when it connects and once a heartbeat interval; ZeroMQ reads "
                         "nothing of a connection under a worker id another connection still holds");
    if (zmq_bind (b->frontend, config->frontend_bind) != 0) {
        snprintf (err, errlen, "could not bind frontend \"%s\": %s", config->frontend_bind, zmq_strerror (errno));
        goto fail;
    }
    if (zmq_bind (b->backend, config->backend_bind) != 0) {
        snprintf (err, errlen, "could not bind backend \"%s\": %s", config->backend_bind, zmq_strerror (errno));
        goto fail;
    }
    int audit_on = config->audit && *config->audit && strcmp (config->audit, "off") != 0;
    if (config->audit_failure && strcmp (config->audit_failure, "refuse") == 0)
        b->audit_refuse = 1;
    else
    if (config->audit_failure && strcmp (config->audit_failure, "serve") != 0) {
        snprintf (err, errlen, "FERRULE_AUDIT_FAILURE must be \"serve\" or \"refuse\", not \"%s\"", config->audit_failure);
        *bad_setting = 1;
        goto fail;
    }
    if (b->audit_refuse && !audit_on) {
        snprintf (err, errlen, "FERRULE_AUDIT_FAILURE=refuse needs an audit log: set FERRULE_AUDIT_LOG to a file or \"-\"");
        *bad_setting = 1;
        goto fail;
    }
    if (audit_on) {
        b->audit = audit_new (config->audit, err, errlen);
        if (!b->audit)
            goto fail;
    }
    else
        log_warning (NULL, NULL, "the audit log is off (FERRULE_AUDIT_LOG=off): requests leave no record of who made them");
    b->metrics = metrics_new ("ferrule_");
    b->m_routed = metrics_counter (b->metrics, "broker_requests_routed_total", "requests handed to a worker (re-dispatches included)", NULL);
    b->m_replied = metrics_counter (b->metrics, "broker_replies_forwarded_total", "worker replies forwarded to clients", NULL);
    b->m_redispatched = metrics_counter (b->metrics, "broker_requests_redispatched_total", "requests sent again after their worker was lost or connected again", NULL);
    b->m_reconnects = metrics_counter (b->metrics, "broker_worker_reconnects_total", "HELLOs from a known worker process on another connection than before (its connection broke and was made again)", NULL);
    b->m_workers_lost = metrics_counter (b->metrics, "broker_workers_lost_total", "workers removed: heartbeats missed, unreachable, or goodbye", NULL);
    b->m_pending = metrics_gauge (b->metrics, "broker_pending_requests", "requests accepted and not yet answered", NULL);
    b->m_pending_bytes = metrics_gauge (b->metrics, "broker_pending_bytes", "bytes of request bodies held for pending requests", NULL);
    b->m_workers = metrics_gauge (b->metrics, "broker_workers", "live workers (not draining)", NULL);
    b->m_partitions_owned = metrics_gauge (b->metrics, "broker_partitions_owned", "partitions with a live owner", NULL);
    b->m_zap_refused = metrics_counter (b->metrics, "broker_handshakes_refused_total", "CURVE handshakes refused: key not on an allow-list", NULL);
    b->m_forbidden = metrics_counter (b->metrics, "broker_requests_forbidden_total", "requests refused by the policy or from a key removed since it connected", NULL);
    b->m_foreign_replies = metrics_counter (b->metrics, "broker_replies_ignored_total", "worker replies ignored: not from the worker the request was sent to, or for no pending request", NULL);
    b->m_undelivered = metrics_counter (b->metrics, "broker_answers_undelivered_total", "answers dropped because the client's queue of unread answers was full", NULL);
    b->m_cut = metrics_counter (b->metrics, "broker_connections_cut_total", "connections cut for breaking the byte budgets or sending under another's name", NULL);
    b->m_unread = metrics_gauge (b->metrics, "broker_unread_answer_bytes",
                                 "bytes of answers sent to clients that wait unread in the broker (at least)", NULL);
    b->m_unread_cut = metrics_counter (b->metrics, "broker_unread_connections_cut_total",
                                       "client connections cut for leaving answers unread past FERRULE_UNREAD_ANSWER_BYTES", NULL);
    b->m_unfinished = metrics_gauge (b->metrics, "broker_unfinished_message_bytes",
                                     "bytes client connections sent that make no complete message yet (at most)", NULL);
    b->m_unfinished_cut = metrics_counter (b->metrics, "broker_unfinished_connections_cut_total",
                                           "client connections cut for holding the most of the unfinished messages past "
                                           "FERRULE_UNFINISHED_BYTES", NULL);
    b->m_worker_ignored = metrics_counter (b->metrics, "broker_worker_messages_ignored_total",
                                           "messages on the worker socket ignored: malformed, a HELLO that could not be "
                                           "read, or an unknown command", NULL);
    b->m_silent = metrics_counter (b->metrics, "broker_silent_connections_dropped_total",
                                   "worker connections dropped because no message came of them for two heartbeat intervals "
                                   "(a connection under a worker id another one still held)", NULL);
    b->m_audit_unrecorded = metrics_counter (b->metrics, "broker_audit_unrecorded_total",
                                             "answers the broker gave itself (refusals, pings) without an audit record (FERRULE_AUDIT_FAILURE=refuse): "
                                             "the audit queue's last places were kept for the answers owed to pending requests", NULL);
    b->m_audit_dropped = metrics_gauge (b->metrics, "broker_audit_dropped", "audit records lost because the writer fell behind (since start)", NULL);
    b->m_audit_unwritten = metrics_gauge (b->metrics, "broker_audit_unwritten",
                                          "audit records lost to write errors: records unwritable at the stop (a full "
                                          "or failing disk holds records in memory meanwhile; past the queue they count as dropped) (since start)", NULL);
    metrics_set (metrics_gauge (b->metrics, "broker_plaintext", "1 when links are neither authenticated nor encrypted", NULL),
                 b->curve.plaintext);
    if (config->http_bind && *config->http_bind) {
        b->health = health_new (config->http_bind, b->metrics, err, errlen);
        if (!b->health)
            goto fail;
        if (b->curve.plaintext)
            health_set_note (b->health, "plaintext: links are neither authenticated nor encrypted (FERRULE_ALLOW_PLAINTEXT=1)");
        log_info (NULL, NULL, "serving /healthz, /readyz and /metrics on port %d", health_port (b->health));
    }
    b->registry = registry_new ((uint32_t) config->partitions, config->heartbeat_ms * 3);
    b->pending = pending_table_new ();
    b->shares = share_new ();
    b->out = codec_builder_new ();
    return b;
fail:
    broker_destroy (&b);
    return NULL;
}

void
broker_destroy (broker_t **b_p)
{
    if (b_p && *b_p) {
        broker_t *b = *b_p;
        guard_destroy (&b->front_guard);
        guard_destroy (&b->back_guard);
        if (b->frontend) {
            /* the last answers, handed to ZeroMQ in the loop's last turn, leave before the socket
             * goes (with no linger they were dropped: it_lifecycle) */
            int linger = STOP_LINGER_MS;
            zmq_setsockopt (b->frontend, ZMQ_LINGER, &linger, sizeof linger);
            zmq_close (b->frontend);
        }
        if (b->backend)
            zmq_close (b->backend);
        if (b->zap)
            zmq_close (b->zap);
        frames_ctx_term (b->ctx);          /* the linger above, even through a third SIGTERM */
        audit_destroy (&b->audit);
        health_destroy (&b->health);
        metrics_destroy (&b->metrics);
        registry_destroy (&b->registry);
        pending_table_destroy (&b->pending);
        share_destroy (&b->shares);
        codec_builder_destroy (&b->out);
        keys_destroy (&b->keys);
        policy_destroy (&b->policy);
        curve_identity_clear (&b->curve);
        mem_free (b);
        *b_p = NULL;
    }
}

/* An answer ZeroMQ did not take (errno says why). A client that went away is not an error worth
 * more than a debug line. One whose queue is full (FERRULE_ZMQ_HWM answers it has not read) loses
 * the answer, and the broker cannot wait for it: that is counted and said, never silent. */
static void
broker_undelivered (broker_t *b)
{
    if (errno != EAGAIN) {
        log_debug (NULL, NULL, "could not answer a client: %s", zmq_strerror (errno));
        return;
    }
    metrics_inc (b->m_undelivered);
    broker_refusal (b, "could not answer a client", "its queue of unread answers is full (FERRULE_ZMQ_HWM): the "
                    "answer is dropped; the client reads its answers too slowly");
}

/* Whether the connection a pending request came on (fd, conn: guard_sender's) still holds its
 * routing id. An answer goes by routing id alone, and ZeroMQ's ROUTER gives a routing id that a
 * peer offers (ZMQ_ROUTING_ID) to it once the connection holding it has gone: another listed
 * client could take a client's id and be sent the answers to what the first one asked. Over a
 * transport without descriptors (inproc) there is nothing to check, and no peer from afar. */
static int
broker_client_there (broker_t *b, int fd, uint64_t conn)
{
    if (fd < 0)
        return 1;
    if (guard_holds (b->front_guard, fd, conn))
        return 1;
    errno = EHOSTUNREACH;                /* as ZeroMQ says of a routing id it has no connection for */
    return 0;
}

/* Sends a body to a client, in answer to rq; 0, or -1 when it was not sent (broker_undelivered). */
static int
broker_send_client (broker_t *b, const void *client, size_t client_len, const req_t *rq, const char *body,
                    size_t len)
{
    const void *parts [] = { client, "", CODEC_CLIENT_PROTOCOL, body };
    size_t sizes [] = { client_len, 0, 4, len };
    if (rq->owed && !broker_client_there (b, rq->fd, rq->conn)) {
        broker_undelivered (b);
        return -1;
    }
    if (frames_send (b->frontend, parts, sizes, 4, ZMQ_DONTWAIT) == 0) {
        guard_sent (b->front_guard, rq->fd, rq->conn, 4 + len);
        return 0;
    }
    broker_undelivered (b);
    return -1;
}

/* Forwards a worker's reply frame to the client of p as it was received (shared, not copied); 0,
 * or -1 when it was not sent (broker_undelivered). */
static int
broker_forward_client (broker_t *b, const pending_t *p, zmq_msg_t *body)
{
    const void *parts [] = { p->client, "", CODEC_CLIENT_PROTOCOL };
    size_t sizes [] = { p->client_len, 0, 4 };
    size_t len = zmq_msg_size (body);
    if (!broker_client_there (b, p->client_fd, p->client_conn)) {
        broker_undelivered (b);
        return -1;
    }
    if (frames_send_msg (b->frontend, parts, sizes, 3, body, ZMQ_DONTWAIT) == 0) {
        guard_sent (b->front_guard, p->client_fd, p->client_conn, 4 + len);
        return 0;
    }
    broker_undelivered (b);
    return -1;
}

/* Counts an answer the broker gave itself, by code. */
static void
broker_count_error (broker_t *b, fr_status_t st)
{
    char labels [64];
    snprintf (labels, sizeof labels, "code=\"%s\"", result_code (st));
    metrics_inc (metrics_counter (b->metrics, "broker_errors_total", "requests the broker answered itself with an error", labels));
}

/* Records an answer. With FERRULE_AUDIT_FAILURE=refuse, an answer to a request that was never
 * pending (a refusal, a ping) takes no place in the queue that the answers still owed may need: a
 * flood of refusals while the log cannot be written would otherwise fill it, and a worker's token
 * would then have no place for its record. Such an answer goes unrecorded and counted instead. 0
 * when the record was not queued. While the writer keeps up, the places kept are at most half the
 * queue: it empties every AUDIT_FLUSH_MS, and keeping one per pending request had left every
 * refusal unrecorded, with the log healthy, once more requests were pending than it holds. */
static int
broker_audit (broker_t *b, const req_t *rq, const char *outcome)
{
    if (!b->audit)
        return 1;
    size_t kept = pending_count (b->pending);
    if (audit_writing (b->audit) && kept > AUDIT_QUEUE / 2)
        kept = AUDIT_QUEUE / 2;
    if (b->audit_refuse && !rq->owed && audit_room (b->audit) <= kept) {
        metrics_inc (b->m_audit_unrecorded);
        return 0;
    }
    return audit_record (b->audit, rq->client_name, rq->op, rq->integ, rq->integ_len, outcome, rq->rid, rq->rid_len);
}

/* hint NULL: the default hint for st */
static void
broker_reply_error_hint (broker_t *b, const void *client, size_t client_len, const req_t *rq,
                         fr_status_t st, const char *message, const char *hint)
{
    broker_count_error (b, st);
    codec_builder_reset (b->out);
    codec_error_reply (b->out, rq->rid, rq->rid_len, st, message, hint, -1);
    size_t len;
    const char *data = codec_builder_data (b->out, &len);
    /* recorded after the send, as a worker's answer is: the audit says what the client got */
    int sent = broker_send_client (b, client, client_len, rq, data, len) == 0;
    (void) broker_audit (b, rq, sent ? result_code (st) : "undelivered");   /* lost or counted */
}

static void
broker_reply_error (broker_t *b, const void *client, size_t client_len, const req_t *rq,
                    fr_status_t st, const char *message)
{
    broker_reply_error_hint (b, client, client_len, rq, st, message, NULL);
}

/* Answers a pending request with an error (hint NULL: the default) and forgets it. */
static void
broker_fail_pending_hint (broker_t *b, pending_t *p, fr_status_t st, const char *message, const char *hint)
{
    broker_log_failed (b, p, st, message);
    req_t rq = { p->client_name, (op_t) p->op, p->has_integration ? p->integration : NULL, strlen (p->integration),
                 p->rid_len ? p->rid : NULL, p->rid_len, 1, p->client_fd, p->client_conn };
    broker_reply_error_hint (b, p->client, p->client_len, &rq, st, message, hint);
    share_give (b->shares, p->share_holder, p->body_len);
    pending_remove (b->pending, p);
}

static void
broker_fail_pending (broker_t *b, pending_t *p, fr_status_t st, const char *message)
{
    broker_fail_pending_hint (b, p, st, message, NULL);
}

/* Forgets a worker and puts its unanswered requests back in the queue for the new owners; the
 * others hear the new membership on the next turn (a PING round under way may have listed it:
 * until they hear, its partitions go unswept). */
static void
broker_worker_lost (broker_t *b, const char *worker_id, const char *why)
{
    if (!registry_remove (b->registry, worker_id))
        return;
    b->next_ping_ms = 0;
    metrics_inc (b->m_workers_lost);
    log_warning (NULL, NULL, "lost worker \"%s\": %s", worker_id, why);
    for (pending_t *p = pending_first (b->pending); p; p = p->next)
        if (strcmp (p->worker, worker_id) == 0) {
            p->worker [0] = '\0';
            b->redispatch = 1;
        }
}

/* Sends request p to worker worker_id, which then holds it. 0 when it was sent, -1 with errno
 * when it was not (EHOSTUNREACH: no connection under that id). */
static int
broker_send_req (broker_t *b, pending_t *p, const char *worker_id)
{
    int64_t remaining = p->deadline_ms - clock_mono_ms ();
    if (remaining < 1)
        remaining = 1;
    unsigned char seq [8], rem [4];
    frames_put_u64 (seq, p->seq);
    frames_put_u32 (rem, (uint32_t) (remaining > UINT32_MAX ? UINT32_MAX : remaining));
    /* the body as received, shared with the entry, not copied */
    const void *parts [] = { worker_id, CODEC_WORKER_PROTOCOL, "REQ", p->client, seq, rem };
    size_t sizes [] = { strlen (worker_id), 4, 3, p->client_len, 8, 4 };
    if (frames_send_msg (b->backend, parts, sizes, 6, &p->body, ZMQ_DONTWAIT) != 0)
        return -1;
    if (p->worker != worker_id)
        text_copy (p->worker, sizeof p->worker, worker_id);
    if (p->attempts++ > 0)
        metrics_inc (b->m_redispatched);
    metrics_inc (b->m_routed);
    return 0;
}

/* Hands a request to its partition's owner. Returns 1 when it was sent, 0 when it waits for an
 * owner, -1 when it was answered with an error and removed. */
static int
broker_route (broker_t *b, pending_t *p)
{
    for (;;) {
        const char *owner = registry_owner (b->registry, p->partition);
        if (!owner) {
            /* no live worker at all: it waits for the map to change (broker_dispatch_waiting) or
             * for its deadline (broker_tick), not walked again every turn meanwhile */
            p->worker [0] = '\0';
            return 0;
        }
        if (broker_send_req (b, p, owner) == 0)
            return 1;
        if (errno == EHOSTUNREACH) {
            char id [REGISTRY_MAX_WORKER_ID + 1];
            snprintf (id, sizeof id, "%s", owner);
            broker_worker_lost (b, id, "not connected");
            continue;
        }
        char message [300];
        if (p->attempts > 0) {
            /* sent to a worker before, lost since, which may have carried it out: "overloaded"
             * would say it was not, and an administering request sent again would run twice */
            snprintf (message, sizeof message, "worker \"%s\" cannot take this request (%s), which was sent before "
                      "to a worker since lost: it may have been carried out", owner, zmq_strerror (errno));
            broker_fail_pending_hint (b, p, FR_TIMEOUT, message, timeout_hint (p->op));
            return -1;
        }
        snprintf (message, sizeof message, "worker \"%s\" cannot take more requests (%s)", owner,
                  zmq_strerror (errno));
        broker_fail_pending (b, p, FR_OVERLOADED, message);
        return -1;
    }
}

/* Routes the requests without a worker again, once something may have given them one: walking
 * them every turn cost time in proportion to FERRULE_MAX_PENDING on every turn of a broker
 * without workers. */
static void
broker_dispatch_waiting (broker_t *b)
{
    if (!b->redispatch)
        return;
    b->redispatch = 0;
    pending_t *p = pending_first (b->pending);
    while (p) {
        pending_t *next = p->next;
        if (p->worker [0] == '\0')
            broker_route (b, p);       /* may lose a worker, and set redispatch again */
        p = next;
    }
}

/* A known worker's HELLO came on another connection than the one before, from the same process
 * (a new process is broker_worker_lost): its connection broke and ZeroMQ made another, between
 * two PINGs. What was sent on the old one may have gone down with it, and nothing else would
 * answer it before its deadline: all that is in flight to the worker goes out again now, to that
 * worker, whoever owns the partitions by now (it drains, or another won them): it may have
 * carried a request out already, and only it can tell a copy (worker/once.c); another process
 * would carry it out a second time, and the first one's answer would be refused as a
 * stranger's. A read that did reach it is answered twice; the client gets the first answer, the
 * second is dropped as late. */
static void
broker_worker_reconnected (broker_t *b, const char *worker_id)
{
    int n = 0, failed = 0;
    metrics_inc (b->m_reconnects);
    for (pending_t *p = pending_first (b->pending), *next; p; p = next) {
        next = p->next;
        if (strcmp (p->worker, worker_id) != 0)
            continue;
        if (broker_send_req (b, p, worker_id) == 0) {
            n++;
            continue;
        }
        if (errno == EHOSTUNREACH) {
            /* gone again already: what it held goes to the partitions' owners */
            char id [REGISTRY_MAX_WORKER_ID + 1];
            snprintf (id, sizeof id, "%s", worker_id);
            broker_worker_lost (b, id, "not connected");
            broker_dispatch_waiting (b);
            return;
        }
        /* sent to it before, and perhaps carried out: "overloaded" would say it was not */
        char message [300];
        snprintf (message, sizeof message, "worker \"%s\" came back on another connection and cannot take this "
                  "request again (%s): the request, sent to it before, may have been carried out", worker_id,
                  zmq_strerror (errno));
        broker_fail_pending_hint (b, p, FR_TIMEOUT, message, timeout_hint (p->op));
        failed++;
    }
    if (!n && !failed) {
        log_info (NULL, NULL, "worker \"%s\" came back on another connection with nothing in flight to it", worker_id);
        return;
    }
    log_warning (NULL, NULL, "worker \"%s\" came back on another connection; re-dispatching %d request%s sent "
                 "to it before, which the old connection may have lost", worker_id, n, n == 1 ? "" : "s");
}

/* A stop counts from its signal, not from the loop's next look at it: the loop looks once a pass,
 * before its poll, and a SIGTERM that came after that look let the poll's requests reach the
 * workers, answered as if no stop had come (CI, 2026-12-06). */
static int
broker_stopping (const broker_t *b)
{
    return b->draining || (b->stop && *b->stop);
}

static void
broker_ping_reply (broker_t *b, const void *client, size_t client_len, const req_t *rq)
{
    const char *rid = rq->rid;
    size_t rid_len = rq->rid_len;
    codec_builder_t *o = b->out;
    codec_builder_reset (o);
    codec_map (o, rid ? 11 : 10);
    if (rid) {
        codec_str (o, "rid");
        codec_strn (o, rid, rid_len);
    }
    codec_kv_bool (o, "ok", 1);
    codec_kv_str (o, "service", "ferrule");
    codec_kv_str (o, "role", "broker");
    codec_kv_int (o, "workers", (int64_t) registry_live_count (b->registry));
    codec_kv_int (o, "partitions", registry_partitions (b->registry));
    codec_kv_int (o, "partitions_owned", registry_partitions_owned (b->registry));
    codec_kv_int (o, "pending", (int64_t) pending_count (b->pending));
    /* from the signal on, as requests are refused: a ping read in the pass the SIGTERM came in said
     * false, and a gateway took the broker for one it could use */
    codec_kv_bool (o, "draining", broker_stopping (b));
    /* how this link is protected, and who the broker thinks the caller is */
    codec_kv_str (o, "security", b->curve.plaintext ? "plaintext" : "curve");
    codec_kv_str (o, "client", rq->client_name);
    size_t len;
    const char *data = codec_builder_data (o, &len);
    (void) broker_audit (b, rq, broker_send_client (b, client, client_len, rq, data, len) == 0 ? "ok" : "undelivered");
}

/* Answers one ZAP request (RFC 27): a CURVE key on the allow-list of the socket's domain is
 * admitted, with its Z85 text as the connection's User-Id, so that every message carries the key
 * it was sent with and can be checked against the lists of the moment. 1 when a request was read,
 * 0 when none was waiting. */
static int
broker_handle_zap (broker_t *b)
{
    frames_t f;
    char key [CURVE_Z85_LEN + 1] = "";
    const char *status = "400", *text = "key not allowed";
    const char *name = NULL;
    if (frames_recv (b->zap, &f, ZMQ_DONTWAIT) != 0)
        return 0;
    if (f.total < 6) {
        /* not a ZAP request; a REP socket must still answer something */
        const void *parts [] = { "1.0", "", "500", "malformed request", "", "" };
        size_t sizes [] = { 3, 0, 3, 17, 0, 0 };
        frames_send (b->zap, parts, sizes, 6, 0);
        goto out;
    }
    int workers = frames_is (&f, 2, "workers");
    if (frames_is (&f, 0, "1.0") && frames_is (&f, 5, "CURVE") && f.total == 7 && frames_size (&f, 6) == 32
    &&  (workers || frames_is (&f, 2, "clients"))) {
        zmq_z85_encode (key, frames_data (&f, 6), 32);
        name = keys_name (b->keys, workers ? KEYS_WORKERS : KEYS_CLIENTS, key);
    }
    if (name) {
        status = "200";
        text = "OK";
    }
    else {
        char detail [192];
        char addr [64];
        text_printable (addr, sizeof addr, frames_data (&f, 3), frames_size (&f, 3), sizeof addr - 1);
        /* the public key (not a secret) names the caller: the one thing the operator can look up
         * or add to the allow-list; a refused handshake reaches neither the audit log nor a worker */
        snprintf (detail, sizeof detail, "a %s from %s with public key %s", workers ? "worker" : "client", addr,
                  key [0] ? key : "(none: not a CURVE handshake)");
        broker_refusal (b, "refused a key that is not on the allow-list", detail);
        metrics_inc (b->m_zap_refused);
        key [0] = '\0';
    }
    const void *parts [] = { "1.0", frames_data (&f, 1), status, text, key, "" };
    size_t sizes [] = { 3, frames_size (&f, 1), 3, strlen (text), strlen (key), 0 };
    if (frames_send (b->zap, parts, sizes, 6, 0) != 0)
        log_warning (NULL, NULL, "could not answer an authentication request: %s", zmq_strerror (errno));
out:
    frames_close (&f);
    return 1;
}

/* Answers the ZAP requests waiting, until none is left (its descriptor signals only new ones). */
/* Returns how many ZAP requests it answered. */
static int
broker_drain_zap (broker_t *b)
{
    int i = 0;
    while (b->zap && i < 64 && broker_handle_zap (b))
        i++;
    return i;
}

/* Over plaintext, ZeroMQ hands a body over 33 bytes as a slice of its receive buffer (8 KiB),
 * which a pending entry would keep whole for as long as it waits: max_pending_bytes would then
 * bound nothing. The body is copied into a buffer of its own size first (a hundred bytes, once).
 * Over CURVE each message is decrypted into a buffer of its own already. */
static void
broker_own_body (zmq_msg_t *body)
{
    zmq_msg_t own;
    size_t n = zmq_msg_size (body);
    if (zmq_msg_init_size (&own, n) != 0)
        return;                          /* keep the slice: no memory for a copy */
    memcpy (zmq_msg_data (&own), zmq_msg_data (body), n);
    zmq_msg_move (body, &own);           /* releases the slice */
    zmq_msg_close (&own);
}

/* The key (Z85) a message's sender was admitted with, as the ZAP handler set it; NULL: none. */
static const char *
broker_sender_key (frames_t *f)
{
    return f->count > 1 ? zmq_msg_gets (&f->part [1], "User-Id") : NULL;
}

/* The name a message's sender was admitted under, checked against the current lists; NULL when
 * its key has been removed since it connected (or the message carries none). */
static const char *
broker_sender (broker_t *b, frames_t *f, keys_kind_t kind)
{
    if (b->curve.plaintext)
        return kind == KEYS_CLIENTS ? PLAINTEXT_NAME : "";
    return keys_name (b->keys, kind, broker_sender_key (f));
}

/* The keys of a request the broker routes by, read with codec_scan (the body is not decoded). */
enum { REQ_RID, REQ_OP, REQ_DEADLINE, REQ_INTEGRATION, REQ__KEYS };

/* 1 when a request id can be echoed: 1 to 64 bytes (docs/protocol.md, Limits) of text on one
 * line. It goes back in the reply, where a client matches it byte for byte and may decode it as
 * UTF-8, and into log lines and the audit log. */
static int
rid_valid (const char *rid, size_t len)
{
    return len >= 1 && len <= 64 && text_line (rid, len);
}

/* The request's "rid" into rq, when its message has the client frames' shape and its body one:
 * for an answer given before the body is read, so that a client with several calls in flight can
 * tell which one it answers. Its "op" too, for the audit. */
static void
broker_echo_rid (frames_t *f, req_t *rq)
{
    char err [128];
    const char *rid, *op;
    size_t len, op_len;
    codec_field_t fl [2] = { { .key = "rid" }, { .key = "op" } };
    if (f->total != 4 || frames_size (f, 1) != 0
    ||  codec_scan (frames_data (f, 3), frames_size (f, 3), fl, 2, err, sizeof err) != FR_OK)
        return;
    if (codec_field_str (&fl [1], &op, &op_len) == 1)
        rq->op = ops_lookup (op, op_len);
    if (codec_field_str (&fl [0], &rid, &len) != 1 || !rid_valid (rid, len))
        return;
    rq->rid = rid;
    rq->rid_len = len;
}

/* Reads one client message and routes it, or answers it with an error. 1 when a message was read,
 * 0 when none was waiting. */
static int
broker_handle_client (broker_t *b)
{
    frames_t f;
    char err [512];          /* a refusal names the client, the operation and a workspace twice */
    codec_field_t fl [REQ__KEYS] = {
        [REQ_RID] = { .key = "rid" }, [REQ_OP] = { .key = "op" },
        [REQ_DEADLINE] = { .key = "deadline_ms" }, [REQ_INTEGRATION] = { .key = "integration" },
    };
    if (frames_recv (b->frontend, &f, ZMQ_DONTWAIT) != 0) {
        if (errno == EAGAIN)
            guard_drained (b->front_guard);     /* the socket has nothing left to read */
        return 0;
    }
    int src = frames_source_fd (&f);
    uint64_t conn = guard_account (b->front_guard, src, f.bytes, f.total);
    const void *client = frames_data (&f, 0);
    size_t client_len = frames_size (&f, 0);
    req_t rq = { NULL, OP_UNKNOWN, NULL, 0, NULL, 0, 0, src, conn };

    rq.client_name = broker_sender (b, &f, KEYS_CLIENTS);
    if (!rq.client_name) {
        /* admitted at the handshake, removed from the clients file since */
        metrics_inc (b->m_forbidden);
        broker_refusal (b, "refused a request", "its client key was removed from the clients file since it connected");
        /* audited under its key's first characters (public, and enough to find it in a list) */
        const char *key = broker_sender_key (&f);
        char who [16];
        snprintf (who, sizeof who, "key:%.8s", key ? key : "");
        rq.client_name = who;
        broker_echo_rid (&f, &rq);
        broker_reply_error_hint (b, client, client_len, &rq, FR_FORBIDDEN,
                                 "this client's key is no longer on the broker's clients list",
                                 "ask the operator to list the client's key in FERRULE_CLIENTS_FILE again (the "
                                 "brokers re-read it on SIGHUP), or use a key that is listed");
        goto out;
    }
    if (f.bytes > MESSAGE_BUDGET) {
        /* whole in memory by now (ZeroMQ bounds each frame, the guard a message that does not
         * end): answered, not cut; cutting by its descriptor could reach another connection that
         * got the descriptor after this one closed */
        snprintf (err, sizeof err, "a message of %zu bytes in %d frames (the limit is %d bytes)", f.bytes, f.total - 1,
                  MESSAGE_BUDGET);
        broker_refusal (b, "refused a client message", err);
        broker_reply_error_hint (b, client, client_len, &rq, FR_TOO_LARGE, err,
                                 "send at most 260 KiB in one message, all frames together (docs/protocol.md, Limits)");
        goto out;
    }
    if (f.total != 4 || frames_size (&f, 1) != 0) {
        snprintf (err, sizeof err, "expected 3 frames (empty delimiter, \"FRL1\", body), got %d", f.total - 1);
        broker_refusal (b, "malformed client message", err);
        broker_reply_error (b, client, client_len, &rq, FR_MALFORMED_FRAME, err);
        goto out;
    }
    if (!frames_is (&f, 2, CODEC_CLIENT_PROTOCOL)) {
        broker_echo_rid (&f, &rq);       /* a newer client's body may still say which call this is */
        broker_reply_error (b, client, client_len, &rq, FR_UNSUPPORTED_VERSION, "protocol tag is not \"FRL1\"");
        goto out;
    }
    const void *body = frames_data (&f, 3);
    size_t body_len = frames_size (&f, 3);
    fr_status_t st = codec_scan (body, body_len, fl, REQ__KEYS, err, sizeof err);
    if (st != FR_OK) {
        broker_refusal (b, "undecodable client request", err);
        broker_reply_error (b, client, client_len, &rq, st, err);
        goto out;
    }
    /* present, even as nil or another type: as codec_get found it before */
    int has_integration = fl [REQ_INTEGRATION].kind != CODEC_ABSENT;
    const char *rid = NULL;
    size_t rid_len = 0;
    int r = codec_field_str (&fl [REQ_RID], &rid, &rid_len);
    if (r < 0 || (r == 1 && (rid_len == 0 || rid_len > 64))) {
        /* over the cap is too_large, as for every other string (docs/protocol.md, Limits) */
        broker_reply_error (b, client, client_len, &rq, r == 1 && rid_len > 64 ? FR_TOO_LARGE : FR_BAD_REQUEST,
                            "\"rid\" must be a string of 1 to 64 bytes");
        goto out;
    }
    if (r == 1 && !rid_valid (rid, rid_len)) {
        /* not echoed: it would come back cut at a NUL, or as bytes a client cannot decode */
        broker_reply_error (b, client, client_len, &rq, FR_BAD_REQUEST,
                            "\"rid\" must be UTF-8 text without control characters");
        goto out;
    }
    if (r == 1) {
        rq.rid = rid;
        rq.rid_len = rid_len;
    }
    const char *op;
    size_t op_len;
    if (codec_field_str (&fl [REQ_OP], &op, &op_len) != 1) {
        broker_reply_error (b, client, client_len, &rq, FR_BAD_REQUEST, "\"op\" is required and must be a string");
        goto out;
    }
    rq.op = ops_lookup (op, op_len);
    if (rq.op == OP_UNKNOWN) {
        char shown [40];
        text_printable (shown, sizeof shown, op, op_len, 32);
        snprintf (err, sizeof err, "unknown operation \"%s\"", shown);
        broker_reply_error (b, client, client_len, &rq, FR_UNKNOWN_OPERATION, err);
        goto out;
    }
    int64_t deadline = b->cfg.default_deadline_ms;
    r = codec_field_int (&fl [REQ_DEADLINE], &deadline);
    if (r < 0 || deadline < 1 || deadline > MAX_DEADLINE_MS) {
        snprintf (err, sizeof err, "\"deadline_ms\" must be an integer from 1 to %d", MAX_DEADLINE_MS);
        broker_reply_error (b, client, client_len, &rq, FR_BAD_REQUEST, err);
        goto out;
    }
    if (rq.op == OP_PING && !has_integration) {
        /* any admitted client may ask whether the service is up; it learns no integration */
        broker_ping_reply (b, client, client_len, &rq);
        goto out;
    }
    if (has_integration && ops_takes_no_integration (rq.op)) {
        /* the worker would answer for every integration: a rule for the one named must not pass it */
        snprintf (err, sizeof err, "\"%s\" concerns every integration and takes no \"integration\"", ops_name (rq.op));
        broker_reply_error_hint (b, client, client_len, &rq, FR_BAD_REQUEST, err,
                                 "send it without \"integration\"; it needs a policy rule for every integration (\"*\")");
        goto out;
    }
    const char *route = NULL;     /* what the partition is computed from */
    size_t route_len = 0;
    const char *route_key = ops_route_key (rq.op);     /* callback and the gateway's token operations */
    if (route_key && has_integration) {
        /* the worker serves whatever integration the value belongs to: one named beside it would
         * route and audit the request under an integration it may not concern */
        snprintf (err, sizeof err, "\"%s\" is routed by its \"%s\" and takes no \"integration\"", ops_name (rq.op),
                  route_key);
        broker_reply_error_hint (b, client, client_len, &rq, FR_BAD_REQUEST, err,
                                 "send it without \"integration\": the value names the integration");
        goto out;
    }
    if (route_key) {
        /* a callback knows only its state: route by it (any worker can finish a connect); these
         * operations are rare, so their key is read by a second scan of the checked body */
        codec_field_t rk = { .key = route_key };
        int got = codec_scan (body, body_len, &rk, 1, err, sizeof err) == FR_OK
                ? codec_field_str (&rk, &route, &route_len) : -1;
        if (got != 1 || route_len == 0 || route_len > 256) {
            snprintf (err, sizeof err, "\"%s\" must be a string of 1 to 256 bytes", route_key);
            /* over the cap is too_large, as for every other string (docs/protocol.md, Errors) */
            broker_reply_error (b, client, client_len, &rq, got == 1 && route_len > 256 ? FR_TOO_LARGE : FR_BAD_REQUEST, err);
            goto out;
        }
    }
    else
    if (ops_is_deployment_wide (rq.op) && !has_integration) {
        /* events and webhooks (worker/events.c): any worker serves them from the database */
        route = ops_name (rq.op);
        route_len = strlen (route);
    }
    else
    if (codec_field_str (&fl [REQ_INTEGRATION], &rq.integ, &rq.integ_len) != 1 || !ident_valid (rq.integ, rq.integ_len)) {
        fr_status_t why = rq.integ && rq.integ_len > IDENT_MAX ? FR_TOO_LARGE : FR_BAD_REQUEST;
        rq.integ = NULL;
        broker_reply_error (b, client, client_len, &rq, why,
                            "\"integration\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
        goto out;
    }
    else {
        route = rq.integ;
        route_len = rq.integ_len;
    }
    /* authorization, with the authenticated name, before anything reaches a worker */
    /* a deployment-wide operation without an integration needs a rule that covers every one, and
     * so do the gateway's operations routed by the value they hand back (a key, a link, a retry
     * or attempt's state), which may belong to any workspace (they take no "integration": the
     * worker reads only the value); a callback alone is allowed by a rule naming it whatever its
     * patterns: its state came from that client's own connect */
    int wide = ops_takes_no_integration (rq.op) || (!rq.integ && ops_is_deployment_wide (rq.op))
            || (route_key && rq.op != OP_CALLBACK);
    if (b->policy && !policy_allows (b->policy, rq.client_name, rq.op, wide ? "*" : rq.integ, wide ? 1 : rq.integ_len)) {
        metrics_inc (b->m_forbidden);
        /* an operation that reaches every integration needs a rule that covers them all: said,
         * since a rule naming the operation with narrower patterns looks as if it should do */
        if (!wide && rq.integ && ops_takes_workspace (rq.op))
            snprintf (err, sizeof err, "client \"%s\" may not use \"%s\" on this workspace (it reaches every "
                      "integration whose id starts with \"%.*s\": only a policy rule with a pattern that covers "
                      "them all, such as \"%.*s*\", allows it)", rq.client_name, ops_name (rq.op),
                      (int) rq.integ_len, rq.integ, (int) rq.integ_len, rq.integ);
        else
            snprintf (err, sizeof err, "client \"%s\" may not use \"%s\"%s", rq.client_name, ops_name (rq.op),
                      wide ? " (it reaches every integration: only a policy rule whose patterns cover every one, "
                             "\"*\", allows it)"
                           : rq.integ ? " on this integration" : "");
        broker_refusal (b, "refused by the policy", err);
        broker_reply_error (b, client, client_len, &rq, FR_FORBIDDEN, err);
        goto out;
    }
    if (broker_stopping (b)) {
        broker_reply_error (b, client, client_len, &rq, FR_UNAVAILABLE,
                            "this broker is shutting down; send the request to another broker");
        goto out;
    }
    if (b->audit_refuse && !audit_writing (b->audit)) {
        /* no token leaves without its record; the refusals are recorded too, and wait with the
         * rest for the writer, which tries again every AUDIT_FLUSH_MS, while the queue has more
         * room than the answers still owed need (broker_audit) */
        broker_refusal (b, "refused a request", "the audit log cannot be written (FERRULE_AUDIT_FAILURE=refuse)");
        broker_reply_error_hint (b, client, client_len, &rq, FR_UNAVAILABLE, AUDIT_REFUSED, AUDIT_REFUSED_HINT);
        goto out;
    }
    if ((int64_t) pending_count (b->pending) >= b->cfg.max_pending) {
        snprintf (err, sizeof err, "broker queue is full (%lld requests)", (long long) b->cfg.max_pending);
        broker_reply_error (b, client, client_len, &rq, FR_OVERLOADED, err);
        goto out;
    }
    if ((int64_t) (pending_bytes (b->pending) + frames_size (&f, 3)) > b->cfg.max_pending_bytes) {
        snprintf (err, sizeof err, "broker queue is full (%lld bytes of requests)", (long long) b->cfg.max_pending_bytes);
        broker_reply_error (b, client, client_len, &rq, FR_OVERLOADED, err);
        goto out;
    }
    /* the connection it came on, for its answer (broker_client_there): a message read just after
     * a connection closed on its descriptor may be the closed one's, whose routing id another
     * peer may hold by the time the answer comes. Rare (a descriptor reused within one batch of
     * reads); refused here, before a worker carries it out */
    if (src >= 0 && (conn = guard_sender (b->front_guard, src)) == 0) {
        broker_reply_error_hint (b, client, client_len, &rq, FR_UNAVAILABLE, "the broker cannot tell whether the "
                                 "connection this request came on is still open (it closed, or another took its "
                                 "descriptor just before)", "send it again: it was not carried out");
        goto out;
    }
    /* one client's share of each bound, so that it cannot leave every other client "overloaded"
     * by sending without waiting for its answers; taken here, given back where the request is
     * answered (nothing in between refuses it). The client is its key's name under CURVE, however
     * many connections it opens (connections cost it nothing); over plaintext, the connection. */
    int64_t most = b->cfg.max_pending * b->cfg.pending_share / 100;
    int64_t most_bytes = b->cfg.max_pending_bytes * b->cfg.pending_share / 100;
    uint64_t holder = b->curve.plaintext ? conn : share_holder_of_name (rq.client_name);
    size_t held, held_bytes;
    if (share_take (b->shares, holder, frames_size (&f, 3), (size_t) (most > 0 ? most : 1), (size_t) most_bytes,
                    &held, &held_bytes) != 0) {
        char who [128];
        if (b->curve.plaintext)
            snprintf (who, sizeof who, "this connection has");
        else
            snprintf (who, sizeof who, "client \"%.64s\" has, over all its connections,", rq.client_name);
        snprintf (err, sizeof err, "%s %zu requests (%zu bytes) pending, its share of the broker's queue "
                  "(FERRULE_PENDING_SHARE: %lld%% of %lld requests and of %lld bytes)", who, held, held_bytes,
                  (long long) b->cfg.pending_share, (long long) b->cfg.max_pending,
                  (long long) b->cfg.max_pending_bytes);
        broker_reply_error_hint (b, client, client_len, &rq, FR_OVERLOADED, err,
                                 "this caller's own share is full, not the broker: wait for answers to the "
                                 "requests in flight before sending more (the broker serves other clients meanwhile)");
        goto out;
    }
    /* rq's strings point into the body frame: copy them before it moves into the entry */
    char rid_copy [65], integ_copy [129];
    memcpy (rid_copy, rq.rid ? rq.rid : "", rq.rid_len);
    if (rq.integ)
        memcpy (integ_copy, rq.integ, rq.integ_len);
    uint32_t partition = (uint32_t) (ring_hash (route, route_len) % registry_partitions (b->registry));
    if (b->curve.plaintext)
        broker_own_body (&f.part [3]);
    pending_t *p = pending_add (b->pending, client, client_len, &f.part [3], clock_mono_ms () + deadline);
    memcpy (p->rid, rid_copy, rq.rid_len);
    p->rid [rq.rid_len] = '\0';
    p->rid_len = rq.rid_len;
    if (rq.integ) {
        memcpy (p->integration, integ_copy, rq.integ_len);
        p->integration [rq.integ_len] = '\0';
        p->has_integration = 1;
    }
    text_copy (p->client_name, sizeof p->client_name, rq.client_name);
    p->op = (int) rq.op;
    p->partition = partition;
    p->client_fd = src;
    p->client_conn = conn;
    p->share_holder = holder;
    broker_route (b, p);
out:
    frames_close (&f);
    return 1;
}

/* The outcome of a worker's reply: its code frame, else read from the body. */
static void
broker_outcome (frames_t *f, char *out, size_t outlen)
{
    codec_field_t fl [2] = { { .key = "ok" }, { .key = "error" } };
    codec_field_t code = { .key = "code" };
    char err [64];
    snprintf (out, outlen, "unknown");
    if (f->total == 7 && frames_size (f, 6) > 0 && frames_size (f, 6) < outlen) {
        const char *c = frames_data (f, 6);
        size_t n = frames_size (f, 6);
        for (size_t i = 0; i < n; i++)
            if (!((c [i] >= 'a' && c [i] <= 'z') || c [i] == '_'))
                return;
        memcpy (out, c, n);
        out [n] = '\0';
        return;
    }
    /* the reply is scanned, not decoded: "ok", then the "code" of the "error" map */
    if (codec_scan (frames_data (f, 5), frames_size (f, 5), fl, 2, err, sizeof err) == FR_OK) {
        int ok = 0;
        const char *s;
        size_t len;
        if (codec_field_bool (&fl [0], &ok) == 1 && ok)
            snprintf (out, outlen, "ok");
        else
        if (fl [1].kind == CODEC_MAP && codec_scan (fl [1].ptr, fl [1].len, &code, 1, err, sizeof err) == FR_OK
        &&  codec_field_str (&code, &s, &len) == 1)
            snprintf (out, outlen, "%.*s", (int) (len < outlen - 1 ? len : outlen - 1), s);
    }
}

/* Reads one worker message: a reply to forward, a HELLO, a goodbye. 1 when a message was read, 0
 * when none was waiting. */
static int
broker_handle_worker (broker_t *b)
{
    frames_t f;
    char err [256];
    char worker [REGISTRY_MAX_WORKER_ID + 1];
    if (frames_recv (b->backend, &f, ZMQ_DONTWAIT) != 0) {
        if (errno == EAGAIN)
            guard_drained (b->back_guard);     /* the socket has nothing left to read */
        return 0;
    }
    int src = frames_source_fd (&f);
    guard_account (b->back_guard, src, f.bytes, f.total);
    if (f.bytes > MESSAGE_BUDGET) {
        snprintf (err, sizeof err, "a message of %zu bytes in %d frames (the limit is %d bytes)", f.bytes, f.total, MESSAGE_BUDGET);
        if (guard_cut_sender (b->back_guard, src, err))
            metrics_inc (b->m_cut);
        goto out;
    }
    size_t wlen = frames_size (&f, 0);
    if (wlen == 0 || wlen > REGISTRY_MAX_WORKER_ID || !ident_valid (frames_data (&f, 0), wlen)
    ||  !frames_is (&f, 1, CODEC_WORKER_PROTOCOL) || f.count < 3) {
        snprintf (err, sizeof err, "ignoring a malformed message on the worker socket (%d frames)", f.total);
        broker_worker_ignored (b, err);
        goto out;
    }
    memcpy (worker, frames_data (&f, 0), wlen);
    worker [wlen] = '\0';
    /* a worker's key is bound to one worker id: anything else is an impostor, or a key removed */
    const char *name = broker_sender (b, &f, KEYS_WORKERS);
    if (!b->curve.plaintext && (!name || strcmp (name, worker) != 0)) {
        snprintf (err, sizeof err, "it used worker id \"%s\" with %s", worker,
                  name ? "the key of another worker" : "a key no longer on the workers list");
        if (guard_cut_sender (b->back_guard, src, err))
            metrics_inc (b->m_cut);
        if (registry_known (b->registry, worker) && !name)
            broker_worker_lost (b, worker, "its key was removed from the workers file");
        goto out;
    }

    if (frames_is (&f, 2, "REP") && (f.total == 6 || f.total == 7) && frames_size (&f, 4) == 8) {
        uint64_t seq = frames_get_u64 (frames_data (&f, 4));
        pending_t *p = pending_find (b->pending, seq);
        if (!p) {
            metrics_inc (b->m_foreign_replies);
            log_debug (NULL, NULL, "late reply from worker \"%s\" dropped: request already answered", worker);
            goto out;
        }
        if (strcmp (p->worker, worker) != 0) {
            /* only the worker the request went to may answer it */
            metrics_inc (b->m_foreign_replies);
            char why [300];
            snprintf (why, sizeof why, "worker \"%s\" answered a request sent to %s%s%s", worker,
                      p->worker [0] ? "\"" : "", p->worker [0] ? p->worker : "no worker", p->worker [0] ? "\"" : "");
            broker_refusal (b, "ignored a reply", why);
            goto out;
        }
        if (b->audit_refuse && audit_room (b->audit) == 0) {
            /* no place for its record (more was owed than the queue holds): a token must not
             * leave unrecorded. The worker has carried the request out: "unavailable" would say
             * it had not, and an administering request sent again would run twice */
            broker_fail_pending_hint (b, p, FR_TIMEOUT, "a worker answered, but this broker cannot record the answer in "
                                      "its audit log (FERRULE_AUDIT_FAILURE=refuse) and keeps it back: the request may "
                                      "have been carried out", timeout_hint (p->op));
            registry_touch (b->registry, worker, clock_mono_ms ());
            goto out;
        }
        /* the outcome is read before the body is handed on (the send takes it), and recorded after
         * it: the audit says what the client got (in refuse mode the room was seen above, and only
         * this thread queues records) */
        char outcome [32];
        if (b->audit)
            broker_outcome (&f, outcome, sizeof outcome);
        int sent = broker_forward_client (b, p, &f.part [5]) == 0;
        req_t rq = { p->client_name, (op_t) p->op, p->has_integration ? p->integration : NULL, strlen (p->integration),
                     p->rid_len ? p->rid : NULL, p->rid_len, 1, p->client_fd, p->client_conn };
        (void) broker_audit (b, &rq, sent ? outcome : "undelivered");     /* lost only in serve mode, counted */
        share_give (b->shares, p->share_holder, p->body_len);
        pending_remove (b->pending, p);
        /* one the client did not get (gone, or its queue full: broker_undelivered) was not forwarded */
        if (sent)
            metrics_inc (b->m_replied);
        /* a reply proves the worker alive as well as a heartbeat does; whether it drains is for
         * its HELLO to say (a draining worker answers what it holds, and must not win back its
         * partitions by doing so) */
        registry_touch (b->registry, worker, clock_mono_ms ());
    }
    else
    if (frames_is (&f, 2, "HELLO") && f.total == 4) {
        int draining = 0;
        int64_t pid = -1, session = 0;
        codec_field_t fd [3] = { { .key = "draining" }, { .key = "pid" }, { .key = "session" } };
        if (codec_scan (frames_data (&f, 3), frames_size (&f, 3), fd, 3, err, sizeof err) != FR_OK) {
            char why [REGISTRY_MAX_WORKER_ID + 300];
            snprintf (why, sizeof why, "ignoring a malformed HELLO from worker \"%s\": %s", worker, err);
            broker_worker_ignored (b, why);
            goto out;
        }
        if (codec_field_bool (&fd [0], &draining) < 0)
            draining = 0;
        if (codec_field_int (&fd [1], &pid) != 1 || pid < 0)
            pid = -1;
        if (codec_field_int (&fd [2], &session) != 1)
            session = 0;
        /* a new process under a known id: the old one's connection went and this one's came
         * between two PINGs, so nothing else said it was gone; what it was sent would wait for
         * its deadline */
        if (registry_restarted (b->registry, worker, pid, session))
            broker_worker_lost (b, worker, "a new process said HELLO under its worker id (the old one restarted)");
        if (registry_seen (b->registry, worker, draining, pid, session, clock_mono_ms ())) {
            b->redispatch = 1;
            b->next_ping_ms = 0;         /* tell every worker the new membership now */
        }
        if (!b->curve.plaintext)
            registry_set_key (b->registry, worker, broker_sender_key (&f));
        /* the same process on another connection: the old one broke, and ZeroMQ connected again
         * between two PINGs (a PING or request finding no connection would have said so) */
        uint64_t conn = guard_connection (b->back_guard, src);
        uint64_t before = registry_connection (b->registry, worker, conn);
        if (before && conn && before != conn)
            broker_worker_reconnected (b, worker);
    }
    else
    if (frames_is (&f, 2, "BYE")) {
        int busy = 0;
        for (pending_t *p = pending_first (b->pending); p; p = p->next)
            busy += strcmp (p->worker, worker) == 0;
        if (busy)
            log_warning (NULL, NULL, "worker \"%s\" left with %d requests unanswered; re-dispatching", worker, busy);
        broker_worker_lost (b, worker, "it said goodbye");
    }
    else {
        snprintf (err, sizeof err, "ignoring an unknown command from worker \"%s\" (%d frames)", worker, f.total);
        broker_worker_ignored (b, err);
    }
out:
    frames_close (&f);
    return 1;
}

/* Housekeeping: heartbeats out, silent workers out, expired requests answered. */
static void
broker_tick (broker_t *b, int64_t now)
{
    char expired [16][REGISTRY_MAX_WORKER_ID + 1];
    size_t n;
    /* ticks come every few milliseconds: a longer gap is the broker itself stopped or starved, and
     * the workers' HELLOs of that time may still wait in ZeroMQ's I/O thread, read after this
     * tick. The part of the gap past a quarter of the timeout is not counted as their silence
     * (guard_check discounts such a stall too); the quarter is, so that a loop that is merely slow
     * still notices a worker gone. Never less than two of the loop's longest waits (100 ms): with
     * a short heartbeat, an idle loop's own gaps would otherwise be discounted too */
    int64_t allowed = b->cfg.heartbeat_ms * 3 / 4 > 200 ? b->cfg.heartbeat_ms * 3 / 4 : 200;
    if (b->last_tick_ms && now - b->last_tick_ms > allowed)
        registry_discount (b->registry, now - b->last_tick_ms - allowed, now);
    b->last_tick_ms = now;
    while ((n = registry_expired (b->registry, now, expired, 16)) > 0)
        for (size_t i = 0; i < n; i++)
            broker_worker_lost (b, expired [i], "missed its heartbeats");

    if (now >= b->next_ping_ms) {
        b->next_ping_ms = now + b->cfg.heartbeat_ms;
        codec_builder_t *o = b->out;
        codec_builder_reset (o);
        codec_map (o, 2);
        codec_str (o, "workers");
        codec_array (o, (uint32_t) registry_live_count (b->registry));
        for (size_t i = 0; i < registry_count (b->registry); i++) {
            int draining;
            const char *id = registry_worker_at (b->registry, i, &draining);
            if (!draining)
                codec_str (o, id);
        }
        codec_kv_int (o, "partitions", registry_partitions (b->registry));
        size_t len;
        const char *body = codec_builder_data (o, &len);
        for (size_t i = 0; i < registry_count (b->registry); i++) {
            const char *id = registry_worker_at (b->registry, i, NULL);
            const void *parts [] = { id, CODEC_WORKER_PROTOCOL, "PING", body };
            size_t sizes [] = { strlen (id), 4, 4, len };
            if (frames_send (b->backend, parts, sizes, 4, ZMQ_DONTWAIT) != 0 && errno == EHOSTUNREACH) {
                char lost [REGISTRY_MAX_WORKER_ID + 1];
                snprintf (lost, sizeof lost, "%s", id);
                broker_worker_lost (b, lost, "not connected");   /* and PINGs again next turn */
                i--;
            }
        }
    }

    pending_t *p;
    while ((p = pending_earliest (b->pending)) && p->deadline_ms <= now) {
        char message [200];
        if (p->worker [0]) {
            snprintf (message, sizeof message, "worker \"%s\" did not answer within the deadline", p->worker);
            broker_fail_pending_hint (b, p, FR_TIMEOUT, message, repeatable (p->op) ? NULL : TIMEOUT_ADMIN_HINT);
        }
        else
        if (p->attempts > 0) {
            /* a worker had it and was lost since: it may have carried it out */
            snprintf (message, sizeof message, "no worker owns partition %u now, and the worker this request was sent "
                      "to was lost: it may have been carried out", p->partition);
            broker_fail_pending_hint (b, p, FR_TIMEOUT, message, repeatable (p->op) ? NULL : TIMEOUT_ADMIN_HINT);
        }
        else {
            snprintf (message, sizeof message, "no worker owns partition %u", p->partition);
            broker_fail_pending (b, p, FR_UNAVAILABLE, message);     /* no worker had it: safe to send again */
        }
    }
    broker_dispatch_waiting (b);

    /* metrics and readiness are published ten times a second, not once per loop turn */
    if (now < b->next_publish_ms)
        return;
    b->next_publish_ms = now + 100;
    broker_log_held (b, now);
    uint32_t owned = registry_partitions_owned (b->registry);
    metrics_set (b->m_pending, (int64_t) pending_count (b->pending));
    metrics_set (b->m_pending_bytes, (int64_t) pending_bytes (b->pending));
    metrics_set (b->m_audit_dropped, (int64_t) audit_dropped (b->audit));
    metrics_set (b->m_audit_unwritten, (int64_t) audit_failed (b->audit));
    audit_watch (b->audit);
    metrics_set (b->m_workers, (int64_t) registry_live_count (b->registry));
    metrics_set (b->m_partitions_owned, owned);
    if (b->health) {
        /* ready: every partition has a live owner, and the broker is not shutting down */
        char why [128] = "";
        if (b->draining)
            snprintf (why, sizeof why, "draining");
        else
        if (owned < registry_partitions (b->registry))
            snprintf (why, sizeof why, "waiting for workers: %u of %u partitions owned", owned, registry_partitions (b->registry));
        else
        if (b->audit_refuse && !audit_writing (b->audit))
            snprintf (why, sizeof why, "the audit log cannot be written, and requests are refused until it can");
        health_set_ready (b->health, why [0] == '\0', why);
    }
}

/* Measures every connection against its byte budget. */
static void
broker_check_connections (broker_t *b, int64_t now)
{
    if (now < b->next_check_ms)
        return;
    b->next_check_ms = now + CHECK_MS;
    /* what a full batch left on the sockets polled by descriptor, which signal only new arrivals */
    guard_events (b->front_guard);
    guard_events (b->back_guard);
    broker_drain_zap (b);
    int ev = 0;
    size_t evlen = sizeof ev;
    zmq_getsockopt (b->frontend, ZMQ_EVENTS, &ev, &evlen);
    int cut = guard_check (b->front_guard, !(ev & ZMQ_POLLIN));
    ev = 0;
    zmq_getsockopt (b->backend, ZMQ_EVENTS, &ev, &evlen);
    cut += guard_check (b->back_guard, !(ev & ZMQ_POLLIN));
    for (int i = 0; i < cut; i++)
        metrics_inc (b->m_cut);
    uint64_t silent = guard_silent_count (b->back_guard);
    metrics_add (b->m_silent, silent - b->silent_counted);
    b->silent_counted = silent;
    uint64_t unread_cut = guard_unsent_cut_count (b->front_guard);
    metrics_add (b->m_unread_cut, unread_cut - b->unread_cut_counted);
    b->unread_cut_counted = unread_cut;
    metrics_set (b->m_unread, (int64_t) guard_unsent_bytes (b->front_guard));
    uint64_t unfinished_cut = guard_unfinished_cut_count (b->front_guard);
    metrics_add (b->m_unfinished_cut, unfinished_cut - b->unfinished_cut_counted);
    b->unfinished_cut_counted = unfinished_cut;
    metrics_set (b->m_unfinished, (int64_t) guard_unfinished_bytes (b->front_guard));
}

/* After a reload: the workers whose key is no longer on the workers list under their id leave
 * the partition map now, and what was sent to them goes to the others; the next message of such a
 * worker has its connection cut (broker_handle_worker). Until this walk a removed key kept its
 * partitions, and was sent requests, until that worker's next message. */
static void
broker_drop_removed_workers (broker_t *b)
{
    char (*gone) [REGISTRY_MAX_WORKER_ID + 1] = NULL;
    size_t n = 0, count = registry_count (b->registry);
    if (b->curve.plaintext || count == 0)
        return;
    gone = mem_alloc (count * sizeof *gone);
    for (size_t i = 0; i < count; i++) {
        const char *id = registry_worker_at (b->registry, i, NULL);
        const char *key = registry_key_at (b->registry, i);
        const char *name = key [0] ? keys_name (b->keys, KEYS_WORKERS, key) : NULL;
        if (key [0] && (!name || strcmp (name, id) != 0))
            snprintf (gone [n++], sizeof gone [0], "%s", id);
    }
    /* removed after the walk: each removal re-dispatches, which may remove others */
    for (size_t i = 0; i < n; i++)
        broker_worker_lost (b, gone [i], "its key was removed from the workers file");
    mem_free (gone);
}

static void
broker_reload (broker_t *b)
{
    char err [512];
    log_info (NULL, NULL, "SIGHUP: reading the allow-lists and the policy again");
    if (broker_load_access (b, err, sizeof err) != 0)
        log_error (NULL, NULL, "%s; keeping the lists and policy read before", err);
    else {
        broker_drop_removed_workers (b);
        log_info (NULL, NULL, "SIGHUP: the allow-lists and the policy in effect are the ones just read");
    }
    audit_reopen (b->audit);
}

/* At a stop, once nothing is pending: what clients sent before it and the loop has not read yet is
 * answered too ("shutting down"), rather than dropped with the socket. Read until the frontend
 * has been quiet for STOP_QUIET_MS (what a client sent just before the stop may still be on its
 * way from ZeroMQ's I/O thread) and no client connection has bytes waiting in the kernel (on a
 * loaded machine that thread may not get to them within the quiet time), STOP_READ_MAX requests
 * or STOP_LINGER_MS at most. The ZAP
 * handler is served meanwhile: a client that connected just before the stop has its requests
 * queued behind a CURVE handshake, which waits on it; once one has been, the reads go on for all
 * of STOP_LINGER_MS (the handshake's last steps and the requests behind it take more than the
 * quiet time on a loaded machine). */
static void
broker_answer_queued (broker_t *b)
{
    int64_t until = clock_mono_ms () + STOP_LINGER_MS;
    int n = 0, handshakes = 0;
    for (;;) {
        handshakes += broker_drain_zap (b);
        while (n < STOP_READ_MAX && broker_handle_client (b))
            n++;
        int64_t left = until - clock_mono_ms ();
        if (n >= STOP_READ_MAX || left <= 0)
            break;
        zmq_pollitem_t items [] = {
            { b->frontend, 0, ZMQ_POLLIN, 0 },
            { NULL, b->zap_fd, ZMQ_POLLIN, 0 },
        };
        if (zmq_poll (items, b->zap ? 2 : 1, (long) (left < STOP_QUIET_MS ? left : STOP_QUIET_MS)) <= 0
        &&  !handshakes && !guard_kernel_unread (b->front_guard))
            break;
    }
    if (n)
        log_info (NULL, NULL, "answered %d requests that came as it stopped", n);
}

int
broker_run (broker_t *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload)
{
    log_info (NULL, NULL, "broker serving clients at \"%s\" and workers at \"%s\" with %lld partitions",
              b->cfg.frontend_bind, b->cfg.backend_bind, (long long) b->cfg.partitions);
    b->stop = stop;
    while (*stop < 2) {
        if (reload && *reload) {
            *reload = 0;
            broker_reload (b);
        }
        if (*stop == 1 && !b->draining) {
            b->draining = 1;
            log_info (NULL, NULL, "draining: %zu requests pending", pending_count (b->pending));
        }
        if (b->draining && pending_count (b->pending) == 0) {
            broker_answer_queued (b);
            break;
        }
        /* the monitors and the ZAP handler by their descriptors: zmq_poll asks every socket
         * among its items for ZMQ_EVENTS, two system calls each, on every pass, and these are
         * rarely busy. Every visit reads them until a receive finds nothing, after which a
         * socket's descriptor signals what arrives. */
        zmq_pollitem_t items [] = {
            { b->frontend, 0, ZMQ_POLLIN, 0 },
            { b->backend, 0, ZMQ_POLLIN, 0 },
            { NULL, guard_fd (b->front_guard), ZMQ_POLLIN, 0 },
            { NULL, guard_fd (b->back_guard), ZMQ_POLLIN, 0 },
            { NULL, b->zap_fd, ZMQ_POLLIN, 0 },
        };
        int nitems = b->zap ? 5 : 4;
        int64_t now = clock_mono_ms ();
        int64_t timeout = b->next_ping_ms - now;
        pending_t *earliest = pending_earliest (b->pending);
        if (earliest && earliest->deadline_ms - now < timeout)
            timeout = earliest->deadline_ms - now;
        if (timeout > 100)
            timeout = 100;
        /* while anyone is connected, connections are measured every CHECK_MS */
        if (guard_connections (b->front_guard) + guard_connections (b->back_guard) > 0 && timeout > CHECK_MS)
            timeout = CHECK_MS;
        if (timeout < 0)
            timeout = 0;
        if (b->health)
            health_beat (b->health);
        if (zmq_poll (items, nitems, (long) timeout) < 0) {
            if (errno == EINTR)
                continue;
            log_error (NULL, NULL, "poll failed: %s", zmq_strerror (errno));
            return -1;
        }
        if (items [2].revents & ZMQ_POLLIN)
            guard_events (b->front_guard);
        if (items [3].revents & ZMQ_POLLIN)
            guard_events (b->back_guard);
        if (nitems == 5 && (items [4].revents & ZMQ_POLLIN))
            broker_drain_zap (b);
        /* each side is read until it has nothing (a receive that finds nothing costs ZeroMQ one
         * look at its command pipe, as asking ZMQ_EVENTS after every message would have), in
         * bounded batches that keep one busy side from starving the other */
        for (int i = 0; i < 256 && (items [1].revents & ZMQ_POLLIN); i++)
            if (!broker_handle_worker (b))
                break;
        for (int i = 0; i < 256 && (items [0].revents & ZMQ_POLLIN); i++)
            if (!broker_handle_client (b))
                break;
        int64_t after = clock_mono_ms ();
        broker_check_connections (b, after);
        broker_tick (b, after);
    }
    /* a second SIGTERM: what no worker answered yet is answered now, not left to its clients'
     * deadlines; "timeout" when a worker was sent it, since that one may carry it out all the same,
     * "unavailable" when none ever was (it waited for its partition's owner): nothing can carry it
     * out, and another broker may serve it, as broker_tick says at its deadline. The answers get
     * the socket's linger to leave (broker_destroy). */
    size_t unanswered = pending_count (b->pending), unsent = 0;
    for (pending_t *p; (p = pending_first (b->pending)) != NULL; ) {
        if (p->attempts == 0) {
            unsent++;
            broker_fail_pending_hint (b, p, FR_UNAVAILABLE, "the broker was stopped before any worker was sent the "
                                      "request", "send it to another broker: it was not carried out");
        }
        else
            broker_fail_pending_hint (b, p, FR_TIMEOUT, "the broker was stopped before a worker answered: the request "
                                      "may have been carried out", timeout_hint (p->op));
    }
    broker_log_held (b, clock_mono_ms () + LOGRATE_INTERVAL_MS);    /* what the last second held back */
    if (unanswered)
        log_warning (NULL, NULL, "broker stopped at once (a second SIGTERM): %zu requests pending were answered "
                     "\"timeout\", and %zu that no worker had been sent \"unavailable\"", unanswered - unsent, unsent);
    else
        log_info (NULL, NULL, "broker stopped with nothing pending");
    return 0;
}
