"""Golden tests of the residual code's shape, for one fixed context per scenario.

Structural facts first (they survive harmless changes to the evaluator's
naming): the layers are gone (no fd lookup, route lookup, udp_sendmsg or
ip_output left), no loop over control messages, the TTL, ports and
addresses are constants, fragmentation is left to the generic
``ip_fragment``, and the code is short. Then the exact text for one canonical context, against
``tests/golden/udp_send_connected.py.txt``.

When the generic code or the specializer changes on purpose, regenerate
the golden file and review the diff::

    SPEC_GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/test_spec_golden.py
    git diff tests/golden/
"""

from __future__ import annotations

import ast
import difflib
import os
from pathlib import Path

import pytest

from pystack import ip, udp
from pystack.addr import aton
from pystack.links.virtual import VirtualNetwork
from pystack.route import RouteTable, cached_route
from pystack.socket import IP_TTL, IPPROTO_IP, SO_ADU, SOL_SOCKET
from pystack.stack import Stack
from pystack.tokens.system import system_of
from specializer import do_specialize_send, do_specialize_sendto, specialized_send, token_info

GOLDEN = Path(__file__).parent / "golden" / "udp_send_connected.py.txt"
ME, GATEWAY, FAR = "198.18.0.2", "198.18.0.1", "198.18.7.9"
TTL = 33
MAX_LINES = 90

GONE = {
    "sockfd_lookup": Stack.sockfd_lookup,
    "cached_route": cached_route,
    "RouteTable.lookup": RouteTable.lookup,
    "udp_sendmsg": udp.udp_sendmsg,
    "ip_output": ip.ip_output,
}


def canonical(mtu: int = 1500) -> tuple[Stack, list[bytes]]:
    """The fixed context: seed 1, eth0 198.18.0.2/24 (MTU 1500), default route via
    198.18.0.1, a UDP socket with IP_TTL 33."""
    net = VirtualNetwork()
    stack = net.add_stack(seed=1)
    out = net.attach(stack, "eth0", ME, 24, mtu=mtu).sent
    stack.add_route("0.0.0.0", 0, "eth0", gateway=GATEWAY)
    return stack, out


def residual(scenario: str) -> tuple[Stack, int, int, ast.Module, dict]:
    stack, _ = canonical()
    fd = stack.socket()
    stack.setsockopt(fd, IPPROTO_IP, IP_TTL, TTL)
    if scenario == "udp_send_connected":
        stack.connect(fd, (FAR, 9))
        token = do_specialize_send(stack, fd)
    else:
        token = do_specialize_sendto(stack, fd, (FAR, 53))
    entry = system_of(stack).tokens[token].entry
    assert entry is not None and entry.scenario.name == scenario
    return stack, fd, token, ast.parse(entry.compiled.source), entry.compiled.constants


def calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.append(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


@pytest.mark.parametrize("scenario", ["udp_send_connected", "udp_sendto_fixed"])
def test_the_layers_are_folded_away(scenario: str) -> None:
    stack, fd, token, tree, constants = residual(scenario)
    for value in constants.values():
        target = getattr(value, "__func__", value)
        assert target not in GONE.values(), f"the residual still calls {target.__qualname__}"
    for name in calls(tree):
        assert not any(gone.rsplit(".", 1)[-1] in name for gone in GONE), f"the residual calls {name}"


@pytest.mark.parametrize("scenario", ["udp_send_connected", "udp_sendto_fixed"])
def test_no_loop_over_control_messages_and_fragmentation_stays_out_of_line(scenario: str) -> None:
    _, _, _, tree, constants = residual(scenario)
    # With the data's length unknown, the only for loops left are skb_copy_data's page loops.
    for loop in (node for node in ast.walk(tree) if isinstance(node, ast.For)):
        assert "* 4096" in ast.unparse(loop), "a for loop that is not the page loop"
    assert not any(isinstance(node, ast.While) for node in ast.walk(tree))
    # A datagram over the path MTU goes to the generic ip_fragment, called once, with the
    # path MTU, the addresses and the TTL folded into its arguments.
    fragment = [name for name, value in constants.items() if value is ip.ip_fragment]
    assert len(fragment) == 1
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Name) and node.func.id == fragment[0]]
    # A constant the generic code named (PROTO_UDP) keeps its name: a frozen reference to it.
    folded = [arg.value if isinstance(arg, ast.Constant) else constants[arg.id] for arg in call.args
              if isinstance(arg, ast.Constant) or (isinstance(arg, ast.Name) and type(constants.get(arg.id)) is int)]
    assert folded == [1500, aton(ME), aton(FAR), 17, TTL, 0, b""]  # ..., the TOS and no IP options
    assert "PROTO_UDP" in [arg.id for arg in call.args if isinstance(arg, ast.Name)]


