"""The remote specialization protocol, sans-IO: frames, messages, signatures.

A frame is a 4-byte big-endian length and a body; a body is the protocol
version (one byte), the kind (``Q`` request, ``R`` reply, ``E`` error) and a
payload. Payloads are deflated JSON (``pack``). A request's is: the scenario, the snapshot of its
static context (remote.context) and the request's number. A reply's payload
is a signature (two-byte length, then the bytes) and the payload it signs: the
residual's source, its frozen references and its assumptions, for one
scenario and context digest. An error's payload is JSON with a message: the
device falls back either way, so errors are not signed.

Signatures: HMAC-SHA256 with a shared key (the stdlib's), or Ed25519 (the
server signs with a private key, the device holds the public one) through
the ``cryptography`` package, imported only when an Ed25519 key is used.
Nothing here does I/O: the drivers (remote.device, remote.server) move the
bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
MAX_FRAME = 1 << 20  # a request or reply above a megabyte is refused before it is read
MAX_JSON = 8 << 20  # what a payload may inflate to
MIN_HMAC_KEY = 16
_LENGTH = struct.Struct(">I")
_SIGNATURE_LENGTH = struct.Struct(">H")
REQUEST, REPLY, ERROR = b"Q", b"R", b"E"


class ProtocolError(Exception):
    """A frame or message that does not follow the protocol (the message says how)."""


class VerificationError(ProtocolError):
    """A reply whose signature does not verify: nothing of it is loaded."""


# ------------------------------------------------------------------ frames


def frame(body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes is over the limit of {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Bytes in, whole frame bodies out: ``feed`` what arrives, then ``next`` until None."""

    def __init__(self, limit: int = MAX_FRAME):
        self.limit = limit
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> bytes | None:
        if len(self.buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self.buffer)
        if length > self.limit:
            raise ProtocolError(f"frame of {length} bytes announced, over the limit of {self.limit}")
        end = _LENGTH.size + length
        if len(self.buffer) < end:
            return None
        body = bytes(self.buffer[_LENGTH.size:end])
        del self.buffer[:end]
        return body

    @property
    def pending(self) -> bool:
        """Part of a frame is waiting for the rest (a connection closed now truncated it)."""
        return bool(self.buffer)


def canonical(data: Any) -> bytes:
    """One byte string for one JSON value: what digests and signatures are taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def digest(scenario: str, context: dict[str, Any]) -> str:
    """The code manager's and the server's cache key: the scenario and its context."""
    return hashlib.sha256(canonical({"scenario": scenario, "context": context})).hexdigest()


def _split(body: bytes) -> tuple[bytes, bytes]:
    if len(body) < 2:
        raise ProtocolError("message too short")
    if body[0] != VERSION:
        raise ProtocolError(f"protocol version {body[0]} is not {VERSION}")
    return body[1:2], body[2:]


def pack(data: Any) -> bytes:
    """A JSON payload as it travels: canonical, then deflated (the context's field names and
    the residual's text repeat a lot)."""
    return zlib.compress(canonical(data), 6)


def _json(payload: bytes, what: str) -> dict[str, Any]:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, MAX_JSON)
    except zlib.error as exc:
        raise ProtocolError(f"{what} is not deflated JSON ({exc})") from None
    if inflater.unconsumed_tail:
        raise ProtocolError(f"{what} inflates to more than {MAX_JSON} bytes")
    if not inflater.eof:
        raise ProtocolError(f"{what} is truncated")
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return data


# ------------------------------------------------------------------ messages


@dataclass
class Request:
    number: int
    scenario: str
    context: dict[str, Any]

    def encode(self) -> bytes:
        payload = pack({"id": self.number, "scenario": self.scenario, "context": self.context})
        return frame(bytes([VERSION]) + REQUEST + payload)

    @property
    def digest(self) -> str:
        return digest(self.scenario, self.context)


@dataclass
class Reply:
    """The residual of one scenario for one context: ``source`` defines ``name(params)``;
    ``constants`` are its frozen references, ``assumptions`` the facts it relies on
    (both encoded as in remote.context). ``backend`` says what ``source`` is (``python``;
    a C backend's reply would carry its own here)."""

    number: int
    scenario: str
    digest: str
    name: str
    source: str
    constants: dict[str, Any]
    assumptions: list[Any]
    backend: str = "python"

    def payload(self) -> dict[str, Any]:
        return {"id": self.number, "scenario": self.scenario, "digest": self.digest, "name": self.name,
                "source": self.source, "constants": self.constants, "assumptions": self.assumptions,
                "backend": self.backend}


