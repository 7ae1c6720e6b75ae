"""`make demo`: bring pystack up on a TUN device, let the Linux kernel talk to it.

Runs the real `pystack up` command, then, from inside the namespace it
created, the kernel's own `ping` (small, and 4000 bytes so that both
directions fragment) and kernel UDP sockets (echo, chargen, and a closed
port that answers ECONNREFUSED). Then stops the stack with SIGINT and
shows its counters. Everything stays inside the namespace, which is
removed at the end.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

from pystack.netns import Namespace, why_not

NETNS = "pystack-demo"
TUN = "pstdemo0"
KERNEL = "198.18.0.1"
PYSTACK = "198.18.0.2"


def say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def start_stack() -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "pystack.cli", "up", "--netns", NETNS, "--tun", TUN,
            "--kernel-address", f"{KERNEL}/24", "--address", PYSTACK, "--duration", "120"]
    print("$ pystack " + " ".join(argv[3:]), flush=True)
    stack = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert stack.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(stack.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=20):
            stack.kill()
            raise SystemExit("pystack did not become ready within 20 s")
    line = stack.stdout.readline().strip()
    if line != f"ready {PYSTACK}":
        stack.wait(timeout=10)
        raise SystemExit(f"pystack up failed (said {line!r}, exit status {stack.returncode})")
    print(line, flush=True)
    return stack


def ping(ns: Namespace, size: int) -> None:
    say(f"kernel: ping -c 3 -s {size} {PYSTACK}" + ("  (fragmented both ways)" if size > 1472 else ""))
    done = ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", str(size), PYSTACK],
                  capture_output=True, text=True, timeout=30)
    for line in done.stdout.splitlines():
        if "bytes from" in line or "packets transmitted" in line or "rtt" in line:
            print("   " + line)
    if done.returncode != 0:
        print(f"   ping failed with status {done.returncode}: {done.stderr.strip()}")


def udp_exchanges(ns: Namespace) -> None:
    with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as kernel_sock:
        kernel_sock.settimeout(3)
        say(f"kernel UDP socket -> pystack echo service ({PYSTACK}:7)")
        message = b"hello from the Linux kernel"
        kernel_sock.sendto(message, (PYSTACK, 7))
        data, peer = kernel_sock.recvfrom(2048)
        print(f"   sent {message!r}\n   got  {data!r} from {peer[0]}:{peer[1]}"
              f"  {'(identical)' if data == message else '(DIFFERENT!)'}")

        say(f"kernel UDP socket -> pystack chargen service ({PYSTACK}:19)")
        kernel_sock.sendto(b"", (PYSTACK, 19))
        data, _ = kernel_sock.recvfrom(2048)
        first = data.split(b"\r\n")[0].decode("ascii", "replace")
        print(f"   got {len(data)} bytes, first line: {first[:60]}...")

        say("kernel UDP socket -> pystack echo, 6000 bytes (fragmented both ways)")
        big = bytes(i % 251 for i in range(6000))
        kernel_sock.sendto(big, (PYSTACK, 7))
        data, _ = kernel_sock.recvfrom(65535)
        print(f"   echoed {len(data)} bytes, {'identical' if data == big else 'DIFFERENT!'}")

    say(f"connected kernel UDP socket -> closed port {PYSTACK}:9999")
    with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as refused:
        refused.settimeout(3)
        refused.connect((PYSTACK, 9999))
        refused.send(b"is anyone there?")
        try:
            refused.recv(2048)
            print("   unexpected answer")
        except ConnectionRefusedError as exc:
            print(f"   pystack sent ICMP port unreachable; the kernel socket says: {exc}")


def main() -> int:
    reason = why_not()
    if reason is not None:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    if shutil.which("ping") is None:
        print("demo: missing `ping` (Debian package iputils-ping): sudo apt-get install iputils-ping",
              file=sys.stderr)
        return 1
    print(f"pystack demo: the stack at {PYSTACK} on TUN {TUN}, the kernel at {KERNEL} "
          f"in namespace {NETNS}")
    stack = start_stack()
    try:
        ns = Namespace(NETNS)  # the stack created it; we only enter it
        ping(ns, 56)
        ping(ns, 4000)
        udp_exchanges(ns)
    finally:
        stack.send_signal(signal.SIGINT)
        counters, _ = stack.communicate(timeout=20)
    say("pystack stopped (SIGINT); its counters")
    print("\n".join("   " + line for line in counters.splitlines()))
    time.sleep(0.1)
    gone = NETNS not in os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else True
    say(f"namespace {NETNS} removed: {'yes' if gone else 'NO'}")
    return 0 if stack.returncode == 0 and gone else 1


if __name__ == "__main__":
    sys.exit(main())
