/* disconnect.h - op "disconnect": the stored tokens destroyed at once, then revoked at the
 * provider (RFC 7009) when it has an endpoint for it */
#ifndef FERRULE_DISCONNECT_H
#define FERRULE_DISCONNECT_H
#include "context.h"

void disconnect_run (worker_t *w, job_t *job, const char *id);
/* A refresh whose commit lost to a disconnect got a rotated refresh token, or a callback's code
 * exchange got one after the integration was disconnected (sealed: refresh_ct under key_id), that
 * nobody will hold: it is revoked at provider p (RFC 7009) in the background,
 * tried again like a disconnect's, and the outcome written as a chain row; no reply is sent.
 * Only for a row that is disconnected: at some providers (Google) a revocation ends the whole
 * grant. Nothing happens when p has no revocation endpoint or credentials (logged). rid: the
 * refresh's request id for the log, or NULL. journal_seq (> 0): the token's record in the local
 * journal, which stays outstanding until the revocation has an outcome, so that a worker that
 * crashes or stops first revokes the token when its next start replays the record; 0: none.
 * by: what obtained the token, "a refresh" or "a connect" (a literal), for the texts. */
void disconnect_revoke_orphan (worker_t *w, const char *id, const catalog_provider_t *p, int32_t key_id,
                               const unsigned char *refresh_ct, size_t refresh_ct_len, const char *rid,
                               int64_t journal_seq, const char *by);
/* Sends again the revocations whose wait after a transient failure has passed. */
void disconnect_tick (worker_t *w, int64_t now);
/* When the next of them is due (monotonic ms), or -1 when none waits. */
int64_t disconnect_next_due (const worker_t *w);
#endif
