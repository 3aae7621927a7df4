"""What the operations return. Maps of the service stay dicts (a newer service may add keys);
their known keys are described here as TypedDicts for type checkers."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional, TypedDict


@dataclass(frozen=True)
class Token:
    """An access token. Its value is left out of ``repr()``, so that logging the object or a
    failing test's output never shows it."""

    access_token: str = field(repr=False)
    expires_at: datetime          # aware, UTC
    generation: int               # bumped by every refresh and reconnect
    refreshed: bool               # this request caused a provider call
    api_base_url: Optional[str] = None   # the provider's API base URL for this grant (Salesforce's
                                         # instance_url), when the service knows one

    @property
    def expires_in(self) -> float:
        """Seconds left until it expires (negative once expired)."""
        return (self.expires_at - datetime.now(timezone.utc)).total_seconds()

    @property
    def authorization(self) -> str:
        """The value of an ``Authorization`` header."""
        return f"Bearer {self.access_token}"


class _WarningReason(TypedDict, total=False):
    reason: str                   # not_revoked's: no_token, no_revocation_endpoint, grant_shared, ...


class ServiceWarning(_WarningReason):
    code: str                     # scopes_reduced, revocation_failed, not_revoked, ...
    message: str
    hint: str


class LastError(TypedDict):
    code: str
    message: str
    at: str


class ScopeReport(TypedDict):
    scope: str
    at: str


class Integration(TypedDict, total=False):
    id: str
    provider: str
    status: str                   # active, needs_reconnect, disconnected
    generation: int
    access_expires_at: Optional[str]
    scopes: list[str]
    last_error: Optional[LastError]
    last_refresh_at: Optional[str]
    refresh_token_fingerprint: Optional[str]
    created_at: str
    updated_at: str
    api_base_url: Optional[str]
    requested_scopes: Optional[list[str]]
    refresh_token_missing: bool
    scope_report: Optional[ScopeReport]
    disconnected_at: Optional[str]


class ChainEntry(TypedDict, total=False):
    generation: int
    at: str
    outcome: str                  # imported, refreshed, adopted, invalid_grant, ...
    worker: str
    refresh_token_fingerprint: Optional[str]
    rotated: bool
    detail: Optional[str]


class Diagnosis(TypedDict, total=False):
    code: str                     # healthy, needs_reconnect, ... (docs/troubleshooting.md)
    integration: str
    provider: str
    status: str
    symptom: str
    cause: str
    what_to_do: list[str]
    facts: list[str]
    operator_only: bool           # only the operator can mend it: connecting again gets the same


class Ping(TypedDict, total=False):
    rid: str
    ok: bool
    service: str
    worker: str
    workers: int
    partitions: int
    partitions_owned: int


class ConnectStart(TypedDict, total=False):
    rid: str
    ok: bool
    authorization_url: str
    state: str
    expires_at: str
    integration: str
    provider: str
    redirect_uri: str
    scopes: list[str]


class CallbackResult(TypedDict, total=False):
    rid: str
    ok: bool
    integration: Integration
    reconnected: bool
    warnings: list[ServiceWarning]


class DisconnectResult(TypedDict, total=False):
    rid: str
    ok: bool
    integration: Integration
    warnings: list[ServiceWarning]


