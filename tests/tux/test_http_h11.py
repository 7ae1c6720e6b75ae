"""Hypothesis-generated requests with h11 as an independent oracle: what h11 accepts as a
valid request is served (never a 400), what it rejects gets a 4xx (or the status h11 itself
would answer, 501 for a transfer coding it does not know), and every answer parses
cleanly with an h11 client (HEAD included); nothing is left behind.

Where this server is deliberately stricter than h11, the generator does not go (each is
refused by another test): obs-fold, Content-Length with Transfer-Encoding, Transfer-Encoding
in HTTP/1.0 (RFC 9112 5.2, 6.1 and 6.3 let or make a server refuse them; h11 accepts them),
malformed percent-encoding in the target, and request targets other than origin-form and
absolute-form (``*``, ``host:port``): h11 does not look inside the target.
"""

from __future__ import annotations

from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tux.http_world import World, make_root, responses


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("h11"))


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SEGMENTS = st.sampled_from(["hello.txt", "page.html", "digits.txt", "docs", "files", "sub", "",
                            ".", "..", "%2e%2e", "%2F", "a%20b", "%3Cb%3E%26x.txt", "missing",
                            "empty.txt", "index.html", "x;y", "~u", "%00", "\\", "%5c", "%2e"])


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=4)))
    if draw(st.booleans()):
        path += "/"
    if draw(st.integers(0, 4)) == 0:
        path += "?" + draw(st.text("abc=&%/?", max_size=8))
    if draw(st.integers(0, 9)) == 0:
        path = "http://example.org" + path
    return path


FIELD_VALUE = st.text(st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"),
                      max_size=20)
FIELDS = st.one_of(
    st.tuples(st.sampled_from(["Connection"]), st.sampled_from(["close", "keep-alive", "Keep-Alive, x", ""])),
    st.tuples(st.sampled_from(["Range"]), st.sampled_from(["bytes=0-3", "bytes=-2", "bytes=5-", "bytes=99-",
                                                           "bytes=1-2,4-5", "bytes=x"])),
    st.tuples(st.sampled_from(["If-Modified-Since"]),
              st.sampled_from(["Tue, 14 Nov 2023 21:13:20 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "never"])),
    st.tuples(st.sampled_from(["Content-Length"]), st.sampled_from(["0", "00", "0, 0", "5", "-1", "x", " 0 "])),
    st.tuples(st.sampled_from(["Transfer-Encoding"]), st.sampled_from(["chunked", "gzip", "chunked, chunked"])),
    st.tuples(st.text(TOKEN_CHARS, min_size=1, max_size=10), FIELD_VALUE),
    st.tuples(st.text(TOKEN_CHARS + " ()@:", max_size=6).filter(lambda name: not name.startswith(" ")),
              FIELD_VALUE),  # names h11 may refuse (a leading space would be obs-fold)
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "HEAD", "POST", "OPTIONS", "BREW", "get"]))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0", "2.0", "1.x"]))
    separator = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    fields = draw(st.lists(FIELDS, max_size=5))
    hosts = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    fields = [("Host", "example.org")] * hosts + fields
    names = {name.lower() for name, _ in fields}
    if "transfer-encoding" in names and ("content-length" in names or version == "1.0"):
        fields = [(n, v) for n, v in fields if n.lower() != "transfer-encoding"]  # deliberately stricter
    line = f"{method}{separator}{draw(targets())}{separator}HTTP/{version}"
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"]))
    text = eol.join([line] + [f"{name}:{draw(st.sampled_from([' ', '', '  ']))}{value}" for name, value in fields])
    return (text + eol + eol).encode("latin-1")


def h11_verdict(data: bytes) -> tuple[h11.Request | None, int]:
    """h11's reading of the request as a server: the Request, or None and the status h11
    would answer when it refuses it."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    try:
        event = server.next_event()
    except h11.RemoteProtocolError as refused:
        return None, refused.error_status_hint
    assert isinstance(event, h11.Request), event
    return event, 0


def method_of(data: bytes) -> str:
    """The method the h11 client reading the answer must know about (HEAD: no body)."""
    return "HEAD" if data.startswith(b"HEAD ") else "GET"


def assert_agrees(data: bytes, verdict: h11.Request | None, hint: int, status: int) -> None:
    """Accepted by h11: never a 400 (a 5xx only for a method or a version this server does not
    serve). Refused: a 4xx, h11's own status, or 505 for a version other than 1.x (h11 reads
    any version)."""
    other_version = not data.split(b"\n", 1)[0].rstrip(b"\r").endswith((b"HTTP/1.0", b"HTTP/1.1"))
    if verdict is not None:
        assert status != 400 and (status < 500 or status in (501, 505)), (data, status)
    else:
        assert 400 <= status < 500 or status == hint or (status == 505 and other_version), (data, status)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=requests())
def test_h11_accepted_requests_are_served_and_rejected_ones_get_a_4xx(root: Path, data: bytes) -> None:
    world = World(root)
    verdict, hint = h11_verdict(data)
    client, answer = world.exchange(data)
    [(response, _)] = responses(answer, [method_of(data)])  # parses cleanly, nothing after it
    assert_agrees(data, verdict, hint, response.status_code)
    world.leave(client)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(requests(), min_size=2, max_size=6))
def test_pipelined_generated_requests_get_one_clean_answer_each_until_a_close(root: Path,
                                                                             batch: list[bytes]) -> None:
    world = World(root)
    client, answer = world.exchange(b"".join(batch))
    answers = responses(answer, [method_of(data) for data in batch], early_close=True)
    if len(answers) < len(batch):  # only an answer that says so ends the connection early
        assert (b"connection", b"close") in [(n.lower(), v) for n, v in answers[-1][0].headers]
    for (response, _), data in zip(answers, batch, strict=False):
        assert_agrees(data, *h11_verdict(data), response.status_code)
    world.leave(client)
