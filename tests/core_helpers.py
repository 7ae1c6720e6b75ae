"""The bench shared by the sans-IO core tests: one Stack on a virtual network.

scapy crafts the packets that go in and dissects the ones that come out;
the core's own codecs are never used to check the core. Addresses come
from 198.18.0.0/15 only.
"""

from __future__ import annotations

from scapy.all import IP, UDP, Raw
from scapy.utils import checksum as scapy_checksum

from pystack.links.virtual import VirtualNetwork

ME = "198.18.0.2"  # the stack, on pst0 (198.18.0.0/24)
PEER = "198.18.0.1"  # on-link neighbour, also the default gateway
NEIGHBOUR = "198.18.0.3"  # another on-link host
FAR = "198.18.7.9"  # off-link, reached through the gateway
SUBNET_BCAST = "198.18.0.255"


class Bench:
    """A stack with pst0 = 198.18.0.2/24, a default route via 198.18.0.1, packets sent kept in ``out``
    (pst0 is a port with no peer: the test plays every other host)."""

    def __init__(self, mtu: int = 1500, seed: int = 1):
        self.net = VirtualNetwork()
        self.clock = self.net.clock
        self.stack = self.net.add_stack(seed=seed)
        self.port = self.net.attach(self.stack, "pst0", ME, 24, mtu=mtu)
        self.out: list[bytes] = self.port.sent
        self.iface = self.port.iface
        self.stack.add_route("0.0.0.0", 0, "pst0", gateway=PEER)
        self.counters = self.stack.counters

    def inject(self, packet: object) -> None:
        self.net.deliver(self.port, bytes(packet))  # type: ignore[call-overload]

    def sent(self) -> list[IP]:
        """Dissect (with scapy) and forget the packets sent so far."""
        packets = [IP(p) for p in self.out]
        self.out.clear()
        return packets

    def sent_raw(self) -> list[bytes]:
        packets = list(self.out)
        self.out.clear()
        return packets

    def udp_socket(self, port: int = 0, addr: str = "0.0.0.0", reuse: bool = False) -> int:
        fd = self.stack.socket()
        if reuse:
            from pystack.socket import SO_REUSEADDR, SOL_SOCKET

            self.stack.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        self.stack.bind(fd, (addr, port))
        return fd

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.counters.drops.items() if v}


def udp_packet(sport: int, dport: int, payload: bytes = b"hello", src: str = PEER, dst: str = ME,
               **ip_fields: object) -> bytes:
    return bytes(IP(src=src, dst=dst, **ip_fields) / UDP(sport=sport, dport=dport) / Raw(payload))


def raw_ipv4(src: str, dst: str, proto: int, payload: bytes, options: bytes = b"", ttl: int = 64,
             tos: int = 0, ident: int = 1, flags: int = 0, frag: int = 0) -> bytes:
    """An IPv4 packet with arbitrary (even malformed) option bytes; scapy computes the checksum."""
    assert len(options) % 4 == 0 and len(options) <= 40
    ihl = 5 + len(options) // 4
    header = bytes(
        IP(src=src, dst=dst, proto=proto, ttl=ttl, tos=tos, id=ident, flags=flags, frag=frag,
           ihl=ihl, len=ihl * 4 + len(payload), chksum=0)
    )[:20]
    header = header + options
    ck = scapy_checksum(header)
    return header[:10] + ck.to_bytes(2, "big") + header[12:] + payload


def fix_ip_checksum(packet: bytes) -> bytes:
    """Recompute the header checksum of a (possibly mutated) packet, with scapy's routine."""
    if len(packet) < 20:
        return packet
    ihl = (packet[0] & 0xF) * 4
    if ihl < 20 or ihl > len(packet):
        return packet
    header = packet[:10] + b"\x00\x00" + packet[12:ihl]
    return header[:10] + scapy_checksum(header).to_bytes(2, "big") + packet[12:]
