"""`make demo`: pystack on a TUN device, and the Linux kernel talking to it.

Brings the stack up exactly as `pystack up` does (a namespace, a TUN
device, the kernel at 198.18.0.1, pystack at 198.18.0.2, the small
services), then from inside the namespace uses the kernel's own tools and
sockets: `ping` (small, and 4000 bytes so both directions fragment), UDP
echo and chargen, a closed port answering ECONNREFUSED, TCP with `nc`
and a kernel client, and a pystack TCP client sending to a kernel server.
Then the specializer: a connected UDP socket's send is specialized, the
residual code shown and timed against the generic code, and the guards
act when an option and a route change; then a socket that committed a
4000-byte ADU gets code with every size, fragment and buffer computed once. Then the tux_like server
on pystack: curl fetches a page and a byte range over HTTP, and lists and fetches a file over FTP.
Finally it stops the stack, shows its counters, and removes the namespace.
Everything stays inside the namespace. Then, outside any namespace, Stingy: the quick
ab sweep of tux_like in simulated memory and time, original against Stingy. Last, remote
specialization (a thin device served by `pystack spec serve`, then over pystack's own TCP on
a TUN namespace of its own) and the C backend (a UDP send's residual in C, same packets).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import trio

from demos import c_backend_demo, remote_spec_demo
from pystack.host.netns import why_not
from pystack.host.tun_host import TunHost, tun_host
from pystack.services import serve_services
from tux_like.backends.pystack_net import PystackNet
from tux_like.config import make_config
from tux_like.driver import serving

NETNS = "pystack-demo"
TUN = "pstdemo0"
KERNEL = "198.18.0.1"
PYSTACK = "198.18.0.2"


def say(title: str) -> None:
    print(f"\n== {title}", flush=True)


async def ping(host: TunHost, size: int) -> None:
    say(f"kernel: ping -c 3 -s {size} {PYSTACK}" + ("   (fragmented both ways)" if size > 1472 else ""))
    done = await host.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", str(size), PYSTACK])
    for line in done.stdout.decode().splitlines():
        if "bytes from" in line or "transmitted" in line or "rtt" in line:
            print("   " + line)
    if done.returncode:
        print(f"   ping failed ({done.returncode}): {done.stderr.decode().strip()}")


async def udp(host: TunHost) -> None:
    with host.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, trio.fail_after(5):
        say(f"kernel UDP socket -> pystack echo ({PYSTACK}:7)")
        await sock.sendto(b"hello from the Linux kernel", (PYSTACK, 7))
        data, peer = await sock.recvfrom(2048)
        print(f"   got {data!r} back from {peer[0]}:{peer[1]}")

        say(f"kernel UDP socket -> pystack chargen ({PYSTACK}:19)")
        await sock.sendto(b"", (PYSTACK, 19))
        data, _ = await sock.recvfrom(2048)
        first_line = data.split(b"\r\n")[0][:50].decode()
        print(f"   got {len(data)} bytes: {first_line}...")

        say("kernel UDP socket -> pystack echo, 6000 bytes   (fragmented both ways)")
        big = os.urandom(6000)
        await sock.sendto(big, (PYSTACK, 7))
        data, _ = await sock.recvfrom(65535)
        print(f"   echoed {len(data)} bytes, {'identical' if data == big else 'DIFFERENT'}")

    say(f"connected kernel UDP socket -> closed port {PYSTACK}:9999")
    with host.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, trio.fail_after(5):
        await sock.connect((PYSTACK, 9999))
        await sock.send(b"anyone?")
        try:
            await sock.recv(100)
        except ConnectionRefusedError as exc:
            print(f"   pystack answered ICMP port unreachable; the kernel socket says: {exc}")


async def tcp(host: TunHost) -> None:
    if shutil.which("nc"):
        say(f"kernel: echo 'hello over TCP' | nc -N {PYSTACK} 7")
        done = await host.run(["nc", "-N", "-w", "5", PYSTACK, "7"], stdin=b"hello over TCP\n")
        print(f"   nc printed {done.stdout!r}")

    size = 4 * 1024 * 1024
    say(f"kernel TCP client -> pystack discard ({PYSTACK}:9), {size >> 20} MB")
    payload = os.urandom(size)
    with host.kernel_socket(socket.AF_INET, socket.SOCK_STREAM) as sock, trio.fail_after(60):
        start = trio.current_time()
        await sock.connect((PYSTACK, 9))
        view = memoryview(payload)
        while view:
            view = view[await sock.send(view[:65536]):]
        sock.shutdown(socket.SHUT_WR)
        await sock.recv(1)  # pystack's discard closes after EOF
        elapsed = trio.current_time() - start
    print(f"   {size >> 20} MB in {elapsed:.2f} s ({size * 8 / elapsed / 1e6:.0f} Mbit/s)")

    say(f"pystack TCP client -> kernel server ({KERNEL}:8000), {size >> 20} MB, checked with SHA-256")
    with host.kernel_socket(socket.AF_INET, socket.SOCK_STREAM) as server, trio.fail_after(60):
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await server.bind((KERNEL, 8000))
        server.listen(1)
        digest = hashlib.sha256()

        async def kernel_server() -> None:
            conn, _ = await server.accept()
            with conn:
                while data := await conn.recv(1 << 20):
                    digest.update(data)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kernel_server)
            stream = await host.network.open_tcp_stream(KERNEL, 8000)
            await stream.send_all(payload)
            await stream.send_eof()
        await stream.aclose()
        elapsed = trio.current_time() - start
    same = digest.digest() == hashlib.sha256(payload).digest()
    print(f"   {size >> 20} MB in {elapsed:.2f} s ({size * 8 / elapsed / 1e6:.0f} Mbit/s), "
          f"{'identical' if same else 'DIFFERENT'} at the kernel's end")


async def specializer(host: TunHost) -> None:
    """Specialize the send of a connected UDP socket; then break its invariants and watch the guards."""
    from pystack.socket import SO_ADU, SOL_SOCKET
    from specializer import do_specialize_send, done_specialize_send, specialized_send, token_info

    stack = host.stack
    say("specializer: send() of a connected pystack UDP socket, specialized for that socket")
    with host.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        await sink.bind((KERNEL, 9999))
        fd = stack.socket()
        stack.connect(fd, (KERNEL, 9999))
        token = do_specialize_send(stack, fd)
        info = token_info(stack, token)
        lines = info["source"].splitlines()
        print(f"   generic path: Stack.send -> udp_sendmsg -> cached_route -> build_udp -> ip_output -> ...;"
              f" residual: {len(lines)} lines, {info['assumptions']} assumptions")
        print("\n".join("   | " + line for line in lines[:22]))
        print(f"   | ... ({len(lines) - 22} more lines: the IP header, the call to ip_fragment for a datagram over the MTU, the epilogue)")
        payload = os.urandom(1024)
        rounds, batch = 3000, 50
        timings = {"generic": 0.0, "specialized": 0.0}
        received = 0

        async def count() -> None:
            nonlocal received
            while True:
                await sink.recv(2048)
                received += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            for _ in range(rounds // batch):  # alternate, in batches, so both see the same machine
                for label, send in (("generic", lambda: stack.send(fd, payload)),
                                    ("specialized", lambda: specialized_send(stack, token, payload))):
                    start = time.perf_counter()
                    for _ in range(batch):
                        send()
                    timings[label] += time.perf_counter() - start
                    await trio.sleep(0.005)  # let the kernel-side reader drain its socket
            with trio.move_on_after(1):
                while received < 2 * rounds:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        timings = {label: total / rounds for label, total in timings.items()}
        print(f"   {rounds} sends each: generic {timings['generic'] * 1e6:.1f} us/send, specialized "
              f"{timings['specialized'] * 1e6:.1f} us/send: {timings['generic'] / timings['specialized']:.2f}x; "
              f"the kernel received {received} of {2 * rounds} datagrams")

        say("specializer: the guards")
        try:
            stack.setsockopt(fd, socket.IPPROTO_IP, socket.IP_TTL, 5)
        except OSError as exc:
            print(f"   setsockopt(IP_TTL, 5) under the token (policy reject): {exc}")
        stack.add_route(KERNEL, 32, TUN)
        specialized_send(stack, token, b"after the route change")
        data = await sink.recv(2048)
        print(f"   a route to {KERNEL}/32 appeared (policy reinforce): {token_info(stack, token)['events'][-1]}; "
              f"the kernel still receives {data!r}")
        done_specialize_send(stack, token)
        stack.setsockopt(fd, socket.IPPROTO_IP, socket.IP_TTL, 5)
        print("   after done_specialize_send the same setsockopt is accepted (TTL now 5)")
        stack.close(fd)

        say("specializer: a committed ADU (SO_ADU 4000): every size computed once (thesis 3.1.1)")
        fd = stack.socket()
        stack.setsockopt(fd, SOL_SOCKET, SO_ADU, 4000)
        stack.connect(fd, (KERNEL, 9999))
        token = do_specialize_send(stack, fd)
        info = token_info(stack, token)
        lines = info["source"].splitlines()
        allocations = [line.strip() for line in lines if "bytearray(" in line]
        print(f"   scenario {info['scenario']}: residual of {len(lines)} lines, no loop left: the 4008-byte "
              f"datagram's three fragments are allocated at their sizes")
        print("\n".join("   | " + line for line in allocations))
        sent = [os.urandom(4000) for _ in range(3)]
        for payload in sent:
            specialized_send(stack, token, payload)
        with trio.fail_after(5):
            received = [await sink.recv(8192) for _ in sent]
        print(f"   the kernel reassembled the 3 datagrams byte for byte: {'yes' if received == sent else 'NO'}")
        done_specialize_send(stack, token)
        stack.close(fd)


async def tux(host: TunHost) -> None:
    """The tux_like server on pystack, in process with the stack, and curl in the namespace."""
    curl = ["curl", "-sS", "--max-time", "10"]
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "index.html").write_text("<h1>tux_like on pystack</h1>\n")
        (Path(root) / "thesis.txt").write_text("optimistic compiler optimizations for network systems\n" * 40)
        sections = (
            ("http", 80, [
                (f"kernel: curl -i http://{PYSTACK}/", [*curl, "-i", f"http://{PYSTACK}/"]),
                (f"kernel: curl -r 0-26 http://{PYSTACK}/thesis.txt   (a byte range)",
                 [*curl, "-r", "0-26", "-w", "\n   status %{http_code}, %{size_download} bytes",
                  f"http://{PYSTACK}/thesis.txt"]),
            ]),
            ("ftp", 21, [
                (f"kernel: curl ftp://{PYSTACK}/   (a listing, passive mode)", [*curl, f"ftp://{PYSTACK}/"]),
                (f"kernel: curl ftp://{PYSTACK}/thesis.txt   (a file: its first lines)",
                 [*curl, "-w", "   (%{size_download} bytes)", f"ftp://{PYSTACK}/thesis.txt"]),
            ]),
        )
        for protocol, port, fetches in sections:
            config = make_config({"document_root": root, "protocol": protocol,
                                  "listen": f"{PYSTACK}:{port}", "logging": False})
            try:
                async with serving(config, PystackNet(host.network.driver)) as driver:
                    for title, argv in fetches:
                        say(title)
                        done = await host.run(argv)
                        lines = (done.stdout.decode() + done.stderr.decode()).splitlines()
                        shown = lines if len(lines) <= 12 else [*lines[:2], "...", *lines[-1:]]
                        print("\n".join("   " + line for line in shown))
                    driver.action("stop")
                stats = driver.server.stats
                print(f"   tux_like ({protocol}): {stats.connections} connections, requests by status "
                      f"{dict(sorted(stats.requests.items()))}, {stats.bytes_sent} bytes sent")
            except* NotImplementedError:
                print(f"   (skipped: tux_like.{protocol} is still the placeholder on this branch)")


async def demo() -> int:
    print(f"pystack demo: pystack at {PYSTACK} on TUN {TUN}; the kernel at {KERNEL} in namespace {NETNS}")
    async with tun_host(NETNS, TUN, f"{KERNEL}/24", PYSTACK) as host:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_services, host.network)
            print(f"ready {PYSTACK}")
            await ping(host, 56)
            await ping(host, 4000)
            await udp(host)
            await tcp(host)
            await specializer(host)
            await tux(host)
            nursery.cancel_scope.cancel()
    say("pystack's counters")
    print("\n".join("   " + line for line in host.stack.counters.format().splitlines()))
    gone = not os.path.exists(f"/var/run/netns/{NETNS}")
    say(f"namespace {NETNS} removed: {'yes' if gone else 'NO'}")
    return 0 if gone else 1


def stingy_sweep() -> None:
    """The quick `pystack stingy sweep`: the real tux_like code in simulated memory and time."""
    from stingy.sweep import QUICK, sweep

    say("Stingy: tux_like in a simulated Pentium III cache, ab closed loop (pystack stingy sweep --quick)")
    sweep(QUICK, quick=True, progress=sys.stdout)


def main() -> int:
    reason = why_not()
    if reason is not None:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    for tool, package in (("ping", "iputils-ping"), ("curl", "curl")):
        if shutil.which(tool) is None:
            print(f"demo: missing `{tool}` (Debian package {package}): sudo apt-get install {package}",
                  file=sys.stderr)
            return 1
    status = trio.run(demo)
    stingy_sweep()
    say("Remote specialization (thesis ch. 4): a thin device asks a server for its code (demos.remote_spec_demo)")
    status |= remote_spec_demo.main()
    say("The C backend: a specialized UDP send in C, its packets beside Python's (demos.c_backend_demo)")
    status |= c_backend_demo.main()
    return status


if __name__ == "__main__":
    sys.exit(main())
