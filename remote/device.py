"""The device side of remote specialization (thesis 4.2): context manager, code manager,
run-time layer, and the clients that carry requests.

``make_remote_system(stack, server=..., key=...)`` makes a stack's specialization
remote; the application keeps the token API (``do_specialize_send`` and the rest).
On a miss in the code manager the token runs the generic code while its request is
out; the reply is verified (remote.protocol), its frozen references rebound to the
live objects by path (remote.context.Rebinder), every assumption it names checked
against the live system, and only then installed, under the same guards as local
specialization. Any failure (server down, slow, an error reply, a bad signature, an
assumption that does not hold) leaves the token on the generic code, saying why in
its events; a reply overtaken by a change of context (a guard event while the
request was out) is asked for again. Guard events that need re-specialization go
to the server too.
"""

from __future__ import annotations

import ast
import functools
import itertools
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio

from pystack.stack import Stack
from pystack.tokens.facts import Assumption, Stats, _ItemAssumption, _LookupAssumption
from pystack.tokens.system import (
    CompiledResidual,
    SpecializationSystem,
    Specialized,
    Token,
    factory,
    load_function,
)

from .context import ContextError, Rebinder, declared_fields, snapshot
from .protocol import (
    ErrorReply,
    FrameReader,
    ProtocolError,
    Reply,
    Request,
    Verifier,
    decode_reply,
    digest,
)

Done = Callable[[bytes | Exception], None]
DEFAULT_TIMEOUT = 2.0
DIGESTS = 1024  # local keys remembered with their context digests
LOOKUPS = frozenset({"lookup:get", "lookup:__getitem__", "lookup:__contains__"})


class RemoteFailure(Exception):
    """The server could not be reached or answered with an error."""


# ------------------------------------------------------------------ clients


class BlockingClient:
    """Requests over one kept kernel TCP connection, answered before ``submit`` returns
    (the thesis's do_specialize sleeps until the reply). A kept connection the server
    closed (it restarted) is replaced once; a timeout drops the connection and fails."""

    def __init__(self, address: tuple[str, int], timeout: float = DEFAULT_TIMEOUT):
        self.address, self.timeout = address, timeout
        self.sock: socket.socket | None = None
        self.sent = self.received = 0  # bytes of the last exchange, frames whole

    def submit(self, frame: bytes, done: Done) -> None:
        try:
            body = self.exchange(frame)
        except (OSError, ProtocolError, RemoteFailure) as why:
            done(why)
        else:
            done(body)

    def exchange(self, frame: bytes) -> bytes:
        for attempt in range(2):
            kept = self.sock is not None
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout)
            try:
                self.sock.sendall(frame)
                body = self._receive()
            except TimeoutError:
                self.close()
                raise
            except (ConnectionError, RemoteFailure):
                self.close()
                if kept and attempt == 0:
                    continue  # the server closed a kept connection: once more, on a new one
                raise
            self.sent, self.received = len(frame), len(body) + 4
            return body
        raise AssertionError("unreachable")

    def _receive(self) -> bytes:
        assert self.sock is not None
        reader = FrameReader()
        while (body := reader.next()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise RemoteFailure("the server closed the connection" + (" mid-reply" if reader.pending else ""))
            reader.feed(data)
        return body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class TrioClient:
    """Requests over a trio stream (kernel TCP, or pystack's own: ``open_stream`` makes
    it), one at a time, answered later from a task in ``nursery``: the stack keeps
    running (and sending, generically) while a request is out."""

    def __init__(self, open_stream: Callable[[], Any], nursery: trio.Nursery, timeout: float = DEFAULT_TIMEOUT):
        self.open_stream, self.nursery, self.timeout = open_stream, nursery, timeout
        self.stream: trio.abc.Stream | None = None
        self.lock = trio.Lock()
        self.sent = self.received = 0

    def submit(self, frame: bytes, done: Done) -> None:
        self.nursery.start_soon(self._exchange, frame, done)

    async def _exchange(self, frame: bytes, done: Done) -> None:
        async with self.lock:
            try:
                with trio.fail_after(self.timeout):
                    body = await self._round_trip(frame)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                    ProtocolError, RemoteFailure) as why:
                await self.aclose()
                done(why)
                return
        done(body)

    async def _round_trip(self, frame: bytes) -> bytes:
        for attempt in range(2):
            kept = self.stream is not None
            if self.stream is None:
                self.stream = await self.open_stream()
            try:
                await self.stream.send_all(frame)
                reader = FrameReader()
                while (body := reader.next()) is None:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        raise RemoteFailure("the server closed the connection")
                    reader.feed(data)
            except (trio.BrokenResourceError, RemoteFailure):
                await self.aclose()
                if kept and attempt == 0:
                    continue
                raise
            self.sent, self.received = len(frame), len(body) + 4
            return body
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


