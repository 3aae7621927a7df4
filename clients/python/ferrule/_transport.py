"""The I/O thread: one DEALER socket per broker, owned by one thread, shared by every caller.

ZeroMQ sockets must not be used from several threads, so no caller touches one. A caller posts
commands (send an attempt of a call, finish the call) to a queue and wakes the thread
through a pipe; the thread sends, polls every socket, and hands each reply to the call whose
request id (``rid``) it carries, through that call's own queue. Replies to calls that are
finished (they gave up) are dropped. Any number of calls may be in flight at once.

Attempt 1 of a call sends its rid, attempt N sends ``RID.N`` (as common/client.c): a reply
carrying either belongs to the call, and the caller learns which attempt it answers.

Sending follows the C client (common/client.c): an attempt goes to its chosen broker if that
one is connected within 100 ms, else to the first connected broker after it in the list; a
request is never queued for a broker that is not connected (``ZMQ_IMMEDIATE``); the request's
``deadline_ms`` is computed when it is actually sent.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import zmq

from .curve import CurveKeys

log = logging.getLogger("ferrule")

PROTOCOL = b"FRL1"
MAX_BODY = 256 * 1024          # bytes in one frame (docs/protocol.md, Limits)
MAX_STRING = 64 * 1024         # one string or binary value
MAX_KEY = 64                   # one map key
MAX_ITEMS = 16384              # objects in one body, all levels together
MAX_DEPTH = 8                  # nesting of maps and arrays
EXTENSION_TYPES = (msgpack.ExtType, msgpack.Timestamp)   # packed as msgpack ext: the broker refuses them
HWM = 100                      # messages queued per socket and direction
PREFER_WAIT_S = 0.100          # an attempt waits this long for its chosen broker
DRAIN_MAX = 64                 # messages read per socket per wakeup
MAX_DEADLINE_MARGIN_S = 0.250  # deadline_ms is this much (at most a tenth) below the attempt's end
MAX_TIMEOUT_MS = 300000        # the protocol's largest deadline_ms


def now() -> float:
    return time.monotonic()


def request_map(op: str, rid: str, deadline_ms: int, args: dict[str, Any]) -> dict[str, Any]:
    """The request body an attempt sends, before packing."""
    body = {k: v for k, v in args.items() if k not in ("op", "rid", "deadline_ms")}
    body["op"] = op
    body["rid"] = rid
    body["deadline_ms"] = deadline_ms
    return body


def pack(body: dict[str, Any]) -> bytes:
    return cast(bytes, msgpack.packb(body, use_bin_type=True))


def pack_body(op: str, rid: str, deadline_ms: int, args: dict[str, Any]) -> bytes:
    return pack(request_map(op, rid, deadline_ms, args))


def attempt_rid(rid: str, attempt: int) -> str:
    """The rid an attempt sends: the call's own for the first, ``RID.N`` for a retry, so that
    the service's log and the client tell the attempts apart."""
    return rid if attempt <= 1 else f"{rid}.{attempt}"


def base_rid(rid: str) -> str | None:
    """The call's rid in a reply's rid (``RID`` or ``RID.<digits>``); None for any other form,
    which no call of this client sent."""
    base, dot, n = rid.partition(".")
    if dot and not (n.isascii() and n.isdigit()):
        return None
    return base


def _decode(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, unicode_errors="replace", strict_map_key=False,
                           max_str_len=MAX_STRING, max_bin_len=MAX_STRING,
                           max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS, max_ext_len=0)


def deadline_ms_for(until: float, at: float) -> int:
    left = until - at
    margin = min(left / 10, MAX_DEADLINE_MARGIN_S)
    return max(1, min(MAX_TIMEOUT_MS, int((left - margin) * 1000)))


