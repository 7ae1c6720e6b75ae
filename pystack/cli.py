"""The ``pystack`` command: ``pystack up`` brings the stack up on a TUN device in a namespace;
``pystack serve`` serves a directory from it (or from kernel sockets in the namespace)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from tux_like.config import Config
    from tux_like.server import Server

DEFAULT_NETNS = "pystack"
DEFAULT_TUN = "pst0"
DEFAULT_KERNEL_ADDRESS = "198.18.0.1/24"
DEFAULT_ADDRESS = "198.18.0.2"
DEFAULT_PORTS = {"http": 80, "ftp": 21}


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> Parser:
    parser = Parser(prog="pystack", description="A userspace TCP/IP stack written to be specialized.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    up = commands.add_parser("up", help="run the stack on a TUN device inside a network namespace")
    up.add_argument("--netns", default=DEFAULT_NETNS, help="namespace for the kernel side (created and removed if absent)")
    up.add_argument("--tun", default=DEFAULT_TUN, help="TUN device name")
    up.add_argument("--kernel-address", default=DEFAULT_KERNEL_ADDRESS, metavar="ADDR/LEN",
                    help="the kernel's address on the TUN, with prefix length")
    up.add_argument("--address", default=DEFAULT_ADDRESS, help="the stack's own address")
    up.add_argument("--mtu", type=int, default=1500)
    up.add_argument("--pcap", metavar="FILE", help="write every packet received and sent to FILE")
    up.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after SECONDS")
    up.add_argument("--no-services", action="store_true", help="do not serve echo/discard/chargen")
    serve = commands.add_parser(
        "serve", help="serve a directory over HTTP or FTP from pystack on TUN (or from kernel sockets)",
        description="Bring pystack up on TUN as `up` does and serve DIR with tux_like at "
                    f"{DEFAULT_ADDRESS} (with --kernel: on kernel sockets at the namespace's "
                    f"{DEFAULT_KERNEL_ADDRESS.split('/')[0]}). A `listen` in the config file is replaced.")
    serve.add_argument("--root", required=True, metavar="DIR", help="the document root")
    serve.add_argument("--protocol", choices=("http", "ftp"), help="default: the config file's, else http")
    serve.add_argument("--config", metavar="FILE", help="a TOML file of tux_like settings (tux_like/config.py)")
    serve.add_argument("--kernel", action="store_true",
                       help="serve on the kernel's sockets inside the namespace instead, for comparison")
    serve.add_argument("--netns", default=DEFAULT_NETNS, help="namespace for the kernel side (created and removed if absent)")
    serve.add_argument("--tun", default=DEFAULT_TUN, help="TUN device name")
    serve.add_argument("--port", type=int, help="default 80 (http) or 21 (ftp)")
    serve.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after SECONDS")
    from conformance.cli import add_parser as add_conformance_parser

    add_conformance_parser(commands)
    spec = commands.add_parser("spec", help="inspect what the specializer does to the stack's code (or yours)")
    spec_commands = spec.add_subparsers(dest="spec_command", required=True, parser_class=Parser)
    spec_list = spec_commands.add_parser("list", help="list the declared scenarios")
    spec_show = spec_commands.add_parser("show", help="binding times, residual code, assumptions and figures")
    spec_show.add_argument("scenario")
    spec_serve = spec_commands.add_parser(
        "serve", help="serve remote specialization to devices (thesis chapter 4)",
        description="Specialize for devices that send their context (remote.device.make_remote_system), "
                    "replying with signed residual code.")
    spec_serve.add_argument("--listen", required=True, metavar="ADDR:PORT", help="where to listen (kernel TCP)")
    spec_serve.add_argument("--key", required=True, metavar="FILE",
                            help="a shared HMAC-SHA256 key (16 bytes or more), or an Ed25519 private key in PEM")
    spec_serve.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after SECONDS")
    for spec_parser in (spec_list, spec_show):
        spec_parser.add_argument("--module", metavar="PKG.MOD",
                                 help="a module with its own scenarios (a .spec.toml beside it) instead of pystack's")
    spec_show.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                           help="socket option or world setting, e.g. ttl=5 mtu=576 address=198.18.0.1:53; "
                                "with --module, an argument of the declaration's world hook")
    spec_show.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    spec_show.add_argument("--html", metavar="FILE", help="also write the view as one self-contained HTML page")
    spec_show.add_argument("--backend", choices=("python", "c"), default="python",
                           help="c: the residual translated to C, its Python shell and what stays in Python")
    from stingy.cli import add_parser as add_stingy_parser

    add_stingy_parser(commands)
    return parser


def check_up_arguments(args: argparse.Namespace) -> None:
    """Validate ``up`` arguments so that each mistake gets one clear line."""
    try:
        kernel = ipaddress.IPv4Interface(args.kernel_address)
    except ValueError:
        raise UsageError(f"--kernel-address must look like 198.18.0.1/24, got {args.kernel_address!r}") from None
    try:
        own = ipaddress.IPv4Address(args.address)
    except ValueError:
        raise UsageError(f"--address must be an IPv4 address, got {args.address!r}") from None
    if own not in kernel.network or own == kernel.ip:
        raise UsageError(f"--address {own} must be another address in {kernel.network}")
    if own in (kernel.network.network_address, kernel.network.broadcast_address):
        raise UsageError(f"--address {own} is the network or broadcast address of {kernel.network}")
    if not 68 <= args.mtu <= 65535:
        raise UsageError(f"--mtu must be between 68 and 65535, got {args.mtu}")
    check_host_arguments(args)
    if args.pcap is not None:
        folder = os.path.dirname(os.path.abspath(args.pcap))
        if not os.path.isdir(folder):
            raise UsageError(f"--pcap: no such directory {folder!r}")


def check_host_arguments(args: argparse.Namespace) -> None:
    """The arguments ``up`` and ``serve`` share: duration, TUN and namespace names."""
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}")
    if not 1 <= len(args.tun) <= 15 or "/" in args.tun or " " in args.tun:
        raise UsageError(f"--tun must be an interface name of 1-15 characters, got {args.tun!r}")
    if not 1 <= len(args.netns) <= 15 or not args.netns.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--netns must be 1-15 letters, digits, '-' or '_', got {args.netns!r}")


def serve_config(args: argparse.Namespace) -> Config:
    """The server's configuration: the file, then the flags; it listens where ``serve`` serves."""
    from tux_like.config import ConfigError, load_config, make_config

    check_host_arguments(args)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        config = load_config(args.config, {"document_root": args.root, "protocol": args.protocol})
        port = args.port if args.port is not None else DEFAULT_PORTS[config.protocol]
        return make_config({"listen": f"{serve_address(args)}:{port}"}, base=config)
    except ConfigError as bad:
        raise UsageError(str(bad)) from None


