/* breaker.h - a circuit breaker per provider: when a provider fails broadly, stop calling it for a
 * while instead of sending every integration's refresh into the failure */
#ifndef FERRULE_BREAKER_H
#define FERRULE_BREAKER_H
#include <stdint.h>

typedef struct breaker breaker_t;

/* Failures counted over window_ms open the breaker when there are at least min_failures of them
 * and they are at least half the calls; it stays open open_ms, then lets one probe through. */
breaker_t *breaker_new (int64_t min_failures, int64_t window_ms, int64_t open_ms);
void breaker_destroy (breaker_t **b_p);
/* 1 when a call to provider may go out now. When 0, *retry_after_s says when to try again.
 * While half-open, only one probe is let through until its outcome is recorded. */
int breaker_allow (breaker_t *b, const char *provider, int64_t now_ms, int64_t *retry_after_s);
/* 1 while calls are refused (open, or half-open with the probe out); *retry_after_s is set. Changes nothing. */
int breaker_blocked (const breaker_t *b, const char *provider, int64_t now_ms, int64_t *retry_after_s);
/* failed: the provider failed transiently (5xx, 429, timeout, garbage). Anything else (a token,
 * invalid_grant, invalid_client) proves the provider is up. */
void breaker_record (breaker_t *b, const char *provider, int failed, int64_t now_ms);
/* 1 while the provider's breaker is open (for metrics and status). */
int breaker_is_open (const breaker_t *b, const char *provider, int64_t now_ms);
#endif