@dataclass
class ErrorReply:
    number: int
    message: str

    def encode(self) -> bytes:
        return frame(bytes([VERSION]) + ERROR + pack({"id": self.number, "error": self.message}))


def decode_request(body: bytes) -> Request:
    kind, payload = _split(body)
    if kind != REQUEST:
        raise ProtocolError(f"expected a request, got kind {kind!r}")
    data = _json(payload, "request")
    number, scenario, context = data.get("id"), data.get("scenario"), data.get("context")
    if not isinstance(number, int) or not isinstance(scenario, str) or not isinstance(context, dict):
        raise ProtocolError("a request needs an integer id, a scenario name and a context object")
    return Request(number, scenario, context)


def request_number(body: bytes) -> int:
    """The id of a request, if one can be read from it (for the error reply), else 0."""
    try:
        number = _json(body[2:], "request").get("id", 0)
    except ProtocolError:
        return 0
    return number if isinstance(number, int) else 0


def encode_reply(reply: Reply, signer: Signer) -> bytes:
    signed = pack(reply.payload())
    signature = signer.sign(signed)
    return frame(bytes([VERSION]) + REPLY + _SIGNATURE_LENGTH.pack(len(signature)) + signature + signed)


def decode_reply(body: bytes, verifier: Verifier) -> Reply | ErrorReply:
    """A verified reply or the server's error; ProtocolError (VerificationError for a bad
    signature) for anything else."""
    kind, payload = _split(body)
    if kind == ERROR:
        data = _json(payload, "error reply")
        return ErrorReply(int(data.get("id", 0)), str(data.get("error", "")))
    if kind != REPLY:
        raise ProtocolError(f"expected a reply, got kind {kind!r}")
    if len(payload) < _SIGNATURE_LENGTH.size:
        raise ProtocolError("reply too short")
    (length,) = _SIGNATURE_LENGTH.unpack_from(payload)
    signature = payload[_SIGNATURE_LENGTH.size:_SIGNATURE_LENGTH.size + length]
    signed = payload[_SIGNATURE_LENGTH.size + length:]
    verifier.verify(signed, signature)
    data = _json(signed, "reply")
    try:
        return Reply(data["id"], data["scenario"], data["digest"], data["name"], data["source"],
                     data["constants"], data["assumptions"], data["backend"])
    except KeyError as missing:
        raise ProtocolError(f"reply lacks {missing}") from None


# ------------------------------------------------------------------ keys


class Signer:
    """The server's half: signs replies."""

    def __init__(self, secret: bytes | None = None, private_key: Any = None):
        self.secret, self.private_key = secret, private_key

    def sign(self, data: bytes) -> bytes:
        if self.private_key is not None:
            return bytes(self.private_key.sign(data))
        assert self.secret is not None
        return hmac.new(self.secret, data, hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        """A PEM Ed25519 private key, or else the file's bytes as a shared HMAC key."""
        data = Path(path).read_bytes()
        if data.startswith(b"-----BEGIN"):
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            key = load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an Ed25519 private key")
            return cls(private_key=key)
        return cls(secret=shared_key(data, str(path)))


class Verifier:
    """The device's half: checks the signature of every reply before anything is loaded."""

    def __init__(self, key: bytes | str | Path):
        """``key``: the shared HMAC key (bytes), an Ed25519 public key in PEM (bytes), or a
        file holding either."""
        data = key if isinstance(key, bytes) else Path(key).read_bytes()
        self.public_key: Any = None
        self.secret: bytes | None = None
        if data.startswith(b"-----BEGIN"):
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            public = load_pem_public_key(data)
            if not isinstance(public, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            self.public_key = public
        else:
            self.secret = shared_key(data, "the key")

    def verify(self, data: bytes, signature: bytes) -> None:
        if self.public_key is not None:
            from cryptography.exceptions import InvalidSignature

            try:
                self.public_key.verify(signature, data)
            except InvalidSignature:
                raise VerificationError("the reply's Ed25519 signature does not verify") from None
            return
        assert self.secret is not None
        expected = hmac.new(self.secret, data, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise VerificationError("the reply's HMAC-SHA256 does not verify")


def shared_key(data: bytes, where: str) -> bytes:
    secret = data.strip()
    if len(secret) < MIN_HMAC_KEY:
        raise ValueError(f"{where}: a shared key needs at least {MIN_HMAC_KEY} bytes, has {len(secret)}")
    return secret
