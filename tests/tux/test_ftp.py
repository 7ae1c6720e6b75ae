"""The FTP handler in virtual time: every command, passive transfers, the abuse list, leaks.

The test plays the client on both connections (control and data) over the
in-memory Net; each test ends with every connection gone and checks that no
per-request object, socket or data listener is left.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from tux_like import ftp
from tux_like.config import make_config
from tux_like.memnet import SEND_BUFFER, MemoryNet, pump
from tux_like.server import Server

BIG = bytes(range(256)) * 2500  # 640,000 bytes: more than the send buffer, so sends are partial


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    (served / "sub" / "deeper").mkdir(parents=True)
    (served / "hello.txt").write_bytes(b"hello\nworld\r\n")
    (served / "big.bin").write_bytes(BIG)
    (served / "empty").write_bytes(b"")
    (served / "sub" / "inner.txt").write_bytes(b"inner")
    (served / '"quoted" dir').mkdir()
    (served / "%2e%2e").mkdir()  # a literal name: FTP does not decode escapes
    (served / "inside-link").symlink_to(served / "sub" / "inner.txt")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_bytes(b"SECRET")
    (served / "leak").symlink_to(secret)
    (served / "leakdir").symlink_to(tmp_path / "outside")
    os.utime(served / "hello.txt", (1_700_000_000, 1_700_000_000))
    return served


class Ftp:
    """A scripted FTP client on a MemoryNet: control commands, passive transfers."""

    def __init__(self, server: Server, net: MemoryNet, now: float = 0.0):
        self.server, self.net, self.now = server, net, now
        self.control = net.connect(21)
        pump(server, net, now)
        self.greeting = self.read()

    def run(self) -> None:
        pump(self.server, self.net, self.now)

    def read(self) -> str:
        return self.control.recv().decode("utf-8", "surrogateescape")

    def cmd(self, line: str | bytes) -> str:
        data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape") + b"\r\n"
        self.control.send(data)
        self.run()
        return self.read()

    def login(self) -> None:
        assert self.cmd("USER anonymous").startswith("331 ")
        assert self.cmd("PASS guest@example.org").startswith("230 ")

    def epsv(self) -> int:
        answer = self.cmd("EPSV")
        match = re.fullmatch(r"229 .*\(\|\|\|(\d+)\|\)\.\r\n", answer)
        assert match, answer
        return int(match.group(1))

    def pasv(self) -> int:
        answer = self.cmd("PASV")
        match = re.fullmatch(r"227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)\.\r\n", answer)
        assert match, answer
        assert ".".join(match.groups()[:4]) == self.net.address
        return int(match.group(5)) * 256 + int(match.group(6))

    def transfer(self, line: str, passive: str = "EPSV") -> tuple[str, bytes]:
        """PASV/EPSV, connect, send the command, read the data until the server closes it;
        returns the control replies (150 ... 226) and the data."""
        port = self.epsv() if passive == "EPSV" else self.pasv()
        data = self.net.connect(port)
        replies = self.cmd(line)
        received = bytearray()
        for _ in range(1000):
            received += data.recv()
            self.run()
            replies += self.read()
            if data.server_closed and "\r\n2" in "\r\n" + replies or replies.startswith(("4", "5")):
                break
        received += data.recv()
        return replies, bytes(received)

    def quit(self) -> None:
        assert self.cmd("QUIT") == "221 Goodbye.\r\n"
        assert self.control.server_closed


def start(root: Path, **values) -> tuple[Server, MemoryNet]:
    config = make_config({"protocol": "ftp", "document_root": str(root), "listen": "198.18.0.2:21", **values})
    net = MemoryNet()
    server = Server(config, net)
    server.action("start")
    return server, net


def assert_nothing_left(server: Server, net: MemoryNet) -> None:
    pump(server, net)
    assert server.live_objects() == 0
    assert server.live_connections() == 0
    assert net.open_sockets == 0
    assert sorted(net.listeners) == [21]  # no data listener left


@pytest.fixture
def served(root: Path):
    server, net = start(root)
    yield server, net
    assert_nothing_left(server, net)


def logged_in(served) -> Ftp:
    client = Ftp(*served)
    client.login()
    return client


# ---------------------------------------------------------------- login and session commands


def test_greeting_login_and_quit(served) -> None:
    client = Ftp(*served)
    assert client.greeting.startswith("220 ")
    assert client.cmd("USER anonymous") .startswith("331 ")
    assert client.cmd("PASS me@example.org") == "230 Login successful.\r\n"
    assert client.cmd("PASS again") == "230 Already logged in.\r\n"
    assert client.cmd("USER root").startswith("530 ")
    client.quit()


@pytest.mark.parametrize("user", ["ftp", "FTP", "Anonymous"])
def test_anonymous_and_ftp_are_the_users(served, user: str) -> None:
    client = Ftp(*served)
    assert client.cmd(f"USER {user}").startswith("331 ")
    assert client.cmd("PASS x").startswith("230 ")
    client.quit()


def test_another_user_is_refused_and_pass_without_user_is_out_of_order(served) -> None:
    client = Ftp(*served)
    assert client.cmd("USER root") == "530 This server is anonymous only.\r\n"
    assert client.cmd("PASS secret") == "503 Login with USER first.\r\n"
    assert client.cmd("PWD").startswith("530 ")
    client.quit()


@pytest.mark.parametrize("line", ["PWD", "CWD sub", "CDUP", "SYST", "NOOP", "TYPE I", "PASV", "EPSV", "LIST",
                                  "NLST", "RETR hello.txt", "SIZE hello.txt", "MDTM hello.txt", "STOR x",
                                  "PORT 198,18,0,1,4,1", "DELE hello.txt"])
def test_every_command_but_login_wants_a_login_first(served, line: str) -> None:
    client = Ftp(*served)
    assert client.cmd(line) == "530 Please login with USER and PASS.\r\n"
    client.login()
    client.quit()


def test_feat_syst_noop_pwd_type_mode_stru(served) -> None:
    client = Ftp(*served)
    features = client.cmd("FEAT")  # allowed before login (RFC 2389)
    assert features.startswith("211-") and features.endswith("211 End\r\n")
    assert {" EPSV", " MDTM", " PASV", " SIZE"} <= set(features.split("\r\n"))
    client.login()
    assert client.cmd("SYST") == "215 UNIX Type: L8\r\n"
    assert client.cmd("NOOP").startswith("200 ")
    assert client.cmd("PWD") == '257 "/" is the current directory.\r\n'
    assert client.cmd("TYPE I").startswith("200 ")
    assert client.cmd("TYPE A").startswith("200 ")
    assert client.cmd("type a n").startswith("200 ")
    assert client.cmd("TYPE L 8").startswith("200 ")
    assert client.cmd("TYPE E").startswith("504 ")
    assert client.cmd("TYPE").startswith("501 ")
    assert client.cmd("MODE S").startswith("200 ") and client.cmd("MODE B").startswith("504 ")
    assert client.cmd("STRU F").startswith("200 ") and client.cmd("STRU R").startswith("504 ")
    client.quit()


def test_cwd_cdup_pwd(served) -> None:
    client = logged_in(served)
    assert client.cmd("CWD sub") == "250 Directory successfully changed.\r\n"
    assert client.cmd("PWD") == '257 "/sub" is the current directory.\r\n'
    assert client.cmd("CWD deeper/../deeper/.").startswith("250 ")
    assert client.cmd("PWD") == '257 "/sub/deeper" is the current directory.\r\n'
    assert client.cmd("CDUP").startswith("250 ")
    assert client.cmd("PWD") == '257 "/sub" is the current directory.\r\n'
    assert client.cmd("CWD /").startswith("250 ")
    assert client.cmd('CWD "quoted" dir').startswith("250 ")
    assert client.cmd("PWD") == '257 "/""quoted"" dir" is the current directory.\r\n'  # RFC 959: quotes doubled
    assert client.cmd("XCUP").startswith("250 ")
    assert client.cmd("CWD nowhere").startswith("550 ")
    assert client.cmd("CWD hello.txt").startswith("550 ")  # a file is no directory
    assert client.cmd("CWD").startswith("501 ")
    assert client.cmd("PWD") == '257 "/" is the current directory.\r\n'
    client.quit()


def test_size_and_mdtm(served) -> None:
    client = logged_in(served)
    assert client.cmd("TYPE I").startswith("200 ")
    assert client.cmd("SIZE big.bin") == f"213 {len(BIG)}\r\n"
    assert client.cmd("SIZE hello.txt") == "213 13\r\n"
    assert client.cmd("TYPE A").startswith("200 ")
    assert client.cmd("SIZE hello.txt") == "213 14\r\n"  # what RETR sends in TYPE A: CRLF line ends
    expected = time.strftime("%Y%m%d%H%M%S", time.gmtime(1_700_000_000))
    assert client.cmd("MDTM hello.txt") == f"213 {expected}\r\n"
    assert client.cmd("MDTM /sub/inner.txt").startswith("213 ")
    assert client.cmd("SIZE sub").startswith("550 ")  # a directory has no SIZE
    assert client.cmd("MDTM missing").startswith("550 ")
    assert client.cmd("SIZE").startswith("501 ")
    client.quit()


# ---------------------------------------------------------------- transfers


def test_retr_binary_over_epsv_and_pasv_with_partial_sends(served) -> None:
    client = logged_in(served)
    assert client.cmd("TYPE I").startswith("200 ")
    replies, data = client.transfer("RETR big.bin")
    assert len(BIG) > SEND_BUFFER and data == BIG
    assert replies == f"150 Opening BINARY mode data connection ({len(BIG)} bytes).\r\n226 Transfer complete.\r\n"
    replies, data = client.transfer("RETR /sub/inner.txt", passive="PASV")
    assert data == b"inner" and replies.endswith("226 Transfer complete.\r\n")
    replies, data = client.transfer("RETR empty")
    assert data == b"" and replies.endswith("226 Transfer complete.\r\n")
    replies, data = client.transfer("RETR inside-link")  # a symlink that stays inside the root
    assert data == b"inner"
    client.quit()


def test_type_a_line_ends_across_chunks_and_files_of_whole_chunks(root: Path) -> None:
    chunk = ftp.FILE_CHUNK
    text = b"x" * (chunk - 1) + b"\r\nline\n" + b"y" * (chunk - 6) + b"\n\n\r" + b"\nz\r\r\n\n"
    (root / "text").write_bytes(text)
    (root / "whole").write_bytes(BIG[:2 * chunk])
    expected = re.sub(rb"(?<!\r)\n", b"\r\n", text)  # every LF not after a CR
    server, net = start(root)
    client = Ftp(server, net)
    client.login()
    assert client.cmd("SIZE text") == f"213 {len(expected)}\r\n"
    _, data = client.transfer("RETR text")
    assert data == expected
    client.cmd("TYPE I")
    assert client.cmd("SIZE text") == f"213 {len(text)}\r\n"
    _, data = client.transfer("RETR text")
    assert data == text
    replies, data = client.transfer("RETR whole")
    assert data == BIG[:2 * chunk] and replies.endswith("226 Transfer complete.\r\n")
    client.quit()
    assert_nothing_left(server, net)


def test_a_file_that_cannot_be_read_mid_transfer_gets_451(served, root: Path) -> None:
    client = logged_in(served)
    client.cmd("TYPE I")
    data = served[1].connect(client.epsv())
    assert client.cmd("RETR big.bin").startswith("150 ")
    (root / "big.bin").unlink()  # the next chunk's read fails
    received = bytearray()
    replies = ""
    while not data.server_closed:
        received += data.recv()
        client.run()
        replies += client.read()
    assert replies == "451 Local error reading the file; transfer aborted.\r\n"
    assert 0 < len(received) < len(BIG)
    client.quit()


def test_retr_in_ascii_mode_sends_crlf_line_ends(served) -> None:
    client = logged_in(served)
    replies, data = client.transfer("RETR hello.txt")
    assert replies.startswith("150 Opening ASCII mode") and data == b"hello\r\nworld\r\n"
    client.quit()


def test_list_is_ls_l_and_nlst_is_names(served) -> None:
    client = logged_in(served)
    replies, data = client.transfer("NLST")
    assert replies == "150 Here comes the directory listing.\r\n226 Transfer complete.\r\n"
    names = data.decode().split("\r\n")
    assert names[-1] == "" and names[:-1] == sorted(
        ['"quoted" dir', "%2e%2e", "big.bin", "empty", "hello.txt", "inside-link", "sub"])  # no leak, leakdir
    replies, data = client.transfer("LIST -la")
    lines = data.decode().split("\r\n")[:-1]
    assert len(lines) == 7
    by_name = {line.split(None, 8)[8]: line.split(None, 8) for line in lines}
    assert by_name["hello.txt"][:8] == ["-rw-r--r--", "1", "ftp", "ftp", "13", "Nov", "14", "2023"]
    assert by_name["sub"][0].startswith("d") and by_name["big.bin"][4] == str(len(BIG))
    assert by_name["inside-link"][0].startswith("-")  # shown as what it names, inside the root
    _, data = client.transfer("LIST sub")
    assert [line.split(None, 8)[8] for line in data.decode().split("\r\n")[:-1]] == ["deeper", "inner.txt"]
    _, data = client.transfer("NLST hello.txt")
    assert data == b"hello.txt\r\n"
    replies, _ = client.transfer("LIST missing")
    assert replies.startswith("550 ")
    client.quit()


def test_a_listing_longer_than_the_listing_buffer(tmp_path: Path) -> None:
    names = [f"file-{i:04}-{'x' * 80}.txt" for i in range(100)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    server, net = start(tmp_path)
    client = Ftp(server, net)
    client.login()
    _, data = client.transfer("NLST")
    assert len(data) > ftp.LISTING_BUFFER.size and data.decode().split("\r\n")[:-1] == names
    _, data = client.transfer("LIST")
    assert [line.split(None, 8)[8] for line in data.decode().split("\r\n")[:-1]] == names
    client.quit()
    assert_nothing_left(server, net)


def test_data_listener_serves_one_connection_and_a_new_pasv_replaces_an_unused_one(served) -> None:
    server, net = served
    client = logged_in(served)
    first = client.epsv()
    second = client.pasv()
    assert first not in net.listeners and second in net.listeners
    replies, data = client.transfer("RETR /sub/inner.txt")
    assert data == b"inner"
    assert client.cmd("RETR hello.txt").startswith("425 ")  # its listener is gone with the transfer
    assert len(net.listeners) == 1
    client.quit()


def test_a_connection_from_another_host_on_the_data_port_is_closed(served) -> None:
    server, net = served
    client = logged_in(served)
    port = client.epsv()
    thief = net.connect(port)
    thief.sock.peer = ("198.18.0.99", 5555)
    real = net.connect(port)
    replies = client.cmd("RETR /sub/inner.txt")
    client.run()
    replies += client.read()
    assert thief.server_closed and thief.recv() == b""
    assert real.recv() == b"inner" and replies.endswith("226 Transfer complete.\r\n")
    client.quit()


def test_epsv_variants(served) -> None:
    client = logged_in(served)
    assert client.cmd("EPSV 2") == "522 Network protocol not supported, use (1).\r\n"
    assert client.cmd("EPSV x").startswith("501 ")
    assert client.cmd("EPSV 1").startswith("229 ")
    assert client.cmd("EPSV ALL").startswith("200 ")
    assert client.cmd("PASV").startswith("503 ")  # RFC 2428: after EPSV ALL only EPSV
    assert client.cmd("EPSV").startswith("229 ")
    client.quit()


def test_passive_ports_come_from_the_configured_range_and_run_out(root: Path) -> None:
    server, net = start(root, ftp_passive_ports=[30000, 30001])
    clients = [Ftp(server, net) for _ in range(3)]
    ports = []
    for client in clients[:2]:
        client.login()
        ports.append(client.epsv())
    assert sorted(ports) == [30000, 30001]
    clients[2].login()
    assert clients[2].cmd("EPSV") == "425 No passive port is free.\r\n"
    for client in clients:
        client.quit()
    assert_nothing_left(server, net)


# ---------------------------------------------------------------- refused and out of order


def test_active_mode_and_writes_are_refused(served) -> None:
    client = logged_in(served)
    assert client.cmd("PORT 198,18,0,1,4,1").startswith("502 ")
    assert client.cmd("EPRT |1|198.18.0.1|1025|").startswith("502 ")
    for line in ("STOR x", "STOU", "APPE hello.txt", "DELE hello.txt", "RMD sub", "MKD new", "XMKD new",
                 "RNFR hello.txt", "RNTO x", "SITE CHMOD 777 hello.txt"):
        assert client.cmd(line).startswith("550 "), line
    assert (served[0].config.document_root and Path(served[0].config.document_root, "hello.txt").exists())
    assert client.cmd("REST 100").startswith("502 ")
    assert client.cmd("HELP").startswith("502 ")
    client.quit()


@pytest.mark.parametrize("line", ["XYZZY", "GET / HTTP/1.1", "", "\xff\xf4\xff\xf2ABOR", "12345"])
def test_unknown_commands_get_500_and_the_session_goes_on(served, line: str) -> None:
    client = logged_in(served)
    assert client.cmd(line).startswith("500 ")
    assert client.cmd("NOOP").startswith("200 ")
    client.quit()


def test_transfers_before_pasv_get_425(served) -> None:
    client = logged_in(served)
    for line in ("RETR hello.txt", "LIST", "NLST"):
        assert client.cmd(line) == "425 Use PASV or EPSV first.\r\n"
    client.quit()


def test_retr_of_a_directory_or_a_missing_file_is_550_and_the_listener_stays(served) -> None:
    server, net = served
    client = logged_in(served)
    client.epsv()
    assert client.cmd("RETR sub") == "550 Failed to open file.\r\n"
    assert client.cmd("RETR missing") == "550 Failed to open file.\r\n"
    assert client.cmd("RETR").startswith("501 ")
    assert len(net.listeners) == 2
    assert client.cmd("ABOR") == "226 No transfer to abort.\r\n"
    assert len(net.listeners) == 1
    client.quit()


TRAVERSALS = [
    "../secret.txt", "../../../../etc/passwd", "/../secret.txt", "sub/../../secret.txt", "..",
    "..\\secret.txt", "sub\\..\\..\\secret.txt", "/etc/passwd", "leak", "leakdir/x.txt", "leakdir",
    "hello.txt\x00.png", "%2e%2e/secret.txt", "....//secret.txt", "sub/../../root/hello.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_outside_the_root_are_refused_in_every_spelling(served, path: str) -> None:
    client = logged_in(served)
    client.cmd("TYPE I")
    replies, data = client.transfer(f"RETR {path}")
    assert replies.startswith("550 ") and data == b""
    for verb in ("SIZE", "MDTM", "CWD"):
        assert client.cmd(f"{verb} {path}").startswith(("550 ", "500 ")), verb
    assert client.cmd("PWD") == '257 "/" is the current directory.\r\n'
    replies, data = client.transfer(f"LIST {path}")
    assert b"SECRET" not in data and replies.startswith(("550 ", "500 "))
    client.cmd("ABOR")
    client.quit()


def test_cdup_at_the_root_is_refused(served) -> None:
    client = logged_in(served)
    assert client.cmd("CDUP").startswith("550 ")
    assert client.cmd("CWD sub").startswith("250 ") and client.cmd("CWD ../..").startswith("550 ")
    assert client.cmd("PWD") == '257 "/sub" is the current directory.\r\n'
    client.quit()


def test_pipelined_commands_are_answered_in_order(served) -> None:
    client = Ftp(*served)
    replies = client.cmd(b"USER ftp\r\nPASS x\r\nSYST\nPWD\r\nNOOP\r\n")
    assert [line[:3] for line in replies.split("\r\n")[:-1]] == ["331", "230", "215", "257", "200"]
    client.quit()


def test_a_command_trickled_byte_by_byte_is_served(served) -> None:
    client = logged_in(served)
    for byte in b"SYST\r":
        assert client.cmd(bytes([byte])) == ""
    assert client.cmd(b"\n") == "215 UNIX Type: L8\r\n"
    client.quit()


def test_an_over_long_line_gets_one_500_and_the_session_goes_on(served) -> None:
    client = logged_in(served)
    size = ftp.COMMAND_BUFFER.size
    assert client.cmd(b"NOOP " + b"x" * size) == "500 Command line too long.\r\n"
    assert client.cmd(b"y" * (3 * size)) == ""  # still the same line: dropped, no second 500
    assert client.cmd(b"zzz\r\nSYST\r\n") == "215 UNIX Type: L8\r\n"
    assert client.cmd(b"NOOP " + b"x" * (size - 8) + b"\r\n").startswith("200 ")  # at the limit: served
    client.quit()


# ---------------------------------------------------------------- timeouts, busy, resets, stop


def test_an_idle_control_connection_gets_421_and_is_closed(root: Path) -> None:
    server, net = start(root, keepalive_timeout=30)
    client = Ftp(server, net)
    client.login()
    client.control.send(b"NO")  # a partial line does not keep the connection alive
    pump(server, net, 29.0)
    assert client.read() == "" and not client.control.server_closed
    pump(server, net, 31.0)
    assert client.read() == "421 Timeout: closing the control connection.\r\n"
    assert client.control.server_closed
    assert_nothing_left(server, net)


def test_a_data_connection_never_opened_gets_425(root: Path) -> None:
    server, net = start(root, request_timeout=5)
    client = Ftp(server, net)
    client.login()
    client.epsv()
    assert client.cmd("RETR hello.txt").startswith("150 ")
    pump(server, net, 6.0)
    assert client.read() == "425 Can't open data connection.\r\n"
    client.now = 6.0
    assert client.cmd("NOOP").startswith("200 ")
    client.quit()
    assert_nothing_left(server, net)


def test_a_stalled_data_connection_gets_426(root: Path) -> None:
    server, net = start(root, request_timeout=5)
    client = Ftp(server, net)
    client.login()
    port = client.epsv()
    data = net.connect(port)
    assert client.cmd("RETR big.bin").startswith("150 ")  # the client never reads the data
    pump(server, net, 6.0)
    assert client.read() == "426 Data connection stalled; transfer aborted.\r\n"
    assert len(data.recv()) == SEND_BUFFER and data.server_closed
    client.now = 6.0
    client.quit()
    assert_nothing_left(server, net)


def test_a_data_connection_reset_mid_transfer_gets_426(served) -> None:
    server, net = served
    client = logged_in(served)
    port = client.epsv()
    data = net.connect(port)
    assert client.cmd("RETR big.bin").startswith("150 ")
    data.recv()
    data.reset()
    client.run()
    assert client.read() == "426 Data connection closed; transfer aborted.\r\n"
    client.quit()


@pytest.mark.parametrize("how", ["reset", "half-close"])
def test_a_control_connection_that_goes_away_leaves_nothing(served, how: str) -> None:
    server, net = served
    client = logged_in(served)
    client.epsv()  # with a data listener open
    if how == "reset":
        client.control.reset()
    else:
        client.control.shutdown_write()
    client.run()
    assert client.control.server_closed or how == "reset"


def test_a_control_connection_that_goes_away_during_a_transfer_ends_after_it(served) -> None:
    server, net = served
    client = logged_in(served)
    client.cmd("TYPE I")
    port = client.epsv()
    data = net.connect(port)
    client.control.send(b"RETR big.bin\r\n")
    client.control.shutdown_write()
    client.run()
    received = bytearray()
    while not data.server_closed:
        received += data.recv()
        client.run()
    assert bytes(received) == BIG
    assert client.read().endswith("226 Transfer complete.\r\n") and client.control.server_closed


def test_past_max_connect_a_client_gets_421(root: Path) -> None:
    server, net = start(root, max_connect=2)
    first, second = Ftp(server, net), Ftp(server, net)
    third = net.connect(21)
    pump(server, net)
    assert third.recv() == b"421 Too many connections, try again later.\r\n" and third.server_closed
    assert server.stats.refused == 1
    for client in (first, second):
        client.login()
        client.quit()
    assert_nothing_left(server, net)


@pytest.mark.parametrize("moment", ["listener", "transfer", "control on a worker", "transfer on a worker"])
def test_stop_ends_every_connection_transfer_and_listener(root: Path, moment: str) -> None:
    server, net = start(root)
    client = Ftp(server, net)
    client.login()
    port = client.epsv()
    if moment == "transfer":
        net.connect(port)
        assert client.cmd("RETR big.bin").startswith("150 ")
    elif moment.endswith("on a worker"):
        if moment == "transfer on a worker":
            net.connect(port)
        client.control.send(b"RETR big.bin\r\n")
        kind = ftp.Transfer if moment == "transfer on a worker" else ftp.Session
        ti = server.threads[0]
        while not (ti.work and isinstance(ti.work[0].req.proto, kind)):  # stages only, no worker runs
            if ti.work:
                done = ti.work.popleft()
                done.result = done.job()
                ti.complete(done)
            server.step(0.0)
            for sock in net.take_ready():
                server.ready(sock)
    server.action("stop")
    pump(server, net)
    assert server.live_objects() == 0 and server.live_connections() == 0
    assert net.open_sockets == 0 and net.listeners == {}


def test_many_sessions_with_transfers_leave_nothing(served) -> None:
    clients = [logged_in(served) for _ in range(20)]
    for client in clients:
        _, data = client.transfer("RETR /sub/inner.txt")
        assert data == b"inner"
    for client in clients:
        client.quit()


def test_stage_runs_name_the_ftp_stages(served) -> None:
    server, _ = served
    client = logged_in(served)
    client.transfer("LIST")
    client.quit()
    runs = server.threads[0].scheduler.stage_runs
    for stage in ("got_connection", "send_reply", "read_command", "parse_command", "transfer_ready",
                  "accept_data", "send_data", "close_control"):
        assert runs.get(stage), stage


@pytest.mark.parametrize("logging", [True, False])
def test_each_transfer_is_logged_when_logging_is_on(root: Path, logging: bool) -> None:
    config = make_config({"protocol": "ftp", "document_root": str(root), "listen": "198.18.0.2:21",
                          "logging": logging})
    net, lines = MemoryNet(), []
    server = Server(config, net, log=lines.append)
    server.action("start")
    client = Ftp(server, net)
    client.login()
    client.cmd("TYPE I")
    client.transfer("RETR /sub/inner.txt")
    client.transfer("RETR missing")
    client.quit()
    assert lines == (['198.18.0.1 anonymous "RETR /sub/inner.txt" 226 5'] if logging else [])
    assert server.stats.requests[226] == 1 and server.stats.requests[550] == 1
    assert_nothing_left(server, net)


def test_the_working_directory_is_bounded_by_max_path(root: Path) -> None:
    (root / "s").symlink_to(".")  # a loop inside the root: every s/s/s/... is the root itself
    server, net = start(root)
    client = Ftp(server, net)
    client.login()
    assert client.cmd("CWD " + "s/" * 2000).startswith("250 ")
    assert client.cmd("PWD") == '257 "' + "/s" * 2000 + '" is the current directory.\r\n'
    assert client.cmd("CWD " + "s/" * 48).startswith("250 ")  # 4096 bytes: MAX_PATH
    assert client.cmd("CWD s").startswith("550 ")
    client.quit()
    assert_nothing_left(server, net)


def test_commands_sent_during_a_transfer_are_answered_after_its_226(served) -> None:
    server, net = served
    client = logged_in(served)
    client.cmd("TYPE I")
    data = net.connect(client.epsv())
    replies = client.cmd(b"RETR big.bin\r\nSYST\r\nPWD\r\n")
    received = bytearray()
    while not data.server_closed:
        received += data.recv()
        client.run()
        replies += client.read()
    assert bytes(received) == BIG
    assert [line[:3] for line in replies.split("\r\n")[:-1]] == ["150", "226", "215", "257"]
    client.quit()


def test_a_client_that_never_reads_its_replies_is_closed_after_request_timeout(root: Path) -> None:
    server, net = start(root, request_timeout=5)
    client = Ftp(server, net)
    client.control.send(b"FEAT\r\n" * (SEND_BUFFER // len(ftp.FEATURES) + 10))
    pump(server, net, 1.0)
    assert len(client.control.sock.outbox) == SEND_BUFFER and not client.control.sock.closed
    pump(server, net, 7.0)
    assert client.control.sock.closed
    assert_nothing_left(server, net)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_bytes_get_answers_and_leave_nothing(served, seed: int) -> None:
    garbage = random.Random(seed).randbytes(20_000)
    client = Ftp(*served)
    for start in range(0, len(garbage), 1000):
        answers = client.cmd(garbage[start:start + 1000])
        assert all(line[:3] in ("500", "530") for line in answers.split("\r\n")[:-1]), answers
    assert client.cmd(b"\r\nNOOP\r\n").endswith("530 Please login with USER and PASS.\r\n")
    client.quit()
