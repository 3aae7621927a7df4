/* pending.h - requests the broker has accepted and not yet answered, by sequence and by deadline */
#ifndef FERRULE_PENDING_H
#define FERRULE_PENDING_H
#include <stddef.h>
#include <stdint.h>

typedef struct pending pending_t;
struct pending {
    uint64_t seq;
    unsigned char client [256];     /* the client's ROUTER routing id */
    size_t   client_len;
    char    *body;                  /* kept so the request can be re-dispatched */
    size_t   body_len;
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
    pending_t *prev, *next;         /* deadline order */
};

typedef struct pending_table pending_table_t;

pending_table_t *pending_table_new (void);
void pending_table_destroy (pending_table_t **t_p);
/* Takes a copy of client and body; seq is assigned: 64 random bits (getrandom), unique among
 * the pending requests, so a peer cannot guess another request's number. */
pending_t *pending_add (pending_table_t *t, const void *client, size_t client_len,
                        const void *body, size_t body_len, int64_t deadline_ms);
pending_t *pending_find (const pending_table_t *t, uint64_t seq);
void pending_remove (pending_table_t *t, pending_t *p);
/* Earliest deadline first; walk with p->next. */
pending_t *pending_first (const pending_table_t *t);
size_t pending_count (const pending_table_t *t);
/* Bytes of request bodies held. */
size_t pending_bytes (const pending_table_t *t);
#endif
