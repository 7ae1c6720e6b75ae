"""Remote specialization (thesis chapter 4): the protocol, the server, the device's
run-time layer over loopback, and every fault of issue 15 falling back to the generic
send. Packets of remotely specialized sends equal the generic sends' (tests/spec_worlds)."""

from __future__ import annotations

import dataclasses
import errno
import socket
import threading
import zlib

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystack.socket import IP_TTL, IPPROTO_IP
from pystack.tokens.api import (
    do_specialize_send,
    done_specialize_send,
    specialized_send,
    token_info,
)
from remote.context import declared_fields, snapshot
from remote.device import RemoteSystem, TrioClient, make_remote_system
from remote.protocol import (
    MAX_FRAME,
    MAX_JSON,
    VERSION,
    ErrorReply,
    FrameReader,
    ProtocolError,
    Reply,
    Request,
    Signer,
    VerificationError,
    Verifier,
    decode_reply,
    decode_request,
    encode_reply,
    frame,
)
from remote.server import ServerThread, Service, serve_listeners
from tests.kernel_world import KERNEL, kernel_world
from tests.spec_worlds import FAR, ME, ME1, PEER, PEER1, IfaceConf, RouteConf, Worlds

KEY = b"a shared key of thirty-two bytes"


@pytest.fixture(scope="module")
def service() -> Service:
    return Service(Signer(secret=KEY))


@pytest.fixture(scope="module")
def server(service: Service):
    with ServerThread(service) as port:
        yield port


def remote_worlds(port: int, key: bytes = KEY, timeout: float = 1.0, **options) -> tuple[Worlds, RemoteSystem]:
    """Two worlds whose special one specializes through the server."""
    worlds = Worlds(**options)
    system = make_remote_system(worlds.special.stack, server=("127.0.0.1", port), key=key, timeout=timeout)
    return worlds, system


def info(worlds: Worlds) -> dict:
    return token_info(worlds.special.stack, worlds.special.token)


# ------------------------------------------------------------------ the protocol


def test_frames_come_out_whole_whatever_the_pieces() -> None:
    reader = FrameReader()
    data = frame(b"one") + frame(b"") + frame(b"three")
    out = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        while (body := reader.next()) is not None:
            out.append(body)
    assert out == [b"one", b"", b"three"] and not reader.pending


def test_a_frame_over_the_limit_is_refused_from_its_length() -> None:
    reader = FrameReader()
    reader.feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="over the limit"):
        reader.next()


