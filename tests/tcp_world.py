"""A TCP connection from a stack to a peer stack of its own, on a virtual network.

The TCP send benchmark (bench/spec_tcp_send.py) and the TCP equivalence
tests (tests/test_spec_tcp.py) compare generic and specialized sends in the
same steady state: every segment reaches the peer, whose application reads
everything (``read``, the poll to run the network with), and its ACKs come
back. No scapy here: the benchmark imports it too.
"""

from __future__ import annotations

from pystack.links.virtual import VirtualNetwork
from pystack.socket import IPPROTO_TCP, SOCK_STREAM
from pystack.stack import Stack
from pystack.tcp.api import TCP_NODELAY

PORT = 80


class Connection:
    """``stack`` connected through its interface ``interface`` to a peer stack listening at
    ``peer_address`` (``wire`` reads the network's log: make it with ``record=Transmission, log=True``)."""

    def __init__(self, net: VirtualNetwork, stack: Stack, interface: str, address: str, peer_address: str,
                 nodelay: bool = False):
        self.net = net
        self.stack = stack
        self.port = net.attach(stack, interface, address)
        self.peer = net.add_stack(seed=99, tcp_config=stack.tcp.config)
        self.peer_port = net.attach(self.peer, "eth0", peer_address, direction=f"peer>{interface}")
        net.link(self.port, self.peer_port)
        self.fd = stack.socket(type=SOCK_STREAM)
        if nodelay:
            stack.setsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, 1)
        listener = self.peer.socket(type=SOCK_STREAM)
        self.peer.bind(listener, ("0.0.0.0", PORT))
        self.peer.listen(listener, 1)
        self.peer_fd = net.establish(stack, self.fd, (peer_address, PORT), self.peer, listener)
        self.received = bytearray()
        self._handshake = self.port.iface.tx_packets

    @property
    def segments(self) -> int:
        """How many packets our end sent to the peer since the handshake."""
        return self.port.iface.tx_packets - self._handshake

    @property
    def wire(self) -> list[bytes]:
        """The packets our end sent to the peer since the handshake."""
        log = self.net.log
        if log is None:
            raise ValueError("the network keeps no log: make it with record=Transmission, log=True")
        return [record.raw for record in log if record.direction == self.port.direction][self._handshake:]

    def read(self) -> None:
        """The peer's application: take whatever has arrived."""
        while True:
            try:
                data = self.peer.recv(self.peer_fd, 1 << 22)
            except BlockingIOError:
                return
            if not data:
                return
            self.received += data


def outcome(call, *args):
    """What a socket call did: its value, or its errno (the twin tests compare the two worlds')."""
    try:
        return ("ok", call(*args))
    except OSError as exc:
        return ("error", exc.errno)
