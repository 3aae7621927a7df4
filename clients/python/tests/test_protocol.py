"""The wire rules and retry rules of the C client, against scripted brokers (real ZeroMQ sockets
on 127.0.0.1 that answer what each test says)."""
from __future__ import annotations

import re
import socket
import threading
import time

import pytest

import ferrule
from ferrule.errors import ERRORS

from conftest import fail, ok

RETRYABLE = {"unavailable", "overloaded", "timeout"}


def free_endpoint() -> str:
    """A tcp endpoint where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


def first_then(client: ferrule.Client, endpoint: str) -> None:
    """Makes the next call go to endpoint first."""
    client.set_next(client.endpoints.index(endpoint))


def test_request_frames_and_body(scripted):
    b = scripted(lambda req, n: [ok(req, access_token="t", expires_at="2030-01-01T00:00:00Z",
                                     generation=4, refreshed=False)])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=3) as c:
        tok = c.token("acct:x", min_valid=120, require_scopes=["a", "b"], reject="old")
    req = b.requests[0]
    assert req["op"] == "token" and req["integration"] == "acct:x"
    assert req["min_valid"] == 120 and req["require_scopes"] == ["a", "b"] and req["reject"] == "old"
    assert re.fullmatch(r"[0-9a-f]{32}", req["rid"])
    assert 1 <= req["deadline_ms"] < 3000           # the attempt's time less a margin
    assert tok.generation == 4 and tok.refreshed is False
    assert tok.expires_at.year == 2030 and tok.expires_at.tzinfo is not None


def test_token_carries_the_api_base_url_when_the_reply_has_one(scripted):
    base = {"access_token": "t", "expires_at": "2030-01-01T00:00:00Z", "generation": 2, "refreshed": False}
    replies = {"acct:sf": dict(base, api_base_url="https://acme.my.salesforce.com"), "acct:box": dict(base)}
    b = scripted(lambda req, n: [ok(req, **replies[req["integration"]])])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=3) as c:
        with_base = c.token("acct:sf")
        without = c.token("acct:box")
    assert with_base.api_base_url == "https://acme.my.salesforce.com"
    assert "acme.my.salesforce.com" in repr(with_base)           # not a secret: shown
    assert without.api_base_url is None


def test_token_reply_with_a_bad_api_base_url_is_malformed(scripted):
    a = scripted(lambda req, n: [ok(req, access_token="t", expires_at="2030-01-01T00:00:00Z", generation=1,
                                    refreshed=False, api_base_url=3)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Internal, match="api_base_url"):
            c.token("acct:x")


def test_import_sends_the_api_base_url(scripted):
    b = scripted(lambda req, n: [ok(req, integration={"id": req["integration"],
                                                      "api_base_url": req.get("api_base_url")})])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=3) as c:
        i = c.import_tokens("acct:sf", "salesforce", "rt", api_base_url="https://acme.my.salesforce.com")
        c.import_tokens("acct:box", "box", "rt")
    assert b.requests[0]["api_base_url"] == "https://acme.my.salesforce.com"
    assert i["api_base_url"] == "https://acme.my.salesforce.com"
    assert "api_base_url" not in b.requests[1]


def test_token_value_is_not_in_repr(scripted):
    b = scripted(lambda req, n: [ok(req, access_token="SECRET-AT-123", expires_at="2030-01-01T00:00:00Z",
                                     generation=1, refreshed=True)])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=3) as c:
        tok = c.token("acct:x")
    assert tok.access_token == "SECRET-AT-123"
    assert "SECRET-AT-123" not in repr(tok) and "SECRET-AT-123" not in str(tok)
    assert tok.authorization == "Bearer SECRET-AT-123"


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_error_code_raises_its_class(scripted, code):
    b = scripted(lambda req, n: [fail(req, code, retry_after=0, detail={"provider": "p"})])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=5) as c:
        with pytest.raises(ERRORS[code]) as info:
            c.status("acct:x")
    e = info.value
    assert e.code == code and e.retry_after == 0 and e.detail == {"provider": "p"}
    assert e.rid == b.requests[-1]["rid"]              # the answering attempt's, as logged
    # retryable answers are retried (one broker: 2 attempts, the second as RID.2), the others
    # are final
    rid = b.requests[0]["rid"]
    assert [r["rid"] for r in b.requests] == ([rid, rid + ".2"] if code in RETRYABLE else [rid])


def test_provider_unavailable_carries_retry_after(scripted):
    b = scripted(lambda req, n: [fail(req, "provider_unavailable", retry_after=30)])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.ProviderUnavailable) as info:
            c.token("acct:x")
    assert info.value.retry_after == 30
    assert len(b.requests) == 1                     # a provider error is final


def test_idempotent_call_moves_to_the_next_broker_on_unavailable(scripted):
    a = scripted(lambda req, n: [fail(req, "unavailable")])
    b = scripted(lambda req, n: [ok(req, integration={"id": req["integration"]})])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=5) as c:
        first_then(c, a.endpoint)
        assert c.status("acct:x")["id"] == "acct:x"
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert b.requests[0]["rid"] == a.requests[0]["rid"] + ".2"


@pytest.mark.parametrize("op", ["events", "webhooks"])
def test_reads_of_events_and_webhooks_are_retried_like_status(scripted, op):
    # what ferrulectl retries (docs/ferrulectl.md, "Retries"): the generic call() does too
    a = scripted(lambda req, n: [fail(req, "unavailable")])
    b = scripted(lambda req, n: [ok(req, events=[])])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=5) as c:
        first_then(c, a.endpoint)
        c.call(op, {})
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert b.requests[0]["rid"] == a.requests[0]["rid"] + ".2"


def test_pause_after_a_retryable_answer_honours_retry_after(scripted):
    a = scripted(lambda req, n: [fail(req, "overloaded", retry_after=1)] if n == 1 else [ok(req, service="ferrule")])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=5) as c:
        c.ping()
    assert len(a.requests) == 2
    assert a.received_at[1] - a.received_at[0] >= 1.0      # a lower bound: the client waited


def test_retry_after_longer_than_the_timeout_answers_the_error_at_once(scripted):
    a = scripted(lambda req, n: [fail(req, "overloaded", retry_after=60)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=2) as c:
        with pytest.raises(ferrule.Overloaded) as info:
            c.ping()
    assert info.value.retry_after == 60 and len(a.requests) == 1


def test_non_idempotent_call_is_sent_once(scripted):
    a = scripted(lambda req, n: [fail(req, "unavailable")])
    b = scripted(lambda req, n: [ok(req, integration={})])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=5) as c:
        first_then(c, a.endpoint)
        with pytest.raises(ferrule.Unavailable):
            c.import_tokens("acct:x", "fakebox", "rt")
    assert len(a.requests) == 1 and len(b.requests) == 0


def test_non_idempotent_call_without_answer_says_the_outcome_is_unknown(scripted):
    a = scripted(lambda req, n: None)
    b = scripted(lambda req, n: [ok(req)])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=1) as c:
        first_then(c, a.endpoint)
        with pytest.raises(ferrule.Timeout) as info:
            c.refresh("acct:x")
    assert "outcome" in info.value.message and "unknown" in info.value.message
    assert "status" in info.value.hint
    assert len(a.requests) == 1 and len(b.requests) == 0


def test_change_without_any_answer_keeps_its_wording(scripted):
    a = scripted(lambda req, n: None)
    with ferrule.Client(a.endpoint, plaintext=True, timeout=1) as c:
        with pytest.raises(ferrule.Timeout) as info:
            c.refresh("acct:x")
    assert info.value.message.endswith("the outcome of the \"refresh\" request is unknown")
    assert info.value.hint == ("the request may have been carried out: check client.status(\"acct:x\") "
                               "before retrying")


SERVICE_TIMEOUT = "worker \"w1\" did not answer within the deadline"


@pytest.mark.parametrize("op, call", [
    ("refresh", lambda c: c.refresh("acct:x")),
    ("import", lambda c: c.import_tokens("acct:x", "fakebox", "rt")),
    ("disconnect", lambda c: c.disconnect("acct:x")),
])
def test_change_the_service_timed_out_says_the_outcome_is_unknown(scripted, op, call):
    # the deadline sent makes the broker's "timeout" arrive before the client's own: it was
    # raised as it came, its hint saying to retry ("raise --timeout", a ferrulectl flag)
    a = scripted(lambda req, n: [fail(req, "timeout", SERVICE_TIMEOUT,
                                      hint="no answer within the deadline; retry, or raise --timeout")])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Timeout) as info:
            call(c)
    e = info.value
    assert e.code == "timeout" and e.rid == a.requests[0]["rid"]
    assert e.message == f"{SERVICE_TIMEOUT}: the outcome of the \"{op}\" request is unknown"
    assert e.hint == ("the request may have been carried out: check client.status(\"acct:x\") "
                      "before retrying")
    assert "--" not in e.hint
    assert len(a.requests) == 1


def test_change_without_an_integration_the_service_timed_out(scripted):
    a = scripted(lambda req, n: [fail(req, "timeout", SERVICE_TIMEOUT)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Timeout) as info:
            c.call("webhook_test", {"endpoint": "app"})
    assert "the outcome of the \"webhook_test\" request is unknown" in info.value.message
    assert info.value.hint == ("the request may have been carried out: check the service's state "
                               "before retrying")


def test_read_the_service_timed_out_keeps_its_wording(scripted):
    a = scripted(lambda req, n: [fail(req, "timeout", SERVICE_TIMEOUT, hint="retry")])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Timeout) as info:
            c.status("acct:x")
    assert (info.value.message, info.value.hint) == (SERVICE_TIMEOUT, "retry")
    assert len(a.requests) == 2


@pytest.mark.parametrize("method, key, bad", [
    ("status", "integration", ["not", "a", "map"]),
    ("history", "chain", {"not": "a list"}),
    ("doctor", "diagnosis", "not a map"),
    ("import_tokens", "integration", 7),
])
def test_success_reply_without_its_key_is_malformed(scripted, method, key, bad):
    # a success without the key the protocol promises raised KeyError, not a FerruleError
    for fields in ({}, {key: bad}):
        a = scripted(lambda req, n: [ok(req, **fields)])
        with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
            args = ("acct:x", "fakebox", "rt") if method == "import_tokens" else ("acct:x",)
            with pytest.raises(ferrule.Internal) as info:
                getattr(c, method)(*args)
        assert f"\"{key}\"" in info.value.message
        assert info.value.code == "internal" and info.value.rid == a.requests[0]["rid"]
        # the request was fine: not "fix the request"; an import may have been carried out
        assert not isinstance(info.value, ferrule.RequestError)
        assert ("outcome" in info.value.message) == (method == "import_tokens")


def test_idempotent_call_goes_to_another_broker_when_one_is_silent(scripted):
    a = scripted(lambda req, n: None)                      # connected, never answers
    b = scripted(lambda req, n: [ok(req, service="ferrule")])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=4) as c:
        first_then(c, a.endpoint)
        assert c.ping()["service"] == "ferrule"
    assert len(a.requests) == 1 and len(b.requests) == 1


def test_retry_goes_to_another_broker_while_other_threads_send(scripted):
    # as above, with a second thread's call 0.3 s in: it moves the client's round robin (to A,
    # after its own request went to B), and the first call's retry went back to the silent A
    # instead of the broker after the one it tried
    a = scripted(lambda req, n: None)
    b = scripted(lambda req, n: [ok(req, service="ferrule")])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=4) as c:
        first_then(c, a.endpoint)
        other: list[str] = []

        def meanwhile() -> None:
            time.sleep(0.3)
            other.append(c.ping()["service"])
        t = threading.Thread(target=meanwhile)
        t.start()
        try:
            assert c.ping()["service"] == "ferrule"
        finally:
            t.join()
    assert other == ["ferrule"]
    assert len(a.requests) == 1 and len(b.requests) == 2


def test_idempotent_call_times_out_after_its_attempts(scripted):
    a = scripted(lambda req, n: None)
    with ferrule.Client(a.endpoint, plaintext=True, timeout=1.2) as c:
        with pytest.raises(ferrule.Timeout) as info:
            c.token("acct:x")
    assert "2 attempts" in info.value.message
    assert len(a.requests) == 2


def test_late_reply_to_an_earlier_attempt_is_accepted(scripted):
    # the first broker answers after its attempt (2 s of 4) gave up; the second never answers
    a = scripted(lambda req, n: [("delay", 2.5, ok(req, service="late"))])
    b = scripted(lambda req, n: None)
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=4) as c:
        first_then(c, a.endpoint)
        assert c.ping()["service"] == "late"
    assert len(b.requests) == 1


def test_late_retryable_error_does_not_end_the_call(scripted):
    # attempt 1 (A, 1 s of 2) gets no answer in time; attempt 2 goes to B, which answers at
    # about 1.5 s. A's late "timeout" at about 1.2 s answers an attempt given up on: it must not
    # end the call (it did: the last attempt took it for its own answer)
    a = scripted(lambda req, n: [("delay", 1.2, fail(req, "timeout", "A gave up late"))])
    b = scripted(lambda req, n: [("delay", 0.5, ok(req, service="B"))])
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=2) as c:
        first_then(c, a.endpoint)
        reply = c.ping()
    assert reply["service"] == "B"
    assert len(a.requests) == 1 and len(b.requests) == 1
    rid = a.requests[0]["rid"]
    assert b.requests[0]["rid"] == rid + ".2"        # each retry says which attempt it is
    assert reply["rid"].split(".")[0] == rid


def test_late_retryable_error_is_the_answer_when_nothing_better_comes(scripted):
    # as above with B silent: the answer is A's late error, not a timeout of the client's own
    a = scripted(lambda req, n: [("delay", 1.2, fail(req, "timeout", "A gave up late"))])
    b = scripted(lambda req, n: None)
    with ferrule.Client([a.endpoint, b.endpoint], plaintext=True, timeout=2) as c:
        first_then(c, a.endpoint)
        with pytest.raises(ferrule.Timeout) as info:
            c.ping()
    assert info.value.message == "A gave up late"
    assert info.value.rid == a.requests[0]["rid"]
    assert b.requests[0]["rid"] == a.requests[0]["rid"] + ".2"


def test_late_retryable_error_in_the_pause_does_not_end_the_call(scripted):
    # attempt 1 (A, 1 s of 3) gets no answer in time; B answers "unavailable" at once and asks
    # for a 1 s pause, during which A's late "timeout" comes; attempt 3 (C) answers
    a = scripted(lambda req, n: [("delay", 1.3, fail(req, "timeout", "A gave up late"))])
    b = scripted(lambda req, n: [fail(req, "unavailable", retry_after=1)])
    c3 = scripted(lambda req, n: [ok(req, service="C")])
    with ferrule.Client([a.endpoint, b.endpoint, c3.endpoint], plaintext=True, timeout=3) as c:
        first_then(c, a.endpoint)
        assert c.ping()["service"] == "C"
    rid = a.requests[0]["rid"]
    assert [r["rid"] for r in b.requests + c3.requests] == [rid + ".2", rid + ".3"]


def test_dead_endpoint_in_the_list_is_skipped(scripted):
    b = scripted(lambda req, n: [ok(req, service="ferrule")])
    dead = free_endpoint()
    with ferrule.Client([dead, b.endpoint], plaintext=True, timeout=3) as c:
        first_then(c, dead)
        assert c.ping()["service"] == "ferrule"
        # not idempotent: still sent once, to the connected broker
        assert c.call("disconnect", {"integration": "a:b"})["ok"] is True


def test_no_broker_at_all_is_unavailable_and_nothing_is_sent():
    dead = [free_endpoint(), free_endpoint()]
    with ferrule.Client(dead, plaintext=True, timeout=5) as c:
        with pytest.raises(ferrule.Unavailable) as info:
            c.import_tokens("acct:x", "fakebox", "rt")
    assert "not sent" in info.value.message and "2 brokers" in info.value.message


def test_stale_replies_are_dropped(scripted):
    def handler(req, n):
        stale = dict(ok(req, service="stale"), rid="0" * 32)
        return [stale, ok(req, service="mine")]
    a = scripted(handler)
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        assert c.ping()["service"] == "mine"


@pytest.mark.parametrize("frames,exc", [
    ([b"", b"FRL1"], ferrule.Internal),
    ([b"x", b"FRL1", b"\x80"], ferrule.Internal),
    ([b"", b"FRL9", b"\x80"], ferrule.UnsupportedVersion),
    ([b"", b"FRL1", b"\xc1not msgpack"], ferrule.Internal),
    ([b"", b"FRL1", b"\x93\x01\x02\x03"], ferrule.Internal),     # an array, not a map
])
def test_malformed_reply_answers_the_request_in_flight(scripted, frames, exc):
    # an unreadable reply is the service's fault, not the request's (it was MalformedFrame, a
    # RequestError: "fix the request"), and a change it answers may have been carried out
    a = scripted(lambda req, n: [frames])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(exc) as info:
            c.call("disconnect", {"integration": "a:b"})
        if exc is ferrule.Internal:
            assert "outcome" in info.value.message and "unknown" in info.value.message
            assert "check" in info.value.hint
            with pytest.raises(ferrule.Internal) as read:     # a read: no outcome to tell
                c.status("a:b")
            assert "outcome" not in read.value.message
    assert a.endpoint in info.value.message


def test_error_without_rid_answers_the_request_in_flight(scripted):
    a = scripted(lambda req, n: [fail(None, "malformed_frame", "wrong frame count")])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.MalformedFrame) as info:
            c.call("disconnect", {"integration": "a:b"})
    assert info.value.message == "wrong frame count"


def test_late_error_without_rid_is_not_the_next_calls(scripted):
    """A broker that could not read call 1's request answers it, after call 1 gave up, without a
    rid. Call 2 now waits on the same socket: the error may be call 1's, so it is not call 2's."""
    a = scripted(lambda req, n: [("delay", 0.3, fail(None, "too_large", "body holds more than 16384 objects"))]
                 if n == 1 else [("delay", 0.5, ok(req))])
    with ferrule.Client(a.endpoint, plaintext=True) as c:
        with pytest.raises(ferrule.Timeout):
            c.call("refresh", {"integration": "a:b"}, timeout=0.2)
        started = time.monotonic()
        assert c.call("refresh", {"integration": "a:b"}, timeout=2)["ok"] is True
        assert time.monotonic() - started >= 0.45


def test_error_without_rid_answers_the_retry_in_flight(scripted):
    # attempt 2 (sent as RID.2) meets a retryable error without a rid: it is the live attempt's
    # answer, final as the last attempt's, not a late one kept while the attempt waits on
    a = scripted(lambda req, n: None if n == 1 else [fail(None, "unavailable", "no worker")])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=4) as c:
        started = time.monotonic()
        with pytest.raises(ferrule.Unavailable) as info:
            c.ping()
        elapsed = time.monotonic() - started
    assert info.value.message == "no worker" and info.value.rid == a.requests[0]["rid"]
    assert a.requests[1]["rid"] == a.requests[0]["rid"] + ".2"
    assert elapsed < 3.5                             # attempt 2 started at 2 s and ended at once


def test_too_large_request_is_refused_before_sending(scripted):
    a = scripted(lambda req, n: [ok(req)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.TooLarge):
            c.import_tokens("acct:x", "fakebox", "r" * (64 * 1024 + 1))
        with pytest.raises(ferrule.TooLarge):
            c.import_tokens("acct:x", "fakebox", "rt", scopes=["s" * 60000] * 5)
    assert a.requests == []


@pytest.mark.parametrize("op, args, error, match", [
    ("status", {"integration": "acct:x", "k" * 65: "x"}, ferrule.TooLarge, "map key .* 65 bytes"),
    ("token", {"integration": "acct:x", "require_scopes": ["s"] * 16385}, ferrule.TooLarge, "16384"),
    ("status", {"integration": "acct:x", 1: "x"}, TypeError, "not a str"),
    ("status", {"integration": "acct:x", "nested": {b"k": "x"}}, TypeError, "not a str"),
    ("import", {"integration": "acct:x", "blob": b"x" * 70000}, ferrule.TooLarge, "65536"),
    ("status", {"integration": "acct:x", "deep": [[[[[[[[1]]]]]]]]}, ferrule.TooLarge, "nest"),
], ids=["key_65_bytes", "16385_scopes", "int_key", "bytes_key", "bytes_70000", "depth_9"])
def test_request_over_the_other_limits_is_refused_before_sending(scripted, op, args, error, match):
    """The broker cannot read a body over its limits, so it could not echo the rid (its error
    would answer whichever call is in flight): such a request is refused here, not sent."""
    a = scripted(lambda req, n: [ok(req)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(error, match=match):
            c.call(op, args)
        if op == "token":                           # the same through the method
            with pytest.raises(error, match=match):
                c.token("acct:x", require_scopes=args["require_scopes"])
    assert a.requests == []


def test_request_at_the_limits_is_sent(scripted):
    """Exactly the broker's limits (common/codec.c): a 64-byte key, a scalar inside the eighth
    level of nesting, 16384 objects in the whole body (its root, op, rid and deadline_ms
    included)."""
    a = scripted(lambda req, n: [ok(req)])
    # root 1, op/rid/deadline_ms 6, integration 2, the 64-byte key 1, seven arrays and "deep" 8,
    # "list" and its array 2: 20 objects before the list's items
    args = {"integration": "acct:x", "k" * 64: [[[[[[["deep"]]]]]]], "list": [0] * (16384 - 20)}
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        assert c.call("status", args)["ok"] is True
        args["list"].append(0)
        with pytest.raises(ferrule.TooLarge, match="16384"):
            c.call("status", args)
    assert len(a.requests) == 1 and a.requests[0]["k" * 64] == [[[[[[["deep"]]]]]]]


def test_many_threads_share_one_client(scripted):
    """Requests from many threads are in flight at once; replies come back in another order and
    each reaches its own caller."""
    lock = threading.Lock()
    held: list[dict] = []

    def handler(req, n):
        with lock:
            held.append(req)
            if len(held) < 8:
                return None
            batch = list(reversed(held))
            held.clear()
        return [ok(r, integration={"id": r["integration"]}) for r in batch]
    a = scripted(handler)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    with ferrule.Client(a.endpoint, plaintext=True, timeout=10) as c:
        def run(i: int) -> None:
            try:
                results[i] = c.status(f"acct:{i}")["id"]
            except BaseException as e:           # reported below
                errors.append(e)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert results == {i: f"acct:{i}" for i in range(64)}
    assert len(a.requests) == 64                 # nothing was retried: all were in flight at once


@pytest.mark.parametrize("timeout", [0, -1, 0.0004, 301, 3600, float("inf")])
def test_a_timeout_out_of_range_is_refused(scripted, timeout):
    # a timeout of 0 or less (a budget already spent) was made 1 ms, and the call then said
    # "could not connect to broker" of a broker that runs; one over 300 s was cut to 300 s
    a = scripted(lambda req, n: [ok(req, service="ferrule")])
    with pytest.raises(ValueError, match="timeout must be from 0.001 to 300 seconds"):
        ferrule.Client(a.endpoint, plaintext=True, timeout=timeout)
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ValueError, match="timeout must be from 0.001 to 300 seconds"):
            c.ping(timeout=timeout)
        assert c.ping(timeout=300)["service"] == "ferrule"
    assert a.requests == [a.requests[0]]                    # nothing was sent but the last ping


def test_closed_client_refuses_calls(scripted):
    a = scripted(lambda req, n: [ok(req)])
    c = ferrule.Client(a.endpoint, plaintext=True)
    c.close()
    c.close()                                    # twice is fine
    with pytest.raises(RuntimeError):
        c.ping()


@pytest.mark.parametrize("brokers,reason", [
    ("", "no broker endpoint"),
    ("tcp://a:1,,tcp://b:2", "empty entry"),
    ("tcp://host", "tcp://HOST:PORT"),
    ("tcp://host:0", "tcp://HOST:PORT"),
    ("tcp://host:70000", "tcp://HOST:PORT"),
    ("http://host:80", "neither"),
    ("tcp://a:1,tcp://a:1", "listed twice"),
    (",".join(f"tcp://h:{i + 1}" for i in range(17)), "too many"),
    ("tcp://ho st:1", "space"),
    ("ipc:///tmp/" + "p" * 103, "the limit is 107"),       # more than a Unix socket address holds
])
def test_bad_broker_lists_are_refused(brokers, reason):
    with pytest.raises(ValueError, match=reason):
        ferrule.Client(brokers, plaintext=True)


def test_environment_names_the_default_brokers(monkeypatch, scripted):
    a = scripted(lambda req, n: [ok(req, service="ferrule")])
    monkeypatch.setenv("FERRULE_BROKER_URL", a.endpoint)
    with ferrule.Client(plaintext=True, timeout=3) as c:
        assert c.endpoints == [a.endpoint]
        assert c.ping()["service"] == "ferrule"


def test_callback_url_is_split_into_its_parameters(scripted):
    a = scripted(lambda req, n: [ok(req, integration={}, reconnected=False)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        c.callback("https://app.example/cb?code=C0DE&state=ST%41TE&x=1")
        with pytest.raises(ValueError, match="state"):
            c.callback("https://app.example/cb?code=C0DE")
        with pytest.raises(ValueError, match="twice"):
            c.callback("https://app.example/cb?code=a&state=b&state=c")
        with pytest.raises(ValueError):
            c.callback("ftp://app.example/cb?code=a&state=b")
    req = a.requests[0]
    assert (req["op"], req["state"], req["code"]) == ("callback", "STATE", "C0DE")
    assert "integration" not in req and "x" not in req
    assert len(a.requests) == 1


def test_calls_do_not_wait_for_each_other(scripted):
    """A call that waits for its answer does not hold up the others on the same client: the
    broker answers the doctor request only once a later status request arrived."""
    held: list[dict] = []

    def handler(req, n):
        if req["op"] == "doctor":
            held.append(req)
            return None
        if req["op"] == "status":
            return [ok(held[0], service="slow"), ok(req, service="release")]
        return [ok(req, service="fast")]
    a = scripted(handler)
    with ferrule.Client(a.endpoint, plaintext=True, timeout=20) as c:
        done: list[str] = []
        slow = threading.Thread(target=lambda: done.append(c.call("doctor", {"integration": "a:b"})["service"]))
        slow.start()
        while not held:
            time.sleep(0.01)
        done.append(c.ping()["service"])
        assert done == ["fast"]
        assert c.call("status", {"integration": "a:b"})["service"] == "release"
        slow.join()
    assert done == ["fast", "slow"]


def test_a_dropped_client_stops_its_thread(scripted):
    import gc
    a = scripted(lambda req, n: [ok(req, service="ferrule")])
    before = {t for t in threading.enumerate() if t.name == "ferrule-io"}
    c = ferrule.Client(a.endpoint, plaintext=True, timeout=3)
    assert c.ping()["service"] == "ferrule"
    thread = next(t for t in threading.enumerate() if t.name == "ferrule-io" and t not in before)
    del c
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_closing_the_client_answers_the_calls_in_flight(scripted):
    a = scripted(lambda req, n: None)                       # never answers
    c = ferrule.Client(a.endpoint, plaintext=True, timeout=30)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            c.ping()
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    while not a.requests:
        time.sleep(0.01)
    c.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ferrule.Unavailable)
    assert "closed" in errors[0].message


def test_a_client_used_in_a_forked_child_says_so_at_once(scripted):
    # a client made before os.fork (a module-level one under gunicorn --preload or a
    # multiprocessing pool) has no I/O thread in the child: a call there waited for ever,
    # whatever its timeout, and did not say why
    import os
    import select
    import signal
    a = scripted(lambda req, n: [ok(req, service="ferrule")])
    c = ferrule.Client(a.endpoint, plaintext=True, timeout=1)
    assert c.ping()["service"] == "ferrule"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                            # the child: report and leave
        os.close(r)
        try:
            c.ping()
            outcome = "answered"
        except BaseException as e:
            kind = "RuntimeError" if isinstance(e, RuntimeError) else type(e).__name__
            outcome = f"{kind}: {e}"
        os.write(w, outcome.encode()[:1000])
        os._exit(0)
    os.close(w)
    ready: list[int] = []
    try:
        ready, _, _ = select.select([r], [], [], 30)
        outcome = os.read(r, 1000).decode() if ready else None
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert outcome is not None, "a call in a forked child did not return in 30 s (its timeout is 1 s)"
    assert outcome.startswith("RuntimeError") and "fork" in outcome, outcome
    assert c.ping()["service"] == "ferrule"                 # the parent's client still works
    c.close()


def test_closing_the_client_leaves_a_change_in_flight_of_unknown_outcome(scripted):
    # a refresh (sent once: not safe to resend) that was sent when close() came raised
    # Unavailable, which says "not carried out, send it again": the broker may have done it
    a = scripted(lambda req, n: None)                       # never answers
    c = ferrule.Client(a.endpoint, plaintext=True, timeout=30)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            c.refresh("acct:x")
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    while not a.requests:
        time.sleep(0.01)
    c.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ferrule.Timeout), repr(errors[0])
    assert "closed" in errors[0].message and "outcome" in errors[0].message
    assert "unknown" in errors[0].message and "check" in (errors[0].hint or "")


def _break_the_io_thread(c: ferrule.Client) -> None:
    def broken(*args, **kwargs):
        raise ValueError("a bug in the I/O thread")
    c._transport._deliver = broken                          # the next reply makes it fail


def test_a_failed_io_thread_leaves_a_change_it_sent_of_unknown_outcome(scripted):
    a = scripted(lambda req, n: [ok(req, access_token="t", expires_at="2030-01-01T00:00:00Z",
                                    generation=1, refreshed=True)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=10) as c:
        _break_the_io_thread(c)
        with pytest.raises(ferrule.Timeout) as info:
            c.refresh("acct:x")
        assert "outcome" in info.value.message and "unknown" in info.value.message
        assert "I/O thread" in info.value.message
    # a read is safe to send again: still Internal
    b = scripted(lambda req, n: [ok(req, service="ferrule")])
    with ferrule.Client(b.endpoint, plaintext=True, timeout=10) as c:
        _break_the_io_thread(c)
        with pytest.raises(ferrule.Internal):
            c.ping()


def test_closing_the_client_between_two_attempts_of_a_read_raises_unavailable(scripted):
    # send() of the second attempt met the closed client and raised a bare RuntimeError
    a = scripted(lambda req, n: [fail(req, "unavailable", "not now")])
    c = ferrule.Client(a.endpoint, plaintext=True, timeout=10)
    transport = c._transport
    original = transport.send

    def close_first(call, attempt, *args):
        if attempt == 2:
            transport.close()
        return original(call, attempt, *args)
    transport.send = close_first
    with pytest.raises(ferrule.Unavailable) as info:
        c.ping()
    assert "closed" in info.value.message
    c.close()


def test_requests_auth_sends_a_pipe_body_once(scripted):
    # FerruleAuth called tell() on any body with tell and seek: a pipe's raises OSError (Illegal
    # seek), and the request was never sent; its docstring says such a body is sent, not retried
    import http.server
    import os
    import requests
    from ferrule.requests_auth import FerruleAuth
    received: list[bytes] = []

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                data = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    data += self.rfile.read(size)
                    self.rfile.readline()
            else:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(data)
            status = 401 if self.headers.get("Authorization") == "Bearer stale" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass
    tokens = iter(["fresh", "stale"])
    a = scripted(lambda req, n: [ok(req, access_token=next(tokens), expires_at="2099-01-01T00:00:00Z",
                                    generation=1, refreshed=False)])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with ferrule.Client(a.endpoint, plaintext=True, timeout=5) as c:
            for expected in (200, 401):               # a 401 is returned, not retried
                r, w = os.pipe()
                os.write(w, b"hello")
                os.close(w)
                with os.fdopen(r, "rb") as body:
                    response = requests.post(url, data=body, auth=FerruleAuth(c, "acct:x"), timeout=5)
                assert response.status_code == expected
                assert received[-1] == b"hello"
        assert len(received) == 2 and len(a.requests) == 2
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("missing", ["access_token", "expires_at", "generation", "refreshed"])
def test_token_reply_without_a_promised_key_is_malformed(scripted, missing):
    fields = {"access_token": "t", "expires_at": "2030-01-01T00:00:00Z", "generation": 3, "refreshed": False}
    del fields[missing]
    a = scripted(lambda req, n: [ok(req, **fields)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Internal, match=missing) as info:
            c.token("acct:x")
        assert "outcome" not in info.value.message
        with pytest.raises(ferrule.Internal, match=missing) as info:
            c.refresh("acct:x")                   # a change: it may have been carried out
        assert "outcome of the \"refresh\" request is unknown" in info.value.message
        assert "client.status(\"acct:x\")" in info.value.hint


def test_malformed_token_reply_keeps_no_token_in_the_error(scripted):
    # the exception carries the reply for its other keys; the token it held must not ride along
    # into a log line or a traceback's locals
    a = scripted(lambda req, n: [ok(req, access_token="tok-SECRET-1", expires_at="2030-01-01T00:00:00Z",
                                    generation="3", refreshed=False,
                                    integration={"refresh_token": "tok-SECRET-2", "status": "active"})])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Internal, match="generation") as info:
            c.token("acct:x")
    e = info.value
    assert "SECRET" not in repr(e.reply) and "SECRET" not in str(e) and "SECRET" not in repr(e)
    assert e.reply["access_token"] == "(hidden)" and e.reply["integration"]["refresh_token"] == "(hidden)"
    assert e.reply["generation"] == "3" and e.reply["integration"]["status"] == "active"


def test_token_reply_with_a_bad_time_is_malformed(scripted):
    a = scripted(lambda req, n: [ok(req, access_token="t", expires_at="tomorrow", generation=1, refreshed=True)])
    with ferrule.Client(a.endpoint, plaintext=True, timeout=3) as c:
        with pytest.raises(ferrule.Internal, match="RFC 3339"):
            c.token("acct:x")
