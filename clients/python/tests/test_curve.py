"""CURVE key plumbing: keys from text, bytes and files, checked and applied, and a request over
an encrypted link to a scripted CURVE broker."""
from __future__ import annotations

import os

import pytest
import zmq
import zmq.utils.z85

import ferrule
from ferrule.curve import CurveKeys, load_key

from conftest import ok


@pytest.fixture
def keyfiles(tmp_path):
    """A broker pair and a client pair, written as ferrulectl keygen writes them."""
    server_pub, server_sec = zmq.curve_keypair()
    client_pub, client_sec = zmq.curve_keypair()
    files = {}
    for name, key in (("broker.pub", server_pub), ("client.pub", client_pub), ("client.key", client_sec)):
        path = tmp_path / name
        path.write_bytes(key + b"\n")
        os.chmod(path, 0o600)
        files[name] = path
    return server_pub, server_sec, client_pub, client_sec, files


def test_keys_load_from_text_bytes_raw_and_files(keyfiles):
    server_pub, _, client_pub, client_sec, files = keyfiles
    assert load_key(server_pub.decode(), "k") == server_pub
    assert load_key(server_pub, "k") == server_pub
    assert load_key(zmq.utils.z85.decode(server_pub), "k") == server_pub
    assert load_key(files["broker.pub"], "k") == server_pub
    assert load_key(str(files["broker.pub"]), "k") == server_pub
    keys = CurveKeys.load(files["broker.pub"], files["client.key"], files["client.pub"])
    assert (keys.server_public, keys.client_public, keys.client_secret) == (server_pub, client_pub, client_sec)
    derived = CurveKeys.load(files["broker.pub"], files["client.key"])
    assert derived.client_public == client_pub           # the public key follows from the secret
    assert client_sec.decode() not in repr(keys)


def test_bad_keys_are_refused_without_showing_them(keyfiles, tmp_path):
    server_pub, _, _, client_sec, files = keyfiles
    other_pub, _ = zmq.curve_keypair()
    with pytest.raises(ValueError, match="does not belong"):
        CurveKeys.load(server_pub, client_sec, other_pub)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key at all\n")
    with pytest.raises(ValueError, match="does not hold") as info:
        CurveKeys.load(server_pub, bad)
    with pytest.raises(ValueError, match="could not read"):
        CurveKeys.load(tmp_path / "missing.pub")
    with pytest.raises(ValueError, match="without the broker's public key"):
        ferrule.Client("tcp://127.0.0.1:5555", client_secret_key=client_sec)
    with pytest.raises(ValueError, match="without its secret key"):
        CurveKeys.load(server_pub, None, other_pub)
    assert client_sec.decode() not in str(info.value)
    # a key mistyped (quoted, one character short, one too many) is read as a file's name: the
    # error must not quote it, as it is most of the secret
    for typo in ('"' + client_sec.decode() + '"', client_sec.decode()[:-1], client_sec.decode() + "x"):
        with pytest.raises(ValueError, match="could not read") as info:
            CurveKeys.load(server_pub, typo)
        assert client_sec.decode()[:20] not in str(info.value), str(info.value)
        assert "not shown" in str(info.value)
    # text of that length is never shown, even as a path: it could be a mistyped key
    path = "/tmp/" + "k" * 34                         # 39 characters, all of Z85's alphabet
    with pytest.raises(ValueError, match="could not read") as info:
        CurveKeys.load(server_pub, path)
    assert path not in str(info.value) and "not shown" in str(info.value)


def _key_starting_with(prefix: str) -> str:
    """A valid Z85 secret key (40 characters) that starts with prefix."""
    for _ in range(1000):
        _, secret = zmq.curve_keypair()
        text = prefix + secret.decode()[len(prefix):]
        try:
            zmq.utils.z85.decode(text.encode())
        except Exception:
            continue
        return text
    raise AssertionError("no key found")


def test_a_key_whose_folder_part_exists_is_a_key_and_never_shown(keyfiles, tmp_path, monkeypatch):
    # a key such as "./abc..." or "../abc..." with no later "/" (1 key in about 11,000) was read
    # as a path because its "folder" exists, and the error quoted it: the secret in the message
    server_pub, _, _, _, _ = keyfiles
    monkeypatch.chdir(tmp_path)
    for prefix in ("./", "../", "/tmp/"):
        key = _key_starting_with(prefix)
        keys = CurveKeys.load(server_pub, key)
        assert keys.client_secret == key.encode()
        assert keys.client_public == zmq.curve_public(key.encode())
    # as a pathlib.Path it is a path; its name, which could be a key, is never shown
    key = _key_starting_with("./")
    with pytest.raises(ValueError, match="could not read") as info:
        CurveKeys.load(server_pub, __import__("pathlib").Path(key))
    assert key[2:] not in str(info.value) and "not shown" in str(info.value)


