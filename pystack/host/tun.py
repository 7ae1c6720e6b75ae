"""A Linux TUN device as a Link: the stack's wire to the real kernel.

IFF_NO_PI, so each read or write is exactly one IPv4 packet with no
4-byte protocol header, the same framing as the memory links. The fd is
non-blocking and waited on with trio, so one thread serves the whole stack.
"""

from __future__ import annotations

import errno
import os

import pytun
import trio

from pystack.host.netns import NeedsNetAdmin
from pystack.links.base import Link, LinkStats

# A full queue (EAGAIN, ENOBUFS), a device that is down (EIO) or a packet the
# kernel refuses (EINVAL) loses one packet, as a busy wire would; the stack
# goes on.
_DROPPED = {errno.EAGAIN, errno.ENOBUFS, errno.EIO, errno.EINVAL}
BATCH = 32  # packets read back to back, at most, before other tasks run


class TunLink(Link):
    """A TUN device, created in the current namespace (move it with Namespace.move_link)."""

    read_size = 65535  # the largest IPv4 packet (a subclass adds the size of any header it frames with)

    def __init__(self, name: str = "pst0", mtu: int = 1500, extra_flags: int = 0) -> None:
        """``extra_flags``: more IFF_* flags (IFF_VNET_HDR for a device that frames with virtio-net headers)."""
        try:
            self._device = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI | extra_flags)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise NeedsNetAdmin(f"creating TUN device {name!r}: {exc.strerror}") from exc
            raise
        try:
            self._device.mtu = mtu
        except BaseException:
            self._device.close()
            raise
        self.name: str = self._device.name
        self.mtu = mtu
        self.stats = LinkStats()
        self._fd: int | None = self._device.fileno()
        self._unyielded = 0  # packets read since the last checkpoint
        os.set_blocking(self._fd, False)

    def fileno(self) -> int:
        if self._fd is None:
            raise trio.ClosedResourceError(f"link {self.name} is closed")
        return self._fd

    def send_nowait(self, packet: bytes) -> None:
        try:
            os.write(self.fileno(), packet)
        except OSError as exc:
            if exc.errno not in _DROPPED:
                raise
            self.stats.tx_dropped += 1
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)

    async def receive(self) -> bytes:
        """Read first and wait only when nothing is queued: under load the packet is
        usually there already. Queued packets are taken BATCH at a time before other
        tasks run (a checkpoint every BATCH-th read), so that a server loop woken by
        them handles the batch in one turn rather than one trio round per packet."""
        fd = self.fileno()
        try:
            packet = os.read(fd, self.read_size)
        except BlockingIOError:
            self._unyielded = 0
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    packet = os.read(fd, self.read_size)
                    break
                except BlockingIOError:
                    continue
        else:
            self._unyielded += 1
            if self._unyielded >= BATCH:
                self._unyielded = 0
                await trio.lowlevel.checkpoint()
        self.stats.rx_packets += 1
        self.stats.rx_bytes += len(packet)
        return packet

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            trio.lowlevel.notify_closing(fd)  # wakes receive() with ClosedResourceError
        except RuntimeError:
            pass  # closed outside trio: nobody can be waiting
        self._device.close()
