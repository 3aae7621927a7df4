/* reply.h - replies to clients: a map of request id, ok and fields; errors with code, message,
 * hint and retry_after; tokens; an integration's stored fields. Every reply is counted. */
#ifndef FERRULE_REPLY_H
#define FERRULE_REPLY_H
#include "context.h"
#include "store_connect.h"

#define REPLY_MAX_WARNINGS 4

/* Something a successful operation wants the caller to know (revocation failed, scopes reduced). */
typedef struct {
    const char *code;
    const char *reason;          /* a word saying why, for a program to act on (not_revoked's:
                                  * docs/protocol.md); NULL when the code says it all */
    char message [600];
    char hint [300];
} reply_warning_t;

typedef struct {
    reply_warning_t item [REPLY_MAX_WARNINGS];
    int count;
} reply_warnings_t;

/* Starts a reply in w->out: a map of fields more entries after "rid" (when the request had one)
 * and "ok". */
codec_builder_t *reply_begin (worker_t *w, const job_t *job, int ok, uint32_t fields);
/* 1 when the body in w->out is within the protocol's limits (docs/protocol.md, Limits): its
 * frame, and the objects, nesting and strings a client's decoder takes; else 0, err saying why. */
int reply_fits (const worker_t *w, char *err, size_t errlen);
/* Sends the body in w->out as the reply to job; too_large instead when it is not within the
 * limits (reply_fits). */
void reply_send (worker_t *w, const job_t *job);
/* Sends an error reply to job. */
void reply_error (worker_t *w, const job_t *job, fr_status_t st, const char *message,
                  const char *hint, int64_t retry_after);
/* An error reply for a failed store call: retry_after 1 s when the database is unavailable. */
void reply_store_error (worker_t *w, const job_t *job, fr_status_t st, const char *message);
/* Packs into o the reply to a token request with id rid (may be ""), from the entry's pre-packed
 * reply (cache.h); -1 when the entry has none (no token). */
int reply_pack_token (codec_builder_t *o, const char *rid, const cache_entry_t *e, int refreshed);
/* Sends {"ok":true, expires_at, generation, refreshed, access_token} for an entry. */
void reply_token (worker_t *w, const job_t *job, const cache_entry_t *e, int refreshed);
/* The "integration" map of status, import, connect and disconnect replies; x may be NULL. */
void reply_pack_integration (codec_builder_t *o, const store_row_t *row, const store_extra_t *x);
/* {"rid","ok",["error"],"integration",["warnings"],["reconnected" when >= 0]}: a success when st
 * is FR_OK, else an error that still shows what was stored (no_refresh_token). */
void reply_with_integration (worker_t *w, const job_t *job, fr_status_t st, const char *message, const char *hint,
                             const store_row_t *row, const store_extra_t *x, const reply_warnings_t *ws,
                             int reconnected);
/* reply_with_integration whose error also says who must act: cause "provider_entry" (the operator
 * must change the provider entry; nothing the user does helps), NULL for none. */
void reply_with_integration_cause (worker_t *w, const job_t *job, fr_status_t st, const char *message,
                                   const char *hint, const char *cause, const store_row_t *row,
                                   const store_extra_t *x, const reply_warnings_t *ws, int reconnected);
/* Adds a warning (at most REPLY_MAX_WARNINGS; more are dropped); reason may be NULL. */
void reply_warn (reply_warnings_t *ws, const char *code, const char *reason, const char *hint, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));

/* Counts a request's outcome ("ok" or an error code) by operation. */
void reply_count (worker_t *w, const job_t *job, const char *outcome);
/* Counts a failed provider call by provider and class. */
void reply_count_provider_error (worker_t *w, const char *provider, const char *class_name);
#endif