@pytest.mark.parametrize("scenario", ["udp_send_connected", "udp_sendto_fixed"])
def test_options_ports_and_addresses_are_constants(scenario: str) -> None:
    stack, fd, _, tree, _ = residual(scenario)
    sock = stack.sockets[fd]
    dport = 9 if scenario == "udp_send_connected" else 53
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    for value, what in ((TTL, "TTL"), (sock.local_port, "source port"), (dport, "destination port"),
                        (aton(ME), "source address"), (aton(FAR), "destination address"),
                        (1500, "path MTU")):
        assert value in constants, f"the {what} ({value}) is not a constant of the residual"
    # The IP header is written with the TTL as a literal argument.
    packs = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and "pack_into" in ast.unparse(node.func)]
    assert packs and all(isinstance(p.args[7], ast.Constant) and p.args[7].value == TTL for p in packs)
    # Options read from the socket are not read at run time any more.
    source = ast.unparse(tree)
    for field in ("ttl", "tos", "pmtudisc", "no_check", "local_port", "remote_addr", "connected"):
        assert f"sock.{field}" not in source


@pytest.mark.parametrize("scenario", ["udp_send_connected", "udp_sendto_fixed"])
def test_the_residual_is_short(scenario: str) -> None:
    _, _, _, tree, _ = residual(scenario)
    lines = ast.unparse(tree).splitlines()
    assert len(lines) <= MAX_LINES, f"{scenario}: {len(lines)} lines (at most {MAX_LINES})"


def test_canonical_residual_matches_the_golden_file() -> None:
    stack, fd, token, _, _ = residual("udp_send_connected")
    source = token_info(stack, token)["source"] + "\n"
    if os.environ.get("SPEC_GOLDEN_UPDATE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(source)
    expected = GOLDEN.read_text()
    if source != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), source.splitlines(True),
                                            str(GOLDEN.name), "now"))
        pytest.fail(
            "the residual code of udp_send_connected changed for the canonical context.\n"
            "If the generic code (pystack) or the specializer changed on purpose, regenerate the "
            "golden file and review its diff:\n"
            "    SPEC_GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/test_spec_golden.py\n"
            f"{diff}")
    # And the golden code sends what the generic code sends.
    assert specialized_send(stack, token, b"golden") == 6
    twin, out = canonical()
    twin_fd = twin.socket()
    twin.setsockopt(twin_fd, IPPROTO_IP, IP_TTL, TTL)
    twin.connect(twin_fd, (FAR, 9))
    twin.send(twin_fd, b"golden")
    sink = stack.interfaces["eth0"].sink
    assert sink.__self__[-1] == out[-1]  # type: ignore[union-attr]


# ---------------------------------------------------------------- buffer allocation with a committed ADU


def adu_residual(mtu: int, adu: int) -> tuple[list[bytes], ast.Module, int, Stack, int]:
    stack, out = canonical(mtu)
    fd = stack.socket()
    stack.setsockopt(fd, SOL_SOCKET, SO_ADU, adu)
    stack.connect(fd, (FAR, 9))
    token = do_specialize_send(stack, fd)
    entry = system_of(stack).tokens[token].entry
    assert entry is not None and entry.scenario.name == "udp_send_adu"
    return out, ast.parse(entry.compiled.source), token, stack, fd


def bytearray_sizes(tree: ast.AST) -> list[int]:
    return [node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == "bytearray" and isinstance(node.args[0], ast.Constant)]


def test_a_committed_adu_unrolls_the_page_loop_with_constant_bounds() -> None:
    """Thesis 3.1.1: with the ADU static, dlen and npages are computed once and the page
    loop is unrolled: 8000 bytes on a 9000-byte MTU are one paged packet of two pages."""
    out, tree, token, stack, _ = adu_residual(9000, 8000)
    assert not any(isinstance(node, ast.For | ast.While) for node in ast.walk(tree))
    assert bytearray_sizes(tree) == [8028]  # 20 + 8 + 8000, allocated at its size
    copies = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
              and isinstance(node.targets[0], ast.Subscript) and isinstance(node.targets[0].slice, ast.Slice)]
    bounds = [(t.slice.lower.value, t.slice.upper.value) for t in (c.targets[0] for c in copies)]
    assert bounds == [(20, 20 + 4096), (20 + 4096, 8028)]  # one copy per page, bounds folded
    source = ast.unparse(tree)
    assert "npages" not in source and "head_len" not in source and "truesize" not in source
    payload = bytes(range(256)) * 31 + bytes(64)
    assert specialized_send(stack, token, payload) == 8000
    assert out[-1][28:] == payload


def test_a_committed_adu_larger_than_the_mtu_unrolls_the_fragment_loop() -> None:
    out, tree, token, stack, _ = adu_residual(1500, 4000)
    assert not any(isinstance(node, ast.For | ast.While) for node in ast.walk(tree))
    assert bytearray_sizes(tree) == [1500, 1500, 1068]  # each fragment allocated at its size
    assert specialized_send(stack, token, bytes(4000)) == 4000
    assert [len(p) for p in out] == [1500, 1500, 1068]


def test_without_a_committed_adu_the_sizes_stay_dynamic() -> None:
    _, _, _, tree, _ = residual("udp_send_connected")
    assert bytearray_sizes(tree) == []
