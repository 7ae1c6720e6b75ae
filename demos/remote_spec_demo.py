"""Remote specialization (thesis chapter 4), in miniature: ``python -m demos.remote_spec_demo``.

A specialization server runs (``pystack spec serve``, its own process); this process is
a thin device: pystack and the run-time layer, never the specializer. It asks for the
send of a connected UDP socket, checks and loads the signed reply, and sends the same
packets as the generic code; a guard event makes it ask again; with the server gone it
falls back to the generic send. Then, with root, the same over pystack's own TCP on a
TUN device, to a server on a kernel socket inside a network namespace.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

from pystack.links.virtual import VirtualNetwork
from pystack.socket import IP_TTL, IPPROTO_IP
from pystack.tokens.api import do_specialize_send, specialized_send, token_info
from remote.device import make_remote_system

KEY = b"demo key: 32 bytes of shared key"


def say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def start_server(key_file: str) -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pystack.cli", "spec", "serve", "--listen", f"127.0.0.1:{port}",
                               "--key", key_file], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    print("   " + server.stdout.readline().strip())
    return server, port


def thin_device(key_file: str) -> None:
    say("server: pystack spec serve --listen 127.0.0.1:PORT --key KEYFILE   (HMAC-SHA256 replies)")
    server, port = start_server(key_file)
    try:
        net = VirtualNetwork()
        stacks = []
        for name in ("device", "twin"):  # the device, and a generic twin with the same seed
            stack = net.add_stack(seed=1)
            sent = net.attach(stack, "eth0", "198.18.0.2", direction=name).sent
            fd = stack.socket()
            stack.connect(fd, ("198.18.0.1", 9))
            stacks.append((stack, fd, sent))
        (device, fd, sent), (twin, twin_fd, twin_sent) = stacks
        system = make_remote_system(device, server=("127.0.0.1", port), key=KEY)

        say("thin device: do_specialize_send(stack, fd) on a connected UDP socket")
        started = time.perf_counter()
        token = do_specialize_send(device, fd, policy={"setsockopt": "respecialize"})
        elapsed = time.perf_counter() - started
        info = token_info(device, token)
        print(f"   {info['mode']} in {elapsed * 1e3:.0f} ms (the server's first request: cold): request {system.client.sent} bytes, "
              f"reply {system.client.received} bytes; {info['assumptions']} assumptions checked and watched")
        for line in info["source"].splitlines()[:6]:
            print("   | " + line)
        print(f"   | ... ({len(info['source'].splitlines())} lines)")
        for size in (0, 100, 4000):
            specialized_send(device, token, bytes(size))
            twin.send(twin_fd, bytes(size))
        print(f"   sent 0, 100 and 4000 bytes: {len(sent)} packets, "
              f"{'identical to' if sent == twin_sent else 'DIFFERENT from'} the generic send's")

        say("guard: setsockopt(IP_TTL, 9) -> re-specialized by the server at the next send")
        device.setsockopt(fd, IPPROTO_IP, IP_TTL, 9)
        specialized_send(device, token, b"ttl 9")
        info = token_info(device, token)
        print(f"   {info['mode']} after {system.requests} requests; the packet's TTL is {sent[-1][8]}")
    finally:
        server.terminate()
        server.wait()

    say("server gone: setsockopt(IP_TTL, 12), then a send: the request fails, the generic send goes on")
    device.setsockopt(fd, IPPROTO_IP, IP_TTL, 12)
    print(f"   sent {specialized_send(device, token, b'generic')} bytes with TTL {sent[-1][8]}")
    info = token_info(device, token)
    print(f"   {info['mode']}: {info['events'][-1]}")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "specializer")
    print(f"\n   specializer modules in this process: {loaded or 'none'}")


def over_tun() -> None:
    import trio

    from pystack.host.netns import why_not

    reason = why_not()
    if reason is not None:
        say(f"over pystack/TUN: skipped ({reason})")
        return
    from pystack.host.tun_host import tun_host
    from remote.device import TrioClient
    from remote.protocol import Signer
    from remote.server import Service, serve_listeners

    kernel, address = "198.18.0.1", "198.18.0.2"

    async def main() -> None:
        say(f"over pystack/TUN: device {address} (pystack TCP) -> server {kernel}:7070 (kernel socket, namespace)")
        async with tun_host("pystack-remote", "pstremote0", f"{kernel}/24", address, seed=1) as host, \
                trio.open_nursery() as nursery:
            listener = host.kernel_socket(socket.AF_INET, socket.SOCK_STREAM)
            await listener.bind((kernel, 7070))
            listener.listen()
            nursery.start_soon(serve_listeners, Service(Signer(secret=KEY)), [trio.SocketListener(listener)])
            client = TrioClient(lambda: host.network.open_tcp_stream(kernel, 7070), nursery)
            system = make_remote_system(host.stack, server=client, key=KEY)
            with host.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
                await sink.bind((kernel, 9999))
                fd = host.stack.socket()
                host.stack.connect(fd, (kernel, 9999))
                before = (host.tun.stats.tx_bytes, host.tun.stats.rx_bytes)
                token = do_specialize_send(host.stack, fd)
                print(f"   at once: {token_info(host.stack, token)['mode']} (the generic send until the reply)")
                with trio.fail_after(10):
                    while system.pending:
                        await trio.sleep(0.001)
                print(f"   then: {token_info(host.stack, token)['mode']} after {system.latency * 1e3:.0f} ms (a cold server); "
                      f"on the TUN {host.tun.stats.tx_bytes - before[0]} bytes out, "
                      f"{host.tun.stats.rx_bytes - before[1]} in (connection set-up included)")
                specialized_send(host.stack, token, b"specialized by a server, over pystack")
                with trio.fail_after(5):
                    data, _ = await sink.recvfrom(2048)
                print(f"   the kernel's UDP socket got {data!r}")
            nursery.cancel_scope.cancel()

    trio.run(main)


def main() -> int:
    with tempfile.NamedTemporaryFile("wb", suffix=".key") as key_file:
        key_file.write(KEY)
        key_file.flush()
        thin_device(key_file.name)
    over_tun()
    return 0


if __name__ == "__main__":
    sys.exit(main())
