"""Load generators for the kernel side of a benchmark (internal: run by bench.common).

Runs as its own process on a socket that the parent created inside a
network namespace and passes with ``--fd``, so it does not share a CPU
slice, the GIL or a trio loop with the stack being measured. Standard
library only: it starts fast and adds nothing to the path it measures.

Protocol with the parent: print ``ready`` when set up, one JSON line with
the result at the end. Receivers stop when their stdin closes, when they
have the expected count, or at their deadline. Every loop is bounded in
count and in time.

Commands:
  ping      closed-loop ICMP echo on a raw socket: one request in flight,
            per-request RTT in nanoseconds (time.perf_counter_ns)
  udp-send  send datagrams on a connected UDP socket, flat out or paced
  udp-recv  count datagrams arriving on a bound UDP socket (per source port
            too with --by-source)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import struct
import sys
import time

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
SOL_RAW = 255
ICMP_FILTER = 1
SO_TIMESTAMPNS = 35  # Linux, asm-generic


def checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


def ping(socks: list[socket.socket], args: argparse.Namespace) -> dict:
    """Closed-loop echo, alternating request by request between the sockets given.

    One socket per responder under test (each in its own namespace), so
    every responder is measured in the same seconds as the others: a
    shared, noisy machine's drifts hit them all alike. Two RTTs per
    request, in nanoseconds: ``rtt_ns`` from just before sendto() to the
    kernel's arrival stamp of the reply (SO_TIMESTAMPNS, as ping does), so
    this process's own wake-up is not charged to the responder; ``app_ns``
    to when recvmsg() returned here, wake-up included.
    """
    ident = os.getpid() & 0xFFFF
    payload = bytes(range(args.size)) if args.size <= 256 else bytes(args.size)
    dst = (args.dst, 0)
    results = [{"sent": 0, "lost": 0, "rtt_ns": [], "app_ns": []} for _ in socks]
    for sock in socks:
        # Only echo replies reach these sockets (everything else is filtered in the kernel).
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(args.timeout)
    ready()
    wall = time.time_ns  # the clock of SO_TIMESTAMPNS (CLOCK_REALTIME)
    clock = time.perf_counter_ns
    timeout_ns = args.timeout * 1e9
    deadline = time.perf_counter() + args.seconds
    ancbufsize = socket.CMSG_SPACE(16)
    for seq in range(args.warmup + args.count):
        if time.perf_counter() > deadline:
            break
        packet = echo_request(ident, seq & 0xFFFF, payload)
        timed = seq >= args.warmup
        pairs = list(zip(socks, results, strict=True))
        for sock, result in pairs if seq & 1 else pairs[::-1]:  # who goes first alternates too
            result["sent"] += timed
            start_wall = wall()
            start = clock()
            sock.sendto(packet, dst)
            while True:
                try:
                    reply, ancdata, _flags, _addr = sock.recvmsg(2048, ancbufsize)
                except TimeoutError:
                    result["lost"] += timed
                    break
                end = clock()
                ihl = (reply[0] & 0x0F) * 4
                kind, _code, _csum, r_ident, r_seq = struct.unpack_from("!BBHHH", reply, ihl)
                if kind != ICMP_ECHO_REPLY or r_ident != ident or r_seq != seq & 0xFFFF:
                    if end - start > timeout_ns:
                        result["lost"] += timed
                        break
                    continue  # a late reply to an earlier request: keep waiting for this one
                if timed:
                    result["app_ns"].append(end - start)
                    for level, kind_, data in ancdata:
                        if level == socket.SOL_SOCKET and kind_ == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", data[:16])
                            result["rtt_ns"].append(sec * 1_000_000_000 + nsec - start_wall)
                break
    return {"targets": results}


def udp_send(socks: list[socket.socket], args: argparse.Namespace) -> dict:
    (sock,) = socks
    payload = bytearray(args.size)
    pack = struct.Struct("!Q").pack_into
    send = sock.send
    interval = 1.0 / args.rate if args.rate else 0.0
    sent = errors = 0
    ready()
    now = time.perf_counter
    start = now()
    deadline = start + args.seconds
    for seq in range(args.count):
        if interval:
            # Paced: sleep only when more than 0.5 ms ahead, then catch up in a burst.
            ahead = start + seq * interval - now()
            if ahead > 0.0005:
                time.sleep(min(ahead, max(deadline - now(), 0.0)))
            if now() > deadline:
                break
        elif not seq & 255 and now() > deadline:
            break
        pack(payload, 0, seq)
        try:
            send(payload)
            sent += 1
        except OSError as exc:  # ENOBUFS, EAGAIN: the datagram is lost at the sender
            if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
                raise
            errors += 1
    elapsed = now() - start
    return {"sent": sent, "send_errors": errors, "seconds": elapsed,
            "pps": sent / elapsed if elapsed else 0.0}


def udp_recv(socks: list[socket.socket], args: argparse.Namespace) -> dict:
    (sock,) = socks
    sock.setblocking(False)
    buf = bytearray(65536)
    recv_into = sock.recv_into
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)
    count = nbytes = 0
    first = last = 0.0
    by_source: dict[int, int] = {}  # source port -> datagrams, with --by-source
    recvfrom_into = sock.recvfrom_into
    ready()
    deadline = time.perf_counter() + args.seconds
    stop = False
    while not stop:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        for fd, _event in poller.poll(min(left, 0.2) * 1000):
            if fd == sys.stdin.fileno():
                stop = True  # drain what is queued, then finish
        batch_start = time.perf_counter()
        got = 0
        while count + got < args.count:
            try:
                if args.by_source:
                    size, (_host, port) = recvfrom_into(buf)
                    by_source[port] = by_source.get(port, 0) + 1
                    nbytes += size
                else:
                    nbytes += recv_into(buf)
            except BlockingIOError:
                break
            got += 1
        if got:
            if not count:
                first = batch_start
            count += got
            last = time.perf_counter()
        if count >= args.count:
            break
    window = last - first
    result = {
        "received": count,
        "bytes": nbytes,
        "seconds": window,
        "pps": count / window if count > 1 and window > 0 else 0.0,
    }
    if args.by_source:
        result["by_source"] = {str(port): n for port, n in sorted(by_source.items())}
    return result


def ready() -> None:
    print("ready", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.kernel_side")
    parser.add_argument("command", choices=["ping", "udp-send", "udp-recv"])
    parser.add_argument("--fd", type=int, action="append", required=True,
                        help="a socket passed by the parent (ping takes several)")
    parser.add_argument("--dst", default="198.18.0.2")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--rate", type=float, default=0.0, help="datagrams per second, 0: flat out")
    parser.add_argument("--timeout", type=float, default=0.2)
    parser.add_argument("--by-source", action="store_true",
                        help="udp-recv: also count datagrams per source port (several senders, one socket)")
    args = parser.parse_args(argv)
    socks = [socket.socket(fileno=fd) for fd in args.fd]
    try:
        if args.command == "ping":
            result = ping(socks, args)
        elif args.command == "udp-send":
            result = udp_send(socks, args)
        else:
            result = udp_recv(socks, args)
    except KeyboardInterrupt:
        return 130
    finally:
        for sock in socks:
            sock.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
