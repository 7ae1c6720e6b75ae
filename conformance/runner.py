"""Run a packetdrill script against a DUT, with packetdrill's semantics.

What is faithful to packetdrill (gtests/net/packetdrill/run*.c):

- Times: relative events are relative to the moment the previous event
  finished, except consecutive inbound packets, which are anchored to the
  previous one's script time; an event is on time within
  ``--tolerance_usecs`` (default 4 ms) or 12.5% of the gap since the
  previous event, whichever is larger; ``*`` means any time and
  ``a~b`` a range.
- Outbound packets are sniffed as soon as the event is reached and
  checked field by field after mapping live values into script space:
  sequence and ACK numbers (and SACK blocks) relative to each side's ISN,
  TS val relative to the first TS val seen (checked only with
  ``--tcp_ts_tick_usecs``), flags, window (only when the script gives
  ``win``), urgent pointer, options in order (``<...>``: not checked),
  payload. Packets of other connections are ignored.
- TSO: where the script expects one segment larger than the MSS, a run
  of segments covering the same range is accepted (packetdrill's
  aggregation, on unless ``--strict_segments``): each piece must agree
  with the previous one in flags, ACK, window and header length, and
  continue its sequence range; PSH and FIN count from the last piece.
- Inbound packets get live addresses, ports and sequence numbers, and a
  TS ecr is mapped back to the live TS val the script's value stood for.
- System calls with an end time (``+0...0.2 accept(...)``) run in the
  background while the script goes on, and must return by that time; the
  next system call waits for them (at most 1 s). Others must return at
  once. ``...`` arguments get live values: ``bind`` and ``connect`` use
  port 8080, the DUT's address and the bench's.
- ``%{ assert tcpi_... }%`` code blocks are evaluated (a restricted
  evaluator, no ``exec``) against the socket under test's ``tcp_info``
  when the event is reached; variables they assign carry over to later
  blocks, as in packetdrill's one Python process.
- epoll, poll, ioctl, recvmsg with control messages and the error queue,
  open/sendfile/pipe/splice and NULL buffers are the kernel's own calls on
  Linux, checked as ``run_system_call.c`` checks them; ``--mss`` injects
  GSO packets. What pystack lacks fails on pystack (``Unsupported``).

What differs, deliberately: commands are carried out on the DUT, not run
on the host (:func:`command_actions`: sysctls of the namespace, ``tc``,
``ip route``, ``ethtool -K``, files in a scratch folder standing for
/tmp); a script whose lines need something this runner does not do
(IPv6, UDP and ICMP packet lines, encapsulation, unknown commands) is
skipped with the reason, before anything runs, and one that needs what
this kernel lacks (a qdisc) when it asks for it. A code block naming a
``tcpi_`` field the DUT cannot report is skipped (and noted), the rest of
the script runs.
"""

from __future__ import annotations

import ast
import errno as _errno
import operator
import os
import re
import shlex
import socket as _socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio
import trio.testing

from pystack.addr import aton
from pystack.checksum import internet_checksum, pseudo_header_sum
from pystack.host.netns import NeedsNetAdmin
from pystack.tcp.fastopen import KEY_LEN, make_cookie, parse_key

from .dut import (
    PACKETDRILL_DEFAULTS,
    UPSTREAM_REMOTE,
    Absent,
    Dut,
    DutConfig,
    DutEpoll,
    DutSocket,
    Unsupported,
    open_dut,
    run_on,
)
from .normalize import (
    ACK,
    AE,
    CWR,
    ECE,
    EOL,
    FASTOPEN,
    FIN,
    MD5,
    MSS,
    NOP,
    PSH,
    RST,
    SACK,
    SACK_PERM,
    SYN,
    TIMESTAMP,
    URG,
    WSCALE,
    TcpHeader,
    describe,
    flags_text,
    format_options,
    parse_ipv4,
    parse_tcp,
)
from .packetdrill import (
    ELLIPSIS,
    Call,
    CodeSpec,
    CommandSpec,
    Event,
    Or,
    PacketSpec,
    ParseError,
    Script,
    Str,
    Struct,
    Symbol,
    SyscallSpec,
    TcpOption,
    parse_file,
)

BIND_PORT = 8080  # packetdrill's --bind_port and --connect_port
FIRST_REMOTE_PORT = 48000  # the bench's ports for passive connections (packetdrill picks ephemerals)
DEFAULT_TOLERANCE_USECS = 4000
DEFAULT_TOLERANCE_PERCENT = 12.5
BLOCKING_WAIT = 1.0  # packetdrill's await_idle_thread limit
NONBLOCKING_LIMIT = 1.0  # a call that should return at once, but has not after this, has blocked
LATE_GRACE = 1.0  # how long past its time an outbound packet is still waited for (to report it)
ANY_TIME_LIMIT = 10.0  # how long ``*`` waits

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass
class Outcome:
    status: str  # pass, fail, skip, error
    line: int | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    trace: list[str] = field(default_factory=list)  # every packet in and out, and every call

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def brief(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message}".splitlines()[0] if (self.message or where) else ""


