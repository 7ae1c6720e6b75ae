"""The C backend in one screen: the C of a UDP send, and its packets next to Python's.

    python -m demos.c_backend_demo

A stack in memory (no TUN, no root) with a UDP socket connected from 198.18.0.2:40001 to
198.18.0.1:9 is specialized for ``send``; the residual is translated to C, compiled with
the system C compiler and loaded (cffi). The same sends then go through the Python
residual of one stack and the C of an identical stack, and the packets are compared byte
for byte (the 3000-byte send fragments: the C hands that call back to Python). Last, a
second socket gets its C from a template: the C compiled once with holes for the
integers, filled for the new socket without running the compiler.
"""

from __future__ import annotations

import time

from pystack.clock import VirtualClock
from pystack.socket import IP_TTL, IPPROTO_IP
from pystack.stack import Stack
from pystack.tokens.scenario import all_scenarios
from specializer import cbackend
from specializer.residual import CompiledResidual
from specializer.system import specialize

ME, PEER = "198.18.0.2", "198.18.0.1"
PAYLOADS = (b"hello, C", bytes(range(256)) * 4, b"x" * 3000)


def world(port: int, ttl: int = 64) -> tuple[CompiledResidual, list[bytes]]:
    """A stack with one connected UDP socket, specialized for send; its residual and its wire."""
    wire: list[bytes] = []
    stack = Stack(clock=VirtualClock(), seed=1)
    stack.add_interface("eth0", ME, 24, sink=wire.append)
    fd = stack.socket()
    stack.bind(fd, (ME, port))
    stack.setsockopt(fd, IPPROTO_IP, IP_TTL, ttl)
    stack.connect(fd, (PEER, 9))
    compiled = specialize(all_scenarios()["udp_send_connected"], {"self": stack, "fd": fd, "flags": 0}).compiled
    return compiled, wire


def compare(label: str, python: tuple[CompiledResidual, list[bytes]], send_c, wire_c: list[bytes]) -> bool:
    same = True
    for data in PAYLOADS:
        returned = python[0].function(data), send_c(data)
        packets = list(map(bytes, python[1])), list(map(bytes, wire_c))
        python[1].clear()
        wire_c.clear()
        equal = returned[0] == returned[1] and packets[0] == packets[1]
        same &= equal
        print(f"  {label}: send of {len(data):4} bytes -> {returned[1]}, {len(packets[1])} packet(s) "
              f"{'byte-identical to Python' if equal else 'DIFFERENT from Python'}"
              + (f" (first: {packets[1][0][:28].hex(' ')} ...)" if packets[1] else ""))
    return same


def main() -> int:
    compiled, _ = world(40001)
    program = cbackend.translate(compiled.tree, compiled.constants)
    print("== the residual of send() on a connected UDP socket, in C ==")
    print(program.source)
    print("   back to Python (the whole call runs the Python residual):")
    for reason in program.exits:
        print(f"     {reason}")
    problem = cbackend.compiler_problem()
    if problem is not None:
        print(f"\nno C here ({problem}): the specialized code would run as Python")
        return 0
    print("\n== the same sends, Python residual against C ==")
    started = time.perf_counter()
    native_compiled, wire_c = world(40001)
    send_c = cbackend.load(cbackend.translate(native_compiled.tree, native_compiled.constants), native_compiled)
    print(f"  compiled and loaded in {(time.perf_counter() - started) * 1e3:.0f} ms")
    same = compare("C", world(40001), send_c, wire_c)

    print("\n== a new socket (port 40002, TTL 9) from a template: no compiler ==")
    template = cbackend.Template.compile(native_compiled)
    other, wire_t = world(40002, ttl=9)
    started = time.perf_counter()
    send_t = template.fill(other)
    print(f"  template of {len(template.program.holes)} holes filled in {(time.perf_counter() - started) * 1e3:.2f} ms")
    same &= compare("template", world(40002, ttl=9), send_t, wire_t)
    print("\nall packets byte-identical" if same else "\nPACKETS DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
