"""The Ferrule client: operations of docs/protocol.md, with the C client's retry rules.

Retries (docs/ferrulectl.md, "Retries", as common/client.c does them):

- Idempotent operations (``ping``, ``token``, ``status``, ``history``, and the reads ``doctor``,
  ``events``, ``webhooks``) get up to 2 attempts with one broker, one per broker (at most 3) with
  several. Each attempt gets
  ``max(remaining / attempts left, 0.5 s)`` of what remains of the timeout. The next attempt
  starts when one times out or the broker answers ``unavailable``, ``overloaded`` or
  ``timeout``; after such an answer the client pauses 0.1 s times the attempt number (or the
  ``retry_after`` given), unless that would pass the timeout. Every other error is final.
  Attempt 1 sends the call's request id, a retry ``RID.2``, ``RID.3``: the service's log and
  the client tell the attempts apart. A late reply to an earlier attempt, during a later one or
  the pause, ends the call when it is a success or a final error; a late ``unavailable``,
  ``overloaded`` or ``timeout`` does not stop the live attempt, and is the answer only if
  nothing better comes.
- Every other operation is sent once. With no reply in time, or the service's own ``timeout``
  (which the deadline sent makes arrive first), it raises ``Timeout`` saying that the outcome is
  unknown, with the reason, and a hint to check before retrying.
- When no broker of the list is connected within 1 s (or the timeout, if shorter), the call
  raises ``Unavailable``: nothing was sent.
"""
from __future__ import annotations

import os
import queue
import secrets
import urllib.parse
import weakref
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence, cast

from . import _transport as wire
from .curve import KeySource, keys_from_arguments
from .errors import (FerruleError, Internal, TooLarge, Unavailable,
                     error_from_reply)
from .types import (CallbackResult, ChainEntry, ConnectStart, Diagnosis, DisconnectResult,
                    Integration, Ping, Token)

DEFAULT_BROKER = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT = 10.0            # seconds, retries included (ferrulectl's default)
MAX_ENDPOINTS = 16
MAX_ENDPOINT_LEN = 255
MAX_IPC_PATH = 107                # bytes of an ipc:// path: a Unix socket address holds 108 with its NUL
MIN_ATTEMPT_S = 0.5               # a retry never gets less than this (unless less remains)
CONNECT_WAIT_S = 1.0              # how long a call waits for a first broker connection
MAX_ATTEMPTS = 3                  # attempts of an idempotent call, whatever the broker count
BACKOFF_S = 0.1                   # pause after a retryable error reply, times the attempt
MAX_TIMEOUT_S = 300.0             # the protocol's largest deadline
MIN_TIMEOUT_S = 0.001

IDEMPOTENT = frozenset({"ping", "token", "status", "history", "doctor", "events", "webhooks"})
RETRYABLE = frozenset({"unavailable", "overloaded", "timeout"})

_NO_ANSWER = "no_answer"


