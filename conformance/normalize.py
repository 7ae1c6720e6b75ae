"""Reading what a DUT sent: header fields, TCP options, and the normalized view the scenarios compare.

Two users:

- the packetdrill runner needs exact header fields (:func:`parse_ipv4`,
  :func:`tcp_options`), compared the way packetdrill compares them;
- the differential suite needs a *normalized* view of each packet
  (:class:`Normalizer`): sequence numbers relative to each side's ISN,
  DUT-chosen ephemeral ports, IP IDs and timestamp values replaced by
  what they mean, so that the kernel's and pystack's answers to the same
  stimulus compare field by field.

Where pystack deliberately differs from Linux, the comparison applies an
explicit :data:`ALLOWANCES` entry (a reason and a coarser view of the
field), listed in docs/CONFORMANCE.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

from pystack.addr import aton
from pystack.checksum import internet_checksum, pseudo_header_sum

# TCP option kinds
EOL, NOP, MSS, WSCALE, SACK_PERM, SACK, TIMESTAMP, MD5, FASTOPEN, EXPERIMENTAL = 0, 1, 2, 3, 4, 5, 8, 19, 34, 254
OPTION_NAMES = {EOL: "eol", NOP: "nop", MSS: "mss", WSCALE: "wscale", SACK_PERM: "sackOK", SACK: "sack",
                TIMESTAMP: "TS", MD5: "md5", FASTOPEN: "FO", EXPERIMENTAL: "exp"}

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
AE = 0x100  # the NS/AE bit (the low bit of the data-offset byte)


@dataclass
class Ipv4:
    """The IPv4 header fields of a packet, and where its payload starts."""

    version: int
    ihl: int
    tos: int
    total_length: int
    ident: int
    df: bool
    mf: bool
    frag_offset: int
    ttl: int
    protocol: int
    checksum_ok: bool
    src: str
    dst: str
    options: bytes
    payload: bytes


def parse_ipv4(data: bytes) -> Ipv4:
    if len(data) < 20:
        raise ValueError(f"not an IPv4 packet: {len(data)} bytes")
    vihl, tos, total, ident, frag, ttl, proto, _csum = struct.unpack_from("!BBHHHBBH", data)
    ihl = (vihl & 0xF) * 4
    return Ipv4(
        version=vihl >> 4, ihl=ihl, tos=tos, total_length=total, ident=ident,
        df=bool(frag & 0x4000), mf=bool(frag & 0x2000), frag_offset=(frag & 0x1FFF) * 8,
        ttl=ttl, protocol=proto, checksum_ok=internet_checksum(data[:ihl]) == 0,
        src=".".join(str(b) for b in data[12:16]), dst=".".join(str(b) for b in data[16:20]),
        options=bytes(data[20:ihl]), payload=bytes(data[ihl:total]),
    )


@dataclass
class TcpHeader:
    sport: int
    dport: int
    seq: int
    ack: int
    data_offset: int  # bytes
    flags: int  # FIN..CWR, plus AE (0x100)
    reserved: int
    window: int
    urgent: int
    options: list[tuple[int, bytes]]
    payload: bytes

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


def parse_tcp(segment: bytes) -> TcpHeader:
    sport, dport, seq, ack, off, flags, window, _csum, urgent = struct.unpack_from("!HHIIBBHHH", segment)
    offset = (off >> 4) * 4
    return TcpHeader(sport, dport, seq, ack, offset, flags | ((off & 1) << 8), (off >> 1) & 0x7,
                     window, urgent, tcp_options(segment[20:offset]), bytes(segment[offset:]))


def tcp_options(raw: bytes) -> list[tuple[int, bytes]]:
    """Options in wire order as (kind, data); NOP and EOL have empty data. Stops at a malformed length."""
    options: list[tuple[int, bytes]] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind in (EOL, NOP):
            options.append((kind, b""))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            options.append((kind, bytes(raw[i + 1:])))
            break
        length = raw[i + 1]
        options.append((kind, bytes(raw[i + 2 : i + length])))
        i += length
    return options


def transport_checksum_ok(ip: Ipv4) -> bool:
    """TCP/UDP checksum over the pseudo-header (a UDP checksum of 0 means "none" and is fine)."""
    if ip.protocol == 17 and len(ip.payload) >= 8 and ip.payload[6:8] == b"\0\0":
        return True
    initial = pseudo_header_sum(aton(ip.src), aton(ip.dst), ip.protocol, len(ip.payload))
    return internet_checksum(ip.payload, initial) == 0


def format_options(options: list[tuple[int, bytes]]) -> str:
    """Options in packetdrill's notation: ``mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7``."""
    parts = []
    for kind, data in options:
        if kind == MSS and len(data) == 2:
            parts.append(f"mss {struct.unpack('!H', data)[0]}")
        elif kind == WSCALE and len(data) == 1:
            parts.append(f"wscale {data[0]}")
        elif kind == TIMESTAMP and len(data) == 8:
            val, ecr = struct.unpack("!II", data)
            parts.append(f"TS val {val} ecr {ecr}")
        elif kind == SACK and len(data) % 8 == 0:
            edges = struct.unpack(f"!{len(data) // 4}I", data)
            parts.append("sack " + " ".join(f"{edges[i]}:{edges[i + 1]}" for i in range(0, len(edges), 2)))
        elif kind in OPTION_NAMES and not data:
            parts.append(OPTION_NAMES[kind])
        else:
            parts.append(f"opt{kind}:{data.hex()}")
    return ",".join(parts)


