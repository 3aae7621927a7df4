"""An auth helper for ``requests``: Ferrule's tokens on every request, and the stale-token loop.

    from ferrule.requests_auth import FerruleAuth
    auth = FerruleAuth(client, "acct42:box")
    r = requests.get("https://api.box.com/2.0/users/me", auth=auth)

Each request gets ``Authorization: Bearer <token>`` from ``client.token(integration)``. When the
upstream API answers 401, the helper tells Ferrule that this token was rejected
(``client.token(integration, reject=old)``: Ferrule refreshes it away, or hands out the newer
token another caller already got) and sends the request once more with the new token. A second
401 is returned as it is: then the problem is not a stale token. A request whose body cannot be
sent twice (a generator, a pipe or a socket) is sent once and not retried.

A redirect to another origin (host, port or scheme) loses the token, as ``requests`` takes the
``Authorization`` header off it; the helper does not put one back, and does not act on that
origin's 401 or 403.

A 403 whose ``WWW-Authenticate`` says ``insufficient_scope`` (RFC 6750) is reported to Ferrule
(``client.report_scope``: ``doctor`` then tells the user to reconnect with that scope) and returned
as it is; ``report_scope=False`` turns that off. A failure to report never hides the response.

Errors from Ferrule (``NeedsReconnect``, ``ProviderUnavailable``, ...) are raised from the
``requests`` call, so the caller sees why there is no token.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import requests
from requests.auth import AuthBase

from .client import Client
from .errors import FerruleError

_RETRIED = "_ferrule_retried"
MAX_WWW_AUTHENTICATE = 4096       # the protocol's limit for report_scope's www_authenticate

log = logging.getLogger("ferrule")


class FerruleAuth(AuthBase):
    """``requests`` authentication with a Ferrule integration's access token. Thread-safe:
    one instance may serve many threads and sessions."""

    def __init__(self, client: Client, integration: str, *, min_valid: int | None = None,
                 require_scopes: Iterable[str] | None = None,
                 timeout: float | None = None, report_scope: bool = True) -> None:
        self.client = client
        self.report_scope = report_scope
        self.integration = integration
        self.min_valid = min_valid
        self.require_scopes = list(require_scopes) if require_scopes is not None else None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"FerruleAuth(integration={self.integration!r})"

    def _token(self, reject: str | None = None) -> str:
        return self.client.token(self.integration, min_valid=self.min_valid,
                                 require_scopes=self.require_scopes, reject=reject,
                                 timeout=self.timeout).access_token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = "Bearer " + self._token()
        body = r.body
        setattr(r, "_ferrule_body_position", _position(body))
        r.register_hook("response", self._on_response)
        return r

    def _report_scope(self, response: requests.Response) -> None:
        if response.status_code != 403 or not self.report_scope:
            return
        header = response.headers.get("WWW-Authenticate", "")
        if "insufficient_scope" not in header or len(header) > MAX_WWW_AUTHENTICATE:
            return
        try:
            self.client.report_scope(self.integration, www_authenticate=header, timeout=self.timeout)
        except FerruleError as e:
            log.warning("could not report the missing scope of integration \"%s\" to ferrule: %s",
                        self.integration, e.code)

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            # a redirect to another origin: requests took the token off (and still runs this hook
            # on the answer); whatever that origin says is not about our token, and gets none
            return response
        if response.status_code == 403:
            self._report_scope(response)
            return response
        if response.status_code != 401 or getattr(request, _RETRIED, False):
            return response
        body = request.body
        position = getattr(request, "_ferrule_body_position", None)
        if body is not None and not isinstance(body, (bytes, str)):
            if position is None:
                return response                    # a stream or generator: cannot send it again
            body.seek(position)
        new = self._token(reject=header[len("Bearer "):])

        response.content                           # read it, so the connection can be reused
        response.close()
        retry = request.copy()
        setattr(retry, _RETRIED, True)
        retry.headers["Authorization"] = "Bearer " + new
        # the first response's cookies belong to the second request, as requests' own auths do
        jar = getattr(retry, "_cookies")
        requests.cookies.extract_cookies_to_jar(jar, request, response.raw)
        retry.prepare_cookies(jar)
        second = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        self._report_scope(second)                 # the adapter runs no hooks for it
        return second


def _position(body: Any) -> int | None:
    """Where a file-like body starts, to rewind it before it is sent again; None when it cannot
    be (no tell and seek, or a pipe's or socket's, whose tell raises): sent once, not retried."""
    if not (hasattr(body, "tell") and hasattr(body, "seek")):
        return None
    try:
        if hasattr(body, "seekable") and not body.seekable():
            return None
        position = body.tell()
    except (OSError, ValueError):
        return None
    return position if isinstance(position, int) else None
