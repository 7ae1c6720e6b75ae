"""A parser for packetdrill scripts (the grammar in ../shared/packetdrill/SYNTAX-packetdrill.md).

A script is options (``--tolerance_usecs=10000``), an optional init
command (a back-quoted shell command, ``defaults.sh`` in most scripts),
then events: a time (``0``, ``+.1``, ``*``, ``0.1~0.2``, and for
blocking system calls ``+0...0.200``) and an action: an inbound (``<``)
or outbound (``>``) packet, a system call, a command or a ``%{ }%``
code block. This module only reads the text into plain objects; the
runner (:mod:`conformance.runner`) gives them meaning.

Supported: TCP packet lines with flags, sequence ranges, ``ack``,
``win``, ``urg``, options (``mss``, ``nop``, ``eol``, ``wscale``,
``sackOK``, ``sack a:b ...``, ``TS val x ecr y``, ``FO``/``FOEXP``,
``md5``) and ``<...>``; UDP and ICMP packet lines; IP info such as
``(tos 0x10)`` or ``[ttl 1]``; system calls with packetdrill's
expressions (``...``, ints, symbols, strings, ``[x]``, ``{...}``
structures, ``a|b``, ``f(x)``, ``name=value``). Encapsulation prefixes
(GRE, MPLS, explicit IP headers) and fuzzing parameters are parsed far
enough to be reported as unsupported, never silently misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


class ParseError(ValueError):
    """A script that does not follow the grammar: ``path:line: message``."""

    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


# ---------------------------------------------------------------- expressions


class _EllipsisType:
    """packetdrill's ``...``: "whatever the live value is" (an argument, an address, a buffer)."""

    _instance: _EllipsisType | None = None

    def __new__(cls) -> _EllipsisType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "..."


ELLIPSIS = _EllipsisType()


@dataclass(frozen=True)
class Symbol:
    """A name such as ``SOCK_STREAM`` or ``EPIPE``, resolved by the runner."""

    name: str


@dataclass(frozen=True)
class Str:
    """A double-quoted string (``"..."`` in the script); ``open`` means it was followed by ``...``."""

    value: str
    open: bool = False


@dataclass(frozen=True)
class Call:
    """``name(args)``: ``htons(8080)``, ``inet_addr("1.2.3.4")``, ``msg_iov(4)``."""

    name: str
    args: tuple


@dataclass(frozen=True)
class Assign:
    """``name=value`` inside a structure: ``sin_port=htons(8080)``, ``msg_flags=0``."""

    target: object
    value: object


@dataclass(frozen=True)
class Struct:
    """``{a, b, ...}``: sockaddr, msghdr, iovec ``{..., 40}``, linger ``{onoff=1, linger=0}``."""

    items: tuple

    def field(self, name: str) -> object:
        """The value of ``name=...`` (or ``name(...)=...``) in this structure; KeyError if absent."""
        for item in self.items:
            if isinstance(item, Assign):
                target = item.target
                key = target.name if isinstance(target, (Symbol, Call)) else None
                if key == name:
                    return item.value
        raise KeyError(name)


@dataclass(frozen=True)
class Or:
    """``A | B | C`` (flags)."""

    items: tuple


Expr = object  # int | _EllipsisType | Symbol | Str | Call | Assign | Struct | Or | list


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class TimeSpec:
    """When an event happens, in seconds.

    kind: ``absolute`` (``0.1``), ``relative`` (``+.1``), ``any`` (``*``),
    ``absolute_range`` (``0.1~0.2``), ``relative_range`` (``+.1~+.2``).
    ``end`` is the range's end, or for blocking system calls (``+0...0.2``)
    the time by which the call returns.
    """

    kind: str
    start: float = 0.0
    end: float | None = None
    blocking_end: float | None = None


@dataclass
class TcpOption:
    """One TCP option as written: ``name`` is mss, nop, eol, wscale, sackOK, sack, TS, FO, FOEXP, md5."""

    name: str
    values: tuple = ()


@dataclass
class IpInfo:
    tos: int | None = None  # exact TOS byte, ``tos 0x..``
    ecn: str | None = None  # no_ecn, ect0, ect1, ce, ect01
    ttl: int | None = None
    flowlabel: int | None = None