def flags_text(flags: int) -> str:
    """tcpdump-style flags as packetdrill writes them: ``S.``, ``P.``, ``F.``, ``R``, ``.``."""
    text = "".join(c for bit, c in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (URG, "U"),
                                    (ECE, "E"), (CWR, "W"), (AE, "A")) if flags & bit)
    if flags & ACK:
        text += "."
    return text or "-"


# ---------------------------------------------------------------- differential view


def _digest(data: bytes) -> str:
    if len(data) <= 16:
        return data.hex()
    return f"{len(data)}B:{hashlib.sha1(data).hexdigest()[:10]}"


def _window_class(value: object) -> object:
    return "zero" if value == 0 else "open"


def _ignored(value: object) -> object:
    return "-"


def _without_psh(value: object) -> object:
    return value.replace("P", "") if isinstance(value, str) else value


@dataclass(frozen=True)
class Allowance:
    """A field pystack may deliberately differ in: why, and the coarser view that is compared."""

    reason: str
    view: Callable[[object], object]


ALLOWANCES: dict[str, Allowance] = {
    "ip.id": Allowance(
        "IP identification values are an implementation's choice (Linux: 0 on SYN-ACKs, per-socket "
        "counters for connected sockets, hashed per destination otherwise); only the bench's own IDs "
        "quoted back in ICMP errors are compared exactly", _ignored),
    "tcp.win": Allowance(
        "receive windows follow buffer sizing, and pystack has no receive-buffer autotuning: the "
        "window is compared as zero/open, exact values are in the transcript", _window_class),
    "tcp.flags": Allowance(
        "PSH is compared in the packetdrill scripts, not here: where Linux sets it depends on how its "
        "GSO chunks fall, which varies between runs of the same scenario (a 2500-byte write went out "
        "as '. . P.' in one run and '. P. P.' in the next)", _without_psh),
    "time": Allowance(
        "the Linux DUT runs in real time and pystack in virtual time: when a packet left (counted "
        "from the start of its observation window) is compared within 25% or 20 ms", _ignored),
}