class Failure(Exception):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class Skip(Exception):
    def __init__(self, line: int | None, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


# ---------------------------------------------------------------- symbols

SYMBOLS: dict[str, int] = {
    "AF_INET": 2, "AF_INET6": 10, "AF_UNSPEC": 0, "PF_INET": 2,
    "SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3,
    "SOCK_NONBLOCK": 0o4000, "SOCK_CLOEXEC": 0o2000000,
    "IPPROTO_IP": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_ICMP": 1,
    "SOL_SOCKET": 1, "SOL_TCP": 6, "SOL_IP": 0, "SOL_UDP": 17,
    "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5,
    "SO_BROADCAST": 6, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9, "SO_OOBINLINE": 10,
    "SO_NO_CHECK": 11, "SO_PRIORITY": 12, "SO_LINGER": 13, "SO_REUSEPORT": 15,
    "SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19, "SO_RCVTIMEO": 20, "SO_SNDTIMEO": 21,
    "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33, "SO_MARK": 36, "SO_ZEROCOPY": 60,
    "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5,
    "TCP_KEEPCNT": 6, "TCP_SYNCNT": 7, "TCP_LINGER2": 8, "TCP_DEFER_ACCEPT": 9,
    "TCP_WINDOW_CLAMP": 10, "TCP_INFO": 11, "TCP_QUICKACK": 12, "TCP_CONGESTION": 13,
    "TCP_USER_TIMEOUT": 18, "TCP_FASTOPEN": 23, "TCP_NOTSENT_LOWAT": 25, "TCP_FASTOPEN_CONNECT": 30,
    "TCP_FASTOPEN_KEY": 33, "TCP_FASTOPEN_NO_COOKIE": 34,
    "IP_TOS": 1, "IP_TTL": 2, "IP_MTU_DISCOVER": 10, "IP_MTU": 14,
    "MSG_OOB": 0x1, "MSG_PEEK": 0x2, "MSG_DONTROUTE": 0x4, "MSG_TRUNC": 0x20,
    "MSG_DONTWAIT": 0x40, "MSG_EOR": 0x80, "MSG_WAITALL": 0x100, "MSG_NOSIGNAL": 0x4000,
    "MSG_MORE": 0x8000, "MSG_ERRQUEUE": 0x2000, "MSG_FASTOPEN": 0x20000000, "MSG_ZEROCOPY": 0x4000000,
    "F_GETFL": 3, "F_SETFL": 4, "F_GETFD": 1, "F_SETFD": 2,
    "O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_NONBLOCK": 0o4000, "O_CLOEXEC": 0o2000000,
    "SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2, "NULL": 0,
    "IP_RECVERR": 11, "IP_FREEBIND": 15, "IP_PMTUDISC_DONT": 0, "IP_PMTUDISC_WANT": 1, "IP_PMTUDISC_DO": 2,
    "IP_PMTUDISC_PROBE": 3, "TCP_INQ": 36, "TCP_CM_INQ": 36, "TCP_ZEROCOPY_RECEIVE": 35,
    "SO_TIMESTAMPING": 37, "SCM_TIMESTAMPING": 37, "SO_TIMESTAMP": 29, "SO_TIMESTAMPNS": 35,
    "SCM_TIMESTAMPING_OPT_STATS": 54,
    # packetdrill's names for the level and type of an IPv4 socket's error-queue message
    "CMSG_LEVEL_IP": 0, "CMSG_TYPE_RECVERR": 11,
    "SOF_TIMESTAMPING_TX_HARDWARE": 0x1, "SOF_TIMESTAMPING_TX_SOFTWARE": 0x2,
    "SOF_TIMESTAMPING_RX_HARDWARE": 0x4, "SOF_TIMESTAMPING_RX_SOFTWARE": 0x8,
    "SOF_TIMESTAMPING_SOFTWARE": 0x10, "SOF_TIMESTAMPING_SYS_HARDWARE": 0x20,
    "SOF_TIMESTAMPING_RAW_HARDWARE": 0x40, "SOF_TIMESTAMPING_OPT_ID": 0x80, "SOF_TIMESTAMPING_TX_SCHED": 0x100,
    "SOF_TIMESTAMPING_TX_ACK": 0x200, "SOF_TIMESTAMPING_OPT_CMSG": 0x400, "SOF_TIMESTAMPING_OPT_TSONLY": 0x800,
    "SOF_TIMESTAMPING_OPT_STATS": 0x1000, "SOF_TIMESTAMPING_OPT_PKTINFO": 0x2000,
    "SOF_TIMESTAMPING_OPT_TX_SWHW": 0x4000,
    "SCM_TSTAMP_SND": 0, "SCM_TSTAMP_SCHED": 1, "SCM_TSTAMP_ACK": 2,
    "SO_EE_ORIGIN_NONE": 0, "SO_EE_ORIGIN_LOCAL": 1, "SO_EE_ORIGIN_ICMP": 2, "SO_EE_ORIGIN_ICMP6": 3,
    "SO_EE_ORIGIN_TIMESTAMPING": 4, "SO_EE_ORIGIN_ZEROCOPY": 5, "SO_EE_CODE_ZEROCOPY_COPIED": 1,
    "SIOCINQ": 0x541B, "SIOCOUTQ": 0x5411, "SIOCOUTQNSD": 0x894B, "FIONREAD": 0x541B,
    "EPOLL_CTL_ADD": 1, "EPOLL_CTL_DEL": 2, "EPOLL_CTL_MOD": 3,
    "EPOLLIN": 0x1, "EPOLLPRI": 0x2, "EPOLLOUT": 0x4, "EPOLLERR": 0x8, "EPOLLHUP": 0x10, "EPOLLRDNORM": 0x40,
    "EPOLLRDBAND": 0x80, "EPOLLWRNORM": 0x100, "EPOLLWRBAND": 0x200, "EPOLLMSG": 0x400, "EPOLLRDHUP": 0x2000,
    "EPOLLEXCLUSIVE": 1 << 28, "EPOLLWAKEUP": 1 << 29, "EPOLLONESHOT": 1 << 30, "EPOLLET": 1 << 31,
    "POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10, "POLLNVAL": 0x20,
    "POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100, "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000,
}
# Names a code block may use besides tcpi_* (packetdrill's Python environment: TCP_CA_*, TCPI_OPT_*
# and the TCP_* states of linux/tcp.h).
CODE_CONSTANTS = {"TCP_CA_Open": 0, "TCP_CA_Disorder": 1, "TCP_CA_CWR": 2, "TCP_CA_Recovery": 3,
                  "TCP_CA_Loss": 4,
                  "TCPI_OPT_TIMESTAMPS": 1, "TCPI_OPT_SACK": 2, "TCPI_OPT_WSCALE": 4, "TCPI_OPT_ECN": 8,
                  "TCPI_OPT_ECN_SEEN": 16, "TCPI_OPT_SYN_DATA": 32, "TCPI_OPT_USEC_TS": 64,
                  "TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
                  "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8, "TCP_LAST_ACK": 9,
                  "TCP_LISTEN": 10, "TCP_CLOSING": 11}
CONTROL_SPACE = 4096  # packetdrill's MSGHDR_MAX_CONTROLLEN

SUPPORTED_SYSCALLS = {
    "socket", "bind", "listen", "accept", "connect", "read", "recv", "recvfrom", "recvmsg", "write", "send",
    "sendto", "sendmsg", "writev", "readv", "close", "shutdown", "setsockopt", "getsockopt", "fcntl",
    "ioctl", "poll", "epoll_create", "epoll_ctl", "epoll_wait", "open", "sendfile", "pipe", "splice",
}
# --mss=N: an inbound TCP segment longer than N is injected as one GSO packet of N-byte segments.
# --local_ip / --remote_ip: the addresses the script's literal Fast Open cookies were made for (the
# runner's own addresses are in 198.18.0.0/15; see fastopen_cookies).
SUPPORTED_OPTIONS = {"tolerance_usecs", "tolerance_percent", "tcp_ts_tick_usecs", "strict_segments",
                     "ip_version", "non_fatal", "verbose", "tcp_ts_ecr_scaled", "mss", "local_ip", "remote_ip"}
# packetdrill's run_all.py defines these for its default addresses (--local_ip=192.168.0.1
# --remote_ip=192.0.2.1) and defaults.sh's key: the cookies of the key of all zeros and of that key.
SCRIPT_LOCAL, SCRIPT_REMOTE = "192.168.0.1", "192.0.2.1"
COOKIE_DEFINES = {"TFO_COOKIE": "3021b9d889017eeb", "TFO_COOKIE_ZERO": "b7c12350a90dc8f5"}


# ---------------------------------------------------------------- commands (emulated)


Action = tuple  # ("sysctl", name, value), ("qdisc", words), ("route", options), ("offload", {name: on}),
#                 ("rm", path), ("dd", path, size), ("inspect", command), ("module", path, value),
#                 ("flush_metrics",), ("either", [alternatives' actions])


_ARITHMETIC = re.compile(r"\$\(\(([^()]*(?:\([^()]*\)[^()]*)*)\)\)")
_ARITH_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _shell_arithmetic(expression: str, line: int | None) -> int:
    """The value of a shell ``$((...))`` over integers (+ - * / %), as the shell computes it."""
    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH_OPS:
            return _ARITH_OPS[type(node.op)](value(node.left), value(node.right))
        raise Skip(line, f"shell arithmetic not emulated: $(({expression}))")
    try:
        tree = ast.parse(expression.replace("/", "//"), mode="eval")
    except SyntaxError:
        raise Skip(line, f"shell arithmetic not emulated: $(({expression}))") from None
    return value(tree.body)


def command_actions(text: str, line: int | None = None) -> list[Action]:
    """What a packetdrill command stands for, as actions for the DUT; Skip if it is not one we emulate.

    ``defaults.sh`` becomes :data:`~conformance.dut.PACKETDRILL_DEFAULTS`;
    ``sysctl [-q] [-e] [-w] name=value`` (dotted or slashed), ``set_sysctls.py
    /proc/sys/x/y=v`` and ``echo v > /proc/sys/x/y`` become settings of the
    namespace; ``tc qdisc ...``, ``ip route change <remote> ... dev tun0 <attrs>``
    and ``ethtool -K tun0 <feature> on|off`` act on the DUT's interface;
    ``rm -f /tmp/x`` and ``dd if=/dev/zero of=/tmp/x`` on the runner's own
    scratch folder (standing for /tmp); ``grep``/``cat`` are read-only
    inspections run in the namespace; ``echo v > /sys/module/...`` is a
    module parameter (global, checked, never written). ``ip tcp_metrics
    flush`` forgets the DUT's Fast Open cookies (in the init command it needs
    nothing, nor does the ``sysctl_restore`` clean-up: every run has a fresh
    namespace). Shell comments and ``\\`` line continuations are read as the shell reads them;
    of ``a || b`` the first alternative whose sysctls the DUT has is carried out.
    """
    actions: list[Action] = []
    text = _ARITHMETIC.sub(lambda m: str(_shell_arithmetic(m.group(1), line)), text.replace("\\\n", " "))
    for raw in text.replace(";", "\n").splitlines():
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            raise Skip(line, f"command not emulated: {raw.strip()}") from None
        if not words:
            continue
        if "||" in words:  # each alternative its own actions, the next one tried when one fails
            bars = [i for i, word in enumerate(words) if word == "||"]
            parts = [words[a + 1:b] for a, b in zip([-1, *bars], [*bars, len(words)], strict=True)]
            actions.append(("either", [command_actions(shlex.join(part), line) for part in parts]))
            continue
        command = raw.split("#", 1)[0].strip()
        words = _without_redirections(words)
        head = Path(words[0]).name
        if head == "defaults.sh":
            actions += [("sysctl", name, value) for name, value in PACKETDRILL_DEFAULTS.items()]
        elif head == "sysctl":
            for word in words[1:]:
                if word.startswith("-"):
                    continue
                name, sep, value = word.partition("=")
                if not sep:
                    raise Skip(line, f"command not emulated: {command}")
                actions.append(("sysctl", name.strip().replace("/", "."), value.strip()))
        elif head == "set_sysctls.py":
            for word in words[1:]:
                path, sep, value = word.partition("=")
                if not sep or not path.startswith("/proc/sys/"):
                    raise Skip(line, f"command not emulated: {command}")
                actions.append(("sysctl", path.removeprefix("/proc/sys/").replace("/", "."), value))
        elif head == "echo" and len(words) == 4 and words[2] == ">" and words[3].startswith("/proc/sys/"):
            actions.append(("sysctl", words[3].removeprefix("/proc/sys/").replace("/", "."), words[1]))
        elif head == "echo" and len(words) == 4 and words[2] == ">" and words[3].startswith("/sys/module/"):
            actions.append(("module", words[3], words[1]))
        elif words[:2] == ["ip", "tcp_metrics"] and line is not None:
            actions.append(("flush_metrics",))
        elif words[:2] == ["ip", "tcp_metrics"] or "sysctl_restore" in head:
            continue
        elif words[:3] in (["ip", "route", "change"], ["ip", "route", "replace"]):
            actions.append(("route", _route_attributes(words, command, line)))
        elif words[:2] == ["ip", "-6"]:
            raise Skip(line, f"IPv6 commands are not supported: {command}")
        elif head == "tc" and words[1:2] == ["qdisc"]:
            actions.append(("qdisc", words[1:]))
        elif head == "ethtool" and words[1:3] == ["-K", "tun0"] and len(words) % 2 == 1 \
                and all(w in ("on", "off") for w in words[4::2]):
            actions.append(("offload", {name: on == "on" for name, on in zip(words[3::2], words[4::2], strict=True)}))
        elif head == "rm" and words[1:2] == ["-f"] and all(_scratch(w) for w in words[2:]):
            actions += [("rm", w) for w in words[2:]]
        elif head == "dd":
            actions.append(_dd(words, command, line))
        elif head in ("grep", "cat"):
            actions.append(("inspect", command))
        else:
            raise Skip(line, f"command not emulated: {command}")
    return actions


def emulate_command(text: str, line: int | None = None) -> dict[str, str]:
    """The sysctl settings a packetdrill command stands for (see :func:`command_actions`)."""
    return {action[1]: action[2] for action in command_actions(text, line) if action[0] == "sysctl"}


def _without_redirections(words: list[str]) -> list[str]:
    """The words without ``> /dev/null`` and ``2>&1`` (output the runner does not keep anyway)."""
    out: list[str] = []
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
        elif word in (">", "2>", "&>") and words[i + 1:i + 2] == ["/dev/null"]:
            skip = True
        elif word not in ("2>&1", ">/dev/null", "2>/dev/null"):
            out.append(word)
    return out


def _scratch(path: str) -> bool:
    return path.startswith("/tmp/") and "/" not in path.removeprefix("/tmp/")


def _route_attributes(words: list[str], command: str, line: int | None) -> list[str]:
    """``ip route change 192.0.2.1 via 192.168.0.2 dev tun0 advmss 600 ...``: the attributes after the device.

    Scripts name upstream's addresses (remote 192.0.2.1); the bench's
    route is the same path to its own address (on-link, no gateway).
    """
    if words[3:4] != [UPSTREAM_REMOTE] or "dev" not in words:
        raise Skip(line, f"route command not emulated: {command}")
    rest = words[words.index("dev") + 1:]
    if rest[:1] != ["tun0"]:
        raise Skip(line, f"route command not emulated: {command}")
    return rest[1:]


def _dd(words: list[str], command: str, line: int | None) -> Action:
    args = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if args.get("if") != "/dev/zero" or not _scratch(args.get("of", "")):
        raise Skip(line, f"command not emulated: {command}")
    try:
        size = int(args.get("bs", "512")) * int(args.get("count", "0"))
    except ValueError:
        raise Skip(line, f"command not emulated: {command}") from None
    return ("dd", args["of"], size)


def plan(script: Script) -> DutConfig:
    """The DUT settings a script needs; raises Skip when the script needs what the runner cannot do."""
    for name, value in script.options.items():
        if name not in SUPPORTED_OPTIONS:
            raise Skip(None, f"option --{name} is not supported")
        if name == "ip_version" and value != "ipv4":
            raise Skip(None, f"--ip_version={value}: only IPv4 is supported")
    commands = [(None, script.init_command)] if script.init_command else []
    for event in script.events:
        action = event.action
        if isinstance(action, PacketSpec):
            if action.unsupported:
                raise Skip(event.line, action.unsupported)
            if action.protocol == "icmp" and action.direction == "<":
                icmp_numbers(action, event.line)  # raises Skip for what it cannot build
            elif action.protocol != "tcp":
                raise Skip(event.line, f"{action.protocol.upper()} packet lines are not supported")
        elif isinstance(action, SyscallSpec):
            if action.name not in SUPPORTED_SYSCALLS:
                raise Skip(event.line, f"system call {action.name}() is not supported")
        elif isinstance(action, CommandSpec):
            commands.append((event.line, action.text))
    for line, text in commands:
        for action in command_actions(text, line):  # raises Skip if not emulated
            if action[0] == "module":
                _check_module_parameter(action[1], action[2], line)
    sysctls = emulate_command(script.init_command) if script.init_command else {}
    return DutConfig(sysctls=sysctls, gso_injection="mss" in script.options)


def fastopen_cookies(script: Script, local: str, remote: str) -> dict[str, str]:
    """The script's Fast Open cookies (hex) and the ones the DUT makes in their place.

    A server's cookie hashes both addresses: a cookie the script writes was made
    by a key the script names (defaults.sh's, a ``tcp_fastopen_key`` sysctl, a
    TCP_FASTOPEN_KEY option) for its --local_ip/--remote_ip, and the DUT, at
    other addresses, makes another one from the same key. Any other cookie (a
    client's, made up by the script) stays as written.
    """
    keys = {parse_key(PACKETDRILL_DEFAULTS["net.ipv4.tcp_fastopen_key"]), bytes(KEY_LEN)}
    for event in script.events:
        action = event.action
        if isinstance(action, CommandSpec):
            keys.update(parse_key(a[2]) for a in command_actions(action.text, event.line)
                        if a[0] == "sysctl" and a[1].endswith("tcp_fastopen_key"))
        elif (isinstance(action, SyscallSpec) and action.name == "setsockopt" and len(action.args) > 3
              and action.args[2] == Symbol("TCP_FASTOPEN_KEY") and isinstance(action.args[3], Str)
              and len(action.args[3].value) == KEY_LEN):
            keys.add(action.args[3].value.encode("latin-1"))
    if script.init_command:
        keys.update(parse_key(v) for k, v in emulate_command(script.init_command).items()
                    if k.endswith("tcp_fastopen_key"))
    script_client = _socket.inet_aton(script.options.get("remote_ip") or SCRIPT_REMOTE)
    script_server = _socket.inet_aton(script.options.get("local_ip") or SCRIPT_LOCAL)
    client, server = _socket.inet_aton(remote), _socket.inet_aton(local)
    return {make_cookie(key, script_client, script_server).hex(): make_cookie(key, client, server).hex()
            for key in keys}


def _translate_cookies(script: Script, cookies: dict[str, str]) -> Script:
    """``script`` with packetdrill's cookie names (TFO_COOKIE) and its cookies as the DUT's."""

    def option(o: TcpOption) -> TcpOption:
        if o.name not in ("FO", "FOEXP") or not o.values:
            return o
        value = COOKIE_DEFINES.get(o.values[0], o.values[0])
        return TcpOption(o.name, (cookies.get(value.lower(), value),))

    return replace(script, events=[
        replace(e, action=replace(e.action, options=[option(o) for o in e.action.options]))
        if isinstance(e.action, PacketSpec) and e.action.options else e
        for e in script.events])


def _check_module_parameter(path: str, value: str, line: int | None) -> None:
    """A module parameter is global to the host: a script may only ask for the value it already has."""
    try:
        current = Path(path).read_text().strip()
    except OSError:
        current = None
    if current != value:
        raise Skip(line, f"{path} is a global module parameter (not per namespace): the script wants "
                         f"{value}, the host has {current}, and the runner does not change the host")


# ---------------------------------------------------------------- the connection under test


@dataclass
class Flow:
    """packetdrill's "socket under test": the live 4-tuple and the ISNs that map script to live."""

    protocol: str
    state: str  # listening, syn_received, synack_sent, connecting, syn_sent, established
    local: tuple[str, int]
    remote: tuple[str, int]
    script_local_isn: int = 0
    live_local_isn: int = 0
    script_remote_isn: int = 0
    live_remote_isn: int = 0
    ts_map: dict[int, int] = field(default_factory=dict)  # script TS val -> live TS val
    first_ts: tuple[int, int] | None = None  # (script, live) of the first outbound TS val

    # packetdrill numbers as tcpdump does: a SYN's sequence numbers (its seq, and the ack of a
    # SYN-ACK) are absolute, every other segment's are relative to the ISN (scripts' ISNs are often 0,
    # where the two agree).
    def local_offset(self, syn: bool = False) -> int:
        return (self.live_local_isn - (self.script_local_isn if syn else 0)) & 0xFFFFFFFF

    def remote_offset(self, syn: bool = False) -> int:
        return (self.live_remote_isn - (self.script_remote_isn if syn else 0)) & 0xFFFFFFFF


@dataclass
class _Blocking:
    event: Event
    expected_end: float
    start: float
    done: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Live:
    time: float
    tcp: TcpHeader
    ip_tos: int
    ip_ttl: int
    raw: bytes


# ---------------------------------------------------------------- code blocks


class _Unavailable(Exception):
    pass


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.BitAnd: operator.and_,
           ast.BitOr: operator.or_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def evaluate_code(text: str, names: dict[str, int], variables: dict[str, object] | None = None) -> str | None:
    """Run a ``%{ assert tcpi_x == 10, tcpi_x }%`` block: None if every assert holds, else the failure.

    Understood: asserts, assignments (``cwnd = 58``, ``cwnd += 1``) to
    ``variables``, which later blocks of the script see (packetdrill runs
    all of a script's blocks in one Python process), ``print(...)``
    (ignored), numbers, strings, ``%`` formatting, arithmetic and
    comparisons over ``tcpi_*`` names and linux/tcp.h's ``TCP_CA_*``. A
    name the DUT does not report raises _Unavailable.
    """
    variables = {} if variables is None else variables
    try:
        tree = ast.parse(text.strip())
    except SyntaxError as exc:
        raise _Unavailable(f"code block is not Python: {exc.msg}") from None

    def value(node: ast.AST) -> object:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            for scope in (variables, names, CODE_CONSTANTS):
                if node.id in scope:
                    return scope[node.id]
            raise _Unavailable(f"{node.id} is not reported by this DUT")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)  # type: ignore[operator]
        if isinstance(node, ast.BoolOp):
            results = [value(v) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare):
            left = value(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _COMPARE:
                    raise _Unavailable("unsupported comparison in code block")
                right = value(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Tuple):
            return tuple(value(e) for e in node.elts)
        raise _Unavailable(f"unsupported code in block: {ast.unparse(node)}")

    for statement in tree.body:
        if isinstance(statement, ast.Assert):
            if not value(statement.test):
                detail = f" ({value(statement.msg)})" if statement.msg is not None else ""
                return f"assert {ast.unparse(statement.test)} failed{detail}"
        elif (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
              and isinstance(statement.value.func, ast.Name) and statement.value.func.id == "print"):
            continue
        elif isinstance(statement, ast.Expr):
            value(statement.value)
        elif (isinstance(statement, ast.Assign) and len(statement.targets) == 1
              and isinstance(statement.targets[0], ast.Name)):
            variables[statement.targets[0].id] = value(statement.value)
        elif (isinstance(statement, ast.AugAssign) and isinstance(statement.target, ast.Name)
              and type(statement.op) in _BINOPS):
            variables[statement.target.id] = _BINOPS[type(statement.op)](
                value(statement.target), value(statement.value))
        else:
            raise _Unavailable(f"unsupported statement in code block: {ast.unparse(statement)}")
    return None


# ---------------------------------------------------------------- the runner


class Runner:
    def __init__(self, script: Script, dut: Dut):
        self.script = _translate_cookies(script, fastopen_cookies(script, dut.address, dut.peer))
        self.dut = dut
        opts = script.options
        self.tolerance = float(opts.get("tolerance_usecs") or DEFAULT_TOLERANCE_USECS) / 1e6
        self.tolerance_percent = float(opts.get("tolerance_percent") or DEFAULT_TOLERANCE_PERCENT)
        self.gso_size = int(opts.get("mss") or 0)
        tick = opts.get("tcp_ts_tick_usecs")
        self.ts_tick = float(tick) / 1e6 if tick else 0.0
        self.strict_segments = "strict_segments" in opts
        self.fds: dict[int, DutSocket | DutEpoll | int] = {}  # sockets, epolls, host fds (files, pipes)
        self.code_variables: dict[str, object] = {}  # code blocks share one Python namespace, as packetdrill's
        self.scratch = ""  # the runner's folder standing for /tmp (files scripts create and open)
        self.t0_wall = 0.0  # t0 on the DUT's timestamp clock (the kernel's: CLOCK_REALTIME)
        self.nonblocking: set[int] = set()
        self.flow: Flow | None = None
        self.listening = False
        self.bound_port = BIND_PORT
        self.test_socket: DutSocket | None = None
        self.remote_ports = iter(range(FIRST_REMOTE_PORT, FIRST_REMOTE_PORT + 1000))
        self.t0 = 0.0
        self.last_event: Event | None = None
        self.last_time = 0.0  # script time of the last event
        self.blocking: _Blocking | None = None
        self.async_failure: Failure | None = None
        self.notes: list[str] = []
        self.trace: list[str] = []
        self.nursery: trio.Nursery | None = None

    def log(self, text: str, when: float | None = None) -> None:
        self.trace.append(f"{self.live() if when is None else when:9.6f} {text}")

    # -- time

    def live(self) -> float:
        """Seconds since the script started, on the DUT's clock."""
        return self.dut.now() - self.t0

    def tolerance_for(self, expected: float, last: float | None) -> float:
        tolerance = self.tolerance
        if last is not None:
            tolerance = max(tolerance, self.tolerance_percent / 100.0 * (expected - last))
        return tolerance + self.dut.timing_slack

    def check_time(self, what: str, kind: str, expected: float, expected_end: float | None,
                   actual: float, last: float | None, line: int) -> None:
        if kind == "any":
            return
        tolerance = self.tolerance_for(expected, last)
        if expected_end is not None:
            if actual < expected - tolerance or actual > expected_end + tolerance:
                raise Failure(line, f"timing error: expected {what} in time range "
                                    f"{expected:.6f}~{expected_end:.6f} sec but happened at {actual:.6f} sec")
        elif abs(actual - expected) > tolerance:
            raise Failure(line, f"timing error: expected {what} at {expected:.6f} sec but happened at "
                                f"{actual:.6f} sec; tolerance {tolerance:.6f} sec")

    def schedule(self, event: Event) -> tuple[float, float | None, float | None]:
        """Script times (start, range end, blocking end) of ``event``, as packetdrill adjusts them."""
        spec = event.time
        if spec.kind == "absolute" or spec.kind == "absolute_range":
            return spec.start, spec.end, spec.blocking_end
        if self.last_event is not None and _anchored(self.last_event) and _anchored(event):
            offset = self.last_time
        else:
            offset = self.live()
        start = offset + spec.start
        end = offset + spec.end if spec.end is not None else None
        blocking_end = offset + spec.blocking_end if spec.blocking_end is not None else None
        return start, end, blocking_end

    async def wait_until(self, event: Event, when: float) -> None:
        await self.dut.sleep_until(self.t0 + when)
        if self.last_event is not None:
            self.check_time(_description(event), event.time.kind, when, None, self.live(),
                            self.last_time, event.line)

    # -- main loop

    async def run(self) -> None:
        events = self.script.events
        if events[0].time.kind not in ("absolute", "relative") or events[0].time.start != 0:
            raise Failure(events[0].line, "first event should be at time 0")
        stopped: Failure | Skip | None = None
        with tempfile.TemporaryDirectory(prefix="packetdrill-") as self.scratch:
            if self.script.init_command:
                await self.apply(command_actions(self.script.init_command), None, init=True)
            self.t0 = self.dut.now()
            self.t0_wall = self.dut.timestamp_clock()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    for event in events:
                        start, end, blocking_end = self.schedule(event)
                        await self.step(event, start, end, blocking_end)
                        self.raise_async_failure()
                        self.last_event = event
                        self.last_time = start
                    await self.await_idle(None, at_end=True)
                except (Failure, Skip) as exc:
                    stopped = exc
                nursery.cancel_scope.cancel()
            self.close_host_fds()
        if stopped is not None:
            raise stopped

    def close_host_fds(self) -> None:
        for handle in self.fds.values():
            if isinstance(handle, int):
                os.close(handle)
            elif isinstance(handle, DutEpoll):
                handle.close()

    async def apply(self, actions: list[Action], line: int | None, init: bool = False) -> None:
        """Carry out a command's actions on the DUT (sysctls of the init command are in its config)."""
        where = f"line {line}: " if line else "init command: "
        for action in actions:
            kind = action[0]
            if kind == "sysctl":
                if not init and not self.dut.set_sysctl(action[1], action[2]):
                    self.notes.append(f"{where}{action[1]} has no counterpart on {self.dut.kind}")
            elif kind in ("qdisc", "route", "offload"):
                setter = {"qdisc": self.dut.set_qdisc, "route": self.dut.set_route,
                          "offload": self.dut.set_offloads}[kind]
                try:
                    done = setter(action[1])
                except Absent as why:
                    raise Skip(line, str(why)) from None
                if not done:
                    self.notes.append(f"{where}{kind} {action[1]} has no effect on {self.dut.kind}")
            elif kind == "either":
                # ``a || b``: a command fails here when a sysctl it sets does not exist on the DUT.
                for alternative in action[1]:
                    if all(self.dut.set_sysctl(a[1], a[2]) for a in alternative if a[0] == "sysctl"):
                        await self.apply([a for a in alternative if a[0] != "sysctl"], line)
                        break
            elif kind == "flush_metrics":
                self.dut.flush_metrics()
            elif kind == "rm":
                Path(self.host_path(action[1])).unlink(missing_ok=True)
            elif kind == "dd":
                Path(self.host_path(action[1])).write_bytes(bytes(action[2]))
            elif kind == "inspect":
                try:
                    self.dut.inspect(action[1])
                except subprocess.CalledProcessError as exc:
                    raise Failure(line, f"command failed with status {exc.returncode}: {action[1]}") from None
                except Unsupported as exc:
                    raise Failure(line, str(exc)) from None
        await trio.lowlevel.checkpoint()

    def host_path(self, path: str) -> str:
        """A script's /tmp path, in the runner's scratch folder (scripts never touch the host's /tmp)."""
        if not _scratch(path):
            raise Skip(None, f"only files in /tmp are supported, not {path}")
        return os.path.join(self.scratch, path.removeprefix("/tmp/"))

    def raise_async_failure(self) -> None:
        if self.async_failure is not None:
            raise self.async_failure

    async def step(self, event: Event, start: float, end: float | None, blocking_end: float | None) -> None:
        action = event.action
        if isinstance(action, PacketSpec):
            if action.direction == "<":
                await self.wait_until(event, start)
                self.inbound(event, action)
            else:
                await self.outbound(event, action, start, end)
        elif isinstance(action, SyscallSpec):
            await self.syscall(event, action, start, blocking_end)
        elif isinstance(action, CommandSpec):
            await self.wait_until(event, start)
            await self.apply(command_actions(action.text, event.line), event.line)
        elif isinstance(action, CodeSpec):
            await self.wait_until(event, start)
            self.code(event, action)

    # -- inbound packets

    def inbound(self, event: Event, spec: PacketSpec) -> None:
        if spec.protocol == "icmp":
            self.inbound_icmp(event, spec)
            return
        flow = self.flow
        if spec.has("S") and not spec.has(".") and (flow is None or flow.state == "listening"):
            if not self.listening:
                raise Failure(event.line, "inbound SYN but no socket is listening")
            flow = self.flow = Flow(
                "tcp", "syn_received", (self.dut.address, self.bound_port),
                (self.dut.peer, next(self.remote_ports)),
                script_remote_isn=spec.seq, live_remote_isn=spec.seq,
            )
        if flow is None or flow.state == "listening":
            raise Failure(event.line, "no matching socket for script packet")
        if flow.state == "synack_sent" and spec.has("."):
            flow.state = "established"
        elif flow.state == "syn_sent" and spec.has("S") and spec.has("."):
            flow.state = "established"
            flow.script_remote_isn = flow.live_remote_isn = spec.seq
        elif flow.state == "syn_sent" and spec.has("S"):
            flow.script_remote_isn = flow.live_remote_isn = spec.seq  # simultaneous open
        seq = (spec.seq + flow.remote_offset(spec.has("S"))) & 0xFFFFFFFF
        ack = spec.ack or 0
        if spec.has("."):
            ack = (ack + flow.local_offset(spec.has("S"))) & 0xFFFFFFFF
        options = b"".join(self.inbound_option(event, flow, option, spec.has(".")) for option in spec.options or [])
        sport, dport = spec.ports or (flow.remote[1], flow.local[1])
        self.dut.inject(build_segment(
            flow.remote[0], flow.local[0], sport, dport, seq, ack, _flag_bits(spec.flags),
            spec.window or 0, spec.urg, options, bytes(spec.payload_len), ttl=spec.ip.ttl or 64,
            tos=_tos_byte(spec),
        ), self.gso_size if spec.payload_len > self.gso_size else 0)
        self.log(f"line {event.line}: injected {_spec_text(spec)}")

    def inbound_icmp(self, event: Event, spec: PacketSpec) -> None:
        """An ICMP error from the remote host about one of the DUT's segments: the quoted
        segment's sequence numbers are the DUT's (mapped as in outbound lines)."""
        flow = self.flow
        if flow is None or flow.state == "listening":
            raise Failure(event.line, "no connection for the ICMP line to quote")
        kind, code = icmp_numbers(spec, event.line)
        quoted = build_segment(flow.local[0], flow.remote[0], flow.local[1], flow.remote[1],
                               spec.seq + flow.local_offset(), 0, 0, 0, 0, b"", b"")
        # The DUT's IP header with its total length (as sent), then the first 8 bytes of TCP.
        quoted = quoted[:2] + struct.pack("!H", 40 + spec.payload_len) + quoted[4:28]
        rest = spec.icmp_mtu or 0 if kind == ICMP_UNREACH else 0
        self.dut.inject(build_icmp_packet(flow.remote[0], flow.local[0], kind, code, rest, quoted,
                                          ttl=spec.ip.ttl or 64, tos=_tos_byte(spec)))
        self.log(f"line {event.line}: injected < icmp {spec.icmp_type} {spec.icmp_code or ''}")

    def inbound_option(self, event: Event, flow: Flow, option: TcpOption, has_ack: bool) -> bytes:
        """One option of an inbound segment, as bytes: SACK blocks and TS ecr mapped to live values."""
        if option.name == "sack":
            return _option_bytes(SACK, b"".join(
                struct.pack("!II", (a + flow.local_offset()) & 0xFFFFFFFF, (b + flow.local_offset()) & 0xFFFFFFFF)
                for a, b in option.values))
        if option.name == "TS":
            val, ecr = option.values
            if has_ack:
                if ecr not in flow.ts_map:
                    raise Failure(event.line, f"unable to infer live TS ecr for script TS ecr {ecr}; "
                                              "no matching or preceding outbound TS val")
                ecr = flow.ts_map[ecr]
            return _option_bytes(TIMESTAMP, struct.pack("!II", val, ecr))
        return _script_option_bytes([option])

    # -- outbound packets

    def matches(self, data: bytes) -> _Live | None:
        """The packet as seen for the flow under test, or None if it belongs to something else."""
        flow = self.flow
        if flow is None:
            return None
        try:
            ip = parse_ipv4(data)
        except (ValueError, struct.error):
            return None
        if ip.version != 4 or ip.protocol != 6 or ip.frag_offset or len(ip.payload) < 20:
            return None
        tcp = parse_tcp(ip.payload)
        live = _Live(self.live(), tcp, ip.tos, ip.ttl, data)
        if ((ip.src, tcp.sport) == flow.local and (ip.dst, tcp.dport) == flow.remote
                and flow.state != "connecting"):
            return live
        if (flow.state == "connecting" and tcp.has(SYN) and not tcp.has(ACK)
                and (ip.dst, tcp.dport) == flow.remote):
            flow.local = (ip.src, tcp.sport)
            flow.live_local_isn = tcp.seq
            flow.state = "syn_sent"
            return live
        return None

    async def outbound(self, event: Event, spec: PacketSpec, start: float, end: float | None) -> None:
        flow = self.flow
        if flow is None or flow.state == "listening":
            raise Failure(event.line, "no socket under test for this outbound packet")
        if spec.has("S") and spec.has(".") and flow.state == "syn_received":
            flow.script_local_isn = spec.seq
            learn_isn = True
        else:
            learn_isn = False
        if flow.state == "connecting" and spec.has("S") and not spec.has("."):
            flow.script_local_isn = spec.seq
        tolerance = self.tolerance_for(start, self.last_time if self.last_event else None)
        if event.time.kind == "any":
            deadline = self.t0 + self.live() + ANY_TIME_LIMIT
        else:
            deadline = self.t0 + (end if end is not None else start) + tolerance + LATE_GRACE
        pieces: list[_Live] = []
        total = 0
        while True:
            got = await self.dut.receive(deadline)
            if got is None:
                if pieces:
                    raise Failure(event.line, f"live packet payload: expected {spec.payload_len} bytes "
                                              f"vs actual {total} bytes (no more segments)")
                raise Failure(event.line, f"expected outbound packet {_spec_text(spec)} at "
                                          f"{start:.6f} sec, but none arrived")
            when, data = got
            live = self.matches(data)
            if live is None:
                self.log(f"ignored (another flow): {describe(data)}", when - self.t0)
                continue
            live.time = when - self.t0
            if learn_isn and not pieces:
                flow.live_local_isn = live.tcp.seq
                flow.state = "synack_sent"
            self.log(f"line {event.line}: sniffed > {self.actual_text(live, flow)}", live.time)
            if pieces:
                self.check_piece(event, spec, pieces[-1], live, total)
            pieces.append(live)
            total += len(live.tcp.payload)
            if total >= spec.payload_len or self.strict_segments:
                break
        if total != spec.payload_len:
            raise Failure(event.line, f"live packet payload: expected {spec.payload_len} bytes vs actual "
                                      f"{total} bytes\n  script: {_spec_text(spec)}\n  actual: "
                                      f"{self.actual_text(pieces[0], flow)}")
        self.verify(event, spec, flow, pieces)
        self.check_time("outbound packet", event.time.kind, start, end, pieces[0].time,
                        self.last_time if self.last_event else None, event.line)

    def check_piece(self, event: Event, spec: PacketSpec, previous: _Live, live: _Live, sniffed: int) -> None:
        """packetdrill's verify_packet_fragments: one more TSO piece must fit after the previous."""
        a, b = previous.tcp, live.tcp
        same = ~(FIN | PSH | CWR)
        problem = None
        if a.flags & same != b.flags & same:
            problem = f"flags {flags_text(a.flags)} then {flags_text(b.flags)}"
        elif (a.seq + len(a.payload)) & 0xFFFFFFFF != b.seq:
            problem = "sequence numbers do not continue"
        elif (a.ack, a.window, a.urgent, a.data_offset) != (b.ack, b.window, b.urgent, b.data_offset):
            problem = "ACK, window, urgent pointer or header length changed"
        elif len(b.payload) < spec.payload_len - sniffed and len(b.payload) != len(a.payload):
            problem = f"piece of {len(b.payload)} bytes after one of {len(a.payload)}"
        if problem:
            raise Failure(event.line, f"segments do not add up to the expected one ({problem}): "
                                      f"script {_spec_text(spec)}")

    def actual_text(self, live: _Live, flow: Flow) -> str:
        tcp = live.tcp
        seq = (tcp.seq - flow.local_offset(tcp.has(SYN))) & 0xFFFFFFFF
        ack = (tcp.ack - flow.remote_offset(tcp.has(SYN))) & 0xFFFFFFFF if tcp.has(ACK) else tcp.ack
        return (f"{flags_text(tcp.flags)} {seq}:{(seq + len(tcp.payload)) & 0xFFFFFFFF}({len(tcp.payload)}) "
                f"ack {ack} win {tcp.window} <{format_options(tcp.options)}>")

    def verify(self, event: Event, spec: PacketSpec, flow: Flow, pieces: list[_Live]) -> None:
        first, last = pieces[0], pieces[-1]
        tcp = first.tcp
        flags = (tcp.flags & ~(FIN | PSH)) | (last.tcp.flags & (FIN | PSH))
        payload = b"".join(p.tcp.payload for p in pieces)
        seq = (tcp.seq - flow.local_offset(tcp.has(SYN))) & 0xFFFFFFFF
        ack = (tcp.ack - flow.remote_offset(tcp.has(SYN))) & 0xFFFFFFFF if tcp.has(ACK) else tcp.ack
        # TS val: remember script -> live, and map the live value into script space.
        script_ts = _script_ts(spec)
        live_ts = next((struct.unpack("!II", d) for k, d in tcp.options if k == TIMESTAMP and len(d) == 8), None)
        mapped_ts = None
        if script_ts is not None and live_ts is not None:
            flow.ts_map[script_ts[0]] = live_ts[0]
            if flow.first_ts is None:
                flow.first_ts = (script_ts[0], live_ts[0])
            mapped_ts = (flow.first_ts[0] + live_ts[0] - flow.first_ts[1]) & 0xFFFFFFFF

        def mismatch(name: str, expected: object, actual: object) -> Failure:
            return Failure(event.line, f"live packet field {name}: expected: {expected} vs actual: {actual}\n"
                                       f"  script: {_spec_text(spec)}\n  actual: {self.actual_text(first, flow)}")

        script_options = _script_option_bytes(spec.options) if spec.options is not None else None
        if script_options is not None and tcp.data_offset != 20 + len(script_options):
            raise mismatch("tcp_data_offset", 20 + len(script_options), tcp.data_offset)
        if spec.ip.tos is not None and first.ip_tos != spec.ip.tos:
            raise mismatch("tos", spec.ip.tos, first.ip_tos)
        if spec.ip.ecn is not None:
            ecn = first.ip_tos & 3
            wanted = {"no_ecn": (0,), "ect1": (1,), "ect0": (2,), "ce": (3,), "ect01": (1, 2)}[spec.ip.ecn]
            if ecn not in wanted:
                raise mismatch("ip_ecn", spec.ip.ecn, ecn)
        if spec.ip.ttl is not None and first.ip_ttl != spec.ip.ttl:
            raise mismatch("ttl", spec.ip.ttl, first.ip_ttl)
        wanted_flags = _flag_bits(spec.flags)
        for bit, name in ((FIN, "tcp_fin"), (SYN, "tcp_syn"), (RST, "tcp_rst"), (PSH, "tcp_psh"),
                          (ACK, "tcp_ack"), (URG, "tcp_urg"), (ECE, "tcp_ece"), (CWR, "tcp_cwr"),
                          (AE, "tcp_ae")):
            if bool(flags & bit) != bool(wanted_flags & bit):
                raise mismatch(name, int(bool(wanted_flags & bit)), int(bool(flags & bit)))
        if tcp.reserved:
            raise mismatch("tcp_reserved_bits", 0, tcp.reserved)
        if seq != spec.seq:
            raise mismatch("tcp_seq", spec.seq, seq)
        if ack != (spec.ack or 0):
            raise mismatch("tcp_ack_seq", spec.ack or 0, ack)
        if spec.window is not None and tcp.window != spec.window:
            raise mismatch("tcp_window", spec.window, tcp.window)
        if tcp.urgent != spec.urg:
            raise mismatch("tcp_urg_ptr", spec.urg, tcp.urgent)
        if script_options is not None:
            problem = self.compare_options(spec.options or [], tcp.options, flow, mapped_ts)
            if problem:
                raise mismatch("tcp_options", format_options(_options_as_pairs(spec.options or [])),
                               f"{format_options(tcp.options)} ({problem})")
        if payload != bytes(len(payload)):
            raise Failure(event.line, "incorrect outbound data payload (not the zeros the script wrote)")

    def compare_options(self, script: list[TcpOption], live: list[tuple[int, bytes]], flow: Flow,
                        mapped_ts: int | None) -> str | None:
        wanted = _options_as_pairs(script)
        if [k for k, _ in wanted] != [k for k, _ in live]:
            return "bad outbound TCP options"
        for (kind, want), (_, got) in zip(wanted, live, strict=True):
            if kind == TIMESTAMP:
                if self.ts_tick and mapped_ts is not None:
                    script_val = struct.unpack("!I", want[:4])[0]
                    if abs(_s32(mapped_ts - script_val)) * self.ts_tick > self.tolerance + 1e-9:
                        return f"bad outbound TCP timestamp value, tolerance {int(self.tolerance * 1e6)}"
                continue
            if kind == SACK:
                edges = struct.unpack(f"!{len(got) // 4}I", got) if len(got) % 4 == 0 else ()
                got = struct.pack(f"!{len(edges)}I", *((e - flow.remote_offset()) & 0xFFFFFFFF for e in edges))
            if len(want) != len(got):
                return f"bad lengths for outbound TCP option {kind}"
            if want != got:
                return f"bad value outbound TCP option {kind}"
        return None

    # -- system calls

    async def syscall(self, event: Event, spec: SyscallSpec, start: float, blocking_end: float | None) -> None:
        await self.await_idle(event)
        await self.wait_until(event, start)
        if blocking_end is None:
            with trio.move_on_after(NONBLOCKING_LIMIT) as scope:
                outcome = await self.invoke(event, spec)
            if scope.cancelled_caught:
                raise Failure(event.line, f"{spec.name}() blocked, but the script does not mark it as "
                                          "a blocking call (with ...end_time)")
            self.check_result(event, spec, outcome)
            return
        assert self.nursery is not None
        blocking = self.blocking = _Blocking(event, blocking_end, start)
        self.nursery.start_soon(self.run_blocking, blocking, spec)
        await trio.testing.wait_all_tasks_blocked()

    async def run_blocking(self, blocking: _Blocking, spec: SyscallSpec) -> None:
        event = blocking.event
        try:
            outcome = await self.invoke(event, spec)
            self.check_result(event, spec, outcome)
            self.check_time("system call return", event.time.kind, blocking.expected_end, None,
                            self.live(), blocking.start, event.line)
        except Failure as failure:
            if self.async_failure is None:
                self.async_failure = failure
        except Skip as skip:
            if self.async_failure is None:
                self.async_failure = Failure(skip.line, skip.reason)
        finally:
            blocking.done.set()

    async def await_idle(self, event: Event | None, at_end: bool = False) -> None:
        blocking = self.blocking
        if blocking is None:
            return
        with trio.move_on_after(BLOCKING_WAIT):
            await blocking.done.wait()
        self.raise_async_failure()
        if not blocking.done.is_set():
            what = ("exiting while a blocking system call is in progress" if at_end else
                    "blocking system call while another blocking system call is already in progress")
            raise Failure(blocking.event.line, what)
        self.blocking = None

    async def invoke(self, event: Event, spec: SyscallSpec) -> tuple[int, int | None]:
        """Run the call on the DUT: (return value, errno or None)."""
        handler = getattr(self, f"sys_{spec.name}")
        self.log(f"line {event.line}: {spec.name}() starts")
        try:
            result = await handler(event, spec, [self.value(a) for a in spec.args])
        except (Failure, Skip):
            raise
        except Unsupported as exc:
            raise Failure(event.line, str(exc)) from None
        except OSError as exc:
            self.log(f"line {event.line}: {spec.name}() = -1 {_errno.errorcode.get(exc.errno or 0, exc.errno)}")
            return -1, exc.errno
        except Exception as exc:
            raise Failure(event.line, f"{spec.name}() raised {type(exc).__name__}: {exc}") from exc
        self.log(f"line {event.line}: {spec.name}() = {result}")
        return result, None

    def check_result(self, event: Event, spec: SyscallSpec, outcome: tuple[int, int | None]) -> None:
        result, error = outcome
        expected = spec.result
        if expected is ELLIPSIS:
            return
        expected_value = self.value(expected)
        if not isinstance(expected_value, int):
            raise Skip(event.line, f"cannot check result {expected!r}")
        if error is not None or spec.errno:
            wanted = getattr(_errno, spec.errno, None) if spec.errno else error  # no name: any errno
            if result != expected_value or error != wanted:
                got = _errno.errorcode.get(error, str(error)) if error else "success"
                raise Failure(event.line, f"{spec.name}() returned {result} ({got}); expected "
                                          f"{expected_value}{' ' + spec.errno if spec.errno else ''}")
            return
        if result != expected_value:
            raise Failure(event.line, f"{spec.name}() returned {result}; expected {expected_value}")

    def value(self, expr: object) -> object:
        if isinstance(expr, Symbol):
            if expr.name in SYMBOLS:
                return SYMBOLS[expr.name]
            if hasattr(_errno, expr.name):
                return getattr(_errno, expr.name)
            return expr
        if isinstance(expr, Or):
            total = 0
            for item in expr.items:
                v = self.value(item)
                if not isinstance(v, int):
                    raise Skip(None, f"unknown symbol in {expr!r}")
                total |= v
            return total
        if isinstance(expr, list):
            return [self.value(e) for e in expr]
        return expr

    def sock(self, event: Event, fd: object) -> DutSocket:
        handle = self.fds.get(fd) if isinstance(fd, int) else None
        if not isinstance(handle, DutSocket):
            raise Failure(event.line, f"bad file descriptor {fd!r} in script (not a socket)")
        return handle

    def epoll_handle(self, event: Event, fd: object) -> DutEpoll:
        handle = self.fds.get(fd) if isinstance(fd, int) else None
        if not isinstance(handle, DutEpoll):
            raise Failure(event.line, f"bad file descriptor {fd!r} in script (not an epoll)")
        return handle

    def host_fd(self, event: Event, fd: object) -> int:
        handle = self.fds.get(fd) if isinstance(fd, int) else None
        if not isinstance(handle, int):
            raise Failure(event.line, f"bad file descriptor {fd!r} in script (not a file or pipe)")
        return handle

    def new_fd(self, event: Event, spec: SyscallSpec, sock: DutSocket | DutEpoll | int) -> int:
        expected = self.value(spec.result)
        if not isinstance(expected, int) or expected < 0:
            raise Failure(event.line, f"{spec.name}() returned a socket, but the script expected {expected}")
        self.fds[expected] = sock
        return expected

    async def sys_socket(self, event: Event, spec: SyscallSpec, args: list) -> int:
        kind = args[1] if len(args) > 1 and isinstance(args[1], int) else SYMBOLS["SOCK_STREAM"]
        proto = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        nonblocking = bool(kind & SYMBOLS["SOCK_NONBLOCK"])
        sock = self.dut.socket(kind & 0xF, proto)
        if nonblocking:
            sock.set_nonblocking(True)
        fd = self.new_fd(event, spec, sock)
        if nonblocking:
            self.nonblocking.add(fd)
        await trio.lowlevel.checkpoint()
        return fd

    def _address(self, event: Event, expr: object, default: tuple[str, int]) -> tuple[str, int]:
        if expr is ELLIPSIS:
            return default
        if isinstance(expr, Struct):
            try:
                port = expr.field("sin_port")
                addr = expr.field("sin_addr")
            except KeyError:
                raise Skip(event.line, "unsupported socket address") from None
            if isinstance(port, Call) and port.name == "htons" and port.args:
                port = port.args[0]
            if isinstance(addr, Call) and addr.name == "inet_addr" and addr.args and isinstance(addr.args[0], Str):
                addr = addr.args[0].value
            if isinstance(port, int) and isinstance(addr, str):
                return addr, port
        raise Skip(event.line, f"unsupported socket address {expr!r}")

    async def sys_bind(self, event: Event, spec: SyscallSpec, args: list) -> int:
        address = self._address(event, args[1], (self.dut.address, BIND_PORT))
        await self.sock(event, args[0]).bind(address)
        self.bound_port = address[1]
        return 0

    async def sys_listen(self, event: Event, spec: SyscallSpec, args: list) -> int:
        self.sock(event, args[0]).listen(args[1] if isinstance(args[1], int) else 1)
        self.listening = True
        # As packetdrill's: the next inbound SYN makes a new connection under test (a script may test
        # one connection, close it, and listen again).
        self.flow = Flow("tcp", "listening", (self.dut.address, self.bound_port), (self.dut.peer, 0))
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_accept(self, event: Event, spec: SyscallSpec, args: list) -> int:
        child, _peer = await self.sock(event, args[0]).accept()
        self.test_socket = child
        return self.new_fd(event, spec, child)

    async def sys_connect(self, event: Event, spec: SyscallSpec, args: list) -> int:
        address = self.connecting(event, args[0], args[1])
        await self.sock(event, args[0]).connect(address)
        return 0

    async def sys_read(self, event: Event, spec: SyscallSpec, args: list) -> int:
        if args[1] == SYMBOLS["NULL"]:
            return await self.sock(event, args[0]).null_buffer("recv", _int(args[2]), 0)
        return len(await self.sock(event, args[0]).recv(_int(args[2])))

    async def sys_recv(self, event: Event, spec: SyscallSpec, args: list) -> int:
        flags = args[3] if len(args) > 3 and isinstance(args[3], int) else 0
        if args[1] == SYMBOLS["NULL"]:
            return await self.sock(event, args[0]).null_buffer("recv", _int(args[2]), flags)
        return len(await self.sock(event, args[0]).recv(_int(args[2]), flags))

    sys_recvfrom = sys_recv

    async def sys_readv(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return len(await self.sock(event, args[0]).recv(sum(_iov_lengths(event, args[1]))))

    async def sys_write(self, event: Event, spec: SyscallSpec, args: list) -> int:
        if args[1] == SYMBOLS["NULL"]:
            return await self.sock(event, args[0]).null_buffer("send", _int(args[2]), 0)
        return await self.sock(event, args[0]).send(bytes(_int(args[2])))

    async def sys_send(self, event: Event, spec: SyscallSpec, args: list) -> int:
        flags = args[3] if len(args) > 3 and isinstance(args[3], int) else 0
        if args[1] == SYMBOLS["NULL"]:
            return await self.sock(event, args[0]).null_buffer("send", _int(args[2]), flags)
        return await self.sock(event, args[0]).send(bytes(_int(args[2])), flags)

    async def sys_sendto(self, event: Event, spec: SyscallSpec, args: list) -> int:
        """sendto(): with an address on a TCP socket it also connects (MSG_FASTOPEN: data in the SYN)."""
        if len(args) < 5 or not _int(args[3]) & SYMBOLS["MSG_FASTOPEN"]:
            return await self.sys_send(event, spec, args)
        address = self.connecting(event, args[0], args[4])
        return await self.sock(event, args[0]).sendto(bytes(_int(args[2])), address, _int(args[3]))

    def connecting(self, event: Event, fd: object, expr: object) -> tuple[str, int]:
        """The address a connect() (or a Fast Open sendto()) goes to; its flow becomes the one under test
        (a second call on the socket under test, EALREADY or EISCONN, keeps its flow)."""
        address = self._address(event, expr, (self.dut.peer, BIND_PORT))
        sock = self.sock(event, fd)
        if sock is not self.test_socket or self.flow is None:
            self.flow = Flow("tcp", "connecting", (self.dut.address, 0), address)
            self.test_socket = sock
        return address

    async def sys_writev(self, event: Event, spec: SyscallSpec, args: list) -> int:
        return await self.sock(event, args[0]).sendmsg([bytes(n) for n in _iov_lengths(event, args[1])])

    async def sys_sendmsg(self, event: Event, spec: SyscallSpec, args: list) -> int:
        header = args[1]
        if not isinstance(header, Struct):
            raise Skip(event.line, "sendmsg() needs a msghdr")
        try:
            iov = header.field("msg_iov")
        except KeyError:
            raise Skip(event.line, "sendmsg() msghdr without msg_iov") from None
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        buffers = [bytes(n) for n in _iov_lengths(event, self.value(iov))]
        if flags & SYMBOLS["MSG_FASTOPEN"] and _has(header, "msg_name"):
            address = self.connecting(event, args[0], header.field("msg_name"))
            return await self.sock(event, args[0]).sendmsg(buffers, flags, address)
        return await self.sock(event, args[0]).sendmsg(buffers, flags)

    async def sys_close(self, event: Event, spec: SyscallSpec, args: list) -> int:
        handle = self.fds.pop(args[0], None) if isinstance(args[0], int) else None
        if handle is None:
            raise Failure(event.line, f"bad file descriptor {args[0]!r} in script")
        self.nonblocking.discard(args[0])
        if isinstance(handle, int):
            os.close(handle)
        else:
            handle.close()
        await trio.lowlevel.checkpoint()
        return 0

    # -- readiness: poll and epoll

    async def sys_poll(self, event: Event, spec: SyscallSpec, args: list) -> int:
        entries = []
        for item in args[0] if isinstance(args[0], list) else []:
            if not isinstance(item, Struct):
                raise Skip(event.line, f"unsupported pollfd {item!r}")
            entries.append((self.sock(event, self.value(_field(event, item, "fd"))),
                            _int(self.value(_field(event, item, "events"))),
                            _int(self.value(_field(event, item, "revents")))))
        revents = await self.dut.poll([(sock, events) for sock, events, _ in entries], _int(args[2]))
        for index, ((_, _, wanted), got) in enumerate(zip(entries, revents, strict=True)):
            if got != wanted:
                raise Failure(event.line, f"poll: expected revents {_flag_names(wanted, 'POLL')} but got "
                                          f"{_flag_names(got, 'POLL')} for pollfd {index}")
        return sum(1 for got in revents if got)

    async def sys_epoll_create(self, event: Event, spec: SyscallSpec, args: list) -> int:
        await trio.lowlevel.checkpoint()
        return self.new_fd(event, spec, self.dut.epoll())

    async def sys_epoll_ctl(self, event: Event, spec: SyscallSpec, args: list) -> int:
        epoll = self.epoll_handle(event, args[0])
        events, data = self.epoll_event(event, args[3])
        epoll.control(_int(args[1]), self.sock(event, args[2]), events, data)
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_epoll_wait(self, event: Event, spec: SyscallSpec, args: list) -> int:
        """packetdrill checks the first event returned (all zero when none) against the script's."""
        epoll = self.epoll_handle(event, args[0])
        wanted = self.epoll_event(event, args[1])
        ready = await epoll.wait(_int(args[2]), _int(args[3]))
        got = ready[0] if ready else (0, 0)
        if self.result_matches(spec, len(ready)) and got != wanted:
            raise Failure(event.line, f"epoll_wait: expected {{events={_flag_names(wanted[0], 'EPOLL')}, "
                                      f"data={wanted[1]}}} but got {{events={_flag_names(got[0], 'EPOLL')}, "
                                      f"data={got[1]}}}")
        return len(ready)

    def result_matches(self, spec: SyscallSpec, result: int) -> bool:
        """Whether the call returned what the script expects: packetdrill checks what a call filled in
        (events, flags, control messages) only then, after the result."""
        return spec.result is ELLIPSIS or self.value(spec.result) == result

    def epoll_event(self, event: Event, expr: object) -> tuple[int, int]:
        """``{events=..., fd=N}`` (or ``ptr=``, ``u32=``, ``u64=``): the events and the data."""
        if not isinstance(expr, Struct):
            raise Skip(event.line, f"unsupported epoll_event {expr!r}")
        events = _int(self.value(_field(event, expr, "events")))
        for key in ("fd", "ptr", "u32", "u64"):
            try:
                return events, _int(self.value(expr.field(key)))
            except KeyError:
                continue
        raise Skip(event.line, "epoll_event without data (fd, ptr, u32 or u64)")

    # -- ioctl, recvmsg

    async def sys_ioctl(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        request = _int(args[1])
        value = sock.ioctl(request)
        wanted = args[2] if len(args) > 2 else ELLIPSIS
        if isinstance(wanted, list) and len(wanted) == 1 and isinstance(wanted[0], int) and value != wanted[0]:
            raise Failure(event.line, f"ioctl({_flag_names(request, 'SIOC')}): expected {wanted[0]}, got {value}")
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_recvmsg(self, event: Event, spec: SyscallSpec, args: list) -> int:
        """packetdrill's checks: the result, msg_flags (0 when the script has none), then each cmsg."""
        header = args[1]
        if not isinstance(header, Struct):
            raise Skip(event.line, "recvmsg() needs a msghdr")
        size = sum(_iov_lengths(event, self.value(_field(event, header, "msg_iov"))))
        try:
            control = self.value(header.field("msg_control"))
        except KeyError:
            control = None
        try:
            wanted_flags = _int(self.value(header.field("msg_flags")))
        except KeyError:
            wanted_flags = 0
        data, ancillary, msg_flags = await self.sock(event, args[0]).recvmsg(
            size, CONTROL_SPACE if control is not None else 0, _int(args[2]))
        if self.result_matches(spec, len(data)):
            if msg_flags != wanted_flags:
                raise Failure(event.line, f"Expected msg_flags {wanted_flags:#010x} but got {msg_flags:#010x}")
            if control is not None:
                self.check_control(event, control, ancillary)
        return len(data)

    def check_control(self, event: Event, wanted: object, actual: list) -> None:
        """packetdrill's cmsg_expect_eq: level, type and data of each control message, in order."""
        wanted = wanted if isinstance(wanted, list) else []
        for index, (cmsg, (level, kind, data)) in enumerate(zip(wanted, actual, strict=False)):
            if not isinstance(cmsg, Struct):
                raise Skip(event.line, f"unsupported cmsg {cmsg!r}")
            want_level = _int(self.value(_field(event, cmsg, "cmsg_level")))
            want_kind = _int(self.value(_field(event, cmsg, "cmsg_type")))
            if level != want_level:
                raise Failure(event.line, f"Bad level in cmsg {index}: expected={want_level} actual={level}")
            if kind != want_kind:
                raise Failure(event.line, f"Bad type in cmsg {index}: expected={want_kind} actual={kind}")
            problem = self.cmsg_data_problem(event, self.value(_field(event, cmsg, "cmsg_data")), data)
            if problem:
                raise Failure(event.line, f"Bad data in cmsg {index}: {problem}")
        if len(actual) != len(wanted):
            raise Failure(event.line, f"received {'more than' if len(actual) > len(wanted) else 'only'} "
                                      f"{min(len(actual), len(wanted))} cmsgs")

    def cmsg_data_problem(self, event: Event, wanted: object, data: bytes) -> str | None:
        if isinstance(wanted, int):
            if len(data) != 4:
                return f"expected an int, got {len(data)} bytes"
            got = struct.unpack("i", data)[0]
            return None if got == wanted else f"expected={wanted} actual={got}"
        if isinstance(wanted, Struct) and _has(wanted, "ee_errno"):
            if len(data) < _EXTENDED_ERR.size:
                return f"sock_extended_err of {len(data)} bytes"
            got = dict(zip(_EXTENDED_ERR_FIELDS, _EXTENDED_ERR.unpack_from(data), strict=True))
            for name in _EXTENDED_ERR_FIELDS:
                if name == "pad":
                    continue
                want = _int(self.value(_field(event, wanted, name)))
                if got[name] != want:
                    return f"bad {name.removeprefix('ee_')} in extended err: expected={want} actual={got[name]}"
            return None
        if isinstance(wanted, Struct) and _has(wanted, "scm_sec"):
            return self.timestamp_problem(event, wanted, data)
        raise Skip(event.line, f"unsupported cmsg_data {wanted!r}")

    def timestamp_problem(self, event: Event, wanted: Struct, data: bytes) -> str | None:
        """scm_timestamping: a non-zero script time must match the kernel's stamp within the tolerance."""
        seconds = _int(self.value(_field(event, wanted, "scm_sec")))
        nanoseconds = _int(self.value(_field(event, wanted, "scm_nsec")))
        if not seconds and not nanoseconds:
            return None
        if len(data) < 16:
            return f"scm_timestamping of {len(data)} bytes"
        live_sec, live_nsec = struct.unpack_from("qq", data)
        actual = live_sec + live_nsec / 1e9 - self.t0_wall
        expected = seconds + nanoseconds / 1e9
        if abs(actual - expected) > self.tolerance + self.dut.timing_slack:
            return f"timestamp expected at {expected:.6f} sec, stamped at {actual:.6f} sec"
        return None

    # -- files, pipes, sendfile, splice

    async def sys_open(self, event: Event, spec: SyscallSpec, args: list) -> int:
        if not args or not isinstance(args[0], Str):
            raise Skip(event.line, "open() needs a path")
        flags = _int(args[1]) if len(args) > 1 else 0
        handle = os.open(self.host_path(args[0].value), flags | os.O_CLOEXEC, 0o600)
        await trio.lowlevel.checkpoint()
        return self.new_fd(event, spec, handle)

    async def sys_pipe(self, event: Event, spec: SyscallSpec, args: list) -> int:
        fds = args[0]
        if not (isinstance(fds, list) and len(fds) == 2 and all(isinstance(fd, int) for fd in fds)):
            raise Skip(event.line, "pipe() needs [read_fd, write_fd]")
        self.fds[fds[0]], self.fds[fds[1]] = os.pipe()
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_sendfile(self, event: Event, spec: SyscallSpec, args: list) -> int:
        offset = args[2]
        if not (isinstance(offset, list) and len(offset) == 1 and isinstance(offset[0], int)):
            raise Skip(event.line, "sendfile() needs an [offset]")
        return await self.sock(event, args[0]).sendfile(self.host_fd(event, args[1]), offset[0], _int(args[3]))

    async def sys_splice(self, event: Event, spec: SyscallSpec, args: list) -> int:
        if args[1] != SYMBOLS["NULL"] or args[3] != SYMBOLS["NULL"]:
            raise Skip(event.line, "splice() with offsets is not supported")
        return await self.sock(event, args[0]).splice_to(self.host_fd(event, args[2]), _int(args[4]),
                                                         _int(args[5]))

    async def sys_shutdown(self, event: Event, spec: SyscallSpec, args: list) -> int:
        self.sock(event, args[0]).shutdown(_int(args[1]))
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_setsockopt(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        sock.setsockopt(_int(args[1]), _int(args[2]), self.option_value(event, args[3]))
        await trio.lowlevel.checkpoint()
        return 0

    def option_value(self, event: Event, expr: object) -> int | bytes:
        expr = self.value(expr)
        if isinstance(expr, list) and len(expr) == 1 and isinstance(expr[0], int):
            expr = expr[0]
        if isinstance(expr, int):
            # The kernel reads an int; a script's 0xffffffff is that int's bit pattern.
            return struct.pack("I", expr) if expr > 0x7FFFFFFF else expr
        if isinstance(expr, Str):
            return expr.value.encode("latin-1")  # a script's "\xf7" is the byte 0xf7
        if isinstance(expr, Struct):
            try:
                return struct.pack("ii", _int(expr.field("onoff")), _int(expr.field("linger")))
            except KeyError:
                pass
        raise Skip(event.line, f"unsupported socket option value {expr!r}")

    async def sys_getsockopt(self, event: Event, spec: SyscallSpec, args: list) -> int:
        sock = self.sock(event, args[0])
        wanted = self.value(args[3])
        level, option = _int(args[1]), _int(args[2])
        if isinstance(wanted, Struct):
            raw = sock.getsockopt(level, option, 8)
            onoff, seconds = struct.unpack("ii", raw if isinstance(raw, bytes) else struct.pack("ii", raw, 0))
            expected = (_int(wanted.field("onoff")), _int(wanted.field("linger")))
            if (onoff, seconds) != expected:
                raise Failure(event.line, f"getsockopt: expected {{onoff={expected[0]}, linger={expected[1]}}}, "
                                          f"got {{onoff={onoff}, linger={seconds}}}")
        else:
            value = sock.getsockopt(level, option)
            if isinstance(value, bytes):
                value = int.from_bytes(value[:4], "little", signed=True)
            if (isinstance(wanted, list) and len(wanted) == 1 and isinstance(wanted[0], int)
                    and value & 0xFFFFFFFF != wanted[0] & 0xFFFFFFFF):
                raise Failure(event.line, f"getsockopt({_symbol_name(option)}): expected {wanted[0]}, got {value}")
        await trio.lowlevel.checkpoint()
        return 0

    async def sys_fcntl(self, event: Event, spec: SyscallSpec, args: list) -> int:
        fd = args[0]
        sock = self.sock(event, fd)
        cmd = _int(args[1])
        await trio.lowlevel.checkpoint()
        if cmd == SYMBOLS["F_SETFL"]:
            nonblocking = bool(_int(args[2]) & SYMBOLS["O_NONBLOCK"])
            sock.set_nonblocking(nonblocking)
            if nonblocking:
                self.nonblocking.add(fd)
            else:
                self.nonblocking.discard(fd)
            return 0
        if cmd == SYMBOLS["F_GETFL"]:
            return SYMBOLS["O_RDWR"] | (SYMBOLS["O_NONBLOCK"] if fd in self.nonblocking else 0)
        raise Skip(event.line, f"fcntl command {cmd} is not supported")

    # -- code blocks

    def code(self, event: Event, spec: CodeSpec) -> None:
        if self.test_socket is None:
            self.notes.append(f"line {event.line}: code block skipped (no socket under test)")
            return
        try:
            info = self.test_socket.tcp_info()
        except OSError as exc:
            raise Failure(event.line, f"cannot read tcp_info: {exc}") from exc
        try:
            problem = evaluate_code(spec.text, info, self.code_variables)
        except _Unavailable as why:
            self.notes.append(f"line {event.line}: code block skipped ({why})")
            return
        if problem:
            raise Failure(event.line, problem)


# ---------------------------------------------------------------- helpers


def _anchored(event: Event) -> bool:
    action = event.action
    return isinstance(action, PacketSpec) and action.direction == "<"


def _description(event: Event) -> str:
    action = event.action
    if isinstance(action, PacketSpec):
        return "inbound packet" if action.direction == "<" else "outbound packet"
    if isinstance(action, SyscallSpec):
        return "system call start"
    if isinstance(action, CommandSpec):
        return "command"
    return "data collection for code"


def _int(value: object) -> int:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int):
        raise Skip(None, f"expected a number, got {value!r}")
    return value


_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_EXTENDED_ERR_FIELDS = ("ee_errno", "ee_origin", "ee_type", "ee_code", "pad", "ee_info", "ee_data")


def _field(event: Event, expr: Struct, name: str) -> object:
    try:
        return expr.field(name)
    except KeyError:
        raise Skip(event.line, f"structure without {name}: {expr!r}") from None


def _has(expr: Struct, name: str) -> bool:
    try:
        expr.field(name)
    except KeyError:
        return False
    return True


def _flag_names(value: int, prefix: str) -> str:
    """``EPOLLIN|EPOLLOUT`` for 5 (the symbols of ``prefix`` whose bits make up ``value``), or the number."""
    family = {k: v for k, v in SYMBOLS.items() if k.startswith(prefix) and "_" not in k[len(prefix):]}
    names = [k for k, v in family.items() if v and v & (v - 1) == 0 and value & v]
    rest = value
    for name in names:
        rest &= ~SYMBOLS[name]
    exact = next((k for k, v in family.items() if v == value), None)
    if exact and not names:
        return exact
    return "|".join(names) if names and not rest else f"{value:#x}"


def _iov_lengths(event: Event, iov: object) -> list[int]:
    lengths = []
    for item in iov if isinstance(iov, list) else []:
        if isinstance(item, Struct) and len(item.items) == 2 and isinstance(item.items[1], int):
            lengths.append(item.items[1])
        else:
            raise Skip(event.line, f"unsupported iovec {item!r}")
    return lengths


def _symbol_name(value: int) -> str:
    return next((k for k, v in SYMBOLS.items() if v == value and k.startswith(("SO_", "TCP_"))), str(value))


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _flag_bits(flags: str) -> int:
    bits = 0
    for c, bit in (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), (".", ACK), ("U", URG),
                   ("E", ECE), ("W", CWR), ("A", AE)):
        if c in flags:
            bits |= bit
    ace = next((int(c) for c in flags if c.isdigit()), 0)
    if ace:
        bits |= (ECE if ace & 1 else 0) | (CWR if ace & 2 else 0) | (AE if ace & 4 else 0)
    return bits


def _tos_byte(spec: PacketSpec) -> int:
    if spec.ip.tos is not None:
        return spec.ip.tos
    return {"ect1": 1, "ect0": 2, "ce": 3}.get(spec.ip.ecn or "", 0)


def _script_ts(spec: PacketSpec) -> tuple[int, int] | None:
    for option in spec.options or []:
        if option.name == "TS":
            return option.values[0], option.values[1]
    return None


def _options_as_pairs(options: list[TcpOption]) -> list[tuple[int, bytes]]:
    pairs: list[tuple[int, bytes]] = []
    for option in options:
        name, values = option.name, option.values
        if name == "nop":
            pairs.append((NOP, b""))
        elif name == "eol":
            pairs.append((EOL, b""))
        elif name == "mss":
            pairs.append((MSS, struct.pack("!H", values[0])))
        elif name == "wscale":
            pairs.append((WSCALE, bytes([values[0]])))
        elif name == "sackOK":
            pairs.append((SACK_PERM, b""))
        elif name == "sack":
            pairs.append((SACK, b"".join(struct.pack("!II", a, b) for a, b in values)))
        elif name == "TS":
            pairs.append((TIMESTAMP, struct.pack("!II", *values)))
        elif name == "FO":
            pairs.append((FASTOPEN, bytes.fromhex(values[0]) if values else b""))
        elif name == "FOEXP":
            pairs.append((254, b"\xf9\x89" + (bytes.fromhex(values[0]) if values else b"")))
        elif name == "md5":
            pairs.append((MD5, bytes(16)))
    return pairs


def _option_bytes(kind: int, data: bytes) -> bytes:
    return bytes([kind]) if kind in (NOP, EOL) else bytes([kind, len(data) + 2]) + data


def _script_option_bytes(options: list[TcpOption]) -> bytes:
    return b"".join(_option_bytes(kind, data) for kind, data in _options_as_pairs(options))


def build_segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                  urgent: int, options: bytes, payload: bytes, ttl: int = 64, tos: int = 0) -> bytes:
    """An IPv4/TCP packet with correct checksums, built with struct.

    The runner builds inbound segments itself rather than with scapy:
    scapy takes over a millisecond a packet, and three back-to-back
    inbound packets would then miss packetdrill's 4 ms tolerance.
    """
    if len(options) % 4:
        raise ValueError("TCP options must be padded to a multiple of 4 bytes")
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         (offset << 4) | (1 if flags & AE else 0), flags & 0xFF, window, 0, urgent)
    segment = header + options + payload
    saddr, daddr = aton(src), aton(dst)
    csum = internet_checksum(segment, pseudo_header_sum(saddr, daddr, 6, len(segment)))
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(segment), 0, 0, ttl, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return ip + segment