@dataclass(eq=False)
class Call:
    """One request and all its attempts (each sends attempt_rid(rid, attempt)). The I/O thread
    writes events to ``events``: ("sent", attempt, socket), ("not_sent", attempt, None),
    ("reply", reply, answered): answered is the rid the reply carries, or None for one made up
    for the request in flight (a broker error without a rid, a malformed reply)."""
    op: str
    rid: str
    args: dict[str, Any]
    events: "queue.SimpleQueue[tuple[str, Any, Any]]" = field(default_factory=queue.SimpleQueue)


@dataclass(eq=False)
class _Waiting:
    """The requests sent on one socket whose answer has not come (a broker answers each request
    once): how many in all, never too few, and how many of them each running call sent."""
    total: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def sent(self, rid: str) -> None:
        self.total += 1
        self.calls[rid] = self.calls.get(rid, 0) + 1

    def answered(self, rid: str | None) -> None:
        """One request was answered: one of call rid's, or (None) one of a call that ended."""
        self.total = max(0, self.total - 1)
        if rid is not None and rid in self.calls:
            self.calls[rid] -= 1
            if self.calls[rid] <= 0:
                del self.calls[rid]

    def forget(self, rid: str) -> None:
        """The call ended: its requests still waiting count on as an ended call's."""
        self.calls.pop(rid, None)

    def sole_call(self) -> str | None:
        """The running call whose requests are all that wait here, the only one a reply without
        a rid can answer; None when there is no such call."""
        if len(self.calls) == 1:
            rid, n = next(iter(self.calls.items()))
            if n == self.total:
                return rid
        return None


@dataclass(eq=False)
class _Send:
    call: Call
    attempt: int
    preferred: int
    started: float
    send_until: float
    until: float


class Closed(RuntimeError):
    """A command for a transport already closed."""


class Forked(Closed):
    """A command for a transport made in another process: the child of a fork has none of its
    parent's I/O thread, and its ZeroMQ context and sockets are not its own."""


