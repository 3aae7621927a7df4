"""CURVE keys: the one place where the client's key material is read and applied.

A broker that runs with CURVE has a key pair; clients need its public key, and a key pair of
their own, whose public key the broker's allow-list names. Keys are Z85 text (40 characters),
one per file, as ``ferrulectl keygen`` writes them (``NAME.pub``, ``NAME.key``); a trailing
newline or spaces around the key are fine.

Each key may be given as the Z85 text (``str`` or ``bytes`` of 40 characters), as the 32 raw
bytes, or as a path to its file (``os.PathLike``, or a ``str`` that is not a 40-character key).
A ``str`` of 40 valid Z85 characters is always the key, even when it looks like a path (a key
may hold "/" and "."); give such a path as a ``pathlib.Path``. Error messages never show text
that could be a key, even as a file's name.

Without key arguments the client reads its keys as ferrulectl and the C client do
(common/curve.c): the files named by ``FERRULE_CURVE_SECRET_KEY_FILE`` and
``FERRULE_BROKER_PUBLIC_KEY_FILE`` (paths only, never a key in the variable itself). Plaintext
needs ``plaintext=True``, or ``FERRULE_ALLOW_PLAINTEXT=1`` with no secret key file set;
otherwise ``ferrule.Configuration`` is raised.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, Union

import zmq
import zmq.utils.z85

from .errors import Configuration

KeySource = Union[str, bytes, "os.PathLike[str]"]

Z85_KEY_LEN = 40          # characters of a Z85-encoded 32-byte key
RAW_KEY_LEN = 32
MAX_KEY_FILE = 4096       # a key file is 40 characters and a newline; refuse anything large

ENV_SECRET_KEY_FILE = "FERRULE_CURVE_SECRET_KEY_FILE"
ENV_BROKER_KEY_FILE = "FERRULE_BROKER_PUBLIC_KEY_FILE"
ENV_ALLOW_PLAINTEXT = "FERRULE_ALLOW_PLAINTEXT"


def _looks_z85(text: bytes) -> bool:
    if len(text) != Z85_KEY_LEN:
        return False
    try:
        zmq.utils.z85.decode(text)  # type: ignore[no-untyped-call]
    except (ValueError, KeyError, TypeError, struct.error):
        # struct.error: five characters whose value passes 2**32 (libzmq refuses them too)
        return False
    return True


_Z85_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _could_be_a_key(text: str) -> bool:
    """True when text, stripped of spaces and quotes, is 36 to 44 characters of Z85's alphabet: a
    key, or a key mistyped (quoted, a character short or over). Such text is never shown."""
    text = text.strip().strip("'\"")
    return Z85_KEY_LEN - 4 <= len(text) <= Z85_KEY_LEN + 4 and all(c in _Z85_ALPHABET for c in text)


def _shown_path(source: "str | os.PathLike[str]") -> str:
    """How an error names a key's file: its path, unless that text could be a key or a mistyped
    one (whether given as a str or a path object), which the error would then show."""
    path = os.fspath(source)
    if _could_be_a_key(path):
        return "the text given (not shown: it could be a key)"
    return f"\"{path}\""


def load_key(source: KeySource, what: str) -> bytes:
    """The key as 40 bytes of Z85. ``what`` names it in error messages (never its value). A
    ``str`` that is 40 characters of valid Z85 (spaces around it aside) is the key itself, whatever
    it looks like; one that also names an existing file is refused as ambiguous. Any other ``str``,
    and an ``os.PathLike``, is the path of the key's file."""
    if isinstance(source, bytes):
        if len(source) == RAW_KEY_LEN:
            return bytes(zmq.utils.z85.encode(source))  # type: ignore[no-untyped-call]
        if _looks_z85(source.strip()):
            return source.strip()
        raise ValueError(f"the {what} is neither 40 characters of Z85 nor 32 raw bytes")
    if isinstance(source, str) and _looks_z85(source.strip().encode("ascii", "replace")):
        if os.path.isfile(source) or os.path.isfile(source.strip()):
            raise ValueError(f"the {what} given is both 40 characters of Z85 and the name of an "
                             f"existing file (neither shown): give the key as bytes, or the file "
                             f"as a pathlib.Path")
        return source.strip().encode("ascii")
    if isinstance(source, (str, os.PathLike)):
        return read_key_file(source, what)
    raise TypeError(f"the {what} must be a str, bytes or a path, not {type(source).__name__}")


