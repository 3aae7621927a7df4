/* result.c - result code table */
#include "result.h"
#include <string.h>

typedef struct {
    const char *code;
    int exit_code;
    const char *hint;
} result_info_t;

static const result_info_t result_table [FR__COUNT] = {
    [FR_OK]                   = { "ok", 0, "" },
    [FR_BAD_REQUEST]          = { "bad_request", 2, "check the request's fields against docs/protocol.md" },
    [FR_MALFORMED_FRAME]      = { "malformed_frame", 2, "send three frames: an empty delimiter, \"FRL1\" and a msgpack map (docs/protocol.md)" },
    [FR_TOO_LARGE]            = { "too_large", 2, "shorten the value; limits are listed in docs/protocol.md" },
    [FR_UNSUPPORTED_VERSION]  = { "unsupported_version", 2, "this broker speaks protocol \"FRL1\"; upgrade the client or the broker" },
    [FR_UNKNOWN_OPERATION]    = { "unknown_operation", 2, "see docs/protocol.md for the operations this version supports" },
    [FR_NOT_FOUND]            = { "not_found", 3, "check the integration id, or import or connect the integration first" },
    [FR_NEEDS_RECONNECT]      = { "needs_reconnect", 4, "the provider no longer accepts the stored refresh token: disconnect the integration, then connect it again" },
    [FR_DISCONNECTED]         = { "disconnected", 4, "the integration was disconnected: connect it again to use it" },
    [FR_CODE_EXPIRED_OR_USED] = { "code_expired_or_used", 4, "start again from Connect; do not use the back button or reload the callback URL, and approve within a minute; if it keeps failing, clear the browser's cookies for the provider's site and use a fresh tab" },
    [FR_STATE_INVALID]        = { "state_invalid", 4, "the callback was opened twice, reloaded, or came too late: start again from Connect" },
    [FR_ACCESS_DENIED]        = { "access_denied", 4, "access was declined at the provider: connect again and approve the requested access" },
    [FR_NO_REFRESH_TOKEN]     = { "no_refresh_token", 4, "the provider issued no refresh token: revoke the app's access at the provider, then connect again" },
    [FR_INSUFFICIENT_SCOPE]   = { "insufficient_scope", 4, "disconnect and reconnect the integration, and accept all requested permissions (if offered minimal or full access, choose full access); if you manage the provider's OAuth app, check that it is configured with these scopes" },
    [FR_BROWSER_MISMATCH]     = { "browser_mismatch", 4, "start the connection again from the dashboard in this browser, and do not use sign-in links someone else sent you" },
    [FR_PROVIDER_UNAVAILABLE] = { "provider_unavailable", 5, "the provider's token endpoint failed for now; retry after the given delay" },
    [FR_PROVIDER_BAD_RESPONSE]= { "provider_bad_response", 5, "the provider answered something that is not a valid token response; retry later, and report it if it persists" },
    [FR_TIMEOUT]              = { "timeout", 5, "no answer within the deadline; retry, or allow a longer timeout" },
    [FR_UNAVAILABLE]          = { "unavailable", 5, "no broker or worker could take the request; check that brokers and workers are running" },
    [FR_OVERLOADED]           = { "overloaded", 5, "too many requests are queued; retry with backoff" },
    [FR_DATABASE_UNAVAILABLE] = { "database_unavailable", 5, "the token database cannot be reached; retry, and check PostgreSQL" },
    [FR_RATE_LIMITED]         = { "rate_limited", 5, "too many refresh or connect calls for this integration; retry after the given delay" },
    [FR_INVALID_CLIENT]       = { "invalid_client", 6, "the provider rejected the OAuth client id or secret: check the provider entry's client credentials" },
    [FR_REDIRECT_URI_MISMATCH]= { "redirect_uri_mismatch", 6, "the redirect URI must match one registered in the provider's OAuth app; contact support with the provider name and the exact error" },
    [FR_INVALID_SCOPE]        = { "invalid_scope", 6, "the provider rejected a requested scope: check the scopes in the provider entry and the OAuth app" },
    [FR_CONFIGURATION]        = { "configuration", 6, "check the provider catalog and the service's environment" },
    [FR_FORBIDDEN]            = { "forbidden", 7, "this client's key is not allowed this operation or integration: ask the operator to change the broker's policy file" },
    [FR_INTERNAL]             = { "internal", 1, "an unexpected error; the service log has details" },
};

const char *
result_code (fr_status_t st)
{
    if ((int) st < 0 || st >= FR__COUNT)
        st = FR_INTERNAL;
    return result_table [st].code;
}

fr_status_t
result_from_code (const char *code)
{
    for (int i = 0; code && i < FR__COUNT; i++)
        if (strcmp (result_table [i].code, code) == 0)
            return (fr_status_t) i;
    return FR_INTERNAL;
}

int
result_exit_code (fr_status_t st)
{
    if ((int) st < 0 || st >= FR__COUNT)
        st = FR_INTERNAL;
    return result_table [st].exit_code;
}

const char *
result_default_hint (fr_status_t st)
{
    if ((int) st < 0 || st >= FR__COUNT)
        st = FR_INTERNAL;
    return result_table [st].hint;
}

int
result_is_transient (fr_status_t st)
{
    return result_exit_code (st) == 5;
}