@pytest.mark.parametrize("body, message", [
    (b"", "too short"),
    (bytes([VERSION + 1]) + b"Q{}", "version"),
    (bytes([VERSION]) + b"Q\xff\xfe", "not deflated JSON"),
    (bytes([VERSION]) + b"Q" + zlib.compress(b"[]"), "not a JSON object"),
    (bytes([VERSION]) + b"Q" + zlib.compress(b"{}")[:-3], "truncated"),
    (bytes([VERSION]) + b"Q" + zlib.compress(bytes(MAX_JSON + 1)), "inflates to more than"),
    (bytes([VERSION]) + b"Q" + zlib.compress(b'{"id": 1}'), "needs"),
    (bytes([VERSION]) + b"R{}", "expected a request"),
])
def test_bad_requests_are_protocol_errors(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_request(body)


def ed25519() -> tuple:
    """The ``cryptography`` names the Ed25519 tests use (the ``remote`` extra installs it)."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    return Ed25519PrivateKey, Encoding, NoEncryption, PrivateFormat, PublicFormat


def sample_reply() -> Reply:
    return Reply(3, "udp_send_connected", "ab" * 32, "f", "def f(data):\n    return 1", {"x": 1}, [])


@pytest.mark.parametrize("kind", ["hmac", "ed25519"])
def test_replies_verify_and_tampering_is_caught(kind: str) -> None:
    if kind == "hmac":
        signer, verifier = Signer(secret=KEY), Verifier(KEY)
    else:
        Ed25519PrivateKey, Encoding, _, _, PublicFormat = ed25519()
        private = Ed25519PrivateKey.generate()
        signer = Signer(private_key=private)
        verifier = Verifier(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    body = encode_reply(sample_reply(), signer)[4:]
    assert decode_reply(body, verifier) == sample_reply()
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(VerificationError):
        decode_reply(tampered, verifier)


def test_a_short_shared_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Verifier(b"short")


def test_a_key_file_can_be_an_ed25519_private_key(tmp_path) -> None:
    Ed25519PrivateKey, Encoding, NoEncryption, PrivateFormat, PublicFormat = ed25519()
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "server.pem"
    path.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    signer = Signer.from_file(path)
    public = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    body = encode_reply(sample_reply(), signer)[4:]
    assert decode_reply(body, Verifier(public)).number == 3


# ------------------------------------------------------------------ the server


def test_the_service_answers_bad_requests_with_errors_and_serves_on(service: Service) -> None:
    worlds = Worlds()
    worlds.open("connected", (PEER, 9))
    stack = worlds.generic.stack
    context, _ = snapshot({"self": stack, "fd": worlds.generic.fd, "flags": 0}, declared_fields("pystack"))
    good = Request(7, "udp_send_connected", context).encode()[4:]
    bad = [
        b"garbage",
        good[:len(good) // 2],  # truncated
        bytes([VERSION + 1]) + good[1:],
        Request(8, "no_such_scenario", context).encode()[4:],
        Request(9, "udp_send_connected", {"roots": {}, "objects": "nonsense"}).encode()[4:],
        Request(11, "udp_send_connected", {**context, "roots": {**context["roots"], "extra": 1}}).encode()[4:],
        Request(12, "udp_send_connected", {**context, "roots": {"self": {"r": 0}}}).encode()[4:],
        Request(10, "udp_send_connected", {**context, "objects": [{"p": ["self"], "c": "pystack.stack:Stack",
                                                                  "f": {"secret": 1}}]}).encode()[4:],
    ]
    for body in bad:
        answer = decode_reply(service.handle(body)[4:], Verifier(KEY))
        assert isinstance(answer, ErrorReply), body[:40]
    unknown = decode_reply(service.handle(bad[3])[4:], Verifier(KEY))
    assert unknown.number == 8 and "unknown scenario" in unknown.message
    reply = decode_reply(service.handle(good)[4:], Verifier(KEY))
    assert isinstance(reply, Reply) and reply.number == 7 and "def specialized_udp_send_connected" in reply.source


def test_the_server_survives_a_huge_frame_and_garbage(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=2) as conn:
        conn.sendall((MAX_FRAME + 5).to_bytes(4, "big") + b"x" * 100)
        answer = FrameReader()
        while (body := answer.next()) is None:
            answer.feed(conn.recv(4096))
        assert "over the limit" in decode_reply(body, Verifier(KEY)).message
    with socket.create_connection(("127.0.0.1", server), timeout=2) as conn:
        conn.sendall(frame(b"\x00garbage"))
        answer = FrameReader()
        while (body := answer.next()) is None:
            answer.feed(conn.recv(4096))
        assert isinstance(decode_reply(body, Verifier(KEY)), ErrorReply)
    worlds, _ = remote_worlds(server)
    worlds.open("connected", (PEER, 9))
    assert info(worlds)["mode"] == "specialized"


# ------------------------------------------------------------------ the device


def test_remote_code_is_the_local_code_and_sends_the_same_packets(server: int) -> None:
    worlds, system = remote_worlds(server)
    worlds.open("connected", (PEER, 9))
    remote = info(worlds)
    local = Worlds()
    local.open("connected", (PEER, 9))
    assert remote["mode"] == "specialized" and "specialized remotely" in remote["events"]
    assert remote["source"] == info(local)["source"]
    assert remote["assumptions"] == info(local)["assumptions"]
    for size in (0, 1, 100, 1472, 1473, 4000):
        worlds.send(b"x" * size)
    assert system.requests == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ttl=st.integers(1, 255), tos=st.sampled_from([0, 0x10, 0xb8]),
       sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4), kind=st.sampled_from(["connected", "sendto"]))
def test_equivalence_over_contexts_and_sizes(server: int, ttl: int, tos: int, sizes: list[int], kind: str) -> None:
    from pystack.socket import IP_TOS

    worlds, _ = remote_worlds(server)
    worlds.open(kind, (PEER, 9), options=[(IPPROTO_IP, IP_TTL, ttl), (IPPROTO_IP, IP_TOS, tos)])
    assert info(worlds)["mode"] == "specialized"
    for size in sizes:
        worlds.send(bytes(range(256)) * (size // 256) + bytes(size % 256))


def test_the_code_manager_hits_for_the_same_context(server: int) -> None:
    worlds, system = remote_worlds(server)
    worlds.open("connected", (PEER, 9))
    entry = system.token(worlds.special.token).entry
    worlds.second_token(None)
    assert system.requests == 1 and system.hits == 1 and entry.refcount == 2
    worlds.send(b"again", second=True)


def test_a_guard_event_respecializes_remotely(server: int) -> None:
    worlds, system = remote_worlds(server, debug=False)
    worlds.open("connected", (PEER, 9), policy={"setsockopt": "respecialize"})
    worlds.setsockopt(IPPROTO_IP, IP_TTL, 9)
    worlds.send(b"after")  # the next call asks the server again, for TTL 9
    assert system.requests == 2 and info(worlds)["mode"] == "specialized"
    assert worlds.special.sent["eth0"][-1][8] == 9


def test_a_route_change_reinforces_remote_code_as_local_code(server: int) -> None:
    """The same guards as local specialization: a route through another interface that
    changes nothing the code folded steers the remote code's output (its closure cells)."""
    worlds, system = remote_worlds(server, ifaces=(IfaceConf("eth0", ME), IfaceConf("eth1", ME1)))
    worlds.open("connected", (FAR, 9), policy={"route": "reinforce"})
    worlds.send(b"via eth0")
    worlds.add_route(RouteConf("198.18.7.0", 24, "eth1", gateway=PEER1))
    assert info(worlds)["events"][-1] == "reinforced: output steered to eth1"
    worlds.send(b"via eth1")
    assert len(worlds.special.sent["eth1"]) == 1 and system.requests == 1


def test_ed25519_replies_end_to_end(tmp_path) -> None:
    Ed25519PrivateKey, Encoding, _, _, PublicFormat = ed25519()
    private = Ed25519PrivateKey.generate()
    public = tmp_path / "server.pub"
    public.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with ServerThread(Service(Signer(private_key=private))) as port:
        worlds, _ = remote_worlds(port, key=str(public))
        worlds.open("connected", (PEER, 9))
        assert info(worlds)["mode"] == "specialized"
        impostor, _ = remote_worlds(port, key=other)
        impostor.open("connected", (PEER, 9))
    fell_back(impostor, "Ed25519 signature does not verify")


# ------------------------------------------------------------------ faults: each falls back


def fell_back(worlds: Worlds, why: str) -> None:
    details = info(worlds)
    assert details["mode"] == "generic", details
    assert any(why in event for event in details["events"]), details["events"]
    for size in (0, 10, 2000):
        worlds.send(b"y" * size)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_down() -> None:
    worlds, _ = remote_worlds(free_port())
    worlds.open("connected", (PEER, 9))
    fell_back(worlds, "ConnectionRefusedError")


def test_server_slow_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        worlds, _ = remote_worlds(silent.getsockname()[1])
        worlds.open("connected", (PEER, 9))
    fell_back(worlds, "TimeoutError")


def forging_server(answer) -> tuple[ServerThread, int]:
    """A server whose replies ``answer(request body, service) -> frame`` makes."""
    service = Service(Signer(secret=KEY))
    handle = service.handle
    service.handle = lambda body: answer(body, handle)  # type: ignore[method-assign]
    thread = ServerThread(service)
    return thread, thread.start()


def tampered(reply_frame: bytes) -> bytes:
    """The reply with its code changed (every ``sink(`` a ``print(``) and its signature kept."""
    body = reply_frame[4:]
    length = int.from_bytes(body[2:4], "big")
    head, payload = body[:4 + length], body[4 + length:]
    changed = zlib.compress(zlib.decompress(payload).replace(b"sink(", b"print("))
    assert changed != payload
    return frame(head + changed)


def test_reply_tampered_is_not_loaded() -> None:
    thread, port = forging_server(lambda body, handle: tampered(handle(body)))
    try:
        worlds, _ = remote_worlds(port)
        worlds.open("connected", (PEER, 9))
    finally:
        thread.stop()
    fell_back(worlds, "does not verify")


def test_key_mismatch() -> None:
    with ServerThread(Service(Signer(secret=b"the server's own key, not ours!"))) as port:
        worlds, _ = remote_worlds(port)
        worlds.open("connected", (PEER, 9))
    fell_back(worlds, "HMAC-SHA256 does not verify")


def test_reply_for_another_context_is_rejected_by_the_assumption_check() -> None:
    """A server that answers every request with the code of the first context it saw (a
    cache keyed too coarsely): the device's check of the reply's assumptions refuses it."""
    first: list[Reply] = []

    def stale_cache(body: bytes, handle) -> bytes:
        request = decode_request(body)
        answer = decode_reply(handle(body)[4:], Verifier(KEY))
        if not first:
            first.append(answer)
        reply = dataclasses.replace(first[0], number=request.number, digest=request.digest)
        return encode_reply(reply, Signer(secret=KEY))

    thread, port = forging_server(stale_cache)
    try:
        other, _ = remote_worlds(port)
        other.open("connected", (PEER, 9), options=[(IPPROTO_IP, IP_TTL, 5)])
        assert info(other)["mode"] == "specialized"
        worlds, _ = remote_worlds(port)
        worlds.open("connected", (PEER, 9))
    finally:
        thread.stop()
    fell_back(worlds, "reply rejected: it assumes Socket.ttl == 5")


def test_server_restarted_mid_stream(service: Service) -> None:
    thread = ServerThread(service)
    port = thread.start()
    worlds, system = remote_worlds(port, debug=False)
    worlds.open("connected", (PEER, 9), policy={"setsockopt": "respecialize"})
    assert info(worlds)["mode"] == "specialized"
    thread.stop()
    thread.start()  # same port; the device's kept connection is dead
    try:
        worlds.setsockopt(IPPROTO_IP, IP_TTL, 33)
        worlds.send(b"after the restart")
    finally:
        thread.stop()
    assert system.requests == 2 and info(worlds)["mode"] == "specialized"
    assert worlds.special.sent["eth0"][-1][8] == 33


def test_an_error_reply_falls_back(server: int) -> None:
    worlds, _ = remote_worlds(server)
    worlds.open("connected", (PEER, 9))
    system = worlds.special.stack.extensions["specializer"]
    token = system.token(worlds.special.token)
    token.scenario = type(token.scenario)(**{**vars(token.scenario), "name": "no_such_scenario"})
    system.respecialize(token)
    fell_back(worlds, "unknown scenario")


def test_make_remote_system_after_tokens_is_refused(server: int) -> None:
    worlds = Worlds()
    worlds.open("connected", (PEER, 9))
    with pytest.raises(ValueError, match="already"):
        make_remote_system(worlds.special.stack, server=("127.0.0.1", server), key=KEY)


def test_make_remote_system_refuses_a_bad_server_or_key() -> None:
    with pytest.raises(TypeError, match=r"\(host, port\)"):
        make_remote_system(Worlds().special.stack, server="127.0.0.1:7070", key=KEY)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        make_remote_system(Worlds().special.stack, server=("127.0.0.1", 7070), key=b"short")


def test_the_server_serves_devices_concurrently(server: int) -> None:
    results: list[str] = []

    def device(ttl: int) -> None:
        # The server specializes one request at a time: six queued ones may wait past the usual
        # 1 s on a loaded machine; this test is about serving them all, not about latency.
        worlds, _ = remote_worlds(server, timeout=10.0)
        worlds.open("connected", (PEER, 9), options=[(IPPROTO_IP, IP_TTL, ttl)])
        worlds.send(b"z" * 50)
        results.append(info(worlds)["mode"])

    threads = [threading.Thread(target=device, args=(ttl,)) for ttl in range(40, 46)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["specialized"] * 6


def test_a_send_on_a_remote_token_is_a_send(server: int) -> None:
    worlds, _ = remote_worlds(server)
    worlds.open("connected", (PEER, 9))
    stack = worlds.special.stack
    with pytest.raises(OSError) as failure:
        specialized_send(stack, worlds.special.token, b"x" * 70000)
    assert failure.value.errno == errno.EMSGSIZE


# ------------------------------------------------------------------ pystack spec serve


@pytest.mark.parametrize("argv, message", [
    (["--listen", "127.0.0.1", "--key", "KEY"], "expected ADDR:PORT"),
    (["--listen", "127.0.0.1:http", "--key", "KEY"], "not a number"),
    (["--listen", "127.0.0.1:70000", "--key", "KEY"], "out of range"),
    (["--listen", "127.0.0.1:0", "--key", "/nonexistent/key"], "No such file"),
    (["--listen", "127.0.0.1:0", "--key", "SHORT"], "at least 16 bytes"),
    (["--listen", "127.0.0.1:0"], "required: --key"),
])
def test_spec_serve_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, message) -> None:
    from pystack.cli import main

    (tmp_path / "KEY").write_bytes(KEY)
    (tmp_path / "SHORT").write_bytes(b"tiny")
    argv = [str(tmp_path / a) if a in ("KEY", "SHORT") else a for a in argv]
    assert main(["spec", "serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_spec_serve_serves_a_device(tmp_path) -> None:
    import subprocess
    import sys
    import time

    (tmp_path / "key").write_bytes(KEY)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pystack.cli", "spec", "serve", "--listen", f"127.0.0.1:{port}",
                                "--key", str(tmp_path / "key"), "--duration", "20"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert "specialization server on" in process.stdout.readline()
        worlds, _ = remote_worlds(port)
        worlds.open("connected", (PEER, 9))
        assert info(worlds)["mode"] == "specialized"
        worlds.send(b"from the server's code")
    finally:
        process.terminate()
        started = time.monotonic()
        assert process.wait(10) == 0 and time.monotonic() - started < 10


# ------------------------------------------------------------------ answered later: trio clients


async def settled(stack, token: int, timeout: float = 5.0) -> dict:
    """The token's information once its request is answered."""
    with trio.fail_after(timeout):
        while token_info(stack, token)["mode"] == "pending":
            await trio.sleep(0.005)
    return token_info(stack, token)


async def test_a_guard_event_while_a_request_is_in_flight(server: int) -> None:
    """The token sends generically while its request is out; an option changed meanwhile
    makes the reply's assumptions false: the device asks again, for the new context."""
    async with trio.open_nursery() as nursery:
        worlds = Worlds()
        client = TrioClient(lambda: trio.open_tcp_stream("127.0.0.1", server), nursery)
        system = make_remote_system(worlds.special.stack, server=client, key=KEY)
        worlds.open("connected", (PEER, 9), policy={"setsockopt": "reject"})
        assert info(worlds)["mode"] == "pending"
        worlds.send(b"generic while the request is out")
        worlds.setsockopt(IPPROTO_IP, IP_TTL, 7)  # not refused: no code relies on the TTL yet
        details = await settled(worlds.special.stack, worlds.special.token)
        assert details["mode"] == "stale" and "context changed" in details["events"][-1]
        worlds.send(b"asks again")
        details = await settled(worlds.special.stack, worlds.special.token)
        assert details["mode"] == "specialized" and system.requests == 2
        worlds.send(b"with TTL 7")
        assert worlds.special.sent["eth0"][-1][8] == 7
        nursery.cancel_scope.cancel()


async def test_two_tokens_asking_for_one_context_at_once_share_the_code(server: int) -> None:
    async with trio.open_nursery() as nursery:
        worlds = Worlds()
        client = TrioClient(lambda: trio.open_tcp_stream("127.0.0.1", server), nursery)
        system = make_remote_system(worlds.special.stack, server=client, key=KEY)
        worlds.open("connected", (PEER, 9))
        worlds.second_token(None)
        first = await settled(worlds.special.stack, worlds.special.token)
        second = await settled(worlds.special.stack, worlds.special.second)
        assert first["mode"] == second["mode"] == "specialized" and system.requests == 2
        assert system.token(worlds.special.token).entry is system.token(worlds.special.second).entry
        assert len(system.cache) == 1
        worlds.send(b"first")
        worlds.send(b"second", second=True)
        nursery.cancel_scope.cancel()


@pytest.mark.tun
async def test_over_pystack_tcp_on_tun(service: Service) -> None:
    """The device's requests travel over pystack's own TCP, on TUN, to the server on a kernel
    socket in the namespace; the code it gets sends to a kernel UDP socket there."""
    async with kernel_world() as host, trio.open_nursery() as nursery:
        listener = host.kernel_socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await listener.bind((KERNEL, 7070))
        listener.listen()
        nursery.start_soon(serve_listeners, service, [trio.SocketListener(listener)])
        stack = host.stack
        client = TrioClient(lambda: host.network.open_tcp_stream(KERNEL, 7070), nursery)
        system = make_remote_system(stack, server=client, key=KEY)
        with host.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            await sink.bind((KERNEL, 9999))
            fd = stack.socket()
            stack.connect(fd, (KERNEL, 9999))
            token = do_specialize_send(stack, fd)
            details = await settled(stack, token)
            assert details["mode"] == "specialized", details["events"]
            assert system.requests == 1 and client.sent > 0 and client.received > 0
            for size in (5, 3000):
                assert specialized_send(stack, token, b"r" * size) == size
                with trio.fail_after(5):
                    data, _ = await sink.recvfrom(65535)
                assert data == b"r" * size
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ the thin device


def test_a_thin_device_gets_specialized_sends_without_the_specializer(server: int, tmp_path) -> None:
    """A process with pystack and the run-time layer only: ``specializer`` is never imported,
    and its specialized sends emit the generic sends' packets."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "key").write_bytes(KEY)
    done = subprocess.run([sys.executable, "-m", "remote.thin_device", f"127.0.0.1:{server}", str(tmp_path / "key")],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["specializer_loaded"] is False
    assert report["mode"] == "specialized" and report["events"] == ["specialized remotely"]
    assert report["same_packets"] is True


def tcp_world(port: int | None):
    """A TCP connection on a virtual network; the client specialized remotely (port given),
    or not at all. Returns the network, the client stack and fd, the server and its fd."""
    from pystack.links.virtual import VirtualNetwork
    from pystack.socket import SOCK_STREAM

    net = VirtualNetwork()
    client, server = net.add_stack(seed=3), net.add_stack(seed=4)
    net.link(net.attach(client, "eth0", "198.18.0.2"), net.attach(server, "eth0", "198.18.0.1", direction="s"))
    if port is not None:
        make_remote_system(client, server=("127.0.0.1", port), key=KEY)
    listener = server.socket(type=SOCK_STREAM)
    server.bind(listener, ("0.0.0.0", 80))
    server.listen(listener)
    fd = client.socket(type=SOCK_STREAM)
    accepted = net.establish(client, fd, ("198.18.0.1", 80), server, listener)
    return net, client, fd, server, accepted


def test_tcp_send_and_output_remotely_send_the_generic_segments(server: int) -> None:
    """The connection's send and its output routine (which sends most segments, on ACKs)
    both come from the server; the segments are the generic stack's, byte for byte."""
    worlds = [tcp_world(server), tcp_world(None)]
    segments: list[list[bytes]] = []
    for net, _, _, _, _ in worlds:
        log: list[bytes] = []
        iface = net.ports["eth0"].iface
        iface.sink = lambda packet, sink=iface.sink, log=log: (log.append(bytes(packet)), sink(packet))[1]
        segments.append(log)
    (remote_net, device, fd, far, far_fd), (generic_net, twin, twin_fd, _, _) = worlds
    token = do_specialize_send(device, fd)
    system = device.extensions["specializer"]
    numbers = (token, *system.token(token).companions)
    for size in (1, 1000, 5000, 20000):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert specialized_send(device, token, data) == twin.send(twin_fd, data) == size
        remote_net.run(0.5)
        generic_net.run(0.5)
    for number in numbers:
        assert token_info(device, number)["mode"] == "specialized", token_info(device, number)["events"]
    assert system.requests == 2 and len(numbers) == 2
    assert segments[0] == segments[1] and len(segments[0]) > 10
    assert len(far.recv(far_fd, 1 << 20)) == 26001


def test_stand_ins_for_classes_the_server_has_not_loaded_are_opaque() -> None:
    """A device's sink may be a method of a link driver the server never imported: the
    stand-in is an opaque reference (the residual calls it; the specializer does not)."""
    from remote.context import Opaque, rebuild

    context = {"roots": {"sink": {"r": 0}, "thing": {"r": 1}},
               "objects": [{"p": ["sink"], "c": "builtins:method", "m": "no.such.module:Port.send",
                            "of": "no.such.module:Port"},
                           {"p": ["thing"], "c": "no.such.module:Thing"}]}
    roots, numbers = rebuild(context, {})
    assert isinstance(roots["sink"], Opaque) and isinstance(roots["thing"], Opaque)
    assert numbers[id(roots["sink"])] == 0 and numbers[id(roots["thing"])] == 1


def test_a_reply_naming_another_context_is_refused() -> None:
    def relabelled(body: bytes, handle) -> bytes:
        answer = decode_reply(handle(body)[4:], Verifier(KEY))
        return encode_reply(dataclasses.replace(answer, digest="0" * 64), Signer(secret=KEY))

    thread, port = forging_server(relabelled)
    try:
        worlds, _ = remote_worlds(port)
        worlds.open("connected", (PEER, 9))
    finally:
        thread.stop()
    fell_back(worlds, "another context")


def test_the_code_manager_evicts_unheld_code_beyond_its_capacity(server: int) -> None:
    worlds, system = remote_worlds(server)
    system.capacity = 2
    stack = worlds.special.stack
    held = []
    for ttl in (10, 11, 12, 13):
        fd = stack.socket()
        stack.setsockopt(fd, IPPROTO_IP, IP_TTL, ttl)
        stack.connect(fd, (PEER, 9))
        held.append(do_specialize_send(stack, fd))
    assert len(system.cache) == 4  # every entry is held: none may go
    for token in held[:3]:
        done_specialize_send(stack, token)
    fd = stack.socket()
    stack.connect(fd, (PEER, 9))
    do_specialize_send(stack, fd)
    assert len(system.cache) == 2 and system.token(held[3]).entry in system.cache.values()