def read_key_file(source: "str | os.PathLike[str]", what: str) -> bytes:
    """The key held by the file source, as 40 bytes of Z85; ValueError saying why not."""
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise ValueError(f"could not read the {what} from {_shown_path(source)}: {e.strerror}; it "
                         f"is neither a key of 40 Z85 characters nor the name of a file") from None
    if len(data) > MAX_KEY_FILE or not _looks_z85(data.strip()):
        raise ValueError(f"the file {_shown_path(source)} does not hold a {what}: expected one Z85 "
                         f"key of 40 characters, as \"ferrulectl keygen\" writes")
    return data.strip()


@dataclass(frozen=True, repr=False)
class CurveKeys:
    """The keys one client uses with every broker."""

    server_public: bytes      # Z85
    client_public: bytes      # Z85
    client_secret: bytes      # Z85

    def __repr__(self) -> str:           # the secret key stays out of logs and tracebacks
        return "CurveKeys(server_public=..., client_public=..., client_secret=<hidden>)"

    @classmethod
    def load(cls, server_public_key: KeySource, client_secret_key: KeySource | None = None,
             client_public_key: KeySource | None = None) -> "CurveKeys":
        """Reads and checks the keys. Without a client secret key a fresh key pair is made for
        this client: enough for a broker that encrypts but admits any key, refused by one with
        an allow-list. Without a client public key it is derived from the secret key."""
        server = load_key(server_public_key, "broker's public key")
        if client_secret_key is None:
            if client_public_key is not None:
                raise ValueError("a client public key was given without its secret key")
            public, secret = zmq.curve_keypair()
            return cls(server, public, secret)
        secret = load_key(client_secret_key, "client's secret key")
        derived = zmq.curve_public(secret)
        if client_public_key is not None:
            public = load_key(client_public_key, "client's public key")
            if public != derived:
                raise ValueError("the client's public key does not belong to its secret key")
        return cls(server, derived, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Makes sock a CURVE client of the broker (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret


def keys_from_arguments(server_public_key: KeySource | None, client_secret_key: KeySource | None,
                        client_public_key: KeySource | None,
                        plaintext: bool = False) -> CurveKeys | None:
    """The Client's key arguments, else the environment's key files (as common/curve.c reads
    them); None (plaintext) only when asked for. Configuration when there are no keys and
    plaintext was not asked for."""
    if plaintext:
        if server_public_key is not None or client_secret_key is not None or client_public_key is not None:
            raise ValueError("plaintext=True was given with CURVE keys: give one or the other")
        return None
    if server_public_key is None:
        if client_secret_key is not None or client_public_key is not None:
            raise ValueError("client keys were given without the broker's public key "
                             "(server_public_key)")
        return _keys_from_env()
    if not zmq.has("curve"):
        raise ValueError("this libzmq was built without CURVE support")
    return CurveKeys.load(server_public_key, client_secret_key, client_public_key)


def _keys_from_env() -> CurveKeys | None:
    """The key files the environment names, with the rules of curve_identity_from_env
    (common/curve.c): both files, or FERRULE_ALLOW_PLAINTEXT=1 and no secret key file."""
    secret_file = os.environ.get(ENV_SECRET_KEY_FILE, "")
    server_file = os.environ.get(ENV_BROKER_KEY_FILE, "")
    hint = (f"set {ENV_SECRET_KEY_FILE} to this client's key file and {ENV_BROKER_KEY_FILE} to the "
            f"brokers' public key file (or give Client(server_public_key=..., client_secret_key=...)); "
            f"Client(plaintext=True) or {ENV_ALLOW_PLAINTEXT}=1 only for brokers that run in plaintext")
    if not (secret_file and server_file):
        if os.environ.get(ENV_ALLOW_PLAINTEXT) == "1" and not secret_file:
            return None
        if secret_file:
            message = (f"{ENV_SECRET_KEY_FILE} is set but {ENV_BROKER_KEY_FILE} is not: set it to the "
                       f"file holding the brokers' public key")
        else:
            message = (f"no CURVE key: set {ENV_SECRET_KEY_FILE} and {ENV_BROKER_KEY_FILE} (make keys "
                       f"with \"ferrulectl keygen\"), or {ENV_ALLOW_PLAINTEXT}=1 to run without "
                       f"authentication or encryption")
        raise Configuration(message, hint=hint)
    if not zmq.has("curve"):
        raise Configuration("this libzmq was built without CURVE support",
                            hint="install a libzmq built with libsodium or its own CURVE (tweetnacl)")
    try:
        secret = read_key_file(secret_file, f"client's secret key ({ENV_SECRET_KEY_FILE})")
        server = read_key_file(server_file, f"broker's public key ({ENV_BROKER_KEY_FILE})")
    except ValueError as e:
        raise Configuration(str(e), hint=hint) from None
    return CurveKeys(server, zmq.curve_public(secret), secret)
