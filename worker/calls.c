/* calls.c - the connect flow's provider calls in flight */
#include "calls.h"
#include "mem.h"
#include "oauth.h"
#include <stdio.h>

call_t *
calls_new (worker_t *w, calls_kind_t kind, const job_t *job, const char *id, const catalog_provider_t *p)
{
    call_t *c = mem_alloc (sizeof *c);
    c->w = w;
    c->kind = kind;
    c->job = *job;
    c->job.next = NULL;
    snprintf (c->id, sizeof c->id, "%s", id);
    c->provider = p;
    c->next = w->calls;
    w->calls = c;
    return c;
}

void
calls_free (worker_t *w, call_t *c)
{
    call_t **pp = &w->calls;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    mem_free (c->redirect_uri);
    mem_free (c->requested_scopes);
    oauth_request_destroy (&c->request);       /* wipes the token it holds */
    mem_free_secret (&c->sent);
    mem_free_secret (&c->verifier);
    store_row_clear (&c->row);
    store_extra_clear (&c->x);
    mem_free (c);
}

size_t
calls_count (const worker_t *w)
{
    size_t n = 0;
    for (const call_t *c = w->calls; c; c = c->next)
        n++;
    return n;
}

size_t
calls_exchanging (const worker_t *w)
{
    size_t n = 0;
    for (const call_t *c = w->calls; c; c = c->next)
        if (c->kind == CALLS_EXCHANGE)
            n++;
    return n;
}

int
calls_journal_held (const worker_t *w, int64_t seq)
{
    for (const call_t *c = w->calls; c; c = c->next)
        if (c->journal_seq == seq)
            return 1;
    return 0;
}

void
calls_abandon_all (worker_t *w)
{
    while (w->calls)
        calls_free (w, w->calls);
}
