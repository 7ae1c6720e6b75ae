"""An established TCP connection to specialize: a peer stack, the handshake, then the peer leaves.

``spec show``, the benchmarks and the tests need a TCB in ESTABLISHED
state with real negotiated options; this plays the handshake against a
second in-memory stack (same clock), then puts the interface's original
sink back.
"""

from __future__ import annotations

from pystack.socket import SOCK_STREAM
from pystack.stack import Stack

PEER = "198.18.0.1"
PORT = 80


def establish(stack: Stack, fd: int, interface: str = "eth0", peer_address: str = PEER,
              port: int = PORT) -> Stack:
    """Connect ``fd`` to a listening peer stack; returns the peer (its end stays accepted)."""
    iface = stack.interfaces[interface]
    peer = Stack(clock=stack.clock, seed=99, tcp_config=stack.tcp.config)
    to_peer: list[bytes] = []
    to_us: list[bytes] = []
    original_sink = iface.sink
    iface.sink = to_peer.append
    peer.add_interface("eth0", peer_address, iface.prefixlen, mtu=iface.mtu, sink=to_us.append)
    listener = peer.socket(type=SOCK_STREAM)
    peer.bind(listener, ("0.0.0.0", port))
    peer.listen(listener, 1)
    try:
        stack.connect(fd, (peer_address, port))
    except BlockingIOError:
        pass
    for _ in range(10):
        while to_peer:
            peer.input(to_peer.pop(0), "eth0")
        while to_us:
            stack.input(to_us.pop(0), interface)
    iface.sink = original_sink
    if stack.connect_result(fd) != 0:
        raise RuntimeError("the in-memory handshake did not complete")
    peer.accept(listener)
    return peer


class Connection:
    """A TCP connection from ``stack`` to a peer stack of its own, in memory.

    ``pump`` moves our segments to the peer (keeping them in ``wire``), lets
    the peer read everything, and brings its ACKs back: the steady state the
    TCP send benchmarks and equivalence tests compare in.
    """

    def __init__(self, stack: Stack, interface: str, address: str, peer_address: str, nodelay: bool = False):
        from pystack.socket import IPPROTO_TCP
        from pystack.tcp.api import TCP_NODELAY

        self.stack = stack
        self.interface = interface
        self.to_peer: list[bytes] = []
        self.wire: list[bytes] = []
        self.received = bytearray()
        stack.add_interface(interface, address, 24, sink=self.to_peer.append)
        self.fd = stack.socket(type=SOCK_STREAM)
        if nodelay:
            stack.setsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, 1)
        self.peer = establish(stack, self.fd, interface, peer_address)
        self.to_us: list[bytes] = []
        self.peer.interfaces["eth0"].sink = self.to_us.append
        self.peer_fd = max(self.peer.sockets)  # the accepted connection

    def pump(self, rounds: int = 16) -> None:
        self.stack.run_timers()
        self.peer.run_timers()
        for _ in range(rounds):
            while self.to_peer:
                packet = self.to_peer.pop(0)
                self.wire.append(packet)
                self.peer.input(packet, "eth0")
            while True:
                try:
                    data = self.peer.recv(self.peer_fd, 1 << 22)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.received += data
            while self.to_us:
                self.stack.input(self.to_us.pop(0), self.interface)
            if not self.to_peer:
                return