# ------------------------------------------------------------------ the run-time layer


def load(reply: Reply, rebinder: Rebinder, filename: str) -> CompiledResidual:
    """The reply's function, its frozen references bound to live objects (closure cells,
    as local residual code has them: a route guard's reinforcement re-points them)."""
    if reply.backend != "python":
        raise ProtocolError(f"a {reply.backend!r} residual, and this device loads Python")
    tree = ast.parse(reply.source)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].name != reply.name:
        raise ProtocolError(f"the reply's source is not one function {reply.name!r}")
    fdef = tree.body[0]
    constants = {name: rebinder.decode(value) for name, value in reply.constants.items()}
    module = factory(fdef, list(constants))
    wrapper = module.body[0]
    assert isinstance(wrapper, ast.FunctionDef)
    for node in (wrapper, *wrapper.args.args, wrapper.body[-1], wrapper.body[-1].value):  # the parsed function is located
        node.lineno, node.col_offset, node.end_lineno, node.end_col_offset = 1, 0, 1, 0  # type: ignore[union-attr]
    return CompiledResidual(load_function(module, fdef.name, constants, filename), fdef, constants)


def assumptions_of(reply: Reply, rebinder: Rebinder) -> list[Assumption]:
    """The facts the reply's code relies on, about the live objects: what the device checks
    before the first call, and what its guards watch (the same kinds as local code's)."""
    facts: list[Assumption] = []
    for subject_data, name, value_data, kind in reply.assumptions:
        subject, value = rebinder.decode(subject_data), rebinder.decode(value_data)
        if kind == "field":
            facts.append(Assumption(subject, name, value))
        elif kind == "item":
            facts.append(_ItemAssumption(subject, rebinder.decode(name), value))
        elif kind in LOOKUPS:
            facts.append(_LookupAssumption(subject, kind.partition(":")[2], rebinder.decode(name), value))
        else:
            raise ProtocolError(f"an assumption of kind {kind!r}")
    return facts


