"""The ``pystack`` command: ``pystack up`` brings the stack up on a TUN device in a namespace."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from collections.abc import Sequence

import trio

DEFAULT_NETNS = "pystack"
DEFAULT_TUN = "pst0"
DEFAULT_KERNEL_ADDRESS = "198.18.0.1/24"
DEFAULT_ADDRESS = "198.18.0.2"


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
    from conformance.cli import add_parser as add_conformance_parser

    add_conformance_parser(commands)
    spec = commands.add_parser("spec", help="inspect what the specializer does to the stack's code")
    spec_commands = spec.add_subparsers(dest="spec_command", required=True, parser_class=Parser)
    spec_commands.add_parser("list", help="list the declared scenarios")
    spec_show = spec_commands.add_parser("show", help="binding times, residual code, assumptions and figures")
    spec_show.add_argument("scenario")
    spec_show.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                           help="socket option or world setting, e.g. ttl=5 mtu=576 address=198.18.0.1:53")
    spec_show.add_argument("--color", choices=("auto", "always", "never"), default="auto")
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
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}")
    if not 1 <= len(args.tun) <= 15 or "/" in args.tun or " " in args.tun:
        raise UsageError(f"--tun must be an interface name of 1-15 characters, got {args.tun!r}")
    if not 1 <= len(args.netns) <= 15 or not args.netns.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--netns must be 1-15 letters, digits, '-' or '_', got {args.netns!r}")
    if args.pcap is not None:
        folder = os.path.dirname(os.path.abspath(args.pcap))
        if not os.path.isdir(folder):
            raise UsageError(f"--pcap: no such directory {folder!r}")


async def run_up(args: argparse.Namespace) -> int:
    from .host.tun_host import tun_host
    from .services import serve_services

    async with tun_host(args.netns, args.tun, args.kernel_address, args.address, args.mtu, args.pcap) as host:
        async with trio.open_nursery() as nursery:
            if not args.no_services:
                await nursery.start(serve_services, host.network)
            print(f"ready {args.address}", flush=True)
            await wait_for_stop(args.duration)
            nursery.cancel_scope.cancel()
    print(host.stack.counters.format(), flush=True)
    return 0


async def wait_for_stop(duration: float | None) -> None:
    """Return on SIGINT or SIGTERM, or when ``duration`` seconds have passed."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with trio.move_on_after(duration if duration is not None else float("inf")):
            async for _ in signals:
                return


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "up":
            check_up_arguments(args)
            return up(args)
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
    from specializer import show

    try:
        if args.spec_command == "list":
            print(show.list_scenarios())
            return 0
        colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        print(show.show(args.scenario, args.context, colour), end="")
    except show.UsageError as bad:
        raise UsageError(str(bad)) from None
    return 0


def up(args: argparse.Namespace) -> int:
    from .host.netns import NeedsNetAdmin, why_not

    reason = why_not()
    if reason is not None:
        print(f"pystack: {reason} (or, without root, the in-memory mode: python -m demos.memory_demo)", file=sys.stderr)
        return 1
    try:
        return trio.run(run_up, args)
    except NeedsNetAdmin as exc:
        print(f"pystack: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pystack: cannot bring {args.tun} up in namespace {args.netns}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
