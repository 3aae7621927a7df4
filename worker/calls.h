/* calls.h - the connect flow's provider calls in flight (a code exchange, a revocation): the
 * request they answer, kept until the provider does */
#ifndef FERRULE_CALLS_H
#define FERRULE_CALLS_H
#include "context.h"
#include "ident.h"
#include "store_connect.h"

typedef enum { CALLS_EXCHANGE, CALLS_REVOKE } calls_kind_t;

typedef struct call {
    struct call *next;
    worker_t *w;
    calls_kind_t kind;
    job_t job;
    char id [IDENT_MAX + 1];
    const catalog_provider_t *provider;     /* the catalog lives as long as the worker */
    char state_hash [65];
    char *redirect_uri;
    char *requested_scopes;                 /* space-separated */
    const char *token_kind;                 /* revocation: "refresh_token" or "access_token" */
    struct oauth_request *request;          /* revocation: kept to send again (holds the token) */
    char *sent;                             /* the code or token sent: a description quoting it is withheld */
    char *verifier;                         /* exchange: the PKCE verifier sent, withheld the same way */
    int attempts;                           /* revocation: calls made so far */
    int64_t due_ms;                         /* revocation: monotonic time of the next attempt; 0 none */
    int orphan;                             /* revocation: of the refresh token a refresh or a connect obtained
                                             * while the integration was being disconnected; nobody waits for it */
    const char *orphan_by;                  /* orphan: "a refresh" or "a connect" (a literal), for its texts */
    int64_t journal_seq;                    /* orphan: the token's journal record, settled once the revocation
                                             * has an outcome (kept for the next start when the worker stops
                                             * first); 0 none */
    store_row_t row;                        /* revocation: the integration as the disconnect left it, for */
    store_extra_t x;                        /* the answer when its chain row cannot be written at once
                                             * (row.id NULL: none, a background revocation) */
} call_t;

call_t *calls_new (worker_t *w, calls_kind_t kind, const job_t *job, const char *id, const catalog_provider_t *p);
void calls_free (worker_t *w, call_t *c);
size_t calls_count (const worker_t *w);
/* Of those, the code exchanges: at the provider, or their tokens not stored yet. The code is
 * spent at the provider, so a drain that left one would lose the user's connection. */
size_t calls_exchanging (const worker_t *w);
/* True when an orphan's revocation in flight holds the journal record seq (call_t.journal_seq). */
int calls_journal_held (const worker_t *w, int64_t seq);
/* Frees every call (shutdown only). */
void calls_abandon_all (worker_t *w);
#endif
