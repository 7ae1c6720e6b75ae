"""A toy protocol's option interpreter, written the kernel's way: generic code that
interprets the session's options on every call (the third user of the specializer's
public API; see demos/tlv_options.spec.toml and tests/test_spec_user_module.py).

Each message of the toy protocol starts with options in type-length-value form
(``type, length, value...``), padded with NOPs to a multiple of 4 bytes. Which options
a session sends (a maximum message size, a window scale, timestamps, a cookie) is
negotiated once and fixed for the session; the encoder and decoder below still test
every one of them on every message, as generic code does. Specialized for one
session, only the timestamps' values and the message itself are left to compute.

A session announces its own changes (:func:`specializer.announce`) before making
them, so the guards declared in the ``.spec.toml`` decide what a change does to the
specialized code; a write nobody announces is still caught (guards on the data).
"""

from __future__ import annotations

import struct

from specializer import announce

OPT_END, OPT_NOP, OPT_MAXMSG, OPT_WSCALE, OPT_TIMESTAMP, OPT_COOKIE = 0, 1, 2, 3, 8, 34


class OptionError(ValueError):
    """A message's options are malformed or were not negotiated for the session."""


class Session:
    """One session's negotiated options (fixed while it lasts) and its timestamp echo."""

    def __init__(self, maxmsg: int = 0, wscale: int = -1, timestamps: bool = False, cookie: bytes = b""):
        self.maxmsg = maxmsg  # 0: not sent
        self.wscale = wscale  # -1: not sent
        self.timestamps = timestamps
        self.cookie = cookie  # empty: not sent
        self.closed = False
        self.echo = 0  # the peer's last timestamp: changes on every message, never static

    def set_option(self, name: str, value: object) -> None:
        """Renegotiate one option; the guards of the specialized code see it first."""
        if name not in ("maxmsg", "wscale", "timestamps", "cookie"):
            raise OptionError(f"no option {name!r}")
        announce(self, "set_option", name)
        setattr(self, name, value)

    def close(self) -> None:
        announce(self, "close")
        self.closed = True


def pad(out: bytes) -> bytes:
    """NOPs up to a multiple of 4 bytes."""
    return out + bytes((OPT_NOP,)) * (-len(out) % 4)


def encode_options(session: Session, now: int) -> bytes:
    """The options block of the session's next message; ``now`` is the sender's clock."""
    if session.closed:
        raise OptionError("session closed")
    out = b""
    if session.maxmsg:
        out += struct.pack("!BBH", OPT_MAXMSG, 4, session.maxmsg)
    if session.wscale >= 0:
        out += bytes((OPT_WSCALE, 3, session.wscale))
    if session.timestamps:
        out += struct.pack("!BBII", OPT_TIMESTAMP, 10, now & 0xFFFFFFFF, session.echo)
    if session.cookie:
        out += bytes((OPT_COOKIE, 2 + len(session.cookie))) + session.cookie
    return pad(out)


def encode_message(session: Session, now: int, payload: bytes) -> bytes:
    """A whole message: a header (options length, payload length), options, payload."""
    options = encode_options(session, now)
    if session.maxmsg and len(payload) > session.maxmsg:
        raise OptionError(f"payload of {len(payload)} bytes exceeds the session's {session.maxmsg}")
    return struct.pack("!BH", len(options), len(payload)) + options + payload


def decode_options(session: Session, data: bytes, found: dict[str, object]) -> dict[str, object]:
    """The options a peer sent, checked against what the session negotiated, into ``found``
    (the caller's, as tcp_parse_options fills the caller's opt_rx)."""
    index = 0
    while index < len(data):
        kind = data[index]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            index += 1
            continue
        if index + 1 >= len(data) or data[index + 1] < 2 or index + data[index + 1] > len(data):
            raise OptionError(f"truncated option at offset {index}")
        length = data[index + 1]
        value = data[index + 2:index + length]
        if kind == OPT_MAXMSG and session.maxmsg and length == 4:
            found["maxmsg"] = struct.unpack("!H", value)[0]
        elif kind == OPT_WSCALE and session.wscale >= 0 and length == 3:
            found["wscale"] = value[0]
        elif kind == OPT_TIMESTAMP and session.timestamps and length == 10:
            found["timestamp"] = struct.unpack("!II", value)
        elif kind == OPT_COOKIE and session.cookie:
            found["cookie"] = value
        else:
            raise OptionError(f"option {kind} of length {length} not negotiated")
        index += length
    return found


def make_world(maxmsg: int = 1400, wscale: int = 7, timestamps: int = 1, cookie: str = "") -> dict[str, object]:
    """The statics of a scenario for a context (``spec show --module demos.tlv_options``)."""
    for name, value in (("maxmsg", maxmsg), ("wscale", wscale), ("timestamps", timestamps)):
        if not isinstance(value, int):
            raise ValueError(f"{name}={value!r}: wants an integer")
    if not isinstance(cookie, str):
        raise ValueError(f"cookie={cookie!r}: wants text")
    if not 0 <= maxmsg <= 0xFFFF:
        raise ValueError(f"maxmsg={maxmsg}: wants 0 to 65535")
    if not -1 <= wscale <= 14:
        raise ValueError(f"wscale={wscale}: wants -1 (off) to 14")
    if len(cookie) > 32:
        raise ValueError("cookie: at most 32 bytes")
    return {"session": Session(maxmsg, wscale, bool(timestamps), cookie.encode())}