@dataclass
class PacketSpec:
    direction: str  # "<" inbound (to the stack under test), ">" outbound
    protocol: str  # tcp, udp, icmp
    ip: IpInfo = field(default_factory=IpInfo)
    ports: tuple[int, int] | None = None
    # TCP
    flags: str = ""
    seq: int = 0
    end_seq: int = 0
    payload_len: int = 0
    ack: int | None = None  # the number after ``ack`` (packetdrill checks it as 0 when absent)
    window: int | None = None  # None: not checked (outbound only)
    urg: int = 0
    options: list[TcpOption] | None = field(default_factory=list)  # None: ``<...>``, not checked
    # ICMP
    icmp_type: str = ""
    icmp_code: str | None = None
    icmp_mtu: int | None = None
    icmp_echoed: str = ""  # the quoted packet: "tcp" (its range in seq/end_seq/payload_len), or ""
    unsupported: str | None = None  # why the runner cannot run this line

    def has(self, flag: str) -> bool:
        return flag in self.flags


@dataclass
class SyscallSpec:
    name: str
    args: list
    result: Expr
    errno: str | None = None
    note: str | None = None


@dataclass
class CommandSpec:
    text: str


@dataclass
class CodeSpec:
    text: str


@dataclass
class Event:
    line: int
    time: TimeSpec
    action: PacketSpec | SyscallSpec | CommandSpec | CodeSpec

    @property
    def kind(self) -> str:
        return {PacketSpec: "packet", SyscallSpec: "syscall", CommandSpec: "command", CodeSpec: "code"}[
            type(self.action)
        ]


@dataclass
class Script:
    path: str
    options: dict[str, str | None]
    init_command: str | None
    events: list[Event]
    cleanup_command: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


