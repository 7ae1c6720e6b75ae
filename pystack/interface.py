"""Network interfaces: an address, an MTU, and where transmitted packets go.

The core never does I/O. An interface hands each outgoing packet's buffer
to its ``sink`` (the trio driver installs one that writes to the link at
once; a sink must not keep the bytearray it gets, or must copy it); with
no sink, packets wait in ``txq`` until someone calls :meth:`drain`, and a
socket's packets waiting there count against its SO_SNDBUF by truesize.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .addr import prefix_mask

if TYPE_CHECKING:
    from .skbuff import SkBuff
    from .socket import Socket

Sink = Callable[[bytearray], None]


class Interface:
    def __init__(
        self,
        name: str,
        address: int,
        prefixlen: int,
        mtu: int = 1500,
        sink: Sink | None = None,
        loopback: bool = False,
    ):
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68-65535")
        if not 0 <= prefixlen <= 32:
            raise ValueError(f"prefix length {prefixlen} out of range 0-32")
        self.name = name
        self.address = address
        self.prefixlen = prefixlen
        self.mtu = mtu
        self.sink = sink
        self.loopback = loopback
        # Directed broadcast address of the subnet (-1: none, for /31 and /32); computed
        # once, since every received packet is checked against it.
        self.broadcast = -1 if prefixlen >= 31 else (address | ~prefix_mask(prefixlen)) & 0xFFFFFFFF
        self.txq: deque[tuple[SkBuff, Socket | None]] = deque()
        self.tx_packets = 0
        self.rx_packets = 0

    @property
    def network(self) -> int:
        return self.address & prefix_mask(self.prefixlen)

    def transmit(self, skb: SkBuff, owner: Socket | None = None) -> None:
        self.tx_packets += 1
        if self.sink is not None:
            self.sink(skb.data)
            return
        self.txq.append((skb, owner))
        if owner is not None:
            owner.wmem += skb.truesize

    def drain(self, limit: int | None = None) -> list[bytes]:
        """Take queued packets (all, or up to ``limit``), giving their send-buffer space back."""
        taken = []
        while self.txq and (limit is None or len(taken) < limit):
            skb, owner = self.txq.popleft()
            if owner is not None:
                owner.release_wmem(skb.truesize)
            taken.append(bytes(skb.data))
        return taken
