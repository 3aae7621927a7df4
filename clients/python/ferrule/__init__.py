"""Ferrule's Python client: valid OAuth access tokens from Ferrule's brokers.

    import ferrule
    with ferrule.Client("tcp://ferrule-broker:5555") as client:
        token = client.token("acct42:box", min_valid=300)
        headers = {"Authorization": token.authorization}

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
