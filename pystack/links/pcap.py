"""Packet capture: a classic libpcap writer and a Link that records through it.

The files open in tcpdump, Wireshark and scapy. LINKTYPE_RAW because our
packets start at the IPv4 header (TUN with IFF_NO_PI, memory links). Written
by hand, in a few lines, so that scapy stays off the data path.
"""

from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO, Self

from pystack.links.base import Link

LINKTYPE_RAW = 101
_MAGIC_USEC = 0xA1B2C3D4
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, v2.4, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len


class PcapWriter:
    """Writes packets to a pcap file (microsecond timestamps, little-endian).

    Given a path it owns the file and closes it; given an open binary file it
    only flushes it, so the caller may keep writing or read it back.
    """

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, snaplen: int = 65535) -> None:
        if isinstance(target, (str, os.PathLike)):
            self._file: BinaryIO = open(target, "wb")
            self._owned = True
        else:
            self._file = target
            self._owned = False
        self.snaplen = snaplen
        self._file.write(_FILE_HEADER.pack(_MAGIC_USEC, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    def write(self, packet: bytes, timestamp: float | None = None) -> None:
        """Record one packet, at `timestamp` (seconds since the epoch) or now."""
        when = time.time() if timestamp is None else timestamp
        seconds, micros = divmod(round(when * 1_000_000), 1_000_000)
        data = bytes(packet[: self.snaplen])
        self._file.write(_RECORD_HEADER.pack(seconds, micros, len(data), len(packet)) + data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PcapTap(Link):
    """A Link that passes everything through to `link` and records it in `writer`.

    Both directions go to the same file, as tcpdump on an interface shows them.
    Closing the tap closes the link and flushes, but does not close, the writer
    (one writer may serve several taps).
    """

    def __init__(self, link: Link, writer: PcapWriter) -> None:
        self.link = link
        self.writer = writer
        self.name = link.name
        self.mtu = link.mtu
        self.stats = link.stats  # the same counters: the tap is not a second wire

    def send_nowait(self, packet: bytes) -> None:
        self.writer.write(packet)
        self.link.send_nowait(packet)

    async def receive(self) -> bytes:
        packet = await self.link.receive()
        self.writer.write(packet)
        return packet

    def close(self) -> None:
        self.link.close()
        self.writer.flush()
