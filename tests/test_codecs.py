"""The header codecs and the checksum routine, against scapy and a reference written here."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, UDP, Raw
from scapy.utils import checksum as scapy_checksum

from pystack.addr import aton, ntoa
from pystack.checksum import internet_checksum, ones_sum, pseudo_header_sum
from pystack.errors import Malformed
from pystack.wire.icmp import IcmpMessage, build_icmp, parse_icmp
from pystack.wire.ipv4 import (
    FLAG_DF,
    FLAG_MF,
    FLAG_RESERVED,
    build_ipv4_header,
    parse_ipv4,
    parse_quoted_ipv4,
)
from pystack.wire.udp import UdpDatagram, build_udp, parse_udp

from .core_helpers import ME, PEER

BENCH_ADDR = st.integers(aton("198.18.0.0"), aton("198.19.255.255"))
PAYLOAD = st.binary(max_size=300)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


def reference_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 the slow, obvious way: 16-bit big-endian words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------- checksum


@SETTINGS
@given(st.binary(max_size=2000))
def test_checksum_equals_reference(data):
    assert internet_checksum(data) == reference_checksum(data)
    assert internet_checksum(data) == scapy_checksum(data)


@SETTINGS
@given(st.binary(max_size=600), st.integers(0, 0x6FFFF))
def test_checksum_with_initial_sum_equals_reference(data, initial):
    assert internet_checksum(data, initial) == reference_checksum(data, initial)


@SETTINGS
@given(st.binary(max_size=600).map(lambda b: b[: len(b) & ~1]), st.data())
def test_buffer_with_its_checksum_sums_to_zero(data, draw):
    # Any even offset can hold the checksum field (as in IP, ICMP, UDP headers).
    data = data + b"\x00\x00"
    at = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    zeroed = data[:at] + b"\x00\x00" + data[at + 2 :]
    ck = internet_checksum(zeroed)
    filled = zeroed[:at] + ck.to_bytes(2, "big") + zeroed[at + 2 :]
    assert internet_checksum(filled) == 0
    assert reference_checksum(filled) == 0


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", 0xFFFF),
        (b"\x00\x00", 0xFFFF),
        (b"\xff\xff", 0x0000),
        (b"\x01", 0xFEFF),  # odd length: padded with a zero byte
        (b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7", 0x220D),  # RFC 1071 section 3 example (sum 0xDDF2)
    ],
)
def test_checksum_known_values(data, expected):
    assert internet_checksum(data) == expected
    assert reference_checksum(data) == expected


def test_ones_sum_folds_like_the_reference():
    assert ones_sum(b"\xff\xff\x00\x01") == 0x0001
    assert ones_sum(b"") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF


# ---------------------------------------------------------------- IPv4


ipv4_fields = st.fixed_dictionaries(
    {
        "src": BENCH_ADDR,
        "dst": BENCH_ADDR,
        "proto": st.integers(0, 255),
        "ttl": st.integers(0, 255),
        "tos": st.integers(0, 255),
        "ident": st.integers(0, 0xFFFF),
        "flags": st.sampled_from([0, FLAG_DF, FLAG_MF, FLAG_DF | FLAG_MF, FLAG_RESERVED]),
        "offset": st.integers(0, 0x1FFF),
        # Options are whole 32-bit words: NOPs, a record-route, and an EOL with padding.
        "options": st.lists(
            st.sampled_from([b"\x01\x01\x01\x01", b"\x07\x07\x04\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00"]),
            max_size=4,
        ).map(b"".join),
        "payload": PAYLOAD,
    }
)


def build_from(f: dict) -> bytes:
    header = build_ipv4_header(
        f["src"], f["dst"], f["proto"], len(f["payload"]), f["ttl"], f["tos"], f["ident"],
        f["flags"] | f["offset"], options=f["options"],
    )
    return header + f["payload"]


@SETTINGS
@given(ipv4_fields)
def test_ipv4_build_parse_round_trip(f):
    packet = build_from(f)
    header = parse_ipv4(packet)
    assert (header.src, header.dst, header.proto, header.ttl, header.tos, header.ident) == (
        f["src"], f["dst"], f["proto"], f["ttl"], f["tos"], f["ident"]
    )
    assert header.flags == f["flags"]
    assert header.frag_offset == f["offset"] * 8
    assert header.options == f["options"]
    assert header.header_length == 20 + len(f["options"])
    assert header.total_length == len(packet)
    assert header.payload == f["payload"]
    assert header.is_fragment == bool(f["flags"] & FLAG_MF or f["offset"])


@SETTINGS
@given(ipv4_fields)
def test_ipv4_header_written_in_place_is_the_built_one(f):
    built = build_from(f)
    packet = bytearray(b"\xee" * len(built))
    packet[len(built) - len(f["payload"]) :] = f["payload"]
    written = build_ipv4_header(
        f["src"], f["dst"], f["proto"], len(f["payload"]), f["ttl"], f["tos"], f["ident"],
        f["flags"] | f["offset"], packet, f["options"],
    )
    assert written is None and packet == built


@SETTINGS
@given(ipv4_fields)
def test_scapy_dissects_our_ipv4_and_agrees(f):
    packet = build_from(f)
    p = IP(packet)
    assert p.version == 4
    assert p.ihl * 4 == 20 + len(f["options"])
    assert p.len == len(packet)
    assert (p.src, p.dst, p.proto, p.ttl, p.tos, p.id) == (
        ntoa(f["src"]), ntoa(f["dst"]), f["proto"], f["ttl"], f["tos"], f["ident"]
    )
    assert int(p.flags) == f["flags"] >> 13
    assert p.frag == f["offset"]
    # scapy's own checksum of the header, with the field zeroed, is the one we wrote.
    ihl = p.ihl * 4
    assert scapy_checksum(packet[:10] + b"\x00\x00" + packet[12:ihl]) == p.chksum
    assert scapy_checksum(packet[:ihl]) == 0


@SETTINGS
@given(
    src=BENCH_ADDR, dst=BENCH_ADDR, ttl=st.integers(0, 255), tos=st.integers(0, 255),
    ident=st.integers(0, 0xFFFF), df=st.booleans(), mf=st.booleans(), frag=st.integers(0, 0x1FFF),
    proto=st.integers(0, 255), payload=PAYLOAD, nops=st.integers(0, 10),
)
def test_we_parse_scapy_built_ipv4(src, dst, ttl, tos, ident, df, mf, frag, proto, payload, nops):
    flags = (2 if df else 0) | (1 if mf else 0)
    options = b"\x01" * (4 * nops)
    p = IP(src=ntoa(src), dst=ntoa(dst), ttl=ttl, tos=tos, id=ident, flags=flags, frag=frag,
           proto=proto, options=[Raw(options)] if options else []) / Raw(payload)
    raw = bytes(p)
    header = parse_ipv4(raw)
    q = IP(raw)
    assert (ntoa(header.src), ntoa(header.dst)) == (q.src, q.dst)
    assert (header.ttl, header.tos, header.ident, header.proto) == (q.ttl, q.tos, q.id, q.proto)
    assert header.flags >> 13 == int(q.flags)
    assert header.frag_offset == q.frag * 8
    assert header.header_length == q.ihl * 4
    assert header.total_length == q.len
    assert header.payload == payload


def test_parse_ipv4_trims_link_padding():
    packet = bytes(IP(src=PEER, dst=ME, proto=200) / Raw(b"data"))
    header = parse_ipv4(packet + b"\x00" * 18)
    assert header.payload == b"data"
    assert header.total_length == len(packet)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda p: p[:19], "too_short"),
        (lambda p: bytes([0x65]) + p[1:], "version"),
        (lambda p: bytes([0x44]) + p[1:], "header_length"),
        (lambda p: bytes([0x4F]) + p[1:], "header_length"),  # 60-byte header in a 24-byte packet
        (lambda p: p[:2] + (10).to_bytes(2, "big") + p[4:], "total_length"),
        (lambda p: p[:2] + (100).to_bytes(2, "big") + p[4:], "truncated"),
        (lambda p: p[:10] + bytes([p[10] ^ 1]) + p[11:], "checksum"),
    ],
)
def test_parse_ipv4_rejects_with_reason(mutate, reason):
    packet = bytes(IP(src=PEER, dst=ME, proto=200) / Raw(b"data"))
    with pytest.raises(Malformed) as info:
        parse_ipv4(mutate(packet))
    assert info.value.reason == reason


def test_parse_quoted_ipv4_needs_eight_bytes_of_data_but_no_checksum():
    quoted = bytes(IP(src=ME, dst=PEER, len=1000, chksum=1) / UDP(sport=1, dport=2))
    header = parse_quoted_ipv4(quoted)
    assert header.total_length == 1000 and len(header.payload) == 8
    with pytest.raises(Malformed):
        parse_quoted_ipv4(quoted[:27])


# ---------------------------------------------------------------- ICMP


@SETTINGS
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFFFFFF), PAYLOAD)
def test_icmp_build_parse_round_trip(kind, code, rest, body):
    message = build_icmp(kind, code, rest, body)
    assert parse_icmp(message) == IcmpMessage(kind, code, rest, body)
    assert scapy_checksum(message) == 0
    assert reference_checksum(message) == 0


@SETTINGS
@given(st.sampled_from([0, 8]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), PAYLOAD)
def test_scapy_dissects_our_echo_and_agrees(kind, ident, seq, body):
    message = build_icmp(kind, 0, (ident << 16) | seq, body)
    p = ICMP(message)
    assert (p.type, p.code, p.id, p.seq) == (kind, 0, ident, seq)
    assert bytes(p.payload) == body
    p2 = ICMP(message)
    del p2.chksum
    assert ICMP(bytes(p2)).chksum == p.chksum


@SETTINGS
@given(st.integers(68, 0xFFFF), st.binary(min_size=28, max_size=100))
def test_scapy_dissects_our_frag_needed(mtu, quote):
    message = build_icmp(3, 4, mtu, quote)
    p = ICMP(message)
    assert (p.type, p.code, p.nexthopmtu) == (3, 4, mtu)
    assert scapy_checksum(message) == 0


@SETTINGS
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), PAYLOAD)
def test_we_parse_scapy_built_icmp(ident, seq, body):
    raw = bytes(ICMP(type=8, id=ident, seq=seq) / Raw(body))
    assert parse_icmp(raw) == IcmpMessage(8, 0, (ident << 16) | seq, body)
    raw = bytes(ICMP(type=12, code=0, ptr=21) / Raw(body))
    message = parse_icmp(raw)
    assert (message.kind, message.code, message.rest >> 24, message.payload) == (12, 0, 21, body)


def test_parse_icmp_rejects_short_and_bad_checksum():
    with pytest.raises(Malformed) as info:
        parse_icmp(b"\x08\x00\x00")
    assert info.value.reason == "truncated"
    message = bytearray(build_icmp(8, 0, 1, b"abc"))
    message[-1] ^= 0x40
    with pytest.raises(Malformed) as info:
        parse_icmp(bytes(message))
    assert info.value.reason == "checksum"


# ---------------------------------------------------------------- UDP


@SETTINGS
@given(BENCH_ADDR, BENCH_ADDR, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), PAYLOAD)
def test_udp_build_parse_round_trip(src, dst, sport, dport, payload):
    segment = build_udp(sport, dport, payload, src, dst)
    assert parse_udp(segment, src, dst) == UdpDatagram(sport, dport, payload)
    csum = int.from_bytes(segment[6:8], "big")
    assert csum != 0
    assert reference_checksum(segment, pseudo_header_sum(src, dst, 17, len(segment))) == 0
    # A checksummed datagram does not verify against another pseudo-header.
    with pytest.raises(Malformed):
        parse_udp(segment, src, dst ^ 0x100)


@SETTINGS
@given(BENCH_ADDR, BENCH_ADDR, st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), PAYLOAD)
def test_scapy_dissects_our_udp_and_agrees(src, dst, sport, dport, payload):
    segment = build_udp(sport, dport, payload, src, dst)
    packet = build_ipv4_header(src, dst, 17, len(segment), 64, 0, 1, 0) + segment
    p = IP(packet)
    assert (p[UDP].sport, p[UDP].dport, p[UDP].len) == (sport, dport, 8 + len(payload))
    assert bytes(p[UDP].payload) == payload
    q = IP(packet)
    del q[UDP].chksum
    assert IP(bytes(q))[UDP].chksum == p[UDP].chksum


@SETTINGS
@given(BENCH_ADDR, BENCH_ADDR, st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), PAYLOAD)
def test_we_parse_scapy_built_udp(src, dst, sport, dport, payload):
    raw = bytes(IP(src=ntoa(src), dst=ntoa(dst)) / UDP(sport=sport, dport=dport) / Raw(payload))
    header = parse_ipv4(raw)
    assert parse_udp(header.payload, header.src, header.dst) == UdpDatagram(sport, dport, payload)


def _payload_with_zero_checksum(sport, dport, src, dst):
    """Two payload bytes chosen so that the computed UDP checksum is 0."""
    base = build_udp(sport, dport, b"\x00\x00", src, dst)
    folded = ~int.from_bytes(base[6:8], "big") & 0xFFFF  # one's-complement sum with zero word
    word = (0xFFFF - folded) & 0xFFFF  # adding it makes the sum 0xFFFF, the checksum 0
    return word.to_bytes(2, "big")


@pytest.mark.parametrize("sport, dport", [(1, 2), (5353, 53), (40000, 7)])
def test_udp_checksum_zero_is_sent_as_ffff(sport, dport):
    src, dst = aton(ME), aton(PEER)
    payload = _payload_with_zero_checksum(sport, dport, src, dst)
    assert internet_checksum(
        (sport).to_bytes(2, "big") + dport.to_bytes(2, "big") + (10).to_bytes(2, "big") + b"\0\0" + payload,
        pseudo_header_sum(src, dst, 17, 10),
    ) == 0
    segment = build_udp(sport, dport, payload, src, dst)
    assert segment[6:8] == b"\xff\xff"
    assert parse_udp(segment, src, dst) == UdpDatagram(sport, dport, payload)
    packet = build_ipv4_header(src, dst, 17, len(segment), 64, 0, 1, 0) + segment
    assert IP(packet)[UDP].chksum == 0xFFFF
    q = IP(packet)
    del q[UDP].chksum
    assert IP(bytes(q))[UDP].chksum == 0xFFFF  # scapy makes the same substitution


@SETTINGS
@given(BENCH_ADDR, BENCH_ADDR, PAYLOAD)
def test_udp_zero_checksum_means_none_and_is_accepted(src, dst, payload):
    segment = build_udp(1000, 2000, payload, src, dst, with_checksum=False)
    assert segment[6:8] == b"\x00\x00"
    assert parse_udp(segment, src, dst) == UdpDatagram(1000, 2000, payload)
    raw = bytes(IP(src=ntoa(src), dst=ntoa(dst)) / UDP(sport=1000, dport=2000, chksum=0) / Raw(payload))
    header = parse_ipv4(raw)
    assert parse_udp(header.payload, header.src, header.dst) == UdpDatagram(1000, 2000, payload)


def test_parse_udp_length_field_trims_and_rejects():
    src, dst = aton(ME), aton(PEER)
    segment = build_udp(1, 2, b"abcdef", src, dst)
    assert parse_udp(segment + b"pad", src, dst) == UdpDatagram(1, 2, b"abcdef")
    for bad_length, reason in ((7, "length"), (len(segment) + 1, "length")):
        broken = segment[:4] + bad_length.to_bytes(2, "big") + segment[6:]
        with pytest.raises(Malformed) as info:
            parse_udp(broken, src, dst)
        assert info.value.reason == reason
    with pytest.raises(Malformed) as info:
        parse_udp(segment[:7], src, dst)
    assert info.value.reason == "truncated"
    corrupted = segment[:-1] + bytes([segment[-1] ^ 0x10])
    with pytest.raises(Malformed) as info:
        parse_udp(corrupted, src, dst)
    assert info.value.reason == "checksum"