def parse_endpoints(brokers: str | Sequence[str]) -> list[str]:
    """Checks a broker list (comma-separated ``tcp://HOST:PORT`` or ``ipc://PATH``, or a list of
    them) as the C client does; raises ValueError naming the bad entry."""
    items = brokers.split(",") if isinstance(brokers, str) else list(brokers)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise TypeError("a broker endpoint must be a str")
        item = raw.strip(" \t")
        shown = "".join(c if " " <= c <= "~" else "?" for c in item[:60]) + ("..." if len(item) > 60 else "")
        if not item:
            raise ValueError("no broker endpoint given" if len(items) == 1
                             else "the broker list has an empty entry")
        if len(out) == MAX_ENDPOINTS:
            raise ValueError(f"too many broker endpoints (the limit is {MAX_ENDPOINTS})")
        if len(item.encode()) > MAX_ENDPOINT_LEN:
            raise ValueError(f"broker endpoint \"{shown}\" is too long (the limit is {MAX_ENDPOINT_LEN} bytes)")
        if any(not ("!" <= c <= "~") for c in item):
            raise ValueError(f"broker endpoint \"{shown}\" contains a space, a control or a non-ASCII character")
        if item.startswith("tcp://") and len(item) > 6:
            host, colon, port = item[6:].rpartition(":")
            if not colon or not host or not (1 <= len(port) <= 5) or not port.isdigit() \
                    or not 1 <= int(port) <= 65535:
                raise ValueError(f"broker endpoint \"{shown}\" is not tcp://HOST:PORT with a port from 1 to 65535")
        elif not (item.startswith("ipc://") and len(item) > 6):
            raise ValueError(f"broker endpoint \"{shown}\" is neither tcp://HOST:PORT nor ipc://PATH")
        elif len(item) - 6 > MAX_IPC_PATH:
            raise ValueError(f"broker endpoint \"{shown}\" is an ipc:// path of {len(item) - 6} bytes; the "
                             f"limit is {MAX_IPC_PATH} (what a Unix socket address holds)")
        if item in out:
            raise ValueError(f"broker endpoint \"{shown}\" is listed twice")
        out.append(item)
    if not out:
        raise ValueError("no broker endpoint given")
    return out


def _check_limits(request: Mapping[str, Any], op: str) -> None:
    """The limits of docs/protocol.md ("Limits") that msgpack itself does not enforce, counted as
    the broker counts them (common/codec.c). The broker cannot read a body over them, so its
    error carries no request id and could answer any call in flight: such a request is refused
    here, before anything is sent."""
    objects = 0

    def where(argument: str | None) -> str:
        if argument is None:
            return f"the \"{op}\" request"
        shown = "".join(c if " " <= c <= "~" else "?" for c in argument)
        return f"argument \"{shown}\" of the \"{op}\" request"

    def too_many(argument: str | None) -> TooLarge:
        return TooLarge(f"{where(argument)} brings the request over {wire.MAX_ITEMS} objects "
                        f"(maps, arrays, keys and values, all levels together)",
                        hint="send fewer items; limits are listed in docs/protocol.md")

    def walk(value: Any, depth: int, argument: str | None) -> None:
        """depth: the maps and arrays around value; argument: the request's key it is under."""
        nonlocal objects
        objects += 1
        if objects > wire.MAX_ITEMS:
            raise too_many(argument)
        if isinstance(value, str):
            if len(value) > wire.MAX_STRING or len(value.encode("utf-8", "surrogatepass")) > wire.MAX_STRING:
                raise TooLarge(f"a string of {where(argument)} is over {wire.MAX_STRING} bytes",
                               hint="shorten the value; limits are listed in docs/protocol.md")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if (value.nbytes if isinstance(value, memoryview) else len(value)) > wire.MAX_STRING:
                raise TooLarge(f"a binary value of {where(argument)} is over {wire.MAX_STRING} bytes",
                               hint="shorten the value; limits are listed in docs/protocol.md")
        elif isinstance(value, wire.EXTENSION_TYPES):
            raise TypeError(f"{where(argument)} holds a msgpack extension type, which the "
                            f"protocol does not take")
        elif isinstance(value, (dict, list, tuple)) and value:
            # an empty container opens no level (as in the broker's count)
            if depth >= wire.MAX_DEPTH:
                raise TooLarge(f"{where(argument)} nests maps and arrays deeper than "
                               f"{wire.MAX_DEPTH} levels",
                               hint="flatten the value; limits are listed in docs/protocol.md")
            if len(value) * (2 if isinstance(value, dict) else 1) > wire.MAX_ITEMS - objects:
                raise too_many(argument)
            if isinstance(value, dict):
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise TypeError(f"a map key of {where(argument)} is not a str but "
                                        f"{type(k).__name__}: the protocol's map keys are strings")
                    size = len(k.encode("utf-8", "surrogatepass"))
                    if size > wire.MAX_KEY:
                        raise TooLarge(f"a map key of {where(argument)} is {size} bytes, over the "
                                       f"limit of {wire.MAX_KEY}",
                                       hint="use shorter keys; limits are listed in docs/protocol.md")
                    walk(k, depth + 1, argument)
                    walk(v, depth + 1, k if depth == 0 else argument)
            else:
                for v in value:
                    walk(v, depth + 1, argument)

    walk(request, 0, None)


