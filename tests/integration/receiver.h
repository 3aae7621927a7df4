/* receiver.h - a webhook receiver on 127.0.0.1 for the events tests: it checks every request's
 * Ferrule-Signature against the secret with its own HMAC (written from docs/operations.md, not
 * with the worker's code), records what arrived, and can refuse, delay or be down */
#ifndef FERRULE_TEST_RECEIVER_H
#define FERRULE_TEST_RECEIVER_H

#define RECEIVER_MAX_GOT 4096

typedef struct {
    char id [40];
    char type [32];
    char integration [130];         /* "" for test events */
    int  status;                    /* what the receiver answered */
} receiver_got_t;

/* Listens on port (0: any free one) and checks signatures with secret (kept). 0 or -1. */
int receiver_start (int port, const char *secret);
/* Stops listening (connections are refused); what arrived is kept. */
void receiver_stop (void);
/* The port it listens (or last listened) on. */
int receiver_port (void);
/* Answer 500 to the next fail_next requests; hold each request delay_ms first. */
void receiver_set (int fail_next, int delay_ms);
/* Lets every request held by the delay be answered now (a later one is held again). */
void receiver_release (void);
/* A copy of what arrived so far (caller frees *got), its count; *bad gets the requests whose
 * signature or event id header did not check out. */
int receiver_snapshot (receiver_got_t **got, int *bad);
/* Requests answered with status (0: any) for events of type (NULL: any) of integration (NULL:
 * any) so far. */
int receiver_count (int status, const char *type, const char *integration);
/* An endpoint that hangs: a port on 127.0.0.1 that takes connections into its backlog and never
 * answers them, every attempt waiting out its timeout. Its port, or -1; *fd gets the socket (the
 * caller closes it). */
int receiver_hung_listen (int *fd);
#endif
