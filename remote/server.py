"""The specialization server (thesis 4.2.4-4.2.8): ``pystack spec serve``.

:class:`Service` is the helper process and run-time layer, sans-IO: a request's
bytes in, a reply's bytes out. It rebuilds stand-ins from the device's snapshot
(remote.context.rebuild: the device emulation), runs the same specializer as local
specialization on them, and replies with the residual's source, its frozen
references (as paths into the device's context) and its assumptions, signed. Replies
are cached by scenario and context digest. Anything wrong with a request (garbage,
truncated, too large, an unknown scenario, another protocol version, a context the
specializer cannot use) gets an error reply, and the server goes on.

:func:`serve` is the trio driver: one task per connection, frames in order.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from collections import OrderedDict

import trio

from pystack.tokens.facts import Assumption, SpecializationError
from pystack.tokens.scenario import DeclarationError, Scenario, all_scenarios
from specializer.system import specialize

from .context import ContextError, declared_fields, encoder, rebuild
from .protocol import (
    ErrorReply,
    FrameReader,
    ProtocolError,
    Reply,
    Signer,
    decode_request,
    encode_reply,
    request_number,
)

CACHE_CAPACITY = 256


class Service:
    """Specialization for remote devices: ``handle(body) -> frame``."""

    def __init__(self, signer: Signer, scenarios: dict[str, Scenario] | None = None, package: str = "pystack"):
        self.signer = signer
        self.scenarios = all_scenarios() if scenarios is None else scenarios
        self.fields = declared_fields(package)
        self.cache: OrderedDict[str, Reply] = OrderedDict()
        self.hits = self.misses = self.errors = 0
        self._globals: dict[int, str] | None = None

    def handle(self, body: bytes) -> bytes:
        try:
            reply = self.reply(body)
        except (ProtocolError, ContextError, SpecializationError, DeclarationError) as why:
            self.errors += 1
            return ErrorReply(request_number(body), str(why)).encode()
        except Exception as why:  # noqa: BLE001 - the evaluator on a device's stand-ins: say so, serve on
            self.errors += 1
            return ErrorReply(request_number(body), f"specialization failed: {type(why).__name__}: {why}").encode()
        return encode_reply(reply, self.signer)

    def reply(self, body: bytes) -> Reply:
        request = decode_request(body)
        scenario = self.scenarios.get(request.scenario)
        if scenario is None:
            raise ProtocolError(f"unknown scenario {request.scenario!r}")
        key = request.digest
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            self.cache.move_to_end(key)
            return dataclasses.replace(cached, number=request.number)
        self.misses += 1
        roots, numbers = rebuild(request.context, self.fields)
        static = {name for name, bt in scenario.binding_times.items() if bt == "S"}
        if set(roots) != static:
            raise ContextError(f"the context's roots {sorted(roots)} are not {scenario.name}'s static "
                               f"parameters {sorted(static)}")
        entry = specialize(scenario, roots)
        encode = encoder(numbers, self.globals_by_id)
        assumptions = [[encode(a.subject), a.field if a.kind == "field" else encode(a.field), encode(a.value),
                        assumption_kind(a)] for a in entry.assumptions]
        compiled = entry.compiled
        reply = Reply(request.number, scenario.name, key, compiled.tree.name, compiled.source,
                      {name: encode(value) for name, value in compiled.constants.items()}, assumptions)
        self.cache[key] = reply
        if len(self.cache) > CACHE_CAPACITY:
            self.cache.popitem(last=False)
        return reply

    def globals_by_id(self) -> dict[int, str]:
        """Module-level values of the loaded pystack modules by id (struct codecs, counters'
        names...), made once: how a constant that is neither a function nor a context
        object is named for the device."""
        if self._globals is None:
            self._globals = {}
            for module_name, module in list(sys.modules.items()):
                if module is None or not module_name.startswith("pystack"):
                    continue
                for name, value in vars(module).items():
                    self._globals.setdefault(id(value), f"{module_name}:{name}")
        return self._globals


def assumption_kind(assumption: Assumption) -> str:
    """``field``, ``item`` (``subject[key] is value``) or ``lookup:get`` and the like (what a
    lookup method of an invariant container gives): how the device checks it."""
    method = getattr(assumption, "method", None)
    return f"lookup:{method}" if method is not None else assumption.kind


async def serve_connection(service: Service, stream: trio.abc.Stream) -> None:
    """Answer every request on one connection, in order, until it closes; a frame that
    cannot be read (over the size limit) gets an error reply and ends the connection."""
    reader = FrameReader()
    async with stream:
        try:
            while True:
                try:
                    body = reader.next()
                except ProtocolError as why:
                    await stream.send_all(ErrorReply(0, str(why)).encode())
                    return
                if body is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reader.feed(data)
                    continue
                await stream.send_all(service.handle(body))
                await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def serve(service: Service, host: str, port: int, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve on kernel TCP at host:port (port 0: any free one, reported through
    ``task_status``), one task per connection."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await serve_listeners(service, listeners)


async def serve_listeners(service: Service, listeners: list[trio.SocketListener]) -> None:
    """Serve on listeners made elsewhere (a socket inside a network namespace)."""
    await trio.serve_listeners(functools.partial(serve_connection, service), listeners)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` -> (address, port); ValueError with the reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen {text!r}: expected ADDR:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen {text!r}: port {port} out of range")
    return host, port


class ServerThread:
    """A server on kernel TCP in a thread of its own, for a process that is also the device
    (tests, the demo, the benchmark): ``with ServerThread(service) as port: ...``. ``stop``
    and ``start`` again restart it on the same port."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0):
        self.service, self.host, self.port = service, host, port
        self.thread: threading.Thread | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.scope: trio.CancelScope | None = None

    def start(self) -> int:
        started = threading.Event()

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as self.scope:
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(serve, self.service, self.host, self.port)
                    started.set()

        self.thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the specialization server did not start")
        return self.port

    def stop(self) -> None:
        if self.thread is not None and self.token is not None and self.scope is not None:
            trio.from_thread.run_sync(self.scope.cancel, trio_token=self.token)
            self.thread.join()
            self.thread = None

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