def _parse_time(value: Any) -> datetime | None:
    """value as an aware datetime; ValueError saying why not."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("the reply's \"expires_at\" is not a string")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("the reply's \"expires_at\" is not an RFC 3339 time") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class Client:
    """A connection to Ferrule's brokers, safe to share between threads.

    ``brokers``: ``"tcp://b1:5555,tcp://b2:5555"`` or a list; default ``$FERRULE_BROKER_URL``,
    else ``tcp://127.0.0.1:5555``. ``timeout``: seconds per call, retries included, from 0.001 to
    300 (ValueError otherwise; each method also takes ``timeout=``). With ``server_public_key`` (the broker's CURVE public key) the
    links are encrypted and authenticated; ``client_secret_key`` and ``client_public_key`` are
    this client's pair (see ``ferrule.curve`` for the accepted forms: Z85 text or a file path).
    Without key arguments it reads the files named by ``$FERRULE_CURVE_SECRET_KEY_FILE`` and
    ``$FERRULE_BROKER_PUBLIC_KEY_FILE``, as ferrulectl does. Plaintext only when asked for:
    ``plaintext=True``, or ``FERRULE_ALLOW_PLAINTEXT=1`` without those files; else
    ``ferrule.Configuration``.

    Every method raises a ``ferrule.FerruleError`` subclass when the service answers an error.
    Close the client (or use it in a ``with`` block) to stop its I/O thread.
    """

    def __init__(self, brokers: str | Sequence[str] | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 server_public_key: KeySource | None = None,
                 client_secret_key: KeySource | None = None,
                 client_public_key: KeySource | None = None,
                 plaintext: bool = False) -> None:
        if brokers is None:
            brokers = os.environ.get("FERRULE_BROKER_URL") or DEFAULT_BROKER
        self.endpoints = parse_endpoints(brokers)
        self.timeout = self._check_timeout(timeout)
        keys = keys_from_arguments(server_public_key, client_secret_key, client_public_key, plaintext)
        self._transport = wire.Transport(self.endpoints, keys)
        # a client dropped without close() still stops its thread and sockets when collected
        self._finalizer = weakref.finalize(self, self._transport.close)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the I/O thread and closes the sockets; calls in progress raise Unavailable."""
        self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({','.join(self.endpoints)!r})"

    def set_next(self, index: int) -> None:
        """The next request goes to broker ``index`` of the list first (normally a random one,
        then round robin), as the C client's client_set_next: for tests, and for callers that
        prefer a nearby broker."""
        self._transport.set_next(index % len(self.endpoints))

    # --- operations -----------------------------------------------------------------------

    def ping(self, *, timeout: float | None = None) -> Ping:
        """Checks that a broker answers; says how many workers it sees."""
        return cast(Ping, self.call("ping", {}, timeout=timeout))

    def token(self, integration: str, *, min_valid: int | None = None,
              require_scopes: Iterable[str] | None = None, reject: str | None = None,
              timeout: float | None = None) -> Token:
        """A valid access token, refreshed first when it would not last ``min_valid`` seconds
        (the service's default is 60). ``require_scopes``: raise InsufficientScope, before any
        refresh, unless the grant holds every one. ``reject``: the upstream API answered 401 to
        this token; it is refreshed away unless a newer one exists already."""
        args: dict[str, Any] = {"integration": integration}
        if min_valid is not None:
            args["min_valid"] = min_valid
        if require_scopes is not None:
            args["require_scopes"] = _str_list(require_scopes, "require_scopes")
        if reject is not None:
            args["reject"] = reject
        return _token(self.call("token", args, timeout=timeout), "token", integration)

    def refresh(self, integration: str, *, timeout: float | None = None) -> Token:
        """Refreshes the access token now, whatever its remaining life (sent once)."""
        return _token(self.call("refresh", {"integration": integration}, timeout=timeout), "refresh",
                      integration)

    def status(self, integration: str, *, timeout: float | None = None) -> Integration:
        """The integration map: provider, status, generation, expiry, last error, ..."""
        reply = self.call("status", {"integration": integration}, timeout=timeout)
        return cast(Integration, _field(reply, "integration", dict, "status"))

    def history(self, integration: str, *, limit: int | None = None,
                timeout: float | None = None) -> list[ChainEntry]:
        """The refresh chain, newest first (``limit``: 1 to 1000, the service's default 20)."""
        args: dict[str, Any] = {"integration": integration}
        if limit is not None:
            args["limit"] = limit
        reply = self.call("history", args, timeout=timeout)
        return cast(list[ChainEntry], _field(reply, "chain", list, "history"))

    def doctor(self, integration: str, *, timeout: float | None = None) -> Diagnosis:
        """What is wrong with an integration and what to do."""
        reply = self.call("doctor", {"integration": integration}, timeout=timeout)
        return cast(Diagnosis, _field(reply, "diagnosis", dict, "doctor"))

    def connect(self, integration: str, provider: str, redirect_uri: str, *,
                scopes: Iterable[str] | None = None, timeout: float | None = None) -> ConnectStart:
        """Starts the OAuth consent flow: send the user to ``["authorization_url"]``."""
        args: dict[str, Any] = {"integration": integration, "provider": provider,
                                "redirect_uri": redirect_uri}
        if scopes is not None:
            args["scopes"] = _str_list(scopes, "scopes")
        return cast(ConnectStart, self.call("connect", args, timeout=timeout))

    def callback(self, url: str | None = None, *, state: str | None = None,
                 code: str | None = None, error: str | None = None,
                 error_description: str | None = None,
                 timeout: float | None = None) -> CallbackResult:
        """Finishes a connect: pass the whole URL the provider redirected the browser to, or its
        ``state`` and ``code`` (or ``error``) parameters. Sent once: a code works only once."""
        if url is not None:
            if state is not None or code is not None or error is not None:
                raise ValueError("give either the callback URL or its parameters, not both")
            params = _callback_params(url)
        else:
            params = {k: v for k, v in (("state", state), ("code", code), ("error", error),
                                        ("error_description", error_description)) if v is not None}
            if "state" not in params or ("code" not in params and "error" not in params):
                raise ValueError("callback needs \"state\" and one of \"code\" and \"error\"")
        return cast(CallbackResult, self.call("callback", params, timeout=timeout))

    def disconnect(self, integration: str, *, timeout: float | None = None) -> DisconnectResult:
        """Destroys the stored tokens and revokes them at the provider (the history is kept)."""
        return cast(DisconnectResult, self.call("disconnect", {"integration": integration},
                                                timeout=timeout))

    def import_tokens(self, integration: str, provider: str, refresh_token: str, *,
                      access_token: str | None = None, expires_in: int | None = None,
                      scopes: Iterable[str] | None = None, api_base_url: str | None = None,
                      timeout: float | None = None) -> Integration:
        """Stores tokens obtained elsewhere (the ``import`` operation); over an existing
        integration it replaces the tokens and keeps the history. Sent once."""
        if (access_token is None) != (expires_in is None):
            raise ValueError("access_token and expires_in go together")
        args: dict[str, Any] = {"integration": integration, "provider": provider,
                                "refresh_token": refresh_token}
        if access_token is not None:
            args["access_token"] = access_token
            args["expires_in"] = expires_in
        if scopes is not None:
            args["scopes"] = _str_list(scopes, "scopes")
        if api_base_url is not None:
            args["api_base_url"] = api_base_url
        reply = self.call("import", args, timeout=timeout)
        return cast(Integration, _field(reply, "integration", dict, "import", integration))

    def report_scope(self, integration: str, *, scope: str | None = None,
                     www_authenticate: str | None = None,
                     timeout: float | None = None) -> dict[str, Any]:
        """Records that an upstream API answered 403 insufficient_scope (give the missing
        scope, or the 403's WWW-Authenticate header)."""
        args: dict[str, Any] = {"integration": integration}
        if scope is not None:
            args["scope"] = scope
        if www_authenticate is not None:
            args["www_authenticate"] = www_authenticate
        return self.call("report_scope", args, timeout=timeout)

    # --- the request engine -------------------------------------------------------------------

    @staticmethod
    def _check_timeout(timeout: float) -> float:
        """timeout as a float; refused out of range, as ferrulectl's --timeout is: 0 or less (a
        budget already spent) made 1 ms failed as a broker not reached, and more than the
        protocol's largest deadline could not be kept."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
            raise TypeError("timeout must be a number of seconds")
        if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be from {MIN_TIMEOUT_S:g} to {MAX_TIMEOUT_S:g} seconds, "
                             f"not {timeout!r}")
        return float(timeout)

    def call(self, op: str, args: Mapping[str, Any] | None = None, *,
             timeout: float | None = None, idempotent: bool | None = None) -> dict[str, Any]:
        """Sends one request and returns the success reply as a dict; raises a FerruleError
        for an error reply. ``idempotent`` (default: by operation) allows retries."""
        if not isinstance(op, str) or not op:
            raise ValueError("no operation given")
        if args is not None and not isinstance(args, Mapping):
            raise TypeError("the request's arguments must be a mapping")
        args = dict(args or {})
        t = self._check_timeout(self.timeout if timeout is None else timeout)
        if idempotent is None:
            idempotent = op in IDEMPOTENT
        reply = _Call(self._transport, op, args, t, idempotent).run()
        if reply.get("ok") is True:
            return reply
        raise error_from_reply(reply)


class _Call:
    """One call and its attempts, run on the caller's thread."""

    def __init__(self, transport: wire.Transport, op: str, args: dict[str, Any], timeout: float,
                 idempotent: bool) -> None:
        self.t = transport
        self.timeout = timeout
        self.idempotent = idempotent
        self.call = wire.Call(op, secrets.token_hex(16), args)
        self.sent_any = False
        self.last_socket = 0
        self.attempt_no = 0
        self.live_rid = self.call.rid               # the rid the attempt in flight sent
        self.late: dict[str, Any] | None = None     # a retryable error to an attempt given up on
        # an attempt handed to the I/O thread that it has not yet said was sent or not: if the
        # thread fails meanwhile, it may have been sent
        self.in_doubt = False

    def run(self) -> dict[str, Any]:
        try:
            reply = self._attempts()
        except _Interrupted as e:
            # closed, or the I/O thread failed: a change that was (or may have been) sent may
            # have been carried out, so it is not "not sent, send it again" (Unavailable)
            if not self.idempotent and (self.sent_any or (e.kind == "failed" and self.in_doubt)):
                return self._outcome_unknown(_local_error(self.call.rid, "timeout", _INTERRUPTED[e.kind], ""))
            raise wire_closed(e.kind, self.call.rid) from None
        if not self.idempotent and self.sent_any and reply.get("ok") is not True \
                and (_error_code(reply) == "timeout" or reply.get("unreadable") is True):
            return self._outcome_unknown(reply)
        return reply

    def _attempts(self) -> dict[str, Any]:
        n = len(self.t.endpoints)
        max_attempts = (2 if n < 2 else min(n, MAX_ATTEMPTS)) if self.idempotent else 1
        # checked with the last attempt's rid, the longest: every attempt then fits
        request = wire.request_map(self.call.op, wire.attempt_rid(self.call.rid, max_attempts),
                                   int(self.timeout * 1000), self.call.args)
        _check_limits(request, self.call.op)
        body = wire.pack(request)
        if len(body) > wire.MAX_BODY:
            raise TooLarge(f"the \"{self.call.op}\" request is too large: {len(body)} bytes, the "
                           f"limit is {wire.MAX_BODY}", rid=self.call.rid,
                           hint="shorten the values; limits are listed in docs/protocol.md")
        start = wire.now()
        deadline = start + self.timeout
        last_error: dict[str, Any] | None = None
        attempts = 0
        try:
            while attempts < max_attempts:
                t = wire.now()
                remaining = deadline - t
                if remaining <= 0:
                    break
                budget = min(max(remaining / (max_attempts - attempts), MIN_ATTEMPT_S), remaining)
                send_until = t + budget
                if not self.sent_any:
                    send_until = min(send_until, start + CONNECT_WAIT_S)   # a dead list fails fast
                attempts += 1
                outcome, reply = self._attempt(send_until, t + budget)
                if outcome == "not_sent":
                    if not self.sent_any:
                        break
                    continue
                if outcome == "timeout":
                    continue
                assert reply is not None
                if not self.idempotent or reply.get("ok") is True or attempts >= max_attempts \
                        or _error_code(reply) not in RETRYABLE:
                    return reply
                last_error = reply
                after = _retry_after(reply)
                pause = after if after is not None else BACKOFF_S * attempts
                if wire.now() + pause >= deadline:
                    break                           # no time left to wait that long
                late = self._wait(wire.now() + pause)   # a late reply may still answer the call
                if late is not None:
                    return late
            if last_error is not None:
                return last_error
            if self.late is not None:
                return self.late
            return self._no_reply(attempts)
        finally:
            self.t.finish(self.call)

    def _next_event(self, until: float | None) -> tuple[str, Any, Any] | None:
        wait = None if until is None else max(0.0, until - wire.now())
        try:
            event = self.call.events.get(timeout=wait)
        except queue.Empty:
            return None
        if event[0] in ("closed", "failed"):
            raise _Interrupted(event[0])
        return event

    def _kept_as_late(self, reply: dict[str, Any], answered: str | None) -> bool:
        """True (and keeps the reply) for a retryable error answering an attempt given up on:
        the live attempt may still succeed, so it ends nothing. A reply made up for the
        request in flight (answered None) is the live attempt's."""
        if answered is None or answered == self.live_rid:
            return False
        if reply.get("ok") is True or _error_code(reply) not in RETRYABLE:
            return False
        self.late = reply
        return True

    def _attempt(self, send_until: float, until: float) -> tuple[str, dict[str, Any] | None]:
        self.attempt_no += 1
        self.live_rid = wire.attempt_rid(self.call.rid, self.attempt_no)
        # a retry goes to the broker after the one this call last sent to: the client's round
        # robin moves with every other thread's calls too, and could lead back to the same one
        preferred = (self.last_socket + 1) % len(self.t.endpoints) if self.sent_any else self.t.next_broker
        try:
            self.t.send(self.call, self.attempt_no, preferred, send_until, until)
        except wire.Closed:
            if self.attempt_no == 1:
                raise                               # a call on a client already closed
            raise _Interrupted("closed") from None  # closed between two attempts
        self.in_doubt = True
        sent: bool | None = None                    # the I/O thread always says which, by send_until
        while True:
            event = self._next_event(until if sent is not None else None)
            if event is None:
                return ("timeout", None)
            kind, a, b = event
            if kind == "sent":
                self.sent_any = True
                self.last_socket = b
                if a == self.attempt_no:
                    sent = True
                    self.in_doubt = False
            elif kind == "not_sent" and a == self.attempt_no:
                self.in_doubt = False
                return ("not_sent", None)
            elif kind == "reply" and not self._kept_as_late(a, b):
                return ("reply", a)

    def _wait(self, until: float) -> dict[str, Any] | None:
        while True:
            event = self._next_event(until)
            if event is None:
                return None
            if event[0] == "reply" and not self._kept_as_late(event[1], event[2]):
                return cast(dict[str, Any], event[1])

    def _no_reply(self, attempts: int) -> dict[str, Any]:
        op = self.call.op
        endpoints = self.t.endpoints
        if not self.sent_any:
            for i, endpoint in enumerate(endpoints):
                why = self.t.handshake_failure(i)
                if why == "forbidden":
                    return _local_error(self.call.rid, "forbidden",
                                        f"broker \"{endpoint}\" refused this client's key: the \"{op}\" "
                                        f"request was not sent",
                                        "ask the operator to add this client's public key to the broker's "
                                        "clients file")
                if why == "configuration":
                    return _local_error(self.call.rid, "configuration",
                                        f"broker \"{endpoint}\" and this client do not use the same link "
                                        f"security (CURVE or plaintext), or the broker's public key is wrong: "
                                        f"the \"{op}\" request was not sent",
                                        "give the client the brokers' public key and its own secret key "
                                        "(Client(server_public_key=..., client_secret_key=...)), or "
                                        "Client(plaintext=True) for plaintext brokers")
            if len(endpoints) == 1:
                message = f"could not connect to broker \"{endpoints[0]}\": the \"{op}\" request was not sent"
            else:
                listed = ", ".join(f"\"{e}\"" for e in endpoints)
                message = f"could not connect to any of {len(endpoints)} brokers ({listed}): the \"{op}\" request was not sent"
            return _local_error(self.call.rid, "unavailable", message,
                                "check that a broker is running and listening on that address "
                                "(Client(brokers=...) or FERRULE_BROKER_URL)")
        if self.idempotent:
            return _local_error(self.call.rid, "timeout",
                                f"no reply to the \"{op}\" request within {self.timeout:.1f} s "
                                f"({attempts} {'attempt' if attempts == 1 else 'attempts'})",
                                "no answer within the deadline; retry, or allow a longer timeout")
        # _outcome_unknown says the rest
        return _local_error(self.call.rid, "timeout",
                            f"no reply from broker \"{endpoints[self.last_socket]}\" within "
                            f"{self.timeout:.1f} s", "")

    def _outcome_unknown(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A ``timeout`` answering a call that is not idempotent, the broker's or the client's
        own, or a reply the client could not read (``internal``): the request may have been carried out all the same, so retrying it blindly could do
        it twice. The message keeps why (the service's reason) and says the outcome is unknown;
        the hint says to check first (as common/client.c's outcome_unknown)."""
        error = reply.get("error")
        if not isinstance(error, Mapping):
            return reply
        why = error.get("message")
        if not isinstance(why, str) or not why:
            why = "the service answered \"timeout\""
        integration = self.call.args.get("integration")
        where = f"client.status(\"{integration}\")" if isinstance(integration, str) \
            else "the service's state"
        message = f"{why}: the outcome of the \"{self.call.op}\" request is unknown"
        hint = f"the request may have been carried out: check {where} before retrying"
        return dict(reply, error=dict(error, message=message, hint=hint))


class _Interrupted(Exception):
    """The client was closed ("closed") or its I/O thread failed ("failed") during a call."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


_INTERRUPTED = {"closed": "the client was closed while the request was in flight",
                "failed": "the client's I/O thread failed while the request was in flight (the "
                          "log of the \"ferrule\" logger has details)"}


def wire_closed(kind: str, rid: str) -> FerruleError:
    if kind == "closed":
        return Unavailable("the client was closed while the request was in flight", rid=rid,
                           hint="do not close a client that other threads still use")
    return Internal("the client's I/O thread failed; the log of the \"ferrule\" logger has "
                    "details", rid=rid)


def _local_error(rid: str, code: str, message: str, hint: str) -> dict[str, Any]:
    return {"rid": rid, "ok": False, "error": {"code": code, "message": message, "hint": hint}}


def _error_code(reply: Mapping[str, Any]) -> str:
    error = reply.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else "internal"


def _retry_after(reply: Mapping[str, Any]) -> float | None:
    error = reply.get("error")
    after = error.get("retry_after") if isinstance(error, Mapping) else None
    if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
        return float(after)
    return None


def _str_list(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not one string")
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must be a list of strings")
    return out


def _service_fault(reply: Mapping[str, Any], op: str, message: str,
                   integration: Any = None) -> Internal:
    """Internal for a success reply that lacks what the protocol promises: the request was fine
    (not MalformedFrame, "fix the request"), and a change (an operation sent once) may have been
    carried out, which the message says, as _Call._outcome_unknown does."""
    rid = reply.get("rid") if isinstance(reply.get("rid"), str) else None
    if op in IDEMPOTENT:
        hint = ("the service's reply is not what docs/protocol.md promises: check that the client's "
                "and the service's versions match")
    else:
        message = f"{message}: the outcome of the \"{op}\" request is unknown"
        where = f"client.status(\"{integration}\")" if isinstance(integration, str) \
            else "the service's state"
        hint = f"the request may have been carried out: check {where} before retrying"
    return Internal(message, rid=rid, hint=hint, reply=reply)


def _field(reply: Mapping[str, Any], key: str, kind: type, op: str, integration: Any = None) -> Any:
    """reply[key] of a success reply when it is a kind; Internal (a FerruleError with its
    code, not a KeyError) when the key the protocol promises is missing or of the wrong type."""
    value = reply.get(key)
    if not isinstance(value, kind):
        raise _service_fault(reply, op, f"the {op} reply's \"{key}\" is missing or of the wrong type",
                             integration)
    return value


def _token(reply: Mapping[str, Any], op: str, integration: Any = None) -> Token:
    """The Token of a token or refresh reply; Internal when a key the protocol promises is
    missing or of the wrong type (never guessed)."""
    access_token = reply.get("access_token")
    generation = reply.get("generation")
    refreshed = reply.get("refreshed")
    for key, ok in (("access_token", isinstance(access_token, str) and access_token),
                    ("expires_at", isinstance(reply.get("expires_at"), str)),
                    ("generation", isinstance(generation, int) and not isinstance(generation, bool)),
                    ("refreshed", isinstance(refreshed, bool)),
                    ("api_base_url", reply.get("api_base_url") is None or isinstance(reply.get("api_base_url"), str))):
        if not ok:
            raise _service_fault(reply, op, f"the {op} reply's \"{key}\" is missing or of the wrong type",
                                 integration)
    try:
        expires_at = _parse_time(reply["expires_at"])
    except ValueError as e:
        raise _service_fault(reply, op, str(e), integration) from None
    assert expires_at is not None
    return Token(access_token=cast(str, access_token), expires_at=expires_at,
                 generation=cast(int, generation), refreshed=cast(bool, refreshed),
                 api_base_url=cast(Optional[str], reply.get("api_base_url")))


_CALLBACK_LIMITS = {"state": (256, False), "code": (16384, False), "error": (128, False),
                    "error_description": (2048, True)}


def _callback_params(url: str) -> dict[str, str]:
    """The parameters of a callback URL, checked as ferrulectl checks them; the code is never
    put into a message."""
    if not isinstance(url, str) or len(url) > wire.MAX_STRING \
            or not url.lower().startswith(("http://", "https://")):
        raise ValueError("the callback URL is not an http:// or https:// URL of at most "
                         f"{wire.MAX_STRING} bytes: pass the whole URL the provider redirected "
                         "the browser to")
    query = urllib.parse.urlsplit(url).query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in _CALLBACK_LIMITS:
            continue
        limit, text = _CALLBACK_LIMITS[name]
        if name in out:
            raise ValueError(f"the callback URL has the \"{name}\" parameter twice")
        if text:
            value = "".join(c if " " <= c < "\x7f" or c > "\x9f" else "?" for c in value)
        if not value or len(value.encode()) > limit or \
                (not text and any(not (" " <= c < "\x7f") for c in value)):
            raise ValueError(f"the \"{name}\" parameter of the callback URL is empty, too long "
                             "or not printable")
        out[name] = value
    if "state" not in out or ("code" not in out and "error" not in out):
        missing = "\"code\" or \"error\"" if "state" in out else "\"state\""
        raise ValueError(f"the callback URL has no {missing} parameter: pass the whole URL the "
                         "provider redirected the browser to, query included")
    return out

