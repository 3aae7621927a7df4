/* pending.h - requests the broker has accepted and not yet answered, by sequence, in arrival order
 * and by deadline */
#ifndef FERRULE_PENDING_H
#define FERRULE_PENDING_H
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct pending pending_t;
struct pending {
    uint64_t seq;
    zmq_msg_t body;                 /* the request frame as received, kept so it can be re-dispatched */
    size_t   body_len;
    unsigned char client [256];     /* the client's ROUTER routing id */
    size_t   client_len;
    int      client_fd;             /* the connection it came on, and its number (guard_sent) */
    uint64_t client_conn;
    uint64_t share_holder;          /* whose share it is taken from (share.h) */
    char     rid [65];
    size_t   rid_len;
    char     integration [129];
    char     client_name [65];      /* the authenticated client, for the audit log */
    int      has_integration;
    int      op;                    /* op_t */
    uint32_t partition;
    char     worker [129];          /* "" while waiting for a partition owner */
    int      attempts;              /* dispatches so far */
    int64_t  deadline_ms;           /* monotonic */
    pending_t *hnext;               /* hash chain */
    pending_t *prev, *next;         /* arrival order */
    size_t   heap_at;               /* index in the table's deadline heap */
};

typedef struct pending_table pending_table_t;

#define PENDING_SPARE 4096      /* removed entries kept for reuse: about 1 MB at most */

pending_table_t *pending_table_new (void);
void pending_table_destroy (pending_table_t **t_p);
/* Takes a copy of client and moves the body frame into the entry (*body is left an empty message,
 * still to be closed by its owner); seq is assigned: 64 random bits (getrandom), unique among the
 * pending requests, so a peer cannot guess another request's number. The strings (rid,
 * integration, client_name, worker) start empty; op, partition and attempts at 0. Entries are
 * recycled: a field is what was last written since pending_add, nothing older. */
pending_t *pending_add (pending_table_t *t, const void *client, size_t client_len,
                        zmq_msg_t *body, int64_t deadline_ms);
pending_t *pending_find (const pending_table_t *t, uint64_t seq);
/* Releases the body frame and keeps the entry for reuse (up to PENDING_SPARE of them). */
void pending_remove (pending_table_t *t, pending_t *p);
/* Oldest first (arrival order); walk with p->next. */
pending_t *pending_first (const pending_table_t *t);
/* The entry with the earliest deadline (of equal ones, any), NULL when none is pending. */
pending_t *pending_earliest (const pending_table_t *t);
size_t pending_count (const pending_table_t *t);
/* Bytes of request bodies held. */
size_t pending_bytes (const pending_table_t *t);
/* Removed entries kept for reuse. */
size_t pending_spare (const pending_table_t *t);
#endif