ICMP_UNREACH = 3
# packetdrill's names for ICMP types, and for the codes of those with named codes.
ICMP_TYPES = {"echo_reply": 0, "unreachable": ICMP_UNREACH, "source_quench": 4, "redirect": 5,
              "echo_request": 8, "time_exceeded": 11, "parameter_problem": 12}
ICMP_CODES = {
    ICMP_UNREACH: {"net_unreachable": 0, "host_unreachable": 1, "protocol_unreachable": 2,
                   "port_unreachable": 3, "frag_needed": 4, "source_route_failed": 5, "net_unknown": 6,
                   "host_unknown": 7, "source_host_isolated": 8, "net_prohibited": 9,
                   "host_prohibited": 10, "net_unreachable_for_tos": 11,
                   "host_unreachable_for_tos": 12, "packet_filtered": 13,
                   "precedence_violation": 14, "precedence_cutoff": 15},
    11: {"ttl_exceeded": 0, "fragment_reassembly_time_exceeded": 1},
}


def icmp_numbers(spec: PacketSpec, line: int | None) -> tuple[int, int]:
    """The type and code of an inbound ICMP line that quotes a TCP segment; Skip otherwise."""
    if spec.unsupported:
        raise Skip(line, spec.unsupported)
    if spec.icmp_echoed != "tcp":
        raise Skip(line, "an ICMP line must quote a TCP segment ([seq:end(len)]) to be run")
    kind = ICMP_TYPES.get(spec.icmp_type)
    if kind is None:
        raise Skip(line, f"ICMP type {spec.icmp_type} is not supported")
    if spec.icmp_code is None:
        return kind, 0
    if spec.icmp_code.isdigit():
        return kind, int(spec.icmp_code)
    code = ICMP_CODES.get(kind, {}).get(spec.icmp_code)
    if code is None:
        raise Skip(line, f"ICMP code {spec.icmp_code} is not supported")
    return kind, code


