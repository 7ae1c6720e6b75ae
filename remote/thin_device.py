"""A thin device: pystack and the run-time layer, no specializer (thesis chapter 4's
embedded device), getting specialized sends from a server.

    python -m remote.thin_device HOST:PORT KEYFILE            # remote: no specializer loaded
    python -m remote.thin_device --local                       # carrying the specializer

It builds a two-stack virtual network, specializes a connected UDP socket's send,
sends the same datagrams through the token and through a twin stack's generic send,
and prints one JSON line: whether ``specializer`` was ever imported, the import time
of what the device needed, its peak RSS, the token's mode, whether the packets are
the same, and the bytes of the request and reply.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

SIZES = (0, 1, 100, 1472, 1473, 4000)


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited across exec
    from the parent's fork)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.thin_device")
    parser.add_argument("server", nargs="?", metavar="HOST:PORT")
    parser.add_argument("key", nargs="?", metavar="KEYFILE")
    parser.add_argument("--local", action="store_true", help="specialize here, with the specializer")
    args = parser.parse_args(argv)
    if not args.local and (args.server is None or args.key is None):
        parser.error("HOST:PORT and KEYFILE, or --local")
    started = time.perf_counter()
    needed = ["pystack.stack", "pystack.links.virtual", "pystack.tokens.api"]
    needed += ["specializer"] if args.local else ["remote.device"]
    modules = {name: importlib.import_module(name) for name in needed}
    import_seconds = time.perf_counter() - started
    api = modules["pystack.tokens.api"]
    net = modules["pystack.links.virtual"].VirtualNetwork()
    worlds = []
    for seed in (1, 1):  # the device and its generic twin: same seed, same IP IDs
        stack = net.add_stack(seed=seed)
        port = net.attach(stack, "eth0", "198.18.0.2", direction=f"device{len(worlds)}")
        fd = stack.socket()
        stack.connect(fd, ("198.18.0.1", 9))
        worlds.append((stack, fd, port))
    (device, fd, port), (twin, twin_fd, twin_port) = worlds
    report: dict[str, Any] = {}
    if not args.local:
        host, _, number = args.server.rpartition(":")
        system = modules["remote.device"].make_remote_system(device, server=(host, int(number)), key=args.key)
    started = time.perf_counter()
    token = api.do_specialize_send(device, fd)
    report["specialize_seconds"] = time.perf_counter() - started
    if not args.local:
        report["request_bytes"], report["reply_bytes"] = system.client.sent, system.client.received
    for size in SIZES:
        api.specialized_send(device, token, bytes(size))
        twin.send(twin_fd, bytes(size))
    info = api.token_info(device, token)
    report.update(
        specializer_loaded=any(name == "specializer" or name.startswith("specializer.") for name in sys.modules),
        import_seconds=import_seconds,
        max_rss_kb=peak_rss_kb(),
        modules=len(sys.modules),
        mode=info["mode"],
        events=info["events"],
        same_packets=[bytes(p) for p in port.sent] == [bytes(p) for p in twin_port.sent] and len(port.sent) > 0,
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
