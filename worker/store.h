/* store.h - a worker's session with PostgreSQL (store.c): the connection, made without waiting;
 * the notifications it hears; the one batch in flight, read as the server answers; an
 * integration's row as the statements of store_chain.h, store_connect.h, store_events.h and
 * store_gateway.h read it */
#ifndef FERRULE_STORE_H
#define FERRULE_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "result.h"

typedef struct store store_t;

#define STORE_LEASE_LEN 32           /* a lease token: 128 random bits as hex */

/* How long the worker's one loop may wait on the database. Every bound is kept well under the
 * brokers' heartbeat timeout (three intervals), so a slow or locked database becomes an error
 * the refresh protocol retries, never a stalled loop that brokers declare lost. */
typedef struct {
    int64_t statement_timeout_ms;    /* the server cancels a statement after this */
    int64_t lock_timeout_ms;         /* ...and a wait for a row lock after this */
    int64_t connect_timeout_ms;      /* a connection attempt gives up after this */
} store_limits_t;

/* One integrations row, tokens still sealed. */
typedef struct {
    char    *id;
    char    *provider;
    char    *status;                 /* active, needs_reconnect, disconnected */
    int32_t  key_id;
    unsigned char *access_ct;        /* NULL when none */
    size_t   access_ct_len;
    int64_t  access_expires_at;      /* epoch seconds, 0 when unknown */
    unsigned char *refresh_ct;
    size_t   refresh_ct_len;
    char    *refresh_fingerprint;
    int64_t  generation;
    char    *scopes;                 /* space-separated */
    char    *last_error_code;
    char    *last_error_message;
    int64_t  last_error_at;
    int64_t  last_refresh_at;
    int64_t  created_at;
    int64_t  updated_at;
    char    *lease_owner;
    char     lease_token [STORE_LEASE_LEN + 1];  /* empty when none (or held by an older worker) */
    int64_t  lease_ms_left;          /* > 0 while someone holds a live lease */
    int      refresh_token_missing;  /* connected without a refresh token (no_refresh_token) */
    int64_t  access_lifetime_s;      /* the access token's lifetime when issued, 0 unknown */
    int      interrupted;            /* a refresh of this generation was interrupted (see claim) */
    char    *api_base_url;           /* the provider's API base URL for this grant, or NULL */
} store_row_t;

store_t *store_new (const char *conninfo, const char *worker_id, const store_limits_t *limits);
void store_destroy (store_t **s_p);
/* Makes s a second connection of the same worker that carries batches (store_turn_start) only:
 * it does not LISTEN, and queues no notices. Before its first connection. */
void store_batches_only (store_t *s);
/* Connects when not connected: sets UTC and the limits, listens for changes, checks the schema
 * version. Gives up after limits->connect_timeout_ms. After a failure (of a connection or of a
 * statement that broke it) other calls fail at once until the next store_connect, which the loop
 * makes once a second: a database that is down costs the loop nothing.
 * FR_OK, FR_DATABASE_UNAVAILABLE, or FR_CONFIGURATION (schema too old). */
fr_status_t store_connect (store_t *s, char *err, size_t errlen) FR_MUSTCHECK;
int store_connected (const store_t *s);
/* Without a connection: makes one in the background, a step per call (the loop calls it every turn;
 * a new attempt at most once a second), with the session's settings and the schema check of
 * store_connect. 1 on the call that brought the connection up. Statements meanwhile fail at once
 * with FR_DATABASE_UNAVAILABLE. */
int store_reconnect (store_t *s);
/* The next store_reconnect makes its attempt at once, not up to a second later: another connection
 * to the same server has just come back. No effect while connected or connecting. */
void store_retry_now (store_t *s);
/* 1 while a connection is being made in the background. */
int store_connecting (const store_t *s);
/* The socket the loop polls, -1 when there is none: the connection's, or while a connection is
 * being made in the background, the attempt's, so that each step of its handshake is taken when
 * the server answers and not at the loop's next timeout. */
int store_socket (const store_t *s);
#define STORE_POLL_IN  1
#define STORE_POLL_OUT 2
/* What to poll store_socket for: STORE_POLL_IN, with STORE_POLL_OUT while a batch's statements
 * are not all sent (and sends what it can); while connecting, what the handshake waits for. */
int store_poll_events (const store_t *s);
#define STORE_NOTIFY_ALL "*"          /* integration of a notice that anything may have changed */
#define STORE_NOTIFY_EVENTS "+"       /* integration of a notice that new events wait for delivery */
typedef void (store_notify_fn) (void *arg, const char *worker, const char *integration);
/* Reads what arrived on the connection's socket (call when it is readable). */
void store_read_input (store_t *s);
/* Hands every notification received so far to cb: the worker that made each change and the
 * integration id (both NULL when the connection broke: the cache is cleared on reconnect;
 * STORE_NOTIFY_ALL when more notifications came than the queue holds: anything may have changed;
 * STORE_NOTIFY_EVENTS, once for any number heard, when events were recorded: wake the delivery).
 * Notifications that arrive while a statement runs are read with its result and kept until this
 * is called, so the loop calls it after every piece of work, not only when the socket is readable. */
void store_dispatch_notifies (store_t *s, store_notify_fn *cb, void *arg);

/* FR_NOT_FOUND, with the message every way of reading an integration gives for an unknown id. */
fr_status_t store_not_found (const char *id, char *err, size_t errlen);

/* The batch in flight (claims or commits): 1 while one is sent or its answer not yet delivered
 * (one at a time per connection). */
int store_batch_busy (const store_t *s);
/* Reads what the database has answered to the batch in flight and, once it is all in, delivers
 * it (the claims' or commits' done). The loop calls it every turn. */
void store_batch_pump (store_t *s);
/* Waits for the batch in flight to end, then delivers it (shutdown). */
void store_batch_finish (store_t *s);
/* When the batch in flight gives up (monotonic ms), -1 when none. */
int64_t store_batch_deadline (const store_t *s);

/* The end of a batch that returns nothing: FR_OK, or its failure (nothing of it committed). */
typedef void (store_done_fn) (void *arg, fr_status_t st, const char *err);

const char *store_worker_id (const store_t *s);
/* The SQLSTATE of the last failed statement of s's last batch ("" when none failed, or the batch
 * failed without one: the connection lost, no answer): for a caller whose retry depends on what
 * kind of failure it was. */
const char *store_last_state (const store_t *s);

void store_row_clear (store_row_t *row);
/* A deep copy of src into dst (dst's old contents are not freed); clear it with store_row_clear. */
void store_row_copy (store_row_t *dst, const store_row_t *src);
#endif
