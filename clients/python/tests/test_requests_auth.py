"""ferrule.requests_auth.FerruleAuth against a tiny upstream API on 127.0.0.1 that answers 401 to
the first token it sees (a token the provider revoked early, say) and 200 to the others."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from typing import Iterator

import pytest
import requests

import ferrule
from ferrule.requests_auth import FerruleAuth


class Served:
    """An HTTP server on 127.0.0.1 in a thread of its own, answering with handler."""

    def serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Upstream(Served):
    def __init__(self, reject_all: bool = False, forbid_scope: str | None = None) -> None:
        self.reject_all = reject_all
        self.forbid_scope = forbid_scope
        self.rejected: set[str] = set()
        self.seen: list[tuple[str, str, bytes]] = []    # (method, token digest, body)
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                """The whole request body, chunked or not, so that the client is never cut off
                while it still sends."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass                # trailers
                            return body
                        body += self.rfile.read(size)
                        self.rfile.readline()       # the chunk's CRLF
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self) -> None:
                body = self._body()
                header = self.headers.get("Authorization", "")
                token = header[7:] if header.startswith("Bearer ") else ""
                digest = hashlib.sha256(token.encode()).hexdigest()[:16]
                with upstream.lock:
                    upstream.seen.append((self.command, digest, body))
                    if not upstream.rejected or upstream.reject_all:
                        upstream.rejected.add(token)
                    refused = token in upstream.rejected or not token
                answer = json.dumps({"token": digest, "body": body.decode()}).encode()
                if upstream.forbid_scope and not refused:
                    self.send_response(403)
                    self.send_header("WWW-Authenticate",
                                     f'Bearer error="insufficient_scope", scope="{upstream.forbid_scope}"')
                else:
                    self.send_response(401 if refused else 200)
                if refused:
                    self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:      # keep test output quiet
                pass

        self.serve(Handler)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def test_three_lines_of_user_code(cluster, client, imported, upstream):
    iid = imported("fakebox")
    generation = client.token(iid).generation

    auth = FerruleAuth(client, iid)
    r = requests.get(upstream.url + "/me", auth=auth, timeout=30)

    assert r.status_code == 200
    assert [h.status_code for h in r.history] == [401]
    assert len(upstream.seen) == 2 and upstream.seen[0][1] != upstream.seen[1][1]
    now = client.token(iid)
    assert now.generation == generation + 1                  # the rejected token was refreshed away
    assert r.json()["token"] == hashlib.sha256(now.access_token.encode()).hexdigest()[:16]


def test_a_post_body_is_sent_again(cluster, client, imported, upstream):
    iid = imported("fakebox")
    with requests.Session() as s:
        s.auth = FerruleAuth(client, iid)
        r = s.post(upstream.url + "/items", data=b'{"name": "x"}', timeout=30)
        assert r.status_code == 200 and r.json()["body"] == '{"name": "x"}'
        assert [m for m, _, _ in upstream.seen] == ["POST", "POST"]
        assert upstream.seen[0][2] == upstream.seen[1][2] == b'{"name": "x"}'
        # the next request uses the new token at once
        assert s.get(upstream.url + "/me", timeout=30).status_code == 200
    assert len(upstream.seen) == 3


def test_a_second_401_is_returned_after_one_retry(cluster, client, imported):
    u = Upstream(reject_all=True)
    try:
        iid = imported("fakebox")
        generation = client.token(iid).generation
        r = requests.get(u.url + "/me", auth=FerruleAuth(client, iid), timeout=30)
        assert r.status_code == 401 and len(u.seen) == 2
        assert client.token(iid).generation == generation + 1   # one rejection, one refresh
    finally:
        u.close()


def test_a_generator_body_is_not_sent_twice(cluster, client, imported, upstream):
    iid = imported("fakebox")
    r = requests.post(upstream.url + "/stream", data=(c for c in [b"a", b"b"]),
                      auth=FerruleAuth(client, iid), timeout=30)
    assert r.status_code == 401 and len(upstream.seen) == 1 and upstream.seen[0][2] == b"ab"


def test_ferrule_errors_reach_the_caller(cluster, client, imported, upstream):
    iid = imported("fakebox")
    client.disconnect(iid)
    with pytest.raises(ferrule.Disconnected):
        requests.get(upstream.url + "/me", auth=FerruleAuth(client, iid), timeout=30)
    assert upstream.seen == []


def test_threads_rejecting_the_same_token_share_one_refresh(cluster, client, imported, upstream):
    iid = imported("fakebox")
    client.token(iid)
    auth = FerruleAuth(client, iid)
    calls = cluster.stat("fakebox", "refresh_calls")
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        r = requests.get(upstream.url + "/me", auth=auth, timeout=60)
        with lock:
            statuses.append(r.status_code)
    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert cluster.stat("fakebox", "refresh_calls") == calls + 1


class Redirect(Served):
    """An upstream that answers every request with a redirect to location."""

    def __init__(self, location: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.serve(Handler)


def test_no_token_follows_a_redirect_to_another_origin(cluster, client, imported):
    """requests drops the Authorization header when a redirect leads to another origin (here
    another port), but runs the hook on the redirected request's answer: the helper took its 401
    for a stale token of its own, and sent a fresh token there."""
    other = Upstream(reject_all=True)
    hop = Redirect(other.url + "/elsewhere")
    try:
        iid = imported("fakebox")
        r = requests.get(hop.url + "/me", auth=FerruleAuth(client, iid), timeout=30)
        no_token = hashlib.sha256(b"").hexdigest()[:16]
        assert r.status_code == 401
        assert [digest for _, digest, _ in other.seen] == [no_token]
    finally:
        hop.close()
        other.close()


def test_a_403_insufficient_scope_is_reported(cluster, client, imported):
    u = Upstream(forbid_scope="files.write")
    try:
        iid = imported("fakebox", scopes=["files.read"])
        r = requests.get(u.url + "/upload", auth=FerruleAuth(client, iid), timeout=30)
        assert r.status_code == 403 and [h.status_code for h in r.history] == [401]   # after the 401 loop
        report = client.status(iid)["scope_report"]
        assert report is not None and report["scope"] == "files.write"
        assert client.doctor(iid)["code"] == "insufficient_scope"
        # turned off: nothing is reported
        other = imported("fakebox", scopes=["files.read"], suffix=".off")
        r = requests.get(u.url + "/upload", auth=FerruleAuth(client, other, report_scope=False), timeout=30)
        assert r.status_code == 403 and client.status(other)["scope_report"] is None
    finally:
        u.close()
