"""Ferrule's Python client: valid OAuth access tokens from Ferrule's brokers.

    import ferrule
    with ferrule.Client("tcp://ferrule-1:5555,tcp://ferrule-2:5555",
                        server_public_key="/etc/ferrule/keys/broker.pub",   # CURVE
                        client_secret_key="/etc/ferrule/keys/billing.key") as client:
        token = client.token("acct42:box", min_valid=300)
        headers = {"Authorization": token.authorization}

Without key arguments the client reads the key files that ``FERRULE_CURVE_SECRET_KEY_FILE``
and ``FERRULE_BROKER_PUBLIC_KEY_FILE`` name; it talks plaintext only when asked
(``plaintext=True``). README.md has the rest.

The wire protocol is docs/protocol.md; the retry rules are the C client's (ferrule.client).
"""
from .client import Client, parse_endpoints
from .curve import CurveKeys
from .errors import (ERRORS, AccessDenied, AccessRefused, BadRequest, BrowserMismatch, CodeExpiredOrUsed, Configuration,
                     ConfigurationError, DatabaseUnavailable, Disconnected, FerruleError, Forbidden,
                     InsufficientScope, Internal, InternalError, InvalidClient, InvalidScope,
                     MalformedFrame, NeedsReconnect, NoRefreshToken, NotFound, Overloaded,
                     ProviderBadResponse, ProviderUnavailable, RateLimited, RedirectUriMismatch,
                     RequestError, StateInvalid, Timeout, TooLarge, TransientError,
                     Unavailable, UnknownOperation, UnsupportedVersion, UserActionRequired,
                     error_from_reply)
from .types import Token

__version__ = "0.1.0"
PROTOCOL = "FRL1"

__all__ = [
    "Client", "CurveKeys", "Token", "parse_endpoints", "error_from_reply", "ERRORS", "PROTOCOL",
    "FerruleError", "RequestError", "NotFound", "UserActionRequired", "TransientError",
    "ConfigurationError", "InternalError", "AccessRefused",
    "BadRequest", "MalformedFrame", "TooLarge", "UnsupportedVersion", "UnknownOperation",
    "NeedsReconnect", "Disconnected", "CodeExpiredOrUsed", "StateInvalid", "AccessDenied",
    "NoRefreshToken", "InsufficientScope", "BrowserMismatch",
    "ProviderUnavailable", "ProviderBadResponse", "Timeout", "Unavailable", "Overloaded",
    "DatabaseUnavailable", "RateLimited",
    "InvalidClient", "RedirectUriMismatch", "InvalidScope", "Configuration", "Internal", "Forbidden",
]
