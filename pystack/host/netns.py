"""The project's one network namespace helper (pyroute2 underneath).

Everything that touches a real kernel interface (TUN tests, demos) runs in a
namespace the project creates and removes itself, so no packet reaches the
host's own network. The TUN device is created by the stack process in the
root namespace and then moved in: its file descriptor keeps working.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket as _socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2 import netns as _netns

_NAME = re.compile(r"[A-Za-z0-9_-]{1,15}")
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # creating a namespace needs unshare() and mount()


class NeedsNetAdmin(PermissionError):
    """Raised when a TUN device or namespace needs privileges we do not have."""

    def __init__(self, detail: str = "") -> None:
        message = (
            "this needs root or CAP_NET_ADMIN (TUN devices, network namespaces): "
            "run it with sudo, or use the in-memory mode (python -m demos.memory_demo)"
        )
        super().__init__(f"{message} [{detail}]" if detail else message)


def sigterm_as_interrupt(also: Callable[[], object] | None = None) -> None:
    """From now on SIGTERM takes the same way out as Ctrl-C in this process, so the namespaces
    it made are removed either way (bench, the test suite); ``also`` is called first (the
    test suite asks pytest to stop, as an interrupt wrapped in trio's exception group is a
    failure to pytest).

    Only in this process: pyroute2 forks helpers (namespace creation) and stops them with
    SIGTERM; a forked copy must die at once, not unwind through our cleanup and remove the
    namespace it just created.
    """
    owner = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        if also is not None:
            also()
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started in the background
    signal.signal(signal.SIGTERM, on_sigterm)


def why_not() -> str | None:
    """Why TUN/namespace work is impossible here, in one line; None if it is possible."""
    effective = _effective_capabilities()
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", _CAP_NET_ADMIN), ("CAP_SYS_ADMIN", _CAP_SYS_ADMIN))
        if not effective >> bit & 1
    ]
    if missing:
        return f"needs root or CAP_NET_ADMIN (missing {', '.join(missing)}); run with sudo"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        return f"needs root or CAP_NET_ADMIN and /dev/net/tun: cannot open it ({exc.strerror})"
    return None


def have_net_admin() -> bool:
    """True if this process may create TUN devices and network namespaces."""
    return why_not() is None


def _effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


class Namespace:
    """A named network namespace, created on enter if needed and removed on exit.

    A namespace that already existed is used but left in place on exit, so
    that attaching to someone else's namespace never destroys it.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"namespace name must be 1-15 letters, digits, '-' or '_', got {name!r}"
            )
        self.name = name
        self.created = False

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def exists(self) -> bool:
        return self.name in _netns.listnetns()

    def __enter__(self) -> Self:
        if not self.exists():
            _netns.create(self.name)
            self.created = True
        try:
            with self._iproute() as ipr:
                ipr.link("set", index=_index(ipr, "lo", self.name), state="up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the namespace if we created it (interfaces in it go with it)."""
        if self.created:
            self.created = False
            _netns.remove(self.name)

    def move_link(self, ifname: str) -> None:
        """Move interface `ifname` from the root namespace into this one."""
        with IPRoute() as ipr:
            ipr.link("set", index=_index(ipr, ifname, "the root namespace"), net_ns_fd=self.name)

    def configure_link(self, ifname: str, address: str, prefixlen: int, mtu: int) -> None:
        """Give `ifname` (already in here) an IPv4 address and an MTU, then bring it up.

        IPv6 is disabled on it first, so the kernel sends no router
        solicitations or DAD probes into a link that only speaks IPv4. A
        link without IPv6 (MTU below 1280, kernel without IPv6) has nothing
        to disable.
        """
        with self._entered(), contextlib.suppress(FileNotFoundError):
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
                f.write("1")
        with self._iproute() as ipr:
            index = _index(ipr, ifname, self.name)
            ipr.link("set", index=index, mtu=mtu)
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up")

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside the namespace (`ip netns exec`), like subprocess.run."""
        return subprocess.run(self._exec_argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside the namespace, like subprocess.Popen."""
        return subprocess.Popen(self._exec_argv(argv), **kwargs)

    def socket(self, family: int, type: int, proto: int = 0) -> _socket.socket:
        """A kernel socket living in this namespace, usable from this process.

        A socket stays in the namespace it was created in, so only the
        creation needs the switch.
        """
        with self._entered():
            return _socket.socket(family, type, proto)

    def _exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def _iproute(self) -> IPRoute:
        # flags=0: pyroute2 defaults to O_CREAT, which would silently create a
        # namespace under a mistyped name.
        return IPRoute(netns=self.name, flags=0)

    @contextmanager
    def _entered(self) -> Iterator[None]:
        """Switch the calling thread into the namespace, and always back.

        setns() is per thread: other threads are unaffected, but nothing may
        await inside (another trio task would run in the wrong namespace).
        """
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _netns.setns(self.name, flags=0)
            try:
                yield
            finally:
                _netns.setns(home)
        finally:
            os.close(home)


def _index(ipr: IPRoute, ifname: str, where: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname!r} in {where}")
    return int(found[0])
