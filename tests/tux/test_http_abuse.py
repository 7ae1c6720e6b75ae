"""The abuse list against the HTTP handler: traversal in every spelling, oversized and
too many fields, slowloris, smuggling shapes, garbage, clients that vanish mid-answer,
more connections than max_connect, a thousand pipelined requests. The server answers
right, never shows a byte from outside the root, and leaves nothing behind."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tux.http_world import SECRET, World, get, make_root, one, responses
from tux_like.http_parse import (
    BadRequest,
    byte_range,
    normalize_target,
    parse_head,
    parse_http_date,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = make_root(tmp_path)
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")  # a symlink out of the root
    os.symlink(tmp_path, root / "up")  # a directory symlink out of the root
    os.symlink(root / "hello.txt", root / "alias.txt")  # one that stays inside
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture
def world(root: Path) -> World:
    return World(root)


TRAVERSALS = [
    "/../secret.txt", "/../../../../etc/passwd", "/docs/../../secret.txt",
    "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/.%2e/secret.txt", "/%2e./secret.txt",
    "/..%2fsecret.txt", "/docs%2f..%2f..%2fsecret.txt", "/%2f..%2f..%2fsecret.txt",
    "/..\\secret.txt", "/%5c..%5csecret.txt", "/docs\\..\\..\\secret.txt",
    "//etc/passwd", "///../secret.txt", "/%2fetc%2fpasswd",
    "/hello.txt%00.html", "/%00", "/..%00/secret.txt",
    "/%252e%252e/secret.txt",  # decoded once only: a file literally named "%2e%2e"
    "/leak.txt", "/up/secret.txt", "/up/www/../secret.txt", "/./../secret.txt",
    "/docs/./../../secret.txt", "/%c0%ae%c0%ae/secret.txt", "/..;/secret.txt",
    "http://evil/../secret.txt", "/fifo", "/%",  "/%zz",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_spelling_of_traversal_leaves_the_root(world: World, target: str) -> None:
    client, data = world.exchange(get(target))
    status, _, body = one(data)
    assert status in (400, 403, 404), (target, status)
    assert SECRET not in data and b"root:" not in data
    world.leave(client)


def test_absolute_paths_map_into_the_root_and_symlinks_that_resolve_inside_it_are_followed(
        world: World) -> None:
    client, data = world.exchange(get("//hello.txt") + get("/alias.txt") + get("http://h/hello.txt")
                                  + get("/up/www/hello.txt"))
    assert [(r.status_code, b) for r, b in responses(data, ["GET"] * 4)] == [(200, b"hello, world\n")] * 4
    world.leave(client)


def test_huge_request_lines_and_headers_and_thousands_of_fields(world: World) -> None:
    config = world.config
    cases = [
        (b"GET /" + b"a" * (config.max_request_line + 10) + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET /" + b"a" * 1_000_000, 414),  # a request line that never ends
        (get("/", "X: " + "b" * (config.max_header_len + 10)), 431),
        (get("/", *["X-A: b"] * 5000), 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100_000, 431),  # fields that never end
    ]
    clients = []
    for request, status in cases:
        client = world.connect()
        try:
            client.send(request)
        finally:
            world.run()
        assert one(client.recv())[0] == status
        world.run()
        assert client.server_closed
        clients.append(client)
    world.leave(*clients)


def test_slowloris_gets_408_at_the_request_timeout_from_its_first_byte(world: World) -> None:
    timeout = world.config.request_timeout
    client = world.connect()
    world.run(advance=world.config.keepalive_timeout - 1)  # idle, then it starts
    trickle = iter(b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"z" * 100)
    client.send(bytes([next(trickle)]))
    world.run()  # the first byte: the request's time starts
    for _ in range(int(timeout / 0.5) - 1):
        world.run(advance=0.5)
        client.send(bytes([next(trickle)]))  # a byte every half second: never enough
    world.run(advance=0.4)
    assert client.recv() == b"" and not client.server_closed
    world.run(advance=0.1)
    status, fields, _ = one(client.recv())
    assert status == 408 and fields["connection"] == "close"
    world.run()
    assert client.server_closed
    world.leave(client)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n",
    b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n",
])
def test_smuggling_shapes_get_400_and_close(world: World, request_bytes: bytes) -> None:
    client, data = world.exchange(request_bytes + get("/hello.txt"))  # a smuggled second request
    [(response, _)] = responses(data, ["GET"])
    assert response.status_code == 400
    world.run()
    assert client.server_closed
    world.leave(client)


def test_numbers_too_long_for_an_int_are_no_crash(world: World) -> None:
    digits = "9" * 5000  # past Python's int() digit limit
    client, data = world.exchange(get("/digits.txt", "Content-Length: " + digits))
    assert one(data)[0] == 413  # content, however large: refused
    other, data = world.exchange(get("/digits.txt", f"Range: bytes={digits}-")
                                 + get("/digits.txt", f"Range: bytes=0-{digits}")
                                 + get("/digits.txt", f"Range: bytes=-{digits}")
                                 + get("/digits.txt", "Range: bytes=00000000000000000000000000003-4"))
    answers = [(r.status_code, b) for r, b in responses(data, ["GET"] * 4)]
    assert [status for status, _ in answers] == [416, 206, 206, 206]
    assert [body for _, body in answers[1:]] == [b"0123456789", b"0123456789", b"34"]
    world.leave(client, other)


def test_garbage_bytes_get_an_answer_or_a_close_never_a_crash(world: World) -> None:
    rng = random.Random(1234)
    clients = []
    for _ in range(200):
        client = world.connect()
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
        client.send(garbage)
        if rng.random() < 0.5:
            client.shutdown_write()
        world.run()
        data = client.recv()
        if data:
            status = one(data)[0]
            assert 400 <= status < 600
        clients.append(client)
    world.run(advance=world.config.request_timeout + 1)
    world.leave(*clients)


def test_clients_that_half_close_or_reset_mid_response(root: Path) -> None:
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    world = World(root)
    half = world.connect()
    half.send(get("/big.bin"))
    half.shutdown_write()  # a half-close after the request: the answer still comes whole
    received = len(world.drain(half))
    assert received > 3_000_000
    reset = world.connect()
    reset.send(get("/big.bin"))
    world.run()
    assert len(reset.recv()) > 0
    reset.reset()  # gone mid-body
    world.run()
    mid_request = world.connect()
    mid_request.send(b"GET /big.bin HTTP/1.1\r\nHo")
    mid_request.shutdown_write()  # gone mid-request
    world.run()
    assert mid_request.server_closed and mid_request.recv() == b""
    world.leave(half, reset, mid_request)
    assert world.logs[0].endswith('"GET /big.bin HTTP/1.1" 200 3000000')
    request, sent = world.logs[1].rsplit(" ", 1)
    assert request.endswith('"GET /big.bin HTTP/1.1" 200') and 0 < int(sent) < 3_000_000  # what it sent


def test_a_client_that_stops_reading_is_dropped_after_the_request_timeout(root: Path) -> None:
    (root / "big.bin").write_bytes(b"x" * 2_000_000)
    world = World(root)
    client = world.connect()
    client.send(get("/big.bin"))
    world.run()  # the send buffer fills; the client never reads
    assert world.server.live_connections() == 1
    world.run(advance=world.config.request_timeout + 0.1)
    assert world.server.live_connections() == 0
    world.leave(client)


def test_more_connections_than_max_connect_get_503(root: Path) -> None:
    world = World(root, max_connect=3)
    clients = [world.connect() for _ in range(5)]
    world.run()
    answers = [client.recv() for client in clients]
    assert answers[:3] == [b"", b"", b""]
    for data in answers[3:]:
        status, fields, _ = one(data)
        assert status == 503 and fields["connection"] == "close"
    assert world.server.stats.refused == 2
    for client in clients[:3]:
        client.send(get("/hello.txt"))
    world.run()
    assert all(one(client.recv())[0] == 200 for client in clients[:3])
    world.leave(*clients)
    late = world.connect()  # room again once the others have gone
    _, data = world.exchange(get("/hello.txt"), late)
    assert one(data)[0] == 200
    world.leave(late)


def test_a_thousand_pipelined_requests_are_answered_in_order(world: World) -> None:
    targets = [("/hello.txt", b"hello, world\n"), ("/digits.txt", b"0123456789"), ("/page.html", b"<p>page</p>\n")]
    burst = b"".join(get(targets[i % 3][0]) for i in range(1000))
    client = world.connect()
    client.send(burst)
    data = world.drain(client)
    answers = responses(data, ["GET"] * 1000)
    assert [body for _, body in answers] == [targets[i % 3][1] for i in range(1000)]
    assert world.server.stats.requests == {200: 1000}
    world.leave(client)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.text(st.characters(max_codepoint=255), max_size=60))
def test_the_parsers_refuse_any_bytes_with_a_status_never_an_exception(junk: bytes, text: str) -> None:
    for parse in (lambda: normalize_target(b"/" + junk),
                  lambda: parse_head(b"GET / HTTP/1.1\r\n" + junk + b"\r\n\r\n", 8192, 100, 8192)):
        try:
            parse()
        except BadRequest as bad:
            assert bad.status in (400, 403, 404, 413, 414, 431, 505)
    assert parse_http_date(text) is None or isinstance(parse_http_date(text), float)
    assert byte_range(text, 10) in (None, (-1, -1)) or 0 <= byte_range(text, 10)[0] <= 9


def test_a_stage_that_raises_ends_only_its_connection(tmp_path, monkeypatch) -> None:
    """A bug in one stage (here forced) closes that connection and frees what it held; the
    server counts it, logs it and goes on serving the others."""
    import tux_like.http as http_module

    world = World(make_root(tmp_path))
    healthy, _ = world.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")

    def broken(req) -> None:
        raise RuntimeError("forced")

    monkeypatch.setattr(http_module, "process_message", broken)
    victim, answer = world.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer == b"" and victim.server_closed
    assert world.server.stats.stage_errors == 1
    assert any("broken" in line and "forced" in line for line in world.logs)
    monkeypatch.undo()
    _, again = world.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", healthy)
    assert again.startswith(b"HTTP/1.1 200")
    world.leave(healthy)
    assert world.server.live_objects() == 0 and world.net.open_sockets == 0