# ---------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<code>%\{.*?\}%)
  | (?P<backquoted>`[^`]*`)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ellipsis>\.\.\.)
  | (?P<hex>0x[0-9A-Fa-f]+)
  | (?P<float>[0-9]*\.[0-9]+)
  | (?P<int>[0-9]+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()\[\]{},=|<>:+*~\-./%!&])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str  # code, backquoted, string, ellipsis, hex, float, int, word, punct, eof
    text: str
    line: int

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text!r}@{self.line}"


def strip_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments outside strings, commands and code; keep line breaks."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            j = n - 1 if j < 0 else j
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("%{", i):
            j = text.find("}%", i + 2)
            j = n - 2 if j < 0 else j
            out.append(text[i : j + 2])
            i = j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n - 2 if j < 0 else j
            out.append("\n" * text.count("\n", i, j + 2))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokenize(text: str, path: str = "<script>") -> list[Token]:
    tokens: list[Token] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(path, line, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        value = m.group()
        if kind != "ws":
            tokens.append(Token(kind, value, line))
        line += value.count("\n")
        pos = m.end()
    tokens.append(Token("eof", "", line))
    return tokens


# ---------------------------------------------------------------- parser

_OPTION = re.compile(r"--([A-Za-z0-9_]+)(?:=(.*))?$")
_TCP_FLAG_CHARS = set(".FSRPEWAU01234567")


def parse_file(path: str | Path) -> Script:
    path = Path(path)
    return parse(path.read_text(), str(path))


def parse(text: str, path: str = "<script>") -> Script:
    text = strip_comments(text)
    options: dict[str, str | None] = {}
    # Options are the script's leading --name[=value] lines (packetdrill's OPTION tokens).
    lines = text.split("\n")
    for index, raw in enumerate(lines):
        stripped = raw.strip()
        if not stripped:
            continue
        m = _OPTION.match(stripped)
        if m is None:
            break
        options[m.group(1)] = m.group(2)
        lines[index] = ""
    return _Parser(tokenize("\n".join(lines), path), path, options).script()


class _Parser:
    def __init__(self, tokens: list[Token], path: str, options: dict[str, str | None]):
        self.tokens = tokens
        self.pos = 0
        self.path = path
        self.options = options

    # -- helpers

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def error(self, message: str, token: Token | None = None) -> ParseError:
        token = token or self.tok
        return ParseError(self.path, token.line, message)

    def is_punct(self, text: str, token: Token | None = None) -> bool:
        token = token or self.tok
        return token.kind == "punct" and token.text == text

    def expect_punct(self, text: str) -> Token:
        if not self.is_punct(text):
            raise self.error(f"expected {text!r}, got {self.tok.text or 'end of script'!r}")
        return self.take()

    def expect_word(self, word: str | None = None) -> str:
        if self.tok.kind != "word" or (word is not None and self.tok.text != word):
            raise self.error(f"expected {word or 'a word'}, got {self.tok.text or 'end of script'!r}")
        return self.take().text

    def integer(self) -> int:
        negative = False
        if self.is_punct("-"):
            self.take()
            negative = True
        token = self.tok
        if token.kind == "int":
            value = int(self.take().text)
        elif token.kind == "hex":
            value = int(self.take().text, 16)
        else:
            raise self.error(f"expected an integer, got {token.text or 'end of script'!r}")
        return -value if negative else value

    def number(self) -> float:
        token = self.tok
        if token.kind in ("int", "float"):
            return float(self.take().text)
        raise self.error(f"expected a time, got {token.text or 'end of script'!r}")

    # -- script

    def script(self) -> Script:
        init_command = None
        if self.tok.kind == "backquoted":
            init_command = self.take().text[1:-1]
        events: list[Event] = []
        cleanup = None
        while self.tok.kind != "eof":
            if self.tok.kind == "backquoted" and self.peek().kind == "eof":
                cleanup = self.take().text[1:-1]
                break
            events.append(self.event())
        if not events:
            raise self.error("a script needs at least one event")
        return Script(self.path, self.options, init_command, events, cleanup)

    def event(self) -> Event:
        line = self.tok.line
        time = self.time()
        token = self.tok
        action: PacketSpec | SyscallSpec | CommandSpec | CodeSpec
        if self.is_punct("<") or self.is_punct(">"):
            action = self.packet()
        elif token.kind == "backquoted":
            action = CommandSpec(self.take().text[1:-1])
        elif token.kind == "code":
            action = CodeSpec(self.take().text[2:-2])
        elif token.kind == "word" and self.is_punct("(", self.peek()):
            action = self.syscall()
        else:
            raise self.error(f"expected a packet, system call, command or code, got {token.text!r}")
        if time.blocking_end is not None and not isinstance(action, SyscallSpec):
            raise ParseError(self.path, line, "an end time (...) is only for system calls")
        if time.kind in ("any", "absolute_range", "relative_range") and not (
            isinstance(action, PacketSpec) and action.direction == ">"
        ):
            raise ParseError(self.path, line, "time ranges and * are only for outbound packets")
        return Event(line, time, action)

    def time(self) -> TimeSpec:
        if self.is_punct("*"):
            self.take()
            return TimeSpec("any")
        relative = False
        if self.is_punct("+"):
            self.take()
            relative = True
        start = self.number()
        if self.is_punct("~"):
            self.take()
            if relative:
                self.expect_punct("+")
            end = self.number()
            if end < start:
                raise self.error("time range is backwards")
            return TimeSpec("relative_range" if relative else "absolute_range", start, end)
        blocking_end = None
        if self.tok.kind == "ellipsis":
            self.take()
            blocking_end = self.number()
        return TimeSpec("relative" if relative else "absolute", start, None, blocking_end)

    # -- packets

    def packet(self) -> PacketSpec:
        direction = self.take().text
        spec = PacketSpec(direction=direction, protocol="tcp")
        while self.tok.kind == "word" and self.tok.text in ("ipv4", "ipv6", "gre", "mpls"):
            spec.unsupported = f"encapsulation ({self.tok.text}) is not supported"
            while not self.is_punct(":") and self.tok.kind != "eof":
                self.take()
            self.expect_punct(":")
        spec.ip = self.ip_info()
        if self.tok.kind == "word" and self.tok.text == "udp":
            self.take()
            spec.protocol = "udp"
            spec.ports = self.port_info()
            self.expect_punct("(")
            spec.payload_len = self.integer()
            self.expect_punct(")")
            return spec
        if self.tok.kind == "word" and self.tok.text == "icmp":
            self.take()
            spec.protocol = "icmp"
            spec.icmp_type = self.expect_word()
            if self.tok.kind == "word" and self.tok.text not in ("mtu", "id"):
                spec.icmp_code = self.take().text
            if self.tok.kind == "word" and self.tok.text == "mtu":
                self.take()
                spec.icmp_mtu = self.integer()
            if self.tok.kind == "word" and self.tok.text == "id":
                self.take()
                self.integer()
            if self.is_punct("["):
                self.icmp_echoed(spec)
            return spec
        spec.ports = self.port_info()
        spec.flags = self.tcp_flags()
        spec.seq = self.integer()
        self.expect_punct(":")
        spec.end_seq = self.integer()
        self.expect_punct("(")
        spec.payload_len = self.integer()
        self.expect_punct(")")
        if (spec.end_seq - spec.seq) & 0xFFFFFFFF != spec.payload_len:
            raise self.error("inconsistent TCP sequence numbers and payload size")
        if self.tok.kind == "word" and self.tok.text == "ack":
            self.take()
            spec.ack = self.integer()
        if self.tok.kind == "word" and self.tok.text == "win":
            self.take()
            spec.window = self.integer()
        elif direction == "<":
            raise self.error("window must be specified for inbound packets")
        if self.tok.kind == "word" and self.tok.text == "urg":
            self.take()
            spec.urg = self.integer()
        if self.is_punct("<"):
            spec.options = self.tcp_options()
            if spec.options is None and direction == "<":
                raise self.error("<...> for TCP options can only be used with outbound packets")
        if self.tok.kind == "word" and self.tok.text in ("mutate", "truncate", "insert"):
            spec.unsupported = "fuzzing parameters are not supported"
            while self.tok.kind != "eof" and not self.is_punct("]"):
                self.take()
            self.expect_punct("]")
        return spec

    def ip_info(self) -> IpInfo:
        info = IpInfo()
        if not (self.is_punct("(") or self.is_punct("[")):
            return info
        close = ")" if self.take().text == "(" else "]"
        while not self.is_punct(close):
            word = self.expect_word()
            if word == "tos":
                info.tos = self.integer()
            elif word == "ttl":
                info.ttl = self.integer()
            elif word == "flowlabel":
                info.flowlabel = self.integer()
            elif word in ("no_ecn", "noecn", "ect0", "ect1", "ce", "ect01"):
                info.ecn = "no_ecn" if word == "noecn" else word
            else:
                raise self.error(f"unknown IP info {word!r}")
            if self.is_punct(","):
                self.take()
        self.take()
        return info

    def icmp_echoed(self, spec: PacketSpec) -> None:
        """The packet an ICMP line quotes, ``[seq:end(len)]`` for one of the DUT's TCP segments
        (its sequence numbers the DUT's, as in outbound lines); any other form is kept as
        unsupported."""
        self.expect_punct("[")
        start = self.tok
        if start.kind == "int":
            spec.seq = self.integer()
            self.expect_punct(":")
            spec.end_seq = self.integer()
            self.expect_punct("(")
            spec.payload_len = self.integer()
            self.expect_punct(")")
            self.expect_punct("]")
            spec.icmp_echoed = "tcp"
            return
        depth = 1
        while self.tok.kind != "eof" and depth:
            token = self.take()
            depth += self.is_punct("[", token) - self.is_punct("]", token)
        spec.unsupported = f"ICMP quoting a packet as [{start.text} ...] is not supported"

    def port_info(self) -> tuple[int, int] | None:
        if self.tok.kind == "int" and self.is_punct(">", self.peek()):
            src = self.integer()
            self.take()
            return src, self.integer()
        return None

    def tcp_flags(self) -> str:
        if self.is_punct("."):
            self.take()
            return "."
        if self.is_punct("-"):
            self.take()
            return ""
        if self.tok.kind == "word":
            flags = self.take().text
            if self.is_punct("."):
                self.take()
                flags += "."
        elif self.tok.kind == "float":  # ".5": ACK plus an AccECN ACE count
            flags = self.take().text
        else:
            raise self.error(f"expected TCP flags, got {self.tok.text!r}")
        bad = set(flags) - _TCP_FLAG_CHARS
        if bad:
            raise self.error(f"invalid TCP flag {sorted(bad)[0]!r}")
        return flags

    def tcp_options(self) -> list[TcpOption] | None:
        self.expect_punct("<")
        if self.tok.kind == "ellipsis":
            self.take()
            self.expect_punct(">")
            return None
        options: list[TcpOption] = []
        while True:
            options.append(self.tcp_option())
            if self.is_punct(","):
                self.take()
                continue
            self.expect_punct(">")
            return options

    def tcp_option(self) -> TcpOption:
        word = self.expect_word()
        lowered = word.lower()
        if lowered in ("nop", "eol", "sackok"):
            return TcpOption("sackOK" if lowered == "sackok" else lowered)
        if lowered in ("mss", "wscale"):
            return TcpOption(lowered, (self.integer(),))
        if lowered == "sack":
            blocks = []
            while self.tok.kind in ("int", "hex"):
                left = self.integer()
                self.expect_punct(":")
                blocks.append((left, self.integer()))
            return TcpOption("sack", tuple(blocks))
        if word == "TS":
            self.expect_word("val")
            val = self.integer()
            self.expect_word("ecr")
            return TcpOption("TS", (val, self.integer()))
        if word in ("FO", "FOEXP", "md5"):
            blob = ""
            while not (self.is_punct(",") or self.is_punct(">")) and self.tok.kind != "eof":
                blob += self.take().text
            return TcpOption(word, (blob,) if blob else ())
        raise self.error(f"unknown TCP option {word!r}")

    # -- system calls

    def syscall(self) -> SyscallSpec:
        name = self.take().text
        self.expect_punct("(")
        args = [] if self.is_punct(")") else self.expression_list(")")
        self.expect_punct(")")
        self.expect_punct("=")
        result = self.expression()
        errno_name = note = None
        if self.tok.kind == "word" and self.tok.text.startswith("E") and self.tok.text.isupper():
            errno_name = self.take().text
        if self.is_punct("("):
            start = self.take()
            words = []
            depth = 1
            while self.tok.kind != "eof":
                token = self.take()
                if self.is_punct("(", token):
                    depth += 1
                elif self.is_punct(")", token):
                    depth -= 1
                    if depth == 0:
                        break
                words.append(token.text)
            else:
                raise self.error("unterminated note", start)
            note = " ".join(words)
        return SyscallSpec(name, args, result, errno_name, note)

    def expression_list(self, closer: str) -> list:
        items = [self.expression()]
        while self.is_punct(","):
            self.take()
            items.append(self.expression())
        if not self.is_punct(closer):
            raise self.error(f"expected ',' or {closer!r}, got {self.tok.text or 'end of script'!r}")
        return items

    def expression(self) -> Expr:
        first = self.primary()
        if not self.is_punct("|"):
            return first
        items = [first]
        while self.is_punct("|"):
            self.take()
            items.append(self.primary())
        return Or(tuple(items))

    def primary(self) -> Expr:
        token = self.tok
        if token.kind == "ellipsis":
            self.take()
            return ELLIPSIS
        if token.kind in ("int", "hex") or self.is_punct("-"):
            return self.integer()
        if token.kind == "string":
            self.take()
            value = bytes(token.text[1:-1], "utf-8").decode("unicode_escape")
            if self.tok.kind == "ellipsis":
                self.take()
                return Str(value, open=True)
            return Str(value)
        if self.is_punct("["):
            self.take()
            items = [] if self.is_punct("]") else self.expression_list("]")
            self.expect_punct("]")
            return items
        if self.is_punct("{"):
            self.take()
            items = [] if self.is_punct("}") else self.expression_list("}")
            self.expect_punct("}")
            return Struct(tuple(items))
        if token.kind == "word":
            self.take()
            target: Expr = Symbol(token.text)
            if self.is_punct("("):
                self.take()
                args = [] if self.is_punct(")") else self.expression_list(")")
                self.expect_punct(")")
                target = Call(token.text, tuple(args))
            if self.is_punct("="):
                self.take()
                return Assign(target, self.expression())
            return target
        raise self.error(f"unexpected {token.text or 'end of script'!r} in an expression")