def test_forty_z85_characters_are_a_key_even_when_they_look_like_a_path(keyfiles, tmp_path, monkeypatch):
    # any 40 characters of valid Z85 are a key (as text: a pathlib.Path is always a path); one
    # that also names an existing file is refused as ambiguous, naming neither
    server_pub, _, _, client_sec, _ = keyfiles
    path = "/tmp/" + "k" * 35
    assert len(path) == 40
    assert load_key(path, "k") == path.encode()
    monkeypatch.chdir(tmp_path)
    for name in ("k" * 36 + ".key", "k" * 36 + ".pub"):
        assert load_key(name, "k") == name.encode()
        (tmp_path / name).write_bytes(client_sec + b"\n")
        with pytest.raises(ValueError, match="both") as info:
            load_key(name, "client's secret key")
        assert name not in str(info.value)
        assert load_key(tmp_path / name, "k") == client_sec
    # a key holding "/" (a third of all keys do), even first, is still a key
    for key in ("0" * 20 + "/" + "0" * 19, "/" + "0" * 39):
        assert load_key(key, "k") == key.encode()


def test_forty_z85_characters_that_overflow_are_refused_as_a_value_error(tmp_path):
    # "#" is Z85's largest digit: five of them are over 2**32, which decoding raised as a bare
    # struct.error instead of saying what is wrong with the key
    text = "#" * 40
    with pytest.raises(ValueError, match="could not read") as info:
        load_key(text, "broker's public key")
    assert text not in str(info.value)
    with pytest.raises(ValueError, match="neither 40 characters of Z85"):
        load_key(text.encode(), "broker's public key")
    bad = tmp_path / "overflow.pub"
    bad.write_text(text + "\n")
    with pytest.raises(ValueError, match="does not hold"):
        load_key(bad, "broker's public key")


class AllowList:
    """A ZAP credentials provider for pyzmq's authenticator: admits the listed client keys."""

    def __init__(self, *keys: bytes) -> None:
        self.keys = set(keys)                          # Z85

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


@pytest.fixture
def zap():
    from zmq.auth.thread import ThreadAuthenticator
    auth = ThreadAuthenticator(zmq.Context.instance())
    auth.start()
    yield auth
    auth.stop()


def test_request_over_curve_presents_the_configured_client_key(scripted, keyfiles, zap):
    server_pub, server_sec, client_pub, _, files = keyfiles
    zap.configure_curve_callback("*", credentials_provider=AllowList(client_pub))
    b = scripted(lambda req, n: [ok(req, service="ferrule")], curve_secret_key=server_sec)
    with ferrule.Client(b.endpoint, timeout=5, server_public_key=files["broker.pub"],
                        client_secret_key=files["client.key"]) as c:
        assert c.ping()["service"] == "ferrule"
    assert len(b.requests) == 1
    assert b.user_ids == [client_pub.decode()]         # the broker authenticated this client's key


def test_unlisted_client_key_is_refused(scripted, keyfiles, zap):
    server_pub, server_sec, client_pub, _, files = keyfiles
    zap.configure_curve_callback("*", credentials_provider=AllowList(client_pub))
    b = scripted(lambda req, n: [ok(req, service="ferrule")], curve_secret_key=server_sec)
    with ferrule.Client(b.endpoint, timeout=2, server_public_key=server_pub) as c:   # a fresh pair
        # told as the broker's refusal of this key, as the C client tells it (it was "could not
        # connect to broker", "check that a broker is running")
        with pytest.raises(ferrule.Forbidden, match="refused this client's key"):
            c.ping()
    assert b.requests == []


def test_wrong_server_key_never_connects(scripted, keyfiles):
    _, server_sec, _, _, files = keyfiles
    wrong_pub, _ = zmq.curve_keypair()
    b = scripted(lambda req, n: [ok(req, service="ferrule")], curve_secret_key=server_sec)
    with ferrule.Client(b.endpoint, timeout=3, server_public_key=wrong_pub,
                        client_secret_key=files["client.key"]) as c:
        with pytest.raises(ferrule.Configuration, match="public key is wrong"):
            c.ping()
    assert b.requests == []


def test_an_idle_client_reads_its_handshake_failures_as_they_come(scripted, keyfiles):
    # the monitors' queues (unbounded, as libzmq must never block on them) were read only by
    # calls: a client with a wrong broker key that made none piled up ~10 events a second
    # forever. The I/O thread reads them as they come, and a call still says why it failed.
    _, server_sec, _, _, _ = keyfiles
    wrong_pub, _ = zmq.curve_keypair()
    b = scripted(lambda req, n: [ok(req, service="ferrule")], curve_secret_key=server_sec)
    with ferrule.Client(b.endpoint, timeout=2, server_public_key=wrong_pub) as c:
        import time
        deadline = time.monotonic() + 5
        while c._transport._refusals[0] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c._transport._refusals[0] == "configuration"      # read with no call made
        with pytest.raises(ferrule.Configuration):
            c.ping()
    assert b.requests == []


def test_plaintext_client_cannot_talk_to_a_curve_broker(scripted, keyfiles):
    _, server_sec, _, _, _ = keyfiles
    b = scripted(lambda req, n: [ok(req)], curve_secret_key=server_sec)
    with ferrule.Client(b.endpoint, timeout=2, plaintext=True) as c:
        with pytest.raises(ferrule.Configuration, match="same link security"):
            c.ping()
    assert b.requests == []


