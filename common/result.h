/* result.h - the one set of result codes: C status, wire error code, exit code, default hint */
#ifndef FERRULE_RESULT_H
#define FERRULE_RESULT_H

#define FR_MUSTCHECK __attribute__ ((warn_unused_result))

typedef enum {
    FR_OK = 0,
    /* caller's mistakes: exit 2 */
    FR_BAD_REQUEST,
    FR_MALFORMED_FRAME,
    FR_TOO_LARGE,
    FR_UNSUPPORTED_VERSION,
    FR_UNKNOWN_OPERATION,
    /* exit 3 */
    FR_NOT_FOUND,
    /* the user must act: exit 4 */
    FR_NEEDS_RECONNECT,
    FR_DISCONNECTED,
    FR_CODE_EXPIRED_OR_USED,
    FR_STATE_INVALID,
    FR_ACCESS_DENIED,
    FR_NO_REFRESH_TOKEN,
    FR_INSUFFICIENT_SCOPE,
    FR_BROWSER_MISMATCH,
    /* transient: exit 5 */
    FR_PROVIDER_UNAVAILABLE,
    FR_PROVIDER_BAD_RESPONSE,
    FR_TIMEOUT,
    FR_UNAVAILABLE,
    FR_OVERLOADED,
    FR_DATABASE_UNAVAILABLE,
    FR_RATE_LIMITED,
    /* operator configuration: exit 6 */
    FR_INVALID_CLIENT,
    FR_REDIRECT_URI_MISMATCH,
    FR_INVALID_SCOPE,
    FR_CONFIGURATION,
    /* this client may not do this: exit 7 */
    FR_FORBIDDEN,
    /* exit 1 */
    FR_INTERNAL,
    FR__COUNT
} fr_status_t;

/* Wire name, e.g. "needs_reconnect". */
const char *result_code (fr_status_t st);
/* Inverse of result_code; FR_INTERNAL for an unknown name. */
fr_status_t result_from_code (const char *code);
/* ferrulectl exit code for the status. */
int result_exit_code (fr_status_t st);
/* What the user or operator should do, when the caller has nothing more specific. */
const char *result_default_hint (fr_status_t st);
/* 1 when retrying the same request later may succeed. */
int result_is_transient (fr_status_t st);
#endif