class Transport:
    def __init__(self, endpoints: list[str], keys: CurveKeys | None) -> None:
        self.endpoints = list(endpoints)
        self._ctx = zmq.Context()
        self._sockets: list[zmq.Socket[Any]] = []
        # per broker: its handshake failures (a key refused, another security), read by callers
        # when nothing could be sent, as the C client does (common/client.c)
        self._monitors: list[zmq.Socket[Any] | None] = []
        self._refusals: list[str | None] = []
        self._monitor_lock = threading.Lock()      # guards _refusals
        self._commands: collections.deque[tuple[str, Any]] = collections.deque()
        self._closed = False
        self._lock = threading.Lock()              # guards _closed and the wake pipe
        self._pid = os.getpid()                    # the process whose I/O thread serves calls
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # the broker the next attempt goes to first: a random one, then round robin
        self._next = int.from_bytes(os.urandom(4), "big") % len(self.endpoints)
        try:
            for endpoint in self.endpoints:
                sock = self._ctx.socket(zmq.DEALER)
                self._sockets.append(sock)
                sock.linger = 0
                sock.sndhwm = HWM
                sock.rcvhwm = HWM
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_BODY)
                sock.setsockopt(zmq.IMMEDIATE, 1)   # never queue for a broker that is not there
                if keys is not None:
                    keys.apply(sock)
                self._monitors.append(self._open_monitor(sock))
                self._refusals.append(None)
                sock.connect(endpoint)
        except Exception:
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="ferrule-io", daemon=True)
        self._thread.start()

    # --- the callers' side ----------------------------------------------------------------

    def _post(self, kind: str, payload: Any = None, wake: bool = True) -> None:
        if os.getpid() != self._pid:
            # before the lock, which the parent's I/O thread may have held at the fork
            raise Forked(f"this ferrule client was made in process {self._pid}, before a fork: "
                         f"its I/O thread runs only there; make a client in each process after "
                         f"forking")
        # under the lock, so that the pipe cannot be closed (and its number reused) meanwhile
        with self._lock:
            if self._closed:
                raise Closed("the ferrule client is closed")
            self._commands.append((kind, payload))
            if wake:
                self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass                                   # the pipe is full: a wakeup is pending anyway

    def _open_monitor(self, sock: zmq.Socket[Any]) -> zmq.Socket[Any] | None:
        """sock's handshake events, or None (a refusal is then told as a broker not reached).
        libzmq sends them from its I/O thread with a blocking send: a pair at its high-water
        mark would stop that thread, and the socket would never reconnect, even once the broker
        takes the key. So the pair's queue is unbounded, and the I/O thread (the only one that
        touches it) reads it as events come, calls or none: it holds few at any time."""
        addr = f"inproc://ferrule-monitor-{id(sock):x}"
        try:
            sock.monitor(addr, zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                         | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        except zmq.ZMQError:
            return None
        monitor = self._ctx.socket(zmq.PAIR)
        try:
            monitor.rcvhwm = 0
            monitor.connect(addr)
        except zmq.ZMQError:
            monitor.close(linger=0)
            sock.disable_monitor()
            return None
        return monitor

    def send(self, call: Call, attempt: int, preferred: int, send_until: float,
             until: float) -> None:
        """Sends an attempt; the first one also registers the call, whose replies are then
        delivered until finish()."""
        self._post("send", _Send(call, attempt, preferred, now(), send_until, until))

    def finish(self, call: Call) -> None:
        """Forgets the call. It needs no wakeup: the thread does it with its next command, and
        until then a late reply to the call is simply dropped by the caller."""
        try:
            self._post("finish", call, wake=False)
        except RuntimeError:
            pass                                   # closed: nothing left to forget

    def close(self) -> None:
        if os.getpid() != self._pid:
            return                                 # the parent's sockets and thread: not ours to stop
        with self._lock:
            if not self._closed:
                self._commands.append(("stop", None))
                self._wake()
                self._closed = True
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- the I/O thread ---------------------------------------------------------------------

    def _release(self) -> None:
        with self._monitor_lock:
            for i, sock in enumerate(self._sockets):
                if i < len(self._monitors) and self._monitors[i] is not None:
                    try:
                        sock.disable_monitor()
                    except zmq.ZMQError:
                        pass
                    self._monitors[i].close(linger=0)      # type: ignore[union-attr]
                    self._monitors[i] = None
        for sock in self._sockets:
            sock.close(linger=0)
        self._ctx.term()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        calls: dict[str, Call] = {}
        pending: list[_Send] = []
        outstanding = [_Waiting() for _ in self._sockets]
        stop = False
        try:
            while not stop:
                stop = self._step(calls, pending, outstanding)
        except Exception:                          # a bug here must not hang every caller
            log.exception("the ferrule client's I/O thread failed")
            for call in calls.values():
                call.events.put(("failed", None, None))
        finally:
            with self._lock:
                self._closed = True
            # calls still waiting learn why (after a failure, commands may be left unread)
            while self._commands:
                kind, payload = self._commands.popleft()
                if kind == "send":
                    calls[payload.call.rid] = payload.call
            for call in calls.values():
                call.events.put(("closed", None, None))
            with self._lock:
                self._release()

    def _step(self, calls: dict[str, Call], pending: list[_Send],
              outstanding: list[_Waiting]) -> bool:
        t = now()
        items: list[tuple[Any, int]] = [(self._wake_r, zmq.POLLIN)]
        wake_at: float | None = None
        want_out = [False] * len(self._sockets)
        for send in pending:
            any_broker = t - send.started >= PREFER_WAIT_S
            for i in range(len(self._sockets)):
                if any_broker or i == send.preferred:
                    want_out[i] = True
            nxt = send.send_until if any_broker else min(send.send_until, send.started + PREFER_WAIT_S)
            wake_at = nxt if wake_at is None else min(wake_at, nxt)
        for i, sock in enumerate(self._sockets):
            items.append((sock, zmq.POLLIN | (zmq.POLLOUT if want_out[i] else 0)))
        monitors = [(i, m) for i, m in enumerate(self._monitors) if m is not None]
        for _, monitor in monitors:
            items.append((monitor, zmq.POLLIN))
        timeout = -1 if wake_at is None else max(0, int((wake_at - t) * 1000) + 1)
        ready: dict[Any, int] = dict(zmq.zmq_poll(items, timeout))

        stop = False
        if ready.get(self._wake_r):
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        while self._commands:
            kind, payload = self._commands.popleft()
            if kind == "send":
                calls[payload.call.rid] = payload.call
                pending.append(payload)
            elif kind == "finish":
                calls.pop(payload.rid, None)
                pending[:] = [s for s in pending if s.call is not payload]
                for waiting in outstanding:
                    waiting.forget(payload.rid)
            elif kind == "stop":
                stop = True
        if stop:
            return True

        for i, monitor in monitors:
            if ready.get(monitor, 0) & zmq.POLLIN:
                self._read_monitor(i, monitor)

        for i, sock in enumerate(self._sockets):
            if ready.get(sock, 0) & zmq.POLLIN:
                for _ in range(DRAIN_MAX):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    self._deliver(i, frames, calls, outstanding)

        t = now()
        writable = [bool(ready.get(sock, 0) & zmq.POLLOUT) for sock in self._sockets]
        still: list[_Send] = []
        for send in pending:
            if t >= send.send_until:
                send.call.events.put(("not_sent", send.attempt, None))
                continue
            if self._try_send(send, t, writable, outstanding):
                continue
            still.append(send)
        pending[:] = still
        return False

    def _try_send(self, send: _Send, t: float, writable: list[bool],
                  outstanding: list[_Waiting]) -> bool:
        n = len(self._sockets)
        any_broker = t - send.started >= PREFER_WAIT_S
        order = [(send.preferred + k) % n for k in range(n)] if any_broker else [send.preferred]
        for i in order:
            if not writable[i]:
                continue
            body = pack_body(send.call.op, attempt_rid(send.call.rid, send.attempt),
                             deadline_ms_for(send.until, t), send.call.args)
            try:
                # ZeroMQ delivers all parts or none; only the first can meet a full queue
                self._sockets[i].send_multipart([b"", PROTOCOL, body], zmq.NOBLOCK)
            except zmq.Again:
                writable[i] = False
                continue
            outstanding[i].sent(send.call.rid)
            self._next = (i + 1) % n
            send.call.events.put(("sent", send.attempt, i))
            return True
        return False

    def handshake_failure(self, i: int) -> str | None:
        """Why the handshake with broker i failed, as far as its monitor said: "forbidden" (the
        broker refused this client's key), "configuration" (the two sides use different
        security, or the broker's public key is wrong), or None. Safe from any caller thread:
        the I/O thread reads the monitors (_read_monitor)."""
        with self._monitor_lock:
            return self._refusals[i] if i < len(self._refusals) else None

    def _read_monitor(self, i: int, monitor: zmq.Socket[Any]) -> None:
        """Reads broker i's handshake events to their end (in the I/O thread): a success clears
        what failed before, and a refused key outweighs a failure without detail (as in the C
        client)."""
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                break
            if not (frames and len(frames[0]) == 6):
                continue
            event = int.from_bytes(frames[0][:2], "little")
            with self._monitor_lock:
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._refusals[i] = None               # what failed before is over
                elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    self._refusals[i] = "forbidden"
                elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL) \
                        and self._refusals[i] != "forbidden":
                    # a mechanism mismatch, or a broker that closed the connection in the
                    # handshake (as one does for a plaintext client, or a wrong server key)
                    self._refusals[i] = "configuration"

    @property
    def next_broker(self) -> int:
        return self._next

    def set_next(self, index: int) -> None:
        self._next = index

    def _deliver(self, i: int, frames: list[bytes], calls: dict[str, Call],
                 outstanding: list[_Waiting]) -> None:
        reason = ""
        # a reply this client cannot read is the service's fault, not the request's (not
        # malformed_frame, which says "fix the request")
        code = "internal"
        reply: Any = None
        if len(frames) != 3:
            reason = f"{len(frames)} frames instead of 3"
        elif frames[0]:
            reason = "the first frame is not an empty delimiter"
        elif frames[1] != PROTOCOL:
            shown = frames[1][:16].decode("ascii", "replace")
            shown = "".join(c if " " <= c <= "~" else "?" for c in shown)
            reason = f"protocol \"{shown}\" instead of \"FRL1\""
            code = "unsupported_version"
        else:
            try:
                reply = _decode(frames[2])
            except Exception as e:             # msgpack raises several types; all mean "not msgpack"
                reason = f"the body is not valid msgpack ({type(e).__name__})"
            else:
                if not isinstance(reply, dict):
                    reason = "the body is not a map"
                elif "rid" in reply and not isinstance(reply["rid"], str):
                    reason = "\"rid\" is not a string"
                elif isinstance(reply.get("rid"), str):
                    base = base_rid(reply["rid"])
                    call = calls.get(base) if base is not None else None
                    if call is None:
                        outstanding[i].answered(None)
                        return                      # stale: a call that gave up
                    if not isinstance(reply.get("ok"), bool):
                        reason = "\"ok\" is missing or not a boolean"
                        self._answer(call, i, _synthesized(call.rid, code, self.endpoints[i], reason),
                                     outstanding)
                        return
                    self._answer(call, i, reply, outstanding, answered=reply["rid"])
                    return
                elif reply.get("ok") is not False:
                    self._unmatched(i, outstanding)     # a success without a rid is not ours
                    return
                else:
                    # A broker that could not read a request cannot echo its rid: such an
                    # error answers a call only when that call's requests are all that wait
                    # on that socket.
                    self._answer_sole(i, reply, calls, outstanding)
                    return
        # malformed: the same
        self._answer_sole(i, None, calls, outstanding, code=code, reason=reason)

    def _answer(self, call: Call, i: int, reply: dict[str, Any],
                outstanding: list[_Waiting], answered: str | None = None) -> None:
        outstanding[i].answered(call.rid)
        call.events.put(("reply", reply, answered))

    def _unmatched(self, i: int, outstanding: list[_Waiting]) -> None:
        """Counts a reply given to no call: when no running call waits on socket i it answered
        one that ended; otherwise nobody can tell, and the count stays (too many is safe)."""
        if not outstanding[i].calls:
            outstanding[i].answered(None)

    def _answer_sole(self, i: int, reply: dict[str, Any] | None, calls: dict[str, Call],
                     outstanding: list[_Waiting], code: str = "", reason: str = "") -> None:
        rid = outstanding[i].sole_call()
        if rid is None or rid not in calls:
            # several calls wait there, or calls that ended do: a late answer to one of those
            # must not become another call's
            log.warning("dropped a reply from broker \"%s\" that no request can be matched to "
                        "(%s)", self.endpoints[i],
                        reason or "an error without a request id")
            self._unmatched(i, outstanding)
            return
        call = calls[rid]
        if reply is None:
            reply = _synthesized(call.rid, code, self.endpoints[i], reason)
        else:
            reply = dict(reply, rid=call.rid)
        self._answer(call, i, reply, outstanding)


def _synthesized(rid: str, code: str, endpoint: str, reason: str) -> dict[str, Any]:
    """The error a reply this client cannot read stands for. "unreadable" tells the caller
    (client._Call) that the request may have been carried out all the same."""
    return {"rid": rid, "ok": False, "unreadable": True, "error": {
        "code": code,
        "message": f"broker \"{endpoint}\" sent a malformed reply: {reason}",
        "hint": "the broker does not speak this client's protocol (FRL1): check that the "
                "endpoint is a Ferrule broker's frontend and that versions match"}}
