"""Counters like ``netstat -s``: SNMP MIB names per protocol, and drops by reason.

Every packet the stack rejects is charged to exactly one drop reason, so a
test (or a curious person) can account for every packet that came in.

The names live in one table (:data:`MIB`, :data:`DROP_REASONS`) that the
code, the ``netstat``-style output and the tests all read: a counter or a
reason that is not in it raises ``KeyError`` the first time it is charged,
instead of quietly starting a new counter under a misspelt name.
"""

from __future__ import annotations

# The SNMP MIB counters of each group (RFC 4293's Ip and Icmp, RFC 4113's Udp, RFC 4022's
# Tcp, with Linux's TcpExt additions kept under Tcp), as /proc/net/snmp names them.
MIB: dict[str, tuple[str, ...]] = {
    "Ip": (
        "InReceives", "InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards",
        "InDelivers", "InTruncatedPkts", "InCsumErrors", "OutRequests", "OutDiscards",
        "OutNoRoutes", "ReasmTimeout", "ReasmReqds", "ReasmQueued", "ReasmOKs", "ReasmFails",
        "FragOKs", "FragFails", "FragCreates",
    ),
    "Icmp": (
        "InMsgs", "InErrors", "InCsumErrors", "InDestUnreachs", "InTimeExcds", "InParmProbs",
        "InSrcQuenchs", "InEchos", "InEchoReps", "InTimestamps", "InOther", "OutMsgs", "OutErrors",
        "OutDestUnreachs", "OutTimeExcds", "OutParmProbs", "OutEchoReps", "OutTimestampReps", "OutOther",
        "OutRateLimitGlobal", "OutRateLimitHost",
    ),
    "Udp": (
        "InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors", "SndbufErrors",
        "InCsumErrors", "IgnoredMulti",
    ),
    "Tcp": (
        "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "InSegs", "OutSegs",
        "RetransSegs", "InErrs", "OutRsts", "InCsumErrors", "OutErrors",
        # TcpExt
        "InRsts", "ListenOverflows", "ListenDrops", "PAWSEstab", "DupAcks", "FastRetrans",
        "Timeouts", "WindowProbes", "KeepAliveProbes", "KeepAliveTimeouts", "AbortOnData",
        "AbortOnClose", "AbortOnLinger", "AbortOnTimeout", "SyncookiesSent", "SyncookiesRecv",
        "SyncookiesFailed", "TCPReqQFullDoCookies", "TCPReqQFullDrop", "OFODrop", "OfoPruned",
        "PruneCalled", "ChallengeACK", "ChallengeACKLimited", "TCPACKSkippedChallenge", "TCPACKSkippedSeq",
        "TCPACKSkippedTimeWait", "BeyondWindow", "OFOQueue", "TCPLossProbes",
        "TCPLossProbeRecovery", "TCPLossUndo", "TCPSpuriousRTOs", "TCPMTUPSuccess", "TCPMTUPFail",
        "TCPFastOpenActive", "TCPFastOpenActiveFail", "TCPFastOpenPassive",
        "TCPFastOpenPassiveFail", "TCPFastOpenListenOverflow", "TCPFastOpenCookieReqd",
    ),
}

# Why a packet was dropped, per layer ("ip.not_for_us"): header parse failures (the codecs'
# Malformed reasons), address checks, reassembly, and each protocol's own refusals.
DROP_REASONS: dict[str, tuple[str, ...]] = {
    "ip": (
        "too_short", "version", "header_length", "total_length", "truncated", "checksum",
        "martian_source", "martian_destination", "multicast_not_joined", "not_for_us",
        "bad_options", "source_route", "unknown_protocol",
        "frag_duplicate", "frag_empty", "frag_inconsistent_end", "frag_memory", "frag_overlap",
        "frag_too_large",
    ),
    "icmp": (
        "truncated", "checksum", "echo_to_broadcast", "timestamp_to_broadcast", "options_not_echoed", "error_for_unknown_protocol",
        "error_no_socket", "error_out_of_window", "error_quote_malformed", "ignored_error_type",
        "ignored_type",
    ),
    "udp": ("truncated", "length", "checksum", "no_port", "rcvbuf_full", "ignored_multi"),
    "tcp": (
        "truncated", "header_length", "checksum", "not_unicast", "no_socket", "accept_queue_full",
        "syn_queue_full", "ack_to_listener", "rst_to_listener", "no_syn_to_listener",
        "syn_sent_bad_ack", "syn_sent_no_syn", "syn_sent_rst_without_ack",
        "syn_received_bad_ack", "out_of_window", "paws", "rst_in_window", "syn_in_window",
        "no_ack", "ack_too_old", "ack_of_unsent", "data_after_fin", "ofo_memory", "beyond_window",
    ),
}

# The error counters a transport message that fails to parse is charged to.
_PARSE_ERRORS = {"icmp": ("Icmp", "InErrors"), "udp": ("Udp", "InErrors"), "tcp": ("Tcp", "InErrs")}


class CounterGroup(dict[str, int]):
    """A group's counters, every name of the table present from the start (at zero).

    Charging one is a plain dict update (the stack does it per packet); only
    a name outside the table reaches ``__missing__``, which refuses it.
    """

    def __init__(self, title: str, names: tuple[str, ...]) -> None:
        super().__init__(dict.fromkeys(names, 0))
        self.title = title

    def __missing__(self, name: str) -> int:
        raise KeyError(f"{self.title} has no counter {name!r}: counter names are the table in "
                       "pystack/counters.py; add it there")

    def nonzero(self) -> dict[str, int]:
        return {name: value for name, value in sorted(self.items()) if value}


class Counters:
    def __init__(self) -> None:
        self.ip = CounterGroup("Ip", MIB["Ip"])
        self.icmp = CounterGroup("Icmp", MIB["Icmp"])
        self.udp = CounterGroup("Udp", MIB["Udp"])
        self.tcp = CounterGroup("Tcp", MIB["Tcp"])
        self.drops = CounterGroup("Drops", tuple(
            f"{layer}.{reason}" for layer, reasons in DROP_REASONS.items() for reason in reasons))
        self.groups = {"Ip": self.ip, "Icmp": self.icmp, "Udp": self.udp, "Tcp": self.tcp}

    def drop(self, layer: str, reason: str) -> None:
        """Charge one rejected packet to ``layer.reason``."""
        self.drops[layer + "." + reason] += 1

    def malformed(self, layer: str, reason: str) -> None:
        """A transport message that failed to parse: its protocol's error counters and its drop."""
        title, errors = _PARSE_ERRORS[layer]
        group = self.groups[title]
        group[errors] += 1
        if reason == "checksum":
            group["InCsumErrors"] += 1
        self.drop(layer, reason)

    def total_drops(self, layer: str | None = None) -> int:
        if layer is None:
            return sum(self.drops.values())
        prefix = layer + "."
        return sum(n for key, n in self.drops.items() if key.startswith(prefix))

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Plain nested dict of every non-zero counter (for JSON, tests, the CLI)."""
        snap = {name: group.nonzero() for name, group in self.groups.items()}
        snap["Drops"] = self.drops.nonzero()
        return {name: values for name, values in snap.items() if values}

    def format(self) -> str:
        """Text in the spirit of ``netstat -s``."""
        lines = []
        for name, values in self.snapshot().items():
            lines.append(f"{name}:")
            lines.extend(f"    {key}: {value}" for key, value in values.items())
        return "\n".join(lines) if lines else "(no traffic)"
