/* resolve.h - the dns+tcp://NAME:PORT broker names, looked up on a thread of their own:
 * getaddrinfo takes as long as the system's resolver does (seconds a try when a DNS server is
 * slow or gone), and the loop that serves tokens must never wait for it */
#ifndef FERRULE_RESOLVE_H
#define FERRULE_RESOLVE_H
#include <stddef.h>

/* What one name resolved to: "tcp://ADDRESS:PORT" for each address, or why it did not. */
typedef struct {
    int ok;
    char error [160];
    char **endpoints;
    size_t n;
} resolve_result_t;

typedef struct resolve resolve_t;

/* 1 when spec is "dns+tcp://NAME:PORT" with a NAME and a PORT (resolve_new looks up only those). */
int resolve_spec_valid (const char *spec);
/* The names: n specs "dns+tcp://NAME:PORT", copied. */
resolve_t *resolve_new (char *const *specs, size_t n);
/* Never waits for a lookup under way: its thread ends on its own and frees what it used. */
void resolve_destroy (resolve_t **r_p);

/* Every name looked up in the caller's thread (start-up, before anything is served): n results
 * in the order of the specs (resolve_results_free). */
resolve_result_t *resolve_now (const resolve_t *r);
/* Starts looking every name up on a thread, unless a round is under way. 1 started, 0 under
 * way already, -1 no thread could be started. */
int resolve_start (resolve_t *r);
/* The results of the round that ended, once (n of them, resolve_results_free), or NULL while it
 * runs or when none is waiting. */
resolve_result_t *resolve_take (resolve_t *r);
void resolve_results_free (resolve_result_t **results, size_t n);
#endif
