"""The HTTP/1.1 handler in virtual time: files, HEAD, keep-alive, pipelining, conditional and
range requests, directories, errors, timeouts, the log, CGI, the file cache, no leaks."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from tests.tux.http_world import NOW, World, get, make_root, one, responses
from tux_like import http


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


@pytest.fixture
def world(root: Path) -> World:
    return World(root)


def test_get_serves_a_file_with_its_headers(world: World) -> None:
    client, data = world.exchange(get("/hello.txt"))
    status, fields, body = one(data)
    assert (status, body) == (200, b"hello, world\n")
    assert fields["content-type"] == "text/plain"
    assert fields["content-length"] == "13"
    assert fields["date"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert fields["last-modified"] == "Tue, 14 Nov 2023 21:13:20 GMT"
    assert "connection" not in fields and not client.server_closed  # HTTP/1.1: kept alive
    assert world.server.stats.requests == {200: 1}
    assert world.server.stats.bytes_sent == len(data)
    assert world.server.stats.bytes_received == len(get("/hello.txt"))
    world.leave(client)


def test_head_sends_the_headers_of_get_and_no_body(world: World) -> None:
    client, data = world.exchange(get("/page.html", method="HEAD"))
    status, fields, body = one(data, "HEAD")
    assert (status, body) == (200, b"")
    assert fields["content-length"] == "12" and fields["content-type"] == "text/html"
    assert data.endswith(b"\r\n\r\n")
    world.leave(client)


def test_keep_alive_by_version_and_connection_field(world: World) -> None:
    client, data = world.exchange(get("/hello.txt", version="1.0"))
    assert one(data)[1]["connection"] == "close"
    world.run()
    assert client.server_closed
    client, data = world.exchange(get("/hello.txt", "Connection: keep-alive", version="1.0"))
    assert one(data)[1]["connection"] == "keep-alive" and not client.server_closed
    client, data = world.exchange(get("/hello.txt", "Connection: close"), client)
    assert one(data)[1]["connection"] == "close"
    world.leave(client)


def test_pipelined_requests_are_answered_in_order(world: World) -> None:
    client, data = world.exchange(get("/hello.txt") + get("/missing") + get("/page.html", method="HEAD")
                                  + get("/digits.txt"))
    answers = responses(data, ["GET", "GET", "HEAD", "GET"])
    assert [r.status_code for r, _ in answers] == [200, 404, 200, 200]
    assert [b for _, b in answers] == [b"hello, world\n", answers[1][1], b"", b"0123456789"]
    world.leave(client)


def test_a_request_split_across_reads_is_parsed_once_complete(world: World) -> None:
    client = world.connect()
    request = get("/digits.txt")
    for byte in request[:-1]:
        client.send(bytes([byte]))
        world.run()
        assert client.recv() == b""
    client.send(request[-1:])
    world.run()
    assert one(client.recv())[2] == b"0123456789"
    assert world.server.threads[0].scheduler.stage_runs["parse_request"] == len(request)
    world.leave(client)


def test_if_modified_since_gives_304_only_when_not_modified(world: World) -> None:
    client, data = world.exchange(get("/hello.txt", "If-Modified-Since: Tue, 14 Nov 2023 21:13:20 GMT"))
    status, fields, body = one(data)
    assert status == 304 and body == b"" and fields["last-modified"] == "Tue, 14 Nov 2023 21:13:20 GMT"
    client, data = world.exchange(get("/hello.txt", "If-Modified-Since: Tue, 14 Nov 2023 21:13:19 GMT"), client)
    assert one(data)[0] == 200
    client, data = world.exchange(get("/hello.txt", "If-Modified-Since: Tuesday, 14-Nov-23 22:00:00 GMT"), client)
    assert one(data)[0] == 304  # the obsolete RFC 850 form is read too
    client, data = world.exchange(get("/hello.txt", "If-Modified-Since: yesterday"), client)
    assert one(data)[0] == 200
    world.leave(client)


@pytest.mark.parametrize(("spec", "status", "body", "content_range"), [
    ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
    ("bytes=7-", 206, b"789", "bytes 7-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),
    ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
    ("bytes=0-0", 206, b"0", "bytes 0-0/10"),
    ("bytes=10-", 416, None, "bytes */10"),
    ("bytes=-0", 416, None, "bytes */10"),
    ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: served whole
    ("bytes=5-2", 200, b"0123456789", None),  # invalid: ignored
    ("pages=1-2", 200, b"0123456789", None),
])
def test_single_byte_ranges(world: World, spec: str, status: int, body: bytes | None,
                            content_range: str | None) -> None:
    client, data = world.exchange(get("/digits.txt", f"Range: {spec}"))
    got_status, fields, got_body = one(data)
    assert got_status == status
    assert fields.get("content-range") == content_range
    if body is not None:
        assert got_body == body and fields["content-length"] == str(len(body))
    assert not client.server_closed  # 206 and 416 keep the connection
    world.leave(client)


def test_if_range_that_does_not_match_serves_the_whole_file(world: World) -> None:
    client, data = world.exchange(get("/hello.txt", "Range: bytes=0-1", "If-Range: Mon, 01 Jan 2001 00:00:00 GMT"))
    assert one(data)[0] == 200
    client, data = world.exchange(get("/hello.txt", "Range: bytes=0-1", "If-Range: Tue, 14 Nov 2023 21:13:20 GMT"),
                                  client)
    assert one(data)[0] == 206
    world.leave(client)


def test_directories_index_listing_and_redirect(world: World) -> None:
    client, data = world.exchange(get("/docs/"))
    assert one(data)[2] == b"<h1>docs</h1>\n"
    client, data = world.exchange(get("/docs?x=1"), client)
    status, fields, _ = one(data)
    assert status == 301 and fields["location"] == "/docs/?x=1"
    client, data = world.exchange(get("/files/"), client)
    status, fields, body = one(data)
    assert status == 200 and fields["content-type"].startswith("text/html")
    assert b"&lt;b&gt;&amp;x.txt" in body and b"<b>" not in body  # names escaped
    assert b'href="%3Cb%3E%26x.txt"' in body and b'href="sub/"' in body and b'href="plain.txt"' in body
    client, data = world.exchange(get("/hello.txt/"), client)
    assert one(data)[0] == 404
    world.leave(client)


def test_a_listing_too_large_for_its_buffer_says_what_it_left_out(root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for index in range(2000):
        (many / f"file-with-a-long-name-{index:05d}.txt").write_bytes(b"")
    world = World(root)
    client, data = world.exchange(get("/many/"))
    status, _, body = one(data)
    assert status == 200 and len(body) <= http.LISTING_BUFFER.size
    assert b"more entries not shown" in body and body.endswith(b"</ul></body></html>\n")
    world.leave(client)


def test_mime_types_come_from_the_table_and_the_register_action(root: Path) -> None:
    (root / "x.rst").write_bytes(b"text")
    (root / "y.unknownext").write_bytes(b"data")
    world = World(root)
    client, data = world.exchange(get("/y.unknownext"))
    assert one(data)[1]["content-type"] == "application/octet-stream"
    world.server.action("register_mime", extension="rst", type="text/x-rst")
    client, data = world.exchange(get("/x.rst"), client)
    assert one(data)[1]["content-type"] == "text/x-rst"
    world.leave(client)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_known_methods_other_than_get_and_head_get_405_with_allow(world: World, method: str) -> None:
    client, data = world.exchange(get("/hello.txt", method=method))
    status, fields, _ = one(data)
    assert status == 405 and fields["allow"] == "GET, HEAD"
    assert not client.server_closed  # no content: the connection goes on
    client, data = world.exchange(get("/hello.txt"), client)
    assert one(data)[0] == 200
    world.leave(client)


def test_a_post_with_content_gets_405_and_close(world: World) -> None:
    client, data = world.exchange(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    status, fields, _ = one(data)
    assert status == 405 and fields["connection"] == "close"
    world.leave(client)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (get("/", method="BREW"), 501),
    (get("/", method="get"), 501),  # methods are case-sensitive
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
    (b"GET hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
])
def test_requests_refused_with_the_right_status(world: World, request_bytes: bytes, status: int) -> None:
    client, data = world.exchange(request_bytes)
    assert one(data)[0] == status
    world.run()
    assert client.server_closed == (status != 501)  # an unknown method without content: framing holds
    world.leave(client)


def test_an_error_to_a_head_that_did_not_parse_has_no_body(world: World) -> None:
    client, data = world.exchange(b"HEAD / HTTP/1.1\r\n\r\n")  # no Host: 400
    status, fields, body = one(data, "HEAD")
    assert status == 400 and body == b"" and data.endswith(b"\r\n\r\n")
    world.leave(client)


def test_content_length_zero_and_http_1_2_are_served(world: World) -> None:
    client, data = world.exchange(get("/hello.txt", "Content-Length: 0"))
    assert one(data)[0] == 200
    client, data = world.exchange(b"GET /hello.txt HTTP/1.2\r\nHost: a\r\n\r\n", client)
    assert one(data)[0] == 200  # RFC 9112 2.5: a higher minor version is served as 1.1
    world.leave(client)


def test_limits_give_414_and_431(root: Path) -> None:
    world = World(root, max_request_line=100, max_header_len=200, max_headers=5)
    clients = []
    for request, status in [
        (get("/" + "a" * 100), 414),
        (b"GET /" + b"a" * 200, 414),  # not even finished: refused already
        (get("/", "X-Long: " + "b" * 200), 431),
        (get("/", *[f"X-{i}: 1" for i in range(6)]), 431),
        (get("/hello.txt", *[f"X-{i}: 1" for i in range(4)]), 200),
    ]:
        client, data = world.exchange(request)
        assert one(data)[0] == status
        clients.append(client)
    world.leave(*clients)


def test_a_large_file_is_streamed_by_workers_with_partial_sends(root: Path) -> None:
    big = bytes(range(256)) * 10_000  # 2.56 MB: past the cache limit and the send buffer
    (root / "big.bin").write_bytes(big)
    world = World(root)
    client = world.connect()
    client.send(get("/big.bin"))
    data = world.drain(client)
    status, fields, body = one(data)
    assert status == 200 and body == big and fields["content-length"] == str(len(big))
    assert world.server.threads[0].scheduler.stage_runs["chunk_read"] == -(-len(big) // http.STREAM_CHUNK)
    client.send(get("/big.bin", "Range: bytes=1000000-1999999"))
    status, fields, body = one(world.drain(client))
    assert status == 206 and body == big[1_000_000:2_000_000]
    world.leave(client)


def test_a_cached_file_is_served_without_a_worker_until_it_is_stale(world: World) -> None:
    stages = world.server.threads[0].scheduler.stage_runs
    client, _ = world.exchange(get("/hello.txt"))
    client, _ = world.exchange(get("/hello.txt"), client)
    assert stages["file_found"] == 1 and stages["process_message"] == 2
    world.run(advance=http.FILE_CACHE_TTL)
    client, data = world.exchange(get("/hello.txt"), client)
    assert stages["file_found"] == 2 and one(data)[0] == 200
    world.leave(client)


def test_a_stale_entry_sends_one_worker_to_the_disk_and_serves_the_others_meanwhile(world: World) -> None:
    stages = world.server.threads[0].scheduler.stage_runs
    clients = [world.exchange(get("/hello.txt"))[0] for _ in range(3)]
    world.run(advance=http.FILE_CACHE_TTL)
    for client in clients:  # all three in the same step, before the worker is done
        client.send(get("/hello.txt"))
    world.run()
    assert [one(client.recv())[:3:2] for client in clients] == [(200, b"hello, world\n")] * 3
    assert stages["file_found"] == 2 and stages["process_message"] == 6
    world.leave(*clients)


def test_a_file_gone_from_the_disk_leaves_the_cache(world: World, root: Path) -> None:
    client, data = world.exchange(get("/hello.txt"))
    assert one(data)[0] == 200
    (root / "hello.txt").unlink()
    world.run(advance=http.FILE_CACHE_TTL)
    for _ in range(2):  # the one that looked, and the next: not the stale entry
        client, data = world.exchange(get("/hello.txt"), client)
        assert one(data)[0] == 404
    world.leave(client)


def test_the_access_log_in_common_log_format(root: Path) -> None:
    world = World(root)
    client, _ = world.exchange(get("/hello.txt") + get("/nope", method="HEAD")
                               + b'GET /"\x01 HTTP/1.1\r\nHost: a\r\n\r\n')
    world.leave(client)
    assert world.logs == [
        '198.18.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /hello.txt HTTP/1.1" 200 13',
        '198.18.0.1 - - [14/Nov/2023:22:13:20 +0000] "HEAD /nope HTTP/1.1" 404 -',
        '198.18.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /\\x22\\x01 HTTP/1.1" 400 94',
    ]
    quiet = World(root, logging=False)
    client, _ = quiet.exchange(get("/hello.txt"))
    quiet.leave(client)
    assert quiet.logs == []


def test_an_idle_keep_alive_connection_is_closed_silently(world: World) -> None:
    client, _ = world.exchange(get("/hello.txt"))
    world.run(advance=world.config.keepalive_timeout - 0.1)
    assert not client.server_closed
    world.run(advance=0.2)
    assert client.server_closed and client.recv() == b""
    silent = world.connect()  # connects, never sends
    world.run()
    world.run(advance=world.config.keepalive_timeout + 0.1)
    assert silent.server_closed and silent.recv() == b""
    world.leave()


def test_stop_frees_every_connection(world: World) -> None:
    clients = [world.connect() for _ in range(3)]
    clients[0].send(get("/hello.txt"))
    clients[1].send(b"GET / HT")
    world.run()
    world.server.action("stop")
    assert world.server.live_objects() == 0 and world.net.open_sockets == 0


# ---------------------------------------------------------------- CGI


def script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def cgi_world(root: Path) -> World:
    cgi = root / "cgi-bin"
    cgi.mkdir()
    script(cgi / "env.sh", 'printf "Content-Type: text/plain\\r\\n\\r\\n"; env | sort\n')
    script(cgi / "status.sh", 'printf "Status: 418 Teapot\\nContent-Type: text/plain\\n\\nshort"\n')
    script(cgi / "moved.sh", 'printf "Location: /hello.txt\\n\\n"\n')
    script(cgi / "slow.sh", "sleep 5\n")
    script(cgi / "garbage.sh", "echo no headers here\n")
    script(cgi / "flood.sh", 'printf "Content-Type: text/plain\\n\\n"; exec yes\n')
    (cgi / "noexec.sh").write_text("#!/bin/sh\necho hi\n")
    return World(root, cgi_dir="cgi-bin", cgi_timeout=0.5)


def test_cgi_gets_the_rfc_3875_environment(cgi_world: World) -> None:
    client, data = cgi_world.exchange(get("/cgi-bin/env.sh/extra/path?a=1&b=2", "X-Thing: yes",
                                          "Host: example.org:8080"))
    status, fields, body = one(data)
    assert status == 200 and fields["content-type"] == "text/plain"
    env = dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REQUEST_METHOD"] == "GET" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.sh" and env["PATH_INFO"] == "/extra/path"
    assert env["QUERY_STRING"] == "a=1&b=2" and env["HTTP_X_THING"] == "yes"
    assert env["SERVER_NAME"] == "example.org" and env["SERVER_PORT"] == "80"
    assert env["REMOTE_ADDR"] == "198.18.0.1"
    cgi_world.leave(client)


def test_cgi_status_location_failures_and_timeout(cgi_world: World) -> None:
    client, data = cgi_world.exchange(get("/cgi-bin/moved.sh"))
    status, fields, _ = one(data)
    assert status == 302 and fields["location"] == "/hello.txt"
    client, data = cgi_world.exchange(get("/cgi-bin/status.sh", method="HEAD"), client)
    status, fields, body = one(data, "HEAD")
    assert (status, body, fields["content-length"]) == (418, b"", "5")
    script(cgi_world.config.root() / "cgi-bin" / "nothing.sh",
           'printf "Status: 304 Not Modified\\nContent-Type: text/plain\\n\\nignored"\n')
    client, data = cgi_world.exchange(get("/cgi-bin/nothing.sh") + get("/hello.txt"), client)
    assert [(r.status_code, b) for r, b in responses(data, ["GET", "GET"])] == [
        (304, b""), (200, b"hello, world\n")]
    stages = cgi_world.server.threads[0].scheduler.stage_runs
    assert stages["cgi_done"] == 3 and stages["file_found"] == 1  # workers ran them
    for target, expected in [("/cgi-bin/garbage.sh", 500), ("/cgi-bin/slow.sh", 504), ("/cgi-bin/flood.sh", 500),
                             ("/cgi-bin/noexec.sh", 403), ("/cgi-bin/none.sh", 404)]:
        client, data = cgi_world.exchange(get(target))
        assert one(data)[0] == expected, target
        cgi_world.leave(client)


def test_a_cgi_timeout_kills_what_the_script_started(cgi_world: World, root: Path) -> None:
    pidfile = root.parent / "child.pid"
    script(root / "cgi-bin" / "spawns.sh", f"sleep 30 & echo $! > {pidfile}\nwait\n")
    client, data = cgi_world.exchange(get("/cgi-bin/spawns.sh"))
    assert one(data)[0] == 504
    status = Path(f"/proc/{pidfile.read_text().strip()}/status")
    for _ in range(100):
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.01)
    else:
        pytest.fail("the script's child outlived its timeout")
    cgi_world.leave(client)


def test_cgi_is_off_without_a_cgi_dir(root: Path) -> None:
    (root / "cgi-bin").mkdir()
    script(root / "cgi-bin" / "env.sh", "echo ran\n")
    world = World(root)
    client, data = world.exchange(get("/cgi-bin/env.sh"))
    status, _, body = one(data)
    assert status == 200 and body.startswith(b"#!/bin/sh")  # a plain file: never run
    world.leave(client)


def test_a_file_typed_as_cgi_outside_the_cgi_dir_is_not_shown(root: Path) -> None:
    (root / "run.cgi").write_text("#!/bin/sh\necho secret source\n")
    world = World(root, mime_types={"cgi": "application/x-httpd-cgi"})
    client, data = world.exchange(get("/run.cgi"))
    assert one(data)[0] == 403
    world.leave(client)


def test_the_date_comes_from_the_server_clock(world: World) -> None:
    world.now = NOW + 86400
    client, data = world.exchange(get("/hello.txt"))
    assert one(data)[1]["date"] == "Wed, 15 Nov 2023 22:13:20 GMT"
    world.leave(client)
