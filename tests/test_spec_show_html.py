"""``pystack spec show SCENARIO --html FILE``, looked at in a real headless browser.

Chromium (Debian's ``chromium``; ``scripts/system-tools.sh --with-browser``
installs it) takes screenshots of the page; the test reads the PNG's pixels: the
generic code (left half) shows both the static and the dynamic colour, and a page
loaded with ``#rN`` (residual line N selected) lights that residual line and the
generic lines it came from, which a page without the fragment does not.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from specializer import render
from specializer.show import show
from specializer.trace import SHOWN_DYNAMIC, SHOWN_STATIC

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: `scripts/system-tools.sh --with-browser` (or apt-get install chromium)")
WIDTH, HEIGHT = 1400, 900
LIT, SELECTED = (0xFF, 0xF3, 0xA0), (0xFF, 0xE6, 0x80)  # the page's .lit and .sel backgrounds


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def screenshot(page: Path, tmp_path: Path, fragment: str = "") -> list[list[tuple[int, int, int]]]:
    png = tmp_path / f"shot{fragment.replace('#', '-')}.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri() + fragment],
        check=True, capture_output=True, timeout=120)
    return decode_png(png.read_bytes())


def decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """The RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and not interlace, header
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return rows


def count(pixels, colour, columns: range) -> int:
    return sum(1 for row in pixels for x in columns if row[x] == colour)


LEFT, RIGHT = range(0, WIDTH // 2), range(WIDTH // 2, WIDTH)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("html") / "udp_send_connected.html"
    show("udp_send_connected", [], colour=False, html_file=str(path))
    return path, path.read_text(encoding="utf-8")


def test_the_page_is_self_contained_and_links_assumptions_to_code(page):
    _, text = page
    assert not re.search(r"""(src|href)=["'](https?:|//)""", text)  # no external resources
    assert "<script>" in text and "data-from=" in text
    lines = re.findall(r'id="res-(\d+)" data-line="\d+" data-from="([^"]*)"', text)
    assert sum(1 for _, origins in lines if origins) > 20
    generic_ids = set(re.findall(r'<div class="g" id="([^"]+)"', text))
    for _, origins in lines:
        assert set(origins.split()) <= generic_ids  # every mapped generic line is on the page
    links = re.findall(r'<li id="a\d+">.*?</li>', text, flags=re.S)
    assert links and all("relied on at <a href=\"#g-" in item and "guarded by" in item for item in links)
    events = set(re.findall(r'<li id="ev-([a-z]+)">', text))
    assert events >= {"setsockopt", "route"}
    for item in links:  # each event a guard names links to that event's policy
        assert set(re.findall(r'<a href="#ev-([a-z]+)">', item)) <= events


@needs_browser
def test_the_browser_shows_static_and_dynamic_colours_in_the_generic_code(page, tmp_path):
    path, _ = page
    pixels = screenshot(path, tmp_path)
    static = count(pixels, rgb(render.HTML_BACKGROUNDS[SHOWN_STATIC]), LEFT)
    dynamic = count(pixels, rgb(render.HTML_BACKGROUNDS[SHOWN_DYNAMIC]), LEFT)
    assert static > 500 and dynamic > 500, (static, dynamic)
    assert count(pixels, LIT, LEFT) == 0 and count(pixels, SELECTED, RIGHT) == 0  # nothing selected yet


@needs_browser
def test_a_residual_line_in_the_fragment_lights_its_generic_lines(page, tmp_path):
    path, text = page
    number, origins = next((n, o) for n, o in re.findall(r'id="res-(\d+)" data-line="\d+" data-from="([^"]*)"', text)
                           if "udp" in o)
    pixels = screenshot(path, tmp_path, f"#r{number}")
    assert count(pixels, SELECTED, RIGHT) > 1000  # the residual line
    assert count(pixels, LIT, LEFT) > 1000  # the generic line(s) it came from, scrolled into view