@pytest.fixture
def no_key_env(monkeypatch):
    """An environment without the key variables, whatever the shell that runs the tests has."""
    for name in ("FERRULE_CURVE_SECRET_KEY_FILE", "FERRULE_BROKER_PUBLIC_KEY_FILE", "FERRULE_ALLOW_PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_client_without_keys_refuses_plaintext(no_key_env):
    # it talked plaintext without a word, where ferrulectl and the C client refuse (exit 6)
    for allow in (None, "0", "yes"):
        if allow is not None:
            no_key_env.setenv("FERRULE_ALLOW_PLAINTEXT", allow)
        with pytest.raises(ferrule.Configuration, match="no CURVE key") as info:
            ferrule.Client("tcp://127.0.0.1:5555")
        assert "FERRULE_CURVE_SECRET_KEY_FILE" in info.value.hint and "plaintext=True" in info.value.hint
        assert info.value.exit_code == 6


def test_client_reads_the_key_files_the_environment_names(scripted, keyfiles, zap, no_key_env):
    server_pub, server_sec, client_pub, client_sec, files = keyfiles
    zap.configure_curve_callback("*", credentials_provider=AllowList(client_pub))
    b = scripted(lambda req, n: [ok(req, service="ferrule")], curve_secret_key=server_sec)
    no_key_env.setenv("FERRULE_CURVE_SECRET_KEY_FILE", str(files["client.key"]))
    no_key_env.setenv("FERRULE_BROKER_PUBLIC_KEY_FILE", str(files["broker.pub"]))
    no_key_env.setenv("FERRULE_ALLOW_PLAINTEXT", "1")      # the key files win, as in common/curve.c
    with ferrule.Client(b.endpoint, timeout=5) as c:
        assert c.ping()["service"] == "ferrule"
    assert b.user_ids == [client_pub.decode()]         # CURVE, with the key of the file named


def test_key_variables_name_files_only(keyfiles, tmp_path, no_key_env):
    server_pub, _, _, client_sec, files = keyfiles
    # a key in the variable is not a file's name: refused, and not shown
    no_key_env.setenv("FERRULE_CURVE_SECRET_KEY_FILE", client_sec.decode())
    no_key_env.setenv("FERRULE_BROKER_PUBLIC_KEY_FILE", str(files["broker.pub"]))
    with pytest.raises(ferrule.Configuration, match="could not read") as info:
        ferrule.Client("tcp://127.0.0.1:5555")
    assert client_sec.decode()[:20] not in str(info.value)
    no_key_env.setenv("FERRULE_CURVE_SECRET_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(ferrule.Configuration, match="FERRULE_CURVE_SECRET_KEY_FILE"):
        ferrule.Client("tcp://127.0.0.1:5555")
    # a secret key file without the brokers' key, even with FERRULE_ALLOW_PLAINTEXT=1
    no_key_env.setenv("FERRULE_CURVE_SECRET_KEY_FILE", str(files["client.key"]))
    no_key_env.delenv("FERRULE_BROKER_PUBLIC_KEY_FILE")
    no_key_env.setenv("FERRULE_ALLOW_PLAINTEXT", "1")
    with pytest.raises(ferrule.Configuration, match="FERRULE_BROKER_PUBLIC_KEY_FILE is not"):
        ferrule.Client("tcp://127.0.0.1:5555")


def test_plaintext_is_asked_for(scripted, no_key_env):
    b = scripted(lambda req, n: [ok(req, service="ferrule")])
    with ferrule.Client(b.endpoint, timeout=3, plaintext=True) as c:
        assert c.ping()["service"] == "ferrule"
    no_key_env.setenv("FERRULE_ALLOW_PLAINTEXT", "1")
    with ferrule.Client(b.endpoint, timeout=3) as c:
        assert c.ping()["service"] == "ferrule"
    with pytest.raises(ValueError, match="plaintext=True was given with CURVE keys"):
        ferrule.Client(b.endpoint, plaintext=True, server_public_key=zmq.curve_keypair()[0])


def test_the_package_docstring_example_runs(keyfiles, no_key_env, tmp_path):
    # its example made a client with neither keys nor plaintext=True, which raises Configuration
    # since the client talks plaintext only when asked
    import textwrap
    from datetime import datetime, timezone
    doc = ferrule.__doc__ or ""
    lines = doc.split("\n\n")[1]                       # the indented example after the first line
    example = textwrap.dedent(lines)
    assert "ferrule.Client(" in example
    example = example.replace("/etc/ferrule/keys/", str(tmp_path) + "/")
    (tmp_path / "billing.key").write_bytes((tmp_path / "client.key").read_bytes())
    token = ferrule.Token(access_token="t", expires_at=datetime(2099, 1, 1, tzinfo=timezone.utc),
                          generation=1, refreshed=False)
    no_key_env.setattr(ferrule.Client, "token", lambda self, *a, **k: token)
    exec(compile(example, "ferrule.__doc__", "exec"), {})