def serve_address(args: argparse.Namespace) -> str:
    return DEFAULT_KERNEL_ADDRESS.split("/")[0] if args.kernel else DEFAULT_ADDRESS


async def run_serve(args: argparse.Namespace, config: Config) -> int:
    from tux_like.driver import serving

    from .host.tun_host import tun_host

    listen = config.listen[0]
    with stop_signals() as signals:
        async with tun_host(args.netns, args.tun, DEFAULT_KERNEL_ADDRESS, DEFAULT_ADDRESS) as host:
            if args.kernel:
                from tux_like.backends.kernel_net import KernelNet

                net = KernelNet(host.ns.socket)
            else:
                from tux_like.backends.pystack_net import PystackNet

                net = PystackNet(host.network.driver)
            async with serving(config, net, log=log_line) as driver:
                with trio.fail_after(10):  # it answers: a connection from the namespace is taken
                    with host.kernel_socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                        await probe.connect((listen.address, listen.port))
                print(f"ready {config.protocol}://{listen.address}:{listen.port}/", flush=True)
                await wait_for_stop(signals, args.duration)
                driver.action("stop")
    print(serve_report(driver.server, "kernel sockets" if args.kernel else "pystack"), flush=True)
    return 0


def log_line(line: str) -> None:
    """The access log (when configured): on stderr, so that stdout stays the command's own."""
    sys.stderr.write(line + "\n")


def serve_report(server: Server, backend: str) -> str:
    """The counters ``serve`` prints when it stops (the readiness probe is one connection)."""
    stats = server.stats
    runs: dict[str, int] = {}
    for ti in server.threads:
        for stage, count in ti.scheduler.stage_runs.items():
            runs[stage] = runs.get(stage, 0) + count
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(stats.requests.items())) or "none"
    return "\n".join([
        f"tux_like on {backend} ({server.config.protocol}):",
        f"    connections: {stats.connections} ({stats.refused} refused past max_connect)",
        f"    requests by status: {statuses}",
        f"    bytes: {stats.bytes_sent} sent, {stats.bytes_received} received",
        "    stage runs: " + (", ".join(f"{stage} {count}" for stage, count in sorted(runs.items())) or "none"),
    ])


