/* breaker.h - a circuit breaker per peer (a provider, a webhook endpoint): when a peer fails
 * broadly, stop calling it for a while instead of sending every integration's call into the
 * failure */
#ifndef FERRULE_BREAKER_H
#define FERRULE_BREAKER_H
#include <stdint.h>

typedef struct breaker breaker_t;

/* Failures counted over window_ms open the breaker when there are at least min_failures of them
 * and they are at least half the calls; it stays open open_ms, then lets one probe through. A
 * failed probe opens it again for twice as long as the last time, up to max_open_ms (open_ms:
 * always the same). kind names the peers in log lines ("provider", "webhook"). */
breaker_t *breaker_new (const char *kind, int64_t min_failures, int64_t window_ms, int64_t open_ms,
                        int64_t max_open_ms);
void breaker_destroy (breaker_t **b_p);
/* 1 when a call to provider may go out now, 2 when it may as the half-open probe (only one is let
 * through until its outcome is recorded, or breaker_unused says it never went out). When 0,
 * *retry_after_s says when to try again. */
int breaker_allow (breaker_t *b, const char *peer, int64_t now_ms, int64_t *retry_after_s);
/* 1 while calls are refused (open, or half-open with the probe out); *retry_after_s is set. Changes nothing. */
int breaker_blocked (const breaker_t *b, const char *peer, int64_t now_ms, int64_t *retry_after_s);
/* Makes the next call to peer its probe while it is held, before the hold ends (an operator's
 * test of it): its outcome closes the breaker or holds the peer longer. Nothing when closed. */
void breaker_probe (breaker_t *b, const char *peer);
/* A call breaker_allow let through never went out (it failed before it): when it was the
 * half-open probe, the next call is; the breaker's state is otherwise unchanged. */
void breaker_unused (breaker_t *b, const char *peer);
/* failed: the peer failed transiently (a provider's 5xx, 429, timeout, garbage; a webhook's
 * anything but 2xx). Anything else (a token, invalid_grant, invalid_client) proves it is up.
 * probe: the call was the half-open probe (breaker_allow said 2, or breaker_probe made it one);
 * while the breaker is open only the probe's outcome counts, never that of a call that started
 * before it opened and ended while the probe was out. */
void breaker_record (breaker_t *b, const char *peer, int failed, int probe, int64_t now_ms);
/* 1 while the peer's breaker is open or half-open (for metrics and status). */
int breaker_is_open (const breaker_t *b, const char *peer, int64_t now_ms);
#endif