@dataclass
class Normalizer:
    """Turns packets the DUT sent into comparable dicts, learning ISNs and timestamps as it goes."""

    dut_address: str
    bench_address: str
    dut_ports: set[int] = field(default_factory=set)  # ports the scenario chose on the DUT
    bench_isn: dict[tuple[int, int], int] = field(default_factory=dict)  # (dut port, bench port) -> ISN
    dut_isn: dict[tuple[int, int], int] = field(default_factory=dict)
    bench_ts: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    dut_ts: dict[tuple[int, int], int] = field(default_factory=dict)
    bench_ports: set[int] = field(default_factory=set)

    def sent_by_bench(self, packet: bytes) -> None:
        """Learn the bench's ISNs, timestamps and ports from what it sends."""
        try:
            ip = parse_ipv4(packet)
        except (ValueError, struct.error):
            return
        if ip.protocol not in (6, 17) or ip.frag_offset or len(ip.payload) < 8:
            return
        sport, dport = struct.unpack_from("!HH", ip.payload)
        self.bench_ports.add(sport)
        if ip.protocol != 6 or len(ip.payload) < 20:
            return
        tcp = parse_tcp(ip.payload)
        key = (dport, sport)
        if tcp.has(SYN):
            self.bench_isn[key] = tcp.seq
        for kind, data in tcp.options:
            if kind == TIMESTAMP and len(data) == 8:
                self.bench_ts.setdefault(key, set()).add(struct.unpack("!I", data[:4])[0])

    def port(self, port: int, dut_side: bool) -> object:
        if dut_side:
            return port if port in self.dut_ports else "ephemeral"
        return port

    def packet(self, data: bytes) -> dict[str, object]:
        try:
            ip = parse_ipv4(data)
        except (ValueError, struct.error):
            return {"malformed": data.hex()}
        view: dict[str, object] = {
            "ip.src": "dut" if ip.src == self.dut_address else ip.src,
            "ip.dst": "bench" if ip.dst == self.bench_address else ip.dst,
            "ip.tos": ip.tos, "ip.ttl": ip.ttl, "ip.df": ip.df, "ip.mf": ip.mf,
            "ip.frag": ip.frag_offset, "ip.len": ip.total_length, "ip.id": ip.ident,
            "ip.proto": ip.protocol, "ip.csum_ok": ip.checksum_ok,
        }
        if ip.options:
            view["ip.options"] = ip_options_view(ip.options)
        if ip.frag_offset or ip.mf:
            view["ip.payload"] = _digest(ip.payload)
            if ip.frag_offset:
                return view
        if ip.protocol == 1:
            view.update(self._icmp(ip))
        elif ip.protocol == 17 and len(ip.payload) >= 8:
            sport, dport, length, csum = struct.unpack_from("!HHHH", ip.payload)
            view.update({
                "udp.sport": self.port(sport, True), "udp.dport": self.port(dport, False),
                "udp.len": length, "udp.csum": "none" if csum == 0 else
                ("ok" if ip.mf or transport_checksum_ok(ip) else "bad"),
                "udp.data": _digest(ip.payload[8:]),
            })
        elif ip.protocol == 6 and len(ip.payload) >= 20:
            view.update(self._tcp(ip))
        return view

    def _tcp(self, ip: Ipv4) -> dict[str, object]:
        tcp = parse_tcp(ip.payload)
        key = (tcp.sport, tcp.dport)
        if tcp.has(SYN):
            self.dut_isn[key] = tcp.seq
        dut_isn = self.dut_isn.get(key)
        bench_isn = self.bench_isn.get(key)
        seq: object = (tcp.seq - dut_isn) & 0xFFFFFFFF if dut_isn is not None else tcp.seq
        ack: object = tcp.ack
        if tcp.has(ACK) and bench_isn is not None:
            ack = (tcp.ack - bench_isn) & 0xFFFFFFFF
        options: list[object] = []
        for kind, data in tcp.options:
            if kind == TIMESTAMP and len(data) == 8:
                val, ecr = struct.unpack("!II", data)
                first = self.dut_ts.setdefault(key, val)
                rel = (val - first) & 0xFFFFFFFF
                val_view = "val" if rel < 0x80000000 else "val<first"
                ecr_view: object = ecr
                if ecr and ecr in self.bench_ts.get(key, set()):
                    ecr_view = f"bench:{ecr}"
                options.append(f"TS {val_view} ecr {ecr_view}")
            elif kind == SACK and len(data) % 8 == 0 and bench_isn is not None:
                edges = struct.unpack(f"!{len(data) // 4}I", data)
                options.append("sack " + " ".join(
                    f"{(edges[i] - bench_isn) & 0xFFFFFFFF}:{(edges[i + 1] - bench_isn) & 0xFFFFFFFF}"
                    for i in range(0, len(edges), 2)))
            else:
                options.append(format_options([(kind, data)]))
        return {
            "tcp.sport": self.port(tcp.sport, True), "tcp.dport": self.port(tcp.dport, False),
            "tcp.seq": seq, "tcp.ack": ack if tcp.has(ACK) else tcp.ack,
            "tcp.flags": flags_text(tcp.flags), "tcp.win": tcp.window, "tcp.urg": tcp.urgent,
            "tcp.opts": ",".join(str(o) for o in options),
            "tcp.csum_ok": ip.mf or transport_checksum_ok(ip), "tcp.data": _digest(tcp.payload),
        }

    def _icmp(self, ip: Ipv4) -> dict[str, object]:
        data = ip.payload
        if len(data) < 8:
            return {"icmp": data.hex()}
        icmp_type, code = data[0], data[1]
        view: dict[str, object] = {
            "icmp.type": icmp_type, "icmp.code": code,
            "icmp.csum_ok": ip.mf or internet_checksum(data) == 0,
        }
        if icmp_type in (0, 8):
            ident, seq = struct.unpack_from("!HH", data, 4)
            view.update({"icmp.id": ident, "icmp.seq": seq, "icmp.data": _digest(data[8:])})
            return view
        view["icmp.rest"] = data[4:8].hex()  # unused / pointer / next-hop MTU
        quote = data[8:]
        view["icmp.quote_len"] = len(quote)
        try:
            inner = parse_ipv4(quote)
        except (ValueError, struct.error):
            view["icmp.quote"] = quote.hex()
            return view
        view.update({
            "quote.ip.len": inner.total_length, "quote.ip.id": inner.ident, "quote.ip.ttl": inner.ttl,
            "quote.ip.tos": inner.tos, "quote.ip.proto": inner.protocol, "quote.ip.frag": inner.frag_offset,
            "quote.ip.csum_ok": inner.checksum_ok, "quote.ip.options": ip_options_view(inner.options),
            "quote.l4": _digest(quote[inner.ihl : inner.ihl + 8]),
            "quote.after_l4": len(quote) - inner.ihl - 8,
        })
        return view