async def run_up(args: argparse.Namespace) -> int:
    from .host.tun_host import tun_host
    from .services import serve_services

    with stop_signals() as signals:
        async with tun_host(args.netns, args.tun, args.kernel_address, args.address, args.mtu, args.pcap) as host:
            async with trio.open_nursery() as nursery:
                if not args.no_services:
                    await nursery.start(serve_services, host.network)
                print(f"ready {args.address}", flush=True)
                await wait_for_stop(signals, args.duration)
                nursery.cancel_scope.cancel()
    print(host.stack.counters.format(), flush=True)
    return 0


def stop_signals() -> AbstractContextManager[AsyncIterator[int]]:
    """SIGINT and SIGTERM, caught from bringing up to tearing down: one that comes early
    stops the command once it is ready, and a second one cannot cut the cleanup short."""
    return trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)


async def wait_for_stop(signals: AsyncIterator[int], duration: float | None) -> None:
    """Return on a signal from ``signals``, or when ``duration`` seconds have passed."""
    with trio.move_on_after(duration if duration is not None else float("inf")):
        async for _ in signals:
            return


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "up":
            check_up_arguments(args)
            return up(args)
        if args.command == "serve":
            config = serve_config(args)
            return with_tun(f"cannot serve from namespace {args.netns}", run_serve, args, config)
        if args.command == "conformance":
            from conformance.cli import main as conformance

            return conformance(args)
        if args.command == "spec":
            return spec(args)
        if args.command == "stingy":
            from stingy.cli import StingyUsageError
            from stingy.cli import main as stingy

            try:
                return stingy(args)
            except StingyUsageError as bad:
                raise UsageError(str(bad)) from None
    except UsageError as bad:
        print(f"pystack: {bad}", file=sys.stderr)
        return 2
    return 0


def spec(args: argparse.Namespace) -> int:
    if args.spec_command == "serve":
        return spec_serve(args)
    from specializer import show

    if args.module and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the user's module, from where the command runs (as python -m)
    try:
        if args.spec_command == "list":
            print(show.list_scenarios(args.module))
            return 0
        if args.backend == "c":
            if args.html:
                raise UsageError("--html shows the Python residual; leave it out with --backend c")
            print(show.show_c(args.scenario, args.context, args.module), end="")
            return 0
        colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        print(show.show(args.scenario, args.context, colour, args.module, args.html), end="")
    except show.UsageError as bad:
        raise UsageError(str(bad)) from None
    return 0


def spec_serve(args: argparse.Namespace) -> int:
    """The specialization server, until a signal (or --duration)."""
    from remote.protocol import Signer
    from remote.server import Service, parse_listen, serve

    try:
        host, port = parse_listen(args.listen)
        signer = Signer.from_file(args.key)
    except (OSError, ValueError) as bad:
        raise UsageError(str(bad)) from None
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, got {args.duration}")

    async def run() -> int:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, Service(signer), host, port)
            print(f"pystack: specialization server on {host}:{bound}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await wait_for_stop(signals, args.duration)
            nursery.cancel_scope.cancel()
        return 0

    try:
        return trio.run(run)
    except OSError as exc:
        print(f"pystack: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1


def up(args: argparse.Namespace) -> int:
    return with_tun(f"cannot bring {args.tun} up in namespace {args.netns}", run_up, args)


def with_tun(failure: str, run: Callable[..., Awaitable[int]], *arguments: Any) -> int:
    """Run ``run`` under trio if TUN and namespaces are possible here; say why not in one line
    (``failure`` begins the line for an OSError on the way)."""
    from .host.netns import NeedsNetAdmin, why_not

    reason = why_not()
    if reason is not None:
        print(f"pystack: {reason} (or, without root, the in-memory mode: python -m demos.memory_demo)", file=sys.stderr)
        return 1
    try:
        return trio.run(run, *arguments)
    except NeedsNetAdmin as exc:
        print(f"pystack: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pystack: {failure}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