class RemoteSystem(SpecializationSystem):
    """A stack's specialization system whose specializer is a server: the code cache is
    the code manager (keyed by scenario and context digest, reference counts, eviction
    of unheld code), a miss is a request."""

    def __init__(self, stack: Stack, client: Any, verifier: Verifier):
        super().__init__(stack)
        self.client, self.verifier = client, verifier
        self.fields = declared_fields("pystack")
        self.pending: dict[int, int] = {}  # token number -> its request out
        self.digests: OrderedDict[tuple, tuple] = OrderedDict()  # local cache key -> (scenario, context digest)
        self._requests = itertools.count(1)
        self.requests = self.failures = 0
        self.latency = 0.0  # of the last reply, request to installed code

    def context(self, token: Token) -> dict[str, Any]:
        """The token's static context as it is now (raises ContextError)."""
        return snapshot(token.statics, self.fields)[0]

    def attach(self, token: Token) -> bool:
        self.prepare(token.subject)
        # The thesis's lightweight hash first: the local system's key (the socket, its
        # generation, the route table's...) remembers which context digest it had; an entry
        # found that way is used as a local one is, if its facts hold. Else the snapshot.
        local_key = self.cache_key(token.scenario, token.subject, token.statics)
        key = self.digests.get(local_key)
        if key is not None and self._hit(token, key):
            return True
        try:
            context = self.context(token)
        except ContextError as why:
            token.mode = "generic"
            token.events.append(f"not specialized: {why}")
            return False
        key = (token.scenario.name, digest(token.scenario.name, context))
        self.digests[local_key] = key
        self.digests.move_to_end(local_key)
        if len(self.digests) > DIGESTS:
            self.digests.popitem(last=False)
        if self._hit(token, key):
            return True
        self.misses += 1
        self.requests += 1
        request = Request(next(self._requests), token.scenario.name, context)
        token.mode = "pending"  # the generic code until the reply is in
        self.pending[token.number] = request.number
        self.client.submit(request.encode(), functools.partial(self.arrived, token, request, key, time.perf_counter()))
        return token.mode == "specialized"

    def _hit(self, token: Token, key: tuple) -> bool:
        entry = self.cache.get(key)
        if entry is None or not (entry.trusted or all(a.holds() for a in entry.assumptions)):
            return False
        self.hits += 1
        self.cache.move_to_end(key)
        entry.refcount += 1
        self.hold(token, entry)
        return True

    def arrived(self, token: Token, request: Request, key: tuple, started: float, outcome: bytes | Exception) -> None:
        """A request's outcome: install the code it brings, if it is what was asked for and
        everything it assumes holds; otherwise the generic code (or ask again)."""
        if self.pending.get(token.number) != request.number:
            return  # the token was closed, or renewed, meanwhile
        del self.pending[token.number]
        try:
            entry = self.verified(token, request, outcome)
        except (ProtocolError, ContextError, RemoteFailure, OSError, SyntaxError, ValueError, TypeError, KeyError,
                AttributeError, IndexError) as why:  # a malformed reply, even signed, is not loaded
            self.failures += 1
            token.mode = "generic"
            token.events.append(f"remote specialization failed: {why}")
            token.install()
            return
        broken = next((a for a in entry.assumptions if not a.holds()), None)
        if broken is not None:
            self.failures += 1
            try:
                moved = digest(request.scenario, self.context(token)) != request.digest
            except ContextError:
                moved = True
            if moved:  # a guard event while the request was out: ask again, for the new context
                token.mode = "stale"
                token.events.append("context changed while the request was out: asking again")
            else:
                token.mode = "generic"
                token.events.append(f"reply rejected: it assumes {type(broken.subject).__name__}"
                                    f".{broken.field} == {broken.value!r}")
            token.install()
            return
        cached = self.cache.get(key)
        if cached is not None and all(a.holds() for a in cached.assumptions):
            entry = cached  # another token's request for the same context came back first: share its code
        else:
            entry.key = key
            self.cache[key] = entry
        entry.refcount += 1
        self.evict()
        self.hold(token, entry)
        token.mode = "specialized"
        self.latency = time.perf_counter() - started
        token.events.append("specialized remotely")
        token.install()

    def release(self, token: Token) -> None:
        self.pending.pop(token.number, None)  # a reply still out is for a context the token left
        super().release(token)

    def verified(self, token: Token, request: Request, outcome: bytes | Exception) -> Specialized:
        if isinstance(outcome, Exception):
            raise RemoteFailure(f"{type(outcome).__name__}: {outcome}" if str(outcome) else type(outcome).__name__)
        reply = decode_reply(outcome, self.verifier)  # nothing is decoded further unless it verifies
        if isinstance(reply, ErrorReply):
            raise RemoteFailure(f"the server says: {reply.message}")
        if reply.number != request.number or reply.scenario != request.scenario:
            raise ProtocolError(f"a reply to request {reply.number} ({reply.scenario}), not {request.number}")
        if reply.digest != request.digest:
            raise ProtocolError("a reply for another context (its digest differs)")
        rebinder = Rebinder(token.statics, request.context)
        compiled = load(reply, rebinder, f"remote {reply.scenario} #{request.number}")
        return Specialized((), token.scenario, token.statics, compiled, assumptions_of(reply, rebinder),
                           Stats(), [], 0.0, None)  # type: ignore[arg-type]


def make_remote_system(stack: Stack, *, server: tuple[str, int] | Any, key: bytes | str,
                       timeout: float = DEFAULT_TIMEOUT) -> RemoteSystem:
    """Make the stack's specialization remote from now on: ``server`` is ``(host, port)``
    (kernel TCP, answered while do_specialize_send waits) or a client
    (:class:`TrioClient`: over any trio stream, pystack's included); ``key`` the shared
    HMAC key or the server's Ed25519 public key (bytes, or a file)."""
    if "specializer" in stack.extensions:
        raise ValueError("the stack has a specialization system already (make it remote before any token)")
    if isinstance(server, tuple):
        client: Any = BlockingClient(server, timeout)
    elif callable(getattr(server, "submit", None)):
        client = server
    else:
        raise TypeError(f"server must be (host, port) or a client such as TrioClient, not {server!r}")
    system = RemoteSystem(stack, client, Verifier(key))
    stack.extensions["specializer"] = system
    return system
