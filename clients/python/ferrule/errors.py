"""Exceptions: one class per wire error code of docs/protocol.md.

The table below mirrors ``common/result.c`` (code, ferrulectl exit status); the test
``tests/test_errors.py`` reads that C table and fails when a code exists on one side only.

Every class sits under a category that says what the caller can do about it::

    FerruleError
    ├── RequestError          (exit 2) fix the request: BadRequest, MalformedFrame, TooLarge,
    │                                  UnsupportedVersion, UnknownOperation
    ├── NotFound              (exit 3)
    ├── UserActionRequired    (exit 4) the end user must act: NeedsReconnect, Disconnected,
    │                                  CodeExpiredOrUsed, StateInvalid, AccessDenied,
    │                                  NoRefreshToken, InsufficientScope, BrowserMismatch
    ├── TransientError        (exit 5) retry later: ProviderUnavailable, ProviderBadResponse,
    │                                  Timeout, Unavailable, Overloaded, DatabaseUnavailable,
    │                                  RateLimited
    ├── ConfigurationError    (exit 6) the operator must act: InvalidClient,
    │                                  RedirectUriMismatch, InvalidScope, Configuration
    ├── InternalError         (exit 1) a bug in the service: Internal
    └── AccessRefused         (exit 7) this client may not: Forbidden

A code this version does not know (from a newer service) raises ``FerruleError`` itself, with
``code`` set.
"""
from __future__ import annotations

from typing import Any, Mapping


# "link_token": a dashboard link's single-use token; "reject": an access token a caller reported
_SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token", "client_secret", "code_verifier",
                          "link_token", "reject"})


def _without_secrets(value: Any) -> Any:
    """A copy of a reply with every token's value replaced: an exception is logged, printed and
    kept in tracebacks, and one raised over a malformed token reply would carry the token."""
    if isinstance(value, Mapping):
        return {k: "(hidden)" if k in _SECRET_KEYS and value[k] is not None else _without_secrets(value[k])
                for k in value}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


class FerruleError(Exception):
    """A request failed. ``code`` is the wire error code, ``message`` says what happened,
    ``hint`` what to do; ``retry_after`` (seconds) is set when the service knows when to retry.
    ``reply`` is the whole reply body (for example the stored ``integration`` map that comes
    with a ``no_refresh_token`` from ``callback``); ``rid`` is the request id, which the
    service's log lines carry (``RID.2`` when a retry answered). Messages never hold a token, a
    code or a secret, and neither do ``reply`` and ``detail``: a token's value in them is replaced
    by ``"(hidden)"``."""

    code: str = ""
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None, hint: str = "",
                 retry_after: int | None = None, rid: str | None = None,
                 detail: Mapping[str, Any] | None = None,
                 reply: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.hint = hint
        self.retry_after = retry_after
        self.rid = rid
        self.detail = _without_secrets(dict(detail)) if detail is not None else None
        self.reply: dict[str, Any] = _without_secrets(reply) if reply is not None else {}

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}" if self.code else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class RequestError(FerruleError):
    """The request was wrong: a caller's mistake, not worth retrying as it is."""
    exit_code = 2


class NotFound(FerruleError):
    """No such integration."""
    code, exit_code = "not_found", 3


class UserActionRequired(FerruleError):
    """The integration needs its user: reconnect, approve, or grant more scopes."""
    exit_code = 4


class TransientError(FerruleError):
    """A passing failure: retrying the same request later may succeed (see ``retry_after``)."""
    exit_code = 5


class ConfigurationError(FerruleError):
    """The service or the provider's OAuth app is misconfigured: the operator must act."""
    exit_code = 6


class InternalError(FerruleError):
    """A bug in the service; its log has details under the request id."""
    exit_code = 1


class AccessRefused(FerruleError):
    """The broker's allow-lists or policy do not let this client do that: an operator must list
    the client's key or allow the operation on the integration."""
    exit_code = 7


class BadRequest(RequestError):
    code = "bad_request"


class MalformedFrame(RequestError):
    code = "malformed_frame"


class TooLarge(RequestError):
    code = "too_large"


class UnsupportedVersion(RequestError):
    code = "unsupported_version"


class UnknownOperation(RequestError):
    code = "unknown_operation"


class NeedsReconnect(UserActionRequired):
    code = "needs_reconnect"


class Disconnected(UserActionRequired):
    code = "disconnected"


class CodeExpiredOrUsed(UserActionRequired):
    code = "code_expired_or_used"


class StateInvalid(UserActionRequired):
    code = "state_invalid"


class AccessDenied(UserActionRequired):
    code = "access_denied"


class NoRefreshToken(UserActionRequired):
    code = "no_refresh_token"


class InsufficientScope(UserActionRequired):
    code = "insufficient_scope"


class BrowserMismatch(UserActionRequired):
    code = "browser_mismatch"


class ProviderUnavailable(TransientError):
    code = "provider_unavailable"


class ProviderBadResponse(TransientError):
    code = "provider_bad_response"


class Timeout(TransientError):
    code = "timeout"


class Unavailable(TransientError):
    code = "unavailable"


class Overloaded(TransientError):
    code = "overloaded"


class DatabaseUnavailable(TransientError):
    code = "database_unavailable"


class RateLimited(TransientError):
    code = "rate_limited"


class InvalidClient(ConfigurationError):
    code = "invalid_client"


class RedirectUriMismatch(ConfigurationError):
    code = "redirect_uri_mismatch"


class InvalidScope(ConfigurationError):
    code = "invalid_scope"


class Configuration(ConfigurationError):
    code = "configuration"


class Internal(InternalError):
    code = "internal"


class Forbidden(AccessRefused):
    code = "forbidden"


# Wire code -> class, in common/result.c's order. The exit status of each is its class's
# exit_code (checked against the C table by the tests).
ERRORS: dict[str, type[FerruleError]] = {cls.code: cls for cls in (
    BadRequest, MalformedFrame, TooLarge, UnsupportedVersion, UnknownOperation,
    NotFound,
    NeedsReconnect, Disconnected, CodeExpiredOrUsed, StateInvalid, AccessDenied,
    NoRefreshToken, InsufficientScope, BrowserMismatch,
    ProviderUnavailable, ProviderBadResponse, Timeout, Unavailable, Overloaded,
    DatabaseUnavailable, RateLimited,
    InvalidClient, RedirectUriMismatch, InvalidScope, Configuration,
    Forbidden,
    Internal,
)}


def error_from_reply(reply: Mapping[str, Any]) -> FerruleError:
    """The exception for a failure reply ``{"ok": false, "error": {...}}``."""
    error = reply.get("error")
    if not isinstance(error, Mapping):
        error = {}
    code = error.get("code")
    if not isinstance(code, str) or not code:
        code = "internal"
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"the service answered the error \"{code}\" without a message"
    hint = error.get("hint")
    retry_after = error.get("retry_after")
    detail = error.get("detail")
    rid = reply.get("rid")
    cls = ERRORS.get(code, FerruleError)
    return cls(message, code=code, hint=hint if isinstance(hint, str) else "",
               retry_after=retry_after if isinstance(retry_after, int)
               and not isinstance(retry_after, bool) and retry_after >= 0 else None,
               rid=rid if isinstance(rid, str) else None,
               detail=detail if isinstance(detail, Mapping) else None,
               reply=reply)