def ip_options_view(raw: bytes) -> str:
    """IP options, readable; timestamps (which depend on the clock) as a count only."""
    parts = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind in (0, 1):
            parts.append("eol" if kind == 0 else "nop")
            i += 1
            continue
        length = raw[i + 1] if i + 1 < len(raw) else 0
        if length < 2 or i + length > len(raw):
            parts.append(f"bad:{raw[i:].hex()}")
            break
        body = raw[i + 2 : i + length]
        if kind == 7 and body:  # record route
            addresses = [".".join(str(b) for b in body[j : j + 4]) for j in range(1, len(body) - 3, 4)]
            parts.append(f"rr ptr={body[0]} [{' '.join(addresses)}]")
        elif kind == 0x44 and len(body) >= 2:  # timestamp: pointer, overflow/flags, entries
            filled = max(0, (body[0] - 5) // 4) if body[1] & 0xF == 0 else max(0, (body[0] - 5) // 8)
            parts.append(f"ts ptr={body[0]} oflw={body[1] >> 4} flg={body[1] & 0xF} stamped={filled}")
        else:
            parts.append(f"opt{kind}:{body.hex()}")
        i += length
    return ",".join(parts)


def describe(data: bytes) -> str:
    """One line for reports: scapy's summary of a packet the DUT sent."""
    try:
        packet = IP(data)
    except Exception:  # noqa: BLE001 - a report line must never fail
        return data.hex()
    if TCP in packet and not isinstance(packet[TCP], TCPerror):
        tcp = packet[TCP]
        return (f"{packet.src}:{tcp.sport} > {packet.dst}:{tcp.dport} {flags_text(int(tcp.flags))} "
                f"seq {tcp.seq} ack {tcp.ack} win {tcp.window} len {len(tcp.payload)} "
                f"<{format_options(tcp_options(bytes(tcp)[20:tcp.dataofs * 4]))}>")
    if ICMP in packet:
        return f"{packet.src} > {packet.dst} icmp type {packet[ICMP].type} code {packet[ICMP].code}"
    if UDP in packet and not isinstance(packet[UDP], UDPerror):
        return f"{packet.src}:{packet[UDP].sport} > {packet.dst}:{packet[UDP].dport} udp len {packet[UDP].len}"
    if IPerror in packet:
        return packet.summary()
    return packet.summary()
