"""The C backend against the Python residual it was translated from.

Two stacks identical down to their seed, each with one UDP socket set up for the same
random context (addresses in 198.18.0.0/15, ports, TTL, TOS, MTU, UDP checksum on or
off, connected or sending to a fixed destination); both are specialized; one runs the
Python residual, the other its C (from a filled template, or compiled for the context).
Every send must agree exactly: the result or the error, the packets byte for byte, the
counters and the socket's state, including the rare paths the C hands back to Python
(fragmentation, pending errors, a full send buffer, oversized payloads).
"""

from __future__ import annotations

import ast
import errno
import os
import warnings

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pystack.clock import VirtualClock
from pystack.socket import IP_TOS, IP_TTL, IPPROTO_IP, SO_ADU, SO_NO_CHECK, SOL_SOCKET
from pystack.stack import Stack
from pystack.tokens.scenario import all_scenarios
from specializer import cbackend
from specializer.cbackend import CannotTranslate, Template, TemplateMismatch, translate
from specializer.system import specialize

pytestmark = pytest.mark.skipif(cbackend.compiler_problem() is not None, reason="no C toolchain here")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SIZES = [0, 1, 2, 63, 64, 1023, 1472, 1473, 4000, 65507, 65508]


@st.composite
def contexts(draw: st.DrawFn) -> dict:
    net = draw(st.integers(0, 511))  # a /24 of 198.18.0.0/15
    third = net & 255
    second = 18 + (net >> 8)
    return {
        "scenario": draw(st.sampled_from(["udp_send_connected", "udp_sendto_fixed", "udp_send_adu"])),
        "adu": draw(st.sampled_from([1, 64, 1472, 1473, 4000, 8000])),  # for udp_send_adu: sizes known, loops unrolled
        "me": f"198.{second}.{third}.2",
        "peer": f"198.{second}.{third}.{draw(st.sampled_from([1, 77, 254]))}",
        "far": draw(st.booleans()),  # the destination through the gateway instead
        "local_port": draw(st.integers(1, 65535)),
        "remote_port": draw(st.integers(1, 65535)),
        "ttl": draw(st.integers(1, 255)),
        "tos": draw(st.integers(0, 255)),
        "mtu": draw(st.sampled_from([576, 1500, 9000])),
        "no_check": draw(st.booleans()),
        "sizes": draw(st.lists(st.one_of(st.sampled_from(SIZES), st.integers(0, 3000)), min_size=1, max_size=6)),
    }


class World:
    """One stack, one socket set up for the context, its packets and its residual."""

    def __init__(self, ctx: dict):
        self.packets: list[bytes] = []
        self.stack = stack = Stack(clock=VirtualClock(), seed=5)
        stack.add_interface("eth0", ctx["me"], 24, mtu=ctx["mtu"], sink=self.packets.append)
        gateway = ctx["peer"]
        stack.add_route("0.0.0.0", 0, "eth0", gateway=gateway)
        self.fd = fd = stack.socket()
        stack.bind(fd, (ctx["me"], ctx["local_port"]))
        stack.setsockopt(fd, IPPROTO_IP, IP_TTL, ctx["ttl"])
        stack.setsockopt(fd, IPPROTO_IP, IP_TOS, ctx["tos"])
        if ctx["no_check"]:
            stack.setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, 1)
        if ctx["scenario"] == "udp_send_adu":
            stack.setsockopt(fd, SOL_SOCKET, SO_ADU, ctx["adu"])
        destination = ("198.18.200.9" if ctx["far"] and not ctx["me"].startswith("198.18.200.") else ctx["peer"],
                       ctx["remote_port"])
        statics = {"self": stack, "fd": fd, "flags": 0}
        if ctx["scenario"] != "udp_sendto_fixed":
            stack.connect(fd, destination)
        else:
            statics["address"] = destination
        self.compiled = specialize(all_scenarios()[ctx["scenario"]], statics).compiled
        self.sock = stack.sockfd_lookup(fd)

    def observe(self, send, data: bytes) -> tuple:
        try:
            outcome: tuple = ("returned", send(data))
        except OSError as error:
            outcome = ("raised", type(error).__name__, error.errno)
        packets = list(map(bytes, self.packets))
        self.packets.clear()
        counters = self.stack.counters
        return (outcome, packets, dict(counters.ip), dict(counters.udp), self.sock.ip_id, self.sock.error,
                self.stack.interfaces["eth0"].tx_packets)