def build_icmp_packet(src: str, dst: str, kind: int, code: int, rest: int, body: bytes,
                      ttl: int = 64, tos: int = 0) -> bytes:
    """An IPv4/ICMP packet with correct checksums (struct, as build_segment)."""
    message = struct.pack("!BBHI", kind, code, 0, rest) + body
    message = message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]
    ip = struct.pack("!BBHHHBBHII", 0x45, tos, 20 + len(message), 0, 0, ttl, 1, 0, aton(src), aton(dst))
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return ip + message


def _spec_text(spec: PacketSpec) -> str:
    text = f"{spec.direction} {spec.flags or '-'} {spec.seq}:{spec.end_seq}({spec.payload_len})"
    if spec.ack is not None:
        text += f" ack {spec.ack}"
    if spec.window is not None:
        text += f" win {spec.window}"
    if spec.options is None:
        text += " <...>"
    elif spec.options:
        text += f" <{format_options(_options_as_pairs(spec.options))}>"
    return text


# ---------------------------------------------------------------- entry points


async def run_script(script: Script, dut: Dut) -> Outcome:
    """Run ``script`` on an open DUT (set up with ``plan(script)``'s config)."""
    runner = Runner(script, dut)
    started = dut.now()
    try:
        await runner.run()
    except Failure as failure:
        outcome = Outcome(FAIL, failure.line, failure.message, runner.notes)
    except Skip as skip:
        outcome = Outcome(SKIP, skip.line, skip.reason, runner.notes)
    else:
        outcome = Outcome(PASS, None, "", runner.notes)
    outcome.elapsed = dut.now() - started
    outcome.trace = runner.trace
    return outcome


async def run_on_dut(script: Script, kind: str) -> Outcome:
    """Plan, open a fresh DUT of ``kind`` with the script's settings, run, close."""
    try:
        config = plan(script)
    except Skip as skip:
        return Outcome(SKIP, skip.line, skip.reason)
    async with open_dut(kind, config) as dut:
        outcome = await run_script(script, dut)
        if dut.unapplied:
            outcome.notes.append(f"settings without effect on {kind}: {', '.join(dut.unapplied)}")
    return outcome


def run_file(path: str | Path, kind: str) -> Outcome:
    """Parse and run one script on a fresh DUT (Linux in real time, pystack in virtual time)."""
    try:
        script = parse_file(path)
    except (ParseError, OSError) as exc:
        return Outcome(ERROR, getattr(exc, "line", None), str(exc))
    try:
        return run_on(kind, run_on_dut, script, kind)
    except NeedsNetAdmin as exc:
        return Outcome(SKIP, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop a conformance table
        return Outcome(ERROR, None, f"runner error: {type(exc).__name__}: {exc}")
