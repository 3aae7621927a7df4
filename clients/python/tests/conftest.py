"""Fixtures: a real Ferrule deployment (ferrule-test-cluster on the integration harness) and
small scripted brokers for the protocol rules no real deployment shows on demand.

The cluster needs PostgreSQL: scripts/test starts one and exports FERRULE_TEST_PG_ADMIN_URL;
without it the cluster tests are skipped. FERRULE_TEST_CLUSTER names the ferrule-test-cluster
binary (ctest sets it; default: build/tests/integration/ferrule-test-cluster).
"""
from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import zmq
import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))           # the package under test, from the source tree
REPO = HERE.parents[2]

import ferrule  # noqa: E402

START_TIMEOUT_S = 120


class Cluster:
    """A running ferrule-test-cluster: what runs where, and its command channel."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], log: Path) -> None:
        self.proc = proc
        self.info = info
        self.log = log
        self.brokers: list[str] = info["brokers"]
        self.idle_brokers: list[str] = info["idle_brokers"]
        self.fake_url: str = info["fake_provider_url"]
        self.redirect_uri: str = info["redirect_uri"]
        self._lock = threading.Lock()

    def client_keys(self) -> dict[str, str]:
        """The CURVE key files of the deployment, when it runs with CURVE: the one place where
        the tests hand keys to ferrule.Client."""
        keys = {}
        for arg, key in (("server_public_key", "server_public_key_file"),
                         ("client_secret_key", "client_secret_key_file"),
                         ("client_public_key", "client_public_key_file")):
            if self.info.get(key):
                keys[arg] = Path(self.info[key])      # a path: read from the file
        return keys

    def client(self, brokers: list[str] | None = None, **kwargs: Any) -> ferrule.Client:
        keys = self.client_keys()
        return ferrule.Client(brokers or self.brokers, **keys, plaintext=not keys, **kwargs)

    def command(self, line: str) -> None:
        with self._lock:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
            answer = json.loads(_read_line(self.proc, 120))
        assert answer.get("ok") is True, f"cluster command \"{line}\" failed: {answer}"

    def fake(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, self.fake_url + path, json=body, timeout=30)
        assert r.status_code // 100 == 2, f"fake provider {method} {path}: HTTP {r.status_code}"
        return r.json() if r.content else {}

    def stat(self, provider: str, counter: str) -> int:
        return int(self.fake("GET", "/admin/stats")["providers"].get(provider, {}).get(counter, 0))

    def grant(self, provider: str = "fakebox", scopes: list[str] | None = None,
              access_ttl: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"provider": provider, "scopes": scopes or ["files.read"]}
        if access_ttl is not None:
            body["access_ttl"] = access_ttl
        return self.fake("POST", "/admin/grants", body)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("ferrule-test-cluster did not answer in time")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"ferrule-test-cluster exited (status {proc.wait()})")
            line += chunk
    return line


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not os.environ.get("FERRULE_TEST_PG_ADMIN_URL"):
        pytest.skip("FERRULE_TEST_PG_ADMIN_URL is not set (scripts/test starts PostgreSQL and sets it)")
    binary = os.environ.get("FERRULE_TEST_CLUSTER") or str(REPO / "build/tests/integration/ferrule-test-cluster")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"\"{binary}\" is not built: run scripts/build")
    log = tmp_path_factory.mktemp("cluster") / "cluster.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([binary, "--brokers", "2", "--workers", "2", "--idle-brokers", "1",
                                 "--name", "python"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err)
    try:
        first = _read_line(proc, START_TIMEOUT_S)
    except Exception:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"ferrule-test-cluster did not start: see {log}")
    c = Cluster(proc, json.loads(first), log)
    yield c
    assert proc.stdin
    proc.stdin.close()
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = -1
    assert rc == 0, f"the cluster did not stop cleanly (status {rc}); see {log} and {c.info['workdir']}"


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[ferrule.Client]:
    with cluster.client(timeout=10) as c:
        yield c


_ids = itertools.count(1)


@pytest.fixture
def integration_id(request: pytest.FixtureRequest) -> str:
    """An integration id of its own for each test."""
    name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:60]
    return f"py:{name}.{next(_ids)}"


@pytest.fixture
def imported(cluster: Cluster, client: ferrule.Client, integration_id: str) -> Callable[..., str]:
    """Imports a fresh grant of the fake provider; returns the integration id. By default with
    its access token: an integration without one is a candidate of the workers' background
    sweep, which could refresh it (and count a provider call, or take a queued fault) while a
    test is not looking."""
    def make(provider: str = "fakebox", scopes: list[str] | None = None, suffix: str = "",
             with_access: bool = True, expires_in: int = 3600) -> str:
        g = cluster.grant(provider, scopes)
        iid = integration_id + suffix
        kwargs: dict[str, Any] = {}
        if with_access:
            kwargs = {"access_token": g["access_token"], "expires_in": expires_in}
        client.import_tokens(iid, provider, g["refresh_token"], scopes=g["scopes"], **kwargs)
        return iid
    return make


@pytest.fixture
def faults(cluster: Cluster) -> Iterator[Callable[..., None]]:
    """Queues faults at the fake provider; clears every queue after the test."""
    def add(provider: str, kind: str, count: int = 1, **extra: Any) -> None:
        cluster.fake("POST", "/admin/faults", {"provider": provider, "kind": kind, "count": count, **extra})
    yield add
    cluster.fake("DELETE", "/admin/faults")


# --- scripted brokers ------------------------------------------------------------------------

Handler = Callable[[dict[str, Any], int], "list[Any] | None"]


class ScriptedBroker:
    """A ROUTER on 127.0.0.1 that answers each FRL1 request as a test says: handler(request,
    n) returns a list of replies to send (each a dict, packed and framed properly, or a list of
    raw frames sent after the routing id, or ("delay", seconds, reply)), or None to stay silent.
    It records every request it received."""

    def __init__(self, handler: Handler, curve_secret_key: bytes | None = None) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.user_ids: list[str | None] = []          # the ZAP user id, when there is one
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        if curve_secret_key is not None:             # a CURVE server that admits any client key
            self._sock.curve_server = True
            self._sock.curve_secretkey = curve_secret_key
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._delayed: list[tuple[float, list[bytes]]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _frames(self, ident: bytes, reply: Any) -> list[bytes]:
        if isinstance(reply, dict):
            return [ident, b"", b"FRL1", msgpack.packb(reply, use_bin_type=True)]
        return [ident, *reply]

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            timeout = 50
            if self._delayed:
                timeout = max(0, min(timeout, int((min(t for t, _ in self._delayed) - time.monotonic()) * 1000)))
            if poller.poll(timeout):
                msg = self._sock.recv_multipart(copy=False)
                frames = [m.bytes for m in msg]
                ident, body = frames[0], frames[-1]
                try:
                    self.user_ids.append(msg[-1].get("User-Id"))
                except zmq.ZMQError:
                    self.user_ids.append(None)
                request = msgpack.unpackb(body, raw=False, strict_map_key=False)
                self.requests.append(request)
                self.received_at.append(time.monotonic())
                replies = self.handler(request, len(self.requests)) or []
                for reply in replies:
                    if isinstance(reply, tuple) and reply[0] == "delay":
                        self._delayed.append((time.monotonic() + reply[1], self._frames(ident, reply[2])))
                    else:
                        self._sock.send_multipart(self._frames(ident, reply))
            now = time.monotonic()
            due = [d for d in self._delayed if d[0] <= now]
            self._delayed = [d for d in self._delayed if d[0] > now]
            for _, frames in due:
                self._sock.send_multipart(frames)
        self._sock.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedBroker]]:
    made: list[ScriptedBroker] = []

    def make(handler: Handler, curve_secret_key: bytes | None = None) -> ScriptedBroker:
        b = ScriptedBroker(handler, curve_secret_key)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


def ok(request: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"rid": request["rid"], "ok": True, **fields}


def fail(request: dict[str, Any] | None, code: str, message: str = "it failed", **error: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error": {"code": code, "message": message, "hint": "do this", **error}}
    if request is not None:
        reply["rid"] = request["rid"]
    return reply


# --- ctest: a run where every test was skipped (no PostgreSQL) reports SKIP (77) ---------------

_outcomes: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.outcome] = _outcomes.get(report.outcome, 0) + 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0 and _outcomes["skipped"] > 0 and _outcomes["passed"] == 0 \
            and _outcomes["failed"] == 0:
        session.exitstatus = 77