_templates: list[Template] = []


def filled(compiled):
    """The C of ``compiled`` from a template of its shape (compiled on first sight of the shape)."""
    for template in _templates:
        try:
            return template.fill(compiled)
        except TemplateMismatch:
            continue
    _templates.append(Template.compile(compiled))
    return _templates[-1].fill(compiled)


def compare(ctx: dict, make_c) -> None:
    python, native = World(ctx), World(ctx)
    try:
        send_c = make_c(native.compiled)
    except CannotTranslate as why:  # an ADU that fragments takes its IP ID from a call into Python
        assert ctx["scenario"] == "udp_send_adu" and "(a call the C cannot make)" in str(why)
        event("no C: the ADU fragments")
        return
    sizes = [ctx["adu"], *ctx["sizes"], ctx["adu"]] if ctx["scenario"] == "udp_send_adu" else ctx["sizes"]
    payloads = [(bytes(range(256)) * (size // 256 + 1))[:size] for size in sizes]
    for step, data in enumerate(payloads):
        if step == 1:  # a pending asynchronous error, reported once
            python.sock.error = native.sock.error = errno.ECONNREFUSED
        if step == 2:  # the send buffer full
            python.sock.wmem = native.sock.wmem = 1 << 30
        if step == 3:
            python.sock.wmem = native.sock.wmem = 0
        expected = python.observe(python.compiled.function, data)
        assert native.observe(send_c, data) == expected, f"{ctx['scenario']} of {len(data)} bytes, step {step}"


@SETTINGS
@given(contexts())
def test_template_c_sends_what_python_sends(ctx):
    compare(ctx, filled)


@pytest.mark.parametrize("ctx", [
    {"scenario": "udp_send_connected", "me": "198.18.0.2", "peer": "198.18.0.1", "far": False, "local_port": 40001,
     "remote_port": 9, "ttl": 64, "tos": 0, "mtu": 1500, "no_check": False, "sizes": [0, 1, 64, 1472, 1473, 65508]},
    {"scenario": "udp_sendto_fixed", "me": "198.19.3.2", "peer": "198.19.3.254", "far": True, "local_port": 65535,
     "remote_port": 1, "ttl": 1, "tos": 255, "mtu": 576, "no_check": True, "sizes": [5, 548, 549, 3000]},
])
def test_c_compiled_for_the_context_sends_what_python_sends(ctx):
    compare(ctx, lambda compiled: cbackend.load(translate(compiled.tree, compiled.constants), compiled))


def test_the_c_names_what_goes_back_to_python():
    ctx = {"scenario": "udp_send_connected", "me": "198.18.0.2", "peer": "198.18.0.1", "far": False,
           "local_port": 40001, "remote_port": 9, "ttl": 64, "tos": 0, "mtu": 1500, "no_check": False}
    program = translate(World(ctx).compiled.tree, World(ctx).compiled.constants)
    assert [reason.split(":")[0] for reason in program.exits] == ["line 5", "line 10", "line 13", "line 35", "line 53"]
    assert "ip_fragment" in program.exits[-1]
    assert "goto python;" in program.source
    assert "40001" in program.source  # the port, folded into the C
    assert len(program.paths) == 1  # the one path that sends a packet


def test_a_template_has_holes_and_refuses_another_shape():
    base = {"scenario": "udp_send_connected", "me": "198.18.0.2", "peer": "198.18.0.1", "far": False,
            "local_port": 40001, "remote_port": 9, "ttl": 64, "tos": 0, "mtu": 1500, "no_check": False}
    first = World(base).compiled
    template = Template.compile(first)
    assert "40001" not in template.program.source and "K[" in template.program.source
    other = World({**base, "local_port": 5000, "ttl": 9}).compiled
    assert 5000 in translate(other.tree, other.constants, holes=True).holes
    template.fill(other)  # same shape: no compiler
    with pytest.raises(TemplateMismatch):
        template.fill(World({**base, "no_check": True}).compiled)


def test_tcp_send_has_no_path_in_c_and_says_why():
    from specializer.show import build_world

    scenario = all_scenarios()["tcp_send"]
    compiled = specialize(scenario, build_world(scenario, {})[1]).compiled
    with pytest.raises(CannotTranslate, match="no path of the residual runs in C: line"):
        translate(compiled.tree, compiled.constants)


def test_a_missing_compiler_falls_back_to_python_said_once(monkeypatch):
    ctx = {"scenario": "udp_send_connected", "me": "198.18.0.2", "peer": "198.18.0.1", "far": False,
           "local_port": 40123, "remote_port": 9, "ttl": 33, "tos": 0, "mtu": 1500, "no_check": False}
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(cbackend, "_said", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = World(ctx).compiled, World({**ctx, "ttl": 34}).compiled
        assert cbackend.native(first) is first.function
        assert cbackend.native(second) is second.function
    said = [w for w in caught if issubclass(w.category, cbackend.CBackendUnavailable)]
    assert len(said) == 1
    assert "/nonexistent/cc" in str(said[0].message) and "runs as Python" in str(said[0].message)
    monkeypatch.delenv("CC")
    assert os.environ.get("CC") is None
    assert cbackend.native(first) is not first.function  # with the compiler back: C


ARITHMETIC = """
def arithmetic(data):
    data_1 = bytes(data)
    x = box.x
    y = box.y
    box.q = x // y
    box.m = x % y
    box.s = x << (y & 63)
    box.r = x >> (y & 127)
    box.p = x * y - y
    box.big = (int_from_bytes(data_1, 'big') + x) % 65535
    box.eq = int_from_bytes(data_1, 'big') + x == y
    box.b = x > y or (x & 1) == 0
    return -x if x < 0 else ~y
"""


class Box:
    def __init__(self, x: int, y: int):
        self.x, self.y = x, y


def arithmetic_on(box: Box):
    from specializer.residual import compile_residual

    tree = ast.parse(ARITHMETIC).body[0]
    return compile_residual("arithmetic", ["data"], tree.body, {"box": box, "int_from_bytes": int.from_bytes},
                            "<arithmetic>")


INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


@SETTINGS
@given(st.one_of(INT64, st.integers(-5, 70), st.just(1 << 64), st.just(True)), st.one_of(INT64, st.integers(-5, 70)),
       st.binary(max_size=40))
def test_c_integers_are_python_integers(x, y, data):
    """Floor division and modulo, shifts, overflow past 64 bits (back to Python), the
    big-endian remainder of odd and even byte strings, and the types of what is written."""
    python, native = Box(x, y), Box(x, y)
    compiled = arithmetic_on(native)
    send = cbackend.load(translate(compiled.tree, compiled.constants), compiled)
    outcomes = []
    for box, function in ((python, arithmetic_on(python).function), (native, send)):
        try:
            outcomes.append(("returned", function(data), type(function(data))))
        except (ZeroDivisionError, ValueError, OverflowError) as error:
            outcomes.append(("raised", type(error)))
        outcomes.append({k: (v, type(v)) for k, v in vars(box).items()})
    assert outcomes[:2] == outcomes[2:]


def test_spec_show_backend_c_prints_the_c_or_says_why_not():
    import subprocess
    import sys

    command = [sys.executable, "-m", "pystack.cli", "spec", "show"]
    shown = subprocess.run([*command, "udp_send_connected", "--backend", "c", "--context", "ttl=77"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "int64_t specialized_udp_send_connected(const char *p_data_1" in shown.stdout
    assert "cb_fits(INT64_C(77), 1, 0)" in shown.stdout  # the TTL, folded into the IP header's C
    assert "ip_fragment(stack, sock, dst_cache" in shown.stdout and "Python objects as arguments" in shown.stdout
    refused = subprocess.run([*command, "tcp_send", "--backend", "c"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "tcp_send cannot be translated to C: no path of the residual runs in C" in refused.stderr


def test_the_demo_shows_the_c_and_equal_packets(capsys):
    from demos import c_backend_demo

    assert c_backend_demo.main() == 0
    shown = capsys.readouterr().out
    assert "int64_t specialized_udp_send_connected(" in shown
    assert shown.count("byte-identical to Python") == 2 * len(c_backend_demo.PAYLOADS)
    assert "all packets byte-identical" in shown


SLICES = """
def slices(data):
    data_1 = bytes(data)
    lo = box.x
    hi = box.y
    out = bytearray(8)
    out[lo:hi] = memoryview(data_1)[hi:]
    out[lo:] = data_1[:lo]
    copy = out[lo:hi]
    out[:hi] = copy + data_1[lo:hi]
    sink(out)
    sink(data_1[-hi:lo])
    return len(out)
"""


@SETTINGS
@given(st.integers(-12, 12), st.integers(-12, 12), st.binary(max_size=12))
def test_c_slices_are_python_slices(lo, hi, data):
    """Slices of bytes, memoryviews and bytearrays, and slice assignments that resize."""
    from specializer.residual import compile_residual

    results = []
    for native in (False, True):
        box, sent = Box(lo, hi), []
        compiled = compile_residual("slices", ["data"], ast.parse(SLICES).body[0].body,
                                    {"box": box, "sink": sent.append}, "<slices>")
        function = cbackend.load(translate(compiled.tree, compiled.constants), compiled) if native \
            else compiled.function
        results.append((function(data), [(type(p), bytes(p)) for p in sent]))
    assert results[0] == results[1]


def test_a_call_into_python_may_reenter_the_same_c():
    """The sink sends again through the same code while the first call still has effects to do."""
    from specializer.residual import compile_residual

    results = []
    for native in (False, True):
        box, sent = Box(10, -3), []  # two packets out of the buffer, the second not empty
        code: list = []  # the function under test, once made

        def sink(packet, sent=sent, code=code):
            sent.append((type(packet), bytes(packet)))
            if len(code) == 1:
                code.append("re-entered")
                sent.append(("inner", code[0](b"inner call")))

        compiled = compile_residual("slices", ["data"], ast.parse(SLICES).body[0].body, {"box": box, "sink": sink},
                                    "<slices>")
        code.append(cbackend.load(translate(compiled.tree, compiled.constants), compiled) if native
                    else compiled.function)
        results.append((code[0](b"outer call, longer"), sent))
    assert results[0] == results[1]


def test_a_field_computed_when_read_stays_in_python():
    """The shell reads fields before the call: only stored ones, whose reading runs no code."""

    class Counted(Box):
        @property
        def x(self):
            return 5

        @x.setter
        def x(self, value):
            pass

    compiled = arithmetic_on(Counted(1, 2))
    with pytest.raises(CannotTranslate, match=r"box\.x is computed when read"):
        translate(compiled.tree, compiled.constants)
    assert translate(arithmetic_on(Box(1, 2)).tree, arithmetic_on(Box(1, 2)).constants).inputs == [("box", "x"),
                                                                                                 ("box", "y")]


def test_a_bytearray_changed_after_python_got_it_stays_in_python():
    """Python's sink holds the object the residual goes on changing; the C could only pass a copy."""
    from specializer.residual import compile_residual

    source = "def escape(data):\n    data_1 = bytes(data)\n    out = bytearray(4)\n    sink(out)\n" \
             "    out[0:] = data_1\n    return len(out)\n"
    sent: list = []
    compiled = compile_residual("escape", ["data"], ast.parse(source).body[0].body, {"sink": sent.append}, "<escape>")
    with pytest.raises(CannotTranslate, match="changes the bytearray out after handing it to Python"):
        translate(compiled.tree, compiled.constants)
    compiled.function(b"later")
    assert sent == [bytearray(b"later")]  # what the C, with its copy, could not have matched


def test_one_object_under_two_names_is_one_object_in_c():
    """The residual writes a field under one frozen name and reads it under another."""
    from specializer.residual import compile_residual

    source = "def alias(data):\n    data_1 = bytes(data)\n    first.x = len(data_1)\n    return second.x + 1\n"
    results = []
    for native in (False, True):
        box = Box(7, 0)
        compiled = compile_residual("alias", ["data"], ast.parse(source).body[0].body, {"first": box, "second": box},
                                    "<alias>")
        function = cbackend.load(translate(compiled.tree, compiled.constants), compiled) if native \
            else compiled.function
        results.append((function(b"four"), box.x))
    assert results[0] == results[1] == (5, 4)


def test_a_template_is_not_filled_for_effects_on_other_counters():
    """Same C, other counters: the shape a template must match includes where effects go."""
    from specializer.residual import compile_residual

    def counting(key: str, counters: dict):
        source = f"def count(data):\n    data_1 = bytes(data)\n    counters[{key!r}] += len(data_1)\n"
        return compile_residual("count", ["data"], ast.parse(source).body[0].body, {"counters": counters}, "<count>")

    template = Template.compile(counting("InDatagrams", {"InDatagrams": 0}))
    counters = {"OutDatagrams": 0}
    with pytest.raises(TemplateMismatch):
        template.fill(counting("OutDatagrams", counters))
    template.fill(counting("InDatagrams", counters := {"InDatagrams": 1}))(b"abc")
    assert counters == {"InDatagrams": 4}
